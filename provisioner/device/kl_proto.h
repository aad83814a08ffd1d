/* keyline line protocol codec (docs/line-protocol.md is the normative text).
 *
 * Shared by the station (host) and the device library, so it is portable C99: no malloc, no
 * I/O, no OpenSSL, no dependency on common/. Sans-I/O: the caller moves bytes; this file only
 * turns bytes into frames (kl_proto_feed) and frames into bytes (kl_proto_encode), and reads
 * and writes the TLV fields of a payload.
 *
 * Wire format of one frame:
 *   COBS( ver(1) | type(1) | seq(2) | flags(1) | len(2) | payload(len) | crc32(4) ) 0x00
 * Integers are big-endian. CRC-32 is IEEE 802.3 (reflected 0xEDB88320, init and final xor
 * 0xFFFFFFFF) over header and payload. Payload = a sequence of TLVs: tag(1) len(2) value.
 *
 * Return codes: functions return KL_PROTO_OK (0) or a negative KL_PROTO_E* code. No function
 * here ever writes outside the buffers it is given, whatever the input. */
#ifndef KL_PROTO_H
#define KL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Constants fixed by protocol version 1 ---------------------------------------------- */

#define KL_PROTO_VERSION 1u
#define KL_PROTO_HDR_LEN 7u /* ver type seq(2) flags len(2) */
#define KL_PROTO_CRC_LEN 4u
/* Largest payload any v1 peer may send. A device may accept less: it says so in HELLO
 * (KL_TAG_MAX_PAYLOAD) and the station must respect that. */
#define KL_PROTO_MAX_PAYLOAD 2048u
/* Smallest receive limit a v1 device may advertise (every request but PUTCERT/PUTTRUST with a
 * large certificate fits in far less; a certificate up to ~1000 bytes DER fits). */
#define KL_PROTO_MIN_PAYLOAD 1024u
/* Bytes on the wire (COBS overhead and delimiter included) for a payload of n bytes. */
#define KL_PROTO_RAW_LEN(n) (KL_PROTO_HDR_LEN + (size_t)(n) + KL_PROTO_CRC_LEN)
#define KL_PROTO_WIRE_MAX(n) (KL_PROTO_RAW_LEN(n) + KL_PROTO_RAW_LEN(n) / 254u + 2u)

/* Maximum lengths of identity strings (X.520 upper bounds: ub-common-name, ub-serial-number). */
#define KL_PROTO_MODEL_MAX 64u
#define KL_PROTO_SERIAL_MAX 64u
#define KL_PROTO_FWVER_MAX 32u
#define KL_PROTO_ERRTEXT_MAX 64u
#define KL_PROTO_URL_MAX 255u
#define KL_PROTO_PUB_LEN 65u /* uncompressed SEC1 P-256 point: 0x04 | X | Y */
#define KL_PROTO_FP_LEN 32u  /* SHA-256 */
#define KL_PROTO_NONCE_MIN 16u
#define KL_PROTO_NONCE_MAX 64u

/* MATTER field limits (spec 4.10) */
#define KL_PROTO_MATTER_CD_MAX 800u
#define KL_PROTO_MATTER_VERIFIER_LEN 97u
#define KL_PROTO_MATTER_SALT_MIN 16u
#define KL_PROTO_MATTER_SALT_MAX 32u
#define KL_PROTO_MATTER_UID_MIN 16u
#define KL_PROTO_MATTER_UID_MAX 32u
#define KL_PROTO_MATTER_ITER_MIN 1000u
#define KL_PROTO_MATTER_ITER_MAX 100000u

/* Domain-separation strings (exact bytes, no terminator on the wire; see the spec). */
#define KL_PROTO_INJECT_INFO "keyline inject v1"
#define KL_PROTO_CHALLENGE_CTX "keyline challenge v1"

/* ---- Return codes ------------------------------------------------------------------------ */

enum {
    KL_PROTO_OK = 0,
    KL_PROTO_NEED_MORE = 0,  /* kl_proto_feed: all input consumed, no frame complete */
    KL_PROTO_FRAME = 1,      /* kl_proto_feed: *frame holds a complete, CRC-checked frame */
    KL_PROTO_EOVERSIZE = -1, /* frame larger than the decoder's buffer: dropped */
    KL_PROTO_ECOBS = -2,     /* invalid COBS (truncated block): dropped */
    KL_PROTO_ECRC = -3,      /* CRC mismatch: dropped */
    KL_PROTO_ESHORT = -4,    /* shorter than header + CRC: dropped */
    KL_PROTO_ELENGTH = -5,   /* header length field disagrees with the frame: dropped */
    KL_PROTO_ESPACE = -6,    /* output buffer too small (encoder, TLV writer) */
    KL_PROTO_EFORMAT = -7,   /* malformed TLV payload */
    KL_PROTO_ENOTFOUND = -8, /* TLV tag absent */
    KL_PROTO_EARG = -9       /* invalid argument (NULL, length over a protocol limit) */
};

/* Short constant name for a KL_PROTO_* code ("crc", "oversize"...), never NULL. */
const char *kl_proto_strerror(int rc);

/* ---- Message types ----------------------------------------------------------------------- */

/* Requests are 0x01..0x7F and go station -> device; the response to request T has type
 * T | 0x80 and carries the request's seq. KL_MSG_ERROR answers any request that failed. */
enum {
    KL_MSG_HELLO = 0x01,
    KL_MSG_GENKEY = 0x02,
    KL_MSG_GETCSR = 0x03,
    KL_MSG_INJECT = 0x04,
    KL_MSG_PUTCERT = 0x05,
    KL_MSG_PUTTRUST = 0x06,
    KL_MSG_CHALLENGE = 0x07,
    KL_MSG_LOCK = 0x08,
    KL_MSG_MATTER = 0x09,   /* Matter onboarding data (spec 4.10) */
    KL_MSG_RESPONSE = 0x80, /* bit set in every response type */
    KL_MSG_ERROR = 0xFF
};
#define KL_MSG_RESP(t) ((uint8_t)((t) | KL_MSG_RESPONSE))

/* Name of a message type ("HELLO", "PUTCERT_R", "ERROR", "?"), never NULL. */
const char *kl_proto_msg_name(uint8_t type);

/* ---- TLV tags (one namespace for all messages; value formats in the spec) --------------- */
enum {
    KL_TAG_PROTO_MIN = 0x01,     /* u8 */
    KL_TAG_PROTO_MAX = 0x02,     /* u8 */
    KL_TAG_PROTO = 0x03,         /* u8, version the device speaks */
    KL_TAG_MODEL = 0x10,         /* UTF-8, 1..64 */
    KL_TAG_HW_SERIAL = 0x11,     /* PrintableString chars, 1..64 */
    KL_TAG_FW_VERSION = 0x12,    /* UTF-8, 0..32 */
    KL_TAG_STATE = 0x13,         /* u8, kl_dev_state */
    KL_TAG_TRANSPORT_PUB = 0x14, /* 65 bytes */
    KL_TAG_IDENTITY_PUB = 0x15,  /* 65 bytes, present when the device holds an identity key */
    KL_TAG_CERT_FP = 0x16,       /* 32 bytes, SHA-256 of the stored leaf certificate DER */
    KL_TAG_MAX_PAYLOAD = 0x17,   /* u16, largest request payload the device accepts */
    KL_TAG_KEY_ORIGIN = 0x18,    /* u8, KL_KEY_ORIGIN_* */
    KL_TAG_FORCE = 0x20,         /* u8 = 1: replace an existing identity key */
    KL_TAG_PUBKEY = 0x21,        /* 65 bytes, identity public key */
    KL_TAG_KEY_NEW = 0x22,       /* u8: 1 = key made by this request, 0 = existing key kept */
    KL_TAG_CSR = 0x30,           /* DER PKCS#10 */
    KL_TAG_EPH_PUB = 0x40,       /* 65 bytes */
    KL_TAG_SALT = 0x41,          /* 32 bytes */
    KL_TAG_IV = 0x42,            /* 12 bytes */
    KL_TAG_CIPHERTEXT = 0x43,    /* 32 bytes */
    KL_TAG_GCM_TAG = 0x44,       /* 16 bytes */
    KL_TAG_INDEX = 0x50,         /* u8 */
    KL_TAG_COUNT = 0x51,         /* u8 */
    KL_TAG_CERT = 0x52,          /* DER certificate */
    KL_TAG_ANCHOR = 0x53,        /* DER certificate */
    KL_TAG_EST_URL = 0x54,       /* ASCII URL, 1..255 */
    KL_TAG_FW_KEYS = 0x55,       /* firmware keys: 1..2 P-256 points, 65 bytes each */
    KL_TAG_NONCE = 0x60,         /* 16..64 bytes */
    KL_TAG_SIG = 0x61,           /* DER ECDSA-Sig-Value */
    KL_TAG_CONFIRM = 0x70,       /* 32 bytes = CERT_FP */
    /* MATTER (spec 4.10) */
    KL_TAG_MATTER_CD = 0x80,            /* 1..KL_PROTO_MATTER_CD_MAX bytes */
    KL_TAG_MATTER_DISCRIMINATOR = 0x81, /* u16, 0..4095 */
    KL_TAG_MATTER_ITERATIONS = 0x82,    /* u32, 1000..100000 */
    KL_TAG_MATTER_SALT = 0x83,          /* 16..32 bytes */
    KL_TAG_MATTER_VERIFIER = 0x84,      /* 97 bytes: w0 | L */
    KL_TAG_MATTER_UNIQUE_ID = 0x85,     /* 16..32 bytes */
    KL_TAG_ERR_CODE = 0xF0,             /* u8, KL_ERR_* */
    KL_TAG_ERR_TEXT = 0xF1              /* ASCII, 0..64, for humans and logs only */
};

/* Device states, in provisioning order (persisted by the device; reported in HELLO). */
typedef enum {
    KL_STATE_FACTORY_NEW = 0,
    KL_STATE_KEY_READY = 1,
    KL_STATE_CERT_STORED = 2,
    KL_STATE_TRUST_STORED = 3,
    KL_STATE_CHALLENGED = 4,
    KL_STATE_LOCKED = 5
} kl_dev_state;
const char *kl_proto_state_name(unsigned state);

enum { KL_KEY_ORIGIN_NONE = 0, KL_KEY_ORIGIN_DEVICE = 1, KL_KEY_ORIGIN_INJECTED = 2 };

/* Error codes carried in ERROR (KL_TAG_ERR_CODE). */
enum {
    KL_ERR_VERSION = 0x01,       /* frame/HELLO version not supported */
    KL_ERR_UNKNOWN_TYPE = 0x02,  /* request type unknown */
    KL_ERR_MALFORMED = 0x03,     /* TLV syntax, missing or bad field */
    KL_ERR_STATE = 0x04,         /* request not allowed in the current state */
    KL_ERR_LOCKED = 0x05,        /* device is locked; only HELLO and CHALLENGE are answered */
    KL_ERR_KEY_EXISTS = 0x06,    /* INJECT without FORCE while a key exists */
    KL_ERR_NO_KEY = 0x07,        /* request needs an identity key */
    KL_ERR_CRYPTO = 0x08,        /* unwrap failed (bad tag, bad point, bad scalar) */
    KL_ERR_STORAGE = 0x09,       /* persistent storage failed */
    KL_ERR_TOO_LARGE = 0x0A,     /* object larger than the device can keep */
    KL_ERR_CERT_MISMATCH = 0x0B, /* leaf certificate does not hold the identity key */
    KL_ERR_CONFIRM = 0x0C,       /* LOCK confirmation does not match the stored cert */
    KL_ERR_INTERNAL = 0x0D,      /* port or library failure */
    KL_ERR_REFUSED = 0x0E        /* device policy refused (e.g. LOCK vetoed by firmware) */
};
const char *kl_proto_err_name(unsigned code);

/* ---- CRC-32 ------------------------------------------------------------------------------ */

/* Incremental CRC-32 (IEEE): crc = kl_crc32(0, a, n); crc = kl_crc32(crc, b, m). */
uint32_t kl_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* ---- Decoder ----------------------------------------------------------------------------- */

/* A decoded frame. payload points into the decoder's buffer and stays valid until the next
 * kl_proto_feed() or kl_proto_dec_reset() on that decoder. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    uint8_t flags;
    const uint8_t *payload;
    size_t payload_len;
    uint32_t crc; /* the frame's CRC: identifies a retransmitted request */
} kl_proto_frame;

/* Caller-owned decoder state. buf/cap is caller-owned memory for one decoded frame (header +
 * payload + CRC, i.e. KL_PROTO_RAW_LEN(max payload)); the decoder never writes past it. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;    /* decoded bytes so far */
    uint8_t block; /* bytes left in the current COBS block */
    uint8_t code;  /* code byte of the current block (0 before the first) */
    uint8_t in_frame;
    int err; /* sticky error for the frame being received (reported at its delimiter) */
} kl_proto_dec;

/* Initialise; cap must be at least KL_PROTO_RAW_LEN(0). Returns KL_PROTO_EARG otherwise. */
int kl_proto_dec_init(kl_proto_dec *d, uint8_t *buf, size_t cap);
/* Drop any partial frame (inter-byte timeout, port reopened). */
void kl_proto_dec_reset(kl_proto_dec *d);
/* Nonzero while a frame is partially received. */
int kl_proto_dec_busy(const kl_proto_dec *d);

/* Feed bytes. Consumes input up to and including the first frame delimiter that ends a frame
 * (or a bad frame), stores the count in *consumed and returns:
 *   KL_PROTO_FRAME       *frame is valid (CRC and length checked; version NOT checked)
 *   KL_PROTO_NEED_MORE   all len bytes consumed, nothing complete yet
 *   KL_PROTO_E*          a frame was dropped (oversize, cobs, crc, short, length)
 * Call again with the remaining input (data + *consumed) until it is consumed. Empty frames
 * (0x00 0x00) are ignored silently: a sender may emit a lone 0x00 to resynchronise. */
int kl_proto_feed(kl_proto_dec *d, const uint8_t *data, size_t len, size_t *consumed,
                  kl_proto_frame *frame);

/* ---- Encoder ----------------------------------------------------------------------------- */

/* Encode one complete wire frame (COBS + trailing 0x00) into out[0..cap). On success *out_len
 * is the number of bytes to send. Fails with KL_PROTO_ESPACE (nothing useful in out) when cap
 * < KL_PROTO_WIRE_MAX(payload_len), KL_PROTO_EARG when payload_len > 0xFFFF. The version
 * byte is KL_PROTO_VERSION. */
int kl_proto_encode(uint8_t *out, size_t cap, size_t *out_len, uint8_t type, uint16_t seq,
                    uint8_t flags, const uint8_t *payload, size_t payload_len);

/* ---- TLV writer -------------------------------------------------------------------------- */

/* Writes TLVs into a caller buffer. Each put either appends the whole field or returns
 * KL_PROTO_ESPACE and leaves the writer unchanged. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
} kl_tlv_w;

void kl_tlv_w_init(kl_tlv_w *w, uint8_t *buf, size_t cap);
int kl_tlv_put(kl_tlv_w *w, uint8_t tag, const void *value, size_t len);
int kl_tlv_put_u8(kl_tlv_w *w, uint8_t tag, uint8_t v);
int kl_tlv_put_u16(kl_tlv_w *w, uint8_t tag, uint16_t v);
int kl_tlv_put_u32(kl_tlv_w *w, uint8_t tag, uint32_t v);
int kl_tlv_put_str(kl_tlv_w *w, uint8_t tag, const char *s); /* no terminator on the wire */
/* Reserve a field of len bytes and return a pointer to its value for the caller to fill. */
int kl_tlv_put_reserve(kl_tlv_w *w, uint8_t tag, size_t len, uint8_t **value);

/* ---- TLV reader -------------------------------------------------------------------------- */

/* Validate a whole payload: every TLV inside the bounds, no tag twice. Returns KL_PROTO_OK or
 * KL_PROTO_EFORMAT. Receivers call this once before the kl_tlv_get* calls; unknown tags are
 * allowed (ignored) for forward compatibility. */
int kl_tlv_check(const uint8_t *p, size_t len);

/* Find tag in a payload (first occurrence). Returns KL_PROTO_OK with *value and *vlen pointing
 * into p, KL_PROTO_ENOTFOUND, or KL_PROTO_EFORMAT if the walk hits a malformed TLV. */
int kl_tlv_get(const uint8_t *p, size_t len, uint8_t tag, const uint8_t **value, size_t *vlen);
/* Exact-length field: KL_PROTO_EFORMAT if the field's length is not want. */
int kl_tlv_get_fixed(const uint8_t *p, size_t len, uint8_t tag, uint8_t *out, size_t want);
/* Variable field with bounds: KL_PROTO_EFORMAT if length outside [min, max]. */
int kl_tlv_get_var(const uint8_t *p, size_t len, uint8_t tag, size_t min, size_t max,
                   const uint8_t **value, size_t *vlen);
int kl_tlv_get_u8(const uint8_t *p, size_t len, uint8_t tag, uint8_t *v);
int kl_tlv_get_u16(const uint8_t *p, size_t len, uint8_t tag, uint16_t *v);
int kl_tlv_get_u32(const uint8_t *p, size_t len, uint8_t tag, uint32_t *v);

/* Check a MATTER request payload (spec 4.10): every field present with its size and range.
 * KL_PROTO_OK, KL_PROTO_ENOTFOUND (a field missing) or KL_PROTO_EFORMAT. Station and device
 * both use it. */
int kl_proto_matter_check(const uint8_t *p, size_t len);
/* Copy a string field into out[0..cap) NUL-terminated; fails (EFORMAT) when it holds a NUL
 * byte or does not fit with its terminator. */
int kl_tlv_get_str(const uint8_t *p, size_t len, uint8_t tag, char *out, size_t cap);

/* ---- Signed-message helper --------------------------------------------------------------- */

/* Build the exact bytes a device signs for CHALLENGE (spec section "CHALLENGE"):
 *   "keyline challenge v1" | u8 len(hw_serial) | hw_serial | nonce
 * into out[0..cap). Returns KL_PROTO_OK and *out_len, KL_PROTO_EARG for bad lengths or
 * KL_PROTO_ESPACE. Station and device both use it so they cannot disagree. */
int kl_proto_challenge_msg(uint8_t *out, size_t cap, size_t *out_len, const char *hw_serial,
                           const uint8_t *nonce, size_t nonce_len);
#define KL_PROTO_CHALLENGE_MSG_MAX                                                                 \
    (sizeof(KL_PROTO_CHALLENGE_CTX) - 1u + 1u + KL_PROTO_SERIAL_MAX + KL_PROTO_NONCE_MAX)

/* Build the HKDF info for INJECT: "keyline inject v1" | hw_serial. Same return codes. */
int kl_proto_inject_info(uint8_t *out, size_t cap, size_t *out_len, const char *hw_serial);
#define KL_PROTO_INJECT_INFO_MAX (sizeof(KL_PROTO_INJECT_INFO) - 1u + KL_PROTO_SERIAL_MAX)

#ifdef __cplusplus
}
#endif
#endif
