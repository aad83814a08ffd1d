/* keyline-provision: one serial line (docs/line-protocol.md "Timeouts and retransmission").
 *
 * The station drives: it sends a request and waits for the response with the same seq. After a
 * timeout, or as soon as a damaged frame arrives (it was most likely our answer), it resends
 * the identical bytes; the device recognises the retransmission (same seq and CRC) and answers
 * from its cache without acting twice. Late answers to earlier attempts carry an older seq
 * and are dropped here. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "st.h"

long st_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const struct {
    long baud;
    speed_t code;
} st_bauds[] = {
    {9600, B9600},       {19200, B19200},     {38400, B38400},   {57600, B57600},
    {115200, B115200},   {230400, B230400},   {460800, B460800}, {921600, B921600},
    {1000000, B1000000}, {2000000, B2000000},
};

long st_baud_ok(long baud)
{
    for (size_t i = 0; i < sizeof st_bauds / sizeof st_bauds[0]; i++) {
        if (st_bauds[i].baud == baud) {
            return baud;
        }
    }
    return 0;
}

kl_rc st_link_open(st_link *l, const char *path, long baud, long timeout_ms, long retries)
{
    kl_rc rc = KL_OK;
    struct termios tio;
    speed_t code = 0;
    memset(l, 0, sizeof *l);
    l->fd = -1;
    for (size_t i = 0; i < sizeof st_bauds / sizeof st_bauds[0]; i++) {
        if (st_bauds[i].baud == baud) {
            code = st_bauds[i].code;
        }
    }
    ENSURE(code != 0, KL_EUSAGE, "baud %ld is not supported", baud);
    ENSURE(strlen(path) < sizeof l->path, KL_EUSAGE, "port path too long");
    snprintf(l->path, sizeof l->path, "%s", path);
    l->timeout_ms = timeout_ms;
    l->retries = retries;
    l->fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (l->fd < 0) {
        rc = kl_fail(errno == ENOENT ? KL_ENOTFOUND : KL_EIO, "%s: cannot open: %s", path,
                     strerror(errno));
        goto out;
    }
    ENSURE(isatty(l->fd), KL_EIO, "%s: not a serial port or pty", path);
    ENSURE(tcgetattr(l->fd, &tio) == 0, KL_EIO, "%s: tcgetattr: %s", path, strerror(errno));
    cfmakeraw(&tio);
    tio.c_cflag |= CLOCAL | CREAD;
    tio.c_cflag &= ~(tcflag_t)(CSTOPB | CRTSCTS);
    tio.c_iflag &= ~(tcflag_t)(IXON | IXOFF | IXANY);
    tio.c_cc[VMIN] = 0;
    tio.c_cc[VTIME] = 0;
    cfsetispeed(&tio, code);
    cfsetospeed(&tio, code);
    ENSURE(tcsetattr(l->fd, TCSANOW, &tio) == 0, KL_EIO, "%s: cannot set raw mode at %ld baud: %s",
           path, baud, strerror(errno));
    ENSURE(kl_proto_dec_init(&l->dec, l->rx, sizeof l->rx) == KL_PROTO_OK, KL_EINTERNAL,
           "decoder init");
    {
        uint16_t s = 0;
        /* A random first seq: a restarted station never collides with the device's cache. */
        if (RAND_bytes((unsigned char *)&s, sizeof s) != 1) {
            s = (uint16_t)getpid();
        }
        l->seq = s;
    }
    st_link_flush(l);
out:
    if (rc != KL_OK && l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    return rc;
}

void st_link_close(st_link *l)
{
    if (l->fd >= 0) {
        close(l->fd);
    }
    l->fd = -1;
}

void st_link_flush(st_link *l)
{
    uint8_t junk[512];
    if (l->fd < 0) {
        return;
    }
    tcflush(l->fd, TCIFLUSH);
    while (read(l->fd, junk, sizeof junk) > 0) {
    }
    kl_proto_dec_reset(&l->dec);
}

static kl_rc st_write_all(st_link *l, const uint8_t *p, size_t n)
{
    long deadline = st_now_ms() + l->timeout_ms;
    while (n > 0) {
        ssize_t w = write(l->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            l->bytes_tx += (uint64_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno != EAGAIN) {
            return kl_fail(KL_EIO, "%s: write: %s", l->path, strerror(errno));
        }
        long left = deadline - st_now_ms();
        if (left <= 0) {
            return kl_fail(KL_ETIMEOUT, "%s: output blocked for %ld ms", l->path, l->timeout_ms);
        }
        struct pollfd pfd = {.fd = l->fd, .events = POLLOUT};
        (void)poll(&pfd, 1, left > 100 ? 100 : (int)left);
    }
    return KL_OK;
}

/* Wait until `deadline` for the response to seq. Returns 1 with *r filled, 0 on timeout,
 * 2 when a damaged frame arrived (resend now), or -1 with kl_fail set. */
static int st_wait(st_link *l, uint16_t seq, uint8_t req_type, long deadline, st_resp *r)
{
    uint8_t buf[1024];
    for (;;) {
        if (l->stop && *l->stop) {
            kl_fail(KL_EINTERNAL, "station stopping");
            return -1;
        }
        long left = deadline - st_now_ms();
        if (left <= 0) {
            return 0;
        }
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, left > 200 ? 200 : (int)left);
        if (pr < 0) {
            if (errno == EINTR) {
                continue;
            }
            kl_fail(KL_EIO, "%s: poll: %s", l->path, strerror(errno));
            return -1;
        }
        if (pr == 0) {
            continue;
        }
        if (pfd.revents & (POLLERR | POLLNVAL)) {
            kl_fail(KL_EIO, "%s: port error (device unplugged?)", l->path);
            return -1;
        }
        ssize_t n = read(l->fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n < 0) {
            kl_fail(KL_EIO, "%s: read: %s (device unplugged?)", l->path, strerror(errno));
            return -1;
        }
        if (n == 0) {
            if (pfd.revents & POLLHUP) {
                /* pty with no peer: treat as silence, but do not spin */
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        l->bytes_rx += (uint64_t)n;
        size_t off = 0;
        int damaged = 0;
        while (off < (size_t)n) {
            size_t used = 0;
            kl_proto_frame f;
            int fr = kl_proto_feed(&l->dec, buf + off, (size_t)n - off, &used, &f);
            off += used;
            if (fr == KL_PROTO_FRAME) {
                if (f.seq != seq || f.version != KL_PROTO_VERSION ||
                    (f.type != KL_MSG_RESP(req_type) && f.type != KL_MSG_ERROR) ||
                    f.payload_len > sizeof r->payload) {
                    continue; /* late answer to an earlier request, or an echo */
                }
                r->type = f.type;
                r->len = f.payload_len;
                memcpy(r->payload, f.payload, f.payload_len);
                /* Anything after it in buf is stale by definition (one request in flight). */
                return 1;
            }
            if (fr < 0) {
                l->bad_frames++;
                damaged = 1;
            }
        }
        if (damaged) {
            return 2;
        }
    }
}

kl_rc st_link_xact(st_link *l, uint8_t type, const uint8_t *payload, size_t len, st_resp *r,
                   long retries)
{
    kl_rc rc = KL_OK;
    size_t flen = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (retries < 0) {
        retries = l->retries;
    }
    ENSURE(l->fd >= 0, KL_EIO, "%s: port not open", l->path);
    if (l->poll_pending && l->poll_type == type) {
        /* Idle poll again: resend the same frame (same seq), so a late answer to an earlier
         * poll is an answer to this one, and a device answers it from its cache. */
        flen = l->tx_len;
    } else {
        l->seq++;
        ENSURE(kl_proto_encode(l->tx, sizeof l->tx, &flen, type, l->seq, 0, payload, len) ==
                   KL_PROTO_OK,
               KL_EINTERNAL, "%s request of %zu bytes cannot be encoded", kl_proto_msg_name(type),
               len);
        l->tx_len = flen;
    }
    l->poll_pending = 0;
    for (long attempt = 0; attempt <= retries; attempt++) {
        if (attempt > 0) {
            l->retransmits++;
        }
        TRY(st_write_all(l, l->tx, flen));
        long deadline = st_now_ms() + l->timeout_ms;
        for (;;) {
            int w = st_wait(l, l->seq, type, deadline, r);
            if (w < 0) {
                rc = KL_EIO;
                if (l->stop && *l->stop) {
                    rc = KL_EINTERNAL;
                }
                goto out;
            }
            if (w == 1) {
                goto out;
            }
            if (w == 2) {
                /* Damaged frame: resend at once, but give a late good answer a moment. */
                long soon = st_now_ms() + 20;
                if (soon < deadline) {
                    int w2 = st_wait(l, l->seq, type, soon, r);
                    if (w2 == 1) {
                        goto out;
                    }
                    if (w2 < 0) {
                        rc = KL_EIO;
                        goto out;
                    }
                }
            }
            break; /* timeout or damage: next attempt */
        }
    }
    if (l->poll) {
        l->poll_pending = 1;
        l->poll_type = type;
    }
    rc = kl_fail(KL_ETIMEOUT, "no answer to %s after %ld attempts (timeout %ld ms)",
                 kl_proto_msg_name(type), retries + 1, l->timeout_ms);
out:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    l->link_us += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000);
    return rc;
}
