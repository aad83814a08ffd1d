/* keyline-cad: the Unix socket, peer credentials, one thread per connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cad.h"
#include "kl_log.h"
#include "kl_notify.h"

kl_rc cad_peer_identify(const cad *d, int fd, cad_peer *peer)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    memset(peer, 0, sizeof *peer);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof cr) {
        return kl_fail(KL_EIO, "SO_PEERCRED: %s", strerror(errno));
    }
    peer->pid = cr.pid;
    peer->uid = cr.uid;
    peer->gid = cr.gid;
    struct passwd pw, *res = NULL;
    char buf[2048];
    if (getpwuid_r(cr.uid, &pw, buf, sizeof buf, &res) == 0 && res) {
        snprintf(peer->user, sizeof peer->user, "%s", res->pw_name);
    } else {
        snprintf(peer->user, sizeof peer->user, "%u", (unsigned)cr.uid);
    }
    char roles[200] = "";
    for (size_t i = 0; i < d->cfg.nroles; i++) {
        const cad_role *r = &d->cfg.roles[i];
        for (size_t j = 0; j < r->nuids; j++) {
            if (r->uids[j] == cr.uid) {
                peer->roles |= UINT32_C(1) << i;
                size_t n = strlen(roles);
                snprintf(roles + n, sizeof roles - n, "%s%s", n ? "," : "", r->name);
                break;
            }
        }
    }
    snprintf(peer->actor, sizeof peer->actor, "uid %u (%s) as %s", (unsigned)cr.uid, peer->user,
             roles[0] ? roles : "no role");
    if (gethostname(peer->host, sizeof peer->host) != 0) {
        snprintf(peer->host, sizeof peer->host, "localhost");
    }
    peer->host[sizeof peer->host - 1] = 0;
    return KL_OK;
}

struct cad_conn {
    cad *d;
    int fd;
    int tcp;                     /* accepted on the TCP listener: mutual TLS */
    SSL *ssl;                    /* NULL on the Unix socket */
    uint8_t addr[16];            /* TCP: the source address, IPv6 (IPv4 as ::ffff:a.b.c.d) */
    char from[INET6_ADDRSTRLEN]; /* TCP: that address as text, IPv4 dotted */
    char key[80];                /* the peer it counts against: "uid N", or "CN=..." over TLS */
    cad_conn *next; /* d->handshaking during the TLS handshake; d->conns once admitted */
};

/* One peer (a uid on the Unix socket, a front-end certificate CN on the TCP listener) holds at
 * most half of [cad] max-connections, and so do TCP connections still in their handshake: a
 * front end that opens connections and sends nothing (or half a frame) cannot lock the other
 * front ends out. */
static unsigned cad_conn_share(const cad *d)
{
    return d->cfg.max_conns > 1 ? d->cfg.max_conns / 2 : 1;
}

/* The source address of a TCP connection: an IPv4 peer, or an IPv4-mapped IPv6 one (a
 * listener on [::]), counts as its IPv4 address, and is written as one. */
static void cad_conn_addr(cad_conn *cx, const struct sockaddr_storage *sa)
{
    memset(cx->addr, 0, sizeof cx->addr);
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        cx->addr[10] = cx->addr[11] = 0xff;
        memcpy(cx->addr + 12, &in->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        memcpy(cx->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)cx->addr)) {
        (void)inet_ntop(AF_INET, cx->addr + 12, cx->from, sizeof cx->from);
    } else {
        (void)inet_ntop(AF_INET6, cx->addr, cx->from, sizeof cx->from);
    }
}

/* Whether two source addresses count as one for [cad] max-handshakes-per-ip: the same IPv4
 * address, or two IPv6 addresses of one /64, the prefix a single host or LAN is given (RFC 4291
 * 2.5.1, RFC 6177): one host can take any number of its addresses, so counting them one by one
 * would let it fill the whole handshake half. */
static int cad_addr_same_source(const uint8_t a[16], const uint8_t b[16])
{
    int a4 = IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a);
    if (a4 != IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)b)) {
        return 0;
    }
    return memcmp(a, b, a4 ? 16 : 8) == 0;
}

/* The source cx counts under, as text: its IPv4 address, or its IPv6 /64. */
static void cad_addr_source(const cad_conn *cx, char *out, size_t len)
{
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)cx->addr)) {
        snprintf(out, len, "%s", cx->from);
        return;
    }
    uint8_t net[16] = {0};
    char text[INET6_ADDRSTRLEN];
    memcpy(net, cx->addr, 8);
    (void)inet_ntop(AF_INET6, net, text, sizeof text);
    snprintf(out, len, "%s/64", text);
}

/* Under d->lock: take a slot for a connection just accepted, or say why not. A TCP connection
 * also takes one of the handshake half, and one of its source's share of it ([cad]
 * max-handshakes-per-ip; an IPv4 address or an IPv6 /64: cad_addr_same_source): a peer that
 * need not authenticate to open connections (and re-open them as they time out) cannot take
 * the whole half from the front ends that reconnect. */
static int cad_conn_enter(cad_conn *cx, char *why, size_t len)
{
    cad *d = cx->d;
    unsigned share = cad_conn_share(d), per_ip = d->cfg.max_hs_per_ip, from = 0;
    if (d->nconns >= d->cfg.max_conns) {
        snprintf(why, len, "%u connections, [cad] max-connections", d->nconns);
        return 0;
    }
    if (cx->tcp && d->nhandshakes >= share) {
        snprintf(why, len,
                 "%u TCP connections in their TLS handshake, half of [cad] max-connections",
                 d->nhandshakes);
        return 0;
    }
    if (cx->tcp) {
        for (const cad_conn *o = d->handshaking; o; o = o->next) {
            from += cad_addr_same_source(o->addr, cx->addr);
        }
        if (per_ip && from >= per_ip) {
            char source[INET6_ADDRSTRLEN + 4];
            cad_addr_source(cx, source, sizeof source);
            snprintf(why, len,
                     "%s has %u TCP connections in their TLS handshake, [cad] "
                     "max-handshakes-per-ip",
                     source, from);
            return 0;
        }
        cx->next = d->handshaking;
        d->handshaking = cx;
        d->nhandshakes++;
    }
    d->nconns++;
    return 1;
}

/* Under d->lock: the TLS handshake is over (done or failed). */
static void cad_conn_handshake_end(cad_conn *cx)
{
    cad *d = cx->d;
    for (cad_conn **p = &d->handshaking; *p; p = &(*p)->next) {
        if (*p == cx) {
            *p = cx->next;
            cx->next = NULL;
            d->nhandshakes--;
            break;
        }
    }
}

static long cad_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Refusals a peer without a certificate can cause at will (a connection over a limit at accept,
 * a TLS handshake that fails) go to the log once per burst: the first at once, the rest counted
 * (cad_burst_tick), so that a flood of connections is no flood of log lines. Refusals of a peer
 * whose certificate the CA's chain verified (revoked, not a front end's, over its share) are
 * logged each. */
#define CAD_BURST_QUIET_MS 5000  /* a burst is over after this long without a refusal */
#define CAD_BURST_EVERY_MS 60000 /* while it goes on, the count at most this often */
#define CAD_REFUSED "connection limit: refused"
#define CAD_FAILED "TLS handshake failed on"

static void cad_burst_add(cad *d, cad_burst *b, const char *what, const char *why)
{
    long now = cad_mono_ms();
    pthread_mutex_lock(&d->lock);
    int first = !b->on;
    if (first) {
        b->on = 1;
        b->n = b->total = 0;
        b->first_ms = b->line_ms = now;
    } else {
        b->n++;
    }
    b->total++;
    b->last_ms = now;
    snprintf(b->last, sizeof b->last, "%s", why);
    pthread_mutex_unlock(&d->lock);
    if (first) {
        kl_warn("cad: %s a connection (%s); more such are counted, at most one line a minute", what,
                why);
    }
}

/* From the accept loop, at least every half second; `stop`: the daemon stops, say what is left. */
static void cad_burst_tick(cad *d, cad_burst *b, const char *what, int stop)
{
    long now = cad_mono_ms();
    char line[512] = "";
    pthread_mutex_lock(&d->lock);
    if (b->on) {
        int over = stop || now - b->last_ms >= CAD_BURST_QUIET_MS;
        if (b->n && (over || now - b->line_ms >= CAD_BURST_EVERY_MS)) {
            snprintf(line, sizeof line,
                     "%s %lu more connections in %ld s (%lu in %ld s in all; the last: %s)", what,
                     b->n, (now - b->line_ms + 500) / 1000, b->total,
                     (now - b->first_ms + 500) / 1000, b->last);
            b->n = 0;
            b->line_ms = now;
        }
        b->on = !over;
    }
    pthread_mutex_unlock(&d->lock);
    if (line[0]) {
        kl_warn("cad: %s", line);
    }
}

static kl_rc cad_conn_admit(cad_conn *cx, const cad_peer *peer)
{
    cad *d = cx->d;
    unsigned n = 0, share = cad_conn_share(d);
    if (cx->tcp) {
        snprintf(cx->key, sizeof cx->key, "%s", peer->user);
    } else {
        snprintf(cx->key, sizeof cx->key, "uid %u", (unsigned)peer->uid);
    }
    pthread_mutex_lock(&d->lock);
    for (const cad_conn *o = d->conns; o; o = o->next) {
        n += strcmp(o->key, cx->key) == 0;
    }
    if (n < share) {
        cx->next = d->conns;
        d->conns = cx;
    }
    pthread_mutex_unlock(&d->lock);
    if (n >= share) {
        return kl_fail(KL_EPOLICY,
                       "%s holds %u connections already, its share of [cad] max-connections (%u)",
                       peer->actor, n, d->cfg.max_conns);
    }
    return KL_OK;
}

static void cad_conn_leave(cad_conn *cx)
{
    cad *d = cx->d;
    pthread_mutex_lock(&d->lock);
    for (cad_conn **p = &d->conns; *p; p = &(*p)->next) {
        if (*p == cx) {
            *p = cx->next;
            break;
        }
    }
    d->nconns--;
    pthread_mutex_unlock(&d->lock);
}

/* Read exactly n bytes, waking every half second to notice a stop. */
static int cad_read_full(cad_conn *cx, uint8_t *p, size_t n, volatile int *stop)
{
    size_t got = 0;
    while (got < n) {
        if (!cx->ssl || SSL_pending(cx->ssl) == 0) {
            struct pollfd pf = {.fd = cx->fd, .events = POLLIN};
            int r = poll(&pf, 1, 500);
            if (*stop) {
                return -1;
            }
            if (r == 0 || (r < 0 && errno == EINTR)) {
                continue;
            }
            if (r < 0) {
                return -1;
            }
        }
        if (cx->ssl) {
            int k = SSL_read(cx->ssl, p + got, (int)(n - got > 65536 ? 65536 : n - got));
            if (k <= 0) {
                int e = SSL_get_error(cx->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    continue;
                }
                return -1;
            }
            got += (size_t)k;
            continue;
        }
        ssize_t k = recv(cx->fd, p + got, n - got, 0);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        got += (size_t)k;
    }
    return 0;
}

static int cad_write_full(cad_conn *cx, const uint8_t *p, size_t n)
{
    while (n) {
        if (cx->ssl) {
            int w = SSL_write(cx->ssl, p, (int)(n > 65536 ? 65536 : n));
            if (w <= 0) {
                return -1;
            }
            p += w;
            n -= (size_t)w;
            continue;
        }
        ssize_t w = send(cx->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#define CAD_TLS_HANDSHAKE_MS 10000

/* SSL_accept within CAD_TLS_HANDSHAKE_MS in all: the socket non-blocking meanwhile, so that a
 * client that trickles its handshake a byte at a time (each read well inside any per-read
 * timeout) cannot hold a handshake slot for as long as it likes. */
static kl_rc cad_tls_accept(SSL *ssl, int fd)
{
    kl_rc rc = KL_OK;
    int fl = fcntl(fd, F_GETFL);
    ENSURE(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0, KL_EINTERNAL,
           "TLS handshake: fcntl: %s", strerror(errno));
    long deadline = cad_mono_ms() + CAD_TLS_HANDSHAKE_MS;
    for (;;) {
        ERR_clear_error();
        int r = SSL_accept(ssl);
        if (r == 1) {
            break;
        }
        int e = SSL_get_error(ssl, r);
        ENSURE_SSL(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE, KL_EAUTH,
                   "TLS handshake");
        long left = deadline - cad_mono_ms();
        ENSURE(left > 0, KL_EAUTH, "TLS handshake: not done within %d s",
               CAD_TLS_HANDSHAKE_MS / 1000);
        struct pollfd p = {.fd = fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
            rc = kl_fail(KL_EAUTH, "TLS handshake: poll: %s", strerror(errno));
            goto out;
        }
    }
    ENSURE(fcntl(fd, F_SETFL, fl) == 0, KL_EINTERNAL, "fcntl: %s", strerror(errno));
out:
    return rc;
}

/* The TLS handshake (at most 10 s in all) and the front end's identity from its certificate.
 * `unverified`: it failed before a certificate was verified (anyone can cause that). */
static kl_rc cad_conn_tls(cad_conn *cx, cad_peer *peer, int *unverified)
{
    struct timeval tv = {10, 0};
    (void)setsockopt(cx->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(cx->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    cx->ssl = SSL_new(cx->d->tls);
    if (!cx->ssl || SSL_set_fd(cx->ssl, cx->fd) != 1) {
        return kl_fail_ssl(KL_EINTERNAL, "SSL_new");
    }
    kl_rc rc = cad_tls_accept(cx->ssl, cx->fd);
    *unverified = rc != KL_OK;
    return rc == KL_OK ? cad_tls_peer(cx->d, cx->ssl, peer) : rc;
}

/* Ops that never append an audit entry when they succeed. */
static int cad_op_read_only(uint8_t op)
{
    switch (op) {
    case CAP_OP_HELLO:
    case CAP_OP_POLL:
    case CAP_OP_CACERTS:
    case CAP_OP_CERT_STATUS:
    case CAP_OP_DEVICE:
    case CAP_OP_PROFILE:
    case CAP_OP_CA_CHAIN:
    case CAP_OP_PENDING:
    case CAP_OP_KNOWN:
    case CAP_OP_OCSP: /* answering appends no audit entry: no store read per answer */ return 1;
    default: return 0;
    }
}

/* One connection: frames in, frames out, until the peer closes or sends garbage (answered
 * once, then closed: a framing error leaves nothing to resynchronise on). */
static void *cad_conn_run(void *arg)
{
    cad_conn *cx = arg;
    cad *d = cx->d;
    cad_peer peer;
    kl_buf rsp;
    uint8_t *body = malloc(CAP_REQ_MAX);
    int unverified = 0;
    kl_buf_init(&rsp, CAP_RESP_MAX, 0);
    kl_rc who = !body     ? kl_fail(KL_EINTERNAL, "out of memory")
                : cx->tcp ? cad_conn_tls(cx, &peer, &unverified)
                          : cad_peer_identify(d, cx->fd, &peer);
    if (cx->tcp) {
        pthread_mutex_lock(&d->lock);
        cad_conn_handshake_end(cx);
        pthread_mutex_unlock(&d->lock);
    }
    if (who == KL_OK) {
        who = cad_conn_admit(cx, &peer);
    }
    if (who != KL_OK && unverified) {
        char why[300];
        snprintf(why, sizeof why, "from %s: %s", cx->from, kl_errmsg());
        cad_burst_add(d, &d->failed, CAD_FAILED, why);
        goto done;
    }
    if (who != KL_OK) {
        kl_warn("cad: connection%s%s refused: %s", cx->tcp ? " from " : "", cx->from, kl_errmsg());
        goto done;
    }
    for (;;) {
        uint8_t hdr[4];
        if (cad_read_full(cx, hdr, sizeof hdr, &d->stop) != 0) {
            break;
        }
        uint32_t n = cap_frame_len(hdr);
        cap_msg req;
        int fatal = n < 3 || n > CAP_REQ_MAX;
        if (fatal) {
            kl_warn("cad: %s sent a frame of %u bytes (3..%u); closing", peer.actor, n,
                    CAP_REQ_MAX);
            break;
        }
        if (cad_read_full(cx, body, n, &d->stop) != 0) {
            break;
        }
        if (cap_msg_parse(body, n, 0, &req) != KL_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "malformed request: %s", kl_errmsg());
            kl_warn("cad: %s: %s; closing", peer.actor, msg);
            uint8_t op = body[1] > 0 && body[1] < CAP_OP__END ? body[1] : CAP_OP_HELLO;
            if (cap_msg_begin(&rsp, (cap_op)op, KL_EINPUT) == KL_OK &&
                cap_put_str(&rsp, CAP_T_MESSAGE, msg) == KL_OK && cap_msg_end(&rsp) == KL_OK) {
                (void)cad_write_full(cx, rsp.data, rsp.len);
            }
            OPENSSL_cleanse(body, n);
            break;
        }
        cad_dispatch(d, &peer, &req, &rsp);
        /* a request may carry a secret (a Matter setup passcode, sealed before it is stored):
         * none outlives its request */
        OPENSSL_cleanse(body, n);
        if (rsp.len == 0 || cad_write_full(cx, rsp.data, rsp.len) != 0) {
            break;
        }
        /* [cad] audit-checkpoint-every: after the answer, so the signing never delays one; only
         * after a request that may have appended entries (a write, or any refusal: refusals
         * of a profile are audited), so lookups cost no store read */
        if (!cad_op_read_only(req.op) || rsp.data[6] != KL_OK) {
            ca_audit_checkpoint_due(d->ca);
        }
    }
done:
    if (cx->ssl) {
        (void)SSL_shutdown(cx->ssl);
        SSL_free(cx->ssl);
    }
    close(cx->fd);
    free(body);
    kl_buf_free(&rsp);
    cad_conn_leave(cx);
    free(cx);
    return NULL;
}

/* A socket file left by a daemon that died is replaced; one a live daemon answers on is not. */
static kl_rc cad_socket_clear(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return KL_OK;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return kl_fail(KL_EUSAGE, "%s exists and is not a socket", path);
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(s);
        return kl_fail(KL_EEXIST, "another keyline-cad answers on %s", path);
    }
    if (s >= 0) {
        close(s);
    }
    if (unlink(path) != 0) {
        return kl_fail(KL_EIO, "cannot remove stale socket %s: %s", path, strerror(errno));
    }
    return KL_OK;
}

static kl_rc cad_listen(cad *d)
{
    kl_rc rc = KL_OK;
    const char *path = d->cfg.socket_path;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ENSURE(strlen(path) < sizeof sa.sun_path, KL_EUSAGE, "[cad] socket path longer than %zu bytes",
           sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    TRY(cad_socket_clear(path));
    d->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ENSURE(d->listen_fd >= 0, KL_EIO, "socket: %s", strerror(errno));
    /* no window in which the socket is reachable with wider permissions */
    mode_t old = umask(0777 & ~d->cfg.socket_mode);
    int b = bind(d->listen_fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    umask(old);
    ENSURE(b == 0, KL_EIO, "bind %s: %s", path, strerror(e));
    ENSURE(chmod(path, d->cfg.socket_mode) == 0, KL_EIO, "chmod %s: %s", path, strerror(errno));
    if (d->cfg.socket_gid != (gid_t)-1) {
        ENSURE(chown(path, (uid_t)-1, d->cfg.socket_gid) == 0, KL_EIO, "chown %s: %s", path,
               strerror(errno));
    }
    ENSURE(listen(d->listen_fd, 128) == 0, KL_EIO, "listen %s: %s", path, strerror(errno));
out:
    return rc;
}

kl_rc cad_serve(cad *d)
{
    kl_rc rc = KL_OK;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    TRY(cad_listen(d));
    TRY(cad_tls_setup(d));
    kl_info("keyline-cad: listening on %s (%zu profiles, %zu roles)", d->cfg.socket_path,
            d->cfg.nprofiles, d->cfg.nroles);
    kl_notify_ready();
    while (!d->stop) {
        struct pollfd pf[2] = {{.fd = d->listen_fd, .events = POLLIN},
                               {.fd = d->tcp_fd, .events = POLLIN}};
        int r = poll(pf, d->tcp_fd >= 0 ? 2 : 1, 500);
        cad_burst_tick(d, &d->refused, CAD_REFUSED, 0);
        cad_burst_tick(d, &d->failed, CAD_FAILED, 0);
        if (r <= 0) {
            continue;
        }
        int tcp = !(pf[0].revents & POLLIN);
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        memset(&sa, 0, sizeof sa);
        int fd =
            accept4(tcp ? d->tcp_fd : d->listen_fd, (struct sockaddr *)&sa, &salen, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        cad_conn *cx = calloc(1, sizeof *cx);
        if (!cx) {
            cad_burst_add(d, &d->refused, CAD_REFUSED, "out of memory");
            close(fd);
            continue;
        }
        *cx = (cad_conn){.d = d, .fd = fd, .tcp = tcp};
        if (tcp) {
            cad_conn_addr(cx, &sa);
        }
        char why[160];
        pthread_mutex_lock(&d->lock);
        int in = cad_conn_enter(cx, why, sizeof why);
        pthread_mutex_unlock(&d->lock);
        pthread_t t;
        if (in && pthread_create(&t, &attr, cad_conn_run, cx) != 0) {
            pthread_mutex_lock(&d->lock);
            cad_conn_handshake_end(cx);
            d->nconns--;
            pthread_mutex_unlock(&d->lock);
            in = 0;
            snprintf(why, sizeof why, "no thread for it");
        }
        if (!in) {
            cad_burst_add(d, &d->refused, CAD_REFUSED, why);
            close(fd);
            free(cx);
        }
    }
    kl_notify_stopping();
    /* let connection threads see the stop flag and finish their current request */
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&d->lock);
        unsigned n = d->nconns;
        pthread_mutex_unlock(&d->lock);
        if (n == 0) {
            break;
        }
        usleep(50 * 1000);
    }
    /* what the last bursts left uncounted in the log */
    cad_burst_tick(d, &d->refused, CAD_REFUSED, 1);
    cad_burst_tick(d, &d->failed, CAD_FAILED, 1);
    close(d->listen_fd);
    (void)unlink(d->cfg.socket_path);
    if (d->tcp_fd >= 0) {
        close(d->tcp_fd);
        d->tcp_fd = -1;
    }
out:
    pthread_attr_destroy(&attr);
    return rc;
}
