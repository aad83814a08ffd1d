/* est_bench: EST enrollment load generator and raw HSM signing rate, in one run.
 *
 *   est_bench -c keyline.conf --hsm-key LABEL --host 127.0.0.1 --port N --cacert root.pem
 *             --cert client.pem --key client.key --csr req.b64 [--seconds S] [--clients 2,8,32]
 *
 * 1. raw rate: 2 threads sign SHA-256 digests with the token key LABEL (ECDSA in the HSM),
 * 2. for each client count and mode: POST simpleenroll as fast as answers come; counts 200s only.
 *      keep-alive     one TLS connection per client, many requests, client certificate
 *      new-handshake  a full TLS handshake per request (no tickets), client certificate
 *      resume         a new TCP + TLS connection per request resuming the previous session
 *                     with its ticket (a device's renewal retry); the share that resumed is
 *                     printed
 *      basic          keep-alive with HTTP Basic (KL_BENCH_BASIC=user:password, no client
 *                     certificate)
 * Prints enrollments/s, the ratio to the raw 2-thread signing rate, and figures for
 * bench/results.json (bench_lib.h) against the crypto floor scripts/bench measured (ca_bench)
 * and, for basic, against mTLS keep-alive with the same clients. OpenSSL client code: the
 * server side is GnuTLS, so the numbers also say the two interoperate under load. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_lib.h"
#include "kl_b64.h"
#include "kl_file.h"

static struct {
    const char *conf, *hsm_key, *host, *cacert, *cert, *key, *csr_path, *path;
    int port, seconds;
    int clients[8];
    int n_clients;
    int modes; /* EST_M_* bits */
} opt = {.conf = "keyline.conf",
         .host = "127.0.0.1",
         .port = 8443,
         .seconds = 5,
         .modes = 3,
         .path = "/.well-known/est/simpleenroll"};

enum { EST_M_NEW = 1, EST_M_KEEP = 2, EST_M_RESUME = 4, EST_M_BASIC = 8 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------------------------------- */
/* EST client                                                                               */

static SSL_CTX *g_ctx, *g_ctx_resume, *g_ctx_basic;
static char *g_req, *g_req_basic;
static size_t g_req_len, g_req_basic_len;

typedef struct {
    int mode; /* one EST_M_* */
    double until;
    long ok, fail, handshakes, resumed;
    SSL_SESSION *sess;
} client_arg;

static SSL *client_connect(SSL_CTX *ctx, SSL_SESSION *sess)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (sess) {
        SSL_set_session(ssl, sess);
    }
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void client_close(SSL *ssl)
{
    if (ssl) {
        int fd = SSL_get_fd(ssl);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
}

/* One request/response on `ssl`; returns the HTTP status or -1. */
static int client_roundtrip(SSL *ssl, int basic)
{
    const char *req = basic ? g_req_basic : g_req;
    int req_len = (int)(basic ? g_req_basic_len : g_req_len);
    if (SSL_write(ssl, req, req_len) != req_len) {
        return -1;
    }
    char buf[16384];
    size_t have = 0;
    char *hdr_end = NULL;
    while (!hdr_end) {
        int n = SSL_read(ssl, buf + have, (int)(sizeof buf - 1 - have));
        if (n <= 0) {
            return -1;
        }
        have += (size_t)n;
        buf[have] = 0;
        hdr_end = strstr(buf, "\r\n\r\n");
        if (!hdr_end && have >= sizeof buf - 1) {
            return -1;
        }
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        return -1;
    }
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (!cl || cl > hdr_end) {
        return -1;
    }
    size_t body = strtoul(cl + 17, NULL, 10);
    size_t got = have - (size_t)(hdr_end + 4 - buf);
    while (got < body) {
        int n = SSL_read(ssl, buf, (int)(body - got < sizeof buf ? body - got : sizeof buf));
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    return status;
}

static void *client_thread(void *p)
{
    client_arg *a = p;
    SSL *ssl = NULL;
    SSL_CTX *ctx = a->mode == EST_M_BASIC    ? g_ctx_basic
                   : a->mode == EST_M_RESUME ? g_ctx_resume
                                             : g_ctx;
    int keep = a->mode == EST_M_KEEP || a->mode == EST_M_BASIC;
    while (now_s() < a->until) {
        if (!ssl) {
            ssl = client_connect(ctx, a->mode == EST_M_RESUME ? a->sess : NULL);
            if (!ssl) {
                a->fail++;
                continue;
            }
            a->handshakes++;
            a->resumed += SSL_session_reused(ssl);
        }
        int st = client_roundtrip(ssl, a->mode == EST_M_BASIC);
        if (st == 200) {
            a->ok++;
        } else {
            a->fail++;
        }
        if (st < 0 || !keep) {
            if (a->mode == EST_M_RESUME) {
                /* after a response: TLS 1.3 tickets arrive after the handshake */
                SSL_SESSION *ns = SSL_get1_session(ssl);
                if (ns && SSL_SESSION_is_resumable(ns)) {
                    SSL_SESSION_free(a->sess);
                    a->sess = ns;
                } else {
                    SSL_SESSION_free(ns);
                }
            }
            client_close(ssl);
            ssl = NULL;
        }
    }
    client_close(ssl);
    SSL_SESSION_free(a->sess);
    return NULL;
}

static double est_rate(int clients, int mode, long *fails, double *resumed)
{
    client_arg *a = calloc((size_t)clients, sizeof *a);
    pthread_t *t = calloc((size_t)clients, sizeof *t);
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        a[i] = (client_arg){.mode = mode, .until = t0 + opt.seconds};
        pthread_create(&t[i], NULL, client_thread, &a[i]);
    }
    long ok = 0, hs = 0, res = 0;
    *fails = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        *fails += a[i].fail;
        hs += a[i].handshakes;
        res += a[i].resumed;
    }
    *resumed = hs ? (double)res / (double)hs : 0;
    double rate = (double)ok / (now_s() - t0);
    free(a);
    free(t);
    return rate;
}

static SSL_CTX *client_ctx(int with_cert, int tickets)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, opt.cacert, NULL) != 1 ||
        (with_cert && (SSL_CTX_use_certificate_chain_file(ctx, opt.cert) != 1 ||
                       SSL_CTX_use_PrivateKey_file(ctx, opt.key, SSL_FILETYPE_PEM) != 1))) {
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (tickets) {
        /* sessions kept by the client thread itself (client_arg.sess) */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    } else {
        /* new-handshake mode means full handshakes: no session resumption */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    return ctx;
}

/* The request: POST of the CSR, with `auth` (an Authorization header line or "") */
static char *make_request(const uint8_t *csr, size_t csr_len, const char *auth, size_t *len)
{
    size_t cap = csr_len + strlen(auth) + 512;
    char *req = malloc(cap);
    if (!req) {
        return NULL;
    }
    int n = snprintf(req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/pkcs10\r\n"
                     "%sContent-Length: %zu\r\n\r\n",
                     opt.path, opt.host, auth, csr_len);
    memcpy(req + n, csr, csr_len);
    *len = (size_t)n + csr_len;
    return req;
}

static int setup_client(void)
{
    uint8_t *csr = NULL;
    size_t csr_len = 0;
    if (kl_file_read(opt.csr_path, 1 << 20, &csr, &csr_len) != KL_OK) {
        fprintf(stderr, "est_bench: %s\n", kl_errmsg());
        return -1;
    }
    /* One CSR for every request: the server issues a new certificate (new serial) each time,
     * and the client's own key generation stays out of the measurement. */
    g_req = make_request(csr, csr_len, "", &g_req_len);
    const char *basic = getenv("KL_BENCH_BASIC"); /* user:password, not in argv */
    if ((opt.modes & EST_M_BASIC) && basic) {
        kl_buf b64;
        kl_buf_init(&b64, 4096, 1);
        char hdr[4200];
        if (kl_b64_encode((const uint8_t *)basic, strlen(basic), 0, 0, &b64) == KL_OK &&
            kl_buf_put(&b64, "", 1) == KL_OK) {
            snprintf(hdr, sizeof hdr, "Authorization: Basic %s\r\n", (const char *)b64.data);
            g_req_basic = make_request(csr, csr_len, hdr, &g_req_basic_len);
            OPENSSL_cleanse(hdr, sizeof hdr);
        }
        kl_buf_free(&b64);
    }
    free(csr);
    if ((opt.modes & EST_M_BASIC) && !g_req_basic) {
        fprintf(stderr, "est_bench: mode basic needs KL_BENCH_BASIC=user:password\n");
        return -1;
    }
    g_ctx = client_ctx(1, 0);
    g_ctx_resume = client_ctx(1, 1);
    g_ctx_basic = client_ctx(0, 0);
    return g_req && g_ctx && g_ctx_resume && g_ctx_basic ? 0 : -1;
}

static const struct {
    int bit;
    const char *name, *fig;
} est_modes[] = {{EST_M_KEEP, "keep-alive", "mtls.keepalive"},
                 {EST_M_NEW, "new-handshake", "mtls.new_handshake"},
                 {EST_M_RESUME, "resume", "mtls.resume"},
                 {EST_M_BASIC, "basic", "basic.keepalive"}};

/* Figures for bench/results.json: each against the crypto floor with 8 threads (the issue's
 * target: keep-alive at 8 clients >= 35% of it), Basic against mTLS keep-alive with the same
 * clients (>= 80%), resumption against full handshakes. */
static void est_figure(int clients, int mode, double rate, double resumed)
{
    char name[96], limit[96];
    const char *fig = "";
    for (size_t i = 0; i < sizeof est_modes / sizeof est_modes[0]; i++) {
        fig = est_modes[i].bit == mode ? est_modes[i].fig : fig;
    }
    snprintf(name, sizeof name, "est.%s.%dc", fig, clients);
    if (mode == EST_M_BASIC) {
        snprintf(limit, sizeof limit, "est.mtls.keepalive.%dc", clients);
        bench_figure(name, rate, "1/s", limit, -1, 0.8);
    } else if (mode == EST_M_RESUME) {
        snprintf(limit, sizeof limit, "est.mtls.new_handshake.%dc", clients);
        bench_figure(name, rate, "1/s", limit, -1, 0);
        snprintf(name, sizeof name, "est.mtls.resume.%dc.reused", clients);
        bench_figure(name, resumed, "ratio", NULL, 0, 0);
    } else {
        bench_figure(name, rate, "1/s", "crypto_floor.8t", -1,
                     mode == EST_M_KEEP && clients == 8 ? 0.35 : 0);
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"config", required_argument, NULL, 'c'},
                                       {"hsm-key", required_argument, NULL, 'k'},
                                       {"host", required_argument, NULL, 'H'},
                                       {"port", required_argument, NULL, 'p'},
                                       {"cacert", required_argument, NULL, 'A'},
                                       {"cert", required_argument, NULL, 'C'},
                                       {"key", required_argument, NULL, 'K'},
                                       {"csr", required_argument, NULL, 'r'},
                                       {"seconds", required_argument, NULL, 's'},
                                       {"clients", required_argument, NULL, 'n'},
                                       {"path", required_argument, NULL, 'P'},
                                       {"modes", required_argument, NULL, 'm'},
                                       {NULL, 0, NULL, 0}};
    int ch;
    char *clients = strdup("2,8,32");
    while ((ch = getopt_long(argc, argv, "c:", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.conf = optarg; break;
        case 'k': opt.hsm_key = optarg; break;
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'A': opt.cacert = optarg; break;
        case 'C': opt.cert = optarg; break;
        case 'K': opt.key = optarg; break;
        case 'r': opt.csr_path = optarg; break;
        case 's': opt.seconds = atoi(optarg); break;
        case 'n':
            free(clients);
            clients = strdup(optarg);
            break;
        case 'P': opt.path = optarg; break;
        case 'm':
            opt.modes = 0;
            for (size_t i = 0; i < sizeof est_modes / sizeof est_modes[0]; i++) {
                opt.modes |= strstr(optarg, est_modes[i].name) ? est_modes[i].bit : 0;
            }
            break;
        default: free(clients); return 2;
        }
    }
    if (!opt.hsm_key || !opt.cacert || !opt.cert || !opt.key || !opt.csr_path || opt.seconds < 1) {
        free(clients);
        fprintf(stderr, "usage: est_bench -c CONF --hsm-key LABEL --port N --cacert F --cert F "
                        "--key F --csr REQ.b64 [--seconds S] [--clients 2,8,32]\n"
                        "       [--modes keep-alive,new-handshake,resume,basic]\n");
        return 2;
    }
    for (char *s = strtok(clients, ","); s && opt.n_clients < 8; s = strtok(NULL, ",")) {
        opt.clients[opt.n_clients++] = atoi(s);
    }
    free(clients);
    if (setup_client() != 0) {
        return 1;
    }
    /* KL_BENCH_NO_RAW=1: skip the raw measurement (for profiling the server alone) */
    int no_raw = getenv("KL_BENCH_NO_RAW") != NULL;
    double raw =
        no_raw ? 1.0
               : bench_raw_sign_label(opt.conf, opt.hsm_key, 2, opt.seconds < 5 ? opt.seconds : 5);
    if (raw <= 0) {
        return 1;
    }
    if (!no_raw) {
        printf("raw HSM signing (ECDSA, 2 threads, same token): %.0f signatures/s\n", raw);
    }
    printf("%-8s %-14s %12s %10s %8s %8s\n", "clients", "mode", "enroll/s", "vs raw", "errors",
           "resumed");
    int failed_runs = 0;
    for (int i = 0; i < opt.n_clients; i++) {
        for (size_t m = 0; m < sizeof est_modes / sizeof est_modes[0]; m++) {
            if (!(opt.modes & est_modes[m].bit)) {
                continue;
            }
            long fails = 0;
            double resumed = 0;
            /* a figure only from a run where every request succeeded: failed requests would
             * lower a peer's rate, or a limit's, in keyline's favour */
            double r = est_rate(opt.clients[i], est_modes[m].bit, &fails, &resumed);
            char vs[16] = "-", res[16] = "-";
            if (!no_raw) {
                snprintf(vs, sizeof vs, "%.1f%%", 100.0 * r / raw);
            }
            if (est_modes[m].bit == EST_M_RESUME) {
                snprintf(res, sizeof res, "%.0f%%", 100.0 * resumed);
            }
            printf("%-8d %-14s %12.0f %10s %8ld %8s\n", opt.clients[i], est_modes[m].name, r, vs,
                   fails, res);
            fflush(stdout);
            if (fails) {
                fprintf(stderr, "est_bench: %ld requests failed (%d clients, %s): no figure\n",
                        fails, opt.clients[i], est_modes[m].name);
                failed_runs++;
            } else if (getenv("KL_BENCH_RESULTS")) {
                est_figure(opt.clients[i], est_modes[m].bit, r, resumed);
            }
        }
    }
    SSL_CTX_free(g_ctx_resume);
    SSL_CTX_free(g_ctx_basic);
    free(g_req_basic);
    SSL_CTX_free(g_ctx);
    free(g_req);
    return failed_runs ? 1 : 0;
}
