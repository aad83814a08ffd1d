/* keyline-provision: the production order this station works under ([station] id), as the
 * dashboard and /metrics show it. keyline-cad decides (it counts every certificate against
 * the order in the issuing transaction); the station only shows what it last heard and refuses
 * to start devices it knows cannot be served. */
#include <stdio.h>
#include <string.h>

#include "st.h"

json_t *st_order_json(const st_station *st)
{
    const st_order_view *o = &st->order;
    if (!o->have) {
        return json_null();
    }
    long remaining = o->count - o->issued;
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:o}", "id", o->id, "model", o->model,
                     "state", o->state, "count", (json_int_t)o->count, "issued",
                     (json_int_t)o->issued, "remaining",
                     (json_int_t)(remaining > 0 ? remaining : 0), "expires", o->expires, "why",
                     o->why[0] ? json_string(o->why) : json_null());
}

kl_rc st_order_metrics(const st_station *st, kl_buf *out)
{
    const st_order_view *o = &st->order;
    if (!o->have) {
        return KL_OK;
    }
    long remaining = o->count - o->issued;
    return kl_buf_printf(out,
                         "# HELP keyline_station_order_remaining Devices the production order "
                         "still allows.\n# TYPE keyline_station_order_remaining gauge\n"
                         "keyline_station_order_remaining{order=\"%s\"} %ld\n"
                         "# HELP keyline_station_order_open 1 while the order allows devices.\n"
                         "# TYPE keyline_station_order_open gauge\n"
                         "keyline_station_order_open{order=\"%s\"} %d\n",
                         o->id, remaining > 0 ? remaining : 0, o->id,
                         strcmp(o->state, "open") == 0 && remaining > 0);
}

kl_rc st_order_close(st_station *st, const char *who)
{
    (void)who;
    pthread_mutex_lock(&st->mu);
    int have = st->order.have;
    pthread_mutex_unlock(&st->mu);
    if (!have) {
        return kl_fail(KL_ENOTFOUND, "this station works without a production order");
    }
    return kl_fail(KL_EINTERNAL, "order close: not reachable before orders exist");
}
