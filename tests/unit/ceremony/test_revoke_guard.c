/* Unit tests for the quorum's revocation guard (ca/ceremony_ops.c, ceremony_revoke_guard_*)
 * against a real CA in the throwaway SoftHSM token and its SQLite store
 * (tests/lib/with-token.sh): a root, an issuing CA, the issuing CA's delegated OCSP signer and
 * two device certificates. The check is called as the store calls it (canonical serial, issuer,
 * template), then through store_cert_revoke_many as keyline-ca revoke runs it: a batch holding
 * a CA certificate is refused whole, with nothing revoked and nothing audited. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "ca_backend.h"
#include "ceremony.h"

#define RG_SERIAL_MAX 64
#define RG_FAR_FUTURE ((time_t)4102444800) /* 2100-01-01: every certificate's creation */

static kl_conf *g_conf;
static ca_ctx *g_ca;
/* the store's (canonical) serials of what setup made */
static char g_root[RG_SERIAL_MAX], g_field[RG_SERIAL_MAX], g_ocsp[RG_SERIAL_MAX];
static char g_dev[2][RG_SERIAL_MAX];

static void rg_serial_of(X509 *x, char *out)
{
    char *hex = ca_serial_hex(X509_get0_serialNumber(x));
    assert_non_null(hex);
    assert_int_equal(store_serial_normalize(hex, out, RG_SERIAL_MAX), KL_OK);
    OPENSSL_free(hex);
}

static int rg_ca_serial(const char *label, char *out)
{
    X509 *x = NULL;
    if (ca_cert(g_ca, label, &x) != KL_OK) {
        fprintf(stderr, "%s: %s\n", label, kl_errmsg());
        return -1;
    }
    rg_serial_of(x, out);
    X509_free(x);
    return 0;
}

static int rg_issue_device(const char *cn, char *out)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_REQ_set_subject_name(r, n);
    X509_REQ_set_pubkey(r, k);
    X509_REQ_sign(r, k, EVP_sha256());
    unsigned char *der = NULL;
    int len = i2d_X509_REQ(r, &der);
    ca_issue_req req = {.issuer = "field1",
                        .template_name = "device-ldevid",
                        .csr_der = der,
                        .csr_len = (size_t)len,
                        .actor = "test"};
    X509 *x = NULL;
    kl_rc rc = ca_issue(g_ca, &req, &x);
    if (rc != KL_OK) {
        fprintf(stderr, "ca_issue: %s\n", kl_errmsg());
    } else {
        rg_serial_of(x, out);
    }
    X509_free(x);
    OPENSSL_free(der);
    X509_NAME_free(n);
    X509_REQ_free(r);
    EVP_PKEY_free(k);
    return rc == KL_OK ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    const char *conf = getenv("KL_CONF");
    X509 *x = NULL;
    if (!conf || kl_conf_load(&g_conf, conf) != KL_OK || ca_open(&g_ca, g_conf) != KL_OK) {
        fprintf(stderr, "setup (run under tests/lib/with-token.sh): %s\n", kl_errmsg());
        return -1;
    }
    if (ca_create(g_ca, "root1", "root", "CN=Guard Root,O=Keyline Test", HSM_KEY_EC_P256, NULL,
                  "test", &x) != KL_OK) {
        fprintf(stderr, "root1: %s\n", kl_errmsg());
        return -1;
    }
    X509_free(x);
    x = NULL;
    if (ca_create(g_ca, "field1", "field-ca", "CN=Guard Field CA,O=Keyline Test", HSM_KEY_EC_P256,
                  "root1", "test", &x) != KL_OK) {
        fprintf(stderr, "field1: %s\n", kl_errmsg());
        return -1;
    }
    X509_free(x);
    if (ca_ocsp_signer_ensure(g_ca, "field1", "test", NULL) != KL_OK) {
        fprintf(stderr, "field1.ocsp: %s\n", kl_errmsg());
        return -1;
    }
    if (rg_ca_serial("root1", g_root) || rg_ca_serial("field1", g_field) ||
        rg_ca_serial("field1.ocsp", g_ocsp) || rg_issue_device("guard device 0", g_dev[0]) ||
        rg_issue_device("guard device 1", g_dev[1])) {
        return -1;
    }
    /* the CAs exist; from here on the quorum applies */
    if (kl_conf_set(g_conf, "ceremony", "quorum", "2") != KL_OK) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ca_close(g_ca);
    kl_conf_free(g_conf);
    return 0;
}

static ceremony_revoke_guard *rg_guard(void)
{
    ceremony_revoke_guard *g = NULL;
    assert_int_equal(ceremony_revoke_guard_new(g_conf, g_ca, &g), KL_OK);
    assert_non_null(g);
    return g;
}

/* The check refuses `serial` as a CA certificate's, saying so and naming it. */
static void rg_refused(ceremony_revoke_guard *g, const char *serial, const char *issuer,
                       const char *tpl)
{
    kl_rc rc = ceremony_revoke_guard_check(g, serial, issuer, tpl);
    if (rc != KL_EPOLICY) {
        fail_msg("%s (template %s): %d, not refused as a CA certificate", serial,
                 tpl ? tpl : "none", rc);
    }
    const char *msg = kl_errmsg();
    assert_non_null(strstr(msg, serial));
    assert_non_null(strstr(msg, "is a CA certificate"));
    assert_non_null(strstr(msg, "ceremony propose ca revoke-ca"));
    assert_non_null(strstr(msg, "nothing was revoked"));
}

/* The check lets `serial` be revoked. */
static void rg_accepted(ceremony_revoke_guard *g, const char *serial, const char *issuer,
                        const char *tpl)
{
    kl_rc rc = ceremony_revoke_guard_check(g, serial, issuer, tpl);
    if (rc != KL_OK) {
        fail_msg("%s (template %s) refused: %s", serial, tpl ? tpl : "none", kl_errmsg());
    }
}

/* Other spellings of canonical serial `s` a list may hold: lower case, leading zero octets,
 * colons. v[4][RG_SERIAL_MAX * 3]. */
static void rg_spellings(const char *s, char v[4][RG_SERIAL_MAX * 3])
{
    size_t n = strlen(s), o = 0;
    for (size_t i = 0; i <= n; i++) {
        v[0][i] = (char)tolower((unsigned char)s[i]);
    }
    memcpy(v[1], "00", 2);
    memcpy(v[1] + 2, v[0], n + 1);
    snprintf(v[2], sizeof v[2], "0000%s", s);
    for (size_t i = 0; i < n; i++) {
        if (i && i % 2 == 0) {
            v[3][o++] = ':';
        }
        v[3][o++] = (char)tolower((unsigned char)s[i]);
    }
    v[3][o] = '\0';
}

/* ceremony_revoke_guard_new: at quorum 0 no guard (nothing is checked, *out cleared), at
 * M >= 1 one, on a bad quorum an error and none. */
static void test_guard_new_quorum(void **state)
{
    (void)state;
    ceremony_revoke_guard *g = rg_guard();
    ceremony_revoke_guard_free(g);
    /* what *out held before: the call must clear it */
    static ceremony_revoke_guard *const stale = (ceremony_revoke_guard *)&g_conf;
    assert_int_equal(kl_conf_set(g_conf, "ceremony", "quorum", "0"), KL_OK);
    g = stale;
    assert_int_equal(ceremony_revoke_guard_new(g_conf, g_ca, &g), KL_OK);
    assert_null(g);
    assert_int_equal(kl_conf_set(g_conf, "ceremony", "quorum", "1"), KL_OK);
    g = rg_guard();
    rg_refused(g, g_field, "root1", NULL); /* M = 1 is a quorum too */
    ceremony_revoke_guard_free(g);
    assert_int_equal(kl_conf_set(g_conf, "ceremony", "quorum", "-1"), KL_OK);
    g = stale;
    assert_int_equal(ceremony_revoke_guard_new(g_conf, g_ca, &g), KL_EINPUT);
    assert_null(g);
    assert_int_equal(kl_conf_set(g_conf, "ceremony", "quorum", "2"), KL_OK);
    ceremony_revoke_guard_free(NULL);
}

/* A CA certificate's serial, in the form the store passes it (store_serial_normalize of
 * whatever spelling named it), is refused by its serial alone (no template, or a template of
 * no CA), and a certificate of a template of kind ca by its template alone. */
static void test_guard_check_ca(void **state)
{
    (void)state;
    ceremony_revoke_guard *g = rg_guard();
    const char *cas[][3] = {{g_root, "root1", "root"}, {g_field, "root1", "field-ca"}};
    for (size_t i = 0; i < 2; i++) {
        char v[4][RG_SERIAL_MAX * 3], norm[RG_SERIAL_MAX];
        rg_spellings(cas[i][0], v);
        for (size_t k = 0; k < 4; k++) {
            assert_int_equal(store_serial_normalize(v[k], norm, sizeof norm), KL_OK);
            assert_string_equal(norm, cas[i][0]);
            rg_refused(g, norm, cas[i][1], NULL);
            rg_refused(g, norm, cas[i][1], "device-ldevid");
            rg_refused(g, norm, cas[i][1], "no-such-template");
        }
        rg_refused(g, cas[i][0], cas[i][1], cas[i][2]);
    }
    /* by the template alone: a serial no CA record holds */
    rg_refused(g, g_dev[0], "root1", "field-ca");
    rg_refused(g, g_dev[0], "root1", "root");
    ceremony_revoke_guard_free(g);
}

/* End-entity certificates pass, whatever template was judged before (the kept answer) */
static void test_guard_check_end_entity(void **state)
{
    (void)state;
    ceremony_revoke_guard *g = rg_guard();
    for (size_t i = 0; i < 2; i++) {
        rg_accepted(g, g_dev[i], "field1", "device-ldevid");
        rg_accepted(g, g_dev[i], "field1", NULL);
        rg_accepted(g, g_dev[i], "field1", "no-such-template"); /* not a CA by its name */
    }
    rg_refused(g, g_dev[0], "field1", "field-ca");
    rg_accepted(g, g_dev[1], "field1", "device-ldevid");
    rg_refused(g, g_dev[0], "field1", "field-ca");
    ceremony_revoke_guard_free(g);
}

/* The OCSP signer is a CA record whose certificate is no CA certificate (7a527ed): it
 * passes by its serial and by its template */
static void test_guard_check_ocsp_signer(void **state)
{
    (void)state;
    X509 *x = NULL;
    assert_int_equal(ca_cert(g_ca, "field1.ocsp", &x), KL_OK);
    assert_int_equal(X509_get_extension_flags(x) & EXFLAG_CA, 0);
    X509_free(x);
    store_cert c;
    memset(&c, 0, sizeof c);
    assert_int_equal(store_cert_get(ca_store(g_ca), g_ocsp, &c), KL_OK);
    assert_string_equal(c.template_name, "ocsp-signer");
    store_cert_free(&c);
    ceremony_revoke_guard *g = rg_guard();
    rg_accepted(g, g_ocsp, "field1", "ocsp-signer");
    rg_accepted(g, g_ocsp, "field1", NULL);
    ceremony_revoke_guard_free(g);
}

/* ---- through the store, as keyline-ca revoke runs it ---- */

typedef struct {
    int64_t audit;
    int64_t epoch[2]; /* root1, field1 */
} rg_snap;

static void rg_snapshot(rg_snap *s)
{
    store *st = ca_store(g_ca);
    assert_int_equal(store_audit_verify(st, &s->audit), KL_OK);
    assert_int_equal(store_revocation_epoch(st, "root1", &s->epoch[0]), KL_OK);
    assert_int_equal(store_revocation_epoch(st, "field1", &s->epoch[1]), KL_OK);
}

static kl_rc rg_count_revoked(void *arg, const store_revoked *r)
{
    (void)r;
    (*(size_t *)arg)++;
    return KL_OK;
}

static const char *rg_status(const char *serial, char *buf, size_t cap)
{
    store_cert_state st;
    assert_int_equal(store_cert_state_get(ca_store(g_ca), serial, &st), KL_OK);
    snprintf(buf, cap, "%s", st.status);
    return buf;
}

/* Nothing changed since `before`: every certificate valid, none of either CA revoked, no
 * audit entry, no epoch moved. */
static void rg_unchanged(const rg_snap *before)
{
    const char *all[] = {g_root, g_field, g_ocsp, g_dev[0], g_dev[1]};
    char buf[16];
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(rg_status(all[i], buf, sizeof buf), STORE_ST_VALID);
    }
    size_t n = 0;
    assert_int_equal(store_revoked_stream(ca_store(g_ca), "root1", rg_count_revoked, &n), KL_OK);
    assert_int_equal(store_revoked_stream(ca_store(g_ca), "field1", rg_count_revoked, &n), KL_OK);
    assert_int_equal(n, 0);
    rg_snap now;
    rg_snapshot(&now);
    assert_int_equal(now.audit, before->audit);
    assert_int_equal(now.epoch[0], before->epoch[0]);
    assert_int_equal(now.epoch[1], before->epoch[1]);
}

static kl_rc rg_preview(void *arg, const char *serial, const char *issuer)
{
    (void)serial;
    (void)issuer;
    (*(size_t *)arg)++;
    return KL_OK;
}

/* store_cert_revoke_many under the guard, as revoke_many (cmd_revoke.c) sets it up */
static kl_rc rg_revoke(ceremony_revoke_guard *g, store_revoke_req *rq, store_revoke_result *res)
{
    rq->check = ceremony_revoke_guard_check;
    rq->check_arg = g;
    rq->actor = "cli:test";
    rq->reason = 1;
    memset(res, 0, sizeof *res);
    return store_cert_revoke_many(ca_store(g_ca), rq, res);
}

/* The request is refused whole as revoking a CA certificate: `ca`, or with `other` (NULL: none)
 * that one (a batch holding both names the first the store reaches). */
static void rg_revoke_refused(ceremony_revoke_guard *g, store_revoke_req *rq, const char *ca,
                              const char *other)
{
    store_revoke_result res;
    kl_rc rc = rg_revoke(g, rq, &res);
    if (rc != KL_EPOLICY) {
        fail_msg("a request revoking CA certificate %s: %d (%s), not refused", ca, rc,
                 rc == KL_OK ? "revoked" : kl_errmsg());
    }
    const char *msg = kl_errmsg();
    if (!(strstr(msg, ca) || (other && strstr(msg, other))) ||
        !strstr(msg, "is a CA certificate")) {
        fail_msg("refused, but not as CA certificate %s: %s", ca, msg);
    }
}

static void test_guard_store_batch(void **state)
{
    (void)state;
    ceremony_revoke_guard *g = rg_guard();
    rg_snap before;
    rg_snapshot(&before);
    char v[4][RG_SERIAL_MAX * 3], item[RG_SERIAL_MAX * 3 + 8];

    /* a list: a device certificate, then the issuing CA's as "serial:" with a leading zero
     * octet in lower case */
    rg_spellings(g_field, v);
    snprintf(item, sizeof item, "serial:%s", v[1]);
    const char *mixed[] = {g_dev[0], item, g_dev[1]};
    store_revoke_req rq = {.items = mixed, .n_items = 3};
    rg_revoke_refused(g, &rq, g_field, NULL);
    rg_unchanged(&before);
    /* the same as a dry run */
    size_t seen = 0;
    rq = (store_revoke_req){
        .items = mixed, .n_items = 3, .preview = rg_preview, .preview_arg = &seen};
    rg_revoke_refused(g, &rq, g_field, NULL);
    assert_int_equal(seen, 0); /* every item is judged before anything is previewed */
    rg_unchanged(&before);

    /* the root's certificate alone, each spelling */
    rg_spellings(g_root, v);
    for (size_t k = 0; k < 4; k++) {
        const char *one[] = {v[k]};
        rq = (store_revoke_req){.items = one, .n_items = 1};
        rg_revoke_refused(g, &rq, g_root, NULL);
        rg_unchanged(&before);
    }

    /* a batch of the root's certificates over all time: its own and the issuing CA's */
    rq = (store_revoke_req){.issuer = "root1", .from = 0, .until = RG_FAR_FUTURE};
    rg_revoke_refused(g, &rq, g_root, g_field);
    rg_unchanged(&before);

    /* the same paths revoke when the guard lets them: the device alone from a list, then a
     * batch of the issuing CA (its other device and its OCSP signer) */
    store_revoke_result res;
    const char *dev[] = {g_dev[0]};
    rq = (store_revoke_req){.items = dev, .n_items = 1};
    assert_int_equal(rg_revoke(g, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 1);
    rq = (store_revoke_req){.issuer = "field1", .from = 0, .until = RG_FAR_FUTURE};
    assert_int_equal(rg_revoke(g, &rq, &res), KL_OK);
    assert_int_equal(res.revoked, 2);
    char buf[16];
    assert_string_equal(rg_status(g_dev[0], buf, sizeof buf), STORE_ST_REVOKED);
    assert_string_equal(rg_status(g_dev[1], buf, sizeof buf), STORE_ST_REVOKED);
    assert_string_equal(rg_status(g_ocsp, buf, sizeof buf), STORE_ST_REVOKED);
    assert_string_equal(rg_status(g_field, buf, sizeof buf), STORE_ST_VALID);
    assert_string_equal(rg_status(g_root, buf, sizeof buf), STORE_ST_VALID);
    rg_snap after;
    rg_snapshot(&after);
    assert_int_equal(after.audit, before.audit + 3);
    ceremony_revoke_guard_free(g);
}

/* Each test starts at quorum 2, whatever a failed one before it left set. */
static int quorum2(void **state)
{
    (void)state;
    return kl_conf_set(g_conf, "ceremony", "quorum", "2") == KL_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_guard_new_quorum, quorum2),
        cmocka_unit_test_setup(test_guard_check_ca, quorum2),
        cmocka_unit_test_setup(test_guard_check_end_entity, quorum2),
        cmocka_unit_test_setup(test_guard_check_ocsp_signer, quorum2),
        cmocka_unit_test_setup(test_guard_store_batch, quorum2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
