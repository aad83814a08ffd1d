/* keyline: the CA protocol (keyline-cad <-> front ends), sans-I/O codec.
 *
 * A fixed, versioned request table (docs/ca-protocol.md). Every message is one frame:
 *   u32 length (big-endian, of what follows) | u8 version | u8 op | u8 status | fields...
 *   field = u8 tag | u32 length (big-endian) | value
 * Requests carry status 0. Each op has a table row naming the fields a request and a response
 * may carry, which are required, and their types and size limits; cap_msg_parse refuses
 * anything else (unknown op or tag, a field the op does not take, a duplicate, a missing
 * required field, a string with control bytes, an integer not 8 bytes, trailing bytes).
 * There is no request that signs caller-chosen bytes.
 *
 * Ownership: a parsed cap_msg points into the caller's body bytes (no copies); keep the body
 * alive while using it. Encoding appends to a kl_buf the caller owns. */
#ifndef KL_CAP_H
#define KL_CAP_H

#include <stddef.h>
#include <stdint.h>

#include "kl_buf.h"
#include "kl_err.h"

#define CAP_VERSION 1
/* Largest request body a daemon reads, largest response body a client reads. */
#define CAP_REQ_MAX (256u * 1024u)
#define CAP_RESP_MAX (256u * 1024u * 1024u)
/* Most fields one message may carry (a CA certificate list is the long one). */
#define CAP_FIELDS_MAX 64

typedef enum {
    CAP_OP_HELLO = 1,       /* -> version, roles of the caller */
    CAP_OP_ISSUE = 2,       /* profile + CSR + what the front end authenticated -> certificate */
    CAP_OP_ACTIVATE = 3,    /* pending certificate (issued with pending=1) -> valid */
    CAP_OP_SUBMIT = 4,      /* hold a request for an officer's approval -> request id/status */
    CAP_OP_POLL = 5,        /* request id -> status (+ certificate once approved) */
    CAP_OP_CACERTS = 6,     /* profile -> its CA certificates (issuing chain, rollovers) */
    CAP_OP_CRL = 7,         /* CA label -> its current CRL (DER) */
    CAP_OP_OCSP = 8,        /* OCSP request (DER) -> OCSP response (DER) */
    CAP_OP_CERT_STATUS = 9, /* serial or certificate -> status, device id */
    CAP_OP_CLAIM = 10,      /* claim a device for one station fixture */
    CAP_OP_RELEASE = 11,    /* release that claim */
    CAP_OP_ABANDON = 12,    /* revoke a pending certificate that never became valid */
    CAP_OP_DEVICE = 13,     /* device id -> inventory row and its certificate */
    CAP_OP_PROFILE = 14,    /* profile -> what its template asks (EST /csrattrs) */
    CAP_OP_CA_CHAIN = 15,   /* CA label -> its certificate and those above it (client trust) */
    CAP_OP_PENDING = 16,    /* profile -> how many of its requests wait for an officer */
    CAP_OP_INVENTORY = 17,  /* station: a device's inventory row (checked, audited by cad) */
    CAP_OP_KNOWN = 18,      /* station: device row + its certificate + pending certificates */
    CAP_OP_REVOKE = 19,     /* station --reprovision: revoke a certificate of its profiles */
    CAP_OP_SWEEP = 20,      /* station: claim-then-revoke pending certificates older than age */
    CAP_OP_PROOF_FAIL = 21, /* station: audit a locked device that failed CHALLENGE */
    CAP_OP_MATTER = 22,     /* station: a Matter device's onboarding data (docs/matter.md) */

    /* production orders (docs/station.md "Production orders") */
    CAP_OP_ORDER = 23,       /* station: its production order (docs/station.md) */
    CAP_OP_ORDER_CLOSE = 24, /* station: close its production order (dashboard, operator) */
    CAP_OP__END
} cap_op;

typedef enum {
    CAP_T_PROFILE = 1,      /* str: profile name */
    CAP_T_CSR = 2,          /* bytes: PKCS#10 DER */
    CAP_T_AUTH = 3,         /* str: how the front end authenticated: cert | basic | station */
    CAP_T_AUTH_SERIAL = 4,  /* str: client certificate serial (hex) */
    CAP_T_AUTH_USER = 5,    /* str: HTTP Basic user name */
    CAP_T_DEVICE_ID = 6,    /* str: hardware serial / device id */
    CAP_T_PENDING = 7,      /* u64: 1 = record as pending */
    CAP_T_SERIAL = 8,       /* str: certificate serial (hex) */
    CAP_T_REQUEST_ID = 9,   /* u64 */
    CAP_T_ISSUER = 10,      /* str: CA label */
    CAP_T_OCSP_REQ = 11,    /* bytes: OCSP request DER */
    CAP_T_CERT = 12,        /* bytes: certificate DER */
    CAP_T_CA_CERT = 13,     /* bytes: CA certificate DER (repeatable) */
    CAP_T_CRL = 14,         /* bytes: CRL DER */
    CAP_T_OCSP_RESP = 15,   /* bytes: OCSP response DER */
    CAP_T_STATUS = 16,      /* str: certificate or request status */
    CAP_T_MESSAGE = 17,     /* str: error message or reason */
    CAP_T_REASON = 18,      /* u64: CRLReason code */
    CAP_T_INSTANCE = 19,    /* str: station instance (claims) */
    CAP_T_FIXTURE = 20,     /* str: fixture name (claims) */
    CAP_T_LEASE = 21,       /* u64: seconds a claim lasts */
    CAP_T_HOLDER = 22,      /* str: who holds a refused claim */
    CAP_T_VERSION = 23,     /* u64: protocol version (HELLO) */
    CAP_T_ROLE = 24,        /* str: a role of the caller (repeatable) */
    CAP_T_RETRY_AFTER = 25, /* u64: seconds */
    CAP_T_NOT_AFTER = 26,   /* u64: Unix time */
    CAP_T_STATE = 27,       /* str: inventory state of a device */
    CAP_T_KEY_TYPE = 28,    /* str: a key type the template takes, "ec-p256" ... (repeatable) */
    CAP_T_DEVICE_CERT = 29, /* u64: 1 = the template makes device certificates */
    CAP_T_COUNT = 30,       /* u64: a number of things (held requests) */
    CAP_T_MODEL = 31,       /* str: device model (HELLO) */
    CAP_T_DETAIL = 32,      /* str: inventory detail text */
    CAP_T_PEND_CERT = 33,   /* bytes: a pending certificate DER (repeatable) */
    CAP_T_AGE = 34,         /* u64: seconds (pending sweep window) */
    CAP_T_MATTER_DISCRIMINATOR = 35, /* u64: 0..4095 */
    CAP_T_MATTER_ITERATIONS = 36,    /* u64: PBKDF2 iterations, 1000..100000 */
    CAP_T_MATTER_SALT = 37,          /* bytes: 16..32 */
    CAP_T_MATTER_VERIFIER = 38,      /* bytes: SPAKE2+ verifier w0 || L, 97 */
    CAP_T_MATTER_PASSCODE = 39,      /* u64: setup passcode, to be sealed (keep-passcode) */

    /* production orders */
    CAP_T_STATION = 40, /* str: the station's name ([station] id; production orders) */
    CAP_T_ORDER = 41,   /* str: a production order id */
    CAP_T_EXPIRES = 42, /* u64: Unix time */
    CAP_T_ISSUED = 43,  /* u64: certificates counted against an order */

    CAP_T_AUTH_CERT = 44, /* bytes: the client certificate the front end saw (DER) */
    CAP_T__END
} cap_tag;

typedef struct {
    uint8_t tag;
    uint32_t len;
    const uint8_t *val;
} cap_field;

typedef struct {
    uint8_t version;
    uint8_t op;
    uint8_t status; /* kl_rc of the answer; 0 in requests */
    size_t n;
    cap_field f[CAP_FIELDS_MAX];
} cap_msg;

/* Parse one frame body (after the 4-byte length) as a request (is_response 0) or a response.
 * KL_EINPUT with the reason for anything the table does not allow. */
kl_rc cap_msg_parse(const uint8_t *body, size_t len, int is_response, cap_msg *out) KL_WUR;

/* Encoding: cap_msg_begin writes the length placeholder and header, the put calls add fields,
 * cap_msg_end patches the length. A failed put leaves the buffer as it was. */
kl_rc cap_msg_begin(kl_buf *b, cap_op op, uint8_t status) KL_WUR;
kl_rc cap_put_bytes(kl_buf *b, cap_tag tag, const void *val, size_t len) KL_WUR;
kl_rc cap_put_str(kl_buf *b, cap_tag tag, const char *s) KL_WUR; /* NULL: nothing added */
kl_rc cap_put_u64(kl_buf *b, cap_tag tag, uint64_t v) KL_WUR;
kl_rc cap_msg_end(kl_buf *b) KL_WUR;

/* Reading a parsed message. cap_find: the idx-th field with this tag, NULL when absent. */
const cap_field *cap_find(const cap_msg *m, cap_tag tag, size_t idx);
/* Copy a string field into out (NUL-terminated). KL_ENOTFOUND when absent, KL_EINPUT when it
 * does not fit. */
kl_rc cap_get_str(const cap_msg *m, cap_tag tag, char *out, size_t cap) KL_WUR;
/* Integer field, dflt when absent. */
uint64_t cap_get_u64(const cap_msg *m, cap_tag tag, uint64_t dflt);

const char *cap_op_name(uint8_t op); /* "issue" ...; "?" for unknown */
/* 1 when the frame length prefix announces a body of at most max bytes. */
uint32_t cap_frame_len(const uint8_t hdr[4]);

#endif
