/* keyline: the HSM layer. See hsm.h and docs/internals/hsm.md.
 *
 * Two views of one loaded PKCS#11 module:
 *  - libp11 (PKCS11_CTX): slots, login, key lookup, and EVP_PKEYs that sign in the token using
 *    libp11's per-slot session pool (safe from several threads);
 *  - the module's own CK_FUNCTION_LIST, reached by dlopen()ing the same path (the dynamic
 *    loader hands back the instance libp11 already loaded, so C_Initialize answers
 *    CKR_CRYPTOKI_ALREADY_INITIALIZED and the login state is shared): key generation with
 *    explicit attributes, exact CKR_* codes for login, attribute reads, Ed25519 detection.
 *
 * libp11 finalises the module when its context is unloaded, so one module instance is shared
 * (reference counted) by all hsm_ctx of the process that name the same module file. */
#include "hsm.h"
#include "hsm_internal.h"
#include "kl_b64.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>

#include <libp11.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

/* ---------------------------------------------------------------------------------------- */
/* CKR_* names                                                                              */

struct ckr_name {
    CK_RV rv;
    const char *name;
};

#define CKR_ENTRY(x)                                                                               \
    {                                                                                              \
        x, #x                                                                                      \
    }
static const struct ckr_name ckr_names[] = {
    CKR_ENTRY(CKR_OK),
    CKR_ENTRY(CKR_CANCEL),
    CKR_ENTRY(CKR_HOST_MEMORY),
    CKR_ENTRY(CKR_SLOT_ID_INVALID),
    CKR_ENTRY(CKR_GENERAL_ERROR),
    CKR_ENTRY(CKR_FUNCTION_FAILED),
    CKR_ENTRY(CKR_ARGUMENTS_BAD),
    CKR_ENTRY(CKR_NO_EVENT),
    CKR_ENTRY(CKR_NEED_TO_CREATE_THREADS),
    CKR_ENTRY(CKR_CANT_LOCK),
    CKR_ENTRY(CKR_ATTRIBUTE_READ_ONLY),
    CKR_ENTRY(CKR_ATTRIBUTE_SENSITIVE),
    CKR_ENTRY(CKR_ATTRIBUTE_TYPE_INVALID),
    CKR_ENTRY(CKR_ATTRIBUTE_VALUE_INVALID),
    CKR_ENTRY(CKR_DATA_INVALID),
    CKR_ENTRY(CKR_DATA_LEN_RANGE),
    CKR_ENTRY(CKR_DEVICE_ERROR),
    CKR_ENTRY(CKR_DEVICE_MEMORY),
    CKR_ENTRY(CKR_DEVICE_REMOVED),
    CKR_ENTRY(CKR_ENCRYPTED_DATA_INVALID),
    CKR_ENTRY(CKR_ENCRYPTED_DATA_LEN_RANGE),
    CKR_ENTRY(CKR_FUNCTION_CANCELED),
    CKR_ENTRY(CKR_FUNCTION_NOT_PARALLEL),
    CKR_ENTRY(CKR_FUNCTION_NOT_SUPPORTED),
    CKR_ENTRY(CKR_KEY_HANDLE_INVALID),
    CKR_ENTRY(CKR_KEY_SIZE_RANGE),
    CKR_ENTRY(CKR_KEY_TYPE_INCONSISTENT),
    CKR_ENTRY(CKR_KEY_NOT_NEEDED),
    CKR_ENTRY(CKR_KEY_CHANGED),
    CKR_ENTRY(CKR_KEY_NEEDED),
    CKR_ENTRY(CKR_KEY_INDIGESTIBLE),
    CKR_ENTRY(CKR_KEY_FUNCTION_NOT_PERMITTED),
    CKR_ENTRY(CKR_KEY_NOT_WRAPPABLE),
    CKR_ENTRY(CKR_KEY_UNEXTRACTABLE),
    CKR_ENTRY(CKR_MECHANISM_INVALID),
    CKR_ENTRY(CKR_MECHANISM_PARAM_INVALID),
    CKR_ENTRY(CKR_OBJECT_HANDLE_INVALID),
    CKR_ENTRY(CKR_OPERATION_ACTIVE),
    CKR_ENTRY(CKR_OPERATION_NOT_INITIALIZED),
    CKR_ENTRY(CKR_PIN_INCORRECT),
    CKR_ENTRY(CKR_PIN_INVALID),
    CKR_ENTRY(CKR_PIN_LEN_RANGE),
    CKR_ENTRY(CKR_PIN_EXPIRED),
    CKR_ENTRY(CKR_PIN_LOCKED),
    CKR_ENTRY(CKR_SESSION_CLOSED),
    CKR_ENTRY(CKR_SESSION_COUNT),
    CKR_ENTRY(CKR_SESSION_HANDLE_INVALID),
    CKR_ENTRY(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    CKR_ENTRY(CKR_SESSION_READ_ONLY),
    CKR_ENTRY(CKR_SESSION_EXISTS),
    CKR_ENTRY(CKR_SESSION_READ_ONLY_EXISTS),
    CKR_ENTRY(CKR_SESSION_READ_WRITE_SO_EXISTS),
    CKR_ENTRY(CKR_SIGNATURE_INVALID),
    CKR_ENTRY(CKR_SIGNATURE_LEN_RANGE),
    CKR_ENTRY(CKR_TEMPLATE_INCOMPLETE),
    CKR_ENTRY(CKR_TEMPLATE_INCONSISTENT),
    CKR_ENTRY(CKR_TOKEN_NOT_PRESENT),
    CKR_ENTRY(CKR_TOKEN_NOT_RECOGNIZED),
    CKR_ENTRY(CKR_TOKEN_WRITE_PROTECTED),
    CKR_ENTRY(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
    CKR_ENTRY(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    CKR_ENTRY(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    CKR_ENTRY(CKR_USER_ALREADY_LOGGED_IN),
    CKR_ENTRY(CKR_USER_NOT_LOGGED_IN),
    CKR_ENTRY(CKR_USER_PIN_NOT_INITIALIZED),
    CKR_ENTRY(CKR_USER_TYPE_INVALID),
    CKR_ENTRY(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    CKR_ENTRY(CKR_USER_TOO_MANY_TYPES),
    CKR_ENTRY(CKR_WRAPPED_KEY_INVALID),
    CKR_ENTRY(CKR_WRAPPED_KEY_LEN_RANGE),
    CKR_ENTRY(CKR_WRAPPING_KEY_HANDLE_INVALID),
    CKR_ENTRY(CKR_WRAPPING_KEY_SIZE_RANGE),
    CKR_ENTRY(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    CKR_ENTRY(CKR_RANDOM_SEED_NOT_SUPPORTED),
    CKR_ENTRY(CKR_RANDOM_NO_RNG),
    CKR_ENTRY(CKR_DOMAIN_PARAMS_INVALID),
    CKR_ENTRY(CKR_CURVE_NOT_SUPPORTED),
    CKR_ENTRY(CKR_BUFFER_TOO_SMALL),
    CKR_ENTRY(CKR_SAVED_STATE_INVALID),
    CKR_ENTRY(CKR_INFORMATION_SENSITIVE),
    CKR_ENTRY(CKR_STATE_UNSAVEABLE),
    CKR_ENTRY(CKR_CRYPTOKI_NOT_INITIALIZED),
    CKR_ENTRY(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    CKR_ENTRY(CKR_MUTEX_BAD),
    CKR_ENTRY(CKR_MUTEX_NOT_LOCKED),
    CKR_ENTRY(CKR_FUNCTION_REJECTED),
};
#undef CKR_ENTRY

const char *hsm_ckr_name(unsigned long ckr)
{
    for (size_t i = 0; i < sizeof ckr_names / sizeof ckr_names[0]; i++) {
        if (ckr_names[i].rv == ckr) {
            return ckr_names[i].name;
        }
    }
    return ckr >= CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_(unknown)";
}

kl_rc hsm_rc_from_ckr(unsigned long ckr)
{
    switch (ckr) {
    case CKR_OK: return KL_OK;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE: return KL_EPIN;
    case CKR_PIN_LOCKED: return KL_ELOCKED;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID: return KL_ENOTFOUND;
    case CKR_HOST_MEMORY: return KL_EINTERNAL;
    default: return KL_EHSM;
    }
}

/* "what: CKR_NAME (0x..)" with the code mapped to ours. */
static kl_rc fail_ckr(CK_RV rv, const char *what)
{
    switch (rv) {
    case CKR_PIN_INCORRECT: return kl_fail(KL_EPIN, "wrong PIN (CKR_PIN_INCORRECT)");
    case CKR_PIN_LOCKED: return kl_fail(KL_ELOCKED, "PIN locked (CKR_PIN_LOCKED)");
    default:
        return kl_fail(hsm_rc_from_ckr(rv), "%s: %s (0x%lx)", what, hsm_ckr_name(rv),
                       (unsigned long)rv);
    }
}

/* libp11 queues the CKR_* of a failed call as the reason of an error in its own library
 * (ERR_get_CKR_code()). Returns that CKR (0 if none) and empties the OpenSSL error queue. */
static CK_RV p11_take_ckr(void)
{
    CK_RV found = 0;
    unsigned long e;
    int lib = ERR_get_CKR_code();
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) == lib && ERR_GET_REASON(e) != 0) {
            found = (CK_RV)ERR_GET_REASON(e);
        }
    }
    return found;
}

/* ---------------------------------------------------------------------------------------- */
/* key type names                                                                           */

static const char *const key_type_names[HSM_KEY__COUNT] = {"ec-p256", "ec-p384",  "rsa-3072",
                                                           "ed25519", "rsa-2048", "rsa-4096"};

int hsm_key_type_from_name(const char *name)
{
    if (name == NULL) {
        return -1;
    }
    for (int i = 0; i < HSM_KEY__COUNT; i++) {
        if (strcmp(name, key_type_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *hsm_key_type_name(hsm_key_type t)
{
    if ((unsigned)t < HSM_KEY__COUNT) {
        return key_type_names[t];
    }
    return "unknown";
}

int hsm_key_type_of(const EVP_PKEY *k)
{
    if (k == NULL) {
        return -1;
    }
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_ED25519: return HSM_KEY_ED25519;
    case EVP_PKEY_RSA:
        switch (EVP_PKEY_get_bits(k)) {
        case 2048: return HSM_KEY_RSA_2048;
        case 3072: return HSM_KEY_RSA_3072;
        case 4096: return HSM_KEY_RSA_4096;
        default: return -1;
        }
    case EVP_PKEY_EC: {
        /* Token keys from libp11 are legacy EC_KEYs with a foreign method; the legacy accessor
         * works for those and for provider keys alike. */
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(k);
        const EC_GROUP *g = ec != NULL ? EC_KEY_get0_group(ec) : NULL;
        int nid = g != NULL ? EC_GROUP_get_curve_name(g) : NID_undef;
        ERR_clear_error();
        if (nid == NID_X9_62_prime256v1) {
            return HSM_KEY_EC_P256;
        }
        if (nid == NID_secp384r1) {
            return HSM_KEY_EC_P384;
        }
        return -1;
    }
    default: return -1;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* RFC 7512 URI                                                                             */

void hsm_uri_free(hsm_uri *u)
{
    if (u == NULL) {
        return;
    }
    free(u->token);
    free(u->serial);
    free(u->manufacturer);
    free(u->model);
    free(u->object);
    free(u->pin_source);
    free(u->module_path);
    memset(u, 0, sizeof *u);
}

/* Percent-decode [s, s+n) into a new string. RFC 7512 2.3: "pk11-pchar" and "pk11-qchar"
 * allow pct-encoded octets anywhere in a value. A decoded NUL cannot be a C string: refused. */
static kl_rc pct_decode(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    size_t j = 0;
    if (d == NULL) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(d);
                return kl_fail(KL_EUSAGE, "pkcs11 URI: truncated percent-encoding");
            }
            int a = kl_hex_digit(s[i + 1]);
            int b = kl_hex_digit(s[i + 2]);
            if (a < 0 || b < 0) {
                free(d);
                return kl_fail(KL_EUSAGE, "pkcs11 URI: bad percent-encoding '%%%c%c'", s[i + 1],
                               s[i + 2]);
            }
            if (a == 0 && b == 0) {
                free(d);
                return kl_fail(KL_EUSAGE, "pkcs11 URI: %%00 is not allowed in a value");
            }
            d[j++] = (char)(a * 16 + b);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    *out = d;
    return KL_OK;
}

/* One "name=value" of the path (`query` = 0) or the query (`query` = 1). */
static kl_rc uri_attr(hsm_uri *u, const char *s, size_t n, int query)
{
    kl_rc rc = KL_OK;
    const char *eq = memchr(s, '=', n);
    char **slot = NULL;
    char *val = NULL;
    size_t nl;

    if (n == 0) {
        /* An empty component ("pkcs11:a=b;" or "?&"): tolerated, nothing to set. */
        return KL_OK;
    }
    ENSURE(eq != NULL, KL_EUSAGE, "pkcs11 URI: attribute '%.*s' has no '='", (int)n, s);
    nl = (size_t)(eq - s);
    ENSURE(nl > 0, KL_EUSAGE, "pkcs11 URI: attribute with an empty name");
#define IS(name) (nl == strlen(name) && strncmp(s, name, nl) == 0)
    if (!query) {
        if (IS("token")) {
            slot = &u->token;
        } else if (IS("serial")) {
            slot = &u->serial;
        } else if (IS("manufacturer")) {
            slot = &u->manufacturer;
        } else if (IS("model")) {
            slot = &u->model;
        } else if (IS("object")) {
            slot = &u->object;
        } else if (IS("pin-value")) {
            /* Not a path attribute (RFC 7512 2.3), but refuse it here too: the whole URI is
             * echoed in later errors ("no token matches ..."). */
            ENSURE(0, KL_EUSAGE,
                   "pkcs11 URI: pin-value is not accepted; use pin-source or the "
                   "configured PIN source");
        }
        /* Other path attributes (id, type, library-*, slot-*) are valid but unused here. */
    } else {
        if (IS("pin-source")) {
            slot = &u->pin_source;
        } else if (IS("module-path")) {
            slot = &u->module_path;
        } else if (IS("pin-value")) {
            /* A PIN must not live in a URI that ends up in configs, logs and argv. */
            ENSURE(0, KL_EUSAGE,
                   "pkcs11 URI: pin-value is not accepted; use pin-source or the "
                   "configured PIN source");
        }
    }
#undef IS
    TRY(pct_decode(eq + 1, n - nl - 1, &val));
    if (slot != NULL) {
        /* RFC 7512 2.3: "An attribute name MUST NOT appear more than once in the URI." */
        ENSURE(*slot == NULL, KL_EUSAGE, "pkcs11 URI: attribute '%.*s' appears twice", (int)nl, s);
        *slot = val;
        val = NULL;
    }
out:
    free(val);
    return rc;
}

kl_rc hsm_uri_parse(const char *uri, hsm_uri *out)
{
    kl_rc rc = KL_OK;
    const char *p, *q, *end;

    ENSURE(out != NULL, KL_EUSAGE, "hsm_uri_parse: no output");
    memset(out, 0, sizeof *out);
    ENSURE(uri != NULL, KL_EUSAGE, "no pkcs11 URI given");
    /* RFC 3986 3.1: scheme names are case-insensitive. */
    ENSURE(strncasecmp(uri, "pkcs11:", 7) == 0, KL_EUSAGE, "not a pkcs11: URI: '%s'", uri);
    p = uri + 7;
    q = strchr(p, '?');
    end = q != NULL ? q : p + strlen(p);
    /* RFC 7512 2.3: pk11-path attributes are separated by ";". */
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi != NULL ? semi : end;
        TRY(uri_attr(out, p, (size_t)(e - p), 0));
        p = semi != NULL ? semi + 1 : end;
    }
    if (q != NULL) {
        /* RFC 7512 2.3: pk11-query attributes are separated by "&". */
        p = q + 1;
        end = p + strlen(p);
        while (p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *e = amp != NULL ? amp : end;
            TRY(uri_attr(out, p, (size_t)(e - p), 1));
            p = amp != NULL ? amp + 1 : end;
        }
    }
out:
    if (rc != KL_OK && out != NULL) {
        hsm_uri_free(out);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* module registry                                                                          */

typedef struct hsm_module {
    struct hsm_module *next;
    char *path; /* realpath() of the module file */
    PKCS11_CTX *p11;
    PKCS11_SLOT *slots;
    unsigned int nslots;
    void *dl;
    CK_FUNCTION_LIST_PTR fl;
    int finalize; /* we initialised it ourselves (libp11 had not): finalise on unload */
    unsigned refs;
    hsm_ctx *open; /* contexts using this module (linked through hsm_ctx.next) */
} hsm_module;

struct hsm_ctx {
    hsm_ctx *next;
    hsm_module *mod;
    PKCS11_SLOT *slot;
    CK_SLOT_ID slot_id;
    CK_SESSION_HANDLE sess; /* raw session; used only under mu */
    int have_sess;
    int logged_in;
    char *token_label;
    pthread_mutex_t mu; /* raw session, libp11 key enumeration, key cache */
    struct {
        char *label;
        EVP_PKEY *pk;
    } * cache;
    size_t ncache;
};

static pthread_mutex_t g_mod_mu = PTHREAD_MUTEX_INITIALIZER;
static hsm_module *g_mods;
/* SoftHSM wants key generation serialised (see DESIGN.md); process-wide, taken before mu. */
static pthread_mutex_t g_keygen_mu = PTHREAD_MUTEX_INITIALIZER;

static void module_unload(hsm_module *m)
{
    if (m == NULL) {
        return;
    }
    if (m->p11 != NULL) {
        if (m->slots != NULL) {
            PKCS11_release_all_slots(m->p11, m->slots, m->nslots);
        }
        PKCS11_CTX_unload(m->p11); /* C_Finalize */
        PKCS11_CTX_free(m->p11);
    }
    if (m->finalize && m->fl != NULL) {
        m->fl->C_Finalize(NULL);
    }
    if (m->dl != NULL) {
        dlclose(m->dl);
    }
    free(m->path);
    free(m);
}

/* Called with g_mod_mu held. */
static kl_rc module_get(const char *module, hsm_module **out)
{
    kl_rc rc = KL_OK;
    char real[PATH_MAX];
    hsm_module *m = NULL;
    CK_C_GetFunctionList getfl;
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;

    ENSURE(realpath(module, real) != NULL, KL_ENOTFOUND,
           "PKCS#11 module %s cannot be loaded: no such file", module);
    for (m = g_mods; m != NULL; m = m->next) {
        if (strcmp(m->path, real) == 0) {
            m->refs++;
            *out = m;
            return KL_OK;
        }
    }
    m = calloc(1, sizeof *m);
    ENSURE(m != NULL, KL_EINTERNAL, "out of memory");
    m->path = strdup(real);
    ENSURE(m->path != NULL, KL_EINTERNAL, "out of memory");

    /* Our own handle first: it gives the loader's message for files that are not modules. */
    m->dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    ENSURE(m->dl != NULL, KL_ENOTFOUND, "PKCS#11 module %s cannot be loaded: %s", module,
           dlerror());
    *(void **)(&getfl) = dlsym(m->dl, "C_GetFunctionList");
    ENSURE(getfl != NULL, KL_ENOTFOUND, "PKCS#11 module %s cannot be loaded: no C_GetFunctionList",
           module);
    rv = getfl(&m->fl);
    ENSURE(rv == CKR_OK && m->fl != NULL, KL_ENOTFOUND,
           "PKCS#11 module %s cannot be loaded: C_GetFunctionList: %s", module, hsm_ckr_name(rv));

    m->p11 = PKCS11_CTX_new();
    ENSURE(m->p11 != NULL, KL_EINTERNAL, "PKCS11_CTX_new failed");
    if (PKCS11_CTX_load(m->p11, real) < 0) {
        CK_RV ckr = p11_take_ckr();
        PKCS11_CTX_free(m->p11);
        m->p11 = NULL;
        ENSURE(0, KL_ENOTFOUND, "PKCS#11 module %s cannot be loaded: C_Initialize: %s", module,
               ckr ? hsm_ckr_name(ckr) : "libp11 failed");
    }
    /* libp11 initialised the module with CKF_OS_LOCKING_OK; we share that instance. */
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    rv = m->fl->C_Initialize(&args);
    if (rv == CKR_OK) {
        m->finalize = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        ENSURE(0, KL_EHSM, "PKCS#11 module %s: C_Initialize: %s", module, hsm_ckr_name(rv));
    }
    if (PKCS11_enumerate_slots(m->p11, &m->slots, &m->nslots) < 0) {
        CK_RV ckr = p11_take_ckr();
        m->slots = NULL;
        m->nslots = 0;
        ENSURE(0, KL_EHSM, "PKCS#11 module %s: cannot list slots: %s", module,
               ckr ? hsm_ckr_name(ckr) : "libp11 failed");
    }
    m->refs = 1;
    m->next = g_mods;
    g_mods = m;
    *out = m;
    m = NULL;
out:
    module_unload(m);
    return rc;
}

/* Called with g_mod_mu held. */
static void module_put(hsm_module *m)
{
    if (m == NULL || --m->refs > 0) {
        return;
    }
    for (hsm_module **pp = &g_mods; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    module_unload(m);
}

static int str_match(const char *want, const char *have)
{
    return want == NULL || (have != NULL && strcmp(want, have) == 0);
}

/* Find the slot whose token matches the URI and attach h to it. Called with g_mod_mu held. */
static kl_rc ctx_attach(hsm_ctx *h, const char *module, const hsm_uri *u, const char *uri)
{
    kl_rc rc = KL_OK;
    TRY(module_get(module, &h->mod));
    for (unsigned int i = 0; i < h->mod->nslots; i++) {
        PKCS11_SLOT *s = &h->mod->slots[i];
        PKCS11_TOKEN *t = s->token;
        if (t == NULL || !t->initialized) {
            continue;
        }
        /* RFC 7512 2.3: token, manufacturer, serial and model match the CK_TOKEN_INFO fields
         * (libp11 has already stripped the blank padding). */
        if (str_match(u->token, t->label) && str_match(u->manufacturer, t->manufacturer) &&
            str_match(u->serial, t->serialnr) && str_match(u->model, t->model)) {
            h->slot = s;
            break;
        }
    }
    ENSURE(h->slot != NULL, KL_ENOTFOUND, "no token matches %s (module %s)", uri, module);
    for (hsm_ctx *o = h->mod->open; o != NULL; o = o->next) {
        /* The PKCS#11 login is per token and process: a second context would be logged in
         * whatever PIN it was given. */
        ENSURE(o->slot != h->slot, KL_EUSAGE,
               "token '%s' is already open in this process; share its hsm_ctx",
               h->slot->token->label);
    }
    h->slot_id = PKCS11_get_slotid_from_slot(h->slot);
    h->token_label = strdup(h->slot->token->label ? h->slot->token->label : "");
    ENSURE(h->token_label != NULL, KL_EINTERNAL, "out of memory");
    h->next = h->mod->open;
    h->mod->open = h;
out:
    return rc;
}

static void ctx_detach(hsm_ctx *h)
{
    if (h->mod == NULL) {
        return;
    }
    for (hsm_ctx **pp = &h->mod->open; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    }
    module_put(h->mod);
    h->mod = NULL;
}

void hsm_close(hsm_ctx *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->ncache; i++) {
        free(h->cache[i].label);
        EVP_PKEY_free(h->cache[i].pk);
    }
    free(h->cache);
    pthread_mutex_lock(&g_mod_mu);
    if (h->mod != NULL) {
        if (h->logged_in && h->mod->refs > 1) {
            /* Others keep the module loaded: do not leave this token logged in. When we are
             * the last user, C_Finalize ends the login anyway. PKCS11_logout drops libp11's
             * cached keys of the slot; it does not log out (libp11 never logged in: see
             * hsm_open_once), so C_Logout goes through our session. */
            if (PKCS11_logout(h->slot) < 0) {
                ERR_clear_error();
            }
            if (h->have_sess) {
                (void)h->mod->fl->C_Logout(h->sess);
            }
        }
        if (h->have_sess) {
            h->mod->fl->C_CloseSession(h->sess);
        }
    }
    ctx_detach(h);
    pthread_mutex_unlock(&g_mod_mu);
    pthread_mutex_destroy(&h->mu);
    free(h->token_label);
    free(h);
}

/* One attempt at attaching to the token, opening a session and logging in. *transient says
 * whether a failure looks like SoftHSM's multi-process race (see hsm_open) rather than a real
 * answer; h is closed on failure. */
static kl_rc hsm_open_once(hsm_ctx **out, const char *module, const hsm_uri *u,
                           const char *token_uri, const char *pin, int *transient)
{
    kl_rc rc = KL_OK;
    hsm_ctx *h = NULL;
    CK_FUNCTION_LIST_PTR fl;
    CK_TOKEN_INFO ti;
    CK_RV rv;
    int alone = 0;

    *transient = 0;
    h = calloc(1, sizeof *h);
    ENSURE(h != NULL, KL_EINTERNAL, "out of memory");
    pthread_mutex_init(&h->mu, NULL);

    pthread_mutex_lock(&g_mod_mu);
    rc = ctx_attach(h, module, u, token_uri);
    /* Reloading the module is only possible while nobody else in this process uses it. */
    alone = h->mod != NULL && h->mod->refs == 1;
    *transient = (rc == KL_ENOTFOUND && alone) || (rc == KL_EHSM && h->mod == NULL);
    pthread_mutex_unlock(&g_mod_mu);
    if (rc != KL_OK) {
        goto out;
    }
    /* ctx_attach returns KL_OK only with h->mod set (module_get); said again for the static
     * analysers, which do not follow it here and take the test above for a hint of NULL */
    ENSURE(h->mod, KL_EINTERNAL, "hsm: no module after attaching %s", token_uri);
    fl = h->mod->fl;

    rv = fl->C_OpenSession(h->slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h->sess);
    if (rv == CKR_TOKEN_WRITE_PROTECTED) {
        rv = fl->C_OpenSession(h->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &h->sess);
    }
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_OpenSession");
        goto out;
    }
    h->have_sess = 1;

    if (pin != NULL) {
        rv = fl->C_GetTokenInfo(h->slot_id, &ti);
        ENSURE(rv != CKR_OK || !(ti.flags & CKF_USER_PIN_LOCKED), KL_ELOCKED,
               "PIN locked (CKR_PIN_LOCKED)");
        /* Log in through the module's own function list only: it gives the exact CKR_*
         * (libp11 only says "failed"), and the login is per token and application, so
         * libp11's sessions see the private objects too. Never through PKCS11_login: libp11
         * 0.4.12 keeps a copy of the PIN in its slot (prev_pin, for re-login after fork) for
         * the life of the context, where a core dump or a memory read finds it. */
        rv = fl->C_Login(h->sess, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)strlen(pin));
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
            /* A wrong PIN is never retried. */
            *transient = alone && (rv == CKR_GENERAL_ERROR || rv == CKR_USER_PIN_NOT_INITIALIZED);
            rc = fail_ckr(rv, "C_Login");
            goto out;
        }
        h->logged_in = 1;
    }
    *out = h;
    h = NULL;
out:
    hsm_close(h);
    return rc;
}

kl_rc hsm_open(hsm_ctx **out, const char *module, const char *token_uri, const char *pin)
{
    kl_rc rc = KL_OK;
    hsm_uri u;

    memset(&u, 0, sizeof u);
    ENSURE(out != NULL, KL_EUSAGE, "hsm_open: no output");
    *out = NULL;
    TRY(hsm_uri_parse(token_uri, &u));
    if (module == NULL) {
        module = u.module_path;
    }
    ENSURE(module != NULL && *module != '\0', KL_EUSAGE,
           "no PKCS#11 module given for %s (set the module path)", token_uri);

    /* SoftHSM rewrites its token file on every successful login (token flags) and reads the
     * token directory when it is initialised: a process starting while another one logs in
     * can see the token as absent, fail to list slots, or get CKR_GENERAL_ERROR /
     * CKR_USER_PIN_NOT_INITIALIZED from C_Login, and keeps that view until the module is
     * reloaded. Such failures are transient: unload, wait with jitter, and try again before
     * reporting them. */
    for (int attempt = 0;; attempt++) {
        int transient = 0;
        rc = hsm_open_once(out, module, &u, token_uri, pin, &transient);
        if (rc == KL_OK || !transient || attempt >= 40) {
            break;
        }
        struct timespec pause = {0, (long)(10 + (attempt * 7919 + (long)getpid()) % 40) * 1000000L};
        nanosleep(&pause, NULL);
    }
out:
    hsm_uri_free(&u);
    return rc;
}

const char *hsm_token_label(const hsm_ctx *h)
{
    return h != NULL && h->token_label != NULL ? h->token_label : "";
}

int hsm_module_loaded(void)
{
    pthread_mutex_lock(&g_mod_mu);
    int loaded = g_mods != NULL;
    pthread_mutex_unlock(&g_mod_mu);
    return loaded;
}

/* ---------------------------------------------------------------------------------------- */
/* raw helpers (call with h->mu held)                                                        */

static kl_rc raw_find(hsm_ctx *h, CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *objs,
                      CK_ULONG max, CK_ULONG *count)
{
    CK_FUNCTION_LIST_PTR fl = h->mod->fl;
    CK_RV rv = fl->C_FindObjectsInit(h->sess, tmpl, n);
    if (rv != CKR_OK) {
        return fail_ckr(rv, "C_FindObjectsInit");
    }
    rv = fl->C_FindObjects(h->sess, objs, max, count);
    fl->C_FindObjectsFinal(h->sess);
    if (rv != CKR_OK) {
        return fail_ckr(rv, "C_FindObjects");
    }
    return KL_OK;
}

/* Read one attribute into a malloc'd buffer. */
static kl_rc raw_attr(hsm_ctx *h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, uint8_t **val,
                      size_t *len)
{
    CK_FUNCTION_LIST_PTR fl = h->mod->fl;
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv = fl->C_GetAttributeValue(h->sess, o, &a, 1);
    if (rv != CKR_OK) {
        return fail_ckr(rv, "C_GetAttributeValue");
    }
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 1u << 20) {
        return kl_fail(KL_EHSM, "C_GetAttributeValue: attribute 0x%lx unavailable",
                       (unsigned long)type);
    }
    a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
    if (a.pValue == NULL) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    rv = fl->C_GetAttributeValue(h->sess, o, &a, 1);
    if (rv != CKR_OK) {
        free(a.pValue);
        return fail_ckr(rv, "C_GetAttributeValue");
    }
    *val = a.pValue;
    *len = a.ulValueLen;
    return KL_OK;
}

/* Count objects of class `cls` labelled `label` (at most 8 are counted). */
static kl_rc raw_count_label(hsm_ctx *h, const char *label, CK_OBJECT_CLASS cls,
                             CK_OBJECT_HANDLE *first, CK_ULONG *count)
{
    CK_OBJECT_HANDLE objs[8] = {0}; /* the module fills *count of them */
    CK_ATTRIBUTE t[2] = {
        {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)},
        {CKA_CLASS, &cls, sizeof cls},
    };
    kl_rc rc = raw_find(h, t, 2, objs, 8, count);
    if (rc == KL_OK && *count > 0 && first != NULL) {
        *first = objs[0];
    }
    return rc;
}

static const char *key_type_label(CK_KEY_TYPE kt)
{
    switch (kt) {
    case CKK_EC_EDWARDS: return "Ed25519/EdDSA";
    case 0x41UL: return "X25519/Montgomery"; /* CKK_EC_MONTGOMERY */
    case CKK_DSA: return "DSA";
    case CKK_DH: return "DH";
    default: return "unsupported type";
    }
}

/* Key objects that libp11 0.4.12 cannot handle (anything but CKK_RSA and CKK_EC, notably
 * Ed25519 = CKK_EC_EDWARDS): one of them makes libp11 abort its whole key enumeration.
 * Writes "'label' (type), ..." into buf (empty when there are none). */
static void raw_foreign_keys(hsm_ctx *h, char *buf, size_t cap)
{
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        CK_OBJECT_CLASS cls = classes[i];
        CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof cls};
        CK_OBJECT_HANDLE objs[256];
        CK_ULONG n = 0;
        if (raw_find(h, &t, 1, objs, 256, &n) != KL_OK) {
            continue;
        }
        for (CK_ULONG j = 0; j < n; j++) {
            CK_KEY_TYPE kt = CKK_RSA;
            CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &kt, sizeof kt};
            uint8_t *lab = NULL;
            size_t ll = 0;
            char one[200];
            if (h->mod->fl->C_GetAttributeValue(h->sess, objs[j], &ta, 1) != CKR_OK ||
                kt == CKK_RSA || kt == CKK_EC) {
                continue;
            }
            if (raw_attr(h, objs[j], CKA_LABEL, &lab, &ll) != KL_OK) {
                lab = NULL;
                ll = 0;
            }
            snprintf(one, sizeof one, "'%.*s' (%s)", (int)(ll < 128 ? ll : 128),
                     lab ? (char *)lab : "", key_type_label(kt));
            free(lab);
            if (strstr(buf, one) != NULL) {
                continue; /* public and private halves share the label */
            }
            int w = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", one);
            if (w < 0 || (size_t)w >= cap - used) {
                return;
            }
            used += (size_t)w;
        }
    }
}

static const CK_BYTE oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const CK_BYTE oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const CK_BYTE oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70}; /* 1.3.101.112 */

/* PKCS#11 2.40 says CKA_EC_POINT is a DER OCTET STRING; some tokens give the raw point.
 * Accept both: *pt points into the returned string (free it) or into b. */
static ASN1_OCTET_STRING *ec_point_unwrap(const uint8_t *b, size_t bl, const unsigned char **pt,
                                          size_t *ptlen)
{
    const unsigned char *p = b;
    ASN1_OCTET_STRING *os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)bl);
    if (os != NULL && p == b + bl) {
        *pt = ASN1_STRING_get0_data(os);
        *ptlen = (size_t)ASN1_STRING_length(os);
        return os;
    }
    ASN1_OCTET_STRING_free(os);
    ERR_clear_error();
    *pt = b;
    *ptlen = bl;
    return NULL;
}

/* Software public key from a public (or RSA private) key object's attributes. */
static kl_rc raw_pubkey(hsm_ctx *h, CK_OBJECT_HANDLE o, EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    uint8_t *kt_buf = NULL, *a = NULL, *b = NULL;
    size_t kt_len = 0, al = 0, bl = 0;
    CK_KEY_TYPE kt;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY_CTX *chk = NULL;
    BIGNUM *n = NULL, *e = NULL;
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *os = NULL;
    EVP_PKEY *pk = NULL;
    const char *alg;

    TRY(raw_attr(h, o, CKA_KEY_TYPE, &kt_buf, &kt_len));
    ENSURE(kt_len == sizeof kt, KL_EHSM, "bad CKA_KEY_TYPE");
    memcpy(&kt, kt_buf, sizeof kt);
    bld = OSSL_PARAM_BLD_new();
    ENSURE(bld != NULL, KL_EINTERNAL, "out of memory");
    if (kt == CKK_EC) {
        const unsigned char *p;
        const unsigned char *pt;
        size_t ptlen;
        int nid;
        alg = "EC";
        TRY(raw_attr(h, o, CKA_EC_PARAMS, &a, &al));
        TRY(raw_attr(h, o, CKA_EC_POINT, &b, &bl));
        p = a;
        oid = d2i_ASN1_OBJECT(NULL, &p, (long)al);
        ENSURE(oid != NULL, KL_EHSM, "CKA_EC_PARAMS is not a named curve");
        nid = OBJ_obj2nid(oid);
        ENSURE(nid != NID_undef, KL_EHSM, "CKA_EC_PARAMS names an unknown curve");
        os = ec_point_unwrap(b, bl, &pt, &ptlen);
        ENSURE(
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) &&
                OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen),
            KL_EINTERNAL, "OSSL_PARAM_BLD failed");
    } else if (kt == CKK_EC_EDWARDS) {
        const unsigned char *pt;
        size_t ptlen;
        alg = "ED25519";
        /* PKCS#11 3.0 2.3.10: the curve by OID or as the printable string "edwards25519" */
        static const CK_BYTE ps_ed25519[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                             'd',  's',  '2', '5', '5', '1', '9'};
        TRY(raw_attr(h, o, CKA_EC_PARAMS, &a, &al));
        ENSURE((al == sizeof oid_ed25519 && memcmp(a, oid_ed25519, al) == 0) ||
                   (al == sizeof ps_ed25519 && memcmp(a, ps_ed25519, al) == 0),
               KL_EPOLICY, "an EdDSA key on a curve other than edwards25519 is not supported");
        TRY(raw_attr(h, o, CKA_EC_POINT, &b, &bl));
        os = ec_point_unwrap(b, bl, &pt, &ptlen);
        ENSURE(ptlen == 32, KL_EHSM, "the token's Ed25519 public key is %zu bytes, not 32", ptlen);
        ENSURE(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen),
               KL_EINTERNAL, "OSSL_PARAM_BLD failed");
    } else if (kt == CKK_RSA) {
        alg = "RSA";
        TRY(raw_attr(h, o, CKA_MODULUS, &a, &al));
        TRY(raw_attr(h, o, CKA_PUBLIC_EXPONENT, &b, &bl));
        n = BN_bin2bn(a, (int)al, NULL);
        e = BN_bin2bn(b, (int)bl, NULL);
        ENSURE(n != NULL && e != NULL, KL_EINTERNAL, "out of memory");
        ENSURE(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
                   OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e),
               KL_EINTERNAL, "OSSL_PARAM_BLD failed");
    } else {
        ENSURE(0, KL_EPOLICY, "key type 0x%lx is not supported", (unsigned long)kt);
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ENSURE(params != NULL, KL_EINTERNAL, "OSSL_PARAM_BLD_to_param failed");
    pctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    ENSURE_SSL(pctx != NULL && EVP_PKEY_fromdata_init(pctx) > 0 &&
                   EVP_PKEY_fromdata(pctx, &pk, EVP_PKEY_PUBLIC_KEY, params) > 0,
               KL_EHSM, "cannot build the public key from the token's attributes");
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    ENSURE_SSL(chk != NULL && EVP_PKEY_public_check(chk) > 0, KL_EHSM,
               "the token's public key does not check out");
    *out = pk;
    pk = NULL;
out:
    free(kt_buf);
    free(a);
    free(b);
    BN_free(n);
    BN_free(e);
    ASN1_OBJECT_free(oid);
    ASN1_OCTET_STRING_free(os);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_free(pk);
    return rc;
}

/* A key argument is a bare label or a pkcs11: URI with object=. */
static kl_rc label_of(const hsm_ctx *h, const char *arg, char **out)
{
    kl_rc rc = KL_OK;
    hsm_uri u;
    memset(&u, 0, sizeof u);
    ENSURE(arg != NULL && *arg != '\0', KL_EUSAGE, "no key label given");
    if (strncasecmp(arg, "pkcs11:", 7) != 0) {
        *out = strdup(arg);
        ENSURE(*out != NULL, KL_EINTERNAL, "out of memory");
        return KL_OK;
    }
    TRY(hsm_uri_parse(arg, &u));
    ENSURE(u.object != NULL && *u.object != '\0', KL_EUSAGE, "key URI %s has no object=", arg);
    ENSURE(u.token == NULL || strcmp(u.token, h->token_label) == 0, KL_ENOTFOUND,
           "key URI %s names token '%s', but this context holds token '%s'", arg, u.token,
           h->token_label);
    *out = u.object;
    u.object = NULL;
out:
    hsm_uri_free(&u);
    return rc;
}

kl_rc hsm_label_of(const hsm_ctx *h, const char *arg, char **out)
{
    return label_of(h, arg, out);
}

/* ---------------------------------------------------------------------------------------- */
/* keys                                                                                     */

/* Key objects of the types libp11 handles (RSA, EC) on h's token (at most 32 counted). */
static kl_rc raw_count_p11_keys(hsm_ctx *h, CK_ULONG *count)
{
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    static const CK_KEY_TYPE kts[] = {CKK_RSA, CKK_EC};
    *count = 0;
    for (size_t i = 0; i < 4; i++) {
        CK_OBJECT_CLASS cls = classes[i / 2];
        CK_KEY_TYPE kt = kts[i % 2];
        CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}};
        CK_OBJECT_HANDLE o[8];
        CK_ULONG n = 0;
        kl_rc rc = raw_find(h, t, 2, o, 8, &n);
        if (rc != KL_OK) {
            return rc;
        }
        *count += n;
    }
    return KL_OK;
}

/* 1 when h's token holds an Ed25519 key object (h->mu held). */
static int raw_has_ed25519(hsm_ctx *h)
{
    CK_KEY_TYPE kt = CKK_EC_EDWARDS;
    CK_ATTRIBUTE t = {CKA_KEY_TYPE, &kt, sizeof kt};
    CK_OBJECT_HANDLE o;
    CK_ULONG n = 0;
    return raw_find(h, &t, 1, &o, 1, &n) == KL_OK && n > 0;
}

/* libp11 0.4.12 sees no key at all on a token that holds an Ed25519 key (see raw_foreign_keys),
 * so Ed25519 keys and the RSA/EC keys libp11 handles never share a token: an Ed25519 key goes
 * on a token of its own ([hsm LABEL], ca create --token), and no RSA/EC key joins it there. */
static kl_rc raw_keygen_mix_check(hsm_ctx *h, hsm_key_type type)
{
    char foreign[512];
    raw_foreign_keys(h, foreign, sizeof foreign);
    if (type != HSM_KEY_ED25519) {
        return foreign[0] == '\0'
                   ? KL_OK
                   : kl_fail(KL_EPOLICY,
                             "token '%s' holds %s: libp11 0.4.12 could not see a %s key beside "
                             "it; put the key on another token",
                             h->token_label, foreign, hsm_key_type_name(type));
    }
    CK_ULONG others = 0;
    kl_rc rc = raw_count_p11_keys(h, &others);
    if (rc != KL_OK) {
        return rc;
    }
    return others == 0 ? KL_OK
                       : kl_fail(KL_EPOLICY,
                                 "an Ed25519 key needs a token of its own: token '%s' holds RSA "
                                 "or EC keys, which libp11 0.4.12 could no longer see beside it "
                                 "(name a token for this CA: [hsm LABEL] in keyline.conf or "
                                 "ca create --token)",
                                 h->token_label);
}

/* The templates of a key pair being generated. Attribute values point into this struct, into
 * the static tables below, or at the caller's label. */
typedef struct {
    CK_MECHANISM mech;
    CK_ATTRIBUTE pubt[12], privt[14];
    CK_ULONG npub, npriv;
    CK_ULONG bits;
    CK_BYTE exp65537[3];
    CK_BYTE id[20];
} keygen_tpl;

typedef struct {
    CK_ATTRIBUTE_TYPE type;
    CK_BBOOL value;
} keygen_flag;

/* The public half verifies and nothing else, and neither half can be changed later (a
 * modifiable private key could be made extractable or given decrypt by a PIN holder). */
static const keygen_flag keygen_pub_flags[] = {
    {CKA_TOKEN, CK_TRUE},    {CKA_PRIVATE, CK_FALSE}, {CKA_VERIFY, CK_TRUE},
    {CKA_ENCRYPT, CK_FALSE}, {CKA_WRAP, CK_FALSE},    {CKA_MODIFIABLE, CK_FALSE},
};

/* A CA key signs and does nothing else. */
static const keygen_flag keygen_priv_flags[] = {
    {CKA_TOKEN, CK_TRUE},        {CKA_PRIVATE, CK_TRUE}, {CKA_SENSITIVE, CK_TRUE},
    {CKA_EXTRACTABLE, CK_FALSE}, {CKA_SIGN, CK_TRUE},    {CKA_DECRYPT, CK_FALSE},
    {CKA_UNWRAP, CK_FALSE},      {CKA_DERIVE, CK_FALSE}, {CKA_MODIFIABLE, CK_FALSE},
};

static kl_rc keygen_add(CK_ATTRIBUTE *t, CK_ULONG *n, size_t cap, CK_ATTRIBUTE_TYPE type,
                        const void *ptr, size_t len)
{
    if (*n >= cap) {
        return kl_fail(KL_EINTERNAL, "key template too long");
    }
    t[*n].type = type;
    t[*n].pValue = (void *)ptr;
    t[*n].ulValueLen = (CK_ULONG)len;
    (*n)++;
    return KL_OK;
}

#define KEYGEN_PUB(k, type, ptr, len)                                                              \
    keygen_add((k)->pubt, &(k)->npub, sizeof(k)->pubt / sizeof((k)->pubt[0]), type, ptr, len)

/* The attributes of one half: its flags, then the label and the id both halves share. */
static kl_rc keygen_half(CK_ATTRIBUTE *t, CK_ULONG *n, size_t cap, const keygen_flag *flags,
                         size_t nflags, const char *label, const CK_BYTE *id, size_t idlen)
{
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < nflags; i++) {
        TRY(keygen_add(t, n, cap, flags[i].type, &flags[i].value, sizeof flags[i].value));
    }
    TRY(keygen_add(t, n, cap, CKA_LABEL, label, strlen(label)));
    TRY(keygen_add(t, n, cap, CKA_ID, id, idlen));
out:
    return rc;
}

/* The mechanism and the public attributes that depend on the key type. */
static kl_rc keygen_type_attrs(keygen_tpl *k, hsm_key_type type)
{
    kl_rc rc = KL_OK;
    switch (type) {
    case HSM_KEY_ED25519:
        /* PKCS#11 3.0 2.3.10: CKA_EC_PARAMS names the curve (SoftHSM 2.6.1 takes the OID) */
        k->mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        TRY(KEYGEN_PUB(k, CKA_EC_PARAMS, oid_ed25519, sizeof oid_ed25519));
        break;
    case HSM_KEY_EC_P256: TRY(KEYGEN_PUB(k, CKA_EC_PARAMS, oid_p256, sizeof oid_p256)); break;
    case HSM_KEY_EC_P384: TRY(KEYGEN_PUB(k, CKA_EC_PARAMS, oid_p384, sizeof oid_p384)); break;
    case HSM_KEY_RSA_2048:
    case HSM_KEY_RSA_4096:
    case HSM_KEY_RSA_3072:
        k->bits = type == HSM_KEY_RSA_2048 ? 2048 : type == HSM_KEY_RSA_4096 ? 4096 : 3072;
        k->mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
        TRY(KEYGEN_PUB(k, CKA_MODULUS_BITS, &k->bits, sizeof k->bits));
        TRY(KEYGEN_PUB(k, CKA_PUBLIC_EXPONENT, k->exp65537, sizeof k->exp65537));
        break;
    default: break;
    }
out:
    return rc;
}

/* Both templates for a key pair of `type` labelled `label`, under a fresh random CKA_ID. */
static kl_rc keygen_tpl_build(keygen_tpl *k, const char *label, hsm_key_type type)
{
    kl_rc rc = KL_OK;
    static const CK_BYTE exp65537[] = {0x01, 0x00, 0x01};
    memset(k, 0, sizeof *k);
    k->mech.mechanism = CKM_EC_KEY_PAIR_GEN;
    k->bits = 3072;
    memcpy(k->exp65537, exp65537, sizeof exp65537);
    ENSURE_SSL(RAND_bytes(k->id, sizeof k->id) == 1, KL_EINTERNAL, "RAND_bytes failed");
    TRY(keygen_half(k->pubt, &k->npub, sizeof k->pubt / sizeof k->pubt[0], keygen_pub_flags,
                    sizeof keygen_pub_flags / sizeof keygen_pub_flags[0], label, k->id,
                    sizeof k->id));
    TRY(keygen_half(k->privt, &k->npriv, sizeof k->privt / sizeof k->privt[0], keygen_priv_flags,
                    sizeof keygen_priv_flags / sizeof keygen_priv_flags[0], label, k->id,
                    sizeof k->id));
    TRY(keygen_type_attrs(k, type));
out:
    return rc;
}

/* The generation itself (h->mu and g_keygen_mu held): no key of that label yet, the token's
 * key types kept apart, then C_GenerateKeyPair. */
static kl_rc keygen_locked(hsm_ctx *h, const char *label, hsm_key_type type, keygen_tpl *k,
                           EVP_PKEY **pub_out)
{
    kl_rc rc = KL_OK;
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    /* Key objects only: a certificate may well carry its key's label. */
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, NULL, &count));
    if (count == 0) {
        TRY(raw_count_label(h, label, CKO_PUBLIC_KEY, NULL, &count));
    }
    ENSURE(count == 0, KL_EEXIST, "a key labelled '%s' already exists on token '%s'", label,
           h->token_label);
    TRY(raw_keygen_mix_check(h, type));
    CK_RV rv = h->mod->fl->C_GenerateKeyPair(h->sess, &k->mech, k->pubt, k->npub, k->privt,
                                             k->npriv, &pub, &priv);
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_GenerateKeyPair");
        kl_wrap(rc, "generating %s key '%s' on token '%s'", hsm_key_type_name(type), label,
                h->token_label);
        goto out;
    }
    if (pub_out != NULL) {
        TRY(raw_pubkey(h, pub, pub_out));
    }
out:
    return rc;
}

kl_rc hsm_key_generate(hsm_ctx *h, const char *label, hsm_key_type type, EVP_PKEY **pub_out)
{
    kl_rc rc = KL_OK;
    keygen_tpl k;

    if (pub_out != NULL) {
        *pub_out = NULL;
    }
    ENSURE(h != NULL, KL_EUSAGE, "hsm_key_generate: no context");
    ENSURE(label != NULL && *label != '\0', KL_EUSAGE, "no key label given");
    ENSURE(strlen(label) <= 128, KL_EUSAGE, "key label longer than 128 bytes");
    ENSURE((unsigned)type < HSM_KEY__COUNT, KL_EUSAGE, "unknown key type %d", (int)type);
    ENSURE(h->logged_in, KL_EUSAGE, "key generation needs a login (open the token with a PIN)");
    TRY(keygen_tpl_build(&k, label, type));

    pthread_mutex_lock(&g_keygen_mu);
    pthread_mutex_lock(&h->mu);
    rc = keygen_locked(h, label, type, &k, pub_out);
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_unlock(&g_keygen_mu);
out:
    return rc;
}

/* Entry of the calls that name one key: the context checked, the key argument resolved into a
 * malloc'd *label, h->mu taken. On failure nothing is held. `fn` names the caller in errors. */
static kl_rc key_enter(hsm_ctx *h, const char *fn, const char *label_arg, char **label)
{
    if (h == NULL) {
        return kl_fail(KL_EUSAGE, "%s: no context", fn);
    }
    kl_rc rc = label_of(h, label_arg, label);
    if (rc == KL_OK) {
        pthread_mutex_lock(&h->mu);
    }
    return rc;
}

/* Exit matching key_enter (locked: whether key_enter succeeded). */
static void key_leave(hsm_ctx *h, int locked, char *label)
{
    if (locked) {
        pthread_mutex_unlock(&h->mu);
    }
    free(label);
}

/* h->mu held: the cached key of `label` dropped (the EVP_PKEY lives on with its holders). */
static void cache_drop(hsm_ctx *h, const char *label)
{
    for (size_t i = 0; i < h->ncache; i++) {
        if (strcmp(h->cache[i].label, label) == 0) {
            free(h->cache[i].label);
            EVP_PKEY_free(h->cache[i].pk);
            h->cache[i] = h->cache[--h->ncache];
            break;
        }
    }
}

void hsm_key_forget(hsm_ctx *h, const char *label_arg)
{
    char *label = NULL;
    if (key_enter(h, "hsm_key_forget", label_arg, &label) == KL_OK) {
        cache_drop(h, label);
        key_leave(h, 1, label);
    }
}

kl_rc hsm_key_destroy(hsm_ctx *h, const char *label_arg)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    int locked = 0;
    size_t destroyed = 0;
    TRY(key_enter(h, "hsm_key_destroy", label_arg, &label));
    locked = 1;
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    for (size_t c = 0; c < sizeof classes / sizeof classes[0]; c++) {
        for (;;) {
            CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
            CK_ULONG n = 0;
            TRY(raw_count_label(h, label, classes[c], &o, &n));
            if (n == 0) {
                break;
            }
            CK_RV rv = h->mod->fl->C_DestroyObject(h->sess, o);
            if (rv != CKR_OK) {
                rc = fail_ckr(rv, "C_DestroyObject");
                goto out;
            }
            destroyed++;
        }
    }
    cache_drop(h, label);
    ENSURE(destroyed > 0, KL_ENOTFOUND, "no key labelled %s on token %s", label, h->token_label);
out:
    key_leave(h, locked, label);
    return rc;
}

static EVP_PKEY *cache_get(hsm_ctx *h, const char *label)
{
    for (size_t i = 0; i < h->ncache; i++) {
        if (strcmp(h->cache[i].label, label) == 0) {
            EVP_PKEY_up_ref(h->cache[i].pk);
            return h->cache[i].pk;
        }
    }
    return NULL;
}

static void cache_put(hsm_ctx *h, const char *label, EVP_PKEY *pk)
{
    void *n = realloc(h->cache, (h->ncache + 1) * sizeof *h->cache);
    char *l = strdup(label);
    if (n == NULL || l == NULL) {
        free(l);
        if (n != NULL) {
            h->cache = n;
        }
        return; /* no cache entry: the next load just enumerates again */
    }
    h->cache = n;
    EVP_PKEY_up_ref(pk);
    h->cache[h->ncache].label = l;
    h->cache[h->ncache].pk = pk;
    h->ncache++;
}

/* The private key labelled `label` when it is an Ed25519 key: an EVP_PKEY that signs through
 * hsm_ed_sign (hsm_ed25519.c); *out stays NULL for any other key or none (h->mu held). */
static kl_rc raw_ed_load(hsm_ctx *h, const char *label, EVP_PKEY **out)
{
    kl_rc rc = KL_OK;
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &kt, sizeof kt};
    EVP_PKEY *pub = NULL;
    uint8_t raw[32];
    size_t rawlen = sizeof raw;
    *out = NULL;
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &o, &count));
    if (count == 0 || h->mod->fl->C_GetAttributeValue(h->sess, o, &ta, 1) != CKR_OK ||
        kt != CKK_EC_EDWARDS) {
        goto out;
    }
    ENSURE(count == 1, KL_EHSM, "%lu private keys labelled '%s' on token '%s'; refusing to guess",
           (unsigned long)count, label, h->token_label);
    TRY(raw_count_label(h, label, CKO_PUBLIC_KEY, &o, &count));
    ENSURE(count == 1, KL_EHSM, "Ed25519 key '%s' on token '%s' has %s public half", label,
           h->token_label, count ? "more than one" : "no");
    TRY(raw_pubkey(h, o, &pub));
    ENSURE_SSL(EVP_PKEY_get_raw_public_key(pub, raw, &rawlen) == 1 && rawlen == sizeof raw, KL_EHSM,
               "Ed25519 key '%s': no public key", label);
    TRY(hsm_ed_pkey_new(h, label, raw, out));
out:
    EVP_PKEY_free(pub);
    return rc;
}

kl_rc hsm_ed_sign(hsm_ctx *h, const char *label, const uint8_t *msg, size_t len, uint8_t *sig,
                  size_t *siglen)
{
    kl_rc rc = KL_OK;
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG count = 0, sl = (CK_ULONG)*siglen;
    /* PKCS#11 3.0 2.3.14: CKM_EDDSA without parameters is PureEdDSA (Ed25519, RFC 8032) over
     * the whole message: no prehash */
    CK_MECHANISM mech = {CKM_EDDSA, NULL, 0};
    CK_RV rv;
    pthread_mutex_lock(&h->mu);
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &o, &count));
    ENSURE(count == 1, count ? KL_EHSM : KL_ENOTFOUND, "%s Ed25519 key labelled %s on token %s",
           count ? "more than one" : "no", label, h->token_label);
    rv = h->mod->fl->C_SignInit(h->sess, &mech, o);
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_SignInit (CKM_EDDSA)");
        goto out;
    }
    rv = h->mod->fl->C_Sign(h->sess, (CK_BYTE_PTR)msg, (CK_ULONG)len, sig, &sl);
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_Sign (CKM_EDDSA)");
        goto out;
    }
    *siglen = (size_t)sl;
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

kl_rc hsm_key_load(hsm_ctx *h, const char *label_arg, EVP_PKEY **priv_out)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    PKCS11_KEY *keys = NULL, *hit = NULL;
    unsigned int nkeys = 0, nhits = 0;
    EVP_PKEY *pk = NULL;
    char ed[512];
    int locked = 0;
    CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    uint8_t *id = NULL;
    size_t idlen = 0;

    ENSURE(priv_out != NULL, KL_EUSAGE, "hsm_key_load: no output");
    *priv_out = NULL;
    TRY(key_enter(h, "hsm_key_load", label_arg, &label));
    locked = 1;
    pk = cache_get(h, label);
    if (pk != NULL) {
        *priv_out = pk;
        pk = NULL;
        goto out;
    }
    /* An Ed25519 key is never handed to libp11: it cannot enumerate a token holding one. */
    TRY(raw_ed_load(h, label, &pk));
    if (pk != NULL) {
        cache_put(h, label, pk);
        *priv_out = pk;
        pk = NULL;
        goto out;
    }
    if (raw_has_ed25519(h)) {
        /* a token of Ed25519 keys only (a CA's own): the key is simply not there */
        CK_ULONG others = 0;
        TRY(raw_count_p11_keys(h, &others));
        ENSURE(others > 0, KL_ENOTFOUND, "no key labelled %s on token %s", label, h->token_label);
    }
    /* libp11 0.4.12 re-runs C_FindObjects on every call and adds objects it has not seen
     * (keys generated since the last call included); earlier EVP_PKEYs stay valid. */
    if (PKCS11_enumerate_keys(h->slot->token, &keys, &nkeys) < 0) {
        CK_RV ckr = p11_take_ckr();
        raw_foreign_keys(h, ed, sizeof ed);
        ENSURE(ed[0] == '\0', KL_EHSM,
               "cannot look up key '%s': token '%s' holds key(s) that libp11 0.4.12 cannot "
               "handle: %s; while such a key is on the token libp11 cannot enumerate any key "
               "(move it to another token)",
               label, h->token_label, ed);
        ENSURE(0, ckr ? hsm_rc_from_ckr(ckr) : KL_EHSM, "cannot list the keys on token '%s': %s",
               h->token_label, ckr ? hsm_ckr_name(ckr) : "libp11 failed");
    }
    /* libp11 keeps the objects it listed once, a key destroyed since (by us or by another
     * process: a delegated OCSP signer's replaced key, same label) among them: the one meant is
     * the token's own key of that label, by its CKA_ID (random per key) */
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &obj, &count));
    if (count == 1) {
        TRY(raw_attr(h, obj, CKA_ID, &id, &idlen));
    }
    for (unsigned int i = 0; i < nkeys; i++) {
        if (keys[i].isPrivate && keys[i].label != NULL && strcmp(keys[i].label, label) == 0 &&
            (!id || (keys[i].id_len == idlen && memcmp(keys[i].id, id, idlen) == 0))) {
            if (hit == NULL) {
                hit = &keys[i];
            }
            nhits++;
        }
    }
    if (hit == NULL) {
        raw_foreign_keys(h, ed, sizeof ed);
        ENSURE(ed[0] == '\0', KL_EHSM,
               "no key labelled '%s' visible on token '%s': it holds key(s) that libp11 "
               "0.4.12 cannot handle: %s (move them to another token)",
               label, h->token_label, ed);
        ENSURE(0, KL_ENOTFOUND, "no key labelled %s on token %s%s", label, h->token_label,
               h->logged_in ? "" : " (not logged in: private keys are hidden)");
    }
    ENSURE(nhits == 1, KL_EHSM, "%u private keys labelled '%s' on token '%s'; refusing to guess",
           nhits, label, h->token_label);
    pk = PKCS11_get_private_key(hit);
    ENSURE_SSL(pk != NULL, KL_EHSM, "libp11 cannot use key '%s' on token '%s'", label,
               h->token_label);
    cache_put(h, label, pk);
    *priv_out = pk;
    pk = NULL;
out:
    key_leave(h, locked, label);
    free(id);
    return rc;
}

kl_rc hsm_key_public(hsm_ctx *h, const char *label_arg, EVP_PKEY **pub_out)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    int locked = 0;

    ENSURE(pub_out != NULL, KL_EUSAGE, "hsm_key_public: no output");
    *pub_out = NULL;
    TRY(key_enter(h, "hsm_key_public", label_arg, &label));
    locked = 1;
    TRY(raw_count_label(h, label, CKO_PUBLIC_KEY, &o, &count));
    if (count == 0) {
        /* No public object: an RSA private key carries its modulus and exponent. */
        TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &o, &count));
    }
    ENSURE(count > 0, KL_ENOTFOUND, "no key labelled %s on token %s", label, h->token_label);
    ENSURE(count == 1, KL_EHSM, "several keys labelled '%s' on token '%s'; refusing to guess",
           label, h->token_label);
    TRY(raw_pubkey(h, o, pub_out));
out:
    key_leave(h, locked, label);
    return rc;
}

kl_rc hsm_ecdh(hsm_ctx *h, const char *label_arg, const uint8_t peer[65], uint8_t z[32])
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE, s = CK_INVALID_HANDLE;
    CK_ULONG count = 0, len = 32;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},       {CKA_KEY_TYPE, &kt, sizeof kt},
                           {CKA_TOKEN, &no, sizeof no},         {CKA_SENSITIVE, &no, sizeof no},
                           {CKA_EXTRACTABLE, &yes, sizeof yes}, {CKA_VALUE_LEN, &len, sizeof len}};
    CK_ECDH1_DERIVE_PARAMS p = {CKD_NULL, 0, NULL, 65, (CK_BYTE_PTR)peer};
    CK_MECHANISM mech = {CKM_ECDH1_DERIVE, &p, sizeof p};
    CK_ATTRIBUTE val = {CKA_VALUE, z, 32};
    int locked = 0;
    CK_RV rv;

    ENSURE(peer && z && peer[0] == 0x04, KL_EUSAGE, "hsm_ecdh: no uncompressed peer point");
    TRY(key_enter(h, "hsm_ecdh", label_arg, &label));
    locked = 1;
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &o, &count));
    ENSURE(count > 0, KL_ENOTFOUND, "no key labelled %s on token %s", label, h->token_label);
    rv = h->mod->fl->C_DeriveKey(h->sess, &mech, o, tmpl, sizeof tmpl / sizeof tmpl[0], &s);
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_DeriveKey (ECDH)");
        goto out;
    }
    rv = h->mod->fl->C_GetAttributeValue(h->sess, s, &val, 1);
    if (rv != CKR_OK || val.ulValueLen != 32) {
        rc = rv != CKR_OK ? fail_ckr(rv, "C_GetAttributeValue (ECDH secret)")
                          : kl_fail(KL_EHSM, "ECDH secret of %lu bytes", val.ulValueLen);
    }
out:
    if (s != CK_INVALID_HANDLE) {
        (void)h->mod->fl->C_DestroyObject(h->sess, s);
    }
    key_leave(h, locked, label);
    return rc;
}

kl_rc hsm_key_protection(hsm_ctx *h, const char *label_arg, unsigned *flags_out)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    CK_BBOOL v[7] = {0};
    CK_ATTRIBUTE t[7] = {
        {CKA_SENSITIVE, &v[0], 1},        {CKA_EXTRACTABLE, &v[1], 1},
        {CKA_ALWAYS_SENSITIVE, &v[2], 1}, {CKA_NEVER_EXTRACTABLE, &v[3], 1},
        {CKA_PRIVATE, &v[4], 1},          {CKA_TOKEN, &v[5], 1},
        {CKA_MODIFIABLE, &v[6], 1},
    };
    static const unsigned bit[7] = {HSM_PROT_SENSITIVE,        HSM_PROT_EXTRACTABLE,
                                    HSM_PROT_ALWAYS_SENSITIVE, HSM_PROT_NEVER_EXTRACTABLE,
                                    HSM_PROT_PRIVATE,          HSM_PROT_TOKEN,
                                    HSM_PROT_MODIFIABLE};
    unsigned f = 0;
    int locked = 0;
    CK_RV rv;

    ENSURE(flags_out != NULL, KL_EUSAGE, "hsm_key_protection: no output");
    *flags_out = 0;
    TRY(key_enter(h, "hsm_key_protection", label_arg, &label));
    locked = 1;
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &o, &count));
    ENSURE(count > 0, KL_ENOTFOUND, "no key labelled %s on token %s", label, h->token_label);
    rv = h->mod->fl->C_GetAttributeValue(h->sess, o, t, 7);
    /* CKR_ATTRIBUTE_TYPE_INVALID: some attribute unknown; the others are still filled in. */
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID) {
        rc = fail_ckr(rv, "C_GetAttributeValue");
        goto out;
    }
    for (int i = 0; i < 7; i++) {
        if (t[i].ulValueLen == 1 && v[i] == CK_TRUE) {
            f |= bit[i];
        }
    }
    *flags_out = f;
out:
    key_leave(h, locked, label);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* certificate objects                                                                      */

/* Destroy the certificate objects labelled `label` (h->mu held). */
static kl_rc raw_cert_clear(hsm_ctx *h, const char *label)
{
    for (;;) {
        CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
        CK_ULONG n = 0;
        kl_rc rc = raw_count_label(h, label, CKO_CERTIFICATE, &o, &n);
        if (rc != KL_OK || n == 0) {
            return rc;
        }
        CK_RV rv = h->mod->fl->C_DestroyObject(h->sess, o);
        if (rv != CKR_OK) {
            return fail_ckr(rv, "C_DestroyObject");
        }
    }
}

kl_rc hsm_cert_put(hsm_ctx *h, const char *label_arg, const uint8_t *der, size_t len)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    uint8_t *id = NULL, *subj = NULL, *iss = NULL, *ser = NULL;
    size_t idlen = 0;
    int locked = 0, sl, il, nl;
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE, obj = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    ENSURE(x != NULL && p == der + len, KL_EINPUT, "hsm_cert_put: not one DER certificate");
    sl = i2d_X509_NAME(X509_get_subject_name(x), &subj);
    il = i2d_X509_NAME(X509_get_issuer_name(x), &iss);
    nl = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &ser);
    ENSURE_SSL(sl > 0 && il > 0 && nl > 0, KL_EINTERNAL, "cannot encode the certificate's names");
    TRY(key_enter(h, "hsm_cert_put", label_arg, &label));
    locked = 1;
    ENSURE(h->logged_in, KL_EUSAGE, "storing a certificate needs a login");
    TRY(raw_count_label(h, label, CKO_PRIVATE_KEY, &key, &count));
    ENSURE(count == 1, count ? KL_EHSM : KL_ENOTFOUND, "%s private key labelled %s on token %s",
           count ? "more than one" : "no", label, h->token_label);
    TRY(raw_attr(h, key, CKA_ID, &id, &idlen));
    TRY(raw_cert_clear(h, label));
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    /* PKCS#11 2.40 4.6.3: the X.509 certificate object; CKA_ID as the key's, so tools pair
     * them (pkcs11-tool, p11tool, libp11's PKCS11_find_certificate) */
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_CERTIFICATE_TYPE, &ct, sizeof ct},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &no, sizeof no},
        {CKA_LABEL, label, (CK_ULONG)strlen(label)},
        {CKA_ID, id, (CK_ULONG)idlen},
        {CKA_SUBJECT, subj, (CK_ULONG)sl},
        {CKA_ISSUER, iss, (CK_ULONG)il},
        {CKA_SERIAL_NUMBER, ser, (CK_ULONG)nl},
        {CKA_VALUE, (void *)der, (CK_ULONG)len},
    };
    CK_RV rv = h->mod->fl->C_CreateObject(h->sess, t, sizeof t / sizeof t[0], &obj);
    if (rv != CKR_OK) {
        rc = fail_ckr(rv, "C_CreateObject (certificate)");
    }
out:
    key_leave(h, locked, label);
    X509_free(x);
    free(id);
    OPENSSL_free(subj);
    OPENSSL_free(iss);
    OPENSSL_free(ser);
    return rc;
}
