/* keyline: the operations that need the quorum, and how a ceremony runs each (ceremony.h).
 * A row per guarded command: its words, its options (as the plain command names them, with
 * the plain command's defaults) and a run function calling the same library function. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca.h"
#include "ca_image.h"
#include "ca_image_ceremony.h"
#include "ca_backend.h"
#include "ceremony.h"
#include "ceremony_internal.h"
#include "kl_b64.h"
#include "kl_file.h"
#include "order.h"

/* label, serial and the fingerprints of `cert` and its key into `res`. */
static kl_rc ceremony_res_cert(ceremony_kvs *res, const char *label, X509 *cert)
{
    kl_rc rc = KL_OK;
    char sha[65];
    char *serial = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(serial, KL_EINTERNAL, "out of memory");
    TRY(ceremony_kvs_set(res, "label", label));
    TRY(ceremony_kvs_set(res, "serial", serial));
    TRY(ceremony_cert_sha256(cert, sha));
    TRY(ceremony_kvs_set(res, "cert-sha256", sha));
    TRY(ceremony_key_sha256(X509_get0_pubkey(cert), sha));
    TRY(ceremony_kvs_set(res, "key-sha256", sha));
out:
    OPENSSL_free(serial);
    return rc;
}

/* `crl`'s number into `res` as `key`. */
static kl_rc ceremony_res_crl_number(ceremony_kvs *res, const char *key, const X509_CRL *crl)
{
    char num[32];
    ASN1_INTEGER *n = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    snprintf(num, sizeof num, "%lld", n ? (long long)ASN1_INTEGER_get(n) : -1LL);
    ASN1_INTEGER_free(n);
    return ceremony_kvs_set(res, key, num);
}

/* The new CA's first CRL, as the plain command publishes it; its number into `res`. */
static kl_rc ceremony_res_crl(ca_ctx *ca, ceremony_kvs *res, const char *label)
{
    kl_rc rc = KL_OK;
    X509_CRL *crl = NULL;
    if (ca_is_ocsp_signer_label(label) || ca_is_firmware_key(ca, label)) {
        return KL_OK; /* a delegated OCSP signer or a firmware key issues no CRL */
    }
    TRY(ca_crl(ca, label, &crl));
    TRY(ceremony_res_crl_number(res, "crl-number", crl));
out:
    X509_CRL_free(crl);
    return rc;
}

static kl_rc ceremony_key_type(const ceremony_req *r, hsm_key_type *kt)
{
    const char *name = ceremony_req_get(r, "key-type");
    int t = hsm_key_type_from_name(name ? name : "ec-p256");
    if (t < 0) {
        return kl_fail(KL_EUSAGE, "unknown key type '%s' (ec-p256, ec-p384, rsa-3072)", name);
    }
    *kt = (hsm_key_type)t;
    return KL_OK;
}

/* ca create --csr-out FILE: the key and a PEM request for a parent outside keyline, written to
 * the path the officers approved (keyline-ca ceremony run checked it is none of the store's
 * files); `ca import` installs the certificate later. */
static kl_rc ceremony_run_ca_csr(ca_ctx *ca, const ca_create_req *rq, const char *path,
                                 ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    uint8_t *der = NULL;
    size_t len = 0;
    X509_REQ *x = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *pem = NULL, sha[65];
    ENSURE(b, KL_EINTERNAL, "out of memory");
    TRY(ca_create_csr(ca, rq, &der, &len));
    const unsigned char *p = der;
    ENSURE_SSL((x = d2i_X509_REQ(NULL, &p, (long)len)) && PEM_write_bio_X509_REQ(b, x),
               KL_EINTERNAL, "cannot encode the request");
    long n = BIO_get_mem_data(b, &pem);
    TRY(kl_file_write_atomic(path, pem, (size_t)n, 0644));
    TRY(ceremony_kvs_set(res, "label", rq->label));
    TRY(ceremony_key_sha256(X509_REQ_get0_pubkey(x), sha));
    TRY(ceremony_kvs_set(res, "key-sha256", sha));
    uint8_t md[32];
    SHA256(der, len, md);
    for (size_t i = 0; i < sizeof md; i++) {
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    }
    TRY(ceremony_kvs_set(res, "csr-sha256", sha));
out:
    X509_REQ_free(x);
    BIO_free(b);
    OPENSSL_free(der);
    return rc;
}

/* --csr-out as an absolute path: the officers approve where it goes, whoever runs it where. */
static kl_rc ceremony_prep_ca_create(ceremony_kvs *params)
{
    const char *out = ceremony_kvs_get(params, "csr-out");
    char cwd[4096], abs[4096 + CEREMONY_VALUE_MAX + 2];
    if (!out || out[0] == '/') {
        return KL_OK;
    }
    if (!getcwd(cwd, sizeof cwd)) {
        return kl_fail(KL_EIO, "--csr-out %s: no current folder to resolve it against", out);
    }
    snprintf(abs, sizeof abs, "%s/%s", cwd, out);
    return ceremony_kvs_set(params, "csr-out", abs);
}

static kl_rc ceremony_run_ca_create(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    ca_create_req rq = {.label = ceremony_req_get(r, "label"),
                        .template_name = ceremony_req_get(r, "template"),
                        .subject = ceremony_req_get(r, "subject"),
                        .issuer = ceremony_req_get(r, "issuer"),
                        .token = ceremony_req_get(r, "token"),
                        .actor = actor};
    TRY(ceremony_key_type(r, &rq.key_type));
    if (ceremony_req_get(r, "csr-out")) {
        return ceremony_run_ca_csr(ca, &rq, ceremony_req_get(r, "csr-out"), res);
    }
    TRY(ca_create_run(ca, &rq, &cert));
    TRY(ceremony_res_cert(res, rq.label, cert));
    TRY(ceremony_res_crl(ca, res, rq.label));
out:
    X509_free(cert);
    return rc;
}

static kl_rc ceremony_run_ca_rotate(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    const char *label = ceremony_req_get(r, "new-label");
    ca_rotate_req rq = {.label = ceremony_req_get(r, "label"),
                        .new_label = label,
                        .issuer = ceremony_req_get(r, "issuer"),
                        .token = ceremony_req_get(r, "token"),
                        .actor = actor};
    TRY(ceremony_key_type(r, &rq.key_type));
    TRY(ca_rotate(ca, &rq, &cert));
    TRY(ceremony_res_cert(res, label, cert));
    TRY(ceremony_res_crl(ca, res, label));
out:
    X509_free(cert);
    return rc;
}

/* The retired CA's certificate (what is no longer signed with) and its final CRL's number. */
static kl_rc ceremony_run_ca_retire(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    X509 *cert = NULL;
    X509_CRL *crl = NULL;
    const char *label = ceremony_req_get(r, "label");
    ca_retire_req rq = {.label = label, .actor = actor};
    TRY(ca_cert(ca, label, &cert));
    TRY(ca_retire(ca, &rq, &crl));
    TRY(ceremony_res_cert(res, label, cert));
    if (crl) { /* NULL: an earlier run published it */
        TRY(ceremony_res_crl_number(res, "final-crl-number", crl));
    }
out:
    X509_CRL_free(crl);
    X509_free(cert);
    return rc;
}

/* ---- a new key for a delegated OCSP signer ---- */

/* ocsp-signer new --replace: "yes" or "no" in a request (the plain command's flag). */
static kl_rc ceremony_prep_ocsp_signer(ceremony_kvs *params)
{
    const char *v = ceremony_kvs_get(params, "replace");
    return v && (strcmp(v, "yes") == 0 || strcmp(v, "no") == 0)
               ? KL_OK
               : kl_fail(KL_EUSAGE, "ocsp-signer new ceremony: --replace is yes or no");
}

static kl_rc ceremony_run_ocsp_signer(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                      ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    char label[128];
    X509_CRL *crl = NULL;
    ca_ocsp_signer_made made;
    const char *issuer = ceremony_req_get(r, "issuer"), *v = ceremony_req_get(r, "replace");
    memset(&made, 0, sizeof made);
    ENSURE(v && (strcmp(v, "yes") == 0 || strcmp(v, "no") == 0), KL_EUSAGE,
           "ocsp-signer new ceremony: --replace is yes or no");
    TRY(ca_ocsp_signer_new(ca, issuer, strcmp(v, "yes") == 0, actor, &made));
    snprintf(label, sizeof label, "%s" CA_OCSP_SUFFIX, issuer);
    TRY(ceremony_res_cert(res, label, made.cert));
    TRY(ceremony_kvs_set(res, "old-serial", made.old_serial[0] ? made.old_serial : "-"));
    if (made.superseded) { /* the replaced signer's revocation published, as the plain command */
        TRY(ca_crl(ca, issuer, &crl));
        TRY(ceremony_res_crl_number(res, "crl-number", crl));
    }
out:
    X509_CRL_free(crl);
    X509_free(made.cert);
    return rc;
}

/* ---- revoking a CA certificate ---- */

struct ceremony_revoke_guard {
    long quorum;
    ca_ctx *ca;
    char **cas; /* the store's serials of the CA records' CA certificates, sorted */
    size_t ncas;
    char tpl[128]; /* the template judged last, and whether it is a CA's */
    int tpl_ca;
};

static int ceremony_str_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The serial (canonical, as the store has it) of a CA record's certificate when it is a CA
 * certificate (basicConstraints cA: not an OCSP or firmware signer's), else NULL. */
static char *ceremony_ca_serial(const store_ca *v)
{
    const unsigned char *p = v->der;
    X509 *x = d2i_X509(NULL, &p, (long)v->der_len);
    char *hex = x && (X509_get_extension_flags(x) & EXFLAG_CA)
                    ? ca_serial_hex(X509_get0_serialNumber(x))
                    : NULL;
    char norm[64], *out = NULL;
    if (hex && store_serial_normalize(hex, norm, sizeof norm) == KL_OK) {
        out = strdup(norm);
    }
    OPENSSL_free(hex);
    X509_free(x);
    return out;
}

/* g->cas: every CA record's CA certificate (CAs, retired ones, rollover certificates). */
static kl_rc ceremony_ca_serials(ceremony_revoke_guard *g)
{
    kl_rc rc = KL_OK;
    store_ca *v = NULL;
    size_t nv = 0;
    TRY(store_ca_list(ca_store(g->ca), &v, &nv));
    g->cas = calloc(nv ? nv : 1, sizeof *g->cas);
    ENSURE(g->cas, KL_EINTERNAL, "out of memory");
    for (size_t i = 0; i < nv; i++) {
        char *serial = ceremony_ca_serial(&v[i]);
        if (serial) {
            g->cas[g->ncas++] = serial;
        }
    }
    qsort(g->cas, g->ncas, sizeof *g->cas, ceremony_str_cmp);
out:
    store_ca_list_free(v, nv);
    return rc;
}

kl_rc ceremony_revoke_guard_new(const kl_conf *conf, ca_ctx *ca, ceremony_revoke_guard **out)
{
    kl_rc rc = KL_OK;
    long q = 0;
    ceremony_revoke_guard *g = NULL;
    *out = NULL;
    TRY(ceremony_quorum(conf, &q));
    if (q == 0) {
        goto out;
    }
    g = calloc(1, sizeof *g);
    ENSURE(g, KL_EINTERNAL, "out of memory");
    g->quorum = q;
    g->ca = ca;
    TRY(ceremony_ca_serials(g));
    *out = g;
    g = NULL;
out:
    ceremony_revoke_guard_free(g);
    return rc;
}

/* Whether template `name` makes CA certificates (an unknown template: not by its name; a CA
 * record's certificate is still known by its serial). The last answer is kept: a batch's
 * certificates share a template or two. */
static int ceremony_tpl_is_ca(ceremony_revoke_guard *g, const char *name)
{
    if (!name || strlen(name) >= sizeof g->tpl) {
        return 0;
    }
    if (strcmp(g->tpl, name) != 0) {
        ca_tpl_info info;
        g->tpl_ca = ca_template_info(g->ca, name, &info) == KL_OK && info.is_ca;
        snprintf(g->tpl, sizeof g->tpl, "%s", name);
    }
    return g->tpl_ca;
}

kl_rc ceremony_revoke_guard_check(void *arg, const char *serial, const char *issuer,
                                  const char *template_name)
{
    ceremony_revoke_guard *g = arg;
    int ca_cert = ceremony_tpl_is_ca(g, template_name) ||
                  (g->ncas && bsearch(&serial, g->cas, g->ncas, sizeof *g->cas, ceremony_str_cmp));
    if (!ca_cert) {
        return KL_OK;
    }
    return kl_fail(KL_EPOLICY,
                   "%s (issued by %s) is a CA certificate: revoking a CA needs a ceremony "
                   "([ceremony] quorum = %ld): keyline-ca ceremony propose ca revoke-ca --label L "
                   "--reason R; nothing was revoked",
                   serial, issuer, g->quorum);
}

void ceremony_revoke_guard_free(ceremony_revoke_guard *g)
{
    if (!g) {
        return;
    }
    for (size_t k = 0; k < g->ncas; k++) {
        free(g->cas[k]);
    }
    free(g->cas);
    free(g);
}

/* Revoke CA `label`'s certificate (never a root: a root is retired) and publish its parent's
 * CRL. The transcript names the certificate, the reason and that CRL's number. */
static kl_rc ceremony_run_ca_revoke(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                    ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    store_ca rec;
    X509 *cert = NULL;
    X509_CRL *crl = NULL;
    char *serial = NULL;
    const char *label = ceremony_req_get(r, "label"), *why = ceremony_req_get(r, "reason");
    int reason = ca_reason_from_name(why);
    memset(&rec, 0, sizeof rec);
    ENSURE(reason >= 0 && reason != 8, KL_EUSAGE, "unknown revocation reason '%s'", why);
    TRY(store_ca_get(ca_store(ca), label, &rec));
    ENSURE(rec.parent, KL_EPOLICY,
           "CA '%s' is a root: retire it (ca retire), a root's own "
           "certificate is not revoked",
           label);
    TRY(ca_cert(ca, label, &cert));
    serial = ca_serial_hex(X509_get0_serialNumber(cert));
    ENSURE(serial, KL_EINTERNAL, "out of memory");
    TRY(ca_revoke(ca, serial, reason, actor));
    TRY(ceremony_res_cert(res, label, cert));
    TRY(ceremony_kvs_set(res, "reason", ca_reason_name(reason)));
    TRY(ca_crl(ca, rec.parent, &crl));
    TRY(ceremony_res_crl_number(res, "parent-crl-number", crl));
out:
    OPENSSL_free(serial);
    X509_CRL_free(crl);
    X509_free(cert);
    store_ca_free(&rec);
    return rc;
}

/* ---- production orders (ca/order.h) ---- */

static kl_rc ceremony_run_order_create(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                       ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    store_order o;
    char num[32], when[32];
    const char *count = ceremony_req_get(r, "count");
    order_req rq = {.model = ceremony_req_get(r, "model"),
                    .station = ceremony_req_get(r, "station"),
                    .profile = ceremony_req_get(r, "profile")};
    memset(&o, 0, sizeof o);
    TRY(order_count_parse(count, &rq.count));
    TRY(order_time_parse(ceremony_req_get(r, "expires"), &rq.expires));
    TRY(ca_order_create(ca, &rq, actor, &o));
    TRY(ceremony_kvs_set(res, "order", o.id));
    TRY(ceremony_kvs_set(res, "model", o.model));
    snprintf(num, sizeof num, "%lld", (long long)o.count);
    TRY(ceremony_kvs_set(res, "count", num));
    TRY(ceremony_kvs_set(res, "station", o.station));
    TRY(ceremony_kvs_set(res, "profile", o.profile));
    ceremony_time_fmt(o.expires, when);
    TRY(ceremony_kvs_set(res, "expires", when));
out:
    store_order_free(&o);
    return rc;
}

/* ---- officers ---- */

static X509 *officer_x509(const uint8_t *data, size_t len)
{
    BIO *b = BIO_new_mem_buf(data, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x) {
        const unsigned char *p = data;
        x = d2i_X509(NULL, &p, (long)len);
        if (x && p != data + len) {
            X509_free(x);
            x = NULL;
        }
    }
    ERR_clear_error();
    return x;
}

kl_rc ceremony_officer_cert(const uint8_t *data, size_t len, const char *what, ceremony_officer *o)
{
    kl_rc rc = KL_OK;
    unsigned char *der = NULL;
    X509 *x = len <= 2 * CEREMONY_CERT_MAX ? officer_x509(data, len) : NULL;
    ENSURE(x, KL_EINPUT, "%s: not a certificate (PEM or DER)", what);
    EVP_PKEY *pub = X509_get0_pubkey(x);
    int id = pub ? EVP_PKEY_get_base_id(pub) : 0, bits = pub ? EVP_PKEY_get_bits(pub) : 0;
    char curve[32] = "";
    if (id == EVP_PKEY_EC && EVP_PKEY_get_group_name(pub, curve, sizeof curve, NULL) != 1) {
        curve[0] = 0; /* explicit parameters of no named curve */
    }
    ERR_clear_error();
    ENSURE((id == EVP_PKEY_EC &&
            (strcmp(curve, "prime256v1") == 0 || strcmp(curve, "secp384r1") == 0)) ||
               (id == EVP_PKEY_RSA && bits >= 2048),
           KL_EPOLICY, "%s: an officer key must be EC P-256, EC P-384 or RSA of 2048 bits or more",
           what);
    int n = i2d_X509(x, &der);
    ENSURE_SSL(n > 0 && n <= CEREMONY_CERT_MAX, KL_EINPUT, "%s: certificate too large", what);
    o->cert = malloc((size_t)n);
    ENSURE(o->cert, KL_EINTERNAL, "out of memory");
    memcpy(o->cert, der, (size_t)n);
    o->cert_len = (size_t)n;
    TRY(ceremony_cert_sha256(x, o->cert_sha256));
    TRY(ceremony_key_sha256(pub, o->key_sha256));
out:
    OPENSSL_free(der);
    X509_free(x);
    return rc;
}

/* officer add --cert FILE: what the officers sign is the certificate itself (base64 DER). */
static kl_rc ceremony_prep_officer_add(ceremony_kvs *params)
{
    kl_rc rc = KL_OK;
    uint8_t *data = NULL;
    size_t len = 0;
    ceremony_officer o;
    kl_buf b;
    const char *cb64;
    memset(&o, 0, sizeof o);
    kl_buf_init(&b, CEREMONY_VALUE_MAX + 1, 0);
    const char *path = ceremony_kvs_get(params, "cert");
    TRY(ceremony_name_check(ceremony_kvs_get(params, "name")));
    TRY(kl_file_read(path, 2 * CEREMONY_CERT_MAX, &data, &len));
    TRY(ceremony_officer_cert(data, len, path, &o));
    rc = kl_b64_encode(o.cert, o.cert_len, 0, 0, &b);
    ENSURE(rc == KL_OK, KL_EINPUT, "%s: certificate too large for a ceremony", path);
    TRY(kl_buf_cstr(&b, &cb64));
    TRY(ceremony_kvs_set(params, "cert", cb64));
out:
    kl_buf_free(&b);
    ceremony_officer_free(&o);
    free(data);
    return rc;
}

static kl_rc ceremony_run_officer_add(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                      ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    ceremony_officer o;
    kl_buf der;
    const char *b64 = ceremony_req_get(r, "cert");
    memset(&o, 0, sizeof o);
    kl_buf_init(&der, CEREMONY_CERT_MAX, 0);
    TRY(ceremony_name_check(ceremony_req_get(r, "name")));
    snprintf(o.name, sizeof o.name, "%s", ceremony_req_get(r, "name"));
    TRY(kl_b64_decode(b64, strlen(b64), &der));
    TRY(ceremony_officer_cert(der.data, der.len, "the request's certificate", &o));
    TRY(ceremony_officer_add(ca_store(ca), &o, 0, actor));
    TRY(ceremony_kvs_set(res, "officer", o.name));
    TRY(ceremony_kvs_set(res, "cert-sha256", o.cert_sha256));
    TRY(ceremony_kvs_set(res, "key-sha256", o.key_sha256));
out:
    kl_buf_free(&der);
    ceremony_officer_free(&o);
    return rc;
}

static kl_rc ceremony_run_officer_remove(ca_ctx *ca, const ceremony_req *r, const char *actor,
                                         ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    const char *name = ceremony_req_get(r, "name");
    TRY(ceremony_officer_remove(ca_store(ca), name, 0, actor));
    TRY(ceremony_kvs_set(res, "officer", name));
out:
    return rc;
}

/* Every row: the plain command's words and options (its defaults made explicit), so that what
 * the officers sign is what the plain command would have done. */
const ceremony_op ceremony_ops[] = {
    {"ca create",
     "generate a CA key in the token and its certificate",
     {{"label", 1, NULL},
      {"template", 1, NULL},
      {"subject", 1, NULL},
      {"key-type", 0, "ec-p256"},
      {"issuer", 0, NULL},
      {"token", 0, NULL},
      {"csr-out", 0, NULL},
      {NULL, 0, NULL}},
     ceremony_run_ca_create,
     ceremony_prep_ca_create,
     0},
    {"ca rotate",
     "new CA key in the token (and rollover certificates for a root)",
     {{"label", 1, NULL},
      {"new-label", 1, NULL},
      {"key-type", 0, "ec-p256"},
      {"issuer", 0, NULL},
      {"token", 0, NULL},
      {NULL, 0, NULL}},
     ceremony_run_ca_rotate,
     NULL,
     0},
    {"ca retire",
     "final CRL past the last expiry of what the CA issued, then its key destroyed",
     {{"label", 1, NULL}, {NULL, 0, NULL}},
     ceremony_run_ca_retire,
     NULL,
     0},
    /* plain `revoke` of a CA certificate refuses itself (ceremony_revoke_guard_check) */
    {"ca revoke-ca",
     "revoke an issuing CA's certificate and publish its parent's CRL",
     {{"label", 1, NULL}, {"reason", 1, NULL}, {NULL, 0, NULL}},
     ceremony_run_ca_revoke,
     NULL,
     0},
    /* a key that answers for every certificate of the CA and that no relying party can see
     * revoked (id-pkix-ocsp-nocheck): made as a CA key is */
    {"ocsp-signer new",
     "a new key for a CA's delegated OCSP signer (the old key destroyed)",
     {{"issuer", 1, NULL}, {"replace", 0, "no"}, {NULL, 0, NULL}},
     ceremony_run_ocsp_signer,
     ceremony_prep_ocsp_signer,
     0},
    {"order create",
     "a production order: how many devices of a model a station may provision, until when",
     {{"model", 1, NULL},
      {"count", 1, NULL},
      {"station", 1, NULL},
      {"expires", 1, NULL},
      {"profile", 0, "station"},
      {NULL, 0, NULL}},
     ceremony_run_order_create,
     NULL,
     0},
    /* while fewer than the quorum are active, registering them needs no ceremony */
    {"officer add",
     "register an officer by the certificate of the key on their own token",
     {{"name", 1, NULL}, {"cert", 1, NULL}, {NULL, 0, NULL}},
     ceremony_run_officer_add,
     ceremony_prep_officer_add,
     CEREMONY_OP_SELF_GUARDED},
    {"officer remove",
     "an officer who left: their approvals count no more",
     {{"name", 1, NULL}, {NULL, 0, NULL}},
     ceremony_run_officer_remove,
     NULL,
     CEREMONY_OP_SELF_GUARDED},
    /* a firmware key of [ceremony] release-keys: the plain sign-image refuses it itself */
    {"sign-image",
     "sign a firmware image with a release key (docs/firmware.md)",
     {{"key", 1, NULL},
      {"in", 1, NULL},
      {"in-sha256", 0, NULL},
      {"out", 1, NULL},
      {"version", 1, NULL},
      {"security-counter", 0, NULL},
      {"header-size", 0, "32"},
      {"align", 0, "1"},
      {"pad-header", 0, "no"},
      {"format", 0, "mcuboot"},
      {NULL, 0, NULL}},
     ca_image_ceremony_run,
     ca_image_ceremony_prep,
     CEREMONY_OP_SELF_GUARDED},
    {NULL, NULL, {{NULL, 0, NULL}}, NULL, NULL, 0},
};
