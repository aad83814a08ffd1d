/* keyline-provision: the factory provisioning station (docs/station.md).
 *
 * Internal interfaces of the station, split by concern:
 *   st_link.c     one serial line: termios, framing (kl_proto), request/response with
 *                 timeout and retransmission. The only file that reads or writes a port.
 *   st_plan.c     pure decisions: what to do with a device given its HELLO and what the store
 *                 knows about its hardware serial (resume, already provisioned, refuse...).
 *   st_flow.c     one device from HELLO to LOCK, issuing through keyline-cad.
 *   st_ca.c       the requests to keyline-cad (cac_call): known, inventory, claim, revoke,
 *                 sweep, proof-failed, cacerts. The station holds no PIN, token or store.
 *   st_station.c  fixtures (a thread each), hot-plug watch, pending sweep, results, display.
 *   keyline-provision.c  main: arguments and config only.
 *
 * Ownership: the st_station owns its fixtures; a fixture owns its st_link. Nothing here prints
 * except st_station.c's display/log functions, called from main's threads. */
#ifndef KL_ST_H
#define KL_ST_H

#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cac.h"
#include "kl_buf.h"
#include "kl_conf.h"
#include "kl_err.h"
#include "kl_proto.h"
#include "st_matter.h"

#define ST_MAX_FIXTURES 64

/* ---- configuration ([station] in keyline.conf, overridden by the command line) ----------- */

typedef enum { ST_MODE_CSR = 0, ST_MODE_INJECT = 1 } st_mode;

typedef struct {
    char issuer[128];       /* CA label (required) */
    char template_name[64]; /* default device-idevid */
    st_mode mode;           /* default csr */
    long baud;              /* default 115200 */
    long timeout_ms;        /* per attempt, default 1000 (HELLO, PUTCERT, PUTTRUST, LOCK) */
    long slow_timeout_ms;   /* per attempt for GENKEY, GETCSR, INJECT, CHALLENGE: 5000 */
    long retries;           /* retransmissions after the first attempt, default 3 */
    long pending_window;    /* seconds, default 3600 */
    char est_url[KL_PROTO_URL_MAX + 1]; /* optional */
    char *results;                      /* JSON lines path (malloc'd, resolved), NULL: none */
    char profile[65];                   /* keyline-cad profile, default "station" */
    char *cad;        /* keyline-cad endpoint ([station] cad, else [cad] socket; malloc'd) */
    long cad_timeout; /* seconds, default 30 */
    /* [station] firmware-keys (st_firmware.c): P-256 points sent with PUTTRUST */
    uint8_t fw_keys[2][KL_PROTO_PUB_LEN];
    size_t nfw_keys;
    char station_id[65];   /* [station] id: the production orders this station works under */
    char *dashboard;       /* [station] dashboard: listen address (malloc'd), NULL: none */
    char *dashboard_users; /* [station] dashboard-users: operators' htpasswd file, NULL: none */
} st_config;

/* Fill cfg from [station]. KL_EUSAGE/KL_EINPUT naming the key on a bad value. */
kl_rc st_config_load(st_config *cfg, const kl_conf *conf) KL_WUR;
void st_config_free(st_config *cfg);
/* st_firmware.c: cfg->fw_keys from [station] firmware-keys, certificate files (PEM) of firmware
 * keys, relative to the config file: codeSigning, no CA, EC P-256, at most ST_FW_KEYS_MAX.
 * KL_EUSAGE / KL_EINPUT naming the file. */
#define ST_FW_KEYS_MAX 2
kl_rc st_firmware_keys_load(st_config *cfg, const kl_conf *conf) KL_WUR;
const char *st_mode_name(st_mode m);
int st_mode_from_name(const char *s); /* -1 when unknown */

/* ---- serial line -------------------------------------------------------------------------- */

typedef struct {
    uint8_t type; /* KL_MSG_RESP(request) or KL_MSG_ERROR */
    size_t len;
    uint8_t payload[KL_PROTO_MAX_PAYLOAD];
} st_resp;

typedef struct st_link {
    int fd;
    char path[PATH_MAX];
    long timeout_ms;
    long retries;
    uint16_t seq;
    kl_proto_dec dec;
    uint8_t rx[KL_PROTO_RAW_LEN(KL_PROTO_MAX_PAYLOAD)];
    uint8_t tx[KL_PROTO_WIRE_MAX(KL_PROTO_MAX_PAYLOAD)];
    /* counters for results and the bench (never reset by the link) */
    uint64_t bytes_tx, bytes_rx;
    unsigned retransmits, bad_frames;
    uint64_t link_us; /* time spent in st_link_xact: the line and the device, not the station */
    volatile sig_atomic_t *stop; /* checked while waiting; may be NULL */
    /* Idle polling: when `poll` is set and a request times out, the next request of the same
     * type resends that frame (same seq) instead of a new one, so a slow device's late answer
     * still counts and no answer to an older poll is ever taken for a fresh one. */
    int poll;
    int poll_pending;
    uint8_t poll_type;
    size_t tx_len;
} st_link;

/* Open a serial port or pty in raw mode (8N1, no flow control) at `baud`.
 * KL_ENOTFOUND (no such port), KL_EIO (cannot open / not a tty), KL_EUSAGE (baud). */
kl_rc st_link_open(st_link *l, const char *path, long baud, long timeout_ms, long retries) KL_WUR;
void st_link_close(st_link *l);
/* Discard unread input and any half-received frame (new session). */
void st_link_flush(st_link *l);
/* Send request `type` and wait for its response (same seq), retransmitting the identical frame
 * after each timeout or damaged frame, at most `retries` times (<0: the link's default).
 * Responses with another seq (late answers to earlier attempts) are ignored.
 * KL_OK with r->type = response or KL_MSG_ERROR; KL_ETIMEOUT "no answer to X after N
 * attempts"; KL_EIO (port gone); KL_EINTERNAL (stopped). */
kl_rc st_link_xact(st_link *l, uint8_t type, const uint8_t *payload, size_t len, st_resp *r,
                   long retries) KL_WUR;
long st_baud_ok(long baud); /* the baud if supported, else 0 */

/* A device's ERROR answer to request `req` as our error ("device answered X with ERROR CODE
 * (text)"); returns KL_EPOLICY for REFUSED, KL_EAUTH otherwise. */
kl_rc st_dev_error(uint8_t req, const st_resp *r);

/* ---- what the device said in HELLO ------------------------------------------------------- */

typedef struct {
    uint8_t proto;
    char model[KL_PROTO_MODEL_MAX + 1];
    char hw_serial[KL_PROTO_SERIAL_MAX + 1];
    char fw_version[KL_PROTO_FWVER_MAX + 1];
    uint8_t state;      /* kl_dev_state */
    uint8_t key_origin; /* KL_KEY_ORIGIN_* */
    uint16_t max_payload;
    uint8_t transport_pub[KL_PROTO_PUB_LEN];
    int has_identity;
    uint8_t identity_pub[KL_PROTO_PUB_LEN];
    int has_cert_fp;
    uint8_t cert_fp[KL_PROTO_FP_LEN];
} st_hello;

/* Parse and validate a HELLO response payload (untrusted). KL_EINPUT with the reason. */
kl_rc st_hello_parse(const uint8_t *p, size_t n, st_hello *h) KL_WUR;
/* Nonzero if s is 1..64 PrintableString characters. */
int st_serial_ok(const char *s);
/* The subject of a device's CSR must be what the station knows, exactly CN=<MODEL> then
 * serialNumber=<HW_SERIAL> from HELLO (line-protocol.md 4.3): the device does not name its
 * IDevID. KL_EPOLICY naming the CSR's subject (RFC 2253, escaped) otherwise. */
kl_rc st_csr_subject_check(const X509_NAME *name, const st_hello *h) KL_WUR;

/* ---- decisions (pure) --------------------------------------------------------------------- */

/* RFC 5280 5.3.1 CRLReason codes the station uses on its own. */
#define ST_REASON_KEY_COMPROMISE 1 /* CHALLENGE failed: the device cannot use the certified key */
#define ST_REASON_CESSATION 5      /* pending certificate abandoned or for a key the device lost */

/* A certificate the store holds for the device's hardware serial. */
typedef struct {
    char serial[65];
    int pending; /* 1 pending, 0 valid */
    uint8_t fp[KL_PROTO_FP_LEN];
    uint8_t pub[KL_PROTO_PUB_LEN]; /* all zero if not a P-256 key */
    int challenge_passed;          /* the inventory records a passed CHALLENGE for this one */
} st_known_cert;

#define ST_MAX_KNOWN 8

typedef struct {
    int have_row; /* the inventory has a row for the hardware serial */
    /* the certificate the inventory points to if it is pending or valid, plus any other
     * pending certificates of the same device id (crash between issue and row update) */
    size_t n;
    st_known_cert c[ST_MAX_KNOWN];
} st_known;

typedef enum {
    ST_ACT_FRESH = 0, /* new key (GENKEY/INJECT, FORCE if `force`), new certificate */
    ST_ACT_RESUME,    /* re-send pending certificate c[resume] and continue */
    ST_ACT_ACTIVATE,  /* locked after a passed CHALLENGE: CHALLENGE, then activate c[resume] */
    ST_ACT_ALREADY,   /* locked, certificate valid: CHALLENGE, then "already provisioned" */
    ST_ACT_REFUSE     /* stop with `why` */
} st_action;

typedef struct {
    st_action action;
    int force;      /* FRESH: replace the device's existing key */
    int resume;     /* index into known->c */
    size_t nrevoke; /* revoke these first (index into known->c) with reason */
    int revoke[ST_MAX_KNOWN];
    int revoke_reason[ST_MAX_KNOWN];
    char why[256];
} st_plan;

/* Decide from the HELLO and the store. reprovision: --reprovision given (reason for the old
 * certificates in reprovision_reason). Never returns a plan that issues while a valid
 * certificate for the device stays unrevoked. */
void st_plan_decide(const st_hello *h, const st_known *k, st_mode mode, int reprovision,
                    int reprovision_reason, st_plan *out);
const char *st_action_name(st_action a);

/* ---- one device ----------------------------------------------------------------------------- */

enum {
    ST_PH_HELLO = 0,
    ST_PH_KEY,   /* GENKEY or INJECT */
    ST_PH_CSR,   /* GETCSR, or the station building the CSR (inject) */
    ST_PH_ISSUE, /* inventory + ca_issue */
    ST_PH_PUTCERT,
    ST_PH_PUTTRUST,
    ST_PH_CHALLENGE,
    ST_PH_LOCK,
    ST_PH_MATTER, /* MATTER: a Matter device's onboarding data (between PUTTRUST and CHALLENGE) */
    ST_PH__COUNT
};
const char *st_phase_name(int ph);

typedef struct {
    st_hello hello;
    int have_hello;
    char cert_serial[65];
    const char *action; /* "provisioned", "resumed", "already-provisioned", "activated" */
    int ok;
    char error[512];
    int phase;             /* where it stopped */
    long ms[ST_PH__COUNT]; /* time per phase */
    unsigned ran;          /* bit (1 << phase) for each phase that completed */
    long total_ms;
    long link_ms; /* of total_ms, waiting on the line and the device (the rest is the station's) */
    uint64_t bytes_tx, bytes_rx; /* this device only */
    unsigned retransmits;
    st_mode mode;
    st_matter_result matter; /* the Matter step's codes for the results line (done = 0: none) */
} st_outcome;

struct st_station;
struct st_fixture;
/* Provision the device that answered HELLO (payload already parsed into o->hello) on fx's link.
 * Fills o; never prints. Runs the wanted rows of the step table (st_flow_steps) in order. */
void st_flow_run(struct st_station *st, struct st_fixture *fx, st_outcome *o);

/* One device's flow, as the steps share it (owned by st_flow_run, freed at its end). */
typedef struct st_flow {
    struct st_station *st;
    struct st_fixture *fx;
    st_outcome *o;
    const st_hello *h; /* &o->hello */
    st_resp *r;        /* scratch answer */
    st_known k;        /* what keyline-cad knows of the hardware serial (decide) */
    X509 *kcert[ST_MAX_KNOWN];
    st_plan plan;
    int claimed;                   /* the device claim is ours: released at the end */
    int own_row;                   /* this flow wrote the inventory row: a failure updates it */
    int challenged;                /* the inventory records a passed CHALLENGE */
    uint8_t pub[KL_PROTO_PUB_LEN]; /* the device's new public key (GENKEY, INJECT) */
    EVP_PKEY *key;                 /* inject: the station-made key until the CSR is signed */
    uint8_t *csr;
    size_t csr_len;
    X509 *cert;     /* the certificate being delivered */
    uint8_t fp[32]; /* its SHA-256, confirmed by PUTCERT and LOCK */
} st_flow;

/* A row of the step table. `phase` (ST_PH_*) is what the display, the results file and the
 * dashboard show and where a failure is counted; `wanted` NULL runs always; `run` returns
 * KL_OK or fails with kl_fail (the flow stops there). */
typedef struct {
    const char *name;
    int phase;
    int (*wanted)(const st_flow *f);
    kl_rc (*run)(st_flow *f);
} st_step;
const st_step *st_flow_steps(size_t *n);
/* wanted: the device gets a certificate delivered (fresh or resumed), as PUTCERT..LOCK. */
int st_want_deliver(const st_flow *f);

/* The troubleshooting hint (docs/station.md section 7, "what to do") for a failure message;
 * a static string, never NULL. */
const char *st_hint(const char *error);
/* The hint table, row by row (tests check each hint against docs/station.md). */
size_t st_hint_count(void);
const char *st_hint_at(size_t i, const char **pattern);

/* ---- the station -------------------------------------------------------------------------- */

/* The last device a fixture finished, as the dashboard shows it. */
typedef struct {
    int have; /* 0 until a device finished */
    int ok;
    char serial[KL_PROTO_SERIAL_MAX + 1];
    char cert_serial[65];
    const char *action; /* st_outcome's */
    int phase;          /* where it failed */
    char error[512];
    const char *hint; /* st_hint(error) when it failed */
    long long end_unix_ms;
    long total_ms;
} st_last;

/* What a fixture is doing, for the dashboard (st_dash.c); a device in progress is WORKING. */
typedef enum {
    ST_FX_OPENING = 0,
    ST_FX_NOPORT,  /* the port cannot be opened (retrying) */
    ST_FX_WAITING, /* no device */
    ST_FX_WORKING, /* a device in progress (phase >= 0) */
    ST_FX_DONE,    /* the device finished and is still attached */
    ST_FX_PAUSED,  /* an operator paused the fixture: no new device starts */
    ST_FX_BLOCKED, /* a device waits: the production order does not allow it */
    ST_FX_GONE,    /* the thread ended: port gone or station stopping */
    ST_FX__COUNT
} st_fx_state;
const char *st_fx_state_name(st_fx_state s);

typedef struct st_fixture {
    struct st_station *st;
    char path[PATH_MAX];
    char name[64];
    pthread_t th;
    int started, exited, watched;
    st_link link;
    /* progress, under st->mu */
    char serial[KL_PROTO_SERIAL_MAX + 1];
    int phase; /* -1 idle */
    char status[160];
    long t0_ms;
    unsigned n_ok, n_fail;
    st_fx_state state;
    int paused;            /* set by an operator on the dashboard */
    const char *step;      /* the flow step running (st_flow_steps' name), NULL between devices */
    long step_ms;          /* when it started (st_now_ms) */
    st_last last;          /* the last device this fixture finished */
    long claim_ms;         /* when this fixture's device claim was last written (st_now_ms) */
    char claim_where[128]; /* the fixture in claims: its port path (unique in the process) */
} st_fixture;

/* ---- what the dashboard and /metrics show (st_stats.c); under st->mu --------------------- */

#define ST_FAILS_KEPT 10   /* the last failures, with their hints */
#define ST_RATE_KEPT 4096  /* the last successes' times, for devices per hour */
#define ST_HIST_BUCKETS 11 /* phase duration histogram bounds (st_hist_le), then +Inf */
extern const double st_hist_le[ST_HIST_BUCKETS];

typedef struct {
    long long unix_ms;
    char fixture[64];
    char serial[KL_PROTO_SERIAL_MAX + 1];
    int phase;
    char error[512];
    const char *hint;
} st_fail_rec;

typedef struct {
    long long started_unix_ms; /* the station started */
    long long first_unix_ms;   /* the first device of this run started (0: none yet) */
    long ok, failed; /* ok: provisioned, resumed or activated (a certificate made valid) */
    long already;    /* ok, but locked with a valid certificate before: nothing was made */
    long long ok_times[ST_RATE_KEPT]; /* a ring */
    size_t ok_next, ok_n;
    uint64_t *seen; /* hashes of the hardware serials seen (open addressing, 0 = empty) */
    size_t seen_cap, seen_n;
    long first_ok;                    /* devices whose first attempt in this run succeeded */
    st_fail_rec fails[ST_FAILS_KEPT]; /* a ring */
    size_t fail_next, fail_n;
    unsigned long hist[ST_PH__COUNT][ST_HIST_BUCKETS + 1];
    double hist_sum[ST_PH__COUNT];
    unsigned long hist_n[ST_PH__COUNT];
} st_stats;

/* Count a finished device (fixture name, outcome, when it finished). */
void st_stats_record(st_stats *s, const char *fixture, const st_outcome *o, long long unix_ms);
/* Successes per hour over the last hour (or since the first device, if later). */
double st_stats_per_hour(const st_stats *s, long long now_unix_ms);
/* First-pass yield: devices whose first attempt succeeded / devices seen; 0 when none yet. */
int st_stats_fpy(const st_stats *s, double *out);
void st_stats_free(st_stats *s);
/* Wall-clock milliseconds. */
long long st_unix_ms(void);

/* ---- the production order (st_order.c; docs/station.md "Production orders") --------------- */

#define ST_ORDER_REFRESH_MS 5000 /* the dashboard's order is asked anew this often */

/* What keyline-cad says of this station's order ([station] id), under st->mu. */
typedef struct {
    int have; /* an order was found for [station] id */
    char id[40];
    char model[65];
    char state[16]; /* open, exhausted, expired, closed; missing: none, under an ordered profile */
    long count, issued;
    char expires[32]; /* ISO 8601 UTC */
    char why[256];    /* set: the station starts no device (the dashboard shows it) */
    long checked_ms;  /* st_now_ms of the last answer */
} st_order_view;

struct st_dash;

typedef struct st_station {
    cac *cac; /* keyline-cad: every certificate, inventory row, claim and revocation */
    const kl_conf *conf;
    st_config cfg;
    int reprovision;
    int reprovision_reason;
    long count; /* 0: no limit */
    int display_tty;
    char actor[160];

    STACK_OF(X509) * chain;   /* issuer first, up to the root (inclusive) */
    STACK_OF(X509) * anchors; /* the root(s) sent in PUTTRUST */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    volatile sig_atomic_t stop;
    long finished, failed;
    size_t nfx;
    st_fixture *fx[ST_MAX_FIXTURES];
    /* device claims in the store (one flow per hardware serial across every station process
     * on the store): this process start's random id and the host it runs on */
    char instance[33];
    char host[256];
    long claim_lease_s; /* >= ST_CLAIM_LEASE_S and longer than any one phase can take */
    int results_fd;
    st_matter_cfg matter; /* [station] matter, matter-vid ... labels (st_matter.h) */
    /* the dashboard's view, under mu: `version` changes with every update it shows */
    unsigned long version;
    st_stats stats;
    struct st_dash *dash; /* NULL: no dashboard */
    st_order_view order;
    char order_model[KL_PROTO_MODEL_MAX + 1]; /* the model the dashboard's order is for ("": any) */
} st_station;

/* Load [station], connect to keyline-cad (st_cad_open) and fetch the chain (st_cad_chain).
 * Errors: configuration (KL_EUSAGE), keyline-cad unreachable (KL_EIO) or refusing. */
kl_rc st_station_init(st_station *st, const kl_conf *conf) KL_WUR;
void st_station_free(st_station *st);
/* Start a fixture thread for a port (duplicates ignored). watched: ends when the port goes. */
kl_rc st_station_add_port(st_station *st, const char *path, int watched) KL_WUR;
/* keyline-cad's sweep: revoke the profile's pending certificates older than the pending
 * window (not those of a device that any station is provisioning: keyline-cad claims each
 * device before revoking, and reads its status again under the claim). */
kl_rc st_station_sweep(st_station *st, unsigned *revoked) KL_WUR;
/* Run until count devices finished, stop is set, or (without watch) every fixture ended.
 * watch_glob: also poll this glob(7) pattern for new ports; udev: use libudev hot-plug. */
kl_rc st_station_run(st_station *st, int udev, const char *watch_glob) KL_WUR;

/* Open the results file for appending: created 0640, an existing one made 0640 when it is
 * readable beyond that (a Matter line carries the setup passcode; st_matter_file_private), with
 * a warning in the log. KL_EIO when it cannot be opened, KL_EPOLICY when its mode cannot be
 * fixed (nothing is left open then). */
kl_rc st_results_open(const char *path, int *fd) KL_WUR;
/* Record (display + log + results file) a finished device. */
void st_station_report(st_station *st, st_fixture *fx, const st_outcome *o);
/* An event line: above the live display on a tty, else an info/error log line. */
void st_event(st_station *st, int error, const char *fmt, ...) KL_PRINTF(3, 4);
/* Progress update from a fixture thread (fmt may be NULL to keep the text). */
void st_fixture_progress(st_fixture *fx, int phase, const char *fmt, ...) KL_PRINTF(3, 4);
/* The flow step a fixture runs (a static name; NULL: none). */
void st_fixture_step(st_fixture *fx, const char *step);
/* No device in progress on fx: state and status text (a progress update with phase -1 says
 * ST_FX_WAITING). */
void st_fixture_idle(st_fixture *fx, st_fx_state state, const char *fmt, ...) KL_PRINTF(3, 4);
/* Pause or resume a fixture by name (the dashboard). KL_ENOTFOUND for an unknown name. */
kl_rc st_station_pause(st_station *st, const char *name, int paused, const char *who) KL_WUR;

/* Claim a hardware serial in the store for fixture `fx` (NULL: the pending sweep) before
 * deciding anything about the device; a flow keeps it with st_station_claim_keep before each
 * phase and releases it at the end. KL_EEXIST with `other` naming the holder when another
 * fixture (a cloned serial), station process or station PC has it; store errors as such. */
#define ST_SWEEP_WHERE "pending sweep" /* the place the sweep's claims name */
#define ST_CLAIM_LEASE_S 600    /* minimum lease: a claim not renewed this long may be taken */
#define ST_CLAIM_RENEW_MS 60000 /* a flow renews its claim when it is older than this */
kl_rc st_station_claim(st_station *st, st_fixture *fx, const char *serial, char *other,
                       size_t otherlen) KL_WUR;
/* Renew fx's claim if it is older than ST_CLAIM_RENEW_MS. KL_EEXIST if it was lost. */
kl_rc st_station_claim_keep(st_station *st, st_fixture *fx, const char *serial) KL_WUR;
void st_station_release(st_station *st, st_fixture *fx, const char *serial);

/* ---- keyline-cad (st_ca.c) ------------------------------------------------------------------ */

/* Connect (cfg.cad) and check the profile: it must issue under [station] issuer when that is
 * set (then cfg.issuer is the profile's issuer) and make device certificates. */
kl_rc st_cad_open(st_station *st) KL_WUR;
/* st->chain from cacerts of the profile: issuer first, up to the root. */
kl_rc st_cad_chain(st_station *st) KL_WUR;
/* known: the inventory row's certificate (pending or valid) and every pending certificate of
 * the profile for hardware serial `id`; certs[i] is k->c[i]'s certificate (X509_free each). */
kl_rc st_known_load(st_station *st, const char *id, st_known *k, X509 *certs[ST_MAX_KNOWN]) KL_WUR;
/* inventory: the device's row (state pending|failed|provisioned, detail, its certificate). */
kl_rc st_cad_inventory(st_station *st, const st_hello *h, const char *cert_serial,
                       const char *state, const char *detail) KL_WUR;
/* revoke: a certificate of the profile for --reprovision (reasons of st_reason_from_name). */
kl_rc st_cad_revoke(st_station *st, const char *serial, int reason) KL_WUR;
/* proof-failed: audit a locked device that could not sign with certificate `serial`'s key. */
kl_rc st_cad_proof_failed(st_station *st, const char *device_id, const char *serial,
                          const char *msg) KL_WUR;
/* claim / release of a device for `where` (fixture or ST_SWEEP_WHERE); KL_EEXIST with the
 * holder in `other` when another flow has it. */
kl_rc st_cad_claim(st_station *st, const char *serial, const char *where, char *other,
                   size_t otherlen) KL_WUR;
kl_rc st_cad_release(st_station *st, const char *serial, const char *where) KL_WUR;
/* The CRLReason names a station may state: unspecified, keyCompromise, affiliationChanged,
 * superseded, cessationOfOperation. -1 for any other. */
int st_reason_from_name(const char *name);
const char *st_reason_name(int reason);

/* The order as the dashboard shows it (null without [station] id); caller holds st->mu. */
json_t *st_order_json(const st_station *st);
/* keyline_station_order_* gauges (nothing without an order); caller holds st->mu. */
kl_rc st_order_metrics(const st_station *st, kl_buf *out) KL_WUR;
/* Close this station's order `id` (an operator on the dashboard). KL_EEXIST when the station's
 * order is another one by now, KL_ENOTFOUND when it has none. */
kl_rc st_order_close(st_station *st, const char *id, const char *who) KL_WUR;
/* Ask keyline-cad for this station's order ([station] id) and update st->order. Nothing to do
 * without an id. keyline-cad's errors. */
kl_rc st_order_refresh(st_station *st) KL_WUR;
/* KL_OK when device h may start; KL_EPOLICY with the reason (st->order.why) when the station's
 * order is exhausted, expired or closed and h would need a new certificate (a device resuming
 * its pending certificate, or locked with its own, takes no unit and may start). Refreshes the
 * order first. */
kl_rc st_order_gate(st_station *st, const st_hello *h) KL_WUR;

/* Build the JSON line for an outcome (malloc'd, with trailing newline). Exposed for tests. */
char *st_result_json(const st_outcome *o, const char *fixture, long long unix_ms);

/* Monotonic milliseconds. */
long st_now_ms(void);

#endif
