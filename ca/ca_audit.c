/* keyline: audit checkpoints. The audit chain's head signed with the audit key in the token
 * (docs/internals/store.md "Checkpoints", docs/ca.md "Audit verify").
 *
 * Why: a hash chain shows accidents, not an attacker: whoever can write the store file can
 * recompute it (and drop the SQLite triggers first). A signature made in the HSM by a key that
 * cannot leave it can only be made by a process holding the PIN: keyline-cad, or keyline-ca with
 * the token. So every signed (seq, hash) pins the chain up to that entry.
 *
 * Who signs: keyline-cad (every [cad] audit-checkpoint-every entries, on every CRL, at start
 * and at shutdown) and keyline-ca (before it closes a context that opened the token, and on
 * every CRL). Processes without the token never sign. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_internal.h"
#include "ceremony.h"
#include "kl_log.h"

#define CA_AUDIT_RETRY_S 10 /* after a failed checkpoint, keyline-cad waits this long */

struct ca_audit_state {
    pthread_mutex_t mu;         /* one checkpoint at a time in this process */
    atomic_llong every;         /* keyline-cad's rule; 0: none */
    atomic_llong covered;       /* the last checkpoint's entry this process knows */
    atomic_llong retry_at;      /* no automatic checkpoint before this time (after a failure) */
    atomic_llong max_age;       /* keyline-cad's rule: seconds an entry stays unsigned; 0: none */
    atomic_llong pending_since; /* when this process first saw the head past `covered` */
    int key_checked;            /* the token's audit key passed the protection check */
    int made_key;               /* this process generated the key and has not seen it recorded */
    ca_close_fn close_fn;
    void *close_arg;
};

/* The ctx's checkpoint state, made on first use (NULL when out of memory). */
static struct ca_audit_state *ca_audit_state(ca_ctx *ca)
{
    pthread_mutex_lock(&ca->mu);
    if (!ca->audit) {
        struct ca_audit_state *st = calloc(1, sizeof *st);
        if (st) {
            pthread_mutex_init(&st->mu, NULL);
            atomic_init(&st->every, 0);
            atomic_init(&st->covered, 0);
            atomic_init(&st->retry_at, 0);
            atomic_init(&st->max_age, 0);
            atomic_init(&st->pending_since, 0);
            ca->audit = st;
        }
    }
    struct ca_audit_state *st = ca->audit;
    pthread_mutex_unlock(&ca->mu);
    return st;
}

void ca_close_hook_set(ca_ctx *ca, ca_close_fn fn, void *arg)
{
    struct ca_audit_state *st = ca_audit_state(ca);
    if (st) {
        st->close_fn = fn;
        st->close_arg = arg;
    }
}

void ca_audit_close(ca_ctx *ca)
{
    struct ca_audit_state *st = ca->audit;
    if (!st) {
        return;
    }
    if (st->close_fn) {
        ca_close_fn fn = st->close_fn;
        st->close_fn = NULL;
        fn(ca, st->close_arg);
    }
    pthread_mutex_destroy(&st->mu);
    free(st);
    ca->audit = NULL;
}

/* ---- the signer the store calls inside its write transaction ---- */

typedef struct {
    ca_ctx *ca;
    struct ca_audit_state *st;
    unsigned flags;
} ca_audit_signer_arg;

static kl_rc ca_audit_spki(EVP_PKEY *pub, uint8_t **spki, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pub, &der);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot encode the audit key's public half");
    }
    *spki = malloc((size_t)n);
    if (!*spki) {
        OPENSSL_free(der);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    memcpy(*spki, der, (size_t)n);
    *len = (size_t)n;
    OPENSSL_free(der);
    return KL_OK;
}

static kl_rc ca_audit_key_new(void *arg, char **label, uint8_t **spki, size_t *spki_len)
{
    ca_audit_signer_arg *a = arg;
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL;
    /* Made like a CA key: in the token, sensitive, never extractable, not modifiable. */
    rc = hsm_key_generate(a->ca->hsm, CA_AUDIT_KEY_LABEL, HSM_KEY_EC_P256, &pub);
    if (rc == KL_OK) {
        a->st->made_key = 1;
        kl_info("audit key '%s' made in token '%s' (EC P-256)", CA_AUDIT_KEY_LABEL,
                hsm_token_label(a->ca->hsm));
    } else if (rc == KL_EEXIST && (a->st->made_key || (a->flags & CA_AUDIT_ADOPT_KEY))) {
        /* ours from an attempt whose transaction failed, or adopted on the officer's word */
        rc = hsm_key_public(a->ca->hsm, CA_AUDIT_KEY_LABEL, &pub);
    } else if (rc == KL_EEXIST) {
        /* Never adopted silently: that is also what a store looks like whose checkpoints and
         * key record were deleted after its chain was rewritten. */
        rc = kl_fail(KL_EPOLICY,
                     "the token already holds a key labelled '%s' but the store records no audit "
                     "key: its checkpoints and key record were deleted (run keyline-ca audit "
                     "verify), or this store is new on a token used before (then run keyline-ca "
                     "audit checkpoint --adopt-key)",
                     CA_AUDIT_KEY_LABEL);
    }
    TRY(rc);
    TRY(ca_audit_spki(pub, spki, spki_len));
    *label = strdup(CA_AUDIT_KEY_LABEL);
    ENSURE(*label, KL_EINTERNAL, "out of memory");
out:
    EVP_PKEY_free(pub);
    return rc;
}

static kl_rc ca_audit_sign(void *arg, const char *label, const uint8_t *tbs, size_t tbs_len,
                           uint8_t **sig, size_t *sig_len)
{
    ca_audit_signer_arg *a = arg;
    kl_rc rc = KL_OK;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = NULL;
    size_t n = 0;
    /* The label comes from the store: never let it pick another key of the token (a CA's). */
    ENSURE(strcmp(label, CA_AUDIT_KEY_LABEL) == 0, KL_EPOLICY,
           "the store names audit key '%.64s', not '%s' (key record edited); refusing to sign",
           label, CA_AUDIT_KEY_LABEL);
    if (!a->st->key_checked) {
        unsigned prot = 0;
        TRY(hsm_key_protection(a->ca->hsm, label, &prot));
        ENSURE(!(prot & HSM_PROT_EXTRACTABLE) && (prot & HSM_PROT_SENSITIVE) &&
                   (prot & HSM_PROT_NEVER_EXTRACTABLE),
               KL_EPOLICY,
               "audit key '%s' on the token is extractable or not sensitive: refusing to sign "
               "with it",
               label);
        a->st->key_checked = 1;
    }
    TRY(hsm_key_load(a->ca->hsm, label, &key));
    md = EVP_MD_CTX_new();
    ENSURE_SSL(md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
                   EVP_DigestSign(md, NULL, &n, tbs, tbs_len) == 1 && n > 0,
               KL_EHSM, "audit key '%s': cannot sign", label);
    *sig = malloc(n);
    ENSURE(*sig, KL_EINTERNAL, "out of memory");
    if (EVP_DigestSign(md, *sig, &n, tbs, tbs_len) != 1) {
        free(*sig);
        *sig = NULL;
        ENSURE_SSL(0, KL_EHSM, "audit key '%s': signing the audit checkpoint in the HSM failed",
                   label);
    }
    *sig_len = n;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return rc;
}

/* With st->mu held. */
static kl_rc ca_audit_checkpoint_locked(ca_ctx *ca, struct ca_audit_state *st, unsigned flags,
                                        ca_audit_cp *out)
{
    kl_rc rc = KL_OK;
    store_audit_checkpoint cp;
    store_ca rec;
    int made = 0;
    memset(&cp, 0, sizeof cp);
    memset(&rec, 0, sizeof rec);
    ca_audit_signer_arg arg = {ca, st, flags};
    store_audit_signer sg = {ca_audit_key_new, ca_audit_sign, &arg};

    /* the audit key's label is not a CA's (a CA created under it before the key existed) */
    rc = store_ca_get(ca->st, CA_AUDIT_KEY_LABEL, &rec);
    store_ca_free(&rec);
    ENSURE(rc == KL_ENOTFOUND, rc == KL_OK ? KL_EPOLICY : rc, "%s",
           rc == KL_OK ? "a CA is labelled '" CA_AUDIT_KEY_LABEL "', the audit key's label: "
                         "refusing to sign the audit log with a CA key"
                       : kl_errmsg());
    rc = store_audit_checkpoint_make(ca->st, &sg, &cp, &made);
    if (rc != KL_OK && st->made_key) {
        /* The key made for a first checkpoint whose transaction failed: if the store does not
         * record it, it is removed, so that the next attempt makes a fresh one. */
        char saved[1024];
        char *label = NULL;
        uint8_t *spki = NULL;
        size_t n = 0;
        snprintf(saved, sizeof saved, "%s", kl_errmsg());
        if (store_audit_key_get(ca->st, &label, &spki, &n) == KL_ENOTFOUND &&
            hsm_key_destroy(ca->hsm, CA_AUDIT_KEY_LABEL) == KL_OK) {
            st->made_key = 0;
        }
        free(label);
        free(spki);
        (void)kl_fail(rc, "%s", saved);
    }
    TRY(rc);
    st->made_key = 0;
    if (cp.seq > atomic_load(&st->covered)) {
        atomic_store(&st->covered, cp.seq);
    }
    if (made) {
        kl_debug("audit checkpoint at entry %lld %s", (long long)cp.seq, cp.hash);
    }
    if (out) {
        out->seq = cp.seq;
        memcpy(out->hash, cp.hash, sizeof out->hash);
        out->ts = cp.ts;
        out->made = made;
    }
out:
    store_audit_checkpoint_free(&cp);
    return rc;
}

kl_rc ca_audit_checkpoint_ex(ca_ctx *ca, unsigned flags, ca_audit_cp *out)
{
    if (out) {
        memset(out, 0, sizeof *out);
    }
    if (!ca->hsm) {
        return kl_fail(KL_EUSAGE, "signing the audit log needs the token (keyline-cad, or "
                                  "keyline-ca with the PIN)");
    }
    struct ca_audit_state *st = ca_audit_state(ca);
    if (!st) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    pthread_mutex_lock(&st->mu);
    kl_rc rc = ca_audit_checkpoint_locked(ca, st, flags, out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

kl_rc ca_audit_checkpoint(ca_ctx *ca, ca_audit_cp *out)
{
    return ca_audit_checkpoint_ex(ca, 0, out);
}

void ca_audit_checkpoint_every(ca_ctx *ca, int64_t every, int64_t max_age)
{
    struct ca_audit_state *st = ca_audit_state(ca);
    if (st) {
        atomic_store(&st->every, every > 0 ? every : 0);
        atomic_store(&st->max_age, max_age > 0 ? max_age : 0);
    }
}

/* Due: `every` entries past the last checkpoint, or an entry unsigned for `max_age` seconds
 * (as this process saw it: from the first call that found the head past the checkpoint). */
static int ca_audit_due(struct ca_audit_state *st, int64_t pending, int64_t now)
{
    if (pending <= 0) {
        atomic_store(&st->pending_since, 0);
        return 0;
    }
    int64_t since = atomic_load(&st->pending_since);
    if (since == 0) {
        atomic_store(&st->pending_since, now);
        since = now;
    }
    int64_t age = atomic_load(&st->max_age);
    return pending >= atomic_load(&st->every) || (age > 0 && now - since >= age);
}

void ca_audit_checkpoint_due(ca_ctx *ca)
{
    struct ca_audit_state *st = ca->audit;
    int64_t head = 0, now = (int64_t)time(NULL);
    char hash[65];
    if (!st || atomic_load(&st->every) <= 0 || !ca->hsm) {
        return;
    }
    if (store_audit_head(ca->st, &head, hash) != KL_OK ||
        !ca_audit_due(st, head - atomic_load(&st->covered), now) ||
        now < atomic_load(&st->retry_at)) {
        return;
    }
    if (pthread_mutex_trylock(&st->mu) != 0) {
        return; /* another thread is signing right now */
    }
    ca_audit_cp cp;
    if (ca_audit_checkpoint_locked(ca, st, 0, &cp) != KL_OK) {
        atomic_store(&st->retry_at, (int64_t)time(NULL) + CA_AUDIT_RETRY_S);
        kl_error("audit checkpoint failed (%lld entries unsigned; retrying in %d s): %s",
                 (long long)(head - atomic_load(&st->covered)), CA_AUDIT_RETRY_S, kl_errmsg());
    } else if (cp.made) {
        /* one line per checkpoint in the service's log (journald, a log host): a copy of the
         * signed heads outside the store, which is what shows a log cut back to an earlier one */
        kl_info("audit checkpoint at entry %lld %s", (long long)cp.seq, cp.hash);
    }
    pthread_mutex_unlock(&st->mu);
}

void ca_audit_checkpoint_try(ca_ctx *ca, const char *why)
{
    ca_audit_cp cp;
    if (!ca->hsm) {
        return; /* a process without the token never signs the audit log */
    }
    if (ca_audit_checkpoint(ca, &cp) != KL_OK) {
        kl_error("audit checkpoint after %s failed: %s", why, kl_errmsg());
    }
}

/* ---- verify ---- */

/* The token's audit key against the recorded one, without the PIN: public objects are readable
 * without a login. *compared 1 when the token could be asked; KL_EPOLICY when they differ. */
static kl_rc ca_audit_token_check(ca_ctx *ca, const store_audit_report *r, int *compared,
                                  char *note, size_t notesz)
{
    kl_rc rc = KL_OK;
    const char *module = NULL, *token = NULL;
    hsm_ctx *h = ca->hsm;
    hsm_ctx *own = NULL;
    EVP_PKEY *pub = NULL;
    char *label = NULL;
    uint8_t *spki = NULL, *tok = NULL;
    size_t spki_len = 0, tok_len = 0;
    *compared = 0;
    if (!h) {
        rc = ca_hsm_params(ca->conf, &module, &token);
        if (rc == KL_OK) {
            rc = hsm_open(&own, module, token, NULL);
        }
        if (rc != KL_OK) {
            snprintf(note, notesz, "the token cannot be opened: %s", kl_errmsg());
            return KL_OK;
        }
        h = own;
    }
    rc = hsm_key_public(h, r->has_key ? r->key_label : CA_AUDIT_KEY_LABEL, &pub);
    if (rc == KL_ENOTFOUND) {
        *compared = 1;
        ENSURE(!r->has_key, KL_EPOLICY,
               "the store records audit key '%s', but token '%s' holds no such key (another "
               "token, or key record and checkpoints replaced)",
               r->key_label, hsm_token_label(h));
        rc = KL_OK; /* neither has one */
        goto out;
    }
    if (rc != KL_OK) {
        snprintf(note, notesz, "the token's audit key cannot be read: %s", kl_errmsg());
        rc = KL_OK;
        goto out;
    }
    *compared = 1;
    ENSURE(r->has_key, KL_EPOLICY,
           "token '%s' holds the audit key '%s', but the store records none: its checkpoints "
           "and key record were deleted",
           hsm_token_label(h), CA_AUDIT_KEY_LABEL);
    TRY(store_audit_key_get(ca->st, &label, &spki, &spki_len));
    TRY(ca_audit_spki(pub, &tok, &tok_len));
    ENSURE(tok_len == spki_len && CRYPTO_memcmp(tok, spki, tok_len) == 0, KL_EPOLICY,
           "the audit key recorded in the store is not the key '%s' of token '%s': the key "
           "record and the checkpoints were replaced",
           r->key_label, hsm_token_label(h));
out:
    EVP_PKEY_free(pub);
    free(label);
    free(spki);
    free(tok);
    hsm_close(own);
    return rc;
}

kl_rc ca_audit_verify(ca_ctx *ca, int token, ca_audit_verdict *out)
{
    kl_rc rc = KL_OK;
    memset(out, 0, sizeof *out);
    TRY(store_audit_verify_report(ca->st, &out->r));
    /* The first checkpoint signs the head, and so every entry before it (a store upgraded from
     * before checkpoints is covered once one has been made). Entries and no checkpoint at all
     * is what deleting the checkpoints and the key record looks like. */
    ENSURE(out->r.entries == 0 || out->r.checkpoints > 0, KL_EPOLICY,
           "the audit log has %lld entries but no signed checkpoint: the checkpoints and the "
           "audit key record were deleted, or no process with the token has run since the "
           "upgrade to checkpoints (then: keyline-ca audit checkpoint)",
           (long long)out->r.entries);
    if (token >= 0) {
        TRY(ca_audit_token_check(ca, &out->r, &out->token_compared, out->note, sizeof out->note));
        ENSURE(out->token_compared || token == 0, KL_EHSM,
               "audit key not compared with the token: %s", out->note);
    } else {
        snprintf(out->note, sizeof out->note, "not asked (--no-token)");
    }
    TRY(ceremony_officers_audit_check(ca->st, &out->officers));
out:
    return rc;
}
