/* keyline: what hsm.c and hsm_signer.c share (not for callers outside hsm/). */
#ifndef KL_HSM_INTERNAL_H
#define KL_HSM_INTERNAL_H

#include "hsm.h"

/* The client side of a signer pool (hsm_signer.c). */
typedef struct hsm_remote hsm_remote;

/* hsm.c: an hsm_ctx that forwards to `r` (owned from then on, also on failure). */
kl_rc hsm_ctx_new_remote(hsm_remote *r, const char *token_label, hsm_ctx **out) KL_WUR;
/* hsm.c: the pool behind a remote context, NULL for a local one. */
hsm_remote *hsm_ctx_remote(const hsm_ctx *h);
/* hsm.c: 1 when this process has a PKCS#11 module loaded (an hsm_ctx open). */
int hsm_module_loaded(void);
/* hsm.c: a bare label or a pkcs11: URI with object= (token checked) -> malloc'd label. */
kl_rc hsm_label_of(const hsm_ctx *h, const char *arg, char **out) KL_WUR;

/* hsm_signer.c: close the channels, reap the children, free. NULL is fine. */
void hsm_remote_free(hsm_remote *r);
/* hsm_signer.c: an EVP_PKEY whose private-key operation is a request to the pool. */
kl_rc hsm_remote_key_load(hsm_remote *r, const char *label, EVP_PKEY **out) KL_WUR;
/* hsm_signer.c: the public key as a software EVP_PKEY. */
kl_rc hsm_remote_key_public(hsm_remote *r, const char *label, EVP_PKEY **out) KL_WUR;

#endif
