/* keyline-provision: the troubleshooting hint for a device failure, as docs/station.md section 7
 * ("Per-device failures") says what to do. The dashboard shows it beside the failure; the unit
 * test tests/unit/station checks that every hint below is in that table word for word, so the
 * two cannot drift apart. First match wins: more specific patterns come first. */
#include <string.h>

#include "st.h"

typedef struct {
    const char *pattern; /* substring of the failure message */
    const char *hint;
} st_hint_row;

static const st_hint_row st_hints[] = {
    {"answered LOCK with ERROR REFUSED", "fix the firmware's lock conditions"},
    {"answered HELLO with ERROR VERSION", "firmware too old/new for this station"},
    {"answered CHALLENGE with ERROR LOCKED",
     "update the firmware; until then such a device cannot be told from a clone"},
    {"counterfeit or clone", "quarantine the device; the genuine unit's certificate is untouched"},
    {"CHALLENGE signature does not verify",
     "quarantine the device; its certificate is already revoked"},
    {"no answer to", "re-seat the device: it resumes without a new certificate"},
    {"device answered", "device-side fault: check the firmware/hardware; the device is resumable"},
    {"asks for subject", "firmware bug or a hostile device: quarantine it; nothing issued"},
    {"is not for the key it generated", "firmware bug (or a tampered device): nothing issued"},
    {"is the subject of CA", "the model/serial from HELLO match a CA's DN: fix the device or the "
                             "CA naming"},
    {"no proof of possession", "device signing is broken; nothing issued"},
    {"issues only under production orders",
     "set `[station] id` to the station name the order was made for"},
    {"no production order for station",
     "ask the security officer for a production order for this station"},
    {"is not production order", "the device is not of the order's model: set it aside"},
    {"is exhausted (", "the order is used up: ask the security officer for a new order"},
    {"production order", "ask the security officer for an open production order"},
    {"issuing refused", "read the rest of the message"},
    {"different public key after INJECT", "firmware bug in the INJECT path; nothing issued"},
    {"exceeds the device's", "use a device build with a larger receive buffer, or smaller CA "
                             "certificates"},
    {"did not confirm the certificate fingerprint", "firmware bug; certificate stays pending"},
    {"already being provisioned on", "pull both; check serial programming"},
    {"lost the claim on", "the device's certificate stays pending; replug it on one station"},
    {"use --reprovision --reason", "if legitimate, rerun with `--reprovision --reason superseded`"},
    {"cannot be reprovisioned over the line",
     "locked devices are final; use the field re-enrolment (EST)"},
    {"certificate is not in this store", "check which store/CA provisioned it"},
    {"no passed CHALLENGE is recorded", "investigate; revoke S if in doubt"},
    {"revoking old certificate", "store problem; nothing was issued"},
    {"activating", "fix the store and plug the device in again: it is recognised (locked + passed "
                   "CHALLENGE) and activated"},
    {"HELLO answer", "firmware bug; nothing was issued"},
    {"device speaks protocol version", "firmware bug; nothing was issued"},
    {"device reports state", "firmware bug; nothing was issued"},
    {"device accepts only", "firmware bug; nothing was issued"},
    {"answer lacks", "firmware bug"},
    {"malformed", "firmware bug"},
    {"not DER PKCS#10", "firmware bug"},
    {"wrong INDEX", "firmware bug"},
    {"did not report LOCKED", "firmware bug"},
    {"store:", "check the store (disk, permissions, locked by another process for too long)"},
    {"inventory:", "check the store (disk, permissions, locked by another process for too long)"},
};

const char *st_hint(const char *error)
{
    for (size_t i = 0; error && i < sizeof st_hints / sizeof st_hints[0]; i++) {
        if (strstr(error, st_hints[i].pattern)) {
            return st_hints[i].hint;
        }
    }
    return "see docs/station.md section 7 (Troubleshooting) for the message";
}

size_t st_hint_count(void)
{
    return sizeof st_hints / sizeof st_hints[0];
}

const char *st_hint_at(size_t i, const char **pattern)
{
    if (i >= st_hint_count()) {
        return NULL;
    }
    *pattern = st_hints[i].pattern;
    return st_hints[i].hint;
}
