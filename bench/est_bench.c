/* est_bench: EST enrollment load generator and raw HSM signing rate, in one run.
 *
 *   est_bench -c keyline.conf --hsm-key LABEL --host 127.0.0.1 --port N --cacert root.pem
 *             --cert client.pem --key client.key --csr req.b64 [--seconds S] [--clients 2,8,32]
 *
 * 1. raw rate: 2 threads sign SHA-256 digests with the token key LABEL (ECDSA in the HSM),
 * 2. for each client count, keep-alive (one TLS connection per client, many requests) and
 *    new-handshake (a TLS handshake per request): POST simpleenroll as fast as answers come,
 *    authenticated with the client certificate; counts 200s only.
 * Prints enrollments/s and the ratio to the raw 2-thread signing rate. OpenSSL client code: the
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

#include "hsm.h"
#include "kl_conf.h"
#include "kl_file.h"
#include "kl_secret.h"

static struct {
    const char *conf, *hsm_key, *host, *cacert, *cert, *key, *csr_path, *path;
    int port, seconds;
    int clients[8];
    int n_clients;
    int modes; /* bit 1: keep-alive, bit 0: new-handshake */
} opt = {.conf = "keyline.conf",
         .host = "127.0.0.1",
         .port = 8443,
         .seconds = 5,
         .modes = 3,
         .path = "/.well-known/est/simpleenroll"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------------------------------- */
/* raw HSM signing                                                                          */

typedef struct {
    EVP_PKEY *key;
    double until;
    long count;
    int failed;
} sign_arg;

static void *sign_thread(void *p)
{
    sign_arg *a = p;
    unsigned char dgst[32], sig[512];
    memset(dgst, 0x5a, sizeof dgst);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(a->key, NULL);
    if (!ctx || EVP_PKEY_sign_init(ctx) <= 0) {
        a->failed = 1;
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    while (now_s() < a->until) {
        for (int i = 0; i < 16; i++) {
            size_t sl = sizeof sig;
            dgst[0] = (unsigned char)a->count;
            if (EVP_PKEY_sign(ctx, sig, &sl, dgst, sizeof dgst) <= 0) {
                a->failed = 1;
                EVP_PKEY_CTX_free(ctx);
                return NULL;
            }
            a->count++;
        }
    }
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

static double hsm_rate(int threads)
{
    kl_conf *conf = NULL;
    hsm_ctx *h = NULL;
    EVP_PKEY *key = NULL;
    kl_secret pin;
    double rate = -1;
    memset(&pin, 0, sizeof pin);
    if (kl_conf_load(&conf, opt.conf) != KL_OK ||
        kl_secret_read(&pin, kl_conf_get(conf, "hsm", "pin"), kl_conf_dir(conf), "token PIN") !=
            KL_OK ||
        hsm_open(&h, kl_conf_get(conf, "hsm", "module"), kl_conf_get(conf, "hsm", "token"),
                 pin.value) != KL_OK ||
        hsm_key_load(h, opt.hsm_key, &key) != KL_OK) {
        fprintf(stderr, "est_bench: HSM: %s\n", kl_errmsg());
        goto out;
    }
    sign_arg a[16];
    pthread_t t[16];
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        a[i] = (sign_arg){.key = key, .until = t0 + (opt.seconds < 5 ? opt.seconds : 5)};
        pthread_create(&t[i], NULL, sign_thread, &a[i]);
    }
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += a[i].count;
        if (a[i].failed) {
            fprintf(stderr, "est_bench: HSM signing failed\n");
        }
    }
    rate = (double)total / (now_s() - t0);
out:
    kl_secret_free(&pin);
    EVP_PKEY_free(key);
    hsm_close(h);
    kl_conf_free(conf);
    return rate;
}

/* ---------------------------------------------------------------------------------------- */
/* EST client                                                                               */

static SSL_CTX *g_ctx;
static char *g_req;
static size_t g_req_len;

typedef struct {
    int keepalive;
    double until;
    long ok, fail, handshakes;
} client_arg;

static SSL *client_connect(void)
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
    SSL *ssl = SSL_new(g_ctx);
    SSL_set_fd(ssl, fd);
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
static int client_roundtrip(SSL *ssl)
{
    if (SSL_write(ssl, g_req, (int)g_req_len) != (int)g_req_len) {
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
    while (now_s() < a->until) {
        if (!ssl) {
            ssl = client_connect();
            if (!ssl) {
                a->fail++;
                continue;
            }
            a->handshakes++;
        }
        int st = client_roundtrip(ssl);
        if (st == 200) {
            a->ok++;
        } else {
            a->fail++;
        }
        if (st < 0 || !a->keepalive) {
            client_close(ssl);
            ssl = NULL;
        }
    }
    client_close(ssl);
    return NULL;
}

static double est_rate(int clients, int keepalive, long *fails)
{
    client_arg *a = calloc((size_t)clients, sizeof *a);
    pthread_t *t = calloc((size_t)clients, sizeof *t);
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        a[i] = (client_arg){.keepalive = keepalive, .until = t0 + opt.seconds};
        pthread_create(&t[i], NULL, client_thread, &a[i]);
    }
    long ok = 0;
    *fails = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        *fails += a[i].fail;
    }
    double rate = (double)ok / (now_s() - t0);
    free(a);
    free(t);
    return rate;
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
    size_t cap = csr_len + 512;
    g_req = malloc(cap);
    int n = snprintf(g_req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/pkcs10\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     opt.path, opt.host, csr_len);
    memcpy(g_req + n, csr, csr_len);
    g_req_len = (size_t)n + csr_len;
    free(csr);

    g_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(g_ctx, opt.cacert, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(g_ctx, opt.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(g_ctx, opt.key, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
    /* new-handshake mode means full handshakes: no session resumption */
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(g_ctx, SSL_OP_NO_TICKET);
    return 0;
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
            opt.modes =
                (strstr(optarg, "keep-alive") ? 2 : 0) | (strstr(optarg, "new-handshake") ? 1 : 0);
            break;
        default: return 2;
        }
    }
    if (!opt.hsm_key || !opt.cacert || !opt.cert || !opt.key || !opt.csr_path || opt.seconds < 1) {
        fprintf(stderr, "usage: est_bench -c CONF --hsm-key LABEL --port N --cacert F --cert F "
                        "--key F --csr REQ.b64 [--seconds S] [--clients 2,8,32]\n"
                        "       [--modes keep-alive,new-handshake]\n");
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
    double raw = no_raw ? 1.0 : hsm_rate(2);
    if (raw <= 0) {
        return 1;
    }
    if (!no_raw) {
        printf("raw HSM signing (ECDSA, 2 threads, same token): %.0f signatures/s\n", raw);
    }
    printf("%-8s %-14s %12s %10s %8s\n", "clients", "mode", "enroll/s", "vs raw", "errors");
    for (int i = 0; i < opt.n_clients; i++) {
        for (int ka = 1; ka >= 0; ka--) {
            if (!(opt.modes & (1 << ka))) {
                continue;
            }
            long fails = 0;
            double r = est_rate(opt.clients[i], ka, &fails);
            if (no_raw) {
                printf("%-8d %-14s %12.0f %10s %8ld\n", opt.clients[i],
                       ka ? "keep-alive" : "new-handshake", r, "-", fails);
            } else {
                printf("%-8d %-14s %12.0f %9.1f%% %8ld\n", opt.clients[i],
                       ka ? "keep-alive" : "new-handshake", r, 100.0 * r / raw, fails);
            }
            fflush(stdout);
        }
    }
    SSL_CTX_free(g_ctx);
    free(g_req);
    return 0;
}
