/* keyline: what the HTTP front ends share (keyline-estd, the station's dashboard): listen
 * addresses, HTTP Basic credentials and htpasswd files (crypt_r). No PKI here. */
#include <crypt.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "kl_b64.h"
#include "kl_file.h"
#include "kl_http.h"

/* ---- HTTP-date (RFC 9110 5.6.7) ------------------------------------------------------- */

int kl_http_date_parse(const char *s, time_t now, time_t *out)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* rfc850-date */
        "%a %b %e %H:%M:%S %Y",      /* asctime-date */
    };
    for (size_t i = 0; s && i < sizeof forms / sizeof forms[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(s, forms[i], &tm);
        if (!end || *end) {
            continue;
        }
        if (i == 1) {
            /* RFC 9110 5.6.7: more than 50 years in the future means the century before */
            struct tm nt;
            gmtime_r(&now, &nt);
            int cur = nt.tm_year + 1900, year = cur - cur % 100 + (tm.tm_year + 1900) % 100;
            tm.tm_year = (year > cur + 50 ? year - 100 : year) - 1900;
        }
        time_t t = timegm(&tm);
        if (t != (time_t)-1) {
            *out = t;
            return 1;
        }
    }
    return 0;
}

void kl_http_date_format(time_t t, char *buf, size_t cap)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0) {
        snprintf(buf, cap, "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}

/* ---- listen addresses ------------------------------------------------------------------- */

kl_rc kl_hostport_parse(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    if (!s || !*s) {
        return kl_fail(KL_EUSAGE, "empty address");
    }
    const char *h = s, *hend, *colon;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            return kl_fail(KL_EUSAGE, "%s: expected [IPv6]:port", s);
        }
        h = s + 1;
        hend = rb;
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s))) {
            return kl_fail(KL_EUSAGE, "%s: expected host:port (IPv6 as [addr]:port)", s);
        }
        hend = colon;
    }
    if ((size_t)(hend - h) >= hostlen) {
        return kl_fail(KL_EUSAGE, "%s: host too long", s);
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535) {
        return kl_fail(KL_EUSAGE, "%s: bad port", s);
    }
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = 0;
    *port = (uint16_t)p;
    return KL_OK;
}

kl_rc kl_hostport_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *sl, int *v6)
{
    char host[256];
    uint16_t port = 0;
    kl_rc rc = kl_hostport_parse(hostport, host, sizeof host, &port);
    if (rc != KL_OK) {
        return rc;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int e = getaddrinfo(host[0] ? host : NULL, ps, &hints, &ai);
    if (e != 0 || !ai) {
        return kl_fail(KL_EUSAGE, "%s: %s", hostport, gai_strerror(e));
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *sl = ai->ai_addrlen;
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return KL_OK;
}

/* ---- HTTP Basic (RFC 7617) -------------------------------------------------------------- */

kl_rc kl_basic_parse(const char *authorization, kl_buf *user, kl_buf *pass)
{
    kl_rc rc = KL_OK;
    kl_buf raw;
    kl_buf_init(&raw, 1024, 1);
    if (!authorization) {
        return kl_fail(KL_ENOTFOUND, "no Authorization header");
    }
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (strncasecmp(p, "Basic", 5) != 0 || (p[5] != ' ' && p[5] != '\t')) {
        return kl_fail(KL_ENOTFOUND, "Authorization is not Basic");
    }
    p += 5;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
        n--;
    }
    ENSURE(n > 0 && n <= 1024, KL_EINPUT, "malformed Basic credentials");
    rc = kl_b64_decode(p, n, &raw);
    ENSURE(rc == KL_OK, KL_EINPUT, "malformed Basic credentials (base64)");
    const uint8_t *colon = memchr(raw.data, ':', raw.len);
    ENSURE(colon && colon != raw.data, KL_EINPUT, "malformed Basic credentials (no user)");
    size_t ulen = (size_t)(colon - raw.data);
    for (size_t i = 0; i < raw.len; i++) {
        ENSURE(raw.data[i] >= 0x20 && raw.data[i] != 0x7f, KL_EINPUT,
               "malformed Basic credentials (control character)");
    }
    const char *tmp;
    TRY(kl_buf_put(user, raw.data, ulen));
    TRY(kl_buf_cstr(user, &tmp));
    TRY(kl_buf_put(pass, colon + 1, raw.len - ulen - 1));
    TRY(kl_buf_cstr(pass, &tmp));
out:
    kl_buf_free(&raw);
    return rc;
}

/* ---- htpasswd ------------------------------------------------------------------------------ */

typedef struct {
    char *user;
    char *hash;
} kl_ht_entry;

struct kl_htpasswd {
    kl_ht_entry *e;
    size_t n;
    char *dummy; /* a setting of the same kind and cost as real entries, for unknown users */
};

static const char *const kl_ht_prefixes[] = {"$2b$", "$2y$", "$2a$", "$y$", "$gy$", "$6$"};

/* Structure check of a complete hash (not just a setting): the right prefix and a checksum
 * of the algorithm's length after the last '$'. A truncated line would otherwise load fine
 * and silently refuse its user forever. */
static int kl_ht_hash_ok(const char *hash)
{
    static const size_t sum_len[] = {53, 53, 53, 43, 43, 86}; /* per kl_ht_prefixes */
    const char *last = strrchr(hash, '$');
    for (size_t i = 0; i < sizeof kl_ht_prefixes / sizeof kl_ht_prefixes[0]; i++) {
        if (strncmp(hash, kl_ht_prefixes[i], strlen(kl_ht_prefixes[i])) == 0) {
            return last && strlen(last + 1) == sum_len[i] && crypt_checksalt(hash) == CRYPT_SALT_OK;
        }
    }
    return 0;
}

void kl_htpasswd_free(kl_htpasswd *h)
{
    if (!h) {
        return;
    }
    for (size_t i = 0; i < h->n; i++) {
        free(h->e[i].user);
        if (h->e[i].hash) {
            OPENSSL_cleanse(h->e[i].hash, strlen(h->e[i].hash));
        }
        free(h->e[i].hash);
    }
    free(h->e);
    free(h->dummy);
    free(h);
}

size_t kl_htpasswd_count(const kl_htpasswd *h)
{
    return h ? h->n : 0;
}

kl_rc kl_htpasswd_parse(const char *name, const char *text, size_t len, kl_htpasswd **out)
{
    kl_rc rc = KL_OK;
    kl_htpasswd *h = calloc(1, sizeof *h);
    ENSURE(h, KL_EINTERNAL, "out of memory");
    size_t lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        while (ll && (line[ll - 1] == '\r' || line[ll - 1] == ' ' || line[ll - 1] == '\t')) {
            ll--;
        }
        size_t lead = 0;
        while (lead < ll && (line[lead] == ' ' || line[lead] == '\t')) {
            lead++;
        }
        if (lead == ll || line[lead] == '#') {
            continue;
        }
        const char *colon = memchr(line + lead, ':', ll - lead);
        ENSURE(colon && colon > line + lead, KL_EINPUT, "%s:%zu: expected user:hash", name, lineno);
        size_t ulen = (size_t)(colon - line - lead);
        size_t hlen = ll - (size_t)(colon + 1 - line);
        ENSURE(hlen > 0 && hlen < CRYPT_OUTPUT_SIZE, KL_EINPUT, "%s:%zu: empty or overlong hash",
               name, lineno);
        char *user = strndup(line + lead, ulen);
        char *hash = strndup(colon + 1, hlen);
        kl_ht_entry *ne = realloc(h->e, (h->n + 1) * sizeof *ne);
        if (!user || !hash || !ne) {
            free(user);
            free(hash);
            if (ne) {
                h->e = ne;
            }
            ENSURE(0, KL_EINTERNAL, "out of memory");
        }
        h->e = ne;
        h->e[h->n].user = user;
        h->e[h->n].hash = hash;
        h->n++;
        ENSURE(kl_ht_hash_ok(hash), KL_EINPUT,
               "%s:%zu: user %s: unsupported hash (use bcrypt $2b$, yescrypt $y$ or "
               "sha512crypt $6$, e.g. mkpasswd -m yescrypt)",
               name, lineno, user);
        for (size_t i = 0; i + 1 < h->n; i++) {
            ENSURE(strcmp(h->e[i].user, user) != 0, KL_EINPUT, "%s:%zu: user %s appears twice",
                   name, lineno, user);
        }
    }
    if (h->n) {
        /* Same algorithm and cost as a real entry: an unknown user costs what a known one does. */
        h->dummy = strdup(h->e[0].hash);
    } else {
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof setting)) {
            h->dummy = strdup(setting);
        }
    }
    ENSURE(h->dummy, KL_EINTERNAL, "out of memory");
    *out = h;
    h = NULL;
out:
    kl_htpasswd_free(h);
    return rc;
}

kl_rc kl_htpasswd_load(const char *path, kl_htpasswd **out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    kl_rc rc = kl_file_read(path, 4 * 1024 * 1024, &data, &len);
    if (rc != KL_OK) {
        return kl_wrap(rc, "htpasswd");
    }
    rc = kl_htpasswd_parse(path, (const char *)data, len, out);
    OPENSSL_cleanse(data, len);
    free(data);
    return rc;
}

kl_rc kl_htpasswd_verify(const kl_htpasswd *h, const char *user, const char *pass)
{
    const char *hash = NULL;
    for (size_t i = 0; h && user && i < h->n; i++) {
        if (strcmp(h->e[i].user, user) == 0) {
            hash = h->e[i].hash;
        }
    }
    int known = hash != NULL;
    if (!known) {
        hash = h ? h->dummy : "$6$keylinedummy$";
    }
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    const char *res = crypt_r(pass ? pass : "", hash, cd);
    size_t hl = strlen(hash);
    int ok = res && res[0] != '*' && strlen(res) == hl && CRYPTO_memcmp(res, hash, hl) == 0;
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    if (ok && known) {
        return KL_OK;
    }
    return kl_fail(KL_EAUTH, known ? "wrong password" : "unknown user");
}
