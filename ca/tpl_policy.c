/* keyline: the policy step. A CSR (already proven: signature verified by the caller) and a
 * template go in; an unsigned certificate comes out, built field by field from the template.
 * Nothing is copied blindly from the CSR: the subject is re-encoded attribute by attribute after
 * checks, SANs are re-built from validated values, every other CSR extension is either checked
 * to ask for no more than the template grants (and then dropped), one the CA always writes
 * itself (dropped), or refused. */
#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/asn1t.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm.h"
#include "kl_utf8.h"
#include "matter.h"
#include "tpl.h"
#include "tpl_internal.h"

#define TPL_MAX_SANS 32
#define TPL_MAX_URL 1024
#define TPL_DEVID_MAX 64

/* RFC 4108 5:
 *   HardwareModuleName ::= SEQUENCE {
 *       hwType OBJECT IDENTIFIER,
 *       hwSerialNum OCTET STRING } */
typedef struct {
    ASN1_OBJECT *hwType;
    ASN1_OCTET_STRING *hwSerialNum;
} TPL_HMN;

ASN1_SEQUENCE(TPL_HMN) =
    {
        ASN1_SIMPLE(TPL_HMN, hwType, ASN1_OBJECT),
        ASN1_SIMPLE(TPL_HMN, hwSerialNum, ASN1_OCTET_STRING),
} static_ASN1_SEQUENCE_END(TPL_HMN)

    /* ---- key types ----------------------------------------------------------------------------
     */

    int tpl_key_type_of(const EVP_PKEY *k, char *name, size_t namelen)
{
    char tmp[64];
    if (!name) {
        name = tmp;
        namelen = sizeof tmp;
    }
    if (!k) {
        snprintf(name, namelen, "none");
        return -1;
    }
    int id = EVP_PKEY_get_base_id(k);
    if (id == EVP_PKEY_EC) {
        char grp[64] = "";
        size_t gl = 0;
        if (EVP_PKEY_get_group_name(k, grp, sizeof grp, &gl) != 1 || gl == 0) {
            ERR_clear_error();
            snprintf(name, namelen, "ec-explicit-parameters");
            return -1;
        }
        int nid = OBJ_txt2nid(grp);
        if (nid == NID_undef) {
            nid = EC_curve_nist2nid(grp);
        }
        if (nid == NID_X9_62_prime256v1) {
            snprintf(name, namelen, "ec-p256");
            return HSM_KEY_EC_P256;
        }
        if (nid == NID_secp384r1) {
            snprintf(name, namelen, "ec-p384");
            return HSM_KEY_EC_P384;
        }
        snprintf(name, namelen, "ec-%s", grp);
        return -1;
    }
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(k);
        snprintf(name, namelen, "rsa-%d", bits);
        return bits == 2048   ? HSM_KEY_RSA_2048
               : bits == 3072 ? HSM_KEY_RSA_3072
               : bits == 4096 ? HSM_KEY_RSA_4096
                              : -1;
    }
    if (id == EVP_PKEY_ED25519) {
        snprintf(name, namelen, "ed25519");
        return HSM_KEY_ED25519;
    }
    const char *sn = OBJ_nid2sn(id);
    snprintf(name, namelen, "%s", sn ? sn : "unknown");
    return -1;
}

/* ---- the request's own encoding: version, signature algorithm, key parameters --------------
 * OpenSSL verifies requests that PKIX forbids or that rest on a broken digest. A signature is
 * proof of possession only as far as its digest resists collisions, and an SPKI is copied into
 * the certificate, where relying parties judge it by RFC 5480. KL_EINPUT for encodings an RFC
 * forbids, KL_EPOLICY for well-formed but weak digests. */

/* SHA-2 of at least 256 bits: the digests a proof of possession may rest on. */
static int tpl_md_strong(int md_nid)
{
    return md_nid == NID_sha256 || md_nid == NID_sha384 || md_nid == NID_sha512;
}

static const char *tpl_md_name(int md_nid)
{
    switch (md_nid) {
    case NID_sha1: return "SHA-1";
    case NID_sha224: return "SHA-224";
    case NID_md5: return "MD5";
    case NID_md4: return "MD4";
    case NID_md2: return "MD2";
    default: {
        const char *sn = OBJ_nid2sn(md_nid);
        return sn ? sn : "an unknown digest";
    }
    }
}

/* RSASSA-PSS (RFC 4055 3.1): hashAlgorithm and the MGF1 hash, both SHA-1 when absent. */
static kl_rc tpl_pss_check(const void *pval, int ptype)
{
    kl_rc rc = KL_OK;
    RSA_PSS_PARAMS *pss = NULL;
    X509_ALGOR *mgf_md = NULL;
    ENSURE(ptype == V_ASN1_SEQUENCE &&
               (pss = ASN1_item_unpack(pval, ASN1_ITEM_rptr(RSA_PSS_PARAMS))) != NULL,
           KL_EINPUT, "CSR signed with RSASSA-PSS without valid parameters (RFC 4055 3.1)");
    int md = pss->hashAlgorithm ? OBJ_obj2nid(pss->hashAlgorithm->algorithm) : NID_sha1;
    int mgf = pss->maskGenAlgorithm ? OBJ_obj2nid(pss->maskGenAlgorithm->algorithm) : NID_mgf1;
    int mgf_nid = NID_sha1;
    if (pss->maskGenAlgorithm) {
        const ASN1_TYPE *mp = pss->maskGenAlgorithm->parameter;
        ENSURE(mgf == NID_mgf1 && mp && mp->type == V_ASN1_SEQUENCE &&
                   (mgf_md = ASN1_item_unpack(mp->value.sequence, ASN1_ITEM_rptr(X509_ALGOR))),
               KL_EINPUT, "CSR signed with RSASSA-PSS: mask generation is not MGF1 (RFC 4055 3.1)");
        mgf_nid = OBJ_obj2nid(mgf_md->algorithm);
    }
    ENSURE(tpl_md_strong(md), KL_EPOLICY,
           "CSR signed with RSASSA-PSS using %s: %s is not accepted (SHA-256, SHA-384 or SHA-512)",
           tpl_md_name(md), tpl_md_name(md));
    ENSURE(tpl_md_strong(mgf_nid), KL_EPOLICY,
           "CSR signed with RSASSA-PSS, MGF1 with %s: %s is not accepted (SHA-256, SHA-384 or "
           "SHA-512)",
           tpl_md_name(mgf_nid), tpl_md_name(mgf_nid));
out:
    RSA_PSS_PARAMS_free(pss);
    X509_ALGOR_free(mgf_md);
    return rc;
}

static kl_rc tpl_csr_encoding_check(X509_REQ *csr)
{
    kl_rc rc = KL_OK;
    /* RFC 2986 4.1: "version is the version number, for compatibility with future revisions
     * of this document. It shall be 0 for this version of the standard." */
    long version = X509_REQ_get_version(csr); /* -1: does not fit, or never set */
    ENSURE(version == 0, KL_EINPUT, "CSR version %s%ld (PKCS#10: only version 0 (v1) exists)",
           version < 0 ? "not 0: " : "", version);

    const X509_ALGOR *alg = NULL;
    const ASN1_OBJECT *obj = NULL;
    const void *pval = NULL;
    int ptype = V_ASN1_UNDEF, md = NID_undef, pk = NID_undef;
    char name[80];
    X509_REQ_get0_signature(csr, NULL, &alg);
    X509_ALGOR_get0(&obj, &ptype, &pval, alg);
    OBJ_obj2txt(name, sizeof name, obj, 0);
    int nid = OBJ_obj2nid(obj);
    ENSURE(nid != NID_undef && OBJ_find_sigid_algs(nid, &md, &pk), KL_EPOLICY,
           "CSR signed with %s: not an accepted signature algorithm", name);
    if (nid == NID_rsassaPss) {
        TRY(tpl_pss_check(pval, ptype));
    } else if (nid == NID_ED25519) {
        /* RFC 8410 3: "the parameters MUST be absent" */
        ENSURE(ptype == V_ASN1_UNDEF, KL_EINPUT,
               "CSR signature algorithm %s with parameters (RFC 8410 3: they MUST be absent)",
               name);
    } else {
        ENSURE(md != NID_undef && tpl_md_strong(md), KL_EPOLICY,
               "CSR signed with %s: %s is not accepted (SHA-256, SHA-384 or SHA-512)", name,
               tpl_md_name(md));
        if (pk == NID_X9_62_id_ecPublicKey) {
            /* RFC 5758 3.2: "When the ecdsa-with-SHA224, ecdsa-with-SHA256, ecdsa-with-SHA384,
             * or ecdsa-with-SHA512 algorithm identifier appears in the algorithm field as an
             * AlgorithmIdentifier, the encoding MUST omit the parameters field." */
            ENSURE(ptype == V_ASN1_UNDEF, KL_EINPUT,
                   "CSR signature algorithm %s with parameters (RFC 5758 3.2: they MUST be "
                   "absent)",
                   name);
        } else if (pk == NID_rsaEncryption) {
            /* RFC 4055 5: "the parameters MUST be NULL. Implementations MUST accept the
             * parameters being absent as well as present." */
            ENSURE(ptype == V_ASN1_NULL || ptype == V_ASN1_UNDEF, KL_EINPUT,
                   "CSR signature algorithm %s with parameters other than NULL (RFC 4055 5)", name);
        } else {
            ENSURE(0, KL_EPOLICY, "CSR signed with %s: not an accepted signature algorithm", name);
        }
    }

    /* the key's own AlgorithmIdentifier and encoding */
    ASN1_OBJECT *kobj = NULL;
    const unsigned char *kbits = NULL;
    int klen = 0, kptype = V_ASN1_UNDEF;
    X509_ALGOR *kalg = NULL;
    ENSURE_SSL(X509_PUBKEY_get0_param(&kobj, &kbits, &klen, &kalg, X509_REQ_get_X509_PUBKEY(csr)) ==
                   1,
               KL_EINPUT, "CSR public key cannot be read");
    if (OBJ_obj2nid(kobj) == NID_X9_62_id_ecPublicKey) {
        X509_ALGOR_get0(NULL, &kptype, NULL, kalg);
        /* RFC 5480 2.1.1: "ECParameters ::= CHOICE { namedCurve OBJECT IDENTIFIER
         * -- implicitCurve NULL -- specifiedCurve SpecifiedECDomain }
         * -- implicitCurve and specifiedCurve MUST NOT be used in PKIX." A P-256 key with
         * explicit parameters is the same key, but a certificate carrying them is refused by
         * verifiers (OpenSSL: error 94): certify only the named curve. */
        ENSURE(kptype == V_ASN1_OBJECT, KL_EINPUT,
               "CSR key has %s curve parameters (RFC 5480 2.1.1: namedCurve only)",
               kptype == V_ASN1_SEQUENCE ? "explicit"
               : kptype == V_ASN1_NULL   ? "implicit"
                                         : "no");
        /* RFC 5480 2.2: "The first octet of the OCTET STRING indicates whether the key is
         * compressed or uncompressed. The uncompressed form is indicated by 0x04 and the
         * compressed form is indicated by either 0x02 or 0x03". A compressed point is the
         * same key; the certificate gets it uncompressed (tpl_set_pubkey), the form every
         * implementation MUST support. */
        ENSURE(klen > 0 && (kbits[0] == 0x04 || kbits[0] == 0x02 || kbits[0] == 0x03), KL_EINPUT,
               "CSR key point is neither uncompressed nor compressed (RFC 5480 2.2: 04, 02 or "
               "03)");
    }
out:
    return rc;
}

static void tpl_key_types_str(unsigned bits, char *out, size_t outlen)
{
    static const char *const names[HSM_KEY__COUNT] = {"ec-p256", "ec-p384",  "rsa-3072",
                                                      "ed25519", "rsa-2048", "rsa-4096"};
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < HSM_KEY__COUNT; i++) {
        if (bits & (1u << i)) {
            int w = snprintf(out + n, outlen - n, "%s%s", n ? " " : "", names[i]);
            if (w < 0 || (size_t)w >= outlen - n) {
                return;
            }
            n += (size_t)w;
        }
    }
}

/* ---- small helpers ------------------------------------------------------------------------ */

/* Copy untrusted bytes for an error message: printable ASCII kept, anything else as '?'. */
static const char *tpl_safe(const void *data, size_t len, char *buf, size_t buflen)
{
    const unsigned char *s = data;
    size_t n = len < buflen - 1 ? len : buflen - 1;
    for (size_t i = 0; i < n; i++) {
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    }
    buf[n] = 0;
    if (len > n && n >= 3) {
        memcpy(buf + n - 3, "...", 3);
    }
    return buf;
}

static const char *tpl_obj_name(const ASN1_OBJECT *o, char *buf, size_t buflen)
{
    int nid = OBJ_obj2nid(o);
    if (nid != NID_undef && OBJ_nid2ln(nid)) {
        /* OpenSSL's short names are the RFC names for the ones we meet (keyUsage, ...) */
        snprintf(buf, buflen, "%s", OBJ_nid2sn(nid));
    } else {
        OBJ_obj2txt(buf, (int)buflen, o, 1);
    }
    return buf;
}

static void tpl_nids_str(const int *list, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = 0;
    for (; *list; list++) {
        int w = snprintf(out + n, outlen - n, "%s%s", n ? " " : "", OBJ_nid2sn(*list));
        if (w < 0 || (size_t)w >= outlen - n) {
            return;
        }
        n += (size_t)w;
    }
    if (n == 0) {
        snprintf(out, outlen, "none");
    }
}

static kl_rc tpl_asn1_time_to_time_t(const ASN1_TIME *at, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!at || ASN1_TIME_to_tm(at, &tm) != 1) {
        return kl_fail_ssl(KL_EINPUT, "certificate has an invalid time");
    }
    *out = timegm(&tm);
    return KL_OK;
}

/* ---- subject ------------------------------------------------------------------------------ */

static const struct {
    int nid;
    int max_chars;
} tpl_attr_limits[] = {
    /* RFC 5280 Appendix A upper bounds */
    {NID_commonName, 64},   {NID_organizationName, 64}, {NID_organizationalUnitName, 64},
    {NID_countryName, 2},   {NID_localityName, 128},    {NID_stateOrProvinceName, 128},
    {NID_serialNumber, 64}, {NID_domainComponent, 63},  {NID_userId, 64},
};

static int tpl_attr_max(int nid)
{
    for (size_t i = 0; i < sizeof tpl_attr_limits / sizeof tpl_attr_limits[0]; i++) {
        if (tpl_attr_limits[i].nid == nid) {
            return tpl_attr_limits[i].max_chars;
        }
    }
    return 64;
}

/* X.520 PrintableString alphabet (serialNumber, countryName) */
static int tpl_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || strchr(" '()+,-./:=?", c))) {
            return 0;
        }
    }
    return 1;
}

static kl_rc tpl_device_id_check(const char *what, const char *id)
{
    size_t n = strlen(id);
    char buf[80];
    if (n == 0 || n > TPL_DEVID_MAX || !tpl_printable(id, n)) {
        return kl_fail(KL_EPOLICY,
                       "%s '%s' must be 1-%d characters of A-Z a-z 0-9 and ' ()+,-./:=?", what,
                       tpl_safe(id, n, buf, sizeof buf), TPL_DEVID_MAX);
    }
    return KL_OK;
}

/* The source subject's attributes as checked UTF-8 strings, in order. The strings are owned
 * here (tpl_subject_build frees them); csr_sn points into utf8[]. */
typedef struct {
    unsigned char *utf8[TPL_MAX_ATTRS * 2];
    int nids[TPL_MAX_ATTRS * 2];
    int lens[TPL_MAX_ATTRS * 2];
    int count;
    const char *csr_sn;
} tpl_subj;

/* The name of an ASN.1 string type as X.680 and X.520 write it, for refusals. */
static const char *tpl_string_type_name(int type)
{
    switch (type) {
    case V_ASN1_PRINTABLESTRING: return "PrintableString";
    case V_ASN1_UTF8STRING: return "UTF8String";
    case V_ASN1_BMPSTRING: return "BMPString";
    case V_ASN1_UNIVERSALSTRING: return "UniversalString";
    case V_ASN1_T61STRING: return "TeletexString";
    case V_ASN1_IA5STRING: return "IA5String";
    case V_ASN1_VISIBLESTRING: return "VisibleString";
    case V_ASN1_NUMERICSTRING: return "NumericString";
    default: return ASN1_tag2str(type);
    }
}

/* RFC 5280 Appendix A: X520SerialNumber ::= PrintableString (SIZE (1..ub-serial-number)), and
 * countryName a PrintableString too. A CSR's value of another string type (UTF8String from
 * mbed TLS 2, BMPString) is taken when every character is one PrintableString has (it is
 * re-encoded as one); otherwise the refusal names the first character that is not, and the
 * type the CSR gave. */
static kl_rc tpl_printable_check(int nid, int type, const unsigned char *u, int ulen)
{
    char ch[16], b1[80];
    int i = 0;
    while (i < ulen && tpl_printable((const char *)u + i, 1)) {
        i++;
    }
    if (i == ulen) {
        return KL_OK;
    }
    size_t next = (size_t)i; /* the whole UTF-8 sequence of the character */
    if (kl_utf8_next(u, (size_t)ulen, &next) < 0) {
        next = (size_t)i + 1;
    }
    int n = (int)(next - (size_t)i);
    if (u[i] == ' ' || (u[i] >= 0x21 && u[i] < 0x7f)) {
        snprintf(ch, sizeof ch, "'%c'", u[i]);
    } else {
        int k = 0;
        for (int j = 0; j < n; j++) {
            k += snprintf(ch + k, sizeof ch - (size_t)k, "%s%02X", j ? " " : "bytes ", u[i + j]);
        }
    }
    tpl_safe(u, (size_t)ulen, b1, sizeof b1);
    if (type == V_ASN1_PRINTABLESTRING) {
        return kl_fail(KL_EPOLICY,
                       "subject %s '%s' has %s, which PrintableString does not have (A-Z a-z "
                       "0-9, space and '()+,-./:=?)",
                       OBJ_nid2sn(nid), b1, ch);
    }
    return kl_fail(KL_EPOLICY,
                   "subject %s '%s' is a %s with %s, which PrintableString does not have: %s "
                   "must be a PrintableString (A-Z a-z 0-9, space and '()+,-./:=?)",
                   OBJ_nid2sn(nid), b1, tpl_string_type_name(type), ch, OBJ_nid2sn(nid));
}

/* One attribute value as the policy reads it: a valid string (*u: its UTF-8, NUL-terminated,
 * the caller frees it) of printable characters within the attribute's length limit;
 * serialNumber and C also within PrintableString's alphabet. */
static kl_rc tpl_attr_value(int nid, const ASN1_STRING *d, unsigned char **u, int *ulen)
{
    kl_rc rc = KL_OK;
    *u = NULL;
    *ulen = ASN1_STRING_to_UTF8(u, d);
    ENSURE_SSL(*ulen >= 0, KL_EINPUT, "subject %s is not a valid %s", OBJ_nid2sn(nid),
               tpl_string_type_name(ASN1_STRING_type(d)));
    ENSURE(*ulen > 0, KL_EPOLICY, "subject %s is empty", OBJ_nid2sn(nid));
    int chars = 0;
    for (int k = 0; k < *ulen; k++) {
        ENSURE((*u)[k] >= 0x20 && (*u)[k] != 0x7f, KL_EPOLICY,
               "subject %s contains a control character", OBJ_nid2sn(nid));
        chars += ((*u)[k] & 0xc0) != 0x80;
    }
    ENSURE(chars <= tpl_attr_max(nid), KL_EPOLICY,
           "subject %s is %d characters long, more than the %d it may have", OBJ_nid2sn(nid), chars,
           tpl_attr_max(nid));
    if (nid == NID_serialNumber || nid == NID_countryName) {
        TRY(tpl_printable_check(nid, ASN1_STRING_type(d), *u, *ulen));
    }
out:
    return rc;
}

/* One attribute of the source subject: allowed by the template, not repeated, a valid string of
 * printable characters within the attribute's length limit; kept in `s`. */
static kl_rc tpl_subject_attr_take(const tpl *t, const X509_NAME_ENTRY *e, tpl_subj *s)
{
    kl_rc rc = KL_OK;
    char b1[80];
    const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
    int nid = OBJ_obj2nid(obj);
    if (nid == NID_undef || !tpl_nid_in(t->subject_allowed, nid)) {
        char allowed[200];
        tpl_nids_str(t->subject_allowed, allowed, sizeof allowed);
        ENSURE(0, KL_EPOLICY,
               "subject attribute %s is not allowed by template %s "
               "(allowed: %s)",
               tpl_obj_name(obj, b1, sizeof b1), t->name, allowed);
    }
    for (int j = 0; j < s->count; j++) {
        ENSURE(s->nids[j] != nid || nid == NID_organizationalUnitName || nid == NID_domainComponent,
               KL_EPOLICY, "subject has %s more than once", OBJ_nid2sn(nid));
    }
    unsigned char *u = NULL;
    int ulen = 0;
    rc = tpl_attr_value(nid, X509_NAME_ENTRY_get_data(e), &u, &ulen);
    s->utf8[s->count] = u; /* freed with the others, whatever rc is */
    s->nids[s->count] = nid;
    s->lens[s->count] = ulen;
    s->count++;
    TRY(rc);
    if (nid == NID_serialNumber) {
        s->csr_sn = (const char *)u; /* ASN1_STRING_to_UTF8 NUL-terminates */
        ENSURE((size_t)ulen == strlen(s->csr_sn), KL_EPOLICY,
               "subject serialNumber contains a NUL byte");
    }
out:
    return rc;
}

/* Every attribute of the source subject, one per RDN. */
static kl_rc tpl_subject_read(const tpl *t, const X509_NAME *src, tpl_subj *s)
{
    kl_rc rc = KL_OK;
    char b1[80];
    int n = src ? X509_NAME_entry_count(src) : 0;
    ENSURE(n <= TPL_MAX_ATTRS, KL_EPOLICY, "subject has %d attributes (at most %d)", n,
           TPL_MAX_ATTRS);
    int prev_set = -1;
    for (int i = 0; i < n; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(src, i);
        int set = X509_NAME_ENTRY_set(e);
        ENSURE(set != prev_set, KL_EPOLICY,
               "subject has a multi-valued RDN (%s+...), which template %s does not allow",
               tpl_obj_name(X509_NAME_ENTRY_get_object(e), b1, sizeof b1), t->name);
        prev_set = set;
        TRY(tpl_subject_attr_take(t, e, s));
    }
out:
    return rc;
}

/* IEEE 802.1AR 8.6: the subject serialNumber carries the device's hardware serial. The device
 * id given by the front end (station, authenticated EST client) and the CSR must agree when
 * both are present, on every template. *devid gets the device id (or "" when there is none). */
static kl_rc tpl_subject_devid(const tpl *t, const char *device_id, const char *csr_sn, char *devid,
                               size_t devid_len)
{
    kl_rc rc = KL_OK;
    char b1[80], b2[80];
    if (device_id && *device_id) {
        TRY(tpl_device_id_check("device id", device_id));
    }
    if (device_id && *device_id && csr_sn && strcmp(device_id, csr_sn) != 0) {
        ENSURE(0, KL_EPOLICY, "subject serialNumber '%s' does not match the device id '%s'",
               tpl_safe(csr_sn, strlen(csr_sn), b1, sizeof b1),
               tpl_safe(device_id, strlen(device_id), b2, sizeof b2));
    }
    if (t->serial_number_from_device) {
        const char *dev = (device_id && *device_id) ? device_id : csr_sn;
        ENSURE(dev, KL_EPOLICY,
               "template %s needs a device id (none given and the CSR subject has no "
               "serialNumber)",
               t->name);
        TRY(tpl_device_id_check("device id", dev));
        snprintf(devid, devid_len, "%s", dev);
    } else if (device_id && *device_id) {
        snprintf(devid, devid_len, "%s", device_id);
    } else if (csr_sn) {
        snprintf(devid, devid_len, "%s", csr_sn);
    }
out:
    return rc;
}

/* Re-encode: OpenSSL's string table picks PrintableString for C and serialNumber, IA5String
 * for DC, UTF8String otherwise (RFC 5280 4.1.2.6). */
static kl_rc tpl_subject_encode(const tpl *t, const tpl_subj *s, const char *devid, X509_NAME *name)
{
    kl_rc rc = KL_OK;
    for (int i = 0; i < s->count; i++) {
        ENSURE(s->nids[i] != NID_countryName || s->lens[i] == 2, KL_EPOLICY,
               "subject C must be a two-letter country code");
        ENSURE_SSL(X509_NAME_add_entry_by_NID(name, s->nids[i], MBSTRING_UTF8, s->utf8[i],
                                              s->lens[i], -1, 0) == 1,
                   KL_EPOLICY, "subject %s cannot be encoded", OBJ_nid2sn(s->nids[i]));
    }
    if (t->serial_number_from_device && !s->csr_sn) {
        ENSURE_SSL(X509_NAME_add_entry_by_NID(name, NID_serialNumber, MBSTRING_ASC,
                                              (const unsigned char *)devid, -1, -1, 0) == 1,
                   KL_EINTERNAL, "cannot add serialNumber");
    }
    for (const int *r = t->subject_required; *r; r++) {
        ENSURE(X509_NAME_get_index_by_NID(name, *r, -1) >= 0, KL_EPOLICY,
               "subject has no %s, which template %s requires", OBJ_nid2sn(*r), t->name);
    }
out:
    return rc;
}

/* Check the source subject against the template and re-encode it into a fresh X509_NAME.
 * Resolves the device id: *devid gets the hardware serial (or "" when there is none). */
static kl_rc tpl_subject_build(const tpl *t, const X509_NAME *src, const char *device_id,
                               X509_NAME **out, char *devid, size_t devid_len)
{
    kl_rc rc = KL_OK;
    X509_NAME *name = X509_NAME_new();
    tpl_subj s;
    memset(&s, 0, sizeof s);
    *out = NULL;
    devid[0] = 0;

    ENSURE(name, KL_EINTERNAL, "out of memory");
    TRY(tpl_subject_read(t, src, &s));
    TRY(tpl_subject_devid(t, device_id, s.csr_sn, devid, devid_len));
    TRY(tpl_subject_encode(t, &s, devid, name));
    *out = name;
    name = NULL;
out:
    for (int i = 0; i < s.count; i++) {
        OPENSSL_free(s.utf8[i]);
    }
    X509_NAME_free(name);
    return rc;
}

/* ---- subjectAltName ----------------------------------------------------------------------- */

/* RFC 1123 2.1 / RFC 5280 4.2.1.6 preferred name syntax: LDH labels of 1-63 octets, no leading
 * or trailing hyphen, at most 253 octets in all, not a bare IP address. A wildcard is only a
 * whole leftmost "*" label, and only when the template allows it, above a registrable-looking
 * name (at least two more labels). */
static const char *tpl_dns_problem(const unsigned char *s, size_t n, int wildcard_ok)
{
    if (n == 0) {
        return "empty";
    }
    if (n > 253) {
        return "longer than 253 characters";
    }
    if (s[n - 1] == '.') {
        return "ends with a dot";
    }
    size_t labels = 0, i = 0;
    int last_all_digits = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != '.') {
            j++;
        }
        size_t len = j - i;
        if (len == 0) {
            return "has an empty label";
        }
        if (len > 63) {
            return "has a label longer than 63 characters";
        }
        if (len == 1 && s[i] == '*') {
            if (labels != 0) {
                return "has a wildcard that is not the leftmost label";
            }
            if (!wildcard_ok) {
                return "is a wildcard, which the template does not allow";
            }
        } else {
            last_all_digits = 1;
            for (size_t k = i; k < j; k++) {
                unsigned char c = s[k];
                if (!(isalnum(c) || c == '-')) {
                    return "has a character other than letters, digits, '-' and '.'";
                }
                if (!isdigit(c)) {
                    last_all_digits = 0;
                }
            }
            if (s[i] == '-' || s[j - 1] == '-') {
                return "has a label starting or ending with '-'";
            }
        }
        labels++;
        i = j + 1;
    }
    if (last_all_digits) {
        return "has an all-numeric top-level label (an IP address belongs in an iPAddress SAN)";
    }
    if (s[0] == '*' && labels < 3) {
        return "is a wildcard over fewer than two labels";
    }
    return NULL;
}

static const char *tpl_uri_problem(const unsigned char *s, size_t n)
{
    if (n == 0 || n > TPL_MAX_URL) {
        return "empty or longer than 1024 characters";
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0x20 || s[i] >= 0x7f) {
            return "has a space or a non-ASCII character";
        }
    }
    size_t k = 0;
    while (k < n && (isalnum(s[k]) || s[k] == '+' || s[k] == '-' || s[k] == '.')) {
        k++;
    }
    if (k == 0 || !isalpha(s[0]) || k >= n - 1 || s[k] != ':') {
        return "has no scheme (RFC 3986 scheme \":\" hier-part)";
    }
    return NULL;
}

static const char *tpl_email_problem(const unsigned char *s, size_t n)
{
    const unsigned char *at = memchr(s, '@', n);
    if (!at || at == s || (size_t)(at - s) > 64) {
        return "is not local-part@domain";
    }
    for (const unsigned char *c = s; c < at; c++) {
        if (*c <= 0x20 || *c >= 0x7f || *c == '@') {
            return "has a bad character in the local part";
        }
    }
    return tpl_dns_problem(at + 1, n - (size_t)(at - s) - 1, 0) ? "has a bad domain" : NULL;
}

static kl_rc tpl_hmn_decode(const GENERAL_NAME *g, TPL_HMN **out)
{
    *out = NULL;
    const OTHERNAME *on = g->d.otherName;
    if (!on->value || on->value->type != V_ASN1_SEQUENCE) {
        return kl_fail(KL_EINPUT, "HardwareModuleName is not a SEQUENCE");
    }
    const unsigned char *p = on->value->value.sequence->data;
    long len = on->value->value.sequence->length;
    const unsigned char *start = p;
    TPL_HMN *h = (TPL_HMN *)ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_rptr(TPL_HMN));
    if (!h || p != start + len) {
        ASN1_item_free((ASN1_VALUE *)h, ASN1_ITEM_rptr(TPL_HMN));
        return kl_fail_ssl(KL_EINPUT, "HardwareModuleName cannot be decoded");
    }
    *out = h;
    return KL_OK;
}

static GENERAL_NAME *tpl_hmn_build(const char *hw_type, const char *devid)
{
    TPL_HMN *h = (TPL_HMN *)ASN1_item_new(ASN1_ITEM_rptr(TPL_HMN));
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_TYPE *val = ASN1_TYPE_new();
    ASN1_STRING *seq = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
    ASN1_OBJECT *type_id = OBJ_txt2obj(TPL_OID_HMN, 1);
    unsigned char *der = NULL;
    int ok = 0;
    if (!h || !g || !val || !seq || !type_id) {
        goto out;
    }
    ASN1_OBJECT_free(h->hwType);
    h->hwType = OBJ_txt2obj(hw_type, 1);
    if (!h->hwType || ASN1_OCTET_STRING_set(h->hwSerialNum, (const unsigned char *)devid,
                                            (int)strlen(devid)) != 1) {
        goto out;
    }
    int len = ASN1_item_i2d((ASN1_VALUE *)h, &der, ASN1_ITEM_rptr(TPL_HMN));
    if (len <= 0 || ASN1_STRING_set(seq, der, len) != 1) {
        goto out;
    }
    ASN1_TYPE_set(val, V_ASN1_SEQUENCE, seq);
    seq = NULL;
    GENERAL_NAME_set0_othername(g, type_id, val);
    type_id = NULL;
    val = NULL;
    ok = 1;
out:
    OPENSSL_free(der);
    ASN1_item_free((ASN1_VALUE *)h, ASN1_ITEM_rptr(TPL_HMN));
    ASN1_STRING_free(seq);
    ASN1_TYPE_free(val);
    ASN1_OBJECT_free(type_id);
    if (!ok) {
        GENERAL_NAME_free(g);
        return NULL;
    }
    return g;
}

static kl_rc tpl_device_id_from_hmn(const GENERAL_NAME *g, char *out, size_t outlen, char *hw_type,
                                    size_t hw_len)
{
    TPL_HMN *h = NULL;
    kl_rc rc = tpl_hmn_decode(g, &h);
    if (rc != KL_OK) {
        return rc;
    }
    int n = ASN1_STRING_length(h->hwSerialNum);
    const unsigned char *d = ASN1_STRING_get0_data(h->hwSerialNum);
    if (n <= 0 || (size_t)n >= outlen || !tpl_printable((const char *)d, (size_t)n)) {
        rc = kl_fail(KL_EINPUT, "HardwareModuleName hwSerialNum is empty, too long or not "
                                "printable");
    } else {
        memcpy(out, d, (size_t)n);
        out[n] = 0;
        if (hw_type) {
            OBJ_obj2txt(hw_type, (int)hw_len, h->hwType, 1);
        }
    }
    ASN1_item_free((ASN1_VALUE *)h, ASN1_ITEM_rptr(TPL_HMN));
    return rc;
}

kl_rc tpl_cert_device_id(X509 *cert, char *out, size_t outlen, char *hw_type, size_t hw_len)
{
    kl_rc rc = KL_OK;
    int crit = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    out[0] = 0;
    if (hw_type && hw_len) {
        hw_type[0] = 0;
    }
    ENSURE(outlen > 1, KL_EUSAGE, "device id buffer too small");
    ENSURE(gens || crit == -1, KL_EINPUT, "subjectAltName cannot be decoded");
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (tpl_is_hmn(g)) {
            rc = tpl_device_id_from_hmn(g, out, outlen, hw_type, hw_len);
            goto out;
        }
    }
    const X509_NAME *subj = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(subj, NID_serialNumber, -1);
    ENSURE(idx >= 0, KL_ENOTFOUND,
           "certificate has neither a HardwareModuleName nor a subject "
           "serialNumber");
    const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    int n = ASN1_STRING_length(d);
    ENSURE(n > 0 && (size_t)n < outlen &&
               tpl_printable((const char *)ASN1_STRING_get0_data(d), (size_t)n),
           KL_EINPUT, "subject serialNumber is empty, too long or not printable");
    memcpy(out, ASN1_STRING_get0_data(d), (size_t)n);
    out[n] = 0;
out:
    GENERAL_NAMES_free(gens);
    return rc;
}

/* One SAN entry from the CSR: refused, tolerated (an HMN we build ourselves anyway) or
 * validated and copied into `sans`. */
static kl_rc tpl_san_take(const tpl *t, const GENERAL_NAME *g, const char *devid,
                          GENERAL_NAMES *sans)
{
    kl_rc rc = KL_OK;
    char b[96];
    const char *why = NULL;
    unsigned kind = 0;
    const char *kname = "";
    const ASN1_STRING *s = NULL;
    switch (g->type) {
    case GEN_DNS:
        kind = TPL_SAN_DNS;
        kname = "dNSName";
        s = g->d.dNSName;
        break;
    case GEN_IPADD:
        kind = TPL_SAN_IP;
        kname = "iPAddress";
        s = g->d.iPAddress;
        break;
    case GEN_URI:
        kind = TPL_SAN_URI;
        kname = "uniformResourceIdentifier";
        s = g->d.uniformResourceIdentifier;
        break;
    case GEN_EMAIL:
        kind = TPL_SAN_EMAIL;
        kname = "rfc822Name";
        s = g->d.rfc822Name;
        break;
    case GEN_OTHERNAME:
        if (tpl_is_hmn(g) && t->san_hmn) {
            /* The device may state its own HMN; we build ours from the device id, so only
             * check that they agree. */
            char dev[TPL_DEVID_MAX + 1], type[64];
            TRY(tpl_device_id_from_hmn(g, dev, sizeof dev, type, sizeof type));
            ENSURE(strcmp(type, t->hmn_type_oid) == 0, KL_EPOLICY,
                   "CSR HardwareModuleName hwType %s differs from template %s's %s", type, t->name,
                   t->hmn_type_oid);
            ENSURE(strcmp(dev, devid) == 0, KL_EPOLICY,
                   "CSR HardwareModuleName hwSerialNum '%s' does not match the device id '%s'", dev,
                   devid);
            return KL_OK;
        }
        kname = tpl_is_hmn(g) ? "otherName HardwareModuleName" : "otherName";
        break;
    case GEN_DIRNAME: kname = "directoryName"; break;
    case GEN_RID: kname = "registeredID"; break;
    default: kname = "x400Address/ediPartyName"; break;
    }
    ENSURE(kind && (t->san_from_csr & kind), KL_EPOLICY,
           "CSR requests extension subjectAltName (%s) which template %s does not allow", kname,
           t->name);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    size_t n = (size_t)ASN1_STRING_length(s);
    switch (kind) {
    case TPL_SAN_DNS: why = tpl_dns_problem(d, n, t->san_dns_wildcard); break;
    case TPL_SAN_IP: why = (n == 4 || n == 16) ? NULL : "is not 4 or 16 octets"; break;
    case TPL_SAN_URI: why = tpl_uri_problem(d, n); break;
    case TPL_SAN_EMAIL: why = tpl_email_problem(d, n); break;
    }
    ENSURE(!why, KL_EPOLICY, "CSR subjectAltName %s '%s' %s", kname,
           kind == TPL_SAN_IP ? "(binary)" : tpl_safe(d, n, b, sizeof b), why);
    ENSURE(sk_GENERAL_NAME_num(sans) < TPL_MAX_SANS, KL_EPOLICY,
           "CSR has more than %d subjectAltName entries", TPL_MAX_SANS);
    GENERAL_NAME *copy = GENERAL_NAME_dup(g);
    ENSURE(copy, KL_EINTERNAL, "out of memory");
    if (!sk_GENERAL_NAME_push(sans, copy)) {
        GENERAL_NAME_free(copy);
        ENSURE(0, KL_EINTERNAL, "out of memory");
    }
out:
    return rc;
}

/* ---- CSR extensions ----------------------------------------------------------------------- */

static void tpl_ku_str(uint32_t bits, char *out, size_t outlen)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {X509v3_KU_DIGITAL_SIGNATURE, "digitalSignature"},
        {X509v3_KU_NON_REPUDIATION, "nonRepudiation"},
        {X509v3_KU_KEY_ENCIPHERMENT, "keyEncipherment"},
        {X509v3_KU_DATA_ENCIPHERMENT, "dataEncipherment"},
        {X509v3_KU_KEY_AGREEMENT, "keyAgreement"},
        {X509v3_KU_KEY_CERT_SIGN, "keyCertSign"},
        {X509v3_KU_CRL_SIGN, "cRLSign"},
        {X509v3_KU_ENCIPHER_ONLY, "encipherOnly"},
        {X509v3_KU_DECIPHER_ONLY, "decipherOnly"},
    };
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (bits & names[i].bit) {
            int w = snprintf(out + n, outlen - n, "%s%s", n ? " " : "", names[i].name);
            if (w < 0 || (size_t)w >= outlen - n) {
                return;
            }
            n += (size_t)w;
        }
    }
}

/* Extensions the CA writes itself from the issuer, the configuration and the template, whatever
 * a CSR says: dropped, never refused. A renewal CSR may carry them because the client copied
 * every extension of its current certificate into it (cisco/libest's simplereenroll does,
 * est_client_reenroll(): "The CA is responsible for re-applying any X509 extensions"); refusing
 * them left such clients unable to renew (issue 12). The key identifiers are the CA's to compute
 * (RFC 5280 4.2.1.1, 4.2.1.2) and the URLs are the configuration's. */
static int tpl_ext_ca_writes(int nid)
{
    return nid == NID_subject_key_identifier || nid == NID_authority_key_identifier ||
           nid == NID_crl_distribution_points || nid == NID_info_access;
}

/* What a decoded CSR extension is checked against. */
typedef struct {
    const tpl *t;
    uint32_t ku_allowed;
    const char *devid;
    GENERAL_NAMES *sans;
} tpl_ext_ctx;

static kl_rc tpl_ext_san(const tpl_ext_ctx *cx, void *dec)
{
    kl_rc rc = KL_OK;
    GENERAL_NAMES *gens = dec;
    ENSURE(sk_GENERAL_NAME_num(gens) > 0, KL_EINPUT, "CSR subjectAltName is empty");
    for (int k = 0; k < sk_GENERAL_NAME_num(gens); k++) {
        TRY(tpl_san_take(cx->t, sk_GENERAL_NAME_value(gens, k), cx->devid, cx->sans));
    }
out:
    return rc;
}

static kl_rc tpl_ext_bc(const tpl_ext_ctx *cx, void *dec)
{
    kl_rc rc = KL_OK;
    const tpl *t = cx->t;
    BASIC_CONSTRAINTS *bc = dec;
    char c[160];
    /* A CSR may state what it is; the template alone decides what it gets. */
    ENSURE(!bc->ca || t->is_ca, KL_EPOLICY,
           "CSR requests extension basicConstraints (CA:TRUE) which template %s does "
           "not allow",
           t->name);
    /* a CA template's path length is a limit too: no longer one, and not none */
    int64_t want = -1;
    if (bc->ca && t->path_len >= 0 &&
        (!bc->pathlen || ASN1_INTEGER_get_int64(&want, bc->pathlen) != 1 || want < 0 ||
         want > t->path_len)) {
        if (bc->pathlen) {
            snprintf(c, sizeof c, "%lld", (long long)want);
        } else {
            snprintf(c, sizeof c, "none");
        }
        ENSURE(0, KL_EPOLICY,
               "CSR requests extension basicConstraints (CA:TRUE, pathlen:%s) which "
               "template %s limits to pathlen:%d",
               c, t->name, t->path_len);
    }
out:
    return rc;
}

static kl_rc tpl_ext_ku(const tpl_ext_ctx *cx, void *dec)
{
    kl_rc rc = KL_OK;
    char c[160];
    uint32_t want = tpl_ku_bits(dec);
    if (want & ~cx->ku_allowed) {
        tpl_ku_str(want & ~cx->ku_allowed, c, sizeof c);
        ENSURE(0, KL_EPOLICY,
               "CSR requests extension keyUsage (%s) which template %s does not allow", c,
               cx->t->name);
    }
out:
    return rc;
}

static kl_rc tpl_ext_eku(const tpl_ext_ctx *cx, void *dec)
{
    kl_rc rc = KL_OK;
    char b[96];
    EXTENDED_KEY_USAGE *eku = dec;
    for (int k = 0; k < sk_ASN1_OBJECT_num(eku); k++) {
        const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, k);
        ENSURE(tpl_nid_in(cx->t->eku, OBJ_obj2nid(o)), KL_EPOLICY,
               "CSR requests extension extendedKeyUsage (%s) which template %s does not "
               "allow",
               tpl_obj_name(o, b, sizeof b), cx->t->name);
    }
out:
    return rc;
}

/* The CSR extensions a template may grant: each is decoded and checked to ask for no more. */
static const struct {
    int nid;
    kl_rc (*check)(const tpl_ext_ctx *cx, void *dec);
} tpl_ext_checks[] = {
    {NID_subject_alt_name, tpl_ext_san},
    {NID_basic_constraints, tpl_ext_bc},
    {NID_key_usage, tpl_ext_ku},
    {NID_ext_key_usage, tpl_ext_eku},
};

/* One extensionRequest attribute with one value, or none: a second one would be a place to hide
 * extensions from a checker that looks at the first only. *n_req gets how many there are. */
static kl_rc tpl_ext_req_count(X509_REQ *csr, int *n_req)
{
    kl_rc rc = KL_OK;
    *n_req = 0;
    for (int i = -1; (i = X509_REQ_get_attr_by_NID(csr, NID_ext_req, i)) >= 0;) {
        (*n_req)++;
        ENSURE(X509_ATTRIBUTE_count(X509_REQ_get_attr(csr, i)) == 1, KL_EPOLICY,
               "CSR extensionRequest attribute has more than one value");
    }
    for (int i = -1; (i = X509_REQ_get_attr_by_NID(csr, NID_ms_ext_req, i)) >= 0;) {
        (*n_req)++;
    }
    ENSURE(*n_req <= 1, KL_EPOLICY, "CSR has more than one extensionRequest attribute");
out:
    return rc;
}

/* Extension i of the request: not repeated, then tolerated, replaced by ours, checked against
 * the template or refused. */
static kl_rc tpl_csr_ext_check(const tpl_ext_ctx *cx, STACK_OF(X509_EXTENSION) * exts, int i)
{
    kl_rc rc = KL_OK;
    char b[96];
    X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
    const ASN1_OBJECT *obj = X509_EXTENSION_get_object(ext);
    for (int j = 0; j < i; j++) {
        ENSURE(OBJ_cmp(obj, X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, j))) != 0,
               KL_EPOLICY, "CSR requests extension %s twice", tpl_obj_name(obj, b, sizeof b));
    }
    int nid = OBJ_obj2nid(obj);
    if (nid != NID_undef && tpl_nid_in(cx->t->csr_ext_ignored, nid)) {
        return KL_OK; /* tolerated, never copied */
    }
    if (tpl_ext_ca_writes(nid)) {
        return KL_OK; /* ours replaces it */
    }
    for (size_t k = 0; k < sizeof tpl_ext_checks / sizeof tpl_ext_checks[0]; k++) {
        if (tpl_ext_checks[k].nid == nid) {
            void *dec = X509V3_EXT_d2i(ext);
            ENSURE_SSL(dec, KL_EINPUT, "CSR extension %s cannot be decoded",
                       tpl_obj_name(obj, b, sizeof b));
            rc = tpl_ext_checks[k].check(cx, dec);
            ASN1_item_free(dec, ASN1_ITEM_ptr(X509V3_EXT_get_nid(nid)->it));
            return rc;
        }
    }
    ENSURE(0, KL_EPOLICY, "CSR requests %sextension %s which template %s does not allow",
           X509_EXTENSION_get_critical(ext) ? "critical " : "", tpl_obj_name(obj, b, sizeof b),
           cx->t->name);
out:
    return rc;
}

static kl_rc tpl_csr_extensions(const tpl *t, X509_REQ *csr, int key_type, const char *devid,
                                GENERAL_NAMES *sans)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    int n_req = 0;
    TRY(tpl_ext_req_count(csr, &n_req));
    if (n_req == 0) {
        return KL_OK;
    }
    exts = X509_REQ_get_extensions(csr);
    ENSURE_SSL(exts, KL_EINPUT, "CSR extensionRequest cannot be decoded");
    const tpl_ext_ctx cx = {
        .t = t,
        .ku_allowed = t->key_usage | (HSM_KEY_IS_RSA(key_type) ? t->key_usage_rsa : 0),
        .devid = devid,
        .sans = sans,
    };
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        TRY(tpl_csr_ext_check(&cx, exts, i));
    }
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/* ---- building ----------------------------------------------------------------------------- */

/* Replace every "{issuer}" in `url` with the issuing CA's label. */
static kl_rc tpl_url_expand(const char *url, const char *label, char *out, size_t outlen)
{
    static const char tag[] = "{issuer}";
    size_t n = 0;
    const char *s = url;
    while (*s) {
        const char *piece = s;
        size_t plen = 1;
        if (strncmp(s, tag, sizeof tag - 1) == 0) {
            if (!label || !*label) {
                return kl_fail(KL_EUSAGE,
                               "URL '%s' contains {issuer} but no issuer label was "
                               "given",
                               url);
            }
            piece = label;
            plen = strlen(label);
            s += sizeof tag - 1;
        } else {
            s++;
        }
        if (n + plen >= outlen) {
            return kl_fail(KL_EUSAGE, "URL '%s' is too long once expanded", url);
        }
        memcpy(out + n, piece, plen);
        n += plen;
    }
    out[n] = 0;
    const char *why = tpl_uri_problem((const unsigned char *)out, n);
    if (why) {
        return kl_fail(KL_EUSAGE, "URL '%s' %s", out, why);
    }
    return KL_OK;
}

static GENERAL_NAME *tpl_gen_uri(const char *uri)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!g || !s || ASN1_STRING_set(s, uri, (int)strlen(uri)) != 1) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(s);
        return NULL;
    }
    GENERAL_NAME_set0_value(g, GEN_URI, s);
    return g;
}

static kl_rc tpl_add_ext(X509 *x, int nid, void *value, int crit)
{
    if (X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_DEFAULT) != 1) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot add extension %s", OBJ_nid2sn(nid));
    }
    return KL_OK;
}

static kl_rc tpl_add_crl_dp(X509 *x, const char *uri)
{
    kl_rc rc = KL_OK;
    CRL_DIST_POINTS *cdp = sk_DIST_POINT_new_null();
    DIST_POINT *dp = DIST_POINT_new();
    GENERAL_NAME *g = tpl_gen_uri(uri);
    ENSURE(cdp && dp && g, KL_EINTERNAL, "out of memory");
    dp->distpoint = DIST_POINT_NAME_new();
    ENSURE(dp->distpoint, KL_EINTERNAL, "out of memory");
    dp->distpoint->type = 0; /* fullName */
    dp->distpoint->name.fullname = sk_GENERAL_NAME_new_null();
    ENSURE(dp->distpoint->name.fullname && sk_GENERAL_NAME_push(dp->distpoint->name.fullname, g),
           KL_EINTERNAL, "out of memory");
    g = NULL;
    ENSURE(sk_DIST_POINT_push(cdp, dp), KL_EINTERNAL, "out of memory");
    dp = NULL;
    TRY(tpl_add_ext(x, NID_crl_distribution_points, cdp, 0));
out:
    GENERAL_NAME_free(g);
    DIST_POINT_free(dp);
    sk_DIST_POINT_pop_free(cdp, DIST_POINT_free);
    return rc;
}

static kl_rc tpl_add_aia(X509 *x, const char *ocsp, const char *ca_issuers)
{
    kl_rc rc = KL_OK;
    AUTHORITY_INFO_ACCESS *aia = sk_ACCESS_DESCRIPTION_new_null();
    ENSURE(aia, KL_EINTERNAL, "out of memory");
    const char *urls[2] = {ocsp, ca_issuers};
    const int methods[2] = {NID_ad_OCSP, NID_ad_ca_issuers};
    for (int i = 0; i < 2; i++) {
        if (!urls[i]) {
            continue;
        }
        ACCESS_DESCRIPTION *ad = ACCESS_DESCRIPTION_new();
        ENSURE(ad, KL_EINTERNAL, "out of memory");
        ASN1_OBJECT_free(ad->method);
        ad->method = OBJ_nid2obj(methods[i]);
        GENERAL_NAME_free(ad->location);
        ad->location = tpl_gen_uri(urls[i]);
        if (!ad->location || !sk_ACCESS_DESCRIPTION_push(aia, ad)) {
            ACCESS_DESCRIPTION_free(ad);
            ENSURE(0, KL_EINTERNAL, "out of memory");
        }
    }
    if (sk_ACCESS_DESCRIPTION_num(aia) > 0) {
        TRY(tpl_add_ext(x, NID_info_access, aia, 0));
    }
out:
    sk_ACCESS_DESCRIPTION_pop_free(aia, ACCESS_DESCRIPTION_free);
    return rc;
}

static kl_rc tpl_add_key_usage(X509 *x, uint32_t bits, int crit)
{
    kl_rc rc = KL_OK;
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    ENSURE(ku, KL_EINTERNAL, "out of memory");
    for (int i = 0; i < 9; i++) {
        uint32_t flag = i < 8 ? (0x80u >> i) : 0x8000u;
        if (bits & flag) {
            ENSURE(ASN1_BIT_STRING_set_bit(ku, i, 1) == 1, KL_EINTERNAL, "out of memory");
        }
    }
    TRY(tpl_add_ext(x, NID_key_usage, ku, crit));
out:
    ASN1_BIT_STRING_free(ku);
    return rc;
}

static kl_rc tpl_add_ocsp_nocheck(X509 *x)
{
    /* RFC 6960 4.2.2.2.1: id-pkix-ocsp-nocheck, extnValue NULL */
    kl_rc rc = KL_OK;
    static const unsigned char null_der[] = {0x05, 0x00};
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    ENSURE(os && ASN1_OCTET_STRING_set(os, null_der, sizeof null_der) == 1, KL_EINTERNAL,
           "out of memory");
    ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_noCheck, 0, os);
    ENSURE_SSL(ext && X509_add_ext(x, ext, -1) == 1, KL_EINTERNAL, "cannot add ocsp-nocheck");
out:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    return rc;
}

/* Validity. notBefore = now - backdate, but never before the issuer's notBefore. notAfter =
 * now + days, clamped to the issuer's notAfter (RFC 5280 6.1.3 checks every certificate of
 * the path for validity at the time of use, so a child outliving its issuer only fails
 * later and more confusingly). 'forever' templates get 99991231235959Z whatever the issuer's
 * notAfter: IEEE 802.1AR-2018 8.5 "the notAfter value SHOULD be assigned the GeneralizedTime
 * value of 99991231235959Z" for IDevIDs, which are expected to outlive any CA; tpl_lint
 * allows exactly this exception. */
static kl_rc tpl_set_validity(const tpl *t, X509 *x, X509 *issuer, time_t now)
{
    kl_rc rc = KL_OK;
    ASN1_TIME *nb = NULL, *na = NULL;
    time_t not_before = now - t->backdate_secs;
    time_t inb = 0, ina = 0;
    if (issuer) {
        TRY(tpl_asn1_time_to_time_t(X509_get0_notBefore(issuer), &inb));
        TRY(tpl_asn1_time_to_time_t(X509_get0_notAfter(issuer), &ina));
        ENSURE(ina > now, KL_EPOLICY, "the issuing CA has expired");
        ENSURE(inb <= now, KL_EPOLICY, "the issuing CA is not valid yet");
        if (not_before < inb) {
            not_before = inb;
        }
    }
    nb = ASN1_TIME_set(NULL, not_before);
    ENSURE_SSL(nb, KL_EINTERNAL, "cannot encode notBefore");
    if (t->validity_forever) {
        na = ASN1_GENERALIZEDTIME_new();
        ENSURE(na && ASN1_GENERALIZEDTIME_set_string(na, TPL_NOTAFTER_FOREVER) == 1, KL_EINTERNAL,
               "cannot encode notAfter");
    } else {
        time_t not_after = now + (time_t)t->validity_days * 86400;
        if (issuer && not_after > ina) {
            not_after = ina;
        }
        ENSURE(not_after > not_before, KL_EPOLICY,
               "no room for a certificate inside the issuing CA's validity");
        na = ASN1_TIME_set(NULL, not_after);
        ENSURE_SSL(na, KL_EINTERNAL, "cannot encode notAfter");
    }
    ENSURE_SSL(X509_set1_notBefore(x, nb) == 1 && X509_set1_notAfter(x, na) == 1, KL_EINTERNAL,
               "cannot set validity");
out:
    ASN1_TIME_free(nb);
    ASN1_TIME_free(na);
    return rc;
}

/* The certificate's subjectPublicKeyInfo = the CSR's key, on its named curve, as an
 * uncompressed point (tpl_csr_encoding_check refused every other EC encoding, and re-encodes
 * nothing but a compressed point). X509_set_pubkey() with the provider key that d2i_X509_REQ
 * made costs ~140 us in OpenSSL 3.0 (an OSSL_ENCODER to DER, then a full OSSL_DECODER pass of
 * that DER, whose result it throws away). For EC keys a legacy EC_KEY copy takes the old
 * pub_encode path (~4 us). An uncompressed key must encode exactly the CSR's
 * SubjectPublicKeyInfo, a compressed one the same key uncompressed; otherwise nothing is
 * built. Other key types take the slow path. */
static int tpl_set_pubkey(X509 *x, X509_REQ *csr, EVP_PKEY *pkey, int kt)
{
    if (kt != HSM_KEY_EC_P256 && kt != HSM_KEY_EC_P384) {
        return X509_set_pubkey(x, pkey);
    }
    const unsigned char *a = NULL, *b = NULL;
    int alen = 0, blen = 0;
    X509_ALGOR *aa = NULL, *ba = NULL;
    if (X509_PUBKEY_get0_param(NULL, &b, &blen, &ba, X509_REQ_get_X509_PUBKEY(csr)) != 1 ||
        blen < 1) {
        return 0;
    }
    int compressed = b[0] != 0x04;
    /* the CSR's key object is shared (a borrowed ca_csr): a compressed one is copied before
     * its encoding form is changed */
    const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pkey);
    EC_KEY *ec = !src ? NULL : compressed ? EC_KEY_dup(src) : EVP_PKEY_get1_EC_KEY(pkey);
    EVP_PKEY *legacy = ec ? EVP_PKEY_new() : NULL;
    int ok = legacy && EVP_PKEY_assign_EC_KEY(legacy, ec) == 1;
    if (!ok) {
        EC_KEY_free(ec);
    }
    if (ok && compressed) {
        EC_KEY_set_conv_form(ec, POINT_CONVERSION_UNCOMPRESSED);
        EC_KEY_set_asn1_flag(ec, OPENSSL_EC_NAMED_CURVE);
    }
    ok = ok && X509_set_pubkey(x, legacy) == 1 &&
         X509_PUBKEY_get0_param(NULL, &a, &alen, &aa, X509_get_X509_PUBKEY(x)) == 1 &&
         X509_ALGOR_cmp(aa, ba) == 0 && alen > 0 && a[0] == 0x04 &&
         (compressed ? EVP_PKEY_eq(X509_get0_pubkey(x), pkey) == 1
                     : alen == blen && memcmp(a, b, (size_t)alen) == 0);
    EVP_PKEY_free(legacy);
    if (!ok) {
        ERR_clear_error();
    }
    return ok;
}

/* The issuer must be a CA allowed to have a CA below it when the template is a CA. */
static kl_rc tpl_issuer_check(const tpl *t, X509 *issuer)
{
    kl_rc rc = KL_OK;
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(issuer, NID_basic_constraints, &crit, NULL);
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(issuer, NID_key_usage, &crit, NULL);
    ENSURE(bc && bc->ca, KL_EPOLICY, "the issuer certificate is not a CA (basicConstraints)");
    ENSURE(!ku || (tpl_ku_bits(ku) & X509v3_KU_KEY_CERT_SIGN), KL_EPOLICY,
           "the issuer certificate has no keyCertSign");
    if (t->is_ca && bc->pathlen) {
        long pl = ASN1_INTEGER_get(bc->pathlen);
        ENSURE(pl > 0, KL_EPOLICY,
               "the issuing CA has pathLenConstraint 0: it cannot issue template %s (a CA)",
               t->name);
        ENSURE(t->path_len >= 0 && t->path_len < pl, KL_EPOLICY,
               "template %s's path-len does not fit under the issuer's pathLenConstraint %ld",
               t->name, pl);
    }
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    return rc;
}

/* The request itself: within the template's size limit, encoded as PKIX allows, with a key type
 * the template allows, under an issuer that may issue it. *pkey (borrowed from the CSR) and *kt
 * get its key. */
static kl_rc tpl_csr_admit(const tpl_policy_in *in, EVP_PKEY **pkey, int *kt)
{
    kl_rc rc = KL_OK;
    const tpl *t = in->t;
    char kname[64], allowed[128];
    /* size: the caller has it as DER already and should check first; this is the backstop
     * (re-encoding only when the caller did not pass the size: ~5 us per CSR) */
    int der_len = in->csr_der_len > 0 && in->csr_der_len <= INT_MAX ? (int)in->csr_der_len
                                                                    : i2d_X509_REQ(in->csr, NULL);
    ENSURE_SSL(der_len > 0, KL_EINPUT, "CSR cannot be encoded");
    ENSURE(t->max_csr_bytes <= 0 || der_len <= t->max_csr_bytes, KL_EPOLICY,
           "CSR of %d bytes exceeds template %s's limit of %d", der_len, t->name, t->max_csr_bytes);

    TRY(tpl_csr_encoding_check(in->csr));
    *pkey = X509_REQ_get0_pubkey(in->csr);
    ENSURE_SSL(*pkey, KL_EINPUT, "CSR public key cannot be decoded");
    *kt = tpl_key_type_of(*pkey, kname, sizeof kname);
    if (*kt < 0 || !(t->key_types & (1u << *kt))) {
        tpl_key_types_str(t->key_types, allowed, sizeof allowed);
        ENSURE(0, KL_EPOLICY, "key type %s not allowed by template %s (allowed: %s)", kname,
               t->name, allowed);
    }
    if (in->issuer_cert) {
        TRY(tpl_issuer_check(t, in->issuer_cert));
    }
out:
    return rc;
}

/* The subject, from the CSR or (when the template takes it from the request) the caller. */
static kl_rc tpl_subject_pick(const tpl_policy_in *in, X509_NAME **subject, char *devid,
                              size_t devid_len)
{
    kl_rc rc = KL_OK;
    const tpl *t = in->t;
    const X509_NAME *src = X509_REQ_get_subject_name(in->csr);
    if (t->subject_src == TPL_SUBJECT_FROM_REQUEST) {
        if (in->subject) {
            src = in->subject;
        }
    } else {
        ENSURE(!in->subject, KL_EUSAGE,
               "template %s takes the subject from the CSR; a subject cannot be given", t->name);
    }
    TRY(tpl_subject_build(t, src, in->device_id, subject, devid, devid_len));
    if (t->matter) {
        TRY(matter_policy_check(t, *subject, in->issuer_cert));
    }
out:
    return rc;
}

/* The SANs: the CSR's checked ones, then the HardwareModuleName we build; the template's
 * required kinds present, and something to name the subject by. */
static kl_rc tpl_sans_collect(const tpl_policy_in *in, int kt, const char *devid,
                              const X509_NAME *subject, GENERAL_NAMES *sans)
{
    kl_rc rc = KL_OK;
    const tpl *t = in->t;
    TRY(tpl_csr_extensions(t, in->csr, kt, devid, sans));
    if (t->san_hmn) {
        /* serial_number_from_device is required with hmn (tpl_load), so devid is set */
        GENERAL_NAME *g = tpl_hmn_build(t->hmn_type_oid, devid);
        ENSURE(g, KL_EINTERNAL, "cannot build HardwareModuleName");
        if (!sk_GENERAL_NAME_push(sans, g)) {
            GENERAL_NAME_free(g);
            ENSURE(0, KL_EINTERNAL, "out of memory");
        }
    }
    if (t->san_required) {
        int found = 0;
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            found |= (tpl_san_kind(g) & t->san_required) != 0;
        }
        ENSURE(found, KL_EPOLICY, "template %s requires a subjectAltName in the CSR", t->name);
    }
    ENSURE(X509_NAME_entry_count(subject) != 0 || sk_GENERAL_NAME_num(sans) > 0, KL_EPOLICY,
           "the subject is empty and there is no subjectAltName");
out:
    return rc;
}

/* RFC 5280 4.2.1.9: CAs MUST mark basicConstraints critical; 802.1AR wants CA:FALSE on device
 * certificates, and a critical CA:FALSE is harmless everywhere. */
static kl_rc tpl_add_basic_constraints(X509 *x, const tpl *t)
{
    kl_rc rc = KL_OK;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ENSURE(bc, KL_EINTERNAL, "out of memory");
    bc->ca = t->is_ca ? 0xff : 0;
    if (t->is_ca && t->path_len >= 0) {
        bc->pathlen = ASN1_INTEGER_new();
        ENSURE(bc->pathlen && ASN1_INTEGER_set(bc->pathlen, t->path_len) == 1, KL_EINTERNAL,
               "out of memory");
    }
    TRY(tpl_add_ext(x, NID_basic_constraints, bc, 1));
out:
    BASIC_CONSTRAINTS_free(bc);
    return rc;
}

static kl_rc tpl_add_eku(X509 *x, const tpl *t)
{
    kl_rc rc = KL_OK;
    EXTENDED_KEY_USAGE *eku = NULL;
    if (!t->eku[0]) {
        return KL_OK;
    }
    eku = sk_ASN1_OBJECT_new_null();
    ENSURE(eku, KL_EINTERNAL, "out of memory");
    for (const int *e = t->eku; *e; e++) {
        ENSURE(sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(*e)), KL_EINTERNAL, "out of memory");
    }
    TRY(tpl_add_ext(x, NID_ext_key_usage, eku, 0));
out:
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    return rc;
}

/* subjectKeyIdentifier, then RFC 5280 4.2.1.1: keyIdentifier = the issuer's SKI (computed the
 * same way when an external issuer lacks one). On a self-signed root it repeats its own SKI. */
static kl_rc tpl_add_key_ids(X509 *x, X509 *issuer)
{
    kl_rc rc = KL_OK;
    ASN1_OCTET_STRING *ski = NULL;
    AUTHORITY_KEYID *akid = NULL;
    unsigned char md[20];
    ENSURE_SSL(tpl_ski_sha1(x, md), KL_EINTERNAL, "cannot hash the public key");
    ski = ASN1_OCTET_STRING_new();
    ENSURE(ski && ASN1_OCTET_STRING_set(ski, md, sizeof md) == 1, KL_EINTERNAL, "out of memory");
    TRY(tpl_add_ext(x, NID_subject_key_identifier, ski, 0));

    akid = AUTHORITY_KEYID_new();
    ENSURE(akid, KL_EINTERNAL, "out of memory");
    if (issuer) {
        /* read the extension itself, not OpenSSL's per-X509 cache of it */
        ASN1_OCTET_STRING *iski = X509_get_ext_d2i(issuer, NID_subject_key_identifier, NULL, NULL);
        if (iski) {
            akid->keyid = iski;
        } else {
            unsigned char imd[20];
            ENSURE_SSL(tpl_ski_sha1(issuer, imd), KL_EINTERNAL, "cannot hash the public key");
            akid->keyid = ASN1_OCTET_STRING_new();
            if (akid->keyid && ASN1_OCTET_STRING_set(akid->keyid, imd, sizeof imd) != 1) {
                ASN1_OCTET_STRING_free(akid->keyid);
                akid->keyid = NULL;
            }
        }
    } else {
        akid->keyid = ASN1_OCTET_STRING_dup(ski);
    }
    ENSURE(akid->keyid, KL_EINTERNAL, "out of memory");
    TRY(tpl_add_ext(x, NID_authority_key_identifier, akid, 0));
out:
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID_free(akid);
    return rc;
}

/* CRL distribution point, AIA and id-pkix-ocsp-nocheck, as the template and the configured URLs
 * ask. */
static kl_rc tpl_add_urls(X509 *x, const tpl_policy_in *in)
{
    kl_rc rc = KL_OK;
    const tpl *t = in->t;
    char url1[TPL_MAX_URL + 1], url2[TPL_MAX_URL + 1], url3[TPL_MAX_URL + 1];
    if (t->crl_dp && in->crl_url && *in->crl_url) {
        TRY(tpl_url_expand(in->crl_url, in->issuer_label, url1, sizeof url1));
        TRY(tpl_add_crl_dp(x, url1));
    }
    const char *ocsp = NULL, *cai = NULL;
    if (t->aia_ocsp && in->ocsp_url && *in->ocsp_url) {
        TRY(tpl_url_expand(in->ocsp_url, in->issuer_label, url2, sizeof url2));
        ocsp = url2;
    }
    if (t->aia_ca_issuers && in->ca_issuers_url && *in->ca_issuers_url) {
        TRY(tpl_url_expand(in->ca_issuers_url, in->issuer_label, url3, sizeof url3));
        cai = url3;
    }
    if (ocsp || cai) {
        TRY(tpl_add_aia(x, ocsp, cai));
    }
    if (t->ocsp_nocheck) {
        TRY(tpl_add_ocsp_nocheck(x));
    }
out:
    return rc;
}

kl_rc tpl_policy_build(const tpl_policy_in *in, const ASN1_INTEGER *serial, X509 **tbs_out)
{
    kl_rc rc = KL_OK;
    X509 *x = NULL;
    X509_NAME *subject = NULL;
    GENERAL_NAMES *sans = NULL;
    char devid[TPL_DEVID_MAX + 1];
    EVP_PKEY *pkey = NULL;
    int kt = -1;

    ENSURE(tbs_out, KL_EUSAGE, "tpl_policy_build: no output");
    *tbs_out = NULL;
    ENSURE(in && in->t && in->csr && serial, KL_EUSAGE,
           "tpl_policy_build: template, CSR and serial are required");
    const tpl *t = in->t;
    time_t now = in->now ? in->now : time(NULL);
    X509 *issuer = in->issuer_cert;
    TRY(tpl_csr_admit(in, &pkey, &kt));
    TRY(tpl_subject_pick(in, &subject, devid, sizeof devid));
    sans = sk_GENERAL_NAME_new_null();
    ENSURE(sans, KL_EINTERNAL, "out of memory");
    TRY(tpl_sans_collect(in, kt, devid, subject, sans));

    x = X509_new();
    ENSURE(x, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(X509_set_version(x, X509_VERSION_3) == 1 &&
                   X509_set_serialNumber(x, (ASN1_INTEGER *)serial) == 1 /* copies */ &&
                   X509_set_subject_name(x, subject) == 1 &&
                   X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) == 1 &&
                   tpl_set_pubkey(x, in->csr, pkey, kt) == 1,
               KL_EINTERNAL, "cannot build the certificate");
    TRY(tpl_set_validity(t, x, issuer, now));
    TRY(tpl_add_basic_constraints(x, t));
    TRY(tpl_add_key_usage(x, t->key_usage | (HSM_KEY_IS_RSA(kt) ? t->key_usage_rsa : 0),
                          t->key_usage_critical));
    TRY(tpl_add_eku(x, t));
    TRY(tpl_add_key_ids(x, issuer));
    if (sk_GENERAL_NAME_num(sans) > 0) {
        /* RFC 5280 4.2.1.6: with an empty subject, subjectAltName MUST be critical */
        TRY(tpl_add_ext(x, NID_subject_alt_name, sans, X509_NAME_entry_count(subject) == 0));
    }
    TRY(tpl_add_urls(x, in));
    *tbs_out = x;
    x = NULL;
out:
    X509_free(x);
    X509_NAME_free(subject);
    sk_GENERAL_NAME_pop_free(sans, GENERAL_NAME_free);
    return rc;
}
