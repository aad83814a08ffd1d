/* keyline: a whole store copied into an empty one (keyline-ca store migrate: SQLite to
 * PostgreSQL), and the online backup of an SQLite store (keyline-ca store backup). Written once
 * above the drivers (store_db.h): every table of the source is copied as it is, so tables that
 * other parts of keyline add later go along without a line here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"

/* The source's tables in creation order (a table is created after those it references). */
static const store_q q_tables = {
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    " ORDER BY rowid",
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
    " ORDER BY c.oid"};
/* PostgreSQL: the identity column of a table (its sequence moves past the copied ids) */
static const store_q q_identity = {
    "SELECT NULL WHERE 0",
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND table_name = ?1 AND is_identity = 'YES'"};

#define COPY_TABLES_MAX 64
#define COPY_NAME_MAX 64

/* Not copied: claims are leases of live processes, not records; keyline_meta is the
 * PostgreSQL schema version (the target has its own). */
static int copy_skip(const char *t)
{
    return strcmp(t, "claims") == 0 || strcmp(t, "keyline_meta") == 0;
}

typedef struct {
    store_conn *src;
    char tables[COPY_TABLES_MAX][COPY_NAME_MAX];
    size_t ntables;
    store_copy_report *r;
} copy_arg;

static kl_rc copy_list_tables(store_conn *c, copy_arg *a)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_tables, &st));
    while ((rc = sc_step(st, &row, "list tables")) == KL_OK && row) {
        const char *t = col_text(st, 0, NULL);
        if (!t || copy_skip(t)) {
            continue;
        }
        ENSURE(a->ntables < COPY_TABLES_MAX, KL_EINTERNAL, "store copy: more than %d tables",
               COPY_TABLES_MAX);
        /* table names come from the store's own schema: letters, digits, '_' only */
        ENSURE(strlen(t) < COPY_NAME_MAX &&
                   strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(t),
               KL_EINPUT, "store copy: unexpected table name '%.80s'", t);
        snprintf(a->tables[a->ntables++], COPY_NAME_MAX, "%s", t);
    }
out:
    sc_done(st);
    return rc;
}

/* One-off statement on a connection (table names cannot be parameters). */
static kl_rc copy_one_int(store_conn *c, const char *sql, int64_t *out)
{
    db_stmt *st = NULL;
    int row = 0;
    kl_rc rc = c->d->drv->prepare(c->d, sql, &st);
    if (rc == KL_OK) {
        rc = sc_step(st, &row, sql);
    }
    if (rc == KL_OK) {
        *out = row ? col_int(st, 0) : 0;
    }
    c->d->drv->finalize(st);
    return rc;
}

/* The target must hold nothing yet: no row in any table but the empty audit head. */
static kl_rc copy_target_empty(store_conn *t, const copy_arg *a)
{
    kl_rc rc = KL_OK;
    char sql[160];
    for (size_t i = 0; i < a->ntables; i++) {
        int64_t n = 0;
        if (strcmp(a->tables[i], "audit_head") == 0) {
            snprintf(sql, sizeof sql, "SELECT count(*) FROM audit_head WHERE seq <> 0");
        } else {
            snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", a->tables[i]);
        }
        TRY(copy_one_int(t, sql, &n));
        ENSURE(n == 0, KL_EEXIST,
               "store migrate: the target %s is not empty (table %s has %lld rows): refusing "
               "to mix stores",
               t->d->name, a->tables[i], (long long)n);
    }
out:
    return rc;
}

/* "INSERT INTO t (c1, ...) VALUES (?1, ...)" for the columns of the source's result. */
static kl_rc copy_insert_sql(const char *table, db_stmt *src, char **out)
{
    int n = src->drv->col_count(src);
    size_t cap = 64 + strlen(table) + (size_t)n * (COPY_NAME_MAX + 12);
    char *sql = malloc(cap);
    size_t o = 0;
    if (!sql) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    o += (size_t)snprintf(sql + o, cap - o, "INSERT INTO %s (", table);
    for (int i = 0; i < n; i++) {
        const char *name = src->drv->col_name(src, i);
        if (!name || strlen(name) >= COPY_NAME_MAX ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name)) {
            free(sql);
            return kl_fail(KL_EINPUT, "store copy: %s: unexpected column name", table);
        }
        o += (size_t)snprintf(sql + o, cap - o, "%s%s", i ? ", " : "", name);
    }
    o += (size_t)snprintf(sql + o, cap - o, ") VALUES (");
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(sql + o, cap - o, "%s?%d", i ? ", " : "", i + 1);
    }
    snprintf(sql + o, cap - o, ")");
    *out = sql;
    return KL_OK;
}

/* Bind the source row's values, each as what it is. */
static kl_rc copy_bind_row(db_stmt *src, db_stmt *dst, const char *table)
{
    kl_rc rc = KL_OK;
    int n = src->drv->col_count(src);
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        switch (src->drv->col_kind(src, i)) {
        case DB_K_NULL: TRY(sc_null(dst, i + 1)); break;
        case DB_K_INT: TRY(sc_int(dst, i + 1, col_int(src, i))); break;
        case DB_K_TEXT: {
            const char *t = col_text(src, i, &len);
            ENSURE(!memchr(t, 0, len), KL_EINPUT, "store copy: %s: NUL byte in a text value",
                   table);
            TRY(sc_text(dst, i + 1, t));
            break;
        }
        case DB_K_BLOB: {
            const uint8_t *p = col_blob(src, i, &len);
            TRY(sc_blob(dst, i + 1, p, len));
            break;
        }
        default: ENSURE(0, KL_EINPUT, "store copy: %s: a value of an unexpected type", table);
        }
    }
out:
    return rc;
}

/* Every row of `table`, in the source's order (SQLite: rowid, the order rows were written,
 * so a CA record comes after its parent's). */
static kl_rc copy_table(store_conn *s, store_conn *t, const char *table, int64_t *rows)
{
    db_stmt *src = NULL, *dst = NULL;
    char *ins = NULL;
    char sql[160];
    kl_rc rc = KL_OK;
    int row = 0;
    snprintf(sql, sizeof sql, "SELECT * FROM %s%s", table,
             sc_dialect(s) == DB_SQLITE ? " ORDER BY rowid" : "");
    TRY(s->d->drv->prepare(s->d, sql, &src));
    while ((rc = sc_step(src, &row, "read the source")) == KL_OK && row) {
        if (!dst) {
            TRY(copy_insert_sql(table, src, &ins));
            TRY(t->d->drv->prepare(t->d, ins, &dst));
        }
        dst->drv->reset(dst);
        TRY(copy_bind_row(src, dst, table));
        TRY(sc_run(dst, table));
        (*rows)++;
    }
out:
    if (rc != KL_OK) {
        kl_wrap(rc, "store copy: table %s", table);
    }
    if (src) {
        src->drv->finalize(src);
    }
    if (dst) {
        dst->drv->finalize(dst);
    }
    free(ins);
    return rc;
}

/* PostgreSQL: identity sequences past the copied ids, so the next row gets a new one. */
static kl_rc copy_sequences(store_conn *t, const char *table)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    char col[COPY_NAME_MAX] = "";
    char sql[320];
    int64_t dummy = 0;
    if (sc_dialect(t) != DB_PG) {
        return KL_OK;
    }
    TRY(sc_stmt(t, &q_identity, &st));
    TRY(sc_text(st, 1, table));
    TRY(sc_step(st, &row, "read identity columns"));
    if (row) {
        const char *n = col_text(st, 0, NULL);
        snprintf(col, sizeof col, "%s", n ? n : "");
    }
    sc_done(st);
    if (col[0] && strspn(col, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(col)) {
        snprintf(sql, sizeof sql,
                 "SELECT setval(pg_get_serial_sequence('%s', '%s'), max(%s)) FROM %s"
                 " HAVING max(%s) IS NOT NULL",
                 table, col, col, table, col);
        TRY(copy_one_int(t, sql, &dummy));
    }
out:
    sc_done(st);
    return rc;
}

/* Do two verify reports say the same chain? */
static kl_rc copy_reports_agree(const store_audit_report *f, const store_audit_report *t)
{
    if (f->entries != t->entries || f->head_seq != t->head_seq ||
        strcmp(f->head_hash, t->head_hash) != 0 || f->checkpoints != t->checkpoints ||
        f->cp_seq != t->cp_seq || f->has_key != t->has_key ||
        strcmp(f->key_sha256, t->key_sha256) != 0) {
        return kl_fail(KL_EPOLICY,
                       "store migrate: the copy's audit chain differs from the source's (%lld "
                       "entries, head %.16s, %lld checkpoints against %lld, %.16s, %lld)",
                       (long long)t->entries, t->head_hash, (long long)t->checkpoints,
                       (long long)f->entries, f->head_hash, (long long)f->checkpoints);
    }
    return KL_OK;
}

static kl_rc copy_tx(store_conn *t, void *arg)
{
    copy_arg *a = arg;
    kl_rc rc = KL_OK;
    TRY(copy_target_empty(t, a));
    /* the new store's audit head row (seq 0) gives way to the copied one */
    TRY(t->d->drv->exec(t->d, "DELETE FROM audit_head"));
    a->r->tables = 0;
    a->r->rows = 0;
    for (size_t i = 0; i < a->ntables; i++) {
        TRY(copy_table(a->src, t, a->tables[i], &a->r->rows));
        TRY(copy_sequences(t, a->tables[i]));
        a->r->tables++;
    }
    /* before the COMMIT: a copy that does not say what the source said is not kept */
    rc = st_audit_verify_tx(t, &a->r->to);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "store migrate: the copy's audit log does not verify");
        goto out;
    }
    TRY(copy_reports_agree(&a->r->from, &a->r->to));
out:
    return rc;
}

typedef struct {
    store *to;
    copy_arg *a;
} copy_outer;

/* In one read snapshot of the source: the table list, then the copy in one write transaction
 * of the target. */
static kl_rc copy_src_tx(store_conn *c, void *arg)
{
    copy_outer *o = arg;
    kl_rc rc = KL_OK;
    o->a->src = c;
    o->a->ntables = 0;
    /* the chain verified in the snapshot that is copied: a writer of the source (a daemon not
     * stopped) changes neither what is verified nor what is copied */
    rc = st_audit_verify_tx(c, &o->a->r->from);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "store migrate: the source's audit log does not verify");
        goto out;
    }
    TRY(copy_list_tables(c, o->a));
    TRY(store_write(o->to, copy_tx, o->a));
out:
    return rc;
}

kl_rc store_copy(store *from, store *to, store_copy_report *r)
{
    kl_rc rc = KL_OK;
    copy_arg *a = NULL;
    if (!from || !to || !r) {
        return kl_fail(KL_EUSAGE, "store_copy: missing argument");
    }
    memset(r, 0, sizeof *r);
    /* PostgreSQL's tables carry listing ids (cas, devices) that SQLite keeps as rowids */
    ENSURE(sc_dialect(&from->w) != DB_PG || sc_dialect(&to->w) != DB_SQLITE, KL_EUSAGE,
           "store migrate: a PostgreSQL store is not copied into SQLite; keep it with pg_dump "
           "(docs/deployment.md)");
    a = calloc(1, sizeof *a);
    ENSURE(a, KL_EINTERNAL, "out of memory");
    a->r = r;
    copy_outer o = {to, a};
    TRY(store_read(from, copy_src_tx, &o));
out:
    free(a);
    return rc;
}

/* ---- backup ---- */

typedef struct {
    const char *path;
} backup_arg;

static kl_rc backup_tx(store_conn *c, void *arg)
{
    const backup_arg *a = arg;
    return c->d->drv->backup(c->d, a->path);
}

kl_rc store_backup(store *s, const char *path)
{
    if (!s || !path || !path[0]) {
        return kl_fail(KL_EUSAGE, "store_backup: missing argument");
    }
    if (!s->drv->backup) {
        return kl_fail(KL_EUSAGE,
                       "store backup copies SQLite stores; back a %s store up with its own tools "
                       "(pg_dump, pg_basebackup: docs/deployment.md)",
                       s->drv->name);
    }
    backup_arg a = {path};
    return store_read(s, backup_tx, &a);
}
