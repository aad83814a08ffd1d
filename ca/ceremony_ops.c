/* keyline: the operations that need the quorum, and how a ceremony runs each (ceremony.h).
 * A row per guarded command: its words, its options (as the plain command names them, with
 * the plain command's defaults) and a run function calling the same library function. */
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "ca_image.h"
#include "ceremony.h"

/* label, serial and the fingerprints of `cert` and its key into `res`. */
static kl_rc ceremony_res_cert(ceremony_kvs *res, const char *label, X509 *cert)
{
    kl_rc rc = KL_OK;
    char sha[65];
    char *serial = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(serial, KL_EINTERNAL, "out of memory");
    TRY(ceremony_kvs_set(res, "label", label));
    TRY(ceremony_kvs_set(res, "serial", serial));
    TRY(ceremony_cert_sha256(cert, sha));
    TRY(ceremony_kvs_set(res, "cert-sha256", sha));
    TRY(ceremony_key_sha256(X509_get0_pubkey(cert), sha));
    TRY(ceremony_kvs_set(res, "key-sha256", sha));
out:
    OPENSSL_free(serial);
    return rc;
}

/* The new CA's first CRL, as the plain command publishes it; its number into `res`. */
static kl_rc ceremony_res_crl(ca_ctx *ca, ceremony_kvs *res, const char *label)
{
    kl_rc rc = KL_OK;
    X509_CRL *crl = NULL;
    char num[32];
    if (ca_is_ocsp_signer_label(label) || ca_is_firmware_key(ca, label)) {
        return KL_OK; /* a delegated OCSP signer or a firmware key issues no CRL */
    }
    TRY(ca_crl(ca, label, &crl));
    ASN1_INTEGER *n = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    snprintf(num, sizeof num, "%lld", n ? (long long)ASN1_INTEGER_get(n) : -1LL);
    ASN1_INTEGER_free(n);
    TRY(ceremony_kvs_set(res, "crl-number", num));
out:
    X509_CRL_free(crl);
    return rc;
}

static kl_rc ceremony_key_type(const ceremony_req *r, hsm_key_type *kt)
{
    const char *name = ceremony_req_get(r, "key-type");
    int t = hsm_key_type_from_name(name ? name : "ec-p256");
    if (t < 0) {
        return kl_fail(KL_EUSAGE, "unknown key type '%s' (ec-p256, ec-p384, rsa-3072)", name);
    }
    *kt = (hsm_key_type)t;
    return KL_OK;
}

static kl_rc ceremony_run_ca_create(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    ca_create_req rq = {.label = ceremony_req_get(r, "label"),
                        .template_name = ceremony_req_get(r, "template"),
                        .subject = ceremony_req_get(r, "subject"),
                        .issuer = ceremony_req_get(r, "issuer"),
                        .token = ceremony_req_get(r, "token"),
                        .actor = actor};
    TRY(ceremony_key_type(r, &rq.key_type));
    TRY(ca_create_run(ca, &rq, &cert));
    TRY(ceremony_res_cert(res, rq.label, cert));
    TRY(ceremony_res_crl(ca, res, rq.label));
out:
    X509_free(cert);
    return rc;
}

static kl_rc ceremony_run_ca_rotate(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    const char *label = ceremony_req_get(r, "new-label");
    ca_rotate_req rq = {.label = ceremony_req_get(r, "label"),
                        .new_label = label,
                        .issuer = ceremony_req_get(r, "issuer"),
                        .token = ceremony_req_get(r, "token"),
                        .actor = actor};
    TRY(ceremony_key_type(r, &rq.key_type));
    TRY(ca_rotate(ca, &rq, &cert));
    TRY(ceremony_res_cert(res, label, cert));
    TRY(ceremony_res_crl(ca, res, label));
out:
    X509_free(cert);
    return rc;
}

/* Every row: the plain command's words and options (its defaults made explicit), so that what
 * the officers sign is what the plain command would have done. */
const ceremony_op ceremony_ops[] = {
    {"ca create",
     "generate a CA key in the token and its certificate",
     {{"label", 1, NULL},
      {"template", 1, NULL},
      {"subject", 1, NULL},
      {"key-type", 0, "ec-p256"},
      {"issuer", 0, NULL},
      {"token", 0, NULL},
      {NULL, 0, NULL}},
     ceremony_run_ca_create},
    {"ca rotate",
     "new CA key in the token (and rollover certificates for a root)",
     {{"label", 1, NULL},
      {"new-label", 1, NULL},
      {"key-type", 0, "ec-p256"},
      {"issuer", 0, NULL},
      {"token", 0, NULL},
      {NULL, 0, NULL}},
     ceremony_run_ca_rotate},
    {NULL, NULL, {{NULL, 0, NULL}}, NULL},
};
