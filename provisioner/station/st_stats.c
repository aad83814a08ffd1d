/* keyline-provision: the counters the dashboard and /metrics show (st.h, st_stats). The
 * caller holds st->mu. Hardware serials are kept as 64-bit hashes only, for the first-pass
 * yield: a collision between two serials (about 1 in 10^10 for 100,000 devices) would count
 * the second one's first attempt as a retry. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st.h"

const double st_hist_le[ST_HIST_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                            1.0,  2.5,   5.0,  10,  30};

long long st_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t st_serial_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h ? h : 1;
}

/* 1 when the serial was not seen before (and is now), 0 when it was, -1 out of memory. */
static int st_seen_add(st_stats *s, const char *serial)
{
    if (2 * (s->seen_n + 1) > s->seen_cap) {
        size_t cap = s->seen_cap ? 2 * s->seen_cap : 1024;
        uint64_t *t = calloc(cap, sizeof *t);
        if (!t) {
            return -1;
        }
        for (size_t i = 0; i < s->seen_cap; i++) {
            if (s->seen[i]) {
                size_t j = s->seen[i] & (cap - 1);
                while (t[j]) {
                    j = (j + 1) & (cap - 1);
                }
                t[j] = s->seen[i];
            }
        }
        free(s->seen);
        s->seen = t;
        s->seen_cap = cap;
    }
    uint64_t h = st_serial_hash(serial);
    size_t j = h & (s->seen_cap - 1);
    while (s->seen[j]) {
        if (s->seen[j] == h) {
            return 0;
        }
        j = (j + 1) & (s->seen_cap - 1);
    }
    s->seen[j] = h;
    s->seen_n++;
    return 1;
}

static void st_hist_add(st_stats *s, int phase, long ms)
{
    double sec = (double)ms / 1000.0;
    int b = 0;
    while (b < ST_HIST_BUCKETS && sec > st_hist_le[b]) {
        b++;
    }
    s->hist[phase][b]++;
    s->hist_sum[phase] += sec;
    s->hist_n[phase]++;
}

void st_stats_record(st_stats *s, const char *fixture, const st_outcome *o, long long unix_ms)
{
    if (!s->first_unix_ms) {
        s->first_unix_ms = unix_ms - o->total_ms;
    }
    if (o->ok && o->action && strcmp(o->action, "already-provisioned") == 0) {
        /* a locked unit re-seated (an end-of-line check, a unit from an earlier run): no device
         * was made, so it counts neither as provisioned, in the rate, nor in the yield */
        s->already++;
        return;
    }
    if (o->have_hello && st_seen_add(s, o->hello.hw_serial) == 1 && o->ok) {
        s->first_ok++;
    }
    for (int p = 0; p < ST_PH__COUNT; p++) {
        if ((o->ran | (o->have_hello ? 1u << ST_PH_HELLO : 0)) & (1u << p)) {
            st_hist_add(s, p, o->ms[p]);
        }
    }
    if (o->ok) {
        s->ok++;
        s->ok_times[s->ok_next] = unix_ms;
        s->ok_next = (s->ok_next + 1) % ST_RATE_KEPT;
        s->ok_n += s->ok_n < ST_RATE_KEPT;
        return;
    }
    s->failed++;
    st_fail_rec *f = &s->fails[s->fail_next];
    s->fail_next = (s->fail_next + 1) % ST_FAILS_KEPT;
    s->fail_n += s->fail_n < ST_FAILS_KEPT;
    memset(f, 0, sizeof *f);
    f->unix_ms = unix_ms;
    snprintf(f->fixture, sizeof f->fixture, "%s", fixture);
    snprintf(f->serial, sizeof f->serial, "%s", o->have_hello ? o->hello.hw_serial : "?");
    f->phase = o->phase;
    snprintf(f->error, sizeof f->error, "%s", o->error);
    f->hint = st_hint(o->error);
}

double st_stats_per_hour(const st_stats *s, long long now)
{
    long long from = now - 3600 * 1000LL;
    if (s->first_unix_ms > from) {
        from = s->first_unix_ms;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->ok_n; i++) {
        n += s->ok_times[i] >= from;
    }
    long long span = now - from;
    if (n == 0 || span <= 0) {
        return 0.0;
    }
    /* under a minute of history a rate is noise: scale it over at least a minute */
    return (double)n * 3600000.0 / (double)(span < 60000 ? 60000 : span);
}

int st_stats_fpy(const st_stats *s, double *out)
{
    if (!s->seen_n) {
        return 0;
    }
    *out = (double)s->first_ok / (double)s->seen_n;
    return 1;
}

void st_stats_free(st_stats *s)
{
    free(s->seen);
    s->seen = NULL;
    s->seen_cap = s->seen_n = 0;
}
