/* keyline: SHA-256 on hot paths.
 *
 * OpenSSL 3's one-shot SHA256() fetches the algorithm from the provider store on every call (a
 * lock and a lookup: 3.7% of keyline-estd's samples when it serves cached OCSP answers); kl_sha256
 * fetches it once per process and digests with it. */
#ifndef KL_DIGEST_H
#define KL_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

#define KL_SHA256_LEN 32

/* out = SHA-256(p[0..n)); KL_EINTERNAL (kl_errmsg set) only if OpenSSL cannot do SHA-256. */
kl_rc kl_sha256(const void *p, size_t n, uint8_t out[KL_SHA256_LEN]) KL_WUR;

#endif
