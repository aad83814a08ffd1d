/* keyline: certificates, revocations, CRL numbers and published CRLs in the store (written once
 * for every driver: store_db.h). The rules live here: a serial is recorded once (UNIQUE), a
 * certificate approving a held request approves it in the same transaction, revocation bumps
 * the issuer's epoch and marks the device, CRL numbers are handed out by an upsert inside the
 * write transaction (monotonic per issuer whichever process asks), and a stored CRL is only
 * replaced by a higher number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_audit.h"
#include "store_db.h"

#define LIST_CHUNK 256 /* rows fetched per lock hold when iterating certificates */

#define CERT_COLS                                                                                  \
    "id, serial, issuer, subject, template, device_id, status, not_before, not_after, "            \
    "revoked_at, revoke_reason, der, created"

static const store_q q_cert_insert = {
    "INSERT INTO certs (serial, issuer, subject, template, device_id, not_before, not_after,"
    " created, status, der) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    NULL};
static const store_q q_cert_status = {"SELECT status, issuer FROM certs WHERE serial = ?1", NULL};
static const store_q q_cert_get = {"SELECT " CERT_COLS " FROM certs WHERE serial = ?1", NULL};
static const store_q q_cert_state = {
    "SELECT status, not_before, not_after FROM certs WHERE serial = ?1", NULL};
static const store_q q_cert_list = {
    "SELECT " CERT_COLS " FROM certs WHERE id > ?1"
    " AND ((CAST(?2 AS TEXT) IS NULL AND status NOT IN ('reserved', 'failed')) OR status = ?2)"
    " AND (CAST(?3 AS TEXT) IS NULL OR issuer = ?3) ORDER BY id LIMIT ?4",
    NULL};
static const store_q q_cert_pending = {"SELECT " CERT_COLS " FROM certs WHERE id > ?1"
                                       " AND status = 'pending' AND created < ?2"
                                       " ORDER BY id LIMIT ?3",
                                       NULL};
static const store_q q_cert_activate = {
    "UPDATE certs SET status = 'valid' WHERE serial = ?1 AND status = 'pending'", NULL};
/* another valid certificate of the same device from the same issuer and template */
static const store_q q_cert_rival = {
    "SELECT o.serial FROM certs p JOIN certs o ON o.device_id = p.device_id"
    " AND o.issuer = p.issuer AND o.template = p.template"
    " WHERE p.serial = ?1 AND p.device_id <> '' AND o.status = 'valid' AND o.serial <> p.serial"
    " LIMIT 1",
    NULL};
static const store_q q_cert_revoke = {
    "UPDATE certs SET status = 'revoked', revoked_at = ?2, revoke_reason = ?3"
    " WHERE serial = ?1 AND status IN ('valid', 'pending')",
    NULL};
static const store_q q_epoch_bump = {
    "INSERT INTO revocation_epochs (issuer, epoch) VALUES (?1, 1)"
    " ON CONFLICT (issuer) DO UPDATE SET epoch = revocation_epochs.epoch + 1",
    NULL};
static const store_q q_epoch_get = {"SELECT epoch FROM revocation_epochs WHERE issuer = ?1", NULL};
static const store_q q_crl_next = {"INSERT INTO crl_numbers (issuer, last) VALUES (?1, 1)"
                                   " ON CONFLICT (issuer) DO UPDATE SET"
                                   " last = crl_numbers.last + 1 RETURNING last",
                                   NULL};
/* only a higher number replaces the row (see crl_put_tx); a chunked CRL's row has an empty der */
#define CRL_UPSERT(DER)                                                                            \
    "INSERT INTO crls (issuer, number, this_update, next_update, der, created)"                    \
    " VALUES (?1, ?2, ?3, ?4, " DER ", ?5) ON CONFLICT (issuer) DO UPDATE SET"                     \
    " number = excluded.number, this_update = excluded.this_update,"                               \
    " next_update = excluded.next_update, der = excluded.der,"                                     \
    " created = excluded.created WHERE excluded.number > crls.number"
static const store_q q_crl_put = {CRL_UPSERT("?6"), NULL};
static const store_q q_crl_put_chunked = {CRL_UPSERT("X''"), CRL_UPSERT("''::bytea")};
static const store_q q_crl_get = {"SELECT issuer, number, this_update, next_update, der, created"
                                  " FROM crls WHERE issuer = ?1",
                                  NULL};
static const store_q q_chunk_del = {"DELETE FROM crl_chunks WHERE issuer = ?1", NULL};
static const store_q q_chunk_put = {
    "INSERT INTO crl_chunks (issuer, number, seq, data) VALUES (?1, ?2, ?3, ?4)", NULL};
static const store_q q_chunk_get = {
    "SELECT number, data FROM crl_chunks WHERE issuer = ?1 ORDER BY seq", NULL};
static const store_q q_rq_approve = {
    "UPDATE requests SET status = 'approved', cert_serial = ?2, decided = ?3"
    " WHERE id = ?1 AND status = 'pending'",
    NULL};
static const store_q q_dev_revoked = {
    "UPDATE devices SET state = 'revoked', detail = ?2, updated = ?3 WHERE cert_serial = ?1", NULL};

/* Row of CERT_COLS -> record; returns the row id, -1 when out of memory. */
static int64_t row_cert(db_stmt *st, store_cert *c)
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
    c->revoke_reason = col_isnull(st, 10) ? -1 : (int)col_int(st, 10);
    bad |= col_bytes(st, 11, &c->der, &c->der_len);
    c->created = col_time(st, 12);
    if (bad) {
        store_cert_free(c);
        return -1;
    }
    return col_int(st, 0);
}

static int row_cert_any(db_stmt *st, void *out)
{
    return row_cert(st, out) < 0 ? -1 : 0;
}

/* ---- recording ---- */

/* The certificate approves a held request: both or neither. */
static kl_rc cert_approve_tx(store_conn *c, const store_cert *cert, const char *actor)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[128];
    TRY(sc_stmt(c, &q_rq_approve, &st));
    TRY(sc_int(st, 1, cert->request_id));
    TRY(sc_text(st, 2, cert->serial_hex));
    TRY(sc_int(st, 3, (int64_t)time(NULL)));
    TRY(sc_run(st, "approve request"));
    ENSURE(sc_changes(st) == 1, KL_EPOLICY,
           "request %lld is not pending (decided meanwhile, or unknown)",
           (long long)cert->request_id);
    snprintf(detail, sizeof detail, "request=%lld serial=%s", (long long)cert->request_id,
             cert->serial_hex);
    TRY(st_audit_append_tx(c, actor, "approve", detail));
out:
    sc_done(st);
    return rc;
}

static kl_rc cert_row_insert(store_conn *c, const store_cert *cert, const uint8_t *der, size_t len)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cert_insert, &st));
    TRY(sc_text(st, 1, cert->serial_hex));
    TRY(sc_text(st, 2, cert->issuer));
    TRY(sc_text(st, 3, cert->subject));
    TRY(sc_text(st, 4, cert->template_name));
    TRY(sc_text(st, 5, cert->device_id));
    TRY(sc_int(st, 6, (int64_t)cert->not_before));
    TRY(sc_int(st, 7, (int64_t)cert->not_after));
    TRY(sc_int(st, 8, (int64_t)time(NULL)));
    TRY(sc_text(st, 9, cert->status));
    TRY(sc_blob(st, 10, der, len));
    rc = sc_run(st, "record certificate");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "serial %s is already in the store", cert->serial_hex);
    }
out:
    sc_done(st);
    return rc;
}

kl_rc st_cert_insert_tx(store_conn *c, const store_cert *cert, const uint8_t *der, size_t len,
                        const char *actor, const char *detail)
{
    kl_rc rc = KL_OK;
    char *dflt = NULL;
    char *full = NULL; /* detail with status and DER hash (store_audit.h) */
    if (!detail) {
        size_t dl = strlen(cert->serial_hex) + strlen(cert->subject) + 32;
        ENSURE((dflt = malloc(dl)) != NULL, KL_EINTERNAL, "out of memory");
        snprintf(dflt, dl, "serial=%s subject=%s", cert->serial_hex, cert->subject);
        detail = dflt;
    }
    if (cert->order_id) {
        TRY(st_order_take_tx(c, cert->order_id, cert->serial_hex, cert->device_id));
    }
    TRY(cert_row_insert(c, cert, der, len));
    if (cert->crl_part_size > 0) {
        TRY(st_crlpart_take_tx(c, cert));
    }
    TRY(store_audit_detail_issue(cert->serial_hex, cert->status, der, len, detail, &full));
    TRY(st_audit_append_tx(c, actor, "issue", full));
    if (cert->request_id > 0) {
        TRY(cert_approve_tx(c, cert, actor));
    }
out:
    free(full);
    free(dflt);
    return rc;
}

typedef struct {
    const store_cert *c;
    const uint8_t *der;
    size_t len;
    const char *actor;
    const char *detail;
} cert_insert_arg;

static kl_rc cert_insert_tx(store_conn *c, void *arg)
{
    const cert_insert_arg *a = arg;
    return st_cert_insert_tx(c, a->c, a->der, a->len, a->actor, a->detail);
}

kl_rc st_cert_insert(store *s, const store_cert *c, const uint8_t *der, size_t len,
                     const char *actor, const char *detail)
{
    cert_insert_arg a = {.c = c, .der = der, .len = len, .actor = actor, .detail = detail};
    return store_write(s, cert_insert_tx, &a);
}

/* ---- reading ---- */

/* Status and issuer of a serial; KL_ENOTFOUND when absent. */
kl_rc st_cert_status_tx(store_conn *c, const char *serial, char status[16], char *issuer,
                        size_t issuer_sz)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_cert_status, &st));
    TRY(sc_text(st, 1, serial));
    TRY(sc_step(st, &row, "read certificate"));
    ENSURE(row, KL_ENOTFOUND, "no certificate with serial %s", serial);
    const char *t = col_text(st, 0, NULL);
    snprintf(status, 16, "%s", t ? t : "");
    if (issuer) {
        t = col_text(st, 1, NULL);
        snprintf(issuer, issuer_sz, "%s", t ? t : "");
    }
out:
    sc_done(st);
    return rc;
}

kl_rc st_cert_get(store *s, const char *serial, store_cert *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, &q_cert_get, serial, row_cert_any, out, "read certificate", &found));
    ENSURE(found, KL_ENOTFOUND, "no certificate with serial %s", serial);
out:
    return rc;
}

static int row_cert_state(db_stmt *st, void *out)
{
    store_cert_state *o = out;
    const char *t = col_text(st, 0, NULL);
    snprintf(o->status, sizeof o->status, "%s", t ? t : "");
    o->not_before = col_time(st, 1);
    o->not_after = col_time(st, 2);
    return 0;
}

kl_rc st_cert_state(store *s, const char *serial, store_cert_state *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, &q_cert_state, serial, row_cert_state, out, "read certificate status",
                      &found));
    ENSURE(found, KL_ENOTFOUND, "no certificate with serial %s", serial);
out:
    return rc;
}

/* Iterate certificates in id order, LIST_CHUNK rows per read transaction, calling cb outside it
 * (so a callback may call back into the store, and other threads are not starved). Rows
 * committed during the iteration may or may not be seen; none is seen twice. */
typedef struct {
    const store_q *q; /* q_cert_list or q_cert_pending */
    const char *status;
    const char *issuer;
    time_t older_than;
    int64_t last;
    store_cert *rows;
    size_t n;
} cert_iter;

static kl_rc cert_chunk_tx(store_conn *c, void *arg)
{
    cert_iter *it = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, it->q, &st));
    TRY(sc_int(st, 1, it->last));
    if (it->q == &q_cert_list) {
        TRY(sc_text(st, 2, it->status));
        TRY(sc_text(st, 3, it->issuer));
        TRY(sc_int(st, 4, LIST_CHUNK));
    } else {
        TRY(sc_int(st, 2, (int64_t)it->older_than));
        TRY(sc_int(st, 3, LIST_CHUNK));
    }
    while (it->n < LIST_CHUNK && (rc = sc_step(st, &row, "list certificates")) == KL_OK && row) {
        int64_t id = row_cert(st, &it->rows[it->n]);
        ENSURE(id >= 0, KL_EINTERNAL, "out of memory");
        it->last = id;
        it->n++;
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc cert_iterate(store *s, cert_iter *it, store_cert_cb cb, void *arg)
{
    kl_rc rc = KL_OK;
    int stop = 0;
    it->rows = calloc(LIST_CHUNK, sizeof *it->rows);
    ENSURE(it->rows, KL_EINTERNAL, "out of memory");
    while (!stop) {
        TRY(store_read(s, cert_chunk_tx, it));
        size_t got = it->n;
        for (size_t i = 0; i < it->n; i++) {
            if (!stop && cb(arg, &it->rows[i]) != 0) {
                stop = 1;
            }
            store_cert_free(&it->rows[i]);
        }
        it->n = 0;
        if (got < LIST_CHUNK) {
            break;
        }
    }
out:
    for (size_t i = 0; it->rows && i < it->n; i++) {
        store_cert_free(&it->rows[i]);
    }
    free(it->rows);
    return rc;
}

kl_rc st_cert_list(store *s, const char *status, const char *issuer, store_cert_cb cb, void *arg)
{
    cert_iter it = {.q = &q_cert_list, .status = status, .issuer = issuer};
    return cert_iterate(s, &it, cb, arg);
}

kl_rc st_cert_list_pending(store *s, time_t older_than, store_cert_cb cb, void *arg)
{
    cert_iter it = {.q = &q_cert_pending, .older_than = older_than};
    return cert_iterate(s, &it, cb, arg);
}

/* ---- state changes ---- */

typedef struct {
    const char *serial;
    const char *actor;
} cert_activate_arg;

/* One valid identity per device: a pending certificate issued with a device id is not made
 * valid while another certificate of that device from the same issuer and template is (a
 * station reprovisioning a device revokes the old ones first). Read in the activation's write
 * transaction, so two stations racing one device (a claim's lease run out, a cloned hardware
 * serial) cannot both activate theirs. */
static kl_rc cert_rival_check(store_conn *c, const char *serial)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_cert_rival, &st));
    TRY(sc_text(st, 1, serial));
    TRY(sc_step(st, &row, "read the device's certificates"));
    if (row) {
        const char *other = col_text(st, 0, NULL);
        rc = kl_fail(KL_EPOLICY,
                     "certificate %s not activated: its device holds valid certificate %s of the "
                     "same issuer and template (revoke it first)",
                     serial, other ? other : "?");
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc cert_activate_tx(store_conn *c, void *arg)
{
    const cert_activate_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char cur[16];
    char detail[96];

    TRY(st_cert_status_tx(c, a->serial, cur, NULL, 0));
    ENSURE(strcmp(cur, STORE_ST_PENDING) == 0, KL_EPOLICY,
           "certificate %s is %s, not pending: cannot activate it", a->serial, cur);
    TRY(cert_rival_check(c, a->serial));
    TRY(sc_stmt(c, &q_cert_activate, &st));
    TRY(sc_text(st, 1, a->serial));
    TRY(sc_run(st, "activate certificate"));
    snprintf(detail, sizeof detail, "serial=%s", a->serial);
    TRY(st_audit_append_tx(c, a->actor, "activate", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc st_cert_activate(store *s, const char *serial, const char *actor)
{
    cert_activate_arg a = {serial, actor};
    return store_write(s, cert_activate_tx, &a);
}

typedef struct {
    const char *serial;
    int reason;
    time_t when;
    const char *actor;
} cert_revoke_arg;

/* The issuer's revocation epoch moves, and the inventory row of a device whose current
 * certificate this is says so (the station writes its own state afterwards when it revokes in
 * a flow). */
static kl_rc revoke_side_tx(store_conn *c, const cert_revoke_arg *a, const char *issuer)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[512];
    TRY(sc_stmt(c, &q_epoch_bump, &st));
    TRY(sc_text(st, 1, issuer));
    TRY(sc_run(st, "bump revocation epoch"));
    TRY(sc_stmt(c, &q_dev_revoked, &st));
    TRY(sc_text(st, 1, a->serial));
    snprintf(detail, sizeof detail, "certificate %s revoked (reason %d)", a->serial, a->reason);
    TRY(sc_text(st, 2, detail));
    TRY(sc_int(st, 3, (int64_t)time(NULL)));
    TRY(sc_run(st, "update the inventory"));
out:
    sc_done(st);
    return rc;
}

static kl_rc cert_revoke_tx(store_conn *c, void *arg)
{
    const cert_revoke_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char cur[16];
    char issuer[256];
    char *full = NULL; /* the revoke entry's detail (store_audit.h) */

    TRY(st_cert_status_tx(c, a->serial, cur, issuer, sizeof issuer));
    ENSURE(strcmp(cur, STORE_ST_REVOKED) != 0, KL_EEXIST, "certificate %s is already revoked",
           a->serial);
    /* A reservation or an abandoned serial never became a certificate: nothing to revoke. */
    ENSURE(strcmp(cur, STORE_ST_VALID) == 0 || strcmp(cur, STORE_ST_PENDING) == 0, KL_ENOTFOUND,
           "no certificate with serial %s (only a %s reservation)", a->serial, cur);
    TRY(sc_stmt(c, &q_cert_revoke, &st));
    TRY(sc_text(st, 1, a->serial));
    TRY(sc_int(st, 2, (int64_t)a->when));
    TRY(a->reason >= 0 ? sc_int(st, 3, a->reason) : sc_null(st, 3));
    TRY(sc_run(st, "revoke certificate"));
    TRY(revoke_side_tx(c, a, issuer));
    TRY(store_audit_detail_revoke(a->serial, issuer, a->reason, a->when, &full));
    TRY(st_audit_append_tx(c, a->actor, "revoke", full));
out:
    free(full);
    sc_done(st);
    return rc;
}

kl_rc st_cert_revoke(store *s, const char *serial, int reason, time_t when, const char *actor)
{
    cert_revoke_arg a = {serial, reason, when ? when : time(NULL), actor};
    return store_write(s, cert_revoke_tx, &a);
}

/* ---- CRL numbers and revocation epochs ---- */

typedef struct {
    const char *issuer;
    int64_t out;
} crl_next_arg;

static kl_rc crl_number_next_tx(store_conn *c, void *arg)
{
    crl_next_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_crl_next, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_step(st, &row, "next CRL number"));
    ENSURE(row, KL_EINTERNAL, "store: next CRL number: no row returned");
    a->out = col_int(st, 0);
    TRY(sc_run(st, "next CRL number"));
out:
    sc_done(st);
    return rc;
}

kl_rc st_crl_number_next(store *s, const char *issuer, int64_t *out)
{
    crl_next_arg a = {issuer, 0};
    kl_rc rc = store_write(s, crl_number_next_tx, &a);
    if (rc == KL_OK) {
        *out = a.out; /* only once committed */
    }
    return rc;
}

typedef struct {
    const char *issuer;
    int64_t out;
} epoch_arg;

static kl_rc epoch_tx(store_conn *c, void *arg)
{
    epoch_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_epoch_get, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_step(st, &row, "read revocation epoch"));
    a->out = row ? col_int(st, 0) : 0;
out:
    sc_done(st);
    return rc;
}

kl_rc st_revocation_epoch_tx(store_conn *c, const char *issuer, int64_t *out)
{
    epoch_arg a = {issuer, 0};
    kl_rc rc = epoch_tx(c, &a);
    *out = a.out;
    return rc;
}

kl_rc st_revocation_epoch(store *s, const char *issuer, int64_t *out)
{
    epoch_arg a = {issuer, 0};
    kl_rc rc = store_read(s, epoch_tx, &a);
    *out = a.out;
    return rc;
}

/* ---- published CRLs ---- */

typedef struct {
    const char *issuer;
    int64_t number;
    time_t this_update, next_update;
    const uint8_t *der;
    size_t len;
    const char *actor, *detail;
} crl_put_arg;

/* CRLs above this many bytes go to crl_chunks (store_crl_chunk_set: tests set it small) */
static size_t g_crl_chunk = STORE_CRL_CHUNK;

void store_crl_chunk_set(size_t bytes)
{
    g_crl_chunk = bytes ? bytes : STORE_CRL_CHUNK;
}

/* The chunks of a CRL just recorded under `name`, in order. */
static kl_rc crl_chunks_put_tx(store_conn *c, const char *name, const store_crl *crl)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    for (size_t off = 0, seq = 0; off < crl->der_len; off += g_crl_chunk, seq++) {
        size_t n = crl->der_len - off < g_crl_chunk ? crl->der_len - off : g_crl_chunk;
        TRY(sc_stmt(c, &q_chunk_put, &st));
        TRY(sc_text(st, 1, name));
        TRY(sc_int(st, 2, crl->number));
        TRY(sc_int(st, 3, (int64_t)seq));
        TRY(sc_blob(st, 4, crl->der + off, n));
        TRY(sc_run(st, "record a CRL chunk"));
    }
out:
    sc_done(st);
    return rc;
}

kl_rc st_crl_row_tx(store_conn *c, const char *name, const store_crl *crl)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int chunked = crl->der_len > g_crl_chunk;

    /* The upsert replaces the row only for a higher number, decided inside the write
     * transaction: of two CRLs signed concurrently, the older one committed last does not
     * overwrite the newer one (nor its chunks). */
    TRY(sc_stmt(c, chunked ? &q_crl_put_chunked : &q_crl_put, &st));
    TRY(sc_text(st, 1, name));
    TRY(sc_int(st, 2, crl->number));
    TRY(sc_int(st, 3, (int64_t)crl->this_update));
    TRY(sc_int(st, 4, (int64_t)crl->next_update));
    TRY(sc_int(st, 5, (int64_t)time(NULL)));
    if (!chunked) {
        TRY(sc_blob(st, 6, crl->der, crl->der_len));
    }
    TRY(sc_run(st, "record CRL"));
    if (sc_changes(st) == 1) {
        TRY(sc_stmt(c, &q_chunk_del, &st));
        TRY(sc_text(st, 1, name));
        TRY(sc_run(st, "drop the chunks of the previous CRL"));
        if (chunked) {
            TRY(crl_chunks_put_tx(c, name, crl));
        }
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc crl_put_tx(store_conn *c, void *arg)
{
    const crl_put_arg *a = arg;
    kl_rc rc = KL_OK;
    store_crl crl = {.number = a->number,
                     .this_update = a->this_update,
                     .next_update = a->next_update,
                     .der = (uint8_t *)a->der,
                     .der_len = a->len};
    TRY(st_crl_row_tx(c, a->issuer, &crl));
    /* kept or replaced, this CRL was signed: audit it either way */
    TRY(st_audit_append_tx(c, a->actor, "crl", a->detail));
out:
    return rc;
}

kl_rc st_crl_put(store *s, const char *issuer, int64_t number, time_t this_update,
                 time_t next_update, const uint8_t *der, size_t len, const char *actor,
                 const char *detail)
{
    crl_put_arg a = {issuer, number, this_update, next_update, der, len, actor, detail};
    return store_write(s, crl_put_tx, &a);
}

static int row_crl(db_stmt *st, void *out)
{
    store_crl *c = out;
    int bad = 0;
    memset(c, 0, sizeof *c);
    bad |= col_str(st, 0, &c->issuer);
    c->number = col_int(st, 1);
    c->this_update = col_time(st, 2);
    c->next_update = col_time(st, 3);
    bad |= col_bytes(st, 4, &c->der, &c->der_len);
    c->created = col_time(st, 5);
    if (bad) {
        store_crl_free(c);
    }
    return bad;
}

/* A chunked CRL (empty der in its row): the row and its chunks read in one snapshot. */
static kl_rc crl_chunks_get_tx(store_conn *c, void *arg)
{
    store_crl *out = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    const char *issuer = out->issuer;
    store_crl got = {0};
    TRY(sc_stmt(c, &q_crl_get, &st));
    TRY(sc_text(st, 1, issuer));
    TRY(sc_step(st, &row, "read CRL"));
    ENSURE(row, KL_ENOTFOUND, "no CRL published for '%s'", issuer);
    ENSURE(row_crl(st, &got) == 0, KL_EINTERNAL, "out of memory reading a CRL");
    sc_done(st); /* one statement at a time on the connection */
    TRY(sc_stmt(c, &q_chunk_get, &st));
    TRY(sc_text(st, 1, issuer));
    /* replaced by a small CRL since the first read: its row holds it */
    for (row = !got.der_len; row;) {
        size_t n = 0;
        TRY(sc_step(st, &row, "read a CRL chunk"));
        if (!row) {
            break;
        }
        const uint8_t *p = col_blob(st, 1, &n);
        ENSURE(col_int(st, 0) == got.number && n && got.der_len + n <= STORE_CRL_MAX, KL_EINTERNAL,
               "CRL of '%s': a chunk does not belong to CRL %lld", issuer, (long long)got.number);
        uint8_t *grown = realloc(got.der, got.der_len + n);
        ENSURE(grown, KL_EINTERNAL, "out of memory reading a CRL of %zu bytes", got.der_len + n);
        memcpy(grown + got.der_len, p, n);
        got.der = grown;
        got.der_len += n;
    }
    ENSURE(got.der_len, KL_EINTERNAL, "CRL %lld of '%s' has no data", (long long)got.number,
           issuer);
    store_crl_free(out);
    *out = got;
    memset(&got, 0, sizeof got);
out:
    sc_done(st);
    store_crl_free(&got);
    return rc;
}

kl_rc st_crl_get(store *s, const char *issuer, store_crl *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, &q_crl_get, issuer, row_crl, out, "read CRL", &found));
    ENSURE(found, KL_ENOTFOUND, "no CRL published for '%s'", issuer);
    if (!out->der_len) {
        rc = store_read(s, crl_chunks_get_tx, out);
        if (rc != KL_OK) {
            store_crl_free(out);
        }
    }
out:
    return rc;
}
