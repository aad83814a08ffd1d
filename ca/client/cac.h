/* keyline: the client side of the CA protocol (front ends -> keyline-cad).
 *
 * This is all a front end (keyline-estd, keyline-provision) links of the CA: it never holds
 * the PIN, opens the token or writes the store. Requests and answers are in cap.h; the table
 * and the semantics in docs/ca-protocol.md.
 *
 * Addresses: a list of keyline-cad daemons, tried in order ("unix:/run/keyline/cad.sock",
 * a bare socket path, or "tls:HOST:PORT" for a daemon on another host, reached with mutual TLS:
 * the front end's client certificate, the daemon's certificate checked against a CA file and
 * HOST). A call goes to the daemon that answered last; when it cannot be reached, or dies
 * before answering, the call goes to the next one, except a request that changes something
 * (issue, activate ...) once it may have reached a daemon: that is never sent twice, the call
 * fails with KL_EUNAVAIL and the front end retries it as a new request (EST 503, the station
 * tries the device again), which the device claim and the store's records make safe.
 *
 * Thread safety: one cac may be used from several threads at once; it keeps a small pool of
 * connections (one per concurrent call). Errors: the daemon's own code and message (KL_EPOLICY
 * "profile 'x' is not open to role 'est'" ..., KL_EUNAVAIL when its store is unreachable),
 * KL_EUNAVAIL when no daemon of the list answers (unreachable, closed the connection, did not
 * answer in time), KL_EIO when a daemon sends something that is not an answer. */
#ifndef KL_CAC_H
#define KL_CAC_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"
#include "kl_buf.h"
#include "kl_err.h"

typedef struct cac cac;

/* Most addresses in one list. */
#define CAC_ADDR_MAX 8

typedef struct {
    /* Comma-separated addresses (above), at least one. */
    const char *addrs;
    /* Relative socket and file paths are taken from this folder (the configuration file's);
     * NULL: as given. */
    const char *base_dir;
    /* For tls: addresses (NULL otherwise): the front end's certificate (PEM, leaf then chain),
     * its key (PEM, read once by cac_open and wiped; not readable by others), and the CA
     * certificates that issued the daemons' (PEM). */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    unsigned timeout_s; /* one request's answer; 0: 30 */
} cac_cfg;

/* Parse the list, load the TLS credentials, and say HELLO (to the first daemon that answers)
 * to check it speaks this version; *roles (may be NULL) gets the caller's roles as that daemon
 * sees them, comma-separated (room for roles_cap bytes). KL_EUSAGE for a malformed list or
 * missing TLS settings, KL_EINPUT for unreadable credentials, KL_EUNAVAIL when no daemon
 * answers (nothing is left open then). */
kl_rc cac_open_cfg(cac **out, const cac_cfg *cfg, char *roles, size_t roles_cap) KL_WUR;
/* The same with one Unix socket address (or a list of them) and no TLS. */
kl_rc cac_open(cac **out, const char *addrs, unsigned timeout_s, char *roles,
               size_t roles_cap) KL_WUR;
void cac_close(cac *c);

/* Parse an address list as cac_open_cfg does, without connecting (configuration checks, tests,
 * the fuzzer): KL_OK with *n addresses and *tls 1 when one is a tls: address, or KL_EUSAGE
 * naming the bad one. */
kl_rc cac_addrs_check(const char *addrs, unsigned *n, int *tls) KL_WUR;

/* The address that answered the last call (for logs; valid while c is open). */
const char *cac_addr_current(cac *c);

/* How many calls made by the calling thread so far ended in KL_EUNAVAIL (any cac): a front end
 * that runs one job per thread compares it before and after a job to tell "the CA service
 * was unavailable, try again" from a failure of the job itself. */
unsigned long cac_thread_unavailable(void);
/* 1 when the calling thread's last call got keyline-cad's answer (a success or a refusal with
 * its status), 0 when it failed before one (no daemon, the daemon's TLS certificate refused,
 * I/O): a refusal of the request itself (KL_EAUTH about the client it names) is told from the
 * same code of the connection (KL_EAUTH: the daemon's certificate). */
int cac_thread_answered(void);

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
    /* "cert": the certificate itself (DER), when the front end has not had keyline-cad check
     * it yet: keyline-cad then checks it as cert-status does (docs/ca-protocol.md); NULL: none */
    const uint8_t *client_cert;
    size_t client_cert_len;
} cac_auth;

typedef struct {
    const char *profile;
    const uint8_t *csr;
    size_t csr_len;
    cac_auth auth;
    const char *device_id; /* NULL: none */
    int pending;
    const char *station; /* the station's name for its production order ([station] id); NULL */
} cac_issue_req;

/* Issue: *der gets the certificate (free()), serial its hex serial (65 bytes). */
kl_rc cac_issue(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len,
                char serial[65]) KL_WUR;
/* The same; device (cap bytes) also gets the device id keyline-cad bound the issuance to, ""
 * when none. */
kl_rc cac_issue_bound(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len,
                      char serial[65], char *device, size_t cap) KL_WUR;
kl_rc cac_activate(cac *c, const char *serial) KL_WUR;
kl_rc cac_abandon(cac *c, const char *serial, int reason) KL_WUR;

#endif
