/* kl_p11_ed_import: replace the private key labelled LABEL on token TOKEN by an imported
 * Ed25519 key that is neither sensitive nor unextractable, as someone holding the PIN could
 * (pkcs11-tool cannot write Ed25519 keys). ca_ed25519.sh checks that keyline then refuses to
 * sign with that CA key.
 *
 *   kl_p11_ed_import MODULE TOKEN LABEL      (user PIN in KL_P11_PIN)
 *
 * Exit 0 when the key was replaced, 1 otherwise (with a message). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

static int die(const char *what, CK_RV rv)
{
    fprintf(stderr, "kl_p11_ed_import: %s: 0x%lx\n", what, (unsigned long)rv);
    return 1;
}

/* The session on the token labelled `token`, logged in as user. */
static CK_RV open_token(CK_FUNCTION_LIST_PTR fl, const char *token, const char *pin,
                        CK_SESSION_HANDLE *s)
{
    CK_SLOT_ID slots[32];
    CK_ULONG n = 32;
    CK_RV rv = fl->C_GetSlotList(CK_TRUE, slots, &n);
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        CK_TOKEN_INFO ti;
        size_t l = strlen(token);
        if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK || l > sizeof ti.label ||
            memcmp(ti.label, token, l) != 0 || (l < sizeof ti.label && ti.label[l] != ' ')) {
            continue;
        }
        rv = fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
        return rv != CKR_OK
                   ? rv
                   : fl->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)strlen(pin));
    }
    return rv != CKR_OK ? rv : CKR_TOKEN_NOT_PRESENT;
}

int main(int argc, char **argv)
{
    const char *pin = getenv("KL_P11_PIN");
    CK_C_GetFunctionList gfl;
    CK_FUNCTION_LIST_PTR fl = NULL;
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = CKK_EC_EDWARDS;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_BYTE oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70}, seed[32];
    CK_OBJECT_HANDLE o;
    CK_ULONG n = 0;
    CK_RV rv;
    if (argc != 4 || pin == NULL) {
        fprintf(stderr, "usage: KL_P11_PIN=... kl_p11_ed_import MODULE TOKEN LABEL\n");
        return 2;
    }
    void *dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    *(void **)(&gfl) = dl ? dlsym(dl, "C_GetFunctionList") : NULL;
    if (gfl == NULL || gfl(&fl) != CKR_OK) {
        return die("cannot load the module", 0);
    }
    if ((rv = fl->C_Initialize(NULL)) != CKR_OK) {
        return die("C_Initialize", rv);
    }
    if ((rv = open_token(fl, argv[2], pin, &s)) != CKR_OK) {
        return die("token", rv);
    }
    CK_ATTRIBUTE find[2] = {{CKA_CLASS, &cls, sizeof cls},
                            {CKA_LABEL, argv[3], (CK_ULONG)strlen(argv[3])}};
    if ((rv = fl->C_FindObjectsInit(s, find, 2)) != CKR_OK ||
        (rv = fl->C_FindObjects(s, &o, 1, &n)) != CKR_OK || n != 1) {
        return die("no such private key", rv);
    }
    fl->C_FindObjectsFinal(s);
    if ((rv = fl->C_DestroyObject(s, o)) != CKR_OK) {
        return die("C_DestroyObject", rv);
    }
    if (RAND_bytes(seed, sizeof seed) != 1) {
        return die("RAND_bytes", 0);
    }
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},       {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &yes, sizeof yes},       {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SIGN, &yes, sizeof yes},        {CKA_SENSITIVE, &no, sizeof no},
        {CKA_EXTRACTABLE, &yes, sizeof yes}, {CKA_LABEL, argv[3], (CK_ULONG)strlen(argv[3])},
        {CKA_EC_PARAMS, oid, sizeof oid},    {CKA_VALUE, seed, sizeof seed},
    };
    if ((rv = fl->C_CreateObject(s, t, sizeof t / sizeof t[0], &o)) != CKR_OK) {
        return die("C_CreateObject", rv);
    }
    fl->C_Logout(s);
    fl->C_CloseSession(s);
    fl->C_Finalize(NULL);
    return 0;
}
