/* keyline: host (station) side of the line protocol's cryptography, with OpenSSL.
 * docs/line-protocol.md "INJECT" and "CHALLENGE" are the normative text; the device side is
 * provisioner/device/kl_dev.c. */
#ifndef KL_HOSTCRYPTO_H
#define KL_HOSTCRYPTO_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "kl_proto.h"

/* The INJECT request fields (all public: the private key only exists inside ct). */
typedef struct {
    uint8_t eph_pub[KL_PROTO_PUB_LEN];
    uint8_t salt[32];
    uint8_t iv[12];
    uint8_t ct[32];
    uint8_t tag[16];
} kl_inject_wrapped;

/* Encrypt the P-256 private scalar priv (32 bytes big-endian) to the device whose HELLO gave
 * transport_pub and hw_serial:
 *   eph   = fresh P-256 key pair;  Z = ECDH(eph, transport_pub)  (32-byte X coordinate)
 *   K     = HKDF-SHA256(salt = 32 random bytes, IKM = Z, info = "keyline inject v1" | serial, 32)
 *   ct|tag= AES-256-GCM(K, iv = 12 random bytes, aad = eph_pub | transport_pub, priv)
 * Z, K and the ephemeral private key are wiped before returning; priv is not touched (the
 * caller wipes it once the device has confirmed the public key).
 * Returns KL_OK, KL_EINPUT (bad point, bad serial), KL_EINTERNAL (OpenSSL). */
kl_rc kl_inject_wrap(const uint8_t transport_pub[KL_PROTO_PUB_LEN], const char *hw_serial,
                     const uint8_t priv[32], kl_inject_wrapped *out) KL_WUR;

/* Append the INJECT fields (and FORCE=1 when force) to a TLV writer. */
kl_rc kl_inject_put(const kl_inject_wrapped *wr, int force, kl_tlv_w *w) KL_WUR;

/* P-256 helpers. Points are uncompressed SEC1 (65 bytes). kl_p256_from_pub65 rejects points
 * not on the curve (KL_EINPUT); kl_p256_from_priv32 rejects scalars outside [1, n-1] and also
 * returns the public point when pub is not NULL. Returned keys are the caller's to free. */
kl_rc kl_p256_pub65(EVP_PKEY *pk, uint8_t out[KL_PROTO_PUB_LEN]) KL_WUR;
kl_rc kl_p256_from_pub65(const uint8_t pub[KL_PROTO_PUB_LEN], EVP_PKEY **out) KL_WUR;
kl_rc kl_p256_from_priv32(const uint8_t priv[32], EVP_PKEY **out, uint8_t *pub) KL_WUR;

/* Private scalar (32 bytes, big-endian, zero-padded) of an EC P-256 EVP_PKEY; the caller
 * wipes it. KL_EINPUT if pk is not a P-256 private key. */
kl_rc kl_p256_priv32(EVP_PKEY *pk, uint8_t out[32]) KL_WUR;

/* Verify a CHALLENGE response: sig_der (ECDSA-Sig-Value) over the bytes of
 * kl_proto_challenge_msg(hw_serial, nonce) with SHA-256, against pub (the public key of the
 * issued certificate: take it from the certificate, not from HELLO).
 * Returns KL_OK, KL_EAUTH (signature does not verify), KL_EINPUT (bad arguments). */
kl_rc kl_challenge_verify(EVP_PKEY *pub, const char *hw_serial, const uint8_t *nonce,
                          size_t nonce_len, const uint8_t *sig_der, size_t sig_len) KL_WUR;

#endif
