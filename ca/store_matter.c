/* keyline: Matter onboarding data in the store (see store_matter.h; written once for every
 * driver: store_db.h). */
#include "store_matter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_matter.h"
#include "matter_seal.h"
#include "store_db.h"

#define MT_COLS                                                                                    \
    "device_id, cert_serial, discriminator, iterations, salt, verifier, updated, passcode_sealed"

static const store_q q_mt_put = {
    "INSERT INTO matter_onboarding (" MT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    " ON CONFLICT (device_id) DO UPDATE SET cert_serial = excluded.cert_serial,"
    " discriminator = excluded.discriminator, iterations = excluded.iterations,"
    " salt = excluded.salt, verifier = excluded.verifier, updated = excluded.updated,"
    " passcode_sealed = excluded.passcode_sealed",
    NULL};
static const store_q q_mt_seen = {
    "SELECT m.cert_serial, c.status FROM matter_onboarding m"
    " LEFT JOIN certs c ON c.serial = m.cert_serial WHERE m.device_id = ?1",
    NULL};
static const store_q q_mt_get = {"SELECT " MT_COLS " FROM matter_onboarding WHERE device_id = ?1",
                                 NULL};

typedef struct {
    const store_matter *m;
    const char *actor;
    const store_device_seen *seen; /* NULL: no compare */
} mt_put_arg;

static kl_rc mt_put_tx(store_conn *c, void *arg)
{
    const mt_put_arg *a = arg;
    const store_matter *m = a->m;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    char detail[384];
    if (a->seen) {
        TRY(st_row_seen_tx(c, &q_mt_seen, m->device_id, "Matter onboarding data", a->seen));
    }
    TRY(sc_stmt(c, &q_mt_put, &st));
    TRY(sc_text(st, 1, m->device_id));
    TRY(sc_text(st, 2, m->cert_serial));
    TRY(sc_int(st, 3, m->discriminator));
    TRY(sc_int(st, 4, m->iterations));
    TRY(sc_blob(st, 5, m->salt, m->salt_len));
    TRY(sc_blob(st, 6, m->verifier, m->verifier_len));
    TRY(sc_int(st, 7, (int64_t)time(NULL)));
    TRY(m->passcode_sealed ? sc_blob(st, 8, m->passcode_sealed, m->passcode_sealed_len)
                           : sc_null(st, 8));
    TRY(sc_run(st, "record Matter onboarding data"));
    snprintf(detail, sizeof detail, "device %.128s, DAC %.64s, discriminator %lld%s", m->device_id,
             m->cert_serial, (long long)m->discriminator,
             m->passcode_sealed ? ", passcode sealed to " MATTER_PASSCODE_KEY : "");
    TRY(st_audit_append_tx(c, a->actor, "matter-onboarding", detail));
out:
    sc_done(st);
    return rc;
}

kl_rc store_matter_put(store *s, const store_matter *m, const char *actor)
{
    return store_matter_put_if(s, m, actor, NULL);
}

kl_rc store_matter_put_if(store *s, const store_matter *m, const char *actor,
                          const store_device_seen *seen)
{
    kl_rc rc = KL_OK;
    ENSURE(s && m && actor && *actor, KL_EUSAGE, "store_matter_put: missing argument");
    ENSURE(m->device_id && *m->device_id && strlen(m->device_id) <= 128 && m->cert_serial &&
               *m->cert_serial && strlen(m->cert_serial) <= 64,
           KL_EUSAGE, "store_matter_put: device id or certificate serial missing");
    ENSURE(m->discriminator >= 0 && m->discriminator <= 0xfff &&
               m->iterations >= KL_MATTER_ITER_MIN && m->iterations <= KL_MATTER_ITER_MAX,
           KL_EUSAGE, "store_matter_put: discriminator or iterations out of range");
    ENSURE(m->salt && m->salt_len >= 16 && m->salt_len <= 32 && m->verifier &&
               m->verifier_len == STORE_MATTER_VERIFIER_LEN && m->verifier[32] == 0x04,
           KL_EUSAGE, "store_matter_put: salt or verifier malformed");
    /* what matter_passcode_seal writes (version 2); a version 1 value is only ever read */
    ENSURE(!m->passcode_sealed || m->passcode_sealed_len == MATTER_SEAL_LEN, KL_EUSAGE,
           "store_matter_put: sealed passcode malformed");
    mt_put_arg a = {m, actor, seen};
    TRY(store_write(s, mt_put_tx, &a));
out:
    return rc;
}

static int row_matter(db_stmt *st, void *out)
{
    store_matter *m = out;
    int bad = 0;
    memset(m, 0, sizeof *m);
    bad |= col_str(st, 0, &m->device_id);
    bad |= col_str(st, 1, &m->cert_serial);
    m->discriminator = col_int(st, 2);
    m->iterations = col_int(st, 3);
    bad |= col_bytes(st, 4, &m->salt, &m->salt_len);
    bad |= col_bytes(st, 5, &m->verifier, &m->verifier_len);
    m->updated = col_time(st, 6);
    if (!col_isnull(st, 7)) {
        bad |= col_bytes(st, 7, &m->passcode_sealed, &m->passcode_sealed_len);
    }
    if (bad) {
        store_matter_free(m);
    }
    return bad;
}

kl_rc store_matter_get(store *s, const char *device_id, store_matter *out)
{
    int found = 0;
    if (!s || !device_id || !out) {
        return kl_fail(KL_EUSAGE, "store_matter_get: missing argument");
    }
    memset(out, 0, sizeof *out);
    kl_rc rc = store_get_row(s, &q_mt_get, device_id, row_matter, out,
                             "read Matter onboarding data", &found);
    if (rc == KL_OK && !found) {
        rc = kl_fail(KL_ENOTFOUND, "no Matter onboarding data for device %s", device_id);
    }
    return rc;
}

void store_matter_free(store_matter *m)
{
    if (!m) {
        return;
    }
    free(m->device_id);
    free(m->cert_serial);
    free(m->salt);
    free(m->verifier);
    free(m->passcode_sealed);
    memset(m, 0, sizeof *m);
}
