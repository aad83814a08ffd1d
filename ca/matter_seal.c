/* keyline: sealing a Matter setup passcode to a token key (see matter_seal.h). */
#include "matter_seal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <string.h>

#include "hsm.h"
#include "tpl.h"

static kl_rc seal_ecdh(EVP_PKEY *eph, EVP_PKEY *pub, uint8_t z[32])
{
    kl_rc rc = KL_OK;
    size_t zlen = 32;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(eph, NULL);
    ENSURE_SSL(c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, pub) == 1 &&
                   EVP_PKEY_derive(c, z, &zlen) == 1 && zlen == 32,
               KL_EINTERNAL, "ECDH failed");
out:
    EVP_PKEY_CTX_free(c);
    return rc;
}

static kl_rc seal_hkdf(const uint8_t z[32], const char *device_id, uint8_t key[32])
{
    kl_rc rc = KL_OK;
    uint8_t info[sizeof MATTER_SEAL_INFO - 1 + 128];
    size_t dl = strlen(device_id), klen = 32;
    EVP_PKEY_CTX *c = NULL;
    ENSURE(dl <= 128, KL_EUSAGE, "device id too long");
    memcpy(info, MATTER_SEAL_INFO, sizeof MATTER_SEAL_INFO - 1);
    /* HKDF info is bytes with its length passed along, not a C string: */
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
    memcpy(info + sizeof MATTER_SEAL_INFO - 1, device_id, dl);
    c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    ENSURE_SSL(
        c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_key(c, z, 32) == 1 &&
            EVP_PKEY_CTX_add1_hkdf_info(c, info, (int)(sizeof MATTER_SEAL_INFO - 1 + dl)) == 1 &&
            EVP_PKEY_derive(c, key, &klen) == 1 && klen == 32,
        KL_EINTERNAL, "HKDF failed");
out:
    EVP_PKEY_CTX_free(c);
    return rc;
}

static kl_rc seal_gcm(const uint8_t key[32], const char *device_id, const uint8_t pt[4],
                      uint8_t *iv_ct_tag)
{
    kl_rc rc = KL_OK;
    int n = 0, fin = 0;
    uint8_t *iv = iv_ct_tag, *ct = iv_ct_tag + 12, *tag = iv_ct_tag + 16;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    ENSURE_SSL(RAND_bytes(iv, 12) == 1, KL_EINTERNAL, "no random bytes");
    ENSURE_SSL(c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv) == 1 &&
                   EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)device_id,
                                     (int)strlen(device_id)) == 1 &&
                   EVP_EncryptUpdate(c, ct, &n, pt, 4) == 1 && n == 4 &&
                   EVP_EncryptFinal_ex(c, ct + 4, &fin) == 1 && fin == 0 &&
                   EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1,
               KL_EINTERNAL, "AES-GCM failed");
out:
    EVP_CIPHER_CTX_free(c);
    return rc;
}

kl_rc matter_passcode_seal(EVP_PKEY *pub, const char *device_id, uint32_t passcode,
                           uint8_t out[MATTER_SEAL_LEN])
{
    kl_rc rc = KL_OK;
    EVP_PKEY *eph = NULL;
    uint8_t z[32], key[32],
        pt[4] = {(uint8_t)(passcode >> 24), (uint8_t)(passcode >> 16), (uint8_t)(passcode >> 8),
                 (uint8_t)passcode};
    size_t el = 65;
    ENSURE(pub && tpl_key_type_of(pub, NULL, 0) == HSM_KEY_EC_P256, KL_EUSAGE,
           "the key '%s' a passcode is sealed to must be EC P-256", MATTER_PASSCODE_KEY);
    ENSURE(device_id && *device_id, KL_EUSAGE, "no device id");
    eph = EVP_EC_gen("P-256");
    ENSURE_SSL(eph && EVP_PKEY_get_octet_string_param(eph, "encoded-pub-key", out, 65, &el) == 1 &&
                   el == 65 && out[0] == 0x04,
               KL_EINTERNAL, "cannot make the ephemeral key");
    TRY(seal_ecdh(eph, pub, z));
    TRY(seal_hkdf(z, device_id, key));
    TRY(seal_gcm(key, device_id, pt, out + 65));
out:
    OPENSSL_cleanse(z, sizeof z);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pt, sizeof pt);
    EVP_PKEY_free(eph);
    return rc;
}

kl_rc matter_passcode_open(hsm_ctx *h, const char *device_id, const uint8_t *sealed, size_t len,
                           uint32_t *passcode)
{
    kl_rc rc = KL_OK;
    uint8_t z[32], key[32], pt[4];
    int n = 0, fin = 0;
    EVP_CIPHER_CTX *c = NULL;
    ENSURE(sealed && len == MATTER_SEAL_LEN && sealed[0] == 0x04, KL_EINPUT,
           "sealed passcode malformed");
    ENSURE(device_id && *device_id, KL_EUSAGE, "no device id");
    TRY(hsm_ecdh(h, MATTER_PASSCODE_KEY, sealed, z));
    TRY(seal_hkdf(z, device_id, key));
    c = EVP_CIPHER_CTX_new();
    ENSURE_SSL(c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, sealed + 65) == 1 &&
                   EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)device_id,
                                     (int)strlen(device_id)) == 1 &&
                   EVP_DecryptUpdate(c, pt, &n, sealed + 77, 4) == 1 && n == 4 &&
                   EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(sealed + 81)) == 1,
               KL_EINTERNAL, "AES-GCM failed");
    ENSURE(EVP_DecryptFinal_ex(c, pt + 4, &fin) == 1, KL_EINPUT,
           "the sealed passcode does not open for device %s", device_id);
    *passcode = (uint32_t)pt[0] << 24 | (uint32_t)pt[1] << 16 | (uint32_t)pt[2] << 8 | pt[3];
out:
    ERR_clear_error();
    OPENSSL_cleanse(z, sizeof z);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pt, sizeof pt);
    EVP_CIPHER_CTX_free(c);
    return rc;
}
