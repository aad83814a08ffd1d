/* Unit tests for the line protocol codec (provisioner/device/kl_proto.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kl_proto.h"

#define RAWMAX KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)
#define WIREMAX KL_PROTO_WIRE_MAX(KL_PROTO_MAX_PAYLOAD)

/* Deterministic PRNG (xorshift32) so failures reproduce. */
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Reference COBS encoder for raw byte strings (lets tests build frames the codec would never
 * emit: wrong length field, wrong version, short frames). Appends the 0x00 delimiter. */
static size_t cobs_raw(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_pos = 0, pos = 1, i;
    uint8_t code = 1;
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_pos] = code;
            code_pos = pos++;
            code = 1;
        } else {
            out[pos++] = in[i];
            if (++code == 0xFF) {
                out[code_pos] = code;
                code_pos = pos++;
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    out[pos++] = 0;
    return pos;
}

/* header + payload + correct CRC, with an arbitrary length field */
static size_t raw_frame(uint8_t *raw, uint8_t ver, uint8_t type, uint16_t seq, uint16_t lenfield,
                        const uint8_t *payload, size_t plen)
{
    uint32_t crc;
    raw[0] = ver;
    raw[1] = type;
    raw[2] = (uint8_t)(seq >> 8);
    raw[3] = (uint8_t)seq;
    raw[4] = 0;
    raw[5] = (uint8_t)(lenfield >> 8);
    raw[6] = (uint8_t)lenfield;
    if (plen) {
        memcpy(raw + 7, payload, plen);
    }
    crc = kl_crc32(0, raw, 7 + plen);
    raw[7 + plen] = (uint8_t)(crc >> 24);
    raw[8 + plen] = (uint8_t)(crc >> 16);
    raw[9 + plen] = (uint8_t)(crc >> 8);
    raw[10 + plen] = (uint8_t)crc;
    return 11 + plen;
}

static void test_crc32_vectors(void **state)
{
    (void)state;
    assert_int_equal(kl_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u);
    assert_int_equal(kl_crc32(0, NULL, 0), 0);
    /* incremental == one shot */
    assert_int_equal(kl_crc32(kl_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5),
                     0xCBF43926u);
}

/* Encode payload, decode it (whole, then byte by byte), compare. */
static void roundtrip(const uint8_t *payload, size_t plen)
{
    static uint8_t wire[WIREMAX], rx[RAWMAX];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t wlen = 0, used = 0, i;
    int rc = 0, frames = 0;

    assert_int_equal(
        kl_proto_encode(wire, sizeof(wire), &wlen, KL_MSG_PUTCERT, 0xBEEF, 0, payload, plen),
        KL_PROTO_OK);
    assert_true(wlen <= KL_PROTO_WIRE_MAX(plen));
    for (i = 0; i + 1 < wlen; i++) {
        assert_int_not_equal(wire[i], 0); /* only the delimiter is zero */
    }
    assert_int_equal(wire[wlen - 1], 0);

    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);
    rc = kl_proto_feed(&dec, wire, wlen, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(used, wlen);
    assert_int_equal(f.version, KL_PROTO_VERSION);
    assert_int_equal(f.type, KL_MSG_PUTCERT);
    assert_int_equal(f.seq, 0xBEEF);
    assert_int_equal(f.payload_len, plen);
    if (plen) {
        assert_memory_equal(f.payload, payload, plen);
    }

    for (i = 0; i < wlen; i++) {
        rc = kl_proto_feed(&dec, wire + i, 1, &used, &f);
        assert_int_equal(used, 1);
        if (rc == KL_PROTO_FRAME) {
            frames++;
            assert_int_equal(i, wlen - 1);
        } else {
            assert_int_equal(rc, KL_PROTO_NEED_MORE);
        }
    }
    assert_int_equal(frames, 1);
    assert_int_equal(f.payload_len, plen);
    if (plen) {
        assert_memory_equal(f.payload, payload, plen);
    }
}

static void test_cobs_roundtrip_edges(void **state)
{
    static uint8_t p[KL_PROTO_MAX_PAYLOAD];
    static const size_t sizes[] = {0,   1,   2,   243, 244, 245, 246,  247,  253, 254,
                                   255, 256, 500, 507, 508, 509, 1000, 2047, 2048};
    size_t i, j;
    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        memset(p, 0, n); /* all zeros */
        roundtrip(p, n);
        memset(p, 0xA5, n); /* no zeros: exercises 0xFF blocks */
        roundtrip(p, n);
        for (j = 0; j < n; j++) { /* mixed */
            p[j] = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd());
        }
        roundtrip(p, n);
        for (j = 0; j < n; j++) { /* zero every 254th byte */
            p[j] = (uint8_t)(j % 254 == 253 ? 0 : 1);
        }
        roundtrip(p, n);
    }
}

static void test_encode_no_overflow(void **state)
{
    uint8_t payload[600], out[1200];
    size_t need = 0, n = 0, cap;
    (void)state;
    memset(payload, 0x11, sizeof(payload));
    assert_int_equal(kl_proto_encode(out, sizeof(out), &need, 3, 1, 0, payload, sizeof(payload)),
                     KL_PROTO_OK);
    for (cap = 0; cap < need; cap++) {
        memset(out, 0xEE, sizeof(out));
        assert_int_equal(kl_proto_encode(out, cap, &n, 3, 1, 0, payload, sizeof(payload)),
                         KL_PROTO_ESPACE);
        assert_int_equal(out[cap], 0xEE); /* nothing written past cap */
    }
    assert_int_equal(kl_proto_encode(out, need, &n, 3, 1, 0, payload, sizeof(payload)),
                     KL_PROTO_OK);
    assert_int_equal(n, need);
    assert_int_equal(kl_proto_encode(out, sizeof(out), &n, 3, 1, 0, NULL, 70000), KL_PROTO_EARG);
}

static void test_multiple_frames_and_idle(void **state)
{
    uint8_t wire[256], rx[RAWMAX];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t n1 = 0, n2 = 0, used = 0, off;
    int rc;
    (void)state;
    wire[0] = 0;
    wire[1] = 0; /* idle delimiters before a frame are ignored */
    assert_int_equal(kl_proto_encode(wire + 2, 100, &n1, KL_MSG_HELLO, 1, 0, NULL, 0), KL_PROTO_OK);
    assert_int_equal(kl_proto_encode(wire + 2 + n1, 100, &n2, KL_MSG_GENKEY, 2, 0,
                                     (const uint8_t *)"\x20\x00\x01\x01", 4),
                     KL_PROTO_OK);
    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);
    rc = kl_proto_feed(&dec, wire, 2 + n1 + n2, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(f.seq, 1);
    assert_int_equal(f.type, KL_MSG_HELLO);
    off = used;
    rc = kl_proto_feed(&dec, wire + off, 2 + n1 + n2 - off, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(f.seq, 2);
    assert_int_equal(f.payload_len, 4);
    assert_int_equal(off + used, 2 + n1 + n2);
}

static void test_corruption_rejected(void **state)
{
    uint8_t payload[300], wire[400], bad[400], rx[RAWMAX];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t wlen = 0, i, off, used;
    unsigned bit;
    int rc;
    (void)state;
    for (i = 0; i < sizeof(payload); i++) {
        payload[i] = (uint8_t)(i * 7);
    }
    assert_int_equal(
        kl_proto_encode(wire, sizeof(wire), &wlen, KL_MSG_PUTCERT, 9, 0, payload, sizeof(payload)),
        KL_PROTO_OK);
    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);
    /* Every single-bit error in every byte but the delimiter: never a frame. */
    for (i = 0; i + 1 < wlen; i++) {
        for (bit = 0; bit < 8; bit++) {
            memcpy(bad, wire, wlen);
            bad[i] ^= (uint8_t)(1u << bit);
            kl_proto_dec_reset(&dec);
            for (off = 0; off < wlen; off += used) {
                rc = kl_proto_feed(&dec, bad + off, wlen - off, &used, &f);
                assert_int_not_equal(rc, KL_PROTO_FRAME);
            }
        }
    }
    /* ...and the decoder recovers for the next good frame. */
    rc = kl_proto_feed(&dec, wire, wlen, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(f.payload_len, sizeof(payload));
}

static void test_specific_errors(void **state)
{
    uint8_t raw[64], wire[128], rx[RAWMAX];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t n, used;
    (void)state;
    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);

    /* bad COBS: code 0x05 promises 4 bytes, delimiter after 2 */
    {
        const uint8_t b[] = {0x05, 0x11, 0x22, 0x00};
        assert_int_equal(kl_proto_feed(&dec, b, sizeof(b), &used, &f), KL_PROTO_ECOBS);
        assert_int_equal(used, sizeof(b));
    }
    /* short: 3 decoded bytes */
    {
        const uint8_t b[] = {0x04, 0x01, 0x02, 0x03, 0x00};
        assert_int_equal(kl_proto_feed(&dec, b, sizeof(b), &used, &f), KL_PROTO_ESHORT);
    }
    /* length field says 5, payload is 3, CRC correct */
    n = raw_frame(raw, 1, KL_MSG_HELLO, 1, 5, (const uint8_t *)"abc", 3);
    n = cobs_raw(raw, n, wire);
    assert_int_equal(kl_proto_feed(&dec, wire, n, &used, &f), KL_PROTO_ELENGTH);
    /* CRC wrong */
    n = raw_frame(raw, 1, KL_MSG_HELLO, 1, 3, (const uint8_t *)"abc", 3);
    raw[n - 1] ^= 0x80;
    n = cobs_raw(raw, n, wire);
    assert_int_equal(kl_proto_feed(&dec, wire, n, &used, &f), KL_PROTO_ECRC);
    /* unknown version: decoded fine, version reported (the engine answers ERROR VERSION) */
    n = raw_frame(raw, 7, KL_MSG_HELLO, 1, 0, NULL, 0);
    n = cobs_raw(raw, n, wire);
    assert_int_equal(kl_proto_feed(&dec, wire, n, &used, &f), KL_PROTO_FRAME);
    assert_int_equal(f.version, 7);
    /* argument checks */
    assert_int_equal(kl_proto_dec_init(&dec, rx, 10), KL_PROTO_EARG);
    assert_int_equal(kl_proto_feed(&dec, NULL, 5, &used, &f), KL_PROTO_EARG);
    assert_string_equal(kl_proto_strerror(KL_PROTO_ECRC), "crc");
    assert_string_equal(kl_proto_msg_name(KL_MSG_RESP(KL_MSG_LOCK)), "LOCK_R");
    assert_string_equal(kl_proto_msg_name(0x42), "?");
    assert_string_equal(kl_proto_err_name(KL_ERR_REFUSED), "REFUSED");
    assert_string_equal(kl_proto_state_name(KL_STATE_LOCKED), "LOCKED");
}

static void test_oversize_and_resync(void **state)
{
    static uint8_t payload[KL_PROTO_MAX_PAYLOAD], wire[WIREMAX], small_wire[64];
    uint8_t rx[KL_PROTO_RAW_LEN(100)];
    kl_proto_dec dec;
    kl_proto_frame f;
    size_t wlen = 0, swlen = 0, used, i, off;
    int rc, seen_err = 0;
    (void)state;
    memset(payload, 0x33, sizeof(payload));
    assert_int_equal(kl_proto_encode(wire, sizeof(wire), &wlen, 5, 1, 0, payload, 101),
                     KL_PROTO_OK);
    assert_int_equal(kl_proto_encode(small_wire, sizeof(small_wire), &swlen, 1, 2, 0, payload, 10),
                     KL_PROTO_OK);
    assert_int_equal(kl_proto_dec_init(&dec, rx, sizeof(rx)), KL_PROTO_OK);
    rc = kl_proto_feed(&dec, wire, wlen, &used, &f);
    assert_int_equal(rc, KL_PROTO_EOVERSIZE);
    rc = kl_proto_feed(&dec, small_wire, swlen, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
    assert_int_equal(f.seq, 2);

    /* A flood without delimiter stays inside the buffer, then one error, then resync. */
    for (i = 0; i < 100000; i++) {
        uint8_t b = (uint8_t)(rnd() | 1u);
        rc = kl_proto_feed(&dec, &b, 1, &used, &f);
        assert_int_equal(rc, KL_PROTO_NEED_MORE);
    }
    for (off = 0; off < swlen; off += used) {
        rc = kl_proto_feed(&dec, small_wire + off, swlen - off, &used, &f);
        if (rc < 0) {
            seen_err++;
        }
    }
    /* first delimiter ends the flood (error), the small frame then needs a second feed */
    assert_int_equal(seen_err, 1);
    rc = kl_proto_feed(&dec, small_wire, swlen, &used, &f);
    assert_int_equal(rc, KL_PROTO_FRAME);
}

static void test_tlv_put_get(void **state)
{
    uint8_t buf[64], b8 = 0, fixed[4];
    uint16_t b16 = 0;
    char s[8];
    const uint8_t *v;
    size_t vl = 0, saved;
    kl_tlv_w w;
    (void)state;
    kl_tlv_w_init(&w, buf, sizeof(buf));
    assert_int_equal(kl_tlv_put_u8(&w, 1, 0x7F), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_u16(&w, 2, 0x1234), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put_str(&w, 3, "hello"), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, 4, "\x00\x01\x02\x03", 4), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, 5, NULL, 0), KL_PROTO_OK);
    saved = w.len;
    assert_int_equal(kl_tlv_put(&w, 6, buf, sizeof(buf)), KL_PROTO_ESPACE);
    assert_int_equal(w.len, saved); /* unchanged on failure */
    assert_int_equal(kl_tlv_check(buf, w.len), KL_PROTO_OK);

    assert_int_equal(kl_tlv_get_u8(buf, w.len, 1, &b8), KL_PROTO_OK);
    assert_int_equal(b8, 0x7F);
    assert_int_equal(kl_tlv_get_u16(buf, w.len, 2, &b16), KL_PROTO_OK);
    assert_int_equal(b16, 0x1234);
    assert_int_equal(kl_tlv_get_str(buf, w.len, 3, s, sizeof(s)), KL_PROTO_OK);
    assert_string_equal(s, "hello");
    assert_int_equal(kl_tlv_get_str(buf, w.len, 3, s, 5), KL_PROTO_EFORMAT); /* no room for NUL */
    assert_int_equal(kl_tlv_get_str(buf, w.len, 4, s, sizeof(s)), KL_PROTO_EFORMAT); /* NUL */
    assert_int_equal(kl_tlv_get_fixed(buf, w.len, 4, fixed, 4), KL_PROTO_OK);
    assert_int_equal(kl_tlv_get_fixed(buf, w.len, 4, fixed, 3), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_get_u8(buf, w.len, 2, &b8), KL_PROTO_EFORMAT); /* wrong width */
    assert_int_equal(kl_tlv_get(buf, w.len, 5, &v, &vl), KL_PROTO_OK);
    assert_int_equal(vl, 0);
    assert_int_equal(kl_tlv_get(buf, w.len, 9, &v, &vl), KL_PROTO_ENOTFOUND);
    assert_int_equal(kl_tlv_get_var(buf, w.len, 3, 6, 10, &v, &vl), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_check(NULL, 0), KL_PROTO_OK);
}

static void test_tlv_bounds(void **state)
{
    /* value runs past the end */
    const uint8_t trunc_val[] = {0x01, 0x00, 0x05, 0xAA, 0xBB};
    /* header cut short */
    const uint8_t trunc_hdr[] = {0x01, 0x00, 0x01, 0xAA, 0x02, 0x00};
    /* duplicate tag */
    const uint8_t dup[] = {0x01, 0x00, 0x01, 0xAA, 0x01, 0x00, 0x01, 0xBB};
    /* huge length */
    const uint8_t huge[] = {0x01, 0xFF, 0xFF, 0x00};
    const uint8_t *v;
    size_t vl;
    uint8_t b;
    (void)state;
    assert_int_equal(kl_tlv_check(trunc_val, sizeof(trunc_val)), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_get(trunc_val, sizeof(trunc_val), 1, &v, &vl), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_check(trunc_hdr, sizeof(trunc_hdr)), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_get(trunc_hdr, sizeof(trunc_hdr), 2, &v, &vl), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_get_u8(trunc_hdr, sizeof(trunc_hdr), 1, &b), KL_PROTO_OK);
    assert_int_equal(kl_tlv_check(dup, sizeof(dup)), KL_PROTO_EFORMAT);
    assert_int_equal(kl_tlv_check(huge, sizeof(huge)), KL_PROTO_EFORMAT);
    /* writer at exact capacity */
    {
        uint8_t buf[5];
        kl_tlv_w w;
        kl_tlv_w_init(&w, buf, sizeof(buf));
        assert_int_equal(kl_tlv_put(&w, 1, "ab", 2), KL_PROTO_OK);
        assert_int_equal(w.len, 5);
        assert_int_equal(kl_tlv_put(&w, 2, NULL, 0), KL_PROTO_ESPACE);
    }
}

static void test_signed_message_helpers(void **state)
{
    uint8_t out[KL_PROTO_CHALLENGE_MSG_MAX], nonce[16];
    size_t n = 0;
    (void)state;
    memset(nonce, 0xAB, sizeof(nonce));
    assert_int_equal(kl_proto_challenge_msg(out, sizeof(out), &n, "SN1", nonce, 16), KL_PROTO_OK);
    assert_int_equal(n, 20 + 1 + 3 + 16);
    assert_memory_equal(out, "keyline challenge v1\x03SN1", 24);
    assert_memory_equal(out + 24, nonce, 16);
    assert_int_equal(kl_proto_challenge_msg(out, sizeof(out), &n, "SN1", nonce, 15), KL_PROTO_EARG);
    assert_int_equal(kl_proto_challenge_msg(out, 10, &n, "SN1", nonce, 16), KL_PROTO_ESPACE);
    assert_int_equal(kl_proto_inject_info(out, sizeof(out), &n, "SN1"), KL_PROTO_OK);
    assert_int_equal(n, 20);
    assert_memory_equal(out, "keyline inject v1SN1", 20);
    assert_int_equal(kl_proto_inject_info(out, sizeof(out), &n, ""), KL_PROTO_EARG);
}

/* Fuzz-ish: random bytes and mutated frames in random chunks, small and full-size decoders.
 * Nothing may crash (run under ASan in CI) and every frame must lie inside the buffer. */
/* MATTER (spec 4.10): u32 fields, and the payload check both sides use */
static void test_matter_check(void **state)
{
    uint8_t b[1200], v97[97], salt[16];
    const uint8_t *v;
    size_t vl;
    uint32_t u = 0;
    kl_tlv_w w;
    (void)state;
    memset(v97, 0x33, sizeof(v97));
    v97[32] = 0x04;
    memset(salt, 1, sizeof(salt));
    kl_tlv_w_init(&w, b, sizeof(b));
    assert_int_equal(kl_tlv_put_u32(&w, KL_TAG_MATTER_ITERATIONS, 100000u), KL_PROTO_OK);
    assert_int_equal(kl_tlv_get_u32(b, w.len, KL_TAG_MATTER_ITERATIONS, &u), KL_PROTO_OK);
    assert_int_equal(u, 100000u);
    assert_memory_equal(b, "\x82\x00\x04\x00\x01\x86\xa0", 7);
    assert_int_equal(kl_proto_matter_check(b, w.len), KL_PROTO_ENOTFOUND);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_MATTER_CD, "cd", 2), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_MATTER_SALT, salt, sizeof(salt)), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_MATTER_UNIQUE_ID, salt, sizeof(salt)), KL_PROTO_OK);
    assert_int_equal(kl_tlv_put(&w, KL_TAG_MATTER_VERIFIER, v97, sizeof(v97)), KL_PROTO_OK);
    assert_int_equal(kl_proto_matter_check(b, w.len), KL_PROTO_ENOTFOUND);
    assert_int_equal(kl_tlv_put_u16(&w, KL_TAG_MATTER_DISCRIMINATOR, 4095), KL_PROTO_OK);
    assert_int_equal(kl_proto_matter_check(b, w.len), KL_PROTO_OK);
    /* each bound: a salt one byte short, a verifier whose L is not uncompressed */
    assert_int_equal(kl_tlv_get(b, w.len, KL_TAG_MATTER_SALT, &v, &vl), KL_PROTO_OK);
    b[(size_t)(v - b) - 1] = 15; /* length field's low byte */
    assert_int_equal(kl_proto_matter_check(b, w.len), KL_PROTO_EFORMAT);
    b[(size_t)(v - b) - 1] = 16;
    assert_int_equal(kl_tlv_get(b, w.len, KL_TAG_MATTER_VERIFIER, &v, &vl), KL_PROTO_OK);
    b[(size_t)(v - b) + 32] = 0x02;
    assert_int_equal(kl_proto_matter_check(b, w.len), KL_PROTO_EFORMAT);
    assert_string_equal(kl_proto_msg_name(KL_MSG_MATTER), "MATTER");
    assert_string_equal(kl_proto_msg_name(KL_MSG_RESP(KL_MSG_MATTER)), "MATTER_R");
}

static void test_random_input(void **state)
{
    static uint8_t rx[RAWMAX], wire[WIREMAX], in[4096];
    uint8_t rx_small[KL_PROTO_RAW_LEN(16)];
    kl_proto_dec big, small;
    kl_proto_frame f;
    size_t iter, n, off, used, chunk;
    int rc, frames = 0;
    (void)state;
    assert_int_equal(kl_proto_dec_init(&big, rx, sizeof(rx)), KL_PROTO_OK);
    assert_int_equal(kl_proto_dec_init(&small, rx_small, sizeof(rx_small)), KL_PROTO_OK);
    for (iter = 0; iter < 3000; iter++) {
        n = rnd() % sizeof(in);
        if (iter % 2 == 0) {
            size_t i;
            for (i = 0; i < n; i++) {
                in[i] = (uint8_t)(rnd() % 4 == 0 ? 0 : rnd());
            }
        } else {
            /* a valid frame with a few mutations */
            size_t plen = rnd() % 300, i, wl = 0;
            for (i = 0; i < plen; i++) {
                in[i] = (uint8_t)rnd();
            }
            assert_int_equal(kl_proto_encode(wire, sizeof(wire), &wl, (uint8_t)rnd(),
                                             (uint16_t)rnd(), 0, in, plen),
                             KL_PROTO_OK);
            for (i = 0; i < (rnd() % 3); i++) {
                wire[rnd() % wl] = (uint8_t)rnd();
            }
            memcpy(in, wire, wl);
            n = wl;
        }
        for (off = 0; off < n; off += used) {
            chunk = 1 + rnd() % 64;
            if (chunk > n - off) {
                chunk = n - off;
            }
            rc = kl_proto_feed(&big, in + off, chunk, &used, &f);
            assert_true(used >= 1 && used <= chunk);
            if (rc == KL_PROTO_FRAME) {
                frames++;
                assert_true(f.payload >= rx && f.payload + f.payload_len <= rx + sizeof(rx));
                (void)kl_tlv_check(f.payload, f.payload_len);
            }
        }
        for (off = 0; off < n; off += used) {
            rc = kl_proto_feed(&small, in + off, n - off, &used, &f);
            if (rc == KL_PROTO_FRAME) {
                assert_true(f.payload_len <= 16);
            }
        }
    }
    assert_true(frames > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_vectors),       cmocka_unit_test(test_cobs_roundtrip_edges),
        cmocka_unit_test(test_encode_no_overflow),  cmocka_unit_test(test_multiple_frames_and_idle),
        cmocka_unit_test(test_corruption_rejected), cmocka_unit_test(test_specific_errors),
        cmocka_unit_test(test_oversize_and_resync), cmocka_unit_test(test_tlv_put_get),
        cmocka_unit_test(test_tlv_bounds),          cmocka_unit_test(test_signed_message_helpers),
        cmocka_unit_test(test_random_input),        cmocka_unit_test(test_matter_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
