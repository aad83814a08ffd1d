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
 * parent and devices' trust anchors do not change. */
#include <stdio.h>
#include <string.h>

#include "ca_internal.h"

kl_rc ca_rotate(ca_ctx *ca, const char *old_label, const char *new_label, hsm_key_type kt,
                const char *actor, X509 **cert_out)
{
    kl_rc rc = KL_OK;
    store_ca old;
    memset(&old, 0, sizeof old);
    const ca_entry *oe = NULL, *ne = NULL;
    EVP_PKEY *old_pub = NULL, *new_pub = NULL;
    X509 *nwo = NULL, *own = NULL;
    char nwo_label[96], own_label[96], detail[300];
    *cert_out = NULL;

    ENSURE(ca->hsm, KL_EUSAGE, "rotating a CA needs the token");
    TRY(store_ca_get(ca->st, old_label, &old));
    ENSURE(strcmp(old.status, "active") == 0, KL_EPOLICY, "CA '%s' is %s, not active", old_label,
           old.status);
    TRY(ca_entry_get(ca, old_label, 1, &oe));
    const X509_NAME *name = X509_get_subject_name(oe->cert);
    if (old.parent && *old.parent) {
        /* An issuing CA: a new one under the same parent. */
        TRY(ca_create_named(ca, new_label, old.template_name, name, kt, old.parent, actor,
                            cert_out));
        snprintf(detail, sizeof detail, "old=%s new=%s parent=%s", old_label, new_label,
                 old.parent);
        TRY(store_audit_append(ca->st, actor ? actor : "keyline", "ca-rotate", detail));
        goto out;
    }
    snprintf(nwo_label, sizeof nwo_label, "%s.newwithold", new_label);
    snprintf(own_label, sizeof own_label, "%s.oldwithnew", old_label);
    TRY(ca_label_check_new(ca, nwo_label));
    TRY(ca_label_check_new(ca, own_label));
    TRY(ca_create_named(ca, new_label, old.template_name, name, kt, NULL, actor, cert_out));
    TRY(ca_entry_get(ca, new_label, 1, &ne));
    ENSURE_SSL((old_pub = X509_get_pubkey(oe->cert)) && (new_pub = X509_get_pubkey(ne->cert)),
               KL_EINTERNAL, "cannot read the CA public keys");
    TRY(ca_certify(ca, ne->key, new_pub, name, old.template_name, old_label, NULL, actor, &nwo));
    TRY(ca_record(ca, nwo_label, old.template_name, old_label, old.key_type, nwo, "rollover"));
    TRY(ca_certify(ca, oe->key, old_pub, name, old.template_name, new_label, NULL, actor, &own));
    TRY(ca_record(ca, own_label, old.template_name, new_label, old.key_type, own, "rollover"));
    snprintf(detail, sizeof detail, "old=%s new=%s rollover=%s,%s", old_label, new_label, nwo_label,
             own_label);
    TRY(store_audit_append(ca->st, actor ? actor : "keyline", "ca-rotate", detail));
out:
    if (rc != KL_OK && *cert_out) {
        X509_free(*cert_out);
        *cert_out = NULL;
    }
    store_ca_free(&old);
    EVP_PKEY_free(old_pub);
    EVP_PKEY_free(new_pub);
    X509_free(nwo);
    X509_free(own);
    return rc;
}
