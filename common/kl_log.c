#include "kl_log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kl_utf8.h"

static kl_log_level kl_level = KL_LOG_INFO;
static kl_log_format kl_format = KL_LOG_TEXT;
static const char *kl_prog = "keyline";

void kl_log_set_level(kl_log_level lvl)
{
    kl_level = lvl;
}

void kl_log_set_format(kl_log_format fmt)
{
    kl_format = fmt;
}

void kl_log_set_prog(const char *prog)
{
    kl_prog = prog;
}

static kl_rc kl_log_format_parse(const char *v, const char *where, kl_log_format *out)
{
    if (strcmp(v, "text") == 0) {
        *out = KL_LOG_TEXT;
        return KL_OK;
    }
    if (strcmp(v, "json") == 0) {
        *out = KL_LOG_JSON;
        return KL_OK;
    }
    return kl_fail(KL_EUSAGE, "%s: '%s' is neither text nor json", where, v);
}

kl_rc kl_log_configure(const kl_conf *conf, const char *prog)
{
    kl_rc rc = KL_OK;
    kl_log_format fmt = kl_format;
    const char *env = getenv("KEYLINE_LOG_FORMAT");
    kl_log_set_prog(prog);
    if (env && *env) {
        TRY(kl_log_format_parse(env, "KEYLINE_LOG_FORMAT", &fmt));
    } else if (conf) {
        const char *v = kl_conf_get(conf, "log", "format");
        if (v) {
            TRY(kl_log_format_parse(v, "[log] format", &fmt));
        }
    }
    kl_format = fmt;
out:
    return rc;
}

size_t kl_log_json_escape(char *out, size_t cap, const char *in)
{
    const unsigned char *p = (const unsigned char *)in;
    const unsigned char *end = p + strlen(in);
    size_t o = 0;
    while (*p) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen;
        size_t adv = 1;
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            plen = 2;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            tmp[0] = '\\';
            tmp[1] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            plen = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)*p);
            plen = 6;
        } else {
            size_t i = 0;
            int ok = kl_utf8_next(p, (size_t)(end - p), &i) >= 0;
            piece = ok ? (const char *)p : "\\ufffd"; /* not UTF-8: that byte replaced */
            plen = ok ? i : 6;
            adv = ok ? i : 1;
        }
        if (o + plen >= cap) {
            break;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        p += adv;
    }
    out[o] = '\0';
    return o;
}

void kl_log(kl_log_level lvl, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lvl < kl_level) {
        return;
    }
    char ts[40];
    char msg[2048];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000L);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* one fprintf per line: lines from threads do not interleave */
    if (kl_format == KL_LOG_JSON) {
        char emsg[sizeof msg * 2];
        char eprog[128];
        kl_log_json_escape(emsg, sizeof emsg, msg);
        kl_log_json_escape(eprog, sizeof eprog, kl_prog);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"prog\":\"%s\",\"msg\":\"%s\"}\n", ts,
                names[lvl], eprog, emsg);
    } else {
        fprintf(stderr, "%s %s %s\n", ts, names[lvl], msg);
    }
}
