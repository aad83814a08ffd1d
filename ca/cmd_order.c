/* keyline-ca order create|list|show|close|verify: production orders (docs/station.md
 * "Production orders"). An order lets one station have at most N device certificates of a
 * profile issued before a date; keyline-cad counts them in the issuing transaction. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_backend.h"
#include "keyline-ca.h"
#include "kl_file.h"
#include "order.h"

/* open, or what stops it: closed, expired, exhausted */
static const char *order_state(const store_order *o)
{
    if (strcmp(o->state, STORE_ORDER_OPEN) != 0) {
        return o->state;
    }
    if (o->expires <= time(NULL)) {
        return "expired";
    }
    return o->issued >= o->count ? "exhausted" : "open";
}

/* What the order still allows: nothing once closed, expired (or exhausted) */
static long long order_remaining(const store_order *o)
{
    return strcmp(order_state(o), "open") == 0 ? (long long)(o->count - o->issued) : 0;
}

static json_t *order_json(const store_order *o)
{
    char exp[32], created[32], closed[32];
    cli_time(o->expires, exp, sizeof exp);
    cli_time(o->created, created, sizeof created);
    cli_time(o->closed, closed, sizeof closed);
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:o, s:o}", "id",
                     o->id, "model", o->model, "station", o->station, "profile", o->profile,
                     "count", (json_int_t)o->count, "issued", (json_int_t)o->issued, "remaining",
                     (json_int_t)order_remaining(o), "state", order_state(o), "expires", exp,
                     "created", created, "created_by", o->created_by, "closed",
                     o->closed ? json_string(closed) : json_null(), "closed_by",
                     o->closed_by ? json_string(o->closed_by) : json_null());
}

static kl_rc order_json_print(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_INDENT(1)) : NULL;
    json_decref(j);
    if (!s) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    printf("%s\n", s);
    free(s);
    return KL_OK;
}

static kl_rc cmd_order_create(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *expires = NULL, *count = NULL;
    int as_json = 0;
    ca_ctx *ca = NULL;
    store_order o;
    memset(&o, 0, sizeof o);
    order_req r = {.profile = "station"};
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"station", required_argument, NULL, 's'},
                                         {"expires", required_argument, NULL, 'e'},
                                         {"profile", required_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "m:n:s:e:p:j", opts)) != -1) {
        switch (ch) {
        case 'm': r.model = optarg; break;
        case 'n': count = optarg; break;
        case 's': r.station = optarg; break;
        case 'e': expires = optarg; break;
        case 'p': r.profile = optarg; break;
        case 'j': as_json = 1; break;
        default: return kl_fail(KL_EUSAGE, "order create: bad option (see --help)");
        }
    }
    ENSURE(r.model && count && r.station && expires && optind == argc, KL_EUSAGE,
           "order create needs --model M --count N --station ID --expires DATE");
    TRY(order_count_parse(count, &r.count));
    TRY(order_time_parse(expires, &r.expires));
    TRY(cli_open(c, 1, &ca));
    TRY(ca_order_create(ca, &r, c->actor, &o));
    if (as_json) {
        TRY(order_json_print(json_pack("{s:s}", "id", o.id)));
    } else {
        printf("%s\n", o.id);
    }
out:
    store_order_free(&o);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_order_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_order *v = NULL;
    size_t n = 0;
    int as_json = argc == 2 && strcmp(argv[1], "--json") == 0;
    ENSURE(argc == 1 || as_json, KL_EUSAGE, "order list takes only --json");
    TRY(cli_open(c, 0, &ca));
    TRY(store_order_list(ca_store(ca), &v, &n));
    if (as_json) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
            json_array_append_new(a, order_json(&v[i]));
        }
        TRY(order_json_print(a));
        goto out;
    }
    printf("%-20s %-9s %-16s %-12s %-10s %17s %s\n", "ID", "STATE", "MODEL", "STATION", "PROFILE",
           "ISSUED/COUNT", "EXPIRES");
    for (size_t i = 0; i < n; i++) {
        char exp[32];
        cli_time(v[i].expires, exp, sizeof exp);
        printf("%-20s %-9s %-16s %-12s %-10s %8lld/%-8lld %s\n", v[i].id, order_state(&v[i]),
               v[i].model, v[i].station, v[i].profile, (long long)v[i].issued,
               (long long)v[i].count, exp);
    }
out:
    store_order_list_free(v, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_order_show(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_order o;
    memset(&o, 0, sizeof o);
    int as_json = argc == 3 && strcmp(argv[2], "--json") == 0;
    ENSURE(argc == 2 || as_json, KL_EUSAGE, "order show needs ID [--json]");
    TRY(cli_open(c, 0, &ca));
    TRY(store_order_get(ca_store(ca), argv[1], &o));
    rc = ca_order_check(ca, &o);
    const char *sig = rc == KL_OK ? "good (the store's audit key)" : kl_errmsg();
    if (as_json) {
        json_t *j = order_json(&o);
        json_object_set_new(j, "signature", json_string(rc == KL_OK ? "good" : "bad"));
        TRY(order_json_print(j));
    } else {
        char exp[32], created[32], closed[32];
        cli_time(o.expires, exp, sizeof exp);
        cli_time(o.created, created, sizeof created);
        cli_time(o.closed, closed, sizeof closed);
        printf("id:         %s\nstate:      %s\nmodel:      %s\nstation:    %s\nprofile:    %s\n"
               "issued:     %lld of %lld (%lld remaining)\nexpires:    %s\ncreated:    %s by %s\n",
               o.id, order_state(&o), o.model, o.station, o.profile, (long long)o.issued,
               (long long)o.count, order_remaining(&o), exp, created, o.created_by);
        if (o.closed_by) {
            printf("closed:     %s by %s\n", closed, o.closed_by);
        }
        printf("signature:  %s\n", sig);
    }
out:
    store_order_free(&o);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_order_close(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    kl_buf report;
    kl_buf_init(&report, ORDER_REPORT_MAX, 0);
    ENSURE(argc == 4 && strcmp(argv[2], "--out") == 0, KL_EUSAGE,
           "order close needs ID --out FILE");
    TRY(cli_out_check(c, argv[3]));
    TRY(cli_open(c, 1, &ca));
    TRY(ca_order_close(ca, argv[1], c->actor, &report));
    TRY(cli_output(c, argv[3], report.data, report.len));
    order_report r;
    TRY(order_report_verify(report.data, report.len, NULL, &r));
    fprintf(stderr, "keyline-ca: order %s closed: %zu of %lld issued; signed report in %s\n",
            argv[1], r.nserials, (long long)r.order.count, argv[3]);
    order_report_free(&r);
out:
    kl_buf_free(&report);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_order_verify(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *pin = NULL, *file = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int as_json = 0;
    order_report r;
    memset(&r, 0, sizeof r);
    (void)c;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--audit-key-sha256") == 0 && i + 1 < argc) {
            pin = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else if (!file && argv[i][0] != '-') {
            file = argv[i];
        } else {
            return kl_fail(KL_EUSAGE, "order verify: unexpected argument '%s'", argv[i]);
        }
    }
    ENSURE(file, KL_EUSAGE, "order verify needs FILE [--audit-key-sha256 HEX]");
    TRY(kl_file_read(file, ORDER_REPORT_MAX, &data, &len));
    rc = order_report_verify(data, len, pin, &r);
    if (rc != KL_OK) {
        kl_wrap(rc, "%s", file);
        goto out;
    }
    if (as_json) {
        json_t *j = order_json(&r.order);
        json_object_set_new(j, "serials", json_integer((json_int_t)r.nserials));
        json_object_set_new(j, "audit_key_sha256", json_string(r.audit_key_sha256));
        TRY(order_json_print(j));
    } else {
        printf("%s: good: order %s (model %s, station %s, profile %s), %zu of %lld issued, closed "
               "by %s; signed by audit key %s%s\n",
               file, r.order.id, r.order.model, r.order.station, r.order.profile, r.nserials,
               (long long)r.order.count, r.closed_by, r.audit_key_sha256,
               pin ? " (pinned)" : " (not pinned: compare with keyline-ca audit verify)");
    }
out:
    order_report_free(&r);
    free(data);
    return rc;
}

static const cli_cmd cmd_order_table[] = {
    {"create", cmd_order_create,
     "--model M --count N --station ID --expires DATE [--profile P] [--json]",
     "allow station ID N certificates of profile P (default station) for model M until DATE; "
     "prints the order's id"},
    {"list", cmd_order_list, "[--json]", "list the production orders"},
    {"show", cmd_order_show, "ID [--json]", "show one order and check its signature"},
    {"close", cmd_order_close, "ID --out FILE",
     "close the order (no more certificates under it) and write its signed report"},
    {"verify", cmd_order_verify, "FILE [--audit-key-sha256 HEX] [--json]",
     "check a report offline: signatures, serials and count (no configuration needed)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_order(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_order_table, "order", argc - 1, argv + 1);
}
