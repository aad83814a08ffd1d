/* The CA protocol codec (ca/client/cap.c): what the table allows parses and re-encodes;
 * everything else is refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cac.h"
#include "cap.h"

static kl_buf g;

static void begin(cap_op op, uint8_t status)
{
    kl_buf_init(&g, 1 << 20, 0);
    assert_int_equal(cap_msg_begin(&g, op, status), KL_OK);
}

static kl_rc finish(int is_response, cap_msg *m)
{
    assert_int_equal(cap_msg_end(&g), KL_OK);
    kl_rc rc = cap_msg_parse(g.data + 4, g.len - 4, is_response, m);
    return rc;
}

static void test_issue_roundtrip(void **st)
{
    (void)st;
    cap_msg m;
    uint8_t csr[] = {0x30, 0x03, 0x02, 0x01, 0x00};
    begin(CAP_OP_ISSUE, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "ldevid"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CSR, csr, sizeof csr), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_AUTH, "cert"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_AUTH_SERIAL, "0A1B"), KL_OK);
    assert_int_equal(cap_put_u64(&g, CAP_T_PENDING, 1), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    assert_int_equal(m.op, CAP_OP_ISSUE);
    assert_int_equal(m.n, 5);
    char s[65];
    assert_int_equal(cap_get_str(&m, CAP_T_PROFILE, s, sizeof s), KL_OK);
    assert_string_equal(s, "ldevid");
    assert_int_equal(cap_get_u64(&m, CAP_T_PENDING, 0), 1);
    assert_int_equal(cap_find(&m, CAP_T_CSR, 0)->len, sizeof csr);
    assert_null(cap_find(&m, CAP_T_DEVICE_ID, 0));
    assert_int_equal(cap_get_str(&m, CAP_T_DEVICE_ID, s, sizeof s), KL_ENOTFOUND);
    assert_int_equal(cap_get_str(&m, CAP_T_PROFILE, s, 3), KL_EINPUT); /* does not fit */
    kl_buf_free(&g);
}

static void test_refusals(void **st)
{
    (void)st;
    cap_msg m;
    /* a required field missing */
    begin(CAP_OP_ISSUE, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "ldevid"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* a field the op does not take (a signing request cannot smuggle a digest or a CRL) */
    begin(CAP_OP_ACTIVATE, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_SERIAL, "0A"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CRL, "x", 1), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* duplicate */
    begin(CAP_OP_CRL, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "a"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "b"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* control byte in a string, empty string */
    begin(CAP_OP_CRL, 0);
    assert_int_equal(cap_put_bytes(&g, CAP_T_ISSUER, "a\nb", 3), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_CRL, 0);
    assert_int_equal(cap_put_bytes(&g, CAP_T_ISSUER, "", 0), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* integer of the wrong size */
    begin(CAP_OP_POLL, 0);
    assert_int_equal(cap_put_bytes(&g, CAP_T_REQUEST_ID, "1234", 4), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* a request with a status, a status out of range */
    begin(CAP_OP_HELLO, 4);
    assert_int_equal(cap_put_u64(&g, CAP_T_VERSION, 1), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_HELLO, 200);
    assert_int_equal(finish(1, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* an error answer carries a message, not a certificate */
    begin(CAP_OP_ISSUE, KL_EPOLICY);
    assert_int_equal(cap_put_str(&g, CAP_T_MESSAGE, "no"), KL_OK);
    assert_int_equal(finish(1, &m), KL_OK);
    kl_buf_free(&g);
    begin(CAP_OP_ISSUE, KL_EPOLICY);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CERT, "x", 1), KL_OK);
    assert_int_equal(finish(1, &m), KL_EINPUT);
    kl_buf_free(&g);
    /* oversize value refused by the encoder, buffer unchanged */
    begin(CAP_OP_CRL, 0);
    size_t before = g.len;
    char big[200];
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = 0;
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, big), KL_EINPUT);
    assert_int_equal(g.len, before);
    kl_buf_free(&g);
}

static void test_raw_frames(void **st)
{
    (void)st;
    cap_msg m;
    const uint8_t short_hdr[] = {1, 1};
    assert_int_equal(cap_msg_parse(short_hdr, sizeof short_hdr, 0, &m), KL_EINPUT);
    const uint8_t bad_version[] = {2, 1, 0};
    assert_int_equal(cap_msg_parse(bad_version, sizeof bad_version, 0, &m), KL_EINPUT);
    const uint8_t bad_op[] = {1, 99, 0};
    assert_int_equal(cap_msg_parse(bad_op, sizeof bad_op, 0, &m), KL_EINPUT);
    const uint8_t zero_op[] = {1, 0, 0};
    assert_int_equal(cap_msg_parse(zero_op, sizeof zero_op, 0, &m), KL_EINPUT);
    /* field length past the end, truncated field header */
    const uint8_t overrun[] = {1, 7, 0, 10, 0, 0, 0, 9, 'a'};
    assert_int_equal(cap_msg_parse(overrun, sizeof overrun, 0, &m), KL_EINPUT);
    const uint8_t trunc[] = {1, 7, 0, 10, 0, 0};
    assert_int_equal(cap_msg_parse(trunc, sizeof trunc, 0, &m), KL_EINPUT);
    /* unknown tag */
    const uint8_t unknown_tag[] = {1, 7, 0, 200, 0, 0, 0, 1, 'a'};
    assert_int_equal(cap_msg_parse(unknown_tag, sizeof unknown_tag, 0, &m), KL_EINPUT);
    const uint8_t ok[] = {1, 7, 0, 10, 0, 0, 0, 1, 'a'};
    assert_int_equal(cap_msg_parse(ok, sizeof ok, 0, &m), KL_OK);
    assert_string_equal(cap_op_name(CAP_OP_CRL), "crl");
    assert_string_equal(cap_op_name(0), "?");
}

static void test_repeat_cacerts(void **st)
{
    (void)st;
    cap_msg m;
    begin(CAP_OP_CACERTS, KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "field1"), KL_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cap_put_bytes(&g, CAP_T_CA_CERT, "\x30\x00", 2), KL_OK);
    }
    assert_int_equal(finish(1, &m), KL_OK);
    assert_non_null(cap_find(&m, CAP_T_CA_CERT, 4));
    assert_null(cap_find(&m, CAP_T_CA_CERT, 5));
    kl_buf_free(&g);
    begin(CAP_OP_CACERTS, KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "field1"), KL_OK);
    for (int i = 0; i < CAP_FIELDS_MAX; i++) {
        assert_int_equal(cap_put_bytes(&g, CAP_T_CA_CERT, "\x30\x00", 2), KL_OK);
    }
    assert_int_equal(finish(1, &m), KL_EINPUT); /* more than CAP_FIELDS_MAX */
    kl_buf_free(&g);
}

/* ca-chain (front ends' client trust) and pending (held requests of a profile, for /metrics):
 * what they carry and nothing else. */
static void test_ca_chain_pending(void **st)
{
    (void)st;
    cap_msg m;
    begin(CAP_OP_CA_CHAIN, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "factory1"), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    assert_string_equal(cap_op_name(CAP_OP_CA_CHAIN), "ca-chain");
    kl_buf_free(&g);
    begin(CAP_OP_CA_CHAIN, 0); /* the label is required */
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_CA_CHAIN, 0); /* a request carries no certificate */
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "factory1"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CA_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_CA_CHAIN, KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "factory1"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CA_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_CA_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(finish(1, &m), KL_OK);
    assert_non_null(cap_find(&m, CAP_T_CA_CERT, 1));
    kl_buf_free(&g);
    begin(CAP_OP_CA_CHAIN, KL_OK); /* an answer without a certificate is not one */
    assert_int_equal(cap_put_str(&g, CAP_T_ISSUER, "factory1"), KL_OK);
    assert_int_equal(finish(1, &m), KL_EINPUT);
    kl_buf_free(&g);

    begin(CAP_OP_PENDING, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "est"), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    assert_string_equal(cap_op_name(CAP_OP_PENDING), "pending");
    kl_buf_free(&g);
    begin(CAP_OP_PENDING, 0); /* the count is the answer's, not the request's */
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "est"), KL_OK);
    assert_int_equal(cap_put_u64(&g, CAP_T_COUNT, 3), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_PENDING, KL_OK);
    assert_int_equal(cap_put_u64(&g, CAP_T_COUNT, 3), KL_OK);
    assert_int_equal(finish(1, &m), KL_OK);
    assert_int_equal(cap_get_u64(&m, CAP_T_COUNT, 0), 3);
    kl_buf_free(&g);
    begin(CAP_OP_PENDING, KL_OK); /* a count is 8 bytes */
    assert_int_equal(cap_put_bytes(&g, CAP_T_COUNT, "\x03", 1), KL_OK);
    assert_int_equal(finish(1, &m), KL_EINPUT);
    kl_buf_free(&g);
}

/* The station's ops (keyline-provision through keyline-cad): what each carries, nothing else. */
static void test_station_ops(void **st)
{
    (void)st;
    cap_msg m;
    assert_string_equal(cap_op_name(CAP_OP_INVENTORY), "inventory");
    assert_string_equal(cap_op_name(CAP_OP_KNOWN), "known");
    assert_string_equal(cap_op_name(CAP_OP_REVOKE), "revoke");
    assert_string_equal(cap_op_name(CAP_OP_SWEEP), "sweep");
    assert_string_equal(cap_op_name(CAP_OP_PROOF_FAIL), "proof-failed");

    begin(CAP_OP_INVENTORY, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_MODEL, "KL-100"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_STATE, "pending"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_DETAIL, "provisioning on fix1"), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    kl_buf_free(&g);
    begin(CAP_OP_INVENTORY, 0); /* the detail is required */
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_MODEL, "KL-100"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_STATE, "pending"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_INVENTORY, 0); /* a detail with a control byte is not a string */
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_MODEL, "KL-100"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_STATE, "pending"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_DETAIL, "a\nb", 3), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);

    begin(CAP_OP_KNOWN, KL_OK); /* pending certificates repeat; no row: only the device id */
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_PEND_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_PEND_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(finish(1, &m), KL_OK);
    assert_non_null(cap_find(&m, CAP_T_PEND_CERT, 1));
    kl_buf_free(&g);
    begin(CAP_OP_KNOWN, 0); /* a request carries no certificate */
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_PEND_CERT, "\x30\x00", 2), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);

    begin(CAP_OP_REVOKE, 0); /* the reason is required */
    assert_int_equal(cap_put_str(&g, CAP_T_SERIAL, "01AB"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_REVOKE, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_SERIAL, "01AB"), KL_OK);
    assert_int_equal(cap_put_u64(&g, CAP_T_REASON, 4), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    kl_buf_free(&g);

    begin(CAP_OP_SWEEP, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_u64(&g, CAP_T_AGE, 3600), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_INSTANCE, "0123abcd"), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    kl_buf_free(&g);
    begin(CAP_OP_SWEEP, 0); /* an age is 8 bytes */
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_bytes(&g, CAP_T_AGE, "\x10", 1), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_INSTANCE, "0123abcd"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);

    begin(CAP_OP_PROOF_FAIL, 0); /* the message is required */
    assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_SERIAL, "01AB"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);

    /* matter (docs/matter.md): every field required; salt at most 32 bytes, verifier 97 */
    static const uint8_t salt[33] = {0}, ver[98] = {0};
    for (int k = 0; k < 2; k++) {
        begin(CAP_OP_MATTER, 0);
        assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
        assert_int_equal(cap_put_str(&g, CAP_T_DEVICE_ID, "SN-1"), KL_OK);
        assert_int_equal(cap_put_str(&g, CAP_T_SERIAL, "01AB"), KL_OK);
        assert_int_equal(cap_put_u64(&g, CAP_T_MATTER_DISCRIMINATOR, 3840), KL_OK);
        assert_int_equal(cap_put_bytes(&g, CAP_T_MATTER_SALT, salt, 32), KL_OK);
        assert_int_equal(cap_put_bytes(&g, CAP_T_MATTER_VERIFIER, ver, 97), KL_OK);
        assert_int_not_equal(cap_put_bytes(&g, CAP_T_MATTER_SALT + k, k ? ver : salt, 33 + k * 65),
                             KL_OK);
        if (k == 0) {
            assert_int_equal(cap_put_u64(&g, CAP_T_MATTER_ITERATIONS, 10000), KL_OK);
        }
        assert_int_equal(finish(0, &m), k == 0 ? KL_OK : KL_EINPUT); /* 1: no iterations */
        kl_buf_free(&g);
    }
    assert_string_equal(cap_op_name(CAP_OP_MATTER), "matter");

    /* production orders (docs/station.md): order needs the station, order-close the order */
    begin(CAP_OP_ORDER, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_ORDER, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_STATION, "line-7"), KL_OK);
    assert_int_equal(finish(0, &m), KL_OK);
    kl_buf_free(&g);
    begin(CAP_OP_ORDER_CLOSE, 0);
    assert_int_equal(cap_put_str(&g, CAP_T_PROFILE, "station"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_STATION, "line-7"), KL_OK);
    assert_int_equal(cap_put_str(&g, CAP_T_AUTH_USER, "bob"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    begin(CAP_OP_INVENTORY, 0); /* only issue, order and order-close take the station */
    assert_int_equal(cap_put_str(&g, CAP_T_STATION, "line-7"), KL_OK);
    assert_int_equal(finish(0, &m), KL_EINPUT);
    kl_buf_free(&g);
    assert_string_equal(cap_op_name(CAP_OP_ORDER_CLOSE), "order-close");
}

/* The client's address lists (cac.h): what parses, and what is refused with a message. */
static void test_addrs(void **st)
{
    (void)st;
    static const struct {
        const char *list;
        kl_rc rc;
        unsigned n;
        int tls;
    } cases[] = {
        {"/run/keyline/cad.sock", KL_OK, 1, 0},
        {"cad.sock", KL_OK, 1, 0},
        {"unix:/run/a.sock, unix:/run/b.sock", KL_OK, 2, 0},
        {"unix:/run/a.sock,tls:10.0.0.5:7443", KL_OK, 2, 1},
        {" tls:ca1.example:7443 ,\ttls:[2001:db8::5]:7443 ", KL_OK, 2, 1},
        {"unix:/odd:name.sock", KL_OK, 1, 0},
        {"a,b,c,d,e,f,g,h", KL_OK, 8, 0},
        {"a,b,c,d,e,f,g,h,i", KL_EUSAGE, 0, 0}, /* more than CAC_ADDR_MAX */
        {"", KL_EUSAGE, 0, 0},
        {"a.sock,", KL_EUSAGE, 0, 0},
        {",a.sock", KL_EUSAGE, 0, 0},
        {"a.sock,,b.sock", KL_EUSAGE, 0, 0},
        {"unix:", KL_EUSAGE, 0, 0},
        {"tls:", KL_EUSAGE, 0, 0},
        {"tls:host", KL_EUSAGE, 0, 0},
        {"tls::7443", KL_EUSAGE, 0, 0},
        {"tls:host:", KL_EUSAGE, 0, 0},
        {"tls:host:0", KL_EUSAGE, 0, 0},
        {"tls:host:65536", KL_EUSAGE, 0, 0},
        {"tls:host:74x3", KL_EUSAGE, 0, 0},
        {"tcp:host:7443", KL_EUSAGE, 0, 0},
        {"host:7443", KL_EUSAGE, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned n = 99;
        int tls = 9;
        kl_rc rc = cac_addrs_check(cases[i].list, &n, &tls);
        if (rc != cases[i].rc || (rc == KL_OK && (n != cases[i].n || tls != cases[i].tls))) {
            fail_msg("'%s': rc %s n %u tls %d (%s)", cases[i].list, kl_rc_name(rc), n, tls,
                     kl_errmsg());
        }
        if (rc != KL_OK) {
            assert_non_null(strstr(kl_errmsg(), "keyline-cad"));
        }
    }
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    unsigned n;
    int tls;
    assert_int_equal(cac_addrs_check(longp, &n, &tls), KL_EUSAGE); /* over sun_path */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_roundtrip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_raw_frames),
        cmocka_unit_test(test_repeat_cacerts),
        cmocka_unit_test(test_ca_chain_pending),
        cmocka_unit_test(test_station_ops),
        cmocka_unit_test(test_addrs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
