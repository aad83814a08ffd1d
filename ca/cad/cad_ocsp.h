/* keyline-cad: pre-produced OCSP answers (cad_ocsp.c; docs/performance.md "OCSP").
 * cad_ocsp_new reads [cad] ocsp-preproduce (most answers kept, 0: off, *out NULL) and
 * ocsp-validity (seconds from thisUpdate to nextUpdate) and starts the thread that signs and
 * refreshes them; cad_ocsp_free stops it. cad_ocsp_lookup appends the pre-produced answer to a
 * one-certificate, extension-free SHA-1 request (the CAP_T_OCSP_RESP field) and returns 1, or
 * returns 0 (o NULL, another shape, not pre-produced): the caller answers live. */
#ifndef KL_CAD_OCSP_H
#define KL_CAD_OCSP_H

#include <openssl/ocsp.h>

#include "cad.h"

typedef struct cad_ocsp cad_ocsp;

kl_rc cad_ocsp_new(cad *d, cad_ocsp **out) KL_WUR;
void cad_ocsp_free(cad_ocsp *o);
int cad_ocsp_lookup(cad_ocsp *o, OCSP_REQUEST *req, kl_buf *out);
/* The lookup key of a request of the RFC 5019 shape (one certificate, SHA-1 CertID with NULL
 * parameters, as the pre-produced answers carry it, no extension): issuer name hash, issuer key
 * hash, serial octets; its length (41..72), or 0 for any other request (req NULL too). No
 * allocation; fuzzed by fuzz/fuzz_ocsp.c. */
#define CAD_OCSP_REQUEST_KEY_MAX 72 /* name hash 20 + key hash 20 + serial (<= 32 octets) */
size_t cad_ocsp_request_key(OCSP_REQUEST *req, uint8_t key[CAD_OCSP_REQUEST_KEY_MAX]);
/* Wake the thread now (after a revocation this process made). */
void cad_ocsp_kick(cad_ocsp *o);

#endif
