/* keyline: no certificate issued from a request takes the name of a CA (issue 10, defect 7).
 *
 * A relying party finds a certificate's issuer by name: an end-entity certificate whose subject
 * is a CA's DN (a device whose CSR copied its factory CA's DN) can be taken for that CA in chain
 * building and in every log and UI that shows names, and a CA certificate under an existing
 * CA's name for another key is a second CA of that name. ca_issue() refuses both, for every
 * front end (station, EST, keyline-ca issue). ca create, rotate and OCSP signer renewal name
 * their subjects themselves and do not come here (a rotation keeps the old name for a new key,
 * on purpose). */
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "ca_internal.h"

/* Whether attribute i of a and attribute j of b are equal the way X509_NAME_cmp compares names:
 * canonical form (case, inner spaces, string types do not count). -1 on error. */
static int ca_subject_attr_eq(const X509_NAME *a, int i, const X509_NAME *b, int j)
{
    X509_NAME *x = X509_NAME_new(), *y = X509_NAME_new();
    int eq = -1;
    if (x && y && X509_NAME_add_entry(x, X509_NAME_get_entry(a, i), -1, 0) == 1 &&
        X509_NAME_add_entry(y, X509_NAME_get_entry(b, j), -1, 0) == 1) {
        eq = X509_NAME_cmp(x, y) == 0;
    }
    X509_NAME_free(x);
    X509_NAME_free(y);
    return eq;
}

static const ASN1_OBJECT *ca_subject_type(const X509_NAME *n, int i)
{
    return X509_NAME_ENTRY_get_object(X509_NAME_get_entry(n, i));
}

/* 1 if a and b have the same attribute types, as many of each (n attributes each): a cheap
 * answer for most pairs (a device's CN + serialNumber against a CA's CN + O), before values
 * are compared the costly way. */
static int ca_subject_types_same(const X509_NAME *a, const X509_NAME *b, int n)
{
    unsigned char used[64] = {0};
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) {
            found = !used[j] && OBJ_cmp(ca_subject_type(a, i), ca_subject_type(b, j)) == 0;
            used[j] |= (unsigned char)found;
        }
        if (!found) {
            return 0;
        }
    }
    return 1;
}

/* The same attributes in any order or RDN grouping: a reordered DN reads the same to a person.
 * An empty name is nobody's (every CA template requires a CN). */
static int ca_subject_same(const X509_NAME *a, const X509_NAME *b)
{
    enum { MAX_ATTRS = 64 };
    unsigned char used[MAX_ATTRS] = {0};
    int n = X509_NAME_entry_count(a);
    if (n == 0 || n != X509_NAME_entry_count(b)) {
        return 0;
    }
    if (n == 1 || n > MAX_ATTRS) {
        /* one attribute each: the whole names' canonical encodings are those of the
         * one-attribute names ca_subject_attr_eq would build (a CA's, decoded, already holds
         * its own; nothing is written to the shared certificate) */
        return X509_NAME_cmp(a, b) == 0;
    }
    if (!ca_subject_types_same(a, b, n)) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) {
            if (used[j] || OBJ_cmp(ca_subject_type(a, i), ca_subject_type(b, j)) != 0) {
                continue;
            }
            int eq = ca_subject_attr_eq(a, i, b, j);
            if (eq < 0) {
                return -1;
            }
            if (eq) {
                used[j] = 1;
                found = 1;
            }
        }
        if (!found) {
            return 0;
        }
    }
    return 1;
}

static void ca_subject_cache_clear(ca_ctx *ca)
{
    for (size_t i = 0; i < ca->nsubj; i++) {
        free(ca->subj[i].der);
        X509_free(ca->subj[i].x);
    }
    ca->nsubj = 0;
}

void ca_subject_cache_free(ca_ctx *ca)
{
    ca_subject_cache_clear(ca);
    pthread_mutex_destroy(&ca->subj_mu);
}

/* The CA certificate `der` parsed (a reference the caller frees), or NULL when it does not
 * parse. Parsed once per DER: decoding a certificate's public key costs more in OpenSSL 3 than
 * the rest of an issuance's CPU work besides the signature and the two verifications, and
 * this runs for every CA on every issuance. The DER itself is listed from the store each time
 * (another process may add a CA), so the cache never decides what the check sees. */
static X509 *ca_subject_parsed(ca_ctx *ca, const uint8_t *der, size_t len)
{
    X509 *x = NULL;
    pthread_mutex_lock(&ca->subj_mu);
    for (size_t i = 0; i < ca->nsubj && !x; i++) {
        if (ca->subj[i].len == len && memcmp(ca->subj[i].der, der, len) == 0 &&
            X509_up_ref(ca->subj[i].x) == 1) {
            x = ca->subj[i].x;
        }
    }
    pthread_mutex_unlock(&ca->subj_mu);
    if (x || !(x = ca_der_to_x509(der, len))) {
        return x;
    }
    uint8_t *copy = malloc(len ? len : 1);
    pthread_mutex_lock(&ca->subj_mu);
    if (ca->nsubj == CA_PARSED_MAX) {
        ca_subject_cache_clear(ca); /* stale ones among them: start again */
    }
    if (copy && X509_up_ref(x) == 1) {
        memcpy(copy, der, len);
        ca->subj[ca->nsubj].der = copy;
        ca->subj[ca->nsubj].len = len;
        ca->subj[ca->nsubj++].x = x;
        copy = NULL;
    }
    pthread_mutex_unlock(&ca->subj_mu);
    free(copy);
    return x;
}

kl_rc ca_subject_check(ca_ctx *ca, const X509 *cert, int is_ca)
{
    store_ca *cas = NULL;
    size_t n = 0;
    kl_rc rc = store_ca_list(ca->st, &cas, &n);
    rc = rc != KL_OK ? rc : ca_subject_check_in(ca, cert, is_ca, cas, n);
    store_ca_list_free(cas, n);
    return rc;
}

kl_rc ca_subject_check_in(ca_ctx *ca, const X509 *cert, int is_ca, const store_ca *cas, size_t n)
{
    kl_rc rc = KL_OK;
    const X509_NAME *subject = X509_get_subject_name(cert);
    for (size_t i = 0; i < n; i++) {
        X509 *x = ca_subject_parsed(ca, cas[i].der, cas[i].der_len);
        if (!x) {
            continue; /* not ours to judge here: ca_entry_get reports it */
        }
        int same = ca_subject_same(subject, X509_get_subject_name(x));
        /* a CA certificate for the very key of the CA of that name (a cross-certificate) is the
         * same CA, not a second one */
        int same_key =
            is_ca && same == 1 && EVP_PKEY_eq(X509_get0_pubkey(x), X509_get0_pubkey(cert)) == 1;
        X509_free(x);
        ENSURE_SSL(same >= 0, KL_EINTERNAL, "cannot compare names");
        if (same && !same_key) {
            char text[256] = "";
            BIO *b = BIO_new(BIO_s_mem());
            char *mem = NULL;
            long len;
            if (b && X509_NAME_print_ex(b, subject, 0, XN_FLAG_RFC2253) >= 0 &&
                (len = BIO_get_mem_data(b, &mem)) > 0) {
                snprintf(text, sizeof text, "%.*s", (int)(len < 200 ? len : 200), mem);
            }
            BIO_free(b);
            rc = kl_fail(KL_EPOLICY,
                         "subject '%s' is the subject of CA '%s': a certificate issued from a "
                         "request never takes a CA's name",
                         text, cas[i].label);
            goto out;
        }
    }
out:
    return rc;
}
