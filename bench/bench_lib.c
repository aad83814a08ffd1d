/* Benchmark figures and limits (bench_lib.h). */
#include "bench_lib.h"

#include "hsm.h"
#include "kl_conf.h"
#include "kl_secret.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* bench_figure, with a least ratio (target) or a most (target_max), 0 for none */
static void bench_figure_to(const char *name, double value, const char *unit,
                            const char *limit_name, double limit_value, double target,
                            double target_max)
{
    if (limit_name && limit_value > 0) {
        double r = value / limit_value;
        const char *verdict = target > 0 ? (r >= target ? "  target met" : "  target MISSED")
                              : target_max > 0
                                  ? (r <= target_max ? "  target met" : "  target MISSED")
                                  : "";
        printf("  %-40s %12.1f %-6s = %6.3f of %s (%.1f)%s\n", name, value, unit, r, limit_name,
               limit_value, verdict);
    } else {
        printf("  %-40s %12.1f %s%s%s\n", name, value, unit, limit_name ? "  limit: " : "",
               limit_name ? limit_name : "");
    }
    fflush(stdout);
    const char *path = getenv("KL_BENCH_RESULTS");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    if (!f) {
        return;
    }
    fprintf(f, "{\"name\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"", name, value, unit);
    if (limit_name) {
        fprintf(f, ",\"limit_name\":\"%s\"", limit_name);
        if (limit_value > 0) {
            fprintf(f, ",\"limit_value\":%.6g", limit_value);
        }
    }
    if (target > 0) {
        fprintf(f, ",\"target\":%g", target);
    }
    if (target_max > 0) {
        fprintf(f, ",\"target_max\":%g", target_max);
    }
    fprintf(f, "}\n");
    fclose(f);
}

void bench_figure(const char *name, double value, const char *unit, const char *limit_name,
                  double limit_value, double target)
{
    bench_figure_to(name, value, unit, limit_name, limit_value, target, 0);
}

void bench_figure_max(const char *name, double value, const char *unit, const char *limit_name,
                      double limit_value, double target_max)
{
    bench_figure_to(name, value, unit, limit_name, limit_value, 0, target_max);
}

/* A signed object's public-key check as its cheapest form: SHA-256 of the signed bytes and
 * ECDSA_verify with a key built once (what ca_csr.c's fast path does, without its DER walk and
 * key decoding: those are the issuance's own work, not the floor's). */
typedef struct {
    unsigned char *tbs;
    int tbs_len;
    const ASN1_BIT_STRING *sig;
    const EC_KEY *key;
} bench_signed;

typedef struct {
    EVP_PKEY *key;
    X509 *cert;
    bench_signed csr_pop, cert_check;
    double until;
    long count;
    int failed;
} bench_work;

static int bench_signed_ok(const bench_signed *b)
{
    unsigned char dgst[SHA256_DIGEST_LENGTH];
    SHA256(b->tbs, (size_t)b->tbs_len, dgst);
    return ECDSA_verify(0, dgst, sizeof dgst, b->sig->data, b->sig->length, (EC_KEY *)b->key) == 1;
}

static void *bench_sign_loop(void *p)
{
    bench_work *w = p;
    unsigned char dgst[32], sig[1024];
    memset(dgst, 0x5a, sizeof dgst);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(w->key, NULL);
    if (!ctx || EVP_PKEY_sign_init(ctx) <= 0) {
        w->failed = 1;
    }
    while (!w->failed && bench_now() < w->until) {
        for (int i = 0; i < 16 && !w->failed; i++) {
            size_t sl = sizeof sig;
            dgst[0] = (unsigned char)w->count;
            w->failed = EVP_PKEY_sign(ctx, sig, &sl, dgst, sizeof dgst) <= 0;
            w->count++;
        }
    }
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

/* One issuance's public-key work, each part in its cheapest form: sign a TBS the size of the
 * certificate's in the token, verify the CSR's self-signature, verify the certificate against
 * the CA key (bench_signed). */
static void *bench_floor_loop(void *p)
{
    bench_work *w = p;
    unsigned char *tbs = NULL, sig[1024];
    int tbs_len = i2d_re_X509_tbs(w->cert, &tbs);
    w->failed = tbs_len <= 0;
    while (!w->failed && bench_now() < w->until) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        size_t sl = sizeof sig;
        tbs[tbs_len - 1] = (unsigned char)w->count;
        w->failed = !m || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, w->key) != 1 ||
                    EVP_DigestSign(m, sig, &sl, tbs, (size_t)tbs_len) != 1 ||
                    !bench_signed_ok(&w->csr_pop) || !bench_signed_ok(&w->cert_check);
        EVP_MD_CTX_free(m);
        w->count++;
    }
    OPENSSL_free(tbs);
    return NULL;
}

static double bench_run(void *(*fn)(void *), bench_work *proto, int threads, double seconds)
{
    bench_work w[64];
    pthread_t t[64];
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    double t0 = bench_now();
    for (int i = 0; i < threads; i++) {
        w[i] = *proto;
        w[i].until = t0 + seconds;
        pthread_create(&t[i], NULL, fn, &w[i]);
    }
    long total = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += w[i].count;
        failed |= w[i].failed;
    }
    return failed ? -1 : (double)total / (bench_now() - t0);
}

double bench_raw_sign(EVP_PKEY *hsm_key, int threads, double seconds)
{
    bench_work proto = {.key = hsm_key};
    return bench_run(bench_sign_loop, &proto, threads, seconds);
}

double bench_crypto_floor(EVP_PKEY *hsm_key, X509_REQ *csr, X509 *cert, EVP_PKEY *ca_pub,
                          int threads, double seconds)
{
    const ASN1_BIT_STRING *csr_sig = NULL, *cert_sig = NULL;
    X509_REQ_get0_signature(csr, &csr_sig, NULL);
    X509_get0_signature(&cert_sig, NULL, cert);
    bench_work proto = {
        .key = hsm_key,
        .cert = cert,
        .csr_pop = {NULL, i2d_re_X509_REQ_tbs(csr, NULL), csr_sig,
                    EVP_PKEY_get0_EC_KEY(X509_REQ_get0_pubkey(csr))},
        .cert_check = {NULL, i2d_re_X509_tbs(cert, NULL), cert_sig, EVP_PKEY_get0_EC_KEY(ca_pub)}};
    proto.csr_pop.tbs_len = i2d_re_X509_REQ_tbs(csr, &proto.csr_pop.tbs);
    proto.cert_check.tbs_len = i2d_re_X509_tbs(cert, &proto.cert_check.tbs);
    double rate = -1;
    /* both checks must pass once as they are, else the floor measures failures */
    if (proto.csr_pop.tbs_len > 0 && proto.cert_check.tbs_len > 0 && csr_sig && cert_sig &&
        proto.csr_pop.key && proto.cert_check.key && bench_signed_ok(&proto.csr_pop) &&
        bench_signed_ok(&proto.cert_check)) {
        rate = bench_run(bench_floor_loop, &proto, threads, seconds);
    } else {
        fprintf(stderr, "bench: the floor's CSR or certificate does not verify (EC keys only)\n");
    }
    OPENSSL_free(proto.csr_pop.tbs);
    OPENSSL_free(proto.cert_check.tbs);
    return rate;
}

double bench_raw_sign_label(const char *conf_path, const char *label, int threads, double seconds)
{
    kl_conf *conf = NULL;
    hsm_ctx *h = NULL;
    EVP_PKEY *key = NULL;
    kl_secret pin;
    double rate = -1;
    memset(&pin, 0, sizeof pin);
    if (kl_conf_load(&conf, conf_path) != KL_OK ||
        kl_secret_read(&pin, kl_conf_get(conf, "hsm", "pin"), kl_conf_dir(conf), "token PIN") !=
            KL_OK ||
        hsm_open(&h, kl_conf_get(conf, "hsm", "module"), kl_conf_get(conf, "hsm", "token"),
                 pin.value) != KL_OK ||
        hsm_key_load(h, label, &key) != KL_OK) {
        fprintf(stderr, "bench: HSM key %s: %s\n", label, kl_errmsg());
    } else {
        rate = bench_raw_sign(key, threads, seconds);
    }
    kl_secret_free(&pin);
    EVP_PKEY_free(key);
    hsm_close(h);
    kl_conf_free(conf);
    return rate;
}
