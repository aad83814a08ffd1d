/* Fuzz the CA protocol parser (ca/client/cap.c), the bytes a compromised front end sends to
 * keyline-cad (and keyline-cad's answers to a client): never crash, and what parses re-encodes
 * to exactly the input (one encoding per message, nothing ignored). */
#include <stdlib.h>
#include <string.h>

#include "cap.h"

static void roundtrip(const uint8_t *data, size_t size, int is_response)
{
    cap_msg m;
    if (cap_msg_parse(data, size, is_response, &m) != KL_OK) {
        return;
    }
    kl_buf b;
    kl_buf_init(&b, size + 64, 0);
    if (cap_msg_begin(&b, (cap_op)m.op, m.status) != KL_OK) {
        abort();
    }
    for (size_t i = 0; i < m.n; i++) {
        if (cap_put_bytes(&b, (cap_tag)m.f[i].tag, m.f[i].val, m.f[i].len) != KL_OK) {
            abort();
        }
    }
    if (cap_msg_end(&b) != KL_OK || b.len != size + 4 || memcmp(b.data + 4, data, size) != 0) {
        abort();
    }
    kl_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    roundtrip(data, size, 0);
    roundtrip(data, size, 1);
    return 0;
}
