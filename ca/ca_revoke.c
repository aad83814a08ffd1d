/* keyline: revocation, CRLs, OCSP responses and certificate status, one implementation for
 * the CLI and the servers. */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_internal.h"
#include "ca_image.h"

#define CA_OCSP_MAX_ENTRIES 32
#define CA_REASON_SUPERSEDED 4 /* RFC 5280 5.3.1 */

/* RFC 5280 5.3.1 CRLReason names (value 7 is not used). */
static const char *const ca_reasons[] = {
    "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
    "superseded",    "cessationOfOperation", "certificateHold", NULL,
    "removeFromCRL", "privilegeWithdrawn",   "aACompromise",
};
#define CA_NREASONS (int)(sizeof ca_reasons / sizeof ca_reasons[0])

int ca_reason_from_name(const char *name)
{
    for (int i = 0; i < CA_NREASONS; i++) {
        if (ca_reasons[i] && strcmp(ca_reasons[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

const char *ca_reason_name(int reason)
{
    if (reason >= 0 && reason < CA_NREASONS && ca_reasons[reason]) {
        return ca_reasons[reason];
    }
    return "unspecified";
}

kl_rc ca_revoke_root_check(ca_ctx *ca, const char *serial, const char *issuer)
{
    kl_rc rc = KL_OK;
    store_cert c;
    memset(&c, 0, sizeof c);
    char *hex = NULL;
    const ca_entry *e = NULL;
    if (!issuer) {
        rc = store_cert_get(ca->st, serial, &c);
        if (rc != KL_OK) {
            rc = rc == KL_ENOTFOUND ? KL_OK : rc; /* an unknown serial: the revocation says so */
            goto out;
        }
        issuer = c.issuer;
    }
    /* a CA not readable here (its record alone) has no certificate of its own to compare */
    if (ca_entry_get(ca, issuer, 0, &e) != KL_OK || e->parent) {
        ERR_clear_error();
        rc = KL_OK;
        goto out;
    }
    hex = ca_serial_hex(X509_get0_serialNumber(e->cert));
    ENSURE(hex, KL_EINTERNAL, "out of memory");
    /* RFC 5280 6.1: a trust anchor is not validated, so nothing looks for it in a CRL, least of
     * all its own: the revocation would change nothing for any relying party */
    ENSURE(strcmp(hex, serial) != 0, KL_EPOLICY,
           "revoking %s refused: it is the self-signed certificate of root CA '%s', which no "
           "relying party looks for in a CRL (its own least of all): retire the root "
           "(keyline-ca ca retire --label %s) and remove it from the relying parties' trust "
           "anchors",
           serial, issuer, issuer);
out:
    OPENSSL_free(hex);
    store_cert_free(&c);
    return rc;
}

kl_rc ca_revoke(ca_ctx *ca, const char *serial_hex, int reason, const char *actor)
{
    char norm[64];
    kl_rc rc = ca_serial_normalise(serial_hex, norm, sizeof norm);
    if (rc != KL_OK) {
        return rc;
    }
    if (reason < 0 || reason >= CA_NREASONS || !ca_reasons[reason] || reason == 8) {
        return kl_fail(KL_EUSAGE, "invalid revocation reason %d", reason);
    }
    rc = ca_revoke_root_check(ca, norm, NULL);
    if (rc != KL_OK) {
        return rc;
    }
    /* a revocation dated before its certificate: a clock that is wrong (ca_clock_check) */
    time_t now = time(NULL);
    store_cert_state st;
    if (store_cert_state_get(ca->st, norm, &st) == KL_OK && now < st.not_before) {
        char clock[21], from[21];
        return kl_fail(KL_EPOLICY,
                       "revoking %s refused: this host's clock reads %s, before the certificate "
                       "is valid (from %s): set the clock right first",
                       norm, ca_time_iso(now, clock), ca_time_iso(st.not_before, from));
    }
    rc = store_cert_revoke(ca->st, norm, reason, now, actor ? actor : "unknown");
    if (rc == KL_ENOTFOUND) {
        return kl_fail(KL_ENOTFOUND, "no issued certificate with serial %s", norm);
    }
    if (rc == KL_EEXIST) {
        return kl_fail(KL_EEXIST, "certificate %s is already revoked", norm);
    }
    return rc;
}

int ca_is_ocsp_signer_label(const char *label)
{
    size_t n = strlen(label), k = strlen(CA_OCSP_SUFFIX);
    return n > k && strcmp(label + n - k, CA_OCSP_SUFFIX) == 0;
}

kl_rc ca_crl(ca_ctx *ca, const char *issuer, X509_CRL **out)
{
    return ca_crl_until(ca, issuer, 0, out);
}

kl_rc ca_crl_until(ca_ctx *ca, const char *issuer, time_t next_update, X509_CRL **out)
{
    ca_crl_result r;
    *out = NULL;
    kl_rc rc = ca_crl_der(ca, issuer, next_update, &r);
    if (rc != KL_OK) {
        return rc;
    }
    const unsigned char *p = r.der;
    *out = d2i_X509_CRL(NULL, &p, (long)r.len);
    rc = *out ? KL_OK : kl_fail_ssl(KL_EINTERNAL, "the CRL just signed does not parse");
    ca_crl_result_free(&r);
    return rc;
}

/* 1 when the store records `cert` revoked. */
static int ca_cert_revoked(ca_ctx *ca, const X509 *cert)
{
    store_cert_state st;
    char *hex = ca_serial_hex(X509_get0_serialNumber(cert));
    int revoked = hex && store_cert_state_get(ca->st, hex, &st) == KL_OK &&
                  strcmp(st.status, STORE_ST_REVOKED) == 0;
    OPENSSL_free(hex);
    ERR_clear_error();
    return revoked;
}

int ca_ocsp_signer_usable(ca_ctx *ca, const X509 *cert, time_t now)
{
    /* RFC 6960 4.2.2.2.1: a relying party does not check a signer with id-pkix-ocsp-nocheck
     * for revocation; a revoked signer is kept out of use here, or its revocation is void */
    return X509_cmp_time(X509_get0_notAfter(cert), &now) > 0 && !ca_cert_revoked(ca, cert);
}

/* The delegated signer of `issuer` (record "<issuer>.ocsp", name into label): its certificate
 * (*cert, the caller frees) and whether it is past half its life and not revoked (*due; also
 * when it does not parse). KL_ENOTFOUND when there is none. */
static kl_rc ca_ocsp_signer_get(ca_ctx *ca, const char *issuer, char *label, size_t cap,
                                X509 **cert, int *due)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    snprintf(label, cap, "%s" CA_OCSP_SUFFIX, issuer);
    kl_rc rc = store_ca_get(ca->st, label, &rec);
    *cert = rc == KL_OK ? ca_der_to_x509(rec.der, rec.der_len) : NULL;
    /* a revoked signer is not renewed: nothing is due */
    *due = rc == KL_OK &&
           (!*cert || (ca_cert_past_half(*cert, time(NULL)) && !ca_cert_revoked(ca, *cert)));
    store_ca_free(&rec);
    return rc;
}

/* A new certificate for the delegated signer `label`'s key (same subject as `old`), issued by
 * `issuer` through the pipeline (recorded like every certificate), then the CA record's
 * certificate replaced and the cache updated. */
static kl_rc ca_ocsp_signer_renew(ca_ctx *ca, const char *issuer, const char *label, X509 *old,
                                  const char *actor)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    const ca_entry *se = NULL;
    unsigned char *der = NULL;
    char *sn = NULL;
    ENSURE(old, KL_EINPUT, "OCSP signer '%s': stored certificate does not parse", label);
    /* a revoked signer's key may be compromised: never certified again */
    ENSURE(!ca_cert_revoked(ca, old), KL_EPOLICY,
           "OCSP signer '%s' is revoked: its key is not certified again", label);
    TRY(ca_entry_get(ca, label, 1, &se));
    TRY(ca_certify(ca, se->key, X509_get0_pubkey(old), X509_get_subject_name(old), "ocsp-signer",
                   issuer, NULL, actor, &cert));
    int dl = i2d_X509(cert, &der);
    ENSURE_SSL(dl > 0, KL_EINTERNAL, "cannot encode certificate");
    sn = ca_serial_hex(X509_get0_serialNumber(cert));
    char detail[256];
    snprintf(detail, sizeof detail, "label=%s issuer=%s serial=%s (renewed)", label, issuer,
             sn ? sn : "?");
    TRY(store_ca_recert(ca->st, label, der, (size_t)dl, actor, detail));
    ca_entry_set_cert(ca, label, cert);
    cert = NULL;
out:
    X509_free(cert);
    OPENSSL_free(der);
    OPENSSL_free(sn);
    return rc;
}

kl_rc ca_ocsp_signer_final(ca_ctx *ca, const char *issuer, const char *actor)
{
    char label[128];
    X509 *x = NULL;
    int due = 0;
    kl_rc rc = ca_ocsp_signer_get(ca, issuer, label, sizeof label, &x, &due);
    if (rc == KL_OK && x && ca_cert_revoked(ca, x)) {
        rc = KL_OK; /* revoked: not renewed, its CA's OCSP answers end with its key */
    } else if (rc == KL_OK) {
        rc = ca_ocsp_signer_renew(ca, issuer, label, x, actor);
    } else if (rc == KL_ENOTFOUND) {
        rc = ca_ocsp_signer_ensure(ca, issuer, actor, NULL);
    }
    X509_free(x);
    return rc;
}

int ca_ocsp_signer_revoked(ca_ctx *ca, const char *issuer)
{
    char label[128];
    X509 *x = NULL;
    int due = 0;
    int revoked = ca_ocsp_signer_get(ca, issuer, label, sizeof label, &x, &due) == KL_OK && x &&
                  ca_cert_revoked(ca, x);
    X509_free(x);
    ERR_clear_error();
    return revoked;
}

int ca_ocsp_signer_due(ca_ctx *ca, const char *issuer, time_t *not_after)
{
    char label[128];
    X509 *x = NULL;
    int due = 0;
    if (ca_ocsp_signer_get(ca, issuer, label, sizeof label, &x, &due) == KL_OK && x && not_after) {
        ca_asn1_time(X509_get0_notAfter(x), not_after);
    }
    X509_free(x);
    return due;
}

kl_rc ca_ocsp_signer_ensure(ca_ctx *ca, const char *issuer, const char *actor, int *renewed)
{
    char label[128];
    X509 *x = NULL;
    int due = 0;
    if (renewed) {
        *renewed = 0;
    }
    kl_rc rc = ca_ocsp_signer_get(ca, issuer, label, sizeof label, &x, &due);
    if (rc == KL_OK) {
        /* short-lived instead of revocable (ocsp-signer template): renewed past half its life */
        if (due) {
            rc = ca_ocsp_signer_renew(ca, issuer, label, x, actor);
            if (rc == KL_OK && renewed) {
                *renewed = 1;
            }
        }
        X509_free(x);
        return rc;
    }
    if (rc != KL_ENOTFOUND) {
        return rc;
    }
    const ca_entry *ie = NULL;
    rc = ca_entry_get(ca, issuer, 0, &ie);
    if (rc != KL_OK) {
        return rc;
    }
    char subject[300];
    snprintf(subject, sizeof subject, "CN=%s OCSP signer", issuer);
    X509 *cert = NULL;
    rc = ca_create(ca, label, "ocsp-signer", subject, HSM_KEY_EC_P256, issuer, actor, &cert);
    X509_free(cert);
    return rc;
}

/* The checks of ca_ocsp_signer_new before anything changes: `issuer` is an active CA that
 * issues certificates and can sign now; *old gets the stored certificate of its signer `label`
 * (NULL when there is none); KL_EPOLICY when that one is current and `replace` is not set. */
static kl_rc ca_ocsp_signer_new_check(ca_ctx *ca, const char *issuer, const char *label,
                                      int replace, X509 **old, store_ca *rec)
{
    kl_rc rc = KL_OK;
    store_ca irec;
    const ca_entry *ie = NULL;
    char *sn = NULL;
    memset(&irec, 0, sizeof irec);
    *old = NULL;
    ENSURE(!ca_is_ocsp_signer_label(issuer), KL_EUSAGE,
           "'%s' is a delegated OCSP signer: name its CA (--issuer without " CA_OCSP_SUFFIX ")",
           issuer);
    rc = store_ca_get(ca->st, issuer, &irec);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_ENOTFOUND, "no CA labelled '%s' (see keyline-ca ca list)", issuer);
    }
    TRY(rc);
    ENSURE(strcmp(irec.status, CA_ST_ACTIVE) == 0 && !ca_is_firmware_template(irec.template_name),
           KL_EPOLICY, "'%s' is %s (%s): only an active issuing CA has a delegated OCSP signer",
           issuer, ca_is_firmware_template(irec.template_name) ? "a firmware key" : "a CA",
           irec.status);
    /* the issuer must be able to certify the new key before the old one is destroyed */
    TRY(ca_entry_get(ca, issuer, 1, &ie));
    TRY(ca_issuer_check(ca, issuer, time(NULL)));
    rc = store_ca_get(ca->st, label, rec);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK; /* none yet: made as ca_ocsp_signer_ensure makes the first */
        goto out;
    }
    TRY(rc);
    *old = ca_der_to_x509(rec->der, rec->der_len);
    ENSURE(*old, KL_EINPUT, "OCSP signer '%s': stored certificate does not parse", label);
    sn = ca_serial_hex(X509_get0_serialNumber(*old));
    ENSURE(sn, KL_EINTERNAL, "out of memory");
    ENSURE(replace || !ca_ocsp_signer_usable(ca, *old, time(NULL)), KL_EPOLICY,
           "the OCSP signer '%s' of %s (certificate %s) is valid and not revoked: it is renewed "
           "when due (keyline-ca maintain); to replace its key anyway, give --replace (its "
           "certificate is revoked, superseded, and its key destroyed)",
           label, issuer, sn);
out:
    OPENSSL_free(sn);
    store_ca_free(&irec);
    return rc;
}

kl_rc ca_ocsp_signer_new(ca_ctx *ca, const char *issuer, int replace, const char *actor,
                         ca_ocsp_signer_made *out)
{
    kl_rc rc = KL_OK;
    char label[128], detail[400];
    store_ca rec;
    X509 *old = NULL, *cert = NULL;
    EVP_PKEY *pub = NULL, *priv = NULL;
    hsm_ctx *h = NULL;
    unsigned char *der = NULL;
    char *sn = NULL, *old_sn = NULL;
    int generated = 0;
    memset(&rec, 0, sizeof rec);
    memset(out, 0, sizeof *out);
    ENSURE(ca->hsm, KL_EUSAGE, "a new OCSP signer needs the token");
    ENSURE(strlen(issuer) + strlen(CA_OCSP_SUFFIX) < sizeof label, KL_EUSAGE,
           "CA label '%s' is too long", issuer);
    snprintf(label, sizeof label, "%s" CA_OCSP_SUFFIX, issuer);
    TRY(ca_ocsp_signer_new_check(ca, issuer, label, replace, &old, &rec));
    if (!old) {
        TRY(ca_ocsp_signer_ensure(ca, issuer, actor, NULL));
        TRY(ca_cert(ca, label, &cert));
        goto made;
    }
    old_sn = ca_serial_hex(X509_get0_serialNumber(old));
    ENSURE(old_sn, KL_EINTERNAL, "out of memory");
    snprintf(out->old_serial, sizeof out->old_serial, "%s", old_sn);
    if (!ca_cert_revoked(ca, old)) {
        /* current (--replace) or expired: every process stops signing with it at its next
         * answer, and none renews it (an expired one is due) for the key about to go: a
         * revoked signer is never used or renewed (ca_ocsp_signer_usable, ca_ocsp_signer_get) */
        TRY(ca_revoke(ca, old_sn, CA_REASON_SUPERSEDED, actor));
        out->superseded = 1;
    }
    /* RFC 6960 4.2.2.2.1: its certificate carries id-pkix-ocsp-nocheck, so no relying party
     * would see a revocation of it: the key is destroyed, and the label is free for the new one
     * (a key's label is its CA record's; CKA_ID is random per key) */
    TRY(ca_hsm_of(ca, label, &h));
    rc = hsm_key_destroy(h, label);
    out->old_key_destroyed = rc == KL_OK;
    rc = rc == KL_ENOTFOUND ? KL_OK : rc; /* gone already: an earlier run, or a key lost */
    TRY(rc);
    int kt = hsm_key_type_from_name(rec.key_type);
    kt = kt < 0 ? HSM_KEY_EC_P256 : kt;
    TRY(ca_key_token_check(ca, h, label, (hsm_key_type)kt));
    TRY(hsm_key_generate(h, label, (hsm_key_type)kt, &pub));
    generated = 1;
    TRY(hsm_key_load(h, label, &priv));
    TRY(ca_certify(ca, priv, pub, X509_get_subject_name(old), "ocsp-signer", issuer, NULL, actor,
                   &cert));
    int dl = i2d_X509(cert, &der);
    ENSURE_SSL(dl > 0, KL_EINTERNAL, "cannot encode certificate");
    sn = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(sn, KL_EINTERNAL, "out of memory");
    snprintf(detail, sizeof detail,
             "label=%s issuer=%s serial=%s (new key) old-serial=%s old-key=%s%s", label, issuer, sn,
             old_sn, out->old_key_destroyed ? "destroyed" : "absent",
             out->superseded ? " old-revoked=superseded" : "");
    /* its own action: a key replaced must not read as a renewal of the same key (ca-recert) */
    TRY(store_ca_rekey(ca->st, label, der, (size_t)dl, actor, detail));
    generated = 0;
    ca_entry_set_cert(ca, label, X509_dup(cert));
made:
    out->cert = cert;
    cert = NULL;
out:
    if (generated) {
        /* not recorded: the new certificate revoked, the new key destroyed; the record keeps
         * the old certificate (revoked or expired: the CA signs its answers), run again */
        ca_key_discard(ca, label, &cert, cert ? 1 : 0, actor, rc);
    }
    X509_free(old);
    X509_free(cert);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    OPENSSL_free(der);
    OPENSSL_free(sn);
    OPENSSL_free(old_sn);
    store_ca_free(&rec);
    return rc;
}

/* The hash of a CertID this responder answers: SHA-1 (RFC 5019 2.1.1: what clients send) and
 * SHA-256/384/512. MD5 (RFC 6151: collisions are cheap) and SHA-224 (no client uses it) name
 * no certificate here: such a CertID is not ours to answer, as one of another CA is. */
static const EVP_MD *ca_ocsp_certid_md(const ASN1_OBJECT *obj)
{
    switch (obj ? OBJ_obj2nid(obj) : NID_undef) {
    case NID_sha1: return EVP_sha1();
    case NID_sha256: return EVP_sha256();
    case NID_sha384: return EVP_sha384();
    case NID_sha512: return EVP_sha512();
    default: return NULL;
    }
}

/* Find which of our CAs issued the certificate named by an OCSP CertID (hashed with one of
 * ca_ocsp_certid_md's hashes: else KL_ENOTFOUND). */
static kl_rc ca_ocsp_find_issuer(ca_ctx *ca, OCSP_CERTID *cid, char *label, size_t labellen)
{
    kl_rc rc = KL_OK;
    store_ca *list = NULL;
    size_t n = 0;
    ASN1_OBJECT *md_obj = NULL;
    TRY(store_ca_list(ca->st, &list, &n));
    OCSP_id_get0_info(NULL, &md_obj, NULL, NULL, cid);
    const EVP_MD *md = ca_ocsp_certid_md(md_obj);
    rc = KL_ENOTFOUND;
    for (size_t i = 0; md && i < n; i++) {
        if (ca_is_ocsp_signer_label(list[i].label) || strcmp(list[i].status, "rollover") == 0) {
            continue; /* OCSP signers and rollover certificates issue no end-entity certs */
        }
        const ca_entry *e = NULL;
        if (ca_entry_get(ca, list[i].label, 0, &e) != KL_OK) {
            continue;
        }
        OCSP_CERTID *mine =
            OCSP_cert_id_new(md, X509_get_subject_name(e->cert), X509_get0_pubkey_bitstr(e->cert),
                             X509_get0_serialNumber(e->cert));
        int same = mine && OCSP_id_issuer_cmp(mine, cid) == 0;
        OCSP_CERTID_free(mine);
        if (same) {
            snprintf(label, labellen, "%s", list[i].label);
            rc = KL_OK;
            break;
        }
    }
out:
    store_ca_list_free(list, n);
    return rc;
}

int ca_ocsp_signer_current(ca_ctx *ca, const char *issuer, time_t now, const ca_entry **out)
{
    char label[160];
    snprintf(label, sizeof label, "%s" CA_OCSP_SUFFIX, issuer);
    *out = NULL;
    if (ca_entry_get(ca, label, 0, out) != KL_OK) {
        ERR_clear_error();
        *out = NULL;
        return 0;
    }
    if (ca_ocsp_signer_usable(ca, (*out)->cert, now)) {
        return 1;
    }
    /* revoked or expired as cached here: keyline-ca ocsp-signer new (another process) may have
     * given it a new key since; read only while the CA signs in its stead */
    ca_entry_reread(ca, label);
    return ca_ocsp_signer_usable(ca, (*out)->cert, now);
}

/* Who signs `issuer`'s answers at `now`: its delegated signer (RFC 6960 4.2.2.2) when set up
 * and current (*delegated 1), else the issuing CA itself; with its key. */
static kl_rc ca_ocsp_signer_pick(ca_ctx *ca, const char *issuer, time_t now,
                                 const ca_entry **signer, int *delegated)
{
    kl_rc rc = KL_OK;
    char signer_label[160];
    TRY(ca_clock_check(ca, issuer, now, "signing an OCSP answer"));
    snprintf(signer_label, sizeof signer_label, "%s" CA_OCSP_SUFFIX, issuer);
    *delegated = ca_ocsp_signer_current(ca, issuer, now, signer) &&
                 ca_entry_get(ca, signer_label, 1, signer) == KL_OK;
    if (!*delegated) {
        ERR_clear_error();
        /* a retired CA's key is gone (read every time: a long-running process may hold it) */
        TRY(ca_key_usable(ca, issuer, NULL));
        TRY(ca_entry_get(ca, issuer, 1, signer));
    }
out:
    return rc;
}

/* `next` (an answer's nextUpdate) no later than the notAfter of `signer`'s certificate: a
 * relying party that checks the signer over the answer's validity would otherwise find it
 * expired before the answer. KL_EPOLICY when that certificate has expired at `now`. */
static kl_rc ca_ocsp_next_clamp(const ca_entry *signer, time_t now, time_t *next)
{
    time_t na = 0;
    if (!ca_asn1_time(X509_get0_notAfter(signer->cert), &na)) {
        return kl_fail(KL_EINTERNAL, "OCSP signer '%s': its notAfter does not convert",
                       signer->label);
    }
    if (na <= now) {
        char t[21];
        return kl_fail(KL_EPOLICY, "no OCSP answer signed by '%s': its certificate expired at %s",
                       signer->label, ca_time_iso(na, t));
    }
    *next = *next > na ? na : *next;
    return KL_OK;
}

/* Sign `bs` with `signer` (ca_ocsp_signer_pick): a delegated signer's certificate goes in the
 * response. `flags`: OCSP_RESPID_KEY and the like. */
static kl_rc ca_ocsp_sign(const ca_entry *signer, int delegated, OCSP_BASICRESP *bs,
                          unsigned long flags)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *extra = NULL;
    if (delegated) {
        extra = sk_X509_new_null();
        ENSURE(extra, KL_EINTERNAL, "out of memory");
    } else {
        flags |= OCSP_NOCERTS;
    }
    ENSURE_SSL(
        OCSP_basic_sign(bs, signer->cert, signer->key, ca_sign_md(signer->key), extra, flags) == 1,
        KL_EHSM, "signing the OCSP response in the HSM failed");
out:
    sk_X509_free(extra);
    return rc;
}

kl_rc ca_ocsp_ca_revocation(ca_ctx *ca, const char *issuer, time_t *revoked_at)
{
    kl_rc rc = KL_OK;
    char *hex = NULL;
    store_cert c;
    memset(&c, 0, sizeof c);
    *revoked_at = 0;
    const char *cur = issuer;
    for (int depth = 0; cur; depth++) {
        const ca_entry *e = NULL;
        store_cert_state st;
        ENSURE(depth < 16, KL_EINPUT, "CA chain of '%s' is too deep or loops", issuer);
        TRY(ca_entry_get(ca, cur, 0, &e));
        hex = ca_serial_hex(X509_get0_serialNumber(e->cert));
        ENSURE(hex, KL_EINTERNAL, "out of memory");
        /* one point read per CA; the row (for its time) only for a revoked one */
        rc = store_cert_state_get(ca->st, hex, &st);
        if (rc == KL_OK && strcmp(st.status, STORE_ST_REVOKED) == 0) {
            TRY(store_cert_get(ca->st, hex, &c));
            if (!*revoked_at || c.revoked_at < *revoked_at) {
                *revoked_at = c.revoked_at;
            }
            store_cert_free(&c);
        } else if (rc != KL_ENOTFOUND) { /* not recorded here (an imported parent): no verdict */
            TRY(rc);
        }
        rc = KL_OK;
        OPENSSL_free(hex);
        hex = NULL;
        cur = e->parent; /* cached entries live as long as the ctx */
    }
out:
    store_cert_free(&c);
    OPENSSL_free(hex);
    ERR_clear_error();
    return rc;
}

kl_rc ca_ocsp_single(ca_ctx *ca, const char *issuer, const ca_ocsp_status *st, time_t now,
                     time_t next_update, uint8_t **der, size_t *len)
{
    kl_rc rc = KL_OK;
    const ca_entry *e = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_CERTID *cid = NULL;
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *now_t = NULL, *next_t = NULL, *rev_t = NULL;
    BIGNUM *bn = NULL;
    *der = NULL;
    *len = 0;
    TRY(ca_entry_get(ca, issuer, 0, &e));
    ENSURE(st->serial_hex && BN_hex2bn(&bn, st->serial_hex) > 0 &&
               (serial = BN_to_ASN1_INTEGER(bn, NULL)) != NULL,
           KL_EINPUT, "bad serial");
    /* RFC 5019 2.1.1: clients use SHA-1 for the CertID; the responder answers them */
    cid = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(e->cert),
                           X509_get0_pubkey_bitstr(e->cert), serial);
    bs = OCSP_BASICRESP_new();
    now_t = ASN1_TIME_set(NULL, now);
    next_t = ASN1_TIME_set(NULL, next_update);
    ENSURE_SSL(cid && bs && now_t && next_t, KL_EINTERNAL, "out of memory");
    int status = st->status, reason = -1;
    if (status == V_OCSP_CERTSTATUS_REVOKED) {
        reason = st->reason > 0 ? st->reason : OCSP_REVOKED_STATUS_NOSTATUS;
        rev_t = ASN1_TIME_set(NULL, st->revoked_at);
        ENSURE_SSL(rev_t, KL_EINTERNAL, "out of memory");
    }
    const ca_entry *signer = NULL;
    int delegated = 0;
    TRY(ca_ocsp_signer_pick(ca, issuer, now, &signer, &delegated));
    TRY(ca_ocsp_next_clamp(signer, now, &next_update));
    ENSURE_SSL(ASN1_TIME_set(next_t, next_update), KL_EINTERNAL, "out of memory");
    ENSURE_SSL(OCSP_basic_add1_status(bs, cid, status, reason, rev_t, now_t, next_t), KL_EINTERNAL,
               "cannot add OCSP status");
    /* no nonce (RFC 5019 4: pre-produced responses cannot carry the client's); the responder
     * named by its key hash, the smaller form */
    TRY(ca_ocsp_sign(signer, delegated, bs, OCSP_RESPID_KEY));
    resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    ENSURE_SSL(resp, KL_EINTERNAL, "cannot build OCSP response");
    unsigned char *enc = NULL;
    int n = i2d_OCSP_RESPONSE(resp, &enc);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode OCSP response");
    *der = enc;
    *len = (size_t)n;
out:
    OCSP_RESPONSE_free(resp);
    OCSP_BASICRESP_free(bs);
    OCSP_CERTID_free(cid);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(now_t);
    ASN1_TIME_free(next_t);
    ASN1_TIME_free(rev_t);
    BN_free(bn);
    return rc;
}

/* RFC 9654 2.1: Nonce ::= OCTET STRING (SIZE(1..128)). "A responder MUST reject OCSP requests
 * that have a Nonce with a length of either 0 octets or greater than 128 octets with the
 * malformedRequest OCSPResponseStatus." The extension's value is that OCTET STRING's DER. */
#define CA_OCSP_NONCE_MAX 128

static kl_rc ca_ocsp_nonce_check(X509_EXTENSION *ext)
{
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    const unsigned char *p = ASN1_STRING_get0_data(v), *end = p + ASN1_STRING_length(v);
    long len = 0;
    int tag = 0, cls = 0;
    int r = ASN1_get_object(&p, &len, &tag, &cls, end - p);
    ERR_clear_error();
    if (r != 0 || tag != V_ASN1_OCTET_STRING || cls != V_ASN1_UNIVERSAL || len != end - p) {
        return kl_fail(KL_EINPUT, "OCSP nonce is not one OCTET STRING");
    }
    if (len < 1 || len > CA_OCSP_NONCE_MAX) {
        return kl_fail(KL_EINPUT, "OCSP nonce of %ld octets (1 to %d allowed)", len,
                       CA_OCSP_NONCE_MAX);
    }
    return KL_OK;
}

/* RFC 6960 4.4: "Unrecognized extensions MUST be ignored (unless they have the critical flag
 * set and are not understood)." `nonce_ok`: the nonce is understood here. */
static kl_rc ca_ocsp_ext_check(X509_EXTENSION *ext, int nonce_ok, const char *where)
{
    if (nonce_ok && OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == NID_id_pkix_OCSP_Nonce) {
        return ca_ocsp_nonce_check(ext);
    }
    if (X509_EXTENSION_get_critical(ext) > 0) {
        char oid[80];
        OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(ext), 1);
        return kl_fail(KL_EINPUT, "OCSP request: unknown critical %s extension %s", where, oid);
    }
    return KL_OK;
}

kl_rc ca_ocsp_request_check(OCSP_REQUEST *req)
{
    kl_rc rc = KL_OK;
    for (int i = 0; i < OCSP_REQUEST_get_ext_count(req); i++) {
        TRY(ca_ocsp_ext_check(OCSP_REQUEST_get_ext(req, i), 1, "requestExtensions"));
    }
    for (int i = 0; i < OCSP_request_onereq_count(req); i++) {
        OCSP_ONEREQ *one = OCSP_request_onereq_get0(req, i);
        for (int j = 0; j < OCSP_ONEREQ_get_ext_count(one); j++) {
            TRY(ca_ocsp_ext_check(OCSP_ONEREQ_get_ext(one, j), 0, "singleRequestExtensions"));
        }
    }
out:
    return rc;
}

/* A revoked status is answered with a thisUpdate after the revocation's second: every good
 * answer was signed at or before it, and thisUpdate is the answer's Last-Modified (RFC 5019
 * 6.2), which must move for a cache revalidating with If-Modified-Since to see the change. In
 * the revocation's own second, wait for the next (keyline-cad's pre-producer skips the answer
 * until then): at most a second. A revocation recorded with a time ahead of this clock (another
 * host's, or a clock set ahead) is answered at once, with this clock's time: revoked now, never
 * good while waiting for it. 1 when *now moved. */
static int ca_ocsp_past_revocation(time_t revoked_at, time_t *now)
{
    if (*now != revoked_at) {
        return 0;
    }
    for (int i = 0; i < 60 && (*now = time(NULL)) <= revoked_at; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* One entry of a request, as answered. */
typedef struct {
    OCSP_CERTID *cid;
    int status, reason;
    time_t revoked_at;
} ca_ocsp_entry;

/* The status of the certificate `cid` names, when `issuer` (found so far; "" none yet) or, for
 * the first, any CA of ours issued it: its own revocation, or when it is good and its CA or one
 * above is revoked (*ca_rev, read once per request: ca_ocsp_ca_revocation), that one's. */
static kl_rc ca_ocsp_entry_status(ca_ctx *ca, ca_ocsp_entry *en, char *issuer, size_t cap,
                                  time_t *ca_rev, int *ca_rev_read)
{
    kl_rc rc = KL_OK;
    char this_issuer[128], *hex = NULL;
    ASN1_INTEGER *serial = NULL;
    store_cert c;
    memset(&c, 0, sizeof c);
    en->status = V_OCSP_CERTSTATUS_UNKNOWN;
    en->reason = -1;
    en->revoked_at = 0;
    if (ca_ocsp_find_issuer(ca, en->cid, this_issuer, sizeof this_issuer) != KL_OK ||
        (issuer[0] && strcmp(issuer, this_issuer) != 0)) {
        goto out; /* not ours, or another CA's than the request's first: "unknown" */
    }
    snprintf(issuer, cap, "%s", this_issuer);
    OCSP_id_get0_info(NULL, NULL, NULL, &serial, en->cid);
    hex = ca_serial_hex(serial);
    if (!hex || store_cert_get(ca->st, hex, &c) != KL_OK || strcmp(c.issuer, issuer) != 0) {
        goto out; /* unknown serial */
    }
    if (strcmp(c.status, STORE_ST_VALID) == 0) {
        en->status = V_OCSP_CERTSTATUS_GOOD;
    } else if (strcmp(c.status, STORE_ST_REVOKED) == 0) {
        en->status = V_OCSP_CERTSTATUS_REVOKED;
        en->reason = c.revoke_reason > 0 ? c.revoke_reason : OCSP_REVOKED_STATUS_NOSTATUS;
        en->revoked_at = c.revoked_at;
    }
    /* pending (not yet confirmed by the device): "unknown" */
    if (en->status == V_OCSP_CERTSTATUS_GOOD) {
        if (!*ca_rev_read) {
            TRY(ca_ocsp_ca_revocation(ca, issuer, ca_rev));
            *ca_rev_read = 1;
        }
        if (*ca_rev) {
            en->status = V_OCSP_CERTSTATUS_REVOKED;
            en->reason = OCSP_REVOKED_STATUS_CACOMPROMISE;
            en->revoked_at = *ca_rev;
        }
    }
out:
    store_cert_free(&c);
    OPENSSL_free(hex);
    return rc;
}

kl_rc ca_ocsp_respond(ca_ctx *ca, OCSP_REQUEST *req, long validity, OCSP_RESPONSE **out)
{
    kl_rc rc = KL_OK;
    OCSP_BASICRESP *bs = NULL;
    ASN1_TIME *now_t = NULL, *next_t = NULL, *rev_t = NULL;
    char issuer[128] = "";
    ca_ocsp_entry en[CA_OCSP_MAX_ENTRIES];
    time_t ca_rev = 0;
    int ca_rev_read = 0;
    *out = NULL;

    int nreq = OCSP_request_onereq_count(req);
    /* Each entry costs a CertID match against every CA: bound the work one request can ask
     * for (RFC 5019 clients send one). */
    if (nreq <= 0 || nreq > CA_OCSP_MAX_ENTRIES || ca_ocsp_request_check(req) != KL_OK) {
        *out = OCSP_response_create(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, NULL);
        return *out ? KL_OK : kl_fail_ssl(KL_EINTERNAL, "cannot build OCSP response");
    }
    time_t now = time(NULL);
    for (int i = 0; i < nreq; i++) {
        en[i].cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, i));
        TRY(ca_ocsp_entry_status(ca, &en[i], issuer, sizeof issuer, &ca_rev, &ca_rev_read));
        if (en[i].status == V_OCSP_CERTSTATUS_REVOKED) {
            ca_ocsp_past_revocation(en[i].revoked_at, &now);
        }
    }
    if (!issuer[0]) {
        /* RFC 6960 2.3: "unauthorized" when the server is not authoritative for the request. */
        *out = OCSP_response_create(OCSP_RESPONSE_STATUS_UNAUTHORIZED, NULL);
        ENSURE_SSL(*out, KL_EINTERNAL, "cannot build OCSP response");
        goto out;
    }
    const ca_entry *signer = NULL;
    int delegated = 0;
    TRY(ca_ocsp_signer_pick(ca, issuer, now, &signer, &delegated));
    time_t next = now + (validity > 0 ? validity : 86400);
    TRY(ca_ocsp_next_clamp(signer, now, &next));
    bs = OCSP_BASICRESP_new();
    now_t = ASN1_TIME_set(NULL, now);
    next_t = ASN1_TIME_set(NULL, next);
    ENSURE_SSL(bs && now_t && next_t, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < nreq; i++) {
        ASN1_TIME_free(rev_t);
        rev_t = en[i].status == V_OCSP_CERTSTATUS_REVOKED ? ASN1_TIME_set(NULL, en[i].revoked_at)
                                                          : NULL;
        ENSURE_SSL(en[i].status != V_OCSP_CERTSTATUS_REVOKED || rev_t, KL_EINTERNAL,
                   "out of memory");
        ENSURE_SSL(
            OCSP_basic_add1_status(bs, en[i].cid, en[i].status, en[i].reason, rev_t, now_t, next_t),
            KL_EINTERNAL, "cannot add OCSP status");
    }
    ENSURE_SSL(OCSP_copy_nonce(bs, req) > 0, KL_EINTERNAL, "cannot copy OCSP nonce");
    TRY(ca_ocsp_sign(signer, delegated, bs, 0));
    *out = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    ENSURE_SSL(*out, KL_EINTERNAL, "cannot build OCSP response");
out:
    OCSP_BASICRESP_free(bs);
    ASN1_TIME_free(now_t);
    ASN1_TIME_free(next_t);
    ASN1_TIME_free(rev_t);
    return rc;
}

kl_rc ca_cert_check_valid(ca_ctx *ca, X509 *cert)
{
    store_cert c;
    kl_rc rc = ca_cert_check_row(ca, cert, NULL, 0, &c);
    store_cert_free(&c);
    return rc;
}

kl_rc ca_cert_check_row(ca_ctx *ca, X509 *cert, const uint8_t *der, size_t der_len, store_cert *row)
{
    kl_rc rc = KL_OK;
    char *hex = ca_serial_hex(X509_get0_serialNumber(cert));
    store_cert c;
    memset(&c, 0, sizeof c);
    memset(row, 0, sizeof *row);
    unsigned char *enc = NULL;
    const ca_entry *issuer = NULL;
    ENSURE(hex, KL_EINTERNAL, "out of memory");
    rc = store_cert_get(ca->st, hex, &c);
    if (rc == KL_EIO || rc == KL_EINTERNAL) {
        goto out; /* the store failed: not a verdict on the certificate */
    }
    ENSURE(rc == KL_OK, KL_EAUTH, "certificate %s was not issued by this CA", hex);
    if (!der) {
        int n = i2d_X509(cert, &enc);
        der = enc;
        der_len = n > 0 ? (size_t)n : 0;
    }
    ENSURE(der_len > 0 && c.der && der_len == c.der_len &&
               CRYPTO_memcmp(der, c.der, c.der_len) == 0,
           KL_EAUTH, "certificate %s does not match the one issued under that serial", hex);
    TRY(ca_entry_get(ca, c.issuer, 0, &issuer));
    ENSURE(ca_signed_der_verify(c.der, c.der_len, X509_get0_pubkey(issuer->cert)) == KL_OK,
           KL_EAUTH, "certificate %s: signature does not verify", hex);
    ENSURE(strcmp(c.status, STORE_ST_VALID) == 0, KL_EAUTH, "certificate %s is %s", hex, c.status);
    time_t now = time(NULL);
    ENSURE(X509_cmp_time(X509_get0_notBefore(cert), &now) < 0, KL_EAUTH,
           "certificate %s is not yet valid", hex);
    ENSURE(X509_cmp_time(X509_get0_notAfter(cert), &now) > 0, KL_EAUTH,
           "certificate %s has expired", hex);
    *row = c;
    memset(&c, 0, sizeof c);
out:
    ERR_clear_error();
    OPENSSL_free(hex);
    OPENSSL_free(enc);
    store_cert_free(&c);
    return rc;
}

kl_rc ca_cert_status_check(ca_ctx *ca, const char *serial_hex, time_t now)
{
    kl_rc rc = KL_OK;
    store_cert_state c;
    ENSURE(serial_hex && *serial_hex, KL_EINTERNAL, "no serial");
    rc = store_cert_state_get(ca->st, serial_hex, &c);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_EAUTH, "certificate %s was not issued by this CA", serial_hex);
        goto out;
    }
    TRY(rc);
    ENSURE(strcmp(c.status, STORE_ST_VALID) == 0, KL_EAUTH, "certificate %s is %s", serial_hex,
           c.status);
    /* Dates as recorded at issuance (the notBefore/notAfter of the DER in the row). A row
     * without them is not something we can vouch for. */
    ENSURE(c.not_before && c.not_after, KL_EAUTH, "certificate %s has no recorded validity",
           serial_hex);
    ENSURE(now >= c.not_before, KL_EAUTH, "certificate %s is not yet valid", serial_hex);
    ENSURE(now < c.not_after, KL_EAUTH, "certificate %s has expired", serial_hex);
out:
    return rc;
}
