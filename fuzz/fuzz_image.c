/* libFuzzer harness for the device's firmware image parser (provisioner/device/kl_dev_image.c).
 *
 * Every input is verified as it is, then once more with its SHA256 TLV fixed up to the hash the
 * header says it covers, so the fuzzer gets past the hash check into the key hash and the DER
 * signature parsing. The key is the one that signed the corpus (tests/data/firmware's imgtool
 * key), so corpus images reach the real ECDSA verification; the crypto is the devsim port's
 * (OpenSSL). The input is copied into a buffer of exactly its size, so ASan catches any read
 * past it. Invariants (__builtin_trap): the verdict is one of the documented ones; an accepted
 * image's reported sizes lie inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devsim_port.h"
#include "kl_dev_image.h"

static const uint8_t fuzz_key[65] = {
    0x04, 0x40, 0x74, 0x21, 0x86, 0xa1, 0xfd, 0x0d, 0xac, 0x99, 0xf6, 0x1c, 0x98,
    0xaa, 0xb2, 0x0a, 0x3d, 0x69, 0x44, 0xf8, 0x46, 0x2e, 0xf3, 0x68, 0xb1, 0x7b,
    0x7b, 0x1c, 0x32, 0x32, 0x1a, 0x23, 0xc0, 0xd8, 0x04, 0x22, 0xe5, 0x60, 0x1f,
    0xc2, 0x9f, 0xe1, 0x37, 0x0c, 0xf1, 0x12, 0x7b, 0xdf, 0x6c, 0x0e, 0xcd, 0xc2,
    0x7c, 0x96, 0xa8, 0x00, 0x66, 0x66, 0x13, 0x02, 0x64, 0xfb, 0x08, 0x10, 0x8d};

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static void check(const uint8_t *img, size_t len)
{
    kl_img_info info;
    const uint8_t(*keys)[65] = &fuzz_key;
    int rc = kl_img_verify(&devsim_port_ops, NULL, img, len, keys, 1, 1, &info);
    if (rc > 0 || rc < KL_IMG_ESTORAGE || rc == KL_IMG_EARG || rc == KL_IMG_EPORT) {
        __builtin_trap();
    }
    if (rc == KL_IMG_OK &&
        ((size_t)info.hdr_size + info.img_size > len || info.security_counter < 1)) {
        __builtin_trap();
    }
}

/* Write SHA-256 of what the header says is hashed into the first SHA256 TLV, when the areas
 * are where the header says (every read bounded by len). */
static void fix_hash(uint8_t *img, size_t len)
{
    if (len < 32) {
        return;
    }
    size_t hdr = rd16(img + 8), prot = rd16(img + 10);
    size_t isz = rd16(img + 12) | ((size_t)rd16(img + 14) << 16);
    if (hdr > len || isz > len - hdr || prot > len - hdr - isz || len - hdr - isz - prot < 4) {
        return;
    }
    size_t u = hdr + isz + prot, tot = rd16(img + u + 2), off = u + 4;
    if (tot > len - u) {
        return;
    }
    while (off + 4 <= u + tot) {
        size_t vlen = rd16(img + off + 2);
        if (rd16(img + off) == 0x10 && vlen == 32 && off + 4 + 32 <= u + tot) {
            (void)devsim_port_ops.sha256(NULL, img, u, img + off + 4);
            return;
        }
        off += 4 + vlen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *img = malloc(size ? size : 1);
    if (!img) {
        return 0;
    }
    memcpy(img, data, size);
    check(img, size);
    fix_hash(img, size);
    check(img, size);
    free(img);
    return 0;
}
