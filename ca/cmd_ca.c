/* keyline-ca ca create|cert|list */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyline-ca.h"
#include "ca_backend.h"

static kl_rc cmd_ca_create(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *label = NULL, *tname = NULL, *subject = NULL, *issuer = NULL;
    const char *ktype = "ec-p256";
    ca_ctx *ca = NULL;
    X509 *cert = NULL;
    static const struct option opts[] = {
        {"label", required_argument, NULL, 'l'},   {"template", required_argument, NULL, 't'},
        {"subject", required_argument, NULL, 's'}, {"key-type", required_argument, NULL, 'k'},
        {"issuer", required_argument, NULL, 'i'},  {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "l:t:s:k:i:", opts, NULL)) != -1) {
        switch (ch) {
        case 'l': label = optarg; break;
        case 't': tname = optarg; break;
        case 's': subject = optarg; break;
        case 'k': ktype = optarg; break;
        case 'i': issuer = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca create: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "ca create: unexpected argument '%s'", argv[optind]);
    ENSURE(label && tname && subject, KL_EUSAGE,
           "ca create needs --label, --template and --subject");
    int kt = hsm_key_type_from_name(ktype);
    ENSURE(kt >= 0, KL_EUSAGE, "unknown key type '%s' (ec-p256, ec-p384, rsa-3072)", ktype);
    TRY(cli_open(c, 1, &ca));
    TRY(ca_create(ca, label, tname, subject, (hsm_key_type)kt, issuer, c->actor, &cert));
    TRY(cli_output_cert(c, NULL, cert));
    if (!ca_is_ocsp_signer_label(label)) { /* a delegated OCSP signer issues no CRL */
        rc = cli_crl_publish(ca, label, "the new CA's first", NULL);
        if (rc != KL_OK) {
            rc = kl_wrap(rc,
                         "CA '%s' was created, but its first CRL was not published "
                         "(keyline-ca crl --issuer %s publishes one)",
                         label, label);
        }
    }
out:
    X509_free(cert);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ca_cert(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *label = NULL, *out_path = NULL;
    int chain = 0;
    ca_ctx *ca = NULL;
    STACK_OF(X509) *sk = NULL;
    static const struct option opts[] = {{"label", required_argument, NULL, 'l'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"chain", no_argument, NULL, 'C'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "l:o:", opts, NULL)) != -1) {
        switch (ch) {
        case 'l': label = optarg; break;
        case 'o': out_path = optarg; break;
        case 'C': chain = 1; break;
        default: return kl_fail(KL_EUSAGE, "ca cert: bad option (see --help)");
        }
    }
    ENSURE(label && optind == argc, KL_EUSAGE, "ca cert needs --label L");
    TRY(cli_open(c, 0, &ca));
    TRY(ca_chain(ca, label, &sk));
    TRY(cli_output_certs(c, out_path, sk, chain ? sk_X509_num(sk) : 1));
out:
    sk_X509_pop_free(sk, X509_free);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ca_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_ca *list = NULL;
    size_t n = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "ca list takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(store_ca_list(ca_store(ca), &list, &n));
    printf("%-20s %-14s %-16s %-9s %-8s %-20s %s\n", "LABEL", "TEMPLATE", "ISSUER", "KEY", "STATUS",
           "NOT AFTER", "SUBJECT");
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = list[i].der;
        X509 *x = d2i_X509(NULL, &p, (long)list[i].der_len);
        char subj[256] = "?", na[32] = "?";
        if (x) {
            X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
            struct tm tm;
            if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) {
                strftime(na, sizeof na, "%Y-%m-%dT%H:%M:%SZ", &tm);
            }
            X509_free(x);
        }
        printf("%-20s %-14s %-16s %-9s %-8s %-20s %s\n", list[i].label, list[i].template_name,
               list[i].parent ? list[i].parent : "(self)", list[i].key_type, list[i].status, na,
               subj);
    }
out:
    store_ca_list_free(list, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ca_rotate(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *label = NULL, *new_label = NULL, *ktype = "ec-p256";
    ca_ctx *ca = NULL;
    X509 *cert = NULL;
    static const struct option opts[] = {{"label", required_argument, NULL, 'l'},
                                         {"new-label", required_argument, NULL, 'n'},
                                         {"key-type", required_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "l:n:k:", opts, NULL)) != -1) {
        switch (ch) {
        case 'l': label = optarg; break;
        case 'n': new_label = optarg; break;
        case 'k': ktype = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca rotate: bad option (see --help)");
        }
    }
    ENSURE(label && new_label && optind == argc, KL_EUSAGE,
           "ca rotate needs --label OLD and --new-label NEW");
    int kt = hsm_key_type_from_name(ktype);
    ENSURE(kt >= 0, KL_EUSAGE, "unknown key type '%s' (ec-p256, ec-p384, rsa-3072)", ktype);
    TRY(cli_open(c, 1, &ca));
    TRY(ca_rotate(ca, label, new_label, (hsm_key_type)kt, c->actor, &cert));
    TRY(cli_output_cert(c, NULL, cert));
    TRY(cli_crl_publish(ca, new_label, "the new CA's first", NULL));
out:
    X509_free(cert);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_ca_table[] = {
    {"create", cmd_ca_create,
     "--label L --template T --subject \"CN=...,O=...\" [--key-type ec-p256|ec-p384|rsa-3072] "
     "[--issuer L2]",
     "generate a CA key in the token and its certificate (self-signed without --issuer)"},
    {"cert", cmd_ca_cert, "--label L [--chain] [--out FILE]",
     "print the CA certificate (PEM); --chain adds its issuers up to the root"},
    {"list", cmd_ca_list, "", "list the CAs"},
    {"rotate", cmd_ca_rotate, "--label OLD --new-label NEW [--key-type K]",
     "new CA key in the token; for a root also the NewWithOld/OldWithNew rollover certificates"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_ca(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_ca_table, "ca", argc - 1, argv + 1);
}
