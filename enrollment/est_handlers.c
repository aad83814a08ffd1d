/* keyline-estd: the RFC 7030 endpoints. Every certificate comes from keyline-cad (its
 * ca_issue()); this file only authenticates the requester and turns the request into an issue
 * (or submit) request for the label's profile, saying what it authenticated. */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "ca_csr.h"
#include "est.h"
#include "kl_b64.h"
#include "kl_log.h"

#define EST_RESP_CAP (4u * 1024 * 1024)
/* seconds a /cacerts answer is reused: a CA's rollover, revocation or expiry shows there
 * within this time (enrollment under it is refused at once: keyline-cad's ca_issue reads the
 * store) */
#define EST_CACERTS_TTL 60
/* seconds a label's profile facts (keyline-cad's profile op: /csrattrs, /serverkeygen's key
 * type, whether the template makes device certificates) are reused */
#define EST_PROFILE_TTL 60

/* ---------------------------------------------------------------------------------------- */
/* Responses                                                                                */

void est_resp_init(est_resp *r)
{
    memset(r, 0, sizeof *r);
    kl_buf_init(&r->body, EST_RESP_CAP, 0);
}

void est_resp_free(est_resp *r)
{
    kl_buf_free(&r->body);
    if (r->has_fd) { /* a file body never handed to a response */
        close(r->fd);
        r->has_fd = 0;
    }
}

void est_resp_header(est_resp *r, const char *name, const char *value)
{
    if (r->n_hdr < EST_MAX_HEADERS) {
        snprintf(r->hdr[r->n_hdr].name, sizeof r->hdr[0].name, "%s", name);
        snprintf(r->hdr[r->n_hdr].value, sizeof r->hdr[0].value, "%s", value);
        r->n_hdr++;
    }
}

void est_resp_text(est_resp *r, int status, const char *msg)
{
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "text/plain; charset=utf-8");
    kl_buf_reset(&r->body);
    if (kl_buf_put_str(&r->body, msg) != KL_OK || kl_buf_put_str(&r->body, "\n") != KL_OK) {
        kl_buf_reset(&r->body);
    }
}

static void est_note(est_req *rq, const char *fmt, const char *arg)
{
    snprintf(rq->note, sizeof rq->note, fmt, arg);
}

/* Map an error (most are keyline-cad's answers) to a status. Input and policy messages go back
 * to the client (they say what is wrong with its request and hold nothing secret);
 * server-side failures do not. */
void est_resp_error(est_req *rq, est_resp *rs, kl_rc rc)
{
    const char *msg = kl_errmsg();
    est_note(rq, "%s", msg);
    switch (rc) {
    case KL_EINPUT: est_resp_text(rs, 400, msg); return;
    case KL_EPOLICY:
    case KL_EAUTH: est_resp_text(rs, 403, msg); return;
    case KL_EHSM:
    case KL_EPIN:
    case KL_ELOCKED:
        est_metrics_hsm_error(&rq->srv->metrics);
        kl_error("HSM: %s", msg);
        est_resp_text(rs, 503, "signing service temporarily unavailable");
        est_resp_header(rs, "Retry-After", "30");
        return;
    case KL_EIO:
    case KL_ETIMEOUT:
    case KL_EUNAVAIL:
        /* RFC 7030 4.2.3: "The server MUST answer with a suitable 4xx or 5xx HTTP error code
         * when a problem occurs": 503 with Retry-After (RFC 7231 7.1.3) when no keyline-cad of
         * [est] cad answers or its store is unreachable (a database restart). The client's
         * retry is a new request; nothing half-done is left for it to duplicate. */
        est_metrics_cad_error(&rq->srv->metrics);
        kl_error("keyline-cad: %s", msg);
        est_resp_text(rs, 503, "service temporarily unavailable");
        est_resp_header(rs, "Retry-After", "10");
        return;
    default:
        kl_error("internal: %s", msg);
        est_resp_text(rs, 500, "internal error");
        return;
    }
}

static void est_resp_b64(est_resp *rs, const char *content_type, const uint8_t *der, size_t len)
{
    kl_buf_reset(&rs->body);
    /* RFC 8951 3: base64 body; 64-column lines so `openssl base64 -d` reads it as is. */
    if (kl_b64_encode(der, len, 64, 0, &rs->body) != KL_OK) {
        est_resp_text(rs, 500, "internal error");
        return;
    }
    rs->status = 200;
    snprintf(rs->content_type, sizeof rs->content_type, "%s", content_type);
    est_resp_header(rs, "Content-Transfer-Encoding", "base64");
}

/* ---------------------------------------------------------------------------------------- */
/* Authentication                                                                           */

typedef enum { EST_AUTH_NONE = 0, EST_AUTH_CERT, EST_AUTH_BASIC } est_auth_kind;

typedef struct {
    est_auth_kind kind;
    X509 *cert;                        /* EST_AUTH_CERT: the verified client certificate */
    char serial[65];                   /* EST_AUTH_CERT: its serial, as keyline-cad has it */
    char device_id[EST_DEVICE_ID_MAX]; /* EST_AUTH_CERT: the device it belongs to, "" none */
    char user[128];                    /* EST_AUTH_BASIC */
    int cert_refused;                  /* a certificate was presented but is not acceptable */
    int status_deferred; /* EST_AUTH_CERT: its status is checked by keyline-cad's issue request */
    /* EST_AUTH_CERT, first request of a connection with its status deferred: the certificate
     * keyline-cad is to check in the issue request (the TLS session's, alive for the request),
     * its client-ca (for the cache), and whether device_id is only its subject serialNumber
     * (keyline-cad's record may name the device where the subject does not) */
    const gnutls_datum_t *first_der;
    int first_ca;
    int device_unknown;
    int cad_refused; /* keyline-cad's issue or submit answered KL_EAUTH (about the certificate) */
} est_auth;

static void est_auth_free(est_auth *a)
{
    X509_free(a->cert);
    memset(a, 0, sizeof *a);
}

static void est_auth_cert_accept(est_req *rq, est_auth *a, X509 *x, const char *serial,
                                 const char *subj, const char *device_id)
{
    a->kind = EST_AUTH_CERT;
    a->cert = x;
    snprintf(a->serial, sizeof a->serial, "%s", serial);
    snprintf(a->device_id, sizeof a->device_id, "%s", device_id);
    snprintf(rq->identity, sizeof rq->identity, "cert:%s", subj);
}

/* What can change while a verified client certificate is in use, asked of keyline-cad by
 * serial: its own status and dates in the store, and those of its issuing CA certificate and
 * every CA certificate above it (a revoked factory CA takes every IDevID under it with it).
 * KL_EAUTH with the reason. */
static kl_rc est_cert_status_now(est_server *s, const char *serial, time_t now)
{
    est_cert_state st;
    kl_rc rc = est_cad_cert_status(s, NULL, 0, serial, &st);
    if (rc != KL_OK) {
        return rc;
    }
    if (strcmp(st.status, "valid") != 0) {
        return kl_fail(KL_EAUTH, "certificate %s is %s", st.serial, st.status);
    }
    if (st.not_after && now >= st.not_after) {
        return kl_fail(KL_EAUTH, "certificate %s has expired", st.serial);
    }
    return KL_OK;
}

/* IEEE 802.1AR: the device a client certificate belongs to, which it stays bound to for every
 * enrollment. keyline-cad's row says which device the certificate was issued for (the station's
 * hardware serial, or the one EST bound); a row without one falls back to the certificate's
 * subject serialNumber, which the template checked at issuance. Both present and different:
 * KL_EAUTH. `out` gets "" when the certificate belongs to no device. keyline-cad binds every
 * issuance to the same device (cad_device_bind); this early look gives the client the better
 * answer. */
static kl_rc est_cert_device_id(X509 *x, const char *recorded_in, char *out, size_t outlen)
{
    kl_rc rc = KL_OK;
    char *sn = est_name_serial_number(X509_get_subject_name(x));
    const char *recorded = recorded_in && *recorded_in ? recorded_in : NULL;
    out[0] = 0;
    ENSURE(!recorded || !sn || strcmp(recorded, sn) == 0, KL_EAUTH,
           "its subject serialNumber is not the device id %s recorded for it", recorded);
    const char *dev = recorded ? recorded : sn;
    if (dev) {
        ENSURE(strlen(dev) < outlen, KL_EAUTH, "its device id is longer than %zu characters",
               outlen - 1);
        snprintf(out, outlen, "%s", dev);
    }
out:
    free(sn);
    return rc;
}

/* A client certificate refused: logged, the request goes on unauthenticated (x is freed). */
static kl_rc est_auth_cert_refuse(est_auth *a, X509 *x, const char *subj, const char *why)
{
    a->cert_refused = 1;
    if (subj) {
        kl_warn("client certificate %s refused: %s", subj, why);
    } else {
        kl_warn("client certificate refused: %s", why);
    }
    X509_free(x);
    return KL_OK;
}

/* The connection's cached verification, if it still holds: *done when it decided. */
static kl_rc est_auth_cert_cached(est_req *rq, est_auth *a, time_t now, int *done)
{
    est_conn_auth *cache = rq->conn_auth;
    *done = 0;
    if (!cache || !cache->cert) {
        return KL_OK;
    }
    if (now < cache->not_before || now >= cache->not_after ||
        !est_tls_peers_same(rq->session, &cache->peers)) {
        /* Another peer list or outside the window the verification holds for: start over. */
        est_conn_auth_reset(cache);
        return KL_OK;
    }
    *done = 1;
    if (!rq->authorization) {
        /* No credential to fall back on: the status of the certificate and of its CAs is left
         * to keyline-cad's issue (or submit) request, which checks the same (cad_client_device)
         * and answers KL_EAUTH, turned into the same 401 (est_auth_deferred_refusal). One
         * keyline-cad round trip less per keep-alive enrollment. */
        a->status_deferred = 1;
    } else {
        kl_rc rc = est_cert_status_now(rq->srv, cache->serial, now);
        if (rc == KL_EAUTH) {
            est_auth_cert_refuse(a, NULL, cache->subject, kl_errmsg());
            est_conn_auth_reset(cache); /* the next request decides afresh */
            return KL_OK;
        }
        if (rc != KL_OK) {
            return rc;
        }
    }
    X509_up_ref(cache->cert);
    est_auth_cert_accept(rq, a, cache->cert, cache->serial, cache->subject, cache->device_id);
    return KL_OK;
}

/* The TLS peer's leaf certificate, DER in *peer and parsed in *x (KL_ENOTFOUND: none). */
static kl_rc est_auth_peer_x509(est_req *rq, const gnutls_datum_t **peer, X509 **x)
{
    kl_rc rc = est_tls_peer_cert(rq->session, peer);
    if (rc == KL_OK && ca_x509_load((*peer)->data, (*peer)->size, x, NULL) != KL_OK) {
        rc = kl_fail(KL_EAUTH, "client certificate: cannot parse");
    }
    return rc;
}

/* 1 if ca issued x, by name and key identifier (X509_check_issued compares x's
 * authorityKeyIdentifier with ca's subjectKeyIdentifier, a hash of its key). That the
 * signature is ca's is keyline-cad's to check next (cert-status with the certificate: the very
 * bytes it issued under that serial, verified with the recorded issuer's key, whose identifier
 * this is). Without both identifiers the name alone says less, so the signature is checked
 * here too. */
static int est_auth_issued_by(X509 *ca, X509 *x)
{
    if (X509_check_issued(ca, x) != X509_V_OK) {
        return 0;
    }
    if (X509_get0_authority_key_id(x) && X509_get0_subject_key_id(ca)) {
        return 1;
    }
    return X509_verify(x, X509_get0_pubkey(ca)) == 1;
}

/* The client-ca certificate that issued x, by index; -1 if none did. */
static int est_auth_client_ca(const est_server *s, X509 *x)
{
    int issuer_ok = -1;
    for (int i = 0; s->client_cas && i < sk_X509_num(s->client_cas) && issuer_ok < 0; i++) {
        if (est_auth_issued_by(sk_X509_value(s->client_cas, i), x)) {
            issuer_ok = i;
        }
    }
    ERR_clear_error();
    return issuer_ok;
}

/* Cache only a full success. The window: the leaf's dates (keyline-cad checked them) and its
 * client-ca chain's (est_trust_load), so the result holds until the first of them ends. */
static void est_auth_cert_cache(est_req *rq, X509 *x, int issuer_ok, const char *serial,
                                const char *subj, const char *devid)
{
    est_server *s = rq->srv;
    est_conn_auth *cache = rq->conn_auth;
    time_t nb = 0, na = 0;
    if (!cache) {
        return;
    }
    if (!est_asn1_time_get(X509_get0_notBefore(x), &nb) ||
        !est_asn1_time_get(X509_get0_notAfter(x), &na) ||
        est_tls_peers_key(rq->session, &cache->peers) != KL_OK) {
        est_conn_auth_reset(cache);
        return;
    }
    snprintf(cache->serial, sizeof cache->serial, "%s", serial);
    cache->ca_index = issuer_ok;
    snprintf(cache->subject, sizeof cache->subject, "%s", subj);
    snprintf(cache->device_id, sizeof cache->device_id, "%s", devid);
    cache->not_before = nb > s->client_ca_nb[issuer_ok] ? nb : s->client_ca_nb[issuer_ok];
    cache->not_after = na < s->client_ca_na[issuer_ok] ? na : s->client_ca_na[issuer_ok];
    X509_up_ref(x);
    cache->cert = x;
}

/* The first request of a connection with no other credential: keyline-cad checks the
 * certificate in the issue (or submit) request itself, as cert-status by certificate would
 * have (cad_client_device), one round trip less per new TLS connection. Until then the serial
 * is the certificate's own and the device id its subject serialNumber, if any; what keyline-cad
 * answers is cached when the issuance succeeds (est_auth_first_cache). x is taken. */
static kl_rc est_auth_cert_defer(est_req *rq, est_auth *a, X509 *x, const gnutls_datum_t *peer,
                                 const char *subj, int issuer_ok)
{
    char devid[EST_DEVICE_ID_MAX] = "";
    char *hex = ca_serial_hex(X509_get0_serialNumber(x)); /* as keyline-cad's store has it */
    if (!hex) {
        X509_free(x);
        return kl_fail_ssl(KL_EINTERNAL, "client certificate serial");
    }
    kl_rc rc = est_cert_device_id(x, NULL, devid, sizeof devid);
    if (rc == KL_OK && hex[0] != '-' && strlen(hex) < sizeof a->serial) {
        est_auth_cert_accept(rq, a, x, hex, subj, devid);
        a->status_deferred = 1;
        a->first_der = peer;
        a->first_ca = issuer_ok;
        a->device_unknown = !devid[0];
    } else {
        est_auth_cert_refuse(a, x, subj, rc == KL_OK ? "not issued by this CA" : kl_errmsg());
    }
    OPENSSL_free(hex);
    return KL_OK;
}

/* After keyline-cad accepted a certificate checked in its issue request: the verification
 * cached for the connection's next requests, with the device keyline-cad bound it to. */
static void est_auth_first_cache(est_req *rq, const est_auth *a, const char *bound)
{
    if (a->kind == EST_AUTH_CERT && a->first_der) {
        est_auth_cert_cache(rq, a->cert, a->first_ca, a->serial, rq->identity + strlen("cert:"),
                            bound);
    }
}

/* The client's certificate must name one of our client-ca labels as its direct issuer, and
 * keyline-cad must find it ours (byte for byte the certificate it issued under that serial,
 * its signature verified with the recorded issuer's key), within its dates, valid, under
 * valid CAs (cert-status by certificate). That is a stronger check than a path validation
 * against the client-ca chains, which GnuTLS did here before as well: it cost a fifth of this
 * process's time per new handshake.
 *
 * With a per-connection cache (rq->conn_auth), the checks that cannot change while the TLS
 * session lasts run once per connection; the status checks run on every request (cert-status
 * by serial), so a certificate revoked mid-connection is refused on the next request. */
static kl_rc est_auth_cert(est_req *rq, est_auth *a, int may_defer)
{
    est_server *s = rq->srv;
    X509 *x = NULL;
    const gnutls_datum_t *peer = NULL;
    int done = 0;
    time_t now = time(NULL);
    if (est_tls_resumed_untrusted(rq->session, now)) {
        /* The ticket's certificates may be anyone's (EST_CLOCK_FLOOR): not an identity, and
         * nothing cached from them. Basic credentials are still considered. */
        if (rq->conn_auth) {
            est_conn_auth_reset(rq->conn_auth);
        }
        return est_tls_peer_cert(rq->session, &peer) == KL_OK
                   ? est_auth_cert_refuse(a, NULL, NULL,
                                          "a resumed TLS session while the clock reads before "
                                          "2020: its ticket key is not trusted (full handshake "
                                          "needed)")
                   : KL_OK;
    }
    kl_rc rc = est_auth_cert_cached(rq, a, now, &done);
    if (done || rc != KL_OK) {
        return rc;
    }
    rc = est_auth_peer_x509(rq, &peer, &x);
    if (rc == KL_ENOTFOUND) {
        return KL_OK;
    }
    if (rc != KL_OK) {
        return est_auth_cert_refuse(a, x, NULL, kl_errmsg());
    }
    char subj[160];
    est_name_oneline(X509_get_subject_name(x), subj, sizeof subj);
    int issuer_ok = est_auth_client_ca(s, x);
    if (issuer_ok < 0) {
        return est_auth_cert_refuse(a, x, subj, "not issued by a client-ca");
    }
    /* A server or OCSP-signer certificate of ours is not a client identity. */
    if (X509_check_purpose(x, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
        return est_auth_cert_refuse(a, x, subj, "not for TLS client authentication");
    }
    if (may_defer && !rq->authorization) {
        return est_auth_cert_defer(rq, a, x, peer, subj, issuer_ok);
    }
    char devid[EST_DEVICE_ID_MAX] = "";
    est_cert_state st;
    /* keyline-cad: ours (the very certificate recorded under its serial, signed by the CA
     * that row names), valid, within its dates, and every CA above it valid */
    rc = est_cad_cert_status(s, peer->data, peer->size, NULL, &st);
    if (rc == KL_OK && strcmp(st.status, "valid") != 0) {
        rc = kl_fail(KL_EAUTH, "certificate %s is %s", st.serial, st.status);
    }
    if (rc == KL_OK) {
        rc = est_cert_device_id(x, st.device_id, devid, sizeof devid);
    }
    if (rc == KL_EAUTH) {
        return est_auth_cert_refuse(a, x, subj, kl_errmsg());
    }
    if (rc != KL_OK) {
        X509_free(x);
        return rc;
    }
    est_auth_cert_cache(rq, x, issuer_ok, st.serial, subj, devid);
    est_auth_cert_accept(rq, a, x, st.serial, subj, devid);
    return KL_OK;
}

static kl_rc est_auth_basic(est_req *rq, est_auth *a)
{
    est_server *s = rq->srv;
    /* the very header verified earlier on this connection (keep-alive): no second hash */
    if (est_basic_cached(rq->conn_auth, rq->authorization, a->user, sizeof a->user)) {
        a->kind = EST_AUTH_BASIC;
        snprintf(rq->identity, sizeof rq->identity, "basic:%s", a->user);
        kl_debug("basic:%s: the credential verified earlier on this connection", a->user);
        return KL_OK;
    }
    kl_buf user, pass;
    kl_buf_init(&user, 256, 0);
    kl_buf_init(&pass, 512, 1);
    kl_rc rc = kl_basic_parse(rq->authorization, &user, &pass);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
        goto out;
    }
    if (rc != KL_OK) {
        est_note(rq, "%s", kl_errmsg());
        rc = KL_OK;
        goto out;
    }
    pthread_rwlock_rdlock(&s->ht_lock);
    unsigned long gen = est_basic_generation();
    kl_rc v = s->htpasswd ? kl_htpasswd_verify(s->htpasswd, (const char *)user.data,
                                               (const char *)pass.data)
                          : kl_fail(KL_EAUTH, "Basic authentication is not configured");
    pthread_rwlock_unlock(&s->ht_lock);
    if (v == KL_OK) {
        est_basic_remember(rq->conn_auth, rq->authorization, (const char *)user.data, gen);
        a->kind = EST_AUTH_BASIC;
        snprintf(a->user, sizeof a->user, "%s", (const char *)user.data);
        snprintf(rq->identity, sizeof rq->identity, "basic:%s", a->user);
    } else {
        /* log the user name (not secret), never the password */
        snprintf(rq->identity, sizeof rq->identity, "basic-failed:%.100s", (const char *)user.data);
        est_note(rq, "%s", kl_errmsg());
    }
out:
    kl_buf_free(&user);
    kl_buf_free(&pass);
    return rc;
}

/* A TLS client certificate wins; HTTP Basic is the fall-back for bootstrap clients.
 * KL_OK with a->kind NONE when nothing acceptable was presented. may_defer: the request goes
 * to keyline-cad's issue or submit, which may check the certificate itself. */
static kl_rc est_authenticate(est_req *rq, est_auth *a, int may_defer)
{
    memset(a, 0, sizeof *a);
    kl_rc rc = est_auth_cert(rq, a, may_defer);
    if (rc != KL_OK || a->kind != EST_AUTH_NONE) {
        return rc;
    }
    return est_auth_basic(rq, a);
}

static void est_resp_unauthorized(est_req *rq, est_resp *rs, const est_auth *a)
{
    if (!rq->note[0]) {
        est_note(rq, "%s", a->cert_refused ? "client certificate refused" : "no credentials");
    }
    /* RFC 7030 3.2.3 / RFC 9110 11.6.1: a 401 carries WWW-Authenticate. */
    est_resp_text(rs, 401, "authentication required");
    est_resp_header(rs, "WWW-Authenticate", "Basic realm=\"keyline-est\", charset=\"UTF-8\"");
}

/* keyline-cad refused a certificate whose status was left to it (a->status_deferred): the
 * answer est_auth_cert_cached would have given, and the connection's cache dropped. 1 when
 * that is what rc was. */
static int est_auth_deferred_refusal(est_req *rq, est_resp *rs, est_auth *a, kl_rc rc)
{
    if (rc != KL_EAUTH || a->kind != EST_AUTH_CERT || !a->status_deferred || !a->cad_refused) {
        return 0;
    }
    kl_warn("client certificate %s refused: %s", rq->identity + strlen("cert:"), kl_errmsg());
    if (rq->conn_auth) {
        est_conn_auth_reset(rq->conn_auth);
    }
    a->cert_refused = 1;
    est_note(rq, "%s", "client certificate refused");
    est_resp_unauthorized(rq, rs, a);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Endpoints                                                                                */

static est_label_rt *est_label_runtime(est_server *s, const est_label *l)
{
    return &s->label_rt[l - s->cfg.labels];
}

/* The label's profile facts, asked of keyline-cad again once older than EST_PROFILE_TTL. */
static kl_rc est_label_profile(est_server *s, const est_label *l, est_label_facts *out)
{
    est_label_rt *rt = est_label_runtime(s, l);
    time_t now = time(NULL);
    kl_rc rc = KL_OK;
    pthread_mutex_lock(&rt->lock);
    if (!rt->profile_at || now - rt->profile_at >= EST_PROFILE_TTL) {
        est_profile_info pi;
        rc = est_cad_profile(s, l->profile, &pi);
        if (rc == KL_OK) {
            est_label_facts *f = &rt->facts;
            memset(f, 0, sizeof *f);
            snprintf(f->issuer, sizeof f->issuer, "%s", pi.issuer);
            f->attrs.key_nid = f->keygen_nid = pi.key_nid;
            f->attrs.rsa_bits = f->keygen_bits = pi.rsa_bits;
            /* Announce serialNumber whenever the template takes it (802.1AR devices carry their
             * hardware serial there; the LDevID keeps the IDevID's): such a template makes
             * device certificates, issued only with the device id. */
            f->attrs.want_serial = f->device_cert = pi.device_cert;
            rt->profile_at = now;
        }
    }
    if (rc == KL_OK) {
        *out = rt->facts;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

/* RFC 7030 4.1: /cacerts, "the EST server MUST NOT require client authentication". */
static void est_cacerts(est_req *rq, est_resp *rs, const est_label *l)
{
    est_server *s = rq->srv;
    est_label_rt *rt = est_label_runtime(s, l);
    STACK_OF(X509) *chain = NULL;
    kl_buf der;
    kl_buf_init(&der, EST_RESP_CAP, 0);
    kl_rc rc = KL_OK;
    time_t now = time(NULL);

    pthread_mutex_lock(&rt->lock);
    if (rt->cacerts_b64.len && now - rt->cacerts_at < EST_CACERTS_TTL) {
        kl_buf_reset(&rs->body);
        rc = kl_buf_put(&rs->body, rt->cacerts_b64.data, rt->cacerts_b64.len);
        pthread_mutex_unlock(&rt->lock);
        if (rc == KL_OK) {
            rs->status = 200;
            snprintf(rs->content_type, sizeof rs->content_type, "application/pkcs7-mime");
            est_resp_header(rs, "Content-Transfer-Encoding", "base64");
        } else {
            est_resp_error(rq, rs, rc);
        }
        goto out;
    }
    pthread_mutex_unlock(&rt->lock);

    /* RFC 7030 4.1.3: "the current root CA certificate ... and any additional certificates the
     * client would need to build a chain", plus the rollover (NewWithOld, OldWithNew) certs;
     * never a CA that is revoked, expired or not yet valid (itself or above it): a client
     * takes what it gets here as trust anchors. keyline-cad's cacerts op picks them. */
    TRY(est_cad_certs(s, CAP_OP_CACERTS, l->profile, &chain));
    TRY(est_p7_certs_only(chain, &der));
    est_resp_b64(rs, "application/pkcs7-mime", der.data, der.len);
    if (rs->status == 200) {
        pthread_mutex_lock(&rt->lock);
        kl_buf_reset(&rt->cacerts_b64);
        if (kl_buf_put(&rt->cacerts_b64, rs->body.data, rs->body.len) == KL_OK) {
            rt->cacerts_at = now;
        } else {
            kl_buf_reset(&rt->cacerts_b64);
        }
        pthread_mutex_unlock(&rt->lock);
    }
out:
    if (rc != KL_OK) {
        est_resp_error(rq, rs, rc);
    }
    sk_X509_pop_free(chain, X509_free);
    kl_buf_free(&der);
}

/* RFC 7030 4.5: /csrattrs. Anonymous like /cacerts (RFC 7030 4.5.1 allows it). What it
 * announces is what keyline-cad's profile op says the template enforces. */
static void est_csrattrs(est_req *rq, est_resp *rs, const est_label *l)
{
    est_server *s = rq->srv;
    est_label_facts pf;
    kl_buf der;
    kl_buf_init(&der, 4096, 0);
    kl_rc rc = est_label_profile(s, l, &pf);
    if (rc == KL_OK) {
        est_csrattrs_in in = pf.attrs;
        in.want_challenge = s->cfg.channel_binding != EST_CB_OFF;
        rc = est_csrattrs_encode(&in, &der);
    }
    if (rc == KL_OK) {
        est_resp_b64(rs, "application/csrattrs", der.data, der.len);
    } else {
        est_resp_error(rq, rs, rc);
    }
    kl_buf_free(&der);
}

static double est_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What the front end authenticated, as keyline-cad takes it: the client certificate's serial
 * (keyline-cad binds the request to that certificate's device) or the Basic user name. */
static cac_issue_req est_cad_req(const est_label *l, const est_auth *a, const uint8_t *csr,
                                 size_t csr_len, const char *device_id)
{
    cac_issue_req r = {
        .profile = l->profile,
        .csr = csr,
        .csr_len = csr_len,
        .auth =
            {
                .method = a->kind == EST_AUTH_CERT ? "cert" : "basic",
                .client_serial = a->kind == EST_AUTH_CERT ? a->serial : NULL,
                .user = a->kind == EST_AUTH_BASIC ? a->user : NULL,
                .client_cert = a->first_der ? a->first_der->data : NULL,
                .client_cert_len = a->first_der ? a->first_der->size : 0,
            },
        /* a certificate's device comes from keyline-cad's own record; a Basic client's CSR
         * names it (keyline-cad reads it from there) */
        .device_id = a->kind == EST_AUTH_CERT && device_id && *device_id ? device_id : NULL,
    };
    return r;
}

/* *cert (malloc'd, *cert_len bytes): the certificate's DER as keyline-cad sent it. */
static kl_rc est_issue(est_req *rq, const est_label *l, est_auth *a, const uint8_t *csr,
                       size_t csr_len, const char *device_id, uint8_t **cert, size_t *cert_len)
{
    cac_issue_req r = est_cad_req(l, a, csr, csr_len, device_id);
    char serial[65], bound[EST_DEVICE_ID_MAX];
    double t0 = est_now();
    kl_rc rc = est_cad_issue(rq->srv, &r, cert, cert_len, serial, bound, sizeof bound);
    a->cad_refused = rc == KL_EAUTH;
    if (rc == KL_OK) {
        est_auth_first_cache(rq, a, bound);
        est_metrics_issue(&rq->srv->metrics, est_now() - t0);
        est_note(rq, "issued serial %s", serial);
    }
    return rc;
}

/* The server-generated key for /serverkeygen: software key of the template's type, a CSR for
 * it carrying the client's subject (and requested extensions, which the template filters). */
static kl_rc est_keygen_csr(const est_label_facts *rt, X509_REQ *client, EVP_PKEY **key,
                            uint8_t **der, size_t *der_len)
{
    kl_rc rc = KL_OK;
    X509_REQ *req = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    *key = NULL;
    *der = NULL;
    if (rt->keygen_nid == NID_rsaEncryption) {
        *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA",
                                 (size_t)(rt->keygen_bits ? rt->keygen_bits : 3072));
    } else {
        *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC",
                                 rt->keygen_nid == NID_secp384r1 ? "P-384" : "P-256");
    }
    ENSURE_SSL(*key, KL_EINTERNAL, "key generation");
    ENSURE_SSL((req = X509_REQ_new()) != NULL, KL_EINTERNAL, "X509_REQ_new");
    ENSURE_SSL(X509_REQ_set_version(req, 0) &&
                   X509_REQ_set_subject_name(req, X509_REQ_get_subject_name(client)) &&
                   X509_REQ_set_pubkey(req, *key),
               KL_EINTERNAL, "CSR build");
    exts = X509_REQ_get_extensions(client);
    if (exts && sk_X509_EXTENSION_num(exts) > 0) {
        ENSURE_SSL(X509_REQ_add_extensions(req, exts), KL_EINTERNAL, "CSR extensions");
    }
    ENSURE_SSL(X509_REQ_sign(req, *key, EVP_sha256()) > 0, KL_EINTERNAL, "CSR sign");
    int n = i2d_X509_REQ(req, der);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "i2d_X509_REQ");
    *der_len = (size_t)n;
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    if (rc != KL_OK) {
        EVP_PKEY_free(*key);
        *key = NULL;
    }
    return rc;
}

/* RFC 7030 4.2.2: the CSR's subjectAltName (from its extensionRequest) must be identical to
 * the renewed certificate's: both absent, or the same GeneralNames, byte for byte. */
static kl_rc est_san_same(X509_REQ *req, X509 *cert)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    const ASN1_OCTET_STRING *csr_san = NULL, *cert_san = NULL;
    int n = 0;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
            csr_san = X509_EXTENSION_get_data(e);
            n++;
        }
    }
    ENSURE(n <= 1, KL_EINPUT, "CSR requests subjectAltName more than once");
    int ci = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
    if (ci >= 0) {
        cert_san = X509_EXTENSION_get_data(X509_get_ext(cert, ci));
    }
    ENSURE((!csr_san && !cert_san) ||
               (csr_san && cert_san && ASN1_STRING_cmp(csr_san, cert_san) == 0),
           KL_EPOLICY, "CSR subjectAltName differs from the certificate being renewed (%s)",
           !csr_san    ? "the certificate has one, the CSR none"
           : !cert_san ? "the CSR has one, the certificate none"
                       : "different names");
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/* A certs-only PKCS#7 (DER) holding one certificate: what the enrollment endpoints return
 * (RFC 7030 4.2.3: "containing only the certificate that was issued"). */
static kl_rc est_p7_one(X509 *cert, kl_buf *p7)
{
    STACK_OF(X509) *one = sk_X509_new_null();
    if (!one || !sk_X509_push(one, cert)) {
        sk_X509_free(one);
        return kl_fail_ssl(KL_EINTERNAL, "sk_X509_push");
    }
    kl_rc rc = est_p7_certs_only(one, p7);
    sk_X509_free(one);
    return rc;
}

/* RFC 7030 4.2.3: "If the server responds with 202, the client MUST retry the same request
 * after the delay given in Retry-After" - here while an officer decides (`keyline-ca request
 * approve|reject`). keyline-cad keys the request by profile and CSR: the retry finds it and
 * gets the certificate once approved, 403 once rejected. A CSR that policy would refuse is
 * refused now, not held. */
static kl_rc est_hold(est_req *rq, est_resp *rs, const est_label *l, est_auth *a, const kl_buf *der,
                      const char *device_id)
{
    est_server *s = rq->srv;
    kl_rc rc = KL_OK;
    est_held got;
    memset(&got, 0, sizeof got);
    cac_issue_req r = est_cad_req(l, a, der->data, der->len, device_id);
    rc = est_cad_submit(s, &r, &got);
    a->cad_refused = rc == KL_EAUTH;
    TRY(rc);
    char msg[700];
    if (strcmp(got.status, "pending") == 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", s->cfg.retry_after);
        snprintf(msg, sizeof msg, "request %lld is waiting for approval; retry the same request",
                 got.id);
        est_resp_text(rs, 202, msg);
        est_resp_header(rs, "Retry-After", ra);
        snprintf(rq->note, sizeof rq->note, "held as request %lld", got.id);
        goto out;
    }
    if (strcmp(got.status, "rejected") == 0) {
        snprintf(msg, sizeof msg, "request %lld was rejected: %.500s", got.id, got.message);
        est_resp_text(rs, 403, msg);
        snprintf(rq->note, sizeof rq->note, "request %lld rejected", got.id);
        goto out;
    }
    /* approved: keyline-cad hands out the certificate the officer issued while it is valid */
    ENSURE(strcmp(got.status, "approved") == 0 && got.cert, KL_EIO,
           "keyline-cad: request %lld is '%s'", got.id, got.status);
    kl_buf p7;
    kl_buf_init(&p7, EST_RESP_CAP, 0);
    rc = est_p7_one(got.cert, &p7);
    if (rc == KL_OK) {
        char *hex = ca_serial_hex(X509_get0_serialNumber(got.cert));
        est_resp_b64(rs, "application/pkcs7-mime; smime-type=certs-only", p7.data, p7.len);
        snprintf(rq->note, sizeof rq->note, "request %lld: serial %s", got.id, hex ? hex : "?");
        OPENSSL_free(hex);
    }
    kl_buf_free(&p7);
out:
    est_held_free(&got);
    return rc;
}

/* A CSR's subject serialNumber for a message: printable ASCII, at most 64 characters. */
static void est_sn_print(const char *sn, char *out, size_t outlen)
{
    size_t i = 0;
    for (; i < 64 && i + 1 < outlen && sn[i]; i++) {
        out[i] = sn[i] >= 0x20 && sn[i] < 0x7f ? sn[i] : '?';
    }
    out[i] = 0;
}

/* The device id an enrollment is issued for, and recorded with (*out, NULL for none; caller
 * frees). IEEE 802.1AR 8.6: the device's hardware serial is the subject serialNumber.
 *
 * A client authenticated by certificate stays bound to the device its chain started with (the
 * IDevID's hardware serial, carried on by every LDevID issued under it): the CSR must name
 * exactly that device, and a device certificate is never issued without it, so no certificate
 * that names no device can come out of EST and be used to claim another device's id. A
 * certificate that belongs to no device (issued elsewhere without one) enrolls for no device
 * certificate and names no device.
 *
 * An HTTP Basic client is a bootstrap credential, not a device: its CSR names the device, which
 * the certificate is then bound to; a device certificate needs one. KL_EPOLICY (403) with the
 * reason otherwise.
 *
 * keyline-cad enforces the same binding for every issuance (cad_device_bind, from its own
 * record of the client certificate); this early check is here for its better answers (which
 * device, what to put where). */
static kl_rc est_device_id_bind(const est_label_facts *pf, const est_auth *a, X509_REQ *req,
                                char **out)
{
    kl_rc rc = KL_OK;
    char *sn = est_name_serial_number(X509_REQ_get_subject_name(req));
    char shown[80] = "";
    int device_cert = pf->device_cert;
    *out = NULL;
    if (sn) {
        est_sn_print(sn, shown, sizeof shown);
    }
    if (a->kind != EST_AUTH_CERT) {
        ENSURE(sn || !device_cert, KL_EPOLICY,
               "this profile issues device certificates: the CSR subject needs the device's "
               "serialNumber (its hardware serial)");
        *out = sn;
        sn = NULL;
        goto out;
    }
    if (a->device_unknown) {
        /* keyline-cad's record may name the device where the certificate's subject does not:
         * its issue request binds it (cad_device_bind) */
        goto out;
    }
    const char *bound = a->device_id;
    ENSURE(bound[0] || (!sn && !device_cert), KL_EPOLICY,
           "this client certificate has no device id (none recorded for it, no serialNumber in "
           "its subject): it cannot enroll %s",
           sn ? "for a device serialNumber" : "for a device certificate");
    if (bound[0]) {
        ENSURE(sn || !device_cert, KL_EPOLICY,
               "CSR subject has no serialNumber: this client certificate belongs to device %s; "
               "put %s in the subject serialNumber",
               bound, bound);
        ENSURE(!sn || strcmp(sn, bound) == 0, KL_EPOLICY,
               "CSR subject serialNumber %s is not %s, the device this client certificate "
               "belongs to",
               shown, bound);
        *out = strdup(bound);
        ENSURE(*out, KL_EINTERNAL, "out of memory");
    }
out:
    free(sn);
    return rc;
}

/* The request body as a CSR: base64 DER (RFC 8951), all of it. KL_EINPUT (400). Its signature
 * (proof of possession) is keyline-cad's to check, with the rest of the request, before it
 * issues or holds anything: a bad one comes back as 400 from there. Checking it here as well
 * cost a fifth of this process's time per keep-alive enrollment. */
static kl_rc est_csr_parse(est_req *rq, kl_buf *der, X509_REQ **out)
{
    kl_rc rc = est_body_decode(rq->body, rq->body_len, rq->cte, der);
    if (rc != KL_OK) {
        return kl_wrap(KL_EINPUT, "request body is not base64 DER");
    }
    /* the EC fast path (ca_csr.c): OpenSSL 3's decoder costs more */
    if (ca_req_parse(der->data, der->len, out) != KL_OK) {
        return kl_fail_ssl(KL_EINPUT, "request body is not one PKCS#10 CSR");
    }
    return KL_OK;
}

/* RFC 7030 4.2.1 content type, authentication, and 4.2.2 renewal by certificate holders only.
 * *answered when rs already holds the refusal. */
static kl_rc est_enroll_admit(est_req *rq, est_resp *rs, est_op op, est_auth *a, int *answered)
{
    kl_rc rc = KL_OK;
    *answered = 1;
    /* RFC 7030 4.2.1: "the HTTP content-type of "application/pkcs10" is used" */
    if (!est_media_type_is(rq->content_type, "application/pkcs10")) {
        est_note(rq, "content type %s", rq->content_type ? rq->content_type : "(none)");
        est_resp_text(rs, 415, "expected Content-Type: application/pkcs10");
        goto out;
    }
    TRY(est_authenticate(rq, a, op != EST_OP_SERVERKEYGEN));
    if (a->kind == EST_AUTH_NONE) {
        est_resp_unauthorized(rq, rs, a);
        goto out;
    }
    /* RFC 7030 4.2.2: "the EST server MUST verify ... the client's certificate"; renewal is for
     * holders of a certificate, not for password clients. */
    if (op == EST_OP_SIMPLEREENROLL && a->kind != EST_AUTH_CERT) {
        est_note(rq, "%s", "reenroll needs a client certificate");
        est_resp_text(rs, 403, "simplereenroll needs the TLS client certificate being renewed");
        goto out;
    }
    *answered = 0;
out:
    return rc;
}

/* The CSR parsed into der and *req, with its channel binding and, for renewal, its names. */
static kl_rc est_enroll_csr(est_req *rq, est_op op, const est_auth *a, kl_buf *der, X509_REQ **req)
{
    kl_rc rc = KL_OK;
    TRY(est_csr_parse(rq, der, req));
    if (op == EST_OP_SERVERKEYGEN) {
        /* The client's CSR only carries the subject, but it must still be intact; keyline-cad
         * never sees it (it gets the CSR of the key made here), so its signature is checked
         * here. */
        ca_csr *c = NULL;
        rc = ca_csr_load(der->data, der->len, &c);
        ca_csr_free(c);
        TRY(rc);
    }
    /* RFC 7030 3.5: channel binding through challengePassword */
    TRY(est_channel_binding_check(rq->srv->cfg.channel_binding, *req, rq->session));
    if (op == EST_OP_SIMPLEREENROLL) {
        /* RFC 7030 4.2.2: "The request Subject field and SubjectAltName extension MUST be
         * identical to the corresponding fields in the certificate being renewed or rekeyed." */
        ENSURE(X509_NAME_cmp(X509_REQ_get_subject_name(*req), X509_get_subject_name(a->cert)) == 0,
               KL_EPOLICY, "CSR subject differs from the certificate being renewed");
        TRY(est_san_same(*req, a->cert));
    }
out:
    return rc;
}

/* key as PKCS#8 DER, then base64 into b64 (sensitive). */
static kl_rc est_pkcs8_b64(EVP_PKEY *key, kl_buf *b64)
{
    kl_rc rc = KL_OK;
    kl_buf k8;
    kl_buf_init(&k8, 64 * 1024, 1);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    uint8_t *p8der = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n > 0) {
        rc = kl_buf_put(&k8, p8der, (size_t)n);
        OPENSSL_clear_free(p8der, (size_t)n);
    } else {
        rc = kl_fail_ssl(KL_EINTERNAL, "PKCS#8 encoding");
    }
    if (rc == KL_OK) {
        rc = kl_b64_encode(k8.data, k8.len, 64, 0, b64);
    }
    kl_buf_free(&k8);
    return rc;
}

/* RFC 7030 4.4.2: multipart/mixed, private key part application/pkcs8 first. */
static kl_rc est_keygen_resp(est_resp *rs, EVP_PKEY *key, const kl_buf *p7)
{
    kl_rc rc = KL_OK;
    kl_buf k8b64, p7b64;
    kl_buf_init(&k8b64, 128 * 1024, 1);
    kl_buf_init(&p7b64, EST_RESP_CAP, 0);
    TRY(est_pkcs8_b64(key, &k8b64));
    TRY(kl_b64_encode(p7->data, p7->len, 64, 0, &p7b64));
    est_part parts[2] = {
        {"application/pkcs8", k8b64.data, k8b64.len},
        {"application/pkcs7-mime; smime-type=certs-only", p7b64.data, p7b64.len},
    };
    kl_buf_free(&rs->body);
    kl_buf_init(&rs->body, EST_RESP_CAP, 1); /* wiped when MHD is done with it */
    TRY(est_multipart_build(parts, 2, &rs->body));
    rs->status = 200;
    snprintf(rs->content_type, sizeof rs->content_type,
             "multipart/mixed; boundary=" EST_MULTIPART_BOUNDARY);
out:
    kl_buf_free(&k8b64);
    kl_buf_free(&p7b64);
    return rc;
}

/* The issued certificate (and for serverkeygen its key) as the response. */
static kl_rc est_enroll_resp(est_resp *rs, est_op op, const uint8_t *cert, size_t cert_len,
                             EVP_PKEY *key)
{
    kl_rc rc = KL_OK;
    kl_buf p7;
    kl_buf_init(&p7, EST_RESP_CAP, 0);
    TRY(est_p7_certs_der(&cert, &cert_len, 1, &p7));
    if (op != EST_OP_SERVERKEYGEN) {
        /* RFC 7030 4.2.3: certs-only, "containing only the certificate that was issued" */
        est_resp_b64(rs, "application/pkcs7-mime; smime-type=certs-only", p7.data, p7.len);
    } else {
        TRY(est_keygen_resp(rs, key, &p7));
    }
out:
    kl_buf_free(&p7);
    return rc;
}

/* simpleenroll, simplereenroll, serverkeygen share authentication and CSR checks. */
static void est_enroll(est_req *rq, est_resp *rs, const est_label *l, est_op op)
{
    est_server *s = rq->srv;
    est_auth a;
    kl_buf der;
    kl_buf_init(&der, s->cfg.max_body, 0);
    X509_REQ *req = NULL;
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    EVP_PKEY *key = NULL;
    uint8_t *kg_csr = NULL;
    size_t kg_csr_len = 0;
    char *device_id = NULL;
    est_label_facts pf;
    kl_rc rc = KL_OK;
    int answered = 0;
    memset(&a, 0, sizeof a);

    TRY(est_enroll_admit(rq, rs, op, &a, &answered));
    if (answered) {
        goto done;
    }
    TRY(est_enroll_csr(rq, op, &a, &der, &req));
    TRY(est_label_profile(s, l, &pf));
    TRY(est_device_id_bind(&pf, &a, req, &device_id));
    if (op == EST_OP_SIMPLEENROLL && l->approval_manual) {
        TRY(est_hold(rq, rs, l, &a, &der, device_id));
        goto done;
    }
    if (op == EST_OP_SERVERKEYGEN) {
        TRY(est_keygen_csr(&pf, req, &key, &kg_csr, &kg_csr_len));
        TRY(est_issue(rq, l, &a, kg_csr, kg_csr_len, device_id, &cert, &cert_len));
    } else {
        TRY(est_issue(rq, l, &a, der.data, der.len, device_id, &cert, &cert_len));
    }
    TRY(est_enroll_resp(rs, op, cert, cert_len, key));
out:
    if (rc != KL_OK && !est_auth_deferred_refusal(rq, rs, &a, rc)) {
        est_resp_error(rq, rs, rc);
    }
done:
    free(device_id);
    OPENSSL_free(kg_csr);
    EVP_PKEY_free(key); /* OpenSSL clears private key material on free */
    free(cert);
    X509_REQ_free(req);
    est_auth_free(&a);
    kl_buf_free(&der);
}

/* ---------------------------------------------------------------------------------------- */
/* Dispatch                                                                                 */

static int est_method_is(const est_req *rq, const char *m)
{
    return rq->method && strcmp(rq->method, m) == 0;
}

static int est_method_get(const est_req *rq)
{
    return est_method_is(rq, "GET") || est_method_is(rq, "HEAD");
}

static void est_resp_405(est_resp *rs, const char *allow)
{
    est_resp_text(rs, 405, "method not allowed");
    est_resp_header(rs, "Allow", allow);
}

/* /metrics: the counters of this process, and what only keyline-cad knows that still means
 * something here: how many requests of this server's profiles wait for an officer, and whether
 * keyline-cad answers at all. (The store's write counters are keyline-cad's, not a front end's.) */
static void est_metrics_page(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    kl_rc rc = KL_OK;
    uint64_t held = 0;
    int up = 1;
    for (size_t i = 0; i < s->cfg.n_labels && up; i++) {
        int seen = 0; /* labels may share a profile: count its queue once */
        for (size_t j = 0; j < i && !seen; j++) {
            seen = strcmp(s->cfg.labels[j].profile, s->cfg.labels[i].profile) == 0;
        }
        uint64_t n = 0;
        if (!seen) {
            up = est_cad_pending(s, s->cfg.labels[i].profile, &n) == KL_OK;
            held += n;
        }
    }
    kl_buf_reset(&rs->body);
    TRY(est_metrics_render(&s->metrics, &rs->body));
    TRY(kl_buf_printf(&rs->body,
                      "# HELP keyline_est_cad_up 1 when keyline-cad answered this scrape.\n"
                      "# TYPE keyline_est_cad_up gauge\n"
                      "keyline_est_cad_up %d\n",
                      up));
    if (up) {
        TRY(kl_buf_printf(&rs->body,
                          "# HELP keyline_est_requests_pending Enrollment requests held for an "
                          "officer's approval (approval = manual).\n"
                          "# TYPE keyline_est_requests_pending gauge\n"
                          "keyline_est_requests_pending %llu\n",
                          (unsigned long long)held));
        TRY(est_lifetimes_render(s, &rs->body)); /* est_lifetimes.c */
    }
    rs->status = 200;
    snprintf(rs->content_type, sizeof rs->content_type, "text/plain; version=0.0.4");
out:
    if (rc != KL_OK) {
        est_resp_text(rs, 500, "internal error");
    }
}

/* Healthy while keyline-cad answers (HELLO): without it nothing can be enrolled or
 * revocation-checked, so a load balancer or supervisor takes this server out until it is back
 * (keyline-estd reconnects by itself). */
static void est_healthz(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    if (est_cad_hello(s) != KL_OK) {
        est_metrics_cad_error(&s->metrics);
        est_note(rq, "%s", kl_errmsg());
        est_resp_text(rs, 503, "keyline-cad is not answering");
        est_resp_header(rs, "Retry-After", "10");
        return;
    }
    est_resp_text(rs, 200, "ok");
}

static void est_simpleenroll(est_req *rq, est_resp *rs, const est_label *l)
{
    est_enroll(rq, rs, l, EST_OP_SIMPLEENROLL);
}

static void est_simplereenroll(est_req *rq, est_resp *rs, const est_label *l)
{
    est_enroll(rq, rs, l, EST_OP_SIMPLEREENROLL);
}

static void est_serverkeygen(est_req *rq, est_resp *rs, const est_label *l)
{
    est_enroll(rq, rs, l, EST_OP_SERVERKEYGEN);
}

/* The methods a route takes, as its Allow header says them. */
#define EST_ALLOW_GET "GET, HEAD"
#define EST_ALLOW_POST "POST"

/* Whether rq's method is one allow names; if not, rs is the 405. */
static int est_method_allowed(const est_req *rq, est_resp *rs, const char *allow)
{
    int ok = strcmp(allow, EST_ALLOW_POST) == 0 ? est_method_is(rq, "POST") : est_method_get(rq);
    if (!ok) {
        est_resp_405(rs, allow);
    }
    return ok;
}

/* The routes outside /.well-known/est: the methods each takes (NULL: its handler decides). */
static const struct {
    est_endpoint ep;
    const char *allow;
    void (*handle)(est_req *rq, est_resp *rs);
} est_ep_routes[] = {
    {EST_EP_HEALTHZ, EST_ALLOW_GET, est_healthz},
    {EST_EP_METRICS, EST_ALLOW_GET, est_metrics_page},
    {EST_EP_CRL, NULL, est_handle_crl},
    {EST_EP_OCSP, NULL, est_handle_ocsp},
};

/* The EST operations of a label (RFC 7030 3.2.2) and the method each takes. Full CMC (4.3) is
 * optional and not implemented: 501 whatever the method. */
static const struct {
    est_op op;
    const char *allow;
    void (*handle)(est_req *rq, est_resp *rs, const est_label *l);
} est_op_routes[] = {
    {EST_OP_CACERTS, EST_ALLOW_GET, est_cacerts},
    {EST_OP_CSRATTRS, EST_ALLOW_GET, est_csrattrs},
    {EST_OP_SIMPLEENROLL, EST_ALLOW_POST, est_simpleenroll},
    {EST_OP_SIMPLEREENROLL, EST_ALLOW_POST, est_simplereenroll},
    {EST_OP_SERVERKEYGEN, EST_ALLOW_POST, est_serverkeygen},
};

/* The metrics listener serves only what Prometheus and health checks fetch; the plain-HTTP
 * listener only what relying parties fetch without TLS. 0 (rs the 404) when ep is not here. */
static int est_listener_serves(const est_req *rq, est_resp *rs, est_endpoint ep)
{
    if (rq->metrics_only) {
        if (ep != EST_EP_METRICS && ep != EST_EP_HEALTHZ) {
            est_resp_text(rs, 404, "not found (metrics listener: /metrics and /healthz only)");
            return 0;
        }
    } else if (!rq->tls && ep != EST_EP_CRL && ep != EST_EP_OCSP && ep != EST_EP_HEALTHZ) {
        est_resp_text(rs, 404, "not found (use the TLS listener)");
        return 0;
    }
    return 1;
}

/* An operation of a known label. */
static void est_handle_op(est_req *rq, est_resp *rs, const est_label *l)
{
    est_op op = rq->route.op;
    if (op == EST_OP_FULLCMC) {
        /* RFC 7030 4.3 is optional; we do not implement Full CMC. */
        est_resp_text(rs, 501, "fullcmc is not implemented");
        return;
    }
    if (op == EST_OP_SERVERKEYGEN && !rq->srv->cfg.serverkeygen) {
        est_resp_text(rs, 501, "serverkeygen is disabled on this server");
        return;
    }
    for (size_t i = 0; i < sizeof est_op_routes / sizeof est_op_routes[0]; i++) {
        if (est_op_routes[i].op == op) {
            if (est_method_allowed(rq, rs, est_op_routes[i].allow)) {
                est_op_routes[i].handle(rq, rs, l);
            }
            return;
        }
    }
    est_resp_text(rs, 404, "not found");
}

void est_handle(est_req *rq, est_resp *rs)
{
    if (est_route_parse(rq->path, &rq->route) != KL_OK) {
        est_resp_text(rs, 404, "not found");
        return;
    }
    est_endpoint ep = rq->route.ep;
    if (!est_listener_serves(rq, rs, ep)) {
        return;
    }
    for (size_t i = 0; i < sizeof est_ep_routes / sizeof est_ep_routes[0]; i++) {
        if (est_ep_routes[i].ep == ep) {
            if (!est_ep_routes[i].allow || est_method_allowed(rq, rs, est_ep_routes[i].allow)) {
                est_ep_routes[i].handle(rq, rs);
            }
            return;
        }
    }
    const est_label *l = est_config_label(&rq->srv->cfg, rq->route.label);
    if (!l) {
        est_note(rq, "unknown label %s", rq->route.label);
        est_resp_text(rs, 404, "unknown EST label");
        return;
    }
    est_handle_op(rq, rs, l);
}
