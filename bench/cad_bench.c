/* The cost of the privilege boundary: ca_issue() throughput in-process against the same
 * issuance through keyline-cad (8 concurrent clients over its Unix socket), measured in the
 * same run on the same token and store (run under tests/lib/with-token.sh; scripts/bench does).
 * With --pg URL (a PostgreSQL database, empty: tests/lib/pg.sh) also the issuance through one
 * and through two keyline-cad on that database (issue 13 item 6: several daemons on one
 * PostgreSQL, sharing the token folder), each as a ratio to one keyline-cad on SQLite.
 *
 *   cad_bench SECONDS PATH/keyline-cad [--pg URL]
 *
 * Phase 1 opens the CA in this process (and creates root1 -> field1 in the SQLite store),
 * closes it, then phase 2 starts keyline-cad on the same config with a profile for field1 and
 * issues through it. Phase 3 (--pg) copies that store into PostgreSQL (keyline-ca store
 * migrate's store_copy), starts keyline-cad A on it, issues through A, starts B (its own
 * socket, the same database and token) and issues through both, the clients split evenly. */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_lib.h"
#include "ca.h"
#include "cac.h"
#include "store.h"

#define THREADS 8

#define MAX_DAEMONS 2

static ca_ctx *g_ca;
static cac *g_cac[MAX_DAEMONS];
static int g_ncac = 1;
static const char *g_profile = "bench";
static uint8_t *g_csr;
static size_t g_csr_len;
static atomic_long g_ops;
static atomic_int g_stop;
static atomic_int g_errors;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *issue_inproc(void *arg)
{
    (void)arg;
    ca_issue_req req = {.issuer = "field1",
                        .template_name = "device-ldevid",
                        .csr_der = g_csr,
                        .csr_len = g_csr_len,
                        .device_id = "BENCH0001",
                        .actor = "bench"};
    while (!atomic_load(&g_stop)) {
        X509 *x = NULL;
        if (ca_issue(g_ca, &req, &x) != KL_OK) {
            atomic_fetch_add(&g_errors, 1);
        } else {
            atomic_fetch_add(&g_ops, 1); /* only what was issued counts */
        }
        X509_free(x);
    }
    return NULL;
}

static void *issue_cad(void *arg)
{
    cac *cc = g_cac[(int)(intptr_t)arg % g_ncac]; /* the clients split evenly over the daemons */
    cac_issue_req req = {.profile = g_profile,
                         .csr = g_csr,
                         .csr_len = g_csr_len,
                         .auth = {.method = "basic", .user = "bench"},
                         .device_id = "BENCH0001"};
    while (!atomic_load(&g_stop)) {
        uint8_t *der = NULL;
        size_t len = 0;
        char serial[65];
        if (cac_issue(cc, &req, &der, &len, serial) != KL_OK) {
            if (atomic_fetch_add(&g_errors, 1) == 0) {
                fprintf(stderr, "cac_issue: %s\n", kl_errmsg());
            }
        } else {
            atomic_fetch_add(&g_ops, 1);
        }
        free(der);
    }
    return NULL;
}

static double run(void *(*fn)(void *), double seconds)
{
    pthread_t t[THREADS];
    atomic_store(&g_ops, 0);
    atomic_store(&g_stop, 0);
    double t0 = now_s();
    for (int i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, fn, (void *)(intptr_t)i);
    }
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    return (double)atomic_load(&g_ops) / (now_s() - t0);
}

static int make_csr(void)
{
    EVP_PKEY *dk = EVP_EC_gen("P-256");
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"bench", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "serialNumber", MBSTRING_ASC, (const unsigned char *)"BENCH0001",
                               -1, -1, 0);
    X509_REQ_set_subject_name(r, n);
    X509_REQ_set_pubkey(r, dk);
    int ok = X509_REQ_sign(r, dk, EVP_sha256()) > 0;
    unsigned char *der = NULL;
    int len = ok ? i2d_X509_REQ(r, &der) : -1;
    X509_REQ_free(r);
    X509_NAME_free(n);
    EVP_PKEY_free(dk);
    if (len <= 0) {
        return -1;
    }
    g_csr = der;
    g_csr_len = (size_t)len;
    return 0;
}

/* Phase 1: the CA hierarchy and the in-process rate. */
static int phase_inproc(const char *conf_path, double secs, double *rate)
{
    kl_conf *conf = NULL;
    X509 *x = NULL, *y = NULL;
    if (kl_conf_load(&conf, conf_path) != KL_OK || ca_open(&g_ca, conf) != KL_OK ||
        ca_create(g_ca, "root1", "root", "CN=Bench Root", HSM_KEY_EC_P256, NULL, "bench", &x) !=
            KL_OK ||
        ca_create(g_ca, "field1", "field-ca", "CN=Bench Field CA", HSM_KEY_EC_P256, "root1",
                  "bench", &y) != KL_OK) {
        fprintf(stderr, "setup: %s\n", kl_errmsg());
        return -1;
    }
    X509_free(x);
    X509_free(y);
    *rate = run(issue_inproc, secs);
    ca_close(g_ca);
    kl_conf_free(conf);
    return 0;
}

/* The SQLite store of phases 1 and 2 copied into the PostgreSQL database `url`, as
 * `keyline-ca store migrate` does (the same CAs, audit chain and audit key as the token's). */
static int migrate(const char *dir, const char *url)
{
    char path[512];
    store *from = NULL, *to = NULL;
    store_copy_report rep;
    snprintf(path, sizeof path, "%s/keyline.db", dir);
    int ok = store_open(&from, path) == KL_OK && store_open(&to, url) == KL_OK &&
             store_copy(from, to, &rep) == KL_OK;
    if (!ok) {
        fprintf(stderr, "cad_bench: copy to PostgreSQL: %s\n", kl_errmsg());
    }
    store_close(from);
    store_close(to);
    return ok ? 0 : -1;
}

/* `base` (the configuration with-token.sh wrote) with the store `url` instead of its SQLite
 * file (NULL: as it is) and a keyline-cad on `sock` with the profile "bench" for `issuer`, into
 * `path`. */
static int write_conf(const char *path, const char *base, const char *url, const char *sock,
                      const char *issuer)
{
    static const char sqlite_line[] = "\npath = keyline.db\n";
    const char *at = url ? strstr(base, sqlite_line) : NULL;
    FILE *f = fopen(path, "w");
    if (!f || (url && !at)) {
        fprintf(stderr, "cad_bench: cannot write %s\n", path);
        if (f) {
            fclose(f);
        }
        return -1;
    }
    if (at) {
        fprintf(f, "%.*s\nurl = %s\n%s", (int)(at - base), base, url, at + strlen(sqlite_line));
    } else {
        fputs(base, f);
    }
    fprintf(f,
            "\n[cad]\nsocket = %s\n\n[profile bench]\nissuer = %s\n"
            "template = device-ldevid\nclients = bench\n",
            sock, issuer);
    return fclose(f) == 0 ? 0 : -1;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s = f ? calloc(1, 1 << 16) : NULL;
    size_t n = s ? fread(s, 1, (1 << 16) - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    if (s && n == 0) {
        free(s);
        s = NULL;
    }
    return s;
}

/* Until keyline-cad's log `log` says its first pass of OCSP answers is done (the start-up
 * work: an answer signed for every certificate in the store, the SQLite phases' too), at most
 * 120 s: the figures are of issuance, not of that. */
static void daemon_settle(const char *log)
{
    for (int i = 0; i < 1200; i++) {
        char *text = read_text(log);
        int done = text && strstr(text, "answers pre-produced") != NULL;
        free(text);
        if (done) {
            return;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "cad_bench: %s: no end of the OCSP start-up pass after 120 s\n", log);
}

/* keyline-cad `bin` on `conf` (its log in conf.log) until its socket `sock` answers and its
 * start-up work is done; its pid, -1 on failure. A second of issuance through it, not counted. */
static pid_t daemon_start(const char *bin, const char *conf, const char *sock, cac **out)
{
    struct stat st;
    char log[600];
    snprintf(log, sizeof log, "%s.log", conf);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stderr)) {
            _exit(126);
        }
        execl(bin, bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400 && stat(sock, &st) != 0; i++) {
        usleep(50 * 1000);
    }
    if (pid < 0 || cac_open(out, sock, 30, NULL, 0) != KL_OK) {
        fprintf(stderr, "keyline-cad (%s): %s\n", conf, pid < 0 ? "fork failed" : kl_errmsg());
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    daemon_settle(log);
    cac *keep = g_cac[0];
    int keep_n = g_ncac;
    g_cac[0] = *out;
    g_ncac = 1;
    (void)run(issue_cad, 1.0);
    g_cac[0] = keep;
    g_ncac = keep_n;
    return pid;
}

static void daemon_stop(pid_t pid, cac **c)
{
    cac_close(*c);
    *c = NULL;
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

/* Phase 3: one, then two keyline-cad on the PostgreSQL database `url`; 0, or -1. */
static int phase_pg(const char *bin, const char *dir, const char *base, const char *url,
                    double secs, double *one, double *two)
{
    char conf[MAX_DAEMONS][512], sock[MAX_DAEMONS][512];
    pid_t pid[MAX_DAEMONS] = {-1, -1};
    int rc = -1;
    for (int i = 0; i < MAX_DAEMONS; i++) {
        snprintf(conf[i], sizeof conf[i], "%s/pg-%c.conf", dir, 'a' + i);
        snprintf(sock[i], sizeof sock[i], "%s/cad-pg-%c.sock", dir, 'a' + i);
        if (write_conf(conf[i], base, url, sock[i], "field1") != 0) {
            return -1;
        }
    }
    if (migrate(dir, url) != 0 || (pid[0] = daemon_start(bin, conf[0], sock[0], &g_cac[0])) < 0) {
        goto out;
    }
    g_ncac = 1;
    *one = run(issue_cad, secs);
    if ((pid[1] = daemon_start(bin, conf[1], sock[1], &g_cac[1])) < 0) {
        goto out;
    }
    g_ncac = 2;
    *two = run(issue_cad, secs);
    rc = 0;
out:
    for (int i = 0; i < MAX_DAEMONS; i++) {
        daemon_stop(pid[i], &g_cac[i]);
    }
    g_ncac = 1;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 5 && strcmp(argv[3], "--pg") == 0)) {
        fprintf(stderr, "usage: cad_bench SECONDS PATH/keyline-cad [--pg URL] (under "
                        "with-token.sh)\n");
        return 2;
    }
    double secs = strtod(argv[1], NULL);
    const char *conf_path = getenv("KL_CONF"), *dir = getenv("KL_TEST_DIR");
    const char *pg = argc == 5 ? argv[4] : NULL;
    char sock[512];
    double inproc = 0, viacad = 0, pg1 = 0, pg2 = 0;
    char *base = conf_path ? read_text(conf_path) : NULL;
    if (!base || !dir || make_csr() != 0 || phase_inproc(conf_path, secs, &inproc) != 0) {
        return 1;
    }
    snprintf(sock, sizeof sock, "%s/cad.sock", dir);
    int rc = 1;
    if (write_conf(conf_path, base, NULL, sock, "field1") != 0) {
        goto out;
    }
    pid_t pid = daemon_start(argv[2], conf_path, sock, &g_cac[0]);
    if (pid < 0) {
        goto out;
    }
    viacad = run(issue_cad, secs);
    daemon_stop(pid, &g_cac[0]);
    printf("ca_issue() in-process, %d threads:      %8.0f certificates/s\n", THREADS, inproc);
    printf("issue through keyline-cad, %d clients:  %8.0f certificates/s = %.2f of in-process\n",
           THREADS, viacad, inproc > 0 ? viacad / inproc : 0.0);
    bench_figure("cad.issue.8c", viacad, "1/s", "ca_issue.inproc.8t", inproc, 0);
    if (pg) {
        if (phase_pg(argv[2], dir, base, pg, secs, &pg1, &pg2) != 0) {
            goto out;
        }
        printf("PostgreSQL, one keyline-cad, %d clients: %8.0f certificates/s = %.2f of SQLite\n",
               THREADS, pg1, viacad > 0 ? pg1 / viacad : 0.0);
        printf("PostgreSQL, two keyline-cad, %d clients: %8.0f certificates/s = %.2f of SQLite\n",
               THREADS, pg2, viacad > 0 ? pg2 / viacad : 0.0);
        bench_figure("cad.issue.pg.1d.8c", pg1, "1/s", "cad.issue.8c", viacad, 0);
        bench_figure("cad.issue.pg.2d.8c", pg2, "1/s", "cad.issue.8c", viacad, 0);
    }
    printf("errors: %d\n", atomic_load(&g_errors));
    rc = atomic_load(&g_errors) ? 1 : 0;
out:
    free(base);
    OPENSSL_free(g_csr);
    return rc;
}
