/* keyline: the officers table checked against its audit entries (ceremony.h
 * ceremony_officers_audit_check). The audit chain proves the entries; this proves the table
 * they describe was not changed beside them. */
#include <stdio.h>
#include <string.h>

#include "ceremony.h"

/* How many entries of `h` of kind `remove` have exactly `detail`; *seq the last one's. */
static size_t events_matching(const ceremony_officer_history *h, int remove, const char *detail,
                              int64_t *seq)
{
    size_t n = 0;
    for (size_t i = 0; i < h->nevents; i++) {
        const ceremony_officer_event *e = &h->events[i];
        if (e->remove == remove && e->detail && strcmp(e->detail, detail) == 0) {
            n++;
            *seq = e->seq;
        }
    }
    return n;
}

/* o's certificate still hashes to the fingerprints its row records. */
static kl_rc officer_fingerprints(const ceremony_officer *o)
{
    kl_rc rc = KL_OK;
    ceremony_officer again;
    memset(&again, 0, sizeof again);
    rc = ceremony_officer_cert(o->cert, o->cert_len, o->name, &again);
    ENSURE(rc == KL_OK, KL_EPOLICY, "officer %s: the stored certificate does not load (%s)",
           o->name, kl_errmsg());
    ENSURE(strcmp(again.cert_sha256, o->cert_sha256) == 0 &&
               strcmp(again.key_sha256, o->key_sha256) == 0,
           KL_EPOLICY,
           "officer %s: the stored certificate is not the one registered (its fingerprints "
           "differ from the row's): changed outside keyline",
           o->name);
out:
    ceremony_officer_free(&again);
    return rc;
}

static kl_rc officer_row_check(const ceremony_officer_history *h, const ceremony_officer *o)
{
    kl_rc rc = KL_OK;
    char add[300], rem[100];
    int64_t seq = 0;
    TRY(officer_fingerprints(o));
    snprintf(add, sizeof add, "officer=%s key-sha256=%s cert-sha256=%s", o->name, o->key_sha256,
             o->cert_sha256);
    ENSURE(events_matching(h, 0, add, &seq) == 1, KL_EPOLICY,
           "officer %s (key sha256 %.16s...) is in the officers table, but no audited "
           "officer-add registered this name with this key and certificate: added or altered "
           "outside keyline",
           o->name, o->key_sha256);
    snprintf(rem, sizeof rem, "officer=%s", o->name);
    size_t removes = events_matching(h, 1, rem, &seq);
    int removed = strcmp(o->status, CEREMONY_OFFICER_REMOVED) == 0;
    ENSURE(!removed || removes == 1, KL_EPOLICY,
           "officer %s is marked removed, but no audited officer-remove removed them", o->name);
    ENSURE(removed || removes == 0, KL_EPOLICY,
           "officer %s was removed (audit entry %lld) but is %s again in the officers table: "
           "changed outside keyline",
           o->name, (long long)seq, o->status);
out:
    return rc;
}

/* Every audited registration still has its row. */
static kl_rc officer_events_check(const ceremony_officer_history *h)
{
    for (size_t i = 0; i < h->nevents; i++) {
        const ceremony_officer_event *e = &h->events[i];
        char name[CEREMONY_DB_NAME_MAX + 1] = "";
        if (!e->detail || sscanf(e->detail, "officer=%64s", name) != 1) {
            return kl_fail(KL_EPOLICY, "audit entry %lld: an officer entry without a name",
                           (long long)e->seq);
        }
        size_t j = 0;
        while (j < h->nofficers && strcmp(h->officers[j].name, name) != 0) {
            j++;
        }
        if (j == h->nofficers) {
            return kl_fail(KL_EPOLICY,
                           "the audit log %s officer %s (entry %lld), but the officers table has "
                           "no such row: deleted outside keyline",
                           e->remove ? "removed" : "registered", name, (long long)e->seq);
        }
    }
    return KL_OK;
}

kl_rc ceremony_officers_audit_check(store *s, long *count)
{
    kl_rc rc = KL_OK;
    ceremony_officer_history h;
    *count = 0;
    TRY(ceremony_officer_history_get(s, &h));
    for (size_t i = 0; i < h.nofficers; i++) {
        TRY(officer_row_check(&h, &h.officers[i]));
    }
    TRY(officer_events_check(&h));
    *count = (long)h.nofficers;
out:
    ceremony_officer_history_free(&h);
    return rc;
}
