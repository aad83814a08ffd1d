/* keyline: the audit log's content, shared by the store backends: the entry hash, the details
 * of the entries only the store writes, and the check of the store's state against the log
 * (store_audit.h; docs/internals/store.md "Audit hash chain" and "State against the log").
 *
 * Why the state check: the chain proves that the log was not edited, not that the rows it
 * describes were not. Whoever can write the store file could set a revoked certificate back to
 * valid, swap two certificates' DER or replace a CA's certificate, and the chain still
 * verified. So every entry that changes a certificate or CA record carries what the row must
 * hold (the DER's SHA-256, the status, the revocation), and verify compares. */
#include "store_audit.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* ---- entry hash ---------------------------------------------------------------------------
 * Version 1 (docs/internals/store.md "Hash chain"):
 *   SHA-256( "keyline-audit-v1"            16 bytes, domain separation
 *            || u64be(seq) || u64be((uint64_t)ts)
 *            || u32be(len) || bytes        for actor, action, detail, prev_hash (in that order) )
 * Length prefixes make the encoding unambiguous whatever the fields contain; the lengths are
 * the stored ones, never strlen() of what was read back (a NUL inside a field would otherwise
 * hide the bytes after it). */
#define AUDIT_FIELD_MAX (1u << 20)

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static void hex_put(const uint8_t *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

kl_rc store_audit_entry_hash_len(int64_t seq, time_t ts, const char *actor, size_t actor_len,
                                 const char *action, size_t action_len, const char *detail,
                                 size_t detail_len, const char *prev_hash, char out[65])
{
    static const char tag[] = "keyline-audit-v1";
    const char *fields[4] = {actor ? actor : "", action ? action : "", detail ? detail : "",
                             prev_hash ? prev_hash : ""};
    size_t lens[4] = {actor ? actor_len : 0, action ? action_len : 0, detail ? detail_len : 0,
                      prev_hash ? strlen(prev_hash) : 0};
    uint8_t hdr[16];
    uint8_t md[32];
    unsigned int mdlen = 0;
    kl_rc rc = KL_OK;
    EVP_MD_CTX *ctx = NULL;

    out[0] = '\0';
    if (lens[3] != 64 || strspn(fields[3], "0123456789abcdef") != 64) {
        return kl_fail(KL_EINPUT, "audit entry %lld: malformed previous hash", (long long)seq);
    }
    ctx = EVP_MD_CTX_new();
    ENSURE_SSL(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), KL_EINTERNAL, "SHA-256");
    ENSURE_SSL(EVP_DigestUpdate(ctx, tag, sizeof tag - 1), KL_EINTERNAL, "SHA-256");
    put_be(hdr, (uint64_t)seq, 8);
    put_be(hdr + 8, (uint64_t)(int64_t)ts, 8);
    ENSURE_SSL(EVP_DigestUpdate(ctx, hdr, 16), KL_EINTERNAL, "SHA-256");
    for (int i = 0; i < 4; i++) {
        uint8_t lp[4];
        ENSURE(lens[i] <= AUDIT_FIELD_MAX, KL_EINPUT, "audit field longer than %u bytes",
               AUDIT_FIELD_MAX);
        put_be(lp, lens[i], 4);
        ENSURE_SSL(EVP_DigestUpdate(ctx, lp, 4) && EVP_DigestUpdate(ctx, fields[i], lens[i]),
                   KL_EINTERNAL, "SHA-256");
    }
    ENSURE_SSL(EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32, KL_EINTERNAL, "SHA-256");
    hex_put(md, 32, out);
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

kl_rc store_audit_entry_hash(int64_t seq, time_t ts, const char *actor, const char *action,
                             const char *detail, const char *prev_hash, char out[65])
{
    return store_audit_entry_hash_len(seq, ts, actor, actor ? strlen(actor) : 0, action,
                                      action ? strlen(action) : 0, detail,
                                      detail ? strlen(detail) : 0, prev_hash, out);
}

/* ---- details of the entries the store writes ------------------------------------------- */

static const char *const store_actions[] = {"issue",       "activate",     "revoke",
                                            "ca-create",   "ca-recert",    "ocsp-signer-new",
                                            "ca-baseline", "cert-baseline"};

int store_audit_action_reserved(const char *action)
{
    for (size_t i = 0; i < sizeof store_actions / sizeof store_actions[0]; i++) {
        if (strcmp(action, store_actions[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static int der_sha256(const uint8_t *der, size_t len, uint8_t md[32])
{
    unsigned int n = 0;
    static const uint8_t empty = 0;
    return EVP_Digest(der ? der : &empty, der ? len : 0, md, &n, EVP_sha256(), NULL) == 1 &&
           n == 32;
}

static kl_rc der_sha256_hex(const uint8_t *der, size_t len, char out[65])
{
    uint8_t md[32];
    if (!der_sha256(der, len, md)) {
        return kl_fail_ssl(KL_EINTERNAL, "SHA-256");
    }
    hex_put(md, 32, out);
    return KL_OK;
}

static kl_rc aprintf(char **out, const char *fmt, ...) KL_PRINTF(2, 3);
static kl_rc aprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!*out) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    va_start(ap, fmt);
    vsnprintf(*out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return KL_OK;
}

/* Does `detail` start with "<key>=<value>" followed by a space or its end? */
static int starts_with_field(const char *detail, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);
    return strncmp(detail, key, kl) == 0 && detail[kl] == '=' &&
           strncmp(detail + kl + 1, value, vl) == 0 &&
           (detail[kl + 1 + vl] == ' ' || detail[kl + 1 + vl] == '\0');
}

/* "<key>=<value>" + (" " + detail, unless detail already starts with that) + " " + tail */
static kl_rc detail_compose(const char *key, const char *value, const char *detail,
                            const char *tail, char **out)
{
    if (detail && detail[0] && starts_with_field(detail, key, value)) {
        return aprintf(out, "%s %s", detail, tail);
    }
    return aprintf(out, "%s=%s%s%s %s", key, value, detail && detail[0] ? " " : "",
                   detail ? detail : "", tail);
}

kl_rc store_audit_detail_issue(const char *serial, const char *status, const uint8_t *der,
                               size_t der_len, const char *detail, char **out)
{
    char h[65], tail[128];
    kl_rc rc = der_sha256_hex(der, der_len, h);
    if (rc != KL_OK) {
        return rc;
    }
    snprintf(tail, sizeof tail, "status=%s der-sha256=%s", status, h);
    return detail_compose("serial", serial, detail, tail, out);
}

kl_rc store_audit_detail_revoke(const char *serial, const char *issuer, int reason, time_t when,
                                char **out)
{
    return aprintf(out, "serial=%s issuer=%s reason=%d revoked-at=%lld", serial, issuer, reason,
                   (long long)when);
}

kl_rc store_audit_detail_ca(const char *label, const uint8_t *der, size_t der_len,
                            const char *detail, char **out)
{
    char h[65], tail[96];
    kl_rc rc = der_sha256_hex(der, der_len, h);
    if (rc != KL_OK) {
        return rc;
    }
    snprintf(tail, sizeof tail, "der-sha256=%s", h);
    return detail_compose("label", label, detail, tail, out);
}

kl_rc store_audit_detail_baseline(const char *serial, const char *status, int reason,
                                  time_t revoked_at, const uint8_t *der, size_t der_len, char **out)
{
    char h[65];
    kl_rc rc = der_sha256_hex(der, der_len, h);
    if (rc != KL_OK) {
        return rc;
    }
    if (strcmp(status, STORE_ST_REVOKED) == 0) {
        return aprintf(out, "serial=%s status=%s reason=%d revoked-at=%lld der-sha256=%s", serial,
                       status, reason, (long long)revoked_at, h);
    }
    return aprintf(out, "serial=%s status=%s der-sha256=%s", serial, status, h);
}

/* ---- parsing those details --------------------------------------------------------------
 * The fields the check reads are where only the store puts them: the first ("serial=" or
 * "label=", checked or put there by the store) and the last ones (appended by the store after
 * any text of the caller's), so no text of a caller's (a subject from a CSR) can pose as one. */

typedef struct {
    const char *p;
    size_t len; /* what is left of the detail, from the end inwards */
} detail_view;

/* The first field "<key>=VALUE" (VALUE up to a space) into val; 0 when absent or too long. */
static int field_first(const detail_view *d, const char *key, char *val, size_t valsz)
{
    size_t kl = strlen(key);
    if (d->len <= kl || strncmp(d->p, key, kl) != 0 || d->p[kl] != '=') {
        return 0;
    }
    const char *v = d->p + kl + 1;
    const char *sp = memchr(v, ' ', d->len - kl - 1);
    size_t n = sp ? (size_t)(sp - v) : d->len - kl - 1;
    if (n == 0 || n >= valsz) {
        return 0;
    }
    memcpy(val, v, n);
    val[n] = '\0';
    return 1;
}

/* If the detail ends with " <key>=VALUE", take it off the end into val. */
static int field_last(detail_view *d, const char *key, char *val, size_t valsz)
{
    size_t i = d->len;
    while (i > 0 && d->p[i - 1] != ' ') {
        i--;
    }
    if (i == 0) {
        return 0;
    }
    const char *tok = d->p + i;
    size_t tl = d->len - i, kl = strlen(key);
    if (tl <= kl + 1 || strncmp(tok, key, kl) != 0 || tok[kl] != '=' || tl - kl - 1 >= valsz) {
        return 0;
    }
    memcpy(val, tok + kl + 1, tl - kl - 1);
    val[tl - kl - 1] = '\0';
    d->len = i - 1;
    return 1;
}

static int parse_sha(const char *hex, uint8_t out[32])
{
    if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64) {
        return 0;
    }
    for (int i = 0; i < 32; i++) {
        const char *h = hex + 2 * i; /* lower-case hex digits, checked above */
        int hi = h[0] <= '9' ? h[0] - '0' : h[0] - 'a' + 10;
        int lo = h[1] <= '9' ? h[1] - '0' : h[1] - 'a' + 10;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

static int parse_int64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        return 0;
    }
    *out = v;
    return 1;
}

/* ---- the state check ------------------------------------------------------------------- */

typedef struct {
    char *key;          /* "c:SERIAL" (certificate) or "a:LABEL" (CA record) */
    int64_t first;      /* entry that issued / created it; 0: none */
    int64_t hash_seq;   /* entry that recorded `sha`; 0: no hash recorded */
    int64_t state_seq;  /* entry that set `status` */
    uint8_t sha[32];    /* SHA-256 of the DER the row must hold */
    char status;        /* 'v' valid, 'p' pending, 'r' revoked, '?' valid or pending, 0 */
    int reason;         /* revoked: CRL reason, -1 none */
    int64_t revoked_at; /* revoked: time; -1 not recorded (entries of earlier versions) */
    int seen;           /* its row was fed */
} xc_fact;

struct store_audit_state {
    xc_fact *v;
    size_t n, alloc;
    size_t *slot; /* open addressing over v: index + 1, 0 = empty */
    size_t nslot; /* power of two, > 2 * n */
    int64_t entries;
    int failed;
    char err[512];
};

static void xc_fail(store_audit_state *x, const char *fmt, ...) KL_PRINTF(2, 3);
static void xc_fail(store_audit_state *x, const char *fmt, ...)
{
    if (x->failed) {
        return; /* the first inconsistency is the one reported */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, sizeof x->err, fmt, ap);
    va_end(ap);
    x->failed = 1;
}

static size_t xc_hash(const char *k)
{
    size_t h = 1469598103934665603u;
    for (; *k; k++) {
        h = (h ^ (unsigned char)*k) * 1099511628211u;
    }
    return h;
}

static xc_fact *xc_find(const store_audit_state *x, const char *key)
{
    if (!x->nslot) {
        return NULL;
    }
    for (size_t i = xc_hash(key) & (x->nslot - 1);; i = (i + 1) & (x->nslot - 1)) {
        if (!x->slot[i]) {
            return NULL;
        }
        if (strcmp(x->v[x->slot[i] - 1].key, key) == 0) {
            return &x->v[x->slot[i] - 1];
        }
    }
}

static int xc_rehash(store_audit_state *x, size_t nslot)
{
    size_t *s = calloc(nslot, sizeof *s);
    if (!s) {
        return 0;
    }
    for (size_t k = 0; k < x->n; k++) {
        size_t i = xc_hash(x->v[k].key) & (nslot - 1);
        while (s[i]) {
            i = (i + 1) & (nslot - 1);
        }
        s[i] = k + 1;
    }
    free(x->slot);
    x->slot = s;
    x->nslot = nslot;
    return 1;
}

/* The fact for kind 'c' or 'a' and name, created empty when absent; NULL when out of memory. */
static xc_fact *xc_get(store_audit_state *x, char kind, const char *name, int create)
{
    char key[160];
    snprintf(key, sizeof key, "%c:%s", kind, name);
    xc_fact *f = xc_find(x, key);
    if (f || !create) {
        return f;
    }
    if (x->n == x->alloc) {
        size_t na = x->alloc ? x->alloc * 2 : 256;
        xc_fact *v = realloc(x->v, na * sizeof *v);
        if (!v) {
            return NULL;
        }
        x->v = v;
        x->alloc = na;
    }
    if (2 * (x->n + 1) >= x->nslot && !xc_rehash(x, x->nslot ? x->nslot * 2 : 1024)) {
        return NULL;
    }
    f = &x->v[x->n];
    memset(f, 0, sizeof *f);
    f->reason = -1;
    f->revoked_at = -1;
    if (!(f->key = strdup(key))) {
        return NULL;
    }
    size_t i = xc_hash(key) & (x->nslot - 1);
    while (x->slot[i]) {
        i = (i + 1) & (x->nslot - 1);
    }
    x->slot[i] = ++x->n;
    return f;
}

kl_rc store_audit_state_new(store_audit_state **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? KL_OK : kl_fail(KL_EINTERNAL, "out of memory");
}

void store_audit_state_free(store_audit_state *x)
{
    if (!x) {
        return;
    }
    for (size_t i = 0; i < x->n; i++) {
        free(x->v[i].key);
    }
    free(x->v);
    free(x->slot);
    free(x);
}

static char status_code(const char *s)
{
    if (strcmp(s, STORE_ST_VALID) == 0) {
        return 'v';
    }
    if (strcmp(s, STORE_ST_PENDING) == 0) {
        return 'p';
    }
    if (strcmp(s, STORE_ST_REVOKED) == 0) {
        return 'r';
    }
    return 0;
}

static const char *status_name(char c)
{
    switch (c) {
    case 'v': return STORE_ST_VALID;
    case 'p': return STORE_ST_PENDING;
    case 'r': return STORE_ST_REVOKED;
    default: return "valid or pending";
    }
}

#define XC_OOM() kl_fail(KL_EINTERNAL, "out of memory")

/* A certificate entry: issue, cert-baseline, activate, revoke. */
static kl_rc xc_cert_entry(store_audit_state *x, int64_t seq, const char *action, detail_view d)
{
    char tok[96], serial[48], val[80];
    if (!field_first(&d, "serial", tok, sizeof tok) ||
        store_serial_normalize(tok, serial, sizeof serial) != KL_OK) {
        xc_fail(x, "audit entry %lld: %s entry without a valid serial", (long long)seq, action);
        return KL_OK;
    }
    int issues = strcmp(action, "issue") == 0, baseline = strcmp(action, "cert-baseline") == 0;
    xc_fact *f = xc_get(x, 'c', serial, 1);
    if (!f) {
        return XC_OOM();
    }
    if (!issues && !baseline && !f->first) {
        xc_fail(x, "audit entry %lld: %s of certificate %s, which no audit entry issued",
                (long long)seq, action, serial);
        return KL_OK;
    }
    if (issues || baseline) {
        if (issues && f->first) {
            xc_fail(x, "audit entry %lld: certificate %s issued again (first in audit entry %lld)",
                    (long long)seq, serial, (long long)f->first);
            return KL_OK;
        }
        f->first = f->first ? f->first : seq;
        f->hash_seq = 0;
        if (field_last(&d, "der-sha256", val, sizeof val) && parse_sha(val, f->sha)) {
            f->hash_seq = seq;
        }
        char st = 0;
        int64_t at = -1, reason = -1;
        if (baseline) {
            /* "status=S[ reason=R revoked-at=T]" before the hash */
            if (field_last(&d, "revoked-at", val, sizeof val) && !parse_int64(val, &at)) {
                at = -1;
            }
            if (field_last(&d, "reason", val, sizeof val) && !parse_int64(val, &reason)) {
                reason = -1;
            }
        }
        /* entries of earlier versions carry no status: valid or pending */
        st = f->hash_seq && field_last(&d, "status", val, sizeof val) ? status_code(val) : '?';
        if (st == 0 || (st == 'r' && !baseline)) {
            xc_fail(x, "audit entry %lld: certificate %s with an unknown status", (long long)seq,
                    serial);
            return KL_OK;
        }
        f->status = st;
        f->state_seq = seq;
        f->reason = st == 'r' ? (int)reason : -1;
        f->revoked_at = st == 'r' ? at : -1;
        return KL_OK;
    }
    if (strcmp(action, "activate") == 0) {
        f->status = 'v';
        f->state_seq = seq;
        return KL_OK;
    }
    /* revoke: "... reason=R[ revoked-at=T]" (revoked-at since this check exists) */
    int64_t at = -1, reason = -1;
    if (field_last(&d, "revoked-at", val, sizeof val) && !parse_int64(val, &at)) {
        at = -1;
    }
    if (!field_last(&d, "reason", val, sizeof val) || !parse_int64(val, &reason)) {
        xc_fail(x, "audit entry %lld: revocation of certificate %s without a reason",
                (long long)seq, serial);
        return KL_OK;
    }
    f->status = 'r';
    f->state_seq = seq;
    f->reason = (int)reason;
    f->revoked_at = at;
    return KL_OK;
}

/* A CA entry: ca-create, ca-recert, ocsp-signer-new (a delegated OCSP signer's certificate of
 * a new key: held to as a ca-recert, its own action so the log tells a new key from a
 * renewal), ca-baseline. The latest of them gives the hash the record must match. */
static kl_rc xc_ca_entry(store_audit_state *x, int64_t seq, const char *action, detail_view d)
{
    char label[128], val[80];
    if (!field_first(&d, "label", label, sizeof label)) {
        xc_fail(x, "audit entry %lld: %s entry without a label", (long long)seq, action);
        return KL_OK;
    }
    xc_fact *f = xc_get(x, 'a', label, 1);
    if (!f) {
        return XC_OOM();
    }
    if ((strcmp(action, "ca-recert") == 0 || strcmp(action, "ocsp-signer-new") == 0) && !f->first) {
        xc_fail(x, "audit entry %lld: %s of CA '%s', which no audit entry created", (long long)seq,
                action, label);
        return KL_OK;
    }
    f->first = f->first ? f->first : seq;
    f->hash_seq = 0; /* an entry of an earlier version: the certificate it recorded is unknown */
    if (field_last(&d, "der-sha256", val, sizeof val) && parse_sha(val, f->sha)) {
        f->hash_seq = seq;
    }
    return KL_OK;
}

kl_rc store_audit_state_entry(store_audit_state *x, int64_t seq, const char *action,
                              const char *detail, size_t detail_len)
{
    detail_view d = {detail ? detail : "", detail ? detail_len : 0};
    x->entries++;
    if (!action) {
        return KL_OK;
    }
    if (strcmp(action, "issue") == 0 || strcmp(action, "cert-baseline") == 0 ||
        strcmp(action, "activate") == 0 || strcmp(action, "revoke") == 0) {
        return xc_cert_entry(x, seq, action, d);
    }
    if (strcmp(action, "ca-create") == 0 || strcmp(action, "ca-recert") == 0 ||
        strcmp(action, "ocsp-signer-new") == 0 || strcmp(action, "ca-baseline") == 0) {
        return xc_ca_entry(x, seq, action, d);
    }
    return KL_OK; /* notes, requests, CRLs, ...: no state of a row */
}

/* The row `what` ("certificate 0A01", "CA 'root'") has no entry at all. */
static void xc_unrecorded(store_audit_state *x, const char *what, const char *verb)
{
    if (x->entries == 0) {
        xc_fail(x,
                "the audit log is empty, but the store holds certificates (%s): the log was "
                "deleted or replaced",
                what);
    } else {
        xc_fail(x, "%s: no audit entry %s it (added outside keyline)", what, verb);
    }
}

/* Does the DER match the fact's hash? Reports and returns 0 when not. */
static int xc_der_check(store_audit_state *x, const xc_fact *f, const char *what,
                        const uint8_t *der, size_t der_len)
{
    uint8_t md[32];
    if (!f->hash_seq) {
        xc_fail(x,
                "%s: no audit entry records its certificate's hash (audit entry %lld, written "
                "before hashes were, and no baseline entry after it)",
                what, (long long)f->first);
        return 0;
    }
    if (!der_sha256(der, der_len, md) || CRYPTO_memcmp(md, f->sha, 32) != 0) {
        xc_fail(x, "%s: DER does not match the hash in audit entry %lld (certificate replaced)",
                what, (long long)f->hash_seq);
        return 0;
    }
    return 1;
}

kl_rc store_audit_state_ca(store_audit_state *x, const char *label, const uint8_t *der,
                           size_t der_len)
{
    char what[160];
    snprintf(what, sizeof what, "CA '%.100s'", label ? label : "");
    xc_fact *f = xc_get(x, 'a', label ? label : "", 0);
    if (!f || !f->first) {
        xc_unrecorded(x, what, "created");
        return KL_OK;
    }
    f->seen = 1;
    if (f->hash_seq) {
        uint8_t md[32];
        if (!der_sha256(der, der_len, md) || CRYPTO_memcmp(md, f->sha, 32) != 0) {
            xc_fail(x,
                    "%s: certificate does not match the hash in audit entry %lld (certificate "
                    "replaced)",
                    what, (long long)f->hash_seq);
        }
        return KL_OK;
    }
    (void)xc_der_check(x, f, what, der, der_len);
    return KL_OK;
}

kl_rc store_audit_state_cert(store_audit_state *x, const char *serial, const char *status,
                             const uint8_t *der, size_t der_len, time_t revoked_at,
                             int revoke_reason)
{
    char what[96];
    snprintf(what, sizeof what, "certificate %.80s", serial ? serial : "");
    status = status ? status : "";
    xc_fact *f = xc_get(x, 'c', serial ? serial : "", 0);
    if (f) {
        f->seen = 1;
    }
    char row = status_code(status);
    if (row == 0) {
        /* reserved / failed (rows of earlier versions): never certificates */
        if (f && f->first) {
            xc_fail(x, "%s: status %.16s, but audit entry %lld issued it", what, status,
                    (long long)f->first);
        }
        return KL_OK;
    }
    if (!f || !f->first) {
        xc_unrecorded(x, what, "issued");
        return KL_OK;
    }
    if (!xc_der_check(x, f, what, der, der_len)) {
        return KL_OK;
    }
    if (f->status == 'r') {
        if (row != 'r') {
            xc_fail(x, "%s: status %s, but audit entry %lld revoked it", what, status,
                    (long long)f->state_seq);
        } else if (revoke_reason != f->reason) {
            xc_fail(x, "%s: revocation reason %d, but audit entry %lld says %d", what,
                    revoke_reason, (long long)f->state_seq, f->reason);
        } else if (f->revoked_at >= 0 && (int64_t)revoked_at != f->revoked_at) {
            xc_fail(x, "%s: revoked at %lld, but audit entry %lld says %lld", what,
                    (long long)revoked_at, (long long)f->state_seq, (long long)f->revoked_at);
        }
        return KL_OK;
    }
    if (row == 'r') {
        xc_fail(x, "%s: status revoked, but no audit entry revokes it", what);
    } else if (f->status != '?' && row != f->status) {
        xc_fail(x, "%s: status %s, but audit entry %lld left it %s", what, status,
                (long long)f->state_seq, status_name(f->status));
    }
    return KL_OK;
}

kl_rc store_audit_state_verdict(store_audit_state *x)
{
    for (size_t i = 0; i < x->n && !x->failed; i++) {
        const xc_fact *f = &x->v[i];
        if (f->first && !f->seen) {
            if (f->key[0] == 'c') {
                xc_fail(x,
                        "audit entry %lld issued certificate %s, which is not in the store (row "
                        "deleted)",
                        (long long)f->first, f->key + 2);
            } else {
                xc_fail(x,
                        "audit entry %lld created CA '%.100s', which is not in the store "
                        "(record deleted)",
                        (long long)f->first, f->key + 2);
            }
        }
    }
    return x->failed ? kl_fail(KL_EPOLICY, "%s", x->err) : KL_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------
 * The chain's head signed with the audit key in the HSM (docs/internals/store.md
 * "Checkpoints"). A chain anyone with write access can recompute; a signature only the token
 * can make. So a rewrite of signed entries (edited, deleted, reordered, the chain recomputed
 * and the triggers dropped first) leaves a checkpoint whose (seq, hash) is no longer in the
 * chain, and a forged checkpoint does not verify. */

void store_audit_checkpoint_tbs(int64_t seq, time_t ts, const char *hash,
                                uint8_t out[STORE_AUDIT_CP_TBS_LEN])
{
    static const char tag[] = STORE_AUDIT_CP_TAG;
    _Static_assert(sizeof tag - 1 == 27, "the checkpoint tag is 27 bytes");
    /* a fixed-length field of the signed bytes, not a C string: */
    memcpy(out, tag, 27); // NOLINT(bugprone-not-null-terminated-result)
    put_be(out + 27, (uint64_t)seq, 8);
    put_be(out + 35, (uint64_t)(int64_t)ts, 8);
    put_be(out + 43, 64, 4);
    memcpy(out + 47, hash, 64);
}

static int hash_ok(const char *h)
{
    return h && strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64;
}

static EVP_PKEY *spki_parse(const uint8_t *spki, size_t len)
{
    const unsigned char *p = spki;
    EVP_PKEY *k = spki && len ? d2i_PUBKEY(NULL, &p, (long)len) : NULL;
    if (k && p != spki + len) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    ERR_clear_error();
    return k;
}

/* 1 when `sig` is `k`'s signature over the checkpoint's bytes. */
static int cp_sig_ok(EVP_PKEY *k, int64_t seq, time_t ts, const char *hash, const uint8_t *sig,
                     size_t sig_len)
{
    uint8_t tbs[STORE_AUDIT_CP_TBS_LEN];
    if (!k || !hash_ok(hash) || !sig || !sig_len) {
        return 0;
    }
    store_audit_checkpoint_tbs(seq, ts, hash, tbs);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_len, tbs, sizeof tbs) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

kl_rc store_audit_cp_sig_check(const uint8_t *spki, size_t spki_len, int64_t seq, time_t ts,
                               const char *hash, const uint8_t *sig, size_t sig_len)
{
    EVP_PKEY *k = spki_parse(spki, spki_len);
    if (!k) {
        return kl_fail(KL_EINPUT, "the recorded audit key does not parse (key record edited)");
    }
    int ok = cp_sig_ok(k, seq, ts, hash, sig, sig_len);
    EVP_PKEY_free(k);
    return ok ? KL_OK
              : kl_fail(KL_EPOLICY,
                        "audit checkpoint at entry %lld: signature does not verify with the "
                        "recorded audit key",
                        (long long)seq);
}

typedef struct {
    int64_t seq;
    char hash[65];
    time_t ts;
    int sig_ok;
} cp_rec;

struct store_audit_cps {
    EVP_PKEY *key;
    int has_key, key_bad;
    char label[STORE_AUDIT_KEY_LABEL_MAX + 1];
    char key_sha[65];
    cp_rec *v;
    size_t n, alloc;
    size_t next;      /* the next checkpoint the walk reaches */
    int64_t good_seq; /* the last checkpoint found in the chain (0: none yet) */
};

kl_rc store_audit_cps_new(store_audit_cps **out, const char *label, const uint8_t *spki,
                          size_t spki_len)
{
    store_audit_cps *x = calloc(1, sizeof *x);
    *out = NULL;
    if (!x) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    if (spki) {
        x->has_key = 1;
        snprintf(x->label, sizeof x->label, "%s", label ? label : "");
        x->key = spki_parse(spki, spki_len);
        x->key_bad = x->key == NULL;
        kl_rc rc = der_sha256_hex(spki, spki_len, x->key_sha);
        if (rc != KL_OK) {
            store_audit_cps_free(x);
            return rc;
        }
    }
    *out = x;
    return KL_OK;
}

void store_audit_cps_free(store_audit_cps *x)
{
    if (!x) {
        return;
    }
    EVP_PKEY_free(x->key);
    free(x->v);
    free(x);
}

kl_rc store_audit_cps_add(store_audit_cps *x, int64_t seq, const char *hash, time_t ts,
                          const uint8_t *sig, size_t sig_len)
{
    if (x->n == x->alloc) {
        size_t na = x->alloc ? x->alloc * 2 : 64;
        cp_rec *v = realloc(x->v, na * sizeof *v);
        if (!v) {
            return kl_fail(KL_EINTERNAL, "out of memory");
        }
        x->v = v;
        x->alloc = na;
    }
    cp_rec *c = &x->v[x->n++];
    c->seq = seq;
    snprintf(c->hash, sizeof c->hash, "%s", hash ? hash : "");
    c->ts = ts;
    /* checked now, reported when the walk reaches it (first failure in entry order) */
    c->sig_ok = cp_sig_ok(x->key, seq, ts, hash, sig, sig_len);
    return KL_OK;
}

kl_rc store_audit_cps_start(store_audit_cps *x)
{
    if (x->has_key && x->key_bad) {
        return kl_fail(KL_EPOLICY, "the recorded audit key '%s' does not parse (key record edited)",
                       x->label);
    }
    if (x->has_key && x->n == 0) {
        /* the key is recorded in the transaction of the first checkpoint */
        return kl_fail(KL_EPOLICY,
                       "the audit key '%s' is recorded but there is no audit checkpoint: the "
                       "checkpoints were deleted",
                       x->label);
    }
    if (!x->has_key && x->n > 0) {
        return kl_fail(KL_EPOLICY,
                       "%zu audit checkpoint(s) but no recorded audit key: the key record was "
                       "deleted",
                       x->n);
    }
    for (size_t i = 0; i < x->n; i++) {
        if (x->v[i].seq < 1) {
            return kl_fail(KL_EPOLICY, "audit checkpoint at entry %lld: no such entry (edited)",
                           (long long)x->v[i].seq);
        }
    }
    return KL_OK;
}

kl_rc store_audit_cps_entry(store_audit_cps *x, int64_t seq, const char *hash)
{
    for (; x->next < x->n && x->v[x->next].seq == seq; x->next++) {
        const cp_rec *c = &x->v[x->next];
        if (!c->sig_ok) {
            return kl_fail(KL_EPOLICY,
                           "audit checkpoint at entry %lld: signature does not verify with the "
                           "recorded audit key '%s' (checkpoint forged or edited)",
                           (long long)seq, x->label);
        }
        if (strcmp(c->hash, hash) != 0) {
            return kl_fail(KL_EPOLICY,
                           "audit checkpoint at entry %lld: the chain no longer has the signed "
                           "hash there: an entry in %lld..%lld was edited, deleted, inserted or "
                           "reordered after it was signed",
                           (long long)seq, (long long)(x->good_seq + 1), (long long)seq);
        }
        x->good_seq = seq;
    }
    return KL_OK;
}

kl_rc store_audit_cps_end(store_audit_cps *x, int64_t entries, store_audit_report *r)
{
    if (x->next < x->n) {
        const cp_rec *c = &x->v[x->next];
        if (entries == 0) {
            return kl_fail(KL_EPOLICY,
                           "the audit log is empty, but audit checkpoint at entry %lld signed "
                           "it: the log was deleted",
                           (long long)c->seq);
        }
        return kl_fail(KL_EPOLICY,
                       "audit checkpoint at entry %lld: the log ends at entry %lld (entries "
                       "%lld..%lld deleted)",
                       (long long)c->seq, (long long)entries, (long long)(entries + 1),
                       (long long)c->seq);
    }
    r->checkpoints = (int64_t)x->n;
    r->cp_seq = x->n ? x->v[x->n - 1].seq : 0;
    r->cp_ts = x->n ? x->v[x->n - 1].ts : 0;
    r->has_key = x->has_key;
    snprintf(r->key_label, sizeof r->key_label, "%s", x->label);
    snprintf(r->key_sha256, sizeof r->key_sha256, "%s", x->has_key ? x->key_sha : "");
    return KL_OK;
}
