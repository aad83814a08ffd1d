/* keyline: signer processes. See hsm_signer.h and docs/internals/hsm.md ("Signer processes").
 *
 * Wire: every message is a frame, a 4-byte big-endian body length (1..HSM_SIGNER_FRAME_MAX)
 * and the body. Requests (parent -> signer) are parsed by hsm_signer_req_parse; answers
 * (signer -> parent) are a status byte (0 = OK, else a kl_rc) and the result (OK) or a
 * message (error). A signer's first frame is its hello: status, then the token label.
 * One request is outstanding per channel at a time; the pool hands channels to threads.
 *
 * The remote EVP_PKEYs are legacy EC_KEY / RSA objects with our own method (as libp11 does
 * it): OpenSSL 3.0 marks such keys foreign and runs their private-key operation through the
 * method, here one round trip to a signer. That needs the deprecated EC_KEY_METHOD /
 * RSA_METHOD API, declared because the build sets OPENSSL_API_COMPAT=30000. */
#include "hsm_signer.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "hsm_internal.h"
#include "kl_log.h"

/* How long the parent waits for one answer (a hung signer is killed, not waited for). */
#define SIGNER_REQ_TIMEOUT_MS 30000
/* How long it waits for a new signer's hello (login, with hsm_open's retries). */
#define SIGNER_HELLO_TIMEOUT_MS 60000
#define SIGNER_MAX 64u
#define SIGNER_MSG_MAX 400u

/* ---------------------------------------------------------------------------------------- */
/* request codec                                                                            */

size_t hsm_md_size(hsm_md md)
{
    switch (md) {
    case HSM_MD_SHA256: return 32;
    case HSM_MD_SHA384: return 48;
    case HSM_MD_SHA512: return 64;
    default: return 0;
    }
}

static const EVP_MD *md_evp(hsm_md md)
{
    switch (md) {
    case HSM_MD_SHA256: return EVP_sha256();
    case HSM_MD_SHA384: return EVP_sha384();
    case HSM_MD_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

/* Fields a request must satisfy whether it was parsed or is about to be encoded. */
static kl_rc req_check(const hsm_signer_req *r)
{
    size_t ll = strnlen(r->label, sizeof r->label);
    if (ll == 0 || ll > HSM_SIGNER_LABEL_MAX) {
        return kl_fail(KL_EINPUT, "signer request: label of %zu bytes (1..%u)", ll,
                       HSM_SIGNER_LABEL_MAX);
    }
    for (size_t i = 0; i < ll; i++) {
        unsigned char c = (unsigned char)r->label[i];
        if (c < 0x20 || c > 0x7e) {
            return kl_fail(KL_EINPUT, "signer request: label byte 0x%02x is not printable", c);
        }
    }
    /* A bare CKA_LABEL only: the signer's key lookup would parse a URI. */
    if (strncasecmp(r->label, "pkcs11:", 7) == 0) {
        return kl_fail(KL_EINPUT, "signer request: a label, not a URI");
    }
    if (r->op == HSM_REQ_PUBKEY) {
        return KL_OK;
    }
    if (r->op != HSM_REQ_SIGN) {
        return kl_fail(KL_EINPUT, "signer request: unknown operation %u", r->op);
    }
    switch (r->alg) {
    case HSM_SIG_ECDSA:
        /* The EC_KEY method sees only the digest: its length says which hash made it. */
        if (r->md != HSM_MD_NONE) {
            return kl_fail(KL_EINPUT, "signer request: ECDSA takes no digest algorithm");
        }
        if (r->dgst_len != 32 && r->dgst_len != 48 && r->dgst_len != 64) {
            return kl_fail(KL_EINPUT, "signer request: ECDSA digest of %zu bytes", r->dgst_len);
        }
        return KL_OK;
    case HSM_SIG_RSA_PKCS1:
    case HSM_SIG_RSA_PSS:
        if (hsm_md_size((hsm_md)r->md) == 0) {
            return kl_fail(KL_EINPUT, "signer request: RSA needs SHA-256, -384 or -512 (got %u)",
                           r->md);
        }
        if (r->dgst_len != hsm_md_size((hsm_md)r->md)) {
            return kl_fail(KL_EINPUT, "signer request: digest of %zu bytes for a %zu-byte hash",
                           r->dgst_len, hsm_md_size((hsm_md)r->md));
        }
        return KL_OK;
    default: return kl_fail(KL_EINPUT, "signer request: unknown signature scheme %u", r->alg);
    }
}

/* Body: op(1) label_len(1) label; SIGN adds alg(1) md(1) dgst_len(1) dgst. Nothing after. */
kl_rc hsm_signer_req_parse(const uint8_t *body, size_t len, hsm_signer_req *out)
{
    size_t p = 0;
    memset(out, 0, sizeof *out);
    if (body == NULL || len < 3) {
        return kl_fail(KL_EINPUT, "signer request: %zu bytes is too short", len);
    }
    if (len > HSM_SIGNER_FRAME_MAX) {
        return kl_fail(KL_EINPUT, "signer request: %zu bytes is too long", len);
    }
    out->op = body[p++];
    if (out->op != HSM_REQ_PUBKEY && out->op != HSM_REQ_SIGN) {
        return kl_fail(KL_EINPUT, "signer request: unknown operation %u", out->op);
    }
    size_t ll = body[p++];
    if (ll == 0 || ll > HSM_SIGNER_LABEL_MAX || ll > len - p) {
        return kl_fail(KL_EINPUT, "signer request: bad label length %zu", ll);
    }
    if (memchr(body + p, 0, ll) != NULL) {
        return kl_fail(KL_EINPUT, "signer request: NUL in label");
    }
    memcpy(out->label, body + p, ll);
    out->label[ll] = '\0';
    p += ll;
    if (out->op == HSM_REQ_SIGN) {
        if (len - p < 3) {
            return kl_fail(KL_EINPUT, "signer request: truncated signature parameters");
        }
        out->alg = body[p++];
        out->md = body[p++];
        out->dgst_len = body[p++];
        if (out->dgst_len > sizeof out->dgst || out->dgst_len > len - p) {
            return kl_fail(KL_EINPUT, "signer request: bad digest length %zu", out->dgst_len);
        }
        memcpy(out->dgst, body + p, out->dgst_len);
        p += out->dgst_len;
    }
    if (p != len) {
        return kl_fail(KL_EINPUT, "signer request: %zu trailing bytes", len - p);
    }
    return req_check(out);
}

size_t hsm_signer_req_encode(const hsm_signer_req *r, uint8_t *buf, size_t cap)
{
    size_t ll = strnlen(r->label, sizeof r->label);
    size_t need = 2 + ll + (r->op == HSM_REQ_SIGN ? 3 + r->dgst_len : 0);
    if (req_check(r) != KL_OK || need > cap || need > HSM_SIGNER_FRAME_MAX) {
        return 0;
    }
    size_t p = 0;
    buf[p++] = r->op;
    buf[p++] = (uint8_t)ll;
    memcpy(buf + p, r->label, ll);
    p += ll;
    if (r->op == HSM_REQ_SIGN) {
        buf[p++] = r->alg;
        buf[p++] = r->md;
        buf[p++] = (uint8_t)r->dgst_len;
        memcpy(buf + p, r->dgst, r->dgst_len);
        p += r->dgst_len;
    }
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* framing                                                                                  */

typedef struct {
    uint8_t buf[4 + HSM_SIGNER_FRAME_MAX];
    size_t have; /* bytes in buf; a frame that was handed out is still at the front */
    size_t used; /* length of that frame (header included), dropped by the next read */
} frame_rd;

enum { FRAME_OK = 0, FRAME_EOF, FRAME_BAD, FRAME_TIMEOUT, FRAME_ERR };

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Read one frame (timeout_ms < 0: wait for ever). *body points into rd until the next call.
 * With a timeout the socket must carry SO_RCVTIMEO (channel_timeout): a recv that waits that
 * long without data ends with EAGAIN, so a round trip costs one blocking recv, no poll. */
static int frame_read(int fd, frame_rd *rd, int timeout_ms, const uint8_t **body, size_t *len)
{
    if (rd->used) {
        memmove(rd->buf, rd->buf + rd->used, rd->have - rd->used);
        rd->have -= rd->used;
        rd->used = 0;
    }
    double deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : 0;
    for (;;) {
        if (rd->have >= 4) {
            size_t l = (size_t)rd->buf[0] << 24 | (size_t)rd->buf[1] << 16 |
                       (size_t)rd->buf[2] << 8 | rd->buf[3];
            if (l == 0 || l > HSM_SIGNER_FRAME_MAX) {
                return FRAME_BAD; /* framing lost: the channel cannot go on */
            }
            if (rd->have >= 4 + l) {
                *body = rd->buf + 4;
                *len = l;
                rd->used = 4 + l;
                return FRAME_OK;
            }
        }
        ssize_t n = recv(fd, rd->buf + rd->have, sizeof rd->buf - rd->have, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && timeout_ms >= 0) {
            if (mono_ms() >= deadline) {
                return FRAME_TIMEOUT;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            return FRAME_EOF;
        }
        if (n < 0) {
            return FRAME_ERR;
        }
        rd->have += (size_t)n;
    }
}

/* The parent's end of a channel: a recv gives up after SIGNER_REQ_TIMEOUT_MS without data. */
static int channel_timeout(int fd)
{
    struct timeval tv = {SIGNER_REQ_TIMEOUT_MS / 1000, (SIGNER_REQ_TIMEOUT_MS % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Send header and body in one write (the body is at buf + 4, buf has room for the header). */
static int frame_write(int fd, uint8_t *buf, size_t body_len)
{
    buf[0] = (uint8_t)(body_len >> 24);
    buf[1] = (uint8_t)(body_len >> 16);
    buf[2] = (uint8_t)(body_len >> 8);
    buf[3] = (uint8_t)body_len;
    size_t off = 0, total = body_len + 4;
    while (off < total) {
        ssize_t n = send(fd, buf + off, total - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* An answer frame: status and payload, or status and the current error message. */
static int answer_write(int fd, kl_rc status, const uint8_t *data, size_t len)
{
    uint8_t out[4 + HSM_SIGNER_FRAME_MAX];
    if (status != KL_OK) {
        const char *m = kl_errmsg();
        data = (const uint8_t *)m;
        len = strnlen(m, SIGNER_MSG_MAX);
    }
    if (len > HSM_SIGNER_FRAME_MAX - 1) {
        return answer_write(fd, kl_fail(KL_EINTERNAL, "signer answer too long"), NULL, 0);
    }
    out[4] = (uint8_t)status;
    if (len) {
        memcpy(out + 5, data, len);
    }
    int r = frame_write(fd, out, len + 1);
    OPENSSL_cleanse(out, sizeof out);
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* signing with a key of a local context (what a signer does; also hsm_key_sign_digest)     */

static kl_rc sign_local(hsm_ctx *h, const char *label, hsm_sig_alg alg, hsm_md md,
                        const uint8_t *dgst, size_t dgst_len, uint8_t *sig, size_t *sig_len)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t need = 0;
    TRY(hsm_key_load(h, label, &pk));
    int base = EVP_PKEY_get_base_id(pk);
    ENSURE(alg == HSM_SIG_ECDSA ? base == EVP_PKEY_EC : base == EVP_PKEY_RSA, KL_EPOLICY,
           "key '%s' cannot make %s signatures", label, alg == HSM_SIG_ECDSA ? "ECDSA" : "RSA");
    ctx = EVP_PKEY_CTX_new(pk, NULL);
    ENSURE_SSL(ctx != NULL && EVP_PKEY_sign_init(ctx) > 0, KL_EHSM,
               "cannot start a signature with key '%s'", label);
    if (alg != HSM_SIG_ECDSA) {
        const EVP_MD *m = md_evp(md);
        ENSURE(m != NULL, KL_EINPUT, "RSA signature without a digest algorithm");
        int pad = alg == HSM_SIG_RSA_PSS ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING;
        ENSURE_SSL(EVP_PKEY_CTX_set_rsa_padding(ctx, pad) > 0 &&
                       EVP_PKEY_CTX_set_signature_md(ctx, m) > 0,
                   KL_EHSM, "cannot set up the RSA signature with key '%s'", label);
        if (alg == HSM_SIG_RSA_PSS) {
            ENSURE_SSL(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, m) > 0 &&
                           EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) > 0,
                       KL_EHSM, "cannot set up RSA-PSS with key '%s'", label);
        }
    }
    ENSURE_SSL(EVP_PKEY_sign(ctx, NULL, &need, dgst, dgst_len) > 0, KL_EHSM,
               "cannot size the signature of key '%s'", label);
    ENSURE(need <= *sig_len, KL_EINTERNAL, "signature of %zu bytes does not fit %zu", need,
           *sig_len);
    need = *sig_len;
    ENSURE_SSL(EVP_PKEY_sign(ctx, sig, &need, dgst, dgst_len) > 0, KL_EHSM,
               "signing with key '%s' on token '%s' failed", label, hsm_token_label(h));
    *sig_len = need;
out:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* the signer process                                                                       */

#define SIGNER_KEYS_MAX 64u

/* The keys a signer may sign with: fnmatch(3) patterns over key labels (pkcs11: URIs in the
 * list are reduced to their object= label at start-up). n_keys == -1: any key. */
typedef struct {
    char *keys[SIGNER_KEYS_MAX];
    int n_keys;
} signer_policy;

static kl_rc policy_init(signer_policy *p, hsm_ctx *h, const char *const *sign_keys)
{
    kl_rc rc = KL_OK;
    p->n_keys = -1;
    if (sign_keys == NULL) {
        return KL_OK;
    }
    p->n_keys = 0;
    for (const char *const *k = sign_keys; *k != NULL; k++) {
        ENSURE((unsigned)p->n_keys < SIGNER_KEYS_MAX, KL_EUSAGE,
               "more than %u signing keys for a signer", SIGNER_KEYS_MAX);
        TRY(hsm_label_of(h, *k, &p->keys[p->n_keys]));
        p->n_keys++;
    }
out:
    return rc;
}

/* KL_EPOLICY unless the policy lets `label` (a label or a pkcs11: URI) sign. */
static kl_rc policy_check(const signer_policy *p, hsm_ctx *h, const char *label)
{
    char *l = NULL;
    if (p->n_keys < 0) {
        return KL_OK;
    }
    kl_rc rc = hsm_label_of(h, label, &l);
    if (rc != KL_OK) {
        return rc;
    }
    for (int i = 0; i < p->n_keys; i++) {
        if (fnmatch(p->keys[i], l, 0) == 0) {
            free(l);
            return KL_OK;
        }
    }
    rc = kl_fail(KL_EPOLICY, "key '%s' is not one this server signs with (offline)", l);
    free(l);
    return rc;
}

static void signer_serve(int fd, hsm_ctx *h, const signer_policy *pol)
{
    frame_rd *rd = calloc(1, sizeof *rd);
    if (rd == NULL) {
        _exit(1);
    }
    for (;;) {
        const uint8_t *body = NULL;
        size_t len = 0;
        int fr = frame_read(fd, rd, -1, &body, &len);
        if (fr == FRAME_EOF) {
            _exit(0); /* the parent closed the channel (or is gone) */
        }
        if (fr != FRAME_OK) {
            _exit(3); /* garbage length or a socket error: close the channel */
        }
        hsm_signer_req rq;
        uint8_t out[HSM_SIGNER_FRAME_MAX];
        size_t out_len = 0;
        kl_rc rc = hsm_signer_req_parse(body, len, &rq);
        if (rc == KL_OK && rq.op == HSM_REQ_PUBKEY) {
            EVP_PKEY *pub = NULL;
            rc = hsm_key_public(h, rq.label, &pub);
            if (rc == KL_OK) {
                int n = i2d_PUBKEY(pub, NULL);
                unsigned char *p = out;
                if (n <= 0 || (size_t)n > sizeof out - 1 || i2d_PUBKEY(pub, &p) != n) {
                    rc =
                        kl_fail_ssl(KL_EINTERNAL, "cannot encode the public key of '%s'", rq.label);
                } else {
                    out_len = (size_t)n;
                }
            }
            EVP_PKEY_free(pub);
        } else if (rc == KL_OK && (rc = policy_check(pol, h, rq.label)) == KL_OK) {
            out_len = 512;
            rc = sign_local(h, rq.label, (hsm_sig_alg)rq.alg, (hsm_md)rq.md, rq.dgst, rq.dgst_len,
                            out, &out_len);
        }
        ERR_clear_error();
        if (answer_write(fd, rc, out, out_len) != 0) {
            _exit(0);
        }
    }
}

/* The first steps of a keeper or a signer after fork(); returns the channel's new number, 3. */
static int child_setup(int fd, pid_t parent)
{
    /* Die with the parent: the kernel sends SIGKILL when it exits; it may already have. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(0);
    }
    /* The network process runs as the same user: keep it from attaching to us (ptrace,
     * /proc/PID/mem) to read the PIN or use the session. */
    prctl(PR_SET_DUMPABLE, 0);
    /* SIGINT/SIGTERM are for the server, which finishes its in-flight requests (through the
     * signers) before it closes the channels; keeper and signers end on EOF. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Nothing inherited but stdio (logging) and our channel: no listening sockets, no store,
     * no other signer's channel (its EOF must reach it when the server goes). */
    if (fd != 3) {
        if (dup2(fd, 3) < 0) {
            _exit(1);
        }
    }
    close_range(4, ~0U, 0);
    return 3;
}

/* Runs in a signer after fork(); never returns. */
static void signer_child(int fd, pid_t parent, const char *module, const char *token_uri, char *pin,
                         const char *const *sign_keys)
{
    fd = child_setup(fd, parent);

    hsm_ctx *h = NULL;
    kl_rc rc = hsm_open(&h, module, token_uri, pin);
    OPENSSL_cleanse(pin, strlen(pin));
    signer_policy pol;
    memset(&pol, 0, sizeof pol);
    if (rc == KL_OK) {
        rc = policy_init(&pol, h, sign_keys);
    }
    if (rc != KL_OK) {
        answer_write(fd, rc, NULL, 0);
        _exit(2);
    }
    const char *tl = hsm_token_label(h);
    if (answer_write(fd, KL_OK, (const uint8_t *)tl, strnlen(tl, SIGNER_MSG_MAX)) != 0) {
        _exit(0);
    }
    signer_serve(fd, h, &pol);
    _exit(0);
}

/* Number of threads of this process (/proc/self/status), 0 when unknown. */
static unsigned self_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned n = 0;
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "Threads: %u", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

static void reap(pid_t pid)
{
    /* A signer exits on EOF; one stuck in the module is killed after a moment. */
    for (int i = 0; i < 250; i++) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) {
            return;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

/* A new signer's first frame: the token label, or why it could not log in. */
static kl_rc signer_hello(int fd, frame_rd *rd, pid_t pid, char *token_label,
                          size_t token_label_cap)
{
    kl_rc rc = KL_OK;
    const uint8_t *body = NULL;
    size_t len = 0;
    int fr = frame_read(fd, rd, SIGNER_HELLO_TIMEOUT_MS, &body, &len);
    ENSURE(fr == FRAME_OK, KL_EHSM, "signer process %d did not start (%s)", (int)pid,
           fr == FRAME_EOF       ? "it exited"
           : fr == FRAME_TIMEOUT ? "no answer"
                                 : "bad answer");
    if (body[0] != KL_OK) {
        kl_rc code = body[0] <= KL_EINTERNAL ? (kl_rc)body[0] : KL_EHSM;
        ENSURE(0, code, "%.*s", (int)(len - 1 < SIGNER_MSG_MAX ? len - 1 : SIGNER_MSG_MAX),
               (const char *)body + 1);
    }
    snprintf(token_label, token_label_cap, "%.*s",
             (int)(len - 1 < SIGNER_MSG_MAX ? len - 1 : SIGNER_MSG_MAX), (const char *)body + 1);
    rd->have = rd->used = 0;
out:
    return rc;
}

/* Refuse to fork signers (or their keeper) from a process where that is unsafe. */
static kl_rc fork_check(const char *module, const char *token_uri, const char *pin)
{
    kl_rc rc = KL_OK;
    ENSURE(module != NULL && token_uri != NULL && pin != NULL, KL_EUSAGE,
           "a signer needs the module, the token and the PIN");
    ENSURE(!hsm_module_loaded(), KL_EUSAGE,
           "cannot start signer processes: this process already has a PKCS#11 module "
           "initialised (fork them first)");
    ENSURE(self_threads() <= 1, KL_EUSAGE,
           "cannot start signer processes: this process already runs %u threads", self_threads());
out:
    return rc;
}

kl_rc hsm_signer_fork(const char *module, const char *token_uri, const char *pin,
                      const char *const *sign_keys, int *fd, pid_t *pid, char *token_label,
                      size_t token_label_cap)
{
    kl_rc rc = KL_OK;
    int sv[2] = {-1, -1};
    pid_t child = -1;
    frame_rd *rd = NULL;
    char pinbuf[256];
    *fd = -1;
    *pid = -1;
    TRY(fork_check(module, token_uri, pin));
    ENSURE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, KL_EIO, "socketpair: %s",
           strerror(errno));
    ENSURE(channel_timeout(sv[0]) == 0, KL_EIO, "SO_RCVTIMEO: %s", strerror(errno));
    rd = calloc(1, sizeof *rd);
    ENSURE(rd != NULL, KL_EINTERNAL, "out of memory");
    /* The child logs in from this copy and wipes it; the caller's buffer may be read-only. */
    ENSURE(strlen(pin) < sizeof pinbuf, KL_EUSAGE, "PIN longer than %zu bytes", sizeof pinbuf - 1);
    memcpy(pinbuf, pin, strlen(pin) + 1);
    pid_t parent = getpid();
    fflush(NULL);
    child = fork();
    ENSURE(child >= 0, KL_EIO, "fork: %s", strerror(errno));
    if (child == 0) {
        close(sv[0]);
        signer_child(sv[1], parent, module, token_uri, pinbuf, sign_keys);
        _exit(1);
    }
    OPENSSL_cleanse(pinbuf, sizeof pinbuf);
    close(sv[1]);
    sv[1] = -1;
    TRY(signer_hello(sv[0], rd, child, token_label, token_label_cap));
    *fd = sv[0];
    *pid = child;
    sv[0] = -1;
    child = -1;
out:
    OPENSSL_cleanse(pinbuf, sizeof pinbuf);
    free(rd);
    if (sv[0] >= 0) {
        close(sv[0]);
    }
    if (sv[1] >= 0) {
        close(sv[1]);
    }
    if (child > 0) {
        reap(child);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* the keeper: forks signers, also after the server has wiped the PIN                         */

/* Keeper wire (server -> keeper): one byte 'S' = start one more signer. Answer: status byte,
 * 4-byte big-endian pid, then (error) a message; on OK the server's end of the new signer's
 * channel rides along as SCM_RIGHTS. */
#define KEEPER_SPAWN 'S'
/* After the first signers, at most one more per this many ms (a signer that crashes on every
 * request must not turn into a fork loop). */
#define KEEPER_RESPAWN_GAP_MS 1000

static void keeper_answer(int kfd, kl_rc st, pid_t pid, int pass_fd, const char *msg)
{
    uint8_t b[5 + SIGNER_MSG_MAX];
    size_t ml = msg ? strnlen(msg, SIGNER_MSG_MAX) : 0;
    b[0] = (uint8_t)st;
    b[1] = (uint8_t)((uint32_t)pid >> 24);
    b[2] = (uint8_t)((uint32_t)pid >> 16);
    b[3] = (uint8_t)((uint32_t)pid >> 8);
    b[4] = (uint8_t)pid;
    if (ml) {
        memcpy(b + 5, msg, ml);
    }
    struct iovec iov = {b, 5 + ml};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&cm, 0, sizeof cm);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (pass_fd >= 0) {
        mh.msg_control = cm.buf;
        mh.msg_controllen = sizeof cm.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    while (sendmsg(kfd, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

/* Forget children that have exited; returns how many are left. */
static unsigned keeper_reap(pid_t *kids, unsigned n)
{
    pid_t p;
    while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            if (kids[i] == p) {
                kids[i] = kids[--n];
                break;
            }
        }
    }
    return n;
}

/* Runs in the keeper after fork(); never returns. Holds the PIN for its whole life (a signer's
 * libp11 slot holds it too), has no PKCS#11 module loaded (so its forks are clean), and forks
 * at most `max` live signers. */
static void keeper_main(int kfd, pid_t server, const char *module, const char *token_uri, char *pin,
                        const char *const *sign_keys, unsigned max)
{
    kfd = child_setup(kfd, server);
    pid_t kids[SIGNER_MAX];
    unsigned n = 0, started = 0;
    double last = 0;
    for (;;) {
        uint8_t op = 0;
        ssize_t got = recv(kfd, &op, 1, 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0 || op != KEEPER_SPAWN) {
            break; /* the server closed its end (or is gone), or garbage */
        }
        /* A signer the server saw die may not be a zombie yet: give it a moment. */
        n = keeper_reap(kids, n);
        for (int i = 0; i < 50 && n >= max; i++) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            n = keeper_reap(kids, n);
        }
        if (n >= max) {
            keeper_answer(kfd, KL_EUSAGE, 0, -1, "all signer processes are running");
            continue;
        }
        if (started >= max && mono_ms() - last < KEEPER_RESPAWN_GAP_MS) {
            keeper_answer(kfd, KL_EHSM, 0, -1,
                          "a signer was started less than a second ago; try again");
            continue;
        }
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            keeper_answer(kfd, KL_EIO, 0, -1, "socketpair failed");
            continue;
        }
        pid_t me = getpid();
        pid_t child = fork();
        if (child == 0) {
            close(sv[0]);
            signer_child(sv[1], me, module, token_uri, pin, sign_keys);
            _exit(1);
        }
        close(sv[1]);
        if (child < 0) {
            close(sv[0]);
            keeper_answer(kfd, KL_EIO, 0, -1, "fork failed");
            continue;
        }
        kids[n++] = child;
        started++;
        last = mono_ms();
        keeper_answer(kfd, KL_OK, child, sv[0], NULL);
        close(sv[0]);
    }
    /* The signers end on EOF of their channels, which the server holds: wait for them. */
    OPENSSL_cleanse(pin, strlen(pin));
    for (unsigned i = 0; i < n; i++) {
        reap(kids[i]);
    }
    _exit(0);
}

/* Start the keeper; *kfd is the server's end of its channel. */
static kl_rc keeper_fork(const char *module, const char *token_uri, const char *pin,
                         const char *const *sign_keys, unsigned max, int *kfd, pid_t *kpid)
{
    kl_rc rc = KL_OK;
    int sv[2] = {-1, -1};
    char pinbuf[256];
    TRY(fork_check(module, token_uri, pin));
    ENSURE(strlen(pin) < sizeof pinbuf, KL_EUSAGE, "PIN longer than %zu bytes", sizeof pinbuf - 1);
    ENSURE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, KL_EIO, "socketpair: %s",
           strerror(errno));
    ENSURE(channel_timeout(sv[0]) == 0, KL_EIO, "SO_RCVTIMEO: %s", strerror(errno));
    memcpy(pinbuf, pin, strlen(pin) + 1);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t child = fork();
    ENSURE(child >= 0, KL_EIO, "fork: %s", strerror(errno));
    if (child == 0) {
        close(sv[0]);
        keeper_main(sv[1], parent, module, token_uri, pinbuf, sign_keys, max);
        _exit(1);
    }
    *kfd = sv[0];
    *kpid = child;
    sv[0] = -1;
out:
    OPENSSL_cleanse(pinbuf, sizeof pinbuf);
    if (sv[0] >= 0) {
        close(sv[0]);
    }
    if (sv[1] >= 0) {
        close(sv[1]);
    }
    return rc;
}

/* Ask the keeper for one more signer and wait for its hello. *gone (may be NULL) is set when
 * the keeper itself no longer answers. */
static kl_rc keeper_spawn(int kfd, frame_rd *rd, int *fd, pid_t *pid, char *token_label,
                          size_t token_label_cap, int *gone)
{
    kl_rc rc = KL_OK;
    int dummy = 0;
    gone = gone ? gone : &dummy;
    uint8_t op = KEEPER_SPAWN, b[5 + SIGNER_MSG_MAX];
    int got_fd = -1;
    *fd = -1;
    ssize_t w;
    while ((w = send(kfd, &op, 1, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    *gone = w != 1;
    ENSURE(w == 1, KL_EHSM, "the signer keeper is gone (%s)", strerror(errno));
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = {b, sizeof b};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.buf;
    mh.msg_controllen = sizeof cm.buf;
    ssize_t n;
    while ((n = recvmsg(kfd, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
    for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int))) {
            memcpy(&got_fd, CMSG_DATA(c), sizeof(int));
        }
    }
    *gone = n < 5;
    ENSURE(n >= 5, KL_EHSM, "the signer keeper is gone (%s)",
           n == 0  ? "it exited"
           : n < 0 ? strerror(errno)
                   : "short answer");
    pid_t p = (pid_t)((uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4]);
    if (b[0] != KL_OK) {
        kl_rc code = b[0] <= KL_EINTERNAL ? (kl_rc)b[0] : KL_EHSM;
        ENSURE(0, code, "signer keeper: %.*s", (int)(n - 5), (const char *)b + 5);
    }
    ENSURE(got_fd >= 0 && p > 0, KL_EHSM, "signer keeper: no channel with its answer");
    ENSURE(channel_timeout(got_fd) == 0, KL_EIO, "SO_RCVTIMEO: %s", strerror(errno));
    TRY(signer_hello(got_fd, rd, p, token_label, token_label_cap));
    *fd = got_fd;
    *pid = p;
    got_fd = -1;
out:
    if (got_fd >= 0) {
        close(got_fd);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* the pool (parent side)                                                                   */

typedef struct {
    int fd; /* -1 once dead */
    pid_t pid;
    frame_rd rd;
} signer_chan;

struct hsm_remote {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    signer_chan *ch;
    unsigned n;
    unsigned *free_ids; /* ring of idle channels: taken at head, given back at the tail, so */
    unsigned free_head; /* sequential requests take turns over the signers */
    unsigned nfree;
    unsigned nlive;
    int keeper_fd; /* -1: no keeper (signers cannot be replaced) */
    pid_t keeper_pid;
    pthread_mutex_t spawn_mu; /* one conversation with the keeper at a time */
    double refused_at;        /* mono_ms of the keeper's last refusal (spawn_mu) */
    char token[SIGNER_MSG_MAX + 1];
};

void hsm_remote_free(hsm_remote *r)
{
    if (r == NULL) {
        return;
    }
    for (unsigned i = 0; i < r->n; i++) {
        if (r->ch[i].fd >= 0) {
            close(r->ch[i].fd); /* EOF: the signer exits */
        }
    }
    if (r->keeper_fd >= 0) {
        close(r->keeper_fd); /* EOF: the keeper waits for its signers, then exits */
    }
    if (r->keeper_pid > 0) {
        reap(r->keeper_pid);
    }
    for (unsigned i = 0; i < r->n; i++) {
        if (r->ch[i].pid > 0) {
            reap(r->ch[i].pid); /* children of ours only without a keeper */
        }
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->spawn_mu);
    free(r->ch);
    free(r->free_ids);
    free(r);
}

kl_rc hsm_signer_spawn(const char *module, const char *token_uri, const char *pin, unsigned n,
                       const char *const *sign_keys, hsm_ctx **out)
{
    kl_rc rc = KL_OK;
    char label[SIGNER_MSG_MAX + 1] = "";
    hsm_remote *r = NULL;
    *out = NULL;
    ENSURE(n >= 1 && n <= SIGNER_MAX, KL_EUSAGE, "%u signer processes (1..%u)", n, SIGNER_MAX);
    r = calloc(1, sizeof *r);
    ENSURE(r != NULL, KL_EINTERNAL, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_mutex_init(&r->spawn_mu, NULL);
    r->keeper_fd = -1;
    r->ch = calloc(n, sizeof *r->ch);
    r->free_ids = calloc(n, sizeof *r->free_ids);
    ENSURE(r->ch != NULL && r->free_ids != NULL, KL_EINTERNAL, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        r->ch[i].fd = -1;
    }
    TRY(keeper_fork(module, token_uri, pin, sign_keys, n, &r->keeper_fd, &r->keeper_pid));
    for (unsigned i = 0; i < n; i++) {
        TRY(keeper_spawn(r->keeper_fd, &r->ch[i].rd, &r->ch[i].fd, &r->ch[i].pid, label,
                         sizeof label, NULL));
        r->n++;
        r->nlive++;
        r->free_ids[(r->free_head + r->nfree++) % n] = i;
    }
    snprintf(r->token, sizeof r->token, "%s", label);
    rc = hsm_ctx_new_remote(r, label, out);
    r = NULL; /* owned by the context, or freed */
out:
    hsm_remote_free(r);
    return rc;
}

/* Replace dead signers through the keeper (as many as it will start now). Returns how many
 * were started. Never called with r->mu held. */
static unsigned chan_respawn(hsm_remote *r)
{
    unsigned started = 0;
    pthread_mutex_lock(&r->spawn_mu);
    /* no keeper, or it refused less than a second ago (it starts one a second): do not ask
     * (nor log) on every request while none is running */
    if (r->keeper_fd < 0 || mono_ms() - r->refused_at < KEEPER_RESPAWN_GAP_MS) {
        pthread_mutex_unlock(&r->spawn_mu);
        return 0;
    }
    for (unsigned id = 0; id < r->n; id++) {
        pthread_mutex_lock(&r->mu);
        int dead = r->ch[id].fd < 0;
        pid_t old = r->ch[id].pid;
        pthread_mutex_unlock(&r->mu);
        if (!dead) {
            continue;
        }
        /* the slot is dead: nobody else touches it (chan_take only hands out live ones) */
        int fd = -1;
        pid_t pid = -1;
        char tl[SIGNER_MSG_MAX + 1];
        memset(&r->ch[id].rd, 0, sizeof r->ch[id].rd);
        int gone = 0;
        kl_rc rc = keeper_spawn(r->keeper_fd, &r->ch[id].rd, &fd, &pid, tl, sizeof tl, &gone);
        if (gone) {
            kl_error("the signer keeper (process %d) is gone: dead signers are not replaced any "
                     "more (%s)",
                     (int)r->keeper_pid, kl_errmsg());
            close(r->keeper_fd);
            r->keeper_fd = -1;
            break;
        }
        if (rc == KL_OK && strcmp(tl, r->token) != 0) {
            close(fd);
            rc = kl_fail(KL_EHSM, "new signer %d logged in to token '%s', not '%s'", (int)pid, tl,
                         r->token);
        }
        if (rc != KL_OK) {
            kl_error("signer process %d not replaced: %s", (int)old, kl_errmsg());
            r->refused_at = mono_ms();
            break;
        }
        pthread_mutex_lock(&r->mu);
        r->ch[id].fd = fd;
        r->ch[id].pid = pid;
        r->nlive++;
        r->free_ids[(r->free_head + r->nfree++) % r->n] = id;
        pthread_cond_signal(&r->cv);
        unsigned live = r->nlive;
        pthread_mutex_unlock(&r->mu);
        kl_info("signer process %d replaces %d; %u of %u running", (int)pid, (int)old, live, r->n);
        started++;
    }
    pthread_mutex_unlock(&r->spawn_mu);
    return started;
}

static kl_rc chan_take(hsm_remote *r, unsigned *id)
{
    pthread_mutex_lock(&r->mu);
    while (r->nfree == 0 && r->nlive > 0) {
        pthread_cond_wait(&r->cv, &r->mu);
    }
    if (r->nlive == 0) {
        pthread_mutex_unlock(&r->mu);
        if (chan_respawn(r) > 0) {
            return chan_take(r, id);
        }
        return kl_fail(KL_EHSM, "no signer process is left (all %u have died)", r->n);
    }
    *id = r->free_ids[r->free_head];
    r->free_head = (r->free_head + 1) % r->n;
    r->nfree--;
    pthread_mutex_unlock(&r->mu);
    return KL_OK;
}

/* Returns how many signers are still alive. */
static unsigned chan_give(hsm_remote *r, unsigned id, int dead)
{
    unsigned live;
    pthread_mutex_lock(&r->mu);
    if (dead) {
        close(r->ch[id].fd);
        r->ch[id].fd = -1;
        r->nlive--;
        pthread_cond_broadcast(&r->cv); /* waiters must see nlive == 0 */
    } else {
        r->free_ids[(r->free_head + r->nfree++) % r->n] = id;
        pthread_cond_signal(&r->cv);
    }
    live = r->nlive;
    pthread_mutex_unlock(&r->mu);
    return live;
}

/* One request, one answer. On OK, out gets the payload (cap bytes of room). */
static kl_rc remote_call(hsm_remote *r, const hsm_signer_req *rq, uint8_t *out, size_t *out_len)
{
    kl_rc rc = KL_OK;
    uint8_t buf[4 + HSM_SIGNER_FRAME_MAX];
    unsigned id = 0;
    size_t bl = hsm_signer_req_encode(rq, buf + 4, sizeof buf - 4);
    if (bl == 0) {
        return req_check(rq) != KL_OK ? KL_EINPUT
                                      : kl_fail(KL_EINTERNAL, "signer request does not fit");
    }
    TRY(chan_take(r, &id));
    signer_chan *c = &r->ch[id];
    const uint8_t *body = NULL;
    size_t len = 0;
    int fr = FRAME_ERR;
    if (frame_write(c->fd, buf, bl) == 0) {
        fr = frame_read(c->fd, &c->rd, SIGNER_REQ_TIMEOUT_MS, &body, &len);
    } else if (errno == EPIPE || errno == ECONNRESET) {
        fr = FRAME_EOF; /* it closed its end: it has exited */
    }
    if (fr != FRAME_OK) {
        const char *why = fr == FRAME_EOF       ? "it has exited"
                          : fr == FRAME_TIMEOUT ? "no answer within 30 s; killed"
                          : fr == FRAME_BAD     ? "malformed answer; killed"
                                                : "channel error";
        if (fr != FRAME_EOF) {
            kill(c->pid, SIGKILL);
        }
        pid_t pid = c->pid;
        unsigned live = chan_give(r, id, 1);
        kl_error("signer process %d is gone (%s); %u of %u left", (int)pid, why, live, r->n);
        (void)chan_respawn(r); /* this request still fails: it may be what killed the signer */
        rc = kl_fail(KL_EHSM, "signer process %d is gone (%s)", (int)pid, why);
        goto out;
    }
    if (body[0] != KL_OK) {
        kl_rc code = body[0] <= KL_EINTERNAL ? (kl_rc)body[0] : KL_EHSM;
        rc = kl_fail(code, "signer: %.*s",
                     (int)(len - 1 < SIGNER_MSG_MAX ? len - 1 : SIGNER_MSG_MAX),
                     (const char *)body + 1);
    } else if (len - 1 > *out_len) {
        rc = kl_fail(KL_EHSM, "signer answer of %zu bytes does not fit %zu", len - 1, *out_len);
    } else {
        memcpy(out, body + 1, len - 1);
        *out_len = len - 1;
    }
    (void)chan_give(r, id, 0);
out:
    OPENSSL_cleanse(buf, 4 + bl);
    return rc;
}

static kl_rc remote_sign(hsm_remote *r, const char *label, hsm_sig_alg alg, hsm_md md,
                         const uint8_t *dgst, size_t dgst_len, uint8_t *sig, size_t *sig_len)
{
    hsm_signer_req rq;
    memset(&rq, 0, sizeof rq);
    if (strlen(label) > HSM_SIGNER_LABEL_MAX || dgst_len > sizeof rq.dgst) {
        return kl_fail(KL_EINPUT, "signature request out of range (label or digest too long)");
    }
    rq.op = HSM_REQ_SIGN;
    snprintf(rq.label, sizeof rq.label, "%s", label);
    rq.alg = (uint8_t)alg;
    rq.md = (uint8_t)md;
    memcpy(rq.dgst, dgst, dgst_len);
    rq.dgst_len = dgst_len;
    return remote_call(r, &rq, sig, sig_len);
}

kl_rc hsm_remote_key_public(hsm_remote *r, const char *label, EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    hsm_signer_req rq;
    uint8_t der[HSM_SIGNER_FRAME_MAX];
    size_t len = sizeof der;
    *out = NULL;
    memset(&rq, 0, sizeof rq);
    ENSURE(strlen(label) <= HSM_SIGNER_LABEL_MAX, KL_EINPUT, "key label longer than %u bytes",
           HSM_SIGNER_LABEL_MAX);
    rq.op = HSM_REQ_PUBKEY;
    snprintf(rq.label, sizeof rq.label, "%s", label);
    TRY(remote_call(r, &rq, der, &len));
    const unsigned char *p = der;
    *out = d2i_PUBKEY(NULL, &p, (long)len);
    ENSURE_SSL(*out != NULL && p == der + len, KL_EHSM, "signer: bad public key for '%s'", label);
out:
    if (rc != KL_OK && *out != NULL) {
        EVP_PKEY_free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* remote EVP_PKEYs                                                                         */

typedef struct {
    hsm_remote *r;
    char label[HSM_SIGNER_LABEL_MAX + 1];
} remote_key;

static pthread_once_t g_meth_once = PTHREAD_ONCE_INIT;
static EC_KEY_METHOD *g_ec_meth;
static RSA_METHOD *g_rsa_meth;
static int g_ec_idx = -1, g_rsa_idx = -1;

static void rk_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static int rk_ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig,
                      unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *rp, EC_KEY *ec)
{
    (void)type;
    (void)kinv;
    (void)rp;
    remote_key *k = EC_KEY_get_ex_data(ec, g_ec_idx);
    int cap = ECDSA_size(ec);
    size_t len = cap > 0 ? (size_t)cap : 0;
    if (k == NULL || dlen < 0 ||
        remote_sign(k->r, k->label, HSM_SIG_ECDSA, HSM_MD_NONE, dgst, (size_t)dlen, sig, &len) !=
            KL_OK) {
        if (k != NULL) {
            kl_error("ECDSA signature with '%s': %s", k->label, kl_errmsg());
        }
        ERR_raise(ERR_LIB_EC, ERR_R_OPERATION_FAIL);
        return 0;
    }
    *siglen = (unsigned int)len;
    return 1;
}

static ECDSA_SIG *rk_ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
                                 const BIGNUM *rp, EC_KEY *ec)
{
    unsigned char der[256];
    unsigned int len = 0;
    if (ECDSA_size(ec) > (int)sizeof der || !rk_ec_sign(0, dgst, dlen, der, &len, kinv, rp, ec)) {
        return NULL;
    }
    const unsigned char *p = der;
    return d2i_ECDSA_SIG(NULL, &p, (long)len);
}

static hsm_md md_of_nid(int nid)
{
    switch (nid) {
    case NID_sha256: return HSM_MD_SHA256;
    case NID_sha384: return HSM_MD_SHA384;
    case NID_sha512: return HSM_MD_SHA512;
    default: return HSM_MD_NONE;
    }
}

static int rk_rsa_sign(int type, const unsigned char *m, unsigned int m_length,
                       unsigned char *sigret, unsigned int *siglen, const RSA *rsa)
{
    remote_key *k = RSA_get_ex_data(rsa, g_rsa_idx);
    size_t len = (size_t)RSA_size(rsa);
    hsm_md md = md_of_nid(type);
    if (k == NULL || md == HSM_MD_NONE ||
        remote_sign(k->r, k->label, HSM_SIG_RSA_PKCS1, md, m, m_length, sigret, &len) != KL_OK) {
        if (k != NULL) {
            kl_error("RSA signature with '%s': %s", k->label,
                     md == HSM_MD_NONE ? "digest not allowed" : kl_errmsg());
        }
        ERR_raise(ERR_LIB_RSA, ERR_R_OPERATION_FAIL);
        return 0;
    }
    *siglen = (unsigned int)len;
    return 1;
}

/* Raw private-key operations (PSS padding done here, decryption) are not in the table. */
static int rk_rsa_priv_refuse(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                              int padding)
{
    (void)flen;
    (void)from;
    (void)to;
    (void)rsa;
    (void)padding;
    ERR_raise(ERR_LIB_RSA, ERR_R_OPERATION_FAIL);
    return -1;
}

static void meth_init(void)
{
    g_ec_idx = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, rk_free);
    g_rsa_idx = RSA_get_ex_new_index(0, NULL, NULL, NULL, rk_free);
    g_ec_meth = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    if (g_ec_meth != NULL) {
        EC_KEY_METHOD_set_sign(g_ec_meth, rk_ec_sign, NULL, rk_ec_sign_sig);
    }
    g_rsa_meth = RSA_meth_dup(RSA_PKCS1_OpenSSL());
    if (g_rsa_meth != NULL) {
        RSA_meth_set1_name(g_rsa_meth, "keyline signer process");
        RSA_meth_set_sign(g_rsa_meth, rk_rsa_sign);
        RSA_meth_set_priv_enc(g_rsa_meth, rk_rsa_priv_refuse);
        RSA_meth_set_priv_dec(g_rsa_meth, rk_rsa_priv_refuse);
    }
}

kl_rc hsm_remote_key_load(hsm_remote *r, const char *label, EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL, *pk = NULL;
    EC_KEY *ec = NULL;
    RSA *rsa = NULL;
    remote_key *k = NULL;
    *out = NULL;
    pthread_once(&g_meth_once, meth_init);
    ENSURE(g_ec_meth != NULL && g_rsa_meth != NULL && g_ec_idx >= 0 && g_rsa_idx >= 0, KL_EINTERNAL,
           "cannot set up the signer key methods");
    TRY(hsm_remote_key_public(r, label, &pub));
    k = calloc(1, sizeof *k);
    pk = EVP_PKEY_new();
    ENSURE(k != NULL && pk != NULL, KL_EINTERNAL, "out of memory");
    k->r = r;
    snprintf(k->label, sizeof k->label, "%s", label);
    switch (EVP_PKEY_get_base_id(pub)) {
    case EVP_PKEY_EC:
        ec = EVP_PKEY_get1_EC_KEY(pub);
        ENSURE_SSL(ec != NULL && EC_KEY_set_method(ec, g_ec_meth) == 1 &&
                       EC_KEY_set_ex_data(ec, g_ec_idx, k) == 1,
                   KL_EINTERNAL, "cannot build the EC key for '%s'", label);
        k = NULL; /* owned by ec */
        ENSURE_SSL(EVP_PKEY_assign_EC_KEY(pk, ec) == 1, KL_EINTERNAL, "EVP_PKEY_assign");
        ec = NULL;
        break;
    case EVP_PKEY_RSA:
        rsa = EVP_PKEY_get1_RSA(pub);
        ENSURE_SSL(rsa != NULL && RSA_set_method(rsa, g_rsa_meth) == 1 &&
                       RSA_set_ex_data(rsa, g_rsa_idx, k) == 1,
                   KL_EINTERNAL, "cannot build the RSA key for '%s'", label);
        k = NULL;
        ENSURE_SSL(EVP_PKEY_assign_RSA(pk, rsa) == 1, KL_EINTERNAL, "EVP_PKEY_assign");
        rsa = NULL;
        break;
    default: ENSURE(0, KL_EPOLICY, "key '%s' is neither EC nor RSA", label);
    }
    *out = pk;
    pk = NULL;
out:
    free(k);
    EC_KEY_free(ec);
    RSA_free(rsa);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(pub);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* public calls                                                                             */

kl_rc hsm_key_sign_digest(hsm_ctx *h, const char *label_arg, hsm_sig_alg alg, hsm_md md,
                          const uint8_t *dgst, size_t dgst_len, uint8_t *sig, size_t *sig_len)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    hsm_signer_req rq;
    ENSURE(h != NULL && dgst != NULL && sig != NULL && sig_len != NULL, KL_EUSAGE,
           "hsm_key_sign_digest: missing argument");
    TRY(hsm_label_of(h, label_arg, &label));
    /* The same checks a signer makes, so both modes refuse alike. */
    memset(&rq, 0, sizeof rq);
    rq.op = HSM_REQ_SIGN;
    rq.alg = (uint8_t)alg;
    rq.md = (uint8_t)md;
    rq.dgst_len = dgst_len;
    snprintf(rq.label, sizeof rq.label, "%s", label);
    ENSURE(strlen(label) <= HSM_SIGNER_LABEL_MAX && dgst_len <= sizeof rq.dgst, KL_EINPUT,
           "signature request out of range (label or digest too long)");
    TRY(req_check(&rq));
    if (hsm_ctx_remote(h) != NULL) {
        TRY(remote_sign(hsm_ctx_remote(h), label, alg, md, dgst, dgst_len, sig, sig_len));
    } else {
        TRY(sign_local(h, label, alg, md, dgst, dgst_len, sig, sig_len));
    }
out:
    free(label);
    return rc;
}

int hsm_is_remote(const hsm_ctx *h)
{
    return hsm_ctx_remote(h) != NULL;
}

/* Find idle signers that have exited (EOF waiting on their channel) without a request to
 * find out; drop them from the ring. Called with r->mu held. */
static void chan_probe_idle(hsm_remote *r)
{
    unsigned keep = 0;
    for (unsigned k = 0; k < r->nfree; k++) {
        unsigned id = r->free_ids[(r->free_head + k) % r->n];
        char b;
        ssize_t n = recv(r->ch[id].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            kl_error("signer process %d is gone (it has exited); %u of %u left", (int)r->ch[id].pid,
                     r->nlive - 1, r->n);
            close(r->ch[id].fd);
            r->ch[id].fd = -1;
            r->nlive--;
            continue;
        }
        r->free_ids[(r->free_head + keep++) % r->n] = id;
    }
    r->nfree = keep;
}

unsigned hsm_signer_revive(hsm_ctx *h)
{
    hsm_remote *r = hsm_ctx_remote(h);
    if (r == NULL) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    chan_probe_idle(r);
    int all = r->nlive == r->n;
    pthread_mutex_unlock(&r->mu);
    return all ? 0 : chan_respawn(r);
}

pid_t hsm_signer_keeper_pid(hsm_ctx *h)
{
    hsm_remote *r = hsm_ctx_remote(h);
    return r != NULL && r->keeper_fd >= 0 ? r->keeper_pid : -1;
}

size_t hsm_signer_pids(hsm_ctx *h, pid_t *pids, size_t max)
{
    hsm_remote *r = hsm_ctx_remote(h);
    size_t n = 0;
    if (r == NULL) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    for (unsigned i = 0; i < r->n && n < max; i++) {
        if (r->ch[i].fd >= 0) {
            pids[n++] = r->ch[i].pid;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
