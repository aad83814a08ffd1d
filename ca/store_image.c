/* keyline: firmware image signings in the store (the images table, schema step 7; written once
 * for every driver: store_db.h). A signing is recorded with its audit entry "sign-image" in one
 * write transaction, before keyline-ca releases the signed image (ca_image.c). Rows are never
 * changed or deleted (the schema's triggers). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_db.h"

#define IMG_COLS                                                                                   \
    "id, sha256, format, version, security_counter, key_label, key_serial, key_hash, size,"        \
    " actor, created"

static const store_q q_img_insert = {
    "INSERT INTO images (sha256, format, version, security_counter, key_label, key_serial,"
    " key_hash, size, actor, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    NULL};
static const store_q q_img_list = {"SELECT " IMG_COLS " FROM images WHERE id >= ?1 ORDER BY id",
                                   NULL};

typedef struct {
    const store_image *img;
    const char *detail;
} img_put_arg;

static kl_rc img_put_tx(store_conn *c, void *arg)
{
    const img_put_arg *a = arg;
    const store_image *m = a->img;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_img_insert, &st));
    TRY(sc_text(st, 1, m->sha256));
    TRY(sc_text(st, 2, m->format));
    TRY(sc_text(st, 3, m->version));
    TRY(m->security_counter < 0 ? sc_null(st, 4) : sc_int(st, 4, m->security_counter));
    TRY(sc_text(st, 5, m->key_label));
    TRY(sc_text(st, 6, m->key_serial));
    TRY(sc_text(st, 7, m->key_hash));
    TRY(sc_int(st, 8, m->size));
    TRY(sc_text(st, 9, m->actor));
    TRY(sc_int(st, 10, (int64_t)time(NULL)));
    TRY(sc_run(st, "record image signing"));
    TRY(st_audit_append_tx(c, m->actor, "sign-image", a->detail));
out:
    sc_done(st);
    return rc;
}

static int img_hex64(const char *s)
{
    return s && strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

kl_rc store_image_put(store *s, const store_image *img, const char *detail)
{
    kl_rc rc = KL_OK;
    ENSURE(s && img && detail, KL_EUSAGE, "store_image_put: missing argument");
    ENSURE(img_hex64(img->sha256) && img_hex64(img->key_hash), KL_EUSAGE,
           "store_image_put: hashes are 64 lower-case hex digits");
    ENSURE(img->format && (strcmp(img->format, "mcuboot") == 0 || strcmp(img->format, "cms") == 0),
           KL_EUSAGE, "store_image_put: format is mcuboot or cms");
    ENSURE(img->version && *img->version && img->key_label && *img->key_label && img->key_serial &&
               img->actor && *img->actor && img->size >= 0 && img->security_counter <= 0xffffffffLL,
           KL_EUSAGE, "store_image_put: incomplete record");
    img_put_arg a = {img, detail};
    TRY(store_write(s, img_put_tx, &a));
out:
    return rc;
}

static int row_image(db_stmt *st, void *out)
{
    store_image *m = out;
    int bad = 0;
    memset(m, 0, sizeof *m);
    m->id = col_int(st, 0);
    bad |= col_str(st, 1, &m->sha256);
    bad |= col_str(st, 2, &m->format);
    bad |= col_str(st, 3, &m->version);
    m->security_counter = col_isnull(st, 4) ? -1 : col_int(st, 4);
    bad |= col_str(st, 5, &m->key_label);
    bad |= col_str(st, 6, &m->key_serial);
    bad |= col_str(st, 7, &m->key_hash);
    m->size = col_int(st, 8);
    bad |= col_str(st, 9, &m->actor);
    m->created = col_time(st, 10);
    if (bad) {
        store_image_free(m);
    }
    return bad;
}

kl_rc store_image_list(store *s, store_image **out, size_t *np)
{
    void *v = NULL;
    size_t n = 0;
    int64_t from = 0;
    *out = NULL;
    *np = 0;
    if (!s) {
        return kl_fail(KL_EUSAGE, "store_image_list: no store");
    }
    kl_rc rc =
        store_collect(s, &q_img_list, &from, sizeof **out, 16, row_image, "list images", &v, &n);
    if (rc != KL_OK) {
        store_image_list_free(v, n);
        return rc;
    }
    *out = v;
    *np = n;
    return KL_OK;
}

void store_image_free(store_image *m)
{
    if (!m) {
        return;
    }
    free(m->sha256);
    free(m->format);
    free(m->version);
    free(m->key_label);
    free(m->key_serial);
    free(m->key_hash);
    free(m->actor);
    memset(m, 0, sizeof *m);
}

void store_image_list_free(store_image *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_image_free(&v[i]);
    }
    free(v);
}
