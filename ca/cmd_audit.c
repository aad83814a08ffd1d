/* keyline-ca audit verify|list|checkpoint */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyline-ca.h"
#include "ca_backend.h"

static kl_rc cmd_audit_verify(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ca_audit_verdict v;
    int token = 0;
    static const struct option opts[] = {{"token", no_argument, NULL, 't'},
                                         {"no-token", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "", opts)) != -1) {
        switch (ch) {
        case 't': token = 1; break;
        case 'n': token = -1; break;
        default: return kl_fail(KL_EUSAGE, "audit verify [--token|--no-token]");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "audit verify takes no arguments besides --token/--no-token");
    /* No PIN: the checkpoints verify with the public key the store records; the token's public
     * half is read without a login. */
    TRY(cli_open(c, 0, &ca));
    TRY(ca_audit_verify(ca, token, &v));
    /* The head hash is what to export to an outside log: signed checkpoints pin the chain up
     * to the last one, the exported head also what comes after it. */
    printf("audit log intact: %lld entries, head %lld %s\n", (long long)v.r.entries,
           (long long)v.r.head_seq, v.r.head_hash);
    if (v.r.checkpoints > 0) {
        char t[32];
        cli_time(v.r.cp_ts, t, sizeof t);
        printf("signed: %lld checkpoints by audit key '%s' (SHA-256 of its public key %s), the "
               "last at entry %lld (%s)\n",
               (long long)v.r.checkpoints, v.r.key_label, v.r.key_sha256, (long long)v.r.cp_seq, t);
    }
    if (v.r.entries > v.r.cp_seq) {
        printf("note: %lld entries after the last checkpoint are not signed yet (signed by the "
               "next command with the token, or by keyline-cad)\n",
               (long long)(v.r.entries - v.r.cp_seq));
    }
    if (v.officers > 0) {
        printf("officers: %ld, each as its audited registration and removal left it\n", v.officers);
    }
    if (v.token_compared) {
        printf("audit key: the token's\n");
    } else if (v.r.checkpoints > 0) {
        printf("note: audit key not compared with the token's (%s)\n", v.note);
    }
out:
    ca_close(ca);
    return rc;
}

/* One field of an entry as a terminal shows it: control bytes as \xNN, so no stored field can
 * print a line of its own (an actor "root\n9 2026-... officer-remove officer=alice" would).
 * Spaces stay: actors of keyline-cad hold them ("uid 0 (root) as station"). */
static void audit_field_print(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            printf("\\x%02x", *p);
        } else {
            putchar(*p);
        }
    }
}

static kl_rc cmd_audit_list(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_audit *list = NULL;
    size_t n = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "audit list takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(store_audit_list(ca_store(ca), 1, &list, &n));
    for (size_t i = 0; i < n; i++) {
        char t[32];
        cli_time(list[i].ts, t, sizeof t);
        printf("%lld %s ", (long long)list[i].seq, t);
        audit_field_print(list[i].actor);
        putchar(' ');
        audit_field_print(list[i].action);
        putchar(' ');
        audit_field_print(list[i].detail);
        printf(" %.16s\n", list[i].hash);
    }
out:
    store_audit_list_free(list, n);
    ca_close(ca);
    return rc;
}

static kl_rc cmd_audit_checkpoint(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    ca_audit_cp cp;
    unsigned flags = 0;
    static const struct option opts[] = {{"adopt-key", no_argument, NULL, 'a'}, {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "", opts)) != -1) {
        switch (ch) {
        case 'a': flags |= CA_AUDIT_ADOPT_KEY; break;
        default: return kl_fail(KL_EUSAGE, "audit checkpoint [--adopt-key]");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "audit checkpoint takes no arguments besides --adopt-key");
    TRY(cli_open(c, 1, &ca));
    ca_close_hook_set(ca, NULL, NULL); /* this command signs (or says why not) itself */
    TRY(ca_audit_checkpoint_ex(ca, flags, &cp));
    if (cp.seq == 0) {
        printf("the audit log is empty: nothing to sign\n");
    } else {
        printf("audit checkpoint at entry %lld %s%s\n", (long long)cp.seq, cp.hash,
               cp.made ? "" : " (signed already)");
    }
out:
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_audit_table[] = {
    {"verify", cmd_audit_verify, "[--token|--no-token]",
     "check the hash chain, its signed checkpoints, and the certificates and CA records against "
     "it; non-zero exit if tampered (--token: the token's audit key must be compared)"},
    {"list", cmd_audit_list, "", "print the audit entries"},
    {"checkpoint", cmd_audit_checkpoint, "[--adopt-key]",
     "sign the audit head with the audit key in the token (made on first use); --adopt-key: "
     "a new store takes the token's existing audit key"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_audit(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_audit_table, "audit", argc - 1, argv + 1);
}
