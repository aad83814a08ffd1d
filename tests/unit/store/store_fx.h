/* The fixture the store unit tests share: a fresh SQLite store in a temporary folder of its
 * own, removed by the teardown. */
#ifndef KL_TEST_STORE_FX_H
#define KL_TEST_STORE_FX_H

#include "store.h"

typedef struct {
    char dir[256], path[300]; /* the folder, and the store's file in it */
    store *s;
} store_fx;

/* cmocka setup: *state = a store_fx with its store open in /tmp/kl-store-NAME-XXXXXX;
 * -1 if it cannot be made. */
int store_fx_setup(void **state, const char *name);

/* cmocka teardown: closes the store, removes the folder, frees the fixture. */
int store_fx_teardown(void **state);

#endif
