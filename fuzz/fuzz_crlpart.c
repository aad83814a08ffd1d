/* Fuzz the name of a partitioned CRL ("L/K", ca/ca_crlpart.c): it comes from the network
 * (keyline-estd's /crl/L/K.crl, then the CA protocol's issuer field to keyline-cad) and is
 * parsed before any store lookup; and the distribution point URL made from a crl-url pattern
 * (the input's first line) for the parsed label and partition. */
#include <stdlib.h>
#include <string.h>

#include "ca_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), label[CA_LABEL_MAX + 1], url[1024];
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = 0;
    char *nl = strchr(text, '\n');
    const char *name = nl ? nl + 1 : text;
    if (nl) {
        *nl = 0;
    }
    int64_t part = -1;
    if (ca_crlpart_name_parse(name, label, sizeof label, &part) == KL_OK && part >= 0 && nl) {
        struct ca_ctx ca;
        memset(&ca, 0, sizeof ca);
        ca.crl_url = text;
        if (ca_crlpart_url(&ca, label, part, url, sizeof url) == KL_OK &&
            strlen(url) >= sizeof url) {
            abort();
        }
    }
    free(text);
    return 0;
}
