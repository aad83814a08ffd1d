/* keyline: every section and key keyline.conf may hold, in one place.
 *
 * kl_conf_load() refuses anything else (file:line and the closest known name), so a typo such
 * as `channel-bindings = required` stops the program instead of leaving channel binding off.
 * One file configures every binary: a key only keyline-estd reads is still known to keyline-ca.
 *
 * Adding a key: a row here (section, key, default or what applies instead, flags), the code
 * that reads it, its entry in docs/man/keyline.conf.5 and a line in packaging/keyline.conf.in.
 * scripts/conf-keys-check (ctest docs.conf.keys) compares this table with the man page and
 * with the keys the code reads. Defaults here are what `keyline-ca config check` shows; the
 * reader's own default is what applies, so keep them equal (the man page states both). */
#include "kl_conf.h"

#define P KL_CONF_K_PATH
#define S KL_CONF_K_SECRET
#define O KL_CONF_K_OBSOLETE

/* Rows of one section stay together, in the order of keyline.conf(5). A section ending in
 * " *" takes a name: "est.label *" is [est.label NAME]. */
static const kl_conf_key kl_conf_key_table[] = {
    /* the token that holds the CA keys */
    {"hsm", "module", NULL, "required", 0},
    {"hsm", "token", NULL, "required", 0},
    {"hsm", "pin", NULL, "required for the token", S},
    {"hsm", "softhsm2-conf", NULL, NULL, P},
    /* a CA on a token of its own (an offline root): [hsm LABEL], LABEL the CA's */
    {"hsm *", "module", NULL, "[hsm] module", P},
    {"hsm *", "token", NULL, "required", 0},
    {"hsm *", "pin", NULL, "required", S},

    {"store", "path", NULL, "required (or url)", P},
    {"store", "url", NULL, "path", 0},

    {"ca", "templates", NULL, "the installed templates", P},
    {"ca", "crl-url", NULL, NULL, 0},
    {"ca", "ocsp-url", NULL, NULL, 0},
    {"ca", "ca-issuers-url", NULL, NULL, 0},
    {"ca", "crl-days", "7", NULL, 0},
    /* one CA's settings: [ca LABEL] */
    {"ca *", "crl-partition-size", NULL, "none: one CRL for the CA", 0},

    /* quorum ceremonies (ca/ceremony.h): 0 none, M: M officers approve each CA operation */
    {"ceremony", "quorum", "0", NULL, 0},
    {"ceremony", "release-keys", NULL, NULL, 0},

    /* keyline-cad, the CA service */
    {"cad", "socket", "/run/keyline/cad.sock", NULL, P},
    {"cad", "socket-mode", "0660", NULL, 0},
    {"cad", "socket-group", NULL, "the daemon's own group", 0},
    {"cad", "max-connections", "256", NULL, 0},
    {"cad", "max-handshakes-per-ip", NULL, "a quarter of max-connections", 0},
    {"cad", "listen", NULL, NULL, 0},
    {"cad", "tls-cert", NULL, "required with listen", P},
    {"cad", "tls-key", NULL, "required with listen", P},
    {"cad", "tls-client-ca", NULL, "required with listen", P},
    {"cad", "ca-keys", "intermediates", NULL, 0},
    {"cad", "audit-checkpoint-every", "100", NULL, 0},
    {"cad", "audit-checkpoint-seconds", "60", NULL, 0},
    {"cad", "ocsp-preproduce", "65536", NULL, 0},
    {"cad", "ocsp-validity", "86400", NULL, 0},

    {"role *", "users", NULL, "users or certs required", 0},
    {"role *", "certs", NULL, "users or certs required", 0},
    {"role *", "ops", NULL, "every op", 0},
    {"role *", "stations", NULL, "any", 0},

    {"profile *", "issuer", NULL, "required", 0},
    {"profile *", "template", NULL, "required", 0},
    {"profile *", "clients", NULL, "required", 0},

    /* keyline-estd, the EST server */
    {"est", "listen", "127.0.0.1:8443", NULL, 0},
    {"est", "http-listen", NULL, NULL, 0},
    /* /metrics and /healthz on a plain-HTTP listener of their own */
    {"est", "metrics-listen", NULL, NULL, 0},
    {"est", "cad", NULL, "[cad] socket", P},
    {"est", "cad-timeout", "30", NULL, 0},
    /* keyline-cad on another host (a tls: address of [est] cad) */
    {"est", "cad-tls-cert", NULL, "required with a tls: address", P},
    {"est", "cad-tls-key", NULL, "required with a tls: address", P},
    {"est", "cad-tls-ca", NULL, "required with a tls: address", P},
    {"est", "tls-cert", NULL, "required", P},
    {"est", "tls-key", NULL, "required", P},
    {"est", "tls-key-module", NULL, "[hsm] module", P},
    {"est", "tls-key-pin", NULL, "required for a pkcs11: tls-key", S},
    {"est", "tls-priorities", NULL, "TLS 1.2 and 1.3, AEAD ciphers, ECDHE", 0},
    {"est", "issuer", NULL, "required unless profile is set", 0},
    {"est", "template", "device-ldevid", NULL, 0},
    {"est", "profile", NULL, "est: derived from issuer and template", 0},
    {"est", "client-ca", NULL, NULL, 0},
    {"est", "htpasswd", NULL, NULL, P},
    {"est", "channel-binding", "off", NULL, 0},
    {"est", "approval", "auto", NULL, 0},
    {"est", "retry-after", "60", NULL, 0},
    {"est", "serverkeygen", "on", NULL, 0},
    {"est", "max-body", "65536", NULL, 0},
    {"est", "max-connections", "1024", NULL, 0},
    {"est", "max-connections-per-ip", "64", NULL, 0},
    {"est", "timeout", "30", NULL, 0},
    {"est", "request-timeout", "30", NULL, 0},
    {"est", "shutdown-grace", "30", NULL, 0},
    {"est", "ticket-key-lifetime", "21600", NULL, 0},
    {"est", "threads", "2", NULL, 0},
    {"est", "workers", "16", NULL, 0},
    /* a server that logged into the token itself; keyline-estd through keyline-cad warns */
    {"est", "signer", NULL, NULL, O},
    {"est", "signer-processes", NULL, NULL, O},
    {"est", "ca-keys", NULL, NULL, O},

    {"est.label *", "issuer", NULL, "the [est] value", 0},
    {"est.label *", "template", NULL, "the [est] value", 0},
    {"est.label *", "profile", NULL, "est.NAME: derived from issuer and template", 0},
    {"est.label *", "approval", NULL, "the [est] value", 0},

    /* keyline-provision, the factory station */
    {"station", "issuer", NULL, "required unless profile is set", 0},
    {"station", "template", "device-idevid", NULL, 0},
    {"station", "profile", NULL, "station: derived from issuer and template", 0},
    {"station", "cad", NULL, "[cad] socket", P},
    {"station", "cad-timeout", "30", NULL, 0},
    {"station", "cad-tls-cert", NULL, "required with a tls: address", P},
    {"station", "cad-tls-key", NULL, "required with a tls: address", P},
    {"station", "cad-tls-ca", NULL, "required with a tls: address", P},
    {"station", "mode", "csr", NULL, 0},
    {"station", "baud", "115200", NULL, 0},
    {"station", "timeout-ms", "1000", NULL, 0},
    {"station", "slow-timeout-ms", NULL, "5000, or timeout-ms if that is longer", 0},
    {"station", "retries", "3", NULL, 0},
    {"station", "pending-window", "3600", NULL, 0},
    {"station", "est-url", NULL, NULL, 0},
    {"station", "firmware-keys", NULL, NULL, 0},
    {"station", "results", NULL, NULL, P},
    /* Matter devices (docs/matter.md) */
    {"station", "matter", "no", NULL, 0},
    {"station", "matter-vid", NULL, "required with matter = yes", 0},
    {"station", "matter-pid", NULL, "required with matter = yes", 0},
    {"station", "matter-cd", NULL, "required with matter = yes", P},
    {"station", "matter-iterations", "10000", NULL, 0},
    {"station", "matter-keep-passcode", "no", NULL, 0},
    {"station", "labels", NULL, NULL, P},
    {"station", "id", NULL, NULL, 0},
    {"station", "dashboard", NULL, NULL, 0},
    {"station", "dashboard-users", NULL, NULL, P},

    /* every daemon (kl_log_configure) */
    {"log", "format", "text", NULL, 0},
};

const kl_conf_key *kl_conf_keys(size_t *n)
{
    *n = sizeof kl_conf_key_table / sizeof kl_conf_key_table[0];
    return kl_conf_key_table;
}
