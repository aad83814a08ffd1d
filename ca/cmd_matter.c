/* keyline-ca matter passcode: a Matter device's kept setup passcode (docs/matter.md). */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "ca_backend.h"
#include "keyline-ca.h"
#include "matter_seal.h"
#include "store_matter.h"

static kl_rc cmd_matter_passcode(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *dev = NULL;
    ca_ctx *ca = NULL;
    store_matter m;
    uint32_t pc = 0;
    char detail[200];
    static const struct option opts[] = {{"device", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    memset(&m, 0, sizeof m);
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "d:", opts)) != -1) {
        switch (ch) {
        case 'd': dev = optarg; break;
        default: return kl_fail(KL_EUSAGE, "matter passcode: bad option (see --help)");
        }
    }
    ENSURE(dev && *dev && strlen(dev) <= 128 && optind == argc, KL_EUSAGE,
           "matter passcode needs --device SERIAL");
    TRY(cli_open(c, 1, &ca));
    TRY(store_matter_get(ca_store(ca), dev, &m));
    ENSURE(m.passcode_sealed, KL_ENOTFOUND,
           "device %s: no passcode kept (matter-keep-passcode was off when it was provisioned)",
           dev);
    TRY(matter_passcode_open(ca_hsm(ca), &m, &pc, NULL));
    /* recorded before it is shown */
    snprintf(detail, sizeof detail, "device %s: setup passcode opened", dev);
    TRY(store_audit_append(ca_store(ca), c->actor, "matter-passcode-read", detail));
    printf("{\"device_id\": \"%s\", \"passcode\": \"%08u\", \"discriminator\": %lld}\n", dev, pc,
           (long long)m.discriminator);
out:
    OPENSSL_cleanse(&pc, sizeof pc);
    store_matter_free(&m);
    ca_close(ca);
    return rc;
}

static const cli_cmd cmd_matter_table[] = {
    {"passcode", cmd_matter_passcode, "--device SERIAL",
     "open a device's kept setup passcode in the token (matter-keep-passcode; audited)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_matter(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_matter_table, "matter", argc - 1, argv + 1);
}
