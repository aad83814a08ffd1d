/* Unit tests for the device engine (provisioner/device/kl_dev.c), driven in-process by a test
 * station over the real codec, with the OpenSSL devsim port underneath. OpenSSL (not our code)
 * checks what the device produces: X509_REQ_verify for the CSR, EVP_DigestVerify for the
 * challenge signature. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "devsim_port.h"
#include "kl_dev.h"
#include "kl_dev_image.h"
#include "kl_hostcrypto.h"

#define MODEL "acme-sensor-3"
#define SERIAL "SN-0001234"

/* ---- Test station ------------------------------------------------------------------------ */

typedef struct {
    char dir[64];
    devsim_port port;
    kl_port ops; /* copy of devsim_port_ops, so tests can swap the clock */
    kl_dev dev;
    kl_dev_info info;
    uint16_t seq;
    /* bytes the device sent */
    uint8_t out[8192];
    size_t out_len;
    /* last response */
    uint8_t rtype;
    uint16_t rseq;
    uint8_t rpay[KL_PROTO_MAX_PAYLOAD];
    size_t rlen;
    uint32_t fake_ms;
} station;

static int capture(void *user, const uint8_t *data, size_t len)
{
    station *s = user;
    assert_true(s->out_len + len <= sizeof(s->out));
    memcpy(s->out + s->out_len, data, len);
    s->out_len += len;
    return 0;
}

static uint32_t fake_now(void *ctx)
{
    /* the port ctx is the devsim_port inside the station: find the station */
    station *s = (station *)((char *)ctx - offsetof(station, port));
    return s->fake_ms;
}

static void boot(station *s)
{
    assert_int_equal(devsim_port_open(&s->port, s->dir, capture, s), KL_OK);
    s->ops = devsim_port_ops;
    s->ops.now_ms = fake_now;
    assert_int_equal(kl_dev_init(&s->dev, &s->ops, &s->port, &s->info), KL_DEV_OK);
}

/* Power cut: drop all RAM state, keep the directory. */
static void power_cycle(station *s)
{
    devsim_port_close(&s->port);
    memset(&s->dev, 0x5A, sizeof(s->dev));
    boot(s);
}

static int setup(void **state)
{
    station *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    strcpy(s->dir, "/tmp/kl-devtest-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    s->info.model = MODEL;
    s->info.hw_serial = SERIAL;
    s->info.fw_version = "1.4.2";
    s->seq = 100;
    boot(s);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    station *s = *state;
    DIR *d = opendir(s->dir);
    struct dirent *e;
    char p[512];
    devsim_port_close(&s->port);
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof(p), "%s/%s", s->dir, e->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(s->dir);
    free(s);
    return 0;
}

/* Decode exactly one frame from what the device sent (and clear the capture). Returns 1 if a
 * frame was there, 0 if the device stayed silent. */
static int take_response(station *s)
{
    static uint8_t rx[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t used = 0;
    int rc;
    if (s->out_len == 0) {
        return 0;
    }
    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);
    rc = kl_proto_feed(&dec, s->out, s->out_len, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(used, s->out_len); /* exactly one frame per request */
    s->rtype = f.type;
    s->rseq = f.seq;
    memcpy(s->rpay, f.payload, f.payload_len);
    s->rlen = f.payload_len;
    s->out_len = 0;
    return 1;
}

/* Send raw wire bytes, expect one response. */
static void send_wire(station *s, const uint8_t *wire, size_t n)
{
    s->out_len = 0;
    (void)kl_dev_feed(&s->dev, wire, n);
    assert_true(take_response(s));
}

/* One request/response exchange; returns the response type. */
static uint8_t xfer(station *s, uint8_t type, const kl_tlv_w *req)
{
    uint8_t wire[KL_PROTO_WIRE_MAX(KL_PROTO_MAX_PAYLOAD)];
    size_t n = 0;
    uint16_t seq = ++s->seq;
    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, type, seq, 0,
                                     req != NULL ? req->buf : NULL, req != NULL ? req->len : 0),
                     KL_PROTO_OK);
    send_wire(s, wire, n);
    assert_int_equal(s->rseq, seq);
    assert_int_equal(kl_tlv_check(s->rpay, s->rlen), KL_PROTO_OK);
    return s->rtype;
}

static uint8_t err_code(station *s)
{
    uint8_t c = 0;
    assert_int_equal(s->rtype, KL_MSG_ERROR);
    assert_int_equal(kl_tlv_get_u8(s->rpay, s->rlen, KL_TAG_ERR_CODE, &c), KL_PROTO_OK);
    return c;
}

static void expect_error(station *s, uint8_t type, const kl_tlv_w *req, uint8_t code)
{
    assert_int_equal(xfer(s, type, req), KL_MSG_ERROR);
    assert_int_equal(err_code(s), code);
}

static uint8_t resp_u8(station *s, uint8_t tag)
{
    uint8_t v = 0xEE;
    assert_int_equal(kl_tlv_get_u8(s->rpay, s->rlen, tag, &v), KL_PROTO_OK);
    return v;
}

/* ---- Station-side helpers: CA, certificates -------------------------------------------- */

typedef struct {
    EVP_PKEY *ca_key;
    X509 *ca;
    X509 *leaf;
    EVP_PKEY *dev_pub;
    uint8_t leaf_der[2048], ca_der[2048];
    int leaf_len, ca_len;
} pki;

static X509 *make_cert(EVP_PKEY *subject_key, const char *cn, EVP_PKEY *issuer_key, X509 *issuer)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n), 1);
    assert_int_equal(X509_set_pubkey(x, subject_key), 1);
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    X509_NAME_free(n);
    return x;
}

static void pki_issue(pki *p, X509_REQ *req)
{
    unsigned char *q;
    p->ca_key = EVP_EC_gen("P-256");
    assert_non_null(p->ca_key);
    p->ca = make_cert(p->ca_key, "Test Factory CA", p->ca_key, NULL);
    p->dev_pub = X509_REQ_get_pubkey(req);
    assert_non_null(p->dev_pub);
    p->leaf = make_cert(p->dev_pub, SERIAL, p->ca_key, p->ca);
    q = p->leaf_der;
    p->leaf_len = i2d_X509(p->leaf, &q);
    q = p->ca_der;
    p->ca_len = i2d_X509(p->ca, &q);
    assert_true(p->leaf_len > 0 && p->ca_len > 0);
}

static void pki_free(pki *p)
{
    X509_free(p->leaf);
    X509_free(p->ca);
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->dev_pub);
}

/* ---- Flow steps ---------------------------------------------------------------------------- */

static void do_genkey(station *s, int force, uint8_t pub[65], uint8_t expect_new)
{
    uint8_t b[16];
    kl_tlv_w w;
    kl_tlv_w_init(&w, b, sizeof(b));
    if (force) {
        assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_FORCE, 1), KL_PROTO_OK);
    }
    assert_int_equal(xfer(s, KL_MSG_GENKEY, &w), KL_MSG_RESP(KL_MSG_GENKEY));
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_PUBKEY, pub, 65), KL_PROTO_OK);
    assert_int_equal(pub[0], 0x04);
    assert_int_equal(resp_u8(s, KL_TAG_KEY_NEW), expect_new);
}

static X509_REQ *do_getcsr(station *s)
{
    const uint8_t *v, *q;
    size_t vl;
    X509_REQ *req;
    assert_int_equal(xfer(s, KL_MSG_GETCSR, NULL), KL_MSG_RESP(KL_MSG_GETCSR));
    assert_int_equal(kl_tlv_get(s->rpay, s->rlen, KL_TAG_CSR, &v, &vl), KL_PROTO_OK);
    assert_true(vl <= KL_DEV_CSR_MAX);
    q = v;
    req = d2i_X509_REQ(NULL, &q, (long)vl);
    assert_non_null(req);
    assert_ptr_equal(q, v + vl); /* DER consumed exactly */
    return req;
}

static void do_putcert(station *s, pki *p)
{
    uint8_t b[KL_PROTO_MAX_PAYLOAD], fp[32], want[32];
    kl_tlv_w w;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 2), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, p->ca_der, (size_t)p->ca_len), KL_PROTO_OK);
    assert_int_equal(xfer(s, KL_MSG_PUTCERT, &w), KL_MSG_RESP(KL_MSG_PUTCERT));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_KEY_READY); /* not complete yet */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 0), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 2), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, p->leaf_der, (size_t)p->leaf_len), KL_PROTO_OK);
    assert_int_equal(xfer(s, KL_MSG_PUTCERT, &w), KL_MSG_RESP(KL_MSG_PUTCERT));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_CERT_STORED);
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_CERT_FP, fp, 32), KL_PROTO_OK);
    assert_int_equal(EVP_Digest(p->leaf_der, (size_t)p->leaf_len, want, NULL, EVP_sha256(), NULL),
                     1);
    assert_memory_equal(fp, want, 32);
}

static void do_puttrust(station *s, pki *p)
{
    uint8_t b[KL_PROTO_MAX_PAYLOAD];
    kl_tlv_w w;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 0), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_ANCHOR, p->ca_der, (size_t)p->ca_len), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_str(&w, KL_TAG_EST_URL, "https://est.example:8443/.well-known/est"),
                     KL_PROTO_OK);
    assert_int_equal(xfer(s, KL_MSG_PUTTRUST, &w), KL_MSG_RESP(KL_MSG_PUTTRUST));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_TRUST_STORED);
}

static void do_challenge(station *s, pki *p, int expect_ok)
{
    uint8_t b[128], nonce[32];
    const uint8_t *sig;
    size_t sl;
    kl_tlv_w w;
    memset(nonce, 0, sizeof(nonce));
    nonce[0] = (uint8_t)s->seq; /* fresh per call */
    nonce[31] = 0x80;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put(&w, KL_TAG_NONCE, nonce, sizeof(nonce)), KL_PROTO_OK);
    assert_int_equal(xfer(s, KL_MSG_CHALLENGE, &w), KL_MSG_RESP(KL_MSG_CHALLENGE));
    assert_int_equal(kl_tlv_get(s->rpay, s->rlen, KL_TAG_SIG, &sig, &sl), KL_PROTO_OK);
    /* verify against the key in the issued certificate, not the one from HELLO */
    assert_int_equal(
        kl_challenge_verify(X509_get0_pubkey(p->leaf), SERIAL, nonce, sizeof(nonce), sig, sl),
        expect_ok ? KL_OK : KL_EAUTH);
}

static void put_confirm(kl_tlv_w *w, uint8_t *b, size_t cap, const pki *p, int wrong)
{
    uint8_t fp[32];
    kl_tlv_w_init(w, b, cap);
    assert_int_equal(EVP_Digest(p->leaf_der, (size_t)p->leaf_len, fp, NULL, EVP_sha256(), NULL), 1);
    fp[0] ^= (uint8_t)(wrong ? 1 : 0);
    assert_int_equal(kl_tlv_put(w, KL_TAG_CONFIRM, fp, 32), KL_PROTO_OK);
}

/* ---- Tests ------------------------------------------------------------------------------------
 */

static void test_hello_factory_new(void **state)
{
    station *s = *state;
    uint8_t tp[65], b[8];
    uint16_t maxp = 0;
    char str[80];
    const uint8_t *v;
    size_t vl;
    kl_tlv_w w;

    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_PROTO_MIN, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_PROTO_MAX, 3), KL_PROTO_OK);
    assert_int_equal(xfer(s, KL_MSG_HELLO, &w), KL_MSG_RESP(KL_MSG_HELLO));
    assert_int_equal(resp_u8(s, KL_TAG_PROTO), 1);
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_FACTORY_NEW);
    assert_int_equal(resp_u8(s, KL_TAG_KEY_ORIGIN), KL_KEY_ORIGIN_NONE);
    assert_int_equal(kl_tlv_get_str(s->rpay, s->rlen, KL_TAG_MODEL, str, sizeof(str)), KL_PROTO_OK);
    assert_string_equal(str, MODEL);
    assert_int_equal(kl_tlv_get_str(s->rpay, s->rlen, KL_TAG_HW_SERIAL, str, sizeof(str)),
                     KL_PROTO_OK);
    assert_string_equal(str, SERIAL);
    assert_int_equal(kl_tlv_get_str(s->rpay, s->rlen, KL_TAG_FW_VERSION, str, sizeof(str)),
                     KL_PROTO_OK);
    assert_string_equal(str, "1.4.2");
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_TRANSPORT_PUB, tp, 65), KL_PROTO_OK);
    assert_int_equal(tp[0], 4);
    assert_int_equal(kl_tlv_get_u16(s->rpay, s->rlen, KL_TAG_MAX_PAYLOAD, &maxp), KL_PROTO_OK);
    assert_int_equal(maxp, KL_DEV_RX_PAYLOAD);
    assert_int_equal(kl_tlv_get(s->rpay, s->rlen, KL_TAG_IDENTITY_PUB, &v, &vl),
                     KL_PROTO_ENOTFOUND);
    assert_int_equal(kl_tlv_get(s->rpay, s->rlen, KL_TAG_CERT_FP, &v, &vl), KL_PROTO_ENOTFOUND);

    /* version ranges without 1 */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_PROTO_MIN, 2), KL_PROTO_OK);
    expect_error(s, KL_MSG_HELLO, &w, KL_ERR_VERSION);
}

static void test_genkey_csr_verified_by_openssl(void **state)
{
    station *s = *state;
    uint8_t pub[65], pub2[65], pub3[65], spk[65];
    X509_REQ *req;
    X509_NAME *n;
    char buf[128];
    size_t l = 0;

    expect_error(s, KL_MSG_GETCSR, NULL, KL_ERR_NO_KEY);
    do_genkey(s, 0, pub, 1);
    /* a second GENKEY (retransmitted with a new seq, or after resume) keeps the key */
    do_genkey(s, 0, pub2, 0);
    assert_memory_equal(pub, pub2, 65);

    req = do_getcsr(s);
    assert_int_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
    assert_int_equal(
        EVP_PKEY_get_octet_string_param(X509_REQ_get0_pubkey(req), "pub", spk, sizeof(spk), &l), 1);
    assert_int_equal(l, 65);
    assert_memory_equal(spk, pub, 65);
    n = X509_REQ_get_subject_name(req);
    assert_true(X509_NAME_get_text_by_NID(n, NID_commonName, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, MODEL);
    assert_true(X509_NAME_get_text_by_NID(n, NID_serialNumber, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, SERIAL);
    assert_int_equal(X509_REQ_get_version(req), 0);
    assert_int_equal(X509_REQ_get_attr_count(req), 0);
    X509_REQ_free(req);

    /* FORCE makes a new key */
    do_genkey(s, 1, pub3, 1);
    assert_memory_not_equal(pub, pub3, 65);
}

static void test_csr_sizes(void **state)
{
    /* Longest identity strings: the CSR must still verify and fit KL_DEV_CSR_MAX. */
    station *s = *state;
    static const char model64[] =
        "MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM";
    static const char serial64[] =
        "S234567890123456789012345678901234567890123456789012345678901234";
    uint8_t pub[65], csr[KL_DEV_CSR_MAX];
    size_t len = 0;
    const uint8_t *q;
    X509_REQ *req;
    int i;
    assert_int_equal(strlen(model64), 64);
    assert_int_equal(strlen(serial64), 64);
    do_genkey(s, 0, pub, 1);
    for (i = 0; i < 20; i++) { /* signatures of varying length */
        assert_int_equal(
            kl_dev_csr_build(&s->ops, &s->port, model64, serial64, pub, csr, sizeof(csr), &len),
            KL_DEV_OK);
        q = csr;
        req = d2i_X509_REQ(NULL, &q, (long)len);
        assert_non_null(req);
        assert_int_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
        X509_REQ_free(req);
        assert_int_equal(kl_dev_csr_build(&s->ops, &s->port, "m", "1", pub, csr, sizeof(csr), &len),
                         KL_DEV_OK);
        q = csr;
        req = d2i_X509_REQ(NULL, &q, (long)len);
        assert_non_null(req);
        assert_int_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
        X509_REQ_free(req);
    }
    assert_int_equal(kl_dev_csr_build(&s->ops, &s->port, model64, serial64, pub, csr, 300, &len),
                     KL_DEV_EARG);
    assert_int_equal(
        kl_dev_csr_build(&s->ops, &s->port, "m", "bad_serial", pub, csr, sizeof(csr), &len),
        KL_DEV_EARG);
    assert_true(kl_dev_serial_ok("AB 12-/:=?()+,.'"));
    assert_false(kl_dev_serial_ok("a*b"));
    assert_false(kl_dev_serial_ok(""));
}

static void test_full_flow_and_lock(void **state)
{
    station *s = *state;
    uint8_t pub[65], b[128], st;
    X509_REQ *req;
    pki p;
    kl_tlv_w w;

    memset(&p, 0, sizeof(p));
    do_genkey(s, 0, pub, 1);
    req = do_getcsr(s);
    pki_issue(&p, req);
    X509_REQ_free(req);

    /* out of order */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put(&w, KL_TAG_NONCE, "0123456789abcdef", 16), KL_PROTO_OK);
    expect_error(s, KL_MSG_CHALLENGE, &w, KL_ERR_STATE);
    put_confirm(&w, b, sizeof(b), &p, 0);
    expect_error(s, KL_MSG_LOCK, &w, KL_ERR_STATE);

    do_putcert(s, &p);
    do_puttrust(s, &p);
    do_challenge(s, &p, 1);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_CHALLENGED);

    put_confirm(&w, b, sizeof(b), &p, 1);
    expect_error(s, KL_MSG_LOCK, &w, KL_ERR_CONFIRM);
    put_confirm(&w, b, sizeof(b), &p, 0);
    assert_int_equal(xfer(s, KL_MSG_LOCK, &w), KL_MSG_RESP(KL_MSG_LOCK));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_LOCKED);

    /* locked: only HELLO, and CHALLENGE (a locked unit still proves it holds its key: a clone
     * can copy everything HELLO says), which leaves the state LOCKED */
    expect_error(s, KL_MSG_GETCSR, NULL, KL_ERR_LOCKED);
    expect_error(s, KL_MSG_GENKEY, NULL, KL_ERR_LOCKED);
    expect_error(s, KL_MSG_LOCK, &w, KL_ERR_LOCKED);
    assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_LOCKED);
    do_challenge(s, &p, 1);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_LOCKED);
    kl_tlv_w_init(&w, b, sizeof(b));
    expect_error(s, KL_MSG_CHALLENGE, &w, KL_ERR_MALFORMED); /* no nonce: still checked */
    put_confirm(&w, b, sizeof(b), &p, 0);
    expect_error(s, KL_MSG_LOCK, &w, KL_ERR_LOCKED);

    /* and after a power cycle */
    power_cycle(s);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_LOCKED);
    assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
    st = resp_u8(s, KL_TAG_STATE);
    assert_int_equal(st, KL_STATE_LOCKED);
    {
        uint8_t z[1] = {1};
        kl_tlv_w_init(&w, b, sizeof(b));
        assert_int_equal(kl_tlv_put(&w, KL_TAG_FORCE, z, 1), KL_PROTO_OK);
        expect_error(s, KL_MSG_GENKEY, &w, KL_ERR_LOCKED);
    }
    do_challenge(s, &p, 1);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_LOCKED);
    pki_free(&p);
}

static void test_inject_roundtrip(void **state)
{
    station *s = *state;
    uint8_t tp[65], priv[32], want[65], got[65], b[512];
    kl_inject_wrapped wr;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    kl_tlv_w w;
    X509_REQ *req;

    assert_non_null(k);
    assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_TRANSPORT_PUB, tp, 65), KL_PROTO_OK);
    assert_int_equal(kl_p256_priv32(k, priv), KL_OK);
    assert_int_equal(kl_p256_pub65(k, want), KL_OK);

    /* tampered ciphertext: refused, nothing stored */
    assert_int_equal(kl_inject_wrap(tp, SERIAL, priv, &wr), KL_OK);
    wr.ct[5] ^= 1;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_inject_put(&wr, 0, &w), KL_OK);
    expect_error(s, KL_MSG_INJECT, &w, KL_ERR_CRYPTO);
    /* wrapped for another serial (HKDF info differs) */
    assert_int_equal(kl_inject_wrap(tp, "OTHER-SERIAL", priv, &wr), KL_OK);
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_inject_put(&wr, 0, &w), KL_OK);
    expect_error(s, KL_MSG_INJECT, &w, KL_ERR_CRYPTO);
    /* ephemeral point not on the curve */
    assert_int_equal(kl_inject_wrap(tp, SERIAL, priv, &wr), KL_OK);
    wr.eph_pub[40] ^= 1;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_inject_put(&wr, 0, &w), KL_OK);
    expect_error(s, KL_MSG_INJECT, &w, KL_ERR_CRYPTO);
    /* field missing */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put(&w, KL_TAG_SALT, wr.salt, 32), KL_PROTO_OK);
    expect_error(s, KL_MSG_INJECT, &w, KL_ERR_MALFORMED);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_FACTORY_NEW);

    /* the real thing */
    assert_int_equal(kl_inject_wrap(tp, SERIAL, priv, &wr), KL_OK);
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_inject_put(&wr, 0, &w), KL_OK);
    assert_int_equal(xfer(s, KL_MSG_INJECT, &w), KL_MSG_RESP(KL_MSG_INJECT));
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_PUBKEY, got, 65), KL_PROTO_OK);
    assert_memory_equal(got, want, 65);
    OPENSSL_cleanse(priv, sizeof(priv));

    assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
    assert_int_equal(resp_u8(s, KL_TAG_KEY_ORIGIN), KL_KEY_ORIGIN_INJECTED);
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_IDENTITY_PUB, got, 65), KL_PROTO_OK);
    assert_memory_equal(got, want, 65);

    /* the device signs with the injected key */
    req = do_getcsr(s);
    assert_int_equal(X509_REQ_verify(req, k), 1);
    X509_REQ_free(req);

    /* a second INJECT without FORCE is refused; GENKEY keeps the injected key */
    expect_error(s, KL_MSG_INJECT, &w, KL_ERR_KEY_EXISTS);
    do_genkey(s, 0, got, 0);
    assert_memory_equal(got, want, 65);

    /* INJECT FORCE of a scalar outside [1, n-1] (correctly wrapped): CRYPTO and nothing
     * changes, the key in place stays */
    static const uint8_t bad[3][32] = {
        {0},
        {0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF,
         0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17,
         0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51}, /* n */
        {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
         0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
         0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kl_inject_wrap(tp, SERIAL, bad[i], &wr), KL_OK);
        kl_tlv_w_init(&w, b, sizeof(b));
        assert_int_equal(kl_inject_put(&wr, 1, &w), KL_OK);
        expect_error(s, KL_MSG_INJECT, &w, KL_ERR_CRYPTO);
        assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_KEY_READY);
        assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
        assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_IDENTITY_PUB, got, 65),
                         KL_PROTO_OK);
        assert_memory_equal(got, want, 65);
    }
    /* n - 1, the largest valid scalar, is accepted with FORCE */
    uint8_t top[32];
    memcpy(top, bad[1], 32);
    top[31] -= 1;
    assert_int_equal(kl_inject_wrap(tp, SERIAL, top, &wr), KL_OK);
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_inject_put(&wr, 1, &w), KL_OK);
    assert_int_equal(xfer(s, KL_MSG_INJECT, &w), KL_MSG_RESP(KL_MSG_INJECT));
    EVP_PKEY_free(k);
}

static void test_duplicate_seq_answered_from_cache(void **state)
{
    station *s = *state;
    uint8_t wire[128], first[256], pub[65], pub2[65], b[8];
    size_t n = 0, flen;
    kl_tlv_w w;

    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_GENKEY, 7, 0, NULL, 0),
                     KL_PROTO_OK);
    s->out_len = 0;
    assert_int_equal(kl_dev_feed(&s->dev, wire, n), KL_DEV_OK);
    flen = s->out_len;
    memcpy(first, s->out, flen);
    assert_true(take_response(s));
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_PUBKEY, pub, 65), KL_PROTO_OK);

    /* the station lost the response and retransmits: same bytes back, no second key */
    s->out_len = 0;
    assert_int_equal(kl_dev_feed(&s->dev, wire, n), KL_DEV_OK);
    assert_int_equal(s->out_len, flen);
    assert_memory_equal(s->out, first, flen);
    assert_int_equal(s->dev.stats.retransmits, 1);
    assert_true(take_response(s));
    assert_int_equal(resp_u8(s, KL_TAG_KEY_NEW), 1); /* the cached answer, verbatim */

    /* same seq, different request (station restarted): processed fresh */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_FORCE, 0), KL_PROTO_OK);
    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_GENKEY, 7, 0, w.buf, w.len),
                     KL_PROTO_OK);
    send_wire(s, wire, n);
    assert_int_equal(resp_u8(s, KL_TAG_KEY_NEW), 0);
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_PUBKEY, pub2, 65), KL_PROTO_OK);
    assert_memory_equal(pub, pub2, 65);
    assert_int_equal(s->dev.stats.retransmits, 1);
}

static void test_corrupt_frame_silent_then_retry(void **state)
{
    station *s = *state;
    uint8_t wire[128], bad[128];
    size_t n = 0;

    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_HELLO, 9, 0, NULL, 0),
                     KL_PROTO_OK);
    memcpy(bad, wire, n);
    bad[3] ^= 0x10;
    s->out_len = 0;
    assert_int_equal(kl_dev_feed(&s->dev, bad, n), KL_DEV_EFRAME);
    assert_int_equal(s->out_len, 0); /* silence: the station times out and retransmits */
    assert_int_equal(s->dev.stats.frames_bad, 1);
    send_wire(s, wire, n);
    assert_int_equal(s->rtype, KL_MSG_RESP(KL_MSG_HELLO));

    /* half a frame, a pause longer than the inter-byte timeout, then a full frame */
    s->out_len = 0;
    s->fake_ms = 1000;
    assert_int_equal(kl_dev_feed(&s->dev, wire, n / 2), KL_DEV_OK);
    s->fake_ms = 1000 + KL_DEV_RX_TIMEOUT_MS + 1;
    kl_dev_poll(&s->dev);
    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_HELLO, 10, 0, NULL, 0),
                     KL_PROTO_OK);
    send_wire(s, wire, n);
    assert_int_equal(s->rseq, 10);
}

static void test_bad_requests(void **state)
{
    station *s = *state;
    uint8_t wire[64], raw[32], b[64];
    const uint8_t bad_tlv[] = {0x20, 0x00, 0x05, 0x01};
    size_t n = 0, i;
    uint32_t crc;
    kl_tlv_w w;
    uint8_t pub[65];

    expect_error(s, 0x30, NULL, KL_ERR_UNKNOWN_TYPE);
    expect_error(s, 0x00, NULL, KL_ERR_UNKNOWN_TYPE);
    /* malformed TLV */
    assert_int_equal(
        kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_GENKEY, 77, 0, bad_tlv, sizeof(bad_tlv)),
        KL_PROTO_OK);
    send_wire(s, wire, n);
    assert_int_equal(err_code(s), KL_ERR_MALFORMED);
    /* FORCE out of range */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_FORCE, 2), KL_PROTO_OK);
    expect_error(s, KL_MSG_GENKEY, &w, KL_ERR_MALFORMED);
    /* a frame of version 2: ERROR VERSION with the supported range */
    raw[0] = 2;
    raw[1] = KL_MSG_HELLO;
    raw[2] = 0;
    raw[3] = 55;
    raw[4] = 0;
    raw[5] = 0;
    raw[6] = 0;
    crc = kl_crc32(0, raw, 7);
    for (i = 0; i < 4; i++) {
        raw[7 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    /* COBS by hand: no zero after index 6 is guaranteed, so use the codec's rules */
    {
        size_t code_pos = 0, pos = 1;
        uint8_t code = 1;
        for (i = 0; i < 11; i++) {
            if (raw[i] == 0) {
                wire[code_pos] = code;
                code_pos = pos++;
                code = 1;
            } else {
                wire[pos++] = raw[i];
                code++;
            }
        }
        wire[code_pos] = code;
        wire[pos++] = 0;
        n = pos;
    }
    send_wire(s, wire, n);
    assert_int_equal(s->rseq, 55);
    assert_int_equal(err_code(s), KL_ERR_VERSION);
    assert_int_equal(resp_u8(s, KL_TAG_PROTO_MAX), 1);
    /* responses sent to the device are ignored */
    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &n, KL_MSG_ERROR, 56, 0, NULL, 0),
                     KL_PROTO_OK);
    s->out_len = 0;
    assert_int_equal(kl_dev_feed(&s->dev, wire, n), KL_DEV_OK);
    assert_int_equal(s->out_len, 0);

    /* PUTTRUST before any certificate, PUTCERT before a key */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 0), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, "x", 1), KL_PROTO_OK);
    expect_error(s, KL_MSG_PUTCERT, &w, KL_ERR_NO_KEY);
    do_genkey(s, 0, pub, 1);
    expect_error(s, KL_MSG_PUTTRUST, &w, KL_ERR_STATE);
    /* a leaf that does not hold the device key */
    expect_error(s, KL_MSG_PUTCERT, &w, KL_ERR_CERT_MISMATCH);
    /* INDEX >= COUNT, COUNT too large */
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, "x", 1), KL_PROTO_OK);
    expect_error(s, KL_MSG_PUTCERT, &w, KL_ERR_MALFORMED);
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 1), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 9), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, "x", 1), KL_PROTO_OK);
    expect_error(s, KL_MSG_PUTCERT, &w, KL_ERR_TOO_LARGE);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_KEY_READY);
}

static void test_resume_after_power_cut(void **state)
{
    station *s = *state;
    uint8_t pub[65], pub2[65], fp[32], fp2[32];
    X509_REQ *req;
    pki p;

    memset(&p, 0, sizeof(p));
    do_genkey(s, 0, pub, 1);
    req = do_getcsr(s);
    pki_issue(&p, req);
    X509_REQ_free(req);
    do_putcert(s, &p);
    assert_int_equal(kl_dev_get_cert_fp(&s->dev, fp), 1);

    power_cycle(s); /* mid-flow: cert stored, no trust yet */
    assert_int_equal(xfer(s, KL_MSG_HELLO, NULL), KL_MSG_RESP(KL_MSG_HELLO));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_CERT_STORED);
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_IDENTITY_PUB, pub2, 65),
                     KL_PROTO_OK);
    assert_memory_equal(pub, pub2, 65);
    assert_int_equal(kl_tlv_get_fixed(s->rpay, s->rlen, KL_TAG_CERT_FP, fp2, 32), KL_PROTO_OK);
    assert_memory_equal(fp, fp2, 32);
    /* a resumed GENKEY does not replace the key */
    do_genkey(s, 0, pub2, 0);
    assert_memory_equal(pub, pub2, 65);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_CERT_STORED);

    /* the station may re-send the same pending certificate: fine, same fingerprint */
    do_putcert(s, &p);
    do_puttrust(s, &p);
    power_cycle(s);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_TRUST_STORED);
    do_challenge(s, &p, 1);
    pki_free(&p);
}

static void test_corrupt_state_record_fails_closed(void **state)
{
    station *s = *state;
    char path[128];
    FILE *f;
    uint8_t pub[65];

    do_genkey(s, 0, pub, 1);
    devsim_port_close(&s->port);
    snprintf(path, sizeof(path), "%s/obj-01", s->dir);
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 5, SEEK_SET), 0);
    assert_int_equal(fputc(KL_STATE_FACTORY_NEW, f), KL_STATE_FACTORY_NEW); /* CRC now wrong */
    fclose(f);
    assert_int_equal(devsim_port_open(&s->port, s->dir, capture, s), KL_OK);
    assert_int_equal(kl_dev_init(&s->dev, &s->ops, &s->port, &s->info), KL_DEV_ESTORAGE);
}

static void test_misbehaving_port(void **state)
{
    station *s = *state;
    uint8_t pub[65], b[128];
    X509_REQ *req;
    kl_tlv_w w;
    pki p;

    memset(&p, 0, sizeof(p));
    do_genkey(s, 0, pub, 1);
    s->port.bad_sig = 1; /* bad-csr */
    req = do_getcsr(s);
    assert_int_not_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
    X509_REQ_free(req);
    s->port.bad_sig = 0;
    req = do_getcsr(s);
    pki_issue(&p, req);
    X509_REQ_free(req);

    s->port.store_limit = 100; /* certificates do not fit */
    {
        uint8_t big[KL_PROTO_MAX_PAYLOAD];
        kl_tlv_w_init(&w, big, sizeof(big));
        assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, 0), KL_PROTO_OK);
        assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, 1), KL_PROTO_OK);
        assert_int_equal(kl_tlv_put(&w, KL_TAG_CERT, p.leaf_der, (size_t)p.leaf_len), KL_PROTO_OK);
        expect_error(s, KL_MSG_PUTCERT, &w, KL_ERR_TOO_LARGE);
    }
    s->port.store_limit = 0;
    do_putcert(s, &p);
    do_puttrust(s, &p);
    do_challenge(s, &p, 1);

    s->port.refuse_lock = 1; /* refuse-lock */
    put_confirm(&w, b, sizeof(b), &p, 0);
    expect_error(s, KL_MSG_LOCK, &w, KL_ERR_REFUSED);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_CHALLENGED);
    s->port.refuse_lock = 0;
    assert_int_equal(xfer(s, KL_MSG_LOCK, &w), KL_MSG_RESP(KL_MSG_LOCK));

    pki_free(&p);
}

/* A MATTER payload (spec 4.10); `bad` breaks one field: 1 verifier point, 2 iterations,
 * 3 discriminator, 4 no CD. */
static void matter_payload(kl_tlv_w *w, uint8_t *b, size_t cap, int bad)
{
    uint8_t cd[300], salt[32], ver[97], uid[16];
    memset(cd, 0xC5, sizeof(cd));
    memset(salt, 0x5A, sizeof(salt));
    memset(ver, 0x11, sizeof(ver));
    memset(uid, 0x77, sizeof(uid));
    ver[32] = bad == 1 ? 0x02 : 0x04;
    kl_tlv_w_init(w, b, cap);
    if (bad != 4) {
        assert_int_equal(kl_tlv_put(w, KL_TAG_MATTER_CD, cd, sizeof(cd)), KL_PROTO_OK);
    }
    assert_int_equal(kl_tlv_put_u16(w, KL_TAG_MATTER_DISCRIMINATOR, bad == 3 ? 0x1000 : 0xF00),
                     KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u32(w, KL_TAG_MATTER_ITERATIONS, bad == 2 ? 999u : 10000u),
                     KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(w, KL_TAG_MATTER_SALT, salt, sizeof(salt)), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(w, KL_TAG_MATTER_VERIFIER, ver, sizeof(ver)), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(w, KL_TAG_MATTER_UNIQUE_ID, uid, sizeof(uid)), KL_PROTO_OK);
}

/* A Matter device: its CSR names VID and PID (checked by OpenSSL's parser), it keeps the MATTER
 * set as sent once it holds its DAC, refuses it before, malformed, or once locked. */
static void test_matter(void **state)
{
    station *s = *state;
    uint8_t pub[65], b[1024], stored[1024], cb[128];
    size_t n = 0;
    kl_tlv_w w, cw;
    pki p;
    char txt[64];
    memset(&p, 0, sizeof(p));
    s->info.matter_vid = 0xFFF1;
    s->info.matter_pid = 0x8000;
    do_genkey(s, 0, pub, 1);
    X509_REQ *req = do_getcsr(s);
    const X509_NAME *nm = X509_REQ_get_subject_name(req);
    assert_int_equal(X509_NAME_entry_count(nm), 4);
    for (int i = 2; i < 4; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(nm, i);
        OBJ_obj2txt(txt, sizeof(txt), X509_NAME_ENTRY_get_object(e), 1);
        assert_string_equal(txt, i == 2 ? "1.3.6.1.4.1.37244.2.1" : "1.3.6.1.4.1.37244.2.2");
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
        assert_int_equal(ASN1_STRING_type(v), V_ASN1_UTF8STRING);
        assert_int_equal(ASN1_STRING_length(v), 4);
        assert_memory_equal(ASN1_STRING_get0_data(v), i == 2 ? "FFF1" : "8000", 4);
    }
    pki_issue(&p, req);
    X509_REQ_free(req);

    matter_payload(&w, b, sizeof(b), 0);
    expect_error(s, KL_MSG_MATTER, &w, KL_ERR_STATE); /* no DAC yet */
    do_putcert(s, &p);
    for (int bad = 1; bad <= 4; bad++) {
        matter_payload(&w, b, sizeof(b), bad);
        expect_error(s, KL_MSG_MATTER, &w, KL_ERR_MALFORMED);
    }
    assert_int_equal(s->ops.store_read(&s->port, KL_OBJ_MATTER, stored, sizeof(stored), &n),
                     KL_PORT_ENOENT);
    matter_payload(&w, b, sizeof(b), 0);
    assert_int_equal(xfer(s, KL_MSG_MATTER, &w), KL_MSG_RESP(KL_MSG_MATTER));
    assert_int_equal(resp_u8(s, KL_TAG_STATE), KL_STATE_CERT_STORED);
    assert_int_equal(s->ops.store_read(&s->port, KL_OBJ_MATTER, stored, sizeof(stored), &n),
                     KL_PORT_OK);
    assert_int_equal(n, w.len);
    assert_memory_equal(stored, b, n);

    do_puttrust(s, &p);
    do_challenge(s, &p, 1);
    put_confirm(&cw, cb, sizeof(cb), &p, 0);
    assert_int_equal(xfer(s, KL_MSG_LOCK, &cw), KL_MSG_RESP(KL_MSG_LOCK));
    expect_error(s, KL_MSG_MATTER, &w, KL_ERR_LOCKED);
    pki_free(&p);
}

static void test_storage_failure(void **state)
{
    station *s = *state;
    uint8_t pub[65];
    s->port.fail_store = 1;
    expect_error(s, KL_MSG_GENKEY, NULL, KL_ERR_STORAGE);
    assert_int_equal(kl_dev_get_state(&s->dev), KL_STATE_FACTORY_NEW);
    s->port.fail_store = 0;
    do_genkey(s, 0, pub, 1);
}

/* PUTTRUST part 0 FW_KEYS (docs/line-protocol.md 4.6, docs/firmware.md): one or two P-256
 * points stored as KL_OBJ_FWKEYS; anything else MALFORMED; part 0 without it deletes them. */
static void fw_puttrust(station *s, pki *p, uint8_t index, uint8_t count, const uint8_t *k,
                        size_t klen, int expect_ok)
{
    uint8_t b[KL_PROTO_MAX_PAYLOAD];
    kl_tlv_w w;
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_INDEX, index), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u8(&w, KL_TAG_COUNT, count), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_ANCHOR, p->ca_der, (size_t)p->ca_len), KL_PROTO_OK);
    if (k) {
        assert_int_equal(kl_tlv_put(&w, KL_TAG_FW_KEYS, k, klen), KL_PROTO_OK);
    }
    if (expect_ok) {
        assert_int_equal(xfer(s, KL_MSG_PUTTRUST, &w), KL_MSG_RESP(KL_MSG_PUTTRUST));
    } else {
        expect_error(s, KL_MSG_PUTTRUST, &w, KL_ERR_MALFORMED);
    }
}

static void test_puttrust_fw_keys(void **state)
{
    station *s = *state;
    pki p;
    uint8_t pub[65], keys[3][65], got[KL_DEV_MAX_FW_KEYS][65];
    size_t n = 9;
    memset(&p, 0, sizeof(p));
    do_genkey(s, 0, pub, 1);
    X509_REQ *req = do_getcsr(s);
    pki_issue(&p, req);
    X509_REQ_free(req);
    do_putcert(s, &p);
    for (int i = 0; i < 3; i++) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        assert_int_equal(kl_p256_pub65(k, keys[i]), KL_OK);
        EVP_PKEY_free(k);
    }
    fw_puttrust(s, &p, 0, 1, keys[0], 65, 1);
    assert_int_equal(kl_dev_fw_keys(&s->ops, &s->port, got, &n), KL_IMG_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(got[0], keys[0], 65);
    fw_puttrust(s, &p, 0, 1, keys[0], 130, 1); /* keys[0] and keys[1]: a change-over */
    assert_int_equal(kl_dev_fw_keys(&s->ops, &s->port, got, &n), KL_IMG_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(got[1], keys[1], 65);
    fw_puttrust(s, &p, 0, 1, keys[0], 195, 0); /* three keys */
    fw_puttrust(s, &p, 0, 1, keys[0], 64, 0);  /* not a whole point */
    fw_puttrust(s, &p, 0, 1, keys[0], 100, 0);
    keys[1][0] = 0x02; /* a compressed point as the second key */
    fw_puttrust(s, &p, 0, 1, keys[0], 130, 0);
    fw_puttrust(s, &p, 0, 1, keys[1], 65, 0);
    keys[1][0] = 0x04;
    fw_puttrust(s, &p, 1, 2, keys[0], 65, 0); /* only in part 0 */
    assert_int_equal(kl_dev_fw_keys(&s->ops, &s->port, got, &n), KL_IMG_OK);
    assert_int_equal(n, 2); /* refusals changed nothing */
    fw_puttrust(s, &p, 0, 1, NULL, 0, 1);
    assert_int_equal(kl_dev_fw_keys(&s->ops, &s->port, got, &n), KL_IMG_OK);
    assert_int_equal(n, 0); /* part 0 without FW_KEYS deletes them */
    pki_free(&p);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hello_factory_new),
        T(test_genkey_csr_verified_by_openssl),
        T(test_csr_sizes),
        T(test_full_flow_and_lock),
        T(test_inject_roundtrip),
        T(test_duplicate_seq_answered_from_cache),
        T(test_corrupt_frame_silent_then_retry),
        T(test_bad_requests),
        T(test_resume_after_power_cut),
        T(test_corrupt_state_record_fails_closed),
        T(test_misbehaving_port),
        T(test_storage_failure),
        T(test_matter),
        T(test_puttrust_fw_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
