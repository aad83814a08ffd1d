/* The cost of the privilege boundary: ca_issue() throughput in-process against the same
 * issuance through keyline-cad (8 concurrent clients over its Unix socket), measured in the
 * same run on the same token and store (run under tests/lib/with-token.sh; scripts/bench does).
 *
 *   cad_bench SECONDS PATH/keyline-cad
 *
 * Prints both rates and the ratio cad/in-process. Phase 1 opens the CA in this process (and
 * creates root1 -> field1), closes it, then phase 2 starts keyline-cad on the same config with
 * a profile for field1 and issues through it. */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define THREADS 8

static ca_ctx *g_ca;
static cac *g_cac;
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
        }
        X509_free(x);
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

static void *issue_cad(void *arg)
{
    (void)arg;
    cac_issue_req req = {.profile = "bench",
                         .csr = g_csr,
                         .csr_len = g_csr_len,
                         .auth = {.method = "basic", .user = "bench"},
                         .device_id = "BENCH0001"};
    while (!atomic_load(&g_stop)) {
        uint8_t *der = NULL;
        size_t len = 0;
        char serial[65];
        if (cac_issue(g_cac, &req, &der, &len, serial) != KL_OK) {
            if (atomic_fetch_add(&g_errors, 1) == 0) {
                fprintf(stderr, "cac_issue: %s\n", kl_errmsg());
            }
        }
        free(der);
        atomic_fetch_add(&g_ops, 1);
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
        pthread_create(&t[i], NULL, fn, NULL);
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

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cad_bench SECONDS PATH/keyline-cad (under with-token.sh)\n");
        return 2;
    }
    double secs = atof(argv[1]);
    const char *conf_path = getenv("KL_CONF"), *dir = getenv("KL_TEST_DIR");
    char sock[512];
    double inproc = 0, viacad = 0;
    if (!conf_path || !dir || make_csr() != 0 || phase_inproc(conf_path, secs, &inproc) != 0) {
        return 1;
    }
    FILE *f = fopen(conf_path, "a");
    snprintf(sock, sizeof sock, "%s/cad.sock", dir);
    if (!f) {
        return 1;
    }
    fprintf(f,
            "\n[cad]\nsocket = %s\n\n[profile bench]\nissuer = field1\n"
            "template = device-ldevid\nclients = bench\n",
            sock);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        execl(argv[2], argv[2], "-c", conf_path, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (int i = 0; i < 200 && stat(sock, &st) != 0; i++) {
        usleep(50 * 1000);
    }
    int rc = 1;
    if (cac_open(&g_cac, sock, 30, NULL, 0) != KL_OK) {
        fprintf(stderr, "keyline-cad: %s\n", kl_errmsg());
        goto out;
    }
    viacad = run(issue_cad, secs);
    printf("ca_issue() in-process, %d threads:      %8.0f certificates/s\n", THREADS, inproc);
    printf("issue through keyline-cad, %d clients:  %8.0f certificates/s = %.2f of in-process\n",
           THREADS, viacad, inproc > 0 ? viacad / inproc : 0.0);
    printf("errors: %d\n", atomic_load(&g_errors));
    bench_figure("cad.issue.8c", viacad, "1/s", "ca_issue.inproc.8t", inproc, 0);
    rc = atomic_load(&g_errors) ? 1 : 0;
out:
    cac_close(g_cac);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    OPENSSL_free(g_csr);
    return rc;
}
