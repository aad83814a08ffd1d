/* keyline device library: the device side of the line protocol (docs/line-protocol.md,
 * docs/porting.md).
 *
 * BearSSL style: the caller owns the context (static or on the stack, no malloc), the engine
 * does no I/O of its own. The firmware's receive loop hands every byte from the station to
 * kl_dev_feed(); responses go out through port->send from inside that call. kl_dev_poll() is
 * called now and then (e.g. every 100 ms) to drop half-received frames after a pause.
 *
 *   static kl_dev dev;
 *   static const kl_dev_info info = { "acme-sensor-3", "SN0001234", "1.4.2" };
 *   if (kl_dev_init(&dev, &my_port, &my_port_state, &info) != KL_DEV_OK) { ...refuse... }
 *   for (;;) { n = uart_read(buf, sizeof buf); kl_dev_feed(&dev, buf, n); kl_dev_poll(&dev); }
 *
 * Portable C99; depends on kl_proto.h and kl_port.h only. Not thread-safe per context. */
#ifndef KL_DEV_H
#define KL_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "kl_port.h"
#include "kl_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Build-time sizing (override with -D; defaults shown) ---------------------------------- */

/* Largest request payload accepted (advertised in HELLO). Bounds the largest certificate the
 * device can receive (payload minus ~10 bytes of TLV). KL_PROTO_MIN_PAYLOAD..MAX_PAYLOAD. */
#ifndef KL_DEV_RX_PAYLOAD
#define KL_DEV_RX_PAYLOAD KL_PROTO_MAX_PAYLOAD
#endif
/* Largest response payload: HELLO (~370 bytes worst case) and GETCSR (<= ~360) fit. */
#ifndef KL_DEV_RESP_MAX
#define KL_DEV_RESP_MAX 448
#endif
/* Chain positions (own cert + issuers) and trust anchors the device keeps. At most 8 each. */
#ifndef KL_DEV_MAX_CERTS
#define KL_DEV_MAX_CERTS 4
#endif
#ifndef KL_DEV_MAX_TRUST
#define KL_DEV_MAX_TRUST 4
#endif
/* A partial frame older than this is dropped by kl_dev_poll (needs port->now_ms). */
#ifndef KL_DEV_RX_TIMEOUT_MS
#define KL_DEV_RX_TIMEOUT_MS 1000u
#endif

#if KL_DEV_RX_PAYLOAD < KL_PROTO_MIN_PAYLOAD || KL_DEV_RX_PAYLOAD > KL_PROTO_MAX_PAYLOAD
#error "KL_DEV_RX_PAYLOAD out of range"
#endif
#if KL_DEV_MAX_CERTS < 1 || KL_DEV_MAX_CERTS > 8 || KL_DEV_MAX_TRUST < 1 || KL_DEV_MAX_TRUST > 8
#error "KL_DEV_MAX_CERTS / KL_DEV_MAX_TRUST must be 1..8"
#endif

/* Size of the persisted state record (KL_OBJ_STATE); layout in docs/porting.md. */
#define KL_DEV_STATE_REC_LEN 48u

/* ---- Return codes -------------------------------------------------------------------------- */
enum {
    KL_DEV_OK = 0,
    KL_DEV_EARG = -1,     /* NULL argument, missing port function, bad identity string */
    KL_DEV_ESTORAGE = -2, /* state record unreadable or corrupt: refuse to run (fail closed) */
    KL_DEV_EPORT = -3,    /* a port function failed (send, transport key) */
    KL_DEV_EFRAME = -4    /* kl_dev_feed: at least one frame was dropped (CRC, COBS, size) */
};

/* Identity strings. The engine keeps the pointers: they must stay valid for the context's
 * life. model: 1..64 bytes UTF-8; hw_serial: 1..64 PrintableString characters
 * (A-Z a-z 0-9 space ' ( ) + , - . / : = ?); fw_version: 0..32 bytes UTF-8. */
typedef struct {
    const char *model;
    const char *hw_serial;
    const char *fw_version;
    /* A Matter device's VendorID and ProductID (both nonzero), which its CSR names (spec 4.3,
     * 4.10); 0 and 0 for any other device. */
    uint16_t matter_vid, matter_pid;
} kl_dev_info;

/* Persistent object holding the last MATTER request's payload as received (spec 4.10); see
 * kl_port.h for the other KL_OBJ_* ids. */
#define KL_OBJ_MATTER 0x05u

/* Counters for diagnostics (never reset by the engine). */
typedef struct {
    uint32_t frames_ok;
    uint32_t frames_bad;  /* CRC, COBS, oversize, short, length */
    uint32_t retransmits; /* duplicate requests answered from the cache */
    uint32_t errors_sent;
} kl_dev_stats;

/* The context. Treat every field as private; sizeof(kl_dev) is the engine's whole RAM
 * (see docs/porting.md), plus at most ~600 bytes of stack in kl_dev_feed. */
typedef struct kl_dev {
    const kl_port *port;
    void *port_ctx;
    const kl_dev_info *info;

    /* persisted (mirror of KL_OBJ_STATE) */
    uint8_t state;      /* kl_dev_state */
    uint8_t key_origin; /* KL_KEY_ORIGIN_* */
    uint8_t ncerts;     /* chain length stored (valid from CERT_STORED) */
    uint8_t ntrust;     /* anchors stored (valid from TRUST_STORED) */
    uint8_t cert_fp[KL_PROTO_FP_LEN];

    /* volatile progress of a multi-part PUTCERT / PUTTRUST */
    uint8_t cert_mask, cert_count, trust_mask, trust_count;
    uint8_t pending_fp[KL_PROTO_FP_LEN];

    /* response cache: the last response frame, resent for a duplicate request */
    uint8_t have_last;
    uint8_t last_type;
    uint16_t last_seq;
    uint32_t last_crc;
    size_t tx_len;
    uint8_t tx[KL_PROTO_WIRE_MAX(KL_DEV_RESP_MAX)];

    /* scratch for building a response payload */
    uint8_t resp[KL_DEV_RESP_MAX];

    /* receive side */
    uint32_t rx_last_ms;
    kl_proto_dec dec;
    uint8_t rx[KL_PROTO_RAW_LEN(KL_DEV_RX_PAYLOAD)];

    kl_dev_stats stats;
} kl_dev;

/* Initialise d and load the persisted state through the port (a device that lost power mid
 * provisioning resumes where it was). port, port_ctx and info are borrowed for d's lifetime.
 * Returns KL_DEV_OK; KL_DEV_EARG if a mandatory port function is NULL or an identity string
 * is invalid; KL_DEV_ESTORAGE if the state record exists but is corrupt (the firmware must
 * not guess: a corrupt record could otherwise reopen a locked device). No output is sent. */
int kl_dev_init(kl_dev *d, const kl_port *port, void *port_ctx, const kl_dev_info *info);

/* Process bytes received from the station. Every complete request is answered (through
 * port->send) before the call returns. Returns KL_DEV_OK, KL_DEV_EFRAME if some frame was
 * dropped (informational: the station retransmits), or KL_DEV_EPORT if send failed. */
int kl_dev_feed(kl_dev *d, const uint8_t *data, size_t len);

/* Housekeeping: drops a partially received frame older than KL_DEV_RX_TIMEOUT_MS. */
void kl_dev_poll(kl_dev *d);

/* Current state (kl_dev_state). The firmware may check for KL_STATE_LOCKED at boot to decide
 * whether to start the provisioning listener at all. */
kl_dev_state kl_dev_get_state(const kl_dev *d);

/* Stored SHA-256 fingerprint of the device certificate; returns 0 (and leaves fp alone) when
 * the device has none. */
int kl_dev_get_cert_fp(const kl_dev *d, uint8_t fp[KL_PROTO_FP_LEN]);

/* ---- CSR builder (kl_csr.c), exposed for tests and for firmware that re-enrolls ---------- */

/* Build a DER PKCS#10 CSR for the identity key:
 *   subject = CN=<model>, serialNumber=<hw_serial>; SPKI = id-ecPublicKey/prime256v1 pub;
 *   attributes = empty; signatureAlgorithm = ecdsa-with-SHA256; signature by port->key_sign.
 * Writes out[0..cap), *out_len. Returns KL_DEV_OK, KL_DEV_EARG (bad strings, buffer too
 * small: KL_DEV_CSR_MAX always suffices) or KL_DEV_EPORT. */
int kl_dev_csr_build(const kl_port *port, void *port_ctx, const char *model, const char *hw_serial,
                     const uint8_t pub[65], uint8_t *out, size_t cap, size_t *out_len);
/* The same with the Matter VendorID and ProductID RDNs after serialNumber (UTF8String, four
 * upper-case hex digits; OIDs 1.3.6.1.4.1.37244.2.1 and .2.2). vid = pid = 0: as above. */
int kl_dev_csr_build_matter(const kl_port *port, void *port_ctx, const char *model,
                            const char *hw_serial, uint16_t vid, uint16_t pid,
                            const uint8_t pub[65], uint8_t *out, size_t cap, size_t *out_len);
#define KL_DEV_CSR_MAX 408u

/* DER-encode a raw r | s signature as ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
 * (RFC 3279 2.2.3) into out[0..cap). Returns KL_DEV_OK or KL_DEV_EARG (cap < 72 may fail). */
int kl_dev_sig_der(const uint8_t rs[64], uint8_t *out, size_t cap, size_t *out_len);
#define KL_DEV_SIG_DER_MAX 72u

/* Nonzero if s is 1..64 PrintableString characters (what hw_serial must be). */
int kl_dev_serial_ok(const char *s);

#ifdef __cplusplus
}
#endif
#endif
