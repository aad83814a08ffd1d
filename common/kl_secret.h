/* keyline: secret (PIN, password) sources.
 *
 *   env:VAR     the value of environment variable VAR
 *   file:PATH   the first line of PATH; the file must be mode 0600 or stricter
 *   prompt      ask on the controlling terminal with echo off
 *
 * A secret never comes from argv. The returned kl_secret is wiped on kl_secret_free(). */
#ifndef KL_SECRET_H
#define KL_SECRET_H

#include <stddef.h>

#include "kl_err.h"

typedef struct {
    char value[256]; /* NUL-terminated */
    size_t len;
} kl_secret;

/* `spec` as above; `base_dir` resolves a relative file: path (may be NULL). `what` names the
 * secret in messages and in the prompt ("token PIN"). Errors: KL_EUSAGE (a spec that is none of
 * the above; the message never repeats it: it may be a PIN typed where a source belongs),
 * KL_EPOLICY (file readable by group or others), KL_EPIN (no spec, an unset variable, a missing,
 * unreadable, non-regular or empty file, no terminal to prompt on: the PIN error, exit status 5,
 * like a wrong PIN). */
kl_rc kl_secret_read(kl_secret *out, const char *spec, const char *base_dir,
                     const char *what) KL_WUR;
void kl_secret_free(kl_secret *s);

/* For a long-running process, once the secret is used: when `spec` is env:VAR, wipe VAR's value
 * in place (the bytes sit in the process's environment block, which /proc/PID/environ and a
 * core dump show even after unsetenv) and remove VAR from the environment. Children started
 * later do not get it. Any other spec (or NULL): nothing. Not thread-safe (setenv family). */
void kl_secret_env_scrub(const char *spec);

#endif
