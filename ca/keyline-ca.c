/* keyline-ca: the security officer's tool. Thin: parse arguments, load config, call ca/. */
#include "keyline-ca.h"

#include <getopt.h>
#include <limits.h>
#include <openssl/pem.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ceremony.h"
#include "kl_file.h"
#include "kl_version.h"

static const cli_cmd cli_top[] = {
    {"ca", cmd_ca, "create|import|cert|list|rotate|retire ...",
     "create, import, print, list, rotate or retire CAs (docs/key-ceremony.md)"},
    {"issue", cmd_issue, "--issuer L --template T --csr FILE [--out FILE] [--device-id ID]",
     "issue a certificate for a CSR"},
    {"revoke", cmd_revoke,
     "--serial HEX | --from FILE | --issued-by L --between T1 T2 [--reason NAME] [--dry-run]",
     "revoke a certificate, a list (serials or device ids) or a batch, then publish the CRLs "
     "(--dry-run: list what it would revoke, change nothing)"},
    {"crl", cmd_crl, "--issuer L [--partition K] [--out FILE]",
     "sign a fresh CRL (of partition K alone) in the HSM, publish it in the store, print it"},
    {"list", cmd_list,
     "[--status valid|pending|revoked] [--issuer L] [--expiring DAYSd] [--json] | --images "
     "[--json]",
     "list issued certificates (--expiring 30d: valid ones ending within 30 days); --images: "
     "firmware image signings"},
    {"show", cmd_show, "--serial HEX", "show one certificate and its status"},
    {"audit", cmd_audit, "verify|list|checkpoint",
     "verify, print or sign (in the HSM) the tamper-evident audit log"},
    {"device", cmd_device, "list", "print the device inventory"},
    {"request", cmd_request, "list|show|approve|reject ...",
     "EST enrollment requests held for approval"},
    {"config", cmd_config, "check", "check keyline.conf and print it with its defaults"},
    {"officer", cmd_officer, "add|list|remove ...",
     "the security officers whose approvals a ceremony counts"},
    {"ceremony", cmd_ceremony, "propose|approve|run|show|list|export|verify ...",
     "M of N officers approve a CA operation's exact request before it runs"},
    {"matter", cmd_matter, "passcode --device SERIAL",
     "Matter devices: open a kept setup passcode in the token (docs/matter.md)"},
    {"order", cmd_order, "create|list|show|close|verify ...",
     "production orders: how many devices a station may provision, and their signed report"},
    {"maintain", cmd_maintain, "[--issuer L] [--dry-run]",
     "re-sign CRLs and renew OCSP signers past half their life (idempotent; the daily timer)"},
    {"ocsp-signer", cmd_ocsp_signer, "new --issuer L [--replace] [--out FILE]",
     "a new key for a CA's delegated OCSP signer after its revocation (docs/ca.md \"OCSP\")"},
    {"sign-image", cmd_sign_image,
     "--key LABEL --in FILE --out FILE --version X.Y.Z[+B] [--security-counter N] "
     "[--format mcuboot [--header-size BYTES] [--align N] [--pad-header] | --format cms] "
     "[--in-sha256 HEX]",
     "sign a firmware image in the HSM (MCUboot image or detached CMS) and record it"},
    {"store", cmd_store, "migrate --to URL | backup --out FILE",
     "copy the store into PostgreSQL, or back an SQLite store up (online, verified)"},
    {NULL, NULL, NULL, NULL},
};

static void cli_help_top(FILE *f)
{
    fprintf(f, "usage: keyline-ca [-c|--config FILE] COMMAND [ARGS]\n\n"
               "PKCS#11-backed certificate authority.\n"
               "Default config: $KEYLINE_CONF, else " KL_CONF_DEFAULT "\n\n"
               "commands:\n");
    for (const cli_cmd *c = cli_top; c->name; c++) {
        fprintf(f, "  %-8s %s\n", c->name, c->help);
    }
    fprintf(f, "\n'keyline-ca COMMAND --help' shows a command's options.\n"
               "Exit status: 0 ok, 1 error, 2 usage, 3 bad input, 4 refused by policy,\n"
               "5 token/PIN error, 6 not found.\n");
}

/* [ceremony] quorum: a command of the ceremony table (ca/ceremony_ops.c) runs only through
 * `keyline-ca ceremony run` once the quorum is set; the plain command refuses and says so. */
static kl_rc cli_ceremony_guard(cli *c, const char *group, const char *name)
{
    char op[64];
    snprintf(op, sizeof op, "%s%s%s", group ? group : "", group ? " " : "", name);
    if (!ceremony_op_find(op)) {
        return KL_OK;
    }
    kl_rc rc = cli_conf(c);
    return rc != KL_OK ? rc : ceremony_guard(c->conf, group, name);
}

void cli_usage(const cli_cmd *cmd, const char *group)
{
    printf("usage: keyline-ca [-c FILE] %s%s%s %s\n  %s\n", group ? group : "", group ? " " : "",
           cmd->name, cmd->usage, cmd->help);
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    static unsigned char seen[4096]; /* by option value; single-threaded command line */
    if (optind == 0) {
        memset(seen, 0, sizeof seen);
    }
    int idx = -1;
    int ch = getopt_long(argc, argv, shortopts, longopts, &idx);
    if (ch <= 0 || ch >= (int)sizeof seen || ch == '?' || ch == ':' || !optarg) {
        return ch;
    }
    if (seen[ch]) {
        for (int i = 0; idx < 0 && longopts[i].name; i++) {
            idx = longopts[i].val == ch && !longopts[i].flag ? i : -1;
        }
        if (idx >= 0) {
            fprintf(stderr, "keyline-ca: option '--%s' given twice (it takes one value)\n",
                    longopts[idx].name);
        } else {
            fprintf(stderr, "keyline-ca: option '-%c' given twice (it takes one value)\n", ch);
        }
        return '?';
    }
    seen[ch] = 1;
    return ch;
}

kl_rc cli_dispatch(cli *c, const cli_cmd *table, const char *group, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        if (argc < 1 && !group) {
            cli_help_top(stderr);
            return kl_fail(KL_EUSAGE, "no command given");
        }
        if (!group) {
            cli_help_top(stdout);
            return KL_OK;
        }
        for (const cli_cmd *t = table; t->name; t++) {
            cli_usage(t, group);
        }
        return argc < 1 ? kl_fail(KL_EUSAGE, "%s: no subcommand given", group) : KL_OK;
    }
    for (const cli_cmd *t = table; t->name; t++) {
        if (strcmp(t->name, argv[0]) == 0) {
            /* groups (ca, audit, device, request) list their own subcommands */
            int is_group = t->fn == cmd_ca || t->fn == cmd_audit || t->fn == cmd_device ||
                           t->fn == cmd_request || t->fn == cmd_officer || t->fn == cmd_ceremony ||
                           t->fn == cmd_store;
            is_group |= t->fn == cmd_order;
            is_group |= t->fn == cmd_matter;
            is_group |= t->fn == cmd_ocsp_signer;
            if (!is_group && argc > 1 &&
                (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
                cli_usage(t, group);
                return KL_OK;
            }
            kl_rc rc = is_group ? KL_OK : cli_ceremony_guard(c, group, t->name);
            return rc != KL_OK ? rc : t->fn(c, argc, argv);
        }
    }
    return kl_fail(KL_EUSAGE, "unknown command '%s%s%s' (see keyline-ca --help)",
                   group ? group : "", group ? " " : "", argv[0]);
}

void cli_time(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!t) {
        snprintf(buf, n, "-");
        return;
    }
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The configuration, loaded on first use. */
kl_rc cli_conf(cli *c)
{
    if (c->conf) {
        return KL_OK;
    }
    kl_rc rc = kl_conf_load(&c->conf, c->config_path);
    if (rc == KL_ENOTFOUND) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", kl_errmsg());
        return kl_fail(rc, "%s (use -c FILE to name the config)", msg);
    }
    return rc;
}

/* `path` with its directory and any symbolic links resolved, also when it does not exist (yet):
 * a dangling link is followed to where a write through it would land. NULL when its directory
 * does not exist (nothing can be written there). Caller frees. */
static char *cli_path_canon(const char *path, int depth)
{
    char *r = realpath(path, NULL);
    if (r || depth > 8) {
        return r;
    }
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX], link[PATH_MAX], joined[2 * PATH_MAX + 2];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    }
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n > 0) {
        link[n] = 0;
        snprintf(joined, sizeof joined, "%s%s%s", link[0] == '/' ? "" : dir,
                 link[0] == '/' ? "" : "/", link);
        return cli_path_canon(joined, depth + 1);
    }
    char *rdir = realpath(dir, NULL);
    if (!rdir) {
        return NULL;
    }
    snprintf(joined, sizeof joined, "%s/%s", strcmp(rdir, "/") == 0 ? "" : rdir,
             slash ? slash + 1 : path);
    free(rdir);
    return strdup(joined);
}

/* 1 when writing to `out` would write over file `keep`: the same device and inode when both
 * exist, else the same resolved path. */
static int cli_same_file(const char *out, const char *keep)
{
    struct stat a, b;
    if (stat(out, &a) == 0 && stat(keep, &b) == 0) {
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    }
    char *ca = cli_path_canon(out, 0), *cb = cli_path_canon(keep, 0);
    int same = ca && cb && strcmp(ca, cb) == 0;
    free(ca);
    free(cb);
    return same;
}

kl_rc cli_out_check(cli *c, const char *out)
{
    kl_rc rc = KL_OK;
    char *db = NULL, *pin = NULL, *shc = NULL;
    if (!out || strcmp(out, "-") == 0) {
        return KL_OK;
    }
    TRY(cli_conf(c));
    /* what a PEM written over it would destroy: the store (SQLite keeps its write-ahead log,
     * shared-memory index and rollback journal beside the database, existing or not at any
     * moment), the configuration, and what it points at for the token */
    const char *store = kl_conf_get(c->conf, "store", "path");
    if (store && strncmp(store, "sqlite:", 7) == 0) {
        db = strdup(store + 7); /* opened as given, like store_open does */
    } else if (store && !strstr(store, "://")) {
        db = kl_conf_path(c->conf, "store", "path"); /* not a PostgreSQL URL */
    }
    const char *pin_spec = kl_conf_get(c->conf, "hsm", "pin");
    if (pin_spec && strncmp(pin_spec, "file:", 5) == 0) {
        pin = pin_spec[5] == '/' ? strdup(pin_spec + 5) : kl_conf_resolve(c->conf, pin_spec + 5);
    }
    shc = kl_conf_path(c->conf, "hsm", "softhsm2-conf");
    struct {
        const char *what, *path, *suffix;
    } keep[] = {
        {"the configuration", kl_conf_file(c->conf), ""},
        {"the store's database", db, ""},
        {"the store's write-ahead log", db, "-wal"},
        {"the store's shared-memory index", db, "-shm"},
        {"the store's rollback journal", db, "-journal"},
        {"the token PIN file", pin, ""},
        {"the SoftHSM configuration", shc, ""},
    };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        if (!keep[i].path) {
            continue;
        }
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s%s", keep[i].path, keep[i].suffix);
        ENSURE(!cli_same_file(out, p), KL_EUSAGE,
               "refusing --out %s: it is %s (%s); nothing was written", out, keep[i].what, p);
    }
    /* and that it can be written, before what it is for is signed or recorded */
    TRY(kl_file_writable(out));
out:
    free(db);
    free(pin);
    free(shc);
    return rc;
}

kl_rc cli_output(cli *c, const char *out, const void *data, size_t len)
{
    kl_rc rc = cli_out_check(c, out);
    return rc != KL_OK ? rc : kl_file_write_atomic(out ? out : "-", data, len, 0644);
}

/* Every command that opened the token signs the audit head before it closes the context
 * (docs/ca.md "Audit verify"): whatever it appended, and whatever processes without the token
 * appended since the last checkpoint. The command's own result and message stand; a failure to
 * sign is a warning (the entries stay unsigned until the next checkpoint, and audit verify says
 * how many there are). */
static void cli_audit_checkpoint(ca_ctx *ca, void *arg)
{
    char saved[1024];
    ca_audit_cp cp;
    (void)arg;
    snprintf(saved, sizeof saved, "%s", kl_errmsg());
    if (ca_audit_checkpoint(ca, &cp) != KL_OK) {
        fprintf(stderr, "keyline-ca: warning: audit log not signed: %s\n", kl_errmsg());
    }
    (void)kl_fail(KL_OK, "%s", saved);
}

kl_rc cli_open(cli *c, int with_hsm, ca_ctx **out)
{
    kl_rc rc = cli_conf(c);
    if (rc != KL_OK) {
        return rc;
    }
    if (!with_hsm) {
        return ca_open_nohsm(out, c->conf);
    }
    rc = ca_open(out, c->conf);
    if (rc == KL_OK) {
        ca_close_hook_set(*out, cli_audit_checkpoint, c);
    }
    return rc;
}

kl_rc cli_output_certs(cli *c, const char *out, STACK_OF(X509) * certs, int n)
{
    BIO *b = BIO_new(BIO_s_mem());
    kl_rc rc = b ? KL_OK : kl_fail(KL_EINTERNAL, "out of memory");
    for (int i = 0; rc == KL_OK && i < n && i < sk_X509_num(certs); i++) {
        if (!PEM_write_bio_X509(b, sk_X509_value(certs, i))) {
            rc = kl_fail_ssl(KL_EINTERNAL, "cannot encode certificate");
        }
    }
    if (rc == KL_OK) {
        char *data;
        long len = BIO_get_mem_data(b, &data);
        rc = cli_output(c, out, data, (size_t)len);
    }
    BIO_free(b);
    return rc;
}

kl_rc cli_output_cert(cli *c, const char *out, X509 *x)
{
    STACK_OF(X509) *one = sk_X509_new_null();
    kl_rc rc = one && sk_X509_push(one, x) ? cli_output_certs(c, out, one, 1)
                                           : kl_fail(KL_EINTERNAL, "out of memory");
    sk_X509_free(one);
    return rc;
}

kl_rc cli_crl_publish(ca_ctx *ca, const char *issuer, const char *why, X509_CRL **out)
{
    if (!out) { /* DER only, never parsed back: a CRL of any size (ca_crl_der) */
        ca_crl_result r;
        kl_rc rc = ca_crl_der(ca, issuer, 0, &r);
        if (rc == KL_OK) {
            fprintf(stderr, "keyline-ca: published CRL number %lld of %s (%s)\n",
                    (long long)r.number, issuer, why);
        }
        ca_crl_result_free(&r);
        return rc;
    }
    X509_CRL *crl = NULL;
    kl_rc rc = ca_crl(ca, issuer, &crl);
    if (rc == KL_OK) {
        ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
        fprintf(stderr, "keyline-ca: published CRL number %lld of %s (%s)\n",
                num ? (long long)ASN1_INTEGER_get(num) : -1LL, issuer, why);
        ASN1_INTEGER_free(num);
    }
    if (out) {
        *out = crl;
    } else {
        X509_CRL_free(crl);
    }
    return rc;
}

int main(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    c.config_path = kl_conf_default_path();
    const char *user = getenv("SUDO_USER");
    if (!user) {
        struct passwd *pw = getpwuid(getuid());
        user = pw ? pw->pw_name : "unknown";
    }
    snprintf(c.actor, sizeof c.actor, "cli:%s", user);

    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    int ch, done = 0;
    kl_rc rc = KL_OK;
    while (!done && (ch = cli_getopt(argc, argv, "+c:hV", opts)) != -1) {
        switch (ch) {
        case 'c': c.config_path = optarg; break;
        case 'h':
            cli_help_top(stdout);
            done = 1;
            break;
        case 'V':
            kl_version_print("keyline-ca");
            done = 1;
            break;
        default: cli_help_top(stderr); return 2;
        }
    }
    if (!done) {
        rc = cli_dispatch(&c, cli_top, NULL, argc - optind, argv + optind);
    }
    kl_conf_free(c.conf);
    if (rc != KL_OK) {
        fprintf(stderr, "keyline-ca: %s\n", kl_errmsg());
    }
    /* What the command printed (list, show, audit verify...) must have arrived: a report cut
     * short on a full disk is an error, not exit 0 (D3 of the full-disk test). A command that
     * failed already said why, in its one line, and keeps its status. */
    kl_rc out = kl_stdout_close();
    if (out != KL_OK && rc == KL_OK) {
        fprintf(stderr, "keyline-ca: %s\n", kl_errmsg());
        rc = out;
    }
    return kl_rc_exit(rc);
}
