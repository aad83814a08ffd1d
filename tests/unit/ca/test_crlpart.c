/* Unit tests for the partition logic of partitioned CRLs (ca/ca_crlpart.c, issue 17 item 3):
 * the names of partition CRLs ("L/K"), the distribution point URL of a partition from
 * [ca] crl-url (with {partition}, or its ".crl" ending made "/K.crl"), the setting
 * [ca LABEL] crl-partition-size, and the DistributionPointName written into certificates and
 * CRLs. The store side is unit.store.crlpart; the whole, with openssl and certtool,
 * integration.crl_partition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca_internal.h"

static void test_name_parse(void **state)
{
    (void)state;
    char l[CA_LABEL_MAX + 1];
    int64_t k = 0;
    assert_int_equal(ca_crlpart_name_parse("fleet1", l, sizeof l, &k), KL_OK);
    assert_string_equal(l, "fleet1");
    assert_int_equal(k, -1);
    assert_int_equal(ca_crlpart_name_parse("fleet1/0", l, sizeof l, &k), KL_OK);
    assert_string_equal(l, "fleet1");
    assert_int_equal(k, 0);
    assert_int_equal(ca_crlpart_name_parse("a.b-c/1234", l, sizeof l, &k), KL_OK);
    assert_string_equal(l, "a.b-c");
    assert_int_equal(k, 1234);
    static const char *const bad[] = {
        "",          "/3",        "fleet1/",    "fleet1/01", "fleet1/x",
        "fleet1/-1", "fleet1/+1", "fleet1/1/2", "fleet1/ 1", "fleet1/99999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ca_crlpart_name_parse(bad[i], l, sizeof l, &k), KL_EUSAGE);
    }
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(ca_crlpart_name_parse(big, l, sizeof l, &k), KL_EUSAGE);
}

static void url_is(const char *pattern, const char *label, int64_t k, const char *want)
{
    struct ca_ctx ca;
    char out[256];
    memset(&ca, 0, sizeof ca);
    ca.crl_url = (char *)pattern;
    kl_rc rc = ca_crlpart_url(&ca, label, k, out, sizeof out);
    if (want) {
        assert_int_equal(rc, KL_OK);
        assert_string_equal(out, want);
    } else {
        assert_int_equal(rc, KL_EUSAGE);
    }
}

static void test_url(void **state)
{
    (void)state;
    url_is("http://pki.example.com/crl/{issuer}.crl", "fleet1", 3,
           "http://pki.example.com/crl/fleet1/3.crl");
    url_is("http://pki.example.com/crl/{issuer}-{partition}.der", "fleet1", 12,
           "http://pki.example.com/crl/fleet1-12.der");
    url_is("http://pki.example.com/{partition}/{issuer}.crl", "f", 0,
           "http://pki.example.com/0/f.crl");
    /* a ".crl" that is not the ending, a label holding ".crl": only the URL's own ending */
    url_is("http://x.crl.example/{issuer}.crl", "a.crl", 7, "http://x.crl.example/a.crl/7.crl");
    url_is("http://pki.example.com/crl/{issuer}", "fleet1", 1, NULL); /* names no partition */
    url_is(NULL, "fleet1", 1, NULL);
    url_is("", "fleet1", 1, NULL);
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    memcpy(longp, "http://", 7);
    memcpy(longp + sizeof longp - 5, ".crl", 4);
    url_is(longp, "fleet1", 1, NULL);
}

static void test_size(void **state)
{
    (void)state;
    char dir[] = "/tmp/kl-crlpart-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/keyline.conf", dir);
    static const char *const files[] = {"[ca fleet1]\ncrl-partition-size = 500\n",
                                        "[ca fleet1]\ncrl-partition-size = 0\n",
                                        "[ca fleet1]\ncrl-partition-size = many\n"};
    static const kl_rc want[] = {KL_OK, KL_EINPUT, KL_EINPUT};
    for (size_t i = 0; i < 3; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(files[i], f);
        fclose(f);
        kl_conf *c = NULL;
        assert_int_equal(kl_conf_load(&c, path), KL_OK);
        struct ca_ctx ca;
        memset(&ca, 0, sizeof ca);
        ca.conf = c;
        int64_t n = -1;
        assert_int_equal(ca_crlpart_size(&ca, "fleet1", &n), want[i]);
        if (i == 0) {
            assert_int_equal(n, 500);
            assert_int_equal(ca_crlpart_size(&ca, "field1", &n), KL_OK); /* not partitioned */
            assert_int_equal(n, 0);
        }
        kl_conf_free(c);
    }
    unlink(path);
    rmdir(dir);
}

static void test_dpname(void **state)
{
    (void)state;
    DIST_POINT_NAME *d = NULL;
    assert_int_equal(ca_crlpart_dpname("http://h/crl/f/2.crl", &d), KL_OK);
    assert_int_equal(d->type, 0); /* fullName */
    assert_int_equal(sk_GENERAL_NAME_num(d->name.fullname), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(d->name.fullname, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_int_equal(ASN1_STRING_length(g->d.uniformResourceIdentifier), 20);
    assert_memory_equal(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://h/crl/f/2.crl", 20);
    DIST_POINT_NAME_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_parse),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_dpname),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
