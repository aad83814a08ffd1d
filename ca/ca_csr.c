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

#include "ca.h"

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

/* --- cached curves and digests --- */

static EC_GROUP *csr_groups[2]; /* P-256, P-384 */
static EVP_MD *csr_mds[3];      /* SHA-256, SHA-384, SHA-512 */
static int csr_ready;

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

/* The fast path. 1: *out is the verified request. 0: not for the fast path (nothing set; the
 * caller takes the general path). -1: the signature does not verify (error set). */
static int csr_load_ec(const uint8_t *der, size_t len, X509_REQ **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, csr_init);
    if (!csr_ready) {
        return 0;
    }
    const uint8_t *p = der, *end = der + len;
    csr_tlv csr, cri, sigalg, sig, ver, subj, spki, attrs, alg, keybits, kalg, kcurve, sigoid;
    if (!csr_next(&p, end, &csr) || csr.tag != 0x30 || p != end) {
        return 0;
    }
    p = csr.val;
    end = csr.val + csr.len;
    if (!csr_next(&p, end, &cri) || cri.tag != 0x30 || !csr_next(&p, end, &sigalg) ||
        sigalg.tag != 0x30 || !csr_next(&p, end, &sig) || sig.tag != 0x03 || p != end) {
        return 0;
    }
    p = cri.val;
    end = cri.val + cri.len;
    if (!csr_next(&p, end, &ver) || ver.tag != 0x02 || ver.len != 1 || ver.val[0] != 0 ||
        !csr_next(&p, end, &subj) || subj.tag != 0x30 || !csr_next(&p, end, &spki) ||
        spki.tag != 0x30 || !csr_next(&p, end, &attrs) || attrs.tag != 0xa0 || p != end) {
        return 0;
    }
    /* SubjectPublicKeyInfo: id-ecPublicKey with a named curve we cache */
    p = spki.val;
    end = spki.val + spki.len;
    if (!csr_next(&p, end, &alg) || alg.tag != 0x30 || !csr_next(&p, end, &keybits) ||
        keybits.tag != 0x03 || keybits.len < 2 || keybits.val[0] != 0 || p != end) {
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
    /* signatureAlgorithm: ecdsa-with-SHA256/384/512, parameters absent (RFC 5758) */
    p = sigalg.val;
    end = sigalg.val + sigalg.len;
    if (!grp || !csr_next(&p, end, &sigoid) || p != end || sig.len < 2 || sig.val[0] != 0) {
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
    EC_KEY *ec = EC_KEY_new();
    EVP_PKEY *pk = NULL;
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    X509_ALGOR *salg = NULL;
    ASN1_BIT_STRING *sbits = NULL;
    unsigned char *enc = NULL;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    /* the key: a point on the curve (EC_KEY_oct2key checks it) */
    if (!ec || EC_KEY_set_group(ec, grp) != 1 ||
        EC_KEY_oct2key(ec, keybits.val + 1, keybits.len - 1, NULL) != 1) {
        goto out;
    }
    /* proof of possession over the exact CertificationRequestInfo bytes */
    if (EVP_Digest(cri.tlv, cri.tlv_len, dgst, &dlen, md, NULL) != 1) {
        goto out;
    }
    if (ECDSA_verify(0, dgst, (int)dlen, sig.val + 1, (int)(sig.len - 1), ec) != 1) {
        ret = -1;
        goto out;
    }
    /* the request object from its parts; EVP_PKEY_assign_EC_KEY takes ec */
    pk = EVP_PKEY_new();
    if (!pk || EVP_PKEY_assign_EC_KEY(pk, ec) != 1) {
        goto out;
    }
    ec = NULL;
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
    EC_KEY_free(ec);
    return ret;
}

/* --- signatures made by our CAs, checked on the bytes that are released --- */

kl_rc ca_signed_der_verify(const uint8_t *der, size_t len, EVP_PKEY *pub)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, csr_init);
    kl_rc rc = KL_OK;
    const uint8_t *p = der, *end = der + len;
    csr_tlv outer, tbs, alg, sig, oid;
    X509 *x = NULL;
    ENSURE(der && len > 0 && pub, KL_EINTERNAL, "nothing to verify");
    ENSURE(csr_next(&p, end, &outer) && outer.tag == 0x30 && p == end, KL_EHSM,
           "signed structure is not DER");
    p = outer.val;
    end = outer.val + outer.len;
    ENSURE(csr_next(&p, end, &tbs) && tbs.tag == 0x30 && csr_next(&p, end, &alg) &&
               alg.tag == 0x30 && csr_next(&p, end, &sig) && sig.tag == 0x03 && p == end &&
               sig.len >= 2 && sig.val[0] == 0,
           KL_EHSM, "signed structure is not DER");
    p = alg.val;
    end = alg.val + alg.len;
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
