/* keyline-ca ocsp-signer new: a CA's delegated OCSP signer (docs/ca.md "OCSP") with a new key,
 * after the old one was revoked (its key thought compromised) or expired: a revoked signer is
 * never renewed (it carries id-pkix-ocsp-nocheck: renewing it would certify a possibly stolen
 * key again), and until this runs the CA signs its own answers. Under [ceremony] quorum it is
 * a ceremony (ca/ceremony_ops.c): the new key speaks for every certificate of the CA, and no
 * relying party can ever see it revoked. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_backend.h"
#include "ca_csr.h"
#include "keyline-ca.h"

static kl_rc cmd_ocsp_signer_new(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *issuer = NULL, *out = NULL;
    int replace = 0;
    ca_ctx *ca = NULL;
    ca_ocsp_signer_made made;
    char *sn = NULL;
    memset(&made, 0, sizeof made);
    static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
                                         {"replace", no_argument, NULL, 'r'},
                                         {"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:ro:", opts)) != -1) {
        switch (ch) {
        case 'i': issuer = optarg; break;
        case 'r': replace = 1; break;
        case 'o': out = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ocsp-signer new: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "ocsp-signer new: unexpected argument '%s'", argv[optind]);
    ENSURE(issuer, KL_EUSAGE, "ocsp-signer new needs --issuer LABEL");
    TRY(cli_out_check(c, out)); /* before a key is destroyed or made */
    TRY(cli_open(c, 1, &ca));
    TRY(ca_ocsp_signer_new(ca, issuer, replace, c->actor, &made));
    sn = ca_serial_hex(X509_get0_serialNumber(made.cert));
    if (!made.old_serial[0]) {
        fprintf(stderr,
                "keyline-ca: %s had no OCSP signer: made %s" CA_OCSP_SUFFIX ", certificate %s\n",
                issuer, issuer, sn ? sn : "?");
    } else {
        fprintf(stderr,
                "keyline-ca: OCSP signer %s" CA_OCSP_SUFFIX ": new key, certificate %s; the old "
                "certificate %s %s, its key %s\n",
                issuer, sn ? sn : "?", made.old_serial,
                made.superseded ? "revoked now (superseded)" : "was revoked already",
                made.old_key_destroyed ? "destroyed" : "was not in the token");
    }
    TRY(cli_output_cert(c, out, made.cert));
    /* the old certificate's revocation in the CA's CRL, as keyline-ca revoke publishes one */
    rc = made.superseded ? cli_crl_publish(ca, issuer, "the replaced OCSP signer", NULL) : KL_OK;
    if (rc != KL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        rc = kl_fail(rc,
                     "the new OCSP signer is in place, but the CRL of %s was not published: %s "
                     "(run keyline-ca crl --issuer %s)",
                     issuer, why, issuer);
    }
out:
    OPENSSL_free(sn);
    X509_free(made.cert);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_ocsp_table[] = {
    {"new", cmd_ocsp_signer_new, "--issuer L [--replace] [--out FILE]",
     "a new key for L's delegated OCSP signer after a revocation or expiry: the old key "
     "destroyed, the new one made in the token and certified by L, the certificate printed "
     "(--replace: also while the signer is current; its certificate is revoked, superseded)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_ocsp_signer(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_ocsp_table, "ocsp-signer", argc - 1, argv + 1);
}
