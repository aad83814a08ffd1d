/* ocsp_bench: OCSP answers served from keyline-cad's pre-produced answers against signing
 * them, and both against the raw signing rate of the same token, in one run.
 *
 *   ocsp_bench -c keyline.conf --signer LABEL --http-port N --cad SOCKET --seconds S
 *              --clients N REQ.der... [--live LIVE.der]
 *
 * 1. raw: 2 threads sign SHA-256 digests with the token key LABEL (the delegated OCSP signer
 *    whose answers are measured);
 * 2. http: N clients, one keep-alive HTTP/1.1 connection each to keyline-estd's plain-HTTP
 *    listener, POST /ocsp of the nonce-less requests REQ.der in turn (answered from the
 *    pre-produced answers), counting 200s that carry an OCSP response;
 * 3. cad: the same requests straight to keyline-cad over its socket (one connection per
 *    client), without the HTTP front end;
 * 4. live: LIVE.der (a request with a nonce: never pre-produced, never cached, signed per
 *    request) over HTTP, the rate of answering by signing.
 * Figures for bench/results.json (bench_lib.h): each rate against the raw signing rate; the
 * issue's target is pre-produced answers at >= 10 times it. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_lib.h"
#include "cac.h"
#include "cap.h"
#include "kl_file.h"

#define MAX_REQS 4096

static struct {
    const char *conf, *signer, *cad, *live;
    int port, seconds, clients;
} opt = {.conf = "keyline.conf", .seconds = 5, .clients = 8};

typedef struct {
    uint8_t *der;
    size_t len;
    char *http; /* the whole POST */
    size_t http_len;
} req_t;

static req_t g_reqs[MAX_REQS], g_live;
static size_t g_nreqs;

typedef struct {
    int mode; /* 0 http pre-produced, 1 cad pre-produced, 2 http live */
    double until;
    long ok, fail;
    size_t next;
} worker;

static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
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

/* One POST /ocsp and its answer; 0 for a 200 with an OCSP response body. */
static int http_roundtrip(int fd, const req_t *r)
{
    if (write(fd, r->http, r->http_len) != (ssize_t)r->http_len) {
        return -1;
    }
    char buf[16384];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) {
            return -1;
        }
        have += (size_t)n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
        if (!end && have >= sizeof buf - 1) {
            return -1;
        }
    }
    int status = 0;
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !cl || cl > end) {
        return -1;
    }
    size_t body = strtoul(cl + 17, NULL, 10), got = have - (size_t)(end + 4 - buf);
    while (got < body) {
        ssize_t n = read(fd, buf, body - got < sizeof buf ? body - got : sizeof buf);
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    return status == 200 && body > 0 && strcasestr(buf, "application/ocsp-response") ? 0 : -1;
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

static void *worker_run(void *p)
{
    worker *w = p;
    int fd = -1;
    cac *c = NULL;
    while (bench_now() < w->until) {
        const req_t *r = w->mode == 2 ? &g_live : &g_reqs[w->next++ % g_nreqs];
        int rc;
        if (w->mode == 1) {
            if (!c && cac_open(&c, opt.cad, 30, NULL, 0) != KL_OK) {
                w->fail++;
                usleep(10000);
                continue;
            }
            rc = cad_roundtrip(c, r);
        } else {
            if (fd < 0 && (fd = http_connect()) < 0) {
                w->fail++;
                usleep(10000);
                continue;
            }
            rc = http_roundtrip(fd, r);
            if (rc != 0) {
                close(fd);
                fd = -1;
            }
        }
        if (rc == 0) {
            w->ok++;
        } else {
            w->fail++;
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    cac_close(c);
    return NULL;
}

static double measure(int mode, long *fails)
{
    worker w[64];
    pthread_t t[64];
    int n = opt.clients > 64 ? 64 : opt.clients;
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        w[i] = (worker){.mode = mode, .until = t0 + opt.seconds, .next = (size_t)i * 7};
        pthread_create(&t[i], NULL, worker_run, &w[i]);
    }
    long ok = 0;
    *fails = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
        *fails += w[i].fail;
    }
    return (double)ok / (bench_now() - t0);
}

static int load_req(const char *path, req_t *r)
{
    if (kl_file_read(path, 1 << 16, &r->der, &r->len) != KL_OK) {
        fprintf(stderr, "ocsp_bench: %s\n", kl_errmsg());
        return -1;
    }
    r->http = malloc(r->len + 256);
    if (!r->http) {
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

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"config", required_argument, NULL, 'c'},    {"signer", required_argument, NULL, 'k'},
        {"http-port", required_argument, NULL, 'p'}, {"cad", required_argument, NULL, 'd'},
        {"seconds", required_argument, NULL, 's'},   {"clients", required_argument, NULL, 'n'},
        {"live", required_argument, NULL, 'l'},      {NULL, 0, NULL, 0}};
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
        default: return 2;
        }
    }
    if (!opt.signer || !opt.cad || !opt.live || opt.port <= 0 || optind >= argc ||
        opt.seconds < 1 || opt.clients < 1) {
        fprintf(stderr, "usage: ocsp_bench -c CONF --signer LABEL --http-port N --cad SOCKET "
                        "--live LIVE.der [--seconds S] [--clients N] REQ.der...\n");
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
    double raw = bench_raw_sign_label(opt.conf, opt.signer, 2, opt.seconds);
    if (raw <= 0) {
        return 1;
    }
    long f_http = 0, f_cad = 0, f_live = 0;
    double http = measure(0, &f_http);
    double viacad = measure(1, &f_cad);
    double live = measure(2, &f_live);
    printf("raw signing with %s (2 threads): %.0f/s; %zu certificates, %d clients\n", opt.signer,
           raw, g_nreqs, opt.clients);
    printf("errors: http %ld, cad %ld, live %ld\n", f_http, f_cad, f_live);
    char name[64];
    bench_figure("ocsp.hsm.raw_sign.2t", raw, "1/s", NULL, 0, 0);
    snprintf(name, sizeof name, "ocsp.preproduced.http.%dc", opt.clients);
    bench_figure(name, http, "1/s", "ocsp.hsm.raw_sign.2t", raw, 10);
    snprintf(name, sizeof name, "ocsp.preproduced.cad.%dc", opt.clients);
    bench_figure(name, viacad, "1/s", "ocsp.hsm.raw_sign.2t", raw, 10);
    snprintf(name, sizeof name, "ocsp.live_signed.http.%dc", opt.clients);
    bench_figure(name, live, "1/s", "ocsp.hsm.raw_sign.2t", raw, 0);
    return f_http || f_cad || f_live ? 1 : 0;
}
