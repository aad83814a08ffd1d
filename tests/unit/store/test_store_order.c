/* Unit tests for production orders in the store (ca/store_order.c): an order's count is taken
 * in the certificate's own insert transaction, so it never goes past the order, whoever races
 * (six processes on one store file); closed, expired and unknown orders take nothing; the
 * guard rails (no delete, issued never above count); the migration from a store of the
 * previous version. */
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

#include "store_order.h"
#include "store_fx.h"

typedef store_fx fx;

static int setup(void **state)
{
    return store_fx_setup(state, "order");
}

static int teardown(void **state)
{
    return store_fx_teardown(state);
}

static int sql(const char *path, const char *q, int *val)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    int r = sqlite3_prepare_v2(db, q, -1, &st, NULL);
    if (r == SQLITE_OK) {
        r = sqlite3_step(st);
        if (r == SQLITE_ROW && val) {
            *val = sqlite3_column_int(st, 0);
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : -1;
}

static void order_make(store *s, const char *id, int64_t count, time_t expires)
{
    uint8_t sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    store_order o = {.id = (char *)id,
                     .model = "acme-1",
                     .station = "line-7",
                     .profile = "station",
                     .count = count,
                     .expires = expires,
                     .created = time(NULL),
                     .created_by = "test",
                     .sig = sig,
                     .sig_len = sizeof sig};
    assert_int_equal(store_order_create(s, &o, "test"), KL_OK);
}

/* A certificate counted against `order` (NULL: none); serial from n. */
static kl_rc cert_with_order(store *s, const char *order, int n)
{
    char serial[32], dev[32];
    uint8_t der[16] = {0x30, 0x0e};
    snprintf(serial, sizeof serial, "%04X%04X", n / 65536 + 1, n % 65536);
    snprintf(dev, sizeof dev, "DEV-%d", n);
    store_cert c = {.serial_hex = serial,
                    .issuer = "factory1",
                    .subject = "CN=acme-1",
                    .template_name = "device-idevid",
                    .device_id = dev,
                    .status = STORE_ST_VALID,
                    .not_before = time(NULL),
                    .not_after = time(NULL) + 86400,
                    .revoke_reason = -1,
                    .order_id = (char *)order};
    return store_cert_insert(s, &c, der, sizeof der, "test", NULL);
}

static void test_create_find_close(void **state)
{
    fx *f = *state;
    store_order o;
    int controlled = -1, was_open = -1;
    assert_int_equal(store_order_find(f->s, "line-7", "station", NULL, &o, &controlled),
                     KL_ENOTFOUND);
    assert_int_equal(controlled, 0);
    order_make(f->s, "O-1", 3, time(NULL) + 3600);
    assert_int_equal(store_order_create(f->s, &(store_order){0}, "test"), KL_EUSAGE);
    uint8_t sig[1] = {1};
    store_order dup = {.id = "O-1",
                       .model = "m",
                       .station = "s",
                       .profile = "p",
                       .count = 1,
                       .expires = time(NULL) + 60,
                       .created_by = "t",
                       .sig = sig,
                       .sig_len = 1};
    assert_int_equal(store_order_create(f->s, &dup, "test"), KL_EEXIST);
    assert_int_equal(store_order_find(f->s, "line-7", "station", NULL, &o, &controlled), KL_OK);
    assert_string_equal(o.id, "O-1");
    assert_int_equal(o.count, 3);
    assert_int_equal(o.issued, 0);
    assert_string_equal(o.state, STORE_ORDER_OPEN);
    assert_null(o.closed_by);
    store_order_free(&o);
    /* another station has no order, but the profile is under orders */
    assert_int_equal(store_order_find(f->s, "line-9", "station", NULL, &o, &controlled),
                     KL_ENOTFOUND);
    assert_int_equal(controlled, 1);
    assert_int_equal(store_order_close(f->s, "O-1", "officer", &was_open), KL_OK);
    assert_int_equal(was_open, 1);
    assert_int_equal(store_order_close(f->s, "O-1", "officer", &was_open), KL_OK);
    assert_int_equal(was_open, 0);
    assert_int_equal(store_order_close(f->s, "O-2", "officer", NULL), KL_ENOTFOUND);
    assert_int_equal(store_order_get(f->s, "O-1", &o), KL_OK);
    assert_string_equal(o.state, STORE_ORDER_CLOSED);
    assert_string_equal(o.closed_by, "officer");
    store_order_free(&o);
    store_order *v = NULL;
    size_t n = 0;
    assert_int_equal(store_order_list(f->s, &v, &n), KL_OK);
    assert_int_equal(n, 1);
    store_order_list_free(v, n);
    int64_t entries = 0;
    assert_int_equal(store_audit_verify(f->s, &entries), KL_OK);
}

static int count_cb(void *arg, const char *serial, const char *dev, time_t issued)
{
    (void)serial;
    (void)issued;
    assert_non_null(dev);
    (*(int *)arg)++;
    return 0;
}

static void order_make_model(store *s, const char *id, const char *model, int64_t count,
                             time_t expires, time_t created)
{
    uint8_t sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    store_order o = {.id = (char *)id,
                     .model = (char *)model,
                     .station = "line-7",
                     .profile = "station",
                     .count = count,
                     .expires = expires,
                     .created = created,
                     .created_by = "test",
                     .sig = sig,
                     .sig_len = sizeof sig};
    assert_int_equal(store_order_create(s, &o, "test"), KL_OK);
}

static void find_is(store *s, const char *model, const char *want)
{
    store_order o;
    int controlled = 0;
    assert_int_equal(store_order_find(s, "line-7", "station", model, &o, &controlled), KL_OK);
    assert_string_equal(o.id, want);
    store_order_free(&o);
}

/* A station with orders for two models, and a newer order that expired: each model finds its
 * own order, and the expired one hides no order that still has units. */
static void test_find_model_and_usable(void **state)
{
    fx *f = *state;
    time_t now = time(NULL);
    order_make_model(f->s, "O-A", "acme-1", 5, now + 3600, now - 30);
    order_make_model(f->s, "O-B", "acme-2", 5, now + 3600, now - 20);
    find_is(f->s, "acme-1", "O-A");
    find_is(f->s, "acme-2", "O-B");
    find_is(f->s, "acme-3", "O-B"); /* no order for the model: the newest usable says why */
    /* a newer acme-1 order that expired (created with a past expiry through the row) */
    order_make_model(f->s, "O-C", "acme-1", 5, now + 3600, now - 10);
    assert_int_equal(sql(f->path, "UPDATE orders SET expires = 1 WHERE id = 'O-C'", NULL), 0);
    find_is(f->s, "acme-1", "O-A");
    find_is(f->s, NULL, "O-B");
    /* O-A used up: the acme-1 order found is one that says why (not acme-2's) */
    assert_int_equal(sql(f->path, "UPDATE orders SET issued = count WHERE id = 'O-A'", NULL), 0);
    store_order o;
    int controlled = 0;
    assert_int_equal(store_order_find(f->s, "line-7", "station", "acme-1", &o, &controlled), KL_OK);
    assert_string_equal(o.model, "acme-1");
    store_order_free(&o);
}

/* An operator's UTF-8 name (a station's dashboard) is recorded as printable ASCII: the order's
 * report carries nothing else. */
static void test_close_actor_clean(void **state)
{
    fx *f = *state;
    store_order o;
    char small[8];
    order_make(f->s, "O-1", 3, time(NULL) + 3600);
    assert_int_equal(store_order_close(f->s, "O-1", "station for operator j\xc3\xbcrgen\n", NULL),
                     KL_OK);
    assert_int_equal(store_order_get(f->s, "O-1", &o), KL_OK);
    assert_string_equal(o.closed_by, "station for operator j\\xc3\\xbcrgen\\x0a");
    store_order_free(&o);
    store_order_actor_clean("ab\xff", small, sizeof small);
    assert_string_equal(small, "ab\\xff");
    store_order_actor_clean("abcd\xff", small, sizeof small); /* the escape does not fit */
    assert_string_equal(small, "abcd");
}

static void test_count_in_the_transaction(void **state)
{
    fx *f = *state;
    order_make(f->s, "O-3", 3, time(NULL) + 3600);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cert_with_order(f->s, "O-3", i), KL_OK);
    }
    assert_int_equal(cert_with_order(f->s, "O-3", 3), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "production order O-3 is exhausted (3 of 3 issued)"));
    store_cert c;
    assert_int_equal(store_cert_get(f->s, "00010003", &c), KL_ENOTFOUND); /* nothing half-done */
    assert_int_equal(cert_with_order(f->s, NULL, 4), KL_OK);              /* no order: free */
    assert_int_equal(cert_with_order(f->s, "O-none", 5), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "does not exist"));
    int n = 0;
    assert_int_equal(store_order_certs(f->s, "O-3", count_cb, &n), KL_OK);
    assert_int_equal(n, 3);
    /* closed and expired orders take nothing */
    order_make(f->s, "O-4", 10, time(NULL) + 3600);
    assert_int_equal(store_order_close(f->s, "O-4", "officer", NULL), KL_OK);
    assert_int_equal(cert_with_order(f->s, "O-4", 6), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "is closed"));
    order_make(f->s, "O-5", 10, time(NULL) + 3600);
    assert_int_equal(sql(f->path, "UPDATE orders SET expires = 1000 WHERE id = 'O-5'", NULL), 0);
    assert_int_equal(cert_with_order(f->s, "O-5", 7), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "expired"));
    /* guard rails: issued never above count, nothing deleted */
    assert_int_equal(sql(f->path, "UPDATE orders SET issued = 4 WHERE id = 'O-3'", NULL), -1);
    assert_int_equal(sql(f->path, "DELETE FROM orders WHERE id = 'O-4'", NULL), -1);
    assert_int_equal(sql(f->path, "DELETE FROM order_certs", NULL), -1);
    int64_t entries = 0;
    assert_int_equal(store_audit_verify(f->s, &entries), KL_OK);
}

#define RACERS 6
#define TRIES 5
#define QUOTA 7

static void test_processes_race(void **state)
{
    fx *f = *state;
    order_make(f->s, "O-R", QUOTA, time(NULL) + 3600);
    pid_t pids[RACERS];
    for (int i = 0; i < RACERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            store *s = NULL;
            int ok = 0;
            if (store_open(&s, f->path) != KL_OK) {
                _exit(100);
            }
            for (int k = 0; k < TRIES; k++) {
                kl_rc rc = cert_with_order(s, "O-R", 1000 + i * TRIES + k);
                if (rc == KL_OK) {
                    ok++;
                } else if (rc != KL_EPOLICY) {
                    _exit(101);
                }
            }
            store_close(s);
            _exit(ok);
        }
    }
    int total = 0;
    for (int i = 0; i < RACERS; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) <= TRIES);
        total += WEXITSTATUS(st);
    }
    assert_int_equal(total, QUOTA);
    int v = -1;
    assert_int_equal(sql(f->path, "SELECT issued FROM orders WHERE id = 'O-R'", &v), 0);
    assert_int_equal(v, QUOTA);
    assert_int_equal(sql(f->path, "SELECT COUNT(*) FROM order_certs WHERE order_id = 'O-R'", &v),
                     0);
    assert_int_equal(v, QUOTA);
    assert_int_equal(sql(f->path, "SELECT COUNT(*) FROM certs WHERE device_id LIKE 'DEV-1%'", &v),
                     0);
    assert_int_equal(v, QUOTA);
}

/* A store of the previous version (no orders tables) gains them when opened. */
static void test_migration(void **state)
{
    fx *f = *state;
    int v = -1, before = -1;
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(sql(f->path, "PRAGMA user_version", &before), 0);
    assert_int_equal(sql(f->path, "DROP TABLE order_certs", NULL), 0);
    assert_int_equal(sql(f->path, "DROP TABLE orders", NULL), 0);
    /* version 12: before the orders step (the steps after it run again) */
    assert_int_equal(sql(f->path, "PRAGMA user_version = 11", NULL), 0);
    assert_int_equal(store_open(&f->s, f->path), KL_OK);
    assert_int_equal(sql(f->path, "PRAGMA user_version", &v), 0);
    assert_int_equal(v, before);
    order_make(f->s, "O-M", 1, time(NULL) + 60);
    assert_int_equal(cert_with_order(f->s, "O-M", 1), KL_OK);
    assert_int_equal(cert_with_order(f->s, "O-M", 2), KL_EPOLICY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_find_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_model_and_usable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_actor_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_in_the_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_processes_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
