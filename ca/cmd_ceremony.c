/* keyline-ca ceremony propose|approve|run|show|list|export|verify: M of N officers approve the
 * exact request of a CA operation before it runs (docs/key-ceremony.md "Quorum ceremonies"). */
#include <errno.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_backend.h"
#include "ceremony.h"
#include "ceremony_store.h"
#include "keyline-ca.h"
#include "kl_file.h"

/* N of --id N, M of verify --quorum M: 1 when `s` is decimal digits for a number in [1, max],
 * no sign, blank or leading zero (strtoll alone takes "+7", " 7" and "07" for 7, and saturates
 * what overflows). */
static int ceremony_num_ok(const char *s, long long max, long long *out)
{
    size_t n = s ? strspn(s, "0123456789") : 0;
    errno = 0;
    long long v = n > 0 && !s[n] && s[0] != '0' ? strtoll(s, NULL, 10) : 0;
    *out = v;
    return v >= 1 && !errno && v <= max;
}

static kl_rc ceremony_id_arg(const char *s, int64_t *id)
{
    long long v = 0;
    if (!ceremony_num_ok(s, INT64_MAX, &v)) {
        return kl_fail(KL_EUSAGE,
                       "--id takes a ceremony number (decimal, no sign or leading zero), not '%s'",
                       s ? s : "");
    }
    *id = v;
    return KL_OK;
}

/* ceremony propose OP-WORDS --param value ...: e.g. `ca create --label root2 ...` */
static kl_rc cmd_ceremony_propose(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_req r;
    kl_buf b;
    int64_t id = 0;
    char op[64];
    memset(&r, 0, sizeof r);
    kl_buf_init(&b, CEREMONY_REQ_MAX, 0);
    ENSURE(argc >= 2 && (argc >= 3 || ceremony_op_find(argv[1])), KL_EUSAGE,
           "ceremony propose needs an operation: ca create ... (see keyline-ca ceremony --help)");
    int words = ceremony_op_find(argv[1]) ? 1 : 2; /* sign-image is one word */
    snprintf(op, sizeof op, "%s%s%s", argv[1], words == 2 ? " " : "", words == 2 ? argv[2] : "");
    TRY(ceremony_req_new(op, argc - 1 - words, argv + 1 + words, c->actor, &r));
    TRY(ceremony_req_encode(&r, &b));
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_db_propose(ca_store(ca), r.op, r.nonce, b.data, b.len, r.proposed, r.proposer,
                            &id));
    fprintf(stderr,
            "keyline-ca: ceremony %lld proposed; officers approve it with keyline-ca ceremony "
            "approve --id %lld --token URI\n",
            (long long)id, (long long)id);
    printf("%lld\n", (long long)id);
out:
    kl_buf_free(&b);
    ceremony_req_free(&r);
    ca_close(ca);
    return rc;
}

typedef struct {
    int64_t id;
    const char *token, *pin, *out;
} ceremony_opts;

static kl_rc ceremony_opts_parse(const char *what, int argc, char **argv, ceremony_opts *o)
{
    static const struct option opts[] = {{"id", required_argument, NULL, 'i'},
                                         {"token", required_argument, NULL, 't'},
                                         {"pin", required_argument, NULL, 'p'},
                                         {"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:t:p:o:", opts)) != -1) {
        kl_rc rc = KL_OK;
        switch (ch) {
        case 'i': rc = ceremony_id_arg(optarg, &o->id); break;
        case 't': o->token = optarg; break;
        case 'p': o->pin = optarg; break;
        case 'o': o->out = optarg; break;
        default: return kl_fail(KL_EUSAGE, "ceremony %s: bad option (see --help)", what);
        }
        if (rc != KL_OK) {
            return rc;
        }
    }
    if (optind != argc || !o->id) {
        return kl_fail(KL_EUSAGE, "ceremony %s needs --id N", what);
    }
    return KL_OK;
}

/* Sign the request with the officer's token key; the officer is whoever that key belongs to. */
static kl_rc ceremony_approve_sign(cli *c, ca_ctx *ca, const ceremony_rec *rec,
                                   const ceremony_opts *o)
{
    kl_rc rc = KL_OK;
    const char *module = NULL, *token = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    EVP_PKEY *pub = NULL;
    char sha[65], detail[512];
    ceremony_officer off;
    memset(&off, 0, sizeof off);
    TRY(ca_hsm_params(c->conf, &module, &token));
    TRY(ceremony_token_sign(module, o->token, o->pin, rec->req, rec->req_len, &sig, &sig_len,
                            &pub));
    TRY(ceremony_key_sha256(pub, sha));
    rc = ceremony_officer_by_key(ca_store(ca), sha, &off);
    if (rc == KL_ENOTFOUND) {
        snprintf(detail, sizeof detail, "id=%lld: key sha256 %s is no registered officer's",
                 (long long)rec->id, sha);
        int logged =
            ceremony_db_note(ca_store(ca), rec->id, "ceremony-refused", detail, c->actor) == KL_OK;
        rc = kl_fail(
            KL_EPOLICY,
            "the key on %s is not a registered officer's (key sha256 %s): approval refused%s",
            o->token, sha, logged ? " and logged" : " (and not logged: the store failed)");
    }
    TRY(rc);
    /* checked as ceremony run will: with the registered certificate, over the stored bytes */
    ceremony_approval a = {
        .cert = off.cert, .cert_len = off.cert_len, .sig = sig, .sig_len = sig_len};
    snprintf(a.name, sizeof a.name, "%s", off.name);
    TRY(ceremony_approval_check(&a, rec->req, rec->req_len, NULL));
    TRY(ceremony_db_approve(ca_store(ca), rec->id, off.name, sig, sig_len, c->actor));
    fprintf(stderr, "keyline-ca: ceremony %lld approved by officer %s\n", (long long)rec->id,
            off.name);
out:
    ceremony_officer_free(&off);
    EVP_PKEY_free(pub);
    free(sig);
    return rc;
}

static kl_rc cmd_ceremony_approve(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_opts o;
    ceremony_rec rec;
    ceremony_req req;
    memset(&rec, 0, sizeof rec);
    memset(&req, 0, sizeof req);
    TRY(ceremony_opts_parse("approve", argc, argv, &o));
    ENSURE(o.token, KL_EUSAGE,
           "ceremony approve needs --token 'pkcs11:token=...;object=KEY' (the officer's token)");
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_db_get(ca_store(ca), o.id, &rec));
    ENSURE(strcmp(rec.status, CEREMONY_ST_PROPOSED) == 0, KL_EPOLICY,
           "ceremony %lld is %s: nothing to approve", (long long)o.id, rec.status);
    /* only a request that parses is shown and signed: stored bytes with a NUL would print
     * short of what the signature covers */
    rc = ceremony_req_parse(rec.req, rec.req_len, &req);
    ENSURE(rc == KL_OK, KL_EPOLICY,
           "ceremony %lld: its stored request does not parse (%s): not signed", (long long)o.id,
           kl_errmsg());
    /* what the officer signs, byte for byte, before the PIN is asked for */
    fprintf(stderr, "keyline-ca: signing this request of ceremony %lld:\n%.*s", (long long)o.id,
            (int)rec.req_len, (const char *)rec.req);
    TRY(ceremony_approve_sign(c, ca, &rec, &o));
out:
    ceremony_req_free(&req);
    ceremony_rec_free(&rec);
    ca_close(ca);
    return rc;
}

/* Files the request says the run writes (ca create --csr-out, sign-image --out) must not be
 * the store's, the configuration or the PIN file, as for the plain commands. */
static kl_rc ceremony_run_out_check(cli *c, ca_ctx *ca, int64_t id)
{
    kl_rc rc = KL_OK;
    ceremony_rec rec;
    ceremony_req r;
    memset(&rec, 0, sizeof rec);
    memset(&r, 0, sizeof r);
    TRY(ceremony_db_get(ca_store(ca), id, &rec));
    if (ceremony_req_parse(rec.req, rec.req_len, &r) == KL_OK) { /* else ceremony_run says */
        TRY(cli_out_check(c, ceremony_req_get(&r, "csr-out")));
        TRY(cli_out_check(c, ceremony_req_get(&r, "out")));
    }
out:
    ceremony_req_free(&r);
    ceremony_rec_free(&rec);
    return rc;
}

static kl_rc cmd_ceremony_run(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_opts o;
    long quorum = 0;
    uint8_t *tr = NULL;
    size_t tr_len = 0;
    TRY(ceremony_opts_parse("run", argc, argv, &o));
    TRY(cli_out_check(c, o.out));
    TRY(cli_conf(c));
    TRY(ceremony_quorum(c->conf, &quorum));
    TRY(cli_open(c, 1, &ca));
    TRY(ceremony_run_out_check(c, ca, o.id));
    TRY(ceremony_run(ca, o.id, quorum, c->actor, &tr, &tr_len));
    fprintf(stderr,
            "keyline-ca: ceremony %lld ran; keyline-ca ceremony export --id %lld writes its "
            "transcript\n",
            (long long)o.id, (long long)o.id);
    if (o.out) {
        TRY(cli_output(c, o.out, tr, tr_len));
    }
out:
    free(tr);
    ca_close(ca);
    return rc;
}

static void ceremony_print(const ceremony_rec *r)
{
    char when[32], at[32];
    cli_time(r->proposed, when, sizeof when);
    printf("ceremony %lld: %s, %s\nproposed %s by %s\n", (long long)r->id, r->op, r->status, when,
           r->proposer);
    printf("--- request (%zu bytes) ---\n%.*s---\n", r->req_len, (int)r->req_len,
           (const char *)r->req);
    for (size_t i = 0; i < r->nap; i++) {
        cli_time(r->ap[i].at, at, sizeof at);
        printf("approved by %s at %s\n", r->ap[i].officer, at);
    }
    if (r->note) {
        printf("%s: %s\n",
               strcmp(r->status, CEREMONY_ST_RUNNING) == 0 ? "run in progress or interrupted"
                                                           : "last refusal or failure",
               r->note);
    }
    if (r->transcript) {
        printf("transcript: %zu bytes (keyline-ca ceremony export --id %lld)\n", r->transcript_len,
               (long long)r->id);
    }
}

static kl_rc cmd_ceremony_show(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_opts o;
    ceremony_rec rec;
    memset(&rec, 0, sizeof rec);
    TRY(ceremony_opts_parse("show", argc, argv, &o));
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_db_get(ca_store(ca), o.id, &rec));
    ceremony_print(&rec);
out:
    ceremony_rec_free(&rec);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ceremony_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_rec *v = NULL;
    size_t n = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "ceremony list takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_db_list(ca_store(ca), &v, &n));
    printf("%-6s %-12s %-9s %-20s %s\n", "ID", "OP", "STATUS", "PROPOSED", "PROPOSER");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        cli_time(v[i].proposed, when, sizeof when);
        printf("%-6lld %-12s %-9s %-20s %s\n", (long long)v[i].id, v[i].op, v[i].status, when,
               v[i].proposer);
    }
out:
    ceremony_rec_list_free(v, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_ceremony_export(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ceremony_opts o;
    ceremony_rec rec;
    ceremony_transcript t;
    memset(&rec, 0, sizeof rec);
    memset(&t, 0, sizeof t);
    TRY(ceremony_opts_parse("export", argc, argv, &o));
    TRY(cli_out_check(c, o.out));
    TRY(cli_open(c, 0, &ca));
    TRY(ceremony_db_get(ca_store(ca), o.id, &rec));
    ENSURE(rec.transcript, KL_EPOLICY, "ceremony %lld is %s: it has no transcript until it ran",
           (long long)o.id, rec.status);
    /* a transcript is signed and names its ceremony: another one's in this row is no record
     * of this ceremony (`ceremony verify` checks the signature, not which ceremony was asked) */
    rc = ceremony_transcript_parse(rec.transcript, rec.transcript_len, &t);
    ENSURE(rc == KL_OK && t.id == o.id, KL_EPOLICY,
           "ceremony %lld: the stored transcript is %s: changed outside keyline", (long long)o.id,
           rc == KL_OK ? "another ceremony's" : "malformed");
    TRY(cli_output(c, o.out, rec.transcript, rec.transcript_len));
out:
    ceremony_transcript_free(&t);
    ceremony_rec_free(&rec);
    ca_close(ca);
    return rc;
}

/* --officers FILE: the PEM certificates every approval must be one of. */
static kl_rc ceremony_officers_load(const char *path, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    BIO *b = BIO_new_file(path, "r");
    X509 *x;
    ENSURE_SSL(b, KL_ENOTFOUND, "%s: cannot open", path);
    *out = sk_X509_new_null();
    ENSURE(*out, KL_EINTERNAL, "out of memory");
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        ENSURE(sk_X509_push(*out, x), KL_EINTERNAL, "out of memory");
    }
    ERR_clear_error();
    ENSURE(sk_X509_num(*out) > 0, KL_EINPUT, "%s: no PEM certificate", path);
out:
    BIO_free(b);
    return rc;
}

static void ceremony_verdict_print(const ceremony_transcript *t)
{
    char when[32], sha[65] = "?";
    const unsigned char *p = t->audit_spki;
    EVP_PKEY *audit = d2i_PUBKEY(NULL, &p, (long)t->audit_spki_len);
    printf("ceremony %lld, quorum %ld, ran %s by %s\n", (long long)t->id, t->quorum,
           (cli_time(t->ran, when, sizeof when), when), t->runner);
    printf("--- request ---\n%.*s---\n", (int)t->req_len, (const char *)t->req);
    for (size_t i = 0; i < t->nap; i++) {
        char ksha[65] = "?";
        if (ceremony_approval_check(&t->ap[i], t->req, t->req_len, ksha) != KL_OK) {
            snprintf(ksha, sizeof ksha, "?");
        }
        printf("approved by %s (key sha256 %s)\n", t->ap[i].name, ksha);
    }
    for (size_t i = 0; i < t->result.n; i++) {
        printf("result %s: %s\n", t->result.kv[i].key, t->result.kv[i].value);
    }
    if (audit && ceremony_key_sha256(audit, sha) == KL_OK) {
        printf("signed by audit key sha256 %s\n", sha);
    }
    EVP_PKEY_free(audit);
}

/* --cert FILE: the certificate the transcript says the ceremony made (result cert-sha256). */
static kl_rc ceremony_result_cert_check(const ceremony_transcript *t, const char *path)
{
    kl_rc rc = KL_OK;
    char sha[65];
    BIO *b = BIO_new_file(path, "r");
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    const char *want = ceremony_kvs_get(&t->result, "cert-sha256");
    ENSURE_SSL(x, KL_EINPUT, "%s: no PEM certificate", path);
    TRY(ceremony_cert_sha256(x, sha));
    ENSURE(want, KL_EPOLICY, "the transcript names no resulting certificate");
    ENSURE(strcmp(sha, want) == 0, KL_EPOLICY,
           "%s (sha256 %s) is not the certificate the ceremony made (%s)", path, sha, want);
out:
    X509_free(x);
    BIO_free(b);
    return rc;
}

/* Offline: no configuration, no store, no token. */
static kl_rc cmd_ceremony_verify(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *officers = NULL, *cert = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    long long quorum = 0;
    ceremony_pins pins;
    ceremony_transcript t;
    memset(&pins, 0, sizeof pins);
    memset(&t, 0, sizeof t);
    static const struct option opts[] = {{"audit-key-sha256", required_argument, NULL, 'a'},
                                         {"officers", required_argument, NULL, 'o'},
                                         {"cert", required_argument, NULL, 'c'},
                                         {"id", required_argument, NULL, 'i'},
                                         {"quorum", required_argument, NULL, 'q'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    (void)c;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "a:o:c:i:q:", opts)) != -1) {
        switch (ch) {
        case 'a': pins.audit_key_sha256 = optarg; break;
        case 'o': officers = optarg; break;
        case 'c': cert = optarg; break;
        case 'i': TRY(ceremony_id_arg(optarg, &pins.id)); break;
        case 'q':
            ENSURE(ceremony_num_ok(optarg, CEREMONY_APPROVALS_MAX, &quorum), KL_EUSAGE,
                   "--quorum takes a number of officers from 1 to %d (decimal, no sign or "
                   "leading zero), not '%s'",
                   CEREMONY_APPROVALS_MAX, optarg);
            pins.quorum = (long)quorum;
            break;
        default: return kl_fail(KL_EUSAGE, "ceremony verify: bad option (see --help)");
        }
    }
    ENSURE(optind == argc - 1, KL_EUSAGE, "ceremony verify needs one transcript FILE");
    if (officers) {
        TRY(ceremony_officers_load(officers, &pins.officers));
    }
    TRY(kl_file_read(argv[optind], CEREMONY_TRANSCRIPT_MAX, &data, &len));
    rc = ceremony_transcript_verify(data, len, &pins, &t);
    ENSURE(rc == KL_OK, rc, "%s: %s", argv[optind], kl_errmsg());
    if (cert) {
        TRY(ceremony_result_cert_check(&t, cert));
    }
    ceremony_verdict_print(&t);
    printf("transcript verified\n");
out:
    ceremony_transcript_free(&t);
    sk_X509_pop_free(pins.officers, X509_free);
    free(data);
    return rc;
}

static const cli_cmd cmd_ceremony_table[] = {
    {"propose", cmd_ceremony_propose, "ca create|ca rotate|... --OPTION VALUE ...",
     "record the exact request of a CA operation for the officers to approve; prints its id"},
    {"approve", cmd_ceremony_approve,
     "--id N --token 'pkcs11:token=T;object=KEY' [--pin env:VAR|file:PATH|prompt]",
     "sign ceremony N's exact request with the key on your officer token"},
    {"run", cmd_ceremony_run, "--id N [--out FILE]",
     "run ceremony N if [ceremony] quorum distinct registered officers approved it (refusals are "
     "logged); --out writes the transcript"},
    {"show", cmd_ceremony_show, "--id N", "print ceremony N: request, approvals, status"},
    {"list", cmd_ceremony_list, "", "list the ceremonies"},
    {"export", cmd_ceremony_export, "--id N [--out FILE]",
     "write the signed transcript of a ceremony that ran"},
    {"verify", cmd_ceremony_verify,
     "[--id N] [--quorum M] [--audit-key-sha256 HEX] [--officers PEMFILE] [--cert PEMFILE] "
     "TRANSCRIPT",
     "check a transcript offline (no store, no token): every signature, the quorum, the pins; "
     "--id/--quorum: the ceremony and at least the quorum you expect; --cert: the certificate "
     "it made"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_ceremony(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_ceremony_table, "ceremony", argc - 1, argv + 1);
}
