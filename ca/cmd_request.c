/* keyline-ca request list|show|approve|reject: enrollment requests held for an officer's
 * decision (keyline-estd with `approval = manual`, docs/est.md). */
#include <getopt.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyline-ca.h"
#include "ca_backend.h"

/* --id N (and, for reject, --reason TEXT). */
static kl_rc req_args(int argc, char **argv, const char *what, int64_t *id, const char **reason)
{
    static const struct option opts[] = {{"id", required_argument, NULL, 'i'},
                                         {"reason", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    const char *ids = NULL;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:r:", opts)) != -1) {
        switch (ch) {
        case 'i': ids = optarg; break;
        case 'r':
            if (!reason) {
                return kl_fail(KL_EUSAGE, "request %s: --reason is only for reject", what);
            }
            *reason = optarg;
            break;
        default: return kl_fail(KL_EUSAGE, "request %s: bad option (see --help)", what);
        }
    }
    char *end = NULL;
    long long v = ids ? strtoll(ids, &end, 10) : 0;
    if (!ids || !*ids || *end || v <= 0 || optind != argc) {
        return kl_fail(KL_EUSAGE, "request %s needs --id N (a request number)", what);
    }
    if (reason && (!*reason || !**reason)) {
        return kl_fail(KL_EUSAGE, "request %s needs --reason TEXT", what);
    }
    *id = (int64_t)v;
    return KL_OK;
}

static kl_rc cmd_request_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_request *list = NULL;
    size_t n = 0;
    const char *status = NULL;
    int as_json = 0;
    json_t *arr = NULL;
    static const struct option opts[] = {{"status", required_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "s:j", opts)) != -1) {
        switch (ch) {
        case 's': status = optarg; break;
        case 'j': as_json = 1; break;
        default: return kl_fail(KL_EUSAGE, "request list: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "request list: unexpected argument");
    ENSURE(!status || strcmp(status, STORE_RQ_PENDING) == 0 ||
               strcmp(status, STORE_RQ_APPROVED) == 0 || strcmp(status, STORE_RQ_REJECTED) == 0,
           KL_EUSAGE, "request list --status pending|approved|rejected");
    TRY(cli_open(c, 0, &ca));
    TRY(store_request_list(ca_store(ca), status, &list, &n));
    if (as_json) {
        arr = json_array();
        ENSURE(arr, KL_EINTERNAL, "out of memory");
        for (size_t i = 0; i < n; i++) {
            char t[32], d[32];
            cli_time(list[i].created, t, sizeof t);
            cli_time(list[i].decided, d, sizeof d);
            json_t *o =
                json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s, s:s?, s:s?, s:s?}", "id",
                          (json_int_t)list[i].id, "status", list[i].status, "label", list[i].label,
                          "requester", list[i].requester, "subject", list[i].subject, "issuer",
                          list[i].issuer, "template", list[i].template_name, "device_id",
                          list[i].device_id, "created", t, "decided", list[i].decided ? d : NULL,
                          "cert_serial", list[i].cert_serial, "reason", list[i].reason);
            ENSURE(o && json_array_append_new(arr, o) == 0, KL_EINTERNAL, "out of memory");
        }
        char *s = json_dumps(arr, JSON_INDENT(1));
        ENSURE(s, KL_EINTERNAL, "out of memory");
        printf("%s\n", s);
        free(s);
        goto out;
    }
    printf("%-6s %-9s %-20s %-12s %-30s %s\n", "ID", "STATUS", "CREATED", "LABEL", "REQUESTER",
           "SUBJECT");
    for (size_t i = 0; i < n; i++) {
        char t[32];
        cli_time(list[i].created, t, sizeof t);
        printf("%-6lld %-9s %-20s %-12s %-30s %s\n", (long long)list[i].id, list[i].status, t,
               list[i].label[0] ? list[i].label : "-", list[i].requester, list[i].subject);
    }
out:
    json_decref(arr);
    store_request_list_free(list, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_request_show(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_request r;
    int64_t id = 0;
    X509_REQ *req = NULL;
    memset(&r, 0, sizeof r);
    TRY(req_args(argc, argv, "show", &id, NULL));
    TRY(cli_open(c, 0, &ca));
    TRY(store_request_get(ca_store(ca), id, &r));
    char t1[32], t2[32];
    cli_time(r.created, t1, sizeof t1);
    cli_time(r.decided, t2, sizeof t2);
    printf("request:    %lld\nstatus:     %s\nlabel:      %s\nrequester:  %s\nsubject:    %s\n"
           "issuer:     %s\ntemplate:   %s\ndevice id:  %s\ncreated:    %s\ndecided:    %s\n",
           (long long)r.id, r.status, r.label[0] ? r.label : "-", r.requester, r.subject, r.issuer,
           r.template_name, r.device_id ? r.device_id : "-", t1, t2);
    if (r.cert_serial) {
        printf("cert:       %s\n", r.cert_serial);
    }
    if (r.reason) {
        printf("reason:     %s\n", r.reason);
    }
    printf("csr sha256: %s\n", r.csr_hash);
    const unsigned char *p = r.csr;
    req = d2i_X509_REQ(NULL, &p, (long)r.csr_len);
    ENSURE_SSL(req, KL_EINPUT, "request %lld: stored CSR does not parse", (long long)id);
    ENSURE_SSL(PEM_write_X509_REQ(stdout, req), KL_EIO, "cannot print the CSR");
out:
    X509_REQ_free(req);
    store_request_free(&r);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_request_approve(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_request r;
    int64_t id = 0;
    X509 *cert = NULL;
    memset(&r, 0, sizeof r);
    TRY(req_args(argc, argv, "approve", &id, NULL));
    /* Approving issues: a CA action with the officer's token login. */
    TRY(cli_open(c, 1, &ca));
    TRY(store_request_get(ca_store(ca), id, &r));
    ENSURE(strcmp(r.status, STORE_RQ_PENDING) == 0, KL_EPOLICY, "request %lld is %s, not pending",
           (long long)id, r.status);
    /* The certificate and the approval are one store transaction: a second approval of the
     * same request (another officer, at the same moment) fails and issues nothing. */
    ca_issue_req ir = {
        .issuer = r.issuer,
        .template_name = r.template_name,
        .csr_der = r.csr,
        .csr_len = r.csr_len,
        .device_id = r.device_id,
        .actor = c->actor,
        .request_id = r.id,
    };
    TRY(ca_issue(ca, &ir, &cert));
    char *serial = ca_serial_hex(X509_get0_serialNumber(cert));
    printf("approved request %lld: issued %s (the client picks it up when it retries)\n",
           (long long)id, serial ? serial : "?");
    OPENSSL_free(serial);
out:
    X509_free(cert);
    store_request_free(&r);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_request_reject(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    int64_t id = 0;
    const char *reason = NULL;
    TRY(req_args(argc, argv, "reject", &id, &reason));
    ENSURE(reason, KL_EUSAGE, "request reject needs --reason TEXT");
    TRY(cli_open(c, 0, &ca));
    TRY(store_request_reject(ca_store(ca), id, reason, c->actor));
    printf("rejected request %lld\n", (long long)id);
out:
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_request_table[] = {
    {"list", cmd_request_list, "[--status pending|approved|rejected] [--json]",
     "list enrollment requests held for approval"},
    {"show", cmd_request_show, "--id N", "show one request and its CSR (PEM)"},
    {"approve", cmd_request_approve, "--id N",
     "issue the certificate of a pending request (the EST client gets it on retry)"},
    {"reject", cmd_request_reject, "--id N --reason TEXT",
     "refuse a pending request (the EST client gets 403 on retry)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_request(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_request_table, "request", argc - 1, argv + 1);
}
