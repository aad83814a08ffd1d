/* keyline-ca config check: the configuration every keyline program would read, checked. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyline-ca.h"
#include "kl_secret.h"

/* A secret source as a spec: env:VAR, file:PATH or prompt. Anything else may be the secret
 * itself typed where its source belongs, so it is neither printed nor repeated in the error. */
static kl_rc cmd_config_secret_spec(const kl_conf *conf, const char *section, const char *key,
                                    const char *spec)
{
    int ok = strcmp(spec, "prompt") == 0 || (strncmp(spec, "file:", 5) == 0 && spec[5]);
    if (strncmp(spec, "env:", 4) == 0 && spec[4]) {
        ok = 1;
        for (const char *p = spec + 4; *p; p++) {
            ok &= isalnum((unsigned char)*p) || *p == '_';
        }
    }
    if (!ok) {
        return kl_fail(KL_EUSAGE,
                       "%s:%d: [%s] %s is not a source (env:VARIABLE, file:PATH or prompt); its "
                       "value is not shown",
                       kl_conf_file(conf), kl_conf_line(conf, section, key), section, key);
    }
    return KL_OK;
}

/* Values as read, printable: a control byte becomes '?'. */
static void cmd_config_put(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        putchar(ch < 0x20 || ch == 0x7f ? '?' : ch);
    }
}

static void cmd_config_key(const kl_conf *conf, const char *section, const kl_conf_key *k)
{
    const char *v = kl_conf_get(conf, section, k->key);
    if (!v) {
        if (k->flags & KL_CONF_K_OBSOLETE) {
            return;
        }
        char *tdir = NULL;
        const char *dflt = k->dflt;
        if (!dflt && strcmp(section, "ca") == 0 && strcmp(k->key, "templates") == 0) {
            dflt = tdir = ca_templates_dir(conf); /* follows the install prefix */
        }
        if (dflt) {
            printf("%s = ", k->key);
            cmd_config_put(dflt);
            printf(" ; default\n");
        } else {
            printf("; %s: not set%s%s%s\n", k->key, k->note ? " (" : "", k->note ? k->note : "",
                   k->note ? ")" : "");
        }
        free(tdir);
        return;
    }
    printf("%s = ", k->key);
    char *shown = strcmp(section, "store") == 0 ? store_dsn_redact(v) : NULL;
    cmd_config_put(shown ? shown : v);
    int redacted = shown && strcmp(shown, v) != 0;
    free(shown);
    if (redacted) {
        printf(" ; its password is not shown\n");
    } else if (k->flags & KL_CONF_K_OBSOLETE) {
        printf(" ; obsolete: ignored\n");
    } else if (k->flags & KL_CONF_K_SECRET) {
        printf(" ; the source of the PIN, never the PIN\n");
    } else if (!*v) {
        printf(" ; empty%s%s\n", k->dflt ? ": the default applies, " : "", k->dflt ? k->dflt : "");
    } else if ((k->flags & KL_CONF_K_PATH) && v[0] != '/') {
        /* relative to the configuration's folder; a URI (pkcs11:, sqlite:) is taken as is */
        char *full = kl_conf_resolve(conf, v);
        char *dir = realpath(kl_conf_dir(conf), NULL);
        if (full && dir && strcmp(full, v) != 0) {
            printf(" ; %s/", strcmp(dir, "/") == 0 ? "" : dir);
            cmd_config_put(v);
        }
        putchar('\n');
        free(full);
        free(dir);
    } else {
        putchar('\n');
    }
}

static void cmd_config_section(const kl_conf *conf, const char *section, const kl_conf_key *t,
                               size_t n)
{
    printf("\n[");
    cmd_config_put(section);
    printf("]\n");
    for (size_t i = 0; i < n; i++) {
        cmd_config_key(conf, section, &t[i]);
    }
}

static kl_rc cmd_config_check(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    kl_secret pin;
    memset(&pin, 0, sizeof pin);
    ENSURE(argc == 1, KL_EUSAGE, "config check: unexpected argument '%s'", argv[argc > 1]);
    TRY(cli_conf(c)); /* every section and key known, or file:line of the first that is not */
    const kl_conf *conf = c->conf;
    size_t n = 0;
    const kl_conf_key *t = kl_conf_keys(&n);

    /* the secret sources: well-formed; keyline-ca's own PIN readable (read and wiped now, as
     * any command that signs would: a missing or unreadable source is the PIN error) */
    for (size_t i = 0; i < n; i++) {
        if (!(t[i].flags & KL_CONF_K_SECRET)) {
            continue;
        }
        for (size_t s = 0;; s++) {
            const char *sec = kl_conf_section(conf, s);
            if (!sec) {
                break;
            }
            const char *spec = kl_conf_get(conf, sec, t[i].key);
            if (spec && kl_conf_key_find(sec, t[i].key) == &t[i]) {
                TRY(cmd_config_secret_spec(conf, sec, t[i].key, spec));
            }
        }
    }
    /* [store], where set (a front end's host has none): one of path and url, a url with its
     * scheme */
    if (kl_conf_get(conf, "store", "path") || kl_conf_get(conf, "store", "url")) {
        char *dsn = NULL;
        TRY(store_conf_dsn(conf, &dsn));
        free(dsn);
    }
    const char *pin_spec = kl_conf_get(conf, "hsm", "pin");
    if (pin_spec && strcmp(pin_spec, "prompt") != 0) {
        TRY(kl_secret_read(&pin, pin_spec, kl_conf_dir(conf), "token PIN"));
        kl_secret_free(&pin);
    }

    printf("; keyline-ca config check: %s\n"
           "; every section and key as read, else its default (keyline.conf(5))\n",
           kl_conf_file(conf));
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(t[j].section, t[i].section) == 0) {
            j++;
        }
        const char *star = strstr(t[i].section, " *");
        if (!star) {
            cmd_config_section(conf, t[i].section, t + i, j - i);
        } else {
            /* [est.label NAME] and the like: each one the file has */
            size_t pl = (size_t)(star - t[i].section);
            for (size_t s = 0;; s++) {
                const char *sec = kl_conf_section(conf, s);
                if (!sec) {
                    break;
                }
                if (strncmp(sec, t[i].section, pl) == 0 && sec[pl] == ' ' &&
                    kl_conf_section_known(sec)) {
                    cmd_config_section(conf, sec, t + i, j - i);
                }
            }
        }
        i = j;
    }
out:
    kl_secret_free(&pin);
    return rc;
}

static const cli_cmd cmd_config_table[] = {
    {"check", cmd_config_check, "",
     "check the configuration and print it, defaults filled in (PIN source shown, never the PIN)"},
    {NULL, NULL, NULL, NULL},
};

kl_rc cmd_config(cli *c, int argc, char **argv)
{
    return cli_dispatch(c, cmd_config_table, "config", argc - 1, argv + 1);
}
