/* Fuzz the CA client's address lists (ca/client/cac.c: [est] cad, [station] cad): never crash,
 * never accept an empty list or more than CAC_ADDR_MAX addresses. */
#include <stdlib.h>
#include <string.h>

#include "cac.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) {
        return 0;
    }
    char *s = malloc(size + 1);
    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = 0; /* a config value is a C string: an inner NUL ends it */
    unsigned n = 0;
    int tls = 0;
    if (cac_addrs_check(s, &n, &tls) == KL_OK && (n < 1 || n > CAC_ADDR_MAX)) {
        abort();
    }
    free(s);
    return 0;
}
