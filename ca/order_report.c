/* keyline: checking a production order's report offline (order.h: order_report_verify).
 * Strict: every line is "name: value\n" in the encoder's order, the whole report is re-encoded
 * from what was read and must be the same bytes, then both signatures and the count are
 * checked. Fuzzed by fuzz/fuzz_order.c. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ceremony.h"
#include "kl_b64.h"
#include "order.h"

typedef struct {
    const char *p;
    size_t n, pos;
} rp_view;

/* The value of the next line "name: value\n" (no control characters). */
static kl_rc rp_field(rp_view *v, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *line = v->p + v->pos;
    size_t left = v->n - v->pos;
    const char *end = memchr(line, '\n', left);
    if (!end || (size_t)(end - line) < nl + 2 || memcmp(line, name, nl) != 0 || line[nl] != ':' ||
        line[nl + 1] != ' ') {
        return kl_fail(KL_EINPUT, "report: expected the line '%s: ...'", name);
    }
    size_t vl = (size_t)(end - line) - nl - 2;
    if (vl == 0 || vl >= cap) {
        return kl_fail(KL_EINPUT, "report: '%s' is empty or too long", name);
    }
    for (size_t i = 0; i < vl; i++) {
        unsigned char ch = (unsigned char)line[nl + 2 + i];
        if (ch < 0x20 || ch > 0x7e) {
            return kl_fail(KL_EINPUT, "report: '%s' holds a control or non-ASCII byte", name);
        }
    }
    memcpy(out, line + nl + 2, vl);
    out[vl] = 0;
    v->pos += (size_t)(end - line) + 1;
    return KL_OK;
}

static kl_rc rp_str(rp_view *v, const char *name, char **out)
{
    char val[ORDER_VALUE_MAX + 1];
    kl_rc rc = rp_field(v, name, val, sizeof val);
    if (rc == KL_OK && !(*out = strdup(val))) {
        rc = kl_fail(KL_EINTERNAL, "out of memory");
    }
    return rc;
}

static kl_rc rp_time(rp_view *v, const char *name, time_t *out)
{
    char val[32];
    kl_rc rc = rp_field(v, name, val, sizeof val);
    if (rc == KL_OK && (strlen(val) != 20 || order_time_parse(val, out) != KL_OK)) {
        rc = kl_fail(KL_EINPUT, "report: '%s' is not a UTC time", name);
    }
    return rc;
}

static kl_rc rp_int(rp_view *v, const char *name, int64_t *out)
{
    char val[24], *end;
    kl_rc rc = rp_field(v, name, val, sizeof val);
    if (rc != KL_OK) {
        return rc;
    }
    long long x = strtoll(val, &end, 10);
    if (*end || x < 0 || (val[0] == '0' && val[1])) {
        return kl_fail(KL_EINPUT, "report: '%s' is not a number", name);
    }
    *out = x;
    return KL_OK;
}

static kl_rc rp_b64(rp_view *v, const char *name, size_t max, uint8_t **out, size_t *len)
{
    kl_rc rc = KL_OK;
    char *val = malloc(2 * max + 8);
    kl_buf b;
    kl_buf_init(&b, max, 0);
    ENSURE(val, KL_EINTERNAL, "out of memory");
    TRY(rp_field(v, name, val, 2 * max + 8));
    rc = kl_b64_decode(val, strlen(val), &b);
    ENSURE(rc == KL_OK && b.len > 0, KL_EINPUT, "report: '%s' is not base64", name);
    *out = malloc(b.len);
    ENSURE(*out, KL_EINTERNAL, "out of memory");
    memcpy(*out, b.data, b.len);
    *len = b.len;
out:
    free(val);
    kl_buf_free(&b);
    return rc;
}

static int rp_strcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Each serial once: sorted, so a report of hundreds of thousands of serials is checked in
 * n log n (a pairwise check took minutes, also on a forged report that is refused anyway). */
static kl_rc rp_once(char **seen, size_t n)
{
    if (n < 2) {
        return KL_OK; /* seen is NULL when the report lists no serial */
    }
    qsort(seen, n, sizeof *seen, rp_strcmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(seen[i - 1], seen[i]) == 0) {
            return kl_fail(KL_EPOLICY, "report: serial %s listed twice", seen[i]);
        }
    }
    return KL_OK;
}

/* "serial: HEX TIME[ DEVICE]" lines, copied into `lines`; each serial once. */
static kl_rc rp_serials(rp_view *v, kl_buf *lines, size_t *count)
{
    kl_rc rc = KL_OK;
    char val[ORDER_VALUE_MAX + 64], **seen = NULL;
    size_t n = 0, cap = 0;
    while (v->n - v->pos > 8 && memcmp(v->p + v->pos, "serial: ", 8) == 0) {
        size_t start = v->pos;
        TRY(rp_field(v, "serial", val, sizeof val));
        size_t hl = strspn(val, "0123456789ABCDEF");
        time_t t;
        char ts[21];
        ENSURE(hl >= 2 && hl <= 40 && hl % 2 == 0 && val[hl] == ' ' && strlen(val + hl + 1) >= 20,
               KL_EINPUT, "report: malformed serial line");
        memcpy(ts, val + hl + 1, 20);
        ts[20] = 0;
        ENSURE(order_time_parse(ts, &t) == KL_OK && (val[hl + 21] == 0 || val[hl + 21] == ' '),
               KL_EINPUT, "report: malformed time in a serial line");
        val[hl] = 0;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            char **ns = realloc(seen, cap * sizeof *ns);
            ENSURE(ns, KL_EINTERNAL, "out of memory");
            seen = ns;
        }
        ENSURE((seen[n] = strdup(val)) != NULL, KL_EINTERNAL, "out of memory");
        n++;
        TRY(kl_buf_put(lines, v->p + start, v->pos - start));
    }
    TRY(rp_once(seen, n));
    *count = n;
out:
    for (size_t i = 0; i < n; i++) {
        free(seen[i]);
    }
    free(seen);
    return rc;
}

/* Fields into r->order (and closed, closed_by), serial lines, audit key and signature. */
static kl_rc rp_parse(rp_view *v, order_report *r, kl_buf *serials, uint8_t **spki,
                      size_t *spki_len, size_t *body_end, uint8_t **sig, size_t *sig_len)
{
    kl_rc rc = KL_OK;
    store_order *o = &r->order;
    size_t ml = strlen("keyline-order-report v1\n");
    ENSURE(v->n >= ml && memcmp(v->p, "keyline-order-report v1\n", ml) == 0, KL_EINPUT,
           "not a keyline order report");
    v->pos = ml;
    TRY(rp_str(v, "id", &o->id));
    TRY(rp_str(v, "model", &o->model));
    TRY(rp_int(v, "count", &o->count));
    TRY(rp_str(v, "station", &o->station));
    TRY(rp_str(v, "profile", &o->profile));
    TRY(rp_time(v, "expires", &o->expires));
    TRY(rp_time(v, "created", &o->created));
    TRY(rp_str(v, "created-by", &o->created_by));
    TRY(rp_b64(v, "order-signature", 1024, &o->sig, &o->sig_len));
    TRY(rp_time(v, "closed", &o->closed));
    TRY(rp_str(v, "closed-by", &o->closed_by));
    /* a bounded copy the analyser can follow (after snprintf into r it lost o's strings) */
    size_t cl = strnlen(o->closed_by, sizeof r->closed_by - 1);
    memcpy(r->closed_by, o->closed_by, cl);
    r->closed_by[cl] = 0;
    r->closed = o->closed;
    TRY(rp_int(v, "issued", &o->issued));
    /* a report is written when the order is closed (order --json shows the state) */
    o->state = strdup(STORE_ORDER_CLOSED);
    ENSURE(o->state, KL_EINTERNAL, "out of memory");
    TRY(rp_serials(v, serials, &r->nserials));
    TRY(rp_b64(v, "audit-key", 4096, spki, spki_len));
    *body_end = v->pos;
    TRY(rp_b64(v, "audit-signature", 1024, sig, sig_len));
    ENSURE(v->pos == v->n, KL_EINPUT, "report: bytes after the audit signature");
out:
    return rc;
}

/* What the report states must hold: the same bytes again, both signatures, the count, the pin. */
static kl_rc rp_check(const rp_view *v, order_report *r, const kl_buf *serials, const uint8_t *spki,
                      size_t spki_len, size_t body_end, const uint8_t *sig, size_t sig_len,
                      const char *pin)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL;
    kl_buf again, text;
    kl_buf_init(&again, ORDER_REPORT_MAX, 0);
    kl_buf_init(&text, 4096, 0);
    TRY(order_report_reencode(&r->order, spki, spki_len, serials, sig, sig_len, &again));
    ENSURE(again.len == v->n && memcmp(again.data, v->p, v->n) == 0, KL_EINPUT,
           "report: not in the one encoding keyline writes");
    const unsigned char *q = spki;
    pub = d2i_PUBKEY(NULL, &q, (long)spki_len);
    ENSURE(pub && q == spki + spki_len, KL_EPOLICY, "report: the audit key does not parse");
    TRY(ceremony_key_sha256(pub, r->audit_key_sha256));
    ENSURE(!pin || strcasecmp(pin, r->audit_key_sha256) == 0, KL_EPOLICY,
           "report signed by audit key %s, not the pinned %s", r->audit_key_sha256, pin);
    ENSURE(ceremony_sig_check(pub, (const uint8_t *)v->p, body_end, sig, sig_len) == KL_OK,
           KL_EPOLICY, "report: the audit signature does not cover this report");
    TRY(order_text(&r->order, &text));
    ENSURE(ceremony_sig_check(pub, text.data, text.len, r->order.sig, r->order.sig_len) == KL_OK,
           KL_EPOLICY, "report: the order's signature does not verify (order %s altered)",
           r->order.id);
    ENSURE(r->order.count >= 1 && (int64_t)r->nserials == r->order.issued &&
               r->order.issued <= r->order.count,
           KL_EPOLICY, "report: %zu serials listed, %lld issued, order of %lld", r->nserials,
           (long long)r->order.issued, (long long)r->order.count);
out:
    EVP_PKEY_free(pub);
    kl_buf_free(&again);
    kl_buf_free(&text);
    return rc;
}

kl_rc order_report_verify(const uint8_t *p, size_t n, const char *pin_sha256, order_report *out)
{
    kl_rc rc = KL_OK;
    order_report r;
    uint8_t *spki = NULL, *sig = NULL;
    size_t spki_len = 0, sig_len = 0, body_end = 0;
    kl_buf serials;
    kl_buf_init(&serials, ORDER_REPORT_MAX, 0);
    memset(&r, 0, sizeof r);
    ENSURE(p && n <= ORDER_REPORT_MAX, KL_EINPUT, "report: too large");
    rp_view v = {(const char *)p, n, 0};
    TRY(rp_parse(&v, &r, &serials, &spki, &spki_len, &body_end, &sig, &sig_len));
    TRY(rp_check(&v, &r, &serials, spki, spki_len, body_end, sig, sig_len, pin_sha256));
    if (out) {
        *out = r;
        memset(&r, 0, sizeof r);
    }
out:
    order_report_free(&r);
    free(spki);
    free(sig);
    kl_buf_free(&serials);
    return rc;
}

void order_report_free(order_report *r)
{
    if (r) {
        store_order_free(&r->order);
    }
}
