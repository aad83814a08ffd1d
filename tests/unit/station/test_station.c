/* Unit tests for the station's pure parts (st_plan.c) and its line layer (st_link.c) against a
 * scripted fake device on a pty: decisions for every resume/refuse case, HELLO validation
 * (negative cases), config, the JSON result line, retransmission and stale-answer filtering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "st.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void hello_base(st_hello *h, uint8_t state)
{
    memset(h, 0, sizeof *h);
    h->proto = 1;
    strcpy(h->model, "m");
    strcpy(h->hw_serial, "SN1");
    h->state = state;
    h->max_payload = 2048;
    h->transport_pub[0] = 4;
    if (state >= KL_STATE_KEY_READY) {
        h->has_identity = 1;
        memset(h->identity_pub, 0xA1, sizeof h->identity_pub);
        h->key_origin = KL_KEY_ORIGIN_DEVICE;
    }
    if (state >= KL_STATE_CERT_STORED) {
        h->has_cert_fp = 1;
        memset(h->cert_fp, 0xF1, sizeof h->cert_fp);
    }
}

static st_known_cert *known_add(st_known *k, const char *serial, int pending, uint8_t keyb,
                                uint8_t fpb)
{
    st_known_cert *c = &k->c[k->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->serial, sizeof c->serial, "%s", serial);
    c->pending = pending;
    memset(c->pub, keyb, sizeof c->pub);
    memset(c->fp, fpb, sizeof c->fp);
    return c;
}

/* ---- decisions ------------------------------------------------------------------------------ */

static void test_plan_fresh(void **state)
{
    (void)state;
    st_hello h;
    st_known k = {0};
    st_plan p;
    hello_base(&h, KL_STATE_FACTORY_NEW);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_FRESH);
    assert_int_equal(p.force, 0);
    assert_int_equal(p.nrevoke, 0);

    /* csr mode keeps an uncertified device-born key; inject replaces it */
    hello_base(&h, KL_STATE_KEY_READY);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_FRESH);
    assert_int_equal(p.force, 0);
    st_plan_decide(&h, &k, ST_MODE_INJECT, 0, -1, &p);
    assert_int_equal(p.force, 1);
    h.key_origin = KL_KEY_ORIGIN_INJECTED;
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.force, 1);
}

static void test_plan_resume(void **state)
{
    (void)state;
    st_hello h;
    st_known k = {0};
    st_plan p;
    /* device holds the key of a pending certificate (no cert stored yet) */
    hello_base(&h, KL_STATE_KEY_READY);
    known_add(&k, "AA", 1, 0xA1, 0x11);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_RESUME);
    assert_int_equal(p.resume, 0);
    assert_int_equal(p.nrevoke, 0);

    /* a stale pending certificate for another key is revoked, the matching one resumed */
    memset(&k, 0, sizeof k);
    known_add(&k, "OLD", 1, 0xB2, 0x22);
    known_add(&k, "CUR", 1, 0xA1, 0xF1);
    hello_base(&h, KL_STATE_TRUST_STORED);
    st_plan_decide(&h, &k, ST_MODE_INJECT, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_RESUME);
    assert_int_equal(p.resume, 1);
    assert_int_equal(p.nrevoke, 1);
    assert_int_equal(p.revoke[0], 0);
    assert_int_equal(p.revoke_reason[0], 5);

    /* pending certificate for a key the device lost: revoked, fresh with FORCE */
    memset(&k, 0, sizeof k);
    known_add(&k, "LOST", 1, 0xB2, 0x22);
    hello_base(&h, KL_STATE_KEY_READY);
    st_plan_decide(&h, &k, ST_MODE_INJECT, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_FRESH);
    assert_int_equal(p.nrevoke, 1);
    assert_int_equal(p.force, 1);
}

static void test_plan_locked(void **state)
{
    (void)state;
    st_hello h;
    st_known k = {0};
    st_plan p;
    hello_base(&h, KL_STATE_LOCKED);
    /* locked, certificate valid: already provisioned; --reprovision refused */
    known_add(&k, "V", 0, 0xA1, 0xF1);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_ALREADY);
    st_plan_decide(&h, &k, ST_MODE_CSR, 1, 4, &p);
    assert_int_equal(p.action, ST_ACT_REFUSE);
    assert_int_equal(p.nrevoke, 0);

    /* locked with a pending certificate: activated only after a recorded CHALLENGE */
    memset(&k, 0, sizeof k);
    st_known_cert *c = known_add(&k, "P", 1, 0xA1, 0xF1);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_REFUSE);
    c->challenge_passed = 1;
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_ACTIVATE);

    /* locked, unknown certificate */
    memset(&k, 0, sizeof k);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_REFUSE);
    assert_non_null(strstr(p.why, "not in this store"));
}

static void test_plan_no_duplicate(void **state)
{
    (void)state;
    st_hello h;
    st_known k = {0};
    st_plan p;
    /* erased device, valid certificate on record: refused without --reprovision */
    hello_base(&h, KL_STATE_FACTORY_NEW);
    known_add(&k, "V", 0, 0xA1, 0xF1);
    st_plan_decide(&h, &k, ST_MODE_CSR, 0, -1, &p);
    assert_int_equal(p.action, ST_ACT_REFUSE);
    assert_non_null(strstr(p.why, "--reprovision"));
    /* with it: old one revoked with the given reason, then fresh */
    st_plan_decide(&h, &k, ST_MODE_CSR, 1, 4, &p);
    assert_int_equal(p.action, ST_ACT_FRESH);
    assert_int_equal(p.nrevoke, 1);
    assert_int_equal(p.revoke_reason[0], 4);
}

/* ---- HELLO validation ----------------------------------------------------------------------- */

static size_t hello_payload(uint8_t *buf, size_t cap, const char *serial, uint8_t state,
                            int with_identity, uint8_t proto)
{
    kl_tlv_w w;
    uint8_t pub[65];
    memset(pub, 7, sizeof pub);
    pub[0] = 4;
    kl_tlv_w_init(&w, buf, cap);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_PROTO, proto), 0);
    assert_int_equal(kl_tlv_put_str(&w, KL_TAG_MODEL, "model-x"), 0);
    assert_int_equal(kl_tlv_put_str(&w, KL_TAG_HW_SERIAL, serial), 0);
    assert_int_equal(kl_tlv_put_str(&w, KL_TAG_FW_VERSION, "1.0"), 0);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_STATE, state), 0);
    assert_int_equal(kl_tlv_put_u16(&w, KL_TAG_MAX_PAYLOAD, 2048), 0);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_TRANSPORT_PUB, pub, 65), 0);
    if (with_identity) {
        assert_int_equal(kl_tlv_put(&w, KL_TAG_IDENTITY_PUB, pub, 65), 0);
    }
    return w.len;
}

static void test_hello_parse(void **state)
{
    (void)state;
    uint8_t buf[512];
    st_hello h;
    size_t n = hello_payload(buf, sizeof buf, "SN-01", KL_STATE_FACTORY_NEW, 0, 1);
    assert_int_equal(st_hello_parse(buf, n, &h), KL_OK);
    assert_string_equal(h.hw_serial, "SN-01");
    assert_string_equal(h.model, "model-x");
    assert_int_equal(h.has_identity, 0);

    /* negative cases */
    n = hello_payload(buf, sizeof buf, "SN*01", KL_STATE_FACTORY_NEW, 0, 1);
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT); /* not PrintableString */
    n = hello_payload(buf, sizeof buf, "SN1", KL_STATE_FACTORY_NEW, 0, 2);
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT); /* version */
    n = hello_payload(buf, sizeof buf, "SN1", KL_STATE_KEY_READY, 0, 1);
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT); /* KEY_READY without key */
    n = hello_payload(buf, sizeof buf, "SN1", 9, 0, 1);
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT); /* unknown state */
    n = hello_payload(buf, sizeof buf, "SN1", KL_STATE_FACTORY_NEW, 0, 1);
    assert_int_equal(st_hello_parse(buf, n - 1, &h), KL_EINPUT); /* truncated TLV */
    assert_int_equal(st_hello_parse(buf, 0, &h), KL_EINPUT);
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(st_hello_parse(buf, cut, &h), KL_EINPUT); /* every prefix refused */
    }
    /* MODEL and FW_VERSION are UTF-8: invalid bytes refuse the model, blank the version */
    n = hello_payload(buf, sizeof buf, "SN1", KL_STATE_FACTORY_NEW, 0, 1);
    uint8_t *m = memmem(buf, n, "model-x", 7), *fw = memmem(buf, n, "1.0", 3);
    assert_non_null(m);
    assert_non_null(fw);
    memcpy(m, "mod\xc3\xa9-x", 7); /* valid UTF-8 */
    assert_int_equal(st_hello_parse(buf, n, &h), KL_OK);
    assert_string_equal(h.model, "mod\xc3\xa9-x");
    fw[2] = 0xff;
    assert_int_equal(st_hello_parse(buf, n, &h), KL_OK);
    assert_string_equal(h.fw_version, "");
    m[6] = 0xff;
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT);
    m[6] = 0xc3; /* a lead byte with nothing after it */
    assert_int_equal(st_hello_parse(buf, n, &h), KL_EINPUT);
    assert_true(st_serial_ok("AB 12'()+,-./:=?"));
    assert_false(st_serial_ok(""));
    assert_false(st_serial_ok("a@b"));
}

/* ---- config and result line ----------------------------------------------------------------- */

static void test_config(void **state)
{
    (void)state;
    st_config cfg;
    kl_conf *c = kl_conf_new("/tmp");
    assert_int_equal(st_config_load(&cfg, c), KL_EUSAGE); /* issuer missing */
    assert_int_equal(kl_conf_set(c, "station", "issuer", "factory1"), KL_OK);
    assert_int_equal(st_config_load(&cfg, c), KL_OK);
    assert_string_equal(cfg.template_name, "device-idevid");
    assert_int_equal(cfg.mode, ST_MODE_CSR);
    assert_int_equal(cfg.baud, 115200);
    assert_int_equal(cfg.timeout_ms, 1000);
    assert_int_equal(cfg.slow_timeout_ms, 5000);
    st_config_free(&cfg);
    assert_int_equal(kl_conf_set(c, "station", "mode", "teleport"), KL_OK);
    assert_int_equal(st_config_load(&cfg, c), KL_EUSAGE);
    assert_int_equal(kl_conf_set(c, "station", "mode", "inject"), KL_OK);
    assert_int_equal(kl_conf_set(c, "station", "baud", "12345"), KL_OK);
    assert_int_equal(st_config_load(&cfg, c), KL_EUSAGE);
    assert_int_equal(kl_conf_set(c, "station", "baud", "9600"), KL_OK);
    assert_int_equal(kl_conf_set(c, "station", "est-url", "http://a b"), KL_OK);
    assert_int_equal(st_config_load(&cfg, c), KL_EUSAGE);
    assert_int_equal(kl_conf_set(c, "station", "est-url", "https://est.example/x"), KL_OK);
    assert_int_equal(st_config_load(&cfg, c), KL_OK);
    assert_int_equal(cfg.mode, ST_MODE_INJECT);
    st_config_free(&cfg);
    kl_conf_free(c);
}

static void test_result_json(void **state)
{
    (void)state;
    st_outcome o;
    memset(&o, 0, sizeof o);
    o.have_hello = 1;
    strcpy(o.hello.hw_serial, "SN\"1");
    strcpy(o.hello.model, "m");
    strcpy(o.cert_serial, "0A");
    o.phase = ST_PH_LOCK;
    strcpy(o.error, "device answered LOCK with ERROR REFUSED");
    o.ms[ST_PH_KEY] = 12;
    o.total_ms = 99;
    char *line = st_result_json(&o, "fixA", 1700000000123LL);
    assert_non_null(line);
    assert_int_equal(line[strlen(line) - 1], '\n');
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "hw_serial")), "SN\"1");
    assert_string_equal(json_string_value(json_object_get(j, "device_id")), "SN\"1");
    assert_string_equal(json_string_value(json_object_get(j, "outcome")), "failed");
    assert_string_equal(json_string_value(json_object_get(j, "failed_phase")), "lock");
    assert_string_equal(json_string_value(json_object_get(j, "fixture")), "fixA");
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2023-11-14T22:13:20.123Z");
    json_t *t = json_object_get(j, "timings_ms");
    assert_int_equal(json_integer_value(json_object_get(t, "key")), 12);
    assert_int_equal(json_integer_value(json_object_get(t, "total")), 99);
    json_decref(j);
    free(line);
}

/* ---- line layer against a scripted device on a pty ----------------------------------------- */

typedef struct {
    int fd;
    int drop_first;    /* swallow this many requests without answering */
    int corrupt_first; /* answer this many with a damaged frame */
    int stale_first;   /* precede the answer with one carrying seq - 1 */
    int requests;      /* requests seen (including retransmissions) */
} fake_dev;

static void *fake_dev_main(void *arg)
{
    fake_dev *fd = arg;
    uint8_t rx[4096], dbuf[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
    kl_proto_dec dec;
    kl_proto_dec_init(&dec, dbuf, sizeof dbuf);
    for (;;) {
        struct pollfd p = {.fd = fd->fd, .events = POLLIN};
        if (poll(&p, 1, 3000) <= 0) {
            return NULL;
        }
        ssize_t n = read(fd->fd, rx, sizeof rx);
        if (n <= 0) {
            return NULL;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            kl_proto_frame f;
            int r = kl_proto_feed(&dec, rx + off, (size_t)n - off, &used, &f);
            off += used;
            if (r != KL_PROTO_FRAME) {
                continue;
            }
            fd->requests++;
            if (fd->drop_first > 0) {
                fd->drop_first--;
                continue;
            }
            uint8_t out[256], pl[8] = {KL_TAG_STATE, 0, 1, 3};
            size_t olen;
            if (fd->stale_first > 0) {
                fd->stale_first--;
                kl_proto_encode(out, sizeof out, &olen, KL_MSG_RESP(f.type), (uint16_t)(f.seq - 1),
                                0, pl, 4);
                (void)!write(fd->fd, out, olen);
            }
            kl_proto_encode(out, sizeof out, &olen, KL_MSG_RESP(f.type), f.seq, 0, pl, 4);
            if (fd->corrupt_first > 0) {
                fd->corrupt_first--;
                out[olen / 2] ^= 0x01;
            }
            (void)!write(fd->fd, out, olen);
        }
    }
}

static void run_link(fake_dev *fd, long retries, kl_rc want, int want_requests)
{
    int master, slave;
    char name[128];
    st_link l;
    st_resp r;
    pthread_t th;
    assert_int_equal(openpty(&master, &slave, name, NULL, NULL), 0);
    struct termios tio;
    tcgetattr(master, &tio);
    cfmakeraw(&tio);
    tcsetattr(master, TCSANOW, &tio);
    fd->fd = master;
    assert_int_equal(st_link_open(&l, name, 115200, 150, retries), KL_OK);
    assert_int_equal(pthread_create(&th, NULL, fake_dev_main, fd), 0);
    uint8_t req[4] = {KL_TAG_NONCE, 0, 1, 9};
    kl_rc rc = st_link_xact(&l, KL_MSG_LOCK, req, sizeof req, &r, -1);
    assert_int_equal(rc, want);
    if (rc == KL_OK) {
        assert_int_equal(r.type, KL_MSG_RESP(KL_MSG_LOCK));
        assert_int_equal(r.len, 4);
    }
    st_link_close(&l);
    close(slave);
    pthread_join(th, NULL);
    close(master);
    assert_int_equal(fd->requests, want_requests);
}

static void test_link(void **state)
{
    (void)state;
    fake_dev a = {0};
    run_link(&a, 3, KL_OK, 1);
    fake_dev b = {.drop_first = 2};
    run_link(&b, 3, KL_OK, 3); /* two timeouts, then answered */
    fake_dev c = {.corrupt_first = 1};
    run_link(&c, 3, KL_OK, 2); /* damaged answer: resent at once */
    fake_dev d = {.stale_first = 1};
    run_link(&d, 0, KL_OK, 1); /* an old seq is skipped, not taken for the answer */
    fake_dev e = {.drop_first = 100};
    run_link(&e, 2, KL_ETIMEOUT, 3);
    assert_non_null(strstr(kl_errmsg(), "no answer to LOCK after 3 attempts"));
}

/* ---- CSR subject (issue 10, defect 7) ------------------------------------------------------ */

/* "CN=a|serialNumber=b" style: entries separated by '|', '+' before an attribute joins the
 * previous RDN (multi-valued) */
static X509_NAME *name_of(const char *spec)
{
    char buf[256], *save = NULL;
    X509_NAME *n = X509_NAME_new();
    assert_non_null(n);
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *a = strtok_r(buf, "|", &save); a; a = strtok_r(NULL, "|", &save)) {
        int join = a[0] == '+';
        char *eq = strchr(a + join, '=');
        assert_non_null(eq);
        *eq = 0;
        assert_int_equal(X509_NAME_add_entry_by_txt(n, a + join, MBSTRING_UTF8,
                                                    (const unsigned char *)eq + 1, -1, -1,
                                                    join ? -1 : 0),
                         1);
    }
    return n;
}

static void subject_case(const st_hello *h, const char *spec, kl_rc want)
{
    X509_NAME *n = name_of(spec);
    kl_rc rc = st_csr_subject_check(n, h);
    if (rc != want) {
        fail_msg("subject %s: got %d (%s), want %d", spec, rc, kl_errmsg(), want);
    }
    X509_NAME_free(n);
}

static void test_csr_subject(void **state)
{
    (void)state;
    st_hello h;
    hello_base(&h, KL_STATE_KEY_READY);
    strcpy(h.model, "Acme sensor \xc3\xa9 3");
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|serialNumber=SN1", KL_OK);
    /* the station certifies what it knows, nothing the device chose */
    subject_case(&h, "CN=Test Factory CA|O=Keyline Test|OU=root", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|serialNumber=SN1|O=Keyline Test", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|O=x|serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "O=x|CN=Acme sensor \xc3\xa9 3|serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "serialNumber=SN1|CN=Acme sensor \xc3\xa9 3", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|+serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3", KL_EPOLICY);
    subject_case(&h, "serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|serialNumber=SN2", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|serialNumber=sn1", KL_EPOLICY);
    subject_case(&h, "CN=acme sensor \xc3\xa9 3|serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3 |serialNumber=SN1", KL_EPOLICY);
    subject_case(&h, "CN=Acme sensor \xc3\xa9 3|serialNumber=SN1 ", KL_EPOLICY);
    subject_case(&h, "", KL_EPOLICY);
    X509_NAME *n = name_of("CN=Test Factory CA|O=Keyline Test|OU=root");
    assert_int_equal(st_csr_subject_check(n, &h), KL_EPOLICY);
    assert_non_null(strstr(kl_errmsg(), "CN=Test Factory CA"));
    assert_non_null(strstr(kl_errmsg(), "serialNumber=SN1"));
    X509_NAME_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_fresh),  cmocka_unit_test(test_plan_resume),
        cmocka_unit_test(test_plan_locked), cmocka_unit_test(test_plan_no_duplicate),
        cmocka_unit_test(test_hello_parse), cmocka_unit_test(test_config),
        cmocka_unit_test(test_result_json), cmocka_unit_test(test_link),
        cmocka_unit_test(test_csr_subject),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
