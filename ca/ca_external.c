/* keyline: CAs whose parent is outside keyline, and CAs on a token of their own.
 *
 *   ca_create_run   ca_create with the key on a given token (ca create --token URI)
 *   ca_create_csr   the key in its token and a PKCS#10 request for an outside parent (an offline
 *                   root kept elsewhere, a corporate PKI); the template waits in the audit
 *                   entry "ca-csr"
 *   ca_import       the parent's certificate for that key, checked (same key, a CA, verifies up
 *                   to the chain's self-signed root) and recorded with its chain
 *
 * The chain's certificates are recorded as CAs with status "external" ("<label>.up1" is the
 * parent, "<label>.up2" its parent...): ca_chain and EST /cacerts serve them, ca_issuer_check
 * checks their validity like any CA's, and nothing is ever signed with them (ca_key_usable).
 * Their certificates go into the certificate table too (status valid, the audit entry "issue"
 * says "external"), so an officer can mark one revoked when its owner revokes it. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_internal.h"

#define CA_UP_SUFFIX ".up"
#define CA_IMPORT_CHAIN_MAX 8

kl_rc ca_create_run(ca_ctx *ca, const ca_create_req *req, X509 **cert_out)
{
    *cert_out = NULL;
    if (req->token) {
        kl_rc rc = ca_token_open(ca, req->label, req->token);
        if (rc != KL_OK) {
            return rc;
        }
    }
    return ca_create(ca, req->label, req->template_name, req->subject, req->key_type, req->issuer,
                     req->actor, cert_out);
}

kl_rc ca_create_csr(ca_ctx *ca, const ca_create_req *req, uint8_t **csr_der, size_t *csr_len)
{
    kl_rc rc = KL_OK;
    const tpl *t = NULL;
    hsm_ctx *h = NULL;
    X509_NAME *name = NULL;
    X509_REQ *csr = NULL;
    EVP_PKEY *pub = NULL, *priv = NULL;
    unsigned char *der = NULL;
    int generated = 0;
    *csr_der = NULL;
    *csr_len = 0;
    ENSURE(!req->issuer, KL_EUSAGE, "--csr-out is for a parent outside keyline: no --issuer");
    TRY(ca_label_check_new(ca, req->label));
    TRY(ca_label_role_check(req->label, req->template_name, NULL));
    TRY(ca_tpl_get(ca, req->template_name, &t));
    ENSURE(t->is_ca, KL_EPOLICY, "template %s is not a CA template", t->name);
    ENSURE(t->key_types & (1u << req->key_type), KL_EPOLICY,
           "key type %s not allowed by template %s", hsm_key_type_name(req->key_type), t->name);
    TRY(ca_subject_parse(req->subject, &name));
    if (req->token) {
        TRY(ca_token_open(ca, req->label, req->token));
    }
    TRY(ca_hsm_of(ca, req->label, &h));
    TRY(ca_key_token_check(ca, h, req->label, req->key_type));
    TRY(hsm_key_generate(h, req->label, req->key_type, &pub));
    generated = 1;
    TRY(hsm_key_load(h, req->label, &priv));
    ENSURE_SSL((csr = X509_REQ_new()) && X509_REQ_set_version(csr, 0) == 1 &&
                   X509_REQ_set_subject_name(csr, name) == 1 && X509_REQ_set_pubkey(csr, pub) == 1,
               KL_EINTERNAL, "cannot build the request");
    ENSURE_SSL(X509_REQ_sign(csr, priv, ca_sign_md(priv)) > 0, KL_EHSM,
               "signing the request in the HSM failed");
    int n = i2d_X509_REQ(csr, &der);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode the request");
    char detail[600];
    snprintf(detail, sizeof detail, "label=%s template=%s key=%s subject=%s token=%s", req->label,
             t->name, hsm_key_type_name(req->key_type), req->subject, hsm_token_label(h));
    TRY(store_audit_append(ca->st, req->actor ? req->actor : "keyline", "ca-csr", detail));
    generated = 0;
    *csr_der = der;
    *csr_len = (size_t)n;
    der = NULL;
out:
    if (generated) {
        ca_key_discard(ca, req->label, NULL, 0, req->actor, rc);
    }
    OPENSSL_free(der);
    X509_REQ_free(csr);
    X509_NAME_free(name);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    return rc;
}

/* The template of the key `label`, from the newest "ca-csr" audit entry naming it. */
static kl_rc ca_import_template(ca_ctx *ca, const char *label, char *out, size_t cap)
{
    store_audit *v = NULL;
    size_t n = 0;
    char want[CA_LABEL_MAX + 16];
    snprintf(want, sizeof want, "label=%s ", label);
    out[0] = 0;
    kl_rc rc = store_audit_list(ca->st, 0, &v, &n);
    for (size_t i = 0; rc == KL_OK && i < n; i++) {
        const char *t = v[i].detail ? strstr(v[i].detail, " template=") : NULL;
        if (t && strcmp(v[i].action, "ca-csr") == 0 &&
            strncmp(v[i].detail, want, strlen(want)) == 0) {
            snprintf(out, cap, "%.*s", (int)strcspn(t + 10, " "), t + 10);
        }
    }
    store_audit_list_free(v, n);
    if (rc == KL_OK && !out[0]) {
        rc = kl_fail(KL_ENOTFOUND,
                     "no request was made for CA '%s' (keyline-ca ca create --label %s ... "
                     "--csr-out FILE first)",
                     label, label);
    }
    return rc;
}

/* PEM (one or more) or one DER certificate. */
static kl_rc ca_certs_parse(const uint8_t *p, size_t n, const char *what, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(p, (int)n);
    X509 *x = NULL;
    ENSURE(sk && b && n < INT32_MAX, KL_EINTERNAL, "out of memory");
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        ENSURE(sk_X509_num(sk) < CA_IMPORT_CHAIN_MAX, KL_EINPUT, "%s: more than %d certificates",
               what, CA_IMPORT_CHAIN_MAX);
        ENSURE(sk_X509_push(sk, x) > 0, KL_EINTERNAL, "out of memory");
        x = NULL;
    }
    ERR_clear_error();
    if (sk_X509_num(sk) == 0 && (x = ca_der_to_x509(p, n)) != NULL) {
        ENSURE(sk_X509_push(sk, x) > 0, KL_EINTERNAL, "out of memory");
        x = NULL;
    }
    ENSURE(sk_X509_num(sk) > 0, KL_EINPUT, "%s: no certificate (PEM or DER) in it", what);
    *out = sk;
    sk = NULL;
out:
    X509_free(x);
    BIO_free(b);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

/* `cert` is a CA certificate for the token's key `label` and verifies up to the last
 * certificate of `chain`, which must be self-signed. */
static kl_rc ca_import_check(ca_ctx *ca, const char *label, X509 *cert, STACK_OF(X509) * chain)
{
    kl_rc rc = KL_OK;
    hsm_ctx *h = NULL;
    EVP_PKEY *pub = NULL;
    X509_STORE *st = NULL;
    X509_STORE_CTX *vc = NULL;
    TRY(ca_hsm_of(ca, label, &h));
    TRY(hsm_key_public(h, label, &pub));
    ENSURE(EVP_PKEY_eq(pub, X509_get0_pubkey(cert)) == 1, KL_EINPUT,
           "the certificate is not for key '%s' on token '%s'", label, hsm_token_label(h));
    ENSURE(X509_check_ca(cert) >= 1 && (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN), KL_EINPUT,
           "the certificate is not a CA certificate (basicConstraints cA, keyCertSign)");
    X509 *anchor = sk_X509_value(chain, sk_X509_num(chain) - 1);
    ENSURE(X509_self_signed(anchor, 1) == 1, KL_EINPUT,
           "the chain must end with its self-signed root");
    ENSURE_SSL((st = X509_STORE_new()) && X509_STORE_add_cert(st, anchor) == 1 &&
                   (vc = X509_STORE_CTX_new()) && X509_STORE_CTX_init(vc, st, cert, chain) == 1,
               KL_EINTERNAL, "cannot set up the chain check");
    if (X509_verify_cert(vc) != 1) {
        int e = X509_STORE_CTX_get_error(vc);
        ENSURE(0, KL_EINPUT, "the certificate does not chain to the given root: %s",
               X509_verify_cert_error_string(e));
    }
out:
    ERR_clear_error();
    EVP_PKEY_free(pub);
    X509_STORE_CTX_free(vc);
    X509_STORE_free(st);
    return rc;
}

/* The certificate row of an external or imported CA certificate (issuer: the label above it). */
static kl_rc ca_import_row(ca_ctx *ca, X509 *x, const char *issuer, const char *tname,
                           const char *actor)
{
    kl_rc rc = KL_OK;
    unsigned char *der = NULL;
    char *serial = ca_serial_hex(X509_get0_serialNumber(x));
    char subject[512], detail[900];
    time_t nb = 0, na = 0;
    int n = i2d_X509(x, &der);
    ENSURE(serial && n > 0, KL_EINTERNAL, "out of memory");
    ENSURE(ca_asn1_time(X509_get0_notBefore(x), &nb) && ca_asn1_time(X509_get0_notAfter(x), &na),
           KL_EINPUT, "certificate %s: bad validity", serial);
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    snprintf(detail, sizeof detail, "serial=%s issuer=%s template=%s subject=%s external", serial,
             issuer, tname, subject);
    store_cert row = {.serial_hex = serial,
                      .issuer = (char *)issuer,
                      .subject = subject,
                      .template_name = (char *)tname,
                      .status = STORE_ST_VALID,
                      .not_before = nb,
                      .not_after = na,
                      .revoke_reason = -1};
    rc = store_cert_insert(ca->st, &row, der, (size_t)n, actor, detail);
    if (rc == KL_EEXIST) { /* the same root above two imported CAs */
        store_cert have;
        memset(&have, 0, sizeof have);
        rc = store_cert_get(ca->st, serial, &have);
        ENSURE(rc != KL_OK || (have.der_len == (size_t)n && memcmp(have.der, der, (size_t)n) == 0),
               KL_EINPUT, "another certificate with serial %s is recorded already", serial);
        store_cert_free(&have);
    }
out:
    OPENSSL_free(der);
    OPENSSL_free(serial);
    return rc;
}

/* Record rows and CA records: the chain as "<label>.upN" (external), then `label`. */
static kl_rc ca_import_record(ca_ctx *ca, const ca_import_req *req, const char *tname, X509 *cert,
                              STACK_OF(X509) * chain)
{
    kl_rc rc = KL_OK;
    int n = sk_X509_num(chain);
    store_ca recs[CA_IMPORT_CHAIN_MAX + 1];
    char labels[CA_IMPORT_CHAIN_MAX + 1][CA_LABEL_MAX + 8];
    size_t nrecs = 0;
    const char *actor = req->actor ? req->actor : "keyline";
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < n; i++) {
        snprintf(labels[i], sizeof labels[i], "%s" CA_UP_SUFFIX "%d", req->label, i + 1);
        TRY(ca_label_check_new(ca, labels[i]));
    }
    for (int i = n - 1; i >= 0; i--) { /* root first: each row's issuer is recorded before it */
        X509 *x = sk_X509_value(chain, i);
        const char *parent = i + 1 < n ? labels[i + 1] : NULL;
        TRY(ca_import_row(ca, x, parent ? parent : labels[i], "external", actor));
        TRY(ca_record_fill(&recs[nrecs++], labels[i], "external", parent, "external", x,
                           CA_ST_EXTERNAL));
    }
    TRY(ca_import_row(ca, cert, labels[0], tname, actor));
    int kt = hsm_key_type_of(X509_get0_pubkey(cert));
    TRY(ca_record_fill(&recs[nrecs++], req->label, tname, labels[0],
                       kt >= 0 ? hsm_key_type_name((hsm_key_type)kt) : "unknown", cert,
                       CA_ST_ACTIVE));
    char detail[300];
    snprintf(detail, sizeof detail, "label=%s parent=%s chain=%d", req->label, labels[0], n);
    TRY(store_ca_put_all(ca->st, recs, nrecs, actor, "ca-import", detail));
out:
    for (size_t i = 0; i < nrecs; i++) {
        OPENSSL_free(recs[i].der);
    }
    return rc;
}

kl_rc ca_import(ca_ctx *ca, const ca_import_req *req, X509 **cert_out)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *certs = NULL, *chain = NULL;
    char tname[64];
    *cert_out = NULL;
    ENSURE(req->label && req->cert && req->chain, KL_EUSAGE,
           "ca import needs the label, the certificate and its chain");
    TRY(ca_label_check_new(ca, req->label));
    TRY(ca_import_template(ca, req->label, tname, sizeof tname));
    TRY(ca_certs_parse(req->cert, req->cert_len, "--cert", &certs));
    ENSURE(sk_X509_num(certs) == 1, KL_EINPUT, "--cert: one certificate expected, found %d",
           sk_X509_num(certs));
    TRY(ca_certs_parse(req->chain, req->chain_len, "--chain", &chain));
    X509 *cert = sk_X509_value(certs, 0);
    TRY(ca_import_check(ca, req->label, cert, chain));
    TRY(ca_import_record(ca, req, tname, cert, chain));
    X509_up_ref(cert);
    *cert_out = cert;
    rc = ca_cert_to_token(ca, req->label, cert);
out:
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}
