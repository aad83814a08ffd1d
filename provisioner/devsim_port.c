/* keyline: OpenSSL + files implementation of kl_port (see devsim_port.h). */
#include "devsim_port.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kl_file.h"
#include "kl_hostcrypto.h"

#define DS(ctx) ((devsim_port *)(ctx))

static kl_rc path_of(const devsim_port *p, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", p->dir, name);
    if (n < 0 || (size_t)n >= cap) {
        return kl_fail(KL_EIO, "path too long: %s/%s", p->dir, name);
    }
    return KL_OK;
}

static kl_rc key_load(const devsim_port *p, const char *name, EVP_PKEY **out)
{
    char path[PATH_MAX + 32];
    uint8_t *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    kl_rc rc = KL_OK;

    *out = NULL;
    TRY(path_of(p, name, path, sizeof(path)));
    TRY(kl_file_read(path, 16384, &data, &len));
    bio = BIO_new_mem_buf(data, (int)len);
    ENSURE_SSL(bio != NULL, KL_EINTERNAL, "BIO_new_mem_buf");
    *out = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    ENSURE_SSL(*out != NULL, KL_EINPUT, "%s: not a private key", path);
out:
    BIO_free(bio);
    if (data != NULL) {
        OPENSSL_cleanse(data, len);
        free(data);
    }
    return rc;
}

static kl_rc key_save(const devsim_port *p, const char *name, EVP_PKEY *pk)
{
    char path[PATH_MAX + 32];
    BIO *bio = BIO_new(BIO_s_secmem());
    char *mem = NULL;
    long len;
    kl_rc rc = KL_OK;

    ENSURE_SSL(bio != NULL, KL_EINTERNAL, "BIO_new");
    TRY(path_of(p, name, path, sizeof(path)));
    ENSURE_SSL(PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1, KL_EINTERNAL,
               "PEM_write_bio_PrivateKey");
    len = BIO_get_mem_data(bio, &mem);
    ENSURE(len > 0, KL_EINTERNAL, "empty PEM");
    TRY(kl_file_write_atomic(path, mem, (size_t)len, 0600));
out:
    BIO_free(bio);
    return rc;
}

kl_rc devsim_port_open(devsim_port *p, const char *dir,
                       int (*send_fn)(void *user, const uint8_t *data, size_t len), void *send_user)
{
    kl_rc rc = KL_OK;

    memset(p, 0, sizeof(*p));
    ENSURE(dir != NULL && strlen(dir) < sizeof(p->dir), KL_EUSAGE, "bad state directory");
    ENSURE(send_fn != NULL, KL_EUSAGE, "devsim port needs a send function");
    memcpy(p->dir, dir, strlen(dir) + 1);
    p->send_fn = send_fn;
    p->send_user = send_user;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = kl_fail(KL_EIO, "%s: %s", dir, strerror(errno));
        goto out;
    }
    rc = key_load(p, "transport.pem", &p->transport);
    if (rc == KL_ENOTFOUND) {
        /* First boot: the factory "programs" a transport key. */
        p->transport = EVP_EC_gen("P-256");
        ENSURE_SSL(p->transport != NULL, KL_EINTERNAL, "transport key generation");
        rc = key_save(p, "transport.pem", p->transport);
    }
    if (rc != KL_OK) {
        goto out;
    }
    rc = key_load(p, "identity.pem", &p->identity);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
    }
out:
    if (rc != KL_OK) {
        devsim_port_close(p);
    }
    return rc;
}

void devsim_port_close(devsim_port *p)
{
    if (p == NULL) {
        return;
    }
    EVP_PKEY_free(p->transport);
    EVP_PKEY_free(p->identity);
    p->transport = p->identity = NULL;
}

/* ---- kl_port functions --------------------------------------------------------------------- */

static int ds_send(void *ctx, const uint8_t *data, size_t len)
{
    return DS(ctx)->send_fn(DS(ctx)->send_user, data, len) == 0 ? KL_PORT_OK : KL_PORT_EFAIL;
}

static uint32_t ds_now_ms(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static int ds_random(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    return RAND_bytes(buf, (int)n) == 1 ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_sha256(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    (void)ctx;
    return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_key_generate(void *ctx, uint8_t pub[65])
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    if (pk == NULL || kl_p256_pub65(pk, pub) != KL_OK ||
        key_save(DS(ctx), "identity.pem", pk) != KL_OK) {
        EVP_PKEY_free(pk);
        return KL_PORT_EFAIL;
    }
    EVP_PKEY_free(DS(ctx)->identity);
    DS(ctx)->identity = pk;
    return KL_PORT_OK;
}

static int ds_key_import(void *ctx, const uint8_t priv[32], uint8_t pub[65])
{
    EVP_PKEY *pk = NULL;
    uint8_t p65[65];
    kl_rc rc = kl_p256_from_priv32(priv, &pk, p65);
    if (rc != KL_OK) {
        return rc == KL_EINPUT ? KL_PORT_EINVAL : KL_PORT_EFAIL;
    }
    if (key_save(DS(ctx), "identity.pem", pk) != KL_OK) {
        EVP_PKEY_free(pk);
        return KL_PORT_EFAIL;
    }
    EVP_PKEY_free(DS(ctx)->identity);
    DS(ctx)->identity = pk;
    memcpy(pub, p65, sizeof(p65));
    return KL_PORT_OK;
}

static int ds_key_public(void *ctx, uint8_t pub[65])
{
    if (DS(ctx)->identity == NULL) {
        return KL_PORT_ENOENT;
    }
    return kl_p256_pub65(DS(ctx)->identity, pub) == KL_OK ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_key_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
    EVP_PKEY_CTX *pc = NULL;
    ECDSA_SIG *es = NULL;
    uint8_t der[80];
    const uint8_t *q = der;
    size_t dlen = sizeof(der);
    const BIGNUM *r, *s;
    int ret = KL_PORT_EFAIL;

    if (DS(ctx)->identity == NULL) {
        return KL_PORT_ENOENT;
    }
    pc = EVP_PKEY_CTX_new(DS(ctx)->identity, NULL);
    if (pc == NULL || EVP_PKEY_sign_init(pc) <= 0 ||
        EVP_PKEY_sign(pc, der, &dlen, digest, 32) <= 0) {
        goto out;
    }
    es = d2i_ECDSA_SIG(NULL, &q, (long)dlen);
    if (es == NULL) {
        goto out;
    }
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32) {
        goto out;
    }
    if (DS(ctx)->bad_sig) {
        sig[31] ^= 0x01; /* misbehave: a signature that will not verify */
    }
    ret = KL_PORT_OK;
out:
    ECDSA_SIG_free(es);
    EVP_PKEY_CTX_free(pc);
    return ret;
}

static int ds_transport_public(void *ctx, uint8_t pub[65])
{
    return kl_p256_pub65(DS(ctx)->transport, pub) == KL_OK ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_transport_ecdh(void *ctx, const uint8_t peer[65], uint8_t shared[32])
{
    EVP_PKEY *pp = NULL;
    EVP_PKEY_CTX *pc = NULL;
    size_t zlen = 32;
    int ret = KL_PORT_EINVAL;

    if (kl_p256_from_pub65(peer, &pp) != KL_OK) {
        return KL_PORT_EINVAL;
    }
    pc = EVP_PKEY_CTX_new(DS(ctx)->transport, NULL);
    if (pc == NULL || EVP_PKEY_derive_init(pc) <= 0 || EVP_PKEY_derive_set_peer(pc, pp) <= 0) {
        goto out;
    }
    ret = EVP_PKEY_derive(pc, shared, &zlen) > 0 && zlen == 32 ? KL_PORT_OK : KL_PORT_EFAIL;
out:
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pp);
    return ret;
}

static int ds_hkdf_sha256(void *ctx, const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
                          size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t *out,
                          size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[5];
    int ok;
    (void)ctx;
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    p[4] = OSSL_PARAM_construct_end();
    ok = kctx != NULL && EVP_KDF_derive(kctx, out, out_len, p) > 0;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return ok ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_aes256gcm_decrypt(void *ctx, const uint8_t key[32], const uint8_t iv[12],
                                const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                size_t ct_len, const uint8_t tag[16], uint8_t *pt)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t tmp[64];
    int n = 0, m = 0, ret = KL_PORT_EFAIL;
    (void)ctx;

    if (c == NULL || ct_len > sizeof(tmp)) {
        goto out;
    }
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
        EVP_DecryptInit_ex(c, NULL, NULL, key, iv) != 1 ||
        EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) != 1 ||
        EVP_DecryptUpdate(c, tmp, &n, ct, (int)ct_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) {
        goto out;
    }
    if (EVP_DecryptFinal_ex(c, tmp + n, &m) != 1) {
        ret = KL_PORT_EAUTH;
        goto out;
    }
    memcpy(pt, tmp, ct_len);
    ret = KL_PORT_OK;
out:
    OPENSSL_cleanse(tmp, sizeof(tmp));
    EVP_CIPHER_CTX_free(c);
    return ret;
}

static int ds_store_read(void *ctx, uint8_t id, uint8_t *buf, size_t cap, size_t *len)
{
    char name[16], path[PATH_MAX + 32];
    uint8_t *data = NULL;
    size_t n = 0;
    kl_rc rc;

    snprintf(name, sizeof(name), "obj-%02x", id);
    if (path_of(DS(ctx), name, path, sizeof(path)) != KL_OK) {
        return KL_PORT_EFAIL;
    }
    rc = kl_file_read(path, 1u << 16, &data, &n);
    if (rc != KL_OK) {
        return rc == KL_ENOTFOUND ? KL_PORT_ENOENT : KL_PORT_EFAIL;
    }
    if (n > cap) {
        free(data);
        return KL_PORT_ESPACE;
    }
    memcpy(buf, data, n);
    *len = n;
    free(data);
    return KL_PORT_OK;
}

static int ds_store_write(void *ctx, uint8_t id, const uint8_t *data, size_t len)
{
    char name[16], path[PATH_MAX + 32];

    if (DS(ctx)->fail_store) {
        return KL_PORT_EFAIL;
    }
    if (DS(ctx)->store_limit != 0 && len > DS(ctx)->store_limit) {
        return KL_PORT_ESPACE;
    }
    snprintf(name, sizeof(name), "obj-%02x", id);
    if (path_of(DS(ctx), name, path, sizeof(path)) != KL_OK) {
        return KL_PORT_EFAIL;
    }
    if (len == 0) {
        return (unlink(path) == 0 || errno == ENOENT) ? KL_PORT_OK : KL_PORT_EFAIL;
    }
    return kl_file_write_atomic(path, data, len, 0600) == KL_OK ? KL_PORT_OK : KL_PORT_EFAIL;
}

static int ds_lock(void *ctx)
{
    return DS(ctx)->refuse_lock ? KL_PORT_EREFUSED : KL_PORT_OK;
}

/* kl_port.ecdsa_verify (firmware images, kl_dev_image.h) */
static int ds_ecdsa_verify(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                           const uint8_t sig[64])
{
    (void)ctx;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *pc = NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    unsigned char *der = NULL;
    int ret = KL_PORT_EFAIL, n = 0;
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        goto out;
    }
    r = s = NULL;
    if (kl_p256_from_pub65(pub, &pk) != KL_OK) {
        ret = KL_PORT_EINVAL;
        goto out;
    }
    if ((n = i2d_ECDSA_SIG(es, &der)) <= 0 || !(pc = EVP_PKEY_CTX_new(pk, NULL)) ||
        EVP_PKEY_verify_init(pc) <= 0) {
        goto out;
    }
    ret = EVP_PKEY_verify(pc, der, (size_t)n, digest, 32) == 1 ? KL_PORT_OK : KL_PORT_EAUTH;
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pk);
    return ret;
}

const kl_port devsim_port_ops = {
    ds_send,           ds_now_ms,       ds_random,
    ds_sha256,         ds_key_generate, ds_key_import,
    ds_key_public,     ds_key_sign,     ds_transport_public,
    ds_transport_ecdh, ds_hkdf_sha256,  ds_aes256gcm_decrypt,
    ds_store_read,     ds_store_write,  ds_lock,
    ds_ecdsa_verify,
};
