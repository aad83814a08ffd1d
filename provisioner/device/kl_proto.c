/* keyline line protocol codec: COBS framing, CRC-32, TLV. See kl_proto.h and
 * docs/line-protocol.md. Portable C99, no allocation, no I/O. */
#include "kl_proto.h"

#include <string.h>

const char *kl_proto_strerror(int rc)
{
    switch (rc) {
    case KL_PROTO_OK: return "ok";
    case KL_PROTO_FRAME: return "frame";
    case KL_PROTO_EOVERSIZE: return "oversize";
    case KL_PROTO_ECOBS: return "cobs";
    case KL_PROTO_ECRC: return "crc";
    case KL_PROTO_ESHORT: return "short";
    case KL_PROTO_ELENGTH: return "length";
    case KL_PROTO_ESPACE: return "space";
    case KL_PROTO_EFORMAT: return "format";
    case KL_PROTO_ENOTFOUND: return "notfound";
    case KL_PROTO_EARG: return "arg";
    default: return "?";
    }
}

const char *kl_proto_msg_name(uint8_t type)
{
    static const char *const names[] = {"?",       "HELLO",    "GENKEY",    "GETCSR", "INJECT",
                                        "PUTCERT", "PUTTRUST", "CHALLENGE", "LOCK",   "MATTER"};
    static const char *const rnames[] = {"?",        "HELLO_R",   "GENKEY_R",   "GETCSR_R",
                                         "INJECT_R", "PUTCERT_R", "PUTTRUST_R", "CHALLENGE_R",
                                         "LOCK_R",   "MATTER_R"};
    if (type == KL_MSG_ERROR) {
        return "ERROR";
    }
    if ((type & 0x7Fu) >= sizeof(names) / sizeof(names[0])) {
        return "?";
    }
    return (type & KL_MSG_RESPONSE) ? rnames[type & 0x7Fu] : names[type];
}

const char *kl_proto_state_name(unsigned state)
{
    static const char *const names[] = {"FACTORY_NEW",  "KEY_READY",  "CERT_STORED",
                                        "TRUST_STORED", "CHALLENGED", "LOCKED"};
    return state < sizeof(names) / sizeof(names[0]) ? names[state] : "?";
}

const char *kl_proto_err_name(unsigned code)
{
    static const char *const names[] = {"?",       "VERSION",  "UNKNOWN_TYPE", "MALFORMED",
                                        "STATE",   "LOCKED",   "KEY_EXISTS",   "NO_KEY",
                                        "CRYPTO",  "STORAGE",  "TOO_LARGE",    "CERT_MISMATCH",
                                        "CONFIRM", "INTERNAL", "REFUSED"};
    return code < sizeof(names) / sizeof(names[0]) ? names[code] : "?";
}

/* ---- CRC-32 (IEEE 802.3, reflected), nibble table: 64 bytes of ROM instead of 1 KiB ----- */

uint32_t kl_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    static const uint32_t t[16] = {0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu,
                                   0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
                                   0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
                                   0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ t[crc & 0x0Fu];
        crc = (crc >> 4) ^ t[crc & 0x0Fu];
    }
    return ~crc;
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- Decoder: streaming COBS decode straight into the frame buffer ---------------------- */

int kl_proto_dec_init(kl_proto_dec *d, uint8_t *buf, size_t cap)
{
    if (d == NULL || buf == NULL || cap < KL_PROTO_RAW_LEN(0)) {
        return KL_PROTO_EARG;
    }
    d->buf = buf;
    d->cap = cap;
    kl_proto_dec_reset(d);
    return KL_PROTO_OK;
}

void kl_proto_dec_reset(kl_proto_dec *d)
{
    d->len = 0;
    d->block = 0;
    d->code = 0;
    d->in_frame = 0;
    d->err = 0;
}

int kl_proto_dec_busy(const kl_proto_dec *d)
{
    return d->in_frame;
}

static void dec_push(kl_proto_dec *d, uint8_t b)
{
    if (d->err != 0) {
        return;
    }
    if (d->len >= d->cap) {
        d->err = KL_PROTO_EOVERSIZE; /* keep discarding until the delimiter */
        return;
    }
    d->buf[d->len++] = b;
}

/* The delimiter arrived: check COBS completeness, header, length and CRC. */
static int dec_finish(kl_proto_dec *d, kl_proto_frame *f)
{
    size_t plen;
    uint32_t crc;
    int err = d->err;

    if (err == 0 && d->block != 0) {
        err = KL_PROTO_ECOBS; /* the last block promised more bytes than came */
    }
    if (err == 0 && d->len < KL_PROTO_RAW_LEN(0)) {
        err = KL_PROTO_ESHORT;
    }
    if (err == 0) {
        plen = get_be16(d->buf + 5);
        if (KL_PROTO_RAW_LEN(plen) != d->len) {
            err = KL_PROTO_ELENGTH;
        } else {
            crc = kl_crc32(0, d->buf, d->len - KL_PROTO_CRC_LEN);
            if (crc != get_be32(d->buf + d->len - KL_PROTO_CRC_LEN)) {
                err = KL_PROTO_ECRC;
            } else {
                f->version = d->buf[0];
                f->type = d->buf[1];
                f->seq = get_be16(d->buf + 2);
                f->flags = d->buf[4];
                f->payload = d->buf + KL_PROTO_HDR_LEN;
                f->payload_len = plen;
                f->crc = crc;
            }
        }
    }
    /* Reset the receive state but keep buf contents: f->payload points into it. */
    d->len = 0;
    d->block = 0;
    d->code = 0;
    d->in_frame = 0;
    d->err = 0;
    return err != 0 ? err : KL_PROTO_FRAME;
}

int kl_proto_feed(kl_proto_dec *d, const uint8_t *data, size_t len, size_t *consumed,
                  kl_proto_frame *frame)
{
    size_t i;

    if (consumed != NULL) {
        *consumed = 0;
    }
    if (d == NULL || consumed == NULL || frame == NULL || (data == NULL && len != 0)) {
        return KL_PROTO_EARG;
    }
    for (i = 0; i < len; i++) {
        uint8_t b = data[i];
        if (b == 0x00) {
            if (!d->in_frame) {
                continue; /* idle / resync delimiter */
            }
            *consumed = i + 1;
            return dec_finish(d, frame);
        }
        d->in_frame = 1;
        if (d->block == 0) {
            /* New code byte. The previous block ended in an implied zero unless its code was
             * 0xFF (a full block without zero); the zero after the last block is not data. */
            if (d->code != 0 && d->code != 0xFFu) {
                dec_push(d, 0x00);
            }
            d->code = b;
            d->block = (uint8_t)(b - 1u);
        } else {
            dec_push(d, b);
            d->block--;
        }
    }
    *consumed = len;
    return KL_PROTO_NEED_MORE;
}

/* ---- Encoder: streaming COBS encode of header | payload | crc ---------------------------- */

typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;      /* next write position */
    size_t code_pos; /* where the current block's code byte goes */
    uint8_t code;
    int err;
} cobs_enc;

static void enc_start(cobs_enc *e, uint8_t *out, size_t cap)
{
    e->out = out;
    e->cap = cap;
    e->err = cap < 2u ? KL_PROTO_ESPACE : 0;
    e->code_pos = 0;
    e->pos = 1;
    e->code = 1;
}

static void enc_byte(cobs_enc *e, uint8_t b)
{
    if (e->err != 0) {
        return;
    }
    if (b == 0x00) {
        e->out[e->code_pos] = e->code;
        e->code_pos = e->pos++;
        e->code = 1;
    } else {
        e->out[e->pos++] = b;
        e->code++;
        if (e->code == 0xFFu) {
            e->out[e->code_pos] = e->code;
            e->code_pos = e->pos++;
            e->code = 1;
        }
    }
    if (e->pos >= e->cap) {
        e->err = KL_PROTO_ESPACE; /* always keep room for the next code byte / delimiter */
    }
}

static void enc_bytes(cobs_enc *e, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        enc_byte(e, p[i]);
    }
}

int kl_proto_encode(uint8_t *out, size_t cap, size_t *out_len, uint8_t type, uint16_t seq,
                    uint8_t flags, const uint8_t *payload, size_t payload_len)
{
    uint8_t hdr[KL_PROTO_HDR_LEN];
    uint8_t tail[KL_PROTO_CRC_LEN];
    uint32_t crc;
    cobs_enc e;

    if (out == NULL || out_len == NULL || payload_len > 0xFFFFu ||
        (payload == NULL && payload_len != 0)) {
        return KL_PROTO_EARG;
    }
    *out_len = 0;
    hdr[0] = (uint8_t)KL_PROTO_VERSION;
    hdr[1] = type;
    put_be16(hdr + 2, seq);
    hdr[4] = flags;
    put_be16(hdr + 5, (uint16_t)payload_len);
    crc = kl_crc32(0, hdr, sizeof(hdr));
    crc = kl_crc32(crc, payload, payload_len);
    put_be32(tail, crc);

    enc_start(&e, out, cap);
    enc_bytes(&e, hdr, sizeof(hdr));
    enc_bytes(&e, payload, payload_len);
    enc_bytes(&e, tail, sizeof(tail));
    if (e.err != 0 || e.pos + 1u > e.cap) {
        return KL_PROTO_ESPACE;
    }
    e.out[e.code_pos] = e.code;
    e.out[e.pos++] = 0x00;
    *out_len = e.pos;
    return KL_PROTO_OK;
}

/* ---- TLV --------------------------------------------------------------------------------- */

void kl_tlv_w_init(kl_tlv_w *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
    w->len = 0;
}

int kl_tlv_put_reserve(kl_tlv_w *w, uint8_t tag, size_t len, uint8_t **value)
{
    if (len > 0xFFFFu) {
        return KL_PROTO_EARG;
    }
    if (w->cap - w->len < 3u || w->cap - w->len - 3u < len) {
        return KL_PROTO_ESPACE;
    }
    w->buf[w->len] = tag;
    put_be16(w->buf + w->len + 1, (uint16_t)len);
    *value = w->buf + w->len + 3;
    w->len += 3u + len;
    return KL_PROTO_OK;
}

int kl_tlv_put(kl_tlv_w *w, uint8_t tag, const void *value, size_t len)
{
    uint8_t *v;
    int rc;
    if (value == NULL && len != 0) {
        return KL_PROTO_EARG;
    }
    rc = kl_tlv_put_reserve(w, tag, len, &v);
    if (rc == KL_PROTO_OK && len != 0) {
        memcpy(v, value, len);
    }
    return rc;
}

int kl_tlv_put_u8(kl_tlv_w *w, uint8_t tag, uint8_t v)
{
    return kl_tlv_put(w, tag, &v, 1);
}

int kl_tlv_put_u16(kl_tlv_w *w, uint8_t tag, uint16_t v)
{
    uint8_t b[2];
    put_be16(b, v);
    return kl_tlv_put(w, tag, b, 2);
}

int kl_tlv_put_u32(kl_tlv_w *w, uint8_t tag, uint32_t v)
{
    uint8_t b[4];
    put_be16(b, (uint16_t)(v >> 16));
    put_be16(b + 2, (uint16_t)v);
    return kl_tlv_put(w, tag, b, 4);
}

int kl_tlv_put_str(kl_tlv_w *w, uint8_t tag, const char *s)
{
    if (s == NULL) {
        return KL_PROTO_EARG;
    }
    return kl_tlv_put(w, tag, s, strlen(s));
}

/* Walk one TLV at *off; on success sets tag/value/vlen and advances *off. */
static int tlv_next(const uint8_t *p, size_t len, size_t *off, uint8_t *tag, const uint8_t **value,
                    size_t *vlen)
{
    size_t l;
    if (len - *off < 3u) {
        return KL_PROTO_EFORMAT;
    }
    l = get_be16(p + *off + 1);
    if (len - *off - 3u < l) {
        return KL_PROTO_EFORMAT;
    }
    *tag = p[*off];
    *value = p + *off + 3;
    *vlen = l;
    *off += 3u + l;
    return KL_PROTO_OK;
}

int kl_tlv_check(const uint8_t *p, size_t len)
{
    /* Bitmap of seen tags: 256 bits. */
    uint8_t seen[32];
    size_t off = 0, vlen;
    const uint8_t *v;
    uint8_t tag;

    if (p == NULL && len != 0) {
        return KL_PROTO_EFORMAT;
    }
    memset(seen, 0, sizeof(seen));
    while (off < len) {
        if (tlv_next(p, len, &off, &tag, &v, &vlen) != KL_PROTO_OK) {
            return KL_PROTO_EFORMAT;
        }
        if (seen[tag >> 3] & (1u << (tag & 7u))) {
            return KL_PROTO_EFORMAT;
        }
        seen[tag >> 3] = (uint8_t)(seen[tag >> 3] | (1u << (tag & 7u)));
    }
    return KL_PROTO_OK;
}

int kl_tlv_get(const uint8_t *p, size_t len, uint8_t tag, const uint8_t **value, size_t *vlen)
{
    size_t off = 0, l;
    const uint8_t *v;
    uint8_t t;

    if (p == NULL && len != 0) {
        return KL_PROTO_EFORMAT;
    }
    while (off < len) {
        if (tlv_next(p, len, &off, &t, &v, &l) != KL_PROTO_OK) {
            return KL_PROTO_EFORMAT;
        }
        if (t == tag) {
            *value = v;
            *vlen = l;
            return KL_PROTO_OK;
        }
    }
    return KL_PROTO_ENOTFOUND;
}

int kl_tlv_get_var(const uint8_t *p, size_t len, uint8_t tag, size_t min, size_t max,
                   const uint8_t **value, size_t *vlen)
{
    const uint8_t *v;
    size_t l;
    int rc = kl_tlv_get(p, len, tag, &v, &l);
    if (rc != KL_PROTO_OK) {
        return rc;
    }
    if (l < min || l > max) {
        return KL_PROTO_EFORMAT;
    }
    *value = v;
    *vlen = l;
    return KL_PROTO_OK;
}

int kl_tlv_get_fixed(const uint8_t *p, size_t len, uint8_t tag, uint8_t *out, size_t want)
{
    const uint8_t *v;
    size_t l;
    int rc = kl_tlv_get_var(p, len, tag, want, want, &v, &l);
    if (rc == KL_PROTO_OK && want != 0) {
        memcpy(out, v, want);
    }
    return rc;
}

int kl_tlv_get_u8(const uint8_t *p, size_t len, uint8_t tag, uint8_t *v)
{
    return kl_tlv_get_fixed(p, len, tag, v, 1);
}

int kl_tlv_get_u16(const uint8_t *p, size_t len, uint8_t tag, uint16_t *v)
{
    uint8_t b[2];
    int rc = kl_tlv_get_fixed(p, len, tag, b, 2);
    if (rc == KL_PROTO_OK) {
        *v = get_be16(b);
    }
    return rc;
}

int kl_tlv_get_u32(const uint8_t *p, size_t len, uint8_t tag, uint32_t *v)
{
    uint8_t b[4];
    int rc = kl_tlv_get_fixed(p, len, tag, b, 4);
    if (rc == KL_PROTO_OK) {
        *v = ((uint32_t)get_be16(b) << 16) | get_be16(b + 2);
    }
    return rc;
}

/* A MATTER variable field: present, length in [min, max]. */
static int matter_var(const uint8_t *p, size_t len, uint8_t tag, size_t min, size_t max,
                      const uint8_t **v, size_t *vlen)
{
    int rc = kl_tlv_get(p, len, tag, v, vlen);
    if (rc != KL_PROTO_OK) {
        return rc;
    }
    return (*vlen < min || *vlen > max) ? KL_PROTO_EFORMAT : KL_PROTO_OK;
}

int kl_proto_matter_check(const uint8_t *p, size_t len)
{
    const uint8_t *v;
    size_t vlen;
    uint16_t disc;
    uint32_t iter;
    int rc = kl_tlv_check(p, len);
    if (rc == KL_PROTO_OK) {
        rc = matter_var(p, len, KL_TAG_MATTER_CD, 1, KL_PROTO_MATTER_CD_MAX, &v, &vlen);
    }
    if (rc == KL_PROTO_OK) {
        rc = matter_var(p, len, KL_TAG_MATTER_SALT, KL_PROTO_MATTER_SALT_MIN,
                        KL_PROTO_MATTER_SALT_MAX, &v, &vlen);
    }
    if (rc == KL_PROTO_OK) {
        rc = matter_var(p, len, KL_TAG_MATTER_UNIQUE_ID, KL_PROTO_MATTER_UID_MIN,
                        KL_PROTO_MATTER_UID_MAX, &v, &vlen);
    }
    if (rc == KL_PROTO_OK) {
        rc = matter_var(p, len, KL_TAG_MATTER_VERIFIER, KL_PROTO_MATTER_VERIFIER_LEN,
                        KL_PROTO_MATTER_VERIFIER_LEN, &v, &vlen);
        /* L, after the 32 bytes of w0, is an uncompressed point */
        if (rc == KL_PROTO_OK && v[32] != 0x04) {
            rc = KL_PROTO_EFORMAT;
        }
    }
    if (rc == KL_PROTO_OK) {
        rc = kl_tlv_get_u16(p, len, KL_TAG_MATTER_DISCRIMINATOR, &disc);
        if (rc == KL_PROTO_OK && disc > 0x0FFFu) {
            rc = KL_PROTO_EFORMAT;
        }
    }
    if (rc == KL_PROTO_OK) {
        rc = kl_tlv_get_u32(p, len, KL_TAG_MATTER_ITERATIONS, &iter);
        if (rc == KL_PROTO_OK &&
            (iter < KL_PROTO_MATTER_ITER_MIN || iter > KL_PROTO_MATTER_ITER_MAX)) {
            rc = KL_PROTO_EFORMAT;
        }
    }
    return rc;
}

int kl_tlv_get_str(const uint8_t *p, size_t len, uint8_t tag, char *out, size_t cap)
{
    const uint8_t *v;
    size_t l;
    int rc;
    if (out == NULL || cap == 0) {
        return KL_PROTO_EARG;
    }
    rc = kl_tlv_get(p, len, tag, &v, &l);
    if (rc != KL_PROTO_OK) {
        return rc;
    }
    if (l >= cap || (l != 0 && memchr(v, 0, l) != NULL)) {
        return KL_PROTO_EFORMAT;
    }
    if (l != 0) {
        memcpy(out, v, l);
    }
    out[l] = '\0';
    return KL_PROTO_OK;
}

/* ---- Signed-message helpers -------------------------------------------------------------- */

int kl_proto_challenge_msg(uint8_t *out, size_t cap, size_t *out_len, const char *hw_serial,
                           const uint8_t *nonce, size_t nonce_len)
{
    const size_t ctx_len = sizeof(KL_PROTO_CHALLENGE_CTX) - 1u;
    size_t sl, n;
    if (out == NULL || out_len == NULL || hw_serial == NULL || nonce == NULL) {
        return KL_PROTO_EARG;
    }
    sl = strlen(hw_serial);
    if (sl == 0 || sl > KL_PROTO_SERIAL_MAX || nonce_len < KL_PROTO_NONCE_MIN ||
        nonce_len > KL_PROTO_NONCE_MAX) {
        return KL_PROTO_EARG;
    }
    n = ctx_len + 1u + sl + nonce_len;
    if (n > cap) {
        return KL_PROTO_ESPACE;
    }
    memcpy(out, KL_PROTO_CHALLENGE_CTX, ctx_len);
    out[ctx_len] = (uint8_t)sl;
    memcpy(out + ctx_len + 1u, hw_serial, sl);
    memcpy(out + ctx_len + 1u + sl, nonce, nonce_len);
    *out_len = n;
    return KL_PROTO_OK;
}

int kl_proto_inject_info(uint8_t *out, size_t cap, size_t *out_len, const char *hw_serial)
{
    const size_t pl = sizeof(KL_PROTO_INJECT_INFO) - 1u;
    size_t sl;
    if (out == NULL || out_len == NULL || hw_serial == NULL) {
        return KL_PROTO_EARG;
    }
    sl = strlen(hw_serial);
    if (sl == 0 || sl > KL_PROTO_SERIAL_MAX) {
        return KL_PROTO_EARG;
    }
    if (pl + sl > cap) {
        return KL_PROTO_ESPACE;
    }
    memcpy(out, KL_PROTO_INJECT_INFO, pl);
    memcpy(out + pl, hw_serial, sl);
    *out_len = pl + sl;
    return KL_PROTO_OK;
}
