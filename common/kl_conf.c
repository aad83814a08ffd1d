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
    int line; /* 0: set in memory */
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

static kl_rc kl_conf_set_at(kl_conf *c, const char *section, const char *key, const char *value,
                            int line)
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
            c->kv[i].line = line;
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
    e->line = line;
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    c->n++;
    return KL_OK;
}

kl_rc kl_conf_set(kl_conf *c, const char *section, const char *key, const char *value)
{
    return kl_conf_set_at(c, section, key, value, 0);
}

/* ---- the registry ----------------------------------------------------------------------
 * kl_conf_keys.c holds the table; here is what a section or key of a file is checked with,
 * and the "did you mean" for one that is not in it. */

static int kl_conf_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > KL_CONF_NAME_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i])) {
            return 0;
        }
    }
    return 1;
}

/* Length of the prefix of a parameterised pattern ("est.label *" -> 9), 0 for a fixed one. */
static size_t kl_conf_param_len(const char *pattern)
{
    size_t n = strlen(pattern);
    return n > 2 && strcmp(pattern + n - 2, " *") == 0 ? n - 2 : 0;
}

static int kl_conf_pattern_match(const char *pattern, const char *section)
{
    size_t pl = kl_conf_param_len(pattern);
    if (!pl) {
        return strcmp(pattern, section) == 0;
    }
    return strncmp(pattern, section, pl) == 0 && section[pl] == ' ' &&
           kl_conf_name_ok(section + pl + 1);
}

int kl_conf_section_known(const char *section)
{
    size_t n;
    const kl_conf_key *t = kl_conf_keys(&n);
    for (size_t i = 0; i < n; i++) {
        if (kl_conf_pattern_match(t[i].section, section)) {
            return 1;
        }
    }
    return 0;
}

const kl_conf_key *kl_conf_key_find(const char *section, const char *key)
{
    size_t n;
    const kl_conf_key *t = kl_conf_keys(&n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].key, key) == 0 && kl_conf_pattern_match(t[i].section, section)) {
            return &t[i];
        }
    }
    return NULL;
}

#define KL_CONF_DIST_MAX 64 /* longer names get no suggestion */

/* Edit distance (insert, delete, substitute, swap two neighbours; case ignored) of a[0..an)
 * and b[0..bn), or INT_MAX when either is too long to be a typo of the other. */
static int kl_conf_distance(const char *a, size_t an, const char *b, size_t bn)
{
    if (an > KL_CONF_DIST_MAX || bn > KL_CONF_DIST_MAX) {
        return INT_MAX;
    }
    int d[KL_CONF_DIST_MAX + 1][KL_CONF_DIST_MAX + 1];
    for (size_t i = 0; i <= an; i++) {
        d[i][0] = (int)i;
    }
    for (size_t j = 0; j <= bn; j++) {
        d[0][j] = (int)j;
    }
    for (size_t i = 1; i <= an; i++) {
        for (size_t j = 1; j <= bn; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int v = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < v) {
                v = d[i - 1][j] + 1;
            }
            if (d[i][j - 1] + 1 < v) {
                v = d[i][j - 1] + 1;
            }
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < v) {
                v = d[i - 2][j - 2] + 1;
            }
            d[i][j] = v;
        }
    }
    return d[an][bn];
}

/* A typo, not another word: at most a third of the known name's length, 1 to 3 edits. */
static int kl_conf_close(int dist, size_t known_len)
{
    int limit = (int)(known_len / 3);
    limit = limit < 1 ? 1 : limit > 3 ? 3 : limit;
    return dist <= limit;
}

/* A name from the file, fit for a message: at most 64 bytes, control bytes as '?'. */
static const char *kl_conf_show(const char *s, char *buf, size_t buflen)
{
    size_t n = 0;
    for (; s[n] && n + 4 < buflen && n < 64; n++) {
        unsigned char ch = (unsigned char)s[n];
        buf[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    snprintf(buf + n, buflen - n, "%s", s[n] ? "..." : "");
    return buf;
}

static kl_rc kl_conf_unknown_section(const kl_conf *c, int line, const char *section)
{
    size_t n;
    const kl_conf_key *t = kl_conf_keys(&n);
    char shown[80], best[KL_CONF_DIST_MAX * 2 + 8] = "";
    int best_d = INT_MAX;
    const char *sp = strchr(section, ' ');
    size_t word = sp ? (size_t)(sp - section) : strlen(section);
    kl_conf_show(section, shown, sizeof shown);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(t[i].section, t[i - 1].section) == 0) {
            continue;
        }
        size_t pl = kl_conf_param_len(t[i].section);
        if (pl && strncmp(t[i].section, section, pl) == 0 && (!section[pl] || section[pl] == ' ')) {
            if (!section[pl] || !section[pl + 1]) {
                return kl_fail(KL_EINPUT, "%s:%d: section [%s] needs a name: [%.*s NAME]", c->file,
                               line, shown, (int)pl, t[i].section);
            }
            return kl_fail(KL_EINPUT,
                           "%s:%d: section [%s]: the name after '%.*s' is 1 to %d characters of "
                           "A-Z a-z 0-9 . _ -",
                           c->file, line, shown, (int)pl, t[i].section, KL_CONF_NAME_MAX);
        }
        if (!pl && sp && strlen(t[i].section) == word &&
            strncmp(t[i].section, section, word) == 0) {
            return kl_fail(KL_EINPUT, "%s:%d: section [%s]: [%s] takes no name", c->file, line,
                           shown, t[i].section);
        }
        /* a parameterised one is compared by its first word, keeping the name as written */
        int d = pl ? kl_conf_distance(section, word, t[i].section, pl)
                   : kl_conf_distance(section, strlen(section), t[i].section, strlen(t[i].section));
        if (d < best_d && kl_conf_close(d, pl ? pl : strlen(t[i].section))) {
            best_d = d;
            if (pl) {
                snprintf(best, sizeof best, "%.*s %.*s", (int)pl, t[i].section, sp ? 64 : 4,
                         sp ? sp + 1 : "NAME");
            } else {
                snprintf(best, sizeof best, "%s", t[i].section);
            }
        }
    }
    if (*best) {
        return kl_fail(KL_EINPUT, "%s:%d: unknown section [%s]; did you mean [%s]?", c->file, line,
                       shown, best);
    }
    return kl_fail(KL_EINPUT, "%s:%d: unknown section [%s] (keyline.conf(5) lists every section)",
                   c->file, line, shown);
}

static kl_rc kl_conf_unknown_key(const kl_conf *c, int line, const char *section, const char *key)
{
    size_t n;
    const kl_conf_key *t = kl_conf_keys(&n);
    char shown[80], sec[80];
    const char *best = NULL, *elsewhere = NULL;
    int best_d = INT_MAX;
    kl_conf_show(key, shown, sizeof shown);
    kl_conf_show(section, sec, sizeof sec);
    for (size_t i = 0; i < n; i++) {
        if (!kl_conf_pattern_match(t[i].section, section)) {
            if (!elsewhere && strcmp(t[i].key, key) == 0) {
                elsewhere = t[i].section;
            }
            continue;
        }
        int d = kl_conf_distance(key, strlen(key), t[i].key, strlen(t[i].key));
        if (d < best_d && kl_conf_close(d, strlen(t[i].key))) {
            best_d = d;
            best = t[i].key;
        }
    }
    if (best) {
        return kl_fail(KL_EINPUT, "%s:%d: unknown key '%s' in [%s]; did you mean '%s'?", c->file,
                       line, shown, sec, best);
    }
    if (elsewhere) {
        size_t pl = kl_conf_param_len(elsewhere);
        return kl_fail(KL_EINPUT, "%s:%d: unknown key '%s' in [%s]; it belongs in [%.*s%s]",
                       c->file, line, shown, sec, (int)(pl ? pl : strlen(elsewhere)), elsewhere,
                       pl ? " NAME" : "");
    }
    return kl_fail(KL_EINPUT, "%s:%d: unknown key '%s' in [%s] (keyline.conf(5) lists every key)",
                   c->file, line, shown, sec);
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
 * and its value are separated by the first '=' or ':'; a section is listed once it has a key
 * (and may be opened again further down). What changes: no line is cut, names are
 * not cut at 50 bytes, an indented line is a line like any other (inih appended it to the
 * previous key as a "continuation", replacing that key's value), and a key without a name, an
 * empty section name, text after ']', NUL bytes, a key given twice in a section (inih kept the
 * last) and a key without a value are errors instead of being passed on.
 * Every section header and key is looked up in the registry as it is read, so an error names
 * the line it is on (issue 12: `channel-bindings = required` was read, never looked at, and
 * left channel binding off). */

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

/* A key given twice or without a value is a mistake, not a default: the second of two lines
 * silently won, and "crl-days =" quietly meant 7. */
static kl_rc kl_conf_value_check(const kl_conf *c, int line, const char *section, const char *key,
                                 const char *value)
{
    char sec[80], shown[80];
    int first = kl_conf_line(c, section, key);
    kl_conf_show(section, sec, sizeof sec);
    kl_conf_show(key, shown, sizeof shown);
    if (first > 0) {
        return kl_fail(KL_EINPUT, "%s:%d: [%s] %s given twice (first on line %d)", c->file, line,
                       sec, shown, first);
    }
    if (!*value) {
        return kl_fail(KL_EINPUT,
                       "%s:%d: [%s] %s has no value (remove the line to use the default)", c->file,
                       line, sec, shown);
    }
    return KL_OK;
}

static kl_rc kl_conf_parse(kl_conf *c, const char *text, size_t len)
{
    kl_rc rc = KL_OK;
    char *section = strdup("");
    char *key = NULL, *value = NULL;
    const char *end = text + len;
    const char *p = text;
    int line = 0;
    char shown[80];

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
            if (!kl_conf_section_known(section)) {
                TRY(kl_conf_unknown_section(c, line, section));
            }
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
        ENSURE(*section, KL_EINPUT, "%s:%d: key '%s' before any [section]", c->file, line,
               kl_conf_show(key, shown, sizeof shown));
        if (!kl_conf_key_find(section, key)) {
            TRY(kl_conf_unknown_key(c, line, section, key));
        }
        TRY(kl_conf_value_check(c, line, section, key, value));
        TRY(kl_conf_set_at(c, section, key, value, line));
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

int kl_conf_line(const kl_conf *c, const char *section, const char *key)
{
    for (size_t i = 0; c && i < c->n; i++) {
        if (strcmp(c->kv[i].section, section) == 0 && strcmp(c->kv[i].key, key) == 0) {
            return c->kv[i].line;
        }
    }
    return 0;
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
        int line = kl_conf_line(c, section, key);
        char at[24] = "";
        if (line > 0) {
            snprintf(at, sizeof at, ":%d", line);
        }
        return kl_fail(KL_EINPUT, "%s%s: [%s] %s = %s: expected a whole number from %ld to %ld",
                       c->file, at, section, key, v, min, max);
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
