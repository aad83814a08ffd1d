/* keyline: CRLs written as DER straight from the store (RFC 5280 5.1), at any size.
 *
 * The revoked certificates of the issuer come from store_revoked_stream in serial order (an
 * index holds what an entry needs: no certificate row, no DER is read) and are encoded one by
 * one into the revokedCertificates buffer; the TBSCertList around it is hashed in pieces, the
 * hash signed in the token (EVP_PKEY_sign with the CA key: the key never leaves it), and the
 * CertificateList assembled once. Nothing is parsed or encoded twice: memory is about twice
 * the CRL's size. The cRLNumber is the one after the last taken and is only taken when the CRL
 * is recorded (store_crl_commit): a CRL that fails on the way uses no number. */
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_image.h"
#include "ca_internal.h"

/* A growable byte array, at most `cap` bytes. */
typedef struct {
    uint8_t *p;
    size_t len, alloc, cap;
} crl_buf;

static int crl_buf_put(crl_buf *b, const void *v, size_t n)
{
    if (n > b->cap - b->len) {
        return -1;
    }
    if (n == 0) {
        return 0; /* memcpy's source may be NULL here (an empty field): undefined even for 0 */
    }
    if (b->len + n > b->alloc) {
        size_t na = b->alloc ? b->alloc : 1 << 16;
        while (na < b->len + n) {
            na *= 2;
        }
        na = na > b->cap ? b->cap : na;
        uint8_t *np = realloc(b->p, na);
        if (!np) {
            return -1;
        }
        b->p = np;
        b->alloc = na;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
    return 0;
}

/* DER tag and length of `len` content octets into h; returns the header's size. */
static size_t crl_hdr(uint8_t tag, size_t len, uint8_t h[6])
{
    size_t n = 0;
    h[n++] = tag;
    if (len < 0x80) {
        h[n++] = (uint8_t)len;
        return n;
    }
    int k = len > 0xffffff ? 4 : len > 0xffff ? 3 : len > 0xff ? 2 : 1;
    h[n++] = (uint8_t)(0x80 | k);
    for (int i = k - 1; i >= 0; i--) {
        h[n++] = (uint8_t)(len >> (8 * i));
    }
    return n;
}

/* RFC 5280 5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050. */
static size_t crl_time(time_t t, uint8_t out[17])
{
    struct tm tm;
    char s[20];
    gmtime_r(&t, &tm);
    int gen = tm.tm_year + 1900 >= 2050;
    size_t n = strftime(s, sizeof s, gen ? "%Y%m%d%H%M%SZ" : "%y%m%d%H%M%SZ", &tm);
    out[0] = gen ? V_ASN1_GENERALIZEDTIME : V_ASN1_UTCTIME;
    out[1] = (uint8_t)n;
    memcpy(out + 2, s, n);
    return n + 2;
}

typedef struct {
    crl_buf entries;
    size_t count;
    kl_rc rc;
    int64_t epoch; /* the issuer's revocation epoch, read before the entries */
} crl_fill;

static int crl_nibble(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One revokedCertificates entry: SEQUENCE { userCertificate, revocationDate,
 * crlEntryExtensions { reasonCode } when there is a reason other than unspecified }. */
static kl_rc crl_entry(void *arg, const store_revoked *r)
{
    crl_fill *f = arg;
    kl_rc rc = KL_OK;
    uint8_t e[128], serial[34], t[17];
    size_t hl = strlen(r->serial_hex), sn = 0;
    ENSURE(hl > 0 && hl <= 64, KL_EINPUT, "store: serial %s too long for a CRL", r->serial_hex);
    for (size_t i = 0; i < hl;) {
        int hi = hl % 2 && i == 0 ? 0 : crl_nibble(r->serial_hex[i++]);
        int lo = crl_nibble(r->serial_hex[i++]);
        ENSURE(hi >= 0 && lo >= 0, KL_EINPUT, "store: serial %s is not hex", r->serial_hex);
        serial[1 + sn++] = (uint8_t)(hi << 4 | lo);
    }
    /* INTEGER: positive, so a leading 0x00 when the high bit is set; no leading zero octets */
    uint8_t *sp = serial + 1;
    while (sn > 1 && sp[0] == 0 && !(sp[1] & 0x80)) {
        sp++;
        sn--;
    }
    if (sp[0] & 0x80) {
        *--sp = 0;
        sn++;
    }
    size_t tn = crl_time(r->revoked_at, t);
    /* RFC 5280 5.3.1: the reason code "unspecified" SHOULD be absent */
    static const uint8_t reason_ext[] = {0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55,
                                         0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01};
    int with_reason = r->reason > 0;
    size_t body = 2 + sn + tn + (with_reason ? sizeof reason_ext + 1 : 0);
    size_t n = crl_hdr(V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, body, e);
    e[n++] = V_ASN1_INTEGER;
    e[n++] = (uint8_t)sn;
    memcpy(e + n, sp, sn);
    n += sn;
    memcpy(e + n, t, tn);
    n += tn;
    if (with_reason) {
        memcpy(e + n, reason_ext, sizeof reason_ext);
        n += sizeof reason_ext;
        e[n++] = (uint8_t)r->reason;
    }
    ENSURE(crl_buf_put(&f->entries, e, n) == 0, KL_EINPUT,
           "the CRL would exceed %zu bytes (the store's limit)", (size_t)STORE_CRL_MAX);
    f->count++;
    return KL_OK;
out:
    return rc;
}

/* RFC 5280 5.2.5: issuingDistributionPoint, "a critical CRL extension that identifies the CRL
 * distribution point and scope for a particular CRL": a partition's, named as its certificates'
 * cRLDistributionPoints name it (ca_crlpart.c). */
static kl_rc crl_idp_add(X509_EXTENSIONS **exts, const char *url)
{
    ISSUING_DIST_POINT *idp = ISSUING_DIST_POINT_new();
    kl_rc rc = idp ? ca_crlpart_dpname(url, &idp->distpoint) : kl_fail(KL_EINTERNAL, "memory");
    if (rc == KL_OK && X509V3_add1_i2d(exts, NID_issuing_distribution_point, idp, 1, 0) != 1) {
        rc = kl_fail_ssl(KL_EINTERNAL, "cannot add the issuingDistributionPoint");
    }
    ISSUING_DIST_POINT_free(idp);
    return rc;
}

/* crlExtensions [0] EXPLICIT: cRLNumber (RFC 5280 5.2.3: MUST) and the authority key
 * identifier (5.2.1: MUST), and a partition's issuingDistributionPoint (idp_url, NULL: none),
 * DER into *der (OPENSSL_free). */
static kl_rc crl_extensions(const ca_entry *e, int64_t number, const char *idp_url, uint8_t **der,
                            size_t *len)
{
    kl_rc rc = KL_OK;
    X509_EXTENSIONS *exts = sk_X509_EXTENSION_new_null();
    ASN1_INTEGER *num = ASN1_INTEGER_new();
    X509_EXTENSION *aki = NULL;
    X509V3_CTX v3;
    uint8_t *inner = NULL;
    ENSURE(exts && num && ASN1_INTEGER_set_int64(num, number), KL_EINTERNAL, "out of memory");
    ENSURE_SSL(X509V3_add1_i2d(&exts, NID_crl_number, num, 0, 0) == 1, KL_EINTERNAL,
               "cannot add cRLNumber");
    X509V3_set_ctx(&v3, e->cert, NULL, NULL, NULL, 0);
    aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
    ENSURE_SSL(aki && sk_X509_EXTENSION_push(exts, aki), KL_EINTERNAL, "cannot add the AKI");
    aki = NULL;
    TRY(idp_url ? crl_idp_add(&exts, idp_url) : KL_OK);
    int n = i2d_X509_EXTENSIONS(exts, &inner);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode the CRL extensions");
    uint8_t h[6];
    size_t hn = crl_hdr(0xa0, (size_t)n, h);
    *der = OPENSSL_malloc(hn + (size_t)n);
    ENSURE(*der, KL_EINTERNAL, "out of memory");
    memcpy(*der, h, hn);
    memcpy(*der + hn, inner, (size_t)n);
    *len = hn + (size_t)n;
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    ASN1_INTEGER_free(num);
    X509_EXTENSION_free(aki);
    OPENSSL_free(inner);
    return rc;
}

/* The signature AlgorithmIdentifier for the CA key (DER into alg, OPENSSL_free). */
static kl_rc crl_sig_alg(EVP_PKEY *key, const EVP_MD *md, uint8_t **alg, size_t *len)
{
    int sig_nid = 0;
    int base = EVP_PKEY_get_base_id(key);
    /* RFC 8410 3: id-Ed25519 names the key and the signature (md NULL: PureEdDSA) */
    if (md == NULL) {
        sig_nid = base;
    } else if (!OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(md), base)) {
        return kl_fail(KL_EINTERNAL, "no signature algorithm for this CA key");
    }
    X509_ALGOR *a = X509_ALGOR_new();
    /* RFC 5758 3.2: ECDSA without parameters; RFC 4055 5: RSA with NULL */
    int ok = a && X509_ALGOR_set0(a, OBJ_nid2obj(sig_nid),
                                  base == EVP_PKEY_RSA ? V_ASN1_NULL : V_ASN1_UNDEF, NULL);
    int n = ok ? i2d_X509_ALGOR(a, alg) : -1;
    X509_ALGOR_free(a);
    if (n <= 0) {
        return kl_fail_ssl(KL_EINTERNAL, "cannot encode the signature algorithm");
    }
    *len = (size_t)n;
    return KL_OK;
}

/* An Ed25519 CA (md NULL): RFC 8032 PureEdDSA signs the whole TBSCertList, not a hash of it,
 * so the pieces are joined in memory first (a third copy of the CRL, at most STORE_CRL_MAX). */
static kl_rc crl_sign_pure(const ca_entry *e, const crl_buf *parts, size_t nparts, uint8_t **sig,
                           size_t *siglen)
{
    kl_rc rc = KL_OK;
    crl_buf tbs = {.cap = (size_t)STORE_CRL_MAX};
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    for (size_t i = 0; i < nparts; i++) {
        ENSURE(crl_buf_put(&tbs, parts[i].p, parts[i].len) == 0, KL_EINTERNAL,
               "CRL larger than %lld bytes", (long long)STORE_CRL_MAX);
    }
    ENSURE_SSL(m && EVP_DigestSignInit(m, NULL, NULL, NULL, e->key) == 1 &&
                   EVP_DigestSign(m, NULL, siglen, tbs.p, tbs.len) == 1,
               KL_EHSM, "signing the CRL in the HSM failed");
    *sig = OPENSSL_malloc(*siglen);
    ENSURE(*sig, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(EVP_DigestSign(m, *sig, siglen, tbs.p, tbs.len) == 1, KL_EHSM,
               "signing the CRL in the HSM failed");
out:
    EVP_MD_CTX_free(m);
    free(tbs.p);
    return rc;
}

/* Hash the TBS pieces, sign the hash with the CA key in the token. */
static kl_rc crl_sign(const ca_entry *e, const EVP_MD *md, const crl_buf *parts, size_t nparts,
                      uint8_t **sig, size_t *siglen)
{
    kl_rc rc = KL_OK;
    uint8_t dgst[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_MD_CTX *m = NULL;
    EVP_PKEY_CTX *pc = NULL;
    if (md == NULL) {
        return crl_sign_pure(e, parts, nparts, sig, siglen);
    }
    m = EVP_MD_CTX_new();
    ENSURE(m && EVP_DigestInit_ex(m, md, NULL) == 1, KL_EINTERNAL, "digest");
    for (size_t i = 0; i < nparts; i++) {
        ENSURE(EVP_DigestUpdate(m, parts[i].p, parts[i].len) == 1, KL_EINTERNAL, "digest");
    }
    ENSURE(EVP_DigestFinal_ex(m, dgst, &dl) == 1, KL_EINTERNAL, "digest");
    pc = EVP_PKEY_CTX_new(e->key, NULL);
    ENSURE_SSL(pc && EVP_PKEY_sign_init(pc) > 0 && EVP_PKEY_CTX_set_signature_md(pc, md) > 0 &&
                   (EVP_PKEY_get_base_id(e->key) != EVP_PKEY_RSA ||
                    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0) &&
                   EVP_PKEY_sign(pc, NULL, siglen, dgst, dl) > 0,
               KL_EHSM, "signing the CRL in the HSM failed");
    *sig = OPENSSL_malloc(*siglen);
    ENSURE(*sig, KL_EINTERNAL, "out of memory");
    ENSURE_SSL(EVP_PKEY_sign(pc, *sig, siglen, dgst, dl) > 0, KL_EHSM,
               "signing the CRL in the HSM failed");
out:
    EVP_MD_CTX_free(m);
    EVP_PKEY_CTX_free(pc);
    return rc;
}

/* The CA checks of ca_crl: an issuing CA with a key here; its nextUpdate span in seconds. */
static kl_rc crl_issuer(ca_ctx *ca, const char *issuer, const ca_entry **e, long *span)
{
    kl_rc rc = KL_OK;
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    /* Only CAs that issue certificates publish CRLs: not OCSP signers, not rollover
     * certificates (they have no key of their own under that label), not firmware keys. */
    TRY(store_ca_get(ca->st, issuer, &rec));
    ENSURE(!ca_is_firmware_template(rec.template_name), KL_EUSAGE,
           "'%s' is not an issuing CA (it is a firmware key)", issuer);
    ENSURE(!ca_is_ocsp_signer_label(issuer) && strcmp(rec.status, "rollover") != 0, KL_EUSAGE,
           "'%s' is not an issuing CA (it is %s)", issuer,
           ca_is_ocsp_signer_label(issuer) ? "an OCSP signer" : "a rollover certificate");
    TRY(ca_entry_get(ca, issuer, 1, e));
    /* nextUpdate: the CA template's crl-validity (a root's CRL lasts between ceremonies), or
     * [ca] crl-days */
    const tpl *t = NULL;
    long days = ca->crl_days;
    if (rec.template_name && ca_tpl_get(ca, rec.template_name, &t) == KL_OK && t->crl_days > 0) {
        days = t->crl_days;
    }
    *span = days * 86400;
out:
    store_ca_free(&rec);
    return rc;
}

/* Which CRL: the CA's full one (part -1, name the label) or partition `part`'s ("L/K", with
 * the issuingDistributionPoint idp). */
typedef struct {
    const char *issuer, *name;
    int64_t part;
    char idp[1024];
} crl_scope;

/* One attempt with the number after the last taken and the entries in f: KL_EEXIST with *why
 * when the store refuses it as not the newest (store_crl_commit). */
static kl_rc crl_once(ca_ctx *ca, const crl_scope *sc, const ca_entry *e, time_t now, time_t until,
                      const crl_fill *f, ca_crl_result *out, store_crl_why *why)
{
    const crl_buf *entries = &f->entries;
    const char *issuer = sc->issuer;
    kl_rc rc = KL_OK;
    uint8_t *ext = NULL, *alg = NULL, *name = NULL, *sig = NULL;
    size_t ext_len = 0, alg_len = 0, sig_len = 0;
    int64_t number = 0;
    const EVP_MD *md = ca_sign_md(e->key);
    TRY(store_crl_number_peek(ca->st, issuer, &number));
    TRY(crl_extensions(e, number, sc->part < 0 ? NULL : sc->idp, &ext, &ext_len));
    TRY(crl_sig_alg(e->key, md, &alg, &alg_len));
    int name_len = i2d_X509_NAME(X509_get_subject_name(e->cert), &name);
    ENSURE_SSL(name_len > 0, KL_EINTERNAL, "cannot encode the issuer name");
    /* TBSCertList: version v2, signature, issuer, thisUpdate, nextUpdate,
     * revokedCertificates (absent when empty: RFC 5280 5.1.2.6), crlExtensions */
    uint8_t head[64], times[34], rev_hdr[6], tbs_hdr[6];
    static const uint8_t version[] = {0x02, 0x01, 0x01};
    size_t tl = crl_time(now, times);
    tl += crl_time(until, times + tl);
    size_t rh = entries->len ? crl_hdr(0x30, entries->len, rev_hdr) : 0;
    size_t body = sizeof version + alg_len + (size_t)name_len + tl + rh + entries->len + ext_len;
    size_t th = crl_hdr(0x30, body, tbs_hdr);
    size_t hn = 0;
    memcpy(head, tbs_hdr, th);
    hn += th;
    memcpy(head + hn, version, sizeof version);
    hn += sizeof version;
    crl_buf parts[] = {{head, hn, 0, 0},    {alg, alg_len, 0, 0}, {name, (size_t)name_len, 0, 0},
                       {times, tl, 0, 0},   {rev_hdr, rh, 0, 0},  {entries->p, entries->len, 0, 0},
                       {ext, ext_len, 0, 0}};
    TRY(crl_sign(e, md, parts, sizeof parts / sizeof parts[0], &sig, &sig_len));
    /* CertificateList: SEQUENCE { tbsCertList, signatureAlgorithm, BIT STRING signature } */
    uint8_t bit_hdr[7], all_hdr[6];
    size_t bh = crl_hdr(V_ASN1_BIT_STRING, sig_len + 1, bit_hdr);
    bit_hdr[bh++] = 0; /* no unused bits */
    size_t total_body = th + body + alg_len + bh + sig_len;
    size_t ah = crl_hdr(0x30, total_body, all_hdr);
    crl_buf der = {.cap = (size_t)STORE_CRL_MAX};
    int bad = crl_buf_put(&der, all_hdr, ah);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0] && !bad; i++) {
        bad = crl_buf_put(&der, parts[i].p, parts[i].len);
    }
    bad = bad || crl_buf_put(&der, alg, alg_len) || crl_buf_put(&der, bit_hdr, bh) ||
          crl_buf_put(&der, sig, sig_len);
    if (bad) {
        free(der.p);
        ENSURE(0, KL_EINPUT, "the CRL would exceed %zu bytes (the store's limit)",
               (size_t)STORE_CRL_MAX);
    }
    store_crl rec = {.issuer = (char *)issuer,
                     .number = number,
                     .this_update = now,
                     .next_update = until,
                     .der = der.p,
                     .der_len = der.len,
                     .name = sc->part < 0 ? NULL : sc->name,
                     .epoch = f->epoch};
    char detail[200];
    snprintf(detail, sizeof detail, "issuer=%s crl-number=%lld entries=%zu%s%.24s", issuer,
             (long long)number, f->count,
             sc->part < 0 ? "" : " partition=", sc->part < 0 ? "" : strchr(sc->name, '/') + 1);
    rc = store_crl_commit(ca->st, &rec, "ca", detail, why);
    if (rc != KL_OK) {
        free(der.p);
        goto out;
    }
    out->der = der.p;
    out->len = der.len;
    out->number = number;
out:
    OPENSSL_free(ext);
    OPENSSL_free(alg);
    OPENSSL_free(name);
    OPENSSL_free(sig);
    return rc;
}

/* How often a CRL is signed again when the store refuses it as not the newest (ca_crl_der). */
#define CRL_ATTEMPTS 8

/* The issuer's revocation epoch, then its revoked entries (or its partition's) into f. */
static kl_rc crl_read(ca_ctx *ca, const crl_scope *sc, crl_fill *f)
{
    kl_rc rc = KL_OK;
    f->entries.len = 0;
    f->count = 0;
    f->rc = KL_OK;
    TRY(store_revocation_epoch(ca->st, sc->issuer, &f->epoch));
    TRY(sc->part < 0 ? store_revoked_stream(ca->st, sc->issuer, crl_entry, f)
                     : store_revoked_stream_part(ca->st, sc->issuer, sc->part, crl_entry, f));
out:
    return rc;
}

/* Sleep until time() is past `published`, for at most 2 s (a clock set back further is not
 * waited for: the store refuses again). time() is what thisUpdate is made of; it may lag
 * CLOCK_REALTIME by a clock tick at a second's turn, so it is asked again after each sleep. */
static void crl_next_second(time_t published)
{
    struct timespec t0, ts;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (time(NULL) <= published) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ts.tv_sec - t0.tv_sec >= 2) {
            return;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_sec <= published ? 1000000000L - ts.tv_nsec : 0;
        struct timespec d = {0, ns > 5000000L ? ns : 5000000L};
        nanosleep(&d, NULL);
    }
}

/* The published CRL `name`, numbered `number`, into *out in place of one with the same entries
 * the store refused for its second (STORE_CRL_SAME_CONTENT); KL_EEXIST when a newer one was
 * published since. */
static kl_rc crl_published(ca_ctx *ca, const char *name, int64_t number, ca_crl_result *out)
{
    kl_rc rc = KL_OK;
    store_crl c;
    memset(&c, 0, sizeof c);
    TRY(store_crl_get(ca->st, name, &c));
    ENSURE(c.number == number, KL_EEXIST, "CRL of %s: number %lld published meanwhile", name,
           (long long)c.number);
    out->der = c.der;
    out->len = c.der_len;
    out->number = c.number;
    out->this_update = c.this_update;
    out->next_update = c.next_update;
    out->reused = 1;
    c.der = NULL;
out:
    store_crl_free(&c);
    return rc;
}

/* ca_crl_der; `reuse`: the published CRL of this second with the same entries may be the
 * result */
static kl_rc crl_der(ca_ctx *ca, const char *issuer, time_t next_update, int reuse,
                     ca_crl_result *out)
{
    kl_rc rc = KL_OK;
    const ca_entry *e = NULL;
    long span = 0;
    crl_fill f = {.entries = {.cap = (size_t)STORE_CRL_MAX - 4096}, .rc = KL_OK};
    char label[CA_LABEL_MAX + 1];
    crl_scope sc = {.issuer = label, .name = issuer};
    memset(out, 0, sizeof *out);
    TRY(ca_crlpart_name_parse(issuer, label, sizeof label, &sc.part));
    TRY(crl_issuer(ca, label, &e, &span));
    if (sc.part >= 0) {
        /* only the partitions the CA has: a name from the network signs nothing else */
        int64_t last = -1;
        TRY(store_crlpart_last(ca->st, label, &last));
        ENSURE(sc.part <= last, KL_ENOTFOUND, "CA %s has no CRL partition %lld", label,
               (long long)sc.part);
        TRY(ca_crlpart_dp_url(ca, label, sc.part, sc.idp, sizeof sc.idp));
    }
    /* signed again when the store refused it: with the next number when another CRL took
     * ours, with the entries read again when a revocation came in meanwhile, a second later
     * when the published CRL has our thisUpdate (store_crl_commit); unless that one was read
     * at our epoch: it lists our entries and is the result (not for a nextUpdate asked for) */
    for (int attempt = 0;; attempt++) {
        store_crl_why why = {STORE_CRL_FRESH, 0, 0};
        time_t now = time(NULL);
        TRY(ca_clock_check(ca, label, now, "signing a CRL"));
        out->this_update = now;
        out->next_update = next_update > now ? next_update : now + span;
        TRY(crl_read(ca, &sc, &f));
        out->entries = f.count;
        rc = crl_once(ca, &sc, e, now, out->next_update, &f, out, &why);
        if (rc == KL_EEXIST && why.clash == STORE_CRL_SAME_CONTENT && reuse && !next_update &&
            crl_published(ca, issuer, why.number, out) == KL_OK) {
            rc = KL_OK;
            break;
        }
        if (rc == KL_EEXIST && why.clash != STORE_CRL_FRESH && attempt + 1 >= CRL_ATTEMPTS) {
            rc = kl_wrap(rc,
                         "not published after %d attempts (the revocations are kept: run it "
                         "again)",
                         CRL_ATTEMPTS);
        }
        if (rc != KL_EEXIST || why.clash == STORE_CRL_FRESH || attempt + 1 >= CRL_ATTEMPTS) {
            break;
        }
        if (why.clash == STORE_CRL_SAME_SECOND || why.clash == STORE_CRL_SAME_CONTENT) {
            crl_next_second(why.published);
        }
    }
    TRY(rc);
    /* every CRL signed (or reused) also signs the audit head (docs/internals/store.md
     * "Checkpoints") */
    char why[200];
    snprintf(why, sizeof why, "CRL %lld of %s", (long long)out->number, issuer);
    ca_audit_checkpoint_try(ca, why);
out:
    free(f.entries.p);
    return rc;
}

kl_rc ca_crl_der(ca_ctx *ca, const char *issuer, time_t next_update, ca_crl_result *out)
{
    return crl_der(ca, issuer, next_update, 1, out);
}

kl_rc ca_crl_der_new(ca_ctx *ca, const char *issuer, ca_crl_result *out)
{
    return crl_der(ca, issuer, 0, 0, out);
}

void ca_crl_result_free(ca_crl_result *r)
{
    if (r) {
        free(r->der);
        memset(r, 0, sizeof *r);
    }
}
