/* keyline: production orders (docs/station.md "Production orders"): what a security officer
 * allows a contract manufacturer's station to make, and the signed report of what it made.
 *
 * An order is recorded in the store (store_order.h) and signed with the store's audit key (in
 * the CA token, the key of the audit checkpoints) over its canonical text, order_text(). Closing
 * an order writes a report: the order, its signature, who closed it and when, every serial
 * counted against it, signed again with the audit key and carrying the key's public half, so
 * that order_report_verify() checks it with no configuration, store or token (pin the key with
 * its SHA-256, which `keyline-ca audit verify` prints).
 *
 * Quorum: ca_order_create is the library entry point a ceremony row ("order create",
 * ca/ceremony_ops.c) calls; keyline-ca's dispatcher refuses the plain command under a quorum
 * once that row exists (docs/internals/ceremony.md). */
#ifndef KL_ORDER_H
#define KL_ORDER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ca.h"
#include "kl_buf.h"
#include "store_order.h"

#define ORDER_REPORT_MAX (64 * 1024 * 1024)
/* The report lists every serial (a line is at most 135 bytes): an order's count is bounded so
 * that its full report fits ORDER_REPORT_MAX. */
#define ORDER_COUNT_MAX 400000LL
#define ORDER_VALUE_MAX STORE_ORDER_ACTOR_MAX /* an actor: keyline-cad's peer and the operator */

typedef struct {
    const char *model;   /* the device model (HELLO, the IDevID's CN) */
    int64_t count;       /* 1 .. ORDER_COUNT_MAX */
    const char *station; /* [station] id of the station that may use it */
    const char *profile; /* keyline-cad profile, default "station" */
    time_t expires;      /* in the future */
} order_req;

/* --count: decimal digits only (strtoll alone also takes " 5" and "+5"). KL_EUSAGE otherwise;
 * the range is ca_order_create's. */
kl_rc order_count_parse(const char *s, int64_t *out) KL_WUR;
/* "YYYY-MM-DD" (the end of that day, UTC) or "YYYY-MM-DDTHH:MM:SSZ". KL_EUSAGE otherwise. */
kl_rc order_time_parse(const char *s, time_t *out) KL_WUR;
/* Station ids and profiles: 1..64 of A-Z a-z 0-9 . _ -; models: 1..64 printable ASCII, no
 * space at either end. KL_EUSAGE naming `what`. */
kl_rc order_name_check(const char *what, const char *v, int model) KL_WUR;
/* The signed text of an order: "keyline-order v1\n" then id, model, count, station, profile,
 * expires, created, created-by, one "name: value" line each. */
kl_rc order_text(const store_order *o, kl_buf *out) KL_WUR;

/* Make, sign (audit key, made on first need) and record a new order. out: the recorded order
 * (free with store_order_free). Its profile must be one keyline-cad has in the configuration
 * the CA was opened with (ca_conf_has_profile): an order for another would control nothing,
 * and the real profile, having no order, would stay uncontrolled (KL_EUSAGE). */
kl_rc ca_order_create(ca_ctx *ca, const order_req *r, const char *actor, store_order *out) KL_WUR;
/* Check an order's recorded signature with the store's audit key: KL_EPOLICY when it does not
 * verify (the row was changed outside keyline). */
kl_rc ca_order_check(ca_ctx *ca, const store_order *o) KL_WUR;
/* Close the order (if still open) and write its signed report into `report`. */
kl_rc ca_order_close(ca_ctx *ca, const char *id, const char *actor, kl_buf *report) KL_WUR;

typedef struct {
    store_order order; /* as the report states it (sig: the order's signature) */
    time_t closed;
    char closed_by[ORDER_VALUE_MAX + 1];
    size_t nserials;
    char audit_key_sha256[65];
} order_report;

/* Parse a report strictly (byte for byte what the encoder writes), check the order's
 * signature and the report's, the count (serials listed = issued <= count, each once), and the
 * audit key against pin_sha256 when given. KL_EINPUT for a malformed report, KL_EPOLICY for a
 * signature, count or pin that does not hold. out may be NULL; free with order_report_free. */
kl_rc order_report_verify(const uint8_t *p, size_t n, const char *pin_sha256,
                          order_report *out) KL_WUR;
void order_report_free(order_report *r);
/* The report's bytes from its parts (serials: the "serial:" lines); what the verifier compares
 * the input with. */
kl_rc order_report_reencode(const store_order *o, const uint8_t *spki, size_t spki_len,
                            const kl_buf *serials, const uint8_t *sig, size_t sig_len,
                            kl_buf *out) KL_WUR;

#endif
