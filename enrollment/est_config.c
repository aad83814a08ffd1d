/* keyline-estd: the [est] configuration section (a contract: see docs/est.md). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "est.h"

static char *est_strdup_or_null(const char *s)
{
    return (s && *s) ? strdup(s) : NULL;
}

static kl_rc est_config_approval(const char *sec, const char *v, int *manual)
{
    if (strcmp(v, "auto") == 0 || strcmp(v, "manual") == 0) {
        *manual = strcmp(v, "manual") == 0;
        return KL_OK;
    }
    return kl_fail(KL_EUSAGE, "[%s] approval = %s: expected auto or manual", sec, v);
}

static char *est_strdup_opt(const char *s, int *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) {
        *oom = 1;
    }
    return d;
}

/* profile: the keyline-cad profile the label asks for; issuer/template (may be NULL when a
 * profile is named) are what keyline-cad derives the default profiles from. */
static kl_rc est_config_label_add(est_config *c, const char *name, const char *profile,
                                  const char *issuer, const char *template_name,
                                  int approval_manual)
{
    if (strlen(name) >= EST_LABEL_MAX) {
        return kl_fail(KL_EUSAGE, "[est.label %s]: label too long", name);
    }
    est_label *l = realloc(c->labels, (c->n_labels + 1) * sizeof *l);
    if (!l) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    c->labels = l;
    l = &c->labels[c->n_labels];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    int oom = 0;
    char dflt[EST_LABEL_MAX + 8];
    snprintf(dflt, sizeof dflt, "%s%s", *name ? "est." : "est", name);
    l->profile = est_strdup_opt(profile ? profile : dflt, &oom);
    l->issuer = est_strdup_opt(issuer, &oom);
    l->template_name = est_strdup_opt(template_name, &oom);
    l->approval_manual = approval_manual;
    c->n_labels++;
    if (oom) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    return KL_OK;
}

static kl_rc est_config_uint(const kl_conf *conf, const char *key, long dflt, long min, long max,
                             unsigned *out)
{
    long v;
    kl_rc rc = kl_conf_get_long(conf, "est", key, dflt, min, max, &v);
    if (rc == KL_OK) {
        *out = (unsigned)v;
    }
    return rc;
}

static kl_rc est_config_listen(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    char host[256];
    uint16_t port;
    const char *listen = kl_conf_get_default(conf, "est", "listen", "127.0.0.1:8443");
    TRY(kl_hostport_parse(listen, host, sizeof host, &port));
    c->listen = strdup(listen);
    c->http_listen = est_strdup_or_null(kl_conf_get(conf, "est", "http-listen"));
    if (c->http_listen) {
        TRY(kl_hostport_parse(c->http_listen, host, sizeof host, &port));
    }
    c->metrics_listen = est_strdup_or_null(kl_conf_get(conf, "est", "metrics-listen"));
    if (c->metrics_listen) {
        TRY(kl_hostport_parse(c->metrics_listen, host, sizeof host, &port));
    }
out:
    return rc;
}

static kl_rc est_config_cad(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    /* one configuration serves both: keyline-cad listens on [cad] socket */
    /* a list of addresses (cac.h); relative socket paths are taken from the configuration's
     * folder by cac_open_cfg */
    c->cad = est_strdup_or_null(kl_conf_get(conf, "est", "cad"));
    if (!c->cad) {
        c->cad = kl_conf_path(conf, "cad", "socket");
    }
    if (!c->cad) {
        c->cad = strdup(EST_CAD_SOCKET_DEFAULT);
    }
    ENSURE(c->cad, KL_EINTERNAL, "out of memory");
    TRY(est_config_uint(conf, "cad-timeout", 30, 1, 600, &c->cad_timeout));
    /* keyline-cad on another host (a tls: address): this front end's certificate and key, and
     * the CA that issued keyline-cad's certificate */
    c->cad_tls_cert = kl_conf_path(conf, "est", "cad-tls-cert");
    c->cad_tls_key = kl_conf_path(conf, "est", "cad-tls-key");
    c->cad_tls_ca = kl_conf_path(conf, "est", "cad-tls-ca");
out:
    return rc;
}

static const struct {
    const char *name;
    est_cb_mode mode;
} est_cb_names[] = {
    {"off", EST_CB_OFF},
    {"optional", EST_CB_OPTIONAL},
    {"required", EST_CB_REQUIRED},
};

/* The server's own TLS: certificate, key (file or token), priorities, client checks. */
static kl_rc est_config_tls(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    c->tls_cert = kl_conf_path(conf, "est", "tls-cert");
    c->tls_key = kl_conf_path(conf, "est", "tls-key");
    ENSURE(c->tls_cert, KL_EUSAGE, "[est] tls-cert is not set (PEM file: leaf, then chain)");
    ENSURE(c->tls_key, KL_EUSAGE,
           "[est] tls-key is not set (PEM file, or pkcs11: URI of a key on a token of its own)");
    c->tls_key_pin = est_strdup_or_null(kl_conf_get(conf, "est", "tls-key-pin"));
    c->tls_key_module = kl_conf_path(conf, "est", "tls-key-module");
    if (!c->tls_key_module) {
        c->tls_key_module = est_strdup_or_null(kl_conf_get(conf, "hsm", "module"));
    }
    c->tls_priorities =
        strdup(kl_conf_get_default(conf, "est", "tls-priorities", EST_DEFAULT_PRIORITIES));
    c->htpasswd = kl_conf_path(conf, "est", "htpasswd");

    const char *cb = kl_conf_get_default(conf, "est", "channel-binding", "off");
    size_t i = 0;
    while (i < sizeof est_cb_names / sizeof est_cb_names[0] &&
           strcmp(cb, est_cb_names[i].name) != 0) {
        i++;
    }
    ENSURE(i < sizeof est_cb_names / sizeof est_cb_names[0], KL_EUSAGE,
           "[est] channel-binding = %s: expected off, optional or required", cb);
    c->channel_binding = est_cb_names[i].mode;
out:
    return rc;
}

/* client-ca: space-separated CA labels */
static kl_rc est_config_client_ca(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    const char *cas = kl_conf_get_default(conf, "est", "client-ca", "");
    char *dup = strdup(cas), *save = NULL;
    ENSURE(dup, KL_EINTERNAL, "out of memory");
    for (char *t = strtok_r(dup, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
        char **n = realloc(c->client_ca, (c->n_client_ca + 1) * sizeof *n);
        if (n) {
            c->client_ca = n;
            n[c->n_client_ca] = strdup(t);
        }
        ENSURE(n && n[c->n_client_ca], KL_EINTERNAL, "out of memory");
        c->n_client_ca++;
    }
out:
    free(dup);
    return rc;
}

/* [est] counts and times: key, default, least, most, and where it goes (a row is a read of the
 * key for scripts/conf-keys-check). */
#define EST_CONF_UINT(key, dflt, min, max, field)                                                  \
    {                                                                                              \
        key, dflt, min, max, offsetof(est_config, field)                                           \
    }
static const struct {
    const char *key;
    long dflt, min, max;
    size_t off;
} est_config_limits_tab[] = {
    EST_CONF_UINT("max-connections", 1024, 1, 65536, max_connections),
    /* One address must not take every slot (slowloris): 64 by default, 0 for no limit. */
    EST_CONF_UINT("max-connections-per-ip", 64, 0, 65536, per_ip_connections),
    EST_CONF_UINT("timeout", 30, 1, 3600, timeout),
    /* The inactivity timeout alone lets a client that sends a byte now and then hold a slot
     * forever: a request must also arrive whole (headers and body) within this. */
    EST_CONF_UINT("request-timeout", 30, 1, 3600, request_timeout),
    EST_CONF_UINT("threads", 2, 1, 256, threads),
    EST_CONF_UINT("workers", 16, 0, 1024, workers),
    EST_CONF_UINT("shutdown-grace", 30, 0, 3600, shutdown_grace),
    /* GnuTLS takes a ticket up to 6 h old by the wall clock; the key lives this long by the
     * monotonic one (est_server.c, est_ticket). */
    EST_CONF_UINT("ticket-key-lifetime", 21600, 0, 21600, ticket_key_lifetime),
};

static kl_rc est_config_limits(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    long body;
    TRY(kl_conf_get_long(conf, "est", "max-body", 64 * 1024, 1024, 16 * 1024 * 1024, &body));
    c->max_body = (size_t)body;
    for (size_t i = 0; i < sizeof est_config_limits_tab / sizeof est_config_limits_tab[0]; i++) {
        TRY(est_config_uint(conf, est_config_limits_tab[i].key, est_config_limits_tab[i].dflt,
                            est_config_limits_tab[i].min, est_config_limits_tab[i].max,
                            (unsigned *)((char *)c + est_config_limits_tab[i].off)));
    }
    const char *skg = kl_conf_get_default(conf, "est", "serverkeygen", "on");
    c->serverkeygen = strcmp(skg, "off") != 0 && strcmp(skg, "no") != 0 && strcmp(skg, "0") != 0;
out:
    return rc;
}

/* [est.label NAME] (sec): issuer and template, defaulting to the [est] values. */
static kl_rc est_config_label_section(const kl_conf *conf, est_config *c, const char *sec,
                                      const char *issuer, const char *tmpl, const char *appr)
{
    kl_rc rc = KL_OK;
    const char *name = sec + 10;
    est_route r;
    char path[128];
    snprintf(path, sizeof path, "/.well-known/est/%s/cacerts", name);
    ENSURE(est_route_parse(path, &r) == KL_OK, KL_EUSAGE,
           "[%s]: a label is 1-63 characters of A-Z a-z 0-9 . _ -", sec);
    ENSURE(!est_config_label(c, name), KL_EUSAGE, "[%s] appears twice", sec);
    int lm = 0;
    TRY(est_config_approval(sec, kl_conf_get_default(conf, sec, "approval", appr), &lm));
    const char *lp = kl_conf_get(conf, sec, "profile");
    const char *li = kl_conf_get_default(conf, sec, "issuer", issuer);
    ENSURE(li || lp, KL_EUSAGE, "[%s]: neither issuer nor profile is set", sec);
    TRY(est_config_label_add(c, name, lp, li, kl_conf_get_default(conf, sec, "template", tmpl),
                             lm));
out:
    return rc;
}

/* The default label ([est] issuer, template, profile, approval), then every [est.label]. */
static kl_rc est_config_labels(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    const char *issuer = kl_conf_get(conf, "est", "issuer");
    const char *tmpl = kl_conf_get_default(conf, "est", "template", "device-ldevid");
    const char *profile = kl_conf_get(conf, "est", "profile");
    if (issuer && !*issuer) {
        issuer = NULL;
    }
    ENSURE(issuer || (profile && *profile), KL_EUSAGE,
           "[est] issuer is not set (the CA label that signs; or name a keyline-cad profile with "
           "[est] profile)");
    TRY(est_config_uint(conf, "retry-after", 60, 1, 86400, &c->retry_after));
    const char *appr = kl_conf_get_default(conf, "est", "approval", "auto");
    int manual = 0;
    TRY(est_config_approval("est", appr, &manual));
    TRY(est_config_label_add(c, "", profile, issuer, tmpl, manual));
    const char *sec;
    for (size_t i = 0; (sec = kl_conf_section(conf, i)) != NULL; i++) {
        if (strncmp(sec, "est.label ", 10) == 0) {
            TRY(est_config_label_section(conf, c, sec, issuer, tmpl, appr));
        }
    }
out:
    return rc;
}

kl_rc est_config_load(const kl_conf *conf, est_config *c)
{
    kl_rc rc = KL_OK;
    memset(c, 0, sizeof *c);
    TRY(est_config_listen(conf, c));
    TRY(est_config_cad(conf, c));
    TRY(est_config_tls(conf, c));
    TRY(est_config_client_ca(conf, c));
    TRY(est_config_limits(conf, c));
    TRY(est_config_labels(conf, c));
out:
    if (rc != KL_OK) {
        est_config_free(c);
    }
    return rc;
}

void est_config_free(est_config *c)
{
    free(c->listen);
    free(c->http_listen);
    free(c->metrics_listen);
    free(c->cad);
    free(c->cad_tls_cert);
    free(c->cad_tls_key);
    free(c->cad_tls_ca);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_key_pin);
    free(c->tls_key_module);
    free(c->tls_priorities);
    free(c->htpasswd);
    for (size_t i = 0; i < c->n_client_ca; i++) {
        free(c->client_ca[i]);
    }
    free(c->client_ca);
    for (size_t i = 0; i < c->n_labels; i++) {
        free(c->labels[i].profile);
        free(c->labels[i].issuer);
        free(c->labels[i].template_name);
    }
    free(c->labels);
    memset(c, 0, sizeof *c);
}

const est_label *est_config_label(const est_config *c, const char *name)
{
    if (!name) {
        name = "";
    }
    for (size_t i = 0; i < c->n_labels; i++) {
        if (strcmp(c->labels[i].name, name) == 0) {
            return &c->labels[i];
        }
    }
    return NULL;
}

void est_config_obsolete(const kl_conf *conf, char *out, size_t outlen)
{
    /* keyline-estd's signer processes are gone: keyline-cad holds the token, and which CA keys it
     * signs CRLs with is [cad] ca-keys */
    static const char *const keys[] = {"signer", "signer-processes", "ca-keys"};
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && used < outlen; i++) {
        if (kl_conf_get(conf, "est", keys[i])) {
            used += (size_t)snprintf(out + used, outlen - used, "%s[est] %s", used ? ", " : "",
                                     keys[i]);
        }
    }
}
