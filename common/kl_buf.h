/* keyline: growable byte buffer with a hard size cap fixed at creation.
 *
 * Writes either fully succeed or leave the buffer unchanged (KL_EINPUT when the cap would be
 * exceeded). A buffer marked sensitive is wiped (OPENSSL_cleanse) on reset, growth and free.
 * The buffer owns `data`; kl_buf_steal() transfers it to the caller. */
#ifndef KL_BUF_H
#define KL_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

typedef struct {
    uint8_t *data;
    size_t len;  /* bytes written */
    size_t rpos; /* read cursor */
    size_t alloc;
    size_t cap; /* hard limit on len */
    int sensitive;
} kl_buf;

void kl_buf_init(kl_buf *b, size_t cap, int sensitive);
void kl_buf_reset(kl_buf *b); /* len = rpos = 0, keeps memory (wiped if sensitive) */
void kl_buf_free(kl_buf *b);
kl_rc kl_buf_put(kl_buf *b, const void *p, size_t n) KL_WUR;
kl_rc kl_buf_put_u8(kl_buf *b, uint8_t v) KL_WUR;
/* Append n bytes the caller then writes at *p (all n of them: they count in len at once). */
kl_rc kl_buf_put_space(kl_buf *b, size_t n, uint8_t **p) KL_WUR;
kl_rc kl_buf_put_str(kl_buf *b, const char *s) KL_WUR;
kl_rc kl_buf_printf(kl_buf *b, const char *fmt, ...) KL_WUR KL_PRINTF(2, 3);
/* NUL-terminate without counting the NUL in len (for text use). */
kl_rc kl_buf_cstr(kl_buf *b, const char **out) KL_WUR;
/* Read n bytes at the read cursor; fails (cursor unchanged) if fewer remain. */
kl_rc kl_buf_get(kl_buf *b, void *p, size_t n) KL_WUR;
size_t kl_buf_remaining(const kl_buf *b);
/* Hand data to the caller (who frees with OPENSSL_free / free as documented: malloc'd). */
uint8_t *kl_buf_steal(kl_buf *b, size_t *len);

#endif
