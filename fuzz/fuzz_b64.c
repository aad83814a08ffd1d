/* Fuzz the tolerant base64 decoder (EST bodies): never crash, never exceed the cap, and
 * re-encoding what decoded must decode to the same bytes; the encoder, unwrapped, writes
 * exactly what OpenSSL's EVP_EncodeBlock does. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "kl_b64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_buf out, enc, again;
    kl_buf_init(&out, 4096, 0);
    kl_buf_init(&enc, 8192, 0);
    kl_buf_init(&again, 4096, 0);
    if (kl_b64_decode((const char *)data, size, &out) == KL_OK) {
        if (out.len > 4096) {
            abort();
        }
        if (kl_b64_encode(out.data, out.len, 64, 1, &enc) != KL_OK ||
            kl_b64_decode((const char *)enc.data, enc.len, &again) != KL_OK ||
            again.len != out.len || (out.len && memcmp(again.data, out.data, out.len) != 0)) {
            abort();
        }
        kl_buf flat;
        kl_buf_init(&flat, 8192, 0);
        unsigned char want[4096 / 3 * 4 + 8];
        int wl = EVP_EncodeBlock(want, out.data, (int)out.len);
        if (kl_b64_encode(out.data, out.len, 0, 0, &flat) != KL_OK || flat.len != (size_t)wl ||
            (wl && memcmp(flat.data, want, (size_t)wl) != 0)) {
            abort();
        }
        kl_buf_free(&flat);
    } else if (out.len != 0) {
        abort(); /* a failed decode leaves the buffer unchanged */
    }
    kl_buf_free(&out);
    kl_buf_free(&enc);
    kl_buf_free(&again);
    return 0;
}
