/* Unit tests for firmware images: the writer (ca/image_mcuboot.c) and the device's verifier
 * (provisioner/device/kl_dev_image.c, over the OpenSSL devsim port), and both against images
 * MCUboot's imgtool signed (tests/data/firmware/README.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "devsim_port.h"
#include "image_mcuboot.h"
#include "kl_dev_image.h"
#include "kl_hostcrypto.h"

typedef struct {
    char dir[64];
    devsim_port port;
    EVP_PKEY *key;   /* the signing key (software: the writer does not care where it lives) */
    uint8_t pub[65]; /* its point, as the device stores it */
    uint8_t payload[1000];
} fx;

static int no_send(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    (void)data;
    (void)len;
    return 0;
}

static EVP_PKEY *gen_key(const char *curve)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    assert_non_null(k);
    return k;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/kl-image-test.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(devsim_port_open(&f->port, f->dir, no_send, NULL), KL_OK);
    f->key = gen_key("P-256");
    assert_int_equal(kl_p256_pub65(f->key, f->pub), KL_OK);
    for (size_t i = 0; i < sizeof f->payload; i++) {
        f->payload[i] = (uint8_t)(i * 7 + 3);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[128];
    devsim_port_close(&f->port);
    EVP_PKEY_free(f->key);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static img_params params(uint32_t counter)
{
    img_params p;
    memset(&p, 0, sizeof p);
    p.version = (img_version){1, 2, 3, 4};
    p.has_counter = 1;
    p.counter = counter;
    p.header_size = 0x200;
    p.pad_header = 1;
    p.align = 8;
    return p;
}

static uint8_t *sign(fx *f, EVP_PKEY *key, const img_params *p, size_t *len)
{
    uint8_t *img = NULL;
    img_result r;
    assert_int_equal(img_mcuboot_sign(p, f->payload, sizeof f->payload, key, key, &img, len, &r),
                     KL_OK);
    return img;
}

static int verify(fx *f, const uint8_t *img, size_t len, uint32_t min, kl_img_info *info)
{
    const uint8_t(*keys)[65] = (const uint8_t(*)[65])f->pub;
    return kl_img_verify(&devsim_port_ops, &f->port, img, len, keys, 1, min, info);
}

/* offset of the unprotected TLV area */
static size_t tlv_off(const uint8_t *img)
{
    size_t hdr = img[8] | (img[9] << 8), prot = img[10] | (img[11] << 8);
    size_t isz = img[12] | (img[13] << 8) | ((size_t)img[14] << 16) | ((size_t)img[15] << 24);
    return hdr + isz + prot;
}

static void test_accepted(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    assert_int_equal(verify(f, img, len, 7, &info), KL_IMG_OK);
    assert_int_equal(info.major, 1);
    assert_int_equal(info.minor, 2);
    assert_int_equal(info.revision, 3);
    assert_int_equal(info.build, 4);
    assert_int_equal(info.security_counter, 7);
    assert_int_equal(info.hdr_size, 0x200);
    assert_int_equal(info.img_size, sizeof f->payload);
    assert_memory_equal(img + 0x200, f->payload, sizeof f->payload);
    /* the header's own bytes, then imgtool's erased value up to hdr_size */
    assert_int_equal(img[32], 0xff);
    assert_int_equal(img[0x1ff], 0xff);
    /* trailing bytes (a slot's padding) are not signed and not looked at */
    uint8_t *padded = calloc(1, len + 64);
    memcpy(padded, img, len);
    memset(padded + len, 0xff, 64);
    assert_int_equal(verify(f, padded, len + 64, 0, &info), KL_IMG_OK);
    free(padded);
    OPENSSL_free(img);
}

static void test_flipped_bytes(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    size_t sig_val = tlv_off(img) + 4 + 36 + 36 + 4;
    struct {
        const char *what;
        size_t off;
        int want;
    } cases[] = {
        {"payload", 0x200 + 500, KL_IMG_EHASH},
        {"version in the header", 21, KL_IMG_EHASH},
        {"security counter (protected TLV)", 0x200 + 1000 + 4 + 4, KL_IMG_EHASH},
        {"signature r", sig_val + 10, KL_IMG_ESIG},
        {"signature s", len - 3, KL_IMG_ESIG},
        {"hash TLV", tlv_off(img) + 8, KL_IMG_EHASH},
        {"key hash TLV", tlv_off(img) + 4 + 36 + 4 + 5, KL_IMG_EKEY},
        {"header magic", 0, KL_IMG_EMAGIC},
        {"protected TLV magic", 0x200 + 1000, KL_IMG_EMAGIC},
        {"TLV area magic", tlv_off(img), KL_IMG_EMAGIC},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        img[cases[i].off] ^= 0x01;
        int rc = verify(f, img, len, 0, &info);
        if (rc != cases[i].want) {
            fail_msg("%s: %s, expected %s", cases[i].what, kl_img_strerror(rc),
                     kl_img_strerror(cases[i].want));
        }
        img[cases[i].off] ^= 0x01;
    }
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_OK);
    OPENSSL_free(img);
}

static void test_unprovisioned_key(void **state)
{
    fx *f = *state;
    EVP_PKEY *other = gen_key("P-256");
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, other, &p, &len);
    kl_img_info info;
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_EKEY);
    assert_string_equal(kl_img_strerror(KL_IMG_EKEY), "signed by an unprovisioned key");
    /* a device that holds both keys (a change-over) takes it */
    uint8_t keys[2][65];
    memcpy(keys[0], f->pub, 65);
    assert_int_equal(kl_p256_pub65(other, keys[1]), KL_OK);
    assert_int_equal(kl_img_verify(&devsim_port_ops, &f->port, img, len, (const uint8_t(*)[65])keys,
                                   2, 0, &info),
                     KL_IMG_OK);
    /* no keys at all */
    assert_int_equal(kl_img_verify(&devsim_port_ops, &f->port, img, len, NULL, 0, 0, &info),
                     KL_IMG_ENOKEYS);
    /* a KEYHASH that names key 0 but a signature by key 1 */
    img_params q = params(7);
    size_t len0 = 0;
    uint8_t *mine = sign(f, f->key, &q, &len0);
    size_t kh = tlv_off(mine) + 4 + 36 + 4;
    memcpy(img + tlv_off(img) + 4 + 36 + 4, mine + kh, 32);
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_ESIG);
    OPENSSL_free(mine);
    OPENSSL_free(img);
    EVP_PKEY_free(other);
}

static void test_counter(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    assert_int_equal(verify(f, img, len, 7, &info), KL_IMG_OK);
    assert_int_equal(verify(f, img, len, 8, &info), KL_IMG_ECOUNTER);
    OPENSSL_free(img);
    /* no counter TLV at all: counts as 0, no protected area */
    p.has_counter = 0;
    img = sign(f, f->key, &p, &len);
    assert_int_equal(img[10] | img[11], 0);
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_OK);
    assert_int_equal(info.security_counter, 0);
    assert_int_equal(verify(f, img, len, 1, &info), KL_IMG_ECOUNTER);
    OPENSSL_free(img);
}

static void test_truncated(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    for (size_t n = 0; n < len; n++) {
        /* a fresh copy of exactly n bytes, so ASan sees any read past it */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, img, n);
        int rc = verify(f, cut, n, 0, &info);
        if (rc != KL_IMG_ETRUNCATED) {
            fail_msg("cut to %zu of %zu bytes: %s", n, len, kl_img_strerror(rc));
        }
        free(cut);
    }
    OPENSSL_free(img);
}

static void test_oversized_tlv(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    size_t u = tlv_off(img);
    /* an unprotected area that says it is larger than the device takes (and than the file) */
    uint8_t save[2] = {img[u + 2], img[u + 3]};
    img[u + 2] = (uint8_t)(KL_IMG_TLV_MAX + 4);
    img[u + 3] = (uint8_t)((KL_IMG_TLV_MAX + 4) >> 8);
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_ETLVSIZE);
    img[u + 2] = save[0];
    img[u + 3] = save[1];
    /* a protected area likewise (header field) */
    img[10] = 0xff;
    img[11] = 0x7f;
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_ETLVSIZE);
    assert_string_equal(kl_img_strerror(KL_IMG_ETLVSIZE), "oversized TLV area");
    OPENSSL_free(img);
    /* a real image with a TLV area over the limit: 1 + KL_IMG_TLV_MAX bytes, well-formed */
    img = sign(f, f->key, &p, &len);
    u = tlv_off(img);
    size_t extra = KL_IMG_TLV_MAX + 1 - (len - u);
    uint8_t *big = calloc(1, len + extra);
    memcpy(big, img, len);
    big[len] = 0x7f; /* an unknown TLV filling the rest */
    big[len + 2] = (uint8_t)(extra - 4);
    big[len + 3] = (uint8_t)((extra - 4) >> 8);
    big[u + 2] = (uint8_t)(KL_IMG_TLV_MAX + 1);
    big[u + 3] = (uint8_t)((KL_IMG_TLV_MAX + 1) >> 8);
    assert_int_equal(verify(f, big, len + extra, 0, &info), KL_IMG_ETLVSIZE);
    free(big);
    OPENSSL_free(img);
}

static void test_malformed(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info;
    size_t u = tlv_off(img);
    /* an extra unprotected TLV (not signed: refused) */
    uint8_t *more = calloc(1, len + 8);
    memcpy(more, img, len);
    more[len] = 0x02; /* PUBKEY */
    more[len + 2] = 4;
    more[u + 2] = (uint8_t)((len - u) + 8);
    more[u + 3] = (uint8_t)(((len - u) + 8) >> 8);
    assert_int_equal(verify(f, more, len + 8, 0, &info), KL_IMG_EFORMAT);
    free(more);
    /* encrypted flag */
    img[16] = 0x04;
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_EFLAGS);
    img[16] = 0;
    /* header size below 32 */
    img[8] = 16;
    img[9] = 0;
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_EFORMAT);
    OPENSSL_free(img);
}

/* A port whose ecdsa_verify takes every signature (a bare PKA peripheral that does not check
 * the range of r and s): the library itself refuses r or s outside [1, n-1] (SEC 1 4.1.4),
 * so r = s = 0 (CVE-2022-21449) does not pass for any digest. */
static int trusting_verify(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                           const uint8_t sig[64])
{
    (void)ctx;
    (void)pub;
    (void)digest;
    (void)sig;
    return KL_PORT_OK;
}

/* img (its ECDSA_SIG the last TLV) with that TLV's value replaced by der[0..n) */
static size_t put_sig(uint8_t *img, size_t len, const uint8_t *der, size_t n)
{
    size_t u = tlv_off(img), off = u + 4, last = off;
    size_t end = u + (img[u + 2] | (size_t)(img[u + 3] << 8));
    assert_true(end <= len);
    while (off < end) {
        last = off;
        off += 4 + (img[off + 2] | (size_t)(img[off + 3] << 8));
    }
    assert_int_equal(img[last], 0x22);
    img[last + 2] = (uint8_t)n;
    img[last + 3] = 0;
    memcpy(img + last + 4, der, n);
    size_t tot = last + 4 + n - u;
    img[u + 2] = (uint8_t)tot;
    img[u + 3] = (uint8_t)(tot >> 8);
    return u + tot;
}

static void test_sig_scalar_range(void **state)
{
    fx *f = *state;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_port trusting = devsim_port_ops;
    trusting.ecdsa_verify = trusting_verify;
    const uint8_t(*keys)[65] = (const uint8_t(*)[65])f->pub;
    kl_img_info info;
    static const uint8_t zero[] = {0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00};
    uint8_t n_one[40] = {0x30, 0x26, 0x02, 0x21, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00,
                         0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                         0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3,
                         0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51, 0x02, 0x01, 0x01};
    size_t n = put_sig(img, len, zero, sizeof zero);
    assert_int_equal(kl_img_verify(&trusting, &f->port, img, n, keys, 1, 0, &info), KL_IMG_ESIG);
    n = put_sig(img, len, n_one, sizeof n_one); /* r = n */
    assert_int_equal(kl_img_verify(&trusting, &f->port, img, n, keys, 1, 0, &info), KL_IMG_ESIG);
    n_one[36] = 0x50; /* r = n - 1: in range, so this port's verdict stands */
    n = put_sig(img, len, n_one, sizeof n_one);
    assert_int_equal(kl_img_verify(&trusting, &f->port, img, n, keys, 1, 0, &info), KL_IMG_OK);
    assert_int_equal(verify(f, img, n, 0, &info), KL_IMG_ESIG); /* a real verifier */
    OPENSSL_free(img);
}

/* MCUboot's imgtool signed these (tests/data/firmware/README.md): our device takes them, and
 * our writer makes the same bytes for the same input up to the (randomised) signature. */
static uint8_t *slurp(const char *name, size_t *len)
{
    char path[512];
    const char *d = getenv("KL_TEST_DATA");
    assert_non_null(d);
    snprintf(path, sizeof path, "%s/firmware/%s", d, name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, fp);
    fclose(fp);
    return buf;
}

static EVP_PKEY *imgtool_key(void)
{
    size_t n = 0;
    uint8_t *pem = slurp("imgtool-p256.pem", &n);
    BIO *b = BIO_new_mem_buf(pem, (int)n);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    assert_non_null(k);
    BIO_free(b);
    free(pem);
    return k;
}

static void test_imgtool_vectors(void **state)
{
    fx *f = *state;
    EVP_PKEY *k = imgtool_key();
    uint8_t pub[65];
    kl_img_info info;
    assert_int_equal(kl_p256_pub65(k, pub), KL_OK);
    size_t len = 0, len2 = 0, alen = 0;
    uint8_t *theirs = slurp("imgtool-signed.bin", &len);
    uint8_t *nocnt = slurp("imgtool-nocounter.bin", &len2);
    uint8_t *app = slurp("app.bin", &alen);
    const uint8_t(*keys)[65] = (const uint8_t(*)[65])pub;
    assert_int_equal(kl_img_verify(&devsim_port_ops, &f->port, theirs, len, keys, 1, 7, &info),
                     KL_IMG_OK);
    assert_int_equal(info.security_counter, 7);
    assert_int_equal(info.build, 4);
    assert_int_equal(kl_img_verify(&devsim_port_ops, &f->port, nocnt, len2, keys, 1, 0, &info),
                     KL_IMG_OK);
    assert_int_equal(info.major * 100 + info.minor * 10 + info.revision, 90);
    assert_int_equal(kl_img_verify(&devsim_port_ops, &f->port, nocnt, len2, keys, 1, 1, &info),
                     KL_IMG_ECOUNTER);
    /* our writer, same key, same input, same options */
    img_params p = params(7);
    uint8_t *ours = NULL;
    size_t olen = 0;
    img_result r;
    assert_int_equal(img_mcuboot_sign(&p, app, alen, k, k, &ours, &olen, &r), KL_OK);
    size_t u = tlv_off(theirs), sig = u + 4 + 36 + 36;
    assert_int_equal(tlv_off(ours), u);
    assert_memory_equal(ours, theirs, u);                           /* header .. protected TLVs */
    assert_memory_equal(ours + u + 4, theirs + u + 4, sig - u - 4); /* SHA256 and KEYHASH TLVs */
    assert_memory_equal(ours + sig, theirs + sig, 2);               /* signature TLV type */
    assert_memory_equal(r.hash, theirs + u + 8, 32);
    /* same with a plain 32-byte header and no counter */
    p.header_size = 32;
    p.has_counter = 0;
    p.version = (img_version){0, 9, 0, 0};
    p.align = 1;
    OPENSSL_free(ours);
    assert_int_equal(img_mcuboot_sign(&p, app, alen, k, k, &ours, &olen, &r), KL_OK);
    assert_memory_equal(ours, nocnt, tlv_off(nocnt));
    assert_memory_equal(ours + tlv_off(nocnt) + 4, nocnt + tlv_off(nocnt) + 4, 72);
    OPENSSL_free(ours);
    free(theirs);
    free(nocnt);
    free(app);
    EVP_PKEY_free(k);
}

static void test_device_store(void **state)
{
    fx *f = *state;
    const kl_port *po = &devsim_port_ops;
    img_params p = params(7);
    size_t len = 0;
    uint8_t *img = sign(f, f->key, &p, &len);
    kl_img_info info, st;
    assert_int_equal(kl_dev_verify_image(po, &f->port, img, len, &info), KL_IMG_ENOKEYS);
    assert_int_equal(po->store_write(&f->port, KL_OBJ_FWKEYS, f->pub, 65), KL_PORT_OK);
    assert_int_equal(kl_dev_verify_image(po, &f->port, img, len, &info), KL_IMG_OK);
    assert_int_equal(kl_dev_image_installed(po, &f->port, &info), KL_IMG_OK);
    assert_int_equal(kl_dev_image_state(po, &f->port, &st), KL_IMG_OK);
    assert_int_equal(st.security_counter, 7);
    assert_int_equal(st.revision, 3);
    /* an older counter is refused now; recording one never lowers the stored counter */
    img_params old = params(6);
    size_t olen = 0;
    uint8_t *oimg = sign(f, f->key, &old, &olen);
    assert_int_equal(kl_dev_verify_image(po, &f->port, oimg, olen, &info), KL_IMG_ECOUNTER);
    info.security_counter = 2;
    assert_int_equal(kl_dev_image_installed(po, &f->port, &info), KL_IMG_OK);
    assert_int_equal(kl_dev_image_state(po, &f->port, &st), KL_IMG_OK);
    assert_int_equal(st.security_counter, 7);
    /* corrupt records fail closed */
    assert_int_equal(po->store_write(&f->port, KL_OBJ_FWSTATE, (const uint8_t *)"abc", 3),
                     KL_PORT_OK);
    assert_int_equal(kl_dev_verify_image(po, &f->port, img, len, &info), KL_IMG_ESTORAGE);
    assert_int_equal(po->store_write(&f->port, KL_OBJ_FWSTATE, NULL, 0), KL_PORT_OK);
    assert_int_equal(po->store_write(&f->port, KL_OBJ_FWKEYS, f->pub, 64), KL_PORT_OK);
    assert_int_equal(kl_dev_verify_image(po, &f->port, img, len, &info), KL_IMG_ESTORAGE);
    OPENSSL_free(img);
    OPENSSL_free(oimg);
}

static void test_writer_refusals(void **state)
{
    fx *f = *state;
    uint8_t *img = NULL;
    size_t len = 0;
    img_result r;
    img_params p = params(1);
    EVP_PKEY *p384 = gen_key("P-384");
    assert_int_equal(
        img_mcuboot_sign(&p, f->payload, sizeof f->payload, p384, p384, &img, &len, &r),
        KL_EPOLICY);
    EVP_PKEY_free(p384);
    p.header_size = 31;
    assert_int_equal(
        img_mcuboot_sign(&p, f->payload, sizeof f->payload, f->key, f->key, &img, &len, &r),
        KL_EUSAGE);
    p = params(1);
    p.align = 3;
    assert_int_equal(
        img_mcuboot_sign(&p, f->payload, sizeof f->payload, f->key, f->key, &img, &len, &r),
        KL_EUSAGE);
    /* without --pad-header the input must start with header_size zero bytes */
    p = params(1);
    p.pad_header = 0;
    p.header_size = 32;
    assert_int_equal(
        img_mcuboot_sign(&p, f->payload, sizeof f->payload, f->key, f->key, &img, &len, &r),
        KL_EINPUT);
    memset(f->payload, 0, 32);
    assert_int_equal(
        img_mcuboot_sign(&p, f->payload, sizeof f->payload, f->key, f->key, &img, &len, &r), KL_OK);
    kl_img_info info;
    assert_int_equal(verify(f, img, len, 0, &info), KL_IMG_OK);
    assert_int_equal(info.img_size, sizeof f->payload - 32);
    OPENSSL_free(img);
    assert_null(NULL);
}

static void test_version_parse(void **state)
{
    (void)state;
    img_version v;
    char buf[32];
    assert_int_equal(img_version_parse("1.2.3", &v), KL_OK);
    img_version_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "1.2.3+0");
    assert_int_equal(img_version_parse("255.255.65535+4294967295", &v), KL_OK);
    assert_int_equal(v.build, 4294967295u);
    const char *bad[] = {"",       "1",       "1.2",       "1.2.3+",           "01.2.3",
                         "1.2.3a", "256.0.0", "1.2.65536", "1.2.3+4294967296", "-1.2.3",
                         "1..3",   "1.2.3.4", " 1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (img_version_parse(bad[i], &v) != KL_EUSAGE) {
            fail_msg("version '%s' accepted", bad[i]);
        }
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_accepted),     T(test_flipped_bytes),    T(test_unprovisioned_key),
        T(test_counter),      T(test_truncated),        T(test_oversized_tlv),
        T(test_malformed),    T(test_sig_scalar_range), T(test_imgtool_vectors),
        T(test_device_store), T(test_writer_refusals),  cmocka_unit_test(test_version_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
