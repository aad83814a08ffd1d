/* Fuzz the signer processes' request parser (hsm/hsm_signer.c), the bytes a compromised
 * network process controls: never crash, and what parses re-encodes to exactly the input
 * (one encoding per request, nothing ignored). */
#include <stdlib.h>
#include <string.h>

#include "hsm_signer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsm_signer_req r;
    uint8_t again[HSM_SIGNER_FRAME_MAX];
    if (hsm_signer_req_parse(data, size, &r) == KL_OK) {
        size_t n = hsm_signer_req_encode(&r, again, sizeof again);
        if (n != size || memcmp(again, data, size) != 0) {
            abort();
        }
    }
    return 0;
}
