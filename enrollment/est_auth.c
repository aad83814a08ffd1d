/* keyline-estd: who is asking. TLS peer verification, channel binding (htpasswd: kl_http.c).
 * The CA-side checks (is this client certificate ours, valid, not revoked) are made by the
 * handlers with ca_cert_check_valid() (once per connection) and ca_cert_status_check() (every
 * request); this file stays free of the CA so it can be unit-tested. */
#include <gnutls/x509.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "est.h"
#include "kl_b64.h"
#include "kl_file.h"

/* ---------------------------------------------------------------------------------------- */
/* TLS                                                                                      */

kl_rc est_tls_peer_cert(gnutls_session_t s, const gnutls_datum_t **out)
{
    *out = NULL;
    if (!s || gnutls_certificate_type_get(s) != GNUTLS_CRT_X509) {
        return kl_fail(KL_ENOTFOUND, "no client certificate");
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n == 0) {
        return kl_fail(KL_ENOTFOUND, "no client certificate");
    }
    *out = &certs[0];
    return KL_OK;
}

int est_tls_resumed_untrusted(gnutls_session_t s, time_t now)
{
    return s && now < EST_CLOCK_FLOOR && gnutls_session_is_resumed(s);
}

/* Per-connection cache: the peer list is stored as (u32 length, DER) records. */
#define EST_PEERS_KEY_CAP (256u * 1024)

void est_conn_auth_init(est_conn_auth *ca)
{
    memset(ca, 0, sizeof *ca);
    kl_buf_init(&ca->peers, EST_PEERS_KEY_CAP, 0);
}

void est_conn_auth_reset(est_conn_auth *ca)
{
    X509_free(ca->cert);
    ca->cert = NULL;
    ca->serial[0] = 0;
    ca->subject[0] = 0;
    ca->device_id[0] = 0;
    ca->not_before = ca->not_after = 0;
    kl_buf_reset(&ca->peers);
}

void est_conn_auth_free(est_conn_auth *ca)
{
    est_conn_auth_reset(ca);
    kl_buf_free(&ca->peers);
    OPENSSL_cleanse(ca->basic_mac, sizeof ca->basic_mac);
    ca->basic_gen = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP Basic, remembered per connection                                                    */

static uint8_t est_basic_key[32];
static int est_basic_key_ok;
static pthread_once_t est_basic_once = PTHREAD_ONCE_INIT;
static atomic_ulong est_basic_gen = 1;

static void est_basic_key_make(void)
{
    est_basic_key_ok = RAND_bytes(est_basic_key, sizeof est_basic_key) == 1;
}

unsigned long est_basic_generation(void)
{
    return atomic_load(&est_basic_gen);
}

void est_basic_forget_all(void)
{
    unsigned long g = atomic_fetch_add(&est_basic_gen, 1) + 1;
    if (g == 0) { /* 0 means "nothing remembered" */
        atomic_fetch_add(&est_basic_gen, 1);
    }
}

/* HMAC-SHA256 of the header under the process key: a connection's memory of a credential
 * says nothing about the password to whoever reads it without the key. */
static int est_basic_mac(const char *authorization, uint8_t mac[32])
{
    unsigned int n = 32;
    pthread_once(&est_basic_once, est_basic_key_make);
    return est_basic_key_ok && authorization &&
           HMAC(EVP_sha256(), est_basic_key, sizeof est_basic_key,
                (const unsigned char *)authorization, strlen(authorization), mac, &n) &&
           n == 32;
}

int est_basic_cached(const est_conn_auth *ca, const char *authorization, char *user, size_t cap)
{
    uint8_t mac[32];
    if (!ca || !ca->basic_gen || ca->basic_gen != est_basic_generation() ||
        !est_basic_mac(authorization, mac)) {
        return 0;
    }
    int same = CRYPTO_memcmp(mac, ca->basic_mac, sizeof mac) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    if (same) {
        snprintf(user, cap, "%s", ca->basic_user);
    }
    return same;
}

void est_basic_remember(est_conn_auth *ca, const char *authorization, const char *user,
                        unsigned long gen)
{
    if (!ca) {
        return;
    }
    ca->basic_gen = 0;
    if (strlen(user) < sizeof ca->basic_user && est_basic_mac(authorization, ca->basic_mac)) {
        snprintf(ca->basic_user, sizeof ca->basic_user, "%s", user);
        ca->basic_gen = gen;
    }
}

static const gnutls_datum_t *est_tls_peers(gnutls_session_t s, unsigned *n)
{
    *n = 0;
    if (!s || gnutls_certificate_type_get(s) != GNUTLS_CRT_X509) {
        return NULL;
    }
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, n);
    if (!certs) {
        *n = 0;
    }
    return *n ? certs : NULL;
}

kl_rc est_tls_peers_key(gnutls_session_t s, kl_buf *out)
{
    unsigned n = 0;
    const gnutls_datum_t *certs = est_tls_peers(s, &n);
    if (!certs) {
        return kl_fail(KL_ENOTFOUND, "no client certificate");
    }
    kl_buf_reset(out);
    for (unsigned i = 0; i < n; i++) {
        uint32_t len = certs[i].size;
        kl_rc rc = kl_buf_put(out, &len, sizeof len);
        if (rc == KL_OK) {
            rc = kl_buf_put(out, certs[i].data, certs[i].size);
        }
        if (rc != KL_OK) {
            kl_buf_reset(out);
            return rc;
        }
    }
    return KL_OK;
}

int est_tls_peers_same(gnutls_session_t s, const kl_buf *key)
{
    unsigned n = 0;
    const gnutls_datum_t *certs = est_tls_peers(s, &n);
    if (!certs || !key->len) {
        return 0;
    }
    size_t pos = 0;
    for (unsigned i = 0; i < n; i++) {
        uint32_t len;
        if (key->len - pos < sizeof len) {
            return 0;
        }
        memcpy(&len, key->data + pos, sizeof len);
        pos += sizeof len;
        if (len != certs[i].size || key->len - pos < len ||
            memcmp(key->data + pos, certs[i].data, len) != 0) {
            return 0;
        }
        pos += len;
    }
    return pos == key->len;
}

kl_rc est_tls_channel_binding(gnutls_session_t s, kl_buf *b64)
{
    if (!s) {
        return kl_fail(KL_EAUTH, "no TLS session for channel binding");
    }
    /* RFC 9266 2: tls-exporter for TLS 1.3, where tls-unique is undefined. */
    int tls13 = gnutls_protocol_get_version(s) == GNUTLS_TLS1_3;
    /* RFC 7627 / RFC 9266 3: without the extended master secret, tls-unique can be made equal
     * on two connections (triple handshake); a TLS 1.2 binding is only meaningful with it. */
    if (!tls13 && !gnutls_session_ext_master_secret_status(s)) {
        return kl_fail(KL_EAUTH, "channel binding over TLS 1.2 needs the extended master secret "
                                 "(RFC 7627); this session did not negotiate it");
    }
    gnutls_datum_t cb = {NULL, 0};
    int r = gnutls_session_channel_binding(s, tls13 ? GNUTLS_CB_TLS_EXPORTER : GNUTLS_CB_TLS_UNIQUE,
                                           &cb);
    if (r < 0) {
        return kl_fail(KL_EAUTH, "channel binding unavailable: %s", gnutls_strerror(r));
    }
    kl_rc rc = kl_b64_encode(cb.data, cb.size, 0, 0, b64);
    gnutls_free(cb.data);
    return rc;
}

kl_rc est_csr_challenge_password(X509_REQ *req, kl_buf *out)
{
    int idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1);
    if (idx < 0) {
        return kl_fail(KL_ENOTFOUND, "no challengePassword");
    }
    if (X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, idx) >= 0) {
        return kl_fail(KL_EINPUT, "more than one challengePassword attribute");
    }
    X509_ATTRIBUTE *a = X509_REQ_get_attr(req, idx);
    if (!a || X509_ATTRIBUTE_count(a) != 1) {
        return kl_fail(KL_EINPUT, "challengePassword must have exactly one value");
    }
    ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(a, 0);
    /* PKCS #9: challengePassword is a DirectoryString */
    if (!t || (t->type != V_ASN1_PRINTABLESTRING && t->type != V_ASN1_UTF8STRING &&
               t->type != V_ASN1_IA5STRING && t->type != V_ASN1_T61STRING)) {
        return kl_fail(KL_EINPUT, "challengePassword is not a string");
    }
    const ASN1_STRING *str = t->value.asn1_string;
    return kl_buf_put(out, ASN1_STRING_get0_data(str), (size_t)ASN1_STRING_length(str));
}

kl_rc est_channel_binding_check(est_cb_mode mode, X509_REQ *req, gnutls_session_t s)
{
    kl_rc rc = KL_OK;
    kl_buf cp, want;
    kl_buf_init(&cp, 1024, 1);
    kl_buf_init(&want, 1024, 0);
    if (mode == EST_CB_OFF) {
        goto out;
    }
    rc = est_csr_challenge_password(req, &cp);
    if (rc == KL_ENOTFOUND) {
        rc = KL_OK;
        /* RFC 7030 3.5: the server policy decides whether the binding is mandatory. */
        ENSURE(mode != EST_CB_REQUIRED, KL_EAUTH,
               "channel binding required: put the base64 %s value in challengePassword",
               s && gnutls_protocol_get_version(s) == GNUTLS_TLS1_3 ? "tls-exporter"
                                                                    : "tls-unique");
        goto out;
    }
    if (rc != KL_OK) {
        goto out;
    }
    TRY(est_tls_channel_binding(s, &want));
    /* RFC 7030 3.5: "the EST server MUST verify the tls-unique value" */
    ENSURE(cp.len == want.len && CRYPTO_memcmp(cp.data, want.data, want.len) == 0, KL_EAUTH,
           "challengePassword does not match this TLS session's channel binding");
out:
    kl_buf_free(&cp);
    kl_buf_free(&want);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Names                                                                                    */

char *est_name_serial_number(const X509_NAME *name)
{
    int idx = X509_NAME_get_index_by_NID(name, NID_serialNumber, -1);
    if (idx < 0) {
        return NULL;
    }
    const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, d);
    if (n <= 0) {
        return NULL;
    }
    char *s = strndup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return s;
}

void est_name_oneline(const X509_NAME *name, char *out, size_t outlen)
{
    out[0] = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) {
        return;
    }
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, out, (int)outlen - 1);
        out[n > 0 ? n : 0] = 0;
    }
    BIO_free(b);
}

int est_asn1_time_get(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return 0;
    }
    *out = timegm(&tm);
    return 1;
}
