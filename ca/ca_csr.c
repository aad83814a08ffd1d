/* keyline: CSR loading with proof of possession (ca_csr_load), and the check of what our CAs
 * sign (ca_signed_der_verify), both with a fast path for EC.
 *
 * OpenSSL 3.0 decodes the SubjectPublicKeyInfo of every d2i_X509_REQ through a freshly built
 * OSSL_DECODER context that enumerates all decoders of all providers, and verifies through a
 * provider key: ~240 us per P-256 CSR here (parse + verify), of which the ECDSA verification is
 * ~40 us. For the common case, EC P-256/P-384 keys signed with ECDSA, this file walks the DER
 * itself, builds the key on OpenSSL's EC_KEY code with a cached group, verifies the signature on
 * the exact CertificationRequestInfo bytes, and assembles the X509_REQ from its parsed parts.
 * The result is accepted only if it encodes back to exactly the input bytes, i.e. the object
 * handed on is the one the signature covers. Anything else (RSA, other curves or algorithms,
 * BER or unusual encodings) takes the plain d2i_X509_REQ + X509_REQ_verify path; both paths
 * give the same answers (tests/unit/ca, fuzz/fuzz_csr.c). ca_signed_der_verify checks a
 * signature the HSM just made, over the DER that will be recorded and released, the same way
 * (~45 us instead of ~80 us for X509_verify on the object). */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ca_csr.h"

/* --- a minimal DER reader (definite lengths only) --- */

typedef struct {
    int tag;            /* the identifier octet (single-octet tags only) */
    const uint8_t *tlv; /* start of the whole TLV */
    size_t tlv_len;     /* length of the whole TLV */
    const uint8_t *val; /* contents */
    size_t len;         /* contents length */
} csr_tlv;

/* Read one TLV at *p (not beyond end); advance *p past it. 0 on malformed input. */
static int csr_next(const uint8_t **p, const uint8_t *end, csr_tlv *t)
{
    const uint8_t *s = *p;
    if (end - s < 2 || (s[0] & 0x1f) == 0x1f) {
        return 0;
    }
    t->tag = s[0];
    t->tlv = s;
    size_t len = s[1], hdr = 2;
    if (len & 0x80) {
        size_t n = len & 0x7f;
        if (n == 0 || n > 3 || (size_t)(end - s) < 2 + n) {
            return 0; /* indefinite or absurd lengths: not for the fast path */
        }
        len = 0;
        for (size_t i = 0; i < n; i++) {
            len = (len << 8) | s[2 + i];
        }
        hdr += n;
    }
    if ((size_t)(end - s) - hdr < len) {
        return 0;
    }
    t->val = s + hdr;
    t->len = len;
    t->tlv_len = hdr + len;
    *p = s + hdr + len;
    return 1;
}

/* An OID TLV equal to the DER of `nid`'s object. */
static int csr_oid_is(const csr_tlv *t, int nid)
{
    const ASN1_OBJECT *o = OBJ_nid2obj(nid);
    size_t n = o ? OBJ_length(o) : 0;
    return t->tag == 0x06 && n > 0 && t->len == n && memcmp(t->val, OBJ_get0_data(o), n) == 0;
}

/* A SIGNED{...} structure (RFC 5280 / RFC 2986): SEQUENCE { to-be-signed SEQUENCE,
 * AlgorithmIdentifier, BIT STRING } making up all of der. 0 if not exactly that. */
static int csr_signed(const uint8_t *der, size_t len, csr_tlv *tbs, csr_tlv *alg, csr_tlv *sig)
{
    const uint8_t *p = der, *end = der + len;
    csr_tlv outer;
    if (!csr_next(&p, end, &outer) || outer.tag != 0x30 || p != end) {
        return 0;
    }
    p = outer.val;
    end = outer.val + outer.len;
    return csr_next(&p, end, tbs) && tbs->tag == 0x30 && csr_next(&p, end, alg) &&
           alg->tag == 0x30 && csr_next(&p, end, sig) && sig->tag == 0x03 && p == end;
}

/* --- cached curves and digests --- */

static EC_GROUP *csr_groups[2]; /* P-256, P-384 */
static EVP_MD *csr_mds[3];      /* SHA-256, SHA-384, SHA-512 */
static int csr_ready;

static pthread_once_t csr_once = PTHREAD_ONCE_INIT; /* one for every user of csr_init */

static void csr_init(void)
{
    csr_groups[0] = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    csr_groups[1] = EC_GROUP_new_by_curve_name(NID_secp384r1);
    csr_mds[0] = EVP_MD_fetch(NULL, "SHA256", NULL);
    csr_mds[1] = EVP_MD_fetch(NULL, "SHA384", NULL);
    csr_mds[2] = EVP_MD_fetch(NULL, "SHA512", NULL);
    csr_ready = csr_groups[0] && csr_groups[1] && csr_mds[0] && csr_mds[1] && csr_mds[2];
    ERR_clear_error();
}

/* An EC public key (P-256/P-384, named curve) from a SubjectPublicKeyInfo TLV, as a legacy
 * EVP_PKEY (its encoding back to SPKI takes OpenSSL's old, fast path). 1: *out set. 0: not
 * such a key, or not a point on the curve (EC_KEY_oct2key checks). */
static int csr_spki_ec(const csr_tlv *spki, EVP_PKEY **out)
{
    const uint8_t *p = spki->val, *end = spki->val + spki->len;
    csr_tlv alg, keybits, kalg, kcurve;
    if (spki->tag != 0x30 || !csr_next(&p, end, &alg) || alg.tag != 0x30 ||
        !csr_next(&p, end, &keybits) || keybits.tag != 0x03 || keybits.len < 2 ||
        keybits.val[0] != 0 || p != end) {
        return 0;
    }
    p = alg.val;
    end = alg.val + alg.len;
    if (!csr_next(&p, end, &kalg) || !csr_oid_is(&kalg, NID_X9_62_id_ecPublicKey) ||
        !csr_next(&p, end, &kcurve) || p != end) {
        return 0;
    }
    const EC_GROUP *grp = csr_oid_is(&kcurve, NID_X9_62_prime256v1) ? csr_groups[0]
                          : csr_oid_is(&kcurve, NID_secp384r1)      ? csr_groups[1]
                                                                    : NULL;
    EC_KEY *ec = grp ? EC_KEY_new() : NULL;
    EVP_PKEY *pk = ec ? EVP_PKEY_new() : NULL;
    if (!pk || EC_KEY_set_group(ec, grp) != 1 ||
        EC_KEY_oct2key(ec, keybits.val + 1, keybits.len - 1, NULL) != 1 ||
        EVP_PKEY_assign_EC_KEY(pk, ec) != 1) {
        EVP_PKEY_free(pk);
        EC_KEY_free(ec);
        return 0;
    }
    *out = pk;
    return 1;
}

/* The fast path. 1: *out is the verified request. 0: not for the fast path (nothing set; the
 * caller takes the general path). -1: the signature does not verify (error set). */
static int csr_load_ec(const uint8_t *der, size_t len, X509_REQ **out)
{
    pthread_once(&csr_once, csr_init);
    if (!csr_ready) {
        return 0;
    }
    csr_tlv cri, sigalg, sig, ver, subj, spki, attrs, sigoid;
    if (!csr_signed(der, len, &cri, &sigalg, &sig)) {
        return 0;
    }
    const uint8_t *p = cri.val, *end = cri.val + cri.len;
    if (!csr_next(&p, end, &ver) || ver.tag != 0x02 || ver.len != 1 || ver.val[0] != 0 ||
        !csr_next(&p, end, &subj) || subj.tag != 0x30 || !csr_next(&p, end, &spki) ||
        spki.tag != 0x30 || !csr_next(&p, end, &attrs) || attrs.tag != 0xa0 || p != end) {
        return 0;
    }
    /* signatureAlgorithm: ecdsa-with-SHA256/384/512, parameters absent (RFC 5758) */
    p = sigalg.val;
    end = sigalg.val + sigalg.len;
    if (!csr_next(&p, end, &sigoid) || p != end || sig.len < 2 || sig.val[0] != 0) {
        return 0;
    }
    const EVP_MD *md = csr_oid_is(&sigoid, NID_ecdsa_with_SHA256)   ? csr_mds[0]
                       : csr_oid_is(&sigoid, NID_ecdsa_with_SHA384) ? csr_mds[1]
                       : csr_oid_is(&sigoid, NID_ecdsa_with_SHA512) ? csr_mds[2]
                                                                    : NULL;
    if (!md) {
        return 0;
    }

    int ret = 0;
    EVP_PKEY *pk = NULL;
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    X509_ALGOR *salg = NULL;
    ASN1_BIT_STRING *sbits = NULL;
    unsigned char *enc = NULL;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    /* the key: a point on the curve */
    if (!csr_spki_ec(&spki, &pk)) {
        goto out;
    }
    /* proof of possession over the exact CertificationRequestInfo bytes */
    if (EVP_Digest(cri.tlv, cri.tlv_len, dgst, &dlen, md, NULL) != 1) {
        goto out;
    }
    if (ECDSA_verify(0, dgst, (int)dlen, sig.val + 1, (int)(sig.len - 1),
                     (EC_KEY *)EVP_PKEY_get0_EC_KEY(pk)) != 1) {
        ret = -1;
        goto out;
    }
    /* the request object from its parts */
    const unsigned char *q = subj.tlv;
    req = X509_REQ_new();
    name = d2i_X509_NAME(NULL, &q, (long)subj.tlv_len);
    if (!req || !name || q != subj.tlv + subj.tlv_len || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, pk) != 1) {
        goto out;
    }
    for (p = attrs.val, end = attrs.val + attrs.len; p < end;) {
        csr_tlv a;
        if (!csr_next(&p, end, &a)) {
            goto out;
        }
        q = a.tlv;
        X509_ATTRIBUTE *at = d2i_X509_ATTRIBUTE(NULL, &q, (long)a.tlv_len);
        int ok = at && q == a.tlv + a.tlv_len && X509_REQ_add1_attr(req, at) == 1;
        X509_ATTRIBUTE_free(at);
        if (!ok) {
            goto out;
        }
    }
    q = sigalg.tlv;
    salg = d2i_X509_ALGOR(NULL, &q, (long)sigalg.tlv_len);
    if (!salg || X509_REQ_set1_signature_algo(req, salg) != 1) {
        goto out;
    }
    q = sig.tlv;
    sbits = d2i_ASN1_BIT_STRING(NULL, &q, (long)sig.tlv_len);
    if (!sbits) {
        goto out;
    }
    X509_REQ_set0_signature(req, sbits);
    sbits = NULL;
    /* only if it is, byte for byte, what was signed */
    int n = i2d_X509_REQ(req, &enc);
    if (n < 0 || (size_t)n != len || memcmp(enc, der, len) != 0) {
        goto out;
    }
    *out = req;
    req = NULL;
    ret = 1;
out:
    if (ret == 0) {
        ERR_clear_error(); /* the general path decides and reports */
    } else if (ret < 0) {
        kl_fail_ssl(KL_EINPUT, "CSR signature does not verify (no proof of possession)");
    }
    OPENSSL_free(enc);
    ASN1_BIT_STRING_free(sbits);
    X509_ALGOR_free(salg);
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(pk);
    return ret;
}

/* --- signatures made by our CAs, checked on the bytes that are released --- */

kl_rc ca_signed_der_verify(const uint8_t *der, size_t len, EVP_PKEY *pub)
{
    pthread_once(&csr_once, csr_init);
    kl_rc rc = KL_OK;
    csr_tlv tbs, alg, sig, oid;
    X509 *x = NULL;
    ENSURE(der && len > 0 && pub, KL_EINTERNAL, "nothing to verify");
    ENSURE(csr_signed(der, len, &tbs, &alg, &sig) && sig.len >= 2 && sig.val[0] == 0, KL_EHSM,
           "signed structure is not DER");
    const uint8_t *p = alg.val, *end = alg.val + alg.len;
    const EVP_MD *md = NULL;
    if (csr_ready && csr_next(&p, end, &oid) && p == end) {
        md = csr_oid_is(&oid, NID_ecdsa_with_SHA256)   ? csr_mds[0]
             : csr_oid_is(&oid, NID_ecdsa_with_SHA384) ? csr_mds[1]
             : csr_oid_is(&oid, NID_ecdsa_with_SHA512) ? csr_mds[2]
                                                       : NULL;
    }
    const EC_KEY *ec =
        md && EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? EVP_PKEY_get0_EC_KEY(pub) : NULL;
    if (ec) {
        unsigned char dgst[EVP_MAX_MD_SIZE];
        unsigned int dlen = 0;
        ENSURE_SSL(EVP_Digest(tbs.tlv, tbs.tlv_len, dgst, &dlen, md, NULL) == 1, KL_EINTERNAL,
                   "digest");
        ENSURE_SSL(
            ECDSA_verify(0, dgst, (int)dlen, sig.val + 1, (int)(sig.len - 1), (EC_KEY *)ec) == 1,
            KL_EHSM, "HSM produced a signature that does not verify");
        goto out;
    }
    /* RSA and anything else: OpenSSL's general path on the same bytes */
    p = der;
    x = d2i_X509(NULL, &p, (long)len);
    ENSURE_SSL(x && p == der + len, KL_EHSM, "signed certificate does not parse");
    ENSURE_SSL(X509_verify(x, pub) == 1, KL_EHSM, "HSM produced a signature that does not verify");
out:
    X509_free(x);
    return rc;
}

/* --- certificates: the same approach for X.509 (client certificates in keyline-estd) --- */

/* 1: *out is the certificate. 0: not for the fast path (v1/v2, unique IDs, non-EC keys, BER,
 * anything that does not re-encode to the input): the caller uses d2i_X509. No signature is
 * checked here: d2i_X509 does not either. */
static int x509_load_ec(const uint8_t *der, size_t len, X509 **out)
{
    pthread_once(&csr_once, csr_init);
    if (!csr_ready) {
        return 0;
    }
    csr_tlv tbs, sigalg, sig, ver, vint, serial, tsigalg, issuer, validity, subj, spki, exts;
    csr_tlv nb, na;
    if (!csr_signed(der, len, &tbs, &sigalg, &sig)) {
        return 0;
    }
    const uint8_t *p = tbs.val, *end = tbs.val + tbs.len;
    /* v3 only: [0] EXPLICIT INTEGER 2 */
    if (!csr_next(&p, end, &ver) || ver.tag != 0xa0) {
        return 0;
    }
    const uint8_t *vp = ver.val;
    if (!csr_next(&vp, ver.val + ver.len, &vint) || vint.tag != 0x02 || vint.len != 1 ||
        vint.val[0] != 2 || vp != ver.val + ver.len) {
        return 0;
    }
    if (!csr_next(&p, end, &serial) || serial.tag != 0x02 || !csr_next(&p, end, &tsigalg) ||
        tsigalg.tag != 0x30 || !csr_next(&p, end, &issuer) || issuer.tag != 0x30 ||
        !csr_next(&p, end, &validity) || validity.tag != 0x30 || !csr_next(&p, end, &subj) ||
        subj.tag != 0x30 || !csr_next(&p, end, &spki) || !csr_next(&p, end, &exts) ||
        exts.tag != 0xa3 || p != end) {
        return 0;
    }
    const uint8_t *tp = validity.val, *tend = validity.val + validity.len;
    if (!csr_next(&tp, tend, &nb) || !csr_next(&tp, tend, &na) || tp != tend) {
        return 0;
    }
    int ret = 0;
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    ASN1_INTEGER *sn = NULL;
    X509_ALGOR *a1 = NULL, *a2 = NULL;
    X509_NAME *in = NULL, *sub = NULL;
    ASN1_TIME *t1 = NULL, *t2 = NULL;
    ASN1_BIT_STRING *bits = NULL;
    unsigned char *enc = NULL;
    const unsigned char *q;
    if (!csr_spki_ec(&spki, &pk)) {
        goto out;
    }
#define X509_D2I(var, fn, t)                                                                       \
    (q = (t).tlv, (var) = fn(NULL, &q, (long)(t).tlv_len),                                         \
     (var) != NULL && q == (t).tlv + (t).tlv_len)
    if (!X509_D2I(sn, d2i_ASN1_INTEGER, serial) || !X509_D2I(a1, d2i_X509_ALGOR, tsigalg) ||
        !X509_D2I(in, d2i_X509_NAME, issuer) || !X509_D2I(t1, d2i_ASN1_TIME, nb) ||
        !X509_D2I(t2, d2i_ASN1_TIME, na) || !X509_D2I(sub, d2i_X509_NAME, subj) ||
        !X509_D2I(a2, d2i_X509_ALGOR, sigalg) || !X509_D2I(bits, d2i_ASN1_BIT_STRING, sig)) {
        goto out;
    }
    x = X509_new();
    const ASN1_BIT_STRING *psig = NULL;
    const X509_ALGOR *palg = NULL;
    if (!x || X509_set_version(x, 2) != 1 || X509_set_serialNumber(x, sn) != 1 ||
        X509_ALGOR_copy((X509_ALGOR *)X509_get0_tbs_sigalg(x), a1) != 1 ||
        X509_set_issuer_name(x, in) != 1 || X509_set1_notBefore(x, t1) != 1 ||
        X509_set1_notAfter(x, t2) != 1 || X509_set_subject_name(x, sub) != 1 ||
        X509_set_pubkey(x, pk) != 1) {
        goto out;
    }
    /* extensions: [3] EXPLICIT SEQUENCE OF Extension */
    csr_tlv list;
    const uint8_t *ep = exts.val;
    if (!csr_next(&ep, exts.val + exts.len, &list) || list.tag != 0x30 ||
        ep != exts.val + exts.len) {
        goto out;
    }
    for (ep = list.val; ep < list.val + list.len;) {
        csr_tlv e;
        X509_EXTENSION *xe = NULL;
        if (!csr_next(&ep, list.val + list.len, &e) || !X509_D2I(xe, d2i_X509_EXTENSION, e) ||
            X509_add_ext(x, xe, -1) != 1) {
            X509_EXTENSION_free(xe);
            goto out;
        }
        X509_EXTENSION_free(xe);
    }
#undef X509_D2I
    /* the outer signature algorithm and value: the object's own fields, set in place */
    X509_get0_signature(&psig, &palg, x);
    if (X509_ALGOR_copy((X509_ALGOR *)palg, a2) != 1 ||
        ASN1_STRING_copy((ASN1_BIT_STRING *)psig, bits) != 1) {
        goto out;
    }
    int n = i2d_X509(x, &enc);
    if (n < 0 || (size_t)n != len || memcmp(enc, der, len) != 0) {
        goto out;
    }
    *out = x;
    x = NULL;
    ret = 1;
out:
    if (!ret) {
        ERR_clear_error();
    }
    OPENSSL_free(enc);
    ASN1_BIT_STRING_free(bits);
    ASN1_TIME_free(t1);
    ASN1_TIME_free(t2);
    X509_NAME_free(in);
    X509_NAME_free(sub);
    X509_ALGOR_free(a1);
    X509_ALGOR_free(a2);
    ASN1_INTEGER_free(sn);
    X509_free(x);
    EVP_PKEY_free(pk);
    return ret;
}

kl_rc ca_x509_load(const uint8_t *der, size_t len, X509 **out, int *fast)
{
    kl_rc rc = KL_OK;
    X509 *x = NULL;
    *out = NULL;
    if (fast) {
        *fast = 0;
    }
    ENSURE(der && len > 0 && len <= LONG_MAX, KL_EINPUT, "empty or oversized certificate");
    if (x509_load_ec(der, len, out)) {
        if (fast) {
            *fast = 1;
        }
        return KL_OK;
    }
    const unsigned char *p = der;
    x = d2i_X509(NULL, &p, (long)len);
    ENSURE_SSL(x && p == der + len, KL_EINPUT, "not a DER X.509 certificate");
    *out = x;
    x = NULL;
out:
    X509_free(x);
    return rc;
}

struct ca_csr {
    X509_REQ *req;
    int fast; /* loaded by csr_load_ec */
};

kl_rc ca_csr_load(const uint8_t *der, size_t len, ca_csr **out)
{
    kl_rc rc = KL_OK;
    X509_REQ *req = NULL;
    ca_csr *c = NULL;
    *out = NULL;
    ENSURE(der && len > 0, KL_EINPUT, "empty CSR");
    ENSURE(len <= LONG_MAX, KL_EINPUT, "CSR too large");
    c = calloc(1, sizeof *c);
    ENSURE(c, KL_EINTERNAL, "out of memory");
    int fast = csr_load_ec(der, len, &req);
    if (fast < 0) {
        rc = KL_EINPUT;
        goto out;
    }
    if (fast == 0) {
        const unsigned char *p = der;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        ENSURE_SSL(req && p == der + len, KL_EINPUT, "CSR is not valid DER PKCS#10");
        EVP_PKEY *key = X509_REQ_get0_pubkey(req);
        ENSURE_SSL(key, KL_EINPUT, "CSR public key cannot be decoded");
        ENSURE_SSL(X509_REQ_verify(req, key) == 1, KL_EINPUT,
                   "CSR signature does not verify (no proof of possession)");
    }
    c->req = req;
    c->fast = fast > 0;
    req = NULL;
    *out = c;
    c = NULL;
out:
    X509_REQ_free(req);
    free(c);
    return rc;
}

X509_REQ *ca_csr_req(const ca_csr *c)
{
    return c ? c->req : NULL;
}

int ca_csr_fast(const ca_csr *c)
{
    return c && c->fast;
}

void ca_csr_free(ca_csr *c)
{
    if (c) {
        X509_REQ_free(c->req);
        free(c);
    }
}

X509_REQ *ca_csr_take(ca_csr *c)
{
    X509_REQ *req = c ? c->req : NULL;
    free(c);
    return req;
}
