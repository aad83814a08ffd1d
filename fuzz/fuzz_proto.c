/* libFuzzer harness for the line protocol codec (provisioner/device/kl_proto.c).
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I provisioner/device \
 *            fuzz/fuzz_proto.c provisioner/device/kl_proto.c -o fuzz_proto
 * CMake (to be wired in fuzz/CMakeLists.txt by the lead): link keyline_proto; no other deps.
 *
 * The input is fed to two decoders (full-size and a tiny one, so the oversize path is hot) in
 * chunks whose sizes come from the input itself; every decoded frame's payload is run through
 * the TLV checker and getters, and re-encoded and decoded again (round trip must be exact).
 * Invariants checked with __builtin_trap: frames lie inside the decoder buffer, consumed
 * counts make progress, the re-encoded frame decodes to the same fields. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kl_proto.h"

static uint8_t rx_big[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
static uint8_t rx_small[KL_PROTO_RAW_LEN(32)];
static uint8_t rx_check[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
static uint8_t wire[KL_PROTO_WIRE_MAX(KL_PROTO_MAX_PAYLOAD)];

static void check_frame(const kl_proto_frame *f, const uint8_t *buf, size_t cap)
{
    kl_proto_dec dec;
    kl_proto_frame g;
    const uint8_t *v;
    size_t vl, wl = 0, used = 0;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    char s[80];

    if (f->payload < buf || f->payload + f->payload_len > buf + cap) {
        __builtin_trap();
    }
    if (kl_tlv_check(f->payload, f->payload_len) == KL_PROTO_OK) {
        (void)kl_tlv_get(f->payload, f->payload_len, KL_TAG_CERT, &v, &vl);
        (void)kl_tlv_get_u8(f->payload, f->payload_len, KL_TAG_STATE, &u8);
        (void)kl_tlv_get_u16(f->payload, f->payload_len, KL_TAG_MAX_PAYLOAD, &u16);
        (void)kl_tlv_get_str(f->payload, f->payload_len, KL_TAG_MODEL, s, sizeof(s));
        (void)kl_tlv_get_u32(f->payload, f->payload_len, KL_TAG_MATTER_ITERATIONS, &u32);
        (void)kl_proto_matter_check(f->payload, f->payload_len);
    }
    if (f->version != KL_PROTO_VERSION) {
        return; /* the encoder only writes v1 */
    }
    if (kl_proto_encode(wire, sizeof(wire), &wl, f->type, f->seq, f->flags, f->payload,
                        f->payload_len) != KL_PROTO_OK) {
        __builtin_trap();
    }
    if (kl_proto_dec_init(&dec, rx_check, sizeof(rx_check)) != KL_PROTO_OK ||
        kl_proto_feed(&dec, wire, wl, &used, &g) != KL_PROTO_FRAME || used != wl ||
        g.type != f->type || g.seq != f->seq || g.crc != f->crc ||
        g.payload_len != f->payload_len || memcmp(g.payload, f->payload, f->payload_len) != 0) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_proto_dec big, small;
    kl_proto_frame f;
    size_t off, used, chunk;
    int rc;

    if (kl_proto_dec_init(&big, rx_big, sizeof(rx_big)) != KL_PROTO_OK ||
        kl_proto_dec_init(&small, rx_small, sizeof(rx_small)) != KL_PROTO_OK) {
        __builtin_trap();
    }
    for (off = 0; off < size; off += used) {
        chunk = 1u + (size_t)(data[off] % 97u); /* input-driven chunking */
        if (chunk > size - off) {
            chunk = size - off;
        }
        rc = kl_proto_feed(&big, data + off, chunk, &used, &f);
        if (used == 0 || used > chunk) {
            __builtin_trap();
        }
        if (rc == KL_PROTO_FRAME) {
            check_frame(&f, rx_big, sizeof(rx_big));
        }
    }
    for (off = 0; off < size; off += used) {
        rc = kl_proto_feed(&small, data + off, size - off, &used, &f);
        if (used == 0) {
            __builtin_trap();
        }
        if (rc == KL_PROTO_FRAME) {
            check_frame(&f, rx_small, sizeof(rx_small));
        }
    }
    return 0;
}
