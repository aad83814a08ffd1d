/* keyline-ca maintain: the lifecycle chores, safe to run at any time and as often as wanted
 * (keyline-maintain.timer runs it daily; docs/key-ceremony.md "Chores").
 *
 * For each CA that signs (active; not a retired, external or rollover record, not an OCSP
 * signer), in store order:
 *   - its CRL is signed again once the published one is past half its validity (or missing),
 *     so relying parties never hold a CRL about to expire;
 *   - its delegated OCSP signer, when it has one, is renewed once past half its life; a revoked
 *     one is never renewed, and said so, with the command that gives the CA a new one.
 * Nothing is due: nothing is signed (idempotent). A chore whose key is absent (an offline root
 * whose token is not plugged in) is reported with what to do and makes the exit status
 * non-zero, so the timer's unit shows as failed until an officer runs the ceremony. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyline-ca.h"
#include "ca_backend.h"

typedef struct {
    int dry_run;
    int done, due_left;
} maint_state;

/* Whether CA record `rec` signs anything at all. */
static int maint_signs(const store_ca *rec)
{
    return !ca_is_ocsp_signer_label(rec->label) && rec->status &&
           strcmp(rec->status, "active") == 0;
}

/* 1 when `label`'s published CRL is missing, past half its validity, dated ahead of this clock
 * (signed by a clock set ahead: relying parties refuse it), or read before a revocation of the
 * CA (its epoch is not the CA's: a revocation whose CRL step failed); *until its nextUpdate. */
static int maint_crl_due(ca_ctx *ca, const char *label, time_t now, time_t *until)
{
    store_crl_meta h;
    int64_t epoch = 0;
    kl_rc rc = store_crl_head(ca_store(ca), label, &h);
    int due = rc != KL_OK || now >= h.this_update + (h.next_update - h.this_update) / 2 ||
              h.this_update > now + CA_CLOCK_AHEAD_MAX ||
              (h.epoch >= 0 && store_revocation_epoch(ca_store(ca), label, &epoch) == KL_OK &&
               epoch != h.epoch);
    *until = rc == KL_OK ? h.next_update : 0;
    return due;
}

static void maint_crl(ca_ctx *ca, const char *label, time_t now, maint_state *st)
{
    time_t until = 0;
    char when[32];
    if (!maint_crl_due(ca, label, now, &until)) {
        cli_time(until, when, sizeof when);
        printf("%s: CRL fresh (nextUpdate %s)\n", label, when);
        return;
    }
    if (st->dry_run) {
        printf("%s: CRL due (none published, past half its validity, dated ahead of this clock, "
               "or revocations not in it)\n",
               label);
        st->due_left++;
        return;
    }
    X509_CRL *crl = NULL;
    if (ca_crl(ca, label, &crl) != KL_OK) {
        printf("%s: CRL due, NOT signed: %s (keyline-ca crl --issuer %s in a ceremony)\n", label,
               kl_errmsg(), label);
        st->due_left++;
        return;
    }
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    printf("%s: CRL number %lld signed\n", label, num ? (long long)ASN1_INTEGER_get(num) : -1LL);
    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
    st->done++;
}

static void maint_ocsp(ca_ctx *ca, const char *label, maint_state *st)
{
    time_t na = 0;
    char when[32];
    int due = ca_ocsp_signer_due(ca, label, &na);
    if (!na && !due) {
        return; /* none */
    }
    if (!due) {
        cli_time(na, when, sizeof when);
        if (ca_ocsp_signer_revoked(ca, label)) {
            /* not a chore: a new key is the officer's decision (a ceremony under a quorum) */
            printf("%s: OCSP signer revoked, never renewed: %s signs its own answers until "
                   "keyline-ca ocsp-signer new --issuer %s\n",
                   label, label, label);
            return;
        }
        printf("%s: OCSP signer fresh (notAfter %s)\n", label, when);
        return;
    }
    if (st->dry_run) {
        printf("%s: OCSP signer due (past half its life, or dated ahead of this clock)\n", label);
        st->due_left++;
        return;
    }
    int renewed = 0;
    if (ca_ocsp_signer_ensure(ca, label, "keyline-ca maintain", &renewed) != KL_OK) {
        printf("%s: OCSP signer due, NOT renewed: %s\n", label, kl_errmsg());
        st->due_left++;
        return;
    }
    printf("%s: OCSP signer renewed\n", label);
    st->done += renewed;
}

kl_rc cmd_maintain(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    const char *only = NULL;
    maint_state st = {0, 0, 0};
    ca_ctx *ca = NULL;
    store_ca *list = NULL;
    size_t n = 0;
    static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "i:n", opts)) != -1) {
        switch (ch) {
        case 'i': only = optarg; break;
        case 'n': st.dry_run = 1; break;
        default: return kl_fail(KL_EUSAGE, "maintain: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "maintain: unexpected argument '%s'", argv[optind]);
    TRY(cli_open(c, !st.dry_run, &ca));
    TRY(store_ca_list(ca_store(ca), &list, &n));
    time_t now = time(NULL);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (!maint_signs(&list[i]) || (only && strcmp(only, list[i].label) != 0)) {
            continue;
        }
        seen = 1;
        maint_crl(ca, list[i].label, now, &st);
        maint_ocsp(ca, list[i].label, &st);
    }
    ENSURE(seen || !only, KL_ENOTFOUND, "maintain: no active CA labelled '%s'", only);
    fprintf(stderr, "keyline-ca: maintain: %d signed, %d due %s\n", st.done, st.due_left,
            st.dry_run ? "(dry run)" : "and not done");
    ENSURE(st.due_left == 0 || st.dry_run, KL_EHSM,
           "maintain: %d chore(s) could not be done (see above)", st.due_left);
out:
    store_ca_list_free(list, n);
    ca_close(ca);
    return rc;
}
