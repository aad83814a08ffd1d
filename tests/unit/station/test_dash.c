/* The dashboard's pieces that need no browser: the troubleshooting hints (each one word for
 * word in docs/station.md), the counters (devices per hour, first-pass yield, the failure
 * ring, the phase histogram), the state JSON and the /metrics text. argv[1]: docs/station.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_file.h"
#include "st.h"
#include "st_dash.h"

static const char *docs_path;

static void test_hints_in_docs(void **state)
{
    (void)state;
    uint8_t *doc = NULL;
    size_t len = 0;
    assert_int_equal(kl_file_read(docs_path, 1 << 20, &doc, &len), KL_OK);
    char *text = calloc(1, len + 1);
    assert_non_null(text);
    memcpy(text, doc, len);
    assert_true(st_hint_count() > 20);
    for (size_t i = 0; i < st_hint_count(); i++) {
        const char *pattern = NULL, *hint = st_hint_at(i, &pattern);
        if (!strstr(text, hint)) {
            fail_msg("hint %zu (%s) is not in %s: \"%s\"", i, pattern, docs_path, hint);
        }
        if (!strstr(text, pattern)) {
            fail_msg("pattern %zu is not a message docs/station.md lists: \"%s\"", i, pattern);
        }
    }
    free(text);
    free(doc);
    /* a message matches its row, more specific rows first */
    assert_string_equal(st_hint("device answered LOCK with ERROR REFUSED (no)"),
                        "fix the firmware's lock conditions");
    assert_string_equal(st_hint("device answered PUTCERT with ERROR STORAGE"),
                        "device-side fault: check the firmware/hardware; the device is resumable");
    assert_string_equal(st_hint("no answer to GETCSR after 4 attempts (timeout 5000 ms)"),
                        "re-seat the device: it resumes without a new certificate");
    assert_non_null(strstr(st_hint("something nobody wrote down"), "section 7"));
    assert_non_null(st_hint(NULL));
}

static st_outcome *outcome(const char *serial, int ok, int phase)
{
    static st_outcome o;
    memset(&o, 0, sizeof o);
    o.have_hello = 1;
    snprintf(o.hello.hw_serial, sizeof o.hello.hw_serial, "%s", serial);
    o.ok = ok;
    o.phase = phase;
    o.total_ms = 1000;
    o.ms[ST_PH_HELLO] = 5;
    o.ms[ST_PH_ISSUE] = 30; /* 0.03 s: bucket le 0.05 */
    o.ran = 1u << ST_PH_ISSUE;
    if (!ok) {
        snprintf(o.error, sizeof o.error, "no answer to LOCK after 4 attempts");
    }
    return &o;
}

static void test_stats(void **state)
{
    (void)state;
    st_stats s;
    memset(&s, 0, sizeof s);
    double fpy = -1;
    assert_int_equal(st_stats_fpy(&s, &fpy), 0);
    long long t0 = 1800000000000LL;
    st_stats_record(&s, "fx1", outcome("A", 1, ST_PH_LOCK), t0);
    st_stats_record(&s, "fx1", outcome("B", 0, ST_PH_LOCK), t0 + 1000);
    st_stats_record(&s, "fx2", outcome("B", 1, ST_PH_LOCK), t0 + 2000); /* a retry */
    st_stats_record(&s, "fx2", outcome("C", 1, ST_PH_LOCK), t0 + 3000);
    assert_int_equal(s.ok, 3);
    assert_int_equal(s.failed, 1);
    assert_int_equal(st_stats_fpy(&s, &fpy), 1);
    assert_true(fpy > 0.666 && fpy < 0.667); /* A and C first time, B only on the retry */
    /* 3 in the first 4 s: under a minute of history the rate is taken over a minute */
    assert_true(st_stats_per_hour(&s, t0 + 3000) > 179.9 &&
                st_stats_per_hour(&s, t0 + 3000) < 180.1);
    /* two hours later, nothing in the last hour */
    assert_true(st_stats_per_hour(&s, t0 + 2 * 3600 * 1000LL) == 0.0);
    assert_int_equal(s.fail_n, 1);
    assert_string_equal(s.fails[0].serial, "B");
    assert_string_equal(s.fails[0].hint,
                        "re-seat the device: it resumes without a new certificate");
    /* the histogram: 4 issue phases in the 0.05 s bucket, HELLO for every device */
    assert_int_equal(s.hist_n[ST_PH_ISSUE], 4);
    assert_int_equal(s.hist[ST_PH_ISSUE][2], 4);
    assert_int_equal(s.hist_n[ST_PH_HELLO], 4);
    assert_int_equal(s.hist_n[ST_PH_KEY], 0);
    /* the failure ring keeps the newest ST_FAILS_KEPT */
    for (int i = 0; i < ST_FAILS_KEPT + 3; i++) {
        char serial[16];
        snprintf(serial, sizeof serial, "F%d", i);
        st_stats_record(&s, "fx3", outcome(serial, 0, ST_PH_KEY), t0 + 5000 + i);
    }
    assert_int_equal(s.fail_n, ST_FAILS_KEPT);
    /* many devices: the serial set grows */
    for (int i = 0; i < 5000; i++) {
        char serial[16];
        snprintf(serial, sizeof serial, "M%d", i);
        st_stats_record(&s, "fx4", outcome(serial, 1, ST_PH_LOCK), t0 + 10000);
    }
    assert_int_equal(s.seen_n, 3 + ST_FAILS_KEPT + 3 + 5000);
    st_stats_free(&s);
}

/* A locked unit re-seated ("already-provisioned") made nothing: not provisioned, not in the
 * rate, not in the yield (the dashboard's counts are the store's). */
static void test_stats_already(void **state)
{
    (void)state;
    st_stats s;
    memset(&s, 0, sizeof s);
    double fpy = -1;
    long long t0 = 1800000000000LL;
    st_stats_record(&s, "fx1", outcome("A", 1, ST_PH_LOCK), t0);
    for (int i = 0; i < 2; i++) {
        st_outcome *o = outcome(i ? "OLD" : "A", 1, ST_PH_LOCK);
        o->action = "already-provisioned";
        st_stats_record(&s, "fx1", o, t0 + 1000 + i);
    }
    assert_int_equal(s.ok, 1);
    assert_int_equal(s.already, 2);
    assert_int_equal(s.seen_n, 1);
    assert_int_equal(st_stats_fpy(&s, &fpy), 1);
    assert_true(fpy == 1.0);
    assert_true(st_stats_per_hour(&s, t0 + 3000) > 59.9 && st_stats_per_hour(&s, t0 + 3000) < 60.1);
    st_stats_free(&s);
}

static void test_state_and_metrics(void **state)
{
    (void)state;
    st_station *st = calloc(1, sizeof *st);
    assert_non_null(st);
    pthread_mutex_init(&st->mu, NULL);
    snprintf(st->cfg.station_id, sizeof st->cfg.station_id, "line-7");
    snprintf(st->cfg.profile, sizeof st->cfg.profile, "station");
    snprintf(st->host, sizeof st->host, "h");
    st_fixture fx1 = {.st = st, .name = "fix\"1<b>", .phase = ST_PH_CSR, .state = ST_FX_WORKING};
    snprintf(fx1.serial, sizeof fx1.serial, "SN-1");
    fx1.step = "csr";
    fx1.t0_ms = st_now_ms() - 1500;
    st_fixture fx2 = {.st = st, .name = "fix2", .phase = -1, .state = ST_FX_PAUSED, .paused = 1};
    st->fx[0] = &fx1;
    st->fx[1] = &fx2;
    st->nfx = 2;
    st_stats_record(&st->stats, "fix2", outcome("X", 0, ST_PH_LOCK), st_unix_ms());
    st->order = (st_order_view){.have = 1,
                                .id = "O-1",
                                .model = "M",
                                .state = "open",
                                .count = 10,
                                .issued = 4,
                                .expires = "2027-01-01T00:00:00Z"};

    json_t *j = st_dash_state(st, 1, 0);
    assert_non_null(j);
    json_t *f = json_array_get(json_object_get(j, "fixtures"), 0);
    assert_string_equal(json_string_value(json_object_get(f, "name")), "fix\"1<b>");
    assert_string_equal(json_string_value(json_object_get(f, "state")), "working");
    assert_string_equal(json_string_value(json_object_get(f, "phase")), "csr");
    assert_true(json_integer_value(json_object_get(f, "elapsed_ms")) >= 1500);
    f = json_array_get(json_object_get(j, "fixtures"), 1);
    assert_string_equal(json_string_value(json_object_get(f, "state")), "paused");
    assert_true(json_is_true(json_object_get(f, "paused")));
    json_t *o = json_object_get(j, "order");
    assert_int_equal(json_integer_value(json_object_get(o, "remaining")), 6);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "counters"), "failed")),
                     1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(j, "failures"), 0), "serial")),
                        "X");
    json_decref(j);

    kl_buf b;
    kl_buf_init(&b, 1 << 20, 0);
    assert_int_equal(st_dash_metrics(st, &b), KL_OK);
    const char *txt = NULL;
    assert_int_equal(kl_buf_cstr(&b, &txt), KL_OK);
    assert_non_null(strstr(txt, "keyline_station_devices_total{outcome=\"failed\"} 1\n"));
    assert_non_null(strstr(txt, "keyline_station_fixtures{state=\"working\"} 1\n"));
    assert_non_null(strstr(txt, "keyline_station_fixtures{state=\"paused\"} 1\n"));
    assert_non_null(strstr(txt, "keyline_station_order_remaining{order=\"O-1\"} 6\n"));
    assert_non_null(strstr(
        txt, "keyline_station_phase_duration_seconds_bucket{phase=\"issue\",le=\"+Inf\"} 1\n"));
    kl_buf_free(&b);
    /* an expired (or closed) order allows nothing more, whatever is left of its count */
    snprintf(st->order.state, sizeof st->order.state, "expired");
    j = st_dash_state(st, 1, 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "order"), "remaining")),
                     0);
    json_decref(j);
    kl_buf_init(&b, 1 << 20, 0);
    assert_int_equal(st_dash_metrics(st, &b), KL_OK);
    assert_int_equal(kl_buf_cstr(&b, &txt), KL_OK);
    assert_non_null(strstr(txt, "keyline_station_order_remaining{order=\"O-1\"} 0\n"));
    assert_non_null(strstr(txt, "keyline_station_order_open{order=\"O-1\"} 0\n"));
    kl_buf_free(&b);
    st_stats_free(&st->stats);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

int main(int argc, char **argv)
{
    docs_path = argc > 1 ? argv[1] : "docs/station.md";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hints_in_docs),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_stats_already),
        cmocka_unit_test(test_state_and_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
