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

#include "ca_internal.h"

kl_rc ca_rotate(ca_ctx *ca, const char *old_label, const char *new_label, hsm_key_type kt,
                const char *actor, X509 **cert_out)
{
    kl_rc rc = KL_OK;
    store_ca old, recs[3];
    memset(&old, 0, sizeof old);
    memset(recs, 0, sizeof recs);
    size_t nrecs = 0;
    const ca_entry *oe = NULL;
    EVP_PKEY *old_pub = NULL, *new_pub = NULL, *new_priv = NULL;
    X509 *newc = NULL, *nwo = NULL, *own = NULL;
    int made = 0;
    char nwo_label[96], own_label[96], detail[300];
    *cert_out = NULL;

    ENSURE(ca->hsm, KL_EUSAGE, "rotating a CA needs the token");
    /* the new label is checked before anything is looked up or made */
    TRY(ca_label_check_new(ca, new_label));
    TRY(store_ca_get(ca->st, old_label, &old));
    TRY(ca_label_role_check(new_label, old.template_name, old.parent));
    ENSURE(strcmp(old.status, "active") == 0, KL_EPOLICY, "CA '%s' is %s, not active", old_label,
           old.status);
    TRY(ca_entry_get(ca, old_label, 1, &oe));
    const X509_NAME *name = X509_get_subject_name(oe->cert);
    const char *kname = hsm_key_type_name(kt);
    if (old.parent && *old.parent) {
        /* An issuing CA: a new one under the same parent. */
        TRY(ca_key_new(ca, new_label, old.template_name, name, kt, old.parent, actor, &newc, NULL));
        made = 1;
        TRY(ca_record_fill(&recs[nrecs++], new_label, old.template_name, old.parent, kname, newc,
                           "active"));
        snprintf(detail, sizeof detail, "old=%s new=%s parent=%s", old_label, new_label,
                 old.parent);
    } else {
        /* the old root signs NewWithOld: it must still be able to, before a key is made */
        TRY(ca_issuer_check(ca, old_label, time(NULL)));
        ENSURE(strlen(new_label) + strlen(CA_ROLLOVER_NWO) <= CA_LABEL_MAX &&
                   strlen(old_label) + strlen(CA_ROLLOVER_OWN) <= CA_LABEL_MAX,
               KL_EUSAGE,
               "rotating root '%s' to '%s': the rollover labels '%s" CA_ROLLOVER_NWO
               "' and '%s" CA_ROLLOVER_OWN "' must fit in %d characters",
               old_label, new_label, new_label, old_label, CA_LABEL_MAX);
        snprintf(nwo_label, sizeof nwo_label, "%s" CA_ROLLOVER_NWO, new_label);
        snprintf(own_label, sizeof own_label, "%s" CA_ROLLOVER_OWN, old_label);
        TRY(ca_label_check_new(ca, nwo_label));
        TRY(ca_label_check_new(ca, own_label));
        TRY(ca_key_new(ca, new_label, old.template_name, name, kt, NULL, actor, &newc, &new_priv));
        made = 1;
        ENSURE_SSL((old_pub = X509_get_pubkey(oe->cert)) && (new_pub = X509_get_pubkey(newc)),
                   KL_EINTERNAL, "cannot read the CA public keys");
        TRY(ca_certify(ca, new_priv, new_pub, name, old.template_name, old_label, NULL, actor,
                       &nwo));
        TRY(ca_certify_under(ca, oe->key, old_pub, name, old.template_name, new_label, newc,
                             new_priv, actor, &own));
        TRY(ca_record_fill(&recs[nrecs++], new_label, old.template_name, NULL, kname, newc,
                           "active"));
        /* NewWithOld certifies the new key, OldWithNew the old one */
        TRY(ca_record_fill(&recs[nrecs++], nwo_label, old.template_name, old_label, kname, nwo,
                           "rollover"));
        TRY(ca_record_fill(&recs[nrecs++], own_label, old.template_name, new_label, old.key_type,
                           own, "rollover"));
        snprintf(detail, sizeof detail, "old=%s new=%s rollover=%s,%s", old_label, new_label,
                 nwo_label, own_label);
    }
    TRY(store_ca_put_all(ca->st, recs, nrecs, actor ? actor : "keyline", "ca-rotate", detail));
    *cert_out = newc;
    newc = NULL;
out:
    if (rc != KL_OK && made) {
        X509 *signed_certs[3] = {newc, nwo, own};
        ca_key_discard(ca, new_label, signed_certs, 3, actor, rc);
    }
    for (size_t i = 0; i < nrecs; i++) {
        OPENSSL_free(recs[i].der);
    }
    store_ca_free(&old);
    EVP_PKEY_free(old_pub);
    EVP_PKEY_free(new_pub);
    EVP_PKEY_free(new_priv);
    X509_free(newc);
    X509_free(nwo);
    X509_free(own);
    return rc;
}
