/* Fuzz the PostgreSQL driver's reading of server text (ca/store_pgcode.c): libpq's verbose
 * message of a refused login comes from the server (or anything answering on its port) and is
 * searched for a SQLSTATE that decides whether keyline-cad retries or stops for a
 * configuration error. The input's first byte sizes the cleaned copy (1..256 bytes); the rest
 * is the message. Checked: the copy fits and ends where it says, no LOCATION line survives,
 * a code found is five of [0-9A-Z] that the message holds as ":  CODE:", and its class and
 * hint are defined. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"
#include "store_pgcode.h"

static void check_code(const char *text, const char code[6])
{
    if (!code[0]) {
        return;
    }
    char needle[10] = ":  ";
    for (int i = 0; i < 5; i++) {
        if (!((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'Z'))) {
            abort();
        }
    }
    memcpy(needle + 3, code, 5);
    needle[8] = ':';
    needle[9] = 0;
    if (code[5] || !strstr(text, needle) || !pg_config_hint(code) ||
        pg_code_class(code) < DB_E_OTHER || pg_code_class(code) > DB_E_CONFIG) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t cap = (size_t)data[0] + 1;
    char *text = malloc(size), *out = malloc(cap), code[6];
    if (!text || !out) {
        free(text);
        free(out);
        return 0;
    }
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    pg_login_code(text, code);
    check_code(text, code);
    pg_msg_clean(text, out, cap);
    size_t n = strlen(out);
    if (n >= cap || strncmp(out, "LOCATION:", 9) == 0 || strstr(out, "\nLOCATION:") ||
        (n && (out[n - 1] == '\n' || out[n - 1] == ' '))) {
        abort();
    }
    pg_login_code(out, code);
    check_code(out, code);
    free(text);
    free(out);
    return 0;
}
