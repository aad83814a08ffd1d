/* keyline: quorum ceremonies: canonical requests, approvals, the quorum rule (ceremony.h;
 * byte formats in docs/internals/ceremony.md). */
#include "ceremony.h"

#include <ctype.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_internal.h"
#include "ceremony_internal.h"
#include "hsm.h"
#include "kl_secret.h"
#include "kl_utf8.h"

#define CEREMONY_REQ_MAGIC "keyline-ceremony-request v1"

/* ---- fields ---- */

int ceremony_key_ok(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n < 1 || n > 32) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Characters a terminal does not show as themselves: controls (C0, DEL, C1), and the invisible
 * and bidirectional format characters (U+061C, U+200B-U+200F, U+2028-U+202E, U+2060-U+206F,
 * U+FEFF, U+FFF9-U+FFFB) that reorder or hide what an officer reads before signing. */
static int shown_as_is(long cp)
{
    return !(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x61c ||
             (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
             (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb));
}

int ceremony_value_ok(const char *v, size_t n)
{
    if (!v || n < 1 || n > CEREMONY_VALUE_MAX || v[0] == ' ' || v[n - 1] == ' ') {
        return 0;
    }
    for (size_t i = 0; i < n;) {
        long cp = kl_utf8_next((const unsigned char *)v, n, &i);
        if (cp < 0 || !shown_as_is(cp)) {
            return 0;
        }
    }
    return 1;
}

kl_rc ceremony_name_check(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > CEREMONY_NAME_MAX) {
        return kl_fail(KL_EUSAGE, "an officer name is 1 to %d characters", CEREMONY_NAME_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i])) {
            return kl_fail(KL_EUSAGE, "officer name '%s': only A-Z a-z 0-9 . _ - are allowed",
                           name);
        }
    }
    return KL_OK;
}

kl_rc ceremony_kvs_set(ceremony_kvs *s, const char *key, const char *value)
{
    if (!ceremony_key_ok(key) || !ceremony_value_ok(value, value ? strlen(value) : 0)) {
        return kl_fail(KL_EINPUT,
                       "field '%s': empty, too long, not UTF-8, or a control, invisible or "
                       "bidirectional character or a leading/trailing space in its value",
                       key ? key : "");
    }
    size_t i = 0;
    while (i < s->n && strcmp(s->kv[i].key, key) < 0) {
        i++;
    }
    char *v = strdup(value);
    if (!v) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    if (i < s->n && strcmp(s->kv[i].key, key) == 0) {
        free(s->kv[i].value);
        s->kv[i].value = v;
        return KL_OK;
    }
    char *k = strdup(key);
    if (!k || s->n >= CEREMONY_KV_MAX) {
        free(k);
        free(v);
        return kl_fail(KL_EINPUT, "more than %d fields", CEREMONY_KV_MAX);
    }
    memmove(&s->kv[i + 1], &s->kv[i], (s->n - i) * sizeof s->kv[0]);
    s->kv[i].key = k;
    s->kv[i].value = v;
    s->n++;
    return KL_OK;
}

const char *ceremony_kvs_get(const ceremony_kvs *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->kv[i].key, key) == 0) {
            return s->kv[i].value;
        }
    }
    return NULL;
}

void ceremony_kvs_free(ceremony_kvs *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->kv[i].key);
        free(s->kv[i].value);
    }
    memset(s, 0, sizeof *s);
}

/* ---- time: 2026-12-05T01:23:45Z, nothing else ---- */

void ceremony_time_fmt(time_t t, char buf[32])
{
    ca_time_iso(t, buf);
}

int ceremony_time_parse(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end || strlen(s) != 20) {
        return 0;
    }
    *out = timegm(&tm);
    char back[32];
    ceremony_time_fmt(*out, back);
    return strcmp(back, s) == 0; /* 2026-02-30 does not come back the same */
}

/* ---- requests ---- */

const ceremony_op *ceremony_op_find(const char *op)
{
    for (const ceremony_op *o = ceremony_ops; op && o->op; o++) {
        if (strcmp(o->op, op) == 0) {
            return o;
        }
    }
    return NULL;
}

static const ceremony_param *ceremony_param_find(const ceremony_op *o, const char *name)
{
    for (const ceremony_param *p = o->params; p->name; p++) {
        if (strcmp(p->name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

/* The params of `r` against its op: no unknown key, every required one present. */
static kl_rc ceremony_params_check(const ceremony_op *o, const ceremony_kvs *kv)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (!ceremony_param_find(o, kv->kv[i].key)) {
            return kl_fail(KL_EUSAGE, "%s takes no --%s", o->op, kv->kv[i].key);
        }
    }
    for (const ceremony_param *p = o->params; p->name; p++) {
        if (p->required && !ceremony_kvs_get(kv, p->name)) {
            return kl_fail(KL_EUSAGE, "%s needs --%s", o->op, p->name);
        }
    }
    return KL_OK;
}

/* --name value / --name=value pairs into r->params. */
static kl_rc ceremony_args_parse(const ceremony_op *o, int argc, char **argv, ceremony_kvs *kv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            return kl_fail(KL_EUSAGE, "%s: unexpected argument '%s'", o->op, a);
        }
        char name[40];
        const char *eq = strchr(a + 2, '='), *val;
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof name) {
            return kl_fail(KL_EUSAGE, "%s takes no option '%s'", o->op, a);
        }
        memcpy(name, a + 2, nlen);
        name[nlen] = 0;
        if (!ceremony_param_find(o, name)) {
            return kl_fail(KL_EUSAGE, "%s takes no --%s", o->op, name);
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return kl_fail(KL_EUSAGE, "%s: --%s needs a value", o->op, name);
        }
        if (ceremony_kvs_get(kv, name)) {
            return kl_fail(KL_EUSAGE, "%s: --%s given twice", o->op, name);
        }
        if (ceremony_kvs_set(kv, name, val) != KL_OK) {
            return kl_fail(KL_EUSAGE, "%s: --%s: %s", o->op, name, kl_errmsg());
        }
    }
    return KL_OK;
}

kl_rc ceremony_req_new(const char *op, int argc, char **argv, const char *proposer,
                       ceremony_req *out)
{
    kl_rc rc = KL_OK;
    ceremony_req r;
    uint8_t nonce[16];
    memset(&r, 0, sizeof r);
    const ceremony_op *o = ceremony_op_find(op);
    ENSURE(o, KL_EUSAGE,
           "'%s' is not an operation that needs a ceremony (see keyline-ca "
           "ceremony --help)",
           op ? op : "");
    snprintf(r.op, sizeof r.op, "%s", o->op);
    TRY(ceremony_args_parse(o, argc, argv, &r.params));
    for (const ceremony_param *p = o->params; p->name; p++) {
        if (p->dflt && !ceremony_kvs_get(&r.params, p->name)) {
            TRY(ceremony_kvs_set(&r.params, p->name, p->dflt));
        }
    }
    TRY(ceremony_params_check(o, &r.params));
    if (o->prepare) {
        TRY(o->prepare(&r.params));
    }
    ENSURE_SSL(RAND_bytes(nonce, sizeof nonce) == 1, KL_EINTERNAL, "no random nonce");
    for (size_t i = 0; i < sizeof nonce; i++) {
        snprintf(r.nonce + 2 * i, 3, "%02x", nonce[i]);
    }
    r.proposed = time(NULL);
    r.proposer = strdup(proposer ? proposer : "");
    ENSURE(r.proposer, KL_EINTERNAL, "out of memory");
    ENSURE(ceremony_value_ok(r.proposer, strlen(r.proposer)), KL_EUSAGE, "bad proposer name");
    *out = r;
    memset(&r, 0, sizeof r);
out:
    ceremony_req_free(&r);
    return rc;
}

kl_rc ceremony_req_encode(const ceremony_req *r, kl_buf *out)
{
    kl_rc rc = KL_OK;
    char when[32];
    ceremony_time_fmt(r->proposed, when);
    ENSURE(ceremony_op_find(r->op), KL_EINPUT, "unknown operation");
    ENSURE(strlen(r->nonce) == 32 && strspn(r->nonce, "0123456789abcdef") == 32, KL_EINPUT,
           "bad nonce");
    ENSURE(r->proposer && ceremony_value_ok(r->proposer, strlen(r->proposer)), KL_EINPUT,
           "bad proposer");
    TRY(kl_buf_printf(out, "%s\nop: %s\nnonce: %s\nproposed: %s\nproposer: %s\n",
                      CEREMONY_REQ_MAGIC, r->op, r->nonce, when, r->proposer));
    for (size_t i = 0; i < r->params.n; i++) {
        const ceremony_kv *kv = &r->params.kv[i];
        ENSURE(ceremony_key_ok(kv->key) && ceremony_value_ok(kv->value, strlen(kv->value)) &&
                   (i == 0 || strcmp(r->params.kv[i - 1].key, kv->key) < 0),
               KL_EINPUT, "bad parameter");
        TRY(kl_buf_printf(out, "param %s: %s\n", kv->key, kv->value));
    }
out:
    return rc;
}

/* Next line of `v` (without its '\n') as a NUL-terminated copy in `line`. 0 at the end or when
 * the line is too long, has no '\n' or holds a NUL. */
int ceremony_line(ceremony_view *v, char *line, size_t cap)
{
    const uint8_t *nl = v->pos < v->len ? memchr(v->p + v->pos, '\n', v->len - v->pos) : NULL;
    if (!nl) {
        return 0;
    }
    size_t n = (size_t)(nl - (v->p + v->pos));
    if (n >= cap || memchr(v->p + v->pos, 0, n)) {
        return 0;
    }
    memcpy(line, v->p + v->pos, n);
    line[n] = 0;
    v->pos += n + 1;
    v->lineno++;
    return 1;
}

/* "name: value" -> value, else NULL. */
const char *ceremony_field(const char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0 || line[n] != ':' || line[n + 1] != ' ') {
        return NULL;
    }
    return line + n + 2;
}

static kl_rc ceremony_req_parse_lines(ceremony_view *v, ceremony_req *r)
{
    kl_rc rc = KL_OK;
    char line[CEREMONY_VALUE_MAX + 64];
    const char *val;
    ENSURE(ceremony_line(v, line, sizeof line) && strcmp(line, CEREMONY_REQ_MAGIC) == 0, KL_EINPUT,
           "not a keyline ceremony request (line 1)");
    ENSURE(ceremony_line(v, line, sizeof line) && (val = ceremony_field(line, "op")) &&
               strlen(val) < sizeof r->op,
           KL_EINPUT, "request line 2: no op");
    snprintf(r->op, sizeof r->op, "%s", val);
    ENSURE(ceremony_line(v, line, sizeof line) && (val = ceremony_field(line, "nonce")) &&
               strlen(val) < sizeof r->nonce,
           KL_EINPUT, "request line 3: no nonce");
    snprintf(r->nonce, sizeof r->nonce, "%s", val);
    ENSURE(ceremony_line(v, line, sizeof line) && (val = ceremony_field(line, "proposed")) &&
               ceremony_time_parse(val, &r->proposed),
           KL_EINPUT, "request line 4: no proposed time");
    ENSURE(ceremony_line(v, line, sizeof line) && (val = ceremony_field(line, "proposer")),
           KL_EINPUT, "request line 5: no proposer");
    r->proposer = strdup(val);
    ENSURE(r->proposer, KL_EINTERNAL, "out of memory");
    while (ceremony_line(v, line, sizeof line)) {
        char *colon = strstr(line, ": ");
        ENSURE(strncmp(line, "param ", 6) == 0 && colon, KL_EINPUT,
               "request line %d: not a parameter", v->lineno);
        *colon = 0;
        ENSURE(!ceremony_kvs_get(&r->params, line + 6), KL_EINPUT,
               "request line %d: parameter given twice", v->lineno);
        TRY(ceremony_kvs_set(&r->params, line + 6, colon + 2));
    }
    ENSURE(v->pos == v->len, KL_EINPUT, "request line %d: malformed", v->lineno + 1);
out:
    return rc;
}

kl_rc ceremony_req_parse(const uint8_t *p, size_t n, ceremony_req *out)
{
    kl_rc rc = KL_OK;
    ceremony_req r;
    kl_buf b;
    ceremony_view v = {p, n, 0, 0};
    memset(&r, 0, sizeof r);
    kl_buf_init(&b, CEREMONY_REQ_MAX, 0);
    ENSURE(n <= CEREMONY_REQ_MAX, KL_EINPUT, "request longer than %d bytes", CEREMONY_REQ_MAX);
    TRY(ceremony_req_parse_lines(&v, &r));
    const ceremony_op *o = ceremony_op_find(r.op);
    ENSURE(o, KL_EINPUT, "request: unknown operation '%s'", r.op);
    rc = ceremony_params_check(o, &r.params);
    ENSURE(rc == KL_OK, KL_EINPUT, "request: %s", kl_errmsg());
    rc = ceremony_req_encode(&r, &b);
    ENSURE(rc == KL_OK && b.len == n && memcmp(b.data, p, n) == 0, KL_EINPUT,
           "request is not in canonical form");
    *out = r;
    memset(&r, 0, sizeof r);
out:
    kl_buf_free(&b);
    ceremony_req_free(&r);
    return rc;
}

const char *ceremony_req_get(const ceremony_req *r, const char *key)
{
    return ceremony_kvs_get(&r->params, key);
}

void ceremony_req_free(ceremony_req *r)
{
    if (r) {
        free(r->proposer);
        ceremony_kvs_free(&r->params);
        memset(r, 0, sizeof *r);
    }
}

/* ---- signatures ---- */

kl_rc ceremony_sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t **sig, size_t *sig_len)
{
    kl_rc rc = KL_OK;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t len = 0;
    *sig = NULL;
    ENSURE(md, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(EVP_DigestSignInit(md, NULL, ca_sign_md(key), NULL, key) == 1, KL_EHSM,
               "cannot sign with the officer key");
    ENSURE_SSL(EVP_DigestSign(md, NULL, &len, msg, n) == 1, KL_EHSM, "cannot sign");
    ENSURE(len > 0 && len <= CEREMONY_SIG_MAX, KL_EHSM, "signature of %zu bytes", len);
    *sig = malloc(len);
    ENSURE(*sig, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(EVP_DigestSign(md, *sig, &len, msg, n) == 1, KL_EHSM,
               "the token did not sign the request");
    *sig_len = len;
out:
    if (rc != KL_OK) {
        free(*sig);
        *sig = NULL;
    }
    EVP_MD_CTX_free(md);
    return rc;
}

kl_rc ceremony_sig_check(EVP_PKEY *pub, const uint8_t *msg, size_t n, const uint8_t *sig,
                         size_t sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestVerifyInit(md, NULL, ca_sign_md(pub), NULL, pub) == 1 &&
             EVP_DigestVerify(md, sig, sig_len, msg, n) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok ? KL_OK : kl_fail(KL_EPOLICY, "signature does not verify");
}

kl_rc ceremony_token_sign(const char *module, const char *uri, const char *pin_spec,
                          const uint8_t *msg, size_t n, uint8_t **sig, size_t *sig_len,
                          EVP_PKEY **pub)
{
    kl_rc rc = KL_OK;
    hsm_uri u;
    kl_secret pin;
    hsm_ctx *h = NULL;
    EVP_PKEY *key = NULL;
    memset(&u, 0, sizeof u);
    memset(&pin, 0, sizeof pin);
    TRY(hsm_uri_parse(uri, &u));
    ENSURE(u.object && *u.object, KL_EUSAGE,
           "officer token URI %s has no object= (the label of the officer's key)", uri);
    TRY(kl_secret_read(&pin, pin_spec ? pin_spec : "prompt", NULL, "officer token PIN"));
    rc = hsm_open(&h, u.module_path ? u.module_path : module, uri, pin.value);
    kl_secret_free(&pin);
    TRY(rc);
    TRY(hsm_key_load(h, u.object, &key));
    TRY(ceremony_sign(key, msg, n, sig, sig_len));
    if (pub) {
        TRY(hsm_key_public(h, u.object, pub));
    }
out:
    EVP_PKEY_free(key);
    hsm_close(h);
    hsm_uri_free(&u);
    return rc;
}

static void ceremony_hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

kl_rc ceremony_cert_sha256(X509 *x, char out[65])
{
    uint8_t md[32];
    unsigned n = 0;
    if (!X509_digest(x, EVP_sha256(), md, &n) || n != 32) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot hash the certificate");
    }
    ceremony_hex(md, 32, out);
    return KL_OK;
}

/* One EC key has several SubjectPublicKeyInfo encodings (its point compressed or not, its curve
 * by name or by explicit parameters); hashing them as given would make one officer's key two
 * "distinct" keys. A copy of `k` set to the form tokens and openssl write: uncompressed point,
 * named curve. NULL (and nothing to free) for any other key type. */
static kl_rc key_ec_canonical(EVP_PKEY *k, EVP_PKEY **out)
{
    *out = NULL;
    if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) {
        return KL_OK;
    }
    OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                                       "uncompressed", 0),
                      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING,
                                                       OSSL_PKEY_EC_ENCODING_GROUP, 0),
                      OSSL_PARAM_construct_end()};
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der); /* a public copy: a token's key (an engine's) does not dup */
    const unsigned char *q = der;
    *out = n > 0 ? d2i_PUBKEY(NULL, &q, n) : NULL;
    OPENSSL_free(der);
    if (!*out || EVP_PKEY_set_params(*out, p) != 1) {
        EVP_PKEY_free(*out);
        *out = NULL;
        return kl_fail_ssl(KL_EINPUT,
                           "cannot put the EC key in its named-curve, uncompressed form");
    }
    return KL_OK;
}

kl_rc ceremony_key_sha256(EVP_PKEY *k, char out[65])
{
    unsigned char *der = NULL;
    EVP_PKEY *c = NULL;
    kl_rc rc = key_ec_canonical(k, &c);
    if (rc != KL_OK) {
        return rc;
    }
    int n = i2d_PUBKEY(c ? c : k, &der);
    EVP_PKEY_free(c);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot encode the public key");
    }
    uint8_t md[32];
    SHA256(der, (size_t)n, md);
    OPENSSL_free(der);
    ceremony_hex(md, 32, out);
    return KL_OK;
}

/* ---- the quorum rule ---- */

kl_rc ceremony_quorum(const kl_conf *conf, long *out)
{
    kl_rc rc = kl_conf_get_long(conf, "ceremony", "quorum", 0, 0, CEREMONY_APPROVALS_MAX, out);
    return rc == KL_OK ? rc : kl_wrap(rc, "[ceremony] quorum");
}

kl_rc ceremony_guard(const kl_conf *conf, const char *group, const char *name)
{
    char op[64];
    long q = 0;
    snprintf(op, sizeof op, "%s%s%s", group ? group : "", group ? " " : "", name ? name : "");
    const ceremony_op *o = ceremony_op_find(op);
    if (!o || (o->flags & CEREMONY_OP_SELF_GUARDED)) {
        return KL_OK;
    }
    kl_rc rc = ceremony_quorum(conf, &q);
    if (rc != KL_OK || q == 0) {
        return rc;
    }
    return kl_fail(KL_EPOLICY,
                   "'%s' needs a ceremony ([ceremony] quorum = %ld): keyline-ca ceremony propose "
                   "%s ..., then %ld officer%s approve, then keyline-ca ceremony run",
                   op, q, op, q, q == 1 ? "" : "s");
}
