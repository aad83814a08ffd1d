/* keyline: Ed25519 keys in the token, signing through the module's own PKCS#11 functions.
 *
 * libp11 0.4.12 has no Ed25519 and cannot even enumerate a token that holds such a key, so an
 * Ed25519 CA key never reaches it: hsm.c finds the key with raw C_FindObjects and signs with
 * C_Sign(CKM_EDDSA) (hsm_ed_sign). What the rest of keyline gets is an ordinary EVP_PKEY, so
 * X509_sign, X509_CRL_sign, X509_REQ_sign and OCSP_basic_sign work on it unchanged: a legacy
 * Ed25519 key (public half only) bound to a private ENGINE whose Ed25519 method is OpenSSL's
 * own except for digestsign, which hands the whole to-be-signed bytes to the token (RFC 8032
 * PureEdDSA: no prehash). The ENGINE is never registered as a default, so no other key uses
 * it; which token and label a key signs with rides in the EVP_PKEY's ex_data. */
#include "hsm_internal.h"

#include <openssl/engine.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    hsm_ctx *h;
    char *label;
} ed_ref;

static pthread_once_t g_ed_once = PTHREAD_ONCE_INIT;
static ENGINE *g_ed_engine;
static EVP_PKEY_METHOD *g_ed_meth;
static int g_ed_idx = -1;

static void ed_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    ed_ref *r = ptr;
    if (r != NULL) {
        free(r->label);
        free(r);
    }
}

/* RFC 8032 5.1.6: the signature of the whole message, 64 bytes. */
static int ed_digestsign(EVP_MD_CTX *mctx, unsigned char *sig, size_t *siglen,
                         const unsigned char *tbs, size_t tbslen)
{
    EVP_PKEY *pk = EVP_PKEY_CTX_get0_pkey(EVP_MD_CTX_get_pkey_ctx(mctx));
    ed_ref *r = pk != NULL ? EVP_PKEY_get_ex_data(pk, g_ed_idx) : NULL;
    if (r == NULL) {
        ERR_raise_data(ERR_LIB_USER, ERR_R_PASSED_INVALID_ARGUMENT, "not a token Ed25519 key");
        return 0;
    }
    if (sig == NULL) {
        *siglen = 64;
        return 1;
    }
    if (*siglen < 64) {
        ERR_raise_data(ERR_LIB_USER, ERR_R_PASSED_INVALID_ARGUMENT, "signature buffer too small");
        return 0;
    }
    kl_rc rc = hsm_ed_sign(r->h, r->label, tbs, tbslen, sig, siglen);
    if (rc != KL_OK) {
        ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "%s", kl_errmsg());
        return 0;
    }
    return 1;
}

static int ed_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    static const int ours[] = {EVP_PKEY_ED25519};
    (void)e;
    if (pmeth == NULL) {
        *nids = ours;
        return 1;
    }
    *pmeth = nid == EVP_PKEY_ED25519 ? g_ed_meth : NULL;
    return *pmeth != NULL;
}

static void ed_init_once(void)
{
    const EVP_PKEY_METHOD *std = EVP_PKEY_meth_find(EVP_PKEY_ED25519);
    EVP_PKEY_METHOD *m = EVP_PKEY_meth_new(EVP_PKEY_ED25519, EVP_PKEY_FLAG_SIGCTX_CUSTOM);
    ENGINE *e = ENGINE_new();
    int idx = EVP_PKEY_get_ex_new_index(0, NULL, NULL, NULL, ed_ref_free);
    if (std == NULL || m == NULL || e == NULL || idx < 0 || !ENGINE_set_id(e, "keyline-ed25519") ||
        !ENGINE_set_name(e, "keyline: Ed25519 in the token (CKM_EDDSA)") ||
        !ENGINE_set_pkey_meths(e, ed_pkey_meths)) {
        EVP_PKEY_meth_free(m);
        ENGINE_free(e);
        return;
    }
    /* OpenSSL's own method (verify, controls) with signing done in the token */
    EVP_PKEY_meth_copy(m, std);
    EVP_PKEY_meth_set_digestsign(m, ed_digestsign);
    g_ed_meth = m;
    g_ed_idx = idx;
    g_ed_engine = e;
}

kl_rc hsm_ed_pkey_new(hsm_ctx *h, const char *label, const uint8_t pub[32], EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pk = NULL;
    ed_ref *r = NULL;
    *out = NULL;
    pthread_once(&g_ed_once, ed_init_once);
    ENSURE_SSL(g_ed_engine != NULL, KL_EINTERNAL, "cannot set up Ed25519 signing");
    r = calloc(1, sizeof *r);
    ENSURE(r != NULL && (r->label = strdup(label)) != NULL, KL_EINTERNAL, "out of memory");
    r->h = h;
    /* with an ENGINE this is a legacy key: its contexts use the ENGINE's method */
    pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, g_ed_engine, pub, 32);
    ENSURE_SSL(pk != NULL, KL_EINTERNAL, "cannot make the Ed25519 key");
    ENSURE_SSL(EVP_PKEY_set_ex_data(pk, g_ed_idx, r) == 1, KL_EINTERNAL, "EVP_PKEY_set_ex_data");
    r = NULL; /* the key's now (ed_ref_free) */
    *out = pk;
    pk = NULL;
out:
    if (r != NULL) {
        free(r->label);
        free(r);
    }
    EVP_PKEY_free(pk);
    return rc;
}
