/* keyline: production orders in the store (store_order.h). */
#include "store_order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_utf8.h"
#include "store_db.h"

#define OR_COLS                                                                                    \
    "id, model, station, profile, count, issued, expires, created, created_by, state, closed,"     \
    " closed_by, sig"

static const store_q q_or_insert = {
    "INSERT INTO orders (id, model, station, profile, count, issued, expires, created,"
    " created_by, state, sig) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, 'open', ?9)",
    NULL};
static const store_q q_or_get = {"SELECT " OR_COLS " FROM orders WHERE id = ?1", NULL};
static const store_q q_or_list = {"SELECT " OR_COLS " FROM orders ORDER BY created, id", NULL};
/* The device's model first (?3, "" for any), then an order that still allows one (open,
 * unexpired at ?4, not exhausted), then open ones, then the newest: a station may hold orders
 * for several models, and a newer order that is used up or expired must not hide an older one
 * that still has units. */
static const store_q q_or_find = {
    "SELECT " OR_COLS " FROM orders WHERE station = ?1 AND profile = ?2"
    " ORDER BY CASE WHEN model = ?3 THEN 0 ELSE 1 END,"
    " CASE WHEN state = 'open' AND expires > ?4 AND issued < count THEN 0"
    " WHEN state = 'open' THEN 1 ELSE 2 END, created DESC, id DESC LIMIT 1",
    NULL};
static const store_q q_or_any = {"SELECT 1 FROM orders WHERE profile = ?1 LIMIT 1", NULL};
/* the count: one row changes only while the order allows one more */
static const store_q q_or_take = {
    "UPDATE orders SET issued = issued + 1 WHERE id = ?1 AND state = 'open' AND expires > ?2"
    " AND issued < count",
    NULL};
static const store_q q_or_cert = {
    "INSERT INTO order_certs (serial, order_id, device_id, issued) VALUES (?1, ?2, ?3, ?4)", NULL};
static const store_q q_or_close = {
    "UPDATE orders SET state = 'closed', closed = ?2, closed_by = ?3 WHERE id = ?1"
    " AND state = 'open'",
    NULL};
static const store_q q_or_certs = {
    "SELECT serial, device_id, issued FROM order_certs WHERE order_id = ?1 ORDER BY issued, serial",
    NULL};

static int row_order(db_stmt *st, void *out)
{
    store_order *o = out;
    int bad = 0;
    memset(o, 0, sizeof *o);
    bad |= col_str(st, 0, &o->id);
    bad |= col_str(st, 1, &o->model);
    bad |= col_str(st, 2, &o->station);
    bad |= col_str(st, 3, &o->profile);
    o->count = col_int(st, 4);
    o->issued = col_int(st, 5);
    o->expires = col_time(st, 6);
    o->created = col_time(st, 7);
    bad |= col_str(st, 8, &o->created_by);
    bad |= col_str(st, 9, &o->state);
    o->closed = col_time(st, 10);
    if (!col_isnull(st, 11)) {
        bad |= col_str(st, 11, &o->closed_by);
    }
    bad |= col_bytes(st, 12, &o->sig, &o->sig_len);
    if (bad) {
        store_order_free(o);
    }
    return bad;
}

typedef struct {
    const store_order *o;
    const char *actor;
} or_create_arg;

static kl_rc or_create_tx(store_conn *c, void *arg)
{
    const or_create_arg *a = arg;
    const store_order *o = a->o;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[512];
    TRY(sc_stmt(c, &q_or_insert, &st));
    TRY(sc_text(st, 1, o->id));
    TRY(sc_text(st, 2, o->model));
    TRY(sc_text(st, 3, o->station));
    TRY(sc_text(st, 4, o->profile));
    TRY(sc_int(st, 5, o->count));
    TRY(sc_int(st, 6, (int64_t)o->expires));
    TRY(sc_int(st, 7, (int64_t)o->created));
    TRY(sc_text(st, 8, o->created_by));
    TRY(sc_blob(st, 9, o->sig, o->sig_len));
    rc = sc_run(st, "record the production order");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "production order %s exists already", o->id);
    }
    TRY(rc);
    snprintf(detail, sizeof detail,
             "order=%s model=%.64s count=%lld station=%.64s profile=%.64s "
             "expires=%lld",
             o->id, o->model, (long long)o->count, o->station, o->profile, (long long)o->expires);
    TRY(st_audit_append_tx(c, a->actor, "order-create", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc store_order_create(store *s, const store_order *o, const char *actor)
{
    kl_rc rc = KL_OK;
    ENSURE(s && o && actor && o->id && o->model && o->station && o->profile && o->created_by &&
               o->sig && o->sig_len && o->count > 0,
           KL_EUSAGE, "store_order_create: missing argument");
    or_create_arg a = {o, actor};
    TRY(store_write(s, or_create_tx, &a));
out:
    return rc;
}

kl_rc store_order_get(store *s, const char *id, store_order *out)
{
    int found = 0;
    if (!s || !id || !out) {
        return kl_fail(KL_EUSAGE, "store_order_get: missing argument");
    }
    kl_rc rc = store_get_row(s, &q_or_get, id, row_order, out, "read the order", &found);
    if (rc == KL_OK && !found) {
        rc = kl_fail(KL_ENOTFOUND, "no production order %s", id);
    }
    return rc;
}

kl_rc store_order_list(store *s, store_order **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    kl_rc rc =
        store_collect(s, &q_or_list, NULL, sizeof **out, 8, row_order, "list orders", &v, &n);
    if (rc != KL_OK) {
        store_order_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

void store_order_list_free(store_order *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_order_free(&v[i]);
    }
    free(v);
}

typedef struct {
    const char *station, *profile, *model;
    store_order *out;
    int found, controlled;
} or_find_arg;

static kl_rc or_find_tx(store_conn *c, void *arg)
{
    or_find_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_or_any, &st));
    TRY(sc_text(st, 1, a->profile));
    TRY(sc_step(st, &row, "look for orders"));
    a->controlled = row;
    sc_done(st);
    st = NULL;
    if (!row || !a->station) {
        goto out;
    }
    TRY(sc_stmt(c, &q_or_find, &st));
    TRY(sc_text(st, 1, a->station));
    TRY(sc_text(st, 2, a->profile));
    TRY(sc_text(st, 3, a->model ? a->model : ""));
    TRY(sc_int(st, 4, (int64_t)time(NULL)));
    TRY(sc_step(st, &row, "find the station's order"));
    if (row) {
        ENSURE(row_order(st, a->out) == 0, KL_EINTERNAL, "out of memory");
        a->found = 1;
    }
out:
    sc_done(st);
    return rc;
}

kl_rc store_order_find(store *s, const char *station, const char *profile, const char *model,
                       store_order *out, int *controlled)
{
    kl_rc rc = KL_OK;
    ENSURE(s && profile && out && controlled, KL_EUSAGE, "store_order_find: missing argument");
    memset(out, 0, sizeof *out);
    or_find_arg a = {station, profile, model, out, 0, 0};
    TRY(store_get(s, or_find_tx, &a));
    *controlled = a.controlled;
    ENSURE(a.found, KL_ENOTFOUND, "no production order of station %s for profile %s",
           station ? station : "(none)", profile);
out:
    return rc;
}

/* Why an order takes no more (its row, read in the same transaction). */
static kl_rc or_refusal(store_conn *c, const char *id, time_t now)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    store_order o;
    memset(&o, 0, sizeof o);
    TRY(sc_stmt(c, &q_or_get, &st));
    TRY(sc_text(st, 1, id));
    TRY(sc_step(st, &row, "read the order"));
    ENSURE(row, KL_EPOLICY, "production order %s does not exist", id);
    ENSURE(row_order(st, &o) == 0, KL_EINTERNAL, "out of memory");
    if (strcmp(o.state, STORE_ORDER_OPEN) != 0) {
        rc = kl_fail(KL_EPOLICY, "production order %s is closed", id);
    } else if (o.expires <= now) {
        rc = kl_fail(KL_EPOLICY, "production order %s expired", id);
    } else {
        rc = kl_fail(KL_EPOLICY, "production order %s is exhausted (%lld of %lld issued)", id,
                     (long long)o.issued, (long long)o.count);
    }
out:
    store_order_free(&o);
    sc_done(st);
    return rc;
}

kl_rc st_order_take_tx(store_conn *c, const char *id, const char *serial, const char *device_id)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    time_t now = time(NULL);
    TRY(sc_stmt(c, &q_or_take, &st));
    TRY(sc_text(st, 1, id));
    TRY(sc_int(st, 2, (int64_t)now));
    TRY(sc_run(st, "count the certificate against the order"));
    if (sc_changes(st) != 1) {
        sc_done(st);
        st = NULL;
        TRY(or_refusal(c, id, now));
    }
    sc_done(st);
    st = NULL;
    TRY(sc_stmt(c, &q_or_cert, &st));
    TRY(sc_text(st, 1, serial));
    TRY(sc_text(st, 2, id));
    TRY(device_id ? sc_text(st, 3, device_id) : sc_null(st, 3));
    TRY(sc_int(st, 4, (int64_t)now));
    TRY(sc_run(st, "record the order's certificate"));
out:
    sc_done(st);
    return rc;
}

typedef struct {
    const char *id, *actor;
    int was_open;
} or_close_arg;

static kl_rc or_close_tx(store_conn *c, void *arg)
{
    or_close_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[160];
    TRY(sc_stmt(c, &q_or_close, &st));
    TRY(sc_text(st, 1, a->id));
    TRY(sc_int(st, 2, (int64_t)time(NULL)));
    TRY(sc_text(st, 3, a->actor));
    TRY(sc_run(st, "close the order"));
    a->was_open = sc_changes(st) == 1;
    if (a->was_open) {
        snprintf(detail, sizeof detail, "order=%.64s", a->id);
        TRY(st_audit_append_tx(c, a->actor, "order-close", detail));
    }
out:
    sc_done(st);
    return rc;
}

void store_order_actor_clean(const char *in, char *out, size_t cap)
{
    kl_ascii_escape(in, "", out, cap);
}

kl_rc store_order_close(store *s, const char *id, const char *actor, int *was_open)
{
    kl_rc rc = KL_OK;
    store_order o;
    char clean[STORE_ORDER_ACTOR_MAX + 1];
    memset(&o, 0, sizeof o);
    ENSURE(s && id && actor, KL_EUSAGE, "store_order_close: missing argument");
    TRY(store_order_get(s, id, &o)); /* KL_ENOTFOUND names it */
    /* the report's closed-by line is printable ASCII (order_report_verify refuses others) */
    store_order_actor_clean(actor, clean, sizeof clean);
    or_close_arg a = {id, clean, 0};
    TRY(store_write(s, or_close_tx, &a));
    if (was_open) {
        *was_open = a.was_open;
    }
out:
    store_order_free(&o);
    return rc;
}

typedef struct {
    const char *id;
    store_order_cert_cb cb;
    void *arg;
} or_certs_arg;

static kl_rc or_certs_tx(store_conn *c, void *arg)
{
    or_certs_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_or_certs, &st));
    TRY(sc_text(st, 1, a->id));
    for (;;) {
        TRY(sc_step(st, &row, "list the order's certificates"));
        if (!row) {
            break;
        }
        const char *serial = col_text(st, 0, NULL);
        const char *dev = col_isnull(st, 1) ? NULL : col_text(st, 1, NULL);
        if (a->cb(a->arg, serial, dev, col_time(st, 2)) != 0) {
            break;
        }
    }
out:
    sc_done(st);
    return rc;
}

kl_rc store_order_certs(store *s, const char *id, store_order_cert_cb cb, void *arg)
{
    if (!s || !id || !cb) {
        return kl_fail(KL_EUSAGE, "store_order_certs: missing argument");
    }
    or_certs_arg a = {id, cb, arg};
    return store_read(s, or_certs_tx, &a);
}

void store_order_free(store_order *o)
{
    if (!o) {
        return;
    }
    free(o->id);
    free(o->model);
    free(o->station);
    free(o->profile);
    free(o->created_by);
    free(o->state);
    free(o->closed_by);
    free(o->sig);
    memset(o, 0, sizeof *o);
}
