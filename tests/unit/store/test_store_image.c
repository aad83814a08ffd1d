/* Unit tests for the images table (ca/store_image.c): a signing recorded with its audit entry
 * in one transaction, listed back; incomplete records refused; rows never changed or deleted;
 * a version-6 store gains the table when opened (schema step 7). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_fx.h"

#define H1 "798b2a7ab1dad0e0b71aebd260550ff47548200b10c19ea4064344eea3126902"
#define H2 "48d15ffc2032a3c3c575d2c03592352b3e436e434aa1bca00cb76c5ecea6baff"

typedef store_fx fx;

static int setup(void **state)
{
    return store_fx_setup(state, "image");
}

static int teardown(void **state)
{
    return store_fx_teardown(state);
}

static int raw_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int r = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return r;
}

static store_image rec(const char *hash, int64_t counter)
{
    store_image m = {.sha256 = (char *)hash,
                     .format = "mcuboot",
                     .version = "1.2.3+4",
                     .security_counter = counter,
                     .key_label = "fw1",
                     .key_serial = "685D97839DF016A612189568E9426ADA",
                     .key_hash = H2,
                     .size = 1000,
                     .actor = "cli:alice"};
    return m;
}

static void test_put_list(void **state)
{
    fx *f = *state;
    store_image a = rec(H1, 7), b = rec(H2, -1);
    b.format = "cms";
    assert_int_equal(store_image_put(f->s, &a, "key=fw1 first"), KL_OK);
    assert_int_equal(store_image_put(f->s, &b, "key=fw1 second"), KL_OK);
    store_image *v = NULL;
    size_t n = 0;
    assert_int_equal(store_image_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].sha256, H1);
    assert_int_equal(v[0].security_counter, 7);
    assert_string_equal(v[0].version, "1.2.3+4");
    assert_string_equal(v[0].actor, "cli:alice");
    assert_true(v[0].created > 0);
    assert_int_equal(v[1].security_counter, -1);
    assert_string_equal(v[1].format, "cms");
    assert_true(v[1].id > v[0].id);
    store_image_list_free(v, n);
    /* each with its audit entry, in the chain */
    store_audit *log = NULL;
    size_t nl = 0;
    assert_int_equal(store_audit_list(f->s, 0, &log, &nl), KL_OK);
    int seen = 0;
    for (size_t i = 0; i < nl; i++) {
        if (strcmp(log[i].action, "sign-image") == 0) {
            assert_string_equal(log[i].actor, "cli:alice");
            seen++;
        }
    }
    for (size_t i = 0; i < nl; i++) {
        store_audit_free(&log[i]);
    }
    free(log);
    assert_int_equal(seen, 2);
    int64_t count = 0;
    assert_int_equal(store_audit_verify(f->s, &count), KL_OK);
}

static void test_refused(void **state)
{
    fx *f = *state;
    store_image m = rec(H1, 1);
    m.sha256 = "798B2A"; /* not 64 lower-case hex */
    assert_int_equal(store_image_put(f->s, &m, "x"), KL_EUSAGE);
    m = rec(H1, 1);
    m.format = "zip";
    assert_int_equal(store_image_put(f->s, &m, "x"), KL_EUSAGE);
    m = rec(H1, 0x100000000LL);
    assert_int_equal(store_image_put(f->s, &m, "x"), KL_EUSAGE);
    m = rec(H1, 1);
    m.actor = NULL;
    assert_int_equal(store_image_put(f->s, &m, "x"), KL_EUSAGE);
    assert_int_equal(store_image_put(f->s, NULL, "x"), KL_EUSAGE);
    store_image *v = NULL;
    size_t n = 9;
    assert_int_equal(store_image_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 0); /* nothing recorded */
    int64_t seq = -1;
    char head[65];
    assert_int_equal(store_audit_head(f->s, &seq, head), KL_OK);
    assert_int_equal(seq, 0); /* and no audit entry either */
    store_image_list_free(v, n);
}

static void test_never_changed(void **state)
{
    fx *f = *state;
    store_image m = rec(H1, 3);
    assert_int_equal(store_image_put(f->s, &m, "x"), KL_OK);
    assert_int_not_equal(raw_sql(f->path, "UPDATE images SET security_counter = 9"), SQLITE_OK);
    assert_int_not_equal(raw_sql(f->path, "DELETE FROM images"), SQLITE_OK);
    store_image *v = NULL;
    size_t n = 0;
    assert_int_equal(store_image_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].security_counter, 3);
    store_image_list_free(v, n);
}

static void test_migration(void **state)
{
    fx *f = *state;
    store_close(f->s);
    f->s = NULL;
    /* version 6: without the images table and the tables of the steps after it */
    assert_int_equal(raw_sql(f->path, "DROP TABLE images; DROP TABLE matter_onboarding;"
                                      " DROP TABLE officers; DROP TABLE ceremonies;"
                                      " DROP TABLE ceremony_approvals; DROP TABLE order_certs;"
                                      " DROP TABLE orders; PRAGMA user_version = 6"),
                     SQLITE_OK);
    assert_int_equal(store_open(&f->s, f->path), KL_OK);
    store_image m = rec(H1, 1);
    assert_int_equal(store_image_put(f->s, &m, "after the migration"), KL_OK);
    store_image *v = NULL;
    size_t n = 0;
    assert_int_equal(store_image_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    store_image_list_free(v, n);
    /* a second open migrates nothing */
    store_close(f->s);
    assert_int_equal(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(store_image_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    store_image_list_free(v, n);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {T(test_put_list), T(test_refused), T(test_never_changed),
                                       T(test_migration)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
