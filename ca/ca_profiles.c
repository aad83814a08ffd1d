/* The profiles keyline-cad serves, named from the configuration by one set of rules for
 * keyline-cad (ca/cad/cad_cfg.c) and for keyline-ca, whose production orders name a profile
 * (ca/order.c). */
#include <stdio.h>
#include <string.h>

#include "ca.h"

/* Profiles as the configuration implied them before keyline-cad: [est] issuer/template
 * ("est"), [est.label NAME] ("est.NAME"), [station] issuer/template ("station"). */
static kl_rc ca_profiles_derived(const kl_conf *conf, ca_profile_fn fn, void *arg)
{
    kl_rc rc = KL_OK;
    const char *est_issuer = kl_conf_get(conf, "est", "issuer");
    const char *est_tpl = kl_conf_get_default(conf, "est", "template", "device-ldevid");
    if (est_issuer) {
        TRY(fn(arg, "est", est_issuer, est_tpl, "est"));
    }
    for (size_t i = 0; kl_conf_section(conf, i); i++) {
        const char *sec = kl_conf_section(conf, i);
        if (strncmp(sec, "est.label ", 10) != 0) {
            continue;
        }
        char name[CA_PROFILE_NAME_MAX + 8];
        snprintf(name, sizeof name, "est.%s", sec + 10);
        TRY(fn(arg, name, kl_conf_get_default(conf, sec, "issuer", est_issuer),
               kl_conf_get_default(conf, sec, "template", est_tpl), "est"));
    }
    const char *st_issuer = kl_conf_get(conf, "station", "issuer");
    if (st_issuer) {
        TRY(fn(arg, "station", st_issuer,
               kl_conf_get_default(conf, "station", "template", "device-idevid"), "station"));
    }
out:
    return rc;
}

kl_rc ca_conf_profiles(const kl_conf *conf, ca_profile_fn fn, void *arg)
{
    kl_rc rc = KL_OK;
    int explicit_profiles = 0;
    for (size_t i = 0; kl_conf_section(conf, i); i++) {
        const char *sec = kl_conf_section(conf, i);
        if (strncmp(sec, "profile ", 8) == 0) {
            explicit_profiles = 1;
            TRY(fn(arg, sec + 8, kl_conf_get(conf, sec, "issuer"),
                   kl_conf_get(conf, sec, "template"), kl_conf_get(conf, sec, "clients")));
        }
    }
    if (!explicit_profiles) {
        TRY(ca_profiles_derived(conf, fn, arg));
    }
out:
    return rc;
}

/* ca_conf_has_profile's callback: KL_EEXIST stops the walk when the name is found. */
static kl_rc ca_profile_match(void *arg, const char *name, const char *issuer,
                              const char *template_name, const char *clients)
{
    (void)issuer;
    (void)template_name;
    (void)clients;
    return strcmp(name, arg) == 0 ? KL_EEXIST : KL_OK;
}

int ca_conf_has_profile(const kl_conf *conf, const char *name)
{
    return ca_conf_profiles(conf, ca_profile_match, (void *)name) == KL_EEXIST;
}
