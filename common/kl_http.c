/* keyline: what the HTTP front ends share (keyline-estd, the station's dashboard): listen
 * addresses, HTTP Basic credentials and htpasswd files (crypt_r). No PKI here. */
#include <crypt.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
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
    size_t cost; /* its index in kl_htpasswd.cost */
} kl_ht_entry;

/* Timing: a failed check computes one hash of each kind and cost the file holds (its own
 * entry's first when the user exists, else a line of each), so a wrong password for a known
 * user and an unknown user cost the same whatever kinds and costs the lines mix. A file of
 * mixed kinds (bcrypt, yescrypt, sha512crypt: three tools make them) with one stand-in hash
 * for unknown users told which users exist by time alone (15x apart). */
struct kl_htpasswd {
    kl_ht_entry *e;
    size_t n;
    const char *cost[KL_HTPASSWD_COSTS_MAX]; /* one line's hash per kind and cost (not owned) */
    size_t ncost;
    char *empty; /* an empty file's stand-in: a yescrypt setting, so a failure costs a hash */
};

static const char *const kl_ht_prefixes[] = {"$2b$", "$2y$", "$2a$", "$y$", "$gy$", "$6$"};

/* Structure check of a complete hash (not just a setting): the right prefix, its fields
 * ("$2b$NN$salt+sum", "$y$params$salt$sum", "$6$[rounds=N$]salt$sum": kl_ht_cost_len's
 * grouping by kind and cost relies on them) and a checksum of the algorithm's length after the
 * last '$'. A truncated line would otherwise load fine and silently refuse its user forever;
 * "$6$rounds=900000$" and a checksum, no salt, would count as default rounds. */
static int kl_ht_hash_ok(const char *hash)
{
    static const size_t sum_len[] = {53, 53, 53, 43, 43, 86}; /* per kl_ht_prefixes */
    static const size_t fields[] = {3, 3, 3, 4, 4, 3};        /* '$' a hash of each has */
    const char *last = strrchr(hash, '$');
    size_t dollars = 0;
    for (const char *p = hash; *p; p++) {
        dollars += *p == '$';
    }
    for (size_t i = 0; i < sizeof kl_ht_prefixes / sizeof kl_ht_prefixes[0]; i++) {
        size_t pl = strlen(kl_ht_prefixes[i]);
        if (strncmp(hash, kl_ht_prefixes[i], pl) == 0) {
            size_t want = fields[i] + (i == 5 && strncmp(hash + pl, "rounds=", 7) == 0);
            return last && dollars == want && strlen(last + 1) == sum_len[i] &&
                   crypt_checksalt(hash) == CRYPT_SALT_OK;
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
    free(h->empty);
    free(h);
}

size_t kl_htpasswd_count(const kl_htpasswd *h)
{
    return h ? h->n : 0;
}

/* The part of a (checked) hash that sets its cost: the kind and its parameters, without salt
 * and checksum: "$2b$05$", "$y$j9T$", "$6$", "$6$rounds=9000$". */
static size_t kl_ht_cost_len(const char *hash)
{
    const char *p = strrchr(hash, '$');
    if (hash[1] != '2') { /* bcrypt holds salt and checksum in one field, the others in two */
        while (p > hash && *--p != '$') {
        }
    }
    return (size_t)(p - hash) + 1;
}

/* Entry i's kind and cost: one it shares with an earlier line, or a new one. */
static kl_rc kl_ht_cost_add(kl_htpasswd *h, size_t i, const char *name)
{
    kl_rc rc = KL_OK;
    const char *hash = h->e[i].hash;
    size_t len = kl_ht_cost_len(hash);
    size_t c = 0;
    while (c < h->ncost &&
           !(kl_ht_cost_len(h->cost[c]) == len && !strncmp(h->cost[c], hash, len))) {
        c++;
    }
    ENSURE(c < KL_HTPASSWD_COSTS_MAX, KL_EINPUT,
           "%s: user %s: more than %d kinds and costs of hash in one file (a failed login "
           "computes one of each); make the entries alike, e.g. all with mkpasswd -m yescrypt",
           name, h->e[i].user, KL_HTPASSWD_COSTS_MAX);
    if (c == h->ncost) {
        h->cost[h->ncost++] = hash;
    }
    h->e[i].cost = c;
out:
    return rc;
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
    for (size_t i = 0; i < h->n; i++) {
        TRY(kl_ht_cost_add(h, i, name));
    }
    if (!h->n) {
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof setting)) {
            h->empty = strdup(setting);
        }
        ENSURE(h->empty, KL_EINTERNAL, "out of memory");
        h->cost[h->ncost++] = h->empty;
    }
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

/* kl_htpasswd_fail_plan; *known: 1 when `user` has a line */
static size_t kl_ht_plan(const kl_htpasswd *h, const char *user,
                         const char *plan[KL_HTPASSWD_COSTS_MAX], int *known)
{
    static const char none[] = "$6$keylinedummy$"; /* no file at all */
    const kl_ht_entry *me = NULL;
    for (size_t i = 0; h && user && i < h->n; i++) {
        if (strcmp(h->e[i].user, user) == 0) {
            me = &h->e[i];
        }
    }
    *known = me != NULL;
    if (!h) {
        plan[0] = none;
        return 1;
    }
    size_t k = 0;
    if (me) {
        plan[k++] = me->hash;
    }
    for (size_t c = 0; c < h->ncost; c++) {
        if (!me || c != me->cost) {
            plan[k++] = h->cost[c];
        }
    }
    return k;
}

size_t kl_htpasswd_fail_plan(const kl_htpasswd *h, const char *user,
                             const char *plan[KL_HTPASSWD_COSTS_MAX])
{
    int known = 0;
    return kl_ht_plan(h, user, plan, &known);
}

static _Atomic uint64_t kl_ht_hashes; /* kl_htpasswd_hashes */

uint64_t kl_htpasswd_hashes(void)
{
    return atomic_load(&kl_ht_hashes);
}

/* Whether crypt_r of `pass` under `hash` (work area cd) gives `hash`, compared in constant
 * time. */
static int kl_ht_crypt_eq(struct crypt_data *cd, const char *pass, const char *hash)
{
    const char *res = crypt_r(pass, hash, cd);
    atomic_fetch_add(&kl_ht_hashes, 1);
    size_t hl = strlen(hash);
    return res && res[0] != '*' && strlen(res) == hl && CRYPTO_memcmp(res, hash, hl) == 0;
}

kl_rc kl_htpasswd_verify(const kl_htpasswd *h, const char *user, const char *pass)
{
    const char *plan[KL_HTPASSWD_COSTS_MAX] = {NULL};
    int known = 0;
    size_t n = kl_ht_plan(h, user, plan, &known);
    if (n == 0) { /* a parsed file has a kind and cost at least (its stand-in when empty) */
        return kl_fail(KL_EINTERNAL, "htpasswd: nothing to check a password against");
    }
    pass = pass ? pass : "";
    struct crypt_data *cd = calloc(1, sizeof *cd); /* one work area for the whole plan */
    if (!cd) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    int ok = kl_ht_crypt_eq(cd, pass, plan[0]) && known;
    for (size_t i = 1; !ok && i < n; i++) {
        (void)kl_ht_crypt_eq(cd, pass, plan[i]); /* the time of a hash of each kind and cost */
    }
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return ok ? KL_OK : kl_fail(KL_EAUTH, known ? "wrong password" : "unknown user");
}
