/* UTF-8, one rule for every check of it (log lines, what officers approve); text made safe to
 * record. */
#ifndef KL_UTF8_H
#define KL_UTF8_H

#include <stddef.h>

/* The code point of the UTF-8 sequence at v[*i] (n bytes in all) and *i moved past it; -1,
 * *i unchanged, when it is no shortest-form sequence of a Unicode scalar value (overlong, a
 * surrogate, past U+10FFFF, a stray continuation byte, cut short by n). */
long kl_utf8_next(const unsigned char *v, size_t n, size_t *i);

/* `in` as printable ASCII for a record that must not be misread (an audit actor, a signed
 * report): any other byte, and any byte of `also`, as \xHH; cut to cap - 1 bytes before an
 * escape that does not fit. */
void kl_ascii_escape(const char *in, const char *also, char *out, size_t cap);

#endif
