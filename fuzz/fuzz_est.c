/* Fuzz the EST request parsers that see network input: request body decoding (base64 per
 * RFC 8951, with/without Content-Transfer-Encoding), route parsing, Basic credentials, media
 * types, HTTP-dates (If-Modified-Since), htpasswd text, the CSR challengePassword extraction,
 * If-None-Match lists and the path's percent-decoding. The first input byte picks the target so
 * one corpus covers them all. */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "est.h"

/* What must hold whatever the input: else the fuzzer stops here with the input. */
static void fz_assert(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_est: %s\n", what);
        abort();
    }
}

/* If-None-Match: the list names nothing or something; a list that is exactly one entity-tag,
 * or that tag after a "W/", names that tag. */
static void fz_etag(const char *text)
{
    static const char tag[] = "\"0123456789abcdef0123456789abcdef\"";
    int r = est_etag_listed(text, tag);
    fz_assert(r == 0 || r == 1, "est_etag_listed: not 0 or 1");
    size_t n = strlen(text);
    if (n >= 2 && n < 200 && text[0] == '"' && text[n - 1] == '"' &&
        !memchr(text + 1, '"', n - 2)) {
        char weak[208];
        snprintf(weak, sizeof weak, "W/%s", text);
        fz_assert(est_etag_listed(text, text) == 1 && est_etag_listed(weak, text) == 1,
                  "est_etag_listed: an entity-tag does not name itself");
    }
}

/* Percent-decoding of a path: never longer, no NUL inside, and %00 kept as it was. */
static void fz_unescape(const char *text)
{
    size_t in = strlen(text);
    char *s = strdup(text);
    if (!s) {
        return;
    }
    size_t out = est_path_unescape(s);
    fz_assert(out <= in && strlen(s) == out, "est_path_unescape: length");
    fz_assert(!strstr(text, "%00") || strstr(s, "%00"), "est_path_unescape: %00 decoded");
    free(s);
}

/* Routes. A refusal is no route. A CRL's name is the path between "/crl/" and ".crl": a label
 * or "L/K" (K at most EST_CRL_PART_MAX), with its NUL in the buffer; an OCSP GET's request is
 * the path after "/ocsp/" less at most the one '/' of a responder URL ending in '/'; an EST
 * label is a label. And every CA label keyline-ca can make is served, alone and with any
 * partition keyline-cad serves (found by hostile testing: 404 past 63 characters of "L/K"). */
static void fz_route(const char *text)
{
    est_route r;
    if (est_route_parse(text, &r) != KL_OK) {
        fz_assert(r.ep == EST_EP_OTHER && !r.label[0] && !r.ocsp_b64,
                  "est_route_parse: a route with a refusal");
    } else {
        size_t ll = strnlen(r.label, sizeof r.label);
        fz_assert(ll < sizeof r.label, "est_route_parse: label not terminated");
        const char *sl = strchr(r.label, '/');
        if (r.ep == EST_EP_CRL) {
            char path[sizeof r.label + 16];
            snprintf(path, sizeof path, "/crl/%s.crl", r.label);
            fz_assert(strcmp(path, text) == 0, "est_route_parse: a CRL name not the path's");
            fz_assert((sl ? (size_t)(sl - r.label) : ll) < EST_LABEL_MAX,
                      "est_route_parse: a CRL's CA label too long");
            fz_assert(!sl || (strlen(sl + 1) <= EST_CRL_PART_DIGITS && !strchr(sl + 1, '/') &&
                              strtoull(sl + 1, NULL, 10) <= EST_CRL_PART_MAX),
                      "est_route_parse: a partition keyline-cad does not serve");
        } else {
            fz_assert(ll < EST_LABEL_MAX && !sl, "est_route_parse: an EST label too long");
        }
        if (r.ocsp_b64) {
            size_t off = (size_t)(r.ocsp_b64 - text);
            fz_assert(r.ep == EST_EP_OCSP && strncmp(text, "/ocsp/", 6) == 0 &&
                          off == (text[6] == '/' ? 7u : 6u),
                      "est_route_parse: the OCSP request is not the path's");
        }
    }
    size_t n = strlen(text);
    if (n >= 1 && n < EST_LABEL_MAX &&
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") == n) {
        static const char *const parts[] = {"", "/0", "/9", "/10", "/1099511627776"};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            char path[128], name[96];
            snprintf(name, sizeof name, "%s%s", text, parts[i]);
            snprintf(path, sizeof path, "/crl/%s.crl", name);
            fz_assert(est_route_parse(path, &r) == KL_OK && r.ep == EST_EP_CRL &&
                          strcmp(r.label, name) == 0,
                      "est_route_parse: a CA label's CRL not served");
        }
    }
}

/* The result does not matter here, only that the call survives the input. */
static void fz_ignore(kl_rc rc)
{
    (void)rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t sel = data[0];
    data++;
    size--;
    char *text = malloc(size + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = 0;
    kl_buf a, b;
    kl_buf_init(&a, 64 * 1024, 0);
    kl_buf_init(&b, 64 * 1024, 1);
    switch (sel % 8) {
    case 0: fz_ignore(est_body_decode(data, size, NULL, &a)); break;
    case 1: fz_ignore(est_body_decode(data, size, "base64", &a)); break;
    case 2: fz_route(text); break;
    case 3: {
        time_t t = 0;
        fz_ignore(kl_basic_parse(text, &a, &b));
        (void)est_media_type_is(text, "application/pkcs10");
        (void)kl_http_date_parse(text, 1796515200, &t); /* If-Modified-Since */
        break;
    }
    case 4: {
        kl_htpasswd *h = NULL;
        if (kl_htpasswd_parse("fuzz", text, size, &h) == KL_OK) {
            (void)kl_htpasswd_count(h);
            kl_htpasswd_free(h);
        }
        break;
    }
    case 5: {
        const unsigned char *p = data;
        X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)size);
        if (req) {
            fz_ignore(est_csr_challenge_password(req, &a));
            X509_REQ_free(req);
        }
        break;
    }
    case 6: fz_etag(text); break;
    case 7: fz_unescape(text); break;
    }
    kl_buf_free(&a);
    kl_buf_free(&b);
    free(text);
    ERR_clear_error();
    return 0;
}
