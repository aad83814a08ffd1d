/* UTF-8 decoding (kl_utf8.h). */
#include "kl_utf8.h"

#include <string.h>

long kl_utf8_next(const unsigned char *v, size_t n, size_t *i)
{
    unsigned char c = v[*i];
    int len = c < 0x80             ? 1
              : (c & 0xe0) == 0xc0 ? 2
              : (c & 0xf0) == 0xe0 ? 3
              : (c & 0xf8) == 0xf0 ? 4
                                   : 0;
    static const long min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (!len || *i + (size_t)len > n) {
        return -1;
    }
    long cp = len == 1 ? c : c & (0x7f >> len);
    for (int k = 1; k < len; k++) {
        if ((v[*i + k] & 0xc0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (v[*i + k] & 0x3f);
    }
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1;
    }
    *i += (size_t)len;
    return cp;
}

void kl_ascii_escape(const char *in, const char *also, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        int plain = *p >= 0x20 && *p <= 0x7e && !strchr(also, *p);
        if (k + (plain ? 1 : 4) >= cap) {
            break;
        }
        if (plain) {
            out[k++] = (char)*p;
        } else {
            out[k++] = '\\';
            out[k++] = 'x';
            out[k++] = hex[*p >> 4];
            out[k++] = hex[*p & 15];
        }
    }
    out[k] = 0;
}
