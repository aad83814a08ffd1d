/* Unit tests: keyline-estd pure pieces (routing, media types, bodies, htpasswd, csrattrs,
 * multipart, certs-only PKCS#7, Basic credentials, config, channel binding inputs, metrics). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the standard headers it needs */
#include <cmocka.h>
#include <crypt.h>
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "est.h"
#include "kl_b64.h"

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */

static char *make_hash_cost(const char *prefix, unsigned long count, const char *password)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof setting));
    struct crypt_data *cd = calloc(1, sizeof *cd);
    assert_non_null(cd);
    const char *h = crypt_r(password, setting, cd);
    assert_non_null(h);
    assert_true(h[0] != '*');
    char *out = strdup(h);
    free(cd);
    return out;
}

static char *make_hash(const char *prefix, const char *password)
{
    /* low cost for bcrypt keeps the test fast; 0 = default for the others */
    return make_hash_cost(prefix, strcmp(prefix, "$2b$") == 0 ? 4 : 0, password);
}

static EVP_PKEY *make_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    return k;
}

static X509_REQ *make_csr(EVP_PKEY *k, const char *cn, const char *serial, const char *cp)
{
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    if (serial) {
        X509_NAME_add_entry_by_NID(n, NID_serialNumber, MBSTRING_ASC, (const unsigned char *)serial,
                                   -1, -1, 0);
    }
    X509_REQ_set_subject_name(r, n);
    X509_NAME_free(n);
    X509_REQ_set_pubkey(r, k);
    if (cp) {
        assert_int_equal(X509_REQ_add1_attr_by_NID(r, NID_pkcs9_challengePassword, MBSTRING_ASC,
                                                   (const unsigned char *)cp, -1),
                         1);
    }
    assert_true(X509_REQ_sign(r, k, EVP_sha256()) > 0);
    return r;
}

static X509 *make_cert(EVP_PKEY *k, const char *cn, long serial)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    return x;
}

/* ---------------------------------------------------------------------------------------- */
/* routing                                                                                  */

static void test_route_ops(void **state)
{
    (void)state;
    est_route r;
    struct {
        const char *path;
        est_endpoint ep;
        est_op op;
        const char *label;
    } ok[] = {
        {"/.well-known/est/cacerts", EST_EP_CACERTS, EST_OP_CACERTS, ""},
        {"/.well-known/est/simpleenroll", EST_EP_SIMPLEENROLL, EST_OP_SIMPLEENROLL, ""},
        {"/.well-known/est/simplereenroll", EST_EP_SIMPLEREENROLL, EST_OP_SIMPLEREENROLL, ""},
        {"/.well-known/est/csrattrs", EST_EP_CSRATTRS, EST_OP_CSRATTRS, ""},
        {"/.well-known/est/serverkeygen", EST_EP_SERVERKEYGEN, EST_OP_SERVERKEYGEN, ""},
        {"/.well-known/est/fullcmc", EST_EP_FULLCMC, EST_OP_FULLCMC, ""},
        {"/.well-known/est/acme/simpleenroll", EST_EP_SIMPLEENROLL, EST_OP_SIMPLEENROLL, "acme"},
        {"/.well-known/est/line-2_b.x/cacerts", EST_EP_CACERTS, EST_OP_CACERTS, "line-2_b.x"},
        {"/.well-known/est/cacerts/cacerts", EST_EP_CACERTS, EST_OP_CACERTS, "cacerts"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(est_route_parse(ok[i].path, &r), KL_OK);
        assert_int_equal(r.ep, ok[i].ep);
        assert_int_equal(r.op, ok[i].op);
        assert_string_equal(r.label, ok[i].label);
    }
}

static void test_route_other(void **state)
{
    (void)state;
    est_route r;
    assert_int_equal(est_route_parse("/healthz", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_HEALTHZ);
    assert_int_equal(est_route_parse("/metrics", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_METRICS);
    assert_int_equal(est_route_parse("/crl/field1.crl", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_CRL);
    assert_string_equal(r.label, "field1");
    /* partition K's CRL of CA L ([ca L] crl-partition-size): named "L/K" */
    assert_int_equal(est_route_parse("/crl/field1/0.crl", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_CRL);
    assert_string_equal(r.label, "field1/0");
    assert_int_equal(est_route_parse("/crl/a.b-c/120.crl", &r), KL_OK);
    assert_string_equal(r.label, "a.b-c/120");
    /* any CA label keyline-ca makes (CA_LABEL_MAX 63) and any partition keyline-cad serves (at
     * most 2^40): "L/K" is longer than a label (hostile testing: 404 past 63 characters) */
    char l63[64], path[128], name[96];
    memset(l63, 'a', 63);
    l63[63] = 0;
    const char *parts[] = {"0", "10", "999999999999", "1099511627776"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        for (size_t n = 61; n <= 63; n++) {
            snprintf(name, sizeof name, "%.*s/%s", (int)n, l63, parts[i]);
            snprintf(path, sizeof path, "/crl/%s.crl", name);
            assert_int_equal(est_route_parse(path, &r), KL_OK);
            assert_int_equal(r.ep, EST_EP_CRL);
            assert_string_equal(r.label, name);
        }
    }
    snprintf(path, sizeof path, "/crl/%s.crl", l63);
    assert_int_equal(est_route_parse(path, &r), KL_OK);
    assert_string_equal(r.label, l63);
    assert_int_equal(est_route_parse("/ocsp", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_OCSP);
    assert_null(r.ocsp_b64);
    assert_int_equal(est_route_parse("/ocsp/", &r), KL_OK);
    assert_null(r.ocsp_b64);
    assert_int_equal(est_route_parse("/ocsp/MEUw/Qz+a==", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_OCSP);
    assert_string_equal(r.ocsp_b64, "MEUw/Qz+a==");
    /* RFC 6960 A.1 GET {url}/{request} with the responder URL "/ocsp/": one '/' more (no
     * request's base64 starts with '/': its DER starts with 0x30, base64 'M') */
    assert_int_equal(est_route_parse("/ocsp//MEUw/Qz+a==", &r), KL_OK);
    assert_int_equal(r.ep, EST_EP_OCSP);
    assert_string_equal(r.ocsp_b64, "MEUw/Qz+a==");
    assert_int_equal(est_route_parse("/ocsp///MEUw", &r), KL_OK);
    assert_string_equal(r.ocsp_b64, "/MEUw"); /* one '/' only: malformed when decoded */
    assert_int_equal(est_route_parse("/ocsp//", &r), KL_OK);
    assert_string_equal(r.ocsp_b64, "");
}

static void test_route_not_found(void **state)
{
    (void)state;
    est_route r;
    const char *bad[] = {
        "/",
        "",
        "/.well-known/est/",
        "/.well-known/est",
        "/.well-known/est/nosuchop",
        "/.well-known/est/cacerts/",
        "/.well-known/est/a/b/cacerts",
        "/.well-known/est//cacerts",
        "/.well-known/est/bad label/cacerts",
        "/.well-known/est/bad%2flabel/cacerts",
        ("/.well-known/est/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/cacerts"),
        "/.well-known/est/acme/nosuchop",
        "/.well-known/EST/cacerts",
        "/crl/field1",
        "/crl/.crl",
        "/crl/../x.crl",
        "/crl/a/b.crl",
        "/crl/field1/01.crl",
        "/crl/field1/.crl",
        "/crl/field1/-1.crl",
        "/crl/field1/1/2.crl",
        "/crl//1.crl",
        "/crl/field 1/1.crl",
        "/crl/field1/1234567890123.crl",
        "/crl/field1/1099511627777.crl", /* past 2^40, keyline-cad's bound */
        "/crl/field1/10000000000000.crl",
        "/crl/field1/00000000000001.crl",
        "/crl/field1/1.crlx",
        ("/crl/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/1.crl"), /* 64 */
        ("/crl/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.crl"),
        "/healthz/",
        "/metricsx",
        "/ocspx",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(est_route_parse(bad[i], &r), KL_ENOTFOUND);
    }
    assert_int_equal(est_route_parse(NULL, &r), KL_ENOTFOUND);
    assert_string_equal(est_endpoint_name(EST_EP_SIMPLEREENROLL), "simplereenroll");
    assert_string_equal(est_endpoint_name((est_endpoint)99), "other");
}

/* ---------------------------------------------------------------------------------------- */
/* media types                                                                              */

static void test_media_type(void **state)
{
    (void)state;
    assert_true(est_media_type_is("application/pkcs10", "application/pkcs10"));
    assert_true(est_media_type_is("Application/PKCS10", "application/pkcs10"));
    assert_true(est_media_type_is("  application/pkcs10  ", "application/pkcs10"));
    assert_true(est_media_type_is("application/pkcs10; charset=binary", "application/pkcs10"));
    assert_true(est_media_type_is("application/pkcs10 ;x=y", "application/pkcs10"));
    assert_false(est_media_type_is("application/pkcs10x", "application/pkcs10"));
    assert_false(est_media_type_is("application/pkcs", "application/pkcs10"));
    assert_false(est_media_type_is("application/x-www-form-urlencoded", "application/pkcs10"));
    assert_false(est_media_type_is("", "application/pkcs10"));
    assert_false(est_media_type_is(NULL, "application/pkcs10"));
    assert_false(est_media_type_is("text/plain application/pkcs10", "application/pkcs10"));
}

/* ---------------------------------------------------------------------------------------- */
/* body decoding (RFC 8951)                                                                 */

static void decode_expect(const char *body, const char *cte, const uint8_t *want, size_t wlen)
{
    kl_buf out;
    kl_buf_init(&out, 65536, 0);
    assert_int_equal(est_body_decode((const uint8_t *)body, strlen(body), cte, &out), KL_OK);
    assert_int_equal(out.len, wlen);
    assert_memory_equal(out.data, want, wlen);
    kl_buf_free(&out);
}

static void test_body_variants(void **state)
{
    (void)state;
    uint8_t der[100];
    for (size_t i = 0; i < sizeof der; i++) {
        der[i] = (uint8_t)(i * 37 + 1);
    }
    kl_buf one, wrapped, crlf;
    kl_buf_init(&one, 4096, 0);
    kl_buf_init(&wrapped, 4096, 0);
    kl_buf_init(&crlf, 4096, 0);
    assert_int_equal(kl_b64_encode(der, sizeof der, 0, 0, &one), KL_OK);
    assert_int_equal(kl_b64_encode(der, sizeof der, 64, 0, &wrapped), KL_OK);
    assert_int_equal(kl_b64_encode(der, sizeof der, 76, 1, &crlf), KL_OK);
    const char *s1, *s2, *s3;
    assert_int_equal(kl_buf_cstr(&one, &s1), KL_OK);
    assert_int_equal(kl_buf_cstr(&wrapped, &s2), KL_OK);
    assert_int_equal(kl_buf_cstr(&crlf, &s3), KL_OK);

    decode_expect(s1, NULL, der, sizeof der);       /* single line, no newline */
    decode_expect(s2, NULL, der, sizeof der);       /* wrapped at 64, trailing newline */
    decode_expect(s3, "base64", der, sizeof der);   /* CRLF-wrapped, with CTE header */
    decode_expect(s1, " Base64 ", der, sizeof der); /* header case and spaces */
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\n", s1); /* trailing newline */
    decode_expect(buf, NULL, der, sizeof der);
    snprintf(buf, sizeof buf, "\r\n  %s\r\n\r\n", s1);
    decode_expect(buf, NULL, der, sizeof der);
    snprintf(buf, sizeof buf,
             "-----BEGIN CERTIFICATE REQUEST-----\n%s-----END CERTIFICATE REQUEST-----\n", s2);
    decode_expect(buf, NULL, der, sizeof der); /* PEM armour tolerated */
    /* a CTE the client got wrong (7bit) still means base64 (RFC 8951) */
    decode_expect(s1, "7bit", der, sizeof der);

    /* raw DER when the client says binary */
    kl_buf out;
    kl_buf_init(&out, 4096, 0);
    assert_int_equal(est_body_decode(der, sizeof der, "binary", &out), KL_OK);
    assert_int_equal(out.len, sizeof der);
    assert_memory_equal(out.data, der, sizeof der);
    kl_buf_free(&out);
    kl_buf_free(&one);
    kl_buf_free(&wrapped);
    kl_buf_free(&crlf);
}

static void test_body_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "\r\n",
        "   ",
        "MII*",
        "MIIB!AAA",
        "QQ===",
        "Q",
        "QQ=A",
        "-----BEGIN X-----\nQUFB\n", /* no END */
        "-----BEGIN X-----",         /* no newline */
        "\x30\x82\x01\x0a",          /* raw DER without CTE: binary */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kl_buf out;
        kl_buf_init(&out, 4096, 0);
        assert_int_equal(est_body_decode((const uint8_t *)bad[i], strlen(bad[i]), NULL, &out),
                         KL_EINPUT);
        assert_int_equal(out.len, 0);
        kl_buf_free(&out);
    }
    kl_buf out;
    kl_buf_init(&out, 4096, 0);
    assert_int_equal(est_body_decode((const uint8_t *)"", 0, "binary", &out), KL_EINPUT);
    kl_buf_free(&out);
    /* output cap respected */
    kl_buf_init(&out, 2, 0);
    assert_int_equal(est_body_decode((const uint8_t *)"QUFBQQ==", 8, NULL, &out), KL_EINPUT);
    kl_buf_free(&out);
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP Basic remembered per connection                                                      */

static void test_basic_remembered(void **state)
{
    (void)state;
    est_conn_auth ca;
    est_conn_auth_init(&ca);
    char user[128] = "";
    const char *hdr = "Basic Ym9vdHN0cmFwOnNlY3JldA==";
    assert_int_equal(est_basic_cached(&ca, hdr, user, sizeof user), 0); /* nothing yet */
    est_basic_remember(&ca, hdr, "bootstrap", est_basic_generation());
    assert_int_equal(est_basic_cached(&ca, hdr, user, sizeof user), 1);
    assert_string_equal(user, "bootstrap");
    /* not the password, nor the header: a keyed hash of it */
    assert_null(memmem(&ca, sizeof ca, "c2VjcmV0", 8));
    assert_null(memmem(&ca, sizeof ca, "Ym9vdHN0cmFwOnNlY3JldA", 22));
    /* another header (another password, other case, a byte more) is not the remembered one */
    assert_int_equal(est_basic_cached(&ca, "Basic Ym9vdHN0cmFwOnNlY3JldB==", user, sizeof user), 0);
    assert_int_equal(est_basic_cached(&ca, "basic Ym9vdHN0cmFwOnNlY3JldA==", user, sizeof user), 0);
    assert_int_equal(est_basic_cached(&ca, "Basic Ym9vdHN0cmFwOnNlY3JldA== ", user, sizeof user),
                     0);
    assert_int_equal(est_basic_cached(&ca, NULL, user, sizeof user), 0);
    assert_int_equal(est_basic_cached(NULL, hdr, user, sizeof user), 0);
    /* a reload of the password file forgets every remembered credential */
    est_basic_forget_all();
    assert_int_equal(est_basic_cached(&ca, hdr, user, sizeof user), 0);
    /* verified before the reload, remembered after it: not used */
    unsigned long old = est_basic_generation();
    est_basic_forget_all();
    est_basic_remember(&ca, hdr, "bootstrap", old);
    assert_int_equal(est_basic_cached(&ca, hdr, user, sizeof user), 0);
    est_conn_auth_free(&ca);
}

/* ---------------------------------------------------------------------------------------- */
/* htpasswd                                                                                 */

static void tkl_htpasswd_verify(void **state)
{
    (void)state;
    char *hy = make_hash("$y$", "yes-pass");
    char *hb = make_hash("$2b$", "bcrypt-pass");
    char *h6 = make_hash("$6$", "sha-pass");
    char text[2048];
    snprintf(text, sizeof text,
             "# bootstrap users\r\n"
             "\n"
             "alice:%s\r\n"
             "  bob:%s   \n"
             "carol:%s",
             hy, hb, h6);
    kl_htpasswd *h = NULL;
    assert_int_equal(kl_htpasswd_parse("test", text, strlen(text), &h), KL_OK);
    assert_int_equal(kl_htpasswd_count(h), 3);
    assert_int_equal(kl_htpasswd_verify(h, "alice", "yes-pass"), KL_OK);
    assert_int_equal(kl_htpasswd_verify(h, "bob", "bcrypt-pass"), KL_OK);
    assert_int_equal(kl_htpasswd_verify(h, "carol", "sha-pass"), KL_OK);
    assert_int_equal(kl_htpasswd_verify(h, "alice", "yes-pass "), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "alice", ""), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "bob", "sha-pass"), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "dave", "yes-pass"), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "Alice", "yes-pass"), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "", "x"), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, NULL, NULL), KL_EAUTH);
    kl_htpasswd_free(h);

    /* an empty file is valid and refuses everyone */
    assert_int_equal(kl_htpasswd_parse("empty", "", 0, &h), KL_OK);
    assert_int_equal(kl_htpasswd_count(h), 0);
    assert_int_equal(kl_htpasswd_verify(h, "alice", "yes-pass"), KL_EAUTH);
    kl_htpasswd_free(h);
    free(hy);
    free(hb);
    free(h6);
}

/* The kind and cost of a hash as this test makes them: "$2b$04$", "$6$" (default rounds),
 * "$y$j9T$". */
static size_t cost_len(const char *hash)
{
    if (hash[1] == '2') {
        return 7;
    }
    if (hash[1] == '6') {
        return 3;
    }
    return (size_t)(strchr(hash + 3, '$') - hash) + 1;
}

/* The same kinds and costs, each once, in both plans (order aside). */
static void assert_same_costs(const char **a, size_t na, const char **b, size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        size_t hits = 0, dup = 0;
        for (size_t j = 0; j < nb; j++) {
            hits += cost_len(a[i]) == cost_len(b[j]) && !strncmp(a[i], b[j], cost_len(a[i]));
            dup += cost_len(a[i]) == cost_len(a[j]) && !strncmp(a[i], a[j], cost_len(a[i]));
        }
        assert_int_equal(hits, 1);
        assert_int_equal(dup, 1);
    }
}

/* A failed check costs the same for an unknown user and for a known one with a wrong password,
 * whatever kinds and costs the file mixes: one hash of each (hostile test: with one stand-in
 * hash for unknown users, a mixed file told which users exist by a 15x difference in time). */
static void tkl_htpasswd_fail_plan(void **state)
{
    (void)state;
    char *hy = make_hash("$y$", "yes-pass");
    char *hy2 = make_hash("$y$", "other-pass"); /* same kind and cost as hy */
    char *hb4 = make_hash_cost("$2b$", 4, "bcrypt-pass");
    char *hb5 = make_hash_cost("$2b$", 5, "bcrypt5-pass"); /* same kind, another cost */
    char *h6 = make_hash("$6$", "sha-pass");
    char text[4096];
    snprintf(text, sizeof text, "alice:%s\nbob:%s\ncarol:%s\ndan:%s\nerin:%s\n", hy, hb4, h6, hy2,
             hb5);
    kl_htpasswd *h = NULL;
    assert_int_equal(kl_htpasswd_parse("test", text, strlen(text), &h), KL_OK);
    const char *unknown[KL_HTPASSWD_COSTS_MAX], *known[KL_HTPASSWD_COSTS_MAX];
    size_t nu = kl_htpasswd_fail_plan(h, "mallory", unknown);
    assert_int_equal(nu, 4); /* $y$, $2b$04$, $6$, $2b$05$ */
    const char *users[] = {"alice", "bob", "carol", "dan", "erin"};
    const char *own[] = {hy, hb4, h6, hy2, hb5};
    for (size_t u = 0; u < 5; u++) {
        size_t nk = kl_htpasswd_fail_plan(h, users[u], known);
        assert_string_equal(known[0], own[u]); /* the user's own line first */
        assert_same_costs(unknown, nu, known, nk);
    }
    size_t nn = kl_htpasswd_fail_plan(h, NULL, known);
    assert_same_costs(unknown, nu, known, nn);
    /* and verify computes the whole plan on a failure, only the user's own hash on a success */
    uint64_t h0 = kl_htpasswd_hashes();
    assert_int_equal(kl_htpasswd_verify(h, "mallory", "yes-pass"), KL_EAUTH);
    uint64_t h1 = kl_htpasswd_hashes();
    assert_int_equal(kl_htpasswd_verify(h, "dan", "wrong"), KL_EAUTH);
    uint64_t h2 = kl_htpasswd_hashes();
    assert_int_equal(kl_htpasswd_verify(h, "dan", "other-pass"), KL_OK);
    uint64_t h3 = kl_htpasswd_hashes();
    assert_int_equal(h1 - h0, nu);
    assert_int_equal(h2 - h1, nu);
    assert_int_equal(h3 - h2, 1);
    assert_int_equal(kl_htpasswd_verify(h, "erin", "bcrypt5-pass"), KL_OK);
    assert_int_equal(kl_htpasswd_verify(h, "dan", "other-pass"), KL_OK);
    assert_int_equal(kl_htpasswd_verify(h, "dan", "yes-pass"), KL_EAUTH);
    assert_int_equal(kl_htpasswd_verify(h, "mallory", "yes-pass"), KL_EAUTH);
    kl_htpasswd_free(h);

    /* one kind and cost: a failure costs one hash */
    snprintf(text, sizeof text, "alice:%s\ndan:%s\n", hy, hy2);
    assert_int_equal(kl_htpasswd_parse("test", text, strlen(text), &h), KL_OK);
    assert_int_equal(kl_htpasswd_fail_plan(h, "mallory", unknown), 1);
    assert_int_equal(kl_htpasswd_fail_plan(h, "dan", known), 1);
    assert_string_equal(known[0], hy2);
    kl_htpasswd_free(h);

    /* an empty file and no file: one hash still */
    assert_int_equal(kl_htpasswd_parse("empty", "", 0, &h), KL_OK);
    assert_int_equal(kl_htpasswd_fail_plan(h, "alice", unknown), 1);
    assert_int_equal(strncmp(unknown[0], "$y$", 3), 0);
    kl_htpasswd_free(h);
    assert_int_equal(kl_htpasswd_fail_plan(NULL, "alice", unknown), 1);
    h = NULL;

    /* more kinds and costs than KL_HTPASSWD_COSTS_MAX: refused, naming the line's user */
    size_t off = 0;
    char *many[KL_HTPASSWD_COSTS_MAX + 1];
    for (unsigned long i = 0; i <= KL_HTPASSWD_COSTS_MAX; i++) {
        many[i] = make_hash_cost("$6$", 1000 + i, "p");
        off += (size_t)snprintf(text + off, sizeof text - off, "u%lu:%s\n", i, many[i]);
    }
    assert_int_equal(kl_htpasswd_parse("many", text, strlen(text), &h), KL_EINPUT);
    assert_null(h);
    assert_non_null(strstr(kl_errmsg(), "user u8: more than 8 kinds and costs"));
    for (size_t i = 0; i <= KL_HTPASSWD_COSTS_MAX; i++) {
        free(many[i]);
    }
    free(hy);
    free(hy2);
    free(hb4);
    free(hb5);
    free(h6);
}

/* If-None-Match (RFC 9110 13.1.2): "*", lists, weak comparison; no entity-tag names nothing. */
static void test_etag_listed(void **state)
{
    (void)state;
    const char *tag = "\"abc\"";
    assert_int_equal(est_etag_listed(tag, tag), 1);
    assert_int_equal(est_etag_listed("W/\"abc\"", tag), 1);
    assert_int_equal(est_etag_listed("\"x\", W/\"abc\" ,\"y\"", tag), 1);
    assert_int_equal(est_etag_listed("*", tag), 1);
    assert_int_equal(est_etag_listed(" * , \"x\"", tag), 1);
    assert_int_equal(est_etag_listed("\"x\", \"y\"", tag), 0);
    assert_int_equal(est_etag_listed("W/W/\"abc\"", tag), 0);
    assert_int_equal(est_etag_listed("\"abc\"\"abc\"", tag), 0);
    assert_int_equal(est_etag_listed("abc", tag), 0);
    assert_int_equal(est_etag_listed("\"abc", tag), 0);
    assert_int_equal(est_etag_listed("*x", tag), 0);
    assert_int_equal(est_etag_listed("", tag), 0);
}

/* The path's percent-decoding: as usual, but %00 stays as it is. */
static void test_path_unescape(void **state)
{
    (void)state;
    char a[] = "/crl/a%2Fb%41%zz%4";
    assert_int_equal(est_path_unescape(a), strlen("/crl/a/bA%zz%4"));
    assert_string_equal(a, "/crl/a/bA%zz%4");
    char b[] = "/crl/x.crl%00.txt";
    assert_int_equal(est_path_unescape(b), strlen("/crl/x.crl%00.txt"));
    assert_string_equal(b, "/crl/x.crl%00.txt");
}

static void tkl_htpasswd_bad(void **state)
{
    (void)state;
    char *hy = make_hash("$y$", "p");
    char *h6 = make_hash("$6$", "p");
    char dup[1024], rounds_nosalt[256];
    snprintf(dup, sizeof dup, "a:%s\na:%s\n", hy, hy);
    snprintf(rounds_nosalt, sizeof rounds_nosalt, "a:$6$rounds=900000$%s", strrchr(h6, '$') + 1);
    const char *bad[] = {
        "alice",                                    /* no colon */
        ":$6$abc$def",                              /* no user */
        "alice:",                                   /* no hash */
        "alice:secret",                             /* plain text */
        "alice:$1$abcdefgh$4r9KVs0zmkHXk1cjoZuMa.", /* md5crypt refused */
        "alice:$apr1$abc$def",                      /* Apache MD5 refused */
        "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  /* unsalted SHA-1 refused */
        "alice:$y$",                                /* truncated */
        rounds_nosalt,                              /* rounds, no salt: not default rounds */
        dup,                                        /* duplicate user */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kl_htpasswd *h = NULL;
        assert_int_equal(kl_htpasswd_parse("bad", bad[i], strlen(bad[i]), &h), KL_EINPUT);
        assert_null(h);
        assert_non_null(strstr(kl_errmsg(), "bad:"));
    }
    free(hy);
    free(h6);
}

/* ---------------------------------------------------------------------------------------- */
/* Basic credentials                                                                        */

static int basic(const char *hdr, char *u, char *p)
{
    kl_buf user, pass;
    kl_buf_init(&user, 256, 0);
    kl_buf_init(&pass, 256, 1);
    kl_rc rc = kl_basic_parse(hdr, &user, &pass);
    if (rc == KL_OK) {
        strcpy(u, (const char *)user.data);
        strcpy(p, (const char *)pass.data);
    }
    kl_buf_free(&user);
    kl_buf_free(&pass);
    return rc;
}

static void tkl_basic_parse(void **state)
{
    (void)state;
    char u[256], p[256];
    assert_int_equal(basic("Basic dXNlcjpwYXNz", u, p), KL_OK); /* user:pass */
    assert_string_equal(u, "user");
    assert_string_equal(p, "pass");
    assert_int_equal(basic("basic   dXNlcjpwYXNz  ", u, p), KL_OK);
    assert_int_equal(basic("Basic YTpiOmM=", u, p), KL_OK); /* a:b:c */
    assert_string_equal(u, "a");
    assert_string_equal(p, "b:c");
    assert_int_equal(basic("Basic dXNlcjo=", u, p), KL_OK); /* user: (empty password) */
    assert_string_equal(p, "");
    assert_int_equal(basic(NULL, u, p), KL_ENOTFOUND);
    assert_int_equal(basic("Bearer abc", u, p), KL_ENOTFOUND);
    assert_int_equal(basic("Basicx dXNlcjpwYXNz", u, p), KL_ENOTFOUND);
    assert_int_equal(basic("Basic ", u, p), KL_EINPUT);
    assert_int_equal(basic("Basic dXNlcg==", u, p), KL_EINPUT); /* no colon */
    assert_int_equal(basic("Basic OnBhc3M=", u, p), KL_EINPUT); /* :pass, no user */
    assert_int_equal(basic("Basic !!!!", u, p), KL_EINPUT);
    assert_int_equal(basic("Basic dQp4OnA=", u, p), KL_EINPUT); /* control char */
}

/* RFC 9110 5.6.7: the three forms of the same instant, the two-digit year's window, and what
 * is not an HTTP-date (ignored by a conditional GET). */
static void tkl_http_date(void **state)
{
    (void)state;
    const time_t when = 784111777; /* 1994-11-06 08:49:37 UTC, RFC 9110's example */
    const time_t now = 1796515200; /* 2026-12-06 */
    time_t t = 0;
    assert_int_equal(kl_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", now, &t), 1);
    assert_int_equal(t, when);
    t = 0;
    assert_int_equal(kl_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", now, &t), 1);
    assert_int_equal(t, when);
    t = 0;
    assert_int_equal(kl_http_date_parse("Sun Nov  6 08:49:37 1994", now, &t), 1);
    assert_int_equal(t, when);
    /* 69 is 43 years ahead of 2026: 2069, not 1969 (the C library's own window) */
    assert_int_equal(kl_http_date_parse("Wednesday, 06-Nov-69 08:49:37 GMT", now, &t), 1);
    assert_int_equal(t, (time_t)3150953377);
    /* 77 is 51 years ahead: the century before */
    assert_int_equal(kl_http_date_parse("Sunday, 06-Nov-77 08:49:37 GMT", now, &t), 1);
    assert_int_equal(t, (time_t)247654177);
    char buf[40];
    kl_http_date_format(when, buf, sizeof buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    const char *bad[] = {NULL,
                         "",
                         "yesterday",
                         "Sun, 06 Nov 1994 08:49:37 GMT junk",
                         "Sun, 06 Nov 1994 08:49:37",
                         "Sun, 06 Nov 1994 25:49:37 GMT",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "1994-11-06T08:49:37Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = 42;
        assert_int_equal(kl_http_date_parse(bad[i], now, &t), 0);
        assert_int_equal(t, 42);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* csrattrs                                                                                 */

static void test_csrattrs(void **state)
{
    (void)state;
    kl_buf der;
    kl_buf_init(&der, 4096, 0);
    est_csrattrs_in in = {.key_nid = NID_X9_62_prime256v1, .want_serial = 1, .want_challenge = 1};
    assert_int_equal(est_csrattrs_encode(&in, &der), KL_OK);
    static const uint8_t want[] = {
        0x30, 0x31, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
        0x07,                                                 /* challengePassword */
        0x30, 0x15,                                           /* Attribute */
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, /* id-ecPublicKey */
        0x31, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, /* P-256 */
        0x06, 0x03, 0x55, 0x04, 0x05,                                           /* serialNumber */
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, /* ecdsa-with-SHA256 */
    };
    assert_int_equal(der.len, sizeof want);
    assert_memory_equal(der.data, want, sizeof want);
    /* and OpenSSL reads it as a SEQUENCE of 4 */
    const unsigned char *p = der.data;
    ASN1_SEQUENCE_ANY *seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)der.len);
    assert_non_null(seq);
    assert_int_equal(sk_ASN1_TYPE_num(seq), 4);
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);

    /* RSA-3072, no serial, no challenge */
    kl_buf_reset(&der);
    est_csrattrs_in rsa = {.key_nid = NID_rsaEncryption, .rsa_bits = 3072};
    assert_int_equal(est_csrattrs_encode(&rsa, &der), KL_OK);
    static const uint8_t want_rsa[] = {
        0x30, 0x1e, 0x30, 0x11, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
        0x0d, 0x01, 0x01, 0x01, 0x31, 0x04, 0x02, 0x02, 0x0c, 0x00, /* { rsaEncryption, SET { 3072 }
                                                                       } */
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, /* sha256WithRSA */
    };
    assert_int_equal(der.len, sizeof want_rsa);
    assert_memory_equal(der.data, want_rsa, sizeof want_rsa);
    p = der.data;
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)der.len);
    assert_non_null(seq);
    assert_int_equal(sk_ASN1_TYPE_num(seq), 2); /* Attribute + sha256WithRSAEncryption */
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);

    /* P-384 */
    kl_buf_reset(&der);
    est_csrattrs_in p384 = {.key_nid = NID_secp384r1};
    assert_int_equal(est_csrattrs_encode(&p384, &der), KL_OK);
    static const uint8_t secp384r1[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    int found = 0;
    for (size_t i = 0; i + sizeof secp384r1 <= der.len; i++) {
        found |= memcmp(der.data + i, secp384r1, sizeof secp384r1) == 0;
    }
    assert_true(found);

    /* nothing wanted: an empty SEQUENCE */
    kl_buf_reset(&der);
    est_csrattrs_in none = {0};
    assert_int_equal(est_csrattrs_encode(&none, &der), KL_OK);
    assert_int_equal(der.len, 2);
    assert_int_equal(der.data[0], 0x30);
    assert_int_equal(der.data[1], 0x00);
    kl_buf_free(&der);
}

/* ---------------------------------------------------------------------------------------- */
/* multipart, PKCS#7                                                                        */

static void test_multipart(void **state)
{
    (void)state;
    kl_buf out;
    kl_buf_init(&out, 65536, 0);
    const char *k = "TUlJQmtleQ==\n", *c = "TUlJQ2NlcnQ=\n";
    est_part parts[2] = {
        {"application/pkcs8", (const uint8_t *)k, strlen(k)},
        {"application/pkcs7-mime; smime-type=certs-only", (const uint8_t *)c, strlen(c)}};
    assert_int_equal(est_multipart_build(parts, 2, &out), KL_OK);
    const char *s;
    assert_int_equal(kl_buf_cstr(&out, &s), KL_OK);
    const char *want = "--keyline_est_part\r\n"
                       "Content-Type: application/pkcs8\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n"
                       "TUlJQmtleQ==\n\r\n"
                       "--keyline_est_part\r\n"
                       "Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n"
                       "TUlJQ2NlcnQ=\n\r\n"
                       "--keyline_est_part--\r\n";
    assert_string_equal(s, want);
    /* a part holding the boundary is refused, the buffer left as it was */
    kl_buf_reset(&out);
    const char *evil = "abc--keyline_est_part--";
    est_part bad = {"text/plain", (const uint8_t *)evil, strlen(evil)};
    assert_int_equal(est_multipart_build(&bad, 1, &out), KL_EINTERNAL);
    assert_int_equal(out.len, 0);
    kl_buf_free(&out);
}

/* What OpenSSL's own PKCS7 templates make of the same certificates (the reference encoding
 * est_p7_certs_only must reproduce byte for byte). */
static int ossl_p7_certs_only(X509 **certs, int n, uint8_t **der)
{
    PKCS7 *p7 = PKCS7_new();
    PKCS7_SIGNED *sd = PKCS7_SIGNED_new();
    assert_non_null(p7);
    assert_non_null(sd);
    p7->type = OBJ_nid2obj(NID_pkcs7_signed);
    p7->d.sign = sd;
    sd->contents->type = OBJ_nid2obj(NID_pkcs7_data);
    assert_true(ASN1_INTEGER_set(sd->version, 1));
    sd->cert = sk_X509_new_null();
    for (int i = 0; i < n; i++) {
        X509_up_ref(certs[i]);
        sk_X509_push(sd->cert, certs[i]);
    }
    *der = NULL;
    int len = i2d_PKCS7(p7, der);
    PKCS7_free(p7);
    return len;
}

static void p7_same_as_openssl(STACK_OF(X509) * sk, X509 **want, int n)
{
    kl_buf der;
    kl_buf_init(&der, 1 << 20, 0);
    assert_int_equal(est_p7_certs_only(sk, &der), KL_OK);
    uint8_t *ref = NULL;
    int rlen = ossl_p7_certs_only(want, n, &ref);
    assert_true(rlen > 0);
    assert_int_equal(der.len, (size_t)rlen);
    assert_memory_equal(der.data, ref, (size_t)rlen);
    OPENSSL_free(ref);
    kl_buf_free(&der);
}

static void test_p7_certs_only(void **state)
{
    (void)state;
    EVP_PKEY *k = make_key();
    X509 *a = make_cert(k, "A", 1), *b = make_cert(k, "B", 2);
    STACK_OF(X509) *sk = sk_X509_new_null();
    sk_X509_push(sk, a);
    sk_X509_push(sk, b);
    sk_X509_push(sk, a); /* duplicate dropped */
    kl_buf der;
    kl_buf_init(&der, 65536, 0);
    assert_int_equal(est_p7_certs_only(sk, &der), KL_OK);
    const unsigned char *p = der.data;
    PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)der.len);
    assert_non_null(p7);
    assert_ptr_equal(p, der.data + der.len);
    assert_true(PKCS7_type_is_signed(p7));
    assert_int_equal(sk_X509_num(p7->d.sign->cert), 2);
    assert_int_equal(sk_PKCS7_SIGNER_INFO_num(p7->d.sign->signer_info), 0);
    assert_int_equal(X509_cmp(sk_X509_value(p7->d.sign->cert, 0), a), 0);
    assert_int_equal(X509_cmp(sk_X509_value(p7->d.sign->cert, 1), b), 0);
    PKCS7_free(p7);
    /* est_p7_certs_der (the enrollment answer, from keyline-cad's DER): the same bytes */
    uint8_t *da = NULL, *db = NULL;
    size_t lens[2] = {(size_t)i2d_X509(a, &da), (size_t)i2d_X509(b, &db)};
    const uint8_t *two[2] = {da, db};
    kl_buf der2;
    kl_buf_init(&der2, 65536, 0);
    assert_int_equal(est_p7_certs_der(two, lens, 2, &der2), KL_OK);
    assert_int_equal(der2.len, der.len);
    assert_memory_equal(der2.data, der.data, der.len);
    kl_buf_free(&der2);
    OPENSSL_free(da);
    OPENSSL_free(db);
    /* empty set is still a valid structure */
    kl_buf_reset(&der);
    assert_int_equal(est_p7_certs_only(NULL, &der), KL_OK);
    p = der.data;
    p7 = d2i_PKCS7(NULL, &p, (long)der.len);
    assert_non_null(p7);
    PKCS7_free(p7);
    /* byte for byte what i2d_PKCS7 makes: none, one, two, many (long-form lengths of every
     * size), duplicates dropped */
    X509 *want[40];
    want[0] = a;
    want[1] = b;
    p7_same_as_openssl(sk, want, 2);
    p7_same_as_openssl(NULL, want, 0);
    STACK_OF(X509) *many = sk_X509_new_null();
    for (int i = 0; i < 40; i++) {
        char cn[16];
        snprintf(cn, sizeof cn, "C%d", i);
        want[i] = make_cert(k, cn, 100 + i);
        sk_X509_push(many, want[i]);
        p7_same_as_openssl(many, want, i + 1);
    }
    X509_up_ref(want[3]); /* the stack owns a second reference: pop_free frees both */
    sk_X509_push(many, want[3]);
    p7_same_as_openssl(many, want, 40);
    /* a full output buffer leaves it as it was */
    kl_buf small;
    kl_buf_init(&small, 100, 0);
    assert_int_equal(kl_buf_put(&small, "x", 1), KL_OK);
    assert_int_not_equal(est_p7_certs_only(many, &small), KL_OK);
    assert_int_equal(small.len, 1);
    kl_buf_free(&small);
    sk_X509_pop_free(many, X509_free);
    sk_X509_free(sk);
    X509_free(a);
    X509_free(b);
    EVP_PKEY_free(k);
    kl_buf_free(&der);
}

/* ---------------------------------------------------------------------------------------- */
/* CSR attributes, channel binding inputs, names                                             */

static void test_challenge_password(void **state)
{
    (void)state;
    EVP_PKEY *k = make_key();
    X509_REQ *with = make_csr(k, "dev", "SN123", "dGxzLXVuaXF1ZQ==");
    X509_REQ *without = make_csr(k, "dev", NULL, NULL);
    kl_buf cp;
    kl_buf_init(&cp, 1024, 1);
    assert_int_equal(est_csr_challenge_password(with, &cp), KL_OK);
    assert_int_equal(cp.len, strlen("dGxzLXVuaXF1ZQ=="));
    assert_memory_equal(cp.data, "dGxzLXVuaXF1ZQ==", cp.len);
    kl_buf_reset(&cp);
    assert_int_equal(est_csr_challenge_password(without, &cp), KL_ENOTFOUND);
    kl_buf_free(&cp);

    /* off: anything passes; optional: absent passes, present needs a session; required:
     * absent refused */
    assert_int_equal(est_channel_binding_check(EST_CB_OFF, with, NULL), KL_OK);
    assert_int_equal(est_channel_binding_check(EST_CB_OFF, without, NULL), KL_OK);
    assert_int_equal(est_channel_binding_check(EST_CB_OPTIONAL, without, NULL), KL_OK);
    assert_int_equal(est_channel_binding_check(EST_CB_OPTIONAL, with, NULL), KL_EAUTH);
    assert_int_equal(est_channel_binding_check(EST_CB_REQUIRED, without, NULL), KL_EAUTH);
    assert_int_equal(est_channel_binding_check(EST_CB_REQUIRED, with, NULL), KL_EAUTH);

    char *sn = est_name_serial_number(X509_REQ_get_subject_name(with));
    assert_non_null(sn);
    assert_string_equal(sn, "SN123");
    free(sn);
    assert_null(est_name_serial_number(X509_REQ_get_subject_name(without)));
    char one[128];
    est_name_oneline(X509_REQ_get_subject_name(with), one, sizeof one);
    assert_string_equal(one, "serialNumber=SN123,CN=dev");
    est_name_oneline(X509_REQ_get_subject_name(with), one, 8); /* truncates safely */
    assert_int_equal(strlen(one), 7);
    X509_REQ_free(with);
    X509_REQ_free(without);
    EVP_PKEY_free(k);
}

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                   */

static void test_hostport(void **state)
{
    (void)state;
    char h[64];
    uint16_t port;
    assert_int_equal(kl_hostport_parse("127.0.0.1:8443", h, sizeof h, &port), KL_OK);
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(port, 8443);
    assert_int_equal(kl_hostport_parse("[::1]:8443", h, sizeof h, &port), KL_OK);
    assert_string_equal(h, "::1");
    assert_int_equal(kl_hostport_parse(":80", h, sizeof h, &port), KL_OK);
    assert_string_equal(h, "");
    assert_int_equal(kl_hostport_parse("localhost:1", h, sizeof h, &port), KL_OK);
    const char *bad[] = {"",         "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                         "::1:8443", "[::1]8443", "[::1",       "host:80x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(kl_hostport_parse(bad[i], h, sizeof h, &port), KL_EUSAGE);
    }
    assert_int_equal(kl_hostport_parse(NULL, h, sizeof h, &port), KL_EUSAGE);
}

static void test_config(void **state)
{
    (void)state;
    kl_conf *c = kl_conf_new("/etc/keyline");
    assert_int_equal(kl_conf_set(c, "est", "listen", "[::1]:9443"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "tls-cert", "est-server.pem"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "tls-key", "pkcs11:token=t;object=tls"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "issuer", "field1"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "client-ca", "factory1  field1"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "channel-binding", "optional"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "htpasswd", "est.htpasswd"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "max-body", "2048"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est.label acme", "template", "device-idevid"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est.label line2", "issuer", "factory1"), KL_OK);
    est_config cfg;
    assert_int_equal(est_config_load(c, &cfg), KL_OK);
    assert_string_equal(cfg.listen, "[::1]:9443");
    assert_string_equal(cfg.tls_cert, "/etc/keyline/est-server.pem");
    assert_string_equal(cfg.tls_key, "pkcs11:token=t;object=tls");
    assert_string_equal(cfg.htpasswd, "/etc/keyline/est.htpasswd");
    assert_null(cfg.http_listen);
    assert_int_equal(cfg.n_client_ca, 2);
    assert_string_equal(cfg.client_ca[1], "field1");
    assert_int_equal(cfg.channel_binding, EST_CB_OPTIONAL);
    assert_int_equal(cfg.max_body, 2048);
    assert_int_equal(cfg.timeout, 30);
    /* slowloris defaults: a per-address limit and a whole-request deadline */
    assert_int_equal(cfg.per_ip_connections, 64);
    assert_int_equal(cfg.request_timeout, 30);
    assert_true(cfg.serverkeygen);
    assert_int_equal(cfg.n_labels, 3);
    const est_label *l = est_config_label(&cfg, NULL);
    assert_non_null(l);
    assert_string_equal(l->issuer, "field1");
    assert_string_equal(l->template_name, "device-ldevid");
    l = est_config_label(&cfg, "acme");
    assert_string_equal(l->issuer, "field1");
    assert_string_equal(l->template_name, "device-idevid");
    l = est_config_label(&cfg, "line2");
    assert_string_equal(l->issuer, "factory1");
    assert_null(est_config_label(&cfg, "nope"));
    /* keyline-cad: the profiles it derives from [est] and [est.label], its socket */
    assert_string_equal(est_config_label(&cfg, NULL)->profile, "est");
    assert_string_equal(est_config_label(&cfg, "acme")->profile, "est.acme");
    assert_string_equal(cfg.cad, EST_CAD_SOCKET_DEFAULT);
    assert_int_equal(cfg.cad_timeout, 30);
    assert_null(cfg.tls_key_pin);
    est_config_free(&cfg);
    /* [cad] socket is read (one file for both daemons); [est] cad wins; explicit profiles */
    assert_int_equal(kl_conf_set(c, "cad", "socket", "run/cad.sock"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est.label line2", "profile", "line2-ldevid"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "tls-key-pin", "file:tls.pin"), KL_OK);
    assert_int_equal(kl_conf_set(c, "hsm", "module", "/usr/lib/softhsm/libsofthsm2.so"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_OK);
    assert_string_equal(cfg.cad, "/etc/keyline/run/cad.sock");
    assert_string_equal(est_config_label(&cfg, "line2")->profile, "line2-ldevid");
    assert_string_equal(cfg.tls_key_pin, "file:tls.pin"); /* a spec, read when GnuTLS asks */
    assert_string_equal(cfg.tls_key_module, "/usr/lib/softhsm/libsofthsm2.so");
    est_config_free(&cfg);
    assert_int_equal(kl_conf_set(c, "est", "cad", "/run/other.sock"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_OK);
    assert_string_equal(cfg.cad, "/run/other.sock");
    est_config_free(&cfg);
    /* the signer processes' keys: accepted (any value), named for one warning */
    char obs[128];
    est_config_obsolete(c, obs, sizeof obs);
    assert_string_equal(obs, "");
    assert_int_equal(kl_conf_set(c, "est", "signer", "thread"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "ca-keys", "some"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_OK);
    est_config_free(&cfg);
    est_config_obsolete(c, obs, sizeof obs);
    assert_string_equal(obs, "[est] signer, [est] ca-keys");

    /* bad values */
    assert_int_equal(kl_conf_set(c, "est", "channel-binding", "maybe"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_EUSAGE);
    assert_int_equal(kl_conf_set(c, "est", "channel-binding", "required"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "max-body", "12"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_EINPUT);
    assert_int_equal(kl_conf_set(c, "est", "max-body", "4096"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "request-timeout", "0"), KL_OK);
    assert_int_not_equal(est_config_load(c, &cfg), KL_OK); /* no deadline is not an option */
    assert_int_equal(kl_conf_set(c, "est", "request-timeout", "3601"), KL_OK);
    assert_int_not_equal(est_config_load(c, &cfg), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "request-timeout", "5"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "max-connections-per-ip", "0"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_OK); /* 0: no per-address limit, on purpose */
    assert_int_equal(cfg.request_timeout, 5);
    assert_int_equal(cfg.per_ip_connections, 0);
    est_config_free(&cfg);
    assert_int_equal(kl_conf_set(c, "est", "listen", "8443"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_EUSAGE);
    assert_int_equal(kl_conf_set(c, "est", "listen", "127.0.0.1:8443"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est.label bad label", "issuer", "x"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_EUSAGE);
    kl_conf_free(c);

    c = kl_conf_new("/tmp");
    assert_int_equal(kl_conf_set(c, "est", "tls-cert", "a.pem"), KL_OK);
    assert_int_equal(kl_conf_set(c, "est", "tls-key", "a.key"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_EUSAGE); /* no issuer */
    /* a profile instead: keyline-cad knows its issuer */
    assert_int_equal(kl_conf_set(c, "est", "profile", "ldevid"), KL_OK);
    assert_int_equal(est_config_load(c, &cfg), KL_OK);
    assert_string_equal(cfg.labels[0].profile, "ldevid");
    assert_null(cfg.labels[0].issuer);
    est_config_free(&cfg);
    kl_conf_free(c);
}

/* ---------------------------------------------------------------------------------------- */
/* metrics                                                                                  */

static void test_metrics(void **state)
{
    (void)state;
    est_metrics m;
    est_metrics_init(&m);
    est_metrics_request(&m, EST_EP_SIMPLEENROLL, 200);
    est_metrics_request(&m, EST_EP_SIMPLEENROLL, 200);
    est_metrics_request(&m, EST_EP_SIMPLEENROLL, 401);
    est_metrics_request(&m, EST_EP_CACERTS, 299);
    est_metrics_issue(&m, 0.003);
    est_metrics_issue(&m, 0.2);
    est_metrics_issue(&m, 60.0);
    est_metrics_hsm_error(&m);
    est_metrics_conns_cut(&m, 3);
    kl_buf out;
    kl_buf_init(&out, 65536, 0);
    assert_int_equal(est_metrics_render(&m, &out), KL_OK);
    const char *s;
    assert_int_equal(kl_buf_cstr(&out, &s), KL_OK);
    assert_non_null(
        strstr(s, "keyline_est_requests_total{endpoint=\"simpleenroll\",code=\"200\"} 2\n"));
    assert_non_null(
        strstr(s, "keyline_est_requests_total{endpoint=\"simpleenroll\",code=\"401\"} 1\n"));
    assert_non_null(
        strstr(s, "keyline_est_requests_total{endpoint=\"cacerts\",code=\"other\"} 1\n"));
    assert_non_null(strstr(s, "keyline_est_issue_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(s, "keyline_est_issue_seconds_bucket{le=\"0.25\"} 2\n"));
    assert_non_null(strstr(s, "keyline_est_issue_seconds_bucket{le=\"5\"} 2\n"));
    assert_non_null(strstr(s, "keyline_est_issue_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(s, "keyline_est_issue_seconds_count 3\n"));
    assert_non_null(strstr(s, "keyline_est_hsm_errors_total 1\n"));
    assert_non_null(strstr(s, "keyline_est_connections_cut_total 3\n"));
    assert_non_null(strstr(s, "# TYPE keyline_est_issue_seconds histogram\n"));
    kl_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_ops),        cmocka_unit_test(test_route_other),
        cmocka_unit_test(test_route_not_found),  cmocka_unit_test(test_media_type),
        cmocka_unit_test(test_body_variants),    cmocka_unit_test(test_body_bad),
        cmocka_unit_test(tkl_htpasswd_verify),   cmocka_unit_test(tkl_htpasswd_fail_plan),
        cmocka_unit_test(test_etag_listed),      cmocka_unit_test(test_path_unescape),
        cmocka_unit_test(test_basic_remembered), cmocka_unit_test(tkl_htpasswd_bad),
        cmocka_unit_test(tkl_basic_parse),       cmocka_unit_test(tkl_http_date),
        cmocka_unit_test(test_csrattrs),         cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_p7_certs_only),    cmocka_unit_test(test_challenge_password),
        cmocka_unit_test(test_hostport),         cmocka_unit_test(test_config),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
