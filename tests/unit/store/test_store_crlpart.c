/* Unit tests for CRL partitions in the store (ca/store_crlpart.c, issue 17 item 3): a CA's
 * current partition moves on only once full; the count is taken in the certificate's insert
 * transaction, so a certificate for a full (or no longer current) partition is refused whole
 * (KL_EEXIST: nothing recorded) and no partition ever holds more than its size, whoever races
 * (four processes on one store file); a partition's revoked stream lists its own certificates
 * alone, in serial order; the partitions touched by revocations since a time; a certificate's
 * partition; a partition's revoked count; a partition's distribution point, recorded once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store_fx.h"

typedef store_fx fx;

static int setup(void **state)
{
    return store_fx_setup(state, "crlpart");
}

static int teardown(void **state)
{
    return store_fx_teardown(state);
}

/* Certificate n of "fleet" in partition `part` of size `size` (0: none). */
static kl_rc cert_in(store *s, int n, int64_t part, int64_t size)
{
    char serial[32];
    uint8_t der[16] = {0x30, 0x0e};
    snprintf(serial, sizeof serial, "%02X%04X", 0x40 + n % 32, n);
    store_cert c = {.serial_hex = serial,
                    .issuer = "fleet",
                    .subject = "CN=dev",
                    .template_name = "device-ldevid",
                    .status = STORE_ST_VALID,
                    .not_before = 1,
                    .not_after = 2,
                    .revoke_reason = -1,
                    .crl_part = part,
                    .crl_part_size = size};
    return store_cert_insert(s, &c, der, sizeof der, "test", NULL);
}

/* Issue one certificate as ca_issue does: the current partition, then the insert; once more
 * when the partition filled meanwhile. */
static kl_rc issue(store *s, int n, int64_t size, int64_t *part)
{
    for (int tries = 0; tries < 8; tries++) {
        assert_int_equal(store_crlpart_current(s, "fleet", size, part), KL_OK);
        kl_rc rc = cert_in(s, n, *part, size);
        if (rc != KL_EEXIST) {
            return rc;
        }
    }
    return KL_EEXIST;
}

static void test_fill(void **state)
{
    fx *f = *state;
    int64_t part = -1;
    for (int i = 0; i < 7; i++) {
        assert_int_equal(issue(f->s, i, 3, &part), KL_OK);
        assert_int_equal(part, i / 3);
    }
    /* a full partition, or one no longer current, takes nothing: the certificate is not kept */
    assert_int_equal(cert_in(f->s, 100, 1, 3), KL_EEXIST);
    assert_int_equal(cert_in(f->s, 101, 0, 3), KL_EEXIST);
    store_cert c;
    assert_int_equal(store_cert_get(f->s, "440064", &c), KL_ENOTFOUND);
    /* a certificate without a partition */
    assert_int_equal(cert_in(f->s, 102, 0, 0), KL_OK);
    int64_t p = 0;
    assert_int_equal(store_crlpart_of(f->s, "460066", &p), KL_OK);
    assert_int_equal(p, -1);
    assert_int_equal(store_crlpart_of(f->s, "440004", &p), KL_OK);
    assert_int_equal(p, 1);
    /* a smaller size closes the current partition at once */
    assert_int_equal(store_crlpart_current(f->s, "fleet", 1, &part), KL_OK);
    assert_int_equal(part, 3);
    assert_int_equal(store_crlpart_current(f->s, "fleet", 0, &part), KL_EUSAGE);
}

static kl_rc collect(void *arg, const store_revoked *r)
{
    char *out = arg;
    strcat(out, r->serial_hex);
    strcat(out, " ");
    return KL_OK;
}

static void test_stream(void **state)
{
    fx *f = *state;
    int64_t part = -1;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(issue(f->s, i, 3, &part), KL_OK);
    }
    /* 400000 410001 420002 | 430003 440004 450005: revoke 2, 0 (partition 0) and 4 (1) */
    time_t t0 = 1000000;
    const char *rv[] = {"420002", "400000", "440004"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(store_cert_revoke(f->s, rv[i], 1, t0 + (time_t)i * 10, "test"), KL_OK);
    }
    char got[256] = "";
    assert_int_equal(store_revoked_stream_part(f->s, "fleet", 0, collect, got), KL_OK);
    assert_string_equal(got, "400000 420002 ");
    got[0] = 0;
    assert_int_equal(store_revoked_stream_part(f->s, "fleet", 1, collect, got), KL_OK);
    assert_string_equal(got, "440004 ");
    got[0] = 0;
    assert_int_equal(store_revoked_stream_part(f->s, "fleet", 2, collect, got), KL_OK);
    assert_string_equal(got, "");
    got[0] = 0;
    assert_int_equal(store_revoked_stream(f->s, "fleet", collect, got), KL_OK);
    assert_string_equal(got, "400000 420002 440004 ");
    int64_t *parts = NULL;
    size_t n = 0;
    assert_int_equal(store_crlpart_revoked_since(f->s, "fleet", t0, &parts, &n), KL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0], 0);
    assert_int_equal(parts[1], 1);
    free(parts);
    assert_int_equal(store_crlpart_revoked_since(f->s, "fleet", t0 + 15, &parts, &n), KL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(parts[0], 1);
    free(parts);
    assert_int_equal(store_crlpart_revoked_since(f->s, "fleet", t0 + 100, &parts, &n), KL_OK);
    assert_int_equal(n, 0);
    free(parts);
    int64_t count = -1;
    assert_int_equal(store_crlpart_revoked_count(f->s, "fleet", 0, &count), KL_OK);
    assert_int_equal(count, 2);
    assert_int_equal(store_crlpart_revoked_count(f->s, "fleet", 1, &count), KL_OK);
    assert_int_equal(count, 1);
    assert_int_equal(store_crlpart_revoked_count(f->s, "fleet", 9, &count), KL_OK);
    assert_int_equal(count, 0);
}

/* Four processes issue 40 certificates each into partitions of 7: none holds more than 7. */
static void test_race(void **state)
{
    fx *f = *state;
    pid_t pids[4];
    store_close(f->s);
    f->s = NULL;
    for (int w = 0; w < 4; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            store *s = NULL;
            int bad = store_open(&s, f->path) != KL_OK;
            for (int i = 0; i < 40 && !bad; i++) {
                int64_t part = 0;
                bad = issue(s, w * 1000 + i, 7, &part) != KL_OK;
            }
            store_close(s);
            _exit(bad);
        }
    }
    for (int w = 0; w < 4; w++) {
        int st = 0;
        assert_int_equal(waitpid(pids[w], &st, 0), pids[w]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT max(n), sum(n) FROM (SELECT count(*) AS n FROM"
                                        " crl_partition_certs GROUP BY part)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 7);
    assert_int_equal(sqlite3_column_int(st, 1), 160);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(store_open(&f->s, f->path), KL_OK);
}

/* A partition's distribution point: the first URL asked with is recorded and kept, whatever
 * the next callers would name (a crl-url change); per partition and CA; bad arguments. */
static void test_url(void **state)
{
    fx *f = *state;
    char url[64];
    assert_int_equal(store_crlpart_url(f->s, "fleet", 0, "http://a/0.crl", url, sizeof url), KL_OK);
    assert_string_equal(url, "http://a/0.crl");
    assert_int_equal(store_crlpart_url(f->s, "fleet", 0, "http://b/0.crl", url, sizeof url), KL_OK);
    assert_string_equal(url, "http://a/0.crl");
    assert_int_equal(store_crlpart_url(f->s, "fleet", 1, "http://b/1.crl", url, sizeof url), KL_OK);
    assert_string_equal(url, "http://b/1.crl");
    assert_int_equal(store_crlpart_url(f->s, "other", 0, "http://c/0.crl", url, sizeof url), KL_OK);
    assert_string_equal(url, "http://c/0.crl");
    assert_int_equal(store_crlpart_url(f->s, "fleet", 0, "http://b/0.crl", url, 4), KL_EINTERNAL);
    assert_int_equal(store_crlpart_url(f->s, "fleet", -1, "http://b/0.crl", url, sizeof url),
                     KL_EUSAGE);
    /* never changed once written (the step's triggers) */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE crl_partition_urls SET url = 'x'", NULL, NULL, NULL), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM crl_partition_urls", NULL, NULL, NULL),
                         SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_crlpart_url(f->s, "fleet", 0, "http://b/0.crl", url, sizeof url), KL_OK);
    assert_string_equal(url, "http://a/0.crl");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
