/* Fuzz keyline-ca revoke's inputs (ca/ca_revoke_input.c): the input's first line as a
 * --between time, the rest as a --from list. Checked: an accepted date is the day its numbers
 * name; every item of an accepted list is a non-empty string inside the list, without '#' or
 * a line break, without blanks but for the inside of a "device:" item, and there are no more
 * items than lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca.h"

static void check_time(const char *s)
{
    time_t t = 0;
    struct tm tm;
    int y = 0, m = 0, d = 0;
    if (ca_revoke_time_parse(s, &t) && s[0] != '@' && sscanf(s, "%d-%d-%d", &y, &m, &d) == 3) {
        if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 != y || tm.tm_mon + 1 != m || tm.tm_mday != d) {
            abort(); /* a date read as another day */
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), **items = NULL;
    size_t n = 0, lines = 1;
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = 0;
    char *nl = memchr(text, '\n', size);
    if (nl) {
        *nl = 0;
        check_time(text);
        *nl = '\n';
    }
    for (size_t i = 0; i < size; i++) {
        lines += text[i] == '\n';
    }
    if (ca_revoke_list_parse(text, size, "fuzz", &items, &n) == KL_OK) {
        if (n == 0 || n > lines) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            const char *it = items[i];
            size_t len = strlen(it);
            int dev = strncmp(it, "device:", 7) == 0;
            if (it < text || it >= text + size || !len || strpbrk(it, "\n#") ||
                (!dev && strpbrk(it, " \t\r")) || strchr(" \t\r", it[len - 1]) ||
                (dev && it[7] && strchr(" \t", it[7]))) {
                abort();
            }
        }
    }
    free(items);
    free(text);
    return 0;
}
