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
#include <openssl/bn.h>
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
/* Where both fast paths start: the cached curves and digests, and a SIGNED{...} structure. */
static int csr_begin(const uint8_t *der, size_t len, csr_tlv *tbs, csr_tlv *alg, csr_tlv *sig)
{
    pthread_once(&csr_once, csr_init);
    return csr_ready && csr_signed(der, len, tbs, alg, sig);
}

/* The digest of an AlgorithmIdentifier TLV that holds only the OID of ecdsa-with-SHA256/384/512
 * (RFC 5758 3.2: the parameters field MUST be absent). NULL for anything else. */
static const EVP_MD *csr_ecdsa_md(const csr_tlv *alg)
{
    const uint8_t *p = alg->val, *end = alg->val + alg->len;
    csr_tlv oid;
    if (!csr_ready || !csr_next(&p, end, &oid) || p != end) {
        return NULL;
    }
    return csr_oid_is(&oid, NID_ecdsa_with_SHA256)   ? csr_mds[0]
           : csr_oid_is(&oid, NID_ecdsa_with_SHA384) ? csr_mds[1]
           : csr_oid_is(&oid, NID_ecdsa_with_SHA512) ? csr_mds[2]
                                                     : NULL;
}

/* An object re-encoded (n bytes at *enc, from i2d) is exactly the input. enc is passed by
 * address so that it is read after the i2d call that sets it, which is an argument too. */
static int csr_der_same(int n, unsigned char *const *enc, const uint8_t *der, size_t len)
{
    return n >= 0 && (size_t)n == len && memcmp(*enc, der, len) == 0;
}

/* Decode `var` with `fn` from exactly the bytes of TLV `t` (uses a `const unsigned char *q`). */
#define CSR_D2I(var, fn, t)                                                                        \
    (q = (t).tlv, (var) = fn(NULL, &q, (long)(t).tlv_len),                                         \
     (var) != NULL && q == (t).tlv + (t).tlv_len)

/* A SubjectPublicKeyInfo TLV of an EC key on P-256 or P-384 (named curve): the curve's NID and
 * the key's BIT STRING. 0: not such a key. */
static int csr_spki_split(const csr_tlv *spki, int *nid, csr_tlv *keybits)
{
    const uint8_t *p = spki->val, *end = spki->val + spki->len;
    csr_tlv alg, kalg, kcurve;
    if (spki->tag != 0x30 || !csr_next(&p, end, &alg) || alg.tag != 0x30 ||
        !csr_next(&p, end, keybits) || keybits->tag != 0x03 || keybits->len < 2 ||
        keybits->val[0] != 0 || p != end) {
        return 0;
    }
    p = alg.val;
    end = alg.val + alg.len;
    if (!csr_next(&p, end, &kalg) || !csr_oid_is(&kalg, NID_X9_62_id_ecPublicKey) ||
        !csr_next(&p, end, &kcurve) || p != end) {
        return 0;
    }
    *nid = csr_oid_is(&kcurve, NID_X9_62_prime256v1) ? NID_X9_62_prime256v1
           : csr_oid_is(&kcurve, NID_secp384r1)      ? NID_secp384r1
                                                     : NID_undef;
    return *nid != NID_undef;
}

/* An EC public key (P-256/P-384, named curve) from a SubjectPublicKeyInfo TLV, as a legacy
 * EVP_PKEY (its encoding back to SPKI takes OpenSSL's old, fast path). 1: *out set. 0: not
 * such a key, or not a point on the curve (EC_KEY_oct2key checks). */
static int csr_spki_ec(const csr_tlv *spki, EVP_PKEY **out)
{
    csr_tlv keybits;
    int nid;
    if (!csr_spki_split(spki, &nid, &keybits)) {
        return 0;
    }
    const EC_GROUP *grp = csr_groups[nid == NID_X9_62_prime256v1 ? 0 : 1];
    EC_KEY *ec = EC_KEY_new();
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

/* The request's key set from its SPKI's bytes, not decoded: for a reader that checks no
 * signature and only passes the request on (decoding the point and encoding it back cost
 * keyline-estd a fifth of its work per enrollment). X509_REQ_get0_pubkey then gives NULL, as
 * it does for a key d2i_X509_REQ cannot decode. 1: set. */
static int csr_spki_raw(X509_REQ *req, const csr_tlv *spki)
{
    csr_tlv keybits;
    int nid;
    if (!csr_spki_split(spki, &nid, &keybits)) {
        return 0;
    }
    unsigned char *bits = OPENSSL_memdup(keybits.val + 1, keybits.len - 1);
    if (!bits || X509_PUBKEY_set0_param(X509_REQ_get_X509_PUBKEY(req),
                                        OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                                        OBJ_nid2obj(nid), bits, (int)(keybits.len - 1)) != 1) {
        OPENSSL_free(bits);
        return 0;
    }
    return 1;
}

/* The parts of a CertificationRequest (RFC 2986 4) the fast path handles: version 0, an EC
 * signature by ecdsa-with-SHA256/384/512 with no parameters (RFC 5758 3.2). */
typedef struct {
    csr_tlv cri, sigalg, sig, subj, spki, attrs;
    const EVP_MD *md;
} csr_parts;

/* 1: `r` holds the request's parts. 0: not a request for the fast path. */
static int csr_split(const uint8_t *der, size_t len, csr_parts *r)
{
    csr_tlv ver;
    if (!csr_begin(der, len, &r->cri, &r->sigalg, &r->sig)) {
        return 0;
    }
    const uint8_t *p = r->cri.val, *end = r->cri.val + r->cri.len;
    if (!csr_next(&p, end, &ver) || ver.tag != 0x02 || ver.len != 1 || ver.val[0] != 0 ||
        !csr_next(&p, end, &r->subj) || r->subj.tag != 0x30 || !csr_next(&p, end, &r->spki) ||
        r->spki.tag != 0x30 || !csr_next(&p, end, &r->attrs) || r->attrs.tag != 0xa0 || p != end) {
        return 0;
    }
    if (r->sig.len < 2 || r->sig.val[0] != 0) {
        return 0;
    }
    r->md = csr_ecdsa_md(&r->sigalg);
    return r->md != NULL;
}

/* Proof of possession over the exact CertificationRequestInfo bytes. 1: verified, *pk is the
 * key. 0: not for the fast path. -1: the signature does not verify. */
static int csr_pop_verify(const csr_parts *r, EVP_PKEY **pk)
{
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    /* the key: a point on the curve */
    if (!csr_spki_ec(&r->spki, pk)) {
        return 0;
    }
    if (EVP_Digest(r->cri.tlv, r->cri.tlv_len, dgst, &dlen, r->md, NULL) != 1) {
        return 0;
    }
    if (ECDSA_verify(0, dgst, (int)dlen, r->sig.val + 1, (int)(r->sig.len - 1),
                     (EC_KEY *)EVP_PKEY_get0_EC_KEY(*pk)) != 1) {
        return -1;
    }
    return 1;
}

/* Each Attribute of the [0] attributes set, copied into req. */
static int csr_add_attrs(X509_REQ *req, const csr_tlv *attrs)
{
    const unsigned char *q;
    for (const uint8_t *p = attrs->val, *end = attrs->val + attrs->len; p < end;) {
        csr_tlv a;
        X509_ATTRIBUTE *at = NULL;
        int ok = csr_next(&p, end, &a) && CSR_D2I(at, d2i_X509_ATTRIBUTE, a) &&
                 X509_REQ_add1_attr(req, at) == 1;
        X509_ATTRIBUTE_free(at);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

/* The request object from its parts, with the key pk (NULL: the SPKI's bytes, not decoded); 1
 * only if it is, byte for byte, what was signed. */
static int csr_assemble(const csr_parts *r, EVP_PKEY *pk, const uint8_t *der, size_t len,
                        X509_REQ **out)
{
    int ret = 0;
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = NULL;
    X509_ALGOR *salg = NULL;
    ASN1_BIT_STRING *sbits = NULL;
    unsigned char *enc = NULL;
    const unsigned char *q;
    if (!req || !CSR_D2I(name, d2i_X509_NAME, r->subj) || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 ||
        (pk ? X509_REQ_set_pubkey(req, pk) != 1 : !csr_spki_raw(req, &r->spki)) ||
        !csr_add_attrs(req, &r->attrs) || !CSR_D2I(salg, d2i_X509_ALGOR, r->sigalg) ||
        X509_REQ_set1_signature_algo(req, salg) != 1 ||
        !CSR_D2I(sbits, d2i_ASN1_BIT_STRING, r->sig)) {
        goto out;
    }
    X509_REQ_set0_signature(req, sbits);
    sbits = NULL;
    if (!csr_der_same(i2d_X509_REQ(req, &enc), &enc, der, len)) {
        goto out;
    }
    *out = req;
    req = NULL;
    ret = 1;
out:
    OPENSSL_free(enc);
    ASN1_BIT_STRING_free(sbits);
    X509_ALGOR_free(salg);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return ret;
}

/* The fast path. 1: *out is the request, its signature verified when check_sig (else its key
 * not decoded: csr_spki_raw). 0: not for
 * the fast path (nothing set; the caller takes the general path). -1: the signature does not
 * verify (error set). */
static int csr_load_ec(const uint8_t *der, size_t len, int check_sig, X509_REQ **out)
{
    csr_parts r;
    EVP_PKEY *pk = NULL;
    if (!csr_split(der, len, &r)) {
        return 0;
    }
    int ret = check_sig ? csr_pop_verify(&r, &pk) : 1;
    if (ret == 1) {
        ret = csr_assemble(&r, pk, der, len, out);
    }
    if (ret == 0) {
        ERR_clear_error(); /* the general path decides and reports */
    } else if (ret < 0) {
        kl_fail_ssl(KL_EINPUT, "CSR signature does not verify (no proof of possession)");
    }
    EVP_PKEY_free(pk);
    return ret;
}

/* The general path: d2i_X509_REQ over all of der. */
static kl_rc csr_d2i(const uint8_t *der, size_t len, X509_REQ **out)
{
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    if (!req || p != der + len) {
        X509_REQ_free(req);
        return kl_fail_ssl(KL_EINPUT, "CSR is not valid DER PKCS#10");
    }
    *out = req;
    return KL_OK;
}

/* --- signatures made by our CAs, checked on the bytes that are released --- */

kl_rc ca_signed_der_verify(const uint8_t *der, size_t len, EVP_PKEY *pub)
{
    pthread_once(&csr_once, csr_init);
    kl_rc rc = KL_OK;
    csr_tlv tbs, alg, sig;
    X509 *x = NULL;
    ENSURE(der && len > 0 && pub, KL_EINTERNAL, "nothing to verify");
    ENSURE(csr_signed(der, len, &tbs, &alg, &sig) && sig.len >= 2 && sig.val[0] == 0, KL_EHSM,
           "signed structure is not DER");
    const EVP_MD *md = csr_ecdsa_md(&alg);
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
    const uint8_t *p = der;
    x = d2i_X509(NULL, &p, (long)len);
    ENSURE_SSL(x && p == der + len, KL_EHSM, "signed certificate does not parse");
    ENSURE_SSL(X509_verify(x, pub) == 1, KL_EHSM, "HSM produced a signature that does not verify");
out:
    X509_free(x);
    return rc;
}

/* --- certificates: the same approach for X.509 (client certificates in keyline-estd) --- */

/* The parts of a v3 Certificate (RFC 5280 4.1) the fast path handles. */
typedef struct {
    csr_tlv tbs, sigalg, sig, serial, tsigalg, issuer, nb, na, subj, spki, exts;
} x509_parts;

/* 1: `r` holds the certificate's parts. 0: not a certificate for the fast path. */
static int x509_split(const uint8_t *der, size_t len, x509_parts *r)
{
    csr_tlv ver, vint, validity;
    if (!csr_begin(der, len, &r->tbs, &r->sigalg, &r->sig)) {
        return 0;
    }
    const uint8_t *p = r->tbs.val, *end = r->tbs.val + r->tbs.len;
    /* v3 only: [0] EXPLICIT INTEGER 2 */
    if (!csr_next(&p, end, &ver) || ver.tag != 0xa0) {
        return 0;
    }
    const uint8_t *vp = ver.val;
    if (!csr_next(&vp, ver.val + ver.len, &vint) || vint.tag != 0x02 || vint.len != 1 ||
        vint.val[0] != 2 || vp != ver.val + ver.len) {
        return 0;
    }
    if (!csr_next(&p, end, &r->serial) || r->serial.tag != 0x02 ||
        !csr_next(&p, end, &r->tsigalg) || r->tsigalg.tag != 0x30 ||
        !csr_next(&p, end, &r->issuer) || r->issuer.tag != 0x30 || !csr_next(&p, end, &validity) ||
        validity.tag != 0x30 || !csr_next(&p, end, &r->subj) || r->subj.tag != 0x30 ||
        !csr_next(&p, end, &r->spki) || !csr_next(&p, end, &r->exts) || r->exts.tag != 0xa3 ||
        p != end) {
        return 0;
    }
    const uint8_t *tp = validity.val, *tend = validity.val + validity.len;
    return csr_next(&tp, tend, &r->nb) && csr_next(&tp, tend, &r->na) && tp == tend;
}

/* The TBSCertificate's fields but the extensions, decoded from their exact bytes into x. */
static int x509_set_tbs(X509 *x, const x509_parts *r, EVP_PKEY *pk)
{
    ASN1_INTEGER *sn = NULL;
    X509_ALGOR *a1 = NULL;
    X509_NAME *in = NULL, *sub = NULL;
    ASN1_TIME *t1 = NULL, *t2 = NULL;
    const unsigned char *q;
    int ok = CSR_D2I(sn, d2i_ASN1_INTEGER, r->serial) && CSR_D2I(a1, d2i_X509_ALGOR, r->tsigalg) &&
             CSR_D2I(in, d2i_X509_NAME, r->issuer) && CSR_D2I(t1, d2i_ASN1_TIME, r->nb) &&
             CSR_D2I(t2, d2i_ASN1_TIME, r->na) && CSR_D2I(sub, d2i_X509_NAME, r->subj) &&
             X509_set_version(x, 2) == 1 && X509_set_serialNumber(x, sn) == 1 &&
             X509_ALGOR_copy((X509_ALGOR *)X509_get0_tbs_sigalg(x), a1) == 1 &&
             X509_set_issuer_name(x, in) == 1 && X509_set1_notBefore(x, t1) == 1 &&
             X509_set1_notAfter(x, t2) == 1 && X509_set_subject_name(x, sub) == 1 &&
             X509_set_pubkey(x, pk) == 1;
    ASN1_TIME_free(t1);
    ASN1_TIME_free(t2);
    X509_NAME_free(in);
    X509_NAME_free(sub);
    X509_ALGOR_free(a1);
    ASN1_INTEGER_free(sn);
    return ok;
}

/* extensions: [3] EXPLICIT SEQUENCE OF Extension, each added to x */
static int x509_add_exts(X509 *x, const csr_tlv *exts)
{
    csr_tlv list;
    const unsigned char *q;
    const uint8_t *ep = exts->val;
    if (!csr_next(&ep, exts->val + exts->len, &list) || list.tag != 0x30 ||
        ep != exts->val + exts->len) {
        return 0;
    }
    for (ep = list.val; ep < list.val + list.len;) {
        csr_tlv e;
        X509_EXTENSION *xe = NULL;
        int ok = csr_next(&ep, list.val + list.len, &e) && CSR_D2I(xe, d2i_X509_EXTENSION, e) &&
                 X509_add_ext(x, xe, -1) == 1;
        X509_EXTENSION_free(xe);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

/* the outer signature algorithm and value: the object's own fields, set in place */
static int x509_set_sig(X509 *x, const x509_parts *r)
{
    X509_ALGOR *a2 = NULL;
    ASN1_BIT_STRING *bits = NULL;
    const ASN1_BIT_STRING *psig = NULL;
    const X509_ALGOR *palg = NULL;
    const unsigned char *q;
    X509_get0_signature(&psig, &palg, x);
    int ok = CSR_D2I(a2, d2i_X509_ALGOR, r->sigalg) && CSR_D2I(bits, d2i_ASN1_BIT_STRING, r->sig) &&
             X509_ALGOR_copy((X509_ALGOR *)palg, a2) == 1 &&
             ASN1_STRING_copy((ASN1_BIT_STRING *)psig, bits) == 1;
    ASN1_BIT_STRING_free(bits);
    X509_ALGOR_free(a2);
    return ok;
}

/* 1: *out is the certificate. 0: not for the fast path (v1/v2, unique IDs, non-EC keys, BER,
 * anything that does not re-encode to the input): the caller uses d2i_X509. No signature is
 * checked here: d2i_X509 does not either. */
static int x509_load_ec(const uint8_t *der, size_t len, X509 **out)
{
    x509_parts r;
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    unsigned char *enc = NULL;
    if (!x509_split(der, len, &r)) {
        return 0;
    }
    int ret = csr_spki_ec(&r.spki, &pk) && (x = X509_new()) != NULL && x509_set_tbs(x, &r, pk) &&
              x509_add_exts(x, &r.exts) && x509_set_sig(x, &r) &&
              csr_der_same(i2d_X509(x, &enc), &enc, der, len);
    if (ret) {
        *out = x;
        x = NULL;
    } else {
        ERR_clear_error();
    }
    OPENSSL_free(enc);
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
    int fast = csr_load_ec(der, len, 1, &req);
    if (fast < 0) {
        rc = KL_EINPUT;
        goto out;
    }
    if (fast == 0) {
        TRY(csr_d2i(der, len, &req));
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

kl_rc ca_req_parse(const uint8_t *der, size_t len, X509_REQ **out)
{
    *out = NULL;
    if (!der || len == 0 || len > LONG_MAX) {
        return kl_fail(KL_EINPUT, "empty or oversized CSR");
    }
    return csr_load_ec(der, len, 0, out) == 1 ? KL_OK : csr_d2i(der, len, out);
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

char *ca_serial_hex(const ASN1_INTEGER *serial)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    return hex;
}
