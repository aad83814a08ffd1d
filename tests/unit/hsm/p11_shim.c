/* keyline test helper: a PKCS#11 module that forwards every call to SoftHSM (or
 * $KL_SHIM_TARGET) except that, depending on $KL_SHIM_MODE at call time,
 *   login-locked  C_Login returns CKR_PIN_LOCKED
 *   flag-locked   C_GetTokenInfo reports CKF_USER_PIN_LOCKED
 * SoftHSM 2.6.1 never locks a user PIN, so this is how the locked-PIN path gets tested. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST shim;
static CK_FUNCTION_LIST_PTR real;

static int mode_is(const char *m)
{
    const char *v = getenv("KL_SHIM_MODE");
    return v != NULL && strcmp(v, m) == 0;
}

static CK_RV shim_login(CK_SESSION_HANDLE s, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    if (mode_is("login-locked")) {
        return CKR_PIN_LOCKED;
    }
    return real->C_Login(s, u, pin, len);
}

static CK_RV shim_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR ti)
{
    CK_RV rv = real->C_GetTokenInfo(slot, ti);
    if (rv == CKR_OK && mode_is("flag-locked")) {
        ti->flags |= CKF_USER_PIN_LOCKED;
    }
    return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (real == NULL) {
        const char *t = getenv("KL_SHIM_TARGET");
        void *dl = dlopen(t ? t : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList gfl;
        if (dl == NULL) {
            return CKR_GENERAL_ERROR;
        }
        *(void **)(&gfl) = dlsym(dl, "C_GetFunctionList");
        if (gfl == NULL || gfl(&real) != CKR_OK) {
            return CKR_GENERAL_ERROR;
        }
        shim = *real;
        shim.C_Login = shim_login;
        shim.C_GetTokenInfo = shim_token_info;
    }
    *out = &shim;
    return CKR_OK;
}
