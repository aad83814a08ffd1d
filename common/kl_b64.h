/* keyline: base64 (RFC 4648) for EST bodies and PEM.
 *
 * The decoder is tolerant the way RFC 8951 asks of EST servers: it skips CR, LF, space and tab
 * anywhere (wrapped or single-line bodies, trailing newline), but rejects any other
 * non-alphabet byte and bad padding (KL_EINPUT). */
#ifndef KL_B64_H
#define KL_B64_H

#include <stddef.h>
#include <stdint.h>

#include "kl_buf.h"

kl_rc kl_b64_decode(const char *in, size_t inlen, kl_buf *out) KL_WUR;
/* wrap = 0: one line; else insert "\r\n" or "\n" (crlf flag) every `wrap` characters and end
 * with a newline. */
kl_rc kl_b64_encode(const uint8_t *in, size_t inlen, size_t wrap, int crlf, kl_buf *out) KL_WUR;
/* The value of hexadecimal digit `c` (either case), -1 when it is none. */
int kl_hex_digit(char c);

#endif
