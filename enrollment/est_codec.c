/* keyline-estd: pure wire formats (no I/O, no CA, no TLS). Unit-tested in tests/unit/est. */
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "est.h"
#include "kl_b64.h"

/* ---------------------------------------------------------------------------------------- */
/* Routing                                                                                  */

static const struct {
    const char *name;
    est_op op;
    est_endpoint ep;
} est_ops[] = {
    {"cacerts", EST_OP_CACERTS, EST_EP_CACERTS},
    {"simpleenroll", EST_OP_SIMPLEENROLL, EST_EP_SIMPLEENROLL},
    {"simplereenroll", EST_OP_SIMPLEREENROLL, EST_EP_SIMPLEREENROLL},
    {"csrattrs", EST_OP_CSRATTRS, EST_EP_CSRATTRS},
    {"serverkeygen", EST_OP_SERVERKEYGEN, EST_EP_SERVERKEYGEN},
    {"fullcmc", EST_OP_FULLCMC, EST_EP_FULLCMC},
};

static const char *const est_ep_names[EST_EP__COUNT] = {
    [EST_EP_OTHER] = "other",
    [EST_EP_CACERTS] = "cacerts",
    [EST_EP_SIMPLEENROLL] = "simpleenroll",
    [EST_EP_SIMPLEREENROLL] = "simplereenroll",
    [EST_EP_CSRATTRS] = "csrattrs",
    [EST_EP_SERVERKEYGEN] = "serverkeygen",
    [EST_EP_FULLCMC] = "fullcmc",
    [EST_EP_CRL] = "crl",
    [EST_EP_OCSP] = "ocsp",
    [EST_EP_HEALTHZ] = "healthz",
    [EST_EP_METRICS] = "metrics",
};

const char *est_endpoint_name(est_endpoint ep)
{
    return (ep >= 0 && ep < EST_EP__COUNT) ? est_ep_names[ep] : "other";
}

/* A label is 1..63 of [A-Za-z0-9._-], taken from s[0..n). */
static int est_label_ok(const char *s, size_t n)
{
    if (n == 0 || n >= EST_LABEL_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-') {
            return 0;
        }
    }
    return 1;
}

/* A CRL's name, s[0..n): a label, or "L/K" as keyline-cad names partition K's CRL of CA L
 * (ca_crlpart_name_parse): K is 0 or a decimal number without leading zeros, at most
 * EST_CRL_PART_MAX. */
static int est_crl_name_ok(const char *s, size_t n)
{
    const char *sl = memchr(s, '/', n);
    if (!sl) {
        return est_label_ok(s, n);
    }
    const char *k = sl + 1;
    size_t kl = (size_t)(s + n - k);
    if (!est_label_ok(s, (size_t)(sl - s)) || kl == 0 || kl > EST_CRL_PART_DIGITS ||
        (k[0] == '0' && kl > 1)) {
        return 0;
    }
    unsigned long long v = 0;
    for (size_t i = 0; i < kl; i++) {
        if (k[i] < '0' || k[i] > '9') {
            return 0;
        }
        v = v * 10 + (unsigned long long)(k[i] - '0'); /* 13 digits: no overflow */
    }
    return v <= EST_CRL_PART_MAX;
}

static int est_op_lookup(const char *s, size_t n, est_route *out)
{
    for (size_t i = 0; i < sizeof est_ops / sizeof est_ops[0]; i++) {
        if (strlen(est_ops[i].name) == n && memcmp(est_ops[i].name, s, n) == 0) {
            out->op = est_ops[i].op;
            out->ep = est_ops[i].ep;
            return 1;
        }
    }
    return 0;
}

kl_rc est_route_parse(const char *path, est_route *out)
{
    static const char est_prefix[] = "/.well-known/est/";
    memset(out, 0, sizeof *out);
    if (!path) {
        return kl_fail(KL_ENOTFOUND, "no path");
    }
    if (strcmp(path, "/healthz") == 0) {
        out->ep = EST_EP_HEALTHZ;
        return KL_OK;
    }
    if (strcmp(path, "/metrics") == 0) {
        out->ep = EST_EP_METRICS;
        return KL_OK;
    }
    if (strcmp(path, "/ocsp") == 0 || strcmp(path, "/ocsp/") == 0) {
        out->ep = EST_EP_OCSP;
        return KL_OK;
    }
    if (strncmp(path, "/ocsp/", 6) == 0) {
        /* RFC 5019 / RFC 6960 A.1: GET {url}/{url-encoding of base64 of DER OCSPRequest};
         * the base64 may itself contain '/', but never starts with one (the DER starts with
         * 0x30, SEQUENCE: base64 'M'), so one '/' after "/ocsp/" is the '/' of a responder URL
         * that ends in one ("/ocsp/", as POST takes it): "/ocsp//<b64>" is "/ocsp/<b64>". */
        out->ep = EST_EP_OCSP;
        out->ocsp_b64 = path + (path[6] == '/' ? 7 : 6);
        return KL_OK;
    }
    if (strncmp(path, "/crl/", 5) == 0) {
        /* /crl/L.crl: CA L's CRL; /crl/L/K.crl: partition K's CRL of CA L ([ca L]
         * crl-partition-size), named "L/K" as keyline-cad names it */
        const char *l = path + 5;
        size_t n = strlen(l);
        if (n > 4 && strcmp(l + n - 4, ".crl") == 0 && est_crl_name_ok(l, n - 4) &&
            n - 4 < sizeof out->label) {
            out->ep = EST_EP_CRL;
            memcpy(out->label, l, n - 4);
            out->label[n - 4] = 0;
            return KL_OK;
        }
        return kl_fail(KL_ENOTFOUND, "no such CRL");
    }
    if (strncmp(path, est_prefix, sizeof est_prefix - 1) != 0) {
        return kl_fail(KL_ENOTFOUND, "no such path");
    }
    /* RFC 7030 3.2.2: /.well-known/est[/arbitraryLabel]/operation */
    const char *rest = path + sizeof est_prefix - 1;
    const char *slash = strchr(rest, '/');
    if (!slash) {
        if (est_op_lookup(rest, strlen(rest), out)) {
            return KL_OK;
        }
        return kl_fail(KL_ENOTFOUND, "no such EST operation");
    }
    const char *op = slash + 1;
    if (!est_label_ok(rest, (size_t)(slash - rest)) || strchr(op, '/') ||
        !est_op_lookup(op, strlen(op), out)) {
        memset(out, 0, sizeof *out);
        return kl_fail(KL_ENOTFOUND, "no such EST path");
    }
    memcpy(out->label, rest, (size_t)(slash - rest));
    out->label[slash - rest] = 0;
    return KL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Media types and bodies                                                                   */

int est_media_type_is(const char *ct, const char *want)
{
    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0) {
        return 0;
    }
    ct += n;
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return *ct == 0 || *ct == ';';
}

static int est_token_is(const char *v, const char *want)
{
    if (!v) {
        return 0;
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    size_t n = strlen(want);
    if (strncasecmp(v, want, n) != 0) {
        return 0;
    }
    for (v += n; *v; v++) {
        if (*v != ' ' && *v != '\t' && *v != '\r' && *v != '\n') {
            return 0;
        }
    }
    return 1;
}

static const uint8_t *est_memmem(const uint8_t *h, size_t hl, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl > hl) {
        return NULL;
    }
    for (size_t i = 0; i + nl <= hl; i++) {
        if (memcmp(h + i, needle, nl) == 0) {
            return h + i;
        }
    }
    return NULL;
}

kl_rc est_body_decode(const uint8_t *body, size_t len, const char *cte, kl_buf *der)
{
    kl_rc rc = KL_OK;
    size_t start = der->len;
    if (est_token_is(cte, "binary")) {
        ENSURE(len > 0, KL_EINPUT, "empty request body");
        TRY(kl_buf_put(der, body, len));
        return KL_OK;
    }
    /* RFC 8951 3: "the Content-Transfer-Encoding header field ... is not meaningful for HTTP";
     * the body is base64 regardless. */
    const uint8_t *p = body, *end = body + len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
    }
    static const char begin[] = "-----BEGIN ";
    if ((size_t)(end - p) >= sizeof begin - 1 && memcmp(p, begin, sizeof begin - 1) == 0) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        ENSURE(nl, KL_EINPUT, "truncated PEM body");
        p = nl + 1;
        const uint8_t *e = est_memmem(p, (size_t)(end - p), "-----END ");
        ENSURE(e, KL_EINPUT, "PEM body without END line");
        end = e;
    }
    TRY(kl_b64_decode((const char *)p, (size_t)(end - p), der));
    ENSURE(der->len > start, KL_EINPUT, "empty request body");
out:
    if (rc != KL_OK) {
        der->len = start;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Minimal DER writer for /csrattrs                                                         */

static kl_rc est_der_len(kl_buf *b, size_t n)
{
    if (n < 0x80) {
        return kl_buf_put_u8(b, (uint8_t)n);
    }
    uint8_t tmp[sizeof(size_t)];
    size_t k = 0;
    while (n) {
        tmp[sizeof tmp - 1 - k++] = (uint8_t)(n & 0xff);
        n >>= 8;
    }
    kl_rc rc = kl_buf_put_u8(b, (uint8_t)(0x80 | k));
    return rc != KL_OK ? rc : kl_buf_put(b, tmp + sizeof tmp - k, k);
}

static kl_rc est_der_tlv(kl_buf *b, uint8_t tag, const uint8_t *v, size_t n)
{
    kl_rc rc = kl_buf_put_u8(b, tag);
    if (rc == KL_OK) {
        rc = est_der_len(b, n);
    }
    if (rc == KL_OK) {
        rc = kl_buf_put(b, v, n);
    }
    return rc;
}

static kl_rc est_der_oid(kl_buf *b, int nid)
{
    const ASN1_OBJECT *o = OBJ_nid2obj(nid);
    if (!o || OBJ_length(o) == 0) {
        return kl_fail(KL_EINTERNAL, "no OID for NID %d", nid);
    }
    return est_der_tlv(b, 0x06, OBJ_get0_data(o), OBJ_length(o));
}

static kl_rc est_der_uint(kl_buf *b, unsigned long v)
{
    uint8_t tmp[sizeof v + 1];
    size_t k = 0;
    do {
        tmp[sizeof tmp - 1 - k++] = (uint8_t)(v & 0xff);
        v >>= 8;
    } while (v);
    if (tmp[sizeof tmp - k] & 0x80) {
        tmp[sizeof tmp - 1 - k++] = 0;
    }
    return est_der_tlv(b, 0x02, tmp + sizeof tmp - k, k);
}

kl_rc est_csrattrs_encode(const est_csrattrs_in *in, kl_buf *der)
{
    kl_rc rc = KL_OK;
    kl_buf seq, attr, set;
    kl_buf_init(&seq, 4096, 0);
    kl_buf_init(&attr, 1024, 0);
    kl_buf_init(&set, 1024, 0);
    int sig_nid = 0;

    /* RFC 7030 4.5.2: "the challengePassword OID ... indicates that the client should include
     * the tls-unique value (3.5)". */
    if (in->want_challenge) {
        TRY(est_der_oid(&seq, NID_pkcs9_challengePassword));
    }
    /* Key type as an Attribute: { id-ecPublicKey, SET { namedCurve } } (the RFC 7030 4.5.2
     * example form) or { rsaEncryption, SET { INTEGER bits } }. */
    if (in->key_nid == NID_rsaEncryption) {
        TRY(est_der_uint(&set, (unsigned long)(in->rsa_bits > 0 ? in->rsa_bits : 3072)));
        TRY(est_der_oid(&attr, NID_rsaEncryption));
        sig_nid = NID_sha256WithRSAEncryption;
    } else if (in->key_nid == NID_X9_62_prime256v1 || in->key_nid == NID_secp384r1) {
        TRY(est_der_oid(&set, in->key_nid));
        TRY(est_der_oid(&attr, NID_X9_62_id_ecPublicKey));
        sig_nid = in->key_nid == NID_secp384r1 ? NID_ecdsa_with_SHA384 : NID_ecdsa_with_SHA256;
    }
    if (sig_nid) {
        TRY(est_der_tlv(&attr, 0x31, set.data, set.len));
        TRY(est_der_tlv(&seq, 0x30, attr.data, attr.len));
    }
    if (in->want_serial) {
        TRY(est_der_oid(&seq, NID_serialNumber));
    }
    if (sig_nid) {
        TRY(est_der_oid(&seq, sig_nid));
    }
    TRY(est_der_tlv(der, 0x30, seq.data, seq.len));
out:
    kl_buf_free(&seq);
    kl_buf_free(&attr);
    kl_buf_free(&set);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* multipart/mixed (RFC 7030 4.4.2)                                                          */

kl_rc est_multipart_build(const est_part *parts, size_t n, kl_buf *out)
{
    kl_rc rc = KL_OK;
    size_t start = out->len;
    for (size_t i = 0; i < n; i++) {
        /* The boundary must not occur in a part: base64 never contains '_'. */
        ENSURE(!est_memmem(parts[i].data, parts[i].len, EST_MULTIPART_BOUNDARY), KL_EINTERNAL,
               "multipart boundary inside a part");
        TRY(kl_buf_printf(out,
                          "--" EST_MULTIPART_BOUNDARY "\r\n"
                          "Content-Type: %s\r\n"
                          "Content-Transfer-Encoding: base64\r\n\r\n",
                          parts[i].content_type));
        TRY(kl_buf_put(out, parts[i].data, parts[i].len));
        TRY(kl_buf_put_str(out, "\r\n"));
    }
    TRY(kl_buf_put_str(out, "--" EST_MULTIPART_BOUNDARY "--\r\n"));
out:
    if (rc != KL_OK) {
        out->len = start;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* certs-only PKCS#7                                                                         */

/* DER identifier + definite length. Lengths here stay far below 2^24 (the response cap). */
static kl_rc est_der_hdr(kl_buf *b, uint8_t tag, size_t n)
{
    uint8_t h[5];
    size_t k = 0;
    h[k++] = tag;
    if (n < 0x80) {
        h[k++] = (uint8_t)n;
    } else if (n <= 0xff) {
        h[k++] = 0x81;
        h[k++] = (uint8_t)n;
    } else if (n <= 0xffff) {
        h[k++] = 0x82;
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    } else if (n <= 0xffffff) {
        h[k++] = 0x83;
        h[k++] = (uint8_t)(n >> 16);
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    } else {
        return kl_fail(KL_EINTERNAL, "DER length %zu too large", n);
    }
    return kl_buf_put(b, h, k);
}

static size_t est_der_hdr_len(size_t n)
{
    return n < 0x80 ? 2 : n <= 0xff ? 3 : n <= 0xffff ? 4 : 5;
}

/* Written out directly rather than through OpenSSL's PKCS7 templates: the structure is fixed,
 * and this runs for every enrollment. The bytes are those i2d_PKCS7 produces for the same
 * content (the unit test compares them):
 *
 *   ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
 *   SignedData ::= SEQUENCE { version 1, digestAlgorithms SET {}, encapContentInfo SEQUENCE {
 *       id-data }, certificates [0] IMPLICIT (in the order given), signerInfos SET {} } */
kl_rc est_p7_certs_der(const uint8_t *const *certs, const size_t *lens, size_t n, kl_buf *der)
{
    static const uint8_t oid_signed[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                         0xf7, 0x0d, 0x01, 0x07, 0x02};
    /* version 1, digestAlgorithms SET {}, encapContentInfo SEQUENCE { id-data } */
    static const uint8_t sd_head[] = {0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x0b, 0x06, 0x09,
                                      0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01};
    static const uint8_t sd_tail[] = {0x31, 0x00}; /* signerInfos SET {} */
    kl_rc rc = KL_OK;
    size_t certs_len = 0;
    kl_buf out;
    kl_buf_init(&out, der->cap, 0);
    for (size_t i = 0; i < n; i++) {
        certs_len += lens[i];
    }
    size_t sd_len = sizeof sd_head + est_der_hdr_len(certs_len) + certs_len + sizeof sd_tail;
    size_t explicit_len = est_der_hdr_len(sd_len) + sd_len;
    size_t ci_len = sizeof oid_signed + est_der_hdr_len(explicit_len) + explicit_len;
    TRY(est_der_hdr(&out, 0x30, ci_len));
    TRY(kl_buf_put(&out, oid_signed, sizeof oid_signed));
    TRY(est_der_hdr(&out, 0xa0, explicit_len));
    TRY(est_der_hdr(&out, 0x30, sd_len));
    TRY(kl_buf_put(&out, sd_head, sizeof sd_head));
    TRY(est_der_hdr(&out, 0xa0, certs_len));
    for (size_t i = 0; i < n; i++) {
        TRY(kl_buf_put(&out, certs[i], lens[i]));
    }
    TRY(kl_buf_put(&out, sd_tail, sizeof sd_tail));
    TRY(kl_buf_put(der, out.data, out.len));
out:
    kl_buf_free(&out);
    return rc;
}

/* The certificates DER-encoded, a repeated one once, then est_p7_certs_der. */
kl_rc est_p7_certs_only(STACK_OF(X509) * certs, kl_buf *der)
{
    kl_rc rc = KL_OK;
    int total = certs ? sk_X509_num(certs) : 0;
    uint8_t **enc = calloc((size_t)(total > 0 ? total : 1), sizeof *enc);
    size_t *enc_len = calloc((size_t)(total > 0 ? total : 1), sizeof *enc_len);
    size_t n = 0;
    ENSURE(enc && enc_len, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < total; i++) {
        X509 *x = sk_X509_value(certs, i);
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) {
            dup = X509_cmp(x, sk_X509_value(certs, j)) == 0;
        }
        if (dup) {
            continue;
        }
        enc[n] = NULL;
        int l = i2d_X509(x, &enc[n]);
        ENSURE_SSL(l > 0, KL_EINTERNAL, "i2d_X509");
        enc_len[n] = (size_t)l;
        n++;
    }
    rc = est_p7_certs_der((const uint8_t *const *)enc, enc_len, n, der);
out:
    for (size_t i = 0; enc && i < n; i++) {
        OPENSSL_free(enc[i]);
    }
    free(enc);
    free(enc_len);
    return rc;
}

int est_etag_listed(const char *list, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = list;
    for (;;) {
        p += strspn(p, " \t,");
        if (!*p) {
            return 0;
        }
        if (*p == '*') {
            const char *q = p + 1 + strspn(p + 1, " \t");
            if (*q == ',' || !*q) {
                return 1;
            }
        }
        const char *t = strncmp(p, "W/", 2) == 0 ? p + 2 : p;
        const char *close = *t == '"' ? strchr(t + 1, '"') : NULL;
        const char *end = close ? close + 1 : p + strcspn(p, ",");
        const char *after = end + strspn(end, " \t");
        if (close && (*after == ',' || !*after) && (size_t)(end - t) == el &&
            memcmp(t, etag, el) == 0) {
            return 1;
        }
        p = end + strcspn(end, ",");
    }
}

/* "/crl/x.crl%00.txt" would be routed as "/crl/x.crl" with %00 decoded; left as its three
 * characters, it matches no route. */
size_t est_path_unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? kl_hex_digit(r[1]) : -1;
        int lo = hi >= 0 ? kl_hex_digit(r[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}
