/* keyline: an OpenSSL-backed implementation of the device porting layer (kl_port.h) for the
 * host: used by keyline-devsim and by the device unit tests. Host only (OpenSSL, files).
 *
 * Persistent storage is a directory (created 0700 if missing):
 *   transport.pem   device transport key (PKCS#8 PEM), generated on first open
 *   identity.pem    identity key, written by key_generate / key_import
 *   obj-XX          engine object XX (hex KL_OBJ_* id), e.g. obj-01 is the state record
 * Every file is replaced atomically (write to a temp file, fsync, rename), the guarantee the
 * porting layer asks of store_write and key storage; so killing the process at any point is a
 * faithful "power cut", and re-opening the same directory is the device booting again.
 *
 * Misbehaviour switches (for keyline-devsim's --misbehave and tests) are plain fields. */
#ifndef KL_DEVSIM_PORT_H
#define KL_DEVSIM_PORT_H

#include <limits.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "kl_port.h"

typedef struct devsim_port {
    char dir[PATH_MAX];
    EVP_PKEY *transport; /* owned */
    EVP_PKEY *identity;  /* owned, NULL until a key exists */

    /* Where kl_port.send goes: the caller's transport (pty, pipe, test buffer). Required. */
    int (*send_fn)(void *user, const uint8_t *data, size_t len);
    void *send_user;

    /* Misbehaviour */
    int bad_sig;        /* key_sign returns a signature that does not verify (bad-csr) */
    int refuse_lock;    /* the lock hook vetoes LOCK (refuse-lock) */
    size_t store_limit; /* if nonzero, store_write fails with KL_PORT_ESPACE above this */
    int fail_store;     /* if nonzero, every store_write fails (KL_PORT_EFAIL) */
} devsim_port;

/* Open (or create) the state directory dir and load the transport and identity keys.
 * send_fn/send_user are stored as given. Returns KL_OK, KL_EIO (directory, files),
 * KL_EINPUT (unreadable key file), KL_EINTERNAL (OpenSSL). On failure p holds nothing. */
kl_rc devsim_port_open(devsim_port *p, const char *dir,
                       int (*send_fn)(void *user, const uint8_t *data, size_t len),
                       void *send_user) KL_WUR;
/* Free keys; the directory stays (it is the device's flash). NULL-safe. */
void devsim_port_close(devsim_port *p);

/* The function table; pass with a devsim_port * as port ctx to kl_dev_init(). */
extern const kl_port devsim_port_ops;

#endif
