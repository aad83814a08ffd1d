/* keyline: CA context, caches and the one issuance pipeline (ca_issue). */
#include <ctype.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_internal.h"
#include "ca_image.h"
#include "ca_backend.h"
#include "kl_log.h"
#include "kl_secret.h"

#ifndef KEYLINE_DEFAULT_TEMPLATES
#define KEYLINE_DEFAULT_TEMPLATES "/usr/share/keyline/templates"
#endif

#define CA_CSR_HARD_MAX (64 * 1024)
#define CA_SERIAL_BYTES 16
#define CA_SERIAL_TRIES 8

kl_rc ca_hsm_params(const kl_conf *conf, const char **module, const char **token)
{
    *module = kl_conf_get(conf, "hsm", "module");
    *token = kl_conf_get(conf, "hsm", "token");
    if (!*module || !**module) {
        return kl_fail(KL_EUSAGE, "%s: [hsm] module is not set", kl_conf_file(conf));
    }
    if (!*token || !**token) {
        return kl_fail(KL_EUSAGE, "%s: [hsm] token is not set", kl_conf_file(conf));
    }
    /* SoftHSM finds its token directory through SOFTHSM2_CONF; letting keyline.conf name
     * it keeps a state folder self-contained (scripts/demo). */
    char *shc = kl_conf_path(conf, "hsm", "softhsm2-conf");
    if (shc) {
        setenv("SOFTHSM2_CONF", shc, 1);
        free(shc);
    }
    return KL_OK;
}

char *ca_templates_dir(const kl_conf *conf)
{
    char *dir = kl_conf_path(conf, "ca", "templates");
    return dir ? dir : strdup(KEYLINE_DEFAULT_TEMPLATES);
}

/* with_hsm: open the token and log in with the configured PIN. */
static kl_rc ca_open_common(ca_ctx **out, const kl_conf *conf, int with_hsm)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = calloc(1, sizeof *ca);
    char *store_path = NULL;
    kl_secret pin;
    memset(&pin, 0, sizeof pin);
    *out = NULL;
    ENSURE(ca, KL_EINTERNAL, "out of memory");
    pthread_mutex_init(&ca->mu, NULL);
    pthread_mutex_init(&ca->tok_mu, NULL);
    pthread_mutex_init(&ca->subj_mu, NULL);
    ca->conf = conf;

    TRY(store_conf_dsn(conf, &store_path));
    TRY(store_open(&ca->st, store_path));

    ca->tpl_dir = ca_templates_dir(conf);
    ENSURE(ca->tpl_dir, KL_EINTERNAL, "out of memory");
    const char *v;
    /* A failed copy must not silently drop the CRL/OCSP pointers from issued certificates. */
    if ((v = kl_conf_get(conf, "ca", "crl-url")) && *v) {
        ENSURE((ca->crl_url = strdup(v)), KL_EINTERNAL, "out of memory");
    }
    if ((v = kl_conf_get(conf, "ca", "ocsp-url")) && *v) {
        ENSURE((ca->ocsp_url = strdup(v)), KL_EINTERNAL, "out of memory");
    }
    if ((v = kl_conf_get(conf, "ca", "ca-issuers-url")) && *v) {
        ENSURE((ca->ca_issuers_url = strdup(v)), KL_EINTERNAL, "out of memory");
    }
    TRY(kl_conf_get_long(conf, "ca", "crl-days", 7, 1, 3650, &ca->crl_days));
    TRY(ca_crlpart_conf_check(ca));

    if (with_hsm) {
        const char *module, *token;
        TRY(ca_hsm_params(conf, &module, &token));
        TRY(kl_secret_read(&pin, kl_conf_get(conf, "hsm", "pin"), kl_conf_dir(conf), "token PIN"));
        TRY(hsm_open(&ca->hsm, module, token, pin.value));
    }
    *out = ca;
    ca = NULL;
out:
    kl_secret_free(&pin);
    free(store_path);
    ca_close(ca);
    return rc;
}

kl_rc ca_open(ca_ctx **out, const kl_conf *conf)
{
    return ca_open_common(out, conf, 1);
}

kl_rc ca_open_nohsm(ca_ctx **out, const kl_conf *conf)
{
    return ca_open_common(out, conf, 0);
}

void ca_close(ca_ctx *ca)
{
    if (!ca) {
        return;
    }
    ca_audit_close(ca); /* may sign the audit head: needs the store and the token */
    for (size_t i = 0; i < ca->ncas; i++) {
        free(ca->cas[i].label);
        free(ca->cas[i].parent);
        X509_free(ca->cas[i].cert);
        EVP_PKEY_free(ca->cas[i].key);
    }
    for (size_t i = 0; i < ca->ntpls; i++) {
        tpl_free(ca->tpls[i]);
    }
    for (size_t i = 0; i < ca->ntoks; i++) {
        free(ca->toks[i].label);
        hsm_close(ca->toks[i].h);
    }
    pthread_mutex_destroy(&ca->tok_mu);
    ca_subject_cache_free(ca);
    sk_X509_pop_free(ca->retired, X509_free);
    for (size_t i = 0; i < ca->ndropped; i++) {
        EVP_PKEY_free(ca->dropped_keys[i]);
    }
    if (ca->st) {
        store_close(ca->st);
    }
    if (ca->hsm) {
        hsm_close(ca->hsm);
    }
    free(ca->tpl_dir);
    free(ca->crl_url);
    free(ca->ocsp_url);
    free(ca->ca_issuers_url);
    pthread_mutex_destroy(&ca->mu);
    free(ca);
}

/* With tok_mu held: open `uri` for CA `label` and keep it. The PIN comes from `pin_spec`
 * (a kl_secret source), else the URI's pin-source (RFC 7512 2.4: a file), else the terminal. */
static kl_rc ca_token_add(ca_ctx *ca, const char *label, const char *module, const char *uri,
                          const char *pin_spec)
{
    kl_rc rc = KL_OK;
    kl_secret pin;
    hsm_uri u;
    char *spec = NULL;
    hsm_ctx *h = NULL;
    memset(&pin, 0, sizeof pin);
    memset(&u, 0, sizeof u);
    ENSURE(ca->ntoks < CA_TOKENS_MAX, KL_EUSAGE, "more than %d CA tokens in one process",
           CA_TOKENS_MAX);
    TRY(hsm_uri_parse(uri, &u));
    if (!pin_spec && u.pin_source) {
        ENSURE(asprintf(&spec, "file:%s", u.pin_source) > 0, KL_EINTERNAL, "out of memory");
    }
    TRY(kl_secret_read(&pin,
                       pin_spec ? pin_spec
                       : spec   ? spec
                                : "prompt",
                       kl_conf_dir(ca->conf), "PIN of the token of CA"));
    rc = hsm_open(&h, module, uri, pin.value);
    if (rc != KL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        rc = kl_fail(rc, "CA '%s' lives on a token of its own (%s): %s", label, uri, why);
        goto out;
    }
    ca->toks[ca->ntoks].label = strdup(label);
    ENSURE(ca->toks[ca->ntoks].label, KL_EINTERNAL, "out of memory");
    ca->toks[ca->ntoks++].h = h;
    h = NULL;
out:
    hsm_close(h);
    kl_secret_free(&pin);
    hsm_uri_free(&u);
    free(spec);
    return rc;
}

static hsm_ctx *ca_token_find(ca_ctx *ca, const char *label)
{
    for (size_t i = 0; i < ca->ntoks; i++) {
        if (strcmp(ca->toks[i].label, label) == 0) {
            return ca->toks[i].h;
        }
    }
    return NULL;
}

kl_rc ca_hsm_of(ca_ctx *ca, const char *label, hsm_ctx **out)
{
    kl_rc rc = KL_OK;
    char sect[KL_CONF_NAME_MAX + 8];
    snprintf(sect, sizeof sect, "hsm %s", label);
    pthread_mutex_lock(&ca->tok_mu);
    *out = ca_token_find(ca, label);
    const char *uri = kl_conf_get(ca->conf, sect, "token");
    if (!*out && uri && *uri) {
        const char *module = kl_conf_get(ca->conf, sect, "module");
        const char *pin = kl_conf_get(ca->conf, sect, "pin");
        const char *dmod = NULL, *dtok = NULL;
        if (!module && ca_hsm_params(ca->conf, &dmod, &dtok) == KL_OK) {
            module = dmod;
        }
        ENSURE(module, KL_EUSAGE, "%s: [%s] needs a module (or [hsm] module)",
               kl_conf_file(ca->conf), sect);
        ENSURE(pin && *pin, KL_EUSAGE, "%s: [%s] pin is not set", kl_conf_file(ca->conf), sect);
        TRY(ca_token_add(ca, label, module, uri, pin));
        *out = ca->toks[ca->ntoks - 1].h;
    }
    if (!*out) {
        *out = ca->hsm;
    }
    ENSURE(*out, KL_EUSAGE, "signing with CA '%s' needs the token", label);
out:
    pthread_mutex_unlock(&ca->tok_mu);
    return rc;
}

kl_rc ca_token_open(ca_ctx *ca, const char *label, const char *uri)
{
    kl_rc rc = KL_OK;
    char sect[KL_CONF_NAME_MAX + 8];
    const char *module = NULL, *dtok = NULL;
    snprintf(sect, sizeof sect, "hsm %s", label);
    pthread_mutex_lock(&ca->tok_mu);
    ENSURE(!ca_token_find(ca, label), KL_EEXIST, "CA '%s': its token is open already", label);
    const char *conf_uri = kl_conf_get(ca->conf, sect, "token");
    ENSURE(!conf_uri || strcmp(conf_uri, uri) == 0, KL_EUSAGE,
           "--token %s: keyline.conf names another token for CA '%s' ([%s] token = %s)", uri, label,
           sect, conf_uri);
    module = kl_conf_get(ca->conf, sect, "module");
    if (!module) {
        TRY(ca_hsm_params(ca->conf, &module, &dtok));
    }
    TRY(ca_token_add(ca, label, module, uri, kl_conf_get(ca->conf, sect, "pin")));
out:
    pthread_mutex_unlock(&ca->tok_mu);
    return rc;
}

store *ca_store(ca_ctx *ca)
{
    return ca->st;
}

hsm_ctx *ca_hsm(ca_ctx *ca)
{
    return ca->hsm;
}

const kl_conf *ca_conf(ca_ctx *ca)
{
    return ca->conf;
}

const EVP_MD *ca_sign_md(const EVP_PKEY *key)
{
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519) {
        return NULL; /* RFC 8410 3: Ed25519 signs the whole message (PureEdDSA), no digest */
    }
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256) {
        return EVP_sha384();
    }
    return EVP_sha256();
}

X509 *ca_der_to_x509(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x && p != der + len) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

/* With ca->mu held: *x becomes e's certificate (then *x = NULL); the old one is retired. A
 * certificate of another key (a delegated OCSP signer given a new key under its label) puts the
 * cached key out of use: the next ca_entry_get that wants it finds the token's key again. */
static void ca_entry_swap_cert(ca_ctx *ca, ca_entry *e, X509 **x)
{
    int same_key = EVP_PKEY_eq(X509_get0_pubkey(e->cert), X509_get0_pubkey(*x)) == 1;
    ERR_clear_error();
    if ((ca->retired || (ca->retired = sk_X509_new_null())) && sk_X509_push(ca->retired, e->cert)) {
        e->cert = *x;
        *x = NULL;
    } else {
        return;
    }
    hsm_ctx *h = NULL;
    if (!same_key && ca_hsm_of(ca, e->label, &h) == KL_OK) {
        hsm_key_forget(h, e->label);
    }
    ERR_clear_error();
    if (!same_key && e->key) {
        /* other threads may sign with it still: kept until the context closes (or, past that
         * many, never freed) */
        if (ca->ndropped < CA_DROPPED_KEYS_MAX) {
            ca->dropped_keys[ca->ndropped++] = e->key;
        }
        e->key = NULL;
    }
}

/* With ca->mu held: the store's certificate of `label` when it is another than e's (renewed or
 * given a new key by another process). */
static void ca_entry_reread_locked(ca_ctx *ca, ca_entry *e, const char *label)
{
    store_ca now_rec;
    memset(&now_rec, 0, sizeof now_rec);
    if (store_ca_get(ca->st, label, &now_rec) == KL_OK) {
        X509 *x = ca_der_to_x509(now_rec.der, now_rec.der_len);
        if (x && X509_cmp(x, e->cert) != 0) {
            ca_entry_swap_cert(ca, e, &x);
        }
        X509_free(x);
    }
    ERR_clear_error();
    store_ca_free(&now_rec);
}

void ca_entry_reread(ca_ctx *ca, const char *label)
{
    pthread_mutex_lock(&ca->mu);
    for (size_t i = 0; i < ca->ncas; i++) {
        if (strcmp(ca->cas[i].label, label) == 0) {
            ca_entry_reread_locked(ca, &ca->cas[i], label);
            break;
        }
    }
    pthread_mutex_unlock(&ca->mu);
}

/* Whether CA `label`'s key may be used at all, from its store record (`rec`, or read when
 * NULL): a retired CA's key is destroyed and it signs nothing more (issue, CRL, OCSP); an
 * external CA's and a rollover certificate's key is not keyline's. */
kl_rc ca_key_usable(ca_ctx *ca, const char *label, const store_ca *rec)
{
    store_ca own;
    memset(&own, 0, sizeof own);
    kl_rc rc = rec ? KL_OK : store_ca_get(ca->st, label, &own);
    const char *st = rc != KL_OK ? NULL : rec ? rec->status : own.status;
    if (st && strcmp(st, CA_ST_RETIRED) == 0) {
        rc = kl_fail(KL_EPOLICY,
                     "CA '%s' is retired: its key was destroyed and nothing more is signed with "
                     "it (its final CRL stands; OCSP is answered by its delegated signer)",
                     label);
    } else if (st && strcmp(st, CA_ST_EXTERNAL) == 0) {
        rc = kl_fail(KL_EPOLICY,
                     "CA '%s' is an external CA (ca import): keyline holds no key of it", label);
    } else if (st && strcmp(st, CA_ST_ROLLOVER) == 0) {
        rc = kl_fail(KL_EPOLICY, "'%s' is a rollover certificate: it has no key of its own", label);
    }
    store_ca_free(&own);
    return rc;
}

/* A CA key must be sensitive and never extractable: one that is not (imported, or replaced on
 * the token by someone with the PIN) is refused before anything is signed with it. Keys keyline
 * made before CKA_MODIFIABLE false are still used, with a warning. */
static kl_rc ca_key_hygiene(hsm_ctx *h, const char *label)
{
    unsigned prot = 0;
    kl_rc rc = hsm_key_protection(h, label, &prot);
    if (rc != KL_OK) {
        return rc;
    }
    if ((prot & HSM_PROT_EXTRACTABLE) || !(prot & HSM_PROT_SENSITIVE) ||
        !(prot & HSM_PROT_NEVER_EXTRACTABLE)) {
        return kl_fail(KL_EPOLICY,
                       "CA key '%s' on the token is %s: a CA key must be made in the token, "
                       "sensitive and never extractable; refusing to sign with it",
                       label,
                       (prot & HSM_PROT_EXTRACTABLE)  ? "extractable"
                       : !(prot & HSM_PROT_SENSITIVE) ? "not sensitive"
                                                      : "one that was once extractable");
    }
    if (prot & HSM_PROT_MODIFIABLE) {
        kl_warn("CA key '%s' is modifiable (made before keyline set CKA_MODIFIABLE false): "
                "consider rotating it (keyline-ca ca rotate)",
                label);
    }
    return KL_OK;
}

/* Signing with `label`'s cached key failed in the token: the next ca_entry_get finds the key
 * again (a fresh object handle), so service resumes by itself when the token is back. */
static void ca_key_failed(ca_ctx *ca, const char *label)
{
    pthread_mutex_lock(&ca->mu);
    for (size_t i = 0; i < ca->ncas; i++) {
        if (strcmp(ca->cas[i].label, label) == 0) {
            ca->cas[i].key_stale = 1;
        }
    }
    pthread_mutex_unlock(&ca->mu);
}

kl_rc ca_entry_get(ca_ctx *ca, const char *label, int want_key, const ca_entry **out)
{
    kl_rc rc = KL_OK;
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    pthread_mutex_lock(&ca->mu);
    ca_entry *e = NULL;
    for (size_t i = 0; i < ca->ncas; i++) {
        if (strcmp(ca->cas[i].label, label) == 0) {
            e = &ca->cas[i];
            break;
        }
    }
    if (!e) {
        ENSURE(ca->ncas < CA_CACHE_MAX, KL_EINTERNAL, "too many CAs in one process");
        rc = store_ca_get(ca->st, label, &rec);
        if (rc == KL_ENOTFOUND) {
            rc = kl_fail(KL_ENOTFOUND, "no CA labelled '%s' (see keyline-ca ca list)", label);
        }
        TRY(rc);
        X509 *x = ca_der_to_x509(rec.der, rec.der_len);
        ENSURE(x, KL_EINPUT, "CA '%s': stored certificate does not parse", label);
        e = &ca->cas[ca->ncas];
        e->label = strdup(label);
        e->parent = rec.parent && *rec.parent ? strdup(rec.parent) : NULL;
        e->key = NULL;
        if (!e->label || (rec.parent && *rec.parent && !e->parent)) {
            X509_free(x);
            free(e->label);
            free(e->parent);
            memset(e, 0, sizeof *e);
            ENSURE(0, KL_EINTERNAL, "out of memory");
        }
        e->cert = x;
        ca->ncas++;
    }
    if (ca_is_ocsp_signer_label(label) && ca_cert_past_half(e->cert, time(NULL))) {
        /* a delegated OCSP signer near its end: another process (keyline-ca crl, another
         * server) may have renewed it in the store */
        ca_entry_reread_locked(ca, e, label);
    }
    if (want_key && e->key && e->key_stale && ca->ndropped < CA_DROPPED_KEYS_MAX) {
        /* the token failed while signing with this handle (a token removed and put back, a
         * session or object handle gone): find the key again instead of failing for good */
        ca->dropped_keys[ca->ndropped++] = e->key;
        e->key = NULL; /* key_stale stays set until the key is found again */
    }
    if (want_key && !e->key) {
        hsm_ctx *h = NULL;
        TRY(ca_key_usable(ca, label, rec.status ? &rec : NULL));
        TRY(ca_hsm_of(ca, label, &h));
        rc = ca_key_hygiene(h, label);
        if (rc == KL_ENOTFOUND && h == ca->hsm) {
            char why[512];
            snprintf(why, sizeof why, "%s", kl_errmsg());
            rc = kl_fail(rc, "%s (a CA on a token of its own is named in [hsm %s] of %s)", why,
                         label, kl_conf_file(ca->conf));
        }
        rc = rc != KL_OK ? rc : hsm_key_load(h, label, &e->key);
        if (rc == KL_ENOTFOUND && e->key_stale) {
            /* this key signed here before: gone now is the token's failure (removed, replaced,
             * unreadable; EST 503, exit 5), not an unknown name */
            rc = kl_wrap(KL_EHSM, "CA '%s': its key was in the token and is not now", label);
        }
        TRY(rc);
        e->key_stale = 0;
    }
    *out = e;
out:
    pthread_mutex_unlock(&ca->mu);
    store_ca_free(&rec);
    return rc;
}

kl_rc ca_tpl_get(ca_ctx *ca, const char *name, const tpl **out)
{
    kl_rc rc = KL_OK;
    pthread_mutex_lock(&ca->mu);
    for (size_t i = 0; i < ca->ntpls; i++) {
        if (strcmp(ca->tpls[i]->name, name) == 0) {
            *out = ca->tpls[i];
            goto out;
        }
    }
    ENSURE(ca->ntpls < CA_CACHE_MAX, KL_EINTERNAL, "too many templates in one process");
    tpl *t = NULL;
    TRY(tpl_load(ca->tpl_dir, name, &t));
    ca->tpls[ca->ntpls++] = t;
    *out = t;
out:
    pthread_mutex_unlock(&ca->mu);
    return rc;
}

kl_rc ca_serial_normalise(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    if (in[0] == '0' && (in[1] == 'x' || in[1] == 'X')) {
        in += 2;
    }
    for (; *in; in++) {
        if (*in == ':' || *in == ' ') {
            continue;
        }
        if (!isxdigit((unsigned char)*in)) {
            return kl_fail(KL_EUSAGE, "serial must be hexadecimal (like 4F3A...)");
        }
        if (n == 0 && *in == '0') {
            continue; /* BN_bn2hex has no leading zeros */
        }
        if (n + 1 >= outlen) {
            return kl_fail(KL_EUSAGE, "serial too long (at most 20 octets)");
        }
        out[n++] = (char)toupper((unsigned char)*in);
    }
    if (n == 0) {
        return kl_fail(KL_EUSAGE, "serial must be a non-zero hexadecimal number");
    }
    out[n] = 0;
    return KL_OK;
}

kl_rc ca_csr_to_der(const uint8_t *in, size_t len, uint8_t **der, size_t *der_len)
{
    *der = NULL;
    *der_len = 0;
    X509_REQ *req = NULL;
    if (len > CA_CSR_HARD_MAX) {
        return kl_fail(KL_EINPUT, "CSR larger than %d bytes", CA_CSR_HARD_MAX);
    }
    if (len >= 10 && memmem(in, len, "-----BEGIN", 10)) {
        BIO *b = BIO_new_mem_buf(in, (int)len);
        req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        const unsigned char *p = in;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (req && p != in + len) {
            X509_REQ_free(req);
            req = NULL;
        }
    }
    if (!req) {
        return kl_fail_ssl(KL_EINPUT, "not a PKCS#10 certificate request (PEM or DER)");
    }
    unsigned char *out = NULL;
    int n = i2d_X509_REQ(req, &out);
    X509_REQ_free(req);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINPUT, "cannot re-encode the CSR");
    }
    *der = out;
    *der_len = (size_t)n;
    return KL_OK;
}

/* Serial: 16 octets, positive, first octet in 0x40..0x7f so the encoding is always exactly 16
 * octets (RFC 5280 4.1.2.2: positive, <= 20 octets; CA/B BR: >= 64 bits from a CSPRNG). */
static kl_rc ca_serial_new(ASN1_INTEGER **out)
{
    uint8_t raw[CA_SERIAL_BYTES];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        return kl_fail_ssl(KL_EINTERNAL, "random generator failed");
    }
    raw[0] = (uint8_t)((raw[0] & 0x3f) | 0x40);
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    OPENSSL_cleanse(raw, sizeof raw);
    ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    BN_free(bn);
    if (!ai) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot make a serial number");
    }
    *out = ai;
    return KL_OK;
}

int ca_asn1_time(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return 0;
    }
    *out = timegm(&tm);
    return 1;
}

int ca_cert_past_half(const X509 *cert, time_t now)
{
    time_t nb = 0, na = 0;
    if (!ca_asn1_time(X509_get0_notBefore(cert), &nb) ||
        !ca_asn1_time(X509_get0_notAfter(cert), &na)) {
        return 1;
    }
    /* dated ahead of this clock by more than a few minutes (made by a clock set ahead):
     * relying parties refuse it until then, so it is renewed now rather than in its half */
    return now + CA_CLOCK_AHEAD_MAX < nb || now >= nb + (na - nb) / 2;
}

void ca_entry_set_cert(ca_ctx *ca, const char *label, X509 *cert)
{
    pthread_mutex_lock(&ca->mu);
    for (size_t i = 0; i < ca->ncas; i++) {
        if (strcmp(ca->cas[i].label, label) == 0) {
            ca_entry_swap_cert(ca, &ca->cas[i], &cert);
            break;
        }
    }
    pthread_mutex_unlock(&ca->mu);
    X509_free(cert); /* not cached (it is read from the store when first used), or no memory */
}

const char *ca_time_iso(time_t t, char buf[21])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, 21, "%lld", (long long)t);
    }
    return buf;
}

kl_rc ca_clock_check(ca_ctx *ca, const char *label, time_t now, const char *what)
{
    const ca_entry *e = NULL;
    time_t nb = 0;
    kl_rc rc = ca_entry_get(ca, label, 0, &e);
    if (rc != KL_OK || !ca_asn1_time(X509_get0_notBefore(e->cert), &nb) || now >= nb) {
        return rc;
    }
    char clock[21], from[21];
    return kl_fail(KL_EPOLICY,
                   "%s refused: this host's clock reads %s, before CA '%s' came into being (its "
                   "certificate is valid from %s): set the clock right first",
                   what, ca_time_iso(now, clock), label, ca_time_iso(nb, from));
}

/* CA certificate `cert` (of CA `label`) in the store at `now`: KL_OK when recorded "valid" and
 * within its recorded validity, else KL_EPOLICY "CA 'who' cannot issue: ..." saying which
 * certificate and why. */
static kl_rc ca_cert_usable(ca_ctx *ca, const char *who, const char *label, const X509 *cert,
                            time_t now)
{
    kl_rc rc = KL_OK;
    store_cert_state st;
    store_cert row;
    memset(&row, 0, sizeof row);
    char why[160], whose[160];
    char *serial = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(serial, KL_EINTERNAL, "out of memory");
    if (strcmp(who, label) == 0) {
        snprintf(whose, sizeof whose, "its certificate %s", serial);
    } else {
        snprintf(whose, sizeof whose, "the certificate %s of CA '%s' above it", serial, label);
    }
    rc = store_cert_state_get(ca->st, serial, &st);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_EPOLICY, "CA '%s' cannot issue: %s is not recorded as issued", who, whose);
        goto out;
    }
    TRY(rc);
    why[0] = 0;
    if (strcmp(st.status, STORE_ST_VALID) != 0) {
        if (strcmp(st.status, STORE_ST_REVOKED) == 0 &&
            store_cert_get(ca->st, serial, &row) == KL_OK) {
            snprintf(why, sizeof why, "is revoked (%s)", ca_reason_name(row.revoke_reason));
        } else {
            snprintf(why, sizeof why, "is %s", st.status);
        }
    } else if (now >= st.not_after) {
        snprintf(why, sizeof why, "has expired");
    } else if (now < st.not_before) {
        snprintf(why, sizeof why, "is not yet valid");
    }
    ENSURE(!why[0], KL_EPOLICY, "CA '%s' cannot issue: %s %s", who, whose, why);
out:
    store_cert_free(&row);
    OPENSSL_free(serial);
    return rc;
}

#define CA_CHAIN_MAX 16

/* The cached entries of CA `label` and the CAs above it, up to a root (ca_entry_get: reads the
 * store only for a CA not cached yet). */
static kl_rc ca_chain_entries(ca_ctx *ca, const char *label, const ca_entry **chain, size_t *n)
{
    kl_rc rc = KL_OK;
    *n = 0;
    for (const char *cur = label; cur;) {
        ENSURE(*n < CA_CHAIN_MAX, KL_EINPUT, "CA chain of '%s' is too deep or loops", label);
        TRY(ca_entry_get(ca, cur, 0, &chain[*n]));
        cur = chain[(*n)++]->parent; /* cached entries live as long as the ctx */
    }
out:
    return rc;
}

/* ca_cert_usable for each certificate of `chain` (ca_chain_entries), CA `label` first. */
static kl_rc ca_chain_usable(ca_ctx *ca, const char *label, const ca_entry *const *chain, size_t n,
                             time_t now)
{
    kl_rc rc = KL_OK;
    for (size_t i = 0; i < n; i++) {
        TRY(ca_cert_usable(ca, label, chain[i]->label, chain[i]->cert, now));
    }
out:
    return rc;
}

kl_rc ca_issuer_check(ca_ctx *ca, const char *label, time_t now)
{
    kl_rc rc = KL_OK;
    const ca_entry *chain[CA_CHAIN_MAX];
    size_t n = 0;
    TRY(ca_chain_entries(ca, label, chain, &n));
    TRY(store_snapshot_begin(ca->st)); /* one read transaction for the chain's states */
    rc = store_snapshot_end(ca->st, ca_chain_usable(ca, label, chain, n, now));
out:
    return rc;
}

/* A retired CA signs nothing more, while what it issued stays valid under it (so this is not
 * part of ca_issuer_check, which also decides what /cacerts serves and which client
 * certificates are good). Read every time: keyline-ca may retire it while keyline-cad runs. */
static kl_rc ca_issuer_not_retired(ca_ctx *ca, const char *label)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    kl_rc rc = store_ca_get(ca->st, label, &rec);
    if (rc == KL_OK && rec.status && strcmp(rec.status, "retired") == 0) {
        rc = kl_fail(KL_EPOLICY, "CA '%s' cannot issue: it is retired", label);
    }
    store_ca_free(&rec);
    return rc;
}

/* Internal issuance request: the public one plus what only ca_create may set. */
typedef struct {
    const ca_issue_req *req;
    const X509_NAME *subject; /* subject from the request (ca create) */
    EVP_PKEY *self_key;       /* self-signed: the new CA's own key */
    const char *self_label;
    X509 *issuer_cert; /* an issuer not recorded yet (ca_rotate), with its key; label in req */
    EVP_PKEY *issuer_key;
    int check_only;          /* ca_issue_check: stop before signing */
    unsigned char **der_out; /* ca_issue_der: the bytes signed, checked and recorded */
    size_t *der_len;
} ca_issue_in;

/* The subject of `cert` as RFC 2253 text, for the store and the audit log. */
static kl_rc ca_subject_text(X509 *cert, char **out)
{
    kl_rc rc = KL_OK;
    BIO *b = BIO_new(BIO_s_mem());
    char *mem = NULL;
    ENSURE_SSL(b && X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0,
               KL_EINTERNAL, "cannot print the subject");
    long n = BIO_get_mem_data(b, &mem);
    *out = strndup(mem ? mem : "", n > 0 ? (size_t)n : 0);
    ENSURE(*out, KL_EINTERNAL, "out of memory");
out:
    BIO_free(b);
    return rc;
}

/* Signing failed: nothing was recorded or released; leave an audit entry of the attempt
 * (best effort) and keep the caller's error message. */
static void ca_issue_failed(ca_ctx *ca, const ca_issue_req *req, const char *issuer_label,
                            const char *tpl_name, const char *serial_hex, const char *subject,
                            kl_rc rc)
{
    char why[512], detail[2048];
    snprintf(why, sizeof why, "%s", kl_errmsg());
    snprintf(detail, sizeof detail, "serial=%s issuer=%s template=%s subject=%s reason=%s",
             serial_hex, issuer_label, tpl_name, subject, why);
    if (store_audit_append(ca->st, req->actor ? req->actor : "unknown", "issue-failed", detail) !=
        KL_OK) {
        /* the issuance error matters more than the audit error */
    }
    kl_fail(rc, "%s", why);
}

/* One issuance as ca_issue_run resolves it, step by step. Everything here is borrowed except
 * subject_txt, which ca_issue_run frees. */
typedef struct {
    const ca_issue_req *req;
    const char *issuer_label;
    const tpl *t;
    X509_REQ *csr;          /* the request's or ca_issue_run's parsed CSR */
    const ca_entry *issuer; /* the recorded issuer, when its key comes from the CA cache */
    X509 *icert;            /* the issuer's certificate; NULL when self-signed */
    EVP_PKEY *sign_key;
    char *subject_txt; /* RFC 2253 subject for the store and the audit log */
    time_t not_before, not_after;
    int64_t crl_part, crl_part_size; /* [ca LABEL] crl-partition-size (ca_crlpart.c) */
    store_ca *cas; /* the CA list read with the issuer's state (ca_issuer_reads), or NULL */
    size_t ncas;
} ca_issue_job;

/* The request's arguments and its template, checked before any parsing. */
static kl_rc ca_issue_args_check(ca_ctx *ca, ca_issue_job *j)
{
    kl_rc rc = KL_OK;
    const ca_issue_req *req = j->req;
    ENSURE(ca->hsm, KL_EUSAGE, "issuing needs the token");
    ENSURE(req->csr_der && req->csr_len > 0, KL_EINPUT, "empty CSR");
    ENSURE(req->csr_len <= CA_CSR_HARD_MAX, KL_EINPUT, "CSR larger than %d bytes", CA_CSR_HARD_MAX);
    ENSURE(j->issuer_label && *j->issuer_label, KL_EUSAGE, "no issuer given");
    ENSURE(req->template_name && *req->template_name, KL_EUSAGE, "no template given");
    TRY(ca_tpl_get(ca, req->template_name, &j->t));
    ENSURE(j->t->max_csr_bytes <= 0 || req->csr_len <= (size_t)j->t->max_csr_bytes, KL_EPOLICY,
           "CSR of %zu bytes exceeds template %s's limit of %d", req->csr_len, j->t->name,
           j->t->max_csr_bytes);
out:
    return rc;
}

/* 1. Parse the CSR and check proof of possession. A CSR parsed here goes to *owned, which the
 * caller frees. */
static kl_rc ca_issue_csr_get(ca_issue_job *j, ca_csr **owned)
{
    kl_rc rc = KL_OK;
    if (j->req->csr) {
        /* the caller ran ca_csr_load on csr_der: borrowed, not freed here */
        j->csr = ca_csr_req(j->req->csr);
    } else {
        TRY(ca_csr_load(j->req->csr_der, j->req->csr_len, owned));
        j->csr = ca_csr_req(*owned);
    }
    ENSURE(j->csr, KL_EINTERNAL, "no CSR");
out:
    return rc;
}

/* The store's word on the issuer, read in one snapshot: every certificate of its chain is
 * usable (ca_issuer_check), the CA is not retired, and the CA list for the check that the new
 * certificate takes no CA's name (into j->cas, which ca_issue_run frees). */
static kl_rc ca_issuer_reads(ca_ctx *ca, ca_issue_job *j)
{
    kl_rc rc = KL_OK;
    const ca_entry *chain[CA_CHAIN_MAX];
    size_t n = 0;
    TRY(ca_chain_entries(ca, j->issuer_label, chain, &n));
    TRY(store_snapshot_begin(ca->st));
    rc = ca_chain_usable(ca, j->issuer_label, chain, n, time(NULL));
    rc = rc != KL_OK ? rc : ca_issuer_not_retired(ca, j->issuer_label);
    rc = rc != KL_OK ? rc : store_ca_list(ca->st, &j->cas, &j->ncas);
    rc = store_snapshot_end(ca->st, rc);
out:
    return rc;
}

/* 2. Issuer and signing key. */
static kl_rc ca_issue_signer(ca_ctx *ca, const ca_issue_in *in, ca_issue_job *j)
{
    kl_rc rc = KL_OK;
    const ca_issue_req *req = j->req;
    if (in->self_key) {
        j->sign_key = in->self_key;
    } else {
        if (in->issuer_key) {
            j->sign_key = in->issuer_key;
            j->icert = in->issuer_cert;
        } else {
            TRY(ca_entry_get(ca, req->issuer, 1, &j->issuer));
            j->sign_key = j->issuer->key;
            j->icert = j->issuer->cert;
        }
        ENSURE(j->icert, KL_EUSAGE, "no issuer certificate");
        /* A CA whose certificate, or one above it, is revoked or outside its validity issues
         * nothing. Read from the store every time (one indexed lookup per CA in the chain):
         * another process (keyline-ca revoke) may have revoked it a moment ago. */
        if (in->issuer_key) {
            /* a new root not recorded as a CA yet (ca_rotate): its own certificate */
            TRY(ca_cert_usable(ca, req->issuer, req->issuer, j->icert, time(NULL)));
        } else {
            TRY(ca_issuer_reads(ca, j));
        }
    }
out:
    return rc;
}

/* 3. Policy + build, then lint, before anything is recorded. *serial and *cert go to the
 * caller, who frees them on every path. */
static kl_rc ca_issue_build(ca_ctx *ca, const ca_issue_in *in, const ca_issue_job *j,
                            ASN1_INTEGER **serial, X509 **cert)
{
    kl_rc rc = KL_OK;
    TRY(ca_serial_new(serial));
    tpl_policy_in pin = {
        .t = j->t,
        .csr = j->csr,
        .device_id = j->req->device_id,
        .subject = in->subject,
        .issuer_cert = j->icert,
        .crl_url = ca->crl_url,
        .ocsp_url = ca->ocsp_url,
        .ca_issuers_url = ca->ca_issuers_url,
        .now = time(NULL),
        .issuer_label = j->issuer_label,
        .csr_der_len =
            j->req->csr_len, /* the DER that was parsed (ca_csr_load re-encodes exactly) */
    };
    TRY(tpl_policy_build(&pin, *serial, cert));
    TRY(tpl_lint(j->t, *cert, j->icert));
    if (!in->subject) { /* never a CA's name */
        TRY(j->cas ? ca_subject_check_in(ca, *cert, j->t->is_ca, j->cas, j->ncas)
                   : ca_subject_check(ca, *cert, j->t->is_ca));
    }
out:
    return rc;
}

/* What the store records of `cert` besides its serial: subject text, validity, CRL partition. */
static kl_rc ca_issue_record_prepare(ca_ctx *ca, ca_issue_job *j, X509 *cert)
{
    kl_rc rc = KL_OK;
    TRY(ca_subject_text(cert, &j->subject_txt));
    ENSURE_SSL(ca_asn1_time(X509_get0_notBefore(cert), &j->not_before) &&
                   ca_asn1_time(X509_get0_notAfter(cert), &j->not_after),
               KL_EINTERNAL, "certificate has an invalid validity time");
    TRY(ca_crlpart_assign(ca, j->issuer_label, cert, &j->crl_part, &j->crl_part_size));
out:
    return rc;
}

/* Sign `cert` in the HSM and check the signature on the very bytes that will be recorded and
 * released; on success *der_out (OPENSSL_free) holds them. A signing or checking failure is
 * audited as issue-failed. */
static kl_rc ca_issue_sign_checked(ca_ctx *ca, const ca_issue_job *j, X509 *cert,
                                   const char *serial_hex, unsigned char **der_out, int *dlen_out)
{
    kl_rc rc = KL_OK;
    unsigned char *der = NULL;
    if (X509_sign(cert, j->sign_key, ca_sign_md(j->sign_key)) <= 0) {
        rc = kl_fail_ssl(KL_EHSM, "signing in the HSM failed");
        if (j->issuer) {
            ca_key_failed(ca, j->issuer_label);
        }
        ca_issue_failed(ca, j->req, j->issuer_label, j->t->name, serial_hex, j->subject_txt, rc);
        goto out;
    }
    int dlen = i2d_X509(cert, &der);
    ENSURE_SSL(dlen > 0, KL_EINTERNAL, "cannot encode certificate");
    EVP_PKEY *ipub = j->icert ? X509_get0_pubkey(j->icert) : X509_REQ_get0_pubkey(j->csr);
    rc = ca_signed_der_verify(der, (size_t)dlen, ipub);
    if (rc != KL_OK) {
        OPENSSL_free(der);
        der = NULL;
        ca_issue_failed(ca, j->req, j->issuer_label, j->t->name, serial_hex, j->subject_txt, rc);
        goto out;
    }
    *der_out = der;
    *dlen_out = dlen;
    der = NULL;
out:
    OPENSSL_free(der);
    return rc;
}

/* Record the signed certificate with its audit entry in one store transaction. KL_EEXIST: its
 * serial is taken. */
static kl_rc ca_issue_record(ca_ctx *ca, const ca_issue_job *j, char *serial_hex,
                             const unsigned char *der, int dlen)
{
    const ca_issue_req *req = j->req;
    char detail[1536];
    snprintf(detail, sizeof detail, "serial=%s issuer=%s template=%s subject=%s%s%s", serial_hex,
             j->issuer_label, j->t->name, j->subject_txt, req->device_id ? " device=" : "",
             req->device_id ? req->device_id : "");
    store_cert rec = {
        .serial_hex = serial_hex,
        .issuer = (char *)j->issuer_label,
        .subject = j->subject_txt,
        .template_name = (char *)j->t->name,
        .device_id = (char *)req->device_id,
        .status = req->pending ? STORE_ST_PENDING : STORE_ST_VALID,
        .not_before = j->not_before,
        .not_after = j->not_after,
        .revoke_reason = -1,
        .request_id = req->request_id,
        .order_id = (char *)req->order_id,
        .crl_part = j->crl_part,
        .crl_part_size = j->crl_part_size,
    };
    return store_cert_insert(ca->st, &rec, der, (size_t)dlen, req->actor ? req->actor : "unknown",
                             detail);
}

/* 4. Sign in the HSM, check the result with the issuer's public key, and record the
 * certificate with its audit entry in one transaction before it is released. The serial is
 * unique by store constraint: a clash (2^-126 per pair) draws a new serial and signs again;
 * the clashing certificate never leaves this function. *serial and *serial_hex stay the
 * caller's to free; so does *der_out when asked for (NULL: not wanted), the DER recorded. */
static kl_rc ca_issue_sign_record(ca_ctx *ca, ca_issue_job *j, X509 *cert, ASN1_INTEGER **serial,
                                  char **serial_hex, unsigned char **der_out, size_t *der_len)
{
    kl_rc rc = KL_OK;
    for (int tries = 0;; tries++) {
        *serial_hex = ca_serial_hex(X509_get0_serialNumber(cert));
        ENSURE(*serial_hex, KL_EINTERNAL, "out of memory");
        unsigned char *der = NULL;
        int dlen = 0;
        TRY(ca_issue_sign_checked(ca, j, cert, *serial_hex, &der, &dlen));
        rc = ca_issue_record(ca, j, *serial_hex, der, dlen);
        if (rc == KL_OK && der_out) {
            *der_out = der;
            *der_len = (size_t)dlen;
            der = NULL;
        }
        OPENSSL_free(der);
        if (rc != KL_EEXIST || tries + 1 >= CA_SERIAL_TRIES) {
            break;
        }
        OPENSSL_free(*serial_hex);
        *serial_hex = NULL;
        ASN1_INTEGER_free(*serial);
        *serial = NULL;
        TRY(ca_serial_new(serial));
        ENSURE_SSL(X509_set_serialNumber(cert, *serial) == 1, KL_EINTERNAL, "set serial");
        if (j->crl_part_size > 0) { /* KL_EEXIST may be its partition filled meanwhile */
            TRY(ca_crlpart_assign(ca, j->issuer_label, cert, &j->crl_part, &j->crl_part_size));
        }
    }
out:
    return rc;
}

static kl_rc ca_issue_run(ca_ctx *ca, const ca_issue_in *in, X509 **cert_out)
{
    kl_rc rc = KL_OK;
    ca_csr *csr_owned = NULL;
    X509 *cert = NULL;
    ASN1_INTEGER *serial = NULL;
    char *serial_hex = NULL;
    ca_issue_job j = {
        .req = in->req,
        .issuer_label = in->self_key ? in->self_label : in->req->issuer,
    };
    *cert_out = NULL;

    TRY(ca_issue_args_check(ca, &j));
    TRY(ca_issue_csr_get(&j, &csr_owned));
    TRY(ca_issue_signer(ca, in, &j));
    TRY(ca_issue_build(ca, in, &j, &serial, &cert));
    if (in->check_only) {
        goto out;
    }
    TRY(ca_issue_record_prepare(ca, &j, cert));
    TRY(ca_issue_sign_record(ca, &j, cert, &serial, &serial_hex, in->der_out, in->der_len));
    *cert_out = cert;
    cert = NULL;
out:
    ca_csr_free(csr_owned);
    X509_free(cert);
    ASN1_INTEGER_free(serial);
    OPENSSL_free(serial_hex);
    free(j.subject_txt);
    store_ca_list_free(j.cas, j.ncas);
    return rc;
}

kl_rc ca_issue(ca_ctx *ca, const ca_issue_req *req, X509 **cert_out)
{
    ca_issue_in in = {.req = req};
    return ca_issue_run(ca, &in, cert_out);
}

kl_rc ca_issue_der(ca_ctx *ca, const ca_issue_req *req, X509 **cert_out, unsigned char **der_out,
                   size_t *der_len)
{
    ca_issue_in in = {.req = req, .der_out = der_out, .der_len = der_len};
    *der_out = NULL;
    *der_len = 0;
    kl_rc rc = ca_issue_run(ca, &in, cert_out);
    if (rc != KL_OK) { /* a failure after the record (none today) hands out no bytes */
        OPENSSL_free(*der_out);
        *der_out = NULL;
        *der_len = 0;
    }
    return rc;
}

kl_rc ca_issue_check(ca_ctx *ca, const ca_issue_req *req)
{
    X509 *none = NULL;
    ca_issue_in in = {.req = req, .check_only = 1};
    kl_rc rc = ca_issue_run(ca, &in, &none);
    X509_free(none);
    return rc;
}

/* "CN=Root CA,O=Acme" (RFC 4514 order: most specific first) -> X509_NAME. Backslash escapes
 * a comma, plus, equals or backslash. */
static kl_rc ca_name_parse(const char *s, X509_NAME **out)
{
    kl_rc rc = KL_OK;
    char *parts[32];
    size_t np = 0;
    X509_NAME *name = X509_NAME_new();
    char *buf = calloc(1, strlen(s) + 1);
    ENSURE(name && buf, KL_EINTERNAL, "out of memory");
    char *w = buf;
    parts[np++] = w;
    for (const char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            *w++ = *++r;
        } else if (*r == ',') {
            *w++ = 0;
            ENSURE(np < 32, KL_EUSAGE, "subject has too many attributes");
            parts[np++] = w;
        } else if (*r == '+') {
            ENSURE(0, KL_EUSAGE, "subject: multi-valued RDNs ('+') are not supported");
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
    for (size_t i = np; i-- > 0;) {
        char *a = parts[i];
        while (*a == ' ') {
            a++;
        }
        char *eq = strchr(a, '=');
        ENSURE(eq && eq != a && eq[1], KL_EUSAGE,
               "subject: '%s' is not attribute=value (like \"CN=Root CA,O=Acme\")", a);
        *eq = 0;
        int nid = OBJ_txt2nid(a);
        ENSURE(nid != NID_undef, KL_EUSAGE, "subject: unknown attribute '%s'", a);
        int type = (nid == NID_countryName || nid == NID_serialNumber) ? V_ASN1_PRINTABLESTRING
                                                                       : MBSTRING_UTF8;
        ENSURE_SSL(
            X509_NAME_add_entry_by_NID(name, nid, type, (unsigned char *)eq + 1, -1, -1, 0) == 1,
            KL_EUSAGE, "subject: bad value for %s", a);
    }
    ENSURE(X509_NAME_entry_count(name) > 0, KL_EUSAGE, "subject is empty");
    *out = name;
    name = NULL;
out:
    X509_NAME_free(name);
    free(buf);
    return rc;
}

static kl_rc ca_certify_in(ca_ctx *ca, EVP_PKEY *priv, EVP_PKEY *pub, const X509_NAME *name,
                           const char *template_name, const char *issuer, const char *self_label,
                           X509 *issuer_cert, EVP_PKEY *issuer_key, const char *actor,
                           X509 **cert_out)
{
    kl_rc rc = KL_OK;
    X509_REQ *csr = NULL;
    unsigned char *csr_der = NULL;
    *cert_out = NULL;
    /* The CSR, signed in the token, proves the token holds the key being certified. */
    csr = X509_REQ_new();
    ENSURE(csr, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(X509_REQ_set_version(csr, 0) == 1 && X509_REQ_set_subject_name(csr, name) == 1 &&
                   X509_REQ_set_pubkey(csr, pub) == 1,
               KL_EINTERNAL, "cannot build CA request");
    ENSURE_SSL(X509_REQ_sign(csr, priv, ca_sign_md(priv)) > 0, KL_EHSM,
               "signing the CA request in the HSM failed");
    int clen = i2d_X509_REQ(csr, &csr_der);
    ENSURE_SSL(clen > 0, KL_EINTERNAL, "cannot encode CA request");
    ca_issue_req req = {
        .issuer = issuer,
        .template_name = template_name,
        .csr_der = csr_der,
        .csr_len = (size_t)clen,
        .actor = actor,
    };
    ca_issue_in in = {.req = &req,
                      .subject = name,
                      .self_key = issuer ? NULL : priv,
                      .self_label = self_label,
                      .issuer_cert = issuer_cert,
                      .issuer_key = issuer_key};
    TRY(ca_issue_run(ca, &in, cert_out));
out:
    X509_REQ_free(csr);
    OPENSSL_free(csr_der);
    return rc;
}

kl_rc ca_certify(ca_ctx *ca, EVP_PKEY *priv, EVP_PKEY *pub, const X509_NAME *name,
                 const char *template_name, const char *issuer, const char *self_label,
                 const char *actor, X509 **cert_out)
{
    return ca_certify_in(ca, priv, pub, name, template_name, issuer, self_label, NULL, NULL, actor,
                         cert_out);
}

kl_rc ca_certify_under(ca_ctx *ca, EVP_PKEY *priv, EVP_PKEY *pub, const X509_NAME *name,
                       const char *template_name, const char *issuer_label, X509 *issuer_cert,
                       EVP_PKEY *issuer_key, const char *actor, X509 **cert_out)
{
    return ca_certify_in(ca, priv, pub, name, template_name, issuer_label, NULL, issuer_cert,
                         issuer_key, actor, cert_out);
}

kl_rc ca_record_fill(store_ca *rec, const char *label, const char *template_name,
                     const char *parent, const char *key_type, X509 *cert, const char *status)
{
    unsigned char *der = NULL;
    int dlen = i2d_X509(cert, &der);
    if (dlen <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot encode certificate");
    }
    *rec = (store_ca){
        .label = (char *)label,
        .template_name = (char *)template_name,
        .parent = (char *)parent,
        .key_type = (char *)key_type,
        .der = der,
        .der_len = (size_t)dlen,
        .status = (char *)status,
        .created = time(NULL),
    };
    return KL_OK;
}

kl_rc ca_record(ca_ctx *ca, const char *label, const char *template_name, const char *parent,
                const char *key_type, X509 *cert, const char *status)
{
    store_ca rec;
    kl_rc rc = ca_record_fill(&rec, label, template_name, parent, key_type, cert, status);
    if (rc == KL_OK) {
        rc = store_ca_put(ca->st, &rec);
        OPENSSL_free(rec.der);
    }
    return rc;
}

kl_rc ca_label_check_new(ca_ctx *ca, const char *label)
{
    store_ca existing;
    memset(&existing, 0, sizeof existing);
    /* A label is a token object's CKA_LABEL, a store key, part of the /crl/<label>.crl and
     * /.well-known/est/<label>/ paths and of the names keyline derives from it ("<CA>.ocsp",
     * "<root>.newwithold"): letters, digits and inner separators only. The label itself is
     * echoed only once it is known to be printable. */
    size_t n = label ? strlen(label) : 0;
    if (n == 0 || n > CA_LABEL_MAX ||
        strspn(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != n) {
        return kl_fail(KL_EUSAGE, "CA label must be 1-%d characters of [A-Za-z0-9._-]",
                       CA_LABEL_MAX);
    }
    if (!isalnum((unsigned char)label[0]) || !isalnum((unsigned char)label[n - 1]) ||
        strstr(label, "..")) {
        return kl_fail(KL_EUSAGE,
                       "CA label '%s' must start and end with a letter or digit, without '..'",
                       label);
    }
    kl_rc rc = store_ca_get(ca->st, label, &existing);
    store_ca_free(&existing);
    if (rc == KL_OK) {
        return kl_fail(KL_EEXIST, "a CA labelled '%s' already exists", label);
    }
    return rc == KL_ENOTFOUND ? KL_OK : rc;
}

/* 1 when `label` ends with `suffix` (and has something before it). */
static int ca_label_ends(const char *label, const char *suffix)
{
    size_t n = strlen(label), k = strlen(suffix);
    return n > k && strcmp(label + n - k, suffix) == 0;
}

kl_rc ca_label_role_check(const char *label, const char *template_name, const char *issuer)
{
    /* keyline-estd's signers may use every "*.ocsp" key (the delegated OCSP signers) and
     * treat such a record as a signer, not a CA: that suffix is only ever the signer of the
     * CA before it, made with the ocsp-signer template. */
    int is_signer = template_name && strcmp(template_name, "ocsp-signer") == 0;
    if (ca_is_ocsp_signer_label(label) || is_signer) {
        char want[CA_LABEL_MAX + 16];
        snprintf(want, sizeof want, "%s" CA_OCSP_SUFFIX, issuer ? issuer : "ISSUER");
        if (!is_signer) {
            return kl_fail(KL_EUSAGE,
                           "CA label '%s' is reserved: '" CA_OCSP_SUFFIX "' names the delegated "
                           "OCSP signer of the CA before it (template ocsp-signer)",
                           label);
        }
        if (!issuer || strcmp(label, want) != 0) {
            return kl_fail(KL_EUSAGE, "an OCSP signer is labelled after its CA: --label %s", want);
        }
    }
    if (ca_label_ends(label, CA_ROLLOVER_NWO) || ca_label_ends(label, CA_ROLLOVER_OWN)) {
        return kl_fail(KL_EUSAGE,
                       "CA label '%s' is reserved: '" CA_ROLLOVER_NWO "' and '" CA_ROLLOVER_OWN
                       "' name the rollover certificates of a root rotation",
                       label);
    }
    if (strcmp(label, CA_AUDIT_KEY_LABEL) == 0) {
        return kl_fail(KL_EUSAGE, "CA label '%s' is reserved: it is the audit key's (ca_audit.c)",
                       label);
    }
    return KL_OK;
}

void ca_key_discard(ca_ctx *ca, const char *label, X509 *const *certs, size_t n, const char *actor,
                    kl_rc rc)
{
    char why[512], left[512] = "";
    size_t nleft = 0, used = 0;
    int by_new = 0;
    snprintf(why, sizeof why, "%s", kl_errmsg());
    for (size_t i = 0; i < n; i++) {
        if (!certs[i]) {
            continue;
        }
        char *sh = ca_serial_hex(X509_get0_serialNumber(certs[i]));
        kl_rc r = sh ? ca_revoke(ca, sh, CA_REASON_CESSATION, actor) : KL_EINTERNAL;
        if (r != KL_OK && r != KL_EEXIST) {
            /* the store that just refused the CA record (full, unreachable) may refuse this too:
             * the certificate stays valid, and only an officer who is told its serial can act */
            int k = snprintf(left + used, sizeof left - used,
                             "%s keyline-ca revoke --serial %s --reason cessationOfOperation",
                             nleft ? ";" : "", sh ? sh : "?");
            used += k > 0 && (size_t)k < sizeof left - used ? (size_t)k : 0;
            nleft++;
            /* certs[0] is the new CA's own certificate: the key about to be destroyed signed
             * it (a root) or another one (OldWithNew), and no CRL of `label` will ever exist */
            EVP_PKEY *pub = X509_get0_pubkey(certs[0]);
            by_new |= pub && X509_verify(certs[i], pub) == 1;
            ERR_clear_error();
        }
        OPENSSL_free(sh);
    }
    hsm_ctx *h = NULL;
    kl_rc d = ca_hsm_of(ca, label, &h);
    d = d == KL_OK ? hsm_key_destroy(h, label) : d;
    char tail[160] = "";
    if (by_new) {
        snprintf(tail, sizeof tail,
                 "; for one signed by the new key the revocation stands, but revoke then fails: "
                 "there is no CRL of %s to publish",
                 label);
    }
    /* the cause shortened so that the commands fit the message (kl_err's 1024 bytes) */
    kl_fail(rc, "%.300s%s%s%s%s%s", why,
            nleft == 0   ? ""
            : nleft == 1 ? " (and the certificate signed on the way could not be revoked: it "
                           "stays valid in the store; once the store takes writes again, run"
                         : " (and the certificates signed on the way could not be revoked: they "
                           "stay valid in the store; once the store takes writes again, run",
            left, tail, nleft ? ")" : "",
            d == KL_OK ? "" : " (and the new key could not be removed from the token)");
}

kl_rc ca_key_token_check(ca_ctx *ca, hsm_ctx *h, const char *label, hsm_key_type kt)
{
    /* libp11 0.4.12 sees no key of a token that holds an Ed25519 key (docs/ca.md) */
    if (kt == HSM_KEY_ED25519 && h == ca->hsm) {
        return kl_fail(KL_EPOLICY,
                       "an Ed25519 CA key needs a token of its own, not the online token: name "
                       "one in [hsm %s] of %s or with ca create --token",
                       label, kl_conf_file(ca->conf));
    }
    return KL_OK;
}

kl_rc ca_key_new(ca_ctx *ca, const char *label, const char *template_name, const X509_NAME *name,
                 hsm_key_type kt, const char *issuer, const char *actor, X509 **cert_out,
                 EVP_PKEY **priv_out)
{
    kl_rc rc = KL_OK;
    EVP_PKEY *pub = NULL, *priv = NULL;
    X509 *cert = NULL;
    const tpl *t = NULL;
    hsm_ctx *h = NULL;
    int generated = 0;
    *cert_out = NULL;
    if (priv_out) {
        *priv_out = NULL;
    }

    ENSURE(ca->hsm, KL_EUSAGE, "creating a CA needs the token");
    TRY(ca_label_check_new(ca, label));
    TRY(ca_label_role_check(label, template_name, issuer));
    TRY(ca_tpl_get(ca, template_name, &t));
    ENSURE(t->is_ca || strcmp(t->name, "ocsp-signer") == 0 || ca_is_firmware_template(t->name),
           KL_EPOLICY, "template %s is not a CA template", t->name);
    ENSURE(issuer || t->is_ca, KL_EPOLICY, "only a CA can be self-signed");
    ENSURE(t->key_types & (1u << kt), KL_EPOLICY, "key type %s not allowed by template %s",
           hsm_key_type_name(kt), t->name);
    if (issuer) {
        const ca_entry *ie = NULL;
        TRY(ca_entry_get(ca, issuer, 1, &ie));
        TRY(ca_issuer_check(ca, issuer, time(NULL))); /* before a key is made */
    }
    TRY(ca_hsm_of(ca, label, &h));
    TRY(ca_key_token_check(ca, h, label, kt));
    TRY(hsm_key_generate(h, label, kt, &pub));
    generated = 1;
    TRY(hsm_key_load(h, label, &priv));
    TRY(ca_certify(ca, priv, pub, name, template_name, issuer, label, actor, &cert));
    generated = 0;
    *cert_out = cert;
    cert = NULL;
    if (priv_out) {
        *priv_out = priv;
        priv = NULL;
    }
out:
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    X509_free(cert);
    if (generated) {
        /* No CA came of it (policy refused the subject, lint, HSM): do not leave an orphan
         * key that would block the label. Nothing was signed (or recorded) with it. */
        ca_key_discard(ca, label, NULL, 0, actor, rc);
    }
    return rc;
}

kl_rc ca_cert_to_token(ca_ctx *ca, const char *label, X509 *cert)
{
    unsigned char *der = NULL;
    hsm_ctx *h = NULL;
    int n = i2d_X509(cert, &der);
    kl_rc rc = n > 0 ? ca_hsm_of(ca, label, &h) : kl_fail_ssl(KL_EINTERNAL, "i2d_X509");
    if (rc == KL_OK) {
        rc = hsm_cert_put(h, label, der, (size_t)n);
    }
    OPENSSL_free(der);
    if (rc != KL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        rc = kl_fail(rc,
                     "CA '%s' is recorded, but its certificate could not be stored on the "
                     "token: %s",
                     label, why);
    }
    return rc;
}

kl_rc ca_create_named(ca_ctx *ca, const char *label, const char *template_name,
                      const X509_NAME *name, hsm_key_type kt, const char *issuer, const char *actor,
                      X509 **cert_out)
{
    X509 *cert = NULL;
    *cert_out = NULL;
    kl_rc rc = ca_key_new(ca, label, template_name, name, kt, issuer, actor, &cert, NULL);
    if (rc != KL_OK) {
        return rc;
    }
    rc = ca_record(ca, label, template_name, issuer, hsm_key_type_name(kt), cert, "active");
    if (rc != KL_OK) {
        /* the certificate was recorded as issued but never released: revoke it with the key */
        ca_key_discard(ca, label, &cert, 1, actor, rc);
        X509_free(cert);
        return rc;
    }
    *cert_out = cert;
    /* a delegated OCSP signer's certificate is renewed monthly: the store has it */
    return ca_is_ocsp_signer_label(label) ? KL_OK : ca_cert_to_token(ca, label, cert);
}

kl_rc ca_subject_parse(const char *subject, X509_NAME **out)
{
    return ca_name_parse(subject, out);
}

kl_rc ca_create(ca_ctx *ca, const char *label, const char *template_name, const char *subject,
                hsm_key_type kt, const char *issuer, const char *actor, X509 **cert_out)
{
    X509_NAME *name = NULL;
    *cert_out = NULL;
    kl_rc rc = ca_name_parse(subject, &name);
    if (rc == KL_OK) {
        rc = ca_create_named(ca, label, template_name, name, kt, issuer, actor, cert_out);
    }
    X509_NAME_free(name);
    return rc;
}

kl_rc ca_cert(ca_ctx *ca, const char *label, X509 **out)
{
    const ca_entry *e = NULL;
    kl_rc rc = ca_entry_get(ca, label, 0, &e);
    if (rc != KL_OK) {
        return rc;
    }
    X509_up_ref(e->cert);
    *out = e->cert;
    return KL_OK;
}

kl_rc ca_chain(ca_ctx *ca, const char *label, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *sk = sk_X509_new_null();
    char cur[128];
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    ENSURE(sk, KL_EINTERNAL, "out of memory");
    snprintf(cur, sizeof cur, "%s", label);
    for (int depth = 0;; depth++) {
        ENSURE(depth < 16, KL_EINPUT, "CA chain of '%s' is too deep or loops", label);
        const ca_entry *e = NULL;
        TRY(ca_entry_get(ca, cur, 0, &e));
        ENSURE(sk_X509_push(sk, e->cert) > 0, KL_EINTERNAL, "out of memory");
        X509_up_ref(e->cert);
        TRY(store_ca_get(ca->st, cur, &rec));
        if (!rec.parent || !*rec.parent) {
            break;
        }
        snprintf(cur, sizeof cur, "%s", rec.parent);
        store_ca_free(&rec);
        memset(&rec, 0, sizeof rec);
    }
    *out = sk;
    sk = NULL;
out:
    store_ca_free(&rec);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

kl_rc ca_all_certs(ca_ctx *ca, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    store_ca *list = NULL;
    size_t n = 0;
    STACK_OF(X509) *sk = sk_X509_new_null();
    ENSURE(sk, KL_EINTERNAL, "out of memory");
    TRY(store_ca_list(ca->st, &list, &n));
    for (size_t i = 0; i < n; i++) {
        if (ca_is_ocsp_signer_label(list[i].label) ||
            ca_is_firmware_template(list[i].template_name)) {
            continue; /* delegated OCSP signers and firmware keys are not CAs */
        }
        X509 *x = ca_der_to_x509(list[i].der, list[i].der_len);
        ENSURE(x, KL_EINPUT, "CA '%s': stored certificate does not parse", list[i].label);
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            ENSURE(0, KL_EINTERNAL, "out of memory");
        }
    }
    *out = sk;
    sk = NULL;
out:
    store_ca_list_free(list, n);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

/* Push a certificate of CA `label` onto `sk` (once; up-referenced) when it may still be trusted
 * at `now` (ca_issuer_check). */
static kl_rc ca_cacerts_add(ca_ctx *ca, STACK_OF(X509) * sk, const char *label, time_t now)
{
    kl_rc rc = ca_issuer_check(ca, label, now);
    if (rc == KL_EPOLICY) {
        return KL_OK; /* revoked, expired or not yet valid (itself or above): not served */
    }
    const ca_entry *e = NULL;
    if (rc != KL_OK || (rc = ca_entry_get(ca, label, 0, &e)) != KL_OK) {
        return rc;
    }
    for (int i = 0; i < sk_X509_num(sk); i++) {
        if (X509_cmp(sk_X509_value(sk, i), e->cert) == 0) {
            return KL_OK;
        }
    }
    if (X509_up_ref(e->cert) != 1 || sk_X509_push(sk, e->cert) <= 0) {
        X509_free(e->cert);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    return KL_OK;
}

kl_rc ca_cacerts(ca_ctx *ca, const char *label, time_t now, STACK_OF(X509) * *out)
{
    kl_rc rc = KL_OK;
    store_ca *list = NULL;
    size_t n = 0;
    STACK_OF(X509) *sk = sk_X509_new_null();
    *out = NULL;
    ENSURE(sk, KL_EINTERNAL, "out of memory");
    /* RFC 7030 4.1.3: the chain of the label's CA first (an unknown label is an error) */
    const char *cur = label;
    for (int depth = 0; cur; depth++) {
        ENSURE(depth < 16, KL_EINPUT, "CA chain of '%s' is too deep or loops", label);
        const ca_entry *e = NULL;
        TRY(ca_entry_get(ca, cur, 0, &e));
        TRY(ca_cacerts_add(ca, sk, cur, now));
        cur = e->parent;
    }
    /* then every other CA: other roots, their issuing CAs, the rollover certificates */
    TRY(store_ca_list(ca->st, &list, &n));
    for (size_t i = 0; i < n; i++) {
        /* delegated OCSP signers and firmware keys are no CAs */
        if (!ca_is_ocsp_signer_label(list[i].label) &&
            !ca_is_firmware_template(list[i].template_name)) {
            TRY(ca_cacerts_add(ca, sk, list[i].label, now));
        }
    }
    *out = sk;
    sk = NULL;
out:
    store_ca_list_free(list, n);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

kl_rc ca_activate(ca_ctx *ca, const char *serial_hex, const char *actor)
{
    char norm[64];
    kl_rc rc = ca_serial_normalise(serial_hex, norm, sizeof norm);
    if (rc != KL_OK) {
        return rc;
    }
    return store_cert_activate(ca->st, norm, actor ? actor : "unknown");
}
