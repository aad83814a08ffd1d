/* keyline: quorum ceremonies (M of N security officers). docs/key-ceremony.md "Quorum
 * ceremonies" is the officer's view; docs/internals/ceremony.md the byte formats.
 *
 * A ceremony is one exact request (an operation and its canonical parameters) that M distinct
 * registered officers sign, each with the key on their own PKCS#11 token, before `ceremony
 * run` executes it with the CA token. This file has the parts that need neither store nor CA
 * token: the operation table, the canonical request bytes, signing and checking approvals, and
 * the transcript (the signed record `ceremony export` writes and `ceremony verify` checks
 * offline). ceremony_store.c keeps ceremonies and officers in the store; ceremony_run.c runs.
 *
 * Ownership: structs filled here own their strings and buffers (the matching _free). Every
 * parser takes bytes and a length, refuses anything that does not re-encode to exactly the same
 * bytes (KL_EINPUT with the line), and never leaves a half-filled struct on failure. */
#ifndef KL_CEREMONY_H
#define KL_CEREMONY_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ca.h"
#include "ceremony_store.h"
#include "kl_buf.h"
#include "kl_conf.h"
#include "kl_err.h"

#define CEREMONY_REQ_MAX (16 * 1024)         /* bytes of one canonical request */
#define CEREMONY_TRANSCRIPT_MAX (256 * 1024) /* bytes of one transcript */
#define CEREMONY_KV_MAX 16                   /* parameters of a request, fields of a result */
#define CEREMONY_VALUE_MAX 4096              /* bytes of one value (a certificate in base64) */
#define CEREMONY_APPROVALS_MAX 32            /* approvals in one transcript */
#define CEREMONY_NAME_MAX 64                 /* officer names: 1-64 of [A-Za-z0-9._-] */
#define CEREMONY_CERT_MAX (16 * 1024)        /* DER of an officer certificate */
#define CEREMONY_SIG_MAX 1024                /* DER/raw bytes of one signature */

/* One `key: value` pair: keys 1-32 of [a-z0-9-]; values 1-CEREMONY_VALUE_MAX bytes of UTF-8
 * (shortest form), no control character (C0, DEL, C1), no invisible or bidirectional format
 * character (what an officer reads is what they sign), no leading or trailing space. */
typedef struct {
    char *key;
    char *value;
} ceremony_kv;

typedef struct {
    ceremony_kv kv[CEREMONY_KV_MAX];
    size_t n; /* sorted by key (strcmp), keys unique */
} ceremony_kvs;

/* ---- requests ---- */
typedef struct {
    char op[32];    /* a row of the operation table: "ca create" */
    char nonce[33]; /* 32 lower-case hex digits, random per proposal */
    time_t proposed;
    char *proposer;      /* audit actor of whoever proposed: "cli:alice" */
    ceremony_kvs params; /* every parameter the operation runs with, defaults made explicit */
} ceremony_req;

/* Run `r` with the CA token (the caller has checked the quorum). Fill `res` (ceremony_kvs_set)
 * with what an auditor compares: fingerprints of the resulting key and certificate, serials. */
typedef kl_rc (*ceremony_run_fn)(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                 ceremony_kvs *res);

typedef struct {
    const char *name; /* the option of the plain command without "--": "label" */
    int required;
    const char *dflt; /* NULL: no default (absent unless given) */
} ceremony_param;

/* An operation that needs the quorum. `op` is the plain command's words ("ca create"): that
 * command refuses while [ceremony] quorum is set (ceremony_guard) and the ceremony runs `run`.
 * Add a row (ceremony_ops.c) for each new guarded command; its run function calls the same
 * library function as the plain command. */
/* At proposal, after the defaults: turn what the proposer gave into what the officers sign
 * (officer add: a certificate file into its base64 DER). KL_EUSAGE/KL_EINPUT with the reason. */
typedef kl_rc (*ceremony_prep_fn)(ceremony_kvs *params);
#define CEREMONY_OP_SELF_GUARDED 1u /* ceremony_guard passes it: the command decides itself */

typedef struct {
    const char *op;
    const char *help;
    ceremony_param params[CEREMONY_KV_MAX];
    ceremony_run_fn run;
    ceremony_prep_fn prepare; /* NULL: none */
    unsigned flags;           /* CEREMONY_OP_* */
} ceremony_op;

/* The table (ceremony_ops.c), ending with a row whose op is NULL. */
extern const ceremony_op ceremony_ops[];
const ceremony_op *ceremony_op_find(const char *op); /* NULL when unknown */

/* A request for `op` from a plain command's options (`--name value` or `--name=value`, each
 * name a param of the op, at most once), the defaults filled in, a fresh nonce, now, and
 * `proposer`. KL_EUSAGE naming what is wrong (unknown op or option, missing required one). */
kl_rc ceremony_req_new(const char *op, int argc, char **argv, const char *proposer,
                       ceremony_req *out) KL_WUR;
/* The canonical bytes (docs/internals/ceremony.md). KL_EINPUT when a field breaks the rules. */
kl_rc ceremony_req_encode(const ceremony_req *r, kl_buf *out) KL_WUR;
/* Parse canonical request bytes (exactly these; anything that does not re-encode to the same
 * bytes is KL_EINPUT), checking the op and its parameters against the table. */
kl_rc ceremony_req_parse(const uint8_t *p, size_t n, ceremony_req *out) KL_WUR;
const char *ceremony_req_get(const ceremony_req *r, const char *key); /* NULL when absent */
void ceremony_req_free(ceremony_req *r);

/* Set (insert in key order, or replace) a field. KL_EINPUT when key or value breaks the rules. */
kl_rc ceremony_kvs_set(ceremony_kvs *s, const char *key, const char *value) KL_WUR;
const char *ceremony_kvs_get(const ceremony_kvs *s, const char *key);
void ceremony_kvs_free(ceremony_kvs *s);

/* ---- approvals: an officer's signature over the exact request bytes ----
 * Sign `msg` with `key` (a token key from hsm_key_load, or any EVP_PKEY): ECDSA or RSA PKCS#1
 * v1.5 over SHA-256 (SHA-384 for P-384 keys). *sig malloc'd. */
kl_rc ceremony_sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t **sig,
                    size_t *sig_len) KL_WUR;
/* KL_EPOLICY when `sig` is not a signature of `msg` by `pub` under the rule above. */
kl_rc ceremony_sig_check(EVP_PKEY *pub, const uint8_t *msg, size_t n, const uint8_t *sig,
                         size_t sig_len) KL_WUR;
/* Sign `msg` with the officer's token key: `uri` names token and key (RFC 7512, object= is the
 * key's label; module-path= overrides `module`), `pin_spec` is a kl_secret source (env:, file:,
 * prompt). The PIN is wiped before this returns and the token closed. *pub (may be NULL) gets
 * the key's public half. hsm_open's and kl_secret_read's errors. */
kl_rc ceremony_token_sign(const char *module, const char *uri, const char *pin_spec,
                          const uint8_t *msg, size_t n, uint8_t **sig, size_t *sig_len,
                          EVP_PKEY **pub) KL_WUR;
/* Lower-case hex SHA-256 of a certificate's DER / of a key's SubjectPublicKeyInfo DER, an EC key
 * taken as uncompressed on its named curve (one key, one fingerprint, however a certificate
 * encodes it). */
kl_rc ceremony_cert_sha256(X509 *x, char out[65]) KL_WUR;
kl_rc ceremony_key_sha256(EVP_PKEY *k, char out[65]) KL_WUR;
/* KL_EUSAGE unless `name` is 1-CEREMONY_NAME_MAX of [A-Za-z0-9._-]. */
kl_rc ceremony_name_check(const char *name) KL_WUR;

/* ---- transcripts ---- */
typedef struct {
    char name[CEREMONY_NAME_MAX + 1];
    time_t at;
    uint8_t *cert; /* the officer's certificate, DER */
    size_t cert_len;
    uint8_t *sig; /* over the request bytes */
    size_t sig_len;
} ceremony_approval;

typedef struct {
    int64_t id;
    uint8_t *req; /* the exact request bytes */
    size_t req_len;
    ceremony_approval ap[CEREMONY_APPROVALS_MAX]; /* in name order, names unique */
    size_t nap;
    long quorum; /* [ceremony] quorum when it ran */
    time_t ran;
    char *runner; /* audit actor of whoever ran it */
    ceremony_kvs result;
    uint8_t *audit_spki; /* the audit key (CA token) that signs the transcript */
    size_t audit_spki_len;
    uint8_t *audit_sig; /* over every byte before the audit-signature line */
    size_t audit_sig_len;
} ceremony_transcript;

/* The signed part: everything up to and including the audit-key line. */
kl_rc ceremony_transcript_body(const ceremony_transcript *t, kl_buf *out) KL_WUR;
/* Body plus the audit-signature line. */
kl_rc ceremony_transcript_encode(const ceremony_transcript *t, kl_buf *out) KL_WUR;
/* Strict parse (re-encodes to exactly the input, else KL_EINPUT); no signature checked. */
kl_rc ceremony_transcript_parse(const uint8_t *p, size_t n, ceremony_transcript *out) KL_WUR;
void ceremony_transcript_free(ceremony_transcript *t);
/* Check one approval: its certificate parses (all of its DER) and its signature is over the
 * request bytes. *key_sha (NULL ok) gets the officer key's fingerprint. KL_EPOLICY naming the
 * officer. */
kl_rc ceremony_approval_check(const ceremony_approval *a, const uint8_t *req, size_t req_len,
                              char key_sha[65]) KL_WUR;

/* What `ceremony verify` pins (any may be NULL/0: not pinned). */
typedef struct {
    const char *audit_key_sha256; /* the store's audit key (keyline-ca audit verify prints it) */
    STACK_OF(X509) * officers;    /* every approval's certificate must be one of these */
    int64_t id;                   /* the ceremony the transcript must be of */
    long quorum; /* the transcript's quorum, and so its counted approvals, at least this */
} ceremony_pins;
/* Offline verification: strict parse, the request parses, every approval checks, approvals
 * come from distinct officers (names and keys), at least max(quorum, pins->quorum) (>= 1) of
 * them, the transcript's quorum no lower than pins->quorum, the audit signature covers the
 * body, and the other pins hold. KL_EINPUT (malformed) or KL_EPOLICY (a check failed) with the
 * reason. `out` (NULL ok) gets the parsed transcript. */
kl_rc ceremony_transcript_verify(const uint8_t *p, size_t n, const ceremony_pins *pins,
                                 ceremony_transcript *out) KL_WUR;

/* ---- running (ceremony_run.c; officers and ceremonies in the store: ceremony_store.h) ---- */
/* Run ceremony `id` with the CA token (ceremony_run.c): the request parses; the approvals of
 * active registered officers whose signatures verify over the exact request bytes with their
 * registered certificates are counted, each officer once; fewer than max(quorum, 1) is
 * KL_EPOLICY, logged as ceremony-refused with what did not count. Then the op runs; its result,
 * the counted approvals and the quorum make the transcript, signed with the audit key (made on
 * first need) and stored with the ceremony (done). A failed op leaves it proposed
 * (ceremony-failed). `out` (NULL ok) gets the transcript's bytes (caller frees). */
kl_rc ceremony_run(ca_ctx *ca, int64_t id, long quorum, const char *actor, uint8_t **out,
                   size_t *out_len) KL_WUR;

/* The officers table against the audit log (audit verify): every officer row was registered
 * by an audited officer-add naming the same key and certificate fingerprints, and its stored
 * certificate still hashes to them; a removed officer has its officer-remove and an active one
 * none; every audited registration still has its row. KL_EPOLICY naming the first mismatch (a
 * row added, altered or deleted outside keyline); *count the officers checked. */
kl_rc ceremony_officers_audit_check(store *s, long *count) KL_WUR;

/* ---- officers (keyline-ca officer; their store records: ceremony_store.h) ----
 * An officer's certificate from PEM or DER bytes: o->cert (DER, malloc'd) and both fingerprints.
 * KL_EINPUT when it is no certificate; KL_EPOLICY unless its key is EC P-256, EC P-384 or RSA of
 * 2048 bits or more. `what` names it in messages. o->name is left as it is. */
kl_rc ceremony_officer_cert(const uint8_t *data, size_t len, const char *what,
                            ceremony_officer *o) KL_WUR;

/* `keyline-ca revoke` under the quorum: each certificate a revocation would revoke is judged
 * as the store resolves it (store_revoke_req.check, with ceremony_revoke_guard_check and the
 * guard as its argument), whatever named it (a serial, a device id, a period): KL_EPOLICY for a
 * CA certificate (a CA record's certificate with basicConstraints cA, or one of a template of
 * kind ca; an OCSP signer is none), which only the ceremony `ca revoke-ca` revokes.
 * ceremony_revoke_guard_new: *out NULL when the quorum is 0 (nothing to check); else the
 * guard, which reads the CA records now and uses `ca` (its templates) until freed. Store
 * errors as such. */
typedef struct ceremony_revoke_guard ceremony_revoke_guard;
kl_rc ceremony_revoke_guard_new(const kl_conf *conf, ca_ctx *ca,
                                ceremony_revoke_guard **out) KL_WUR;
kl_rc ceremony_revoke_guard_check(void *guard, const char *serial, const char *issuer,
                                  const char *template_name) KL_WUR;
void ceremony_revoke_guard_free(ceremony_revoke_guard *g);

/* ---- the quorum rule ----
 * [ceremony] quorum (0..CEREMONY_APPROVALS_MAX, default 0): 0, no ceremonies; M >= 1, every
 * operation of the table needs M distinct officers' approvals and its plain command refuses. */
kl_rc ceremony_quorum(const kl_conf *conf, long *out) KL_WUR;
/* For the plain commands (keyline-ca's dispatcher, before running `group name`): KL_OK when the
 * command is not in the table, is CEREMONY_OP_SELF_GUARDED, or the quorum is 0; KL_EPOLICY
 * pointing to `keyline-ca ceremony propose ...` otherwise. */
kl_rc ceremony_guard(const kl_conf *conf, const char *group, const char *name) KL_WUR;

#endif
