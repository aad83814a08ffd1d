/* cad_soak: keyline-cad's memory and file descriptors under sustained load (issue 18 item 1:
 * "no growth per request under the soak").
 *
 *   cad_soak --pid PID --unix SOCKET --tls tls:HOST:PORT --tls-cert F --tls-key F --tls-ca F
 *            --profile P --issuer LABEL --csr CSR.der --live LIVE.der
 *            [--warmup S] [--seconds S] [--bound KIB] [--no-issue] REQ.der...
 *
 * Eight clients drive the daemon PID over its Unix socket and its mutual-TLS listener with the
 * calls front ends make: issue, cert-status (by serial and by certificate), crl, ocsp (the
 * nonce-less REQ.der, answered from the pre-produced answers, and LIVE.der, signed per
 * request), cacerts and ca-chain. One client opens a new connection every 16 calls, alternating
 * Unix socket and TLS (a new handshake, a new connection thread in the daemon). After
 * --warmup seconds (default 30), every second, the daemon's resident set size (all, and the
 * anonymous part: heap and stacks, not the pages of mapped files and libraries it touches),
 * open descriptors and threads are read from /proc with the number of calls answered so far;
 * after --seconds more (default 120), a least-squares line through (calls, anonymous RSS) and
 * (calls, descriptors) gives the growth per call. Figures (bench_lib.h):
 * cad.soak.anon_rss_kib_per_10k against --bound KiB per 10,000 calls (default 16: 1.6 bytes per
 * call; one leaked allocation, 32 bytes at least with glibc, per issuance fails it, issuance
 * being about 6% of the calls) and cad.soak.fds_per_10k against one
 * descriptor per 10,000 calls, both to stay at or below (target_max 1), and the call rate.
 * --no-issue: cert-status calls in place of issue (after the first), so the store does not grow
 * (telling the daemon's own growth from the SQLite page cache filling as the file grows).
 * Exit 1 when a call failed or the daemon went away, 3 when a figure is over its bound. */
#include <dirent.h>
#include <stddef.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_lib.h"
#include "cac.h"
#include "cap.h"
#include "kl_file.h"

#define SOAK_REQS 64
#define SOAK_SAMPLES 4096

static struct {
    const char *sock, *tls, *cert, *key, *ca, *profile, *issuer;
    int pid, no_issue;
    double warmup, seconds, bound;
} opt = {.warmup = 30, .seconds = 120, .bound = 16};

typedef struct {
    uint8_t *der;
    size_t len;
} blob;

static blob g_csr, g_live, g_reqs[SOAK_REQS];
static size_t g_nreqs;
static atomic_long g_calls, g_fails, g_issued;
static atomic_int g_stop;

/* The last certificate issued, for the cert-status calls. */
static pthread_mutex_t g_last_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_last_serial[65];
static uint8_t g_last_der[4096];
static size_t g_last_len;

typedef enum {
    OP_ISSUE,
    OP_STATUS_SERIAL,
    OP_STATUS_CERT,
    OP_CRL,
    OP_OCSP,
    OP_OCSP_LIVE,
    OP_CACERTS,
    OP_CHAIN
} soak_op;

typedef struct {
    const soak_op *ops;
    size_t nops;
    int tls;       /* 0 Unix socket, 1 TLS, 2 both in turn (reconnecting) */
    int reconnect; /* a new connection every this many calls (0: one for the whole run) */
    size_t next;
} soak_client;

static void soak_fail(const char *what)
{
    if (atomic_fetch_add(&g_fails, 1) < 5) {
        fprintf(stderr, "cad_soak: %s: %s\n", what, kl_errmsg());
    }
}

static kl_rc soak_open(cac **c, int tls)
{
    if (!tls) {
        return cac_open(c, opt.sock, 30, NULL, 0);
    }
    cac_cfg cfg = {.addrs = opt.tls, .tls_cert = opt.cert, .tls_key = opt.key, .tls_ca = opt.ca};
    return cac_open_cfg(c, &cfg, NULL, 0);
}

static kl_rc soak_issue(cac *c)
{
    cac_issue_req req = {.profile = opt.profile,
                         .csr = g_csr.der,
                         .csr_len = g_csr.len,
                         .auth = {.method = "basic", .user = "soak"},
                         .device_id = "SOAK0001"};
    uint8_t *der = NULL;
    size_t len = 0;
    char serial[65];
    kl_rc rc = cac_issue(c, &req, &der, &len, serial);
    if (rc == KL_OK) {
        atomic_fetch_add(&g_issued, 1);
    }
    if (rc == KL_OK && len <= sizeof g_last_der) {
        pthread_mutex_lock(&g_last_mu);
        memcpy(g_last_der, der, len);
        g_last_len = len;
        memcpy(g_last_serial, serial, sizeof g_last_serial);
        pthread_mutex_unlock(&g_last_mu);
    }
    free(der);
    return rc;
}

/* The request of `op` (not issue) into req; the field its answer must carry in *want. */
static kl_rc soak_request(soak_op op, size_t n, kl_buf *req, cap_tag *want)
{
    uint8_t der[sizeof g_last_der];
    char serial[65];
    size_t len;
    pthread_mutex_lock(&g_last_mu);
    memcpy(der, g_last_der, g_last_len);
    len = g_last_len;
    memcpy(serial, g_last_serial, sizeof serial);
    pthread_mutex_unlock(&g_last_mu);
    static const cap_op ops[] = {[OP_STATUS_SERIAL] = CAP_OP_CERT_STATUS,
                                 [OP_STATUS_CERT] = CAP_OP_CERT_STATUS,
                                 [OP_CRL] = CAP_OP_CRL,
                                 [OP_OCSP] = CAP_OP_OCSP,
                                 [OP_OCSP_LIVE] = CAP_OP_OCSP,
                                 [OP_CACERTS] = CAP_OP_CACERTS,
                                 [OP_CHAIN] = CAP_OP_CA_CHAIN};
    kl_rc rc = cap_msg_begin(req, ops[op], 0);
    const blob *r = op == OP_OCSP_LIVE ? &g_live : &g_reqs[n % g_nreqs];
    switch (op) {
    case OP_STATUS_SERIAL:
        rc = rc ? rc : cap_put_str(req, CAP_T_SERIAL, serial);
        *want = CAP_T_STATUS;
        break;
    case OP_STATUS_CERT:
        rc = rc ? rc : cap_put_bytes(req, CAP_T_CERT, der, len);
        *want = CAP_T_STATUS;
        break;
    case OP_CRL:
        rc = rc ? rc : cap_put_str(req, CAP_T_ISSUER, opt.issuer);
        *want = CAP_T_CRL;
        break;
    case OP_OCSP:
    case OP_OCSP_LIVE:
        rc = rc ? rc : cap_put_bytes(req, CAP_T_OCSP_REQ, r->der, r->len);
        *want = CAP_T_OCSP_RESP;
        break;
    case OP_CACERTS:
        rc = rc ? rc : cap_put_str(req, CAP_T_PROFILE, opt.profile);
        *want = CAP_T_CA_CERT;
        break;
    default:
        rc = rc ? rc : cap_put_str(req, CAP_T_ISSUER, opt.issuer);
        *want = CAP_T_CA_CERT;
        break;
    }
    return rc ? rc : cap_msg_end(req);
}

static kl_rc soak_call(cac *c, soak_op op, size_t n)
{
    if (op == OP_ISSUE && !opt.no_issue) {
        return soak_issue(c);
    }
    op = op == OP_ISSUE ? OP_STATUS_SERIAL : op;
    kl_buf req;
    cac_resp resp;
    cap_tag want = CAP_T_STATUS;
    memset(&resp, 0, sizeof resp);
    kl_buf_init(&req, CAP_REQ_MAX, 0);
    kl_rc rc = soak_request(op, n, &req, &want);
    rc = rc ? rc : cac_call(c, &req, &resp);
    if (rc == KL_OK && !cap_find(&resp.msg, want, 0)) {
        rc = kl_fail(KL_EIO, "answer without the expected field");
    }
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

static void *soak_client_run(void *arg)
{
    soak_client *cl = arg;
    cac *c = NULL;
    int conns = 0;
    while (!atomic_load(&g_stop)) {
        if (cl->reconnect && c && cl->next % (size_t)cl->reconnect == 0) {
            cac_close(c);
            c = NULL;
        }
        if (!c && soak_open(&c, cl->tls == 2 ? conns++ % 2 : cl->tls) != KL_OK) {
            soak_fail("connect");
            usleep(100000);
            continue;
        }
        soak_op op = cl->ops[cl->next % cl->nops];
        if (soak_call(c, op, cl->next) != KL_OK) {
            soak_fail("call");
        }
        cl->next++;
        atomic_fetch_add(&g_calls, 1);
    }
    cac_close(c);
    return NULL;
}

typedef struct {
    double calls, rss_kib, anon_kib, fds, threads;
} soak_sample;

static int soak_proc(soak_sample *s)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %lf", &s->rss_kib);
        sscanf(line, "RssAnon: %lf", &s->anon_kib);
        sscanf(line, "Threads: %lf", &s->threads);
    }
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/fd", opt.pid);
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    s->fds = 0;
    for (const struct dirent *e; (e = readdir(d));) {
        s->fds += e->d_name[0] != '.';
    }
    closedir(d);
    return 0;
}

/* Least-squares slope of y over calls. */
static double soak_slope(const soak_sample *s, size_t n, size_t off)
{
    double mx = 0, my = 0, sxy = 0, sxx = 0;
    for (size_t i = 0; i < n; i++) {
        mx += s[i].calls / (double)n;
        my += *(const double *)((const char *)&s[i] + off) / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        double dx = s[i].calls - mx;
        sxy += dx * (*(const double *)((const char *)&s[i] + off) - my);
        sxx += dx * dx;
    }
    return sxx > 0 ? sxy / sxx : 0;
}

/* A figure that must stay at or below its bound (target_max 1), as report.py reads it. */
static void soak_figure_max(const char *name, double value, const char *unit, const char *lname,
                            double bound)
{
    printf("  %-32s %10.2f %-8s (bound %g: %s)\n", name, value, unit, bound,
           value <= bound ? "met" : "EXCEEDED");
    const char *path = getenv("KL_BENCH_RESULTS");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f,
                "{\"name\":\"%s\",\"value\":%.6g,\"unit\":\"%s\",\"limit_name\":\"%s\","
                "\"limit_value\":%g,\"target_max\":1}\n",
                name, value, unit, lname, bound);
        fclose(f);
    }
}

static soak_sample g_samples[SOAK_SAMPLES];

/* Sample every second from the end of the warm-up; the number of samples taken. */
static size_t soak_sample_run(double t0)
{
    size_t n = 0;
    while (bench_now() < t0 + opt.warmup) {
        usleep(100000);
    }
    for (double next = bench_now(); next < t0 + opt.warmup + opt.seconds && n < SOAK_SAMPLES;
         next += 1) {
        while (bench_now() < next) {
            usleep(20000);
        }
        soak_sample *s = &g_samples[n];
        s->calls = (double)atomic_load(&g_calls);
        if (soak_proc(s) != 0) {
            fprintf(stderr, "cad_soak: process %d is gone\n", opt.pid);
            break;
        }
        n++;
    }
    return n;
}

static int soak_report(size_t n, double elapsed)
{
    if (n < 5) {
        fprintf(stderr, "cad_soak: only %zu samples\n", n);
        return 1;
    }
    const soak_sample *a = &g_samples[0], *z = &g_samples[n - 1];
    double calls = z->calls - a->calls;
    double kib = soak_slope(g_samples, n, offsetof(soak_sample, anon_kib)) * 1e4;
    double rss = soak_slope(g_samples, n, offsetof(soak_sample, rss_kib)) * 1e4;
    double fds = soak_slope(g_samples, n, offsetof(soak_sample, fds)) * 1e4;
    printf("keyline-cad (pid %d) over %.0f calls after %.0f s of warm-up, %zu samples:\n"
           "  RSS %.0f -> %.0f KiB (anonymous %.0f -> %.0f), descriptors %.0f -> %.0f, threads "
           "%.0f -> %.0f\n"
           "  fitted growth per call: %.2f bytes anonymous (%.2f all RSS), %.4f descriptors\n",
           opt.pid, calls, opt.warmup, n, a->rss_kib, z->rss_kib, a->anon_kib, z->anon_kib, a->fds,
           z->fds, a->threads, z->threads, kib * 1024 / 1e4, rss * 1024 / 1e4, fds / 1e4);
    bench_figure("cad.soak.calls_per_s", (double)atomic_load(&g_calls) / elapsed, "1/s", NULL, 0,
                 0);
    soak_figure_max("cad.soak.anon_rss_kib_per_10k", kib, "KiB", "soak bound (KiB per 10k calls)",
                    opt.bound);
    soak_figure_max("cad.soak.fds_per_10k", fds, "fds", "soak bound (fds per 10k calls)", 1);
    return kib > opt.bound || fds > 1 ? 3 : 0;
}

static const soak_op g_issue_ops[] = {OP_ISSUE};
static const soak_op g_read_ops[] = {OP_STATUS_SERIAL, OP_STATUS_CERT, OP_CRL,     OP_OCSP,
                                     OP_OCSP,          OP_OCSP_LIVE,   OP_CACERTS, OP_CHAIN};
static const soak_op g_all_ops[] = {OP_ISSUE, OP_STATUS_SERIAL, OP_STATUS_CERT, OP_CRL,
                                    OP_OCSP,  OP_OCSP_LIVE,     OP_CACERTS,     OP_CHAIN};

static int soak_run(void)
{
#define N(a) (sizeof a / sizeof a[0])
    soak_client cl[] = {
        {g_issue_ops, N(g_issue_ops), 0, 0, 0}, {g_issue_ops, N(g_issue_ops), 0, 0, 0},
        {g_read_ops, N(g_read_ops), 0, 0, 0},   {g_read_ops, N(g_read_ops), 0, 0, 3},
        {g_read_ops, N(g_read_ops), 0, 0, 5},   {g_all_ops, N(g_all_ops), 1, 0, 0},
        {g_read_ops, N(g_read_ops), 1, 0, 4},   {g_all_ops, N(g_all_ops), 2, 16, 0}};
#undef N
    pthread_t t[sizeof cl / sizeof cl[0]];
    /* a certificate for the status calls before anything else */
    cac *c = NULL;
    if (soak_open(&c, 0) != KL_OK || soak_issue(c) != KL_OK) {
        soak_fail("first issue");
        cac_close(c);
        return 1;
    }
    cac_close(c);
    double t0 = bench_now();
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) {
        pthread_create(&t[i], NULL, soak_client_run, &cl[i]);
    }
    size_t n = soak_sample_run(t0);
    atomic_store(&g_stop, 1);
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) {
        pthread_join(t[i], NULL);
    }
    int rc = soak_report(n, bench_now() - t0);
    for (size_t i = 0; i < n; i += n / 10 + 1) {
        printf("  sample %3zu: %8.0f calls  RSS %6.0f KiB  anonymous %6.0f KiB  %3.0f fds  %3.0f "
               "threads\n",
               i, g_samples[i].calls, g_samples[i].rss_kib, g_samples[i].anon_kib, g_samples[i].fds,
               g_samples[i].threads);
    }
    long fails = atomic_load(&g_fails);
    printf("calls: %ld, of them issue: %ld; failed: %ld\n", atomic_load(&g_calls),
           atomic_load(&g_issued), fails);
    return fails || rc == 1 ? 1 : rc;
}

static int soak_load(const char *path, blob *b)
{
    if (kl_file_read(path, 1 << 16, &b->der, &b->len) != KL_OK) {
        fprintf(stderr, "cad_soak: %s\n", kl_errmsg());
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"pid", required_argument, NULL, 'p'},
                                       {"unix", required_argument, NULL, 'u'},
                                       {"tls", required_argument, NULL, 't'},
                                       {"tls-cert", required_argument, NULL, 'C'},
                                       {"tls-key", required_argument, NULL, 'K'},
                                       {"tls-ca", required_argument, NULL, 'A'},
                                       {"profile", required_argument, NULL, 'P'},
                                       {"issuer", required_argument, NULL, 'i'},
                                       {"csr", required_argument, NULL, 'r'},
                                       {"live", required_argument, NULL, 'l'},
                                       {"warmup", required_argument, NULL, 'w'},
                                       {"seconds", required_argument, NULL, 's'},
                                       {"bound", required_argument, NULL, 'b'},
                                       {"no-issue", no_argument, NULL, 'n'},
                                       {NULL, 0, NULL, 0}};
    const char *csr = NULL, *live = NULL;
    for (int ch; (ch = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        switch (ch) {
        case 'p': opt.pid = atoi(optarg); break;
        case 'u': opt.sock = optarg; break;
        case 't': opt.tls = optarg; break;
        case 'C': opt.cert = optarg; break;
        case 'K': opt.key = optarg; break;
        case 'A': opt.ca = optarg; break;
        case 'P': opt.profile = optarg; break;
        case 'i': opt.issuer = optarg; break;
        case 'r': csr = optarg; break;
        case 'l': live = optarg; break;
        case 'w': opt.warmup = atof(optarg); break;
        case 's': opt.seconds = atof(optarg); break;
        case 'b': opt.bound = atof(optarg); break;
        case 'n': opt.no_issue = 1; break;
        default: return 2;
        }
    }
    if (opt.pid <= 0 || !opt.sock || !opt.tls || !opt.cert || !opt.key || !opt.ca || !opt.profile ||
        !opt.issuer || !csr || !live || optind >= argc || opt.seconds < 5 || opt.warmup < 0 ||
        opt.bound <= 0) {
        fprintf(stderr, "usage: cad_soak --pid PID --unix SOCKET --tls tls:HOST:PORT --tls-cert F "
                        "--tls-key F --tls-ca F --profile P --issuer LABEL --csr CSR.der --live "
                        "LIVE.der [--warmup S] [--seconds S>=5] [--bound KIB] REQ.der...\n");
        return 2;
    }
    if (soak_load(csr, &g_csr) != 0 || soak_load(live, &g_live) != 0) {
        return 1;
    }
    for (int i = optind; i < argc && g_nreqs < SOAK_REQS; i++) {
        if (soak_load(argv[i], &g_reqs[g_nreqs++]) != 0) {
            return 1;
        }
    }
    return soak_run();
}
