/* keyline: CA internals shared by ca*.c files (not for front ends). */
#ifndef KL_CA_INTERNAL_H
#define KL_CA_INTERNAL_H

#include <pthread.h>

#include "ca.h"
#include "tpl.h"

#define CA_CACHE_MAX 64

typedef struct {
    char *label;
    X509 *cert;
    EVP_PKEY *key; /* NULL until first signing use */
} ca_entry;

struct ca_ctx {
    const kl_conf *conf;
    hsm_ctx *hsm;
    store *st;
    char *tpl_dir;
    char *crl_url, *ocsp_url, *ca_issuers_url;
    long crl_days;
    pthread_mutex_t mu; /* guards the caches below */
    ca_entry cas[CA_CACHE_MAX];
    size_t ncas;
    tpl *tpls[CA_CACHE_MAX];
    size_t ntpls;
};

/* Cached CA certificate (and, if want_key, its HSM key) by label. Borrowed pointers, valid for
 * the ctx lifetime. */
kl_rc ca_entry_get(ca_ctx *ca, const char *label, int want_key, const ca_entry **out) KL_WUR;
kl_rc ca_tpl_get(ca_ctx *ca, const char *name, const tpl **out) KL_WUR;
/* Digest to sign with for a key (SHA-384 for P-384, else SHA-256). */
const EVP_MD *ca_sign_md(const EVP_PKEY *key);

#endif
