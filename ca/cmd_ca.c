/* keyline-ca ca create|import|cert|list|rotate|retire: the CA key lifecycle (docs/key-ceremony.md).
 * Each subcommand parses its options into the library's request struct (ca.h) and runs it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "keyline-ca.h"
#include "ca_backend.h"
#include "ca_image.h"
#include "kl_file.h"
#include "matter.h"

#define CLI_KEY_TYPES "ec-p256, ec-p384, rsa-3072, rsa-4096, rsa-2048, ed25519"
#define CLI_KEY_TYPES_BAR "ec-p256|ec-p384|rsa-3072|rsa-4096|ed25519"

/* --csr-out: the key and a PEM request for a parent outside keyline (ca import installs it). */
static kl_rc cmd_ca_create_csr(cli *c, ca_ctx *ca, const ca_create_req *req, const char *out)
{
    kl_rc rc = KL_OK;
    uint8_t *der = NULL;
    size_t len = 0;
    X509_REQ *x = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *pem = NULL;
    ENSURE(b, KL_EINTERNAL, "out of memory");
    TRY(cli_out_check(c, out));
    TRY(ca_create_csr(ca, req, &der, &len));
    const unsigned char *p = der;
    ENSURE_SSL((x = d2i_X509_REQ(NULL, &p, (long)len)) && PEM_write_bio_X509_REQ(b, x),
               KL_EINTERNAL, "cannot encode the request");
    long n = BIO_get_mem_data(b, &pem);
    TRY(cli_output(c, out, pem, (size_t)n));
    fprintf(stderr,
            "keyline-ca: key '%s' made; have the parent sign %s, then: keyline-ca ca import "
            "--label %s --cert FILE --chain FILE\n",
            req->label, out, req->label);
out:
    X509_REQ_free(x);
    BIO_free(b);
    OPENSSL_free(der);
    return rc;
}

/* The CA `label` exists (`what`: created, imported, rotated) and its first CRL step is done
 * (crl_rc): print its certificate. Printing comes last, and failing to print says that nothing
 * else failed: run again, the command would make a second CA or refuse the label. */
static kl_rc ca_print_new(cli *c, X509 *cert, const char *label, const char *what, kl_rc crl_rc)
{
    char crl_why[768] = "";
    if (crl_rc != KL_OK) {
        snprintf(crl_why, sizeof crl_why, "%s", kl_errmsg());
    }
    kl_rc orc = cli_output_cert(c, NULL, cert);
    if (orc == KL_OK) {
        return crl_rc != KL_OK ? kl_fail(crl_rc, "%s", crl_why) : KL_OK;
    }
    char why[256];
    snprintf(why, sizeof why, "%s", kl_errmsg());
    if (crl_rc != KL_OK) { /* both: the CRL's message, and that the certificate was not printed */
        return kl_fail(
            crl_rc,
            "%s; printing its certificate failed too: %s (keyline-ca ca cert --label %s prints it)",
            crl_why, why, label);
    }
    return kl_fail(orc,
                   "CA '%s' was %s; only printing its certificate failed: %s (keyline-ca ca "
                   "cert --label %s prints it)",
                   label, what, why, label);
}

static kl_rc cmd_ca_create(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *ktype = "ec-p256", *csr_out = NULL, *vid = NULL, *pid = NULL;
    char msubject[1024];
    ca_create_req req = {.actor = c->actor};
    ca_ctx *ca = NULL;
    X509 *cert = NULL;
    static const struct option opts[] = {
        {"label", required_argument, NULL, 'l'},   {"template", required_argument, NULL, 't'},
        {"subject", required_argument, NULL, 's'}, {"key-type", required_argument, NULL, 'k'},
        {"issuer", required_argument, NULL, 'i'},  {"token", required_argument, NULL, 'T'},
        {"csr-out", required_argument, NULL, 'R'}, {"vid", required_argument, NULL, 1001},
        {"pid", required_argument, NULL, 1002},    {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "l:t:s:k:i:", opts)) != -1) {
        switch (ch) {
        case 'l': req.label = optarg; break;
        case 't': req.template_name = optarg; break;
        case 's': req.subject = optarg; break;
        case 'k': ktype = optarg; break;
        case 'i': req.issuer = optarg; break;
        case 'T': req.token = optarg; break;
        case 'R': csr_out = optarg; break;
        case 1001: vid = optarg; break;
        case 1002: pid = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca create: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "ca create: unexpected argument '%s'", argv[optind]);
    ENSURE(req.label && req.template_name && req.subject, KL_EUSAGE,
           "ca create needs --label, --template and --subject");
    ENSURE(vid || !pid, KL_EUSAGE, "--pid needs --vid");
    if (vid) { /* Matter PAA/PAI (docs/matter.md): the VendorID/ProductID attributes */
        TRY(matter_subject_append(req.subject, vid, pid, msubject, sizeof msubject));
        req.subject = msubject;
    }
    ENSURE(!csr_out || strcmp(csr_out, "-") != 0, KL_EUSAGE, "--csr-out needs a file");
    int kt = hsm_key_type_from_name(ktype);
    ENSURE(kt >= 0, KL_EUSAGE, "unknown key type '%s' (%s)", ktype, CLI_KEY_TYPES);
    req.key_type = (hsm_key_type)kt;
    TRY(cli_open(c, 1, &ca));
    if (csr_out) {
        TRY(cmd_ca_create_csr(c, ca, &req, csr_out));
        goto out;
    }
    TRY(ca_create_run(ca, &req, &cert));
    /* a delegated OCSP signer or a firmware key issues no CRL */
    if (!ca_is_ocsp_signer_label(req.label) && !ca_is_firmware_template(req.template_name)) {
        rc = cli_crl_publish(ca, req.label, "the new CA's first", NULL);
        if (rc != KL_OK) {
            rc = kl_wrap(rc,
                         "CA '%s' was created, but its first CRL was not published "
                         "(keyline-ca crl --issuer %s publishes one)",
                         req.label, req.label);
        }
    }
    rc = ca_print_new(c, cert, req.label, "created", rc);
out:
    X509_free(cert);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ca_import(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *cert_path = NULL, *chain_path = NULL;
    ca_import_req req = {.actor = c->actor};
    uint8_t *cert_b = NULL, *chain_b = NULL;
    ca_ctx *ca = NULL;
    X509 *cert = NULL;
    static const struct option opts[] = {{"label", required_argument, NULL, 'l'},
                                         {"cert", required_argument, NULL, 'C'},
                                         {"chain", required_argument, NULL, 'H'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "l:", opts)) != -1) {
        switch (ch) {
        case 'l': req.label = optarg; break;
        case 'C': cert_path = optarg; break;
        case 'H': chain_path = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca import: bad option (see --help)");
        }
    }
    ENSURE(req.label && cert_path && chain_path && optind == argc, KL_EUSAGE,
           "ca import needs --label L --cert FILE --chain FILE");
    TRY(kl_file_read(cert_path, 64 * 1024, &cert_b, &req.cert_len));
    TRY(kl_file_read(chain_path, 256 * 1024, &chain_b, &req.chain_len));
    req.cert = cert_b;
    req.chain = chain_b;
    TRY(cli_open(c, 1, &ca));
    TRY(ca_import(ca, &req, &cert));
    rc = cli_crl_publish(ca, req.label, "the imported CA's first", NULL);
    rc = ca_print_new(c, cert, req.label, "imported", rc);
out:
    free(cert_b);
    free(chain_b);
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
    while ((ch = cli_getopt(argc, argv, "l:o:", opts)) != -1) {
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
    const char *ktype = "ec-p256";
    ca_rotate_req req = {.actor = c->actor};
    ca_ctx *ca = NULL;
    X509 *cert = NULL;
    static const struct option opts[] = {
        {"label", required_argument, NULL, 'l'},    {"new-label", required_argument, NULL, 'n'},
        {"key-type", required_argument, NULL, 'k'}, {"issuer", required_argument, NULL, 'i'},
        {"token", required_argument, NULL, 'T'},    {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "l:n:k:i:", opts)) != -1) {
        switch (ch) {
        case 'l': req.label = optarg; break;
        case 'n': req.new_label = optarg; break;
        case 'k': ktype = optarg; break;
        case 'i': req.issuer = optarg; break;
        case 'T': req.token = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca rotate: bad option (see --help)");
        }
    }
    ENSURE(req.label && req.new_label && optind == argc, KL_EUSAGE,
           "ca rotate needs --label OLD and --new-label NEW");
    int kt = hsm_key_type_from_name(ktype);
    ENSURE(kt >= 0, KL_EUSAGE, "unknown key type '%s' (%s)", ktype, CLI_KEY_TYPES);
    req.key_type = (hsm_key_type)kt;
    TRY(cli_open(c, 1, &ca));
    TRY(ca_rotate(ca, &req, &cert));
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    rc = store_ca_get(ca_store(ca), req.new_label, &rec);
    int firmware = rc == KL_OK && ca_is_firmware_template(rec.template_name);
    store_ca_free(&rec);
    if (rc == KL_OK && !firmware) { /* a firmware key issues no CRL */
        rc = cli_crl_publish(ca, req.new_label, "the new CA's first", NULL);
    }
    rc = ca_print_new(c, cert, req.new_label, "made by the rotation", rc);
out:
    X509_free(cert);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ca_retire(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_retire_req req = {.actor = c->actor};
    ca_ctx *ca = NULL;
    X509_CRL *crl = NULL;
    static const struct option opts[] = {{"label", required_argument, NULL, 'l'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "l:", opts)) != -1) {
        switch (ch) {
        case 'l': req.label = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ca retire: bad option (see --help)");
        }
    }
    ENSURE(req.label && optind == argc, KL_EUSAGE, "ca retire needs --label L");
    TRY(cli_open(c, 1, &ca));
    int firmware = ca_is_firmware_key(ca, req.label);
    TRY(ca_retire(ca, &req, &crl));
    if (firmware) {
        fprintf(stderr,
                "keyline-ca: firmware key '%s' retired: it signs nothing more, its key is "
                "destroyed in the token\n",
                req.label);
    } else if (crl) {
        ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
        char until[32] = "?";
        struct tm tm;
        if (ASN1_TIME_to_tm(X509_CRL_get0_nextUpdate(crl), &tm)) {
            strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        fprintf(stderr,
                "keyline-ca: CA '%s' retired: final CRL number %lld (nextUpdate %s) published, "
                "its key destroyed in the token\n",
                req.label, num ? (long long)ASN1_INTEGER_get(num) : -1LL, until);
        ASN1_INTEGER_free(num);
        PEM_write_X509_CRL(stdout, crl);
    } else {
        fprintf(stderr, "keyline-ca: CA '%s' was retired already; its key is gone now\n",
                req.label);
    }
out:
    X509_CRL_free(crl);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_ca_table[] = {
    {"create", cmd_ca_create,
     "--label L --template T --subject \"CN=...,O=...\" [--key-type " CLI_KEY_TYPES_BAR "] "
     "[--issuer L2] [--token URI] [--csr-out FILE] [--vid 0xFFF1 [--pid 0x8000]]",
     "generate a CA key in the token and its certificate (self-signed without --issuer); "
     "--csr-out: a request for a parent outside keyline instead"},
    {"import", cmd_ca_import, "--label L --cert FILE --chain FILE",
     "install the certificate an outside parent signed for a --csr-out key, with its chain"},
    {"cert", cmd_ca_cert, "--label L [--chain] [--out FILE]",
     "print the CA certificate (PEM); --chain adds its issuers up to the root"},
    {"list", cmd_ca_list, "", "list the CAs"},
    {"rotate", cmd_ca_rotate,
     "--label OLD --new-label NEW [--issuer PARENT] [--key-type K] [--token URI]",
     "new CA key in the token, certified by the parent's successor (or --issuer); for a root "
     "the NewWithOld/OldWithNew rollover certificates"},
    {"retire", cmd_ca_retire, "--label L",
     "final CRL (past the last expiry of what L issued), L's key destroyed: L signs nothing "
     "more"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_ca(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_ca_table, "ca", argc - 1, argv + 1);
}
