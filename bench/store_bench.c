/* store_bench: the store's part of issue 13 item 6, on a given store (an SQLite file or a
 * PostgreSQL URL, empty):
 *   - record rate: store_cert_insert (the row and its audit entry in one transaction, what
 *     ca_issue records per certificate) from THREADS threads for SECONDS, in one process and in
 *     two processes at once (two keyline-cad on one database);
 *   - the store filled to N certificates and N inventory rows by a generator inside the
 *     database (SQL, not through the HSM or the API: rows without audit entries, for size only);
 *   - point lookups by serial (store_cert_state_get, EST's per-request check) and by device id
 *     (store_device_get, the station's per-device look-up) at N rows: p50 and p99;
 *   - the record rate again at N rows, as a ratio to the empty store's.
 *   store_bench NAME DSN N SECONDS THREADS      (NAME: the figures' prefix, "sqlite" or "pg")
 * The issuance through keyline-cad is bounded by the HSM long before the store (ca_bench,
 * cad_bench); these figures say how far the store is from being the limit. */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_lib.h"
#include "store.h"
#include "store_db.h"

#define FILL_CHUNK 250000
#define LOOKUPS 20000

static uint8_t *g_der;
static size_t g_der_len;

/* One throwaway certificate's DER, recorded with every bench serial (the store does not parse
 * it; its size is a device certificate's). */
static int make_der(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    unsigned char *p = NULL;
    int ok = k && x && n &&
             X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1,
                                        -1, 0) &&
             X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
             X509_set_subject_name(x, n) && X509_set_issuer_name(x, n) &&
             ASN1_TIME_set(X509_getm_notBefore(x), 1700000000) &&
             ASN1_TIME_set(X509_getm_notAfter(x), 1800000000) && X509_set_pubkey(x, k) &&
             X509_sign(x, k, EVP_sha256());
    int len = ok ? i2d_X509(x, &p) : -1;
    if (len > 0) {
        g_der = p;
        g_der_len = (size_t)len;
    }
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(k);
    return len > 0;
}

/* ---- record rate ---- */

typedef struct {
    store *s;
    double until;
    atomic_long *n;
    int failed;
} rec_arg;

static void *rec_thread(void *p)
{
    rec_arg *a = p;
    char serial[41];
    uint8_t r[16];
    static const char hx[] = "0123456789ABCDEF";
    while (bench_now() < a->until) {
        RAND_bytes(r, sizeof r);
        r[0] = (uint8_t)((r[0] & 0x7f) | 0x40);
        for (int i = 0; i < 16; i++) {
            serial[2 * i] = hx[r[i] >> 4];
            serial[2 * i + 1] = hx[r[i] & 15];
        }
        serial[32] = 0;
        store_cert c = {.serial_hex = serial,
                        .issuer = (char *)"bench-ca",
                        .subject = (char *)"CN=bench device",
                        .template_name = (char *)"device-idevid",
                        .device_id = (char *)"BENCH",
                        .status = (char *)STORE_ST_VALID,
                        .not_before = 1700000000,
                        .not_after = 253402300799};
        kl_rc rc = store_cert_insert(a->s, &c, g_der, g_der_len, "bench", NULL);
        if (rc != KL_OK && rc != KL_EEXIST) {
            fprintf(stderr, "store_bench: %s\n", kl_errmsg());
            a->failed = 1;
            return NULL;
        }
        atomic_fetch_add(a->n, 1);
    }
    return NULL;
}

/* Records per second from `threads` threads on a handle of its own; -1 on failure. */
static double rec_rate(const char *dsn, int threads, double seconds)
{
    store *s = NULL;
    atomic_long n = 0;
    pthread_t t[64];
    rec_arg a[64];
    if (store_open(&s, dsn) != KL_OK) {
        fprintf(stderr, "store_bench: %s\n", kl_errmsg());
        return -1;
    }
    double t0 = bench_now();
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        a[i] = (rec_arg){s, t0 + seconds, &n, 0};
        pthread_create(&t[i], NULL, rec_thread, &a[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        failed |= a[i].failed;
    }
    double dt = bench_now() - t0;
    store_close(s);
    return failed ? -1 : (double)atomic_load(&n) / dt;
}

/* The same from `procs` processes at once (each its own handle); the rates summed. */
static double rec_rate_procs(const char *dsn, int procs, int threads, double seconds)
{
    int fds[2];
    pid_t pid[8];
    double sum = 0;
    if (pipe(fds) != 0) {
        return -1;
    }
    for (int i = 0; i < procs; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            close(fds[0]);
            double r = rec_rate(dsn, threads, seconds);
            _exit(write(fds[1], &r, sizeof r) == sizeof r ? 0 : 1);
        }
    }
    close(fds[1]);
    for (int i = 0; i < procs; i++) {
        double r = -1;
        if (read(fds[0], &r, sizeof r) != sizeof r || r < 0) {
            sum = -1e18;
        }
        sum += r;
    }
    close(fds[0]);
    for (int i = 0; i < procs; i++) {
        waitpid(pid[i], NULL, 0);
    }
    return sum < 0 ? -1 : sum;
}

/* ---- the generator ---- */

/* Serial of generated row x: 16 bytes, positive, spread over the key space (not sequential,
 * as random serials are). Device id: "GEN" and x. */
#define GEN_SERIAL_SQLITE                                                                          \
    "printf('4%015X%016X', (?3 + x) * 2654435761 % 1152921504606846975, ?3 + x)"
#define GEN_SERIAL_PG                                                                              \
    "'4' || lpad(upper(to_hex(((?3::bigint + x) * 2654435761) % 1152921504606846975)), 15, '0')"   \
    " || lpad(upper(to_hex(?3::bigint + x)), 16, '0')"

static const store_q q_gen_certs = {
    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?1)"
    " INSERT INTO certs (serial, status, issuer, subject, template, device_id, not_before,"
    " not_after, der, created) SELECT " GEN_SERIAL_SQLITE ", 'valid', 'gen-ca', 'CN=gen ' || x,"
    " 'device-idevid', 'GEN' || (?3 + x), 1700000000, 253402300799, ?2, 1700000000 FROM g",
    "INSERT INTO certs (serial, status, issuer, subject, template, device_id, not_before,"
    " not_after, der, created) SELECT " GEN_SERIAL_PG ", 'valid', 'gen-ca', 'CN=gen ' || x,"
    " 'device-idevid', 'GEN' || (?3::bigint + x), 1700000000, 253402300799, ?2, 1700000000"
    " FROM generate_series(1, ?1::bigint) x"};
static const store_q q_gen_devices = {
    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?1)"
    " INSERT INTO devices (device_id, model, cert_serial, state, detail, updated)"
    " SELECT 'GEN' || (?3 + x), 'gen-model', " GEN_SERIAL_SQLITE ", 'provisioned', ?2,"
    " 1700000000 FROM g",
    "INSERT INTO devices (device_id, model, cert_serial, state, detail, updated)"
    " SELECT 'GEN' || (?3::bigint + x), 'gen-model', " GEN_SERIAL_PG ", 'provisioned', ?2,"
    " 1700000000 FROM generate_series(1, ?1::bigint) x"};

typedef struct {
    int64_t count, base;
} gen_arg;

static kl_rc gen_tx(store_conn *c, void *arg)
{
    const gen_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_gen_certs, &st));
    TRY(sc_int(st, 1, a->count));
    TRY(sc_blob(st, 2, g_der, g_der_len));
    TRY(sc_int(st, 3, a->base));
    TRY(sc_run(st, "generate certificates"));
    TRY(sc_stmt(c, &q_gen_devices, &st));
    TRY(sc_int(st, 1, a->count));
    TRY(sc_text(st, 2, "fixture gen"));
    TRY(sc_int(st, 3, a->base));
    TRY(sc_run(st, "generate devices"));
out:
    sc_done(st);
    return rc;
}

/* Planner statistics after the bulk load, as autovacuum (PostgreSQL) or an operator (SQLite)
 * would take them in a store that grew over months. */
static kl_rc analyze_tx(store_conn *c, void *arg)
{
    (void)arg;
    return c->d->drv->exec(c->d, "ANALYZE certs; ANALYZE devices");
}

/* Rows base+1 .. base+count of both tables, FILL_CHUNK per transaction. */
static kl_rc gen_fill(store *s, int64_t total)
{
    kl_rc rc = KL_OK;
    for (int64_t done = 0; done < total && rc == KL_OK;) {
        gen_arg a = {total - done < FILL_CHUNK ? total - done : FILL_CHUNK, done};
        rc = store_write(s, gen_tx, &a);
        done += a.count;
    }
    return rc == KL_OK ? store_write(s, analyze_tx, NULL) : rc;
}

/* ---- lookups ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void gen_serial(int64_t x, char out[41])
{
    unsigned long long h = (unsigned long long)((__int128)x * 2654435761 % 1152921504606846975);
    snprintf(out, 41, "4%015llX%016llX", h, (unsigned long long)x);
}

/* LOOKUPS random point reads of generated rows: p50 and p99 in microseconds; -1 on a failure. */
static int lookups(store *s, int64_t n, int by_device, double *p50, double *p99)
{
    static double t[LOOKUPS];
    for (int i = 0; i < LOOKUPS; i++) {
        uint32_t r;
        RAND_bytes((uint8_t *)&r, sizeof r);
        int64_t x = 1 + (int64_t)(r % (uint64_t)n);
        char key[48];
        double t0 = bench_now();
        kl_rc rc;
        if (by_device) {
            store_device d;
            snprintf(key, sizeof key, "GEN%lld", (long long)x);
            rc = store_device_get(s, key, &d);
            store_device_free(&d);
        } else {
            store_cert_state cs;
            gen_serial(x, key);
            rc = store_cert_state_get(s, key, &cs);
        }
        t[i] = (bench_now() - t0) * 1e6;
        if (rc != KL_OK) {
            fprintf(stderr, "store_bench: lookup %s: %s\n", key, kl_errmsg());
            return -1;
        }
    }
    qsort(t, LOOKUPS, sizeof t[0], cmp_double);
    *p50 = t[LOOKUPS / 2];
    *p99 = t[LOOKUPS * 99 / 100];
    return 0;
}

static void figure(const char *prefix, const char *what, double v, const char *unit,
                   const char *limit, double target)
{
    char name[96], lim[96];
    snprintf(name, sizeof name, "store.%s.%s", prefix, what);
    if (limit) {
        snprintf(lim, sizeof lim, "store.%s.%s", prefix, limit);
    }
    bench_figure(name, v, unit, limit ? lim : NULL, -1, target);
}

/* The record rate at n rows against an empty store's, measured in turn (empty, full, empty,
 * ...; FULL_ROUNDS each, medians) so that the machine's other load weighs on both alike: the
 * twin store `empty` (same engine, same disk) stands for the store before it was filled. */
#define FULL_ROUNDS 3

static int full_vs_empty(const char *nm, const char *dsn, const char *empty, int threads,
                         double secs, double *full, double *base)
{
    double e[FULL_ROUNDS], f[FULL_ROUNDS];
    for (int i = 0; i < FULL_ROUNDS; i++) {
        e[i] = rec_rate(empty, threads, secs);
        f[i] = rec_rate(dsn, threads, secs);
        if (e[i] < 0 || f[i] < 0) {
            return -1;
        }
        printf("  %s round %d: empty store %.0f/s, full store %.0f/s (%.2f)\n", nm, i + 1, e[i],
               f[i], f[i] / e[i]);
    }
    *base = bench_median(e, FULL_ROUNDS);
    *full = bench_median(f, FULL_ROUNDS);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: store_bench NAME DSN N SECONDS THREADS [EMPTY_DSN]\n");
        return 2;
    }
    const char *nm = argv[1], *dsn = argv[2];
    int64_t n = atoll(argv[3]);
    double secs = atof(argv[4]);
    int threads = atoi(argv[5]);
    store *s = NULL;
    double p50, p99;
    if (n < 1 || secs <= 0 || threads < 1 || threads > 64 || !make_der()) {
        fprintf(stderr, "store_bench: bad arguments\n");
        return 2;
    }
    double r1 = rec_rate(dsn, threads, secs);
    double r2 = rec_rate_procs(dsn, 2, threads, secs);
    if (r1 < 0 || r2 < 0) {
        return 1;
    }
    figure(nm, "record_rate", r1, "1/s", NULL, 0);
    figure(nm, "record_rate_2proc", r2, "1/s", "record_rate", 0);
    if (strcmp(nm, "sqlite") != 0) {
        /* the ratio: this backend against SQLite on the same machine (same run) */
        char name[96];
        snprintf(name, sizeof name, "store.%s.record_rate_vs_sqlite", nm);
        bench_figure(name, r1, "1/s", "store.sqlite.record_rate", -1, 0);
        snprintf(name, sizeof name, "store.%s.record_rate_2proc_vs_sqlite", nm);
        bench_figure(name, r2, "1/s", "store.sqlite.record_rate", -1, 0);
    }
    if (store_open(&s, dsn) != KL_OK) {
        fprintf(stderr, "store_bench: %s\n", kl_errmsg());
        return 1;
    }
    double t0 = bench_now();
    if (gen_fill(s, n) != KL_OK) {
        fprintf(stderr, "store_bench: fill: %s\n", kl_errmsg());
        return 1;
    }
    double fill = bench_now() - t0;
    figure(nm, "fill_rows", (double)n, "rows", NULL, 0);
    figure(nm, "fill_seconds", fill, "s", NULL, 0);
    for (int dev = 0; dev < 2; dev++) {
        if (lookups(s, n, dev, &p50, &p99) != 0) {
            return 1;
        }
        figure(nm, dev ? "lookup_device_p50_us" : "lookup_serial_p50_us", p50, "us", NULL, 0);
        char p99name[96];
        snprintf(p99name, sizeof p99name, "store.%s.%s", nm,
                 dev ? "lookup_device_p99_us" : "lookup_serial_p99_us");
        bench_figure_max(p99name, p99, "us", "issue bound (us)", 1000, 1); /* under 1 ms p99 */
    }
    store_close(s);
    double rf = 0, re = r1;
    if (argc == 7) {
        if (full_vs_empty(nm, dsn, argv[6], threads, secs, &rf, &re) != 0) {
            return 1;
        }
        figure(nm, "record_rate_empty", re, "1/s", NULL, 0);
        figure(nm, "record_rate_full", rf, "1/s", "record_rate_empty", 0.9);
    } else {
        if ((rf = rec_rate(dsn, threads, secs)) < 0) {
            return 1;
        }
        figure(nm, "record_rate_full", rf, "1/s", "record_rate", 0.9);
    }
    printf("  %s record rate at %lld rows: %.2f of the empty store's, target >= 0.9: %s\n", nm,
           (long long)n, rf / re, rf / re >= 0.9 ? "met" : "MISSED");
    OPENSSL_free(g_der);
    return 0;
}
