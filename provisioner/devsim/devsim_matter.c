/* keyline-devsim: --print-matter (see devsim_matter.h, docs/line-protocol.md 4.10). */
#include "devsim_matter.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "kl_dev.h"
#include "kl_proto.h"

/* A stored certificate (chain position i) as a JSON string of its PEM, or 0. */
static int dm_cert_json(devsim_port *port, unsigned i, FILE *out)
{
    static uint8_t der[4096];
    size_t len = 0;
    char *mem = NULL;
    int ok = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (b && devsim_port_ops.store_read(port, (uint8_t)(KL_OBJ_CERT + i), der, sizeof der, &len) ==
                 KL_PORT_OK) {
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        long n = 0;
        if (x && p == der + len && PEM_write_bio_X509(b, x) == 1 &&
            (n = BIO_get_mem_data(b, &mem)) > 0) {
            fputc('"', out);
            for (long k = 0; k < n; k++) {
                if (mem[k] == '\n') {
                    fputs("\\n", out);
                } else {
                    fputc(mem[k], out);
                }
            }
            fputc('"', out);
            ok = 1;
        }
        X509_free(x);
    }
    BIO_free(b);
    return ok;
}

static void dm_b64(const uint8_t *v, size_t n, FILE *out)
{
    unsigned char *b = malloc(4 * ((n + 2) / 3) + 1);
    if (b) {
        EVP_EncodeBlock(b, v, (int)n);
        fprintf(out, "\"%s\"", (const char *)b);
        free(b);
    }
}

int devsim_matter_print(devsim_port *port, const char *state_file, FILE *out)
{
    static uint8_t m[KL_PROTO_MAX_PAYLOAD];
    size_t len = 0;
    const uint8_t *cd, *salt, *ver, *uid;
    size_t cdl, sl, vl, ul;
    uint16_t disc = 0;
    uint32_t iter = 0;
    if (devsim_port_ops.store_read(port, KL_OBJ_MATTER, m, sizeof m, &len) != KL_PORT_OK ||
        kl_proto_matter_check(m, len) != KL_PROTO_OK) {
        fprintf(stderr, "keyline-devsim: %s: the device holds no Matter data\n", state_file);
        return 1;
    }
    /* kl_proto_matter_check found every field with its size */
    (void)kl_tlv_get(m, len, KL_TAG_MATTER_CD, &cd, &cdl);
    (void)kl_tlv_get(m, len, KL_TAG_MATTER_SALT, &salt, &sl);
    (void)kl_tlv_get(m, len, KL_TAG_MATTER_VERIFIER, &ver, &vl);
    (void)kl_tlv_get(m, len, KL_TAG_MATTER_UNIQUE_ID, &uid, &ul);
    (void)kl_tlv_get_u16(m, len, KL_TAG_MATTER_DISCRIMINATOR, &disc);
    (void)kl_tlv_get_u32(m, len, KL_TAG_MATTER_ITERATIONS, &iter);
    fputs("{\"dac\": ", out);
    if (!dm_cert_json(port, 0, out)) {
        fputs("null", out);
    }
    fputs(", \"pai\": ", out);
    if (!dm_cert_json(port, 1, out)) {
        fputs("null", out);
    }
    fputs(", \"cd\": ", out);
    dm_b64(cd, cdl, out);
    fprintf(out, ", \"discriminator\": %u, \"iterations\": %lu, \"salt\": ", (unsigned)disc,
            (unsigned long)iter);
    dm_b64(salt, sl, out);
    fputs(", \"verifier\": ", out);
    dm_b64(ver, vl, out);
    fputs(", \"unique_id\": \"", out);
    for (size_t i = 0; i < ul; i++) {
        fprintf(out, "%02x", uid[i]);
    }
    fputs("\"}\n", out);
    return fflush(out) == 0 ? 0 : 1;
}
