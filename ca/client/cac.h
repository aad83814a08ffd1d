/* keyline: the client side of the CA protocol (front ends -> keyline-cad).
 *
 * This is all a front end (keyline-estd, keyline-provision) links of the CA: it never holds
 * the PIN, opens the token or writes the store. Requests and answers are in cap.h; the table
 * and the semantics in docs/ca-protocol.md.
 *
 * Thread safety: one cac may be used from several threads at once; it keeps a small pool of
 * connections (one per concurrent call). Errors: the daemon's own code and message (KL_EPOLICY
 * "profile 'x' is not open to role 'est'" ...), or KL_EIO when the daemon cannot be reached or
 * closes the connection, KL_ETIMEOUT when it does not answer in time. */
#ifndef KL_CAC_H
#define KL_CAC_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"
#include "kl_buf.h"
#include "kl_err.h"

typedef struct cac cac;

/* `endpoint`: "unix:PATH" or a path to keyline-cad's Unix socket. Connects once (HELLO) to
 * check the daemon speaks this version; *roles (may be NULL) gets the caller's roles as the
 * daemon sees them, comma-separated (room for roles_cap bytes). */
kl_rc cac_open(cac **out, const char *endpoint, unsigned timeout_s, char *roles,
               size_t roles_cap) KL_WUR;
void cac_close(cac *c);

/* One answer: the body and the message parsed from it (fields point into body). */
typedef struct {
    kl_buf body;
    cap_msg msg;
} cac_resp;
void cac_resp_free(cac_resp *r);

/* Send the request in `req` (built with cap_msg_begin ... cap_msg_end) and read the answer.
 * Returns the answer's status; a refusal's message becomes the thread's kl_errmsg(). On
 * KL_OK, resp holds the parsed answer (free with cac_resp_free in every case). */
kl_rc cac_call(cac *c, kl_buf *req, cac_resp *resp) KL_WUR;

/* What the front end authenticated, passed with issue and submit requests. */
typedef struct {
    const char *method;        /* "cert", "basic", "station" */
    const char *client_serial; /* client certificate serial (hex), "cert" */
    const char *user;          /* HTTP Basic user, "basic" */
} cac_auth;

typedef struct {
    const char *profile;
    const uint8_t *csr;
    size_t csr_len;
    cac_auth auth;
    const char *device_id; /* NULL: none */
    int pending;
} cac_issue_req;

/* Issue: *der gets the certificate (free()), serial its hex serial (65 bytes). */
kl_rc cac_issue(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len,
                char serial[65]) KL_WUR;
kl_rc cac_activate(cac *c, const char *serial) KL_WUR;
kl_rc cac_abandon(cac *c, const char *serial, int reason) KL_WUR;

#endif
