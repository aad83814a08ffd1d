/* keyline: what the HTTP front ends share (keyline-estd, keyline-provision's dashboard).
 * Listen addresses, HTTP Basic credentials (RFC 7617) and htpasswd-style password files.
 * Nothing here knows PKI; the library (keyline_http) links libcrypt for crypt_r. */
#ifndef KL_HTTP_H
#define KL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "kl_buf.h"
#include "kl_err.h"

/* "host:port", "[v6]:port", ":port" (all addresses). host gets "" for any. KL_EUSAGE. */
kl_rc kl_hostport_parse(const char *s, char *host, size_t hostlen, uint16_t *port) KL_WUR;
/* The socket address to bind for "host:port" (numeric or resolvable host; "" = any).
 * *v6 is set for an IPv6 address. KL_EUSAGE naming the address when it does not resolve. */
kl_rc kl_hostport_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *sl,
                          int *v6) KL_WUR;

/* Parse an Authorization header "Basic <b64(user:pass)>" (scheme case-insensitive).
 * user/pass get NUL-terminated strings; pass should be a sensitive buffer.
 * KL_ENOTFOUND when the header is absent or not Basic; KL_EINPUT when malformed. */
kl_rc kl_basic_parse(const char *authorization, kl_buf *user, kl_buf *pass) KL_WUR;

/* An HTTP-date (RFC 9110 5.6.7) as seconds since the epoch: IMF-fixdate ("Sun, 06 Nov 1994
 * 08:49:37 GMT") and the two obsolete forms a recipient must accept, rfc850-date ("Sunday,
 * 06-Nov-94 08:49:37 GMT", its two-digit year taken as the one with those digits at most 50
 * years after `now`) and asctime-date ("Sun Nov  6 08:49:37 1994"). 1 and *out when `s` is one
 * of them and nothing else; 0 otherwise (a field to ignore, RFC 9110 13.1.3). */
int kl_http_date_parse(const char *s, time_t now, time_t *out);
/* `t` as an IMF-fixdate (the form a sender uses) into buf; cap of 30 or more. */
void kl_http_date_format(time_t t, char *buf, size_t cap);

typedef struct kl_htpasswd kl_htpasswd;

/* Lines "user:hash", '#' comments and blank lines ignored. Hashes must be crypt(3) strings of
 * the kinds we accept ($2b$/$2y$/$2a$ bcrypt, $y$/$gy$ yescrypt, $6$ sha512crypt); anything
 * else is refused with "FILE:LINE: ..." (KL_EINPUT) so an operator never believes a plain or
 * MD5 entry is protecting anything. */
kl_rc kl_htpasswd_parse(const char *name, const char *text, size_t len, kl_htpasswd **out) KL_WUR;
kl_rc kl_htpasswd_load(const char *path, kl_htpasswd **out) KL_WUR;
void kl_htpasswd_free(kl_htpasswd *h);
size_t kl_htpasswd_count(const kl_htpasswd *h);
/* KL_OK when user exists and the password matches; KL_EAUTH otherwise. A failure, unknown
 * user or wrong password, computes one crypt_r of each kind and cost of hash the file holds
 * (kl_htpasswd_fail_plan), so its time does not tell which users exist. h may be NULL (no
 * file: a fixed sha512crypt stand-in, every check fails), user and pass NULL (fail). */
kl_rc kl_htpasswd_verify(const kl_htpasswd *h, const char *user, const char *pass) KL_WUR;
/* How many crypt_r kl_htpasswd_verify has computed in this process (for tests and metrics). */
uint64_t kl_htpasswd_hashes(void);
/* A file holds at most this many kinds and costs of hash (bcrypt $2b$05$ and $2b$10$ are two),
 * else it is refused: a failed login computes one of each. */
#define KL_HTPASSWD_COSTS_MAX 8
/* The hashes a failed check of `user` computes, in order, into plan: the user's own line's
 * first when it has one, then one line of each other kind and cost (all of them for an unknown
 * user). Returns how many. h and user may be NULL (as kl_htpasswd_verify); the pointers are
 * h's, valid while h is. */
size_t kl_htpasswd_fail_plan(const kl_htpasswd *h, const char *user,
                             const char *plan[KL_HTPASSWD_COSTS_MAX]);

#endif
