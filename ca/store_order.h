/* keyline: production orders in the store (docs/station.md "Production orders"; written once
 * for every driver: store_db.h).
 *
 * An order lets one station ([station] id) have at most `count` certificates of one profile
 * issued before `expires`. The count is taken by st_order_take_tx inside the certificate's own
 * insert transaction (store_cert.order_id), so it holds across stations, daemons, hosts,
 * crashes and restarts: the row's UPDATE ... WHERE issued < count and the certificate commit or
 * roll back together. Orders are never deleted; closing one is final. */
#ifndef KL_STORE_ORDER_H
#define KL_STORE_ORDER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kl_err.h"
#include "store.h"

#define STORE_ORDER_OPEN "open"
#define STORE_ORDER_CLOSED "closed"
#define STORE_ORDER_ACTOR_MAX 1024 /* bytes of created_by, closed_by (after cleaning) */

typedef struct {
    char *id;
    char *model;
    char *station;
    char *profile;
    int64_t count;
    int64_t issued;
    time_t expires;
    time_t created;
    char *created_by;
    char *state; /* open | closed */
    time_t closed;
    char *closed_by; /* NULL while open */
    uint8_t *sig;    /* the audit key's signature over order_text() (ca/order.h) */
    size_t sig_len;
} store_order;

/* Record a new order (state open, issued 0); audit "order-create". KL_EEXIST for a taken id. */
kl_rc store_order_create(store *s, const store_order *o, const char *actor) KL_WUR;
/* KL_ENOTFOUND when there is no such order. Free with store_order_free. */
kl_rc store_order_get(store *s, const char *id, store_order *out) KL_WUR;
/* Every order, oldest first. Free with store_order_list_free. */
kl_rc store_order_list(store *s, store_order **out, size_t *n) KL_WUR;
void store_order_list_free(store_order *v, size_t n);
/* The order a certificate of `profile` for `station` is counted against: of that station's
 * orders for the profile, one for `model` (NULL: any model) before others, one that still
 * allows a certificate (open, unexpired, not exhausted) before one that does not, open before
 * closed, then the newest; the one returned says why it cannot be used when none can.
 * *controlled: the profile has orders at all (then every issuance needs one). KL_ENOTFOUND
 * when the station has none for the profile. station may be NULL (only *controlled). Read on
 * the store's reader connection (store_get): an early check on every issuance of a front end,
 * it does not wait behind a group commit's fsync; the count itself is taken in the insert. */
kl_rc store_order_find(store *s, const char *station, const char *profile, const char *model,
                       store_order *out, int *controlled) KL_WUR;
/* An actor as an order's signed text and report carry it: printable ASCII, any other byte as
 * \xHH (an operator's UTF-8 name on a station's dashboard), cut to cap - 1 bytes before an
 * escape that does not fit. */
void store_order_actor_clean(const char *in, char *out, size_t cap);
/* open -> closed; audit "order-close". KL_OK if it was already closed (*was_open 0). The actor
 * is recorded as store_order_actor_clean() makes it. */
kl_rc store_order_close(store *s, const char *id, const char *actor, int *was_open) KL_WUR;
/* The certificates counted against an order, in issue order. */
typedef int (*store_order_cert_cb)(void *arg, const char *serial, const char *device_id,
                                   time_t issued);
kl_rc store_order_certs(store *s, const char *id, store_order_cert_cb cb, void *arg) KL_WUR;
void store_order_free(store_order *o);

#endif
