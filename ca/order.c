/* keyline: production orders, their signatures and the signed report (order.h). */
#include "order.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_backend.h"
#include "ceremony.h"
#include "hsm.h"
#include "kl_b64.h"

#define ORDER_TEXT_MAGIC "keyline-order v1\n"
#define ORDER_REPORT_MAGIC "keyline-order-report v1\n"

/* ---- values ---------------------------------------------------------------------------------- */

static void order_time_fmt(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

kl_rc order_count_parse(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || strspn(s, "0123456789") != strlen(s)) {
        return kl_fail(KL_EUSAGE, "--count '%s' is not a number", s);
    }
    *out = (int64_t)v;
    return KL_OK;
}

kl_rc order_time_parse(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = s ? strptime(s, "%Y-%m-%d", &tm) : NULL;
    if (end && *end == 0) {
        tm.tm_hour = 23;
        tm.tm_min = 59;
        tm.tm_sec = 59;
    } else if (!end || !(end = strptime(end, "T%H:%M:%SZ", &tm)) || *end) {
        return kl_fail(KL_EUSAGE, "'%s' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)",
                       s ? s : "");
    }
    time_t t = timegm(&tm);
    char back[32];
    order_time_fmt(t, back);
    /* strptime takes 2026-02-30; its normalised form would differ */
    if (t <= 0 || strncmp(back, s, strlen(s) == 10 ? 10 : 20) != 0) {
        return kl_fail(KL_EUSAGE, "'%s' is not a real date", s);
    }
    *out = t;
    return KL_OK;
}

kl_rc order_name_check(const char *what, const char *v, int model)
{
    static const char name_chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n > 64) {
        return kl_fail(KL_EUSAGE, "%s must be 1..64 characters", what);
    }
    if (!model) {
        return strspn(v, name_chars) == n
                   ? KL_OK
                   : kl_fail(KL_EUSAGE, "%s '%s': only letters, digits, '.', '_' and '-'", what, v);
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) {
            return kl_fail(KL_EUSAGE, "%s: printable ASCII only", what);
        }
    }
    return v[0] != ' ' && v[n - 1] != ' ' ? KL_OK
                                          : kl_fail(KL_EUSAGE, "%s: no space at either end", what);
}

static kl_rc order_b64_line(kl_buf *out, const char *name, const uint8_t *p, size_t n)
{
    kl_rc rc = KL_OK;
    kl_buf b;
    kl_buf_init(&b, 2 * n + 16, 0);
    TRY(kl_b64_encode(p, n, 0, 0, &b));
    TRY(kl_buf_printf(out, "%s: %.*s\n", name, (int)b.len, (const char *)b.data));
out:
    kl_buf_free(&b);
    return rc;
}

kl_rc order_text(const store_order *o, kl_buf *out)
{
    char exp[32], created[32];
    order_time_fmt(o->expires, exp);
    order_time_fmt(o->created, created);
    return kl_buf_printf(out,
                         ORDER_TEXT_MAGIC "id: %s\nmodel: %s\ncount: %lld\nstation: %s\n"
                                          "profile: %s\nexpires: %s\ncreated: %s\ncreated-by: %s\n",
                         o->id, o->model, (long long)o->count, o->station, o->profile, exp, created,
                         o->created_by);
}

/* ---- the audit key -----------------------------------------------------------------------------
 */

/* The store's audit key: its public half (SPKI DER) and, when `priv` is set, the token key. */
static kl_rc order_audit_key(ca_ctx *ca, uint8_t **spki, size_t *spki_len, EVP_PKEY **priv)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    if (priv) {
        TRY(ca_audit_checkpoint(ca, NULL)); /* makes the key on first need */
    }
    TRY(store_audit_key_get(ca_store(ca), &label, spki, spki_len));
    if (priv) {
        TRY(hsm_key_load(ca_hsm(ca), label, priv));
    }
out:
    free(label);
    return rc;
}

static kl_rc order_spki_key(const uint8_t *spki, size_t n, EVP_PKEY **out, char sha[65])
{
    const unsigned char *q = spki;
    *out = d2i_PUBKEY(NULL, &q, (long)n);
    if (!*out || q != spki + n) {
        EVP_PKEY_free(*out);
        *out = NULL;
        return kl_fail_ssl(KL_EPOLICY, "the audit key does not parse");
    }
    return sha ? ceremony_key_sha256(*out, sha) : KL_OK;
}

/* ---- create, check ------------------------------------------------------------------------------
 */

static kl_rc order_id_new(time_t now, char out[40])
{
    uint8_t r[4];
    struct tm tm;
    if (RAND_bytes(r, sizeof r) != 1) {
        return kl_fail_ssl(KL_EINTERNAL, "no random order id");
    }
    gmtime_r(&now, &tm);
    snprintf(out, 40, "O-%04d%02d%02d-%02x%02x%02x%02x", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, r[0], r[1], r[2], r[3]);
    return KL_OK;
}

kl_rc ca_order_create(ca_ctx *ca, const order_req *r, const char *actor, store_order *out)
{
    kl_rc rc = KL_OK;
    char id[40], by[ORDER_VALUE_MAX + 1];
    EVP_PKEY *key = NULL;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    kl_buf text;
    kl_buf_init(&text, 4096, 0);
    time_t now = time(NULL);
    memset(out, 0, sizeof *out);
    TRY(order_name_check("--model", r->model, 1));
    TRY(order_name_check("--station", r->station, 0));
    TRY(order_name_check("--profile", r->profile, 0));
    ENSURE(!ca_conf(ca) || ca_conf_has_profile(ca_conf(ca), r->profile), KL_EUSAGE,
           "keyline-cad has no profile '%s' in the configuration ([profile NAME], or [station] "
           "issuer for 'station'): an order for it would control nothing",
           r->profile);
    ENSURE(r->count >= 1 && r->count <= ORDER_COUNT_MAX, KL_EUSAGE,
           "--count must be 1 .. %lld (the signed report lists every serial; make several "
           "orders for more)",
           ORDER_COUNT_MAX);
    ENSURE(r->expires > now, KL_EUSAGE, "--expires is in the past");
    ENSURE(actor && strlen(actor) <= ORDER_VALUE_MAX, KL_EUSAGE, "order: actor too long");
    store_order_actor_clean(actor, by, sizeof by); /* the report carries printable ASCII only */
    TRY(order_id_new(now, id));
    store_order o = {.id = id,
                     .model = (char *)r->model,
                     .station = (char *)r->station,
                     .profile = (char *)r->profile,
                     .count = r->count,
                     .expires = r->expires,
                     .created = now,
                     .created_by = by};
    TRY(order_text(&o, &text));
    TRY(order_audit_key(ca, &spki, &spki_len, &key));
    TRY(ceremony_sign(key, text.data, text.len, &o.sig, &o.sig_len));
    rc = store_order_create(ca_store(ca), &o, by);
    free(o.sig);
    TRY(rc);
    TRY(store_order_get(ca_store(ca), id, out));
out:
    EVP_PKEY_free(key);
    free(spki);
    kl_buf_free(&text);
    return rc;
}

kl_rc ca_order_check(ca_ctx *ca, const store_order *o)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    kl_buf text;
    kl_buf_init(&text, 4096, 0);
    TRY(order_audit_key(ca, &spki, &spki_len, NULL));
    TRY(order_spki_key(spki, spki_len, &pub, NULL));
    TRY(order_text(o, &text));
    rc = ceremony_sig_check(pub, text.data, text.len, o->sig, o->sig_len);
    if (rc != KL_OK) {
        rc = kl_fail(KL_EPOLICY,
                     "production order %s: its signature does not verify (changed "
                     "outside keyline?)",
                     o->id);
    }
out:
    EVP_PKEY_free(pub);
    free(spki);
    kl_buf_free(&text);
    return rc;
}

/* ---- the report ------------------------------------------------------------------------------ */

typedef struct {
    kl_buf *b;
    int full; /* a line did not fit: the report would leave serials out */
} order_lines;

static int order_cert_line(void *arg, const char *serial, const char *dev, time_t issued)
{
    order_lines *l = arg;
    char t[32];
    order_time_fmt(issued, t);
    if (kl_buf_printf(l->b, "serial: %s %s%s%s\n", serial, t, dev ? " " : "", dev ? dev : "") !=
        KL_OK) {
        l->full = 1;
        return -1;
    }
    return 0;
}

/* Everything the audit signature covers. serials: the "serial:" lines. */
static kl_rc order_report_body(const store_order *o, const uint8_t *spki, size_t spki_len,
                               const kl_buf *serials, kl_buf *out)
{
    kl_rc rc = KL_OK;
    char exp[32], created[32], closed[32];
    order_time_fmt(o->expires, exp);
    order_time_fmt(o->created, created);
    order_time_fmt(o->closed, closed);
    TRY(kl_buf_printf(out,
                      ORDER_REPORT_MAGIC "id: %s\nmodel: %s\ncount: %lld\nstation: %s\n"
                                         "profile: %s\nexpires: %s\ncreated: %s\ncreated-by: %s\n",
                      o->id, o->model, (long long)o->count, o->station, o->profile, exp, created,
                      o->created_by));
    TRY(order_b64_line(out, "order-signature", o->sig, o->sig_len));
    TRY(kl_buf_printf(out, "closed: %s\nclosed-by: %s\nissued: %lld\n", closed,
                      o->closed_by ? o->closed_by : "", (long long)o->issued));
    TRY(kl_buf_put(out, serials->data, serials->len));
    TRY(order_b64_line(out, "audit-key", spki, spki_len));
out:
    return rc;
}

kl_rc ca_order_close(ca_ctx *ca, const char *id, const char *actor, kl_buf *report)
{
    kl_rc rc = KL_OK;
    store_order o;
    EVP_PKEY *key = NULL;
    uint8_t *spki = NULL, *sig = NULL;
    size_t spki_len = 0, sig_len = 0;
    kl_buf serials;
    /* room for the rest of the report: two actors, two signatures, the audit key */
    kl_buf_init(&serials, ORDER_REPORT_MAX - 64 * 1024, 0);
    order_lines lines = {&serials, 0};
    memset(&o, 0, sizeof o);
    TRY(store_order_get(ca_store(ca), id, &o));
    TRY(ca_order_check(ca, &o));
    TRY(store_order_close(ca_store(ca), id, actor, NULL));
    store_order_free(&o);
    TRY(store_order_get(ca_store(ca), id, &o));
    TRY(store_order_certs(ca_store(ca), id, order_cert_line, &lines));
    /* never a signed report that leaves serials out */
    ENSURE(!lines.full, KL_EINPUT,
           "order %s: its %lld serials do not fit a report of %d MiB; nothing written", id,
           (long long)o.issued, ORDER_REPORT_MAX / (1024 * 1024));
    TRY(order_audit_key(ca, &spki, &spki_len, &key));
    TRY(order_report_body(&o, spki, spki_len, &serials, report));
    TRY(ceremony_sign(key, report->data, report->len, &sig, &sig_len));
    TRY(order_b64_line(report, "audit-signature", sig, sig_len));
out:
    store_order_free(&o);
    EVP_PKEY_free(key);
    free(spki);
    free(sig);
    kl_buf_free(&serials);
    return rc;
}

kl_rc order_report_reencode(const store_order *o, const uint8_t *spki, size_t spki_len,
                            const kl_buf *serials, const uint8_t *sig, size_t sig_len, kl_buf *out)
{
    kl_rc rc = KL_OK;
    TRY(order_report_body(o, spki, spki_len, serials, out));
    TRY(order_b64_line(out, "audit-signature", sig, sig_len));
out:
    return rc;
}
