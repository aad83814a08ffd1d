/* Matter numbers and the SPAKE2+ verifier (kl_matter.h). */
#include "kl_matter.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <stddef.h>

int kl_matter_vid_ok(uint32_t vid)
{
    return vid >= 1 && vid <= KL_MATTER_VID_MAX;
}

int kl_matter_passcode_valid(uint64_t p)
{
    /* Matter 5.1.7.1 Invalid Passcodes */
    static const uint32_t invalid[] = {0,        11111111, 22222222, 33333333, 44444444, 55555555,
                                       66666666, 77777777, 88888888, 99999999, 12345678, 87654321};
    if (p < 1 || p > KL_MATTER_PASSCODE_MAX) {
        return 0;
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (p == invalid[i]) {
            return 0;
        }
    }
    return 1;
}

/* x = big-endian bytes mod n, or NULL */
static BIGNUM *kl_matter_mod_n(const uint8_t *b, size_t len, const BIGNUM *n, BN_CTX *ctx)
{
    BIGNUM *x = BN_bin2bn(b, (int)len, NULL);
    if (x && BN_nnmod(x, x, n, ctx) != 1) {
        BN_clear_free(x);
        x = NULL;
    }
    return x;
}

kl_rc kl_matter_verifier(uint32_t passcode, const uint8_t *salt, size_t salt_len,
                         uint32_t iterations, uint8_t out[KL_MATTER_VERIFIER_LEN])
{
    kl_rc rc = KL_OK;
    uint8_t pw[4], ws[80];
    EC_GROUP *g = NULL;
    EC_POINT *L = NULL;
    BN_CTX *ctx = NULL;
    BIGNUM *w0 = NULL, *w1 = NULL;
    ENSURE(kl_matter_passcode_valid(passcode), KL_EUSAGE, "not a valid Matter setup passcode");
    ENSURE(salt && salt_len >= 16 && salt_len <= 32, KL_EUSAGE, "salt must be 16..32 bytes");
    ENSURE(iterations >= KL_MATTER_ITER_MIN && iterations <= KL_MATTER_ITER_MAX, KL_EUSAGE,
           "iterations must be %d..%d", KL_MATTER_ITER_MIN, KL_MATTER_ITER_MAX);
    /* Matter 3.10: the passcode is the PBKDF2 input as a 4-byte little-endian integer */
    for (int i = 0; i < 4; i++) {
        pw[i] = (uint8_t)(passcode >> (8 * i));
    }
    ENSURE_SSL(PKCS5_PBKDF2_HMAC((const char *)pw, sizeof pw, salt, (int)salt_len, (int)iterations,
                                 EVP_sha256(), sizeof ws, ws) == 1,
               KL_EINTERNAL, "PBKDF2 failed");
    g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    ctx = BN_CTX_new();
    ENSURE_SSL(g && ctx, KL_EINTERNAL, "out of memory");
    const BIGNUM *n = EC_GROUP_get0_order(g);
    w0 = kl_matter_mod_n(ws, 40, n, ctx);
    w1 = kl_matter_mod_n(ws + 40, 40, n, ctx);
    L = EC_POINT_new(g);
    ENSURE_SSL(w0 && w1 && L && EC_POINT_mul(g, L, w1, NULL, NULL, ctx) == 1 &&
                   BN_bn2binpad(w0, out, KL_MATTER_W0_LEN) == KL_MATTER_W0_LEN &&
                   EC_POINT_point2oct(g, L, POINT_CONVERSION_UNCOMPRESSED, out + KL_MATTER_W0_LEN,
                                      KL_MATTER_L_LEN, ctx) == KL_MATTER_L_LEN,
               KL_EINTERNAL, "cannot compute the SPAKE2+ verifier");
out:
    OPENSSL_cleanse(pw, sizeof pw);
    OPENSSL_cleanse(ws, sizeof ws);
    BN_clear_free(w0);
    BN_clear_free(w1);
    EC_POINT_clear_free(L);
    EC_GROUP_free(g);
    BN_CTX_free(ctx);
    return rc;
}
