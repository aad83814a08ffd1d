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

/* The command line (keyline-provision --help). */
typedef struct {
    const char *conf_path, *mode, *reason, *results, *watch_glob, *dashboard;
    const char *ports[ST_MAX_FIXTURES];
    size_t nports;
    long count;
    int watch, reprovision, reason_code;
} prov_opts;

enum { OPT_REPROVISION = 256, OPT_REASON, OPT_WATCH_GLOB };

static const struct option prov_longopts[] = {
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

/* The option parsers below return -1 when the value is taken, else main's exit code. */
static int opt_port(prov_opts *o, const char *arg)
{
    if (o->nports >= ST_MAX_FIXTURES) {
        fprintf(stderr, "keyline-provision: at most %d ports\n", ST_MAX_FIXTURES);
        return 2;
    }
    if (!arg || !*arg) {
        fprintf(stderr, "keyline-provision: --port needs a device path\n");
        return 2;
    }
    o->ports[o->nports++] = arg;
    return -1;
}

static int opt_count(prov_opts *o, const char *arg)
{
    char *end;
    errno = 0;
    o->count = strtol(arg, &end, 10);
    if (errno || *end || o->count < 1) {
        fprintf(stderr, "keyline-provision: --count needs a positive number\n");
        return 2;
    }
    return -1;
}

/* One option from getopt_long: -1 to go on, else main's exit code. */
static int opt_apply(int c, const char *arg, prov_opts *o)
{
    switch (c) {
    case 'c': o->conf_path = arg; break;
    case 'p': return opt_port(o, arg);
    case 'm': o->mode = arg; break;
    case 'n': return opt_count(o, arg);
    case 'w': o->watch = 1; break;
    case OPT_WATCH_GLOB: o->watch_glob = arg; break;
    case OPT_REPROVISION: o->reprovision = 1; break;
    case OPT_REASON: o->reason = arg; break;
    case 'r': o->results = arg; break;
    case 'd': o->dashboard = arg; break;
    case 'v': kl_log_set_level(KL_LOG_DEBUG); break;
    case 'V': kl_version_print("keyline-provision"); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
    return -1;
}

/* --reprovision and --reason go together: -1 when they agree, else main's exit code. */
static int opts_check_reason(prov_opts *o)
{
    o->reason_code = -1;
    if (o->reprovision) {
        if (!o->reason) {
            fprintf(stderr, "keyline-provision: --reprovision needs --reason R (why the old "
                            "certificate is revoked)\n");
            return 2;
        }
        o->reason_code = st_reason_from_name(o->reason);
        if (o->reason_code < 0) {
            fprintf(stderr, "keyline-provision: unknown revocation reason '%s'\n", o->reason);
            return 2;
        }
    } else if (o->reason) {
        fprintf(stderr, "keyline-provision: --reason only goes with --reprovision\n");
        return 2;
    }
    return -1;
}

/* What the options say together: -1 when they make sense, else main's exit code. */
static int opts_check(int argc, char **argv, prov_opts *o)
{
    if (optind < argc) {
        fprintf(stderr, "keyline-provision: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->nports == 0 && !o->watch && !o->watch_glob) {
        fprintf(stderr, "keyline-provision: no fixture: give --port DEV (or --watch)\n");
        return 2;
    }
    if (o->mode && st_mode_from_name(o->mode) < 0) {
        fprintf(stderr, "keyline-provision: --mode must be csr or inject\n");
        return 2;
    }
    int r = opts_check_reason(o);
    if (r >= 0) {
        return r;
    }
    for (size_t i = 0; i < o->nports; i++) {
        struct stat sb;
        /* a missing port may appear later (fixture cable); an existing non-tty never will */
        if (stat(o->ports[i], &sb) == 0 && !S_ISCHR(sb.st_mode)) {
            fprintf(stderr, "keyline-provision: %s: not a serial port\n", o->ports[i]);
            return 2;
        }
    }
    return -1;
}

/* The command line into o: -1 to go on, else main's exit code. */
static int opts_parse(int argc, char **argv, prov_opts *o)
{
    int c, r;
    while ((c = getopt_long(argc, argv, "c:p:m:n:wr:d:vVh", prov_longopts, NULL)) != -1) {
        if ((r = opt_apply(c, optarg, o)) >= 0) {
            return r;
        }
    }
    return opts_check(argc, argv, o);
}

static kl_rc prov_conf_load(const char *conf_path, kl_conf **conf)
{
    kl_rc rc = KL_OK;
    TRY(kl_conf_load(conf, conf_path));
    TRY(kl_log_configure(*conf, "keyline-provision"));
    /* No PIN, token or store here: keyline-cad holds them. The process is still made
     * non-dumpable: in inject mode it holds each device's new private key for a moment. */
    ENSURE(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0, KL_EINTERNAL, "prctl(PR_SET_DUMPABLE): %s",
           strerror(errno));
out:
    return rc;
}

/* The command line over the station's configuration. */
static kl_rc prov_apply(st_station *st, const prov_opts *o)
{
    kl_rc rc = KL_OK;
    if (o->mode) {
        st->cfg.mode = (st_mode)st_mode_from_name(o->mode);
    }
    if (o->results) {
        if (st->results_fd >= 0) {
            close(st->results_fd);
        }
        /* 0640: a Matter line carries the setup passcode (docs/matter.md) */
        TRY(st_results_open(o->results, &st->results_fd));
    }
    st->reprovision = o->reprovision;
    st->reprovision_reason = o->reason_code;
    st->count = o->count;
    st->display_tty = isatty(STDOUT_FILENO);
out:
    return rc;
}

static void signals_setup(st_station *st)
{
    g_station = st;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Log the settings, then revoke what an earlier run left pending (it also shows keyline-cad
 * answers). */
static kl_rc prov_sweep(st_station *st)
{
    kl_rc rc = KL_OK;
    unsigned n = 0;
    kl_info("station: keyline-cad %s, profile %s, issuer %s, mode %s, %ld baud, timeouts %ld/%ld "
            "ms x %ld, "
            "pending window %ld s",
            st->cfg.cad, st->cfg.profile, st->cfg.issuer, st_mode_name(st->cfg.mode), st->cfg.baud,
            st->cfg.timeout_ms, st->cfg.slow_timeout_ms, st->cfg.retries + 1,
            st->cfg.pending_window);
    rc = st_station_sweep(st, &n);
    if (rc != KL_OK) {
        kl_wrap(rc, "pending sweep");
        goto out;
    }
    if (n) {
        kl_info("station: revoked %u abandoned pending certificate(s)", n);
    }
out:
    return rc;
}

/* The dashboard and the fixtures, then the station until it is done or stopped. */
static kl_rc prov_run(st_station *st, const prov_opts *o, st_dash **dash)
{
    kl_rc rc = KL_OK;
    if (o->dashboard || st->cfg.dashboard) {
        TRY(st_dash_start(st, o->dashboard ? o->dashboard : st->cfg.dashboard,
                          st->cfg.dashboard_users, dash));
        kl_info("station: dashboard on http://%s/", st_dash_address(*dash));
    }
    for (size_t i = 0; i < o->nports; i++) {
        TRY(st_station_add_port(st, o->ports[i], 0));
    }
    if (o->watch || o->watch_glob) {
        /* a service (--watch): keyline-cad answered (the sweep), the fixtures given are open;
         * ports already plugged in are picked up by st_station_run's first scan */
        kl_notify_ready();
    }
    rc = st_station_run(st, o->watch, o->watch_glob);
    if (st->stop) {
        kl_notify_stopping();
    }
out:
    return rc;
}

/* 0 if every device succeeded and --count (if any) was reached, else 1. */
static int prov_exit_code(const st_station *st, long count)
{
    if (!st->display_tty) {
        kl_info("station: %ld device(s) finished, %ld failed", st->finished, st->failed);
    }
    if (count && st->finished < count) {
        return 1; /* stopped before the count was reached */
    }
    return st->failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    prov_opts o = {.conf_path = kl_conf_default_path()};
    st_dash *dash = NULL;
    int exit_code = 0;
    kl_conf *conf = NULL;
    st_station st;
    int st_ready = 0;
    kl_rc rc = KL_OK;

    int r = opts_parse(argc, argv, &o);
    if (r >= 0) {
        return r;
    }
    TRY(prov_conf_load(o.conf_path, &conf));
    rc = st_station_init(&st, conf);
    st_ready = 1;
    TRY(rc);
    TRY(prov_apply(&st, &o));
    signals_setup(&st);
    TRY(prov_sweep(&st));
    TRY(prov_run(&st, &o, &dash));
    exit_code = prov_exit_code(&st, o.count);
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
