/* UTF-8, one rule for every check of it (log lines, what officers approve). */
#ifndef KL_UTF8_H
#define KL_UTF8_H

#include <stddef.h>

/* The code point of the UTF-8 sequence at v[*i] (n bytes in all) and *i moved past it; -1,
 * *i unchanged, when it is no shortest-form sequence of a Unicode scalar value (overlong, a
 * surrogate, past U+10FFFF, a stray continuation byte, cut short by n). */
long kl_utf8_next(const unsigned char *v, size_t n, size_t *i);

#endif
