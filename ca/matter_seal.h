/* keyline: a Matter setup passcode sealed to an EC key in the HSM (issue 19,
 * `[station] matter-keep-passcode = yes`, docs/matter.md "Keeping the passcode").
 *
 * ECIES on P-256: an ephemeral key pair e, Z = x-coordinate of ECDH(e, K) with K the public half
 * of the token key MATTER_PASSCODE_KEY, k = HKDF-SHA256(salt empty, ikm Z, info
 * "keyline matter passcode v1" || device id, 32 bytes), then AES-256-GCM under k with a random
 * 12-byte IV and the device id as additional data over the passcode as 4 bytes big-endian.
 * Sealed = E (65, uncompressed) || IV (12) || ciphertext (4) || tag (16). Only the token can
 * open it (CKM_ECDH1_DERIVE with the private half, which never leaves it); keyline-cad needs
 * just the public half to seal. */
#ifndef KL_MATTER_SEAL_H
#define KL_MATTER_SEAL_H

#include <openssl/evp.h>
#include <stdint.h>

#include "kl_err.h"

/* hsm/hsm.h's handle (C11 allows the typedef again): the store side includes this header for
 * the constants without linking or seeing hsm/ */
typedef struct hsm_ctx hsm_ctx;

#define MATTER_PASSCODE_KEY "matter-passcode"
#define MATTER_SEAL_INFO "keyline matter passcode v1"
#define MATTER_SEAL_LEN (65 + 12 + 4 + 16)

/* Seal `passcode` for `device_id` to the P-256 public key `pub`. KL_EUSAGE when pub is not a
 * P-256 key; KL_EINTERNAL when OpenSSL fails. Ephemeral secrets are wiped. */
kl_rc matter_passcode_seal(EVP_PKEY *pub, const char *device_id, uint32_t passcode,
                           uint8_t out[MATTER_SEAL_LEN]) KL_WUR;

/* Open a sealed passcode with the token key (hsm_ecdh: the private half stays in the token).
 * KL_EINPUT when `sealed` is malformed or does not open for `device_id` (another device's, or
 * altered); KL_ENOTFOUND without the key. */
kl_rc matter_passcode_open(hsm_ctx *h, const char *device_id, const uint8_t *sealed, size_t len,
                           uint32_t *passcode) KL_WUR;

#endif
