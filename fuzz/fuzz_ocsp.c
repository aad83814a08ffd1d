/* Fuzz the OCSP request shape check of keyline-cad's pre-produced answers (the lookup key of
 * cad_ocsp.c): any DER OCSP request parses to either no key or a key of 41..72 octets whose
 * first 40 are the CertID's hashes; never a crash or a read past the request. And the
 * extension check every answer passes first (ca_ocsp_request_check: unknown critical
 * extensions, nonce sizes): a request of the pre-produced shape has no extension, so it
 * always passes. */
#include <openssl/ocsp.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "cad_ocsp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const unsigned char *p = data;
    OCSP_REQUEST *req = d2i_OCSP_REQUEST(NULL, &p, (long)size);
    uint8_t key[CAD_OCSP_REQUEST_KEY_MAX];
    size_t n = cad_ocsp_request_key(req, key);
    if (n != 0 && (n < 41 || n > CAD_OCSP_REQUEST_KEY_MAX)) {
        abort();
    }
    kl_rc sound = req ? ca_ocsp_request_check(req) : KL_OK;
    if (n && sound != KL_OK) {
        abort();
    }
    if (n) {
        /* the same request, encoded again, gives the same key */
        unsigned char *der = NULL;
        int dl = i2d_OCSP_REQUEST(req, &der);
        const unsigned char *q = der;
        OCSP_REQUEST *again = dl > 0 ? d2i_OCSP_REQUEST(NULL, &q, dl) : NULL;
        uint8_t k2[CAD_OCSP_REQUEST_KEY_MAX];
        /* (OpenSSL parses some requests whose re-encoding it does not parse back: a
         * hashAlgorithm with parameters of an invalid tag; nothing to compare then) */
        if (again && (cad_ocsp_request_key(again, k2) != n || memcmp(key, k2, n) != 0)) {
            abort();
        }
        OCSP_REQUEST_free(again);
        OPENSSL_free(der);
    }
    OCSP_REQUEST_free(req);
    return 0;
}
