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
 * certificate may then be recorded but was never released, never the reverse. "Went away"
 * is: an error libpq made itself (no SQLSTATE, no severity: "server closed the connection
 * unexpectedly", "could not receive data from server", "SSL SYSCALL error", often while
 * PQstatus() still reads CONNECTION_OK), a session the server ended (severity FATAL or PANIC),
 * SQLSTATE class 08, 53 or 57P01/57P02/57P03/57P05, or a read-only server (25006). Such a
 * session is dropped (pg_db.broken) and never used again, whatever libpq's status says.
 *
 * A refused login is not an outage: a missing database (3D000, or 57P04 when it is dropped
 * under a session), a refused role or password (28000, 28P01) or a role without CONNECT
 * (42501 at login) is the class "config" (kl_rc KL_EUSAGE: never retried), at open and at a
 * later reconnect alike; a reconnect refused so is also logged (docs/deployment.md
 * "PostgreSQL"). libpq has no SQLSTATE for a connection: logins run with verbose errors,
 * whose message carries it.
 *
 * Parameters are sent typed (text, int8 in binary, bytea in binary, NULL untyped); results
 * come back in binary. ?N in the SQL becomes $N.
 *
 * Round trips (docs/internals/store.md "PostgreSQL"): every one is a wakeup of the
 * server and of this process, which on a loaded host costs far more than the work itself.
 *  - BEGIN (with the advisory lock of a write transaction) and the savepoints of group commit
 *    are not sent on their own: they wait in the connection (pg_db.begin, pg_db.pend) and go
 *    out in one pipeline (libpq pipeline mode) with the next statement, or in one simple query
 *    with the next command (RELEASE + COMMIT). A transaction that ran no statement sends none.
 *  - A read transaction's COMMIT is sent without waiting for its answer (it only ends the
 *    snapshot); the answer is read before the connection's next use.
 *  - A statement run a second time is prepared on the server (PQsendPrepare, once per
 *    connection, in the same pipeline) and then only bound and executed.
 *  - Rows are read one at a time (single-row mode), so a large result (a CRL's revoked
 *    certificates) is never held whole in memory; when another statement must run on the
 *    connection before the rows are all read, the rest is read ahead into memory first. */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kl_log.h"
#include "store_db.h"
#include "store_pgcode.h"

#define STORE_PG_LOCK "1263293268" /* 0x4b4c5354 "KLST": the lock of write transactions */
#define STORE_PG_APP "keyline-store"
#define STORE_PG_LOCK_TIMEOUT "10s" /* like SQLite's busy timeout */
#define PG_TEXT_OID 25
#define PG_INT8_OID 20
#define PG_INT4_OID 23
#define PG_INT2_OID 21
#define PG_BOOL_OID 16
#define PG_BYTEA_OID 17

#define PG_PEND_MAX 8       /* savepoint commands waiting for the next statement */
#define PG_REPREPARE 4      /* new server-side statements for one pg_stmt whose types changed */
#define PG_REFUSED_LOG_S 60 /* one log line a minute for a reconnect refused the same way */

typedef struct pg_stmt pg_stmt;

typedef struct {
    PGresult *r;
} pg_held; /* a result read ahead */

typedef struct {
    db base; /* first */
    PGconn *pg;
    char *url;
    unsigned gen;       /* +1 per (re)connection: server-side statements live in one */
    unsigned next_name; /* server-side statement names kl1, kl2, ... */
    int begin;          /* a BEGIN not sent yet: 0 none, 1 write, 2 read */
    int reading;        /* the open transaction is a read transaction */
    int open; /* a transaction begun (pg_begin) and not ended: never continued on a new session */
    const char *pend[PG_PEND_MAX]; /* savepoint commands not sent yet, in order */
    int npend;
    int async;          /* a pipeline (a read transaction's COMMIT) whose answer is not read */
    pg_stmt *streaming; /* the statement whose rows are being read from the connection */
    int broken;         /* the server or the connection went away: reconnect before any use */
    int reader;         /* the store's second connection (opened on first use, at run time) */
    char refused[6];    /* the SQLSTATE of the last refused reconnect that was logged */
    time_t refused_at;  /* when it was logged */
} pg_db;

struct pg_stmt {
    db_stmt base; /* first */
    char *sql;    /* with $N */
    int np;       /* parameters */
    char **val;   /* owned copies (NULL: SQL NULL) */
    int *len;
    int *fmt;
    Oid *type;
    Oid *ptype;     /* the types it was prepared with */
    char name[16];  /* its server-side name */
    unsigned gen;   /* the connection generation it was prepared in (0: not prepared) */
    int runs;       /* executions so far: prepared from the second on */
    int reprepared; /* new names taken */
    PGresult *res;  /* the current result: one row (single-row mode), or the final one */
    int row;        /* current row in res, -1 before the first */
    int nrows;
    PGresult *ahead; /* the first result, read by pg_run */
    pg_held *buf;    /* results read ahead while another statement needed the connection */
    int nbuf, bufpos, bufcap;
    int executed, done;
    int64_t changes;
};

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
    return !q->pg || q->broken || PQstatus(q->pg) != CONNECTION_OK;
}

/* An error libpq made itself, with no field from the server (NULL: no result came): the
 * connection failed under it, whatever PQstatus() says yet (a failed write is reported before
 * the EOF behind it is read). */
static int pg_gone(const PGresult *res)
{
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    return (t == PGRES_FATAL_ERROR || t == PGRES_BAD_RESPONSE) &&
           !PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
           !PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
}

/* A connection gone, or a session the server ended (FATAL, PANIC), is broken: never used
 * again, whatever it holds (pg_ensure opens a new one). */
static void pg_mark(pg_db *q, const PGresult *res)
{
    const char *sev = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    if (pg_gone(res) || (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))) {
        q->broken = 1;
    }
}

/* The class of a failed result (NULL: none came); marks the connection broken (pg_mark). */
static int pg_class(pg_db *q, const PGresult *res)
{
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int gone = pg_gone(res);
    pg_mark(q, res);
    int c = code ? pg_code_class(code) : DB_E_OTHER;
    if (gone || (c == DB_E_OTHER && pg_lost(q))) {
        return DB_E_UNAVAILABLE;
    }
    return c;
}

/* Log a refusal at run time (once a minute for the same SQLSTATE): the daemon's requests fail
 * with it, and an operator must see why. */
static void pg_refused_log(pg_db *q, const char *code)
{
    time_t now = time(NULL);
    if (strncmp(q->refused, code, 5) == 0 && now - q->refused_at < PG_REFUSED_LOG_S) {
        return;
    }
    snprintf(q->refused, sizeof q->refused, "%.5s", code);
    q->refused_at = now;
    kl_error("%s", kl_errmsg());
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
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (q->base.err == DB_E_CONFIG && code) {
        kl_rc rc =
            kl_fail(KL_EUSAGE, "store: %s: %s (%s; a configuration error, not retried): %s: %.*s",
                    q->base.name, pg_config_hint(code), code, what, (int)(n > 600 ? 600 : n), m);
        pg_refused_log(q, code);
        return rc;
    }
    kl_rc rc = q->base.err == DB_E_UNAVAILABLE ? KL_EUNAVAIL
               : q->base.err == DB_E_BUSY      ? KL_EUNAVAIL
               : q->base.err == DB_E_OTHER     ? KL_EIO
                                               : KL_EINPUT;
    return kl_fail(rc, "%s: %.*s", what, (int)(n > 700 ? 700 : n), m);
}

/* ---- the connection between commands ---- */

/* Read the answer of an unread pipeline up to its sync point and leave pipeline mode (a lost
 * connection ends it too: PQreset clears what is left). */
static void pg_sync_end(pg_db *q)
{
    for (int nulls = 0; nulls < 2 && !pg_lost(q);) {
        PGresult *r = PQgetResult(q->pg);
        if (!r) {
            nulls++;
            continue;
        }
        nulls = 0;
        ExecStatusType t = PQresultStatus(r);
        pg_mark(q, r); /* an unwaited COMMIT's answer may be the news of a lost connection */
        PQclear(r);
        if (t == PGRES_PIPELINE_SYNC) {
            break;
        }
    }
    (void)PQexitPipelineMode(q->pg);
}

static void pg_buf_push(pg_stmt *s, PGresult *r)
{
    if (s->nbuf == s->bufcap) {
        int nc = s->bufcap ? s->bufcap * 2 : 16;
        pg_held *v = realloc(s->buf, (size_t)nc * sizeof *v);
        if (!v) {
            PQclear(r); /* the statement then ends early; its final result says why */
            return;
        }
        s->buf = v;
        s->bufcap = nc;
    }
    s->buf[s->nbuf++].r = r;
}

/* The rows of the statement being streamed read ahead into its memory (keep) or thrown away,
 * up to its final result; then the pipeline ends. */
static void pg_stream_end(pg_db *q, int keep)
{
    pg_stmt *s = q->streaming;
    if (!s) {
        return;
    }
    q->streaming = NULL;
    for (;;) {
        PGresult *r = PQgetResult(q->pg);
        if (!r) {
            break; /* the end of the statement's results (or a lost connection) */
        }
        if (keep) {
            pg_buf_push(s, r);
        } else {
            pg_mark(q, r);
            PQclear(r);
        }
    }
    pg_sync_end(q);
}

/* Before any other use of the connection: no statement streaming, no answer unread. */
static void pg_idle(pg_db *q)
{
    if (q->streaming) {
        pg_stream_end(q, 1);
    }
    if (q->async) {
        q->async = 0;
        pg_sync_end(q);
    }
}

static void pg_pend_clear(pg_db *q)
{
    q->begin = 0;
    q->npend = 0;
}

/* The commands waiting for the next one, in order: BEGIN, its lock, the savepoint commands. */
static int pg_prefix(const pg_db *q, const char **out)
{
    int n = 0;
    if (q->begin == 1) {
        out[n++] = "BEGIN";
        out[n++] = "SELECT pg_advisory_xact_lock(" STORE_PG_LOCK ")";
    } else if (q->begin == 2) {
        out[n++] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    }
    for (int i = 0; i < q->npend; i++) {
        out[n++] = q->pend[i];
    }
    return n;
}

/* One simple query: `sql` (NULL: none) after the waiting commands; res_out (NULL ok) keeps the
 * last result. */
static kl_rc pg_cmd_once(pg_db *q, const char *sql, PGresult **res_out)
{
    const char *part[PG_PEND_MAX + 3];
    int n = pg_prefix(q, part);
    size_t len = sql ? strlen(sql) + 1 : 1;
    if (sql) {
        part[n++] = sql;
    }
    for (int i = 0; i < n; i++) {
        len += strlen(part[i]) + 2;
    }
    char *all = malloc(len);
    if (!all) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(part[i]);
        if (i) {
            memcpy(all + at, "; ", 2);
            at += 2;
        }
        memcpy(all + at, part[i], k);
        at += k;
    }
    all[at] = 0;
    PGresult *res = n ? PQexec(q->pg, all) : NULL;
    free(all);
    ExecStatusType s = res ? PQresultStatus(res) : n ? PGRES_FATAL_ERROR : PGRES_COMMAND_OK;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        kl_rc rc = pg_err(q, res, sql ? sql : "store");
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

static kl_rc pg_ensure(pg_db *q);

/* A statement without parameters and results we need, with the commands waiting before it; a
 * transaction not begun yet on a connection that died while idle is begun once more on a new
 * one. res_out (NULL ok) keeps the result. */
static kl_rc pg_cmd(pg_db *q, const char *sql, PGresult **res_out)
{
    pg_idle(q);
    kl_rc rc = KL_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = q->begin && PQtransactionStatus(q->pg) == PQTRANS_IDLE;
        rc = pg_cmd_once(q, sql, res_out);
        if (rc == KL_OK || !fresh || !pg_lost(q) || attempt > 0) {
            break;
        }
        kl_rc again = pg_ensure(q); /* its own failure (unreachable, refused) is the answer */
        if (again != KL_OK) {
            rc = again;
            break;
        }
    }
    pg_pend_clear(q);
    return rc;
}

/* Without the waiting commands (session settings, ROLLBACK). */
static kl_rc pg_cmd_raw(pg_db *q, const char *sql)
{
    PGresult *res = PQexec(q->pg, sql);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    kl_rc rc = (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) ? KL_OK : pg_err(q, res, sql);
    PQclear(res);
    return rc;
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
    q->gen++; /* the server-side statements of the old session are gone */
    q->streaming = NULL;
    q->async = 0;
    return pg_cmd_raw(q, "SET lock_timeout = '" STORE_PG_LOCK_TIMEOUT "';"
                         " SET client_min_messages = warning");
}

/* A login failed: refused for a configuration mistake (KL_EUSAGE, DB_E_CONFIG; logged when at
 * run time), or the server cannot be reached (KL_EUNAVAIL with libpq's reason). */
static kl_rc pg_login_failed(pg_db *q, const char *verb)
{
    char m[700], code[6];
    pg_msg_clean(q->pg ? PQerrorMessage(q->pg) : "out of memory", m, sizeof m);
    pg_login_code(m, code);
    if (code[0] && (pg_code_config(code) || strcmp(code, "42501") == 0)) {
        q->base.err = DB_E_CONFIG;
        kl_rc rc = kl_fail(KL_EUSAGE,
                           "store: %s refuses keyline's login: %s (%s; a configuration error, "
                           "not retried): %s",
                           q->base.name, pg_config_hint(code), code, m);
        if (q->gen > 0 || q->reader) {
            pg_refused_log(q, code); /* a reconnect, or the reader's first open */
        }
        return rc;
    }
    q->base.err = DB_E_UNAVAILABLE;
    return kl_fail(KL_EUNAVAIL, "store unavailable: cannot %s %s: %s", verb, q->base.name, m);
}

/* (Re)connect with the connection's parameters, errors verbose for as long as it takes (their
 * message is the only place libpq keeps a login's SQLSTATE). */
static kl_rc pg_login(pg_db *q, const char *verb)
{
    q->broken = 0;
    q->streaming = NULL;
    q->async = 0;
    PQsetErrorVerbosity(q->pg, PQERRORS_VERBOSE);
    PQreset(q->pg);
    if (PQstatus(q->pg) != CONNECTION_OK) {
        return pg_login_failed(q, verb);
    }
    PQsetErrorVerbosity(q->pg, PQERRORS_DEFAULT);
    q->refused[0] = 0;
    return pg_session(q);
}

/* Reconnect when the connection is gone (never inside a transaction: that one is lost). */
static kl_rc pg_ensure(pg_db *q)
{
    if (!pg_lost(q)) {
        return KL_OK;
    }
    if (q->streaming && !q->broken) {
        pg_stream_end(q, 1); /* whatever arrived before the loss */
    }
    return pg_login(q, "reach");
}

static int pg_in_tx(db *d)
{
    pg_db *q = pgd(d);
    if (q->begin) {
        return 1; /* begun, not sent yet */
    }
    if (pg_lost(q)) {
        q->open = 0; /* the server rolled it back; the caller ends it without a statement */
        return 0;
    }
    if (q->async) {
        return 0; /* a read transaction's COMMIT is under way */
    }
    PGTransactionStatusType t = PQtransactionStatus(q->pg);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

/* The BEGIN (and the lock) go out with the transaction's first statement. */
static kl_rc pg_begin(db *d, int write)
{
    pg_db *q = pgd(d);
    pg_idle(q);
    pg_pend_clear(q);
    kl_rc rc = pg_ensure(q);
    if (rc != KL_OK) {
        return rc;
    }
    if (PQtransactionStatus(q->pg) != PQTRANS_IDLE) {
        (void)pg_cmd_raw(q, "ROLLBACK"); /* never one transaction inside another */
    }
    q->begin = write ? 1 : 2;
    q->reading = !write;
    q->open = 1;
    return KL_OK;
}

/* A read transaction's COMMIT only ends its snapshot: sent, its answer read later. */
static int pg_commit_async(pg_db *q)
{
    if (!PQenterPipelineMode(q->pg)) {
        return 0;
    }
    if (!PQsendQueryParams(q->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(q->pg)) {
        pg_sync_end(q);
        return 0;
    }
    q->async = 1;
    return 1;
}

static kl_rc pg_commit(db *d)
{
    pg_db *q = pgd(d);
    int reading = q->reading;
    q->reading = 0;
    q->open = 0;
    pg_idle(q);
    if (q->begin) {
        pg_pend_clear(q); /* no statement ran: nothing was sent, nothing to commit */
        return KL_OK;
    }
    if (reading && q->npend == 0 && pg_commit_async(q)) {
        return KL_OK;
    }
    return pg_cmd(q, "COMMIT", NULL);
}

static void pg_rollback(db *d)
{
    pg_db *q = pgd(d);
    int sent = !q->begin;
    pg_pend_clear(q);
    q->reading = 0;
    q->open = 0;
    pg_idle(q);
    if (sent && !pg_lost(q) && PQtransactionStatus(q->pg) != PQTRANS_IDLE) {
        (void)pg_cmd_raw(q, "ROLLBACK");
    }
}

static const char PG_SP_BEGIN[] = "SAVEPOINT kl_op";
static const char PG_SP_RELEASE[] = "RELEASE SAVEPOINT kl_op";

/* Savepoint commands wait for the next statement; a savepoint released with nothing run in it
 * is not sent at all. */
static kl_rc pg_savepoint(db *d, int what)
{
    pg_db *q = pgd(d);
    const char *sql = what == DB_SP_BEGIN     ? PG_SP_BEGIN
                      : what == DB_SP_RELEASE ? PG_SP_RELEASE
                                              : "ROLLBACK TO SAVEPOINT kl_op";
    if (what == DB_SP_RELEASE && q->npend > 0 && q->pend[q->npend - 1] == PG_SP_BEGIN) {
        q->npend--;
        return KL_OK;
    }
    if (q->npend == PG_PEND_MAX) {
        kl_rc rc = pg_cmd(q, NULL, NULL);
        if (rc != KL_OK) {
            return rc;
        }
    }
    q->pend[q->npend++] = sql;
    return KL_OK;
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
        /* a store later on the search path: this role's own schema ("$user") comes first and
         * would get an empty store of its own beside the shared one */
        TRY(pg_int_query(q,
                         "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename ="
                         " 'keyline_meta' AND schemaname = ANY (current_schemas(false))",
                         &n));
        ENSURE(n == 0, KL_EINPUT,
               "store: %s: the keyline store is in a schema later on this role's search_path "
               "than its first one (a schema of the role's own name?); refusing to create a "
               "second store there: name the store's schema in the URL "
               "(options=-csearch_path%%3DSCHEMA)",
               d->name);
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
    s->ptype = calloc((size_t)n, sizeof *s->ptype);
    s->base.drv = d->drv;
    s->base.conn = d;
    s->row = -1;
    if (!s->val || !s->len || !s->fmt || !s->type || !s->ptype) {
        pg_finalize(&s->base);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    *out = &s->base;
    return KL_OK;
}

/* Drop the results (the rest of a streamed one is read and thrown away). */
static void pg_results_drop(pg_stmt *s)
{
    pg_db *q = pgd(s->base.conn);
    if (q->streaming == s) {
        pg_stream_end(q, 0);
    }
    PQclear(s->res);
    PQclear(s->ahead);
    for (int i = s->bufpos; i < s->nbuf; i++) {
        PQclear(s->buf[i].r);
    }
    s->res = s->ahead = NULL;
    s->nbuf = s->bufpos = 0;
    s->row = -1;
    s->nrows = 0;
    s->executed = s->done = 0;
}

static void pg_reset(db_stmt *st)
{
    pg_stmt *s = pgs(st);
    pg_results_drop(s);
    for (int i = 0; i < s->np; i++) {
        free(s->val[i]);
        s->val[i] = NULL;
        s->len[i] = 0;
        s->fmt[i] = 0;
        s->type[i] = 0;
    }
}

/* A server-side statement of a statement finalized on a live connection stays there until the
 * connection closes (a few, from store_copy's per-table statements): not worth a round trip. */
static void pg_finalize(db_stmt *st)
{
    if (!st) {
        return;
    }
    pg_stmt *s = pgs(st);
    if (s->val && s->len && s->fmt && s->type && s->ptype) { /* not when out of memory */
        pg_reset(st);
    }
    free(s->buf);
    free(s->val);
    free(s->len);
    free(s->fmt);
    free(s->type);
    free(s->ptype);
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

/* Can the server-side statement take this binding? 1 yes, 0 it must be prepared again with
 * these types (a parameter it was prepared untyped for is typed now), -1 the types differ. */
static int pg_types_fit(const pg_stmt *s)
{
    int fit = 1;
    for (int i = 0; i < s->np; i++) {
        if (!s->val[i] || s->type[i] == s->ptype[i]) {
            continue;
        }
        if (s->ptype[i] != 0) {
            return -1;
        }
        fit = 0;
    }
    return fit;
}

/* Queue the waiting commands, the statement (prepared on the server from its second run) and a
 * sync point in one pipeline. *prep: the index of its PQsendPrepare among the results before
 * the statement's, or -1; *npre: how many results come before the statement's. */
static int pg_send(pg_db *q, pg_stmt *s, int *prep, int *npre)
{
    const char *part[PG_PEND_MAX + 2];
    int n = pg_prefix(q, part), fit = pg_types_fit(s);
    int named = s->runs > 0 && fit >= 0;
    int need = named && (s->gen != q->gen || fit == 0);
    if (need && fit == 0 && s->reprepared >= PG_REPREPARE) {
        named = need = 0; /* retyped too often: unnamed from now on */
    }
    *prep = -1;
    if (!PQenterPipelineMode(q->pg)) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (!PQsendQueryParams(q->pg, part[i], 0, NULL, NULL, NULL, NULL, 0)) {
            return 0;
        }
    }
    if (need) {
        snprintf(s->name, sizeof s->name, "kl%u", ++q->next_name);
        s->reprepared += fit == 0;
        s->gen = 0; /* until the server said yes */
        for (int i = 0; i < s->np; i++) {
            s->ptype[i] = s->val[i] ? s->type[i] : s->ptype[i];
        }
        if (!PQsendPrepare(q->pg, s->name, s->sql, s->np, s->ptype)) {
            return 0;
        }
        *prep = n++;
    }
    *npre = n;
    int ok = named ? PQsendQueryPrepared(q->pg, s->name, s->np, (const char *const *)s->val, s->len,
                                         s->fmt, 1)
                   : PQsendQueryParams(q->pg, s->sql, s->np, s->type, (const char *const *)s->val,
                                       s->len, s->fmt, 1);
    return ok && PQpipelineSync(q->pg);
}

/* The results of the commands before the statement, then the statement's first (into
 * s->ahead; rows one at a time). The first failure is the answer. */
static kl_rc pg_collect(pg_db *q, pg_stmt *s, int prep, int npre)
{
    kl_rc rc = KL_OK;
    for (int i = 0; i < npre; i++) {
        PGresult *r = PQgetResult(q->pg);
        ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK && rc == KL_OK) {
            rc = pg_err(q, r, i == prep ? "prepare" : "statement");
        } else if (i == prep && rc == KL_OK) {
            s->gen = q->gen;
        }
        PQclear(r);
        if (r) {
            PQclear(PQgetResult(q->pg)); /* the NULL that ends each one's results */
        }
        if (pg_lost(q)) {
            return rc == KL_OK ? pg_err(q, NULL, "statement") : rc;
        }
    }
    if (rc != KL_OK) {
        return rc;
    }
    (void)PQsetSingleRowMode(q->pg);
    s->ahead = PQgetResult(q->pg);
    ExecStatusType t = s->ahead ? PQresultStatus(s->ahead) : PGRES_FATAL_ERROR;
    if (t != PGRES_SINGLE_TUPLE && t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        rc = pg_err(q, s->ahead, "statement");
        PQclear(s->ahead);
        s->ahead = NULL;
    }
    return rc;
}

/* Send the statement with what waits before it and read up to its first result. */
static kl_rc pg_run(pg_stmt *s)
{
    pg_db *q = pgd(s->base.conn);
    pg_idle(q);
    if (q->open && !q->begin && pg_lost(q)) {
        /* lost inside a transaction (also while the rows of an earlier statement were read): the
         * rest of it must not run on a new session, outside it and its lock, committed alone */
        q->base.err = DB_E_UNAVAILABLE;
        return kl_fail(KL_EUNAVAIL,
                       "store unavailable: the connection to %s was lost inside a transaction "
                       "(nothing of it is stored)",
                       q->base.name);
    }
    if (!pg_in_tx(&q->base) || q->begin) {
        /* a point read outside a transaction, or a transaction's first statement: reconnect
         * first if the connection is gone */
        kl_rc rc = pg_ensure(q);
        if (rc != KL_OK) {
            return rc;
        }
    }
    for (int attempt = 0;; attempt++) {
        int fresh = PQtransactionStatus(q->pg) == PQTRANS_IDLE, prep = -1, npre = 0;
        kl_rc rc = pg_send(q, s, &prep, &npre) ? pg_collect(q, s, prep, npre)
                                               : pg_err(q, NULL, "statement");
        if (rc == KL_OK) {
            pg_pend_clear(q);
            s->executed = 1;
            s->runs++;
            q->streaming = s;
            if (PQresultStatus(s->ahead) != PGRES_SINGLE_TUPLE) {
                pg_stream_end(q, 1); /* no rows: the connection is free again */
            }
            return KL_OK;
        }
        pg_sync_end(q); /* what is left of the pipeline, up to its sync point */
        /* a statement (and a transaction not begun yet) on a connection that died while idle
         * is tried once more on a new one (it was not carried out); inside a transaction the
         * transaction is lost */
        kl_rc again = KL_OK;
        if (!fresh || attempt > 0 || q->base.err != DB_E_UNAVAILABLE ||
            (again = pg_ensure(q)) != KL_OK) {
            pg_pend_clear(q);
            return again != KL_OK ? again : rc;
        }
    }
}

/* The statement's next result: the first (pg_run), one read ahead, or from the connection. */
static PGresult *pg_next(pg_stmt *s)
{
    pg_db *q = pgd(s->base.conn);
    PGresult *r = s->ahead;
    if (r) {
        s->ahead = NULL;
        return r;
    }
    if (s->bufpos < s->nbuf) {
        return s->buf[s->bufpos++].r;
    }
    return q->streaming == s ? PQgetResult(q->pg) : NULL;
}

static kl_rc pg_step(db_stmt *st, int *row)
{
    pg_stmt *s = pgs(st);
    pg_db *q = pgd(st->conn);
    *row = 0;
    if (!s->executed) {
        kl_rc rc = pg_run(s);
        if (rc != KL_OK) {
            return rc;
        }
    }
    for (;;) {
        if (s->res && s->row + 1 < s->nrows) {
            s->row++;
            *row = 1;
            return KL_OK;
        }
        if (s->done) {
            s->row = s->nrows; /* past the last row */
            return KL_OK;
        }
        PGresult *r = pg_next(s);
        ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        PQclear(s->res);
        s->res = NULL;
        s->row = -1;
        s->nrows = 0;
        if (t != PGRES_SINGLE_TUPLE) {
            s->done = 1;
            if (q->streaming == s) {
                pg_stream_end(q, 1); /* the NULL after the final result, the sync point */
            }
        }
        if (t != PGRES_SINGLE_TUPLE && t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
            kl_rc rc = pg_err(q, r, "statement");
            PQclear(r);
            return rc;
        }
        s->res = r;
        s->nrows = PQntuples(r);
        if (s->done) {
            const char *ct = PQcmdTuples(r);
            s->changes = (ct && *ct) ? strtoll(ct, NULL, 10) : 0;
        }
    }
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
    *out = NULL;
    ENSURE(q, KL_EINTERNAL, "out of memory");
    q->base.drv = &store_pg_driver;
    q->url = strdup(url);
    q->base.name = store_dsn_redact(url);
    ENSURE(q->url && q->base.name, KL_EINTERNAL, "out of memory");
    /* defaults first: what the URL says overrides them */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "keyline", url, NULL};
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    PQconninfoFree(opts);
    if (!opts) {
        size_t n = perr ? strlen(perr) : 0;
        while (n && perr[n - 1] == '\n') {
            n--;
        }
        q->base.err = DB_E_CONFIG;
        rc = kl_fail(KL_EUSAGE,
                     "store: %s: not a valid PostgreSQL URL (a configuration error): %.*s",
                     q->base.name, (int)n, perr ? perr : "out of memory");
        PQfreemem(perr);
        goto out;
    }
    /* the connection object first, so that the login runs with verbose errors (pg_login) */
    q->reader = reader;
    q->pg = PQconnectStartParams(keys, vals, 1);
    ENSURE(q->pg, KL_EINTERNAL, "out of memory");
    if (PQstatus(q->pg) == CONNECTION_BAD) {
        rc = pg_login_failed(q, "connect to"); /* the URL itself, or no host resolved */
        goto out;
    }
    TRY(pg_login(q, "connect to"));
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
