/* kl_cert_status: the CA's per-request view of an issued certificate, as keyline-estd asks it
 * on every request (ca_cert_status_check: in the store, status valid, inside its recorded
 * validity), at the current time. For tests/integration/est_expired.sh, which runs it under
 * faketime.
 *
 *   kl_cert_status CONF SERIAL-HEX
 *
 * Prints "ok" (exit 0) or the refusal message (exit 1 for KL_EAUTH, 2 for anything else). */
#include <stdio.h>
#include <time.h>

#include "ca.h"
#include "kl_conf.h"
#include "kl_err.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: kl_cert_status CONF SERIAL-HEX\n");
        return 2;
    }
    kl_conf *conf = NULL;
    ca_ctx *ca = NULL;
    char norm[64];
    kl_rc rc = kl_conf_load(&conf, argv[1]);
    if (rc == KL_OK) {
        rc = ca_open_nohsm(&ca, conf);
    }
    if (rc == KL_OK) {
        rc = ca_serial_normalise(argv[2], norm, sizeof norm);
    }
    if (rc == KL_OK) {
        rc = ca_cert_status_check(ca, norm, time(NULL));
        if (rc == KL_OK) {
            printf("ok\n");
        } else {
            printf("%s\n", kl_errmsg());
        }
    } else {
        fprintf(stderr, "kl_cert_status: %s\n", kl_errmsg());
    }
    ca_close(ca);
    kl_conf_free(conf);
    return rc == KL_OK ? 0 : rc == KL_EAUTH ? 1 : 2;
}
