/* keyline: certificate lint, run on every to-be-signed certificate before the HSM signs it.
 *
 * A failing lint means tpl_policy_build (or a template) produced something it should not
 * have: KL_EINTERNAL "lint: ...". Extensions are read with X509_get_ext_d2i, never through
 * OpenSSL's per-X509 extension cache, which is computed once and can be stale on a
 * certificate that is still being assembled. */
#include <openssl/bn.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "hsm.h"
#include "matter.h"
#include "tpl.h"
#include "tpl_internal.h"

#define LINT(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = kl_fail(KL_EINTERNAL, "lint: " __VA_ARGS__);                                      \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static int lint_is_forever(const ASN1_TIME *t)
{
    return t && ASN1_STRING_type(t) == V_ASN1_GENERALIZEDTIME &&
           ASN1_STRING_length(t) == (int)strlen(TPL_NOTAFTER_FOREVER) &&
           memcmp(ASN1_STRING_get0_data(t), TPL_NOTAFTER_FOREVER, strlen(TPL_NOTAFTER_FOREVER)) ==
               0;
}

/* RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
static int lint_time_encoding_ok(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return 0;
    }
    int year = tm.tm_year + 1900;
    if (ASN1_STRING_type(t) == V_ASN1_UTCTIME) {
        return year < 2050;
    }
    return ASN1_STRING_type(t) == V_ASN1_GENERALIZEDTIME && year >= 2050;
}

static int lint_nid_known(int nid)
{
    switch (nid) {
    case NID_basic_constraints:
    case NID_key_usage:
    case NID_ext_key_usage:
    case NID_subject_key_identifier:
    case NID_authority_key_identifier:
    case NID_subject_alt_name:
    case NID_crl_distribution_points:
    case NID_info_access:
    case NID_id_pkix_OCSP_noCheck: return 1;
    default: return 0;
    }
}

/* What the checks share: the certificate, its issuer, and what earlier checks found. */
typedef struct {
    const tpl *t;
    X509 *cert;
    X509 *issuer;     /* cert itself when self-signed */
    X509 *issuer_arg; /* as given: NULL when self-signed */
    int self_signed;
    int kt;    /* key type (lint_key) */
    int ca;    /* basicConstraints cA (lint_basic_constraints) */
    int n_hmn; /* HardwareModuleName entries in the SAN (lint_san) */
} lint_ctx;

static kl_rc lint_serial(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    BIGNUM *bn = NULL;
    LINT(X509_get_version(x->cert) == X509_VERSION_3, "not a version 3 certificate");
    /* RFC 5280 4.1.2.2: positive, at most 20 octets; CA/B BR 7.1: at least 64 bits from a
     * CSPRNG, which we read as at least 8 octets of magnitude. */
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x->cert);
    LINT(serial && ASN1_STRING_type(serial) == V_ASN1_INTEGER, "serial number is negative");
    bn = ASN1_INTEGER_to_BN(serial, NULL);
    LINT(bn && !BN_is_zero(bn) && !BN_is_negative(bn), "serial number is not positive");
    int sbytes = BN_num_bytes(bn);
    int der_octets = sbytes + (BN_num_bits(bn) % 8 == 0 ? 1 : 0);
    LINT(der_octets <= 20, "serial number is %d octets (RFC 5280: at most 20)", der_octets);
    LINT(sbytes >= 8, "serial number has %d octets (at least 8, 64 random bits)", sbytes);
    LINT(X509_NAME_cmp(X509_get_issuer_name(x->cert), X509_get_subject_name(x->issuer)) == 0,
         "issuer name differs from the issuer's subject");
out:
    BN_free(bn);
    return rc;
}

/* every extension known to us, none twice (RFC 5280 4.2) */
static kl_rc lint_extensions(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    for (int i = 0; i < X509_get_ext_count(x->cert); i++) {
        const ASN1_OBJECT *o = X509_EXTENSION_get_object(X509_get_ext(x->cert, i));
        char name[64];
        OBJ_obj2txt(name, sizeof name, o, 0);
        LINT(lint_nid_known(OBJ_obj2nid(o)), "unexpected extension %s", name);
        for (int j = 0; j < i; j++) {
            LINT(OBJ_cmp(o, X509_EXTENSION_get_object(X509_get_ext(x->cert, j))) != 0,
                 "extension %s appears twice", name);
        }
    }
out:
    return rc;
}

static kl_rc lint_key(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pk = X509_get0_pubkey(x->cert);
    char kname[64];
    x->kt = tpl_key_type_of(pk, kname, sizeof kname);
    LINT(x->kt >= 0 && (x->t->key_types & (1u << x->kt)), "key type %s not allowed by template %s",
         kname, x->t->name);
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
        /* RFC 5480 2.1.1: namedCurve only; 2.2: the uncompressed form is the one every
         * implementation must support (tpl_set_pubkey writes it whatever the CSR had) */
        const unsigned char *kbits = NULL;
        int klen = 0, kptype = V_ASN1_UNDEF;
        X509_ALGOR *kalg = NULL;
        LINT(X509_PUBKEY_get0_param(NULL, &kbits, &klen, &kalg, X509_get_X509_PUBKEY(x->cert)) == 1,
             "cannot read the public key");
        X509_ALGOR_get0(NULL, &kptype, NULL, kalg);
        LINT(kptype == V_ASN1_OBJECT, "EC key without a named curve (RFC 5480 2.1.1)");
        LINT(klen > 0 && kbits[0] == 0x04, "EC key point not in uncompressed form");
    }
out:
    return rc;
}

static kl_rc lint_validity(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    const ASN1_TIME *nb = X509_get0_notBefore(x->cert), *na = X509_get0_notAfter(x->cert);
    LINT(lint_time_encoding_ok(nb) && lint_time_encoding_ok(na),
         "validity times not encoded as RFC 5280 4.1.2.5 asks");
    LINT(ASN1_TIME_compare(nb, na) < 0, "notBefore is not before notAfter");
    const int forever = lint_is_forever(na);
    LINT(!t->validity_forever || forever, "template %s wants notAfter %s", t->name,
         TPL_NOTAFTER_FOREVER);
    if (!t->validity_forever) {
        int days = 0, secs = 0;
        LINT(ASN1_TIME_diff(&days, &secs, nb, na) == 1, "cannot compute the validity period");
        long long period = (long long)days * 86400 + secs;
        LINT(period <= (long long)t->validity_days * 86400 + t->backdate_secs,
             "validity is longer than template %s's %d days", t->name, t->validity_days);
    }
    if (!x->self_signed) {
        LINT(ASN1_TIME_compare(nb, X509_get0_notBefore(x->issuer)) >= 0,
             "notBefore is before the issuer's notBefore");
        /* IEEE 802.1AR 8.5 exception, see tpl_policy.c: a 'forever' template's notAfter may
         * pass the issuer's. */
        LINT((t->validity_forever && forever) ||
                 ASN1_TIME_compare(na, X509_get0_notAfter(x->issuer)) <= 0,
             "notAfter is after the issuer's notAfter");
    }
out:
    return rc;
}

/* basicConstraints (RFC 5280 4.2.1.9) */
static kl_rc lint_basic_constraints(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x->cert, NID_basic_constraints, &crit, NULL);
    LINT(bc, "no basicConstraints");
    x->ca = bc->ca != 0;
    LINT(!bc->ca == !t->is_ca, "basicConstraints cA is %s, template %s is %s",
         bc->ca ? "TRUE" : "FALSE", t->name, t->is_ca ? "a CA" : "an end entity");
    LINT(!bc->ca || crit == 1, "basicConstraints of a CA is not critical");
    LINT(!bc->pathlen || bc->ca, "pathLenConstraint without cA");
    if (bc->ca) {
        LINT((t->path_len < 0 && !bc->pathlen) ||
                 (t->path_len >= 0 && bc->pathlen && ASN1_INTEGER_get(bc->pathlen) == t->path_len),
             "pathLenConstraint differs from template %s", t->name);
    }
out:
    BASIC_CONSTRAINTS_free(bc);
    return rc;
}

/* keyUsage (RFC 5280 4.2.1.3): keyCertSign iff cA */
static kl_rc lint_key_usage(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    int crit = 0;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x->cert, NID_key_usage, &crit, NULL);
    LINT(ku, "no keyUsage");
    uint32_t bits = tpl_ku_bits(ku);
    LINT(!(bits & X509v3_KU_KEY_CERT_SIGN) || x->ca, "keyCertSign on an end-entity certificate");
    LINT((bits & X509v3_KU_KEY_CERT_SIGN) || !x->ca, "a CA certificate without keyCertSign");
    uint32_t want = t->key_usage | (HSM_KEY_IS_RSA(x->kt) ? t->key_usage_rsa : 0);
    LINT(bits == want, "keyUsage differs from template %s", t->name);
    LINT(!crit == !t->key_usage_critical, "keyUsage criticality differs from template %s", t->name);
out:
    ASN1_BIT_STRING_free(ku);
    return rc;
}

/* extendedKeyUsage: exactly the template's */
static kl_rc lint_eku(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x->cert, NID_ext_key_usage, NULL, NULL);
    int n_eku = 0;
    for (const int *e = t->eku; *e; e++) {
        n_eku++;
    }
    LINT(eku || n_eku == 0, "no extendedKeyUsage (template %s has one)", t->name);
    if (eku) {
        LINT(sk_ASN1_OBJECT_num(eku) == n_eku, "extendedKeyUsage differs from template %s",
             t->name);
        for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
            int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));
            int found = 0;
            for (const int *e = t->eku; *e; e++) {
                found |= *e == nid;
            }
            LINT(found, "extendedKeyUsage differs from template %s", t->name);
        }
    }
out:
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    return rc;
}

/* id is the SHA-1 of c's public key (RFC 5280 4.2.1.2 method 1) */
static int lint_id_is_key_sha1(X509 *c, const ASN1_OCTET_STRING *id)
{
    unsigned char md[20];
    return tpl_ski_sha1(c, md) && ASN1_STRING_length(id) == 20 &&
           memcmp(ASN1_STRING_get0_data(id), md, 20) == 0;
}

/* SKI (RFC 5280 4.2.1.2): present, non-critical, method 1 */
static kl_rc lint_ski(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    int crit = 0;
    ASN1_OCTET_STRING *ski = X509_get_ext_d2i(x->cert, NID_subject_key_identifier, &crit, NULL);
    LINT(ski && ASN1_STRING_length(ski) > 0, "no subjectKeyIdentifier");
    LINT(crit == 0, "subjectKeyIdentifier is critical");
    LINT(lint_id_is_key_sha1(x->cert, ski),
         "subjectKeyIdentifier is not the SHA-1 of the public key");
out:
    ASN1_OCTET_STRING_free(ski);
    return rc;
}

/* The AKI's keyIdentifier names the issuer's key: its SKI, else the SHA-1 of its key. */
static kl_rc lint_aki_keyid(lint_ctx *x, const ASN1_OCTET_STRING *keyid)
{
    kl_rc rc = KL_OK;
    ASN1_OCTET_STRING *iski = NULL;
    if (x->self_signed) {
        iski = X509_get_ext_d2i(x->cert, NID_subject_key_identifier, NULL, NULL);
        LINT(ASN1_OCTET_STRING_cmp(keyid, iski) == 0,
             "authorityKeyIdentifier of a self-signed certificate differs from its SKI");
        goto out;
    }
    iski = X509_get_ext_d2i(x->issuer, NID_subject_key_identifier, NULL, NULL);
    if (iski) {
        LINT(ASN1_OCTET_STRING_cmp(keyid, iski) == 0,
             "authorityKeyIdentifier differs from the issuer's subjectKeyIdentifier");
    } else {
        LINT(lint_id_is_key_sha1(x->issuer, keyid),
             "authorityKeyIdentifier differs from the issuer's key hash");
    }
out:
    ASN1_OCTET_STRING_free(iski);
    return rc;
}

/* AKI (RFC 5280 4.2.1.1): keyIdentifier = issuer's SKI; may be absent only when self-signed;
 * MUST be non-critical */
static kl_rc lint_aki(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    int crit = 0;
    AUTHORITY_KEYID *akid = X509_get_ext_d2i(x->cert, NID_authority_key_identifier, &crit, NULL);
    LINT(akid || x->self_signed, "no authorityKeyIdentifier");
    if (akid) {
        LINT(crit == 0, "authorityKeyIdentifier is critical");
        LINT(akid->keyid, "authorityKeyIdentifier has no keyIdentifier");
        TRY(lint_aki_keyid(x, akid->keyid));
    }
out:
    AUTHORITY_KEYID_free(akid);
    return rc;
}

/* the issuer is a CA */
static kl_rc lint_issuer_ca(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    BASIC_CONSTRAINTS *ibc = NULL;
    if (!x->self_signed) {
        ibc = X509_get_ext_d2i(x->issuer, NID_basic_constraints, NULL, NULL);
        LINT(ibc && ibc->ca, "the issuer is not a CA");
        LINT(!x->ca || !ibc->pathlen || ASN1_INTEGER_get(ibc->pathlen) > 0,
             "the issuer's pathLenConstraint 0 forbids a CA below it");
    }
out:
    BASIC_CONSTRAINTS_free(ibc);
    return rc;
}

/* subjectAltName (RFC 5280 4.2.1.6): decodable, critical under an empty subject, and only
 * the kinds the template allows */
static kl_rc lint_san(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    int crit = 0;
    const X509_NAME *subj = X509_get_subject_name(x->cert);
    GENERAL_NAMES *san = X509_get_ext_d2i(x->cert, NID_subject_alt_name, &crit, NULL);
    LINT(san || crit == -1, "subjectAltName cannot be decoded");
    if (X509_NAME_entry_count(subj) == 0) {
        LINT(san && sk_GENERAL_NAME_num(san) > 0, "empty subject and no subjectAltName");
        LINT(crit == 1, "empty subject and subjectAltName not critical");
    }
    x->n_hmn = 0;
    for (int i = 0; san && i < sk_GENERAL_NAME_num(san); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
        unsigned k = tpl_san_kind(g);
        unsigned ok = t->san_from_csr | (t->san_hmn ? TPL_SAN_HMN : 0);
        LINT(k & ok, "subjectAltName entry of a kind template %s does not allow", t->name);
        x->n_hmn += k == TPL_SAN_HMN;
    }
out:
    GENERAL_NAMES_free(san);
    return rc;
}

/* IEEE 802.1AR 8.6/8.7: serialNumber in the subject, HardwareModuleName in the SAN, both
 * naming the same hardware serial; then the subject attributes the template requires */
static kl_rc lint_subject(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    const X509_NAME *subj = X509_get_subject_name(x->cert);
    if (t->san_hmn) {
        char dev[128], type[64];
        int idx = X509_NAME_get_index_by_NID(subj, NID_serialNumber, -1);
        LINT(idx >= 0, "802.1AR: no subject serialNumber");
        LINT(x->n_hmn == 1, "802.1AR: %d HardwareModuleName entries (want 1)", x->n_hmn);
        kl_rc r = tpl_cert_device_id(x->cert, dev, sizeof dev, type, sizeof type);
        LINT(r == KL_OK, "802.1AR: HardwareModuleName unreadable");
        LINT(strcmp(type, t->hmn_type_oid) == 0, "802.1AR: hwType %s, template %s wants %s", type,
             t->name, t->hmn_type_oid);
        const ASN1_STRING *sn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
        LINT((size_t)ASN1_STRING_length(sn) == strlen(dev) &&
                 memcmp(ASN1_STRING_get0_data(sn), dev, strlen(dev)) == 0,
             "802.1AR: subject serialNumber differs from the HardwareModuleName hwSerialNum");
    } else {
        LINT(x->n_hmn == 0, "HardwareModuleName on template %s, which has no hmn", t->name);
    }
    for (const int *r = t->subject_required; *r; r++) {
        LINT(X509_NAME_get_index_by_NID(subj, *r, -1) >= 0, "subject has no %s", OBJ_nid2sn(*r));
    }
out:
    return rc;
}

/* the rest is there only when the template says so (and a URL is configured) */
static kl_rc lint_optional(lint_ctx *x)
{
    kl_rc rc = KL_OK;
    const tpl *t = x->t;
    X509 *cert = x->cert;
    LINT(t->crl_dp || X509_get_ext_by_NID(cert, NID_crl_distribution_points, -1) < 0,
         "cRLDistributionPoints on template %s, which has none", t->name);
    LINT(t->aia_ocsp || t->aia_ca_issuers || X509_get_ext_by_NID(cert, NID_info_access, -1) < 0,
         "authorityInfoAccess on template %s, which has none", t->name);
    int has_nocheck = X509_get_ext_by_NID(cert, NID_id_pkix_OCSP_noCheck, -1) >= 0;
    LINT(!has_nocheck == !t->ocsp_nocheck, "id-pkix-ocsp-nocheck %s on template %s",
         has_nocheck ? "present" : "missing", t->name);
out:
    return rc;
}

static kl_rc lint_matter(lint_ctx *x)
{
    return x->t->matter ? matter_lint(x->t, x->cert, x->issuer_arg) : KL_OK;
}

/* The checks in the order they run: the first that fails names the fault. Later checks use
 * what earlier ones found (lint_ctx). */
static kl_rc (*const lint_checks[])(lint_ctx *) = {
    lint_serial,    lint_extensions, lint_key,      lint_validity, lint_basic_constraints,
    lint_key_usage, lint_eku,        lint_ski,      lint_aki,      lint_issuer_ca,
    lint_san,       lint_subject,    lint_optional, lint_matter,
};

kl_rc tpl_lint(const tpl *t, X509 *cert, X509 *issuer_cert)
{
    kl_rc rc = KL_OK;
    if (!t || !cert) {
        return kl_fail(KL_EUSAGE, "tpl_lint: no template or certificate");
    }
    lint_ctx x = {.t = t,
                  .cert = cert,
                  .issuer = issuer_cert ? issuer_cert : cert,
                  .issuer_arg = issuer_cert,
                  .self_signed = issuer_cert == NULL};
    for (size_t i = 0; i < sizeof lint_checks / sizeof lint_checks[0]; i++) {
        TRY(lint_checks[i](&x));
    }
out:
    return rc;
}
