/* keyline-cad: the request table. Each op is one function; the table says which need a
 * profile the caller's role may use. Policy is enforced here and in ca_issue(), where the key
 * is: a front end only says what it authenticated. */
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cad.h"
#include "ca_backend.h"
#include "kl_log.h"
#include "kl_matter.h"
#include "kl_utf8.h"
#include "store.h"
#include "matter_seal.h"
#include "store_matter.h"
#include "store_order.h"

typedef struct {
    cad *d;
    const cad_peer *peer;
    const cap_msg *req;
    kl_buf *rsp;
    const cad_profile *prof; /* ops with a profile: checked against the peer's roles */
    char holder[512];        /* a refused claim: who holds the device */
} cad_call;

typedef kl_rc (*cad_fn)(cad_call *c);

/* --- helpers -------------------------------------------------------------------------- */

static kl_rc cad_str(const cad_call *c, cap_tag tag, char *out, size_t cap)
{
    kl_rc rc = cap_get_str(c->req, tag, out, cap);
    if (rc == KL_ENOTFOUND) {
        out[0] = 0;
        return KL_OK;
    }
    return rc;
}

static void cad_roles_text(const cad *d, uint32_t roles, char *out, size_t cap)
{
    out[0] = 0;
    for (size_t i = 0; i < d->cfg.nroles; i++) {
        if (roles & (UINT32_C(1) << i)) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? "," : "", d->cfg.roles[i].name);
        }
    }
    if (!out[0]) {
        snprintf(out, cap, "(none)");
    }
}

/* The audit entry of a refusal: who asked for what they may not have. */
static void cad_audit_refusal(const cad_call *c, const char *detail)
{
    if (store_audit_append(ca_store(c->d->ca), c->peer->actor, "refused", detail) != KL_OK) {
        kl_warn("cad: audit of a refusal failed: %s", kl_errmsg());
    }
}

/* The refusal is an answer and an audit entry: who asked for what they may not have. */
static kl_rc cad_refuse_profile(cad_call *c, const char *profile)
{
    char roles[256];
    cad_roles_text(c->d, c->peer->roles, roles, sizeof roles);
    char detail[512];
    snprintf(detail, sizeof detail, "%s: profile '%s' is not open to role %s",
             cap_op_name(c->req->op), profile, roles);
    cad_audit_refusal(c, detail);
    return kl_fail(KL_EPOLICY, "profile '%s' is not open to role %s (%s)", profile, roles,
                   c->peer->user);
}

/* The ops the peer's roles may ask ([role NAME] ops). */
static uint32_t cad_roles_ops(const cad *d, uint32_t roles)
{
    uint32_t ops = 0;
    for (size_t i = 0; i < d->cfg.nroles; i++) {
        if (roles & (UINT32_C(1) << i)) {
            ops |= d->cfg.roles[i].ops;
        }
    }
    return ops;
}

/* An op none of the peer's roles names: refused and audited, as a profile it lacks. */
static kl_rc cad_refuse_op(cad_call *c)
{
    char roles[256], detail[512];
    cad_roles_text(c->d, c->peer->roles, roles, sizeof roles);
    snprintf(detail, sizeof detail, "%s: op not open to role %s", cap_op_name(c->req->op), roles);
    cad_audit_refusal(c, detail);
    return kl_fail(KL_EPOLICY, "op %s is not open to role %s (%s)", cap_op_name(c->req->op), roles,
                   c->peer->user);
}

/* A station name none of the peer's roles may give ([role NAME] stations): refused and audited.
 * Production orders are made for a station name, which the station states itself; without
 * this a station could use up or close the orders of another station of its role. A request
 * without a station (or with a malformed one, which the op itself refuses) passes. */
static kl_rc cad_station_check(cad_call *c)
{
    char station[CAD_NAME_MAX + 1], roles[256], detail[512];
    if (cap_get_str(c->req, CAP_T_STATION, station, sizeof station) != KL_OK ||
        cad_roles_station_ok(&c->d->cfg, c->peer->roles, station)) {
        return KL_OK;
    }
    cad_roles_text(c->d, c->peer->roles, roles, sizeof roles);
    snprintf(detail, sizeof detail, "%s: station '%s' is not one of the stations of role %s",
             cap_op_name(c->req->op), station, roles);
    cad_audit_refusal(c, detail);
    return kl_fail(KL_EPOLICY,
                   "station '%s' is not one of the stations of role %s ([role] stations)", station,
                   roles);
}

static kl_rc cad_profile_for(cad_call *c)
{
    char name[CAD_NAME_MAX + 1];
    kl_rc rc = cap_get_str(c->req, CAP_T_PROFILE, name, sizeof name);
    if (rc != KL_OK) {
        return kl_fail(KL_EINPUT, "profile name missing or longer than %d bytes", CAD_NAME_MAX);
    }
    c->prof = cad_profile_find(&c->d->cfg, name);
    if (!c->prof) {
        return kl_fail(KL_ENOTFOUND, "no profile '%s'", name);
    }
    if (!(c->prof->clients & c->peer->roles)) {
        return cad_refuse_profile(c, name);
    }
    return KL_OK;
}

/* Does one of the peer's profiles issue with (issuer, template)? (activate, abandon, poll,
 * the station's ops on a certificate, and whose a device's row is). A row without a template
 * was asked by no profile: every certificate keyline records carries the template it was made
 * from (ca_issue, CA and OCSP signer certificates, imported chains as "external"), so such a
 * row was written outside keyline (by hand, another tool, a forged row): it belongs to no
 * front-end role, only to the officer. */
static int cad_peer_may(const cad_call *c, const char *issuer, const char *template_name)
{
    if (!issuer || !template_name) {
        return 0;
    }
    for (size_t i = 0; i < c->d->cfg.nprofiles; i++) {
        const cad_profile *p = &c->d->cfg.profiles[i];
        if ((p->clients & c->peer->roles) && strcmp(p->issuer, issuer) == 0 &&
            strcmp(p->template_name, template_name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The audit actor: the peer as the daemon knows it, plus what the front end authenticated. */
static kl_rc cad_actor(const cad_call *c, char *out, size_t cap)
{
    kl_rc rc = KL_OK;
    char method[17], serial[65], user[257], shown[4 * sizeof user];
    TRY(cad_str(c, CAP_T_AUTH, method, sizeof method));
    TRY(cad_str(c, CAP_T_AUTH_SERIAL, serial, sizeof serial));
    TRY(cad_str(c, CAP_T_AUTH_USER, user, sizeof user));
    if (strcmp(method, "cert") == 0) {
        ENSURE(serial[0], KL_EINPUT, "auth cert without the client certificate's serial");
        snprintf(out, cap, "%.400s; client cert %.64s", c->peer->actor, serial);
    } else if (strcmp(method, "basic") == 0) {
        ENSURE(user[0], KL_EINPUT, "auth basic without the user name");
        /* as the front end sent it, but no byte of it can start a part of the actor of its
         * own ("x; client cert 01") or a line of the log */
        kl_ascii_escape(user, ";", shown, sizeof shown);
        snprintf(out, cap, "%.400s; basic user %.600s", c->peer->actor, shown);
    } else if (strcmp(method, "station") == 0 || strcmp(method, "none") == 0) {
        snprintf(out, cap, "%.400s; %.16s", c->peer->actor, method);
    } else {
        ENSURE(0, KL_EINPUT, "unknown auth method '%s' (cert, basic, station, none)", method);
    }
out:
    return rc;
}

/* The subject serialNumber of a name (IEEE 802.1AR: the hardware serial) as the template
 * policy reads it: the UTF-8 of whatever string type it is (a BMPString or UTF8String that fits
 * PrintableString is re-encoded as one, tpl_policy.c). 0 absent (out ""), 1 read, -1 there but
 * not readable here (longer than out, not a string; out ""): no value the policy takes is, so
 * a CSR's is left to it, which refuses it and says why (not "no serialNumber"). */
static int cad_name_sn(const X509_NAME *n, char *out, size_t cap)
{
    out[0] = 0;
    int i = X509_NAME_get_index_by_NID(n, NID_serialNumber, -1);
    if (i < 0) {
        return 0;
    }
    unsigned char *u = NULL;
    int len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i)));
    int got = len >= 0 && (size_t)len < cap && !memchr(u, 0, (size_t)len);
    if (got) {
        memcpy(out, u, (size_t)len);
        out[len] = 0;
    }
    OPENSSL_free(u);
    return got ? 1 : -1;
}

/* A valid certificate is only as good as the CAs above it: its issuing CA certificate and every
 * CA certificate up to the root must be valid in the store and within their recorded dates (a
 * revoked factory CA takes every IDevID under it with it). ca_issuer_check walks the cached
 * chain with one status lookup per CA and no cache, so a revocation by the officer takes effect
 * on the next request. KL_EAUTH with its reason; the store's errors as they are. */
static kl_rc cad_issuer_chain_status(const cad_call *c, const char *serial, const char *issuer)
{
    kl_rc rc = ca_issuer_check(c->d->ca, issuer, time(NULL));
    if (rc == KL_EPOLICY) {
        rc = kl_fail(KL_EAUTH, "certificate %s: its issuing CA is not valid: %s", serial,
                     kl_errmsg());
    }
    return rc;
}

/* The client certificate's store row by serial. With the certificate itself (auth-cert: a
 * front end that has not asked cert-status about it), also what cert-status by certificate
 * checks (ca_cert_check_row: byte for byte the one recorded under that serial, its signature
 * verified with the recorded issuer's key, valid, within its dates), and that auth-serial is
 * its serial; *x gets it parsed. KL_EAUTH when it is not ours or not acceptable. */
static kl_rc cad_client_row(const cad_call *c, const char *norm, store_cert *sc, X509 **x)
{
    kl_rc rc = KL_OK;
    char *hex = NULL;
    const cap_field *f = cap_find(c->req, CAP_T_AUTH_CERT, 0);
    *x = NULL;
    if (!f) {
        rc = store_cert_get(ca_store(c->d->ca), norm, sc);
        return rc == KL_ENOTFOUND
                   ? kl_fail(KL_EAUTH, "client certificate %s was not issued by this CA", norm)
                   : rc;
    }
    ENSURE(ca_x509_load(f->val, f->len, x, NULL) == KL_OK, KL_EAUTH,
           "client certificate %s: cannot parse it", norm);
    hex = ca_serial_hex(X509_get0_serialNumber(*x));
    ENSURE(hex, KL_EINTERNAL, "out of memory");
    ENSURE(strcmp(hex, norm) == 0, KL_EAUTH, "client certificate %s: auth-serial says %s", hex,
           norm);
    TRY(ca_cert_check_row(c->d->ca, *x, f->val, f->len, sc));
out:
    OPENSSL_free(hex);
    return rc;
}

/* IEEE 802.1AR: the device the certificate x belongs to is the one its row records, else its
 * subject serialNumber; both present and different is refused. */
static kl_rc cad_client_sn(const char *norm, const store_cert *sc, X509 *x, char *dev, size_t cap)
{
    kl_rc rc = KL_OK;
    char sn[129];
    (void)cad_name_sn(X509_get_subject_name(x), sn, sizeof sn);
    if (sc->device_id && *sc->device_id) {
        ENSURE(!sn[0] || strcmp(sn, sc->device_id) == 0, KL_EAUTH,
               "client certificate %s: its subject serialNumber is not the device id %s recorded "
               "for it",
               norm, sc->device_id);
        snprintf(dev, cap, "%s", sc->device_id);
    } else {
        snprintf(dev, cap, "%s", sn);
    }
out:
    return rc;
}

/* The device a client certificate belongs to: its store row's device id, else its subject
 * serialNumber (which the template checked at issuance). KL_EAUTH when it is not ours or not
 * valid. */
static kl_rc cad_client_device(const cad_call *c, const char *serial, char *dev, size_t cap)
{
    kl_rc rc = KL_OK;
    char norm[65];
    X509 *x = NULL;
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    dev[0] = 0;
    TRY(ca_serial_normalise(serial, norm, sizeof norm));
    TRY(cad_client_row(c, norm, &sc, &x));
    ENSURE(strcmp(sc.status, STORE_ST_VALID) == 0, KL_EAUTH, "client certificate %s is %s", norm,
           sc.status);
    /* what cert-status by serial answers, so that a front end may leave the per-request check
     * to this request (keyline-estd on a keep-alive connection) */
    ENSURE(!sc.not_after || time(NULL) < sc.not_after, KL_EAUTH,
           "client certificate %s has expired", norm);
    TRY(cad_issuer_chain_status(c, norm, sc.issuer));
    if (x) {
        TRY(cad_client_sn(norm, &sc, x, dev, cap));
    } else if (sc.device_id && *sc.device_id) {
        snprintf(dev, cap, "%s", sc.device_id);
    } else if (sc.der && ca_x509_load(sc.der, sc.der_len, &x, NULL) == KL_OK) {
        (void)cad_name_sn(X509_get_subject_name(x), dev, cap);
    }
out:
    X509_free(x);
    store_cert_free(&sc);
    return rc;
}

/* IEEE 802.1AR: the device id a request is issued for. A certificate-authenticated requester
 * stays bound to the device its chain started with (never one the front end or the CSR names
 * instead); a certificate that belongs to no device asks for no device. Other requesters
 * (HTTP Basic bootstrap, the station) name the device. A device template's certificate is
 * never issued without the device id; ca_issue then checks the CSR's serialNumber against
 * it. KL_EPOLICY with the reason. */
static kl_rc cad_device_bind(const cad_call *c, const ca_csr *csr, const char *bound,
                             char *device_id, size_t cap)
{
    kl_rc rc = KL_OK;
    char serial[65] = "", sn[129];
    ca_tpl_info ti;
    TRY(cad_str(c, CAP_T_DEVICE_ID, device_id, cap));
    TRY(ca_template_info(c->d->ca, c->prof->template_name, &ti));
    int has_sn = cad_name_sn(X509_REQ_get_subject_name(ca_csr_req(csr)), sn, sizeof sn);
    if (bound) {
        TRY(cad_str(c, CAP_T_AUTH_SERIAL, serial, sizeof serial));
        if (!bound[0]) {
            ENSURE(!device_id[0] && !sn[0] && !ti.device_cert, KL_EPOLICY,
                   "client certificate %s belongs to no device (no device id recorded for it, no "
                   "serialNumber in its subject): it cannot enroll for %s",
                   serial, ti.device_cert ? "a device certificate" : "a device id");
        }
        ENSURE(!device_id[0] || strcmp(device_id, bound) == 0, KL_EPOLICY,
               "client certificate %s belongs to device '%s', not '%s'", serial, bound, device_id);
        ENSURE(!sn[0] || strcmp(sn, bound) == 0, KL_EPOLICY,
               "CSR subject serialNumber is not '%s', the device client certificate %s belongs to",
               bound, serial);
        snprintf(device_id, cap, "%s", bound);
    } else if (!device_id[0] && sn[0]) {
        snprintf(device_id, cap, "%s", sn);
    }
    ENSURE((device_id[0] && sn[0]) || !ti.device_cert || has_sn < 0, KL_EPOLICY,
           "template %s makes device certificates: the CSR subject needs the device's "
           "serialNumber%s%s",
           c->prof->template_name, device_id[0] ? " " : "", device_id);
out:
    return rc;
}

/* auth = cert: the client certificate checked (cad_client_device) before anything else, into
 * bound (its device, "" none), and *by_cert 1. Other methods: *by_cert 0. */
static kl_rc cad_client_bound(const cad_call *c, char *bound, size_t cap, int *by_cert)
{
    kl_rc rc = KL_OK;
    char method[17], serial[65];
    bound[0] = 0;
    TRY(cad_str(c, CAP_T_AUTH, method, sizeof method));
    *by_cert = strcmp(method, "cert") == 0;
    ENSURE(*by_cert || !cap_find(c->req, CAP_T_AUTH_CERT, 0), KL_EINPUT,
           "auth-cert goes with auth cert, not %s", method);
    if (*by_cert) {
        TRY(cad_str(c, CAP_T_AUTH_SERIAL, serial, sizeof serial));
        TRY(cad_client_device(c, serial, bound, cap));
    }
out:
    return rc;
}

static kl_rc cad_put_cert(kl_buf *rsp, cap_tag tag, X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "i2d_X509");
    }
    kl_rc rc = cap_put_bytes(rsp, tag, der, (size_t)n);
    OPENSSL_free(der);
    return rc;
}

/* --- ops ------------------------------------------------------------------------------ */

static kl_rc cad_op_hello(cad_call *c)
{
    kl_rc rc = KL_OK;
    uint64_t v = cap_get_u64(c->req, CAP_T_VERSION, 0);
    ENSURE(v == CAP_VERSION, KL_EUSAGE, "client speaks version %llu, keyline-cad %d",
           (unsigned long long)v, CAP_VERSION);
    TRY(cap_put_u64(c->rsp, CAP_T_VERSION, CAP_VERSION));
    for (size_t i = 0; i < c->d->cfg.nroles; i++) {
        if (c->peer->roles & (UINT32_C(1) << i)) {
            TRY(cap_put_str(c->rsp, CAP_T_ROLE, c->d->cfg.roles[i].name));
        }
    }
out:
    return rc;
}

/* What issue and submit share: the actor, the CSR parsed once, the bound device id, and the
 * request for the profile's CA and template. Free with cad_prep_free. */
typedef struct {
    char actor[1024];
    char device_id[129];
    ca_csr *csr;
    ca_issue_req ir;
} cad_prep;

static kl_rc cad_prepare(cad_call *c, cad_prep *p)
{
    kl_rc rc = KL_OK;
    const cap_field *f = cap_find(c->req, CAP_T_CSR, 0);
    memset(p, 0, sizeof *p);
    char bound[129];
    int by_cert = 0;
    TRY(cad_actor(c, p->actor, sizeof p->actor));
    TRY(cad_client_bound(c, bound, sizeof bound, &by_cert));
    TRY(ca_csr_load(f->val, f->len, &p->csr));
    TRY(cad_device_bind(c, p->csr, by_cert ? bound : NULL, p->device_id, sizeof p->device_id));
    p->ir = (ca_issue_req){
        .issuer = c->prof->issuer,
        .template_name = c->prof->template_name,
        .csr_der = f->val,
        .csr_len = f->len,
        .csr = p->csr,
        .device_id = p->device_id[0] ? p->device_id : NULL,
        .actor = p->actor,
    };
out:
    return rc;
}

static void cad_prep_free(cad_prep *p)
{
    ca_csr_free(p->csr);
    p->csr = NULL;
}

/* open, or what stops an order: closed, expired, exhausted */
static const char *cad_order_state(const store_order *o)
{
    if (strcmp(o->state, STORE_ORDER_OPEN) != 0) {
        return o->state;
    }
    return o->expires <= time(NULL) ? "expired" : o->issued >= o->count ? "exhausted" : "open";
}

/* The production order a station's certificate counts against (docs/station.md "Production
 * orders"). A profile with orders issues only under one: the station names itself
 * (CAP_T_STATION, [station] id) and must have an open order whose model is the CSR's CN. The
 * count itself is taken with the certificate's insert (store_order.c); this only refuses early
 * with a clear reason. order_id "" when the profile has no orders. */
static kl_rc cad_order_for(cad_call *c, const ca_csr *csr, char *order_id, size_t cap)
{
    kl_rc rc = KL_OK;
    char station[65], cn[129] = "";
    int controlled = 0;
    store_order o;
    memset(&o, 0, sizeof o);
    order_id[0] = 0;
    TRY(cad_str(c, CAP_T_STATION, station, sizeof station));
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(ca_csr_req(csr)), NID_commonName, cn,
                              sizeof cn);
    rc = store_order_find(ca_store(c->d->ca), station[0] ? station : NULL, c->prof->name, cn, &o,
                          &controlled);
    if (!controlled) {
        rc = KL_OK;
        goto out;
    }
    ENSURE(station[0], KL_EPOLICY,
           "profile %s issues only under production orders: the station must name itself "
           "([station] id)",
           c->prof->name);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_EPOLICY, "no production order for station %s (profile %s)", station,
                     c->prof->name);
    }
    TRY(rc);
    ENSURE(strcmp(cn, o.model) == 0, KL_EPOLICY,
           "device model '%s' is not production order %s's model '%s'", cn, o.id, o.model);
    ENSURE(strcmp(cad_order_state(&o), "open") == 0, KL_EPOLICY,
           "production order %s of station %s is %s (%lld of %lld issued)", o.id, station,
           cad_order_state(&o), (long long)o.issued, (long long)o.count);
    snprintf(order_id, cap, "%s", o.id);
out:
    store_order_free(&o);
    return rc;
}

static kl_rc cad_op_issue(cad_call *c)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    unsigned char *der = NULL;
    size_t dlen = 0;
    char *serial = NULL, order[65];
    cad_prep p;
    TRY(cad_prepare(c, &p));
    p.ir.pending = cap_get_u64(c->req, CAP_T_PENDING, 0) == 1;
    TRY(cad_order_for(c, p.csr, order, sizeof order));
    p.ir.order_id = order[0] ? order : NULL;
    /* the very bytes ca_issue checked and recorded, not a second encoding of them */
    TRY(ca_issue_der(c->d->ca, &p.ir, &cert, &der, &dlen));
    serial = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(serial, KL_EINTERNAL, "serial of the new certificate");
    TRY(cap_put_bytes(c->rsp, CAP_T_CERT, der, dlen));
    TRY(cap_put_str(c->rsp, CAP_T_SERIAL, serial));
    if (p.device_id[0]) {
        TRY(cap_put_str(c->rsp, CAP_T_DEVICE_ID, p.device_id));
    }
out:
    cad_prep_free(&p);
    OPENSSL_free(serial);
    OPENSSL_free(der);
    X509_free(cert);
    return rc;
}

/* A pending certificate the peer's profiles issue: activate / abandon act only on those. */
static kl_rc cad_pending_own(cad_call *c, char *norm, size_t cap)
{
    kl_rc rc = KL_OK;
    char serial[65];
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
    TRY(ca_serial_normalise(serial, norm, cap));
    TRY(store_cert_get(ca_store(c->d->ca), norm, &sc));
    ENSURE(cad_peer_may(c, sc.issuer, sc.template_name), KL_EPOLICY,
           "certificate %s (issuer %s, template %s) is outside the profiles of %s", norm, sc.issuer,
           sc.template_name ? sc.template_name : "-", c->peer->actor);
    ENSURE(strcmp(sc.status, STORE_ST_PENDING) == 0, KL_EPOLICY,
           "certificate %s is %s, not pending", norm, sc.status);
out:
    store_cert_free(&sc);
    return rc;
}

static kl_rc cad_op_activate(cad_call *c)
{
    kl_rc rc = KL_OK;
    char norm[65];
    TRY(cad_pending_own(c, norm, sizeof norm));
    TRY(ca_activate(c->d->ca, norm, c->peer->actor));
out:
    return rc;
}

static kl_rc cad_op_abandon(cad_call *c)
{
    kl_rc rc = KL_OK;
    char norm[65];
    uint64_t reason = cap_get_u64(c->req, CAP_T_REASON, 5);
    /* a front end abandons what the device never confirmed (cessationOfOperation) or what it
     * failed to prove it holds (keyCompromise); other reasons are the officer's */
    ENSURE(reason == 1 || reason == 5, KL_EPOLICY,
           "abandon takes reason keyCompromise (1) or cessationOfOperation (5), not %llu",
           (unsigned long long)reason);
    TRY(cad_pending_own(c, norm, sizeof norm));
    TRY(ca_revoke(c->d->ca, norm, (int)reason, c->peer->actor));
out:
    return rc;
}

static kl_rc cad_request_answer(cad_call *c, const store_request *r)
{
    kl_rc rc = KL_OK;
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    TRY(cap_put_u64(c->rsp, CAP_T_REQUEST_ID, (uint64_t)r->id));
    TRY(cap_put_str(c->rsp, CAP_T_STATUS, r->status));
    if (strcmp(r->status, STORE_RQ_REJECTED) == 0 && r->reason) {
        TRY(cap_put_str(c->rsp, CAP_T_MESSAGE, r->reason));
    }
    if (strcmp(r->status, STORE_RQ_APPROVED) == 0) {
        ENSURE(r->cert_serial, KL_EINTERNAL, "request %lld approved without a certificate",
               (long long)r->id);
        TRY(store_cert_get(ca_store(c->d->ca), r->cert_serial, &sc));
        ENSURE(strcmp(sc.status, STORE_ST_VALID) == 0, KL_EPOLICY,
               "the certificate issued for request %lld (%s) is %s", (long long)r->id,
               r->cert_serial, sc.status);
        TRY(cap_put_bytes(c->rsp, CAP_T_CERT, sc.der, sc.der_len));
    }
out:
    store_cert_free(&sc);
    return rc;
}

/* The label a held request of this profile is recorded under: requests of the default EST
 * profile keep the label "" they had before keyline-cad, those of "est.NAME" the label NAME. */
static const char *cad_request_label(const cad_profile *p)
{
    return strcmp(p->name, "est") == 0        ? ""
           : strncmp(p->name, "est.", 4) == 0 ? p->name + 4
                                              : p->name;
}

/* RFC 7030 4.2.3 manual approval, keyed by profile and CSR: the same request again finds the
 * same row. A CSR that policy would refuse is refused now, not held. */
static kl_rc cad_op_submit(cad_call *c)
{
    kl_rc rc = KL_OK;
    char hash[2 * SHA256_DIGEST_LENGTH + 1], subject[512];
    store_request got;
    cad_prep p;
    memset(&got, 0, sizeof got);
    const cap_field *f = cap_find(c->req, CAP_T_CSR, 0);
    TRY(cad_prepare(c, &p));
    TRY(ca_issue_check(c->d->ca, &p.ir));
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(f->val, f->len, md);
    for (size_t i = 0; i < sizeof md; i++) {
        snprintf(hash + 2 * i, 3, "%02x", md[i]);
    }
    X509_NAME_oneline(X509_REQ_get_subject_name(ca_csr_req(p.csr)), subject, sizeof subject);
    const char *label = cad_request_label(c->prof);
    store_request r = {
        .label = (char *)label,
        .csr_hash = hash,
        .csr = (uint8_t *)f->val,
        .csr_len = f->len,
        .issuer = (char *)c->prof->issuer,
        .template_name = (char *)c->prof->template_name,
        .device_id = p.device_id[0] ? p.device_id : NULL,
        .requester = p.actor,
        .subject = subject,
    };
    TRY(store_request_submit(ca_store(c->d->ca), &r, &got));
    TRY(cad_request_answer(c, &got));
out:
    cad_prep_free(&p);
    store_request_free(&got);
    return rc;
}

static kl_rc cad_op_poll(cad_call *c)
{
    kl_rc rc = KL_OK;
    store_request r;
    memset(&r, 0, sizeof r);
    int64_t id = (int64_t)cap_get_u64(c->req, CAP_T_REQUEST_ID, 0);
    TRY(store_request_get(ca_store(c->d->ca), id, &r));
    ENSURE(cad_peer_may(c, r.issuer, r.template_name), KL_EPOLICY,
           "request %lld is outside the profiles of %s", (long long)id, c->peer->actor);
    TRY(cad_request_answer(c, &r));
out:
    store_request_free(&r);
    return rc;
}

/* RFC 7030 4.1.3: the issuing chain up to the root, then the other CAs (rollover
 * certificates), each once; never a CA that is revoked, expired or not yet valid, itself or
 * above it (ca_cacerts): a client takes what it gets here as trust anchors. */
static kl_rc cad_op_cacerts(cad_call *c)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *certs = NULL;
    TRY(ca_cacerts(c->d->ca, c->prof->issuer, time(NULL), &certs));
    TRY(cap_put_str(c->rsp, CAP_T_ISSUER, c->prof->issuer));
    for (int i = 0; i < sk_X509_num(certs); i++) {
        TRY(cad_put_cert(c->rsp, CAP_T_CA_CERT, sk_X509_value(certs, i)));
    }
out:
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static kl_rc cad_op_crl(cad_call *c)
{
    kl_rc rc = KL_OK;
    char issuer[129];
    TRY(cad_str(c, CAP_T_ISSUER, issuer, sizeof issuer));
    TRY(cad_rev_crl(c->d->rev, issuer, c->rsp));
out:
    return rc;
}

static kl_rc cad_op_ocsp(cad_call *c)
{
    const cap_field *f = cap_find(c->req, CAP_T_OCSP_REQ, 0);
    return cad_rev_ocsp(c->d->rev, f->val, f->len, c->rsp);
}

/* By serial: the store's record. By certificate: ca_cert_check_row first (issued by one of
 * our CAs, signature, validity, status), which gives the record: what a front end needs to accept a
 * TLS client certificate and to know which device it belongs to. Either way a certificate the
 * store holds as valid is refused (KL_EAUTH) when a CA certificate above it is not
 * (cad_issuer_chain_status). */
static kl_rc cad_op_cert_status(cad_call *c)
{
    kl_rc rc = KL_OK;
    char serial[65], norm[65];
    X509 *x = NULL;
    char *hex = NULL;
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    const cap_field *f = cap_find(c->req, CAP_T_CERT, 0);
    if (f) {
        TRY(ca_x509_load(f->val, f->len, &x, NULL));
        TRY(ca_cert_check_row(c->d->ca, x, f->val, f->len, &sc));
        hex = ca_serial_hex(X509_get0_serialNumber(x));
        ENSURE(hex, KL_EINTERNAL, "serial");
        snprintf(norm, sizeof norm, "%s", hex);
    } else {
        TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
        ENSURE(serial[0], KL_EINPUT, "cert-status needs a serial or a certificate");
        TRY(ca_serial_normalise(serial, norm, sizeof norm));
        TRY(store_cert_get(ca_store(c->d->ca), norm, &sc));
    }
    if (strcmp(sc.status, STORE_ST_VALID) == 0) {
        TRY(cad_issuer_chain_status(c, norm, sc.issuer));
    }
    TRY(cap_put_str(c->rsp, CAP_T_SERIAL, norm));
    TRY(cap_put_str(c->rsp, CAP_T_STATUS, sc.status));
    TRY(cap_put_str(c->rsp, CAP_T_ISSUER, sc.issuer));
    if (sc.device_id && *sc.device_id) {
        TRY(cap_put_str(c->rsp, CAP_T_DEVICE_ID, sc.device_id));
    }
    TRY(cap_put_u64(c->rsp, CAP_T_NOT_AFTER, (uint64_t)sc.not_after));
out:
    OPENSSL_free(hex);
    X509_free(x);
    store_cert_free(&sc);
    return rc;
}

/* Claims: the holder is the connected process (its pid on this host), never what it says. */
static kl_rc cad_claim_of(cad_call *c, store_claim *me, char *dev, size_t devcap, char *inst,
                          size_t instcap, char *where, size_t wherecap, char *host, size_t hostcap)
{
    kl_rc rc = KL_OK;
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, devcap));
    TRY(cad_str(c, CAP_T_INSTANCE, inst, instcap));
    TRY(cad_str(c, CAP_T_FIXTURE, where, wherecap));
    snprintf(host, hostcap, "%s", c->peer->host);
    uint64_t lease = cap_get_u64(c->req, CAP_T_LEASE, 600);
    ENSURE(lease >= 1 && lease <= 86400, KL_EINPUT, "lease of %llu s (1..86400)",
           (unsigned long long)lease);
    *me = (store_claim){.instance = inst,
                        .host = host,
                        .pid = (long)c->peer->pid,
                        .where = where,
                        .expires = time(NULL) + (time_t)lease};
out:
    return rc;
}

static kl_rc cad_op_claim(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129], inst[129], where[129], host[256];
    store_claim me;
    TRY(cad_claim_of(c, &me, dev, sizeof dev, inst, sizeof inst, where, sizeof where, host,
                     sizeof host));
    rc = store_device_claim(ca_store(c->d->ca), dev, &me, c->holder, sizeof c->holder);
    if (rc == KL_EEXIST) {
        rc = kl_fail(KL_EEXIST, "device %s is held by %s", dev, c->holder);
    }
out:
    return rc;
}

static kl_rc cad_op_release(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129], inst[129], where[129], host[256];
    store_claim me;
    TRY(cad_claim_of(c, &me, dev, sizeof dev, inst, sizeof inst, where, sizeof where, host,
                     sizeof host));
    TRY(store_device_unclaim(ca_store(c->d->ca), dev, &me));
out:
    return rc;
}

/* What the profile's template asks of a CSR: the key types it takes (the first is the one a
 * server-generated key gets) and whether it makes device certificates. */
static kl_rc cad_op_profile(cad_call *c)
{
    kl_rc rc = KL_OK;
    ca_tpl_info ti;
    static const hsm_key_type order[] = {HSM_KEY_EC_P256, HSM_KEY_EC_P384, HSM_KEY_RSA_3072};
    TRY(ca_template_info(c->d->ca, c->prof->template_name, &ti));
    TRY(cap_put_str(c->rsp, CAP_T_ISSUER, c->prof->issuer));
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (!ti.key_types || (ti.key_types & (1u << order[i]))) {
            TRY(cap_put_str(c->rsp, CAP_T_KEY_TYPE, hsm_key_type_name(order[i])));
        }
    }
    TRY(cap_put_u64(c->rsp, CAP_T_DEVICE_CERT, ti.device_cert ? 1 : 0));
out:
    return rc;
}

/* A CA's certificate and those above it, the CA first: what a front end trusts for TLS client
 * certificates ([est] client-ca). Public data, open to any role. */
static kl_rc cad_op_ca_chain(cad_call *c)
{
    kl_rc rc = KL_OK;
    char issuer[129];
    STACK_OF(X509) *chain = NULL;
    TRY(cad_str(c, CAP_T_ISSUER, issuer, sizeof issuer));
    TRY(ca_chain(c->d->ca, issuer, &chain));
    TRY(cap_put_str(c->rsp, CAP_T_ISSUER, issuer));
    for (int i = 0; i < sk_X509_num(chain); i++) {
        TRY(cad_put_cert(c->rsp, CAP_T_CA_CERT, sk_X509_value(chain, i)));
    }
out:
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* How many requests of the profile wait for an officer (EST /metrics): the rows submit made
 * for it (its label, issuer and template), not other front ends' queues. */
static kl_rc cad_op_pending(cad_call *c)
{
    kl_rc rc = KL_OK;
    store_request *v = NULL;
    size_t n = 0;
    uint64_t count = 0;
    const char *label = cad_request_label(c->prof);
    TRY(store_request_list(ca_store(c->d->ca), STORE_RQ_PENDING, &v, &n));
    for (size_t i = 0; i < n; i++) {
        if (v[i].label && strcmp(v[i].label, label) == 0 && v[i].issuer &&
            strcmp(v[i].issuer, c->prof->issuer) == 0 && v[i].template_name &&
            strcmp(v[i].template_name, c->prof->template_name) == 0) {
            count++;
        }
    }
    TRY(cap_put_u64(c->rsp, CAP_T_COUNT, count));
out:
    store_request_list_free(v, n);
    return rc;
}

/* --- the station's ops (keyline-provision, docs/station.md) ----------------------------- */

/* A certificate of the peer's profiles for device `dev` (inventory, revoke, proof-failed): the
 * station names only certificates it could have asked for itself. */
static kl_rc cad_cert_own(cad_call *c, const char *serial, const char *dev, char *norm, size_t cap,
                          store_cert *sc)
{
    kl_rc rc = KL_OK;
    TRY(ca_serial_normalise(serial, norm, cap));
    TRY(store_cert_get(ca_store(c->d->ca), norm, sc));
    ENSURE(cad_peer_may(c, sc->issuer, sc->template_name), KL_EPOLICY,
           "certificate %s (issuer %s, template %s) is outside the profiles of %s", norm,
           sc->issuer, sc->template_name ? sc->template_name : "-", c->peer->actor);
    ENSURE(!dev || (sc->device_id && strcmp(sc->device_id, dev) == 0), KL_EPOLICY,
           "certificate %s is not a certificate of device %s", norm, dev);
out:
    return rc;
}

/* A device's record (inventory row, Matter onboarding data) that names a live certificate
 * outside the caller's profiles is another role's flow (the station's, mid-way): not the
 * caller's to overwrite. A revoked or failed certificate names no live flow. */
static kl_rc cad_row_cert_check(const cad_call *c, const char *dev, const char *what,
                                const store_cert *old)
{
    if (cad_peer_may(c, old->issuer, old->template_name) ||
        strcmp(old->status, STORE_ST_REVOKED) == 0 || strcmp(old->status, STORE_ST_FAILED) == 0) {
        return KL_OK;
    }
    return kl_fail(KL_EPOLICY,
                   "device %s: its %s names %s certificate %s (issuer %s, template %s), outside "
                   "the profiles of %s",
                   dev, what, old->status, old->serial_hex, old->issuer,
                   old->template_name ? old->template_name : "-", c->peer->actor);
}

/* A device's record (inventory row, Matter onboarding data) names certificate `named` (NULL or
 * "": none): that certificate into old and what was seen into *seen (pointing into old and
 * `named`, for the compare-and-set of the write: store_device_put_if, store_matter_put_if), and
 * whether the caller may replace the record with one naming `norm` (cad_row_cert_check, unless
 * it is `norm` itself). A certificate the store does not hold names no flow. */
static kl_rc cad_row_seen(const cad_call *c, const char *dev, const char *what, const char *named,
                          const char *norm, store_cert *old, store_device_seen *seen)
{
    kl_rc rc = KL_OK;
    *seen = (store_device_seen){NULL, NULL};
    if (!named || !*named) {
        goto out;
    }
    seen->cert_serial = named;
    rc = store_cert_get(ca_store(c->d->ca), named, old);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
        goto out;
    }
    TRY(rc);
    seen->cert_status = old->status;
    if (strcmp(named, norm) != 0) {
        TRY(cad_row_cert_check(c, dev, what, old));
    }
out:
    return rc;
}

/* The device's inventory row (into row, the certificate it names into old) checked as
 * cad_op_inventory writes it: cad_row_seen, and a row naming a valid certificate but `norm`
 * keeps it. */
static kl_rc cad_inventory_check(const cad_call *c, const char *dev, const char *norm,
                                 store_device *row, store_cert *old, store_device_seen *seen)
{
    kl_rc rc = store_device_get(ca_store(c->d->ca), dev, row);
    *seen = (store_device_seen){NULL, NULL};
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
        goto out;
    }
    TRY(rc);
    TRY(cad_row_seen(c, dev, "row", row->cert_serial, norm, old, seen));
    ENSURE(!seen->cert_status || strcmp(row->cert_serial, norm) == 0 ||
               strcmp(old->status, STORE_ST_VALID) != 0,
           KL_EPOLICY, "device %s holds valid certificate %s: revoke it before recording another",
           dev, row->cert_serial);
out:
    return rc;
}

/* The answer of a compare-and-set (KL_EEXIST: the record changed since it was read and
 * checked): the first time the caller reads, checks and writes again; the second fails,
 * saying so. */
static kl_rc cad_cas_again(kl_rc rc, int again, const char *what)
{
    if (rc != KL_EEXIST || !again) {
        return rc;
    }
    char why[1024];
    snprintf(why, sizeof why, "%s", kl_errmsg());
    return kl_fail(KL_EEXIST, "%s not written (read and checked twice): %s", what, why);
}

/* The inventory row of a device, as the station sees it (states pending, failed, provisioned;
 * "revoked" is what a revocation writes). The certificate it names must be one of the caller's
 * profiles for that device, valid for "provisioned"; a row that points at a valid certificate
 * keeps pointing at it until that certificate is revoked (a front end does not hide a
 * provisioned device). The row is checked and written as one compare-and-set (the write only
 * when the row still names the certificate, with the status, the check saw): a row another
 * front end or keyline-cad wrote meanwhile is read and checked again, once. Audited with the
 * actor the daemon authenticated, in the write's transaction. */
static kl_rc cad_op_inventory(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129], model[65], state[33], detail[513], serial[65], norm[65] = "", audit[1024];
    store_cert sc, old;
    store_device row;
    store_device_seen seen;
    memset(&sc, 0, sizeof sc);
    memset(&old, 0, sizeof old);
    memset(&row, 0, sizeof row);
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, sizeof dev));
    TRY(cad_str(c, CAP_T_MODEL, model, sizeof model));
    TRY(cad_str(c, CAP_T_STATE, state, sizeof state));
    TRY(cad_str(c, CAP_T_DETAIL, detail, sizeof detail));
    TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
    ENSURE(strcmp(state, "pending") == 0 || strcmp(state, "failed") == 0 ||
               strcmp(state, "provisioned") == 0,
           KL_EPOLICY, "inventory state '%s' (pending, failed, provisioned)", state);
    if (serial[0]) {
        TRY(cad_cert_own(c, serial, dev, norm, sizeof norm, &sc));
        ENSURE(strcmp(state, "provisioned") != 0 || strcmp(sc.status, STORE_ST_VALID) == 0,
               KL_EPOLICY, "device %s: certificate %s is %s, not valid: not provisioned", dev, norm,
               sc.status);
    } else {
        ENSURE(strcmp(state, "provisioned") != 0, KL_EPOLICY,
               "device %s: provisioned names its certificate", dev);
    }
    store_device d = {
        .device_id = dev,
        .model = model,
        .cert_serial = norm[0] ? norm : NULL,
        .state = state,
        .detail = detail,
        .updated = time(NULL),
    };
    snprintf(audit, sizeof audit, "device %s: %s, certificate %s: %s", dev, state,
             norm[0] ? norm : "-", detail);
    for (int again = 0; again < 2; again++) {
        store_device_free(&row);
        store_cert_free(&old);
        TRY(cad_inventory_check(c, dev, norm, &row, &old, &seen));
        rc = cad_cas_again(
            store_device_put_if(ca_store(c->d->ca), &d, &seen, c->peer->actor, "inventory", audit),
            again, "inventory");
        if (rc != KL_EEXIST) {
            break;
        }
        kl_info("cad: inventory from %s: %s: checking it again", c->peer->actor, kl_errmsg());
    }
out:
    store_cert_free(&sc);
    store_cert_free(&old);
    store_device_free(&row);
    return rc;
}

typedef struct {
    cad_call *c;
    const char *dev;
    const char *skip; /* the row's certificate, answered already */
    size_t n;
    kl_rc rc;
} cad_known_scan;

static int cad_known_cb(void *arg, const store_cert *sc)
{
    cad_known_scan *s = arg;
    if (!sc->device_id || strcmp(sc->device_id, s->dev) != 0 || !sc->der ||
        strcmp(sc->template_name ? sc->template_name : "", s->c->prof->template_name) != 0 ||
        (s->skip && strcmp(sc->serial_hex, s->skip) == 0)) {
        return 0;
    }
    if (s->n >= 8) {
        return 1; /* the station keeps at most 8 (ST_MAX_KNOWN) */
    }
    s->rc = cap_put_bytes(s->c->rsp, CAP_T_PEND_CERT, sc->der, sc->der_len);
    s->n++;
    return s->rc != KL_OK;
}

/* A device's row as a front end may see it: its state; its certificate (serial, status, DER)
 * and with `detail` its detail text only when that certificate is one of the caller's profiles
 * (cad_peer_may). Of another role's row (or one without a certificate, or naming a row without
 * a template) the caller learns that the device is known and its state: what keeps it from
 * giving the device a second identity, and nothing of the other flow. *have_cert 1 when the
 * certificate was answered (sc holds it). KL_ENOTFOUND (nothing answered) when the device has
 * no row. */
static kl_rc cad_row_answer(cad_call *c, const char *dev, int detail, store_device *row,
                            store_cert *sc, int *have_cert)
{
    kl_rc rc = KL_OK;
    *have_cert = 0;
    TRY(store_device_get(ca_store(c->d->ca), dev, row));
    TRY(cap_put_str(c->rsp, CAP_T_STATE, row->state));
    if (row->cert_serial && *row->cert_serial) {
        rc = store_cert_get(ca_store(c->d->ca), row->cert_serial, sc);
        if (rc == KL_ENOTFOUND) {
            rc = KL_OK;
        }
        TRY(rc);
        *have_cert = sc->der && cad_peer_may(c, sc->issuer, sc->template_name);
    }
    if (*have_cert && detail && row->detail && *row->detail) {
        TRY(cap_put_str(c->rsp, CAP_T_DETAIL, row->detail));
    }
    if (*have_cert) {
        TRY(cap_put_str(c->rsp, CAP_T_SERIAL, sc->serial_hex));
        TRY(cap_put_str(c->rsp, CAP_T_STATUS, sc->status));
        TRY(cap_put_bytes(c->rsp, CAP_T_CERT, sc->der, sc->der_len));
    }
out:
    return rc;
}

/* A device's inventory row (no front end asks it today: the station asks known, keyline-estd
 * cert-status): scoped as known's row is (cad_row_answer), without the detail. KL_ENOTFOUND for
 * a device without a row. */
static kl_rc cad_op_device(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129];
    int have_cert = 0;
    store_device row;
    store_cert sc;
    memset(&row, 0, sizeof row);
    memset(&sc, 0, sizeof sc);
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, sizeof dev));
    TRY(cap_put_str(c->rsp, CAP_T_DEVICE_ID, dev));
    TRY(cad_row_answer(c, dev, 0, &row, &sc, &have_cert));
out:
    store_device_free(&row);
    store_cert_free(&sc);
    return rc;
}

/* What the station decides a device's flow from: the inventory row as cad_row_answer gives it
 * (state; detail and certificate with status when that certificate is one of the caller's
 * profiles) and every pending certificate of the profile for that device id (a crash between
 * issue and the row's update leaves one the row does not name). Of another role's row the state
 * is enough: inventory refuses to overwrite a row that names a live certificate the caller may
 * not see anyway. */
static kl_rc cad_op_known(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129];
    store_device row;
    store_cert sc;
    int have_cert = 0;
    memset(&row, 0, sizeof row);
    memset(&sc, 0, sizeof sc);
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, sizeof dev));
    TRY(cap_put_str(c->rsp, CAP_T_DEVICE_ID, dev));
    rc = cad_row_answer(c, dev, 1, &row, &sc, &have_cert);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
    }
    TRY(rc);
    cad_known_scan scan = {.c = c, .dev = dev, .skip = have_cert ? sc.serial_hex : NULL};
    TRY(store_cert_list(ca_store(c->d->ca), STORE_ST_PENDING, c->prof->issuer, cad_known_cb,
                        &scan));
    TRY(scan.rc);
out:
    store_device_free(&row);
    store_cert_free(&sc);
    return rc;
}

/* --reprovision: the station revokes the old certificate of a device it is about to give a new
 * one. Only certificates of its profiles, only the reasons a station states (unspecified,
 * keyCompromise, affiliationChanged, superseded, cessationOfOperation); CA and other reasons are
 * the officer's. */
static kl_rc cad_op_revoke(cad_call *c)
{
    kl_rc rc = KL_OK;
    char serial[65], norm[65];
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    uint64_t reason = cap_get_u64(c->req, CAP_T_REASON, 0);
    ENSURE(reason == 0 || reason == 1 || reason == 3 || reason == 4 || reason == 5, KL_EPOLICY,
           "a front end revokes with unspecified, keyCompromise, affiliationChanged, superseded "
           "or cessationOfOperation (0, 1, 3, 4, 5), not %llu",
           (unsigned long long)reason);
    TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
    TRY(cad_cert_own(c, serial, NULL, norm, sizeof norm, &sc));
    ENSURE(sc.device_id && *sc.device_id, KL_EPOLICY,
           "certificate %s belongs to no device: the officer revokes it", norm);
    TRY(ca_revoke(c->d->ca, norm, (int)reason, c->peer->actor));
out:
    store_cert_free(&sc);
    return rc;
}

typedef struct {
    const cad_profile *p;
    char (*v)[2][129];
    size_t n, cap;
} cad_sweep_list;

static int cad_sweep_cb(void *arg, const store_cert *sc)
{
    cad_sweep_list *l = arg;
    if (!sc->issuer || strcmp(sc->issuer, l->p->issuer) != 0 || !sc->template_name ||
        strcmp(sc->template_name, l->p->template_name) != 0) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char(*nv)[2][129] = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            return 1;
        }
        l->v = nv;
        l->cap = nc;
    }
    snprintf(l->v[l->n][0], 129, "%s", sc->serial_hex);
    snprintf(l->v[l->n][1], 129, "%s", sc->device_id ? sc->device_id : "");
    l->n++;
    return 0;
}

/* The station's pending sweep, done where the store is: every pending certificate of the
 * profile older than `age` seconds is revoked (cessationOfOperation), each only after its
 * device is claimed ("pending sweep", held by the calling process) and its status read again
 * under the claim (a flow that held the device may have confirmed it meanwhile); a device
 * another flow holds keeps its certificate. The inventory row that still names it becomes
 * failed. Answers how many were revoked. */
static kl_rc cad_op_sweep(cad_call *c)
{
    kl_rc rc = KL_OK;
    store *s = ca_store(c->d->ca);
    char inst[129], other[512], host[256];
    cad_sweep_list l = {.p = c->prof};
    uint64_t count = 0;
    uint64_t age = cap_get_u64(c->req, CAP_T_AGE, 0);
    ENSURE(age >= 1 && age <= 365ULL * 86400, KL_EINPUT, "sweep age of %llu s (1..31536000)",
           (unsigned long long)age);
    TRY(cad_str(c, CAP_T_INSTANCE, inst, sizeof inst));
    TRY(store_cert_list_pending(s, time(NULL) - (time_t)age, cad_sweep_cb, &l));
    if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "localhost");
    }
    host[sizeof host - 1] = 0;
    store_claim me = {.instance = inst,
                      .host = host,
                      .pid = (long)c->peer->pid,
                      .where = "pending sweep",
                      .expires = time(NULL) + 600};
    for (size_t i = 0; i < l.n; i++) {
        const char *serial = l.v[i][0], *dev = l.v[i][1];
        if (dev[0]) {
            rc = store_device_claim(s, dev, &me, other, sizeof other);
            if (rc == KL_EEXIST) {
                kl_info("cad: sweep: pending certificate %s of %s kept: %s is provisioning the "
                        "device",
                        serial, dev, other);
                continue; /* rc is set again before it is read */
            }
            TRY(rc);
            store_cert_state cs;
            rc = store_cert_state_get(s, serial, &cs);
            if (rc != KL_OK || strcmp(cs.status, STORE_ST_PENDING) != 0) {
                if (store_device_unclaim(s, dev, &me) != KL_OK) {
                    kl_warn("cad: sweep: releasing %s: %s", dev, kl_errmsg());
                }
                TRY(rc);
                continue;
            }
        }
        rc = ca_revoke(c->d->ca, serial, 5, c->peer->actor);
        if (rc == KL_OK && dev[0]) {
            store_device d;
            if (store_device_get(s, dev, &d) == KL_OK) {
                if (d.cert_serial && strcmp(d.cert_serial, serial) == 0) {
                    char detail[200];
                    snprintf(detail, sizeof detail,
                             "pending certificate revoked after %llu s without confirmation",
                             (unsigned long long)age);
                    store_device nd = d;
                    nd.state = "failed";
                    nd.detail = detail;
                    nd.updated = time(NULL);
                    /* only while the row still names the certificate just revoked: a flow
                     * that recorded another one meanwhile keeps its row */
                    store_device_seen seen = {serial, STORE_ST_REVOKED};
                    kl_rc put = store_device_put_if(s, &nd, &seen, NULL, NULL, NULL);
                    if (put == KL_EEXIST) {
                        kl_info("cad: sweep: inventory row left as it is: %s", kl_errmsg());
                    } else if (put != KL_OK) {
                        kl_warn("cad: sweep: inventory %s: %s", dev, kl_errmsg());
                    }
                }
                store_device_free(&d);
            }
        }
        if (dev[0] && store_device_unclaim(s, dev, &me) != KL_OK) {
            kl_warn("cad: sweep: releasing %s: %s", dev, kl_errmsg());
        }
        if (rc == KL_EEXIST || rc == KL_ENOTFOUND) {
            continue; /* another sweep got there first (rc is set again before it is read) */
        }
        TRY(rc);
        count++;
        kl_info("cad: sweep: revoked pending certificate %s of %s: not confirmed within %llu s",
                serial, dev[0] ? dev : "?", (unsigned long long)age);
    }
    TRY(cap_put_u64(c->rsp, CAP_T_COUNT, count));
out:
    free(l.v);
    return rc;
}

/* A locked device said it holds certificate S of device D but could not sign with its key
 * (counterfeit or clone): an audit entry, with the actor the daemon authenticated. */
static kl_rc cad_op_proof_failed(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129], serial[65], norm[65], msg[2049], detail[2400];
    store_cert sc;
    memset(&sc, 0, sizeof sc);
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, sizeof dev));
    TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
    TRY(cad_str(c, CAP_T_MESSAGE, msg, sizeof msg));
    TRY(cad_cert_own(c, serial, dev, norm, sizeof norm, &sc));
    snprintf(detail, sizeof detail, "device %s, certificate %s: %s", dev, norm, msg);
    TRY(store_audit_append(ca_store(c->d->ca), c->peer->actor, "device-proof-failed", detail));
out:
    store_cert_free(&sc);
    return rc;
}

/* matter-keep-passcode: the passcode sealed to the token key MATTER_PASSCODE_KEY (only its
 * public half is used here; ca/matter_seal.h). The officer makes that key (docs/matter.md). */
static kl_rc cad_matter_seal(cad_call *c, const store_matter *m, uint8_t out[MATTER_SEAL_LEN])
{
    const char *dev = m->device_id;
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL;
    uint64_t p = cap_get_u64(c->req, CAP_T_MATTER_PASSCODE, 0);
    ENSURE(kl_matter_passcode_valid(p), KL_EPOLICY, "device %s: not a Matter setup passcode", dev);
    ENSURE(ca_hsm(c->d->ca), KL_EINTERNAL, "no token open");
    rc = hsm_key_public(ca_hsm(c->d->ca), MATTER_PASSCODE_KEY, &pub);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_EPOLICY,
                     "matter-keep-passcode: no key '%s' in the token to seal passcodes to "
                     "(docs/matter.md)",
                     MATTER_PASSCODE_KEY);
    }
    TRY(rc);
    TRY(matter_passcode_seal(pub, m, (uint32_t)p, out)); /* bound to this row */
out:
    EVP_PKEY_free(pub);
    return rc;
}

/* The device's Matter onboarding data (into had, the certificate it names into old) checked as
 * cad_op_matter writes it (cad_row_seen). */
static kl_rc cad_matter_check(const cad_call *c, const char *dev, const char *norm,
                              store_matter *had, store_cert *old, store_device_seen *seen)
{
    kl_rc rc = store_matter_get(ca_store(c->d->ca), dev, had);
    *seen = (store_device_seen){NULL, NULL};
    if (rc == KL_ENOTFOUND) {
        return KL_OK;
    }
    return rc == KL_OK
               ? cad_row_seen(c, dev, "Matter onboarding data", had->cert_serial, norm, old, seen)
               : rc;
}

/* A Matter device's onboarding data (docs/matter.md), beside its inventory row: the DAC named
 * must be a certificate of the caller's profiles for that device; the values are checked
 * again here (the front end is not trusted to have). Audited "matter-onboarding". */
static kl_rc cad_op_matter(cad_call *c)
{
    kl_rc rc = KL_OK;
    char dev[129], serial[65], norm[65];
    uint8_t sealed[MATTER_SEAL_LEN];
    store_cert sc, old;
    store_matter had;
    store_device_seen seen;
    memset(&sc, 0, sizeof sc);
    memset(&old, 0, sizeof old);
    memset(&had, 0, sizeof had);
    const cap_field *salt = cap_find(c->req, CAP_T_MATTER_SALT, 0);
    const cap_field *ver = cap_find(c->req, CAP_T_MATTER_VERIFIER, 0);
    TRY(cad_str(c, CAP_T_DEVICE_ID, dev, sizeof dev));
    TRY(cad_str(c, CAP_T_SERIAL, serial, sizeof serial));
    TRY(cad_cert_own(c, serial, dev, norm, sizeof norm, &sc));
    TRY(cad_matter_check(c, dev, norm, &had, &old, &seen));
    store_matter m = {
        .device_id = dev,
        .cert_serial = norm,
        .discriminator = (int64_t)cap_get_u64(c->req, CAP_T_MATTER_DISCRIMINATOR, 1u << 16),
        .iterations = (int64_t)cap_get_u64(c->req, CAP_T_MATTER_ITERATIONS, 0),
        .salt = (uint8_t *)salt->val,
        .salt_len = salt->len,
        .verifier = (uint8_t *)ver->val,
        .verifier_len = ver->len,
    };
    if (cap_find(c->req, CAP_T_MATTER_PASSCODE, 0)) {
        TRY(cad_matter_seal(c, &m, sealed));
        m.passcode_sealed = sealed;
        m.passcode_sealed_len = sizeof sealed;
    }
    for (int again = 0; again < 2; again++) {
        if (again) {
            kl_info("cad: matter from %s: %s: checking it again", c->peer->actor, kl_errmsg());
            store_matter_free(&had);
            store_cert_free(&old);
            TRY(cad_matter_check(c, dev, norm, &had, &old, &seen));
        }
        rc = cad_cas_again(store_matter_put_if(ca_store(c->d->ca), &m, c->peer->actor, &seen),
                           again, "Matter onboarding data");
        if (rc != KL_EEXIST) {
            break;
        }
    }
    if (rc == KL_EUSAGE) {
        rc = kl_fail(KL_EPOLICY, "device %s: %s", dev, kl_errmsg());
    }
out:
    store_cert_free(&sc);
    store_cert_free(&old);
    store_matter_free(&had);
    return rc;
}

/* --- the table ------------------------------------------------------------------------ */

typedef struct {
    cad_fn fn;
    int needs_profile; /* the request names a profile the peer's role must have */
} cad_op_row;

/* A station's production order, for its dashboard and to stop before a device it cannot serve:
 * the one a certificate for the device's model (CAP_T_MODEL, optional) would count against;
 * state "none" when the station has no order for the profile, "missing" when it has none but
 * the profile issues only under orders. */
static kl_rc cad_op_order(cad_call *c)
{
    kl_rc rc = KL_OK;
    char station[65], model[129];
    int controlled = 0;
    store_order o;
    memset(&o, 0, sizeof o);
    TRY(cad_str(c, CAP_T_STATION, station, sizeof station));
    TRY(cad_str(c, CAP_T_MODEL, model, sizeof model));
    rc = store_order_find(ca_store(c->d->ca), station, c->prof->name, model[0] ? model : NULL, &o,
                          &controlled);
    if (rc == KL_ENOTFOUND) {
        rc = cap_put_str(c->rsp, CAP_T_STATE, controlled ? "missing" : "none");
        goto out;
    }
    TRY(rc);
    TRY(cap_put_str(c->rsp, CAP_T_ORDER, o.id));
    TRY(cap_put_str(c->rsp, CAP_T_MODEL, o.model));
    TRY(cap_put_u64(c->rsp, CAP_T_COUNT, (uint64_t)o.count));
    TRY(cap_put_u64(c->rsp, CAP_T_ISSUED, (uint64_t)o.issued));
    TRY(cap_put_u64(c->rsp, CAP_T_EXPIRES, (uint64_t)o.expires));
    TRY(cap_put_str(c->rsp, CAP_T_STATE, cad_order_state(&o)));
out:
    store_order_free(&o);
    return rc;
}

/* An operator closes the station's own order on its dashboard: no more certificates under it.
 * (The signed report is the officer's: keyline-ca order close.) */
static kl_rc cad_op_order_close(cad_call *c)
{
    kl_rc rc = KL_OK;
    char station[65], id[65], user[257], shown[4 * sizeof user], actor[1600];
    store_order o;
    memset(&o, 0, sizeof o);
    TRY(cad_str(c, CAP_T_STATION, station, sizeof station));
    TRY(cad_str(c, CAP_T_ORDER, id, sizeof id));
    TRY(cad_str(c, CAP_T_AUTH_USER, user, sizeof user));
    kl_ascii_escape(user, ";", shown, sizeof shown); /* as in cad_actor */
    snprintf(actor, sizeof actor, "%s%s%s", c->peer->actor, user[0] ? " for operator " : "", shown);
    TRY(store_order_get(ca_store(c->d->ca), id, &o));
    ENSURE(strcmp(o.station, station) == 0 && strcmp(o.profile, c->prof->name) == 0, KL_EPOLICY,
           "production order %s is not station %s's (profile %s)", id, station, c->prof->name);
    TRY(store_order_close(ca_store(c->d->ca), id, actor, NULL));
out:
    store_order_free(&o);
    return rc;
}

static const cad_op_row cad_table[CAP_OP__END] = {
    [CAP_OP_ORDER] = {cad_op_order, 1},
    [CAP_OP_ORDER_CLOSE] = {cad_op_order_close, 1},
    [CAP_OP_HELLO] = {cad_op_hello, 0},
    [CAP_OP_ISSUE] = {cad_op_issue, 1},
    [CAP_OP_ACTIVATE] = {cad_op_activate, 0},
    [CAP_OP_SUBMIT] = {cad_op_submit, 1},
    [CAP_OP_POLL] = {cad_op_poll, 0},
    [CAP_OP_CACERTS] = {cad_op_cacerts, 1},
    [CAP_OP_CRL] = {cad_op_crl, 0},
    [CAP_OP_OCSP] = {cad_op_ocsp, 0},
    [CAP_OP_CERT_STATUS] = {cad_op_cert_status, 0},
    [CAP_OP_CLAIM] = {cad_op_claim, 0},
    [CAP_OP_RELEASE] = {cad_op_release, 0},
    [CAP_OP_ABANDON] = {cad_op_abandon, 0},
    [CAP_OP_DEVICE] = {cad_op_device, 0},
    [CAP_OP_PROFILE] = {cad_op_profile, 1},
    [CAP_OP_CA_CHAIN] = {cad_op_ca_chain, 0},
    [CAP_OP_PENDING] = {cad_op_pending, 1},
    [CAP_OP_INVENTORY] = {cad_op_inventory, 1},
    [CAP_OP_KNOWN] = {cad_op_known, 1},
    [CAP_OP_REVOKE] = {cad_op_revoke, 0},
    [CAP_OP_SWEEP] = {cad_op_sweep, 1},
    [CAP_OP_PROOF_FAIL] = {cad_op_proof_failed, 0},
    [CAP_OP_MATTER] = {cad_op_matter, 1},
};

static void cad_answer_error(kl_buf *rsp, uint8_t op, kl_rc code, const char *msg,
                             const char *holder)
{
    char m[2048];
    snprintf(m, sizeof m, "%s", msg && *msg ? msg : kl_rc_name(code));
    /* a control byte (from a library message) would make the answer unparseable */
    for (char *p = m; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *p = ' ';
        }
    }
    if (cap_msg_begin(rsp, (cap_op)op, (uint8_t)code) != KL_OK ||
        cap_put_str(rsp, CAP_T_MESSAGE, m) != KL_OK ||
        (holder[0] && cap_put_str(rsp, CAP_T_HOLDER, holder) != KL_OK) ||
        cap_msg_end(rsp) != KL_OK) {
        kl_buf_reset(rsp);
    }
}

void cad_dispatch(cad *d, const cad_peer *peer, const cap_msg *req, kl_buf *rsp)
{
    cad_call c = {.d = d, .peer = peer, .req = req, .rsp = rsp};
    kl_rc rc = KL_OK;
    const cad_op_row *row = req->op < CAP_OP__END ? &cad_table[req->op] : NULL;
    if (!row || !row->fn) {
        rc = kl_fail(KL_EUSAGE, "op %u is not served", req->op);
    } else if (!peer->roles && req->op != CAP_OP_HELLO) {
        char who[96];
        if (peer->uid != (uid_t)-1) {
            snprintf(who, sizeof who, "uid %u", (unsigned)peer->uid);
        } else {
            snprintf(who, sizeof who, "front end %.80s", peer->user);
        }
        rc = kl_fail(KL_EPOLICY, "%s has no role at this keyline-cad", who);
    } else if (req->op != CAP_OP_HELLO &&
               !(cad_roles_ops(d, peer->roles) & (UINT32_C(1) << req->op))) {
        rc = cad_refuse_op(&c);
    } else if ((rc = cad_station_check(&c)) == KL_OK) {
        rc = cap_msg_begin(rsp, (cap_op)req->op, KL_OK);
        if (rc == KL_OK && row->needs_profile) {
            rc = cad_profile_for(&c);
        }
        if (rc == KL_OK) {
            rc = row->fn(&c);
        }
        if (rc == KL_OK) {
            rc = cap_msg_end(rsp);
        }
    }
    if (rc != KL_OK) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", kl_errmsg());
        cad_answer_error(rsp, req->op, rc, msg, c.holder);
        kl_info("cad: %s from %s refused: %s: %s", cap_op_name(req->op), peer->actor,
                kl_rc_name(rc), msg);
    }
}
