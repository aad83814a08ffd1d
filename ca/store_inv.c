/* keyline: the device inventory, device claims and held enrollment requests in the store
 * (written once for every driver: store_db.h). A claim is decided inside a write transaction,
 * which holds the store's write lock from its start: of two stations claiming one device at
 * once, across processes and hosts, exactly one wins. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"

#define DEV_COLS "device_id, model, cert_serial, state, detail, updated"
#define RQ_COLS                                                                                    \
    "id, label, csr_hash, csr, issuer, template, device_id, requester, subject, status,"           \
    " cert_serial, reason, created, decided"

static const store_q q_dev_get = {"SELECT " DEV_COLS " FROM devices WHERE device_id = ?1", NULL};
static const store_q q_dev_put = {
    "INSERT INTO devices (" DEV_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT (device_id) DO UPDATE SET model = excluded.model,"
    " cert_serial = excluded.cert_serial, state = excluded.state, detail = excluded.detail,"
    " updated = excluded.updated",
    NULL};
/* what a compare-and-set compares: the certificate the row names and its status now */
static const store_q q_dev_seen = {
    "SELECT d.cert_serial, c.status FROM devices d LEFT JOIN certs c ON c.serial = d.cert_serial"
    " WHERE d.device_id = ?1",
    NULL};
/* the status of the certificate a "provisioned" row is about to name */
static const store_q q_dev_list = {"SELECT " DEV_COLS " FROM devices ORDER BY rowid",
                                   "SELECT " DEV_COLS " FROM devices ORDER BY id"};
static const store_q q_rq_find = {
    "SELECT " RQ_COLS " FROM requests WHERE label = ?1 AND csr_hash = ?2", NULL};
static const store_q q_rq_get = {"SELECT " RQ_COLS " FROM requests WHERE id = CAST(?1 AS BIGINT)",
                                 NULL};
static const store_q q_rq_insert = {
    "INSERT INTO requests (label, csr_hash, csr, issuer, template, device_id, requester,"
    " subject, status, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)"
    " RETURNING id",
    NULL};
static const store_q q_rq_list = {"SELECT " RQ_COLS " FROM requests WHERE id >= ?1 ORDER BY id",
                                  NULL};
static const store_q q_rq_reject = {
    "UPDATE requests SET status = 'rejected', reason = ?2, decided = ?3"
    " WHERE id = ?1 AND status = 'pending'",
    NULL};
static const store_q q_rq_count = {"SELECT count(*) FROM requests WHERE status = ?1", NULL};
static const store_q q_claim_get = {
    "SELECT instance, host, pid, place, expires FROM claims WHERE device_id = ?1", NULL};
static const store_q q_claim_put = {
    "INSERT INTO claims (device_id, instance, host, pid, place, expires)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device_id) DO UPDATE SET"
    " instance = excluded.instance, host = excluded.host, pid = excluded.pid,"
    " place = excluded.place, expires = excluded.expires",
    NULL};
static const store_q q_claim_del = {
    "DELETE FROM claims WHERE device_id = ?1 AND instance = ?2 AND place = ?3", NULL};

/* ---- devices ---- */

static int row_dev(db_stmt *st, void *out)
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

kl_rc st_device_get(store *s, const char *id, store_device *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, &q_dev_get, id, row_dev, out, "read device", &found));
    ENSURE(found, KL_ENOTFOUND, "no device '%s' in the inventory", id);
out:
    return rc;
}

static kl_rc device_put_tx(store_conn *c, void *arg)
{
    const store_device *d = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_dev_put, &st));
    TRY(sc_text(st, 1, d->device_id));
    TRY(sc_text(st, 2, d->model));
    TRY(sc_text(st, 3, d->cert_serial));
    TRY(sc_text(st, 4, d->state ? d->state : "pending"));
    TRY(sc_text(st, 5, d->detail));
    TRY(sc_int(st, 6, (int64_t)time(NULL)));
    TRY(sc_run(st, "record device"));
out:
    sc_done(st);
    return rc;
}

kl_rc st_device_put(store *s, const store_device *d)
{
    return store_write(s, device_put_tx, (void *)d);
}

typedef struct {
    const store_device *d;
    const store_device_seen *seen;
    const char *actor, *action, *detail;
} device_put_if_arg;

/* NULL and "" are the same: no certificate, no status */
static int seen_same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

kl_rc st_row_seen_tx(store_conn *c, const store_q *q, const char *id, const char *what,
                     const store_device_seen *seen)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, q, &st));
    TRY(sc_text(st, 1, id));
    TRY(sc_step(st, &row, what));
    const char *serial = row ? col_text(st, 0, NULL) : NULL;
    const char *status = serial && *serial ? col_text(st, 1, NULL) : NULL;
    if (seen_same(serial, seen->cert_serial) &&
        (!serial || !*serial || seen_same(status, seen->cert_status))) {
        goto out;
    }
    if (!row) {
        rc = kl_fail(KL_EEXIST, "device %s: its %s changed since it was read (gone)", id, what);
    } else if (!serial || !*serial) {
        rc = kl_fail(KL_EEXIST,
                     "device %s: its %s changed since it was read (it names no certificate now)",
                     id, what);
    } else {
        rc = kl_fail(KL_EEXIST,
                     "device %s: its %s changed since it was read (it names certificate %s, %s, "
                     "now)",
                     id, what, serial, status ? status : "not in the store");
    }
out:
    sc_done(st);
    return rc;
}

/* A row written "provisioned" names a certificate valid at the write: one revoked between the
 * caller's check and the write (its revocation marked the devices that named it then, not this
 * row) would leave a provisioned device with a revoked certificate. */
static kl_rc device_provisioned_check_tx(store_conn *c, const store_device *d)
{
    char status[16];
    if (!d->state || strcmp(d->state, "provisioned") != 0 || !d->cert_serial) {
        return KL_OK;
    }
    kl_rc rc = st_cert_status_tx(c, d->cert_serial, status, NULL, 0);
    if (rc != KL_OK && rc != KL_ENOTFOUND) {
        return rc;
    }
    if (rc == KL_ENOTFOUND || strcmp(status, STORE_ST_VALID) != 0) {
        return kl_fail(KL_EPOLICY,
                       "device %s: certificate %s is %s now, not valid: not provisioned",
                       d->device_id, d->cert_serial, rc == KL_OK ? status : "not in the store");
    }
    return KL_OK;
}

static kl_rc device_put_if_tx(store_conn *c, void *arg)
{
    const device_put_if_arg *a = arg;
    kl_rc rc = KL_OK;
    TRY(st_row_seen_tx(c, &q_dev_seen, a->d->device_id, "inventory row", a->seen));
    TRY(device_provisioned_check_tx(c, a->d));
    TRY(device_put_tx(c, (void *)a->d));
    if (a->action) {
        TRY(st_audit_append_tx(c, a->actor ? a->actor : "unknown", a->action,
                               a->detail ? a->detail : ""));
    }
out:
    return rc;
}

kl_rc store_device_put_if(store *s, const store_device *d, const store_device_seen *seen,
                          const char *actor, const char *action, const char *detail)
{
    kl_rc rc = KL_OK;
    static const store_device_seen none = {NULL, NULL};
    ENSURE(s, KL_EUSAGE, "store: no store handle");
    ENSURE(d && d->device_id && d->device_id[0], KL_EUSAGE,
           "store: device record without a device id");
    device_put_if_arg a = {d, seen ? seen : &none, actor, action, detail};
    rc = store_write(s, device_put_if_tx, &a);
out:
    return rc;
}

kl_rc st_device_list(store *s, store_device **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc =
        store_collect(s, &q_dev_list, NULL, sizeof **out, 16, row_dev, "list devices", &v, &n);
    if (rc != KL_OK) {
        store_device_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

/* ---- held enrollment requests ---- */

static int row_request(db_stmt *st, void *out)
{
    store_request *r = out;
    int bad = 0;
    memset(r, 0, sizeof *r);
    r->id = col_int(st, 0);
    bad |= col_str(st, 1, &r->label);
    bad |= col_str(st, 2, &r->csr_hash);
    bad |= col_bytes(st, 3, &r->csr, &r->csr_len);
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

/* The row of (label, csr_hash) into out; *found 0 when there is none. */
static kl_rc rq_find(store_conn *c, const store_request *r, store_request *out, int *found)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    *found = 0;
    TRY(sc_stmt(c, &q_rq_find, &st));
    TRY(sc_text(st, 1, r->label));
    TRY(sc_text(st, 2, r->csr_hash));
    TRY(sc_step(st, &row, "read request"));
    if (row) {
        ENSURE(row_request(st, out) == 0, KL_EINTERNAL, "out of memory");
        *found = 1;
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc rq_insert(store_conn *c, const store_request *r, int64_t *id)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_rq_insert, &st));
    TRY(sc_text(st, 1, r->label));
    TRY(sc_text(st, 2, r->csr_hash));
    TRY(sc_blob(st, 3, r->csr, r->csr_len));
    TRY(sc_text(st, 4, r->issuer));
    TRY(sc_text(st, 5, r->template_name));
    TRY(sc_text(st, 6, r->device_id));
    TRY(sc_text(st, 7, r->requester ? r->requester : "unknown"));
    TRY(sc_text(st, 8, r->subject));
    TRY(sc_int(st, 9, (int64_t)time(NULL)));
    TRY(sc_step(st, &row, "hold request"));
    ENSURE(row, KL_EINTERNAL, "store: hold request: no id returned");
    *id = col_int(st, 0);
    TRY(sc_run(st, "hold request"));
out:
    sc_done(st);
    return rc;
}

static kl_rc rq_submit_tx(store_conn *c, void *arg)
{
    const rq_submit_arg *a = arg;
    const store_request *r = a->r;
    kl_rc rc = KL_OK;
    int found = 0;
    int64_t id = 0;
    char detail[1200];

    TRY(rq_find(c, r, a->out, &found));
    if (found) {
        goto out;
    }
    TRY(rq_insert(c, r, &id));
    snprintf(detail, sizeof detail, "request=%lld label=%s issuer=%s template=%s subject=%.900s",
             (long long)id, r->label, r->issuer, r->template_name, r->subject);
    TRY(st_audit_append_tx(c, r->requester ? r->requester : "unknown", "request", detail));
    TRY(rq_find(c, r, a->out, &found));
    ENSURE(found, KL_EINTERNAL, "store: the request just recorded is not there");
out:
    if (rc != KL_OK) {
        store_request_free(a->out);
    }
    return rc;
}

kl_rc st_request_submit(store *s, const store_request *r, store_request *out)
{
    rq_submit_arg a = {r, out};
    return store_write(s, rq_submit_tx, &a);
}

kl_rc st_request_get(store *s, int64_t id, store_request *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)id);
    TRY(store_get_row(s, &q_rq_get, key, row_request, out, "read request", &found));
    ENSURE(found, KL_ENOTFOUND, "no request %lld", (long long)id);
out:
    return rc;
}

kl_rc st_request_list(store *s, store_request **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    int64_t from = 0;
    kl_rc rc =
        store_collect(s, &q_rq_list, &from, sizeof **out, 16, row_request, "list requests", &v, &n);
    if (rc != KL_OK) {
        store_request_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

static int row_count(db_stmt *st, void *out)
{
    *(int64_t *)out = col_int(st, 0);
    return 0;
}

kl_rc st_request_count(store *s, const char *status, int64_t *n)
{
    int found = 0;
    return store_get_row(s, &q_rq_count, status, row_count, n, "count requests", &found);
}

typedef struct {
    int64_t id;
    const char *reason, *actor;
} rq_reject_arg;

static kl_rc rq_reject_tx(store_conn *c, void *arg)
{
    const rq_reject_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[700];
    TRY(sc_stmt(c, &q_rq_reject, &st));
    TRY(sc_int(st, 1, a->id));
    TRY(sc_text(st, 2, a->reason));
    TRY(sc_int(st, 3, (int64_t)time(NULL)));
    TRY(sc_run(st, "reject request"));
    ENSURE(sc_changes(st) == 1, KL_EPOLICY, "request %lld is not pending", (long long)a->id);
    snprintf(detail, sizeof detail, "request=%lld reason=%.600s", (long long)a->id, a->reason);
    TRY(st_audit_append_tx(c, a->actor, "reject", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc st_request_reject(store *s, int64_t id, const char *reason, const char *actor)
{
    store_request tmp;
    /* an unknown id leaves tmp unfilled, and it is freed below */
    memset(&tmp, 0, sizeof tmp);
    kl_rc rc = st_request_get(s, id, &tmp); /* KL_ENOTFOUND for an unknown id */
    store_request_free(&tmp);
    if (rc != KL_OK) {
        return rc;
    }
    rq_reject_arg a = {id, reason, actor};
    return store_write(s, rq_reject_tx, &a);
}

/* ---- device claims ---- */

typedef struct {
    const char *device_id;
    const store_claim *me;
    char *holder;
    size_t holder_len;
} claim_arg;

/* The current claim on the device into *held; *found 0 when there is none. */
static kl_rc claim_read(store_conn *c, const char *device_id, store_claim_row *held, int *found)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    const char *t;
    memset(held, 0, sizeof *held);
    TRY(sc_stmt(c, &q_claim_get, &st));
    TRY(sc_text(st, 1, device_id));
    TRY(sc_step(st, found, "read device claim"));
    if (*found) {
        snprintf(held->instance, sizeof held->instance, "%s", (t = col_text(st, 0, NULL)) ? t : "");
        snprintf(held->host, sizeof held->host, "%s", (t = col_text(st, 1, NULL)) ? t : "");
        held->pid = (long)col_int(st, 2);
        snprintf(held->where, sizeof held->where, "%s", (t = col_text(st, 3, NULL)) ? t : "");
        held->expires = col_time(st, 4);
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc claim_tx(store_conn *c, void *arg)
{
    const claim_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    store_claim_row held;
    int found = 0;

    TRY(claim_read(c, a->device_id, &held, &found));
    if (found && !store_claim_takeover(&held, a->me, time(NULL))) {
        if (strcmp(held.host, a->me->host) == 0) {
            snprintf(a->holder, a->holder_len, "%s (pid %ld)", held.where, held.pid);
        } else {
            snprintf(a->holder, a->holder_len, "%s on host %s (pid %ld)", held.where, held.host,
                     held.pid);
        }
        rc = kl_fail(KL_EEXIST, "device %s is claimed by %s", a->device_id, a->holder);
        goto out;
    }
    TRY(sc_stmt(c, &q_claim_put, &st));
    TRY(sc_text(st, 1, a->device_id));
    TRY(sc_text(st, 2, a->me->instance));
    TRY(sc_text(st, 3, a->me->host));
    TRY(sc_int(st, 4, (int64_t)a->me->pid));
    TRY(sc_text(st, 5, a->me->where));
    TRY(sc_int(st, 6, (int64_t)a->me->expires));
    TRY(sc_run(st, "record device claim"));
out:
    sc_done(st);
    return rc;
}

kl_rc st_device_claim(store *s, const char *device_id, const store_claim *me, char *holder,
                      size_t holder_len)
{
    claim_arg a = {device_id, me, holder, holder_len};
    return store_write(s, claim_tx, &a);
}

static kl_rc unclaim_tx(store_conn *c, void *arg)
{
    const claim_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_claim_del, &st));
    TRY(sc_text(st, 1, a->device_id));
    TRY(sc_text(st, 2, a->me->instance));
    TRY(sc_text(st, 3, a->me->where));
    TRY(sc_run(st, "release device claim"));
out:
    sc_done(st);
    return rc;
}

kl_rc st_device_unclaim(store *s, const char *device_id, const store_claim *me)
{
    claim_arg a = {device_id, me, NULL, 0};
    return store_write(s, unclaim_tx, &a);
}
