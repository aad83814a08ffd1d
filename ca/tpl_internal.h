/* keyline: helpers shared by the template parser, the policy step and the lint (tpl*.c); not
 * part of the keyline_tpl interface (that is tpl.h). */
#ifndef KL_TPL_INTERNAL_H
#define KL_TPL_INTERNAL_H

#include <openssl/x509v3.h>
#include <stdint.h>

/* 1 when `nid` is in the 0-terminated `list`. */
int tpl_nid_in(const int *list, int nid);

/* keyUsage bits in the X509v3_KU_* layout: first octet, then decipherOnly in the second. */
uint32_t tpl_ku_bits(const ASN1_BIT_STRING *ku);

/* 1 when `g` is an otherName HardwareModuleName (RFC 4108 5, TPL_OID_HMN). */
int tpl_is_hmn(const GENERAL_NAME *g);

/* The TPL_SAN_* kind of a SAN entry, 0 for a kind templates cannot name. */
unsigned tpl_san_kind(const GENERAL_NAME *g);

/* SKI method 1 (RFC 5280 4.2.1.2): SHA-1 of the subjectPublicKey BIT STRING value. 1 on
 * success, 0 on failure (the OpenSSL error queue says why; no kl_fail message is set). */
int tpl_ski_sha1(X509 *x, unsigned char md[20]);

#endif
