/* keyline-estd: revocation in the field. /crl/<issuer>.crl and /ocsp (RFC 6960, RFC 5019): the
 * HTTP side (methods, GET base64, content types, caching headers); the CRLs and OCSP answers
 * come from keyline-cad (its crl and ocsp ops), which signs and caches them:
 *   CRL:  re-signed when the CA's revocation epoch moves or half-way to nextUpdate; a root's (a
 *         CA keyline-cad does not sign CRLs for, [cad] ca-keys) is the officer's published one.
 *   OCSP: answers to nonce-less requests cached until a revocation epoch moves (at most 60 s);
 *         the delegated OCSP signers are made and renewed by keyline-cad. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "est.h"
#include "kl_b64.h"
#include "kl_digest.h"
#include "kl_http.h"
#include "kl_log.h"

/* seconds a relying party may keep a nonce-less OCSP answer (RFC 5019 6: max-age), as long as
 * keyline-cad keeps it */
#define EST_OCSP_TTL 60
#define EST_OCSP_MAX_REQ 16384

/* ---------------------------------------------------------------------------------------- */
/* Validators (RFC 9110 8.8) and conditional GETs (13.1), shared by CRLs and OCSP answers      */

#define EST_ETAG_LEN 48 /* "\"<32 hex>\"" */

/* A strong entity tag of `der`: the first 16 bytes of its SHA-256, quoted. 0 if no hash. */
static int est_etag_of(const uint8_t *der, size_t len, char etag[EST_ETAG_LEN])
{
    uint8_t h[KL_SHA256_LEN];
    if (kl_sha256(der, len, h) != KL_OK) {
        return 0;
    }
    int n = snprintf(etag, EST_ETAG_LEN, "\"");
    for (int i = 0; i < 16; i++) {
        n += snprintf(etag + n, EST_ETAG_LEN - (size_t)n, "%02x", h[i]);
    }
    snprintf(etag + n, EST_ETAG_LEN - (size_t)n, "\"");
    return 1;
}

/* RFC 9110 13.1.2: If-None-Match is "*" or a list of entity tags, compared weakly (so W/"x"
 * matches our "x"); 13.1.3: If-Modified-Since, an HTTP-date in any of its three forms, only
 * without If-None-Match, and only against a known Last-Modified (0: none). A date is taken only
 * when it is the Last-Modified itself, the validator a cache holds, not when it is later (13.1.3
 * allows a 200 always): a CRL or OCSP answer can be followed by one dated earlier (a clock set
 * back, a revocation recorded by a clock ahead, CRLs of hosts whose clocks differ), and a 304 to
 * a later date would keep the older one, which may say good, in the cache. */
static int est_not_modified(const est_req *rq, const char *etag, time_t last_modified)
{
    if (rq->has_inm) {
        return est_etag_listed(rq->inm, etag);
    }
    time_t since = 0;
    return last_modified && kl_http_date_parse(rq->if_modified_since, time(NULL), &since) &&
           last_modified == since;
}

/* ---------------------------------------------------------------------------------------- */
/* CRL                                                                                       */

/* CRLs are kept as files (memfds: page cache, not heap) and sent with sendfile, whatever their
 * size: one per CA, fetched again from keyline-cad on every request while it is small, at most
 * every EST_CRL_TTL seconds once it is larger than EST_CRL_SMALL (keyline-cad re-signs when a
 * revocation moves the epoch), with a strong ETag (SHA-256 of the DER) and
 * Last-Modified (its thisUpdate) for conditional GETs (RFC 9110 13.1.1, 13.1.3): a relying
 * party polling an unchanged CRL gets 304 and no body. */
#define EST_CRL_TTL 5
#define EST_CRL_SMALL (1024u * 1024)
#define EST_CRL_SLOTS 64
#define EST_CRL_MAX (256u * 1024 * 1024)

typedef struct {
    char label[129];
    int fd; /* memfd with the DER; each response gets a dup */
    size_t len;
    char etag[EST_ETAG_LEN];
    time_t this_update; /* Last-Modified */
    time_t fetched;
} est_crl_file;

static est_crl_file est_crls[EST_CRL_SLOTS];
static size_t est_ncrls;
static pthread_mutex_t est_crl_mu = PTHREAD_MUTEX_INITIALIZER;

void est_crl_cache_free(void)
{
    pthread_mutex_lock(&est_crl_mu);
    for (size_t i = 0; i < est_ncrls; i++) {
        close(est_crls[i].fd);
    }
    est_ncrls = 0;
    pthread_mutex_unlock(&est_crl_mu);
}

/* thisUpdate of a DER CertificateList, read in place (no parse of the entries): TBSCertList
 * is SEQUENCE { [version] signature issuer thisUpdate ... }. */
static int est_crl_this_update(const uint8_t *der, size_t len, time_t *out)
{
    const unsigned char *p = der;
    long l = 0;
    int tag = 0, cls = 0;
    const unsigned char *end = der + len;
    for (int step = 0; step < 2; step++) { /* into CertificateList, then into TBSCertList */
        if (ASN1_get_object(&p, &l, &tag, &cls, end - p) & 0x80 || tag != V_ASN1_SEQUENCE) {
            return 0;
        }
    }
    for (int skip = 0; skip < 3; skip++) { /* version (when present), signature, issuer */
        const unsigned char *q = p;
        if (ASN1_get_object(&q, &l, &tag, &cls, end - p) & 0x80) {
            return 0;
        }
        if (skip == 0 && tag != V_ASN1_INTEGER) {
            skip++; /* v1: no version */
        }
        if (l < 0 || l > end - q) {
            return 0;
        }
        p = q + l;
    }
    ASN1_TIME *t = d2i_ASN1_TIME(NULL, &p, end - p);
    struct tm tm;
    int ok = t && ASN1_TIME_to_tm(t, &tm) == 1;
    ASN1_TIME_free(t);
    if (ok) {
        *out = timegm(&tm);
    }
    return ok;
}

/* Put a fetched CRL into slot `f` (a new memfd when it changed). */
static kl_rc est_crl_store(est_crl_file *f, const kl_buf *der, time_t now)
{
    char etag[EST_ETAG_LEN];
    if (!est_etag_of(der->data, der->len, etag)) {
        return kl_fail(KL_EINTERNAL, "cannot hash the CRL");
    }
    f->fetched = now;
    if (f->fd >= 0 && strcmp(etag, f->etag) == 0) {
        return KL_OK;
    }
    int fd = memfd_create("keyline-crl", MFD_CLOEXEC);
    if (fd < 0) {
        return kl_fail(KL_EIO, "memfd_create: %s", strerror(errno));
    }
    size_t off = 0;
    while (off < der->len) {
        ssize_t w = write(fd, der->data + off, der->len - off);
        if (w <= 0) {
            close(fd);
            return kl_fail(KL_EIO, "writing the CRL file: %s", strerror(errno));
        }
        off += (size_t)w;
    }
    if (f->fd >= 0) {
        close(f->fd); /* responses still sending it hold their own dup */
    }
    f->fd = fd;
    f->len = der->len;
    snprintf(f->etag, sizeof f->etag, "%s", etag);
    if (!est_crl_this_update(der->data, der->len, &f->this_update)) {
        f->this_update = now;
    }
    return KL_OK;
}

/* The slot of `label`, fresh (fetched at most EST_CRL_TTL seconds ago); under est_crl_mu. */
static kl_rc est_crl_get(est_server *s, const char *label, est_crl_file **out)
{
    kl_rc rc = KL_OK;
    time_t now = time(NULL);
    est_crl_file *f = NULL;
    for (size_t i = 0; i < est_ncrls && !f; i++) {
        f = strcmp(est_crls[i].label, label) == 0 ? &est_crls[i] : NULL;
    }
    /* a small CRL is asked for every time (keyline-cad answers from its cache, re-signed as
     * soon as a revocation moves the epoch); a large one at most every EST_CRL_TTL seconds */
    if (f && f->len > EST_CRL_SMALL && now - f->fetched < EST_CRL_TTL) {
        *out = f;
        return KL_OK;
    }
    kl_buf der;
    kl_buf_init(&der, EST_CRL_MAX, 0);
    rc = est_cad_crl(s, label, &der);
    if (rc == KL_OK && !f) {
        /* all taken (CRL partitions: many per CA): the one fetched longest ago makes room */
        f = &est_crls[est_ncrls < EST_CRL_SLOTS ? est_ncrls++ : 0];
        for (size_t i = 1; est_ncrls == EST_CRL_SLOTS && i < est_ncrls; i++) {
            f = est_crls[i].fetched < f->fetched ? &est_crls[i] : f;
        }
        if (f->label[0] && f->fd >= 0) {
            close(f->fd); /* responses still sending it hold their own dup */
        }
        memset(f, 0, sizeof *f);
        f->fd = -1;
        snprintf(f->label, sizeof f->label, "%s", label);
    }
    if (rc == KL_OK) {
        rc = est_crl_store(f, &der, now);
    }
    kl_buf_free(&der);
    *out = f;
    return rc;
}

void est_handle_crl(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    const char *label = rq->route.label;
    if (!(strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0)) {
        est_resp_text(rs, 405, "method not allowed");
        est_resp_header(rs, "Allow", "GET, HEAD");
        return;
    }
    est_crl_file *f = NULL;
    pthread_mutex_lock(&est_crl_mu);
    kl_rc rc = est_crl_get(s, label, &f);
    if (rc == KL_OK) {
        char lm[64];
        kl_http_date_format(f->this_update, lm, sizeof lm);
        est_resp_header(rs, "ETag", f->etag);
        est_resp_header(rs, "Last-Modified", lm);
        snprintf(rq->note, sizeof rq->note, "crl %s", label);
        if (est_not_modified(rq, f->etag, f->this_update)) {
            rs->status = 304; /* RFC 9110 15.4.5: no content, the validators again */
            rs->not_modified_len = f->len;
        } else {
            rs->fd = dup(f->fd);
            rs->has_fd = rs->fd >= 0;
            rs->fd_len = f->len;
            rs->status = rs->has_fd ? 200 : 503;
            /* RFC 5280 4.2.1.13 / RFC 2585 4.2: DER, application/pkix-crl */
            snprintf(rs->content_type, sizeof rs->content_type, "application/pkix-crl");
        }
    }
    pthread_mutex_unlock(&est_crl_mu);
    if (rc == KL_OK) {
        return;
    }
    if (rc == KL_ENOTFOUND) {
        /* keyline-cad: an unknown CA (or an OCSP signer, a rollover certificate), or a root
         * whose CRL the officer has not published yet (the hint is in the access log) */
        snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
        est_resp_text(rs, 404,
                      strstr(kl_errmsg(), "no CRL published") ? "no CRL published for this CA"
                                                              : "no such CA");
        return;
    }
    /* HSM, keyline-cad or store failures: 503 with Retry-After, as for enrollment */
    est_resp_error(rq, rs,
                   rc == KL_EINPUT || rc == KL_EPOLICY || rc == KL_EAUTH ? KL_EINTERNAL : rc);
    if (rs->status == 503) {
        snprintf(rs->content_type, sizeof rs->content_type, "text/plain; charset=utf-8");
        kl_buf_reset(&rs->body);
        if (kl_buf_put_str(&rs->body, "CRL temporarily unavailable\n") != KL_OK) {
            kl_buf_reset(&rs->body);
        }
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

/* What an OCSP answer tells HTTP caches (RFC 5019 6.2): its entity tag, Last-Modified (the
 * latest thisUpdate of its single responses) and Expires (the earliest nextUpdate). Read from
 * a successful answer (valid); any other gets Cache-Control alone. */
typedef struct {
    int valid;
    char etag[EST_ETAG_LEN];
    time_t this_update, next_update;     /* next_update 0: none given */
    char last_modified[32], expires[32]; /* as HTTP-dates, formatted once */
} est_ocsp_meta;

static int est_asn1_time(const ASN1_GENERALIZEDTIME *a, time_t *out)
{
    struct tm tm;
    if (!a || ASN1_TIME_to_tm(a, &tm) != 1) {
        return 0;
    }
    *out = timegm(&tm);
    return *out != (time_t)-1;
}

static void est_ocsp_meta_of(const uint8_t *der, size_t len, est_ocsp_meta *m)
{
    memset(m, 0, sizeof *m);
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    OCSP_BASICRESP *bs = resp && OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_SUCCESSFUL
                             ? OCSP_response_get1_basic(resp)
                             : NULL;
    int n = bs ? OCSP_resp_count(bs) : 0, ok = n > 0 && est_etag_of(der, len, m->etag);
    for (int i = 0; ok && i < n; i++) {
        ASN1_GENERALIZEDTIME *rev = NULL, *tu = NULL, *nu = NULL;
        int reason = 0;
        time_t t = 0, u = 0;
        ok = OCSP_single_get0_status(OCSP_resp_get0(bs, i), &reason, &rev, &tu, &nu) >= 0 &&
             est_asn1_time(tu, &t) && (!nu || est_asn1_time(nu, &u));
        m->this_update = t > m->this_update ? t : m->this_update;
        m->next_update = u && (!m->next_update || u < m->next_update) ? u : m->next_update;
    }
    m->valid = ok;
    if (ok) {
        kl_http_date_format(m->this_update, m->last_modified, sizeof m->last_modified);
        kl_http_date_format(m->next_update, m->expires, sizeof m->expires);
    }
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
}

/* The front cache: the answers to nonce-less requests keyline-cad gave in the last
 * EST_OCSP_FRONT_MS, by SHA-256 of the request, answered in the I/O thread without a worker
 * or a keyline-cad round trip (est_handle_ocsp_fast). They are the pre-produced answers
 * keyline-cad serves; a revocation reaches them at most that much later. */
#define EST_OCSP_FRONT_SLOTS 4096
#define EST_OCSP_FRONT_MS 1000

typedef struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    double at; /* est_ocsp_now() when stored; 0: empty */
    uint8_t *der;
    size_t len;
    est_ocsp_meta meta; /* read once, when stored */
} est_ocsp_front_slot;

static est_ocsp_front_slot est_ocsp_front[EST_OCSP_FRONT_SLOTS];
static pthread_rwlock_t est_ocsp_front_lock = PTHREAD_RWLOCK_INITIALIZER;

static double est_ocsp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static est_ocsp_front_slot *est_ocsp_front_at(const uint8_t key[SHA256_DIGEST_LENGTH])
{
    return &est_ocsp_front[(key[0] | key[1] << 8) % EST_OCSP_FRONT_SLOTS];
}

static void est_ocsp_front_put(const uint8_t *req, size_t req_len, const kl_buf *resp,
                               const est_ocsp_meta *meta)
{
    uint8_t key[SHA256_DIGEST_LENGTH];
    uint8_t *copy = NULL;
    if (kl_sha256(req, req_len, key) != KL_OK || !(copy = malloc(resp->len))) {
        return; /* not kept: the next request asks keyline-cad again */
    }
    memcpy(copy, resp->data, resp->len);
    pthread_rwlock_wrlock(&est_ocsp_front_lock);
    est_ocsp_front_slot *e = est_ocsp_front_at(key);
    free(e->der);
    memcpy(e->key, key, sizeof key);
    e->der = copy;
    e->len = resp->len;
    e->meta = *meta;
    e->at = est_ocsp_now();
    pthread_rwlock_unlock(&est_ocsp_front_lock);
}

static int est_ocsp_front_get(const uint8_t *req, size_t req_len, kl_buf *out, est_ocsp_meta *meta)
{
    uint8_t key[SHA256_DIGEST_LENGTH];
    if (kl_sha256(req, req_len, key) != KL_OK) {
        return 0; /* a miss: the worker path answers */
    }
    double now = est_ocsp_now();
    pthread_rwlock_rdlock(&est_ocsp_front_lock);
    const est_ocsp_front_slot *e = est_ocsp_front_at(key);
    int hit = e->der && now - e->at < EST_OCSP_FRONT_MS / 1000.0 &&
              memcmp(e->key, key, sizeof key) == 0 && kl_buf_put(out, e->der, e->len) == KL_OK;
    if (hit) {
        *meta = e->meta;
    }
    pthread_rwlock_unlock(&est_ocsp_front_lock);
    return hit;
}

void est_ocsp_cache_free(void)
{
    pthread_rwlock_wrlock(&est_ocsp_front_lock);
    for (size_t i = 0; i < EST_OCSP_FRONT_SLOTS; i++) {
        free(est_ocsp_front[i].der);
        est_ocsp_front[i].der = NULL;
        est_ocsp_front[i].at = 0;
    }
    pthread_rwlock_unlock(&est_ocsp_front_lock);
}

/* The DER request of a POST or GET /ocsp into der; 0 and an answer in rs when there is none. */
static int est_ocsp_request_der(est_req *rq, est_resp *rs, kl_buf *der, int *is_get)
{
    *is_get = 0;
    if (strcmp(rq->method, "POST") == 0 && !rq->route.ocsp_b64) {
        /* RFC 6960 A.1: POST with Content-Type application/ocsp-request, DER body */
        if (!est_media_type_is(rq->content_type, "application/ocsp-request")) {
            est_resp_text(rs, 415, "expected Content-Type: application/ocsp-request");
            return 0;
        }
        if (kl_buf_put(der, rq->body, rq->body_len) != KL_OK) {
            est_resp_text(rs, 413, "OCSP request too large");
            return 0;
        }
        return 1;
    }
    if ((strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0) && rq->route.ocsp_b64) {
        /* RFC 6960 A.1: GET {url}/{url-encoding of base64 encoding of the DER request}. The
         * URL is already percent-decoded; accept base64url too. */
        *is_get = 1;
        size_t n = strlen(rq->route.ocsp_b64);
        char *b64 = n < 4 * EST_OCSP_MAX_REQ / 3 + 8 ? strdup(rq->route.ocsp_b64) : NULL;
        if (!b64) {
            est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            return 0;
        }
        for (char *p = b64; *p; p++) {
            *p = *p == '-' ? '+' : *p == '_' ? '/' : *p == ' ' ? '+' : *p;
        }
        kl_rc rc = kl_b64_decode(b64, n, der);
        free(b64);
        if (rc != KL_OK) {
            snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
            est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            return 0;
        }
        return 1;
    }
    if (strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0) {
        /* GET /ocsp with no request after it: a malformed request, as a path that decodes to
         * none is */
        snprintf(rq->note, sizeof rq->note, "GET /ocsp without a request");
        est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        return 0;
    }
    /* RFC 9110 10.2.1: Allow lists the methods the target resource supports: /ocsp takes POST
     * (and GET, HEAD, answered malformedRequest), /ocsp/<request> GET and HEAD */
    est_resp_text(rs, 405, "use POST /ocsp or GET /ocsp/<base64 request>");
    est_resp_header(rs, "Allow", rq->route.ocsp_b64 ? "GET, HEAD" : "GET, HEAD, POST");
    return 0;
}

/* An OCSP answer in rs->body is ready: 200 with its content type and, for GET, RFC 5019 6.2's
 * caching headers: Cache-Control (max-age: as long as keyline-cad keeps the answer, never past
 * its nextUpdate; 0 for an answer to a nonce) and, read from a successful answer, ETag,
 * Last-Modified and Expires; or 304 and no body to a conditional GET it matches. */
static void est_ocsp_answer(const est_req *rq, est_resp *rs, int is_get, int cacheable,
                            const est_ocsp_meta *m)
{
    rs->status = 200;
    snprintf(rs->content_type, sizeof rs->content_type, "application/ocsp-response");
    if (!is_get) {
        return;
    }
    long age = cacheable ? EST_OCSP_TTL : 0;
    int validators = cacheable && m->valid;
    if (validators) {
        est_resp_header(rs, "ETag", m->etag);
        est_resp_header(rs, "Last-Modified", m->last_modified);
        if (m->next_update) {
            est_resp_header(rs, "Expires", m->expires);
            long left = (long)(m->next_update - time(NULL));
            age = left < age ? (left > 0 ? left : 0) : age;
        }
    }
    char cc[80];
    snprintf(cc, sizeof cc, "max-age=%ld, public, no-transform, must-revalidate", age);
    est_resp_header(rs, "Cache-Control", cc);
    if (validators && est_not_modified(rq, m->etag, m->this_update)) {
        rs->status = 304; /* RFC 9110 15.4.5: no content, the validators again */
        rs->not_modified_len = rs->body.len;
        rs->content_type[0] = 0;
        kl_buf_reset(&rs->body);
    }
}

int est_handle_ocsp_fast(est_req *rq, est_resp *rs)
{
    est_route route;
    if (est_route_parse(rq->path, &route) != KL_OK || route.ep != EST_EP_OCSP) {
        return 0;
    }
    est_req probe = *rq;
    probe.route = route;
    est_resp scratch;
    est_resp_init(&scratch);
    kl_buf der;
    kl_buf_init(&der, EST_OCSP_MAX_REQ, 0);
    int is_get = 0;
    est_ocsp_meta meta;
    int hit = est_ocsp_request_der(&probe, &scratch, &der, &is_get) &&
              est_ocsp_front_get(der.data, der.len, &rs->body, &meta);
    if (hit) {
        rq->route = route;
        est_ocsp_answer(rq, rs, is_get, 1, &meta);
        snprintf(rq->note, sizeof rq->note, "ocsp (front cache)");
    }
    est_resp_free(&scratch);
    kl_buf_free(&der);
    return hit;
}

void est_handle_ocsp(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    kl_buf der;
    kl_buf_init(&der, EST_OCSP_MAX_REQ, 0);
    OCSP_REQUEST *req = NULL;
    int is_get = 0;

    if (!est_ocsp_request_der(rq, rs, &der, &is_get)) {
        goto done;
    }

    const unsigned char *p = der.data;
    req = d2i_OCSP_REQUEST(NULL, &p, (long)der.len);
    if (!req || p != der.data + der.len) {
        snprintf(rq->note, sizeof rq->note, "malformed OCSP request");
        est_ocsp_status_resp(rs, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        goto done;
    }
    /* A nonce makes the answer unique to this request: never cached (RFC 5019 4 prefers
     * none); keyline-cad caches the others. */
    int cacheable = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1) < 0;
    kl_rc rc = est_cad_ocsp(s, der.data, der.len, &rs->body);
    if (rc != KL_OK) {
        snprintf(rq->note, sizeof rq->note, "%s", kl_errmsg());
        kl_error("OCSP: %s", kl_errmsg());
        if (rc == KL_EHSM || rc == KL_EPIN || rc == KL_ELOCKED) {
            est_metrics_hsm_error(&s->metrics);
        }
        if (rc == KL_EIO || rc == KL_ETIMEOUT || rc == KL_EUNAVAIL) {
            est_metrics_cad_error(&s->metrics);
        }
        /* RFC 6960 2.3: tryLater / internalError are answered as OCSP responses */
        /* HSM, keyline-cad and store failures are transient: tryLater (docs/est.md). */
        int later = rc == KL_EHSM || rc == KL_EPIN || rc == KL_ELOCKED || rc == KL_EIO ||
                    rc == KL_ETIMEOUT || rc == KL_EUNAVAIL;
        est_ocsp_status_resp(rs, rc == KL_EINPUT ? OCSP_RESPONSE_STATUS_MALFORMEDREQUEST
                                 : later         ? OCSP_RESPONSE_STATUS_TRYLATER
                                                 : OCSP_RESPONSE_STATUS_INTERNALERROR);
        goto done;
    }
    est_ocsp_meta meta = {0};
    if (cacheable) {
        est_ocsp_meta_of(rs->body.data, rs->body.len, &meta);
        est_ocsp_front_put(der.data, der.len, &rs->body, &meta);
    }
    est_ocsp_answer(rq, rs, is_get, cacheable, &meta);
done:
    OCSP_REQUEST_free(req);
    kl_buf_free(&der);
}
