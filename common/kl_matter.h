/* The Matter Core Specification's numbers that every part of keyline checks alike: the CA's
 * policy (ca/matter.c), the store (ca/store_matter.c), keyline-cad and the station
 * (provisioner/station/st_matter.c). */
#ifndef KL_MATTER_NUMBERS_H
#define KL_MATTER_NUMBERS_H

#include <stdint.h>

/* 2.5.2: VendorID 0x0000 is the standard's, 0xFFF1..0xFFF4 the test vendors', 0xFFF5..0xFFFF
 * reserved; a commissioner refuses an onboarding payload with a reserved one. */
#define KL_MATTER_VID_MAX 0xFFF4u
/* 5.1.7.1: the setup passcode's range */
#define KL_MATTER_PASSCODE_MAX 99999998u
/* Crypto_PBKDFParameterSet: PBKDF2 iterations 1000..100000 */
#define KL_MATTER_ITER_MIN 1000
#define KL_MATTER_ITER_MAX 100000

/* Nonzero for a vendor's VendorID: 0x0001..KL_MATTER_VID_MAX. */
int kl_matter_vid_ok(uint32_t vid);
/* Nonzero for a valid setup passcode (5.1.7.1): 1..99999998 and none of 00000000, 11111111,
 * ..., 99999999, 12345678, 87654321. */
int kl_matter_passcode_valid(uint64_t passcode);

#endif
