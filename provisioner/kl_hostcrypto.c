/* keyline: host side of INJECT and CHALLENGE (see kl_hostcrypto.h, docs/line-protocol.md). */
#include "kl_hostcrypto.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <string.h>

kl_rc kl_p256_pub65(EVP_PKEY *pk, uint8_t out[KL_PROTO_PUB_LEN])
{
    uint8_t buf[KL_PROTO_PUB_LEN + 8];
    size_t len = 0;
    char group[32];

    if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC ||
        !EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        NULL) ||
        strcmp(group, "prime256v1") != 0) {
        return kl_fail(KL_EINPUT, "not a P-256 key");
    }
    if (!EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof(buf), &len) ||
        len != KL_PROTO_PUB_LEN || buf[0] != 0x04) {
        return kl_fail_ssl(KL_EINPUT, "cannot get the uncompressed P-256 public key");
    }
    memcpy(out, buf, KL_PROTO_PUB_LEN);
    return KL_OK;
}

/* Build an EC key from params: pub (always) and priv (optional). */
static kl_rc p256_fromdata(const uint8_t pub[KL_PROTO_PUB_LEN], const BIGNUM *priv, EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;

    *out = NULL;
    bld = OSSL_PARAM_BLD_new();
    ENSURE_SSL(bld != NULL, KL_EINTERNAL, "OSSL_PARAM_BLD_new");
    ENSURE_SSL(
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, KL_PROTO_PUB_LEN) &&
            (priv == NULL || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)),
        KL_EINTERNAL, "building key parameters");
    params = OSSL_PARAM_BLD_to_param(bld);
    ENSURE_SSL(params != NULL, KL_EINTERNAL, "OSSL_PARAM_BLD_to_param");
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    ENSURE_SSL(ctx != NULL && EVP_PKEY_fromdata_init(ctx) > 0, KL_EINTERNAL,
               "EVP_PKEY_fromdata_init");
    /* EC_POINT_oct2point underneath refuses a point that is not on the curve. */
    ENSURE_SSL(EVP_PKEY_fromdata(ctx, out, priv != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
                                 params) > 0,
               KL_EINPUT, "invalid P-256 point");
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* holds a copy of priv: OSSL_PARAM_BLD made it secure memory */
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

kl_rc kl_p256_from_pub65(const uint8_t pub[KL_PROTO_PUB_LEN], EVP_PKEY **out)
{
    if (pub == NULL || out == NULL || pub[0] != 0x04) {
        return kl_fail(KL_EINPUT, "not an uncompressed P-256 point");
    }
    return p256_fromdata(pub, NULL, out);
}

kl_rc kl_p256_from_priv32(const uint8_t priv[32], EVP_PKEY **out, uint8_t *pub)
{
    kl_rc rc = KL_OK;
    EC_GROUP *group = NULL;
    EC_POINT *q = NULL;
    BIGNUM *d = NULL;
    BN_CTX *bn = NULL;
    uint8_t p65[KL_PROTO_PUB_LEN];

    *out = NULL;
    group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    bn = BN_CTX_new();
    d = BN_secure_new();
    ENSURE_SSL(group != NULL && bn != NULL && d != NULL, KL_EINTERNAL, "P-256 setup");
    ENSURE_SSL(BN_bin2bn(priv, 32, d) != NULL, KL_EINTERNAL, "BN_bin2bn");
    ENSURE(!BN_is_zero(d) && BN_cmp(d, EC_GROUP_get0_order(group)) < 0, KL_EINPUT,
           "private scalar out of range");
    q = EC_POINT_new(group);
    ENSURE_SSL(q != NULL && EC_POINT_mul(group, q, d, NULL, NULL, bn) &&
                   EC_POINT_point2oct(group, q, POINT_CONVERSION_UNCOMPRESSED, p65, sizeof(p65),
                                      bn) == sizeof(p65),
               KL_EINTERNAL, "computing the public key");
    TRY(p256_fromdata(p65, d, out));
    if (pub != NULL) {
        memcpy(pub, p65, sizeof(p65));
    }
out:
    BN_clear_free(d);
    EC_POINT_free(q);
    BN_CTX_free(bn);
    EC_GROUP_free(group);
    return rc;
}

kl_rc kl_p256_priv32(EVP_PKEY *pk, uint8_t out[32])
{
    BIGNUM *d = NULL;
    kl_rc rc = KL_OK;
    uint8_t pub[KL_PROTO_PUB_LEN];

    TRY(kl_p256_pub65(pk, pub));
    ENSURE(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d), KL_EINPUT, "not a private key");
    ENSURE(BN_bn2binpad(d, out, 32) == 32, KL_EINPUT, "private scalar too large");
out:
    BN_clear_free(d);
    return rc;
}

/* ECDH: X coordinate of priv * peer. */
static kl_rc ecdh32(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t z[32])
{
    kl_rc rc = KL_OK;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(priv, NULL);
    size_t zlen = 32;
    ENSURE_SSL(ctx != NULL && EVP_PKEY_derive_init(ctx) > 0, KL_EINTERNAL, "ECDH init");
    ENSURE_SSL(EVP_PKEY_derive_set_peer(ctx, peer) > 0, KL_EINPUT, "ECDH peer rejected");
    ENSURE_SSL(EVP_PKEY_derive(ctx, z, &zlen) > 0 && zlen == 32, KL_EINTERNAL, "ECDH");
out:
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

static kl_rc hkdf32(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                    const uint8_t *info, size_t info_len, uint8_t out[32])
{
    kl_rc rc = KL_OK;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[5];
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    p[4] = OSSL_PARAM_construct_end();
    ENSURE_SSL(kctx != NULL && EVP_KDF_derive(kctx, out, 32, p) > 0, KL_EINTERNAL, "HKDF");
out:
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

kl_rc kl_inject_wrap(const uint8_t transport_pub[KL_PROTO_PUB_LEN], const char *hw_serial,
                     const uint8_t priv[32], kl_inject_wrapped *out)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *tpk = NULL, *eph = NULL;
    EVP_CIPHER_CTX *c = NULL;
    uint8_t z[32], k[32], info[KL_PROTO_INJECT_INFO_MAX], aad[2 * KL_PROTO_PUB_LEN];
    size_t info_len = 0;
    int n = 0, m = 0;

    ENSURE(transport_pub != NULL && priv != NULL && out != NULL, KL_EINPUT, "inject: NULL");
    ENSURE(kl_proto_inject_info(info, sizeof(info), &info_len, hw_serial) == KL_PROTO_OK, KL_EINPUT,
           "inject: bad hardware serial");
    TRY(kl_p256_from_pub65(transport_pub, &tpk));
    eph = EVP_EC_gen("P-256");
    ENSURE_SSL(eph != NULL, KL_EINTERNAL, "ephemeral key generation");
    TRY(kl_p256_pub65(eph, out->eph_pub));
    TRY(ecdh32(eph, tpk, z));
    ENSURE_SSL(RAND_bytes(out->salt, sizeof(out->salt)) == 1 &&
                   RAND_bytes(out->iv, sizeof(out->iv)) == 1,
               KL_EINTERNAL, "RAND_bytes");
    TRY(hkdf32(out->salt, sizeof(out->salt), z, sizeof(z), info, info_len, k));
    memcpy(aad, out->eph_pub, KL_PROTO_PUB_LEN);
    memcpy(aad + KL_PROTO_PUB_LEN, transport_pub, KL_PROTO_PUB_LEN);
    c = EVP_CIPHER_CTX_new();
    ENSURE_SSL(
        c != NULL && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)sizeof(out->iv), NULL) == 1 &&
            EVP_EncryptInit_ex(c, NULL, NULL, k, out->iv) == 1 &&
            EVP_EncryptUpdate(c, NULL, &n, aad, (int)sizeof(aad)) == 1 &&
            EVP_EncryptUpdate(c, out->ct, &n, priv, 32) == 1 &&
            EVP_EncryptFinal_ex(c, out->ct + n, &m) == 1 && n + m == 32 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, (int)sizeof(out->tag), out->tag) == 1,
        KL_EINTERNAL, "AES-256-GCM");
out:
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(k, sizeof(k));
    EVP_CIPHER_CTX_free(c); /* cleanses the key schedule */
    EVP_PKEY_free(eph);
    EVP_PKEY_free(tpk);
    return rc;
}

kl_rc kl_inject_put(const kl_inject_wrapped *wr, int force, kl_tlv_w *w)
{
    if (kl_tlv_put(w, KL_TAG_EPH_PUB, wr->eph_pub, sizeof(wr->eph_pub)) != KL_PROTO_OK ||
        kl_tlv_put(w, KL_TAG_SALT, wr->salt, sizeof(wr->salt)) != KL_PROTO_OK ||
        kl_tlv_put(w, KL_TAG_IV, wr->iv, sizeof(wr->iv)) != KL_PROTO_OK ||
        kl_tlv_put(w, KL_TAG_CIPHERTEXT, wr->ct, sizeof(wr->ct)) != KL_PROTO_OK ||
        kl_tlv_put(w, KL_TAG_GCM_TAG, wr->tag, sizeof(wr->tag)) != KL_PROTO_OK ||
        (force && kl_tlv_put_u8(w, KL_TAG_FORCE, 1) != KL_PROTO_OK)) {
        return kl_fail(KL_EINTERNAL, "INJECT payload does not fit");
    }
    return KL_OK;
}

kl_rc kl_challenge_verify(EVP_PKEY *pub, const char *hw_serial, const uint8_t *nonce,
                          size_t nonce_len, const uint8_t *sig_der, size_t sig_len)
{
    kl_rc rc = KL_OK;
    uint8_t msg[KL_PROTO_CHALLENGE_MSG_MAX];
    size_t mlen = 0;
    EVP_MD_CTX *md = NULL;
    int v;

    ENSURE(pub != NULL && sig_der != NULL, KL_EINPUT, "challenge verify: NULL");
    ENSURE(kl_proto_challenge_msg(msg, sizeof(msg), &mlen, hw_serial, nonce, nonce_len) ==
               KL_PROTO_OK,
           KL_EINPUT, "challenge verify: bad serial or nonce");
    md = EVP_MD_CTX_new();
    ENSURE_SSL(md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1,
               KL_EINTERNAL, "EVP_DigestVerifyInit");
    v = EVP_DigestVerify(md, sig_der, sig_len, msg, mlen);
    ENSURE_SSL(v == 1, KL_EAUTH, "challenge signature does not verify");
out:
    EVP_MD_CTX_free(md);
    return rc;
}
