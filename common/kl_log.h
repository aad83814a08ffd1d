/* keyline: logging to stderr, one line per event, ISO-8601 UTC timestamp.
 * Never pass secrets (PINs, keys, passwords) to these functions. Thread-safe. */
#ifndef KL_LOG_H
#define KL_LOG_H

#include "kl_err.h"

typedef enum { KL_LOG_DEBUG, KL_LOG_INFO, KL_LOG_WARN, KL_LOG_ERROR } kl_log_level;

void kl_log_set_level(kl_log_level lvl);
void kl_log(kl_log_level lvl, const char *fmt, ...) KL_PRINTF(2, 3);
#define kl_debug(...) kl_log(KL_LOG_DEBUG, __VA_ARGS__)
#define kl_info(...) kl_log(KL_LOG_INFO, __VA_ARGS__)
#define kl_warn(...) kl_log(KL_LOG_WARN, __VA_ARGS__)
#define kl_error(...) kl_log(KL_LOG_ERROR, __VA_ARGS__)

#endif
