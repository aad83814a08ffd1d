/* keyline: helpers shared by the ceremony*.c files (not an interface). */
#ifndef KL_CEREMONY_INTERNAL_H
#define KL_CEREMONY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    int lineno;
} ceremony_view;

/* 1 when `k` is 1-32 of [a-z0-9-] / `v` (n bytes) a value by the rules of ceremony.h. */
int ceremony_key_ok(const char *k);
int ceremony_value_ok(const char *v, size_t n);
/* UTC as 2026-12-05T01:23:45Z (buf >= 32 bytes); parse only that form (1 ok, 0 not; what does
 * not format back the same, such as 2026-02-30, is not). The parse is keyline-ca revoke's too
 * (ca_revoke_input.c). */
void ceremony_time_fmt(time_t t, char buf[32]);
int ceremony_time_parse(const char *s, time_t *out);
/* The next '\n'-terminated line of `v` into `line` (NUL-terminated, without '\n'); 0 at the end
 * or when it is longer than cap - 1, unterminated or holds a NUL. */
int ceremony_line(ceremony_view *v, char *line, size_t cap);
/* "name: value" -> value; NULL when the line is not that field. */
const char *ceremony_field(const char *line, const char *name);

#endif
