/* keyline: the SQLite driver (the embedded default): storage and transactions only.
 *
 * A store file in WAL mode with synchronous=FULL: a returned commit is on disk. A write
 * transaction is BEGIN IMMEDIATE, retried on SQLITE_BUSY past the busy timeout, so concurrent
 * processes serialise their writes. The schema version is PRAGMA user_version, the file is marked
 * with application_id "KLST". Tables, rules and group commit live above (store_db.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_db.h"

#define SQ_APPLICATION_ID 0x4b4c5354 /* "KLST" */
#define SQ_BUSY_TIMEOUT_MS 10000
#define SQ_BUSY_RETRIES 3 /* BEGIN IMMEDIATE attempts after the busy timeout expired */

enum { C_BEGIN, C_BEGIN_READ, C_COMMIT, C_ROLLBACK, C_SP, C_RELEASE, C_ROLLBACK_TO, C_COUNT };
static const char *const sq_ctl_sql[C_COUNT] = {
    "BEGIN IMMEDIATE", "BEGIN DEFERRED",    "COMMIT", "ROLLBACK", "SAVEPOINT kl_op",
    "RELEASE kl_op",   "ROLLBACK TO kl_op",
};

typedef struct {
    db base; /* first */
    sqlite3 *h;
    sqlite3_stmt *ctl[C_COUNT];
} sq_db;

typedef struct {
    db_stmt base; /* first */
    sqlite3_stmt *s;
} sq_stmt;

static sq_db *sqd(db *d)
{
    return (sq_db *)d;
}

static sq_stmt *sqs(db_stmt *st)
{
    return (sq_stmt *)st;
}

/* Record SQLite's result `r` of `what` as the connection's failure. */
static kl_rc sq_err(sq_db *q, int r, const char *what)
{
    const char *m = q->h ? sqlite3_errmsg(q->h) : sqlite3_errstr(r);
    const char *path = q->base.name;
    q->base.err = DB_E_OTHER;
    switch (r & 0xff) {
    case SQLITE_CONSTRAINT:
        q->base.err = (r == SQLITE_CONSTRAINT_UNIQUE || r == SQLITE_CONSTRAINT_PRIMARYKEY)
                          ? DB_E_UNIQUE
                      : r == SQLITE_CONSTRAINT_FOREIGNKEY ? DB_E_FOREIGN
                                                          : DB_E_CONSTRAINT;
        return kl_fail(KL_EINPUT, "%s", m);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: q->base.err = DB_E_BUSY; return kl_fail(KL_EIO, "%s", m);
    case SQLITE_NOTADB: return kl_fail(KL_EINPUT, "store: %s is not a keyline store (%s)", path, m);
    case SQLITE_CORRUPT: return kl_fail(KL_EIO, "store %s is corrupt (%s)", path, m);
    case SQLITE_NOMEM: return kl_fail(KL_EINTERNAL, "%s: out of memory", what);
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL: {
        /* the system's reason beside SQLite's: a full disk is "disk I/O error" to SQLite when
         * its -shm cannot be made ("No space left on device", not a hardware fault) */
        int se = q->h && ((r & 0xff) == SQLITE_IOERR || (r & 0xff) == SQLITE_CANTOPEN)
                     ? sqlite3_system_errno(q->h)
                     : 0; /* set by I/O and opening only: stale for the others */
        return se ? kl_fail(KL_EIO, "%s (%s: %s)", path, m, strerror(se))
                  : kl_fail(KL_EIO, "%s (%s)", path, m);
    }
    default: return kl_fail(KL_EINTERNAL, "SQLite error %d in %s (%s)", r, what, m);
    }
}

static void sq_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static kl_rc sq_ctl(sq_db *q, int id)
{
    int r = SQLITE_OK;
    if (!q->ctl[id]) {
        r = sqlite3_prepare_v3(q->h, sq_ctl_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->ctl[id],
                               NULL);
        if (r != SQLITE_OK) {
            q->ctl[id] = NULL;
            return sq_err(q, r, sq_ctl_sql[id]);
        }
    }
    r = sqlite3_step(q->ctl[id]);
    sqlite3_reset(q->ctl[id]);
    return r == SQLITE_DONE ? KL_OK : sq_err(q, r, sq_ctl_sql[id]);
}

/* BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade a read
 * snapshot (which in WAL mode fails with SQLITE_BUSY_SNAPSHOT without waiting). The busy
 * handler waits up to SQ_BUSY_TIMEOUT_MS; some busy states (recovery) return at once, so retry
 * a few times with a short randomised pause. */
static kl_rc sq_begin(db *d, int write)
{
    sq_db *q = sqd(d);
    for (int attempt = 0;; attempt++) {
        kl_rc rc = sq_ctl(q, write ? C_BEGIN : C_BEGIN_READ);
        if (rc == KL_OK || d->err != DB_E_BUSY || attempt >= SQ_BUSY_RETRIES) {
            return rc;
        }
        sq_sleep_ms(5 + (long)(((unsigned)getpid() * 7919u + (unsigned)attempt * 104729u) % 45u));
    }
}

/* A statement left stepped (a SELECT read to its first row and not reset) keeps its read
 * snapshot past the COMMIT, and every later transaction of the connection would read that old
 * snapshot: a reader that no longer sees new revocations. The store's functions reset what
 * they step (sc_done); this makes sure of it at the end of every transaction. */
static void sq_reset_busy(sq_db *q)
{
    for (sqlite3_stmt *s = sqlite3_next_stmt(q->h, NULL); s; s = sqlite3_next_stmt(q->h, s)) {
        if (sqlite3_stmt_busy(s)) {
            sqlite3_reset(s);
        }
    }
}

static kl_rc sq_commit(db *d)
{
    sq_reset_busy(sqd(d));
    return sq_ctl(sqd(d), C_COMMIT);
}

static void sq_rollback(db *d)
{
    sq_reset_busy(sqd(d));
    if (!sqlite3_get_autocommit(sqd(d)->h)) {
        (void)sq_ctl(sqd(d), C_ROLLBACK); /* needs no lock; keep the caller's error */
    }
}

static int sq_in_tx(db *d)
{
    return !sqlite3_get_autocommit(sqd(d)->h);
}

static kl_rc sq_savepoint(db *d, int what)
{
    return sq_ctl(sqd(d), what == DB_SP_BEGIN     ? C_SP
                          : what == DB_SP_RELEASE ? C_RELEASE
                                                  : C_ROLLBACK_TO);
}

static kl_rc sq_exec(db *d, const char *sql)
{
    int r = sqlite3_exec(sqd(d)->h, sql, NULL, NULL, NULL);
    return r == SQLITE_OK ? KL_OK : sq_err(sqd(d), r, "exec");
}

static kl_rc sq_pragma_int(sq_db *q, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int r = sqlite3_prepare_v2(q->h, sql, -1, &st, NULL);
    if (r == SQLITE_OK) {
        r = sqlite3_step(st);
    }
    if (r == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return KL_OK;
    }
    kl_rc rc = sq_err(q, r, sql);
    sqlite3_finalize(st);
    return rc;
}

static kl_rc sq_schema_get(db *d, int64_t *version)
{
    sq_db *q = sqd(d);
    kl_rc rc = KL_OK;
    int64_t n = 0;
    TRY(sq_pragma_int(q, "PRAGMA user_version", version));
    if (*version == 0) {
        TRY(sq_pragma_int(q, "SELECT count(*) FROM sqlite_master", &n));
        ENSURE(n == 0, KL_EINPUT, "store: %s is an SQLite database but not a keyline store",
               d->name);
        return KL_OK;
    }
    TRY(sq_pragma_int(q, "PRAGMA application_id", &n));
    ENSURE(n == SQ_APPLICATION_ID, KL_EINPUT,
           "store: %s is an SQLite database but not a keyline store", d->name);
out:
    return rc;
}

static kl_rc sq_schema_set(db *d, int64_t version)
{
    char pragma[96];
    if (version == 1) {
        snprintf(pragma, sizeof pragma, "PRAGMA application_id=%d; PRAGMA user_version=1",
                 SQ_APPLICATION_ID);
    } else {
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%lld", (long long)version);
    }
    return sq_exec(d, pragma);
}

/* ---- statements ---- */

static kl_rc sq_prepare(db *d, const char *sql, db_stmt **out)
{
    sq_stmt *st = calloc(1, sizeof *st);
    if (!st) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    int r = sqlite3_prepare_v3(sqd(d)->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->s, NULL);
    if (r != SQLITE_OK) {
        free(st);
        return sq_err(sqd(d), r, "prepare");
    }
    st->base.drv = d->drv;
    st->base.conn = d;
    *out = &st->base;
    return KL_OK;
}

static void sq_finalize(db_stmt *st)
{
    if (st) {
        sqlite3_finalize(sqs(st)->s);
        free(st);
    }
}

static void sq_reset(db_stmt *st)
{
    sqlite3_reset(sqs(st)->s);
    sqlite3_clear_bindings(sqs(st)->s);
}

static kl_rc sq_bound(db_stmt *st, int r)
{
    return r == SQLITE_OK ? KL_OK : sq_err(sqd(st->conn), r, "bind");
}

static kl_rc sq_bind_text(db_stmt *st, int i, const char *v)
{
    sqlite3_stmt *s = sqs(st)->s;
    return sq_bound(st,
                    v ? sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i));
}

static kl_rc sq_bind_int64(db_stmt *st, int i, int64_t v)
{
    return sq_bound(st, sqlite3_bind_int64(sqs(st)->s, i, (sqlite3_int64)v));
}

static kl_rc sq_bind_blob(db_stmt *st, int i, const uint8_t *p, size_t n)
{
    sqlite3_stmt *s = sqs(st)->s;
    return sq_bound(st, (p && n) ? sqlite3_bind_blob64(s, i, p, n, SQLITE_TRANSIENT)
                                 : sqlite3_bind_null(s, i));
}

static kl_rc sq_bind_null(db_stmt *st, int i)
{
    return sq_bound(st, sqlite3_bind_null(sqs(st)->s, i));
}

static kl_rc sq_step(db_stmt *st, int *row)
{
    int r = sqlite3_step(sqs(st)->s);
    *row = r == SQLITE_ROW;
    if (r == SQLITE_ROW || r == SQLITE_DONE) {
        return KL_OK;
    }
    kl_rc rc = sq_err(sqd(st->conn), r, "step");
    sqlite3_reset(sqs(st)->s);
    return rc;
}

static int sq_col_null(db_stmt *st, int i)
{
    return sqlite3_column_type(sqs(st)->s, i) == SQLITE_NULL;
}

static int64_t sq_col_int64(db_stmt *st, int i)
{
    return (int64_t)sqlite3_column_int64(sqs(st)->s, i);
}

static const char *sq_col_text(db_stmt *st, int i, size_t *len)
{
    sqlite3_stmt *s = sqs(st)->s;
    if (sqlite3_column_type(s, i) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    const char *t = (const char *)sqlite3_column_text(s, i);
    *len = t ? (size_t)sqlite3_column_bytes(s, i) : 0;
    return t;
}

static const uint8_t *sq_col_blob(db_stmt *st, int i, size_t *len)
{
    sqlite3_stmt *s = sqs(st)->s;
    const uint8_t *p = sqlite3_column_blob(s, i);
    *len = p ? (size_t)sqlite3_column_bytes(s, i) : 0;
    return p;
}

static int64_t sq_changes(db_stmt *st)
{
    return sqlite3_changes(sqd(st->conn)->h);
}

static int sq_col_count(db_stmt *st)
{
    return sqlite3_column_count(sqs(st)->s);
}

static const char *sq_col_name(db_stmt *st, int i)
{
    return sqlite3_column_name(sqs(st)->s, i);
}

static int sq_col_kind(db_stmt *st, int i)
{
    switch (sqlite3_column_type(sqs(st)->s, i)) {
    case SQLITE_NULL: return DB_K_NULL;
    case SQLITE_INTEGER: return DB_K_INT;
    case SQLITE_TEXT: return DB_K_TEXT;
    case SQLITE_BLOB: return DB_K_BLOB;
    default: return DB_K_OTHER;
    }
}

/* ---- backup ---- */

static kl_rc sq_check_dir(const char *path);

/* The whole database into `tmp` (a new, empty file) in one step: sqlite3_backup_step(-1) holds
 * a read transaction on the source for the copy, so it is one consistent snapshot while
 * writers go on (WAL). Then the copy's pages are fsynced. */
static kl_rc sq_backup_into(sq_db *q, const char *tmp)
{
    sqlite3 *dst = NULL;
    kl_rc rc = KL_OK;
    int r = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL);
    ENSURE(r == SQLITE_OK, KL_EIO, "store backup: cannot open %s: %s", tmp,
           dst ? sqlite3_errmsg(dst) : sqlite3_errstr(r));
    sqlite3_busy_timeout(dst, SQ_BUSY_TIMEOUT_MS);
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", q->h, "main");
    ENSURE(b, KL_EIO, "store backup: %s", sqlite3_errmsg(dst));
    for (int attempt = 0;; attempt++) {
        r = sqlite3_backup_step(b, -1);
        if ((r != SQLITE_BUSY && r != SQLITE_LOCKED) || attempt >= 50) {
            break;
        }
        sq_sleep_ms(100);
    }
    int fr = sqlite3_backup_finish(b);
    int se = sqlite3_system_errno(dst);
    ENSURE(r == SQLITE_DONE && fr == SQLITE_OK, KL_EIO, "store backup of %s failed: %s%s%s",
           q->base.name, sqlite3_errstr(r != SQLITE_DONE ? r : fr), se ? ": " : "",
           se ? strerror(se) : "");
    /* the copy is in the source's journal mode (WAL): fold it into the file, one file to keep */
    r = sqlite3_exec(dst, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE", NULL, NULL,
                     NULL);
    se = sqlite3_system_errno(dst);
    ENSURE(r == SQLITE_OK, KL_EIO, "store backup: %s: %s%s%s", tmp, sqlite3_errmsg(dst),
           se ? ": " : "", se ? strerror(se) : "");
out:
    if (dst && sqlite3_close(dst) != SQLITE_OK && rc == KL_OK) {
        rc = kl_fail(KL_EIO, "store backup: cannot close %s", tmp);
    }
    return rc;
}

/* Into a temporary file beside `path`, fsynced, then linked to `path`: link() never replaces
 * an existing file, so an existing `path` is refused (KL_EEXIST) and a crash leaves no
 * half-written backup under that name. */
static kl_rc sq_backup(db *d, const char *path)
{
    kl_rc rc = KL_OK;
    char *tmp = NULL;
    int fd = -1;
    struct stat sb;
    ENSURE(lstat(path, &sb) != 0, KL_EEXIST, "store backup: %s exists; not overwritten", path);
    TRY(sq_check_dir(path));
    size_t n = strlen(path) + 16;
    ENSURE((tmp = malloc(n)) != NULL, KL_EINTERNAL, "out of memory");
    snprintf(tmp, n, "%s.tmp-XXXXXX", path);
    fd = mkstemp(tmp);
    ENSURE(fd >= 0, KL_EIO, "store backup: cannot create %s: %s", tmp, strerror(errno));
    ENSURE(fchmod(fd, 0600) == 0, KL_EIO, "store backup: %s: %s", tmp, strerror(errno));
    TRY(sq_backup_into(sqd(d), tmp));
    ENSURE(fsync(fd) == 0, KL_EIO, "store backup: fsync %s: %s", tmp, strerror(errno));
    if (link(tmp, path) != 0) {
        rc = kl_fail(errno == EEXIST ? KL_EEXIST : KL_EIO, "store backup: %s: %s%s", path,
                     strerror(errno), errno == EEXIST ? "; not overwritten" : "");
        goto out;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp) {
        /* the copy's own -wal and -shm too: a failed copy leaves nothing on that disk */
        char side[PATH_MAX];
        for (const char *const *x = (const char *const[]){"-wal", "-shm", NULL}; *x; x++) {
            if (snprintf(side, sizeof side, "%s%s", tmp, *x) < (int)sizeof side) {
                unlink(side);
            }
        }
        unlink(tmp);
        free(tmp);
    }
    return rc;
}

/* ---- open / close ---- */

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

static kl_rc sq_set_wal(sq_db *q)
{
    for (int attempt = 0;; attempt++) {
        sqlite3_stmt *st = NULL;
        int r = sqlite3_prepare_v2(q->h, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (r == SQLITE_OK) {
            r = sqlite3_step(st);
        }
        if (r == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(st, 0);
            int ok = mode && strcmp((const char *)mode, "wal") == 0;
            sqlite3_finalize(st);
            if (!ok) {
                return kl_fail(KL_EIO, "store: %s: cannot switch to WAL journal mode",
                               q->base.name);
            }
            return KL_OK;
        }
        sqlite3_finalize(st);
        if ((r & 0xff) != SQLITE_BUSY || attempt >= SQ_BUSY_RETRIES) {
            return sq_err(q, r, "set WAL journal mode");
        }
        sq_sleep_ms(20);
    }
}

/* A database's -shm file, shared by every file of the database this process has open through
 * the shim (its database and WAL files count as references): the descriptor fallocate uses.
 * It is opened when first needed and closed only when the last reference goes, after SQLite
 * closed its own: closing any descriptor of a file drops every POSIX lock the process holds
 * on it, and SQLite's wal-index locks are such locks (a descriptor opened and closed around
 * each fallocate let two processes commit on one snapshot: a CRL number given twice). */
typedef struct sq_shmref {
    struct sq_shmref *next;
    char *path; /* "<database>-shm", as the unix VFS names it */
    int fd;     /* -1 until opened */
    int refs;
} sq_shmref;

static sq_shmref *sq_shms;
static pthread_mutex_t sq_shm_lock = PTHREAD_MUTEX_INITIALIZER;

/* A reference to the -shm of the database `db` (n bytes of its name), NULL when out of memory. */
static sq_shmref *sq_shm_get(const char *db, size_t n)
{
    pthread_mutex_lock(&sq_shm_lock);
    sq_shmref *r = sq_shms;
    while (r && (strncmp(r->path, db, n) != 0 || strcmp(r->path + n, "-shm") != 0)) {
        r = r->next;
    }
    if (!r && (r = sqlite3_malloc(sizeof *r)) != NULL) {
        *r =
            (sq_shmref){.next = sq_shms, .path = sqlite3_mprintf("%.*s-shm", (int)n, db), .fd = -1};
        if (r->path) {
            sq_shms = r;
        } else {
            sqlite3_free(r);
            r = NULL;
        }
    }
    if (r) {
        r->refs++;
    }
    pthread_mutex_unlock(&sq_shm_lock);
    return r;
}

static void sq_shm_put(sq_shmref *r)
{
    if (!r) {
        return;
    }
    pthread_mutex_lock(&sq_shm_lock);
    if (--r->refs == 0) {
        sq_shmref **pp = &sq_shms;
        while (*pp != r) {
            pp = &(*pp)->next;
        }
        *pp = r->next;
        if (r->fd >= 0) {
            close(r->fd);
        }
        sqlite3_free(r->path);
        sqlite3_free(r);
    }
    pthread_mutex_unlock(&sq_shm_lock);
}

/* The first n bytes of the -shm file allocated (fallocate, its size unchanged; see "the
 * wal-index" below). SQLITE_OK with *done 1, or 0 when nothing could be done yet: the file
 * does not exist yet, or this process cannot open it for writing (a read-only connection is
 * never written through its map); *done 1 too on a file system without fallocate, left as
 * SQLite makes it. SQLITE_FULL: the disk is full. */
static int sq_shm_alloc(sq_shmref *r, off_t n, int *done)
{
    *done = 0;
    if (!r) {
        return SQLITE_OK;
    }
    pthread_mutex_lock(&sq_shm_lock);
    if (r->fd < 0) {
        r->fd = open(r->path, O_RDWR | O_CLOEXEC);
    }
    int e = -1;
    while (r->fd >= 0 &&
           (e = fallocate(r->fd, FALLOC_FL_KEEP_SIZE, 0, n) == 0 ? 0 : errno) == EINTR) {
    }
    pthread_mutex_unlock(&sq_shm_lock);
    *done = e == 0 || e == EOPNOTSUPP || e == ENOSYS; /* nothing more to do for n bytes */
    return e == ENOSPC || e == EDQUOT ? SQLITE_FULL : e > 0 && !*done ? SQLITE_IOERR : SQLITE_OK;
}

/* ---- WAL write coalescing ----
 *
 * SQLite writes each WAL frame as two pwrite() calls (its 24-byte header, then the page): a
 * commit of 19 pages is 38 system calls, ~150 us of the group commit's serial stage on a VM
 * where a system call costs ~4 us, against ~5 us for the same bytes in one call. This VFS
 * shim (on top of the default one, for the store's own connections) gathers the writes of a
 * WAL file that follow one another into a buffer and writes it out in one call at the sync,
 * and before anything else touches the file (a read, its size, a truncation, a file control,
 * closing it): a write that does not follow the buffer, or would overflow it, writes the
 * buffer out first. Durability is SQLite's own: with synchronous=FULL a commit syncs the WAL
 * before it publishes the frames in the wal-index, so no other connection can read a frame
 * that is still buffered; sq_open sets FULL on every connection that writes. A failed
 * write-out is reported by the call that made it (the sync: the commit fails). Other files
 * (the database, its -shm) are the default VFS's own objects.
 *
 * Before frames reach the WAL, the wal-index regions that will index them are allocated in the
 * -shm (sq_wal_shm_cover): SQLite writes the wal-index after the frames are synced, and a
 * failure there (a full disk) would fail a commit whose frames are already in the WAL, where a
 * recovery after a crash would find them. A full disk is then a failed WAL write: SQLite rolls
 * the transaction back and nothing of it is on disk. */

/* below 128 KiB: the unix VFS writes at most 0x1ffff bytes per call (SQLITE_FULL beyond) */
#define SQ_WALBUF_CAP (124 * 1024)

typedef struct {
    sqlite3_file base; /* first: our methods */
    sqlite3_file *real;
    unsigned char *buf;
    sqlite3_int64 off; /* file offset of buf[0] */
    int len;
    int frame;      /* bytes per frame: 24 + the page size of the WAL's header (512 until seen) */
    sq_shmref *shm; /* the database's -shm, beside "<database>-wal" */
    off_t shm_ok;   /* its bytes allocated so far */
} sq_walf;

static sqlite3_vfs sq_vfs;
static sqlite3_vfs *sq_vfs_real;
static sqlite3_io_methods sq_wal_methods;

/* The wal-index regions for the frames up to WAL offset `end` allocated: region k (32 KiB)
 * indexes frames 4062 + 4096 (k - 1) + 1 to 4062 + 4096 k (the first holds the headers), so
 * frame n is in region (n + 33) / 4096, never more than n / 4062; n is counted from the least
 * frame size when the WAL's page size is not known yet. */
static int sq_wal_shm_cover(sq_walf *w, sqlite3_int64 end)
{
    off_t need = (off_t)((end / w->frame + 1) / 4062 + 1) * 32768;
    if (!w->shm || need <= w->shm_ok) {
        return SQLITE_OK;
    }
    int done = 0;
    int r = sq_shm_alloc(w->shm, need, &done);
    if (done) {
        w->shm_ok = need;
    }
    return r;
}

/* Note the page size from a WAL header written (SQLite's wal.c: bytes 8-11, big-endian). */
static void sq_wal_header_seen(sq_walf *w, const void *p, int n, sqlite3_int64 off)
{
    if (off == 0 && n >= 12) {
        const unsigned char *h = p;
        uint32_t pg = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
        w->frame = 24 + (pg >= 512 && pg <= 65536 ? (int)pg : 512);
    }
}

static int sq_wal_flush(sq_walf *w)
{
    if (w->len == 0) {
        return SQLITE_OK;
    }
    int r = sq_wal_shm_cover(w, w->off + w->len);
    if (r != SQLITE_OK) {
        w->len = 0; /* the transaction fails: none of its frames is written */
        return r;
    }
    r = w->real->pMethods->xWrite(w->real, w->buf, w->len, w->off);
    w->len = 0;
    return r;
}

static int sq_wal_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    sq_walf *w = (sq_walf *)f;
    if (w->len > 0 && (off != w->off + w->len || n > SQ_WALBUF_CAP - w->len)) {
        int r = sq_wal_flush(w);
        if (r != SQLITE_OK) {
            return r;
        }
    }
    sq_wal_header_seen(w, p, n, off);
    if (n > SQ_WALBUF_CAP) {
        int r = sq_wal_shm_cover(w, off + n);
        return r != SQLITE_OK ? r : w->real->pMethods->xWrite(w->real, p, n, off);
    }
    if (w->len == 0) {
        w->off = off;
    }
    memcpy(w->buf + w->len, p, (size_t)n);
    w->len += n;
    return SQLITE_OK;
}

static int sq_wal_close(sqlite3_file *f)
{
    sq_walf *w = (sq_walf *)f;
    int r = sq_wal_flush(w);
    int c = w->real->pMethods ? w->real->pMethods->xClose(w->real) : SQLITE_OK;
    sqlite3_free(w->buf);
    w->buf = NULL;
    sq_shm_put(w->shm); /* after the real close: see sq_shmref */
    w->shm = NULL;
    return r != SQLITE_OK ? r : c;
}

/* Every other method writes the buffer out first, then asks the real file. */
#define SQ_WAL_FWD(call)                                                                           \
    sq_walf *w = (sq_walf *)f;                                                                     \
    int r = sq_wal_flush(w);                                                                       \
    return r != SQLITE_OK ? r : w->real->pMethods->call

static int sq_wal_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    SQ_WAL_FWD(xRead(w->real, p, n, off));
}

static int sq_wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    SQ_WAL_FWD(xTruncate(w->real, size));
}

static int sq_wal_sync(sqlite3_file *f, int flags)
{
    SQ_WAL_FWD(xSync(w->real, flags));
}

static int sq_wal_size(sqlite3_file *f, sqlite3_int64 *size)
{
    SQ_WAL_FWD(xFileSize(w->real, size));
}

static int sq_wal_lock(sqlite3_file *f, int lock)
{
    SQ_WAL_FWD(xLock(w->real, lock));
}

static int sq_wal_unlock(sqlite3_file *f, int lock)
{
    SQ_WAL_FWD(xUnlock(w->real, lock));
}

static int sq_wal_reserved(sqlite3_file *f, int *out)
{
    SQ_WAL_FWD(xCheckReservedLock(w->real, out));
}

static int sq_wal_fcntl(sqlite3_file *f, int op, void *arg)
{
    SQ_WAL_FWD(xFileControl(w->real, op, arg));
}

static int sq_wal_sector(sqlite3_file *f)
{
    sq_walf *w = (sq_walf *)f;
    return w->real->pMethods->xSectorSize(w->real);
}

static int sq_wal_devchar(sqlite3_file *f)
{
    sq_walf *w = (sq_walf *)f;
    return w->real->pMethods->xDeviceCharacteristics(w->real);
}

/* ---- the wal-index (-shm) with its blocks ----
 *
 * SQLite grows a database's -shm file by writing one byte at the end of each 4 KiB page of it,
 * then writes the rest through its memory map. On a file system whose blocks are smaller than a
 * page (ext4 with 1 KiB blocks: mke2fs's default from 3 to 512 MB) the rest of each page is a
 * hole, and when the disk is full a write into a hole through the map is a SIGBUS: the process
 * died after its commit (the WAL frames are synced before the wal-index is written), with no
 * message, its certificate recorded and never handed out. So every region SQLite maps is
 * allocated (fallocate, the file's size unchanged) before SQLite writes into it, and a full
 * disk is SQLITE_FULL, an error its caller reports. The WAL's writes allocate the regions
 * their frames need before they are written (sq_wal_shm_cover, above); this is for the rest
 * (the first region, the recovery's). The database file is the default VFS's object; only its
 * xShmMap and xClose are ours, and the -shm's name beside it in the shim's extra space. */
typedef struct {
    sq_shmref *shm;
} sq_mainx;

static sqlite3_io_methods sq_main_methods;
static const sqlite3_io_methods *sq_main_orig;
static pthread_mutex_t sq_main_lock = PTHREAD_MUTEX_INITIALIZER;

static sq_mainx *sq_main_ext(sqlite3_file *f)
{
    return (sq_mainx *)((char *)f + ((sq_vfs_real->szOsFile + 7) & ~7));
}

static int sq_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    int r = sq_main_orig->xShmMap(f, region, size, extend, pp);
    if (r != SQLITE_OK || !*pp) {
        return r;
    }
    int done = 0;
    r = sq_shm_alloc(sq_main_ext(f)->shm, (off_t)(region + 1) * size, &done);
    if (r != SQLITE_OK) {
        *pp = NULL; /* SQLite keeps a region it got even with an error: asked again next time */
    }
    return r;
}

static int sq_main_close(sqlite3_file *f)
{
    sq_shmref *r = sq_main_ext(f)->shm;
    sq_main_ext(f)->shm = NULL;
    int rc = sq_main_orig->xClose(f);
    sq_shm_put(r); /* after the real close: see sq_shmref */
    return rc;
}

/* A database file opened by the default VFS, with our xShmMap when its methods are the ones
 * this process saw first (the unix VFS has one set for every file it opens this way). */
static int sq_main_open(const char *name, sqlite3_file *f, int flags, int *out)
{
    int r = sq_vfs_real->xOpen(sq_vfs_real, name, f, flags, out);
    if (r != SQLITE_OK || !f->pMethods || !name || f->pMethods->iVersion < 2) {
        return r;
    }
    pthread_mutex_lock(&sq_main_lock);
    if (!sq_main_orig) {
        sq_main_orig = f->pMethods;
        sq_main_methods = *f->pMethods;
        sq_main_methods.xShmMap = sq_shm_map;
        sq_main_methods.xClose = sq_main_close;
    }
    int ours = f->pMethods == sq_main_orig;
    pthread_mutex_unlock(&sq_main_lock);
    if (!ours) {
        return SQLITE_OK;
    }
    sq_mainx *x = sq_main_ext(f);
    x->shm = sq_shm_get(name, strlen(name));
    if (!x->shm) {
        f->pMethods->xClose(f);
        f->pMethods = NULL;
        return SQLITE_NOMEM;
    }
    f->pMethods = &sq_main_methods;
    return SQLITE_OK;
}

static int sq_vfs_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)v;
    if (flags & SQLITE_OPEN_MAIN_DB) {
        return sq_main_open(name, f, flags, out);
    }
    if (!(flags & SQLITE_OPEN_WAL)) {
        /* the default VFS's object in our (larger) space: its own methods, never ours */
        return sq_vfs_real->xOpen(sq_vfs_real, name, f, flags, out);
    }
    sq_walf *w = (sq_walf *)f;
    memset(w, 0, sizeof *w);
    w->real = (sqlite3_file *)(w + 1);
    w->buf = sqlite3_malloc(SQ_WALBUF_CAP);
    w->frame = 24 + 512;
    size_t nl = name ? strlen(name) : 0;
    int named = nl > 4 && strcmp(name + nl - 4, "-wal") == 0;
    if (named) {
        w->shm = sq_shm_get(name, nl - 4);
    }
    if (!w->buf || (named && !w->shm)) {
        sqlite3_free(w->buf);
        sq_shm_put(w->shm);
        w->buf = NULL;
        w->shm = NULL;
        return SQLITE_NOMEM;
    }
    int r = sq_vfs_real->xOpen(sq_vfs_real, name, w->real, flags, out);
    if (r != SQLITE_OK) {
        sqlite3_free(w->buf);
        sq_shm_put(w->shm);
        w->buf = NULL;
        w->shm = NULL;
        return r; /* base.pMethods NULL: SQLite does not close it */
    }
    w->base.pMethods = &sq_wal_methods;
    return SQLITE_OK;
}

/* The shim over the default VFS, registered once (not as the default). */
static void sq_vfs_init(void)
{
    sq_vfs_real = sqlite3_vfs_find(NULL);
    if (!sq_vfs_real) {
        return;
    }
    sq_vfs = *sq_vfs_real;
    sq_vfs.iVersion = sq_vfs_real->iVersion;
    /* a WAL file: sq_walf, then the real object; a database: the real object, then sq_mainx */
    sq_vfs.szOsFile =
        (int)(sizeof(sq_walf) > sizeof(sq_mainx) ? sizeof(sq_walf) : sizeof(sq_mainx)) +
        ((sq_vfs_real->szOsFile + 7) & ~7);
    sq_vfs.zName = "keyline-walbuf";
    sq_vfs.pNext = NULL;
    sq_vfs.xOpen = sq_vfs_open;
    sq_wal_methods = (sqlite3_io_methods){
        .iVersion = 1,
        .xClose = sq_wal_close,
        .xRead = sq_wal_read,
        .xWrite = sq_wal_write,
        .xTruncate = sq_wal_truncate,
        .xSync = sq_wal_sync,
        .xFileSize = sq_wal_size,
        .xLock = sq_wal_lock,
        .xUnlock = sq_wal_unlock,
        .xCheckReservedLock = sq_wal_reserved,
        .xFileControl = sq_wal_fcntl,
        .xSectorSize = sq_wal_sector,
        .xDeviceCharacteristics = sq_wal_devchar,
    };
    if (sqlite3_vfs_register(&sq_vfs, 0) != SQLITE_OK) {
        sq_vfs_real = NULL;
    }
}

static pthread_once_t sq_vfs_once = PTHREAD_ONCE_INIT;

/* The shim's name, or NULL (the default VFS) when it could not be set up. */
static const char *sq_vfs_name(void)
{
    pthread_once(&sq_vfs_once, sq_vfs_init);
    return sq_vfs_real ? sq_vfs.zName : NULL;
}

static void sq_close(db *d);

/* The file itself: a new one readable by owner and group only (SQLite would use 0644; the -wal
 * and -shm files inherit this mode). */
static kl_rc sq_create_file(const char *path)
{
    struct stat sb;
    kl_rc rc = sq_check_dir(path);
    if (rc != KL_OK) {
        return rc;
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        return kl_fail(KL_EIO, "store: %s is a directory, not a store file", path);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        return kl_fail(KL_EIO, "store: cannot open %s: %s", path, strerror(errno));
    }
    close(fd);
    return KL_OK;
}

static kl_rc sq_open(db **out, const char *path, int reader)
{
    kl_rc rc = KL_OK;
    sq_db *q = NULL;

    *out = NULL;
    if (!reader) {
        TRY(sq_create_file(path));
    }
    q = calloc(1, sizeof *q);
    ENSURE(q, KL_EINTERNAL, "out of memory");
    q->base.drv = &store_sqlite_driver;
    q->base.name = strdup(path);
    ENSURE(q->base.name, KL_EINTERNAL, "out of memory");
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader ? 0 : SQLITE_OPEN_CREATE);
    int r = sqlite3_open_v2(path, &q->h, flags, sq_vfs_name());
    ENSURE(r == SQLITE_OK, KL_EIO, "store: cannot open %s%s: %s", path,
           reader ? " for reading" : "", q->h ? sqlite3_errmsg(q->h) : sqlite3_errstr(r));
    sqlite3_extended_result_codes(q->h, 1);
    sqlite3_busy_timeout(q->h, SQ_BUSY_TIMEOUT_MS);
    if (reader) {
        /* point reads: in WAL mode a reader does not wait for the writer's commit */
        TRY(sq_exec(&q->base, "PRAGMA query_only=1"));
    } else {
        TRY(sq_set_wal(q));
        TRY(sq_exec(&q->base, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"));
    }
    *out = &q->base;
    q = NULL;
out:
    sq_close(q ? &q->base : NULL);
    return rc;
}

static void sq_close(db *d)
{
    if (!d) {
        return;
    }
    sq_db *q = sqd(d);
    for (int i = 0; i < C_COUNT; i++) {
        sqlite3_finalize(q->ctl[i]);
    }
    sqlite3_close(q->h);
    free(q->base.name);
    free(q);
}

const db_driver store_sqlite_driver = {
    .name = "sqlite",
    .dialect = DB_SQLITE,
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .in_tx = sq_in_tx,
    .savepoint = sq_savepoint,
    .exec = sq_exec,
    .schema_get = sq_schema_get,
    .schema_set = sq_schema_set,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .bind_text = sq_bind_text,
    .bind_int64 = sq_bind_int64,
    .bind_blob = sq_bind_blob,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_null = sq_col_null,
    .col_int64 = sq_col_int64,
    .col_text = sq_col_text,
    .col_blob = sq_col_blob,
    .changes = sq_changes,
    .col_count = sq_col_count,
    .col_name = sq_col_name,
    .col_kind = sq_col_kind,
    .backup = sq_backup,
};
