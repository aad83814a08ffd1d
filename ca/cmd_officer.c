/* keyline-ca officer add|list|remove: the security officers whose approvals a ceremony counts
 * (docs/key-ceremony.md "Quorum ceremonies"). An officer is registered by their certificate; the
 * key lives on the officer's own token and keyline never holds it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_backend.h"
#include "ceremony.h"
#include "ceremony_store.h"
#include "keyline-ca.h"
#include "kl_file.h"

/* PEM or DER certificate file into o. */
static kl_rc officer_cert_load(const char *path, ceremony_officer *o)
{
    kl_rc rc = KL_OK;
    uint8_t *data = NULL;
    size_t len = 0;
    TRY(kl_file_read(path, CEREMONY_CERT_MAX * 2, &data, &len));
    TRY(ceremony_officer_cert(data, len, path, o));
out:
    free(data);
    return rc;
}

static kl_rc cmd_officer_add(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *name = NULL, *cert = NULL;
    ca_ctx *ca = NULL;
    long quorum = 0;
    ceremony_officer o;
    memset(&o, 0, sizeof o);
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"cert", required_argument, NULL, 'c'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "n:c:", opts)) != -1) {
        switch (ch) {
        case 'n': name = optarg; break;
        case 'c': cert = optarg; break;
        default: return kl_fail(KL_EUSAGE, "officer add: bad option (see --help)");
        }
    }
    ENSURE(name && cert && optind == argc, KL_EUSAGE, "officer add needs --name N --cert FILE");
    TRY(ceremony_name_check(name));
    snprintf(o.name, sizeof o.name, "%s", name);
    TRY(officer_cert_load(cert, &o));
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_quorum(c->conf, &quorum)); /* M: the store lets only the first M in directly */
    TRY(ceremony_officer_add(ca_store(ca), &o, quorum, c->actor));
    printf("officer %s registered: key sha256 %s, certificate sha256 %s\n", o.name, o.key_sha256,
           o.cert_sha256);
out:
    ceremony_officer_free(&o);
    ca_close(ca);
    return rc;
}

static void officer_print(const ceremony_officer *o)
{
    char subj[256] = "?", added[32];
    const unsigned char *p = o->cert;
    X509 *x = d2i_X509(NULL, &p, (long)o->cert_len);
    if (x) {
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
        X509_free(x);
    }
    cli_time(o->added, added, sizeof added);
    printf("%-16s %-8s %-20s %.16s... %s\n", o->name, o->status, added, o->key_sha256, subj);
}

static kl_rc cmd_officer_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_officer *v = NULL;
    size_t n = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "officer list takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_officer_list(ca_store(ca), &v, &n));
    printf("%-16s %-8s %-20s %-19s %s\n", "NAME", "STATUS", "ADDED", "KEY SHA256", "SUBJECT");
    for (size_t i = 0; i < n; i++) {
        officer_print(&v[i]);
    }
out:
    ceremony_officer_list_free(v, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_officer_remove(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    long quorum = 0;
    ENSURE(argc == 3 && strcmp(argv[1], "--name") == 0, KL_EUSAGE, "officer remove needs --name N");
    TRY(ceremony_name_check(argv[2]));
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_quorum(c->conf, &quorum));
    TRY(ceremony_officer_remove(ca_store(ca), argv[2], quorum, c->actor));
    printf("officer %s removed: approvals not yet run no longer count\n", argv[2]);
out:
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_officer_table[] = {
    {"add", cmd_officer_add, "--name N --cert FILE",
     "register an officer by the certificate of the key on their own token"},
    {"list", cmd_officer_list, "", "list the officers"},
    {"remove", cmd_officer_remove, "--name N",
     "an officer who left: their approvals count no more (name and key are never reused)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_officer(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_officer_table, "officer", argc - 1, argv + 1);
}
