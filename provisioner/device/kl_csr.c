/* keyline device library: a tiny DER writer for the one CSR shape the device produces.
 *
 * RFC 2986 4.1:
 *   CertificationRequest ::= SEQUENCE {
 *        certificationRequestInfo CertificationRequestInfo,
 *        signatureAlgorithm       AlgorithmIdentifier,
 *        signature                BIT STRING }
 *   CertificationRequestInfo ::= SEQUENCE {
 *        version       INTEGER { v1(0) },
 *        subject       Name,
 *        subjectPKInfo SubjectPublicKeyInfo,
 *        attributes    [0] Attributes }
 * The shape is fixed (P-256 key, two-RDN subject (four for a Matter device), empty attributes,
 * ecdsa-with-SHA256), so every length is computed up front; only the signature length varies (r and
 * s lose leading zeros and may gain a 0x00 sign byte). */
#include <string.h>

#include "kl_dev.h"

/* SubjectPublicKeyInfo prefix for id-ecPublicKey + prime256v1 (RFC 5480 2.1.1), followed by
 * the 65-byte uncompressed point; the whole SPKI is 91 bytes. */
static const uint8_t spki_prefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                      0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                      0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
/* AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758 3.2: parameters absent). */
static const uint8_t alg_ecdsa_sha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                           0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
static const uint8_t oid_cn[] = {0x06, 0x03, 0x55, 0x04, 0x03};     /* id-at-commonName */
static const uint8_t oid_serial[] = {0x06, 0x03, 0x55, 0x04, 0x05}; /* id-at-serialNumber */
/* Matter VendorID 1.3.6.1.4.1.37244.2.1 and ProductID ...2.2 (Matter 6.2.2.1) */
static const uint8_t oid_matter_vid[] = {0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04,
                                         0x01, 0x82, 0xa2, 0x7c, 0x02, 0x01};
static const uint8_t oid_matter_pid[] = {0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04,
                                         0x01, 0x82, 0xa2, 0x7c, 0x02, 0x02};

#define TAG_INTEGER 0x02u
#define TAG_BITSTRING 0x03u
#define TAG_UTF8 0x0Cu
#define TAG_PRINTABLE 0x13u
#define TAG_SEQ 0x30u
#define TAG_SET 0x31u

static size_t hdr_len(size_t n)
{
    return n < 0x80u ? 2u : (n < 0x100u ? 3u : 4u);
}

/* Lengths here never exceed 0xFFFF (CSR <= KL_DEV_CSR_MAX). */
static uint8_t *put_hdr(uint8_t *p, uint8_t tag, size_t n)
{
    *p++ = tag;
    if (n < 0x80u) {
        *p++ = (uint8_t)n;
    } else if (n < 0x100u) {
        *p++ = 0x81;
        *p++ = (uint8_t)n;
    } else {
        *p++ = 0x82;
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    }
    return p;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
    memcpy(p, src, n);
    return p + n;
}

int kl_dev_serial_ok(const char *s)
{
    static const char extra[] = " '()+,-./:=?";
    size_t i, n;
    if (s == NULL) {
        return 0;
    }
    n = strlen(s);
    if (n == 0 || n > KL_PROTO_SERIAL_MAX) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!ok && strchr(extra, c) == NULL) {
            return 0;
        }
    }
    return 1;
}

/* INTEGER from a 32-byte unsigned big-endian value: minimal, positive. */
static size_t int_body_len(const uint8_t v[32], size_t *skip)
{
    size_t i = 0;
    while (i < 31u && v[i] == 0) {
        i++;
    }
    *skip = i;
    return (32u - i) + ((v[i] & 0x80u) ? 1u : 0u);
}

static uint8_t *put_uint(uint8_t *p, const uint8_t v[32])
{
    size_t skip, n = int_body_len(v, &skip);
    p = put_hdr(p, TAG_INTEGER, n);
    if (v[skip] & 0x80u) {
        *p++ = 0x00;
    }
    return put_bytes(p, v + skip, 32u - skip);
}

int kl_dev_sig_der(const uint8_t rs[64], uint8_t *out, size_t cap, size_t *out_len)
{
    size_t skip, lr, ls, body;
    uint8_t *p;
    if (rs == NULL || out == NULL || out_len == NULL) {
        return KL_DEV_EARG;
    }
    lr = int_body_len(rs, &skip);
    ls = int_body_len(rs + 32, &skip);
    body = 2u + lr + 2u + ls; /* each <= 33 bytes: short-form length */
    if (2u + body > cap) {
        return KL_DEV_EARG;
    }
    p = put_hdr(out, TAG_SEQ, body);
    p = put_uint(p, rs);
    p = put_uint(p, rs + 32);
    *out_len = (size_t)(p - out);
    return KL_DEV_OK;
}

static size_t rdn_len_oid(size_t oid_len, size_t vlen, size_t *seq_body)
{
    /* SET { SEQ { OID, STRING(vlen) } } */
    *seq_body = oid_len + hdr_len(vlen) + vlen;
    return hdr_len(hdr_len(*seq_body) + *seq_body) + hdr_len(*seq_body) + *seq_body;
}

static size_t rdn_len(size_t vlen, size_t *seq_body)
{
    return rdn_len_oid(sizeof(oid_cn), vlen, seq_body);
}

static uint8_t *put_rdn_oid(uint8_t *p, const uint8_t *oid, size_t oid_len, uint8_t str_tag,
                            const char *v, size_t vlen)
{
    size_t seq_body;
    (void)rdn_len_oid(oid_len, vlen, &seq_body);
    p = put_hdr(p, TAG_SET, hdr_len(seq_body) + seq_body);
    p = put_hdr(p, TAG_SEQ, seq_body);
    p = put_bytes(p, oid, oid_len);
    p = put_hdr(p, str_tag, vlen);
    return put_bytes(p, v, vlen);
}

static uint8_t *put_rdn(uint8_t *p, const uint8_t *oid, uint8_t str_tag, const char *v, size_t vlen)
{
    return put_rdn_oid(p, oid, sizeof(oid_cn), str_tag, v, vlen);
}

/* Four upper-case hex digits (Matter 6.2.2.1). */
static void hex4(uint16_t v, char out[4])
{
    static const char hx[] = "0123456789ABCDEF";
    int i;
    for (i = 3; i >= 0; i--) {
        out[i] = hx[v & 0xFu];
        v = (uint16_t)(v >> 4);
    }
}

int kl_dev_csr_build(const kl_port *port, void *port_ctx, const char *model, const char *hw_serial,
                     const uint8_t pub[65], uint8_t *out, size_t cap, size_t *out_len)
{
    return kl_dev_csr_build_matter(port, port_ctx, model, hw_serial, 0, 0, pub, out, cap, out_len);
}

int kl_dev_csr_build_matter(const kl_port *port, void *port_ctx, const char *model,
                            const char *hw_serial, uint16_t vid, uint16_t pid,
                            const uint8_t pub[65], uint8_t *out, size_t cap, size_t *out_len)
{
    /* The CSR's outer header is at most 4 bytes; TBS is written after it and moved down once
     * the signature (and so the total length) is known. */
    const size_t reserve = 4u;
    size_t ml, sl, sb, name_body, tbs_body, tbs_len, sig_len, bits_body, csr_body, h;
    uint8_t digest[32], rs[64], sig[KL_DEV_SIG_DER_MAX];
    uint8_t *tbs, *p;
    char vhex[4], phex[4];
    const int matter = vid != 0 || pid != 0;

    if (port == NULL || model == NULL || hw_serial == NULL || pub == NULL || out == NULL ||
        out_len == NULL || pub[0] != 0x04) {
        return KL_DEV_EARG;
    }
    ml = strlen(model);
    sl = strlen(hw_serial);
    if (ml == 0 || ml > KL_PROTO_MODEL_MAX || !kl_dev_serial_ok(hw_serial)) {
        return KL_DEV_EARG;
    }
    name_body = rdn_len(ml, &sb) + rdn_len(sl, &sb);
    if (matter) {
        hex4(vid, vhex);
        hex4(pid, phex);
        name_body += rdn_len_oid(sizeof(oid_matter_vid), 4, &sb) +
                     rdn_len_oid(sizeof(oid_matter_pid), 4, &sb);
    }
    tbs_body = 3u /* version */ + hdr_len(name_body) + name_body + sizeof(spki_prefix) + 65u +
               2u /* [0] {} */;
    tbs_len = hdr_len(tbs_body) + tbs_body;
    /* Worst case signature: 0x03 len 0x00 + 72 bytes. */
    if (cap < reserve + tbs_len + sizeof(alg_ecdsa_sha256) + 3u + KL_DEV_SIG_DER_MAX) {
        return KL_DEV_EARG;
    }

    tbs = out + reserve;
    p = put_hdr(tbs, TAG_SEQ, tbs_body);
    *p++ = TAG_INTEGER; /* version v1(0) */
    *p++ = 0x01;
    *p++ = 0x00;
    p = put_hdr(p, TAG_SEQ, name_body);
    p = put_rdn(p, oid_cn, TAG_UTF8, model, ml);
    /* X.520: serialNumber is a PrintableString (checked by kl_dev_serial_ok). */
    p = put_rdn(p, oid_serial, TAG_PRINTABLE, hw_serial, sl);
    if (matter) {
        p = put_rdn_oid(p, oid_matter_vid, sizeof(oid_matter_vid), TAG_UTF8, vhex, 4);
        p = put_rdn_oid(p, oid_matter_pid, sizeof(oid_matter_pid), TAG_UTF8, phex, 4);
    }
    p = put_bytes(p, spki_prefix, sizeof(spki_prefix));
    p = put_bytes(p, pub, 65u);
    *p++ = 0xA0; /* attributes [0] IMPLICIT SET OF Attribute: empty */
    *p++ = 0x00;

    if (port->sha256(port_ctx, tbs, tbs_len, digest) != KL_PORT_OK ||
        port->key_sign(port_ctx, digest, rs) != KL_PORT_OK) {
        return KL_DEV_EPORT;
    }
    if (kl_dev_sig_der(rs, sig, sizeof(sig), &sig_len) != KL_DEV_OK) {
        return KL_DEV_EPORT;
    }
    bits_body = 1u + sig_len;
    csr_body = tbs_len + sizeof(alg_ecdsa_sha256) + hdr_len(bits_body) + bits_body;
    h = hdr_len(csr_body);
    memmove(out + h, tbs, tbs_len);
    (void)put_hdr(out, TAG_SEQ, csr_body);
    p = out + h + tbs_len;
    p = put_bytes(p, alg_ecdsa_sha256, sizeof(alg_ecdsa_sha256));
    p = put_hdr(p, TAG_BITSTRING, bits_body);
    *p++ = 0x00; /* no unused bits */
    p = put_bytes(p, sig, sig_len);
    *out_len = (size_t)(p - out);
    return KL_DEV_OK;
}
