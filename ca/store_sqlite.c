/* keyline: SQLite store backend (the embedded default).
 *
 * One connection per store handle, guarded by a mutex (the EST server shares one handle across
 * threads); prepared statements are cached per handle. Writes are group-committed: concurrent
 * callers of one handle share one BEGIN IMMEDIATE ... COMMIT, each in its own SAVEPOINT (see
 * sq_write). BEGIN IMMEDIATE is retried on SQLITE_BUSY past the busy timeout, so concurrent
 * processes serialise their writes and the audit chain is extended by one writer at a time. WAL +
 * synchronous=FULL: a returned KL_OK means the transaction is on disk. Schema, states and the audit
 * encoding are described in docs/internals/store.md. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_audit.h"

#define SQ_SCHEMA_VERSION                                                                          \
    6 /* 2: claims; 3: requests; 4: crls; 5: audit baselines; 6: checkpoints */
#define SQ_APPLICATION_ID 0x4b4c5354 /* "KLST" */
#define SQ_BUSY_TIMEOUT_MS 10000
#define SQ_BUSY_RETRIES 3 /* BEGIN IMMEDIATE attempts after the busy timeout expired */
#define SQ_LIST_CHUNK 256 /* rows fetched per lock hold when iterating certificates */
#define SQ_BATCH_MAX 256  /* write operations per group-commit transaction */
#define SQ_MSG_MAX 1024   /* = the thread-local kl_errmsg buffer */
#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* Version 2. Claims are coordination between live processes, not records: rows come and go. */
#define SQ_CLAIMS_TABLE                                                                            \
    "CREATE TABLE claims ("                                                                        \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " instance TEXT NOT NULL,"                                                                     \
    " host TEXT NOT NULL,"                                                                         \
    " pid INTEGER NOT NULL,"                                                                       \
    " place TEXT NOT NULL,"                                                                        \
    " expires INTEGER NOT NULL);"

/* Version 3: enrollment requests held for approval. */
#define SQ_REQUESTS_TABLE                                                                          \
    "CREATE TABLE requests ("                                                                      \
    " id INTEGER PRIMARY KEY,"                                                                     \
    " label TEXT NOT NULL,"                                                                        \
    " csr_hash TEXT NOT NULL,"                                                                     \
    " csr BLOB NOT NULL,"                                                                          \
    " issuer TEXT NOT NULL,"                                                                       \
    " template TEXT NOT NULL,"                                                                     \
    " device_id TEXT,"                                                                             \
    " requester TEXT NOT NULL,"                                                                    \
    " subject TEXT NOT NULL,"                                                                      \
    " status TEXT NOT NULL CHECK (status IN ('pending','approved','rejected')),"                   \
    " cert_serial TEXT,"                                                                           \
    " reason TEXT,"                                                                                \
    " created INTEGER NOT NULL,"                                                                   \
    " decided INTEGER,"                                                                            \
    " UNIQUE (label, csr_hash));"                                                                  \
    "CREATE TRIGGER requests_no_delete BEFORE DELETE ON requests"                                  \
    " BEGIN SELECT RAISE(ABORT, 'requests are never deleted'); END;"

/* Version 4: the latest signed CRL of each issuer (served without the issuer's key). */
#define SQ_CRLS_TABLE                                                                              \
    "CREATE TABLE crls ("                                                                          \
    " issuer TEXT PRIMARY KEY NOT NULL,"                                                           \
    " number INTEGER NOT NULL,"                                                                    \
    " this_update INTEGER NOT NULL,"                                                               \
    " next_update INTEGER NOT NULL,"                                                               \
    " der BLOB NOT NULL,"                                                                          \
    " created INTEGER NOT NULL);"

/* Version 6: the audit key's public half and the signed checkpoints of the chain (one key per
 * store; the key row is written with the first checkpoint). The triggers are guard rails only:
 * the signatures are what detect a rewrite. */
#define SQ_AUDIT_CP_TABLES                                                                         \
    "CREATE TABLE audit_key ("                                                                     \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                                      \
    " label TEXT NOT NULL,"                                                                        \
    " spki BLOB NOT NULL,"                                                                         \
    " created INTEGER NOT NULL);"                                                                  \
    "CREATE TABLE audit_checkpoints ("                                                             \
    " seq INTEGER PRIMARY KEY,"                                                                    \
    " hash TEXT NOT NULL,"                                                                         \
    " ts INTEGER NOT NULL,"                                                                        \
    " sig BLOB NOT NULL);"                                                                         \
    "CREATE TRIGGER audit_key_no_update BEFORE UPDATE ON audit_key"                                \
    " BEGIN SELECT RAISE(ABORT, 'the audit key is never changed'); END;"                           \
    "CREATE TRIGGER audit_key_no_delete BEFORE DELETE ON audit_key"                                \
    " BEGIN SELECT RAISE(ABORT, 'the audit key is never changed'); END;"                           \
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"                \
    " BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;"                        \
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"                \
    " BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;"

static const char *const sq_schema =
    "CREATE TABLE cas ("
    " label TEXT PRIMARY KEY NOT NULL,"
    " template TEXT,"
    " parent TEXT REFERENCES cas(label),"
    " key_type TEXT,"
    " der BLOB,"
    " status TEXT NOT NULL DEFAULT 'active',"
    " created INTEGER NOT NULL);"
    "CREATE TABLE certs ("
    " id INTEGER PRIMARY KEY," /* issue (reservation) order */
    " serial TEXT UNIQUE NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN"
    "  ('reserved','pending','valid','revoked','failed')),"
    " issuer TEXT NOT NULL,"
    " subject TEXT,"
    " template TEXT,"
    " device_id TEXT,"
    " not_before INTEGER,"
    " not_after INTEGER,"
    " der BLOB,"
    " created INTEGER NOT NULL,"
    " revoked_at INTEGER,"
    " revoke_reason INTEGER,"
    " fail_reason TEXT);"
    "CREATE INDEX certs_issuer_status ON certs(issuer, status);"
    "CREATE INDEX certs_status_created ON certs(status, created);"
    "CREATE INDEX certs_device ON certs(device_id);"
    "CREATE TABLE crl_numbers (issuer TEXT PRIMARY KEY NOT NULL, last INTEGER NOT NULL);"
    "CREATE TABLE revocation_epochs (issuer TEXT PRIMARY KEY NOT NULL, epoch INTEGER NOT NULL);"
    "CREATE TABLE devices ("
    " device_id TEXT PRIMARY KEY NOT NULL,"
    " model TEXT,"
    " cert_serial TEXT,"
    " state TEXT NOT NULL,"
    " detail TEXT,"
    " updated INTEGER NOT NULL);" SQ_CLAIMS_TABLE SQ_REQUESTS_TABLE SQ_CRLS_TABLE
    "CREATE TABLE audit ("
    " seq INTEGER PRIMARY KEY,"
    " ts INTEGER NOT NULL,"
    " actor TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " detail TEXT NOT NULL,"
    " prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL);"
    "CREATE TABLE audit_head ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " seq INTEGER NOT NULL,"
    " hash TEXT NOT NULL);"
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" ZERO_HASH "');"
    /* Guard rails against mistakes, not against an attacker (who can drop them): the hash
     * chain and audit_head are what detect tampering. */
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    "CREATE TRIGGER certs_no_delete BEFORE DELETE ON certs"
    " BEGIN SELECT RAISE(ABORT, 'certificate rows are never deleted'); END;"
    "CREATE TRIGGER certs_serial_fixed BEFORE UPDATE OF serial ON certs"
    " BEGIN SELECT RAISE(ABORT, 'a serial number never changes'); END;" SQ_AUDIT_CP_TABLES;

#define CERT_COLS                                                                                  \
    "id, serial, issuer, subject, template, device_id, status, not_before, not_after, "            \
    "revoked_at, revoke_reason, der, created"

enum {
    Q_BEGIN,
    Q_BEGIN_READ,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_SAVEPOINT,
    Q_RELEASE,
    Q_ROLLBACK_TO,
    Q_CA_PUT,
    Q_CA_RECERT,
    Q_CA_GET,
    Q_CA_LIST,
    Q_CERT_INSERT,
    Q_CERT_STATUS,
    Q_CERT_GET,
    Q_CERT_STATE,
    Q_CERT_LIST,
    Q_CERT_PENDING,
    Q_CERT_ACTIVATE,
    Q_CERT_REVOKE,
    Q_EPOCH_BUMP,
    Q_EPOCH_GET,
    Q_CRL_NEXT,
    Q_CRL_PUT,
    Q_CRL_GET,
    Q_DEV_GET,
    Q_DEV_PUT,
    Q_DEV_LIST,
    Q_DEV_REVOKED,
    Q_RQ_FIND,
    Q_RQ_GET,
    Q_RQ_INSERT,
    Q_RQ_LIST,
    Q_RQ_APPROVE,
    Q_RQ_REJECT,
    Q_RQ_COUNT,
    Q_CLAIM_GET,
    Q_CLAIM_PUT,
    Q_CLAIM_DEL,
    Q_HEAD_GET,
    Q_HEAD_SET,
    Q_AUDIT_INSERT,
    Q_AUDIT_LIST,
    Q_AKEY_GET,
    Q_AKEY_PUT,
    Q_CP_LAST,
    Q_CP_LIST,
    Q_CP_PUT,
    Q_COUNT
};

static const char *const q_sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_BEGIN_READ] = "BEGIN DEFERRED",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_SAVEPOINT] = "SAVEPOINT kl_op",
    [Q_RELEASE] = "RELEASE kl_op",
    [Q_ROLLBACK_TO] = "ROLLBACK TO kl_op",
    [Q_CA_RECERT] = "UPDATE cas SET der = ?2 WHERE label = ?1",
    [Q_CA_PUT] = "INSERT INTO cas (label, template, parent, key_type, der, status, created)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_CA_GET] = "SELECT label, template, parent, key_type, der, status, created FROM cas"
                 " WHERE label = ?1",
    [Q_CA_LIST] = "SELECT label, template, parent, key_type, der, status, created FROM cas"
                  " ORDER BY created, rowid",
    [Q_CERT_INSERT] = "INSERT INTO certs (serial, issuer, subject, template, device_id,"
                      " not_before, not_after, created, status, der)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [Q_CERT_STATUS] = "SELECT status, issuer FROM certs WHERE serial = ?1",
    [Q_CERT_GET] = "SELECT " CERT_COLS " FROM certs WHERE serial = ?1",
    [Q_CERT_STATE] = "SELECT status, not_before, not_after FROM certs WHERE serial = ?1",
    [Q_CERT_LIST] = "SELECT " CERT_COLS " FROM certs WHERE id > ?1"
                    " AND ((?2 IS NULL AND status NOT IN ('reserved', 'failed')) OR status = ?2)"
                    " AND (?3 IS NULL OR issuer = ?3) ORDER BY id LIMIT ?4",
    [Q_CERT_PENDING] = "SELECT " CERT_COLS " FROM certs WHERE id > ?1 AND status = 'pending'"
                       " AND created < ?2 ORDER BY id LIMIT ?3",
    [Q_CERT_ACTIVATE] = "UPDATE certs SET status = 'valid' WHERE serial = ?1"
                        " AND status = 'pending'",
    [Q_CERT_REVOKE] = "UPDATE certs SET status = 'revoked', revoked_at = ?2, revoke_reason = ?3"
                      " WHERE serial = ?1 AND status IN ('valid', 'pending')",
    [Q_EPOCH_BUMP] = "INSERT INTO revocation_epochs (issuer, epoch) VALUES (?1, 1)"
                     " ON CONFLICT (issuer) DO UPDATE SET epoch = epoch + 1",
    [Q_EPOCH_GET] = "SELECT epoch FROM revocation_epochs WHERE issuer = ?1",
    [Q_CRL_NEXT] = "INSERT INTO crl_numbers (issuer, last) VALUES (?1, 1)"
                   " ON CONFLICT (issuer) DO UPDATE SET last = last + 1 RETURNING last",
    /* only a higher number replaces the row (see crl_put_tx) */
    [Q_CRL_PUT] = "INSERT INTO crls (issuer, number, this_update, next_update, der, created)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (issuer) DO UPDATE SET"
                  " number = excluded.number, this_update = excluded.this_update,"
                  " next_update = excluded.next_update, der = excluded.der,"
                  " created = excluded.created WHERE excluded.number > crls.number",
    [Q_CRL_GET] = "SELECT issuer, number, this_update, next_update, der, created FROM crls"
                  " WHERE issuer = ?1",
    [Q_DEV_GET] = "SELECT device_id, model, cert_serial, state, detail, updated FROM devices"
                  " WHERE device_id = ?1",
    [Q_DEV_PUT] = "INSERT INTO devices (device_id, model, cert_serial, state, detail, updated)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device_id) DO UPDATE SET"
                  " model = excluded.model, cert_serial = excluded.cert_serial,"
                  " state = excluded.state, detail = excluded.detail, updated = excluded.updated",
    [Q_DEV_LIST] = "SELECT device_id, model, cert_serial, state, detail, updated FROM devices"
                   " ORDER BY rowid",
#define RQ_COLS                                                                                    \
    "id, label, csr_hash, csr, issuer, template, device_id, requester, subject, status,"           \
    " cert_serial, reason, created, decided"
    [Q_RQ_FIND] = "SELECT " RQ_COLS " FROM requests WHERE label = ?1 AND csr_hash = ?2",
    [Q_RQ_GET] = "SELECT " RQ_COLS " FROM requests WHERE id = CAST(?1 AS INTEGER)",
    [Q_RQ_INSERT] = "INSERT INTO requests (label, csr_hash, csr, issuer, template, device_id,"
                    " requester, subject, status, created)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
    [Q_RQ_LIST] = "SELECT " RQ_COLS " FROM requests WHERE id >= ?1 ORDER BY id",
    [Q_RQ_APPROVE] = "UPDATE requests SET status = 'approved', cert_serial = ?2, decided = ?3"
                     " WHERE id = ?1 AND status = 'pending'",
    [Q_RQ_REJECT] = "UPDATE requests SET status = 'rejected', reason = ?2, decided = ?3"
                    " WHERE id = ?1 AND status = 'pending'",
    [Q_RQ_COUNT] = "SELECT count(*) FROM requests WHERE status = ?1",
    [Q_CLAIM_GET] = "SELECT instance, host, pid, place, expires FROM claims WHERE device_id = ?1",
    [Q_CLAIM_PUT] = "INSERT INTO claims (device_id, instance, host, pid, place, expires)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device_id) DO UPDATE SET"
                    " instance = excluded.instance, host = excluded.host, pid = excluded.pid,"
                    " place = excluded.place, expires = excluded.expires",
    [Q_CLAIM_DEL] = "DELETE FROM claims WHERE device_id = ?1 AND instance = ?2 AND place = ?3",
    [Q_DEV_REVOKED] = "UPDATE devices SET state = 'revoked', detail = ?2, updated = ?3"
                      " WHERE cert_serial = ?1",
    [Q_HEAD_GET] = "SELECT seq, hash FROM audit_head WHERE id = 1",
    [Q_HEAD_SET] = "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
    [Q_AUDIT_INSERT] = "INSERT INTO audit (seq, ts, actor, action, detail, prev_hash, hash)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_AUDIT_LIST] = "SELECT seq, ts, actor, action, detail, prev_hash, hash FROM audit"
                     " WHERE seq >= ?1 ORDER BY seq",
    [Q_AKEY_GET] = "SELECT label, spki FROM audit_key WHERE id = 1",
    [Q_AKEY_PUT] = "INSERT INTO audit_key (id, label, spki, created) VALUES (1, ?1, ?2, ?3)",
    [Q_CP_LAST] = "SELECT seq, hash, ts, sig FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
    [Q_CP_LIST] = "SELECT seq, hash, ts, sig FROM audit_checkpoints ORDER BY seq",
    [Q_CP_PUT] = "INSERT INTO audit_checkpoints (seq, hash, ts, sig) VALUES (?1, ?2, ?3, ?4)",
};

typedef struct sq_store sq_store;

/* One queued write operation (group commit, see sq_write). Lives on the caller's stack until
 * `done`; the leader fills rc and msg. */
typedef kl_rc (*sq_tx_fn)(sq_store *q, void *arg);
typedef struct sq_op {
    sq_tx_fn fn;
    void *arg;
    struct sq_op *next;
    kl_rc rc;
    int done;
    pthread_cond_t cv; /* its owner waits here (under gmu): woken when done or to lead */
    char msg[SQ_MSG_MAX];
} sq_op;

struct sq_store {
    struct store base;  /* must come first */
    pthread_mutex_t mu; /* the connection and its statements */
    sqlite3 *db;
    sqlite3_stmt *st[Q_COUNT];
    pid_t pid; /* a handle is not usable across fork() */
    char *path;
    /* group commit: queue of waiting write operations, guarded by gmu */
    pthread_mutex_t gmu;
    sq_op *qhead, **qtail;
    int leader;            /* a thread is running a batch */
    uint64_t n_txn, n_ops; /* committed write transactions / operations in them (under mu) */
    /* point reads (sq_get_row) on a second connection, opened on first use: in WAL mode a
     * reader does not wait for the writer, so a lookup never queues behind a commit's fsync */
    pthread_mutex_t rmu;
    sqlite3 *rdb;
    sqlite3_stmt *rst[Q_COUNT];
};

static sq_store *sq(store *s)
{
    return (sq_store *)s;
}

/* --- errors --- */

static kl_rc sq_fail(sq_store *q, int src, const char *what)
{
    const char *m = q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(src);
    switch (src & 0xff) {
    case SQLITE_CONSTRAINT:
        if (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY) {
            return kl_fail(KL_EEXIST, "store: %s: already exists (%s)", what, m);
        }
        return kl_fail(KL_EINPUT, "store: %s: refused by the store (%s)", what, m);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return kl_fail(KL_EIO, "store: %s: store %s is busy, gave up (%s)", what, q->path, m);
    case SQLITE_NOTADB:
        return kl_fail(KL_EINPUT, "store: %s is not a keyline store (%s)", q->path, m);
    case SQLITE_CORRUPT:
        return kl_fail(KL_EIO, "store: %s: store %s is corrupt (%s)", what, q->path, m);
    case SQLITE_NOMEM: return kl_fail(KL_EINTERNAL, "store: %s: out of memory", what);
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL: return kl_fail(KL_EIO, "store: %s: %s (%s)", what, q->path, m);
    default: return kl_fail(KL_EINTERNAL, "store: %s: SQLite error %d (%s)", what, src, m);
    }
}

/* --- locking, statements, transactions --- */

static kl_rc sq_lock(sq_store *q)
{
    /* SQLite: "do not open an SQLite database connection, then fork(), then try to use that
     * database connection in the child process." */
    if (q->pid != getpid()) {
        return kl_fail(KL_EUSAGE,
                       "store: handle for %s used after fork(); open the store in the "
                       "child",
                       q->path);
    }
    pthread_mutex_lock(&q->mu);
    return KL_OK;
}

static void sq_unlock(sq_store *q)
{
    pthread_mutex_unlock(&q->mu);
}

/* A cached statement, reset and with bindings cleared. */
static kl_rc sq_stmt(sq_store *q, int id, sqlite3_stmt **out)
{
    if (!q->st[id]) {
        int r =
            sqlite3_prepare_v3(q->db, q_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->st[id], NULL);
        if (r != SQLITE_OK) {
            q->st[id] = NULL;
            return sq_fail(q, r, "prepare");
        }
    }
    sqlite3_reset(q->st[id]);
    sqlite3_clear_bindings(q->st[id]);
    *out = q->st[id];
    return KL_OK;
}

/* Reset a statement so it releases its read snapshot (NULL ok). */
static void sq_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
    }
}

/* Run a statement that returns no rows (or whose rows we do not need). */
static kl_rc sq_run(sq_store *q, sqlite3_stmt *st, const char *what)
{
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    }
    kl_rc rc = (r == SQLITE_DONE) ? KL_OK : sq_fail(q, r, what);
    sqlite3_reset(st);
    return rc;
}

static void sq_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade a read
 * snapshot (which in WAL mode fails with SQLITE_BUSY_SNAPSHOT without waiting). The busy
 * handler waits up to SQ_BUSY_TIMEOUT_MS; some busy states (recovery) return at once, so retry
 * a few times with a short randomised pause. */
static kl_rc sq_begin(sq_store *q)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sq_stmt(q, Q_BEGIN, &st));
    for (int attempt = 0;; attempt++) {
        int r = sqlite3_step(st);
        sqlite3_reset(st);
        if (r == SQLITE_DONE) {
            return KL_OK;
        }
        if ((r & 0xff) != SQLITE_BUSY || attempt >= SQ_BUSY_RETRIES) {
            return sq_fail(q, r, "begin transaction");
        }
        sq_sleep_ms(5 + (long)(((unsigned)getpid() * 7919u + (unsigned)attempt * 104729u) % 45u));
    }
out:
    return rc;
}

/* Finish the transaction: COMMIT when rc is KL_OK, else ROLLBACK keeping rc and its message. */
static kl_rc sq_end(sq_store *q, kl_rc rc)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_get_autocommit(q->db)) {
        return rc; /* SQLite already rolled back (I/O error, full disk) or nothing began */
    }
    if (rc == KL_OK) {
        rc = sq_stmt(q, Q_COMMIT, &st);
        if (rc == KL_OK) {
            rc = sq_run(q, st, "commit");
        }
        if (rc == KL_OK || sqlite3_get_autocommit(q->db)) {
            return rc;
        }
    }
    /* ROLLBACK needs no lock and cannot meaningfully fail; keep the first error. */
    if (sq_stmt(q, Q_ROLLBACK, &st) == KL_OK) {
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    return rc;
}

static kl_rc sq_exec(sq_store *q, const char *sql, const char *what)
{
    int r = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
    return r == SQLITE_OK ? KL_OK : sq_fail(q, r, what);
}

/* --- column helpers --- */

static int col_str(sqlite3_stmt *st, int i, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        return 0;
    }
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) {
        return -1;
    }
    *out = strdup((const char *)t);
    return *out ? 0 : -1;
}

static int col_blob(sqlite3_stmt *st, int i, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        return 0;
    }
    const void *p = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (n <= 0) {
        return 0;
    }
    if (!p || !(*out = malloc((size_t)n))) {
        return -1;
    }
    memcpy(*out, p, (size_t)n);
    *len = (size_t)n;
    return 0;
}

static time_t col_time(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? 0 : (time_t)sqlite3_column_int64(st, i);
}

static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

static int bind_blob(sqlite3_stmt *st, int i, const uint8_t *p, size_t n)
{
    return (p && n) ? sqlite3_bind_blob64(st, i, p, n, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

#define BIND(expr)                                                                                 \
    do {                                                                                           \
        int br_ = (expr);                                                                          \
        if (br_ != SQLITE_OK) {                                                                    \
            rc = sq_fail(q, br_, "bind");                                                          \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* A failed step: map SQLite's code (the message comes from the connection). */
#define STEP_ENSURE(cond, r, what)                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = sq_fail(q, (r), (what));                                                          \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* Row of CERT_COLS -> record; returns the row id, -1 when out of memory. */
static int64_t row_cert(sqlite3_stmt *st, store_cert *c)
{
    int bad = 0;
    memset(c, 0, sizeof *c);
    bad |= col_str(st, 1, &c->serial_hex);
    bad |= col_str(st, 2, &c->issuer);
    bad |= col_str(st, 3, &c->subject);
    bad |= col_str(st, 4, &c->template_name);
    bad |= col_str(st, 5, &c->device_id);
    bad |= col_str(st, 6, &c->status);
    c->not_before = col_time(st, 7);
    c->not_after = col_time(st, 8);
    c->revoked_at = col_time(st, 9);
    c->revoke_reason = sqlite3_column_type(st, 10) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 10);
    bad |= col_blob(st, 11, &c->der, &c->der_len);
    c->created = col_time(st, 12);
    if (bad) {
        store_cert_free(c);
        return -1;
    }
    return sqlite3_column_int64(st, 0);
}

static int row_ca(sqlite3_stmt *st, void *out)
{
    store_ca *c = out;
    int bad = 0;
    memset(c, 0, sizeof *c);
    bad |= col_str(st, 0, &c->label);
    bad |= col_str(st, 1, &c->template_name);
    bad |= col_str(st, 2, &c->parent);
    bad |= col_str(st, 3, &c->key_type);
    bad |= col_blob(st, 4, &c->der, &c->der_len);
    bad |= col_str(st, 5, &c->status);
    c->created = col_time(st, 6);
    if (bad) {
        store_ca_free(c);
    }
    return bad;
}

static int row_dev(sqlite3_stmt *st, void *out)
{
    store_device *d = out;
    int bad = 0;
    memset(d, 0, sizeof *d);
    bad |= col_str(st, 0, &d->device_id);
    bad |= col_str(st, 1, &d->model);
    bad |= col_str(st, 2, &d->cert_serial);
    bad |= col_str(st, 3, &d->state);
    bad |= col_str(st, 4, &d->detail);
    d->updated = col_time(st, 5);
    if (bad) {
        store_device_free(d);
    }
    return bad;
}

static void copy_hash(char dst[65], const unsigned char *src)
{
    snprintf(dst, 65, "%s", src ? (const char *)src : "");
}

static int row_audit(sqlite3_stmt *st, void *out)
{
    store_audit *a = out;
    int bad = 0;
    memset(a, 0, sizeof *a);
    a->seq = sqlite3_column_int64(st, 0);
    a->ts = col_time(st, 1);
    bad |= col_str(st, 2, &a->actor);
    bad |= col_str(st, 3, &a->action);
    bad |= col_str(st, 4, &a->detail);
    copy_hash(a->prev_hash, sqlite3_column_text(st, 5));
    copy_hash(a->hash, sqlite3_column_text(st, 6));
    if (bad) {
        store_audit_free(a);
    }
    return bad;
}

static int row_cert_any(sqlite3_stmt *st, void *out)
{
    return row_cert(st, out) < 0 ? -1 : 0;
}

/* --- shared shapes of the ops below --- */

/* A row decoder: 0, or -1 when out of memory (the record is then already freed). */
typedef int (*sq_row_fn)(sqlite3_stmt *st, void *out);

/* --- group commit ---
 *
 * Every write operation (reserve, commit, abandon, revoke, audit append, ...) is a function run
 * inside a write transaction with the connection lock held. Concurrent callers share one
 * transaction: each queues its operation; the first thread to find no batch running becomes
 * the leader, takes the whole queue (up to SQ_BATCH_MAX), runs it in one BEGIN IMMEDIATE ...
 * COMMIT (one fsync with synchronous=FULL) and wakes exactly the owners of that batch (each
 * waits on its own condition variable), then the next in line, who leads the next batch.
 * Each operation runs in its own
 * SAVEPOINT, so one that fails (a UNIQUE clash on reserve, a state check) is rolled back alone
 * and the others commit. Operations run in queue order, so audit entries are chained in that
 * order. No caller returns before the COMMIT of its operation returned; a failed COMMIT (or a
 * transaction SQLite rolled back itself: I/O error, full disk) fails every operation of the
 * batch. Each caller gets its own kl_rc and message (re-set in its thread with kl_fail). */

static void sq_op_fail(sq_op *op, kl_rc rc, const char *msg)
{
    op->rc = rc;
    snprintf(op->msg, sizeof op->msg, "%s", msg);
}

/* Run a statement-only control statement (SAVEPOINT, RELEASE, ROLLBACK TO). */
static kl_rc sq_ctl(sq_store *q, int id, const char *what)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = sq_stmt(q, id, &st);
    return rc == KL_OK ? sq_run(q, st, what) : rc;
}

/* The leader: run `batch` in one transaction. Holds the connection lock throughout. */
static void sq_batch_run(sq_store *q, sq_op *batch)
{
    char why[SQ_MSG_MAX];
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    kl_rc brc = sq_begin(q);
    if (brc != KL_OK) {
        snprintf(why, sizeof why, "%s", kl_errmsg());
        for (sq_op *op = batch; op; op = op->next) {
            sq_op_fail(op, brc, why);
        }
        pthread_mutex_unlock(&q->mu);
        return;
    }
    kl_rc dead = KL_OK; /* set when SQLite rolled the whole transaction back */
    for (sq_op *op = batch; op; op = op->next, n++) {
        if (dead != KL_OK) {
            sq_op_fail(op, dead, why);
            continue;
        }
        kl_rc rc = sq_ctl(q, Q_SAVEPOINT, "savepoint");
        if (rc == KL_OK) {
            rc = op->fn(q, op->arg);
        }
        if (rc == KL_OK) {
            rc = sq_ctl(q, Q_RELEASE, "release savepoint");
        }
        op->rc = rc;
        if (rc != KL_OK) {
            snprintf(op->msg, sizeof op->msg, "%s", kl_errmsg());
            ERR_clear_error(); /* nothing of this op's OpenSSL errors for the next one */
            if (!sqlite3_get_autocommit(q->db)) {
                /* undo this op only; ROLLBACK TO keeps the savepoint, RELEASE drops it */
                if (sq_ctl(q, Q_ROLLBACK_TO, "roll back savepoint") != KL_OK ||
                    sq_ctl(q, Q_RELEASE, "release savepoint") != KL_OK) {
                    /* cannot isolate this op: give up the whole transaction below */
                    dead = kl_fail(KL_EIO, "store: %s: cannot roll back one operation (%s)",
                                   q->path, op->msg);
                }
            }
        }
        if (dead == KL_OK && sqlite3_get_autocommit(q->db)) {
            dead = rc != KL_OK ? rc : KL_EIO;
            snprintf(why, sizeof why, "store: %s: transaction rolled back (%.900s)", q->path,
                     rc != KL_OK ? op->msg : "unknown reason");
        } else if (dead != KL_OK) {
            snprintf(why, sizeof why, "%s", kl_errmsg());
        }
    }
    if (dead == KL_OK) {
        kl_rc crc = sq_end(q, KL_OK); /* COMMIT, or ROLLBACK if it fails */
        if (crc != KL_OK) {
            dead = crc;
            snprintf(why, sizeof why, "%s", kl_errmsg());
        }
    } else {
        (void)sq_end(q, dead); /* ROLLBACK whatever is left open */
    }
    if (dead != KL_OK) {
        /* nothing of this batch is on disk: every op fails, the successful ones too */
        for (sq_op *op = batch; op; op = op->next) {
            if (op->rc == KL_OK) {
                sq_op_fail(op, dead, why);
            }
        }
    } else {
        q->n_txn++;
        q->n_ops += n;
    }
    pthread_mutex_unlock(&q->mu);
}

/* Queue `fn(q, arg)` for the next group commit and wait until its transaction ended. */
static kl_rc sq_write(sq_store *q, sq_tx_fn fn, void *arg)
{
    if (q->pid != getpid()) {
        return kl_fail(KL_EUSAGE,
                       "store: handle for %s used after fork(); open the store in the "
                       "child",
                       q->path);
    }
    sq_op op;
    op.fn = fn;
    op.arg = arg;
    op.next = NULL;
    op.rc = KL_OK;
    op.done = 0;
    op.msg[0] = 0;
    pthread_cond_init(&op.cv, NULL);
    pthread_mutex_lock(&q->gmu);
    *q->qtail = &op;
    q->qtail = &op.next;
    while (!op.done) {
        if (q->leader) {
            /* woken when our op is done, or when we are first in line to lead */
            pthread_cond_wait(&op.cv, &q->gmu);
            continue;
        }
        /* lead: take up to SQ_BATCH_MAX queued ops */
        q->leader = 1;
        sq_op *batch = q->qhead;
        sq_op **cut = &q->qhead;
        for (size_t k = 0; *cut && k < SQ_BATCH_MAX; k++) {
            cut = &(*cut)->next;
        }
        q->qhead = *cut;
        *cut = NULL;
        if (!q->qhead) {
            q->qtail = &q->qhead;
        }
        pthread_mutex_unlock(&q->gmu);
        sq_batch_run(q, batch);
        pthread_mutex_lock(&q->gmu);
        for (sq_op *o = batch, *next; o; o = next) {
            next = o->next;
            o->done = 1; /* the owner may return (and its stack frame go) once we unlock */
            pthread_cond_signal(&o->cv);
        }
        q->leader = 0;
        if (q->qhead) {
            pthread_cond_signal(&q->qhead->cv); /* hand over: the next in line leads */
        }
    }
    pthread_mutex_unlock(&q->gmu);
    pthread_cond_destroy(&op.cv);
    if (op.rc != KL_OK) {
        return kl_fail(op.rc, "%s", op.msg);
    }
    return KL_OK;
}

/* The one row that `query` finds for `key` (bound to ?1), decoded into `out`. *found is 0 when
 * there is none: the caller words its own KL_ENOTFOUND. */
/* The reader connection's statement `id` (under rmu), opening the connection on first use. */
static kl_rc sq_reader_stmt(sq_store *q, int id, sqlite3_stmt **out)
{
    if (!q->rdb) {
        int r =
            sqlite3_open_v2(q->path, &q->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (r == SQLITE_OK) {
            sqlite3_extended_result_codes(q->rdb, 1);
            sqlite3_busy_timeout(q->rdb, SQ_BUSY_TIMEOUT_MS);
            r = sqlite3_exec(q->rdb, "PRAGMA query_only=1", NULL, NULL, NULL);
        }
        if (r != SQLITE_OK) {
            kl_rc rc = kl_fail(KL_EIO, "store: cannot open %s for reading: %s", q->path,
                               q->rdb ? sqlite3_errmsg(q->rdb) : sqlite3_errstr(r));
            sqlite3_close(q->rdb);
            q->rdb = NULL;
            return rc;
        }
    }
    if (!q->rst[id]) {
        int r =
            sqlite3_prepare_v3(q->rdb, q_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->rst[id], NULL);
        if (r != SQLITE_OK) {
            q->rst[id] = NULL;
            return kl_fail(KL_EIO, "store: %s: prepare: %s", q->path, sqlite3_errmsg(q->rdb));
        }
    }
    sqlite3_reset(q->rst[id]);
    sqlite3_clear_bindings(q->rst[id]);
    *out = q->rst[id];
    return KL_OK;
}

/* One row of `query` keyed by ?1, on the reader connection. */
static kl_rc sq_get_row(sq_store *q, int query, const char *key, sq_row_fn decode, void *out,
                        const char *what, int *found)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;

    *found = 0;
    ENSURE(q->pid == getpid(), KL_EUSAGE,
           "store: handle for %s used after fork(); open the store in the child", q->path);
    pthread_mutex_lock(&q->rmu);
    TRY(sq_reader_stmt(q, query, &st));
    ENSURE(sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT) == SQLITE_OK, KL_EINTERNAL,
           "store: bind: %s", sqlite3_errmsg(q->rdb));
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        goto out;
    }
    ENSURE(r == SQLITE_ROW, KL_EIO, "store: %s: store %s: %s", what, q->path,
           sqlite3_errmsg(q->rdb));
    ENSURE(decode(st, out) == 0, KL_EINTERNAL, "out of memory");
    *found = 1;
out:
    sq_done(st);
    if (q->pid == getpid()) {
        pthread_mutex_unlock(&q->rmu);
    }
    return rc;
}

/* Every row of `query` decoded into a growing array of `size`-byte records (`first` of them
 * allocated at the start). `from`: the value of ?1, NULL when the query has no parameter.
 * *vp and *np are set even on failure, to the rows decoded so far, for the caller's typed
 * _list_free. */
static kl_rc sq_collect(sq_store *q, int query, const int64_t *from, size_t size, size_t first,
                        sq_row_fn decode, const char *what, void **vp, size_t *np)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    unsigned char *v = NULL;
    size_t n = 0, alloc = 0;
    int r;
    int locked = 0;

    TRY(sq_lock(q));
    locked = 1;
    TRY(sq_stmt(q, query, &st));
    if (from) {
        BIND(sqlite3_bind_int64(st, 1, *from));
    }
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == alloc) {
            size_t na = alloc ? alloc * 2 : first;
            unsigned char *nv = realloc(v, na * size);
            ENSURE(nv, KL_EINTERNAL, "out of memory");
            v = nv;
            alloc = na;
        }
        ENSURE(decode(st, v + n * size) == 0, KL_EINTERNAL, "out of memory");
        n++;
    }
    STEP_ENSURE(r == SQLITE_DONE, r, what);
out:
    sq_done(st);
    if (locked) {
        sq_unlock(q);
    }
    *vp = v;
    *np = n;
    return rc;
}

/* --- audit chain (caller holds the lock and an open write transaction) --- */

static kl_rc audit_append_tx(sq_store *q, const char *actor, const char *action, const char *detail)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int64_t seq = 0;
    char prev[65];
    char hash[65];
    time_t now = time(NULL);

    TRY(sq_stmt(q, Q_HEAD_GET, &st));
    int r = sqlite3_step(st);
    ENSURE(r != SQLITE_DONE, KL_EIO, "store: audit head missing in %s (store damaged)", q->path);
    STEP_ENSURE(r == SQLITE_ROW, r, "read audit head");
    seq = sqlite3_column_int64(st, 0) + 1;
    copy_hash(prev, sqlite3_column_text(st, 1));
    sq_done(st);
    st = NULL;

    TRY(store_audit_entry_hash(seq, now, actor, action, detail, prev, hash));
    TRY(sq_stmt(q, Q_AUDIT_INSERT, &st));
    BIND(sqlite3_bind_int64(st, 1, seq));
    BIND(sqlite3_bind_int64(st, 2, (sqlite3_int64)now));
    BIND(bind_text(st, 3, actor));
    BIND(bind_text(st, 4, action));
    BIND(bind_text(st, 5, detail));
    BIND(bind_text(st, 6, prev));
    BIND(bind_text(st, 7, hash));
    rc = sq_run(q, st, "append audit entry");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EIO,
                     "store: audit entry %lld already exists past the recorded head: the "
                     "audit log was changed outside keyline (run audit verify)",
                     (long long)seq);
    }
    TRY(rc);
    TRY(sq_stmt(q, Q_HEAD_SET, &st));
    BIND(sqlite3_bind_int64(st, 1, seq));
    BIND(bind_text(st, 2, hash));
    TRY(sq_run(q, st, "update audit head"));
out:
    sq_done(st);
    return rc;
}

/* One CA record (label set) or certificate row (serial set), as the audit checks read it. */
typedef struct {
    const char *label, *serial, *status;
    const uint8_t *der;
    size_t der_len;
    int reason;        /* -1: none */
    time_t revoked_at; /* 0: none */
} sq_audit_row;
typedef kl_rc (*sq_audit_visit)(sq_store *q, void *arg, const sq_audit_row *w);

/* Every CA record, then every certificate row, in the caller's transaction. */
static kl_rc sq_audit_rows(sq_store *q, sq_audit_visit visit, void *arg)
{
    static const char *const sql[2] = {
        "SELECT label, der FROM cas ORDER BY rowid",
        "SELECT serial, der, status, revoke_reason, revoked_at FROM certs ORDER BY id",
    };
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int r;
    for (int k = 0; k < 2; k++) {
        r = sqlite3_prepare_v2(q->db, sql[k], -1, &st, NULL);
        STEP_ENSURE(r == SQLITE_OK, r, "read the rows to check");
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 0);
            sq_audit_row w = {.der = sqlite3_column_blob(st, 1),
                              .der_len = (size_t)sqlite3_column_bytes(st, 1),
                              .reason = -1};
            if (k == 0) {
                w.label = name ? name : "";
            } else {
                w.serial = name ? name : "";
                w.status = (const char *)sqlite3_column_text(st, 2);
                w.status = w.status ? w.status : "";
                if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
                    w.reason = sqlite3_column_int(st, 3);
                }
                w.revoked_at = col_time(st, 4);
            }
            TRY(visit(q, arg, &w));
        }
        STEP_ENSURE(r == SQLITE_DONE, r, "read the rows to check");
        sqlite3_finalize(st);
        st = NULL;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

static kl_rc sq_baseline_row(sq_store *q, void *arg, const sq_audit_row *w)
{
    char *d = NULL;
    kl_rc rc = KL_OK;
    (void)arg;
    if (w->label) {
        rc = store_audit_detail_ca(w->label, w->der, w->der_len, NULL, &d);
    } else if (strcmp(w->status, STORE_ST_PENDING) == 0 || strcmp(w->status, STORE_ST_VALID) == 0 ||
               strcmp(w->status, STORE_ST_REVOKED) == 0) {
        rc = store_audit_detail_baseline(w->serial, w->status, w->reason, w->revoked_at, w->der,
                                         w->der_len, &d);
    } else {
        return KL_OK; /* reserved / failed: never a certificate */
    }
    if (rc == KL_OK) {
        rc = audit_append_tx(q, "keyline", w->label ? "ca-baseline" : "cert-baseline", d);
    }
    free(d);
    return rc;
}

/* Schema 5. Entries written before audit verify checked the rows carry no certificate hashes
 * (and revoke entries no time), so the rows of an older store cannot be checked against them.
 * The migration records what the rows hold now, one cert-baseline entry per certificate and
 * one ca-baseline per CA record, in the migration's transaction: rows changed before the
 * upgrade cannot be told from genuine ones, rows changed after it can. */
static kl_rc sq_audit_baseline(sq_store *q)
{
    return sq_audit_rows(q, sq_baseline_row, NULL);
}

/* --- open / close --- */

static kl_rc sq_pragma_int(sq_store *q, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int r = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
    if (r == SQLITE_OK) {
        r = sqlite3_step(st);
    }
    if (r == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return KL_OK;
    }
    kl_rc rc = sq_fail(q, r, sql);
    sqlite3_finalize(st);
    return rc;
}

static kl_rc sq_set_wal(sq_store *q)
{
    for (int attempt = 0;; attempt++) {
        sqlite3_stmt *st = NULL;
        int r = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (r == SQLITE_OK) {
            r = sqlite3_step(st);
        }
        if (r == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(st, 0);
            int ok = mode && strcmp((const char *)mode, "wal") == 0;
            sqlite3_finalize(st);
            if (!ok) {
                return kl_fail(KL_EIO, "store: %s: cannot switch to WAL journal mode", q->path);
            }
            return KL_OK;
        }
        sqlite3_finalize(st);
        if ((r & 0xff) != SQLITE_BUSY || attempt >= SQ_BUSY_RETRIES) {
            return sq_fail(q, r, "set WAL journal mode");
        }
        sq_sleep_ms(20);
    }
}

static kl_rc sq_schema_init(sq_store *q)
{
    kl_rc rc = KL_OK;
    int64_t ver = 0;
    int64_t appid = 0;
    int64_t ntables = 0;
    int in_tx = 0;

    TRY(sq_pragma_int(q, "PRAGMA user_version", &ver));
    if (ver == 0) {
        /* New file, or another process is creating the schema right now: decide under the
         * write lock. */
        TRY(sq_begin(q));
        in_tx = 1;
        TRY(sq_pragma_int(q, "PRAGMA user_version", &ver));
        if (ver == 0) {
            TRY(sq_pragma_int(q, "SELECT count(*) FROM sqlite_master", &ntables));
            ENSURE(ntables == 0, KL_EINPUT,
                   "store: %s is an SQLite database but not a keyline store", q->path);
            TRY(sq_exec(q, sq_schema, "create schema"));
            char pragma[96];
            snprintf(pragma, sizeof pragma, "PRAGMA application_id=%d; PRAGMA user_version=%d",
                     SQ_APPLICATION_ID, SQ_SCHEMA_VERSION);
            TRY(sq_exec(q, pragma, "set schema version"));
            ver = SQ_SCHEMA_VERSION;
        }
        in_tx = 0;
        TRY(sq_end(q, KL_OK));
    }
    TRY(sq_pragma_int(q, "PRAGMA application_id", &appid));
    ENSURE(appid == SQ_APPLICATION_ID, KL_EINPUT,
           "store: %s is an SQLite database but not a keyline store", q->path);
    ENSURE(ver <= SQ_SCHEMA_VERSION, KL_EINPUT,
           "store: %s has schema version %lld, newer than this keyline understands (%d)", q->path,
           (long long)ver, SQ_SCHEMA_VERSION);
    /* Migrations, one step per version, each decided under the write lock like creation so
     * that racing first opens agree. sq_migrations[i] takes version i + 1 to i + 2. */
    static const struct {
        const char *sql, *what;
        kl_rc (*fn)(sq_store *q); /* run before sql, in the same transaction; NULL: none */
    } sq_migrations[] = {
        {SQ_CLAIMS_TABLE "PRAGMA user_version=2", "add the claims table", NULL},
        {SQ_REQUESTS_TABLE "PRAGMA user_version=3", "add the requests table", NULL},
        {SQ_CRLS_TABLE "PRAGMA user_version=4", "add the crls table", NULL},
        {"PRAGMA user_version=5", "record audit baselines", sq_audit_baseline},
        {SQ_AUDIT_CP_TABLES "PRAGMA user_version=6", "add the audit checkpoint tables", NULL},
    };
    _Static_assert(sizeof sq_migrations / sizeof sq_migrations[0] == SQ_SCHEMA_VERSION - 1,
                   "one migration per schema version");
    for (int64_t v = ver; v < SQ_SCHEMA_VERSION; v++) {
        TRY(sq_begin(q));
        in_tx = 1;
        TRY(sq_pragma_int(q, "PRAGMA user_version", &ver));
        if (ver == v) {
            if (sq_migrations[v - 1].fn) {
                TRY(sq_migrations[v - 1].fn(q));
            }
            TRY(sq_exec(q, sq_migrations[v - 1].sql, sq_migrations[v - 1].what));
        }
        in_tx = 0;
        TRY(sq_end(q, KL_OK));
    }
out:
    if (in_tx) {
        rc = sq_end(q, rc);
    }
    return rc;
}

static kl_rc sq_check_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    struct stat sb;
    if (!slash) {
        return KL_OK; /* relative to the working directory, which exists */
    }
    size_t n = (size_t)(slash - path);
    char *dir = strndup(path, n ? n : 1);
    if (!dir) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    kl_rc rc = KL_OK;
    if (stat(dir, &sb) != 0) {
        rc = kl_fail(KL_EIO, "store: cannot open %s: directory %s: %s", path, dir, strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = kl_fail(KL_EIO, "store: cannot open %s: %s is not a directory", path, dir);
    }
    free(dir);
    return rc;
}

static void sq_close(store *s);

static kl_rc sq_open(store **out, const char *path)
{
    kl_rc rc = KL_OK;
    sq_store *q = NULL;
    struct stat sb;

    *out = NULL;
    TRY(sq_check_dir(path));
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        return kl_fail(KL_EIO, "store: %s is a directory, not a store file", path);
    }
    q = calloc(1, sizeof *q);
    ENSURE(q, KL_EINTERNAL, "out of memory");
    q->base.ops = &store_sqlite_ops;
    q->pid = getpid();
    pthread_mutex_init(&q->mu, NULL);
    pthread_mutex_init(&q->gmu, NULL);
    pthread_mutex_init(&q->rmu, NULL);
    q->qtail = &q->qhead;
    q->path = strdup(path);
    ENSURE(q->path, KL_EINTERNAL, "out of memory");

    /* Create a new store file readable by owner and group only (SQLite would use 0644); the
     * -wal and -shm files inherit this mode. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    ENSURE(fd >= 0, KL_EIO, "store: cannot open %s: %s", path, strerror(errno));
    close(fd);

    int r = sqlite3_open_v2(path, &q->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK) {
        rc = kl_fail(KL_EIO, "store: cannot open %s: %s", path,
                     q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(r));
        goto out;
    }
    sqlite3_extended_result_codes(q->db, 1);
    sqlite3_busy_timeout(q->db, SQ_BUSY_TIMEOUT_MS);
    TRY(sq_set_wal(q));
    TRY(sq_exec(q, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", "set pragmas"));
    TRY(sq_schema_init(q));
    *out = &q->base;
    q = NULL;
out:
    if (q) {
        sq_close(&q->base);
    }
    return rc;
}

static void sq_close(store *s)
{
    sq_store *q = sq(s);
    if (!q) {
        return;
    }
    if (q->pid == getpid()) {
        for (int i = 0; i < Q_COUNT; i++) {
            sqlite3_finalize(q->st[i]);
            sqlite3_finalize(q->rst[i]);
        }
        sqlite3_close(q->rdb);
        sqlite3_close(q->db);
        pthread_mutex_destroy(&q->rmu);
        pthread_mutex_destroy(&q->mu);
        pthread_mutex_destroy(&q->gmu);
    }
    /* else: an inherited handle in a fork child; closing it could disturb the parent's WAL, so
     * only the memory is released. */
    free(q->path);
    free(q);
}

/* --- CA records --- */

static kl_rc ca_put_tx(sq_store *q, void *arg)
{
    const store_ca *ca = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[512];
    char *full = NULL; /* detail with the certificate's hash (store_audit.h) */

    TRY(sq_stmt(q, Q_CA_PUT, &st));
    BIND(bind_text(st, 1, ca->label));
    BIND(bind_text(st, 2, ca->template_name));
    BIND(bind_text(st, 3, ca->parent));
    BIND(bind_text(st, 4, ca->key_type));
    BIND(bind_blob(st, 5, ca->der, ca->der_len));
    BIND(bind_text(st, 6, ca->status ? ca->status : "active"));
    BIND(sqlite3_bind_int64(st, 7, (sqlite3_int64)(ca->created ? ca->created : time(NULL))));
    rc = sq_run(q, st, "add CA");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "a CA labelled '%s' already exists", ca->label);
    } else if (rc == KL_EINPUT && sqlite3_extended_errcode(q->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        rc = kl_fail(KL_ENOTFOUND, "parent CA '%s' of '%s' is not in the store",
                     ca->parent ? ca->parent : "", ca->label);
    }
    TRY(rc);
    snprintf(detail, sizeof detail, "label=%s parent=%s template=%s key=%s", ca->label,
             ca->parent ? ca->parent : "-", ca->template_name ? ca->template_name : "-",
             ca->key_type ? ca->key_type : "-");
    TRY(store_audit_detail_ca(ca->label, ca->der, ca->der_len, detail, &full));
    TRY(audit_append_tx(q, "keyline", "ca-create", full));
out:
    free(full);
    sq_done(st);
    return rc;
}

static kl_rc sq_ca_put(store *s, const store_ca *ca)
{
    return sq_write(sq(s), ca_put_tx, (void *)ca);
}

typedef struct {
    const char *label;
    const uint8_t *der;
    size_t len;
    const char *actor, *detail;
} ca_recert_arg;

static kl_rc ca_recert_tx(sq_store *q, void *arg)
{
    const ca_recert_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char *full = NULL;
    TRY(sq_stmt(q, Q_CA_RECERT, &st));
    BIND(bind_text(st, 1, a->label));
    BIND(bind_blob(st, 2, a->der, a->len));
    TRY(sq_run(q, st, "renew CA certificate"));
    ENSURE(sqlite3_changes(q->db) == 1, KL_ENOTFOUND, "no CA labelled '%s'", a->label);
    TRY(store_audit_detail_ca(a->label, a->der, a->len, a->detail, &full));
    TRY(audit_append_tx(q, a->actor, "ca-recert", full));
out:
    free(full);
    sq_done(st);
    return rc;
}

static kl_rc sq_ca_recert(store *s, const char *label, const uint8_t *der, size_t len,
                          const char *actor, const char *detail)
{
    ca_recert_arg a = {label, der, len, actor, detail};
    return sq_write(sq(s), ca_recert_tx, &a);
}

typedef struct {
    const store_ca *cas;
    size_t n;
    const char *actor, *action, *detail;
} ca_put_all_arg;

static kl_rc ca_put_all_tx(sq_store *q, void *arg)
{
    const ca_put_all_arg *a = arg;
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < a->n; i++) {
        TRY(ca_put_tx(q, (void *)&a->cas[i]));
    }
    TRY(audit_append_tx(q, a->actor, a->action, a->detail));
out:
    return rc;
}

static kl_rc sq_ca_put_all(store *s, const store_ca *cas, size_t n, const char *actor,
                           const char *action, const char *detail)
{
    ca_put_all_arg a = {cas, n, actor, action, detail};
    return sq_write(sq(s), ca_put_all_tx, &a); /* one savepoint: all rows or none */
}

static kl_rc sq_ca_get(store *s, const char *label, store_ca *outp)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(sq_get_row(sq(s), Q_CA_GET, label, row_ca, outp, "read CA", &found));
    ENSURE(found, KL_ENOTFOUND, "no CA labelled '%s'", label);
out:
    return rc;
}

static kl_rc sq_ca_list(store *s, store_ca **outp, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc = sq_collect(sq(s), Q_CA_LIST, NULL, sizeof **outp, 8, row_ca, "list CAs", &v, &n);
    if (rc != KL_OK) {
        store_ca_list_free(v, n);
        return rc;
    }
    *outp = v;
    *np = n;
    return KL_OK;
}

/* --- certificates --- */

/* ?1..?8 of Q_CERT_INSERT: serial, issuer, subject, template, device id, validity, creation
 * time */
static kl_rc cert_bind_row(sq_store *q, sqlite3_stmt *st, const store_cert *c)
{
    kl_rc rc = KL_OK;
    BIND(bind_text(st, 1, c->serial_hex));
    BIND(bind_text(st, 2, c->issuer));
    BIND(bind_text(st, 3, c->subject));
    BIND(bind_text(st, 4, c->template_name));
    BIND(bind_text(st, 5, c->device_id));
    BIND(sqlite3_bind_int64(st, 6, (sqlite3_int64)c->not_before));
    BIND(sqlite3_bind_int64(st, 7, (sqlite3_int64)c->not_after));
    BIND(sqlite3_bind_int64(st, 8, (sqlite3_int64)time(NULL)));
out:
    return rc;
}

typedef struct {
    const store_cert *c;
    const uint8_t *der;
    size_t len;
    const char *actor;
    const char *detail;
} cert_insert_arg;

static kl_rc cert_insert_tx(sq_store *q, void *arg)
{
    const cert_insert_arg *a = arg;
    const store_cert *c = a->c;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char *full = NULL; /* detail with status and DER hash (store_audit.h) */

    TRY(sq_stmt(q, Q_CERT_INSERT, &st));
    TRY(cert_bind_row(q, st, c));
    BIND(bind_text(st, 9, c->status));
    BIND(bind_blob(st, 10, a->der, a->len));
    rc = sq_run(q, st, "record certificate");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "serial %s is already in the store", c->serial_hex);
        goto out;
    }
    TRY(rc);
    TRY(store_audit_detail_issue(c->serial_hex, c->status, a->der, a->len, a->detail, &full));
    TRY(audit_append_tx(q, a->actor, "issue", full));
    if (c->request_id > 0) {
        /* the certificate approves a held request: both or neither */
        char detail[128];
        sq_done(st);
        TRY(sq_stmt(q, Q_RQ_APPROVE, &st));
        BIND(sqlite3_bind_int64(st, 1, (sqlite3_int64)c->request_id));
        BIND(bind_text(st, 2, c->serial_hex));
        BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL)));
        TRY(sq_run(q, st, "approve request"));
        ENSURE(sqlite3_changes(q->db) == 1, KL_EPOLICY,
               "request %lld is not pending (decided meanwhile, or unknown)",
               (long long)c->request_id);
        snprintf(detail, sizeof detail, "request=%lld serial=%s", (long long)c->request_id,
                 c->serial_hex);
        TRY(audit_append_tx(q, a->actor, "approve", detail));
    }
out:
    free(full);
    sq_done(st);
    return rc;
}

static kl_rc sq_cert_insert(store *s, const store_cert *c, const uint8_t *der, size_t len,
                            const char *actor, const char *detail)
{
    char *dflt = NULL;
    if (!detail) {
        size_t dl = strlen(c->serial_hex) + strlen(c->subject) + 32;
        dflt = malloc(dl);
        if (!dflt) {
            return kl_fail(KL_EINTERNAL, "out of memory");
        }
        snprintf(dflt, dl, "serial=%s subject=%s", c->serial_hex, c->subject);
        detail = dflt;
    }
    cert_insert_arg a = {.c = c, .der = der, .len = len, .actor = actor, .detail = detail};
    kl_rc rc = sq_write(sq(s), cert_insert_tx, &a);
    free(dflt);
    return rc;
}

/* Status and issuer of a serial; KL_ENOTFOUND when absent. */
static kl_rc cert_status(sq_store *q, const char *serial, char status[16], char *issuer,
                         size_t issuer_sz)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sq_stmt(q, Q_CERT_STATUS, &st));
    BIND(bind_text(st, 1, serial));
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rc = kl_fail(KL_ENOTFOUND, "no certificate with serial %s", serial);
        goto out;
    }
    STEP_ENSURE(r == SQLITE_ROW, r, "read certificate");
    const unsigned char *stt = sqlite3_column_text(st, 0);
    snprintf(status, 16, "%s", stt ? (const char *)stt : "");
    if (issuer) {
        const unsigned char *iss = sqlite3_column_text(st, 1);
        snprintf(issuer, issuer_sz, "%s", iss ? (const char *)iss : "");
    }
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_cert_get(store *s, const char *serial, store_cert *outp)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(sq_get_row(sq(s), Q_CERT_GET, serial, row_cert_any, outp, "read certificate", &found));
    ENSURE(found, KL_ENOTFOUND, "no certificate with serial %s", serial);
out:
    return rc;
}

static int row_cert_state(sqlite3_stmt *st, void *out)
{
    store_cert_state *o = out;
    const unsigned char *stt = sqlite3_column_text(st, 0);
    snprintf(o->status, sizeof o->status, "%s", stt ? (const char *)stt : "");
    o->not_before = (time_t)sqlite3_column_int64(st, 1);
    o->not_after = (time_t)sqlite3_column_int64(st, 2);
    return 0;
}

static kl_rc sq_cert_state(store *s, const char *serial, store_cert_state *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(sq_get_row(sq(s), Q_CERT_STATE, serial, row_cert_state, out, "read certificate status",
                   &found));
    ENSURE(found, KL_ENOTFOUND, "no certificate with serial %s", serial);
out:
    return rc;
}

/* Iterate certificates in id order, SQ_LIST_CHUNK rows per lock hold, calling cb without the
 * lock held (so a callback may call back into the store, and other threads are not starved).
 * Rows committed during the iteration may or may not be seen; none is seen twice. */
typedef struct {
    int query; /* Q_CERT_LIST or Q_CERT_PENDING */
    const char *status;
    const char *issuer;
    time_t older_than;
} cert_iter;

static kl_rc cert_iterate(sq_store *q, const cert_iter *it, store_cert_cb cb, void *arg)
{
    kl_rc rc = KL_OK;
    store_cert *rows = calloc(SQ_LIST_CHUNK, sizeof *rows);
    size_t n = 0;
    int64_t last = 0;
    int stop = 0;

    if (!rows) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    while (!stop) {
        sqlite3_stmt *st = NULL;
        int r = SQLITE_DONE;
        TRY(sq_lock(q));
        rc = sq_stmt(q, it->query, &st);
        if (rc == KL_OK) {
            int b = sqlite3_bind_int64(st, 1, last);
            if (it->query == Q_CERT_LIST) {
                b |= bind_text(st, 2, it->status);
                b |= bind_text(st, 3, it->issuer);
                b |= sqlite3_bind_int(st, 4, SQ_LIST_CHUNK);
            } else {
                b |= sqlite3_bind_int64(st, 2, (sqlite3_int64)it->older_than);
                b |= sqlite3_bind_int(st, 3, SQ_LIST_CHUNK);
            }
            if (b != SQLITE_OK) {
                rc = kl_fail(KL_EINTERNAL, "store: bind failed");
            }
        }
        while (rc == KL_OK && n < SQ_LIST_CHUNK && (r = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t id = row_cert(st, &rows[n]);
            if (id < 0) {
                rc = kl_fail(KL_EINTERNAL, "out of memory");
                break;
            }
            last = id;
            n++;
        }
        if (rc == KL_OK && r != SQLITE_ROW && r != SQLITE_DONE) {
            rc = sq_fail(q, r, "list certificates");
        }
        sq_done(st);
        sq_unlock(q);
        TRY(rc);
        size_t got = n;
        for (size_t i = 0; i < n; i++) {
            if (!stop && cb(arg, &rows[i]) != 0) {
                stop = 1;
            }
            store_cert_free(&rows[i]);
        }
        n = 0;
        if (got < SQ_LIST_CHUNK) {
            break;
        }
    }
out:
    for (size_t i = 0; i < n; i++) {
        store_cert_free(&rows[i]);
    }
    free(rows);
    return rc;
}

static kl_rc sq_cert_list(store *s, const char *status, const char *issuer, store_cert_cb cb,
                          void *arg)
{
    cert_iter it = {Q_CERT_LIST, status, issuer, 0};
    return cert_iterate(sq(s), &it, cb, arg);
}

static kl_rc sq_cert_list_pending(store *s, time_t older_than, store_cert_cb cb, void *arg)
{
    cert_iter it = {Q_CERT_PENDING, NULL, NULL, older_than};
    return cert_iterate(sq(s), &it, cb, arg);
}

typedef struct {
    const char *serial;
    const char *actor;
} cert_activate_arg;

static kl_rc cert_activate_tx(sq_store *q, void *arg)
{
    const cert_activate_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char cur[16];
    char detail[96];

    TRY(cert_status(q, a->serial, cur, NULL, 0));
    ENSURE(strcmp(cur, STORE_ST_PENDING) == 0, KL_EPOLICY,
           "certificate %s is %s, not pending: cannot activate it", a->serial, cur);
    TRY(sq_stmt(q, Q_CERT_ACTIVATE, &st));
    BIND(bind_text(st, 1, a->serial));
    TRY(sq_run(q, st, "activate certificate"));
    snprintf(detail, sizeof detail, "serial=%s", a->serial);
    TRY(audit_append_tx(q, a->actor, "activate", detail));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_cert_activate(store *s, const char *serial, const char *actor)
{
    cert_activate_arg a = {serial, actor};
    return sq_write(sq(s), cert_activate_tx, &a);
}

typedef struct {
    const char *serial;
    int reason;
    time_t when;
    const char *actor;
} cert_revoke_arg;

static kl_rc cert_revoke_tx(sq_store *q, void *arg)
{
    const cert_revoke_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char cur[16];
    char issuer[256];
    char detail[512];
    char *full = NULL; /* the revoke entry's detail (store_audit.h) */

    TRY(cert_status(q, a->serial, cur, issuer, sizeof issuer));
    ENSURE(strcmp(cur, STORE_ST_REVOKED) != 0, KL_EEXIST, "certificate %s is already revoked",
           a->serial);
    /* A reservation or an abandoned serial never became a certificate: nothing to revoke. */
    ENSURE(strcmp(cur, STORE_ST_VALID) == 0 || strcmp(cur, STORE_ST_PENDING) == 0, KL_ENOTFOUND,
           "no certificate with serial %s (only a %s reservation)", a->serial, cur);
    TRY(sq_stmt(q, Q_CERT_REVOKE, &st));
    BIND(bind_text(st, 1, a->serial));
    BIND(sqlite3_bind_int64(st, 2, (sqlite3_int64)a->when));
    BIND(a->reason >= 0 ? sqlite3_bind_int(st, 3, a->reason) : sqlite3_bind_null(st, 3));
    TRY(sq_run(q, st, "revoke certificate"));
    TRY(sq_stmt(q, Q_EPOCH_BUMP, &st));
    BIND(bind_text(st, 1, issuer));
    TRY(sq_run(q, st, "bump revocation epoch"));
    /* the inventory row of a device whose current certificate this is says so (the station
     * writes its own state afterwards when it revokes in a flow) */
    TRY(sq_stmt(q, Q_DEV_REVOKED, &st));
    BIND(bind_text(st, 1, a->serial));
    snprintf(detail, sizeof detail, "certificate %s revoked (reason %d)", a->serial, a->reason);
    BIND(bind_text(st, 2, detail));
    BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL)));
    TRY(sq_run(q, st, "update the inventory"));
    TRY(store_audit_detail_revoke(a->serial, issuer, a->reason, a->when, &full));
    TRY(audit_append_tx(q, a->actor, "revoke", full));
out:
    free(full);
    sq_done(st);
    return rc;
}

static kl_rc sq_cert_revoke(store *s, const char *serial, int reason, time_t when,
                            const char *actor)
{
    cert_revoke_arg a = {serial, reason, when ? when : time(NULL), actor};
    return sq_write(sq(s), cert_revoke_tx, &a);
}

typedef struct {
    const char *issuer;
    int64_t *out;
} crl_next_arg;

static kl_rc crl_number_next_tx(sq_store *q, void *arg)
{
    crl_next_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;

    TRY(sq_stmt(q, Q_CRL_NEXT, &st));
    BIND(bind_text(st, 1, a->issuer));
    int r = sqlite3_step(st);
    STEP_ENSURE(r == SQLITE_ROW, r, "next CRL number");
    *a->out = sqlite3_column_int64(st, 0);
    TRY(sq_run(q, st, "next CRL number"));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_crl_number_next(store *s, const char *issuer, int64_t *outp)
{
    int64_t v = 0;
    crl_next_arg a = {issuer, &v};
    kl_rc rc = sq_write(sq(s), crl_number_next_tx, &a);
    if (rc == KL_OK) {
        *outp = v; /* only once committed */
    }
    return rc;
}

static kl_rc sq_revocation_epoch(store *s, const char *issuer, int64_t *outp)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int locked = 0;

    TRY(sq_lock(q));
    locked = 1;
    TRY(sq_stmt(q, Q_EPOCH_GET, &st));
    BIND(bind_text(st, 1, issuer));
    int r = sqlite3_step(st);
    STEP_ENSURE(r == SQLITE_ROW || r == SQLITE_DONE, r, "read revocation epoch");
    *outp = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
out:
    sq_done(st);
    if (locked) {
        sq_unlock(q);
    }
    return rc;
}

/* --- published CRLs --- */

typedef struct {
    const char *issuer;
    int64_t number;
    time_t this_update, next_update;
    const uint8_t *der;
    size_t len;
    const char *actor, *detail;
} crl_put_arg;

static kl_rc crl_put_tx(sq_store *q, void *arg)
{
    const crl_put_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;

    /* The upsert replaces the row only for a higher number, decided inside the write
     * transaction: of two CRLs signed concurrently, the older one committed last does not
     * overwrite the newer one. */
    TRY(sq_stmt(q, Q_CRL_PUT, &st));
    BIND(bind_text(st, 1, a->issuer));
    BIND(sqlite3_bind_int64(st, 2, (sqlite3_int64)a->number));
    BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)a->this_update));
    BIND(sqlite3_bind_int64(st, 4, (sqlite3_int64)a->next_update));
    BIND(bind_blob(st, 5, a->der, a->len));
    BIND(sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL)));
    TRY(sq_run(q, st, "record CRL"));
    /* kept or replaced, this CRL was signed: audit it either way */
    TRY(audit_append_tx(q, a->actor, "crl", a->detail));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_crl_put(store *s, const char *issuer, int64_t number, time_t this_update,
                        time_t next_update, const uint8_t *der, size_t len, const char *actor,
                        const char *detail)
{
    crl_put_arg a = {issuer, number, this_update, next_update, der, len, actor, detail};
    return sq_write(sq(s), crl_put_tx, &a);
}

static int row_crl(sqlite3_stmt *st, void *out)
{
    store_crl *c = out;
    int bad = 0;
    memset(c, 0, sizeof *c);
    bad |= col_str(st, 0, &c->issuer);
    c->number = (int64_t)sqlite3_column_int64(st, 1);
    c->this_update = col_time(st, 2);
    c->next_update = col_time(st, 3);
    bad |= col_blob(st, 4, &c->der, &c->der_len);
    c->created = col_time(st, 5);
    if (bad) {
        store_crl_free(c);
    }
    return bad;
}

static kl_rc sq_crl_get(store *s, const char *issuer, store_crl *outp)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(sq_get_row(sq(s), Q_CRL_GET, issuer, row_crl, outp, "read CRL", &found));
    ENSURE(found, KL_ENOTFOUND, "no CRL published for '%s'", issuer);
out:
    return rc;
}

/* --- devices --- */

static kl_rc sq_device_get(store *s, const char *id, store_device *outp)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(sq_get_row(sq(s), Q_DEV_GET, id, row_dev, outp, "read device", &found));
    ENSURE(found, KL_ENOTFOUND, "no device '%s' in the inventory", id);
out:
    return rc;
}

static kl_rc device_put_tx(sq_store *q, void *arg)
{
    const store_device *d = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;

    TRY(sq_stmt(q, Q_DEV_PUT, &st));
    BIND(bind_text(st, 1, d->device_id));
    BIND(bind_text(st, 2, d->model));
    BIND(bind_text(st, 3, d->cert_serial));
    BIND(bind_text(st, 4, d->state ? d->state : "pending"));
    BIND(bind_text(st, 5, d->detail));
    BIND(sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL)));
    TRY(sq_run(q, st, "record device"));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_device_put(store *s, const store_device *d)
{
    return sq_write(sq(s), device_put_tx, (void *)d);
}

static kl_rc sq_device_list(store *s, store_device **outp, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc =
        sq_collect(sq(s), Q_DEV_LIST, NULL, sizeof **outp, 16, row_dev, "list devices", &v, &n);
    if (rc != KL_OK) {
        store_device_list_free(v, n);
        return rc;
    }
    *outp = v;
    *np = n;
    return KL_OK;
}

/* --- held enrollment requests --- */

static int row_request(sqlite3_stmt *st, void *out)
{
    store_request *r = out;
    int bad = 0;
    memset(r, 0, sizeof *r);
    r->id = (int64_t)sqlite3_column_int64(st, 0);
    bad |= col_str(st, 1, &r->label);
    bad |= col_str(st, 2, &r->csr_hash);
    bad |= col_blob(st, 3, &r->csr, &r->csr_len);
    bad |= col_str(st, 4, &r->issuer);
    bad |= col_str(st, 5, &r->template_name);
    bad |= col_str(st, 6, &r->device_id);
    bad |= col_str(st, 7, &r->requester);
    bad |= col_str(st, 8, &r->subject);
    bad |= col_str(st, 9, &r->status);
    bad |= col_str(st, 10, &r->cert_serial);
    bad |= col_str(st, 11, &r->reason);
    r->created = col_time(st, 12);
    r->decided = col_time(st, 13);
    if (bad) {
        store_request_free(r);
    }
    return bad;
}

typedef struct {
    const store_request *r;
    store_request *out;
} rq_submit_arg;

/* The row of (label, csr_hash) into a->out; *found 0 when there is none. */
static kl_rc rq_find(sq_store *q, const store_request *r, store_request *out, int *found)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    *found = 0;
    TRY(sq_stmt(q, Q_RQ_FIND, &st));
    BIND(bind_text(st, 1, r->label));
    BIND(bind_text(st, 2, r->csr_hash));
    int x = sqlite3_step(st);
    STEP_ENSURE(x == SQLITE_ROW || x == SQLITE_DONE, x, "read request");
    if (x == SQLITE_ROW) {
        ENSURE(row_request(st, out) == 0, KL_EINTERNAL, "out of memory");
        *found = 1;
    }
out:
    sq_done(st);
    return rc;
}

static kl_rc rq_submit_tx(sq_store *q, void *arg)
{
    const rq_submit_arg *a = arg;
    const store_request *r = a->r;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int found = 0;
    char detail[1200];

    TRY(rq_find(q, r, a->out, &found));
    if (found) {
        goto out;
    }
    TRY(sq_stmt(q, Q_RQ_INSERT, &st));
    BIND(bind_text(st, 1, r->label));
    BIND(bind_text(st, 2, r->csr_hash));
    BIND(bind_blob(st, 3, r->csr, r->csr_len));
    BIND(bind_text(st, 4, r->issuer));
    BIND(bind_text(st, 5, r->template_name));
    BIND(bind_text(st, 6, r->device_id));
    BIND(bind_text(st, 7, r->requester ? r->requester : "unknown"));
    BIND(bind_text(st, 8, r->subject));
    BIND(sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL)));
    TRY(sq_run(q, st, "hold request"));
    snprintf(detail, sizeof detail, "request=%lld label=%s issuer=%s template=%s subject=%.900s",
             (long long)sqlite3_last_insert_rowid(q->db), r->label, r->issuer, r->template_name,
             r->subject);
    TRY(audit_append_tx(q, r->requester ? r->requester : "unknown", "request", detail));
    TRY(rq_find(q, r, a->out, &found));
    ENSURE(found, KL_EINTERNAL, "store: the request just recorded is not there");
out:
    sq_done(st);
    if (rc != KL_OK) {
        store_request_free(a->out);
    }
    return rc;
}

static kl_rc sq_request_submit(store *s, const store_request *r, store_request *out)
{
    rq_submit_arg a = {r, out};
    return sq_write(sq(s), rq_submit_tx, &a);
}

static kl_rc sq_request_get(store *s, int64_t id, store_request *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)id);
    TRY(sq_get_row(sq(s), Q_RQ_GET, key, row_request, out, "read request", &found));
    ENSURE(found, KL_ENOTFOUND, "no request %lld", (long long)id);
out:
    return rc;
}

static kl_rc sq_request_list(store *s, store_request **outp, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    int64_t from = 0;
    kl_rc rc = sq_collect(sq(s), Q_RQ_LIST, &from, sizeof **outp, 16, row_request, "list requests",
                          &v, &n);
    if (rc != KL_OK) {
        store_request_list_free(v, n);
        return rc;
    }
    *outp = v;
    *np = n;
    return KL_OK;
}

static int row_count(sqlite3_stmt *st, void *out)
{
    *(int64_t *)out = (int64_t)sqlite3_column_int64(st, 0);
    return 0;
}

static kl_rc sq_request_count(store *s, const char *status, int64_t *n)
{
    int found = 0;
    return sq_get_row(sq(s), Q_RQ_COUNT, status, row_count, n, "count requests", &found);
}

typedef struct {
    int64_t id;
    const char *reason, *actor;
} rq_reject_arg;

static kl_rc rq_reject_tx(sq_store *q, void *arg)
{
    const rq_reject_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[700];
    TRY(sq_stmt(q, Q_RQ_REJECT, &st));
    BIND(sqlite3_bind_int64(st, 1, (sqlite3_int64)a->id));
    BIND(bind_text(st, 2, a->reason));
    BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL)));
    TRY(sq_run(q, st, "reject request"));
    ENSURE(sqlite3_changes(q->db) == 1, KL_EPOLICY, "request %lld is not pending",
           (long long)a->id);
    snprintf(detail, sizeof detail, "request=%lld reason=%.600s", (long long)a->id, a->reason);
    TRY(audit_append_tx(q, a->actor, "reject", detail));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_request_reject(store *s, int64_t id, const char *reason, const char *actor)
{
    store_request tmp;
    kl_rc rc = sq_request_get(s, id, &tmp); /* KL_ENOTFOUND for an unknown id */
    store_request_free(&tmp);
    if (rc != KL_OK) {
        return rc;
    }
    rq_reject_arg a = {id, reason, actor};
    return sq_write(sq(s), rq_reject_tx, &a);
}

/* --- device claims --- */

typedef struct {
    const char *device_id;
    const store_claim *me;
    char *holder;
    size_t holder_len;
} claim_arg;

static kl_rc claim_tx(sq_store *q, void *arg)
{
    const claim_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    store_claim_row held;
    memset(&held, 0, sizeof held);

    TRY(sq_stmt(q, Q_CLAIM_GET, &st));
    BIND(bind_text(st, 1, a->device_id));
    int r = sqlite3_step(st);
    STEP_ENSURE(r == SQLITE_ROW || r == SQLITE_DONE, r, "read device claim");
    if (r == SQLITE_ROW) {
        const unsigned char *t;
        snprintf(held.instance, sizeof held.instance, "%s",
                 (t = sqlite3_column_text(st, 0)) ? (const char *)t : "");
        snprintf(held.host, sizeof held.host, "%s",
                 (t = sqlite3_column_text(st, 1)) ? (const char *)t : "");
        held.pid = (long)sqlite3_column_int64(st, 2);
        snprintf(held.where, sizeof held.where, "%s",
                 (t = sqlite3_column_text(st, 3)) ? (const char *)t : "");
        held.expires = (time_t)sqlite3_column_int64(st, 4);
        sq_done(st);
        st = NULL;
        if (!store_claim_takeover(&held, a->me, time(NULL))) {
            if (strcmp(held.host, a->me->host) == 0) {
                snprintf(a->holder, a->holder_len, "%s (pid %ld)", held.where, held.pid);
            } else {
                snprintf(a->holder, a->holder_len, "%s on host %s (pid %ld)", held.where, held.host,
                         held.pid);
            }
            rc = kl_fail(KL_EEXIST, "device %s is claimed by %s", a->device_id, a->holder);
            goto out;
        }
    }
    sq_done(st);
    TRY(sq_stmt(q, Q_CLAIM_PUT, &st));
    BIND(bind_text(st, 1, a->device_id));
    BIND(bind_text(st, 2, a->me->instance));
    BIND(bind_text(st, 3, a->me->host));
    BIND(sqlite3_bind_int64(st, 4, (sqlite3_int64)a->me->pid));
    BIND(bind_text(st, 5, a->me->where));
    BIND(sqlite3_bind_int64(st, 6, (sqlite3_int64)a->me->expires));
    TRY(sq_run(q, st, "record device claim"));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_device_claim(store *s, const char *device_id, const store_claim *me, char *holder,
                             size_t holder_len)
{
    claim_arg a = {device_id, me, holder, holder_len};
    return sq_write(sq(s), claim_tx, &a);
}

static kl_rc unclaim_tx(sq_store *q, void *arg)
{
    const claim_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sq_stmt(q, Q_CLAIM_DEL, &st));
    BIND(bind_text(st, 1, a->device_id));
    BIND(bind_text(st, 2, a->me->instance));
    BIND(bind_text(st, 3, a->me->where));
    TRY(sq_run(q, st, "release device claim"));
out:
    sq_done(st);
    return rc;
}

static kl_rc sq_device_unclaim(store *s, const char *device_id, const store_claim *me)
{
    claim_arg a = {device_id, me, NULL, 0};
    return sq_write(sq(s), unclaim_tx, &a);
}

/* --- audit --- */

typedef struct {
    const char *actor;
    const char *action;
    const char *detail;
} audit_append_arg;

static kl_rc audit_append_op(sq_store *q, void *arg)
{
    const audit_append_arg *a = arg;
    return audit_append_tx(q, a->actor, a->action, a->detail);
}

static kl_rc sq_audit_append(store *s, const char *actor, const char *action, const char *detail)
{
    audit_append_arg a = {actor, action, detail};
    return sq_write(sq(s), audit_append_op, &a);
}

static kl_rc sq_write_stats(store *s, uint64_t *txns, uint64_t *ops)
{
    sq_store *q = sq(s);
    kl_rc rc = KL_OK;
    TRY(sq_lock(q));
    *txns = q->n_txn;
    *ops = q->n_ops;
    sq_unlock(q);
out:
    return rc;
}

static kl_rc sq_audit_head_locked(sq_store *q, int64_t *seq, char hash[65])
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sq_stmt(q, Q_HEAD_GET, &st));
    int r = sqlite3_step(st);
    ENSURE(r != SQLITE_DONE, KL_EPOLICY, "audit head missing (store damaged or edited)");
    STEP_ENSURE(r == SQLITE_ROW, r, "read audit head");
    *seq = sqlite3_column_int64(st, 0);
    copy_hash(hash, sqlite3_column_text(st, 1));
out:
    sq_done(st);
    return rc;
}

/* On the reader connection: a WAL reader does not wait for a commit's fsync, so keyline-cad can
 * look at the head after every request (its checkpoint rule) without queueing behind writers. */
static kl_rc sq_audit_head(store *s, int64_t *seq, char hash[65])
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    ENSURE(q->pid == getpid(), KL_EUSAGE,
           "store: handle for %s used after fork(); open the store in the child", q->path);
    pthread_mutex_lock(&q->rmu);
    rc = sq_reader_stmt(q, Q_HEAD_GET, &st);
    if (rc == KL_OK) {
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            *seq = sqlite3_column_int64(st, 0);
            copy_hash(hash, sqlite3_column_text(st, 1));
        } else if (r == SQLITE_DONE) {
            rc = kl_fail(KL_EPOLICY, "audit head missing (store damaged or edited)");
        } else {
            rc = kl_fail(KL_EIO, "store: read audit head: store %s: %s", q->path,
                         sqlite3_errmsg(q->rdb));
        }
    }
    sq_done(st);
    pthread_mutex_unlock(&q->rmu);
out:
    return rc;
}

/* A row against the log (store_audit.h). */
static kl_rc sq_state_row(sq_store *q, void *arg, const sq_audit_row *w)
{
    (void)q;
    if (w->label) {
        return store_audit_state_ca(arg, w->label, w->der, w->der_len);
    }
    return store_audit_state_cert(arg, w->serial, w->status, w->der, w->der_len, w->revoked_at,
                                  w->reason);
}

/* The current row of Q_AUDIT_LIST as entry `expect`, following the entry whose hash is `prev`:
 * KL_OK with its hash recomputed from the stored bytes (with their lengths: a NUL must not hide
 * what follows it) in h; KL_EPOLICY naming what is wrong. */
static kl_rc sq_entry_check(sqlite3_stmt *st, int64_t expect, const char *prev, char h[65])
{
    int64_t seq = sqlite3_column_int64(st, 0);
    time_t ts = col_time(st, 1);
    const char *f[3];
    size_t fl[3];
    static const char *const fname[3] = {"actor", "action", "detail"};
    for (int i = 0; i < 3; i++) {
        f[i] = (const char *)sqlite3_column_text(st, 2 + i);
        fl[i] = (size_t)sqlite3_column_bytes(st, 2 + i);
        if (f[i] && memchr(f[i], 0, fl[i])) {
            return kl_fail(KL_EPOLICY, "audit entry %lld: NUL byte in %s (entry edited)",
                           (long long)seq, fname[i]);
        }
    }
    const char *ph = (const char *)sqlite3_column_text(st, 5);
    const char *hh = (const char *)sqlite3_column_text(st, 6);
    if (seq > expect) {
        return kl_fail(KL_EPOLICY, "audit entry %lld missing (chain broken after %lld)",
                       (long long)expect, (long long)(expect - 1));
    }
    if (seq != expect) {
        return kl_fail(KL_EPOLICY, "audit entry %lld: unexpected sequence number", (long long)seq);
    }
    if (!ph || strcmp(ph, prev) != 0) {
        return kl_fail(KL_EPOLICY,
                       "audit entry %lld: previous-hash link broken (entry %lld edited or "
                       "replaced, or entry inserted)",
                       (long long)seq, (long long)(seq - 1));
    }
    if (store_audit_entry_hash_len(seq, ts, f[0], fl[0], f[1], fl[1], f[2], fl[2], prev, h) !=
            KL_OK ||
        !hh || strcmp(h, hh) != 0) {
        return kl_fail(KL_EPOLICY, "audit entry %lld: hash mismatch (entry edited)",
                       (long long)seq);
    }
    return KL_OK;
}

/* The recorded audit key and every checkpoint, for the check of store_audit_verify_report (in
 * the caller's read transaction). */
static kl_rc sq_cps_load(sq_store *q, store_audit_cps **out)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int r;
    *out = NULL;
    TRY(sq_stmt(q, Q_AKEY_GET, &st));
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        const uint8_t *spki = sqlite3_column_blob(st, 1);
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        /* a row with an empty key is a key that does not parse, not "no key" */
        TRY(store_audit_cps_new(out, (const char *)sqlite3_column_text(st, 0),
                                spki ? spki : (const uint8_t *)"", n));
    } else {
        STEP_ENSURE(r == SQLITE_DONE, r, "read the audit key");
        TRY(store_audit_cps_new(out, NULL, NULL, 0));
    }
    sq_done(st);
    TRY(sq_stmt(q, Q_CP_LIST, &st));
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        TRY(store_audit_cps_add(*out, sqlite3_column_int64(st, 0),
                                (const char *)sqlite3_column_text(st, 1), col_time(st, 2),
                                sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)));
    }
    STEP_ENSURE(r == SQLITE_DONE, r, "read the audit checkpoints");
out:
    sq_done(st);
    return rc;
}

/* Walk the whole chain in one read snapshot (BEGIN DEFERRED: writers in other processes go on;
 * threads of this process wait for the handle). Reports the first bad entry or checkpoint (in
 * entry order); then, in the same snapshot, the first row that disagrees with the log. */
static kl_rc sq_audit_verify_report(store *s, store_audit_report *out)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    sqlite3_stmt *bt = NULL;
    store_audit_state *x = NULL;
    store_audit_cps *cps = NULL;
    kl_rc rc = KL_OK;
    int locked = 0, in_tx = 0;
    int64_t expect = 1;
    int64_t head_seq = 0;
    char prev[65] = ZERO_HASH;
    char head_hash[65];
    char h[65];
    int r;

    memset(out, 0, sizeof *out);
    TRY(store_audit_state_new(&x));
    TRY(sq_lock(q));
    locked = 1;
    TRY(sq_stmt(q, Q_BEGIN_READ, &bt));
    TRY(sq_run(q, bt, "begin read"));
    in_tx = 1;
    TRY(sq_cps_load(q, &cps));
    TRY(store_audit_cps_start(cps));
    TRY(sq_stmt(q, Q_AUDIT_LIST, &st));
    BIND(sqlite3_bind_int64(st, 1, 1));
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        TRY(sq_entry_check(st, expect, prev, h));
        memcpy(prev, h, sizeof prev);
        /* a checkpoint of this entry: its signature, and the hash it signed */
        TRY(store_audit_cps_entry(cps, seq, h));
        TRY(store_audit_state_entry(x, seq, (const char *)sqlite3_column_text(st, 3),
                                    (const char *)sqlite3_column_text(st, 4),
                                    (size_t)sqlite3_column_bytes(st, 4)));
        expect++;
        out->entries++;
    }
    STEP_ENSURE(r == SQLITE_DONE, r, "read audit log");
    sq_done(st);
    st = NULL;

    /* The chain cannot show that its tail was cut off: compare with the head that every
     * append records in the same transaction. */
    TRY(sq_audit_head_locked(q, &head_seq, head_hash));
    if (head_seq > out->entries) {
        rc = kl_fail(KL_EPOLICY, "audit entry %lld missing (chain broken after %lld)",
                     (long long)(out->entries + 1), (long long)out->entries);
        goto out;
    }
    ENSURE(head_seq == out->entries, KL_EPOLICY,
           "audit entry %lld: not recorded in the audit head (appended outside keyline)",
           (long long)(head_seq + 1));
    ENSURE(strcmp(head_hash, prev) == 0, KL_EPOLICY,
           "audit entry %lld: hash does not match the recorded audit head (entry replaced)",
           (long long)head_seq);
    out->head_seq = head_seq;
    memcpy(out->head_hash, head_hash, sizeof out->head_hash);
    /* ... nor that head and tail were cut together: a checkpoint past the end can */
    TRY(store_audit_cps_end(cps, out->entries, out));
    /* The chain is intact: do the rows say what it says? */
    TRY(sq_audit_rows(q, sq_state_row, x));
    TRY(store_audit_state_verdict(x));
out:
    store_audit_state_free(x);
    store_audit_cps_free(cps);
    sq_done(st);
    if (in_tx) {
        rc = sq_end(q, rc); /* read-only: COMMIT just ends the snapshot */
    }
    if (locked) {
        sq_unlock(q);
    }
    return rc;
}

static kl_rc sq_audit_verify(store *s, int64_t *count)
{
    store_audit_report r;
    kl_rc rc = sq_audit_verify_report(s, &r);
    *count = r.entries;
    return rc;
}

/* --- audit checkpoints (caller holds the lock and an open write transaction) --- */

/* Do the entries after entry `from` (whose hash is `from_hash`; 0: from the start) recompute
 * and link up to the head (`head`, `head_hash`)? What a new checkpoint signs must extend what
 * the last one signed. */
static kl_rc sq_chain_extends(sq_store *q, int64_t from, const char *from_hash, int64_t head,
                              const char *head_hash)
{
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char prev[65];
    char h[65];
    int64_t expect = from + 1;
    int r;
    snprintf(prev, sizeof prev, "%s", from ? from_hash : ZERO_HASH);
    TRY(sq_stmt(q, Q_AUDIT_LIST, &st));
    BIND(sqlite3_bind_int64(st, 1, from ? from : 1));
    if (from) {
        r = sqlite3_step(st);
        STEP_ENSURE(r == SQLITE_ROW || r == SQLITE_DONE, r, "read audit log");
        const char *hh = r == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 6) : NULL;
        ENSURE(r == SQLITE_ROW && sqlite3_column_int64(st, 0) == from && hh &&
                   strcmp(hh, from_hash) == 0,
               KL_EPOLICY,
               "audit entry %lld is not the one its checkpoint signed (entries rewritten)",
               (long long)from);
    }
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        TRY(sq_entry_check(st, expect, prev, h));
        memcpy(prev, h, sizeof prev);
        expect++;
    }
    STEP_ENSURE(r == SQLITE_DONE, r, "read audit log");
    ENSURE(expect - 1 == head && strcmp(prev, head_hash) == 0, KL_EPOLICY,
           "the audit log ends at entry %lld, but the recorded head is entry %lld",
           (long long)(expect - 1), (long long)head);
out:
    sq_done(st);
    return rc;
}

typedef struct {
    const store_audit_signer *sg;
    store_audit_checkpoint *out;
    int made;
} cp_arg;

static kl_rc audit_checkpoint_tx(sq_store *q, void *arg)
{
    cp_arg *a = arg;
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char *label = NULL;
    uint8_t *spki = NULL, *sig = NULL;
    size_t spki_len = 0, sig_len = 0;
    int has_key = 0, has_cp = 0;
    store_audit_checkpoint last;
    int64_t head = 0;
    char head_hash[65];
    uint8_t tbs[STORE_AUDIT_CP_TBS_LEN];
    int r;
    memset(&last, 0, sizeof last);

    TRY(sq_stmt(q, Q_AKEY_GET, &st));
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        has_key = 1;
        ENSURE(col_str(st, 0, &label) == 0 && col_blob(st, 1, &spki, &spki_len) == 0, KL_EINTERNAL,
               "out of memory");
    } else {
        STEP_ENSURE(r == SQLITE_DONE, r, "read the audit key");
    }
    sq_done(st);
    TRY(sq_stmt(q, Q_CP_LAST, &st));
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        has_cp = 1;
        last.seq = sqlite3_column_int64(st, 0);
        copy_hash(last.hash, sqlite3_column_text(st, 1));
        last.ts = col_time(st, 2);
        ENSURE(col_blob(st, 3, &last.sig, &last.sig_len) == 0, KL_EINTERNAL, "out of memory");
    } else {
        STEP_ENSURE(r == SQLITE_DONE, r, "read the last audit checkpoint");
    }
    sq_done(st);
    st = NULL;
    TRY(sq_audit_head_locked(q, &head, head_hash));

#define CP_REFUSE(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char why_[600];                                                                        \
            snprintf(why_, sizeof why_, __VA_ARGS__);                                              \
            rc =                                                                                   \
                kl_fail(KL_EPOLICY,                                                                \
                        "refusing to sign the audit log: %s (run keyline-ca audit verify)", why_); \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
    CP_REFUSE(has_cp || !has_key,
              "the audit key '%.64s' is recorded but there is no checkpoint: the checkpoints "
              "were deleted",
              label ? label : "");
    CP_REFUSE(has_key || !has_cp, "checkpoints but no recorded audit key: the key was deleted");
    if (head == 0 && !has_cp) {
        goto out; /* an empty log: nothing to sign (the key is made with the first checkpoint) */
    }
    if (has_cp) {
        CP_REFUSE(last.seq <= head,
                  "the last checkpoint is at entry %lld, past the head (entry %lld): entries "
                  "deleted",
                  (long long)last.seq, (long long)head);
        if (store_audit_cp_sig_check(spki, spki_len, last.seq, last.ts, last.hash, last.sig,
                                     last.sig_len) != KL_OK) {
            CP_REFUSE(0, "%.500s", kl_errmsg());
        }
        if (last.seq == head) {
            CP_REFUSE(strcmp(last.hash, head_hash) == 0,
                      "the head is not the entry the last checkpoint signed (entry %lld "
                      "replaced)",
                      (long long)head);
            if (a->out) {
                *a->out = last; /* already signed */
                memset(&last, 0, sizeof last);
            }
            goto out;
        }
    }
    rc = sq_chain_extends(q, has_cp ? last.seq : 0, last.hash, head, head_hash);
    if (rc != KL_OK) {
        CP_REFUSE(0, "%.500s", kl_errmsg());
    }
#undef CP_REFUSE
    time_t now = time(NULL);
    if (!has_key) {
        TRY(a->sg->key_new(a->sg->arg, &label, &spki, &spki_len));
        ENSURE(label && label[0] && strlen(label) <= STORE_AUDIT_KEY_LABEL_MAX && spki && spki_len,
               KL_EINTERNAL, "audit key: no label or public key");
        TRY(sq_stmt(q, Q_AKEY_PUT, &st));
        BIND(bind_text(st, 1, label));
        BIND(bind_blob(st, 2, spki, spki_len));
        BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)now));
        TRY(sq_run(q, st, "record the audit key"));
    }
    store_audit_checkpoint_tbs(head, now, head_hash, tbs);
    TRY(a->sg->sign(a->sg->arg, label, tbs, sizeof tbs, &sig, &sig_len));
    ENSURE(sig && sig_len > 0 && sig_len <= STORE_AUDIT_SIG_MAX, KL_EHSM,
           "audit key '%s': a signature of %zu bytes", label, sig_len);
    if (store_audit_cp_sig_check(spki, spki_len, head, now, head_hash, sig, sig_len) != KL_OK) {
        rc = kl_fail(KL_EPOLICY,
                     "the audit key '%s' that signed is not the one recorded in the store (its "
                     "signature does not verify with the recorded public key); no checkpoint "
                     "recorded",
                     label);
        goto out;
    }
    TRY(sq_stmt(q, Q_CP_PUT, &st));
    BIND(sqlite3_bind_int64(st, 1, head));
    BIND(bind_text(st, 2, head_hash));
    BIND(sqlite3_bind_int64(st, 3, (sqlite3_int64)now));
    BIND(bind_blob(st, 4, sig, sig_len));
    TRY(sq_run(q, st, "record the audit checkpoint"));
    a->made = 1;
    if (a->out) {
        a->out->seq = head;
        memcpy(a->out->hash, head_hash, sizeof a->out->hash);
        a->out->ts = now;
        a->out->sig = sig;
        a->out->sig_len = sig_len;
        sig = NULL;
    }
out:
    sq_done(st);
    free(label);
    free(spki);
    free(sig);
    store_audit_checkpoint_free(&last);
    return rc;
}

static kl_rc sq_audit_checkpoint(store *s, const store_audit_signer *sg,
                                 store_audit_checkpoint *out, int *made)
{
    cp_arg a = {sg, out, 0};
    kl_rc rc = sq_write(sq(s), audit_checkpoint_tx, &a);
    *made = rc == KL_OK && a.made;
    if (rc != KL_OK && out) {
        store_audit_checkpoint_free(out); /* written by an op whose transaction failed */
    }
    return rc;
}

static kl_rc sq_audit_key_get(store *s, char **label, uint8_t **spki, size_t *spki_len)
{
    sq_store *q = sq(s);
    sqlite3_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int locked = 0;
    TRY(sq_lock(q));
    locked = 1;
    TRY(sq_stmt(q, Q_AKEY_GET, &st));
    int r = sqlite3_step(st);
    ENSURE(r != SQLITE_DONE, KL_ENOTFOUND, "no audit key recorded in the store");
    STEP_ENSURE(r == SQLITE_ROW, r, "read the audit key");
    if (col_str(st, 0, label) != 0 || col_blob(st, 1, spki, spki_len) != 0) {
        free(*label);
        *label = NULL;
        ENSURE(0, KL_EINTERNAL, "out of memory");
    }
out:
    sq_done(st);
    if (locked) {
        sq_unlock(q);
    }
    return rc;
}

static kl_rc sq_audit_list(store *s, int64_t from, store_audit **outp, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc = sq_collect(sq(s), Q_AUDIT_LIST, &from, sizeof **outp, 64, row_audit,
                          "list audit log", &v, &n);
    if (rc != KL_OK) {
        store_audit_list_free(v, n);
        return rc;
    }
    *outp = v;
    *np = n;
    return KL_OK;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ca_put = sq_ca_put,
    .ca_get = sq_ca_get,
    .ca_list = sq_ca_list,
    .cert_get = sq_cert_get,
    .cert_list = sq_cert_list,
    .cert_activate = sq_cert_activate,
    .cert_revoke = sq_cert_revoke,
    .cert_list_pending = sq_cert_list_pending,
    .crl_number_next = sq_crl_number_next,
    .revocation_epoch = sq_revocation_epoch,
    .device_get = sq_device_get,
    .device_put = sq_device_put,
    .device_list = sq_device_list,
    .audit_append = sq_audit_append,
    .audit_verify = sq_audit_verify,
    .audit_list = sq_audit_list,
    .audit_head = sq_audit_head,
    .cert_insert = sq_cert_insert,
    .cert_state = sq_cert_state,
    .device_claim = sq_device_claim,
    .device_unclaim = sq_device_unclaim,
    .ca_put_all = sq_ca_put_all,
    .request_submit = sq_request_submit,
    .request_get = sq_request_get,
    .request_list = sq_request_list,
    .request_reject = sq_request_reject,
    .request_count = sq_request_count,
    .crl_put = sq_crl_put,
    .crl_get = sq_crl_get,
    .ca_recert = sq_ca_recert,
    .write_stats = sq_write_stats,
    .audit_checkpoint = sq_audit_checkpoint,
    .audit_key_get = sq_audit_key_get,
    .audit_verify_report = sq_audit_verify_report,
};
