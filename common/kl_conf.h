/* keyline: INI configuration (keyline.conf).
 *
 * The dialect libinih reads (kl_conf.c says exactly what is kept and what is stricter), parsed
 * here because the system libinih cuts lines at 200 bytes: `[section]`, `key = value` (or
 * `key: value`), comment lines starting with ';' or '#', inline comments after " ;". Sections
 * and keys are kept as written (`[est.label acme]` is section "est.label acme"); whitespace
 * around names and values is dropped. A line may be up to KL_CONF_LINE_MAX bytes (not counting
 * its line end); a longer one is an error, never cut. A file may hold only the sections and
 * keys of the registry (kl_conf_keys.c, one table for every binary): anything else is an error
 * naming file:line and the closest known name, never silently ignored. Relative paths are
 * resolved against the directory of the config file by kl_conf_path(). The conf owns all
 * strings it returns. */
#ifndef KL_CONF_H
#define KL_CONF_H

#include <stddef.h>

#include "kl_err.h"

typedef struct kl_conf kl_conf;

#define KL_CONF_LINE_MAX 8192 /* bytes in one line of keyline.conf, line end not counted */

/* Errors: KL_ENOTFOUND (no file), KL_EIO (cannot read), KL_EINPUT ("file:line: message": a
 * syntax error, a line longer than KL_CONF_LINE_MAX, a NUL byte, a section or key that is not
 * in the registry below (with the closest known name, "did you mean ..."), a key before any
 * section; or a file over 1 MiB). */
kl_rc kl_conf_load(kl_conf **out, const char *path) KL_WUR;
void kl_conf_free(kl_conf *c);
/* NULL when absent. */
const char *kl_conf_get(const kl_conf *c, const char *section, const char *key);
const char *kl_conf_get_default(const kl_conf *c, const char *section, const char *key,
                                const char *dflt);
/* Integer value with range check; dflt when absent. KL_EINPUT when not a number in range. */
kl_rc kl_conf_get_long(const kl_conf *c, const char *section, const char *key, long dflt, long min,
                       long max, long *out) KL_WUR;
/* Path value resolved against the config file's directory (caller frees). NULL when absent.
 * Values that look like URIs (contain ":" before any "/", e.g. pkcs11:...) are returned as is. */
char *kl_conf_path(const kl_conf *c, const char *section, const char *key);
/* Resolve any relative path against the config directory (caller frees). */
char *kl_conf_resolve(const kl_conf *c, const char *value);
const char *kl_conf_dir(const kl_conf *c);
const char *kl_conf_file(const kl_conf *c);
/* Iterate section names (distinct, file order): returns NULL past the end. */
const char *kl_conf_section(const kl_conf *c, size_t i);
/* The line of [section] key in the file it was read from (the last one when the key appears
 * twice: that value counts); 0 when absent or set with kl_conf_set. */
int kl_conf_line(const kl_conf *c, const char *section, const char *key);
/* Build a conf in memory (tests, defaults): set/overwrite a value. Not checked against the
 * registry (tests set what they need). */
kl_rc kl_conf_set(kl_conf *c, const char *section, const char *key, const char *value) KL_WUR;
kl_conf *kl_conf_new(const char *dir);

/* ---- the registry (kl_conf_keys.c): every section and key keyline.conf may hold ---------- */
#define KL_CONF_K_PATH 0x1u     /* a path, read with kl_conf_path (relative to the file) */
#define KL_CONF_K_SECRET 0x2u   /* a secret's source (env:VAR, file:PATH, prompt), never a secret */
#define KL_CONF_K_OBSOLETE 0x4u /* still accepted, ignored with a warning by its reader */
typedef struct {
    const char *section; /* "est"; "est.label *" for [est.label NAME] */
    const char *key;
    const char *dflt; /* the default value, or NULL */
    const char *note; /* when there is no fixed default: what applies ("the [est] value",
                       * "required"), or NULL for nothing */
    unsigned flags;   /* KL_CONF_K_* */
} kl_conf_key;

#define KL_CONF_NAME_MAX 64 /* NAME of [est.label NAME], [profile NAME], [role NAME] */

/* The table, static: *n rows, grouped by section. */
const kl_conf_key *kl_conf_keys(size_t *n);
/* 1 when `section` (as written: "est.label acme") is one keyline.conf may hold: a fixed one, or
 * a parameterised one whose NAME is 1..KL_CONF_NAME_MAX of A-Z a-z 0-9 . _ - */
int kl_conf_section_known(const char *section);
/* The row of [section] key, NULL when unknown. */
const kl_conf_key *kl_conf_key_find(const char *section, const char *key);

#endif
