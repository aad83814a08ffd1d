/* keyline: the PostgreSQL driver (libpq): storage and transactions only (store_db.h).
 *
 * Several keyline-cad processes on several hosts share one database. What must be decided
 * one at a time (audit chain appends, CRL numbers per CA, claims, approvals) is decided inside
 * a write transaction, and every write transaction takes one transaction-scoped advisory lock
 * first (pg_advisory_xact_lock(STORE_PG_LOCK)), so write transactions of every process run one
 * after the other, exactly like SQLite's BEGIN IMMEDIATE; each statement after the lock sees
 * every transaction committed before it (READ COMMITTED). Concurrent requests of one process
 * still share one commit (group commit, store_core.c). A read transaction is REPEATABLE READ
 * READ ONLY: one snapshot. The lock is released by COMMIT or ROLLBACK, also when the
 * connection dies (the server ends the session).
 *
 * Connection loss: a statement that fails because the server went away fails with the error
 * class "unavailable" (kl_rc KL_EUNAVAIL: retry later; the transaction is gone, nothing of it
 * was committed). The next transaction (or point read) reconnects by itself. A COMMIT whose
 * answer was lost is reported as failed although the server may have committed it: a
 * certificate may then be recorded but was never released, never the reverse.
 *
 * Parameters are sent typed (text, int8 in binary, bytea in binary, NULL untyped) with
 * PQexecParams; results come back in binary. ?N in the SQL becomes $N. */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"

#define STORE_PG_LOCK "1263293268" /* 0x4b4c5354 "KLST": the lock of write transactions */
#define STORE_PG_APP "keyline-store"
#define STORE_PG_LOCK_TIMEOUT "10s" /* like SQLite's busy timeout */
#define PG_TEXT_OID 25
#define PG_INT8_OID 20
#define PG_INT4_OID 23
#define PG_INT2_OID 21
#define PG_BOOL_OID 16
#define PG_BYTEA_OID 17

typedef struct {
    db base; /* first */
    PGconn *pg;
    char *url;
} pg_db;

typedef struct {
    db_stmt base; /* first */
    char *sql;    /* with $N */
    int np;       /* parameters */
    char **val;   /* owned copies (NULL: SQL NULL) */
    int *len;
    int *fmt;
    Oid *type;
    PGresult *res;
    int row; /* current row, -1 before the first */
    int nrows;
    int executed;
    int64_t changes;
} pg_stmt;

static pg_db *pgd(db *d)
{
    return (pg_db *)d;
}

static pg_stmt *pgs(db_stmt *st)
{
    return (pg_stmt *)st;
}

static int pg_lost(pg_db *q)
{
    return !q->pg || PQstatus(q->pg) != CONNECTION_OK;
}

/* The class of a failed result (SQLSTATE, or the connection's state). */
static int pg_class(pg_db *q, const PGresult *res)
{
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (pg_lost(q) || !code) {
        return pg_lost(q) ? DB_E_UNAVAILABLE : DB_E_OTHER;
    }
    if (strcmp(code, "23505") == 0) {
        return DB_E_UNIQUE;
    }
    if (strcmp(code, "23503") == 0) {
        return DB_E_FOREIGN;
    }
    if (strncmp(code, "23", 2) == 0) {
        return DB_E_CONSTRAINT;
    }
    /* serialization failure, deadlock, lock_timeout */
    if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0 || strcmp(code, "55P03") == 0) {
        return DB_E_BUSY;
    }
    /* connection exceptions; admin/crash shutdown, cannot connect now; read-only standby */
    if (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0 || strcmp(code, "25006") == 0) {
        return DB_E_UNAVAILABLE;
    }
    return DB_E_OTHER;
}

/* Record the failure of `res` (NULL: the connection's) as the connection's. */
static kl_rc pg_err(pg_db *q, const PGresult *res, const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (!m || !*m) {
        m = q->pg ? PQerrorMessage(q->pg) : "no connection";
    }
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) {
        n--;
    }
    q->base.err = pg_class(q, res);
    kl_rc rc = q->base.err == DB_E_UNAVAILABLE ? KL_EUNAVAIL
               : q->base.err == DB_E_BUSY      ? KL_EIO
               : q->base.err == DB_E_OTHER     ? KL_EIO
                                               : KL_EINPUT;
    return kl_fail(rc, "%s: %.*s", what, (int)(n > 700 ? 700 : n), m);
}

/* A statement without parameters and results we need; res_out (NULL ok) keeps the result. */
static kl_rc pg_cmd(pg_db *q, const char *sql, PGresult **res_out)
{
    PGresult *res = PQexec(q->pg, sql);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        kl_rc rc = pg_err(q, res, sql);
        PQclear(res);
        return rc;
    }
    if (res_out) {
        *res_out = res;
    } else {
        PQclear(res);
    }
    return KL_OK;
}

static void pg_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* NOTICEs (e.g. "relation already exists, skipping") are not errors */
}

/* After a (re)connect: the session's settings. */
static kl_rc pg_session(pg_db *q)
{
    PQsetNoticeProcessor(q->pg, pg_notice, NULL);
    return pg_cmd(q,
                  "SET lock_timeout = '" STORE_PG_LOCK_TIMEOUT "';"
                  " SET client_min_messages = warning",
                  NULL);
}

/* The server cannot be reached: KL_EUNAVAIL with libpq's reason. */
static kl_rc pg_unreachable(pg_db *q, const char *verb)
{
    const char *m = q->pg ? PQerrorMessage(q->pg) : "out of memory";
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n') {
        n--;
    }
    q->base.err = DB_E_UNAVAILABLE;
    return kl_fail(KL_EUNAVAIL, "store unavailable: cannot %s %s: %.*s", verb, q->base.name,
                   (int)(n > 600 ? 600 : n), m);
}

/* Reconnect when the connection is gone (never inside a transaction: that one is lost). */
static kl_rc pg_ensure(pg_db *q)
{
    if (!pg_lost(q)) {
        return KL_OK;
    }
    PQreset(q->pg);
    return pg_lost(q) ? pg_unreachable(q, "reach") : pg_session(q);
}

static int pg_in_tx(db *d)
{
    pg_db *q = pgd(d);
    if (pg_lost(q)) {
        return 0;
    }
    PGTransactionStatusType t = PQtransactionStatus(q->pg);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static kl_rc pg_begin(db *d, int write)
{
    pg_db *q = pgd(d);
    const char *sql = write ? "BEGIN; SELECT pg_advisory_xact_lock(" STORE_PG_LOCK ")"
                            : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    kl_rc rc = KL_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = pg_ensure(q);
        if (rc != KL_OK) {
            return rc;
        }
        rc = pg_cmd(q, sql, NULL);
        if (rc == KL_OK || !pg_lost(q)) {
            break; /* done, or a failure that a new connection would not cure */
        }
        /* a connection that died while idle (server restarted): once more on a new one */
    }
    if (rc != KL_OK && pg_in_tx(d)) {
        (void)pg_cmd(q, "ROLLBACK", NULL);
    }
    return rc;
}

static kl_rc pg_commit(db *d)
{
    return pg_cmd(pgd(d), "COMMIT", NULL);
}

static void pg_rollback(db *d)
{
    if (pg_in_tx(d)) {
        PQclear(PQexec(pgd(d)->pg, "ROLLBACK"));
    }
}

static kl_rc pg_savepoint(db *d, int what)
{
    return pg_cmd(pgd(d),
                  what == DB_SP_BEGIN     ? "SAVEPOINT kl_op"
                  : what == DB_SP_RELEASE ? "RELEASE SAVEPOINT kl_op"
                                          : "ROLLBACK TO SAVEPOINT kl_op",
                  NULL);
}

static kl_rc pg_exec(db *d, const char *sql)
{
    return pg_cmd(pgd(d), sql, NULL);
}

/* ---- schema version: a one-row table keyline_meta ---- */

static kl_rc pg_int_query(pg_db *q, const char *sql, int64_t *out)
{
    PGresult *res = NULL;
    kl_rc rc = pg_cmd(q, sql, &res);
    if (rc == KL_OK) {
        *out = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
        PQclear(res);
    }
    return rc;
}

static kl_rc pg_schema_get(db *d, int64_t *version)
{
    pg_db *q = pgd(d);
    kl_rc rc = KL_OK;
    int64_t n = 0;
    *version = 0;
    TRY(pg_int_query(q,
                     "SELECT count(*) FROM pg_catalog.pg_tables"
                     " WHERE schemaname = current_schema() AND tablename = 'keyline_meta'",
                     &n));
    if (n == 0) {
        TRY(pg_int_query(q,
                         "SELECT count(*) FROM pg_catalog.pg_class c JOIN"
                         " pg_catalog.pg_namespace s ON s.oid = c.relnamespace"
                         " WHERE s.nspname = current_schema()",
                         &n));
        ENSURE(n == 0, KL_EINPUT,
               "store: %s is a PostgreSQL database with other content, not a keyline store",
               d->name);
        return KL_OK;
    }
    TRY(pg_int_query(
        q, "SELECT version FROM keyline_meta WHERE id = 1 AND app = '" STORE_PG_APP "'", version));
    ENSURE(*version > 0, KL_EINPUT, "store: %s: keyline_meta does not describe a keyline store",
           d->name);
out:
    return rc;
}

static kl_rc pg_schema_set(db *d, int64_t version)
{
    char sql[256];
    if (version == 1) {
        snprintf(sql, sizeof sql,
                 "CREATE TABLE keyline_meta (id BIGINT PRIMARY KEY CHECK (id = 1),"
                 " app TEXT NOT NULL, version BIGINT NOT NULL);"
                 " INSERT INTO keyline_meta VALUES (1, '" STORE_PG_APP "', 1)");
    } else {
        snprintf(sql, sizeof sql, "UPDATE keyline_meta SET version = %lld WHERE id = 1",
                 (long long)version);
    }
    return pg_cmd(pgd(d), sql, NULL);
}

/* ---- statements ---- */

/* ?N -> $N outside quoted literals; *np gets the highest N. */
static char *pg_translate(const char *sql, int *np)
{
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    int quote = 0;
    *np = 0;
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i <= n; i++) {
        char ch = sql[i];
        if (ch == '\'') {
            quote = !quote;
        }
        if (ch == '?' && !quote && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            int v = (int)strtol(sql + i + 1, NULL, 10); /* our own statements: ?1..?99 */
            *np = v > *np ? v : *np;
            ch = '$';
        }
        out[i] = ch;
    }
    return out;
}

static void pg_finalize(db_stmt *st);

static kl_rc pg_prepare(db *d, const char *sql, db_stmt **out)
{
    pg_stmt *s = calloc(1, sizeof *s);
    if (!s || !(s->sql = pg_translate(sql, &s->np))) {
        free(s);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    int n = s->np ? s->np : 1;
    s->val = calloc((size_t)n, sizeof *s->val);
    s->len = calloc((size_t)n, sizeof *s->len);
    s->fmt = calloc((size_t)n, sizeof *s->fmt);
    s->type = calloc((size_t)n, sizeof *s->type);
    s->base.drv = d->drv;
    s->base.conn = d;
    s->row = -1;
    if (!s->val || !s->len || !s->fmt || !s->type) {
        pg_finalize(&s->base);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    *out = &s->base;
    return KL_OK;
}

static void pg_reset(db_stmt *st)
{
    pg_stmt *s = pgs(st);
    PQclear(s->res);
    s->res = NULL;
    s->row = -1;
    s->nrows = 0;
    s->executed = 0;
    for (int i = 0; i < s->np; i++) {
        free(s->val[i]);
        s->val[i] = NULL;
        s->len[i] = 0;
        s->fmt[i] = 0;
        s->type[i] = 0;
    }
}

static void pg_finalize(db_stmt *st)
{
    if (!st) {
        return;
    }
    pg_stmt *s = pgs(st);
    if (s->val && s->len && s->fmt && s->type) { /* not when pg_prepare ran out of memory */
        pg_reset(st);
    }
    free(s->val);
    free(s->len);
    free(s->fmt);
    free(s->type);
    free(s->sql);
    free(s);
}

/* Bind parameter i (1-based) to a copy of n bytes (p NULL: SQL NULL). */
static kl_rc pg_bind(db_stmt *st, int i, const void *p, size_t n, int fmt, Oid type)
{
    pg_stmt *s = pgs(st);
    if (i < 1 || i > s->np) {
        return kl_fail(KL_EINTERNAL, "store: bind: parameter %d of %d", i, s->np);
    }
    i--;
    free(s->val[i]);
    s->val[i] = NULL;
    s->len[i] = 0;
    s->fmt[i] = 0;
    s->type[i] = 0;
    if (!p) {
        return KL_OK;
    }
    if (n > INT32_MAX || !(s->val[i] = malloc(n + 1))) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    memcpy(s->val[i], p, n);
    s->val[i][n] = 0;
    s->len[i] = (int)n;
    s->fmt[i] = fmt;
    s->type[i] = type;
    return KL_OK;
}

static kl_rc pg_bind_text(db_stmt *st, int i, const char *v)
{
    return pg_bind(st, i, v, v ? strlen(v) : 0, 0, PG_TEXT_OID);
}

static kl_rc pg_bind_int64(db_stmt *st, int i, int64_t v)
{
    uint8_t be[8];
    uint64_t u = (uint64_t)v;
    for (int k = 7; k >= 0; k--) {
        be[k] = (uint8_t)(u & 0xff);
        u >>= 8;
    }
    return pg_bind(st, i, be, sizeof be, 1, PG_INT8_OID);
}

static kl_rc pg_bind_blob(db_stmt *st, int i, const uint8_t *p, size_t n)
{
    return pg_bind(st, i, (p && n) ? p : NULL, n, 1, PG_BYTEA_OID);
}

static kl_rc pg_bind_null(db_stmt *st, int i)
{
    return pg_bind(st, i, NULL, 0, 0, 0);
}

static kl_rc pg_run(pg_stmt *s)
{
    pg_db *q = pgd(s->base.conn);
    if (!pg_in_tx(&q->base)) {
        /* a point read outside a transaction: reconnect first if the connection is gone */
        kl_rc rc = pg_ensure(q);
        if (rc != KL_OK) {
            return rc;
        }
    }
    for (int attempt = 0;; attempt++) {
        int in_tx = pg_in_tx(&q->base);
        s->res = PQexecParams(q->pg, s->sql, s->np, s->type, (const char *const *)s->val, s->len,
                              s->fmt, 1);
        ExecStatusType t = s->res ? PQresultStatus(s->res) : PGRES_FATAL_ERROR;
        if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK) {
            s->nrows = PQntuples(s->res);
            const char *ct = PQcmdTuples(s->res);
            s->changes = (ct && *ct) ? strtoll(ct, NULL, 10) : 0;
            s->executed = 1;
            return KL_OK;
        }
        kl_rc rc = pg_err(q, s->res, "statement");
        PQclear(s->res);
        s->res = NULL;
        /* outside a transaction a statement on a connection that died idle is tried once more
         * on a new one (it was not carried out); inside one the transaction is lost */
        if (in_tx || attempt > 0 || q->base.err != DB_E_UNAVAILABLE || pg_ensure(q) != KL_OK) {
            return rc;
        }
    }
}

static kl_rc pg_step(db_stmt *st, int *row)
{
    pg_stmt *s = pgs(st);
    *row = 0;
    if (!s->executed) {
        kl_rc rc = pg_run(s);
        if (rc != KL_OK) {
            return rc;
        }
    }
    if (s->row < s->nrows) {
        s->row++;
    }
    *row = s->row < s->nrows;
    return KL_OK;
}

static int pg_col_null(db_stmt *st, int i)
{
    pg_stmt *s = pgs(st);
    return !s->res || s->row < 0 || s->row >= s->nrows || PQgetisnull(s->res, s->row, i);
}

static int64_t pg_col_int64(db_stmt *st, int i)
{
    pg_stmt *s = pgs(st);
    if (pg_col_null(st, i)) {
        return 0;
    }
    const uint8_t *p = (const uint8_t *)PQgetvalue(s->res, s->row, i);
    int n = PQgetlength(s->res, s->row, i);
    Oid t = PQftype(s->res, i);
    if (t != PG_INT8_OID && t != PG_INT4_OID && t != PG_INT2_OID && t != PG_BOOL_OID) {
        return 0;
    }
    uint64_t u = 0;
    for (int k = 0; k < n && k < 8; k++) {
        u = (u << 8) | p[k];
    }
    /* sign-extend a 2- or 4-byte integer */
    if (n < 8 && n > 0 && (p[0] & 0x80) && t != PG_BOOL_OID) {
        u |= ~(uint64_t)0 << (8 * n);
    }
    return (int64_t)u;
}

static const char *pg_col_text(db_stmt *st, int i, size_t *len)
{
    pg_stmt *s = pgs(st);
    *len = 0;
    if (pg_col_null(st, i)) {
        return NULL;
    }
    *len = (size_t)PQgetlength(s->res, s->row, i);
    return PQgetvalue(s->res, s->row, i); /* libpq appends a NUL */
}

static const uint8_t *pg_col_blob(db_stmt *st, int i, size_t *len)
{
    return (const uint8_t *)pg_col_text(st, i, len);
}

static int64_t pg_changes(db_stmt *st)
{
    return pgs(st)->changes;
}

static int pg_col_count(db_stmt *st)
{
    pg_stmt *s = pgs(st);
    return s->res ? PQnfields(s->res) : 0;
}

static const char *pg_col_name(db_stmt *st, int i)
{
    pg_stmt *s = pgs(st);
    return s->res ? PQfname(s->res, i) : NULL;
}

static int pg_col_kind(db_stmt *st, int i)
{
    if (pg_col_null(st, i)) {
        return DB_K_NULL;
    }
    switch (PQftype(pgs(st)->res, i)) {
    case PG_INT8_OID:
    case PG_INT4_OID:
    case PG_INT2_OID:
    case PG_BOOL_OID: return DB_K_INT;
    case PG_BYTEA_OID: return DB_K_BLOB;
    case PG_TEXT_OID:
    case 1043:                 /* varchar */
    case 19: return DB_K_TEXT; /* name */
    default: return DB_K_OTHER;
    }
}

/* ---- open / close ---- */

static void pg_close(db *d);

static kl_rc pg_open(db **out, const char *url, int reader)
{
    kl_rc rc = KL_OK;
    pg_db *q = calloc(1, sizeof *q);
    (void)reader;
    *out = NULL;
    ENSURE(q, KL_EINTERNAL, "out of memory");
    q->base.drv = &store_pg_driver;
    q->url = strdup(url);
    q->base.name = store_dsn_redact(url);
    ENSURE(q->url && q->base.name, KL_EINTERNAL, "out of memory");
    /* defaults first: what the URL says overrides them */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "keyline", url, NULL};
    q->pg = PQconnectdbParams(keys, vals, 1);
    ENSURE(q->pg, KL_EINTERNAL, "out of memory");
    if (PQstatus(q->pg) != CONNECTION_OK) {
        rc = pg_unreachable(q, "connect to");
        goto out;
    }
    TRY(pg_session(q));
    *out = &q->base;
    q = NULL;
out:
    pg_close(q ? &q->base : NULL);
    return rc;
}

static void pg_close(db *d)
{
    if (!d) {
        return;
    }
    pg_db *q = pgd(d);
    PQfinish(q->pg);
    free(q->url);
    free(q->base.name);
    free(q);
}

const db_driver store_pg_driver = {
    .name = "postgresql",
    .dialect = DB_PG,
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_tx = pg_in_tx,
    .savepoint = pg_savepoint,
    .exec = pg_exec,
    .schema_get = pg_schema_get,
    .schema_set = pg_schema_set,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .bind_blob = pg_bind_blob,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .col_null = pg_col_null,
    .col_int64 = pg_col_int64,
    .col_text = pg_col_text,
    .col_blob = pg_col_blob,
    .changes = pg_changes,
    .col_count = pg_col_count,
    .col_name = pg_col_name,
    .col_kind = pg_col_kind,
    .backup = NULL, /* pg_dump, pg_basebackup: docs/deployment.md */
};
