/* keyline: MCUboot image writer (layout in image_mcuboot.h, docs/firmware.md). */
#include "image_mcuboot.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm.h"

/* One decimal field of a version: no sign, no leading zero (imgtool: ([1-9]\d*|0)). */
static int img_num(const char **p, unsigned long long max, unsigned long long *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && isdigit((unsigned char)s[1]))) {
        return 0;
    }
    unsigned long long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (unsigned long long)(*s++ - '0');
        if (v > max) {
            return 0;
        }
    }
    *p = s;
    *out = v;
    return 1;
}

kl_rc img_version_parse(const char *s, img_version *out)
{
    unsigned long long a = 0, b = 0, c = 0, d = 0;
    const char *p = s ? s : "";
    int ok = img_num(&p, 255, &a) && *p++ == '.' && img_num(&p, 255, &b) && *p++ == '.' &&
             img_num(&p, 65535, &c);
    if (ok && *p == '+') {
        p++;
        ok = img_num(&p, 0xffffffffull, &d);
    }
    if (!ok || *p) {
        return kl_fail(KL_EUSAGE,
                       "--version '%s' is not X.Y.Z[+B] (X, Y 0-255, Z 0-65535, B 0-4294967295, "
                       "decimal without leading zeros)",
                       s ? s : "");
    }
    *out = (img_version){(uint8_t)a, (uint8_t)b, (uint16_t)c, (uint32_t)d};
    return KL_OK;
}

void img_version_format(const img_version *v, char *buf, size_t n)
{
    snprintf(buf, n, "%u.%u.%u+%lu", v->major, v->minor, v->revision, (unsigned long)v->build);
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xffffu);
    put16(p + 2, v >> 16);
}

/* A TLV as imgtool writes it: u8 type, u8 0, u16 length, value. */
static size_t put_tlv(uint8_t *p, uint8_t type, const uint8_t *val, uint16_t len)
{
    p[0] = type;
    p[1] = 0;
    put16(p + 2, len);
    memcpy(p + 4, val, len);
    return 4u + len;
}

kl_rc img_key_hash(EVP_PKEY *pub, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pub, &der);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot encode the signing key's public key");
    }
    SHA256(der, (size_t)n, out);
    OPENSSL_free(der);
    return KL_OK;
}

kl_rc img_params_check(const img_params *p)
{
    kl_rc rc = KL_OK;
    ENSURE(p->header_size >= IMG_HEADER_SIZE && p->header_size <= 0xffffu, KL_EUSAGE,
           "--header-size must be %u..65535 bytes", IMG_HEADER_SIZE);
    /* imgtool: --align is one of 1 2 4 8 16 32, the flash write size. It places the swap
     * trailer when imgtool pads to a slot (--pad); an image without that trailer, like ours,
     * is the same bytes whatever the alignment. */
    ENSURE(p->align && p->align <= 32 && (p->align & (p->align - 1)) == 0, KL_EUSAGE,
           "--align must be 1, 2, 4, 8, 16 or 32");
out:
    return rc;
}

kl_rc img_input_check(const img_params *p, const uint8_t *in, size_t in_len)
{
    kl_rc rc = KL_OK;
    ENSURE(in_len <= IMG_PAYLOAD_MAX, KL_EINPUT, "input of %zu bytes is larger than %u", in_len,
           IMG_PAYLOAD_MAX);
    ENSURE(p->pad_header || in_len >= p->header_size, KL_EINPUT,
           "input of %zu bytes is shorter than the %u-byte header it should start with "
           "(--pad-header adds one)",
           in_len, (unsigned)p->header_size);
    for (size_t i = 0; !p->pad_header && i < p->header_size; i++) {
        ENSURE(in[i] == 0, KL_EINPUT,
               "header padding was not requested (--pad-header) and the input does not "
               "start with %u zero bytes",
               (unsigned)p->header_size);
    }
out:
    return rc;
}

/* Sign SHA-256 of msg with key, DER ECDSA-Sig-Value into sig (cap 72), then check it with pub. */
static kl_rc img_sign_verify(EVP_PKEY *key, EVP_PKEY *pub, const uint8_t digest[32], uint8_t *sig,
                             size_t *sig_len)
{
    kl_rc rc = KL_OK;
    EVP_PKEY_CTX *sc = EVP_PKEY_CTX_new(key, NULL);
    EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new(pub, NULL);
    size_t n = 0;
    ENSURE_SSL(sc && vc && EVP_PKEY_sign_init(sc) == 1 &&
                   EVP_PKEY_CTX_set_signature_md(sc, EVP_sha256()) == 1 &&
                   EVP_PKEY_sign(sc, NULL, &n, digest, 32) == 1,
               KL_EHSM, "cannot start signing the image with the key");
    ENSURE(n <= 72 + 16, KL_EINTERNAL, "unexpected signature size %zu", n);
    uint8_t buf[72 + 16];
    ENSURE_SSL(EVP_PKEY_sign(sc, buf, &n, digest, 32) == 1 && n <= 72, KL_EHSM,
               "signing the image in the HSM failed");
    ENSURE_SSL(EVP_PKEY_verify_init(vc) == 1 &&
                   EVP_PKEY_CTX_set_signature_md(vc, EVP_sha256()) == 1 &&
                   EVP_PKEY_verify(vc, buf, n, digest, 32) == 1,
               KL_EHSM, "the HSM's image signature does not verify with the key's certificate");
    memcpy(sig, buf, n);
    *sig_len = n;
out:
    EVP_PKEY_CTX_free(sc);
    EVP_PKEY_CTX_free(vc);
    return rc;
}

static int img_key_is_p256(EVP_PKEY *k)
{
    return k && hsm_key_type_of(k) == HSM_KEY_EC_P256;
}

/* Header at img[0..32). */
static void img_header_put(uint8_t *img, const img_params *p, uint16_t prot_size, uint32_t img_size)
{
    put32(img, IMG_MAGIC);
    put32(img + 4, 0); /* ih_load_addr: 0, no RAM load (imgtool's default) */
    put16(img + 8, p->header_size);
    put16(img + 10, prot_size);
    put32(img + 12, img_size);
    put32(img + 16, 0); /* ih_flags */
    img[20] = p->version.major;
    img[21] = p->version.minor;
    put16(img + 22, p->version.revision);
    put32(img + 24, p->version.build);
    put32(img + 28, 0);
}

kl_rc img_mcuboot_sign(const img_params *p, const uint8_t *in, size_t in_len, EVP_PKEY *key,
                       EVP_PKEY *pub, uint8_t **out, size_t *out_len, img_result *res)
{
    kl_rc rc = KL_OK;
    uint8_t *img = NULL;
    *out = NULL;
    *out_len = 0;
    TRY(img_params_check(p));
    TRY(img_input_check(p, in, in_len));
    ENSURE(img_key_is_p256(key) && img_key_is_p256(pub), KL_EPOLICY,
           "sign-image signs with EC P-256 keys only (MCUboot ECDSA_SIG with SHA-256)");
    size_t body = p->pad_header ? (size_t)p->header_size + in_len : in_len; /* header + payload */
    uint32_t img_size = (uint32_t)(body - p->header_size);
    uint16_t prot = p->has_counter ? 4 + 4 + 4 : 0; /* info + SEC_CNT TLV */
    size_t tlv_tot = 4 + (4 + 32) + (4 + 32) + (4 + 72);
    img = OPENSSL_zalloc(body + prot + tlv_tot);
    ENSURE(img, KL_EINTERNAL, "out of memory");
    if (p->pad_header) {
        /* imgtool fills the added header with the flash's erased value, 0xff by default
         * (--erased-val); the first 32 bytes are the header itself */
        memset(img, 0xff, p->header_size);
    }
    memcpy(img + (p->pad_header ? p->header_size : 0), in, in_len);
    img_header_put(img, p, prot, img_size);
    size_t off = body;
    if (p->has_counter) {
        uint8_t cnt[4];
        put32(cnt, p->counter);
        put16(img + off, IMG_TLV_PROT_INFO_MAGIC);
        put16(img + off + 2, prot);
        off += 4;
        off += put_tlv(img + off, IMG_TLV_SEC_CNT, cnt, 4);
    }
    res->hashed_len = off;
    res->img_size = img_size;
    SHA256(img, off, res->hash);
    TRY(img_key_hash(pub, res->key_hash));
    uint8_t sig[72];
    size_t sig_len = 0;
    TRY(img_sign_verify(key, pub, res->hash, sig, &sig_len));
    size_t info = off;
    off += 4;
    off += put_tlv(img + off, IMG_TLV_SHA256, res->hash, 32);
    off += put_tlv(img + off, IMG_TLV_KEYHASH, res->key_hash, 32);
    off += put_tlv(img + off, IMG_TLV_ECDSA_SIG, sig, (uint16_t)sig_len);
    put16(img + info, IMG_TLV_INFO_MAGIC);
    put16(img + info + 2, (uint32_t)(off - info));
    *out = img;
    *out_len = off;
    img = NULL;
out:
    OPENSSL_free(img);
    return rc;
}
