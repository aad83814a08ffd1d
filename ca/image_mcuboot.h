/* keyline: the MCUboot image format writer (docs/firmware.md).
 *
 * Writes exactly what MCUboot's imgtool writes for `imgtool sign --key K.pem --version V
 * [--security-counter N] [--header-size H] [--pad-header] [--align A]` with an ECDSA P-256 key
 * and the default key-hash public key format, byte for byte up to the signature (ECDSA
 * signatures are randomised); layout from mcu-tools/mcuboot docs/design.md and
 * boot/bootutil/include/bootutil/image.h, all integers little endian:
 *
 *   header (32 bytes, then up to ih_hdr_size: 0xff with --pad-header, imgtool's erased value;
 *   else the input's own first bytes, which must be zero, as imgtool requires)
 *     u32 ih_magic 0x96f3b83d | u32 ih_load_addr 0 | u16 ih_hdr_size | u16 ih_protect_tlv_size
 *     u32 ih_img_size | u32 ih_flags 0 | u8 major u8 minor u16 revision u32 build | u32 pad 0
 *   payload (ih_img_size bytes)
 *   protected TLV area (only with a security counter): u16 0x6908 u16 total (info included)
 *     TLV SEC_CNT 0x50, 4 bytes (u32)
 *   TLV area: u16 0x6907 u16 total
 *     TLV SHA256 0x10:    SHA-256(header + padding + payload + protected TLV area)
 *     TLV KEYHASH 0x01:   SHA-256(DER SubjectPublicKeyInfo of the signing key)
 *     TLV ECDSA_SIG 0x22: DER ECDSA-Sig-Value over the same bytes as the hash (SHA-256)
 *   A TLV is u8 type, u8 0, u16 length, value (imgtool's 'BBH'; MCUboot reads u16 type).
 *
 * Nothing here opens a token or the store: the caller passes the key (a token key signs in the
 * token through its EVP_PKEY). */
#ifndef KL_IMAGE_MCUBOOT_H
#define KL_IMAGE_MCUBOOT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

#define IMG_MAGIC 0x96f3b83du
#define IMG_TLV_INFO_MAGIC 0x6907u
#define IMG_TLV_PROT_INFO_MAGIC 0x6908u
#define IMG_HEADER_SIZE 32u
#define IMG_TLV_KEYHASH 0x01u
#define IMG_TLV_SHA256 0x10u
#define IMG_TLV_ECDSA_SIG 0x22u
#define IMG_TLV_SEC_CNT 0x50u
/* Largest payload sign-image takes (a microcontroller slot is far smaller). */
#define IMG_PAYLOAD_MAX (64u * 1024u * 1024u)

typedef struct {
    uint8_t major, minor;
    uint16_t revision;
    uint32_t build;
} img_version;

/* "X.Y.Z" or "X.Y.Z+B", decimal without leading zeros (imgtool's rule), X and Y 0..255, Z
 * 0..65535, B 0..4294967295. KL_EUSAGE with the reason otherwise. */
kl_rc img_version_parse(const char *s, img_version *out) KL_WUR;
/* "1.2.3+4" (the build always shown); buf of 32 bytes is enough. */
void img_version_format(const img_version *v, char *buf, size_t n);

typedef struct {
    img_version version;
    int has_counter; /* write the protected SEC_CNT TLV */
    uint32_t counter;
    uint32_t header_size; /* IMG_HEADER_SIZE..65535 */
    int pad_header;       /* prepend header_size bytes (0xff) to the input */
    unsigned align;       /* flash write size 1|2|4|8|16|32: checked, as imgtool (see .c) */
} img_params;

typedef struct {
    uint8_t hash[32];     /* the SHA256 TLV: what the device compares and the store records */
    uint8_t key_hash[32]; /* the KEYHASH TLV */
    uint32_t img_size;    /* ih_img_size */
    size_t hashed_len;    /* header + payload + protected TLV area */
} img_result;

/* The header size and alignment in range (KL_EUSAGE naming the option). */
kl_rc img_params_check(const img_params *p) KL_WUR;
/* The input fits: at most IMG_PAYLOAD_MAX bytes and, without pad_header, starting with
 * header_size zero bytes, as imgtool requires (KL_EINPUT saying which). */
kl_rc img_input_check(const img_params *p, const uint8_t *in, size_t in_len) KL_WUR;

/* SHA-256 of the DER SubjectPublicKeyInfo of `pub` (imgtool's get_public_bytes): MCUboot's
 * key hash. KL_EINTERNAL when it does not encode. */
kl_rc img_key_hash(EVP_PKEY *pub, uint8_t out[32]) KL_WUR;

/* Build and sign an image of `in[0..in_len)`. `key` signs (in the token for a token key),
 * `pub` is its public half (from the key's certificate): the signature is verified with it
 * before anything is returned, and its hash is the KEYHASH TLV. Only EC P-256 keys.
 * *out (OPENSSL_free) gets the whole image. KL_EUSAGE for bad parameters; KL_EINPUT when the
 * input does not fit (too large; without pad_header, its first header_size bytes not zero,
 * as imgtool refuses); KL_EPOLICY for another key type; KL_EHSM when signing fails or the
 * signature does not verify. */
kl_rc img_mcuboot_sign(const img_params *p, const uint8_t *in, size_t in_len, EVP_PKEY *key,
                       EVP_PKEY *pub, uint8_t **out, size_t *out_len, img_result *res) KL_WUR;

#endif
