/* keyline: Matter device attestation certificate profiles (see matter.h, docs/matter.md).
 *
 * Profile points are quoted from the Matter Core Specification 1.3, 6.2.2 "Device Attestation
 * Certificate (DAC)", 6.2.2.3 "PAI" and 6.2.2.4 "PAA" (summarised in issue 19). */
#include "matter.h"

#include <ctype.h>
#include <openssl/bn.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "hsm.h"
#include "kl_matter.h"
#include "tpl_internal.h"

static int g_nid_vid, g_nid_pid;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int matter_nid_register(const char *oid, const char *sn, const char *ln)
{
    int nid = OBJ_txt2nid(oid);
    if (nid == NID_undef) {
        nid = OBJ_create(oid, sn, ln);
    }
    return nid == NID_undef ? 0 : nid;
}

static void matter_nids_init(void)
{
    g_nid_vid = matter_nid_register(MATTER_OID_VID, MATTER_SN_VID, "Matter VendorID");
    g_nid_pid = matter_nid_register(MATTER_OID_PID, MATTER_SN_PID, "Matter ProductID");
}

int matter_nid_vid(void)
{
    pthread_once(&g_once, matter_nids_init);
    return g_nid_vid;
}

int matter_nid_pid(void)
{
    pthread_once(&g_once, matter_nids_init);
    return g_nid_pid;
}

static const char *const matter_kind_names[] = {"none", "paa", "pai", "dac"};

int matter_kind_from_name(const char *s)
{
    for (int k = MATTER_PAA; k <= MATTER_DAC; k++) {
        if (strcmp(s, matter_kind_names[k]) == 0) {
            return k;
        }
    }
    return -1;
}

const char *matter_kind_name(int kind)
{
    return kind >= MATTER_NONE && kind <= MATTER_DAC ? matter_kind_names[kind] : "?";
}

kl_rc matter_id_parse(const char *what, const char *s, uint16_t *out)
{
    const char *h = s;
    if (h[0] == '0' && (h[1] == 'x' || h[1] == 'X')) {
        h += 2;
    }
    size_t n = strlen(h);
    if (n < 1 || n > 4 || strspn(h, "0123456789abcdefABCDEF") != n) {
        return kl_fail(KL_EUSAGE, "%s '%s' is not a 16-bit hex number like 0xFFF1", what, s);
    }
    *out = (uint16_t)strtoul(h, NULL, 16);
    return KL_OK;
}

/* Matter 6.2.2.1: "encoded as a UTF8String of exactly four upper-case hexadecimal digits" */
static int matter_hex4(const ASN1_STRING *d, uint16_t *out)
{
    const unsigned char *v = ASN1_STRING_get0_data(d);
    if (ASN1_STRING_type(d) != V_ASN1_UTF8STRING || ASN1_STRING_length(d) != 4) {
        return 0;
    }
    unsigned val = 0;
    for (int i = 0; i < 4; i++) {
        int c = v[i];
        if (!(isdigit(c) || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
        val = val * 16 + (unsigned)(isdigit(c) ? c - '0' : c - 'A' + 10);
    }
    *out = (uint16_t)val;
    return 1;
}

kl_rc matter_name_id(const X509_NAME *name, int nid, int *present, uint16_t *out)
{
    const char *what = nid == matter_nid_vid() ? "VendorID" : "ProductID";
    *present = 0;
    if (nid == 0) {
        return kl_fail(KL_EINTERNAL, "Matter attribute OIDs are not registered");
    }
    int idx = X509_NAME_get_index_by_NID(name, nid, -1);
    if (idx < 0) {
        return KL_OK;
    }
    if (X509_NAME_get_index_by_NID(name, nid, idx) >= 0) {
        return kl_fail(KL_EPOLICY, "subject has the Matter %s twice", what);
    }
    const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    if (!matter_hex4(d, out)) {
        return kl_fail(KL_EPOLICY,
                       "subject Matter %s must be a UTF8String of four upper-case hex digits "
                       "(like FFF1)",
                       what);
    }
    *present = 1;
    return KL_OK;
}

kl_rc matter_subject_append(const char *subject, const char *vid, const char *pid, char *out,
                            size_t cap)
{
    kl_rc rc = KL_OK;
    uint16_t v = 0, p = 0;
    char tail[64] = "";
    TRY(matter_id_parse("--vid", vid, &v));
    if (pid) {
        TRY(matter_id_parse("--pid", pid, &p));
        snprintf(tail, sizeof tail, "," MATTER_SN_PID "=%04X", p);
    }
    ENSURE(!strstr(subject, MATTER_SN_VID) && !strstr(subject, MATTER_SN_PID) &&
               !strstr(subject, "37244"),
           KL_EUSAGE, "--subject names a Matter VID or PID itself: give them as --vid/--pid");
    ENSURE(matter_nid_vid() && matter_nid_pid(), KL_EINTERNAL, "cannot register the Matter OIDs");
    int n = snprintf(out, cap, "%s%s," MATTER_SN_VID "=%04X", subject, tail, v);
    ENSURE(n > 0 && (size_t)n < cap, KL_EUSAGE, "--subject is too long");
out:
    return rc;
}

/* ---- template consistency ------------------------------------------------------------------ */

const char *matter_tpl_problem(const tpl *t, const char **key)
{
    const int vid = matter_nid_vid(), pid = matter_nid_pid();
    const uint32_t ca_bits = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
    *key = "matter";
    if (!vid || !pid) {
        return "cannot register the Matter attribute OIDs";
    }
    if (t->key_types != (1u << HSM_KEY_EC_P256)) {
        *key = "key-types";
        return "Matter certificates are ECDSA on P-256 only: key-types = ec-p256";
    }
    if (!t->key_usage_critical) {
        *key = "key-usage-critical";
        return "Matter certificates have a critical keyUsage";
    }
    if (t->eku[0] || t->san_from_csr || t->san_hmn || t->ocsp_nocheck) {
        return "a Matter template has no extended-key-usage, san or ocsp-nocheck";
    }
    if (!tpl_nid_in(t->subject_allowed, vid)) {
        *key = "allowed";
        return "a Matter template allows matter-vid in the subject";
    }
    switch (t->matter) {
    case MATTER_DAC:
        *key = t->is_ca ? "kind" : "key-usage";
        if (t->is_ca || t->key_usage != X509v3_KU_DIGITAL_SIGNATURE || t->key_usage_rsa) {
            return "matter = dac is an end-entity with key-usage = digitalSignature only";
        }
        *key = "required";
        if (!tpl_nid_in(t->subject_required, vid) || !tpl_nid_in(t->subject_required, pid)) {
            return "matter = dac requires matter-vid and matter-pid in the subject";
        }
        break;
    case MATTER_PAI:
    case MATTER_PAA:
        *key = "kind";
        if (!t->is_ca) {
            return "matter = pai and paa are kind = ca";
        }
        *key = "key-usage";
        if ((t->key_usage & ca_bits) != ca_bits ||
            (t->key_usage & ~(ca_bits | X509v3_KU_DIGITAL_SIGNATURE))) {
            return "a Matter PAI or PAA has keyCertSign and cRLSign (digitalSignature allowed), "
                   "nothing else";
        }
        *key = "path-len";
        if (t->matter == MATTER_PAI && t->path_len != 0) {
            return "matter = pai needs path-len = 0";
        }
        if (t->matter == MATTER_PAA && t->path_len != -1 && t->path_len != 1) {
            return "matter = paa has path-len none or 1";
        }
        *key = t->matter == MATTER_PAI ? "required" : "allowed";
        if (t->matter == MATTER_PAI && !tpl_nid_in(t->subject_required, vid)) {
            return "matter = pai requires matter-vid in the subject";
        }
        if (t->matter == MATTER_PAA && tpl_nid_in(t->subject_allowed, pid)) {
            return "a Matter PAA carries no matter-pid";
        }
        break;
    default: return "matter must be paa, pai or dac";
    }
    return NULL;
}

/* ---- policy on a request -------------------------------------------------------------------- */

typedef struct {
    int has_vid, has_pid;
    uint16_t vid, pid;
} matter_ids;

static kl_rc matter_ids_get(const X509_NAME *n, matter_ids *ids)
{
    kl_rc rc = KL_OK;
    memset(ids, 0, sizeof *ids);
    TRY(matter_name_id(n, matter_nid_vid(), &ids->has_vid, &ids->vid));
    TRY(matter_name_id(n, matter_nid_pid(), &ids->has_pid, &ids->pid));
out:
    return rc;
}

/* Matter 6.2.2.2 keeps a legacy encoding of VID and PID in the common name ("Mvid:FFF1
 * Mpid:8000"). The SDK reads it from every CN beside the attributes (ExtractVIDPIDFromX509Cert)
 * and refuses the whole certificate when a prefix is followed by no four upper-case hex digits;
 * where it parses it must say what the attributes say. */
static kl_rc matter_cn_legacy_check(const X509_NAME *name, const matter_ids *ids)
{
    kl_rc rc = KL_OK;
    static const char *const prefix[2] = {"Mvid:", "Mpid:"};
    for (int i = -1; (i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0;) {
        const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        const char *cn = (const char *)ASN1_STRING_get0_data(d);
        size_t n = (size_t)ASN1_STRING_length(d);
        for (int p = 0; p < 2; p++) {
            int seen = 0, found = 0;
            unsigned val = 0;
            for (size_t k = 0; k + 5 <= n && !found; k++) {
                if (memcmp(cn + k, prefix[p], 5) != 0) {
                    continue;
                }
                seen = 1;
                found = k + 9 <= n;
                val = 0;
                for (size_t h = k + 5; found && h < k + 9; h++) {
                    const char c = cn[h];
                    found = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
                    val = val * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'A' + 10);
                }
            }
            const int has = p == 0 ? ids->has_vid : ids->has_pid;
            const unsigned want = p == 0 ? ids->vid : ids->pid;
            ENSURE(!seen || found, KL_EPOLICY,
                   "subject CN has '%s' without four upper-case hex digits after it: Matter "
                   "commissioners refuse such a certificate",
                   prefix[p]);
            ENSURE(!found || (has && val == want), KL_EPOLICY,
                   "subject CN says %s%04X, the Matter attribute says otherwise", prefix[p], val);
        }
    }
out:
    return rc;
}

kl_rc matter_policy_check(const tpl *t, const X509_NAME *subject, X509 *issuer)
{
    kl_rc rc = KL_OK;
    ASN1_GENERALIZEDTIME *forever = NULL;
    matter_ids s, i;
    TRY(matter_ids_get(subject, &s));
    ENSURE(s.has_vid || t->matter == MATTER_PAA, KL_EPOLICY,
           "template %s (Matter %s) needs the Matter VendorID in the subject", t->name,
           matter_kind_name(t->matter));
    ENSURE(s.has_pid || t->matter != MATTER_DAC, KL_EPOLICY,
           "template %s (Matter DAC) needs the Matter ProductID in the subject", t->name);
    ENSURE(!s.has_pid || t->matter != MATTER_PAA, KL_EPOLICY, "a Matter PAA carries no ProductID");
    /* Matter 2.5.2: VendorID 0x0000 is the Matter standard's and 0xFFF5..0xFFFF are reserved
     * (the test vendors are 0xFFF1..0xFFF4); 2.5.3: "A value of 0x0000 SHALL NOT be assigned to
     * a product". A commissioner refuses such an onboarding payload. */
    ENSURE(!s.has_vid || kl_matter_vid_ok(s.vid), KL_EPOLICY,
           "Matter VendorID %04X is not a vendor's (0001..%04X)", s.vid, KL_MATTER_VID_MAX);
    ENSURE(!s.has_pid || s.pid != 0, KL_EPOLICY, "Matter ProductID 0000 is not a product's");
    TRY(matter_cn_legacy_check(subject, &s));
    if (!issuer || t->matter == MATTER_PAA) {
        goto out;
    }
    /* Matter 6.2.2: a certificate's validity lies inside its issuer's. tpl_set_validity clamps
     * a template in days; `forever` needs an issuer that is forever too. */
    if (t->validity_forever) {
        forever = ASN1_GENERALIZEDTIME_new();
        ENSURE(forever && ASN1_GENERALIZEDTIME_set_string(forever, TPL_NOTAFTER_FOREVER) == 1,
               KL_EINTERNAL, "out of memory");
        ENSURE(ASN1_TIME_compare(X509_get0_notAfter(issuer), forever) >= 0, KL_EPOLICY,
               "template %s gives notAfter %s but its issuer ends earlier: a Matter certificate "
               "lies inside its issuer's validity (give the template a validity in days)",
               t->name, TPL_NOTAFTER_FOREVER);
    }
    TRY(matter_ids_get(X509_get_subject_name(issuer), &i));
    if (t->matter == MATTER_DAC) {
        ENSURE(i.has_vid && X509_get_pathlen(issuer) == 0, KL_EPOLICY,
               "the issuer is not a Matter PAI (VendorID, pathLenConstraint 0): it issues no DAC");
        ENSURE(s.vid == i.vid, KL_EPOLICY,
               "DAC VendorID %04X differs from its PAI's %04X: the PAI refuses it", s.vid, i.vid);
        ENSURE(!i.has_pid || s.pid == i.pid, KL_EPOLICY,
               "the PAI is for ProductID %04X: it refuses a DAC for ProductID %04X", i.pid, s.pid);
    } else {
        ENSURE(!i.has_vid || s.vid == i.vid, KL_EPOLICY,
               "PAI VendorID %04X differs from its PAA's %04X", s.vid, i.vid);
        ENSURE(!i.has_pid, KL_EPOLICY, "the issuer carries a ProductID: it is no PAA");
    }
out:
    ASN1_GENERALIZEDTIME_free(forever);
    return rc;
}

/* ---- lint ----------------------------------------------------------------------------------- */

#define MLINT(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = kl_fail(KL_EINTERNAL, "lint: matter: " __VA_ARGS__);                              \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static int matter_is_p256(EVP_PKEY *k)
{
    return k && tpl_key_type_of(k, NULL, 0) == HSM_KEY_EC_P256;
}

/* SKI/AKI: Matter 6.2.2: "Subject Key Identifier ... 160-bit (20 octets)", non-critical. */
static kl_rc matter_lint_keyids(const tpl *t, X509 *cert)
{
    kl_rc rc = KL_OK;
    int crit = -1;
    ASN1_OCTET_STRING *ski = X509_get_ext_d2i(cert, NID_subject_key_identifier, &crit, NULL);
    AUTHORITY_KEYID *akid = NULL;
    MLINT(ski && ASN1_STRING_length(ski) == 20 && crit == 0,
          "subjectKeyIdentifier must be 20 octets, non-critical");
    akid = X509_get_ext_d2i(cert, NID_authority_key_identifier, &crit, NULL);
    MLINT(akid || t->matter == MATTER_PAA, "a %s has an authorityKeyIdentifier",
          matter_kind_name(t->matter));
    MLINT(!akid || (akid->keyid && ASN1_STRING_length(akid->keyid) == 20 && crit == 0 &&
                    !akid->issuer && !akid->serial),
          "authorityKeyIdentifier must be a 20-octet keyIdentifier, non-critical");
out:
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID_free(akid);
    return rc;
}

static kl_rc matter_lint_constraints(const tpl *t, X509 *cert)
{
    kl_rc rc = KL_OK;
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(cert, NID_basic_constraints, &crit, NULL);
    ASN1_BIT_STRING *ku = NULL;
    const uint32_t ca_bits = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
    MLINT(bc && crit == 1, "basicConstraints must be present and critical");
    if (t->matter == MATTER_DAC) {
        MLINT(!bc->ca && !bc->pathlen, "a DAC has cA FALSE");
    } else {
        MLINT(bc->ca, "a %s has cA TRUE", matter_kind_name(t->matter));
        long pl = bc->pathlen ? ASN1_INTEGER_get(bc->pathlen) : -1;
        MLINT(t->matter != MATTER_PAI || pl == 0, "a PAI has pathLenConstraint 0");
        MLINT(t->matter != MATTER_PAA || pl == -1 || pl == 1,
              "a PAA has no pathLenConstraint or 1");
    }
    ku = X509_get_ext_d2i(cert, NID_key_usage, &crit, NULL);
    MLINT(ku && crit == 1, "keyUsage must be present and critical");
    uint32_t bits = tpl_ku_bits(ku);
    if (t->matter == MATTER_DAC) {
        MLINT(bits == X509v3_KU_DIGITAL_SIGNATURE, "a DAC's keyUsage is digitalSignature only");
    } else {
        MLINT((bits & ca_bits) == ca_bits && !(bits & ~(ca_bits | X509v3_KU_DIGITAL_SIGNATURE)),
              "a %s's keyUsage is keyCertSign and cRLSign (digitalSignature allowed)",
              matter_kind_name(t->matter));
    }
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    return rc;
}

/* Subject VID/PID per kind, and against the issuer's. */
static kl_rc matter_lint_ids(const tpl *t, X509 *cert, X509 *issuer)
{
    kl_rc rc = KL_OK;
    matter_ids s, i;
    memset(&i, 0, sizeof i);
    MLINT(matter_ids_get(X509_get_subject_name(cert), &s) == KL_OK, "%s", kl_errmsg());
    MLINT(s.has_vid || t->matter == MATTER_PAA, "no VendorID in the subject");
    MLINT(s.has_pid || t->matter != MATTER_DAC, "a DAC has a ProductID in the subject");
    MLINT(!s.has_pid || t->matter != MATTER_PAA, "a PAA has no ProductID");
    if (issuer) {
        MLINT(matter_ids_get(X509_get_subject_name(issuer), &i) == KL_OK, "issuer: %s",
              kl_errmsg());
    }
    if (t->matter == MATTER_DAC) {
        MLINT(issuer && X509_get_pathlen(issuer) == 0, "a DAC's issuer is a PAI (pathLen 0)");
        MLINT(i.has_vid && i.vid == s.vid, "the DAC's VendorID differs from its PAI's");
        MLINT(!i.has_pid || i.pid == s.pid, "the DAC's ProductID differs from its PAI's");
    } else if (t->matter == MATTER_PAI) {
        MLINT(issuer && !i.has_pid, "a PAI's issuer is a PAA (no ProductID)");
        MLINT(!i.has_vid || i.vid == s.vid, "the PAI's VendorID differs from its PAA's");
    }
out:
    return rc;
}

kl_rc matter_lint(const tpl *t, X509 *cert, X509 *issuer)
{
    kl_rc rc = KL_OK;
    if (!t || !cert || t->matter == MATTER_NONE) {
        return KL_OK;
    }
    MLINT(X509_get_version(cert) == X509_VERSION_3, "not a version 3 certificate");
    /* Matter 6.2.2: "signatureAlgorithm ... ecdsa-with-SHA256"; the CA signs with SHA-256 for
     * a P-256 key (ca_sign_md), so the issuer's key must be P-256; a signed certificate is
     * checked as well. */
    MLINT(matter_is_p256(X509_get0_pubkey(cert)), "the subject key is not EC P-256");
    MLINT(matter_is_p256(X509_get0_pubkey(issuer ? issuer : cert)),
          "the issuer key is not EC P-256 (ecdsa-with-SHA256)");
    int sig_nid = X509_get_signature_nid(cert);
    MLINT(sig_nid == NID_undef || sig_nid == NID_ecdsa_with_SHA256,
          "signed with something else than ecdsa-with-SHA256");
    MLINT(!issuer || t->matter != MATTER_PAA, "a PAA is self-signed");
    MLINT(issuer || t->matter == MATTER_PAA, "a %s is not self-signed",
          matter_kind_name(t->matter));
    TRY(matter_lint_constraints(t, cert));
    TRY(matter_lint_keyids(t, cert));
    TRY(matter_lint_ids(t, cert, issuer));
    if (issuer) {
        /* Matter 6.2.2: the DAC's validity lies inside its PAI's (99991231235959Z allowed,
         * where it is the issuer's too) */
        MLINT(ASN1_TIME_compare(X509_get0_notBefore(cert), X509_get0_notBefore(issuer)) >= 0 &&
                  ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(issuer)) <= 0,
              "the validity is not inside the issuer's");
    }
out:
    return rc;
}
