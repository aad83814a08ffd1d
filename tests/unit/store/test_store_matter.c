/* Unit tests for the matter_onboarding table (ca/store_matter.c): a device's onboarding data
 * recorded with its audit entry, read back, replaced when the device is provisioned again;
 * values out of range refused. The migration from older versions (the table made when an older
 * store is opened) is in test_store.c (DROP_V6). */
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

#include "matter_seal.h"
#include "store_matter.h"
#include "store_fx.h"

typedef store_fx fx;

static int setup(void **state)
{
    return store_fx_setup(state, "matter");
}

static int teardown(void **state)
{
    return store_fx_teardown(state);
}

static int sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static uint8_t g_salt[32], g_ver[97];

static store_matter rec(const char *dev, int64_t disc)
{
    memset(g_salt, 0x5a, sizeof g_salt);
    memset(g_ver, 0x11, sizeof g_ver);
    g_ver[32] = 0x04;
    store_matter m = {.device_id = (char *)dev,
                      .cert_serial = "4a1b2c3d4e5f60718293a4b5c6d7e8f9",
                      .discriminator = disc,
                      .iterations = 10000,
                      .salt = g_salt,
                      .salt_len = sizeof g_salt,
                      .verifier = g_ver,
                      .verifier_len = sizeof g_ver};
    return m;
}

static void test_put_get_replace(void **state)
{
    fx *f = *state;
    store_matter m = rec("SN-1", 3840), got;
    assert_int_equal(store_matter_get(f->s, "SN-1", &got), KL_ENOTFOUND);
    assert_int_equal(store_matter_put(f->s, &m, "station:test"), KL_OK);
    assert_int_equal(store_matter_get(f->s, "SN-1", &got), KL_OK);
    assert_string_equal(got.device_id, "SN-1");
    assert_int_equal(got.discriminator, 3840);
    assert_int_equal(got.iterations, 10000);
    assert_int_equal(got.salt_len, 32);
    assert_memory_equal(got.salt, g_salt, 32);
    assert_int_equal(got.verifier_len, 97);
    assert_memory_equal(got.verifier, g_ver, 97);
    assert_true(got.updated > 0);
    store_matter_free(&got);
    /* provisioned again: replaced, one row */
    m = rec("SN-1", 17);
    assert_int_equal(store_matter_put(f->s, &m, "station:test"), KL_OK);
    assert_int_equal(store_matter_get(f->s, "SN-1", &got), KL_OK);
    assert_int_equal(got.discriminator, 17);
    assert_null(got.passcode_sealed);
    store_matter_free(&got);
    /* with a sealed passcode (keep-passcode), then without it again: cleared */
    uint8_t sealed[MATTER_SEAL_LEN];
    memset(sealed, 0xab, sizeof sealed);
    m.passcode_sealed = sealed;
    m.passcode_sealed_len = sizeof sealed;
    assert_int_equal(store_matter_put(f->s, &m, "station:test"), KL_OK);
    assert_int_equal(store_matter_get(f->s, "SN-1", &got), KL_OK);
    assert_int_equal(got.passcode_sealed_len, MATTER_SEAL_LEN);
    assert_memory_equal(got.passcode_sealed, sealed, MATTER_SEAL_LEN);
    store_matter_free(&got);
    m.passcode_sealed = NULL;
    m.passcode_sealed_len = 0;
    assert_int_equal(store_matter_put(f->s, &m, "station:test"), KL_OK);
    assert_int_equal(store_matter_get(f->s, "SN-1", &got), KL_OK);
    assert_null(got.passcode_sealed);
    store_matter_free(&got);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM matter_onboarding"), 1);
    assert_int_equal(
        sql_int(f->path, "SELECT count(*) FROM audit WHERE action = 'matter-onboarding'"), 4);
}

static void test_refusals(void **state)
{
    fx *f = *state;
    store_matter m = rec("SN-2", 4096);
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE); /* discriminator > 12 bits */
    m = rec("SN-2", 1);
    m.iterations = 999;
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    m = rec("SN-2", 1);
    m.salt_len = 15;
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    m = rec("SN-2", 1);
    m.verifier_len = 96;
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    m = rec("SN-2", 1);
    g_ver[32] = 0x02; /* L not an uncompressed point */
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    m = rec("", 1);
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    uint8_t sealed[MATTER_SEAL_LEN + 1] = {0};
    m = rec("SN-2", 1);
    m.passcode_sealed = sealed;
    m.passcode_sealed_len = MATTER_SEAL_LEN + 1;
    assert_int_equal(store_matter_put(f->s, &m, "t"), KL_EUSAGE);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM matter_onboarding"), 0);
}

/* A lost update refused: keyline-cad A reads a device's onboarding data (none) and checks it,
 * keyline-cad B (another connection on the same store) records the station's meanwhile; A's
 * write, allowed by what it read, does not replace it (store_matter_put_if compares the DAC the
 * row names in the write's transaction). Read again, it is written. */
static void test_put_if(void **state)
{
    fx *f = *state;
    store *b = NULL;
    store_matter got;
    assert_int_equal(store_open(&b, f->path), KL_OK);
    store_device_seen none = {NULL, NULL};
    store_matter st = rec("SN-R", 100);
    st.cert_serial = "0D01";
    assert_int_equal(store_matter_put_if(b, &st, "station", &none), KL_OK);
    store_matter est = rec("SN-R", 4095);
    est.cert_serial = "0D02";
    assert_int_equal(store_matter_put_if(f->s, &est, "est", &none), KL_EEXIST);
    assert_non_null(strstr(kl_errmsg(), "device SN-R: its Matter onboarding data changed since "
                                        "it was read (it names certificate 0D01, not in the "
                                        "store, now)"));
    assert_int_equal(store_matter_get(f->s, "SN-R", &got), KL_OK);
    assert_string_equal(got.cert_serial, "0D01");
    assert_int_equal(got.discriminator, 100);
    store_matter_free(&got);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit WHERE action = "
                                      "'matter-onboarding'"),
                     1);
    store_device_seen seen = {"0D01", NULL};
    assert_int_equal(store_matter_put_if(f->s, &est, "est", &seen), KL_OK);
    assert_int_equal(store_matter_get(b, "SN-R", &got), KL_OK);
    assert_string_equal(got.cert_serial, "0D02");
    store_matter_free(&got);
    assert_int_equal(store_matter_put_if(b, &st, "station", &seen), KL_EEXIST);
    store_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_if, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
