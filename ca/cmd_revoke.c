/* keyline-ca revoke / crl */
#include <getopt.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyline-ca.h"
#include "ca_backend.h"

kl_rc cmd_revoke(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *serial = NULL, *reason_name = "unspecified";
    ca_ctx *ca = NULL;
    store_cert cert;
    memset(&cert, 0, sizeof cert);
    static const struct option opts[] = {{"serial", required_argument, NULL, 's'},
                                         {"reason", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "s:r:", opts, NULL)) != -1) {
        switch (ch) {
        case 's': serial = optarg; break;
        case 'r': reason_name = optarg; break;
        default: return kl_fail(KL_EUSAGE, "revoke: bad option (see --help)");
        }
    }
    ENSURE(serial && optind == argc, KL_EUSAGE, "revoke needs --serial HEX");
    int reason = ca_reason_from_name(reason_name);
    ENSURE(reason >= 0 && reason != 8, KL_EUSAGE,
           "unknown reason '%s' (unspecified, keyCompromise, cACompromise, affiliationChanged, "
           "superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise)",
           reason_name);
    /* Revocation is a CA action: it takes the officer's token login like issuing. */
    TRY(cli_open(c, 1, &ca));
    TRY(ca_revoke(ca, serial, reason, c->actor));
    printf("revoked %s (%s)\n", serial, reason_name);
    /* The issuer's published CRL follows at once: keyline-estd serves the stored CRL of a CA
     * whose key it does not sign with (a root), so that one changes only here. */
    char norm[64], why[256];
    TRY(ca_serial_normalise(serial, norm, sizeof norm));
    TRY(store_cert_get(ca_store(ca), norm, &cert));
    rc = cli_crl_publish(ca, cert.issuer, "after the revocation", NULL);
    if (rc != KL_OK) {
        snprintf(why, sizeof why, "%s", kl_errmsg());
        rc = kl_fail(rc,
                     "revoked %s, but the CRL of %s was not published: %s (run keyline-ca crl "
                     "--issuer %s)",
                     norm, cert.issuer, why, cert.issuer);
    }
out:
    store_cert_free(&cert);
    ca_close(ca);
    return rc;
}

kl_rc cmd_crl(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *issuer = NULL, *out_path = NULL;
    ca_ctx *ca = NULL;
    X509_CRL *crl = NULL;
    BIO *b = NULL;
    static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "i:o:", opts, NULL)) != -1) {
        switch (ch) {
        case 'i': issuer = optarg; break;
        case 'o': out_path = optarg; break;
        default: return kl_fail(KL_EUSAGE, "crl: bad option (see --help)");
        }
    }
    ENSURE(issuer && optind == argc, KL_EUSAGE, "crl needs --issuer L");
    TRY(cli_out_check(c, out_path)); /* before a CRL is signed */
    TRY(cli_open(c, 1, &ca));
    TRY(cli_crl_publish(ca, issuer, "on request", &crl));
    /* the officer's run for an offline CA (a root) also keeps its delegated OCSP signer,
     * which keyline-estd cannot renew without that CA's key */
    int renewed = 0;
    if (ca_ocsp_signer_due(ca, issuer, NULL)) {
        TRY(ca_ocsp_signer_ensure(ca, issuer, c->actor, &renewed));
    }
    if (renewed) {
        fprintf(stderr, "keyline-ca: renewed the OCSP signer of %s\n", issuer);
    }
    b = BIO_new(BIO_s_mem());
    ENSURE(b && PEM_write_bio_X509_CRL(b, crl), KL_EINTERNAL, "cannot encode CRL");
    char *data;
    long n = BIO_get_mem_data(b, &data);
    TRY(cli_output(c, out_path, data, (size_t)n));
out:
    BIO_free(b);
    X509_CRL_free(crl);
    ca_close(ca);
    return rc;
}
