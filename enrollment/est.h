/* keyline-estd internals: EST (RFC 7030, RFC 8951) server on libmicrohttpd + GnuTLS.
 *
 * Layout (one concern per file; see docs/est.md for the operator view):
 *   est_config.c      [est] and [est.label NAME] sections -> est_config
 *   est_codec.c       pure wire formats: routing, media types, body decoding, csrattrs,
 *                     multipart, certs-only PKCS#7, Basic credentials (unit-tested, fuzzable)
 *   est_auth.c        TLS peer verification, channel binding (htpasswd: common/kl_http.c)
 *   est_handlers.c    the RFC 7030 endpoints: authenticate, then ask keyline-cad
 *   est_cad.c         the requests to keyline-cad (ca/client: the CA protocol), nothing else
 *                     of the CA: no PIN, no token, no store (docs/ca-protocol.md)
 *   est_revocation.c  /crl/<label>.crl and /ocsp: HTTP in front of keyline-cad's crl and ocsp
 *   est_metrics.c     Prometheus counters and the issuance histogram (atomics)
 *   est_server.c      MHD daemons, TLS set-up, limits, request glue, access log
 *   est_main.c        argument parsing and signal handling only
 *
 * Nothing here prints except through kl_log; nothing exits. Every error is a kl_rc. */
#ifndef KL_EST_H
#define KL_EST_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cac.h"
#include "kl_buf.h"
#include "kl_conf.h"
#include "kl_err.h"
#include "kl_http.h"

/* ------------------------------------------------------------------------------------------
 * Configuration (est_config.c)
 * ------------------------------------------------------------------------------------------ */

typedef enum { EST_CB_OFF = 0, EST_CB_OPTIONAL, EST_CB_REQUIRED } est_cb_mode;

/* A label and its NUL: keyline-ca's CA labels are 1..63 characters (CA_LABEL_MAX). */
#define EST_LABEL_MAX 64
/* A CRL's name in /crl/NAME.crl: a CA label, or "L/K" for partition K's CRL of CA L ([ca L]
 * crl-partition-size), K a decimal number without leading zeros of at most EST_CRL_PART_MAX
 * (keyline-cad's bound, ca_crlpart_name_parse). EST_CRL_NAME_MAX holds the longest with its NUL:
 * every distribution point keyline-ca writes is served. */
#define EST_CRL_PART_MAX (1ull << 40)
#define EST_CRL_PART_DIGITS 13 /* of EST_CRL_PART_MAX, 1099511627776 */
#define EST_CRL_NAME_MAX (EST_LABEL_MAX + 1 + EST_CRL_PART_DIGITS)

typedef struct {
    char name[EST_LABEL_MAX]; /* "" for the default (no label in the path) */
    char *profile;            /* keyline-cad profile: [..] profile, else "est" / "est.NAME" */
    char *issuer;             /* [est] issuer (keyline-cad derives its profile from it); NULL */
    char *template_name;      /* when only a profile is named */
    int approval_manual;      /* approval = manual: simpleenroll is held for an officer (202) */
} est_label;

typedef struct {
    char *listen;         /* host:port */
    char *http_listen;    /* NULL when off */
    char *metrics_listen; /* plain HTTP, /metrics and /healthz only; NULL when off */
    char *cad;            /* keyline-cad's addresses: [est] cad, else [cad] socket, else default */
    char *cad_tls_cert;   /* [est] cad-tls-cert, -key, -ca: for tls: addresses (resolved); NULL */
    char *cad_tls_key;
    char *cad_tls_ca;
    char *tls_cert;       /* path: leaf first, then chain (PEM) */
    char *tls_key;        /* path to a PEM key or a pkcs11: URI (a token of its own) */
    char *tls_key_pin;    /* [est] tls-key-pin: env:VAR | file:PATH, for a pkcs11: key */
    char *tls_key_module; /* [est] tls-key-module, else [hsm] module: PKCS#11 module path */
    char *tls_priorities; /* GnuTLS priority string */
    char *htpasswd;       /* path or NULL */
    char **client_ca;     /* CA labels whose certificates authenticate clients */
    size_t n_client_ca;
    est_cb_mode channel_binding;
    size_t max_body; /* request body cap, bytes */
    unsigned max_connections;
    unsigned per_ip_connections;
    unsigned timeout;             /* seconds of inactivity before a connection is closed */
    unsigned request_timeout;     /* seconds a request may take to arrive, headers and body */
    unsigned threads;             /* I/O threads (MHD epoll pool) */
    unsigned workers;             /* request handler threads; 0: handle on the I/O threads */
    int serverkeygen;             /* serve /serverkeygen (default on) */
    unsigned shutdown_grace;      /* seconds to wait for in-flight requests on SIGTERM */
    unsigned ticket_key_lifetime; /* seconds of the monotonic clock a ticket master key is used;
                                     0: no TLS session tickets */
    unsigned cad_timeout;         /* seconds keyline-cad has to answer one request */
    unsigned retry_after;         /* seconds in the Retry-After of a 202 (held request) */
    est_label *labels;            /* labels[0] is the default (name "") */
    size_t n_labels;
} est_config;

/* keyline-cad's socket when neither [est] cad nor [cad] socket names one (as keyline-cad). */
#define EST_CAD_SOCKET_DEFAULT "/run/keyline/cad.sock"

#define EST_DEFAULT_PRIORITIES                                                                     \
    "SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:"           \
    "+CHACHA20-POLY1305:+AES-128-GCM:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:"              \
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"                 \
    "-SIGN-RSA-MD5:%SERVER_PRECEDENCE"

/* Read [est] (and every [est.label NAME]) from `conf`; paths are resolved against the config
 * file's directory. KL_EUSAGE/KL_EINPUT with "[est] key: message" on a bad or missing value.
 * [est] signer, signer-processes and ca-keys (the signer processes keyline-cad replaced) are
 * accepted and ignored: est_config_obsolete names them. */
kl_rc est_config_load(const kl_conf *conf, est_config *out) KL_WUR;
void est_config_free(est_config *c);
/* The obsolete keys `conf` sets, one line for a start-up warning ("" when none). */
void est_config_obsolete(const kl_conf *conf, char *out, size_t outlen);
/* name NULL or "" -> the default label. NULL when unknown. */
const est_label *est_config_label(const est_config *c, const char *name);

/* ------------------------------------------------------------------------------------------
 * Wire formats (est_codec.c): no I/O, no CA, no TLS.
 * ------------------------------------------------------------------------------------------ */

typedef enum {
    EST_OP_NONE = 0,
    EST_OP_CACERTS,
    EST_OP_SIMPLEENROLL,
    EST_OP_SIMPLEREENROLL,
    EST_OP_CSRATTRS,
    EST_OP_SERVERKEYGEN,
    EST_OP_FULLCMC,
} est_op;

/* Endpoint families, also the `endpoint` label of the request counter. */
typedef enum {
    EST_EP_OTHER = 0,
    EST_EP_CACERTS,
    EST_EP_SIMPLEENROLL,
    EST_EP_SIMPLEREENROLL,
    EST_EP_CSRATTRS,
    EST_EP_SERVERKEYGEN,
    EST_EP_FULLCMC,
    EST_EP_CRL,
    EST_EP_OCSP,
    EST_EP_HEALTHZ,
    EST_EP_METRICS,
    EST_EP__COUNT
} est_endpoint;

typedef struct {
    est_endpoint ep;
    est_op op;                    /* for EST endpoints */
    char label[EST_CRL_NAME_MAX]; /* EST label ("" = default) or CRL name ("L" or "L/K") */
    const char *ocsp_b64;         /* GET /ocsp/<b64>: points into the path; NULL otherwise */
} est_route;

/* Map a request path to a route. KL_ENOTFOUND for anything we do not serve (404), including
 * malformed labels. Labels match [A-Za-z0-9._-]{1,63}; CRL names are a label or "L/K"
 * (EST_CRL_NAME_MAX). GET /ocsp//<b64> (a responder URL ending in '/') is /ocsp/<b64>: no
 * request's base64 starts with '/' (a DER OCSPRequest starts with 0x30, base64 'M'). */
kl_rc est_route_parse(const char *path, est_route *out) KL_WUR;
const char *est_endpoint_name(est_endpoint ep);

/* 1 when the Content-Type header `ct` (may be NULL) names media type `want` (case-insensitive,
 * parameters and surrounding whitespace ignored), else 0. */
int est_media_type_is(const char *ct, const char *want);
/* Whether the If-None-Match list `list` (RFC 9110 13.1.2: "*" or entity-tags separated by
 * commas and optional white space) names `etag` ("\"...\""), compared weakly (W/"x" names
 * "x"); an element that is no entity-tag names nothing. */
int est_etag_listed(const char *list, const char *etag);
/* The request path (and query) percent-decoded in place as libmicrohttpd's own decoder, but
 * for %00, left as its three characters (a decoded NUL would end the path early); returns the
 * new length. */
size_t est_path_unescape(char *s);

/* Decode an EST request body into DER. RFC 8951 3: the body is base64 whether or not a
 * Content-Transfer-Encoding header is present; wrapped, single-line, with or without a
 * trailing newline. Also tolerated: PEM armour around the base64; raw DER when the client says
 * Content-Transfer-Encoding: binary. `cte` may be NULL. KL_EINPUT on bad base64 or empty. */
kl_rc est_body_decode(const uint8_t *body, size_t len, const char *cte, kl_buf *der) KL_WUR;

/* What a template wants from a CSR, for /csrattrs. */
typedef struct {
    int key_nid;        /* NID_X9_62_prime256v1, NID_secp384r1, or NID_rsaEncryption */
    int rsa_bits;       /* for RSA */
    int want_serial;    /* subject serialNumber */
    int want_challenge; /* challengePassword (channel binding on) */
} est_csrattrs_in;

/* RFC 7030 4.5.2 CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID, DER. */
kl_rc est_csrattrs_encode(const est_csrattrs_in *in, kl_buf *der) KL_WUR;

typedef struct {
    const char *content_type;
    const uint8_t *data; /* already in its transfer form (base64 text) */
    size_t len;
} est_part;

#define EST_MULTIPART_BOUNDARY "keyline_est_part"
/* RFC 7030 4.4.2: multipart/mixed body with base64 parts. */
kl_rc est_multipart_build(const est_part *parts, size_t n, kl_buf *out) KL_WUR;

/* Degenerate certs-only SignedData (RFC 5652 / RFC 7030 4.1.3), DER. Duplicates are dropped. */
kl_rc est_p7_certs_only(STACK_OF(X509) * certs, kl_buf *der) KL_WUR;
/* The same from DER certificates, as given (no parsing, no de-duplication). */
kl_rc est_p7_certs_der(const uint8_t *const *certs, const size_t *lens, size_t n,
                       kl_buf *der) KL_WUR;

/* ------------------------------------------------------------------------------------------
 * Authentication (est_auth.c)
 * ------------------------------------------------------------------------------------------ */

/* htpasswd files and Basic credentials: kl_http.h (shared with the station dashboard). */

/* The client's leaf certificate (DER, owned by the session), whose key the client proved it
 * holds in the handshake (CertificateVerify). Nothing else about it is checked here: the
 * caller checks its issuer and purpose, and keyline-cad that it is, byte for byte, a
 * certificate it issued, valid, under valid CAs (est_handlers.c, est_auth_cert). KL_ENOTFOUND
 * when the client sent no certificate. */
kl_rc est_tls_peer_cert(gnutls_session_t s, const gnutls_datum_t **out) KL_WUR;

/* The earliest clock keyline-estd trusts a session ticket under: 2020-01-01T00:00:00Z. GnuTLS
 * derives its ticket keys from the master key and the time step now / 64800 s (stek.c, 3 ticket
 * lifetimes of 6 h), but for step 0, a clock before 1970-01-01T18:00Z, it derives none and
 * encrypts and MACs tickets with a key of zeros (GnuTLS 3.7.9, upstream alike). Anyone can make a
 * ticket carrying any certificate chain: a host booted without a real-time clock (the clock at
 * 1970 until NTP answers) would take a resumption as any device. No clock keyline runs on is
 * before this date. */
#define EST_CLOCK_FLOOR ((time_t)1577836800)

/* 1 when `s` is a resumed TLS session that cannot be trusted to say who the client is: resumed
 * (its peer certificates came from a ticket, not from a handshake signature) while the clock,
 * `now`, reads before EST_CLOCK_FLOOR. `s` may be NULL (0). */
int est_tls_resumed_untrusted(gnutls_session_t s, time_t now);

/* What a TLS session's client certificate checks established, kept for the life of the
 * connection (est_server.c makes one per TLS connection and frees it when the connection closes;
 * est_handlers.c fills and uses it). The peer's certificate list cannot change within a
 * session (MHD does not renegotiate), but `peers` is compared on every request anyway, so a
 * different list is verified afresh. Only the checks that cannot change while the session
 * lasts are cached (GnuTLS chain verification, direct issuer, purpose, and keyline-cad's
 * cert-status by certificate: ours, the one in the store under its serial, signature); the
 * store status of the certificate, of its issuing CA certificate and of the CA certificates
 * above that are asked of keyline-cad on every request (cert-status by serial), so a
 * revocation of any takes effect on the next request. */
/* A device id (hardware serial) with its NUL; templates allow at most 64 characters. */
#define EST_DEVICE_ID_MAX 80

typedef struct {
    kl_buf peers;      /* cache key: the peer's certificate list as GnuTLS holds it */
    X509 *cert;        /* the verified client certificate; NULL when nothing is cached */
    char serial[65];   /* its serial in the store's hex form */
    int ca_index;      /* its issuer: index into client_cas */
    char subject[160]; /* RFC 2253 one-line, for logs and the audit actor */
    char device_id[EST_DEVICE_ID_MAX]; /* the device it belongs to ("" none): est_handlers.c */
    time_t not_before; /* the cached verification holds within [not_before, not_after): */
    time_t not_after;  /* the certificate's and its issuer chain's validity */
    /* HTTP Basic: the HMAC-SHA256, under a key made at random per process, of the last
     * Authorization header verified on this connection, and whose it was (est_basic_*). Never
     * the password, nor anything it could be found from without the key. */
    uint8_t basic_mac[32];
    unsigned long basic_gen; /* est_basic_generation() when verified; 0: nothing */
    char basic_user[128];
} est_conn_auth;

void est_conn_auth_init(est_conn_auth *ca);
/* A verified HTTP Basic credential, remembered for the connection it came on (keep-alive
 * requests then cost no password hash). est_basic_generation: the current htpasswd's (read
 * under ht_lock before verifying); est_basic_forget_all: after a reload (under its write lock),
 * every remembered credential is verified again. est_basic_cached: 1 and the user into `user`
 * when `authorization` is the very header remembered, of the current generation; a header that
 * differs takes the full verification, so a wrong password costs what it always did. */
unsigned long est_basic_generation(void);
void est_basic_forget_all(void);
int est_basic_cached(const est_conn_auth *ca, const char *authorization, char *user, size_t cap);
void est_basic_remember(est_conn_auth *ca, const char *authorization, const char *user,
                        unsigned long gen);
/* Forget the cached result (keeps the key buffer's memory). */
void est_conn_auth_reset(est_conn_auth *ca);
void est_conn_auth_free(est_conn_auth *ca);
/* The session's peer certificate list in a comparable form (DER of each certificate with its
 * length). KL_ENOTFOUND when the client sent none. */
kl_rc est_tls_peers_key(gnutls_session_t s, kl_buf *out) KL_WUR;
/* 1 when the session's peer certificate list is exactly `key` (as est_tls_peers_key made it). */
int est_tls_peers_same(gnutls_session_t s, const kl_buf *key);

/* Channel binding value for this session as the base64 text a client puts into
 * challengePassword: tls-unique (RFC 5929) on TLS 1.2, tls-exporter (RFC 9266) on TLS 1.3. */
kl_rc est_tls_channel_binding(gnutls_session_t s, kl_buf *b64) KL_WUR;

/* CSR challengePassword as bytes (sensitive buffer). KL_ENOTFOUND when absent. */
kl_rc est_csr_challenge_password(X509_REQ *req, kl_buf *out) KL_WUR;

/* RFC 7030 3.5 check. KL_OK; KL_EAUTH (mismatch, or required and absent). `s` may be NULL
 * (no TLS): then only "off" passes, and "optional" passes when the CSR carries none. */
kl_rc est_channel_binding_check(est_cb_mode mode, X509_REQ *req, gnutls_session_t s) KL_WUR;

/* Subject attribute serialNumber as a string (caller frees), NULL when absent. */
char *est_name_serial_number(const X509_NAME *name);
/* RFC 2253 one-line subject into `out` (truncated). */
void est_name_oneline(const X509_NAME *name, char *out, size_t outlen);
/* ASN1_TIME -> time_t (UTC). 0 when malformed. */
int est_asn1_time_get(const ASN1_TIME *t, time_t *out);

/* ------------------------------------------------------------------------------------------
 * Metrics (est_metrics.c): lock-free counters, Prometheus text exposition.
 * ------------------------------------------------------------------------------------------ */

#define EST_METRIC_CODES 14
#define EST_HIST_BUCKETS 12

typedef struct {
    atomic_uint_fast64_t requests[EST_EP__COUNT][EST_METRIC_CODES];
    atomic_uint_fast64_t issue_bucket[EST_HIST_BUCKETS]; /* cumulative at exposition time */
    atomic_uint_fast64_t issue_count;
    atomic_uint_fast64_t issue_sum_us;
    atomic_uint_fast64_t hsm_errors; /* keyline-cad answered with a token error */
    atomic_uint_fast64_t cad_errors; /* keyline-cad could not be reached or did not answer */
    atomic_uint_fast64_t inflight;
    atomic_uint_fast64_t conns_cut; /* closed at their request deadline (request-timeout) */
} est_metrics;

void est_metrics_init(est_metrics *m);
void est_metrics_request(est_metrics *m, est_endpoint ep, int status);
void est_metrics_issue(est_metrics *m, double seconds);
void est_metrics_hsm_error(est_metrics *m);
void est_metrics_cad_error(est_metrics *m);
void est_metrics_conns_cut(est_metrics *m, size_t n);
kl_rc est_metrics_render(est_metrics *m, kl_buf *out) KL_WUR;

/* ------------------------------------------------------------------------------------------
 * Request / response between the MHD glue and the handlers.
 * ------------------------------------------------------------------------------------------ */

#define EST_MAX_HEADERS 6

typedef struct {
    int status;
    char content_type[80];
    kl_buf body; /* owned; sensitive for serverkeygen */
    struct {
        char name[40];
        char value[128];
    } hdr[EST_MAX_HEADERS];
    size_t n_hdr;
    /* the body is a file instead (a CRL, sent with sendfile): has_fd set, fd (owned: closed by
     * the response) and its length */
    int has_fd;
    int fd;
    uint64_t fd_len;
    /* a 304: the length of the content of the 200 it stands for, its Content-Length (RFC 9110
     * 8.6); no body, no file */
    uint64_t not_modified_len;
} est_resp;

struct est_server;

typedef struct {
    struct est_server *srv;
    int tls;                  /* arrived on the TLS listener */
    int metrics_only;         /* arrived on the [est] metrics-listen listener */
    gnutls_session_t session; /* NULL on the plain listener */
    est_conn_auth *conn_auth; /* per-connection client-certificate cache; NULL when none */
    const char *method;
    const char *path;
    const char *content_type;      /* may be NULL */
    const char *cte;               /* Content-Transfer-Encoding, may be NULL */
    const char *authorization;     /* may be NULL */
    const char *if_modified_since; /* conditional GET (RFC 9110 13); NULL: none, or several
                                    * field lines (13.1.3: more than one member, ignored) */
    const uint8_t *body;
    size_t body_len;
    est_route route;
    char identity[200]; /* for the access log: "basic:USER", "cert:SUBJECT", "-" */
    char note[200];     /* for the access log: serial issued or why refused */
    /* If-None-Match (has_inm: sent), its field lines joined (RFC 9110 5.3); a buffer, not a
     * pointer into one: the request is copied whole to a worker */
    int has_inm;
    char inm[2048];
} est_req;

void est_resp_init(est_resp *r);
void est_resp_free(est_resp *r);
void est_resp_header(est_resp *r, const char *name, const char *value);
/* Plain-text response ("message\n"). */
void est_resp_text(est_resp *r, int status, const char *msg);

/* ------------------------------------------------------------------------------------------
 * The server (est_server.c, est_handlers.c, est_revocation.c)
 * ------------------------------------------------------------------------------------------ */

typedef struct est_server est_server;

/* Per-label facts from keyline-cad's profile op (what the profile's template asks of a CSR),
 * fetched at start-up and again once older than EST_PROFILE_TTL, so that /csrattrs announces
 * what keyline-cad enforces. Guarded by lock. */
typedef struct {
    char issuer[129];      /* the profile's issuing CA (for logs) */
    est_csrattrs_in attrs; /* what /csrattrs announces */
    int keygen_nid;        /* key made by /serverkeygen (same as attrs.key_nid) */
    int keygen_bits;
    int device_cert; /* the template takes subject serialNumber: a device certificate, issued
                      * only with the device id (IEEE 802.1AR hardware serial) */
} est_label_facts;

typedef struct {
    pthread_mutex_t lock;
    est_label_facts facts;
    time_t profile_at;
    time_t cacerts_at; /* /cacerts body cache (the CA set changes rarely) */
    kl_buf cacerts_b64;
} est_label_rt;

struct est_server {
    const kl_conf *conf;
    est_config cfg;
    cac *cad;                    /* keyline-cad: every CA operation (est_cad.c) */
    est_label_rt *label_rt;      /* parallel to cfg.labels */
    pthread_rwlock_t ht_lock;    /* guards htpasswd (SIGHUP reload) */
    kl_htpasswd *htpasswd;       /* NULL: Basic auth off */
    STACK_OF(X509) * client_cas; /* certs of the client-ca labels: a client's direct issuer */
    time_t *client_ca_nb;        /* per client_cas entry: latest notBefore / earliest */
    time_t *client_ca_na;        /* notAfter over its chain up to the root */
    char *trust_pem;             /* their chains, for MHD_OPTION_HTTPS_MEM_TRUST */
    /* The TLS certificate chain and key handshakes present (est_server.c): `tls` is swapped by
     * SIGHUP; a replaced one goes on `tls_retired` until no connection opened before the swap
     * is left (a handshake may still hold its pointers). All three guarded by conns_mu. */
    struct est_tls_creds *tls;
    struct est_tls_creds *tls_retired;
    uint64_t tls_gen;
    struct MHD_Daemon *tls_d;
    struct MHD_Daemon *http_d;
    struct MHD_Daemon *metrics_d; /* [est] metrics-listen */
    est_metrics metrics;
    atomic_int stopping;
    /* open connections of both listeners and their request deadlines (est_server.c): a list of
     * est_conn guarded by conns_mu, swept once a second by the sweeper thread */
    pthread_mutex_t conns_mu;
    void *conns;
    pthread_t sweeper;
    int sweeper_on;
    pthread_cond_t sweep_cv;
    int sweep_stop;
    /* worker pool (est_server.c): queue of est_conn_req, guarded by jobs_mu */
    pthread_t *workers;
    unsigned n_workers;
    pthread_mutex_t jobs_mu;
    pthread_cond_t jobs_cv;
    void *jobs_head, *jobs_tail;
    int jobs_stop;
};

/* Build everything from the loaded config: connect to keyline-cad (waiting for it a few
 * seconds), take each label's profile, the client-ca certificates and the TLS material,
 * htpasswd. This process never holds a CA PIN, opens the CA token or the store. */
kl_rc est_server_new(const kl_conf *conf, est_server **out) KL_WUR;
kl_rc est_server_start(est_server *s) KL_WUR;
/* Stop accepting, wait up to the grace period for in-flight requests, stop the daemons. */
void est_server_stop(est_server *s);
void est_server_free(est_server *s);
/* Re-read the htpasswd file (SIGHUP). */
kl_rc est_server_reload(est_server *s) KL_WUR;

/* Route and answer one complete request. */
void est_handle(est_req *rq, est_resp *rs);

/* Revocation (est_revocation.c): HTTP in front of keyline-cad's crl and ocsp. */
void est_handle_crl(est_req *rq, est_resp *rs);
/* The CRL files est_handle_crl keeps (memfds); at server exit. */
void est_crl_cache_free(void);
/* A nonce-less OCSP request keyline-cad answered less than a second ago: answered from the
 * front cache into rs (1), in the I/O thread; 0: est_handle as usual. est_ocsp_cache_free at
 * server exit. */
int est_handle_ocsp_fast(est_req *rq, est_resp *rs);
void est_ocsp_cache_free(void);
void est_handle_ocsp(est_req *rq, est_resp *rs);
/* Map an error to an HTTP answer (est_handlers.c): input 400, policy/auth 403, HSM 503 with
 * Retry-After 30, keyline-cad or its store unreachable 503 with Retry-After 10, else 500. */
void est_resp_error(est_req *rq, est_resp *rs, kl_rc rc);

/* ------------------------------------------------------------------------------------------
 * keyline-cad (est_cad.c): the CA protocol requests keyline-estd makes. Each returns keyline-
 * cad's own code and message on a refusal, KL_EIO / KL_ETIMEOUT when it cannot be reached.
 * ------------------------------------------------------------------------------------------ */

/* Connect (waiting up to wait_s seconds for the socket to answer) and log the roles. */
kl_rc est_cad_open(est_server *s, unsigned wait_s) KL_WUR;
/* HELLO: is keyline-cad there and speaking our version (/healthz). */
kl_rc est_cad_hello(est_server *s) KL_WUR;

/* profile op: what the profile's template asks of a CSR. */
typedef struct {
    char issuer[129];
    int key_nid;  /* the preferred key type: NID_X9_62_prime256v1, NID_secp384r1, NID_rsaEncryption
                   */
    int rsa_bits; /* for RSA */
    int device_cert;
} est_profile_info;
kl_rc est_cad_profile(est_server *s, const char *profile, est_profile_info *out) KL_WUR;

/* cacerts (by profile) or ca-chain (by CA label): the CA certificates, in the answer's order. */
kl_rc est_cad_certs(est_server *s, cap_op op, const char *name, STACK_OF(X509) * *out) KL_WUR;

/* cert-status, by certificate (der) or by serial. KL_EAUTH with keyline-cad's reason when it
 * refuses the certificate (not ours, bad signature, not valid, a CA above it not valid). */
typedef struct {
    char serial[65];
    char status[33]; /* "valid", "pending", "revoked" */
    char issuer[129];
    char device_id[129]; /* the device recorded for it, "" none */
    time_t not_after;
} est_cert_state;
kl_rc est_cad_cert_status(est_server *s, const uint8_t *der, size_t der_len, const char *serial,
                          est_cert_state *out) KL_WUR;

/* issue: *der (malloc'd, len bytes) gets the new certificate as keyline-cad sent it, one DER
 * SEQUENCE (checked; it is not parsed: it goes to the client as it is), serial its hex serial,
 * device (cap bytes) the device keyline-cad bound it to ("" none). */
kl_rc est_cad_issue(est_server *s, const cac_issue_req *r, uint8_t **der, size_t *len,
                    char serial[65], char *device, size_t cap) KL_WUR;

/* submit: a request held for an officer (RFC 7030 4.2.3). */
typedef struct {
    long long id;
    char status[33]; /* "pending", "approved", "rejected" */
    char message[600];
    X509 *cert; /* approved: the certificate the officer issued */
} est_held;
kl_rc est_cad_submit(est_server *s, const cac_issue_req *r, est_held *out) KL_WUR;
void est_held_free(est_held *h);

/* crl (by CA label) or ocsp (a DER OCSP request): the DER answer into out. */
kl_rc est_cad_crl(est_server *s, const char *issuer, kl_buf *out) KL_WUR;
kl_rc est_cad_ocsp(est_server *s, const uint8_t *req, size_t len, kl_buf *out) KL_WUR;
/* /metrics: the remaining life of each profile's CA certificates, their CRLs and the delegated
 * OCSP signer, read from keyline-cad (est_lifetimes.c). Errors: only the buffer's. */
kl_rc est_lifetimes_render(est_server *s, kl_buf *out) KL_WUR;
/* pending: requests of the profile held for an officer. */
kl_rc est_cad_pending(est_server *s, const char *profile, uint64_t *n) KL_WUR;

#endif
