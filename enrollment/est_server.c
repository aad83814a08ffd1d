/* keyline-estd: libmicrohttpd daemons, TLS set-up, limits, request glue and the access log. */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/pkcs11.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "est.h"
#include "kl_file.h"
#include "kl_log.h"
#include "kl_secret.h"

/* Stack of a worker thread: ample for TLS, OpenSSL, the PKCS#11 module and sanitizer builds. */
#define EST_THREAD_STACK (1024 * 1024)
/* Seconds keyline-estd waits at start-up for keyline-cad's socket to answer. */
#define EST_CAD_WAIT 10

/* GnuTLS' certificate callback carries no user pointer; one server per process. */
static est_server *est_the_server;

/* ---------------------------------------------------------------------------------------- */
/* Per-request state                                                                        */

typedef struct {
    est_server *srv;
    int tls;
    int metrics_only; /* [est] metrics-listen: /metrics and /healthz only */
} est_listener;

static est_listener est_listener_tls, est_listener_http, est_listener_metrics;

/* TLS session tickets (RFC 5077, RFC 8446 4.6.1): a device's renewal retry resumes instead of
 * a full handshake. GnuTLS derives the keys that encrypt the tickets from this master key and
 * the wall clock's 18 h step, and takes a ticket whose session began less than 6 h before the
 * wall clock: a clock set back would revive an old ticket. So the master key itself lives
 * [est] ticket-key-lifetime seconds of the monotonic clock (est_ticket_key_use): a ticket is
 * never taken after that, whatever the wall clock says. Made here, wiped when replaced and at
 * exit, never written anywhere. */
static struct {
    pthread_mutex_t mu;
    gnutls_datum_t key;
    double born; /* est_mono() when `key` was drawn */
} est_ticket = {PTHREAD_MUTEX_INITIALIZER, {NULL, 0}, 0};

/* A TLS certificate chain and its key (est_server.h: est_server.tls). */
typedef struct est_tls_creds {
    gnutls_pcert_st *pcerts;
    unsigned n_pcerts;
    gnutls_privkey_t privkey;
    uint64_t gen; /* est_server.tls_gen when it was loaded */
    struct est_tls_creds *next;
} est_tls_creds;

typedef struct {
    est_server *srv;
    int tls;
    int http10; /* the request was HTTP/1.0: so is the status line of the answer */
    kl_buf body;
    int too_big;
    size_t discarded;
    int responded;
    double t0;
    int status;
    size_t bytes;
    est_endpoint ep;
    char method[16];
    char path[160];
    char identity[200];
    char note[200];
    int quiet; /* answered from the OCSP front cache: logged at debug level only */
    /* handed to a worker (workers > 0): the request, its answer, and the state */
    struct MHD_Connection *conn;
    est_req rq;
    est_resp rs;
    int job; /* EST_JOB_*: none; queued or running (connection suspended); answered */
    void *next_job;
} est_conn_req;

static double est_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One per connection on either listener, from MHD_CONNECTION_NOTIFY_STARTED to _CLOSED (its
 * socket context). The request deadline: libmicrohttpd's own timeout is one of inactivity, so
 * a client that sends a header line every few seconds (slowloris) would hold its slot for as
 * long as it likes. Each connection must deliver a whole request (TLS handshake, headers,
 * body) within [est] request-timeout of being opened, or of the answer to its previous request
 * (keep-alive); the sweeper thread shuts down the socket of one that does not, and the I/O
 * thread then closes it as a connection the client broke. While its request is being handled
 * or answered a connection has no deadline. All fields but `auth` are guarded by
 * srv->conns_mu. */
typedef struct est_conn {
    est_conn_auth auth; /* TLS listener: the client-certificate cache (est_handlers.c) */
    MHD_socket fd;
    double deadline; /* est_mono() by which the request must be complete; 0: none */
    int cut;         /* the sweeper shut it down */
    char addr[INET6_ADDRSTRLEN];
    uint64_t tls_gen; /* srv->tls_gen when it opened: its handshake uses that or a newer one */
    struct est_conn *prev, *next;
} est_conn;

typedef struct {
    kl_buf b;
} est_body_holder;

static void est_body_free(void *cls)
{
    est_body_holder *h = cls;
    kl_buf_free(&h->b); /* wipes sensitive bodies (serverkeygen) */
    free(h);
}

/* The content reader of a 304: never called (libmicrohttpd sends no content with a 304); were
 * it called, the connection is closed rather than anything sent. */
static ssize_t est_no_content(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result est_queue(struct MHD_Connection *c, est_conn_req *r, est_resp *rs)
{
    est_body_holder *h = calloc(1, sizeof *h);
    if (!h) {
        return MHD_NO;
    }
    h->b = rs->body; /* ownership moves to the response */
    kl_buf_init(&rs->body, 0, 0);
    struct MHD_Response *resp = NULL;
    if (rs->has_fd) {
        /* a file (a CRL of any size): sent from the page cache, closed by MHD when done */
        resp = MHD_create_response_from_fd64(rs->fd_len, rs->fd);
        if (!resp) {
            close(rs->fd);
        }
        rs->has_fd = 0;
        est_body_free(h);
        h = NULL;
    } else if (rs->status == 304) {
        /* RFC 9110 8.6: "a server MUST NOT send Content-Length in such a response [a 304 to a
         * conditional GET] unless its field value equals the decimal number of octets that
         * would have been sent in the content of a 200 (OK) response to the same request".
         * libmicrohttpd (0.9.75 and later) writes a 304's Content-Length from the response's
         * size and sends none of its content, as for HEAD: the size is the 200's (an empty
         * buffer said 0). */
        resp =
            MHD_create_response_from_callback(rs->not_modified_len, 1, est_no_content, NULL, NULL);
        est_body_free(h);
        h = NULL;
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback_cls(
            h->b.len, h->b.len ? h->b.data : (void *)"", est_body_free, h);
    }
    if (!resp) {
        if (h) {
            est_body_free(h);
        }
        return MHD_NO;
    }
    if (rs->content_type[0]) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type);
    }
    for (size_t i = 0; i < rs->n_hdr; i++) {
        MHD_add_response_header(resp, rs->hdr[i].name, rs->hdr[i].value);
    }
    if (atomic_load(&r->srv->stopping)) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    /* RFC 9110 6.2: a server ought to answer in the major version of the request; some EST
     * clients (a libest variant forcing HTTP/1.0) compare the status line literally. */
    if (r->http10 &&
        MHD_set_response_options(resp, MHD_RF_HTTP_1_0_SERVER, MHD_RO_END) != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    r->status = rs->status;
    r->bytes = h ? h->b.len : rs->status == 304 ? 0 : (size_t)rs->fd_len;
    r->responded = 1;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)rs->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void est_req_log_fields(est_conn_req *r, const est_req *rq)
{
    snprintf(r->identity, sizeof r->identity, "%s", rq->identity[0] ? rq->identity : "-");
    snprintf(r->note, sizeof r->note, "%s", rq->note);
    r->ep = rq->route.ep;
}

/* ---------------------------------------------------------------------------------------- */
/* Workers: a fixed pool of threads that run the request handlers                           */

enum { EST_JOB_NONE = 0, EST_JOB_RUNNING = 1, EST_JOB_DONE = 2 };

static void est_jobs_push(est_server *s, est_conn_req *r)
{
    pthread_mutex_lock(&s->jobs_mu);
    r->next_job = NULL;
    if (s->jobs_tail) {
        ((est_conn_req *)s->jobs_tail)->next_job = r;
    } else {
        s->jobs_head = r;
    }
    s->jobs_tail = r;
    pthread_cond_signal(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
}

static void *est_worker(void *arg)
{
    est_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->jobs_mu);
        while (!s->jobs_head && !s->jobs_stop) {
            pthread_cond_wait(&s->jobs_cv, &s->jobs_mu);
        }
        est_conn_req *r = s->jobs_head;
        if (!r) { /* stopping and nothing left */
            pthread_mutex_unlock(&s->jobs_mu);
            return NULL;
        }
        s->jobs_head = r->next_job;
        if (!s->jobs_head) {
            s->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&s->jobs_mu);
        est_handle(&r->rq, &r->rs);
        r->job = EST_JOB_DONE; /* read by the I/O thread after MHD_resume_connection's lock */
        MHD_resume_connection(r->conn);
    }
}

static kl_rc est_workers_start(est_server *s)
{
    pthread_mutex_init(&s->jobs_mu, NULL);
    pthread_cond_init(&s->jobs_cv, NULL);
    s->workers = calloc(s->cfg.workers ? s->cfg.workers : 1, sizeof *s->workers);
    if (!s->workers) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, EST_THREAD_STACK);
    for (unsigned i = 0; i < s->cfg.workers; i++) {
        int e = pthread_create(&s->workers[i], &at, est_worker, s);
        if (e != 0) {
            pthread_attr_destroy(&at);
            return kl_fail(KL_EINTERNAL, "cannot start worker thread: %s", strerror(e));
        }
        s->n_workers++;
    }
    pthread_attr_destroy(&at);
    return KL_OK;
}

/* Let the workers finish every queued request (their connections are resumed with the
 * answers), then end them. */
static void est_workers_stop(est_server *s)
{
    if (!s->workers) {
        return;
    }
    pthread_mutex_lock(&s->jobs_mu);
    s->jobs_stop = 1;
    pthread_cond_broadcast(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    for (unsigned i = 0; i < s->n_workers; i++) {
        pthread_join(s->workers[i], NULL);
    }
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
    pthread_cond_destroy(&s->jobs_cv);
    pthread_mutex_destroy(&s->jobs_mu);
}

/* Request framing (RFC 9112 6.1, 6.3): one body length, or a request smuggled past a proxy
 * in front of us could be read differently by it and by us. Differing Content-Length values,
 * Content-Length with Transfer-Encoding, and a transfer coding other than chunked are
 * refused before the body is read. */
typedef struct {
    const char *cl;
    int cl_differs;
    const char *te;
} est_framing;

static enum MHD_Result est_framing_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    est_framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->cl && strcmp(f->cl, value) != 0) {
            f->cl_differs = 1;
        }
        f->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->te = value;
    }
    return MHD_YES;
}

static int est_framing_check(struct MHD_Connection *c, const char **why)
{
    est_framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, est_framing_hdr, &f);
    if (f.cl_differs) {
        *why = "conflicting Content-Length headers";
        return 400;
    }
    if (f.te && f.cl) {
        *why = "both Transfer-Encoding and Content-Length";
        return 400;
    }
    if (f.te && strcasecmp(f.te, "chunked") != 0) {
        *why = "transfer coding not supported (chunked only)";
        return 501;
    }
    return 0;
}

/* An answer before the body is read (framing, announced size): MHD closes the connection. */
static enum MHD_Result est_refuse_early(struct MHD_Connection *c, est_conn_req *r, const char *url,
                                        int status, const char *text)
{
    est_resp rs;
    est_resp_init(&rs);
    est_resp_text(&rs, status, text);
    est_route rt;
    r->ep = est_route_parse(url, &rt) == KL_OK ? rt.ep : EST_EP_OTHER;
    enum MHD_Result ret = est_queue(c, r, &rs);
    est_resp_free(&rs);
    return ret;
}

/* A connection's first call: its state, then what can be refused before the body is read. */
static enum MHD_Result est_ahc_begin(est_listener *L, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version, void **con_cls)
{
    est_server *s = L->srv;
    est_conn_req *r = calloc(1, sizeof *r);
    if (!r) {
        return MHD_NO;
    }
    r->srv = s;
    r->tls = L->tls;
    r->http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    r->t0 = est_mono();
    kl_buf_init(&r->body, s->cfg.max_body, 0);
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    snprintf(r->identity, sizeof r->identity, "-");
    *con_cls = r;
    atomic_fetch_add(&s->metrics.inflight, 1);
    const char *why = NULL;
    int st = est_framing_check(c, &why);
    if (st) {
        snprintf(r->note, sizeof r->note, "%s", why);
        return est_refuse_early(c, r, url, st, why);
    }
    /* Refuse an announced oversized body before reading it. */
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end == 0 && n > s->cfg.max_body) {
            snprintf(r->note, sizeof r->note, "body of %llu bytes over the limit", n);
            return est_refuse_early(c, r, url, 413, "request body too large");
        }
    }
    return MHD_YES;
}

/* A piece of the body: kept up to max-body, then dropped up to a bound. */
static enum MHD_Result est_ahc_upload(est_server *s, est_conn_req *r, const char *upload_data,
                                      size_t *upload_data_size)
{
    if (!r->too_big) {
        if (kl_buf_put(&r->body, upload_data, *upload_data_size) != KL_OK) {
            r->too_big = 1;
            kl_buf_free(&r->body);
        }
    } else {
        /* Chunked uploads have no Content-Length: read and drop up to a bound, then cut the
         * connection so a client cannot stream forever. */
        r->discarded += *upload_data_size;
        if (r->discarded > 4 * s->cfg.max_body) {
            snprintf(r->note, sizeof r->note, "oversized upload cut");
            r->status = 413;
            return MHD_NO;
        }
    }
    *upload_data_size = 0;
    return MHD_YES;
}

/* The whole request is here: no deadline while it is handled and answered. The connection's
 * state (NULL if MHD has none). */
static est_conn *est_conn_undeadline(est_server *s, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *sci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    est_conn *k = sci ? sci->socket_context : NULL;
    if (k) {
        pthread_mutex_lock(&s->conns_mu);
        k->deadline = 0;
        pthread_mutex_unlock(&s->conns_mu);
    }
    return k;
}

/* libmicrohttpd's unescape callback: est_path_unescape. */
static size_t est_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return est_path_unescape(s);
}

/* The conditional-request fields, in one pass over the header fields:
 *   If-None-Match's field lines joined with commas (RFC 9110 5.3: a list field may come in
 *   several lines, which mean their values in order, comma-separated);
 *   If-Modified-Since only when it comes in one line. RFC 9110 13.1.3: "A recipient MUST ignore
 *   the If-Modified-Since header field if the received field value is not a valid HTTP-date, the
 *   field value has more than one member, ..."; two lines are a value of two members (5.3). */
typedef struct {
    char *buf;
    size_t cap, len;
    int any, overflow;
    const char *ims;
    unsigned n_ims;
} est_cond_hdrs;

static enum MHD_Result est_cond_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    est_cond_hdrs *j = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_IF_MODIFIED_SINCE) == 0) {
        j->ims = value;
        j->n_ims++;
        return MHD_YES;
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_IF_NONE_MATCH) != 0 || j->overflow) {
        return MHD_YES;
    }
    int n = snprintf(j->buf + j->len, j->cap - j->len, "%s%s", j->any ? ", " : "", value);
    j->any = 1;
    if (n < 0 || (size_t)n >= j->cap - j->len) {
        j->overflow = 1;
        return MHD_YES;
    }
    j->len += (size_t)n;
    return MHD_YES;
}

/* rq->inm, has_inm and if_modified_since; an If-None-Match list too long to keep is kept as an
 * empty one, which matches nothing (the full answer, never a wrong 304). */
static void est_req_cond(struct MHD_Connection *c, est_req *rq)
{
    est_cond_hdrs j = {.buf = rq->inm, .cap = sizeof rq->inm};
    rq->inm[0] = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, est_cond_hdr, &j);
    if (j.overflow) {
        rq->inm[0] = 0;
    }
    rq->has_inm = j.any;
    rq->if_modified_since = j.n_ims == 1 ? j.ims : NULL;
}

/* The request as the handlers see it: headers, body, TLS session. */
static void est_req_fill(est_listener *L, struct MHD_Connection *c, est_conn_req *r,
                         const char *method, const char *url, est_conn *k, est_req *rq)
{
    memset(rq, 0, sizeof *rq);
    rq->srv = L->srv;
    rq->tls = L->tls;
    rq->metrics_only = L->metrics_only;
    rq->method = method;
    rq->path = url;
    rq->content_type =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    rq->cte = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Transfer-Encoding");
    rq->authorization =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    est_req_cond(c, rq);
    rq->body = r->body.data;
    rq->body_len = r->body.len;
    if (L->tls) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        rq->session = ci ? (gnutls_session_t)ci->tls_session : NULL;
        rq->conn_auth = k ? &k->auth : NULL;
    }
}

/* The answer is ready (rs): log and send it. */
static enum MHD_Result est_ahc_send(struct MHD_Connection *c, est_conn_req *r, est_req *rq,
                                    est_resp *rs)
{
    est_req_log_fields(r, rq);
    enum MHD_Result ret = est_queue(c, r, rs);
    est_resp_free(rs);
    kl_buf_free(&r->body);
    return ret;
}

/* The whole request is here: answer it here, or hand it to a worker. */
static enum MHD_Result est_ahc_request(est_listener *L, struct MHD_Connection *c, est_conn_req *r,
                                       const char *method, const char *url)
{
    est_server *s = L->srv;
    est_conn *k = est_conn_undeadline(s, c);
    est_resp rs;
    est_resp_init(&rs);
    est_req rq;
    est_req_fill(L, c, r, method, url, k, &rq);
    if (r->too_big) {
        if (est_route_parse(url, &rq.route) != KL_OK) {
            rq.route.ep = EST_EP_OTHER;
        }
        snprintf(rq.note, sizeof rq.note, "body over the limit of %zu bytes", s->cfg.max_body);
        est_resp_text(&rs, 413, "request body too large");
    } else if (!L->tls && !L->metrics_only && est_handle_ocsp_fast(&rq, &rs)) {
        /* a nonce-less OCSP request answered less than a second ago: no worker, no round trip
         * to keyline-cad, no log line (tens of thousands a second; /metrics counts them) */
        r->quiet = 1;
    } else if (s->n_workers) {
        /* A worker handles it (HSM, store): this I/O thread goes on serving other connections
         * meanwhile. The connection sleeps until the worker resumes it with the answer. */
        r->conn = c;
        r->rq = rq;
        r->rs = rs;
        r->job = EST_JOB_RUNNING;
        MHD_suspend_connection(c);
        est_jobs_push(s, r);
        return MHD_YES;
    } else {
        est_handle(&rq, &rs);
    }
    return est_ahc_send(c, r, &rq, &rs);
}

static enum MHD_Result est_ahc(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    est_listener *L = cls;
    est_conn_req *r = *con_cls;

    if (!r) {
        return est_ahc_begin(L, c, url, method, version, con_cls);
    }
    if (r->responded) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        return est_ahc_upload(L->srv, r, upload_data, upload_data_size);
    }
    if (r->job == EST_JOB_RUNNING) {
        return MHD_YES; /* suspended; not called until resumed */
    }
    if (r->job == EST_JOB_DONE) {
        /* a worker answered: send it */
        enum MHD_Result ret = est_ahc_send(c, r, &r->rq, &r->rs);
        r->job = EST_JOB_NONE;
        return ret;
    }
    return est_ahc_request(L, c, r, method, url);
}

/* The client's address as the access log and warnings print it: dotted quad for IPv4 (also
 * for an IPv4 client of a dual-stack IPv6 socket, ::ffff:a.b.c.d), RFC 5952 text for IPv6
 * (no brackets, no port), "-" when unknown. */
static void est_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    snprintf(out, outlen, "-");
    if (sa && sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outlen);
        } else {
            inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
        }
    }
}

static void est_ticket_key_wipe(void)
{
    if (est_ticket.key.data) {
        gnutls_memset(est_ticket.key.data, 0, est_ticket.key.size);
        gnutls_free(est_ticket.key.data);
        est_ticket.key = (gnutls_datum_t){NULL, 0};
    }
}

/* Enable tickets on `session` under the current master key, drawn afresh once the one before
 * has lived `life` seconds (GnuTLS copies the key into the session). A ticket made under the
 * old key no longer decrypts: that device makes a full handshake. */
static int est_ticket_key_use(gnutls_session_t session, unsigned life)
{
    pthread_mutex_lock(&est_ticket.mu);
    double now = est_mono();
    int r = 0;
    if (!est_ticket.key.data || now - est_ticket.born >= life) {
        est_ticket_key_wipe();
        r = gnutls_session_ticket_key_generate(&est_ticket.key);
        est_ticket.born = now;
        if (r >= 0) {
            kl_debug("TLS session ticket key drawn (ticket-key-lifetime = %us)", life);
        }
    }
    if (r >= 0) {
        r = gnutls_session_ticket_enable_server(session, &est_ticket.key);
    }
    pthread_mutex_unlock(&est_ticket.mu);
    return r;
}

/* Before the handshake (MHD has made the GnuTLS session, nothing read yet): tickets on, unless
 * [est] ticket-key-lifetime is 0. A resumed session keeps its client certificate (GnuTLS
 * stores the peer's chain in the ticket), which the handlers verify and look up on every
 * request as on a full handshake. */
static void est_tickets_enable(const est_listener *L, struct MHD_Connection *c)
{
    static atomic_int warned;
    unsigned life = L->srv->cfg.ticket_key_lifetime;
    if (!L->tls || life == 0) {
        return;
    }
    /* GnuTLS's ticket key is zeros while the clock reads the first 18 h of 1970 (est.h,
     * EST_CLOCK_FLOOR): a TLS 1.2 ticket, sent in clear, would give a listener the session's
     * master secret. No ticket is issued or taken while the clock reads before the floor. */
    if (time(NULL) < EST_CLOCK_FLOOR) {
        if (!atomic_exchange(&warned, 1)) {
            kl_warn("the clock reads before 2020: TLS session tickets are off until it is right");
        }
        return;
    }
    const union MHD_ConnectionInfo *si =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    int r = si && si->tls_session ? est_ticket_key_use((gnutls_session_t)si->tls_session, life)
                                  : GNUTLS_E_INVALID_SESSION;
    if (r < 0) {
        kl_warn("TLS session tickets not enabled for a connection: %s", gnutls_strerror(r));
    }
}

/* The est_conn of a connection: made when it opens (its deadline starts then, before the TLS
 * handshake), put on the server's list, taken off and freed when it closes. MHD calls _CLOSED
 * before it closes the socket, so while an est_conn is on the list its fd is this connection's
 * (the sweeper never shuts down a reused descriptor). */
static void est_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    est_listener *L = cls;
    est_server *s = L->srv;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        est_conn *k = calloc(1, sizeof *k);
        *socket_context = k;
        if (!k) {
            /* out of memory: without a deadline it must not stay */
            if (ci) {
                shutdown(ci->connect_fd, SHUT_RDWR);
            }
            return;
        }
        k->fd = ci ? ci->connect_fd : MHD_INVALID_SOCKET;
        est_conn_auth_init(&k->auth);
        est_tickets_enable(L, c);
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        est_addr_format(ci ? ci->client_addr : NULL, k->addr, sizeof k->addr);
        pthread_mutex_lock(&s->conns_mu);
        k->tls_gen = s->tls_gen;
        k->deadline = est_mono() + s->cfg.request_timeout;
        k->next = s->conns;
        if (k->next) {
            k->next->prev = k;
        }
        s->conns = k;
        pthread_mutex_unlock(&s->conns_mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        est_conn *k = *socket_context;
        pthread_mutex_lock(&s->conns_mu);
        if (k->prev) {
            k->prev->next = k->next;
        } else {
            s->conns = k->next;
        }
        if (k->next) {
            k->next->prev = k->prev;
        }
        pthread_mutex_unlock(&s->conns_mu);
        est_conn_auth_free(&k->auth);
        free(k);
        *socket_context = NULL;
    }
}

/* The sweeper: once a second, shut down the connections past their request deadline. */
static void *est_sweeper(void *arg)
{
    est_server *s = arg;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->sweep_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1;
        (void)pthread_cond_timedwait(&s->sweep_cv, &s->conns_mu, &until);
        double now = est_mono();
        size_t n = 0;
        char first[INET6_ADDRSTRLEN] = "";
        for (est_conn *k = s->conns; k; k = k->next) {
            if (k->deadline > 0 && now >= k->deadline && !k->cut && k->fd != MHD_INVALID_SOCKET) {
                /* The I/O thread sees the socket end and closes the connection (as MHD's own
                 * MHD_stop_daemon does from another thread). */
                shutdown(k->fd, SHUT_RDWR);
                k->cut = 1;
                if (!n++) {
                    snprintf(first, sizeof first, "%s", k->addr);
                }
            }
        }
        if (n) {
            pthread_mutex_unlock(&s->conns_mu);
            est_metrics_conns_cut(&s->metrics, n);
            kl_warn("closed %zu connection%s (the first from %s) that did not deliver a whole "
                    "request within request-timeout = %us",
                    n, n == 1 ? "" : "s", first, s->cfg.request_timeout);
            pthread_mutex_lock(&s->conns_mu);
        }
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

static kl_rc est_sweeper_start(est_server *s)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->sweep_stop = 0;
    int e = pthread_create(&s->sweeper, NULL, est_sweeper, s);
    if (e != 0) {
        pthread_cond_destroy(&s->sweep_cv);
        return kl_fail(KL_EINTERNAL, "cannot start the connection sweeper: %s", strerror(e));
    }
    s->sweeper_on = 1;
    return KL_OK;
}

static void est_sweeper_stop(est_server *s)
{
    if (!s->sweeper_on) {
        return;
    }
    pthread_mutex_lock(&s->conns_mu);
    s->sweep_stop = 1;
    pthread_cond_broadcast(&s->sweep_cv);
    pthread_mutex_unlock(&s->conns_mu);
    pthread_join(s->sweeper, NULL);
    pthread_cond_destroy(&s->sweep_cv);
    s->sweeper_on = 0;
}

/* The access log is one line per request, but the path comes percent-decoded from MHD
 * ("%0a" is a newline) and notes can quote request headers: keep only printable ASCII so a
 * client cannot forge log lines or send terminal escapes to whoever reads the log. */
static void est_log_clean(char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            *s = '?';
        }
    }
}

static void est_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    est_conn_req *r = *con_cls;
    if (!r) {
        return;
    }
    *con_cls = NULL;
    /* the next request on this connection (keep-alive) has request-timeout from now */
    const union MHD_ConnectionInfo *sci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    est_conn *k = sci ? sci->socket_context : NULL;
    int cut = 0;
    char addr[INET6_ADDRSTRLEN] = "-";
    if (k) {
        pthread_mutex_lock(&r->srv->conns_mu);
        k->deadline = est_mono() + r->srv->cfg.request_timeout;
        cut = k->cut;
        snprintf(addr, sizeof addr, "%s", k->addr);
        pthread_mutex_unlock(&r->srv->conns_mu);
    }
    double ms = (est_mono() - r->t0) * 1000.0;
    int status = r->responded ? r->status : 0;
    const char *why = "";
    if (cut) {
        why = " (request-timeout)";
    } else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        why = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED   ? " (timed out)"
              : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? " (shutdown)"
              : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT    ? " (client went away)"
              : toe == MHD_REQUEST_TERMINATED_READ_ERROR      ? " (read error)"
                                                              : " (aborted)";
    }
    /* One line per request: client-address method path status bytes duration auth-identity
     * [note]. Paths and notes hold no secrets (passwords and keys are never put into either). */
    est_log_clean(r->method);
    est_log_clean(r->path);
    est_log_clean(r->identity);
    est_log_clean(r->note);
    kl_log(r->quiet && !why[0] ? KL_LOG_DEBUG : KL_LOG_INFO, "%s %s %s %d %zu %.1fms %s%s%s%s",
           addr, r->method, r->path, status, r->bytes, ms, r->identity, r->note[0] ? " " : "",
           r->note, why);
    if (status) {
        est_metrics_request(&r->srv->metrics, r->ep, status);
    }
    atomic_fetch_sub(&r->srv->metrics.inflight, 1);
    if (r->job == EST_JOB_DONE) {
        /* answered by a worker but never sent (the connection went first): the answer may be
         * a serverkeygen private key, wiped by est_resp_free */
        est_resp_free(&r->rs);
    }
    kl_buf_free(&r->body);
    free(r);
}

static void est_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
            line[i] = '?';
        }
    }
    kl_warn("libmicrohttpd: %s", line);
}

/* ---------------------------------------------------------------------------------------- */
/* TLS material                                                                              */

/* GnuTLS asks for the PIN of the TLS key's own token ([est] tls-key-pin: env:VAR or
 * file:PATH, read each time it asks and wiped at once). Never the CA token's PIN: keyline-estd
 * has none. */
static int est_pin_cb(void *userdata, int attempt, const char *token_url, const char *token_label,
                      unsigned int flags, char *pin, size_t pin_max)
{
    (void)token_url;
    (void)flags;
    est_server *s = userdata;
    /* Never retry: a second wrong guess walks the token towards CKR_PIN_LOCKED. */
    if (attempt > 0) {
        kl_error("TLS key: PIN for token %s rejected", token_label ? token_label : "?");
        return -1;
    }
    if (!s->cfg.tls_key_pin) {
        kl_error("TLS key: token %s wants a PIN and [est] tls-key-pin is not set (env:VAR or "
                 "file:PATH)",
                 token_label ? token_label : "?");
        return -1;
    }
    kl_secret sec;
    kl_rc rc = kl_secret_read(&sec, s->cfg.tls_key_pin, kl_conf_dir(s->conf), "TLS key token PIN");
    int ret = -1;
    if (rc == KL_OK && sec.len < pin_max) {
        memcpy(pin, sec.value, sec.len + 1);
        ret = 0;
    } else if (rc != KL_OK) {
        kl_error("TLS key: %s", kl_errmsg());
    }
    kl_secret_free(&sec);
    return ret;
}

/* The value of attribute `attr` ("token") in the path of a pkcs11: URI, into out ("" absent). */
static void est_p11_attr(const char *uri, const char *attr, char *out, size_t outlen)
{
    out[0] = 0;
    if (!uri || strncmp(uri, "pkcs11:", 7) != 0) {
        return;
    }
    size_t al = strlen(attr);
    for (const char *p = uri + 7; *p && *p != '?';) {
        size_t n = strcspn(p, ";?");
        if (n > al && strncmp(p, attr, al) == 0 && p[al] == '=') {
            snprintf(out, outlen, "%.*s", (int)(n - al - 1), p + al + 1);
            return;
        }
        p += n;
        if (*p == ';') {
            p++;
        }
    }
}

static void est_tls_creds_free(est_tls_creds *c)
{
    if (!c) {
        return;
    }
    for (unsigned i = 0; i < c->n_pcerts; i++) {
        gnutls_pcert_deinit(&c->pcerts[i]);
    }
    free(c->pcerts);
    if (c->privkey) {
        gnutls_privkey_deinit(c->privkey);
    }
    free(c);
}

/* The key must be the certificate's: sign a fixed message with it and verify that with the
 * certificate's public key (works for a token key too, whose public half GnuTLS may not
 * read). */
static kl_rc est_tls_creds_check(const est_tls_creds *c, const char *cert_path, const char *key)
{
    kl_rc rc = KL_OK;
    gnutls_datum_t sig = {NULL, 0};
    static const char msg[] = "keyline-estd: does the TLS key match its certificate?";
    const gnutls_datum_t data = {(unsigned char *)msg, sizeof msg - 1};
    gnutls_pubkey_t pub = c->pcerts[0].pubkey;
    gnutls_digest_algorithm_t dig = GNUTLS_DIG_SHA256;
    unsigned bits = 0;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    (void)gnutls_pubkey_get_preferred_hash_algorithm(pub, &dig, NULL);
    gnutls_sign_algorithm_t sa = gnutls_pk_to_sign((gnutls_pk_algorithm_t)pk, dig);
    ENSURE(sa != GNUTLS_SIGN_UNKNOWN, KL_EINPUT, "%s: no signature algorithm for its %s key",
           cert_path, gnutls_pk_get_name((gnutls_pk_algorithm_t)pk));
    int r = gnutls_privkey_sign_data2(c->privkey, sa, 0, &data, &sig);
    ENSURE(r >= 0, KL_EINPUT,
           "TLS key %s does not match the certificate %s (cannot make a %s "
           "signature: %s)",
           key, cert_path, gnutls_sign_get_name(sa), gnutls_strerror(r));
    r = gnutls_pubkey_verify_data2(pub, sa, 0, &data, &sig);
    ENSURE(r >= 0, KL_EINPUT, "TLS key %s does not match the certificate %s (%s)", key, cert_path,
           gnutls_strerror(r));
out:
    gnutls_free(sig.data);
    return rc;
}

/* The serial of our certificate, in hex, for the log. */
static void est_tls_creds_serial(const est_tls_creds *c, char *out, size_t outlen)
{
    snprintf(out, outlen, "?");
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0) {
        return;
    }
    unsigned char ser[64];
    size_t n = sizeof ser;
    if (gnutls_x509_crt_import(crt, &c->pcerts[0].cert, GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_serial(crt, ser, &n) >= 0 && n * 2 < outlen) {
        for (size_t i = 0; i < n; i++) {
            snprintf(out + 2 * i, outlen - 2 * i, "%02X", ser[i]);
        }
    }
    gnutls_x509_crt_deinit(crt);
}

/* Read [est] tls-cert and tls-key (a PEM file, or a pkcs11: URI once est_tls_load has added
 * the module) into new credentials; the key must match the certificate. */
static kl_rc est_tls_creds_load(est_server *s, est_tls_creds **out)
{
    kl_rc rc = KL_OK;
    uint8_t *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    int r;
    est_tls_creds *c = calloc(1, sizeof *c);
    ENSURE(c, KL_EINTERNAL, "out of memory");

    TRY(kl_file_read(s->cfg.tls_cert, 1024 * 1024, &cert, &cert_len));
    ENSURE(strstr((char *)cert, "-----BEGIN CERTIFICATE-----"), KL_EINPUT, "%s: no PEM certificate",
           s->cfg.tls_cert);
    gnutls_datum_t d = {cert, (unsigned)cert_len};
    unsigned n = 16;
    c->pcerts = calloc(n, sizeof *c->pcerts);
    ENSURE(c->pcerts, KL_EINTERNAL, "out of memory");
    r = gnutls_pcert_list_import_x509_raw(c->pcerts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    ENSURE(r >= 0 && n > 0, KL_EINPUT, "%s: %s", s->cfg.tls_cert,
           r < 0 ? gnutls_strerror(r) : "no certificate");
    c->n_pcerts = n;

    r = gnutls_privkey_init(&c->privkey);
    ENSURE(r >= 0, KL_EINTERNAL, "gnutls_privkey_init: %s", gnutls_strerror(r));
    if (strncmp(s->cfg.tls_key, "pkcs11:", 7) == 0) {
        r = gnutls_privkey_import_url(c->privkey, s->cfg.tls_key, 0);
        ENSURE(r >= 0, KL_EHSM, "TLS key %s: %s", s->cfg.tls_key, gnutls_strerror(r));
    } else {
        TRY(kl_file_read(s->cfg.tls_key, 1024 * 1024, &key, &key_len));
        ENSURE(strstr((char *)key, "PRIVATE KEY-----"), KL_EINPUT, "%s: no PEM private key",
               s->cfg.tls_key);
        gnutls_datum_t kd = {key, (unsigned)key_len};
        r = gnutls_privkey_import_x509_raw(c->privkey, &kd, GNUTLS_X509_FMT_PEM, NULL, 0);
        ENSURE(r >= 0, KL_EINPUT, "%s: %s", s->cfg.tls_key, gnutls_strerror(r));
    }
    TRY(est_tls_creds_check(c, s->cfg.tls_cert, s->cfg.tls_key));
    *out = c;
    c = NULL;
out:
    if (key) {
        OPENSSL_cleanse(key, key_len);
        free(key);
    }
    free(cert);
    est_tls_creds_free(c);
    return rc;
}

/* Every TLS handshake (MHD_OPTION_HTTPS_CERT_CALLBACK) takes the current credentials. GnuTLS
 * keeps the pointers for the session without owning them: est_tls_reload frees replaced
 * credentials only when every connection that could have taken them is gone. */
static int est_cert_cb(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                       const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                       gnutls_pcert_st **pcert, unsigned int *pcert_length,
                       gnutls_privkey_t *privkey)
{
    (void)session;
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    est_server *s = est_the_server;
    if (!s) {
        return -1;
    }
    pthread_mutex_lock(&s->conns_mu);
    est_tls_creds *c = s->tls;
    pthread_mutex_unlock(&s->conns_mu);
    if (!c) {
        return -1;
    }
    *pcert = c->pcerts;
    *pcert_length = c->n_pcerts;
    *privkey = c->privkey;
    return 0;
}

/* SIGHUP: load tls-cert and tls-key again; new handshakes present them. On any error the
 * current ones stay. */
static kl_rc est_tls_reload(est_server *s)
{
    est_tls_creds *c = NULL;
    kl_rc rc = est_tls_creds_load(s, &c);
    if (rc != KL_OK) {
        return rc;
    }
    char serial[80];
    est_tls_creds_serial(c, serial, sizeof serial);
    pthread_mutex_lock(&s->conns_mu);
    est_tls_creds *old = s->tls;
    c->gen = ++s->tls_gen;
    s->tls = c;
    old->next = s->tls_retired;
    s->tls_retired = old;
    /* A connection opened at generation g takes credentials of generation g or later: those
     * older than every open connection are no longer reachable. */
    uint64_t oldest = s->tls_gen;
    for (est_conn *k = s->conns; k; k = k->next) {
        oldest = k->tls_gen < oldest ? k->tls_gen : oldest;
    }
    est_tls_creds **pp = &s->tls_retired, *drop = NULL;
    while (*pp) {
        est_tls_creds *x = *pp;
        if (x->gen < oldest) {
            *pp = x->next;
            x->next = drop;
            drop = x;
        } else {
            pp = &x->next;
        }
    }
    pthread_mutex_unlock(&s->conns_mu);
    while (drop) {
        est_tls_creds *x = drop;
        drop = x->next;
        est_tls_creds_free(x);
    }
    kl_info("TLS certificate %s (serial %s) and key reloaded: new connections present them",
            s->cfg.tls_cert, serial);
    return KL_OK;
}

/* The TLS key: a PEM file, or a key on a token of its own (pkcs11: URI) that GnuTLS opens
 * itself, with the module [est] tls-key-module (else [hsm] module) and the PIN from
 * [est] tls-key-pin. A key on the CA token is refused: keyline-estd holds no CA PIN. */
static kl_rc est_tls_load(est_server *s)
{
    kl_rc rc = KL_OK;
    int r;

    /* Keep GnuTLS from loading every system PKCS#11 module; we add ours when needed. */
    r = gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL);
    ENSURE(r >= 0, KL_EINTERNAL, "gnutls_pkcs11_init: %s", gnutls_strerror(r));

    if (strncmp(s->cfg.tls_key, "pkcs11:", 7) == 0) {
        char mine[128], ca_token[128];
        est_p11_attr(s->cfg.tls_key, "token", mine, sizeof mine);
        est_p11_attr(kl_conf_get(s->conf, "hsm", "token"), "token", ca_token, sizeof ca_token);
        ENSURE(!ca_token[0] || strcmp(mine, ca_token) != 0, KL_EUSAGE,
               "[est] tls-key is a key on the CA token (token=%s): keyline-estd holds no CA PIN; "
               "put the TLS key on a token of its own (with [est] tls-key-pin) or in a PEM file",
               mine);
        ENSURE(s->cfg.tls_key_module, KL_EUSAGE,
               "[est] tls-key is a pkcs11: URI but neither [est] tls-key-module nor [hsm] module "
               "names the PKCS#11 module");
        gnutls_pkcs11_set_pin_function(est_pin_cb, s);
        r = gnutls_pkcs11_add_provider(s->cfg.tls_key_module, NULL);
        ENSURE(r >= 0, KL_EHSM, "GnuTLS cannot load PKCS#11 module %s: %s", s->cfg.tls_key_module,
               gnutls_strerror(r));
        kl_info("TLS key %s on token %s (module %s)", s->cfg.tls_key, mine, s->cfg.tls_key_module);
    }
    TRY(est_tls_creds_load(s, &s->tls));
    est_the_server = s;
out:
    return rc;
}

static kl_rc est_pem_append(kl_buf *pem, X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509(b, x)) {
        BIO_free(b);
        return kl_fail_ssl(KL_EINTERNAL, "PEM_write_bio_X509");
    }
    char *p;
    long n = BIO_get_mem_data(b, &p);
    kl_rc rc = kl_buf_put(pem, p, (size_t)n);
    BIO_free(b);
    return rc;
}

/* Client trust: every certificate of each client-ca label's chain (keyline-cad's ca-chain op).
 * The direct issuers are kept apart: a client's certificate must be issued by one of them, not
 * by any CA that happens to chain to a trusted root. */
static kl_rc est_trust_load(est_server *s)
{
    kl_rc rc = KL_OK;
    kl_buf pem;
    kl_buf_init(&pem, 4 * 1024 * 1024, 0);
    STACK_OF(X509) *seen = sk_X509_new_null();
    time_t *nb = calloc(s->cfg.n_client_ca + 1, sizeof *nb);
    time_t *na = calloc(s->cfg.n_client_ca + 1, sizeof *na);
    s->client_ca_nb = nb;
    s->client_ca_na = na;
    ENSURE(seen && nb && na && (s->client_cas = sk_X509_new_null()) != NULL, KL_EINTERNAL,
           "out of memory");
    for (size_t i = 0; i < s->cfg.n_client_ca; i++) {
        STACK_OF(X509) *chain = NULL;
        rc = est_cad_certs(s, CAP_OP_CA_CHAIN, s->cfg.client_ca[i], &chain);
        if (rc != KL_OK) {
            rc = kl_wrap(rc, "[est] client-ca %s", s->cfg.client_ca[i]);
            goto out;
        }
        /* The window in which a client certificate verified under this client-ca stays
         * verified (est_conn_auth): within every certificate of the chain. An unreadable
         * date gives an empty window (never cached). */
        time_t wnb = 0, wna = (time_t)INT64_MAX;
        for (int j = 0; j < sk_X509_num(chain); j++) {
            time_t t;
            X509 *x = sk_X509_value(chain, j);
            if (!est_asn1_time_get(X509_get0_notBefore(x), &t)) {
                t = (time_t)INT64_MAX;
            }
            wnb = t > wnb ? t : wnb;
            if (!est_asn1_time_get(X509_get0_notAfter(x), &t)) {
                t = 0;
            }
            wna = t < wna ? t : wna;
        }
        for (int j = 0; j < sk_X509_num(chain); j++) {
            X509 *x = sk_X509_value(chain, j);
            if (j == 0) {
                X509_up_ref(x);
                if (!sk_X509_push(s->client_cas, x)) {
                    X509_free(x);
                    rc = kl_fail(KL_EINTERNAL, "out of memory");
                    break;
                }
                int k = sk_X509_num(s->client_cas) - 1;
                nb[k] = wnb;
                na[k] = wna;
            }
            int dup = 0;
            for (int k = 0; k < sk_X509_num(seen) && !dup; k++) {
                dup = X509_cmp(x, sk_X509_value(seen, k)) == 0;
            }
            if (!dup) {
                X509_up_ref(x);
                sk_X509_push(seen, x);
                rc = est_pem_append(&pem, x);
            }
        }
        sk_X509_pop_free(chain, X509_free);
        TRY(rc);
    }
    if (pem.len) {
        const char *str;
        TRY(kl_buf_cstr(&pem, &str));
        s->trust_pem = (char *)kl_buf_steal(&pem, NULL);
    } else {
        kl_warn("[est] client-ca is empty: TLS client certificates are not requested, so "
                "simplereenroll cannot succeed");
    }
out:
    sk_X509_pop_free(seen, X509_free);
    kl_buf_free(&pem);
    return rc;
}

/* Each label's profile at keyline-cad: it must exist and be open to this process's role
 * (refused at start-up with keyline-cad's reason otherwise); what it asks of a CSR is fetched
 * again as /csrattrs and enrollment need it (est_handlers.c). */
static kl_rc est_labels_load(est_server *s)
{
    kl_rc rc = KL_OK;
    s->label_rt = calloc(s->cfg.n_labels, sizeof *s->label_rt);
    ENSURE(s->label_rt, KL_EINTERNAL, "out of memory");
    for (size_t i = 0; i < s->cfg.n_labels; i++) {
        pthread_mutex_init(&s->label_rt[i].lock, NULL);
        kl_buf_init(&s->label_rt[i].cacerts_b64, 4 * 1024 * 1024, 0);
    }
    for (size_t i = 0; i < s->cfg.n_labels; i++) {
        const est_label *l = &s->cfg.labels[i];
        est_profile_info pi;
        rc = est_cad_profile(s, l->profile, &pi);
        if (rc != KL_OK) {
            rc = kl_wrap(rc, "EST label '%s': keyline-cad profile %s", l->name, l->profile);
            goto out;
        }
        if (l->issuer && strcmp(l->issuer, pi.issuer) != 0) {
            kl_warn("EST label '%s': [est] issuer is %s, but keyline-cad's profile %s issues with "
                    "%s (keyline-cad decides)",
                    l->name, l->issuer, l->profile, pi.issuer);
        }
        kl_info("EST label '%s': keyline-cad profile %s (issuer %s)%s", l->name, l->profile,
                pi.issuer, l->approval_manual ? ", held for approval" : "");
    }
out:
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Life cycle                                                                                */

kl_rc est_server_new(const kl_conf *conf, est_server **out)
{
    kl_rc rc = KL_OK;
    est_server *s = calloc(1, sizeof *s);
    ENSURE(s, KL_EINTERNAL, "out of memory");
    s->conf = conf;
    est_metrics_init(&s->metrics);
    /* writers first: a stream of failed Basic logins (each one hash of every kind and cost the
     * file holds, under the read lock) must not hold a SIGHUP reload off */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->ht_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&s->conns_mu, NULL);
    atomic_init(&s->stopping, 0);
    TRY(est_config_load(conf, &s->cfg));
    char obsolete[128];
    est_config_obsolete(conf, obsolete, sizeof obsolete);
    if (obsolete[0]) {
        kl_warn("%s: %s no longer appl%s and %s ignored: keyline-cad holds the token (which CA "
                "keys it signs CRLs with is [cad] ca-keys)",
                kl_conf_file(conf), obsolete, strchr(obsolete, ',') ? "y" : "ies",
                strchr(obsolete, ',') ? "are" : "is");
    }
    if (s->cfg.htpasswd) {
        TRY(kl_htpasswd_load(s->cfg.htpasswd, &s->htpasswd));
        kl_info("htpasswd %s: %zu users", s->cfg.htpasswd, kl_htpasswd_count(s->htpasswd));
    }
    TRY(est_cad_open(s, EST_CAD_WAIT));
    TRY(est_labels_load(s));
    TRY(est_trust_load(s));
    TRY(est_tls_load(s));
    *out = s;
    s = NULL;
out:
    est_server_free(s);
    return rc;
}

kl_rc est_server_reload(est_server *s)
{
    /* The certificate first, on its own: a bad one is logged here and does not keep the
     * users from being reloaded (main reports this function's error as about them). */
    if (est_tls_reload(s) != KL_OK) {
        kl_error("SIGHUP: TLS certificate and key not reloaded, the previous ones stay in use: %s",
                 kl_errmsg());
    }
    if (!s->cfg.htpasswd) {
        return KL_OK;
    }
    kl_htpasswd *h = NULL;
    kl_rc rc = kl_htpasswd_load(s->cfg.htpasswd, &h);
    if (rc != KL_OK) {
        return rc; /* keep the old file's users */
    }
    pthread_rwlock_wrlock(&s->ht_lock);
    kl_htpasswd *old = s->htpasswd;
    s->htpasswd = h;
    est_basic_forget_all(); /* credentials remembered by connections are checked again */
    pthread_rwlock_unlock(&s->ht_lock);
    kl_htpasswd_free(old);
    kl_info("htpasswd %s reloaded: %zu users", s->cfg.htpasswd, kl_htpasswd_count(h));
    return KL_OK;
}

static struct MHD_Daemon *est_daemon_start(est_server *s, est_listener *L, const char *hostport)
{
    int tls = L->tls;
    struct sockaddr_storage ss;
    socklen_t sl;
    int v6 = 0;
    if (kl_hostport_resolve(hostport, &ss, &sl, &v6) != KL_OK) {
        return NULL;
    }
    /* `threads` epoll threads do the I/O (TLS, HTTP); with workers, a complete request is
     * handed to the worker pool and its connection suspended until the answer is ready, so a
     * request that waits (HSM, store fsync) never holds up the other connections of its I/O
     * thread. Threads are never created per connection (GnuTLS 3.7 keeps per-thread random
     * generator state until exit: a thread per connection grew by ~240 bytes per connection). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0) |
                     (tls ? MHD_USE_TLS : 0);
    struct MHD_OptionItem o[24];
    size_t n = 0;
    /* MHD_OPTION_ARRAY: integers and function pointers in `value`, data pointers and
     * closures in `ptr_value`. */
#define EST_OPT(opt, val, ptr) (o[n++] = (struct MHD_OptionItem){(opt), (intptr_t)(val), (ptr)})
    EST_OPT(MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)est_mhd_log, NULL); /* first, or MHD warns */
    EST_OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    if (!L->metrics_only && s->cfg.threads > 1) {
        /* the plain-HTTP listener too: OCSP answers from the front cache are served in the
         * I/O threads, on every core */
        EST_OPT(MHD_OPTION_THREAD_POOL_SIZE, s->cfg.threads, NULL);
    }
    EST_OPT(MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections, NULL);
    if (s->cfg.per_ip_connections) {
        EST_OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->cfg.per_ip_connections, NULL);
    }
    EST_OPT(MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.timeout, NULL);
    EST_OPT(MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)est_completed, NULL);
    EST_OPT(MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)est_conn_notify, L);
    EST_OPT(MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)est_unescape, NULL);
    if (tls) {
        EST_OPT(MHD_OPTION_HTTPS_PRIORITIES, 0, s->cfg.tls_priorities);
        /* always the callback, never MHD_OPTION_HTTPS_MEM_CERT: SIGHUP swaps what it returns */
        EST_OPT(MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)est_cert_cb);
        if (s->trust_pem) {
            /* Makes MHD ask for (not require) a client certificate; we verify it per request. */
            EST_OPT(MHD_OPTION_HTTPS_MEM_TRUST, 0, s->trust_pem);
        }
    }
    EST_OPT(MHD_OPTION_END, 0, NULL);
#undef EST_OPT
    return MHD_start_daemon(flags, 0, NULL, NULL, est_ahc, L, MHD_OPTION_ARRAY, o, MHD_OPTION_END);
}

kl_rc est_server_start(est_server *s)
{
    if (s->cfg.workers) {
        kl_rc wrc = est_workers_start(s);
        if (wrc != KL_OK) {
            return wrc;
        }
    }
    kl_rc src = est_sweeper_start(s);
    if (src != KL_OK) {
        return src;
    }
    est_listener_tls = (est_listener){s, 1, 0};
    est_listener_http = (est_listener){s, 0, 0};
    est_listener_metrics = (est_listener){s, 0, 1};
    s->tls_d = est_daemon_start(s, &est_listener_tls, s->cfg.listen);
    if (!s->tls_d) {
        return kl_fail(KL_EIO,
                       "cannot start the TLS listener on %s (address in use? bad "
                       "certificate or key?)",
                       s->cfg.listen);
    }
    char per_ip[32] = "no limit";
    if (s->cfg.per_ip_connections) {
        snprintf(per_ip, sizeof per_ip, "%u", s->cfg.per_ip_connections);
    }
    kl_info("EST over TLS on %s (%u I/O threads, %u workers, %u connections max, %s per "
            "address, %us timeout, %us per request)",
            s->cfg.listen, s->cfg.threads, s->n_workers, s->cfg.max_connections, per_ip,
            s->cfg.timeout, s->cfg.request_timeout);
    if (s->cfg.http_listen) {
        s->http_d = est_daemon_start(s, &est_listener_http, s->cfg.http_listen);
        if (!s->http_d) {
            return kl_fail(KL_EIO, "cannot start the plain-HTTP listener on %s",
                           s->cfg.http_listen);
        }
        kl_info("CRL/OCSP over plain HTTP on %s", s->cfg.http_listen);
    }
    if (s->cfg.metrics_listen) {
        s->metrics_d = est_daemon_start(s, &est_listener_metrics, s->cfg.metrics_listen);
        if (!s->metrics_d) {
            return kl_fail(KL_EIO, "cannot start the metrics listener on %s",
                           s->cfg.metrics_listen);
        }
        kl_info("/metrics and /healthz over plain HTTP on %s (and still on the TLS listener)",
                s->cfg.metrics_listen);
    }
    return KL_OK;
}

void est_server_stop(est_server *s)
{
    atomic_store(&s->stopping, 1);
    struct MHD_Daemon *d[3] = {s->tls_d, s->http_d, s->metrics_d};
    for (int i = 0; i < 3; i++) {
        if (d[i]) {
            MHD_socket fd = MHD_quiesce_daemon(d[i]);
            if (fd != MHD_INVALID_SOCKET) {
                close(fd);
            }
        }
    }
    /* Finish what is in flight (an enrollment that reached the HSM completes and is answered);
     * idle keep-alive connections are simply closed by MHD_stop_daemon. */
    double deadline = est_mono() + s->cfg.shutdown_grace;
    while (atomic_load(&s->metrics.inflight) > 0 && est_mono() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->metrics.inflight) > 0) {
        kl_warn("shutdown: %llu requests still running after %us, closing them",
                (unsigned long long)atomic_load(&s->metrics.inflight), s->cfg.shutdown_grace);
    }
    /* A request a worker has taken is finished and its connection resumed (never stop a
     * daemon under a suspended connection); give MHD a moment to send those answers. */
    est_workers_stop(s);
    deadline = est_mono() + 2;
    while (atomic_load(&s->metrics.inflight) > 0 && est_mono() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < 3; i++) {
        if (d[i]) {
            MHD_stop_daemon(d[i]);
        }
    }
    s->tls_d = s->http_d = s->metrics_d = NULL;
    est_sweeper_stop(s);
}

void est_server_free(est_server *s)
{
    if (!s) {
        return;
    }
    if (s->tls_d || s->http_d || s->metrics_d) {
        est_server_stop(s);
    }
    est_workers_stop(s); /* started, but a daemon did not */
    est_sweeper_stop(s);
    pthread_mutex_destroy(&s->conns_mu);
    if (s->label_rt) {
        for (size_t i = 0; i < s->cfg.n_labels; i++) {
            pthread_mutex_destroy(&s->label_rt[i].lock);
            kl_buf_free(&s->label_rt[i].cacerts_b64);
        }
        free(s->label_rt);
    }
    sk_X509_pop_free(s->client_cas, X509_free);
    free(s->client_ca_nb);
    free(s->client_ca_na);
    free(s->trust_pem);
    est_the_server = NULL;
    est_tls_creds_free(s->tls);
    while (s->tls_retired) {
        est_tls_creds *x = s->tls_retired;
        s->tls_retired = x->next;
        est_tls_creds_free(x);
    }
    cac_close(s->cad);
    est_crl_cache_free();
    est_ocsp_cache_free();
    pthread_mutex_lock(&est_ticket.mu);
    est_ticket_key_wipe();
    pthread_mutex_unlock(&est_ticket.mu);
    gnutls_pkcs11_deinit();
    kl_htpasswd_free(s->htpasswd);
    pthread_rwlock_destroy(&s->ht_lock);
    est_config_free(&s->cfg);
    free(s);
}
