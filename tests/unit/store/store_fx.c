/* The store unit tests' shared fixture (store_fx.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "store_fx.h"

int store_fx_setup(void **state, const char *name)
{
    store_fx *f = calloc(1, sizeof *f);
    if (!f) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/kl-store-%s-XXXXXX", name);
    if (!mkdtemp(f->dir)) {
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/keyline.db", f->dir);
    if (store_open(&f->s, f->path) != KL_OK) {
        return -1;
    }
    *state = f;
    return 0;
}

int store_fx_teardown(void **state)
{
    store_fx *f = *state;
    char cmd[300];
    store_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}
