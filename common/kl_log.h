/* keyline: logging to stderr, one line per event, ISO-8601 UTC timestamp.
 * Never pass secrets (PINs, keys, passwords) to these functions. Thread-safe.
 *
 * Two formats: text (the default), "2026-01-02T03:04:05.678Z info message", or JSON lines,
 * {"ts":"2026-01-02T03:04:05.678Z","level":"info","prog":"keyline-cad","msg":"message"}, for
 * log collectors. [log] format in keyline.conf chooses; the environment variable
 * KEYLINE_LOG_FORMAT (text or json) overrides the file. */
#ifndef KL_LOG_H
#define KL_LOG_H

#include <stddef.h>

#include "kl_conf.h"
#include "kl_err.h"

typedef enum { KL_LOG_DEBUG, KL_LOG_INFO, KL_LOG_WARN, KL_LOG_ERROR } kl_log_level;
typedef enum { KL_LOG_TEXT, KL_LOG_JSON } kl_log_format;

void kl_log_set_level(kl_log_level lvl);
void kl_log_set_format(kl_log_format fmt);
/* prog: the program name of JSON lines; a string that outlives all logging (a literal). */
void kl_log_set_prog(const char *prog);
/* Every daemon's one call, first in main with conf NULL (KEYLINE_LOG_FORMAT only, so start-up
 * lines are already in the chosen format) and again once keyline.conf is loaded: [log] format
 * = text | json, unless KEYLINE_LOG_FORMAT is set. KL_EUSAGE for any other value. */
kl_rc kl_log_configure(const kl_conf *conf, const char *prog) KL_WUR;

void kl_log(kl_log_level lvl, const char *fmt, ...) KL_PRINTF(2, 3);
#define kl_debug(...) kl_log(KL_LOG_DEBUG, __VA_ARGS__)
#define kl_info(...) kl_log(KL_LOG_INFO, __VA_ARGS__)
#define kl_warn(...) kl_log(KL_LOG_WARN, __VA_ARGS__)
#define kl_error(...) kl_log(KL_LOG_ERROR, __VA_ARGS__)

/* The contents of a JSON string (RFC 8259 section 7) for in, NUL-terminated in out (cap > 0):
 * '"' and '\\' escaped, control characters (< 0x20, 0x7f) as \uXXXX (\n, \t, \r short), valid
 * UTF-8 kept as is, any byte that is not part of valid UTF-8 as \ufffd. Truncates at a
 * character boundary when out is too small. Returns the length written. */
size_t kl_log_json_escape(char *out, size_t cap, const char *in);

#endif
