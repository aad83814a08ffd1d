/* keyline: CA internals shared by ca*.c files (not for front ends). */
#ifndef KL_CA_INTERNAL_H
#define KL_CA_INTERNAL_H

#include <pthread.h>

#include "ca.h"
#include "tpl.h"

#define CA_CACHE_MAX 64
#define CA_TOKENS_MAX 8
#define CA_PARSED_MAX 32 /* parsed CA certificates kept by ca_subject_check */

/* CA record statuses (store_ca.status) */
#define CA_ST_ACTIVE "active"
#define CA_ST_RETIRED "retired"   /* ca_retire: key destroyed, final CRL published */
#define CA_ST_ROLLOVER "rollover" /* a root rotation's NewWithOld / OldWithNew */
#define CA_ST_EXTERNAL "external" /* a parent outside keyline (ca import): no key here */

typedef struct {
    char *label;
    char *parent; /* the CA record's issuer label (fixed for a label); NULL for a root */
    X509 *cert;
    EVP_PKEY *key; /* NULL until first signing use */
    int key_stale; /* signing with `key` failed in the token: find the key again before next use */
} ca_entry;
#define CA_DROPPED_KEYS_MAX 64
/* Read CA `label`'s certificate from the store again when it is cached here: another process
 * may have replaced it (a delegated OCSP signer renewed, or given a new key by keyline-ca
 * ocsp-signer new: the cached key is then dropped too). Store errors leave the cache as it is. */
void ca_entry_reread(ca_ctx *ca, const char *label);
/* 1 when `issuer` has a delegated OCSP signer that may sign at `now` (ca_ocsp_signer_usable),
 * its cache entry (certificate; the key not loaded) in *out; one found revoked or expired is
 * read again from the store first (ca_entry_reread). 0 otherwise (*out: the entry, or NULL). */
int ca_ocsp_signer_current(ca_ctx *ca, const char *issuer, time_t now, const ca_entry **out);

struct ca_ctx {
    const kl_conf *conf;
    hsm_ctx *hsm;
    store *st;
    char *tpl_dir;
    char *crl_url, *ocsp_url, *ca_issuers_url;
    long crl_days;
    pthread_mutex_t mu; /* guards the caches below */
    ca_entry cas[CA_CACHE_MAX];
    size_t ncas;
    tpl *tpls[CA_CACHE_MAX];
    size_t ntpls;
    STACK_OF(X509) * retired; /* certificates a renewal replaced in cas[]: borrowed pointers
                                 to them stay valid until ca_close */
    /* keys replaced after a token fault (ca_key_failed): another thread may still hold one */
    EVP_PKEY *dropped_keys[CA_DROPPED_KEYS_MAX];
    size_t ndropped;
    /* ca_subject.c: CA certificates by their DER, parsed once (every issuance compares its
     * subject with every CA's, listed from the store each time) */
    pthread_mutex_t subj_mu;
    struct {
        uint8_t *der;
        size_t len;
        X509 *x;
    } subj[CA_PARSED_MAX];
    size_t nsubj;
    struct ca_audit_state *audit; /* ca_audit.c: checkpoints, the close hook (NULL until used) */
    /* CAs on a token of their own ([hsm LABEL] or ca create --token): opened on first use */
    pthread_mutex_t tok_mu;
    struct {
        char *label;
        hsm_ctx *h;
    } toks[CA_TOKENS_MAX];
    size_t ntoks;
};

/* The token that holds (or is to hold) the key of CA `label`: the token of its [hsm LABEL]
 * section, or one opened for it with ca_token_open, opened and logged in on first use (its PIN
 * from that section); else the [hsm] token. KL_EUSAGE when there is none (opened without the
 * token); hsm_open's errors for an absent token or a wrong PIN, naming the CA. */
kl_rc ca_hsm_of(ca_ctx *ca, const char *label, hsm_ctx **out) KL_WUR;

/* ca_audit.c: run the close hook and free the checkpoint state (first thing in ca_close). */
void ca_audit_close(ca_ctx *ca);

/* Cached CA certificate (and, if want_key, its HSM key) by label. Borrowed pointers, valid for
 * the ctx lifetime. */
kl_rc ca_entry_get(ca_ctx *ca, const char *label, int want_key, const ca_entry **out) KL_WUR;
kl_rc ca_tpl_get(ca_ctx *ca, const char *name, const tpl **out) KL_WUR;
/* Replace the cached certificate of `label` (owned from then on; the old one is kept until
 * ca_close). */
void ca_entry_set_cert(ca_ctx *ca, const char *label, X509 *cert);
/* A certificate from DER (NULL when it does not parse). */
X509 *ca_der_to_x509(const uint8_t *der, size_t len);
/* ca_subject.c: KL_EPOLICY when `cert`, issued from a request, has the subject of a CA in the
 * store (the same attributes in any order); a CA certificate (is_ca) for that CA's own key is
 * not refused. Store errors as such. */
kl_rc ca_subject_check(ca_ctx *ca, const X509 *cert, int is_ca) KL_WUR;
/* The same check against `cas`, a CA list the caller read (store_ca_list). */
kl_rc ca_subject_check_in(ca_ctx *ca, const X509 *cert, int is_ca, const store_ca *cas,
                          size_t n) KL_WUR;
/* Free ca_subject_check's parsed certificates (ca_close). */
void ca_subject_cache_free(ca_ctx *ca);
/* An ASN1_TIME as time_t: 1, or 0 when it does not convert. */
int ca_asn1_time(const ASN1_TIME *t, time_t *out);
/* 1 when less than half of `cert`'s validity is left at `now` (or its dates do not parse), or
 * it starts more than CA_CLOCK_AHEAD_MAX after `now`. */
int ca_cert_past_half(const X509 *cert, time_t now);
/* Digest to sign with for a key (SHA-384 for P-384, NULL for Ed25519, else SHA-256). */
const EVP_MD *ca_sign_md(const EVP_PKEY *key);
/* KL_EPOLICY for a key type that cannot go on token h for CA `label` (Ed25519 on the online
 * token: libp11 would see none of its keys). */
kl_rc ca_key_token_check(ca_ctx *ca, hsm_ctx *h, const char *label, hsm_key_type kt) KL_WUR;

/* Certify `pub` (whose private half `priv` is in the token) under `issuer` (NULL: self-signed,
 * then self_label names it) with `name` as subject, through the issuance pipeline. */
kl_rc ca_certify(ca_ctx *ca, EVP_PKEY *priv, EVP_PKEY *pub, const X509_NAME *name,
                 const char *template_name, const char *issuer, const char *self_label,
                 const char *actor, X509 **cert_out) KL_WUR;
/* ca_certify under an issuer that is not recorded yet: its certificate and key are given
 * (ca_rotate: the old root certified by the new one before either is recorded). */
kl_rc ca_certify_under(ca_ctx *ca, EVP_PKEY *priv, EVP_PKEY *pub, const X509_NAME *name,
                       const char *template_name, const char *issuer_label, X509 *issuer_cert,
                       EVP_PKEY *issuer_key, const char *actor, X509 **cert_out) KL_WUR;
/* Record a CA (or rollover) certificate in the store under `label`. */
kl_rc ca_record(ca_ctx *ca, const char *label, const char *template_name, const char *parent,
                const char *key_type, X509 *cert, const char *status) KL_WUR;
/* The store record of ca_record, for store_ca_put_all; the caller frees rec->der with
 * OPENSSL_free. */
kl_rc ca_record_fill(store_ca *rec, const char *label, const char *template_name,
                     const char *parent, const char *key_type, X509 *cert,
                     const char *status) KL_WUR;
/* Labels: 1-63 of [A-Za-z0-9._-], starting and ending with a letter or digit, no "..". */
#define CA_LABEL_MAX 63
/* a root rotation's rollover certificates: "<new root>.newwithold", "<old root>.oldwithnew" */
#define CA_ROLLOVER_NWO ".newwithold"
#define CA_ROLLOVER_OWN ".oldwithnew"
/* KL_OK when `label` is well-formed and not taken (KL_EUSAGE / KL_EEXIST otherwise). */
kl_rc ca_label_check_new(ca_ctx *ca, const char *label) KL_WUR;
/* KL_OK when a new key and CA record may be labelled `label` with this template and issuer:
 * the suffixes keyline derives itself are reserved (".ocsp" only for the ocsp-signer template
 * as "<issuer>.ocsp", which that template must use; ".newwithold"/".oldwithnew" never: only a
 * rotation records them). KL_EUSAGE with the reason. No store access. */
kl_rc ca_label_role_check(const char *label, const char *template_name, const char *issuer) KL_WUR;
kl_rc ca_create_named(ca_ctx *ca, const char *label, const char *template_name,
                      const X509_NAME *name, hsm_key_type kt, const char *issuer, const char *actor,
                      X509 **cert_out) KL_WUR;
/* The first half of ca_create_named: checks, a new key `label` in the token and its CA
 * certificate (recorded in the certificate table like any issued one), but no CA record. On
 * failure nothing is left in the token. On success the caller records the CA, or undoes it
 * all with ca_key_discard. *priv_out (may be NULL) gets the new private key. */
kl_rc ca_key_new(ca_ctx *ca, const char *label, const char *template_name, const X509_NAME *name,
                 hsm_key_type kt, const char *issuer, const char *actor, X509 **cert_out,
                 EVP_PKEY **priv_out) KL_WUR;
/* t as "2026-12-07T04:44:00Z" into buf (21 bytes), which it returns. */
const char *ca_time_iso(time_t t, char buf[21]);
/* KL_EPOLICY with the reason when CA `label` signs nothing (retired: its key destroyed;
 * external; a rollover certificate), from its record `rec` or, when NULL, the store's. */
kl_rc ca_key_usable(ca_ctx *ca, const char *label, const store_ca *rec) KL_WUR;
/* Store a recorded CA's certificate on its token beside its key (hsm_cert_put): KL_OK, or the
 * error saying the CA is recorded but the token lacks its certificate. */
kl_rc ca_cert_to_token(ca_ctx *ca, const char *label, X509 *cert) KL_WUR;
/* "CN=Root CA,O=Acme" (RFC 4514 order) -> X509_NAME (caller frees). KL_EUSAGE. */
kl_rc ca_subject_parse(const char *subject, X509_NAME **out) KL_WUR;
/* ca_crl with nextUpdate `next_update` when it is in the future (a retired CA's final CRL),
 * else as ca_crl sets it. */
kl_rc ca_crl_until(ca_ctx *ca, const char *issuer, time_t next_update, X509_CRL **out) KL_WUR;
/* A retiring CA's delegated OCSP signer: a fresh certificate for it (renewed now, whatever its
 * age), or a new signer when it has none. Needs the CA's key. */
kl_rc ca_ocsp_signer_final(ca_ctx *ca, const char *issuer, const char *actor) KL_WUR;
/* RFC 5280 5.3.1 cessationOfOperation */
#define CA_REASON_CESSATION 5
/* Undo a CA that could not be recorded: revoke (cessationOfOperation) the certificates signed
 * on the way (NULL entries skipped; they were never released; certs[0], when n > 0, is the new
 * CA's own certificate), destroy key `label` in the token, and keep the caller's error `rc` and
 * message, noting what could not be undone: each certificate left valid by its serial, with
 * the revoke command that an officer runs once the store takes writes again. */
void ca_key_discard(ca_ctx *ca, const char *label, X509 *const *certs, size_t n, const char *actor,
                    kl_rc rc);

/* Partitioned CRLs (ca_crlpart.c; [ca LABEL] crl-partition-size). ca_crlpart_size: N, or 0 when
 * CA `label` is not partitioned (KL_EINPUT: a bad value). ca_crlpart_name_parse: "L" -> L, -1;
 * "L/K" -> L, K (the name of partition K's CRL); KL_EUSAGE otherwise. ca_crlpart_url: the
 * distribution point of partition K ([ca] crl-url with {issuer} and {partition}, or its
 * ".crl" ending made "/K.crl"); KL_EUSAGE without crl-url or when it cannot name a partition.
 * ca_crlpart_dpname: that URL as a DistributionPointName (fullName), *out freed by the caller.
 * ca_crlpart_assign: for a certificate of `label` built with a distribution point, the CA's
 * current partition in *part and its cRLDistributionPoints replaced by the partition's, *size
 * the partition size to record it with (store_cert.crl_part_size); *size 0: not partitioned.
 * ca_crlpart_final: the final CRL of each partition of `label` (a retiring CA), next_update
 * `until`. ca_crlpart_stored: the published CRL `name` ("L/K") when it is before half its
 * validity and lists `revoked` certificates (the partition's revoked count read before: then
 * it lists them all), with when to make it again and its number; KL_ENOTFOUND otherwise.
 * ca_crlpart_publish (ca.h). */
kl_rc ca_crlpart_size(ca_ctx *ca, const char *label, int64_t *size) KL_WUR;
/* Every [ca LABEL] section of the configuration, when a program opens the CA: a bad
 * crl-partition-size, or one with a crl-url that cannot name a partition, refuses to start
 * (not the first issuance); a LABEL the store has no CA of is a warning (a CA made later). */
kl_rc ca_crlpart_conf_check(ca_ctx *ca) KL_WUR;
kl_rc ca_crlpart_name_parse(const char *name, char *label, size_t label_sz, int64_t *part) KL_WUR;
kl_rc ca_crlpart_url(ca_ctx *ca, const char *label, int64_t part, char *out, size_t outlen) KL_WUR;
/* ca_crlpart_dp_url: the distribution point partition K's certificates and CRL name: the URL
 * recorded for it in the store, else ca_crlpart_url's, recorded now (store_crlpart_url). */
kl_rc ca_crlpart_dp_url(ca_ctx *ca, const char *label, int64_t part, char *out,
                        size_t outlen) KL_WUR;
kl_rc ca_crlpart_dpname(const char *url, DIST_POINT_NAME **out) KL_WUR;
kl_rc ca_crlpart_assign(ca_ctx *ca, const char *label, X509 *cert, int64_t *part,
                        int64_t *size) KL_WUR;
kl_rc ca_crlpart_final(ca_ctx *ca, const char *label, time_t until) KL_WUR;
kl_rc ca_crlpart_stored(ca_ctx *ca, const char *name, int64_t revoked, uint8_t **der, size_t *len,
                        time_t *refresh_at, int64_t *number) KL_WUR;

#endif
