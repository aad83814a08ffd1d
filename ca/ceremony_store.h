/* keyline: officers and ceremonies in the store (store_ceremony.c, in the store library: it
 * includes nothing above store.h). For the officer's CLI (keyline-ca officer|ceremony) only: it
 * runs as the CA user. Every change appends its audit entry in the same transaction: officer-add,
 * officer-remove, ceremony-propose, ceremony-approve, ceremony-refused, ceremony-run,
 * ceremony-failed. Structs filled here own their buffers (the matching _free). */
#ifndef KL_CEREMONY_STORE_H
#define KL_CEREMONY_STORE_H

#include "store.h"

#define CEREMONY_DB_NAME_MAX 64      /* = CEREMONY_NAME_MAX */
#define CEREMONY_DB_APPROVALS_MAX 32 /* = CEREMONY_APPROVALS_MAX */

#define CEREMONY_OFFICER_ACTIVE "active"
#define CEREMONY_OFFICER_REMOVED "removed"

typedef struct {
    char name[CEREMONY_DB_NAME_MAX + 1];
    uint8_t *cert; /* DER */
    size_t cert_len;
    char key_sha256[65];  /* of its SubjectPublicKeyInfo: unique among all officers */
    char cert_sha256[65]; /* of its DER */
    char status[16];      /* active | removed */
    time_t added, removed;
} ceremony_officer;

/* Register `o` (name, cert, fingerprints) as active, audit officer-add. KL_EEXIST when the name or
 * the key is taken (also by a removed officer: a name or key is never reused). direct_quorum:
 * 0 for a ceremony's change; else [ceremony] quorum M of a change without one (keyline-ca officer
 * add|remove), KL_EPOLICY naming the ceremony unless fewer than M officers are active, counted
 * in the change's own transaction (the first M register directly, and only those). */
kl_rc ceremony_officer_add(store *s, const ceremony_officer *o, long direct_quorum,
                           const char *actor) KL_WUR;
/* By name (any status) / by key fingerprint (active only). KL_ENOTFOUND. */
kl_rc ceremony_officer_get(store *s, const char *name, ceremony_officer *out) KL_WUR;
kl_rc ceremony_officer_by_key(store *s, const char *key_sha256, ceremony_officer *out) KL_WUR;
/* All officers in name order. */
kl_rc ceremony_officer_list(store *s, ceremony_officer **out, size_t *n) KL_WUR;
/* active -> removed, audit officer-remove. KL_ENOTFOUND; KL_EPOLICY when removed already, or
 * (direct_quorum, as for ceremony_officer_add) when it needs a ceremony. */
kl_rc ceremony_officer_remove(store *s, const char *name, long direct_quorum,
                              const char *actor) KL_WUR;
void ceremony_officer_free(ceremony_officer *o);
void ceremony_officer_list_free(ceremony_officer *v, size_t n);

/* Every officer row and every officer-add / officer-remove audit entry, read in one snapshot,
 * for checking one against the other (ceremony_officers_audit_check). */
typedef struct {
    int64_t seq;
    int remove;   /* 0 officer-add, 1 officer-remove */
    char *detail; /* the entry's detail as appended */
} ceremony_officer_event;
typedef struct {
    ceremony_officer *officers; /* name order */
    size_t nofficers;
    ceremony_officer_event *events; /* audit order */
    size_t nevents;
} ceremony_officer_history;
kl_rc ceremony_officer_history_get(store *s, ceremony_officer_history *out) KL_WUR;
void ceremony_officer_history_free(ceremony_officer_history *h);

#define CEREMONY_ST_PROPOSED "proposed" /* waiting for approvals and run */
#define CEREMONY_ST_RUNNING "running"   /* run claimed it; interrupted if it stays so */
#define CEREMONY_ST_DONE "done"         /* ran; the transcript is stored */

typedef struct {
    char officer[CEREMONY_DB_NAME_MAX + 1];
    uint8_t *sig;
    size_t sig_len;
    time_t at;
} ceremony_sig;

typedef struct {
    int64_t id;
    char op[32];
    uint8_t *req; /* the exact request bytes */
    size_t req_len;
    char status[16];
    time_t proposed;
    char *proposer;
    ceremony_sig ap[CEREMONY_DB_APPROVALS_MAX]; /* in officer name order */
    size_t nap;
    char *note;          /* the last refusal or failure, NULL when none */
    uint8_t *transcript; /* done: the signed transcript */
    size_t transcript_len;
} ceremony_rec;

/* Record a proposal: the canonical request bytes with its op and nonce (unique), audit
 * ceremony-propose. *id gets its number. */
kl_rc ceremony_db_propose(store *s, const char *op, const char *nonce, const uint8_t *req,
                          size_t req_len, time_t proposed, const char *proposer,
                          int64_t *id) KL_WUR;
kl_rc ceremony_db_get(store *s, int64_t id, ceremony_rec *out) KL_WUR; /* KL_ENOTFOUND */
/* All ceremonies, newest last, without approvals and transcripts. */
kl_rc ceremony_db_list(store *s, ceremony_rec **out, size_t *n) KL_WUR;
/* Record (or replace) `officer`'s approval of proposed ceremony `id`, audit ceremony-approve.
 * KL_EPOLICY when the ceremony is not proposed; KL_ENOTFOUND. */
kl_rc ceremony_db_approve(store *s, int64_t id, const char *officer, const uint8_t *sig,
                          size_t sig_len, const char *actor) KL_WUR;
/* Audit entry `action` (ceremony-refused) with `detail`, and the note of ceremony `id`. */
kl_rc ceremony_db_note(store *s, int64_t id, const char *action, const char *detail,
                       const char *actor) KL_WUR;
/* proposed -> running (one runner wins), `runner` (who, which process on which host, since
 * when) as its note. KL_EPOLICY when it is not proposed, when its request is not `req` (the
 * bytes whose approvals were counted), when the audit log has no ceremony-propose of id and
 * request (a row inserted, copied or edited beside keyline), or has its ceremony-run already (a
 * done ceremony set back to proposed). */
kl_rc ceremony_db_claim(store *s, int64_t id, const uint8_t *req, size_t req_len, const char *actor,
                        const char *runner) KL_WUR;
/* running -> proposed after a run that died (its process is gone), `detail` as note; audit
 * ceremony-interrupted. `was` is the note that named the dead run: KL_EPOLICY when it is not
 * running or its note is another (a run that took it up meanwhile, which must not be reset
 * under it). */
kl_rc ceremony_db_interrupted(store *s, int64_t id, const char *was, const char *detail,
                              const char *actor) KL_WUR;
/* running -> done with its transcript (audit ceremony-run), or, transcript NULL, running ->
 * proposed with `detail` as note (audit ceremony-failed). */
kl_rc ceremony_db_finish(store *s, int64_t id, const uint8_t *transcript, size_t len,
                         const char *detail, const char *actor) KL_WUR;
void ceremony_rec_free(ceremony_rec *r);
void ceremony_rec_list_free(ceremony_rec *v, size_t n);

#endif
