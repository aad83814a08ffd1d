/* keyline-provision: the station's requests to keyline-cad (docs/ca-protocol.md, docs/station.md
 * "keyline-cad"). The station holds no PIN, no token and no store: every certificate, inventory
 * row, claim, revocation and audit entry is one request here, checked by keyline-cad against
 * the station's role and profile. Typed wrappers over cac_call, one per op. */
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_hostcrypto.h"
#include "st.h"

/* RFC 5280 5.3.1 CRLReason names the station states on its own (--reprovision --reason R);
 * keyline-cad's revoke op takes exactly these. */
static const char *const st_reasons[] = {
    [0] = "unspecified", [1] = "keyCompromise",        [3] = "affiliationChanged",
    [4] = "superseded",  [5] = "cessationOfOperation",
};
#define ST_NREASONS (int)(sizeof st_reasons / sizeof st_reasons[0])

int st_reason_from_name(const char *name)
{
    for (int i = 0; i < ST_NREASONS; i++) {
        if (st_reasons[i] && strcmp(st_reasons[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

const char *st_reason_name(int reason)
{
    return reason >= 0 && reason < ST_NREASONS && st_reasons[reason] ? st_reasons[reason]
                                                                     : "unspecified";
}

static kl_rc st_x509(const uint8_t *der, size_t len, X509 **out)
{
    const unsigned char *p = der;
    *out = d2i_X509(NULL, &p, (long)len);
    if (!*out || p != der + len) {
        X509_free(*out);
        *out = NULL;
        ERR_clear_error();
        return kl_fail(KL_EINPUT, "keyline-cad sent a certificate that does not parse");
    }
    return KL_OK;
}

/* End the request in `req`, send it and drop the answer (ops that answer nothing); frees req. */
static kl_rc st_cad_send(st_station *st, kl_buf *req, kl_rc built)
{
    cac_resp resp;
    memset(&resp, 0, sizeof resp);
    kl_rc rc = built;
    if (rc == KL_OK) {
        rc = cap_msg_end(req);
    }
    if (rc == KL_OK) {
        rc = cac_call(st->cac, req, &resp);
    }
    cac_resp_free(&resp);
    kl_buf_free(req);
    return rc;
}

static void st_cad_cfg_free(cac_cfg *c)
{
    free((char *)c->tls_cert);
    free((char *)c->tls_key);
    free((char *)c->tls_ca);
}

/* [station] cad: one address or a list (cac.h), relative socket paths from the configuration's
 * folder; st->cfg.cad ([cad] socket or the default) when it is not set. A tls: address takes
 * [station] cad-tls-cert, cad-tls-key (read here, as the station's user, and wiped) and
 * cad-tls-ca. */
static kl_rc st_cad_connect(st_station *st, cac_cfg *c)
{
    const char *list = kl_conf_get(st->conf, "station", "cad");
    *c = (cac_cfg){.addrs = list && *list ? list : st->cfg.cad,
                   .base_dir = kl_conf_dir(st->conf),
                   .tls_cert = kl_conf_path(st->conf, "station", "cad-tls-cert"),
                   .tls_key = kl_conf_path(st->conf, "station", "cad-tls-key"),
                   .tls_ca = kl_conf_path(st->conf, "station", "cad-tls-ca"),
                   .timeout_s = (unsigned)st->cfg.cad_timeout};
    return cac_open_cfg(&st->cac, c, NULL, 0);
}

kl_rc st_cad_open(st_station *st)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    cac_cfg cad;
    char issuer[128];
    kl_buf_init(&req, 4096, 0);
    memset(&resp, 0, sizeof resp);
    rc = st_cad_connect(st, &cad);
    if (rc != KL_OK) {
        kl_wrap(rc, "keyline-cad at %s", cad.addrs);
        st_cad_cfg_free(&cad);
        goto out;
    }
    st_cad_cfg_free(&cad);
    /* the profile must issue under the CA [station] issuer names, if it names one: a
     * configuration that says factory2 must not quietly provision under factory1 */
    TRY(cap_msg_begin(&req, CAP_OP_PROFILE, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    TRY(cap_get_str(&resp.msg, CAP_T_ISSUER, issuer, sizeof issuer));
    ENSURE(!st->cfg.issuer[0] || strcmp(issuer, st->cfg.issuer) == 0, KL_EUSAGE,
           "[station] issuer is '%s' but keyline-cad's profile '%s' issues under '%s'",
           st->cfg.issuer, st->cfg.profile, issuer);
    snprintf(st->cfg.issuer, sizeof st->cfg.issuer, "%s", issuer);
    ENSURE(cap_get_u64(&resp.msg, CAP_T_DEVICE_CERT, 0) == 1, KL_EUSAGE,
           "keyline-cad's profile '%s' does not make device certificates", st->cfg.profile);
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

/* The CA certificates of the profile (cacerts): its issuing chain, issuer first, up to the
 * root; what follows the root (rollover certificates) is not sent to a device. */
kl_rc st_cad_chain(st_station *st)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    X509 *x = NULL;
    kl_buf_init(&req, 4096, 0);
    memset(&resp, 0, sizeof resp);
    st->chain = sk_X509_new_null();
    ENSURE(st->chain, KL_EINTERNAL, "out of memory");
    TRY(cap_msg_begin(&req, CAP_OP_CACERTS, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    for (size_t i = 0;; i++) {
        const cap_field *f = cap_find(&resp.msg, CAP_T_CA_CERT, i);
        if (!f) {
            break;
        }
        TRY(st_x509(f->val, f->len, &x));
        if (i > 0) {
            /* each next one must be the issuer of the one before */
            X509 *prev = sk_X509_value(st->chain, (int)i - 1);
            ENSURE(X509_check_issued(x, prev) == X509_V_OK, KL_EINPUT,
                   "keyline-cad's CA certificates for profile '%s' are not a chain",
                   st->cfg.profile);
        }
        ENSURE(sk_X509_push(st->chain, x) > 0, KL_EINTERNAL, "out of memory");
        int root = X509_check_issued(x, x) == X509_V_OK;
        x = NULL;
        if (root) {
            break;
        }
    }
out:
    X509_free(x);
    ERR_clear_error();
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

static void st_known_add(st_known *k, X509 *certs[ST_MAX_KNOWN], const uint8_t *der, size_t der_len,
                         const char *serial, int pending, int challenge_passed)
{
    X509 *x = NULL;
    if (k->n >= ST_MAX_KNOWN || st_x509(der, der_len, &x) != KL_OK) {
        return;
    }
    st_known_cert *e = &k->c[k->n];
    memset(e, 0, sizeof *e);
    if (serial) {
        snprintf(e->serial, sizeof e->serial, "%s", serial);
    } else {
        char *hex = NULL;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        hex = bn ? BN_bn2hex(bn) : NULL;
        snprintf(e->serial, sizeof e->serial, "%s", hex ? hex : "");
        OPENSSL_free(hex);
        BN_free(bn);
    }
    for (size_t i = 0; i < k->n; i++) {
        if (strcmp(k->c[i].serial, e->serial) == 0) {
            X509_free(x);
            return;
        }
    }
    e->pending = pending;
    SHA256(der, der_len, e->fp);
    if (kl_p256_pub65(X509_get0_pubkey(x), e->pub) != KL_OK) {
        memset(e->pub, 0, sizeof e->pub);
    }
    ERR_clear_error();
    e->challenge_passed = challenge_passed;
    certs[k->n] = x;
    k->n++;
}

/* known: what keyline-cad holds about hardware serial `id` for the station's profile: the
 * inventory row's certificate (when pending or valid) and every pending certificate of the
 * profile for that device id. certs[i] is the certificate of k->c[i] (free each). */
kl_rc st_known_load(st_station *st, const char *id, st_known *k, X509 *certs[ST_MAX_KNOWN])
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    char state[33], detail[513], serial[65], status[33];
    kl_buf_init(&req, 4096, 0);
    memset(&resp, 0, sizeof resp);
    memset(k, 0, sizeof *k);
    for (size_t i = 0; i < ST_MAX_KNOWN; i++) {
        certs[i] = NULL;
    }
    TRY(cap_msg_begin(&req, CAP_OP_KNOWN, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, id));
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    k->have_row = cap_get_str(&resp.msg, CAP_T_STATE, state, sizeof state) == KL_OK;
    if (cap_get_str(&resp.msg, CAP_T_DETAIL, detail, sizeof detail) != KL_OK) {
        detail[0] = 0;
    }
    const cap_field *cert = cap_find(&resp.msg, CAP_T_CERT, 0);
    if (cert && cap_get_str(&resp.msg, CAP_T_SERIAL, serial, sizeof serial) == KL_OK &&
        cap_get_str(&resp.msg, CAP_T_STATUS, status, sizeof status) == KL_OK &&
        (strcmp(status, "pending") == 0 || strcmp(status, "valid") == 0)) {
        st_known_add(k, certs, cert->val, cert->len, serial, strcmp(status, "pending") == 0,
                     strncmp(detail, "challenge passed", 16) == 0);
    }
    for (size_t i = 0;; i++) {
        const cap_field *f = cap_find(&resp.msg, CAP_T_PEND_CERT, i);
        if (!f) {
            break;
        }
        st_known_add(k, certs, f->val, f->len, NULL, 1, 0);
    }
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc st_cad_inventory(st_station *st, const st_hello *h, const char *cert_serial,
                       const char *state, const char *detail)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    char d[513];
    kl_buf_init(&req, 4096, 0);
    memset(&resp, 0, sizeof resp);
    /* a string field carries no control bytes (a device's error text may) */
    snprintf(d, sizeof d, "%s", detail && *detail ? detail : "-");
    for (char *p = d; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *p = ' ';
        }
    }
    TRY(cap_msg_begin(&req, CAP_OP_INVENTORY, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, h->hw_serial));
    TRY(cap_put_str(&req, CAP_T_MODEL, h->model[0] ? h->model : "?"));
    TRY(cap_put_str(&req, CAP_T_STATE, state));
    TRY(cap_put_str(&req, CAP_T_DETAIL, d));
    if (cert_serial && *cert_serial) {
        TRY(cap_put_str(&req, CAP_T_SERIAL, cert_serial));
    }
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc st_cad_revoke(st_station *st, const char *serial, int reason)
{
    kl_buf req;
    kl_buf_init(&req, 1024, 0);
    kl_rc rc = cap_msg_begin(&req, CAP_OP_REVOKE, 0);
    if (rc == KL_OK) {
        rc = cap_put_str(&req, CAP_T_SERIAL, serial);
    }
    if (rc == KL_OK) {
        rc = cap_put_u64(&req, CAP_T_REASON, (uint64_t)reason);
    }
    return st_cad_send(st, &req, rc);
}

kl_rc st_station_sweep(st_station *st, unsigned *revoked)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    kl_buf_init(&req, 1024, 0);
    memset(&resp, 0, sizeof resp);
    *revoked = 0;
    TRY(cap_msg_begin(&req, CAP_OP_SWEEP, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, st->cfg.profile));
    TRY(cap_put_u64(&req, CAP_T_AGE, (uint64_t)st->cfg.pending_window));
    TRY(cap_put_str(&req, CAP_T_INSTANCE, st->instance));
    TRY(cap_msg_end(&req));
    TRY(cac_call(st->cac, &req, &resp));
    *revoked = (unsigned)cap_get_u64(&resp.msg, CAP_T_COUNT, 0);
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc st_cad_proof_failed(st_station *st, const char *device_id, const char *serial,
                          const char *msg)
{
    kl_buf req;
    char m[1024];
    kl_buf_init(&req, 4096, 0);
    snprintf(m, sizeof m, "%s", msg);
    for (char *p = m; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *p = ' ';
        }
    }
    kl_rc rc = cap_msg_begin(&req, CAP_OP_PROOF_FAIL, 0);
    if (rc == KL_OK) {
        rc = cap_put_str(&req, CAP_T_DEVICE_ID, device_id);
    }
    if (rc == KL_OK) {
        rc = cap_put_str(&req, CAP_T_SERIAL, serial);
    }
    if (rc == KL_OK) {
        rc = cap_put_str(&req, CAP_T_MESSAGE, m);
    }
    return st_cad_send(st, &req, rc);
}

/* claim / release: the holder is this process as keyline-cad sees it (SO_PEERCRED pid). */
static kl_rc st_cad_claim_op(st_station *st, cap_op op, const char *serial, const char *where,
                             char *other, size_t otherlen)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    kl_buf_init(&req, 1024, 0);
    memset(&resp, 0, sizeof resp);
    if (other && otherlen) {
        other[0] = 0;
    }
    TRY(cap_msg_begin(&req, op, 0));
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, serial));
    TRY(cap_put_str(&req, CAP_T_INSTANCE, st->instance));
    TRY(cap_put_str(&req, CAP_T_FIXTURE, where));
    if (op == CAP_OP_CLAIM) {
        TRY(cap_put_u64(&req, CAP_T_LEASE, (uint64_t)st->claim_lease_s));
    }
    TRY(cap_msg_end(&req));
    rc = cac_call(st->cac, &req, &resp);
    if (rc == KL_EEXIST && other && otherlen &&
        cap_get_str(&resp.msg, CAP_T_HOLDER, other, otherlen) != KL_OK) {
        snprintf(other, otherlen, "another station");
    }
out:
    cac_resp_free(&resp);
    kl_buf_free(&req);
    return rc;
}

kl_rc st_cad_claim(st_station *st, const char *serial, const char *where, char *other,
                   size_t otherlen)
{
    return st_cad_claim_op(st, CAP_OP_CLAIM, serial, where, other, otherlen);
}

kl_rc st_cad_release(st_station *st, const char *serial, const char *where)
{
    return st_cad_claim_op(st, CAP_OP_RELEASE, serial, where, NULL, 0);
}
