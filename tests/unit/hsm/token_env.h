/* keyline: what tests/lib/with-token.sh exports, for the HSM tests (exit 77 = skipped when
 * run outside it). */
#ifndef KL_TEST_TOKEN_ENV_H
#define KL_TEST_TOKEN_ENV_H

#include <stdio.h>
#include <stdlib.h>

static inline const char *env_or_skip(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL) {
        fprintf(stderr, "%s not set: run under tests/lib/with-token.sh\n", name);
        exit(77);
    }
    return v;
}

static inline const char *module(void)
{
    return env_or_skip("KL_MODULE");
}

static inline const char *token_uri(void)
{
    return env_or_skip("KL_TOKEN_URI");
}

#endif
