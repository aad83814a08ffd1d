/* keyline-provision: Matter onboarding data made on the line (issue 19, docs/matter.md).
 *
 * Per device the station picks a setup passcode, a discriminator, a PBKDF2 salt and a
 * rotating-device-id unique id, derives the SPAKE2+ verifier the device keeps (the passcode
 * never reaches the device), and renders what goes on the label: the QR code text ("MT:" +
 * base-38 of the packed onboarding payload) and the 11-digit manual pairing code (Verhoeff check
 * digit), and an SVG label with the QR code drawn by libqrencode.
 *
 * References: Matter Core Specification 1.3, 5.1.3 (QR code), 5.1.4 (manual pairing code),
 * 5.1.7 (setup passcode, invalid values), 3.9 / 3.10 (Crypto_PBKDFParameterSet, SPAKE2+:
 * w0s || w1s = PBKDF2-HMAC-SHA256(passcode as 4 bytes little-endian, salt, iterations, 80),
 * w0 = w0s mod n, w1 = w1s mod n, L = w1 * G on P-256; the verifier the device stores is
 * w0 (32 bytes) || L (65 bytes, uncompressed)). Checked against the vectors of the Matter SDK
 * (project-chip/connectedhomeip) in tests/unit/station/test_matter.c.
 *
 * No printing; errors through kl_fail. Nothing here is thread-unsafe. */
#ifndef KL_ST_MATTER_H
#define KL_ST_MATTER_H

#include <stddef.h>
#include <stdint.h>

#include "kl_conf.h"
#include "kl_err.h"
#include "kl_matter.h"

#define ST_MATTER_SALT_LEN 32 /* spec: 16..32 bytes; we use the most */
#define ST_MATTER_UID_LEN 16  /* rotating device id unique id: at least 128 bits */
#define ST_MATTER_W0_LEN KL_MATTER_W0_LEN
#define ST_MATTER_L_LEN KL_MATTER_L_LEN
#define ST_MATTER_VERIFIER_LEN KL_MATTER_VERIFIER_LEN /* w0 || L */
#define ST_MATTER_QR_MAX 32                           /* "MT:" + 19 characters + NUL */
#define ST_MATTER_MANUAL_LEN 11                       /* digits, without a NUL */

/* The largest Certification Declaration ([station] matter-cd) a device can present. A device
 * sends its CD in the AttestationResponse, inside attestation_elements = anonymous structure
 * { 1: CD (octstr), 2: attestation nonce (32 bytes), 3: timestamp (uint32), 4: firmware
 * information (optional) }, and the Matter Core specification caps that field at RESP_MAX,
 * 900 bytes (Operational Credentials cluster constants, 11.22.5.1 as the SDK cites it): a
 * commissioner (the SDK's DefaultDACVerifier) refuses larger attestation elements. In TLV, 2
 * bytes (structure and its end), 4 (CD control byte, tag, 2-byte length), 35 (nonce) and 6
 * (timestamp), 47 in all, come besides the CD: a CD above 853 bytes never fits. Tighter still,
 * a device built on the Matter SDK reads its CD into a buffer of kMaxCMSSignedCDMessage bytes
 * (credentials/CertificationDeclaration.h: 183 bytes of CMS around the largest CD content, 607
 * bytes of TLV) = 790: a larger one is never sent. */
#define ST_MATTER_RESP_MAX 900u
#define ST_MATTER_ATT_ELEMENTS_OVERHEAD 47u
#define ST_MATTER_SDK_CD_MAX 790u
#define ST_MATTER_CD_MAX                                                                           \
    (ST_MATTER_SDK_CD_MAX < ST_MATTER_RESP_MAX - ST_MATTER_ATT_ELEMENTS_OVERHEAD                   \
         ? ST_MATTER_SDK_CD_MAX                                                                    \
         : ST_MATTER_RESP_MAX - ST_MATTER_ATT_ELEMENTS_OVERHEAD)

/* QR payload discovery capabilities (5.1.3: bit 0 SoftAP, bit 1 BLE, bit 2 on IP network) */
#define ST_MATTER_DISCOVERY_BLE 0x02u

/* [station] matter* keys. */
typedef struct {
    int enabled;       /* matter = yes */
    uint16_t vid, pid; /* matter-vid, matter-pid */
    long iterations;   /* matter-iterations, default 10000 */
    char *cd_path;     /* matter-cd (malloc'd, resolved against the config's folder) */
    uint8_t *cd;       /* its content, as is (malloc'd) */
    size_t cd_len;
    char *labels;      /* labels = DIR (malloc'd, resolved), NULL: none */
    int keep_passcode; /* matter-keep-passcode = yes */
} st_matter_cfg;

/* Load the keys from [station]. With matter = yes, matter-vid, matter-pid and matter-cd are
 * required and the Certification Declaration is read (1..ST_MATTER_CD_MAX bytes: a larger one is
 * refused naming the limit and the file's size). KL_EUSAGE naming the key on a bad or missing
 * value; KL_EIO/KL_ENOTFOUND for the file. */
kl_rc st_matter_cfg_load(st_matter_cfg *cfg, const kl_conf *conf) KL_WUR;
void st_matter_cfg_free(st_matter_cfg *cfg);

/* What a device's flow keeps of its Matter step for the results line (no passcode but the one
 * the codes carry, as the label does). done = 0: no Matter step ran. */
typedef struct {
    int done;
    unsigned discriminator;
    char qr[ST_MATTER_QR_MAX];
    char manual[ST_MATTER_MANUAL_LEN + 1];
    char label[512]; /* the label file written, "" when labels is not set */
} st_matter_result;

/* One device's onboarding data. The passcode is a secret until the label is printed: wipe
 * the struct with st_matter_onboard_wipe. */
typedef struct {
    uint16_t vid, pid;
    uint32_t passcode;
    uint16_t discriminator; /* 12 bits */
    uint32_t iterations;
    uint8_t salt[ST_MATTER_SALT_LEN];
    uint8_t verifier[ST_MATTER_VERIFIER_LEN];
    uint8_t unique_id[ST_MATTER_UID_LEN];
    char qr[ST_MATTER_QR_MAX];
    char manual[ST_MATTER_MANUAL_LEN + 1];
} st_matter_onboard;

/* Fresh random onboarding data for a device of vid/pid: passcode (never an invalid one),
 * discriminator, salt, unique id, then the verifier and both codes. */
kl_rc st_matter_onboard_new(st_matter_onboard *o, uint16_t vid, uint16_t pid,
                            uint32_t iterations) KL_WUR;
void st_matter_onboard_wipe(st_matter_onboard *o);

/* The SPAKE2+ verifier w0 || L for a passcode (see above; kl_matter_verifier, shared with
 * keyline-cad). KL_EUSAGE on a bad passcode, salt length (16..32) or iteration count;
 * KL_EINTERNAL when OpenSSL fails. */
kl_rc st_matter_verifier(uint32_t passcode, const uint8_t *salt, size_t salt_len,
                         uint32_t iterations, uint8_t out[ST_MATTER_VERIFIER_LEN]) KL_WUR;

/* The QR code text "MT:" + base-38 of the 88-bit payload (version 0, VID, PID, flow,
 * discovery capabilities, discriminator, passcode, padding), NUL-terminated. */
kl_rc st_matter_qr(uint16_t vid, uint16_t pid, unsigned flow, unsigned discovery,
                   uint16_t discriminator, uint32_t passcode, char out[ST_MATTER_QR_MAX]) KL_WUR;

/* The 11-digit manual pairing code (standard flow, no VID/PID) with its Verhoeff check digit,
 * NUL-terminated. */
kl_rc st_matter_manual(uint16_t discriminator, uint32_t passcode,
                       char out[ST_MATTER_MANUAL_LEN + 1]) KL_WUR;

/* Verhoeff check digit of a string of decimal digits ('0'..'9'); '?' for other input. */
char st_matter_verhoeff(const char *digits);

/* Write the printable label DIR/<serial>.svg (characters of the serial other than
 * A-Z a-z 0-9 - . _ become '_', and then "-" and 8 hex digits of the serial's SHA-256 follow,
 * so two serials never share a file): the QR code (libqrencode, error correction M), the manual
 * code as 4-3-4 digits, VID/PID and the hardware serial in text. Atomic, mode 0640. `path`
 * (may be NULL) gets the file written. */
kl_rc st_matter_label_write(const char *dir, const char *hw_serial, const st_matter_onboard *o,
                            char *path, size_t path_cap) KL_WUR;

/* A file that carries setup passcodes (the results file, a label) is group-readable at most:
 * mode 0640, as the station creates them. `fd` open on `path` (fd < 0: stat `path`, following
 * a link). A regular file with any other bit (group write, anything for others, execute,
 * set-id) is made `mode & 0640` and *fixed gets its old mode (0 when nothing was changed; fixed
 * may be NULL); other nodes (a FIFO, a device, /dev/null) are left alone. KL_EPOLICY naming the
 * file and its mode when it cannot be changed (another user's file); KL_EIO when it cannot be
 * read. */
kl_rc st_matter_file_private(int fd, const char *path, unsigned *fixed) KL_WUR;

#endif
