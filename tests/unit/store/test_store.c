/* keyline: store unit tests against a real SQLite file in a fresh temp directory, or (the same
 * binary with KL_TEST_STORE_URL set: tests/lib/pg.sh run, ctest unit.store.pg) against a fresh
 * database per case on a real PostgreSQL cluster: one contract suite for every driver; the
 * tests of SQLite files (formats, migrations of older files) run for SQLite only, those of the
 * server (connection loss) for PostgreSQL only.
 * Certificates are real DER (throwaway self-signed P-256 certificates made here); tamper tests
 * edit the store directly (the SQLite C API, libpq with triggers off), the way an attacker with
 * write access would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"
#include "store_db.h" /* AUDIT_OFFICER_EVENTS, AUDIT_CEREMONY_EVENTS */

static EVP_PKEY *g_key;
static const char *g_pg; /* KL_TEST_STORE_URL: PostgreSQL mode */

#define SCHEMA_VERSION 17 /* what store_open makes of any older file */
/* SQL that takes a current file back to version 5's tables (the triggers go with them) */
#define DROP_V6                                                                                    \
    "DROP TABLE audit_key; DROP TABLE audit_checkpoints; DROP TABLE images;"                       \
    " DROP TABLE matter_onboarding;"                                                               \
    " DROP TABLE officers; DROP TABLE ceremonies; DROP TABLE ceremony_approvals;"                  \
    " DROP TABLE order_certs; DROP TABLE orders;"

typedef struct {
    char dir[256];
    char path[600]; /* the SQLite file, or the PostgreSQL URL */
    char db[64];    /* PostgreSQL: the database of this case */
    store *s;
} fx;

static void pg_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* --- helpers --- */

/* Self-signed certificate with the given serial (hex) and CN. Caller frees *der. */
static int make_cert(const char *serial_hex, const char *cn, uint8_t **der, size_t *len)
{
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    X509_NAME *name = X509_NAME_new();
    int ok = 0;
    if (!x || !name || !BN_hex2bn(&bn, serial_hex) || !(ai = BN_to_ASN1_INTEGER(bn, NULL))) {
        goto out;
    }
    if (!X509_set_version(x, 2) || !X509_set_serialNumber(x, ai) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Keyline Test",
                                    -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        !ASN1_TIME_set(X509_getm_notBefore(x), 1700000000) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), 1800000000) || !X509_set_pubkey(x, g_key) ||
        !X509_sign(x, g_key, EVP_sha256())) {
        goto out;
    }
    unsigned char *p = NULL;
    int n = i2d_X509(x, &p);
    if (n <= 0) {
        goto out;
    }
    *der = p;
    *len = (size_t)n;
    ok = 1;
out:
    X509_NAME_free(name);
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    X509_free(x);
    return ok;
}

static void random_serial(char out[41])
{
    unsigned char b[16];
    static const char hx[] = "0123456789ABCDEF";
    RAND_bytes(b, sizeof b);
    b[0] = (unsigned char)((b[0] & 0x7f) | 0x40); /* positive, no leading zero octet */
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[32] = '\0';
}

/* The row store_cert_insert records for make_cert(serial, cn): what ca_issue passes. Each
 * certificate is a device of its own ("dev-SERIAL"): activation refuses a second valid one of a
 * device (test_activate_one_per_device). */
static store_cert cert_row(const char *serial, const char *issuer, const char *status,
                           const char *subject)
{
    static _Thread_local char ids[8][80];
    static _Thread_local unsigned next;
    char *id = ids[next++ % 8];
    snprintf(id, sizeof ids[0], "dev-%s", serial);
    store_cert c;
    memset(&c, 0, sizeof c);
    c.serial_hex = (char *)serial;
    c.issuer = (char *)issuer;
    c.subject = (char *)subject;
    c.template_name = (char *)"device-ldevid";
    c.device_id = id;
    c.status = (char *)status;
    c.not_before = 1700000000;
    c.not_after = 1800000000;
    return c;
}

/* Sign a throwaway certificate with `serial` and record it with the given status and audit
 * detail (NULL: the default one). */
static kl_rc issue_as(store *s, const char *serial, const char *issuer, const char *status,
                      const char *actor, const char *detail)
{
    uint8_t *der = NULL;
    size_t len = 0;
    if (!make_cert(serial, "device", &der, &len)) {
        return KL_EINTERNAL;
    }
    store_cert c = cert_row(serial, issuer, status, "CN=device,O=Keyline Test");
    kl_rc rc = store_cert_insert(s, &c, der, len, actor, detail);
    OPENSSL_free(der);
    return rc;
}

static kl_rc issue(store *s, const char *serial, const char *issuer, const char *status)
{
    return issue_as(s, serial, issuer, status, "tester", NULL);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    if (!d) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* --- PostgreSQL: a database per case on the cluster of tests/lib/pg.sh --- */

static PGconn *pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg: %s: %s\n", url, PQerrorMessage(c));
        fail();
    }
    PQsetNoticeProcessor(c, pg_quiet, NULL);
    return c;
}

/* Run `sql` on the cluster's maintenance database (CREATE/DROP DATABASE). */
static int pg_admin(const char *sql)
{
    PGconn *c = pg_connect(g_pg);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        fprintf(stderr, "pg: %s: %s\n", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* A fresh database `name` and its URL. */
static int pg_fresh(const char *name, char *url, size_t n)
{
    char sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    if (!pg_admin(sql)) {
        return 0;
    }
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    snprintf(url, n, "postgresql:///%s?host=%s&port=%s&user=%s", name, getenv("KL_TEST_PG_HOST"),
             getenv("KL_TEST_PG_PORT"), getenv("KL_TEST_PG_USER"));
    return pg_admin(sql);
}

/* Run `sql` as a writer with direct access would: triggers off (session_replication_role),
 * the SQLite spelling "DROP TRIGGER [IF EXISTS] name;" dropped. Returns the SQLSTATE class
 * ("00" ok, "23" refused by a constraint or trigger). */
static const char *pg_raw(const char *url, const char *sql, int triggers_off)
{
    static char cls[3];
    char *copy = strdup(sql);
    assert_non_null(copy);
    for (char *p; (p = strstr(copy, "DROP TRIGGER")) != NULL;) {
        char *end = strchr(p, ';');
        memmove(p, end ? end + 1 : p + strlen(p), strlen(end ? end + 1 : p + strlen(p)) + 1);
    }
    PGconn *c = pg_connect(url);
    if (triggers_off) {
        PQclear(PQexec(c, "SET session_replication_role = replica"));
    }
    PGresult *r = PQexec(c, copy);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(cls, sizeof cls, "%.2s",
             (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? "00"
             : code                                            ? code
                                                               : "??");
    if (strcmp(cls, "00") != 0 && strcmp(cls, "23") != 0) {
        fprintf(stderr, "pg_raw: %s: %s\n", copy, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    free(copy);
    return cls;
}

static int g_case; /* numbers the databases of this process */

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/kl-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/keyline.db", f->dir);
    if (g_pg) {
        snprintf(f->db, sizeof f->db, "kt_%ld_%d", (long)getpid(), ++g_case);
        if (!pg_fresh(f->db, f->path, sizeof f->path)) {
            free(f);
            return -1;
        }
    }
    if (store_open(&f->s, f->path) != KL_OK) {
        fprintf(stderr, "store_open: %s\n", kl_errmsg());
        rm_rf(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    if (g_pg) {
        char sql[200];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->db);
        (void)pg_admin(sql);
    }
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* Run SQL directly on the store file (as an attacker or a broken tool would). */
static void raw_sql(const char *path, const char *sql)
{
    if (strncmp(path, "postgresql:", 11) == 0) {
        assert_string_equal(pg_raw(path, sql, 1), "00");
        return;
    }
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int r = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (r != SQLITE_OK) {
        fprintf(stderr, "raw_sql: %s\n", err ? err : "?");
    }
    assert_int_equal(r, SQLITE_OK);
    sqlite3_close(db);
}

/* Does the store itself refuse `sql` (a constraint or a guard-rail trigger)? */
static int raw_refused(const char *path, const char *sql)
{
    if (strncmp(path, "postgresql:", 11) == 0) {
        return strcmp(pg_raw(path, sql, 0), "23") == 0;
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int r = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return r == SQLITE_CONSTRAINT;
}

/* A row left by an earlier version of keyline (reserve-then-commit): "reserved" or "failed". */
static void legacy_row(const char *path, const char *serial, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO certs (serial, status, issuer, created) VALUES ('%s', '%s', "
             "'field-ca', 1)",
             serial, status);
    raw_sql(path, sql);
}

#define assert_rc(expr, want)                                                                      \
    do {                                                                                           \
        kl_rc r_ = (expr);                                                                         \
        if (r_ != (want)) {                                                                        \
            fprintf(stderr, "%s -> %s (%s), want %s\n", #expr, kl_rc_name(r_), kl_errmsg(),        \
                    kl_rc_name(want));                                                             \
        }                                                                                          \
        assert_int_equal(r_, (want));                                                              \
    } while (0)

/* Does `s` start with `prefix`? */
#define prefix_is(s, prefix) (strncmp((s), (prefix), strlen(prefix)) == 0)

#define assert_msg_has(needle)                                                                     \
    do {                                                                                           \
        if (!strstr(kl_errmsg(), (needle))) {                                                      \
            fprintf(stderr, "message \"%s\" lacks \"%s\"\n", kl_errmsg(), (needle));               \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

typedef struct {
    int n;
    char serials[16][41];
    char statuses[16][16];
} collect;

static int collect_cb(void *arg, const store_cert *c)
{
    collect *k = arg;
    if (k->n < 16) {
        snprintf(k->serials[k->n], 41, "%s", c->serial_hex);
        snprintf(k->statuses[k->n], 16, "%s", c->status);
    }
    k->n++;
    return 0;
}

static int count_cb(void *arg, const store_cert *c)
{
    (void)c;
    (*(int *)arg)++;
    return 0;
}

static int stop_cb(void *arg, const store_cert *c)
{
    (void)c;
    return ++(*(int *)arg) >= 2;
}

/* --- tests --- */

static void test_serial_normalize(void **state)
{
    (void)state;
    char out[41];
    assert_rc(store_serial_normalize("0a", out, sizeof out), KL_OK);
    assert_string_equal(out, "0A");
    assert_rc(store_serial_normalize("000abc", out, sizeof out), KL_OK);
    assert_string_equal(out, "0ABC");
    assert_rc(store_serial_normalize("7f:01:02", out, sizeof out), KL_OK);
    assert_string_equal(out, "7F0102");
    assert_rc(store_serial_normalize("00", out, sizeof out), KL_EINPUT);
    assert_rc(store_serial_normalize("xyz", out, sizeof out), KL_EINPUT);
    assert_rc(store_serial_normalize("", out, sizeof out), KL_EINPUT);
    assert_rc(store_serial_normalize("0123456789012345678901234567890123456789AB", out, sizeof out),
              KL_EINPUT);
    assert_rc(store_serial_normalize("00123456789012345678901234567890123456789A", out, sizeof out),
              KL_OK); /* 40 significant digits: 20 octets */
    assert_string_equal(out, "123456789012345678901234567890123456789A");
    assert_rc(
        store_serial_normalize("00123456789012345678901234567890123456789AB", out, sizeof out),
        KL_EINPUT); /* 41 significant digits */
}

static void test_audit_hash_vector(void **state)
{
    (void)state;
    char h[65];
    /* Pins the documented encoding (docs/internals/store.md); computed independently with
     * Python hashlib. */
    assert_rc(store_audit_entry_hash(
                  1, 1700000000, "alice", "issue", "serial=0A",
                  "0000000000000000000000000000000000000000000000000000000000000000", h),
              KL_OK);
    assert_string_equal(h, "fa615ee859871acf07a6df2aa2890558111acc92d854445234345091acb52743");
    assert_rc(store_audit_entry_hash(1, 0, "a", "b", "c", "xyz", h), KL_EINPUT);
}

static void test_open_errors(void **state)
{
    fx *f = *state;
    store *s = NULL;
    char p[700];

    snprintf(p, sizeof p, "%s/no-such-dir/keyline.db", f->dir);
    assert_rc(store_open(&s, p), KL_EIO);
    assert_msg_has("no-such-dir");
    assert_null(s);

    assert_rc(store_open(&s, "mysql://db.example/keyline"), KL_EUSAGE);
    assert_msg_has("unknown backend 'mysql'");
    assert_rc(store_open(&s, "postgresql://"), KL_EUSAGE);
    assert_rc(store_open(&s, "sqlite:"), KL_EUSAGE);
    assert_rc(store_open(&s, ""), KL_EUSAGE);
    assert_rc(store_open(&s, f->dir), KL_EIO); /* a directory */

    /* sqlite: prefix opens the same file as the plain path. */
    snprintf(p, sizeof p, "sqlite:%s", f->path);
    assert_rc(store_open(&s, p), KL_OK);
    assert_rc(store_audit_append(s, "t", "hello", "x"), KL_OK);
    store_close(s);
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 1);

    /* Not a database. */
    snprintf(p, sizeof p, "%s/junk.db", f->dir);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    for (int i = 0; i < 100; i++) {
        fputs("this is not an sqlite database, just text.\n", fp);
    }
    fclose(fp);
    assert_rc(store_open(&s, p), KL_EINPUT);
    assert_msg_has("not a keyline store");

    /* An SQLite database of some other program. */
    snprintf(p, sizeof p, "%s/other.db", f->dir);
    raw_sql(p, "CREATE TABLE t(x)");
    assert_rc(store_open(&s, p), KL_EINPUT);
    assert_msg_has("not a keyline store");

    /* A newer schema. */
    snprintf(p, sizeof p, "%s/newer.db", f->dir);
    assert_rc(store_open(&s, p), KL_OK);
    store_close(s);
    raw_sql(p, "PRAGMA user_version=99");
    assert_rc(store_open(&s, p), KL_EINPUT);
    assert_msg_has("newer");

    /* Journal mode and synchronous as required. */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* New store files are not world-readable. */
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 007, 0);
}

/* store_cert_insert (what ca_issue uses) and store_cert_state_get (EST's per-request check) */
static void test_insert_state(void **state)
{
    fx *f = *state;
    uint8_t *der = NULL;
    size_t len = 0;
    int64_t n0 = 0, n1 = 0;
    assert_true(make_cert("5A5A", "dev-ins", &der, &len));
    store_cert rec = {.serial_hex = "5a5a",
                      .issuer = "field-ca",
                      .subject = "CN=dev-ins,O=Keyline Test",
                      .template_name = "device-ldevid",
                      .device_id = "dev-ins",
                      .status = STORE_ST_VALID,
                      .not_before = 1700000000,
                      .not_after = 1800000000,
                      .revoke_reason = -1};
    assert_rc(store_audit_verify(f->s, &n0), KL_OK);
    assert_rc(store_cert_insert(f->s, &rec, der, len, "alice", NULL), KL_OK);
    store_cert c;
    assert_rc(store_cert_get(f->s, "5A5A", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_VALID);
    assert_string_equal(c.issuer, "field-ca");
    assert_string_equal(c.subject, "CN=dev-ins,O=Keyline Test");
    assert_string_equal(c.template_name, "device-ldevid");
    assert_string_equal(c.device_id, "dev-ins");
    assert_int_equal(c.der_len, len);
    assert_memory_equal(c.der, der, len);
    store_cert_free(&c);
    store_cert_state cs;
    assert_rc(store_cert_state_get(f->s, "5a:5a", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_VALID);
    assert_int_equal(cs.not_before, 1700000000);
    assert_int_equal(cs.not_after, 1800000000);
    assert_rc(store_audit_verify(f->s, &n1), KL_OK);
    assert_int_equal(n1, n0 + 1); /* the issue entry, same transaction */

    /* the same serial again: KL_EEXIST, nothing written */
    rec.device_id = "someone-else";
    assert_rc(store_cert_insert(f->s, &rec, der, len, "mallory", NULL), KL_EEXIST);
    assert_msg_has("already in the store");
    assert_rc(store_audit_verify(f->s, &n0), KL_OK);
    assert_int_equal(n0, n1);
    assert_rc(store_cert_get(f->s, "5A5A", &c), KL_OK);
    assert_string_equal(c.device_id, "dev-ins");
    store_cert_free(&c);

    /* only valid or pending; pending shows as such; revocation is seen at once */
    rec.serial_hex = "5B";
    rec.status = STORE_ST_RESERVED;
    assert_rc(store_cert_insert(f->s, &rec, der, len, "alice", NULL), KL_EUSAGE);
    rec.status = STORE_ST_PENDING;
    assert_rc(store_cert_insert(f->s, &rec, der, len, "alice", NULL), KL_OK);
    assert_rc(store_cert_state_get(f->s, "5B", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_PENDING);
    assert_rc(store_cert_revoke(f->s, "5A5A", 1, 0, "alice"), KL_OK);
    assert_rc(store_cert_state_get(f->s, "5A5A", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_REVOKED);
    assert_rc(store_cert_state_get(f->s, "FFFE", &cs), KL_ENOTFOUND);
    OPENSSL_free(der);
}

/* store_snapshot_begin/end: the reads of this thread in between see one snapshot (a
 * certificate another thread records meanwhile is not there until the end), a second begin in
 * the same thread is refused, and the end passes a failure through with its message. */
typedef struct {
    store *s;
    kl_rc rc;
} snap_writer;

static void *snap_write(void *arg)
{
    snap_writer *w = arg;
    w->rc = issue(w->s, "5C02", "field-ca", STORE_ST_VALID);
    return NULL;
}

static void test_snapshot(void **state)
{
    fx *f = *state;
    assert_rc(issue(f->s, "5C01", "field-ca", STORE_ST_VALID), KL_OK);

    store_cert_state cs;
    assert_rc(store_snapshot_begin(f->s), KL_OK);
    assert_rc(store_snapshot_begin(f->s), KL_EINTERNAL); /* one at a time per thread */
    assert_rc(store_cert_state_get(f->s, "5C01", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_VALID);
    /* another thread records a certificate while the snapshot is open: its write does not
     * wait for this reader, and this reader does not see it */
    snap_writer w = {.s = f->s, .rc = KL_EINTERNAL};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, snap_write, &w), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_rc(w.rc, KL_OK);
    assert_rc(store_cert_state_get(f->s, "5C02", &cs), KL_ENOTFOUND);
    assert_rc(store_snapshot_end(f->s, KL_OK), KL_OK);
    assert_rc(store_cert_state_get(f->s, "5C02", &cs), KL_OK); /* seen after the end */
    assert_string_equal(cs.status, STORE_ST_VALID);

    /* a failure inside is passed through with its own message */
    assert_rc(store_snapshot_begin(f->s), KL_OK);
    kl_rc inner = store_cert_state_get(f->s, "FFFE", &cs);
    assert_int_equal(inner, KL_ENOTFOUND);
    assert_rc(store_snapshot_end(f->s, inner), KL_ENOTFOUND);
    assert_msg_has("no certificate with serial");
    /* an end with no snapshot open is an error, and the handle is usable after it all */
    assert_rc(store_snapshot_end(f->s, KL_OK), KL_EINTERNAL);
    assert_msg_has("no snapshot open");
    assert_rc(store_cert_state_get(f->s, "5C01", &cs), KL_OK);
}

static void test_insert_get_list(void **state)
{
    fx *f = *state;
    store_cert c;
    uint8_t *der = NULL;
    size_t len = 0;

    assert_true(make_cert("0A1B2C", "dev-1", &der, &len));
    store_cert rec = cert_row("0a1b2c", "field-ca", STORE_ST_VALID, "CN=dev-1,O=Keyline Test");
    assert_rc(store_cert_insert(f->s, &rec, der, len, "alice", "issued dev-1"), KL_OK);
    assert_rc(store_cert_get(f->s, "0A:1B:2C", &c), KL_OK);
    assert_string_equal(c.serial_hex, "0A1B2C");
    assert_string_equal(c.status, STORE_ST_VALID);
    assert_string_equal(c.issuer, "field-ca");
    assert_string_equal(c.template_name, "device-ldevid");
    assert_string_equal(c.device_id, "dev-0a1b2c");
    assert_string_equal(c.subject, "CN=dev-1,O=Keyline Test");
    assert_int_equal(c.not_before, 1700000000);
    assert_int_equal(c.not_after, 1800000000);
    assert_int_equal(c.der_len, len);
    assert_memory_equal(c.der, der, len);
    assert_int_equal(c.revoke_reason, -1);
    assert_int_equal(c.revoked_at, 0);
    assert_true(c.created > 0);
    store_cert_free(&c);
    OPENSSL_free(der);

    assert_rc(issue(f->s, "0B", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(issue(f->s, "0C", "factory-ca", STORE_ST_VALID), KL_OK);
    legacy_row(f->path, "0D", STORE_ST_RESERVED);

    collect k = {0};
    assert_rc(store_cert_list(f->s, NULL, NULL, collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 3);
    assert_string_equal(k.serials[0], "0A1B2C");
    assert_string_equal(k.serials[1], "0B");
    assert_string_equal(k.serials[2], "0C");
    assert_string_equal(k.statuses[1], STORE_ST_PENDING);

    memset(&k, 0, sizeof k);
    assert_rc(store_cert_list(f->s, NULL, "field-ca", collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 2);
    memset(&k, 0, sizeof k);
    assert_rc(store_cert_list(f->s, STORE_ST_VALID, NULL, collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 2);
    memset(&k, 0, sizeof k);
    assert_rc(store_cert_list(f->s, STORE_ST_RESERVED, "field-ca", collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 1);
    assert_string_equal(k.serials[0], "0D");

    int stops = 0;
    assert_rc(store_cert_list(f->s, NULL, NULL, stop_cb, &stops), KL_OK);
    assert_int_equal(stops, 2);

    /* Pending listing: created before a time. */
    memset(&k, 0, sizeof k);
    assert_rc(store_cert_list_pending(f->s, time(NULL) + 10, collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 1);
    assert_string_equal(k.serials[0], "0B");
    memset(&k, 0, sizeof k);
    assert_rc(store_cert_list_pending(f->s, time(NULL) - 3600, collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 0);

    assert_rc(store_cert_get(f->s, "FFFF", &c), KL_ENOTFOUND);
    assert_msg_has("no certificate with serial FFFF");

    /* Each insert appended one "issue" audit entry. */
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 3);
    assert_string_equal(a[0].action, "issue");
    assert_string_equal(a[0].actor, "alice");
    /* the caller's detail behind the serial, then the status and DER hash (store_audit.h) */
    assert_true(prefix_is(a[0].detail, "serial=0A1B2C issued dev-1 status=valid der-sha256="));
    assert_true(prefix_is(a[1].detail,
                          "serial=0B subject=CN=device,O=Keyline Test status=pending der-sha256="));
    store_audit_list_free(a, na);
}

static void test_list_many(void **state)
{
    fx *f = *state;
    char serial[41];
    /* More than one iteration chunk (256 rows). */
    for (int i = 0; i < 600; i++) {
        snprintf(serial, sizeof serial, "%04X", 0x1000 + i);
        assert_rc(issue(f->s, serial, "field-ca", STORE_ST_VALID), KL_OK);
    }
    int n = 0;
    assert_rc(store_cert_list(f->s, NULL, NULL, count_cb, &n), KL_OK);
    assert_int_equal(n, 600);
}

static void test_duplicate_serial(void **state)
{
    fx *f = *state;
    assert_rc(issue(f->s, "7A", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "7A", "field-ca", STORE_ST_PENDING), KL_EEXIST);
    assert_rc(issue(f->s, "7a", "other-ca", STORE_ST_VALID), KL_EEXIST);
    assert_rc(issue(f->s, "007a", "other-ca", STORE_ST_VALID), KL_EEXIST);
    assert_msg_has("7A");
    store_cert bad = cert_row("zz", "field-ca", STORE_ST_VALID, "CN=x");
    assert_rc(store_cert_insert(f->s, &bad, (const uint8_t *)"x", 1, "t", NULL), KL_EINPUT);
    bad = cert_row("7B", "", STORE_ST_VALID, "CN=x");
    assert_rc(store_cert_insert(f->s, &bad, (const uint8_t *)"x", 1, "t", NULL), KL_EUSAGE);
    bad = cert_row("7B", "field-ca", STORE_ST_VALID, "CN=x");
    assert_rc(store_cert_insert(f->s, &bad, NULL, 0, "t", NULL), KL_EUSAGE);
    /* The clashes and refusals wrote nothing: one row, one audit entry. */
    int n = 0;
    assert_rc(store_cert_list(f->s, NULL, NULL, count_cb, &n), KL_OK);
    assert_int_equal(n, 1);
    int64_t na = 0;
    assert_rc(store_audit_verify(f->s, &na), KL_OK);
    assert_int_equal(na, 1);

    /* The UNIQUE constraint holds even for writers that bypass the API. */
    assert_true(raw_refused(f->path, "INSERT INTO certs (serial, status, issuer, created) VALUES "
                                     "('7A', 'reserved', 'x', 0)"));
    /* Rows are never deleted, so a serial never comes free again. */
    assert_true(raw_refused(f->path, "DELETE FROM certs"));
}

/* Rows written by the reserve-then-commit interface of earlier versions: "failed" and
 * "reserved" rows are not issued certificates. Not listed unless asked for, never revocable or
 * activatable, and their serials stay taken. */
static void test_legacy_rows(void **state)
{
    fx *f = *state;
    legacy_row(f->path, "21", STORE_ST_FAILED);
    legacy_row(f->path, "22", STORE_ST_RESERVED);
    int n = 0;
    assert_rc(store_cert_list(f->s, NULL, NULL, count_cb, &n), KL_OK);
    assert_int_equal(n, 0);
    assert_rc(store_cert_list(f->s, STORE_ST_FAILED, NULL, count_cb, &n), KL_OK);
    assert_int_equal(n, 1);
    assert_rc(issue(f->s, "21", "field-ca", STORE_ST_VALID), KL_EEXIST);
    assert_rc(issue(f->s, "22", "field-ca", STORE_ST_VALID), KL_EEXIST);
    assert_rc(store_cert_revoke(f->s, "21", 1, 0, "bob"), KL_ENOTFOUND);
    assert_rc(store_cert_revoke(f->s, "22", 1, 0, "bob"), KL_ENOTFOUND);
    assert_rc(store_cert_activate(f->s, "22", "station-3"), KL_EPOLICY);
    store_cert_state cs;
    assert_rc(store_cert_state_get(f->s, "22", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_RESERVED);
    int64_t na = -1;
    assert_rc(store_audit_verify(f->s, &na), KL_OK);
    assert_int_equal(na, 0);
}

typedef struct {
    char serials[8][41];
    size_t n;
} rv_seen;

static kl_rc rv_seen_cb(void *arg, const store_revoked *r)
{
    rv_seen *v = arg;
    if (v->n < 8) {
        snprintf(v->serials[v->n++], sizeof v->serials[0], "%s", r->serial_hex);
    }
    return KL_OK;
}

/* store_cert_revoke_many (items and a batch by period) and store_revoked_stream */
static void test_revoke_many(void **state)
{
    fx *f = *state;
    store_revoke_result res;
    assert_rc(issue(f->s, "0A01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "FF", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "1B02", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(issue(f->s, "C3", "factory-ca", STORE_ST_VALID), KL_OK);
    store_device d = {
        .device_id = "HWX1", .model = "m", .cert_serial = "C3", .state = "provisioned"};
    assert_rc(store_device_put(f->s, &d), KL_OK);
    /* one unknown item: nothing is revoked */
    const char *bad[] = {"0A01", "serial:77", "FF"};
    store_revoke_req rq = {
        .items = bad, .n_items = 3, .source = "list.txt", .reason = 1, .actor = "bob"};
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_ENOTFOUND);
    assert_msg_has("list.txt item 2");
    rv_seen v = {0};
    assert_rc(store_revoked_stream(f->s, "field-ca", rv_seen_cb, &v), KL_OK);
    assert_int_equal(v.n, 0);
    /* a serial, a device id, an explicit serial */
    const char *good[] = {"a01", "HWX1", "serial:FF"};
    rq.items = good;
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 3);
    assert_int_equal(res.already, 0);
    assert_int_equal(res.n_issuers, 2);
    assert_rc(store_device_get(f->s, "HWX1", &d), KL_OK);
    assert_string_equal(d.state, "revoked");
    store_device_free(&d);
    /* again: already revoked, counted */
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 0);
    assert_int_equal(res.already, 3);
    /* a batch by period: the pending one left */
    store_revoke_req b = {
        .issuer = "field-ca", .from = 0, .until = time(NULL) + 10, .reason = -1, .actor = "bob"};
    assert_rc(store_cert_revoke_many(f->s, &b, &res), KL_OK);
    assert_int_equal(res.revoked, 1);
    /* numeric serial order: FF < 0A01 < 1B02 */
    memset(&v, 0, sizeof v);
    assert_rc(store_revoked_stream(f->s, "field-ca", rv_seen_cb, &v), KL_OK);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.serials[0], "FF");
    assert_string_equal(v.serials[1], "0A01");
    assert_string_equal(v.serials[2], "1B02");
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

/* A list is read in serial order and changed in row order: a certificate it names twice (by
 * serial in two spellings and by its device) is revoked once, audited once, its further
 * mentions counted as repeated (not as already revoked); a bad item still names its own line. */
static void test_revoke_list_twice(void **state)
{
    fx *f = *state;
    store_revoke_result res;
    assert_rc(issue(f->s, "0B02", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "0B01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "0B03", "field-ca", STORE_ST_PENDING), KL_OK);
    store_device d = {
        .device_id = "HWT1", .model = "m", .cert_serial = "0B02", .state = "provisioned"};
    assert_rc(store_device_put(f->s, &d), KL_OK);
    int64_t n0 = 0;
    assert_rc(store_audit_verify(f->s, &n0), KL_OK);
    const char *bad[] = {"0B03", "0b01", "device:NOPE", "0B02"};
    store_revoke_req rq = {
        .items = bad, .n_items = 4, .source = "l.txt", .reason = 1, .actor = "bob"};
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_ENOTFOUND);
    assert_msg_has("l.txt item 3");
    const char *list[] = {"0b02", "HWT1", "0B03", "serial:0B02", "0B01", "device:HWT1"};
    rq.items = list;
    rq.n_items = 6;
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 3);
    assert_int_equal(res.already, 0);
    assert_int_equal(res.repeated, 3); /* 0B02's three further mentions */
    int64_t n1 = 0;
    assert_rc(store_audit_verify(f->s, &n1), KL_OK);
    assert_int_equal(n1 - n0, 3); /* one entry per certificate */
    const char *const serials[] = {"0B01", "0B02", "0B03"};
    for (int i = 0; i < 3; i++) {
        store_cert c;
        memset(&c, 0, sizeof c);
        assert_rc(store_cert_get(f->s, serials[i], &c), KL_OK);
        assert_string_equal(c.status, STORE_ST_REVOKED);
        store_cert_free(&c);
    }
    assert_rc(store_device_get(f->s, "HWT1", &d), KL_OK);
    assert_string_equal(d.state, "revoked");
    store_device_free(&d);
}

static kl_rc preview_seen(void *arg, const char *serial, const char *issuer)
{
    rv_seen *v = arg;
    if (v->n < 8) {
        snprintf(v->serials[v->n++], sizeof v->serials[0], "%s %s", serial, issuer);
    }
    return strcmp(serial, "0D0D") == 0 ? kl_fail(KL_EIO, "the reader stopped") : KL_OK;
}

/* A dry run (req.preview): the same checks and counts in a read transaction, each certificate
 * reported, nothing changed, no audit entry; the callback's error stops it. */
static void test_revoke_preview(void **state)
{
    fx *f = *state;
    store_revoke_result res;
    assert_rc(issue(f->s, "0C02", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "0C01", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(issue(f->s, "0C03", "factory-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_revoke(f->s, "0C03", 1, 0, "bob"), KL_OK);
    int64_t n0 = 0;
    assert_rc(store_audit_verify(f->s, &n0), KL_OK);
    rv_seen v = {0};
    const char *list[] = {"0C03", "0c01", "serial:0C02", "0C01"};
    store_revoke_req rq = {.items = list,
                           .n_items = 4,
                           .reason = 1,
                           .actor = "bob",
                           .preview = preview_seen,
                           .preview_arg = &v};
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 2);
    assert_int_equal(res.already, 1);  /* 0C03 */
    assert_int_equal(res.repeated, 1); /* 0C01's second mention */
    assert_int_equal(v.n, 2);          /* in row order: 0C02 was made first */
    assert_string_equal(v.serials[0], "0C02 field-ca");
    assert_string_equal(v.serials[1], "0C01 field-ca");
    const char *bad[] = {"0C01", "0EEE"};
    rq.items = bad;
    rq.n_items = 2;
    assert_rc(store_cert_revoke_many(f->s, &rq, &res), KL_ENOTFOUND);
    assert_msg_has("list item 2");
    memset(&v, 0, sizeof v);
    store_revoke_req b = {.issuer = "field-ca",
                          .from = 0,
                          .until = time(NULL) + 10,
                          .reason = -1,
                          .actor = "bob",
                          .preview = preview_seen,
                          .preview_arg = &v};
    assert_rc(store_cert_revoke_many(f->s, &b, &res), KL_OK);
    assert_int_equal(res.revoked, 2);
    assert_int_equal(v.n, 2);
    int64_t n1 = 0;
    assert_rc(store_audit_verify(f->s, &n1), KL_OK);
    assert_int_equal(n1, n0);
    store_cert c;
    memset(&c, 0, sizeof c);
    assert_rc(store_cert_get(f->s, "0C01", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_PENDING);
    store_cert_free(&c);
    assert_rc(issue(f->s, "0D0D", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_revoke_many(f->s, &b, &res), KL_EIO);
    assert_msg_has("the reader stopped");
}

/* Valid certificates of field-ca in this order, and device `dev` whose current one is
 * `dev_serial`. */
static void batch_setup(fx *f, const char *const *serials, int n, char *dev, char *dev_serial)
{
    for (int i = 0; i < n; i++) {
        assert_rc(issue(f->s, serials[i], "field-ca", STORE_ST_VALID), KL_OK);
    }
    store_device d = {
        .device_id = dev, .model = "m", .cert_serial = dev_serial, .state = "provisioned"};
    assert_rc(store_device_put(f->s, &d), KL_OK);
}

/* A batch by period: every certificate of the issuer in the period changed by one statement,
 * then one audit entry each in issue order (not serial order), the device marked, the epoch
 * moved once; the chain verifies. */
static void test_revoke_batch(void **state)
{
    fx *f = *state;
    store_revoke_result res;
    store_audit *a = NULL;
    size_t na = 0;
    const char *const order[] = {"5C", "0A51", "52"};
    batch_setup(f, order, 3, "HWB1", "0A51");
    assert_rc(issue(f->s, "54", "factory-ca", STORE_ST_VALID), KL_OK);
    store_revoke_req b = {.issuer = "field-ca",
                          .from = 0,
                          .until = time(NULL) + 10,
                          .reason = 4,
                          .actor = "carol",
                          .when = 1750000000};
    assert_rc(store_cert_revoke_many(f->s, &b, &res), KL_OK);
    assert_int_equal(res.revoked, 3);
    assert_int_equal(res.n_issuers, 1);
    assert_string_equal(res.issuers[0], "field-ca");
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_true(na >= 3);
    for (int i = 0; i < 3; i++) {
        char want[128];
        snprintf(want, sizeof want, "serial=%s issuer=field-ca reason=4 revoked-at=1750000000",
                 order[i]);
        assert_string_equal(a[na - 3 + (size_t)i].action, "revoke");
        assert_string_equal(a[na - 3 + (size_t)i].actor, "carol");
        assert_string_equal(a[na - 3 + (size_t)i].detail, want);
    }
    store_audit_list_free(a, na);
    store_cert c;
    assert_rc(store_cert_get(f->s, "52", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_REVOKED);
    assert_int_equal(c.revoked_at, 1750000000);
    assert_int_equal(c.revoke_reason, 4);
    store_cert_free(&c);
    assert_rc(store_cert_get(f->s, "54", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_VALID);
    store_cert_free(&c);
    store_device d;
    assert_rc(store_device_get(f->s, "HWB1", &d), KL_OK);
    assert_string_equal(d.state, "revoked");
    store_device_free(&d);
    int64_t epoch = 0, n = 0;
    assert_rc(store_revocation_epoch(f->s, "field-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 1);
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

/* A batch that fails on its second audit entry (a row past the head, as an edit outside
 * keyline leaves): nothing of it stays, not the certificates' changes of the one statement. */
static void test_revoke_batch_atomic(void **state)
{
    fx *f = *state;
    store_revoke_result res;
    store_audit *a = NULL;
    size_t na = 0;
    char sql[512];
    const char *const two[] = {"61", "62"};
    batch_setup(f, two, 2, "HWB2", "61");
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    int64_t head = a[na - 1].seq;
    store_audit_list_free(a, na);
    snprintf(sql, sizeof sql,
             "INSERT INTO audit (seq, ts, actor, action, detail, prev_hash, hash) VALUES (%lld,"
             " 1, 'x', 'x', 'x', '%064d', '%064d')",
             (long long)head + 2, 0, 0);
    raw_sql(f->path, sql);
    store_revoke_req b = {
        .issuer = "field-ca", .from = 0, .until = time(NULL) + 10, .reason = 1, .actor = "carol"};
    assert_rc(store_cert_revoke_many(f->s, &b, &res), KL_EIO);
    assert_msg_has("already exists past the recorded head");
    store_cert c;
    assert_rc(store_cert_get(f->s, "61", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_VALID);
    store_cert_free(&c);
    store_device d;
    assert_rc(store_device_get(f->s, "HWB2", &d), KL_OK);
    assert_string_equal(d.state, "provisioned");
    store_device_free(&d);
    int64_t epoch = -1;
    assert_rc(store_revocation_epoch(f->s, "field-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 0);
    assert_rc(store_audit_list(f->s, head + 1, &a, &na), KL_OK);
    assert_int_equal(na, 1); /* the planted row alone */
    store_audit_list_free(a, na);
}

static void test_revoke(void **state)
{
    fx *f = *state;
    store_cert c;
    int64_t epoch = -1;

    assert_rc(store_revocation_epoch(f->s, "field-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 0);
    assert_rc(store_cert_revoke(f->s, "31", 1, 0, "bob"), KL_ENOTFOUND);
    assert_msg_has("no certificate with serial 31");

    assert_rc(issue(f->s, "32", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "33", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(issue(f->s, "34", "factory-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_revoke(f->s, "32", 7, 0, "bob"), KL_EINPUT); /* reason 7 unused */
    assert_rc(store_cert_revoke(f->s, "32", 1, 1750000000, "bob"), KL_OK);
    assert_rc(store_revocation_epoch(f->s, "field-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 1);
    assert_rc(store_cert_revoke(f->s, "32", 1, 0, "bob"), KL_EEXIST);
    assert_rc(store_cert_revoke(f->s, "33", -1, 0, "bob"), KL_OK); /* pending can be revoked */
    assert_rc(store_revocation_epoch(f->s, "field-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 2);
    assert_rc(store_revocation_epoch(f->s, "factory-ca", &epoch), KL_OK);
    assert_int_equal(epoch, 0);

    assert_rc(store_cert_get(f->s, "32", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_REVOKED);
    assert_int_equal(c.revoked_at, 1750000000);
    assert_int_equal(c.revoke_reason, 1);
    store_cert_free(&c);
    assert_rc(store_cert_get(f->s, "33", &c), KL_OK);
    assert_int_equal(c.revoke_reason, -1);
    assert_true(c.revoked_at > 0);
    store_cert_free(&c);

    collect k = {0};
    assert_rc(store_cert_list(f->s, STORE_ST_REVOKED, "field-ca", collect_cb, &k), KL_OK);
    assert_int_equal(k.n, 2);

    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_string_equal(a[na - 2].action, "revoke");
    assert_string_equal(a[na - 2].actor, "bob");
    assert_string_equal(a[na - 2].detail,
                        "serial=32 issuer=field-ca reason=1 revoked-at=1750000000");
    store_audit_list_free(a, na);
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

static void test_activate(void **state)
{
    fx *f = *state;
    store_cert c;
    assert_rc(issue(f->s, "41", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(store_cert_activate(f->s, "41", "station-3"), KL_OK);
    assert_rc(store_cert_get(f->s, "41", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_VALID);
    store_cert_free(&c);
    assert_rc(store_cert_activate(f->s, "41", "station-3"), KL_EPOLICY);
    assert_rc(store_cert_activate(f->s, "42", "station-3"), KL_ENOTFOUND);
    assert_rc(issue(f->s, "43", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_activate(f->s, "43", "station-3"), KL_EPOLICY);
    assert_msg_has("is valid, not pending");

    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 2, &a, &na), KL_OK);
    assert_int_equal(na, 2); /* activate 41, issue 43; the refused activations left none */
    assert_string_equal(a[1].action, "issue");
    assert_int_equal(a[0].seq, 2);
    assert_string_equal(a[0].action, "activate");
    assert_string_equal(a[0].actor, "station-3");
    store_audit_list_free(a, na);
}

/* One valid identity per device: a pending certificate of a device that holds a valid one of
 * the same issuer and template is not activated (two stations racing one device, a cloned
 * hardware serial) until that one is revoked; another template's, another issuer's or a
 * revoked one does not count. */
static void test_activate_one_per_device(void **state)
{
    fx *f = *state;
    uint8_t *der = NULL;
    size_t len = 0;
    const char *rows[][4] = {{"51", "field-ca", "device-ldevid", STORE_ST_VALID},
                             {"52", "field-ca", "device-ldevid", STORE_ST_PENDING},
                             {"53", "field-ca", "device-idevid", STORE_ST_VALID},
                             {"54", "other-ca", "device-ldevid", STORE_ST_VALID},
                             {"55", "field-ca", "device-ldevid", STORE_ST_PENDING}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_true(make_cert(rows[i][0], "twin", &der, &len));
        store_cert c = cert_row(rows[i][0], rows[i][1], rows[i][3], "CN=twin");
        c.template_name = (char *)rows[i][2];
        c.device_id = (char *)"twin-1";
        assert_rc(store_cert_insert(f->s, &c, der, len, "station-1", NULL), KL_OK);
        OPENSSL_free(der);
    }
    assert_rc(store_cert_activate(f->s, "52", "station-2"), KL_EPOLICY);
    assert_msg_has(
        "certificate 52 not activated: its device holds valid certificate 51 of the same "
        "issuer and template");
    store_cert c;
    assert_rc(store_cert_get(f->s, "52", &c), KL_OK);
    assert_string_equal(c.status, STORE_ST_PENDING);
    store_cert_free(&c);
    assert_rc(store_cert_revoke(f->s, "51", 4, 1750000000, "station-2"), KL_OK);
    assert_rc(store_cert_activate(f->s, "52", "station-2"), KL_OK); /* 53, 54: not rivals */
    assert_rc(store_cert_activate(f->s, "55", "station-1"), KL_EPOLICY);
    assert_msg_has("holds valid certificate 52");
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

static void test_crl_numbers(void **state)
{
    fx *f = *state;
    int64_t v = 0;
    for (int64_t i = 1; i <= 5; i++) {
        assert_rc(store_crl_number_next(f->s, "field-ca", &v), KL_OK);
        assert_int_equal(v, i);
    }
    assert_rc(store_crl_number_next(f->s, "root", &v), KL_OK);
    assert_int_equal(v, 1);
    store_close(f->s);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_rc(store_crl_number_next(f->s, "field-ca", &v), KL_OK);
    assert_int_equal(v, 6);
}

static void test_devices(void **state)
{
    fx *f = *state;
    store_device d, g;
    memset(&d, 0, sizeof d);
    d.device_id = (char *)"HW-0001";
    d.model = (char *)"sensor-x";
    d.state = (char *)"pending";
    d.detail = (char *)"station 3 fixture 2";
    assert_rc(store_device_get(f->s, "HW-0001", &g), KL_ENOTFOUND);
    assert_rc(store_device_put(f->s, &d), KL_OK);
    assert_rc(store_device_get(f->s, "HW-0001", &g), KL_OK);
    assert_string_equal(g.model, "sensor-x");
    assert_string_equal(g.state, "pending");
    assert_null(g.cert_serial);
    assert_true(g.updated > 0);
    store_device_free(&g);

    d.state = (char *)"provisioned";
    d.cert_serial = (char *)"0A1B";
    d.detail = NULL;
    assert_rc(store_device_put(f->s, &d), KL_OK);
    assert_rc(store_device_get(f->s, "HW-0001", &g), KL_OK);
    assert_string_equal(g.state, "provisioned");
    assert_string_equal(g.cert_serial, "0A1B");
    assert_null(g.detail);
    store_device_free(&g);

    d.device_id = (char *)"HW-0002";
    d.state = NULL; /* defaults to pending */
    assert_rc(store_device_put(f->s, &d), KL_OK);
    store_device *v = NULL;
    size_t n = 0;
    assert_rc(store_device_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].device_id, "HW-0001");
    assert_string_equal(v[1].device_id, "HW-0002");
    assert_string_equal(v[1].state, "pending");
    store_device_list_free(v, n);

    /* revoking a device's current certificate marks its inventory row, in the same
     * transaction; rows pointing at other certificates stay as they are */
    assert_rc(issue(f->s, "0C0C", "factory-ca", STORE_ST_VALID), KL_OK);
    d.device_id = (char *)"HW-0003";
    d.state = (char *)"provisioned";
    d.cert_serial = (char *)"0C0C";
    assert_rc(store_device_put(f->s, &d), KL_OK);
    assert_rc(store_cert_revoke(f->s, "0c:0c", 1, 0, "officer"), KL_OK);
    assert_rc(store_device_get(f->s, "HW-0003", &g), KL_OK);
    assert_string_equal(g.state, "revoked");
    assert_string_equal(g.detail, "certificate 0C0C revoked (reason 1)");
    assert_string_equal(g.cert_serial, "0C0C");
    store_device_free(&g);
    assert_rc(store_device_get(f->s, "HW-0001", &g), KL_OK);
    assert_string_equal(g.state, "provisioned");
    store_device_free(&g);
}

static size_t audit_count(store *s, const char *action, int64_t *total); /* below */

/* A lost update refused: keyline-cad A reads a device's row and checks it (the est role may
 * overwrite a row naming no live certificate of another profile), keyline-cad B (another
 * connection: another daemon on the same store) records the station's certificate in that row
 * meanwhile; A's write, allowed by what it read, must not replace B's row. The compare and the
 * write are one transaction: A's write is refused until it has read the row as it is. */
static void test_device_put_if(void **state)
{
    fx *f = *state;
    store *b = NULL;
    store_device g;
    assert_rc(store_open(&b, f->path), KL_OK);
    assert_rc(issue(f->s, "0D01", "factory-ca", STORE_ST_PENDING), KL_OK); /* the station's */
    assert_rc(issue(f->s, "0D02", "field-ca", STORE_ST_VALID), KL_OK);     /* est's */

    /* A reads: no row */
    assert_rc(store_device_get(f->s, "HW-R1", &g), KL_ENOTFOUND);
    store_device_seen seen_a = {NULL, NULL};
    /* B writes the station's row */
    store_device st = {.device_id = (char *)"HW-R1",
                       .model = (char *)"widget",
                       .cert_serial = (char *)"0D01",
                       .state = (char *)"pending",
                       .detail = (char *)"on the line"};
    assert_rc(store_device_put_if(b, &st, NULL, "station", "inventory", "device HW-R1"), KL_OK);
    /* A writes what its check allowed: refused, B's row stands, no audit entry of A's */
    store_device est = {.device_id = (char *)"HW-R1",
                        .model = (char *)"x",
                        .cert_serial = (char *)"0D02",
                        .state = (char *)"failed",
                        .detail = (char *)"gone"};
    assert_rc(store_device_put_if(f->s, &est, &seen_a, "est", "inventory", "device HW-R1 x"),
              KL_EEXIST);
    assert_msg_has("device HW-R1: its inventory row changed since it was read (it names "
                   "certificate 0D01, pending, now)");
    assert_rc(store_device_get(f->s, "HW-R1", &g), KL_OK);
    assert_string_equal(g.cert_serial, "0D01");
    assert_string_equal(g.state, "pending");
    assert_string_equal(g.detail, "on the line");
    store_device_free(&g);
    assert_int_equal(audit_count(f->s, "inventory", NULL), 1);

    /* the same certificate with another status is another row for a check: A read 0D01
     * pending, B activates it, A's write is refused again */
    store_device_seen seen_p = {"0D01", STORE_ST_PENDING};
    assert_rc(store_cert_activate(b, "0D01", "station"), KL_OK);
    assert_rc(store_device_put_if(f->s, &est, &seen_p, "est", "inventory", "x"), KL_EEXIST);
    assert_msg_has("(it names certificate 0D01, valid, now)");
    /* B revokes it: a row gone, or naming no certificate, is a change too */
    assert_rc(store_cert_revoke(b, "0D01", 5, 0, "station"), KL_OK);
    store_device none = st;
    none.cert_serial = NULL;
    store_device_seen seen_r = {"0D01", STORE_ST_REVOKED};
    assert_rc(store_device_put_if(b, &none, &seen_r, NULL, NULL, NULL), KL_OK);
    assert_rc(store_device_put_if(f->s, &est, &seen_r, "est", "inventory", "x"), KL_EEXIST);
    assert_msg_has("(it names no certificate now)");
    assert_rc(store_device_put_if(f->s, &est, &seen_a, "est", "inventory", "x"), KL_OK);
    assert_rc(store_device_put_if(f->s, &st, NULL, "est", NULL, NULL), KL_EEXIST);
    assert_msg_has("(it names certificate 0D02, valid, now)");
    /* what A saw as it is: written, with its audit entry in the same transaction */
    store_device_seen seen_v = {"0D02", STORE_ST_VALID};
    est.state = (char *)"provisioned";
    assert_rc(store_device_put_if(f->s, &est, &seen_v, "est", "inventory", "device HW-R1 ok"),
              KL_OK);
    assert_rc(store_device_get(b, "HW-R1", &g), KL_OK);
    assert_string_equal(g.cert_serial, "0D02");
    assert_string_equal(g.state, "provisioned");
    store_device_free(&g);
    assert_int_equal(audit_count(f->s, "inventory", NULL), 3);
    /* "provisioned" with a certificate revoked after the caller checked it (valid then): the
     * status is read again in the write's transaction; nothing written, no audit entry */
    assert_rc(issue(f->s, "0D03", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_revoke(b, "0D03", 1, 0, "officer"), KL_OK);
    store_device late = est;
    late.cert_serial = (char *)"0D03";
    assert_rc(store_device_put_if(f->s, &late, &seen_v, "est", "inventory", "late"), KL_EPOLICY);
    assert_msg_has("device HW-R1: certificate 0D03 is revoked now, not valid: not provisioned");
    late.state = (char *)"failed"; /* any other state may name it */
    assert_rc(store_device_put_if(f->s, &late, &seen_v, "est", "inventory", "late"), KL_OK);
    assert_int_equal(audit_count(f->s, "inventory", NULL), 4);
    /* a row naming a certificate this store does not hold compares by its serial alone */
    store_device forged = {.device_id = (char *)"HW-R2", .cert_serial = (char *)"7E57"};
    assert_rc(store_device_put(b, &forged), KL_OK);
    store_device_seen seen_f = {"7E57", NULL};
    forged.state = (char *)"failed";
    assert_rc(store_device_put_if(f->s, &forged, &seen_f, NULL, NULL, NULL), KL_OK);
    assert_rc(store_device_put_if(f->s, &forged, &seen_a, NULL, NULL, NULL), KL_EEXIST);
    assert_msg_has("(it names certificate 7E57, not in the store, now)");
    assert_rc(store_device_put_if(f->s, NULL, NULL, NULL, NULL, NULL), KL_EUSAGE);
    store_close(b);
}

static void test_cas(void **state)
{
    fx *f = *state;
    store_ca ca, g;
    uint8_t *der = NULL;
    size_t len = 0;
    assert_true(make_cert("01", "Root", &der, &len));
    memset(&ca, 0, sizeof ca);
    ca.label = (char *)"root";
    ca.template_name = (char *)"root-ca";
    ca.key_type = (char *)"ec-p384";
    ca.der = der;
    ca.der_len = len;
    assert_rc(store_ca_put(f->s, &ca), KL_OK);
    assert_rc(store_ca_put(f->s, &ca), KL_EEXIST);
    assert_msg_has("root");

    ca.label = (char *)"field-ca";
    ca.parent = (char *)"nope";
    assert_rc(store_ca_put(f->s, &ca), KL_ENOTFOUND);
    ca.parent = (char *)"root";
    assert_rc(store_ca_put(f->s, &ca), KL_OK);

    assert_rc(store_ca_get(f->s, "root", &g), KL_OK);
    assert_string_equal(g.status, "active");
    assert_null(g.parent);
    assert_string_equal(g.key_type, "ec-p384");
    assert_memory_equal(g.der, der, len);
    store_ca_free(&g);
    assert_rc(store_ca_get(f->s, "missing", &g), KL_ENOTFOUND);

    store_ca *v = NULL;
    size_t n = 0;
    assert_rc(store_ca_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].label, "root");
    assert_string_equal(v[1].parent, "root");
    store_ca_list_free(v, n);
    OPENSSL_free(der);

    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 2); /* failed puts appended nothing */
    assert_string_equal(a[1].action, "ca-create");
    assert_true(prefix_is(a[1].detail,
                          "label=field-ca parent=root template=root-ca key=ec-p384 der-sha256="));
    store_audit_list_free(a, na);

    /* a renewed certificate for the same record (delegated OCSP signers) */
    uint8_t *der2 = NULL;
    size_t len2 = 0;
    assert_true(make_cert("02", "Field", &der2, &len2));
    assert_rc(store_ca_recert(f->s, "missing", der2, len2, "test", "x"), KL_ENOTFOUND);
    assert_rc(store_ca_recert(f->s, "field-ca", der2, len2, "test", "label=field-ca renewed"),
              KL_OK);
    assert_rc(store_ca_get(f->s, "field-ca", &g), KL_OK);
    assert_int_equal(g.der_len, len2);
    assert_memory_equal(g.der, der2, len2);
    assert_string_equal(g.parent, "root"); /* the rest of the record stays */
    store_ca_free(&g);
    OPENSSL_free(der2);
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 3); /* the unknown label appended nothing */
    assert_string_equal(a[2].action, "ca-recert");
    assert_string_equal(a[2].actor, "test");
    store_audit_list_free(a, na);
    int64_t count = 0;
    assert_rc(store_audit_verify(f->s, &count), KL_OK);
}

/* store_ca_status_set (ca retire): compare and set with its audit entry, in one transaction;
 * a record that is not in the expected status, or unknown, changes nothing and logs nothing. */
static void test_ca_status(void **state)
{
    fx *f = *state;
    store_ca ca, g;
    uint8_t *der = NULL;
    size_t len = 0;
    assert_true(make_cert("05", "Retiring", &der, &len));
    memset(&ca, 0, sizeof ca);
    ca.label = (char *)"old";
    ca.template_name = (char *)"root";
    ca.key_type = (char *)"ec-p256";
    ca.der = der;
    ca.der_len = len;
    assert_rc(store_ca_put(f->s, &ca), KL_OK);
    OPENSSL_free(der);
    assert_rc(store_ca_status_set(f->s, "missing", "active", "retired", "t", "ca-retire", "x"),
              KL_EPOLICY);
    assert_rc(store_ca_status_set(f->s, "old", "rollover", "retired", "t", "ca-retire", "x"),
              KL_EPOLICY);
    assert_rc(
        store_ca_status_set(f->s, "old", "active", "retired", "officer", "ca-retire", "label=old"),
        KL_OK);
    assert_rc(store_ca_get(f->s, "old", &g), KL_OK);
    assert_string_equal(g.status, "retired");
    store_ca_free(&g);
    /* the second run finds it retired already */
    assert_rc(store_ca_status_set(f->s, "old", "active", "retired", "t", "ca-retire", "x"),
              KL_EPOLICY);
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 2); /* ca-create, one ca-retire */
    assert_string_equal(a[1].action, "ca-retire");
    assert_string_equal(a[1].actor, "officer");
    store_audit_list_free(a, na);
    int64_t count = 0;
    assert_rc(store_audit_verify(f->s, &count), KL_OK);
}

/* Several CAs and a closing audit entry in one transaction (ca rotate): all or nothing. */
static void test_ca_put_all(void **state)
{
    fx *f = *state;
    uint8_t *der = NULL;
    size_t len = 0;
    assert_true(make_cert("01", "Root", &der, &len));
    store_ca v[3];
    memset(v, 0, sizeof v);
    for (int i = 0; i < 3; i++) {
        v[i].template_name = (char *)"root-ca";
        v[i].key_type = (char *)"ec-p384";
        v[i].der = der;
        v[i].der_len = len;
    }
    v[0].label = (char *)"root2";
    v[1].label = (char *)"root2.newwithold";
    v[1].parent = (char *)"root1"; /* not in the store: the whole call fails */
    v[1].status = (char *)"rollover";
    assert_rc(store_ca_put_all(f->s, v, 2, "officer", "ca-rotate", "old=root1 new=root2"),
              KL_ENOTFOUND);
    store_ca g;
    assert_rc(store_ca_get(f->s, "root2", &g), KL_ENOTFOUND); /* rolled back with the rest */
    int64_t na = -1;
    assert_rc(store_audit_verify(f->s, &na), KL_OK);
    assert_int_equal(na, 0);

    v[0].label = (char *)"root1";
    assert_rc(store_ca_put(f->s, &v[0]), KL_OK);
    v[0].label = (char *)"root2";
    v[2].label = (char *)"root1"; /* clashes after two good rows */
    assert_rc(store_ca_put_all(f->s, v, 3, "officer", "ca-rotate", "x"), KL_EEXIST);
    assert_rc(store_ca_get(f->s, "root2.newwithold", &g), KL_ENOTFOUND);
    v[2].label = (char *)"root1.oldwithnew";
    v[2].parent = (char *)"root2";
    v[2].status = (char *)"rollover";
    assert_rc(store_ca_put_all(f->s, v, 3, "officer", "ca-rotate", "old=root1 new=root2"), KL_OK);
    assert_rc(store_ca_get(f->s, "root1.oldwithnew", &g), KL_OK);
    assert_string_equal(g.status, "rollover");
    assert_string_equal(g.parent, "root2");
    store_ca_free(&g);
    store_audit *a = NULL;
    size_t n = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &n), KL_OK);
    assert_int_equal(n, 5); /* root1; root2 and its two rollovers; ca-rotate last */
    assert_string_equal(a[4].action, "ca-rotate");
    assert_string_equal(a[4].actor, "officer");
    assert_string_equal(a[4].detail, "old=root1 new=root2");
    store_audit_list_free(a, n);
    OPENSSL_free(der);
}

static void test_audit_append_verify(void **state)
{
    fx *f = *state;
    int64_t n = -1, seq = -1;
    char head[65];
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 0);
    assert_rc(store_audit_head(f->s, &seq, head), KL_OK);
    assert_int_equal(seq, 0);
    assert_string_equal(head, "0000000000000000000000000000000000000000000000000000000000000000");

    for (int i = 0; i < 10; i++) {
        char d[32];
        snprintf(d, sizeof d, "entry %d\n|with|odd\tbytes", i);
        assert_rc(store_audit_append(f->s, "alice", "note", d), KL_OK);
    }
    assert_rc(store_audit_append(f->s, NULL, "note", NULL), KL_OK);
    assert_rc(store_audit_append(f->s, "x", "", "y"), KL_EUSAGE);
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 11);

    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 0, &a, &na), KL_OK);
    assert_int_equal(na, 11);
    assert_string_equal(a[0].prev_hash,
                        "0000000000000000000000000000000000000000000000000000000000000000");
    for (size_t i = 0; i < na; i++) {
        char h[65];
        assert_int_equal(a[i].seq, (int64_t)i + 1);
        if (i > 0) {
            assert_string_equal(a[i].prev_hash, a[i - 1].hash);
        }
        assert_rc(store_audit_entry_hash(a[i].seq, a[i].ts, a[i].actor, a[i].action, a[i].detail,
                                         a[i].prev_hash, h),
                  KL_OK);
        assert_string_equal(h, a[i].hash);
    }
    assert_string_equal(a[10].actor, "keyline");
    assert_string_equal(a[10].detail, "");
    assert_rc(store_audit_head(f->s, &seq, head), KL_OK);
    assert_int_equal(seq, 11);
    assert_string_equal(head, a[10].hash);
    store_audit_list_free(a, na);

    /* The triggers refuse casual edits. */
    assert_true(raw_refused(f->path, "UPDATE audit SET detail='x' WHERE seq=1"));
    assert_true(raw_refused(f->path, "DELETE FROM audit WHERE seq=1"));
}

static void fill_audit(fx *f, int n)
{
    for (int i = 0; i < n; i++) {
        char d[32];
        snprintf(d, sizeof d, "event %d", i + 1);
        assert_rc(store_audit_append(f->s, "alice", "note", d), KL_OK);
    }
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, n);
    store_close(f->s);
    f->s = NULL;
}

static void verify_fails(fx *f, const char *msg)
{
    int64_t c = 0;
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_rc(store_audit_verify(f->s, &c), KL_EPOLICY);
    assert_msg_has(msg);
}

/* `entries` audit entries, then `sql` run on the file: verify must fail with `msg`. */
static void tamper_expect(fx *f, int entries, const char *sql, const char *msg)
{
    fill_audit(f, entries);
    raw_sql(f->path, sql);
    verify_fails(f, msg);
}

/* Audit entry `seq`, read through a handle of its own. Free with store_audit_free. */
static void audit_entry_read(const char *path, int64_t seq, store_audit *out)
{
    store *s = NULL;
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_open(&s, path), KL_OK);
    assert_rc(store_audit_list(s, seq, &a, &na), KL_OK);
    *out = a[0];
    memset(&a[0], 0, sizeof a[0]); /* moved to *out */
    store_audit_list_free(a, na);
    store_close(s);
}

static void test_tamper_edit(void **state)
{
    tamper_expect(*state, 10,
                  "DROP TRIGGER audit_no_update; UPDATE audit SET detail='harmless' WHERE seq=7",
                  "audit entry 7: hash mismatch (entry edited)");
}

static void test_tamper_edit_rehash(void **state)
{
    fx *f = *state;
    fill_audit(f, 10);
    /* A smarter attacker recomputes the edited entry's own hash: the next link breaks. */
    store_audit a;
    char h[65];
    audit_entry_read(f->path, 4, &a);
    assert_rc(store_audit_entry_hash(4, a.ts, a.actor, a.action, "forged", a.prev_hash, h), KL_OK);
    store_audit_free(&a);
    char sql[256];
    snprintf(
        sql, sizeof sql,
        "DROP TRIGGER audit_no_update; UPDATE audit SET detail='forged', hash='%s' WHERE seq=4", h);
    raw_sql(f->path, sql);
    verify_fails(f, "audit entry 5: previous-hash link broken (entry 4 edited");
}

static void test_tamper_delete_middle(void **state)
{
    tamper_expect(*state, 10, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=7",
                  "audit entry 7 missing (chain broken after 6)");
}

static void test_tamper_delete_first(void **state)
{
    tamper_expect(*state, 3, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=1",
                  "audit entry 1 missing (chain broken after 0)");
}

static void test_tamper_delete_last(void **state)
{
    fx *f = *state;
    tamper_expect(f, 10, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=10",
                  "audit entry 10 missing (chain broken after 9)");
    /* A store that cannot verify refuses to extend the chain silently? It still appends after the
     * recorded head, so the gap stays visible. */
    assert_rc(store_audit_append(f->s, "alice", "note", "after"), KL_OK);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_EPOLICY);
    assert_msg_has("audit entry 10 missing (chain broken after 9)");
}

static void test_tamper_truncate_all(void **state)
{
    tamper_expect(*state, 5, "DROP TRIGGER audit_no_delete; DELETE FROM audit",
                  "audit entry 1 missing (chain broken after 0)");
}

static void test_tamper_append_outside(void **state)
{
    fx *f = *state;
    fill_audit(f, 3);
    /* A well-formed entry 4 written without updating the head. */
    store_audit a;
    char h[65];
    audit_entry_read(f->path, 3, &a);
    assert_rc(store_audit_entry_hash(4, 1700000000, "mallory", "note", "x", a.hash, h), KL_OK);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO audit VALUES (4, 1700000000, 'mallory', 'note', 'x', '%s', '%s')", a.hash,
             h);
    store_audit_free(&a);
    raw_sql(f->path, sql);
    verify_fails(f, "audit entry 4: not recorded in the audit head");
}

/* --- concurrency --- */

#define CHILDREN 4
#define PER_CHILD 200

static int child_main(const char *path, int id, int out)
{
    store *s = NULL;
    int64_t last = 0;
    if (store_open(&s, path) != KL_OK) {
        fprintf(stderr, "child %d: open: %s\n", id, kl_errmsg());
        return 1;
    }
    for (int i = 0; i < PER_CHILD; i++) {
        char serial[41];
        char detail[64];
        kl_rc rc;
        snprintf(detail, sizeof detail, "child=%d i=%d", id, i);
        do {
            random_serial(serial);
            rc = issue_as(s, serial, id % 2 ? "field-ca" : "factory-ca", STORE_ST_VALID, "child",
                          detail);
        } while (rc == KL_EEXIST);
        if (rc == KL_OK) {
            rc = store_audit_append(s, "child", "note", detail);
        }
        if (rc == KL_OK && i % 50 == 0) {
            int64_t v;
            rc = store_crl_number_next(s, "field-ca", &v);
            if (rc == KL_OK && (v <= last || write(out, &v, sizeof v) != sizeof v)) {
                fprintf(stderr, "child %d: CRL number %lld after %lld\n", id, (long long)v,
                        (long long)last);
                return 1;
            }
            last = v;
        }
        if (rc != KL_OK) {
            fprintf(stderr, "child %d: %s\n", id, kl_errmsg());
            return 1;
        }
    }
    store_close(s);
    return 0;
}

static void test_concurrent_processes(void **state)
{
    fx *f = *state;
    pid_t pids[CHILDREN];
    int nums[2];
    assert_int_equal(pipe(nums), 0);
    /* The parent's handle must not be used in the children: they open their own. */
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(nums[0]);
            _exit(child_main(f->path, i, nums[1]));
        }
    }
    close(nums[1]);
    /* CRL numbers: each child's strictly increasing (checked there), none given twice */
    int64_t got[CHILDREN * (PER_CHILD / 50)], v = 0;
    size_t ng = 0;
    while (ng < sizeof got / sizeof got[0] && read(nums[0], &v, sizeof v) == sizeof v) {
        for (size_t k = 0; k < ng; k++) {
            assert_true(got[k] != v);
        }
        got[ng++] = v;
    }
    close(nums[0]);
    assert_int_equal(ng, sizeof got / sizeof got[0]);
    for (int i = 0; i < CHILDREN; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    int n = 0;
    assert_rc(store_cert_list(f->s, STORE_ST_VALID, NULL, count_cb, &n), KL_OK);
    assert_int_equal(n, CHILDREN * PER_CHILD);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, 2 * CHILDREN * PER_CHILD);
    assert_rc(store_crl_number_next(f->s, "field-ca", &v), KL_OK);
    assert_int_equal(v, CHILDREN * (PER_CHILD / 50) + 1);
}

/* A writer killed (SIGKILL) in the middle of a stream of group-committed writes: every write it
 * was told was committed is in the store, and the audit chain verifies. (SQLite: the driver
 * buffers a commit's WAL writes and writes them out at the commit's sync, never later.) */
#define KILLED_THREADS 4

typedef struct {
    const char *path;
    store *s;
    int out;
} killed_arg;

static void *killed_writer(void *p)
{
    killed_arg *a = p;
    for (;;) {
        char serial[41];
        random_serial(serial);
        kl_rc rc = issue_as(a->s, serial, "field-ca", STORE_ST_VALID, "killed", "x");
        if (rc == KL_OK && write(a->out, "c", 1) != 1) {
            _exit(3);
        }
        if (rc != KL_OK && rc != KL_EEXIST) {
            _exit(2);
        }
    }
    return NULL;
}

static void test_killed_writer_keeps_commits(void **state)
{
    fx *f = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        killed_arg a = {f->path, NULL, p[1]};
        if (store_open(&a.s, f->path) != KL_OK) {
            _exit(1);
        }
        pthread_t t[KILLED_THREADS];
        for (int i = 0; i < KILLED_THREADS; i++) {
            pthread_create(&t[i], NULL, killed_writer, &a);
        }
        pause();
        _exit(4);
    }
    close(p[1]);
    int told = 0;
    char c;
    while (told < 300 && read(p[0], &c, 1) == 1) {
        told++;
    }
    kill(pid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    while (read(p[0], &c, 1) == 1) {
        told++; /* reported before it died */
    }
    close(p[0]);
    assert_true(told >= 300);
    store_close(f->s); /* a fresh handle, as after a restart */
    f->s = NULL;
    assert_rc(store_open(&f->s, f->path), KL_OK);
    int n = 0;
    assert_rc(store_cert_list(f->s, STORE_ST_VALID, NULL, count_cb, &n), KL_OK);
    assert_true(n >= told);
    int64_t entries = 0;
    assert_rc(store_audit_verify(f->s, &entries), KL_OK);
    assert_true(entries >= told);
}

static void test_fork_handle_refused(void **state)
{
    fx *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kl_rc rc = store_audit_append(f->s, "child", "note", "x");
        store_close(f->s); /* leaves the parent's connection alone */
        _exit(rc == KL_EUSAGE ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, 0);
}

#define THREADS 4
#define PER_THREAD 100

static void *thread_main(void *arg)
{
    store *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char serial[41];
        kl_rc rc;
        do {
            random_serial(serial);
            rc = issue(s, serial, "field-ca", STORE_ST_PENDING);
        } while (rc == KL_EEXIST);
        if (rc == KL_OK) {
            rc = store_cert_activate(s, serial, "thread");
        }
        if (rc != KL_OK) {
            fprintf(stderr, "thread: %s\n", kl_errmsg());
            return (void *)1;
        }
    }
    return NULL;
}

static void test_threads_share_handle(void **state)
{
    fx *f = *state;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, f->s), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
    int n = 0;
    assert_rc(store_cert_list(f->s, STORE_ST_VALID, "field-ca", count_cb, &n), KL_OK);
    assert_int_equal(n, THREADS * PER_THREAD);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, 2 * THREADS * PER_THREAD);
}

/* Group commit: many threads write at once through one handle; their operations share
 * transactions (each in its own savepoint). Every caller must get its own result and its own
 * message, a failing operation must not disturb the others in its batch (nor leave half of
 * itself behind), and the audit chain must verify. */
#define GC_THREADS 16
#define GC_ROUNDS 25

typedef struct {
    store *s;
    const char *taken; /* a serial recorded before the threads start */
    pthread_barrier_t *bar;
    char *huge; /* an audit detail over the 1 MiB field limit */
    int id;
} gc_arg;

#define GC_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "group commit thread %d round %d: ", a->id, r);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (last message: %s)\n", kl_errmsg());                                 \
            return (void *)1;                                                                      \
        }                                                                                          \
    } while (0)

static void *gc_thread(void *arg)
{
    gc_arg *a = arg;
    pthread_barrier_wait(a->bar);
    for (int r = 0; r < GC_ROUNDS; r++) {
        char serial[41], other[41], subj[64];
        uint8_t *der = NULL;
        size_t len = 0;
        kl_rc rc;
        random_serial(serial);
        random_serial(other);
        snprintf(subj, sizeof subj, "CN=t%d-r%d", a->id, r);
        GC_CHECK(make_cert(serial, "device", &der, &len), "make_cert");

        store_cert rec = cert_row(serial, "field-ca", STORE_ST_VALID, subj);

        /* fails after its INSERT ran (audit detail too long): the savepoint must undo it */
        if (r % 3 == 0) {
            rc = store_cert_insert(a->s, &rec, der, len, "gc", a->huge);
            GC_CHECK(rc == KL_EINPUT, "oversized insert: %d", rc);
            store_cert c;
            rc = store_cert_get(a->s, serial, &c);
            GC_CHECK(rc == KL_ENOTFOUND, "failed insert left a partial row: %d", rc);
        }

        rec.not_before += r;
        rec.not_after += r;
        rc = store_cert_insert(a->s, &rec, der, len, "gc", NULL);
        GC_CHECK(rc == KL_OK, "insert: %d", rc);

        /* a UNIQUE clash in the same batches as other threads' good operations */
        store_cert dup = cert_row(a->taken, "field-ca", STORE_ST_VALID, subj);
        rc = store_cert_insert(a->s, &dup, der, len, "gc", NULL);
        OPENSSL_free(der);
        GC_CHECK(rc == KL_EEXIST && strstr(kl_errmsg(), a->taken), "duplicate insert: %d", rc);

        /* errors name this caller's serial, not another thread's */
        rc = store_cert_activate(a->s, other, "gc");
        GC_CHECK(rc == KL_ENOTFOUND && strstr(kl_errmsg(), other), "unknown activate: %d", rc);

        rc = store_audit_append(a->s, "gc", "note", serial);
        GC_CHECK(rc == KL_OK, "audit append: %d", rc);

        store_cert c;
        GC_CHECK(store_cert_get(a->s, serial, &c) == KL_OK, "get");
        int ok = strcmp(c.status, STORE_ST_VALID) == 0 && strcmp(c.subject, subj) == 0 &&
                 c.not_before == 1700000000 + r && c.not_after == 1800000000 + r && c.der;
        store_cert_free(&c);
        GC_CHECK(ok, "recorded row differs from what was inserted");
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    fx *f = *state;
    pthread_t t[GC_THREADS];
    gc_arg args[GC_THREADS];
    pthread_barrier_t bar;
    char taken[41];
    size_t hl = (1u << 20) + 1;
    char *huge = malloc(hl + 1);
    assert_non_null(huge);
    memset(huge, 'x', hl);
    huge[hl] = 0;
    random_serial(taken);
    assert_rc(issue(f->s, taken, "other-ca", STORE_ST_VALID), KL_OK);
    uint64_t tx0 = 0, ops0 = 0, tx1 = 0, ops1 = 0;
    assert_rc(store_write_stats(f->s, &tx0, &ops0), KL_OK);

    pthread_barrier_init(&bar, NULL, GC_THREADS);
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (gc_arg){.s = f->s, .taken = taken, .bar = &bar, .huge = huge, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, gc_thread, &args[i]), 0);
    }
    int bad = 0;
    for (int i = 0; i < GC_THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        bad |= ret != NULL;
    }
    pthread_barrier_destroy(&bar);
    free(huge);
    assert_false(bad);

    int n = 0;
    assert_rc(store_cert_list(f->s, STORE_ST_VALID, "field-ca", count_cb, &n), KL_OK);
    assert_int_equal(n, GC_THREADS * GC_ROUNDS);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, 1 + 2 * GC_THREADS * GC_ROUNDS); /* taken; insert + note per round */

    /* the operations did share transactions: fewer commits than operations */
    assert_rc(store_write_stats(f->s, &tx1, &ops1), KL_OK);
    fprintf(stderr, "group commit: %llu operations in %llu transactions\n",
            (unsigned long long)(ops1 - ops0), (unsigned long long)(tx1 - tx0));
    assert_true(ops1 - ops0 > tx1 - tx0);
    /* failed operations are counted in their batch too; every op ran exactly once */
    uint64_t per_round = 4; /* insert, duplicate insert, unknown activate, note */
    uint64_t expect = GC_THREADS * (GC_ROUNDS * per_round + (GC_ROUNDS + 2) / 3);
    assert_int_equal(ops1 - ops0, expect);
}

/* A failing operation run alone: its own message, nothing written, the handle still usable. */
static void test_group_commit_single_failure(void **state)
{
    fx *f = *state;
    char serial[41];
    random_serial(serial);
    assert_rc(issue(f->s, serial, "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, serial, "field-ca", STORE_ST_VALID), KL_EEXIST);
    assert_non_null(strstr(kl_errmsg(), serial));
    assert_rc(store_cert_activate(f->s, serial, "gc"), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), serial));
    char other[41];
    random_serial(other);
    assert_rc(issue(f->s, other, "field-ca", STORE_ST_REVOKED), KL_EUSAGE);
    assert_rc(store_cert_get(f->s, other, &(store_cert){0}), KL_ENOTFOUND);
    int64_t c = 0;
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
    assert_int_equal(c, 1);
}

/* --- device claims --- */

static store_claim claim_me(const char *instance, const char *where)
{
    static char host[256];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = 0;
    return (store_claim){.instance = instance,
                         .host = host,
                         .pid = (long)getpid(),
                         .where = where,
                         .expires = time(NULL) + 600};
}

/* A pid that existed and is gone now (a reaped child). */
static long dead_pid(void)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(p, &st, 0), p);
    return (long)p;
}

static void test_claims(void **state)
{
    fx *f = *state;
    char holder[256];
    store_claim a1 = claim_me("aaaa", "fixture1");
    store_claim a2 = claim_me("aaaa", "fixture2");

    /* free -> ours; again by the same fixture: renewed */
    assert_rc(store_device_claim(f->s, "SN-1", &a1, holder, sizeof holder), KL_OK);
    a1.expires += 100;
    assert_rc(store_device_claim(f->s, "SN-1", &a1, holder, sizeof holder), KL_OK);
    /* another fixture of the same process: a cloned serial */
    assert_rc(store_device_claim(f->s, "SN-1", &a2, holder, sizeof holder), KL_EEXIST);
    char want[64];
    snprintf(want, sizeof want, "fixture1 (pid %ld)", (long)getpid());
    assert_string_equal(holder, want);
    assert_msg_has("SN-1");
    /* another live process on this host (our parent, ctest) */
    store_claim other = claim_me("bbbb", "fixture9");
    other.pid = (long)getppid();
    assert_rc(store_device_claim(f->s, "SN-2", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-2", &a1, holder, sizeof holder), KL_EEXIST);
    /* ... until its lease ends */
    other.expires = time(NULL) - 1;
    assert_rc(store_device_claim(f->s, "SN-2", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-2", &a1, holder, sizeof holder), KL_OK);
    /* a process of this host that died, lease still running: taken over */
    other = claim_me("cccc", "fixture3");
    other.pid = dead_pid();
    assert_rc(store_device_claim(f->s, "SN-3", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-3", &a1, holder, sizeof holder), KL_OK);
    /* an earlier process that had our pid (restart in a container): taken over */
    other = claim_me("dddd", "fixture4");
    assert_rc(store_device_claim(f->s, "SN-4", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-4", &a2, holder, sizeof holder), KL_OK);
    /* another host: only the lease counts, whatever its pid */
    other = claim_me("eeee", "fixture5");
    other.host = "line2";
    other.pid = dead_pid();
    assert_rc(store_device_claim(f->s, "SN-5", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-5", &a1, holder, sizeof holder), KL_EEXIST);
    snprintf(want, sizeof want, "fixture5 on host line2 (pid %ld)", other.pid);
    assert_string_equal(holder, want);
    other.expires = time(NULL) - 1;
    assert_rc(store_device_claim(f->s, "SN-5", &other, holder, sizeof holder), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-5", &a1, holder, sizeof holder), KL_OK);

    /* release: only by the holder; afterwards free for anyone */
    assert_rc(store_device_unclaim(f->s, "SN-1", &a2), KL_OK); /* not a2's: no change */
    assert_rc(store_device_claim(f->s, "SN-1", &a2, holder, sizeof holder), KL_EEXIST);
    assert_rc(store_device_unclaim(f->s, "SN-1", &a1), KL_OK);
    assert_rc(store_device_claim(f->s, "SN-1", &a2, holder, sizeof holder), KL_OK);
    assert_rc(store_device_unclaim(f->s, "SN-unknown", &a2), KL_OK);

    /* bad arguments */
    assert_rc(store_device_claim(f->s, "", &a1, holder, sizeof holder), KL_EUSAGE);
    store_claim bad = a1;
    bad.instance = "";
    assert_rc(store_device_claim(f->s, "SN-6", &bad, holder, sizeof holder), KL_EUSAGE);
    bad = a1;
    bad.where = NULL;
    assert_rc(store_device_unclaim(f->s, "SN-6", &bad), KL_EUSAGE);

    /* claims are not CA actions: no audit entries */
    int64_t n = -1;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 0);
}

/* Processes racing for one device: exactly one wins while all are alive. */
#define CLAIM_PROCS 6
static void test_claims_processes(void **state)
{
    fx *f = *state;
    int res[2], hold[2];
    assert_int_equal(pipe(res), 0);
    assert_int_equal(pipe(hold), 0);
    pid_t pids[CLAIM_PROCS];
    for (int i = 0; i < CLAIM_PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(res[0]);
            close(hold[1]);
            store *s = NULL;
            char inst[16], where[16], holder[256], out = 'x';
            snprintf(inst, sizeof inst, "proc%d", i);
            snprintf(where, sizeof where, "fixture%d", i);
            store_claim me = claim_me(inst, where);
            me.pid = (long)getpid();
            if (store_open(&s, f->path) == KL_OK) {
                kl_rc rc = store_device_claim(s, "SN-RACE", &me, holder, sizeof holder);
                out = rc == KL_OK ? 'W' : rc == KL_EEXIST ? 'L' : 'E';
            }
            if (write(res[1], &out, 1) != 1) {
                _exit(1);
            }
            char c;
            while (read(hold[0], &c, 1) > 0) { /* stay alive until the parent has counted */
            }
            store_close(s);
            _exit(0);
        }
    }
    close(res[1]);
    close(hold[0]);
    int won = 0, lost = 0;
    for (int i = 0; i < CLAIM_PROCS; i++) {
        char c = 0;
        assert_int_equal(read(res[0], &c, 1), 1);
        won += c == 'W';
        lost += c == 'L';
    }
    close(hold[1]);
    for (int i = 0; i < CLAIM_PROCS; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
    }
    close(res[0]);
    assert_int_equal(won, 1);
    assert_int_equal(lost, CLAIM_PROCS - 1);
    /* all exited: the winner's claim is stale now and ours for the taking */
    char holder[256];
    store_claim me = claim_me("parent", "fixture0");
    assert_rc(store_device_claim(f->s, "SN-RACE", &me, holder, sizeof holder), KL_OK);
}

/* PRAGMA user_version of the store file. */
static int file_user_version(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A version-1 store file (before claims, requests and crls) gains every table when opened. */
static void test_claims_migration(void **state)
{
    fx *f = *state;
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "DROP TABLE claims; DROP TRIGGER requests_no_delete; DROP TABLE requests;"
                     " DROP TABLE crls; " DROP_V6 " PRAGMA user_version=1");
    assert_rc(store_open(&f->s, f->path), KL_OK);
    char holder[256];
    store_claim me = claim_me("aaaa", "fixture1");
    assert_rc(store_device_claim(f->s, "SN-1", &me, holder, sizeof holder), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    store_request *v = NULL;
    size_t n = 1;
    assert_rc(store_request_list(f->s, NULL, &v, &n), KL_OK);
    assert_int_equal(n, 0);
    store_crl c;
    assert_rc(store_crl_get(f->s, "root", &c), KL_ENOTFOUND);
}

static store_request rq_of(const char *label, const char *hash, const uint8_t *csr, size_t len)
{
    return (store_request){.label = (char *)label,
                           .csr_hash = (char *)hash,
                           .csr = (uint8_t *)csr,
                           .csr_len = len,
                           .issuer = (char *)"field-ca",
                           .template_name = (char *)"device-ldevid",
                           .requester = (char *)"est:basic:bootstrap",
                           .subject = (char *)"CN=dev-7"};
}

/* Held enrollment requests: submit is idempotent per (label, CSR); approval comes with the
 * certificate in one transaction; reject; every decision once. */
/* Leaves garbage in the stack below the caller, where the next call's locals will be: a reject
 * of an unknown request once freed its never-filled store_request (found by cppcheck). */
static __attribute__((noinline)) void stack_dirty(void)
{
    volatile unsigned char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = 0xa5;
    }
}

static void test_requests(void **state)
{
    fx *f = *state;
    static const char h1[] = "1111111111111111111111111111111111111111111111111111111111111111";
    static const char h2[] = "2222222222222222222222222222222222222222222222222222222222222222";
    const uint8_t csr[] = {0x30, 0x03, 0x02, 0x01, 0x07};
    store_request a, b;
    store_request r = rq_of("", h1, csr, sizeof csr);
    assert_rc(store_request_submit(f->s, &r, &a), KL_OK);
    assert_true(a.id > 0);
    assert_string_equal(a.status, STORE_RQ_PENDING);
    assert_int_equal(a.csr_len, sizeof csr);
    assert_null(a.device_id);
    /* the same CSR again (the client's retry): the same request, no new audit entry */
    assert_rc(store_request_submit(f->s, &r, &b), KL_OK);
    assert_int_equal(b.id, a.id);
    store_request_free(&b);
    /* the same CSR under another label: another request */
    r.label = (char *)"fleet";
    assert_rc(store_request_submit(f->s, &r, &b), KL_OK);
    assert_true(b.id != a.id);
    int64_t second = b.id;
    store_request_free(&b);
    r = rq_of("", h2, csr, sizeof csr);
    r.csr_hash = (char *)"abc"; /* not a SHA-256 hex */
    assert_rc(store_request_submit(f->s, &r, &b), KL_EUSAGE);

    /* approve: the certificate's insert carries the request id */
    uint8_t *der = NULL;
    size_t len = 0;
    assert_true(make_cert("7E57", "dev-7", &der, &len));
    store_cert c = cert_row("7E57", "field-ca", STORE_ST_VALID, "CN=dev-7");
    c.request_id = a.id;
    assert_rc(store_cert_insert(f->s, &c, der, len, "officer", NULL), KL_OK);
    assert_rc(store_request_get(f->s, a.id, &b), KL_OK);
    assert_string_equal(b.status, STORE_RQ_APPROVED);
    assert_string_equal(b.cert_serial, "7E57");
    assert_true(b.decided > 0);
    store_request_free(&b);
    /* a second approval (another officer at the same time) records nothing */
    c = cert_row("7E58", "field-ca", STORE_ST_VALID, "CN=dev-7");
    c.request_id = a.id;
    assert_rc(store_cert_insert(f->s, &c, der, len, "officer2", NULL), KL_EPOLICY);
    assert_rc(store_cert_get(f->s, "7E58", &(store_cert){0}), KL_ENOTFOUND);
    assert_rc(store_request_reject(f->s, a.id, "too late", "officer2"), KL_EPOLICY);
    OPENSSL_free(der);

    /* reject */
    assert_rc(store_request_reject(f->s, second, "", "officer"), KL_EUSAGE);
    assert_rc(store_request_reject(f->s, second, "unknown device", "officer"), KL_OK);
    assert_rc(store_request_reject(f->s, second, "again", "officer"), KL_EPOLICY);
    stack_dirty();
    assert_rc(store_request_reject(f->s, 999, "x", "officer"), KL_ENOTFOUND);
    assert_rc(store_request_get(f->s, 999, &b), KL_ENOTFOUND);

    store_request *v = NULL;
    size_t n = 0;
    assert_rc(store_request_list(f->s, NULL, &v, &n), KL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].status, STORE_RQ_REJECTED);
    assert_string_equal(v[1].reason, "unknown device");
    assert_string_equal(v[1].label, "fleet");
    store_request_list_free(v, n);
    int64_t cnt_p = -1, cnt_a = -1;
    assert_rc(store_request_count(f->s, STORE_RQ_PENDING, &cnt_p), KL_OK);
    assert_rc(store_request_count(f->s, STORE_RQ_APPROVED, &cnt_a), KL_OK);
    assert_int_equal(cnt_p, 0);
    assert_int_equal(cnt_a, 1);
    assert_rc(store_request_list(f->s, STORE_RQ_APPROVED, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].id, a.id);
    store_request_list_free(v, n);
    store_request_free(&a);

    /* audit: request x2, issue + approve, reject; the chain verifies */
    store_audit *au = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &au, &na), KL_OK);
    assert_int_equal(na, 5);
    assert_string_equal(au[0].action, "request");
    assert_string_equal(au[0].actor, "est:basic:bootstrap");
    assert_string_equal(au[3].action, "approve");
    assert_string_equal(au[4].action, "reject");
    store_audit_list_free(au, na);
    int64_t cnt = 0;
    assert_rc(store_audit_verify(f->s, &cnt), KL_OK);
    /* requests are never deleted */
    assert_true(raw_refused(f->path, "DELETE FROM requests"));
}

/* --- published CRLs --- */

#define CRL_T0 1700000000
#define CRL_DAY 86400

/* A CRL-sized byte string (the store does not parse it), distinct per `tag`. */
static uint8_t *crl_bytes(size_t len, uint8_t tag)
{
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(i * 31u + tag);
    }
    p[0] = 0x30;
    return p;
}

/* The audit log: how many entries have `action`; the chain must verify and *total (if given)
 * gets the number of entries. */
static size_t audit_count(store *s, const char *action, int64_t *total)
{
    store_audit *a = NULL;
    size_t na = 0, k = 0;
    int64_t c = -1;
    assert_rc(store_audit_list(s, 1, &a, &na), KL_OK);
    for (size_t i = 0; i < na; i++) {
        k += strcmp(a[i].action, action) == 0;
    }
    store_audit_list_free(a, na);
    assert_rc(store_audit_verify(s, &c), KL_OK);
    assert_int_equal(c, (int64_t)na);
    if (total) {
        *total = c;
    }
    return k;
}

/* Round trip; only a higher number replaces the row; every put is audited. */
static void test_crls(void **state)
{
    fx *f = *state;
    const size_t la = 3000, lb = 1234;
    uint8_t *da = crl_bytes(la, 1), *db = crl_bytes(lb, 2);
    store_crl c;

    assert_rc(store_crl_get(f->s, "root", &c), KL_ENOTFOUND);
    assert_msg_has("no CRL published for 'root'");

    time_t before = time(NULL);
    assert_rc(store_crl_put(f->s, "root", 5, CRL_T0, CRL_T0 + 30 * CRL_DAY, da, la, "officer",
                            "root crl 5"),
              KL_OK);
    time_t after = time(NULL);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    assert_string_equal(c.issuer, "root");
    assert_int_equal(c.number, 5);
    assert_int_equal(c.this_update, CRL_T0);
    assert_int_equal(c.next_update, CRL_T0 + 30 * CRL_DAY);
    assert_true(c.created >= before && c.created <= after);
    assert_int_equal(c.der_len, la);
    assert_memory_equal(c.der, da, la);
    store_crl_free(&c);
    assert_null(c.der);
    store_crl_free(NULL);

    /* an older CRL (signed concurrently, committed last) and an equal number: not an error,
     * the newer row stays */
    assert_rc(store_crl_put(f->s, "root", 3, CRL_T0 + CRL_DAY, CRL_T0 + 40 * CRL_DAY, db, lb,
                            "officer2", "root crl 3"),
              KL_OK);
    assert_rc(store_crl_put(f->s, "root", 5, CRL_T0 + CRL_DAY, CRL_T0 + 40 * CRL_DAY, db, lb,
                            "officer2", "root crl 5 again"),
              KL_OK);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    assert_int_equal(c.number, 5);
    assert_int_equal(c.this_update, CRL_T0);
    assert_int_equal(c.der_len, la);
    assert_memory_equal(c.der, da, la);
    store_crl_free(&c);

    /* a higher number replaces it */
    assert_rc(store_crl_put(f->s, "root", 7, CRL_T0 + 2 * CRL_DAY, CRL_T0 + 32 * CRL_DAY, db, lb,
                            "officer", "root crl 7"),
              KL_OK);
    /* another issuer is another row; NULL actor and detail get defaults */
    assert_rc(store_crl_put(f->s, "field-ca", 1, CRL_T0, CRL_T0 + CRL_DAY, da, 10, NULL, NULL),
              KL_OK);

    /* it survives a reopen */
    store_close(f->s);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    assert_int_equal(c.number, 7);
    assert_int_equal(c.this_update, CRL_T0 + 2 * CRL_DAY);
    assert_int_equal(c.next_update, CRL_T0 + 32 * CRL_DAY);
    assert_int_equal(c.der_len, lb);
    assert_memory_equal(c.der, db, lb);
    store_crl_free(&c);
    assert_rc(store_crl_get(f->s, "field-ca", &c), KL_OK);
    assert_int_equal(c.number, 1);
    assert_int_equal(c.der_len, 10);
    assert_memory_equal(c.der, da, 10);
    store_crl_free(&c);
    assert_rc(store_crl_get(f->s, "sub-ca", &c), KL_ENOTFOUND);
    assert_msg_has("no CRL published for 'sub-ca'");

    /* one `crl` entry per put, kept or not, with its actor and detail; the chain verifies */
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 5);
    static const char *const want[5][2] = {{"officer", "root crl 5"},
                                           {"officer2", "root crl 3"},
                                           {"officer2", "root crl 5 again"},
                                           {"officer", "root crl 7"},
                                           {"keyline", "issuer=field-ca number=1"}};
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(a[i].action, "crl");
        assert_string_equal(a[i].actor, want[i][0]);
        assert_string_equal(a[i].detail, want[i][1]);
    }
    store_audit_list_free(a, na);
    int64_t total = 0;
    assert_int_equal(audit_count(f->s, "crl", &total), 5);
    assert_int_equal(total, 5);
    free(da);
    free(db);
}

/* Bad arguments are refused and write nothing. */
static void test_crl_bad_args(void **state)
{
    fx *f = *state;
    uint8_t d[16] = {0x30, 0x0e};
    store_crl c;
    const time_t t0 = CRL_T0, t1 = CRL_T0 + CRL_DAY;

    assert_rc(store_crl_put(NULL, "root", 1, t0, t1, d, sizeof d, "o", NULL), KL_EUSAGE);
    assert_rc(store_crl_put(f->s, NULL, 1, t0, t1, d, sizeof d, "o", NULL), KL_EUSAGE);
    assert_rc(store_crl_put(f->s, "", 1, t0, t1, d, sizeof d, "o", NULL), KL_EUSAGE);
    assert_msg_has("without an issuer");
    assert_rc(store_crl_put(f->s, "root", 1, t0, t1, NULL, sizeof d, "o", NULL), KL_EUSAGE);
    assert_msg_has("no CRL");
    assert_rc(store_crl_put(f->s, "root", 1, t0, t1, d, 0, "o", NULL), KL_EUSAGE);
    /* refused on the length alone: the buffer is never read */
    assert_rc(store_crl_put(f->s, "root", 1, t0, t1, d, STORE_CRL_MAX + 1, "o", NULL), KL_EINPUT);
    assert_msg_has("bytes, more than the store keeps");
    assert_rc(store_crl_put(f->s, "root", -1, t0, t1, d, sizeof d, "o", NULL), KL_EINPUT);
    assert_msg_has("negative number");
    assert_rc(store_crl_put(f->s, "root", 1, t0, t0, d, sizeof d, "o", NULL), KL_EINPUT);
    assert_msg_has("nextUpdate");
    assert_rc(store_crl_put(f->s, "root", 1, t1, t0, d, sizeof d, "o", NULL), KL_EINPUT);
    assert_msg_has("is not after thisUpdate");
    assert_rc(store_crl_get(f->s, NULL, &c), KL_EUSAGE);
    assert_rc(store_crl_get(f->s, "", &c), KL_EUSAGE);
    assert_rc(store_crl_get(f->s, "root", NULL), KL_EUSAGE);
    assert_rc(store_crl_get(NULL, "root", &c), KL_EUSAGE);
    /* an oversized audit detail fails the put as a whole: no row either */
    char *huge = malloc((1u << 20) + 2);
    assert_non_null(huge);
    memset(huge, 'x', (1u << 20) + 1);
    huge[(1u << 20) + 1] = 0;
    assert_rc(store_crl_put(f->s, "root", 1, t0, t1, d, sizeof d, "o", huge), KL_EINPUT);
    free(huge);

    assert_rc(store_crl_get(f->s, "root", &c), KL_ENOTFOUND);
    int64_t total = -1;
    assert_int_equal(audit_count(f->s, "crl", &total), 0);
    assert_int_equal(total, 0);

    /* number 0 (RFC 5280: 0..MAX) is accepted */
    assert_rc(store_crl_put(f->s, "root", 0, t0, t1, d, sizeof d, "o", NULL), KL_OK);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    assert_int_equal(c.number, 0);
    store_crl_free(&c);
}

/* Rows of `table` (issuer = `issuer`), read directly. */
static int64_t raw_count(const char *path, const char *table, const char *issuer)
{
    char sql[200];
    int64_t n = -1;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE issuer = '%s'", table, issuer);
    if (g_pg) {
        PGconn *c = pg_connect(path);
        PGresult *r = PQexec(c, sql);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        PQfinish(c);
        return n;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The CRL of `issuer` reads back as `der` (len bytes), numbered `number`. */
static void crl_is(store *s, const char *issuer, int64_t number, const uint8_t *der, size_t len)
{
    store_crl c;
    assert_rc(store_crl_get(s, issuer, &c), KL_OK);
    assert_int_equal(c.number, number);
    assert_int_equal(c.der_len, len);
    assert_memory_equal(c.der, der, len);
    store_crl_free(&c);
}

/* A CRL above the chunk size (set small here: 1000 bytes) is stored in chunks and read back
 * whole, by store_crl_put and store_crl_commit alike; a small one stays one row; a failure
 * while the chunks are written leaves no row, no chunk and no CRL number taken. */
static void test_crl_chunks(void **state)
{
    fx *f = *state;
    const time_t t0 = CRL_T0, t1 = CRL_T0 + CRL_DAY;
    const size_t lbig = 4321, lsmall = 999;
    uint8_t *big = crl_bytes(lbig, 4), *big2 = crl_bytes(lbig + 1000, 5);
    uint8_t *small = crl_bytes(lsmall, 6);
    store_crl_chunk_set(1000);

    assert_rc(store_crl_put(f->s, "root", 1, t0, t1, big, lbig, "o", NULL), KL_OK);
    assert_int_equal(raw_count(f->path, "crl_chunks", "root"), 5);
    crl_is(f->s, "root", 1, big, lbig);
    /* an older CRL committed last touches neither the row nor its chunks */
    assert_rc(store_crl_put(f->s, "root", 0, t0, t1, big2, lbig + 1000, "o", NULL), KL_OK);
    crl_is(f->s, "root", 1, big, lbig);
    /* a small CRL replaces a chunked one: one row, the chunks gone */
    assert_rc(store_crl_put(f->s, "root", 2, t0, t1, small, lsmall, "o", NULL), KL_OK);
    assert_int_equal(raw_count(f->path, "crl_chunks", "root"), 0);
    crl_is(f->s, "root", 2, small, lsmall);

    /* a failure after the chunks are written (the audit entry refused: its detail too long):
     * nothing of the CRL, its number still free */
    store_crl crl = {.issuer = "sub",
                     .number = 1,
                     .this_update = t0,
                     .next_update = t1,
                     .der = big2,
                     .der_len = lbig + 1000};
    char *huge = malloc((1u << 20) + 2);
    assert_non_null(huge);
    memset(huge, 'x', (1u << 20) + 1);
    huge[(1u << 20) + 1] = 0;
    assert_rc(store_crl_commit(f->s, &crl, "o", huge, NULL), KL_EINPUT);
    assert_rc(store_crl_put(f->s, "sub", 1, t0, t1, big2, lbig + 1000, "o", huge), KL_EINPUT);
    free(huge);
    store_crl c;
    assert_rc(store_crl_get(f->s, "sub", &c), KL_ENOTFOUND);
    assert_int_equal(raw_count(f->path, "crls", "sub"), 0);
    assert_int_equal(raw_count(f->path, "crl_chunks", "sub"), 0);
    int64_t next = 0;
    assert_rc(store_crl_number_peek(f->s, "sub", &next), KL_OK);
    assert_int_equal(next, 1);
    assert_rc(store_crl_commit(f->s, &crl, "o", "issuer=sub number=1", NULL), KL_OK);
    assert_int_equal(raw_count(f->path, "crl_chunks", "sub"), 6);
    crl_is(f->s, "sub", 1, big2, lbig + 1000);
    crl_is(f->s, "root", 2, small, lsmall);

    store_crl_chunk_set(0);
    free(big);
    free(big2);
    free(small);
}

/* Reading a chunked CRL and committing one leave no statement stepped on either connection:
 * later reads see what was committed since (a stepped SELECT kept its snapshot past the
 * COMMIT, and with it every later read of the connection). */
static void test_crl_chunks_fresh_reads(void **state)
{
    fx *f = *state;
    uint8_t *big = crl_bytes(4321, 7);
    store_crl_chunk_set(1000);
    assert_rc(store_crl_put(f->s, "field-ca", 1, CRL_T0, CRL_T0 + CRL_DAY, big, 4321, "o", NULL),
              KL_OK);
    store_crl c;
    assert_rc(store_crl_get(f->s, "field-ca", &c), KL_OK);
    assert_int_equal(c.der_len, 4321);
    store_crl_free(&c);
    int64_t e0 = -1, e1 = -1;
    assert_rc(store_revocation_epoch(f->s, "field-ca", &e0), KL_OK);
    /* a CRL commit (the writer connection reads the epoch and the published CRL in it) */
    int64_t next = 0;
    assert_rc(store_crl_number_peek(f->s, "field-ca", &next), KL_OK);
    store_crl crl = {.issuer = "field-ca",
                     .number = next,
                     .this_update = CRL_T0 + 1,
                     .next_update = CRL_T0 + CRL_DAY,
                     .der = big,
                     .der_len = 4321,
                     .epoch = e0};
    assert_rc(store_crl_commit(f->s, &crl, "o", "issuer=field-ca", NULL), KL_OK);
    /* the revocation by another handle (another process: keyline-ca beside keyline-cad) */
    store *other = NULL;
    assert_rc(store_open(&other, f->path), KL_OK);
    assert_rc(issue(other, "71", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_revoke(other, "71", 1, 0, "bob"), KL_OK);
    store_close(other);
    assert_rc(store_revocation_epoch(f->s, "field-ca", &e1), KL_OK);
    assert_int_equal(e1, e0 + 1);
    int64_t next2 = 0;
    assert_rc(store_crl_number_peek(f->s, "field-ca", &next2), KL_OK);
    assert_int_equal(next2, next + 1);
    store_cert sc;
    assert_rc(store_cert_get(f->s, "71", &sc), KL_OK);
    assert_string_equal(sc.status, STORE_ST_REVOKED);
    store_cert_free(&sc);
    /* and the writer connection sees it too: the next CRL commit checks the new epoch */
    crl.number = next2;
    crl.this_update = CRL_T0 + 2;
    assert_rc(store_crl_commit(f->s, &crl, "o", "issuer=field-ca", NULL), KL_EEXIST);
    crl.epoch = e1;
    assert_rc(store_crl_commit(f->s, &crl, "o", "issuer=field-ca", NULL), KL_OK);
    store_crl_chunk_set(0);
    free(big);
}

/* store_crl_commit takes a CRL only when it is the newest in content as well as in number:
 * one whose entries were read before a revocation of its issuer (its epoch moved since), or
 * whose thisUpdate is not after the published one's, is refused with KL_EEXIST, the reason,
 * and nothing taken; one that lost its number is refused as before. */
static void crl_commit_is(store *s, int64_t number, time_t this_update, int64_t epoch, kl_rc want,
                          store_crl_clash clash)
{
    static uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    store_crl crl = {.issuer = "field-ca",
                     .number = number,
                     .this_update = this_update,
                     .next_update = this_update + CRL_DAY,
                     .der = der,
                     .der_len = sizeof der,
                     .epoch = epoch};
    store_crl_why why = {STORE_CRL_NUMBER_TAKEN, 0, 0};
    assert_rc(store_crl_commit(s, &crl, "o", "issuer=field-ca", &why), want);
    assert_int_equal(why.clash, clash);
}

static void test_crl_commit_fresh(void **state)
{
    fx *f = *state;
    const time_t t0 = CRL_T0;
    int64_t e0 = -1, e1 = -1, next = 0;
    assert_rc(issue(f->s, "51", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_revocation_epoch(f->s, "field-ca", &e0), KL_OK);
    crl_commit_is(f->s, 1, t0, e0, KL_OK, STORE_CRL_FRESH);
    /* the same second as the published CRL, read at its epoch: refused, nothing taken, and
     * the published one named as standing for it (the same entries) */
    crl_commit_is(f->s, 2, t0, e0, KL_EEXIST, STORE_CRL_SAME_CONTENT);
    assert_msg_has("CRL number 1 with the same entries");
    store_crl_why why;
    store_crl crl = {.issuer = "field-ca",
                     .number = 2,
                     .this_update = t0 - STORE_CRL_AHEAD_MAX,
                     .next_update = t0 + CRL_DAY,
                     .der = (uint8_t *)"x",
                     .der_len = 1,
                     .epoch = e0};
    assert_rc(store_crl_commit(f->s, &crl, "o", "earlier", &why), KL_EEXIST);
    assert_int_equal(why.clash, STORE_CRL_SAME_CONTENT);
    assert_int_equal(why.published, t0);
    assert_int_equal(why.number, 1);
    /* a revocation since the entries were read: refused, nothing taken */
    assert_rc(store_cert_revoke(f->s, "51", 1, 0, "bob"), KL_OK);
    assert_rc(store_revocation_epoch(f->s, "field-ca", &e1), KL_OK);
    assert_true(e1 > e0);
    crl_commit_is(f->s, 2, t0 + 1, e0, KL_EEXIST, STORE_CRL_REVOKED_SINCE);
    assert_msg_has("a revocation was recorded while it was signed");
    /* read after the revocation, in the published CRL's second: that one lacks it */
    crl_commit_is(f->s, 2, t0, e1, KL_EEXIST, STORE_CRL_SAME_SECOND);
    assert_msg_has("thisUpdate is not before");
    assert_rc(store_crl_number_peek(f->s, "field-ca", &next), KL_OK);
    assert_int_equal(next, 2);
    crl_commit_is(f->s, 2, t0 + 1, e1, KL_OK, STORE_CRL_FRESH);
    crl_commit_is(f->s, 3, t0 + 1, e1, KL_EEXIST, STORE_CRL_SAME_CONTENT);
    /* a number taken meanwhile */
    crl_commit_is(f->s, 2, t0 + 2, e1, KL_EEXIST, STORE_CRL_NUMBER_TAKEN);
    store_crl c;
    assert_rc(store_crl_get(f->s, "field-ca", &c), KL_OK);
    assert_int_equal(c.number, 2);
    assert_int_equal(c.this_update, t0 + 1);
    store_crl_free(&c);
    /* the published CRL dated more than STORE_CRL_AHEAD_MAX after a new one (signed by a clock
     * set ahead) does not block it: the new one replaces it, numbered above */
    crl_commit_is(f->s, 3, t0 + 1 - STORE_CRL_AHEAD_MAX, e1, KL_EEXIST, STORE_CRL_SAME_CONTENT);
    crl_commit_is(f->s, 3, t0 - STORE_CRL_AHEAD_MAX, e1, KL_OK, STORE_CRL_FRESH);
    assert_rc(store_crl_get(f->s, "field-ca", &c), KL_OK);
    assert_int_equal(c.number, 3);
    assert_int_equal(c.this_update, t0 - STORE_CRL_AHEAD_MAX);
    store_crl_free(&c);
    /* a CRL recorded without its epoch (store_crl_put) stands for none */
    static const uint8_t d[] = {0x30, 0x00};
    assert_rc(store_crl_put(f->s, "field-ca", 5, t0 + 3, t0 + CRL_DAY, d, sizeof d, "o", NULL),
              KL_OK);
    crl_commit_is(f->s, 6, t0 + 3, e1, KL_EEXIST, STORE_CRL_SAME_SECOND);
}

/* Threads publishing CRLs of one issuer through one handle, numbers in no particular order
 * (group commit batches them): the highest number wins, every put is audited. */
#define CRL_THREADS 8
#define CRL_PER_THREAD 16

typedef struct {
    store *s;
    int id;
} crl_thread_arg;

static void *crl_thread(void *arg)
{
    const crl_thread_arg *a = arg;
    uint8_t der[8] = {0x30, 0x06};
    for (int i = CRL_PER_THREAD - 1; i >= 0; i--) {
        int64_t number = (int64_t)i * CRL_THREADS + a->id + 1; /* 1 .. THREADS * PER_THREAD */
        der[2] = (uint8_t)number;
        if (store_crl_put(a->s, "field-ca", number, CRL_T0 + number, CRL_T0 + number + CRL_DAY, der,
                          sizeof der, "thread", NULL) != KL_OK) {
            fprintf(stderr, "crl thread %d: %s\n", a->id, kl_errmsg());
            return (void *)1;
        }
    }
    return NULL;
}

static void test_crls_threads(void **state)
{
    fx *f = *state;
    pthread_t t[CRL_THREADS];
    crl_thread_arg args[CRL_THREADS];
    for (int i = 0; i < CRL_THREADS; i++) {
        args[i] = (crl_thread_arg){f->s, i};
        assert_int_equal(pthread_create(&t[i], NULL, crl_thread, &args[i]), 0);
    }
    for (int i = 0; i < CRL_THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
    const int64_t top = CRL_THREADS * CRL_PER_THREAD;
    store_crl c;
    assert_rc(store_crl_get(f->s, "field-ca", &c), KL_OK);
    assert_int_equal(c.number, top);
    assert_int_equal(c.this_update, CRL_T0 + top);
    assert_int_equal(c.der_len, 8);
    assert_int_equal(c.der[2], (uint8_t)top);
    store_crl_free(&c);
    assert_int_equal(audit_count(f->s, "crl", NULL), (size_t)top);
}

/* A version-3 store file (before crls) gains the table when opened and keeps its data. */
static void test_crls_migration(void **state)
{
    fx *f = *state;
    static const char h1[] = "1111111111111111111111111111111111111111111111111111111111111111";
    const uint8_t csr[] = {0x30, 0x03, 0x02, 0x01, 0x07};
    store_request r = rq_of("", h1, csr, sizeof csr), got;
    assert_rc(issue(f->s, "0A01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_request_submit(f->s, &r, &got), KL_OK);
    store_request_free(&got);
    assert_rc(store_audit_append(f->s, "alice", "note", "before the migration"), KL_OK);
    int64_t seq0 = 0;
    char head0[65];
    assert_rc(store_audit_head(f->s, &seq0, head0), KL_OK);
    assert_int_equal(seq0, 3);
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "DROP TABLE crls; " DROP_V6 " PRAGMA user_version=3");
    assert_int_equal(file_user_version(f->path), 3);

    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    /* the data is still there, the chain too (plus the certificate's baseline entry, 4 -> 5) */
    store_cert cert;
    assert_rc(store_cert_get(f->s, "0A01", &cert), KL_OK);
    assert_string_equal(cert.status, STORE_ST_VALID);
    store_cert_free(&cert);
    store_request *v = NULL;
    size_t n = 0;
    assert_rc(store_request_list(f->s, NULL, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].csr_hash, h1);
    store_request_list_free(v, n);
    int64_t seq = 0;
    char head[65];
    assert_rc(store_audit_head(f->s, &seq, head), KL_OK);
    assert_int_equal(seq, seq0 + 1);
    store_audit *ba = NULL;
    size_t nba = 0;
    assert_rc(store_audit_list(f->s, seq, &ba, &nba), KL_OK);
    assert_int_equal(nba, 1);
    assert_string_equal(ba[0].action, "cert-baseline");
    assert_string_equal(ba[0].prev_hash, head0); /* appended to the old chain */
    store_audit_list_free(ba, nba);
    /* and the new table works */
    store_crl c;
    assert_rc(store_crl_get(f->s, "root", &c), KL_ENOTFOUND);
    uint8_t d[4] = {0x30, 0x02, 0x05, 0x00};
    assert_rc(store_crl_put(f->s, "root", 1, CRL_T0, CRL_T0 + CRL_DAY, d, sizeof d, "o", NULL),
              KL_OK);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    assert_int_equal(c.number, 1);
    assert_memory_equal(c.der, d, sizeof d);
    store_crl_free(&c);
    int64_t total = 0;
    assert_int_equal(audit_count(f->s, "crl", &total), 1);
    assert_int_equal(total, seq0 + 2);
    /* a second open finds version 5 and migrates nothing */
    store_close(f->s);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_rc(store_crl_get(f->s, "root", &c), KL_OK);
    store_crl_free(&c);
}

/* --- the store's state against the audit log (issue 10, defect 11) ---
 * A chain that verifies proves nothing about the rows it describes unless they are compared:
 * every certificate row needs the entry that issued it, with the hash of its DER; its status
 * must be what the issue, activate and revoke entries make it; every CA record needs its
 * ca-create (and ca-recert) entry with the hash of its certificate. */

#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"

/* Lower-case hex SHA-256 of `der`. */
static void sha256_hex(const uint8_t *der, size_t len, char out[65])
{
    uint8_t md[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(der, len, md, &n, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

/* A store with every kind of state: valid, pending, activated, revoked (with and without a
 * reason), a CA record renewed once. Verifies. */
static void state_fill(fx *f)
{
    uint8_t *der = NULL;
    size_t len = 0;
    store_ca ca;
    assert_true(make_cert("01", "Root", &der, &len));
    memset(&ca, 0, sizeof ca);
    ca.label = (char *)"root";
    ca.template_name = (char *)"root";
    ca.der = der;
    ca.der_len = len;
    assert_rc(store_ca_put(f->s, &ca), KL_OK);
    ca.label = (char *)"field-ca";
    ca.parent = (char *)"root";
    assert_rc(store_ca_put(f->s, &ca), KL_OK);
    OPENSSL_free(der);
    assert_true(make_cert("02", "Field", &der, &len));
    assert_rc(store_ca_recert(f->s, "field-ca", der, len, "test", "label=field-ca renewed"), KL_OK);
    OPENSSL_free(der);
    assert_rc(issue(f->s, "0A01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "0A02", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(f->s, "0A03", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(issue(f->s, "0A04", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(store_cert_activate(f->s, "0A04", "station"), KL_OK);
    assert_rc(issue(f->s, "0C01", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(store_cert_revoke(f->s, "0A01", 1, 1750000000, "bob"), KL_OK);
    assert_rc(store_cert_revoke(f->s, "0A03", -1, 0, "bob"), KL_OK);
    assert_rc(store_audit_append(f->s, "alice", "note", "the end"), KL_OK);
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

static void test_audit_state_intact(void **state)
{
    fx *f = *state;
    state_fill(f);
    /* the issue entry names the certificate's serial, status and DER hash */
    store_cert c;
    char h[65], want[200];
    assert_rc(store_cert_get(f->s, "0A02", &c), KL_OK);
    sha256_hex(c.der, c.der_len, h);
    store_cert_free(&c);
    snprintf(want, sizeof want,
             "serial=0A02 subject=CN=device,O=Keyline Test status=valid der-sha256=%s", h);
    store_audit *a = NULL;
    size_t na = 0;
    int found = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    for (size_t i = 0; i < na; i++) {
        found += strcmp(a[i].action, "issue") == 0 && strcmp(a[i].detail, want) == 0;
    }
    store_audit_list_free(a, na);
    assert_int_equal(found, 1);
    /* the caller's detail is kept, the store's fields follow it */
    assert_rc(
        issue_as(f->s, "0A05", "field-ca", STORE_ST_VALID, "x", "serial=0A05 issuer=field-ca"),
        KL_OK);
    assert_rc(issue_as(f->s, "0A06", "field-ca", STORE_ST_VALID, "x", "no serial here"), KL_OK);
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_non_null(
        strstr(a[na - 2].detail, "serial=0A05 issuer=field-ca status=valid der-sha256="));
    assert_non_null(
        strstr(a[na - 1].detail, "serial=0A06 no serial here status=valid der-sha256="));
    store_audit_list_free(a, na);
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
}

/* Entries only the store writes cannot be appended by anyone else: they would forge state. */
static void test_audit_store_actions(void **state)
{
    fx *f = *state;
    static const char *const own[] = {"issue",         "revoke",     "activate",
                                      "ca-create",     "ca-recert",  "ocsp-signer-new",
                                      "cert-baseline", "ca-baseline"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        assert_rc(store_audit_append(f->s, "mallory", own[i], "serial=0A01"), KL_EUSAGE);
    }
    assert_rc(store_audit_append(f->s, "alice", "issue-failed", "serial=0A01"), KL_OK);
}

/* keyline-ca ocsp-signer new: a delegated OCSP signer's certificate of a new key is audited
 * ocsp-signer-new, not ca-recert (a renewal of the same key), and held to as a ca-recert is:
 * the latest of them gives the hash the record must match. A ca-recert "(new key)" entry, as
 * 1a01ce5 wrote them, still verifies. */
static void test_audit_ocsp_signer_new(void **state)
{
    fx *f = *state;
    uint8_t *der = NULL;
    size_t len = 0;
    char h[65], want[240];
    int64_t n = 0;
    state_fill(f);
    assert_true(make_cert("03", "Field", &der, &len));
    assert_rc(store_ca_recert(f->s, "field-ca", der, len, "test",
                              "label=field-ca serial=03 (new key) old-serial=02 old-key=destroyed"),
              KL_OK);
    OPENSSL_free(der);
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_true(make_cert("04", "Field", &der, &len));
    assert_rc(store_ca_rekey(f->s, "missing", der, len, "test", "x"), KL_ENOTFOUND);
    assert_rc(store_ca_rekey(f->s, "field-ca", der, len, "test",
                             "label=field-ca serial=04 (new key) old-serial=03 old-key=destroyed"),
              KL_OK);
    sha256_hex(der, len, h);
    OPENSSL_free(der);
    snprintf(want, sizeof want,
             "label=field-ca serial=04 (new key) old-serial=03 old-key=destroyed der-sha256=%s", h);
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 1, &a, &na), KL_OK);
    assert_int_equal(na, 14); /* state_fill's 12, the ca-recert; the unknown label added none */
    assert_string_equal(a[13].action, "ocsp-signer-new");
    assert_string_equal(a[13].actor, "test");
    assert_string_equal(a[13].detail, want);
    store_audit_list_free(a, na);
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 14);
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "UPDATE cas SET der = (SELECT der FROM cas WHERE label = 'root')"
                     " WHERE label = 'field-ca'");
    verify_fails(f, "CA 'field-ca': certificate does not match the hash in audit entry 14");
}

/* state_fill, then `sql` on the file: verify fails with every string of `msgs` in its message. */
static void state_tamper(fx *f, const char *sql, const char *m1, const char *m2)
{
    state_fill(f);
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, sql);
    verify_fails(f, m1);
    if (m2) {
        assert_msg_has(m2);
    }
}

static void test_tamper_unrevoke(void **state)
{
    state_tamper(*state,
                 "UPDATE certs SET status = 'valid', revoked_at = NULL, revoke_reason = NULL"
                 " WHERE serial = '0A01'",
                 "certificate 0A01: status valid, but audit entry", "revoked it");
}

static void test_tamper_der_swap(void **state)
{
    state_tamper(*state,
                 "CREATE TEMP TABLE t AS SELECT serial, der FROM certs;"
                 " UPDATE certs SET der = (SELECT der FROM t WHERE t.serial = '0A04')"
                 " WHERE serial = '0A02';"
                 " UPDATE certs SET der = (SELECT der FROM t WHERE t.serial = '0A02')"
                 " WHERE serial = '0A04'",
                 "certificate 0A02: DER does not match", "certificate replaced");
}

static void test_tamper_empty_log(void **state)
{
    state_tamper(*state,
                 "DROP TRIGGER audit_no_delete; DELETE FROM audit;"
                 " UPDATE audit_head SET seq = 0, hash = '" ZERO64 "'",
                 "the audit log is empty, but the store holds certificates", NULL);
}

static void test_tamper_nul_detail(void **state)
{
    state_tamper(
        *state,
        "DROP TRIGGER audit_no_update;"
        " UPDATE audit SET detail = detail || char(0) || ' and more' WHERE action = 'note'",
        "audit entry 12: NUL byte in detail", NULL);
}

static void test_tamper_revoked_without_entry(void **state)
{
    state_tamper(*state,
                 "UPDATE certs SET status = 'revoked', revoked_at = 1, revoke_reason = 4"
                 " WHERE serial = '0A02'",
                 "certificate 0A02: status revoked, but no audit entry revokes it", NULL);
}

static void test_tamper_reason(void **state)
{
    state_tamper(*state, "UPDATE certs SET revoke_reason = 4 WHERE serial = '0A01'",
                 "certificate 0A01: revocation reason 4, but audit entry", "says 1");
}

static void test_tamper_revocation_time(void **state)
{
    state_tamper(*state, "UPDATE certs SET revoked_at = 1760000000 WHERE serial = '0A01'",
                 "certificate 0A01: revoked at 1760000000, but audit entry", "says 1750000000");
}

static void test_tamper_pending_to_valid(void **state)
{
    state_tamper(*state, "UPDATE certs SET status = 'valid' WHERE serial = '0C01'",
                 "certificate 0C01: status valid, but audit entry 9 left it pending", NULL);
}

static void test_tamper_row_added(void **state)
{
    state_tamper(*state,
                 "INSERT INTO certs (serial, status, issuer, subject, der, created)"
                 " SELECT '0B01', 'valid', issuer, subject, der, created FROM certs"
                 " WHERE serial = '0A02'",
                 "certificate 0B01: no audit entry issued it", NULL);
}

static void test_tamper_row_deleted(void **state)
{
    state_tamper(*state, "DROP TRIGGER certs_no_delete; DELETE FROM certs WHERE serial = '0A02'",
                 "issued certificate 0A02, which is not in the store", NULL);
}

static void test_tamper_row_failed(void **state)
{
    state_tamper(*state, "UPDATE certs SET status = 'failed' WHERE serial = '0A02'",
                 "certificate 0A02: status failed, but audit entry", "issued it");
}

static void test_tamper_ca_der(void **state)
{
    state_tamper(*state,
                 "UPDATE cas SET der = (SELECT der FROM cas WHERE label = 'field-ca')"
                 " WHERE label = 'root'",
                 "CA 'root': certificate does not match", "audit entry 1");
}

static void test_tamper_ca_added(void **state)
{
    state_tamper(*state,
                 "INSERT INTO cas (label, template, der, status, created)"
                 " SELECT 'evil-ca', template, der, status, created FROM cas WHERE label = 'root'",
                 "CA 'evil-ca': no audit entry created it", NULL);
}

/* Append an entry the way keyline before the state check did (hash, head), with raw SQL. */
static void legacy_append(const char *path, const char *action, const char *detail)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char h[65], prev[65];
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT seq, hash FROM audit_head", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t seq = sqlite3_column_int64(st, 0) + 1;
    snprintf(prev, sizeof prev, "%s", (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    assert_rc(store_audit_entry_hash(seq, 1700000000, "legacy", action, detail, prev, h), KL_OK);
    char *sql = sqlite3_mprintf("INSERT INTO audit VALUES (%lld, 1700000000, 'legacy', %Q, %Q, %Q,"
                                " %Q); UPDATE audit_head SET seq = %lld, hash = %Q",
                                (long long)seq, action, detail, prev, h, (long long)seq, h);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);
}

/* An ocsp-signer-new entry (chained as keyline chains them) of a label that no entry created:
 * refused as a ca-recert of it is; with the ca-create before it, it verifies. */
static void test_audit_ocsp_signer_new_uncreated(void **state)
{
    fx *f = *state;
    state_fill(f);
    store_close(f->s);
    f->s = NULL;
    legacy_append(f->path, "ocsp-signer-new",
                  "label=ghost.ocsp serial=05 (new key) old-serial=04 old-key=destroyed"
                  " der-sha256=" ZERO64);
    verify_fails(f, "audit entry 13: ocsp-signer-new of CA 'ghost.ocsp', which no audit entry "
                    "created");
}

/* A version-4 store: its entries carry no certificate hashes. Opening it appends one baseline
 * entry per certificate and CA record (their DER hash and state as found), after which the
 * state is checked like any other; the schema becomes version 5. */
static void test_audit_baseline_migration(void **state)
{
    fx *f = *state;
    state_fill(f);
    store_close(f->s);
    f->s = NULL;
    /* the same rows with the entries an earlier keyline wrote */
    raw_sql(f->path, "DROP TRIGGER audit_no_delete; DELETE FROM audit;"
                     " UPDATE audit_head SET seq = 0, hash = '" ZERO64 "';"
                     " CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
                     " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
                     " " DROP_V6 " PRAGMA user_version = 4");
    legacy_append(f->path, "ca-create", "label=root parent=- template=root key=-");
    legacy_append(f->path, "ca-create", "label=field-ca parent=root template=root key=-");
    legacy_append(f->path, "ca-recert", "label=field-ca renewed");
    static const char *const serials[] = {"0A01", "0A02", "0A03", "0A04", "0C01"};
    for (size_t i = 0; i < 5; i++) {
        char d[64];
        snprintf(d, sizeof d, "serial=%s issuer=field-ca template=t subject=CN=x", serials[i]);
        legacy_append(f->path, "issue", d);
    }
    legacy_append(f->path, "activate", "serial=0A04");
    legacy_append(f->path, "revoke", "serial=0A01 issuer=field-ca reason=1");
    legacy_append(f->path, "revoke", "serial=0A03 issuer=field-ca reason=-1");

    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    int64_t total = 0;
    assert_int_equal(audit_count(f->s, "cert-baseline", &total), 5);
    assert_int_equal(audit_count(f->s, "ca-baseline", NULL), 2);
    assert_int_equal(total, 11 + 7);
    store_audit *a = NULL;
    size_t na = 0;
    assert_rc(store_audit_list(f->s, 12, &a, &na), KL_OK);
    assert_string_equal(a[0].actor, "keyline");
    assert_string_equal(a[0].action, "ca-baseline");
    assert_true(prefix_is(a[0].detail, "label=root der-sha256="));
    int rev = 0;
    for (size_t i = 0; i < na; i++) {
        rev += prefix_is(a[i].detail,
                         "serial=0A01 status=revoked reason=1 revoked-at=1750000000 der-sha256=");
    }
    assert_int_equal(rev, 1);
    store_audit_list_free(a, na);
    /* a second open migrates nothing */
    store_close(f->s);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    int64_t total2 = 0;
    assert_int_equal(audit_count(f->s, "cert-baseline", &total2), 5);
    assert_int_equal(total2, total);
    /* from now on the rows are held to the baseline */
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "UPDATE certs SET der = (SELECT der FROM certs WHERE serial = '0A04')"
                     " WHERE serial = '0A02'");
    verify_fails(f, "certificate 0A02: DER does not match");
}

/* --- audit checkpoints (issue 11 item 5) ---
 * The chain's head signed with the audit key. The store sees a signer only (key_new, sign);
 * here a software P-256 key is that signer, the token's is tested in tests/unit/ca and
 * tests/integration/audit_checkpoint.sh. Someone with write access to the file rewrites the
 * chain consistently (rechain: triggers dropped, every hash and the head recomputed): the
 * checkpoints must catch it. */

typedef struct {
    EVP_PKEY *key;      /* signs */
    EVP_PKEY *recorded; /* the public key key_new gives (NULL: key's) */
    int key_new_calls, sign_calls;
} sw_signer;

static kl_rc sw_key_new(void *arg, char **label, uint8_t **spki, size_t *len)
{
    sw_signer *w = arg;
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(w->recorded ? w->recorded : w->key, &der);
    w->key_new_calls++;
    if (n <= 0 || !(*spki = malloc((size_t)n))) {
        OPENSSL_free(der);
        return kl_fail(KL_EINTERNAL, "i2d_PUBKEY");
    }
    memcpy(*spki, der, (size_t)n);
    OPENSSL_free(der);
    *len = (size_t)n;
    *label = strdup("keyline-audit");
    return KL_OK;
}

static int sw_sign_raw(EVP_PKEY *key, const uint8_t *tbs, size_t len, uint8_t **sig,
                       size_t *sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = 0;
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, NULL, &n, tbs, len) == 1 && (*sig = malloc(n)) != NULL &&
             EVP_DigestSign(md, *sig, &n, tbs, len) == 1;
    EVP_MD_CTX_free(md);
    *sig_len = n;
    return ok;
}

static kl_rc sw_sign(void *arg, const char *label, const uint8_t *tbs, size_t len, uint8_t **sig,
                     size_t *sig_len)
{
    sw_signer *w = arg;
    w->sign_calls++;
    if (strcmp(label, "keyline-audit") != 0 || !sw_sign_raw(w->key, tbs, len, sig, sig_len)) {
        return kl_fail(KL_EHSM, "sw_sign");
    }
    return KL_OK;
}

static store_audit_signer sw_of(sw_signer *w)
{
    return (store_audit_signer){sw_key_new, sw_sign, w};
}

/* Sign the head; return the checkpoint's entry. */
static int64_t checkpoint(store *s, sw_signer *w, int want_made)
{
    store_audit_signer sg = sw_of(w);
    store_audit_checkpoint cp;
    int made = -1;
    assert_rc(store_audit_checkpoint_make(s, &sg, &cp, &made), KL_OK);
    assert_int_equal(made, want_made);
    int64_t seq = cp.seq;
    store_audit_checkpoint_free(&cp);
    return seq;
}

static void notes(store *s, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        char d[64];
        snprintf(d, sizeof d, "%s %d", what, i + 1);
        assert_rc(store_audit_append(s, "alice", "note", d), KL_OK);
    }
}

/* Checkpoint `seq` as stored: hash, time and signature (*sig malloc'd). */
static void raw_checkpoint(const char *path, int64_t seq, char hash[65], int64_t *ts, uint8_t **sig,
                           size_t *len)
{
    char sql[160];
    if (g_pg) {
        snprintf(sql, sizeof sql,
                 "SELECT hash, ts, encode(sig, 'hex') FROM audit_checkpoints WHERE seq = %lld",
                 (long long)seq);
        PGconn *c = pg_connect(path);
        PGresult *r = PQexec(c, sql);
        assert_int_equal(PQntuples(r), 1);
        snprintf(hash, 65, "%s", PQgetvalue(r, 0, 0));
        *ts = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        long n = 0;
        *sig = OPENSSL_hexstr2buf(PQgetvalue(r, 0, 2), &n);
        *len = (size_t)n;
        PQclear(r);
        PQfinish(c);
    } else {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        snprintf(sql, sizeof sql,
                 "SELECT hash, ts, hex(sig) FROM audit_checkpoints WHERE seq = %lld",
                 (long long)seq);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(hash, 65, "%s", (const char *)sqlite3_column_text(st, 0));
        *ts = sqlite3_column_int64(st, 1);
        long n = 0;
        *sig = OPENSSL_hexstr2buf((const char *)sqlite3_column_text(st, 2), &n);
        *len = (size_t)n;
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    assert_non_null(*sig);
    /* OPENSSL_hexstr2buf's buffer goes back with free() in the test: copy it */
    uint8_t *copy = malloc(*len);
    assert_non_null(copy);
    memcpy(copy, *sig, *len);
    OPENSSL_free(*sig);
    *sig = copy;
}

/* rechain on PostgreSQL: the same recomputation through libpq, triggers off. */
static void rechain_pg(const char *url)
{
    char prev[65] = ZERO64, h[65], seqs[32];
    int64_t seq = 0;
    PGconn *c = pg_connect(url);
    PQclear(PQexec(c, "SET session_replication_role = replica"));
    PQclear(PQexec(c, "BEGIN"));
    PGresult *r = PQexec(c, "SELECT seq, ts, actor, action, detail FROM audit ORDER BY seq");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(r); i++) {
        seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        assert_rc(store_audit_entry_hash(seq, (time_t)strtoll(PQgetvalue(r, i, 1), NULL, 10),
                                         PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                                         PQgetvalue(r, i, 4), prev, h),
                  KL_OK);
        snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
        const char *v[3] = {prev, h, seqs};
        PGresult *u = PQexecParams(c, "UPDATE audit SET prev_hash = $1, hash = $2 WHERE seq = $3",
                                   3, NULL, v, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(u), PGRES_COMMAND_OK);
        PQclear(u);
        memcpy(prev, h, sizeof prev);
    }
    PQclear(r);
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    const char *v[2] = {seqs, prev};
    r = PQexecParams(c, "UPDATE audit_head SET seq = $1, hash = $2", 2, NULL, v, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
}

/* Recompute the whole chain and the head from the rows as they are, as anyone who can write
 * the file can (tests/integration/audit_checkpoint.sh does the same with python3). */
static void rechain(const char *path)
{
    if (g_pg) {
        rechain_pg(path);
        return;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char prev[65] = ZERO64, h[65];
    int64_t seq = 0;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TRIGGER IF EXISTS audit_no_update;"
                                  " DROP TRIGGER IF EXISTS audit_no_delete; BEGIN",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT seq, ts, actor, action, detail FROM audit"
                                        " ORDER BY seq",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        seq = sqlite3_column_int64(st, 0);
        assert_rc(store_audit_entry_hash(seq, (time_t)sqlite3_column_int64(st, 1),
                                         (const char *)sqlite3_column_text(st, 2),
                                         (const char *)sqlite3_column_text(st, 3),
                                         (const char *)sqlite3_column_text(st, 4), prev, h),
                  KL_OK);
        char *sql = sqlite3_mprintf("UPDATE audit SET prev_hash = %Q, hash = %Q WHERE seq = %lld",
                                    prev, h, (long long)seq);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_free(sql);
        memcpy(prev, h, sizeof prev);
    }
    sqlite3_finalize(st);
    char *sql = sqlite3_mprintf("UPDATE audit_head SET seq = %lld, hash = %Q; COMMIT",
                                (long long)seq, prev);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);
}

/* `sql` (triggers on checkpoints and key dropped first), then the chain recomputed: verify
 * must fail naming `msg`, and the store must refuse to sign the rewritten head. */
static void cp_tamper(fx *f, const char *sql, const char *msg)
{
    char full[1024];
    sw_signer w = {.key = g_key};
    store_close(f->s);
    f->s = NULL;
    snprintf(full, sizeof full,
             "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
             " DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;"
             " DROP TRIGGER audit_key_no_update; DROP TRIGGER audit_key_no_delete; %s",
             sql);
    raw_sql(f->path, full);
    rechain(f->path);
    verify_fails(f, msg);
    notes(f->s, 1, "after the rewrite");
    store_audit_signer sg = sw_of(&w);
    assert_rc(store_audit_checkpoint_make(f->s, &sg, NULL, NULL), KL_EPOLICY);
    assert_msg_has("refusing to sign the audit log");
    assert_int_equal(w.sign_calls, 0);
}

/* Six entries, checkpoints at 3 and 6, two unsigned entries after them. */
static void cp_fill(fx *f)
{
    sw_signer w = {.key = g_key};
    notes(f->s, 3, "event");
    assert_int_equal(checkpoint(f->s, &w, 1), 3);
    notes(f->s, 3, "later");
    assert_int_equal(checkpoint(f->s, &w, 1), 6);
    notes(f->s, 2, "unsigned");
    store_audit_report r;
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.checkpoints, 2);
    assert_int_equal(r.cp_seq, 6);
    assert_int_equal(r.entries, 8);
}

static void test_checkpoint_sign_verify(void **state)
{
    fx *f = *state;
    sw_signer w = {.key = g_key};
    store_audit_report r;
    /* an empty log: nothing to sign, no key made */
    assert_int_equal(checkpoint(f->s, &w, 0), 0);
    assert_int_equal(w.key_new_calls + w.sign_calls, 0);
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.checkpoints, 0);
    assert_int_equal(r.has_key, 0);
    char *label = NULL;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    assert_rc(store_audit_key_get(f->s, &label, &spki, &spki_len), KL_ENOTFOUND);

    notes(f->s, 5, "event");
    assert_int_equal(checkpoint(f->s, &w, 1), 5);
    assert_int_equal(w.key_new_calls, 1);
    assert_int_equal(w.sign_calls, 1);
    /* the head is signed already */
    assert_int_equal(checkpoint(f->s, &w, 0), 5);
    assert_int_equal(w.sign_calls, 1);
    notes(f->s, 3, "more");
    assert_int_equal(checkpoint(f->s, &w, 1), 8);
    assert_int_equal(w.key_new_calls, 1); /* one key per store */

    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.entries, 8);
    assert_int_equal(r.head_seq, 8);
    assert_int_equal(r.checkpoints, 2);
    assert_int_equal(r.cp_seq, 8);
    assert_true(r.cp_ts >= time(NULL) - 60);
    assert_int_equal(r.has_key, 1);
    assert_string_equal(r.key_label, "keyline-audit");
    assert_rc(store_audit_key_get(f->s, &label, &spki, &spki_len), KL_OK);
    assert_string_equal(label, "keyline-audit");
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(g_key, &der);
    assert_int_equal((size_t)n, spki_len);
    assert_memory_equal(der, spki, spki_len);
    char fp[65];
    sha256_hex(der, spki_len, fp);
    assert_string_equal(r.key_sha256, fp);
    OPENSSL_free(der);
    free(label);
    free(spki);

    /* The signed bytes, as docs/internals/store.md gives them, verify with OpenSSL on the row
     * as stored. */
    char hash[65];
    int64_t ts = 0;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    raw_checkpoint(f->path, 8, hash, &ts, &sig, &sig_len);
    uint8_t tbs[STORE_AUDIT_CP_TBS_LEN], want[STORE_AUDIT_CP_TBS_LEN];
    store_audit_checkpoint_tbs(8, (time_t)ts, hash, tbs);
    memcpy(want, "keyline-audit-checkpoint-v1", 27);
    for (int i = 0; i < 8; i++) {
        want[27 + i] = (uint8_t)((uint64_t)8 >> (8 * (7 - i)));
        want[35 + i] = (uint8_t)((uint64_t)ts >> (8 * (7 - i)));
    }
    memcpy(want + 43, "\0\0\0\x40", 4);
    memcpy(want + 47, hash, 64);
    assert_memory_equal(tbs, want, sizeof want);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, g_key), 1);
    assert_int_equal(EVP_DigestVerify(md, sig, sig_len, tbs, sizeof tbs), 1);
    EVP_MD_CTX_free(md);
    free(sig);
    /* the triggers refuse casual edits of checkpoints and key */
    assert_true(raw_refused(f->path, "UPDATE audit_checkpoints SET ts = 1"));
    assert_true(raw_refused(f->path, "DELETE FROM audit_checkpoints"));
    assert_true(raw_refused(f->path, "DELETE FROM audit_key"));
    assert_true(raw_refused(f->path, "UPDATE audit_key SET label = 'x'"));
}

/* An entry's detail edited and the chain recomputed: the checkpoint after it fails, naming the
 * entries since the last checkpoint that still matches. */
static void test_checkpoint_edit_rechained(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "UPDATE audit SET detail = 'later 2 (rewritten)' WHERE seq = 5",
              "audit checkpoint at entry 6: the chain no longer has the signed hash there: an "
              "entry in 4..6 was edited");
}

static void test_checkpoint_edit_first(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "UPDATE audit SET actor = 'mallory' WHERE seq = 1",
              "audit checkpoint at entry 3: the chain no longer has the signed hash there: an "
              "entry in 1..3");
}

/* Two entries swapped, the chain recomputed. */
static void test_checkpoint_reorder(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f,
              "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (4, 5);"
              " UPDATE audit SET ts = (SELECT ts FROM t WHERE seq = 5),"
              "  actor = (SELECT actor FROM t WHERE seq = 5),"
              "  detail = (SELECT detail FROM t WHERE seq = 5) WHERE seq = 4;"
              " UPDATE audit SET ts = (SELECT ts FROM t WHERE seq = 4),"
              "  actor = (SELECT actor FROM t WHERE seq = 4),"
              "  detail = (SELECT detail FROM t WHERE seq = 4) WHERE seq = 5;",
              "audit checkpoint at entry 6");
}

/* The last entries deleted (signed ones among them), the chain and head recomputed. */
static void test_checkpoint_truncate(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "DELETE FROM audit WHERE seq > 4",
              "audit checkpoint at entry 6: the log ends at entry 4 (entries 5..6 deleted)");
}

/* One entry deleted in the middle, the rest renumbered and recomputed. */
static void test_checkpoint_delete_renumber(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "DELETE FROM audit WHERE seq = 2; UPDATE audit SET seq = seq - 1 WHERE seq > 2",
              "audit checkpoint at entry 3");
}

/* A signature byte flipped. */
static void test_checkpoint_forged(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f,
              g_pg ? "UPDATE audit_checkpoints SET sig = set_byte(sig, 10, get_byte(sig, 10) # 1)"
                     " WHERE seq = 6"
                   : "UPDATE audit_checkpoints SET sig = CAST(substr(sig, 1, 10) ||"
                     " (CASE WHEN substr(sig, 11, 1) = x'00' THEN x'01' ELSE x'00' END) ||"
                     " substr(sig, 12) AS BLOB) WHERE seq = 6",
              "audit checkpoint at entry 6: signature does not verify with the recorded audit "
              "key 'keyline-audit' (checkpoint forged or edited)");
}

/* A checkpoint moved to the rewritten chain's hash: its signature no longer verifies. */
static void test_checkpoint_hash_moved(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "UPDATE audit SET detail = 'x' WHERE seq = 2;",
              "audit checkpoint at entry 3"); /* rechain moved entry 3's hash away */
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit WHERE seq = 3)"
                     " WHERE seq = 3");
    verify_fails(f, "audit checkpoint at entry 3: signature does not verify");
}

/* The checkpoints, or the key record, deleted. */
static void test_checkpoint_rows_deleted(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "DELETE FROM audit_checkpoints; UPDATE audit SET detail = 'x' WHERE seq = 1",
              "the audit key 'keyline-audit' is recorded but there is no audit checkpoint");
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, "DELETE FROM audit_key");
    /* now the store looks as if it never had either: not an error for the store (the CLI
     * refuses a log with entries and no checkpoint, and compares with the token's key) */
    int64_t c = 0;
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_rc(store_audit_verify(f->s, &c), KL_OK);
}

static void test_checkpoint_key_deleted(void **state)
{
    fx *f = *state;
    cp_fill(f);
    cp_tamper(f, "DELETE FROM audit_key", "2 audit checkpoint(s) but no recorded audit key");
}

/* A signer whose key is not the recorded one: nothing is recorded. */
static void test_checkpoint_wrong_key(void **state)
{
    fx *f = *state;
    EVP_PKEY *other = EVP_EC_gen("P-256");
    sw_signer w = {.key = g_key, .recorded = other};
    store_audit_signer sg = sw_of(&w);
    notes(f->s, 2, "event");
    assert_rc(store_audit_checkpoint_make(f->s, &sg, NULL, NULL), KL_EPOLICY);
    assert_msg_has("is not the one recorded in the store");
    char *label = NULL;
    uint8_t *spki = NULL;
    size_t n = 0;
    assert_rc(store_audit_key_get(f->s, &label, &spki, &n), KL_ENOTFOUND); /* rolled back */
    /* the right signer works, and later a wrong one cannot add a checkpoint */
    sw_signer ok = {.key = g_key};
    assert_int_equal(checkpoint(f->s, &ok, 1), 2);
    notes(f->s, 1, "more");
    sw_signer bad = {.key = other};
    sg = sw_of(&bad);
    assert_rc(store_audit_checkpoint_make(f->s, &sg, NULL, NULL), KL_EPOLICY);
    assert_msg_has("is not the one recorded in the store");
    store_audit_report r;
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.checkpoints, 1);
    EVP_PKEY_free(other);
}

/* A version-5 store (entries, no checkpoint tables) gains the tables; its first checkpoint
 * covers every entry written before. */
static void test_checkpoint_migration(void **state)
{
    fx *f = *state;
    notes(f->s, 4, "before");
    int64_t seq0 = 0;
    char head0[65];
    assert_rc(store_audit_head(f->s, &seq0, head0), KL_OK);
    store_close(f->s);
    f->s = NULL;
    raw_sql(f->path, DROP_V6 " PRAGMA user_version=5");
    assert_int_equal(file_user_version(f->path), 5);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    int64_t seq = 0;
    char head[65];
    assert_rc(store_audit_head(f->s, &seq, head), KL_OK);
    assert_int_equal(seq, seq0); /* no entry added by this step */
    assert_string_equal(head, head0);
    store_audit_report r;
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.checkpoints, 0);
    sw_signer w = {.key = g_key};
    assert_int_equal(checkpoint(f->s, &w, 1), 4);
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.cp_seq, 4);
    /* a second open migrates nothing; an edit of an entry from before the upgrade is caught */
    store_close(f->s);
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    cp_tamper(f, "UPDATE audit SET detail = 'x' WHERE seq = 1", "audit checkpoint at entry 4");
}

/* The query plan SQLite makes for `sql` on the store file, one line. */
static void sqlite_plan(const char *path, const char *sql, char *out, size_t cap)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char q[512];
    snprintf(q, sizeof q, "EXPLAIN QUERY PLAN %s", sql);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    out[0] = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s; ", (const char *)sqlite3_column_text(st, 3));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static const char *const q_officer_events =
    "SELECT seq, action, detail FROM audit WHERE " AUDIT_OFFICER_EVENTS " ORDER BY seq";
static const char *const q_ceremony_events =
    "SELECT count(*) FROM audit WHERE " AUDIT_CEREMONY_EVENTS;

/* Schema step 16: the officer and ceremony reads of the audit log go through their partial
 * indexes (no scan of an entry per certificate), on a new store and on a version-15 one once
 * opened; the entries are found as before. */
static void test_audit_event_indexes(void **state)
{
    fx *f = *state;
    char plan[512];
    assert_rc(store_audit_append(f->s, "t", "ceremony-propose", "id=1 op=x"), KL_OK);
    assert_rc(store_audit_append(f->s, "t", "note", "serial=01"), KL_OK);
    store_close(f->s);
    f->s = NULL;
    sqlite_plan(f->path, q_officer_events, plan, sizeof plan);
    assert_non_null(strstr(plan, "USING INDEX audit_officer_events"));
    sqlite_plan(f->path, q_ceremony_events, plan, sizeof plan);
    assert_non_null(strstr(plan, "USING INDEX audit_ceremony_events"));
    raw_sql(f->path, "DROP INDEX audit_officer_events; DROP INDEX audit_ceremony_events;"
                     " PRAGMA user_version=15");
    sqlite_plan(f->path, q_ceremony_events, plan, sizeof plan);
    assert_null(strstr(plan, "USING INDEX")); /* the scan the step removes */
    assert_rc(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(file_user_version(f->path), SCHEMA_VERSION);
    sqlite_plan(f->path, q_officer_events, plan, sizeof plan);
    assert_non_null(strstr(plan, "USING INDEX audit_officer_events"));
    sqlite_plan(f->path, q_ceremony_events, plan, sizeof plan);
    assert_non_null(strstr(plan, "USING INDEX audit_ceremony_events"));
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 2);
}

/* PostgreSQL: both partial indexes exist and the planner can answer the two reads from them
 * (their WHERE implies the index's predicate); with sequential scans off it must. */
static void test_pg_audit_event_indexes(void **state)
{
    fx *f = *state;
    PGconn *c = pg_connect(f->path);
    PGresult *r = PQexec(c, "SET enable_seqscan = off");
    PQclear(r);
    const char *q[2] = {q_officer_events, q_ceremony_events};
    const char *idx[2] = {"audit_officer_events", "audit_ceremony_events"};
    for (int i = 0; i < 2; i++) {
        char sql[512], plan[2048] = "";
        snprintf(sql, sizeof sql, "EXPLAIN %s", q[i]);
        r = PQexec(c, sql);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        for (int row = 0; row < PQntuples(r); row++) {
            size_t n = strlen(plan);
            snprintf(plan + n, sizeof plan - n, "%s; ", PQgetvalue(r, row, 0));
        }
        PQclear(r);
        if (!strstr(plan, idx[i])) {
            fprintf(stderr, "plan of %s: %s\n", q[i], plan);
        }
        assert_non_null(strstr(plan, idx[i]));
    }
    PQfinish(c);
}

/* Threads append and sign through one handle (checkpoints are group-committed writes). */
typedef struct {
    store *s;
    int rc;
} cp_thread_arg;

static void *cp_thread(void *p)
{
    cp_thread_arg *a = p;
    sw_signer w = {.key = g_key};
    store_audit_signer sg = sw_of(&w);
    for (int i = 0; i < 20 && a->rc == KL_OK; i++) {
        a->rc = store_audit_append(a->s, "t", "note", "x");
        if (a->rc == KL_OK && i % 4 == 3) {
            a->rc = store_audit_checkpoint_make(a->s, &sg, NULL, NULL);
        }
    }
    return NULL;
}

static void test_checkpoint_threads(void **state)
{
    fx *f = *state;
    pthread_t t[4];
    cp_thread_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (cp_thread_arg){f->s, KL_OK};
        assert_int_equal(pthread_create(&t[i], NULL, cp_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, KL_OK);
    }
    sw_signer w = {.key = g_key};
    store_audit_signer sg = sw_of(&w);
    store_audit_checkpoint cp;
    assert_rc(store_audit_checkpoint_make(f->s, &sg, &cp, NULL), KL_OK); /* maybe signed already */
    assert_int_equal(cp.seq, 80);
    store_audit_checkpoint_free(&cp);
    store_audit_report r;
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.entries, 80);
    assert_int_equal(r.cp_seq, 80);
    assert_true(r.checkpoints >= 2);
}

/* A store with a record of every kind: CAs, certificates (one revoked, one approving a held
 * request), a device, a claim, a CRL and its number, audit entries and a checkpoint. */
static void copy_fill(store *s)
{
    sw_signer w = {.key = g_key};
    store_ca root = {.label = (char *)"root", .template_name = (char *)"root"};
    store_ca sub = {.label = (char *)"field-ca", .parent = (char *)"root"};
    uint8_t *der = NULL;
    size_t len = 0;
    char holder[256];
    int64_t n = 0;
    assert_true(make_cert("0C0A", "root", &der, &len));
    root.der = der;
    root.der_len = len;
    assert_rc(store_ca_put(s, &root), KL_OK);
    assert_rc(store_ca_put(s, &sub), KL_OK);
    OPENSSL_free(der);
    assert_rc(issue(s, "0A01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(issue(s, "0A02", "field-ca", STORE_ST_PENDING), KL_OK);
    assert_rc(store_cert_revoke(s, "0A01", 1, 1750000000, "t"), KL_OK);
    const uint8_t csr[] = {0x30, 0x03, 0x02, 0x01, 0x07};
    store_request r = rq_of("", "1111111111111111111111111111111111111111111111111111111111111111",
                            csr, sizeof csr);
    store_request held;
    assert_rc(store_request_submit(s, &r, &held), KL_OK);
    assert_true(make_cert("0A03", "dev-3", &der, &len));
    store_cert c = cert_row("0A03", "field-ca", STORE_ST_VALID, "CN=dev-3");
    c.request_id = held.id;
    assert_rc(store_cert_insert(s, &c, der, len, "officer", NULL), KL_OK);
    OPENSSL_free(der);
    store_request_free(&held);
    store_device d = {.device_id = (char *)"DEV-1",
                      .model = (char *)"m1",
                      .cert_serial = (char *)"0A02",
                      .state = (char *)"provisioned"};
    assert_rc(store_device_put(s, &d), KL_OK);
    store_claim me = claim_me("copy-src", "fixture1");
    assert_rc(store_device_claim(s, "DEV-1", &me, holder, sizeof holder), KL_OK);
    assert_rc(store_crl_number_next(s, "field-ca", &n), KL_OK);
    assert_rc(store_crl_put(s, "field-ca", n, 1750000000, 1760000000, (const uint8_t *)"crl", 3,
                            "t", NULL),
              KL_OK);
    notes(s, 2, "note");
    assert_int_equal(checkpoint(s, &w, 1) > 0, 1);
    notes(s, 1, "after the checkpoint");
}

/* store_copy into the fixture's store (SQLite file, or PostgreSQL database) from an SQLite
 * file: every record, the same chain; a second copy, a tampered source refused. */
static void test_store_copy(void **state)
{
    fx *f = *state;
    store *src = NULL;
    char p[700], url[700];
    store_copy_report r;
    snprintf(p, sizeof p, "%s/source.db", f->dir);
    assert_rc(store_open(&src, p), KL_OK);
    copy_fill(src);
    assert_rc(store_copy(src, f->s, &r), KL_OK);
    assert_true(r.tables >= 10);
    assert_int_equal(r.to.entries, r.from.entries);
    assert_string_equal(r.to.head_hash, r.from.head_hash);
    assert_int_equal(r.to.checkpoints, 1);
    assert_string_equal(r.to.key_sha256, r.from.key_sha256);
    /* the records, through the API of the copy */
    store_cert_state cs;
    assert_rc(store_cert_state_get(f->s, "0A01", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_REVOKED);
    store_cert c;
    assert_rc(store_cert_get(f->s, "0A03", &c), KL_OK);
    assert_true(c.der_len > 0);
    store_cert_free(&c);
    store_request *rq = NULL;
    size_t nrq = 0;
    assert_rc(store_request_list(f->s, NULL, &rq, &nrq), KL_OK);
    assert_int_equal(nrq, 1);
    assert_string_equal(rq[0].status, STORE_RQ_APPROVED);
    store_request_list_free(rq, nrq);
    store_device d;
    assert_rc(store_device_get(f->s, "DEV-1", &d), KL_OK);
    assert_string_equal(d.cert_serial, "0A02");
    store_device_free(&d);
    store_crl crl;
    assert_rc(store_crl_get(f->s, "field-ca", &crl), KL_OK);
    assert_int_equal(crl.number, 1);
    store_crl_free(&crl);
    store_ca *cas = NULL;
    size_t nca = 0;
    assert_rc(store_ca_list(f->s, &cas, &nca), KL_OK);
    assert_int_equal(nca, 2);
    assert_string_equal(cas[0].label, "root");
    store_ca_list_free(cas, nca);
    /* the copy carries on: the next CRL number, new rows get new ids, claims were not copied */
    int64_t n = 0;
    char holder[256];
    assert_rc(store_crl_number_next(f->s, "field-ca", &n), KL_OK);
    assert_int_equal(n, 2);
    assert_rc(issue(f->s, "0A04", "field-ca", STORE_ST_VALID), KL_OK);
    store_request r2 = rq_of("", "2222222222222222222222222222222222222222222222222222222222222222",
                             (const uint8_t *)"\x30\x00", 2);
    store_request held;
    assert_rc(store_request_submit(f->s, &r2, &held), KL_OK);
    assert_true(held.id > 1);
    store_request_free(&held);
    store_claim other = claim_me("copy-dst", "fixture9");
    other.host = "another-host";
    assert_rc(store_device_claim(f->s, "DEV-1", &other, holder, sizeof holder), KL_OK);
    int64_t cnt = 0;
    assert_rc(store_audit_verify(f->s, &cnt), KL_OK);
    /* a second copy into the same store: refused, nothing written */
    assert_rc(store_copy(src, f->s, &r), KL_EEXIST);
    assert_msg_has("not empty");
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, cnt);
    store_close(src);
    /* a source whose chain does not verify is not copied */
    raw_sql(p, "DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'x' WHERE seq = 2");
    assert_rc(store_open(&src, p), KL_OK);
    store *dst = NULL;
    if (g_pg) {
        char name[80];
        snprintf(name, sizeof name, "%.60s_t2", f->db);
        assert_true(pg_fresh(name, url, sizeof url));
    } else {
        snprintf(url, sizeof url, "%s/target2.db", f->dir);
    }
    assert_rc(store_open(&dst, url), KL_OK);
    assert_rc(store_copy(src, dst, &r), KL_EPOLICY);
    assert_msg_has("the source's audit log does not verify");
    assert_rc(store_audit_verify(dst, &n), KL_OK);
    assert_int_equal(n, 0);
    store_close(dst);
    store_close(src);
}

/* A writer on the source while store_copy runs (a keyline-cad not stopped): each copy is the
 * snapshot it verified and reports, never "differs" after the target was written. */
typedef struct {
    const char *dsn;
    volatile int stop;
    volatile int n;
} copy_writer;

static void *copy_writer_main(void *arg)
{
    copy_writer *w = arg;
    store *s = NULL;
    if (store_open(&s, w->dsn) != KL_OK) {
        return NULL;
    }
    while (!w->stop) {
        if (store_audit_append(s, "writer", "note", "during the copy") == KL_OK) {
            w->n++;
        }
    }
    store_close(s);
    return NULL;
}

#define COPY_LIVE_ROUNDS 10

/* Copies of `src_dsn` into COPY_LIVE_ROUNDS fresh targets (`target(i)`) while it is written. */
static void copy_live(fx *f, const char *src_dsn, int pg_targets)
{
    store *src = NULL;
    store_copy_report r;
    int64_t n = 0;
    char url[700];
    assert_rc(store_open(&src, src_dsn), KL_OK);
    copy_fill(src);
    notes(src, 300, "before the copy");
    copy_writer w = {.dsn = src_dsn};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, copy_writer_main, &w), 0);
    while (w.n < 3) {
        usleep(1000);
    }
    for (int i = 0; i < COPY_LIVE_ROUNDS; i++) {
        store *dst = NULL;
        if (pg_targets) {
            char name[80];
            snprintf(name, sizeof name, "%.60s_l%d", f->db, i);
            assert_true(pg_fresh(name, url, sizeof url));
        } else {
            snprintf(url, sizeof url, "%s/live-%d.db", f->dir, i);
        }
        assert_rc(store_open(&dst, url), KL_OK);
        assert_rc(store_copy(src, dst, &r), KL_OK);
        assert_int_equal(r.to.entries, r.from.entries);
        assert_string_equal(r.to.head_hash, r.from.head_hash);
        assert_rc(store_audit_verify(dst, &n), KL_OK);
        assert_int_equal(n, r.to.entries);
        store_close(dst);
    }
    w.stop = 1;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_rc(store_audit_verify(src, &n), KL_OK);
    assert_true(n > r.from.entries);
    store_close(src);
}

static void test_store_copy_live(void **state)
{
    fx *f = *state;
    char p[700];
    snprintf(p, sizeof p, "%s/live-source.db", f->dir);
    copy_live(f, p, g_pg != NULL); /* SQLite -> the fixture's backend */
}

/* store_backup: a verified copy in a new file; never over an existing one; not for PostgreSQL. */
static void test_store_backup(void **state)
{
    fx *f = *state;
    char p[700];
    store *b = NULL;
    int64_t n = 0, m = 0;
    snprintf(p, sizeof p, "%s/backup.db", f->dir);
    if (g_pg) {
        assert_rc(store_backup(f->s, p), KL_EUSAGE);
        assert_msg_has("pg_dump");
        assert_int_equal(access(p, F_OK), -1);
        return;
    }
    copy_fill(f->s);
    assert_rc(store_backup(f->s, p), KL_OK);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
    assert_rc(store_backup(f->s, p), KL_EEXIST);
    assert_rc(store_open(&b, p), KL_OK);
    assert_rc(store_audit_verify(b, &n), KL_OK);
    assert_rc(store_audit_verify(f->s, &m), KL_OK);
    assert_int_equal(n, m);
    store_close(b);
}

/* PostgreSQL: a database of another program, a server that is not there, a URL with a
 * password (never in messages), the schema in keyline_meta. */
static void test_pg_open_errors(void **state)
{
    fx *f = *state;
    store *s = NULL;
    char url[600];
    assert_rc(store_audit_append(f->s, "t", "note", "x"), KL_OK);
    assert_true(raw_refused(f->path, "DELETE FROM audit"));
    int64_t n = 0;
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 1);
    char other[80];
    snprintf(other, sizeof other, "%.60s_other", f->db);
    assert_true(pg_fresh(other, url, sizeof url));
    assert_string_equal(pg_raw(url, "CREATE TABLE t (x int)", 0), "00");
    assert_rc(store_open(&s, url), KL_EINPUT);
    assert_msg_has("not a keyline store");
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", other);
    assert_true(pg_admin(sql));
    /* no server on that socket folder: unavailable, the password not in the message */
    snprintf(url, sizeof url,
             "postgresql://keyline:s3cret-pw@/kl?host=%s/nowhere&port=%s&connect_timeout=2", f->dir,
             getenv("KL_TEST_PG_PORT"));
    assert_rc(store_open(&s, url), KL_EUNAVAIL);
    assert_msg_has("store unavailable");
    assert_null(strstr(kl_errmsg(), "s3cret-pw"));
    /* a database that does not exist */
    snprintf(url, sizeof url, "postgresql:///kl_no_such_db?host=%s&port=%s&user=%s",
             getenv("KL_TEST_PG_HOST"), getenv("KL_TEST_PG_PORT"), getenv("KL_TEST_PG_USER"));
    assert_int_not_equal(store_open(&s, url), KL_OK);
    assert_null(s);
}

/* A second role whose own schema comes first on its search_path (the "$user" schema PostgreSQL
 * 15's documentation recommends): it must not get an empty store of its own beside the shared
 * one (two stores: serials, CRL numbers and audit chains apart). Naming the schema in the URL
 * is still a store of its own, as documented. */
static void test_pg_schema_shadow(void **state)
{
    fx *f = *state;
    char role[80], sql[512], url[700];
    store *s = NULL;
    int64_t n = 0;
    assert_rc(store_audit_append(f->s, "t", "note", "shared"), KL_OK);
    snprintf(role, sizeof role, "%.60s_u", f->db);
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN CREATE ROLE %s LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
             role);
    assert_true(pg_admin(sql));
    snprintf(sql, sizeof sql,
             "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %s;"
             " GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %s;"
             " CREATE SCHEMA %s AUTHORIZATION %s",
             role, role, role, role);
    assert_string_equal(pg_raw(f->path, sql, 0), "00");
    snprintf(url, sizeof url, "postgresql:///%s?host=%s&port=%s&user=%s", f->db,
             getenv("KL_TEST_PG_HOST"), getenv("KL_TEST_PG_PORT"), role);
    assert_rc(store_open(&s, url), KL_EINPUT);
    assert_msg_has("search_path");
    assert_null(s);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_tables WHERE schemaname = '%s'", role);
    PGconn *c = pg_connect(f->path);
    PGresult *r = PQexec(c, sql);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    PQfinish(c);
    /* the schema named: a store of its own, on purpose */
    snprintf(url + strlen(url), sizeof url - strlen(url), "&options=-csearch_path%%3D%s", role);
    assert_rc(store_open(&s, url), KL_OK);
    assert_rc(store_audit_verify(s, &n), KL_OK);
    assert_int_equal(n, 0);
    store_close(s);
}

/* A PostgreSQL store copied into an SQLite file: refused before anything is written, saying
 * so (it was "internal: table cas has no column named id" from inside the copy). */
static void test_pg_copy_back(void **state)
{
    fx *f = *state;
    store *dst = NULL;
    store_copy_report r;
    char p[700];
    int64_t n = 0;
    copy_fill(f->s);
    snprintf(p, sizeof p, "%s/back.db", f->dir);
    assert_rc(store_open(&dst, p), KL_OK);
    assert_rc(store_copy(f->s, dst, &r), KL_EUSAGE);
    assert_msg_has("pg_dump");
    assert_rc(store_audit_verify(dst, &n), KL_OK);
    assert_int_equal(n, 0);
    store_close(dst);
}

/* Stop or start the whole cluster (tests/lib/pg.sh down|up). */
static void pg_ctl(const char *what)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "'%s' %s '%s'", getenv("KL_PG_SH"), what, getenv("KL_PG_DIR"));
    assert_int_equal(system(cmd), 0);
}

/* The server goes away and comes back: calls meanwhile fail with KL_EUNAVAIL ("store
 * unavailable"), nothing of them is stored, and the same handle works again afterwards. */
static void test_pg_outage(void **state)
{
    fx *f = *state;
    store_cert_state cs;
    int64_t n = 0;
    assert_rc(issue(f->s, "0A01", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_cert_state_get(f->s, "0A01", &cs), KL_OK); /* the reader connection too */
    pg_ctl("down");
    assert_rc(issue(f->s, "0A02", "field-ca", STORE_ST_VALID), KL_EUNAVAIL);
    assert_msg_has("store unavailable");
    assert_rc(store_cert_state_get(f->s, "0A01", &cs), KL_EUNAVAIL);
    assert_rc(store_audit_append(f->s, "t", "note", "during"), KL_EUNAVAIL);
    pg_ctl("up");
    assert_rc(store_cert_state_get(f->s, "0A01", &cs), KL_OK);
    assert_string_equal(cs.status, STORE_ST_VALID);
    assert_rc(store_cert_state_get(f->s, "0A02", &cs), KL_ENOTFOUND);
    assert_rc(issue(f->s, "0A03", "field-ca", STORE_ST_VALID), KL_OK);
    assert_rc(store_audit_verify(f->s, &n), KL_OK);
    assert_int_equal(n, 2);
}

/* A signer that ends every other session of the database while the checkpoint's write
 * transaction is open: the connection dies mid-transaction. */
typedef struct {
    sw_signer w;
    const char *db;
} killer_signer;

static kl_rc killer_key_new(void *arg, char **label, uint8_t **spki, size_t *len)
{
    killer_signer *k = arg;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'"
             " AND pid <> pg_backend_pid()",
             k->db);
    PGconn *c = pg_connect(g_pg);
    PQclear(PQexec(c, sql));
    PQfinish(c);
    return sw_key_new(&k->w, label, spki, len);
}

/* Connection lost inside a write transaction: KL_EUNAVAIL, nothing of it stored (no key row
 * without its checkpoint), and the next call reconnects. */
static void test_pg_lost_in_transaction(void **state)
{
    fx *f = *state;
    killer_signer k = {.w = {.key = g_key}, .db = f->db};
    store_audit_signer sg = {killer_key_new, sw_sign, &k};
    char *label = NULL;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    notes(f->s, 3, "event");
    assert_rc(store_audit_checkpoint_make(f->s, &sg, NULL, NULL), KL_EUNAVAIL);
    assert_rc(store_audit_key_get(f->s, &label, &spki, &spki_len), KL_ENOTFOUND);
    sw_signer w = {.key = g_key};
    assert_int_equal(checkpoint(f->s, &w, 1), 3);
    store_audit_report r;
    assert_rc(store_audit_verify_report(f->s, &r), KL_OK);
    assert_int_equal(r.checkpoints, 1);
    assert_int_equal(r.entries, 3);
}

static int group_setup(void **state)
{
    (void)state;
    g_key = EVP_EC_gen("P-256");
    return g_key ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(g_key);
    return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    /* every driver */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_normalize),
        cmocka_unit_test(test_audit_hash_vector),
        T(test_insert_state),
        T(test_snapshot),
        T(test_insert_get_list),
        T(test_list_many),
        T(test_duplicate_serial),
        T(test_legacy_rows),
        T(test_revoke),
        T(test_revoke_many),
        T(test_revoke_list_twice),
        T(test_revoke_preview),
        T(test_revoke_batch),
        T(test_revoke_batch_atomic),
        T(test_activate),
        T(test_activate_one_per_device),
        T(test_crl_numbers),
        T(test_crl_commit_fresh),
        T(test_crl_chunks_fresh_reads),
        T(test_devices),
        T(test_device_put_if),
        T(test_cas),
        T(test_ca_status),
        T(test_ca_put_all),
        T(test_audit_append_verify),
        T(test_tamper_edit),
        T(test_tamper_edit_rehash),
        T(test_tamper_delete_middle),
        T(test_tamper_delete_first),
        T(test_tamper_delete_last),
        T(test_tamper_truncate_all),
        T(test_tamper_append_outside),
        T(test_concurrent_processes),
        T(test_killed_writer_keeps_commits),
        T(test_fork_handle_refused),
        T(test_threads_share_handle),
        T(test_group_commit),
        T(test_group_commit_single_failure),
        T(test_claims),
        T(test_claims_processes),
        T(test_requests),
        T(test_crls),
        T(test_crl_bad_args),
        T(test_crl_chunks),
        T(test_crls_threads),
        T(test_audit_state_intact),
        T(test_audit_store_actions),
        T(test_audit_ocsp_signer_new),
        T(test_tamper_unrevoke),
        T(test_tamper_der_swap),
        T(test_tamper_empty_log),
        T(test_tamper_revoked_without_entry),
        T(test_tamper_reason),
        T(test_tamper_revocation_time),
        T(test_tamper_pending_to_valid),
        T(test_tamper_row_added),
        T(test_tamper_row_deleted),
        T(test_tamper_row_failed),
        T(test_tamper_ca_der),
        T(test_tamper_ca_added),
        T(test_checkpoint_sign_verify),
        T(test_checkpoint_edit_rechained),
        T(test_checkpoint_edit_first),
        T(test_checkpoint_reorder),
        T(test_checkpoint_truncate),
        T(test_checkpoint_delete_renumber),
        T(test_checkpoint_forged),
        T(test_checkpoint_hash_moved),
        T(test_checkpoint_rows_deleted),
        T(test_checkpoint_key_deleted),
        T(test_checkpoint_wrong_key),
        T(test_checkpoint_threads),
        T(test_store_copy),
        T(test_store_copy_live),
        T(test_store_backup),
    };
    /* SQLite files: formats, and files written by earlier versions */
    const struct CMUnitTest sqlite_tests[] = {
        T(test_tamper_nul_detail), /* PostgreSQL text cannot hold a NUL at all */
        T(test_open_errors),
        T(test_claims_migration),
        T(test_crls_migration),
        T(test_audit_baseline_migration),
        T(test_audit_ocsp_signer_new_uncreated),
        T(test_checkpoint_migration),
        T(test_audit_event_indexes),
    };
    /* the server */
    const struct CMUnitTest pg_tests[] = {
        T(test_pg_open_errors),         T(test_pg_outage),        T(test_pg_lost_in_transaction),
        T(test_pg_audit_event_indexes), T(test_pg_schema_shadow), T(test_pg_copy_back),
    };
    g_pg = getenv("KL_TEST_STORE_URL");
    if (g_pg && *g_pg) {
        int r =
            cmocka_run_group_tests_name("store (PostgreSQL)", tests, group_setup, group_teardown);
        return r | cmocka_run_group_tests_name("store (PostgreSQL only)", pg_tests, group_setup,
                                               group_teardown);
    }
    g_pg = NULL;
    int r = cmocka_run_group_tests_name("store (SQLite)", tests, group_setup, group_teardown);
    return r | cmocka_run_group_tests_name("store (SQLite only)", sqlite_tests, group_setup,
                                           group_teardown);
}
