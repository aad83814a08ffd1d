/* keyline: hsm.c's helpers (not for callers outside hsm/). */
#ifndef KL_HSM_INTERNAL_H
#define KL_HSM_INTERNAL_H

#include "hsm.h"

/* 1 when this process has a PKCS#11 module loaded (an hsm_ctx open). */
int hsm_module_loaded(void);
/* A bare label or a pkcs11: URI with object= (token checked) -> malloc'd label. */
kl_rc hsm_label_of(const hsm_ctx *h, const char *arg, char **out) KL_WUR;

#endif
