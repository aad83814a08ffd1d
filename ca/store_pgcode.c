/* keyline: the PostgreSQL driver's reading of server text (store_pgcode.h). */
#include "store_pgcode.h"

#include <string.h>

#include "store_db.h"

/* A SQLSTATE that means a configuration mistake, not an outage: the database does not exist or
 * was dropped, the role or its password is refused. */
int pg_code_config(const char *code)
{
    return strncmp(code, "3D000", 5) == 0 || strncmp(code, "57P04", 5) == 0 ||
           strncmp(code, "28", 2) == 0;
}

/* The class of a SQLSTATE (5 characters). */
int pg_code_class(const char *code)
{
    if (strncmp(code, "23505", 5) == 0) {
        return DB_E_UNIQUE;
    }
    if (strncmp(code, "23503", 5) == 0) {
        return DB_E_FOREIGN;
    }
    if (strncmp(code, "23", 2) == 0) {
        return DB_E_CONSTRAINT;
    }
    /* serialization failure, deadlock, lock_timeout */
    if (strncmp(code, "40001", 5) == 0 || strncmp(code, "40P01", 5) == 0 ||
        strncmp(code, "55P03", 5) == 0) {
        return DB_E_BUSY;
    }
    if (pg_code_config(code)) {
        return DB_E_CONFIG;
    }
    /* connection exceptions; insufficient resources (disk full, out of memory, too many
     * connections); admin shutdown, crash shutdown, cannot connect now, idle session timeout;
     * a read-only server (a standby after a failover) */
    if (strncmp(code, "08", 2) == 0 || strncmp(code, "53", 2) == 0 ||
        strncmp(code, "57P01", 5) == 0 || strncmp(code, "57P02", 5) == 0 ||
        strncmp(code, "57P03", 5) == 0 || strncmp(code, "57P05", 5) == 0 ||
        strncmp(code, "25006", 5) == 0) {
        return DB_E_UNAVAILABLE;
    }
    return DB_E_OTHER;
}

/* What a refused login is, by SQLSTATE (for the message). */
const char *pg_config_hint(const char *code)
{
    if (strncmp(code, "3D000", 5) == 0) {
        return "the database named in the URL does not exist";
    }
    if (strncmp(code, "57P04", 5) == 0) {
        return "the database was dropped";
    }
    if (strncmp(code, "28P01", 5) == 0) {
        return "the password is refused (the URL, ~/.pgpass or PGPASSWORD)";
    }
    if (strncmp(code, "42501", 5) == 0) {
        return "the role may not connect to the database (GRANT CONNECT)";
    }
    return "the role does not exist, may not log in, or pg_hba.conf has no entry for it";
}

/* libpq's message without its LOCATION lines (verbose errors) and trailing newlines. */
void pg_msg_clean(const char *m, char *out, size_t cap)
{
    size_t n = 0;
    while (*m && n + 1 < cap) {
        const char *eol = strchr(m, '\n');
        size_t len = eol ? (size_t)(eol - m) + 1 : strlen(m);
        if (strncmp(m, "LOCATION:", 9) != 0) {
            size_t k = len < cap - 1 - n ? len : cap - 1 - n;
            memcpy(out + n, m, k);
            n += k;
        }
        m += len;
    }
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' ')) {
        n--;
    }
    out[n] = 0;
}

/* The SQLSTATE of a refused login, from a message built with verbose errors ("FATAL:  28P01:
 * password authentication failed ..."): a configuration one if any attempt (host) got one,
 * else the first. code[0] 0: none (the server was not reached). */
void pg_login_code(const char *m, char code[6])
{
    code[0] = 0;
    for (const char *p = strstr(m, ":  "); p; p = strstr(p + 1, ":  ")) {
        const char *c = p + 3;
        int ok = 1;
        for (int i = 0; i < 5 && ok; i++) {
            ok = (c[i] >= '0' && c[i] <= '9') || (c[i] >= 'A' && c[i] <= 'Z');
        }
        if (!ok || c[5] != ':') {
            continue;
        }
        if (!code[0] || pg_code_config(c) || strncmp(c, "42501", 5) == 0) {
            memcpy(code, c, 5);
            code[5] = 0;
        }
        if (pg_code_config(code) || strncmp(code, "42501", 5) == 0) {
            return;
        }
    }
}
