/* keyline-provision: fixtures, hot-plug, pending sweep, results and the progress display.
 *
 * One thread per fixture (port). It polls the port with HELLO until a device answers, runs
 * st_flow_run() for it, reports, then waits until that device is gone (silence, or another
 * hardware serial answering) before taking the next one, so a device left on the fixture after
 * it finished is not provisioned or reported twice. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <openssl/rand.h>
#include <libudev.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kl_log.h"
#include "st.h"

#define ST_IDLE_POLL_MS 200
#define ST_ABSENT_POLLS 2

/* A device whose flow keyline-cad could not serve is tried again after this long, doubling. */
#define ST_CA_RETRY_MIN_MS 500
#define ST_CA_RETRY_MAX_MS 2000

/* A device that waited for the CA service and then left (or another took its place) is
 * reported with the outcome of its last attempt: the count and the results file name it, and
 * its pending certificate is resumed or activated when it is seen again. */
static void st_held_report(st_station *st, st_fixture *fx, st_outcome **held, const char *why)
{
    if (!*held) {
        return;
    }
    st_event(st, 1, "%s: %s: %s while waiting for the CA service", fx->name,
             (*held)->hello.hw_serial, why);
    st_station_report(st, fx, *held);
    free(*held);
    *held = NULL;
}

static void st_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- display ------------------------------------------------------------------------------ */

static int st_drawn_lines; /* lines of the live display currently on screen (main thread) */

static void st_display_clear_locked(st_station *st)
{
    if (st->display_tty && st_drawn_lines > 0) {
        fprintf(stdout, "\033[%dA\033[J", st_drawn_lines);
        st_drawn_lines = 0;
    }
}

static void st_display_draw_locked(st_station *st)
{
    if (!st->display_tty) {
        return;
    }
    long now = st_now_ms();
    int lines = 0;
    fprintf(stdout, "\033[1mfixture        device             progress  step       time    "
                    "ok fail\033[0m\033[K\n");
    lines++;
    for (size_t i = 0; i < st->nfx; i++) {
        st_fixture *fx = st->fx[i];
        char bar[ST_PH__COUNT + 3];
        int ph = fx->phase;
        bar[0] = '[';
        for (int j = 0; j < ST_PH__COUNT; j++) {
            bar[1 + j] = ph >= 0 && j < ph ? '#' : (ph >= 0 && j == ph ? '>' : '.');
        }
        bar[ST_PH__COUNT + 1] = ']';
        bar[ST_PH__COUNT + 2] = 0;
        double secs = ph >= 0 ? (double)(now - fx->t0_ms) / 1000.0 : 0.0;
        fprintf(stdout, "%-14.14s %-18.18s %s %-10.10s %5.1fs %4u %4u  %.60s\033[K\n", fx->name,
                fx->serial[0] ? fx->serial : "-", bar, ph >= 0 ? st_phase_name(ph) : "idle", secs,
                fx->n_ok, fx->n_fail,
                fx->exited ? (st->stop ? "stopped" : "port gone") : fx->status);
        lines++;
    }
    fprintf(stdout, "devices: %ld finished, %ld failed%s\033[K\n", st->finished, st->failed,
            st->count ? "" : "   (Ctrl-C to stop)");
    lines++;
    fflush(stdout);
    st_drawn_lines = lines;
}

/* A line above the live display (tty) or a log line (not a tty). */
void st_event(st_station *st, int error, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (st->display_tty) {
        pthread_mutex_lock(&st->mu);
        st_display_clear_locked(st);
        fprintf(stdout, "%s%s%s\n", error ? "\033[31m" : "", line, error ? "\033[0m" : "");
        st_display_draw_locked(st);
        pthread_mutex_unlock(&st->mu);
    } else if (error) {
        kl_error("%s", line);
    } else {
        kl_info("%s", line);
    }
}

void st_fixture_progress(st_fixture *fx, int phase, const char *fmt, ...)
{
    st_station *st = fx->st;
    char text[160] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&st->mu);
    fx->phase = phase;
    fx->state = phase >= 0 ? ST_FX_WORKING : ST_FX_WAITING;
    if (fmt) {
        snprintf(fx->status, sizeof fx->status, "%s", text);
    }
    st->version++;
    pthread_mutex_unlock(&st->mu);
    if (!st->display_tty && fmt && phase >= 0) {
        kl_info("%s: %s: %s", fx->name, fx->serial, text);
    }
}

void st_fixture_step(st_fixture *fx, const char *step)
{
    pthread_mutex_lock(&fx->st->mu);
    fx->step = step;
    fx->step_ms = st_now_ms();
    fx->st->version++;
    pthread_mutex_unlock(&fx->st->mu);
}

void st_fixture_idle(st_fixture *fx, st_fx_state state, const char *fmt, ...)
{
    st_station *st = fx->st;
    char text[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&st->mu);
    int changed = fx->state != state || strcmp(fx->status, text) != 0;
    fx->phase = -1;
    fx->state = state;
    snprintf(fx->status, sizeof fx->status, "%s", text);
    st->version += changed;
    pthread_mutex_unlock(&st->mu);
}

const char *st_fx_state_name(st_fx_state s)
{
    static const char *n[ST_FX__COUNT] = {"opening", "no-port", "waiting", "working",
                                          "done",    "paused",  "blocked", "gone"};
    return s < ST_FX__COUNT ? n[s] : "?";
}

kl_rc st_station_pause(st_station *st, const char *name, int paused, const char *who)
{
    st_fixture *fx = NULL;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->nfx && !fx; i++) {
        if (strcmp(st->fx[i]->name, name) == 0) {
            fx = st->fx[i];
        }
    }
    if (fx) {
        fx->paused = paused;
        st->version++;
    }
    pthread_mutex_unlock(&st->mu);
    if (!fx) {
        return kl_fail(KL_ENOTFOUND, "no fixture '%s'", name);
    }
    st_event(st, 0, "%s: %s by %s on the dashboard", fx->name, paused ? "paused" : "resumed", who);
    return KL_OK;
}

/* ---- serial claims ----------------------------------------------------------------------------
 */

kl_rc st_station_claim(st_station *st, st_fixture *fx, const char *serial, char *other,
                       size_t otherlen)
{
    kl_rc rc = st_cad_claim(st, serial, fx ? fx->claim_where : ST_SWEEP_WHERE, other, otherlen);
    if (rc == KL_OK && fx) {
        fx->claim_ms = st_now_ms();
    }
    return rc;
}

kl_rc st_station_claim_keep(st_station *st, st_fixture *fx, const char *serial)
{
    char other[256];
    if (st_now_ms() - fx->claim_ms < ST_CLAIM_RENEW_MS) {
        return KL_OK;
    }
    kl_rc rc = st_station_claim(st, fx, serial, other, sizeof other);
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "lost the claim on %s to %s (this flow was idle for over %ld s)",
                     serial, other, st->claim_lease_s);
    }
    return rc;
}

void st_station_release(st_station *st, st_fixture *fx, const char *serial)
{
    const char *where = fx ? fx->claim_where : ST_SWEEP_WHERE;
    if (st_cad_release(st, serial, where) != KL_OK) {
        /* harmless: the claim goes stale when this process ends or its lease runs out */
        st_event(st, 1, "%s: releasing the claim on %s: %s", where, serial, kl_errmsg());
    }
}

/* ---- results ------------------------------------------------------------------------------- */

kl_rc st_results_open(const char *path, int *fd)
{
    kl_rc rc = KL_OK;
    unsigned was = 0;
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    ENSURE(*fd >= 0, KL_EIO, "results file %s: %s", path, strerror(errno));
    /* a file made before (by hand, by an older keyline-provision 0644) keeps its mode: fixed */
    rc = st_matter_file_private(*fd, path, &was);
    if (rc != KL_OK) {
        close(*fd);
        *fd = -1;
        kl_wrap(rc, "results file");
        goto out;
    }
    if (was) {
        kl_warn("results file %s was mode %04o: made %04o (a Matter line carries the setup "
                "passcode)",
                path, was, was & 0640);
    }
out:
    return rc;
}

void st_station_report(st_station *st, st_fixture *fx, const st_outcome *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char *line = st_result_json(o, fx->name, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    const char *serial = o->have_hello ? o->hello.hw_serial : "?";
    if (o->ok) {
        st_event(st, 0, "%s: %s: OK %s certificate %s in %.1f s", fx->name, serial, o->action,
                 o->cert_serial[0] ? o->cert_serial : "-", (double)o->total_ms / 1000.0);
    } else {
        st_event(st, 1, "%s: %s: FAILED at %s: %s", fx->name, serial, st_phase_name(o->phase),
                 o->error);
    }
    if (st->cfg.station_id[0] && o->ok && st_order_refresh(st) != KL_OK) {
        st_event(st, 1, "production order: %s", kl_errmsg()); /* shown as before */
    }
    pthread_mutex_lock(&st->mu);
    if (line && st->results_fd >= 0) {
        /* One write() of a whole line on an O_APPEND fd: lines never interleave. */
        size_t n = strlen(line);
        if (write(st->results_fd, line, n) != (ssize_t)n || fsync(st->results_fd) != 0) {
            kl_error("results file: write failed: %s", strerror(errno));
        }
    }
    st_stats_record(&st->stats, fx->name, o, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    st->version++;
    st_last *l = &fx->last;
    memset(l, 0, sizeof *l);
    l->have = 1;
    l->ok = o->ok;
    snprintf(l->serial, sizeof l->serial, "%s", serial);
    snprintf(l->cert_serial, sizeof l->cert_serial, "%s", o->cert_serial);
    l->action = o->action;
    l->phase = o->phase;
    l->total_ms = o->total_ms;
    l->end_unix_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (!o->ok) {
        snprintf(l->error, sizeof l->error, "%s", o->error);
        l->hint = st_hint(o->error);
    }
    if (o->ok) {
        fx->n_ok++;
    } else {
        fx->n_fail++;
        st->failed++;
    }
    st->finished++;
    if (st->count > 0 && st->finished >= st->count) {
        st->stop = 1;
    }
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    free(line);
}

/* ---- fixture thread ------------------------------------------------------------------------- */

/* What one fixture thread remembers between polls. */
typedef struct {
    st_fixture *fx;
    st_station *st;
    st_resp *r;
    int open_ok, need_absent, absent, warned_open;
    long ca_wait_ms;
    st_outcome *held; /* the last attempt of a device waiting for the CA service */
    long silent_since;
    char last_serial[KL_PROTO_SERIAL_MAX + 1];
    uint8_t hello_req[16];
    kl_tlv_w w;
} st_fx_loop;

/* What a step of the fixture loop says: go on with this device, poll again, or end the thread. */
typedef enum { FX_STEP_GO, FX_STEP_NEXT, FX_STEP_EXIT } st_fx_step;

/* The port open (retrying each second while it is missing, unless it was hot-plugged). */
static st_fx_step st_fx_open(st_fx_loop *L)
{
    st_fixture *fx = L->fx;
    st_station *st = L->st;
    if (L->open_ok) {
        return FX_STEP_GO;
    }
    kl_rc rc = st_link_open(&fx->link, fx->path, st->cfg.baud, st->cfg.timeout_ms, st->cfg.retries);
    if (rc != KL_OK) {
        if (fx->watched) {
            return FX_STEP_EXIT; /* the port went away: the watcher starts a new thread if it
                                    returns */
        }
        if (!L->warned_open) {
            st_event(st, 1, "%s: %s (retrying)", fx->name, kl_errmsg());
            L->warned_open = 1;
        }
        st_fixture_idle(fx, ST_FX_NOPORT, "waiting for port: %s", kl_errmsg());
        st_sleep_ms(1000);
        return FX_STEP_NEXT;
    }
    fx->link.stop = &st->stop;
    L->open_ok = 1;
    L->warned_open = 0;
    st_fixture_idle(fx, ST_FX_WAITING, "waiting for a device");
    return FX_STEP_GO;
}

/* Idle polls are short: a HELLO sent while nothing was plugged in is lost, and the next device
 * should not wait a whole timeout for the next poll. The poll is resent with the same seq
 * (st_link.poll), so a slow device's late answer still counts. */
static kl_rc st_fx_hello(st_fx_loop *L)
{
    st_link *link = &L->fx->link;
    long quick = link->timeout_ms;
    link->timeout_ms = quick < ST_IDLE_POLL_MS ? quick : ST_IDLE_POLL_MS;
    link->poll = 1;
    kl_rc rc = st_link_xact(link, KL_MSG_HELLO, L->w.buf, L->w.len, L->r, 0);
    link->poll = 0;
    link->timeout_ms = quick;
    return rc;
}

/* The HELLO poll failed: the port is gone (EIO), or no device answered. */
static st_fx_step st_fx_silent(st_fx_loop *L, kl_rc rc)
{
    st_fixture *fx = L->fx;
    st_station *st = L->st;
    if (rc == KL_EIO) {
        st_event(st, 1, "%s: %s", fx->name, kl_errmsg());
        st_link_close(&fx->link);
        L->open_ok = 0;
        if (fx->watched) {
            return FX_STEP_EXIT;
        }
        st_sleep_ms(1000);
        return FX_STEP_NEXT;
    }
    if (L->absent == 0) {
        L->silent_since = st_now_ms();
    }
    L->absent++;
    /* Gone = silent for longer than the device may take to answer (a slow device's late answer
     * must not look like a new device). */
    int gone = L->absent >= ST_ABSENT_POLLS && st_now_ms() - L->silent_since >= st->cfg.timeout_ms;
    if (L->need_absent && gone) {
        L->need_absent = 0;
        st_fixture_progress(fx, -1, "waiting for a device");
    }
    if (L->held && gone) {
        st_held_report(st, fx, &L->held, "left");
    }
    return FX_STEP_NEXT; /* the poll itself waited ST_IDLE_POLL_MS */
}

/* A new outcome from the HELLO answer in L->r (NULL when out of memory). */
static st_outcome *st_fx_outcome(st_fx_loop *L, long t, uint64_t tx0, uint64_t rx0)
{
    st_fixture *fx = L->fx;
    st_outcome *o = calloc(1, sizeof *o);
    if (!o) {
        return NULL;
    }
    o->mode = L->st->cfg.mode;
    o->ms[ST_PH_HELLO] = st_now_ms() - t;
    o->bytes_tx = fx->link.bytes_tx - tx0; /* the HELLO that found the device */
    o->bytes_rx = fx->link.bytes_rx - rx0;
    if (L->r->type == KL_MSG_ERROR) {
        (void)st_dev_error(KL_MSG_HELLO, L->r);
        o->phase = ST_PH_HELLO;
        snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
    } else if (st_hello_parse(L->r->payload, L->r->len, &o->hello) != KL_OK) {
        o->phase = ST_PH_HELLO;
        snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
    } else {
        o->have_hello = 1;
    }
    return o;
}

/* Whether the device that answered may start: not the one just finished, and the order allows
 * another device. NEXT (o freed) when it waits. */
static st_fx_step st_fx_gate(st_fx_loop *L, st_outcome *o)
{
    st_fixture *fx = L->fx;
    st_station *st = L->st;
    if (L->need_absent && (!o->have_hello || strcmp(o->hello.hw_serial, L->last_serial) == 0)) {
        /* The device we just finished is still attached. */
        st_fixture_idle(fx, ST_FX_DONE, "done: remove device %s", L->last_serial);
        free(o);
        st_sleep_ms(ST_IDLE_POLL_MS);
        return FX_STEP_NEXT;
    }
    if (o->have_hello && st_order_gate(st, &o->hello) != KL_OK) {
        /* the order does not allow another device: it waits on the fixture, untouched, and
         * starts when an officer opens a new order (or stays until it is taken away) */
        if (fx->state != ST_FX_BLOCKED) {
            st_event(st, 1, "%s: %s: not started: %s", fx->name, o->hello.hw_serial, kl_errmsg());
        }
        st_fixture_idle(fx, ST_FX_BLOCKED, "%s not started: %s", o->hello.hw_serial, kl_errmsg());
        free(o);
        st_sleep_ms(1000);
        return FX_STEP_NEXT;
    }
    return FX_STEP_GO;
}

/* The flow for a device that said HELLO. NEXT (o held) when keyline-cad could not serve it. */
static st_fx_step st_fx_flow(st_fx_loop *L, st_outcome *o)
{
    st_fixture *fx = L->fx;
    st_station *st = L->st;
    st_fixture_progress(fx, ST_PH_HELLO, "HELLO: %s %s fw %s state %s", o->hello.model,
                        o->hello.hw_serial, o->hello.fw_version,
                        kl_proto_state_name(o->hello.state));
    if (L->held && strcmp(L->held->hello.hw_serial, o->hello.hw_serial) != 0) {
        st_held_report(st, fx, &L->held, "replaced by another device");
    }
    unsigned long unavail = cac_thread_unavailable();
    st_flow_run(st, fx, o);
    if (!o->ok && !st->stop && cac_thread_unavailable() != unavail) {
        /* keyline-cad (every address of [station] cad) or its store could not serve: not the
         * device's failure. The device stays attached and is tried again from HELLO (it
         * resumes with its pending certificate, if one was recorded), waiting longer each
         * time, up to ST_CA_RETRY_MAX_MS; nothing is reported yet. */
        st_event(st, 1, "%s: %s: CA service unavailable (%s); trying again in %ld ms", fx->name,
                 o->hello.hw_serial, o->error, L->ca_wait_ms);
        st_fixture_progress(fx, -1, "keyline-cad unavailable: retrying %s", o->hello.hw_serial);
        free(L->held);
        L->held = o;
        st_sleep_ms(L->ca_wait_ms);
        L->ca_wait_ms =
            L->ca_wait_ms * 2 > ST_CA_RETRY_MAX_MS ? ST_CA_RETRY_MAX_MS : L->ca_wait_ms * 2;
        return FX_STEP_NEXT;
    }
    L->ca_wait_ms = ST_CA_RETRY_MIN_MS;
    free(L->held); /* this attempt's outcome is the device's */
    L->held = NULL;
    return FX_STEP_GO;
}

/* The device's outcome reported (o freed); EXIT when the station's stop interrupted it. */
static st_fx_step st_fx_finish(st_fx_loop *L, st_outcome *o)
{
    st_fixture *fx = L->fx;
    st_station *st = L->st;
    if (!o->ok && st->stop) {
        /* Interrupted by the stop (Ctrl-C, --count reached on another fixture): not a device
         * failure; it resumes with its pending certificate next time. */
        st_event(st, 0, "%s: %s: interrupted at %s (station stopping); resumes next time", fx->name,
                 o->have_hello ? o->hello.hw_serial : "?", st_phase_name(o->phase));
        free(o);
        return FX_STEP_EXIT;
    }
    st_station_report(st, fx, o);
    snprintf(L->last_serial, sizeof L->last_serial, "%s", o->have_hello ? o->hello.hw_serial : "");
    L->need_absent = 1;
    st_fixture_idle(fx, ST_FX_DONE, "done: remove device %s", L->last_serial);
    free(o);
    return FX_STEP_NEXT;
}

/* One turn of the fixture loop: poll, and run the flow for a device that answers. */
static st_fx_step st_fx_turn(st_fx_loop *L)
{
    st_fixture *fx = L->fx;
    st_fx_step s = st_fx_open(L);
    if (s != FX_STEP_GO) {
        return s;
    }
    if (fx->paused) {
        /* an operator paused the fixture: no device starts until resumed */
        st_fixture_idle(fx, ST_FX_PAUSED, "paused by the operator");
        st_sleep_ms(ST_IDLE_POLL_MS);
        return FX_STEP_NEXT;
    }
    long t = st_now_ms();
    uint64_t tx0 = fx->link.bytes_tx, rx0 = fx->link.bytes_rx;
    kl_rc rc = st_fx_hello(L);
    if (rc != KL_OK) {
        return st_fx_silent(L, rc);
    }
    L->absent = 0;
    st_outcome *o = st_fx_outcome(L, t, tx0, rx0);
    if (!o) {
        return FX_STEP_EXIT;
    }
    if ((s = st_fx_gate(L, o)) != FX_STEP_GO) {
        return s;
    }
    pthread_mutex_lock(&L->st->mu);
    snprintf(fx->serial, sizeof fx->serial, "%s", o->have_hello ? o->hello.hw_serial : "?");
    fx->t0_ms = t;
    pthread_mutex_unlock(&L->st->mu);
    if (o->have_hello && st_fx_flow(L, o) != FX_STEP_GO) {
        return FX_STEP_NEXT;
    }
    return st_fx_finish(L, o);
}

static void *st_fixture_main(void *arg)
{
    st_fixture *fx = arg;
    st_station *st = fx->st;
    st_fx_loop L = {.fx = fx, .st = st, .ca_wait_ms = ST_CA_RETRY_MIN_MS};
    L.r = malloc(sizeof *L.r);
    kl_tlv_w_init(&L.w, L.hello_req, sizeof L.hello_req);
    (void)kl_tlv_put_u8(&L.w, KL_TAG_PROTO_MIN, KL_PROTO_VERSION);
    (void)kl_tlv_put_u8(&L.w, KL_TAG_PROTO_MAX, KL_PROTO_VERSION);
    fx->link.fd = -1;
    while (L.r && !st->stop && st_fx_turn(&L) != FX_STEP_EXIT) {
    }
    free(L.held); /* stopping: the device resumes next time */
    st_link_close(&fx->link);
    free(L.r);
    pthread_mutex_lock(&st->mu);
    fx->exited = 1;
    fx->phase = -1;
    fx->state = ST_FX_GONE;
    st->version++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

kl_rc st_station_add_port(st_station *st, const char *path, int watched)
{
    kl_rc rc = KL_OK;
    st_fixture *fx = NULL;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->nfx; i++) {
        if (strcmp(st->fx[i]->path, path) == 0) {
            if (!st->fx[i]->exited) {
                pthread_mutex_unlock(&st->mu);
                return KL_OK; /* already driven */
            }
            fx = st->fx[i]; /* port came back: reuse its slot and counters */
            pthread_join(fx->th, NULL);
            fx->started = 0;
        }
    }
    if (!fx) {
        if (st->nfx >= ST_MAX_FIXTURES) {
            pthread_mutex_unlock(&st->mu);
            return kl_fail(KL_EUSAGE, "more than %d fixtures", ST_MAX_FIXTURES);
        }
        fx = calloc(1, sizeof *fx);
        if (!fx || strlen(path) >= sizeof fx->path) {
            free(fx);
            pthread_mutex_unlock(&st->mu);
            return kl_fail(KL_EUSAGE, "cannot add port %s", path);
        }
        fx->st = st;
        snprintf(fx->path, sizeof fx->path, "%s", path);
        const char *base = strrchr(path, '/');
        snprintf(fx->name, sizeof fx->name, "%s", base ? base + 1 : path);
        /* unique within the process (names are basenames and may repeat): claims tell fixtures
         * apart by it */
        if (strlen(path) < sizeof fx->claim_where) {
            snprintf(fx->claim_where, sizeof fx->claim_where, "%s", path);
        } else {
            snprintf(fx->claim_where, sizeof fx->claim_where, "%.100s#%zu", fx->name, st->nfx);
        }
        st->fx[st->nfx++] = fx;
    }
    fx->watched = watched;
    fx->exited = 0;
    fx->phase = -1;
    snprintf(fx->status, sizeof fx->status, "opening");
    if (pthread_create(&fx->th, NULL, st_fixture_main, fx) != 0) {
        fx->exited = 1;
        rc = kl_fail(KL_EINTERNAL, "cannot start a thread for %s", path);
    } else {
        fx->started = 1;
    }
    pthread_mutex_unlock(&st->mu);
    if (rc == KL_OK) {
        st_event(st, 0, "%s: fixture on %s", fx->name, path);
    }
    return rc;
}

/* ---- watch ---------------------------------------------------------------------------------- */

static int st_udev_wanted(struct udev_device *d)
{
    const char *name = udev_device_get_sysname(d);
    return name && (strncmp(name, "ttyUSB", 6) == 0 || strncmp(name, "ttyACM", 6) == 0);
}

static void st_glob_scan(st_station *st, const char *pattern)
{
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0) {
        return;
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int known_running = 0;
        pthread_mutex_lock(&st->mu);
        for (size_t j = 0; j < st->nfx; j++) {
            if (strcmp(st->fx[j]->path, g.gl_pathv[i]) == 0 && !st->fx[j]->exited) {
                known_running = 1;
            }
        }
        pthread_mutex_unlock(&st->mu);
        if (!known_running && st_station_add_port(st, g.gl_pathv[i], 1) != KL_OK) {
            st_event(st, 1, "%s", kl_errmsg());
        }
    }
    globfree(&g);
}

/* A hot-plugged tty (udev add, or already there at start) that looks like a fixture: its
 * thread started. */
static void st_udev_add(st_station *st, struct udev_device *d)
{
    if (d && st_udev_wanted(d) && udev_device_get_devnode(d)) {
        if (st_station_add_port(st, udev_device_get_devnode(d), 1) != KL_OK) {
            st_event(st, 1, "%s", kl_errmsg());
        }
    }
}

/* --watch: a udev monitor for tty events, and the fixtures already plugged in. */
static kl_rc st_udev_open(st_station *st, struct udev **udev, struct udev_monitor **mon)
{
    kl_rc rc = KL_OK;
    *udev = udev_new();
    ENSURE(*udev, KL_EIO, "libudev: cannot initialise");
    *mon = udev_monitor_new_from_netlink(*udev, "udev");
    ENSURE(*mon, KL_EIO, "libudev: cannot listen for hot-plug events");
    ENSURE(udev_monitor_filter_add_match_subsystem_devtype(*mon, "tty", NULL) >= 0 &&
               udev_monitor_enable_receiving(*mon) >= 0,
           KL_EIO, "libudev: cannot listen for tty events");
    /* devices already plugged in */
    struct udev_enumerate *en = udev_enumerate_new(*udev);
    if (en) {
        udev_enumerate_add_match_subsystem(en, "tty");
        udev_enumerate_scan_devices(en);
        struct udev_list_entry *e;
        udev_list_entry_foreach(e, udev_enumerate_get_list_entry(en))
        {
            struct udev_device *d =
                udev_device_new_from_syspath(*udev, udev_list_entry_get_name(e));
            st_udev_add(st, d);
            udev_device_unref(d);
        }
        udev_enumerate_unref(en);
    }
    st_event(st, 0, "watching for ttyUSB*/ttyACM* devices (udev)");
out:
    return rc;
}

/* The udev events that arrived: a fixture thread for each tty added. */
static void st_udev_drain(st_station *st, struct udev_monitor *mon)
{
    struct pollfd pfd = {.fd = udev_monitor_get_fd(mon), .events = POLLIN};
    while (poll(&pfd, 1, 0) > 0) {
        struct udev_device *d = udev_monitor_receive_device(mon);
        if (!d) {
            break;
        }
        const char *action = udev_device_get_action(d);
        if (action && strcmp(action, "add") == 0) {
            st_udev_add(st, d);
        }
        udev_device_unref(d);
    }
}

/* Wait up to 200 ms for a fixture's news and redraw the display: 1 when the station is done
 * (stopped, or no fixture running and none to watch for). */
static int st_station_wait(st_station *st, int watching)
{
    pthread_mutex_lock(&st->mu);
    int running = 0;
    for (size_t i = 0; i < st->nfx; i++) {
        running += st->fx[i]->started && !st->fx[i]->exited;
    }
    if (!st->stop && (running || watching)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    }
    int stop = st->stop;
    if (st->display_tty) {
        st_display_clear_locked(st);
        st_display_draw_locked(st);
    }
    pthread_mutex_unlock(&st->mu);
    return stop || (!running && !watching);
}

/* Stop every fixture thread and wait for it; the display's last state. */
static void st_station_join(st_station *st)
{
    st->stop = 1;
    for (size_t i = 0; i < st->nfx; i++) {
        if (st->fx[i]->started) {
            pthread_join(st->fx[i]->th, NULL);
            st->fx[i]->started = 0;
        }
    }
    if (st->display_tty) {
        pthread_mutex_lock(&st->mu);
        st_display_clear_locked(st);
        st_display_draw_locked(st);
        pthread_mutex_unlock(&st->mu);
    }
}

/* The dashboard's order, asked anew every ST_ORDER_REFRESH_MS on an idle line too: closed by
 * the officer, used up by another station under the same id, expired, or a new one opened (the
 * fixtures ask only when a device answers). */
static void st_station_order_tick(st_station *st, long *next)
{
    if (!st->dash || !st->cfg.station_id[0] || st_now_ms() < *next) {
        return;
    }
    if (st_order_refresh(st) != KL_OK) {
        kl_debug("dashboard: %s", kl_errmsg()); /* shown as before; a device says why */
    }
    *next = st_now_ms() + ST_ORDER_REFRESH_MS;
}

kl_rc st_station_run(st_station *st, int use_udev, const char *watch_glob)
{
    kl_rc rc = KL_OK;
    struct udev *udev = NULL;
    struct udev_monitor *mon = NULL;
    long next_sweep = st_now_ms() + st->cfg.pending_window * 500L;
    long sweep_every = st->cfg.pending_window * 500L, next_order = 0;
    if (sweep_every > 60000) {
        sweep_every = 60000;
        next_sweep = st_now_ms() + sweep_every;
    }
    if (use_udev) {
        TRY(st_udev_open(st, &udev, &mon));
    }
    if (watch_glob) {
        st_glob_scan(st, watch_glob);
    }
    while (!st_station_wait(st, use_udev || watch_glob)) {
        if (mon) {
            st_udev_drain(st, mon);
        }
        if (watch_glob) {
            st_glob_scan(st, watch_glob);
        }
        if (st_now_ms() >= next_sweep) {
            unsigned n = 0;
            if (st_station_sweep(st, &n) != KL_OK) {
                st_event(st, 1, "pending sweep: %s", kl_errmsg());
            }
            next_sweep = st_now_ms() + sweep_every;
        }
        st_station_order_tick(st, &next_order);
    }
    st_station_join(st);
out:
    if (mon) {
        udev_monitor_unref(mon);
    }
    if (udev) {
        udev_unref(udev);
    }
    return rc;
}

/* ---- setup ---------------------------------------------------------------------------------- */

kl_rc st_station_init(st_station *st, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    memset(st, 0, sizeof *st);
    st->results_fd = -1;
    st->conf = conf;
    st->stats.started_unix_ms = st_unix_ms();
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    TRY(st_config_load(&st->cfg, conf));
    TRY(st_matter_cfg_load(&st->matter, conf));
    /* A flow renews its claim between phases, so the lease must outlast the longest phase the
     * timeouts allow: generously, 16 exchanges each waiting for every retry of a slow answer. */
    long phase_max_s = 16 * (st->cfg.retries + 1) * (st->cfg.slow_timeout_ms / 1000 + 1);
    st->claim_lease_s = phase_max_s + 60 > ST_CLAIM_LEASE_S ? phase_max_s + 60 : ST_CLAIM_LEASE_S;
    snprintf(st->host, sizeof st->host, "localhost");
    (void)gethostname(st->host, sizeof st->host - 1);
    snprintf(st->actor, sizeof st->actor, "station:%.150s", st->host);
    {
        unsigned char r[16];
        ENSURE_SSL(RAND_bytes(r, sizeof r) == 1, KL_EINTERNAL, "no random instance id");
        for (size_t i = 0; i < sizeof r; i++) {
            snprintf(st->instance + 2 * i, 3, "%02x", r[i]);
        }
    }

    TRY(st_cad_open(st));
    rc = st_cad_chain(st);
    if (rc != KL_OK) {
        kl_wrap(rc, "CA certificates of profile '%s'", st->cfg.profile);
        goto out;
    }
    st->anchors = sk_X509_new_null();
    ENSURE(st->anchors, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < sk_X509_num(st->chain); i++) {
        X509 *c = sk_X509_value(st->chain, i);
        if (X509_check_issued(c, c) == X509_V_OK) {
            ENSURE(X509_up_ref(c) == 1 && sk_X509_push(st->anchors, c) > 0, KL_EINTERNAL,
                   "out of memory");
        }
    }
    ENSURE(sk_X509_num(st->anchors) > 0, KL_EPOLICY,
           "the chain of issuer '%s' does not end in a self-signed root", st->cfg.issuer);
    ENSURE(sk_X509_num(st->chain) <= 4, KL_EPOLICY,
           "the chain of issuer '%s' is longer than a device keeps", st->cfg.issuer);
    TRY(st_order_refresh(st)); /* [station] id: the dashboard shows the order from the start */
    if (st->cfg.results) {
        /* a Matter line carries the setup passcode in its QR and manual codes: 0640, as the
         * labels (docs/matter.md) */
        TRY(st_results_open(st->cfg.results, &st->results_fd));
    }
out:
    return rc;
}

void st_station_free(st_station *st)
{
    for (size_t i = 0; i < st->nfx; i++) {
        if (st->fx[i]->started) {
            pthread_join(st->fx[i]->th, NULL);
        }
        free(st->fx[i]);
    }
    st->nfx = 0;
    sk_X509_pop_free(st->chain, X509_free);
    sk_X509_pop_free(st->anchors, X509_free);
    st->chain = st->anchors = NULL;
    st_matter_cfg_free(&st->matter);
    if (st->results_fd >= 0) {
        close(st->results_fd);
    }
    st->results_fd = -1;
    cac_close(st->cac);
    st->cac = NULL;
    st_config_free(&st->cfg);
    st_stats_free(&st->stats);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
}
