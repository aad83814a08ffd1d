/* keyline: signer processes (privilege separation for the network-facing process).
 *
 * Modelled on OpenSSH's ssh-pkcs11-helper: small child processes hold the PKCS#11 login and
 * answer a fixed table of requests over socketpairs (see docs/internals/hsm.md for the table
 * and the framing); the process that forked them keeps an hsm_ctx in "remote" mode, on which
 * hsm_key_load / hsm_key_public keep working (the EVP_PKEYs' private-key operation is one
 * request to a signer) while hsm_key_generate, hsm_key_destroy and hsm_key_protection are
 * refused (KL_EPOLICY). The remote process never holds the PIN and never loads the module.
 *
 * Fork before any thread exists and before this process has initialised a PKCS#11 module
 * (C_Initialize state across fork() is undefined): hsm_signer_spawn refuses if this process
 * already has an hsm_ctx open. */
#ifndef KL_HSM_SIGNER_H
#define KL_HSM_SIGNER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hsm.h"

/* Largest frame body (after the 4-byte length) either side accepts. */
#define HSM_SIGNER_FRAME_MAX 4096u
/* Longest key label a request may carry. */
#define HSM_SIGNER_LABEL_MAX 128u

/* Signature schemes a signer produces; the digest is always made by the caller. */
typedef enum {
    HSM_SIG_ECDSA = 1,     /* DER ECDSA-Sig-Value over the digest */
    HSM_SIG_RSA_PKCS1 = 2, /* RSASSA-PKCS1-v1_5, DigestInfo made from md */
    HSM_SIG_RSA_PSS = 3,   /* RSASSA-PSS, MGF1 with md, salt length = digest length */
} hsm_sig_alg;

/* Digests a signature request may name (0: none, ECDSA only). */
typedef enum {
    HSM_MD_NONE = 0,
    HSM_MD_SHA256 = 1,
    HSM_MD_SHA384 = 2,
    HSM_MD_SHA512 = 3,
} hsm_md;

/* Start `n` (1..64) signer processes, each logged in to the token with `pin` (not NULL),
 * through a keeper child that forks them (and later replaces dead ones: at most n running, at
 * most one new a second after the first n; hsm_signer_revive). Returns once every signer has
 * opened the token and said so; *out is a remote hsm_ctx whose hsm_close() closes the
 * channels and reaps the keeper (which reaps the signers). Each signer logs in from a private
 * copy of the PIN and wipes it (libp11 keeps one on its slot, in the signer); the keeper keeps
 * its copy for replacements; the caller wipes its own (kl_secret_free).
 * `sign_keys` limits what the signers sign with: a NULL-terminated list of fnmatch(3) patterns
 * over key labels (a pkcs11: URI entry stands for its object= label), e.g. {"field1",
 * "*.ocsp", NULL}; a signature request for any other key is refused with KL_EPOLICY ("key 'X'
 * is not one this server signs with"). Public keys are served for every key. NULL: any key.
 * Errors: the first child's failure (KL_EPIN "wrong PIN ...", KL_ENOTFOUND, ...), KL_EUSAGE
 * when a PKCS#11 module is already initialised in this process or the list has more than 64
 * entries, KL_EIO (fork, socketpair). */
kl_rc hsm_signer_spawn(const char *module, const char *token_uri, const char *pin, unsigned n,
                       const char *const *sign_keys, hsm_ctx **out) KL_WUR;

/* Lower level, for tests: start one signer; *fd is the parent's end of its channel (close to
 * end the child), *pid its process id. Same errors as hsm_signer_spawn. */
kl_rc hsm_signer_fork(const char *module, const char *token_uri, const char *pin,
                      const char *const *sign_keys, int *fd, pid_t *pid, char *token_label,
                      size_t token_label_cap) KL_WUR;

/* Sign a digest with the private key labelled `label` (bare label or pkcs11: URI with
 * object=). Local context: in the token; remote context: one request to a free signer
 * process (waits while all are busy). `sig` has room for `*sig_len` bytes (512 is enough for
 * every supported key) and gets the signature's length back.
 * Errors: KL_EINPUT (digest length does not match md, md not allowed for alg), KL_EPOLICY
 * (alg does not fit the key), KL_ENOTFOUND, KL_EHSM (token failure; "signer process N
 * died/timed out" in remote mode: that channel is closed and not used again). */
kl_rc hsm_key_sign_digest(hsm_ctx *h, const char *label, hsm_sig_alg alg, hsm_md md,
                          const uint8_t *dgst, size_t dgst_len, uint8_t *sig,
                          size_t *sig_len) KL_WUR;

/* 1 when `h` forwards to signer processes, else 0. */
int hsm_is_remote(const hsm_ctx *h);
/* Replace the remote context's dead signers now, as far as the keeper allows (one a second
 * after the first ones; never more than were spawned). Returns how many were started. Dead
 * signers are also replaced by the request that finds one dead, and when none is left. */
unsigned hsm_signer_revive(hsm_ctx *h);
/* Process id of the keeper of a remote context (hsm_signer_spawn), -1 when there is none. */
pid_t hsm_signer_keeper_pid(hsm_ctx *h);
/* Process ids of a remote context's live signers (for tests and diagnostics); returns how
 * many were written (at most max). */
size_t hsm_signer_pids(hsm_ctx *h, pid_t *pids, size_t max);

/* --- the request codec (exposed for tests and the fuzzer) ----------------------------- */

enum { HSM_REQ_PUBKEY = 1, HSM_REQ_SIGN = 2 };

typedef struct {
    uint8_t op; /* HSM_REQ_* */
    char label[HSM_SIGNER_LABEL_MAX + 1];
    uint8_t alg; /* hsm_sig_alg (SIGN) */
    uint8_t md;  /* hsm_md (SIGN) */
    uint8_t dgst[64];
    size_t dgst_len;
} hsm_signer_req;

/* Parse one frame body (without the 4-byte length). Every field is checked: op known, label
 * 1..128 printable ASCII bytes, alg/md known and consistent, digest length fitting md (or 32,
 * 48 or 64 for ECDSA without md), no trailing bytes. KL_EINPUT with a message otherwise. */
kl_rc hsm_signer_req_parse(const uint8_t *body, size_t len, hsm_signer_req *out) KL_WUR;
/* Encode a request body into buf (cap bytes); returns the length or 0 when it does not fit
 * or a field is out of range. */
size_t hsm_signer_req_encode(const hsm_signer_req *r, uint8_t *buf, size_t cap);
/* Digest size of an hsm_md (0 for HSM_MD_NONE or unknown). */
size_t hsm_md_size(hsm_md md);

#endif
