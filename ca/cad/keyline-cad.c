/* keyline-cad: the CA service. Thin main: arguments, config, signals; cad_*.c does the rest. */
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cad.h"
#include "kl_daemon.h"
#include "kl_log.h"
#include "kl_secret.h"
#include "kl_version.h"

static cad g_cad;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyline-cad [-c keyline.conf] [-v]\n"
            "  The CA service: the only process holding the token PIN and the store. Front\n"
            "  ends (keyline-estd, keyline-provision) ask it for whole operations on named\n"
            "  profiles over a Unix socket ([cad] socket). Runs in the foreground, logs to\n"
            "  stderr; SIGTERM/SIGINT: finish the requests in hand and exit 0.\n"
            "  -c, --config FILE  configuration (default $KEYLINE_CONF, else " KL_CONF_DEFAULT ")\n"
            "  -v, --verbose      debug logging\n"
            "  -V, --version      print the version\n"
            "  See keyline-cad(8) and docs/ca-protocol.md.\n"
            "Exit status: 0 ok, 1 error, 2 usage, 3 bad input, 4 refused by policy,\n"
            "5 token/PIN error, 6 not found.\n");
}

static void cad_on_signal(int sig)
{
    (void)sig;
    g_cad.stop = 1;
}

/* Once a second: sign the audit head when an entry has waited its [cad] audit-checkpoint-seconds
 * (ca_audit_checkpoint_due; requests check it too, after each answer). */
static void *cad_audit_timer(void *arg)
{
    (void)arg;
    while (!g_cad.stop) {
        for (int i = 0; i < 10 && !g_cad.stop; i++) {
            usleep(100 * 1000);
        }
        if (!g_cad.stop) {
            ca_audit_checkpoint_due(g_cad.ca);
        }
    }
    return NULL;
}

/* Sign the audit head now and say so. */
static kl_rc cad_audit_checkpoint(const char *when)
{
    ca_audit_cp cp;
    kl_rc rc = ca_audit_checkpoint(g_cad.ca, &cp);
    if (rc != KL_OK) {
        return kl_wrap(rc, "audit checkpoint at %s", when);
    }
    if (cp.seq > 0) {
        kl_info("keyline-cad: audit checkpoint at %s: entry %lld %s%s", when, (long long)cp.seq,
                cp.hash, cp.made ? "" : " (signed already)");
    }
    return KL_OK;
}

static kl_rc cad_run(const char *conf_path)
{
    kl_rc rc = KL_OK;
    long every = 0, age = 0;
    pthread_t timer_thr;
    int timer = 0;
    kl_conf *conf = NULL;
    unsigned char rnd[16];
    memset(&g_cad, 0, sizeof g_cad);
    pthread_mutex_init(&g_cad.lock, NULL);
    g_cad.listen_fd = -1;
    g_cad.tcp_fd = -1;
    TRY(kl_conf_load(&conf, conf_path));
    TRY(kl_log_configure(conf, "keyline-cad"));
    g_cad.conf = conf;
    TRY(cad_cfg_load(&g_cad.cfg, conf));
    /* the PIN and the token session live here: no core dumps, no ptrace by the same user */
    prctl(PR_SET_DUMPABLE, 0);
    rc = ca_open(&g_cad.ca, conf);
    kl_secret_env_scrub(kl_conf_get(conf, "hsm", "pin"));
    TRY(rc);
    TRY(cad_rev_new(&g_cad, &g_cad.rev));
    ENSURE(RAND_bytes(rnd, sizeof rnd) == 1, KL_EINTERNAL, "RAND_bytes");
    for (size_t i = 0; i < sizeof rnd; i++) {
        snprintf(g_cad.instance + 2 * i, 3, "%02x", rnd[i]);
    }
    for (size_t i = 0; i < g_cad.cfg.nprofiles; i++) {
        const cad_profile *p = &g_cad.cfg.profiles[i];
        kl_info("keyline-cad: profile %s: issuer %s, template %s", p->name, p->issuer,
                p->template_name);
    }
    /* The audit head is signed at start (what was appended while we were down; and the audit
     * key checked against the store before anything is served), every `every` entries (after
     * each request, cad_server.c), once an entry is `age` seconds unsigned (a timer: a quiet
     * service's last entries are not left open to a quiet rewrite until `every` more come),
     * on every CRL (ca_crl) and at shutdown. */
    TRY(kl_conf_get_long(conf, "cad", "audit-checkpoint-every", 100, 1, 1000000, &every));
    TRY(kl_conf_get_long(conf, "cad", "audit-checkpoint-seconds", 60, 0, 86400, &age));
    TRY(cad_audit_checkpoint("start"));
    ca_audit_checkpoint_every(g_cad.ca, every, age);
    timer = age > 0 && pthread_create(&timer_thr, NULL, cad_audit_timer, NULL) == 0;
    rc = cad_serve(&g_cad); /* sends READY=1 once it listens, STOPPING=1 when asked to stop */
    if (timer) {
        g_cad.stop = 1;
        pthread_join(timer_thr, NULL);
    }
    if (rc == KL_OK) {
        /* after the last request, before the token and the store close */
        rc = cad_audit_checkpoint("shutdown");
    }
    TRY(rc);
    kl_info("keyline-cad: stopped");
out:
    cad_rev_free(g_cad.rev);
    SSL_CTX_free(g_cad.tls);
    ca_close(g_cad.ca);
    cad_cfg_free(&g_cad.cfg);
    kl_conf_free(conf);
    return rc;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int early = kl_daemon_args(argc, argv, "keyline-cad", usage, &conf_path);
    if (early >= 0) {
        return early;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cad_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    kl_rc rc = cad_run(conf_path);
    if (rc != KL_OK) {
        kl_error("keyline-cad: %s", kl_errmsg());
    }
    return kl_rc_exit(rc);
}
