/* keyline: hsm.c's helpers (not for callers outside hsm/). */
#ifndef KL_HSM_INTERNAL_H
#define KL_HSM_INTERNAL_H

#include "hsm.h"

/* 1 when this process has a PKCS#11 module loaded (an hsm_ctx open). */
int hsm_module_loaded(void);
/* A bare label or a pkcs11: URI with object= (token checked) -> malloc'd label. */
kl_rc hsm_label_of(const hsm_ctx *h, const char *arg, char **out) KL_WUR;

/* Ed25519 keys never go near libp11 (0.4.12 cannot enumerate a token holding one). */
/* PureEdDSA signature (CKM_EDDSA) of msg with the private key labelled `label`, through the
 * module's own functions on h's session (takes h->mu). *siglen: sig's size in, length out. */
kl_rc hsm_ed_sign(hsm_ctx *h, const char *label, const uint8_t *msg, size_t len, uint8_t *sig,
                  size_t *siglen) KL_WUR;
/* An EVP_PKEY holding the public key `pub` whose signatures (EVP_DigestSign, X509_sign,
 * X509_CRL_sign, X509_REQ_sign, OCSP_basic_sign) are made by hsm_ed_sign with `label` on h
 * (hsm_ed25519.c). It must not outlive h. */
kl_rc hsm_ed_pkey_new(hsm_ctx *h, const char *label, const uint8_t pub[32], EVP_PKEY **out) KL_WUR;

#endif
