/* keyline-estd: Prometheus text exposition (version 0.0.4). Counters are atomics: no lock on
 * the request path. */
#include <stdio.h>
#include <string.h>

#include "est.h"
#include "kl_version.h"

static const int est_metric_codes[EST_METRIC_CODES] = {200, 202, 400, 401, 403, 404, 405,
                                                       408, 413, 415, 500, 501, 503, 0};
static const double est_hist_le[EST_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,   0.25,   0.5,   1.0,  2.5,   5.0};

void est_metrics_init(est_metrics *m)
{
    for (int e = 0; e < EST_EP__COUNT; e++) {
        for (int c = 0; c < EST_METRIC_CODES; c++) {
            atomic_init(&m->requests[e][c], 0);
        }
    }
    for (int b = 0; b < EST_HIST_BUCKETS; b++) {
        atomic_init(&m->issue_bucket[b], 0);
    }
    atomic_init(&m->issue_count, 0);
    atomic_init(&m->issue_sum_us, 0);
    atomic_init(&m->hsm_errors, 0);
    atomic_init(&m->cad_errors, 0);
    atomic_init(&m->inflight, 0);
    atomic_init(&m->conns_cut, 0);
}

void est_metrics_request(est_metrics *m, est_endpoint ep, int status)
{
    int c = EST_METRIC_CODES - 1; /* "other" */
    for (int i = 0; i < EST_METRIC_CODES - 1; i++) {
        if (est_metric_codes[i] == status) {
            c = i;
            break;
        }
    }
    if (ep < 0 || ep >= EST_EP__COUNT) {
        ep = EST_EP_OTHER;
    }
    atomic_fetch_add_explicit(&m->requests[ep][c], 1, memory_order_relaxed);
}

void est_metrics_issue(est_metrics *m, double seconds)
{
    for (int b = 0; b < EST_HIST_BUCKETS; b++) {
        if (seconds <= est_hist_le[b]) {
            atomic_fetch_add_explicit(&m->issue_bucket[b], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&m->issue_sum_us, (uint_fast64_t)(seconds * 1e6),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->issue_count, 1, memory_order_relaxed);
}

void est_metrics_hsm_error(est_metrics *m)
{
    atomic_fetch_add_explicit(&m->hsm_errors, 1, memory_order_relaxed);
}

void est_metrics_cad_error(est_metrics *m)
{
    atomic_fetch_add_explicit(&m->cad_errors, 1, memory_order_relaxed);
}

void est_metrics_conns_cut(est_metrics *m, size_t n)
{
    atomic_fetch_add_explicit(&m->conns_cut, (uint_fast64_t)n, memory_order_relaxed);
}

kl_rc est_metrics_render(est_metrics *m, kl_buf *out)
{
    kl_rc rc = KL_OK;
    /* The usual Prometheus idiom: a constant 1 whose labels say what is running. */
    TRY(kl_buf_printf(out,
                      "# HELP keyline_build_info Version and git revision of this keyline-estd.\n"
                      "# TYPE keyline_build_info gauge\n"
                      "keyline_build_info{version=\"%s\",revision=\"%s\"} 1\n",
                      KL_VERSION, KL_REVISION));
    TRY(kl_buf_put_str(out, "# HELP keyline_est_requests_total EST server requests by endpoint "
                            "and HTTP status.\n"
                            "# TYPE keyline_est_requests_total counter\n"));
    for (int e = 0; e < EST_EP__COUNT; e++) {
        for (int c = 0; c < EST_METRIC_CODES; c++) {
            uint_fast64_t v = atomic_load_explicit(&m->requests[e][c], memory_order_relaxed);
            if (!v) {
                continue;
            }
            char code[8] = "other";
            if (est_metric_codes[c]) {
                snprintf(code, sizeof code, "%d", est_metric_codes[c]);
            }
            TRY(kl_buf_printf(out, "keyline_est_requests_total{endpoint=\"%s\",code=\"%s\"} %llu\n",
                              est_endpoint_name((est_endpoint)e), code, (unsigned long long)v));
        }
    }
    TRY(kl_buf_put_str(out, "# HELP keyline_est_issue_seconds Time an enrollment's issue request "
                            "to keyline-cad took (its ca_issue() and the round trip).\n"
                            "# TYPE keyline_est_issue_seconds histogram\n"));
    /* Read the count first: buckets may run slightly ahead of it, never behind +Inf. */
    uint_fast64_t count = atomic_load_explicit(&m->issue_count, memory_order_relaxed);
    uint_fast64_t cum = 0;
    for (int b = 0; b < EST_HIST_BUCKETS; b++) {
        cum += atomic_load_explicit(&m->issue_bucket[b], memory_order_relaxed);
        if (cum > count) {
            count = cum;
        }
        TRY(kl_buf_printf(out, "keyline_est_issue_seconds_bucket{le=\"%g\"} %llu\n", est_hist_le[b],
                          (unsigned long long)cum));
    }
    TRY(kl_buf_printf(out, "keyline_est_issue_seconds_bucket{le=\"+Inf\"} %llu\n",
                      (unsigned long long)count));
    TRY(kl_buf_printf(out, "keyline_est_issue_seconds_sum %.6f\n",
                      (double)atomic_load_explicit(&m->issue_sum_us, memory_order_relaxed) / 1e6));
    TRY(kl_buf_printf(out, "keyline_est_issue_seconds_count %llu\n", (unsigned long long)count));
    TRY(kl_buf_printf(
        out,
        "# HELP keyline_est_hsm_errors_total Requests that failed in the HSM (keyline-cad's "
        "token).\n"
        "# TYPE keyline_est_hsm_errors_total counter\n"
        "keyline_est_hsm_errors_total %llu\n",
        (unsigned long long)atomic_load_explicit(&m->hsm_errors, memory_order_relaxed)));
    TRY(kl_buf_printf(
        out,
        "# HELP keyline_est_cad_errors_total Requests answered 503 because keyline-cad could not "
        "be reached, did not answer in time, or its store failed.\n"
        "# TYPE keyline_est_cad_errors_total counter\n"
        "keyline_est_cad_errors_total %llu\n",
        (unsigned long long)atomic_load_explicit(&m->cad_errors, memory_order_relaxed)));
    TRY(kl_buf_printf(
        out,
        "# HELP keyline_est_requests_in_flight Requests being processed.\n"
        "# TYPE keyline_est_requests_in_flight gauge\n"
        "keyline_est_requests_in_flight %llu\n",
        (unsigned long long)atomic_load_explicit(&m->inflight, memory_order_relaxed)));
    TRY(kl_buf_printf(
        out,
        "# HELP keyline_est_connections_cut_total Connections closed because a request on them "
        "was not complete within request-timeout (slow or stalled clients).\n"
        "# TYPE keyline_est_connections_cut_total counter\n"
        "keyline_est_connections_cut_total %llu\n",
        (unsigned long long)atomic_load_explicit(&m->conns_cut, memory_order_relaxed)));
out:
    return rc;
}
