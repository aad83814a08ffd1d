/* keyline: project error type.
 *
 * Every fallible function returns a kl_rc; on failure it has also recorded a one-line message
 * (thread-local) that kl_errmsg() returns until the next kl_fail() on the same thread.
 * Library code never prints or exits: only main() decides what the user sees. */
#ifndef KL_ERR_H
#define KL_ERR_H

#include <stdarg.h>

typedef enum {
    KL_OK = 0,
    KL_EUSAGE,    /* caller/user misuse: bad option, missing argument */
    KL_EINPUT,    /* malformed input: DER/PEM/base64/config syntax */
    KL_EPOLICY,   /* well-formed but refused by policy/template */
    KL_EHSM,      /* PKCS#11 / token failure */
    KL_EPIN,      /* wrong PIN (CKR_PIN_INCORRECT) */
    KL_ELOCKED,   /* PIN locked (CKR_PIN_LOCKED) */
    KL_ENOTFOUND, /* unknown serial, label, token, key, file */
    KL_EEXIST,    /* already exists / conflict */
    KL_EAUTH,     /* authentication failed (EST client, station) */
    KL_EIO,       /* file, socket, serial line, store I/O */
    KL_ETIMEOUT,  /* a peer did not answer in time */
    KL_EINTERNAL, /* a bug or an unexpected library failure */
    /* A service is there but cannot serve now: no keyline-cad answers (every address of the
     * front end's list), or keyline-cad's store is unreachable (database restarting). Nothing
     * was carried out, or nothing that a retry would duplicate: retry later (EST 503 with
     * Retry-After, the station tries the device again). Last: the CA protocol carries kl_rc
     * values as its status byte, so codes are appended, never renumbered. */
    KL_EUNAVAIL,
} kl_rc;

#if defined(__GNUC__)
#define KL_WUR __attribute__((warn_unused_result))
#define KL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KL_WUR
#define KL_PRINTF(a, b)
#endif

/* Record a message for the current thread and return code (so: `return kl_fail(...)`). */
kl_rc kl_fail(kl_rc code, const char *fmt, ...) KL_PRINTF(2, 3);
/* Like kl_fail, appending the first queued OpenSSL error text (and clearing the queue). */
kl_rc kl_fail_ssl(kl_rc code, const char *fmt, ...) KL_PRINTF(2, 3);
/* Prefix the current message with "ctx: " (keeps the code). Returns code. */
kl_rc kl_wrap(kl_rc code, const char *fmt, ...) KL_PRINTF(2, 3);
#ifdef __clang_analyzer__
/* For the static analysers only (clang-tidy's clang-analyzer-*, scan-build; see docs/security.md):
 * they see one file at a time, take the result of these for any value, KL_OK included, and then
 * follow `rc = kl_fail(...)` into success paths that cannot happen (out-parameters never set,
 * reported as null dereferences). Spelled out here, they return their code as they do when
 * compiled. */
#define kl_fail(code, ...)                                                                         \
    ({                                                                                             \
        kl_rc kl_code_ = (code);                                                                   \
        (void)kl_fail(kl_code_, __VA_ARGS__);                                                      \
        kl_code_;                                                                                  \
    })
#define kl_fail_ssl(code, ...)                                                                     \
    ({                                                                                             \
        kl_rc kl_code_ = (code);                                                                   \
        (void)kl_fail_ssl(kl_code_, __VA_ARGS__);                                                  \
        kl_code_;                                                                                  \
    })
#define kl_wrap(code, ...)                                                                         \
    ({                                                                                             \
        kl_rc kl_code_ = (code);                                                                   \
        (void)kl_wrap(kl_code_, __VA_ARGS__);                                                      \
        kl_code_;                                                                                  \
    })
#endif
const char *kl_errmsg(void);
const char *kl_rc_name(kl_rc code);
/* Process exit status for a code: 0 ok, 2 usage, 3 input, 4 policy, 5 hsm/pin, 6 not found, 1
 * other. */
int kl_rc_exit(kl_rc code);

/* Guard macros: the function declares `kl_rc rc = KL_OK;` and an `out:` label. */
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc != KL_OK) {                                                                         \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define ENSURE(cond, code, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = kl_fail((code), __VA_ARGS__);                                                     \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define ENSURE_SSL(cond, code, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = kl_fail_ssl((code), __VA_ARGS__);                                                 \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#endif
