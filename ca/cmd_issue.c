/* keyline-ca issue */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyline-ca.h"
#include "kl_file.h"

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
    while ((ch = getopt_long(argc, argv, "i:t:r:o:d:", opts, NULL)) != -1) {
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
    TRY(cli_output_cert(c, out_path, cert));
out:
    free(raw);
    OPENSSL_free(der);
    X509_free(cert);
    ca_close(ca);
    return rc;
}
