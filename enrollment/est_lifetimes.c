/* keyline-estd /metrics: the remaining life of what relying parties depend on (issue 14 item
 * 4), read from keyline-cad through the request table's existing ops on each scrape:
 *   keyline_ca_cert_expiry_seconds{ca,subject}  each CA certificate of each profile's chain
 *                                               (cacerts), notAfter - now
 *   keyline_crl_next_update_seconds{ca}         each of those CAs' published CRL (crl by
 *                                               label), nextUpdate - now
 *   keyline_ocsp_signer_expiry_seconds{ca}      the delegated OCSP signer answering for the
 *                                               profile's issuing CA (ocsp), notAfter - now
 * A CA above the issuing one is named by the label in its child's CRL distribution point
 * ([ca] crl-url's {issuer}); without crl-url only the issuing CA's CRL is shown. Negative values
 * mean expired: alert well before 0 (keyline-ca maintain renews at half life). */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "est.h"

#define EST_LT_MAX 32

typedef struct {
    kl_buf ca, crl, ocsp; /* one metric family each: Prometheus wants a family's lines together */
    time_t now;
    char seen[EST_LT_MAX][130]; /* CA labels already shown */
    size_t nseen;
} est_lt;

static int est_lt_once(est_lt *l, const char *label)
{
    for (size_t i = 0; i < l->nseen; i++) {
        if (strcmp(l->seen[i], label) == 0) {
            return 0;
        }
    }
    if (l->nseen < EST_LT_MAX) {
        snprintf(l->seen[l->nseen++], sizeof l->seen[0], "%s", label);
    }
    return 1;
}

static long long est_lt_left(const ASN1_TIME *t, time_t now)
{
    int days = 0, secs = 0;
    ASN1_TIME *n = ASN1_TIME_set(NULL, now);
    int ok = n && ASN1_TIME_diff(&days, &secs, n, t);
    ASN1_TIME_free(n);
    return ok ? (long long)days * 86400 + secs : 0;
}

/* The label of `child`'s issuer, from its CRL distribution point and [ca] crl-url's pattern
 * (http://host/crl/{issuer}.crl); "" when neither gives it. */
static void est_lt_parent_label(est_server *s, X509 *child, char *out, size_t cap)
{
    const char *pat = kl_conf_get(s->conf, "ca", "crl-url");
    const char *brace = pat ? strstr(pat, "{issuer}") : NULL;
    out[0] = 0;
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(child, NID_crl_distribution_points, NULL, NULL);
    for (int i = 0; brace && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        GENERAL_NAMES *gn =
            dp->distpoint && dp->distpoint->type == 0 ? dp->distpoint->name.fullname : NULL;
        for (int j = 0; j < sk_GENERAL_NAME_num(gn); j++) {
            int type = 0;
            ASN1_IA5STRING *uri = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gn, j), &type);
            const char *u = type == GEN_URI ? (const char *)ASN1_STRING_get0_data(uri) : "";
            size_t pre = (size_t)(brace - pat), post = strlen(brace + 8), ul = strlen(u);
            if (ul > pre + post && strncmp(u, pat, pre) == 0 &&
                strcmp(u + ul - post, brace + 8) == 0 && ul - pre - post < cap) {
                snprintf(out, cap, "%.*s", (int)(ul - pre - post), u + pre);
            }
        }
    }
    CRL_DIST_POINTS_free(dps);
}

static kl_rc est_lt_crl(est_server *s, est_lt *l, const char *label)
{
    kl_buf der;
    kl_buf_init(&der, 256u << 20, 0);
    kl_rc rc = est_cad_crl(s, label, &der);
    const unsigned char *p = der.data;
    X509_CRL *crl = rc == KL_OK ? d2i_X509_CRL(NULL, &p, (long)der.len) : NULL;
    const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
    if (next) {
        rc = kl_buf_printf(&l->crl, "keyline_crl_next_update_seconds{ca=\"%s\"} %lld\n", label,
                           est_lt_left(next, l->now));
    }
    X509_CRL_free(crl);
    kl_buf_free(&der);
    return rc == KL_OK || !next ? KL_OK : rc; /* a CA without a CRL here: no gauge */
}

/* The delegated signer answering for `issuer`: an OCSP request for serial 1 under it. */
static kl_rc est_lt_ocsp(est_server *s, est_lt *l, const char *label, X509 *issuer)
{
    kl_rc rc = KL_OK;
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    ASN1_INTEGER *one = ASN1_INTEGER_new();
    OCSP_CERTID *id = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    unsigned char *enc = NULL;
    kl_buf der;
    kl_buf_init(&der, 1u << 20, 0);
    int n = -1;
    if (req && one && ASN1_INTEGER_set(one, 1) &&
        (id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
                               X509_get0_pubkey_bitstr(issuer), one)) &&
        OCSP_request_add0_id(req, id)) {
        id = NULL;
        n = i2d_OCSP_REQUEST(req, &enc);
    }
    if (n > 0 && est_cad_ocsp(s, enc, (size_t)n, &der) == KL_OK) {
        const unsigned char *p = der.data;
        resp = d2i_OCSP_RESPONSE(NULL, &p, (long)der.len);
        bs = resp ? OCSP_response_get1_basic(resp) : NULL;
        const STACK_OF(X509) *certs = bs ? OCSP_resp_get0_certs(bs) : NULL;
        if (sk_X509_num(certs) > 0) { /* a delegated signer sends its certificate */
            rc = kl_buf_printf(&l->ocsp, "keyline_ocsp_signer_expiry_seconds{ca=\"%s\"} %lld\n",
                               label,
                               est_lt_left(X509_get0_notAfter(sk_X509_value(certs, 0)), l->now));
        }
    }
    ERR_clear_error();
    OPENSSL_free(enc);
    OCSP_CERTID_free(id);
    ASN1_INTEGER_free(one);
    OCSP_REQUEST_free(req);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    kl_buf_free(&der);
    return rc;
}

/* `in` as a Prometheus label value (text format: backslash, double quote and line feed
 * escaped as \\, \" and \n); out holds twice in's length. */
static void est_lt_label_escape(const char *in, char *out)
{
    for (; *in; in++) {
        if (*in == '\\' || *in == '"' || *in == '\n') {
            *out++ = '\\';
        }
        *out++ = *in == '\n' ? 'n' : *in;
    }
    *out = 0;
}

/* One profile: its chain (issuing CA first), each CA's certificate and CRL, the signer. */
static kl_rc est_lt_profile(est_server *s, est_lt *l, const char *profile)
{
    kl_rc rc = KL_OK;
    est_profile_info info;
    STACK_OF(X509) *sk = NULL;
    char label[130];
    TRY(est_cad_profile(s, profile, &info));
    TRY(est_cad_certs(s, CAP_OP_CACERTS, profile, &sk));
    snprintf(label, sizeof label, "%s", info.issuer);
    for (int i = 0; i < sk_X509_num(sk) && label[0]; i++) {
        X509 *x = sk_X509_value(sk, i);
        if (est_lt_once(l, label)) {
            char subj[256], esc[2 * sizeof subj];
            X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
            est_lt_label_escape(subj, esc);
            TRY(kl_buf_printf(&l->ca,
                              "keyline_ca_cert_expiry_seconds{ca=\"%s\",subject=\"%s\"} %lld\n",
                              label, esc, est_lt_left(X509_get0_notAfter(x), l->now)));
            TRY(est_lt_crl(s, l, label));
            if (i == 0) {
                TRY(est_lt_ocsp(s, l, label, x));
            }
        }
        if (X509_self_signed(x, 0) == 1) {
            break;
        }
        est_lt_parent_label(s, x, label, sizeof label);
    }
out:
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

kl_rc est_lifetimes_render(est_server *s, kl_buf *out)
{
    kl_rc rc = KL_OK;
    est_lt l = {.now = time(NULL)};
    kl_buf_init(&l.ca, 1u << 20, 0);
    kl_buf_init(&l.crl, 1u << 20, 0);
    kl_buf_init(&l.ocsp, 1u << 20, 0);
    for (size_t i = 0; i < s->cfg.n_labels; i++) {
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++) {
            dup = strcmp(s->cfg.labels[j].profile, s->cfg.labels[i].profile) == 0;
        }
        if (!dup && est_lt_profile(s, &l, s->cfg.labels[i].profile) != KL_OK) {
            continue; /* keyline-cad did not answer for it: keyline_est_cad_up says so */
        }
    }
    const char *ca = "", *crl = "", *ocsp = "";
    TRY(kl_buf_cstr(&l.ca, &ca));
    TRY(kl_buf_cstr(&l.crl, &crl));
    TRY(kl_buf_cstr(&l.ocsp, &ocsp));
    TRY(kl_buf_printf(out,
                      "# HELP keyline_ca_cert_expiry_seconds Seconds until a CA certificate's "
                      "notAfter (negative: expired).\n"
                      "# TYPE keyline_ca_cert_expiry_seconds gauge\n%s"
                      "# HELP keyline_crl_next_update_seconds Seconds until a CA's published "
                      "CRL's nextUpdate (keyline-ca maintain re-signs at half).\n"
                      "# TYPE keyline_crl_next_update_seconds gauge\n%s"
                      "# HELP keyline_ocsp_signer_expiry_seconds Seconds until the delegated "
                      "OCSP signer's notAfter (renewed at half its life).\n"
                      "# TYPE keyline_ocsp_signer_expiry_seconds gauge\n%s",
                      ca, crl, ocsp));
out:
    kl_buf_free(&l.ca);
    kl_buf_free(&l.crl);
    kl_buf_free(&l.ocsp);
    return rc;
}
