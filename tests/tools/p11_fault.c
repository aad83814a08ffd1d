/* p11_fault: a PKCS#11 module that wraps a real one (SoftHSM) and fails on command, so tests can
 * make the HSM misbehave in the middle of a run (issue 18: HSM faults).
 *
 *   KL_P11_FAULT_MODULE  the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   KL_P11_FAULT_FILE    a control file read on every wrapped call; absent or empty: no fault.
 *                        One rule per line: "FUNCTION CKR_NAME" (FUNCTION as C_Sign, or "*" for
 *                        every wrapped function), e.g. "C_Sign CKR_DEVICE_ERROR".
 *
 * The wrapped functions are those a running signer calls: opening sessions, logging in,
 * finding objects, reading attributes, signing and generating keys. Everything else goes
 * straight to the real module. A test writes the file to inject the fault and removes it to let
 * the token come back; the process under test is never restarted by the module. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST mine;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_OK;

static const struct {
    const char *name;
    CK_RV rv;
} rv_names[] = {
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_PIN_LOCKED", CKR_PIN_LOCKED},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
};

static CK_RV rv_parse(const char *s)
{
    for (size_t i = 0; i < sizeof rv_names / sizeof rv_names[0]; i++) {
        if (strcmp(s, rv_names[i].name) == 0) {
            return rv_names[i].rv;
        }
    }
    return CKR_GENERAL_ERROR;
}

/* The fault the control file sets for `fn`, or CKR_OK. */
static CK_RV fault_for(const char *fn)
{
    const char *path = getenv("KL_P11_FAULT_FILE");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[256];
    CK_RV rv = CKR_OK;
    if (!f) {
        return CKR_OK;
    }
    while (rv == CKR_OK && fgets(line, sizeof line, f)) {
        char name[64], code[64];
        if (sscanf(line, "%63s %63s", name, code) == 2 &&
            (strcmp(name, "*") == 0 || strcmp(name, fn) == 0)) {
            rv = rv_parse(code);
        }
    }
    fclose(f);
    return rv;
}

#define FAULT(fn)                                                                                  \
    do {                                                                                           \
        CK_RV frv_ = fault_for(#fn);                                                               \
        if (frv_ != CKR_OK) {                                                                      \
            return frv_;                                                                           \
        }                                                                                          \
    } while (0)

static CK_RV w_open_session(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                            CK_SESSION_HANDLE_PTR out)
{
    FAULT(C_OpenSession);
    return real->C_OpenSession(slot, flags, app, notify, out);
}

static CK_RV w_login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    FAULT(C_Login);
    return real->C_Login(h, type, pin, len);
}

static CK_RV w_find_init(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    FAULT(C_FindObjectsInit);
    return real->C_FindObjectsInit(h, t, n);
}

static CK_RV w_get_attr(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    FAULT(C_GetAttributeValue);
    return real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV w_sign_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    FAULT(C_SignInit);
    return real->C_SignInit(h, m, k);
}

static CK_RV w_sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s, CK_ULONG_PTR sl)
{
    CK_RV frv = fault_for("C_Sign");
    if (frv != CKR_OK) {
        /* PKCS#11 5.13: a call to C_Sign that fails terminates the signing operation, as the
         * real module's own failure would: finish it there and throw the signature away. */
        CK_BYTE scratch[1024];
        CK_ULONG n = sizeof scratch;
        (void)real->C_Sign(h, d, dl, scratch, &n);
        return frv;
    }
    return real->C_Sign(h, d, dl, s, sl);
}

static CK_RV w_genkp(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub, CK_ULONG npub,
                     CK_ATTRIBUTE_PTR prv, CK_ULONG nprv, CK_OBJECT_HANDLE_PTR hpub,
                     CK_OBJECT_HANDLE_PTR hprv)
{
    FAULT(C_GenerateKeyPair);
    return real->C_GenerateKeyPair(h, m, pub, npub, prv, nprv, hpub, hprv);
}

static void load(void)
{
    const char *path = getenv("KL_P11_FAULT_MODULE");
    void *dl = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList gfl = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
    if (!gfl || gfl(&real) != CKR_OK || !real) {
        fprintf(stderr, "p11_fault: cannot load the real module: %s\n", dl ? "" : dlerror());
        load_rv = CKR_GENERAL_ERROR;
        return;
    }
    mine = *real;
    mine.C_OpenSession = w_open_session;
    mine.C_Login = w_login;
    mine.C_FindObjectsInit = w_find_init;
    mine.C_GetAttributeValue = w_get_attr;
    mine.C_SignInit = w_sign_init;
    mine.C_Sign = w_sign;
    mine.C_GenerateKeyPair = w_genkp;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (!out) {
        return CKR_ARGUMENTS_BAD;
    }
    pthread_once(&once, load);
    if (load_rv != CKR_OK) {
        return load_rv;
    }
    *out = &mine;
    return CKR_OK;
}
