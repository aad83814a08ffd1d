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
 * comes back, or that the pending-window sweep revokes.
 *
 * The flow is a table of short steps (st_steps, at the end): each row names its phase, says
 * when it is wanted (from the plan) and runs; st_flow_run runs the wanted rows in order, times
 * them per phase, tells the fixture (the dashboard) which step runs, and records a failure
 * once, under the failing row's phase. */
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
#include "st_matter_flow.h"

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

/* ---- the steps, each one short; the table at the end says when each runs ------------------ */

static int st_want_revoke(const st_flow *f)
{
    return f->plan.nrevoke > 0;
}

static int st_want_refuse(const st_flow *f)
{
    return f->plan.action == ST_ACT_REFUSE;
}

static int st_want_locked(const st_flow *f)
{
    return f->plan.action == ST_ACT_ALREADY || f->plan.action == ST_ACT_ACTIVATE;
}

static int st_want_activate(const st_flow *f)
{
    return f->plan.action == ST_ACT_ACTIVATE;
}

static int st_want_resume(const st_flow *f)
{
    return f->plan.action == ST_ACT_RESUME;
}

static int st_want_fresh(const st_flow *f)
{
    return f->plan.action == ST_ACT_FRESH;
}

int st_want_deliver(const st_flow *f)
{
    return f->plan.action == ST_ACT_FRESH || f->plan.action == ST_ACT_RESUME;
}

/* One flow per hardware serial across every station on the store: two fixtures (or two
 * stations) with the same serial are a cloned serial, and the pending sweep never revokes a
 * certificate that a flow is resuming. */
static kl_rc st_step_claim(st_flow *f)
{
    char other[256];
    const char *serial = f->h->hw_serial;
    kl_rc rc = st_station_claim(f->st, f->fx, serial, other, sizeof other);
    /* A pending sweep holds a device only while it revokes one certificate (milliseconds):
     * wait for it rather than fail the device (then decide with what the sweep left). The
     * holder text starts with the holder's place (store_device_claim). */
    for (int i = 0; i < 250 && rc == KL_EEXIST &&
                    strncmp(other, ST_SWEEP_WHERE " ", strlen(ST_SWEEP_WHERE) + 1) == 0;
         i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        if (i == 0) {
            st_event(f->st, 0, "%s: %s: waiting for %s to finish with the device", f->fx->name,
                     serial, other);
        }
        nanosleep(&ts, NULL);
        rc = st_station_claim(f->st, f->fx, serial, other, sizeof other);
    }
    if (rc == KL_EEXIST) {
        return kl_fail(KL_EEXIST,
                       "hardware serial %s is already being provisioned on %s (cloned serial?)",
                       serial, other);
    }
    if (rc != KL_OK) {
        return kl_wrap(rc, "keyline-cad");
    }
    f->claimed = 1;
    return KL_OK;
}

static kl_rc st_step_decide(st_flow *f)
{
    st_station *st = f->st;
    kl_rc rc = st_known_load(st, f->h->hw_serial, &f->k, f->kcert);
    if (rc != KL_OK) {
        return kl_wrap(rc, "keyline-cad");
    }
    st_plan_decide(f->h, &f->k, st->cfg.mode, st->reprovision, st->reprovision_reason, &f->plan);
    if (f->plan.action != ST_ACT_FRESH || f->plan.nrevoke) {
        st_event(st, 0, "%s: %s: %s%s", f->fx->name, f->h->hw_serial,
                 st_action_name(f->plan.action),
                 f->plan.nrevoke ? " (after revoking older certificates)" : "");
    }
    return KL_OK;
}

static kl_rc st_step_revoke(st_flow *f)
{
    for (size_t i = 0; i < f->plan.nrevoke; i++) {
        const st_known_cert *c = &f->k.c[f->plan.revoke[i]];
        kl_rc rc = st_cad_revoke(f->st, c->serial, f->plan.revoke_reason[i]);
        if (rc != KL_OK && rc != KL_EEXIST) {
            return kl_wrap(rc, "revoking old certificate %s", c->serial);
        }
        st_event(f->st, 0, "%s: %s: revoked old certificate %s (%s)", f->fx->name, f->h->hw_serial,
                 c->serial, st_reason_name(f->plan.revoke_reason[i]));
    }
    return KL_OK;
}

static kl_rc st_step_refuse(st_flow *f)
{
    return kl_fail(KL_EPOLICY, "%s", f->plan.why);
}

/* A device that says it is locked with a certificate (ALREADY, ACTIVATE): everything HELLO
 * says is public, so it proves with CHALLENGE that it holds that certificate's key before the
 * station believes it. On failure nothing about the certificate or the inventory changes (the
 * genuine unit keeps its identity); a forged signature goes to the audit log. */
static kl_rc st_step_prove(st_flow *f)
{
    int forged = 0;
    st_outcome *o = f->o;
    X509 *cert = f->kcert[f->plan.resume];
    snprintf(o->cert_serial, sizeof o->cert_serial, "%s", f->k.c[f->plan.resume].serial);
    st_fixture_progress(f->fx, ST_PH_CHALLENGE, "CHALLENGE (locked, %s)", o->cert_serial);
    if (!cert) {
        return kl_fail(KL_EINTERNAL, "no certificate %s from keyline-cad", o->cert_serial);
    }
    kl_rc rc = st_challenge(f->fx, f->h, cert, f->r, &forged);
    if (rc == KL_OK) {
        if (f->plan.action == ST_ACT_ALREADY) {
            o->action = "already-provisioned";
        } else {
            f->own_row = 1;
            f->challenged = 1; /* recorded by the earlier run; a failure here must keep that */
        }
        return KL_OK;
    }
    char why[300];
    snprintf(why, sizeof why, "%s", kl_errmsg());
    if (!forged) {
        return kl_fail(rc,
                       "locked device cannot prove it holds the key of certificate %s: %s; "
                       "not accepted, nothing changed",
                       o->cert_serial, why);
    }
    char detail[700];
    snprintf(detail, sizeof detail,
             "device %s on %s says it is locked with certificate %s but cannot sign with its "
             "key (%s)",
             f->h->hw_serial, f->fx->name, o->cert_serial, why);
    if (st_cad_proof_failed(f->st, f->h->hw_serial, o->cert_serial, detail) != KL_OK) {
        st_event(f->st, 1, "%s: %s: audit log not written: %s", f->fx->name, f->h->hw_serial,
                 kl_errmsg());
    }
    return kl_fail(KL_EAUTH,
                   "locked device cannot prove it holds the key of certificate %s (%s); "
                   "counterfeit or clone of %s? nothing changed",
                   o->cert_serial, why, f->h->hw_serial);
}

/* Locked after a passed CHALLENGE recorded by an earlier run (the station stopped between
 * LOCK and activation): the certificate becomes valid now. */
static kl_rc st_step_activate(st_flow *f)
{
    kl_rc rc = cac_activate(f->st->cac, f->o->cert_serial);
    if (rc == KL_OK) {
        rc = st_inv_put(f->st, f->h, f->o->cert_serial, "provisioned",
                        "locked on %s (activated after a station restart)", f->fx->name);
    }
    if (rc == KL_OK) {
        f->o->action = "activated";
    }
    return rc;
}

static kl_rc st_step_resume(st_flow *f)
{
    st_outcome *o = f->o;
    snprintf(o->cert_serial, sizeof o->cert_serial, "%s", f->k.c[f->plan.resume].serial);
    f->cert = f->kcert[f->plan.resume];
    f->kcert[f->plan.resume] = NULL;
    if (!f->cert) {
        return kl_fail(KL_EINTERNAL, "no certificate %s from keyline-cad", o->cert_serial);
    }
    f->own_row = 1;
    o->action = "resumed";
    st_event(f->st, 0, "%s: %s: resuming with pending certificate %s", f->fx->name, f->h->hw_serial,
             o->cert_serial);
    return KL_OK;
}

/* The inventory row says "pending" before the device makes a key. */
static kl_rc st_step_reserve(st_flow *f)
{
    f->own_row = 1;
    return st_inv_put(f->st, f->h, NULL, "pending", "provisioning on %s", f->fx->name);
}

/* csr mode: GENKEY (+FORCE); the public key is kept to check the CSR against. */
static kl_rc st_genkey(st_flow *f)
{
    kl_rc rc = KL_OK;
    uint8_t buf[64];
    kl_tlv_w w;
    st_resp *r = f->r;
    st_fixture_progress(f->fx, ST_PH_KEY, "GENKEY%s",
                        f->plan.force ? " (replacing the old key)" : "");
    kl_tlv_w_init(&w, buf, sizeof buf);
    if (f->plan.force) {
        PUTW(kl_tlv_put_u8(&w, KL_TAG_FORCE, 1));
    }
    TRY(st_req(f->fx, KL_MSG_GENKEY, &w, r));
    ENSURE(kl_tlv_get_fixed(r->payload, r->len, KL_TAG_PUBKEY, f->pub, sizeof f->pub) ==
                   KL_PROTO_OK &&
               f->pub[0] == 0x04,
           KL_EINPUT, "GENKEY answer lacks a valid public key");
out:
    return rc;
}

/* inject mode: the station makes the key and wraps it to the device transport key; the
 * private scalar is wiped before the function returns, whatever happens. The key object stays
 * in f->key until the CSR is signed with it. */
static kl_rc st_inject(st_flow *f)
{
    kl_rc rc = KL_OK;
    uint8_t priv[32], got[KL_PROTO_PUB_LEN], buf[256];
    kl_inject_wrapped wr;
    kl_tlv_w w;
    st_resp *r = f->r;
    st_fixture_progress(f->fx, ST_PH_KEY, "INJECT%s",
                        f->plan.force ? " (replacing the old key)" : "");
    f->key = EVP_EC_gen("P-256");
    ENSURE_SSL(f->key, KL_EINTERNAL, "cannot generate a P-256 key");
    ENSURE(st_pub65(f->key, f->pub), KL_EINTERNAL, "cannot encode the generated public key");
    TRY(kl_p256_priv32(f->key, priv));
    rc = kl_inject_wrap(f->h->transport_pub, f->h->hw_serial, priv, &wr);
    OPENSSL_cleanse(priv, sizeof priv);
    TRY(rc);
    kl_tlv_w_init(&w, buf, sizeof buf);
    TRY(kl_inject_put(&wr, f->plan.force, &w));
    TRY(st_req(f->fx, KL_MSG_INJECT, &w, r));
    ENSURE(kl_tlv_get_fixed(r->payload, r->len, KL_TAG_PUBKEY, got, sizeof got) == KL_PROTO_OK,
           KL_EINPUT, "INJECT answer lacks the public key");
    ENSURE(CRYPTO_memcmp(got, f->pub, sizeof got) == 0, KL_EAUTH,
           "device reports a different public key after INJECT (unwrap went wrong)");
out:
    OPENSSL_cleanse(priv, sizeof priv);
    return rc;
}

static kl_rc st_step_key(st_flow *f)
{
    return f->st->cfg.mode == ST_MODE_INJECT ? st_inject(f) : st_genkey(f);
}

/* csr mode: GETCSR; the CSR must be for the key GENKEY reported (ca_issue checks its
 * signature) and name the device as HELLO did. */
static kl_rc st_getcsr(st_flow *f)
{
    kl_rc rc = KL_OK;
    uint8_t csr_pub[KL_PROTO_PUB_LEN];
    const uint8_t *v;
    size_t vlen;
    X509_REQ *req = NULL;
    st_resp *r = f->r;
    st_fixture_progress(f->fx, ST_PH_CSR, "GETCSR");
    TRY(st_req(f->fx, KL_MSG_GETCSR, NULL, r));
    ENSURE(kl_tlv_get_var(r->payload, r->len, KL_TAG_CSR, 1, KL_PROTO_MAX_PAYLOAD, &v, &vlen) ==
               KL_PROTO_OK,
           KL_EINPUT, "GETCSR answer lacks a CSR");
    const unsigned char *p = v;
    req = d2i_X509_REQ(NULL, &p, (long)vlen);
    ENSURE(req && p == v + vlen, KL_EINPUT, "device sent a CSR that is not DER PKCS#10");
    if (f->st->matter.enabled) {
        TRY(st_matter_csr_check(req, &f->st->matter, f->h)); /* P-256, VID, PID, CN, serial */
    }
    ENSURE(st_pub65(X509_REQ_get0_pubkey(req), csr_pub) &&
               CRYPTO_memcmp(csr_pub, f->pub, sizeof csr_pub) == 0,
           KL_EPOLICY, "device's CSR is not for the key it generated");
    if (!f->st->matter.enabled) {
        TRY(st_csr_subject_check(X509_REQ_get_subject_name(req), f->h));
    }
    f->csr = malloc(vlen);
    ENSURE(f->csr, KL_EINTERNAL, "out of memory");
    memcpy(f->csr, v, vlen);
    f->csr_len = vlen;
out:
    ERR_clear_error();
    X509_REQ_free(req);
    return rc;
}

/* inject mode: the station signs the CSR with the key it injected, then drops the key. */
static kl_rc st_build_csr(st_flow *f)
{
    kl_rc rc = KL_OK;
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char *der = NULL;
    st_fixture_progress(f->fx, ST_PH_CSR, "building CSR");
    ENSURE(req && name && f->key, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)f->h->model,
                                   -1, -1, 0) == 1 &&
            X509_NAME_add_entry_by_txt(name, "serialNumber", MBSTRING_ASC,
                                       (const unsigned char *)f->h->hw_serial, -1, -1, 0) == 1 &&
            X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_subject_name(req, name) == 1 &&
            X509_REQ_set_pubkey(req, f->key) == 1 && X509_REQ_sign(req, f->key, EVP_sha256()) > 0,
        KL_EINTERNAL, "cannot build the CSR");
    int n = i2d_X509_REQ(req, &der);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode the CSR");
    f->csr = malloc((size_t)n);
    ENSURE(f->csr, KL_EINTERNAL, "out of memory");
    memcpy(f->csr, der, (size_t)n);
    f->csr_len = (size_t)n;
out:
    EVP_PKEY_free(f->key); /* OpenSSL clears the private scalar when it frees the key */
    f->key = NULL;
    OPENSSL_free(der);
    X509_REQ_free(req);
    X509_NAME_free(name);
    return rc;
}

static kl_rc st_step_csr(st_flow *f)
{
    return f->st->cfg.mode == ST_MODE_INJECT ? st_build_csr(f) : st_getcsr(f);
}

/* keyline-cad commits the certificate as pending before any byte of it reaches the device. */
static kl_rc st_step_issue(st_flow *f)
{
    st_station *st = f->st;
    st_outcome *o = f->o;
    uint8_t *der = NULL;
    size_t der_len = 0;
    char sh[65] = "";
    st_fixture_progress(f->fx, ST_PH_ISSUE, "issuing");
    kl_rc rc = st_station_claim_keep(st, f->fx, f->h->hw_serial);
    if (rc != KL_OK) {
        return rc;
    }
    cac_issue_req req = {
        .profile = st->cfg.profile,
        .csr = f->csr,
        .csr_len = f->csr_len,
        .auth = {.method = "station"},
        .device_id = f->h->hw_serial,
        .pending = 1,
        .station = st->cfg.station_id[0] ? st->cfg.station_id : NULL,
    };
    rc = cac_issue(st->cac, &req, &der, &der_len, sh);
    if (rc == KL_OK) {
        const unsigned char *p = der;
        f->cert = d2i_X509(NULL, &p, (long)der_len);
        if (!f->cert) {
            ERR_clear_error();
            rc = kl_fail(KL_EINPUT, "keyline-cad issued %s but sent no certificate", sh);
        }
    }
    free(der);
    snprintf(o->cert_serial, sizeof o->cert_serial, "%s", sh);
    if (rc != KL_OK) {
        return kl_wrap(rc, "issuing refused");
    }
    rc = st_inv_put(st, f->h, o->cert_serial, "pending", "issued on %s, not yet confirmed",
                    f->fx->name);
    if (rc != KL_OK) {
        return rc;
    }
    st_event(st, 0, "%s: %s: issued pending certificate %s", f->fx->name, f->h->hw_serial,
             o->cert_serial);
    o->action = "provisioned";
    return KL_OK;
}

/* Send certs[0..count) as parts of `msg` (PUTCERT, PUTTRUST); `first` adds items to part 0
 * (returns nonzero when they do not fit). fp_out: the fingerprint the device confirms. */
static kl_rc st_put_parts(st_flow *f, uint8_t msg, uint8_t tag, X509 **certs, int count,
                          int (*first)(st_flow *f, kl_tlv_w *w), uint8_t fp_out[32], int *have_fp)
{
    kl_rc rc = KL_OK;
    st_resp *r = f->r;
    uint8_t *buf = malloc(KL_PROTO_MAX_PAYLOAD);
    unsigned char *der = NULL;
    kl_tlv_w w;
    ENSURE(buf, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < count; i++) {
        int n = i2d_X509(certs[i], &der);
        ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode certificate");
        kl_tlv_w_init(&w, buf, f->h->max_payload);
        ENSURE(kl_tlv_put_u8(&w, KL_TAG_INDEX, (uint8_t)i) == KL_PROTO_OK &&
                   kl_tlv_put_u8(&w, KL_TAG_COUNT, (uint8_t)count) == KL_PROTO_OK &&
                   kl_tlv_put(&w, tag, der, (size_t)n) == KL_PROTO_OK &&
                   (i != 0 || !first || first(f, &w) == 0),
               KL_EPOLICY, "%s part %d (%d-byte certificate) exceeds the device's %u-byte limit",
               kl_proto_msg_name(msg), i, n, f->h->max_payload);
        OPENSSL_free(der);
        der = NULL;
        TRY(st_req(f->fx, msg, &w, r));
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
    return rc;
}

/* Leaf + intermediates; the device confirms the leaf's SHA-256. */
static kl_rc st_step_putcert(st_flow *f)
{
    X509 *parts[KL_PROTO_MAX_PAYLOAD / 256];
    int nparts = 0, have_fp = 0;
    uint8_t dev_fp[32];
    unsigned char *der = NULL;
    int n = i2d_X509(f->cert, &der);
    if (n <= 0) {
        return kl_fail(KL_EINTERNAL, "cannot encode certificate");
    }
    SHA256(der, (size_t)n, f->fp);
    OPENSSL_free(der);
    parts[nparts++] = f->cert;
    for (int i = 0; i < sk_X509_num(f->st->chain) && nparts < (int)(KL_PROTO_MAX_PAYLOAD / 256);
         i++) {
        X509 *c = sk_X509_value(f->st->chain, i);
        if (X509_check_issued(c, c) != X509_V_OK) {
            parts[nparts++] = c; /* self-signed: the root goes in PUTTRUST */
        }
    }
    st_fixture_progress(f->fx, ST_PH_PUTCERT, "PUTCERT %s", f->o->cert_serial);
    kl_rc rc = st_station_claim_keep(f->st, f->fx, f->h->hw_serial);
    if (rc == KL_OK) {
        rc = st_put_parts(f, KL_MSG_PUTCERT, KL_TAG_CERT, parts, nparts, NULL, dev_fp, &have_fp);
    }
    if (rc == KL_OK && (!have_fp || CRYPTO_memcmp(dev_fp, f->fp, sizeof dev_fp) != 0)) {
        rc = kl_fail(KL_EAUTH, "device did not confirm the certificate fingerprint after PUTCERT");
    }
    return rc;
}

/* What PUTTRUST's first part carries besides the first anchor: the EST URL. Trust items the
 * device keeps with its anchors (such as firmware key hashes) go here. Nonzero: no room. */
static int st_trust_first_part(st_flow *f, kl_tlv_w *w)
{
    const char *url = f->st->cfg.est_url;
    if (url[0] && kl_tlv_put_str(w, KL_TAG_EST_URL, url) != KL_PROTO_OK) {
        return -1;
    }
    /* [station] firmware-keys: the device checks update images against them (firmware.md) */
    const st_config *c = &f->st->cfg;
    if (c->nfw_keys &&
        kl_tlv_put(w, KL_TAG_FW_KEYS, c->fw_keys, KL_PROTO_PUB_LEN * c->nfw_keys) != KL_PROTO_OK) {
        return -1;
    }
    return 0;
}

static kl_rc st_step_puttrust(st_flow *f)
{
    X509 *anchors[8];
    int na = 0;
    st_fixture_progress(f->fx, ST_PH_PUTTRUST, "PUTTRUST");
    for (int i = 0; i < sk_X509_num(f->st->anchors) && na < 8; i++) {
        anchors[na++] = sk_X509_value(f->st->anchors, i);
    }
    return st_put_parts(f, KL_MSG_PUTTRUST, KL_TAG_ANCHOR, anchors, na, st_trust_first_part, NULL,
                        NULL);
}

/* The device proves it holds the key of the certificate just issued; the inventory records
 * the passed CHALLENGE before LOCK (a restarted station activates on that record). */
static kl_rc st_step_challenge(st_flow *f)
{
    int forged = 0;
    st_outcome *o = f->o;
    st_fixture_progress(f->fx, ST_PH_CHALLENGE, "CHALLENGE");
    kl_rc rc = st_station_claim_keep(f->st, f->fx, f->h->hw_serial);
    if (rc == KL_OK) {
        rc = st_challenge(f->fx, f->h, f->cert, f->r, &forged);
    }
    if (rc != KL_OK && forged) {
        /* The device cannot sign with the certified key: that certificate must never be
         * trusted. Revoke it now rather than leave it pending. */
        char why[300];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        kl_rc r2 = cac_abandon(f->st->cac, o->cert_serial, ST_REASON_KEY_COMPROMISE);
        rc = kl_fail(KL_EAUTH,
                     "CHALLENGE signature does not verify against certificate %s (%s); "
                     "certificate %s",
                     o->cert_serial, why,
                     r2 == KL_OK ? "revoked (keyCompromise)" : "could NOT be revoked");
        snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
        (void)st_inv_put(f->st, f->h, o->cert_serial, "failed", "%s", o->error);
        f->own_row = 0; /* written */
        return rc;
    }
    if (rc != KL_OK) {
        return rc;
    }
    rc = st_inv_put(f->st, f->h, o->cert_serial, "pending",
                    "challenge passed for %s on %s; locking", o->cert_serial, f->fx->name);
    if (rc == KL_OK) {
        f->challenged = 1;
    }
    return rc;
}

static kl_rc st_step_lock(st_flow *f)
{
    uint8_t buf[64], state = 0;
    kl_tlv_w w;
    st_fixture_progress(f->fx, ST_PH_LOCK, "LOCK");
    kl_rc rc = st_station_claim_keep(f->st, f->fx, f->h->hw_serial);
    if (rc != KL_OK) {
        return rc;
    }
    kl_tlv_w_init(&w, buf, sizeof buf);
    (void)kl_tlv_put(&w, KL_TAG_CONFIRM, f->fp, sizeof f->fp);
    rc = st_req(f->fx, KL_MSG_LOCK, &w, f->r);
    if (rc == KL_OK &&
        (kl_tlv_get_u8(f->r->payload, f->r->len, KL_TAG_STATE, &state) != KL_PROTO_OK ||
         state != KL_STATE_LOCKED)) {
        rc = kl_fail(KL_EINPUT, "device did not report LOCKED after LOCK");
    }
    return rc;
}

/* Locked: the certificate becomes valid and the inventory says provisioned. */
static kl_rc st_step_record(st_flow *f)
{
    const char *serial = f->o->cert_serial;
    kl_rc rc = cac_activate(f->st->cac, serial);
    if (rc == KL_EPOLICY) {
        /* refused, not failed (another valid certificate of this device, one revoked by a
         * sweep): the next HELLO would be refused the same, so promise nothing */
        f->own_row = 0;
        return kl_wrap(rc, "device locked, but %s refused", serial);
    }
    if (rc == KL_OK) {
        rc = st_inv_put(f->st, f->h, serial, "provisioned", "locked on %s", f->fx->name);
    }
    if (rc != KL_OK) {
        f->own_row = 0; /* keep "challenge passed": the next HELLO activates */
        return kl_wrap(rc,
                       "device locked but activating %s failed (it is activated when the device "
                       "is seen again)",
                       serial);
    }
    return KL_OK;
}

/* ---- the table ------------------------------------------------------------------------------
 * Every wanted step runs in this order; the first failure ends the flow (st_flow_finish
 * records it under the step's phase). A new step (a Matter attestation write, ...) is a row
 * with its own `wanted`: between PUTTRUST and CHALLENGE for data the device stores before it
 * is locked. `phase` is what the progress display, the results file and the dashboard show. */
static const st_step st_steps[] = {
    {"claim", ST_PH_HELLO, NULL, st_step_claim},
    {"decide", ST_PH_HELLO, NULL, st_step_decide},
    {"revoke", ST_PH_HELLO, st_want_revoke, st_step_revoke},
    {"refuse", ST_PH_HELLO, st_want_refuse, st_step_refuse},
    {"prove", ST_PH_CHALLENGE, st_want_locked, st_step_prove},
    {"activate", ST_PH_LOCK, st_want_activate, st_step_activate},
    {"resume", ST_PH_ISSUE, st_want_resume, st_step_resume},
    {"reserve", ST_PH_ISSUE, st_want_fresh, st_step_reserve},
    {"key", ST_PH_KEY, st_want_fresh, st_step_key},
    {"csr", ST_PH_CSR, st_want_fresh, st_step_csr},
    {"issue", ST_PH_ISSUE, st_want_fresh, st_step_issue},
    {"putcert", ST_PH_PUTCERT, st_want_deliver, st_step_putcert},
    {"puttrust", ST_PH_PUTTRUST, st_want_deliver, st_step_puttrust},
    {"matter", ST_PH_MATTER, st_want_matter, st_step_matter},
    {"challenge", ST_PH_CHALLENGE, st_want_deliver, st_step_challenge},
    {"lock", ST_PH_LOCK, st_want_deliver, st_step_lock},
    {"record", ST_PH_LOCK, st_want_deliver, st_step_record},
};

const st_step *st_flow_steps(size_t *n)
{
    *n = sizeof st_steps / sizeof st_steps[0];
    return st_steps;
}

/* A failed flow: the inventory row (if this flow wrote one) says so. The pending certificate
 * (if any) stays: the device may come back and resume. After a passed CHALLENGE the detail
 * keeps its "challenge passed" prefix: LOCK may have reached the device even though its answer
 * did not come back (unplug, power cut), and only that record lets the next HELLO (locked)
 * activate the certificate instead of refusing a device this station locked itself. */
static void st_flow_failed(st_flow *f)
{
    st_outcome *o = f->o;
    if (!o->error[0]) {
        snprintf(o->error, sizeof o->error, "%s", kl_errmsg());
    }
    if (!f->own_row) {
        return;
    }
    kl_rc ir = f->challenged ? st_inv_put(f->st, f->h, o->cert_serial, "failed",
                                          "challenge passed for %s; %s on %s: %s", o->cert_serial,
                                          st_phase_name(o->phase), f->fx->name, o->error)
                             : st_inv_put(f->st, f->h, o->cert_serial, "failed", "%s on %s: %s",
                                          st_phase_name(o->phase), f->fx->name, o->error);
    if (ir != KL_OK) {
        st_event(f->st, 1, "%s: %s: inventory not updated: %s", f->fx->name, f->h->hw_serial,
                 kl_errmsg());
    }
}

static void st_flow_free(st_flow *f)
{
    if (f->claimed) {
        st_station_release(f->st, f->fx, f->h->hw_serial);
    }
    for (size_t i = 0; i < ST_MAX_KNOWN; i++) {
        X509_free(f->kcert[i]);
    }
    X509_free(f->cert);
    EVP_PKEY_free(f->key);
    free(f->csr);
    free(f->r);
}

void st_flow_run(st_station *st, st_fixture *fx, st_outcome *o)
{
    st_flow f = {.st = st, .fx = fx, .o = o, .h = &o->hello, .r = malloc(sizeof(st_resp))};
    long t0 = st_now_ms();
    uint64_t tx0 = fx->link.bytes_tx, rx0 = fx->link.bytes_rx, lk0 = fx->link.link_us;
    unsigned rt0 = fx->link.retransmits;
    o->mode = st->cfg.mode;
    o->phase = ST_PH_HELLO;
    o->ok = 1;
    if (!f.r) {
        o->ok = 0;
        snprintf(o->error, sizeof o->error, "out of memory");
    }
    for (size_t i = 0; o->ok && i < sizeof st_steps / sizeof st_steps[0]; i++) {
        const st_step *s = &st_steps[i];
        if (s->wanted && !s->wanted(&f)) {
            continue;
        }
        o->phase = s->phase;
        st_fixture_step(fx, s->name);
        long t = st_now_ms();
        if (s->run(&f) != KL_OK) {
            o->ok = 0;
            st_flow_failed(&f);
        } else if (s->phase != ST_PH_HELLO) {
            /* ms.hello is the HELLO exchange itself (the fixture thread times it) */
            o->ms[s->phase] += st_now_ms() - t;
            o->ran |= 1u << s->phase;
        }
    }
    st_fixture_step(fx, NULL);
    st_flow_free(&f);
    o->total_ms = st_now_ms() - t0 + o->ms[ST_PH_HELLO];
    /* the HELLO exchange (timed by the fixture thread) is all line and device */
    o->link_ms = (long)((fx->link.link_us - lk0 + 500) / 1000) + o->ms[ST_PH_HELLO];
    o->bytes_tx += fx->link.bytes_tx - tx0;
    o->bytes_rx += fx->link.bytes_rx - rx0;
    o->retransmits += fx->link.retransmits - rt0;
}
