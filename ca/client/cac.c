/* keyline: CA protocol client (front ends -> keyline-cad over a Unix socket). */
#include "cac.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CAC_POOL 64

struct cac {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    unsigned timeout_s;
    pthread_mutex_t lock;
    int idle[CAC_POOL];
    size_t nidle;
};

static kl_rc cac_connect(const cac *c, int *fd)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, sizeof sa.sun_path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return kl_fail(KL_EIO, "socket: %s", strerror(errno));
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(s);
        return kl_fail(KL_EIO, "cannot reach keyline-cad at %s: %s", c->path, strerror(e));
    }
    *fd = s;
    return KL_OK;
}

/* Wait until fd is ready for `events` before the deadline (CLOCK_MONOTONIC seconds). */
static kl_rc cac_wait(int fd, short events, const struct timespec *deadline)
{
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (long)(deadline->tv_sec - now.tv_sec) * 1000 +
                  (deadline->tv_nsec - now.tv_nsec) / 1000000;
        if (ms <= 0) {
            return kl_fail(KL_ETIMEOUT, "keyline-cad did not answer in time");
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(ms > 60000 ? 60000 : ms));
        if (n > 0) {
            return KL_OK;
        }
        if (n < 0 && errno != EINTR) {
            return kl_fail(KL_EIO, "poll: %s", strerror(errno));
        }
    }
}

static kl_rc cac_write_all(int fd, const uint8_t *p, size_t n, const struct timespec *dl)
{
    while (n) {
        kl_rc rc = cac_wait(fd, POLLOUT, dl);
        if (rc != KL_OK) {
            return rc;
        }
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (w <= 0) {
            return kl_fail(KL_EIO, "writing to keyline-cad: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return KL_OK;
}

/* Read exactly n bytes. *got counts what arrived (0 and KL_EIO: the daemon closed first). */
static kl_rc cac_read_all(int fd, uint8_t *p, size_t n, const struct timespec *dl, size_t *got)
{
    *got = 0;
    while (*got < n) {
        kl_rc rc = cac_wait(fd, POLLIN, dl);
        if (rc != KL_OK) {
            return rc;
        }
        ssize_t r = recv(fd, p + *got, n - *got, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (r <= 0) {
            return kl_fail(KL_EIO, "keyline-cad closed the connection%s%s", r < 0 ? ": " : "",
                           r < 0 ? strerror(errno) : "");
        }
        *got += (size_t)r;
    }
    return KL_OK;
}

/* An idle pooled connection, or -1. One the daemon has closed meanwhile (it restarted, or
 * dropped an idle connection) is readable at EOF: it is closed here and the next one tried, so
 * that a request which must not be sent twice (issue) does not go to a dead connection. */
static int cac_take(cac *c)
{
    for (;;) {
        int fd = -1;
        pthread_mutex_lock(&c->lock);
        if (c->nidle) {
            fd = c->idle[--c->nidle];
        }
        pthread_mutex_unlock(&c->lock);
        if (fd < 0) {
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0) {
            return fd; /* nothing pending: the connection is open and idle */
        }
        close(fd); /* EOF, an error, or bytes nobody asked for */
    }
}

static void cac_give(cac *c, int fd)
{
    pthread_mutex_lock(&c->lock);
    if (c->nidle < CAC_POOL) {
        c->idle[c->nidle++] = fd;
        fd = -1;
    }
    pthread_mutex_unlock(&c->lock);
    if (fd >= 0) {
        close(fd);
    }
}

/* Ops that change nothing may be sent again on a fresh connection when a pooled one turns out
 * to be closed; an issue or activate is never sent twice. */
static int cac_op_idempotent(uint8_t op)
{
    return op == CAP_OP_HELLO || op == CAP_OP_POLL || op == CAP_OP_CACERTS || op == CAP_OP_CRL ||
           op == CAP_OP_OCSP || op == CAP_OP_CERT_STATUS || op == CAP_OP_DEVICE ||
           op == CAP_OP_PROFILE || op == CAP_OP_CA_CHAIN || op == CAP_OP_PENDING;
}

static kl_rc cac_exchange(cac *c, int fd, const kl_buf *req, cac_resp *resp, size_t *got)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += c->timeout_s;
    uint8_t hdr[4];
    *got = 0;
    kl_rc rc = cac_write_all(fd, req->data, req->len, &dl);
    if (rc == KL_OK) {
        rc = cac_read_all(fd, hdr, sizeof hdr, &dl, got);
    }
    if (rc != KL_OK) {
        return rc;
    }
    uint32_t n = cap_frame_len(hdr);
    if (n < 3 || n > CAP_RESP_MAX) {
        return kl_fail(KL_EIO, "keyline-cad sent a frame of %u bytes", n);
    }
    kl_buf_reset(&resp->body);
    uint8_t *p = malloc(n);
    if (!p) {
        return kl_fail(KL_EINTERNAL, "out of memory (%u bytes)", n);
    }
    size_t g2 = 0;
    rc = cac_read_all(fd, p, n, &dl, &g2);
    if (rc == KL_OK) {
        rc = kl_buf_put(&resp->body, p, n);
    }
    free(p);
    if (rc == KL_OK) {
        rc = cap_msg_parse(resp->body.data, resp->body.len, 1, &resp->msg);
        if (rc != KL_OK) {
            rc = kl_wrap(KL_EIO, "keyline-cad answer");
        }
    }
    return rc;
}

kl_rc cac_call(cac *c, kl_buf *req, cac_resp *resp)
{
    kl_buf_init(&resp->body, CAP_RESP_MAX, 0);
    memset(&resp->msg, 0, sizeof resp->msg);
    uint8_t op = req->len > 5 ? req->data[5] : 0;
    kl_rc rc = KL_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = cac_take(c);
        int reused = fd >= 0;
        if (!reused) {
            TRY(cac_connect(c, &fd));
        }
        size_t got = 0;
        rc = cac_exchange(c, fd, req, resp, &got);
        if (rc == KL_OK) {
            cac_give(c, fd);
            break;
        }
        close(fd);
        if (!(reused && got == 0 && rc == KL_EIO && cac_op_idempotent(op))) {
            goto out;
        }
    }
    if (rc == KL_OK && resp->msg.op != op) {
        rc = kl_fail(KL_EIO, "keyline-cad answered op %u to op %u", resp->msg.op, op);
    }
    if (rc == KL_OK && resp->msg.status != KL_OK) {
        char m[2048];
        if (cap_get_str(&resp->msg, CAP_T_MESSAGE, m, sizeof m) != KL_OK) {
            snprintf(m, sizeof m, "%s refused (%s)", cap_op_name(op),
                     kl_rc_name((kl_rc)resp->msg.status));
        }
        rc = kl_fail((kl_rc)resp->msg.status, "%s", m);
    }
out:
    return rc;
}

void cac_resp_free(cac_resp *r)
{
    kl_buf_free(&r->body);
    memset(&r->msg, 0, sizeof r->msg);
}

kl_rc cac_open(cac **out, const char *endpoint, unsigned timeout_s, char *roles, size_t roles_cap)
{
    kl_rc rc = KL_OK;
    cac_resp resp;
    kl_buf req;
    kl_buf_init(&req, 256, 0);
    memset(&resp, 0, sizeof resp);
    *out = NULL;
    const char *path = strncmp(endpoint, "unix:", 5) == 0 ? endpoint + 5 : endpoint;
    cac *c = calloc(1, sizeof *c);
    ENSURE(c, KL_EINTERNAL, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    c->timeout_s = timeout_s ? timeout_s : 30;
    ENSURE(*path && strlen(path) < sizeof c->path, KL_EUSAGE,
           "keyline-cad socket path '%s' is empty or longer than %zu bytes", path,
           sizeof c->path - 1);
    memcpy(c->path, path, strlen(path) + 1);
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
    *out = c;
    c = NULL;
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    cac_close(c);
    return rc;
}

void cac_close(cac *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->nidle; i++) {
        close(c->idle[i]);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static kl_rc cac_auth_put(kl_buf *b, const cac_auth *a)
{
    kl_rc rc = KL_OK;
    TRY(cap_put_str(b, CAP_T_AUTH, a->method));
    TRY(cap_put_str(b, CAP_T_AUTH_SERIAL, a->client_serial));
    TRY(cap_put_str(b, CAP_T_AUTH_USER, a->user));
out:
    return rc;
}

kl_rc cac_issue(cac *c, const cac_issue_req *r, uint8_t **der, size_t *der_len, char serial[65])
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
    TRY(cap_msg_end(&req));
    TRY(cac_call(c, &req, &resp));
    TRY(cap_get_str(&resp.msg, CAP_T_SERIAL, serial, 65));
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
