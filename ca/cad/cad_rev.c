/* keyline-cad: CRLs and OCSP answers for front ends, from caches so that a crowd of relying
 * parties behind keyline-estd does not turn into HSM load.
 *   CRL:  one per CA. A CA keyline-cad signs CRLs for (not a self-signed root, unless
 *         [cad] ca-keys = all) is re-signed (ca_crl) when its revocation epoch moves or half-way
 *         to nextUpdate; a root's CRL is the one the officer published (keyline-ca crl), read
 *         again every CAD_PUBLISHED_TTL seconds or when its epoch moves.
 *   OCSP: answers to nonce-less requests, keyed by SHA-256 of the request, kept at most
 *         CAD_OCSP_TTL seconds and dropped as soon as any revocation epoch moves; delegated
 *         OCSP signers made at start-up (cad_rev_startup) and renewed once past half their
 *         life. Before any of that, a request of the RFC 5019 shape is answered from the
 *         pre-produced answers (cad_ocsp.c) when there is one. */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_internal.h"
#include "ca_image.h"
#include "cad.h"
#include "cad_ocsp.h"
#include "ca_backend.h"
#include "kl_digest.h"
#include "kl_log.h"
#include "store.h"

#define CAD_CRL_SLOTS 64
#define CAD_OCSP_SLOTS 512
#define CAD_OCSP_TTL 60
#define CAD_PUBLISHED_TTL 60

typedef struct {
    char label[129];
    int64_t epoch;
    time_t refresh_at;
    uint8_t *der;
    size_t len;
    int64_t number;  /* the cRLNumber of der */
    time_t built;    /* when der was made or read: after the epoch was read */
    int64_t checked; /* the store's latest number when it was last compared (cad_rev_newer) */
    int64_t revoked; /* a partition's CRL ("L/K"): its revoked count read before it was made */
} cad_crl_slot;

typedef struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    int64_t epoch_sum;
    time_t at;
    time_t until; /* its earliest nextUpdate (the signer's notAfter may cut it short) */
    uint8_t *der;
    size_t len;
} cad_ocsp_slot;

struct cad_rev {
    cad *d;
    int all_keys;
    pthread_mutex_t crl_lock;
    cad_crl_slot crl[CAD_CRL_SLOTS];
    size_t n_crl;
    pthread_mutex_t ocsp_lock;
    cad_ocsp_slot ocsp[CAD_OCSP_SLOTS];
    pthread_mutex_t upkeep_lock;
    time_t upkeep_at, warned_at;
    cad_ocsp *pre;      /* NULL: [cad] ocsp-preproduce = 0 */
    long ocsp_validity; /* [cad] ocsp-validity: live answers' too */
};

static void cad_rev_startup(cad_rev *r);

kl_rc cad_rev_new(cad *d, cad_rev **out)
{
    cad_rev *r = calloc(1, sizeof *r);
    if (!r) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    const char *keys = kl_conf_get_default(d->conf, "cad", "ca-keys", "intermediates");
    if (strcmp(keys, "all") != 0 && strcmp(keys, "intermediates") != 0) {
        free(r);
        return kl_fail(KL_EINPUT, "[cad] ca-keys = %s: expected intermediates or all", keys);
    }
    kl_rc rc =
        kl_conf_get_long(d->conf, "cad", "ocsp-validity", 86400, 4, 7 * 86400, &r->ocsp_validity);
    if (rc != KL_OK) {
        free(r);
        return rc;
    }
    r->d = d;
    r->all_keys = strcmp(keys, "all") == 0;
    pthread_mutex_init(&r->crl_lock, NULL);
    pthread_mutex_init(&r->ocsp_lock, NULL);
    pthread_mutex_init(&r->upkeep_lock, NULL);
    cad_rev_startup(r);
    /* after start-up: the delegated signers the answers are signed with exist now */
    rc = cad_ocsp_new(d, &r->pre);
    if (rc != KL_OK) {
        cad_rev_free(r);
        return rc;
    }
    *out = r;
    return KL_OK;
}

void cad_rev_free(cad_rev *r)
{
    if (!r) {
        return;
    }
    cad_ocsp_free(r->pre);
    for (size_t i = 0; i < r->n_crl; i++) {
        free(r->crl[i].der);
    }
    for (size_t i = 0; i < CAD_OCSP_SLOTS; i++) {
        free(r->ocsp[i].der);
    }
    pthread_mutex_destroy(&r->crl_lock);
    pthread_mutex_destroy(&r->ocsp_lock);
    pthread_mutex_destroy(&r->upkeep_lock);
    free(r);
}

/* An issuing CA (not an OCSP signer or a rollover certificate); *signs: keyline-cad keeps its
 * CRL fresh itself. */
static kl_rc cad_rev_ca(cad_rev *r, const char *label, int *signs)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    kl_rc rc = store_ca_get(ca_store(r->d->ca), label, &rec);
    int issuing = rc == KL_OK && !ca_is_ocsp_signer_label(label) &&
                  !ca_is_firmware_template(rec.template_name) &&
                  !(rec.status && strcmp(rec.status, "rollover") == 0);
    /* a retired CA signs nothing more: its final CRL is served as published */
    int live = rec.status && strcmp(rec.status, "active") == 0;
    *signs = issuing && live && (r->all_keys || (rec.parent && *rec.parent));
    store_ca_free(&rec);
    if (rc == KL_ENOTFOUND || (rc == KL_OK && !issuing)) {
        return kl_fail(KL_ENOTFOUND, "no issuing CA labelled '%s'", label);
    }
    return rc;
}

static kl_rc cad_rev_published(cad_rev *r, const char *label, uint8_t **der, size_t *len,
                               time_t *refresh_at, int64_t *number)
{
    store_crl c;
    memset(&c, 0, sizeof c);
    kl_rc rc = store_crl_get(ca_store(r->d->ca), label, &c);
    if (rc == KL_ENOTFOUND) {
        return kl_fail(KL_ENOTFOUND, "no CRL published for '%s': run keyline-ca crl --issuer %s",
                       label, label);
    }
    if (rc != KL_OK) {
        return rc;
    }
    time_t now = time(NULL);
    if (c.next_update <= now) {
        kl_warn("CRL for %s: the published CRL number %lld passed its nextUpdate; run "
                "keyline-ca crl --issuer %s",
                label, (long long)c.number, label);
    }
    *refresh_at = now + CAD_PUBLISHED_TTL;
    *number = c.number;
    *der = c.der;
    *len = c.der_len;
    c.der = NULL;
    store_crl_free(&c);
    return KL_OK;
}

static kl_rc cad_rev_sign(cad_rev *r, const char *label, uint8_t **der, size_t *len,
                          time_t *refresh_at, int64_t *number)
{
    ca_crl_result crl;
    kl_rc rc = ca_crl_der(r->d->ca, label, 0, &crl);
    if (rc != KL_OK) {
        return rc;
    }
    /* re-sign half-way to nextUpdate: relying parties never see a CRL about to expire */
    *refresh_at = crl.this_update + (crl.next_update - crl.this_update) / 2;
    *number = crl.number;
    *der = crl.der; /* the DER as signed, not parsed and encoded again */
    *len = crl.len;
    crl.der = NULL;
    ca_crl_result_free(&crl);
    return KL_OK;
}

/* Add a copy of `label` to cas (CAD_CRL_SLOTS room) unless it is there already. */
static void cad_rev_list_add(char **cas, size_t *n, const char *label)
{
    for (size_t j = 0; j < *n; j++) {
        if (strcmp(cas[j], label) == 0) {
            return;
        }
    }
    if (*n < CAD_CRL_SLOTS && (cas[*n] = strdup(label)) != NULL) {
        (*n)++;
    }
}

/* A CA whose CRLs keyline-cad does not sign (a root): publish one now when none is published
 * (a store from before CRLs were published) or the published one is past half its validity. */
static void cad_rev_publish_missing(cad_rev *r, const char *label)
{
    store_crl c;
    memset(&c, 0, sizeof c);
    kl_rc rc = store_crl_get(ca_store(r->d->ca), label, &c);
    time_t now = time(NULL);
    const char *why = rc == KL_ENOTFOUND ? "none was published"
                      : rc == KL_OK && now >= c.this_update + (c.next_update - c.this_update) / 2
                          ? "the published one is past half its validity"
                          : NULL;
    store_crl_free(&c);
    X509_CRL *crl = NULL;
    if (!why) {
        return;
    }
    if (ca_crl(r->d->ca, label, &crl) != KL_OK) {
        kl_warn("CRL for %s: %s, and signing one at start-up failed: %s", label, why, kl_errmsg());
        return;
    }
    kl_info("CRL for %s: published a new one at start-up (%s)", label, why);
    X509_CRL_free(crl);
}

/* Start-up, before any front end is served (the step keyline-estd ran while it held the
 * token): for each profile's issuing CA and every CA above it, the RFC 6960 4.2.2.2 delegated
 * OCSP signer is made when there is none and renewed when past half its life (OCSP answers then
 * do not need the CA key, a root's included), and a CA whose CRLs keyline-cad does not sign gets
 * one published when it has none or an old one. Not fatal: without a delegated signer
 * ca_ocsp_respond() signs with the CA itself. */
static void cad_rev_startup(cad_rev *r)
{
    char *cas[CAD_CRL_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < r->d->cfg.nprofiles; i++) {
        cad_rev_list_add(cas, &n, r->d->cfg.profiles[i].issuer);
    }
    for (size_t i = 0; i < n; i++) { /* the list grows as parents are found */
        store_ca rec;
        memset(&rec, 0, sizeof rec);
        if (store_ca_get(ca_store(r->d->ca), cas[i], &rec) == KL_OK && rec.parent && *rec.parent) {
            cad_rev_list_add(cas, &n, rec.parent);
        }
        store_ca_free(&rec);
    }
    for (size_t i = 0; i < n; i++) {
        int signs = 0, renewed = 0;
        if (cad_rev_ca(r, cas[i], &signs) == KL_OK) {
            if (ca_ocsp_signer_ensure(r->d->ca, cas[i], "cad:startup", &renewed) != KL_OK) {
                kl_warn("OCSP signer for %s: %s; OCSP answers for it are signed by the CA", cas[i],
                        kl_errmsg());
            } else if (renewed) {
                kl_info("OCSP signer of %s renewed", cas[i]);
            }
            if (!signs) {
                cad_rev_publish_missing(r, cas[i]);
            }
        }
        free(cas[i]);
    }
}

/* Several keyline-cad on one store: another daemon (or keyline-ca) may have recorded a CRL of
 * `label` (a CA's, or a partition's "L/K") numbered above the one in `slot` since it was made,
 * and relying parties that reach both daemons must not see the number go back. The CA's latest
 * number (one counter for the CA and its partitions) is a point read per request; when it moved
 * past ours, the stored CRL of this name is read, and served instead if it is known to be at
 * least as complete: its revoked list was read after its thisUpdate (ca_crl_der), so one whose
 * thisUpdate is after `built` (after our epoch read; the epoch has not moved since, or the slot
 * would have been made again) lists every revocation ours does. Otherwise (both signed in the
 * same second) the slot is made again within a second, with a number above both. A number
 * taken by another name of the CA (a partition's CRL, the full CRL) changes nothing here. */
static void cad_rev_newer(cad_rev *r, const char *ca_label, const char *label, int signs,
                          cad_crl_slot *slot)
{
    int64_t next = 0;
    store_crl_meta h;
    store *st = ca_store(r->d->ca);
    if (store_crl_number_peek(st, ca_label, &next) != KL_OK || next - 1 <= slot->number ||
        next - 1 == slot->checked) {
        return; /* ours is the latest, or the latest was looked at already */
    }
    kl_rc rc = store_crl_head(st, label, &h); /* not the DER: it may be big */
    int64_t number = h.number;
    time_t this_update = h.this_update;
    if (rc != KL_OK && rc != KL_ENOTFOUND) {
        return; /* tried again on the next request */
    }
    if (rc == KL_ENOTFOUND || number <= slot->number) {
        slot->checked = next - 1; /* the number went to another CRL of the CA */
        return;
    }
    store_crl c;
    memset(&c, 0, sizeof c);
    time_t now = time(NULL);
    if (this_update <= slot->built) {
        slot->checked = next - 1;
        if (signs && slot->refresh_at > now + 1) {
            slot->refresh_at = now + 1;
        }
    } else if (store_crl_get(st, label, &c) == KL_OK && c.number > slot->number) {
        slot->checked = next - 1;
        free(slot->der);
        slot->der = c.der;
        slot->len = c.der_len;
        slot->number = c.number;
        slot->refresh_at =
            signs ? c.this_update + (c.next_update - c.this_update) / 2 : now + CAD_PUBLISHED_TTL;
        c.der = NULL;
    }
    store_crl_free(&c);
}

/* The published CRL `label` when it is as good as one signed now: its entries read at the
 * CA's current revocation epoch (`epoch`: it lists every revocation) and its first half of
 * validity not over. keyline-ca revoke publishes one after each revocation, and a restarted
 * daemon finds the one it signed before: served, not signed again (an HSM signature and a CRL
 * number each, and on a full disk a CRL that could not be published: 503 for as long). */
static int cad_rev_current(cad_rev *r, const char *label, int64_t epoch, time_t now, uint8_t **der,
                           size_t *len, time_t *refresh_at, int64_t *number)
{
    store_crl_meta h;
    time_t half = 0;
    if (store_crl_head(ca_store(r->d->ca), label, &h) != KL_OK || h.epoch != epoch ||
        h.this_update > now + CA_CLOCK_AHEAD_MAX || /* a clock set ahead: refused by clients */
        now >= (half = h.this_update + (h.next_update - h.this_update) / 2) ||
        cad_rev_published(r, label, der, len, refresh_at, number) != KL_OK) {
        return 0;
    }
    if (*number != h.number) { /* another was published in between: signed, as without it */
        free(*der);
        *der = NULL;
        return 0;
    }
    *refresh_at = half; /* re-signed from its half, as one this daemon signed */
    return 1;
}

kl_rc cad_rev_crl(cad_rev *r, const char *label, kl_buf *out)
{
    kl_rc rc = KL_OK;
    int signs = 0;
    int64_t epoch = 0, part = -1;
    char ca_label[CA_LABEL_MAX + 1]; /* "L/K": partition K's CRL of CA L (ca_crlpart.c) */
    TRY(ca_crlpart_name_parse(label, ca_label, sizeof ca_label, &part));
    TRY(cad_rev_ca(r, ca_label, &signs));
    TRY(store_revocation_epoch(ca_store(r->d->ca), ca_label, &epoch));
    time_t now = time(NULL);
    pthread_mutex_lock(&r->crl_lock);
    cad_crl_slot *slot = NULL;
    for (size_t i = 0; i < r->n_crl; i++) {
        if (strcmp(r->crl[i].label, label) == 0) {
            slot = &r->crl[i];
        }
    }
    if (!slot) { /* all taken (CRL partitions: many per CA): the oldest makes room */
        slot = &r->crl[r->n_crl < CAD_CRL_SLOTS ? r->n_crl++ : 0];
        for (size_t i = 1; r->n_crl == CAD_CRL_SLOTS && i < r->n_crl; i++) {
            slot = r->crl[i].refresh_at < slot->refresh_at ? &r->crl[i] : slot;
        }
        free(slot->label[0] ? slot->der : NULL);
        memset(slot, 0, sizeof *slot);
        snprintf(slot->label, sizeof slot->label, "%s", label);
    }
    /* RFC 5280 5.2.5: a partition's CRL lists the revoked certificates of its partition alone:
     * a revocation in another partition moves the CA's epoch but leaves it as it is */
    int64_t revoked = -1;
    if (part >= 0 && (!slot->der || slot->epoch != epoch || now >= slot->refresh_at)) {
        rc = store_crlpart_revoked_count(ca_store(r->d->ca), ca_label, part, &revoked);
    }
    if (rc == KL_OK && slot->der && slot->epoch != epoch && now < slot->refresh_at &&
        revoked >= 0 && revoked == slot->revoked) {
        slot->epoch = epoch;
    }
    if (rc == KL_OK && (!slot->der || slot->epoch != epoch || now >= slot->refresh_at)) {
        uint8_t *der = NULL;
        size_t len = 0;
        time_t refresh_at = 0;
        /* built under the lock: concurrent fetchers wait for one signature, not one each */
        int64_t number = 0;
        /* a partition's CRL published complete (by revoke, or a daemon): served, not signed
         * again, so that many partitions through 64 slots do not make HSM load */
        int stands = signs && part < 0 &&
                     cad_rev_current(r, label, epoch, now, &der, &len, &refresh_at, &number);
        if (!stands && (part < 0 || !signs ||
                        ca_crlpart_stored(r->d->ca, label, revoked, &der, &len, &refresh_at,
                                          &number) != KL_OK)) {
            rc = signs ? cad_rev_sign(r, label, &der, &len, &refresh_at, &number)
                       : cad_rev_published(r, label, &der, &len, &refresh_at, &number);
        }
        if (rc == KL_OK) {
            free(slot->der);
            *slot = (cad_crl_slot){.epoch = epoch,
                                   .refresh_at = refresh_at,
                                   .der = der,
                                   .len = len,
                                   .number = number,
                                   .built = now,
                                   .revoked = revoked};
            snprintf(slot->label, sizeof slot->label, "%s", label);
        }
    }
    if (rc == KL_OK) {
        cad_rev_newer(r, ca_label, label, signs, slot);
        rc = cap_put_bytes(out, CAP_T_CRL, slot->der, slot->len);
    }
    pthread_mutex_unlock(&r->crl_lock);
out:
    return rc;
}

/* Sum of every CA's revocation epoch: moves whenever anything is revoked anywhere. */
static kl_rc cad_rev_epoch_sum(cad_rev *r, int64_t *sum)
{
    store_ca *cas = NULL;
    size_t n = 0;
    *sum = 0;
    kl_rc rc = store_ca_list(ca_store(r->d->ca), &cas, &n);
    for (size_t i = 0; rc == KL_OK && i < n; i++) {
        int64_t e = 0;
        rc = store_revocation_epoch(ca_store(r->d->ca), cas[i].label, &e);
        *sum += e;
    }
    store_ca_list_free(cas, n);
    return rc;
}

/* Once a minute, on an OCSP request: renew the delegated signers of the CAs keyline-cad signs
 * for once past half their life (the ocsp-signer template makes them short-lived). */
static void cad_rev_upkeep(cad_rev *r, time_t now)
{
    if (pthread_mutex_trylock(&r->upkeep_lock) != 0) {
        return;
    }
    /* a clock set back (now before the last time) does not put the upkeep off until it
     * catches up */
    if (now < r->upkeep_at || now - r->upkeep_at >= CAD_PUBLISHED_TTL) {
        r->upkeep_at = now;
        store_ca *cas = NULL;
        size_t n = 0;
        if (store_ca_list(ca_store(r->d->ca), &cas, &n) == KL_OK) {
            int warn = now < r->warned_at || now - r->warned_at >= 3600;
            for (size_t i = 0; i < n; i++) {
                int signs = 0, renewed = 0;
                if (cad_rev_ca(r, cas[i].label, &signs) != KL_OK ||
                    strcmp(cas[i].status, "retired") == 0 || /* its signer lives out */
                    !ca_ocsp_signer_due(r->d->ca, cas[i].label, NULL)) {
                    continue;
                }
                if (!signs) { /* hourly: only the officer can renew it */
                    if (warn) {
                        r->warned_at = now;
                        kl_warn("OCSP signer of %s (a CA keyline-cad does not sign with: [cad] "
                                "ca-keys) is past half its life: run keyline-ca crl --issuer %s",
                                cas[i].label, cas[i].label);
                    }
                    continue;
                }
                if (ca_ocsp_signer_ensure(r->d->ca, cas[i].label, "cad:renew", &renewed) != KL_OK) {
                    kl_warn("OCSP signer of %s: renewal failed: %s", cas[i].label, kl_errmsg());
                } else if (renewed) {
                    kl_info("OCSP signer of %s renewed", cas[i].label);
                }
            }
        }
        store_ca_list_free(cas, n);
    }
    pthread_mutex_unlock(&r->upkeep_lock);
}

/* The earliest nextUpdate of a successful answer: 1, or 0 when it has none that reads. */
static int cad_rev_ocsp_until(OCSP_RESPONSE *resp, time_t *until)
{
    OCSP_BASICRESP *bs = OCSP_response_get1_basic(resp);
    int n = bs ? OCSP_resp_count(bs) : 0, ok = n > 0;
    for (int i = 0; ok && i < n; i++) {
        ASN1_GENERALIZEDTIME *nu = NULL;
        time_t t = 0;
        ok = OCSP_single_get0_status(OCSP_resp_get0(bs, i), NULL, NULL, NULL, &nu) >= 0 &&
             ca_asn1_time(nu, &t);
        *until = i == 0 || t < *until ? t : *until;
    }
    OCSP_BASICRESP_free(bs);
    ERR_clear_error();
    return ok;
}

kl_rc cad_rev_ocsp(cad_rev *r, const uint8_t *der, size_t len, kl_buf *out)
{
    kl_rc rc = KL_OK;
    OCSP_REQUEST *req = NULL;
    OCSP_RESPONSE *resp = NULL;
    uint8_t *enc = NULL;
    /* zero if hashing fails: the slot is picked from it before `cacheable` is looked at */
    uint8_t key[SHA256_DIGEST_LENGTH] = {0};
    int64_t esum = 0;
    time_t now = time(NULL);
    cad_rev_upkeep(r, now);
    const unsigned char *p = der;
    req = d2i_OCSP_REQUEST(NULL, &p, (long)len);
    ENSURE_SSL(req && p == der + len, KL_EINPUT, "OCSP request does not parse");
    /* A request to refuse (an unknown critical extension, a bad nonce: ca_ocsp_request_check,
     * in ca_ocsp_respond) is answered from neither store below, and needs no check of its own
     * here: a pre-produced answer goes only to a request with no extension at all
     * (cad_ocsp_request_key), and the cache is keyed by the whole request and holds
     * successful answers alone. */
    if (cad_ocsp_lookup(r->pre, req, out)) {
        goto out;
    }
    /* a nonce makes the answer unique to this request: never cached (RFC 5019 4) */
    int cacheable = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1) < 0;
    if (cacheable) {
        cacheable = kl_sha256(der, len, key) == KL_OK && cad_rev_epoch_sum(r, &esum) == KL_OK;
        pthread_mutex_lock(&r->ocsp_lock);
        cad_ocsp_slot *slot = &r->ocsp[(key[0] | key[1] << 8) % CAD_OCSP_SLOTS];
        int hit = cacheable && slot->der && memcmp(slot->key, key, sizeof key) == 0 &&
                  slot->epoch_sum == esum && now >= slot->at && now - slot->at < CAD_OCSP_TTL &&
                  now - slot->at < (slot->until - slot->at) / 2; /* never one near its end */
        if (hit) {
            rc = cap_put_bytes(out, CAP_T_OCSP_RESP, slot->der, slot->len);
        }
        pthread_mutex_unlock(&r->ocsp_lock);
        if (hit) {
            goto out;
        }
    }
    TRY(ca_ocsp_respond(r->d->ca, req, r->ocsp_validity, &resp));
    int n = i2d_OCSP_RESPONSE(resp, &enc);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "i2d_OCSP_RESPONSE");
    TRY(cap_put_bytes(out, CAP_T_OCSP_RESP, enc, (size_t)n));
    time_t until = 0;
    if (cacheable && OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_SUCCESSFUL &&
        cad_rev_ocsp_until(resp, &until)) {
        uint8_t *copy = malloc((size_t)n);
        if (copy) {
            memcpy(copy, enc, (size_t)n);
            pthread_mutex_lock(&r->ocsp_lock);
            cad_ocsp_slot *slot = &r->ocsp[(key[0] | key[1] << 8) % CAD_OCSP_SLOTS];
            free(slot->der);
            memcpy(slot->key, key, sizeof key);
            slot->der = copy;
            slot->len = (size_t)n;
            slot->epoch_sum = esum;
            slot->at = now;
            slot->until = until;
            pthread_mutex_unlock(&r->ocsp_lock);
        }
    }
out:
    OPENSSL_free(enc);
    OCSP_RESPONSE_free(resp);
    OCSP_REQUEST_free(req);
    return rc;
}
