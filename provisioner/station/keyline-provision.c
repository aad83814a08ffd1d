/* keyline-provision: the factory provisioning station (docs/station.md).
 *
 *   keyline-provision -c keyline.conf --port DEV [--port DEV ...] [--mode csr|inject]
 *                     [--count N] [--watch] [--watch-glob PATTERN]
 *                     [--reprovision --reason R] [--results FILE]
 *                     [--dashboard [HOST:]PORT]
 *
 * main only parses arguments, loads the config and hands over to st_station, which asks
 * keyline-cad for everything the CA does: the station holds no PIN, token or store. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kl_conf.h"
#include "kl_log.h"
#include "kl_notify.h"
#include "kl_version.h"
#include "st.h"
#include "st_dash.h"

static st_station *g_station;

static void on_signal(int sig)
{
    (void)sig;
    if (g_station) {
        g_station->stop = 1;
    }
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: keyline-provision -c keyline.conf --port DEV [--port DEV ...] [options]\n"
        "\n"
        "Provision devices on serial fixtures: key, IDevID certificate from the factory CA,\n"
        "trust anchors, proof of possession, lock. One thread per fixture.\n"
        "\n"
        "  -c, --config FILE      keyline.conf ([station], [cad] socket); default\n"
        "                         $KEYLINE_CONF, else " KL_CONF_DEFAULT "\n"
        "  -p, --port DEV         a fixture's serial port (repeatable): /dev/ttyUSB0, a pty...\n"
        "  -m, --mode csr|inject  key born on the device (csr) or made by the station (inject);\n"
        "                         default [station] mode, else csr\n"
        "  -n, --count N          exit after N devices finished: 0 if all succeeded, 1 if not\n"
        "  -w, --watch            also pick up ttyUSB*/ttyACM* ports as they appear (udev)\n"
        "      --watch-glob PAT   also pick up ports matching a glob (ptys in tests)\n"
        "      --reprovision      replace an existing IDevID: revoke it first (needs --reason)\n"
        "      --reason R         revocation reason for --reprovision (superseded,\n"
        "                         keyCompromise, cessationOfOperation, affiliationChanged,\n"
        "                         unspecified)\n"
        "  -r, --results FILE     append one JSON line per device (default [station] results)\n"
        "  -d, --dashboard ADDR   serve the operator dashboard (web page, live updates,\n"
        "                         /metrics) on ADDR: PORT or 127.0.0.1:PORT (loopback),\n"
        "                         HOST:PORT to serve others; default [station] dashboard\n"
        "  -v, --verbose          debug logging\n"
        "  -V, --version          print the version\n"
        "  -h, --help             this text\n"
        "\n"
        "Stop with Ctrl-C (SIGINT) or SIGTERM: devices in progress stay pending and resume\n"
        "when they are seen again. See docs/station.md.\n");
}

int main(int argc, char **argv)
{
    const char *conf_path = kl_conf_default_path(), *mode = NULL, *reason = NULL, *results = NULL;
    const char *watch_glob = NULL, *dashboard = NULL;
    st_dash *dash = NULL;
    const char *ports[ST_MAX_FIXTURES];
    size_t nports = 0;
    long count = 0;
    int watch = 0, reprovision = 0, exit_code = 0;
    kl_conf *conf = NULL;
    st_station st;
    int st_ready = 0;
    kl_rc rc = KL_OK;

    enum { OPT_REPROVISION = 256, OPT_REASON, OPT_WATCH_GLOB };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"mode", required_argument, NULL, 'm'},
        {"count", required_argument, NULL, 'n'},
        {"watch", no_argument, NULL, 'w'},
        {"watch-glob", required_argument, NULL, OPT_WATCH_GLOB},
        {"reprovision", no_argument, NULL, OPT_REPROVISION},
        {"reason", required_argument, NULL, OPT_REASON},
        {"results", required_argument, NULL, 'r'},
        {"dashboard", required_argument, NULL, 'd'},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:p:m:n:wr:d:vVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': conf_path = optarg; break;
        case 'p':
            if (nports >= ST_MAX_FIXTURES) {
                fprintf(stderr, "keyline-provision: at most %d ports\n", ST_MAX_FIXTURES);
                return 2;
            }
            if (!optarg || !*optarg) {
                fprintf(stderr, "keyline-provision: --port needs a device path\n");
                return 2;
            }
            ports[nports++] = optarg;
            break;
        case 'm': mode = optarg; break;
        case 'n': {
            char *end;
            errno = 0;
            count = strtol(optarg, &end, 10);
            if (errno || *end || count < 1) {
                fprintf(stderr, "keyline-provision: --count needs a positive number\n");
                return 2;
            }
            break;
        }
        case 'w': watch = 1; break;
        case OPT_WATCH_GLOB: watch_glob = optarg; break;
        case OPT_REPROVISION: reprovision = 1; break;
        case OPT_REASON: reason = optarg; break;
        case 'r': results = optarg; break;
        case 'd': dashboard = optarg; break;
        case 'v': kl_log_set_level(KL_LOG_DEBUG); break;
        case 'V': kl_version_print("keyline-provision"); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keyline-provision: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (nports == 0 && !watch && !watch_glob) {
        fprintf(stderr, "keyline-provision: no fixture: give --port DEV (or --watch)\n");
        return 2;
    }
    if (mode && st_mode_from_name(mode) < 0) {
        fprintf(stderr, "keyline-provision: --mode must be csr or inject\n");
        return 2;
    }
    int reason_code = -1;
    if (reprovision) {
        if (!reason) {
            fprintf(stderr, "keyline-provision: --reprovision needs --reason R (why the old "
                            "certificate is revoked)\n");
            return 2;
        }
        reason_code = st_reason_from_name(reason);
        if (reason_code < 0) {
            fprintf(stderr, "keyline-provision: unknown revocation reason '%s'\n", reason);
            return 2;
        }
    } else if (reason) {
        fprintf(stderr, "keyline-provision: --reason only goes with --reprovision\n");
        return 2;
    }

    for (size_t i = 0; i < nports; i++) {
        struct stat sb;
        /* a missing port may appear later (fixture cable); an existing non-tty never will */
        if (stat(ports[i], &sb) == 0 && !S_ISCHR(sb.st_mode)) {
            fprintf(stderr, "keyline-provision: %s: not a serial port\n", ports[i]);
            return 2;
        }
    }
    rc = kl_conf_load(&conf, conf_path);
    if (rc == KL_OK) {
        rc = kl_log_configure(conf, "keyline-provision");
    }
    if (rc != KL_OK) {
        goto out;
    }
    /* No PIN, token or store here: keyline-cad holds them. The process is still made
     * non-dumpable: in inject mode it holds each device's new private key for a moment. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        rc = kl_fail(KL_EINTERNAL, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
        goto out;
    }
    rc = st_station_init(&st, conf);
    st_ready = 1;
    if (rc != KL_OK) {
        goto out;
    }
    if (mode) {
        st.cfg.mode = (st_mode)st_mode_from_name(mode);
    }
    if (results) {
        if (st.results_fd >= 0) {
            close(st.results_fd);
        }
        st.results_fd = open(results, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (st.results_fd < 0) {
            rc = kl_fail(KL_EIO, "results file %s: %s", results, strerror(errno));
            goto out;
        }
    }
    st.reprovision = reprovision;
    st.reprovision_reason = reason_code;
    st.count = count;
    st.display_tty = isatty(STDOUT_FILENO);
    g_station = &st;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    kl_info("station: keyline-cad %s, profile %s, issuer %s, mode %s, %ld baud, timeouts %ld/%ld "
            "ms x %ld, "
            "pending window %ld s",
            st.cfg.cad, st.cfg.profile, st.cfg.issuer, st_mode_name(st.cfg.mode), st.cfg.baud,
            st.cfg.timeout_ms, st.cfg.slow_timeout_ms, st.cfg.retries + 1, st.cfg.pending_window);
    {
        unsigned n = 0;
        rc = st_station_sweep(&st, &n);
        if (rc != KL_OK) {
            kl_wrap(rc, "pending sweep");
            goto out;
        }
        if (n) {
            kl_info("station: revoked %u abandoned pending certificate(s)", n);
        }
    }
    if (dashboard || st.cfg.dashboard) {
        rc = st_dash_start(&st, dashboard ? dashboard : st.cfg.dashboard, st.cfg.dashboard_users,
                           &dash);
        if (rc != KL_OK) {
            goto out;
        }
        kl_info("station: dashboard on http://%s/", st_dash_address(dash));
    }
    for (size_t i = 0; i < nports; i++) {
        rc = st_station_add_port(&st, ports[i], 0);
        if (rc != KL_OK) {
            goto out;
        }
    }
    if (watch || watch_glob) {
        /* a service (--watch): keyline-cad answered (the sweep), the fixtures given are open;
         * ports already plugged in are picked up by st_station_run's first scan */
        kl_notify_ready();
    }
    rc = st_station_run(&st, watch, watch_glob);
    if (st.stop) {
        kl_notify_stopping();
    }
    if (rc != KL_OK) {
        goto out;
    }
    if (!st.display_tty) {
        kl_info("station: %ld device(s) finished, %ld failed", st.finished, st.failed);
    }
    exit_code = st.failed ? 1 : 0;
    if (count && st.finished < count) {
        exit_code = 1; /* stopped before the count was reached */
    }
out:
    if (rc != KL_OK) {
        fprintf(stderr, "keyline-provision: %s\n", kl_errmsg());
        exit_code = kl_rc_exit(rc);
    }
    g_station = NULL;
    st_dash_stop(dash);
    if (st_ready) {
        st.stop = 1;
        st_station_free(&st);
    }
    kl_conf_free(conf);
    return exit_code;
}
