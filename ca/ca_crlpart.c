/* keyline: partitioned CRLs (issue 17 item 3), for a CA with [ca LABEL] crl-partition-size = N.
 *
 * Each certificate of such a CA (those whose template asks for a CRL distribution point) goes
 * into the CA's current partition of at most N certificates (store_crlpart.c: counted in the
 * certificate's insert transaction) and names that partition's CRL as its distribution point;
 * that CRL lists the revoked certificates of the partition alone and says so in a critical
 * issuingDistributionPoint with the same name (RFC 5280 5.2.5), so a device downloads a CRL of
 * bounded size. The CA's full CRL (no issuingDistributionPoint) is unchanged and lists every
 * revoked certificate. A partition CRL is named "L/K" (partition K of CA L: a label never holds
 * a '/'), recorded in the store's crls table under that name and served as /crl/L/K.crl; its
 * number comes from the CA's one counter, shared with the full CRL (strictly increasing). */
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_internal.h"
#include "kl_log.h"

kl_rc ca_crlpart_size(ca_ctx *ca, const char *label, int64_t *size)
{
    char sect[CA_LABEL_MAX + 8];
    long v = 0;
    *size = 0;
    if (!ca->conf) {
        return KL_OK;
    }
    snprintf(sect, sizeof sect, "ca %s", label);
    /* the message names the file, the line, the section and the key */
    kl_rc rc = kl_conf_get_long(ca->conf, sect, "crl-partition-size", 0, 1, 1L << 30, &v);
    *size = rc == KL_OK ? v : 0;
    return rc;
}

/* 1 if `list` holds a CA labelled `label` */
static int crlpart_ca_known(const store_ca *list, size_t n, const char *label)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].label, label) == 0) {
            return 1;
        }
    }
    return 0;
}

kl_rc ca_crlpart_conf_check(ca_ctx *ca)
{
    kl_rc rc = KL_OK;
    char url[1024];
    store_ca *list = NULL;
    size_t n_cas = 0;
    int listed = 0; /* 1: read, -1: the read failed (the next read reports it) */
    for (size_t i = 0; ca->conf && kl_conf_section(ca->conf, i); i++) {
        const char *sect = kl_conf_section(ca->conf, i);
        if (strncmp(sect, "ca ", 3) != 0) {
            continue;
        }
        const char *label = sect + 3;
        int64_t n = 0;
        TRY(ca_crlpart_size(ca, label, &n));
        if (n > 0) {
            TRY(ca_crlpart_url(ca, label, 0, url, sizeof url));
        }
        if (!listed) {
            listed = store_ca_list(ca->st, &list, &n_cas) == KL_OK ? 1 : -1;
        }
        if (listed > 0 && !crlpart_ca_known(list, n_cas, label)) {
            kl_warn("[ca %s] in %s: the store has no CA labelled '%s' (yet); its settings "
                    "apply once one is made",
                    label, kl_conf_file(ca->conf), label);
        }
    }
out:
    store_ca_list_free(list, n_cas);
    return rc;
}

kl_rc ca_crlpart_name_parse(const char *name, char *label, size_t label_sz, int64_t *part)
{
    const char *slash = strchr(name, '/');
    size_t n = slash ? (size_t)(slash - name) : strlen(name);
    *part = -1;
    if (n == 0 || n >= label_sz) {
        return kl_fail(KL_EUSAGE, "'%.140s' is not a CA label or L/PARTITION", name);
    }
    memcpy(label, name, n);
    label[n] = 0;
    if (slash) {
        const char *d = slash + 1;
        char *end = NULL;
        long long v = strtoll(d, &end, 10);
        if (*d < '0' || *d > '9' || *end || v < 0 || v > (1LL << 40) || (d[0] == '0' && d[1])) {
            return kl_fail(KL_EUSAGE, "'%.140s': the partition is a number (L/PARTITION)", name);
        }
        *part = v;
    }
    return KL_OK;
}

/* [ca] crl-url with {issuer} and {partition} replaced; without {partition} in it, the URL must
 * end in ".crl", which becomes "/K.crl" (keyline-estd's /crl/L/K.crl). */
kl_rc ca_crlpart_url(ca_ctx *ca, const char *label, int64_t part, char *out, size_t outlen)
{
    const char *pat = ca->crl_url;
    size_t n = 0;
    if (!pat || !*pat) {
        return kl_fail(KL_EUSAGE, "[ca %s] crl-partition-size needs [ca] crl-url", label);
    }
    char k[24];
    snprintf(k, sizeof k, "%lld", (long long)part);
    int has_part = strstr(pat, "{partition}") != NULL;
    for (const char *s = pat; *s;) {
        const char *piece = s;
        size_t plen = 1;
        if (strncmp(s, "{issuer}", 8) == 0 || strncmp(s, "{partition}", 11) == 0) {
            piece = s[1] == 'i' ? label : k;
            plen = strlen(piece);
            s += s[1] == 'i' ? 8 : 11;
        } else if (!has_part && strcmp(s, ".crl") == 0) {
            piece = k;
            plen = strlen(k);
            if (n + 1 >= outlen) {
                break;
            }
            out[n++] = '/';
            has_part = 1; /* ".crl" follows as it is */
        } else {
            s++;
        }
        if (n + plen >= outlen) {
            return kl_fail(KL_EUSAGE, "[ca] crl-url '%s' is too long once expanded", pat);
        }
        memcpy(out + n, piece, plen);
        n += plen;
    }
    out[n] = 0;
    if (!has_part) {
        return kl_fail(KL_EUSAGE,
                       "[ca] crl-url '%s' names no partition: with [ca %s] crl-partition-size it "
                       "holds {partition} or ends in .crl",
                       pat, label);
    }
    return KL_OK;
}

kl_rc ca_crlpart_dp_url(ca_ctx *ca, const char *label, int64_t part, char *out, size_t outlen)
{
    char now[1024];
    kl_rc rc = ca_crlpart_url(ca, label, part, now, sizeof now);
    return rc == KL_OK ? store_crlpart_url(ca->st, label, part, now, out, outlen) : rc;
}

kl_rc ca_crlpart_dpname(const char *url, DIST_POINT_NAME **out)
{
    kl_rc rc = KL_OK;
    DIST_POINT_NAME *dpn = DIST_POINT_NAME_new();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    ENSURE(dpn && g && s && ASN1_STRING_set(s, url, (int)strlen(url)), KL_EINTERNAL,
           "out of memory");
    GENERAL_NAME_set0_value(g, GEN_URI, s);
    s = NULL;
    dpn->type = 0; /* fullName */
    dpn->name.fullname = sk_GENERAL_NAME_new_null();
    ENSURE(dpn->name.fullname && sk_GENERAL_NAME_push(dpn->name.fullname, g), KL_EINTERNAL,
           "out of memory");
    g = NULL;
    *out = dpn;
    dpn = NULL;
out:
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(g);
    DIST_POINT_NAME_free(dpn);
    return rc;
}

/* The certificate's cRLDistributionPoints (put there by the template) replaced in place by the
 * partition's. */
static kl_rc crlpart_cdp_set(X509 *cert, const char *url)
{
    kl_rc rc = KL_OK;
    CRL_DIST_POINTS *cdp = sk_DIST_POINT_new_null();
    DIST_POINT *dp = DIST_POINT_new();
    ENSURE(cdp && dp, KL_EINTERNAL, "out of memory");
    TRY(ca_crlpart_dpname(url, &dp->distpoint));
    ENSURE(sk_DIST_POINT_push(cdp, dp), KL_EINTERNAL, "out of memory");
    dp = NULL;
    ENSURE_SSL(X509_add1_ext_i2d(cert, NID_crl_distribution_points, cdp, 0, X509V3_ADD_REPLACE) ==
                   1,
               KL_EINTERNAL, "cannot set the CRL distribution point");
out:
    DIST_POINT_free(dp);
    sk_DIST_POINT_pop_free(cdp, DIST_POINT_free);
    return rc;
}

kl_rc ca_crlpart_assign(ca_ctx *ca, const char *label, X509 *cert, int64_t *part, int64_t *size)
{
    kl_rc rc = KL_OK;
    char url[1024];
    *part = 0;
    *size = 0;
    /* only a certificate with a distribution point (its template's) has a partition to name */
    if (!label || X509_get_ext_by_NID(cert, NID_crl_distribution_points, -1) < 0) {
        return KL_OK;
    }
    int64_t n = 0;
    TRY(ca_crlpart_size(ca, label, &n));
    /* the template's distribution point would hold "{partition}" as it is */
    ENSURE(n > 0 || !ca->crl_url || !strstr(ca->crl_url, "{partition}"), KL_EUSAGE,
           "[ca] crl-url has {partition}, but CA %s has no [ca %s] crl-partition-size", label,
           label);
    if (n == 0) {
        return KL_OK;
    }
    TRY(store_crlpart_current(ca->st, label, n, part));
    TRY(ca_crlpart_dp_url(ca, label, *part, url, sizeof url));
    TRY(crlpart_cdp_set(cert, url));
    *size = n;
out:
    return rc;
}

kl_rc ca_crlpart_stored(ca_ctx *ca, const char *name, int64_t revoked, uint8_t **der, size_t *len,
                        time_t *refresh_at, int64_t *number)
{
    kl_rc rc = KL_OK;
    store_crl c;
    X509_CRL *crl = NULL;
    memset(&c, 0, sizeof c);
    TRY(store_crl_get(ca->st, name, &c));
    time_t half = c.this_update + (c.next_update - c.this_update) / 2;
    ENSURE(time(NULL) < half, KL_ENOTFOUND, "the published CRL %s is past half its validity", name);
    /* its entries were revoked when it was made and stay revoked: as many as now, the same */
    const uint8_t *p = c.der;
    crl = d2i_X509_CRL(NULL, &p, (long)c.der_len);
    ENSURE(crl, KL_ENOTFOUND, "the published CRL %s cannot be read", name);
    /* a CRL without entries has no list at all (num of NULL is -1, not 0) */
    const STACK_OF(X509_REVOKED) *listed = X509_CRL_get_REVOKED(crl);
    ENSURE((listed ? sk_X509_REVOKED_num(listed) : 0) == revoked, KL_ENOTFOUND,
           "the published CRL %s lacks a revocation", name);
    *refresh_at = half;
    *number = c.number;
    *der = c.der;
    *len = c.der_len;
    c.der = NULL;
out:
    X509_CRL_free(crl);
    store_crl_free(&c);
    return rc;
}

/* Partition `part`'s CRL ("L/K") signed and published, nextUpdate `until` (0: as usual). */
static kl_rc crlpart_sign(ca_ctx *ca, const char *label, int64_t part, time_t until)
{
    char name[CA_LABEL_MAX + 24];
    ca_crl_result r;
    snprintf(name, sizeof name, "%s/%lld", label, (long long)part);
    kl_rc rc = ca_crl_der(ca, name, until, &r);
    ca_crl_result_free(&r);
    return rc;
}

kl_rc ca_crlpart_final(ca_ctx *ca, const char *label, time_t until)
{
    kl_rc rc = KL_OK;
    int64_t last = -1;
    TRY(store_crlpart_last(ca->st, label, &last));
    for (int64_t k = 0; k <= last; k++) {
        TRY(crlpart_sign(ca, label, k, until));
    }
out:
    return rc;
}

kl_rc ca_crlpart_catch_up(ca_ctx *ca, const char *label, size_t *count)
{
    kl_rc rc = KL_OK;
    int64_t last = -1;
    *count = 0;
    TRY(store_crlpart_last(ca->st, label, &last));
    for (int64_t k = 0; k <= last; k++) {
        char name[CA_LABEL_MAX + 24];
        int64_t revoked = 0, number = 0;
        uint8_t *der = NULL;
        size_t len = 0;
        time_t refresh_at = 0;
        snprintf(name, sizeof name, "%s/%lld", label, (long long)k);
        TRY(store_crlpart_revoked_count(ca->st, label, k, &revoked));
        rc = ca_crlpart_stored(ca, name, revoked, &der, &len, &refresh_at, &number);
        free(der);
        if (rc == KL_OK) {
            continue; /* complete and before half its validity */
        }
        TRY(rc == KL_ENOTFOUND ? KL_OK : rc);
        rc = KL_OK;
        if (revoked == 0) {
            /* nothing revoked and none published: nothing a relying party could miss */
            store_crl_meta h;
            kl_rc hr = store_crl_head(ca->st, name, &h);
            if (hr == KL_ENOTFOUND) {
                continue;
            }
            TRY(hr);
        }
        TRY(crlpart_sign(ca, label, k, 0));
        (*count)++;
    }
out:
    return rc;
}

kl_rc ca_crlpart_publish(ca_ctx *ca, const char *label, const char *serial, time_t since,
                         size_t *count)
{
    kl_rc rc = KL_OK;
    int64_t *parts = NULL, one = -1;
    size_t n = 0;
    *count = 0;
    if (serial) {
        TRY(store_crlpart_of(ca->st, serial, &one));
        parts = one >= 0 ? &one : NULL;
        n = one >= 0;
    } else {
        TRY(store_crlpart_revoked_since(ca->st, label, since, &parts, &n));
    }
    for (size_t i = 0; i < n; i++) {
        TRY(crlpart_sign(ca, label, parts[i], 0));
        (*count)++;
    }
out:
    free(parts == &one ? NULL : parts);
    return rc;
}
