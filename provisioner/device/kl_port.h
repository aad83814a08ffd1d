/* keyline device library: the porting layer (docs/porting.md).
 *
 * The device engine (kl_dev.h) never touches hardware, a heap or a crypto library: everything
 * it needs from the platform comes through this table of function pointers, filled in once by
 * the firmware. Every function gets the `ctx` pointer given to kl_dev_init() back unchanged.
 *
 * Conventions:
 *  - Every function returns KL_PORT_OK (0) on success or a negative KL_PORT_E* code.
 *  - Points are uncompressed SEC1 P-256 (65 bytes, 0x04 | X | Y); scalars and coordinates are
 *    32-byte big-endian; signatures are raw r | s (64 bytes, each big-endian, zero-padded).
 *  - Input and output buffers never overlap. Output buffers are written only on success.
 *  - The identity private key never leaves the port: the engine only asks for its public key
 *    and for signatures, so it may live in a secure element. The same holds for the transport
 *    key (used for ECDH only).
 *  - The engine calls the port only from kl_dev_init/kl_dev_feed/kl_dev_poll, never
 *    concurrently for one context; the port need not be reentrant.
 *  - Functions marked OPTIONAL may be NULL. */
#ifndef KL_PORT_H
#define KL_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KL_PORT_OK = 0,
    KL_PORT_EFAIL = -1,   /* generic failure (hardware, crypto library) */
    KL_PORT_ENOENT = -2,  /* no such key / object */
    KL_PORT_ESPACE = -3,  /* output buffer or storage slot too small */
    KL_PORT_EAUTH = -4,   /* AES-GCM tag mismatch */
    KL_PORT_EINVAL = -5,  /* invalid input: point not on curve, scalar out of range */
    KL_PORT_EREFUSED = -6 /* policy veto (lock hook) */
};

/* Persistent objects the engine stores (through store_read/store_write). Certificates are one
 * object per chain position: KL_OBJ_CERT + i for i in [0, KL_DEV_MAX_CERTS), index 0 being
 * the device's own certificate; trust anchors likewise from KL_OBJ_TRUST. */
enum {
    KL_OBJ_STATE = 0x01,   /* engine state record, KL_DEV_STATE_REC_LEN bytes */
    KL_OBJ_EST_URL = 0x02, /* ASCII, no terminator */
    KL_OBJ_FWKEYS = 0x03,  /* firmware keys: 1..2 P-256 points of 65 bytes (kl_dev_image.h) */
    KL_OBJ_FWSTATE = 0x04, /* installed image: counter and version (kl_dev_image.h) */
    KL_OBJ_CERT = 0x10,    /* 0x10..0x17 */
    KL_OBJ_TRUST = 0x20    /* 0x20..0x27 */
};

typedef struct kl_port {
    /* Write len bytes to the station (serial/USB). Blocking until queued is fine; the engine
     * sends at most one frame per request. */
    int (*send)(void *ctx, const uint8_t *data, size_t len);

    /* Monotonic milliseconds (wraps at 2^32; only differences are used). OPTIONAL: without it
     * a partial frame is only dropped by the next delimiter, not by the inter-byte timeout. */
    uint32_t (*now_ms)(void *ctx);

    /* Fill buf with n bytes from a cryptographically secure RNG. */
    int (*random)(void *ctx, uint8_t *buf, size_t n);

    /* SHA-256 of data[0..len) into out. One-shot so a hardware engine can be used directly. */
    int (*sha256)(void *ctx, const uint8_t *data, size_t len, uint8_t out[32]);

    /* ---- identity key (the key the certificate is issued for) ---- */

    /* Generate a fresh P-256 key pair, persist it as THE identity key (replacing any previous
     * one, atomically: after a power cut either the old or the new key is there), and return
     * its public key. */
    int (*key_generate)(void *ctx, uint8_t pub[65]);
    /* Persist the given private scalar as the identity key (same atomicity), return its public
     * key. KL_PORT_EINVAL if priv is not in [1, n-1]. The engine wipes priv afterwards. */
    int (*key_import)(void *ctx, const uint8_t priv[32], uint8_t pub[65]);
    /* Public key of the current identity key; KL_PORT_ENOENT if there is none. */
    int (*key_public)(void *ctx, uint8_t pub[65]);
    /* ECDSA-P256 signature of a 32-byte SHA-256 digest with the identity key (raw r | s).
     * Use a fresh random or RFC 6979 deterministic k. */
    int (*key_sign)(void *ctx, const uint8_t digest[32], uint8_t sig[64]);

    /* ---- transport key (factory-fixed, only used to receive INJECTed keys) ---- */

    /* Public key of the device transport key. Must be stable across power cycles. */
    int (*transport_public)(void *ctx, uint8_t pub[65]);
    /* ECDH with the transport key: shared = X coordinate of d_transport * peer (32 bytes).
     * MUST reject a peer point that is not on the curve (KL_PORT_EINVAL). */
    int (*transport_ecdh)(void *ctx, const uint8_t peer[65], uint8_t shared[32]);

    /* ---- symmetric crypto for INJECT ---- */

    /* RFC 5869 HKDF-SHA256 (extract + expand): out[0..out_len) with out_len <= 255 * 32. */
    int (*hkdf_sha256)(void *ctx, const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
                       size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t *out,
                       size_t out_len);
    /* AES-256-GCM decrypt with a 12-byte IV and a 16-byte tag. Writes pt (ct_len bytes) only
     * when the tag verifies; otherwise KL_PORT_EAUTH and pt untouched or wiped. */
    int (*aes256gcm_decrypt)(void *ctx, const uint8_t key[32], const uint8_t iv[12],
                             const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
                             const uint8_t tag[16], uint8_t *pt);

    /* ---- persistent storage of engine objects (KL_OBJ_*) ---- */

    /* Read object id into buf[0..cap), set *len. KL_PORT_ENOENT if absent, KL_PORT_ESPACE if
     * larger than cap. */
    int (*store_read)(void *ctx, uint8_t id, uint8_t *buf, size_t cap, size_t *len);
    /* Replace object id with data[0..len) atomically (old or new content after a power cut,
     * never a mix). len == 0 deletes the object. KL_PORT_ESPACE if the slot is too small. */
    int (*store_write)(void *ctx, uint8_t id, const uint8_t *data, size_t len);

    /* OPTIONAL. Called when LOCK is accepted, before the LOCKED state is persisted: the place
     * to close the provisioning port for good, blow a fuse, enable secure boot. Return
     * KL_PORT_EREFUSED (or any error) to veto the lock: the station gets ERROR REFUSED. */
    int (*lock)(void *ctx);

    /* OPTIONAL (kl_dev_image.h needs it). Verify an ECDSA P-256 signature (raw r | s) of a
     * 32-byte SHA-256 digest under public key pub: KL_PORT_OK when it verifies, KL_PORT_EAUTH
     * when it does not, KL_PORT_EINVAL when pub is not a point on the curve. */
    int (*ecdsa_verify)(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                        const uint8_t sig[64]);
} kl_port;

#ifdef __cplusplus
}
#endif
#endif
