/* keyline: the store front end: argument checks, serial canonicalisation, driver choice, and
 * the record _free functions. The operations (store_ca.c, store_cert.c, store_inv.c,
 * store_log.c) receive canonical serials and non-NULL required arguments. See
 * docs/internals/store.md. */
#include "store.h"

#include <ctype.h>
#include <stdlib.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "kl_conf.h"
#include "store_audit.h"
#include "store_db.h"

/* Drivers by DSN scheme. A plain path (no "scheme:" prefix) goes to the first one. `whole`:
 * the driver takes the whole DSN (a libpq URL), else what follows "scheme:". */
static const struct {
    const char *scheme;
    const db_driver *drv;
    int whole;
} store_drivers[] = {
    {"sqlite", &store_sqlite_driver, 0},
    {"postgresql", &store_pg_driver, 1},
    {"postgres", &store_pg_driver, 1}, /* libpq takes both URI schemes */
};

#define STORE_DEFAULT_ACTOR "keyline"

static const char *actor_or_default(const char *actor)
{
    return (actor && actor[0]) ? actor : STORE_DEFAULT_ACTOR;
}

/* "scheme:rest" where scheme is [a-z][a-z0-9+.-]+ (at least two characters, so a one-letter
 * prefix is never mistaken for a scheme). Returns the scheme length, 0 when `dsn` is a path. */
static size_t dsn_scheme_len(const char *dsn)
{
    size_t i = 0;
    if (!islower((unsigned char)dsn[0])) {
        return 0;
    }
    for (i = 1; dsn[i] && dsn[i] != ':'; i++) {
        unsigned char c = (unsigned char)dsn[i];
        if (!(islower(c) || isdigit(c) || c == '+' || c == '.' || c == '-')) {
            return 0;
        }
    }
    return (dsn[i] == ':' && i >= 2) ? i : 0;
}

kl_rc store_open(store **out, const char *path)
{
    if (!out || !path || !path[0]) {
        return kl_fail(KL_EUSAGE, "store: no store path given");
    }
    *out = NULL;
    size_t n = dsn_scheme_len(path);
    if (n == 0) {
        return store_core_open(out, store_drivers[0].drv, path);
    }
    for (size_t i = 0; i < sizeof store_drivers / sizeof store_drivers[0]; i++) {
        const char *scheme = store_drivers[i].scheme;
        if (strlen(scheme) == n && memcmp(scheme, path, n) == 0) {
            if (!path[n + 1] || (store_drivers[i].whole && strcmp(path + n + 1, "//") == 0)) {
                return kl_fail(KL_EUSAGE, "store: '%s' names no database", path);
            }
            return store_core_open(out, store_drivers[i].drv,
                                   store_drivers[i].whole ? path : path + n + 1);
        }
    }
    /* the scheme only: the rest may hold a password */
    return kl_fail(KL_EUSAGE, "store: unknown backend '%.*s' (known: sqlite, postgresql)", (int)n,
                   path);
}

/* The DSN for messages and listings: without a password (user:PASSWORD@ or password=...). */
char *store_dsn_redact(const char *url)
{
    char *r = strdup(url);
    if (!r) {
        return NULL;
    }
    char *auth = strstr(r, "://");
    if (auth) {
        auth += 3;
        char *at = strchr(auth, '@');
        char *slash = strchr(auth, '/');
        char *colon = strchr(auth, ':');
        if (at && (!slash || at < slash) && colon && colon < at) {
            memmove(colon, at, strlen(at) + 1);
        }
    }
    for (char *p = r; (p = strstr(p, "password=")) != NULL;) {
        char *end = p + 9;
        while (*end && *end != '&' && *end != ' ') {
            end++;
        }
        memmove(p + 9, end, strlen(end) + 1);
        p += 9;
    }
    return r;
}

kl_rc store_conf_dsn(const kl_conf *conf, char **out)
{
    const char *path = kl_conf_get(conf, "store", "path");
    const char *url = kl_conf_get(conf, "store", "url");
    *out = NULL;
    path = (path && *path) ? path : NULL;
    url = (url && *url) ? url : NULL;
    if (path && url) {
        return kl_fail(KL_EUSAGE, "%s: [store] has both path and url; keep one",
                       kl_conf_file(conf));
    }
    if (!path && !url) {
        return kl_fail(KL_EUSAGE, "%s: [store] path is not set", kl_conf_file(conf));
    }
    if (url && dsn_scheme_len(url) == 0) {
        /* not shown: it may hold a password where the scheme should be */
        return kl_fail(KL_EUSAGE,
                       "%s:%d: [store] url is not a URL (postgresql://...); its value is not shown",
                       kl_conf_file(conf), kl_conf_line(conf, "store", "url"));
    }
    /* a DSN with a scheme is taken as written; a plain path is relative to the file */
    const char *v = url ? url : path;
    *out = dsn_scheme_len(v) ? strdup(v) : kl_conf_path(conf, "store", "path");
    return *out ? KL_OK : kl_fail(KL_EINTERNAL, "out of memory");
}

#define STORE_CHECK(s)                                                                             \
    do {                                                                                           \
        if (!(s)) {                                                                                \
            return kl_fail(KL_EUSAGE, "store: no store handle");                                   \
        }                                                                                          \
    } while (0)

#define ARG_CHECK(cond, what)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            return kl_fail(KL_EUSAGE, "store: %s", (what));                                        \
        }                                                                                          \
    } while (0)

/* RFC 5280 4.1.2.2: "Conforming CAs MUST NOT use serialNumber values longer than 20 octets." */
#define SERIAL_MAX_HEX 40

kl_rc store_serial_normalize(const char *in, char *out, size_t outsz)
{
    char digits[SERIAL_MAX_HEX + 2];
    size_t nd = 0;
    int seen_nonzero = 0;
    if (!in || !out || outsz < SERIAL_MAX_HEX + 1) {
        return kl_fail(KL_EUSAGE, "store: bad serial buffer");
    }
    out[0] = '\0';
    if (!in[0]) {
        return kl_fail(KL_EINPUT, "empty serial number");
    }
    for (const char *p = in; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ':') {
            continue;
        }
        if (!isxdigit(c)) {
            return kl_fail(KL_EINPUT, "serial number '%.80s' is not hexadecimal", in);
        }
        if (c == '0' && !seen_nonzero) {
            continue;
        }
        seen_nonzero = 1;
        if (nd >= SERIAL_MAX_HEX) {
            return kl_fail(KL_EINPUT, "serial number '%.80s' is longer than 20 octets", in);
        }
        digits[nd++] = (char)toupper(c);
    }
    if (nd == 0) {
        return kl_fail(KL_EINPUT, "serial number must be positive, not zero");
    }
    size_t o = 0;
    if (nd % 2) {
        out[o++] = '0';
    }
    memcpy(out + o, digits, nd);
    out[o + nd] = '\0';
    return KL_OK;
}

/* The audit entry hash is in store_audit.c, with the rest of what the log holds. */

/* --- CA records --- */

kl_rc store_ca_put(store *s, const store_ca *ca)
{
    STORE_CHECK(s);
    ARG_CHECK(ca && ca->label && ca->label[0], "CA record without a label");
    return st_ca_put(s, ca);
}

kl_rc store_ca_put_all(store *s, const store_ca *cas, size_t n, const char *actor,
                       const char *action, const char *detail)
{
    STORE_CHECK(s);
    ARG_CHECK(cas && n > 0, "store_ca_put_all: no CA records");
    for (size_t i = 0; i < n; i++) {
        ARG_CHECK(cas[i].label && cas[i].label[0], "CA record without a label");
    }
    ARG_CHECK(action && action[0], "store_ca_put_all: no audit action");
    return st_ca_put_all(s, cas, n, actor_or_default(actor), action, detail ? detail : "");
}

kl_rc store_ca_get(store *s, const char *label, store_ca *out)
{
    STORE_CHECK(s);
    ARG_CHECK(label && out, "store_ca_get: missing argument");
    memset(out, 0, sizeof *out);
    return st_ca_get(s, label, out);
}

kl_rc store_ca_list(store *s, store_ca **out, size_t *n)
{
    STORE_CHECK(s);
    ARG_CHECK(out && n, "store_ca_list: missing argument");
    *out = NULL;
    *n = 0;
    return st_ca_list(s, out, n);
}

void store_ca_free(store_ca *ca)
{
    if (!ca) {
        return;
    }
    free(ca->label);
    free(ca->template_name);
    free(ca->parent);
    free(ca->key_type);
    free(ca->der);
    free(ca->status);
    memset(ca, 0, sizeof *ca);
}

void store_ca_list_free(store_ca *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_ca_free(&v[i]);
    }
    free(v);
}

/* --- certificates --- */

#define SERIAL_NORM(in, buf)                                                                       \
    do {                                                                                           \
        ARG_CHECK((in) != NULL, "no serial number given");                                         \
        kl_rc nrc_ = store_serial_normalize((in), (buf), sizeof(buf));                             \
        if (nrc_ != KL_OK) {                                                                       \
            return nrc_;                                                                           \
        }                                                                                          \
    } while (0)

kl_rc store_cert_insert(store *s, const store_cert *c, const uint8_t *der, size_t der_len,
                        const char *actor, const char *audit_detail)
{
    char serial[SERIAL_MAX_HEX + 1];
    STORE_CHECK(s);
    ARG_CHECK(c, "store_cert_insert: no record");
    SERIAL_NORM(c->serial_hex, serial);
    ARG_CHECK(c->issuer && c->issuer[0], "certificate without an issuer");
    ARG_CHECK(c->subject, "store_cert_insert: no subject");
    ARG_CHECK(der && der_len > 0, "store_cert_insert: no certificate");
    if (!c->status ||
        (strcmp(c->status, STORE_ST_VALID) != 0 && strcmp(c->status, STORE_ST_PENDING) != 0)) {
        return kl_fail(KL_EUSAGE,
                       "store: a new certificate is \"valid\" or \"pending\", not \"%s\"",
                       c->status ? c->status : "(null)");
    }
    store_cert tmp = *c;
    tmp.serial_hex = serial;
    return st_cert_insert(s, &tmp, der, der_len, actor_or_default(actor), audit_detail);
}

kl_rc store_cert_get(store *s, const char *serial_hex, store_cert *out)
{
    char serial[SERIAL_MAX_HEX + 1];
    STORE_CHECK(s);
    ARG_CHECK(out, "store_cert_get: no output record");
    memset(out, 0, sizeof *out);
    out->revoke_reason = -1;
    SERIAL_NORM(serial_hex, serial);
    return st_cert_get(s, serial, out);
}

kl_rc store_cert_state_get(store *s, const char *serial_hex, store_cert_state *out)
{
    char serial[SERIAL_MAX_HEX + 1];
    STORE_CHECK(s);
    ARG_CHECK(out, "store_cert_state_get: no output record");
    memset(out, 0, sizeof *out);
    SERIAL_NORM(serial_hex, serial);
    return st_cert_state(s, serial, out);
}

kl_rc store_cert_list(store *s, const char *status, const char *issuer, store_cert_cb cb, void *arg)
{
    STORE_CHECK(s);
    ARG_CHECK(cb, "store_cert_list: no callback");
    return st_cert_list(s, status, issuer, cb, arg);
}

kl_rc store_cert_activate(store *s, const char *serial_hex, const char *actor)
{
    char serial[SERIAL_MAX_HEX + 1];
    STORE_CHECK(s);
    SERIAL_NORM(serial_hex, serial);
    return st_cert_activate(s, serial, actor_or_default(actor));
}

kl_rc store_cert_revoke(store *s, const char *serial_hex, int reason, time_t when,
                        const char *actor)
{
    char serial[SERIAL_MAX_HEX + 1];
    STORE_CHECK(s);
    SERIAL_NORM(serial_hex, serial);
    /* RFC 5280 5.3.1: CRLReason 0..10, value 7 is not used. -1: no reason code. */
    if (reason < -1 || reason > 10 || reason == 7) {
        return kl_fail(KL_EINPUT, "invalid CRL reason code %d", reason);
    }
    return st_cert_revoke(s, serial, reason, when, actor_or_default(actor));
}

kl_rc store_cert_list_pending(store *s, time_t older_than, store_cert_cb cb, void *arg)
{
    STORE_CHECK(s);
    ARG_CHECK(cb, "store_cert_list_pending: no callback");
    return st_cert_list_pending(s, older_than, cb, arg);
}

void store_cert_free(store_cert *c)
{
    if (!c) {
        return;
    }
    free(c->serial_hex);
    free(c->issuer);
    free(c->subject);
    free(c->template_name);
    free(c->device_id);
    free(c->status);
    free(c->der);
    memset(c, 0, sizeof *c);
    c->revoke_reason = -1;
}

kl_rc store_crl_number_next(store *s, const char *issuer, int64_t *out)
{
    STORE_CHECK(s);
    ARG_CHECK(issuer && issuer[0] && out, "store_crl_number_next: missing argument");
    return st_crl_number_next(s, issuer, out);
}

kl_rc store_revocation_epoch(store *s, const char *issuer, int64_t *out)
{
    STORE_CHECK(s);
    ARG_CHECK(issuer && issuer[0] && out, "store_revocation_epoch: missing argument");
    return st_revocation_epoch(s, issuer, out);
}

/* --- published CRLs --- */

kl_rc store_crl_put(store *s, const char *issuer, int64_t number, time_t this_update,
                    time_t next_update, const uint8_t *der, size_t len, const char *actor,
                    const char *detail)
{
    char dflt[1100];
    STORE_CHECK(s);
    ARG_CHECK(issuer && issuer[0], "store_crl_put: CRL without an issuer");
    ARG_CHECK(der && len > 0, "store_crl_put: no CRL");
    if (len > STORE_CRL_MAX) {
        return kl_fail(KL_EINPUT, "CRL of '%.200s' is %zu bytes, more than the store keeps (%zu)",
                       issuer, len, STORE_CRL_MAX);
    }
    /* RFC 5280 5.2.3: "CRLNumber ::= INTEGER (0..MAX)" */
    if (number < 0) {
        return kl_fail(KL_EINPUT, "CRL of '%.200s' has a negative number (%lld)", issuer,
                       (long long)number);
    }
    if (next_update <= this_update) {
        return kl_fail(KL_EINPUT,
                       "CRL of '%.200s': nextUpdate (%lld) is not after thisUpdate (%lld)", issuer,
                       (long long)next_update, (long long)this_update);
    }
    if (!detail) {
        snprintf(dflt, sizeof dflt, "issuer=%.900s number=%lld", issuer, (long long)number);
        detail = dflt;
    }
    return st_crl_put(s, issuer, number, this_update, next_update, der, len,
                      actor_or_default(actor), detail);
}

kl_rc store_ca_recert(store *s, const char *label, const uint8_t *der, size_t len,
                      const char *actor, const char *detail)
{
    STORE_CHECK(s);
    ARG_CHECK(label && label[0] && der && len, "store_ca_recert: missing argument");
    return st_ca_recert(s, label, der, len, actor ? actor : "keyline", "ca-recert",
                        detail ? detail : "");
}

kl_rc store_ca_rekey(store *s, const char *label, const uint8_t *der, size_t len, const char *actor,
                     const char *detail)
{
    STORE_CHECK(s);
    ARG_CHECK(label && label[0] && der && len, "store_ca_rekey: missing argument");
    return st_ca_recert(s, label, der, len, actor ? actor : "keyline", "ocsp-signer-new",
                        detail ? detail : "");
}

kl_rc store_crl_get(store *s, const char *issuer, store_crl *out)
{
    STORE_CHECK(s);
    ARG_CHECK(issuer && issuer[0] && out, "store_crl_get: missing argument");
    memset(out, 0, sizeof *out);
    return st_crl_get(s, issuer, out);
}

void store_crl_free(store_crl *c)
{
    if (!c) {
        return;
    }
    free(c->issuer);
    free(c->der);
    memset(c, 0, sizeof *c);
}

/* --- device inventory --- */

kl_rc store_device_get(store *s, const char *device_id, store_device *out)
{
    STORE_CHECK(s);
    ARG_CHECK(device_id && out, "store_device_get: missing argument");
    memset(out, 0, sizeof *out);
    return st_device_get(s, device_id, out);
}

kl_rc store_device_put(store *s, const store_device *d)
{
    STORE_CHECK(s);
    ARG_CHECK(d && d->device_id && d->device_id[0], "device record without a device id");
    return st_device_put(s, d);
}

static kl_rc claim_check(const char *device_id, const store_claim *me)
{
    ARG_CHECK(device_id && device_id[0], "device claim without a device id");
    ARG_CHECK(me && me->instance && me->instance[0] && strlen(me->instance) < 65 && me->host &&
                  strlen(me->host) < 256 && me->where && me->where[0] && strlen(me->where) < 128,
              "device claim: bad holder");
    return KL_OK;
}

kl_rc store_device_claim(store *s, const char *device_id, const store_claim *me, char *holder,
                         size_t holder_len)
{
    STORE_CHECK(s);
    kl_rc rc = claim_check(device_id, me);
    if (rc != KL_OK) {
        return rc;
    }
    ARG_CHECK(holder && holder_len > 0, "device claim: no room for the holder");
    holder[0] = 0;
    return st_device_claim(s, device_id, me, holder, holder_len);
}

kl_rc store_device_unclaim(store *s, const char *device_id, const store_claim *me)
{
    STORE_CHECK(s);
    kl_rc rc = claim_check(device_id, me);
    if (rc != KL_OK) {
        return rc;
    }
    return st_device_unclaim(s, device_id, me);
}

int store_claim_takeover(const store_claim_row *held, const store_claim *me, time_t now)
{
    if (strcmp(held->instance, me->instance) == 0) {
        return strcmp(held->where, me->where) == 0; /* ours: renew; another fixture: a clone */
    }
    if (held->expires <= now) {
        return 1;
    }
    if (strcmp(held->host, me->host) != 0) {
        return 0; /* another machine: only its lease tells */
    }
    if (held->pid == me->pid) {
        return 1; /* our pid under another instance: an earlier process that died */
    }
    /* kill(pid, 0): ESRCH = no such process; EPERM = it exists (another user) */
    return held->pid <= 0 || (kill((pid_t)held->pid, 0) != 0 && errno == ESRCH);
}

kl_rc store_device_list(store *s, store_device **out, size_t *n)
{
    STORE_CHECK(s);
    ARG_CHECK(out && n, "store_device_list: missing argument");
    *out = NULL;
    *n = 0;
    return st_device_list(s, out, n);
}

void store_device_free(store_device *d)
{
    if (!d) {
        return;
    }
    free(d->device_id);
    free(d->model);
    free(d->cert_serial);
    free(d->state);
    free(d->detail);
    memset(d, 0, sizeof *d);
}

void store_device_list_free(store_device *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_device_free(&v[i]);
    }
    free(v);
}

/* --- held enrollment requests --- */

kl_rc store_request_submit(store *s, const store_request *r, store_request *out)
{
    STORE_CHECK(s);
    ARG_CHECK(r && out && r->label && r->csr_hash && strlen(r->csr_hash) == 64 && r->csr &&
                  r->csr_len > 0 && r->issuer && r->issuer[0] && r->template_name &&
                  r->template_name[0] && r->subject,
              "store_request_submit: incomplete request");
    memset(out, 0, sizeof *out);
    return st_request_submit(s, r, out);
}

kl_rc store_request_get(store *s, int64_t id, store_request *out)
{
    STORE_CHECK(s);
    ARG_CHECK(out, "store_request_get: no output");
    memset(out, 0, sizeof *out);
    return st_request_get(s, id, out);
}

kl_rc store_request_list(store *s, const char *status, store_request **out, size_t *n)
{
    STORE_CHECK(s);
    ARG_CHECK(out && n, "store_request_list: missing argument");
    *out = NULL;
    *n = 0;
    kl_rc rc = st_request_list(s, out, n);
    if (rc != KL_OK || !status) {
        return rc;
    }
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*out)[i].status, status) == 0) {
            (*out)[k++] = (*out)[i];
        } else {
            store_request_free(&(*out)[i]);
        }
    }
    *n = k;
    return KL_OK;
}

kl_rc store_request_count(store *s, const char *status, int64_t *n)
{
    STORE_CHECK(s);
    ARG_CHECK(status && n, "store_request_count: missing argument");
    *n = 0;
    return st_request_count(s, status, n);
}

kl_rc store_request_reject(store *s, int64_t id, const char *reason, const char *actor)
{
    STORE_CHECK(s);
    ARG_CHECK(reason && reason[0], "rejecting a request needs a reason");
    return st_request_reject(s, id, reason, actor_or_default(actor));
}

void store_request_free(store_request *r)
{
    if (!r) {
        return;
    }
    free(r->label);
    free(r->csr_hash);
    free(r->csr);
    free(r->issuer);
    free(r->template_name);
    free(r->device_id);
    free(r->requester);
    free(r->subject);
    free(r->status);
    free(r->cert_serial);
    free(r->reason);
    memset(r, 0, sizeof *r);
}

void store_request_list_free(store_request *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_request_free(&v[i]);
    }
    free(v);
}

/* --- audit --- */

kl_rc store_audit_append(store *s, const char *actor, const char *action, const char *detail)
{
    STORE_CHECK(s);
    ARG_CHECK(action && action[0], "audit entry without an action");
    /* these entries state what a row holds (store_audit.h): only the store writes them */
    ARG_CHECK(!store_audit_action_reserved(action),
              "that audit action is written by the store only");
    return st_audit_append(s, actor_or_default(actor), action, detail ? detail : "");
}

kl_rc store_audit_verify(store *s, int64_t *count)
{
    STORE_CHECK(s);
    store_audit_report r;
    memset(&r, 0, sizeof r);
    kl_rc rc = st_audit_verify_report(s, &r);
    if (count) {
        *count = r.entries;
    }
    return rc;
}

kl_rc store_audit_verify_report(store *s, store_audit_report *out)
{
    STORE_CHECK(s);
    ARG_CHECK(out, "store_audit_verify_report: missing argument");
    memset(out, 0, sizeof *out);
    return st_audit_verify_report(s, out);
}

kl_rc store_audit_checkpoint_make(store *s, const store_audit_signer *sg,
                                  store_audit_checkpoint *out, int *made)
{
    int dummy = 0;
    STORE_CHECK(s);
    ARG_CHECK(sg && sg->key_new && sg->sign, "store_audit_checkpoint_make: no signer");
    if (out) {
        memset(out, 0, sizeof *out);
    }
    made = made ? made : &dummy;
    *made = 0;
    return st_audit_checkpoint(s, sg, out, made);
}

kl_rc store_audit_key_get(store *s, char **label, uint8_t **spki, size_t *spki_len)
{
    STORE_CHECK(s);
    ARG_CHECK(label && spki && spki_len, "store_audit_key_get: missing argument");
    *label = NULL;
    *spki = NULL;
    *spki_len = 0;
    return st_audit_key_get(s, label, spki, spki_len);
}

void store_audit_checkpoint_free(store_audit_checkpoint *c)
{
    if (!c) {
        return;
    }
    free(c->sig);
    memset(c, 0, sizeof *c);
}

kl_rc store_audit_list(store *s, int64_t from_seq, store_audit **out, size_t *n)
{
    STORE_CHECK(s);
    ARG_CHECK(out && n, "store_audit_list: missing argument");
    *out = NULL;
    *n = 0;
    return st_audit_list(s, from_seq, out, n);
}

kl_rc store_audit_head(store *s, int64_t *seq, char hash[65])
{
    STORE_CHECK(s);
    ARG_CHECK(seq && hash, "store_audit_head: missing argument");
    return st_audit_head(s, seq, hash);
}

kl_rc store_write_stats(store *s, uint64_t *txns, uint64_t *ops)
{
    STORE_CHECK(s);
    ARG_CHECK(txns && ops, "store_write_stats: missing argument");
    *txns = *ops = 0;
    return st_write_stats(s, txns, ops);
}

void store_audit_free(store_audit *a)
{
    if (!a) {
        return;
    }
    free(a->actor);
    free(a->action);
    free(a->detail);
    memset(a, 0, sizeof *a);
}

void store_audit_list_free(store_audit *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        store_audit_free(&v[i]);
    }
    free(v);
}
