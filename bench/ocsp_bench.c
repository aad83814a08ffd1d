/* ocsp_bench: OCSP answers served from keyline-cad's pre-produced answers against signing
 * them, and both against the raw signing rate of the same token, in one run.
 *
 *   ocsp_bench -c keyline.conf --signer LABEL --http-port N --cad SOCKET --seconds S
 *              --clients N [--rounds R] [--peer-port P [--server-pids PIDS --peer-pids PIDS]]
 *              REQ.der... [--live LIVE.der]
 *
 * 1. raw: 2 threads sign SHA-256 digests with the token key LABEL (the delegated OCSP signer
 *    whose answers are measured);
 * 2. http: N clients, one keep-alive HTTP/1.1 connection each to keyline-estd's plain-HTTP
 *    listener, POST /ocsp of the nonce-less requests REQ.der in turn (answered from the
 *    pre-produced answers), counting 200s that carry an OCSP response. One request in flight
 *    per connection; the connections are driven by up to HTTP_THREADS threads with epoll;
 * 3. cad: the same requests straight to keyline-cad over its socket (one connection and one
 *    thread per client), without the HTTP front end;
 * 4. with --peer-port: the HTTP ceiling of this machine. The same clients GET the same
 *    answers (RFC 5019's GET /ocsp/{url-encoded base64 of the request}) from keyline-estd and
 *    then from a static web server on port P (ocsp_bench.sh: nginx, serving each answer as a
 *    file), which answers with no work of its own beyond HTTP: what any HTTP front end reaches
 *    here with the same load generator. With the pids (comma-separated: keyline-estd's, the
 *    static server's processes) also the CPU time (user + system, /proc) each used per answer;
 * 5. live: LIVE.der (a request with a nonce: never pre-produced, never cached, signed per
 *    request) over HTTP, the rate of answering by signing.
 * 1-4 run in R interleaved rounds (raw, http, cad, [get, peer,] raw, ...; default 3) of S
 * seconds each and each figure is the median of its rounds: other load on the machine that
 * comes and goes during the run then weighs on the rate and its limit alike.
 * Figures for bench/results.json (bench_lib.h): each rate against the raw signing rate; the
 * issue's target is pre-produced answers at >= 10 times it. With the peer: the static server
 * against the raw signing rate too, and keyline-estd's GET rate against the static server's;
 * with the pids, keyline-estd's CPU per answer against the static server's. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_lib.h"
#include "cac.h"
#include "cap.h"
#include "kl_b64.h"
#include "kl_file.h"

#define MAX_REQS 4096
#define MAX_ROUNDS 15
/* threads of the HTTP load, each driving its share of the connections with epoll: with 8
 * clients one each. Fewer threads (2, as wrk would) cost less CPU per request on a quiet
 * machine but lose to other processes on a busy one: the scheduler shares CPUs by thread,
 * and the cad path and the raw signing are not held to fewer threads than they have. */
#define HTTP_THREADS 8

static struct {
    const char *conf, *signer, *cad, *live, *server_pids, *peer_pids;
    int port, peer_port, seconds, clients, rounds;
    double until_hint; /* the end of the HTTP measurement under way */
} opt = {.conf = "keyline.conf", .seconds = 5, .clients = 8, .rounds = 3};

typedef struct {
    uint8_t *der;
    size_t len;
    char *http; /* the whole POST */
    size_t http_len;
    char *get; /* the whole GET (RFC 5019 A.1) */
    size_t get_len;
} req_t;

/* What an HTTP measurement sends: the POSTs, the GETs, or the live request (POST). */
typedef enum { H_POST, H_GET, H_LIVE } hkind;

static req_t g_reqs[MAX_REQS], g_live;
static size_t g_nreqs;

/* The cad clients: one thread and one keyline-cad connection each. */
typedef struct {
    double until;
    long ok, fail;
    size_t next;
} worker;

static int http_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* One HTTP client connection of the epoll loop: one request in flight, its answer read into
 * buf as it comes. */
typedef struct {
    int fd;
    size_t next; /* index of the request in flight */
    char buf[16384];
    size_t have;
} hconn;

/* The answer in h->buf: 1 a whole 200 carrying an OCSP response, 0 not complete yet, -1 any
 * other answer. */
static int hconn_answer(hconn *h)
{
    h->buf[h->have] = 0;
    char *end = strstr(h->buf, "\r\n\r\n");
    if (!end) {
        return h->have >= sizeof h->buf - 1 ? -1 : 0;
    }
    int status = 0;
    const char *cl = strcasestr(h->buf, "\r\ncontent-length:");
    if (sscanf(h->buf, "HTTP/1.%*d %d", &status) != 1 || !cl || cl > end) {
        return -1;
    }
    size_t body = strtoul(cl + 17, NULL, 10), head = (size_t)(end + 4 - h->buf);
    if (head + body >= sizeof h->buf) {
        return -1;
    }
    if (h->have < head + body) {
        return 0;
    }
    *end = 0;
    return status == 200 && body > 0 && h->have == head + body &&
                   strcasestr(h->buf, "application/ocsp-response")
               ? 1
               : -1;
}

/* One thread of the HTTP load: connections c[0..n), one request in flight on each, until
 * `until`. */
typedef struct {
    hconn *c;
    int n, port;
    hkind kind;
    double until;
    long ok, fail;
} hloop;

/* (Re)connect h if needed and send it its next request (blocking: a request is a few hundred
 * bytes, the socket buffer takes it whole); 0 or -1. */
static int hconn_send(int ep, hconn *h, const hloop *l)
{
    if (h->fd < 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
        if ((h->fd = http_connect(l->port)) < 0) {
            return -1;
        }
        if (epoll_ctl(ep, EPOLL_CTL_ADD, h->fd, &ev) != 0) {
            close(h->fd);
            h->fd = -1;
            return -1;
        }
    }
    const req_t *r = l->kind == H_LIVE ? &g_live : &g_reqs[h->next++ % g_nreqs];
    const char *msg = l->kind == H_GET ? r->get : r->http;
    size_t len = l->kind == H_GET ? r->get_len : r->http_len;
    h->have = 0;
    if (write(h->fd, msg, len) != (ssize_t)len) {
        close(h->fd); /* leaves the epoll set with it */
        h->fd = -1;
        return -1;
    }
    return 0;
}

/* What arrived on h: counts a complete answer in *ok (or a failure in *fail) and sends the
 * next request. */
static void hconn_readable(int ep, hconn *h, hloop *l)
{
    ssize_t n = recv(h->fd, h->buf + h->have, sizeof h->buf - 1 - h->have, MSG_DONTWAIT);
    int a = n > 0 ? (h->have += (size_t)n, hconn_answer(h)) : -1;
    if (a == 0) {
        return;
    }
    if (a > 0) {
        l->ok++;
    } else {
        l->fail++;
        close(h->fd);
        h->fd = -1;
    }
    while (hconn_send(ep, h, l) != 0 && bench_now() < opt.until_hint) {
        l->fail++;
        usleep(10000);
    }
}

static void *http_loop(void *p)
{
    hloop *l = p;
    int ep = epoll_create1(0);
    for (int i = 0; ep >= 0 && i < l->n; i++) {
        if (hconn_send(ep, &l->c[i], l) != 0) {
            l->fail++;
        }
    }
    struct epoll_event ev[64];
    while (ep >= 0 && bench_now() < l->until) {
        int k = epoll_wait(ep, ev, 64, 100);
        for (int i = 0; i < k; i++) {
            hconn_readable(ep, ev[i].data.ptr, l);
        }
    }
    for (int i = 0; i < l->n; i++) {
        if (l->c[i].fd >= 0) {
            close(l->c[i].fd);
        }
    }
    if (ep >= 0) {
        close(ep);
    } else {
        l->fail++;
    }
    return NULL;
}

/* opt.clients keep-alive connections to `port` driven by HTTP_THREADS epoll threads for
 * opt.seconds; answers/s. */
static double http_measure(int port, hkind kind, long *fails)
{
    int n = opt.clients > 64 ? 64 : opt.clients, nt = n < HTTP_THREADS ? n : HTTP_THREADS;
    hconn *c = calloc((size_t)n, sizeof *c);
    hloop l[HTTP_THREADS];
    pthread_t t[HTTP_THREADS];
    if (!c) {
        (*fails)++;
        return 0;
    }
    double t0 = bench_now();
    opt.until_hint = t0 + opt.seconds;
    for (int i = 0; i < n; i++) {
        c[i] = (hconn){.fd = -1, .next = (size_t)i * 7};
    }
    for (int i = 0; i < nt; i++) {
        int from = n * i / nt, to = n * (i + 1) / nt;
        l[i] = (hloop){
            .c = c + from, .n = to - from, .port = port, .kind = kind, .until = opt.until_hint};
        pthread_create(&t[i], NULL, http_loop, &l[i]);
    }
    long ok = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
        ok += l[i].ok;
        *fails += l[i].fail;
    }
    free(c);
    return (double)ok / (bench_now() - t0);
}

/* CPU seconds (user + system) the processes `pids` (comma-separated) have used so far; -1 when
 * one of them cannot be read. */
static double cpu_seconds(const char *pids)
{
    double sum = 0;
    const char *p = pids;
    while (p && *p) {
        char path[64], line[1024], *next = NULL;
        long pid = strtol(p, &next, 10);
        if (next == p || pid <= 0) {
            return -1;
        }
        p = next;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        char *end = f && fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
        unsigned long ut = 0, st = 0;
        if (f) {
            fclose(f);
        }
        /* after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime (proc(5) fields 3-15) */
        if (!end || sscanf(end + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                           &st) != 2) {
            return -1;
        }
        sum += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        p += *p == ',';
    }
    return sum;
}

/* GETs to `port` (http_measure); *cpu_us: the CPU microseconds per answer of the processes
 * `pids` over the measurement (0 without pids, -1 when they cannot be read). */
static double get_measure(int port, const char *pids, long *fails, double *cpu_us)
{
    double c0 = pids ? cpu_seconds(pids) : 0, t0 = bench_now();
    double rate = http_measure(port, H_GET, fails);
    double dt = bench_now() - t0, c1 = pids ? cpu_seconds(pids) : 0;
    *cpu_us = !pids ? 0 : c0 < 0 || c1 < 0 || rate <= 0 ? -1 : (c1 - c0) * 1e6 / (rate * dt);
    return rate;
}

static int cad_roundtrip(cac *c, const req_t *r)
{
    kl_buf req;
    cac_resp resp;
    memset(&resp, 0, sizeof resp);
    kl_buf_init(&req, 1 << 16, 0);
    int ok = cap_msg_begin(&req, CAP_OP_OCSP, 0) == KL_OK &&
             cap_put_bytes(&req, CAP_T_OCSP_REQ, r->der, r->len) == KL_OK &&
             cap_msg_end(&req) == KL_OK && cac_call(c, &req, &resp) == KL_OK &&
             cap_find(&resp.msg, CAP_T_OCSP_RESP, 0) != NULL;
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return ok ? 0 : -1;
}

static void *cad_worker(void *p)
{
    worker *w = p;
    cac *c = NULL;
    while (bench_now() < w->until) {
        if (!c && cac_open(&c, opt.cad, 30, NULL, 0) != KL_OK) {
            w->fail++;
            usleep(10000);
            continue;
        }
        if (cad_roundtrip(c, &g_reqs[w->next++ % g_nreqs]) == 0) {
            w->ok++;
        } else {
            w->fail++;
        }
    }
    cac_close(c);
    return NULL;
}

static double cad_measure(long *fails)
{
    worker w[64];
    pthread_t t[64];
    int n = opt.clients > 64 ? 64 : opt.clients;
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        w[i] = (worker){.until = t0 + opt.seconds, .next = (size_t)i * 7};
        pthread_create(&t[i], NULL, cad_worker, &w[i]);
    }
    long ok = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
        *fails += w[i].fail;
    }
    return (double)ok / (bench_now() - t0);
}

/* r->get: GET /ocsp/ and the request's base64, '+', '/' and '=' percent-encoded (RFC 5019
 * A.1, RFC 3986); 0 or -1. */
static int make_get(req_t *r)
{
    kl_buf b64;
    kl_buf_init(&b64, 1 << 17, 0);
    if (kl_b64_encode(r->der, r->len, 0, 0, &b64) != KL_OK) {
        kl_buf_free(&b64);
        return -1;
    }
    r->get = malloc(b64.len * 3 + 128);
    if (!r->get) {
        kl_buf_free(&b64);
        return -1;
    }
    size_t n = (size_t)sprintf(r->get, "GET /ocsp/");
    for (size_t i = 0; i < b64.len; i++) {
        char c = (char)b64.data[i];
        n += (size_t)(c == '+' || c == '/' || c == '=' ? sprintf(r->get + n, "%%%02X", c)
                                                       : sprintf(r->get + n, "%c", c));
    }
    n += (size_t)sprintf(r->get + n, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    r->get_len = n;
    kl_buf_free(&b64);
    return 0;
}

static int load_req(const char *path, req_t *r)
{
    if (kl_file_read(path, 1 << 16, &r->der, &r->len) != KL_OK) {
        fprintf(stderr, "ocsp_bench: %s\n", kl_errmsg());
        return -1;
    }
    r->http = malloc(r->len + 256);
    if (!r->http || make_get(r) != 0) {
        fprintf(stderr, "ocsp_bench: out of memory\n");
        return -1;
    }
    int n = snprintf(r->http, 256,
                     "POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/ocsp-request\r\nContent-Length: %zu\r\n\r\n",
                     r->len);
    memcpy(r->http + n, r->der, r->len);
    r->http_len = (size_t)n + r->len;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"config", required_argument, NULL, 'c'},    {"signer", required_argument, NULL, 'k'},
        {"http-port", required_argument, NULL, 'p'}, {"cad", required_argument, NULL, 'd'},
        {"seconds", required_argument, NULL, 's'},   {"clients", required_argument, NULL, 'n'},
        {"live", required_argument, NULL, 'l'},      {"rounds", required_argument, NULL, 'r'},
        {"peer-port", required_argument, NULL, 'P'}, {"server-pids", required_argument, NULL, 'S'},
        {"peer-pids", required_argument, NULL, 'Q'}, {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.conf = optarg; break;
        case 'k': opt.signer = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'd': opt.cad = optarg; break;
        case 's': opt.seconds = atoi(optarg); break;
        case 'n': opt.clients = atoi(optarg); break;
        case 'l': opt.live = optarg; break;
        case 'r': opt.rounds = atoi(optarg); break;
        case 'P': opt.peer_port = atoi(optarg); break;
        case 'S': opt.server_pids = optarg; break;
        case 'Q': opt.peer_pids = optarg; break;
        default: return -1;
        }
    }
    if (!opt.signer || !opt.cad || !opt.live || opt.port <= 0 || optind >= argc ||
        opt.seconds < 1 || opt.clients < 1 || opt.rounds < 1 || opt.rounds > MAX_ROUNDS ||
        opt.peer_port < 0 || (!opt.server_pids != !opt.peer_pids) ||
        (opt.server_pids && !opt.peer_port)) {
        fprintf(stderr, "usage: ocsp_bench -c CONF --signer LABEL --http-port N --cad SOCKET "
                        "--live LIVE.der [--seconds S] [--clients N] [--rounds R] "
                        "[--peer-port P [--server-pids PID,... --peer-pids PID,...]] "
                        "REQ.der...\n");
        return -1;
    }
    return 0;
}

/* The measured rates of one run, each the median of its rounds; with the pids, the CPU
 * microseconds per answer of keyline-estd (R_GET_CPU) and of the static server (R_PEER_CPU). */
enum { R_RAW, R_HTTP, R_CAD, R_GET, R_PEER, R_GET_CPU, R_PEER_CPU, R__N };

/* Rounds of raw, http, cad (and get, peer): r[kind][round]; failures in f[kind]. */
static int run_rounds(double r[R__N][MAX_ROUNDS], long f[R__N])
{
    for (int i = 0; i < opt.rounds; i++) {
        r[R_RAW][i] = bench_raw_sign_label(opt.conf, opt.signer, 2, opt.seconds);
        if (r[R_RAW][i] <= 0) {
            return -1;
        }
        r[R_HTTP][i] = http_measure(opt.port, H_POST, &f[R_HTTP]);
        r[R_CAD][i] = cad_measure(&f[R_CAD]);
        printf("round %d: raw %.0f/s, http %.0f/s (%.1fx), cad %.0f/s (%.1fx)", i + 1, r[R_RAW][i],
               r[R_HTTP][i], r[R_HTTP][i] / r[R_RAW][i], r[R_CAD][i], r[R_CAD][i] / r[R_RAW][i]);
        if (opt.peer_port) {
            r[R_GET][i] = get_measure(opt.port, opt.server_pids, &f[R_GET], &r[R_GET_CPU][i]);
            r[R_PEER][i] = get_measure(opt.peer_port, opt.peer_pids, &f[R_PEER], &r[R_PEER_CPU][i]);
            printf(", GET %.0f/s, static server GET %.0f/s (%.2f of it)", r[R_GET][i], r[R_PEER][i],
                   r[R_GET][i] / r[R_PEER][i]);
            if (r[R_GET_CPU][i] < 0 || r[R_PEER_CPU][i] < 0) {
                fprintf(stderr, "ocsp_bench: cannot read the servers' CPU time in /proc\n");
                return -1;
            }
            if (opt.server_pids) {
                printf(", CPU per answer %.1f us and %.1f us", r[R_GET_CPU][i], r[R_PEER_CPU][i]);
            }
        }
        printf("\n");
    }
    return 0;
}

/* figure `base`.{clients}c */
static void ocsp_figure(const char *base, double v, const char *limit, double lv, double target)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%dc", base, opt.clients);
    bench_figure(name, v, "1/s", limit, lv, target);
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        return 2;
    }
    for (int i = optind; i < argc && g_nreqs < MAX_REQS; i++) {
        if (load_req(argv[i], &g_reqs[g_nreqs++]) != 0) {
            return 1;
        }
    }
    if (load_req(opt.live, &g_live) != 0) {
        return 1;
    }
    double r[R__N][MAX_ROUNDS], m[R__N] = {0};
    long f[R__N] = {0}, f_live = 0;
    if (run_rounds(r, f) != 0) {
        return 1;
    }
    for (int k = 0; k < R__N; k++) {
        m[k] = k < R_GET || opt.peer_port ? bench_median(r[k], opt.rounds) : 0;
    }
    double live = http_measure(opt.port, H_LIVE, &f_live);
    printf("raw signing with %s (2 threads): %.0f/s (median of %d rounds); %zu certificates, "
           "%d clients\n",
           opt.signer, m[R_RAW], opt.rounds, g_nreqs, opt.clients);
    printf("errors: http %ld, cad %ld, get %ld, static server %ld, live %ld\n", f[R_HTTP], f[R_CAD],
           f[R_GET], f[R_PEER], f_live);
    bench_figure("ocsp.hsm.raw_sign.2t", m[R_RAW], "1/s", NULL, 0, 0);
    ocsp_figure("ocsp.preproduced.http", m[R_HTTP], "ocsp.hsm.raw_sign.2t", m[R_RAW], 10);
    ocsp_figure("ocsp.preproduced.cad", m[R_CAD], "ocsp.hsm.raw_sign.2t", m[R_RAW], 10);
    if (opt.peer_port) {
        char peer[64];
        snprintf(peer, sizeof peer, "ocsp.static_server.get.%dc", opt.clients);
        ocsp_figure("ocsp.static_server.get", m[R_PEER], "ocsp.hsm.raw_sign.2t", m[R_RAW], 0);
        ocsp_figure("ocsp.preproduced.get", m[R_GET], peer, m[R_PEER], 0);
    }
    if (opt.peer_port && opt.server_pids) {
        /* lower is better: keyline-estd's CPU per cached answer against the static server's */
        bench_figure("ocsp.static_server.get.cpu_us", m[R_PEER_CPU], "us", NULL, 0, 0);
        bench_figure("ocsp.preproduced.get.cpu_us", m[R_GET_CPU], "us",
                     "ocsp.static_server.get.cpu_us", m[R_PEER_CPU], 0);
    }
    ocsp_figure("ocsp.live_signed.http", live, "ocsp.hsm.raw_sign.2t", m[R_RAW], 0);
    long fails = f_live;
    for (int k = 0; k < R__N; k++) {
        fails += f[k];
    }
    return fails ? 1 : 0;
}
