/* keyline-provision: the production order this station works under ([station] id), as the
 * dashboard and /metrics show it. keyline-cad decides (it counts every certificate against
 * the order in the issuing transaction); the station only shows what it last heard and refuses
 * to start devices it knows cannot be served. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "st.h"

/* What the order still allows: none once it is closed or expired, whatever is left of its
 * count (a monitoring alert on "remaining" must not see 7 units of a closed order). */
static long st_order_remaining(const st_order_view *o)
{
    long left = o->count - o->issued;
    return strcmp(o->state, "open") == 0 && left > 0 ? left : 0;
}

json_t *st_order_json(const st_station *st)
{
    const st_order_view *o = &st->order;
    if (!o->have) {
        return json_null();
    }
    long remaining = st_order_remaining(o);
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:o}", "id", o->id, "model", o->model,
                     "state", o->state, "count", (json_int_t)o->count, "issued",
                     (json_int_t)o->issued, "remaining", (json_int_t)remaining, "expires",
                     o->expires, "why", o->why[0] ? json_string(o->why) : json_null());
}

kl_rc st_order_metrics(const st_station *st, kl_buf *out)
{
    const st_order_view *o = &st->order;
    if (!o->have || strcmp(o->state, "missing") == 0) {
        return KL_OK;
    }
    long remaining = st_order_remaining(o);
    return kl_buf_printf(out,
                         "# HELP keyline_station_order_remaining Devices the production order "
                         "still allows.\n# TYPE keyline_station_order_remaining gauge\n"
                         "keyline_station_order_remaining{order=\"%s\"} %ld\n"
                         "# HELP keyline_station_order_open 1 while the order allows devices.\n"
                         "# TYPE keyline_station_order_open gauge\n"
                         "keyline_station_order_open{order=\"%s\"} %d\n",
                         o->id, remaining, o->id, remaining > 0);
}

/* What keyline-cad's answer says about the order for `model` ("" for any), into v. */
static kl_rc st_order_parse(const st_station *st, const cap_msg *m, const char *model,
                            st_order_view *v)
{
    kl_rc rc = KL_OK;
    char state[16];
    memset(v, 0, sizeof *v);
    TRY(cap_get_str(m, CAP_T_STATE, state, sizeof state));
    if (strcmp(state, "missing") == 0) {
        /* the profile issues only under orders and this station has none: nothing can be made */
        v->have = 1;
        snprintf(v->state, sizeof v->state, "%s", state);
        snprintf(v->id, sizeof v->id, "-");
        snprintf(v->model, sizeof v->model, "%s", model[0] ? model : "-");
        snprintf(v->why, sizeof v->why,
                 "station %s has no production order (profile %s): no device is started",
                 st->cfg.station_id, st->cfg.profile);
    } else if (strcmp(state, "none") != 0) {
        v->have = 1;
        snprintf(v->state, sizeof v->state, "%s", state);
        TRY(cap_get_str(m, CAP_T_ORDER, v->id, sizeof v->id));
        TRY(cap_get_str(m, CAP_T_MODEL, v->model, sizeof v->model));
        v->count = (long)cap_get_u64(m, CAP_T_COUNT, 0);
        v->issued = (long)cap_get_u64(m, CAP_T_ISSUED, 0);
        time_t exp = (time_t)cap_get_u64(m, CAP_T_EXPIRES, 0);
        struct tm tm;
        gmtime_r(&exp, &tm);
        strftime(v->expires, sizeof v->expires, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (strcmp(state, "open") != 0) {
            snprintf(v->why, sizeof v->why,
                     "production order %s is %s (%ld of %ld issued): no device is started", v->id,
                     state, v->issued, v->count);
        } else if (model[0] && strcmp(model, v->model) != 0) {
            /* keyline-cad answers with an order for the model when there is one */
            snprintf(v->why, sizeof v->why,
                     "station %s has no production order for model '%.64s': no device of it "
                     "is started",
                     st->cfg.station_id, model);
        }
    }
    v->checked_ms = st_now_ms();
out:
    return rc;
}

/* Ask keyline-cad for the station's order for `model` ("" for any) into v; no shared state. */
static kl_rc st_order_fetch(st_station *st, const char *model, st_order_view *v)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    kl_buf_init(&req, 1024, 0);
    memset(&resp, 0, sizeof resp);
    TRY(cap_msg_begin(&req, CAP_OP_ORDER, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_put_str(&req, CAP_T_STATION, st->cfg.station_id));
    if (model[0]) {
        TRY(cap_put_str(&req, CAP_T_MODEL, model));
    }
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    TRY(st_order_parse(st, &resp.msg, model, v));
out:
    if (rc != KL_OK) {
        kl_wrap(rc, "production order of station %s", st->cfg.station_id);
    }
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

/* What the dashboard shows: v, the order for the model last on the line. */
static void st_order_publish(st_station *st, const st_order_view *v, const char *model)
{
    pthread_mutex_lock(&st->mu);
    int changed = memcmp(&st->order, v, offsetof(st_order_view, checked_ms)) != 0;
    st->order = *v;
    snprintf(st->order_model, sizeof st->order_model, "%s", model);
    st->version += changed;
    pthread_mutex_unlock(&st->mu);
}

kl_rc st_order_refresh(st_station *st)
{
    char model[sizeof st->order_model];
    st_order_view v;
    if (!st->cfg.station_id[0]) {
        return KL_OK;
    }
    pthread_mutex_lock(&st->mu);
    snprintf(model, sizeof model, "%s", st->order_model);
    pthread_mutex_unlock(&st->mu);
    kl_rc rc = st_order_fetch(st, model, &v);
    if (rc == KL_OK) {
        st_order_publish(st, &v, model);
    }
    return rc;
}

/* Whether the device would take a unit of the order (a new certificate). One that resumes its
 * pending certificate (vanished, replugged, station restarted: its unit was taken at issue) or
 * is locked with its own takes none, so it may finish whatever the order's state. 1 when
 * keyline-cad cannot tell. */
static int st_order_needs_unit(st_station *st, const st_hello *h)
{
    st_known k;
    st_plan plan;
    X509 *certs[ST_MAX_KNOWN];
    kl_rc rc = st_known_load(st, h->hw_serial, &k, certs);
    for (size_t i = 0; i < ST_MAX_KNOWN; i++) {
        X509_free(certs[i]);
    }
    if (rc != KL_OK) {
        return 1;
    }
    st_plan_decide(h, &k, st->cfg.mode, st->reprovision, st->reprovision_reason, &plan);
    return plan.nrevoke || (plan.action != ST_ACT_RESUME && plan.action != ST_ACT_ACTIVATE &&
                            plan.action != ST_ACT_ALREADY);
}

kl_rc st_order_gate(st_station *st, const st_hello *h)
{
    st_order_view v;
    if (!st->cfg.station_id[0]) {
        return KL_OK;
    }
    /* this device's model's order, decided on this call's answer (other fixtures ask too) */
    kl_rc rc = st_order_fetch(st, h->model, &v);
    if (rc != KL_OK) {
        return rc;
    }
    st_order_publish(st, &v, h->model);
    if (v.why[0] && st_order_needs_unit(st, h)) {
        return kl_fail(KL_EPOLICY, "%s", v.why);
    }
    return KL_OK;
}

kl_rc st_order_close(st_station *st, const char *want, const char *who)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    char id[40];
    kl_buf_init(&req, 1024, 0);
    memset(&resp, 0, sizeof resp);
    pthread_mutex_lock(&st->mu);
    int have = st->order.have && strcmp(st->order.state, "missing") != 0;
    snprintf(id, sizeof id, "%s", st->order.id);
    pthread_mutex_unlock(&st->mu);
    ENSURE(have, KL_ENOTFOUND, "this station has no production order");
    /* the order the operator confirmed, not whichever the station shows by now (a new order
     * may have replaced it between the page's last update and the click) */
    ENSURE(strcmp(want, id) == 0, KL_EEXIST,
           "the station works under production order %s now, not %s: nothing closed", id, want);
    TRY(cap_msg_begin(&req, CAP_OP_ORDER_CLOSE, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_put_str(&req, CAP_T_STATION, st->cfg.station_id));
    TRY(cap_put_str(&req, CAP_T_ORDER, id));
    TRY(cap_put_str(&req, CAP_T_AUTH_USER, who)); /* for keyline-cad's audit entry */
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    st_event(st, 0, "production order %s closed by %s on the dashboard", id, who);
    TRY(st_order_refresh(st));
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}
