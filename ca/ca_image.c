/* keyline: firmware signing (ca_image.h): the key checks, the MCUboot or CMS signature in the
 * token, the record in the store before the signed image is put in place. */
#include "ca_image.h"

#include <errno.h>
#include <openssl/cms.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ca_internal.h"
#include "kl_file.h"

int ca_is_firmware_template(const char *template_name)
{
    return template_name && strcmp(template_name, CA_TEMPLATE_FIRMWARE) == 0;
}

int ca_is_firmware_key(ca_ctx *ca, const char *label)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    int yes =
        store_ca_get(ca->st, label, &rec) == KL_OK && ca_is_firmware_template(rec.template_name);
    store_ca_free(&rec);
    return yes;
}

void ca_image_sha256_hex(const uint8_t *p, size_t n, char out[65])
{
    uint8_t md[32];
    SHA256(p, n, md);
    for (size_t i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

kl_rc ca_image_in_check(const char *path, const uint8_t *p, size_t n, const char *want,
                        char hex[65])
{
    ca_image_sha256_hex(p, n, hex);
    if (!want) {
        return KL_OK;
    }
    if (strlen(want) != 64 || strspn(want, "0123456789abcdefABCDEF") != 64) {
        return kl_fail(KL_EUSAGE, "--in-sha256 '%s' is not 64 hexadecimal digits", want);
    }
    if (strcasecmp(want, hex) != 0) {
        return kl_fail(KL_EPOLICY, "--in %s has SHA-256 %s, not the --in-sha256 given (%s)", path,
                       hex, want);
    }
    return KL_OK;
}

/* A decimal number without leading zeros, or 0x and hexadecimal digits, in [0, max], as
 * imgtool takes these options (Python's int(s, 0)): no sign, no blanks, and no octal, which
 * strtoull's base 0 would read "010" as (8: a security counter lower than the one written). */
static kl_rc ca_image_num(const char *opt, const char *s, unsigned long long max, uint32_t *out)
{
    int hex = s && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    const char *digits = s ? s + (hex ? 2 : 0) : "";
    size_t n = strspn(digits, hex ? "0123456789abcdefABCDEF" : "0123456789");
    int ok = n > 0 && digits[n] == 0 && (hex || n == 1 || digits[0] != '0');
    errno = 0;
    unsigned long long v = ok ? strtoull(digits, NULL, hex ? 16 : 10) : 0;
    if (!ok || errno || v > max) {
        return kl_fail(KL_EUSAGE,
                       "%s '%s' is not a number in 0..%llu (decimal without leading "
                       "zeros, or 0x and hexadecimal digits)",
                       opt, s ? s : "", max);
    }
    *out = (uint32_t)v;
    return KL_OK;
}

kl_rc ca_image_req_parse(ca_image_req *req, const char *version, const char *counter,
                         const char *header_size, const char *align, int pad_header,
                         const char *format)
{
    kl_rc rc = KL_OK;
    img_params *p = &req->mcuboot;
    p->header_size = IMG_HEADER_SIZE;
    p->align = 1;
    p->pad_header = pad_header;
    p->has_counter = counter != NULL;
    format = format ? format : "mcuboot";
    ENSURE(strcmp(format, "mcuboot") == 0 || strcmp(format, "cms") == 0, KL_EUSAGE,
           "--format is mcuboot or cms, not '%s'", format);
    req->format = strcmp(format, "cms") == 0 ? CA_IMAGE_CMS : CA_IMAGE_MCUBOOT;
    /* ignored, they would suggest a header or trailer the CMS does not have */
    const char *mcuboot_only = pad_header    ? "--pad-header"
                               : header_size ? "--header-size"
                               : align       ? "--align"
                                             : NULL;
    ENSURE(req->format == CA_IMAGE_MCUBOOT || !mcuboot_only, KL_EUSAGE,
           "%s applies to --format mcuboot only (a detached CMS signature has no MCUboot header "
           "or trailer)",
           mcuboot_only);
    if (counter) {
        TRY(ca_image_num("--security-counter", counter, 0xffffffffULL, &p->counter));
    }
    if (header_size) {
        TRY(ca_image_num("--header-size", header_size, 0xffffffffULL, &p->header_size));
    }
    if (align) {
        TRY(ca_image_num("--align", align, 0xffffffffULL, &p->align));
    }
    TRY(img_version_parse(version, &p->version));
    TRY(img_params_check(p)); /* also for cms: the counter given is a valid one */
out:
    return rc;
}

/* The subject of firmware key `label` (NULL when there is no such firmware key). */
static X509_NAME *ca_image_key_subject(ca_ctx *ca, const char *label)
{
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    X509_NAME *name = NULL;
    if (store_ca_get(ca->st, label, &rec) == KL_OK && ca_is_firmware_template(rec.template_name)) {
        X509 *x = ca_der_to_x509(rec.der, rec.der_len);
        name = x ? X509_NAME_dup(X509_get_subject_name(x)) : NULL;
        X509_free(x);
    }
    store_ca_free(&rec);
    return name;
}

int ca_image_release_key(ca_ctx *ca, const kl_conf *conf, const char *label)
{
    const char *v = conf ? kl_conf_get(conf, "ceremony", "release-keys") : NULL;
    size_t n = label ? strlen(label) : 0;
    X509_NAME *mine = NULL; /* read at the first listed label that is not `label` */
    int yes = 0;
    for (const char *p = v; p && *p && n && !yes;) {
        p += strspn(p, " ,\t");
        size_t k = strcspn(p, " ,\t");
        yes = (k == n && strncmp(p, label, n) == 0) || (k == 1 && *p == '*');
        if (!yes && k > 0 && k <= CA_LABEL_MAX) {
            char listed[CA_LABEL_MAX + 1];
            snprintf(listed, sizeof listed, "%.*s", (int)k, p);
            mine = mine ? mine : ca_image_key_subject(ca, label);
            X509_NAME *theirs = mine ? ca_image_key_subject(ca, listed) : NULL;
            yes = theirs && X509_NAME_cmp(theirs, mine) == 0;
            X509_NAME_free(theirs);
        }
        p += k;
    }
    X509_NAME_free(mine);
    return yes;
}

/* The firmware key `label`: a firmware record, active, its chain usable now; *e with the key. */
static kl_rc ca_image_key(ca_ctx *ca, const char *label, const ca_entry **e)
{
    kl_rc rc = KL_OK;
    store_ca rec;
    memset(&rec, 0, sizeof rec);
    ENSURE(ca->hsm, KL_EUSAGE, "signing an image needs the token");
    rc = store_ca_get(ca->st, label, &rec);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_ENOTFOUND, "no firmware key labelled '%s' (see keyline-ca ca list)", label);
    }
    TRY(rc);
    ENSURE(ca_is_firmware_template(rec.template_name), KL_EPOLICY,
           "'%s' is not a firmware key (template %s, not " CA_TEMPLATE_FIRMWARE ")", label,
           rec.template_name);
    ENSURE(rec.status && strcmp(rec.status, "active") == 0, KL_EPOLICY,
           "firmware key '%s' is %s: it signs nothing more", label, rec.status);
    rc = ca_issuer_check(ca, label, time(NULL));
    if (rc == KL_EPOLICY) {
        /* "CA 'fw1' cannot issue: its certificate .. is revoked": said of a signing key */
        char why[512];
        snprintf(why, sizeof why, "%s", kl_errmsg());
        const char *p = strstr(why, "cannot issue: ");
        rc = kl_fail(rc, "firmware key '%s' cannot sign: %s", label, p ? p + 14 : why);
    }
    TRY(rc);
    TRY(ca_entry_get(ca, label, 1, e));
out:
    store_ca_free(&rec);
    return rc;
}

/* Detached CMS SignedData (DER) over in: signing certificate and the CAs above it but the root
 * included, so `openssl cms -verify -CAfile root.pem` needs only the root. */
static kl_rc ca_image_cms(ca_ctx *ca, const ca_entry *e, const uint8_t *in, size_t in_len,
                          uint8_t **out, size_t *out_len)
{
    kl_rc rc = KL_OK;
    STACK_OF(X509) *chain = NULL, *extra = sk_X509_new_null();
    BIO *data = BIO_new_mem_buf(in, (int)in_len);
    CMS_ContentInfo *cms = NULL;
    unsigned char *der = NULL;
    ENSURE(extra && data && in_len <= IMG_PAYLOAD_MAX, KL_EINTERNAL, "out of memory");
    TRY(ca_chain(ca, e->label, &chain));
    for (int i = 1; i + 1 < sk_X509_num(chain); i++) { /* not the key's own, not the root */
        ENSURE(sk_X509_push(extra, sk_X509_value(chain, i)) > 0, KL_EINTERNAL, "out of memory");
    }
    cms = CMS_sign(e->cert, e->key, extra, data, CMS_DETACHED | CMS_BINARY);
    ENSURE_SSL(cms, KL_EHSM, "signing the CMS in the HSM failed");
    int n = i2d_CMS_ContentInfo(cms, &der);
    ENSURE_SSL(n > 0, KL_EINTERNAL, "cannot encode the CMS");
    /* check what the token signed before anything is recorded */
    BIO *again = BIO_new_mem_buf(in, (int)in_len);
    X509_STORE *none = X509_STORE_new();
    int ok = again && none &&
             CMS_verify(cms, NULL, none, again, NULL, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) == 1;
    BIO_free(again);
    X509_STORE_free(none);
    ENSURE_SSL(ok, KL_EHSM, "the HSM's CMS signature does not verify");
    *out = der;
    *out_len = (size_t)n;
    der = NULL;
out:
    OPENSSL_free(der);
    CMS_ContentInfo_free(cms);
    BIO_free(data);
    sk_X509_free(extra); /* borrowed from chain */
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

static void ca_hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

/* The store record of a signing: a row of the images table and its audit entry "sign-image",
 * one transaction (store_image_put). */
static kl_rc ca_image_record(ca_ctx *ca, const ca_image_req *req, const ca_image_result *res)
{
    char hash[65], khash[65], ver[32], cnt[16], detail[400];
    const char *actor = req->actor ? req->actor : "keyline";
    const char *format = req->format == CA_IMAGE_CMS ? "cms" : "mcuboot";
    ca_hex(res->hash, 32, hash);
    ca_hex(res->key_hash, 32, khash);
    img_version_format(&req->mcuboot.version, ver, sizeof ver);
    if (req->mcuboot.has_counter) {
        snprintf(cnt, sizeof cnt, "%lu", (unsigned long)req->mcuboot.counter);
    } else {
        snprintf(cnt, sizeof cnt, "-");
    }
    snprintf(detail, sizeof detail,
             "key=%s cert=%s format=%s version=%s counter=%s sha256=%s keyhash=%s size=%zu",
             req->key_label, res->key_serial, format, ver, cnt, hash, khash, req->in_len);
    store_image rec = {
        .sha256 = hash,
        .format = (char *)format,
        .version = ver,
        .security_counter = req->mcuboot.has_counter ? (int64_t)req->mcuboot.counter : -1,
        .key_label = (char *)req->key_label,
        .key_serial = (char *)res->key_serial,
        .key_hash = khash,
        .size = (int64_t)req->in_len,
        .actor = (char *)actor,
    };
    return store_image_put(ca->st, &rec, detail);
}

/* After the record, the image did not reach `out` (rc): the same rc, its message saying that the
 * signing is recorded all the same (res's hash) and nothing was released. */
static kl_rc ca_image_unwritten(kl_rc rc, const char *out, const ca_image_result *res)
{
    char hash[65];
    ca_hex(res->hash, 32, hash);
    return kl_fail(rc,
                   "%s; the signing is recorded (keyline-ca list --images: sha256 %s) but the "
                   "image was not written to %s",
                   kl_errmsg(), hash, out);
}

kl_rc ca_image_sign(ca_ctx *ca, const ca_image_req *req, const char *out_path, ca_image_result *res)
{
    kl_rc rc = KL_OK;
    const ca_entry *e = NULL;
    uint8_t *signed_bytes = NULL;
    size_t signed_len = 0;
    kl_file_staged staged;
    memset(&staged, 0, sizeof staged);
    memset(res, 0, sizeof *res);
    ENSURE(req->key_label && req->in && out_path, KL_EUSAGE,
           "sign-image needs a key, an input and an output");
    TRY(ca_image_key(ca, req->key_label, &e));
    char *serial = ca_serial_hex(X509_get0_serialNumber(e->cert));
    ENSURE(serial, KL_EINTERNAL, "out of memory");
    snprintf(res->key_serial, sizeof res->key_serial, "%s", serial);
    OPENSSL_free(serial);
    TRY(img_key_hash(X509_get0_pubkey(e->cert), res->key_hash));
    if (req->format == CA_IMAGE_CMS) {
        TRY(ca_image_cms(ca, e, req->in, req->in_len, &signed_bytes, &signed_len));
        SHA256(req->in, req->in_len, res->hash);
    } else {
        img_result ir;
        TRY(img_mcuboot_sign(&req->mcuboot, req->in, req->in_len, e->key, X509_get0_pubkey(e->cert),
                             &signed_bytes, &signed_len, &ir));
        memcpy(res->hash, ir.hash, 32);
    }
    /* written and fsynced but not yet at out_path; then recorded; only then released */
    rc = kl_file_stage(&staged, out_path, signed_bytes, signed_len, 0644);
    if (rc != KL_OK) {
        rc = kl_fail(rc, "%s; nothing was recorded or written", kl_errmsg());
        goto out;
    }
    TRY(ca_image_record(ca, req, res)); /* out: the temporary file removed */
    rc = kl_file_stage_commit(&staged);
    if (rc != KL_OK && !staged.placed) {
        rc = ca_image_unwritten(rc, out_path, res);
    }
out:
    kl_file_stage_abort(&staged);
    OPENSSL_free(signed_bytes);
    return rc;
}
