/* keyline: sealing a Matter setup passcode to a token key (see matter_seal.h). */
#include "matter_seal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <string.h>

#include "hsm.h"
#include "kl_buf.h"
#include "kl_matter.h"
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

/* k = HKDF-SHA256(Z, info = label || device id): label names the format version */
static kl_rc seal_hkdf(const uint8_t z[32], const char *label, const char *device_id,
                       uint8_t key[32])
{
    kl_rc rc = KL_OK;
    uint8_t info[64 + 128];
    size_t ll = strlen(label), dl = strlen(device_id), klen = 32;
    EVP_PKEY_CTX *c = NULL;
    ENSURE(ll <= 64 && dl <= 128, KL_EUSAGE, "device id too long");
    /* HKDF info is bytes with its length passed along, not a C string: */
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
    memcpy(info, label, ll);
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
    memcpy(info + ll, device_id, dl);
    c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    ENSURE_SSL(c && EVP_PKEY_derive_init(c) == 1 &&
                   EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) == 1 &&
                   EVP_PKEY_CTX_set1_hkdf_key(c, z, 32) == 1 &&
                   EVP_PKEY_CTX_add1_hkdf_info(c, info, (int)(ll + dl)) == 1 &&
                   EVP_PKEY_derive(c, key, &klen) == 1 && klen == 32,
               KL_EINTERNAL, "HKDF failed");
out:
    EVP_PKEY_CTX_free(c);
    return rc;
}

/* v as n bytes big-endian */
static kl_rc seal_put_be(kl_buf *b, uint64_t v, unsigned n)
{
    uint8_t be[8];
    for (unsigned i = 0; i < n; i++) {
        be[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    }
    return kl_buf_put(b, be, n);
}

/* The additional data of a version 2 seal: what identifies this provisioning of the device
 * (matter_seal.h). Lengths ahead of the variable fields, so no two rows encode alike. */
static kl_rc seal_aad(const store_matter *r, kl_buf *aad)
{
    kl_rc rc = KL_OK;
    size_t dl = r->device_id ? strlen(r->device_id) : 0;
    size_t sl = r->cert_serial ? strlen(r->cert_serial) : 0;
    ENSURE(dl > 0 && dl <= 128 && sl > 0 && sl <= 64 && r->discriminator >= 0 &&
               r->discriminator <= 0xfff && r->iterations > 0 && r->iterations <= 0xffffffffLL &&
               r->salt && r->salt_len > 0 && r->salt_len <= 32 && r->verifier &&
               r->verifier_len == STORE_MATTER_VERIFIER_LEN,
           KL_EUSAGE, "Matter onboarding row incomplete: no passcode is sealed to it");
    TRY(kl_buf_put(aad, MATTER_SEAL_INFO, sizeof MATTER_SEAL_INFO)); /* with its NUL */
    TRY(seal_put_be(aad, dl, 2));
    TRY(kl_buf_put(aad, r->device_id, dl));
    TRY(seal_put_be(aad, sl, 2));
    TRY(kl_buf_put(aad, r->cert_serial, sl));
    TRY(seal_put_be(aad, (uint64_t)r->discriminator, 2));
    TRY(seal_put_be(aad, (uint64_t)r->iterations, 4));
    TRY(kl_buf_put_u8(aad, (uint8_t)r->salt_len));
    TRY(kl_buf_put(aad, r->salt, r->salt_len));
    TRY(kl_buf_put(aad, r->verifier, r->verifier_len));
out:
    return rc;
}

static kl_rc seal_gcm(const uint8_t key[32], const kl_buf *aad, const uint8_t pt[4],
                      uint8_t *iv_ct_tag)
{
    kl_rc rc = KL_OK;
    int n = 0, fin = 0;
    uint8_t *iv = iv_ct_tag, *ct = iv_ct_tag + 12, *tag = iv_ct_tag + 16;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    ENSURE_SSL(RAND_bytes(iv, 12) == 1, KL_EINTERNAL, "no random bytes");
    ENSURE_SSL(c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv) == 1 &&
                   EVP_EncryptUpdate(c, NULL, &n, aad->data, (int)aad->len) == 1 &&
                   EVP_EncryptUpdate(c, ct, &n, pt, 4) == 1 && n == 4 &&
                   EVP_EncryptFinal_ex(c, ct + 4, &fin) == 1 && fin == 0 &&
                   EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1,
               KL_EINTERNAL, "AES-GCM failed");
out:
    EVP_CIPHER_CTX_free(c);
    return rc;
}

/* Is `passcode` the one the row's verifier stands for? KL_EINPUT naming `what` when not: a
 * passcode is never kept, nor shown, apart from the onboarding data the device holds. */
static kl_rc seal_verifier_check(const store_matter *r, uint32_t passcode, const char *what)
{
    kl_rc rc = KL_OK;
    uint8_t v[KL_MATTER_VERIFIER_LEN];
    ENSURE(r->verifier && r->verifier_len == sizeof v && r->iterations > 0 &&
               r->iterations <= KL_MATTER_ITER_MAX,
           KL_EUSAGE, "device %s: Matter onboarding row incomplete", r->device_id);
    rc = kl_matter_verifier(passcode, r->salt, r->salt_len, (uint32_t)r->iterations, v);
    ENSURE(rc != KL_EINTERNAL, KL_EINTERNAL, "%s", kl_errmsg());
    ENSURE(rc == KL_OK && CRYPTO_memcmp(v, r->verifier, sizeof v) == 0, KL_EINPUT, "device %s: %s",
           r->device_id, what);
out:
    OPENSSL_cleanse(v, sizeof v);
    return rc;
}

kl_rc matter_passcode_seal(EVP_PKEY *pub, const store_matter *row, uint32_t passcode,
                           uint8_t out[MATTER_SEAL_LEN])
{
    kl_rc rc = KL_OK;
    EVP_PKEY *eph = NULL;
    kl_buf aad;
    uint8_t z[32], key[32],
        pt[4] = {(uint8_t)(passcode >> 24), (uint8_t)(passcode >> 16), (uint8_t)(passcode >> 8),
                 (uint8_t)passcode};
    size_t el = 65;
    kl_buf_init(&aad, MATTER_SEAL_AAD_MAX, 0);
    ENSURE(pub && tpl_key_type_of(pub, NULL, 0) == HSM_KEY_EC_P256, KL_EUSAGE,
           "the key '%s' a passcode is sealed to must be EC P-256", MATTER_PASSCODE_KEY);
    ENSURE(row, KL_EUSAGE, "no onboarding row");
    TRY(seal_aad(row, &aad));
    /* a station that sends a passcode beside another's verifier gets nothing kept */
    TRY(seal_verifier_check(row, passcode,
                            "the setup passcode is not the one the onboarding data's verifier "
                            "stands for: not kept"));
    out[0] = MATTER_SEAL_V2;
    eph = EVP_EC_gen("P-256");
    ENSURE_SSL(eph &&
                   EVP_PKEY_get_octet_string_param(eph, "encoded-pub-key", out + 1, 65, &el) == 1 &&
                   el == 65 && out[1] == 0x04,
               KL_EINTERNAL, "cannot make the ephemeral key");
    TRY(seal_ecdh(eph, pub, z));
    TRY(seal_hkdf(z, MATTER_SEAL_INFO, row->device_id, key));
    TRY(seal_gcm(key, &aad, pt, out + 66));
out:
    OPENSSL_cleanse(z, sizeof z);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pt, sizeof pt);
    kl_buf_free(&aad);
    EVP_PKEY_free(eph);
    return rc;
}

/* AES-256-GCM open of IV (12) || ciphertext (4) || tag (16) under key with aad: 1 when the tag
 * verifies, 0 when not, -1 when OpenSSL fails */
static int open_gcm(const uint8_t key[32], const uint8_t *aad, size_t aad_len,
                    const uint8_t *iv_ct_tag, uint8_t pt[4])
{
    int n = 0, fin = 0, ok = -1;
    uint8_t tag[16];
    memcpy(tag, iv_ct_tag + 16, 16);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv_ct_tag) == 1 &&
        EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1 &&
        EVP_DecryptUpdate(c, pt, &n, iv_ct_tag + 12, 4) == 1 && n == 4 &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1) {
        ok = EVP_DecryptFinal_ex(c, pt + 4, &fin) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

kl_rc matter_passcode_open(hsm_ctx *h, const store_matter *row, uint32_t *passcode, int *version)
{
    kl_rc rc = KL_OK;
    uint8_t z[32], key[32], pt[4];
    kl_buf aad;
    kl_buf_init(&aad, MATTER_SEAL_AAD_MAX, 0);
    ENSURE(row && row->device_id && *row->device_id, KL_EUSAGE, "no device id");
    const uint8_t *s = row->passcode_sealed;
    const size_t len = row->passcode_sealed_len;
    const char *dev = row->device_id;
    ENSURE(s, KL_ENOTFOUND, "device %s: no passcode kept", dev);
    const int v = len == MATTER_SEAL_LEN && s[0] == MATTER_SEAL_V2 && s[1] == 0x04 ? 2
                  : len == MATTER_SEAL_V1_LEN && s[0] == 0x04                      ? 1
                                                                                   : 0;
    ENSURE(v, KL_EINPUT, "device %s: sealed passcode malformed (%zu bytes, neither format)", dev,
           len);
    if (v == 2) {
        TRY(seal_aad(row, &aad));
    } else {
        /* version 1: the device id alone (matter_seal.h) */
        TRY(kl_buf_put(&aad, dev, strlen(dev)));
    }
    const uint8_t *e = v == 2 ? s + 1 : s;
    TRY(hsm_ecdh(h, MATTER_PASSCODE_KEY, e, z));
    TRY(seal_hkdf(z, v == 2 ? MATTER_SEAL_INFO : MATTER_SEAL_INFO_V1, dev, key));
    int ok = open_gcm(key, aad.data, aad.len, e + 65, pt);
    ENSURE_SSL(ok >= 0, KL_EINTERNAL, "AES-GCM failed");
    ENSURE(ok == 1 || v == 2, KL_EINPUT,
           "device %s: the sealed passcode (format 1) does not open: it was sealed for another "
           "device, or altered",
           dev);
    ENSURE(ok == 1, KL_EINPUT,
           "device %s: the sealed passcode does not open for this onboarding row (DAC %s): it was "
           "sealed for another device's row or for an earlier provisioning of this device "
           "(copied or replayed into the row), or altered",
           dev, row->cert_serial ? row->cert_serial : "-");
    const uint32_t pc =
        (uint32_t)pt[0] << 24 | (uint32_t)pt[1] << 16 | (uint32_t)pt[2] << 8 | pt[3];
    /* a format 1 value names only its device: one of an earlier provisioning of it opens, but
     * its passcode is not the one this row's verifier stands for */
    TRY(seal_verifier_check(row, pc,
                            "the sealed passcode opens, but is not the one this row's verifier "
                            "stands for: it was sealed for an earlier provisioning of this device "
                            "(copied or replayed into the row)"));
    *passcode = pc;
    if (version) {
        *version = v;
    }
out:
    ERR_clear_error();
    OPENSSL_cleanse(z, sizeof z);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pt, sizeof pt);
    kl_buf_free(&aad);
    return rc;
}
