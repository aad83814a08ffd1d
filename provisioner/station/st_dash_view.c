/* keyline-provision: what the dashboard shows, as JSON (the page, /events, /state) and as
 * Prometheus text (/metrics). Both read the station under st->mu and nothing else. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kl_version.h"
#include "st.h"
#include "st_dash.h"

static json_t *st_jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *st_dash_last(const st_last *l)
{
    if (!l->have) {
        return json_null();
    }
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:I, s:I}", "outcome",
                     l->ok ? "ok" : "failed", "serial", l->serial, "cert_serial", l->cert_serial,
                     "action", st_jstr(l->action), "phase", st_phase_name(l->phase), "error",
                     l->ok ? json_null() : json_string(l->error), "hint", st_jstr(l->hint), "time",
                     (json_int_t)l->end_unix_ms, "total_ms", (json_int_t)l->total_ms);
}

static json_t *st_dash_fixture(const st_fixture *fx, long now)
{
    st_fx_state state = fx->exited ? ST_FX_GONE : fx->phase >= 0 ? ST_FX_WORKING : fx->state;
    int working = state == ST_FX_WORKING;
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:o, s:s, s:I, s:i, s:i, s:b, s:o}", "name",
                     fx->name, "state", st_fx_state_name(state), "serial",
                     working ? fx->serial : "", "phase", working ? st_phase_name(fx->phase) : "",
                     "phase_index", working ? fx->phase : -1, "step",
                     working ? st_jstr(fx->step) : json_null(), "status", fx->status, "elapsed_ms",
                     (json_int_t)(working ? now - fx->t0_ms : 0), "ok", (int)fx->n_ok, "failed",
                     (int)fx->n_fail, "paused", fx->paused, "last", st_dash_last(&fx->last));
}

static json_t *st_dash_failures(const st_stats *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->fail_n; i++) {
        /* newest first */
        const st_fail_rec *f = &s->fails[(s->fail_next + ST_FAILS_KEPT - 1 - i) % ST_FAILS_KEPT];
        json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "time",
                                           (json_int_t)f->unix_ms, "fixture", f->fixture, "serial",
                                           f->serial, "phase", st_phase_name(f->phase), "error",
                                           f->error, "hint", f->hint));
    }
    return a;
}

static json_t *st_dash_counters(const st_stats *s, long long now)
{
    double fpy = 0;
    int have_fpy = st_stats_fpy(s, &fpy);
    return json_pack("{s:I, s:I, s:I, s:I, s:f, s:o}", "provisioned", (json_int_t)s->ok, "failed",
                     (json_int_t)s->failed, "already_provisioned", (json_int_t)s->already,
                     "finished", (json_int_t)s->ok + s->failed + s->already, "per_hour",
                     st_stats_per_hour(s, now), "first_pass_yield",
                     have_fpy ? json_real(fpy) : json_null());
}

json_t *st_dash_state(st_station *st, int actions, int stopping)
{
    long long now_unix = st_unix_ms();
    long now = st_now_ms();
    json_t *phases = json_array();
    for (int p = 0; phases && p < ST_PH__COUNT; p++) {
        json_array_append_new(phases, json_string(st_phase_name(p)));
    }
    pthread_mutex_lock(&st->mu);
    json_t *fixtures = json_array();
    for (size_t i = 0; fixtures && i < st->nfx; i++) {
        json_array_append_new(fixtures, st_dash_fixture(st->fx[i], now));
    }
    json_t *j =
        json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:b, s:b}",
                  "station", "id", st->cfg.station_id, "host", st->host, "profile", st->cfg.profile,
                  "issuer", st->cfg.issuer, "mode", st_mode_name(st->cfg.mode), "now",
                  (json_int_t)now_unix, "started", (json_int_t)st->stats.started_unix_ms, "version",
                  (json_int_t)st->version, "counters", st_dash_counters(&st->stats, now_unix),
                  "phases", phases, "fixtures", fixtures, "failures", st_dash_failures(&st->stats),
                  "order", st_order_json(st), "actions", actions, "stopping", stopping || st->stop);
    pthread_mutex_unlock(&st->mu);
    return j;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

static kl_rc st_metrics_hist(const st_stats *s, kl_buf *out)
{
    kl_rc rc = KL_OK;
    TRY(kl_buf_printf(out, "# HELP keyline_station_phase_duration_seconds Time a device spent "
                           "in each phase.\n"
                           "# TYPE keyline_station_phase_duration_seconds histogram\n"));
    for (int p = 0; p < ST_PH__COUNT; p++) {
        unsigned long cum = 0;
        for (int b = 0; b <= ST_HIST_BUCKETS; b++) {
            char le[32];
            cum += s->hist[p][b];
            if (b < ST_HIST_BUCKETS) {
                snprintf(le, sizeof le, "%g", st_hist_le[b]);
            } else {
                snprintf(le, sizeof le, "+Inf");
            }
            TRY(kl_buf_printf(out,
                              "keyline_station_phase_duration_seconds_bucket{phase=\"%s\","
                              "le=\"%s\"} %lu\n",
                              st_phase_name(p), le, cum));
        }
        TRY(kl_buf_printf(out,
                          "keyline_station_phase_duration_seconds_sum{phase=\"%s\"} %.6f\n"
                          "keyline_station_phase_duration_seconds_count{phase=\"%s\"} %lu\n",
                          st_phase_name(p), s->hist_sum[p], st_phase_name(p), s->hist_n[p]));
    }
out:
    return rc;
}

static kl_rc st_metrics_locked(st_station *st, kl_buf *out)
{
    kl_rc rc = KL_OK;
    const st_stats *s = &st->stats;
    unsigned n[ST_FX__COUNT] = {0};
    for (size_t i = 0; i < st->nfx; i++) {
        const st_fixture *fx = st->fx[i];
        n[fx->exited ? ST_FX_GONE : fx->phase >= 0 ? ST_FX_WORKING : fx->state]++;
    }
    TRY(kl_buf_printf(out,
                      "# HELP keyline_build_info Version and git revision of this "
                      "keyline-provision.\n# TYPE keyline_build_info gauge\n"
                      "keyline_build_info{version=\"%s\",revision=\"%s\"} 1\n",
                      KL_VERSION, KL_REVISION));
    TRY(kl_buf_printf(out,
                      "# HELP keyline_station_devices_total Devices this station finished, by "
                      "outcome.\n# TYPE keyline_station_devices_total counter\n"
                      "keyline_station_devices_total{outcome=\"ok\"} %ld\n"
                      "keyline_station_devices_total{outcome=\"failed\"} %ld\n",
                      s->ok + s->already, s->failed));
    TRY(st_metrics_hist(s, out));
    TRY(kl_buf_printf(out, "# HELP keyline_station_fixtures Fixtures by state.\n"
                           "# TYPE keyline_station_fixtures gauge\n"));
    for (int i = 0; i < ST_FX__COUNT; i++) {
        TRY(kl_buf_printf(out, "keyline_station_fixtures{state=\"%s\"} %u\n",
                          st_fx_state_name((st_fx_state)i), n[i]));
    }
    TRY(st_order_metrics(st, out));
out:
    return rc;
}

kl_rc st_dash_metrics(st_station *st, kl_buf *out)
{
    pthread_mutex_lock(&st->mu);
    kl_rc rc = st_metrics_locked(st, out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}
