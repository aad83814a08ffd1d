/* keyline-estd: its requests to keyline-cad, the CA service (docs/ca-protocol.md). This is all
 * keyline-estd knows of the CA: it holds no PIN, opens no token and no store; keyline-cad
 * applies the template policy, the device binding, the issuer's status, records and audits.
 * Every function returns keyline-cad's own code and message on a refusal, and KL_EUNAVAIL when
 * no keyline-cad of [est] cad answers (or its store is unreachable): est_resp_error makes that a
 * 503 with Retry-After. */
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca_csr.h"
#include "est.h"
#include "kl_log.h"

/* A request built in `req` from here, with room for a CSR or an OCSP request. */
#define EST_CAD_REQ_CAP CAP_REQ_MAX

/* DER -> X509, all of it (ca_x509_load: the EC fast path, OpenSSL 3's decoder costs more). */
static kl_rc est_x509_der(const uint8_t *der, size_t len, X509 **out)
{
    if (ca_x509_load(der, len, out, NULL) != KL_OK) {
        return kl_fail_ssl(KL_EIO, "keyline-cad sent a certificate that does not parse");
    }
    return KL_OK;
}

/* keyline-cad's own TLS certificate refused while connecting (KL_EAUTH before any answer):
 * no trusted daemon for this request, as if none answered (503), not a refusal of the client
 * the request names, which keyline-cad answers with the same code. */
static kl_rc est_cad_rc(kl_rc rc)
{
    return rc == KL_EAUTH && !cac_thread_answered()
               ? kl_wrap(KL_EUNAVAIL, "no keyline-cad whose certificate is trusted")
               : rc;
}

static kl_rc est_cac_call(est_server *s, kl_buf *req, cac_resp *resp)
{
    return est_cad_rc(cac_call(s->cad, req, resp));
}

/* One request with a single field; the answer in resp (cac_resp_free in every case). */
static kl_rc est_cad_call1(est_server *s, cap_op op, cap_tag tag, const void *val, size_t len,
                           cac_resp *resp)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    kl_buf_init(&req, EST_CAD_REQ_CAP, 0);
    TRY(cap_msg_begin(&req, op, 0));
    TRY(cap_put_bytes(&req, tag, val, len));
    TRY(cap_msg_end(&req));
    TRY(est_cac_call(s, &req, resp));
out:
    kl_buf_free(&req);
    return rc;
}

/* The same with a string field. */
static kl_rc est_cad_call_str(est_server *s, cap_op op, cap_tag tag, const char *val,
                              cac_resp *resp)
{
    return est_cad_call1(s, op, tag, val, strlen(val), resp);
}

kl_rc est_cad_open(est_server *s, unsigned wait_s)
{
    char roles[256] = "";
    kl_rc rc = KL_OK;
    time_t until = time(NULL) + wait_s;
    cac_cfg cfg = {.addrs = s->cfg.cad,
                   .base_dir = kl_conf_dir(s->conf),
                   .tls_cert = s->cfg.cad_tls_cert,
                   .tls_key = s->cfg.cad_tls_key,
                   .tls_ca = s->cfg.cad_tls_ca,
                   .timeout_s = s->cfg.cad_timeout};
    for (int tries = 0;; tries++) {
        rc = cac_open_cfg(&s->cad, &cfg, roles, sizeof roles);
        if (rc != KL_EUNAVAIL || time(NULL) >= until) {
            break;
        }
        if (tries == 0) {
            kl_info("waiting up to %us for keyline-cad at %s: %s", wait_s, s->cfg.cad, kl_errmsg());
        }
        usleep(200 * 1000);
    }
    if (rc != KL_OK) {
        return kl_wrap(rc, "keyline-cad at %s", s->cfg.cad);
    }
    kl_info("keyline-cad at %s (answered: %s): this process has role%s %s there; it holds no CA "
            "PIN, token or store",
            s->cfg.cad, cac_addr_current(s->cad), strchr(roles, ',') ? "s" : "",
            roles[0] ? roles : "(none)");
    return KL_OK;
}

kl_rc est_cad_hello(est_server *s)
{
    cac_resp resp;
    const uint8_t version[8] = {0, 0, 0, 0, 0, 0, 0, CAP_VERSION}; /* u64, big-endian */
    memset(&resp, 0, sizeof resp);
    kl_rc rc = est_cad_call1(s, CAP_OP_HELLO, CAP_T_VERSION, version, sizeof version, &resp);
    cac_resp_free(&resp);
    return rc;
}

kl_rc est_cad_profile(est_server *s, const char *profile, est_profile_info *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    char kt[17] = "";
    memset(&resp, 0, sizeof resp);
    memset(out, 0, sizeof *out);
    TRY(est_cad_call_str(s, CAP_OP_PROFILE, CAP_T_PROFILE, profile, &resp));
    TRY(cap_get_str(&resp.msg, CAP_T_ISSUER, out->issuer, sizeof out->issuer));
    /* the first key type is the one the profile prefers (and a server-made key gets) */
    if (cap_find(&resp.msg, CAP_T_KEY_TYPE, 0)) {
        TRY(cap_get_str(&resp.msg, CAP_T_KEY_TYPE, kt, sizeof kt));
    }
    if (strcmp(kt, "ec-p384") == 0) {
        out->key_nid = NID_secp384r1;
    } else if (strcmp(kt, "rsa-3072") == 0) {
        out->key_nid = NID_rsaEncryption;
        out->rsa_bits = 3072;
    } else {
        ENSURE(!kt[0] || strcmp(kt, "ec-p256") == 0, KL_EIO,
               "keyline-cad: profile %s takes key type '%s', which keyline-estd does not know",
               profile, kt);
        out->key_nid = NID_X9_62_prime256v1;
    }
    out->device_cert = cap_get_u64(&resp.msg, CAP_T_DEVICE_CERT, 0) == 1;
out:
    cac_resp_free(&resp);
    return rc;
}

kl_rc est_cad_certs(est_server *s, cap_op op, const char *name, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    X509 *x = NULL;
    memset(&resp, 0, sizeof resp);
    *out = sk_X509_new_null();
    ENSURE(*out, KL_EINTERNAL, "out of memory");
    TRY(est_cad_call_str(s, op, op == CAP_OP_CACERTS ? CAP_T_PROFILE : CAP_T_ISSUER, name, &resp));
    const cap_field *f;
    for (size_t i = 0; (f = cap_find(&resp.msg, CAP_T_CA_CERT, i)) != NULL; i++) {
        TRY(est_x509_der(f->val, f->len, &x));
        ENSURE(sk_X509_push(*out, x) > 0, KL_EINTERNAL, "out of memory");
        x = NULL;
    }
out:
    X509_free(x);
    cac_resp_free(&resp);
    if (rc != KL_OK) {
        sk_X509_pop_free(*out, X509_free);
        *out = NULL;
    }
    return rc;
}

kl_rc est_cad_cert_status(est_server *s, const uint8_t *der, size_t der_len, const char *serial,
                          est_cert_state *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, 128 * 1024, 0);
    memset(&resp, 0, sizeof resp);
    memset(out, 0, sizeof *out);
    TRY(cap_msg_begin(&req, CAP_OP_CERT_STATUS, 0));
    if (der) {
        TRY(cap_put_bytes(&req, CAP_T_CERT, der, der_len));
    } else {
        TRY(cap_put_str(&req, CAP_T_SERIAL, serial));
    }
    TRY(cap_msg_end(&req));
    TRY(est_cac_call(s, &req, &resp));
    TRY(cap_get_str(&resp.msg, CAP_T_SERIAL, out->serial, sizeof out->serial));
    TRY(cap_get_str(&resp.msg, CAP_T_STATUS, out->status, sizeof out->status));
    if (cap_find(&resp.msg, CAP_T_ISSUER, 0)) {
        TRY(cap_get_str(&resp.msg, CAP_T_ISSUER, out->issuer, sizeof out->issuer));
    }
    if (cap_find(&resp.msg, CAP_T_DEVICE_ID, 0)) {
        TRY(cap_get_str(&resp.msg, CAP_T_DEVICE_ID, out->device_id, sizeof out->device_id));
    }
    out->not_after = (time_t)cap_get_u64(&resp.msg, CAP_T_NOT_AFTER, 0);
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc est_cad_issue(est_server *s, const cac_issue_req *r, uint8_t **der, size_t *len,
                    char serial[65], char *device, size_t cap)
{
    *der = NULL;
    *len = 0;
    kl_rc rc = est_cad_rc(cac_issue_bound(s->cad, r, der, len, serial, device, cap));
    if (rc != KL_OK) {
        return rc;
    }
    /* one DER SEQUENCE, all of the bytes: what the client is given is at least well formed */
    const unsigned char *p = *der;
    long body = 0;
    int tag = 0, cls = 0;
    int ret =
        *len > 0 && *len <= LONG_MAX ? ASN1_get_object(&p, &body, &tag, &cls, (long)*len) : 0x80;
    if (ret != V_ASN1_CONSTRUCTED || tag != V_ASN1_SEQUENCE || cls != V_ASN1_UNIVERSAL ||
        p + body != *der + *len) {
        free(*der);
        *der = NULL;
        *len = 0;
        ERR_clear_error();
        return kl_fail(KL_EIO, "keyline-cad sent a certificate that is not one DER SEQUENCE");
    }
    return KL_OK;
}

kl_rc est_cad_submit(est_server *s, const cac_issue_req *r, est_held *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, EST_CAD_REQ_CAP, 0);
    memset(&resp, 0, sizeof resp);
    memset(out, 0, sizeof *out);
    TRY(cap_msg_begin(&req, CAP_OP_SUBMIT, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, r->profile));
    TRY(cap_put_bytes(&req, CAP_T_CSR, r->csr, r->csr_len));
    TRY(cap_put_str(&req, CAP_T_AUTH, r->auth.method));
    TRY(cap_put_str(&req, CAP_T_AUTH_SERIAL, r->auth.client_serial));
    TRY(cap_put_str(&req, CAP_T_AUTH_USER, r->auth.user));
    if (r->auth.client_cert) {
        TRY(cap_put_bytes(&req, CAP_T_AUTH_CERT, r->auth.client_cert, r->auth.client_cert_len));
    }
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, r->device_id));
    TRY(cap_msg_end(&req));
    TRY(est_cac_call(s, &req, &resp));
    out->id = (long long)cap_get_u64(&resp.msg, CAP_T_REQUEST_ID, 0);
    TRY(cap_get_str(&resp.msg, CAP_T_STATUS, out->status, sizeof out->status));
    const cap_field *m = cap_find(&resp.msg, CAP_T_MESSAGE, 0);
    if (m) {
        snprintf(out->message, sizeof out->message, "%.*s",
                 (int)(m->len < sizeof out->message ? m->len : sizeof out->message - 1),
                 (const char *)m->val);
    }
    const cap_field *c = cap_find(&resp.msg, CAP_T_CERT, 0);
    if (c) {
        TRY(est_x509_der(c->val, c->len, &out->cert));
    }
    ENSURE(strcmp(out->status, "approved") != 0 || out->cert, KL_EIO,
           "keyline-cad: request %lld approved without a certificate", out->id);
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

void est_held_free(est_held *h)
{
    X509_free(h->cert);
    h->cert = NULL;
}

/* The one bytes field of an answer (crl, ocsp-resp) into out. */
static kl_rc est_cad_answer_bytes(const cac_resp *resp, cap_tag tag, kl_buf *out)
{
    const cap_field *f = cap_find(&resp->msg, tag, 0);
    kl_buf_reset(out);
    return f ? kl_buf_put(out, f->val, f->len)
             : kl_fail(KL_EIO, "keyline-cad answered without field %u", tag);
}

kl_rc est_cad_crl(est_server *s, const char *issuer, kl_buf *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    memset(&resp, 0, sizeof resp);
    TRY(est_cad_call_str(s, CAP_OP_CRL, CAP_T_ISSUER, issuer, &resp));
    TRY(est_cad_answer_bytes(&resp, CAP_T_CRL, out));
out:
    cac_resp_free(&resp);
    return rc;
}

kl_rc est_cad_ocsp(est_server *s, const uint8_t *ocsp_req, size_t len, kl_buf *out)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    memset(&resp, 0, sizeof resp);
    TRY(est_cad_call1(s, CAP_OP_OCSP, CAP_T_OCSP_REQ, ocsp_req, len, &resp));
    TRY(est_cad_answer_bytes(&resp, CAP_T_OCSP_RESP, out));
out:
    cac_resp_free(&resp);
    return rc;
}

kl_rc est_cad_pending(est_server *s, const char *profile, uint64_t *n)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    memset(&resp, 0, sizeof resp);
    TRY(est_cad_call_str(s, CAP_OP_PENDING, CAP_T_PROFILE, profile, &resp));
    *n = cap_get_u64(&resp.msg, CAP_T_COUNT, 0);
out:
    cac_resp_free(&resp);
    return rc;
}
