/* Fuzz the CSR front of the issuance pipeline: PEM/DER parsing, signature check (ca_csr_load,
 * checked against OpenSSL's d2i_X509_REQ + X509_REQ_verify), template policy (device-ldevid and
 * est-server) and lint, without the HSM; ca_req_parse (keyline-estd's, no signature check)
 * against d2i_X509_REQ; and ca_x509_load against d2i_X509 on the same bytes (the corpus holds
 * certificates too). */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "tpl.h"

#ifndef KEYLINE_TEMPLATES_DIR
#define KEYLINE_TEMPLATES_DIR "templates"
#endif

static tpl *fz_tpls[2];

static void fz_policy(const tpl *t, X509_REQ *req)
{
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    X509 *tbs = NULL;
    ASN1_INTEGER_set_uint64(serial, 0x4123456789abcdefULL);
    tpl_policy_in in = {.t = t,
                        .csr = req,
                        .device_id = "HW1",
                        .now = 1700000000,
                        .crl_url = "http://x/{issuer}.crl",
                        .issuer_label = "fz"};
    if (tpl_policy_build(&in, serial, &tbs) == KL_OK) {
        if (tpl_lint(t, tbs, NULL) != KL_OK) {
            /* policy output that fails lint is acceptable only for self-issued test mode */
        }
        X509_free(tbs);
    }
    ASN1_INTEGER_free(serial);
}

/* differential: ca_x509_load (EC fast path or d2i_X509) parses the same certificates, to the
 * same object, as d2i_X509 */
static void fz_x509(const uint8_t *data, size_t size)
{
    X509 *x = NULL;
    kl_rc rc = ca_x509_load(data, size, &x, NULL);
    const unsigned char *p = data;
    X509 *y = size > 0 ? d2i_X509(NULL, &p, (long)size) : NULL;
    int ok = y && p == data + size;
    if ((rc == KL_OK) != ok || (ok && X509_cmp(x, y) != 0)) {
        abort();
    }
    X509_free(x);
    X509_free(y);
}

/* differential: ca_req_parse (EC fast path or d2i_X509_REQ, no signature check) accepts exactly
 * what d2i_X509_REQ takes whole, as the same request */
static void fz_req(const uint8_t *data, size_t size)
{
    X509_REQ *x = NULL;
    kl_rc rc = ca_req_parse(data, size, &x);
    const unsigned char *p = data;
    X509_REQ *y = size > 0 ? d2i_X509_REQ(NULL, &p, (long)size) : NULL;
    int ok = y && p == data + size;
    unsigned char *ex = NULL, *ey = NULL;
    int lx = ok && rc == KL_OK ? i2d_X509_REQ(x, &ex) : 0;
    int ly = ok && rc == KL_OK ? i2d_X509_REQ(y, &ey) : 0;
    if ((rc == KL_OK) != ok || lx != ly || (lx > 0 && memcmp(ex, ey, (size_t)lx) != 0)) {
        abort();
    }
    OPENSSL_free(ex);
    OPENSSL_free(ey);
    X509_REQ_free(x);
    X509_REQ_free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_x509(data, size);
    fz_req(data, size);
    if (!fz_tpls[0]) {
        if (tpl_load(KEYLINE_TEMPLATES_DIR, "device-ldevid", &fz_tpls[0]) != KL_OK ||
            tpl_load(KEYLINE_TEMPLATES_DIR, "est-server", &fz_tpls[1]) != KL_OK) {
            abort();
        }
    }
    uint8_t *der = NULL;
    size_t len = 0;
    if (ca_csr_to_der(data, size, &der, &len) == KL_OK) {
        const unsigned char *p = der;
        X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
        if (!req) {
            abort(); /* ca_csr_to_der re-encoded it: it must parse again */
        }
        EVP_PKEY *k = X509_REQ_get0_pubkey(req);
        int slow_ok = k && X509_REQ_verify(req, k) == 1;
        /* differential: ca_csr_load (EC fast path or general path) agrees with OpenSSL */
        ca_csr *c = NULL;
        kl_rc rc = ca_csr_load(der, len, &c);
        if ((rc == KL_OK) != slow_ok) {
            abort();
        }
        fz_policy(fz_tpls[0], c ? ca_csr_req(c) : req);
        fz_policy(fz_tpls[1], req);
        ca_csr_free(c);
        X509_REQ_free(req);
        OPENSSL_free(der);
    }
    ERR_clear_error();
    return 0;
}
