/* keyline: revoking many certificates in one transaction, and the revoked certificates of an
 * issuer as a stream in serial order (the CRL is written from it, row by row). The rules are
 * those of store_cert_revoke, once per certificate: valid|pending -> revoked, the device whose
 * current certificate it is marked, one audit entry "revoke" each; the issuers' revocation
 * epochs move once per transaction. Schema 7 adds the indexes both need (store_schema.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_audit.h"
#include "store_db.h"

#define RV_SERIAL_MAX 40

static const store_q q_rv_status = {
    "SELECT id, status, issuer, template FROM certs WHERE serial = ?1", NULL};
static const store_q q_rv_update = {
    "UPDATE certs SET status = 'revoked', revoked_at = ?2, revoke_reason = ?3"
    " WHERE id = ?1 AND status IN ('valid', 'pending')",
    NULL};
/* A large transaction touches more pages than SQLite's default cache (2 MB) holds: it spills
 * them mid-transaction and reads them back (perf: a quarter of the time in pread/pwrite). The
 * officer's short-lived process only; PostgreSQL sizes its own buffers. */
static const store_q q_rv_cache_big = {"PRAGMA cache_size = -262144", "SELECT 1"};
static const store_q q_rv_cache_default = {"PRAGMA cache_size = -2000", "SELECT 1"};
static const store_q q_rv_device = {
    "UPDATE devices SET state = 'revoked', detail = ?2, updated = ?3 WHERE cert_serial = ?1", NULL};
static const store_q q_rv_device_cert = {"SELECT cert_serial FROM devices WHERE device_id = ?1",
                                         NULL};
/* a device id outside the inventory: the certificates issued with it (issue --device-id), the
 * valid or pending ones first */
static const store_q q_rv_device_issued = {
    "SELECT serial, status FROM certs WHERE device_id = ?1"
    " AND status IN ('valid', 'pending', 'revoked') ORDER BY status = 'revoked', id LIMIT 2",
    NULL};
static const store_q q_rv_epoch = {"INSERT INTO revocation_epochs (issuer, epoch) VALUES (?1, 1)"
                                   " ON CONFLICT (issuer) DO UPDATE SET"
                                   " epoch = revocation_epochs.epoch + 1",
                                   NULL};
/* A batch changed by one statement: one pass over the issuer's certificates of the period
 * instead of a lookup by serial each (random reads of the serial index); the rows come back
 * to be audited in issue order. */
static const store_q q_rv_batch = {
    "UPDATE certs SET status = 'revoked', revoked_at = ?4, revoke_reason = ?5"
    " WHERE issuer = ?1 AND created >= ?2 AND created <= ?3 AND status IN ('valid', 'pending')"
    " RETURNING id, serial, template",
    NULL};
/* the same rows as q_rv_batch, unchanged: a dry run */
static const store_q q_rv_batch_preview = {
    "SELECT id, serial, template FROM certs WHERE issuer = ?1 AND created >= ?2 AND created <= ?3"
    " AND status IN ('valid', 'pending') ORDER BY id",
    NULL};
/* served by the partial index certs_revoked (issuer, length(serial), serial, ...): serials are
 * upper-case hex of whole octets without a leading zero octet, so (length, text) is numeric
 * order */
static const store_q q_rv_stream = {
    "SELECT serial, revoked_at, revoke_reason FROM certs"
    " WHERE issuer = ?1 AND status = 'revoked' ORDER BY length(serial), serial",
    NULL};

typedef struct {
    const store_revoke_req *req;
    store_revoke_result *res;
    st_audit_run run; /* the audit head, read once per transaction */
    /* the issuers of a list's certificates (rv_key.iss indexes them) */
    char iss[STORE_REVOKE_ISSUERS_MAX][129];
    size_t n_iss;
} rv_arg;

/* A list's item: first what it is sorted by, its serial, canonical ("" for an item that is no
 * serial: a device id, after the serials, by its text); then, once read, its row. */
typedef struct {
    char serial[RV_SERIAL_MAX + 1];
    const char *item; /* as the list has it */
    uint8_t iss;      /* its issuer: rv_arg.iss[iss] */
    uint32_t idx;     /* its line in the list */
    int64_t id;       /* its row; -1: nothing to do (already revoked) */
} rv_key;

static void rv_issuer_add(store_revoke_result *res, const char *issuer)
{
    for (size_t i = 0; i < res->n_issuers; i++) {
        if (strcmp(res->issuers[i], issuer) == 0) {
            return;
        }
    }
    if (res->n_issuers < STORE_REVOKE_ISSUERS_MAX) {
        snprintf(res->issuers[res->n_issuers++], sizeof res->issuers[0], "%s", issuer);
    }
}

/* What follows the change of a certificate's row: the device whose current certificate it is
 * marked, the audit entry, the count. */
static kl_rc rv_done(store_conn *c, rv_arg *a, const char *serial, const char *issuer)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[512], *full = NULL;
    TRY(sc_stmt(c, &q_rv_device, &st));
    TRY(sc_text(st, 1, serial));
    snprintf(detail, sizeof detail, "certificate %s revoked (reason %d)", serial, a->req->reason);
    TRY(sc_text(st, 2, detail));
    TRY(sc_int(st, 3, (int64_t)a->req->when));
    TRY(sc_run(st, "update the inventory"));
    TRY(store_audit_detail_revoke(serial, issuer, a->req->reason, a->req->when, &full));
    TRY(st_audit_run_add(c, &a->run, a->req->actor, "revoke", full));
    rv_issuer_add(a->res, issuer);
    a->res->revoked++;
out:
    free(full);
    sc_done(st);
    return rc;
}

/* A dry run's certificate: reported and counted as rv_done would count it. */
static kl_rc rv_preview(rv_arg *a, const char *serial, const char *issuer)
{
    kl_rc rc = a->req->preview(a->req->preview_arg, serial, issuer);
    if (rc == KL_OK) {
        rv_issuer_add(a->res, issuer);
        a->res->revoked++;
    }
    return rc;
}

/* The issuer's index in a->iss, added if new. */
static kl_rc rv_iss_index(rv_arg *a, const char *issuer, uint8_t *out)
{
    size_t i = 0;
    while (i < a->n_iss && strcmp(a->iss[i], issuer) != 0) {
        i++;
    }
    if (i == a->n_iss) {
        if (a->n_iss == STORE_REVOKE_ISSUERS_MAX) {
            return kl_fail(KL_EINPUT, "the list names certificates of more than %d CAs",
                           STORE_REVOKE_ISSUERS_MAX);
        }
        snprintf(a->iss[a->n_iss++], sizeof a->iss[0], "%s", issuer);
    }
    *out = (uint8_t)i;
    return KL_OK;
}

/* The request's check of a certificate it would revoke, if it has one. */
static kl_rc rv_check(const rv_arg *a, const char *serial, const char *issuer, const char *tpl)
{
    return a->req->check ? a->req->check(a->req->check_arg, serial, issuer, tpl) : KL_OK;
}

/* Read certificate k->serial into k (its row and issuer; id -1 when already revoked, counted).
 * No such certificate: KL_ENOTFOUND, or with `found` (then 0 there) KL_OK and nothing read. */
static kl_rc rv_read(store_conn *c, rv_arg *a, rv_key *k, const char *what, int *found)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_rv_status, &st));
    TRY(sc_text(st, 1, k->serial));
    TRY(sc_step(st, &row, "read certificate"));
    if (!row && found) {
        *found = 0;
        goto out;
    }
    ENSURE(row, KL_ENOTFOUND, "%s: no certificate with serial %s", what, k->serial);
    const char *status = col_text(st, 1, NULL) ? col_text(st, 1, NULL) : "";
    const char *issuer = col_text(st, 2, NULL) ? col_text(st, 2, NULL) : "";
    k->id = -1;
    if (strcmp(status, STORE_ST_REVOKED) == 0) {
        ENSURE(!a->req->single, KL_EEXIST, "%s: certificate %s is already revoked", what,
               k->serial);
        a->res->already++;
        goto out;
    }
    ENSURE(strcmp(status, STORE_ST_VALID) == 0 || strcmp(status, STORE_ST_PENDING) == 0,
           KL_ENOTFOUND, "%s: no certificate with serial %s (only a %s reservation)", what,
           k->serial, status);
    TRY(rv_check(a, k->serial, issuer, col_text(st, 3, NULL)));
    TRY(rv_iss_index(a, issuer, &k->iss));
    k->id = col_int(st, 0);
out:
    sc_done(st);
    return rc;
}

/* The certificate of device id `dev` into out (RV_SERIAL_MAX + 1 bytes): the inventory's
 * device's current one, else the one valid or pending certificate issued with that device id
 * (none: one of its revoked ones, to be counted as such; several: refused, as ambiguous). */
static kl_rc rv_device_serial(store_conn *c, const char *dev, const char *what, char *out)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_rv_device_cert, &st));
    TRY(sc_text(st, 1, dev));
    TRY(sc_step(st, &row, "read device"));
    if (row && col_text(st, 0, NULL)) {
        snprintf(out, RV_SERIAL_MAX + 1, "%s", col_text(st, 0, NULL));
        goto out;
    }
    sc_done(st); /* one statement at a time on the connection */
    st = NULL;
    TRY(sc_stmt(c, &q_rv_device_issued, &st));
    TRY(sc_text(st, 1, dev));
    TRY(sc_step(st, &row, "read the device's certificates"));
    ENSURE(row && col_text(st, 0, NULL) && col_text(st, 1, NULL), KL_ENOTFOUND,
           "%s: no certificate with that serial and no device with a certificate", what);
    snprintf(out, RV_SERIAL_MAX + 1, "%s", col_text(st, 0, NULL));
    int live = strcmp(col_text(st, 1, NULL), STORE_ST_REVOKED) != 0;
    TRY(sc_step(st, &row, "read the device's certificates"));
    ENSURE(!live || !row || !col_text(st, 1, NULL) ||
               strcmp(col_text(st, 1, NULL), STORE_ST_REVOKED) == 0,
           KL_EINPUT,
           "%s: device %s has several valid certificates (issued with --device-id): name the "
           "one to revoke by its serial",
           what, dev);
out:
    sc_done(st);
    return rc;
}

/* Resolve an item of a --from list: "serial:HEX", "device:ID", or either (a serial when a
 * certificate has it, else a device's certificate; the certificate tried first: one lookup for
 * a serial). */
static kl_rc rv_resolve(store_conn *c, rv_arg *a, rv_key *k)
{
    kl_rc rc = KL_OK;
    char what[160];
    const char *item = k->item;
    const char *dev = strncmp(item, "device:", 7) == 0 ? item + 7 : NULL;
    const char *ser = strncmp(item, "serial:", 7) == 0 ? item + 7 : NULL;
    if (a->req->single) {
        snprintf(what, sizeof what, "%s", a->req->source ? a->req->source : "revoke");
    } else {
        snprintf(what, sizeof what, "%s item %lu (%.100s)",
                 a->req->source ? a->req->source : "list", (unsigned long)k->idx + 1, item);
    }
    ENSURE(!ser || k->serial[0], KL_EINPUT, "%s: not a serial number", what);
    if (!dev && k->serial[0]) {
        int found = 1;
        TRY(rv_read(c, a, k, what, ser ? NULL : &found));
        if (found) {
            goto out;
        }
    }
    TRY(rv_device_serial(c, dev ? dev : item, what, k->serial));
    TRY(rv_read(c, a, k, what, NULL));
out:
    return rc;
}

typedef struct {
    int64_t id;
    char serial[RV_SERIAL_MAX + 1];
} rv_row;

static int rv_row_cmp(const void *x, const void *y)
{
    const rv_row *p = x, *q = y;
    return (p->id > q->id) - (p->id < q->id);
}

/* The rows a batch changed (id, serial), as its UPDATE returns them. */
static kl_rc rv_batch_rows(store_conn *c, const rv_arg *a, rv_row **vp, size_t *np)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    size_t cap = 0;
    int row = 0;
    TRY(sc_stmt(c, a->req->preview ? &q_rv_batch_preview : &q_rv_batch, &st));
    TRY(sc_text(st, 1, a->req->issuer));
    TRY(sc_int(st, 2, (int64_t)a->req->from));
    TRY(sc_int(st, 3, (int64_t)a->req->until));
    if (!a->req->preview) {
        TRY(sc_int(st, 4, (int64_t)a->req->when));
        TRY(a->req->reason >= 0 ? sc_int(st, 5, a->req->reason) : sc_null(st, 5));
    }
    for (;;) {
        TRY(sc_step(st, &row, "revoke the batch"));
        if (!row) {
            break;
        }
        if (*np == cap) {
            size_t nc = cap ? cap * 2 : 1024;
            rv_row *nv = realloc(*vp, nc * sizeof *nv);
            ENSURE(nv, KL_EINTERNAL, "out of memory");
            *vp = nv;
            cap = nc;
        }
        const char *sn = col_text(st, 1, NULL);
        ENSURE(sn && strlen(sn) <= RV_SERIAL_MAX, KL_EINTERNAL, "store: a bad serial in %s",
               a->req->issuer);
        TRY(rv_check(a, sn, a->req->issuer, col_text(st, 2, NULL)));
        (*vp)[*np].id = col_int(st, 0);
        memcpy((*vp)[*np].serial, sn, strlen(sn) + 1);
        (*np)++;
    }
out:
    sc_done(st);
    return rc;
}

/* A batch (--issued-by --between): every valid or pending certificate of the issuer created in
 * the period, changed by one statement, then marked and audited one by one in issue order. */
static kl_rc rv_batch(store_conn *c, rv_arg *a)
{
    kl_rc rc = KL_OK;
    rv_row *v = NULL;
    size_t n = 0;
    TRY(rv_batch_rows(c, a, &v, &n));
    if (n > 1) {
        qsort(v, n, sizeof *v, rv_row_cmp);
    }
    for (size_t i = 0; i < n; i++) {
        TRY(a->req->preview ? rv_preview(a, v[i].serial, a->req->issuer)
                            : rv_done(c, a, v[i].serial, a->req->issuer));
    }
out:
    free(v);
    return rc;
}

/* The default page cache again, after a failure too; the failure's message is the one that
 * stays (on PostgreSQL the statement itself fails in the aborted transaction). */
static kl_rc rv_cache_default(store_conn *c, kl_rc rc)
{
    char msg[1024];
    db_stmt *st = NULL;
    snprintf(msg, sizeof msg, "%s", rc == KL_OK ? "" : kl_errmsg());
    kl_rc r2 = sc_stmt(c, &q_rv_cache_default, &st);
    r2 = r2 == KL_OK ? sc_run(st, "size the page cache") : r2;
    sc_done(st);
    if (rc == KL_OK || r2 == KL_OK) {
        return rc == KL_OK ? r2 : rc;
    }
    return kl_fail(rc, "%s", msg);
}

static int rv_key_cmp(const void *x, const void *y)
{
    const rv_key *p = x, *q = y;
    if (!p->serial[0] || !q->serial[0]) {
        return p->serial[0] ? -1 : q->serial[0] ? 1 : strcmp(p->item, q->item);
    }
    int d = strcmp(p->serial, q->serial);
    return d ? d : (p->idx > q->idx) - (p->idx < q->idx);
}

static int rv_id_cmp(const void *x, const void *y)
{
    const rv_key *p = x, *q = y;
    return (p->id > q->id) - (p->id < q->id);
}

/* A list's items, sorted by serial: read in the serial index's order, each of its pages is
 * visited once instead of at random (a list has no order of its own; what fails still names
 * its line). */
static kl_rc rv_list_keys(const store_revoke_req *req, rv_key **out)
{
    size_t n = req->n_items;
    *out = NULL;
    if (n > UINT32_MAX) {
        return kl_fail(KL_EINPUT, "a list of more than %u items", UINT32_MAX);
    }
    rv_key *k = malloc((n ? n : 1) * sizeof *k);
    if (!k) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *it = req->items[i];
        k[i].idx = (uint32_t)i;
        k[i].item = it;
        k[i].id = -1;
        k[i].iss = 0;
        /* the serial an item may be: "serial:" and a 0x as --serial takes are not part of it
         * (a bare 0x1A is tried as serial 1A, then as the device id "0x1A") */
        const char *sn = strncmp(it, "serial:", 7) == 0 ? it + 7 : it;
        sn += (sn[0] == '0' && (sn[1] == 'x' || sn[1] == 'X') && sn[2]) ? 2 : 0;
        if (strncmp(it, "device:", 7) == 0 ||
            store_serial_normalize(sn, k[i].serial, sizeof k[i].serial) != KL_OK) {
            k[i].serial[0] = 0;
        }
    }
    qsort(k, n, sizeof *k, rv_key_cmp);
    *out = k;
    return KL_OK;
}

/* Revoke the certificate of a read item (its row unchanged since: the transaction holds it). */
static kl_rc rv_change(store_conn *c, rv_arg *a, const rv_key *k)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_rv_update, &st));
    TRY(sc_int(st, 1, k->id));
    TRY(sc_int(st, 2, (int64_t)a->req->when));
    TRY(a->req->reason >= 0 ? sc_int(st, 3, a->req->reason) : sc_null(st, 3));
    TRY(sc_run(st, "revoke certificate"));
    ENSURE(sc_changes(st) == 1, KL_EINTERNAL, "certificate %s changed meanwhile", k->serial);
    sc_done(st); /* one statement at a time on the connection */
    st = NULL;
    TRY(rv_done(c, a, k->serial, a->iss[k->iss]));
out:
    sc_done(st);
    return rc;
}

/* A --from list: every item read, in serial order; then the certificates changed in the
 * order of their rows (the table's pages and the status indexes, keyed by row after status,
 * in order too), a certificate the list names twice once. */
static kl_rc rv_list(store_conn *c, rv_arg *a)
{
    kl_rc rc = KL_OK;
    rv_key *k = NULL;
    size_t n = a->req->n_items;
    a->n_iss = 0;
    TRY(rv_list_keys(a->req, &k));
    for (size_t i = 0; i < n; i++) {
        TRY(rv_resolve(c, a, &k[i]));
    }
    qsort(k, n, sizeof *k, rv_id_cmp);
    for (size_t i = 0; i < n; i++) {
        if (k[i].id < 0) {
            continue; /* already revoked (counted) */
        }
        if (i > 0 && k[i].id == k[i - 1].id) {
            a->res->repeated++; /* named twice: revoked by its first mention */
            continue;
        }
        TRY(a->req->preview ? rv_preview(a, k[i].serial, a->iss[k[i].iss])
                            : rv_change(c, a, &k[i]));
    }
out:
    free(k);
    return rc;
}

static kl_rc rv_tx(store_conn *c, void *arg)
{
    rv_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    memset(a->res, 0, sizeof *a->res); /* a retried transaction starts over */
    TRY(sc_stmt(c, &q_rv_cache_big, &st));
    TRY(sc_run(st, "size the page cache"));
    if (!a->req->preview) {
        TRY(st_audit_run_begin(c, &a->run));
    }
    if (a->req->issuer) {
        TRY(rv_batch(c, a));
    }
    if (a->req->n_items) {
        TRY(rv_list(c, a));
    }
    if (a->req->preview) {
        goto out; /* a dry run: nothing changed, nothing to record */
    }
    for (size_t i = 0; i < a->res->n_issuers; i++) {
        TRY(sc_stmt(c, &q_rv_epoch, &st));
        TRY(sc_text(st, 1, a->res->issuers[i]));
        TRY(sc_run(st, "bump revocation epoch"));
    }
    TRY(st_audit_run_end(c, &a->run));
out:
    sc_done(st);
    return rv_cache_default(c, rc);
}

kl_rc store_cert_revoke_many(store *s, const store_revoke_req *req, store_revoke_result *res)
{
    if (!s || !req || !res) {
        return kl_fail(KL_EUSAGE, "store_cert_revoke_many: missing argument");
    }
    if (req->reason < -1 || req->reason > 10 || req->reason == 7) {
        return kl_fail(KL_EINPUT, "invalid CRL reason code %d", req->reason);
    }
    if ((req->issuer == NULL) == (req->n_items == 0 && req->items == NULL) ||
        (req->issuer && req->from > req->until)) {
        return kl_fail(KL_EUSAGE, "store_cert_revoke_many: a list or an issuer and a period");
    }
    store_revoke_req r = *req;
    if (!r.actor || !r.actor[0]) {
        r.actor = "keyline";
    }
    if (!r.when) {
        r.when = time(NULL);
    }
    rv_arg a = {.req = &r, .res = res};
    return r.preview ? store_read(s, rv_tx, &a) : store_write(s, rv_tx, &a);
}

/* ---- the revoked certificates of an issuer, streamed ---- */

/* one CRL partition: its rows alone (a partition holds at most crl-partition-size) */
static const store_q q_rv_stream_part = {
    "SELECT c.serial, c.revoked_at, c.revoke_reason FROM crl_partition_certs p"
    " JOIN certs c ON c.serial = p.serial WHERE p.issuer = ?1 AND p.part = ?2"
    " AND c.status = 'revoked' ORDER BY length(c.serial), c.serial",
    NULL};

typedef struct {
    const char *issuer;
    store_revoked_cb cb;
    void *arg;
    int64_t part; /* -1: every certificate of the issuer */
} rs_arg;

static kl_rc rs_tx(store_conn *c, void *arg)
{
    rs_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, a->part < 0 ? &q_rv_stream : &q_rv_stream_part, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(a->part < 0 ? KL_OK : sc_int(st, 2, a->part));
    for (;;) {
        TRY(sc_step(st, &row, "list revoked certificates"));
        if (!row) {
            break;
        }
        store_revoked r = {.serial_hex = col_text(st, 0, NULL),
                           .revoked_at = col_time(st, 1),
                           .reason = col_isnull(st, 2) ? -1 : (int)col_int(st, 2)};
        ENSURE(r.serial_hex, KL_EINTERNAL, "store: a revoked certificate without a serial");
        TRY(a->cb(a->arg, &r));
    }
out:
    sc_done(st);
    return rc;
}

kl_rc store_revoked_stream(store *s, const char *issuer, store_revoked_cb cb, void *arg)
{
    if (!s || !issuer || !cb) {
        return kl_fail(KL_EUSAGE, "store_revoked_stream: missing argument");
    }
    rs_arg a = {issuer, cb, arg, -1};
    return store_read(s, rs_tx, &a);
}

kl_rc store_revoked_stream_part(store *s, const char *issuer, int64_t part, store_revoked_cb cb,
                                void *arg)
{
    if (!s || !issuer || part < 0 || !cb) {
        return kl_fail(KL_EUSAGE, "store_revoked_stream_part: missing argument");
    }
    rs_arg a = {issuer, cb, arg, part};
    return store_read(s, rs_tx, &a);
}

/* ---- CRL numbers taken only with the CRL ---- */

static const store_q q_rn_peek = {"SELECT last FROM crl_numbers WHERE issuer = ?1", NULL};
static const store_q q_rn_first = {
    "INSERT INTO crl_numbers (issuer, last) VALUES (?1, ?2) ON CONFLICT (issuer) DO NOTHING", NULL};
static const store_q q_rn_take = {
    "UPDATE crl_numbers SET last = ?2 WHERE issuer = ?1 AND last = ?2 - 1", NULL};

typedef struct {
    const char *issuer;
    int64_t out;
} rn_peek_arg;

static kl_rc rn_peek_tx(store_conn *c, void *arg)
{
    rn_peek_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, &q_rn_peek, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_step(st, &row, "read the CRL number"));
    a->out = (row ? col_int(st, 0) : 0) + 1;
out:
    sc_done(st);
    return rc;
}

kl_rc store_crl_number_peek(store *s, const char *issuer, int64_t *out)
{
    if (!s || !issuer || !issuer[0] || !out) {
        return kl_fail(KL_EUSAGE, "store_crl_number_peek: missing argument");
    }
    rn_peek_arg a = {issuer, 0};
    kl_rc rc = store_read(s, rn_peek_tx, &a);
    *out = a.out;
    return rc;
}

static const store_q q_rn_head = {
    "SELECT c.number, c.this_update, c.next_update, e.epoch FROM crls c LEFT JOIN crl_epochs e"
    " ON e.name = c.issuer AND e.number = c.number WHERE c.issuer = ?1",
    NULL};

static int rn_head_row(db_stmt *st, void *out)
{
    store_crl_meta *h = out;
    h->number = col_int(st, 0);
    h->this_update = col_time(st, 1);
    h->next_update = col_time(st, 2);
    h->epoch = col_isnull(st, 3) ? -1 : col_int(st, 3);
    return 0;
}

kl_rc store_crl_head(store *s, const char *name, store_crl_meta *out)
{
    if (!s || !name || !name[0] || !out) {
        return kl_fail(KL_EUSAGE, "store_crl_head: missing argument");
    }
    memset(out, 0, sizeof *out);
    int found = 0;
    kl_rc rc =
        store_get_row(s, &q_rn_head, name, rn_head_row, out, "read the published CRL", &found);
    if (rc == KL_OK && !found) {
        rc = kl_fail(KL_ENOTFOUND, "no CRL published for '%s'", name);
    }
    return rc;
}

typedef struct {
    const store_crl *crl;
    const char *actor, *detail;
    store_crl_why why;
} rn_commit_arg;

/* the published CRL of a name, and the epoch its entries were read at when it is known */
static const store_q q_rn_published = {
    "SELECT c.this_update, c.number, e.epoch FROM crls c LEFT JOIN crl_epochs e"
    " ON e.name = c.issuer AND e.number = c.number WHERE c.issuer = ?1",
    NULL};
static const store_q q_rn_epoch_put = {
    "INSERT INTO crl_epochs (name, number, epoch) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO"
    " UPDATE SET number = excluded.number, epoch = excluded.epoch"
    " WHERE excluded.number > crl_epochs.number",
    NULL};

/* Inside the commit: the CRL is still the newest in content. No revocation of its issuer was
 * recorded since its entries were read (the epoch has not moved: else a CRL read before a
 * revocation would be published with a number above the CRL that lists it), and its
 * thisUpdate is after the published one's of its name, unless that one is dated more than
 * STORE_CRL_AHEAD_MAX seconds after it: signed by a clock set ahead (or a host's clock far
 * ahead of this one's), it would otherwise block every CRL until this clock caught up, days
 * or years, and a CRL dated ahead is one relying parties refuse anyway ("not yet valid"). */
static kl_rc rn_fresh_tx(store_conn *c, rn_commit_arg *a)
{
    const store_crl *crl = a->crl;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    int64_t epoch = 0;
    TRY(st_revocation_epoch_tx(c, crl->issuer, &epoch));
    if (epoch != crl->epoch) {
        a->why.clash = STORE_CRL_REVOKED_SINCE;
        TRY(kl_fail(KL_EEXIST, "CRL of %s: a revocation was recorded while it was signed",
                    crl->issuer));
    }
    const char *name = crl->name ? crl->name : crl->issuer;
    TRY(sc_stmt(c, &q_rn_published, &st));
    TRY(sc_text(st, 1, name));
    TRY(sc_step(st, &row, "read the published CRL"));
    if (row && col_int(st, 0) >= (int64_t)crl->this_update &&
        col_int(st, 0) <= (int64_t)crl->this_update + STORE_CRL_AHEAD_MAX) {
        int same = !col_isnull(st, 2) && col_int(st, 2) == crl->epoch;
        a->why.clash = same ? STORE_CRL_SAME_CONTENT : STORE_CRL_SAME_SECOND;
        a->why.published = (time_t)col_int(st, 0);
        a->why.number = col_int(st, 1);
        TRY(kl_fail(KL_EEXIST,
                    same ? "CRL of %s: CRL number %lld with the same entries has thisUpdate %lld"
                         : "CRL of %s: the published CRL's thisUpdate is not before %lld",
                    name, same ? (long long)a->why.number : (long long)crl->this_update,
                    (long long)a->why.published));
    }
out:
    sc_done(st);
    return rc;
}

static kl_rc rn_commit_tx(store_conn *c, void *arg)
{
    rn_commit_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(rn_fresh_tx(c, a));
    /* the number: the first of the issuer, or the one after the last taken; another CRL that
     * took it meanwhile makes this one KL_EEXIST (nothing written) */
    TRY(sc_stmt(c, &q_rn_first, &st));
    TRY(sc_text(st, 1, a->crl->issuer));
    TRY(sc_int(st, 2, a->crl->number));
    TRY(sc_run(st, "take the CRL number"));
    int first = a->crl->number == 1 && sc_changes(st) == 1;
    if (!first) {
        TRY(sc_stmt(c, &q_rn_take, &st));
        TRY(sc_text(st, 1, a->crl->issuer));
        TRY(sc_int(st, 2, a->crl->number));
        TRY(sc_run(st, "take the CRL number"));
        if (sc_changes(st) != 1) {
            a->why.clash = STORE_CRL_NUMBER_TAKEN;
        }
        ENSURE(sc_changes(st) == 1, KL_EEXIST, "CRL number %lld of %s was taken meanwhile",
               (long long)a->crl->number, a->crl->issuer);
    }
    const char *name = a->crl->name ? a->crl->name : a->crl->issuer;
    TRY(st_crl_row_tx(c, name, a->crl));
    TRY(sc_stmt(c, &q_rn_epoch_put, &st));
    TRY(sc_text(st, 1, name));
    TRY(sc_int(st, 2, a->crl->number));
    TRY(sc_int(st, 3, a->crl->epoch));
    TRY(sc_run(st, "record the CRL's epoch"));
    TRY(st_audit_append_tx(c, a->actor, "crl", a->detail));
out:
    sc_done(st);
    return rc;
}

kl_rc store_crl_commit(store *s, const store_crl *crl, const char *actor, const char *detail,
                       store_crl_why *why)
{
    if (!s || !crl || !crl->issuer || !crl->issuer[0] || !crl->der || !crl->der_len || !detail) {
        return kl_fail(KL_EUSAGE, "store_crl_commit: missing argument");
    }
    if (crl->number < 1 || crl->next_update <= crl->this_update || crl->der_len > STORE_CRL_MAX) {
        return kl_fail(KL_EINPUT, "CRL %lld of %s: bad number, times or size (%zu bytes)",
                       (long long)crl->number, crl->issuer, crl->der_len);
    }
    rn_commit_arg a = {crl, actor && actor[0] ? actor : "keyline", detail, {STORE_CRL_FRESH, 0, 0}};
    kl_rc rc = store_write(s, rn_commit_tx, &a);
    if (why) {
        *why = a.why;
    }
    return rc;
}
