/* Fuzz the ceremony parsers (ca/ceremony.c, ca/ceremony_transcript.c): the canonical request
 * and the transcript `keyline-ca ceremony verify` reads from a file it did not write. Whatever
 * parses must re-encode to exactly the input (the parsers promise canonical form), and full
 * verification must never crash. The corpus holds a request and transcripts made by
 * tests/integration/ceremony_quorum.sh. */
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "ceremony.h"

static void fz_request(const uint8_t *data, size_t size)
{
    ceremony_req r;
    kl_buf b;
    if (ceremony_req_parse(data, size, &r) != KL_OK) {
        return;
    }
    kl_buf_init(&b, CEREMONY_REQ_MAX, 0);
    if (ceremony_req_encode(&r, &b) != KL_OK || b.len != size || memcmp(b.data, data, size)) {
        abort();
    }
    kl_buf_free(&b);
    ceremony_req_free(&r);
}

static void fz_transcript(const uint8_t *data, size_t size)
{
    ceremony_transcript t;
    kl_buf b;
    if (ceremony_transcript_parse(data, size, &t) == KL_OK) {
        kl_buf_init(&b, CEREMONY_TRANSCRIPT_MAX, 0);
        if (ceremony_transcript_encode(&t, &b) != KL_OK || b.len != size ||
            memcmp(b.data, data, size)) {
            abort();
        }
        kl_buf_free(&b);
        ceremony_transcript_free(&t);
    }
    if (ceremony_transcript_verify(data, size, NULL, NULL) == KL_OK) {
        /* only a transcript whose signatures all check gets here */
    }
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_request(data, size);
    fz_transcript(data, size);
    return 0;
}
