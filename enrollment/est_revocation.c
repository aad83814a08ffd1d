/* keyline-estd: revocation in the field. /crl/<issuer>.crl and /ocsp (RFC 6960, RFC 5019): the
 * HTTP side (methods, GET base64, content types, caching headers); the CRLs and OCSP answers
 * come from keyline-cad (its crl and ocsp ops), which signs and caches them:
 *   CRL:  re-signed when the CA's revocation epoch moves or half-way to nextUpdate; a root's (a
 *         CA keyline-cad does not sign CRLs for, [cad] ca-keys) is the officer's published one.
 *   OCSP: answers to nonce-less requests cached until a revocation epoch moves (at most 60 s);
 *         the delegated OCSP signers are made and renewed by keyline-cad. */
#include <openssl/crypto.h>
#include <openssl/ocsp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "est.h"
#include "kl_b64.h"
#include "kl_log.h"

/* seconds a relying party may keep a nonce-less OCSP answer (RFC 5019 6: max-age), as long as
 * keyline-cad keeps it */
#define EST_OCSP_TTL 60
#define EST_OCSP_MAX_REQ 16384

/* ---------------------------------------------------------------------------------------- */
/* CRL                                                                                       */

void est_handle_crl(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    const char *label = rq->route.label;
    if (!(strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0)) {
        est_resp_text(rs, 405, "method not allowed");
        est_resp_header(rs, "Allow", "GET, HEAD");
        return;
    }
    kl_rc rc = est_cad_crl(s, label, &rs->body);
    if (rc == KL_OK) {
        rs->status = 200;
        /* RFC 5280 4.2.1.13 / RFC 2585 4.2: DER, application/pkix-crl */
        snprintf(rs->content_type, sizeof rs->content_type, "application/pkix-crl");
        snprintf(rq->note, sizeof rq->note, "crl %s", label);
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

void est_handle_ocsp(est_req *rq, est_resp *rs)
{
    est_server *s = rq->srv;
    kl_buf der;
    kl_buf_init(&der, EST_OCSP_MAX_REQ, 0);
    OCSP_REQUEST *req = NULL;
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
    OCSP_REQUEST_free(req);
    kl_buf_free(&der);
}
