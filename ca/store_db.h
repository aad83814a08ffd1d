/* keyline: inside the store (for ca/store*.c only; callers use store.h).
 *
 * Two layers (docs/internals/store.md "Layers"):
 *  - a driver (store_sqlite.c, store_pg.c) is storage and transactions only: open a connection,
 *    begin/commit/roll back, savepoints, prepare + bind + step + read columns, and an error
 *    class for what failed (unique clash, other constraint, busy, unavailable). It knows no
 *    table and no rule.
 *  - the store logic above it (store_core.c: handles, group commit, schema steps; store_ca.c,
 *    store_cert.c, store_inv.c, store_log.c: the SQL and the rules: audit chain append,
 *    monotonic CRL numbers, approvals, claims, checkpoints) is written once for every driver.
 *
 * Adding data: a schema step in store_schema.c, a `store_q` per statement next to the function
 * that runs it, a transaction function run by store_write (writes) or store_read/store_get
 * (reads). HACKING.md "Store data" has the recipe. */
#ifndef KL_STORE_DB_H
#define KL_STORE_DB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "kl_err.h"
#include "store.h"

/* ---- driver interface ---- */

enum db_dialect { DB_SQLITE, DB_PG };

/* Why the last call on a connection failed (set together with the kl_fail message). */
enum db_errclass {
    DB_E_OTHER = 0,
    DB_E_UNIQUE,      /* UNIQUE or PRIMARY KEY clash: nothing written by that statement */
    DB_E_FOREIGN,     /* foreign key */
    DB_E_CONSTRAINT,  /* CHECK, NOT NULL, a refusing trigger */
    DB_E_BUSY,        /* locked by another writer past the driver's own waiting and retries */
    DB_E_UNAVAILABLE, /* the database cannot be reached now (server down, connection lost) */
    /* the database refuses this configuration (PostgreSQL: no such database, role or password
     * refused): KL_EUSAGE, never retried */
    DB_E_CONFIG
};

typedef struct db_driver db_driver;
/* A connection and a statement: each driver's own structs begin with these headers. */
typedef struct db {
    const db_driver *drv;
    int err;    /* enum db_errclass of the last failure */
    char *name; /* for messages: the file path, or the URL without password */
} db;
typedef struct db_stmt {
    const db_driver *drv;
    db *conn;
} db_stmt;

/* Every function returning kl_rc sets the message (kl_fail) and d->err on failure. Statements
 * number their parameters ?1, ?2, ... (a driver translates to its own syntax). */
struct db_driver {
    const char *name; /* the DSN scheme: "sqlite", "postgresql" */
    int dialect;
    /* `dsn` without the scheme for SQLite (a path), the whole URL for PostgreSQL. `reader`: a
     * second connection for point reads (may be opened read-only). */
    kl_rc (*open)(db **out, const char *dsn, int reader);
    void (*close)(db *d); /* NULL ok */
    /* A write transaction holds the store's write lock from its start (SQLite BEGIN IMMEDIATE;
     * PostgreSQL a transaction-scoped advisory lock), so every write transaction of every
     * process is serialised: audit appends, CRL numbers, claims and approvals decided inside it
     * cannot race. A read transaction is one snapshot. */
    kl_rc (*begin)(db *d, int write);
    kl_rc (*commit)(db *d);
    void (*rollback)(db *d);             /* also fine when the engine already rolled back */
    int (*in_tx)(db *d);                 /* 0 once the engine rolled the transaction back itself */
    kl_rc (*savepoint)(db *d, int what); /* DB_SP_* */
    kl_rc (*exec)(db *d, const char *sql); /* statements without parameters (DDL) */
    /* Schema version of a keyline store (0: an empty database). KL_EINPUT "not a keyline
     * store" for a database with other content. In a write transaction. */
    kl_rc (*schema_get)(db *d, int64_t *version);
    kl_rc (*schema_set)(db *d, int64_t version);
    kl_rc (*prepare)(db *d, const char *sql, db_stmt **out);
    void (*finalize)(db_stmt *st);                         /* NULL ok */
    void (*reset)(db_stmt *st);                            /* drop the result and the bindings */
    kl_rc (*bind_text)(db_stmt *st, int i, const char *v); /* NULL: SQL NULL */
    kl_rc (*bind_int64)(db_stmt *st, int i, int64_t v);
    kl_rc (*bind_blob)(db_stmt *st, int i, const uint8_t *p, size_t n); /* NULL/0: SQL NULL */
    kl_rc (*bind_null)(db_stmt *st, int i);
    kl_rc (*step)(db_stmt *st, int *row); /* *row 1: a row to read; 0: done */
    int (*col_null)(db_stmt *st, int i);
    int64_t (*col_int64)(db_stmt *st, int i);
    /* Valid until the next step or reset; NULL for SQL NULL. *len: bytes (may hold NULs). */
    const char *(*col_text)(db_stmt *st, int i, size_t *len);
    const uint8_t *(*col_blob)(db_stmt *st, int i, size_t *len);
    int64_t (*changes)(db_stmt *st); /* rows changed by the statement just run */
    /* The result's shape, for copying tables whole (store_copy.c). */
    int (*col_count)(db_stmt *st);
    const char *(*col_name)(db_stmt *st, int i);
    int (*col_kind)(db_stmt *st, int i); /* DB_K_*, of the current row's value */
    /* A consistent copy of the live store into the new file `path` (SQLite: the online backup
     * API). NULL: the driver has none (PostgreSQL: pg_dump / pg_basebackup). */
    kl_rc (*backup)(db *d, const char *path);
};
enum { DB_K_NULL, DB_K_INT, DB_K_TEXT, DB_K_BLOB, DB_K_OTHER };
enum { DB_SP_BEGIN, DB_SP_RELEASE, DB_SP_ROLLBACK };

extern const db_driver store_sqlite_driver;
extern const db_driver store_pg_driver;

/* ---- the store logic's view ---- */

/* A statement: SQL in SQLite's and PostgreSQL's common dialect (?N parameters), with a
 * PostgreSQL spelling where they differ (NULL: the same). Define each as a static const next
 * to the code that runs it; its address keys the per-connection statement cache. */
typedef struct {
    const char *sql;
    const char *pg;
} store_q;

/* One connection with its statement cache. */
typedef struct {
    db *d;
    struct store_cached {
        const store_q *q;
        db_stmt *st;
    } * cache;
    size_t n, cap;
} store_conn;

typedef kl_rc (*store_tx_fn)(store_conn *c, void *arg);
typedef struct store_op store_op;

struct store {
    const db_driver *drv;
    char *dsn;
    pid_t pid;          /* a handle is not usable across fork() */
    pthread_mutex_t mu; /* the writer connection */
    store_conn w;
    pthread_mutex_t rmu; /* the reader connection (point reads), opened on first use */
    store_conn r;
    /* group commit queue (store_core.c) */
    pthread_mutex_t gmu;
    store_op *qhead, **qtail;
    int leader;
    uint64_t n_txn, n_ops;
    /* gathering (store_core.c): the callers of the last batch are expected back */
    pthread_cond_t gcv; /* the gathering leader waits here (CLOCK_MONOTONIC) */
    uint64_t batch_id;  /* of the last batch that ended */
    size_t batch_n;     /* its size */
    size_t returned;    /* its callers queued again since */
    long commit_ns;     /* how long its transaction took */
    int gathering;
};

/* Open a store on `drv` (dsn as drv->open takes it) and bring its schema up to date. */
kl_rc store_core_open(store **out, const db_driver *drv, const char *dsn) KL_WUR;
/* store_close's keep of handles a fork child inherited (store_core.c) */
extern store *store_inherited[16];
extern size_t store_ninherited;

/* Run `fn` in a write transaction, group-committed with concurrent callers of this handle
 * (each in its own savepoint); KL_OK only once the COMMIT returned. `fn` may run more than once
 * (PostgreSQL: a retried serialisation failure) and must not keep state across runs. */
kl_rc store_write(store *s, store_tx_fn fn, void *arg) KL_WUR;
/* Run `fn` in one read transaction (a snapshot) on the writer connection. */
kl_rc store_read(store *s, store_tx_fn fn, void *arg) KL_WUR;
/* Run `fn` on the reader connection without a transaction: one statement, never waiting for a
 * writer's commit. */
kl_rc store_get(store *s, store_tx_fn fn, void *arg) KL_WUR;

/* The cached statement for `q`, reset. */
kl_rc sc_stmt(store_conn *c, const store_q *q, db_stmt **out) KL_WUR;
/* Step; on failure the message names `what` and the error class becomes a kl_rc: unique
 * KL_EEXIST, other constraint KL_EINPUT, busy KL_EIO, unavailable KL_EUNAVAIL "store unavailable:
 * ...", config the driver's KL_EUSAGE. */
kl_rc sc_step(db_stmt *st, int *row, const char *what) KL_WUR;
/* Step to the end (rows ignored), then reset. */
kl_rc sc_run(db_stmt *st, const char *what) KL_WUR;
void sc_done(db_stmt *st); /* reset (NULL ok): releases the read snapshot of a SELECT */
int64_t sc_changes(db_stmt *st);
int sc_dialect(const store_conn *c);

/* Binding (KL_OK or the driver's failure). */
kl_rc sc_text(db_stmt *st, int i, const char *v) KL_WUR;
kl_rc sc_int(db_stmt *st, int i, int64_t v) KL_WUR;
kl_rc sc_blob(db_stmt *st, int i, const uint8_t *p, size_t n) KL_WUR;
kl_rc sc_null(db_stmt *st, int i) KL_WUR;

/* Columns. col_str/col_bytes copy (0, or -1 when out of memory); NULL stays NULL. */
int col_str(db_stmt *st, int i, char **out);
int col_bytes(db_stmt *st, int i, uint8_t **out, size_t *len);
int col_isnull(db_stmt *st, int i);
int64_t col_int(db_stmt *st, int i);
time_t col_time(db_stmt *st, int i); /* NULL: 0 */
const char *col_text(db_stmt *st, int i, size_t *len);
const uint8_t *col_blob(db_stmt *st, int i, size_t *len);
void col_hash(db_stmt *st, int i, char out[65]);

/* ---- the schema (store_schema.c) ---- */
typedef struct {
    const char *what;           /* "add the claims table" */
    const char *sqlite, *pg;    /* DDL (NULL: nothing) */
    kl_rc (*fn)(store_conn *c); /* run after the DDL in the same transaction; NULL: none */
} store_schema_step;
/* Step i takes a store from version i to i + 1 (step 0 creates version 1). */
extern const store_schema_step store_schema_steps[];

/* The officer and the ceremony entries of the audit log, as the WHERE of their reads
 * (store_ceremony.c) and of the partial indexes that serve those reads (schema step 16):
 * SQLite uses a partial index only when the query's WHERE contains its terms as written. */
#define AUDIT_OFFICER_EVENTS "action IN ('officer-add', 'officer-remove')"
#define AUDIT_CEREMONY_EVENTS "action IN ('ceremony-propose', 'ceremony-run')"
extern const size_t store_schema_nsteps;

/* ---- logic shared between the store_*.c files ---- */
#define STORE_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
/* Append one audit entry in the caller's write transaction. */
kl_rc st_audit_append_tx(store_conn *c, const char *actor, const char *action,
                         const char *detail) KL_WUR;
/* Many entries in one write transaction: the head read once (begin), each entry chained to the
 * previous one in memory (add), the head written once (end, before the transaction commits).
 * Nothing else may append to the chain between begin and end. */
typedef struct {
    int64_t seq, first;
    char hash[65];
} st_audit_run;
kl_rc st_audit_run_begin(store_conn *c, st_audit_run *r) KL_WUR;
kl_rc st_audit_run_add(store_conn *c, st_audit_run *r, const char *actor, const char *action,
                       const char *detail) KL_WUR;
kl_rc st_audit_run_end(store_conn *c, const st_audit_run *r) KL_WUR;
/* Record a signed certificate (the row, its `issue` entry, the approval of c->request_id) in
 * the caller's write transaction: what store_cert_insert does, for a function that must decide
 * something else in the same transaction (a production order's count). Arguments as
 * store_cert_insert after its checks (canonical serial; detail NULL: the default). */
/* Count a certificate against production order `id` (store_order.c): KL_EPOLICY naming why
 * when the order is closed, expired or exhausted. Called by st_cert_insert_tx. */
kl_rc st_order_take_tx(store_conn *c, const char *id, const char *serial,
                       const char *device_id) KL_WUR;
/* Count a certificate against its CRL partition (cert->crl_part of cert->issuer, at most
 * cert->crl_part_size) and record its partition (store_crlpart.c): KL_EEXIST when that partition
 * is full or no longer the current one. Called by st_cert_insert_tx. */
kl_rc st_crlpart_take_tx(store_conn *c, const store_cert *cert) KL_WUR;
kl_rc st_cert_insert_tx(store_conn *c, const store_cert *cert, const uint8_t *der, size_t len,
                        const char *actor, const char *detail) KL_WUR;
/* Schema 5: the baseline entries of an older store's rows. */
kl_rc st_audit_baseline(store_conn *c) KL_WUR;

/* The operations behind store.h (arguments already checked and canonical: store.c). */
kl_rc st_ca_put(store *s, const store_ca *ca) KL_WUR;
kl_rc st_ca_put_all(store *s, const store_ca *cas, size_t n, const char *actor, const char *action,
                    const char *detail) KL_WUR;
kl_rc st_ca_get(store *s, const char *label, store_ca *out) KL_WUR;
kl_rc st_ca_list(store *s, store_ca **out, size_t *n) KL_WUR;
/* action: "ca-recert" (store_ca_recert) or "ocsp-signer-new" (store_ca_rekey) */
kl_rc st_ca_recert(store *s, const char *label, const uint8_t *der, size_t len, const char *actor,
                   const char *action, const char *detail) KL_WUR;
kl_rc st_cert_insert(store *s, const store_cert *c, const uint8_t *der, size_t len,
                     const char *actor, const char *detail) KL_WUR;
kl_rc st_cert_get(store *s, const char *serial, store_cert *out) KL_WUR;
/* Inside a transaction: certificate `serial`'s status (and issuer, when `issuer` is not NULL);
 * KL_ENOTFOUND without a row. */
kl_rc st_cert_status_tx(store_conn *c, const char *serial, char status[16], char *issuer,
                        size_t issuer_sz) KL_WUR;
kl_rc st_cert_state(store *s, const char *serial, store_cert_state *out) KL_WUR;
kl_rc st_cert_list(store *s, const char *status, const char *issuer, store_cert_cb cb,
                   void *arg) KL_WUR;
kl_rc st_cert_list_pending(store *s, time_t older_than, store_cert_cb cb, void *arg) KL_WUR;
kl_rc st_cert_activate(store *s, const char *serial, const char *actor) KL_WUR;
kl_rc st_cert_revoke(store *s, const char *serial, int reason, time_t when,
                     const char *actor) KL_WUR;
kl_rc st_crl_number_next(store *s, const char *issuer, int64_t *out) KL_WUR;
kl_rc st_revocation_epoch(store *s, const char *issuer, int64_t *out) KL_WUR;
/* The same inside a transaction the caller runs (store_crl_commit's check). */
kl_rc st_revocation_epoch_tx(store_conn *c, const char *issuer, int64_t *out) KL_WUR;
kl_rc st_crl_put(store *s, const char *issuer, int64_t number, time_t this_update,
                 time_t next_update, const uint8_t *der, size_t len, const char *actor,
                 const char *detail) KL_WUR;
kl_rc st_crl_get(store *s, const char *issuer, store_crl *out) KL_WUR;
/* Inside a write transaction: the crls row `name` of `crl` (replaced only by a higher number)
 * with its chunks when der_len is above the chunk size (store_cert.c). */
kl_rc st_crl_row_tx(store_conn *c, const char *name, const store_crl *crl) KL_WUR;
/* A compare-and-set's compare, in the caller's write transaction (no writer can change the row
 * before it ends): `q` reads (certificate serial, that certificate's status) of the row of
 * device `id` (?1); KL_EEXIST "device ID: its WHAT changed since it was read (...)" unless they
 * are what `seen` says (store_device_put_if; store_matter_put_if). */
kl_rc st_row_seen_tx(store_conn *c, const store_q *q, const char *id, const char *what,
                     const store_device_seen *seen) KL_WUR;
kl_rc st_device_get(store *s, const char *id, store_device *out) KL_WUR;
kl_rc st_device_put(store *s, const store_device *d) KL_WUR;
kl_rc st_device_list(store *s, store_device **out, size_t *n) KL_WUR;
kl_rc st_device_claim(store *s, const char *device_id, const store_claim *me, char *holder,
                      size_t holder_len) KL_WUR;
kl_rc st_device_unclaim(store *s, const char *device_id, const store_claim *me) KL_WUR;
kl_rc st_request_submit(store *s, const store_request *r, store_request *out) KL_WUR;
kl_rc st_request_get(store *s, int64_t id, store_request *out) KL_WUR;
kl_rc st_request_list(store *s, store_request **out, size_t *n) KL_WUR;
kl_rc st_request_count(store *s, const char *status, int64_t *n) KL_WUR;
kl_rc st_request_reject(store *s, int64_t id, const char *reason, const char *actor) KL_WUR;
kl_rc st_audit_append(store *s, const char *actor, const char *action, const char *detail) KL_WUR;
kl_rc st_audit_list(store *s, int64_t from, store_audit **out, size_t *n) KL_WUR;
kl_rc st_audit_head(store *s, int64_t *seq, char hash[65]) KL_WUR;
kl_rc st_audit_verify_report(store *s, store_audit_report *out) KL_WUR;
/* The same walk in the caller's open transaction (its snapshot). */
kl_rc st_audit_verify_tx(store_conn *c, store_audit_report *out) KL_WUR;
kl_rc st_audit_checkpoint(store *s, const store_audit_signer *sg, store_audit_checkpoint *out,
                          int *made) KL_WUR;
kl_rc st_audit_key_get(store *s, char **label, uint8_t **spki, size_t *spki_len) KL_WUR;
kl_rc st_write_stats(store *s, uint64_t *txns, uint64_t *ops) KL_WUR;

/* store_collect: every row of `q` (?1 = *from when from is set) decoded by `decode` into a
 * growing array of `size`-byte records; *vp and *np are set even on failure (rows so far). */
typedef int (*store_row_fn)(db_stmt *st, void *out); /* 0, or -1 out of memory (freed) */
kl_rc store_collect(store *s, const store_q *q, const int64_t *from, size_t size, size_t first,
                    store_row_fn decode, const char *what, void **vp, size_t *np) KL_WUR;
/* The same on the reader connection, one statement (a consistent result) that never waits for
 * a writer's commit: for small lists read on a hot path (the CA list of every issuance). */
kl_rc store_collect_get(store *s, const store_q *q, const int64_t *from, size_t size, size_t first,
                        store_row_fn decode, const char *what, void **vp, size_t *np) KL_WUR;
/* The one row `q` finds for the text key ?1 on the reader connection; *found 0 when none. */
kl_rc store_get_row(store *s, const store_q *q, const char *key, store_row_fn decode, void *out,
                    const char *what, int *found) KL_WUR;

#endif
