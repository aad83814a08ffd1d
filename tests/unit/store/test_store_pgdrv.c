/* The PostgreSQL driver itself (ca/store_pg.c), below the store logic, on a throwaway cluster
 * (ctest unit.store.pgdrv: tests/lib/pg.sh run, KL_TEST_STORE_URL): a statement run twice is
 * prepared on the server and still right when its parameter types change; rows read one at a
 * time stay complete when another statement runs on the connection in between; BEGIN waits
 * for the first statement and a transaction that ran none sends nothing; a connection killed
 * under prepared statements prepares them again; a server that went away is "unavailable"
 * (also when libpq says so without a SQLSTATE), and so is a write lock not had in time; a
 * refused login a configuration error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_err.h"
#include "store_db.h"

static const db_driver *drv = &store_pg_driver;

static db *conn_open(void)
{
    const char *url = getenv("KL_TEST_STORE_URL");
    db *d = NULL;
    assert_non_null(url);
    assert_int_equal(drv->open(&d, url, 0), KL_OK);
    return d;
}

/* The one integer row of `sql` (no parameters). */
static int64_t one_int(db *d, const char *sql)
{
    db_stmt *st = NULL;
    int row = 0;
    assert_int_equal(drv->prepare(d, sql, &st), KL_OK);
    assert_int_equal(drv->step(st, &row), KL_OK);
    assert_int_equal(row, 1);
    int64_t v = drv->col_int64(st, 0);
    drv->finalize(st);
    return v;
}

/* ?1 + 1 as bigint, with ?1 bound as an integer or as text. */
static int64_t plus_one(db_stmt *st, int64_t v, int as_text)
{
    char s[32];
    int row = 0;
    drv->reset(st);
    snprintf(s, sizeof s, "%lld", (long long)v);
    assert_int_equal(as_text ? drv->bind_text(st, 1, s) : drv->bind_int64(st, 1, v), KL_OK);
    assert_int_equal(drv->step(st, &row), KL_OK);
    assert_int_equal(row, 1);
    return drv->col_int64(st, 0);
}

static const char Q_PREPARED[] = "SELECT count(*)::bigint FROM pg_prepared_statements";

static void test_prepared(void **state)
{
    (void)state;
    db *d = conn_open();
    db_stmt *st = NULL;
    assert_int_equal(drv->prepare(d, "SELECT (?1::text)::bigint + 1", &st), KL_OK);
    assert_int_equal(plus_one(st, 41, 0), 42);
    assert_int_equal(one_int(d, Q_PREPARED), 0); /* a first run goes unnamed */
    assert_int_equal(plus_one(st, 1, 0), 2);
    assert_int_equal(one_int(d, Q_PREPARED), 1); /* the second prepared it */
    assert_int_equal(plus_one(st, 7, 0), 8);
    assert_int_equal(one_int(d, Q_PREPARED), 1); /* and later runs reuse it */
    /* other parameter types than it was prepared with: still right */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(plus_one(st, 100 + i, 1), 101 + i);
        assert_int_equal(plus_one(st, 200 + i, 0), 201 + i);
    }
    /* the session killed under it: a point read reconnects and prepares again */
    db_stmt *kill = NULL;
    int row = 0;
    assert_int_equal(drv->prepare(d, "SELECT pg_terminate_backend(pg_backend_pid())", &kill),
                     KL_OK);
    (void)drv->step(kill, &row);
    drv->finalize(kill);
    assert_int_equal(plus_one(st, 9, 0), 10);
    assert_int_equal(plus_one(st, 10, 0), 11);
    drv->finalize(st);
    drv->close(d);
}

static void test_rows_interleaved(void **state)
{
    (void)state;
    db *d = conn_open();
    db_stmt *rows = NULL, *other = NULL;
    int row = 0;
    int64_t sum = 0, n = 0;
    assert_int_equal(drv->begin(d, 0), KL_OK);
    assert_int_equal(drv->prepare(d, "SELECT x::bigint FROM generate_series(1, 20000) x", &rows),
                     KL_OK);
    assert_int_equal(drv->prepare(d, "SELECT ?1::bigint * 2", &other), KL_OK);
    for (;;) {
        assert_int_equal(drv->step(rows, &row), KL_OK);
        if (!row) {
            break;
        }
        sum += drv->col_int64(rows, 0);
        if (++n % 5000 == 0) { /* another statement while rows are still coming */
            drv->reset(other);
            assert_int_equal(drv->bind_int64(other, 1, n), KL_OK);
            assert_int_equal(drv->step(other, &row), KL_OK);
            assert_int_equal(row, 1);
            assert_int_equal(drv->col_int64(other, 0), 2 * n);
            drv->reset(other);
        }
    }
    assert_int_equal(n, 20000);
    assert_int_equal(sum, (int64_t)20000 * 20001 / 2);
    assert_int_equal(drv->commit(d), KL_OK);
    /* reset in the middle of the rows: the connection is usable at once */
    drv->reset(rows);
    assert_int_equal(drv->step(rows, &row), KL_OK);
    assert_int_equal(row, 1);
    drv->reset(rows);
    assert_int_equal(one_int(d, "SELECT 5::bigint"), 5);
    drv->finalize(rows);
    drv->finalize(other);
    drv->close(d);
}

static void test_begin_deferred(void **state)
{
    (void)state;
    db *d = conn_open();
    /* a write transaction that ran nothing: nothing sent, nothing held */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_true(drv->in_tx(d));
    assert_int_equal(drv->savepoint(d, DB_SP_BEGIN), KL_OK);
    assert_int_equal(drv->savepoint(d, DB_SP_RELEASE), KL_OK);
    assert_int_equal(drv->commit(d), KL_OK);
    assert_false(drv->in_tx(d));
    /* a write transaction holds the store's lock from its first statement to its end */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_int_equal(drv->savepoint(d, DB_SP_BEGIN), KL_OK);
    assert_int_equal(one_int(d, "SELECT count(*)::bigint FROM pg_locks WHERE locktype ="
                                " 'advisory' AND pid = pg_backend_pid() AND granted"),
                     1);
    assert_int_equal(drv->savepoint(d, DB_SP_ROLLBACK), KL_OK);
    assert_int_equal(drv->savepoint(d, DB_SP_RELEASE), KL_OK);
    assert_int_equal(drv->commit(d), KL_OK);
    assert_int_equal(one_int(d, "SELECT count(*)::bigint FROM pg_locks WHERE locktype ="
                                " 'advisory' AND pid = pg_backend_pid()"),
                     0);
    /* a read transaction: its COMMIT is not waited for, the next statement still runs */
    assert_int_equal(drv->begin(d, 0), KL_OK);
    assert_int_equal(one_int(d, "SELECT 3::bigint"), 3);
    assert_int_equal(drv->commit(d), KL_OK);
    assert_false(drv->in_tx(d));
    assert_int_equal(one_int(d, "SELECT 4::bigint"), 4);
    drv->close(d);
}

/* A write transaction begun on d, with the first of many rows of a statement read (the rest
 * still coming from the server). */
static db_stmt *rows_started(db *d)
{
    db_stmt *rows = NULL;
    int row = 0;
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_int_equal(
        drv->prepare(d, "SELECT x::bigint, repeat('r', 2000) FROM generate_series(1, 100000) x",
                     &rows),
        KL_OK);
    assert_int_equal(drv->step(rows, &row), KL_OK);
    assert_int_equal(row, 1);
    return rows;
}

/* The session killed while a write transaction's rows were still coming: the statements
 * after it fail and nothing of the transaction is stored; none runs on a new session outside
 * the transaction (without its BEGIN and lock: committed one by one). */
static void test_lost_while_streaming(void **state)
{
    (void)state;
    db *d = conn_open(), *k = conn_open();
    db_stmt *rows = NULL, *ins = NULL;
    int row = 0;
    char sql[128];
    assert_int_equal(drv->exec(d, "CREATE TABLE lost_rows (x BIGINT)"), KL_OK);
    int64_t pid = one_int(d, "SELECT pg_backend_pid()::bigint");
    rows = rows_started(d);
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)::int::bigint", (long long)pid);
    assert_int_equal(one_int(k, sql), 1);
    drv->reset(rows); /* the rest of the rows: the connection ends under them */
    assert_int_equal(drv->prepare(d, "INSERT INTO lost_rows VALUES (1)", &ins), KL_OK);
    kl_rc rc = drv->step(ins, &row);
    if (rc == KL_OK) {
        rc = drv->commit(d);
    } else {
        drv->rollback(d);
    }
    assert_int_not_equal(rc, KL_OK);
    assert_int_equal(one_int(k, "SELECT count(*)::bigint FROM lost_rows"), 0);
    /* and the handle works again */
    assert_int_equal(one_int(d, "SELECT 6::bigint"), 6);
    drv->finalize(ins);
    drv->finalize(rows);
    drv->close(k);
    drv->close(d);
}

/* Run one statement to its end: its kl_rc. */
static kl_rc run(db *d, const char *sql)
{
    db_stmt *st = NULL;
    int row = 0;
    assert_int_equal(drv->prepare(d, sql, &st), KL_OK);
    kl_rc rc;
    while ((rc = drv->step(st, &row)) == KL_OK && row) {
    }
    drv->finalize(st);
    return rc;
}

/* tests/lib/pg.sh VERB on this test's cluster (crash: pg_ctl stop -m immediate; up). */
static void cluster(const char *verb)
{
    const char *sh = getenv("KL_PG_SH"), *dir = getenv("KL_PG_DIR");
    char cmd[1024];
    assert_non_null(sh);
    assert_non_null(dir);
    snprintf(cmd, sizeof cmd, "'%s' %s '%s'", sh, verb, dir);
    assert_int_equal(system(cmd), 0);
}

/* The failure is "unavailable": retried by keyline-cad's clients. */
static void assert_unavailable(db *d, kl_rc rc)
{
    if (rc != KL_EUNAVAIL || d->err != DB_E_UNAVAILABLE) {
        fail_msg("want unavailable, got %s (class %d): %s", kl_rc_name(rc), d->err, kl_errmsg());
    }
}

/* The server stopped at once (pg_ctl stop -m immediate: no error to the sessions) and started
 * again before the next statement: libpq reports that statement's failed write ("server closed
 * the connection unexpectedly") without a SQLSTATE while PQstatus() still reads CONNECTION_OK.
 * It is "unavailable" (it was "io": a station failed its device for good), it does not go out
 * on a new session in the middle of a transaction, and the next use reconnects. */
static void test_gone_unavailable(void **state)
{
    (void)state;
    db *d = conn_open(), *k = NULL;
    db_stmt *rows = NULL;
    int row = 0;
    assert_int_equal(drv->exec(d, "CREATE TABLE gone_rows (x BIGINT)"), KL_OK);

    /* between two statements of a write transaction */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_int_equal(run(d, "INSERT INTO gone_rows VALUES (1)"), KL_OK);
    cluster("crash");
    cluster("up");
    assert_unavailable(d, run(d, "INSERT INTO gone_rows VALUES (2)"));
    assert_false(drv->in_tx(d));
    drv->rollback(d);
    k = conn_open();
    assert_int_equal(one_int(k, "SELECT count(*)::bigint FROM gone_rows"), 0);

    /* at the COMMIT */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_int_equal(run(d, "INSERT INTO gone_rows VALUES (3)"), KL_OK);
    cluster("crash");
    cluster("up");
    assert_unavailable(d, drv->commit(d));
    drv->rollback(d);
    drv->close(k);
    k = conn_open();
    assert_int_equal(one_int(k, "SELECT count(*)::bigint FROM gone_rows"), 0);

    /* while a write transaction's rows are read */
    rows = rows_started(d);
    cluster("crash");
    kl_rc rc;
    while ((rc = drv->step(rows, &row)) == KL_OK && row) {
    }
    assert_unavailable(d, rc);
    drv->finalize(rows);
    drv->rollback(d);

    /* a point read while the server is down, then once it is back: reconnected */
    assert_unavailable(d, run(d, "SELECT 1::bigint"));
    cluster("up");
    assert_int_equal(one_int(d, "SELECT 7::bigint"), 7);
    /* a point read on a session cut while idle: not carried out, so tried on a new one */
    cluster("crash");
    cluster("up");
    assert_int_equal(one_int(d, "SELECT 8::bigint"), 8);
    drv->close(k);
    drv->close(d);
}

/* A URL for database `dbname` as `user` on the test cluster. */
static const char *url_for(const char *dbname, const char *user, const char *port)
{
    static char url[1024];
    const char *host = getenv("KL_TEST_PG_HOST");
    assert_non_null(host);
    snprintf(url, sizeof url, "postgresql:///%s?host=%s&port=%s&user=%s", dbname, host,
             port ? port : getenv("KL_TEST_PG_PORT"), user);
    return url;
}

/* A failure of class "config" whose message names `what`. */
static void assert_config(db *d, kl_rc rc, const char *what)
{
    if (rc != KL_EUSAGE || (d && d->err != DB_E_CONFIG) || !strstr(kl_errmsg(), what) ||
        !strstr(kl_errmsg(), "configuration error")) {
        fail_msg("want a configuration error naming '%s', got %s (class %d): %s", what,
                 kl_rc_name(rc), d ? d->err : -1, kl_errmsg());
    }
}

/* A write transaction that waits for the store's write lock past lock_timeout (another process
 * holds it: a long migration, a stuck session) fails "unavailable", to be retried, not "io",
 * which fails a station's device for good. The wait shortened for the test. */
static void test_busy_unavailable(void **state)
{
    (void)state;
    db *d = conn_open(), *k = conn_open();
    assert_int_equal(drv->exec(d, "SET lock_timeout = '300ms'"), KL_OK);
    assert_int_equal(drv->begin(k, 1), KL_OK);
    assert_int_equal(one_int(k, "SELECT 1::bigint"), 1); /* BEGIN and the lock go out now */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    kl_rc rc = run(d, "SELECT 2::bigint");
    if (rc != KL_EUNAVAIL || d->err != DB_E_BUSY) {
        fail_msg("want unavailable (busy), got %s (class %d): %s", kl_rc_name(rc), d->err,
                 kl_errmsg());
    }
    drv->rollback(d);
    drv->rollback(k);
    /* once the lock is free the same handle writes */
    assert_int_equal(drv->begin(d, 1), KL_OK);
    assert_int_equal(one_int(d, "SELECT 3::bigint"), 3);
    assert_int_equal(drv->commit(d), KL_OK);
    drv->close(k);
    drv->close(d);
}

/* Opening: a missing database, a missing role, a role that may not log in and a malformed URL
 * are configuration errors (KL_EUSAGE: keyline-cad and keyline-ca exit at start with the
 * reason), never "unavailable" (503 and retries for ever); a server not there stays
 * "unavailable". */
static void test_login_refused_open(void **state)
{
    (void)state;
    db *k = conn_open(), *d = NULL;
    assert_int_equal(run(k, "CREATE ROLE kl_nologin NOLOGIN"), KL_OK);
    assert_config(NULL, drv->open(&d, url_for("kl_nope", "keyline", NULL), 0),
                  "database \"kl_nope\" does not exist");
    assert_true(strstr(kl_errmsg(), "3D000") != NULL);
    assert_null(d);
    assert_config(NULL, drv->open(&d, url_for("keyline", "kl_nobody", NULL), 0),
                  "role \"kl_nobody\" does not exist");
    assert_config(NULL, drv->open(&d, url_for("keyline", "kl_nologin", NULL), 0),
                  "not permitted to log in");
    char bad[1100];
    snprintf(bad, sizeof bad, "%s&bogus=1", url_for("keyline", "keyline", NULL));
    assert_config(NULL, drv->open(&d, bad, 0), "bogus");
    /* nothing listens on port 1: the server is not there, not misconfigured */
    kl_rc rc = drv->open(&d, url_for("keyline", "keyline", "1"), 0);
    assert_int_equal(rc, KL_EUNAVAIL);
    assert_null(d);
    drv->close(k);
}

/* At run time (a reconnect): the database dropped under the connection, or the role no longer
 * allowed to log in, is a configuration error too (not retried: docs/deployment.md
 * "PostgreSQL"); once it is put right the same handle works again. */
static void test_login_refused_runtime(void **state)
{
    (void)state;
    db *k = conn_open(), *d = NULL;
    assert_int_equal(run(k, "CREATE DATABASE kl_drop"), KL_OK);
    assert_int_equal(run(k, "CREATE ROLE kl_rt LOGIN"), KL_OK);
    assert_int_equal(drv->open(&d, url_for("kl_drop", "kl_rt", NULL), 0), KL_OK);
    assert_int_equal(one_int(d, "SELECT 1::bigint"), 1);

    assert_int_equal(run(k, "DROP DATABASE kl_drop WITH (FORCE)"), KL_OK);
    assert_config(d, run(d, "SELECT 2::bigint"), "database \"kl_drop\" does not exist");
    assert_config(d, drv->begin(d, 1), "database \"kl_drop\" does not exist");
    assert_int_equal(run(k, "CREATE DATABASE kl_drop"), KL_OK);
    assert_int_equal(one_int(d, "SELECT 3::bigint"), 3);

    assert_int_equal(run(k, "ALTER ROLE kl_rt NOLOGIN"), KL_OK);
    assert_int_equal(one_int(k,
                             "SELECT count(pg_terminate_backend(pid))::bigint FROM pg_stat_activity"
                             " WHERE usename = 'kl_rt'"),
                     1);
    assert_config(d, run(d, "SELECT 4::bigint"), "not permitted to log in");
    assert_int_equal(run(k, "ALTER ROLE kl_rt LOGIN"), KL_OK);
    assert_int_equal(one_int(d, "SELECT 5::bigint"), 5);
    drv->close(d);
    drv->close(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepared),           cmocka_unit_test(test_rows_interleaved),
        cmocka_unit_test(test_begin_deferred),     cmocka_unit_test(test_lost_while_streaming),
        cmocka_unit_test(test_gone_unavailable),   cmocka_unit_test(test_busy_unavailable),
        cmocka_unit_test(test_login_refused_open), cmocka_unit_test(test_login_refused_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
