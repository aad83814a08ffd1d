/* keyline-provision: the pure parts. Config, HELLO validation, the resume/refuse decision and
 * the JSON result line. No I/O here, so tests/unit/station covers all of it. */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st.h"
#include "st_matter_flow.h"

/* ---- config --------------------------------------------------------------------------------- */

const char *st_mode_name(st_mode m)
{
    return m == ST_MODE_INJECT ? "inject" : "csr";
}

int st_mode_from_name(const char *s)
{
    if (s && strcmp(s, "csr") == 0) {
        return ST_MODE_CSR;
    }
    if (s && strcmp(s, "inject") == 0) {
        return ST_MODE_INJECT;
    }
    return -1;
}

/* keyline-cad issues for the profile ([station] profile, default "station", which keyline-cad
 * derives from [station] issuer/template); [station] issuer is then the CA the station expects
 * that profile to issue under. Then the key's mode. */
static kl_rc st_config_ca(st_config *cfg, const kl_conf *conf, const char *file)
{
    kl_rc rc = KL_OK;
    const char *prof = kl_conf_get(conf, "station", "profile");
    ENSURE(!prof || (*prof && strlen(prof) < sizeof cfg->profile), KL_EUSAGE,
           "%s: [station] profile is empty or longer than %zu bytes", file,
           sizeof cfg->profile - 1);
    snprintf(cfg->profile, sizeof cfg->profile, "%s", prof ? prof : "station");
    const char *v = kl_conf_get(conf, "station", "issuer");
    ENSURE((v && *v) || prof, KL_EUSAGE,
           "%s: [station] issuer is not set (the factory CA label; or name a keyline-cad "
           "profile with [station] profile)",
           file);
    ENSURE(!v || strlen(v) < sizeof cfg->issuer, KL_EUSAGE, "%s: [station] issuer too long", file);
    snprintf(cfg->issuer, sizeof cfg->issuer, "%s", v ? v : "");

    v = kl_conf_get_default(conf, "station", "template", "device-idevid");
    ENSURE(*v && strlen(v) < sizeof cfg->template_name, KL_EUSAGE,
           "%s: [station] template is empty or too long", file);
    snprintf(cfg->template_name, sizeof cfg->template_name, "%s", v);

    v = kl_conf_get_default(conf, "station", "mode", "csr");
    int m = st_mode_from_name(v);
    ENSURE(m >= 0, KL_EUSAGE, "%s: [station] mode must be csr or inject, not '%s'", file, v);
    cfg->mode = (st_mode)m;
out:
    return rc;
}

/* The serial line: speed, timeouts, retries, and how long a pending certificate may wait. */
static kl_rc st_config_line(st_config *cfg, const kl_conf *conf, const char *file)
{
    kl_rc rc = KL_OK;
    TRY(kl_conf_get_long(conf, "station", "baud", 115200, 1200, 4000000, &cfg->baud));
    ENSURE(st_baud_ok(cfg->baud), KL_EUSAGE, "%s: [station] baud %ld is not a supported rate", file,
           cfg->baud);
    /* docs/line-protocol.md 5: 1000 ms per attempt for quick requests, 5000 ms for the ones
     * that make a small MCU generate keys, do ECDH or sign. */
    TRY(kl_conf_get_long(conf, "station", "timeout-ms", 1000, 50, 600000, &cfg->timeout_ms));
    TRY(kl_conf_get_long(conf, "station", "slow-timeout-ms",
                         cfg->timeout_ms > 5000 ? cfg->timeout_ms : 5000, 50, 600000,
                         &cfg->slow_timeout_ms));
    TRY(kl_conf_get_long(conf, "station", "retries", 3, 0, 100, &cfg->retries));
    TRY(kl_conf_get_long(conf, "station", "pending-window", 3600, 1, 365L * 86400,
                         &cfg->pending_window));
out:
    return rc;
}

static kl_rc st_config_est_url(st_config *cfg, const kl_conf *conf, const char *file)
{
    kl_rc rc = KL_OK;
    const char *v = kl_conf_get(conf, "station", "est-url");
    if (v && *v) {
        ENSURE(strlen(v) <= KL_PROTO_URL_MAX, KL_EUSAGE,
               "%s: [station] est-url longer than %u bytes", file, KL_PROTO_URL_MAX);
        for (const char *c = v; *c; c++) {
            ENSURE(*c > 0x20 && *c < 0x7f, KL_EUSAGE,
                   "%s: [station] est-url must be printable ASCII without spaces", file);
        }
        snprintf(cfg->est_url, sizeof cfg->est_url, "%s", v);
    }
out:
    return rc;
}

static kl_rc st_config_cad(st_config *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    /* one configuration serves both: keyline-cad listens on [cad] socket */
    cfg->cad = kl_conf_path(conf, "station", "cad");
    if (!cfg->cad) {
        cfg->cad = kl_conf_path(conf, "cad", "socket");
    }
    if (!cfg->cad) {
        cfg->cad = strdup("/run/keyline/cad.sock");
    }
    ENSURE(cfg->cad, KL_EINTERNAL, "out of memory");
    TRY(kl_conf_get_long(conf, "station", "cad-timeout", 30, 1, 600, &cfg->cad_timeout));
out:
    return rc;
}

/* The station's name in the records, and its dashboard. */
static kl_rc st_config_id(st_config *cfg, const kl_conf *conf, const char *file)
{
    kl_rc rc = KL_OK;
    const char *v = kl_conf_get(conf, "station", "id");
    if (v) {
        ENSURE(*v && strlen(v) < sizeof cfg->station_id &&
                   strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                       strlen(v),
               KL_EUSAGE, "%s: [station] id must be 1..64 letters, digits, '.', '_' or '-'", file);
        snprintf(cfg->station_id, sizeof cfg->station_id, "%s", v);
    }
    v = kl_conf_get(conf, "station", "dashboard");
    if (v && *v) {
        cfg->dashboard = strdup(v);
        ENSURE(cfg->dashboard, KL_EINTERNAL, "out of memory");
    }
    cfg->dashboard_users = kl_conf_path(conf, "station", "dashboard-users");
out:
    return rc;
}

kl_rc st_config_load(st_config *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    memset(cfg, 0, sizeof *cfg);
    const char *file = kl_conf_file(conf) ? kl_conf_file(conf) : "config";
    TRY(st_config_ca(cfg, conf, file));
    TRY(st_config_line(cfg, conf, file));
    TRY(st_config_est_url(cfg, conf, file));
    TRY(st_firmware_keys_load(cfg, conf));
    cfg->results = kl_conf_path(conf, "station", "results");
    TRY(st_config_cad(cfg, conf));
    TRY(st_config_id(cfg, conf, file));
out:
    return rc;
}

void st_config_free(st_config *cfg)
{
    free(cfg->results);
    cfg->results = NULL;
    free(cfg->cad);
    cfg->cad = NULL;
    free(cfg->dashboard);
    cfg->dashboard = NULL;
    free(cfg->dashboard_users);
    cfg->dashboard_users = NULL;
}

/* ---- HELLO -------------------------------------------------------------------------------- */

int st_serial_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KL_PROTO_SERIAL_MAX) {
        return 0;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              strchr(" '()+,-./:=?", c))) {
            return 0;
        }
    }
    return 1;
}

/* One RDN holding one attribute `nid` whose value, as UTF-8, is exactly `want`. */
static int st_rdn_is(const X509_NAME *name, int i, int nid, const char *want)
{
    const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    unsigned char *u = NULL;
    int n = e ? ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(e)) : -1;
    int ok = e && X509_NAME_ENTRY_set(e) == i &&
             OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) == nid && n >= 0 &&
             (size_t)n == strlen(want) && memcmp(u, want, (size_t)n) == 0;
    OPENSSL_free(u);
    return ok;
}

kl_rc st_csr_subject_check(const X509_NAME *name, const st_hello *h)
{
    /* line-protocol.md 4.3: subject = CN MODEL, serialNumber HW_SERIAL. A device that asks for
     * more or other names (a CA's, another unit's) gets nothing: it could otherwise make an
     * IDevID whose subject is its issuer's DN (issue 10). */
    if (X509_NAME_entry_count(name) == 2 && st_rdn_is(name, 0, NID_commonName, h->model) &&
        st_rdn_is(name, 1, NID_serialNumber, h->hw_serial)) {
        return KL_OK;
    }
    char got[160] = "";
    BIO *b = BIO_new(BIO_s_mem());
    char *mem = NULL;
    long n;
    /* RFC 2253 escaping (control and non-ASCII bytes), in the CSR's order */
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~XN_FLAG_DN_REV) >= 0 &&
        (n = BIO_get_mem_data(b, &mem)) > 0) {
        snprintf(got, sizeof got, "%.*s%s", (int)(n < 120 ? n : 120), mem, n > 120 ? "..." : "");
    }
    BIO_free(b);
    ERR_clear_error();
    return kl_fail(KL_EPOLICY,
                   "device's CSR asks for subject '%s', not 'CN=%s,serialNumber=%s' "
                   "(line-protocol 4.3); nothing issued",
                   got, h->model, h->hw_serial);
}

/* UTF-8 (line-protocol.md: MODEL and FW_VERSION are UTF-8) without control characters, which
 * would garble logs and the display. Invalid UTF-8 would not go into JSON either: jansson
 * refuses the string, and the results line lost its model and error and the dashboard its
 * fixture tile and failure, so a device could hide its own failure. */
static int st_text_ok(const char *s)
{
    json_t *utf8 = json_string(s); /* NULL unless valid UTF-8 */
    int ok = utf8 != NULL;
    json_decref(utf8);
    for (; ok && *s; s++) {
        ok = (unsigned char)*s >= 0x20 && *s != 0x7f;
    }
    return ok;
}

kl_rc st_hello_parse(const uint8_t *p, size_t n, st_hello *h)
{
    kl_rc rc = KL_OK;
    memset(h, 0, sizeof *h);
    ENSURE(kl_tlv_check(p, n) == KL_PROTO_OK, KL_EINPUT, "HELLO answer is not valid TLV");
    ENSURE(kl_tlv_get_u8(p, n, KL_TAG_PROTO, &h->proto) == KL_PROTO_OK, KL_EINPUT,
           "HELLO answer lacks the protocol version");
    ENSURE(h->proto == KL_PROTO_VERSION, KL_EINPUT, "device speaks protocol version %u, not %u",
           h->proto, KL_PROTO_VERSION);
    ENSURE(kl_tlv_get_str(p, n, KL_TAG_MODEL, h->model, sizeof h->model) == KL_PROTO_OK &&
               h->model[0] && st_text_ok(h->model),
           KL_EINPUT, "HELLO answer has no valid model");
    ENSURE(kl_tlv_get_str(p, n, KL_TAG_HW_SERIAL, h->hw_serial, sizeof h->hw_serial) ==
                   KL_PROTO_OK &&
               st_serial_ok(h->hw_serial),
           KL_EINPUT, "HELLO answer has no valid hardware serial (1..64 PrintableString)");
    if (kl_tlv_get_str(p, n, KL_TAG_FW_VERSION, h->fw_version, sizeof h->fw_version) !=
            KL_PROTO_OK ||
        !st_text_ok(h->fw_version)) {
        h->fw_version[0] = 0;
    }
    ENSURE(kl_tlv_get_u8(p, n, KL_TAG_STATE, &h->state) == KL_PROTO_OK &&
               h->state <= KL_STATE_LOCKED,
           KL_EINPUT, "HELLO answer has no valid state");
    if (kl_tlv_get_u8(p, n, KL_TAG_KEY_ORIGIN, &h->key_origin) != KL_PROTO_OK) {
        h->key_origin = KL_KEY_ORIGIN_NONE;
    }
    if (kl_tlv_get_u16(p, n, KL_TAG_MAX_PAYLOAD, &h->max_payload) != KL_PROTO_OK) {
        h->max_payload = KL_PROTO_MIN_PAYLOAD;
    }
    ENSURE(h->max_payload >= KL_PROTO_MIN_PAYLOAD, KL_EINPUT,
           "device accepts only %u-byte requests (protocol minimum %u)", h->max_payload,
           KL_PROTO_MIN_PAYLOAD);
    if (h->max_payload > KL_PROTO_MAX_PAYLOAD) {
        h->max_payload = KL_PROTO_MAX_PAYLOAD;
    }
    ENSURE(kl_tlv_get_fixed(p, n, KL_TAG_TRANSPORT_PUB, h->transport_pub, KL_PROTO_PUB_LEN) ==
                   KL_PROTO_OK &&
               h->transport_pub[0] == 0x04,
           KL_EINPUT, "HELLO answer has no valid transport public key");
    int r = kl_tlv_get_fixed(p, n, KL_TAG_IDENTITY_PUB, h->identity_pub, KL_PROTO_PUB_LEN);
    ENSURE(r == KL_PROTO_OK || r == KL_PROTO_ENOTFOUND, KL_EINPUT,
           "HELLO answer has a malformed identity public key");
    h->has_identity = r == KL_PROTO_OK;
    r = kl_tlv_get_fixed(p, n, KL_TAG_CERT_FP, h->cert_fp, KL_PROTO_FP_LEN);
    ENSURE(r == KL_PROTO_OK || r == KL_PROTO_ENOTFOUND, KL_EINPUT,
           "HELLO answer has a malformed certificate fingerprint");
    h->has_cert_fp = r == KL_PROTO_OK;
    ENSURE(h->state < KL_STATE_KEY_READY || h->has_identity, KL_EINPUT,
           "device reports state %s but no identity key", kl_proto_state_name(h->state));
    ENSURE(h->state < KL_STATE_CERT_STORED || h->has_cert_fp, KL_EINPUT,
           "device reports state %s but no certificate fingerprint", kl_proto_state_name(h->state));
out:
    return rc;
}

/* ---- decision ------------------------------------------------------------------------------- */

const char *st_action_name(st_action a)
{
    static const char *n[] = {"fresh", "resume", "activate", "already-provisioned", "refuse"};
    return (unsigned)a < sizeof n / sizeof n[0] ? n[a] : "?";
}

static void plan_revoke(st_plan *p, int idx, int reason)
{
    for (size_t i = 0; i < p->nrevoke; i++) {
        if (p->revoke[i] == idx) {
            return;
        }
    }
    p->revoke[p->nrevoke] = idx;
    p->revoke_reason[p->nrevoke] = reason;
    p->nrevoke++;
}

void st_plan_decide(const st_hello *h, const st_known *k, st_mode mode, int reprovision,
                    int reprovision_reason, st_plan *out)
{
    memset(out, 0, sizeof *out);
    out->resume = -1;
    int valid = -1, fp_match = -1, key_match = -1;
    for (size_t i = 0; i < k->n; i++) {
        const st_known_cert *c = &k->c[i];
        int fpm = h->has_cert_fp && memcmp(c->fp, h->cert_fp, KL_PROTO_FP_LEN) == 0;
        int keym = h->has_identity && memcmp(c->pub, h->identity_pub, KL_PROTO_PUB_LEN) == 0;
        if (!c->pending && valid < 0) {
            valid = (int)i;
        }
        if (c->pending && fpm && keym && fp_match < 0) {
            fp_match = (int)i;
        }
        if (c->pending && keym && key_match < 0) {
            key_match = (int)i;
        }
    }

    if (h->state == KL_STATE_LOCKED) {
        if (valid >= 0 && h->has_cert_fp &&
            memcmp(k->c[valid].fp, h->cert_fp, KL_PROTO_FP_LEN) == 0) {
            out->action = ST_ACT_ALREADY;
            out->resume = valid;
            if (reprovision) {
                out->action = ST_ACT_REFUSE;
                snprintf(out->why, sizeof out->why,
                         "device is locked and cannot be reprovisioned over the line "
                         "(certificate %s stays valid)",
                         k->c[valid].serial);
            }
            return;
        }
        if (fp_match >= 0 && k->c[fp_match].challenge_passed) {
            /* A previous station run verified CHALLENGE and sent LOCK, then stopped before
             * activating. The flow has the device prove possession again first (a locked
             * device answers CHALLENGE; its fingerprint alone is public), as for ALREADY. */
            out->action = ST_ACT_ACTIVATE;
            out->resume = fp_match;
            return;
        }
        out->action = ST_ACT_REFUSE;
        if (fp_match >= 0) {
            snprintf(out->why, sizeof out->why,
                     "device is locked with pending certificate %s but no passed CHALLENGE is "
                     "recorded; not activated",
                     k->c[fp_match].serial);
        } else {
            snprintf(out->why, sizeof out->why,
                     "device is locked but its certificate is not in this store");
        }
        return;
    }

    if (reprovision) {
        for (size_t i = 0; i < k->n; i++) {
            plan_revoke(out, (int)i, reprovision_reason);
        }
        out->action = ST_ACT_FRESH;
        out->force = h->state >= KL_STATE_KEY_READY;
        return;
    }
    if (valid >= 0) {
        out->action = ST_ACT_REFUSE;
        snprintf(out->why, sizeof out->why,
                 "hardware serial already has valid IDevID %s; use --reprovision --reason R to "
                 "replace it",
                 k->c[valid].serial);
        return;
    }
    int keep = fp_match >= 0 ? fp_match : key_match;
    for (size_t i = 0; i < k->n; i++) {
        /* pending certificates for keys the device no longer holds can never be used */
        if ((int)i != keep) {
            plan_revoke(out, (int)i, ST_REASON_CESSATION);
        }
    }
    if (keep >= 0) {
        out->action = ST_ACT_RESUME;
        out->resume = keep;
        return;
    }
    out->action = ST_ACT_FRESH;
    /* csr mode keeps a key the device made itself (it never left the device and has no
     * certificate yet); anything else is replaced. */
    out->force = h->state >= KL_STATE_KEY_READY &&
                 (mode == ST_MODE_INJECT || h->key_origin != KL_KEY_ORIGIN_DEVICE);
}

/* ---- result line ---------------------------------------------------------------------------- */

const char *st_phase_name(int ph)
{
    static const char *n[] = {"hello",    "key",       "csr",  "issue", "putcert",
                              "puttrust", "challenge", "lock", "matter"};
    return ph >= 0 && ph < ST_PH__COUNT ? n[ph] : "idle";
}

char *st_result_json(const st_outcome *o, const char *fixture, long long unix_ms)
{
    json_t *j = json_object(), *t = json_object(), *b = json_object();
    char *s = NULL, *line = NULL;
    if (!j || !t || !b) {
        goto out;
    }
    char ts[40];
    time_t sec = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03lldZ", unix_ms % 1000);
    const char *serial = o->have_hello ? o->hello.hw_serial : NULL;
    json_object_set_new(j, "time", json_string(ts));
    json_object_set_new(j, "device_id", serial ? json_string(serial) : json_null());
    json_object_set_new(j, "hw_serial", serial ? json_string(serial) : json_null());
    json_object_set_new(j, "model", o->have_hello ? json_string(o->hello.model) : json_null());
    json_object_set_new(j, "fw_version",
                        o->have_hello ? json_string(o->hello.fw_version) : json_null());
    json_object_set_new(j, "cert_serial",
                        o->cert_serial[0] ? json_string(o->cert_serial) : json_null());
    json_object_set_new(j, "mode", json_string(st_mode_name(o->mode)));
    json_object_set_new(j, "fixture", json_string(fixture));
    json_object_set_new(j, "action", o->action ? json_string(o->action) : json_null());
    json_object_set_new(j, "outcome", json_string(o->ok ? "ok" : "failed"));
    json_object_set_new(j, "error", o->ok ? json_null() : json_string(o->error));
    if (!o->ok) {
        json_object_set_new(j, "failed_phase", json_string(st_phase_name(o->phase)));
    }
    for (int i = 0; i < ST_PH__COUNT; i++) {
        json_object_set_new(t, st_phase_name(i), json_integer(o->ms[i]));
    }
    json_object_set_new(t, "total", json_integer(o->total_ms));
    json_object_set_new(t, "link", json_integer(o->link_ms));
    json_object_set_new(j, "timings_ms", t);
    t = NULL;
    json_object_set_new(b, "tx", json_integer((json_int_t)o->bytes_tx));
    json_object_set_new(b, "rx", json_integer((json_int_t)o->bytes_rx));
    json_object_set_new(j, "bytes", b);
    b = NULL;
    json_object_set_new(j, "retransmits", json_integer(o->retransmits));
    if (o->matter.done) {
        json_object_set_new(j, "matter", st_matter_result_json(&o->matter));
    }
    s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        size_t n = strlen(s);
        line = malloc(n + 2);
        if (line) {
            memcpy(line, s, n);
            line[n] = '\n';
            line[n + 1] = 0;
        }
    }
out:
    free(s);
    json_decref(j);
    json_decref(t);
    json_decref(b);
    return line;
}
