#include "kl_conf.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int kl_conf_handler(void *user, const char *section, const char *name, const char *value)
{
    kl_conf *c = user;
    if (!name) { /* INI_CALL_HANDLER_ON_NEW_SECTION builds */
        return kl_conf_add_section(c, section);
    }
    return kl_conf_set(c, section, name, value) == KL_OK;
}

kl_rc kl_conf_load(kl_conf **out, const char *path)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        return kl_fail(errno == ENOENT ? KL_ENOTFOUND : KL_EIO, "%s: %s", path, strerror(errno));
    }
    char *dup = strdup(path);
    char *slash = dup ? strrchr(dup, '/') : NULL;
    const char *dir = ".";
    if (slash == dup) {
        dir = "/";
    } else if (slash) {
        *slash = 0;
        dir = dup;
    }
    kl_conf *c = kl_conf_new(dir);
    free(dup);
    if (!c) {
        fclose(f);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    free(c->file);
    c->file = strdup(path);
    if (!c->file) {
        kl_conf_free(c);
        fclose(f);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    int line = ini_parse_file(f, kl_conf_handler, c);
    fclose(f);
    if (line != 0) {
        kl_conf_free(c);
        if (line < 0) {
            return kl_fail(KL_EIO, "%s: cannot read", path);
        }
        return kl_fail(KL_EINPUT, "%s:%d: syntax error (expected [section] or key = value)", path,
                       line);
    }
    *out = c;
    return KL_OK;
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
