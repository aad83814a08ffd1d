#include "kl_conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_file.h"

typedef struct {
    char *section, *key, *value;
} kl_conf_kv;

struct kl_conf {
    char *file;
    char *dir;
    kl_conf_kv *kv;
    size_t n, alloc;
    char **sections;
    size_t nsections;
};

kl_conf *kl_conf_new(const char *dir)
{
    kl_conf *c = calloc(1, sizeof *c);
    if (c) {
        c->dir = strdup(dir ? dir : ".");
        c->file = strdup("(memory)");
        if (!c->dir || !c->file) {
            kl_conf_free(c);
            return NULL;
        }
    }
    return c;
}

void kl_conf_free(kl_conf *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        free(c->kv[i].section);
        free(c->kv[i].key);
        free(c->kv[i].value);
    }
    for (size_t i = 0; i < c->nsections; i++) {
        free(c->sections[i]);
    }
    free(c->sections);
    free(c->kv);
    free(c->file);
    free(c->dir);
    free(c);
}

static int kl_conf_add_section(kl_conf *c, const char *section)
{
    for (size_t i = 0; i < c->nsections; i++) {
        if (strcmp(c->sections[i], section) == 0) {
            return 1;
        }
    }
    char **s = realloc(c->sections, (c->nsections + 1) * sizeof *s);
    if (!s) {
        return 0;
    }
    c->sections = s;
    if (!(s[c->nsections] = strdup(section))) {
        return 0;
    }
    c->nsections++;
    return 1;
}

kl_rc kl_conf_set(kl_conf *c, const char *section, const char *key, const char *value)
{
    if (!kl_conf_add_section(c, section)) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->kv[i].section, section) == 0 && strcmp(c->kv[i].key, key) == 0) {
            char *v = strdup(value);
            if (!v) {
                return kl_fail(KL_EINTERNAL, "out of memory");
            }
            free(c->kv[i].value);
            c->kv[i].value = v;
            return KL_OK;
        }
    }
    if (c->n == c->alloc) {
        size_t na = c->alloc ? c->alloc * 2 : 32;
        kl_conf_kv *kv = realloc(c->kv, na * sizeof *kv);
        if (!kv) {
            return kl_fail(KL_EINTERNAL, "out of memory");
        }
        c->kv = kv;
        c->alloc = na;
    }
    kl_conf_kv *e = &c->kv[c->n];
    e->section = strdup(section);
    e->key = strdup(key);
    e->value = strdup(value);
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    c->n++;
    return KL_OK;
}

/* ---- the parser ------------------------------------------------------------------------
 * keyline.conf was read with libinih (Debian 12: libinih 55 with its defaults). That library
 * cuts every line at INI_MAX_LINE (200 bytes) and reads the rest as a line of its own: a long
 * CRL URL whose tail holds "=" or ":" lost that tail to an "unknown key" nobody looked at. The
 * system library's limit cannot be raised from outside (its line buffer is on its own stack),
 * so the same dialect is read here, a whole line at a time, and a line over KL_CONF_LINE_MAX
 * is an error naming file and line. What inih did and keyline.conf files rely on is kept: a
 * UTF-8 BOM at the start is skipped; whitespace around names and values is dropped; lines
 * starting with ';' or '#' are comments; ';' after whitespace starts an inline comment; a key
 * and its value are separated by the first '=' or ':'; a later value of the same key replaces
 * the earlier; a section is listed once it has a key. What changes: no line is cut, names are
 * not cut at 50 bytes, an indented line is a line like any other (inih appended it to the
 * previous key as a "continuation", replacing that key's value), and a key without a name, an
 * empty section name, text after ']' and NUL bytes are errors instead of being passed on. */

#define KL_CONF_FILE_MAX (1024 * 1024)

static int kl_conf_space(char ch)
{
    return isspace((unsigned char)ch) != 0;
}

/* Strip whitespace at both ends of [*b, *e). */
static void kl_conf_trim(const char **b, const char **e)
{
    while (*b < *e && kl_conf_space(**b)) {
        (*b)++;
    }
    while (*e > *b && kl_conf_space((*e)[-1])) {
        (*e)--;
    }
}

/* First of `stop` in [p, e), or an inline comment (';' after whitespace), or e. */
static const char *kl_conf_scan(const char *p, const char *e, const char *stop)
{
    int was_space = 0;
    for (; p < e; p++) {
        if ((stop && strchr(stop, *p)) || (was_space && *p == ';')) {
            return p;
        }
        was_space = kl_conf_space(*p);
    }
    return e;
}

static char *kl_conf_dup(const char *b, const char *e)
{
    return strndup(b, (size_t)(e - b));
}

static kl_rc kl_conf_parse(kl_conf *c, const char *text, size_t len)
{
    kl_rc rc = KL_OK;
    char *section = strdup("");
    char *key = NULL, *value = NULL;
    const char *end = text + len;
    const char *p = text;
    int line = 0;

    ENSURE(section, KL_EINTERNAL, "out of memory");
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
        p += 3;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *b = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        line++;
        size_t n = (size_t)(e - b) - (e > b && e[-1] == '\r');
        ENSURE(n <= KL_CONF_LINE_MAX, KL_EINPUT, "%s:%d: line longer than %d bytes", c->file, line,
               KL_CONF_LINE_MAX);
        ENSURE(!memchr(b, '\0', (size_t)(e - b)), KL_EINPUT, "%s:%d: NUL byte in the line", c->file,
               line);
        kl_conf_trim(&b, &e);
        if (b == e || *b == ';' || *b == '#') {
            continue;
        }
        if (*b == '[') {
            const char *close = memchr(b, ']', (size_t)(e - b));
            ENSURE(close, KL_EINPUT, "%s:%d: '[' without ']'", c->file, line);
            const char *rest = close + 1;
            while (rest < e && kl_conf_space(*rest)) {
                rest++;
            }
            ENSURE(rest == e || *rest == ';' || *rest == '#', KL_EINPUT,
                   "%s:%d: text after the section name's ']'", c->file, line);
            const char *nb = b + 1, *ne = close;
            kl_conf_trim(&nb, &ne);
            ENSURE(nb < ne, KL_EINPUT, "%s:%d: empty section name", c->file, line);
            free(section);
            section = kl_conf_dup(nb, ne);
            ENSURE(section, KL_EINTERNAL, "out of memory");
            continue;
        }
        const char *sep = kl_conf_scan(b, e, "=:");
        ENSURE(sep < e && (*sep == '=' || *sep == ':'), KL_EINPUT,
               "%s:%d: syntax error (expected [section] or key = value)", c->file, line);
        const char *kb = b, *ke = sep;
        kl_conf_trim(&kb, &ke);
        ENSURE(kb < ke, KL_EINPUT, "%s:%d: '%c' without a key name before it", c->file, line, *sep);
        const char *vb = sep + 1, *ve = kl_conf_scan(sep + 1, e, NULL);
        kl_conf_trim(&vb, &ve);
        key = kl_conf_dup(kb, ke);
        value = kl_conf_dup(vb, ve);
        ENSURE(key && value, KL_EINTERNAL, "out of memory");
        TRY(kl_conf_set(c, section, key, value));
        free(key);
        free(value);
        key = value = NULL;
    }
out:
    free(section);
    free(key);
    free(value);
    return rc;
}

kl_rc kl_conf_load(kl_conf **out, const char *path)
{
    kl_rc rc = KL_OK;
    kl_conf *c = NULL;
    uint8_t *text = NULL;
    size_t len = 0;
    char *dup = NULL;

    *out = NULL;
    /* kl_file_read takes "-" for stdin; a config named "-" is a file */
    TRY(kl_file_read(strcmp(path, "-") == 0 ? "./-" : path, KL_CONF_FILE_MAX, &text, &len));
    dup = strdup(path);
    ENSURE(dup, KL_EINTERNAL, "out of memory");
    char *slash = strrchr(dup, '/');
    const char *dir = ".";
    if (slash == dup) {
        dir = "/";
    } else if (slash) {
        *slash = 0;
        dir = dup;
    }
    c = kl_conf_new(dir);
    ENSURE(c, KL_EINTERNAL, "out of memory");
    free(c->file);
    c->file = strdup(path);
    ENSURE(c->file, KL_EINTERNAL, "out of memory");
    TRY(kl_conf_parse(c, (const char *)text, len));
    *out = c;
    c = NULL;
out:
    kl_conf_free(c);
    free(dup);
    free(text);
    return rc;
}

const char *kl_conf_get(const kl_conf *c, const char *section, const char *key)
{
    for (size_t i = 0; c && i < c->n; i++) {
        if (strcmp(c->kv[i].section, section) == 0 && strcmp(c->kv[i].key, key) == 0) {
            return c->kv[i].value;
        }
    }
    return NULL;
}

const char *kl_conf_get_default(const kl_conf *c, const char *section, const char *key,
                                const char *dflt)
{
    const char *v = kl_conf_get(c, section, key);
    return (v && *v) ? v : dflt;
}

kl_rc kl_conf_get_long(const kl_conf *c, const char *section, const char *key, long dflt, long min,
                       long max, long *out)
{
    const char *v = kl_conf_get(c, section, key);
    if (!v || !*v) {
        *out = dflt;
        return KL_OK;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max) {
        return kl_fail(KL_EINPUT, "%s: [%s] %s = %s: expected a whole number from %ld to %ld",
                       c->file, section, key, v, min, max);
    }
    *out = n;
    return KL_OK;
}

char *kl_conf_resolve(const kl_conf *c, const char *v)
{
    const char *colon = strchr(v, ':');
    const char *slash = strchr(v, '/');
    if (v[0] == '/' || (colon && (!slash || colon < slash))) {
        return strdup(v);
    }
    size_t n = strlen(c->dir) + strlen(v) + 2;
    char *p = malloc(n);
    if (p) {
        snprintf(p, n, "%s/%s", c->dir, v);
    }
    return p;
}

char *kl_conf_path(const kl_conf *c, const char *section, const char *key)
{
    const char *v = kl_conf_get(c, section, key);
    if (!v || !*v) {
        return NULL;
    }
    return kl_conf_resolve(c, v);
}

const char *kl_conf_dir(const kl_conf *c)
{
    return c->dir;
}

const char *kl_conf_file(const kl_conf *c)
{
    return c->file;
}

const char *kl_conf_section(const kl_conf *c, size_t i)
{
    return i < c->nsections ? c->sections[i] : NULL;
}
