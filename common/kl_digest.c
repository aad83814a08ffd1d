#include "kl_digest.h"

#include <openssl/evp.h>
#include <pthread.h>

static EVP_MD *kl_sha256_md; /* fetched once, kept for the life of the process */
static pthread_once_t kl_sha256_once = PTHREAD_ONCE_INIT;

static void kl_sha256_fetch(void)
{
    kl_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

kl_rc kl_sha256(const void *p, size_t n, uint8_t out[KL_SHA256_LEN])
{
    unsigned len = 0;
    pthread_once(&kl_sha256_once, kl_sha256_fetch);
    if (!kl_sha256_md || EVP_Digest(p, n, out, &len, kl_sha256_md, NULL) != 1 ||
        len != KL_SHA256_LEN) {
        return kl_fail(KL_EINTERNAL, "SHA-256 is not available from OpenSSL");
    }
    return KL_OK;
}
