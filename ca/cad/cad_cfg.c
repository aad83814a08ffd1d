/* keyline-cad: [cad], [role NAME] and [profile NAME] configuration. */
#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cad.h"

#define CAD_DEFAULT_SOCKET "/run/keyline/cad.sock"

static int cad_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CAD_NAME_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) {
            return 0;
        }
    }
    return 1;
}

static int cad_role_index(const cad_cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nroles; i++) {
        if (strcmp(cfg->roles[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static kl_rc cad_role_add(cad_cfg *cfg, const char *name, int *idx)
{
    int i = cad_role_index(cfg, name);
    if (i >= 0) {
        *idx = i;
        return KL_OK;
    }
    if (!cad_name_ok(name)) {
        return kl_fail(KL_EINPUT, "role '%s': 1-%d characters of A-Z a-z 0-9 . _ -", name,
                       CAD_NAME_MAX);
    }
    if (cfg->nroles == CAD_MAX_ROLES) {
        return kl_fail(KL_EINPUT, "more than %d roles", CAD_MAX_ROLES);
    }
    cad_role *r = &cfg->roles[cfg->nroles];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->ops = UINT32_MAX;
    *idx = (int)cfg->nroles++;
    return KL_OK;
}

/* A comma- or space-separated list of [sec] key -> at most `max` tokens of under 128 bytes,
 * appended to tok[*n...]. */
static kl_rc cad_list_split(const char *sec, const char *key, const char *list, char tok[][128],
                            size_t max, size_t *n)
{
    kl_rc rc = KL_OK;
    char *dup = strdup(list), *save = NULL;
    ENSURE(dup, KL_EINTERNAL, "out of memory");
    for (char *t = strtok_r(dup, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        ENSURE(*n < max, KL_EINPUT, "[%s] %s: more than %zu", sec, key, max);
        ENSURE(strlen(t) < 128, KL_EINPUT, "[%s] %s: '%s' too long", sec, key, t);
        snprintf(tok[(*n)++], 128, "%s", t);
    }
    ENSURE(*n > 0, KL_EINPUT, "[%s] %s: empty", sec, key);
out:
    free(dup);
    return rc;
}

/* "keyline-est, 998" -> uids. */
static kl_rc cad_role_users(cad_role *r, const char *sec, const char *list)
{
    kl_rc rc = KL_OK;
    char tok[CAD_MAX_UIDS][128];
    size_t n = 0;
    TRY(cad_list_split(sec, "users", list, tok, CAD_MAX_UIDS - r->nuids, &n));
    for (size_t i = 0; i < n; i++) {
        char *end = NULL;
        unsigned long v = strtoul(tok[i], &end, 10);
        if (end && !*end) {
            r->uids[r->nuids++] = (uid_t)v;
            continue;
        }
        struct passwd pw, *res = NULL;
        char buf[2048];
        ENSURE(getpwnam_r(tok[i], &pw, buf, sizeof buf, &res) == 0 && res, KL_EINPUT,
               "[%s] users: no such user '%s'", sec, tok[i]);
        r->uids[r->nuids++] = res->pw_uid;
    }
out:
    return rc;
}

/* "issue, submit, poll" -> the op bits a role may ask (hello always). A front end's role
 * names only what it asks: a compromised keyline-estd then cannot claim the station's devices
 * or write their inventory, whatever profile it names. */
_Static_assert(CAP_OP__END <= 32, "cad_role.ops has a bit per op");

static kl_rc cad_role_ops(cad_role *r, const char *sec, const char *list)
{
    kl_rc rc = KL_OK;
    char tok[CAP_OP__END][128];
    size_t n = 0;
    TRY(cad_list_split(sec, "ops", list, tok, CAP_OP__END, &n));
    r->ops = UINT32_C(1) << CAP_OP_HELLO;
    for (size_t i = 0; i < n; i++) {
        unsigned op = 1;
        while (op < CAP_OP__END && strcmp(cap_op_name((uint8_t)op), tok[i]) != 0) {
            op++;
        }
        ENSURE(op < CAP_OP__END, KL_EINPUT, "[%s] ops: no op '%s' (docs/ca-protocol.md)", sec,
               tok[i]);
        r->ops |= UINT32_C(1) << op;
    }
out:
    return rc;
}

/* "cm-line-2, cm-line-3" -> the [station] ids a role may name. A production order is made for
 * a station id, and the station says its id in each request: without this list any station
 * of the role could use up or close another station's orders. */
static kl_rc cad_role_stations(cad_role *r, const char *sec, const char *list)
{
    kl_rc rc = KL_OK;
    TRY(cad_list_split(sec, "stations", list, r->stations, CAD_MAX_STATIONS - r->nstations,
                       &r->nstations));
    for (size_t i = 0; i < r->nstations; i++) {
        ENSURE(cad_name_ok(r->stations[i]), KL_EINPUT,
               "[%s] stations: '%s': 1-%d characters of A-Z a-z 0-9 . _ -", sec, r->stations[i],
               CAD_NAME_MAX);
    }
out:
    return rc;
}

int cad_roles_station_ok(const cad_cfg *cfg, uint32_t roles, const char *id)
{
    for (size_t i = 0; i < cfg->nroles; i++) {
        const cad_role *r = &cfg->roles[i];
        if (!(roles & (UINT32_C(1) << i))) {
            continue;
        }
        if (r->nstations == 0) {
            return 1;
        }
        for (size_t j = 0; j < r->nstations; j++) {
            if (strcmp(r->stations[j], id) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

static kl_rc cad_profile_add(cad_cfg *cfg, const char *name, const char *issuer,
                             const char *template_name, const char *clients)
{
    kl_rc rc = KL_OK;
    char sec[CAD_NAME_MAX + 16], roles[CAD_MAX_ROLES][128];
    size_t nroles = 0;
    ENSURE(cad_name_ok(name), KL_EINPUT, "profile '%s': 1-%d characters of A-Z a-z 0-9 . _ -", name,
           CAD_NAME_MAX);
    ENSURE(!cad_profile_find(cfg, name), KL_EINPUT, "profile '%s' is defined twice", name);
    ENSURE(cfg->nprofiles < CAD_MAX_PROFILES, KL_EINPUT, "more than %d profiles", CAD_MAX_PROFILES);
    ENSURE(issuer && *issuer && strlen(issuer) < 129, KL_EINPUT,
           "[profile %s] issuer is not set (the CA label that signs)", name);
    ENSURE(template_name && *template_name && strlen(template_name) < 129, KL_EINPUT,
           "[profile %s] template is not set", name);
    ENSURE(clients && *clients, KL_EINPUT,
           "[profile %s] clients is not set (the roles that may use it)", name);
    cad_profile *p = &cfg->profiles[cfg->nprofiles];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->issuer, sizeof p->issuer, "%s", issuer);
    snprintf(p->template_name, sizeof p->template_name, "%s", template_name);
    snprintf(sec, sizeof sec, "profile %s", name);
    TRY(cad_list_split(sec, "clients", clients, roles, CAD_MAX_ROLES, &nroles));
    for (size_t i = 0; i < nroles; i++) {
        int idx = -1;
        TRY(cad_role_add(cfg, roles[i], &idx));
        p->clients |= UINT32_C(1) << idx;
    }
    cfg->nprofiles++;
out:
    return rc;
}

const cad_profile *cad_profile_find(const cad_cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nprofiles; i++) {
        if (strcmp(cfg->profiles[i].name, name) == 0) {
            return &cfg->profiles[i];
        }
    }
    return NULL;
}

/* ca_conf_profiles' callback: one profile into cfg. */
static kl_rc cad_profile_add_cb(void *arg, const char *name, const char *issuer,
                                const char *template_name, const char *clients)
{
    return cad_profile_add(arg, name, issuer, template_name, clients);
}

static kl_rc cad_socket_opts(cad_cfg *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    long v = 0;
    cfg->socket_path = kl_conf_path(conf, "cad", "socket");
    if (!cfg->socket_path) {
        cfg->socket_path = strdup(CAD_DEFAULT_SOCKET);
    }
    ENSURE(cfg->socket_path, KL_EINTERNAL, "out of memory");
    const char *mode = kl_conf_get_default(conf, "cad", "socket-mode", "0660");
    char *end = NULL;
    unsigned long m = strtoul(mode, &end, 8);
    ENSURE(*mode && end && !*end && m <= 0777, KL_EINPUT,
           "[cad] socket-mode '%s' is not an octal mode such as 0660", mode);
    cfg->socket_mode = (unsigned)m;
    cfg->socket_gid = (gid_t)-1;
    const char *grp = kl_conf_get(conf, "cad", "socket-group");
    if (grp) {
        struct group g, *res = NULL;
        char buf[4096];
        ENSURE(getgrnam_r(grp, &g, buf, sizeof buf, &res) == 0 && res, KL_EINPUT,
               "[cad] socket-group: no such group '%s'", grp);
        cfg->socket_gid = res->gr_gid;
    }
    TRY(kl_conf_get_long(conf, "cad", "max-connections", 256, 1, 4096, &v));
    cfg->max_conns = (unsigned)v;
    /* default: a quarter, half of the handshake half (cad_server.c), so that one address
     * holding its share leaves as much to the others; a keyline-estd opens up to [est] workers
     * connections at once at its start */
    long quarter = v / 4 ? v / 4 : 1;
    TRY(kl_conf_get_long(conf, "cad", "max-handshakes-per-ip", quarter, 0, 4096, &v));
    cfg->max_hs_per_ip = (unsigned)v;
    const char *listen = kl_conf_get(conf, "cad", "listen");
    if (listen) {
        cfg->listen = strdup(listen);
        cfg->tls_cert = kl_conf_path(conf, "cad", "tls-cert");
        cfg->tls_key = kl_conf_path(conf, "cad", "tls-key");
        cfg->tls_client_ca = kl_conf_path(conf, "cad", "tls-client-ca");
        ENSURE(cfg->listen, KL_EINTERNAL, "out of memory");
    }
out:
    return rc;
}

kl_rc cad_cfg_load(cad_cfg *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    memset(cfg, 0, sizeof *cfg);
    TRY(cad_socket_opts(cfg, conf));
    for (size_t i = 0;; i++) {
        const char *sec = kl_conf_section(conf, i);
        if (!sec) {
            break;
        }
        if (strncmp(sec, "role ", 5) == 0) {
            int idx = -1;
            TRY(cad_role_add(cfg, sec + 5, &idx));
            const char *users = kl_conf_get(conf, sec, "users");
            const char *certs = kl_conf_get(conf, sec, "certs");
            ENSURE(users || certs, KL_EINPUT,
                   "[%s] needs users (user names or uids) or certs (front-end certificate CNs)",
                   sec);
            if (users) {
                TRY(cad_role_users(&cfg->roles[idx], sec, users));
            }
            if (certs) {
                cad_role *r = &cfg->roles[idx];
                TRY(cad_list_split(sec, "certs", certs, r->certs, CAD_MAX_UIDS, &r->ncerts));
            }
            const char *ops = kl_conf_get(conf, sec, "ops");
            if (ops) {
                TRY(cad_role_ops(&cfg->roles[idx], sec, ops));
            }
            const char *stations = kl_conf_get(conf, sec, "stations");
            if (stations) {
                TRY(cad_role_stations(&cfg->roles[idx], sec, stations));
            }
        }
    }
    /* [profile NAME] sections, else the profiles [est] and [station] imply (ca_profiles.c) */
    TRY(ca_conf_profiles(conf, cad_profile_add_cb, cfg));
    /* A role no [role] section binds is this daemon's own user (one-user deployments). */
    for (size_t i = 0; i < cfg->nroles; i++) {
        if (cfg->roles[i].nuids == 0 && cfg->roles[i].ncerts == 0) {
            cfg->roles[i].uids[0] = geteuid();
            cfg->roles[i].nuids = 1;
        }
    }
out:
    if (rc != KL_OK) {
        cad_cfg_free(cfg);
    }
    return rc;
}

void cad_cfg_free(cad_cfg *cfg)
{
    free(cfg->socket_path);
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_client_ca);
    cfg->socket_path = cfg->listen = cfg->tls_cert = cfg->tls_key = cfg->tls_client_ca = NULL;
}
