/* keyline: CSR and certificate loading with an EC fast path (ca_csr.c). Its own library
 * (keyline_csr): keyline-estd parses requests and certificates the same way without linking
 * the CA (tests/integration/frontend_links.sh). */
#ifndef KEYLINE_CA_CSR_H
#define KEYLINE_CA_CSR_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* A PKCS#10 request whose signature (proof of possession) has been checked: only ca_csr_load
 * makes one. */
typedef struct ca_csr ca_csr;
/* Parse DER PKCS#10 bytes and check the request's signature with its own key. KL_EINPUT with
 * the reason when malformed, not exactly one DER structure, or the signature does not verify.
 * EC P-256/P-384 requests take a fast path (ca/ca_csr.c); the result is the same. */
kl_rc ca_csr_load(const uint8_t *der, size_t len, ca_csr **out) KL_WUR;
X509_REQ *ca_csr_req(const ca_csr *c); /* borrowed; for reading the request */
int ca_csr_fast(const ca_csr *c);      /* 1 if the EC fast path loaded it (tests, benchmarks) */
void ca_csr_free(ca_csr *c);
/* The request, owned by the caller from then on; c is freed. */
X509_REQ *ca_csr_take(ca_csr *c);

/* Parse DER PKCS#10 bytes (all of `der`) WITHOUT checking the signature: for a front end that
 * reads the request and hands its bytes to keyline-cad, which checks the proof of possession
 * (ca_csr_load) before anything is issued or held. EC requests take the fast path of
 * ca_csr_load, without decoding the key: X509_REQ_get0_pubkey of the result may be NULL (as
 * for a request d2i_X509_REQ reads whose key does not decode). KL_EINPUT when malformed. */
kl_rc ca_req_parse(const uint8_t *der, size_t len, X509_REQ **out) KL_WUR;

/* Parse one DER certificate (all of `der`, nothing after it). EC P-256/P-384 v3 certificates
 * take the fast path of ca_csr_load (same result, exactly re-encoding); *fast (may be NULL)
 * says which path. Like d2i_X509, no signature is checked. KL_EINPUT when malformed. */
kl_rc ca_x509_load(const uint8_t *der, size_t len, X509 **out, int *fast) KL_WUR;
/* Check the signature of a DER certificate with the issuer's public key, on exactly these
 * bytes. KL_EHSM when it does not verify (the HSM signed something else, or garbage). EC keys
 * take the same fast path as ca_csr_load. */
kl_rc ca_signed_der_verify(const uint8_t *der, size_t len, EVP_PKEY *pub) KL_WUR;

/* A serial number as the store keeps it: upper-case hex without leading zeros (BN_bn2hex; a
 * negative one starts with '-'). NULL when out of memory. OPENSSL_free. */
char *ca_serial_hex(const ASN1_INTEGER *serial);

#endif
