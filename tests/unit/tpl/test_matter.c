/* Unit tests for ca/matter.c through the template pipeline: the shipped matter-paa, matter-pai
 * and matter-dac templates build a PAA -> PAI -> DAC chain (policy + lint, software keys); every
 * VID/PID rule refuses what it must; the lint catches each profile point broken by hand; bad
 * Matter templates do not load. Env: KL_TEMPLATES_DIR (the shipped templates/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "matter.h"
#include "tpl.h"

static const char *g_tpl_dir;

static X509_NAME *name_of(const char *spec, int vid_type)
{
    X509_NAME *n = X509_NAME_new();
    char *dup = strdup(spec), *save = NULL;
    for (char *av = strtok_r(dup, ",", &save); av; av = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(av, '=');
        assert_non_null(eq);
        *eq = 0;
        int type = strncmp(av, "matter-", 7) == 0 ? vid_type : V_ASN1_UTF8STRING;
        assert_int_equal(X509_NAME_add_entry_by_txt(n, av, type, (unsigned char *)eq + 1,
                                                    (int)strlen(eq + 1), -1, 0),
                         1);
    }
    free(dup);
    return n;
}

static X509_REQ *csr_of(EVP_PKEY *k, const char *subject)
{
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = name_of(subject, V_ASN1_UTF8STRING);
    assert_int_equal(X509_REQ_set_version(r, 0), 1);
    assert_int_equal(X509_REQ_set_subject_name(r, n), 1);
    assert_int_equal(X509_REQ_set_pubkey(r, k), 1);
    assert_true(X509_REQ_sign(r, k, EVP_sha256()) > 0);
    X509_NAME_free(n);
    return r;
}

/* Policy + build (+ lint + sign when it was built). subject: for the CA templates. */
static kl_rc issue(const char *tname, EVP_PKEY *k, const char *csr_subject, const char *subject,
                   X509 *issuer, EVP_PKEY *sign_key, X509 **out)
{
    tpl *t = NULL;
    X509_NAME *sn = subject ? name_of(subject, V_ASN1_UTF8STRING) : NULL;
    X509_REQ *csr = csr_of(k, csr_subject);
    unsigned char raw[16];
    assert_int_equal(RAND_bytes(raw, sizeof raw), 1);
    raw[0] = 0x40;
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
    if (tpl_load(g_tpl_dir, tname, &t) != KL_OK) {
        fail_msg("%s", kl_errmsg());
    }
    tpl_policy_in in = {.t = t, .csr = csr, .subject = sn, .issuer_cert = issuer};
    X509 *x = NULL;
    kl_rc rc = tpl_policy_build(&in, serial, &x);
    if (rc == KL_OK) {
        if (tpl_lint(t, x, issuer) != KL_OK) {
            fail_msg("lint of a policy-built %s: %s", tname, kl_errmsg());
        }
        assert_true(X509_sign(x, sign_key, EVP_sha256()) > 0);
    }
    *out = x;
    tpl_free(t);
    X509_REQ_free(csr);
    X509_NAME_free(sn);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return rc;
}

static EVP_PKEY *g_paa_key, *g_pai_key, *g_pai2_key, *g_dac_key;
static X509 *g_paa, *g_pai, *g_pai_vid_only;

static int setup(void **state)
{
    (void)state;
    assert_true(matter_nid_vid() > 0 && matter_nid_pid() > 0);
    g_paa_key = EVP_EC_gen("P-256");
    g_pai_key = EVP_EC_gen("P-256");
    g_pai2_key = EVP_EC_gen("P-256");
    g_dac_key = EVP_EC_gen("P-256");
    assert_int_equal(issue("matter-paa", g_paa_key, "CN=x", "CN=Test PAA,matter-vid=FFF1", NULL,
                           g_paa_key, &g_paa),
                     KL_OK);
    assert_int_equal(issue("matter-pai", g_pai_key, "CN=x",
                           "CN=Test PAI,matter-vid=FFF1,matter-pid=8000", g_paa, g_paa_key, &g_pai),
                     KL_OK);
    assert_int_equal(issue("matter-pai", g_pai2_key, "CN=x", "CN=Test PAI 2,matter-vid=FFF1", g_paa,
                           g_paa_key, &g_pai_vid_only),
                     KL_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    X509_free(g_paa);
    X509_free(g_pai);
    X509_free(g_pai_vid_only);
    EVP_PKEY_free(g_paa_key);
    EVP_PKEY_free(g_pai_key);
    EVP_PKEY_free(g_pai2_key);
    EVP_PKEY_free(g_dac_key);
    return 0;
}

static void expect_refused(kl_rc rc, kl_rc code, const char *want)
{
    if (rc != code || !strstr(kl_errmsg(), want)) {
        fail_msg("rc %s '%s', want %s '%s'", kl_rc_name(rc), kl_errmsg(), kl_rc_name(code), want);
    }
}

static void test_chain(void **state)
{
    (void)state;
    X509 *dac = NULL;
    assert_int_equal(issue("matter-dac", g_dac_key,
                           "CN=Matter DAC,serialNumber=SN1,matter-vid=FFF1,matter-pid=8000", NULL,
                           g_pai, g_pai_key, &dac),
                     KL_OK);
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509_STORE_add_cert(st, g_paa);
    sk_X509_push(chain, g_pai);
    X509_STORE_set_flags(st, X509_V_FLAG_X509_STRICT);
    assert_int_equal(X509_STORE_CTX_init(ctx, st, dac, chain), 1);
    if (X509_verify_cert(ctx) != 1) {
        fail_msg("%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    /* the attributes: UTF8String "FFF1" / "8000" */
    int present = 0;
    uint16_t v = 0;
    assert_int_equal(matter_name_id(X509_get_subject_name(dac), matter_nid_pid(), &present, &v),
                     KL_OK);
    assert_true(present && v == 0x8000);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    sk_X509_free(chain);
    X509_free(dac);
    /* a PAI without PID issues any PID of its vendor */
    assert_int_equal(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8123", NULL,
                           g_pai_vid_only, g_pai2_key, &dac),
                     KL_OK);
    X509_free(dac);
}

static void test_refusals(void **state)
{
    (void)state;
    X509 *x = NULL;
    /* a PAI with a PID refuses DACs for another PID, and any other VID */
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8001", NULL,
                         g_pai, g_pai_key, &x),
                   KL_EPOLICY, "refuses a DAC for ProductID 8001");
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF2,matter-pid=8000", NULL,
                         g_pai, g_pai_key, &x),
                   KL_EPOLICY, "VendorID FFF2 differs");
    expect_refused(
        issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1", NULL, g_pai, g_pai_key, &x),
        KL_EPOLICY, "matter-pid");
    /* lower case, wrong length: not the spec's four upper-case hex digits */
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=fff1,matter-pid=8000", NULL,
                         g_pai, g_pai_key, &x),
                   KL_EPOLICY, "four upper-case hex digits");
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=800", NULL,
                         g_pai, g_pai_key, &x),
                   KL_EPOLICY, "four upper-case hex digits");
    /* not P-256 */
    EVP_PKEY *k384 = EVP_EC_gen("P-384");
    expect_refused(issue("matter-dac", k384, "CN=D,matter-vid=FFF1,matter-pid=8000", NULL, g_pai,
                         g_pai_key, &x),
                   KL_EPOLICY, "key type ec-p384 not allowed");
    EVP_PKEY_free(k384);
    /* a PAI for another vendor than its PAA's; a PAA with a PID */
    expect_refused(
        issue("matter-pai", g_pai2_key, "CN=x", "CN=P,matter-vid=FFF2", g_paa, g_paa_key, &x),
        KL_EPOLICY, "differs from its PAA's");
    expect_refused(issue("matter-paa", g_pai2_key, "CN=x", "CN=P,matter-vid=FFF1,matter-pid=8000",
                         NULL, g_pai2_key, &x),
                   KL_EPOLICY, "allowed");
    /* Matter 2.5.2 and 2.5.3: VID 0000 and FFF5..FFFF are no vendor's, PID 0000 no product's;
     * the SDK's payload parser refuses them (SetupPayload::IsValidQRCodePayload) */
    expect_refused(
        issue("matter-paa", g_pai2_key, "CN=x", "CN=P,matter-vid=0000", NULL, g_pai2_key, &x),
        KL_EPOLICY, "VendorID 0000 is not");
    expect_refused(
        issue("matter-paa", g_pai2_key, "CN=x", "CN=P,matter-vid=FFFF", NULL, g_pai2_key, &x),
        KL_EPOLICY, "VendorID FFFF is not");
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=0000", NULL,
                         g_pai_vid_only, g_pai2_key, &x),
                   KL_EPOLICY, "ProductID 0000 is not");
    /* the legacy CN encoding (Matter 6.2.2.2, "Mvid:FFF1 Mpid:8000" in the common name): the
     * SDK's ExtractVIDPIDFromX509Cert refuses the whole certificate when a prefix is not
     * followed by four upper-case hex digits; it must not contradict the attributes either */
    expect_refused(issue("matter-dac", g_dac_key,
                         "CN=Plug Mvid:0xFFF1,matter-vid=FFF1,matter-pid=8000", NULL, g_pai,
                         g_pai_key, &x),
                   KL_EPOLICY, "Mvid:");
    expect_refused(issue("matter-dac", g_dac_key,
                         "CN=Plug Mpid:8001,matter-vid=FFF1,matter-pid=8000", NULL, g_pai,
                         g_pai_key, &x),
                   KL_EPOLICY, "Mpid:");
    expect_refused(issue("matter-pai", g_pai2_key, "CN=x", "CN=P Mvid:fff1,matter-vid=FFF1", g_paa,
                         g_paa_key, &x),
                   KL_EPOLICY, "Mvid:");
    assert_int_equal(issue("matter-dac", g_dac_key,
                           "CN=Plug Mvid:FFF1 Mpid:8000,matter-vid=FFF1,matter-pid=8000", NULL,
                           g_pai, g_pai_key, &x),
                     KL_OK);
    X509_free(x);
    x = NULL;
    /* a DAC under a non-Matter issuer (the PAA itself has no pathLen 0, but is no PAI) */
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8000", NULL,
                         g_paa, g_paa_key, &x),
                   KL_EPOLICY, "is not a Matter PAI");
}

/* Build a good DAC tbs, break one thing, expect the lint to name it. */
static void lint_broken(const char *what, void (*breakit)(X509 *), const char *want)
{
    tpl *t = NULL;
    X509 *x = NULL;
    assert_int_equal(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8000", NULL,
                           g_pai, g_pai_key, &x),
                     KL_OK);
    assert_int_equal(tpl_load(g_tpl_dir, "matter-dac", &t), KL_OK);
    breakit(x);
    kl_rc rc = tpl_lint(t, x, g_pai);
    if (rc != KL_EINTERNAL || !strstr(kl_errmsg(), want)) {
        fail_msg("%s: lint said %s '%s', want '%s'", what, kl_rc_name(rc), kl_errmsg(), want);
    }
    tpl_free(t);
    X509_free(x);
}

static void set_ext(X509 *x, int nid, const char *value)
{
    int idx = X509_get_ext_by_NID(x, nid, -1);
    if (idx >= 0) {
        X509_EXTENSION_free(X509_delete_ext(x, idx));
    }
    if (value) {
        X509V3_CTX c;
        X509V3_set_ctx(&c, g_pai, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &c, nid, value);
        assert_non_null(e);
        assert_int_equal(X509_add_ext(x, e, -1), 1);
        X509_EXTENSION_free(e);
    }
}

static void brk_ku(X509 *x)
{
    set_ext(x, NID_key_usage, "critical,digitalSignature,keyAgreement");
}
static void brk_ku_crit(X509 *x)
{
    set_ext(x, NID_key_usage, "digitalSignature");
}
static void brk_bc(X509 *x)
{
    set_ext(x, NID_basic_constraints, "CA:FALSE");
}
static void brk_akid(X509 *x)
{
    set_ext(x, NID_authority_key_identifier, "keyid,issuer:always");
}
static void brk_pid(X509 *x)
{
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_ENTRY_free(
        X509_NAME_delete_entry(n, X509_NAME_get_index_by_NID(n, matter_nid_pid(), -1)));
    X509_NAME_add_entry_by_NID(n, matter_nid_pid(), V_ASN1_PRINTABLESTRING, (unsigned char *)"8000",
                               4, -1, 0);
}
static void brk_notafter(X509 *x)
{
    ASN1_TIME *t = ASN1_TIME_set(NULL, time(NULL) + 86400);
    X509_set1_notAfter(x, t);
    ASN1_TIME_free(t);
    /* under a PAI valid for ten days: outside it */
}

static void test_lint(void **state)
{
    (void)state;
    lint_broken("keyAgreement", brk_ku, "keyUsage");
    lint_broken("KU not critical", brk_ku_crit, "keyUsage");
    lint_broken("BC not critical", brk_bc, "basicConstraints");
    lint_broken("AKID with issuer+serial", brk_akid, "authorityKeyIdentifier");
    lint_broken("PID PrintableString", brk_pid, "four upper-case hex digits");
    /* the DAC's validity lies inside its PAI's: a PAI that ends before the DAC */
    tpl *t = NULL;
    X509 *x = NULL;
    assert_int_equal(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8000", NULL,
                           g_pai, g_pai_key, &x),
                     KL_OK);
    X509 *short_pai = X509_dup(g_pai);
    brk_notafter(short_pai);
    assert_int_equal(tpl_load(g_tpl_dir, "matter-dac", &t), KL_OK);
    kl_rc rc = tpl_lint(t, x, short_pai);
    if (rc != KL_EINTERNAL || !strstr(kl_errmsg(), "inside the issuer's")) {
        fail_msg("validity: %s", kl_errmsg());
    }
    /* and the policy refuses to build a forever DAC under such a PAI in the first place */
    X509 *y = NULL;
    expect_refused(issue("matter-dac", g_dac_key, "CN=D,matter-vid=FFF1,matter-pid=8000", NULL,
                         short_pai, g_pai_key, &y),
                   KL_EPOLICY, "lies inside its issuer's validity");
    X509_free(short_pai);
    X509_free(x);
    tpl_free(t);
}

/* Bad Matter templates: written to a temp folder, each must fail to load naming the rule. */
static void tpl_expect_bad(const char *body, const char *want)
{
    char dir[] = "/tmp/kl-matter-tpl.XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/bad.tmpl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    tpl *t = NULL;
    kl_rc rc = tpl_load(dir, "bad", &t);
    unlink(path);
    rmdir(dir);
    if (rc != KL_EINPUT || !strstr(kl_errmsg(), want)) {
        fail_msg("template loaded or wrong error (%s): '%s', want '%s'", kl_rc_name(rc),
                 kl_errmsg(), want);
    }
}

#define DAC_HEAD "[template]\nkind = end-entity\nmatter = dac\nvalidity = forever\n"
#define DAC_SUBJ                                                                                   \
    "[subject]\nsource = csr\nallowed = CN matter-vid matter-pid\nrequired = matter-vid "          \
    "matter-pid\n"

static void test_templates(void **state)
{
    (void)state;
    tpl_expect_bad(DAC_HEAD "key-types = ec-p256 ec-p384\n" DAC_SUBJ
                            "[extensions]\nkey-usage = digitalSignature\n",
                   "P-256 only");
    tpl_expect_bad(DAC_HEAD "key-types = ec-p256\n" DAC_SUBJ
                            "[extensions]\nkey-usage = digitalSignature keyAgreement\n",
                   "digitalSignature only");
    tpl_expect_bad(DAC_HEAD "key-types = ec-p256\n"
                            "[subject]\nsource = csr\nallowed = CN matter-vid matter-pid\n"
                            "[extensions]\nkey-usage = digitalSignature\n",
                   "requires matter-vid and matter-pid");
    tpl_expect_bad("[template]\nkind = ca\nmatter = pai\nkey-types = ec-p256\nvalidity = "
                   "forever\npath-len = 1\n[subject]\nsource = request\nallowed = CN "
                   "matter-vid\nrequired = matter-vid\n[extensions]\nkey-usage = keyCertSign "
                   "cRLSign\n",
                   "path-len = 0");
    tpl_expect_bad("[template]\nkind = ca\nmatter = paa\nkey-types = ec-p256\nvalidity = "
                   "forever\npath-len = 2\n[subject]\nsource = request\nallowed = CN "
                   "matter-vid\n[extensions]\nkey-usage = keyCertSign cRLSign\n",
                   "path-len none or 1");
    tpl_expect_bad("[template]\nkind = ca\nmatter = pai\nkey-types = ec-p256\nvalidity = "
                   "forever\npath-len = 0\n[subject]\nsource = request\nallowed = CN "
                   "matter-vid\nrequired = matter-vid\n[extensions]\nkey-usage = keyCertSign\n",
                   "keyCertSign and cRLSign");
    tpl_expect_bad("[template]\nkind = ca\nmatter = icac\n", "matter must be paa, pai or dac");
    uint16_t v = 0;
    assert_int_equal(matter_id_parse("--vid", "0xFFF1", &v), KL_OK);
    assert_int_equal(v, 0xFFF1);
    assert_int_equal(matter_id_parse("--vid", "12345", &v), KL_EUSAGE);
    assert_int_equal(matter_id_parse("--vid", "0xZZ", &v), KL_EUSAGE);
    char out[128];
    assert_int_equal(matter_subject_append("CN=PAI,O=Acme", "0xfff1", "0x8000", out, sizeof out),
                     KL_OK);
    assert_string_equal(out, "CN=PAI,O=Acme,matter-pid=8000,matter-vid=FFF1");
}

int main(void)
{
    g_tpl_dir = getenv("KL_TEMPLATES_DIR");
    if (!g_tpl_dir) {
        fprintf(stderr, "KL_TEMPLATES_DIR is not set\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_lint),
        cmocka_unit_test(test_templates),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
