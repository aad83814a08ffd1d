/* keyline-ca revoke / crl */
#include <ctype.h>
#include <getopt.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ceremony.h"
#include "keyline-ca.h"
#include "kl_file.h"
#include "ca_backend.h"

/* The lines of FILE (serials or device ids) as items pointing into *text, with the line each
 * is on (the caller frees all three). */
static kl_rc revoke_list_read(const char *path, char **text, char ***items, size_t **lines,
                              size_t *n)
{
    kl_rc rc = KL_OK;
    uint8_t *data = NULL;
    size_t len = 0;
    *text = NULL;
    *items = NULL;
    *n = 0;
    TRY(kl_file_read(path, (size_t)512 * 1024 * 1024, &data, &len));
    char *t = realloc(data, len + 1);
    ENSURE(t, KL_EINTERNAL, "out of memory");
    data = NULL;
    t[len] = 0;
    *text = t;
    TRY(ca_revoke_list_parse_lines(t, len, path, items, lines, n));
out:
    free(data);
    return rc;
}

/* The full CRL of `issuer`, then (a CA with [ca LABEL] crl-partition-size) the CRL of the
 * partition of `serial`, or (NULL) of the partitions holding a certificate revoked at or after
 * `since`, and only those. */
static kl_rc revoke_publish_one(ca_ctx *ca, const char *issuer, const char *serial, time_t since)
{
    size_t n = 0;
    kl_rc rc = cli_crl_publish(ca, issuer, "after the revocation", NULL);
    rc = rc == KL_OK ? ca_crlpart_publish(ca, issuer, serial, since, &n) : rc;
    if (n > 0) {
        fprintf(stderr, "keyline-ca: published the CRLs of %zu partition%s of %s\n", n,
                n == 1 ? "" : "s", issuer);
    }
    return rc;
}

/* After the revocations: each issuer's CRL, once (with `serial`, the one certificate of a
 * --serial: its partition's CRL alone). */
static kl_rc revoke_publish(ca_ctx *ca, const store_revoke_result *res, time_t since,
                            const char *serial, const char *what)
{
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < res->n_issuers; i++) {
        kl_rc r = revoke_publish_one(ca, res->issuers[i], serial, since);
        if (r != KL_OK && rc == KL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", kl_errmsg());
            rc = kl_fail(r,
                         "%s, but the CRL of %s was not published: %s (run keyline-ca crl "
                         "--issuer %s)",
                         what, res->issuers[i], why, res->issuers[i]);
        }
    }
    return rc;
}

/* --dry-run: each certificate the request would revoke, a line on stdout */
static kl_rc revoke_preview_line(void *arg, const char *serial, const char *issuer)
{
    (void)arg;
    return printf("%s %s\n", serial, issuer) < 0 ? kl_fail(KL_EIO, "stdout: cannot write") : KL_OK;
}

/* What was revoked, on stdout; `what` (for messages) says it in a few words. */
static void revoke_report(const store_revoke_req *rq, const store_revoke_result *res, char *what,
                          size_t whatsz)
{
    const char *reason = ca_reason_name(rq->reason < 0 ? 0 : rq->reason);
    if (rq->single) {
        printf("revoked %s (%s)\n", rq->items[0] + strlen("serial:"), reason);
        snprintf(what, whatsz, "revoked %s", rq->items[0] + strlen("serial:"));
        return;
    }
    printf("revoked %zu certificate%s (%s)", res->revoked, res->revoked == 1 ? "" : "s", reason);
    if (res->already) {
        printf("; %zu already revoked", res->already);
    }
    if (res->repeated) {
        printf("; %zu named more than once (revoked once)", res->repeated);
    }
    printf("\n");
    snprintf(what, whatsz, "revoked %zu certificates", res->revoked);
}

/* The --issued-by CA exists (a batch of an unknown label would revoke nothing, silently). */
static kl_rc revoke_issuer_check(ca_ctx *ca, const char *issuer)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    kl_rc rc = store_ca_get(ca_store(ca), issuer, &rec);
    store_ca_free(&rec);
    return rc == KL_ENOTFOUND ? kl_fail(KL_EUSAGE, "--issued-by %s: no such CA", issuer) : rc;
}

/* What revoke_many checks of each certificate it would revoke (store_revoke_req.check): that
 * the clock is not before its CA (ca_clock_check, once per run of the same issuer: a host booted
 * without a real-time clock would date the revocation 1970, and no CRL could follow), then the
 * ceremony guard's judgement, when there is one, then that it is no root's own certificate
 * (ca_revoke_root_check). */
typedef struct {
    ca_ctx *ca;
    time_t when;
    ceremony_revoke_guard *guard;
    int batch;                  /* --issued-by --between */
    char ok[128];               /* the last issuer found right (a CA label) */
    const store_revoke_req *rq; /* a --from list: its items, and (lines) the line of each */
    const size_t *lines;
} revoke_checks;

/* The line of the --from list that names certificate `serial` by its serial (0: none does; a
 * device id is not resolved here: the store is not used in a check). */
static size_t revoke_item_line(const revoke_checks *k, const char *serial)
{
    for (size_t i = 0; k->lines && i < k->rq->n_items; i++) {
        const char *it = k->rq->items[i];
        char hex[64], norm[64];
        it += strncmp(it, "serial:", 7) == 0 ? 7 : 0;
        if (strncmp(it, "device:", 7) != 0 && ca_serial_normalise(it, hex, sizeof hex) == KL_OK &&
            store_serial_normalize(hex, norm, sizeof norm) == KL_OK && strcmp(norm, serial) == 0) {
            return k->lines[i];
        }
    }
    return 0;
}

static kl_rc revoke_check(void *arg, const char *serial, const char *issuer, const char *tpl)
{
    revoke_checks *k = arg;
    if (strcmp(issuer, k->ok) != 0) {
        char what[96];
        snprintf(what, sizeof what, "revoking %.64s", serial);
        /* only the clock's verdict stops it: a CA whose certificate cannot be read here (the
         * store's record alone, a retired CA) is revoked under as before */
        if (ca_clock_check(k->ca, issuer, k->when, what) == KL_EPOLICY) {
            return KL_EPOLICY;
        }
        snprintf(k->ok, sizeof k->ok, "%s", issuer);
    }
    if (k->guard) { /* under a quorum its judgement first: a CA's revocation needs a ceremony */
        kl_rc rc = ceremony_revoke_guard_check(k->guard, serial, issuer, tpl);
        if (rc != KL_OK) {
            return rc;
        }
    }
    /* a root's own certificate: refused in every form, a list or a batch whole (all or
     * nothing); ca_clock_check above read the CA's entry, so the store is not used here */
    if (ca_revoke_root_check(k->ca, serial, issuer) == KL_EPOLICY) {
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        if (k->batch) {
            return kl_fail(KL_EPOLICY,
                           "%s; the period --between covers the time it was made: start it "
                           "after that",
                           why);
        }
        /* which line of a --from list, as its other errors name theirs */
        size_t line = k->rq->single ? 0 : revoke_item_line(k, serial);
        return line ? kl_fail(KL_EPOLICY, "%s line %zu: %s", k->rq->source, line, why) : KL_EPOLICY;
    }
    return KL_OK;
}

/* keyline-ca revoke, each form (a --serial is a list of one "serial:HEX" with rq->single): one
 * transaction, one audit entry per certificate, then one CRL per issuer concerned. Under
 * [ceremony] quorum, every certificate it would revoke is judged as the store resolves it
 * (ceremony_revoke_guard_check). With --dry-run (rq->preview set): the same checks in a read
 * transaction, the certificates it would revoke listed, nothing changed, no token login. */
static kl_rc revoke_many(cli *c, store_revoke_req *rq)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_revoke_guard *guard = NULL;
    char *text = NULL, **items = NULL, what[128];
    size_t n = 0, *lines = NULL;
    store_revoke_result res;
    memset(&res, 0, sizeof res);
    if (rq->source && !rq->single) {
        TRY(revoke_list_read(rq->source, &text, &items, &lines, &n));
        rq->items = (const char *const *)items;
        rq->n_items = n;
    }
    TRY(cli_open(c, !rq->preview, &ca));
    if (rq->issuer) {
        TRY(revoke_issuer_check(ca, rq->issuer));
    }
    TRY(ceremony_revoke_guard_new(c->conf, ca, &guard));
    rq->actor = c->actor;
    rq->when = rq->when ? rq->when : time(NULL);
    revoke_checks checks = {.ca = ca,
                            .when = rq->when,
                            .guard = guard,
                            .batch = !!rq->issuer,
                            .rq = rq,
                            .lines = lines};
    store_revoke_req checked = *rq; /* the checks live on this frame: so does the request */
    checked.check = revoke_check;
    checked.check_arg = &checks;
    TRY(store_cert_revoke_many(ca_store(ca), &checked, &res));
    if (rq->preview) {
        ENSURE(fflush(stdout) == 0, KL_EIO, "stdout: cannot write");
        fprintf(stderr,
                "keyline-ca: dry run: would revoke %zu certificate%s (%s); %zu already revoked; "
                "%zu named more than once; nothing changed\n",
                res.revoked, res.revoked == 1 ? "" : "s",
                ca_reason_name(rq->reason < 0 ? 0 : rq->reason), res.already, res.repeated);
        goto out;
    }
    revoke_report(rq, &res, what, sizeof what);
    /* The issuer's published CRL follows at once: keyline-estd serves the stored CRL of a CA
     * whose key it does not sign with (a root), so that one changes only here. */
    TRY(revoke_publish(ca, &res, rq->when, rq->single ? rq->items[0] + strlen("serial:") : NULL,
                       what));
out:
    ceremony_revoke_guard_free(guard);
    ca_close(ca);
    free(items);
    free(lines);
    free(text);
    return rc;
}

/* A date alone (YYYY-MM-DD), by its form: as T2 it means the whole day. */
static int revoke_is_date(const char *s)
{
    for (int i = 0; i < 10; i++) {
        if ((i == 4 || i == 7) ? s[i] != '-' : !isdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return s[10] == 0;
}

/* --between T1 T2 into rq->from and rq->until (T2 a date alone: its last second). */
static kl_rc revoke_period_parse(const char *t1, const char *t2, store_revoke_req *rq)
{
    int ok = t2 && ca_revoke_time_parse(t1, &rq->from) && ca_revoke_time_parse(t2, &rq->until);
    if (ok && revoke_is_date(t2)) {
        rq->until += 86399;
    }
    if (!ok || rq->from > rq->until) {
        return kl_fail(KL_EUSAGE, "--between T1 T2: two times, YYYY-MM-DD[THH:MM:SSZ] (UTC) or "
                                  "@SECONDS, T1 <= T2 (a date alone as T2: the whole day)");
    }
    return KL_OK;
}

kl_rc cmd_revoke(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *serial = NULL, *reason_name = "unspecified", *t1 = NULL, *t2 = NULL;
    char item[80];
    const char *items[1] = {item};
    store_revoke_req rq;
    memset(&rq, 0, sizeof rq);
    static const struct option opts[] = {{"serial", required_argument, NULL, 's'},
                                         {"reason", required_argument, NULL, 'r'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"issued-by", required_argument, NULL, 'i'},
                                         {"between", required_argument, NULL, 'b'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "s:r:", opts)) != -1) {
        switch (ch) {
        case 's': serial = optarg; break;
        case 'r': reason_name = optarg; break;
        case 'f': rq.source = optarg; break;
        case 'i': rq.issuer = optarg; break;
        case 'n': rq.preview = revoke_preview_line; break;
        case 'b':
            /* --between T1 T2: the second time is the next argument */
            t1 = optarg;
            t2 = optind < argc && strncmp(argv[optind], "--", 2) != 0 ? argv[optind++] : NULL;
            break;
        default: return kl_fail(KL_EUSAGE, "revoke: bad option (see --help)");
        }
    }
    int modes = (serial != NULL) + (rq.source != NULL) + (rq.issuer != NULL || t1 != NULL);
    ENSURE(modes == 1 && optind == argc, KL_EUSAGE,
           "revoke needs one of --serial HEX, --from FILE, --issued-by LABEL --between T1 T2");
    rq.reason = ca_reason_from_name(reason_name);
    ENSURE(rq.reason >= 0 && rq.reason != 8, KL_EUSAGE,
           "unknown reason '%s' (unspecified, keyCompromise, cACompromise, affiliationChanged, "
           "superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise)",
           reason_name);
    if (serial) {
        /* a serial only (0x, colons, any case), never a device id; then checked, dry run or
         * not, as a list of one */
        char hex[64], norm[64];
        TRY(ca_serial_normalise(serial, hex, sizeof hex));
        ENSURE(store_serial_normalize(hex, norm, sizeof norm) == KL_OK, KL_EUSAGE,
               "--serial %s: not a serial number (at most 20 octets, not zero)", serial);
        snprintf(item, sizeof item, "serial:%s", norm);
        rq.items = items;
        rq.n_items = 1;
        rq.single = 1;
        rq.source = "--serial";
    } else if (!rq.source) {
        ENSURE(rq.issuer && t1, KL_EUSAGE, "--issued-by LABEL needs --between T1 T2");
        TRY(revoke_period_parse(t1, t2, &rq));
    }
    rc = revoke_many(c, &rq);
out:
    return rc;
}

kl_rc cmd_crl(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *issuer = NULL, *out_path = NULL, *part = NULL;
    char name[160];
    ca_ctx *ca = NULL;
    ca_crl_result crl;
    BIO *b = NULL;
    memset(&crl, 0, sizeof crl);
    static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
                                         {"label", required_argument, NULL, 'i'},
                                         {"partition", required_argument, NULL, 'p'},
                                         {"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:o:", opts)) != -1) {
        switch (ch) {
        case 'i': issuer = optarg; break;
        case 'p': part = optarg; break;
        case 'o': out_path = optarg; break;
        default: return kl_fail(KL_EUSAGE, "crl: bad option (see --help)");
        }
    }
    ENSURE(issuer && optind == argc && !strchr(issuer, '/'), KL_EUSAGE,
           "crl needs --issuer L [--partition K]");
    /* partition K's CRL alone: named "L/K" (ca_crlpart.c) */
    snprintf(name, sizeof name, "%.100s%s%.40s", issuer, part ? "/" : "", part ? part : "");
    TRY(cli_out_check(c, out_path)); /* before a CRL is signed */
    TRY(cli_open(c, 1, &ca));
    /* DER from the store to the PEM output, never parsed: a CRL of millions of entries */
    TRY(ca_crl_der_new(ca, name, &crl));
    fprintf(stderr, "keyline-ca: published CRL number %lld of %s (on request)\n",
            (long long)crl.number, name);
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
    ENSURE(b && PEM_write_bio(b, PEM_STRING_X509_CRL, "", crl.der, (long)crl.len) > 0, KL_EINTERNAL,
           "cannot encode CRL");
    ca_crl_result_free(&crl); /* before the PEM copy is made: one CRL-sized buffer less */
    char *data;
    long n = BIO_get_mem_data(b, &data);
    TRY(cli_output(c, out_path, data, (size_t)n));
    if (!part) {
        /* the command a failed revoke names: its partitions' CRLs too, where they lack a
         * revocation (or are past half their validity: a root's are not renewed otherwise) */
        size_t parts = 0;
        TRY(ca_crlpart_catch_up(ca, issuer, &parts));
        if (parts > 0) {
            fprintf(stderr,
                    "keyline-ca: published the CRLs of %zu partition%s of %s (each lacked a "
                    "revocation, or was past half its validity)\n",
                    parts, parts == 1 ? "" : "s", issuer);
        }
    }
out:
    BIO_free(b);
    ca_crl_result_free(&crl);
    ca_close(ca);
    return rc;
}
