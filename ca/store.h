/* keyline: the store: issued certificates, revocations, CA records, device inventory, audit
 * log. The operations and their rules (audit chain, CRL numbers, approvals, claims,
 * checkpoints) are written once above a small driver interface that is storage and
 * transactions only (ca/store_db.h): SQLite (WAL, synchronous=FULL) is the embedded default.
 * docs/internals/store.md "Layers"; HACKING.md "Store data" to add a table.
 *
 * Several processes may use one SQLite store at once (busy timeout + retries).
 * Every store_* call is atomic on its own; ca_issue() uses the reserve/commit pair.
 * Strings returned inside records are owned by the record (free with the matching _free). */
#ifndef KL_STORE_H
#define KL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kl_err.h"

typedef struct store store;

/* Certificate status in the store. */
#define STORE_ST_RESERVED "reserved" /* earlier versions: serial reserved, not yet signed */
#define STORE_ST_PENDING "pending"   /* signed, not yet confirmed by the device (station) */
#define STORE_ST_VALID "valid"
#define STORE_ST_REVOKED "revoked"
#define STORE_ST_FAILED                                                                            \
    "failed" /* earlier versions: reservation abandoned; serial never reused                       \
              */

typedef struct {
    char *serial_hex; /* upper-case hex, no separators, as in `openssl x509 -serial` */
    char *issuer;     /* CA label */
    char *subject;    /* RFC 2253 one-line */
    char *template_name;
    char *device_id; /* NULL if none */
    char *status;
    time_t not_before, not_after;
    time_t revoked_at; /* 0 if not revoked */
    int revoke_reason; /* CRL reason code (RFC 5280 5.3.1), -1 if none */
    uint8_t *der;      /* NULL until signed */
    size_t der_len;
    time_t created;
    int64_t request_id;    /* store_cert_insert only: the held request this approves (0: none) */
    char *order_id;        /* store_cert_insert only: the production order it counts against, in
                            * the same transaction (store_order.h); NULL: none */
    int64_t crl_part;      /* store_cert_insert only, with crl_part_size > 0: its CRL partition */
    int64_t crl_part_size; /* > 0: counted against crl_part of the issuer in the same
                            * transaction, at most this many (KL_EEXIST when full); 0: none */
} store_cert;

typedef struct {
    char *label; /* CA label, also the CKA_LABEL of its key in the token */
    char *template_name;
    char *parent;   /* issuer CA label, NULL for a self-signed root */
    char *key_type; /* "ec-p256" ... */
    uint8_t *der;   /* CA certificate */
    size_t der_len;
    char *status; /* "active" | "retired" */
    time_t created;
} store_ca;

typedef struct {
    char *device_id; /* hardware serial */
    char *model;
    char *cert_serial; /* hex of the current identity cert, NULL if none */
    char *state;       /* "pending" | "provisioned" | "failed" | "reprovision" */
    char *detail;      /* free text: last error, station, fixture */
    time_t updated;
} store_device;

typedef struct {
    int64_t seq;
    time_t ts;
    char *actor;
    char *action;
    char *detail;
    char prev_hash[65]; /* hex SHA-256 of previous entry, 64 zeros for the first */
    char hash[65];      /* hex SHA-256 of this entry (docs/internals/store.md: exact input) */
} store_audit;

/* An enrollment request held for an officer's decision (EST `approval = manual`). */
typedef struct {
    int64_t id;
    char *label;    /* EST label ("" for the default) */
    char *csr_hash; /* lower-case hex SHA-256 of the CSR DER: (label, csr_hash) is unique */
    uint8_t *csr;
    size_t csr_len;
    char *issuer, *template_name,
        *device_id;    /* what approval issues with (device_id may be NULL) */
    char *requester;   /* the authenticated client, as in audit actors */
    char *subject;     /* the CSR's subject, RFC 2253 */
    char *status;      /* pending | approved | rejected */
    char *cert_serial; /* approved: the certificate issued */
    char *reason;      /* rejected: why */
    time_t created, decided;
} store_request;
#define STORE_RQ_PENDING "pending"
#define STORE_RQ_APPROVED "approved"
#define STORE_RQ_REJECTED "rejected"

typedef int (*store_cert_cb)(void *arg, const store_cert *c); /* return non-zero to stop */

/* `path`: a file path (SQLite), "sqlite:PATH", or a libpq URL "postgresql://..." (or
 * "postgres://"; docs/internals/store.md "PostgreSQL"). Creates the schema when new.
 * Errors: KL_EIO (cannot open/create), KL_EINPUT (not a keyline store / newer schema),
 * KL_EUNAVAIL (the database server cannot be reached now). Any store_* call on a PostgreSQL
 * store may return KL_EUNAVAIL "store unavailable: ..." while the server is away: nothing of
 * that call was committed; the next call reconnects by itself. */
kl_rc store_open(store **out, const char *path) KL_WUR;
/* A copy of `dsn` to show (messages, config check): a password in it (user:PASSWORD@,
 * password=...) removed. NULL when out of memory. */
char *store_dsn_redact(const char *dsn);
/* The DSN keyline.conf names: [store] url (postgresql://...) or [store] path (a file,
 * relative to the configuration's folder; a value with a scheme is taken as written). *out is
 * the caller's (free). KL_EUSAGE when neither or both are set. */
struct kl_conf;
kl_rc store_conf_dsn(const struct kl_conf *conf, char **out) KL_WUR;
void store_close(store *s);

/* --- one snapshot for several reads ---
 * Between store_snapshot_begin and store_snapshot_end, this thread's reads of `s` that use the
 * reader connection (the point reads: store_cert_state_get, store_ca_get, store_ca_list, ...)
 * run in one read transaction: one snapshot, one lock and one begin/end instead of one per
 * read. Other threads' reads of `s` wait until the end, so keep it short: no writes, no
 * signing, and no lock another reader may hold (ca_ctx's cache lock). One at a time per thread.
 * store_snapshot_end returns `rc` (its message kept) when it is not KL_OK, else the end's own
 * result. */
kl_rc store_snapshot_begin(store *s) KL_WUR;
kl_rc store_snapshot_end(store *s, kl_rc rc) KL_WUR;

/* --- CA records --- */
kl_rc store_ca_put(store *s, const store_ca *ca) KL_WUR; /* KL_EEXIST on label clash */
/* Record n CAs in order (each with its ca-create audit entry) and then the audit entry
 * actor/action/detail, in one transaction: all or nothing (a rotation's new root and its two
 * rollover certificates). Errors as store_ca_put. */
kl_rc store_ca_put_all(store *s, const store_ca *cas, size_t n, const char *actor,
                       const char *action, const char *detail) KL_WUR;
kl_rc store_ca_get(store *s, const char *label, store_ca *out) KL_WUR; /* KL_ENOTFOUND */
/* Replace the certificate of record `label` (a renewed certificate for the same key: a
 * delegated OCSP signer's) and append the audit entry actor/"ca-recert"/detail, in one
 * transaction. KL_ENOTFOUND for an unknown label. */
kl_rc store_ca_recert(store *s, const char *label, const uint8_t *der, size_t len,
                      const char *actor, const char *detail) KL_WUR;
/* As store_ca_recert, for a certificate of a NEW key under the same label (keyline-ca
 * ocsp-signer new: the old key destroyed), audited "ocsp-signer-new" so that the log tells a
 * key replacement from a renewal; the audit check holds the record to it as to a ca-recert. */
kl_rc store_ca_rekey(store *s, const char *label, const uint8_t *der, size_t len, const char *actor,
                     const char *detail) KL_WUR;
kl_rc store_ca_list(store *s, store_ca **out, size_t *n) KL_WUR;
/* Set the status of CA record `label` from `from` to `to` ("active" -> "retired") and append
 * the audit entry actor/action/detail, in one write transaction (ca/store_ca_status.c).
 * KL_EPOLICY when the record is not `from` (unknown label, or changed meanwhile). */
kl_rc store_ca_status_set(store *s, const char *label, const char *from, const char *to,
                          const char *actor, const char *action, const char *detail) KL_WUR;
void store_ca_free(store_ca *ca);

/* --- certificates ---
 * Rows are never deleted and serials are UNIQUE, so a serial is never reused. Stores written by
 * earlier versions may hold rows with status "reserved" or "failed" (a serial reserved before
 * signing, then abandoned): they are never listed as issued and cannot be revoked. */
/* (If c->request_id is set, the same transaction marks that held request approved with this
 * certificate, or fails with KL_EPOLICY if it is no longer pending: two approvals of one
 * request cannot both issue.)
 * Record a signed certificate in one transaction: the full row (c->status "valid" or "pending",
 * serial, issuer, subject, template, device_id, not_before, not_after from `c`, and the DER) and
 * the audit entry `issue`. The UNIQUE constraint on serial makes a clash KL_EEXIST (nothing is
 * written; the caller signs again with a new serial). The DER is stored as given: the caller
 * (ca_issue) built and verified it and vouches that it is the certificate of `c`. */
kl_rc store_cert_insert(store *s, const store_cert *c, const uint8_t *der, size_t der_len,
                        const char *actor, const char *audit_detail) KL_WUR;
kl_rc store_cert_get(store *s, const char *serial_hex, store_cert *out) KL_WUR; /* KL_ENOTFOUND */
/* A certificate's status and recorded validity, without the rest of the row (no DER): for
 * checks on every request. KL_ENOTFOUND when absent. */
typedef struct {
    char status[16];
    time_t not_before, not_after;
} store_cert_state;
kl_rc store_cert_state_get(store *s, const char *serial_hex, store_cert_state *out) KL_WUR;
/* status NULL: all except reserved/failed. issuer NULL: any. Calls cb in issue order. */
kl_rc store_cert_list(store *s, const char *status, const char *issuer, store_cert_cb cb,
                      void *arg) KL_WUR;
/* pending -> valid. KL_ENOTFOUND; KL_EPOLICY if not pending, or if the certificate's device
 * (its device id) holds another valid certificate of the same issuer and template (one valid
 * identity per device: revoke that one first). Audit appended. */
kl_rc store_cert_activate(store *s, const char *serial_hex, const char *actor) KL_WUR;
/* Revoke: valid|pending -> revoked with reason and time; audit appended; KL_ENOTFOUND for an
 * unknown serial; KL_EEXIST if already revoked. */
kl_rc store_cert_revoke(store *s, const char *serial_hex, int reason, time_t when,
                        const char *actor) KL_WUR;
/* Revoke many certificates in one transaction (store_revoke.c): those named by `items` (each a
 * serial, a device id whose current certificate is meant, or either prefixed "serial:" /
 * "device:"), or, with `issuer`, every valid or pending certificate it issued (created) from
 * `from` to `until` inclusive. Each as store_cert_revoke: reason (-1 none) and time `when` (0:
 * now), the device marked, one audit entry "revoke"; the epochs of the issuers concerned move
 * once. A device id names the current certificate of the inventory's device, else the one valid
 * or pending certificate issued with that device id (several: KL_EINPUT, name one by serial).
 * All or nothing: an item that names no certificate (nor a device that has one), or a
 * reservation, fails the whole with its position (KL_ENOTFOUND, KL_EINPUT). An item already
 * revoked is counted in res->already, not changed (with `single`: KL_EEXIST). */
#define STORE_REVOKE_ISSUERS_MAX 64
/* A dry run's report: a certificate the request would revoke (canonical serial, its issuer), in
 * the order it would be; a non-KL_OK return stops and is returned. */
typedef kl_rc (*store_revoke_preview_fn)(void *arg, const char *serial, const char *issuer);
/* A check of each certificate the request would revoke, dry run or not, inside the transaction
 * (canonical serial, its issuer, its template or NULL): a non-KL_OK return fails the whole
 * request (nothing changed) and is returned. It must not use the store. */
typedef kl_rc (*store_revoke_check_fn)(void *arg, const char *serial, const char *issuer,
                                       const char *template_name);
typedef struct {
    const char *const *items;
    size_t n_items;
    const char *source; /* names the list in errors ("FILE"), NULL: "list" */
    int single;         /* one certificate asked for (revoke --serial): `source` alone names it in
                         * errors, and already revoked is KL_EEXIST */
    const char *issuer; /* NULL: the items */
    time_t from, until;
    int reason;
    time_t when;
    const char *actor;
    /* set: a dry run, in a read transaction: the same checks and counts (res), each certificate
     * it would revoke reported here instead, nothing changed, no audit entry */
    store_revoke_preview_fn preview;
    void *preview_arg;
    store_revoke_check_fn check; /* NULL: none */
    void *check_arg;
} store_revoke_req;
typedef struct {
    size_t revoked, already;
    size_t repeated; /* items that name a certificate an earlier item named (counted once) */
    char issuers[STORE_REVOKE_ISSUERS_MAX][129]; /* whose certificates were revoked */
    size_t n_issuers;
} store_revoke_result;
kl_rc store_cert_revoke_many(store *s, const store_revoke_req *req,
                             store_revoke_result *res) KL_WUR;
/* The revoked certificates of `issuer` in serial order (numeric), one callback per row within
 * one read snapshot, without the rest of the row (no DER): what a CRL lists. The record's
 * strings live until the callback returns; a non-KL_OK return stops and is returned. */
typedef struct {
    const char *serial_hex;
    time_t revoked_at;
    int reason; /* -1: none */
} store_revoked;
typedef kl_rc (*store_revoked_cb)(void *arg, const store_revoked *r);
kl_rc store_revoked_stream(store *s, const char *issuer, store_revoked_cb cb, void *arg) KL_WUR;
/* The same for CRL partition `part` of `issuer` alone (store_crlpart.c). */
kl_rc store_revoked_stream_part(store *s, const char *issuer, int64_t part, store_revoked_cb cb,
                                void *arg) KL_WUR;

/* --- CRL partitions (store_crlpart.c, ca/ca_crlpart.c) ---
 * store_crlpart_current: the partition of `issuer` its next certificate goes in, holding at most
 * `size`: the current one, or (a write transaction, once per `size` certificates) the next when
 * it is full or the first when the CA has none. store_crlpart_revoked_since: the partitions of
 * `issuer` holding a certificate revoked at or after `since`, ascending, into *parts (malloc,
 * the caller frees; NULL when none). store_crlpart_of: the partition of a certificate (canonical
 * serial), -1 when it has none. */
kl_rc store_crlpart_current(store *s, const char *issuer, int64_t size, int64_t *part) KL_WUR;
kl_rc store_crlpart_revoked_since(store *s, const char *issuer, time_t since, int64_t **parts,
                                  size_t *n) KL_WUR;
kl_rc store_crlpart_of(store *s, const char *serial_hex, int64_t *part) KL_WUR;
/* The highest partition `issuer` has (its current one), -1 when it has none. */
kl_rc store_crlpart_last(store *s, const char *issuer, int64_t *last) KL_WUR;
/* How many certificates of partition `part` of `issuer` are revoked (it only grows: a
 * revocation is never undone): keyline-cad keeps a partition's CRL while it stays the same. */
kl_rc store_crlpart_revoked_count(store *s, const char *issuer, int64_t part, int64_t *n) KL_WUR;
/* store_crlpart_url: the distribution point URL of partition `part` of `issuer`, as recorded
 * by the first certificate or CRL that named it; url_now is recorded when none is (schema step
 * 17). A partition keeps its URL for good, so its certificates and its CRL always agree. */
kl_rc store_crlpart_url(store *s, const char *issuer, int64_t part, const char *url_now, char *out,
                        size_t outlen) KL_WUR;

/* Certificates of `issuer` with status pending and created before `older_than`. */
kl_rc store_cert_list_pending(store *s, time_t older_than, store_cert_cb cb, void *arg) KL_WUR;
void store_cert_free(store_cert *c);

/* Monotonic CRL number per issuer (returns the next, starting at 1). */
kl_rc store_crl_number_next(store *s, const char *issuer, int64_t *out) KL_WUR;
/* A counter that changes whenever a certificate of `issuer` is revoked (CRL cache key). */
kl_rc store_revocation_epoch(store *s, const char *issuer, int64_t *out) KL_WUR;

/* --- published CRLs ---
 * The latest signed CRL of each issuer, so that a process which must not use the issuer's key
 * (an offline root) can serve the CRL an officer published. One row per issuer. */
typedef struct {
    char *issuer;   /* CA label */
    int64_t number; /* its cRLNumber (RFC 5280 5.2.3) */
    time_t this_update, next_update;
    time_t created; /* when this CRL was stored */
    uint8_t *der;   /* the CertificateList as signed */
    size_t der_len;
    const char *name; /* store_crl_commit only: the row's name when not `issuer`, "L/K" for
                       * partition K of CA L (its number is still taken from L's) */
    int64_t epoch;    /* store_crl_commit only: the issuer's revocation epoch read before its
                       * revoked list (store_revocation_epoch) */
} store_crl;
/* Largest CRL the store keeps, in bytes: some 40 million entries (about 50 bytes each). Not
 * a limit of the rows (a CRL above STORE_CRL_CHUNK is stored in chunks of that size, in the
 * transaction of its row) but of memory: the CRL is signed, stored and read back whole. */
#define STORE_CRL_MAX ((size_t)2048 * 1024 * 1024)
#define STORE_CRL_CHUNK ((size_t)16 * 1024 * 1024)
/* The chunk size of the CRLs written after it (0: STORE_CRL_CHUNK), for every handle of the
 * process: for tests, which store CRLs of many chunks without writing hundreds of MiB. */
void store_crl_chunk_set(size_t bytes);
/* A CRL's number is taken with the CRL, so a CRL that fails before it is recorded uses none
 * (store_revoke.c): store_crl_number_peek gives the number the next CRL of `issuer` would get
 * (last taken + 1); store_crl_commit records the signed CRL `crl` (issuer, number, this/next
 * update, der, epoch) taking that number, with its audit entry "crl" (actor, detail), in one
 * transaction, only if it is the newest in content as well as in number. KL_EEXIST, nothing
 * written, and `why` (may be NULL) says why: another CRL took the number meanwhile, or a
 * revocation of the issuer was recorded since `crl->epoch` was read (sign again with the
 * entries read again), or its thisUpdate is not after the published CRL's of that name
 * (why->published: thisUpdate has one-second resolution, so two CRLs of one second could not be
 * told apart by relying parties or by HTTP's Last-Modified: sign again a second later), or,
 * the same, but the published CRL (why->number) was read at the same revocation epoch as this
 * one: it lists the same entries and stands for it (STORE_CRL_SAME_CONTENT).
 * KL_EINPUT as store_crl_put. */
/* A published CRL dated more than this many seconds after a new one's thisUpdate was signed by
 * a clock ahead of this one: the new CRL replaces it (store_crl_commit). */
#define STORE_CRL_AHEAD_MAX 2
typedef enum {
    STORE_CRL_FRESH,
    STORE_CRL_NUMBER_TAKEN,
    STORE_CRL_REVOKED_SINCE,
    STORE_CRL_SAME_SECOND,
    STORE_CRL_SAME_CONTENT,
} store_crl_clash;
typedef struct {
    store_crl_clash clash;
    time_t published; /* SAME_SECOND, SAME_CONTENT: the published CRL's thisUpdate */
    int64_t number;   /* SAME_CONTENT: the published CRL's number */
} store_crl_why;
kl_rc store_crl_number_peek(store *s, const char *issuer, int64_t *out) KL_WUR;
/* The published CRL `name` (a CA's label, or "L/K" for a partition) without its DER: its number,
 * thisUpdate, nextUpdate and the revocation epoch its entries were read at (-1: not recorded,
 * a CRL from store_crl_put or before schema 15). KL_ENOTFOUND when none is published. */
typedef struct {
    int64_t number;
    time_t this_update, next_update;
    int64_t epoch;
} store_crl_meta;
kl_rc store_crl_head(store *s, const char *name, store_crl_meta *out) KL_WUR;
kl_rc store_crl_commit(store *s, const store_crl *crl, const char *actor, const char *detail,
                       store_crl_why *why) KL_WUR;
/* Record the CRL `der` (len bytes) of `issuer`, numbered `number`, valid from `this_update` to
 * `next_update`, and the audit entry `crl` (actor, detail; NULL detail: "issuer=... number=...")
 * in one transaction. The row is replaced only by a higher number: a CRL with a lower or equal
 * number than the stored one (an older CRL signed concurrently, committed last) leaves the newer
 * row in place and is still KL_OK, and its audit entry is still appended (it was signed). The
 * DER is stored as given: the caller signed and checked it and vouches for issuer, number and
 * times. KL_EUSAGE: no issuer, NULL der or len 0; KL_EINPUT: len > STORE_CRL_MAX, a negative
 * number, next_update not after this_update. */
kl_rc store_crl_put(store *s, const char *issuer, int64_t number, time_t this_update,
                    time_t next_update, const uint8_t *der, size_t len, const char *actor,
                    const char *detail) KL_WUR;
/* The stored CRL of `issuer` into *out (owned by the caller: store_crl_free). KL_ENOTFOUND
 * "no CRL published for '<issuer>'" when none was recorded. */
kl_rc store_crl_get(store *s, const char *issuer, store_crl *out) KL_WUR;
void store_crl_free(store_crl *c); /* NULL ok */

/* --- device inventory --- */
kl_rc store_device_get(store *s, const char *device_id, store_device *out) KL_WUR;
/* Insert or update. Unchecked: a writer that decides from the row it read first uses
 * store_device_put_if. */
kl_rc store_device_put(store *s, const store_device *d) KL_WUR;
/* What a check of a device's row saw: the certificate the row named (NULL or "": no row, or a
 * row naming none) and that certificate's status then (NULL: no such certificate). */
typedef struct {
    const char *cert_serial;
    const char *cert_status;
} store_device_seen;
/* Compare-and-set: store_device_put only when the device's row still names seen->cert_serial
 * and that certificate still has status seen->cert_status. The comparison and the write are one
 * write transaction, which holds the store's write lock from its start, so no writer of any
 * process or host (another front end's request, another keyline-cad on the same PostgreSQL
 * store) comes between a check made on what was read and the write it allows. Otherwise
 * KL_EEXIST "device D: its inventory row changed since it was read (it names certificate S,
 * STATUS, now)" and nothing is written: the caller reads and checks again. `action` non-NULL:
 * the audit entry (actor, action, detail) in the same transaction. seen NULL: as all NULL.
 * A row written "provisioned" must name a certificate that is valid in the same transaction,
 * else KL_EPOLICY (it was revoked after the caller checked it). */
kl_rc store_device_put_if(store *s, const store_device *d, const store_device_seen *seen,
                          const char *actor, const char *action, const char *detail) KL_WUR;
kl_rc store_device_list(store *s, store_device **out, size_t *n) KL_WUR;
void store_device_free(store_device *d);

/* --- held enrollment requests ---
 * Submit: record `r` (label, csr_hash, csr, issuer, template_name, device_id, requester,
 * subject) as pending with a `request` audit entry, unless a request with the same label and
 * CSR hash exists; either way *out gets the stored row (its status says what became of it). */
kl_rc store_request_submit(store *s, const store_request *r, store_request *out) KL_WUR;
kl_rc store_request_get(store *s, int64_t id, store_request *out) KL_WUR; /* KL_ENOTFOUND */
/* All requests in id order (status NULL) or those with `status`. */
kl_rc store_request_list(store *s, const char *status, store_request **out, size_t *n) KL_WUR;
/* How many requests have `status` (for /metrics). */
kl_rc store_request_count(store *s, const char *status, int64_t *n) KL_WUR;
/* pending -> rejected with `reason`, audit `reject`. KL_ENOTFOUND; KL_EPOLICY if not pending.
 * (Approval happens in store_cert_insert, with the certificate.) */
kl_rc store_request_reject(store *s, int64_t id, const char *reason, const char *actor) KL_WUR;
void store_request_free(store_request *r);
void store_request_list_free(store_request *v, size_t n);

/* --- firmware image signings (ca/store_image.c; keyline-ca sign-image, docs/firmware.md) --- */
typedef struct {
    int64_t id;
    char *sha256;             /* 64 hex: MCUboot's SHA256 TLV, or SHA-256 of a CMS-signed file */
    char *format;             /* "mcuboot" | "cms" */
    char *version;            /* "1.2.3+4" */
    int64_t security_counter; /* -1: the image has none */
    char *key_label;          /* the firmware key (a CA record of template firmware) */
    char *key_serial;         /* its certificate's serial (upper-case hex) */
    char *key_hash;           /* 64 hex: MCUboot key hash, SHA-256 of its SubjectPublicKeyInfo */
    int64_t size;             /* bytes signed (the input file) */
    char *actor;              /* who signed */
    time_t created;
} store_image;
/* Record a signing and its audit entry "sign-image" (`detail`) in one write transaction.
 * KL_EUSAGE for an incomplete record or malformed hashes; the store's errors. */
kl_rc store_image_put(store *s, const store_image *img, const char *detail) KL_WUR;
/* Every signing, oldest first. The caller frees with store_image_list_free. */
kl_rc store_image_list(store *s, store_image **out, size_t *n) KL_WUR;
void store_image_free(store_image *m);
void store_image_list_free(store_image *v, size_t n);

/* --- device claims: one provisioning flow per device at a time, across processes ---
 * A station claims a device (hardware serial) before deciding anything about it and releases
 * it when done; the pending sweep claims it before revoking. A claim is held by one process
 * incarnation (`instance`, random per process start) for one place (`where`: a fixture name,
 * "sweep"), on `host` by `pid`, until `expires`. */
typedef struct {
    const char *instance; /* random id of this process start (1..64 chars) */
    const char *host;     /* gethostname() */
    long pid;
    const char *where; /* fixture or task, shown to whoever is refused */
    time_t expires;    /* lease end; renew by claiming again before it */
} store_claim;
/* Take or renew the claim on `device_id`. KL_OK when it was free, stale or already ours (same
 * instance and where: the lease is renewed); KL_EEXIST when someone else holds it, with
 * `holder` describing them ("fixture3 (pid 4242)", "fixture1 on host line2 (pid 77)").
 * Stale (taken over): the lease ended; or the holder ran on this host and its pid is gone, or
 * is this process's pid under another instance (a restarted process that got the same pid). */
kl_rc store_device_claim(store *s, const char *device_id, const store_claim *me, char *holder,
                         size_t holder_len) KL_WUR;
/* Release a claim held by `me` (same instance and where). Not held by `me`: KL_OK, nothing
 * changes (it went stale and someone else has it now). */
kl_rc store_device_unclaim(store *s, const char *device_id, const store_claim *me) KL_WUR;
/* The staleness rule above: may `me` take over claim `held` at `now`? */
typedef struct {
    char instance[65];
    char host[256];
    long pid;
    char where[128];
    time_t expires;
} store_claim_row;
int store_claim_takeover(const store_claim_row *held, const store_claim *me, time_t now);

/* --- audit log: append-only SHA-256 hash chain --- */
kl_rc store_audit_append(store *s, const char *actor, const char *action,
                         const char *detail) KL_WUR;
/* Recompute the chain, then check the certificate rows and CA records against it (DER hash,
 * status, revocation; docs/internals/store.md "State against the log"). KL_OK when both hold;
 * KL_EPOLICY naming the first edited, inserted or deleted entry ("audit entry N: ...") or the
 * first row the log does not vouch for ("certificate S: ...", "CA 'L': ..."). *count gets the
 * number of entries checked. Actions the store writes itself (issue, activate, revoke,
 * ca-create, ca-recert, ocsp-signer-new, *-baseline) are KL_EUSAGE in store_audit_append. */
kl_rc store_audit_verify(store *s, int64_t *count) KL_WUR;
kl_rc store_audit_list(store *s, int64_t from_seq, store_audit **out, size_t *n) KL_WUR;
void store_audit_free(store_audit *a);

/* --- audit checkpoints (docs/internals/store.md "Checkpoints") ---
 * An unkeyed chain shows accidents only: whoever can write the store can recompute it. So its
 * head is signed now and then with the audit key, which lives in the HSM: a checkpoint is
 * (seq, hash of entry seq, time, signature). The store records the key's public half (one
 * audit key per store) and the checkpoints; audit verify checks every signature and that each
 * checkpoint's (seq, hash) is still in the recomputed chain. */
#define STORE_AUDIT_CP_TAG "keyline-audit-checkpoint-v1" /* 27 bytes, domain separation */
#define STORE_AUDIT_CP_TBS_LEN (27 + 8 + 8 + 4 + 64)
#define STORE_AUDIT_KEY_LABEL_MAX 64
#define STORE_AUDIT_SIG_MAX 1024

/* The bytes a checkpoint signs: STORE_AUDIT_CP_TAG || u64be(seq) || u64be(ts) || u32be(64) ||
 * hash (64 lower-case hex ASCII characters). `hash` must be 64 characters. Public so that an
 * external verifier can rebuild them. */
void store_audit_checkpoint_tbs(int64_t seq, time_t ts, const char *hash,
                                uint8_t out[STORE_AUDIT_CP_TBS_LEN]);

typedef struct {
    int64_t seq;   /* the entry it covers (0: none) */
    char hash[65]; /* that entry's hash */
    time_t ts;     /* when it was signed */
    /* the signature (ECDSA: DER Ecdsa-Sig-Value); owned: store_audit_checkpoint_free */
    uint8_t *sig;
    size_t sig_len;
} store_audit_checkpoint;
void store_audit_checkpoint_free(store_audit_checkpoint *c); /* NULL ok */

/* What signs checkpoints: the caller's (ca/ca_audit.c: the token). Both are called inside the
 * store's write transaction (so the signed head is the head when the checkpoint commits, and
 * two processes never make the key twice); they must not call into the store. Outputs are
 * malloc'd and freed by the store. */
typedef struct {
    /* Only when the store records no audit key yet: make (or find) it and give its label and
     * DER SubjectPublicKeyInfo. An error is returned by store_audit_checkpoint_make as such. */
    kl_rc (*key_new)(void *arg, char **label, uint8_t **spki, size_t *spki_len);
    /* Sign `tbs` with the key labelled `label`. */
    kl_rc (*sign)(void *arg, const char *label, const uint8_t *tbs, size_t tbs_len, uint8_t **sig,
                  size_t *sig_len);
    void *arg;
} store_audit_signer;

/* Sign the audit head, in one write transaction: read the recorded key (none: sg->key_new,
 * recorded in the same transaction as the first checkpoint), the last checkpoint and the head;
 * if the head is the last checkpoint's entry (or the log is empty) nothing is signed (*made 0,
 * `out` gets that checkpoint). Otherwise the store refuses to sign (KL_EPOLICY) a head that
 * does not extend what was signed: the last checkpoint must verify with the recorded key, its
 * entry must still have its hash, and every entry after it must recompute and link up to the
 * head (the whole chain for a first checkpoint). A key recorded without any checkpoint, or
 * checkpoints without a key, are KL_EPOLICY too (rows deleted). The new signature must verify
 * with the recorded key (KL_EPOLICY: the signer's key is not the store's). *made 1, `out` (NULL
 * ok) the new checkpoint. */
kl_rc store_audit_checkpoint_make(store *s, const store_audit_signer *sg,
                                  store_audit_checkpoint *out, int *made) KL_WUR;
/* The recorded audit key: label and DER SubjectPublicKeyInfo (caller frees both).
 * KL_ENOTFOUND when none is recorded. */
kl_rc store_audit_key_get(store *s, char **label, uint8_t **spki, size_t *spki_len) KL_WUR;

/* What store_audit_verify_report found, all from one read snapshot. */
typedef struct {
    int64_t entries;  /* entries checked */
    int64_t head_seq; /* the recorded head */
    char head_hash[65];
    int64_t checkpoints; /* checkpoints checked (signature and (seq, hash)) */
    int64_t cp_seq;      /* the last checkpoint's entry, 0: none */
    time_t cp_ts;        /* when it was signed */
    int has_key;         /* an audit key is recorded */
    char key_label[STORE_AUDIT_KEY_LABEL_MAX + 1];
    char key_sha256[65]; /* lower-case hex SHA-256 of its SubjectPublicKeyInfo DER */
} store_audit_report;
/* store_audit_verify, also checking the checkpoints: each one's signature with the recorded
 * key and its (seq, hash) against the recomputed chain; KL_EPOLICY naming the first checkpoint
 * that fails, in the order of the entries ("audit checkpoint at entry N: ..."). Entries after
 * the last checkpoint are not an error here (out->entries - out->cp_seq), nor is a store
 * without checkpoints and key (the caller decides: ca_audit_verify). */
kl_rc store_audit_verify_report(store *s, store_audit_report *out) KL_WUR;

/* --- helpers --- */

/* Free an array returned by store_ca_list / store_device_list / store_audit_list (NULL ok). */
void store_ca_list_free(store_ca *v, size_t n);
void store_device_list_free(store_device *v, size_t n);
void store_audit_list_free(store_audit *v, size_t n);

/* The recorded head of the audit chain: last seq (0 when empty) and its hash (64 zeros when
 * empty). Export it (log, syslog, another machine) so that a rewrite of the whole store file can
 * be detected later: a chain alone cannot prove that its tail was not cut off. */
kl_rc store_audit_head(store *s, int64_t *seq, char hash[65]) KL_WUR;

/* Canonical serial: upper-case hex without separators or leading zero octets, even length (what
 * `openssl x509 -serial` and BN_bn2hex print). Accepts ':' separators and either case.
 * KL_EINPUT for non-hex, zero, or longer than 20 octets (RFC 5280 4.1.2.2). `out` >= 41 bytes. */
kl_rc store_serial_normalize(const char *in, char *out, size_t outsz) KL_WUR;

/* Hash of one audit entry as stored in store_audit.hash (encoding in docs/internals/store.md).
 * NULL detail hashes as "". KL_EINPUT for a malformed prev_hash or an oversized field. */
kl_rc store_audit_entry_hash(int64_t seq, time_t ts, const char *actor, const char *action,
                             const char *detail, const char *prev_hash, char out[65]) KL_WUR;

/* --- migration and backup (ca/store_copy.c; keyline-ca store migrate|backup) --- */
typedef struct {
    int64_t tables, rows;        /* copied */
    store_audit_report from, to; /* audit verify of the source before, of the copy after */
} store_copy_report;
/* Copy every record of `from` into the empty store `to` (another driver, e.g. SQLite to
 * PostgreSQL): every table as it is (certificates, requests, devices, CRLs, CA records, the
 * audit chain with its key and signed checkpoints, and whatever tables later versions add;
 * not the claims, which are leases of live processes), read in one snapshot of `from` and
 * written in one transaction of `to`. The source's audit chain and checkpoints must verify
 * first; the copy's must verify after and say the same (entries, head, checkpoints, key).
 * KL_EEXIST when `to` holds any record (nothing written); KL_EPOLICY when a chain does not
 * verify or the two differ; the stores' errors. */
kl_rc store_copy(store *from, store *to, store_copy_report *r) KL_WUR;
/* A consistent online copy of the live store into the new file `path` (SQLite: the backup API,
 * one read snapshot while writers go on; fsynced; created 0600 under a temporary name and linked
 * into place). KL_EEXIST when `path` exists (never overwritten); KL_EUSAGE for a store whose
 * driver has no backup (PostgreSQL: pg_dump); KL_EIO. */
kl_rc store_backup(store *s, const char *path) KL_WUR;

/* Write transactions committed through this handle and the write operations they carried
 * (group commit: ops / txns is the average batch). For tests, benchmarks and metrics.
 */
kl_rc store_write_stats(store *s, uint64_t *txns, uint64_t *ops) KL_WUR;

#endif
