/* keyline-ca store migrate|backup: move the store to PostgreSQL, back an SQLite store up.
 * Both work on the configured store directly (no token, no PIN): run them as the CA user. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyline-ca.h"
#include "store.h"

/* The store keyline.conf names, opened. */
static kl_rc store_open_conf(cli *c, store **out, char **dsn)
{
    kl_rc rc = KL_OK;
    TRY(cli_conf(c));
    TRY(store_conf_dsn(c->conf, dsn));
    TRY(store_open(out, *dsn));
out:
    return rc;
}

static void report_chain(const char *side, const store_audit_report *r)
{
    printf("%s: audit log intact: %lld entries, head %lld %s", side, (long long)r->entries,
           (long long)r->head_seq, r->head_hash);
    if (r->checkpoints > 0) {
        printf(", %lld signed checkpoints (the last at entry %lld) by audit key '%s'",
               (long long)r->checkpoints, (long long)r->cp_seq, r->key_label);
    }
    printf("\n");
}

static kl_rc cmd_store_migrate(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    store *from = NULL, *to = NULL;
    char *dsn = NULL;
    const char *target = NULL;
    store_copy_report r;
    static const struct option opts[] = {{"to", required_argument, NULL, 't'}, {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "", opts)) != -1) {
        switch (ch) {
        case 't': target = optarg; break;
        default: return kl_fail(KL_EUSAGE, "store migrate --to postgresql://...");
        }
    }
    ENSURE(optind == argc && target && *target, KL_EUSAGE, "store migrate --to postgresql://...");
    ENSURE(strstr(target, "://"), KL_EUSAGE,
           "store migrate: --to takes a database URL (postgresql://...), not '%.100s'", target);
    TRY(store_open_conf(c, &from, &dsn));
    ENSURE(strcmp(dsn, target) != 0, KL_EUSAGE, "store migrate: --to names the store itself");
    TRY(store_open(&to, target));
    TRY(store_copy(from, to, &r));
    printf("migrated %lld rows in %lld tables\n", (long long)r.rows, (long long)r.tables);
    report_chain("source", &r.from);
    report_chain("copy", &r.to);
    printf("next: stop keyline-cad, set [store] url to the new database (and remove [store] "
           "path), start it again; keep the SQLite file as it is\n");
out:
    store_close(to);
    store_close(from);
    free(dsn);
    return rc;
}

static kl_rc cmd_store_backup(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    store *s = NULL, *b = NULL;
    char *dsn = NULL;
    const char *out_path = NULL;
    store_audit_report r;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "", opts)) != -1) {
        switch (ch) {
        case 'o': out_path = optarg; break;
        default: return kl_fail(KL_EUSAGE, "store backup --out FILE");
        }
    }
    ENSURE(optind == argc && out_path && *out_path && strcmp(out_path, "-") != 0, KL_EUSAGE,
           "store backup --out FILE (a new file)");
    TRY(cli_out_check(c, out_path));
    TRY(store_open_conf(c, &s, &dsn));
    TRY(store_backup(s, out_path));
    /* the copy is a store of its own: it opens, and its chain and checkpoints verify */
    rc = store_open(&b, out_path);
    if (rc == KL_OK) {
        rc = store_audit_verify_report(b, &r);
    }
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "store backup %s written, but it does not verify", out_path);
        goto out;
    }
    printf("backup %s written\n", out_path);
    report_chain("backup", &r);
out:
    store_close(b);
    store_close(s);
    free(dsn);
    return rc;
}

static const cli_cmd cmd_store_table[] = {
    {"migrate", cmd_store_migrate, "--to postgresql://...",
     "copy the whole store into an empty PostgreSQL database and verify the audit chain on both "
     "sides"},
    {"backup", cmd_store_backup, "--out FILE",
     "consistent online backup of an SQLite store into a new file, verified"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_store(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_store_table, "store", argc - 1, argv + 1);
}
