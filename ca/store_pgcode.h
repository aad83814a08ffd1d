/* keyline: the PostgreSQL driver's reading of server text (ca/store_pg.c): SQLSTATEs to the
 * store's error classes, and the SQLSTATE of a refused login from libpq's verbose message (libpq
 * gives no SQLSTATE for a failed connection). No libpq here: fuzz/fuzz_pgcode.c feeds it any
 * text. Every `code` is read for its first 5 characters only, which the caller guarantees. */
#ifndef KEYLINE_STORE_PGCODE_H
#define KEYLINE_STORE_PGCODE_H

#include <stddef.h>

/* A SQLSTATE that means a configuration mistake (a refused login, a missing database). */
int pg_code_config(const char *code);
/* The store error class (DB_E_*, store_db.h) of a SQLSTATE. */
int pg_code_class(const char *code);
/* What a refused login is, by SQLSTATE, for the message (a static string). */
const char *pg_config_hint(const char *code);
/* libpq's message `m` without its LOCATION lines (verbose errors) and trailing newlines and
 * spaces, cut to fit `out` (cap > 0; always terminated). */
void pg_msg_clean(const char *m, char *out, size_t cap);
/* The SQLSTATE of a refused login in a verbose message ("FATAL:  28P01:  password ..."): a
 * configuration one (or 42501) if any attempt got one, else the first; code[0] 0 when there is
 * none (the server was not reached). `m` is any NUL-terminated text. */
void pg_login_code(const char *m, char code[6]);

#endif
