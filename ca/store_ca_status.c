/* keyline: a CA record's status and its audit entry in one write transaction (ca_retire:
 * "active" -> "retired"). Written once for every driver (store_db.h). */
#include <stdio.h>
#include <string.h>

#include "store_db.h"

static const store_q q_ca_status = {"UPDATE cas SET status = ?2 WHERE label = ?1 AND status = ?3",
                                    NULL};

typedef struct {
    const char *label, *from, *to, *actor, *action, *detail;
} ca_status_arg;

static kl_rc ca_status_tx(store_conn *c, void *arg)
{
    const ca_status_arg *a = arg;
    db_stmt *st = NULL;
    kl_rc rc = KL_OK;
    TRY(sc_stmt(c, &q_ca_status, &st));
    TRY(sc_text(st, 1, a->label));
    TRY(sc_text(st, 2, a->to));
    TRY(sc_text(st, 3, a->from));
    TRY(sc_run(st, "set CA status"));
    /* compare and set: another officer's command may have changed it meanwhile */
    ENSURE(sc_changes(st) == 1, KL_EPOLICY, "CA '%s' is not %s (unknown, or changed meanwhile)",
           a->label, a->from);
    TRY(st_audit_append_tx(c, a->actor, a->action, a->detail));
out:
    sc_done(st);
    return rc;
}

kl_rc store_ca_status_set(store *s, const char *label, const char *from, const char *to,
                          const char *actor, const char *action, const char *detail)
{
    if (!s || !label || !*label || !from || !to || !*to || !action || !*action) {
        return kl_fail(KL_EUSAGE, "store_ca_status_set: missing argument");
    }
    ca_status_arg a = {label, from, to, actor ? actor : "keyline", action, detail ? detail : ""};
    return store_write(s, ca_status_tx, &a);
}
