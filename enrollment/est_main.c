/* keyline-estd: EST server. Thin main: arguments, config, signals; the rest is in est_*.c. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "est.h"
#include "kl_conf.h"
#include "kl_daemon.h"
#include "kl_log.h"
#include "kl_notify.h"
#include "kl_version.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyline-estd [-c keyline.conf] [-v]\n"
            "  EST (RFC 7030) enrollment server; runs in the foreground, logs to stderr.\n"
            "  A client of keyline-cad ([cad] socket): it holds no CA PIN, token or store.\n"
            "  -c, --config FILE  configuration, section [est] (default $KEYLINE_CONF, else\n"
            "                     " KL_CONF_DEFAULT ")\n"
            "  -v, --verbose      debug logging\n"
            "  -V, --version      print the version\n"
            "  SIGTERM/SIGINT: finish in-flight requests and exit 0; SIGHUP: reload htpasswd and\n"
            "  the TLS certificate and key.\n"
            "  See docs/est.md.\n");
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int early = kl_daemon_args(argc, argv, "keyline-estd", usage, &conf_path);
    if (early >= 0) {
        return early;
    }

    /* Block the signals before any thread exists, so every MHD thread inherits the mask and
     * only sigwait() below sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    kl_conf *conf = NULL;
    est_server *srv = NULL;
    kl_rc rc = kl_conf_load(&conf, conf_path);
    if (rc == KL_OK) {
        rc = kl_log_configure(conf, "keyline-estd");
    }
    if (rc == KL_OK) {
        rc = est_server_new(conf, &srv);
    }
    if (rc == KL_OK) {
        rc = est_server_start(srv);
    }
    if (rc != KL_OK) {
        kl_error("keyline-estd: %s", kl_errmsg());
        est_server_free(srv);
        kl_conf_free(conf);
        return kl_rc_exit(rc);
    }
    kl_info("keyline-estd ready");
    /* est_server_new() waited for keyline-cad to answer; the listeners are up */
    kl_notify_ready();
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (sig == SIGHUP) {
            kl_notify_reloading();
            if (est_server_reload(srv) != KL_OK) {
                kl_error("reload: %s (keeping the previous users)", kl_errmsg());
            }
            kl_notify_ready();
            continue;
        }
        kl_info("%s: stopping (finishing in-flight requests)",
                sig == SIGTERM ? "SIGTERM" : "SIGINT");
        kl_notify_stopping();
        break;
    }
    est_server_stop(srv);
    est_server_free(srv);
    kl_conf_free(conf);
    kl_info("keyline-estd stopped");
    return 0;
}
