/* keyline: CA records in the store (written once for every driver: store_db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_audit.h"
#include "store_db.h"

#define CA_COLS "label, template, parent, key_type, der, status, created"

static const store_q q_ca_put = {
    "INSERT INTO cas (" CA_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", NULL};
static const store_q q_ca_recert = {"UPDATE cas SET der = ?2 WHERE label = ?1", NULL};
static const store_q q_ca_get = {"SELECT " CA_COLS " FROM cas WHERE label = ?1", NULL};
static const store_q q_ca_list = {"SELECT " CA_COLS " FROM cas ORDER BY created, rowid",
                                  "SELECT " CA_COLS " FROM cas ORDER BY created, id"};

static int row_ca(db_stmt *st, void *out)
{
    store_ca *c = out;
    int bad = 0;
    memset(c, 0, sizeof *c);
    bad |= col_str(st, 0, &c->label);
    bad |= col_str(st, 1, &c->template_name);
    bad |= col_str(st, 2, &c->parent);
    bad |= col_str(st, 3, &c->key_type);
    bad |= col_bytes(st, 4, &c->der, &c->der_len);
    bad |= col_str(st, 5, &c->status);
    c->created = col_time(st, 6);
    if (bad) {
        store_ca_free(c);
    }
    return bad;
}

static kl_rc ca_put_tx(store_conn *c, void *arg)
{
    const store_ca *ca = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[512];
    char *full = NULL; /* detail with the certificate's hash (store_audit.h) */

    TRY(sc_stmt(c, &q_ca_put, &st));
    TRY(sc_text(st, 1, ca->label));
    TRY(sc_text(st, 2, ca->template_name));
    TRY(sc_text(st, 3, ca->parent));
    TRY(sc_text(st, 4, ca->key_type));
    TRY(sc_blob(st, 5, ca->der, ca->der_len));
    TRY(sc_text(st, 6, ca->status ? ca->status : "active"));
    TRY(sc_int(st, 7, (int64_t)(ca->created ? ca->created : time(NULL))));
    rc = sc_run(st, "add CA");
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "a CA labelled '%s' already exists", ca->label);
    } else if (rc == KL_EINPUT && c->d->err == DB_E_FOREIGN) {
        rc = kl_fail(KL_ENOTFOUND, "parent CA '%s' of '%s' is not in the store",
                     ca->parent ? ca->parent : "", ca->label);
    }
    TRY(rc);
    snprintf(detail, sizeof detail, "label=%s parent=%s template=%s key=%s", ca->label,
             ca->parent ? ca->parent : "-", ca->template_name ? ca->template_name : "-",
             ca->key_type ? ca->key_type : "-");
    TRY(store_audit_detail_ca(ca->label, ca->der, ca->der_len, detail, &full));
    TRY(st_audit_append_tx(c, "keyline", "ca-create", full));
out:
    free(full);
    sc_done(st);
    return rc;
}

kl_rc st_ca_put(store *s, const store_ca *ca)
{
    return store_write(s, ca_put_tx, (void *)ca);
}

typedef struct {
    const char *label;
    const uint8_t *der;
    size_t len;
    const char *actor, *action, *detail;
} ca_recert_arg;

static kl_rc ca_recert_tx(store_conn *c, void *arg)
{
    const ca_recert_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char *full = NULL;
    TRY(sc_stmt(c, &q_ca_recert, &st));
    TRY(sc_text(st, 1, a->label));
    TRY(sc_blob(st, 2, a->der, a->len));
    TRY(sc_run(st, "renew CA certificate"));
    ENSURE(sc_changes(st) == 1, KL_ENOTFOUND, "no CA labelled '%s'", a->label);
    TRY(store_audit_detail_ca(a->label, a->der, a->len, a->detail, &full));
    TRY(st_audit_append_tx(c, a->actor, a->action, full));
out:
    free(full);
    sc_done(st);
    return rc;
}

kl_rc st_ca_recert(store *s, const char *label, const uint8_t *der, size_t len, const char *actor,
                   const char *action, const char *detail)
{
    ca_recert_arg a = {label, der, len, actor, action, detail};
    return store_write(s, ca_recert_tx, &a);
}

typedef struct {
    const store_ca *cas;
    size_t n;
    const char *actor, *action, *detail;
} ca_put_all_arg;

static kl_rc ca_put_all_tx(store_conn *c, void *arg)
{
    const ca_put_all_arg *a = arg;
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < a->n; i++) {
        TRY(ca_put_tx(c, (void *)&a->cas[i]));
    }
    TRY(st_audit_append_tx(c, a->actor, a->action, a->detail));
out:
    return rc;
}

kl_rc st_ca_put_all(store *s, const store_ca *cas, size_t n, const char *actor, const char *action,
                    const char *detail)
{
    ca_put_all_arg a = {cas, n, actor, action, detail};
    return store_write(s, ca_put_all_tx, &a); /* one savepoint: all rows or none */
}

kl_rc st_ca_get(store *s, const char *label, store_ca *out)
{
    kl_rc rc = KL_OK;
    int found = 0;
    TRY(store_get_row(s, &q_ca_get, label, row_ca, out, "read CA", &found));
    ENSURE(found, KL_ENOTFOUND, "no CA labelled '%s'", label);
out:
    return rc;
}

kl_rc st_ca_list(store *s, store_ca **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    /* the reader connection: every issuance lists the CAs (ca_subject_check), and must not
     * wait for the group commit in progress */
    kl_rc rc = store_collect_get(s, &q_ca_list, NULL, sizeof **out, 8, row_ca, "list CAs", &v, &n);
    if (rc != KL_OK) {
        store_ca_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}
