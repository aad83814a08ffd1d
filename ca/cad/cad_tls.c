/* keyline-cad: the optional TCP listener for front ends on other hosts (mutual TLS).
 *
 * A front end presents a certificate from the `frontend` template, issued by a CA whose
 * certificate is in [cad] tls-client-ca; OpenSSL checks the chain, keyline-cad then checks the
 * certificate against its own store (issued here, valid, not revoked, in its dates: the same
 * ca_cert_check_valid as EST client certificates) and maps its subject CN to roles ([role NAME]
 * certs = CN, ...). TLS 1.2 or later only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cad.h"
#include "kl_log.h"
#include "store.h"

static atomic_ulong cad_tls_conns; /* connections identified on the TCP listener */

kl_rc cad_tls_setup(cad *d)
{
    kl_rc rc = KL_OK;
    const cad_cfg *cfg = &d->cfg;
    SSL_CTX *ctx = NULL;
    struct addrinfo hints, *ai = NULL;
    char host[256], *port = NULL;
    if (!cfg->listen) {
        return KL_OK;
    }
    ENSURE(cfg->tls_cert && cfg->tls_key && cfg->tls_client_ca, KL_EINPUT,
           "[cad] listen needs tls-cert, tls-key and tls-client-ca");
    ctx = SSL_CTX_new(TLS_server_method());
    ENSURE_SSL(ctx, KL_EINTERNAL, "SSL_CTX_new");
    ENSURE_SSL(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, KL_EINTERNAL,
               "TLS minimum version");
    ENSURE_SSL(SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) == 1, KL_EINPUT,
               "[cad] tls-cert %s", cfg->tls_cert);
    ENSURE_SSL(SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) == 1, KL_EINPUT,
               "[cad] tls-key %s", cfg->tls_key);
    ENSURE_SSL(SSL_CTX_check_private_key(ctx) == 1, KL_EINPUT,
               "[cad] tls-key does not match tls-cert");
    ENSURE_SSL(SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) == 1, KL_EINPUT,
               "[cad] tls-client-ca %s", cfg->tls_client_ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    snprintf(host, sizeof host, "%s", cfg->listen);
    port = strrchr(host, ':');
    ENSURE(port && port != host, KL_EINPUT, "[cad] listen = %s: expected HOST:PORT", cfg->listen);
    *port++ = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
    int g = getaddrinfo(host, port, &hints, &ai);
    ENSURE(g == 0, KL_EINPUT, "[cad] listen = %s: %s", cfg->listen, gai_strerror(g));
    d->tcp_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ENSURE(d->tcp_fd >= 0, KL_EIO, "socket: %s", strerror(errno));
    int one = 1;
    (void)setsockopt(d->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ENSURE(bind(d->tcp_fd, ai->ai_addr, ai->ai_addrlen) == 0, KL_EIO, "bind %s: %s", cfg->listen,
           strerror(errno));
    ENSURE(listen(d->tcp_fd, 128) == 0, KL_EIO, "listen %s: %s", cfg->listen, strerror(errno));
    d->tls = ctx;
    ctx = NULL;
    kl_info("keyline-cad: mutual TLS on %s for front ends on other hosts", cfg->listen);
out:
    if (ai) {
        freeaddrinfo(ai);
    }
    SSL_CTX_free(ctx);
    if (rc != KL_OK && d->tcp_fd >= 0) {
        close(d->tcp_fd);
        d->tcp_fd = -1;
    }
    return rc;
}

/* The front end's certificate, as OpenSSL verified it, checked against the store and mapped
 * to roles by its subject CN. */
kl_rc cad_tls_peer(const cad *d, SSL *ssl, cad_peer *peer)
{
    kl_rc rc = KL_OK;
    char cn[128] = "";
    char *serial = NULL;
    store_cert row;
    X509 *x = SSL_get1_peer_certificate(ssl);
    memset(peer, 0, sizeof *peer);
    memset(&row, 0, sizeof row);
    ENSURE(x, KL_EAUTH, "no client certificate");
    ENSURE(SSL_get_verify_result(ssl) == X509_V_OK, KL_EAUTH, "client certificate: %s",
           X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    TRY(ca_cert_check_row(d->ca, x, NULL, 0, &row));
    /* the chain alone does not make a front end: a CA in tls-client-ca may also issue device
     * certificates with clientAuth and a CN the device chose (device-ldevid) */
    ENSURE(row.template_name && strcmp(row.template_name, CAD_FRONTEND_TEMPLATE) == 0, KL_EAUTH,
           "client certificate %s (template %s) is not a front end's certificate (template %s)",
           row.serial_hex, row.template_name ? row.template_name : "-", CAD_FRONTEND_TEMPLATE);
    ENSURE(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0,
           KL_EAUTH, "client certificate without a subject CN");
    ENSURE((X509_get_extended_key_usage(x) & XKU_SSL_CLIENT) != 0, KL_EAUTH,
           "client certificate CN=%s is not for TLS clients (extendedKeyUsage)", cn);
    serial = ca_serial_hex(X509_get0_serialNumber(x));
    ENSURE(serial, KL_EINTERNAL, "serial");
    peer->pid = 0;
    peer->uid = (uid_t)-1;
    snprintf(peer->user, sizeof peer->user, "CN=%.60s", cn);
    /* A device claim's holder is (instance, host, pid); a remote front end has no pid this
     * host could check, so its "host" names this very connection (daemon instance and a
     * connection number): the liveness rules for processes on this host never match it, and a
     * claim it holds ends only with its lease or its own release (same instance), whichever
     * daemon the front end reaches next. Two stations with one certificate stay apart. */
    snprintf(peer->host, sizeof peer->host, "frontend %.100s via cad %.16s#%lu", cn, d->instance,
             (unsigned long)atomic_fetch_add(&cad_tls_conns, 1) + 1);
    char roles[200] = "";
    for (size_t i = 0; i < d->cfg.nroles; i++) {
        const cad_role *r = &d->cfg.roles[i];
        for (size_t j = 0; j < r->ncerts; j++) {
            if (strcmp(r->certs[j], cn) == 0) {
                peer->roles |= UINT32_C(1) << i;
                size_t n = strlen(roles);
                snprintf(roles + n, sizeof roles - n, "%s%s", n ? "," : "", r->name);
                break;
            }
        }
    }
    snprintf(peer->actor, sizeof peer->actor, "front end CN=%.100s (cert %.64s) as %.200s", cn,
             serial, roles[0] ? roles : "no role");
out:
    store_cert_free(&row);
    OPENSSL_free(serial);
    X509_free(x);
    return rc;
}
