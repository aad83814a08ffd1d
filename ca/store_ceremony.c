/* keyline: officers and quorum ceremonies in the store (ceremony_store.h), written once for every
 * driver (store_db.h). Each change appends its audit entry in the same transaction. */
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceremony_store.h"
#include "store_db.h"

#define OFF_COLS "name, cert, key_sha256, cert_sha256, status, added, removed"
static const store_q q_off_insert = {"INSERT INTO officers (name, cert, key_sha256, cert_sha256, "
                                     "status, added) VALUES (?1, ?2, ?3, ?4, 'active', ?5)",
                                     NULL};
static const store_q q_off_get = {"SELECT " OFF_COLS " FROM officers WHERE name = ?1", NULL};
static const store_q q_off_by_key = {
    "SELECT " OFF_COLS " FROM officers WHERE key_sha256 = ?1 AND status = 'active'", NULL};
static const store_q q_off_list = {"SELECT " OFF_COLS " FROM officers ORDER BY name", NULL};
static const store_q q_off_active = {"SELECT count(*) FROM officers WHERE status = 'active'", NULL};
static const store_q q_off_remove = {
    "UPDATE officers SET status = 'removed', removed = ?2 WHERE name = ?1 AND status = 'active'",
    NULL};

#define CER_COLS "id, op, request, status, proposed, proposer, note, transcript"
static const store_q q_cer_insert = {
    "INSERT INTO ceremonies (op, nonce, request, status, proposed, proposer) VALUES (?1, ?2, ?3, "
    "'proposed', ?4, ?5) RETURNING id",
    NULL};
static const store_q q_cer_get = {"SELECT " CER_COLS " FROM ceremonies WHERE id = ?1", NULL};
static const store_q q_cer_list = {"SELECT id, op, NULL, status, proposed, proposer, note, NULL "
                                   "FROM ceremonies WHERE id >= ?1 ORDER BY id",
                                   NULL};
static const store_q q_cer_status = {"SELECT status FROM ceremonies WHERE id = ?1", NULL};
static const store_q q_cer_note = {"UPDATE ceremonies SET note = ?2 WHERE id = ?1", NULL};
static const store_q q_cer_claim = {
    "UPDATE ceremonies SET status = 'running', note = ?2 WHERE id = ?1 AND status = 'proposed'",
    NULL};
static const store_q q_cer_done = {"UPDATE ceremonies SET status = 'done', transcript = ?2, note = "
                                   "NULL WHERE id = ?1 AND status = 'running'",
                                   NULL};
static const store_q q_cer_fail = {
    "UPDATE ceremonies SET status = 'proposed', note = ?2 WHERE id = ?1 AND status = 'running'",
    NULL};
/* a dead run's ceremony back to proposed: only the run judged dead (its note), not one that
 * took it up meanwhile */
static const store_q q_cer_interrupted = {
    "UPDATE ceremonies SET status = 'proposed', note = ?2 WHERE id = ?1 AND status = 'running' "
    "AND note = ?3",
    NULL};
static const store_q q_ap_list = {
    "SELECT officer, sig, at FROM ceremony_approvals WHERE ceremony = ?1 ORDER BY officer", NULL};
static const store_q q_ap_put = {
    "INSERT INTO ceremony_approvals (ceremony, officer, sig, at) VALUES (?1, ?2, ?3, ?4) ON "
    "CONFLICT (ceremony, officer) DO UPDATE SET sig = excluded.sig, at = excluded.at",
    NULL};

/* ---- officers ---- */

static int row_officer(db_stmt *st, void *out)
{
    ceremony_officer *o = out;
    char *status = NULL;
    const char *t;
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", (t = col_text(st, 0, NULL)) ? t : "");
    int bad = col_bytes(st, 1, &o->cert, &o->cert_len);
    snprintf(o->key_sha256, sizeof o->key_sha256, "%s", (t = col_text(st, 2, NULL)) ? t : "");
    snprintf(o->cert_sha256, sizeof o->cert_sha256, "%s", (t = col_text(st, 3, NULL)) ? t : "");
    bad |= col_str(st, 4, &status);
    snprintf(o->status, sizeof o->status, "%s", status ? status : "");
    free(status);
    o->added = col_time(st, 5);
    o->removed = col_time(st, 6);
    if (bad) {
        ceremony_officer_free(o);
    }
    return bad;
}

typedef struct {
    const ceremony_officer *o;
    const char *name, *actor, *what;
    long direct_quorum;
} off_arg;

/* A change without a ceremony (a->direct_quorum > 0) only while fewer officers are active,
 * counted inside the change's transaction: two `officer add` at once cannot both pass. */
static kl_rc off_direct_check(store_conn *c, const off_arg *a)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    if (a->direct_quorum <= 0) {
        return KL_OK;
    }
    TRY(sc_stmt(c, &q_off_active, &st));
    TRY(sc_step(st, &row, "count officers"));
    int64_t active = row ? col_int(st, 0) : 0;
    ENSURE(active < a->direct_quorum, KL_EPOLICY,
           "'officer %s' needs a ceremony: %lld officers are registered and [ceremony] quorum = "
           "%ld: keyline-ca ceremony propose officer %s ...",
           a->what, (long long)active, a->direct_quorum, a->what);
out:
    sc_done(st);
    return rc;
}

static kl_rc off_add_tx(store_conn *c, void *arg)
{
    const off_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[300];
    TRY(off_direct_check(c, a));
    TRY(sc_stmt(c, &q_off_insert, &st));
    TRY(sc_text(st, 1, a->o->name));
    TRY(sc_blob(st, 2, a->o->cert, a->o->cert_len));
    TRY(sc_text(st, 3, a->o->key_sha256));
    TRY(sc_text(st, 4, a->o->cert_sha256));
    TRY(sc_int(st, 5, (int64_t)time(NULL)));
    rc = sc_run(st, "register officer");
    ENSURE(rc != KL_EEXIST, KL_EEXIST,
           "officer name '%s' or this key is registered already (names and keys are never reused)",
           a->o->name);
    TRY(rc);
    snprintf(detail, sizeof detail, "officer=%s key-sha256=%s cert-sha256=%s", a->o->name,
             a->o->key_sha256, a->o->cert_sha256);
    TRY(st_audit_append_tx(c, a->actor, "officer-add", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_officer_add(store *s, const ceremony_officer *o, long direct_quorum,
                           const char *actor)
{
    off_arg a = {o, NULL, actor, "add", direct_quorum};
    return store_write(s, off_add_tx, &a);
}

static kl_rc off_get(store *s, const store_q *q, const char *key, ceremony_officer *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, q, key, row_officer, out, "read officer", &found));
    ENSURE(found, KL_ENOTFOUND, "no %sofficer %s", q == &q_off_by_key ? "active " : "", key);
out:
    return rc;
}

kl_rc ceremony_officer_get(store *s, const char *name, ceremony_officer *out)
{
    return off_get(s, &q_off_get, name, out);
}

kl_rc ceremony_officer_by_key(store *s, const char *key_sha256, ceremony_officer *out)
{
    return off_get(s, &q_off_by_key, key_sha256, out);
}

kl_rc ceremony_officer_list(store *s, ceremony_officer **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc =
        store_collect(s, &q_off_list, NULL, sizeof **out, 8, row_officer, "list officers", &v, &n);
    if (rc != KL_OK) {
        ceremony_officer_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

static kl_rc off_remove_tx(store_conn *c, void *arg)
{
    const off_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[100];
    TRY(off_direct_check(c, a));
    TRY(sc_stmt(c, &q_off_remove, &st));
    TRY(sc_text(st, 1, a->name));
    TRY(sc_int(st, 2, (int64_t)time(NULL)));
    TRY(sc_run(st, "remove officer"));
    ENSURE(sc_changes(st) == 1, KL_EPOLICY, "officer %s is not active", a->name);
    snprintf(detail, sizeof detail, "officer=%s", a->name);
    TRY(st_audit_append_tx(c, a->actor, "officer-remove", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_officer_remove(store *s, const char *name, long direct_quorum, const char *actor)
{
    ceremony_officer o;
    memset(&o, 0, sizeof o); /* freed below whatever ceremony_officer_get returns */
    kl_rc rc = ceremony_officer_get(s, name, &o); /* KL_ENOTFOUND for an unknown name */
    ceremony_officer_free(&o);
    if (rc != KL_OK) {
        return rc;
    }
    off_arg a = {NULL, name, actor, "remove", direct_quorum};
    return store_write(s, off_remove_tx, &a);
}

void ceremony_officer_free(ceremony_officer *o)
{
    if (o) {
        free(o->cert);
        memset(o, 0, sizeof *o);
    }
}

void ceremony_officer_list_free(ceremony_officer *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        ceremony_officer_free(&v[i]);
    }
    free(v);
}

/* ---- officers against their audit entries ---- */

static const store_q q_off_events = {
    "SELECT seq, action, detail FROM audit WHERE " AUDIT_OFFICER_EVENTS " ORDER BY seq", NULL};

typedef struct {
    ceremony_officer_history *h;
    size_t cap_off, cap_ev;
} off_hist_arg;

/* Room for element n of *v (cap *cap, `size` bytes each): 0, or -1 out of memory. */
static int hist_room(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return 0;
    }
    size_t c = *cap ? 2 * *cap : 8;
    void *p = realloc(*v, c * size);
    if (!p) {
        return -1;
    }
    *v = p;
    *cap = c;
    return 0;
}

/* Every row of q decoded by `decode` onto the array *v (n, cap), inside the caller's snapshot. */
static kl_rc hist_rows(store_conn *c, const store_q *q, const char *what, store_row_fn decode,
                       size_t size, void **v, size_t *n, size_t *cap)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, q, &st));
    for (int row = 1;;) {
        TRY(sc_step(st, &row, what));
        if (!row) {
            break;
        }
        ENSURE(hist_room(v, cap, *n, size) == 0, KL_EINTERNAL, "out of memory");
        ENSURE(decode(st, (char *)*v + *n * size) == 0, KL_EINTERNAL, "out of memory");
        (*n)++;
    }
out:
    sc_done(st);
    return rc;
}

static int row_officer_event(db_stmt *st, void *out)
{
    ceremony_officer_event *e = out;
    const char *t = col_text(st, 1, NULL);
    memset(e, 0, sizeof *e);
    e->seq = col_int(st, 0);
    e->remove = t && strcmp(t, "officer-remove") == 0;
    return col_str(st, 2, &e->detail);
}

static kl_rc off_hist_tx(store_conn *c, void *arg)
{
    off_hist_arg *a = arg;
    kl_rc rc = KL_OK;
    ceremony_officer_history_free(a->h); /* a retried run starts over */
    a->cap_off = a->cap_ev = 0;
    TRY(hist_rows(c, &q_off_list, "list officers", row_officer, sizeof *a->h->officers,
                  (void **)&a->h->officers, &a->h->nofficers, &a->cap_off));
    TRY(hist_rows(c, &q_off_events, "read the officers' audit entries", row_officer_event,
                  sizeof *a->h->events, (void **)&a->h->events, &a->h->nevents, &a->cap_ev));
out:
    return rc;
}

kl_rc ceremony_officer_history_get(store *s, ceremony_officer_history *out)
{
    off_hist_arg a = {out, 0, 0};
    memset(out, 0, sizeof *out);
    kl_rc rc = store_read(s, off_hist_tx, &a);
    if (rc != KL_OK) {
        ceremony_officer_history_free(out);
    }
    return rc;
}

void ceremony_officer_history_free(ceremony_officer_history *h)
{
    ceremony_officer_list_free(h->officers, h->nofficers);
    for (size_t i = 0; h->events && i < h->nevents; i++) {
        free(h->events[i].detail);
    }
    free(h->events);
    memset(h, 0, sizeof *h);
}

/* ---- ceremonies ---- */

static void sha256_hex(const uint8_t *p, size_t n, char out[65])
{
    uint8_t md[32];
    SHA256(p, n, md);
    for (size_t i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

typedef struct {
    const char *op, *nonce, *proposer;
    const uint8_t *req;
    size_t req_len;
    time_t proposed;
    int64_t *id;
} cer_propose_arg;

static kl_rc cer_propose_tx(store_conn *c, void *arg)
{
    const cer_propose_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    char sha[65], detail[200];
    TRY(sc_stmt(c, &q_cer_insert, &st));
    TRY(sc_text(st, 1, a->op));
    TRY(sc_text(st, 2, a->nonce));
    TRY(sc_blob(st, 3, a->req, a->req_len));
    TRY(sc_int(st, 4, (int64_t)a->proposed));
    TRY(sc_text(st, 5, a->proposer));
    TRY(sc_step(st, &row, "record ceremony"));
    ENSURE(row, KL_EINTERNAL, "store: record ceremony: no id returned");
    *a->id = col_int(st, 0);
    TRY(sc_run(st, "record ceremony"));
    sha256_hex(a->req, a->req_len, sha);
    snprintf(detail, sizeof detail, "id=%lld op=%s request-sha256=%s", (long long)*a->id, a->op,
             sha);
    TRY(st_audit_append_tx(c, a->proposer, "ceremony-propose", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_propose(store *s, const char *op, const char *nonce, const uint8_t *req,
                          size_t req_len, time_t proposed, const char *proposer, int64_t *id)
{
    cer_propose_arg a = {op, nonce, proposer, req, req_len, proposed, id};
    return store_write(s, cer_propose_tx, &a);
}

static int row_ceremony(db_stmt *st, void *out)
{
    ceremony_rec *r = out;
    char *status = NULL;
    const char *t;
    memset(r, 0, sizeof *r);
    r->id = col_int(st, 0);
    snprintf(r->op, sizeof r->op, "%s", (t = col_text(st, 1, NULL)) ? t : "");
    int bad = col_bytes(st, 2, &r->req, &r->req_len);
    bad |= col_str(st, 3, &status);
    snprintf(r->status, sizeof r->status, "%s", status ? status : "");
    free(status);
    r->proposed = col_time(st, 4);
    bad |= col_str(st, 5, &r->proposer);
    bad |= col_str(st, 6, &r->note);
    bad |= col_bytes(st, 7, &r->transcript, &r->transcript_len);
    if (bad) {
        ceremony_rec_free(r);
    }
    return bad;
}

typedef struct {
    int64_t id;
    ceremony_rec *out;
    int found;
} cer_get_arg;

static kl_rc cer_approvals_read(store_conn *c, ceremony_rec *r)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    const char *t;
    TRY(sc_stmt(c, &q_ap_list, &st));
    TRY(sc_int(st, 1, r->id));
    for (;;) {
        TRY(sc_step(st, &row, "read approvals"));
        if (!row) {
            break;
        }
        ENSURE(r->nap < CEREMONY_DB_APPROVALS_MAX, KL_EINPUT, "ceremony %lld: too many approvals",
               (long long)r->id);
        ceremony_sig *a = &r->ap[r->nap++];
        snprintf(a->officer, sizeof a->officer, "%s", (t = col_text(st, 0, NULL)) ? t : "");
        ENSURE(col_bytes(st, 1, &a->sig, &a->sig_len) == 0 && a->sig, KL_EINTERNAL,
               "out of memory");
        a->at = col_time(st, 2);
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc cer_get_tx(store_conn *c, void *arg)
{
    cer_get_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_cer_get, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_step(st, &row, "read ceremony"));
    if (!row) {
        goto out;
    }
    ENSURE(row_ceremony(st, a->out) == 0, KL_EINTERNAL, "out of memory");
    a->found = 1;
    sc_done(st);
    st = NULL;
    TRY(cer_approvals_read(c, a->out));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_get(store *s, int64_t id, ceremony_rec *out)
{
    cer_get_arg a = {id, out, 0};
    memset(out, 0, sizeof *out);
    kl_rc rc = store_read(s, cer_get_tx, &a);
    if (rc != KL_OK) {
        ceremony_rec_free(out);
        return rc;
    }
    return a.found ? KL_OK : kl_fail(KL_ENOTFOUND, "no ceremony %lld", (long long)id);
}

kl_rc ceremony_db_list(store *s, ceremony_rec **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    int64_t from = 0;
    kl_rc rc = store_collect(s, &q_cer_list, &from, sizeof **out, 16, row_ceremony,
                             "list ceremonies", &v, &n);
    if (rc != KL_OK) {
        ceremony_rec_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

/* The status of ceremony `id` inside the caller's transaction must be `want`. */
static kl_rc cer_status_is(store_conn *c, int64_t id, const char *want)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_cer_status, &st));
    TRY(sc_int(st, 1, id));
    TRY(sc_step(st, &row, "read ceremony"));
    ENSURE(row, KL_ENOTFOUND, "no ceremony %lld", (long long)id);
    const char *t = col_text(st, 0, NULL);
    ENSURE(t && strcmp(t, want) == 0, KL_EPOLICY, "ceremony %lld is %s, not %s", (long long)id,
           t ? t : "?", want);
out:
    sc_done(st);
    return rc;
}

typedef struct {
    int64_t id;
    const char *officer, *actor, *action, *detail;
    const uint8_t *data;
    size_t len;
    const char *was; /* interrupted: the note of the run judged dead */
} cer_arg;

static kl_rc cer_approve_tx(store_conn *c, void *arg)
{
    const cer_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[160];
    TRY(cer_status_is(c, a->id, CEREMONY_ST_PROPOSED));
    TRY(sc_stmt(c, &q_ap_put, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_text(st, 2, a->officer));
    TRY(sc_blob(st, 3, a->data, a->len));
    TRY(sc_int(st, 4, (int64_t)time(NULL)));
    TRY(sc_run(st, "record approval"));
    snprintf(detail, sizeof detail, "id=%lld officer=%s", (long long)a->id, a->officer);
    TRY(st_audit_append_tx(c, a->actor, "ceremony-approve", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_approve(store *s, int64_t id, const char *officer, const uint8_t *sig,
                          size_t sig_len, const char *actor)
{
    cer_arg a = {id, officer, actor, NULL, NULL, sig, sig_len, NULL};
    return store_write(s, cer_approve_tx, &a);
}

static kl_rc cer_note_tx(store_conn *c, void *arg)
{
    const cer_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cer_note, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_text(st, 2, a->detail));
    TRY(sc_run(st, "note ceremony"));
    TRY(st_audit_append_tx(c, a->actor, a->action, a->detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_note(store *s, int64_t id, const char *action, const char *detail,
                       const char *actor)
{
    cer_arg a = {id, NULL, actor, action, detail, NULL, 0, NULL};
    return store_write(s, cer_note_tx, &a);
}

static const store_q q_cer_request = {"SELECT op, request FROM ceremonies WHERE id = ?1", NULL};
/* One pass over the ceremony entries of the audit log for the three counts the claim needs,
 * through their partial index (schema step 16; the table holds an entry per certificate). */
static const store_q q_audit_claim = {
    "SELECT count(*) FILTER (WHERE action = 'ceremony-propose' AND detail LIKE ?1),"
    " count(*) FILTER (WHERE action = 'ceremony-propose' AND detail LIKE ?2),"
    " count(*) FILTER (WHERE action = 'ceremony-run' AND detail LIKE ?3)"
    " FROM audit WHERE " AUDIT_CEREMONY_EVENTS,
    NULL};

/* How many ceremony-propose entries match `own` and `same`, and ceremony-run entries `ran`
 * (LIKE patterns over the detail). */
static kl_rc cer_audit_counts(store_conn *c, const char *own, const char *same, const char *ran,
                              int64_t n[3])
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_audit_claim, &st));
    TRY(sc_text(st, 1, own));
    TRY(sc_text(st, 2, same));
    TRY(sc_text(st, 3, ran));
    TRY(sc_step(st, &row, "read the audit log"));
    for (int i = 0; i < 3; i++) {
        n[i] = row ? col_int(st, i) : 0;
    }
out:
    sc_done(st);
    return rc;
}

/* The store's rows are only as good as the audit log that backs them: the request about to run
 * (`req`, whose approvals were counted) must be the ceremony's row and the one its audited
 * ceremony-propose entry hashed, and no ceremony-run may have run it already. Else a row copied
 * with its approvals, or a done ceremony set back to proposed, would run an approved operation
 * twice. */
static kl_rc cer_claim_audited(store_conn *c, const cer_arg *a)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    int64_t n[3] = {0, 0, 0};
    uint8_t *req = NULL;
    size_t len = 0;
    char sha[65], own[200], same[120], ran[80], op[40];
    TRY(sc_stmt(c, &q_cer_request, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_step(st, &row, "read ceremony"));
    ENSURE(row, KL_ENOTFOUND, "no ceremony %lld", (long long)a->id);
    snprintf(op, sizeof op, "%s", col_text(st, 0, NULL) ? col_text(st, 0, NULL) : "");
    ENSURE(col_bytes(st, 1, &req, &len) == 0, KL_EINTERNAL, "out of memory");
    ENSURE(len == a->len && len > 0 && memcmp(req, a->data, len) == 0, KL_EPOLICY,
           "ceremony %lld: its request changed while the approvals were counted", (long long)a->id);
    sha256_hex(req, len, sha);
    snprintf(own, sizeof own, "id=%lld op=%s request-sha256=%s", (long long)a->id, op, sha);
    /* a nonce is proposed once: the same bytes proposed under another id too is a copy, with
     * an entry appended for it (the tail after the last checkpoint is anyone's to extend) */
    snprintf(same, sizeof same, "id=%% request-sha256=%s", sha);
    snprintf(ran, sizeof ran, "id=%lld transcript-sha256=%%", (long long)a->id);
    TRY(cer_audit_counts(c, own, same, ran, n));
    ENSURE(n[0] == 1, KL_EPOLICY,
           "ceremony %lld is not the request its audited proposal recorded (no ceremony-propose "
           "entry '%s'): the ceremonies table was changed outside keyline; not run",
           (long long)a->id, own);
    ENSURE(n[1] == 1, KL_EPOLICY,
           "ceremony %lld: its request was proposed %lld times in the audit log (a copy of "
           "another ceremony, with an audit entry added for it); not run",
           (long long)a->id, (long long)n[1]);
    ENSURE(
        n[2] == 0, KL_EPOLICY,
        "ceremony %lld ran already (its ceremony-run is in the audit log) but is proposed in the "
        "store: changed outside keyline; not run again",
        (long long)a->id);
out:
    free(req);
    sc_done(st);
    return rc;
}

static kl_rc cer_claim_tx(store_conn *c, void *arg)
{
    const cer_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(cer_status_is(c, a->id, CEREMONY_ST_PROPOSED));
    TRY(cer_claim_audited(c, a));
    TRY(sc_stmt(c, &q_cer_claim, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_text(st, 2, a->detail));
    TRY(sc_run(st, "claim ceremony"));
    ENSURE(sc_changes(st) == 1, KL_EPOLICY, "ceremony %lld is not proposed", (long long)a->id);
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_claim(store *s, int64_t id, const uint8_t *req, size_t req_len, const char *actor,
                        const char *runner)
{
    cer_arg a = {id, NULL, actor, NULL, runner, req, req_len, NULL};
    return store_write(s, cer_claim_tx, &a);
}

static kl_rc cer_finish_tx(store_conn *c, void *arg)
{
    const cer_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[1400], sha[65];
    TRY(sc_stmt(c, a->data ? &q_cer_done : a->was ? &q_cer_interrupted : &q_cer_fail, &st));
    TRY(sc_int(st, 1, a->id));
    if (a->was) {
        TRY(sc_text(st, 3, a->was));
    }
    if (a->data) {
        TRY(sc_blob(st, 2, a->data, a->len));
        sha256_hex(a->data, a->len, sha);
        snprintf(detail, sizeof detail, "id=%lld transcript-sha256=%s", (long long)a->id, sha);
    } else {
        TRY(sc_text(st, 2, a->detail));
        snprintf(detail, sizeof detail, "%s", a->detail ? a->detail : "");
    }
    TRY(sc_run(st, "finish ceremony"));
    ENSURE(sc_changes(st) == 1, KL_EPOLICY,
           a->was ? "ceremony %lld is not run by that run any more (another took it up)"
                  : "ceremony %lld is not running",
           (long long)a->id);
    TRY(st_audit_append_tx(c, a->actor,
                           a->data     ? "ceremony-run"
                           : a->action ? a->action
                                       : "ceremony-failed",
                           detail));
out:
    sc_done(st);
    return rc;
}

kl_rc ceremony_db_finish(store *s, int64_t id, const uint8_t *transcript, size_t len,
                         const char *detail, const char *actor)
{
    cer_arg a = {id, NULL, actor, NULL, detail, transcript, len, NULL};
    return store_write(s, cer_finish_tx, &a);
}

kl_rc ceremony_db_interrupted(store *s, int64_t id, const char *was, const char *detail,
                              const char *actor)
{
    cer_arg a = {id, NULL, actor, "ceremony-interrupted", detail, NULL, 0, was};
    return store_write(s, cer_finish_tx, &a);
}

void ceremony_rec_free(ceremony_rec *r)
{
    if (!r) {
        return;
    }
    free(r->req);
    free(r->proposer);
    free(r->note);
    free(r->transcript);
    for (size_t i = 0; i < r->nap; i++) {
        free(r->ap[i].sig);
    }
    memset(r, 0, sizeof *r);
}

void ceremony_rec_list_free(ceremony_rec *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        ceremony_rec_free(&v[i]);
    }
    free(v);
}
