/* keyline-provision: the operator dashboard's HTTP side (st_dash.h). libmicrohttpd, one thread
 * per connection (an event stream blocks its thread between updates; the connection limit
 * bounds them), plain HTTP on loopback by default. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kl_http.h"
#include "kl_log.h"
#include "st.h"
#include "st_dash.h"

#define ST_DASH_CONNECTIONS 64
#define ST_DASH_PER_IP 32
#define ST_DASH_KEEPALIVE_MS 15000 /* an event at least this often, so proxies keep the stream */

struct st_dash {
    st_station *st;
    struct MHD_Daemon *mhd;
    kl_htpasswd *users;      /* NULL: no operator actions */
    pthread_mutex_t auth_mu; /* one password check at a time, a failure's delay included */
    atomic_int stopping;
    char addr[300];
    int loopback;  /* listening on 127.0.0.0/8 or ::1: only a loopback Host is served */
    uint16_t port; /* the port it listens on */
};

/* default-src 'none': the page loads only its own script and style sheet and talks only to
 * this station; nothing inline, nothing from elsewhere, no framing. */
static const char st_dash_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static void st_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* data: not const, so that the analysers see a MUST_FREE buffer handed over */
static enum MHD_Result st_dash_send(struct MHD_Connection *c, unsigned status, const char *type,
                                    void *data, size_t len, enum MHD_ResponseMemoryMode m)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, m);
    if (!r) {
        if (m == MHD_RESPMEM_MUST_FREE) {
            free(data); /* libmicrohttpd takes the buffer only with the response */
        }
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy", st_dash_csp);
    if (status == MHD_HTTP_UNAUTHORIZED) {
        MHD_add_response_header(r, "WWW-Authenticate",
                                "Basic realm=\"keyline station operator\", charset=\"UTF-8\"");
    }
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(r, "Allow", "GET, HEAD, POST");
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result st_dash_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    char *copy = strdup(text);
    if (!copy) {
        return MHD_NO;
    }
    return st_dash_send(c, status, "text/plain; charset=utf-8", copy, strlen(copy),
                        MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result st_dash_json(struct MHD_Connection *c, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (!s) {
        return st_dash_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return st_dash_send(c, MHD_HTTP_OK, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE);
}

/* ---- server-sent events -------------------------------------------------------------------- */

typedef struct {
    st_dash *d;
    int fd;             /* the client's socket, to see it leave between events (-1: unknown) */
    unsigned long sent; /* the station version last sent */
    long sent_ms;
    int any;
    char *buf; /* the event being written */
    size_t len, off;
} st_sse;

static unsigned long st_dash_version(st_station *st)
{
    pthread_mutex_lock(&st->mu);
    unsigned long v = st->version;
    pthread_mutex_unlock(&st->mu);
    return v;
}

/* Wait up to ms; 1 when the client closed its end meanwhile. Only a hang-up is watched (not
 * POLLIN), so a client that sends bytes cannot make this spin. With one thread per connection
 * a stream's thread sits here between events: without this, each page reload or dropped stream
 * kept its thread and connection slot until the next keep-alive failed (up to 15 s). */
static int st_sse_gone(int fd, long ms)
{
    if (fd < 0) {
        st_sleep_ms(ms);
        return 0;
    }
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int n = poll(&p, 1, (int)ms);
    return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* The next event: the state when it changed (at most 4 a second), a comment line to keep the
 * stream alive otherwise. 0 when stopping. */
static int st_sse_next(st_sse *e)
{
    st_dash *d = e->d;
    for (;;) {
        if (atomic_load(&d->stopping)) {
            return 0;
        }
        unsigned long v = st_dash_version(d->st);
        long now = st_now_ms();
        if (!e->any || v != e->sent) {
            json_t *j = st_dash_state(d->st, d->users != NULL, 0);
            char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            json_decref(j);
            if (!s) {
                return 0;
            }
            size_t n = strlen(s) + 64;
            free(e->buf);
            e->buf = malloc(n);
            if (!e->buf) {
                free(s);
                return 0;
            }
            e->len = (size_t)snprintf(e->buf, n, "%sevent: state\ndata: %s\n\n",
                                      e->any ? "" : "retry: 2000\n", s);
            free(s);
            e->off = 0;
            e->sent = v;
            e->sent_ms = now;
            e->any = 1;
            return 1;
        }
        if (now - e->sent_ms >= ST_DASH_KEEPALIVE_MS) {
            free(e->buf);
            e->buf = strdup(": keep-alive\n\n");
            e->len = e->buf ? strlen(e->buf) : 0;
            e->off = 0;
            e->sent_ms = now;
            return e->buf != NULL;
        }
        if (st_sse_gone(e->fd, 250)) {
            return 0;
        }
    }
}

static ssize_t st_sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    st_sse *e = cls;
    (void)pos;
    if (e->off == e->len && !st_sse_next(e)) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = e->len - e->off < max ? e->len - e->off : max;
    memcpy(buf, e->buf + e->off, n);
    e->off += n;
    return (ssize_t)n;
}

static void st_sse_free(void *cls)
{
    st_sse *e = cls;
    free(e->buf);
    free(e);
}

static enum MHD_Result st_dash_events(st_dash *d, struct MHD_Connection *c)
{
    st_sse *e = calloc(1, sizeof *e);
    if (!e) {
        return MHD_NO;
    }
    e->d = d;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    e->fd = ci ? ci->connect_fd : -1;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, st_sse_read, e, st_sse_free);
    if (!r) {
        free(e);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- operator actions ---------------------------------------------------------------------- */

/* 0 and *who set when the request may act; else the answer was queued in *ret. */
static int st_dash_operator(st_dash *d, struct MHD_Connection *c, char *who, size_t wholen,
                            enum MHD_Result *ret)
{
    if (!d->users) {
        *ret = st_dash_text(c, MHD_HTTP_FORBIDDEN,
                            "no operator passwords: set [station] dashboard-users\n");
        return -1;
    }
    /* A cross-site form or image cannot send this header; fetch() from another origin would
     * need a CORS preflight, which this server never grants. */
    if (!MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Keyline-Dashboard")) {
        *ret = st_dash_text(c, MHD_HTTP_FORBIDDEN, "actions come from the dashboard page\n");
        return -1;
    }
    kl_buf user, pass;
    kl_buf_init(&user, 256, 0);
    kl_buf_init(&pass, 1024, 1);
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    kl_rc rc = kl_basic_parse(auth, &user, &pass);
    /* One check at a time for the whole listener, a failure's half second included: guesses
     * from any number of connections cost the station at most one crypt_r at a time (32
     * parallel bad log-ins took 82 % of a core with yescrypt, starving the fixtures), and
     * whoever guesses gets two answers a second in all. */
    pthread_mutex_lock(&d->auth_mu);
    if (rc == KL_OK) {
        rc = kl_htpasswd_verify(d->users, (const char *)user.data, (const char *)pass.data);
    }
    if (rc == KL_OK) {
        snprintf(who, wholen, "%s", (const char *)user.data);
    } else {
        char uname[80];
        snprintf(uname, sizeof uname, "%s", user.len ? (const char *)user.data : "-");
        for (char *p = uname; *p; p++) {
            *p = (*p < 0x20 || *p > 0x7e) ? '?' : *p;
        }
        kl_error("dashboard: operator action refused for '%s': %s", uname, kl_errmsg());
        st_sleep_ms(500); /* each guess costs the guesser, not only crypt_r */
    }
    pthread_mutex_unlock(&d->auth_mu);
    if (rc != KL_OK) {
        *ret = st_dash_text(c, MHD_HTTP_UNAUTHORIZED, "operator log-in needed\n");
    }
    kl_buf_free(&user);
    kl_buf_free(&pass);
    return rc == KL_OK ? 0 : -1;
}

static enum MHD_Result st_dash_action(st_dash *d, struct MHD_Connection *c, const st_dash_route *rt)
{
    enum MHD_Result ret = MHD_NO;
    char who[128];
    const char *order = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");
    if (rt->kind == ST_ROUTE_ORDER_CLOSE && (!order || !*order)) {
        return st_dash_text(c, MHD_HTTP_BAD_REQUEST, "which order? POST /order/close?id=ORDER\n");
    }
    if (st_dash_operator(d, c, who, sizeof who, &ret) != 0) {
        return ret;
    }
    kl_rc rc = rt->kind == ST_ROUTE_ORDER_CLOSE
                   ? st_order_close(d->st, order, who)
                   : st_station_pause(d->st, rt->fixture, rt->kind == ST_ROUTE_PAUSE, who);
    if (rc != KL_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s\n", kl_errmsg());
        return st_dash_text(c, rc == KL_ENOTFOUND ? MHD_HTTP_NOT_FOUND : MHD_HTTP_CONFLICT, msg);
    }
    return st_dash_text(c, MHD_HTTP_OK, "done\n");
}

/* ---- routes -------------------------------------------------------------------------------- */

void st_dash_route_parse(const char *method, const char *url, st_dash_route *rt)
{
    memset(rt, 0, sizeof *rt);
    /* HEAD as GET (libmicrohttpd sends no body): uptime checks ask HEAD /healthz */
    int head = strcmp(method, "HEAD") == 0;
    int get = head || strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    static const struct {
        const char *path;
        st_dash_route_kind kind;
    } fixed[] = {
        {"/events", ST_ROUTE_EVENTS},       {"/state", ST_ROUTE_STATE},
        {"/metrics", ST_ROUTE_METRICS},     {"/healthz", ST_ROUTE_HEALTHZ},
        {"/favicon.ico", ST_ROUTE_FAVICON},
    };
    if (!get && !post) {
        rt->kind = ST_ROUTE_BAD_METHOD;
        return;
    }
    if (get) {
        for (const st_dash_asset *a = st_dash_assets; a->path; a++) {
            if (strcmp(url, a->path) == 0 ||
                (strcmp(a->path, "/") == 0 && strcmp(url, "/index.html") == 0)) {
                rt->kind = ST_ROUTE_ASSET;
                rt->asset = a;
                return;
            }
        }
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            if (strcmp(url, fixed[i].path) == 0) {
                /* a stream has no end for HEAD to wait for */
                rt->kind =
                    head && fixed[i].kind == ST_ROUTE_EVENTS ? ST_ROUTE_BAD_METHOD : fixed[i].kind;
                return;
            }
        }
        return;
    }
    if (strcmp(url, "/order/close") == 0) {
        rt->kind = ST_ROUTE_ORDER_CLOSE;
        return;
    }
    /* /fixture/NAME/pause|resume; NAME has no '/' (fixture names are port basenames). The
     * prefix is checked before anything past it is read (fuzz_dash found "POST /fix"). */
    if (strncmp(url, "/fixture/", 9) != 0) {
        return;
    }
    const char *name = url + 9, *tail = strchr(name, '/');
    if (!tail || tail == name || (size_t)(tail - name) >= sizeof rt->fixture) {
        return;
    }
    if (strcmp(tail, "/pause") == 0 || strcmp(tail, "/resume") == 0) {
        rt->kind = strcmp(tail, "/pause") == 0 ? ST_ROUTE_PAUSE : ST_ROUTE_RESUME;
        memcpy(rt->fixture, name, (size_t)(tail - name));
        rt->fixture[tail - name] = 0;
    }
}

static enum MHD_Result st_dash_metrics_page(st_dash *d, struct MHD_Connection *c)
{
    kl_buf b;
    kl_buf_init(&b, 1024 * 1024, 0);
    enum MHD_Result ret;
    if (st_dash_metrics(d->st, &b) == KL_OK) {
        ret = st_dash_send(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data,
                           b.len, MHD_RESPMEM_MUST_COPY);
    } else {
        ret = st_dash_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics too large\n");
    }
    kl_buf_free(&b);
    return ret;
}

static enum MHD_Result st_dash_serve(st_dash *d, struct MHD_Connection *c, const st_dash_route *rt)
{
    char type[64];
    switch (rt->kind) {
    case ST_ROUTE_ASSET:
        snprintf(type, sizeof type, "%s; charset=utf-8", rt->asset->type);
        return st_dash_send(c, MHD_HTTP_OK, type, (void *)rt->asset->data, rt->asset->len,
                            MHD_RESPMEM_PERSISTENT); /* PERSISTENT: only read */
    case ST_ROUTE_EVENTS: return st_dash_events(d, c);
    case ST_ROUTE_STATE: return st_dash_json(c, st_dash_state(d->st, d->users != NULL, 0));
    case ST_ROUTE_METRICS: return st_dash_metrics_page(d, c);
    case ST_ROUTE_HEALTHZ: return st_dash_text(c, MHD_HTTP_OK, "ok\n");
    case ST_ROUTE_FAVICON:
        return st_dash_send(c, MHD_HTTP_NO_CONTENT, "image/x-icon", "", 0, MHD_RESPMEM_PERSISTENT);
    case ST_ROUTE_PAUSE:
    case ST_ROUTE_RESUME:
    case ST_ROUTE_ORDER_CLOSE: return st_dash_action(d, c, rt);
    case ST_ROUTE_BAD_METHOD:
        return st_dash_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    case ST_ROUTE_NONE: break;
    }
    return st_dash_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* The host part of a Host value that names `port` ("NAME:PORT", "[V6]:PORT", or "NAME" for
 * port 80), into name; 0 when it names another port or is malformed. The port must be written
 * as the listener's number (no sign, space or leading zero that strtol would take). */
static int st_dash_host_name(const char *h, uint16_t port, char *name, size_t cap)
{
    char suffix[8];
    size_t hl = strlen(h);
    snprintf(suffix, sizeof suffix, ":%u", (unsigned)port);
    size_t sl = strlen(suffix), nl = hl;
    if (hl > sl && strcmp(h + hl - sl, suffix) == 0) {
        nl = hl - sl;
    } else if (port != 80 || strchr(h, ':')) {
        return 0;
    }
    if (nl >= 2 && h[0] == '[' && h[nl - 1] == ']') {
        h++;
        nl -= 2;
    } else if (memchr(h, ':', nl) || memchr(h, '[', nl)) {
        return 0; /* an IPv6 address only in brackets */
    }
    if (nl == 0 || nl >= cap) {
        return 0;
    }
    memcpy(name, h, nl);
    name[nl] = 0;
    return 1;
}

int st_dash_host_allowed(int loopback, uint16_t port, const char *hosthdr)
{
    char host[256];
    struct in_addr a4;
    struct in6_addr a6;
    if (!loopback || !hosthdr) {
        return 1;
    }
    if (!st_dash_host_name(hosthdr, port, host, sizeof host)) {
        return 0;
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return strcasecmp(host, "localhost") == 0;
}

static enum MHD_Result st_dash_ahc(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_size, void **con_cls)
{
    static int started;
    st_dash_route rt;
    (void)version;
    (void)upload_data;
    if (!*con_cls) {
        *con_cls = &started; /* headers only so far: wait for the body (ignored) */
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* actions take no body: whatever comes is dropped */
        return MHD_YES;
    }
    st_dash *d = cls;
    if (!st_dash_host_allowed(d->loopback, d->port,
                              MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"))) {
        return st_dash_text(c, MHD_HTTP_MISDIRECTED_REQUEST,
                            "this dashboard answers to 127.0.0.1, localhost or [::1] only\n");
    }
    st_dash_route_parse(method, url, &rt);
    return st_dash_serve(cls, c, &rt);
}

static void st_dash_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = 0;
    kl_debug("dashboard: %s", line);
}

/* "PORT" and ":PORT" mean loopback: the dashboard is reachable from elsewhere only when an
 * address says so. */
static kl_rc st_dash_addr(const char *listen, char *out, size_t outlen)
{
    char host[256];
    uint16_t port;
    int digits = listen[0] != 0 && strspn(listen, "0123456789") == strlen(listen);
    if (digits || listen[0] == ':') {
        snprintf(out, outlen, "127.0.0.1:%s", listen + (listen[0] == ':'));
    } else {
        snprintf(out, outlen, "%s", listen);
    }
    kl_rc rc = kl_hostport_parse(out, host, sizeof host, &port);
    if (rc != KL_OK) {
        return kl_fail(rc, "dashboard address %s", kl_errmsg());
    }
    return KL_OK;
}

static void st_dash_where(const struct sockaddr_storage *ss, int *loopback, uint16_t *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
        *port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
        *port = ntohs(a->sin_port);
    }
}

kl_rc st_dash_start(st_station *st, const char *listen, const char *users, st_dash **out)
{
    kl_rc rc = KL_OK;
    struct sockaddr_storage ss;
    socklen_t sl;
    int v6 = 0;
    st_dash *d = calloc(1, sizeof *d);
    ENSURE(d, KL_EINTERNAL, "out of memory");
    d->st = st;
    pthread_mutex_init(&d->auth_mu, NULL);
    atomic_init(&d->stopping, 0);
    TRY(st_dash_addr(listen, d->addr, sizeof d->addr));
    if (users) {
        rc = kl_htpasswd_load(users, &d->users);
        if (rc != KL_OK) {
            kl_wrap(rc, "[station] dashboard-users");
            goto out;
        }
    }
    TRY(kl_hostport_resolve(d->addr, &ss, &sl, &v6));
    st_dash_where(&ss, &d->loopback, &d->port);
    d->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                  MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
                              0, NULL, NULL, st_dash_ahc, d, MHD_OPTION_EXTERNAL_LOGGER,
                              st_dash_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)ST_DASH_CONNECTIONS,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ST_DASH_PER_IP,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    ENSURE(d->mhd, KL_EUSAGE,
           "dashboard: cannot listen on %s (in use, or not an address of this host?)", d->addr);
    st->dash = d;
    *out = d;
    d = NULL;
out:
    st_dash_stop(d);
    return rc;
}

void st_dash_stop(st_dash *d)
{
    if (!d) {
        return;
    }
    atomic_store(&d->stopping, 1);
    if (d->mhd) {
        MHD_stop_daemon(d->mhd); /* event streams see `stopping` within 250 ms and end */
    }
    if (d->st && d->st->dash == d) {
        d->st->dash = NULL;
    }
    kl_htpasswd_free(d->users);
    pthread_mutex_destroy(&d->auth_mu);
    free(d);
}

const char *st_dash_address(const st_dash *d)
{
    return d->addr;
}
