/* keyline-provision: Matter onboarding data (see st_matter.h). */
#include "st_matter.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <qrencode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "kl_buf.h"
#include "kl_file.h"
#include "kl_proto.h"

/* the MATTER request carries it whole (line-protocol.md 4.10) */
_Static_assert(ST_MATTER_CD_MAX <= KL_PROTO_MATTER_CD_MAX, "a CD the station takes fits MATTER");

/* ---- configuration ---------------------------------------------------------------------- */

static kl_rc st_matter_id_key(const kl_conf *conf, const char *key, uint16_t *out)
{
    const char *v = kl_conf_get(conf, "station", key);
    if (!v) {
        return kl_fail(KL_EUSAGE, "[station] matter = yes needs %s", key);
    }
    const char *h = (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) ? v + 2 : v;
    size_t n = strlen(h);
    if (n < 1 || n > 4 || strspn(h, "0123456789abcdefABCDEF") != n) {
        return kl_fail(KL_EUSAGE, "[station] %s = '%s' is not a 16-bit hex number like 0xFFF1", key,
                       v);
    }
    *out = (uint16_t)strtoul(h, NULL, 16);
    return KL_OK;
}

static kl_rc st_matter_bool(const kl_conf *conf, const char *key, int *out)
{
    const char *v = kl_conf_get_default(conf, "station", key, "no");
    if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = 1;
    } else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = 0;
    } else {
        return kl_fail(KL_EUSAGE, "[station] %s must be yes or no, got '%s'", key, v);
    }
    return KL_OK;
}

/* The Certification Declaration, refused past ST_MATTER_CD_MAX (st_matter.h: what fits an
 * AttestationResponse), naming the limit and the file's size. */
static kl_rc st_matter_cd_read(st_matter_cfg *cfg)
{
    kl_rc rc = KL_OK;
    struct stat sb;
    size_t size = 0;
    rc = kl_file_read(cfg->cd_path, ST_MATTER_CD_MAX, &cfg->cd, &cfg->cd_len);
    if (rc == KL_EINPUT && stat(cfg->cd_path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        size = (size_t)sb.st_size;
    }
    ENSURE(size <= ST_MATTER_CD_MAX, KL_EUSAGE,
           "[station] matter-cd %s is %zu bytes: a Certification Declaration has at most %u (what "
           "a device built on the Matter SDK holds; with the nonce and timestamp it must fit an "
           "AttestationResponse, RESP_MAX %u bytes; docs/matter.md)",
           cfg->cd_path, size, (unsigned)ST_MATTER_CD_MAX, ST_MATTER_RESP_MAX);
    if (rc != KL_OK) {
        kl_wrap(rc, "[station] matter-cd");
        goto out;
    }
    ENSURE(cfg->cd_len > 0, KL_EUSAGE, "[station] matter-cd %s is empty", cfg->cd_path);
out:
    return rc;
}

kl_rc st_matter_cfg_load(st_matter_cfg *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    memset(cfg, 0, sizeof *cfg);
    TRY(st_matter_bool(conf, "matter", &cfg->enabled));
    TRY(st_matter_bool(conf, "matter-keep-passcode", &cfg->keep_passcode));
    if (kl_conf_get(conf, "station", "labels")) {
        cfg->labels = kl_conf_path(conf, "station", "labels");
        ENSURE(cfg->labels, KL_EINTERNAL, "out of memory");
    }
    if (cfg->labels) {
        struct stat sb;
        ENSURE(stat(cfg->labels, &sb) == 0 && S_ISDIR(sb.st_mode), KL_EUSAGE,
               "[station] labels = %s is not a folder", cfg->labels);
    }
    if (!cfg->enabled) {
        goto out;
    }
    /* the device makes its DAC key: the station never holds a Matter device's key */
    ENSURE(strcmp(kl_conf_get_default(conf, "station", "mode", "csr"), "csr") == 0, KL_EUSAGE,
           "[station] matter = yes needs mode = csr (the device makes its DAC key)");
    TRY(st_matter_id_key(conf, "matter-vid", &cfg->vid));
    TRY(st_matter_id_key(conf, "matter-pid", &cfg->pid));
    /* Matter 2.5.2: VID 0 is the Matter standard's and 0xFFF5..0xFFFF are reserved; PID 0 is
     * reserved (2.5.3). A commissioner refuses an onboarding payload that carries them. */
    ENSURE(kl_matter_vid_ok(cfg->vid) && cfg->pid != 0, KL_EUSAGE,
           "[station] matter-vid must be 0x0001..0x%04X and matter-pid not 0", KL_MATTER_VID_MAX);
    TRY(kl_conf_get_long(conf, "station", "matter-iterations", 10000, KL_MATTER_ITER_MIN,
                         KL_MATTER_ITER_MAX, &cfg->iterations));
    ENSURE(kl_conf_get(conf, "station", "matter-cd"), KL_EUSAGE,
           "[station] matter = yes needs matter-cd (the Certification Declaration file)");
    cfg->cd_path = kl_conf_path(conf, "station", "matter-cd");
    ENSURE(cfg->cd_path, KL_EINTERNAL, "out of memory");
    TRY(st_matter_cd_read(cfg));
out:
    if (rc != KL_OK) {
        st_matter_cfg_free(cfg);
    }
    return rc;
}

void st_matter_cfg_free(st_matter_cfg *cfg)
{
    free(cfg->cd_path);
    free(cfg->cd);
    free(cfg->labels);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- passcode, verifier -------------------------------------------------------------------- */

kl_rc st_matter_verifier(uint32_t passcode, const uint8_t *salt, size_t salt_len,
                         uint32_t iterations, uint8_t out[ST_MATTER_VERIFIER_LEN])
{
    return kl_matter_verifier(passcode, salt, salt_len, iterations, out);
}

/* ---- QR code payload ----------------------------------------------------------------------- */

static void st_bits_put(uint8_t *buf, unsigned *off, uint32_t v, unsigned nbits)
{
    /* Matter 5.1.3.1: fields are packed least significant bit first, in order */
    for (unsigned i = 0; i < nbits; i++, (*off)++) {
        if (v & (1u << i)) {
            buf[*off / 8] |= (uint8_t)(1u << (*off % 8));
        }
    }
}

static const char st_b38[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-.";

kl_rc st_matter_qr(uint16_t vid, uint16_t pid, unsigned flow, unsigned discovery,
                   uint16_t discriminator, uint32_t passcode, char out[ST_MATTER_QR_MAX])
{
    uint8_t b[11] = {0};
    unsigned off = 0;
    if (flow > 3 || discovery > 0xff || discriminator > 0xfff || passcode > 0x7ffffff) {
        return kl_fail(KL_EUSAGE, "onboarding payload field out of range");
    }
    st_bits_put(b, &off, 0, 3); /* version */
    st_bits_put(b, &off, vid, 16);
    st_bits_put(b, &off, pid, 16);
    st_bits_put(b, &off, flow, 2);
    st_bits_put(b, &off, discovery, 8);
    st_bits_put(b, &off, discriminator, 12);
    st_bits_put(b, &off, passcode, 27);
    st_bits_put(b, &off, 0, 4); /* padding */
    /* Matter 5.1.3.2 base-38: 3 bytes (little-endian) -> 5 characters, a trailing 2 -> 4,
     * least significant digit first */
    char *w = out;
    memcpy(w, "MT:", 3);
    w += 3;
    for (size_t i = 0; i < sizeof b; i += 3) {
        size_t n = sizeof b - i < 3 ? sizeof b - i : 3;
        uint32_t v = 0;
        for (size_t k = 0; k < n; k++) {
            v |= (uint32_t)b[i + k] << (8 * k);
        }
        unsigned chars = n == 3 ? 5 : n == 2 ? 4 : 2;
        for (unsigned c = 0; c < chars; c++) {
            *w++ = st_b38[v % 38];
            v /= 38;
        }
    }
    *w = 0;
    return KL_OK;
}

/* ---- manual pairing code --------------------------------------------------------------------- */

/* Verhoeff: the dihedral group D5 multiplication table, the permutation and the inverses */
static const uint8_t vh_d[10][10] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5}, {2, 3, 4, 0, 1, 7, 8, 9, 5, 6},
    {3, 4, 0, 1, 2, 8, 9, 5, 6, 7}, {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
    {6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3}, {8, 7, 6, 5, 9, 3, 2, 1, 0, 4},
    {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}};
static const uint8_t vh_p[8][10] = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
                                    {5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
                                    {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
                                    {2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8}};
static const uint8_t vh_inv[10] = {0, 4, 3, 2, 1, 5, 6, 7, 8, 9};

char st_matter_verhoeff(const char *digits)
{
    size_t n = strlen(digits);
    unsigned c = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = digits[n - 1 - i];
        if (ch < '0' || ch > '9') {
            return '?';
        }
        /* position i + 1: the check digit will take position 0 */
        c = vh_d[c][vh_p[(i + 1) % 8][ch - '0']];
    }
    return (char)('0' + vh_inv[c]);
}

kl_rc st_matter_manual(uint16_t discriminator, uint32_t passcode,
                       char out[ST_MATTER_MANUAL_LEN + 1])
{
    if (discriminator > 0xfff || passcode > 0x7ffffff) {
        return kl_fail(KL_EUSAGE, "onboarding payload field out of range");
    }
    /* Matter 5.1.4.1: the short discriminator is the upper 4 bits of the 12-bit one;
     * digit 1: VID/PID-present flag (0) << 2 | its upper 2 bits; digits 2-6: its lower 2 bits
     * << 14 | the lower 14 bits of the passcode; digits 7-10: the upper 13 bits of the passcode;
     * digit 11: Verhoeff check */
    unsigned sd = discriminator >> 8;
    unsigned c1 = sd >> 2;
    unsigned c2 = ((sd & 3u) << 14) | (passcode & 0x3fffu);
    unsigned c3 = passcode >> 14;
    snprintf(out, ST_MATTER_MANUAL_LEN + 1, "%01u%05u%04u", c1, c2, c3);
    out[10] = st_matter_verhoeff(out);
    out[11] = 0;
    return KL_OK;
}

/* ---- one device's data ------------------------------------------------------------------- */

kl_rc st_matter_onboard_new(st_matter_onboard *o, uint16_t vid, uint16_t pid, uint32_t iterations)
{
    kl_rc rc = KL_OK;
    uint8_t r[4];
    memset(o, 0, sizeof *o);
    o->vid = vid;
    o->pid = pid;
    o->iterations = iterations;
    /* a uniform passcode: 27 random bits, drawn again when out of range or invalid */
    do {
        ENSURE_SSL(RAND_bytes(r, sizeof r) == 1, KL_EINTERNAL, "no random bytes");
        o->passcode =
            (((uint32_t)r[0] << 24) | ((uint32_t)r[1] << 16) | ((uint32_t)r[2] << 8) | r[3]) &
            0x7ffffffu;
    } while (!kl_matter_passcode_valid(o->passcode));
    ENSURE_SSL(RAND_bytes(r, 2) == 1 && RAND_bytes(o->salt, sizeof o->salt) == 1 &&
                   RAND_bytes(o->unique_id, sizeof o->unique_id) == 1,
               KL_EINTERNAL, "no random bytes");
    o->discriminator = (uint16_t)(((unsigned)r[0] << 8 | r[1]) & 0xfffu);
    TRY(st_matter_verifier(o->passcode, o->salt, sizeof o->salt, iterations, o->verifier));
    TRY(st_matter_qr(vid, pid, 0, ST_MATTER_DISCOVERY_BLE, o->discriminator, o->passcode, o->qr));
    TRY(st_matter_manual(o->discriminator, o->passcode, o->manual));
out:
    OPENSSL_cleanse(r, sizeof r);
    if (rc != KL_OK) {
        st_matter_onboard_wipe(o);
    }
    return rc;
}

void st_matter_onboard_wipe(st_matter_onboard *o)
{
    OPENSSL_cleanse(o, sizeof *o);
}

/* ---- files that carry passcodes ---------------------------------------------------------- */

kl_rc st_matter_file_private(int fd, const char *path, unsigned *fixed)
{
    struct stat sb;
    if (fixed) {
        *fixed = 0;
    }
    if ((fd >= 0 ? fstat(fd, &sb) : stat(path, &sb)) != 0) {
        return kl_fail(KL_EIO, "%s: %s", path, strerror(errno));
    }
    const unsigned mode = (unsigned)sb.st_mode & 07777;
    if (!S_ISREG(sb.st_mode) || (mode & ~0640u) == 0) {
        return KL_OK;
    }
    if ((fd >= 0 ? fchmod(fd, mode & 0640) : chmod(path, mode & 0640)) != 0) {
        return kl_fail(KL_EPOLICY,
                       "%s is mode %04o, readable beyond 0640, and it carries Matter setup "
                       "passcodes: cannot make it %04o (%s); change its mode or owner, or name "
                       "another file",
                       path, mode, mode & 0640, strerror(errno));
    }
    if (fixed) {
        *fixed = mode;
    }
    return KL_OK;
}

/* ---- label ----------------------------------------------------------------------------------- */

static kl_rc st_label_svg(kl_buf *b, const char *hw_serial, const st_matter_onboard *o)
{
    kl_rc rc = KL_OK;
    QRcode *q = QRcode_encodeString(o->qr, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    ENSURE(q, KL_EINTERNAL, "libqrencode cannot encode the QR code: %s", strerror(errno));
    const int px = 4, quiet = 4, side = (q->width + 2 * quiet) * px;
    const int h = side + 72;
    TRY(kl_buf_printf(b,
                      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                      "viewBox=\"0 0 %d %d\">\n<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n"
                      "<path fill=\"#000\" d=\"",
                      side, h, side, h, side, h));
    for (int y = 0; y < q->width; y++) {
        for (int x = 0; x < q->width; x++) {
            if (q->data[y * q->width + x] & 1) {
                TRY(kl_buf_printf(b, "M%d %dh%dv%dh-%dz", (x + quiet) * px, (y + quiet) * px, px,
                                  px, px));
            }
        }
    }
    /* the manual code as the specification prints it: 4-3-4 digits */
    TRY(kl_buf_printf(b,
                      "\"/>\n<text x=\"%d\" y=\"%d\" font-family=\"monospace\" font-size=\"18\" "
                      "text-anchor=\"middle\">%.4s-%.3s-%.4s</text>\n",
                      side / 2, side + 20, o->manual, o->manual + 4, o->manual + 7));
    TRY(kl_buf_printf(b,
                      "<text x=\"%d\" y=\"%d\" font-family=\"monospace\" font-size=\"12\" "
                      "text-anchor=\"middle\">VID %04X PID %04X</text>\n",
                      side / 2, side + 42, o->vid, o->pid));
    TRY(kl_buf_printf(b,
                      "<text x=\"%d\" y=\"%d\" font-family=\"monospace\" font-size=\"12\" "
                      "text-anchor=\"middle\">S/N ",
                      side / 2, side + 62));
    for (const char *c = hw_serial; *c; c++) {
        /* a hardware serial is PrintableString: only the apostrophe needs an entity */
        TRY(*c == '\'' ? kl_buf_printf(b, "&apos;") : kl_buf_printf(b, "%c", *c));
    }
    TRY(kl_buf_printf(b, "</text>\n</svg>\n"));
out:
    QRcode_free(q);
    return rc;
}

kl_rc st_matter_label_write(const char *dir, const char *hw_serial, const st_matter_onboard *o,
                            char *path, size_t path_cap)
{
    kl_rc rc = KL_OK;
    kl_buf b;
    char name[80], file[4096];
    kl_buf_init(&b, 256 * 1024, 1); /* the passcode is in the QR code: wiped */
    size_t i = 0;
    for (; hw_serial[i] && i + 1 < sizeof name - 9; i++) {
        char c = hw_serial[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_';
        name[i] = ok && !(i == 0 && c == '.') ? c : '_';
    }
    name[i] = 0;
    if (strcmp(name, hw_serial) != 0) {
        /* "SN 1" and "SN/1" must not share a label: a changed name gets a hash of the serial */
        uint8_t md[32];
        ENSURE_SSL(EVP_Digest(hw_serial, strlen(hw_serial), md, NULL, EVP_sha256(), NULL) == 1,
                   KL_EINTERNAL, "SHA-256 failed");
        snprintf(name + i, sizeof name - i, "-%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
    }
    int n = snprintf(file, sizeof file, "%s/%s.svg", dir, name);
    ENSURE(n > 0 && (size_t)n < sizeof file, KL_EUSAGE, "labels folder path too long");
    TRY(st_label_svg(&b, hw_serial, o));
    TRY(kl_file_write_atomic(file, b.data, b.len, 0640));
    /* a regular file is replaced by a new one of mode 0640; a link is written through, and
     * its target must not stay readable by everyone */
    TRY(st_matter_file_private(-1, file, NULL));
    if (path) {
        snprintf(path, path_cap, "%s", file);
    }
out:
    kl_buf_free(&b);
    return rc;
}
