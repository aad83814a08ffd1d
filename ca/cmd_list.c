/* keyline-ca list / show / device list */
#include <getopt.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyline-ca.h"
#include "ca_backend.h"

typedef struct {
    json_t *arr; /* --json */
    kl_rc rc;
    time_t now, ending_by; /* --expiring: only rows valid now and ending by ending_by */
} cli_list_state;

/* --expiring DAYS[d]: 1..36500 days */
static kl_rc cli_list_days(const char *s, long *days)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || (*end && strcmp(end, "d") != 0) || v < 1 || v > 36500) {
        return kl_fail(KL_EUSAGE, "--expiring %s: a number of days like 30d", s);
    }
    *days = v;
    return KL_OK;
}

static int cli_list_row(void *arg, const store_cert *c)
{
    cli_list_state *st = arg;
    char nb[32], na[32];
    if (st->ending_by && (c->not_after <= st->now || c->not_after > st->ending_by)) {
        return 0;
    }
    cli_time(c->not_before, nb, sizeof nb);
    cli_time(c->not_after, na, sizeof na);
    if (st->arr) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?}", "serial", c->serial_hex,
                              "subject", c->subject ? c->subject : "", "issuer", c->issuer,
                              "template", c->template_name ? c->template_name : "", "not_before",
                              nb, "not_after", na, "status", c->status, "device_id", c->device_id);
        if (!o || json_array_append_new(st->arr, o) != 0) {
            st->rc = kl_fail(KL_EINTERNAL, "out of memory");
            return 1;
        }
        return 0;
    }
    printf("%-34s %-8s %-12s %-20s %-20s %-16s %s\n", c->serial_hex, c->status, c->issuer, nb, na,
           c->device_id ? c->device_id : "-", c->subject ? c->subject : "");
    return 0;
}

kl_rc cmd_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *status = NULL, *issuer = NULL;
    int as_json = 0, images = 0;
    ca_ctx *ca = NULL;
    cli_list_state st = {NULL, KL_OK, time(NULL), 0};
    long days = 0;
    static const struct option opts[] = {
        {"status", required_argument, NULL, 's'}, {"issuer", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},         {"expiring", required_argument, NULL, 'e'},
        {"images", no_argument, NULL, 'I'},       {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "s:i:j", opts)) != -1) {
        switch (ch) {
        case 's': status = optarg; break;
        case 'i': issuer = optarg; break;
        case 'j': as_json = 1; break;
        case 'I': images = 1; break;
        case 'e':
            TRY(cli_list_days(optarg, &days));
            st.ending_by = st.now + days * 86400;
            status = status ? status : "valid";
            break;
        default: return kl_fail(KL_EUSAGE, "list: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "list: unexpected argument '%s'", argv[optind]);
    if (images) { /* firmware image signings (docs/firmware.md) */
        ENSURE(!status && !issuer && !days, KL_EUSAGE, "list --images takes only --json");
        return cli_list_images(c, as_json);
    }
    ENSURE(!status || strcmp(status, "valid") == 0 || strcmp(status, "revoked") == 0 ||
               strcmp(status, "pending") == 0,
           KL_EUSAGE, "--status must be valid, pending or revoked");
    TRY(cli_open(c, 0, &ca));
    if (as_json) {
        st.arr = json_array();
        ENSURE(st.arr, KL_EINTERNAL, "out of memory");
    } else {
        printf("%-34s %-8s %-12s %-20s %-20s %-16s %s\n", "SERIAL", "STATUS", "ISSUER",
               "NOT BEFORE", "NOT AFTER", "DEVICE", "SUBJECT");
    }
    TRY(store_cert_list(ca_store(ca), status, issuer, cli_list_row, &st));
    TRY(st.rc);
    if (as_json) {
        char *s = json_dumps(st.arr, JSON_INDENT(1));
        ENSURE(s, KL_EINTERNAL, "out of memory");
        printf("%s\n", s);
        free(s);
    }
out:
    json_decref(st.arr);
    ca_close(ca);
    return rc;
}

kl_rc cmd_show(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *serial = NULL;
    ca_ctx *ca = NULL;
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    X509 *x = NULL;
    char norm[64];
    static const struct option opts[] = {{"serial", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "s:", opts)) != -1) {
        if (ch == 's') {
            serial = optarg;
        } else {
            return kl_fail(KL_EUSAGE, "show: bad option (see --help)");
        }
    }
    ENSURE(serial && optind == argc, KL_EUSAGE, "show needs --serial HEX");
    TRY(cli_open(c, 0, &ca));
    TRY(ca_serial_normalise(serial, norm, sizeof norm));
    const char *key = norm;
    rc = store_cert_get(ca_store(ca), key, &sc);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_ENOTFOUND, "no certificate with serial %s", serial);
    }
    TRY(rc);
    printf("serial:    %s\nstatus:    %s\nissuer:    %s\ntemplate:  %s\ndevice:    %s\n",
           sc.serial_hex, sc.status, sc.issuer, sc.template_name ? sc.template_name : "-",
           sc.device_id ? sc.device_id : "-");
    if (sc.revoked_at) {
        char t[32];
        cli_time(sc.revoked_at, t, sizeof t);
        printf("revoked:   %s (%s)\n", t, ca_reason_name(sc.revoke_reason));
    }
    if (sc.der) {
        const unsigned char *p = sc.der;
        x = d2i_X509(NULL, &p, (long)sc.der_len);
        if (x) {
            BIO *b = BIO_new_fp(stdout, BIO_NOCLOSE);
            X509_print_ex(b, x, XN_FLAG_ONELINE, 0);
            PEM_write_bio_X509(b, x);
            BIO_free(b);
        }
    }
out:
    X509_free(x);
    store_cert_free(&sc);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_device_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_device *list = NULL;
    size_t n = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "device list takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(store_device_list(ca_store(ca), &list, &n));
    printf("%-20s %-12s %-12s %-34s %-8s %-20s %s\n", "DEVICE", "MODEL", "STATE", "CERT SERIAL",
           "CERT", "UPDATED", "DETAIL");
    for (size_t i = 0; i < n; i++) {
        char t[32];
        cli_time(list[i].updated, t, sizeof t);
        /* the certificate's own status (a provisioned device's IDevID may since be revoked) */
        store_cert sc;
        memset(&sc, 0, sizeof sc);
        const char *cst = "-";
        if (list[i].cert_serial &&
            store_cert_get(ca_store(ca), list[i].cert_serial, &sc) == KL_OK) {
            cst = sc.status;
        }
        printf("%-20s %-12s %-12s %-34s %-8s %-20s %s\n", list[i].device_id,
               list[i].model ? list[i].model : "-", list[i].state,
               list[i].cert_serial ? list[i].cert_serial : "-", cst, t,
               list[i].detail ? list[i].detail : "");
        store_cert_free(&sc);
    }
out:
    store_device_list_free(list, n);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_device_table[] = {
    {"list", cmd_device_list, "", "list provisioned devices"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_device(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_device_table, "device", argc - 1, argv + 1);
}
