#include "kl_b64.h"

static const char kl_b64_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static uint8_t *b64_eol(uint8_t *p, int crlf)
{
    if (crlf) {
        *p++ = '\r';
    }
    *p++ = '\n';
    return p;
}

static int kl_b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

kl_rc kl_b64_decode(const char *in, size_t inlen, kl_buf *out)
{
    size_t start = out->len;
    uint32_t acc = 0;
    int nacc = 0, pad = 0;
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
            continue;
        }
        if (c == '=') {
            pad++;
            if (pad > 2) {
                rc = kl_fail(KL_EINPUT, "invalid base64: too much padding");
                goto bad;
            }
            continue;
        }
        int v = kl_b64_val(c);
        if (v < 0 || pad) {
            rc = kl_fail(KL_EINPUT, "invalid base64: unexpected byte 0x%02x at offset %zu", c, i);
            goto bad;
        }
        acc = (acc << 6) | (uint32_t)v;
        if (++nacc == 4) {
            uint8_t b[3] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8), (uint8_t)acc};
            if ((rc = kl_buf_put(out, b, 3)) != KL_OK) {
                goto bad;
            }
            acc = 0;
            nacc = 0;
        }
    }
    if (nacc == 1 || (pad && nacc + pad != 4)) {
        rc = kl_fail(KL_EINPUT, "invalid base64: truncated input");
        goto bad;
    }
    if (nacc == 2) {
        rc = kl_buf_put_u8(out, (uint8_t)(acc >> 4));
    } else if (nacc == 3) {
        uint8_t b[2] = {(uint8_t)(acc >> 10), (uint8_t)(acc >> 2)};
        rc = kl_buf_put(out, b, 2);
    }
    if (rc == KL_OK) {
        return KL_OK;
    }
bad:
    out->len = start;
    return rc;
}

/* The whole output's size is known from the input's: reserved once and written in place (a
 * byte at a time through kl_buf_put was a sixth of keyline-estd's work per enrollment). */
kl_rc kl_b64_encode(const uint8_t *in, size_t inlen, size_t wrap, int crlf, kl_buf *out)
{
    if (inlen > SIZE_MAX / 8) { /* the output, with a line break after each character, fits */
        return kl_fail(KL_EINPUT, "base64: input too large");
    }
    size_t chars = (inlen + 2) / 3 * 4, eol = crlf ? 2 : 1;
    size_t lines = wrap ? (chars + wrap - 1) / wrap : 0;
    uint8_t *p = NULL;
    kl_rc rc = kl_buf_put_space(out, chars + lines * eol, &p);
    if (rc != KL_OK) {
        return rc;
    }
    size_t col = 0;
    for (size_t i = 0; i < inlen; i += 3) {
        size_t left = inlen - i;
        uint32_t v = (uint32_t)in[i] << 16 | (left > 1 ? (uint32_t)in[i + 1] << 8 : 0) |
                     (left > 2 ? in[i + 2] : 0);
        char q[4] = {kl_b64_alpha[(v >> 18) & 63], kl_b64_alpha[(v >> 12) & 63],
                     left > 1 ? kl_b64_alpha[(v >> 6) & 63] : '=',
                     left > 2 ? kl_b64_alpha[v & 63] : '='};
        for (int k = 0; k < 4; k++) {
            *p++ = (uint8_t)q[k];
            if (wrap && ++col == wrap) {
                p = b64_eol(p, crlf);
                col = 0;
            }
        }
    }
    if (wrap && col) {
        p = b64_eol(p, crlf);
    }
    return KL_OK;
}

int kl_hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}
