/* keyline: the CA protocol codec (docs/ca-protocol.md). One table says what each op carries. */
#include "cap.h"

#include <string.h>

enum { CAP_STR = 1, CAP_BYTES = 2, CAP_U64 = 3 };

typedef struct {
    uint8_t type;
    uint8_t repeat; /* may appear more than once */
    uint32_t max;   /* largest value in bytes */
} cap_tag_info;

#define B(t) (UINT64_C(1) << (t))

static const cap_tag_info cap_tags[CAP_T__END] = {
    [CAP_T_STATION] = {CAP_STR, 0, 64},
    [CAP_T_ORDER] = {CAP_STR, 0, 64},
    [CAP_T_EXPIRES] = {CAP_U64, 0, 8},
    [CAP_T_ISSUED] = {CAP_U64, 0, 8},
    [CAP_T_PROFILE] = {CAP_STR, 0, 64},
    [CAP_T_CSR] = {CAP_BYTES, 0, 64 * 1024},
    [CAP_T_AUTH] = {CAP_STR, 0, 16},
    [CAP_T_AUTH_SERIAL] = {CAP_STR, 0, 64},
    [CAP_T_AUTH_CERT] = {CAP_BYTES, 0, 64 * 1024},
    [CAP_T_AUTH_USER] = {CAP_STR, 0, 256},
    [CAP_T_DEVICE_ID] = {CAP_STR, 0, 128},
    [CAP_T_PENDING] = {CAP_U64, 0, 8},
    [CAP_T_SERIAL] = {CAP_STR, 0, 64},
    [CAP_T_REQUEST_ID] = {CAP_U64, 0, 8},
    [CAP_T_ISSUER] = {CAP_STR, 0, 128},
    [CAP_T_OCSP_REQ] = {CAP_BYTES, 0, 64 * 1024},
    [CAP_T_CERT] = {CAP_BYTES, 0, 64 * 1024},
    [CAP_T_CA_CERT] = {CAP_BYTES, 1, 64 * 1024},
    [CAP_T_CRL] = {CAP_BYTES, 0, CAP_RESP_MAX - 1024},
    [CAP_T_OCSP_RESP] = {CAP_BYTES, 0, 64 * 1024},
    [CAP_T_STATUS] = {CAP_STR, 0, 32},
    [CAP_T_MESSAGE] = {CAP_STR, 0, 2048},
    [CAP_T_REASON] = {CAP_U64, 0, 8},
    [CAP_T_INSTANCE] = {CAP_STR, 0, 128},
    [CAP_T_FIXTURE] = {CAP_STR, 0, 128},
    [CAP_T_LEASE] = {CAP_U64, 0, 8},
    [CAP_T_HOLDER] = {CAP_STR, 0, 512},
    [CAP_T_VERSION] = {CAP_U64, 0, 8},
    [CAP_T_ROLE] = {CAP_STR, 1, 64},
    [CAP_T_RETRY_AFTER] = {CAP_U64, 0, 8},
    [CAP_T_NOT_AFTER] = {CAP_U64, 0, 8},
    [CAP_T_STATE] = {CAP_STR, 0, 32},
    [CAP_T_KEY_TYPE] = {CAP_STR, 1, 16},
    [CAP_T_DEVICE_CERT] = {CAP_U64, 0, 8},
    [CAP_T_COUNT] = {CAP_U64, 0, 8},
    [CAP_T_MODEL] = {CAP_STR, 0, 64},
    [CAP_T_DETAIL] = {CAP_STR, 0, 512},
    [CAP_T_PEND_CERT] = {CAP_BYTES, 1, 64 * 1024},
    [CAP_T_AGE] = {CAP_U64, 0, 8},
    [CAP_T_MATTER_DISCRIMINATOR] = {CAP_U64, 0, 8},
    [CAP_T_MATTER_ITERATIONS] = {CAP_U64, 0, 8},
    [CAP_T_MATTER_SALT] = {CAP_BYTES, 0, 32},
    [CAP_T_MATTER_VERIFIER] = {CAP_BYTES, 0, 97},
    [CAP_T_MATTER_PASSCODE] = {CAP_U64, 0, 8},
};

typedef struct {
    const char *name;
    uint64_t req, req_need; /* fields a request may carry / must carry */
    uint64_t rsp, rsp_need; /* the same for a successful answer */
} cap_op_info;

#define AUTHF (B(CAP_T_AUTH) | B(CAP_T_AUTH_SERIAL) | B(CAP_T_AUTH_USER) | B(CAP_T_AUTH_CERT))
#define CLAIMF (B(CAP_T_DEVICE_ID) | B(CAP_T_INSTANCE) | B(CAP_T_FIXTURE))
#define MATTERF                                                                                    \
    (B(CAP_T_PROFILE) | B(CAP_T_DEVICE_ID) | B(CAP_T_SERIAL) | B(CAP_T_MATTER_DISCRIMINATOR) |     \
     B(CAP_T_MATTER_ITERATIONS) | B(CAP_T_MATTER_SALT) | B(CAP_T_MATTER_VERIFIER))

/* The request table. Adding a row is adding something a compromised front end can ask. */
static const cap_op_info cap_ops[CAP_OP__END] = {
    [CAP_OP_ORDER] = {"order", B(CAP_T_PROFILE) | B(CAP_T_STATION) | B(CAP_T_MODEL),
                      B(CAP_T_PROFILE) | B(CAP_T_STATION),
                      B(CAP_T_ORDER) | B(CAP_T_MODEL) | B(CAP_T_COUNT) | B(CAP_T_ISSUED) |
                          B(CAP_T_EXPIRES) | B(CAP_T_STATE),
                      B(CAP_T_STATE)},
    [CAP_OP_ORDER_CLOSE] = {"order-close",
                            B(CAP_T_PROFILE) | B(CAP_T_STATION) | B(CAP_T_ORDER) |
                                B(CAP_T_AUTH_USER),
                            B(CAP_T_PROFILE) | B(CAP_T_STATION) | B(CAP_T_ORDER), 0, 0},
    [CAP_OP_HELLO] = {"hello", B(CAP_T_VERSION), B(CAP_T_VERSION), B(CAP_T_VERSION) | B(CAP_T_ROLE),
                      B(CAP_T_VERSION)},
    [CAP_OP_ISSUE] = {"issue",
                      B(CAP_T_PROFILE) | B(CAP_T_CSR) | AUTHF | B(CAP_T_DEVICE_ID) |
                          B(CAP_T_PENDING) | B(CAP_T_STATION),
                      B(CAP_T_PROFILE) | B(CAP_T_CSR) | B(CAP_T_AUTH),
                      B(CAP_T_CERT) | B(CAP_T_SERIAL) | B(CAP_T_DEVICE_ID),
                      B(CAP_T_CERT) | B(CAP_T_SERIAL)},
    [CAP_OP_ACTIVATE] = {"activate", B(CAP_T_SERIAL), B(CAP_T_SERIAL), 0, 0},
    [CAP_OP_SUBMIT] = {"submit", B(CAP_T_PROFILE) | B(CAP_T_CSR) | AUTHF | B(CAP_T_DEVICE_ID),
                       B(CAP_T_PROFILE) | B(CAP_T_CSR) | B(CAP_T_AUTH),
                       B(CAP_T_REQUEST_ID) | B(CAP_T_STATUS) | B(CAP_T_CERT) | B(CAP_T_MESSAGE),
                       B(CAP_T_REQUEST_ID) | B(CAP_T_STATUS)},
    [CAP_OP_POLL] = {"poll", B(CAP_T_REQUEST_ID), B(CAP_T_REQUEST_ID),
                     B(CAP_T_REQUEST_ID) | B(CAP_T_STATUS) | B(CAP_T_CERT) | B(CAP_T_MESSAGE),
                     B(CAP_T_REQUEST_ID) | B(CAP_T_STATUS)},
    [CAP_OP_CACERTS] = {"cacerts", B(CAP_T_PROFILE), B(CAP_T_PROFILE),
                        B(CAP_T_CA_CERT) | B(CAP_T_ISSUER), B(CAP_T_ISSUER)},
    [CAP_OP_CRL] = {"crl", B(CAP_T_ISSUER), B(CAP_T_ISSUER), B(CAP_T_CRL), B(CAP_T_CRL)},
    [CAP_OP_OCSP] = {"ocsp", B(CAP_T_OCSP_REQ), B(CAP_T_OCSP_REQ), B(CAP_T_OCSP_RESP),
                     B(CAP_T_OCSP_RESP)},
    [CAP_OP_CERT_STATUS] = {"cert-status", B(CAP_T_SERIAL) | B(CAP_T_CERT), 0,
                            B(CAP_T_SERIAL) | B(CAP_T_STATUS) | B(CAP_T_DEVICE_ID) |
                                B(CAP_T_ISSUER) | B(CAP_T_NOT_AFTER) | B(CAP_T_MESSAGE),
                            B(CAP_T_SERIAL) | B(CAP_T_STATUS)},
    [CAP_OP_CLAIM] = {"claim", CLAIMF | B(CAP_T_LEASE), CLAIMF, 0, 0},
    [CAP_OP_RELEASE] = {"release", CLAIMF, CLAIMF, 0, 0},
    [CAP_OP_ABANDON] = {"abandon", B(CAP_T_SERIAL) | B(CAP_T_REASON), B(CAP_T_SERIAL), 0, 0},
    [CAP_OP_DEVICE] = {"device", B(CAP_T_DEVICE_ID), B(CAP_T_DEVICE_ID),
                       B(CAP_T_DEVICE_ID) | B(CAP_T_STATE) | B(CAP_T_SERIAL) | B(CAP_T_STATUS) |
                           B(CAP_T_CERT),
                       B(CAP_T_DEVICE_ID) | B(CAP_T_STATE)},
    [CAP_OP_PROFILE] = {"profile", B(CAP_T_PROFILE), B(CAP_T_PROFILE),
                        B(CAP_T_ISSUER) | B(CAP_T_KEY_TYPE) | B(CAP_T_DEVICE_CERT),
                        B(CAP_T_ISSUER) | B(CAP_T_DEVICE_CERT)},
    [CAP_OP_CA_CHAIN] = {"ca-chain", B(CAP_T_ISSUER), B(CAP_T_ISSUER),
                         B(CAP_T_ISSUER) | B(CAP_T_CA_CERT), B(CAP_T_ISSUER) | B(CAP_T_CA_CERT)},
    [CAP_OP_PENDING] = {"pending", B(CAP_T_PROFILE), B(CAP_T_PROFILE), B(CAP_T_COUNT),
                        B(CAP_T_COUNT)},
    [CAP_OP_INVENTORY] = {"inventory",
                          B(CAP_T_PROFILE) | B(CAP_T_DEVICE_ID) | B(CAP_T_MODEL) | B(CAP_T_STATE) |
                              B(CAP_T_DETAIL) | B(CAP_T_SERIAL),
                          B(CAP_T_PROFILE) | B(CAP_T_DEVICE_ID) | B(CAP_T_MODEL) | B(CAP_T_STATE) |
                              B(CAP_T_DETAIL),
                          0, 0},
    [CAP_OP_KNOWN] = {"known", B(CAP_T_PROFILE) | B(CAP_T_DEVICE_ID),
                      B(CAP_T_PROFILE) | B(CAP_T_DEVICE_ID),
                      B(CAP_T_DEVICE_ID) | B(CAP_T_STATE) | B(CAP_T_DETAIL) | B(CAP_T_SERIAL) |
                          B(CAP_T_STATUS) | B(CAP_T_CERT) | B(CAP_T_PEND_CERT),
                      B(CAP_T_DEVICE_ID)},
    [CAP_OP_REVOKE] = {"revoke", B(CAP_T_SERIAL) | B(CAP_T_REASON),
                       B(CAP_T_SERIAL) | B(CAP_T_REASON), 0, 0},
    [CAP_OP_SWEEP] = {"sweep", B(CAP_T_PROFILE) | B(CAP_T_AGE) | B(CAP_T_INSTANCE),
                      B(CAP_T_PROFILE) | B(CAP_T_AGE) | B(CAP_T_INSTANCE), B(CAP_T_COUNT),
                      B(CAP_T_COUNT)},
    [CAP_OP_PROOF_FAIL] = {"proof-failed", B(CAP_T_DEVICE_ID) | B(CAP_T_SERIAL) | B(CAP_T_MESSAGE),
                           B(CAP_T_DEVICE_ID) | B(CAP_T_SERIAL) | B(CAP_T_MESSAGE), 0, 0},
    [CAP_OP_MATTER] = {"matter", MATTERF | B(CAP_T_MATTER_PASSCODE), MATTERF, 0, 0},
};

/* What an error answer may carry, whatever the op. */
#define CAP_ERR_FIELDS (B(CAP_T_MESSAGE) | B(CAP_T_HOLDER) | B(CAP_T_RETRY_AFTER))

const char *cap_op_name(uint8_t op)
{
    return op > 0 && op < CAP_OP__END && cap_ops[op].name ? cap_ops[op].name : "?";
}

static uint32_t cap_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t cap_frame_len(const uint8_t hdr[4])
{
    return cap_be32(hdr);
}

static kl_rc cap_field_check(const cap_field *f)
{
    const cap_tag_info *ti = &cap_tags[f->tag];
    if (f->len > ti->max) {
        return kl_fail(KL_EINPUT, "field %u: %u bytes, at most %u", f->tag, f->len, ti->max);
    }
    if (ti->type == CAP_U64 && f->len != 8) {
        return kl_fail(KL_EINPUT, "field %u: an integer is 8 bytes, not %u", f->tag, f->len);
    }
    if (ti->type == CAP_STR) {
        if (f->len == 0) {
            return kl_fail(KL_EINPUT, "field %u: empty string", f->tag);
        }
        for (uint32_t i = 0; i < f->len; i++) {
            if (f->val[i] < 0x20 || f->val[i] == 0x7f) {
                return kl_fail(KL_EINPUT, "field %u: control byte 0x%02x in a string", f->tag,
                               f->val[i]);
            }
        }
    }
    return KL_OK;
}

kl_rc cap_msg_parse(const uint8_t *body, size_t len, int is_response, cap_msg *out)
{
    memset(out, 0, sizeof *out);
    if (len < 3) {
        return kl_fail(KL_EINPUT, "frame of %zu bytes is shorter than its header", len);
    }
    out->version = body[0];
    out->op = body[1];
    out->status = body[2];
    if (out->version != CAP_VERSION) {
        return kl_fail(KL_EINPUT, "protocol version %u, this side speaks %u", out->version,
                       CAP_VERSION);
    }
    if (out->op == 0 || out->op >= CAP_OP__END || !cap_ops[out->op].name) {
        return kl_fail(KL_EINPUT, "unknown op %u", out->op);
    }
    if (!is_response && out->status != 0) {
        return kl_fail(KL_EINPUT, "a request carries status 0, not %u", out->status);
    }
    if (out->status > KL_EUNAVAIL) {
        return kl_fail(KL_EINPUT, "unknown status %u", out->status);
    }
    const cap_op_info *oi = &cap_ops[out->op];
    uint64_t allowed = !is_response ? oi->req : out->status == KL_OK ? oi->rsp : CAP_ERR_FIELDS;
    uint64_t need = !is_response ? oi->req_need : out->status == KL_OK ? oi->rsp_need : 0;
    uint64_t seen = 0;
    size_t pos = 3;
    while (pos < len) {
        if (len - pos < 5) {
            return kl_fail(KL_EINPUT, "truncated field header at byte %zu", pos);
        }
        cap_field f = {.tag = body[pos], .len = cap_be32(body + pos + 1)};
        pos += 5;
        if (f.len > len - pos) {
            return kl_fail(KL_EINPUT, "field %u: %u bytes announced, %zu left", f.tag, f.len,
                           len - pos);
        }
        f.val = body + pos;
        pos += f.len;
        if (f.tag == 0 || f.tag >= CAP_T__END || !(allowed & B(f.tag))) {
            return kl_fail(KL_EINPUT, "%s %s: field %u not allowed", cap_op_name(out->op),
                           is_response ? "answer" : "request", f.tag);
        }
        if ((seen & B(f.tag)) && !cap_tags[f.tag].repeat) {
            return kl_fail(KL_EINPUT, "field %u appears twice", f.tag);
        }
        if (out->n == CAP_FIELDS_MAX) {
            return kl_fail(KL_EINPUT, "more than %d fields", CAP_FIELDS_MAX);
        }
        kl_rc rc = cap_field_check(&f);
        if (rc != KL_OK) {
            return rc;
        }
        seen |= B(f.tag);
        out->f[out->n++] = f;
    }
    if ((seen & need) != need) {
        for (unsigned t = 1; t < CAP_T__END; t++) {
            if ((need & B(t)) && !(seen & B(t))) {
                return kl_fail(KL_EINPUT, "%s %s: required field %u missing", cap_op_name(out->op),
                               is_response ? "answer" : "request", t);
            }
        }
    }
    return KL_OK;
}

static void cap_be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

kl_rc cap_msg_begin(kl_buf *b, cap_op op, uint8_t status)
{
    uint8_t hdr[7] = {0, 0, 0, 0, CAP_VERSION, (uint8_t)op, status};
    kl_buf_reset(b);
    return kl_buf_put(b, hdr, sizeof hdr);
}

kl_rc cap_put_bytes(kl_buf *b, cap_tag tag, const void *val, size_t len)
{
    if (tag == 0 || tag >= CAP_T__END || len > cap_tags[tag].max) {
        return kl_fail(KL_EINPUT, "field %u: %zu bytes do not fit the protocol", tag, len);
    }
    uint8_t hdr[5];
    hdr[0] = (uint8_t)tag;
    cap_be32_put(hdr + 1, (uint32_t)len);
    size_t mark = b->len;
    kl_rc rc = kl_buf_put(b, hdr, sizeof hdr);
    if (rc == KL_OK && len) {
        rc = kl_buf_put(b, val, len);
        if (rc != KL_OK) {
            b->len = mark;
        }
    }
    return rc;
}

kl_rc cap_put_str(kl_buf *b, cap_tag tag, const char *s)
{
    return s ? cap_put_bytes(b, tag, s, strlen(s)) : KL_OK;
}

kl_rc cap_put_u64(kl_buf *b, cap_tag tag, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    return cap_put_bytes(b, tag, be, sizeof be);
}

kl_rc cap_msg_end(kl_buf *b)
{
    if (b->len < 7 || b->len - 4 > UINT32_MAX) {
        return kl_fail(KL_EINTERNAL, "cap_msg_end without cap_msg_begin");
    }
    cap_be32_put(b->data, (uint32_t)(b->len - 4));
    return KL_OK;
}

const cap_field *cap_find(const cap_msg *m, cap_tag tag, size_t idx)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->f[i].tag == tag && idx-- == 0) {
            return &m->f[i];
        }
    }
    return NULL;
}

kl_rc cap_get_str(const cap_msg *m, cap_tag tag, char *out, size_t cap)
{
    const cap_field *f = cap_find(m, tag, 0);
    if (!f) {
        return kl_fail(KL_ENOTFOUND, "field %u absent", tag);
    }
    if (f->len >= cap) {
        return kl_fail(KL_EINPUT, "field %u: %u bytes, room for %zu", tag, f->len, cap - 1);
    }
    memcpy(out, f->val, f->len);
    out[f->len] = 0;
    return KL_OK;
}

uint64_t cap_get_u64(const cap_msg *m, cap_tag tag, uint64_t dflt)
{
    const cap_field *f = cap_find(m, tag, 0);
    if (!f || f->len != 8) {
        return dflt;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | f->val[i];
    }
    return v;
}
