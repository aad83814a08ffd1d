/* keyline: ceremony transcripts: encode, strict parse, offline verification (ceremony.h;
 * the format in docs/internals/ceremony.md). */
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceremony.h"
#include "ceremony_internal.h"
#include "kl_b64.h"

#define CEREMONY_TR_MAGIC "keyline-ceremony-transcript v1"
#define CEREMONY_LINE_MAX (CEREMONY_CERT_MAX * 4 / 3 + 64)

static kl_rc tr_b64_line(kl_buf *out, const char *name, const uint8_t *d, size_t n)
{
    kl_rc rc = KL_OK;
    kl_buf b;
    kl_buf_init(&b, CEREMONY_LINE_MAX, 0);
    ENSURE(d && n > 0, KL_EINPUT, "transcript: empty %s", name);
    TRY(kl_b64_encode(d, n, 0, 0, &b));
    TRY(kl_buf_printf(out, "%s: ", name));
    TRY(kl_buf_put(out, b.data, b.len));
    TRY(kl_buf_put_u8(out, '\n'));
out:
    kl_buf_free(&b);
    return rc;
}

static kl_rc tr_approvals_encode(const ceremony_transcript *t, kl_buf *out)
{
    kl_rc rc = KL_OK;
    char when[32];
    for (size_t i = 0; i < t->nap; i++) {
        const ceremony_approval *a = &t->ap[i];
        ENSURE(ceremony_name_check(a->name) == KL_OK &&
                   (i == 0 || strcmp(t->ap[i - 1].name, a->name) < 0),
               KL_EINPUT, "transcript: approvals not in name order or a bad name");
        ceremony_time_fmt(a->at, when);
        TRY(kl_buf_printf(out, "approval: %s\napproved: %s\n", a->name, when));
        TRY(tr_b64_line(out, "officer-cert", a->cert, a->cert_len));
        TRY(tr_b64_line(out, "signature", a->sig, a->sig_len));
    }
out:
    return rc;
}

kl_rc ceremony_transcript_body(const ceremony_transcript *t, kl_buf *out)
{
    kl_rc rc = KL_OK;
    char when[32];
    ENSURE(t->id > 0 && t->req && t->req_len > 0 && t->req[t->req_len - 1] == '\n', KL_EINPUT,
           "transcript: no id or request");
    ENSURE(t->nap <= CEREMONY_APPROVALS_MAX && t->quorum >= 0, KL_EINPUT, "transcript: bad counts");
    ENSURE(t->runner && ceremony_value_ok(t->runner, strlen(t->runner)), KL_EINPUT,
           "transcript: bad runner");
    TRY(kl_buf_printf(out, "%s\nid: %lld\nrequest: %zu\n", CEREMONY_TR_MAGIC, (long long)t->id,
                      t->req_len));
    TRY(kl_buf_put(out, t->req, t->req_len));
    TRY(tr_approvals_encode(t, out));
    ceremony_time_fmt(t->ran, when);
    TRY(kl_buf_printf(out, "quorum: %ld\nran: %s\nrunner: %s\n", t->quorum, when, t->runner));
    for (size_t i = 0; i < t->result.n; i++) {
        const ceremony_kv *kv = &t->result.kv[i];
        ENSURE(ceremony_key_ok(kv->key) && ceremony_value_ok(kv->value, strlen(kv->value)) &&
                   (i == 0 || strcmp(t->result.kv[i - 1].key, kv->key) < 0),
               KL_EINPUT, "transcript: bad result field");
        TRY(kl_buf_printf(out, "result %s: %s\n", kv->key, kv->value));
    }
    TRY(tr_b64_line(out, "audit-key", t->audit_spki, t->audit_spki_len));
out:
    return rc;
}

kl_rc ceremony_transcript_encode(const ceremony_transcript *t, kl_buf *out)
{
    kl_rc rc = KL_OK;
    TRY(ceremony_transcript_body(t, out));
    TRY(tr_b64_line(out, "audit-signature", t->audit_sig, t->audit_sig_len));
out:
    return rc;
}

void ceremony_transcript_free(ceremony_transcript *t)
{
    if (!t) {
        return;
    }
    free(t->req);
    for (size_t i = 0; i < t->nap; i++) {
        free(t->ap[i].cert);
        free(t->ap[i].sig);
    }
    free(t->runner);
    ceremony_kvs_free(&t->result);
    free(t->audit_spki);
    free(t->audit_sig);
    memset(t, 0, sizeof *t);
}

/* ---- parsing ---- */

typedef struct {
    ceremony_view v;
    char *line; /* CEREMONY_LINE_MAX */
} tr_parser;

static int tr_next(tr_parser *ps)
{
    return ceremony_line(&ps->v, ps->line, CEREMONY_LINE_MAX);
}

/* The value of field `name` on the next line, else KL_EINPUT. */
static kl_rc tr_expect(tr_parser *ps, const char *name, const char **val)
{
    if (!tr_next(ps) || !(*val = ceremony_field(ps->line, name))) {
        return kl_fail(KL_EINPUT, "transcript line %d: expected '%s:'", ps->v.lineno + 1, name);
    }
    return KL_OK;
}

static kl_rc tr_number(const char *s, long long max, long long *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9') {
        return kl_fail(KL_EINPUT, "transcript: not a number");
    }
    long long v = strtoll(s, &end, 10);
    if (*end || v < 0 || v > max) {
        return kl_fail(KL_EINPUT, "transcript: number out of range");
    }
    *out = v;
    return KL_OK;
}

static kl_rc tr_b64_field(tr_parser *ps, const char *name, size_t max, uint8_t **d, size_t *n)
{
    kl_rc rc = KL_OK;
    const char *val;
    kl_buf b;
    kl_buf_init(&b, max, 0);
    TRY(tr_expect(ps, name, &val));
    rc = kl_b64_decode(val, strlen(val), &b);
    ENSURE(rc == KL_OK && b.len > 0, KL_EINPUT, "transcript line %d: bad base64 in '%s'",
           ps->v.lineno, name);
    *d = kl_buf_steal(&b, n);
    ENSURE(*d, KL_EINTERNAL, "out of memory");
out:
    kl_buf_free(&b);
    return rc;
}

static kl_rc tr_parse_request(tr_parser *ps, ceremony_transcript *t)
{
    kl_rc rc = KL_OK;
    const char *val;
    long long n = 0;
    ceremony_req r;
    memset(&r, 0, sizeof r);
    TRY(tr_expect(ps, "request", &val));
    TRY(tr_number(val, CEREMONY_REQ_MAX, &n));
    ENSURE(n > 0 && (size_t)n <= ps->v.len - ps->v.pos, KL_EINPUT,
           "transcript: request runs past the end");
    t->req = malloc((size_t)n);
    ENSURE(t->req, KL_EINTERNAL, "out of memory");
    memcpy(t->req, ps->v.p + ps->v.pos, (size_t)n);
    t->req_len = (size_t)n;
    rc = ceremony_req_parse(t->req, t->req_len, &r);
    ENSURE(rc == KL_OK, KL_EINPUT, "transcript: %s", kl_errmsg());
    for (size_t i = 0; i < t->req_len; i++) {
        ps->v.lineno += t->req[i] == '\n';
    }
    ps->v.pos += t->req_len;
out:
    ceremony_req_free(&r);
    return rc;
}

static kl_rc tr_parse_approval(tr_parser *ps, ceremony_transcript *t, const char *name)
{
    kl_rc rc = KL_OK;
    const char *val;
    ENSURE(t->nap < CEREMONY_APPROVALS_MAX, KL_EINPUT, "transcript: too many approvals");
    ceremony_approval *a = &t->ap[t->nap++];
    ENSURE(strlen(name) <= CEREMONY_NAME_MAX, KL_EINPUT, "transcript: officer name too long");
    snprintf(a->name, sizeof a->name, "%s", name);
    TRY(tr_expect(ps, "approved", &val));
    ENSURE(ceremony_time_parse(val, &a->at), KL_EINPUT, "transcript line %d: bad time",
           ps->v.lineno);
    TRY(tr_b64_field(ps, "officer-cert", CEREMONY_CERT_MAX, &a->cert, &a->cert_len));
    TRY(tr_b64_field(ps, "signature", CEREMONY_SIG_MAX, &a->sig, &a->sig_len));
out:
    return rc;
}

static kl_rc tr_parse_tail(tr_parser *ps, ceremony_transcript *t)
{
    kl_rc rc = KL_OK;
    const char *val = ceremony_field(ps->line, "quorum");
    long long q = 0;
    ENSURE(val, KL_EINPUT, "transcript line %d: expected 'quorum:'", ps->v.lineno);
    TRY(tr_number(val, CEREMONY_APPROVALS_MAX, &q));
    t->quorum = (long)q;
    TRY(tr_expect(ps, "ran", &val));
    ENSURE(ceremony_time_parse(val, &t->ran), KL_EINPUT, "transcript: bad 'ran' time");
    TRY(tr_expect(ps, "runner", &val));
    t->runner = strdup(val);
    ENSURE(t->runner, KL_EINTERNAL, "out of memory");
    size_t mark = ps->v.pos;
    int mark_line = ps->v.lineno;
    while (tr_next(ps) && strncmp(ps->line, "result ", 7) == 0) {
        char *colon = strstr(ps->line, ": ");
        ENSURE(colon, KL_EINPUT, "transcript line %d: bad result", ps->v.lineno);
        *colon = 0;
        ENSURE(!ceremony_kvs_get(&t->result, ps->line + 7), KL_EINPUT,
               "transcript line %d: result field twice", ps->v.lineno);
        TRY(ceremony_kvs_set(&t->result, ps->line + 7, colon + 2));
        mark = ps->v.pos;
        mark_line = ps->v.lineno;
    }
    ps->v.pos = mark; /* the audit-key line again */
    ps->v.lineno = mark_line;
    TRY(tr_b64_field(ps, "audit-key", 4096, &t->audit_spki, &t->audit_spki_len));
    TRY(tr_b64_field(ps, "audit-signature", CEREMONY_SIG_MAX, &t->audit_sig, &t->audit_sig_len));
    ENSURE(ps->v.pos == ps->v.len, KL_EINPUT, "transcript: bytes after the audit signature");
out:
    return rc;
}

static kl_rc tr_parse(tr_parser *ps, ceremony_transcript *t)
{
    kl_rc rc = KL_OK;
    const char *val;
    long long id = 0;
    ENSURE(tr_next(ps) && strcmp(ps->line, CEREMONY_TR_MAGIC) == 0, KL_EINPUT,
           "not a keyline ceremony transcript (line 1)");
    TRY(tr_expect(ps, "id", &val));
    TRY(tr_number(val, INT64_MAX, &id));
    t->id = id;
    TRY(tr_parse_request(ps, t));
    ENSURE(tr_next(ps), KL_EINPUT, "transcript: ends after the request");
    while ((val = ceremony_field(ps->line, "approval"))) {
        TRY(tr_parse_approval(ps, t, val));
        ENSURE(tr_next(ps), KL_EINPUT, "transcript: ends after an approval");
    }
    TRY(tr_parse_tail(ps, t));
out:
    return rc;
}

kl_rc ceremony_transcript_parse(const uint8_t *p, size_t n, ceremony_transcript *out)
{
    kl_rc rc = KL_OK;
    ceremony_transcript t;
    tr_parser ps = {{p, n, 0, 0}, malloc(CEREMONY_LINE_MAX)};
    kl_buf b;
    memset(&t, 0, sizeof t);
    kl_buf_init(&b, CEREMONY_TRANSCRIPT_MAX, 0);
    ENSURE(ps.line, KL_EINTERNAL, "out of memory");
    ENSURE(n <= CEREMONY_TRANSCRIPT_MAX, KL_EINPUT, "transcript longer than %d bytes",
           CEREMONY_TRANSCRIPT_MAX);
    TRY(tr_parse(&ps, &t));
    rc = ceremony_transcript_encode(&t, &b);
    ENSURE(rc == KL_OK && b.len == n && memcmp(b.data, p, n) == 0, KL_EINPUT,
           "transcript is not in canonical form (an edited byte?)");
    *out = t;
    memset(&t, 0, sizeof t);
out:
    free(ps.line);
    kl_buf_free(&b);
    ceremony_transcript_free(&t);
    return rc;
}

/* ---- verification ---- */

kl_rc ceremony_approval_check(const ceremony_approval *a, const uint8_t *req, size_t req_len,
                              char key_sha[65])
{
    kl_rc rc = KL_OK;
    const unsigned char *q = a->cert;
    X509 *x = d2i_X509(NULL, &q, (long)a->cert_len);
    EVP_PKEY *pub = NULL;
    ENSURE(x && q == a->cert + a->cert_len, KL_EPOLICY,
           "approval by '%s': the officer certificate does not parse", a->name);
    pub = X509_get_pubkey(x);
    ENSURE(pub, KL_EPOLICY, "approval by '%s': no public key in the certificate", a->name);
    rc = ceremony_sig_check(pub, req, req_len, a->sig, a->sig_len);
    ENSURE(rc == KL_OK, KL_EPOLICY,
           "approval by '%s': the signature is not over this request with this officer's key",
           a->name);
    if (key_sha) {
        TRY(ceremony_key_sha256(pub, key_sha));
    }
out:
    EVP_PKEY_free(pub);
    X509_free(x);
    return rc;
}

/* Every approval checks, from distinct keys, and `pins->officers` holds each certificate; the
 * transcript's quorum is no lower than `pins->quorum` and the approvals so counted reach it (so
 * they reach the pinned one too: one counting rule for both). */
static kl_rc tr_check_approvals(const ceremony_transcript *t, const ceremony_pins *pins)
{
    kl_rc rc = KL_OK;
    char keys[CEREMONY_APPROVALS_MAX][65];
    for (size_t i = 0; i < t->nap; i++) {
        TRY(ceremony_approval_check(&t->ap[i], t->req, t->req_len, keys[i]));
        for (size_t j = 0; j < i; j++) {
            ENSURE(strcmp(keys[i], keys[j]) != 0, KL_EPOLICY,
                   "approvals by '%s' and '%s' are made with the same key: one officer",
                   t->ap[j].name, t->ap[i].name);
        }
        int pinned = !pins || !pins->officers;
        for (int k = 0; !pinned && k < sk_X509_num(pins->officers); k++) {
            unsigned char *der = NULL;
            int len = i2d_X509(sk_X509_value(pins->officers, k), &der);
            pinned = len > 0 && (size_t)len == t->ap[i].cert_len &&
                     memcmp(der, t->ap[i].cert, (size_t)len) == 0;
            OPENSSL_free(der);
        }
        ENSURE(pinned, KL_EPOLICY, "approval by '%s': not one of the --officers certificates",
               t->ap[i].name);
    }
    ENSURE(!pins || t->quorum >= pins->quorum, KL_EPOLICY, "quorum %ld is below the required %ld",
           t->quorum, pins->quorum);
    ENSURE(t->quorum >= 1 && t->nap >= (size_t)t->quorum, KL_EPOLICY,
           "%zu approval%s, the quorum was %ld", t->nap, t->nap == 1 ? "" : "s", t->quorum);
out:
    return rc;
}

static kl_rc tr_check_audit(const ceremony_transcript *t, const ceremony_pins *pins)
{
    kl_rc rc = KL_OK;
    const unsigned char *q = t->audit_spki;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &q, (long)t->audit_spki_len);
    char sha[65];
    kl_buf body;
    kl_buf_init(&body, CEREMONY_TRANSCRIPT_MAX, 0);
    ENSURE(pub && q == t->audit_spki + t->audit_spki_len, KL_EPOLICY,
           "the audit key does not parse");
    TRY(ceremony_key_sha256(pub, sha));
    ENSURE(!pins || !pins->audit_key_sha256 || strcasecmp(sha, pins->audit_key_sha256) == 0,
           KL_EPOLICY, "signed by audit key %s, not the pinned %s", sha, pins->audit_key_sha256);
    TRY(ceremony_transcript_body(t, &body));
    rc = ceremony_sig_check(pub, body.data, body.len, t->audit_sig, t->audit_sig_len);
    ENSURE(rc == KL_OK, KL_EPOLICY, "the audit signature does not cover this transcript");
out:
    kl_buf_free(&body);
    EVP_PKEY_free(pub);
    return rc;
}

kl_rc ceremony_transcript_verify(const uint8_t *p, size_t n, const ceremony_pins *pins,
                                 ceremony_transcript *out)
{
    kl_rc rc = KL_OK;
    ceremony_transcript t;
    memset(&t, 0, sizeof t);
    TRY(ceremony_transcript_parse(p, n, &t));
    ENSURE(!pins || !pins->id || t.id == pins->id, KL_EPOLICY,
           "transcript is of ceremony %lld, not %lld", (long long)t.id, (long long)pins->id);
    TRY(tr_check_approvals(&t, pins));
    TRY(tr_check_audit(&t, pins));
    if (out) {
        *out = t;
        memset(&t, 0, sizeof t);
    }
out:
    ceremony_transcript_free(&t);
    return rc;
}
