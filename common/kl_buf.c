#include "kl_buf.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kl_buf_init(kl_buf *b, size_t cap, int sensitive)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->sensitive = sensitive;
}

void kl_buf_reset(kl_buf *b)
{
    if (b->sensitive && b->data) {
        OPENSSL_cleanse(b->data, b->alloc);
    }
    b->len = 0;
    b->rpos = 0;
}

void kl_buf_free(kl_buf *b)
{
    kl_buf_reset(b);
    free(b->data);
    b->data = NULL;
    b->alloc = 0;
}

static kl_rc kl_buf_reserve(kl_buf *b, size_t extra)
{
    if (extra > b->cap || b->len > b->cap - extra) {
        return kl_fail(KL_EINPUT, "data exceeds the limit of %zu bytes", b->cap);
    }
    size_t need = b->len + extra + 1; /* room for a NUL */
    if (need <= b->alloc) {
        return KL_OK;
    }
    size_t n = b->alloc ? b->alloc : 256;
    while (n < need) {
        n *= 2;
    }
    uint8_t *p = malloc(n);
    if (!p) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    if (b->data) {
        memcpy(p, b->data, b->len);
        if (b->sensitive) {
            OPENSSL_cleanse(b->data, b->alloc);
        }
        free(b->data);
    }
    b->data = p;
    b->alloc = n;
    return KL_OK;
}

kl_rc kl_buf_put(kl_buf *b, const void *p, size_t n)
{
    kl_rc rc = kl_buf_reserve(b, n);
    if (rc != KL_OK) {
        return rc;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return KL_OK;
}

kl_rc kl_buf_put_space(kl_buf *b, size_t n, uint8_t **p)
{
    kl_rc rc = kl_buf_reserve(b, n);
    if (rc != KL_OK) {
        return rc;
    }
    *p = b->data + b->len;
    b->len += n;
    return KL_OK;
}

kl_rc kl_buf_put_u8(kl_buf *b, uint8_t v)
{
    return kl_buf_put(b, &v, 1);
}

kl_rc kl_buf_put_str(kl_buf *b, const char *s)
{
    return kl_buf_put(b, s, strlen(s));
}

kl_rc kl_buf_printf(kl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return kl_fail(KL_EINTERNAL, "format error");
    }
    kl_rc rc = kl_buf_reserve(b, (size_t)n);
    if (rc != KL_OK) {
        return rc;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return KL_OK;
}

kl_rc kl_buf_cstr(kl_buf *b, const char **out)
{
    kl_rc rc = kl_buf_reserve(b, 0);
    if (rc != KL_OK) {
        return rc;
    }
    b->data[b->len] = 0;
    *out = (const char *)b->data;
    return KL_OK;
}

kl_rc kl_buf_get(kl_buf *b, void *p, size_t n)
{
    if (kl_buf_remaining(b) < n) {
        return kl_fail(KL_EINPUT, "truncated data");
    }
    memcpy(p, b->data + b->rpos, n);
    b->rpos += n;
    return KL_OK;
}

size_t kl_buf_remaining(const kl_buf *b)
{
    return b->len - b->rpos;
}

uint8_t *kl_buf_steal(kl_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len) {
        *len = b->len;
    }
    b->data = NULL;
    b->len = b->rpos = b->alloc = 0;
    return p;
}
