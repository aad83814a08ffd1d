/* keyline-ca revoke's inputs, parsed here so that they are fuzzed (fuzz/fuzz_revoke.c): the
 * lines of a --from list and the times of --between. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca.h"
#include "ceremony_internal.h"

int ca_revoke_time_parse(const char *s, time_t *out)
{
    if (s[0] == '@') {
        if (!isdigit((unsigned char)s[1])) {
            return 0; /* strtoll would take a sign or spaces */
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        *out = (time_t)v;
        return errno == 0 && !*end && (long long)*out == v;
    }
    /* a date, or a time without its Z, written out whole and read as ceremony times are: only
     * what formats back to the same text, so 2026-02-31 is not taken as March 3 */
    static const char *const tails[] = {[10] = "T00:00:00Z", [19] = "Z", [20] = ""};
    size_t n = strlen(s);
    char full[32];
    if (n >= sizeof tails / sizeof tails[0] || !tails[n]) {
        return 0;
    }
    snprintf(full, sizeof full, "%s%s", s, tails[n]);
    return ceremony_time_parse(full, out);
}

/* Add `item` to *items (grown by doubling). */
static kl_rc list_push(char ***items, size_t *n, size_t *cap, char *item)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        char **v = realloc(*items, nc * sizeof *v);
        if (!v) {
            return kl_fail(KL_EINTERNAL, "out of memory");
        }
        *items = v;
        *cap = nc;
    }
    (*items)[(*n)++] = item;
    return KL_OK;
}

/* The length of the item `line` starts with: a word, or for "device:" the rest of the line
 * up to a '#' (a device id may hold spaces, never '#'), its trailing blanks left out (the
 * blanks right after "device:" are dropped by the caller). */
static size_t revoke_item_len(const char *line)
{
    if (strncmp(line, "device:", 7) != 0) {
        return strcspn(line, " \t\r#");
    }
    size_t n = strcspn(line, "#");
    while (n > 7 && strchr(" \t\r", line[n - 1])) {
        n--;
    }
    return n;
}

kl_rc ca_revoke_list_parse(char *text, size_t len, const char *name, char ***items, size_t *n)
{
    return ca_revoke_list_parse_lines(text, len, name, items, NULL, n);
}

kl_rc ca_revoke_list_parse_lines(char *text, size_t len, const char *name, char ***items,
                                 size_t **lines, size_t *n)
{
    kl_rc rc = KL_OK;
    size_t cap = 0, lineno = 0, lcap = 0;
    *items = NULL;
    *n = 0;
    if (lines) {
        *lines = NULL;
    }
    ENSURE(strlen(text) == len, KL_EINPUT, "%s: a NUL byte in the list", name);
    /* a UTF-8 byte order mark, as spreadsheet exports write one, is not part of the first item */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
    }
    for (char *line = text, *next = NULL; line && *line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next) {
            *next++ = 0;
        }
        line += strspn(line, " \t\r");
        size_t item = revoke_item_len(line);
        const char *rest = line + item + strspn(line + item, " \t\r");
        /* "A B" on one line would revoke A and leave B in silence */
        ENSURE(!*rest || *rest == '#', KL_EINPUT,
               "%s line %zu: more than one item ('%.60s'): one serial or device id a line (a "
               "device id with spaces: device:ID)",
               name, lineno, line);
        line[item] = 0;
        if (strncmp(line, "device:", 7) == 0) { /* "device: HW1" names HW1, as a reader sees */
            size_t blanks = strspn(line + 7, " \t");
            memmove(line + 7, line + 7 + blanks, strlen(line + 7 + blanks) + 1);
        }
        if (*line && lines && *n == lcap) {
            size_t nc = lcap ? lcap * 2 : 4096;
            size_t *v = realloc(*lines, nc * sizeof *v);
            ENSURE(v, KL_EINTERNAL, "out of memory");
            *lines = v;
            lcap = nc;
        }
        if (*line) {
            if (lines) {
                (*lines)[*n] = lineno;
            }
            TRY(list_push(items, n, &cap, line));
        }
    }
    ENSURE(*n > 0, KL_EINPUT, "%s: no serial or device id in it", name);
out:
    if (rc != KL_OK) {
        free(*items);
        *items = NULL;
        *n = 0;
        if (lines) {
            free(*lines);
            *lines = NULL;
        }
    }
    return rc;
}
