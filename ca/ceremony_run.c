/* keyline: running a ceremony: count the approvals, run the operation, sign the transcript
 * (ceremony_store.h). */
#include <errno.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca_backend.h"
#include "ceremony.h"
#include "ceremony_store.h"
#include "kl_log.h"

/* Approval `a` of `rec` as the transcript shows it, with the officer's registered certificate;
 * KL_EPOLICY with the reason when it does not count: among them, a key that one of the n
 * approvals counted before has (keys[], which gets this one's at keys[n]): two officer rows for
 * one key, registered under two encodings or written beside keyline, are one officer. */
static kl_rc run_approval(store *s, const ceremony_rec *rec, const ceremony_sig *a, char keys[][65],
                          size_t n, ceremony_approval *out)
{
    kl_rc rc = KL_OK;
    ceremony_officer o;
    memset(&o, 0, sizeof o);
    memset(out, 0, sizeof *out);
    rc = ceremony_officer_get(s, a->officer, &o);
    if (rc == KL_ENOTFOUND || (rc == KL_OK && strcmp(o.status, CEREMONY_OFFICER_ACTIVE) != 0)) {
        rc = kl_fail(KL_EPOLICY, "%s is not a registered officer", a->officer);
        goto out;
    }
    TRY(rc);
    snprintf(out->name, sizeof out->name, "%s", o.name);
    out->at = a->at;
    out->cert = o.cert;
    out->cert_len = o.cert_len;
    o.cert = NULL;
    out->sig = malloc(a->sig_len);
    ENSURE(out->sig, KL_EINTERNAL, "out of memory");
    memcpy(out->sig, a->sig, a->sig_len);
    out->sig_len = a->sig_len;
    rc = ceremony_approval_check(out, rec->req, rec->req_len, keys[n]);
    ENSURE(rc == KL_OK, KL_EPOLICY, "%s signed other bytes than this request", a->officer);
    for (size_t j = 0; j < n; j++) {
        ENSURE(strcmp(keys[j], keys[n]) != 0, KL_EPOLICY,
               "%s approved with the key of an officer counted already (one key, one officer)",
               a->officer);
    }
out:
    if (rc != KL_OK) {
        free(out->cert);
        free(out->sig);
        memset(out, 0, sizeof *out);
    }
    ceremony_officer_free(&o);
    return rc;
}

/* The counted approvals into t->ap; what did not count into `why`. Store errors as such. */
static kl_rc run_count(store *s, const ceremony_rec *rec, ceremony_transcript *t, char *why,
                       size_t cap)
{
    char keys[CEREMONY_APPROVALS_MAX][65];
    why[0] = 0;
    for (size_t i = 0; i < rec->nap; i++) {
        kl_rc rc = run_approval(s, rec, &rec->ap[i], keys, t->nap, &t->ap[t->nap]);
        if (rc == KL_OK) {
            t->nap++;
        } else if (rc == KL_EPOLICY) {
            size_t used = strlen(why);
            snprintf(why + used, cap - used, "%s%s", used ? "; " : "", kl_errmsg());
        } else {
            return rc;
        }
    }
    return KL_OK;
}

/* Sign the transcript body with the audit key (made on first need, as a checkpoint does). */
static kl_rc run_sign(ca_ctx *ca, ceremony_transcript *t, kl_buf *out)
{
    kl_rc rc = KL_OK;
    char *label = NULL;
    EVP_PKEY *key = NULL;
    kl_buf body;
    kl_buf_init(&body, CEREMONY_TRANSCRIPT_MAX, 0);
    TRY(ca_audit_checkpoint(ca, NULL));
    TRY(store_audit_key_get(ca_store(ca), &label, &t->audit_spki, &t->audit_spki_len));
    TRY(hsm_key_load(ca_hsm(ca), label, &key));
    TRY(ceremony_transcript_body(t, &body));
    TRY(ceremony_sign(key, body.data, body.len, &t->audit_sig, &t->audit_sig_len));
    TRY(ceremony_transcript_encode(t, out));
out:
    kl_buf_free(&body);
    EVP_PKEY_free(key);
    free(label);
    return rc;
}

/* Refuse: the audit entry and the ceremony's note, then the error. */
static kl_rc run_refuse(store *s, const ceremony_rec *rec, const char *actor, const char *msg)
{
    char detail[1400];
    snprintf(detail, sizeof detail, "id=%lld op=%s: %s", (long long)rec->id, rec->op, msg);
    if (ceremony_db_note(s, rec->id, "ceremony-refused", detail, actor) != KL_OK) {
        return kl_wrap(KL_EPOLICY, "ceremony %lld refused (%s), and the refusal was not logged",
                       (long long)rec->id, msg);
    }
    return kl_fail(KL_EPOLICY, "ceremony %lld refused: %s", (long long)rec->id, msg);
}

/* Where a run runs: the host's name, and (when readable) its machine id and boot id, which
 * tell two hosts of one name apart and a run from before a restart. "" when unknown. */
typedef struct {
    char host[256], machine[40], boot[40];
} run_where;

/* The first line of `path` into out when it is 1..cap-1 of [0-9a-f-] (an id file), else "". */
static void run_id_read(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (f && fgets(out, (int)cap, f)) {
        out[strcspn(out, "\n")] = 0;
    }
    if (f) {
        fclose(f);
    }
    if (strspn(out, "0123456789abcdef-") != strlen(out)) {
        out[0] = 0;
    }
}

static void run_where_here(run_where *w)
{
    if (gethostname(w->host, sizeof w->host) != 0) {
        snprintf(w->host, sizeof w->host, "?");
    }
    w->host[sizeof w->host - 1] = 0;
    w->host[strcspn(w->host, " ")] = 0;
    run_id_read("/etc/machine-id", w->machine, sizeof w->machine);
    run_id_read("/proc/sys/kernel/random/boot_id", w->boot, sizeof w->boot);
}

/* The running ceremony's note: who runs it, and which process where since when, so that a run
 * that died can be told from one still going (run_recover). */
static void run_runner_note(const char *actor, char *out, size_t cap)
{
    char when[32] = "?";
    time_t now = time(NULL);
    struct tm tm;
    run_where w;
    run_where_here(&w);
    if (gmtime_r(&now, &tm)) {
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    snprintf(out, cap, "running: pid %ld on host %s (machine %s, boot %s) since %s, by %s",
             (long)getpid(), w.host, w.machine[0] ? w.machine : "?", w.boot[0] ? w.boot : "?", when,
             actor);
}

/* The bytes of s before the first of `stop` into out (cap bytes); NULL when none or too long,
 * else s past them. */
static const char *run_note_word(const char *s, const char *stop, char *out, size_t cap)
{
    size_t n = strcspn(s, stop);
    if (n == 0 || n >= cap) {
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = 0;
    return s + n;
}

/* The pid and place of a runner note (run_runner_note's form; notes of earlier versions end
 * after the host name: machine and boot ""); 0 when it is not one. */
static int run_note_parse(const char *note, long *pid, run_where *w)
{
    static const char pre[] = "running: pid ", mid[] = " on host ", mach[] = " (machine ",
                      boot[] = ", boot ";
    memset(w, 0, sizeof *w);
    if (strncmp(note, pre, sizeof pre - 1) != 0) {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    *pid = strtol(note + sizeof pre - 1, &end, 10);
    if (errno || *pid <= 0 || strncmp(end, mid, sizeof mid - 1) != 0) {
        return 0;
    }
    const char *p = run_note_word(end + sizeof mid - 1, " ", w->host, sizeof w->host);
    if (!p) {
        return 0;
    }
    if (strncmp(p, mach, sizeof mach - 1) == 0) {
        p = run_note_word(p + sizeof mach - 1, ",", w->machine, sizeof w->machine);
        p = p && strncmp(p, boot, sizeof boot - 1) == 0
                ? run_note_word(p + sizeof boot - 1, ")", w->boot, sizeof w->boot)
                : NULL;
        if (!p) {
            return 0;
        }
        if (strcmp(w->machine, "?") == 0) { /* not readable where it ran: unknown */
            w->machine[0] = 0;
        }
        if (strcmp(w->boot, "?") == 0) {
            w->boot[0] = 0;
        }
    }
    return 1;
}

/* Is the run noted (pid at `noted`) over? *elsewhere when it ran on another host (another name,
 * or the same name and another machine id): that host alone can tell. Here: over when the host
 * restarted since (another boot id), else when no process has that pid. */
static int run_is_over(const run_where *noted, long pid, const run_where *me, int *elsewhere)
{
    *elsewhere = strcmp(noted->host, me->host) != 0 ||
                 (noted->machine[0] && me->machine[0] && strcmp(noted->machine, me->machine) != 0);
    if (*elsewhere) {
        return 0;
    }
    if (noted->boot[0] && me->boot[0] && strcmp(noted->boot, me->boot) != 0) {
        return 1;
    }
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* A ceremony left running: when its note names a run of this host that is over, the run died
 * (killed, power lost) before it recorded its end: back to proposed (audited
 * ceremony-interrupted) and *rec read again, so this run counts the approvals anew. A run
 * still going, or one on another host, is refused naming it. */
static kl_rc run_recover(ca_ctx *ca, ceremony_rec *rec, const char *actor)
{
    kl_rc rc = KL_OK;
    long pid = 0;
    int elsewhere = 0;
    char detail[700];
    run_where noted, me;
    const char *note = rec->note ? rec->note : "";
    int parsed = run_note_parse(note, &pid, &noted);
    run_where_here(&me);
    int gone = parsed && run_is_over(&noted, pid, &me, &elsewhere);
    ENSURE(gone, KL_EPOLICY, "ceremony %lld is being run (%s)%s", (long long)rec->id,
           note[0] ? note : "no runner noted",
           parsed && elsewhere ? ": if that run died, run it again on that host, which can tell"
                               : "");
    snprintf(detail, sizeof detail,
             "id=%lld op=%s: the run by pid %ld on host %s died before its end (check what it "
             "did: the CA, the token and the audit log)",
             (long long)rec->id, rec->op, pid, noted.host);
    TRY(ceremony_db_interrupted(ca_store(ca), rec->id, note, detail, actor));
    kl_warn("ceremony %lld: an earlier run died (pid %ld); counting the approvals again",
            (long long)rec->id, pid);
    int64_t id = rec->id;
    ceremony_rec_free(rec);
    TRY(ceremony_db_get(ca_store(ca), id, rec));
out:
    return rc;
}

/* The op, then the signed transcript; a failure puts the ceremony back to proposed. */
static kl_rc run_op(ca_ctx *ca, const ceremony_rec *rec, ceremony_transcript *t, const char *actor,
                    kl_buf *out)
{
    kl_rc rc = KL_OK;
    ceremony_req req;
    memset(&req, 0, sizeof req);
    TRY(ceremony_req_parse(t->req, t->req_len, &req));
    char runner[400];
    run_runner_note(actor, runner, sizeof runner);
    TRY(ceremony_db_claim(ca_store(ca), rec->id, t->req, t->req_len, actor, runner));
    rc = ceremony_op_find(req.op)->run(ca, &req, actor, &t->result);
    if (rc == KL_OK) {
        rc = run_sign(ca, t, out);
    }
    if (rc != KL_OK) {
        char msg[1024], detail[1200];
        snprintf(msg, sizeof msg, "%s", kl_errmsg());
        snprintf(detail, sizeof detail, "id=%lld op=%s: %s", (long long)rec->id, rec->op, msg);
        if (ceremony_db_finish(ca_store(ca), rec->id, NULL, 0, detail, actor) != KL_OK) {
            kl_warn("ceremony %lld: the failure was not recorded: %s", (long long)rec->id,
                    kl_errmsg());
        }
        (void)kl_fail(rc, "ceremony %lld failed: %s", (long long)rec->id, msg);
        goto out;
    }
    TRY(ceremony_db_finish(ca_store(ca), rec->id, out->data, out->len, NULL, actor));
out:
    ceremony_req_free(&req);
    return rc;
}

kl_rc ceremony_run(ca_ctx *ca, int64_t id, long quorum, const char *actor, uint8_t **out,
                   size_t *out_len)
{
    kl_rc rc = KL_OK;
    ceremony_rec rec;
    ceremony_transcript t;
    char why[1024];
    kl_buf enc;
    memset(&rec, 0, sizeof rec);
    memset(&t, 0, sizeof t);
    kl_buf_init(&enc, CEREMONY_TRANSCRIPT_MAX, 0);
    ENSURE(ca_hsm(ca), KL_EUSAGE, "ceremony run needs the CA token");
    TRY(ceremony_db_get(ca_store(ca), id, &rec));
    if (strcmp(rec.status, CEREMONY_ST_RUNNING) == 0) {
        TRY(run_recover(ca, &rec, actor));
    }
    ENSURE(strcmp(rec.status, CEREMONY_ST_PROPOSED) == 0, KL_EPOLICY,
           "ceremony %lld is %s, not proposed", (long long)id, rec.status);
    t.quorum = quorum < 1 ? 1 : quorum;
    TRY(run_count(ca_store(ca), &rec, &t, why, sizeof why));
    if (t.nap < (size_t)t.quorum) {
        char msg[1200];
        snprintf(msg, sizeof msg,
                 "%zu valid approval%s of distinct registered officers, the quorum is %ld%s%s",
                 t.nap, t.nap == 1 ? "" : "s", t.quorum, why[0] ? " (" : "", why);
        if (why[0]) {
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ")");
        }
        rc = run_refuse(ca_store(ca), &rec, actor, msg);
        goto out;
    }
    t.id = id;
    t.req = rec.req;
    t.req_len = rec.req_len;
    rec.req = NULL;
    t.ran = time(NULL);
    t.runner = strdup(actor);
    ENSURE(t.runner, KL_EINTERNAL, "out of memory");
    TRY(run_op(ca, &rec, &t, actor, &enc));
    if (out) {
        *out = kl_buf_steal(&enc, out_len);
    }
out:
    kl_buf_free(&enc);
    ceremony_transcript_free(&t);
    ceremony_rec_free(&rec);
    return rc;
}
