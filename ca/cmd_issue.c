/* keyline-ca issue */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_csr.h"
#include "keyline-ca.h"
#include "kl_file.h"

/* The certificate stands (signed, recorded, audited) when only its output failed (a full disk,
 * checked writable before it was signed): say so and how to get it, so that nobody issues a
 * second one. Keeps `rc` (non-zero exit), as revoke does when only its CRL step fails. */
static kl_rc issue_output_failed(kl_rc rc, X509 *cert, const char *out_path)
{
    char why[512];
    snprintf(why, sizeof why, "%s", kl_errmsg());
    char *sh = ca_serial_hex(X509_get0_serialNumber(cert));
    const char *to = out_path && strcmp(out_path, "-") != 0 ? out_path : NULL;
    rc = kl_fail(rc,
                 "certificate %s was issued and recorded; only writing it failed: %s (do not "
                 "issue again: keyline-ca show --serial %s | openssl x509%s%s writes it)",
                 sh ? sh : "(serial unknown: see keyline-ca list)", why, sh ? sh : "SERIAL",
                 to ? " -out " : "", to ? to : "");
    OPENSSL_free(sh);
    return rc;
}

kl_rc cmd_issue(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *issuer = NULL, *tname = NULL, *csr_path = NULL, *out_path = NULL, *dev = NULL;
    ca_ctx *ca = NULL;
    uint8_t *raw = NULL, *der = NULL;
    size_t raw_len = 0, der_len = 0;
    X509 *cert = NULL;
    static const struct option opts[] = {
        {"issuer", required_argument, NULL, 'i'},    {"template", required_argument, NULL, 't'},
        {"csr", required_argument, NULL, 'r'},       {"out", required_argument, NULL, 'o'},
        {"device-id", required_argument, NULL, 'd'}, {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:t:r:o:d:", opts)) != -1) {
        switch (ch) {
        case 'i': issuer = optarg; break;
        case 't': tname = optarg; break;
        case 'r': csr_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'd': dev = optarg; break;
        default: return kl_fail(KL_EUSAGE, "issue: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "issue: unexpected argument '%s'", argv[optind]);
    ENSURE(issuer && tname && csr_path, KL_EUSAGE, "issue needs --issuer, --template and --csr");
    TRY(cli_out_check(c, out_path)); /* before anything is issued */
    TRY(kl_file_read(csr_path, 64 * 1024, &raw, &raw_len));
    rc = ca_csr_to_der(raw, raw_len, &der, &der_len);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "%s", csr_path);
        goto out;
    }
    TRY(cli_open(c, 1, &ca));
    ca_issue_req req = {.issuer = issuer,
                        .template_name = tname,
                        .csr_der = der,
                        .csr_len = der_len,
                        .device_id = dev,
                        .actor = c->actor};
    TRY(ca_issue(ca, &req, &cert));
    rc = cli_output_cert(c, out_path, cert);
    if (rc != KL_OK) {
        rc = issue_output_failed(rc, cert, out_path);
    }
out:
    free(raw);
    OPENSSL_free(der);
    X509_free(cert);
    ca_close(ca);
    return rc;
}
