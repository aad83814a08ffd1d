/* keyline: certificate templates (profiles) and the policy that applies them.
 *
 * A template is an INI file templates/<name>.tmpl (parsed with libinih); see
 * docs/templates.md for every key. A template fixes what goes into a
 * certificate: allowed key types, subject rules, extensions, validity, path length, CRL DP and
 * AIA. Extensions in a CSR are never copied: only the subjectAltName kinds the template allows
 * are taken from a CSR, after validation; basicConstraints, keyUsage and extendedKeyUsage that
 * ask for no more than the template, and the extensions the CA writes itself (SKI, AKI, CRL DP,
 * AIA: a renewal CSR may copy them from the old certificate), are dropped; any other CSR
 * extension is refused unless listed in `[csr] ignore-extensions`. */
#ifndef KL_TPL_H
#define KL_TPL_H

#include <openssl/x509.h>
#include <stdint.h>
#include <time.h>

#include "kl_err.h"

#define TPL_MAX_ATTRS 16

typedef enum { TPL_SUBJECT_FROM_CSR = 0, TPL_SUBJECT_FROM_REQUEST } tpl_subject_src;

/* subjectAltName kinds a template may take from the CSR or build itself */
#define TPL_SAN_DNS 0x1u
#define TPL_SAN_IP 0x2u
#define TPL_SAN_HMN 0x4u /* RFC 4108 HardwareModuleName otherName, built from the hw serial */
#define TPL_SAN_URI 0x8u
#define TPL_SAN_EMAIL 0x10u

typedef struct tpl {
    char name[64];
    char path[512];
    int is_ca;            /* basicConstraints cA */
    int path_len;         /* -1: no pathLenConstraint */
    unsigned key_types;   /* bit (1u << hsm_key_type) per allowed key type */
    int validity_days;    /* used when !validity_forever */
    int validity_forever; /* notAfter = 99991231235959Z (IEEE 802.1AR) */
    int backdate_secs;    /* notBefore = now - backdate */
    int crl_days;         /* kind = ca: nextUpdate of its CRLs; 0: [ca] crl-days */
    tpl_subject_src subject_src;
    int subject_required[TPL_MAX_ATTRS]; /* NIDs, 0-terminated */
    int subject_allowed[TPL_MAX_ATTRS];  /* NIDs, 0-terminated; anything else refused */
    int serial_number_from_device;       /* subject serialNumber must equal the device id */
    uint32_t key_usage;                  /* X509v3_KU_* bits */
    int key_usage_critical;
    int eku[8];             /* NIDs, 0-terminated */
    unsigned san_from_csr;  /* TPL_SAN_* taken from the CSR after validation */
    unsigned san_required;  /* TPL_SAN_* that must be present */
    int san_hmn;            /* build HardwareModuleName from the device id */
    char hmn_type_oid[64];  /* hwType OID for HardwareModuleName */
    int crl_dp;             /* add CRLDistributionPoints (URL from config) */
    int aia_ocsp;           /* add AIA OCSP (URL from config) */
    int aia_ca_issuers;     /* add AIA caIssuers (URL from config) */
    int ocsp_nocheck;       /* id-pkix-ocsp-nocheck (OCSP signer) */
    int csr_ext_ignored[8]; /* NIDs of CSR extensions tolerated (not copied) */
    int max_csr_bytes;      /* CSR DER larger than this is refused */
    /* added after the first draft of this header: */
    uint32_t key_usage_rsa; /* X509v3_KU_* bits added when the key is RSA */
    int san_dns_wildcard;   /* allow "*.example.com" dNSNames from the CSR */
    int matter;             /* matter_kind (ca/matter.h): Matter PAA/PAI/DAC profile, 0: none */
} tpl;

/* Load templates/<name>.tmpl from `dir`. `name` must match [a-z0-9-]+ (no paths).
 * Errors: KL_ENOTFOUND "no template NAME in DIR"; KL_EINPUT "FILE:LINE: message". */
kl_rc tpl_load(const char *dir, const char *name, tpl **out) KL_WUR;
void tpl_free(tpl *t);

/* Inputs to the policy step. Everything is borrowed. */
typedef struct {
    const tpl *t;
    X509_REQ *csr;            /* signature already verified by the caller */
    const char *device_id;    /* hardware serial (device-idevid), or NULL */
    const X509_NAME *subject; /* TPL_SUBJECT_FROM_REQUEST (ca create --subject), else NULL */
    X509 *issuer_cert;        /* NULL: self-signed (root) */
    const char *crl_url;      /* NULL/"" : none configured */
    const char *ocsp_url;
    const char *ca_issuers_url;
    time_t now;               /* 0: time(NULL) */
    const char *issuer_label; /* replaces "{issuer}" in the URLs above; NULL when not needed */
    size_t csr_der_len;       /* the CSR's DER size when the caller has it; 0: re-encode it */
} tpl_policy_in;

/* Check the CSR against the template (key type/size, subject rules, CSR extensions, SAN
 * validation, device id agreement) and build the unsigned certificate: version 3, the given
 * serial, subject, issuer, validity (clamped inside the issuer's, error if it cannot fit),
 * public key from the CSR, SKI, AKI, basicConstraints, keyUsage, EKU, SAN, CRL DP, AIA.
 * KL_EPOLICY with a precise message when the CSR asks for what the template forbids. */
kl_rc tpl_policy_build(const tpl_policy_in *in, const ASN1_INTEGER *serial, X509 **tbs_out) KL_WUR;

/* Lint an (unsigned or signed) certificate before signing, RFC 5280 basics and the
 * template's own rules: serial positive, <= 20 octets, >= 64 bits of entropy space;
 * SKI and AKI present (AKI = issuer SKI; AKI may be absent only on a self-signed root);
 * validity inside the issuer's; keyUsage consistent with basicConstraints (keyCertSign iff
 * cA); 802.1AR fields (serialNumber + HMN + 99991231235959Z) for templates that ask for them.
 * KL_EINTERNAL with "lint: ..." on failure (a failing lint is a keyline bug or a bad template). */
kl_rc tpl_lint(const tpl *t, X509 *cert, X509 *issuer_cert) KL_WUR;

/* Helpers shared by the tpl*.c files, exposed for tests and other front ends. */

/* OID of HardwareModuleName (RFC 4108 5: id-on-hardwareModuleName) */
#define TPL_OID_HMN "1.3.6.1.5.5.7.8.4"
/* IEEE 802.1AR 8.5 "no well-defined expiration date" */
#define TPL_NOTAFTER_FOREVER "99991231235959Z"

/* Key type of a public key as an hsm_key_type value, or -1 when it is none of ours. `name`
 * (may be NULL) gets a printable description either way ("ec-p256", "rsa-2048",
 * "ec-secp521r1"). Does not need hsm.c. */
int tpl_key_type_of(const EVP_PKEY *k, char *name, size_t namelen);

/* Device identity of a certificate: the hwSerialNum of its HardwareModuleName otherName if it
 * has one, else its subject serialNumber. `hw_type` (may be NULL) gets the dotted hwType OID
 * ("" when the id came from serialNumber). KL_ENOTFOUND when neither is present; KL_EINPUT
 * when the HMN is malformed or the serial is not printable or does not fit. */
kl_rc tpl_cert_device_id(X509 *cert, char *out, size_t outlen, char *hw_type, size_t hw_len) KL_WUR;

#endif
