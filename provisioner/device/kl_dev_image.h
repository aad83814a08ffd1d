/* keyline device library: firmware update verification (docs/firmware.md).
 *
 * The device accepts an update image in MCUboot's format (what `keyline-ca sign-image` and
 * MCUboot's imgtool write) only when
 *   - its SHA256 TLV equals SHA-256(header + payload + protected TLV area),
 *   - its KEYHASH TLV is the hash of a firmware key provisioned at the factory (PUTTRUST
 *     FW_KEYS, docs/line-protocol.md; stored as KL_OBJ_FWKEYS), the hash MCUboot and imgtool
 *     use: SHA-256 of the key's DER SubjectPublicKeyInfo,
 *   - its ECDSA_SIG TLV (ECDSA P-256, DER) verifies under that key over the same bytes, and
 *   - its security counter (protected SEC_CNT TLV; absent counts as 0) is not below the
 *     device's (KL_OBJ_FWSTATE, raised by kl_dev_image_installed).
 *
 * Portable C99, no malloc, no I/O: the image is a pointer and a length (on a microcontroller,
 * usually the memory-mapped secondary slot), crypto and storage come from the port (kl_port.h:
 * sha256, ecdsa_verify, store_read, store_write). Stack use is well under 1 KiB. */
#ifndef KL_DEV_IMAGE_H
#define KL_DEV_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "kl_port.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Firmware keys a device holds at once: two during a key change-over (docs/firmware.md). */
#define KL_DEV_MAX_FW_KEYS 2u
/* Largest protected or unprotected TLV area accepted (bytes, info header included). Ours are
 * 12 and 151; imgtool's with every option stay far below. */
#ifndef KL_IMG_TLV_MAX
#define KL_IMG_TLV_MAX 1024u
#endif
/* Size of the KL_OBJ_FWSTATE record: u32 security counter, u8 major, u8 minor, u16 revision,
 * u32 build, all little endian (MCUboot's field order). */
#define KL_DEV_FW_STATE_LEN 12u

/* Verdicts, each a distinct reason (kl_img_strerror names them). */
enum {
    KL_IMG_OK = 0,
    KL_IMG_EARG = -1,       /* NULL argument, missing port function */
    KL_IMG_ETRUNCATED = -2, /* shorter than its header and TLV areas say */
    KL_IMG_EMAGIC = -3,     /* not an MCUboot image (header or TLV area magic) */
    KL_IMG_EFORMAT = -4,    /* inconsistent header, malformed or duplicate TLV, missing TLV */
    KL_IMG_ETLVSIZE = -5,   /* a TLV area larger than KL_IMG_TLV_MAX */
    KL_IMG_EHASH = -6,      /* SHA256 TLV does not match the image */
    KL_IMG_EKEY = -7,       /* KEYHASH names no firmware key of this device */
    KL_IMG_ESIG = -8,       /* the signature does not verify */
    KL_IMG_ECOUNTER = -9,   /* security counter below the device's */
    KL_IMG_ENOKEYS = -10,   /* the device holds no firmware key (never provisioned) */
    KL_IMG_EFLAGS = -11,    /* encrypted or compressed images are not supported */
    KL_IMG_EPORT = -12,     /* a port function failed */
    KL_IMG_ESTORAGE = -13   /* a stored record is unreadable or corrupt (fail closed) */
};
/* "hash mismatch", "unprovisioned key", ...; never NULL. */
const char *kl_img_strerror(int rc);

typedef struct {
    uint8_t major, minor;
    uint16_t revision;
    uint32_t build;
    uint32_t security_counter; /* 0 when the image has none */
    uint32_t hdr_size, img_size;
    uint8_t hash[32];     /* the verified SHA256 TLV */
    uint8_t key_hash[32]; /* the key that signed */
} kl_img_info;

/* Verify img[0..len) against the given firmware keys (uncompressed P-256 points) and counter.
 * Returns KL_IMG_OK and fills *out, or the first reason to refuse (*out then undefined). Never
 * reads outside img[0..len), whatever its content. Trailing bytes after the TLV area (a slot's
 * padding and trailer) are ignored: they are not signed. */
int kl_img_verify(const kl_port *port, void *port_ctx, const uint8_t *img, size_t len,
                  const uint8_t keys[][65], size_t nkeys, uint32_t min_counter, kl_img_info *out);

/* kl_img_verify with the device's own firmware keys (KL_OBJ_FWKEYS) and security counter
 * (KL_OBJ_FWSTATE, 0 when absent). KL_IMG_ENOKEYS when no key was provisioned. */
int kl_dev_verify_image(const kl_port *port, void *port_ctx, const uint8_t *img, size_t len,
                        kl_img_info *out);

/* Record an image as installed: KL_OBJ_FWSTATE gets its version and counter (the counter
 * never goes down: a lower one keeps the stored value). Call after kl_dev_verify_image
 * accepted it and the image was written. KL_IMG_EPORT when the store fails. */
int kl_dev_image_installed(const kl_port *port, void *port_ctx, const kl_img_info *info);

/* The installed version and counter (zeros when nothing was installed). */
int kl_dev_image_state(const kl_port *port, void *port_ctx, kl_img_info *out);

/* The firmware keys stored (KL_OBJ_FWKEYS): up to KL_DEV_MAX_FW_KEYS points into keys, their
 * number in *n (0 when none). KL_IMG_ESTORAGE when the record is corrupt. */
int kl_dev_fw_keys(const kl_port *port, void *port_ctx, uint8_t keys[][65], size_t *n);

/* MCUboot's key hash of a P-256 point: SHA-256 of its DER SubjectPublicKeyInfo. */
int kl_img_key_hash(const kl_port *port, void *port_ctx, const uint8_t pub[65], uint8_t out[32]);

#ifdef __cplusplus
}
#endif
#endif
