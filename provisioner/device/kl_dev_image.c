/* keyline device library: MCUboot image verification (kl_dev_image.h, docs/firmware.md).
 *
 * Layout (mcu-tools/mcuboot boot/bootutil/include/bootutil/image.h), little endian:
 *   header: u32 magic 0x96f3b83d, u32 load_addr, u16 hdr_size, u16 protect_tlv_size,
 *           u32 img_size, u32 flags, u8 major, u8 minor, u16 revision, u32 build, u32 pad
 *   payload at hdr_size, img_size bytes
 *   protected TLV area (protect_tlv_size bytes, 0 when none): u16 0x6908, u16 total, TLVs
 *   TLV area: u16 0x6907, u16 total, TLVs; a TLV is u16 type, u16 len, value
 * Every offset is checked against len before it is read; sizes are added in size_t after
 * each is bounded by the 16- or 32-bit field it came from and by len, so nothing overflows. */
#include "kl_dev_image.h"

#include <string.h>

#define IMG_MAGIC 0x96f3b83dul
#define IMG_HDR 32u
#define TLV_INFO_MAGIC 0x6907u
#define TLV_PROT_INFO_MAGIC 0x6908u
#define TLV_KEYHASH 0x01u
#define TLV_SHA256 0x10u
#define TLV_ECDSA_SIG 0x22u
#define TLV_SEC_CNT 0x50u
/* MCUboot flags this library cannot honour: encrypted (AES128/256), non-bootable, compressed. */
#define IMG_F_REFUSED (0x4ul | 0x8ul | 0x10ul | 0x200ul | 0x400ul | 0x800ul)

/* DER SubjectPublicKeyInfo of a P-256 key minus the point: SEQUENCE { SEQUENCE { id-ecPublicKey,
 * prime256v1 }, BIT STRING { 0x00, point } } (RFC 5480), what imgtool hashes. */
static const uint8_t spki_p256_prefix[26] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                             0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                             0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return rd16(p) | (rd16(p + 2) << 16);
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

const char *kl_img_strerror(int rc)
{
    switch (rc) {
    case KL_IMG_OK: return "ok";
    case KL_IMG_EARG: return "bad argument";
    case KL_IMG_ETRUNCATED: return "truncated image";
    case KL_IMG_EMAGIC: return "not an MCUboot image (bad magic)";
    case KL_IMG_EFORMAT: return "malformed image";
    case KL_IMG_ETLVSIZE: return "oversized TLV area";
    case KL_IMG_EHASH: return "image hash mismatch";
    case KL_IMG_EKEY: return "signed by an unprovisioned key";
    case KL_IMG_ESIG: return "bad signature";
    case KL_IMG_ECOUNTER: return "security counter lower than the device's (rollback)";
    case KL_IMG_ENOKEYS: return "no firmware key provisioned";
    case KL_IMG_EFLAGS: return "unsupported image flags (encrypted or compressed)";
    case KL_IMG_EPORT: return "port failure";
    case KL_IMG_ESTORAGE: return "stored firmware record corrupt";
    default: return "unknown";
    }
}

int kl_img_key_hash(const kl_port *port, void *port_ctx, const uint8_t pub[65], uint8_t out[32])
{
    uint8_t spki[sizeof spki_p256_prefix + 65];
    if (!port || !port->sha256 || !pub || !out) {
        return KL_IMG_EARG;
    }
    memcpy(spki, spki_p256_prefix, sizeof spki_p256_prefix);
    memcpy(spki + sizeof spki_p256_prefix, pub, 65);
    return port->sha256(port_ctx, spki, sizeof spki, out) == KL_PORT_OK ? KL_IMG_OK : KL_IMG_EPORT;
}

/* One DER INTEGER of an ECDSA-Sig-Value into out[32] (big-endian, zero-padded): positive, at
 * most 32 value bytes after one optional leading zero, minimal. *p advances. */
static int der_int(const uint8_t **p, const uint8_t *end, uint8_t out[32])
{
    const uint8_t *q = *p;
    if (end - q < 2 || q[0] != 0x02 || q[1] == 0 || q[1] > 33 || end - q - 2 < q[1]) {
        return 0;
    }
    size_t n = q[1];
    q += 2;
    if (q[0] & 0x80) {
        return 0; /* negative */
    }
    if (n > 1 && q[0] == 0 && !(q[1] & 0x80)) {
        return 0; /* not minimal */
    }
    if (q[0] == 0 && n > 1) {
        q++;
        n--;
    }
    if (n > 32) {
        return 0;
    }
    memset(out, 0, 32);
    memcpy(out + 32 - n, q, n);
    *p = q + n;
    return 1;
}

/* The order n of P-256 (SEC 2, 2.4.2), big-endian. */
static const uint8_t p256_n[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17,
                                   0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

/* 1 when the big-endian v[32] is in [1, n-1]. SEC 1 4.1.4 step 1: a verifier rejects r or s
 * outside it; a port's verifier (a bare PKA peripheral, a hand-written one) that does not
 * would take r = s = 0 for any digest (CVE-2022-21449), so it is checked here for every port.
 * The signature is public: no need for constant time. */
static int scalar_ok(const uint8_t v[32])
{
    uint8_t any = 0;
    for (size_t i = 0; i < 32; i++) {
        any |= v[i];
    }
    for (size_t i = 0; any && i < 32; i++) {
        if (v[i] != p256_n[i]) {
            return v[i] < p256_n[i];
        }
    }
    return 0; /* zero, or n itself */
}

/* DER ECDSA-Sig-Value -> r | s. imgtool may pad the DER with zeros to 72 bytes (--pad-sig):
 * allowed, as MCUboot allows it. */
static int sig_from_der(const uint8_t *d, size_t len, uint8_t rs[64])
{
    if (len < 8 || len > 72 || d[0] != 0x30 || d[1] & 0x80 || (size_t)d[1] + 2 > len) {
        return 0;
    }
    const uint8_t *p = d + 2, *end = d + 2 + d[1];
    if (!der_int(&p, end, rs) || !der_int(&p, end, rs + 32) || p != end || !scalar_ok(rs) ||
        !scalar_ok(rs + 32)) {
        return 0;
    }
    for (const uint8_t *z = end; z < d + len; z++) {
        if (*z) {
            return 0;
        }
    }
    return 1;
}

typedef struct {
    const uint8_t *hash, *key_hash, *sig;
    size_t sig_len;
    int has_cnt;
    uint32_t cnt;
} img_tlvs;

/* Walk the TLVs of area a[0..tot) (after its 4-byte info): protected or not. */
static int tlv_walk(const uint8_t *a, size_t tot, int prot, img_tlvs *t)
{
    size_t off = 4;
    while (off < tot) {
        if (tot - off < 4) {
            return KL_IMG_EFORMAT;
        }
        uint32_t type = rd16(a + off), vlen = rd16(a + off + 2);
        const uint8_t *v = a + off + 4;
        if (tot - off - 4 < vlen) {
            return KL_IMG_EFORMAT;
        }
        off += 4u + vlen;
        if (prot) {
            if (type == TLV_SEC_CNT) {
                if (vlen != 4 || t->has_cnt) {
                    return KL_IMG_EFORMAT;
                }
                t->has_cnt = 1;
                t->cnt = rd32(v);
            } else if (type == TLV_SHA256 || type == TLV_KEYHASH || type == TLV_ECDSA_SIG) {
                return KL_IMG_EFORMAT; /* belongs to the unprotected area */
            }
            continue; /* other protected TLVs (dependencies, boot record) are signed; unused */
        }
        if (type == TLV_SHA256 && vlen == 32 && !t->hash) {
            t->hash = v;
        } else if (type == TLV_KEYHASH && vlen == 32 && !t->key_hash) {
            t->key_hash = v;
        } else if (type == TLV_ECDSA_SIG && !t->sig) {
            t->sig = v;
            t->sig_len = vlen;
        } else {
            /* unprotected TLVs are not signed: only these three, once each (MCUboot keeps a
             * list of allowed unprotected TLVs for the same reason) */
            return KL_IMG_EFORMAT;
        }
    }
    return KL_IMG_OK;
}

/* Header and TLV areas of img[0..len): everything but the crypto. *hashed = header + payload +
 * protected area. */
static int img_parse(const uint8_t *img, size_t len, kl_img_info *out, img_tlvs *t, size_t *hashed)
{
    if (len < IMG_HDR) {
        return KL_IMG_ETRUNCATED;
    }
    if (rd32(img) != IMG_MAGIC) {
        return KL_IMG_EMAGIC;
    }
    size_t hdr = rd16(img + 8), prot = rd16(img + 10), isz = rd32(img + 12);
    if (hdr < IMG_HDR) {
        return KL_IMG_EFORMAT;
    }
    if (rd32(img + 16) & IMG_F_REFUSED) {
        return KL_IMG_EFLAGS;
    }
    if (prot > KL_IMG_TLV_MAX) {
        return KL_IMG_ETLVSIZE;
    }
    if (hdr > len || isz > len - hdr || prot > len - hdr - isz) {
        return KL_IMG_ETRUNCATED;
    }
    size_t poff = hdr + isz, uoff = poff + prot;
    memset(t, 0, sizeof *t);
    if (prot) {
        if (prot < 4 || rd16(img + poff) != TLV_PROT_INFO_MAGIC) {
            return prot < 4 ? KL_IMG_EFORMAT : KL_IMG_EMAGIC;
        }
        if (rd16(img + poff + 2) != prot) {
            return KL_IMG_EFORMAT;
        }
        int rc = tlv_walk(img + poff, prot, 1, t);
        if (rc != KL_IMG_OK) {
            return rc;
        }
    }
    if (len - uoff < 4) {
        return KL_IMG_ETRUNCATED;
    }
    size_t utot = rd16(img + uoff + 2);
    if (rd16(img + uoff) != TLV_INFO_MAGIC) {
        return KL_IMG_EMAGIC;
    }
    if (utot > KL_IMG_TLV_MAX) {
        return KL_IMG_ETLVSIZE;
    }
    if (utot < 4) {
        return KL_IMG_EFORMAT;
    }
    if (utot > len - uoff) {
        return KL_IMG_ETRUNCATED;
    }
    int rc = tlv_walk(img + uoff, utot, 0, t);
    if (rc != KL_IMG_OK) {
        return rc;
    }
    if (!t->hash || !t->key_hash || !t->sig) {
        return KL_IMG_EFORMAT;
    }
    out->major = img[20];
    out->minor = img[21];
    out->revision = (uint16_t)rd16(img + 22);
    out->build = rd32(img + 24);
    out->security_counter = t->has_cnt ? t->cnt : 0;
    out->hdr_size = (uint32_t)hdr;
    out->img_size = (uint32_t)isz;
    *hashed = uoff;
    return KL_IMG_OK;
}

/* Constant-time compare: the hash is public, but a habit is cheaper than a review. */
static int eq32(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0;
    for (size_t i = 0; i < 32; i++) {
        d |= (uint8_t)(a[i] ^ b[i]);
    }
    return d == 0;
}

int kl_img_verify(const kl_port *port, void *port_ctx, const uint8_t *img, size_t len,
                  const uint8_t keys[][65], size_t nkeys, uint32_t min_counter, kl_img_info *out)
{
    img_tlvs t;
    size_t hashed = 0;
    uint8_t digest[32], kh[32], rs[64];
    if (!port || !port->sha256 || !port->ecdsa_verify || !img || !out || (nkeys && !keys)) {
        return KL_IMG_EARG;
    }
    int rc = img_parse(img, len, out, &t, &hashed);
    if (rc != KL_IMG_OK) {
        return rc;
    }
    if (port->sha256(port_ctx, img, hashed, digest) != KL_PORT_OK) {
        return KL_IMG_EPORT;
    }
    if (!eq32(digest, t.hash)) {
        return KL_IMG_EHASH;
    }
    size_t k = nkeys;
    for (size_t i = 0; i < nkeys && k == nkeys; i++) {
        if (kl_img_key_hash(port, port_ctx, keys[i], kh) != KL_IMG_OK) {
            return KL_IMG_EPORT;
        }
        k = eq32(kh, t.key_hash) ? i : nkeys;
    }
    if (k == nkeys) {
        return nkeys ? KL_IMG_EKEY : KL_IMG_ENOKEYS;
    }
    if (!sig_from_der(t.sig, t.sig_len, rs)) {
        return KL_IMG_ESIG;
    }
    rc = port->ecdsa_verify(port_ctx, keys[k], digest, rs);
    if (rc == KL_PORT_EAUTH) {
        return KL_IMG_ESIG;
    }
    if (rc != KL_PORT_OK) {
        return KL_IMG_EPORT;
    }
    if (out->security_counter < min_counter) {
        return KL_IMG_ECOUNTER;
    }
    memcpy(out->hash, digest, 32);
    memcpy(out->key_hash, t.key_hash, 32);
    return KL_IMG_OK;
}

int kl_dev_fw_keys(const kl_port *port, void *port_ctx, uint8_t keys[][65], size_t *n)
{
    uint8_t buf[KL_DEV_MAX_FW_KEYS * 65u];
    size_t len = 0;
    if (!port || !port->store_read || !keys || !n) {
        return KL_IMG_EARG;
    }
    *n = 0;
    int rc = port->store_read(port_ctx, KL_OBJ_FWKEYS, buf, sizeof buf, &len);
    if (rc == KL_PORT_ENOENT) {
        return KL_IMG_OK;
    }
    if (rc == KL_PORT_ESPACE || (rc == KL_PORT_OK && (len == 0 || len % 65 != 0))) {
        return KL_IMG_ESTORAGE;
    }
    if (rc != KL_PORT_OK) {
        return KL_IMG_EPORT;
    }
    for (size_t i = 0; i < len / 65; i++) {
        if (buf[i * 65] != 0x04) {
            return KL_IMG_ESTORAGE;
        }
        memcpy(keys[i], buf + i * 65, 65);
    }
    *n = len / 65;
    return KL_IMG_OK;
}

int kl_dev_image_state(const kl_port *port, void *port_ctx, kl_img_info *out)
{
    uint8_t rec[KL_DEV_FW_STATE_LEN];
    size_t len = 0;
    if (!port || !port->store_read || !out) {
        return KL_IMG_EARG;
    }
    memset(out, 0, sizeof *out);
    int rc = port->store_read(port_ctx, KL_OBJ_FWSTATE, rec, sizeof rec, &len);
    if (rc == KL_PORT_ENOENT) {
        return KL_IMG_OK;
    }
    if (rc == KL_PORT_ESPACE || (rc == KL_PORT_OK && len != sizeof rec)) {
        return KL_IMG_ESTORAGE; /* fail closed: a lost counter would reopen rollback */
    }
    if (rc != KL_PORT_OK) {
        return KL_IMG_EPORT;
    }
    out->security_counter = rd32(rec);
    out->major = rec[4];
    out->minor = rec[5];
    out->revision = (uint16_t)rd16(rec + 6);
    out->build = rd32(rec + 8);
    return KL_IMG_OK;
}

int kl_dev_verify_image(const kl_port *port, void *port_ctx, const uint8_t *img, size_t len,
                        kl_img_info *out)
{
    uint8_t keys[KL_DEV_MAX_FW_KEYS][65];
    size_t n = 0;
    kl_img_info cur;
    int rc = kl_dev_fw_keys(port, port_ctx, keys, &n);
    if (rc == KL_IMG_OK) {
        rc = kl_dev_image_state(port, port_ctx, &cur);
    }
    if (rc == KL_IMG_OK) {
        rc = n ? kl_img_verify(port, port_ctx, img, len, (const uint8_t(*)[65])keys, n,
                               cur.security_counter, out)
               : KL_IMG_ENOKEYS;
    }
    return rc;
}

int kl_dev_image_installed(const kl_port *port, void *port_ctx, const kl_img_info *info)
{
    kl_img_info cur;
    uint8_t rec[KL_DEV_FW_STATE_LEN];
    if (!port || !port->store_write || !info) {
        return KL_IMG_EARG;
    }
    int rc = kl_dev_image_state(port, port_ctx, &cur);
    if (rc != KL_IMG_OK) {
        return rc;
    }
    wr32(rec, info->security_counter > cur.security_counter ? info->security_counter
                                                            : cur.security_counter);
    rec[4] = info->major;
    rec[5] = info->minor;
    rec[6] = (uint8_t)info->revision;
    rec[7] = (uint8_t)(info->revision >> 8);
    wr32(rec + 8, info->build);
    return port->store_write(port_ctx, KL_OBJ_FWSTATE, rec, sizeof rec) == KL_PORT_OK
               ? KL_IMG_OK
               : KL_IMG_EPORT;
}
