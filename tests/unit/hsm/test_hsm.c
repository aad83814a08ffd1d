/* keyline: HSM layer tests against a real SoftHSM2 token (run under tests/lib/with-token.sh,
 * which exports KL_MODULE, KL_TOKEN_URI, KEYLINE_PIN and SOFTHSM2_CONF).
 *
 * What keyline claims about its keys is checked independently: through the module's raw
 * PKCS#11 function list and with OpenSC's pkcs11-tool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "hsm.h"
#include "token_env.h"

static const char *pin(void)
{
    return env_or_skip("KEYLINE_PIN");
}

static hsm_ctx *open_ok(void)
{
    hsm_ctx *h = NULL;
    kl_rc rc = hsm_open(&h, module(), token_uri(), pin());
    if (rc != KL_OK) {
        fail_msg("hsm_open: %s", kl_errmsg());
    }
    assert_non_null(h);
    return h;
}

/* ---- raw PKCS#11 access for independent checks -------------------------------------- */

typedef struct {
    void *dl;
    CK_FUNCTION_LIST_PTR fl;
    CK_SESSION_HANDLE sess;
    CK_SLOT_ID slot;
    char serial[17];
} raw_t;

/* Must be called while an hsm_ctx keeps the module initialised and logged in. */
static void raw_open(raw_t *r)
{
    CK_C_GetFunctionList gfl;
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    memset(r, 0, sizeof *r);
    r->dl = dlopen(module(), RTLD_NOW | RTLD_LOCAL);
    assert_non_null(r->dl);
    *(void **)(&gfl) = dlsym(r->dl, "C_GetFunctionList");
    assert_non_null(gfl);
    assert_int_equal(gfl(&r->fl), CKR_OK);
    assert_int_equal(r->fl->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    assert_int_equal(r->fl->C_GetSlotList(CK_TRUE, slots, &ns), CKR_OK);
    for (CK_ULONG i = 0; i < ns; i++) {
        CK_TOKEN_INFO ti;
        assert_int_equal(r->fl->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        if (memcmp(ti.label, "keyline-test ", 13) == 0) {
            size_t n = sizeof ti.serialNumber;
            r->slot = slots[i];
            memcpy(r->serial, ti.serialNumber, n);
            while (n > 0 && r->serial[n - 1] == ' ') {
                n--;
            }
            r->serial[n] = '\0';
            assert_int_equal(r->fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                                  NULL, NULL, &r->sess),
                             CKR_OK);
            return;
        }
    }
    fail_msg("token keyline-test not found through the raw API");
}

static void raw_close(raw_t *r)
{
    r->fl->C_CloseSession(r->sess);
    dlclose(r->dl);
}

static CK_OBJECT_HANDLE raw_find_priv(raw_t *r, const char *label)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof cls},
                         {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)}};
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    assert_int_equal(r->fl->C_FindObjectsInit(r->sess, t, 2), CKR_OK);
    assert_int_equal(r->fl->C_FindObjects(r->sess, &o, 1, &n), CKR_OK);
    r->fl->C_FindObjectsFinal(r->sess);
    assert_int_equal(n, 1);
    return o;
}

/* ---- helpers -------------------------------------------------------------------------- */

/* Sign msg with the token key (digest md; NULL for Ed25519: RFC 8032 PureEdDSA), verify it in
 * software with pub; a different message must not verify. */
static void sign_verify_md(EVP_PKEY *priv, EVP_PKEY *pub, const char *msg, const EVP_MD *md)
{
    EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    assert_non_null(s);
    assert_non_null(v);
    assert_int_equal(EVP_DigestSignInit(s, NULL, md, NULL, priv), 1);
    assert_int_equal(EVP_DigestSign(s, sig, &siglen, (const unsigned char *)msg, strlen(msg)), 1);
    assert_int_equal(EVP_DigestVerifyInit(v, NULL, md, NULL, pub), 1);
    assert_int_equal(EVP_DigestVerify(v, sig, siglen, (const unsigned char *)msg, strlen(msg)), 1);
    assert_int_equal(EVP_DigestVerifyInit(v, NULL, md, NULL, pub), 1);
    assert_int_not_equal(EVP_DigestVerify(v, sig, siglen, (const unsigned char *)"x", 1), 1);
    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
    ERR_clear_error();
}

static void sign_verify(EVP_PKEY *priv, EVP_PKEY *pub, const char *msg)
{
    sign_verify_md(priv, pub, msg, EVP_sha256());
}

/* DER out and back in before verifying: what a relying party sees (and OpenSSL 3.0 does not
 * verify an Ed25519 signature on a request it signed in memory: "unknown signature
 * algorithm"). */
#define REPARSE(type, obj)                                                                         \
    do {                                                                                           \
        unsigned char *der_ = NULL;                                                                \
        int n_ = i2d_##type(obj, &der_);                                                           \
        const unsigned char *p_ = der_;                                                            \
        assert_true(n_ > 0);                                                                       \
        type##_free(obj);                                                                          \
        obj = d2i_##type(NULL, &p_, n_);                                                           \
        assert_non_null(obj);                                                                      \
        OPENSSL_free(der_);                                                                        \
    } while (0)

/* X509_sign, X509_REQ_sign and X509_CRL_sign with the token key (digest md); verified in
 * software. */
static void x509_sign_verify_md(EVP_PKEY *priv, EVP_PKEY *pub, const EVP_MD *md)
{
    X509 *x = X509_new();
    X509_REQ *req = X509_REQ_new();
    X509_CRL *crl = X509_CRL_new();
    X509_NAME *n = X509_NAME_new();
    assert_non_null(x);
    assert_non_null(req);
    assert_non_null(crl);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"keyline hsm test", -1, -1,
                                                0),
                     1);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 42), 1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, pub), 1);
    assert_true(X509_sign(x, priv, md) > 0);
    REPARSE(X509, x);
    assert_int_equal(X509_verify(x, pub), 1);

    assert_int_equal(X509_REQ_set_subject_name(req, n), 1);
    assert_int_equal(X509_REQ_set_pubkey(req, pub), 1);
    assert_true(X509_REQ_sign(req, priv, md) > 0);
    REPARSE(X509_REQ, req);
    assert_int_equal(X509_REQ_verify(req, pub), 1);

    assert_int_equal(X509_CRL_set_version(crl, 1), 1);
    assert_int_equal(X509_CRL_set_issuer_name(crl, n), 1);
    ASN1_TIME *t = ASN1_TIME_set(NULL, time(NULL));
    assert_int_equal(X509_CRL_set1_lastUpdate(crl, t), 1);
    ASN1_TIME_free(t);
    assert_true(X509_CRL_sign(crl, priv, md) > 0);
    REPARSE(X509_CRL, crl);
    assert_int_equal(X509_CRL_verify(crl, pub), 1);

    X509_NAME_free(n);
    X509_free(x);
    X509_REQ_free(req);
    X509_CRL_free(crl);
    ERR_clear_error();
}

static void x509_sign_verify(EVP_PKEY *priv, EVP_PKEY *pub)
{
    x509_sign_verify_md(priv, pub, EVP_sha256());
}

/* ---- URI ------------------------------------------------------------------------------ */

static void test_uri_good(void **state)
{
    (void)state;
    hsm_uri u;
    assert_int_equal(hsm_uri_parse("pkcs11:token=My%20CA%3bRoot;serial=0123abcd;"
                                   "manufacturer=SoftHSM%20project;model=SoftHSM%20v2;"
                                   "object=ca%2Droot;type=private;id=%01%02"
                                   "?pin-source=file:/etc/keyline/pin&module-path=/usr/lib/"
                                   "softhsm/libsofthsm2.so",
                                   &u),
                     KL_OK);
    assert_string_equal(u.token, "My CA;Root");
    assert_string_equal(u.serial, "0123abcd");
    assert_string_equal(u.manufacturer, "SoftHSM project");
    assert_string_equal(u.model, "SoftHSM v2");
    assert_string_equal(u.object, "ca-root");
    assert_string_equal(u.pin_source, "file:/etc/keyline/pin");
    assert_string_equal(u.module_path, "/usr/lib/softhsm/libsofthsm2.so");
    hsm_uri_free(&u);
    assert_null(u.token);

    /* Empty path, scheme case-insensitive, empty attribute value. */
    assert_int_equal(hsm_uri_parse("pkcs11:", &u), KL_OK);
    assert_null(u.token);
    hsm_uri_free(&u);
    assert_int_equal(hsm_uri_parse("PKCS11:token=a;object=", &u), KL_OK);
    assert_string_equal(u.token, "a");
    assert_string_equal(u.object, "");
    hsm_uri_free(&u);
    /* Reserved characters in query values stay literal; %2f decodes to '/'. */
    assert_int_equal(hsm_uri_parse("pkcs11:object=a%2fb?module-path=%2Fx%20y", &u), KL_OK);
    assert_string_equal(u.object, "a/b");
    assert_string_equal(u.module_path, "/x y");
    hsm_uri_free(&u);
}

static void test_uri_bad(void **state)
{
    (void)state;
    static const char *bad[] = {
        "token=x",                /* no scheme */
        "file:/tmp/x",            /* other scheme */
        "pkcs11",                 /* no colon */
        "pkcs11:token",           /* no '=' */
        "pkcs11:=x",              /* empty name */
        "pkcs11:token=a%2",       /* truncated escape */
        "pkcs11:token=a%",        /* truncated escape */
        "pkcs11:token=a%zz",      /* not hex */
        "pkcs11:token=a%00b",     /* NUL */
        "pkcs11:token=a;token=b", /* RFC 7512: at most once */
        "pkcs11:object=a?pin-source=x&pin-source=y",
        "pkcs11:token=a?pin-value=1234", /* PINs do not go in URIs */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hsm_uri u;
        kl_rc rc = hsm_uri_parse(bad[i], &u);
        if (rc != KL_EUSAGE) {
            fail_msg("'%s' gave %s, expected usage", bad[i], kl_rc_name(rc));
        }
        assert_null(u.token);
        assert_null(u.object);
        assert_null(u.pin_source);
    }
    hsm_uri u;
    assert_int_equal(hsm_uri_parse(NULL, &u), KL_EUSAGE);
}

static void test_names(void **state)
{
    (void)state;
    for (int t = 0; t < HSM_KEY__COUNT; t++) {
        assert_int_equal(hsm_key_type_from_name(hsm_key_type_name((hsm_key_type)t)), t);
    }
    assert_int_equal(hsm_key_type_from_name("rsa-1024"), -1);
    assert_int_equal(hsm_key_type_from_name("rsa-2048"), HSM_KEY_RSA_2048);
    assert_int_equal(hsm_key_type_from_name(NULL), -1);
    assert_string_equal(hsm_ckr_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
    assert_string_equal(hsm_ckr_name(CKR_PIN_LOCKED), "CKR_PIN_LOCKED");
    assert_string_equal(hsm_ckr_name(CKR_VENDOR_DEFINED + 5), "CKR_VENDOR_DEFINED");
    assert_int_equal(hsm_rc_from_ckr(CKR_PIN_INCORRECT), KL_EPIN);
    assert_int_equal(hsm_rc_from_ckr(CKR_PIN_LOCKED), KL_ELOCKED);
    assert_int_equal(hsm_rc_from_ckr(CKR_TOKEN_NOT_PRESENT), KL_ENOTFOUND);
    assert_int_equal(hsm_rc_from_ckr(CKR_DEVICE_ERROR), KL_EHSM);
    assert_int_equal(hsm_rc_from_ckr(CKR_OK), KL_OK);
}

/* ---- open ----------------------------------------------------------------------------- */

static void test_open_good(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    assert_string_equal(hsm_token_label(h), "keyline-test");
    hsm_close(h);
    hsm_close(NULL);
}

static void test_open_wrong_pin(void **state)
{
    (void)state;
    hsm_ctx *h = (hsm_ctx *)1;
    assert_int_equal(hsm_open(&h, module(), token_uri(), "0000"), KL_EPIN);
    assert_null(h);
    assert_string_equal(kl_errmsg(), "wrong PIN (CKR_PIN_INCORRECT)");
    /* The failed attempt leaves nothing behind: the right PIN still works. */
    h = open_ok();
    hsm_close(h);
}

static void test_open_missing_token(void **state)
{
    (void)state;
    hsm_ctx *h = NULL;
    assert_int_equal(hsm_open(&h, module(), "pkcs11:token=no-such-token", pin()), KL_ENOTFOUND);
    assert_null(h);
    assert_non_null(strstr(kl_errmsg(), "no token matches pkcs11:token=no-such-token"));
    assert_int_equal(hsm_open(&h, module(), "pkcs11:token=keyline-test;serial=nope", pin()),
                     KL_ENOTFOUND);
    assert_int_equal(hsm_open(&h, module(), "token=keyline-test", pin()), KL_EUSAGE);
    assert_int_equal(hsm_open(&h, NULL, token_uri(), pin()), KL_EUSAGE);
}

static void test_open_bad_module(void **state)
{
    (void)state;
    hsm_ctx *h = NULL;
    assert_int_equal(hsm_open(&h, "/nonexistent/libnothing.so", token_uri(), pin()), KL_ENOTFOUND);
    assert_non_null(strstr(kl_errmsg(), "cannot be loaded"));
    /* A file that exists but is no shared object. */
    assert_int_equal(hsm_open(&h, "/etc/hostname", token_uri(), pin()), KL_ENOTFOUND);
    assert_non_null(strstr(kl_errmsg(), "cannot be loaded"));
    /* A shared object that is no PKCS#11 module. */
    assert_int_equal(hsm_open(&h, "/lib/x86_64-linux-gnu/libz.so.1", token_uri(), pin()),
                     KL_ENOTFOUND);
    assert_non_null(strstr(kl_errmsg(), "C_GetFunctionList"));
    assert_null(h);
}

static void test_open_match_attrs(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    raw_t r;
    char uri[256];
    raw_open(&r);
    snprintf(uri, sizeof uri, "pkcs11:token=keyline%%2Dtest;serial=%s", r.serial);
    raw_close(&r);
    hsm_close(h);

    /* Percent-encoded attributes match the token fields; module from the URI query. */
    assert_int_equal(hsm_open(&h, module(), uri, pin()), KL_OK);
    hsm_close(h);
    snprintf(uri, sizeof uri,
             "pkcs11:manufacturer=SoftHSM%%20project;model=SoftHSM%%20v2;token=keyline-test"
             "?module-path=%s",
             module());
    assert_int_equal(hsm_open(&h, NULL, uri, pin()), KL_OK);
    hsm_close(h);
}

static void test_open_twice_refused(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok(), *h2 = NULL;
    /* The login is per token and process: a second context would accept any PIN. */
    assert_int_equal(hsm_open(&h2, module(), token_uri(), "0000"), KL_EUSAGE);
    assert_null(h2);
    assert_non_null(strstr(kl_errmsg(), "already open"));
    hsm_close(h);
    h = open_ok();
    hsm_close(h);
}

static void test_open_no_pin(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = NULL, *k = NULL;
    assert_int_equal(hsm_key_generate(h, "nopin-key", HSM_KEY_EC_P256, &pub), KL_OK);
    EVP_PKEY_free(pub);
    hsm_close(h);

    assert_int_equal(hsm_open(&h, module(), token_uri(), NULL), KL_OK);
    assert_int_equal(hsm_key_load(h, "nopin-key", &k), KL_ENOTFOUND);
    assert_non_null(strstr(kl_errmsg(), "not logged in"));
    assert_null(k);
    assert_int_equal(hsm_key_generate(h, "nopin-key2", HSM_KEY_EC_P256, NULL), KL_EUSAGE);
    /* Public objects are readable without login. */
    assert_int_equal(hsm_key_public(h, "nopin-key", &pub), KL_OK);
    assert_int_equal(hsm_key_type_of(pub), HSM_KEY_EC_P256);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

/* Through the shim module: SoftHSM never locks a PIN. */
static void test_open_locked(void **state)
{
    (void)state;
    hsm_ctx *h = NULL;
    setenv("KL_SHIM_TARGET", module(), 1);
    setenv("KL_SHIM_MODE", "login-locked", 1);
    assert_int_equal(hsm_open(&h, KL_SHIM_PATH, token_uri(), pin()), KL_ELOCKED);
    assert_string_equal(kl_errmsg(), "PIN locked (CKR_PIN_LOCKED)");
    assert_null(h);
    setenv("KL_SHIM_MODE", "flag-locked", 1);
    assert_int_equal(hsm_open(&h, KL_SHIM_PATH, token_uri(), pin()), KL_ELOCKED);
    assert_string_equal(kl_errmsg(), "PIN locked (CKR_PIN_LOCKED)");
    setenv("KL_SHIM_MODE", "none", 1);
    assert_int_equal(hsm_open(&h, KL_SHIM_PATH, token_uri(), pin()), KL_OK);
    hsm_close(h);
    unsetenv("KL_SHIM_MODE");
}

/* ---- keys ----------------------------------------------------------------------------- */

static void gen_sign_verify(hsm_key_type type, const char *label)
{
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = NULL, *priv = NULL, *pub2 = NULL;
    char uri[128];
    assert_int_equal(hsm_key_generate(h, label, type, &pub), KL_OK);
    assert_non_null(pub);
    assert_int_equal(hsm_key_type_of(pub), (int)type);
    if (hsm_key_load(h, label, &priv) != KL_OK) {
        fail_msg("hsm_key_load: %s", kl_errmsg());
    }
    assert_int_equal(hsm_key_type_of(priv), (int)type);
    assert_int_equal(EVP_PKEY_eq(pub, priv), 1);
    sign_verify(priv, pub, "keyline test message");
    x509_sign_verify(priv, pub);
    assert_int_equal(hsm_key_public(h, label, &pub2), KL_OK);
    assert_int_equal(EVP_PKEY_eq(pub, pub2), 1);
    EVP_PKEY_free(pub2);
    EVP_PKEY_free(priv);
    priv = NULL;
    /* By URI, too. */
    snprintf(uri, sizeof uri, "pkcs11:token=keyline-test;object=%s;type=private", label);
    assert_int_equal(hsm_key_load(h, uri, &priv), KL_OK);
    sign_verify(priv, pub, "by URI");
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    hsm_close(h);

    /* A fresh context (new module load, new libp11 key list) finds the key on the token. */
    h = open_ok();
    assert_int_equal(hsm_key_load(h, label, &priv), KL_OK);
    assert_int_equal(hsm_key_public(h, label, &pub), KL_OK);
    sign_verify(priv, pub, "after reopen");
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

static void test_gen_p256(void **state)
{
    (void)state;
    gen_sign_verify(HSM_KEY_EC_P256, "k-p256");
}

static void test_gen_p384(void **state)
{
    (void)state;
    gen_sign_verify(HSM_KEY_EC_P384, "k-p384");
}

static void test_gen_rsa3072(void **state)
{
    (void)state;
    gen_sign_verify(HSM_KEY_RSA_3072, "k-rsa3072");
}

static void test_gen_rsa2048(void **state)
{
    (void)state;
    gen_sign_verify(HSM_KEY_RSA_2048, "k-rsa2048");
}

static void test_gen_rsa4096(void **state)
{
    (void)state;
    gen_sign_verify(HSM_KEY_RSA_4096, "k-rsa4096");
}

/* hsm_cert_put: a CKO_CERTIFICATE beside the key, same CKA_ID, replaced by a second put; a
 * certificate for a label without a key and bytes that are no certificate are refused. */
static void test_cert_put(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_int_equal(hsm_key_generate(h, "k-cert", HSM_KEY_EC_P256, &pub), KL_OK);
    assert_int_equal(hsm_key_load(h, "k-cert", &priv), KL_OK);
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"cert object", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, pub), 1);
    assert_true(X509_sign(x, priv, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    assert_true(len > 0);
    assert_int_equal(hsm_cert_put(h, "k-cert", der, (size_t)len), KL_OK);
    assert_int_equal(hsm_cert_put(h, "k-cert", der, (size_t)len), KL_OK); /* replaces */
    assert_int_equal(hsm_cert_put(h, "no-such-key", der, (size_t)len), KL_ENOTFOUND);
    assert_int_equal(hsm_cert_put(h, "k-cert", der, (size_t)len - 1), KL_EINPUT);
    /* the key still loads and signs (libp11 enumerates past the certificate object) */
    EVP_PKEY_free(priv);
    priv = NULL;
    hsm_close(h);
    h = open_ok();
    assert_int_equal(hsm_key_load(h, "k-cert", &priv), KL_OK);
    sign_verify(priv, pub, "with a certificate object");
    OPENSSL_free(der);
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

/* hsm_ecdh: a CA key (signing only, no CKA_DERIVE) never does ECDH; an absent key, a bad point
 * are refused. The path with a derive key: tests/integration/matter_passcode.sh (pkcs11-tool
 * made the key). */
static void test_ecdh_refusals(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = NULL;
    uint8_t peer[65], z[32];
    size_t n = sizeof peer;
    assert_int_equal(hsm_key_generate(h, "k-ecdh", HSM_KEY_EC_P256, &pub), KL_OK);
    assert_int_equal(EVP_PKEY_get_octet_string_param(pub, "encoded-pub-key", peer, n, &n), 1);
    assert_int_equal(hsm_ecdh(h, "k-ecdh", peer, z), KL_EHSM);
    if (!strstr(kl_errmsg(), "C_DeriveKey")) {
        fail_msg("hsm_ecdh on a signing key: %s", kl_errmsg());
    }
    assert_int_equal(hsm_ecdh(h, "no-such-key", peer, z), KL_ENOTFOUND);
    peer[0] = 0x02;
    assert_int_equal(hsm_ecdh(h, "k-ecdh", peer, z), KL_EUSAGE);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

static void test_gen_after_load(void **state)
{
    (void)state;
    /* libp11 has already enumerated (and cached) the key list when the second key is made:
     * the new key must still be found, and the first key must keep working. */
    hsm_ctx *h = open_ok();
    EVP_PKEY *pa = NULL, *pb = NULL, *ka = NULL, *kb = NULL;
    assert_int_equal(hsm_key_generate(h, "seq-a", HSM_KEY_EC_P256, &pa), KL_OK);
    assert_int_equal(hsm_key_load(h, "seq-a", &ka), KL_OK);
    for (int i = 0; i < 5; i++) {
        char l[32];
        snprintf(l, sizeof l, "seq-filler-%d", i);
        assert_int_equal(hsm_key_generate(h, l, HSM_KEY_EC_P256, NULL), KL_OK);
        EVP_PKEY *k = NULL;
        assert_int_equal(hsm_key_load(h, l, &k), KL_OK);
        EVP_PKEY_free(k);
    }
    assert_int_equal(hsm_key_generate(h, "seq-b", HSM_KEY_EC_P384, &pb), KL_OK);
    assert_int_equal(hsm_key_load(h, "seq-b", &kb), KL_OK);
    sign_verify(ka, pa, "first");
    sign_verify(kb, pb, "second");
    EVP_PKEY_free(pa);
    EVP_PKEY_free(pb);
    EVP_PKEY_free(ka);
    EVP_PKEY_free(kb);
    hsm_close(h);
}

static void test_gen_duplicate(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    assert_int_equal(hsm_key_generate(h, "dup", HSM_KEY_EC_P256, NULL), KL_OK);
    assert_int_equal(hsm_key_generate(h, "dup", HSM_KEY_EC_P256, NULL), KL_EEXIST);
    assert_non_null(strstr(kl_errmsg(), "'dup' already exists"));
    assert_int_equal(hsm_key_generate(h, "dup", HSM_KEY_RSA_3072, NULL), KL_EEXIST);
    assert_int_equal(hsm_key_generate(h, "", HSM_KEY_EC_P256, NULL), KL_EUSAGE);
    assert_int_equal(hsm_key_generate(h, NULL, HSM_KEY_EC_P256, NULL), KL_EUSAGE);
    assert_int_equal(hsm_key_generate(h, "badtype", (hsm_key_type)99, NULL), KL_EUSAGE);

    /* A non-key object (say, the certificate of a key) may share the label. */
    raw_t r;
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE dt[3] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_TOKEN, &no, 1}, {CKA_LABEL, "shared-label", 12}};
    CK_OBJECT_HANDLE d;
    raw_open(&r);
    assert_int_equal(r.fl->C_CreateObject(r.sess, dt, 3, &d), CKR_OK);
    assert_int_equal(hsm_key_generate(h, "shared-label", HSM_KEY_EC_P256, NULL), KL_OK);
    assert_int_equal(hsm_key_generate(h, "shared-label", HSM_KEY_EC_P256, NULL), KL_EEXIST);
    raw_close(&r);
    hsm_close(h);
}

static void test_missing_key(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *k = (EVP_PKEY *)1;
    assert_int_equal(hsm_key_load(h, "no-such-key", &k), KL_ENOTFOUND);
    assert_null(k);
    assert_string_equal(kl_errmsg(), "no key labelled no-such-key on token keyline-test");
    assert_int_equal(hsm_key_public(h, "no-such-key", &k), KL_ENOTFOUND);
    assert_int_equal(hsm_key_load(h, "pkcs11:token=other;object=k-p256", &k), KL_ENOTFOUND);
    assert_int_equal(hsm_key_load(h, "pkcs11:token=keyline-test", &k), KL_EUSAGE);
    assert_int_equal(hsm_key_load(h, "", &k), KL_EUSAGE);
    hsm_close(h);
}

/* Not beside RSA/EC keys: libp11 0.4.12 would then see none of them. */
static void test_ed25519_mixed_refused(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = (EVP_PKEY *)1;
    assert_int_equal(hsm_key_generate(h, "ed", HSM_KEY_ED25519, &pub), KL_EPOLICY);
    assert_null(pub);
    assert_non_null(strstr(kl_errmsg(), "libp11 0.4.12"));
    assert_non_null(strstr(kl_errmsg(), "token of its own"));
    hsm_close(h);
}

/* ---- Ed25519 on a token of its own (keyline-ed, made by main) ---------------------------- */

static hsm_ctx *open_ed(void)
{
    hsm_ctx *h = NULL;
    if (hsm_open(&h, module(), "pkcs11:token=keyline-ed", pin()) != KL_OK) {
        fail_msg("hsm_open keyline-ed: %s", kl_errmsg());
    }
    return h;
}

static void test_ed25519_token(void **state)
{
    (void)state;
    hsm_ctx *h = open_ed();
    EVP_PKEY *pub = NULL, *priv = NULL, *pub2 = NULL;
    unsigned f = 0;
    assert_int_equal(hsm_key_generate(h, "ed-ca", HSM_KEY_ED25519, &pub), KL_OK);
    assert_int_equal(hsm_key_type_of(pub), HSM_KEY_ED25519);
    /* the same hygiene as every CA key */
    assert_int_equal(hsm_key_protection(h, "ed-ca", &f), KL_OK);
    assert_true((f & HSM_PROT_SENSITIVE) && (f & HSM_PROT_ALWAYS_SENSITIVE));
    assert_true((f & HSM_PROT_NEVER_EXTRACTABLE) && (f & HSM_PROT_PRIVATE) && (f & HSM_PROT_TOKEN));
    assert_false(f & (HSM_PROT_EXTRACTABLE | HSM_PROT_MODIFIABLE));
    if (hsm_key_load(h, "ed-ca", &priv) != KL_OK) {
        fail_msg("hsm_key_load: %s", kl_errmsg());
    }
    assert_int_equal(hsm_key_type_of(priv), HSM_KEY_ED25519);
    assert_int_equal(EVP_PKEY_eq(pub, priv), 1);
    sign_verify_md(priv, pub, "keyline ed25519 message", NULL);
    x509_sign_verify_md(priv, pub, NULL);
    assert_int_equal(hsm_key_public(h, "ed-ca", &pub2), KL_OK);
    assert_int_equal(EVP_PKEY_eq(pub, pub2), 1);
    EVP_PKEY_free(pub2);
    /* a second Ed25519 key may share the token (a rollover); an RSA or EC key may not */
    assert_int_equal(hsm_key_generate(h, "ed-ca2", HSM_KEY_ED25519, NULL), KL_OK);
    assert_int_equal(hsm_key_generate(h, "ec-beside", HSM_KEY_EC_P256, NULL), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "Ed25519"));
    EVP_PKEY_free(priv);
    priv = NULL;
    hsm_close(h);

    /* a fresh context finds it again, by URI too, without libp11 */
    h = open_ed();
    assert_int_equal(hsm_key_load(h, "pkcs11:token=keyline-ed;object=ed-ca", &priv), KL_OK);
    sign_verify_md(priv, pub, "after reopen", NULL);
    EVP_PKEY_free(priv);
    assert_int_equal(hsm_key_destroy(h, "ed-ca2"), KL_OK);
    assert_int_equal(hsm_key_load(h, "ed-ca2", &priv), KL_ENOTFOUND);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

typedef struct {
    EVP_PKEY *priv, *pub;
} ed_thr;

static void *ed_signer(void *p)
{
    ed_thr *a = p;
    for (int i = 0; i < 50; i++) {
        EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
        unsigned char sig[64], msg[16];
        size_t siglen = sizeof sig;
        snprintf((char *)msg, sizeof msg, "m%d", i);
        int ok = s && v && EVP_DigestSignInit(s, NULL, NULL, NULL, a->priv) == 1 &&
                 EVP_DigestSign(s, sig, &siglen, msg, sizeof msg) == 1 &&
                 EVP_DigestVerifyInit(v, NULL, NULL, NULL, a->pub) == 1 &&
                 EVP_DigestVerify(v, sig, siglen, msg, sizeof msg) == 1;
        EVP_MD_CTX_free(s);
        EVP_MD_CTX_free(v);
        if (!ok) {
            return (void *)1;
        }
    }
    return NULL;
}

/* keyline-cad signs from several threads: the token session is shared under the context's
 * mutex */
static void test_ed25519_threads(void **state)
{
    (void)state;
    hsm_ctx *h = open_ed();
    ed_thr a = {NULL, NULL};
    pthread_t th[4];
    assert_int_equal(hsm_key_load(h, "ed-ca", &a.priv), KL_OK);
    assert_int_equal(hsm_key_public(h, "ed-ca", &a.pub), KL_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, ed_signer, &a), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r = (void *)1;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
    EVP_PKEY_free(a.priv);
    EVP_PKEY_free(a.pub);
    hsm_close(h);
}

static void test_cache_cheap(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *pub = NULL;
    struct timespec a, b;
    assert_int_equal(hsm_key_generate(h, "cache-key", HSM_KEY_EC_P256, &pub), KL_OK);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 20000; i++) {
        EVP_PKEY *k = NULL;
        assert_int_equal(hsm_key_load(h, "cache-key", &k), KL_OK);
        EVP_PKEY_free(k);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(s < 2.0);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

/* ---- non-extractable ------------------------------------------------------------------ */

static void test_nonextractable(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    unsigned f = 0;
    raw_t r;
    assert_int_equal(hsm_key_generate(h, "prot-ec", HSM_KEY_EC_P256, NULL), KL_OK);
    assert_int_equal(hsm_key_protection(h, "prot-ec", &f), KL_OK);
    assert_true(f & HSM_PROT_SENSITIVE);
    assert_true(f & HSM_PROT_ALWAYS_SENSITIVE);
    assert_true(f & HSM_PROT_NEVER_EXTRACTABLE);
    assert_true(f & HSM_PROT_PRIVATE);
    assert_true(f & HSM_PROT_TOKEN);
    assert_false(f & HSM_PROT_EXTRACTABLE);
    assert_false(f & HSM_PROT_MODIFIABLE);
    assert_int_equal(hsm_key_protection(h, "no-such-key", &f), KL_ENOTFOUND);

    /* Independently, through the module's own function list. */
    raw_open(&r);
    CK_OBJECT_HANDLE o = raw_find_priv(&r, "prot-ec");
    CK_BBOOL sens = 0, extr = 1, never = 0, priv = 0, sign = 0, decrypt = 1;
    CK_ATTRIBUTE t[6] = {
        {CKA_SENSITIVE, &sens, 1}, {CKA_EXTRACTABLE, &extr, 1}, {CKA_NEVER_EXTRACTABLE, &never, 1},
        {CKA_PRIVATE, &priv, 1},   {CKA_SIGN, &sign, 1},        {CKA_DECRYPT, &decrypt, 1}};
    assert_int_equal(r.fl->C_GetAttributeValue(r.sess, o, t, 6), CKR_OK);
    assert_int_equal(sens, CK_TRUE);
    assert_int_equal(extr, CK_FALSE);
    assert_int_equal(never, CK_TRUE);
    assert_int_equal(priv, CK_TRUE);
    assert_int_equal(sign, CK_TRUE);
    assert_int_equal(decrypt, CK_FALSE);
    /* The private value cannot be read. */
    unsigned char buf[128];
    CK_ATTRIBUTE v = {CKA_VALUE, buf, sizeof buf};
    assert_int_equal(r.fl->C_GetAttributeValue(r.sess, o, &v, 1), CKR_ATTRIBUTE_SENSITIVE);
    /* Both halves share a non-empty CKA_ID. */
    unsigned char id1[64], id2[64];
    CK_ATTRIBUTE ia = {CKA_ID, id1, sizeof id1};
    assert_int_equal(r.fl->C_GetAttributeValue(r.sess, o, &ia, 1), CKR_OK);
    assert_true(ia.ulValueLen >= 16);
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE ft[2] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, "prot-ec", 7}};
    CK_OBJECT_HANDLE po;
    CK_ULONG n = 0;
    assert_int_equal(r.fl->C_FindObjectsInit(r.sess, ft, 2), CKR_OK);
    assert_int_equal(r.fl->C_FindObjects(r.sess, &po, 1, &n), CKR_OK);
    r.fl->C_FindObjectsFinal(r.sess);
    assert_int_equal(n, 1);
    CK_ATTRIBUTE ib = {CKA_ID, id2, sizeof id2};
    assert_int_equal(r.fl->C_GetAttributeValue(r.sess, po, &ib, 1), CKR_OK);
    assert_int_equal(ia.ulValueLen, ib.ulValueLen);
    assert_memory_equal(id1, id2, ia.ulValueLen);
    /* Neither half can be changed: a PIN holder cannot give the CA key decrypt or export, and
     * the public half verifies only. */
    CK_BBOOL yes = CK_TRUE, pmod = 1, penc = 1, pwrap = 1;
    CK_ATTRIBUTE mk = {CKA_DECRYPT, &yes, 1};
    assert_int_not_equal(r.fl->C_SetAttributeValue(r.sess, o, &mk, 1), CKR_OK);
    CK_ATTRIBUTE pt[3] = {
        {CKA_MODIFIABLE, &pmod, 1}, {CKA_ENCRYPT, &penc, 1}, {CKA_WRAP, &pwrap, 1}};
    assert_int_equal(r.fl->C_GetAttributeValue(r.sess, po, pt, 3), CKR_OK);
    assert_int_equal(pmod, CK_FALSE);
    assert_int_equal(penc, CK_FALSE);
    assert_int_equal(pwrap, CK_FALSE);
    raw_close(&r);
    hsm_close(h);

    /* And with a third-party tool, in another process. */
    char cmd[1024], line[512];
    int in_block = 0, saw_label = 0, saw_never = 0, saw_sensitive = 0;
    snprintf(cmd, sizeof cmd,
             "pkcs11-tool --module '%s' --token-label keyline-test --login --pin '%s' "
             "--list-objects --type privkey 2>&1",
             module(), pin());
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    while (fgets(line, sizeof line, p) != NULL) {
        if (strncmp(line, "Private Key Object", 18) == 0) {
            in_block = 0;
        }
        if (strstr(line, "label:") != NULL) {
            in_block = strstr(line, "prot-ec") != NULL;
            saw_label |= in_block;
        }
        if (in_block && strstr(line, "Access:") != NULL) {
            saw_never = strstr(line, "never extractable") != NULL;
            saw_sensitive = strstr(line, "sensitive") != NULL;
        }
    }
    assert_int_equal(pclose(p), 0);
    assert_true(saw_label);
    assert_true(saw_never);
    assert_true(saw_sensitive);
}

/* ---- threads -------------------------------------------------------------------------- */

typedef struct {
    EVP_PKEY *priv, *pub;
    int id, ok;
} thr_arg;

#define THREADS 4
#define PER_THREAD 200

static void *signer(void *p)
{
    thr_arg *a = p;
    EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    for (int i = 0; i < PER_THREAD; i++) {
        unsigned char msg[32], sig[512];
        size_t siglen = sizeof sig;
        int n = snprintf((char *)msg, sizeof msg, "thread %d msg %d", a->id, i);
        if (EVP_DigestSignInit(s, NULL, EVP_sha256(), NULL, a->priv) == 1 &&
            EVP_DigestSign(s, sig, &siglen, msg, (size_t)n) == 1 &&
            EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, a->pub) == 1 &&
            EVP_DigestVerify(v, sig, siglen, msg, (size_t)n) == 1) {
            a->ok++;
        }
    }
    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
    return NULL;
}

static void run_threads(hsm_ctx *h, const char *label, int load_per_thread)
{
    pthread_t t[THREADS];
    thr_arg a[THREADS];
    EVP_PKEY *priv = NULL, *pub = NULL;
    assert_int_equal(hsm_key_load(h, label, &priv), KL_OK);
    assert_int_equal(hsm_key_public(h, label, &pub), KL_OK);
    for (int i = 0; i < THREADS; i++) {
        a[i].priv = priv;
        a[i].pub = pub;
        a[i].id = i;
        a[i].ok = 0;
        if (load_per_thread) {
            assert_int_equal(hsm_key_load(h, label, &a[i].priv), KL_OK);
        }
        assert_int_equal(pthread_create(&t[i], NULL, signer, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].ok, PER_THREAD);
        if (load_per_thread) {
            EVP_PKEY_free(a[i].priv);
        }
    }
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

static void test_threads(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    assert_int_equal(hsm_key_generate(h, "thr-ec", HSM_KEY_EC_P256, NULL), KL_OK);
    run_threads(h, "thr-ec", 0); /* one EVP_PKEY shared by all threads */
    run_threads(h, "thr-ec", 1); /* one hsm_key_load per thread */
    hsm_close(h);
}

static void test_threads_rsa(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    run_threads(h, "k-rsa3072", 0);
    hsm_close(h);
}

/* ---- Ed25519 on the token (must run last: libp11 then sees no key on this token) ------ */

static void test_ed25519_on_token(void **state)
{
    (void)state;
    hsm_ctx *h = open_ok();
    EVP_PKEY *k = NULL, *cached = NULL, *pub = NULL;
    raw_t r;
    static CK_BYTE ed_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70}; /* 1.3.101.112 */
    CK_BBOOL yes = CK_TRUE;
    CK_MECHANISM mech = {CKM_EC_EDWARDS_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pt[3] = {
        {CKA_TOKEN, &yes, 1}, {CKA_EC_PARAMS, ed_oid, sizeof ed_oid}, {CKA_LABEL, "edkey", 5}};
    CK_ATTRIBUTE st[4] = {
        {CKA_TOKEN, &yes, 1}, {CKA_PRIVATE, &yes, 1}, {CKA_SIGN, &yes, 1}, {CKA_LABEL, "edkey", 5}};
    CK_OBJECT_HANDLE po, so;

    assert_int_equal(hsm_key_generate(h, "before-ed", HSM_KEY_EC_P256, &pub), KL_OK);
    assert_int_equal(hsm_key_load(h, "k-p256", &cached), KL_OK);
    raw_open(&r);
    assert_int_equal(r.fl->C_GenerateKeyPair(r.sess, &mech, pt, 3, st, 4, &po, &so), CKR_OK);
    raw_close(&r);

    /* A lookup says why it fails instead of a baffling "not found". */
    assert_int_equal(hsm_key_load(h, "before-ed", &k), KL_EHSM);
    assert_null(k);
    fprintf(stderr, "# %s\n", kl_errmsg());
    assert_non_null(strstr(kl_errmsg(), "Ed25519"));
    assert_non_null(strstr(kl_errmsg(), "'edkey'"));

    /* Keys loaded before keep working, held or from the context's cache. */
    EVP_PKEY *kp = NULL, *again = NULL;
    assert_int_equal(hsm_key_public(h, "k-p256", &kp), KL_OK);
    sign_verify(cached, kp, "loaded before the Ed25519 key appeared");
    assert_int_equal(hsm_key_load(h, "k-p256", &again), KL_OK);
    sign_verify(again, kp, "from the cache");
    EVP_PKEY_free(again);
    EVP_PKEY_free(cached);
    EVP_PKEY_free(kp);
    hsm_close(h);

    h = open_ok();
    assert_int_equal(hsm_key_load(h, "before-ed", &k), KL_EHSM);
    assert_non_null(strstr(kl_errmsg(), "Ed25519"));
    assert_int_equal(hsm_key_load(h, "no-such-key", &k), KL_EHSM);
    fprintf(stderr, "# %s\n", kl_errmsg());
    assert_non_null(strstr(kl_errmsg(), "Ed25519"));
    /* The raw-API paths are unaffected. */
    EVP_PKEY *pub2 = NULL;
    assert_int_equal(hsm_key_public(h, "before-ed", &pub2), KL_OK);
    assert_int_equal(EVP_PKEY_eq(pub, pub2), 1);
    EVP_PKEY_free(pub2);
    EVP_PKEY_free(pub);
    hsm_close(h);
}

int main(void)
{
    /* Ed25519 keys live on a token of their own (libp11 0.4.12 cannot see a token that holds
     * one): a second token in the same SoftHSM store, made before the module is loaded */
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "softhsm2-util --init-token --free --label keyline-ed --pin '%s' --so-pin 5678 "
             ">/dev/null",
             pin());
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make the keyline-ed token\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_good),
        cmocka_unit_test(test_uri_bad),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_open_good),
        cmocka_unit_test(test_open_wrong_pin),
        cmocka_unit_test(test_open_missing_token),
        cmocka_unit_test(test_open_bad_module),
        cmocka_unit_test(test_open_match_attrs),
        cmocka_unit_test(test_open_twice_refused),
        cmocka_unit_test(test_open_no_pin),
        cmocka_unit_test(test_open_locked),
        cmocka_unit_test(test_gen_p256),
        cmocka_unit_test(test_gen_p384),
        cmocka_unit_test(test_gen_rsa3072),
        cmocka_unit_test(test_gen_rsa2048),
        cmocka_unit_test(test_gen_rsa4096),
        cmocka_unit_test(test_cert_put),
        cmocka_unit_test(test_ecdh_refusals),
        cmocka_unit_test(test_gen_after_load),
        cmocka_unit_test(test_gen_duplicate),
        cmocka_unit_test(test_missing_key),
        cmocka_unit_test(test_ed25519_mixed_refused),
        cmocka_unit_test(test_ed25519_token),
        cmocka_unit_test(test_ed25519_threads),
        cmocka_unit_test(test_cache_cheap),
        cmocka_unit_test(test_nonextractable),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_rsa),
        cmocka_unit_test(test_ed25519_on_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
