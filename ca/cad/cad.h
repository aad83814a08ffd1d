/* keyline-cad: the CA service. The only process that holds the PIN, the PKCS#11 session and
 * write access to the store; front ends (keyline-estd, keyline-provision) ask it for whole
 * operations on named profiles over the CA protocol (ca/client/cap.h, docs/ca-protocol.md).
 *
 * Roles are bound to what the daemon verifies itself: the peer uid (SO_PEERCRED) on its Unix
 * socket. Audit actors come from the same place, never from anything the front end says about
 * itself beyond "this is what I authenticated". */
#ifndef KL_CAD_H
#define KL_CAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "ca.h"
#include "cap.h"
#include "kl_conf.h"

#define CAD_NAME_MAX 64
#define CAD_MAX_ROLES 32
#define CAD_MAX_PROFILES 64
#define CAD_MAX_UIDS 16
#define CAD_MAX_STATIONS 16
/* the template of front ends' certificates on the TCP listener (templates/frontend.tmpl) */
#define CAD_FRONTEND_TEMPLATE "frontend"

typedef struct {
    char name[CAD_NAME_MAX + 1];
    uid_t uids[CAD_MAX_UIDS];
    size_t nuids;
    char certs[CAD_MAX_UIDS][128]; /* front-end certificate subject CNs (TCP listener) */
    size_t ncerts;
    uint32_t ops; /* bit op: the role may ask it ([role NAME] ops; default every op) */
    char stations[CAD_MAX_STATIONS][128]; /* [role NAME] stations: the [station] ids it may name */
    size_t nstations;                     /* 0: any */
} cad_role;

typedef struct {
    char name[CAD_NAME_MAX + 1];
    char issuer[129];
    char template_name[129];
    uint32_t clients; /* bit i: roles[i] may use it */
} cad_profile;

typedef struct {
    cad_role roles[CAD_MAX_ROLES];
    size_t nroles;
    cad_profile profiles[CAD_MAX_PROFILES];
    size_t nprofiles;
    char *socket_path; /* resolved */
    unsigned socket_mode;
    gid_t socket_gid; /* (gid_t)-1: leave as created */
    unsigned max_conns;
    unsigned max_hs_per_ip; /* TLS handshakes at once from one source address; 0: no limit */
    char *listen;           /* [cad] listen HOST:PORT (mutual TLS), NULL: none */
    char *tls_cert;         /* resolved paths */
    char *tls_key;
    char *tls_client_ca;
} cad_cfg;

/* Read [cad], [role NAME] and [profile NAME] (see keyline-cad(8) / docs/ca-protocol.md).
 * Without [profile] sections, profiles are derived from [est] (profile "est", labels
 * "est.LABEL") and [station] ("station"), open to the role of the same name; a role without a
 * [role] section is the daemon's own uid (one-user deployments, as before keyline-cad).
 * KL_EINPUT naming the section and key for anything malformed. */
kl_rc cad_cfg_load(cad_cfg *cfg, const kl_conf *conf) KL_WUR;
void cad_cfg_free(cad_cfg *cfg);
const cad_profile *cad_profile_find(const cad_cfg *cfg, const char *name);
/* Whether a peer with `roles` may name station `id` in a request (issue, order, order-close):
 * some role of it lists the id in [role NAME] stations, or names no stations. */
int cad_roles_station_ok(const cad_cfg *cfg, uint32_t roles, const char *id);

/* What the daemon knows of a connected front end. */
typedef struct {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    char user[64];   /* user name of uid, or the number; "CN=..." over TLS */
    char host[256];  /* where the peer runs: this host, or "frontend CN" over TLS */
    uint32_t roles;  /* bit i: cfg->roles[i] */
    char actor[512]; /* "uid 998 (keyline-est) as est" */
} cad_peer;

typedef struct cad_rev cad_rev;
typedef struct cad_conn cad_conn;

/* Refusals that a peer without a certificate can cause as fast as it opens connections, logged
 * once per burst: the first at once, then one line with how many more at most once a minute
 * while they go on, and one when they stop (cad_server.c). Under cad.lock. */
typedef struct {
    int on;                          /* a burst is going on */
    unsigned long n;                 /* refused since the last line */
    unsigned long total;             /* in this burst */
    long first_ms, line_ms, last_ms; /* CLOCK_MONOTONIC */
    char last[300];                  /* why the last one was refused */
} cad_burst;

typedef struct {
    const kl_conf *conf;
    cad_cfg cfg;
    ca_ctx *ca;
    cad_rev *rev;
    char instance[33]; /* random per daemon start (claims) */
    volatile int stop;
    int listen_fd;
    int tcp_fd;   /* -1: no TCP listener */
    SSL_CTX *tls; /* the TCP listener's context */
    pthread_mutex_t lock;
    unsigned nconns;
    unsigned nhandshakes;  /* TCP connections not yet identified (TLS handshake) */
    cad_conn *handshaking; /* those connections, each source address's share counted (lock) */
    cad_conn *conns;       /* identified connections, each peer's share counted (under lock) */
    cad_burst refused;     /* connections refused at accept: a connection limit */
    cad_burst failed;      /* TLS handshakes that failed before a certificate was verified */
} cad;

/* Answer one request: `rsp` gets a whole frame (success or refusal). Never fails: a refusal
 * is an answer. Exposed for tests and the fuzzer. */
void cad_dispatch(cad *d, const cad_peer *peer, const cap_msg *req, kl_buf *rsp);
/* Fill `peer` from the connected socket (SO_PEERCRED) and map it to roles. */
kl_rc cad_peer_identify(const cad *d, int fd, cad_peer *peer) KL_WUR;

/* CRLs and OCSP answers from caches (cad_rev.c). cad_rev_crl appends the crl field of a fresh
 * CRL of CA `label` (re-signed when its revocation epoch moved or half-way to nextUpdate, or
 * the officer's published one for a root); cad_rev_ocsp the ocsp-resp field answering a DER
 * OCSP request. KL_ENOTFOUND for an unknown CA or an unpublished root CRL. */
kl_rc cad_rev_new(cad *d, cad_rev **out) KL_WUR;
void cad_rev_free(cad_rev *r);
kl_rc cad_rev_crl(cad_rev *r, const char *label, kl_buf *out) KL_WUR;
kl_rc cad_rev_ocsp(cad_rev *r, const uint8_t *der, size_t len, kl_buf *out) KL_WUR;

/* The TCP listener ([cad] listen, tls-cert, tls-key, tls-client-ca): nothing when listen is
 * unset. cad_tls_peer identifies a connected front end by its verified certificate. */
kl_rc cad_tls_setup(cad *d) KL_WUR;
kl_rc cad_tls_peer(const cad *d, SSL *ssl, cad_peer *peer) KL_WUR;

/* The socket: create it (removing a stale one), listen, serve until d->stop, one thread per
 * connection (at most max_conns). */
kl_rc cad_serve(cad *d) KL_WUR;

#endif
