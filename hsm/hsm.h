/* keyline: the only code that speaks PKCS#11 (through libp11, plus the module's own function
 * list for what libp11 lacks, such as key generation with explicit attributes).
 *
 * Tokens and keys are named by RFC 7512 URIs: the token by `pkcs11:token=LABEL` (also
 * `serial=`, `manufacturer=`, `model=`), a key by its CKA_LABEL (`object=` in a URI).
 * Keys handed out as EVP_PKEY sign inside the token and can be used from several threads at
 * once (libp11 keeps a session pool per slot).
 *
 * Ownership: hsm_ctx owns the module and the login; EVP_PKEYs returned are the caller's
 * (EVP_PKEY_free), but must not outlive the hsm_ctx. */
#ifndef KL_HSM_H
#define KL_HSM_H

#include <openssl/evp.h>
#include <stddef.h>

#include "kl_err.h"

typedef struct hsm_ctx hsm_ctx;

typedef enum {
    HSM_KEY_EC_P256 = 0,
    HSM_KEY_EC_P384,
    HSM_KEY_RSA_3072,
    HSM_KEY_ED25519,  /* on a token of its own: libp11 0.4.12 cannot see any key beside it */
    HSM_KEY_RSA_2048, /* device keys (templates that allow it) */
    HSM_KEY_RSA_4096, /* roots (templates that allow it) */
    HSM_KEY__COUNT
} hsm_key_type;
/* 1 for the RSA types (key usage keyEncipherment is theirs: templates' key-usage-rsa) */
#define HSM_KEY_IS_RSA(t)                                                                          \
    ((t) == HSM_KEY_RSA_3072 || (t) == HSM_KEY_RSA_2048 || (t) == HSM_KEY_RSA_4096)

/* "ec-p256", "ec-p384", "rsa-3072", "ed25519", "rsa-2048", "rsa-4096" <-> enum. Returns -1 for
 * unknown names. */
int hsm_key_type_from_name(const char *name);
const char *hsm_key_type_name(hsm_key_type t);
/* Type of any public/private key (software or token); -1 when none of ours. */
int hsm_key_type_of(const EVP_PKEY *k);

/* Load `module` (path to the PKCS#11 .so), find the token named by `token_uri` (RFC 7512
 * pkcs11: URI; attributes other than token/serial/manufacturer/model are ignored here), log in
 * as user with `pin` (may be NULL: no login, public objects only).
 * Errors, each with a distinct message:
 *   KL_ENOTFOUND "PKCS#11 module ... cannot be loaded" / "no token matches pkcs11:..."
 *   KL_EPIN      "wrong PIN (CKR_PIN_INCORRECT)"
 *   KL_ELOCKED   "PIN locked (CKR_PIN_LOCKED)"
 *   KL_EUSAGE    malformed URI
 *   KL_EHSM      other CKR_* with its name */
kl_rc hsm_open(hsm_ctx **out, const char *module, const char *token_uri, const char *pin) KL_WUR;
void hsm_close(hsm_ctx *h);

/* Generate a key pair inside the token: token objects, private key CKA_SENSITIVE=TRUE,
 * CKA_EXTRACTABLE=FALSE, CKA_PRIVATE=TRUE, CKA_SIGN=TRUE; CKA_LABEL = label on both halves and
 * a fresh random CKA_ID. KL_EEXIST if a key with that label exists. Ed25519 keys and RSA/EC
 * keys never share a token (libp11 0.4.12 cannot enumerate a token holding an Ed25519 key):
 * KL_EPOLICY for ed25519 on a token with RSA/EC keys, and for those on a token with Ed25519.
 * Serialised internally (SoftHSM wants key generation serialised). *pub_out gets the public
 * key as a software EVP_PKEY (may pass NULL). */
kl_rc hsm_key_generate(hsm_ctx *h, const char *label, hsm_key_type type, EVP_PKEY **pub_out) KL_WUR;

/* Destroy both halves of the key labelled `label` (undo of a hsm_key_generate whose
 * certificate could not be made). KL_ENOTFOUND when there is none. Keys handed out earlier by
 * hsm_key_load stop working. */
kl_rc hsm_key_destroy(hsm_ctx *h, const char *label) KL_WUR;

/* Find the private key with CKA_LABEL = label (a bare label or a pkcs11:...;object=L URI) and
 * return an EVP_PKEY that signs in the token. KL_ENOTFOUND "no key labelled L on token T".
 * An Ed25519 key is found and used through the module's own functions, never libp11
 * (C_Sign with CKM_EDDSA over the whole message: sign with a NULL digest, X509_sign(x, k,
 * NULL) and the like; hsm_ed25519.c). */
kl_rc hsm_key_load(hsm_ctx *h, const char *label, EVP_PKEY **priv_out) KL_WUR;
/* Forget the key hsm_key_load handed out for `label` (it keeps one per label): the next load
 * finds the token's key of that label again, a new one when another process replaced it
 * (keys handed out earlier stay usable as far as the token lets them). */
void hsm_key_forget(hsm_ctx *h, const char *label);

/* Return the public half of the key labelled `label` as a software EVP_PKEY. */
kl_rc hsm_key_public(hsm_ctx *h, const char *label, EVP_PKEY **pub_out) KL_WUR;

/* Token label (for messages, audit). */
const char *hsm_token_label(const hsm_ctx *h);

/* Parse an RFC 7512 URI into the attributes we use (percent-decoded). Any may be NULL-filled.
 * Caller frees the strings. KL_EUSAGE when it is not a pkcs11: URI. Exposed for tests. */
typedef struct {
    char *token, *serial, *manufacturer, *model, *object, *pin_source, *module_path;
} hsm_uri;
kl_rc hsm_uri_parse(const char *uri, hsm_uri *out) KL_WUR;
void hsm_uri_free(hsm_uri *u);

/* --- additions (after the first version of this header) --- */

/* ECDH in the token (CKM_ECDH1_DERIVE, CKD_NULL) with the P-256 private key labelled `label`
 * (bare label or URI; CKA_DERIVE set) and the uncompressed point `peer`: z = the x-coordinate of
 * the shared point. The derived secret is a session object, destroyed before return; z is the
 * caller's to wipe. KL_ENOTFOUND if no such key; the CKR name otherwise. */
kl_rc hsm_ecdh(hsm_ctx *h, const char *label, const uint8_t peer[65], uint8_t z[32]) KL_WUR;

/* Protection attributes of the private key labelled `label` (bare label or URI), read from the
 * token: a CA can refuse a key that was imported or is extractable. KL_ENOTFOUND if absent. */
enum {
    HSM_PROT_SENSITIVE = 1u << 0,         /* CKA_SENSITIVE */
    HSM_PROT_EXTRACTABLE = 1u << 1,       /* CKA_EXTRACTABLE (bad for a CA key) */
    HSM_PROT_ALWAYS_SENSITIVE = 1u << 2,  /* CKA_ALWAYS_SENSITIVE */
    HSM_PROT_NEVER_EXTRACTABLE = 1u << 3, /* CKA_NEVER_EXTRACTABLE */
    HSM_PROT_PRIVATE = 1u << 4,           /* CKA_PRIVATE */
    HSM_PROT_TOKEN = 1u << 5,             /* CKA_TOKEN */
    HSM_PROT_MODIFIABLE = 1u << 6,        /* CKA_MODIFIABLE (keyline makes CA keys without) */
};
kl_rc hsm_key_protection(hsm_ctx *h, const char *label, unsigned *flags_out) KL_WUR;

/* Store the X.509 certificate `der` (len bytes) on the token as a CKO_CERTIFICATE object
 * labelled like the private key `label` and with its CKA_ID (a public token object, so
 * pkcs11-tool and p11tool users see the CA certificate beside its key), replacing any
 * certificate object with that label. KL_ENOTFOUND without that private key; KL_EINPUT when
 * `der` is not one certificate. */
kl_rc hsm_cert_put(hsm_ctx *h, const char *label, const uint8_t *der, size_t len) KL_WUR;

/* "CKR_PIN_INCORRECT" for 0xa0 ("CKR_(unknown)" / "CKR_VENDOR_DEFINED" otherwise; static). */
const char *hsm_ckr_name(unsigned long ckr);
/* Our code for a CKR_* value: PIN_INCORRECT/INVALID/LEN_RANGE -> KL_EPIN, PIN_LOCKED ->
 * KL_ELOCKED, TOKEN_NOT_PRESENT/NOT_RECOGNIZED/SLOT_ID_INVALID -> KL_ENOTFOUND, others KL_EHSM. */
kl_rc hsm_rc_from_ckr(unsigned long ckr);

#endif
