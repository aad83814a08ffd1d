/* keyline: the audit log's content, shared by the store backends (not for other callers).
 *
 * - The entry hash over explicit lengths (store_audit_entry_hash in store.h is the C-string
 *   form): a verifier hashes the bytes as stored, so a NUL inside a field changes the hash.
 * - The details of the entries only the store writes (issue, activate, revoke, ca-create,
 *   ca-recert, ocsp-signer-new, and the baselines of a migrated store), which carry the
 *   certificate hashes and states the state check compares the rows with. store_audit_append
 *   refuses these actions.
 * - The state check of store_audit_verify: a backend feeds every entry (in seq order, after
 *   its hash was checked), then every CA record and certificate row, all from one read
 *   snapshot, and asks for the verdict.
 * Formats and rules: docs/internals/store.md "State against the log". */
#ifndef KL_STORE_AUDIT_H
#define KL_STORE_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kl_err.h"
#include "store.h"

/* store_audit_entry_hash with explicit field lengths (fields may hold any bytes). */
kl_rc store_audit_entry_hash_len(int64_t seq, time_t ts, const char *actor, size_t actor_len,
                                 const char *action, size_t action_len, const char *detail,
                                 size_t detail_len, const char *prev_hash, char out[65]) KL_WUR;

/* Non-zero for an action only the store writes. */
int store_audit_action_reserved(const char *action);

/* Entry details; each sets *out (caller frees). KL_EINTERNAL when out of memory.
 * issue: `detail` (the caller's, NULL: none) starting with "serial=SERIAL", then
 *        " status=STATUS der-sha256=HEX". A detail that does not start with the serial gets it
 *        in front. */
kl_rc store_audit_detail_issue(const char *serial, const char *status, const uint8_t *der,
                               size_t der_len, const char *detail, char **out) KL_WUR;
/* revoke: "serial=SERIAL issuer=ISSUER reason=R revoked-at=T" (R -1: none). */
kl_rc store_audit_detail_revoke(const char *serial, const char *issuer, int reason, time_t when,
                                char **out) KL_WUR;
/* ca-create, ca-recert, ocsp-signer-new, ca-baseline: `detail` (NULL: none) starting with
 * "label=LABEL", then " der-sha256=HEX". */
kl_rc store_audit_detail_ca(const char *label, const uint8_t *der, size_t der_len,
                            const char *detail, char **out) KL_WUR;
/* cert-baseline: "serial=SERIAL status=STATUS[ reason=R revoked-at=T] der-sha256=HEX", the
 * revocation fields for a revoked row only. */
kl_rc store_audit_detail_baseline(const char *serial, const char *status, int reason,
                                  time_t revoked_at, const uint8_t *der, size_t der_len,
                                  char **out) KL_WUR;

/* The state check. All calls but _new and _free return KL_OK or KL_EINTERNAL (out of
 * memory); inconsistencies are collected, and store_audit_state_verdict reports the first
 * (KL_EPOLICY naming the entry, serial or label) in this order: entries, CA records,
 * certificate rows, then entries whose record is gone. */
typedef struct store_audit_state store_audit_state;
kl_rc store_audit_state_new(store_audit_state **out) KL_WUR;
void store_audit_state_free(store_audit_state *x); /* NULL ok */
kl_rc store_audit_state_entry(store_audit_state *x, int64_t seq, const char *action,
                              const char *detail, size_t detail_len) KL_WUR;
/* der NULL with der_len 0 for a row without one. revoke_reason -1 for none (SQL NULL). */
kl_rc store_audit_state_ca(store_audit_state *x, const char *label, const uint8_t *der,
                           size_t der_len) KL_WUR;
kl_rc store_audit_state_cert(store_audit_state *x, const char *serial, const char *status,
                             const uint8_t *der, size_t der_len, time_t revoked_at,
                             int revoke_reason) KL_WUR;
/* KL_OK when rows and log agree; KL_EPOLICY with the first inconsistency. */
kl_rc store_audit_state_verdict(store_audit_state *x) KL_WUR;

/* ---- checkpoints (store.h "audit checkpoints") ----
 * One signature: KL_OK when `sig` is the recorded key's (DER SubjectPublicKeyInfo `spki`)
 * signature over store_audit_checkpoint_tbs(seq, ts, hash) (SHA-256); KL_EPOLICY when it
 * does not verify; KL_EINPUT when spki does not parse. */
kl_rc store_audit_cp_sig_check(const uint8_t *spki, size_t spki_len, int64_t seq, time_t ts,
                               const char *hash, const uint8_t *sig, size_t sig_len) KL_WUR;

/* The checkpoint check of store_audit_verify_report. In one read snapshot a backend gives the
 * recorded key (_new; NULL spki: none), every checkpoint in seq order (_add), then every entry
 * in seq order after its hash was checked (_entry), then the number of entries (_end, which
 * fills the checkpoint part of the report). Each returns KL_EPOLICY at the first checkpoint
 * that fails (in the order of the entries), KL_EINTERNAL when out of memory. */
typedef struct store_audit_cps store_audit_cps;
kl_rc store_audit_cps_new(store_audit_cps **out, const char *label, const uint8_t *spki,
                          size_t spki_len) KL_WUR;
void store_audit_cps_free(store_audit_cps *x); /* NULL ok */
kl_rc store_audit_cps_add(store_audit_cps *x, int64_t seq, const char *hash, time_t ts,
                          const uint8_t *sig, size_t sig_len) KL_WUR;
/* Before the first entry: a key without checkpoints, checkpoints without a key. */
kl_rc store_audit_cps_start(store_audit_cps *x) KL_WUR;
kl_rc store_audit_cps_entry(store_audit_cps *x, int64_t seq, const char *hash) KL_WUR;
kl_rc store_audit_cps_end(store_audit_cps *x, int64_t entries, store_audit_report *r) KL_WUR;

#endif
