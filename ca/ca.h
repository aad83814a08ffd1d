/* keyline: the CA library. Every certificate, whoever asks for it, goes through ca_issue();
 * front ends (keyline-ca, keyline-estd, keyline-provision) only authenticate the requester and
 * turn their input into a ca_issue_req. Revocation, CRL and OCSP likewise live here only.
 *
 * Configuration (keyline.conf, see docs/ca.md):
 *   [hsm]   module = /usr/lib/softhsm/libsofthsm2.so   token = pkcs11:token=keyline
 *           pin = env:KEYLINE_PIN | file:PATH | prompt
 *   [store] path = state/keyline.db
 *   [ca]    templates = templates (dir)   crl-url = http://host/crl/{issuer}.crl
 *           ocsp-url = http://host/ocsp    crl-days = 7   ca-issuers-url = ...
 *
 * Thread safety: one ca_ctx may be used from several threads at once (EST server). */
#ifndef KL_CA_H
#define KL_CA_H

#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "hsm.h"
#include "kl_conf.h"
#include "kl_err.h"
#include "store.h"
#include "ca_csr.h" /* CSR and certificate loading, shared with keyline-estd */

typedef struct ca_ctx ca_ctx;

/* Open the store and the token (reading the PIN from its configured source; the PIN is wiped
 * after login). `conf` is borrowed and must outlive the ctx. Errors from hsm_open/store_open. */
kl_rc ca_open(ca_ctx **out, const kl_conf *conf) KL_WUR;
/* Like ca_open but without the token (read-only work: list, show, audit verify). Operations
 * that need signing fail with KL_EUSAGE. */
kl_rc ca_open_nohsm(ca_ctx **out, const kl_conf *conf) KL_WUR;
/* The [hsm] module and token of `conf` (KL_EUSAGE when unset); exports SOFTHSM2_CONF when
 * [hsm] softhsm2-conf is set. The strings belong to conf. */
kl_rc ca_hsm_params(const kl_conf *conf, const char **module, const char **token) KL_WUR;
void ca_close(ca_ctx *ca);
/* The template folder of `conf`: [ca] templates (relative to the config file), else the
 * compiled-in default under the install prefix (${datadir}/keyline/templates). The one place
 * every binary takes it from, so what keyline-estd announces is what ca_issue enforces.
 * Caller frees; NULL when out of memory. */
char *ca_templates_dir(const kl_conf *conf);
/* A certificate or CRL dated this many seconds after this clock was made by a clock set ahead
 * (a few minutes: hosts' clocks differ by less): renewed, not waited for. */
#define CA_CLOCK_AHEAD_MAX 300
/* KL_EPOLICY when `now` is before CA `label`'s certificate (its notBefore): a clock that wrong
 * (a host booted without a real-time clock reads 1970) dates whatever the CA signs then, `what`
 * (a CRL, an OCSP answer, a revocation), before the CA itself: a CRL or answer every relying
 * party refuses as expired, a revocation dated before its certificate. The message names the
 * clock's time and the CA's. The store's errors as they are. */
kl_rc ca_clock_check(ca_ctx *ca, const char *label, time_t now, const char *what) KL_WUR;
/* A CA's delegated OCSP signer (RFC 6960 4.2.2.2) is the CA record and token key "<CA>.ocsp". */
#define CA_OCSP_SUFFIX ".ocsp"
/* 1 when `label` names a delegated OCSP signer, not a CA. */
int ca_is_ocsp_signer_label(const char *label);
const kl_conf *ca_conf(ca_ctx *ca);

typedef struct {
    const char *issuer;        /* CA label */
    const char *template_name; /* template file stem, e.g. "device-idevid" */
    const uint8_t *csr_der;    /* PKCS#10, DER */
    size_t csr_len;
    const ca_csr *csr;     /* optional: ca_csr_load(csr_der, csr_len) done by the caller
                            * (borrowed): no second parse and signature check */
    const char *device_id; /* optional hardware serial / inventory id */
    const char *actor;     /* who asked, for the audit log: "cli:root", "est:CN=..." */
    int pending;           /* record as "pending" instead of "valid" (station) */
    int64_t request_id;    /* optional: the held request this issuance approves (same store
                            * transaction; KL_EPOLICY if it is no longer pending) */
    const char *order_id;  /* optional: the production order it counts against (same store
                            * transaction; KL_EPOLICY when the order allows no more) */
} ca_issue_req;

/* Everything ca_issue checks before signing (CSR, proof of possession, issuer, template
 * policy, build, lint), without signing or recording anything: whether a request would be
 * issued. Same errors as ca_issue. */
kl_rc ca_issue_check(ca_ctx *ca, const ca_issue_req *req) KL_WUR;

/* The one issuance pipeline: parse CSR, verify its signature (proof of possession), apply the
 * template policy, build, lint, reserve the serial (unique by store constraint), sign in the
 * HSM, record the certificate and the audit entry in one transaction, then return it.
 * Errors: KL_EINPUT (garbage / bad signature), KL_EPOLICY (template refuses), KL_ENOTFOUND
 * (unknown issuer or template), KL_EHSM, KL_EIO. Nothing is recorded as issued on failure. */
kl_rc ca_issue(ca_ctx *ca, const ca_issue_req *req, X509 **cert_out) KL_WUR;
/* ca_issue, and the certificate's DER as it was signed, checked with the issuer's key and
 * recorded: the bytes to release (*der_out: OPENSSL_free), not a new encoding of *cert_out. */
kl_rc ca_issue_der(ca_ctx *ca, const ca_issue_req *req, X509 **cert_out, unsigned char **der_out,
                   size_t *der_len) KL_WUR;

/* Create a CA: generate a key labelled `label` in the token, make a CSR signed by it, and issue
 * its certificate through ca_issue's pipeline (self-signed when issuer is NULL).
 * KL_EEXIST if the label is taken. */
kl_rc ca_create(ca_ctx *ca, const char *label, const char *template_name, const char *subject,
                hsm_key_type kt, const char *issuer, const char *actor, X509 **cert_out) KL_WUR;

/* --- the CA key lifecycle (ca_rotate.c, ca_external.c; docs/key-ceremony.md) ---------------
 * One request struct and one function per operation, so that a ceremony (officers' approvals
 * over the exact request) can run the very same function once its approvals are in. Each is all
 * or nothing: on failure no CA is recorded and no new key is left in a token. */
typedef struct {
    const char *label, *template_name, *subject; /* subject "CN=...,O=..." */
    hsm_key_type key_type;
    const char *issuer; /* parent CA label; NULL: self-signed (or, ca_create_csr, outside) */
    const char *token;  /* NULL: the CA's [hsm LABEL] token, else [hsm]; a pkcs11: URI: the
                         * key is made on that token (ca_token_open) */
    const char *actor;
} ca_create_req;
kl_rc ca_create_run(ca_ctx *ca, const ca_create_req *req, X509 **cert_out) KL_WUR;
/* A CA key for a parent outside keyline (an offline root elsewhere, a corporate PKI): the key
 * `label` is made in its token and a PKCS#10 request for `subject`, signed by it, returned (DER,
 * OPENSSL_free). No CA is recorded until ca_import; the audit entry "ca-csr" keeps the template.
 * req->issuer must be NULL. */
kl_rc ca_create_csr(ca_ctx *ca, const ca_create_req *req, uint8_t **csr_der,
                    size_t *csr_len) KL_WUR;
typedef struct {
    const char *label;   /* the CA whose key ca_create_csr made */
    const uint8_t *cert; /* its certificate from the outside parent, PEM or DER */
    size_t cert_len;
    const uint8_t *chain; /* the parent's chain up to its self-signed root, PEM */
    size_t chain_len;
    const char *actor;
} ca_import_req;
/* Install the certificate of ca_create_csr's key: KL_EINPUT unless its public key is the
 * token's key `label`, it is a CA certificate (basicConstraints cA, keyCertSign) and it
 * verifies up to the chain's self-signed root. The chain's certificates are recorded as
 * external CAs "<label>.up1" (the parent), "<label>.up2"... (status "external": no key, no
 * CRL), `label` under them as an active CA, with the audit entry "ca-import". */
kl_rc ca_import(ca_ctx *ca, const ca_import_req *req, X509 **cert_out) KL_WUR;

typedef struct {
    const char *label;     /* the CA to rotate (OLD) */
    const char *new_label; /* NEW */
    const char *issuer;    /* issuing CAs only: the parent of NEW. NULL: the successor of OLD's
                            * parent (the newest active CA with its subject and template, so a
                            * CA rotated after its root is certified by the new root), else the
                            * parent itself */
    hsm_key_type key_type;
    const char *token; /* as in ca_create_req */
    const char *actor;
} ca_rotate_req;
/* Rotate CA req->label to a new key labelled req->new_label, same subject and template. For a
 * root, also the rollover certificates NewWithOld (`NEW.newwithold`) and OldWithNew
 * (`OLD.oldwithnew`), recorded with status "rollover" (RFC 4210 5.3.1.1; served by EST
 * /cacerts). Returns the new CA certificate. OLD stays usable until it is retired. */
kl_rc ca_rotate(ca_ctx *ca, const ca_rotate_req *req, X509 **cert_out) KL_WUR;
/* The successor of CA `label` (see ca_rotate_req.issuer) into out (cap bytes): `label` itself
 * when it has none. Store errors; KL_ENOTFOUND for an unknown label. */
kl_rc ca_successor(ca_ctx *ca, const char *label, char *out, size_t cap) KL_WUR;

typedef struct {
    const char *label;
    const char *actor;
} ca_retire_req;
/* Retire CA req->label for good: its delegated OCSP signer made or renewed (so OCSP for what it
 * issued is answered after this), a final CRL published whose nextUpdate is past the last
 * notAfter of what it issued, the record set "retired" (audit "ca-retire"), and its private key
 * destroyed in the token. From then on nothing is signed with it: issue, CRL and OCSP signing
 * refuse (KL_EPOLICY "CA 'L' is retired ..."). Run again after a failure, it finishes what is
 * left (a retired CA whose key is still on the token loses it). KL_EPOLICY for a CA with active
 * CAs below it, a rollover certificate, an external CA or an OCSP signer. *final_crl (NULL ok)
 * gets the final CRL (NULL when it was published by an earlier run). A firmware key (template
 * firmware) issued nothing: it is retired and its key destroyed, without OCSP signer or CRL
 * (*final_crl NULL). */
kl_rc ca_retire(ca_ctx *ca, const ca_retire_req *req, X509_CRL **final_crl) KL_WUR;
/* Open `uri` as the token of CA `label` for this ctx (ca create --token): its PIN from [hsm
 * LABEL] pin, else the URI's pin-source, else the terminal. KL_EUSAGE when keyline.conf names
 * another token for it. */
kl_rc ca_token_open(ca_ctx *ca, const char *label, const char *uri) KL_WUR;

/* Whether CA `label` may sign at `now`: its certificate and every CA certificate above it
 * recorded in the store as "valid" (not revoked) and within their recorded validity. KL_OK, or
 * KL_EPOLICY naming the CA and why ("CA 'field1' cannot issue: its certificate 6D.. is revoked
 * (cACompromise)"); KL_ENOTFOUND for an unknown label; KL_EIO etc. when the store fails. One
 * indexed store lookup per CA in the chain, no cache: ca_issue runs it for every issuance, so a
 * revocation by another process sharing the store (keyline-ca revoke while keyline-estd runs)
 * takes effect on the next one. */
kl_rc ca_issuer_check(ca_ctx *ca, const char *label, time_t now) KL_WUR;

/* CA certificate by label (caller frees). KL_ENOTFOUND. */
kl_rc ca_cert(ca_ctx *ca, const char *label, X509 **out) KL_WUR;
/* Chain from `label` up to and including its root, leaf (the CA itself) first. */
kl_rc ca_chain(ca_ctx *ca, const char *label, STACK_OF(X509) * *out) KL_WUR;
/* All CA certificates known to the store (roots, intermediates, rollover certs). */
kl_rc ca_all_certs(ca_ctx *ca, STACK_OF(X509) * *out) KL_WUR;
/* The CA certificates to publish for CA `label` (EST /cacerts, RFC 7030 4.1.3): its chain up
 * to its root first, then every other CA (other roots, issuing CAs, rollover certificates),
 * each once, without delegated OCSP signers and without any CA that ca_issuer_check refuses at
 * `now` (revoked, expired or not yet valid, itself or a CA above it). KL_ENOTFOUND for an
 * unknown label; the store's errors. The caller frees the stack (sk_X509_pop_free). */
kl_rc ca_cacerts(ca_ctx *ca, const char *label, time_t now, STACK_OF(X509) * *out) KL_WUR;

/* Revocation. reason: RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, ...).
 * KL_ENOTFOUND for an unknown serial; KL_EPOLICY for a root's own certificate
 * (ca_revoke_root_check). */
kl_rc ca_revoke(ca_ctx *ca, const char *serial_hex, int reason, const char *actor) KL_WUR;
/* KL_EPOLICY, saying what to do instead (ca retire, trust anchors), when `serial` (canonical
 * hex) is the self-signed certificate of root CA `issuer` (NULL: the issuer the store records
 * for it): a root revoked in its own CRL is revoked for no relying party. KL_OK otherwise
 * (an unknown serial too); store errors as such. Uses the store only with issuer NULL or a
 * CA not read yet (ca_entry_get). */
kl_rc ca_revoke_root_check(ca_ctx *ca, const char *serial, const char *issuer) KL_WUR;
/* "keyCompromise" -> 1 etc.; -1 for unknown names. */
int ca_reason_from_name(const char *name);
const char *ca_reason_name(int reason);
/* The profiles keyline-cad serves (ca_profiles.c), as the configuration names them: every
 * [profile NAME] with its issuer, template and clients (values as written, NULL when absent);
 * without any, those the front ends' sections imply: [est] issuer -> "est" (clients "est"),
 * [est.label NAME] -> "est.NAME", [station] issuer -> "station" (clients "station"). `fn` is
 * called for each in order; a non-KL_OK return stops the walk and is returned.
 * ca_conf_has_profile: 1 when `name` is one of them. */
#define CA_PROFILE_NAME_MAX 64
typedef kl_rc (*ca_profile_fn)(void *arg, const char *name, const char *issuer,
                               const char *template_name, const char *clients);
kl_rc ca_conf_profiles(const kl_conf *conf, ca_profile_fn fn, void *arg) KL_WUR;
int ca_conf_has_profile(const kl_conf *conf, const char *name);

/* keyline-ca revoke's inputs (ca_revoke_input.c). ca_revoke_list_parse: the items of a --from
 * list `text` (NUL-terminated, `len` bytes; changed in place, the items point into it; *items
 * malloc'd): one serial or device id a line ("device:" takes the rest of the line to a '#',
 * spaces inside, trailing blanks left out), blank lines, '#' comments and a leading UTF-8
 * byte order mark skipped; a NUL byte, a line of two items or no item at all is KL_EINPUT
 * naming `name` (and the line). ca_revoke_time_parse: "2026-12-01", "2026-12-01T08:00:00Z"
 * (UTC) or "@SECONDS" into *out; 0 when malformed, out of range or a date that does not exist
 * (2026-02-31 is not read as March 3). */
kl_rc ca_revoke_list_parse(char *text, size_t len, const char *name, char ***items,
                           size_t *n) KL_WUR;
/* The same, and *lines (malloc'd, NULL ok: not wanted) the line of the list each item is on
 * (from 1), for messages about an item. */
kl_rc ca_revoke_list_parse_lines(char *text, size_t len, const char *name, char ***items,
                                 size_t **lines, size_t *n) KL_WUR;
int ca_revoke_time_parse(const char *s, time_t *out);
/* Move a pending certificate to valid (station: after CHALLENGE). */
kl_rc ca_activate(ca_ctx *ca, const char *serial_hex, const char *actor) KL_WUR;

/* Build and sign (in the HSM) a fresh CRL for `issuer`: version 2, cRLNumber (monotonic, from
 * the store), AKI, thisUpdate now, nextUpdate now + the CA template's crl-validity or else
 * [ca] crl-days. Published in the store as
 * the issuer's latest CRL (store_crl_put; keyline-estd serves it for CAs whose key it does not
 * sign with) with its audit entry "crl", in one transaction. */
kl_rc ca_crl(ca_ctx *ca, const char *issuer, X509_CRL **out) KL_WUR;
/* The same CRL as DER, at any size (ca_crl.c): written from the store's revoked certificates in
 * serial order, the hash signed in the HSM, never parsed back. next_update 0: as ca_crl sets it.
 * Its number is taken only when it is recorded: a CRL that fails uses none. When a CRL of
 * `issuer` was published in the same second, read at the same revocation epoch (the same
 * entries), that one is the result (reused 1; not with next_update set): the daemons' and the
 * revocations' CRLs do not wait for the next second behind each other. *out: free with
 * ca_crl_result_free. */
typedef struct {
    uint8_t *der;
    size_t len;
    int64_t number;
    size_t entries;
    time_t this_update, next_update;
    int reused; /* 1: the CRL published this second with the same entries, not signed again */
} ca_crl_result;
kl_rc ca_crl_der(ca_ctx *ca, const char *issuer, time_t next_update, ca_crl_result *out) KL_WUR;
/* ca_crl_der, but always a CRL signed now with a number of its own, never the published one
 * (keyline-ca crl: what an officer asks for). */
kl_rc ca_crl_der_new(ca_ctx *ca, const char *issuer, ca_crl_result *out) KL_WUR;
void ca_crl_result_free(ca_crl_result *r);
/* A CA with [ca LABEL] crl-partition-size (ca_crlpart.c): `issuer` "L/K" to ca_crl_der gives
 * the CRL of partition K of CA L alone, with its issuingDistributionPoint. ca_crlpart_publish
 * signs again the CRL of the partition of certificate `serial` (canonical hex), or with serial
 * NULL those of the partitions of `label` holding a certificate revoked at or after `since`
 * (*count of them; 0 for a CA without partitions). */
kl_rc ca_crlpart_publish(ca_ctx *ca, const char *label, const char *serial, time_t since,
                         size_t *count) KL_WUR;
/* The partitions of `label` whose published CRL lacks one of their revocations (a revoke whose
 * CRL step failed or was killed), or is past half its validity, or is missing while they have
 * revocations: each signed and published again (*count of them; 0 for a CA without partitions).
 * keyline-ca crl --issuer L runs it after L's full CRL, so that the command a failed revoke
 * names repairs every CRL the revocation concerns. */
kl_rc ca_crlpart_catch_up(ca_ctx *ca, const char *label, size_t *count) KL_WUR;

/* Answer an OCSP request (RFC 6960) for certificates of our CAs. Signed by a delegated OCSP
 * signer for the issuer if one is set up (see ca_ocsp_signer_ensure), else by the issuing CA.
 * nextUpdate is `validity` seconds after thisUpdate (0: one day; keyline-cad gives its [cad]
 * ocsp-validity, as its pre-produced answers have), never past the notAfter of the certificate
 * that signs (KL_EPOLICY when it has expired). Unknown issuers, and CertIDs hashed with
 * anything but SHA-1, SHA-256, SHA-384 or SHA-512, give an "unauthorized" response (or
 * "unknown" for that entry beside one that is answered), not an error. A certificate whose CA
 * or a CA above it is revoked is "revoked" (ca_ocsp_ca_revocation). */
kl_rc ca_ocsp_respond(ca_ctx *ca, OCSP_REQUEST *req, long validity, OCSP_RESPONSE **out) KL_WUR;
/* Whether an OCSP request's extensions let it be answered (ca_ocsp_respond answers
 * malformedRequest when not): KL_EINPUT, the message saying why, for an extension marked
 * critical that is not understood (only the nonce is, and only in requestExtensions), or a
 * nonce that is not an OCTET STRING of 1..128 octets (RFC 9654). Reads req only. */
kl_rc ca_ocsp_request_check(OCSP_REQUEST *req) KL_WUR;
/* One certificate's status for a pre-produced OCSP answer: serial (store hex), status
 * V_OCSP_CERTSTATUS_GOOD / _REVOKED / _UNKNOWN, for revoked its reason (RFC 5280 5.3.1, <= 0:
 * none) and time. */
typedef struct {
    const char *serial_hex;
    int status, reason;
    time_t revoked_at;
} ca_ocsp_status;
/* A nonce-less OCSP response (RFC 5019) for one certificate of `issuer`, made ahead of any
 * request (keyline-cad's pre-produced answers): SHA-1 CertID, thisUpdate `now`, nextUpdate
 * `next_update` (or the signer's notAfter, when earlier), signed as ca_ocsp_respond signs, the
 * responder named by key hash. *der
 * (OPENSSL_free) and *len get the DER OCSPResponse. KL_EINPUT: a bad serial; KL_EHSM. */
kl_rc ca_ocsp_single(ca_ctx *ca, const char *issuer, const ca_ocsp_status *st, time_t now,
                     time_t next_update, uint8_t **der, size_t *len) KL_WUR;
/* The revocation time of the certificate of CA `issuer` or of a CA above it, the earliest (0:
 * none revoked): OCSP answers "revoked" (cACompromise, that time) for the certificates `issuer`
 * vouches for that are not revoked themselves (ca_ocsp_respond; keyline-cad's pre-produced
 * answers). A point read per CA of the chain. Store errors as such. */
kl_rc ca_ocsp_ca_revocation(ca_ctx *ca, const char *issuer, time_t *revoked_at) KL_WUR;
/* Ensure a delegated OCSP signer (key in the HSM, template ocsp-signer) exists for `issuer`
 * and is current: made when missing (a key generated in the token), renewed (a new
 * certificate for the same key, issued by `issuer`, recorded; the CA record's certificate
 * replaced, audit "ca-recert") once less than half of its validity is left. Both need the
 * issuer's key. *renewed (NULL ok) says whether it renewed one. */
kl_rc ca_ocsp_signer_ensure(ca_ctx *ca, const char *issuer, const char *actor, int *renewed) KL_WUR;
/* What ca_ocsp_signer_new did: the new certificate (the caller frees it), the serial of the
 * certificate it replaced ("" when there was none), whether that one was revoked now
 * (superseded: it was current, `replace` given, or expired) and whether its key was found and
 * destroyed. */
typedef struct {
    X509 *cert;
    char old_serial[64];
    int superseded, old_key_destroyed;
} ca_ocsp_signer_made;
/* A new delegated OCSP signer for `issuer` after its signer was revoked or expired (or, with
 * `replace`, while it is current; a certificate not revoked yet is revoked, superseded): the old
 * key destroyed in the token, a new key pair generated there under the same label (sensitive, never
 * extractable; a new random CKA_ID), certified by `issuer` with the old subject, and the record's
 * certificate replaced with the audit entry "ocsp-signer-new" (store_ca_rekey; a renewal of the
 * same key is "ca-recert"). With no signer yet, the first is made (ca_ocsp_signer_ensure).
 * Processes that hold the old one (keyline-cad) take the new one up at their next answer
 * (ca_ocsp_signer_current). KL_EPOLICY: the signer is current and
 * `replace` is 0, or `issuer` is not an active issuing CA; KL_ENOTFOUND: no such CA; a failure once
 * the new key exists destroys it again (ca_key_discard). */
kl_rc ca_ocsp_signer_new(ca_ctx *ca, const char *issuer, int replace, const char *actor,
                         ca_ocsp_signer_made *out) KL_WUR;
/* 1 when the delegated OCSP signer certificate `cert` may sign answers at `now`: not expired
 * and not revoked in the store (a revoked signer is not renewed either: the CA signs). */
int ca_ocsp_signer_usable(ca_ctx *ca, const X509 *cert, time_t now);
/* 1 when `issuer` has a delegated OCSP signer that is past half its validity (the next
 * ca_ocsp_signer_ensure renews it), else 0 (none, or fresh). *not_after (NULL ok) gets its
 * notAfter. */
int ca_ocsp_signer_due(ca_ctx *ca, const char *issuer, time_t *not_after);
/* 1 when `issuer`'s delegated OCSP signer is revoked (never renewed: ca_ocsp_signer_new gives
 * it a new key), else 0 (none, or not revoked). */
int ca_ocsp_signer_revoked(ca_ctx *ca, const char *issuer);

/* Status of a certificate by X509 (for client-cert checks in EST): KL_OK when it was issued by
 * one of our CAs, is in the store and is "valid" and within its validity; KL_EAUTH otherwise,
 * with the reason (revoked, expired, unknown). */
kl_rc ca_cert_check_valid(ca_ctx *ca, X509 *cert) KL_WUR;
/* The same, and on KL_OK *row gets the certificate's store row (free with store_cert_free;
 * zeroed on failure), so that a caller needs no second read of it (keyline-cad's issue with
 * the client certificate). der/der_len: cert's DER as the caller received it (it parsed cert
 * from exactly these bytes), compared with the recorded certificate as it is; NULL: cert is
 * encoded for the comparison. */
kl_rc ca_cert_check_row(ca_ctx *ca, X509 *cert, const uint8_t *der, size_t der_len,
                        store_cert *row) KL_WUR;
/* The part of ca_cert_check_valid that can change while a client holds a certificate: by serial
 * (the store's upper-case hex, as ca_serial_hex gives), KL_OK when the store has it "valid" and
 * `now` is within its recorded notBefore/notAfter; KL_EAUTH with the reason (revoked, pending,
 * unknown, expired, not yet valid) otherwise; KL_EIO etc. when the store fails. No decoding and
 * no signature check: the caller must have run ca_cert_check_valid on the certificate once
 * (which ties the certificate to this serial and to its issuer) and keeps that result, e.g. for
 * the life of a TLS session (keyline-estd). */
kl_rc ca_cert_status_check(ca_ctx *ca, const char *serial_hex, time_t now) KL_WUR;

/* Helpers shared by the front ends. */
/* User serial input (colons, lower case, 0x prefix, leading zeros) -> the store's upper-case
 * hex. KL_EUSAGE when not hexadecimal. */
kl_rc ca_serial_normalise(const char *in, char *out, size_t outlen) KL_WUR;
/* Parse PEM or DER CSR bytes into DER (caller frees with OPENSSL_free). KL_EINPUT. */
kl_rc ca_csr_to_der(const uint8_t *in, size_t len, uint8_t **der, size_t *der_len) KL_WUR;

/* What a template asks of a request (front ends' /csrattrs, the CA service's device binding).
 * device_cert: the subject takes serialNumber (IEEE 802.1AR hardware serial), so certificates
 * of this template are issued only with a device id. KL_ENOTFOUND for an unknown template. */
typedef struct {
    unsigned key_types; /* bit (1u << hsm_key_type) per allowed key type; 0: any */
    int device_cert;
    int is_ca;
} ca_tpl_info;
kl_rc ca_template_info(ca_ctx *ca, const char *template_name, ca_tpl_info *out) KL_WUR;

/* --- audit checkpoints (ca/ca_audit.c; docs/internals/store.md "Checkpoints") ---
 * The audit chain's head signed with the audit key, an EC P-256 key made in the token like a CA
 * key (sensitive, never extractable, not modifiable) the first time a process holding the PIN
 * has entries to sign. Its public half is recorded in the store, so verifying needs no token. */
#define CA_AUDIT_KEY_LABEL "keyline-audit"
typedef struct {
    int64_t seq;   /* the entry the last checkpoint covers (0: the log is empty) */
    char hash[65]; /* its hash */
    time_t ts;     /* when that checkpoint was signed */
    int made;      /* 1: signed by this call; 0: the head was signed already */
} ca_audit_cp;
#define CA_AUDIT_ADOPT_KEY 1u /* a store without an audit key takes the token's existing one */
/* Sign the audit head with the audit key (making the key on first need): nothing when the head
 * is signed already. The store refuses (KL_EPOLICY) to sign a head that does not extend the
 * last checkpoint (store_audit_checkpoint_make). KL_EUSAGE without the token (opened
 * without it); a key labelled CA_AUDIT_KEY_LABEL on the token that
 * the store does not record is KL_EPOLICY unless `flags` has CA_AUDIT_ADOPT_KEY. Thread-safe.
 * `out` may be NULL. */
kl_rc ca_audit_checkpoint(ca_ctx *ca, ca_audit_cp *out) KL_WUR;
kl_rc ca_audit_checkpoint_ex(ca_ctx *ca, unsigned flags, ca_audit_cp *out) KL_WUR;
/* The CA service's rule: ca_audit_checkpoint_due signs the head once it is `every` (> 0) or
 * more entries past the last checkpoint this ctx knows of, or once an entry has been unsigned
 * for `max_age` (> 0) seconds since a call first found it. Cheap when nothing is due (one read
 * of the head on the store's reader connection); a failure is logged (kl_error) and retried
 * after 10 s. No-op without a local token or before ca_audit_checkpoint_every. */
void ca_audit_checkpoint_every(ca_ctx *ca, int64_t every, int64_t max_age);
void ca_audit_checkpoint_due(ca_ctx *ca);
/* ca_audit_checkpoint when the ctx has a local token (else nothing), logging a failure with
 * `why` (ca_crl: "CRL of field1"); never fails. */
void ca_audit_checkpoint_try(ca_ctx *ca, const char *why);
/* Run fn(ca, arg) at the start of ca_close (keyline-ca signs the head there; fn may use the
 * ctx, and must keep kl_errmsg() as it found it). One hook per ctx. */
typedef void (*ca_close_fn)(ca_ctx *ca, void *arg);
void ca_close_hook_set(ca_ctx *ca, ca_close_fn fn, void *arg);

typedef struct {
    store_audit_report r;
    int token_compared; /* 1: the recorded audit key was compared with the token's */
    long officers;      /* officers checked against their audit entries */
    char note[512];     /* why it was not */
} ca_audit_verdict;
/* store_audit_verify_report, then: a log with entries but no checkpoint is KL_EPOLICY; and the
 * recorded audit key against the token's (read without the PIN): KL_EPOLICY when they differ or
 * only one side has it. token: 1 the comparison is required (KL_EHSM when the token cannot be
 * read), 0 when the token can be read, -1 never. Last, the officers table against its audit
 * entries (ceremony_officers_audit_check). */
kl_rc ca_audit_verify(ca_ctx *ca, int token, ca_audit_verdict *out) KL_WUR;

#endif
