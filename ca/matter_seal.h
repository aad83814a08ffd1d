/* keyline: a Matter setup passcode sealed to an EC key in the HSM (issue 19,
 * `[station] matter-keep-passcode = yes`, docs/matter.md "Keeping the passcode").
 *
 * ECIES on P-256: an ephemeral key pair e, Z = x-coordinate of ECDH(e, K) with K the public half
 * of the token key MATTER_PASSCODE_KEY, k = HKDF-SHA256(salt empty, ikm Z, info
 * "keyline matter passcode v2" || device id, 32 bytes), then AES-256-GCM under k with a random
 * 12-byte IV over the passcode as 4 bytes big-endian, with the onboarding row it is sealed for
 * as additional data (matter_seal_aad below: device id, DAC serial, discriminator, iterations,
 * salt, verifier). Each provisioning of a device gives it a new salt and verifier (and a new
 * DAC unless it resumed), so a sealed value opens only in the row it was made for: not in
 * another device's row, and not in its own device's row once that device was provisioned
 * again (an old value copied back).
 *
 * Sealed, version 2 = 0x02 || E (65, uncompressed) || IV (12) || ciphertext (4) || tag (16).
 * Version 1 (keyline before the row binding; still opened) = E || IV || ciphertext || tag, 97
 * bytes beginning with E's 0x04, info "keyline matter passcode v1" || device id and the device
 * id alone as additional data: bound to the device, not to its provisioning; what it opens to
 * is checked against the row's verifier instead (a passcode is PBKDF2'd with the row's salt).
 *
 * Only the token can open either (CKM_ECDH1_DERIVE with the private half, which never leaves
 * it); keyline-cad needs just the public half to seal. */
#ifndef KL_MATTER_SEAL_H
#define KL_MATTER_SEAL_H

#include <openssl/evp.h>
#include <stdint.h>

#include "kl_err.h"
#include "store_matter.h"

/* hsm/hsm.h's handle (C11 allows the typedef again): the store side includes this header for
 * the constants without linking or seeing hsm/ */
typedef struct hsm_ctx hsm_ctx;

#define MATTER_PASSCODE_KEY "matter-passcode"
#define MATTER_SEAL_INFO_V1 "keyline matter passcode v1"
#define MATTER_SEAL_INFO "keyline matter passcode v2"
#define MATTER_SEAL_V2 0x02
#define MATTER_SEAL_V1_LEN (65 + 12 + 4 + 16)
#define MATTER_SEAL_LEN (1 + MATTER_SEAL_V1_LEN) /* what matter_passcode_seal writes */
/* the additional data of a version 2 seal: label, NUL, then 2-byte big-endian length + bytes of
 * device id and DAC serial, discriminator (2 bytes), iterations (4), salt length (1) + salt,
 * verifier (STORE_MATTER_VERIFIER_LEN) */
#define MATTER_SEAL_AAD_MAX (sizeof MATTER_SEAL_INFO + 2 + 128 + 2 + 64 + 2 + 4 + 1 + 32 + 97)

/* Seal `passcode` for the onboarding row `row` (its device_id, cert_serial, discriminator,
 * iterations, salt and verifier: its passcode_sealed is not read) to the P-256 public key `pub`,
 * version 2. KL_EUSAGE when pub is not a P-256 key or the row's fields are out of
 * store_matter_put's ranges; KL_EINPUT when the passcode is not the one the row's verifier
 * stands for (kl_matter_verifier); KL_EINTERNAL when OpenSSL fails. Ephemeral secrets are
 * wiped. */
kl_rc matter_passcode_seal(EVP_PKEY *pub, const store_matter *row, uint32_t passcode,
                           uint8_t out[MATTER_SEAL_LEN]) KL_WUR;

/* Open the row's passcode_sealed with the token key (hsm_ecdh: the private half stays in the
 * token): version 2 for exactly this row, version 1 for the row's device id; either way the
 * passcode must be the one the row's verifier stands for (a version 1 value of an earlier
 * provisioning of the device opens, but is refused there). *version (may be NULL) gets 1 or 2.
 * KL_ENOTFOUND when the row keeps no passcode or the token has no key; KL_EINPUT when the
 * value is malformed or does not open (sealed for another device's row or for an earlier
 * provisioning of this device, or altered), with a message that says so. */
kl_rc matter_passcode_open(hsm_ctx *h, const store_matter *row, uint32_t *passcode,
                           int *version) KL_WUR;

#endif
