/* keyline-provision: one device, HELLO to LOCK (docs/station.md "What the station does").
 *
 * Every step that touches the CA is a keyline-cad request (st_ca.c); the station holds no PIN,
 * token or store. Order that keeps identities unique and never lost (issue 4, point 5):
 *   1. inventory row "pending" for the hardware serial
 *   2. issue with pending=1: the certificate is committed (status pending) before any byte of
 *      it goes to the device
 *   3. inventory row points at the certificate
 *   4. PUTCERT, PUTTRUST, CHALLENGE (verified against the issued certificate's key)
 *   5. inventory records the passed CHALLENGE, then LOCK
 *   6. activate + inventory "provisioned"
 * A crash anywhere leaves a pending certificate that st_plan_decide() resumes when the device
 * comes back, or that the pending-window sweep revokes. */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kl_hostcrypto.h"
#include "kl_log.h"
#include "st.h"

/* Uncompressed P-256 point of a public key; zeros (and 0) when the key is not P-256. */
static int st_pub65(EVP_PKEY *pk, uint8_t out[KL_PROTO_PUB_LEN])
{
    if (kl_p256_pub65(pk, out) != KL_OK) {
        memset(out, 0, KL_PROTO_PUB_LEN);
        ERR_clear_error();
        return 0;
    }
    return 1;
}

static kl_rc st_inv_put(st_station *st, const st_hello *h, const char *cert_serial,
                        const char *state, const char *fmt, ...) KL_PRINTF(5, 6);
static kl_rc st_inv_put(st_station *st, const st_hello *h, const char *cert_serial,
                        const char *state, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    kl_rc rc = st_cad_inventory(st, h, cert_serial, state, detail);
    if (rc != KL_OK) {
        return kl_wrap(rc, "inventory");
    }
    return KL_OK;
}

kl_rc st_dev_error(uint8_t req, const st_resp *r)
{
    uint8_t code = 0;
    char text[KL_PROTO_ERRTEXT_MAX + 1] = "";
    (void)kl_tlv_get_u8(r->payload, r->len, KL_TAG_ERR_CODE, &code);
    if (kl_tlv_get_str(r->payload, r->len, KL_TAG_ERR_TEXT, text, sizeof text) != KL_PROTO_OK) {
        text[0] = 0;
    }
    for (char *c = text; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
            *c = '?';
        }
    }
    return kl_fail(code == KL_ERR_REFUSED ? KL_EPOLICY : KL_EAUTH,
                   "device answered %s with ERROR %s%s%s%s", kl_proto_msg_name(req),
                   kl_proto_err_name(code), text[0] ? " (" : "", text, text[0] ? ")" : "");
}

/* Request/response; KL_OK only for a non-ERROR answer whose payload is valid TLV. */
static kl_rc st_req(st_fixture *fx, uint8_t type, const kl_tlv_w *w, st_resp *r)
{
    long quick = fx->link.timeout_ms;
    if (type == KL_MSG_GENKEY || type == KL_MSG_GETCSR || type == KL_MSG_INJECT ||
        type == KL_MSG_CHALLENGE) {
        fx->link.timeout_ms = fx->st->cfg.slow_timeout_ms;
    }
    kl_rc rc = st_link_xact(&fx->link, type, w ? w->buf : NULL, w ? w->len : 0, r, -1);
    fx->link.timeout_ms = quick;
    if (rc != KL_OK) {
        return rc;
    }
    if (r->type == KL_MSG_ERROR) {
        return st_dev_error(type, r);
    }
    if (kl_tlv_check(r->payload, r->len) != KL_PROTO_OK) {
        return kl_fail(KL_EINPUT, "device sent a malformed %s answer", kl_proto_msg_name(type));
    }
    return KL_OK;
}

#define PUTW(expr) ENSURE((expr) == KL_PROTO_OK, KL_EINTERNAL, "request does not fit the frame")

/* csr mode: GENKEY (+FORCE) and GETCSR. Returns the CSR DER (malloc'd). */
static kl_rc st_key_csr(st_fixture *fx, st_outcome *o, int force, uint8_t **csr, size_t *csr_len)
{
    kl_rc rc = KL_OK;
    uint8_t buf[64], pub[KL_PROTO_PUB_LEN], csr_pub[KL_PROTO_PUB_LEN];
    kl_tlv_w w;
    st_resp *r = malloc(sizeof *r);
    X509_REQ *req = NULL;
    const uint8_t *v;
    size_t vlen;
    *csr = NULL;
    ENSURE(r, KL_EINTERNAL, "out of memory");

    long t = st_now_ms();
    st_fixture_progress(fx, ST_PH_KEY, "GENKEY%s", force ? " (replacing the old key)" : "");
    kl_tlv_w_init(&w, buf, sizeof buf);
    if (force) {
        PUTW(kl_tlv_put_u8(&w, KL_TAG_FORCE, 1));
    }
    TRY(st_req(fx, KL_MSG_GENKEY, &w, r));
    ENSURE(kl_tlv_get_fixed(r->payload, r->len, KL_TAG_PUBKEY, pub, sizeof pub) == KL_PROTO_OK &&
               pub[0] == 0x04,
           KL_EINPUT, "GENKEY answer lacks a valid public key");
    o->ms[ST_PH_KEY] = st_now_ms() - t;

    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_CSR, "GETCSR");
    TRY(st_req(fx, KL_MSG_GETCSR, NULL, r));
    ENSURE(kl_tlv_get_var(r->payload, r->len, KL_TAG_CSR, 1, KL_PROTO_MAX_PAYLOAD, &v, &vlen) ==
               KL_PROTO_OK,
           KL_EINPUT, "GETCSR answer lacks a CSR");
    /* The CSR must be for the key GENKEY reported (ca_issue checks its signature). */
    const unsigned char *p = v;
    req = d2i_X509_REQ(NULL, &p, (long)vlen);
    ENSURE(req && p == v + vlen, KL_EINPUT, "device sent a CSR that is not DER PKCS#10");
    ENSURE(st_pub65(X509_REQ_get0_pubkey(req), csr_pub) &&
               CRYPTO_memcmp(csr_pub, pub, sizeof pub) == 0,
           KL_EPOLICY, "device's CSR is not for the key it generated");
    TRY(st_csr_subject_check(X509_REQ_get_subject_name(req), &o->hello));
    *csr = malloc(vlen);
    ENSURE(*csr, KL_EINTERNAL, "out of memory");
    memcpy(*csr, v, vlen);
    *csr_len = vlen;
    o->ms[ST_PH_CSR] = st_now_ms() - t;
out:
    ERR_clear_error();
    X509_REQ_free(req);
    free(r);
    return rc;
}

/* inject mode: the station makes the key, wraps it to the device transport key, and signs the
 * CSR itself; the private key is wiped before the function returns, whatever happens. */
static kl_rc st_inject(st_fixture *fx, st_outcome *o, int force, uint8_t **csr, size_t *csr_len)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *key = NULL;
    uint8_t priv[32], pub[KL_PROTO_PUB_LEN], got[KL_PROTO_PUB_LEN], buf[256];
    kl_inject_wrapped wr;
    kl_tlv_w w;
    st_resp *r = malloc(sizeof *r);
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    unsigned char *der = NULL;
    const st_hello *h = &o->hello;
    *csr = NULL;
    ENSURE(r, KL_EINTERNAL, "out of memory");

    long t = st_now_ms();
    st_fixture_progress(fx, ST_PH_KEY, "INJECT%s", force ? " (replacing the old key)" : "");
    key = EVP_EC_gen("P-256");
    ENSURE_SSL(key, KL_EINTERNAL, "cannot generate a P-256 key");
    ENSURE(st_pub65(key, pub), KL_EINTERNAL, "cannot encode the generated public key");
    TRY(kl_p256_priv32(key, priv));
    rc = kl_inject_wrap(h->transport_pub, h->hw_serial, priv, &wr);
    OPENSSL_cleanse(priv, sizeof priv);
    TRY(rc);
    kl_tlv_w_init(&w, buf, sizeof buf);
    TRY(kl_inject_put(&wr, force, &w));
    TRY(st_req(fx, KL_MSG_INJECT, &w, r));
    ENSURE(kl_tlv_get_fixed(r->payload, r->len, KL_TAG_PUBKEY, got, sizeof got) == KL_PROTO_OK,
           KL_EINPUT, "INJECT answer lacks the public key");
    ENSURE(CRYPTO_memcmp(got, pub, sizeof pub) == 0, KL_EAUTH,
           "device reports a different public key after INJECT (unwrap went wrong)");
    o->ms[ST_PH_KEY] = st_now_ms() - t;

    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_CSR, "building CSR");
    req = X509_REQ_new();
    name = X509_NAME_new();
    ENSURE(req && name, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                          (const unsigned char *)h->model, -1, -1, 0) == 1 &&
                   X509_NAME_add_entry_by_txt(name, "serialNumber", MBSTRING_ASC,
                                              (const unsigned char *)h->hw_serial, -1, -1,
                                              0) == 1 &&
                   X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_subject_name(req, name) == 1 &&
                   X509_REQ_set_pubkey(req, key) == 1 && X509_REQ_sign(req, key, EVP_sha256()) > 0,
               KL_EINTERNAL, "cannot build the CSR");
    int n = i2d_X509_REQ(req, &der);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode the CSR");
    *csr = malloc((size_t)n);
    ENSURE(*csr, KL_EINTERNAL, "out of memory");
    memcpy(*csr, der, (size_t)n);
    *csr_len = (size_t)n;
    o->ms[ST_PH_CSR] = st_now_ms() - t;
out:
    OPENSSL_cleanse(priv, sizeof priv);
    EVP_PKEY_free(key); /* OpenSSL clears the private scalar when it frees the key */
    OPENSSL_free(der);
    X509_REQ_free(req);
    X509_NAME_free(name);
    free(r);
    return rc;
}

static kl_rc st_put_parts(st_fixture *fx, const st_hello *h, uint8_t msg, uint8_t tag, X509 **certs,
                          int count, const char *est_url, uint8_t fp_out[32], int *have_fp)
{
    kl_rc rc = KL_OK;
    st_resp *r = malloc(sizeof *r);
    uint8_t *buf = malloc(KL_PROTO_MAX_PAYLOAD);
    unsigned char *der = NULL;
    kl_tlv_w w;
    ENSURE(r && buf, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < count; i++) {
        int n = i2d_X509(certs[i], &der);
        ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode certificate");
        kl_tlv_w_init(&w, buf, h->max_payload);
        ENSURE(kl_tlv_put_u8(&w, KL_TAG_INDEX, (uint8_t)i) == KL_PROTO_OK &&
                   kl_tlv_put_u8(&w, KL_TAG_COUNT, (uint8_t)count) == KL_PROTO_OK &&
                   kl_tlv_put(&w, tag, der, (size_t)n) == KL_PROTO_OK &&
                   (i != 0 || !est_url || !*est_url ||
                    kl_tlv_put_str(&w, KL_TAG_EST_URL, est_url) == KL_PROTO_OK),
               KL_EPOLICY, "%s part %d (%d-byte certificate) exceeds the device's %u-byte limit",
               kl_proto_msg_name(msg), i, n, h->max_payload);
        OPENSSL_free(der);
        der = NULL;
        TRY(st_req(fx, msg, &w, r));
        uint8_t idx = 0xff;
        ENSURE(kl_tlv_get_u8(r->payload, r->len, KL_TAG_INDEX, &idx) == KL_PROTO_OK && idx == i,
               KL_EINPUT, "%s answer for part %d has the wrong INDEX", kl_proto_msg_name(msg), i);
        if (fp_out &&
            kl_tlv_get_fixed(r->payload, r->len, KL_TAG_CERT_FP, fp_out, 32) == KL_PROTO_OK) {
            *have_fp = 1;
        }
    }
out:
    OPENSSL_free(der);
    free(buf);
    free(r);
    return rc;
}

/* CHALLENGE with a fresh nonce; the signature is verified with the key of `cert` (the
 * certificate issued or on record, never the key the device reports). *forged = 1 when the
 * device answered with a signature that does not verify (it cannot sign with that key); other
 * failures (no answer, ERROR, malformed) leave it 0. */
static kl_rc st_challenge(st_fixture *fx, const st_hello *h, X509 *cert, st_resp *r, int *forged)
{
    kl_rc rc = KL_OK;
    uint8_t nonce[32], buf[64];
    const uint8_t *sig;
    size_t slen;
    kl_tlv_w w;
    *forged = 0;
    ENSURE_SSL(RAND_bytes(nonce, sizeof nonce) == 1, KL_EINTERNAL, "no random nonce");
    kl_tlv_w_init(&w, buf, sizeof buf);
    PUTW(kl_tlv_put(&w, KL_TAG_NONCE, nonce, sizeof nonce));
    TRY(st_req(fx, KL_MSG_CHALLENGE, &w, r));
    ENSURE(kl_tlv_get_var(r->payload, r->len, KL_TAG_SIG, 8, 80, &sig, &slen) == KL_PROTO_OK,
           KL_EINPUT, "CHALLENGE answer lacks a signature");
    rc = kl_challenge_verify(X509_get0_pubkey(cert), h->hw_serial, nonce, sizeof nonce, sig, slen);
    *forged = rc != KL_OK;
out:
    return rc;
}

/* A device that says it is locked with certificate `serial` (ALREADY, ACTIVATE): everything
 * HELLO says is public, so it proves with CHALLENGE that it holds that certificate's key before
 * the station believes it. On failure nothing about the certificate or the inventory changes
 * (the genuine unit keeps its identity); a forged signature goes to the audit log. */
static kl_rc st_locked_prove(st_station *st, st_fixture *fx, st_outcome *o, const char *serial,
                             X509 *cert, st_resp *r)
{
    kl_rc rc = KL_OK;
    int forged = 0;
    long t = st_now_ms();
    o->phase = ST_PH_CHALLENGE;
    st_fixture_progress(fx, ST_PH_CHALLENGE, "CHALLENGE (locked, %s)", serial);
    ENSURE(cert, KL_EINTERNAL, "no certificate %s from keyline-cad", serial);
    rc = st_challenge(fx, &o->hello, cert, r, &forged);
    if (rc != KL_OK) {
        char why[300], detail[700];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        if (forged) {
            snprintf(detail, sizeof detail,
                     "device %s on %s says it is locked with certificate %s but cannot sign with "
                     "its key (%s)",
                     o->hello.hw_serial, fx->name, serial, why);
            if (st_cad_proof_failed(st, o->hello.hw_serial, serial, detail) != KL_OK) {
                st_event(st, 1, "%s: %s: audit log not written: %s", fx->name, o->hello.hw_serial,
                         kl_errmsg());
            }
            rc = kl_fail(KL_EAUTH,
                         "locked device cannot prove it holds the key of certificate %s (%s); "
                         "counterfeit or clone of %s? nothing changed",
                         serial, why, o->hello.hw_serial);
        } else {
            rc = kl_fail(rc,
                         "locked device cannot prove it holds the key of certificate %s: %s; "
                         "not accepted, nothing changed",
                         serial, why);
        }
        goto out;
    }
    o->ms[ST_PH_CHALLENGE] = st_now_ms() - t;
out:
    return rc;
}

static void st_fail_phase(st_outcome *o, int phase)
{
    o->phase = phase;
    snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
}

void st_flow_run(st_station *st, st_fixture *fx, st_outcome *o)
{
    kl_rc rc = KL_OK;
    const st_hello *h = &o->hello;
    st_known k;
    st_plan plan;
    X509 *kcert[ST_MAX_KNOWN] = {0};
    int claimed = 0, own_row = 0, challenged = 0;
    uint8_t *csr = NULL;
    size_t csr_len = 0;
    X509 *cert = NULL;
    X509 *parts[KL_PROTO_MAX_PAYLOAD / 256];
    int nparts = 0;
    uint8_t fp[32], dev_fp[32];
    int have_fp = 0;
    st_resp *r = malloc(sizeof *r);
    char other[256];
    long t0 = st_now_ms(), t;
    uint64_t tx0 = fx->link.bytes_tx, rx0 = fx->link.bytes_rx;
    unsigned rt0 = fx->link.retransmits;
    o->mode = st->cfg.mode;
    o->phase = ST_PH_HELLO;
    if (!r) {
        snprintf(o->error, sizeof o->error, "out of memory");
        goto done;
    }

    /* One flow per hardware serial across every station on the store: two fixtures (or two
     * stations) with the same serial are a cloned serial, and the pending sweep never revokes
     * a certificate that a flow is resuming. */
    rc = st_station_claim(st, fx, h->hw_serial, other, sizeof other);
    /* A pending sweep holds a device only while it revokes one certificate (milliseconds):
     * wait for it rather than fail the device (then decide with what the sweep left). The
     * holder text starts with the holder's place (store_device_claim). */
    for (int i = 0; i < 250 && rc == KL_EEXIST &&
                    strncmp(other, ST_SWEEP_WHERE " ", strlen(ST_SWEEP_WHERE) + 1) == 0;
         i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        if (i == 0) {
            st_event(st, 0, "%s: %s: waiting for %s to finish with the device", fx->name,
                     h->hw_serial, other);
        }
        nanosleep(&ts, NULL);
        rc = st_station_claim(st, fx, h->hw_serial, other, sizeof other);
    }
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST,
                     "hardware serial %s is already being provisioned on %s (cloned "
                     "serial?)",
                     h->hw_serial, other);
    } else if (rc != KL_OK) {
        kl_wrap(rc, "keyline-cad");
    }
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_HELLO);
        goto done;
    }
    claimed = 1;

    /* ---- decide ---- */
    rc = st_known_load(st, h->hw_serial, &k, kcert);
    if (rc != KL_OK) {
        kl_wrap(rc, "keyline-cad");
        st_fail_phase(o, ST_PH_HELLO);
        goto done;
    }
    st_plan_decide(h, &k, st->cfg.mode, st->reprovision, st->reprovision_reason, &plan);
    if (plan.action != ST_ACT_FRESH || plan.nrevoke) {
        st_event(st, 0, "%s: %s: %s%s", fx->name, h->hw_serial, st_action_name(plan.action),
                 plan.nrevoke ? " (after revoking older certificates)" : "");
    }
    for (size_t i = 0; i < plan.nrevoke; i++) {
        const st_known_cert *c = &k.c[plan.revoke[i]];
        rc = st_cad_revoke(st, c->serial, plan.revoke_reason[i]);
        if (rc != KL_OK && rc != KL_EEXIST) {
            kl_wrap(rc, "revoking old certificate %s", c->serial);
            st_fail_phase(o, ST_PH_HELLO);
            goto done;
        }
        st_event(st, 0, "%s: %s: revoked old certificate %s (%s)", fx->name, h->hw_serial,
                 c->serial, st_reason_name(plan.revoke_reason[i]));
    }

    switch (plan.action) {
    case ST_ACT_REFUSE:
        rc = kl_fail(KL_EPOLICY, "%s", plan.why);
        st_fail_phase(o, ST_PH_HELLO);
        goto done;
    case ST_ACT_ALREADY:
        snprintf(o->cert_serial, sizeof o->cert_serial, "%s", k.c[plan.resume].serial);
        rc = st_locked_prove(st, fx, o, o->cert_serial, kcert[plan.resume], r);
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_CHALLENGE);
            goto done;
        }
        o->action = "already-provisioned";
        o->ok = 1;
        goto done;
    case ST_ACT_ACTIVATE:
        snprintf(o->cert_serial, sizeof o->cert_serial, "%s", k.c[plan.resume].serial);
        rc = st_locked_prove(st, fx, o, o->cert_serial, kcert[plan.resume], r);
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_CHALLENGE); /* the inventory keeps "challenge passed" */
            goto done;
        }
        own_row = 1;
        challenged = 1; /* recorded by the earlier run; a failure here must keep that */
        o->phase = ST_PH_LOCK;
        rc = cac_activate(st->cac, o->cert_serial);
        if (rc == KL_OK) {
            rc = st_inv_put(st, h, o->cert_serial, "provisioned",
                            "locked on %s (activated after "
                            "a station restart)",
                            fx->name);
        }
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_LOCK);
            goto done;
        }
        o->action = "activated";
        o->ok = 1;
        goto done;
    case ST_ACT_RESUME: {
        snprintf(o->cert_serial, sizeof o->cert_serial, "%s", k.c[plan.resume].serial);
        cert = kcert[plan.resume];
        kcert[plan.resume] = NULL;
        if (!cert) {
            rc = kl_fail(KL_EINTERNAL, "no certificate %s from keyline-cad", o->cert_serial);
            st_fail_phase(o, ST_PH_ISSUE);
            goto done;
        }
        own_row = 1;
        o->action = "resumed";
        st_event(st, 0, "%s: %s: resuming with pending certificate %s", fx->name, h->hw_serial,
                 o->cert_serial);
        break;
    }
    case ST_ACT_FRESH: {
        own_row = 1;
        rc = st_inv_put(st, h, NULL, "pending", "provisioning on %s", fx->name);
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_ISSUE);
            goto done;
        }
        rc = st->cfg.mode == ST_MODE_INJECT ? st_inject(fx, o, plan.force, &csr, &csr_len)
                                            : st_key_csr(fx, o, plan.force, &csr, &csr_len);
        if (rc != KL_OK) {
            st_fail_phase(o, fx->phase);
            goto done;
        }
        t = st_now_ms();
        st_fixture_progress(fx, ST_PH_ISSUE, "issuing");
        rc = st_station_claim_keep(st, fx, h->hw_serial);
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_ISSUE);
            goto done;
        }
        {
            cac_issue_req req = {
                .profile = st->cfg.profile,
                .csr = csr,
                .csr_len = csr_len,
                .auth = {.method = "station"},
                .device_id = h->hw_serial,
                .pending = 1,
            };
            uint8_t *der = NULL;
            size_t der_len = 0;
            char sh[65] = "";
            rc = cac_issue(st->cac, &req, &der, &der_len, sh);
            if (rc == KL_OK) {
                const unsigned char *p = der;
                cert = d2i_X509(NULL, &p, (long)der_len);
                if (!cert) {
                    ERR_clear_error();
                    rc = kl_fail(KL_EINPUT, "keyline-cad issued %s but sent no certificate", sh);
                }
            }
            free(der);
            snprintf(o->cert_serial, sizeof o->cert_serial, "%s", sh);
        }
        if (rc != KL_OK) {
            kl_wrap(rc, "issuing refused");
            st_fail_phase(o, ST_PH_ISSUE);
            goto done;
        }
        rc = st_inv_put(st, h, o->cert_serial, "pending", "issued on %s, not yet confirmed",
                        fx->name);
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_ISSUE);
            goto done;
        }
        o->ms[ST_PH_ISSUE] = st_now_ms() - t;
        st_event(st, 0, "%s: %s: issued pending certificate %s", fx->name, h->hw_serial,
                 o->cert_serial);
        o->action = "provisioned";
        break;
    }
    }

    /* ---- deliver: leaf + intermediates, then the anchors ---- */
    {
        unsigned char *der = NULL;
        int n = i2d_X509(cert, &der);
        if (n <= 0) {
            rc = kl_fail(KL_EINTERNAL, "cannot encode certificate");
            st_fail_phase(o, ST_PH_PUTCERT);
            goto done;
        }
        SHA256(der, (size_t)n, fp);
        OPENSSL_free(der);
    }
    parts[nparts++] = cert;
    for (int i = 0; i < sk_X509_num(st->chain) && nparts < (int)(sizeof parts / sizeof parts[0]);
         i++) {
        X509 *c = sk_X509_value(st->chain, i);
        if (X509_check_issued(c, c) == X509_V_OK) {
            continue; /* self-signed: the root goes in PUTTRUST */
        }
        parts[nparts++] = c;
    }
    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_PUTCERT, "PUTCERT %s", o->cert_serial);
    rc = st_station_claim_keep(st, fx, h->hw_serial);
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_PUTCERT);
        goto done;
    }
    rc = st_put_parts(fx, h, KL_MSG_PUTCERT, KL_TAG_CERT, parts, nparts, NULL, dev_fp, &have_fp);
    if (rc == KL_OK && (!have_fp || CRYPTO_memcmp(dev_fp, fp, sizeof fp) != 0)) {
        rc = kl_fail(KL_EAUTH, "device did not confirm the certificate fingerprint after PUTCERT");
    }
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_PUTCERT);
        goto done;
    }
    o->ms[ST_PH_PUTCERT] = st_now_ms() - t;

    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_PUTTRUST, "PUTTRUST");
    {
        X509 *anchors[8];
        int na = 0;
        for (int i = 0; i < sk_X509_num(st->anchors) && na < 8; i++) {
            anchors[na++] = sk_X509_value(st->anchors, i);
        }
        rc = st_put_parts(fx, h, KL_MSG_PUTTRUST, KL_TAG_ANCHOR, anchors, na, st->cfg.est_url, NULL,
                          NULL);
    }
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_PUTTRUST);
        goto done;
    }
    o->ms[ST_PH_PUTTRUST] = st_now_ms() - t;

    /* ---- CHALLENGE: the device proves it holds the key of the certificate just issued ---- */
    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_CHALLENGE, "CHALLENGE");
    rc = st_station_claim_keep(st, fx, h->hw_serial);
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_CHALLENGE);
        goto done;
    }
    {
        int forged = 0;
        rc = st_challenge(fx, h, cert, r, &forged);
        if (rc != KL_OK && !forged) {
            st_fail_phase(o, ST_PH_CHALLENGE);
            goto done;
        }
        if (rc != KL_OK) {
            /* The device cannot sign with the certified key: that certificate must never be
             * trusted. Revoke it now rather than leave it pending. */
            char why[300];
            snprintf(why, sizeof why, "%s", kl_errmsg());
            kl_rc r2 = cac_abandon(st->cac, o->cert_serial, ST_REASON_KEY_COMPROMISE);
            rc = kl_fail(KL_EAUTH,
                         "CHALLENGE signature does not verify against certificate %s "
                         "(%s); certificate %s",
                         o->cert_serial, why,
                         r2 == KL_OK ? "revoked (keyCompromise)" : "could NOT be revoked");
            st_fail_phase(o, ST_PH_CHALLENGE);
            (void)st_inv_put(st, h, o->cert_serial, "failed", "%s", o->error);
            own_row = 0; /* written */
            goto done;
        }
    }
    o->ms[ST_PH_CHALLENGE] = st_now_ms() - t;
    rc = st_inv_put(st, h, o->cert_serial, "pending", "challenge passed for %s on %s; locking",
                    o->cert_serial, fx->name);
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_CHALLENGE);
        goto done;
    }
    challenged = 1;

    /* ---- LOCK, then the certificate becomes valid ---- */
    t = st_now_ms();
    st_fixture_progress(fx, ST_PH_LOCK, "LOCK");
    rc = st_station_claim_keep(st, fx, h->hw_serial);
    if (rc != KL_OK) {
        st_fail_phase(o, ST_PH_LOCK);
        goto done;
    }
    {
        uint8_t buf[64], state = 0;
        kl_tlv_w w;
        kl_tlv_w_init(&w, buf, sizeof buf);
        (void)kl_tlv_put(&w, KL_TAG_CONFIRM, fp, sizeof fp);
        rc = st_req(fx, KL_MSG_LOCK, &w, r);
        if (rc == KL_OK &&
            (kl_tlv_get_u8(r->payload, r->len, KL_TAG_STATE, &state) != KL_PROTO_OK ||
             state != KL_STATE_LOCKED)) {
            rc = kl_fail(KL_EINPUT, "device did not report LOCKED after LOCK");
        }
        if (rc != KL_OK) {
            st_fail_phase(o, ST_PH_LOCK);
            goto done;
        }
    }
    rc = cac_activate(st->cac, o->cert_serial);
    if (rc == KL_OK) {
        rc = st_inv_put(st, h, o->cert_serial, "provisioned", "locked on %s", fx->name);
    }
    if (rc != KL_OK) {
        kl_wrap(rc,
                "device locked but activating %s failed (it is activated when the device "
                "is seen again)",
                o->cert_serial);
        st_fail_phase(o, ST_PH_LOCK);
        own_row = 0; /* keep "challenge passed": the next HELLO activates */
        goto done;
    }
    o->ms[ST_PH_LOCK] = st_now_ms() - t;
    o->ok = 1;

done:
    if (!o->ok) {
        o->ok = 0;
        if (!o->error[0]) {
            snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
        }
        if (own_row) {
            /* The pending certificate (if any) stays: the device may come back and resume.
             * After a passed CHALLENGE the detail keeps its "challenge passed" prefix: LOCK may
             * have reached the device even though its answer did not come back (unplug, power
             * cut), and only that record lets the next HELLO (locked) activate the certificate
             * instead of refusing a device this station locked itself. */
            kl_rc ir = challenged
                           ? st_inv_put(st, h, o->cert_serial, "failed",
                                        "challenge passed for %s; %s on %s: %s", o->cert_serial,
                                        st_phase_name(o->phase), fx->name, o->error)
                           : st_inv_put(st, h, o->cert_serial, "failed", "%s on %s: %s",
                                        st_phase_name(o->phase), fx->name, o->error);
            if (ir != KL_OK) {
                st_event(st, 1, "%s: %s: inventory not updated: %s", fx->name, h->hw_serial,
                         kl_errmsg());
            }
        }
    }
    if (claimed) {
        st_station_release(st, fx, h->hw_serial);
    }
    for (size_t i = 0; i < ST_MAX_KNOWN; i++) {
        X509_free(kcert[i]);
    }
    o->total_ms = st_now_ms() - t0 + o->ms[ST_PH_HELLO];
    o->bytes_tx += fx->link.bytes_tx - tx0;
    o->bytes_rx += fx->link.bytes_rx - rx0;
    o->retransmits += fx->link.retransmits - rt0;
    X509_free(cert);
    free(csr);
    free(r);
    (void)rc;
}
