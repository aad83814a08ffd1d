/* keyline-cad: pre-produced OCSP answers (RFC 5019 profile), so that relying parties are
 * answered from memory and HSM load does not grow with them.
 *
 * A background thread signs, ahead of any request, one nonce-less answer per valid certificate
 * and per recently revoked one (revoked less than CAD_OCSP_RECENT ago and not expired) of every
 * active issuing CA, at most [cad] ocsp-preproduce answers in all, each valid [cad]
 * ocsp-validity seconds. It
 *   - re-signs an answer once it is past half its validity (a full pass every
 *     min(60, validity / 4) seconds, which also takes in new certificates and drops answers of
 *     certificates no longer listed);
 *   - in a thread of its own, which a full pass never holds up (a pass over 50k answers
 *     signs for seconds), polls every CA's revocation epoch twice a second and, when one
 *     moves, re-signs the answers of that CA's newly revoked certificates at once: a
 *     revocation is served within about a second plus the signing of what changed. An answer
 *     that says revoked is never replaced by one that says good (a pass that listed the
 *     certificate before its revocation), as a revocation is final;
 *   - in the same thread, follows the revocation epochs of each CA's chain (itself and the CAs
 *     above it): when the certificate of the CA or of one above it is revoked, every answer of
 *     that CA that says good stops being served at once (the live path answers, revoked) and
 *     is signed again "revoked", reason cACompromise, at that CA's revocation time (EJBCA's
 *     answer for the certificates of a revoked CA; ca_ocsp_ca_revocation): a relying party
 *     that checks only the leaf sees it too.
 * No answer's nextUpdate, nor the time it is served until, passes the notAfter of the
 * certificate that signs it (the delegated signer's, or the CA's).
 * A request is answered here only when it asks for one certificate by a SHA-1 CertID with no
 * extension (no nonce): the RFC 5019 shape. Everything else, and certificates not (yet)
 * pre-produced, take cad_rev.c's live path. */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_backend.h"
#include "ca_internal.h"
#include "cad_ocsp.h"
#include "kl_b64.h"
#include "kl_log.h"
#include "store.h"

#define CAD_OCSP_KEY_MAX CAD_OCSP_REQUEST_KEY_MAX
#define CAD_OCSP_CAS 64              /* issuing CAs followed */
#define CAD_OCSP_RECENT (30 * 86400) /* a revoked certificate's answer is kept this long */
#define CAD_OCSP_POLL_MS 500

typedef struct {
    uint8_t key[CAD_OCSP_KEY_MAX];
    uint8_t klen; /* 0: empty slot */
    uint8_t status;
    uint32_t gen; /* the full pass that last saw its certificate */
    time_t this_update;
    time_t serve_until; /* its nextUpdate, or earlier when its signer passes half its life */
    uint8_t *der;
    size_t len;
} cad_pre;

typedef struct {
    char label[129];
    uint8_t id[40]; /* SHA-1 of the issuer's name and of its public key (RFC 6960 CertID) */
    int64_t epoch;
    uint8_t signer_fp[32]; /* SHA-256 of the delegated signer's certificate (zeros: none) */
    time_t signer_half;    /* when that certificate passes half its life (0: none) */
    time_t signer_end;     /* the notAfter of whoever signs: that signer, or the CA (0: unread) */
    int64_t chain_epoch;   /* sum of the revocation epochs of the CA and those above it */
    time_t ca_revoked;     /* when the CA's or an ancestor's certificate was revoked (0: not) */
} cad_pre_ca;

struct cad_ocsp {
    cad *d;
    long max, validity;
    long period;           /* seconds between full passes */
    pthread_rwlock_t lock; /* tab, cap, n, gen */
    cad_pre *tab;
    size_t cap, n;
    /* the CAs followed: their list and signers are the pass thread's, their epochs the
     * revocation thread's; each works on a copy and writes back under cas_mu */
    pthread_mutex_t cas_mu;
    cad_pre_ca cas[CAD_OCSP_CAS];
    size_t ncas;
    uint32_t gen;
    time_t next_pass;
    pthread_t thr, rthr;
    int started, rstarted;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stop;
    atomic_ulong hits, signs, failures;
};

static size_t cad_pre_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ k[i]) * 1099511628211ULL;
    }
    return (size_t)h;
}

/* The slot for `key` (found, or the empty one where it goes); the caller holds the lock and
 * keeps the table at most half full. */
static cad_pre *cad_pre_slot(cad_pre *tab, size_t cap, const uint8_t *key, size_t klen)
{
    for (size_t i = cad_pre_hash(key, klen) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (!tab[i].klen || (tab[i].klen == klen && memcmp(tab[i].key, key, klen) == 0)) {
            return &tab[i];
        }
    }
}

/* Rebuild the table at `cap` slots, keeping the entries seen by pass `keep_gen` (all when 0).
 * Under the write lock. */
static int cad_pre_rehash(cad_ocsp *o, size_t cap, uint32_t keep_gen)
{
    cad_pre *nt = calloc(cap, sizeof *nt);
    if (!nt) {
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < o->cap; i++) {
        cad_pre *e = &o->tab[i];
        if (!e->klen) {
            continue;
        }
        if (keep_gen && e->gen != keep_gen) {
            OPENSSL_free(e->der);
            continue;
        }
        *cad_pre_slot(nt, cap, e->key, e->klen) = *e;
        n++;
    }
    free(o->tab);
    o->tab = nt;
    o->cap = cap;
    o->n = n;
    return 0;
}

/* Insert or replace; takes `der` (OPENSSL_free). */
static void cad_pre_put(cad_ocsp *o, const cad_pre_ca *ca, const uint8_t *key, size_t klen,
                        int status, time_t now, time_t next, uint8_t *der, size_t len)
{
    pthread_rwlock_wrlock(&o->lock);
    if ((o->n + 1) * 2 > o->cap && cad_pre_rehash(o, o->cap ? o->cap * 2 : 1024, 0) != 0) {
        pthread_rwlock_unlock(&o->lock);
        OPENSSL_free(der);
        return;
    }
    cad_pre *e = cad_pre_slot(o->tab, o->cap, key, klen);
    if (e->klen && e->status == V_OCSP_CERTSTATUS_REVOKED && status != e->status) {
        /* signed from a listing made before the revocation: the revoked answer stays */
        pthread_rwlock_unlock(&o->lock);
        OPENSSL_free(der);
        return;
    }
    if (!e->klen) {
        memcpy(e->key, key, klen);
        e->klen = (uint8_t)klen;
        o->n++;
    }
    OPENSSL_free(e->der);
    e->der = der;
    e->len = len;
    e->status = (uint8_t)status;
    e->this_update = now;
    /* A signer past half its life is being renewed (by keyline-cad, or by the officer for an
     * offline CA): from then on the live path answers, with whichever certificate is current,
     * until this one is re-signed. */
    e->serve_until = next; /* its nextUpdate: within the signer's notAfter (cad_pre_cert) */
    if (ca->signer_half && ca->signer_half < e->serve_until) {
        e->serve_until = ca->signer_half;
    }
    e->gen = o->gen;
    pthread_rwlock_unlock(&o->lock);
}

/* The lookup key of serial `hex` under CA `ca`: its CertID without the hash algorithm, the
 * serial as the magnitude octets OpenSSL keeps for an INTEGER (no leading zero octets). 0 when
 * it does not fit or does not parse. */
static size_t cad_pre_key(const cad_pre_ca *ca, const char *hex, uint8_t *key)
{
    size_t n = strlen(hex), k = 40;
    memcpy(key, ca->id, 40);
    for (size_t i = 0; i < n;) {
        int hi = n % 2 && i == 0 ? 0 : kl_hex_digit(hex[i++]);
        int lo = kl_hex_digit(hex[i++]);
        if (hi < 0 || lo < 0) {
            return 0;
        }
        if (k == 40 && hi == 0 && lo == 0) {
            continue; /* leading zero octet */
        }
        if (k >= CAD_OCSP_KEY_MAX) {
            return 0;
        }
        key[k++] = (uint8_t)(hi << 4 | lo);
    }
    return k > 40 ? k : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* producing                                                                                 */

typedef struct {
    cad_ocsp *o;
    const cad_pre_ca *ca;
    time_t now;
    int force;       /* re-sign every answer (its signer changed) */
    size_t deferred; /* answers left for the next second */
} cad_pre_walk;

/* Does the answer for `key` need (re-)signing with `status`? An answer kept is marked seen by
 * this pass. keep 0 (a certificate revoked long ago): no new answer, and one that already says
 * revoked is left to go at the end of the pass; one that says otherwise is corrected first.
 * *tu: the new answer's thisUpdate, `now` or, when the answer it replaces has that very second,
 * the second after it: its Last-Modified (RFC 5019 6.2) must move, or a cache revalidating with
 * If-Modified-Since would keep a good answer after the revocation. An answer dated after `now`
 * (the clock was set back) is not followed: its successor is dated now, which relying parties
 * accept, rather than ahead of the clock, which they refuse. */
static int cad_pre_due(cad_ocsp *o, const uint8_t *key, size_t klen, int status, time_t now,
                       int keep, int force, time_t *tu)
{
    *tu = now;
    pthread_rwlock_wrlock(&o->lock);
    int due = keep && (long)o->n < o->max;
    if (o->cap) {
        cad_pre *e = cad_pre_slot(o->tab, o->cap, key, klen);
        if (e->klen && e->status == V_OCSP_CERTSTATUS_REVOKED &&
            status != V_OCSP_CERTSTATUS_REVOKED) {
            e->gen = o->gen; /* a listing from before its revocation: the answer stays */
            pthread_rwlock_unlock(&o->lock);
            return 0;
        }
        if (e->klen && e->this_update == now) {
            *tu = now + 1;
        }
        if (e->klen && (keep || e->status != status)) {
            e->gen = o->gen;
            /* re-signed before half its validity is gone (the pass that would find it past
             * half comes a period later): a relying party may keep an answer until its
             * nextUpdate, so it never holds one about to lapse */
            due =
                force || e->status != status || now + o->period >= e->this_update + o->validity / 2;
        }
    }
    pthread_rwlock_unlock(&o->lock);
    return due;
}

static int cad_pre_cert(void *arg, const store_cert *c)
{
    cad_pre_walk *w = arg;
    cad_ocsp *o = w->o;
    int revoked = strcmp(c->status, STORE_ST_REVOKED) == 0;
    if (o->stop || (!revoked && strcmp(c->status, STORE_ST_VALID) != 0) ||
        (c->not_after && c->not_after <= w->now)) {
        return o->stop;
    }
    uint8_t key[CAD_OCSP_KEY_MAX];
    size_t klen = cad_pre_key(w->ca, c->serial_hex, key);
    ca_ocsp_status st = {.serial_hex = c->serial_hex,
                         .status = revoked ? V_OCSP_CERTSTATUS_REVOKED : V_OCSP_CERTSTATUS_GOOD,
                         .reason = c->revoke_reason,
                         .revoked_at = c->revoked_at};
    if (!revoked && w->ca->ca_revoked) { /* its CA, or one above, is revoked (as live) */
        st.status = V_OCSP_CERTSTATUS_REVOKED;
        st.reason = OCSP_REVOKED_STATUS_CACOMPROMISE;
        st.revoked_at = w->ca->ca_revoked;
    }
    int status = st.status;
    int keep = status != V_OCSP_CERTSTATUS_REVOKED || st.revoked_at + CAD_OCSP_RECENT >= w->now;
    time_t tu = w->now;
    if (!klen || !cad_pre_due(o, key, klen, status, w->now, keep, w->force, &tu)) {
        return 0;
    }
    if (status == V_OCSP_CERTSTATUS_REVOKED && st.revoked_at == w->now) {
        w->deferred++; /* revoked this second: signed from the next (ca_ocsp_past_revocation) */
        return 0;
    }
    /* never valid past the notAfter of its signer (ca_ocsp_single holds to that too) */
    if (!w->ca->signer_end) {
        w->deferred++; /* not read yet (the pass thread reads it first): the next poll */
        return 0;
    }
    time_t next = tu + o->validity < w->ca->signer_end ? tu + o->validity : w->ca->signer_end;
    if (next <= tu) {
        return 0; /* its signer has expired: the live path says why */
    }
    uint8_t *der = NULL;
    size_t len = 0;
    if (ca_ocsp_single(o->d->ca, w->ca->label, &st, tu, next, &der, &len) != KL_OK) {
        if (atomic_fetch_add(&o->failures, 1) % 1000 == 0) {
            kl_warn("OCSP: pre-producing the answer for %s of %s failed: %s", c->serial_hex,
                    w->ca->label, kl_errmsg());
        }
        return 0;
    }
    atomic_fetch_add(&o->signs, 1);
    cad_pre_put(o, w->ca, key, klen, status, tu, next, der, len);
    return 0;
}

/* The active issuing CAs (not OCSP signers, rollover or retired records) with their CertID
 * issuer hashes; keeps the epochs of CAs already followed. */
static void cad_pre_cas(cad_ocsp *o)
{
    store_ca *list = NULL;
    size_t n = 0;
    if (store_ca_list(ca_store(o->d->ca), &list, &n) != KL_OK) {
        return;
    }
    cad_pre_ca next[CAD_OCSP_CAS];
    size_t nn = 0;
    /* only next[0..nn) is copied below, all of it set; zeroed for cppcheck, which cannot see that
     * nothing is copied when nn stays 0 */
    memset(next, 0, sizeof next);
    pthread_mutex_lock(&o->cas_mu);
    for (size_t i = 0; i < n && nn < CAD_OCSP_CAS; i++) {
        const ca_entry *e = NULL;
        if (ca_is_ocsp_signer_label(list[i].label) || !list[i].status ||
            strcmp(list[i].status, "active") != 0 ||
            ca_entry_get(o->d->ca, list[i].label, 0, &e) != KL_OK) {
            continue;
        }
        cad_pre_ca *c = &next[nn];
        unsigned int hl = 20;
        ASN1_BIT_STRING *pk = X509_get0_pubkey_bitstr(e->cert);
        if (!X509_NAME_digest(X509_get_subject_name(e->cert), EVP_sha1(), c->id, &hl) || !pk ||
            !EVP_Digest(pk->data, (size_t)pk->length, c->id + 20, NULL, EVP_sha1(), NULL)) {
            continue;
        }
        snprintf(c->label, sizeof c->label, "%s", list[i].label);
        c->epoch = -1;
        c->chain_epoch = -1;
        c->ca_revoked = 0;
        memset(c->signer_fp, 0, sizeof c->signer_fp);
        c->signer_half = 0;
        c->signer_end = 0;
        for (size_t j = 0; j < o->ncas; j++) {
            if (strcmp(o->cas[j].label, c->label) == 0) {
                c->epoch = o->cas[j].epoch;
                c->chain_epoch = o->cas[j].chain_epoch;
                c->ca_revoked = o->cas[j].ca_revoked;
                memcpy(c->signer_fp, o->cas[j].signer_fp, sizeof c->signer_fp);
                c->signer_half = o->cas[j].signer_half;
                c->signer_end = o->cas[j].signer_end;
            }
        }
        nn++;
    }
    memcpy(o->cas, next, nn * sizeof next[0]);
    o->ncas = nn;
    pthread_mutex_unlock(&o->cas_mu);
    store_ca_list_free(list, n);
}

/* A copy of the CAs followed (under cas_mu): the walks run on it, without the lock. */
static size_t cad_pre_cas_copy(cad_ocsp *o, cad_pre_ca *out)
{
    pthread_mutex_lock(&o->cas_mu);
    size_t n = o->ncas;
    memcpy(out, o->cas, n * sizeof *out);
    pthread_mutex_unlock(&o->cas_mu);
    return n;
}

/* Write back the field `what` of CA `ca` (found by label: the list may have changed). */
enum { CAD_PRE_EPOCH, CAD_PRE_SIGNER, CAD_PRE_CHAIN };
static void cad_pre_cas_note(cad_ocsp *o, const cad_pre_ca *ca, int what)
{
    pthread_mutex_lock(&o->cas_mu);
    for (size_t j = 0; j < o->ncas; j++) {
        if (strcmp(o->cas[j].label, ca->label) != 0) {
            continue;
        }
        if (what == CAD_PRE_EPOCH) {
            o->cas[j].epoch = ca->epoch;
        } else if (what == CAD_PRE_CHAIN) {
            o->cas[j].chain_epoch = ca->chain_epoch;
            o->cas[j].ca_revoked = ca->ca_revoked;
        } else {
            memcpy(o->cas[j].signer_fp, ca->signer_fp, sizeof ca->signer_fp);
            o->cas[j].signer_half = ca->signer_half;
            o->cas[j].signer_end = ca->signer_end;
        }
    }
    pthread_mutex_unlock(&o->cas_mu);
}

/* The delegated signer `ca`'s answers are signed with now (ca_ocsp_single picks it, or the CA
 * itself when there is none or it has expired or been revoked): 1 when it is another certificate
 * than the last time. ca_entry_get re-reads a signer past half its life from the store (renewed by
 * another process), ca_ocsp_signer_current one revoked or expired (given a new key by keyline-ca
 * ocsp-signer new): taken up at the next poll. */
static int cad_pre_signer(cad_ocsp *o, cad_pre_ca *ca)
{
    const ca_entry *se = NULL;
    uint8_t fp[32];
    unsigned int fl = sizeof fp;
    time_t now = time(NULL), nb = 0, na = 0, half = 0;
    memset(fp, 0, sizeof fp);
    ca->signer_end = 0;
    if (ca_ocsp_signer_current(o->d->ca, ca->label, now, &se) &&
        X509_digest(se->cert, EVP_sha256(), fp, &fl) &&
        ca_asn1_time(X509_get0_notBefore(se->cert), &nb) &&
        ca_asn1_time(X509_get0_notAfter(se->cert), &na)) {
        half = nb + (na - nb) / 2;
        ca->signer_end = na;
    } else {
        memset(fp, 0, sizeof fp);
        /* the CA signs: its own notAfter bounds its answers */
        if (ca_entry_get(o->d->ca, ca->label, 0, &se) != KL_OK ||
            !ca_asn1_time(X509_get0_notAfter(se->cert), &ca->signer_end)) {
            ca->signer_end = 0;
        }
    }
    ERR_clear_error();
    int changed = memcmp(fp, ca->signer_fp, sizeof fp) != 0;
    memcpy(ca->signer_fp, fp, sizeof fp);
    ca->signer_half = half;
    return changed;
}

/* One CA: its revoked certificates (revoked_only), or all it vouches for. The answers left
 * for the next second (revoked in this one). */
static size_t cad_pre_walk_ca(cad_ocsp *o, const cad_pre_ca *ca, int revoked_only, int force)
{
    cad_pre_walk w = {.o = o, .ca = ca, .now = time(NULL), .force = force};
    if ((!revoked_only && store_cert_list(ca_store(o->d->ca), STORE_ST_VALID, ca->label,
                                          cad_pre_cert, &w) != KL_OK) ||
        store_cert_list(ca_store(o->d->ca), STORE_ST_REVOKED, ca->label, cad_pre_cert, &w) !=
            KL_OK) {
        kl_warn("OCSP: listing the certificates of %s: %s", ca->label, kl_errmsg());
    }
    return w.deferred;
}

static void cad_pre_full_pass(cad_ocsp *o)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned long s0 = atomic_load(&o->signs);
    pthread_rwlock_wrlock(&o->lock);
    o->gen = o->gen + 1 ? o->gen + 1 : 1;
    uint32_t gen = o->gen;
    pthread_rwlock_unlock(&o->lock);
    cad_pre_cas(o);
    cad_pre_ca cas[CAD_OCSP_CAS];
    size_t ncas = cad_pre_cas_copy(o, cas);
    for (size_t i = 0; i < ncas && !o->stop; i++) {
        cad_pre_signer(o, &cas[i]);
        cad_pre_cas_note(o, &cas[i], CAD_PRE_SIGNER);
        cad_pre_walk_ca(o, &cas[i], 0, 0);
    }
    if (o->stop) {
        return;
    }
    /* answers of certificates no pass listed any more (expired, long revoked) go */
    pthread_rwlock_wrlock(&o->lock);
    if (o->cap && cad_pre_rehash(o, o->cap, gen) != 0) {
        kl_warn("OCSP: out of memory while dropping old answers");
    }
    size_t n = o->n;
    pthread_rwlock_unlock(&o->lock);
    clock_gettime(CLOCK_MONOTONIC, &b);
    unsigned long signed_now = atomic_load(&o->signs) - s0;
    if (signed_now) {
        kl_info("OCSP: %zu answers pre-produced for %zu CAs (%lu signed in %.1f s)", n, ncas,
                signed_now, (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    }
}

/* The CAs whose delegated signer changed: all their answers, signed again (pass thread). */
static void cad_pre_signers(cad_ocsp *o)
{
    cad_pre_ca cas[CAD_OCSP_CAS];
    size_t ncas = cad_pre_cas_copy(o, cas);
    for (size_t i = 0; i < ncas && !o->stop; i++) {
        if (cad_pre_signer(o, &cas[i])) {
            cad_pre_cas_note(o, &cas[i], CAD_PRE_SIGNER);
            kl_info("OCSP: the signer of %s changed; re-signing its answers", cas[i].label);
            cad_pre_walk_ca(o, &cas[i], 0, 1);
        }
    }
}

/* The answers of `ca` that do not say revoked: no longer served (the live path answers until
 * they are signed again). */
static void cad_pre_unserve(cad_ocsp *o, const cad_pre_ca *ca)
{
    pthread_rwlock_wrlock(&o->lock);
    for (size_t i = 0; i < o->cap; i++) {
        cad_pre *e = &o->tab[i];
        if (e->klen && e->status != V_OCSP_CERTSTATUS_REVOKED &&
            memcmp(e->key, ca->id, sizeof ca->id) == 0) {
            e->serve_until = 0;
        }
    }
    pthread_rwlock_unlock(&o->lock);
}

/* The sum of the revocation epochs of `ca` and the CAs above it: moves with any revocation
 * that may revoke one of their certificates. */
static kl_rc cad_pre_chain_epoch(cad_ocsp *o, const char *label, int64_t *sum)
{
    kl_rc rc = KL_OK;
    *sum = 0;
    for (int depth = 0; label; depth++) {
        const ca_entry *e = NULL;
        int64_t epoch = 0;
        ENSURE(depth < 16, KL_EINPUT, "CA chain of '%s' is too deep or loops", label);
        TRY(ca_entry_get(o->d->ca, label, 0, &e));
        TRY(store_revocation_epoch(ca_store(o->d->ca), label, &epoch));
        *sum += epoch;
        label = e->parent; /* cached entries live as long as the ctx */
    }
out:
    return rc;
}

/* The CA's chain: when a revocation was recorded in it, is the CA's certificate or one above
 * it revoked now? Then its answers that say good are no longer served, and all of them are
 * signed again (cad_pre_cert answers them revoked). Noted once walked whole (revocation
 * thread). */
static void cad_pre_chain(cad_ocsp *o, cad_pre_ca *ca)
{
    int64_t sum = 0;
    time_t rev = 0;
    if (cad_pre_chain_epoch(o, ca->label, &sum) != KL_OK || sum == ca->chain_epoch ||
        ca_ocsp_ca_revocation(o->d->ca, ca->label, &rev) != KL_OK) {
        ERR_clear_error();
        return;
    }
    if (rev != ca->ca_revoked) {
        ca->ca_revoked = rev;
        cad_pre_cas_note(o, ca, CAD_PRE_CHAIN); /* the pass thread's walks answer so too */
        if (rev) {
            cad_pre_unserve(o, ca);
            kl_info("OCSP: the certificate of %s or of a CA above it is revoked; its answers say "
                    "revoked (cACompromise) from now on",
                    ca->label);
        }
    }
    if (rev && cad_pre_walk_ca(o, ca, 0, 0) != 0) {
        return; /* some left for the next second: walked again at the next poll */
    }
    ca->chain_epoch = sum;
    cad_pre_cas_note(o, ca, CAD_PRE_CHAIN);
}

/* The CAs whose revocation epoch moved (or that are new here): their revoked certificates'
 * answers, now (revocation thread). */
static void cad_pre_revocations(cad_ocsp *o)
{
    cad_pre_ca cas[CAD_OCSP_CAS];
    size_t ncas = cad_pre_cas_copy(o, cas);
    for (size_t i = 0; i < ncas && !o->stop; i++) {
        cad_pre_chain(o, &cas[i]);
    }
    for (size_t i = 0; i < ncas && !o->stop; i++) {
        int64_t epoch = 0;
        if (store_revocation_epoch(ca_store(o->d->ca), cas[i].label, &epoch) != KL_OK ||
            epoch == cas[i].epoch) {
            continue;
        }
        if (cad_pre_walk_ca(o, &cas[i], 1, 0) == 0) { /* else walked again at the next poll */
            cas[i].epoch = epoch;
            cad_pre_cas_note(o, &cas[i], CAD_PRE_EPOCH);
        }
    }
}

/* Wait CAD_OCSP_POLL_MS or until kicked or stopped; 0 when stopped. */
static int cad_pre_wait(cad_ocsp *o)
{
    pthread_mutex_lock(&o->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += CAD_OCSP_POLL_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    if (!o->stop) {
        pthread_cond_timedwait(&o->cv, &o->mu, &ts);
    }
    int go = !o->stop;
    pthread_mutex_unlock(&o->mu);
    return go;
}

/* The revocation thread: epochs only, never behind a full pass. */
static void *cad_pre_rthread(void *arg)
{
    cad_ocsp *o = arg;
    do {
        cad_pre_revocations(o);
    } while (cad_pre_wait(o));
    return NULL;
}

/* The pass thread: full passes, and the answers of a CA whose signer changed. */
static void *cad_pre_thread(void *arg)
{
    cad_ocsp *o = arg;
    do {
        time_t now = time(NULL);
        /* due, or the clock was set back by more than a period: not a pass put off for that */
        if (now >= o->next_pass || o->next_pass - now > o->period) {
            o->next_pass = now + o->period;
            cad_pre_full_pass(o);
        } else {
            cad_pre_signers(o);
        }
    } while (cad_pre_wait(o));
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* interface                                                                                 */

kl_rc cad_ocsp_new(cad *d, cad_ocsp **out)
{
    kl_rc rc = KL_OK;
    long max = 0, validity = 0;
    *out = NULL;
    TRY(kl_conf_get_long(d->conf, "cad", "ocsp-preproduce", 65536, 0, 16777216, &max));
    TRY(kl_conf_get_long(d->conf, "cad", "ocsp-validity", 86400, 4, 7 * 86400, &validity));
    if (max == 0) {
        goto out; /* pre-production off: every answer takes the live path */
    }
    cad_ocsp *o = calloc(1, sizeof *o);
    ENSURE(o, KL_EINTERNAL, "out of memory");
    o->d = d;
    o->max = max;
    o->validity = validity;
    o->period = validity / 4 < 60 ? validity / 4 : 60;
    pthread_rwlock_init(&o->lock, NULL);
    pthread_mutex_init(&o->cas_mu, NULL);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    /* the list of CAs first, so that the revocation thread follows them from the start */
    cad_pre_cas(o);
    o->started = pthread_create(&o->thr, NULL, cad_pre_thread, o) == 0;
    o->rstarted = o->started && pthread_create(&o->rthr, NULL, cad_pre_rthread, o) == 0;
    if (!o->rstarted) {
        cad_ocsp_free(o);
        ENSURE(0, KL_EINTERNAL, "cannot start the OCSP pre-production threads");
    }
    *out = o;
out:
    return rc;
}

void cad_ocsp_free(cad_ocsp *o)
{
    if (!o) {
        return;
    }
    pthread_mutex_lock(&o->mu);
    o->stop = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (o->started) {
        pthread_join(o->thr, NULL);
    }
    if (o->rstarted) {
        pthread_join(o->rthr, NULL);
    }
    for (size_t i = 0; i < o->cap; i++) {
        OPENSSL_free(o->tab[i].der);
    }
    free(o->tab);
    pthread_rwlock_destroy(&o->lock);
    pthread_mutex_destroy(&o->cas_mu);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

size_t cad_ocsp_request_key(OCSP_REQUEST *req, uint8_t key[CAD_OCSP_REQUEST_KEY_MAX])
{
    if (!req || OCSP_request_onereq_count(req) != 1 || OCSP_REQUEST_get_ext_count(req) != 0) {
        return 0;
    }
    OCSP_ONEREQ *one = OCSP_request_onereq_get0(req, 0);
    ASN1_OCTET_STRING *nh = NULL, *kh = NULL;
    ASN1_OBJECT *md = NULL;
    ASN1_INTEGER *serial = NULL;
    if (!one || OCSP_ONEREQ_get_ext_count(one) != 0 ||
        !OCSP_id_get0_info(&nh, &md, &kh, &serial, OCSP_onereq_get0_id(one)) || !nh || !kh ||
        !serial || OBJ_obj2nid(md) != NID_sha1 || ASN1_STRING_length(nh) != 20 ||
        ASN1_STRING_length(kh) != 20 || serial->type != V_ASN1_INTEGER || serial->length < 1 ||
        serial->length > CAD_OCSP_KEY_MAX - 40) {
        return 0;
    }
    /* the pre-produced answer's CertID names SHA-1 with NULL parameters (OCSP_cert_id_new);
     * RFC 3370 2.1 lets a client leave them out (or OpenSSL take others): such a request is
     * answered live, its CertID echoed as sent, for a client that matches CertIDs byte for byte */
    static const uint8_t sha1_null[] = {0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
                                        0x03, 0x02, 0x1a, 0x05, 0x00};
    uint8_t cid[128], *cp = cid;
    int cl = i2d_OCSP_CERTID(OCSP_onereq_get0_id(one), NULL);
    if (cl < 2 + (int)sizeof sha1_null || cl > (int)sizeof cid ||
        i2d_OCSP_CERTID(OCSP_onereq_get0_id(one), &cp) != cl ||
        memcmp(cid + 2, sha1_null, sizeof sha1_null) != 0) {
        return 0;
    }
    memcpy(key, ASN1_STRING_get0_data(nh), 20);
    memcpy(key + 20, ASN1_STRING_get0_data(kh), 20);
    memcpy(key + 40, serial->data, (size_t)serial->length);
    return 40 + (size_t)serial->length;
}

int cad_ocsp_lookup(cad_ocsp *o, OCSP_REQUEST *req, kl_buf *out)
{
    uint8_t key[CAD_OCSP_KEY_MAX];
    size_t klen = o ? cad_ocsp_request_key(req, key) : 0;
    if (!klen) {
        return 0;
    }
    time_t now = time(NULL);
    int served = 0;
    pthread_rwlock_rdlock(&o->lock);
    if (o->cap) {
        const cad_pre *e = cad_pre_slot(o->tab, o->cap, key, klen);
        /* never an answer past its nextUpdate */
        served = e->klen && now < e->serve_until &&
                 cap_put_bytes(out, CAP_T_OCSP_RESP, e->der, e->len) == KL_OK;
    }
    pthread_rwlock_unlock(&o->lock);
    if (served) {
        atomic_fetch_add(&o->hits, 1);
    }
    return served;
}

void cad_ocsp_kick(cad_ocsp *o)
{
    if (o) {
        pthread_mutex_lock(&o->mu);
        pthread_cond_broadcast(&o->cv);
        pthread_mutex_unlock(&o->mu);
    }
}
