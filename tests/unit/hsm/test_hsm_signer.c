/* keyline: signer processes (hsm_signer.c) against a real SoftHSM2 token (run under
 * tests/lib/with-token.sh): the request codec with malformed frames, signing through signer
 * processes (EC P-256, P-384, RSA-3072 PKCS#1 v1.5 and PSS) checked in software with the
 * public key, malformed frames sent to a live signer, and dead signers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "hsm.h"
#include "hsm_signer.h"
#include "token_env.h"

static char g_pin[64];
static const char *pin(void)
{
    snprintf(g_pin, sizeof g_pin, "%s", env_or_skip("KEYLINE_PIN"));
    return g_pin;
}

/* ---- the codec ------------------------------------------------------------------------ */

static void test_codec_roundtrip(void **state)
{
    (void)state;
    hsm_signer_req a, b;
    uint8_t buf[512];
    memset(&a, 0, sizeof a);
    a.op = HSM_REQ_SIGN;
    snprintf(a.label, sizeof a.label, "field1");
    a.alg = HSM_SIG_RSA_PSS;
    a.md = HSM_MD_SHA384;
    a.dgst_len = 48;
    memset(a.dgst, 0xab, 48);
    size_t n = hsm_signer_req_encode(&a, buf, sizeof buf);
    assert_int_equal(n, 2 + 6 + 3 + 48);
    assert_int_equal(hsm_signer_req_parse(buf, n, &b), KL_OK);
    assert_int_equal(b.op, HSM_REQ_SIGN);
    assert_string_equal(b.label, "field1");
    assert_int_equal(b.alg, HSM_SIG_RSA_PSS);
    assert_int_equal(b.md, HSM_MD_SHA384);
    assert_int_equal(b.dgst_len, 48);
    assert_memory_equal(b.dgst, a.dgst, 48);

    memset(&a, 0, sizeof a);
    a.op = HSM_REQ_PUBKEY;
    snprintf(a.label, sizeof a.label, "root1.ocsp");
    n = hsm_signer_req_encode(&a, buf, sizeof buf);
    assert_int_equal(n, 12);
    assert_int_equal(hsm_signer_req_parse(buf, n, &b), KL_OK);
    assert_string_equal(b.label, "root1.ocsp");
    /* the encoder refuses what the parser would refuse */
    a.op = 9;
    assert_int_equal(hsm_signer_req_encode(&a, buf, sizeof buf), 0);
}

typedef struct {
    const char *what;
    const uint8_t *b;
    size_t n;
} bad_frame;

static void test_codec_malformed(void **state)
{
    (void)state;
    static const uint8_t empty[1] = {0};
    static const uint8_t short2[] = {1, 1};
    static const uint8_t unknown_op[] = {7, 1, 'a'};
    static const uint8_t op_zero[] = {0, 1, 'a'};
    static const uint8_t label0[] = {1, 0, 'a'};
    static const uint8_t label_long[] = {1, 9, 'a', 'b'};
    static const uint8_t label_nul[] = {1, 3, 'a', 0, 'b'};
    static const uint8_t label_ctl[] = {1, 2, 'a', '\n'};
    static const uint8_t label_hi[] = {1, 2, 'a', 0xc3};
    static const uint8_t pub_trailing[] = {1, 1, 'a', 0};
    static const uint8_t pub_uri[] = {1, 10, 'P', 'K', 'C', 'S', '1', '1', ':', 'a', '=', 'b'};
    static const uint8_t sign_trunc[] = {2, 1, 'a', 1, 0};
    static const uint8_t sign_no_dgst[] = {2, 1, 'a', 1, 0, 32};
    static const uint8_t sign_bad_alg[] = {2, 1, 'a', 9, 0, 1, 0};
    static const uint8_t ecdsa_md[] = {2, 1, 'a', 1, 1, 1, 0};
    static const uint8_t ecdsa_len[] = {2, 1, 'a', 1, 0, 1, 0};
    static const uint8_t rsa_no_md[] = {2, 1, 'a', 2, 0, 1, 0};
    static const uint8_t rsa_bad_md[] = {2, 1, 'a', 3, 4, 1, 0};
    static const uint8_t rsa_len[] = {2, 1, 'a', 2, 1, 1, 0};
    static const uint8_t dgst_over[] = {2, 1, 'a', 1, 0, 200, 0};
    uint8_t label129[2 + 129 + 1];
    label129[0] = 1;
    label129[1] = 129;
    memset(label129 + 2, 'x', 129);
    uint8_t big[HSM_SIGNER_FRAME_MAX + 1];
    memset(big, 1, sizeof big);
    uint8_t sign_trail[2 + 1 + 3 + 32 + 1] = {2, 1, 'a', 1, 0, 32};
    const bad_frame bad[] = {
        {"empty", empty, 0},
        {"NULL body", NULL, 3},
        {"two bytes", short2, sizeof short2},
        {"unknown op", unknown_op, sizeof unknown_op},
        {"op zero", op_zero, sizeof op_zero},
        {"label length 0", label0, sizeof label0},
        {"label longer than the frame", label_long, sizeof label_long},
        {"NUL in label", label_nul, sizeof label_nul},
        {"control byte in label", label_ctl, sizeof label_ctl},
        {"non-ASCII label", label_hi, sizeof label_hi},
        {"label of 129 bytes", label129, 2 + 129},
        {"trailing byte after PUBKEY", pub_trailing, sizeof pub_trailing},
        {"a URI for a label", pub_uri, sizeof pub_uri},
        {"SIGN cut short", sign_trunc, sizeof sign_trunc},
        {"SIGN without digest bytes", sign_no_dgst, sizeof sign_no_dgst},
        {"unknown scheme", sign_bad_alg, sizeof sign_bad_alg},
        {"ECDSA with md", ecdsa_md, sizeof ecdsa_md},
        {"ECDSA digest of 1 byte", ecdsa_len, sizeof ecdsa_len},
        {"RSA without md", rsa_no_md, sizeof rsa_no_md},
        {"RSA with unknown md", rsa_bad_md, sizeof rsa_bad_md},
        {"RSA digest length not the hash's", rsa_len, sizeof rsa_len},
        {"digest length over 64", dgst_over, sizeof dgst_over},
        {"trailing byte after SIGN", sign_trail, sizeof sign_trail},
        {"over the frame limit", big, sizeof big},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hsm_signer_req r;
        if (hsm_signer_req_parse(bad[i].b, bad[i].n, &r) != KL_EINPUT) {
            fail_msg("accepted: %s", bad[i].what);
        }
    }
    /* the last case without its trailing byte is fine */
    hsm_signer_req r;
    assert_int_equal(hsm_signer_req_parse(sign_trail, sizeof sign_trail - 1, &r), KL_OK);
}

/* ---- keys on the token ----------------------------------------------------------------- */

static const struct {
    const char *label;
    hsm_key_type type;
} g_keys[] = {
    {"sig-p256", HSM_KEY_EC_P256},
    {"sig-p384", HSM_KEY_EC_P384},
    {"sig-rsa", HSM_KEY_RSA_3072},
};

/* Made once with a local context, which is closed again: signers are forked by a process
 * without a module loaded. */
static int setup_keys(void **state)
{
    (void)state;
    hsm_ctx *h = NULL;
    if (hsm_open(&h, module(), token_uri(), pin()) != KL_OK) {
        fprintf(stderr, "hsm_open: %s\n", kl_errmsg());
        return -1;
    }
    for (size_t i = 0; i < sizeof g_keys / sizeof g_keys[0]; i++) {
        if (hsm_key_generate(h, g_keys[i].label, g_keys[i].type, NULL) != KL_OK) {
            fprintf(stderr, "generate %s: %s\n", g_keys[i].label, kl_errmsg());
            hsm_close(h);
            return -1;
        }
    }
    hsm_close(h);
    return 0;
}

static hsm_ctx *spawn(unsigned n)
{
    hsm_ctx *h = NULL;
    if (hsm_signer_spawn(module(), token_uri(), pin(), n, NULL, &h) != KL_OK) {
        fail_msg("hsm_signer_spawn: %s", kl_errmsg());
    }
    assert_true(hsm_is_remote(h));
    assert_string_equal(hsm_token_label(h), "keyline-test");
    return h;
}

static void digest_sign_verify(EVP_PKEY *priv, EVP_PKEY *pub, const EVP_MD *md)
{
    static const char msg[] = "to be signed in a signer process";
    EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(s, NULL, md, NULL, priv), 1);
    assert_int_equal(EVP_DigestSign(s, sig, &siglen, (const unsigned char *)msg, strlen(msg)), 1);
    assert_int_equal(EVP_DigestVerifyInit(v, NULL, md, NULL, pub), 1);
    assert_int_equal(EVP_DigestVerify(v, sig, siglen, (const unsigned char *)msg, strlen(msg)), 1);
    assert_int_equal(EVP_DigestVerifyInit(v, NULL, md, NULL, pub), 1);
    assert_int_not_equal(EVP_DigestVerify(v, sig, siglen, (const unsigned char *)"x", 1), 1);
    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
}

/* A certificate signed through the signer verifies with the public key. */
static void cert_sign_verify(EVP_PKEY *priv, EVP_PKEY *pub)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"signer test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    assert_int_equal(X509_set_pubkey(x, pub), 1);
    assert_true(X509_sign(x, priv, EVP_sha256()) > 0);
    assert_int_equal(X509_verify(x, pub), 1);
    X509_free(x);
}

static void test_remote_sign(void **state)
{
    (void)state;
    hsm_ctx *h = spawn(2);
    pid_t pids[4];
    assert_int_equal(hsm_signer_pids(h, pids, 4), 2);
    for (size_t i = 0; i < sizeof g_keys / sizeof g_keys[0]; i++) {
        EVP_PKEY *priv = NULL, *pub = NULL;
        assert_int_equal(hsm_key_public(h, g_keys[i].label, &pub), KL_OK);
        assert_int_equal(hsm_key_load(h, g_keys[i].label, &priv), KL_OK);
        assert_int_equal(hsm_key_type_of(priv), g_keys[i].type);
        assert_int_equal(hsm_key_type_of(pub), g_keys[i].type);
        digest_sign_verify(priv, pub, EVP_sha256());
        digest_sign_verify(priv, pub, EVP_sha384());
        cert_sign_verify(priv, pub);
        EVP_PKEY_free(priv);
        EVP_PKEY_free(pub);
    }
    /* the URI form of a label, for this token only */
    EVP_PKEY *k = NULL;
    assert_int_equal(hsm_key_public(h, "pkcs11:token=keyline-test;object=sig-p256", &k), KL_OK);
    EVP_PKEY_free(k);
    assert_int_equal(hsm_key_public(h, "pkcs11:token=other;object=sig-p256", &k), KL_ENOTFOUND);
    assert_int_equal(hsm_key_load(h, "no-such-key", &k), KL_ENOTFOUND);
    assert_null(k);
    hsm_close(h);
}

/* sign_keys: only the listed keys sign (exact label, fnmatch pattern, pkcs11: URI); every
 * public key is still served; the refusal names the key and leaves the signer working. */
static void test_sign_keys(void **state)
{
    (void)state;
    static const char *const keys[] = {"sig-p2*", "pkcs11:token=keyline-test;object=sig-rsa", NULL};
    hsm_ctx *h = NULL;
    if (hsm_signer_spawn(module(), token_uri(), pin(), 1, keys, &h) != KL_OK) {
        fail_msg("hsm_signer_spawn: %s", kl_errmsg());
    }
    uint8_t dg[48], sig[512];
    size_t sl = sizeof sig;
    memset(dg, 0x33, sizeof dg);
    assert_int_equal(
        hsm_key_sign_digest(h, "sig-p256", HSM_SIG_ECDSA, HSM_MD_NONE, dg, 32, sig, &sl), KL_OK);
    sl = sizeof sig;
    assert_int_equal(
        hsm_key_sign_digest(h, "sig-rsa", HSM_SIG_RSA_PSS, HSM_MD_SHA256, dg, 32, sig, &sl), KL_OK);
    sl = sizeof sig;
    assert_int_equal(hsm_key_sign_digest(h, "pkcs11:object=sig-p384", HSM_SIG_ECDSA, HSM_MD_NONE,
                                         dg, 48, sig, &sl),
                     KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "key 'sig-p384' is not one this server signs with"));
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_int_equal(hsm_key_public(h, "sig-p384", &pub), KL_OK);
    /* through an EVP_PKEY (what X509_sign does): refused too */
    assert_int_equal(hsm_key_load(h, "sig-p384", &priv), KL_OK);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    size_t l = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, priv), 1);
    assert_int_not_equal(EVP_DigestSign(m, sig, &l, dg, 10), 1);
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    /* the one signer is still there */
    pid_t pids[2];
    assert_int_equal(hsm_signer_pids(h, pids, 2), 1);
    sl = sizeof sig;
    assert_int_equal(
        hsm_key_sign_digest(h, "sig-p256", HSM_SIG_ECDSA, HSM_MD_NONE, dg, 32, sig, &sl), KL_OK);
    hsm_close(h);
}

/* RSA PSS and PKCS#1 v1.5 through hsm_key_sign_digest (the TLS key path), both modes. */
static void sign_digest_check(hsm_ctx *h)
{
    EVP_PKEY *pub = NULL;
    uint8_t dg[32], sig[512];
    size_t sl;
    memset(dg, 0x5a, sizeof dg);
    assert_int_equal(hsm_key_public(h, "sig-rsa", &pub), KL_OK);
    for (int pss = 0; pss < 2; pss++) {
        sl = sizeof sig;
        assert_int_equal(hsm_key_sign_digest(h, "sig-rsa",
                                             pss ? HSM_SIG_RSA_PSS : HSM_SIG_RSA_PKCS1,
                                             HSM_MD_SHA256, dg, sizeof dg, sig, &sl),
                         KL_OK);
        assert_int_equal(sl, 384);
        EVP_PKEY_CTX *v = EVP_PKEY_CTX_new(pub, NULL);
        assert_int_equal(EVP_PKEY_verify_init(v), 1);
        assert_true(
            EVP_PKEY_CTX_set_rsa_padding(v, pss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) > 0);
        assert_true(EVP_PKEY_CTX_set_signature_md(v, EVP_sha256()) > 0);
        if (pss) {
            assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(v, RSA_PSS_SALTLEN_DIGEST) > 0);
        }
        assert_int_equal(EVP_PKEY_verify(v, sig, sl, dg, sizeof dg), 1);
        EVP_PKEY_CTX_free(v);
    }
    EVP_PKEY_free(pub);
    assert_int_equal(hsm_key_public(h, "sig-p384", &pub), KL_OK);
    uint8_t d48[48];
    memset(d48, 7, sizeof d48);
    sl = sizeof sig;
    assert_int_equal(
        hsm_key_sign_digest(h, "sig-p384", HSM_SIG_ECDSA, HSM_MD_NONE, d48, sizeof d48, sig, &sl),
        KL_OK);
    EVP_PKEY_CTX *v = EVP_PKEY_CTX_new(pub, NULL);
    assert_int_equal(EVP_PKEY_verify_init(v), 1);
    assert_int_equal(EVP_PKEY_verify(v, sig, sl, d48, sizeof d48), 1);
    EVP_PKEY_CTX_free(v);
    EVP_PKEY_free(pub);
    /* refused alike in both modes */
    sl = sizeof sig;
    assert_int_equal(hsm_key_sign_digest(h, "sig-rsa", HSM_SIG_RSA_PKCS1, HSM_MD_SHA384, dg,
                                         sizeof dg, sig, &sl),
                     KL_EINPUT);
    sl = sizeof sig;
    assert_int_equal(hsm_key_sign_digest(h, "sig-p256", HSM_SIG_RSA_PKCS1, HSM_MD_SHA256, dg,
                                         sizeof dg, sig, &sl),
                     KL_EPOLICY);
}

static void test_sign_digest(void **state)
{
    (void)state;
    hsm_ctx *h = spawn(1);
    sign_digest_check(h);
    hsm_close(h);
    assert_int_equal(hsm_open(&h, module(), token_uri(), pin()), KL_OK);
    sign_digest_check(h);
    /* a local context is open: no fork now */
    hsm_ctx *r = NULL;
    assert_int_equal(hsm_signer_spawn(module(), token_uri(), pin(), 1, NULL, &r), KL_EUSAGE);
    assert_null(r);
    hsm_close(h);
}

/* Outside the table: no key generation, destruction or attribute reads. */
static void test_remote_refuses(void **state)
{
    (void)state;
    hsm_ctx *h = spawn(1);
    EVP_PKEY *pub = NULL;
    unsigned f = 0;
    assert_int_equal(hsm_key_generate(h, "new-key", HSM_KEY_EC_P256, &pub), KL_EPOLICY);
    assert_null(pub);
    assert_int_equal(hsm_key_destroy(h, "sig-p256"), KL_EPOLICY);
    assert_int_equal(hsm_key_protection(h, "sig-p256", &f), KL_EPOLICY);
    assert_int_equal(hsm_key_public(h, "sig-p256", &pub), KL_OK); /* still there */
    EVP_PKEY_free(pub);
    hsm_close(h);
}

static void test_wrong_pin(void **state)
{
    (void)state;
    hsm_ctx *h = NULL;
    kl_rc rc = hsm_signer_spawn(module(), token_uri(), "0000", 2, NULL, &h);
    if (rc != KL_EPIN) {
        fail_msg("wrong PIN: %s", kl_errmsg());
    }
    assert_null(h);
    assert_non_null(strstr(kl_errmsg(), "CKR_PIN_INCORRECT"));
}

/* ---- raw frames to a live signer ------------------------------------------------------ */

static void send_frame(int fd, const uint8_t *body, size_t n)
{
    uint8_t buf[8 + HSM_SIGNER_FRAME_MAX];
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    memcpy(buf + 4, body, n);
    assert_int_equal(send(fd, buf, n + 4, MSG_NOSIGNAL), (ssize_t)(n + 4));
}

/* Reads one answer; returns its status byte, -1 on EOF. */
static int recv_answer(int fd, uint8_t *body, size_t cap, size_t *len)
{
    uint8_t h[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = recv(fd, h + got, 4 - got, 0);
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    size_t l = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    assert_true(l >= 1 && l <= cap);
    got = 0;
    while (got < l) {
        ssize_t n = recv(fd, body + got, l - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
    *len = l;
    return body[0];
}

static void test_live_malformed(void **state)
{
    (void)state;
    int fd = -1;
    pid_t pid = -1;
    char tl[64];
    uint8_t ans[HSM_SIGNER_FRAME_MAX];
    size_t al = 0;
    assert_int_equal(hsm_signer_fork(module(), token_uri(), pin(), NULL, &fd, &pid, tl, sizeof tl),
                     KL_OK);
    assert_string_equal(tl, "keyline-test");
    static const uint8_t junk[] = {7, 1, 'a'};
    static const uint8_t nul[] = {1, 3, 'a', 0, 'b'};
    static const uint8_t good[] = {1, 8, 's', 'i', 'g', '-', 'p', '2', '5', '6'};
    static const uint8_t missing[] = {1, 4, 'n', 'o', 'n', 'e'};
    static const uint8_t wrong_alg[] = {2,  7,  's', 'i', 'g', '-', 'r', 's', 'a', 1,  0,
                                        32, 1,  2,   3,   4,   5,   6,   7,   8,   9,  10,
                                        11, 12, 13,  14,  15,  16,  17,  18,  19,  20, 21,
                                        22, 23, 24,  25,  26,  27,  28,  29,  30,  31, 32};
    send_frame(fd, junk, sizeof junk);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), KL_EINPUT);
    send_frame(fd, nul, sizeof nul);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), KL_EINPUT);
    send_frame(fd, missing, sizeof missing);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), KL_ENOTFOUND);
    send_frame(fd, wrong_alg, sizeof wrong_alg);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), KL_EPOLICY);
    /* two requests in one write: both answered, in order */
    uint8_t two[2 * (4 + sizeof good)];
    for (int i = 0; i < 2; i++) {
        uint8_t *p = two + i * (4 + sizeof good);
        p[0] = p[1] = p[2] = 0;
        p[3] = sizeof good;
        memcpy(p + 4, good, sizeof good);
    }
    assert_int_equal(send(fd, two, sizeof two, MSG_NOSIGNAL), (ssize_t)sizeof two);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), KL_OK);
        const unsigned char *p = ans + 1;
        EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)(al - 1));
        assert_non_null(pub);
        EVP_PKEY_free(pub);
    }
    /* a length over the limit: the signer closes the channel and exits, it does not crash */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    assert_int_equal(send(fd, huge, sizeof huge, MSG_NOSIGNAL), (ssize_t)sizeof huge);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), -1);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 3);
    close(fd);

    /* a zero length, and EOF in the middle of a frame */
    assert_int_equal(hsm_signer_fork(module(), token_uri(), pin(), NULL, &fd, &pid, tl, sizeof tl),
                     KL_OK);
    static const uint8_t zero[] = {0, 0, 0, 0};
    assert_int_equal(send(fd, zero, sizeof zero, MSG_NOSIGNAL), 4);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), -1);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    close(fd);
    assert_int_equal(hsm_signer_fork(module(), token_uri(), pin(), NULL, &fd, &pid, tl, sizeof tl),
                     KL_OK);
    static const uint8_t half[] = {0, 0, 0, 10, 1, 2};
    assert_int_equal(send(fd, half, sizeof half, MSG_NOSIGNAL), (ssize_t)sizeof half);
    shutdown(fd, SHUT_WR);
    assert_int_equal(recv_answer(fd, ans, sizeof ans, &al), -1);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fd);
}

/* ---- dead signers ------------------------------------------------------------------------ */

static int sign_once(hsm_ctx *h)
{
    uint8_t dg[32] = {1}, sig[512];
    size_t sl = sizeof sig;
    kl_rc rc = hsm_key_sign_digest(h, "sig-p256", HSM_SIG_ECDSA, HSM_MD_NONE, dg, 32, sig, &sl);
    if (rc != KL_OK) {
        assert_int_equal(rc, KL_EHSM);
        assert_non_null(strstr(kl_errmsg(), "signer process"));
    }
    return rc == KL_OK;
}

/* Signers are children of a keeper, which replaces dead ones (one a second after the first
 * ones); with the keeper gone, nothing is replaced and requests fail at once. */
static void test_signer_killed(void **state)
{
    (void)state;
    hsm_ctx *h = spawn(2);
    EVP_PKEY *priv = NULL, *pub = NULL;
    pid_t pids[2], again[2];
    assert_int_equal(hsm_key_load(h, "sig-p256", &priv), KL_OK);
    assert_int_equal(hsm_key_public(h, "sig-p256", &pub), KL_OK);
    assert_int_equal(hsm_signer_pids(h, pids, 2), 2);
    pid_t keeper = hsm_signer_keeper_pid(h);
    assert_true(keeper > 0);
    assert_int_equal(waitpid(pids[0], NULL, WNOHANG), -1); /* not our children: the keeper's */
    assert_int_equal(errno, ECHILD);

    /* one dies: the request on it fails, the keeper replaces it at once (the first replacement
     * comes more than a second after the start) */
    sleep(1);
    assert_int_equal(kill(pids[0], SIGKILL), 0);
    usleep(100 * 1000);
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        ok += sign_once(h);
    }
    assert_true(ok >= 3);
    assert_int_equal(hsm_signer_pids(h, again, 2), 2);
    assert_true(again[0] != pids[0] && again[1] != pids[0]);
    digest_sign_verify(priv, pub, EVP_sha256());

    /* another, right away: not replaced within the second... */
    assert_int_equal(kill(again[0], SIGKILL), 0);
    usleep(100 * 1000);
    assert_int_equal(hsm_signer_revive(h), 0);
    assert_int_equal(hsm_signer_pids(h, pids, 2), 1);
    /* ...but after it */
    usleep(1100 * 1000);
    assert_int_equal(hsm_signer_revive(h), 1);
    assert_int_equal(hsm_signer_pids(h, pids, 2), 2);
    assert_int_equal(hsm_signer_revive(h), 0); /* all running: nothing to do */
    digest_sign_verify(priv, pub, EVP_sha256());

    /* the keeper killed: its signers end with it; a clean error at once, no hang */
    assert_int_equal(kill(keeper, SIGKILL), 0);
    usleep(300 * 1000);
    time_t t0 = time(NULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(sign_once(h), 0);
    }
    assert_non_null(strstr(kl_errmsg(), "no signer process is left"));
    assert_int_equal(hsm_signer_revive(h), 0);
    assert_int_equal(hsm_signer_pids(h, pids, 2), 0);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint8_t dg[32] = {1}, sig[512];
    size_t sl = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, priv), 1);
    assert_int_not_equal(EVP_DigestSign(m, sig, &sl, dg, sizeof dg), 1);
    EVP_MD_CTX_free(m);
    assert_true(time(NULL) - t0 < 5);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    hsm_close(h); /* reaps the keeper */
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* Several threads share two signers (free list, one request per channel). */
typedef struct {
    EVP_PKEY *priv, *pub;
} thr_arg;

static void *thr_sign(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 50; i++) {
        digest_sign_verify(a->priv, a->pub, EVP_sha256());
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    hsm_ctx *h = spawn(2);
    thr_arg a;
    assert_int_equal(hsm_key_load(h, "sig-p256", &a.priv), KL_OK);
    assert_int_equal(hsm_key_public(h, "sig-p256", &a.pub), KL_OK);
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, thr_sign, &a), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
    }
    EVP_PKEY_free(a.priv);
    EVP_PKEY_free(a.pub);
    hsm_close(h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_roundtrip), cmocka_unit_test(test_codec_malformed),
        cmocka_unit_test(test_remote_sign),     cmocka_unit_test(test_sign_digest),
        cmocka_unit_test(test_remote_refuses),  cmocka_unit_test(test_wrong_pin),
        cmocka_unit_test(test_live_malformed),  cmocka_unit_test(test_signer_killed),
        cmocka_unit_test(test_threads),         cmocka_unit_test(test_sign_keys),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
