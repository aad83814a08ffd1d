/* keyline: CA key rotation with rollover certificates.
 *
 * Rotating a root (RFC 4210 5.3.1.1 "root CA key update", as RFC 7030 4.1.3 expects EST
 * servers to publish): a new key is generated in the token and certified three ways,
 *   NEW        self-signed new root (label NEW)
 *   NewWithOld new key signed by the old key (label NEW.newwithold): devices that still trust
 *              only the old root can validate chains that end at the new root
 *   OldWithNew old key signed by the new key (label OLD.oldwithnew): devices that already trust
 *              the new root can validate chains that end at the old root
 * All three are recorded as CAs, so `keyline-ca ca list` shows them and EST /cacerts serves
 * them. Rotating an issuing CA needs no rollover certificate: the new CA is issued by the same
 * parent and devices' trust anchors do not change.
 *
 * All or nothing: the key and every certificate are made first; then the CA records and the
 * ca-rotate audit entry are written in one store transaction. If anything fails, no CA is
 * recorded, the new key is removed from the token and the certificates signed on the way
 * (recorded as issued, never released) are revoked, so the same command can simply be run
 * again. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ca_image.h"
#include "ca_internal.h"
#include "kl_log.h"

kl_rc ca_successor(ca_ctx *ca, const char *label, char *out, size_t cap)
{
    kl_rc rc = KL_OK;
    store_ca rec, *list = NULL;
    size_t n = 0;
    X509 *mine = NULL;
    memset(&rec, 0, sizeof rec);
    TRY(store_ca_get(ca->st, label, &rec));
    mine = ca_der_to_x509(rec.der, rec.der_len);
    ENSURE(mine, KL_EINPUT, "CA '%s': stored certificate does not parse", label);
    TRY(store_ca_list(ca->st, &list, &n));
    snprintf(out, cap, "%s", label);
    time_t best = rec.created;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].label, label) == 0 || strcmp(list[i].status, CA_ST_ACTIVE) != 0 ||
            strcmp(list[i].template_name, rec.template_name) != 0 || list[i].created < best) {
            continue;
        }
        X509 *x = ca_der_to_x509(list[i].der, list[i].der_len);
        if (x && X509_NAME_cmp(X509_get_subject_name(x), X509_get_subject_name(mine)) == 0) {
            best = list[i].created;
            snprintf(out, cap, "%s", list[i].label);
        }
        X509_free(x);
    }
out:
    X509_free(mine);
    store_ca_list_free(list, n);
    store_ca_free(&rec);
    return rc;
}

/* An issuing CA: a new one under req->issuer or the successor of its parent (into parent[96],
 * which rec points to). */
static kl_rc ca_rotate_issuing(ca_ctx *ca, const ca_rotate_req *req, const store_ca *old,
                               const X509_NAME *name, X509 **newc, store_ca *rec, char *parent,
                               char *detail, size_t dcap)
{
    kl_rc rc = KL_OK;
    if (req->issuer) {
        snprintf(parent, 96, "%s", req->issuer);
    } else {
        TRY(ca_successor(ca, old->parent, parent, 96));
    }
    TRY(ca_key_new(ca, req->new_label, old->template_name, name, req->key_type, parent, req->actor,
                   newc, NULL));
    rc = ca_record_fill(rec, req->new_label, old->template_name, parent,
                        hsm_key_type_name(req->key_type), *newc, CA_ST_ACTIVE);
    snprintf(detail, dcap, "old=%s new=%s parent=%s", req->label, req->new_label, parent);
out:
    return rc;
}

/* A root: the new self-signed root and both rollover certificates (recs[0..2], which point
 * into labels[2]: the rollover labels). */
static kl_rc ca_rotate_root(ca_ctx *ca, const ca_rotate_req *req, const store_ca *old,
                            const ca_entry *oe, X509 *made[3], store_ca recs[3], size_t *nrecs,
                            char labels[2][96], char *detail, size_t dcap)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *old_pub = NULL, *new_pub = NULL, *new_priv = NULL;
    char *nwo_label = labels[0], *own_label = labels[1];
    const char *old_label = req->label, *new_label = req->new_label;
    const X509_NAME *name = X509_get_subject_name(oe->cert);
    const char *kname = hsm_key_type_name(req->key_type);
    ENSURE(!req->issuer, KL_EUSAGE, "'%s' is a root: --issuer is for issuing CAs", old_label);
    /* the old root signs NewWithOld: it must still be able to, before a key is made */
    TRY(ca_issuer_check(ca, old_label, time(NULL)));
    ENSURE(strlen(new_label) + strlen(CA_ROLLOVER_NWO) <= CA_LABEL_MAX &&
               strlen(old_label) + strlen(CA_ROLLOVER_OWN) <= CA_LABEL_MAX,
           KL_EUSAGE,
           "rotating root '%s' to '%s': the rollover labels '%s" CA_ROLLOVER_NWO
           "' and '%s" CA_ROLLOVER_OWN "' must fit in %d characters",
           old_label, new_label, new_label, old_label, CA_LABEL_MAX);
    snprintf(nwo_label, 96, "%s" CA_ROLLOVER_NWO, new_label);
    snprintf(own_label, 96, "%s" CA_ROLLOVER_OWN, old_label);
    TRY(ca_label_check_new(ca, nwo_label));
    TRY(ca_label_check_new(ca, own_label));
    TRY(ca_key_new(ca, new_label, old->template_name, name, req->key_type, NULL, req->actor,
                   &made[0], &new_priv));
    ENSURE_SSL((old_pub = X509_get_pubkey(oe->cert)) && (new_pub = X509_get_pubkey(made[0])),
               KL_EINTERNAL, "cannot read the CA public keys");
    TRY(ca_certify(ca, new_priv, new_pub, name, old->template_name, old_label, NULL, req->actor,
                   &made[1]));
    TRY(ca_certify_under(ca, oe->key, old_pub, name, old->template_name, new_label, made[0],
                         new_priv, req->actor, &made[2]));
    TRY(ca_record_fill(&recs[(*nrecs)++], new_label, old->template_name, NULL, kname, made[0],
                       CA_ST_ACTIVE));
    /* NewWithOld certifies the new key, OldWithNew the old one */
    TRY(ca_record_fill(&recs[(*nrecs)++], nwo_label, old->template_name, old_label, kname, made[1],
                       CA_ST_ROLLOVER));
    TRY(ca_record_fill(&recs[(*nrecs)++], own_label, old->template_name, new_label, old->key_type,
                       made[2], CA_ST_ROLLOVER));
    snprintf(detail, dcap, "old=%s new=%s rollover=%s,%s", old_label, new_label, nwo_label,
             own_label);
out:
    EVP_PKEY_free(old_pub);
    EVP_PKEY_free(new_pub);
    EVP_PKEY_free(new_priv);
    return rc;
}

kl_rc ca_rotate(ca_ctx *ca, const ca_rotate_req *req, X509 **cert_out)
{
    kl_rc rc = KL_OK;
    store_ca old, recs[3];
    memset(&old, 0, sizeof old);
    memset(recs, 0, sizeof recs);
    size_t nrecs = 0;
    const ca_entry *oe = NULL;
    X509 *made[3] = {NULL, NULL, NULL}; /* NEW, NewWithOld, OldWithNew */
    char detail[300], labels[2][96];
    *cert_out = NULL;

    ENSURE(ca->hsm, KL_EUSAGE, "rotating a CA needs the token");
    ENSURE(req->label && req->new_label, KL_EUSAGE, "rotating needs the old and the new label");
    /* the new label is checked before anything is looked up or made */
    TRY(ca_label_check_new(ca, req->new_label));
    TRY(store_ca_get(ca->st, req->label, &old));
    TRY(ca_label_role_check(req->new_label, old.template_name, old.parent));
    ENSURE(strcmp(old.status, CA_ST_ACTIVE) == 0, KL_EPOLICY, "CA '%s' is %s, not active",
           req->label, old.status);
    TRY(ca_entry_get(ca, req->label, 1, &oe));
    if (req->token) {
        TRY(ca_token_open(ca, req->new_label, req->token));
    }
    if (old.parent && *old.parent) {
        TRY(ca_rotate_issuing(ca, req, &old, X509_get_subject_name(oe->cert), &made[0], &recs[0],
                              labels[0], detail, sizeof detail));
        nrecs = 1;
    } else {
        TRY(ca_rotate_root(ca, req, &old, oe, made, recs, &nrecs, labels, detail, sizeof detail));
    }
    TRY(store_ca_put_all(ca->st, recs, nrecs, req->actor ? req->actor : "keyline", "ca-rotate",
                         detail));
    *cert_out = made[0];
    made[0] = NULL;
    rc = ca_cert_to_token(ca, req->new_label, *cert_out);
out:
    if (rc != KL_OK && made[0]) {
        ca_key_discard(ca, req->new_label, made, 3, req->actor, rc);
    }
    for (size_t i = 0; i < nrecs; i++) {
        OPENSSL_free(recs[i].der);
    }
    store_ca_free(&old);
    for (int i = 0; i < 3; i++) {
        X509_free(made[i]);
    }
    return rc;
}

/* ---- retirement ---------------------------------------------------------------------------- */

/* KL_EPOLICY when an active CA is directly below `label` (its OCSP signer aside): retiring the
 * parent first would leave it unable to renew anything. */
static kl_rc ca_retire_children(ca_ctx *ca, const char *label)
{
    kl_rc rc = KL_OK;
    store_ca *list = NULL;
    size_t n = 0;
    TRY(store_ca_list(ca->st, &list, &n));
    for (size_t i = 0; i < n; i++) {
        ENSURE(!list[i].parent || strcmp(list[i].parent, label) != 0 ||
                   strcmp(list[i].status, CA_ST_ACTIVE) != 0 ||
                   ca_is_ocsp_signer_label(list[i].label),
               KL_EPOLICY,
               "CA '%s' still has the active CA '%s' below it: rotate that one under the "
               "successor and retire it first (docs/key-ceremony.md \"Retiring a CA\")",
               label, list[i].label);
    }
out:
    store_ca_list_free(list, n);
    return rc;
}

static int ca_retire_last(void *arg, const store_cert *c)
{
    time_t *last = arg;
    if (c->not_after > *last) {
        *last = c->not_after;
    }
    return 0;
}

/* 9999-12-31T23:59:59Z (RFC 5280 4.1.2.5: no well-defined expiration date) */
#define CA_TIME_MAX ((time_t)253402300799LL)

/* The final CRL's nextUpdate: a day past the last notAfter of what `label` issued (RFC 5280
 * 5.1.2.5: relying parties look for a newer CRL at nextUpdate; none will come), at most
 * 9999-12-31T23:59:59Z, and never before a normal CRL's. */
static kl_rc ca_retire_until(ca_ctx *ca, const char *label, time_t *until)
{
    time_t last = 0;
    kl_rc rc = store_cert_list(ca->st, NULL, label, ca_retire_last, &last);
    if (rc == KL_OK) {
        *until = last > CA_TIME_MAX - 86400 ? CA_TIME_MAX : last + 86400;
        if (*until < time(NULL) + ca->crl_days * 86400) {
            *until = time(NULL) + ca->crl_days * 86400;
        }
    }
    return rc;
}

/* Destroy the key of `label` in its token; gone already is fine when `again`. */
static kl_rc ca_retire_key(ca_ctx *ca, const char *label, int again)
{
    hsm_ctx *h = NULL;
    kl_rc rc = ca_hsm_of(ca, label, &h);
    if (rc == KL_OK) {
        rc = hsm_key_destroy(h, label);
    }
    if (rc == KL_ENOTFOUND && again) {
        rc = KL_OK;
    }
    if (rc != KL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        rc = kl_fail(rc,
                     "CA '%s' is retired, but its key could not be destroyed: %s (run keyline-ca "
                     "ca retire --label %s again with its token)",
                     label, why, label);
    }
    return rc;
}

kl_rc ca_retire(ca_ctx *ca, const ca_retire_req *req, X509_CRL **final_crl)
{
    kl_rc rc = KL_OK;
    store_ca rec;
    X509_CRL *crl = NULL;
    time_t until = 0;
    char detail[300], when[32];
    memset(&rec, 0, sizeof rec);
    if (final_crl) {
        *final_crl = NULL;
    }
    ENSURE(ca->hsm, KL_EUSAGE, "retiring a CA needs the token");
    ENSURE(req->label, KL_EUSAGE, "retiring needs the CA's label");
    TRY(store_ca_get(ca->st, req->label, &rec));
    ENSURE(!ca_is_ocsp_signer_label(req->label), KL_EPOLICY,
           "'%s' is a delegated OCSP signer: it ends with its CA, or when its short life ends",
           req->label);
    if (strcmp(rec.status, CA_ST_RETIRED) == 0) { /* an earlier run stopped before the key */
        TRY(ca_retire_key(ca, req->label, 1));
        goto out;
    }
    ENSURE(strcmp(rec.status, CA_ST_ACTIVE) == 0, KL_EPOLICY,
           "CA '%s' is %s: only an active CA "
           "can be retired",
           req->label, rec.status);
    TRY(ca_retire_children(ca, req->label));
    if (ca_is_firmware_template(rec.template_name)) {
        /* a firmware key issued nothing: no OCSP signer, no CRL (docs/firmware.md 6) */
        snprintf(detail, sizeof detail, "label=%s firmware-key key=destroyed", req->label);
        TRY(store_ca_status_set(ca->st, req->label, CA_ST_ACTIVE, CA_ST_RETIRED,
                                req->actor ? req->actor : "keyline", "ca-retire", detail));
        TRY(ca_retire_key(ca, req->label, 0));
        goto out;
    }
    /* while the key still signs: OCSP for what it issued goes on without it */
    TRY(ca_ocsp_signer_final(ca, req->label, req->actor));
    TRY(ca_retire_until(ca, req->label, &until));
    TRY(ca_crl_until(ca, req->label, until, &crl));
    TRY(ca_crlpart_final(ca, req->label, until));
    struct tm tm;
    gmtime_r(&until, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(detail, sizeof detail, "label=%s final-crl-next-update=%s key=destroyed", req->label,
             when);
    TRY(store_ca_status_set(ca->st, req->label, CA_ST_ACTIVE, CA_ST_RETIRED,
                            req->actor ? req->actor : "keyline", "ca-retire", detail));
    TRY(ca_retire_key(ca, req->label, 0));
    if (final_crl) {
        *final_crl = crl;
        crl = NULL;
    }
out:
    X509_CRL_free(crl);
    store_ca_free(&rec);
    return rc;
}
