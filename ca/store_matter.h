/* keyline: Matter onboarding data in the store (issue 19, docs/matter.md): per device, beside
 * its inventory row, the discriminator, PBKDF2 salt and iterations and the SPAKE2+ verifier the
 * station wrote to it with MATTER (docs/line-protocol.md 4.10), and the DAC they go with. The
 * setup passcode only sealed to a token key, and only with [station] matter-keep-passcode. Written
 * by keyline-cad (CA-protocol op "matter"), read by tests and support tools. Schema: the
 * matter_onboarding table (store_schema.c). */
#ifndef KL_STORE_MATTER_H
#define KL_STORE_MATTER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

#define STORE_MATTER_VERIFIER_LEN 97 /* w0 (32) || L (65) */

typedef struct {
    char *device_id;       /* hardware serial: the inventory row's key */
    char *cert_serial;     /* the DAC (canonical hex serial) */
    int64_t discriminator; /* 0..4095 */
    int64_t iterations;    /* 1000..100000 */
    uint8_t *salt;         /* 16..32 bytes */
    size_t salt_len;
    uint8_t *verifier; /* STORE_MATTER_VERIFIER_LEN bytes */
    size_t verifier_len;
    /* NULL, or sealed to this row (ca/matter_seal.h): MATTER_SEAL_LEN bytes, or
     * MATTER_SEAL_V1_LEN in a row written before the seal was bound to the row */
    uint8_t *passcode_sealed;
    size_t passcode_sealed_len;
    time_t updated;
} store_matter;

/* Insert or replace the device's row (a device provisioned again gets new data), with an audit
 * entry "matter-onboarding" naming device, DAC and discriminator, in one write transaction.
 * KL_EUSAGE for a field out of range; store errors as such. */
kl_rc store_matter_put(store *s, const store_matter *m, const char *actor) KL_WUR;
/* The same as a compare-and-set (store_device_put_if): written only while the device's row
 * still names seen->cert_serial with status seen->cert_status (all NULL: no row), compared in
 * the write's transaction; else KL_EEXIST "device D: its Matter onboarding data changed since
 * it was read (...)", nothing written. seen NULL: no compare (store_matter_put). */
kl_rc store_matter_put_if(store *s, const store_matter *m, const char *actor,
                          const store_device_seen *seen) KL_WUR;
/* The device's row. KL_ENOTFOUND when it has none. Free with store_matter_free. */
kl_rc store_matter_get(store *s, const char *device_id, store_matter *out) KL_WUR;
void store_matter_free(store_matter *m);

#endif
