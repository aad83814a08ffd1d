/* est_cb_client: a minimal EST client that puts this TLS session's channel binding into the
 * CSR (RFC 7030 3.5), for tests/integration/est_channel_binding.sh. No stock CLI client can
 * do this: the binding value exists only once the handshake is done, and the CSR carrying it
 * must be sent over that same connection.
 *
 *   est_cb_client --host H --port P --cafile root.pem [--insecure] [--tls12]
 *                 [--user U --pass P] [--cert C --key K]
 *                 [--cb right|wrong|none] [--cb-type auto|exporter|unique]
 *                 [--subject /CN=x/serialNumber=y] [--path /.well-known/est/simpleenroll]
 *                 [--out FILE]
 *
 * TLS 1.3 by default (GnuTLS priority forcing it), TLS 1.2 with --tls12. --no-ems: TLS 1.2 without
 * the extended master secret. The binding is
 * tls-exporter (RFC 9266) on TLS 1.3 and tls-unique (RFC 5929) on TLS 1.2 unless --cb-type
 * picks one; --cb wrong flips one bit of the right value (same length), --cb none leaves the
 * attribute out. A fresh P-256 key signs the CSR; the challengePassword is the base64 of the
 * binding. Prints the HTTP status code on stdout (the response body goes to --out); exit 0
 * when a status was received, 1 otherwise. Every socket operation is bounded (10 s). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 10

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "est_cb_client: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: est_cb_client --host H --port P (--cafile F | --insecure) [--tls12 [--no-ems]]\n"
        "       [--user U --pass P] [--cert C --key K] [--cb right|wrong|none]\n"
        "       [--cb-type auto|exporter|unique] [--subject /CN=..] [--path P]\n"
        "       [--out FILE]\n");
    exit(2);
}

/* base64 of len bytes, one line (no newline) */
static char *b64_line(const unsigned char *d, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out) {
        die("out of memory", NULL);
    }
    EVP_EncodeBlock((unsigned char *)out, d, (int)len);
    return out;
}

/* base64 wrapped at 64 columns, as `openssl base64` writes it */
static char *b64_wrapped(const unsigned char *d, size_t len, size_t *outlen)
{
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    size_t cap = 4 * ((len + 2) / 3) + len / 48 + 8;
    char *out = malloc(cap);
    int n1 = 0, n2 = 0;
    if (!ctx || !out) {
        die("out of memory", NULL);
    }
    EVP_EncodeInit(ctx);
    if (EVP_EncodeUpdate(ctx, (unsigned char *)out, &n1, d, (int)len) != 1) {
        die("base64 encode failed", NULL);
    }
    EVP_EncodeFinal(ctx, (unsigned char *)out + n1, &n2);
    EVP_ENCODE_CTX_free(ctx);
    *outlen = (size_t)(n1 + n2);
    return out;
}

/* "/CN=a/serialNumber=b" -> X509_NAME (no escaping: test subjects only) */
static X509_NAME *parse_subject(const char *s)
{
    X509_NAME *n = X509_NAME_new();
    char *copy = strdup(s);
    if (!n || !copy) {
        die("out of memory", NULL);
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            die("bad subject component", tok);
        }
        *eq = 0;
        if (!X509_NAME_add_entry_by_txt(n, tok, MBSTRING_UTF8, (unsigned char *)eq + 1, -1, -1,
                                        0)) {
            die("bad subject attribute", tok);
        }
    }
    free(copy);
    return n;
}

/* A CSR (DER) for a fresh P-256 key, with challengePassword = cp unless cp is NULL */
static unsigned char *make_csr(const char *subject, const char *cp, size_t *derlen)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509_REQ *req = X509_REQ_new();
    if (!key || !req) {
        die("cannot make key/CSR", NULL);
    }
    X509_NAME *name = parse_subject(subject);
    if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, name) ||
        !X509_REQ_set_pubkey(req, key)) {
        die("cannot fill CSR", NULL);
    }
    if (cp && !X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_ASC,
                                         (const unsigned char *)cp, -1)) {
        die("cannot add challengePassword", NULL);
    }
    if (X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
        die("cannot sign CSR", NULL);
    }
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    if (n <= 0) {
        die("cannot encode CSR", NULL);
    }
    *derlen = (size_t)n;
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return der;
}

static int tcp_connect(const char *host, const char *port)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        die("getaddrinfo", gai_strerror(r));
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        struct timeval tv = {IO_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        die("connect", strerror(errno));
    }
    return fd;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void send_all(gnutls_session_t s, const char *d, size_t len)
{
    while (len) {
        ssize_t n = gnutls_record_send(s, d, len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (n < 0) {
            die("send", gnutls_strerror((int)n));
        }
        d += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL, *cafile = NULL, *user = NULL, *pass = NULL;
    const char *cert = NULL, *key = NULL, *cbmode = "right", *cbtype = "auto", *out = NULL;
    const char *subject = "/CN=cb-device/serialNumber=HWCB01";
    const char *path = "/.well-known/est/simpleenroll";
    int insecure = 0, tls12 = 0, no_ems = 0;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},    {"port", required_argument, NULL, 'p'},
        {"cafile", required_argument, NULL, 'C'},  {"insecure", no_argument, NULL, 'k'},
        {"tls12", no_argument, NULL, '2'},         {"no-ems", no_argument, NULL, 'E'},
        {"user", required_argument, NULL, 'u'},    {"pass", required_argument, NULL, 'w'},
        {"cert", required_argument, NULL, 'c'},    {"key", required_argument, NULL, 'K'},
        {"cb", required_argument, NULL, 'b'},      {"cb-type", required_argument, NULL, 't'},
        {"subject", required_argument, NULL, 's'}, {"path", required_argument, NULL, 'P'},
        {"out", required_argument, NULL, 'o'},     {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; break;
        case 'C': cafile = optarg; break;
        case 'k': insecure = 1; break;
        case '2': tls12 = 1; break;
        case 'E': no_ems = 1; break;
        case 'u': user = optarg; break;
        case 'w': pass = optarg; break;
        case 'c': cert = optarg; break;
        case 'K': key = optarg; break;
        case 'b': cbmode = optarg; break;
        case 't': cbtype = optarg; break;
        case 's': subject = optarg; break;
        case 'P': path = optarg; break;
        case 'o': out = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || !port || (!cafile && !insecure) || (!user != !pass) || (!cert != !key) ||
        (strcmp(cbmode, "right") && strcmp(cbmode, "wrong") && strcmp(cbmode, "none")) ||
        (strcmp(cbtype, "auto") && strcmp(cbtype, "exporter") && strcmp(cbtype, "unique"))) {
        usage();
    }

    int r = gnutls_global_init();
    if (r < 0) {
        die("gnutls_global_init", gnutls_strerror(r));
    }
    gnutls_certificate_credentials_t cred;
    gnutls_session_t s;
    if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0) {
        die("credentials", gnutls_strerror(r));
    }
    if (cafile &&
        (r = gnutls_certificate_set_x509_trust_file(cred, cafile, GNUTLS_X509_FMT_PEM)) <= 0) {
        die("cannot load --cafile", r < 0 ? gnutls_strerror(r) : "no certificates");
    }
    if (cert &&
        (r = gnutls_certificate_set_x509_key_file(cred, cert, key, GNUTLS_X509_FMT_PEM)) < 0) {
        die("cannot load --cert/--key", gnutls_strerror(r));
    }
    if ((r = gnutls_init(&s, GNUTLS_CLIENT)) < 0) {
        die("gnutls_init", gnutls_strerror(r));
    }
    /* --no-ems: TLS 1.2 without the extended master secret (RFC 7627) */
    const char *prio = tls12 ? (no_ems ? "NORMAL:-VERS-ALL:+VERS-TLS1.2:%NO_SESSION_HASH"
                                       : "NORMAL:-VERS-ALL:+VERS-TLS1.2")
                             : "NORMAL:-VERS-ALL:+VERS-TLS1.3";
    if ((r = gnutls_priority_set_direct(s, prio, NULL)) < 0) {
        die("priority", gnutls_strerror(r));
    }
    if ((r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0) {
        die("credentials_set", gnutls_strerror(r));
    }
    if (!is_ip_literal(host)) {
        gnutls_server_name_set(s, GNUTLS_NAME_DNS, host, strlen(host));
    }
    if (!insecure) {
        /* checks the chain and that the certificate names host (DNS or IP SAN) */
        gnutls_session_set_verify_cert(s, host, 0);
    }
    gnutls_handshake_set_timeout(s, IO_TIMEOUT_S * 1000);
    int fd = tcp_connect(host, port);
    gnutls_transport_set_int(s, fd);
    do {
        r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
        die("TLS handshake", gnutls_strerror(r));
    }
    gnutls_protocol_t ver = gnutls_protocol_get_version(s);
    if (ver != (tls12 ? GNUTLS_TLS1_2 : GNUTLS_TLS1_3)) {
        die("negotiated an unexpected TLS version", gnutls_protocol_get_name(ver));
    }

    /* The binding of this session: RFC 9266 on TLS 1.3, RFC 5929 on TLS 1.2 */
    gnutls_channel_binding_t kind =
        ver == GNUTLS_TLS1_3 ? GNUTLS_CB_TLS_EXPORTER : GNUTLS_CB_TLS_UNIQUE;
    if (!strcmp(cbtype, "exporter")) {
        kind = GNUTLS_CB_TLS_EXPORTER;
    } else if (!strcmp(cbtype, "unique")) {
        kind = GNUTLS_CB_TLS_UNIQUE;
    }
    char *cp = NULL;
    if (strcmp(cbmode, "none") != 0) {
        gnutls_datum_t cb = {NULL, 0};
        if ((r = gnutls_session_channel_binding(s, kind, &cb)) < 0) {
            die("gnutls_session_channel_binding", gnutls_strerror(r));
        }
        if (cb.size == 0) {
            die("empty channel binding", NULL);
        }
        if (!strcmp(cbmode, "wrong")) {
            cb.data[cb.size / 2] ^= 0x01;
        }
        cp = b64_line(cb.data, cb.size);
        fprintf(stderr, "est_cb_client: %s, %s (%u bytes), challengePassword %s\n",
                gnutls_protocol_get_name(ver),
                kind == GNUTLS_CB_TLS_EXPORTER ? "tls-exporter" : "tls-unique", cb.size, cp);
        gnutls_free(cb.data);
    }

    size_t derlen = 0, bodylen = 0;
    unsigned char *der = make_csr(subject, cp, &derlen);
    char *body = b64_wrapped(der, derlen, &bodylen);
    OPENSSL_free(der);

    char auth[512] = "";
    if (user) {
        char up[256];
        int n = snprintf(up, sizeof up, "%s:%s", user, pass);
        if (n < 0 || (size_t)n >= sizeof up) {
            die("credentials too long", NULL);
        }
        char *b = b64_line((const unsigned char *)up, (size_t)n);
        snprintf(auth, sizeof auth, "Authorization: Basic %s\r\n", b);
        free(b);
    }
    int hostv6 = strchr(host, ':') != NULL;
    char hdr[1024];
    int hn = snprintf(hdr, sizeof hdr,
                      "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                      "Content-Type: application/pkcs10\r\nContent-Length: %zu\r\n%s"
                      "Connection: close\r\n\r\n",
                      path, hostv6 ? "[" : "", host, hostv6 ? "]" : "", port, bodylen, auth);
    if (hn < 0 || (size_t)hn >= sizeof hdr) {
        die("request header too long", NULL);
    }
    send_all(s, hdr, (size_t)hn);
    send_all(s, body, bodylen);

    /* Read the whole response (Connection: close) */
    size_t cap = 65536, len = 0;
    char *resp = malloc(cap + 1);
    if (!resp) {
        die("out of memory", NULL);
    }
    for (;;) {
        if (len == cap) {
            char *nr = realloc(resp, 2 * cap + 1);
            if (!nr) {
                die("out of memory", NULL);
            }
            resp = nr;
            cap *= 2;
        }
        ssize_t n = gnutls_record_recv(s, resp + len, cap - len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                die("receive timed out", NULL);
            }
            continue;
        }
        if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
            break;
        }
        if (n < 0) {
            die("receive", gnutls_strerror((int)n));
        }
        len += (size_t)n;
    }
    resp[len] = 0;
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        die("no HTTP status line in the response", NULL);
    }
    if (out) {
        const char *b = strstr(resp, "\r\n\r\n");
        FILE *f = fopen(out, "wb");
        if (!f) {
            die("cannot write --out", strerror(errno));
        }
        if (b) {
            fwrite(b + 4, 1, len - (size_t)(b + 4 - resp), f);
        }
        fclose(f);
    }
    printf("%d\n", status);

    gnutls_bye(s, GNUTLS_SHUT_WR);
    close(fd);
    gnutls_deinit(s);
    gnutls_certificate_free_credentials(cred);
    gnutls_global_deinit();
    free(resp);
    free(body);
    free(cp);
    return 0;
}
