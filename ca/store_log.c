/* keyline: the audit chain in the store (written once for every driver: store_db.h): append,
 * list, head, verify (chain, checkpoints, rows against the log) and signed checkpoints. An
 * append reads the head and writes the entry and the new head inside the caller's write
 * transaction, which holds the store's write lock from its start: concurrent appenders, in any
 * process on any host, extend one chain one at a time. Encoding and rules:
 * docs/internals/store.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_audit.h"
#include "store_db.h"

#define AUDIT_COLS "seq, ts, actor, action, detail, prev_hash, hash"

static const store_q q_head_get = {"SELECT seq, hash FROM audit_head WHERE id = 1", NULL};
static const store_q q_head_set = {"UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1", NULL};
static const store_q q_audit_insert = {
    "INSERT INTO audit (" AUDIT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", NULL};
static const store_q q_audit_list = {
    "SELECT " AUDIT_COLS " FROM audit WHERE seq >= ?1 ORDER BY seq", NULL};
static const store_q q_akey_get = {"SELECT label, spki FROM audit_key WHERE id = 1", NULL};
static const store_q q_akey_put = {
    "INSERT INTO audit_key (id, label, spki, created) VALUES (1, ?1, ?2, ?3)", NULL};
static const store_q q_cp_last = {
    "SELECT seq, hash, ts, sig FROM audit_checkpoints ORDER BY seq DESC LIMIT 1", NULL};
static const store_q q_cp_list = {"SELECT seq, hash, ts, sig FROM audit_checkpoints ORDER BY seq",
                                  NULL};
static const store_q q_cp_put = {
    "INSERT INTO audit_checkpoints (seq, hash, ts, sig) VALUES (?1, ?2, ?3, ?4)", NULL};
static const store_q q_rows_cas = {"SELECT label, der FROM cas ORDER BY rowid",
                                   "SELECT label, der FROM cas ORDER BY id"};
static const store_q q_rows_certs = {
    "SELECT serial, der, status, revoke_reason, revoked_at FROM certs ORDER BY id", NULL};

/* ---- append ---- */

/* The recorded head; KL_EPOLICY when the row is missing. */
static kl_rc head_read(store_conn *c, int64_t *seq, char hash[65])
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_head_get, &st));
    TRY(sc_step(st, &row, "read audit head"));
    ENSURE(row, KL_EPOLICY, "audit head missing in %s (store damaged or edited)", c->d->name);
    *seq = col_int(st, 0);
    col_hash(st, 1, hash);
out:
    sc_done(st);
    return rc;
}

static kl_rc head_write(store_conn *c, int64_t seq, const char *hash)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_head_set, &st));
    TRY(sc_int(st, 1, seq));
    TRY(sc_text(st, 2, hash));
    TRY(sc_run(st, "update audit head"));
out:
    sc_done(st);
    return rc;
}

kl_rc st_audit_run_begin(store_conn *c, st_audit_run *r)
{
    r->seq = 0;
    r->hash[0] = 0;
    kl_rc rc = head_read(c, &r->seq, r->hash);
    if (rc == KL_EPOLICY) {
        rc = kl_fail(KL_EIO, "%s", kl_errmsg());
    }
    r->first = r->seq;
    return rc;
}

kl_rc st_audit_run_add(store_conn *c, st_audit_run *r, const char *actor, const char *action,
                       const char *detail)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char hash[65];
    time_t now = time(NULL);
    int64_t seq = r->seq + 1;

    TRY(store_audit_entry_hash(seq, now, actor, action, detail, r->hash, hash));
    TRY(sc_stmt(c, &q_audit_insert, &st));
    TRY(sc_int(st, 1, seq));
    TRY(sc_int(st, 2, (int64_t)now));
    TRY(sc_text(st, 3, actor));
    TRY(sc_text(st, 4, action));
    TRY(sc_text(st, 5, detail));
    TRY(sc_text(st, 6, r->hash));
    TRY(sc_text(st, 7, hash));
    rc = sc_run(st, "append audit entry");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EIO,
                     "store: audit entry %lld already exists past the recorded head: the "
                     "audit log was changed outside keyline (run audit verify)",
                     (long long)seq);
    }
    TRY(rc);
    r->seq = seq;
    memcpy(r->hash, hash, sizeof hash);
out:
    sc_done(st);
    return rc;
}

kl_rc st_audit_run_end(store_conn *c, const st_audit_run *r)
{
    return r->seq == r->first ? KL_OK : head_write(c, r->seq, r->hash);
}

kl_rc st_audit_append_tx(store_conn *c, const char *actor, const char *action, const char *detail)
{
    st_audit_run r;
    kl_rc rc = st_audit_run_begin(c, &r);
    rc = rc == KL_OK ? st_audit_run_add(c, &r, actor, action, detail) : rc;
    return rc == KL_OK ? st_audit_run_end(c, &r) : rc;
}

typedef struct {
    const char *actor, *action, *detail;
} audit_append_arg;

static kl_rc audit_append_op(store_conn *c, void *arg)
{
    const audit_append_arg *a = arg;
    return st_audit_append_tx(c, a->actor, a->action, a->detail);
}

kl_rc st_audit_append(store *s, const char *actor, const char *action, const char *detail)
{
    audit_append_arg a = {actor, action, detail};
    return store_write(s, audit_append_op, &a);
}

/* ---- reading ---- */

static int row_audit(db_stmt *st, void *out)
{
    store_audit *a = out;
    int bad = 0;
    memset(a, 0, sizeof *a);
    a->seq = col_int(st, 0);
    a->ts = col_time(st, 1);
    bad |= col_str(st, 2, &a->actor);
    bad |= col_str(st, 3, &a->action);
    bad |= col_str(st, 4, &a->detail);
    col_hash(st, 5, a->prev_hash);
    col_hash(st, 6, a->hash);
    if (bad) {
        store_audit_free(a);
    }
    return bad;
}

kl_rc st_audit_list(store *s, int64_t from, store_audit **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc = store_collect(s, &q_audit_list, &from, sizeof **out, 64, row_audit, "list audit log",
                             &v, &n);
    if (rc != KL_OK) {
        store_audit_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

typedef struct {
    int64_t seq;
    char hash[65];
} head_arg;

static kl_rc head_tx(store_conn *c, void *arg)
{
    head_arg *a = arg;
    return head_read(c, &a->seq, a->hash);
}

/* On the reader connection: a reader does not wait for a commit, so keyline-cad can look at the
 * head after every request (its checkpoint rule) without queueing behind writers. */
kl_rc st_audit_head(store *s, int64_t *seq, char hash[65])
{
    head_arg a = {0, ""};
    kl_rc rc = store_get(s, head_tx, &a);
    if (rc == KL_OK) {
        *seq = a.seq;
        memcpy(hash, a.hash, 65);
    }
    return rc;
}

typedef struct {
    char *label;
    uint8_t *spki;
    size_t len;
} akey_arg;

static kl_rc akey_tx(store_conn *c, void *arg)
{
    akey_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_akey_get, &st));
    TRY(sc_step(st, &row, "read the audit key"));
    ENSURE(row, KL_ENOTFOUND, "no audit key recorded in the store");
    if (col_str(st, 0, &a->label) != 0 || col_bytes(st, 1, &a->spki, &a->len) != 0) {
        ENSURE(0, KL_EINTERNAL, "out of memory");
    }
out:
    sc_done(st);
    return rc;
}

kl_rc st_audit_key_get(store *s, char **label, uint8_t **spki, size_t *spki_len)
{
    akey_arg a = {NULL, NULL, 0};
    kl_rc rc = store_read(s, akey_tx, &a);
    if (rc != KL_OK) {
        free(a.label);
        free(a.spki);
        return rc;
    }
    *label = a.label;
    *spki = a.spki;
    *spki_len = a.len;
    return KL_OK;
}

/* ---- rows against the log ---- */

/* One CA record (label set) or certificate row (serial set), as the audit checks read it. */
typedef struct {
    const char *label, *serial, *status;
    const uint8_t *der;
    size_t der_len;
    int reason;        /* -1: none */
    time_t revoked_at; /* 0: none */
} audit_row;
typedef kl_rc (*audit_visit)(store_conn *c, void *arg, const audit_row *w);

/* Every CA record, then every certificate row, in the caller's transaction. The statements
 * are not cached: the visitor may run others (the baseline appends). */
static kl_rc audit_rows(store_conn *c, audit_visit visit, void *arg)
{
    const store_q *qs[2] = {&q_rows_cas, &q_rows_certs};
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    for (int k = 0; k < 2; k++) {
        const char *sql = sc_dialect(c) == DB_PG && qs[k]->pg ? qs[k]->pg : qs[k]->sql;
        TRY(c->d->drv->prepare(c->d, sql, &st));
        while ((rc = sc_step(st, &row, "read the rows to check")) == KL_OK && row) {
            const char *name = col_text(st, 0, NULL);
            audit_row w = {.reason = -1};
            w.der = col_blob(st, 1, &w.der_len);
            if (k == 0) {
                w.label = name ? name : "";
            } else {
                w.serial = name ? name : "";
                w.status = col_text(st, 2, NULL);
                w.status = w.status ? w.status : "";
                w.reason = col_isnull(st, 3) ? -1 : (int)col_int(st, 3);
                w.revoked_at = col_time(st, 4);
            }
            TRY(visit(c, arg, &w));
        }
        TRY(rc);
        c->d->drv->finalize(st);
        st = NULL;
    }
out:
    if (st) {
        c->d->drv->finalize(st);
    }
    return rc;
}

static kl_rc baseline_row(store_conn *c, void *arg, const audit_row *w)
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
        rc = st_audit_append_tx(c, "keyline", w->label ? "ca-baseline" : "cert-baseline", d);
    }
    free(d);
    return rc;
}

/* Schema 5. Entries written before audit verify checked the rows carry no certificate hashes
 * (and revoke entries no time), so the rows of an older store cannot be checked against them.
 * The migration records what the rows hold now, one cert-baseline entry per certificate and
 * one ca-baseline per CA record, in the migration's transaction: rows changed before the
 * upgrade cannot be told from genuine ones, rows changed after it can. */
kl_rc st_audit_baseline(store_conn *c)
{
    return audit_rows(c, baseline_row, NULL);
}

static kl_rc state_row(store_conn *c, void *arg, const audit_row *w)
{
    (void)c;
    if (w->label) {
        return store_audit_state_ca(arg, w->label, w->der, w->der_len);
    }
    return store_audit_state_cert(arg, w->serial, w->status, w->der, w->der_len, w->revoked_at,
                                  w->reason);
}

/* ---- verify ---- */

/* The current row of q_audit_list as entry `expect`, following the entry whose hash is `prev`:
 * KL_OK with its hash recomputed from the stored bytes (with their lengths: a NUL must not hide
 * what follows it) in h; KL_EPOLICY naming what is wrong. */
static kl_rc entry_check(db_stmt *st, int64_t expect, const char *prev, char h[65])
{
    int64_t seq = col_int(st, 0);
    time_t ts = col_time(st, 1);
    const char *f[3];
    size_t fl[3];
    static const char *const fname[3] = {"actor", "action", "detail"};
    for (int i = 0; i < 3; i++) {
        f[i] = col_text(st, 2 + i, &fl[i]);
        if (f[i] && memchr(f[i], 0, fl[i])) {
            return kl_fail(KL_EPOLICY, "audit entry %lld: NUL byte in %s (entry edited)",
                           (long long)seq, fname[i]);
        }
    }
    const char *ph = col_text(st, 5, NULL);
    const char *hh = col_text(st, 6, NULL);
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
static kl_rc cps_load(store_conn *c, store_audit_cps **out)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    size_t n = 0;
    *out = NULL;
    TRY(sc_stmt(c, &q_akey_get, &st));
    TRY(sc_step(st, &row, "read the audit key"));
    if (row) {
        const uint8_t *spki = col_blob(st, 1, &n);
        /* a row with an empty key is a key that does not parse, not "no key" */
        TRY(store_audit_cps_new(out, col_text(st, 0, NULL), spki ? spki : (const uint8_t *)"",
                                spki ? n : 0));
    } else {
        TRY(store_audit_cps_new(out, NULL, NULL, 0));
    }
    sc_done(st);
    TRY(sc_stmt(c, &q_cp_list, &st));
    while ((rc = sc_step(st, &row, "read the audit checkpoints")) == KL_OK && row) {
        const uint8_t *sig = col_blob(st, 3, &n);
        TRY(store_audit_cps_add(*out, col_int(st, 0), col_text(st, 1, NULL), col_time(st, 2), sig,
                                n));
    }
out:
    sc_done(st);
    return rc;
}

typedef struct {
    store_audit_report *out;
    store_audit_state *x;
    store_audit_cps *cps;
    char prev[65];
} verify_arg;

/* Every entry in order: its hash, its link, its checkpoint, what it says about the rows. */
static kl_rc verify_entries(store_conn *c, verify_arg *a)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    int64_t expect = 1;
    char h[65];
    TRY(sc_stmt(c, &q_audit_list, &st));
    TRY(sc_int(st, 1, 1));
    while ((rc = sc_step(st, &row, "read audit log")) == KL_OK && row) {
        int64_t seq = col_int(st, 0);
        size_t dl = 0;
        TRY(entry_check(st, expect, a->prev, h));
        memcpy(a->prev, h, sizeof a->prev);
        /* a checkpoint of this entry: its signature, and the hash it signed */
        TRY(store_audit_cps_entry(a->cps, seq, h));
        const char *detail = col_text(st, 4, &dl);
        TRY(store_audit_state_entry(a->x, seq, col_text(st, 3, NULL), detail, dl));
        expect++;
        a->out->entries++;
    }
out:
    sc_done(st);
    return rc;
}

/* Walk the whole chain in one read snapshot. Reports the first bad entry or checkpoint (in
 * entry order); then, in the same snapshot, the first row that disagrees with the log. */
static kl_rc verify_tx(store_conn *c, void *arg)
{
    verify_arg *a = arg;
    store_audit_report *out = a->out;
    kl_rc rc = KL_OK;
    int64_t head_seq = 0;
    char head_hash[65];

    TRY(cps_load(c, &a->cps));
    TRY(store_audit_cps_start(a->cps));
    TRY(verify_entries(c, a));
    /* The chain cannot show that its tail was cut off: compare with the head that every
     * append records in the same transaction. */
    TRY(head_read(c, &head_seq, head_hash));
    if (head_seq > out->entries) {
        rc = kl_fail(KL_EPOLICY, "audit entry %lld missing (chain broken after %lld)",
                     (long long)out->entries + 1, (long long)out->entries);
        goto out;
    }
    ENSURE(head_seq == out->entries, KL_EPOLICY,
           "audit entry %lld: not recorded in the audit head (appended outside keyline)",
           (long long)(head_seq + 1));
    ENSURE(strcmp(head_hash, a->prev) == 0, KL_EPOLICY,
           "audit entry %lld: hash does not match the recorded audit head (entry replaced)",
           (long long)head_seq);
    out->head_seq = head_seq;
    memcpy(out->head_hash, head_hash, sizeof out->head_hash);
    /* ... nor that head and tail were cut together: a checkpoint past the end can */
    TRY(store_audit_cps_end(a->cps, out->entries, out));
    /* The chain is intact: do the rows say what it says? */
    TRY(audit_rows(c, state_row, a->x));
    TRY(store_audit_state_verdict(a->x));
out:
    return rc;
}

kl_rc st_audit_verify_tx(store_conn *c, store_audit_report *out)
{
    verify_arg a = {.out = out, .prev = STORE_ZERO_HASH};
    kl_rc rc = KL_OK;
    memset(out, 0, sizeof *out);
    TRY(store_audit_state_new(&a.x));
    TRY(verify_tx(c, &a));
out:
    store_audit_state_free(a.x);
    store_audit_cps_free(a.cps);
    return rc;
}

static kl_rc verify_report_tx(store_conn *c, void *arg)
{
    return st_audit_verify_tx(c, arg);
}

kl_rc st_audit_verify_report(store *s, store_audit_report *out)
{
    memset(out, 0, sizeof *out);
    return store_read(s, verify_report_tx, out);
}

/* ---- checkpoints (in the caller's write transaction) ---- */

/* Do the entries after entry `from` (whose hash is `from_hash`; 0: from the start) recompute
 * and link up to the head (`head`, `head_hash`)? What a new checkpoint signs must extend what
 * the last one signed. */
static kl_rc chain_extends(store_conn *c, int64_t from, const char *from_hash, int64_t head,
                           const char *head_hash)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char prev[65];
    char h[65];
    int64_t expect = from + 1;
    int row = 0;
    snprintf(prev, sizeof prev, "%s", from ? from_hash : STORE_ZERO_HASH);
    TRY(sc_stmt(c, &q_audit_list, &st));
    TRY(sc_int(st, 1, from ? from : 1));
    if (from) {
        TRY(sc_step(st, &row, "read audit log"));
        const char *hh = row ? col_text(st, 6, NULL) : NULL;
        ENSURE(row && col_int(st, 0) == from && hh && strcmp(hh, from_hash) == 0, KL_EPOLICY,
               "audit entry %lld is not the one its checkpoint signed (entries rewritten)",
               (long long)from);
    }
    while ((rc = sc_step(st, &row, "read audit log")) == KL_OK && row) {
        TRY(entry_check(st, expect, prev, h));
        memcpy(prev, h, sizeof prev);
        expect++;
    }
    TRY(rc);
    ENSURE(expect - 1 == head && strcmp(prev, head_hash) == 0, KL_EPOLICY,
           "the audit log ends at entry %lld, but the recorded head is entry %lld",
           (long long)(expect - 1), (long long)head);
out:
    sc_done(st);
    return rc;
}

typedef struct {
    const store_audit_signer *sg;
    store_audit_checkpoint *out;
    int made;
    /* read at the start of the transaction */
    char *label;
    uint8_t *spki;
    size_t spki_len;
    int has_key, has_cp;
    store_audit_checkpoint last;
    int64_t head;
    char head_hash[65];
} cp_arg;

/* The recorded key, the last checkpoint and the head into a. */
static kl_rc cp_state_read(store_conn *c, cp_arg *a)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_akey_get, &st));
    TRY(sc_step(st, &row, "read the audit key"));
    if (row) {
        a->has_key = 1;
        ENSURE(col_str(st, 0, &a->label) == 0 && col_bytes(st, 1, &a->spki, &a->spki_len) == 0,
               KL_EINTERNAL, "out of memory");
    }
    sc_done(st);
    TRY(sc_stmt(c, &q_cp_last, &st));
    TRY(sc_step(st, &row, "read the last audit checkpoint"));
    if (row) {
        a->has_cp = 1;
        a->last.seq = col_int(st, 0);
        col_hash(st, 1, a->last.hash);
        a->last.ts = col_time(st, 2);
        ENSURE(col_bytes(st, 3, &a->last.sig, &a->last.sig_len) == 0, KL_EINTERNAL,
               "out of memory");
    }
    sc_done(st);
    st = NULL;
    TRY(head_read(c, &a->head, a->head_hash));
out:
    sc_done(st);
    return rc;
}

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

/* May the head be signed? *done 1 when there is nothing to sign (empty log, or the head is
 * already the last checkpoint's: a->out gets it). KL_EPOLICY when the head does not extend
 * what was signed. */
static kl_rc cp_may_sign(store_conn *c, cp_arg *a, int *done)
{
    kl_rc rc = KL_OK;
    *done = 0;
    CP_REFUSE(a->has_cp || !a->has_key,
              "the audit key '%.64s' is recorded but there is no checkpoint: the checkpoints "
              "were deleted",
              a->label ? a->label : "");
    CP_REFUSE(a->has_key || !a->has_cp,
              "checkpoints but no recorded audit key: the key was deleted");
    if (a->head == 0 && !a->has_cp) {
        *done = 1; /* an empty log: nothing to sign (the key is made with the first checkpoint) */
        goto out;
    }
    if (a->has_cp) {
        CP_REFUSE(a->last.seq <= a->head,
                  "the last checkpoint is at entry %lld, past the head (entry %lld): entries "
                  "deleted",
                  (long long)a->last.seq, (long long)a->head);
        if (store_audit_cp_sig_check(a->spki, a->spki_len, a->last.seq, a->last.ts, a->last.hash,
                                     a->last.sig, a->last.sig_len) != KL_OK) {
            CP_REFUSE(0, "%.500s", kl_errmsg());
        }
        if (a->last.seq == a->head) {
            CP_REFUSE(strcmp(a->last.hash, a->head_hash) == 0,
                      "the head is not the entry the last checkpoint signed (entry %lld "
                      "replaced)",
                      (long long)a->head);
            if (a->out) {
                *a->out = a->last; /* already signed */
                memset(&a->last, 0, sizeof a->last);
            }
            *done = 1;
            goto out;
        }
    }
    rc = chain_extends(c, a->has_cp ? a->last.seq : 0, a->last.hash, a->head, a->head_hash);
    if (rc != KL_OK) {
        CP_REFUSE(0, "%.500s", kl_errmsg());
    }
out:
    return rc;
}
#undef CP_REFUSE

/* No key recorded yet: the signer makes (or finds) it; recorded with the first checkpoint. */
static kl_rc cp_key_new(store_conn *c, cp_arg *a, time_t now)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(a->sg->key_new(a->sg->arg, &a->label, &a->spki, &a->spki_len));
    ENSURE(a->label && a->label[0] && strlen(a->label) <= STORE_AUDIT_KEY_LABEL_MAX && a->spki &&
               a->spki_len,
           KL_EINTERNAL, "audit key: no label or public key");
    TRY(sc_stmt(c, &q_akey_put, &st));
    TRY(sc_text(st, 1, a->label));
    TRY(sc_blob(st, 2, a->spki, a->spki_len));
    TRY(sc_int(st, 3, (int64_t)now));
    TRY(sc_run(st, "record the audit key"));
out:
    sc_done(st);
    return rc;
}

/* Sign the head with the recorded key and record the checkpoint. */
static kl_rc cp_sign(store_conn *c, cp_arg *a, time_t now)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    uint8_t tbs[STORE_AUDIT_CP_TBS_LEN];
    store_audit_checkpoint_tbs(a->head, now, a->head_hash, tbs);
    TRY(a->sg->sign(a->sg->arg, a->label, tbs, sizeof tbs, &sig, &sig_len));
    ENSURE(sig && sig_len > 0 && sig_len <= STORE_AUDIT_SIG_MAX, KL_EHSM,
           "audit key '%s': a signature of %zu bytes", a->label, sig_len);
    if (store_audit_cp_sig_check(a->spki, a->spki_len, a->head, now, a->head_hash, sig, sig_len) !=
        KL_OK) {
        rc = kl_fail(KL_EPOLICY,
                     "the audit key '%s' that signed is not the one recorded in the store (its "
                     "signature does not verify with the recorded public key); no checkpoint "
                     "recorded",
                     a->label);
        goto out;
    }
    TRY(sc_stmt(c, &q_cp_put, &st));
    TRY(sc_int(st, 1, a->head));
    TRY(sc_text(st, 2, a->head_hash));
    TRY(sc_int(st, 3, (int64_t)now));
    TRY(sc_blob(st, 4, sig, sig_len));
    TRY(sc_run(st, "record the audit checkpoint"));
    a->made = 1;
    if (a->out) {
        a->out->seq = a->head;
        memcpy(a->out->hash, a->head_hash, sizeof a->out->hash);
        a->out->ts = now;
        a->out->sig = sig;
        a->out->sig_len = sig_len;
        sig = NULL;
    }
out:
    sc_done(st);
    free(sig);
    return rc;
}

static void cp_arg_clear(cp_arg *a)
{
    free(a->label);
    free(a->spki);
    store_audit_checkpoint_free(&a->last);
    a->label = NULL;
    a->spki = NULL;
    a->spki_len = 0;
    a->has_key = a->has_cp = 0;
}

static kl_rc audit_checkpoint_tx(store_conn *c, void *arg)
{
    cp_arg *a = arg;
    kl_rc rc = KL_OK;
    int done = 0;
    cp_arg_clear(a);
    TRY(cp_state_read(c, a));
    TRY(cp_may_sign(c, a, &done));
    if (done) {
        goto out;
    }
    time_t now = time(NULL);
    if (!a->has_key) {
        TRY(cp_key_new(c, a, now));
    }
    TRY(cp_sign(c, a, now));
out:
    return rc;
}

kl_rc st_audit_checkpoint(store *s, const store_audit_signer *sg, store_audit_checkpoint *out,
                          int *made)
{
    cp_arg a;
    memset(&a, 0, sizeof a);
    a.sg = sg;
    a.out = out;
    kl_rc rc = store_write(s, audit_checkpoint_tx, &a);
    *made = rc == KL_OK && a.made;
    if (rc != KL_OK && out) {
        store_audit_checkpoint_free(out); /* written by an op whose transaction failed */
    }
    cp_arg_clear(&a);
    return rc;
}
