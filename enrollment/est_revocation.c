/* keyline-estd: revocation in the field. /crl/<issuer>.crl and /ocsp (RFC 6960, RFC 5019).
 * Both answer from caches so that a crowd of relying parties does not turn into HSM load:
 *   CRL:  one per issuer, rebuilt (ca_crl) when the store's revocation epoch for that issuer
 *         moves or half-way to nextUpdate, whichever comes first.
 *   OCSP: responses to nonce-less requests, keyed by SHA-256 of the request, kept for at most
 *         EST_OCSP_TTL seconds and dropped as soon as any revocation epoch moves. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "est.h"
#include "hsm_signer.h"
#include "kl_b64.h"
#include "kl_log.h"

#define EST_CRL_SLOTS 64
#define EST_OCSP_SLOTS 512
#define EST_OCSP_TTL 60
#define EST_LABELS_TTL 60
#define EST_OCSP_MAX_REQ 16384

typedef struct {
    char label[EST_LABEL_MAX];
    int64_t epoch;
    time_t refresh_at;
    uint8_t *der;
    size_t len;
} est_crl_slot;

typedef struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    int64_t epoch_sum;
    time_t at;
    uint8_t *der;
    size_t len;
} est_ocsp_slot;

struct est_revocation {
    est_server *srv;
    pthread_mutex_t crl_lock;
    est_crl_slot crl[EST_CRL_SLOTS];
    size_t n_crl;
    pthread_mutex_t ocsp_lock;
    est_ocsp_slot ocsp[EST_OCSP_SLOTS];
    char **labels; /* every CA label, for the OCSP cache key */
    size_t n_labels;
    time_t labels_at;
    pthread_mutex_t upkeep_lock;
    char *served[EST_CRL_SLOTS]; /* the CAs whose delegated OCSP signers this server keeps */
    size_t n_served;
    time_t upkeep_at, warned_at;
};

static time_t est_asn1_time(const ASN1_TIME *t, time_t dflt)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm)) {
        return dflt;
    }
    return timegm(&tm);
}

static void est_rev_labels_free(est_revocation *r)
{
    for (size_t i = 0; i < r->n_labels; i++) {
        free(r->labels[i]);
    }
    free(r->labels);
    r->labels = NULL;
    r->n_labels = 0;
}

/* Caller holds ocsp_lock. */
static kl_rc est_rev_labels_refresh(est_revocation *r, time_t now)
{
    if (r->labels && now - r->labels_at < EST_LABELS_TTL) {
        return KL_OK;
    }
    store_ca *cas = NULL;
    size_t n = 0;
    kl_rc rc = store_ca_list(ca_store(r->srv->ca), &cas, &n);
    if (rc != KL_OK) {
        return rc;
    }
    est_rev_labels_free(r);
    r->labels = calloc(n ? n : 1, sizeof *r->labels);
    for (size_t i = 0; i < n; i++) {
        if (r->labels && (r->labels[r->n_labels] = strdup(cas[i].label)) != NULL) {
            r->n_labels++;
        }
        store_ca_free(&cas[i]);
    }
    free(cas);
    if (!r->labels) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    r->labels_at = now;
    return KL_OK;
}

/* Start-up, with the whole token (the start-up child, or signer = inline): publish a CRL for
 * an offline CA that has none yet (a store from before CRLs were published, a CA made by an
 * older keyline-ca) or whose published one is past half its validity. The running server
 * never signs for it. */
static void est_crl_publish_missing(est_server *srv, const char *label)
{
    store_crl c;
    memset(&c, 0, sizeof c);
    kl_rc rc = store_crl_get(ca_store(srv->ca), label, &c);
    time_t now = time(NULL);
    const char *why = rc == KL_ENOTFOUND ? "none was published"
                      : rc == KL_OK && now >= c.this_update + (c.next_update - c.this_update) / 2
                          ? "the published one is past half its validity"
                          : NULL;
    store_crl_free(&c);
    if (!why) {
        return;
    }
    X509_CRL *crl = NULL;
    if (ca_crl(srv->ca, label, &crl) != KL_OK) {
        kl_warn("CRL for %s: %s, and signing one at start-up failed: %s", label, why, kl_errmsg());
        return;
    }
    kl_info("CRL for %s: published a new one at start-up (%s)", label, why);
    X509_CRL_free(crl);
}

/* Add a copy of `label` to cas (EST_CRL_SLOTS room) unless it is there already. */
static void est_ca_list_add(char **cas, size_t *n, const char *label)
{
    for (size_t j = 0; j < *n; j++) {
        if (strcmp(cas[j], label) == 0) {
            return;
        }
    }
    if (*n < EST_CRL_SLOTS && (cas[*n] = strdup(label)) != NULL) {
        (*n)++;
    }
}

kl_rc est_revocation_new(est_server *srv, est_revocation **out)
{
    est_revocation *r = calloc(1, sizeof *r);
    if (!r) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    r->srv = srv;
    pthread_mutex_init(&r->crl_lock, NULL);
    pthread_mutex_init(&r->ocsp_lock, NULL);

    /* RFC 6960 4.2.2.2: a delegated responder (id-kp-OCSPSigning) for each CA whose
     * certificates relying parties ask about: the issuers, the client CAs and every CA above
     * them (the CA key is then not used for every OCSP answer, and a CA this server does not
     * sign with, a root, still gets answers). Not fatal: without one ca_ocsp_respond() signs
     * with the CA itself, where that key is online. */
    const est_config *c = &srv->cfg;
    char *cas[EST_CRL_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < c->n_labels + c->n_client_ca; i++) {
        est_ca_list_add(cas, &n,
                        i < c->n_labels ? c->labels[i].issuer : c->client_ca[i - c->n_labels]);
    }
    for (size_t i = 0; i < n; i++) { /* the list grows as parents are found */
        store_ca rec;
        memset(&rec, 0, sizeof rec);
        if (store_ca_get(ca_store(srv->ca), cas[i], &rec) == KL_OK && rec.parent) {
            est_ca_list_add(cas, &n, rec.parent);
        }
        store_ca_free(&rec);
    }
    int whole_token = !hsm_is_remote(ca_hsm(srv->ca));
    pthread_mutex_init(&r->upkeep_lock, NULL); /* upkeep_at 0: the first OCSP request */
    for (size_t i = 0; i < n; i++) {
        int renewed = 0;
        /* without the whole token (the server after its start-up step) only an online CA's
         * signer can be renewed; the start-up step did the rest */
        if ((whole_token || est_ca_online(srv, cas[i])) &&
            ca_ocsp_signer_ensure(srv->ca, cas[i], "est:startup", &renewed) != KL_OK) {
            kl_warn("OCSP signer for %s: %s; OCSP answers for it are signed by the CA", cas[i],
                    kl_errmsg());
        }
        if (whole_token && !est_ca_online(srv, cas[i])) {
            est_crl_publish_missing(srv, cas[i]);
        }
        r->served[r->n_served++] = cas[i]; /* n <= EST_CRL_SLOTS */
    }
    *out = r;
    return KL_OK;
}

void est_revocation_free(est_revocation *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_crl; i++) {
        free(r->crl[i].der);
    }
    for (size_t i = 0; i < EST_OCSP_SLOTS; i++) {
        free(r->ocsp[i].der);
    }
    est_rev_labels_free(r);
    for (size_t i = 0; i < r->n_served; i++) {
        free(r->served[i]);
    }
    pthread_mutex_destroy(&r->crl_lock);
    pthread_mutex_destroy(&r->ocsp_lock);
    pthread_mutex_destroy(&r->upkeep_lock);
    free(r);
}

/* ---------------------------------------------------------------------------------------- */
/* CRL                                                                                       */

/* A CA this server does not sign with (est_ca_online): the CRL an officer published
 * (keyline-ca crl, ca create, revoke), read again every EST_LABELS_TTL seconds and whenever the
 * CA's revocation epoch moves. */
static kl_rc est_crl_published(est_server *s, const char *label, uint8_t **der, size_t *len,
                               time_t *refresh_at, int *unpublished)
{
    store_crl c;
    store_ca rec;
    memset(&c, 0, sizeof c);
    memset(&rec, 0, sizeof rec);
    kl_rc rc = store_ca_get(ca_store(s->ca), label, &rec);
    /* OCSP signers and rollover certificates issue nothing: no CRL of their own */
    int issuing = rc == KL_OK && !ca_is_ocsp_signer_label(label) &&
                  !(rec.status && strcmp(rec.status, "rollover") == 0);
    store_ca_free(&rec);
    if (rc == KL_ENOTFOUND || (rc == KL_OK && !issuing)) {
        return kl_fail(KL_ENOTFOUND, "no issuing CA labelled '%s'", label);
    }
    if (rc == KL_OK) {
        rc = store_crl_get(ca_store(s->ca), label, &c);
    }
    if (rc == KL_ENOTFOUND) {
        /* once a minute at most: relying parties may ask many times a second */
        static _Atomic time_t warned;
        time_t now = time(NULL), last = atomic_load(&warned);
        if (now - last >= 60 && atomic_compare_exchange_strong(&warned, &last, now)) {
            kl_warn("CRL for %s: none published, and this server does not sign with that CA's "
                    "key ([est] ca-keys): run keyline-ca crl --issuer %s",
                    label, label);
        }
        *unpublished = 1;
        return kl_fail(KL_ENOTFOUND, "no CRL published for '%s'", label);
    }
    if (rc != KL_OK) {
        return rc;
    }
    time_t now = time(NULL);
    if (c.next_update <= now) {
        kl_warn("CRL for %s: the published CRL number %lld passed its nextUpdate %lld s ago; "
                "run keyline-ca crl --issuer %s",
                label, (long long)c.number, (long long)(now - c.next_update), label);
    }
    *refresh_at = now + EST_LABELS_TTL;
    *der = c.der;
    *len = c.der_len;
    c.der = NULL;
    store_crl_free(&c);
    return KL_OK;
}

static kl_rc est_crl_build(est_server *s, const char *label, uint8_t **der, size_t *len,
                           time_t *refresh_at, int *unpublished)
{
    if (!est_ca_online(s, label)) {
        return est_crl_published(s, label, der, len, refresh_at, unpublished);
    }
    X509_CRL *crl = NULL;
    kl_rc rc = ca_crl(s->ca, label, &crl);
    if (rc != KL_OK) {
        return rc;
    }
    uint8_t *enc = NULL;
    int n = i2d_X509_CRL(crl, &enc);
    if (n <= 0) {
        X509_CRL_free(crl);
        return kl_fail_ssl(KL_EINTERNAL, "i2d_X509_CRL");
    }
    time_t now = time(NULL);
    time_t this_up = est_asn1_time(X509_CRL_get0_lastUpdate(crl), now);
    time_t next_up = est_asn1_time(X509_CRL_get0_nextUpdate(crl), now + 7200);
    /* Re-sign half-way to nextUpdate: relying parties never see a CRL about to expire. */
    *refresh_at = this_up + (next_up - this_up) / 2;
    *der = malloc((size_t)n);
    if (*der) {
        memcpy(*der, enc, (size_t)n);
        *len = (size_t)n;
    }
    OPENSSL_free(enc);
    X509_CRL_free(crl);
    return *der ? KL_OK : kl_fail(KL_EINTERNAL, "out of memory");
}

void est_handle_crl(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    est_revocation *r = s->rev;
    const char *label = rq->route.label;
    kl_rc rc = KL_OK;
    int64_t epoch = 0;
    int unpublished = 0;

    if (!(strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0)) {
        est_resp_text(rs, 405, "method not allowed");
        est_resp_header(rs, "Allow", "GET, HEAD");
        return;
    }
    rc = store_revocation_epoch(ca_store(s->ca), label, &epoch);
    if (rc != KL_OK) {
        goto fail;
    }
    time_t now = time(NULL);
    pthread_mutex_lock(&r->crl_lock);
    est_crl_slot *slot = NULL;
    for (size_t i = 0; i < r->n_crl; i++) {
        if (strcmp(r->crl[i].label, label) == 0) {
            slot = &r->crl[i];
        }
    }
    if (!slot || slot->epoch != epoch || now >= slot->refresh_at) {
        uint8_t *der = NULL;
        size_t len = 0;
        time_t refresh_at = 0;
        /* Built under the lock: concurrent fetchers wait for one signature, not one each. */
        rc = est_crl_build(s, label, &der, &len, &refresh_at, &unpublished);
        if (rc == KL_OK && !slot && r->n_crl < EST_CRL_SLOTS) {
            slot = &r->crl[r->n_crl++];
            snprintf(slot->label, sizeof slot->label, "%s", label);
        }
        if (rc == KL_OK && slot) {
            free(slot->der);
            slot->der = der;
            slot->len = len;
            slot->epoch = epoch;
            slot->refresh_at = refresh_at;
        } else if (rc == KL_OK) { /* more CA labels than slots: serve uncached */
            kl_buf_reset(&rs->body);
            rc = kl_buf_put(&rs->body, der, len);
            free(der);
            pthread_mutex_unlock(&r->crl_lock);
            if (rc != KL_OK) {
                goto fail;
            }
            goto ok;
        }
    }
    if (rc == KL_OK) {
        kl_buf_reset(&rs->body);
        rc = kl_buf_put(&rs->body, slot->der, slot->len);
    }
    pthread_mutex_unlock(&r->crl_lock);
    if (rc != KL_OK) {
        goto fail;
    }
ok:
    rs->status = 200;
    /* RFC 5280 4.2.1.13 / RFC 2585 4.2: DER, application/pkix-crl */
    snprintf(rs->content_type, sizeof rs->content_type, "application/pkix-crl");
    snprintf(rq->note, sizeof rq->note, "crl %s epoch %lld", label, (long long)epoch);
    return;
fail:
    snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
    if (rc == KL_ENOTFOUND) {
        est_resp_text(rs, 404, unpublished ? "no CRL published for this CA" : "no such CA");
    } else if (rc == KL_EHSM || rc == KL_EPIN || rc == KL_ELOCKED) {
        est_metrics_hsm_error(&s->metrics);
        kl_error("CRL for %s: %s", label, kl_errmsg());
        est_resp_text(rs, 503, "CRL temporarily unavailable");
        est_resp_header(rs, "Retry-After", "30");
    } else if (rc == KL_EIO || rc == KL_ETIMEOUT) {
        /* docs/est.md: 503 when the store failed, as for enrollment */
        kl_error("CRL for %s: store: %s", label, kl_errmsg());
        est_resp_text(rs, 503, "CRL temporarily unavailable");
        est_resp_header(rs, "Retry-After", "10");
    } else {
        kl_error("CRL for %s: %s", label, kl_errmsg());
        est_resp_text(rs, 500, "internal error");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* OCSP                                                                                      */

static void est_ocsp_status_resp(est_resp *rs, int status)
{
    OCSP_RESPONSE *resp = OCSP_response_create(status, NULL);
    uint8_t *enc = NULL;
    int n = resp ? i2d_OCSP_RESPONSE(resp, &enc) : -1;
    kl_buf_reset(&rs->body);
    if (n > 0 && kl_buf_put(&rs->body, enc, (size_t)n) == KL_OK) {
        rs->status = 200;
        snprintf(rs->content_type, sizeof rs->content_type, "application/ocsp-response");
    } else {
        est_resp_text(rs, 500, "internal error");
    }
    OPENSSL_free(enc);
    OCSP_RESPONSE_free(resp);
}

/* Every EST_LABELS_TTL seconds, on an OCSP request: the delegated signers are short-lived
 * (ocsp-signer template), so renew those of the CAs this server signs with once past half
 * their life (through the signers: no key is made); for an offline CA only its start-up step
 * or keyline-ca crl can, so say so (hourly) once it is due. */
static void est_ocsp_upkeep(est_revocation *r, time_t now)
{
    if (pthread_mutex_trylock(&r->upkeep_lock) != 0) {
        return; /* another request does it */
    }
    if (now - r->upkeep_at >= EST_LABELS_TTL) {
        r->upkeep_at = now;
        for (size_t i = 0; i < r->n_served; i++) {
            const char *ca = r->served[i];
            time_t na = 0;
            if (!ca_ocsp_signer_due(r->srv->ca, ca, &na)) {
                continue;
            }
            int renewed = 0;
            if (!est_ca_online(r->srv, ca)) {
                if (now - r->warned_at >= 3600) {
                    kl_warn("OCSP signer of %s (a CA this server does not sign with) is past half "
                            "its validity, %lld s left: restart keyline-estd or run keyline-ca "
                            "crl --issuer %s to renew it",
                            ca, (long long)(na - now), ca);
                    r->warned_at = now;
                }
            } else if (ca_ocsp_signer_ensure(r->srv->ca, ca, "est:renew", &renewed) != KL_OK) {
                kl_warn("OCSP signer of %s: renewal failed: %s", ca, kl_errmsg());
            } else if (renewed) {
                kl_info("OCSP signer of %s renewed", ca);
            }
        }
    }
    pthread_mutex_unlock(&r->upkeep_lock);
}

/* Sum of every CA's revocation epoch: moves whenever anything is revoked anywhere. */
static kl_rc est_ocsp_epoch_sum(est_revocation *r, int64_t *sum)
{
    kl_rc rc = est_rev_labels_refresh(r, time(NULL));
    *sum = 0;
    for (size_t i = 0; rc == KL_OK && i < r->n_labels; i++) {
        int64_t e = 0;
        rc = store_revocation_epoch(ca_store(r->srv->ca), r->labels[i], &e);
        *sum += e;
    }
    return rc;
}

void est_handle_ocsp(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    est_revocation *r = s->rev;
    kl_buf der;
    kl_buf_init(&der, EST_OCSP_MAX_REQ, 0);
    OCSP_REQUEST *req = NULL;
    OCSP_RESPONSE *resp = NULL;
    uint8_t *enc = NULL;
    int is_get = 0;

    if (strcmp(rq->method, "POST") == 0 && !rq->route.ocsp_b64) {
        /* RFC 6960 A.1: POST with Content-Type application/ocsp-request, DER body */
        if (!est_media_type_is(rq->content_type, "application/ocsp-request")) {
            est_resp_text(rs, 415, "expected Content-Type: application/ocsp-request");
            goto done;
        }
        if (kl_buf_put(&der, rq->body, rq->body_len) != KL_OK) {
            est_resp_text(rs, 413, "OCSP request too large");
            goto done;
        }
    } else if ((strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0) &&
               rq->route.ocsp_b64) {
        /* RFC 6960 A.1: GET {url}/{url-encoding of base64 encoding of the DER request}. The
         * URL is already percent-decoded; accept base64url too. */
        is_get = 1;
        size_t n = strlen(rq->route.ocsp_b64);
        char *b64 = n < 4 * EST_OCSP_MAX_REQ / 3 + 8 ? strdup(rq->route.ocsp_b64) : NULL;
        if (!b64) {
            est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            goto done;
        }
        for (char *p = b64; *p; p++) {
            *p = *p == '-' ? '+' : *p == '_' ? '/' : *p == ' ' ? '+' : *p;
        }
        kl_rc rc = kl_b64_decode(b64, n, &der);
        free(b64);
        if (rc != KL_OK) {
            snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
            est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            goto done;
        }
    } else {
        est_resp_text(rs, 405, "use POST /ocsp or GET /ocsp/<base64 request>");
        est_resp_header(rs, "Allow", "GET, POST");
        goto done;
    }

    est_ocsp_upkeep(r, time(NULL));
    const unsigned char *p = der.data;
    req = d2i_OCSP_REQUEST(NULL, &p, (long)der.len);
    if (!req || p != der.data + der.len) {
        snprintf(rq->note, sizeof rq->note, "malformed OCSP request");
        est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        goto done;
    }
    /* A nonce makes the answer unique to this request: never cached (RFC 5019 4 prefers
     * none). */
    int cacheable = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1) < 0;
    uint8_t key[SHA256_DIGEST_LENGTH];
    int64_t esum = 0;
    time_t now = time(NULL);
    if (cacheable) {
        SHA256(der.data, der.len, key);
        pthread_mutex_lock(&r->ocsp_lock);
        kl_rc rc = est_ocsp_epoch_sum(r, &esum);
        est_ocsp_slot *slot = &r->ocsp[(key[0] | key[1] << 8) % EST_OCSP_SLOTS];
        int hit = rc == KL_OK && slot->der && memcmp(slot->key, key, sizeof key) == 0 &&
                  slot->epoch_sum == esum && now - slot->at < EST_OCSP_TTL;
        if (hit) {
            kl_buf_reset(&rs->body);
            hit = kl_buf_put(&rs->body, slot->der, slot->len) == KL_OK;
        }
        pthread_mutex_unlock(&r->ocsp_lock);
        cacheable = rc == KL_OK;
        if (hit) {
            snprintf(rq->note, sizeof rq->note, "cached");
            goto ok;
        }
    }
    kl_rc rc = ca_ocsp_respond(s->ca, req, &resp);
    if (rc != KL_OK) {
        snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
        kl_error("OCSP: %s", kl_errmsg());
        if (rc == KL_EHSM || rc == KL_EPIN || rc == KL_ELOCKED) {
            est_metrics_hsm_error(&s->metrics);
        }
        /* RFC 6960 2.3: tryLater / internalError are answered as OCSP responses */
        /* HSM and store failures are transient: tryLater, as for KL_EHSM (docs/est.md). */
        int later =
            rc == KL_EHSM || rc == KL_EPIN || rc == KL_ELOCKED || rc == KL_EIO || rc == KL_ETIMEOUT;
        est_ocsp_status_resp(rs, rc == KL_EINPUT ? OCSP_RESPONSE_STATUS_MALFORMEDREQUEST
                                 : later         ? OCSP_RESPONSE_STATUS_TRYLATER
                                                 : OCSP_RESPONSE_STATUS_INTERNALERROR);
        goto done;
    }
    int n = i2d_OCSP_RESPONSE(resp, &enc);
    if (n <= 0) {
        est_resp_text(rs, 500, "internal error");
        goto done;
    }
    kl_buf_reset(&rs->body);
    if (kl_buf_put(&rs->body, enc, (size_t)n) != KL_OK) {
        est_resp_text(rs, 500, "internal error");
        goto done;
    }
    if (cacheable && OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        uint8_t *copy = malloc((size_t)n);
        if (copy) {
            memcpy(copy, enc, (size_t)n);
            pthread_mutex_lock(&r->ocsp_lock);
            est_ocsp_slot *slot = &r->ocsp[(key[0] | key[1] << 8) % EST_OCSP_SLOTS];
            free(slot->der);
            memcpy(slot->key, key, sizeof key);
            slot->der = copy;
            slot->len = (size_t)n;
            slot->epoch_sum = esum;
            slot->at = now;
            pthread_mutex_unlock(&r->ocsp_lock);
        }
    }
ok:
    rs->status = 200;
    snprintf(rs->content_type, sizeof rs->content_type, "application/ocsp-response");
    if (is_get) {
        /* RFC 5019 6: HTTP caching headers for GET */
        char cc[64];
        snprintf(cc, sizeof cc, "max-age=%d, public, no-transform, must-revalidate",
                 cacheable ? EST_OCSP_TTL : 0);
        est_resp_header(rs, "Cache-Control", cc);
    }
done:
    OPENSSL_free(enc);
    OCSP_RESPONSE_free(resp);
    OCSP_REQUEST_free(req);
    kl_buf_free(&der);
}
