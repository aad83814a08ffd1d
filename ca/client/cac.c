/* keyline: CA protocol client (front ends -> keyline-cad over a Unix socket or mutual TLS). */
#include "cac.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kl_file.h"

#define CAC_POOL 64
/* Connecting and the TLS handshake may take this long at most (a host that is down drops
 * the SYN: the next address should not wait a whole request timeout). */
#define CAC_CONNECT_S 5

typedef struct {
    int tls;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix */
    char host[256];                                         /* tls: name or address */
    char port[8];
    char text[300]; /* as written, resolved ("unix:/run/..", "tls:h:p") */
} cac_addr;

/* One open connection to addrs[addr]. eof: cac_io found it closed or reset by the daemon. */
typedef struct {
    int fd;
    SSL *ssl;
    unsigned addr;
    int eof;
} cac_conn;

struct cac {
    cac_addr addrs[CAC_ADDR_MAX];
    unsigned naddrs;
    SSL_CTX *tls; /* NULL without tls: addresses */
    unsigned timeout_s;
    atomic_uint current; /* the address tried first: the one that answered last */
    pthread_mutex_t lock;
    cac_conn idle[CAC_POOL];
    size_t nidle;
};

static _Thread_local unsigned long cac_unavail_count;
static _Thread_local int cac_answered;

unsigned long cac_thread_unavailable(void)
{
    return cac_unavail_count;
}

int cac_thread_answered(void)
{
    return cac_answered;
}

const char *cac_addr_current(cac *c)
{
    return c->addrs[atomic_load(&c->current) % c->naddrs].text;
}

/* ---- addresses ------------------------------------------------------------------------------ */

static kl_rc cac_addr_parse(const char *item, size_t len, const char *base, cac_addr *a)
{
    kl_rc rc = KL_OK;
    char v[300];
    memset(a, 0, sizeof *a);
    ENSURE(len > 0 && len < sizeof v, KL_EUSAGE, "keyline-cad address '%.*s': empty or too long",
           (int)(len < 80 ? len : 80), item);
    memcpy(v, item, len);
    v[len] = 0;
    if (strncmp(v, "tls:", 4) == 0) {
        char *h = v + 4, *port = strrchr(h, ':');
        ENSURE(port && port != h && port[1], KL_EUSAGE,
               "keyline-cad address '%s': expected tls:HOST:PORT", v);
        *port++ = 0;
        size_t hl = strlen(h);
        if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
            h[hl - 1] = 0;
            h++;
        }
        char *end = NULL;
        long p = strtol(port, &end, 10);
        ENSURE(*end == 0 && p > 0 && p < 65536 && strlen(h) < sizeof a->host, KL_EUSAGE,
               "keyline-cad address '%s': bad host or port", item);
        a->tls = 1;
        snprintf(a->host, sizeof a->host, "%s", h);
        snprintf(a->port, sizeof a->port, "%ld", p);
        snprintf(a->text, sizeof a->text, "tls:%s%s%s:%ld", strchr(h, ':') ? "[" : "", h,
                 strchr(h, ':') ? "]" : "", p);
        goto out;
    }
    const char *p = strncmp(v, "unix:", 5) == 0 ? v + 5 : v;
    ENSURE(*p && !strchr(p, ',') && (!strchr(p, ':') || p != v), KL_EUSAGE,
           "keyline-cad address '%s': expected unix:PATH, PATH or tls:HOST:PORT", v);
    int n = p[0] == '/' || !base ? snprintf(a->path, sizeof a->path, "%s", p)
                                 : snprintf(a->path, sizeof a->path, "%s/%s", base, p);
    ENSURE(n > 0 && (size_t)n < sizeof a->path, KL_EUSAGE,
           "keyline-cad socket path '%s' is longer than %zu bytes", p, sizeof a->path - 1);
    snprintf(a->text, sizeof a->text, "unix:%s", a->path);
out:
    return rc;
}

static kl_rc cac_addrs_parse(cac *c, const char *list, const char *base)
{
    kl_rc rc = KL_OK;
    const char *p = list ? list : "";
    c->naddrs = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }
        ENSURE(c->naddrs < CAC_ADDR_MAX, KL_EUSAGE, "more than %d keyline-cad addresses",
               CAC_ADDR_MAX);
        TRY(cac_addr_parse(p, len, base, &c->addrs[c->naddrs]));
        c->naddrs++;
        if (!end) {
            break;
        }
        p = end + 1;
    }
out:
    return rc;
}

kl_rc cac_addrs_check(const char *addrs, unsigned *n, int *tls)
{
    kl_rc rc = KL_OK;
    cac *c = calloc(1, sizeof *c);
    *n = 0;
    *tls = 0;
    ENSURE(c, KL_EINTERNAL, "out of memory");
    TRY(cac_addrs_parse(c, addrs, NULL));
    *n = c->naddrs;
    for (unsigned i = 0; i < c->naddrs; i++) {
        *tls |= c->addrs[i].tls;
    }
out:
    free(c);
    return rc;
}

/* ---- TLS credentials --------------------------------------------------------------------------
 */

/* The key file, read with this process's rights, refused when others may read it; its bytes
 * are wiped once OpenSSL holds the key. */
static kl_rc cac_tls_key(SSL_CTX *ctx, const char *path)
{
    kl_rc rc = KL_OK;
    uint8_t *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    struct stat st;
    ENSURE(stat(path, &st) == 0, KL_EINPUT, "keyline-cad TLS key %s: %s", path, strerror(errno));
    ENSURE((st.st_mode & 0007) == 0, KL_EINPUT,
           "keyline-cad TLS key %s is readable by others (mode %04o); chmod o-rwx", path,
           (unsigned)(st.st_mode & 07777));
    TRY(kl_file_read(path, 64 * 1024, &pem, &len));
    bio = BIO_new_mem_buf(pem, (int)len);
    ENSURE_SSL(bio, KL_EINTERNAL, "BIO_new_mem_buf");
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    ENSURE_SSL(key, KL_EINPUT, "keyline-cad TLS key %s: no PEM private key", path);
    ENSURE_SSL(SSL_CTX_use_PrivateKey(ctx, key) == 1, KL_EINPUT, "keyline-cad TLS key %s", path);
    ENSURE_SSL(SSL_CTX_check_private_key(ctx) == 1, KL_EINPUT,
               "keyline-cad TLS key %s does not match the certificate", path);
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (pem) {
        OPENSSL_cleanse(pem, len);
        free(pem);
    }
    return rc;
}

static kl_rc cac_tls_setup(cac *c, const cac_cfg *cfg)
{
    kl_rc rc = KL_OK;
    ENSURE(cfg->tls_cert && cfg->tls_key && cfg->tls_ca, KL_EUSAGE,
           "a tls: keyline-cad address needs the front end's certificate, key and the CA of "
           "keyline-cad's certificate (cad-tls-cert, cad-tls-key, cad-tls-ca)");
    c->tls = SSL_CTX_new(TLS_client_method());
    ENSURE_SSL(c->tls, KL_EINTERNAL, "SSL_CTX_new");
    ENSURE_SSL(SSL_CTX_set_min_proto_version(c->tls, TLS1_2_VERSION) == 1, KL_EINTERNAL,
               "TLS minimum version");
    ENSURE_SSL(SSL_CTX_use_certificate_chain_file(c->tls, cfg->tls_cert) == 1, KL_EINPUT,
               "keyline-cad TLS certificate %s", cfg->tls_cert);
    TRY(cac_tls_key(c->tls, cfg->tls_key));
    ENSURE_SSL(SSL_CTX_load_verify_locations(c->tls, cfg->tls_ca, NULL) == 1, KL_EINPUT,
               "keyline-cad TLS CA %s", cfg->tls_ca);
    SSL_CTX_set_verify(c->tls, SSL_VERIFY_PEER, NULL);
    /* a stolen session ticket must not stand in for the client certificate elsewhere */
    SSL_CTX_set_session_cache_mode(c->tls, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c->tls, SSL_OP_NO_TICKET);
out:
    return rc;
}

/* ---- connections ------------------------------------------------------------------------------
 */

static void cac_deadline(struct timespec *dl, unsigned s)
{
    clock_gettime(CLOCK_MONOTONIC, dl);
    dl->tv_sec += s;
}

/* Wait until fd is ready for `events` before the deadline (CLOCK_MONOTONIC). */
static kl_rc cac_wait(int fd, short events, const struct timespec *deadline, const char *what)
{
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (long)(deadline->tv_sec - now.tv_sec) * 1000 +
                  (deadline->tv_nsec - now.tv_nsec) / 1000000;
        if (ms <= 0) {
            return kl_fail(KL_EUNAVAIL, "%s: no answer in time", what);
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(ms > 60000 ? 60000 : ms));
        if (n > 0) {
            return KL_OK;
        }
        if (n < 0 && errno != EINTR) {
            return kl_fail(KL_EUNAVAIL, "%s: poll: %s", what, strerror(errno));
        }
    }
}

static void cac_conn_close(cac_conn *k)
{
    if (k->ssl) {
        SSL_free(k->ssl); /* no close_notify: the peer may be gone, and nothing is pending */
        k->ssl = NULL;
    }
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
}

/* A non-blocking socket connected to `sa` before the deadline. A Unix socket connects at once
 * or not at all (EAGAIN there is a full backlog, not a connection under way): it connects
 * blocking, then turns non-blocking. */
static kl_rc cac_sock_connect(const struct sockaddr *sa, socklen_t salen, const cac_addr *a,
                              const struct timespec *dl, int *fd)
{
    int unix_sock = sa->sa_family == AF_UNIX;
    int s = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | (unix_sock ? 0 : SOCK_NONBLOCK), 0);
    if (s < 0) {
        return kl_fail(KL_EUNAVAIL, "socket: %s", strerror(errno));
    }
    int e = connect(s, sa, salen) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {
        int so = ETIMEDOUT;
        socklen_t sl = sizeof so;
        if (cac_wait(s, POLLOUT, dl, a->text) == KL_OK &&
            getsockopt(s, SOL_SOCKET, SO_ERROR, &so, &sl) != 0) {
            so = errno;
        }
        e = so;
    }
    if (e == 0 && unix_sock && fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK) != 0) {
        e = errno;
    }
    if (e != 0) {
        close(s);
        return kl_fail(KL_EUNAVAIL, "cannot reach keyline-cad at %s: %s", a->text, strerror(e));
    }
    *fd = s;
    return KL_OK;
}

/* RFC 6125 6.4: the daemon's certificate must name the host of the address it was reached at
 * (an IP address is matched against iPAddress names). */
static kl_rc cac_tls_handshake(cac *c, const cac_addr *a, cac_conn *k, const struct timespec *dl)
{
    kl_rc rc = KL_OK;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, a->host, ip) == 1 || inet_pton(AF_INET6, a->host, ip) == 1;
    k->ssl = SSL_new(c->tls);
    ENSURE_SSL(k->ssl && SSL_set_fd(k->ssl, k->fd) == 1, KL_EINTERNAL, "SSL_new");
    if (is_ip) {
        ENSURE_SSL(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), a->host) == 1,
                   KL_EINTERNAL, "TLS peer address");
    } else {
        ENSURE_SSL(SSL_set1_host(k->ssl, a->host) == 1 &&
                       SSL_set_tlsext_host_name(k->ssl, a->host) == 1,
                   KL_EINTERNAL, "TLS peer name");
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(k->ssl);
        if (r == 1) {
            break;
        }
        int e = SSL_get_error(k->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            TRY(cac_wait(k->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, dl, a->text));
            continue;
        }
        long v = SSL_get_verify_result(k->ssl);
        if (v != X509_V_OK) {
            /* not a daemon that is down: a wrong address or CA in the configuration, or
             * someone else answering; the next address is still tried */
            rc = kl_fail(KL_EAUTH, "keyline-cad at %s: its certificate: %s", a->text,
                         X509_verify_cert_error_string(v));
        } else {
            rc = kl_fail_ssl(KL_EUNAVAIL, "keyline-cad at %s: TLS handshake failed", a->text);
        }
        goto out;
    }
out:
    ERR_clear_error();
    return rc;
}

static kl_rc cac_connect(cac *c, unsigned i, cac_conn *k)
{
    kl_rc rc = KL_OK;
    const cac_addr *a = &c->addrs[i];
    struct addrinfo hints, *ai = NULL;
    struct timespec dl;
    *k = (cac_conn){.fd = -1, .addr = i};
    cac_deadline(&dl, c->timeout_s < CAC_CONNECT_S ? c->timeout_s : CAC_CONNECT_S);
    if (!a->tls) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, a->path, sizeof sa.sun_path);
        return cac_sock_connect((struct sockaddr *)&sa, sizeof sa, a, &dl, &k->fd);
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(a->host, a->port, &hints, &ai);
    ENSURE(g == 0, KL_EUNAVAIL, "keyline-cad at %s: %s", a->text, gai_strerror(g));
    rc = KL_EUNAVAIL;
    for (struct addrinfo *p = ai; p && rc != KL_OK; p = p->ai_next) {
        rc = cac_sock_connect(p->ai_addr, p->ai_addrlen, a, &dl, &k->fd);
    }
    TRY(rc);
    TRY(cac_tls_handshake(c, a, k, &dl));
out:
    if (ai) {
        freeaddrinfo(ai);
    }
    if (rc != KL_OK) {
        cac_conn_close(k);
    }
    return rc;
}

/* Move n bytes (write, or read into p) before the deadline; *done counts what moved. */
static kl_rc cac_io(cac_conn *k, int writing, uint8_t *p, size_t n, const struct timespec *dl,
                    const char *what, size_t *done)
{
    *done = 0;
    while (*done < n) {
        size_t left = n - *done;
        short ev = writing ? POLLOUT : POLLIN;
        int eof = 0;
        if (k->ssl) {
            ERR_clear_error();
            int chunk = left > INT_MAX / 2 ? INT_MAX / 2 : (int)left;
            int r =
                writing ? SSL_write(k->ssl, p + *done, chunk) : SSL_read(k->ssl, p + *done, chunk);
            if (r > 0) {
                *done += (size_t)r;
                continue;
            }
            int e = SSL_get_error(k->ssl, r);
            ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            eof = e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL;
            if (!eof && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                /* an alert: the daemon refused this front end's certificate, say */
                return kl_fail_ssl(KL_EUNAVAIL, "keyline-cad at %s: TLS", what);
            }
            ERR_clear_error();
        } else {
            ssize_t r = writing ? send(k->fd, p + *done, left, MSG_NOSIGNAL | MSG_DONTWAIT)
                                : recv(k->fd, p + *done, left, MSG_DONTWAIT);
            if (r > 0) {
                *done += (size_t)r;
                continue;
            }
            if (r < 0 && errno == EINTR) {
                continue;
            }
            eof = r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        }
        if (eof) {
            k->eof = 1;
            return kl_fail(KL_EUNAVAIL, "keyline-cad at %s closed the connection", what);
        }
        kl_rc rc = cac_wait(k->fd, ev, dl, what);
        if (rc != KL_OK) {
            return rc;
        }
    }
    return KL_OK;
}

/* An idle pooled connection to address i, or none (k->fd -1). One the daemon has closed
 * meanwhile (it restarted, or dropped an idle connection) is readable at EOF: it is closed
 * here and the next one tried, so that a request which must not be sent twice (issue) does
 * not go to a dead connection. */
static void cac_take(cac *c, unsigned i, cac_conn *k)
{
    *k = (cac_conn){.fd = -1, .addr = i};
    for (;;) {
        int found = 0;
        pthread_mutex_lock(&c->lock);
        for (size_t j = c->nidle; j-- > 0;) {
            if (c->idle[j].addr == i) {
                *k = c->idle[j];
                c->idle[j] = c->idle[--c->nidle];
                found = 1;
                break;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (!found) {
            return;
        }
        struct pollfd p = {.fd = k->fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0 && (!k->ssl || SSL_pending(k->ssl) == 0)) {
            return; /* nothing pending: the connection is open and idle */
        }
        cac_conn_close(k); /* EOF, an error, or bytes nobody asked for */
    }
}

static void cac_give(cac *c, cac_conn *k)
{
    pthread_mutex_lock(&c->lock);
    if (c->nidle < CAC_POOL) {
        c->idle[c->nidle++] = *k;
        k->fd = -1;
        k->ssl = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    cac_conn_close(k);
}

/* ---- calls ------------------------------------------------------------------------------------
 */

/* Ops that change nothing may be sent again, on a fresh connection or to the next daemon,
 * when a daemon closes before answering; an issue or activate is never sent twice. */
static int cac_op_idempotent(uint8_t op)
{
    return op == CAP_OP_HELLO || op == CAP_OP_POLL || op == CAP_OP_CACERTS || op == CAP_OP_CRL ||
           op == CAP_OP_OCSP || op == CAP_OP_CERT_STATUS || op == CAP_OP_DEVICE ||
           op == CAP_OP_PROFILE || op == CAP_OP_CA_CHAIN || op == CAP_OP_PENDING ||
           op == CAP_OP_KNOWN;
}

/* One request, one answer. *sent: the whole request went out (the daemon may have acted).
 * *stale: the daemon had closed the connection (EOF, reset) before it read the whole request
 * or sent a byte of the answer, as it does with an idle one; not so when it timed out. */
static kl_rc cac_exchange(cac *c, cac_conn *k, const kl_buf *req, cac_resp *resp, int *sent,
                          int *stale)
{
    kl_rc rc = KL_OK;
    struct timespec dl;
    uint8_t hdr[4], *p = NULL;
    size_t got = 0;
    const char *what = c->addrs[k->addr].text;
    cac_deadline(&dl, c->timeout_s);
    *sent = 0;
    k->eof = 0;
    rc = cac_io(k, 1, req->data, req->len, &dl, what, &got);
    if (rc == KL_OK) {
        *sent = 1;
        rc = cac_io(k, 0, hdr, sizeof hdr, &dl, what, &got);
    }
    *stale = rc != KL_OK && k->eof && (!*sent || got == 0);
    TRY(rc);
    uint32_t n = cap_frame_len(hdr);
    ENSURE(n >= 3 && n <= CAP_RESP_MAX, KL_EIO, "keyline-cad at %s sent a frame of %u bytes", what,
           n);
    kl_buf_reset(&resp->body);
    p = malloc(n);
    ENSURE(p, KL_EINTERNAL, "out of memory (%u bytes)", n);
    TRY(cac_io(k, 0, p, n, &dl, what, &got));
    TRY(kl_buf_put(&resp->body, p, n));
    if (cap_msg_parse(resp->body.data, resp->body.len, 1, &resp->msg) != KL_OK) {
        rc = kl_wrap(KL_EIO, "keyline-cad at %s: answer", what);
    }
out:
    free(p);
    return rc;
}

/* The request at address i. *next: it certainly was not carried out there, or may be sent
 * again anyway (idempotent): the caller may try the next address. */
static kl_rc cac_call_at(cac *c, unsigned i, const kl_buf *req, cac_resp *resp, int *next)
{
    kl_rc rc = KL_OK;
    uint8_t op = req->len > 5 ? req->data[5] : 0;
    *next = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        cac_conn k;
        cac_take(c, i, &k);
        int reused = k.fd >= 0;
        if (!reused && (rc = cac_connect(c, i, &k)) != KL_OK) {
            *next = 1; /* nothing was sent */
            return rc;
        }
        int sent = 0, stale = 0;
        rc = cac_exchange(c, &k, req, resp, &sent, &stale);
        if (rc == KL_OK) {
            cac_give(c, &k);
            return KL_OK;
        }
        cac_conn_close(&k);
        int again = rc == KL_EUNAVAIL && (!sent || cac_op_idempotent(op));
        /* Once more on a fresh connection only when the pooled one had gone stale: a daemon
         * that did not answer in time has had its timeout, and is not waited for twice (the
         * caller moves on to the next address, if there is one). */
        if (!(reused && stale && again)) {
            *next = again;
            if (rc == KL_EUNAVAIL && !again) {
                kl_wrap(rc, "%s not sent again (keyline-cad may have carried it out)",
                        cap_op_name(op));
            }
            return rc;
        }
    }
    *next = 1;
    return rc;
}

static kl_rc cac_answer_check(uint8_t op, cac_resp *resp)
{
    if (resp->msg.op != op) {
        return kl_fail(KL_EIO, "keyline-cad answered op %u to op %u", resp->msg.op, op);
    }
    if (resp->msg.status != KL_OK) {
        char m[2048];
        if (cap_get_str(&resp->msg, CAP_T_MESSAGE, m, sizeof m) != KL_OK) {
            snprintf(m, sizeof m, "%s refused (%s)", cap_op_name(op),
                     kl_rc_name((kl_rc)resp->msg.status));
        }
        return kl_fail((kl_rc)resp->msg.status, "%s", m);
    }
    return KL_OK;
}

kl_rc cac_call(cac *c, kl_buf *req, cac_resp *resp)
{
    kl_buf_init(&resp->body, CAP_RESP_MAX, 0);
    memset(&resp->msg, 0, sizeof resp->msg);
    uint8_t op = req->len > 5 ? req->data[5] : 0;
    unsigned first = atomic_load(&c->current) % c->naddrs;
    kl_rc rc = KL_EUNAVAIL;
    unsigned tried = 0;
    for (; tried < c->naddrs; tried++) {
        unsigned i = (first + tried) % c->naddrs;
        int next = 0;
        rc = cac_call_at(c, i, req, resp, &next);
        if (rc == KL_OK) {
            atomic_store(&c->current, i);
            break;
        }
        if (!next) {
            break;
        }
        /* the next call starts at the next address too */
        unsigned expect = i;
        (void)atomic_compare_exchange_strong(&c->current, &expect, (i + 1) % c->naddrs);
    }
    cac_answered = rc == KL_OK;
    if (rc == KL_OK) {
        rc = cac_answer_check(op, resp);
    } else if (c->naddrs > 1 && tried == c->naddrs) {
        kl_wrap(rc, "none of %u keyline-cad addresses answered; the last", c->naddrs);
    }
    if (rc == KL_EUNAVAIL) {
        cac_unavail_count++;
    }
    return rc;
}

void cac_resp_free(cac_resp *r)
{
    kl_buf_free(&r->body);
    memset(&r->msg, 0, sizeof r->msg);
}

static kl_rc cac_hello(cac *c, char *roles, size_t roles_cap)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, 256, 0);
    memset(&resp, 0, sizeof resp);
    TRY(cap_msg_begin(&req, CAP_OP_HELLO, 0));
    TRY(cap_put_u64(&req, CAP_T_VERSION, CAP_VERSION));
    TRY(cap_msg_end(&req));
    TRY(cac_call(c, &req, &resp));
    if (roles && roles_cap) {
        roles[0] = 0;
        const cap_field *f;
        for (size_t i = 0; (f = cap_find(&resp.msg, CAP_T_ROLE, i)) != NULL; i++) {
            size_t have = strlen(roles);
            if (have + f->len + 2 > roles_cap) {
                break;
            }
            if (have) {
                roles[have++] = ',';
            }
            memcpy(roles + have, f->val, f->len);
            roles[have + f->len] = 0;
        }
    }
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc cac_open_cfg(cac **out, const cac_cfg *cfg, char *roles, size_t roles_cap)
{
    kl_rc rc = KL_OK;
    *out = NULL;
    cac *c = calloc(1, sizeof *c);
    ENSURE(c, KL_EINTERNAL, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->current, 0);
    c->timeout_s = cfg->timeout_s ? cfg->timeout_s : 30;
    TRY(cac_addrs_parse(c, cfg->addrs, cfg->base_dir));
    for (unsigned i = 0; i < c->naddrs && !c->tls; i++) {
        if (c->addrs[i].tls) {
            TRY(cac_tls_setup(c, cfg));
        }
    }
    TRY(cac_hello(c, roles, roles_cap));
    *out = c;
    c = NULL;
out:
    cac_close(c);
    return rc;
}

kl_rc cac_open(cac **out, const char *addrs, unsigned timeout_s, char *roles, size_t roles_cap)
{
    cac_cfg cfg = {.addrs = addrs, .timeout_s = timeout_s};
    return cac_open_cfg(out, &cfg, roles, roles_cap);
}

void cac_close(cac *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->nidle; i++) {
        cac_conn_close(&c->idle[i]);
    }
    SSL_CTX_free(c->tls);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static kl_rc cac_auth_put(kl_buf *b, const cac_auth *a)
{
    kl_rc rc = KL_OK;
    TRY(cap_put_str(b, CAP_T_AUTH, a->method));
    TRY(cap_put_str(b, CAP_T_AUTH_SERIAL, a->client_serial));
    TRY(cap_put_str(b, CAP_T_AUTH_USER, a->user));
    if (a->client_cert) {
        TRY(cap_put_bytes(b, CAP_T_AUTH_CERT, a->client_cert, a->client_cert_len));
    }
out:
    return rc;
}

kl_rc cac_issue(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len, char serial[65])
{
    return cac_issue_bound(c, r, der, der_len, serial, NULL, 0);
}

kl_rc cac_issue_bound(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len,
                      char serial[65], char *device, size_t cap)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, CAP_REQ_MAX, 0);
    memset(&resp, 0, sizeof resp);
    *der = NULL;
    TRY(cap_msg_begin(&req, CAP_OP_ISSUE, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, r->profile));
    TRY(cap_put_bytes(&req, CAP_T_CSR, r->csr, r->csr_len));
    TRY(cac_auth_put(&req, &r->auth));
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, r->device_id));
    if (r->pending) {
        TRY(cap_put_u64(&req, CAP_T_PENDING, 1));
    }
    if (r->station && *r->station) {
        TRY(cap_put_str(&req, CAP_T_STATION, r->station));
    }
    TRY(cap_msg_end(&req));
    TRY(cac_call(c, &req, &resp));
    TRY(cap_get_str(&resp.msg, CAP_T_SERIAL, serial, 65));
    if (device) {
        rc = cap_get_str(&resp.msg, CAP_T_DEVICE_ID, device, cap);
        if (rc == KL_ENOTFOUND) {
            device[0] = 0;
            rc = KL_OK;
        }
        TRY(rc);
    }
    const cap_field *f = cap_find(&resp.msg, CAP_T_CERT, 0);
    *der = malloc(f->len ? f->len : 1);
    ENSURE(*der, KL_EINTERNAL, "out of memory");
    memcpy(*der, f->val, f->len);
    *der_len = f->len;
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

static kl_rc cac_serial_op(cac *c, cap_op op, const char *serial, int reason)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, 256, 0);
    memset(&resp, 0, sizeof resp);
    TRY(cap_msg_begin(&req, op, 0));
    TRY(cap_put_str(&req, CAP_T_SERIAL, serial));
    if (reason >= 0) {
        TRY(cap_put_u64(&req, CAP_T_REASON, (uint64_t)reason));
    }
    TRY(cap_msg_end(&req));
    TRY(cac_call(c, &req, &resp));
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc cac_activate(cac *c, const char *serial)
{
    return cac_serial_op(c, CAP_OP_ACTIVATE, serial, -1);
}

kl_rc cac_abandon(cac *c, const char *serial, int reason)
{
    return cac_serial_op(c, CAP_OP_ABANDON, serial, reason);
}
