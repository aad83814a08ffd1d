/* Issuance throughput of ca_issue() against the raw HSM signing rate, measured in the same run
 * on the same token (run under tests/lib/with-token.sh; scripts/bench does). Prints:
 *   raw P-256 signatures/s with 1 and 2 threads
 *   ca_issue()/s with 1, 2, 8 threads on one ca_ctx (the EST server's pattern)
 *   and each rate as a ratio of the 2-thread raw rate,
 *   where the store file lives (fsync to a disk, or tmpfs where fsync costs nothing: a store
 *   on tmpfs does not measure durability) and how many write operations shared each store
 *   transaction (group commit).
 * KL_BENCH_ONLY=issue1: one 1-thread issuing run only (for perf record). */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>

#include "ca.h"
#include "ca_backend.h"

static ca_ctx *g_ca;
static EVP_PKEY *g_key;
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

static void *raw_sign(void *arg)
{
    (void)arg;
    unsigned char tbs[32] = {1}, sig[128];
    while (!atomic_load(&g_stop)) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        size_t sl = sizeof sig;
        if (EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, g_key) != 1 ||
            EVP_DigestSign(m, sig, &sl, tbs, sizeof tbs) != 1) {
            atomic_fetch_add(&g_errors, 1);
        }
        EVP_MD_CTX_free(m);
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

static void *issue(void *arg)
{
    (void)arg;
    ca_issue_req req = {.issuer = "field1",
                        .template_name = "device-ldevid",
                        .csr_der = g_csr,
                        .csr_len = g_csr_len,
                        .actor = "bench"};
    while (!atomic_load(&g_stop)) {
        X509 *x = NULL;
        if (ca_issue(g_ca, &req, &x) != KL_OK) {
            atomic_fetch_add(&g_errors, 1);
            fprintf(stderr, "ca_issue: %s\n", kl_errmsg());
        }
        X509_free(x);
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

/* Filesystem of the store file: the figures mean little without it. */
static void print_store_location(const kl_conf *conf)
{
    char *path = kl_conf_path(conf, "store", "path");
    struct statfs sf;
    const char *what = "unknown filesystem";
    if (path && statfs(path, &sf) == 0) {
        switch ((unsigned long)sf.f_type) {
        case 0x01021994UL: what = "tmpfs: fsync costs nothing, durability NOT measured"; break;
        case 0xEF53UL:
            what = "ext4: synchronous=FULL, every certificate commit fsynced to the disk";
            break;
        case 0x9123683EUL:
            what = "btrfs: synchronous=FULL, every certificate commit fsynced to the disk";
            break;
        case 0x58465342UL:
            what = "xfs: synchronous=FULL, every certificate commit fsynced to the disk";
            break;
        case 0x794c7630UL: what = "overlayfs: fsync goes to the underlying filesystem"; break;
        default: break;
        }
    }
    printf("store: %s (%s)\n", path ? path : "?", what);
    free(path);
}

static void print_batching(uint64_t tx0, uint64_t ops0)
{
    uint64_t tx = 0, ops = 0;
    if (store_write_stats(ca_store(g_ca), &tx, &ops) == KL_OK && tx > tx0) {
        printf("    store: %llu write ops in %llu transactions (%.2f ops per commit/fsync)\n",
               (unsigned long long)(ops - ops0), (unsigned long long)(tx - tx0),
               (double)(ops - ops0) / (double)(tx - tx0));
    }
}

static double run(void *(*fn)(void *), int threads, double seconds)
{
    pthread_t t[64];
    atomic_store(&g_ops, 0);
    atomic_store(&g_stop, 0);
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        pthread_create(&t[i], NULL, fn, NULL);
    }
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
    }
    return (double)atomic_load(&g_ops) / (now_s() - t0);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    kl_conf *conf = NULL;
    X509 *x = NULL;
    if (kl_conf_load(&conf, getenv("KL_CONF")) != KL_OK || ca_open(&g_ca, conf) != KL_OK ||
        ca_create(g_ca, "root1", "root", "CN=Bench Root", HSM_KEY_EC_P256, NULL, "bench", &x) !=
            KL_OK) {
        fprintf(stderr, "setup: %s\n", kl_errmsg());
        return 1;
    }
    X509_free(x);
    if (ca_create(g_ca, "field1", "field-ca", "CN=Bench Field CA", HSM_KEY_EC_P256, "root1",
                  "bench", &x) != KL_OK ||
        hsm_key_load(ca_hsm(g_ca), "field1", &g_key) != KL_OK) {
        fprintf(stderr, "setup: %s\n", kl_errmsg());
        return 1;
    }
    X509_free(x);
    EVP_PKEY *dk = EVP_EC_gen("P-256");
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"bench", -1, -1, 0);
    X509_REQ_set_subject_name(r, n);
    X509_REQ_set_pubkey(r, dk);
    X509_REQ_sign(r, dk, EVP_sha256());
    unsigned char *der = NULL;
    g_csr_len = (size_t)i2d_X509_REQ(r, &der);
    g_csr = der;

    const char *only = getenv("KL_BENCH_ONLY"); /* "issue1": one issuing run, for perf */
    if (only && strcmp(only, "issue1") == 0) {
        printf("ca_issue() 1 thread: %8.0f certificates/s\n", run(issue, 1, secs));
        return 0;
    }
    print_store_location(conf);
    double raw1 = run(raw_sign, 1, secs);
    double raw2 = run(raw_sign, 2, secs);
    printf("raw HSM P-256 signing (SoftHSM, same token): %8.0f/s 1 thread, %8.0f/s 2 threads\n",
           raw1, raw2);
    int counts[] = {1, 2, 8};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        uint64_t tx0 = 0, ops0 = 0;
        if (store_write_stats(ca_store(g_ca), &tx0, &ops0) != KL_OK) {
            tx0 = ops0 = 0;
        }
        double rate = run(issue, counts[i], secs);
        printf("ca_issue() %d thread%s: %8.0f certificates/s = %5.1f%% of the 2-thread raw rate\n",
               counts[i], counts[i] > 1 ? "s" : " ", rate, 100.0 * rate / raw2);
        print_batching(tx0, ops0);
    }
    int64_t count = 0;
    if (store_audit_verify(ca_store(g_ca), &count) != KL_OK) {
        fprintf(stderr, "audit: %s\n", kl_errmsg());
        return 1;
    }
    printf("audit chain intact after the run: %lld entries; errors: %d\n", (long long)count,
           atomic_load(&g_errors));
    X509_REQ_free(r);
    X509_NAME_free(n);
    EVP_PKEY_free(dk);
    OPENSSL_free(der);
    EVP_PKEY_free(g_key);
    ca_close(g_ca);
    kl_conf_free(conf);
    return atomic_load(&g_errors) ? 1 : 0;
}
