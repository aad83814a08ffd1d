/* keyline-ca audit verify|list */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "keyline-ca.h"

static kl_rc cmd_audit_verify(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    int64_t count = 0;
    (void)argv;
    ENSURE(argc == 1, KL_EUSAGE, "audit verify takes no arguments");
    TRY(cli_open(c, 0, &ca));
    TRY(store_audit_verify(ca_store(ca), &count));
    int64_t seq = 0;
    char head[65] = "";
    TRY(store_audit_head(ca_store(ca), &seq, head));
    /* The head hash is what to export to an outside log: a chain alone cannot reveal a
     * rewrite of the whole file. */
    printf("audit log intact: %lld entries, head %lld %s\n", (long long)count, (long long)seq,
           head);
out:
    ca_close(ca);
    return rc;
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
        printf("%lld %s %s %s %s %.16s\n", (long long)list[i].seq, t, list[i].actor, list[i].action,
               list[i].detail ? list[i].detail : "", list[i].hash);
    }
out:
    store_audit_list_free(list, n);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_audit_table[] = {
    {"verify", cmd_audit_verify, "",
     "check the hash chain, and the certificates and CA records against it; non-zero exit if "
     "tampered"},
    {"list", cmd_audit_list, "", "print the audit entries"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_audit(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_audit_table, "audit", argc - 1, argv + 1);
}
