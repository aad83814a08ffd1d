/* The Matter Core Specification's numbers that every part of keyline checks alike, and the
 * SPAKE2+ verifier it computes alike: the CA's policy (ca/matter.c), the store
 * (ca/store_matter.c), keyline-cad (ca/matter_seal.c) and the station
 * (provisioner/station/st_matter.c). */
#ifndef KL_MATTER_NUMBERS_H
#define KL_MATTER_NUMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* 2.5.2: VendorID 0x0000 is the standard's, 0xFFF1..0xFFF4 the test vendors', 0xFFF5..0xFFFF
 * reserved; a commissioner refuses an onboarding payload with a reserved one. */
#define KL_MATTER_VID_MAX 0xFFF4u
/* 5.1.7.1: the setup passcode's range */
#define KL_MATTER_PASSCODE_MAX 99999998u
/* Crypto_PBKDFParameterSet: PBKDF2 iterations 1000..100000 */
#define KL_MATTER_ITER_MIN 1000
#define KL_MATTER_ITER_MAX 100000

/* The SPAKE2+ verifier a device keeps (3.10): w0 (32 bytes) || L (65, uncompressed) */
#define KL_MATTER_W0_LEN 32
#define KL_MATTER_L_LEN 65
#define KL_MATTER_VERIFIER_LEN (KL_MATTER_W0_LEN + KL_MATTER_L_LEN)

/* Nonzero for a vendor's VendorID: 0x0001..KL_MATTER_VID_MAX. */
int kl_matter_vid_ok(uint32_t vid);
/* Nonzero for a valid setup passcode (5.1.7.1): 1..99999998 and none of 00000000, 11111111,
 * ..., 99999999, 12345678, 87654321. */
int kl_matter_passcode_valid(uint64_t passcode);

/* The SPAKE2+ verifier of a setup passcode (3.9, 3.10): w0s || w1s = PBKDF2-HMAC-SHA256(passcode
 * as 4 bytes little-endian, salt, iterations, 80 bytes), w0 = w0s mod n, L = (w1s mod n)·G on
 * P-256; out = w0 || L. The station derives what it sends the device from it, keyline-cad checks
 * a passcode it keeps against the verifier it records. KL_EUSAGE on an invalid passcode, a salt
 * not of 16..32 bytes or iterations out of range; KL_EINTERNAL when OpenSSL fails. Secrets
 * wiped. */
kl_rc kl_matter_verifier(uint32_t passcode, const uint8_t *salt, size_t salt_len,
                         uint32_t iterations, uint8_t out[KL_MATTER_VERIFIER_LEN]) KL_WUR;

#endif
