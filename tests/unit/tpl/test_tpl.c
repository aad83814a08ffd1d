/* Unit tests for ca/tpl*.c: template loading, policy (every refusal), building, lint.
 * Keys are OpenSSL software keys; the hierarchy root -> factory-ca / field-ca -> devices is
 * built through tpl_policy_build + tpl_lint and signed in software.
 * Env: KL_TEMPLATES_DIR (the shipped templates/), KL_TEST_DATA (tests/data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tpl.h"

static const char *g_tpl_dir;
static const char *g_data_dir;

/* ---- helpers ------------------------------------------------------------------------------ */

static EVP_PKEY *key_new(const char *kind)
{
    EVP_PKEY *k = NULL;
    if (strcmp(kind, "P-256") == 0) {
        k = EVP_EC_gen("P-256");
    } else if (strcmp(kind, "P-384") == 0) {
        k = EVP_EC_gen("P-384");
    } else if (strcmp(kind, "RSA-2048") == 0) {
        k = EVP_RSA_gen(2048);
    } else if (strcmp(kind, "RSA-3072") == 0) {
        k = EVP_RSA_gen(3072);
    }
    assert_non_null(k);
    return k;
}

/* "CN=a,O=b" ; "+" joins the next attribute to the previous RDN (multi-valued). Values are
 * UTF8String as given, without OpenSSL's length/charset table, so tests can build subjects
 * the policy must refuse. */
static X509_NAME *name_new(const char *spec)
{
    X509_NAME *n = X509_NAME_new();
    assert_non_null(n);
    if (!spec || !*spec) {
        return n;
    }
    char *dup = strdup(spec), *save = NULL;
    for (char *rdn = strtok_r(dup, ",", &save); rdn; rdn = strtok_r(NULL, ",", &save)) {
        int set = 0;
        char *save2 = NULL;
        for (char *av = strtok_r(rdn, "+", &save2); av; av = strtok_r(NULL, "+", &save2)) {
            char *eq = strchr(av, '=');
            assert_non_null(eq);
            *eq = 0;
            assert_int_equal(X509_NAME_add_entry_by_txt(n, av, V_ASN1_UTF8STRING,
                                                        (unsigned char *)eq + 1,
                                                        (int)strlen(eq + 1), -1, set),
                             1);
            set = -1; /* further attributes join this RDN */
        }
    }
    free(dup);
    return n;
}

typedef struct {
    const char *name;  /* OpenSSL extension name or OID */
    const char *value; /* X509V3_EXT_nconf syntax */
} ext_spec;

static X509_REQ *csr_new(EVP_PKEY *k, const char *subject, const ext_spec *exts)
{
    X509_REQ *r = X509_REQ_new();
    assert_non_null(r);
    /* an X509_REQ_new() version is an empty INTEGER (X509_REQ_get_version: -1), encoded as 0 */
    assert_int_equal(X509_REQ_set_version(r, 0), 1);
    X509_NAME *n = name_new(subject);
    assert_int_equal(X509_REQ_set_subject_name(r, n), 1);
    X509_NAME_free(n);
    assert_int_equal(X509_REQ_set_pubkey(r, k), 1);
    if (exts && exts[0].name) {
        STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
        for (const ext_spec *e = exts; e->name; e++) {
            X509_EXTENSION *x = X509V3_EXT_nconf(NULL, NULL, e->name, e->value);
            assert_non_null(x);
            sk_X509_EXTENSION_push(sk, x);
        }
        assert_int_equal(X509_REQ_add_extensions(r, sk), 1);
        sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
    }
    assert_true(X509_REQ_sign(r, k, EVP_sha256()) > 0);
    return r;
}

static ASN1_INTEGER *serial_new(void)
{
    unsigned char raw[16];
    assert_int_equal(RAND_bytes(raw, sizeof raw), 1);
    raw[0] = (unsigned char)((raw[0] & 0x3f) | 0x40);
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    assert_non_null(ai);
    return ai;
}

static tpl *tpl_get(const char *name)
{
    tpl *t = NULL;
    kl_rc rc = tpl_load(g_tpl_dir, name, &t);
    if (rc != KL_OK) {
        fail_msg("tpl_load %s: %s", name, kl_errmsg());
    }
    return t;
}

typedef struct {
    const char *device_id;
    const X509_NAME *subject;
    const char *crl_url, *ocsp_url, *ca_issuers_url, *issuer_label;
    time_t now;
} issue_opts;

/* Policy + build + lint (+ sign when sign_key). Returns the rc; *out the certificate. */
static kl_rc issue(const char *tname, X509_REQ *csr, X509 *issuer, EVP_PKEY *sign_key,
                   const issue_opts *o, X509 **out)
{
    static const issue_opts none;
    if (!o) {
        o = &none;
    }
    tpl *t = tpl_get(tname);
    ASN1_INTEGER *serial = serial_new();
    X509 *x = NULL;
    tpl_policy_in in = {
        .t = t,
        .csr = csr,
        .device_id = o->device_id,
        .subject = o->subject,
        .issuer_cert = issuer,
        .crl_url = o->crl_url,
        .ocsp_url = o->ocsp_url,
        .ca_issuers_url = o->ca_issuers_url,
        .now = o->now,
        .issuer_label = o->issuer_label,
    };
    kl_rc rc = tpl_policy_build(&in, serial, &x);
    if (rc == KL_OK) {
        assert_non_null(x);
        rc = tpl_lint(t, x, issuer);
        if (rc != KL_OK) {
            fail_msg("lint failed on a policy-built %s certificate: %s", tname, kl_errmsg());
        }
        if (sign_key) {
            assert_true(X509_sign(x, sign_key, EVP_sha256()) > 0);
        }
    } else {
        assert_null(x);
    }
    ASN1_INTEGER_free(serial);
    tpl_free(t);
    *out = x;
    return rc;
}

#define assert_refused(rc, code, substr)                                                           \
    do {                                                                                           \
        assert_int_equal((rc), (code));                                                            \
        if (!strstr(kl_errmsg(), (substr))) {                                                      \
            fail_msg("message '%s' lacks '%s'", kl_errmsg(), (substr));                            \
        }                                                                                          \
    } while (0)

/* ---- the hierarchy ------------------------------------------------------------------------ */

static EVP_PKEY *g_root_key, *g_factory_key, *g_field_key;
static X509 *g_root, *g_factory, *g_field;

static int group_setup(void **state)
{
    (void)state;
    X509_REQ *csr = NULL;
    X509_NAME *n = NULL;

    g_root_key = key_new("P-384");
    csr = csr_new(g_root_key, "CN=Keyline Test Root", NULL);
    n = name_new("CN=Keyline Test Root,O=Keyline Test");
    issue_opts o = {.subject = n};
    assert_int_equal(issue("root", csr, NULL, g_root_key, &o, &g_root), KL_OK);
    X509_REQ_free(csr);
    X509_NAME_free(n);

    g_factory_key = key_new("P-256");
    csr = csr_new(g_factory_key, "CN=Keyline Factory CA", NULL);
    issue_opts o2 = {.crl_url = "http://pki.example.com/crl/{issuer}.crl", .issuer_label = "root"};
    assert_int_equal(issue("factory-ca", csr, g_root, g_root_key, &o2, &g_factory), KL_OK);
    X509_REQ_free(csr);

    g_field_key = key_new("P-256");
    csr = csr_new(g_field_key, "CN=Keyline Field CA", NULL);
    assert_int_equal(issue("field-ca", csr, g_root, g_root_key, &o2, &g_field), KL_OK);
    X509_REQ_free(csr);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    X509_free(g_root);
    X509_free(g_factory);
    X509_free(g_field);
    EVP_PKEY_free(g_root_key);
    EVP_PKEY_free(g_factory_key);
    EVP_PKEY_free(g_field_key);
    return 0;
}

static void verify_chain(X509 *leaf, X509 *ca, int purpose)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_add_cert(st, g_root);
    sk_X509_push(untrusted, ca);
    assert_int_equal(X509_STORE_CTX_init(ctx, st, leaf, untrusted), 1);
    if (purpose) {
        X509_STORE_CTX_set_purpose(ctx, purpose);
    }
    int ok = X509_verify_cert(ctx);
    if (ok != 1) {
        fail_msg("chain does not verify: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
}

/* ---- template loading --------------------------------------------------------------------- */

static void test_load_shipped(void **state)
{
    (void)state;
    static const char *names[] = {"root",          "factory-ca", "field-ca",   "device-idevid",
                                  "device-ldevid", "est-server", "ocsp-signer"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tpl *t = tpl_get(names[i]);
        assert_string_equal(t->name, names[i]);
        tpl_free(t);
    }
    tpl *t = tpl_get("root");
    assert_true(t->is_ca);
    assert_int_equal(t->path_len, -1);
    assert_int_equal(t->validity_days, 7300);
    assert_int_equal(t->crl_days, 90); /* crl-validity: the officer signs root CRLs */
    assert_int_equal(t->key_usage, X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN);
    assert_false(t->crl_dp);
    tpl_free(t);
    t = tpl_get("factory-ca");
    assert_int_equal(t->path_len, 0);
    assert_true(t->crl_dp);
    tpl_free(t);
    t = tpl_get("device-idevid");
    assert_false(t->is_ca);
    assert_true(t->validity_forever);
    assert_true(t->san_hmn);
    assert_true(t->serial_number_from_device);
    assert_string_equal(t->hmn_type_oid, "1.3.6.1.4.1.32473.1.1");
    assert_int_equal(t->backdate_secs, 300);
    tpl_free(t);
    t = tpl_get("est-server");
    assert_int_equal(t->san_from_csr, TPL_SAN_DNS | TPL_SAN_IP);
    assert_int_equal(t->key_usage_rsa, X509v3_KU_KEY_ENCIPHERMENT);
    assert_int_equal(t->eku[0], NID_server_auth);
    tpl_free(t);
    t = tpl_get("ocsp-signer");
    assert_true(t->ocsp_nocheck);
    assert_int_equal(t->validity_days, 30);
    assert_int_equal(t->subject_src, TPL_SUBJECT_FROM_REQUEST);
    tpl_free(t);
}

static const char good_head[] = "[template]\nkind = end-entity\nkey-types = ec-p256\n"
                                "validity = 365d\n[subject]\nsource = csr\nallowed = CN\n"
                                "[extensions]\nkey-usage = digitalSignature\n";

static void test_load_bad(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want; /* after "DIR/bad.tmpl" */
    } cases[] = {
        {"[template]\nkind = end-entity\nflavour = vanilla\n",
         ":3: unknown key 'flavour' in [template]"},
        {"[template]\nkind = ca\ncrl-validity = 3m\n",
         ":3: crl-validity must be a number of days like 90d, got '3m'"},
        {"[template]\nkind = ca\ncrl-validity = 3651d\n",
         ":3: '3651d' is out of range (at most 3650)"},
        {"[template]\nkind = ca\ncrl-validity = 0d\n", ":3: crl-validity must be 1d to 3650d"},
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 10y\n",
         ":4: validity must be 'forever' or a number of days"},
        {"[template]\nkind = ca\n\n[extras]\nfoo = bar\n", ":4: unknown section [extras]"},
        {"[template]\nkey-types = ec-p256\nvalidity = 1d\n[subject]\nsource = csr\nallowed = CN\n"
         "[extensions]\nkey-usage = digitalSignature\n",
         ":1: [template] has no 'kind'"},
        {"; comment\n[subject]\nsource = csr\n", ":3: missing section [template] (needs 'kind')"},
        {"[template]\nkind = end-entity\nkind = ca\n", ":3: key 'kind' given twice"},
        {"[template]\nkind = end-entity\nthis is not ini\n", ":3: syntax error"},
        {"[template]\nkind = sometimes\n", ":2: kind must be ca or end-entity"},
        {"[template]\nkey-types = ec-p256 rsa-1024\n", ":2: unknown key type 'rsa-1024'"},
        {"[template]\nbackdate = 3d\n", ":2: '3d' is not a number with a unit from smh"},
        {"[csr]\nmax-size = 99999999\n", ":2: '99999999' is out of range"},
        {"[csr]\nignore-extensions = basicConstraints\n",
         ":2: extension 'basicConstraints' is always checked"},
        {"[extensions]\nhmn-type = 1.3..6\n", ":2: hmn-type must be a dotted OID"},
        {"kind = ca\n", ":1: key 'kind' outside any section"},
        {"[template]\n[template]\n", ":2: section [template] given twice"},
        {"GOOD[template]\n", ":10: section [template] given twice (first at line 1)"},
    };
    char dir[] = "/tmp/kl-tpl-test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/bad.tmpl", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        if (strncmp(cases[i].text, "GOOD", 4) == 0) {
            fputs(good_head, f);
            fputs(cases[i].text + 4, f);
        } else {
            fputs(cases[i].text, f);
        }
        fclose(f);
        tpl *t = NULL;
        kl_rc rc = tpl_load(dir, "bad", &t);
        assert_null(t);
        char want[700];
        snprintf(want, sizeof want, "%s%s", path, cases[i].want);
        if (rc != KL_EINPUT || strncmp(kl_errmsg(), want, strlen(want)) != 0) {
            fail_msg("case %zu: rc %s, message '%s', want '%s'", i, kl_rc_name(rc), kl_errmsg(),
                     want);
        }
    }

    /* cross-key consistency, reported at the offending key */
    static const struct {
        const char *text;
        const char *want;
    } whole[] = {
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 1d\npath-len = 0\n"
         "[subject]\nsource = csr\nallowed = CN\n[extensions]\nkey-usage = digitalSignature\n",
         ":5: path-len is only for kind = ca"},
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 1d\ncrl-validity = 9d\n"
         "[subject]\nsource = csr\nallowed = CN\n[extensions]\nkey-usage = digitalSignature\n",
         ":5: crl-validity is only for kind = ca"},
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 1d\n"
         "[subject]\nsource = csr\nallowed = CN serialNumber\nserial-number = device-id\n"
         "[extensions]\nkey-usage = digitalSignature\nsan = hmn\n",
         ":11: san hmn needs hmn-type"},
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 1d\n"
         "[subject]\nsource = csr\nallowed = CN\n"
         "[extensions]\nkey-usage = digitalSignature keyCertSign\n",
         ":9: an end-entity template must not have keyCertSign"},
        {"[template]\nkind = end-entity\nkey-types = ec-p256\nvalidity = 1d\n"
         "[subject]\nsource = csr\nallowed = CN\nrequired = CN O\n"
         "[extensions]\nkey-usage = digitalSignature\n",
         ":8: required attribute O is not in allowed"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(whole[i].text, f);
        fclose(f);
        tpl *t = NULL;
        kl_rc rc = tpl_load(dir, "bad", &t);
        assert_null(t);
        char want[700];
        snprintf(want, sizeof want, "%s%s", path, whole[i].want);
        if (rc != KL_EINPUT || strncmp(kl_errmsg(), want, strlen(want)) != 0) {
            fail_msg("whole %zu: rc %s, message '%s', want '%s'", i, kl_rc_name(rc), kl_errmsg(),
                     want);
        }
    }
    /* the good head alone loads */
    FILE *f = fopen(path, "w");
    fputs(good_head, f);
    fclose(f);
    tpl *t = NULL;
    assert_int_equal(tpl_load(dir, "bad", &t), KL_OK);
    tpl_free(t);
    unlink(path);
    rmdir(dir);

    assert_int_equal(tpl_load(g_tpl_dir, "no-such-template", &t), KL_ENOTFOUND);
    assert_non_null(strstr(kl_errmsg(), "no template no-such-template in"));
    assert_int_equal(tpl_load(g_tpl_dir, "../etc/passwd", &t), KL_EUSAGE);
    assert_int_equal(tpl_load(g_tpl_dir, "Root", &t), KL_EUSAGE);
}

/* ---- hierarchy ---------------------------------------------------------------------------- */

static void test_hierarchy(void **state)
{
    (void)state;
    /* root: self-signed, no AIA/CRL DP, keyCertSign+cRLSign, subject from the request */
    assert_int_equal(X509_check_ca(g_root), 1);
    assert_int_equal(X509_verify(g_root, g_root_key), 1);
    char buf[256];
    X509_NAME_oneline(X509_get_subject_name(g_root), buf, sizeof buf);
    assert_string_equal(buf, "/CN=Keyline Test Root/O=Keyline Test");
    assert_true(X509_get_ext_by_NID(g_root, NID_crl_distribution_points, -1) < 0);
    assert_true(X509_get_ext_by_NID(g_root, NID_info_access, -1) < 0);
    /* factory-ca: pathlen 0 and the root's CRL */
    assert_int_equal(X509_get_pathlen(g_factory), 0);
    CRL_DIST_POINTS *cdp = X509_get_ext_d2i(g_factory, NID_crl_distribution_points, NULL, NULL);
    assert_non_null(cdp);
    GENERAL_NAME *g =
        sk_GENERAL_NAME_value(sk_DIST_POINT_value(cdp, 0)->distpoint->name.fullname, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://pki.example.com/crl/root.crl");
    CRL_DIST_POINTS_free(cdp);
    verify_chain(g_factory, g_root, 0);
    /* notAfter of a 10-year CA under a 20-year root is not clamped */
    int days = 0, secs = 0;
    assert_int_equal(
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(g_factory), X509_get0_notAfter(g_factory)),
        1);
    assert_true(days >= 3650 && days <= 3651);
}

/* ---- device-idevid ------------------------------------------------------------------------ */

static void check_hmn(X509 *x, const char *serial)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(gens);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 0);
    assert_int_equal(g->type, GEN_OTHERNAME);
    char oid[64];
    OBJ_obj2txt(oid, sizeof oid, g->d.otherName->type_id, 1);
    assert_string_equal(oid, "1.3.6.1.5.5.7.8.4");
    /* decode independently of the code under test: SEQUENCE { OID, OCTET STRING } */
    assert_int_equal(g->d.otherName->value->type, V_ASN1_SEQUENCE);
    const unsigned char *p = g->d.otherName->value->value.sequence->data;
    ASN1_SEQUENCE_ANY *seq =
        d2i_ASN1_SEQUENCE_ANY(NULL, &p, g->d.otherName->value->value.sequence->length);
    assert_non_null(seq);
    assert_int_equal(sk_ASN1_TYPE_num(seq), 2);
    ASN1_TYPE *a = sk_ASN1_TYPE_value(seq, 0), *b = sk_ASN1_TYPE_value(seq, 1);
    assert_int_equal(a->type, V_ASN1_OBJECT);
    OBJ_obj2txt(oid, sizeof oid, a->value.object, 1);
    assert_string_equal(oid, "1.3.6.1.4.1.32473.1.1");
    assert_int_equal(b->type, V_ASN1_OCTET_STRING);
    assert_int_equal(ASN1_STRING_length(b->value.octet_string), (int)strlen(serial));
    assert_memory_equal(ASN1_STRING_get0_data(b->value.octet_string), serial, strlen(serial));
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    GENERAL_NAMES_free(gens);
}

static void test_idevid(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509_REQ *csr = csr_new(k, "CN=sensor", NULL);
    X509 *x = NULL;
    issue_opts o = {.device_id = "SN-0001",
                    .crl_url = "http://pki.example.com/crl/{issuer}.crl",
                    .ocsp_url = "http://pki.example.com/ocsp",
                    .issuer_label = "factory"};
    assert_int_equal(issue("device-idevid", csr, g_factory, g_factory_key, &o, &x), KL_OK);

    /* subject: CN from the CSR, serialNumber (PrintableString) = the device id */
    const X509_NAME *subj = X509_get_subject_name(x);
    int idx = X509_NAME_get_index_by_NID(subj, NID_serialNumber, -1);
    assert_true(idx >= 0);
    const ASN1_STRING *sn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    assert_int_equal(ASN1_STRING_type(sn), V_ASN1_PRINTABLESTRING);
    assert_string_equal((const char *)ASN1_STRING_get0_data(sn), "SN-0001");
    check_hmn(x, "SN-0001");
    /* IEEE 802.1AR: notAfter 99991231235959Z as GeneralizedTime */
    const ASN1_TIME *na = X509_get0_notAfter(x);
    assert_int_equal(ASN1_STRING_type(na), V_ASN1_GENERALIZEDTIME);
    assert_string_equal((const char *)ASN1_STRING_get0_data(na), "99991231235959Z");
    /* CA:FALSE, digitalSignature critical, clientAuth */
    assert_int_equal(X509_check_ca(x), 0);
    int crit = 0;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    assert_int_equal(crit, 1);
    assert_int_equal(ku->length, 1);
    assert_int_equal(ku->data[0], 0x80);
    ASN1_BIT_STRING_free(ku);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
    assert_true(X509_get_ext_by_NID(x, NID_crl_distribution_points, -1) >= 0);
    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
    assert_non_null(aia);
    assert_int_equal(sk_ACCESS_DESCRIPTION_num(aia), 1);
    assert_int_equal(OBJ_obj2nid(sk_ACCESS_DESCRIPTION_value(aia, 0)->method), NID_ad_OCSP);
    AUTHORITY_INFO_ACCESS_free(aia);
    verify_chain(x, g_factory, X509_PURPOSE_SSL_CLIENT);

    /* KL_TPL_DUMP=DIR keeps the chain for third-party tools (openssl x509, certtool -i) */
    const char *dump = getenv("KL_TPL_DUMP");
    if (dump) {
        char p[600];
        snprintf(p, sizeof p, "%s/idevid-chain.pem", dump);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        PEM_write_X509(f, x);
        PEM_write_X509(f, g_factory);
        PEM_write_X509(f, g_root);
        fclose(f);
    }

    char dev[80], type[64];
    assert_int_equal(tpl_cert_device_id(x, dev, sizeof dev, type, sizeof type), KL_OK);
    assert_string_equal(dev, "SN-0001");
    assert_string_equal(type, "1.3.6.1.4.1.32473.1.1");
    X509_free(x);
    X509_REQ_free(csr);

    /* device id taken from the CSR serialNumber when the caller gives none */
    csr = csr_new(k, "CN=sensor,serialNumber=SN-0002", NULL);
    assert_int_equal(issue("device-idevid", csr, g_factory, g_factory_key, NULL, &x), KL_OK);
    check_hmn(x, "SN-0002");
    X509_free(x);
    /* both given and equal */
    issue_opts same = {.device_id = "SN-0002"};
    assert_int_equal(issue("device-idevid", csr, g_factory, g_factory_key, &same, &x), KL_OK);
    X509_free(x);
    /* both given and different */
    issue_opts diff = {.device_id = "SN-0003"};
    assert_refused(issue("device-idevid", csr, g_factory, g_factory_key, &diff, &x), KL_EPOLICY,
                   "subject serialNumber 'SN-0002' does not match the device id 'SN-0003'");
    X509_REQ_free(csr);
    /* neither */
    csr = csr_new(k, "CN=sensor", NULL);
    assert_refused(issue("device-idevid", csr, g_factory, g_factory_key, NULL, &x), KL_EPOLICY,
                   "needs a device id");
    /* a device id that is not a PrintableString */
    issue_opts bad = {.device_id = "SN_0001"};
    assert_refused(issue("device-idevid", csr, g_factory, g_factory_key, &bad, &x), KL_EPOLICY,
                   "device id 'SN_0001' must be");
    X509_REQ_free(csr);
    /* RSA-3072 is not in device-idevid */
    EVP_PKEY *rk = key_new("RSA-3072");
    csr = csr_new(rk, "CN=sensor", NULL);
    assert_refused(issue("device-idevid", csr, g_factory, g_factory_key, &o, &x), KL_EPOLICY,
                   "key type rsa-3072 not allowed by template device-idevid (allowed: ec-p256 "
                   "ec-p384)");
    X509_REQ_free(csr);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(k);
}

/* ---- device-ldevid, policy refusals ------------------------------------------------------- */

/* What every device-ldevid case below issues with: URLs naming the issuer, its label. */
static const issue_opts ldevid_opts = {.crl_url = "http://pki.example.com/crl/{issuer}.crl",
                                       .ocsp_url = "http://pki.example.com/ocsp/{issuer}",
                                       .issuer_label = "field"};

/* A good CSR issued (its URLs, lifetime, chain); the caller's options that contradict the CSR
 * or the template refused. */
static void test_ldevid_issue(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-384");
    X509 *x = NULL;
    X509_REQ *csr = NULL;
    issue_opts o = ldevid_opts;

    /* good: CN + serialNumber, keyUsage digitalSignature and CA:FALSE tolerated, not copied */
    csr = csr_new(k, "CN=device-7,serialNumber=7",
                  (ext_spec[]){{"keyUsage", "critical,digitalSignature"},
                               {"basicConstraints", "CA:FALSE"},
                               {NULL, NULL}});
    assert_int_equal(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_OK);
    assert_int_equal(X509_get_key_usage(x), X509v3_KU_DIGITAL_SIGNATURE);
    CRL_DIST_POINTS *cdp = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    GENERAL_NAME *g =
        sk_GENERAL_NAME_value(sk_DIST_POINT_value(cdp, 0)->distpoint->name.fullname, 0);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://pki.example.com/crl/field.crl");
    CRL_DIST_POINTS_free(cdp);
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)),
                     1);
    assert_true(days == 365); /* 365d + the 300 s backdate */
    assert_int_equal(secs, 300);
    verify_chain(x, g_field, X509_PURPOSE_SSL_CLIENT);
    X509_free(x);
    X509_REQ_free(csr);

    /* device id given and equal to the CSR serialNumber: fine; different: refused */
    csr = csr_new(k, "CN=device-7,serialNumber=7", NULL);
    issue_opts diff = o;
    diff.device_id = "8";
    assert_refused(issue("device-ldevid", csr, g_field, g_field_key, &diff, &x), KL_EPOLICY,
                   "does not match the device id");
    /* source = csr: a subject from the caller is a usage error */
    X509_NAME *n = name_new("CN=other");
    issue_opts subj = o;
    subj.subject = n;
    assert_refused(issue("device-ldevid", csr, g_field, g_field_key, &subj, &x), KL_EUSAGE,
                   "takes the subject from the CSR");
    X509_NAME_free(n);
    X509_REQ_free(csr);

    /* {issuer} without a label */
    csr = csr_new(k, "CN=device-7", NULL);
    issue_opts nolabel = o;
    nolabel.issuer_label = NULL;
    assert_refused(issue("device-ldevid", csr, g_field, g_field_key, &nolabel, &x), KL_EUSAGE,
                   "contains {issuer} but no issuer label");
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* CSR subjects and extensions the template does not allow, each refused naming what. */
static void test_ldevid_refusals(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-384");
    X509 *x = NULL;
    X509_REQ *csr = NULL;
    issue_opts o = ldevid_opts;

    static const struct {
        const char *subject;
        ext_spec exts[3];
        const char *want;
    } refused[] = {
        {"CN=device-7,O=Evil Corp",
         {{NULL, NULL}},
         "subject attribute O is not allowed by template device-ldevid (allowed: CN serialNumber)"},
        {"serialNumber=7",
         {{NULL, NULL}},
         "subject has no CN, which template device-ldevid requires"},
        {"CN=device-7+serialNumber=7", {{NULL, NULL}}, "multi-valued RDN"},
        {"CN=device-7,CN=again", {{NULL, NULL}}, "subject has CN more than once"},
        {"CN=", {{NULL, NULL}}, "subject CN is empty"},
        {"CN=0123456789012345678901234567890123456789012345678901234567890123456789",
         {{NULL, NULL}},
         "subject CN is 70 characters long, more than the 64 it may have"},
        {"CN=device-7,serialNumber=7_bad",
         {{NULL, NULL}},
         "subject serialNumber '7_bad' is a UTF8String with '_', which PrintableString does not "
         "have: serialNumber must be a PrintableString (A-Z a-z 0-9, space and '()+,-./:=?)"},
        {"CN=device-7",
         {{"basicConstraints", "critical,CA:TRUE"}, {NULL, NULL}},
         "CSR requests extension basicConstraints (CA:TRUE) which template device-ldevid does "
         "not allow"},
        {"CN=device-7",
         {{"keyUsage", "digitalSignature,keyCertSign"}, {NULL, NULL}},
         "CSR requests extension keyUsage (keyCertSign) which template device-ldevid does not "
         "allow"},
        {"CN=device-7",
         {{"extendedKeyUsage", "clientAuth,codeSigning"}, {NULL, NULL}},
         "CSR requests extension extendedKeyUsage (codeSigning) which template device-ldevid"},
        {"CN=device-7",
         {{"1.2.3.4.5.6", "DER:0500"}, {NULL, NULL}},
         "CSR requests extension 1.2.3.4.5.6 which template device-ldevid does not allow"},
        {"CN=device-7",
         {{"1.2.3.4.5.6", "critical,DER:0500"}, {NULL, NULL}},
         "CSR requests critical extension 1.2.3.4.5.6 which template device-ldevid does not "
         "allow"},
        {"CN=device-7",
         {{"subjectAltName", "DNS:device-7.example.com"}, {NULL, NULL}},
         "CSR requests extension subjectAltName (dNSName) which template device-ldevid does not "
         "allow"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        csr = csr_new(k, refused[i].subject, refused[i].exts);
        kl_rc rc = issue("device-ldevid", csr, g_field, g_field_key, &o, &x);
        kl_rc want_rc = KL_EPOLICY;
        if (rc != want_rc || !strstr(kl_errmsg(), refused[i].want)) {
            fail_msg("case %zu: rc %s '%s', want '%s'", i, kl_rc_name(rc), kl_errmsg(),
                     refused[i].want);
        }
        X509_REQ_free(csr);
    }
    EVP_PKEY_free(k);
}

/* The template's limits: CSR size, key types, and a lifetime within the issuing CA's. */
static void test_ldevid_limits(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-384");
    X509 *x = NULL;
    X509_REQ *csr = NULL;
    issue_opts o = ldevid_opts;

    /* oversized CSR (device-ldevid max-size = 8192): refused before anything else */
    /* an OCTET STRING of 9000 bytes: 04 82 23 28 41... */
    char *big = malloc(12 + 2 * 9000 + 1);
    strcpy(big, "DER:04822328");
    for (int i = 0; i < 9000; i++) {
        memcpy(big + 12 + 2 * i, "41", 2);
    }
    big[12 + 2 * 9000] = 0;
    csr = csr_new(k, "CN=device-7", (ext_spec[]){{"1.2.3.4.5.7", big}, {NULL, NULL}});
    free(big);
    assert_refused(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_EPOLICY,
                   "exceeds template device-ldevid's limit of 8192");
    X509_REQ_free(csr);

    /* wrong key type */
    EVP_PKEY *rk = key_new("RSA-2048");
    csr = csr_new(rk, "CN=device-7", NULL);
    assert_refused(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_EPOLICY,
                   "key type rsa-2048 not allowed by template device-ldevid (allowed: ec-p256 "
                   "ec-p384 rsa-3072)");
    X509_REQ_free(csr);
    EVP_PKEY_free(rk);

    /* clamp: issued 30 days before the field CA expires -> notAfter = the CA's notAfter */
    csr = csr_new(k, "CN=device-7", NULL);
    time_t ca_end = 0;
    struct tm tm;
    assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(g_field), &tm), 1);
    ca_end = timegm(&tm);
    issue_opts late = o;
    late.now = ca_end - 30 * 86400;
    assert_int_equal(issue("device-ldevid", csr, g_field, NULL, &late, &x), KL_OK);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(g_field)), 0);
    X509_free(x);
    /* after the CA expired: refused */
    late.now = ca_end + 10;
    assert_refused(issue("device-ldevid", csr, g_field, NULL, &late, &x), KL_EPOLICY,
                   "the issuing CA has expired");
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- subject serialNumber: length and string type --------------------------------------- */

/* A CSR "CN=device-7" + serialNumber of ASN.1 string `type` holding the `len` bytes `v` as they
 * are (a BMPString's are UCS-2 big-endian), which openssl(1) would not write. */
static X509_REQ *csr_sn_new(EVP_PKEY *k, int type, const void *v, int len)
{
    X509_REQ *r = csr_new(k, "CN=device-7", NULL);
    X509_NAME *n = X509_NAME_dup(X509_REQ_get_subject_name(r));
    assert_non_null(n);
    assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_serialNumber, type, v, len, -1, 0), 1);
    assert_int_equal(X509_REQ_set_subject_name(r, n), 1);
    X509_NAME_free(n);
    assert_true(X509_REQ_sign(r, k, EVP_sha256()) > 0);
    return r;
}

/* "HW_01" as UCS-2 big-endian (BMPString) */
static int bmp_of(const char *ascii, unsigned char *out)
{
    int n = 0;
    for (const char *p = ascii; *p; p++) {
        out[n++] = 0;
        out[n++] = (unsigned char)*p;
    }
    return n;
}

/* RFC 5280 Appendix A: X520SerialNumber ::= PrintableString (SIZE (1..64)). A refusal says
 * what is wrong: the length and the limit, or the type the CSR gave and the character that
 * PrintableString lacks; a value of another type that fits PrintableString is re-encoded as
 * one (docs/templates.md). */
static void test_subject_serial_number(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509 *x = NULL;
    X509_REQ *csr = NULL;
    unsigned char bmp[600];
    char big[201];
    issue_opts o = {.crl_url = "http://pki.example.com/crl/{issuer}.crl",
                    .ocsp_url = "http://pki.example.com/ocsp/{issuer}",
                    .issuer_label = "field"};
    static const struct {
        int type;
        const char *value; /* ASCII; for BMPString made UCS-2 here */
        int len;           /* 0: strlen(value); else that many 'A' (value unused) */
        kl_rc want_rc;
        const char *want;
    } refused[] = {
        {V_ASN1_PRINTABLESTRING, NULL, 65, KL_EPOLICY,
         "subject serialNumber is 65 characters long, more than the 64 it may have"},
        {V_ASN1_PRINTABLESTRING, NULL, 200, KL_EPOLICY,
         "subject serialNumber is 200 characters long, more than the 64 it may have"},
        {V_ASN1_BMPSTRING, NULL, 65, KL_EPOLICY,
         "subject serialNumber is 65 characters long, more than the 64 it may have"},
        {V_ASN1_BMPSTRING, "HW_01", 0, KL_EPOLICY,
         "subject serialNumber 'HW_01' is a BMPString with '_', which PrintableString does not "
         "have: serialNumber must be a PrintableString (A-Z a-z 0-9, space and '()+,-./:=?)"},
        {V_ASN1_UTF8STRING,
         "HW\xc3\xa9"
         "01",
         0, KL_EPOLICY,
         "subject serialNumber 'HW??01' is a UTF8String with bytes C3 A9, which PrintableString "
         "does not have: serialNumber must be a PrintableString"},
        /* OpenSSL does not check a PrintableString's alphabet when it parses one */
        {V_ASN1_PRINTABLESTRING, "HW*01", 0, KL_EPOLICY,
         "subject serialNumber 'HW*01' has '*', which PrintableString does not have (A-Z a-z "
         "0-9, space and '()+,-./:=?)"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        const char *v = refused[i].value;
        int len = refused[i].len;
        if (len) {
            memset(big, 'A', (size_t)len);
            big[len] = 0;
            v = big;
        }
        if (refused[i].type == V_ASN1_BMPSTRING) {
            csr = csr_sn_new(k, V_ASN1_BMPSTRING, bmp, bmp_of(v, bmp));
        } else {
            csr = csr_sn_new(k, refused[i].type, v, (int)strlen(v));
        }
        kl_rc rc = issue("device-ldevid", csr, g_field, g_field_key, &o, &x);
        if (rc != refused[i].want_rc || !strstr(kl_errmsg(), refused[i].want)) {
            fail_msg("case %zu: rc %s '%s', want %s '%s'", i, kl_rc_name(rc), kl_errmsg(),
                     kl_rc_name(refused[i].want_rc), refused[i].want);
        }
        X509_REQ_free(csr);
    }

    /* BMPString and UTF8String values that fit PrintableString: re-encoded as one */
    for (int type = 0; type < 2; type++) {
        if (type == 0) {
            csr = csr_sn_new(k, V_ASN1_BMPSTRING, bmp, bmp_of("HW-0001", bmp));
        } else {
            csr = csr_sn_new(k, V_ASN1_UTF8STRING, "HW-0001", 7);
        }
        assert_int_equal(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_OK);
        const X509_NAME *subj = X509_get_subject_name(x);
        const ASN1_STRING *sn = X509_NAME_ENTRY_get_data(
            X509_NAME_get_entry(subj, X509_NAME_get_index_by_NID(subj, NID_serialNumber, -1)));
        assert_int_equal(ASN1_STRING_type(sn), V_ASN1_PRINTABLESTRING);
        assert_string_equal((const char *)ASN1_STRING_get0_data(sn), "HW-0001");
        X509_free(x);
        X509_REQ_free(csr);
    }
    /* the limit itself is fine */
    memset(big, '7', 64);
    csr = csr_sn_new(k, V_ASN1_PRINTABLESTRING, big, 64);
    assert_int_equal(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_OK);
    X509_free(x);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* RFC 5280 4.2.1.2 method 1, computed here: SHA-1 of the subjectPublicKey bits. */
static void ski_expected(X509 *x, unsigned char md[20])
{
    const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(ASN1_STRING_get0_data(bits), (size_t)ASN1_STRING_length(bits), md,
                                &n, EVP_sha1(), NULL),
                     1);
    assert_int_equal(n, 20);
}

/* Issue 12, item 5: a renewal CSR that copies every extension of the current certificate
 * (cisco/libest) is accepted; what the CA writes itself is dropped and written afresh. */
static void test_csr_ext_ca_writes(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509 *x = NULL;
    issue_opts o = {.crl_url = "http://pki.example.com/crl/{issuer}.crl",
                    .ocsp_url = "http://pki.example.com/ocsp",
                    .issuer_label = "field"};
    X509_REQ *csr =
        csr_new(k, "CN=device-7,serialNumber=7",
                (ext_spec[]){{"basicConstraints", "critical,CA:FALSE"},
                             {"keyUsage", "critical,digitalSignature"},
                             {"extendedKeyUsage", "clientAuth"},
                             {"subjectKeyIdentifier", "0102030405"},
                             {"authorityKeyIdentifier", "DER:30068004aabbccdd"},
                             {"crlDistributionPoints", "URI:http://old.example.com/old.crl"},
                             {"authorityInfoAccess", "OCSP;URI:http://old.example.com/ocsp"},
                             {NULL, NULL}});
    assert_int_equal(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_OK);
    /* ours, not the request's: SKI from the key, AKI = the issuer's SKI, the configured URLs */
    unsigned char md[20];
    ski_expected(x, md);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    assert_int_equal(ASN1_STRING_length(ski), 20);
    assert_memory_equal(ASN1_STRING_get0_data(ski), md, 20);
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x), X509_get0_subject_key_id(g_field)), 0);
    CRL_DIST_POINTS *cdp = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    assert_int_equal(sk_DIST_POINT_num(cdp), 1);
    GENERAL_NAME *g =
        sk_GENERAL_NAME_value(sk_DIST_POINT_value(cdp, 0)->distpoint->name.fullname, 0);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://pki.example.com/crl/field.crl");
    CRL_DIST_POINTS_free(cdp);
    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
    assert_int_equal(sk_ACCESS_DESCRIPTION_num(aia), 1);
    g = sk_ACCESS_DESCRIPTION_value(aia, 0)->location;
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://pki.example.com/ocsp");
    AUTHORITY_INFO_ACCESS_free(aia);
    /* each extension once */
    for (int i = 0; i < X509_get_ext_count(x); i++) {
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(X509_get_ext(x, i)));
        assert_int_equal(X509_get_ext_by_NID(x, nid, -1), i); /* the first of its kind */
        assert_int_equal(X509_get_ext_by_NID(x, nid, i), -1); /* and the last */
    }
    verify_chain(x, g_field, X509_PURPOSE_SSL_CLIENT);
    X509_free(x);
    X509_REQ_free(csr);

    /* the same, from libest's shape on disk: every extension of a certificate keyline issued */
    char path[600];
    snprintf(path, sizeof path, "%s/csr/libest-reenroll.pem", g_data_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    csr = PEM_read_X509_REQ(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(csr);
    STACK_OF(X509_EXTENSION) *asked = X509_REQ_get_extensions(csr);
    assert_int_equal(sk_X509_EXTENSION_num(asked), 7);
    sk_X509_EXTENSION_pop_free(asked, X509_EXTENSION_free);
    assert_int_equal(issue("device-ldevid", csr, g_field, g_field_key, &o, &x), KL_OK);
    ski_expected(x, md);
    assert_memory_equal(ASN1_STRING_get0_data(X509_get0_subject_key_id(x)), md, 20);
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x), X509_get0_subject_key_id(g_field)), 0);
    X509_free(x);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- est-server --------------------------------------------------------------------------- */

static void test_est_server(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509 *x = NULL;
    X509_REQ *csr = csr_new(
        k, "CN=est.example.com",
        (ext_spec[]){{"subjectAltName", "DNS:est.example.com,DNS:est-2.example.com,IP:192.0.2.1,"
                                        "IP:2001:db8::1"},
                     {NULL, NULL}});
    assert_int_equal(issue("est-server", csr, g_field, g_field_key, NULL, &x), KL_OK);
    assert_int_equal(X509_check_host(x, "est-2.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "2001:db8::1", 0), 1);
    assert_int_equal(X509_get_key_usage(x), X509v3_KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    verify_chain(x, g_field, X509_PURPOSE_SSL_SERVER);
    X509_free(x);
    X509_REQ_free(csr);

    /* RSA-3072 gets keyEncipherment too */
    EVP_PKEY *rk = key_new("RSA-3072");
    csr = csr_new(rk, "", (ext_spec[]){{"subjectAltName", "DNS:est.example.com"}, {NULL, NULL}});
    assert_int_equal(issue("est-server", csr, g_field, g_field_key, NULL, &x), KL_OK);
    assert_int_equal(X509_get_key_usage(x),
                     X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT);
    /* empty subject: SAN critical (RFC 5280 4.2.1.6) */
    int crit = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    assert_int_equal(crit, 1);
    GENERAL_NAMES_free(gens);
    X509_free(x);
    X509_REQ_free(csr);
    EVP_PKEY_free(rk);

    static const struct {
        const char *san;
        const char *want;
    } bad[] = {
        {"DNS:bad_name.example.com", "has a character other than"},
        {"DNS:*.example.com", "is a wildcard, which the template does not allow"},
        {"DNS:est.example.com.", "ends with a dot"},
        {"DNS:-est.example.com", "starting or ending with '-'"},
        {"DNS:est..example.com", "empty label"},
        {"DNS:a234567890123456789012345678901234567890123456789012345678901234.example.com",
         "longer than 63"},
        {"DNS:192.0.2.1", "all-numeric top-level label"},
        {"DNS:est.example.com,email:ops@example.com",
         "subjectAltName (rfc822Name) which template est-server does not allow"},
        {"URI:https://est.example.com/", "subjectAltName (uniformResourceIdentifier)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        csr = csr_new(k, "CN=est", (ext_spec[]){{"subjectAltName", bad[i].san}, {NULL, NULL}});
        kl_rc rc = issue("est-server", csr, g_field, g_field_key, NULL, &x);
        if (rc != KL_EPOLICY || !strstr(kl_errmsg(), bad[i].want)) {
            fail_msg("SAN case %s: rc %s '%s', want '%s'", bad[i].san, kl_rc_name(rc), kl_errmsg(),
                     bad[i].want);
        }
        X509_REQ_free(csr);
    }
    /* IP of 5 octets: build the GENERAL_NAME by hand, the config syntax cannot */
    {
        X509_REQ *r = X509_REQ_new();
        X509_REQ_set_version(r, 0);
        X509_NAME *n = name_new("CN=est");
        X509_REQ_set_subject_name(r, n);
        X509_NAME_free(n);
        X509_REQ_set_pubkey(r, k);
        GENERAL_NAMES *gs = sk_GENERAL_NAME_new_null();
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_OCTET_STRING *ip = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(ip, (const unsigned char *)"\xc0\x00\x02\x01\x05", 5);
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
        sk_GENERAL_NAME_push(gs, gn);
        STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
        sk_X509_EXTENSION_push(sk, X509V3_EXT_i2d(NID_subject_alt_name, 0, gs));
        X509_REQ_add_extensions(r, sk);
        sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
        GENERAL_NAMES_free(gs);
        X509_REQ_sign(r, k, EVP_sha256());
        assert_refused(issue("est-server", r, g_field, g_field_key, NULL, &x), KL_EPOLICY,
                       "is not 4 or 16 octets");
        X509_REQ_free(r);
    }
    /* no SAN at all */
    csr = csr_new(k, "CN=est.example.com", NULL);
    assert_refused(issue("est-server", csr, g_field, g_field_key, NULL, &x), KL_EPOLICY,
                   "template est-server requires a subjectAltName");
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- ocsp-signer -------------------------------------------------------------------------- */

static void test_ocsp_signer(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509 *x = NULL;
    X509_REQ *csr = csr_new(k, "CN=ignored", NULL);
    X509_NAME *n = name_new("CN=Field CA OCSP responder,O=Keyline Test");
    issue_opts o = {.subject = n,
                    .crl_url = "http://pki.example.com/crl/{issuer}.crl",
                    .ocsp_url = "http://pki.example.com/ocsp",
                    .issuer_label = "field"};
    assert_int_equal(issue("ocsp-signer", csr, g_field, g_field_key, &o, &x), KL_OK);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), n), 0);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_OCSP_SIGN);
    int idx = X509_get_ext_by_NID(x, NID_id_pkix_OCSP_noCheck, -1);
    assert_true(idx >= 0);
    ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(x, idx));
    assert_int_equal(ASN1_STRING_length(v), 2);
    assert_memory_equal(ASN1_STRING_get0_data(v), "\x05\x00", 2);
    assert_true(X509_get_ext_by_NID(x, NID_crl_distribution_points, -1) < 0);
    assert_true(X509_get_ext_by_NID(x, NID_info_access, -1) < 0);
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)),
                     1);
    assert_int_equal(days, 30);
    verify_chain(x, g_field, X509_PURPOSE_OCSP_HELPER);
    X509_free(x);
    /* the subject from the request is still checked */
    X509_NAME_free(n);
    n = name_new("CN=responder,DC=example");
    o.subject = n;
    assert_refused(issue("ocsp-signer", csr, g_field, g_field_key, &o, &x), KL_EPOLICY,
                   "subject attribute DC is not allowed by template ocsp-signer");
    X509_NAME_free(n);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- CA templates under the wrong issuer -------------------------------------------------- */

static void test_ca_issuer_rules(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    X509 *x = NULL;
    X509_REQ *csr = csr_new(k, "CN=Sub Sub CA", NULL);
    /* factory-ca has pathLen 0: no CA below it */
    assert_refused(issue("field-ca", csr, g_factory, g_factory_key, NULL, &x), KL_EPOLICY,
                   "pathLenConstraint 0");
    /* a CA template's path length is a limit a CSR may not widen; at or under it: dropped */
    static const struct {
        const char *bc, *want;
    } pathlen[] = {
        {"critical,CA:TRUE", "basicConstraints (CA:TRUE, pathlen:none) which template field-ca "
                             "limits to pathlen:0"},
        {"critical,CA:TRUE,pathlen:1", "(CA:TRUE, pathlen:1) which template field-ca limits"},
        {"critical,CA:TRUE,pathlen:0", NULL},
        {"critical,CA:FALSE", NULL},
    };
    issue_opts ro = {.crl_url = "http://pki.example.com/crl/{issuer}.crl", .issuer_label = "root"};
    for (size_t i = 0; i < sizeof pathlen / sizeof pathlen[0]; i++) {
        X509_REQ *pcsr = csr_new(k, "CN=Another Field CA",
                                 (ext_spec[]){{"basicConstraints", pathlen[i].bc}, {NULL, NULL}});
        kl_rc rc = issue("field-ca", pcsr, g_root, g_root_key, &ro, &x);
        if (pathlen[i].want) {
            assert_refused(rc, KL_EPOLICY, pathlen[i].want);
        } else {
            assert_int_equal(rc, KL_OK);
            BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
            assert_true(bc && bc->ca && ASN1_INTEGER_get(bc->pathlen) == 0);
            BASIC_CONSTRAINTS_free(bc);
            X509_free(x);
        }
        X509_REQ_free(pcsr);
    }
    /* an end-entity certificate is no issuer */
    EVP_PKEY *dk = key_new("P-256");
    X509_REQ *dcsr = csr_new(dk, "CN=device-9", NULL);
    X509 *dev = NULL;
    assert_int_equal(issue("device-ldevid", dcsr, g_field, g_field_key, NULL, &dev), KL_OK);
    X509_REQ *csr2 = csr_new(k, "CN=device-10", NULL);
    assert_refused(issue("device-ldevid", csr2, dev, dk, NULL, &x), KL_EPOLICY, "not a CA");
    X509_REQ_free(csr2);
    X509_free(dev);
    X509_REQ_free(dcsr);
    EVP_PKEY_free(dk);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- lint on hand-broken certificates ----------------------------------------------------- */

static X509 *tbs_ldevid_at(tpl **t_out, EVP_PKEY *k, time_t now)
{
    X509_REQ *csr = csr_new(k, "CN=device-11", NULL);
    tpl *t = tpl_get("device-ldevid");
    ASN1_INTEGER *serial = serial_new();
    X509 *x = NULL;
    tpl_policy_in in = {.t = t, .csr = csr, .issuer_cert = g_field, .now = now};
    assert_int_equal(tpl_policy_build(&in, serial, &x), KL_OK);
    assert_int_equal(tpl_lint(t, x, g_field), KL_OK);
    ASN1_INTEGER_free(serial);
    X509_REQ_free(csr);
    *t_out = t;
    return x;
}

static X509 *tbs_ldevid(tpl **t_out, EVP_PKEY *k)
{
    return tbs_ldevid_at(t_out, k, 0);
}

static void lint_expect(tpl *t, X509 *x, X509 *issuer, const char *want)
{
    kl_rc rc = tpl_lint(t, x, issuer);
    if (rc != KL_EINTERNAL || strncmp(kl_errmsg(), "lint: ", 6) != 0 ||
        !strstr(kl_errmsg(), want)) {
        fail_msg("lint: rc %s '%s', want '%s'", kl_rc_name(rc), kl_errmsg(), want);
    }
}

static void replace_ext(X509 *x, int nid, const char *value)
{
    int idx = X509_get_ext_by_NID(x, nid, -1);
    if (idx >= 0) {
        X509_EXTENSION_free(X509_delete_ext(x, idx));
    }
    if (value) {
        X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, NULL, nid, value);
        assert_non_null(e);
        assert_int_equal(X509_add_ext(x, e, -1), 1);
        X509_EXTENSION_free(e);
    }
}

/* A fresh ldevid certificate with extension `nid` replaced by `value` (NULL: removed) fails
 * lint under the field CA with `want`. */
static void lint_expect_ext(EVP_PKEY *k, int nid, const char *value, const char *want)
{
    tpl *t = NULL;
    X509 *x = tbs_ldevid(&t, k);
    replace_ext(x, nid, value);
    lint_expect(t, x, g_field, want);
    X509_free(x);
    tpl_free(t);
}

/* The serial number (RFC 5280 4.1.2.2) and the encoding of an EC key (RFC 5480). */
static void test_lint_serial_key(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    tpl *t = NULL;
    X509 *x = NULL;

    /* short serial (4 octets) */
    x = tbs_ldevid(&t, k);
    ASN1_INTEGER *s = ASN1_INTEGER_new();
    ASN1_INTEGER_set(s, 0x12345678);
    X509_set_serialNumber(x, s);
    lint_expect(t, x, g_field, "serial number has 4 octets");
    /* negative, zero, too long */
    ASN1_INTEGER_set(s, -5);
    X509_set_serialNumber(x, s);
    lint_expect(t, x, g_field, "negative");
    ASN1_INTEGER_set(s, 0);
    X509_set_serialNumber(x, s);
    lint_expect(t, x, g_field, "not positive");
    BIGNUM *bn = BN_new();
    BN_set_bit(bn, 20 * 8 - 1); /* 20 octets with the top bit set: 21 in DER */
    BN_to_ASN1_INTEGER(bn, s);
    X509_set_serialNumber(x, s);
    lint_expect(t, x, g_field, "serial number is 21 octets");
    BN_free(bn);
    ASN1_INTEGER_free(s);
    X509_free(x);
    tpl_free(t);

    /* an EC key as a compressed point, or with explicit curve parameters (RFC 5480) */
    for (int form = 0; form < 2; form++) {
        x = tbs_ldevid(&t, k);
        EC_KEY *ec = EC_KEY_dup(EVP_PKEY_get0_EC_KEY(k));
        if (form == 0) {
            EC_KEY_set_conv_form(ec, POINT_CONVERSION_COMPRESSED);
        } else {
            EC_KEY_set_asn1_flag(ec, OPENSSL_EC_EXPLICIT_CURVE);
        }
        EVP_PKEY *odd = EVP_PKEY_new();
        assert_int_equal(EVP_PKEY_assign_EC_KEY(odd, ec), 1);
        assert_int_equal(X509_set_pubkey(x, odd), 1);
        EVP_PKEY_free(odd);
        lint_expect(t, x, g_field,
                    form == 0 ? "not in uncompressed form" : "without a named curve");
        X509_free(x);
        tpl_free(t);
    }
    EVP_PKEY_free(k);
}

/* Extensions (key identifiers, keyUsage, basicConstraints, one not in the template) and the
 * validity against the issuer's. */
static void test_lint_ext_validity(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    tpl *t = NULL;
    X509 *x = NULL;

    /* missing AKI */
    lint_expect_ext(k, NID_authority_key_identifier, NULL, "no authorityKeyIdentifier");

    /* AKI of another CA */
    x = tbs_ldevid(&t, k);
    lint_expect(t, x, g_factory, "issuer name differs");
    X509_set_issuer_name(x, X509_get_subject_name(g_factory));
    lint_expect(t, x, g_factory, "authorityKeyIdentifier differs from the issuer's");
    X509_free(x);
    tpl_free(t);

    /* keyCertSign on an end-entity certificate */
    lint_expect_ext(k, NID_key_usage, "critical,digitalSignature,keyCertSign",
                    "keyCertSign on an end-entity certificate");

    /* pathLen without cA, and cA on an end-entity template */
    lint_expect_ext(k, NID_basic_constraints, "critical,CA:TRUE,pathlen:0",
                    "basicConstraints cA is TRUE");

    /* validity outside the issuer's (issued 30 days before the CA ends, so the period is
     * short and only the issuer's bound is broken) */
    struct tm tm;
    ASN1_TIME_to_tm(X509_get0_notAfter(g_field), &tm);
    x = tbs_ldevid_at(&t, k, timegm(&tm) - 30 * 86400);
    ASN1_TIME *late = ASN1_TIME_set(NULL, timegm(&tm) + 86400);
    X509_set1_notAfter(x, late);
    lint_expect(t, x, g_field, "notAfter is after the issuer's notAfter");
    ASN1_TIME_free(late);
    /* notBefore after notAfter */
    ASN1_TIME *early = ASN1_TIME_set(NULL, time(NULL) - 86400 * 400);
    X509_set1_notAfter(x, early);
    lint_expect(t, x, g_field, "notBefore is not before notAfter");
    ASN1_TIME_free(early);
    X509_free(x);
    tpl_free(t);

    /* missing SKI; an unexpected extension */
    lint_expect_ext(k, NID_subject_key_identifier, NULL, "no subjectKeyIdentifier");
    lint_expect_ext(k, NID_netscape_comment, "hello", "unexpected extension");
    EVP_PKEY_free(k);
}

/* IEEE 802.1AR IDevIDs: the serialNumber names the device, notAfter 99991231235959Z, an
 * exception that no other template shares. */
static void test_lint_8021ar(void **state)
{
    (void)state;
    EVP_PKEY *k = key_new("P-256");
    tpl *t = NULL;
    X509 *x = NULL;

    /* 802.1AR: serialNumber and HMN disagree; finite notAfter */
    X509_REQ *csr = csr_new(k, "CN=sensor", NULL);
    tpl *it = tpl_get("device-idevid");
    ASN1_INTEGER *serial = serial_new();
    tpl_policy_in in = {.t = it, .csr = csr, .issuer_cert = g_factory, .device_id = "HW-1"};
    assert_int_equal(tpl_policy_build(&in, serial, &x), KL_OK);
    assert_int_equal(tpl_lint(it, x, g_factory), KL_OK);
    X509_NAME *n = name_new("CN=sensor,serialNumber=HW-2");
    X509_set_subject_name(x, n);
    X509_NAME_free(n);
    lint_expect(it, x, g_factory, "802.1AR: subject serialNumber differs");
    n = name_new("CN=sensor");
    X509_set_subject_name(x, n);
    X509_NAME_free(n);
    lint_expect(it, x, g_factory, "802.1AR: no subject serialNumber");
    X509_free(x);
    assert_int_equal(tpl_policy_build(&in, serial, &x), KL_OK);
    ASN1_TIME *fin = ASN1_TIME_set(NULL, time(NULL) + 86400);
    X509_set1_notAfter(x, fin);
    ASN1_TIME_free(fin);
    lint_expect(it, x, g_factory, "wants notAfter 99991231235959Z");
    X509_free(x);
    /* the 802.1AR exception does not extend to other templates: an ldevid cert with
     * notAfter 9999 under the factory CA fails */
    tpl *lt = tpl_get("device-ldevid");
    x = tbs_ldevid(&t, k);
    ASN1_GENERALIZEDTIME *g = ASN1_GENERALIZEDTIME_new();
    ASN1_GENERALIZEDTIME_set_string(g, "99991231235959Z");
    X509_set1_notAfter(x, g);
    ASN1_GENERALIZEDTIME_free(g);
    lint_expect(lt, x, g_field, "validity is longer than");
    X509_free(x);
    tpl_free(t);
    tpl_free(lt);
    ASN1_INTEGER_free(serial);
    tpl_free(it);
    X509_REQ_free(csr);
    EVP_PKEY_free(k);
}

/* ---- fixtures made by the openssl CLI ----------------------------------------------------- */

static void test_fixtures(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/csr/verdicts.txt", g_data_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        char file[128], tname[64], dev[64], verdict[16];
        int off = 0;
        assert_int_equal(sscanf(line, "%127s %63s %63s %15s %n", file, tname, dev, verdict, &off),
                         4);
        char *msg = line + off;
        msg[strcspn(msg, "\n")] = 0;
        snprintf(path, sizeof path, "%s/csr/%s", g_data_dir, file);
        FILE *cf = fopen(path, "r");
        assert_non_null(cf);
        X509_REQ *csr = PEM_read_X509_REQ(cf, NULL, NULL, NULL);
        fclose(cf);
        assert_non_null(csr);
        EVP_PKEY *pk = X509_REQ_get0_pubkey(csr);
        assert_int_equal(X509_REQ_verify(csr, pk), 1);
        issue_opts o = {.device_id = strcmp(dev, "-") ? dev : NULL};
        X509 *x = NULL;
        kl_rc rc = issue(tname, csr, g_field, g_field_key, &o, &x);
        kl_rc want = strcmp(verdict, "ok") == 0      ? KL_OK
                     : strcmp(verdict, "input") == 0 ? KL_EINPUT
                                                     : KL_EPOLICY;
        if (rc != want || (want != KL_OK && !strstr(kl_errmsg(), msg))) {
            fail_msg("%s with %s: rc %s '%s', want %s '%s'", file, tname, kl_rc_name(rc),
                     rc ? kl_errmsg() : "", verdict, msg);
        }
        if (x && EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
            /* the certificate's EC key: named curve (RFC 5480 2.1.1), uncompressed point
             * (RFC 5480 2.2: "MUST support the uncompressed form"), whatever the CSR had */
            const unsigned char *kb = NULL;
            int kl = 0;
            const X509_ALGOR *ka = NULL;
            const void *pv = NULL;
            int pt = 0;
            assert_int_equal(
                X509_PUBKEY_get0_param(NULL, &kb, &kl, (X509_ALGOR **)&ka, X509_get_X509_PUBKEY(x)),
                1);
            X509_ALGOR_get0(NULL, &pt, &pv, ka);
            assert_int_equal(pt, V_ASN1_OBJECT);
            assert_true(kl > 0 && kb[0] == 0x04);
            assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), pk), 1);
        }
        X509_free(x);
        X509_REQ_free(csr);
        n++;
    }
    fclose(f);
    assert_true(n >= 5);
}

int main(int argc, char **argv)
{
    g_tpl_dir = argc > 1 ? argv[1] : getenv("KL_TEMPLATES_DIR");
    g_data_dir = argc > 2 ? argv[2] : getenv("KL_TEST_DATA");
    if (!g_tpl_dir || !g_data_dir) {
        fprintf(stderr, "usage: test_tpl TEMPLATES_DIR TEST_DATA_DIR (or KL_TEMPLATES_DIR and "
                        "KL_TEST_DATA)\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_shipped),
        cmocka_unit_test(test_load_bad),
        cmocka_unit_test(test_hierarchy),
        cmocka_unit_test(test_idevid),
        /* device-ldevid policy */
        cmocka_unit_test(test_ldevid_issue),
        cmocka_unit_test(test_ldevid_refusals),
        cmocka_unit_test(test_ldevid_limits),
        cmocka_unit_test(test_subject_serial_number),
        cmocka_unit_test(test_csr_ext_ca_writes),
        cmocka_unit_test(test_est_server),
        cmocka_unit_test(test_ocsp_signer),
        cmocka_unit_test(test_ca_issuer_rules),
        /* tpl_lint */
        cmocka_unit_test(test_lint_serial_key),
        cmocka_unit_test(test_lint_ext_validity),
        cmocka_unit_test(test_lint_8021ar),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
