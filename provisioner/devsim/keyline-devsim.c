/* keyline-devsim: a simulated device on a serial port or pty, built on the device library
 * (provisioner/device) and its OpenSSL port (provisioner/devsim_port.c).
 *
 *   keyline-devsim --port DEV --serial HWSERIAL --state FILE [--misbehave KIND] [options]
 *   keyline-devsim --state FILE --print-cert
 *
 * State: FILE is one file holding the device's "flash" (transport key, identity key, engine
 * objects), replaced atomically. While running, devsim_port works on an unpacked copy in a
 * private temporary directory; the copy is packed back into FILE before every byte of a
 * response goes out, so the device never claims more than it has persisted: killing the
 * process at any point is a faithful power cut. (If FILE is an existing directory it is used
 * as devsim_port's directory directly.)
 *
 * Misbehaviours (for the station's tests, docs/station.md):
 *   corrupt      flip a bit in every third response and in every fourth chunk received
 *   drop         drop every third response
 *   slow         delay every response by --delay-ms (default 1500)
 *   vanish       exit without answering when the --vanish-at request arrives (default
 *                putcert; it is processed and persisted first, like a power cut)
 *   bad-csr      every signature is broken (the CSR's, and CHALLENGE's)
 *   refuse-lock  the firmware vetoes LOCK (ERROR REFUSED)
 *   counterfeit  a clone of a genuine unit made from its public identity only: --state is a
 *                copy of the genuine unit's flash (locked, certificate fingerprint, identity
 *                public key); at start the copied private key is replaced by one of the
 *                clone's own (the genuine public key kept in clone-pub), so it answers HELLO
 *                exactly like the genuine unit but cannot sign for its certificate
 *   evil-subject GETCSR answers a CSR for the device's own key (valid signature) whose subject
 *                is --csr-subject (e.g. the factory CA's DN) instead of
 *                CN=<model>, serialNumber=<serial> */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "devsim_matter.h"
#include "devsim_port.h"
#include "devsim_update.h"
#include "kl_dev.h"
#include "kl_file.h"
#include "kl_hostcrypto.h"
#include "kl_version.h"

#define PACK_MAGIC "KLDEVSIM1\n"
#define PACK_MAX (1u << 20)
#define LOCKED_IDLE_EXIT_MS 3000

enum {
    MB_NONE = 0,
    MB_CORRUPT,
    MB_DROP,
    MB_SLOW,
    MB_VANISH,
    MB_BAD_CSR,
    MB_REFUSE_LOCK,
    MB_COUNTERFEIT,
    MB_EVIL_SUBJECT,
    MB_P384_CSR
};
static const char *mb_names[] = {"none",         "corrupt", "drop",        "slow",
                                 "vanish",       "bad-csr", "refuse-lock", "counterfeit",
                                 "evil-subject", "p384-csr"};

typedef struct {
    int fd;
    const char *state_file;
    char workdir[PATH_MAX];
    int packed_dir; /* state_file is a directory used in place */
    uint8_t *last_pack;
    size_t last_pack_len;
    int misbehave;
    long delay_ms;
    uint8_t vanish_at;
    long baud;
    int pace;
    int stay;
    int verbose;
    unsigned nsend;
    /* outgoing frame inspection */
    kl_proto_dec odec;
    uint8_t obuf[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
    int locked_sent; /* LOCK_R with state LOCKED went out */
    unsigned hellos_after_lock;
    long first_hello_after_lock; /* ms */
    long last_work_after_lock;   /* ms: the last answer other than HELLO once locked */
    long linger_ms;
    int start_locked;
    devsim_port *port;
    X509_NAME *csr_subject; /* evil-subject, p384-csr */
    EVP_PKEY *p384;         /* p384-csr: the key of the CSR (not the identity key) */
} devsim;

static volatile sig_atomic_t g_stop;
static char g_cleanup_dir[PATH_MAX];

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "keyline-devsim: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !g_stop) {
    }
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- single-file state -------------------------------------------------------------------- */

static void rm_workdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                char p[PATH_MAX + 256];
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static void cleanup(void)
{
    if (g_cleanup_dir[0]) {
        rm_workdir(g_cleanup_dir);
        g_cleanup_dir[0] = 0;
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Pack every regular file of dir (names sorted) into a buffer:
 *   magic | { u32 name_len | name | u32 data_len | data }* | sha256(all before) */
static kl_rc pack_dir(const char *dir, uint8_t **out, size_t *out_len)
{
    kl_rc rc = KL_OK;
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    uint8_t *buf = malloc(PACK_MAX);
    size_t len = 0;
    ENSURE(n >= 0, KL_EIO, "%s: %s", dir, strerror(errno));
    ENSURE(buf, KL_EINTERNAL, "out of memory");
    memcpy(buf, PACK_MAGIC, sizeof PACK_MAGIC - 1);
    len = sizeof PACK_MAGIC - 1;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (nm[0] == '.' || strchr(nm, '/')) {
            continue; /* ".", "..", temp files of atomic writes */
        }
        char p[PATH_MAX + 256];
        uint8_t *data = NULL;
        size_t dlen = 0;
        snprintf(p, sizeof p, "%s/%s", dir, nm);
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            continue;
        }
        TRY(kl_file_read(p, PACK_MAX, &data, &dlen));
        size_t nl = strlen(nm);
        if (len + 8 + nl + dlen + 32 > PACK_MAX) {
            OPENSSL_cleanse(data, dlen);
            free(data);
            rc = kl_fail(KL_EINPUT, "device state larger than %u bytes", PACK_MAX);
            goto out;
        }
        put32(buf + len, (uint32_t)nl);
        /* a length-prefixed field, not a C string: */
        memcpy(buf + len + 4, nm, nl); // NOLINT(bugprone-not-null-terminated-result)
        len += 4 + nl;
        put32(buf + len, (uint32_t)dlen);
        memcpy(buf + len + 4, data, dlen);
        len += 4 + dlen;
        OPENSSL_cleanse(data, dlen);
        free(data);
    }
    ENSURE(EVP_Digest(buf, len, buf + len, NULL, EVP_sha256(), NULL) == 1, KL_EINTERNAL, "sha256");
    len += 32;
    *out = buf;
    *out_len = len;
    buf = NULL;
out:
    if (names) {
        for (int i = 0; i < n; i++) {
            free(names[i]);
        }
        free(names);
    }
    if (buf) {
        OPENSSL_cleanse(buf, PACK_MAX);
        free(buf);
    }
    return rc;
}

static kl_rc unpack_to_dir(const uint8_t *b, size_t len, const char *dir, const char *what)
{
    kl_rc rc = KL_OK;
    uint8_t md[32];
    size_t off = sizeof PACK_MAGIC - 1;
    ENSURE(len >= off + 32 && memcmp(b, PACK_MAGIC, off) == 0, KL_EINPUT,
           "%s: not a keyline-devsim state file", what);
    ENSURE(EVP_Digest(b, len - 32, md, NULL, EVP_sha256(), NULL) == 1 &&
               memcmp(md, b + len - 32, 32) == 0,
           KL_EINPUT, "%s: state file is corrupt (checksum)", what);
    len -= 32;
    while (off < len) {
        ENSURE(len - off >= 4, KL_EINPUT, "%s: truncated state file", what);
        uint32_t nl = get32(b + off);
        off += 4;
        ENSURE(nl > 0 && nl < 64 && len - off >= nl + 4, KL_EINPUT, "%s: bad entry", what);
        char name[64];
        memcpy(name, b + off, nl);
        name[nl] = 0;
        off += nl;
        ENSURE(!strchr(name, '/') && name[0] != '.', KL_EINPUT, "%s: bad entry name", what);
        uint32_t dl = get32(b + off);
        off += 4;
        ENSURE(len - off >= dl, KL_EINPUT, "%s: truncated entry", what);
        char p[PATH_MAX + 128];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ENSURE(fd >= 0, KL_EIO, "%s: %s", p, strerror(errno));
        ssize_t w = write(fd, b + off, dl);
        close(fd);
        ENSURE(w == (ssize_t)dl, KL_EIO, "%s: write failed", p);
        off += dl;
    }
out:
    return rc;
}

/* Prepare the directory devsim_port works on. */
static kl_rc state_open(devsim *ds)
{
    kl_rc rc = KL_OK;
    struct stat sb;
    uint8_t *data = NULL;
    size_t len = 0;
    if (stat(ds->state_file, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(ds->workdir, sizeof ds->workdir, "%s", ds->state_file);
        ds->packed_dir = 1;
        return KL_OK;
    }
    /* $TMPDIR when set, as every Unix program; else memory (/dev/shm) before /tmp */
    const char *base = getenv("TMPDIR");
    if (!base || !*base) {
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    snprintf(ds->workdir, sizeof ds->workdir, "%s/keyline-devsim.XXXXXX", base);
    ENSURE(mkdtemp(ds->workdir), KL_EIO, "cannot create a work directory: %s", strerror(errno));
    snprintf(g_cleanup_dir, sizeof g_cleanup_dir, "%s", ds->workdir);
    rc = kl_file_read(ds->state_file, PACK_MAX, &data, &len);
    if (rc == KL_ENOTFOUND) {
        return KL_OK; /* factory new: the port creates its transport key */
    }
    TRY(rc);
    TRY(unpack_to_dir(data, len, ds->workdir, ds->state_file));
out:
    if (data) {
        OPENSSL_cleanse(data, len);
        free(data);
    }
    return rc;
}

/* Persist the work directory into the state file if anything changed. */
static kl_rc state_sync(devsim *ds)
{
    kl_rc rc = KL_OK;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (ds->packed_dir) {
        return KL_OK;
    }
    TRY(pack_dir(ds->workdir, &buf, &len));
    if (ds->last_pack && ds->last_pack_len == len && memcmp(ds->last_pack, buf, len) == 0) {
        goto out;
    }
    TRY(kl_file_write_atomic(ds->state_file, buf, len, 0600));
    if (ds->last_pack) {
        OPENSSL_cleanse(ds->last_pack, ds->last_pack_len);
        free(ds->last_pack);
    }
    ds->last_pack = buf;
    ds->last_pack_len = len;
    buf = NULL;
out:
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    return rc;
}

/* ---- serial port ----------------------------------------------------------------------------- */

static speed_t baud_code(long b)
{
    switch (b) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
    case 460800: return B460800;
    case 921600: return B921600;
    default: return 0;
    }
}

static kl_rc port_open(devsim *ds, const char *path)
{
    struct termios tio;
    ds->fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (ds->fd < 0) {
        return kl_fail(errno == ENOENT ? KL_ENOTFOUND : KL_EIO, "%s: %s", path, strerror(errno));
    }
    if (!isatty(ds->fd) || tcgetattr(ds->fd, &tio) != 0) {
        return kl_fail(KL_EIO, "%s: not a serial port or pty", path);
    }
    cfmakeraw(&tio);
    tio.c_cflag |= CLOCAL | CREAD;
    tio.c_cc[VMIN] = 0;
    tio.c_cc[VTIME] = 0;
    cfsetispeed(&tio, baud_code(ds->baud));
    cfsetospeed(&tio, baud_code(ds->baud));
    if (tcsetattr(ds->fd, TCSANOW, &tio) != 0) {
        return kl_fail(KL_EIO, "%s: cannot set raw mode: %s", path, strerror(errno));
    }
    tcflush(ds->fd, TCIOFLUSH); /* whatever the station sent while we were "unplugged" */
    return KL_OK;
}

static void pace(devsim *ds, size_t n)
{
    if (ds->pace && n) {
        /* 8N1: 10 bit times per byte */
        long us = (long)((double)n * 10.0 * 1e6 / (double)ds->baud);
        struct timespec ts = {us / 1000000L, (us % 1000000L) * 1000L};
        nanosleep(&ts, NULL);
    }
}

static int write_all(devsim *ds, const uint8_t *p, size_t n)
{
    pace(ds, n);
    while (n > 0) {
        ssize_t w = write(ds->fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Type, seq (and for LOCK_R the reported state) of our own outgoing frame. */
static uint8_t frame_type(devsim *ds, const uint8_t *data, size_t len, uint8_t *state,
                          uint16_t *seq)
{
    kl_proto_frame f;
    size_t used = 0, off = 0;
    uint8_t type = 0;
    *state = 0xff;
    *seq = 0;
    kl_proto_dec_reset(&ds->odec);
    while (off < len) {
        int r = kl_proto_feed(&ds->odec, data + off, len - off, &used, &f);
        off += used;
        if (r == KL_PROTO_FRAME) {
            type = f.type;
            *seq = f.seq;
            (void)kl_tlv_get_u8(f.payload, f.payload_len, KL_TAG_STATE, state);
        }
        if (used == 0) {
            break;
        }
    }
    return type;
}

/* "CN=A,O=B" -> X509_NAME (no escapes: test input); NULL when malformed. */
static X509_NAME *dn_parse(const char *dn)
{
    char buf[512], *save = NULL;
    X509_NAME *name = X509_NAME_new();
    if (!name || strlen(dn) >= sizeof buf) {
        X509_NAME_free(name);
        return NULL;
    }
    snprintf(buf, sizeof buf, "%s", dn);
    for (char *a = strtok_r(buf, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(a, '=');
        if (!eq || eq == a) {
            X509_NAME_free(name);
            return NULL;
        }
        *eq = 0;
        if (X509_NAME_add_entry_by_txt(name, a, MBSTRING_UTF8, (const unsigned char *)eq + 1, -1,
                                       -1, 0) != 1) {
            X509_NAME_free(name);
            return NULL;
        }
    }
    return name;
}

/* evil-subject: answer GETCSR (seq) with a CSR for the identity key, signed by it (a valid
 * proof of possession), whose subject is --csr-subject. */
static int evil_csr_send(devsim *ds, uint16_t seq)
{
    static uint8_t payload[KL_PROTO_MAX_PAYLOAD], wire[KL_PROTO_WIRE_MAX(KL_PROTO_MAX_PAYLOAD)];
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    size_t wlen = 0;
    kl_tlv_w w;
    int ret = -1, n = 0;
    EVP_PKEY *k = ds->port->identity;
    if (ds->misbehave == MB_P384_CSR) {
        /* a device answering with a key the Matter profile does not allow (issue 19) */
        if (!ds->p384) {
            ds->p384 = EVP_EC_gen("P-384");
        }
        k = ds->p384;
    }
    if (req && k && X509_REQ_set_version(req, 0) == 1 &&
        X509_REQ_set_subject_name(req, ds->csr_subject) == 1 && X509_REQ_set_pubkey(req, k) == 1 &&
        X509_REQ_sign(req, k, EVP_sha256()) > 0 && (n = i2d_X509_REQ(req, &der)) > 0) {
        kl_tlv_w_init(&w, payload, sizeof payload);
        if (kl_tlv_put(&w, KL_TAG_CSR, der, (size_t)n) == KL_PROTO_OK &&
            kl_proto_encode(wire, sizeof wire, &wlen, KL_MSG_RESP(KL_MSG_GETCSR), seq, 0, payload,
                            w.len) == KL_PROTO_OK) {
            fprintf(stderr, "keyline-devsim: GETCSR answered with an evil subject\n");
            ret = write_all(ds, wire, wlen);
        }
    }
    OPENSSL_free(der);
    X509_REQ_free(req);
    return ret;
}

/* kl_port send: persist, then misbehave, then write. */
static int dev_send(void *user, const uint8_t *data, size_t len)
{
    devsim *ds = user;
    uint8_t state;
    uint16_t seq;
    uint8_t type = frame_type(ds, data, len, &state, &seq);
    if (state_sync(ds) != KL_OK) {
        fprintf(stderr, "keyline-devsim: state file: %s\n", kl_errmsg());
        return -1; /* a device that cannot persist must not answer */
    }
    ds->nsend++;
    if (ds->verbose) {
        fprintf(stderr, "keyline-devsim: -> %s (%zu bytes)\n", kl_proto_msg_name(type), len);
    }
    if (ds->misbehave == MB_VANISH && type == KL_MSG_RESP(ds->vanish_at)) {
        fprintf(stderr, "keyline-devsim: vanishing after %s (misbehave vanish)\n",
                kl_proto_msg_name(ds->vanish_at));
        cleanup();
        _exit(3);
    }
    if (type == KL_MSG_RESP(KL_MSG_LOCK) && state == KL_STATE_LOCKED) {
        ds->locked_sent = 1;
    }
    if (type == KL_MSG_RESP(KL_MSG_HELLO) && (ds->locked_sent || ds->start_locked)) {
        if (ds->hellos_after_lock++ == 0) {
            ds->first_hello_after_lock = now_ms();
        }
    } else if (ds->hellos_after_lock > 0) {
        ds->last_work_after_lock = now_ms(); /* a station still at work (CHALLENGE) */
    }
    if ((ds->misbehave == MB_EVIL_SUBJECT || ds->misbehave == MB_P384_CSR) &&
        type == KL_MSG_RESP(KL_MSG_GETCSR)) {
        return evil_csr_send(ds, seq);
    }
    if (ds->misbehave == MB_DROP && ds->nsend % 3 == 2) {
        if (ds->verbose) {
            fprintf(stderr, "keyline-devsim: dropping that frame (misbehave drop)\n");
        }
        return 0;
    }
    if (ds->misbehave == MB_SLOW) {
        sleep_ms(ds->delay_ms);
    }
    if (ds->misbehave == MB_CORRUPT && ds->nsend % 3 == 2 && len > 4) {
        uint8_t *copy = malloc(len);
        if (!copy) {
            return -1;
        }
        memcpy(copy, data, len);
        copy[len / 2] ^= 0x10;
        if (copy[len / 2] == 0) {
            copy[len / 2] = 0x5a; /* keep the frame in one piece; the CRC catches it */
        }
        if (ds->verbose) {
            fprintf(stderr, "keyline-devsim: corrupting that frame (misbehave corrupt)\n");
        }
        int r = write_all(ds, copy, len);
        free(copy);
        return r;
    }
    return write_all(ds, data, len);
}

/* ---- --print-cert ------------------------------------------------------------------------- */

static int noop_send(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    (void)data;
    (void)len;
    return 0;
}

/* Open the device's flash without serving (for --print-cert / --print-key). Returns 0, or the
 * exit status after printing why not. */
static int offline_open(devsim *ds, devsim_port *port)
{
    struct stat sb;
    if (stat(ds->state_file, &sb) != 0) {
        die("%s: no such state file (device never started)", ds->state_file);
        return 6;
    }
    if (state_open(ds) != KL_OK || devsim_port_open(port, ds->workdir, noop_send, NULL) != KL_OK) {
        fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
        return 1;
    }
    return 0;
}

static int print_cert(devsim *ds)
{
    devsim_port port;
    static kl_dev dev;
    static const kl_dev_info info = {"devsim", "PRINT", "", 0, 0};
    uint8_t fp[KL_PROTO_FP_LEN], md[32], der[4096];
    size_t len = 0;
    int rc = offline_open(ds, &port);
    if (rc != 0) {
        return rc;
    }
    rc = 1;
    if (kl_dev_init(&dev, &devsim_port_ops, &port, &info) != KL_DEV_OK) {
        die("%s: device state is corrupt", ds->state_file);
    } else if (!kl_dev_get_cert_fp(&dev, fp)) {
        fprintf(stderr, "keyline-devsim: %s: the device holds no certificate (state %s)\n",
                ds->state_file, kl_proto_state_name(kl_dev_get_state(&dev)));
    } else if (devsim_port_ops.store_read(&port, KL_OBJ_CERT, der, sizeof der, &len) !=
                   KL_PORT_OK ||
               EVP_Digest(der, len, md, NULL, EVP_sha256(), NULL) != 1 || memcmp(md, fp, 32) != 0) {
        die("%s: stored certificate does not match the recorded fingerprint", ds->state_file);
    } else {
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        if (!x || PEM_write_X509(stdout, x) != 1) {
            die("%s: stored certificate does not parse", ds->state_file);
        } else {
            rc = 0;
        }
        X509_free(x);
    }
    devsim_port_close(&port);
    return rc;
}

/* --print-matter: what MATTER stored, with the DAC and PAI (docs/line-protocol.md 4.10) */
static int print_matter(devsim *ds)
{
    devsim_port port;
    int rc = offline_open(ds, &port);
    if (rc != 0) {
        return rc;
    }
    rc = devsim_matter_print(&port, ds->state_file, stdout);
    devsim_port_close(&port);
    return rc;
}

/* --print-key: the identity public key (PEM SubjectPublicKeyInfo), for tests that check the
 * certificate against the key the device really holds. */
static int print_key(devsim *ds, int private_half)
{
    devsim_port port;
    uint8_t pub[KL_PROTO_PUB_LEN];
    EVP_PKEY *pk = NULL;
    int rc = offline_open(ds, &port);
    if (rc != 0) {
        return rc;
    }
    rc = 1;
    if (devsim_port_ops.key_public(&port, pub) != KL_PORT_OK) {
        die("%s: the device holds no identity key", ds->state_file);
    } else if (private_half) {
        /* Simulator only: a real device never exports its key. This lets a host EST client
         * (curl) act for the simulated device in demos and tests. */
        if (PEM_write_PrivateKey(stdout, port.identity, NULL, NULL, 0, NULL, NULL) != 1) {
            die("%s: identity key cannot be encoded", ds->state_file);
        } else {
            rc = 0;
        }
    } else if (kl_p256_from_pub65(pub, &pk) != KL_OK || PEM_write_PUBKEY(stdout, pk) != 1) {
        die("%s: identity key cannot be encoded", ds->state_file);
    } else {
        rc = 0;
    }
    EVP_PKEY_free(pk);
    devsim_port_close(&port);
    return rc;
}

/* ---- counterfeit ----------------------------------------------------------------------------- */

#define CF_PUB_FILE "clone-pub"
static uint8_t g_cf_pub[KL_PROTO_PUB_LEN];

/* The genuine unit's public key, reported in HELLO; signatures come from the clone's own key. */
static int cf_key_public(void *ctx, uint8_t pub[65])
{
    (void)ctx;
    memcpy(pub, g_cf_pub, sizeof g_cf_pub);
    return KL_PORT_OK;
}

/* Turn the copied flash into a counterfeit's: keep the genuine public key (clone-pub), drop the
 * genuine private key for a key of the clone's own. A second start finds clone-pub. */
static kl_rc cf_setup(devsim *ds, devsim_port *port, kl_port *ops)
{
    kl_rc rc = KL_OK;
    char path[PATH_MAX + 32];
    uint8_t *data = NULL, fresh[KL_PROTO_PUB_LEN];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", ds->workdir, CF_PUB_FILE);
    rc = kl_file_read(path, 1024, &data, &len);
    if (rc == KL_ENOTFOUND) {
        ENSURE(port->identity, KL_EUSAGE,
               "--misbehave counterfeit needs --state copied from a provisioned unit");
        TRY(kl_p256_pub65(port->identity, g_cf_pub));
        TRY(kl_file_write_atomic(path, g_cf_pub, sizeof g_cf_pub, 0600));
        ENSURE(devsim_port_ops.key_generate(port, fresh) == KL_PORT_OK, KL_EINTERNAL,
               "counterfeit: cannot make the clone's own key");
    } else {
        TRY(rc);
        ENSURE(len == sizeof g_cf_pub, KL_EINPUT, "%s: not a public key", path);
        memcpy(g_cf_pub, data, len);
    }
    *ops = devsim_port_ops;
    ops->key_public = cf_key_public;
out:
    free(data);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyline-devsim --port DEV --serial HWSERIAL --state FILE [options]\n"
            "       keyline-devsim --state FILE --update IMAGE\n"
            "       keyline-devsim --state FILE --print-cert | --print-key | --print-matter\n"
            "\n"
            "A simulated keyline device (the device library with an OpenSSL port) on a serial\n"
            "port or pty. Exits 0 once it is locked and the station has moved on.\n"
            "\n"
            "  --port DEV          serial port or pty to serve\n"
            "  --serial S          hardware serial (1..64 PrintableString characters)\n"
            "  --state FILE        the device's flash: keys, certificates, state (atomic writes)\n"
            "  --model M           model name (default keyline-sim)\n"
            "  --fw V              firmware version (default 1.0.0)\n"
            "  --baud B            line speed (default 115200)\n"
            "  --pace              on a pty, take as long as a real UART at --baud would\n"
            "  --misbehave KIND    corrupt|drop|slow|vanish|bad-csr|refuse-lock|counterfeit|\n"
            "                      evil-subject|p384-csr (a CSR for a P-384 key)\n"
            "  --csr-subject DN    evil-subject, p384-csr: the CSR's subject, e.g. \"CN=Acme CA\"\n"
            "  --matter-vid V      a Matter device (hex VendorID, e.g. 0xFFF1): the CSR names V\n"
            "  --matter-pid P      and ProductID P; it keeps what MATTER sends (docs/matter.md)\n"
            "  --delay-ms N        slow: delay per answer (default 1500)\n"
            "  --vanish-at MSG     vanish: request that makes it vanish: genkey|getcsr|inject|\n"
            "                      putcert|puttrust|challenge|lock (default putcert)\n"
            "  --stay              keep serving after LOCK (until SIGTERM)\n"
            "  --linger-ms N       once locked and seen by the station, leave after N ms in\n"
            "                      which it asked nothing but HELLO (default 1000)\n"
            "  --print-cert        print the stored device certificate (PEM) and exit\n"
            "  --print-key         print the device's identity public key (PEM) and exit\n"
            "  --print-matter      print the Matter data the device holds (JSON) and exit\n"
            "  --print-private-key simulator only: print the identity private key (PEM), so a\n"
            "                      host EST client can act for the device (demos, tests)\n"
            "  --update FILE       verify the MCUboot image FILE with the firmware keys and\n"
            "                      security counter the device holds; install it (record its\n"
            "                      version and counter) or print why not (exit 4)\n"
            "  -v, --verbose       log frames on stderr\n"
            "  -V, --version       print the version\n"
            "  -h, --help          this text\n");
}

/* What the command line asks for beyond the device's own settings (devsim). */
typedef struct {
    const char *port_path, *serial, *model, *fw, *update_file;
    int want_print; /* 1 cert, 2 key, 3 private key, 4 matter */
    uint16_t matter_vid, matter_pid;
} devsim_opts;

enum {
    O_PORT = 256,
    O_UPDATE,
    O_SERIAL,
    O_STATE,
    O_MODEL,
    O_FW,
    O_BAUD,
    O_PACE,
    O_MB,
    O_DELAY,
    O_VANISH_AT,
    O_STAY,
    O_PRINT,
    O_LINGER,
    O_PRINT_KEY,
    O_PRINT_PRIV,
    O_CSR_SUBJECT,
    O_MATTER_VID,
    O_MATTER_PID,
    O_PRINT_MATTER
};

static const struct option devsim_longopts[] = {
    {"port", required_argument, NULL, O_PORT},
    {"update", required_argument, NULL, O_UPDATE},
    {"serial", required_argument, NULL, O_SERIAL},
    {"state", required_argument, NULL, O_STATE},
    {"model", required_argument, NULL, O_MODEL},
    {"fw", required_argument, NULL, O_FW},
    {"baud", required_argument, NULL, O_BAUD},
    {"pace", no_argument, NULL, O_PACE},
    {"misbehave", required_argument, NULL, O_MB},
    {"delay-ms", required_argument, NULL, O_DELAY},
    {"vanish-at", required_argument, NULL, O_VANISH_AT},
    {"stay", no_argument, NULL, O_STAY},
    {"linger-ms", required_argument, NULL, O_LINGER},
    {"print-cert", no_argument, NULL, O_PRINT},
    {"print-key", no_argument, NULL, O_PRINT_KEY},
    {"print-private-key", no_argument, NULL, O_PRINT_PRIV},
    {"csr-subject", required_argument, NULL, O_CSR_SUBJECT},
    {"matter-vid", required_argument, NULL, O_MATTER_VID},
    {"matter-pid", required_argument, NULL, O_MATTER_PID},
    {"print-matter", no_argument, NULL, O_PRINT_MATTER},
    {"verbose", no_argument, NULL, 'v'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The requests --vanish-at names. */
static const struct {
    const char *n;
    uint8_t t;
} vanish_names[] = {{"hello", KL_MSG_HELLO},         {"genkey", KL_MSG_GENKEY},
                    {"getcsr", KL_MSG_GETCSR},       {"inject", KL_MSG_INJECT},
                    {"putcert", KL_MSG_PUTCERT},     {"puttrust", KL_MSG_PUTTRUST},
                    {"challenge", KL_MSG_CHALLENGE}, {"lock", KL_MSG_LOCK}};

/* The option parsers below return -1 when the value is taken, else main's exit code. */
static int opt_baud(devsim *ds, const char *arg)
{
    ds->baud = strtol(arg, NULL, 10);
    if (!baud_code(ds->baud)) {
        die("unsupported baud %s", arg);
        return 2;
    }
    return -1;
}

static int opt_misbehave(devsim *ds, const char *arg)
{
    ds->misbehave = -1;
    for (int i = 1; i < (int)(sizeof mb_names / sizeof mb_names[0]); i++) {
        if (strcmp(arg, mb_names[i]) == 0) {
            ds->misbehave = i;
        }
    }
    if (ds->misbehave < 0) {
        die("--misbehave: unknown kind '%s' (corrupt|drop|slow|vanish|bad-csr|"
            "refuse-lock|counterfeit|evil-subject)",
            arg);
        return 2;
    }
    return -1;
}

static int opt_vanish_at(devsim *ds, const char *arg)
{
    ds->vanish_at = 0;
    for (size_t i = 0; i < sizeof vanish_names / sizeof vanish_names[0]; i++) {
        if (strcmp(arg, vanish_names[i].n) == 0) {
            ds->vanish_at = vanish_names[i].t;
        }
    }
    if (!ds->vanish_at) {
        die("--vanish-at: unknown request '%s'", arg);
        return 2;
    }
    return -1;
}

static int opt_matter_id(const char *arg, uint16_t *out)
{
    char *end = NULL;
    unsigned long v = strtoul(arg, &end, 16);
    if (!*arg || *end || v == 0 || v > 0xffff) {
        die("--matter-vid/--matter-pid: '%s' is not a nonzero 16-bit hex number", arg);
        return 2;
    }
    *out = (uint16_t)v;
    return -1;
}

static int opt_csr_subject(devsim *ds, const char *arg)
{
    X509_NAME_free(ds->csr_subject);
    ds->csr_subject = dn_parse(arg);
    if (!ds->csr_subject) {
        die("--csr-subject: '%s' is not a DN like CN=A,O=B", arg);
        return 2;
    }
    return -1;
}

/* Options whose value is a plain string or number. */
static int opt_plain(int c, const char *arg, devsim *ds, devsim_opts *o)
{
    switch (c) {
    case O_PORT: o->port_path = arg; break;
    case O_SERIAL: o->serial = arg; break;
    case O_STATE: ds->state_file = arg; break;
    case O_MODEL: o->model = arg; break;
    case O_FW: o->fw = arg; break;
    case O_UPDATE: o->update_file = arg; break;
    case O_DELAY: ds->delay_ms = strtol(arg, NULL, 10); break;
    case O_LINGER: ds->linger_ms = strtol(arg, NULL, 10); break;
    case O_PACE: ds->pace = 1; break;
    case O_STAY: ds->stay = 1; break;
    case O_PRINT: o->want_print = 1; break;
    case O_PRINT_KEY: o->want_print = 2; break;
    case O_PRINT_PRIV: o->want_print = 3; break;
    case O_PRINT_MATTER: o->want_print = 4; break;
    case 'v': ds->verbose = 1; break;
    default: return 0;
    }
    return 1;
}

/* One option from getopt_long: -1 to go on, else main's exit code. */
static int opt_apply(int c, const char *arg, devsim *ds, devsim_opts *o)
{
    if (opt_plain(c, arg, ds, o)) {
        return -1;
    }
    switch (c) {
    case O_BAUD: return opt_baud(ds, arg);
    case O_MB: return opt_misbehave(ds, arg);
    case O_VANISH_AT: return opt_vanish_at(ds, arg);
    case O_MATTER_VID: return opt_matter_id(arg, &o->matter_vid);
    case O_MATTER_PID: return opt_matter_id(arg, &o->matter_pid);
    case O_CSR_SUBJECT: return opt_csr_subject(ds, arg);
    case 'V': kl_version_print("keyline-devsim"); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
}

/* The command line into ds and o: -1 to go on, else main's exit code. */
static int opts_parse(int argc, char **argv, devsim *ds, devsim_opts *o)
{
    int c, r;
    while ((c = getopt_long(argc, argv, "vVh", devsim_longopts, NULL)) != -1) {
        if ((r = opt_apply(c, optarg, ds, o)) >= 0) {
            return r;
        }
    }
    if (optind < argc) {
        die("unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!ds->state_file) {
        die("%s", "--state FILE is required");
        return 2;
    }
    return -1;
}

/* What a device that serves a port needs besides --state: 0 when all is there. */
static int opts_check_serve(const devsim *ds, const devsim_opts *o)
{
    if (!o->port_path || !o->serial) {
        die("%s", "--port DEV and --serial HWSERIAL are required (or --print-cert)");
    } else if ((ds->misbehave == MB_EVIL_SUBJECT || ds->misbehave == MB_P384_CSR) !=
               (ds->csr_subject != NULL)) {
        die("%s", "--misbehave evil-subject or p384-csr and --csr-subject DN go together");
    } else if ((o->matter_vid == 0) != (o->matter_pid == 0)) {
        die("%s", "--matter-vid and --matter-pid go together");
    } else if (!kl_dev_serial_ok(o->serial)) {
        die("--serial '%s' must be 1..64 PrintableString characters", o->serial);
    } else if (strlen(o->model) == 0 || strlen(o->model) > KL_PROTO_MODEL_MAX ||
               strlen(o->fw) > KL_PROTO_FWVER_MAX) {
        die("%s", "--model must be 1..64 bytes and --fw at most 32");
    } else {
        return 0;
    }
    return 2;
}

/* --update: docs/firmware.md: verify, then record version and counter */
static int run_update(devsim *ds, devsim_port *port, const char *update_file)
{
    int urc = offline_open(ds, port);
    if (urc == 0) {
        urc = devsim_update(port, update_file, stdout);
        if (urc == 0 && state_sync(ds) != KL_OK) { /* the state file is the flash */
            fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
            urc = 1;
        }
        devsim_port_close(port);
    }
    return urc;
}

static int run_print(devsim *ds, int want_print)
{
    if (want_print == 4) {
        return print_matter(ds);
    }
    return want_print == 1 ? print_cert(ds) : print_key(ds, want_print == 3);
}

static void signals_setup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The device engine over its state and the serial port: 0, or main's exit code. */
static int devsim_start(devsim *ds, kl_dev *dev, devsim_port *port, const devsim_opts *o)
{
    static kl_port ops;
    static kl_dev_info info; /* the engine keeps a pointer to it */
    info = (kl_dev_info){o->model, o->serial, o->fw, o->matter_vid, o->matter_pid};
    if (kl_proto_dec_init(&ds->odec, ds->obuf, sizeof ds->obuf) != KL_PROTO_OK) {
        return 1;
    }
    if (state_open(ds) != KL_OK || devsim_port_open(port, ds->workdir, dev_send, ds) != KL_OK) {
        fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
        return 1;
    }
    ds->port = port;
    port->bad_sig = ds->misbehave == MB_BAD_CSR;
    port->refuse_lock = ds->misbehave == MB_REFUSE_LOCK;
    ops = devsim_port_ops;
    if (ds->misbehave == MB_COUNTERFEIT && cf_setup(ds, port, &ops) != KL_OK) {
        fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
        return 1;
    }
    int r = kl_dev_init(dev, &ops, port, &info);
    if (r != KL_DEV_OK) {
        fprintf(stderr, "keyline-devsim: %s: %s\n", ds->state_file,
                r == KL_DEV_ESTORAGE ? "device state is corrupt: refusing to run"
                                     : "cannot start the device engine");
        return 1;
    }
    if (state_sync(ds) != KL_OK || port_open(ds, o->port_path) != KL_OK) {
        fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
        return 1;
    }
    ds->start_locked = kl_dev_get_state(dev) == KL_STATE_LOCKED;
    if (ds->verbose) {
        fprintf(stderr, "keyline-devsim: %s on %s, state %s, misbehave %s\n", o->serial,
                o->port_path, kl_proto_state_name(kl_dev_get_state(dev)), mb_names[ds->misbehave]);
    }
    return 0;
}

/* Locked: leave once the station has seen us locked (a HELLO answered after LOCK, or at all if
 * we started locked) and asked nothing but HELLO for --linger-ms (a restarted station may
 * still ask for a CHALLENGE, however slowly a loaded machine runs it; a station that only
 * polls with HELLO does not keep us), or after a long silence. */
static int devsim_done(const devsim *ds, long last_rx)
{
    long linger = ds->linger_ms + (ds->misbehave == MB_SLOW ? 2 * ds->delay_ms : 0);
    long since = ds->last_work_after_lock > ds->first_hello_after_lock ? ds->last_work_after_lock
                                                                       : ds->first_hello_after_lock;
    return (ds->hellos_after_lock >= 1 && now_ms() - since >= linger) ||
           ((ds->locked_sent || ds->start_locked) && now_ms() - last_rx > LOCKED_IDLE_EXIT_MS);
}

/* Read what the station sent into the engine: the bytes read, or -1 when the port failed. */
static ssize_t devsim_rx(devsim *ds, kl_dev *dev, const char *port_path, short revents,
                         unsigned *nreads, long *last_rx)
{
    uint8_t buf[512];
    ssize_t n = read(ds->fd, buf, sizeof buf);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        fprintf(stderr, "keyline-devsim: %s: read: %s\n", port_path, strerror(errno));
        return -1;
    }
    if (n > 0) {
        pace(ds, (size_t)n);
        if (ds->misbehave == MB_CORRUPT && ++*nreads % 4 == 3 && n > 8) {
            buf[n / 2] ^= 0x04; /* station -> device damage: dropped, retransmitted */
            if (buf[n / 2] == 0) {
                buf[n / 2] = 0x5a;
            }
        }
        *last_rx = now_ms();
        if (kl_dev_feed(dev, buf, (size_t)n) == KL_DEV_EPORT) {
            fprintf(stderr, "keyline-devsim: %s: cannot answer\n", port_path);
        }
    } else if (revents & POLLHUP) {
        sleep_ms(50);
    }
    return n > 0 ? n : 0;
}

/* Handle what the station sent before we decided to leave: 0, or 1 when the port failed. A
 * slow answer keeps us from reading (each copy of a resent HELLO poll costs --delay-ms), so
 * the station's CHALLENGE may have been waiting on the line for longer than the linger time;
 * leaving with it unread fails a device the station was still at work with. */
static int devsim_drain(devsim *ds, kl_dev *dev, const char *port_path, unsigned *nreads,
                        long *last_rx)
{
    int left = 0;
    if (ioctl(ds->fd, FIONREAD, &left) != 0) {
        return 0;
    }
    while (left > 0) {
        ssize_t n = devsim_rx(ds, dev, port_path, 0, nreads, last_rx);
        if (n < 0) {
            return 1;
        }
        if (n == 0) {
            break;
        }
        left -= (int)n;
    }
    return 0;
}

/* Serve the port until told to stop or, unless --stay, done: main's exit code. */
static int devsim_serve(devsim *ds, kl_dev *dev, const char *port_path)
{
    long last_rx = now_ms();
    unsigned nreads = 0;
    while (!g_stop) {
        struct pollfd pfd = {.fd = ds->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, 100);
        if (pr < 0 && errno != EINTR) {
            break;
        }
        if (pr > 0 && devsim_rx(ds, dev, port_path, pfd.revents, &nreads, &last_rx) < 0) {
            return 1;
        }
        kl_dev_poll(dev);
        if (!ds->stay && devsim_done(ds, last_rx)) {
            /* decide on what had arrived by now, not on what we had read */
            if (devsim_drain(ds, dev, port_path, &nreads, &last_rx) != 0) {
                return 1;
            }
            if (devsim_done(ds, last_rx)) {
                break;
            }
        }
    }
    return 0;
}

static void devsim_stop(devsim *ds, devsim_port *port)
{
    if (ds->fd >= 0) {
        tcdrain(ds->fd);
        close(ds->fd);
    }
    devsim_port_close(port);
    X509_NAME_free(ds->csr_subject);
    if (ds->last_pack) {
        OPENSSL_cleanse(ds->last_pack, ds->last_pack_len);
        free(ds->last_pack);
    }
    cleanup();
}

/* What the one-shot modes printed (--print-*, --update, --help) must have arrived: a
 * certificate or key cut short on a full disk is an error (the full-disk test's D3). */
static int stdout_exit(int r)
{
    if (kl_stdout_close() != KL_OK) {
        fprintf(stderr, "keyline-devsim: %s\n", kl_errmsg());
        return r ? r : 1;
    }
    return r;
}

int main(int argc, char **argv)
{
    static devsim ds;
    static kl_dev dev;
    static devsim_port port;
    devsim_opts o = {.model = "keyline-sim", .fw = "1.0.0"};
    memset(&ds, 0, sizeof ds);
    ds.fd = -1;
    ds.baud = 115200;
    ds.delay_ms = 1500;
    ds.vanish_at = KL_MSG_PUTCERT;
    ds.linger_ms = 1000;

    int r = opts_parse(argc, argv, &ds, &o);
    if (r >= 0) {
        return stdout_exit(r);
    }
    atexit(cleanup);
    if (o.update_file) {
        return stdout_exit(run_update(&ds, &port, o.update_file));
    }
    if (o.want_print) {
        return stdout_exit(run_print(&ds, o.want_print));
    }
    if (opts_check_serve(&ds, &o) != 0) {
        return 2;
    }
    signals_setup();
    if ((r = devsim_start(&ds, &dev, &port, &o)) != 0) {
        return r;
    }
    r = devsim_serve(&ds, &dev, o.port_path);
    devsim_stop(&ds, &port);
    return r;
}
