/* keyline: firmware signing with code-signing keys in the token (docs/firmware.md).
 *
 * A firmware key is a CA-like object: a key made in the token by `keyline-ca ca create
 * --template firmware --issuer CA` (rotated with `ca rotate`), recorded under its label with
 * its certificate (extendedKeyUsage codeSigning, no CA). It signs images and nothing else: no
 * certificates (its certificate is no CA), no CRLs, and it is not served as a CA by EST. */
#ifndef KL_CA_IMAGE_H
#define KL_CA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "ca.h"
#include "image_mcuboot.h"

#define CA_TEMPLATE_FIRMWARE "firmware"
/* 1 when a CA record of this template is a firmware signing key (NULL: 0). */
int ca_is_firmware_template(const char *template_name);
/* 1 when the CA record `label` is a firmware key; 0 when it is not or there is none. */
int ca_is_firmware_key(ca_ctx *ca, const char *label);

typedef enum { CA_IMAGE_MCUBOOT = 0, CA_IMAGE_CMS } ca_image_format;

typedef struct {
    const char *key_label; /* a CA record of template firmware, active */
    ca_image_format format;
    img_params mcuboot; /* version, counter, header size, ... (CMS: version and counter are
                           recorded only) */
    const uint8_t *in;
    size_t in_len;
    const char *actor;
} ca_image_req;

/* The options as text, as the plain command and a ceremony take them: `version` required;
 * counter, header_size, align (decimal without leading zeros, or 0x and hex digits: no octal)
 * and format (mcuboot|cms) may be NULL for the defaults. Fills req->mcuboot and req->format and
 * checks the ranges (img_params_check). header_size, align and pad_header are MCUboot's: given
 * with cms they are refused (a detached CMS has no MCUboot header or trailer); counter and
 * version are recorded for cms too (the store row and audit entry), not signed. KL_EUSAGE
 * naming the option. */
kl_rc ca_image_req_parse(ca_image_req *req, const char *version, const char *counter,
                         const char *header_size, const char *align, int pad_header,
                         const char *format) KL_WUR;
/* 1 when `label` is in [ceremony] release-keys (labels separated by spaces or commas; "*": every
 * firmware key), or is a rotation of a listed firmware key (a firmware key with the same
 * subject: ca rotate keeps it, so a release key's successor does not sign with the plain command
 * before release-keys names it): its images are signed only through a ceremony
 * (ca_image_ceremony.h). */
int ca_image_release_key(ca_ctx *ca, const kl_conf *conf, const char *label);
/* Lower-case hex SHA-256 of p[0..n). */
void ca_image_sha256_hex(const uint8_t *p, size_t n, char out[65]);
/* The input `path` read as p[0..n): its lower-case hex SHA-256 into hex, and when `want` is not
 * NULL, that it is this SHA-256 (64 hex digits, either case): KL_EUSAGE for a malformed one,
 * KL_EPOLICY naming both when they differ. */
kl_rc ca_image_in_check(const char *path, const uint8_t *p, size_t n, const char *want,
                        char hex[65]) KL_WUR;

typedef struct {
    uint8_t hash[32]; /* MCUboot: the image's SHA256 TLV; CMS: SHA-256 of the signed file */
    uint8_t key_hash[32];
    char key_serial[48]; /* the firmware key certificate's serial (upper-case hex) */
} ca_image_result;

/* Sign `req->in` with the firmware key `req->key_label` (in the token), write the signed image
 * to `out_path` and record the signing (image hash, version, security counter, key, who) in the
 * store and its audit log, in the order that never shows an image without its record: the
 * image is written to a temporary file beside `out_path` and fsynced, then recorded, then
 * renamed into place (kl_file_stage). Refuses (KL_EPOLICY) a label that is not a firmware key,
 * a retired one, and one whose certificate or a CA above it is revoked, expired or not yet
 * valid; KL_ENOTFOUND for an unknown label; the writer's errors (image_mcuboot.h); KL_EIO when
 * the temporary file cannot be written: then nothing is recorded and no file is left, as when
 * recording fails. Only when the rename fails after the record (or `out_path` is a device or
 * FIFO, written through after the record: /dev/full) is the signing recorded with no image;
 * the message says so, with the image hash as list --images shows it. */
kl_rc ca_image_sign(ca_ctx *ca, const ca_image_req *req, const char *out_path,
                    ca_image_result *res) KL_WUR;

#endif
