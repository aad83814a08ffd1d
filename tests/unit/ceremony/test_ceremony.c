/* Unit tests for quorum ceremonies (ca/ceremony*.c): the canonical request, approvals signed
 * with a key in the throwaway SoftHSM token (tests/lib/with-token.sh), and the transcript:
 * round trip, offline verification, and every single altered byte refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ceremony.h"
#include "hsm.h"

static ceremony_req make_req(void)
{
    char *argv[] = {"--label", "root2", "--subject=CN=Root 2,O=Acme", "--template", "root"};
    ceremony_req r;
    assert_int_equal(ceremony_req_new("ca create", 5, argv, "cli:test", &r), KL_OK);
    return r;
}

static void encode(const ceremony_req *r, kl_buf *b)
{
    kl_buf_init(b, CEREMONY_REQ_MAX, 0);
    assert_int_equal(ceremony_req_encode(r, b), KL_OK);
}

static void test_req_roundtrip(void **state)
{
    (void)state;
    ceremony_req r = make_req(), back;
    kl_buf b;
    encode(&r, &b);
    const char *text;
    assert_int_equal(kl_buf_cstr(&b, &text), KL_OK);
    /* defaults explicit, parameters in key order */
    assert_non_null(strstr(text, "op: ca create\n"));
    assert_non_null(strstr(text, "param key-type: ec-p256\nparam label: root2\nparam subject: "
                                 "CN=Root 2,O=Acme\nparam template: root\n"));
    assert_int_equal(ceremony_req_parse(b.data, b.len, &back), KL_OK);
    assert_string_equal(ceremony_req_get(&back, "subject"), "CN=Root 2,O=Acme");
    assert_null(ceremony_req_get(&back, "issuer"));
    assert_string_equal(back.nonce, r.nonce);
    assert_int_equal(back.proposed, r.proposed);
    ceremony_req_free(&back);
    /* two proposals of the same thing are different requests (nonce) */
    ceremony_req r2 = make_req();
    assert_string_not_equal(r.nonce, r2.nonce);
    ceremony_req_free(&r2);
    ceremony_req_free(&r);
    kl_buf_free(&b);
}

static void test_req_new_refusals(void **state)
{
    (void)state;
    ceremony_req r;
    char *missing[] = {"--label", "x", "--template", "root"};
    assert_int_equal(ceremony_req_new("ca create", 4, missing, "cli:t", &r), KL_EUSAGE);
    char *unknown[] = {"--label", "x", "--template", "root", "--subject", "CN=x", "--bogus", "1"};
    assert_int_equal(ceremony_req_new("ca create", 8, unknown, "cli:t", &r), KL_EUSAGE);
    char *twice[] = {"--label", "x", "--label", "y", "--template", "root", "--subject", "CN=x"};
    assert_int_equal(ceremony_req_new("ca create", 8, twice, "cli:t", &r), KL_EUSAGE);
    char *nl[] = {"--label", "x\nparam issuer: evil", "--template", "root", "--subject", "CN=x"};
    assert_int_equal(ceremony_req_new("ca create", 6, nl, "cli:t", &r), KL_EUSAGE);
    char *noval[] = {"--label"};
    assert_int_equal(ceremony_req_new("ca create", 1, noval, "cli:t", &r), KL_EUSAGE);
    char *pos[] = {"root2"};
    assert_int_equal(ceremony_req_new("ca create", 1, pos, "cli:t", &r), KL_EUSAGE);
    assert_int_equal(ceremony_req_new("issue", 0, NULL, "cli:t", &r), KL_EUSAGE);
}

/* Replace the first `from` in the canonical text with `to` and expect a refusal. */
static void req_mutant(const char *text, const char *from, const char *to)
{
    char buf[4096];
    const char *at = strstr(text, from);
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    ceremony_req r;
    kl_rc rc = ceremony_req_parse((const uint8_t *)buf, strlen(buf), &r);
    if (rc == KL_OK) {
        fail_msg("accepted a request with '%s' -> '%s'", from, to);
    }
    assert_int_equal(rc, KL_EINPUT);
}

static void test_req_parse_strict(void **state)
{
    (void)state;
    ceremony_req r = make_req();
    kl_buf b;
    const char *t;
    encode(&r, &b);
    assert_int_equal(kl_buf_cstr(&b, &t), KL_OK);
    req_mutant(t, "op: ca create", "op: ca  create");
    req_mutant(t, "op: ca create", "op: ca erase");
    req_mutant(t, "keyline-ceremony-request v1", "keyline-ceremony-request v2");
    req_mutant(t, "\nnonce: ", "\nnonce:  ");
    req_mutant(t, "param label: root2\n", "");                       /* required gone */
    req_mutant(t, "param label: root2\n", "param label: root2\r\n"); /* CR */
    req_mutant(t, "param label", "param bogus");                     /* unknown parameter */
    req_mutant(t, "param key-type: ec-p256\nparam label: root2\n",
               "param label: root2\nparam key-type: ec-p256\n"); /* order */
    req_mutant(t, "param label: root2\n", "param label: root2\nparam label: root3\n");
    req_mutant(t, "param template: root\n", "param template: root\nextra\n");
    req_mutant(t, "param template: root\n", "param template: root"); /* no final newline */
    req_mutant(t, "param template: root\n", "param template: root \n");
    req_mutant(t, "proposed: ", "proposed: 2026-02-30T00:00:00Z\nx: ");
    /* a valid request with a NUL after it is not that request */
    uint8_t *more = malloc(b.len + 1);
    memcpy(more, b.data, b.len);
    more[b.len] = 0;
    ceremony_req back;
    assert_int_equal(ceremony_req_parse(more, b.len + 1, &back), KL_EINPUT);
    free(more);
    ceremony_req_free(&r);
    kl_buf_free(&b);
}

static void test_sign_software_keys(void **state)
{
    (void)state;
    const uint8_t msg[] = "the exact request bytes\n";
    EVP_PKEY *keys[] = {EVP_EC_gen("P-256"), EVP_EC_gen("P-384"), EVP_RSA_gen(2048)};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *sig;
        size_t n;
        assert_int_equal(ceremony_sign(keys[i], msg, sizeof msg - 1, &sig, &n), KL_OK);
        assert_int_equal(ceremony_sig_check(keys[i], msg, sizeof msg - 1, sig, n), KL_OK);
        assert_int_equal(ceremony_sig_check(keys[i], msg, sizeof msg - 2, sig, n), KL_EPOLICY);
        assert_int_equal(ceremony_sig_check(keys[(i + 1) % 3], msg, sizeof msg - 1, sig, n),
                         KL_EPOLICY);
        free(sig);
    }
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY_free(keys[i]); /* after the loop: each key checks the next one's signature */
    }
}

/* An approval made with a key in the SoftHSM token, through hsm/ as `ceremony approve` does. */
static void test_token_sign(void **state)
{
    (void)state;
    const char *module = getenv("KL_MODULE"), *uri = getenv("KL_TOKEN_URI");
    if (!module || !uri) {
        fail_msg("run under tests/lib/with-token.sh");
    }
    hsm_ctx *h = NULL;
    EVP_PKEY *pub = NULL, *pub2 = NULL;
    assert_int_equal(hsm_open(&h, module, uri, getenv("KEYLINE_PIN")), KL_OK);
    assert_int_equal(hsm_key_generate(h, "officer-alice", HSM_KEY_EC_P256, &pub), KL_OK);
    hsm_close(h);
    char keyuri[256];
    snprintf(keyuri, sizeof keyuri, "%s;object=officer-alice", uri);
    const uint8_t msg[] = "keyline-ceremony-request v1\n";
    uint8_t *sig = NULL;
    size_t n = 0;
    assert_int_equal(ceremony_token_sign(module, keyuri, "env:KEYLINE_PIN", msg, sizeof msg - 1,
                                         &sig, &n, &pub2),
                     KL_OK);
    assert_int_equal(EVP_PKEY_eq(pub, pub2), 1);
    assert_int_equal(ceremony_sig_check(pub, msg, sizeof msg - 1, sig, n), KL_OK);
    free(sig);
    /* no object=, wrong PIN, no such key: clear errors, nothing signed */
    assert_int_equal(ceremony_token_sign(module, uri, "env:KEYLINE_PIN", msg, 3, &sig, &n, NULL),
                     KL_EUSAGE);
    setenv("KL_WRONG_PIN", "0000", 1);
    assert_int_equal(
        ceremony_token_sign(module, keyuri, "env:KL_WRONG_PIN", msg, 3, &sig, &n, NULL), KL_EPIN);
    snprintf(keyuri, sizeof keyuri, "%s;object=officer-nobody", uri);
    assert_int_equal(ceremony_token_sign(module, keyuri, "env:KEYLINE_PIN", msg, 3, &sig, &n, NULL),
                     KL_ENOTFOUND);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pub2);
}

/* ---- transcripts ---- */

static uint8_t *self_signed(EVP_PKEY *k, const char *cn, size_t *len)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_sign(x, k, EVP_sha256());
    unsigned char *der = NULL;
    *len = (size_t)i2d_X509(x, &der);
    uint8_t *copy = malloc(*len);
    memcpy(copy, der, *len);
    OPENSSL_free(der);
    X509_NAME_free(n);
    X509_free(x);
    return copy;
}

typedef struct {
    EVP_PKEY *officer[3];
    EVP_PKEY *audit;
    ceremony_transcript t;
    kl_buf enc;
} tr_fixture;

static void tr_sign_audit(tr_fixture *f)
{
    kl_buf body;
    kl_buf_init(&body, CEREMONY_TRANSCRIPT_MAX, 0);
    assert_int_equal(ceremony_transcript_body(&f->t, &body), KL_OK);
    free(f->t.audit_sig);
    assert_int_equal(
        ceremony_sign(f->audit, body.data, body.len, &f->t.audit_sig, &f->t.audit_sig_len), KL_OK);
    kl_buf_free(&body);
    kl_buf_free(&f->enc);
    kl_buf_init(&f->enc, CEREMONY_TRANSCRIPT_MAX, 0);
    assert_int_equal(ceremony_transcript_encode(&f->t, &f->enc), KL_OK);
}

static void tr_setup(tr_fixture *f, size_t nap, long quorum)
{
    static const char *names[] = {"alice", "bob", "carol"};
    memset(f, 0, sizeof *f);
    ceremony_req r = make_req();
    kl_buf b;
    encode(&r, &b);
    f->t.req = kl_buf_steal(&b, &f->t.req_len);
    ceremony_req_free(&r);
    f->t.id = 7;
    for (size_t i = 0; i < 3; i++) {
        f->officer[i] = i == 2 ? EVP_RSA_gen(2048) : EVP_EC_gen(i ? "P-384" : "P-256");
    }
    for (size_t i = 0; i < nap; i++) {
        ceremony_approval *a = &f->t.ap[i];
        snprintf(a->name, sizeof a->name, "%s", names[i]);
        a->at = 1764900000 + (time_t)i;
        a->cert = self_signed(f->officer[i], names[i], &a->cert_len);
        assert_int_equal(ceremony_sign(f->officer[i], f->t.req, f->t.req_len, &a->sig, &a->sig_len),
                         KL_OK);
    }
    f->t.nap = nap;
    f->t.quorum = quorum;
    f->t.ran = 1764900100;
    f->t.runner = strdup("cli:root");
    assert_int_equal(ceremony_kvs_set(&f->t.result, "label", "root2"), KL_OK);
    assert_int_equal(ceremony_kvs_set(&f->t.result, "cert-sha256", "ab12"), KL_OK);
    f->audit = EVP_EC_gen("P-256");
    unsigned char *spki = NULL;
    f->t.audit_spki_len = (size_t)i2d_PUBKEY(f->audit, &spki);
    f->t.audit_spki = malloc(f->t.audit_spki_len);
    memcpy(f->t.audit_spki, spki, f->t.audit_spki_len);
    OPENSSL_free(spki);
    tr_sign_audit(f);
}

static void tr_teardown(tr_fixture *f)
{
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY_free(f->officer[i]);
    }
    EVP_PKEY_free(f->audit);
    ceremony_transcript_free(&f->t);
    kl_buf_free(&f->enc);
}

static void test_transcript_roundtrip(void **state)
{
    (void)state;
    tr_fixture f;
    tr_setup(&f, 3, 2);
    ceremony_transcript back;
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, NULL, &back), KL_OK);
    assert_int_equal(back.nap, 3);
    assert_string_equal(back.ap[1].name, "bob");
    assert_int_equal(back.req_len, f.t.req_len);
    assert_memory_equal(back.req, f.t.req, f.t.req_len);
    assert_string_equal(ceremony_kvs_get(&back.result, "label"), "root2");
    ceremony_transcript_free(&back);
    /* pinned audit key: right and wrong */
    char sha[65];
    assert_int_equal(ceremony_key_sha256(f.audit, sha), KL_OK);
    ceremony_pins pins = {.audit_key_sha256 = sha};
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &pins, NULL), KL_OK);
    pins.audit_key_sha256 = "00";
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &pins, NULL), KL_EPOLICY);
    /* the ceremony and the quorum an auditor expects: ceremony 7, quorum 2 (3 approvals) */
    ceremony_pins want = {.id = 7, .quorum = 2};
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &want, NULL), KL_OK);
    want.id = 12;
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &want, NULL), KL_EPOLICY);
    assert_string_equal(kl_errmsg(), "transcript is of ceremony 7, not 12");
    want.id = 7;
    want.quorum = 3; /* 3 approvals, but the transcript's quorum is 2 */
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &want, NULL), KL_EPOLICY);
    assert_string_equal(kl_errmsg(), "quorum 2 is below the required 3");
    tr_teardown(&f);
}

/* One altered byte anywhere, any way: refused. */
static void test_transcript_every_byte(void **state)
{
    (void)state;
    tr_fixture f;
    tr_setup(&f, 2, 2);
    uint8_t *m = malloc(f.enc.len);
    static const uint8_t flips[] = {0x01, 0x20, 0x80};
    for (size_t i = 0; i < f.enc.len; i++) {
        for (size_t k = 0; k < sizeof flips; k++) {
            memcpy(m, f.enc.data, f.enc.len);
            m[i] ^= flips[k];
            if (ceremony_transcript_verify(m, f.enc.len, NULL, NULL) == KL_OK) {
                fail_msg("byte %zu ^ 0x%02x accepted", i, flips[k]);
            }
        }
    }
    /* cut short by one byte, one byte more */
    assert_int_not_equal(ceremony_transcript_verify(f.enc.data, f.enc.len - 1, NULL, NULL), KL_OK);
    uint8_t *l = malloc(f.enc.len + 1);
    memcpy(l, f.enc.data, f.enc.len);
    l[f.enc.len] = '\n';
    assert_int_not_equal(ceremony_transcript_verify(l, f.enc.len + 1, NULL, NULL), KL_OK);
    free(l);
    free(m);
    /* bytes the base64 decoder would skip are still edits: a space more, CR LF */
    static const char *edits[][2] = {{"\nsignature: ", "\nsignature:  "},
                                     {"\nofficer-cert: ", "\nofficer-cert: \n"},
                                     {"\naudit-key: ", "\r\naudit-key: "},
                                     {"\nid: 7\n", "\nid: 07\n"}};
    const char *text;
    assert_int_equal(kl_buf_cstr(&f.enc, &text), KL_OK);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const char *at = strstr(text, edits[i][0]);
        assert_non_null(at);
        size_t cap = f.enc.len + 16;
        char *e = malloc(cap);
        int n = snprintf(e, cap, "%.*s%s%s", (int)(at - text), text, edits[i][1],
                         at + strlen(edits[i][0]));
        if (ceremony_transcript_verify((uint8_t *)e, (size_t)n, NULL, NULL) == KL_OK) {
            fail_msg("edit %zu accepted", i);
        }
        free(e);
    }
    tr_teardown(&f);
}

static void test_transcript_quorum_and_officers(void **state)
{
    (void)state;
    tr_fixture f;
    /* re-signed by the audit key, still refused: one approval short of the stated quorum */
    tr_setup(&f, 2, 3);
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, NULL, NULL), KL_EPOLICY);
    tr_teardown(&f);
    /* the same officer key under two names counts once */
    tr_setup(&f, 2, 2);
    free(f.t.ap[1].cert);
    free(f.t.ap[1].sig);
    f.t.ap[1].cert = self_signed(f.officer[0], "bob", &f.t.ap[1].cert_len);
    assert_int_equal(
        ceremony_sign(f.officer[0], f.t.req, f.t.req_len, &f.t.ap[1].sig, &f.t.ap[1].sig_len),
        KL_OK);
    tr_sign_audit(&f);
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, NULL, NULL), KL_EPOLICY);
    tr_teardown(&f);
    /* an approval over other bytes (another request) */
    tr_setup(&f, 2, 2);
    free(f.t.ap[0].sig);
    assert_int_equal(
        ceremony_sign(f.officer[0], f.t.req, f.t.req_len - 1, &f.t.ap[0].sig, &f.t.ap[0].sig_len),
        KL_OK);
    tr_sign_audit(&f);
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, NULL, NULL), KL_EPOLICY);
    tr_teardown(&f);
    /* pinned officers: an approval whose certificate is not among them */
    tr_setup(&f, 2, 2);
    STACK_OF(X509) *sk = sk_X509_new_null();
    const unsigned char *p = f.t.ap[0].cert;
    sk_X509_push(sk, d2i_X509(NULL, &p, (long)f.t.ap[0].cert_len));
    ceremony_pins pins = {.officers = sk};
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &pins, NULL), KL_EPOLICY);
    p = f.t.ap[1].cert;
    sk_X509_push(sk, d2i_X509(NULL, &p, (long)f.t.ap[1].cert_len));
    assert_int_equal(ceremony_transcript_verify(f.enc.data, f.enc.len, &pins, NULL), KL_OK);
    sk_X509_pop_free(sk, X509_free);
    tr_teardown(&f);
}

/* officer add: what the officers sign is the certificate itself, not the file name */
static void test_req_officer_add(void **state)
{
    (void)state;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    size_t len;
    uint8_t *der = self_signed(k, "dave", &len);
    char path[] = "/tmp/kl-officer-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, der, len), (ssize_t)len);
    close(fd);
    char *argv[] = {"--name", "dave", "--cert", path};
    ceremony_req r, back;
    assert_int_equal(ceremony_req_new("officer add", 4, argv, "cli:test", &r), KL_OK);
    unlink(path);
    const char *b64 = ceremony_req_get(&r, "cert");
    assert_non_null(b64);
    assert_int_equal(strncmp(b64, "MII", 3), 0);
    kl_buf b;
    encode(&r, &b);
    assert_int_equal(ceremony_req_parse(b.data, b.len, &back), KL_OK);
    assert_string_equal(ceremony_req_get(&back, "cert"), b64);
    ceremony_req_free(&back);
    ceremony_req_free(&r);
    kl_buf_free(&b);
    char *bad[] = {"--name", "dave", "--cert", "/nonexistent"};
    assert_int_not_equal(ceremony_req_new("officer add", 4, bad, "cli:test", &r), KL_OK);
    free(der);
    EVP_PKEY_free(k);
}

/* The store's officers and ceremonies (store_ceremony.c) on a real SQLite file: the rules the
 * store decides itself (unique names and keys, one approval per officer, states). */
static void test_store_records(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/ceremony.db", getenv("KL_TEST_DIR"));
    store *s = NULL;
    assert_int_equal(store_open(&s, path), KL_OK);
    ceremony_officer a = {.name = "alice", .cert = (uint8_t *)"x", .cert_len = 1};
    memset(a.key_sha256, 'a', 64);
    memset(a.cert_sha256, 'c', 64);
    assert_int_equal(ceremony_officer_add(s, &a, 0, "t"), KL_OK);
    ceremony_officer b = a; /* another name, the same key */
    snprintf(b.name, sizeof b.name, "bob");
    assert_int_equal(ceremony_officer_add(s, &b, 0, "t"), KL_EEXIST);
    memset(b.key_sha256, 'b', 64);
    assert_int_equal(ceremony_officer_add(s, &b, 0, "t"), KL_OK);
    ceremony_officer got;
    assert_int_equal(ceremony_officer_by_key(s, b.key_sha256, &got), KL_OK);
    assert_string_equal(got.name, "bob");
    ceremony_officer_free(&got);
    ceremony_officer c3 = a; /* without a ceremony: only while fewer than M are active */
    snprintf(c3.name, sizeof c3.name, "carol");
    memset(c3.key_sha256, 'd', 64);
    assert_int_equal(ceremony_officer_add(s, &c3, 2, "t"), KL_EPOLICY);
    assert_int_equal(ceremony_officer_remove(s, "bob", 2, "t"), KL_EPOLICY);
    assert_int_equal(ceremony_officer_add(s, &c3, 3, "t"), KL_OK);
    assert_int_equal(ceremony_officer_remove(s, "carol", 3, "t"), KL_EPOLICY);
    assert_int_equal(ceremony_officer_remove(s, "carol", 0, "t"), KL_OK);
    assert_int_equal(ceremony_officer_remove(s, "bob", 0, "t"), KL_OK);
    assert_int_equal(ceremony_officer_remove(s, "bob", 0, "t"), KL_EPOLICY);
    assert_int_equal(ceremony_officer_remove(s, "nobody", 0, "t"), KL_ENOTFOUND);
    assert_int_equal(ceremony_officer_by_key(s, b.key_sha256, &got), KL_ENOTFOUND);
    /* a removed officer's name and key stay taken */
    assert_int_equal(ceremony_officer_add(s, &b, 0, "t"), KL_EEXIST);

    const uint8_t req[] = "request bytes\n";
    int64_t id = 0, id2 = 0;
    assert_int_equal(ceremony_db_propose(s, "ca create", "00ff", req, sizeof req - 1, 1, "t", &id),
                     KL_OK);
    assert_int_equal(ceremony_db_propose(s, "ca create", "00ff", req, sizeof req - 1, 1, "t", &id2),
                     KL_EEXIST); /* nonce */
    assert_int_equal(ceremony_db_approve(s, id, "alice", (const uint8_t *)"s1", 2, "t"), KL_OK);
    assert_int_equal(ceremony_db_approve(s, id, "alice", (const uint8_t *)"s2", 2, "t"), KL_OK);
    ceremony_rec r;
    assert_int_equal(ceremony_db_get(s, id, &r), KL_OK);
    assert_int_equal(r.nap, 1); /* approving again replaces */
    assert_memory_equal(r.ap[0].sig, "s2", 2);
    assert_memory_equal(r.req, req, sizeof req - 1);
    ceremony_rec_free(&r);
    assert_int_equal(ceremony_db_claim(s, id, req, sizeof req - 1, "t",
                                       "running: pid 1 on host h since x, by t"),
                     KL_OK);
    assert_int_equal(ceremony_db_get(s, id, &r), KL_OK);
    assert_string_equal(r.status, CEREMONY_ST_RUNNING);
    assert_string_equal(r.note, "running: pid 1 on host h since x, by t"); /* who runs it */
    ceremony_rec_free(&r);
    assert_int_equal(ceremony_db_claim(s, id, req, sizeof req - 1, "t", "x"),
                     KL_EPOLICY); /* one runner */
    assert_int_equal(ceremony_db_approve(s, id, "alice", (const uint8_t *)"s3", 2, "t"),
                     KL_EPOLICY);
    assert_int_equal(ceremony_db_finish(s, id, NULL, 0, "it failed", "t"), KL_OK);
    assert_int_equal(ceremony_db_interrupted(s, id, "x", "x", "t"), KL_EPOLICY); /* not running */
    assert_int_equal(ceremony_db_claim(s, id, req, sizeof req - 1, "t", "x"),
                     KL_OK); /* failed: open again */
    /* a run judged dead by its note: another run that took it up meanwhile is not reset */
    assert_int_equal(ceremony_db_interrupted(s, id, "running: pid 1 on host h", "x", "t"),
                     KL_EPOLICY);
    assert_int_equal(ceremony_db_interrupted(s, id, "x", "the run died", "t"), KL_OK);
    assert_int_equal(ceremony_db_get(s, id, &r), KL_OK);
    assert_string_equal(r.status, CEREMONY_ST_PROPOSED); /* a dead run: open again */
    assert_string_equal(r.note, "the run died");
    ceremony_rec_free(&r);
    assert_int_equal(ceremony_db_claim(s, id, req, sizeof req - 1, "t", "x"), KL_OK);
    assert_int_equal(ceremony_db_finish(s, id, (const uint8_t *)"tr", 2, NULL, "t"), KL_OK);
    assert_int_equal(ceremony_db_get(s, id, &r), KL_OK);
    assert_string_equal(r.status, CEREMONY_ST_DONE);
    assert_int_equal(r.transcript_len, 2);
    ceremony_rec_free(&r);
    assert_int_equal(ceremony_db_get(s, 999, &r), KL_ENOTFOUND);
    int64_t n = 0;
    assert_int_equal(store_audit_verify(s, &n), KL_OK);
    assert_int_equal(n, 11); /* 3 officer-add, 2 officer-remove, propose, 2 approve, failed,
                                interrupted, run */
    store_close(s);
}

static void test_guard(void **state)
{
    (void)state;
    kl_conf *c = kl_conf_new("/tmp");
    assert_int_equal(ceremony_guard(c, "ca", "create"), KL_OK); /* quorum 0 */
    assert_int_equal(kl_conf_set(c, "ceremony", "quorum", "2"), KL_OK);
    assert_int_equal(ceremony_guard(c, "ca", "create"), KL_EPOLICY);
    assert_int_equal(ceremony_guard(c, "ca", "rotate"), KL_EPOLICY);
    assert_int_equal(ceremony_guard(c, "ca", "list"), KL_OK);
    assert_int_equal(ceremony_guard(c, NULL, "issue"), KL_OK);
    /* officer add|remove decide themselves (free while fewer than the quorum are active) */
    assert_int_equal(ceremony_guard(c, "officer", "add"), KL_OK);
    assert_int_equal(ceremony_guard(c, "officer", "remove"), KL_OK);
    assert_int_equal(kl_conf_set(c, "ceremony", "quorum", "-1"), KL_OK);
    assert_int_equal(ceremony_guard(c, "ca", "create"), KL_EINPUT);
    kl_conf_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_roundtrip),
        cmocka_unit_test(test_req_new_refusals),
        cmocka_unit_test(test_req_parse_strict),
        cmocka_unit_test(test_sign_software_keys),
        cmocka_unit_test(test_token_sign),
        cmocka_unit_test(test_transcript_roundtrip),
        cmocka_unit_test(test_transcript_every_byte),
        cmocka_unit_test(test_transcript_quorum_and_officers),
        cmocka_unit_test(test_req_officer_add),
        cmocka_unit_test(test_store_records),
        cmocka_unit_test(test_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
