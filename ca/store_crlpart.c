/* keyline: CRL partitions in the store (issue 17 item 3; ca/ca_crlpart.c decides who uses them).
 *
 * A CA with [ca LABEL] crl-partition-size = N puts its certificates in partitions of at most N:
 * crl_partitions holds the CA's current partition and how many certificates were counted
 * against it, crl_partition_certs the partition of each certificate (schema step 13). The
 * count is taken in the certificate's own insert transaction (st_crlpart_take_tx, the pattern
 * of st_order_take_tx): UPDATE ... WHERE fill < N, so racing issuers never put more than N in
 * one partition; the one that finds it full gets KL_EEXIST and signs again with the next. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"

static const store_q q_cp_get = {"SELECT current, fill FROM crl_partitions WHERE issuer = ?1",
                                 NULL};
static const store_q q_cp_first = {"INSERT INTO crl_partitions (issuer, current, fill)"
                                   " VALUES (?1, 0, 0) ON CONFLICT (issuer) DO NOTHING",
                                   NULL};
static const store_q q_cp_next = {
    "UPDATE crl_partitions SET current = current + 1, fill = 0 WHERE issuer = ?1 AND fill >= ?2",
    NULL};
static const store_q q_cp_take = {"UPDATE crl_partitions SET fill = fill + 1"
                                  " WHERE issuer = ?1 AND current = ?2 AND fill < ?3",
                                  NULL};
static const store_q q_cp_cert = {
    "INSERT INTO crl_partition_certs (serial, issuer, part) VALUES (?1, ?2, ?3)", NULL};
/* from the revoked index of the issuer (certs_revoked), not from all its partitions' rows */
static const store_q q_cp_since = {
    "SELECT DISTINCT p.part FROM certs c JOIN crl_partition_certs p ON p.serial = c.serial"
    " WHERE c.issuer = ?1 AND c.status = 'revoked' AND c.revoked_at >= ?2 ORDER BY p.part",
    NULL};
static const store_q q_cp_count = {
    "SELECT count(*) FROM crl_partition_certs p JOIN certs c ON c.serial = p.serial"
    " WHERE p.issuer = ?1 AND p.part = ?2 AND c.status = 'revoked'",
    NULL};
static const store_q q_cp_of = {"SELECT part FROM crl_partition_certs WHERE serial = ?1", NULL};
/* schema step 17: the distribution point each partition's certificates and CRL name */
static const store_q q_cp_url = {
    "SELECT url FROM crl_partition_urls WHERE issuer = ?1 AND part = ?2", NULL};
static const store_q q_cp_url_add = {"INSERT INTO crl_partition_urls (issuer, part, url)"
                                     " VALUES (?1, ?2, ?3) ON CONFLICT (issuer, part) DO NOTHING",
                                     NULL};

typedef struct {
    const char *issuer;
    int64_t size, current, fill;
    int found;
} cp_arg;

static int row_cp(db_stmt *st, void *out)
{
    cp_arg *a = out;
    a->current = col_int(st, 0);
    a->fill = col_int(st, 1);
    return 0;
}

static kl_rc cp_get_tx(store_conn *c, void *arg)
{
    cp_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cp_get, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_step(st, &a->found, "read the CRL partition"));
    a->current = a->fill = 0;
    if (a->found) {
        row_cp(st, a);
    }
out:
    sc_done(st);
    return rc;
}

/* The first partition of the CA, or the next when the current one is full. */
static kl_rc cp_next_tx(store_conn *c, void *arg)
{
    cp_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cp_first, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_run(st, "add the CRL partition"));
    TRY(sc_stmt(c, &q_cp_next, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_int(st, 2, a->size));
    TRY(sc_run(st, "move to the next CRL partition"));
    sc_done(st);
    st = NULL;
    TRY(cp_get_tx(c, a));
out:
    sc_done(st);
    return rc;
}

kl_rc store_crlpart_current(store *s, const char *issuer, int64_t size, int64_t *part)
{
    if (!s || !issuer || !issuer[0] || size < 1 || !part) {
        return kl_fail(KL_EUSAGE, "store_crlpart_current: missing argument");
    }
    cp_arg a = {.issuer = issuer, .size = size};
    kl_rc rc = store_get_row(s, &q_cp_get, issuer, row_cp, &a, "read the CRL partition", &a.found);
    /* a write only when the CA has none yet or the current one is full: once per N */
    if (rc == KL_OK && (!a.found || a.fill >= size)) {
        rc = store_write(s, cp_next_tx, &a);
    }
    *part = a.current;
    return rc;
}

kl_rc st_crlpart_take_tx(store_conn *c, const store_cert *cert)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cp_take, &st));
    TRY(sc_text(st, 1, cert->issuer));
    TRY(sc_int(st, 2, cert->crl_part));
    TRY(sc_int(st, 3, cert->crl_part_size));
    TRY(sc_run(st, "count the certificate in its CRL partition"));
    ENSURE(sc_changes(st) == 1, KL_EEXIST, "CRL partition %lld of %s is full (or not current)",
           (long long)cert->crl_part, cert->issuer);
    TRY(sc_stmt(c, &q_cp_cert, &st));
    TRY(sc_text(st, 1, cert->serial_hex));
    TRY(sc_text(st, 2, cert->issuer));
    TRY(sc_int(st, 3, cert->crl_part));
    TRY(sc_run(st, "record the certificate's CRL partition"));
out:
    sc_done(st);
    return rc;
}

typedef struct {
    const char *issuer;
    time_t since;
    int64_t *v;
    size_t n, cap;
} cp_list_arg;

/* Every row of `q` for (?1 issuer, ?2 n), each handed to `each` (0, or -1 out of memory). */
static kl_rc cp_rows(store_conn *c, const store_q *q, const char *issuer, int64_t n,
                     store_row_fn each, void *out, const char *what)
{
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    int row = 0;
    TRY(sc_stmt(c, q, &st));
    TRY(sc_text(st, 1, issuer));
    TRY(sc_int(st, 2, n));
    while ((rc = sc_step(st, &row, what)) == KL_OK && row) {
        ENSURE(each(st, out) == 0, KL_EINTERNAL, "out of memory");
    }
out:
    sc_done(st);
    return rc;
}

static int row_part(db_stmt *st, void *out)
{
    *(int64_t *)out = col_int(st, 0);
    return 0;
}

static int row_part_add(db_stmt *st, void *out)
{
    cp_list_arg *a = out;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        int64_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) {
            return -1;
        }
        a->v = nv;
        a->cap = nc;
    }
    return row_part(st, &a->v[a->n++]);
}

static kl_rc cp_since_tx(store_conn *c, void *arg)
{
    cp_list_arg *a = arg;
    a->n = 0; /* a retried read starts over */
    return cp_rows(c, &q_cp_since, a->issuer, (int64_t)a->since, row_part_add, a,
                   "list the CRL partitions");
}

kl_rc store_crlpart_revoked_since(store *s, const char *issuer, time_t since, int64_t **parts,
                                  size_t *n)
{
    if (!s || !issuer || !parts || !n) {
        return kl_fail(KL_EUSAGE, "store_crlpart_revoked_since: missing argument");
    }
    cp_list_arg a = {.issuer = issuer, .since = since};
    kl_rc rc = store_read(s, cp_since_tx, &a);
    if (rc != KL_OK) {
        free(a.v);
        a.v = NULL;
        a.n = 0;
    }
    *parts = a.v;
    *n = a.n;
    return rc;
}

kl_rc store_crlpart_last(store *s, const char *issuer, int64_t *last)
{
    if (!s || !issuer || !last) {
        return kl_fail(KL_EUSAGE, "store_crlpart_last: missing argument");
    }
    cp_arg a = {.issuer = issuer};
    kl_rc rc = store_get_row(s, &q_cp_get, issuer, row_cp, &a, "read the CRL partition", &a.found);
    *last = rc == KL_OK && a.found ? a.current : -1;
    return rc;
}

kl_rc store_crlpart_of(store *s, const char *serial_hex, int64_t *part)
{
    if (!s || !serial_hex || !part) {
        return kl_fail(KL_EUSAGE, "store_crlpart_of: missing argument");
    }
    int found = 0;
    kl_rc rc =
        store_get_row(s, &q_cp_of, serial_hex, row_part, part, "read the CRL partition", &found);
    *part = rc == KL_OK && found ? *part : -1;
    return rc;
}

typedef struct {
    const char *issuer;
    int64_t part, n;
} cp_count_arg;

static kl_rc cp_count_tx(store_conn *c, void *arg)
{
    cp_count_arg *a = arg;
    a->n = 0;
    return cp_rows(c, &q_cp_count, a->issuer, a->part, row_part, &a->n,
                   "count the revoked certificates of the CRL partition");
}

kl_rc store_crlpart_revoked_count(store *s, const char *issuer, int64_t part, int64_t *n)
{
    if (!s || !issuer || part < 0 || !n) {
        return kl_fail(KL_EUSAGE, "store_crlpart_revoked_count: missing argument");
    }
    cp_count_arg a = {issuer, part, 0};
    kl_rc rc = store_read(s, cp_count_tx, &a);
    *n = a.n;
    return rc;
}

typedef struct {
    const char *issuer, *url_now;
    int64_t part;
    char *url; /* the recorded one, malloc'd */
} cp_url_arg;

static int row_url(db_stmt *st, void *out)
{
    cp_url_arg *a = out;
    free(a->url);
    a->url = NULL;
    return col_str(st, 0, &a->url) == 0 && a->url ? 0 : -1;
}

static kl_rc cp_url_get_tx(store_conn *c, void *arg)
{
    cp_url_arg *a = arg;
    return cp_rows(c, &q_cp_url, a->issuer, a->part, row_url, a,
                   "read the CRL partition's distribution point");
}

/* Record url_now unless another process recorded one first, then read what is recorded. */
static kl_rc cp_url_add_tx(store_conn *c, void *arg)
{
    cp_url_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_cp_url_add, &st));
    TRY(sc_text(st, 1, a->issuer));
    TRY(sc_int(st, 2, a->part));
    TRY(sc_text(st, 3, a->url_now));
    TRY(sc_run(st, "record the CRL partition's distribution point"));
    sc_done(st);
    st = NULL;
    TRY(cp_url_get_tx(c, a));
out:
    sc_done(st);
    return rc;
}

kl_rc store_crlpart_url(store *s, const char *issuer, int64_t part, const char *url_now, char *out,
                        size_t outlen)
{
    if (!s || !issuer || part < 0 || !url_now || !out || outlen == 0) {
        return kl_fail(KL_EUSAGE, "store_crlpart_url: missing argument");
    }
    cp_url_arg a = {.issuer = issuer, .url_now = url_now, .part = part};
    kl_rc rc = store_read(s, cp_url_get_tx, &a);
    /* a write once per partition: the first certificate or CRL that names it */
    if (rc == KL_OK && !a.url) {
        rc = store_write(s, cp_url_add_tx, &a);
    }
    if (rc == KL_OK && (!a.url || strlen(a.url) >= outlen)) {
        rc = kl_fail(KL_EINTERNAL, "CRL partition %lld of %s: no distribution point recorded",
                     (long long)part, issuer);
    }
    if (rc == KL_OK) {
        memcpy(out, a.url, strlen(a.url) + 1);
    }
    free(a.url);
    return rc;
}
