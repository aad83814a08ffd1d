#include "kl_err.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

/* kl_err.h's analyser-only macros of the same names would rename the definitions below */
#undef kl_fail
#undef kl_fail_ssl
#undef kl_wrap

static _Thread_local char kl_msg[1024];

static void kl_vset(const char *fmt, va_list ap)
{
    /* Format into a copy: callers may pass kl_errmsg() itself as an argument. */
    char tmp[sizeof kl_msg];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    memcpy(kl_msg, tmp, sizeof kl_msg);
}

kl_rc kl_fail(kl_rc code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kl_vset(fmt, ap);
    va_end(ap);
    return code;
}

kl_rc kl_fail_ssl(kl_rc code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kl_vset(fmt, ap);
    va_end(ap);
    unsigned long e = ERR_get_error();
    if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        size_t n = strlen(kl_msg);
        snprintf(kl_msg + n, sizeof kl_msg - n, " (%s)", buf);
    }
    ERR_clear_error();
    return code;
}

kl_rc kl_wrap(kl_rc code, const char *fmt, ...)
{
    char prefix[512];
    char old[sizeof kl_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, kl_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof kl_msg - 3) {
        n = sizeof kl_msg - 3;
    }
    memcpy(kl_msg, prefix, n);
    kl_msg[n++] = ':';
    kl_msg[n++] = ' ';
    size_t rest = strnlen(old, sizeof kl_msg - n - 1);
    memcpy(kl_msg + n, old, rest);
    kl_msg[n + rest] = 0;
    return code;
}

const char *kl_errmsg(void)
{
    return kl_msg[0] ? kl_msg : "unknown error";
}

const char *kl_rc_name(kl_rc code)
{
    static const char *names[] = {"ok",  "usage",   "input",    "policy",     "hsm",
                                  "pin", "locked",  "notfound", "exists",     "auth",
                                  "io",  "timeout", "internal", "unavailable"};
    if ((unsigned)code < sizeof names / sizeof names[0]) {
        return names[code];
    }
    return "unknown";
}

int kl_rc_exit(kl_rc code)
{
    switch (code) {
    case KL_OK: return 0;
    case KL_EUSAGE: return 2;
    case KL_EINPUT: return 3;
    case KL_EPOLICY: return 4;
    case KL_EHSM:
    case KL_EPIN:
    case KL_ELOCKED: return 5;
    case KL_ENOTFOUND: return 6;
    default: return 1;
    }
}
