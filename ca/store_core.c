/* keyline: the store's core, above the drivers: handles and connections, the statement cache,
 * transactions with group commit, and the schema steps. Written once for every driver
 * (store_db.h; docs/internals/store.md "Layers"). */
#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_db.h"

#define STORE_BATCH_MAX 256          /* write operations per group-commit transaction */
#define STORE_MSG_MAX 1024           /* = the thread-local kl_errmsg buffer */
#define STORE_GATHER_MAX_NS 4000000L /* the most a leader waits for the last batch's callers */

/* ---- statements ---- */

int sc_dialect(const store_conn *c)
{
    return c->d->drv->dialect;
}

kl_rc sc_stmt(store_conn *c, const store_q *q, db_stmt **out)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->cache[i].q == q) {
            c->d->drv->reset(c->cache[i].st);
            *out = c->cache[i].st;
            return KL_OK;
        }
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 32;
        struct store_cached *v = realloc(c->cache, nc * sizeof *v);
        if (!v) {
            return kl_fail(KL_EINTERNAL, "out of memory");
        }
        c->cache = v;
        c->cap = nc;
    }
    const char *sql = (c->d->drv->dialect == DB_PG && q->pg) ? q->pg : q->sql;
    db_stmt *st = NULL;
    kl_rc rc = c->d->drv->prepare(c->d, sql, &st);
    if (rc != KL_OK) {
        return kl_wrap(rc, "store: prepare");
    }
    c->cache[c->n].q = q;
    c->cache[c->n].st = st;
    c->n++;
    *out = st;
    return KL_OK;
}

static void conn_close(store_conn *c)
{
    if (!c->d) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        c->d->drv->finalize(c->cache[i].st);
    }
    free(c->cache);
    c->d->drv->close(c->d);
    memset(c, 0, sizeof *c);
}

/* The driver's failure (message already set) as the store reports it, naming `what`. */
static kl_rc sc_fail(db *d, kl_rc drc, const char *what)
{
    char m[STORE_MSG_MAX];
    snprintf(m, sizeof m, "%s", kl_errmsg());
    switch (d->err) {
    case DB_E_UNIQUE: return kl_fail(KL_EEXIST, "store: %s: already exists (%s)", what, m);
    case DB_E_FOREIGN:
    case DB_E_CONSTRAINT:
        return kl_fail(KL_EINPUT, "store: %s: refused by the store (%s)", what, m);
    case DB_E_BUSY: /* another writer held the lock past the driver's waiting: retry later */
        return kl_fail(KL_EUNAVAIL, "store unavailable: %s: store %s is busy, gave up (%s)", what,
                       d->name, m);
    case DB_E_UNAVAILABLE:
        if (strncmp(m, "store unavailable: ", 19) == 0) {
            return kl_fail(KL_EUNAVAIL, "%s", m);
        }
        return kl_fail(KL_EUNAVAIL, "store unavailable: %s: %s (%s)", what, d->name, m);
    default: return kl_fail(drc, "store: %s: %s", what, m);
    }
}

kl_rc sc_step(db_stmt *st, int *row, const char *what)
{
    kl_rc rc = st->drv->step(st, row);
    return rc == KL_OK ? KL_OK : sc_fail(st->conn, rc, what);
}

kl_rc sc_run(db_stmt *st, const char *what)
{
    int row = 0;
    kl_rc rc;
    while ((rc = sc_step(st, &row, what)) == KL_OK && row) {
    }
    st->drv->reset(st);
    return rc;
}

void sc_done(db_stmt *st)
{
    if (st) {
        st->drv->reset(st);
    }
}

int64_t sc_changes(db_stmt *st)
{
    return st->drv->changes(st);
}

kl_rc sc_text(db_stmt *st, int i, const char *v)
{
    return st->drv->bind_text(st, i, v);
}

kl_rc sc_int(db_stmt *st, int i, int64_t v)
{
    return st->drv->bind_int64(st, i, v);
}

kl_rc sc_blob(db_stmt *st, int i, const uint8_t *p, size_t n)
{
    return st->drv->bind_blob(st, i, p, n);
}

kl_rc sc_null(db_stmt *st, int i)
{
    return st->drv->bind_null(st, i);
}

/* ---- columns ---- */

int col_isnull(db_stmt *st, int i)
{
    return st->drv->col_null(st, i);
}

int64_t col_int(db_stmt *st, int i)
{
    return st->drv->col_null(st, i) ? 0 : st->drv->col_int64(st, i);
}

time_t col_time(db_stmt *st, int i)
{
    return (time_t)col_int(st, i);
}

const char *col_text(db_stmt *st, int i, size_t *len)
{
    size_t dummy;
    return st->drv->col_text(st, i, len ? len : &dummy);
}

const uint8_t *col_blob(db_stmt *st, int i, size_t *len)
{
    size_t dummy;
    return st->drv->col_blob(st, i, len ? len : &dummy);
}

int col_str(db_stmt *st, int i, char **out)
{
    size_t n = 0;
    const char *t = st->drv->col_text(st, i, &n);
    *out = NULL;
    if (!t) {
        return 0;
    }
    *out = strndup(t, n);
    return *out ? 0 : -1;
}

int col_bytes(db_stmt *st, int i, uint8_t **out, size_t *len)
{
    size_t n = 0;
    const uint8_t *p = st->drv->col_blob(st, i, &n);
    *out = NULL;
    *len = 0;
    if (!p || n == 0) {
        return 0;
    }
    if (!(*out = malloc(n))) {
        return -1;
    }
    memcpy(*out, p, n);
    *len = n;
    return 0;
}

void col_hash(db_stmt *st, int i, char out[65])
{
    const char *t = col_text(st, i, NULL);
    snprintf(out, 65, "%s", t ? t : "");
}

/* ---- handles ---- */

static kl_rc store_usable(store *s)
{
    /* SQLite: "do not open an SQLite database connection, then fork(), then try to use that
     * database connection in the child process." libpq: a connection is not shared either. */
    if (s->pid != getpid()) {
        return kl_fail(KL_EUSAGE,
                       "store: handle for %s used after fork(); open the store in the "
                       "child",
                       s->w.d ? s->w.d->name : s->dsn);
    }
    return KL_OK;
}

static kl_rc store_schema_init(store *s);

kl_rc store_core_open(store **out, const db_driver *drv, const char *dsn)
{
    kl_rc rc = KL_OK;
    store *s = calloc(1, sizeof *s);
    *out = NULL;
    ENSURE(s, KL_EINTERNAL, "out of memory");
    s->drv = drv;
    s->pid = getpid();
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_mutex_init(&s->gmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->gcv, &ca);
    pthread_condattr_destroy(&ca);
    s->qtail = &s->qhead;
    s->dsn = strdup(dsn);
    ENSURE(s->dsn, KL_EINTERNAL, "out of memory");
    TRY(drv->open(&s->w.d, dsn, 0));
    TRY(store_schema_init(s));
    *out = s;
    s = NULL;
out:
    store_close(s);
    return rc;
}

/* Handles a fork child closed (store_close): kept reachable, never read. Not static, so that
 * no optimiser drops the stores. */
store *store_inherited[16];
size_t store_ninherited;

void store_close(store *s)
{
    if (!s) {
        return;
    }
    if (s->pid != getpid()) {
        /* An inherited handle in a fork child: closing it could disturb the parent's
         * connection (SQLite's WAL, libpq's socket), and freeing the handle alone would lose
         * the connection's memory, so it is left whole and kept reachable until the child
         * exits or execs (leak checkers see it as still in use). */
        store_inherited[store_ninherited++ % 16] = s;
        return;
    }
    conn_close(&s->r);
    conn_close(&s->w);
    pthread_mutex_destroy(&s->rmu);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->gmu);
    pthread_cond_destroy(&s->gcv);
    free(s->dsn);
    free(s);
}

/* ---- transactions ---- */

/* End the open transaction: COMMIT when rc is KL_OK, else ROLLBACK keeping rc and message. */
static kl_rc tx_end(db *d, kl_rc rc)
{
    if (!d->drv->in_tx(d)) {
        return rc; /* the engine already rolled back (I/O error, full disk), or nothing began */
    }
    if (rc == KL_OK) {
        rc = d->drv->commit(d);
        if (rc != KL_OK) {
            rc = sc_fail(d, rc, "commit");
        }
        if (rc == KL_OK || !d->drv->in_tx(d)) {
            return rc;
        }
    }
    d->drv->rollback(d); /* keeps the first error */
    return rc;
}

kl_rc store_read(store *s, store_tx_fn fn, void *arg)
{
    kl_rc rc = store_usable(s);
    if (rc != KL_OK) {
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    rc = s->drv->begin(s->w.d, 0);
    if (rc != KL_OK) {
        rc = sc_fail(s->w.d, rc, "begin read");
    } else {
        rc = tx_end(s->w.d, fn(&s->w, arg)); /* read-only: COMMIT just ends the snapshot */
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The store whose reader connection this thread holds in one read transaction
 * (store_snapshot_begin), NULL when none: its store_get calls run in that transaction. */
static _Thread_local const store *tl_snap;

/* The reader connection, opened on first use (under rmu). */
static kl_rc reader_ready(store *s)
{
    return s->r.d ? KL_OK : s->drv->open(&s->r.d, s->dsn, 1);
}

kl_rc store_get(store *s, store_tx_fn fn, void *arg)
{
    kl_rc rc = store_usable(s);
    if (rc != KL_OK) {
        return rc;
    }
    if (tl_snap == s) {
        return fn(&s->r, arg); /* rmu held and the transaction open: store_snapshot_begin */
    }
    pthread_mutex_lock(&s->rmu);
    rc = reader_ready(s);
    if (rc == KL_OK) {
        rc = fn(&s->r, arg);
    }
    pthread_mutex_unlock(&s->rmu);
    return rc;
}

kl_rc store_snapshot_begin(store *s)
{
    kl_rc rc = store_usable(s);
    if (rc != KL_OK) {
        return rc;
    }
    if (tl_snap) {
        return kl_fail(KL_EINTERNAL, "store: a snapshot is already open in this thread");
    }
    pthread_mutex_lock(&s->rmu);
    rc = reader_ready(s);
    if (rc == KL_OK) {
        rc = s->drv->begin(s->r.d, 0);
        if (rc != KL_OK) {
            rc = sc_fail(s->r.d, rc, "begin read");
        }
    }
    if (rc != KL_OK) {
        pthread_mutex_unlock(&s->rmu);
        return rc;
    }
    tl_snap = s;
    return KL_OK;
}

kl_rc store_snapshot_end(store *s, kl_rc rc)
{
    if (!s || tl_snap != s) {
        return rc != KL_OK ? rc : kl_fail(KL_EINTERNAL, "store: no snapshot open in this thread");
    }
    tl_snap = NULL;
    rc = tx_end(s->r.d, rc); /* COMMIT ends the snapshot; after a failure ROLLBACK keeps it */
    pthread_mutex_unlock(&s->rmu);
    return rc;
}

/* ---- group commit ----
 *
 * Every write operation is a function run inside a write transaction with the connection lock
 * held. Concurrent callers share one transaction: each queues its operation; the first thread
 * to find no batch running becomes the leader, takes the whole queue (up to STORE_BATCH_MAX),
 * runs it in one write transaction (one fsync with SQLite's synchronous=FULL, one commit round
 * trip with PostgreSQL) and wakes exactly the owners of that batch (each waits on its own
 * condition variable), then the next in line, who leads the next batch. Each operation runs in
 * its own SAVEPOINT, so one that fails (a UNIQUE clash, a state check) is rolled back alone and
 * the others commit. Operations run in queue order, so audit entries are chained in that order.
 * No caller returns before the COMMIT of its operation returned; a failed COMMIT (or a
 * transaction the engine rolled back itself: I/O error, full disk, lost connection) fails every
 * operation of the batch. Each caller gets its own kl_rc and message (re-set in its thread).
 *
 * Gathering: callers that issue one write after another (the threads of keyline-cad, EST)
 * prepare their next operation while the batch runs; without waiting, the next leader commits
 * as soon as the batch ends, with only the operations queued while it ran, and the callers of
 * the batch just ended miss it, so the callers split into two halves that commit in turn
 * (measured: 8 threads, 4 operations per commit). So the next leader first waits for the
 * callers of the last batch to queue again (each is recognised by a thread-local note of the
 * batch it was in), at most as long as that batch's transaction took and never more than
 * STORE_GATHER_MAX_NS: a caller alone (one thread) or a batch whose callers are all back waits
 * not at all, and a caller that does not come back costs one wait no longer than the commit it
 * would otherwise have waited for. Durability is unchanged: nobody returns before its COMMIT. */

struct store_op {
    store_tx_fn fn;
    void *arg;
    store_op *next;
    kl_rc rc;
    int done;
    uint64_t batch;    /* the batch it was committed in (its id), set with done */
    pthread_cond_t cv; /* its owner waits here (under gmu): woken when done or to lead */
    char msg[STORE_MSG_MAX];
};

static void op_fail(store_op *op, kl_rc rc, const char *msg)
{
    op->rc = rc;
    snprintf(op->msg, sizeof op->msg, "%s", msg);
}

static kl_rc sp(db *d, int what)
{
    kl_rc rc = d->drv->savepoint(d, what);
    return rc == KL_OK ? rc : sc_fail(d, rc, "savepoint");
}

/* One operation of a batch in its savepoint. Returns KL_OK, or the code that ends the whole
 * transaction (`why` says why). */
static kl_rc batch_one(store *s, store_op *op, int alone, int *undo, char *why, size_t whylen)
{
    db *d = s->w.d;
    /* alone in its transaction (the usual case without concurrency): no savepoint, a failure
     * rolls the whole transaction back (two statements, two round trips to a server, less) */
    kl_rc rc = alone ? KL_OK : sp(d, DB_SP_BEGIN);
    if (rc == KL_OK) {
        rc = op->fn(&s->w, op->arg);
    }
    if (rc == KL_OK && !alone) {
        rc = sp(d, DB_SP_RELEASE);
    }
    op->rc = rc;
    if (rc == KL_OK) {
        if (d->drv->in_tx(d)) {
            return KL_OK;
        }
        snprintf(why, whylen, "store: %s: transaction rolled back (unknown reason)", d->name);
        return kl_fail(KL_EIO, "%s", why);
    }
    snprintf(op->msg, sizeof op->msg, "%s", kl_errmsg());
    ERR_clear_error(); /* nothing of this op's OpenSSL errors for the next one */
    if (!d->drv->in_tx(d)) {
        snprintf(why, whylen, "store: %s: transaction rolled back (%.900s)", d->name, op->msg);
        return rc;
    }
    if (alone) {
        *undo = 1;
        return KL_OK;
    }
    /* undo this op only; ROLLBACK TO keeps the savepoint, RELEASE drops it */
    if (sp(d, DB_SP_ROLLBACK) != KL_OK || sp(d, DB_SP_RELEASE) != KL_OK) {
        kl_rc dead =
            kl_fail(KL_EIO, "store: %s: cannot roll back one operation (%s)", d->name, op->msg);
        snprintf(why, whylen, "%s", kl_errmsg());
        return dead;
    }
    return KL_OK;
}

/* The leader: run `batch` in one transaction. Holds the connection lock throughout. */
static void batch_run(store *s, store_op *batch)
{
    char why[STORE_MSG_MAX];
    size_t n = 0;
    int undo = 0;
    db *d = s->w.d;
    pthread_mutex_lock(&s->mu);
    kl_rc dead = d->drv->begin(d, 1);
    if (dead != KL_OK) {
        dead = sc_fail(d, dead, "begin transaction");
        snprintf(why, sizeof why, "%s", kl_errmsg());
    }
    for (store_op *op = batch; op && dead == KL_OK; op = op->next, n++) {
        dead = batch_one(s, op, batch->next == NULL, &undo, why, sizeof why);
    }
    if (dead == KL_OK && undo) {
        (void)tx_end(d, KL_EIO); /* the one op failed: ROLLBACK; it keeps its own error */
        s->n_txn++;              /* counted as before, when it ended with a RELEASE + COMMIT */
        s->n_ops++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (dead == KL_OK) {
        dead = tx_end(d, KL_OK); /* COMMIT, or ROLLBACK if it fails */
        if (dead != KL_OK) {
            snprintf(why, sizeof why, "%s", kl_errmsg());
        }
    } else {
        (void)tx_end(d, dead); /* ROLLBACK whatever is left open */
    }
    if (dead != KL_OK) {
        /* nothing of this batch is stored: every op fails, the successful ones too */
        for (store_op *op = batch; op; op = op->next) {
            if (op->rc == KL_OK) {
                op_fail(op, dead, why);
            }
        }
    } else {
        s->n_txn++;
        s->n_ops += n;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Take up to STORE_BATCH_MAX queued ops off the queue (under gmu). */
static store_op *queue_take(store *s)
{
    store_op *batch = s->qhead;
    store_op **cut = &s->qhead;
    for (size_t k = 0; *cut && k < STORE_BATCH_MAX; k++) {
        cut = &(*cut)->next;
    }
    s->qhead = *cut;
    *cut = NULL;
    if (!s->qhead) {
        s->qtail = &s->qhead;
    }
    return batch;
}

/* The batch this thread's last write on store `s` was in (see Gathering). */
static _Thread_local struct {
    const store *s;
    uint64_t batch;
} tl_last;

static long ns_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (long)(t1.tv_sec - t0->tv_sec) * 1000000000L + (t1.tv_nsec - t0->tv_nsec);
}

/* The new leader (under gmu): wait for the callers of the last batch to queue again. */
static void gather(store *s)
{
    if (s->returned >= s->batch_n || s->commit_ns <= 0) {
        return;
    }
    long wait = s->commit_ns < STORE_GATHER_MAX_NS ? s->commit_ns : STORE_GATHER_MAX_NS;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += wait;
    dl.tv_sec += dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    s->gathering = 1;
    while (s->returned < s->batch_n) {
        if (pthread_cond_timedwait(&s->gcv, &s->gmu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    s->gathering = 0;
}

/* Queue `op` (under gmu), noting a caller of the last batch back. */
static void queue_add(store *s, store_op *op)
{
    *s->qtail = op;
    /* op lives on the caller's stack frame while queued: the leader takes it off the queue
     * (queue_take) before it sets op->done, and store_write returns only after op->done */
    s->qtail = &op->next;
    if (tl_last.s == s && tl_last.batch == s->batch_id && s->batch_id != 0) {
        tl_last.s = NULL;
        if (++s->returned >= s->batch_n && s->gathering) {
            pthread_cond_signal(&s->gcv);
        }
    }
}

/* The leader: gather, take the queue, run it, wake its callers (entered and left under gmu). */
static void lead(store *s)
{
    s->leader = 1;
    gather(s);
    store_op *batch = queue_take(s);
    pthread_mutex_unlock(&s->gmu);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    batch_run(s, batch);
    long took = ns_since(&t0);
    pthread_mutex_lock(&s->gmu);
    s->commit_ns = took;
    s->batch_id++;
    s->batch_n = 0;
    s->returned = 0;
    for (store_op *o = batch, *next; o; o = next) {
        next = o->next;
        o->batch = s->batch_id;
        o->done = 1; /* the owner may return (and its stack frame go) once we unlock */
        pthread_cond_signal(&o->cv);
        s->batch_n++;
    }
    s->leader = 0;
    if (s->qhead) {
        pthread_cond_signal(&s->qhead->cv); /* hand over: the next in line leads */
    }
}

kl_rc store_write(store *s, store_tx_fn fn, void *arg)
{
    kl_rc rc = store_usable(s);
    if (rc != KL_OK) {
        return rc;
    }
    store_op op;
    memset(&op, 0, sizeof op);
    op.fn = fn;
    op.arg = arg;
    op.rc = KL_OK;
    op.msg[0] = 0;
    pthread_cond_init(&op.cv, NULL);
    pthread_mutex_lock(&s->gmu);
    queue_add(s, &op);
    while (!op.done) {
        if (s->leader) {
            /* woken when our op is done, or when we are first in line to lead */
            pthread_cond_wait(&op.cv, &s->gmu);
            continue;
        }
        lead(s);
    }
    tl_last.s = s;
    tl_last.batch = op.batch;
    pthread_mutex_unlock(&s->gmu);
    pthread_cond_destroy(&op.cv);
    if (op.rc != KL_OK) {
        return kl_fail(op.rc, "%s", op.msg);
    }
    return KL_OK;
}

kl_rc st_write_stats(store *s, uint64_t *txns, uint64_t *ops)
{
    kl_rc rc = store_usable(s);
    if (rc != KL_OK) {
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    *txns = s->n_txn;
    *ops = s->n_ops;
    pthread_mutex_unlock(&s->mu);
    return KL_OK;
}

/* ---- shared read shapes ---- */

typedef struct {
    const store_q *q;
    const int64_t *from;
    size_t size, first;
    store_row_fn decode;
    const char *what;
    unsigned char *v;
    size_t n, alloc;
} collect_arg;

static kl_rc collect_tx(store_conn *c, void *arg)
{
    collect_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, a->q, &st));
    if (a->from) {
        TRY(sc_int(st, 1, *a->from));
    }
    while ((rc = sc_step(st, &row, a->what)) == KL_OK && row) {
        if (a->n == a->alloc) {
            size_t na = a->alloc ? a->alloc * 2 : a->first;
            unsigned char *nv = realloc(a->v, na * a->size);
            ENSURE(nv, KL_EINTERNAL, "out of memory");
            a->v = nv;
            a->alloc = na;
        }
        ENSURE(a->decode(st, a->v + a->n * a->size) == 0, KL_EINTERNAL, "out of memory");
        a->n++;
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc collect_on(store *s, int reader, const store_q *q, const int64_t *from, size_t size,
                        size_t first, store_row_fn decode, const char *what, void **vp, size_t *np)
{
    collect_arg a = {q, from, size, first, decode, what, NULL, 0, 0};
    kl_rc rc = reader ? store_get(s, collect_tx, &a) : store_read(s, collect_tx, &a);
    *vp = a.v;
    *np = a.n;
    return rc;
}

kl_rc store_collect(store *s, const store_q *q, const int64_t *from, size_t size, size_t first,
                    store_row_fn decode, const char *what, void **vp, size_t *np)
{
    return collect_on(s, 0, q, from, size, first, decode, what, vp, np);
}

kl_rc store_collect_get(store *s, const store_q *q, const int64_t *from, size_t size, size_t first,
                        store_row_fn decode, const char *what, void **vp, size_t *np)
{
    return collect_on(s, 1, q, from, size, first, decode, what, vp, np);
}

typedef struct {
    const store_q *q;
    const char *key;
    store_row_fn decode;
    void *out;
    const char *what;
    int found;
} get_row_arg;

static kl_rc get_row_tx(store_conn *c, void *arg)
{
    get_row_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, a->q, &st));
    TRY(sc_text(st, 1, a->key));
    TRY(sc_step(st, &row, a->what));
    if (row) {
        ENSURE(a->decode(st, a->out) == 0, KL_EINTERNAL, "out of memory");
        a->found = 1;
    }
out:
    sc_done(st);
    return rc;
}

kl_rc store_get_row(store *s, const store_q *q, const char *key, store_row_fn decode, void *out,
                    const char *what, int *found)
{
    get_row_arg a = {q, key, decode, out, what, 0};
    kl_rc rc = store_get(s, get_row_tx, &a);
    *found = a.found;
    return rc;
}

/* ---- schema ---- */

static kl_rc schema_step_run(store_conn *c, size_t i)
{
    const store_schema_step *st = &store_schema_steps[i];
    const char *ddl = sc_dialect(c) == DB_PG ? st->pg : st->sqlite;
    kl_rc rc = KL_OK;
    if (ddl) {
        rc = c->d->drv->exec(c->d, ddl);
        if (rc != KL_OK) {
            return sc_fail(c->d, rc, st->what);
        }
    }
    if (st->fn) {
        TRY(st->fn(c));
    }
    TRY(c->d->drv->schema_set(c->d, (int64_t)i + 1));
out:
    return rc;
}

/* Bring the store to the newest version, `from` being what it read outside a transaction:
 * creation (version 0) in one transaction, then one transaction per step, each decided under
 * the write lock (after reading the version again) so that racing first opens agree. */
static kl_rc schema_advance(store *s, int64_t from)
{
    kl_rc rc = KL_OK;
    int in_tx = 0;
    int64_t ver = 0;
    db *d = s->w.d;
    for (int64_t v = from; v < (int64_t)store_schema_nsteps;) {
        rc = d->drv->begin(d, 1);
        if (rc != KL_OK) {
            rc = sc_fail(d, rc, "begin transaction");
            goto out;
        }
        in_tx = 1;
        TRY(d->drv->schema_get(d, &ver));
        v = ver;
        /* a new store: every step in this transaction */
        int64_t until = ver == 0 ? (int64_t)store_schema_nsteps : ver + 1;
        for (; v < until && v < (int64_t)store_schema_nsteps; v++) {
            TRY(schema_step_run(&s->w, (size_t)v));
        }
        in_tx = 0;
        TRY(tx_end(d, KL_OK));
    }
out:
    if (in_tx) {
        rc = tx_end(d, rc);
    }
    return rc;
}

static kl_rc store_schema_init(store *s)
{
    kl_rc rc = KL_OK;
    int64_t ver = 0;
    int in_tx = 0;
    db *d = s->w.d;
    TRY(d->drv->begin(d, 0));
    in_tx = 1;
    TRY(d->drv->schema_get(d, &ver));
    in_tx = 0;
    TRY(tx_end(d, KL_OK));
    ENSURE(ver <= (int64_t)store_schema_nsteps, KL_EINPUT,
           "store: %s has schema version %lld, newer than this keyline understands (%zu)", d->name,
           (long long)ver, store_schema_nsteps);
    if (ver < (int64_t)store_schema_nsteps) {
        TRY(schema_advance(s, ver));
    }
out:
    if (in_tx) {
        rc = tx_end(d, rc);
    }
    return rc;
}
