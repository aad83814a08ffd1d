/* keyline: template files (templates/<name>.tmpl), parsed with libinih.
 *
 * The grammar is strict: unknown sections and keys, repeated keys, bad values and missing
 * required keys are errors "FILE:LINE: message". inih does not tell the handler which line it
 * is on, so the file is fed to ini_parse_stream() through a reader that counts lines (and also
 * sees section headers, which inih reports to nobody when a section has no keys).
 * docs/templates.md is the reference for every key. */
#include "tpl.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm.h"
#include "kl_file.h"
#include "matter.h"
#include "tpl_internal.h"

#define TPL_FILE_CAP (64 * 1024)

typedef enum {
    SEC_NONE = 0,
    SEC_TEMPLATE,
    SEC_SUBJECT,
    SEC_EXTENSIONS,
    SEC_CSR,
    SEC__COUNT
} tpl_sec;

static const char *const tpl_sec_names[SEC__COUNT] = {"", "template", "subject", "extensions",
                                                      "csr"};

typedef struct tpl_parse tpl_parse;
typedef int (*tpl_setter)(tpl_parse *p, const char *v);

typedef struct {
    tpl_sec sec;
    const char *key;
    tpl_setter set;
    int required;
} tpl_key;

struct tpl_parse {
    tpl *t;
    const char *file;
    const char *text;
    size_t pos, len;
    int line;           /* line last handed to inih */
    tpl_sec reader_sec; /* section the reader last saw */
    int sec_line[SEC__COUNT];
    int key_line[32];   /* per tpl_keys[] entry: line where set, 0 = unset */
    void *target;       /* list being filled by the current list setter */
    unsigned san_kinds; /* scratch for set_san */
    int err_line;       /* first error; 0 = none */
    char err[400];
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int tpl_perr(tpl_parse *p, const char *fmt, ...) KL_PRINTF(2, 3);
static int tpl_perr(tpl_parse *p, const char *fmt, ...)
{
    if (p->err_line == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, sizeof p->err, fmt, ap);
        va_end(ap);
        p->err_line = p->line > 0 ? p->line : 1;
    }
    return -1;
}

/* Split a list value on spaces and commas. Calls fn for each word; stops at the first error. */
static int tpl_each_word(tpl_parse *p, const char *v, int (*fn)(tpl_parse *, const char *))
{
    char w[80];
    const char *s = v;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == ',') {
            s++;
        }
        if (!*s) {
            return 0;
        }
        size_t n = strcspn(s, " \t,");
        if (n >= sizeof w) {
            return tpl_perr(p, "list item '%.20s...' is too long", s);
        }
        memcpy(w, s, n);
        w[n] = 0;
        if (fn(p, w) != 0) {
            return -1;
        }
        s += n;
    }
}

static int tpl_is_none(const char *v)
{
    return strcmp(v, "none") == 0 || v[0] == 0;
}

static int tpl_yesno(tpl_parse *p, const char *v, int *out)
{
    if (strcmp(v, "yes") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(v, "no") == 0) {
        *out = 0;
        return 0;
    }
    return tpl_perr(p, "expected yes or no, got '%s'", v);
}

/* Non-negative decimal with an optional one-letter unit from `units` (NUL: no unit allowed).
 * Returns the unit letter in *unit. */
static int tpl_number(tpl_parse *p, const char *v, long max, const char *units, long *out,
                      char *unit)
{
    char *end = NULL;
    if (!isdigit((unsigned char)v[0])) {
        return tpl_perr(p, "expected a number, got '%s'", v);
    }
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || n > max) {
        return tpl_perr(p, "'%s' is out of range (at most %ld)", v, max);
    }
    *unit = 0;
    if (*end && units && end[1] == 0 && strchr(units, *end)) {
        *unit = *end;
        end++;
    }
    if (*end) {
        return tpl_perr(p, "'%s' is not a number%s%s", v, units ? " with a unit from " : "",
                        units ? units : "");
    }
    *out = n;
    return 0;
}

/* ---- name tables -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int type;
} tpl_key_type_names[] = {
    {"ec-p256", HSM_KEY_EC_P256}, {"ec-p384", HSM_KEY_EC_P384},   {"rsa-3072", HSM_KEY_RSA_3072},
    {"ed25519", HSM_KEY_ED25519}, {"rsa-2048", HSM_KEY_RSA_2048}, {"rsa-4096", HSM_KEY_RSA_4096},
};

/* Subject attributes a template may name, with the OpenSSL NID. */
static const struct {
    const char *name;
    int nid;
} tpl_attr_names[] = {
    {"CN", NID_commonName},
    {"O", NID_organizationName},
    {"OU", NID_organizationalUnitName},
    {"C", NID_countryName},
    {"L", NID_localityName},
    {"ST", NID_stateOrProvinceName},
    {"serialNumber", NID_serialNumber},
    {"DC", NID_domainComponent},
    {"UID", NID_userId},
};

static const struct {
    const char *name;
    uint32_t bit;
} tpl_ku_names[] = {
    {"digitalSignature", X509v3_KU_DIGITAL_SIGNATURE},
    {"nonRepudiation", X509v3_KU_NON_REPUDIATION},
    {"contentCommitment", X509v3_KU_NON_REPUDIATION},
    {"keyEncipherment", X509v3_KU_KEY_ENCIPHERMENT},
    {"dataEncipherment", X509v3_KU_DATA_ENCIPHERMENT},
    {"keyAgreement", X509v3_KU_KEY_AGREEMENT},
    {"keyCertSign", X509v3_KU_KEY_CERT_SIGN},
    {"cRLSign", X509v3_KU_CRL_SIGN},
    {"encipherOnly", X509v3_KU_ENCIPHER_ONLY},
    {"decipherOnly", X509v3_KU_DECIPHER_ONLY},
};

static const struct {
    const char *name;
    int nid;
} tpl_eku_names[] = {
    {"serverAuth", NID_server_auth},  {"clientAuth", NID_client_auth},
    {"codeSigning", NID_code_sign},   {"emailProtection", NID_email_protect},
    {"timeStamping", NID_time_stamp}, {"OCSPSigning", NID_OCSP_sign},
};

static const struct {
    const char *name;
    unsigned bit;
} tpl_san_names[] = {
    {"dns", TPL_SAN_DNS},     {"ip", TPL_SAN_IP},   {"uri", TPL_SAN_URI},
    {"email", TPL_SAN_EMAIL}, {"hmn", TPL_SAN_HMN},
};

#define N_(a) (sizeof(a) / sizeof((a)[0]))

static int tpl_nid_list_add(tpl_parse *p, int *list, size_t cap, int nid, const char *what,
                            const char *name)
{
    size_t i = 0;
    while (i < cap && list[i] != 0) {
        if (list[i] == nid) {
            return tpl_perr(p, "%s '%s' listed twice", what, name);
        }
        i++;
    }
    if (i + 1 >= cap) {
        return tpl_perr(p, "too many %ss (at most %zu)", what, cap - 1);
    }
    list[i] = nid;
    list[i + 1] = 0;
    return 0;
}

/* ---- setters, one per key ----------------------------------------------------------------- */

static int set_kind(tpl_parse *p, const char *v)
{
    if (strcmp(v, "ca") == 0) {
        p->t->is_ca = 1;
    } else if (strcmp(v, "end-entity") == 0) {
        p->t->is_ca = 0;
    } else {
        return tpl_perr(p, "kind must be ca or end-entity, got '%s'", v);
    }
    return 0;
}

static int add_key_type(tpl_parse *p, const char *w)
{
    for (size_t i = 0; i < N_(tpl_key_type_names); i++) {
        if (strcmp(w, tpl_key_type_names[i].name) == 0) {
            p->t->key_types |= 1u << tpl_key_type_names[i].type;
            return 0;
        }
    }
    return tpl_perr(p,
                    "unknown key type '%s' (known: ec-p256 ec-p384 rsa-2048 rsa-3072 "
                    "rsa-4096 ed25519)",
                    w);
}

static int set_key_types(tpl_parse *p, const char *v)
{
    p->t->key_types = 0;
    if (tpl_each_word(p, v, add_key_type) != 0) {
        return -1;
    }
    if (p->t->key_types == 0) {
        return tpl_perr(p, "key-types is empty");
    }
    return 0;
}

static int set_validity(tpl_parse *p, const char *v)
{
    if (strcmp(v, "forever") == 0) {
        p->t->validity_forever = 1;
        return 0;
    }
    long n = 0;
    char unit = 0;
    size_t len = strlen(v);
    if (len < 2 || v[len - 1] != 'd' || strspn(v, "0123456789") != len - 1) {
        return tpl_perr(p, "validity must be 'forever' or a number of days like 365d, got '%s'", v);
    }
    if (tpl_number(p, v, 36500, "d", &n, &unit) != 0) {
        return -1;
    }
    if (unit != 'd' || n < 1) {
        return tpl_perr(p, "validity must be 'forever' or a number of days like 365d, got '%s'", v);
    }
    p->t->validity_forever = 0;
    p->t->validity_days = (int)n;
    return 0;
}

static int set_crl_validity(tpl_parse *p, const char *v)
{
    long n = 0;
    char unit = 0;
    size_t len = strlen(v);
    if (len < 2 || v[len - 1] != 'd' || strspn(v, "0123456789") != len - 1) {
        return tpl_perr(p, "crl-validity must be a number of days like 90d, got '%s'", v);
    }
    if (tpl_number(p, v, 3650, "d", &n, &unit) != 0) {
        return -1;
    }
    if (unit != 'd' || n < 1) {
        return tpl_perr(p, "crl-validity must be 1d to 3650d, got '%s'", v);
    }
    p->t->crl_days = (int)n;
    return 0;
}

static int set_backdate(tpl_parse *p, const char *v)
{
    long n = 0;
    char unit = 0;
    if (tpl_number(p, v, 86400, "smh", &n, &unit) != 0) {
        return -1;
    }
    long secs = unit == 'h' ? n * 3600 : unit == 'm' ? n * 60 : n;
    if (unit == 0 || secs > 86400) {
        return tpl_perr(p, "backdate must be like 300s, 5m or 1h and at most 24h, got '%s'", v);
    }
    p->t->backdate_secs = (int)secs;
    return 0;
}

static int set_path_len(tpl_parse *p, const char *v)
{
    if (strcmp(v, "none") == 0) {
        p->t->path_len = -1;
        return 0;
    }
    long n = 0;
    char unit = 0;
    if (tpl_number(p, v, 16, NULL, &n, &unit) != 0) {
        return -1;
    }
    p->t->path_len = (int)n;
    return 0;
}

static int set_matter(tpl_parse *p, const char *v)
{
    int k = matter_kind_from_name(v);
    if (k < 0) {
        return tpl_perr(p, "matter must be paa, pai or dac, got '%s'", v);
    }
    p->t->matter = k;
    return 0;
}

static int set_source(tpl_parse *p, const char *v)
{
    if (strcmp(v, "csr") == 0) {
        p->t->subject_src = TPL_SUBJECT_FROM_CSR;
    } else if (strcmp(v, "request") == 0) {
        p->t->subject_src = TPL_SUBJECT_FROM_REQUEST;
    } else {
        return tpl_perr(p, "source must be csr or request, got '%s'", v);
    }
    return 0;
}

static int add_attr(tpl_parse *p, const char *w)
{
    for (size_t i = 0; i < N_(tpl_attr_names); i++) {
        if (strcmp(w, tpl_attr_names[i].name) == 0) {
            return tpl_nid_list_add(p, (int *)p->target, TPL_MAX_ATTRS, tpl_attr_names[i].nid,
                                    "subject attribute", w);
        }
    }
    if (strcmp(w, MATTER_SN_VID) == 0 || strcmp(w, MATTER_SN_PID) == 0) {
        int nid = w[7] == 'v' ? matter_nid_vid() : matter_nid_pid();
        return tpl_nid_list_add(p, (int *)p->target, TPL_MAX_ATTRS, nid, "subject attribute", w);
    }
    return tpl_perr(p,
                    "unknown subject attribute '%s' (known: CN O OU C L ST serialNumber DC UID "
                    "matter-vid matter-pid)",
                    w);
}

static int set_attrs(tpl_parse *p, const char *v, int *list)
{
    list[0] = 0;
    if (tpl_is_none(v)) {
        return 0;
    }
    p->target = list;
    return tpl_each_word(p, v, add_attr);
}

static int set_required(tpl_parse *p, const char *v)
{
    return set_attrs(p, v, p->t->subject_required);
}

static int set_allowed(tpl_parse *p, const char *v)
{
    return set_attrs(p, v, p->t->subject_allowed);
}

static int set_serial_number(tpl_parse *p, const char *v)
{
    if (strcmp(v, "device-id") == 0) {
        p->t->serial_number_from_device = 1;
    } else if (strcmp(v, "csr") == 0) {
        p->t->serial_number_from_device = 0;
    } else {
        return tpl_perr(p, "serial-number must be device-id or csr, got '%s'", v);
    }
    return 0;
}

static int add_ku(tpl_parse *p, const char *w)
{
    for (size_t i = 0; i < N_(tpl_ku_names); i++) {
        if (strcmp(w, tpl_ku_names[i].name) == 0) {
            *(uint32_t *)p->target |= tpl_ku_names[i].bit;
            return 0;
        }
    }
    return tpl_perr(p,
                    "unknown key usage '%s' (known: digitalSignature nonRepudiation "
                    "keyEncipherment dataEncipherment keyAgreement keyCertSign cRLSign "
                    "encipherOnly decipherOnly)",
                    w);
}

static int set_ku_into(tpl_parse *p, const char *v, uint32_t *target)
{
    *target = 0;
    if (tpl_is_none(v)) {
        return 0;
    }
    p->target = target;
    return tpl_each_word(p, v, add_ku);
}

static int set_key_usage(tpl_parse *p, const char *v)
{
    if (set_ku_into(p, v, &p->t->key_usage) != 0) {
        return -1;
    }
    if (p->t->key_usage == 0) {
        return tpl_perr(p, "key-usage must name at least one usage");
    }
    return 0;
}

static int set_key_usage_rsa(tpl_parse *p, const char *v)
{
    return set_ku_into(p, v, &p->t->key_usage_rsa);
}

static int set_key_usage_critical(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->key_usage_critical);
}

static int add_eku(tpl_parse *p, const char *w)
{
    for (size_t i = 0; i < N_(tpl_eku_names); i++) {
        if (strcmp(w, tpl_eku_names[i].name) == 0) {
            return tpl_nid_list_add(p, p->t->eku, N_(p->t->eku), tpl_eku_names[i].nid,
                                    "extended key usage", w);
        }
    }
    return tpl_perr(p,
                    "unknown extended key usage '%s' (known: serverAuth clientAuth "
                    "codeSigning emailProtection timeStamping OCSPSigning)",
                    w);
}

static int set_eku(tpl_parse *p, const char *v)
{
    p->t->eku[0] = 0;
    if (tpl_is_none(v)) {
        return 0;
    }
    return tpl_each_word(p, v, add_eku);
}

static int add_san(tpl_parse *p, const char *w)
{
    for (size_t i = 0; i < N_(tpl_san_names); i++) {
        if (strcmp(w, tpl_san_names[i].name) == 0) {
            *(unsigned *)p->target |= tpl_san_names[i].bit;
            return 0;
        }
    }
    return tpl_perr(p, "unknown subjectAltName kind '%s' (known: dns ip uri email hmn)", w);
}

static int set_san(tpl_parse *p, const char *v)
{
    p->san_kinds = 0;
    p->target = &p->san_kinds;
    if (!tpl_is_none(v) && tpl_each_word(p, v, add_san) != 0) {
        return -1;
    }
    unsigned kinds = p->san_kinds;
    p->t->san_hmn = (kinds & TPL_SAN_HMN) != 0;
    p->t->san_from_csr = kinds & ~TPL_SAN_HMN;
    return 0;
}

static int set_san_required(tpl_parse *p, const char *v)
{
    p->t->san_required = 0;
    p->target = &p->t->san_required;
    if (tpl_is_none(v)) {
        return 0;
    }
    return tpl_each_word(p, v, add_san);
}

static int set_dns_wildcards(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->san_dns_wildcard);
}

static int set_hmn_type(tpl_parse *p, const char *v)
{
    /* dotted decimal only: a name would depend on OpenSSL's table */
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof p->t->hmn_type_oid || strspn(v, "0123456789.") != n ||
        strstr(v, "..") || v[n - 1] == '.' || strchr(v, '.') == NULL) {
        return tpl_perr(p, "hmn-type must be a dotted OID like 1.3.6.1.4.1.32473.1, got '%s'", v);
    }
    ASN1_OBJECT *o = OBJ_txt2obj(v, 1);
    if (!o) {
        return tpl_perr(p, "hmn-type '%s' is not a valid OID", v);
    }
    ASN1_OBJECT_free(o);
    memcpy(p->t->hmn_type_oid, v, n + 1);
    return 0;
}

static int set_crl_dp(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->crl_dp);
}

static int set_ocsp(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->aia_ocsp);
}

static int set_ca_issuers(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->aia_ca_issuers);
}

static int set_ocsp_nocheck(tpl_parse *p, const char *v)
{
    return tpl_yesno(p, v, &p->t->ocsp_nocheck);
}

static int set_max_size(tpl_parse *p, const char *v)
{
    long n = 0;
    char unit = 0;
    if (tpl_number(p, v, 65536, NULL, &n, &unit) != 0) {
        return -1;
    }
    if (n < 256) {
        return tpl_perr(p, "max-size must be between 256 and 65536 bytes, got '%s'", v);
    }
    p->t->max_csr_bytes = (int)n;
    return 0;
}

static int add_ignored_ext(tpl_parse *p, const char *w)
{
    int nid = OBJ_txt2nid(w);
    if (nid == NID_undef) {
        return tpl_perr(p,
                        "unknown extension '%s' (use OpenSSL's name, like "
                        "subjectKeyIdentifier)",
                        w);
    }
    /* These four are always checked against the template, never waved through. */
    if (nid == NID_subject_alt_name || nid == NID_basic_constraints || nid == NID_key_usage ||
        nid == NID_ext_key_usage) {
        return tpl_perr(p, "extension '%s' is always checked and cannot be ignored", w);
    }
    return tpl_nid_list_add(p, p->t->csr_ext_ignored, N_(p->t->csr_ext_ignored), nid,
                            "ignored extension", w);
}

static int set_ignore_extensions(tpl_parse *p, const char *v)
{
    p->t->csr_ext_ignored[0] = 0;
    if (tpl_is_none(v)) {
        return 0;
    }
    return tpl_each_word(p, v, add_ignored_ext);
}

static const tpl_key tpl_keys[] = {
    {SEC_TEMPLATE, "kind", set_kind, 1},
    {SEC_TEMPLATE, "key-types", set_key_types, 1},
    {SEC_TEMPLATE, "validity", set_validity, 1},
    {SEC_TEMPLATE, "backdate", set_backdate, 0},
    {SEC_TEMPLATE, "crl-validity", set_crl_validity, 0},
    {SEC_TEMPLATE, "path-len", set_path_len, 0},
    {SEC_TEMPLATE, "matter", set_matter, 0},
    {SEC_SUBJECT, "source", set_source, 1},
    {SEC_SUBJECT, "allowed", set_allowed, 1},
    {SEC_SUBJECT, "required", set_required, 0},
    {SEC_SUBJECT, "serial-number", set_serial_number, 0},
    {SEC_EXTENSIONS, "key-usage", set_key_usage, 1},
    {SEC_EXTENSIONS, "key-usage-critical", set_key_usage_critical, 0},
    {SEC_EXTENSIONS, "key-usage-rsa", set_key_usage_rsa, 0},
    {SEC_EXTENSIONS, "extended-key-usage", set_eku, 0},
    {SEC_EXTENSIONS, "san", set_san, 0},
    {SEC_EXTENSIONS, "san-required", set_san_required, 0},
    {SEC_EXTENSIONS, "dns-wildcards", set_dns_wildcards, 0},
    {SEC_EXTENSIONS, "hmn-type", set_hmn_type, 0},
    {SEC_EXTENSIONS, "crl-distribution-point", set_crl_dp, 0},
    {SEC_EXTENSIONS, "ocsp", set_ocsp, 0},
    {SEC_EXTENSIONS, "ca-issuers", set_ca_issuers, 0},
    {SEC_EXTENSIONS, "ocsp-nocheck", set_ocsp_nocheck, 0},
    {SEC_CSR, "max-size", set_max_size, 0},
    {SEC_CSR, "ignore-extensions", set_ignore_extensions, 0},
};

_Static_assert(N_(tpl_keys) <= 32, "tpl_parse.key_line too small");

static int tpl_key_index(tpl_sec sec, const char *key)
{
    for (size_t i = 0; i < N_(tpl_keys); i++) {
        if (tpl_keys[i].sec == sec && strcmp(tpl_keys[i].key, key) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- inih glue ---------------------------------------------------------------------------- */

static tpl_sec tpl_sec_find(const char *name)
{
    for (int i = 1; i < SEC__COUNT; i++) {
        if (strcmp(name, tpl_sec_names[i]) == 0) {
            return (tpl_sec)i;
        }
    }
    return SEC_NONE;
}

/* Reader for ini_parse_stream: one physical line per call, counted. Section headers are
 * checked here because inih (built without INI_CALL_HANDLER_ON_NEW_SECTION) reports an empty
 * section to nobody. */
static char *tpl_reader(char *str, int num, void *stream)
{
    tpl_parse *p = stream;
    if (p->pos >= p->len || num < 2) {
        return NULL;
    }
    const char *s = p->text + p->pos;
    const char *nl = memchr(s, '\n', p->len - p->pos);
    size_t n = nl ? (size_t)(nl - s) + 1 : p->len - p->pos;
    p->pos += n;
    p->line++;
    if (n > (size_t)num - 1) {
        tpl_perr(p, "line too long (at most %d characters)", num - 2);
        n = (size_t)num - 1;
    }
    memcpy(str, s, n);
    str[n] = 0;

    const char *h = str;
    while (*h == ' ' || *h == '\t') {
        h++;
    }
    if (*h == '[') {
        const char *e = strchr(h, ']');
        if (e) {
            char name[32];
            size_t k = (size_t)(e - h - 1);
            if (k >= sizeof name) {
                k = sizeof name - 1;
            }
            memcpy(name, h + 1, k);
            name[k] = 0;
            tpl_sec sec = tpl_sec_find(name);
            if (sec == SEC_NONE) {
                tpl_perr(p,
                         "unknown section [%s] (known: [template] [subject] [extensions] "
                         "[csr])",
                         name);
            } else if (p->sec_line[sec] != 0) {
                tpl_perr(p, "section [%s] given twice (first at line %d)", name, p->sec_line[sec]);
            } else {
                p->sec_line[sec] = p->line;
            }
            p->reader_sec = sec;
        }
    }
    return str;
}

static int tpl_handler(void *user, const char *section, const char *name, const char *value)
{
    tpl_parse *p = user;
    if (p->err_line != 0) {
        return 1; /* keep the first error only */
    }
    if (section[0] == 0) {
        tpl_perr(p, "key '%s' outside any section", name);
        return 1;
    }
    tpl_sec sec = tpl_sec_find(section);
    if (sec == SEC_NONE) {
        tpl_perr(p, "unknown section [%s]", section);
        return 1;
    }
    int k = tpl_key_index(sec, name);
    if (k < 0) {
        tpl_perr(p, "unknown key '%s' in [%s]", name, section);
        return 1;
    }
    if (p->key_line[k] != 0) {
        tpl_perr(p,
                 "key '%s' given twice (first at line %d; continuation lines are not "
                 "supported)",
                 name, p->key_line[k]);
        return 1;
    }
    p->key_line[k] = p->line;
    (void)tpl_keys[k].set(p, value);
    return 1;
}

/* Report a cross-key inconsistency at the line of key `key` (or of its section). */
static int tpl_cross_err(tpl_parse *p, const char *key, const char *fmt, ...) KL_PRINTF(3, 4);
static int tpl_cross_err(tpl_parse *p, const char *key, const char *fmt, ...)
{
    if (p->err_line != 0) {
        return -1;
    }
    int line = 0;
    for (size_t i = 0; i < N_(tpl_keys); i++) {
        if (strcmp(tpl_keys[i].key, key) == 0) {
            line = p->key_line[i] ? p->key_line[i] : p->sec_line[tpl_keys[i].sec];
        }
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->err_line = line > 0 ? line : (p->line > 0 ? p->line : 1);
    return -1;
}

static int tpl_check(tpl_parse *p)
{
    tpl *t = p->t;
    for (size_t i = 0; i < N_(tpl_keys); i++) {
        if (tpl_keys[i].required && p->key_line[i] == 0) {
            const char *s = tpl_sec_names[tpl_keys[i].sec];
            if (p->sec_line[tpl_keys[i].sec] == 0) {
                return tpl_cross_err(p, tpl_keys[i].key, "missing section [%s] (needs '%s')", s,
                                     tpl_keys[i].key);
            }
            return tpl_cross_err(p, tpl_keys[i].key, "[%s] has no '%s'", s, tpl_keys[i].key);
        }
    }
    const uint32_t ca_bits = X509v3_KU_KEY_CERT_SIGN;
    if (t->is_ca && !(t->key_usage & ca_bits)) {
        return tpl_cross_err(p, "key-usage", "a ca template needs keyCertSign in key-usage");
    }
    if (!t->is_ca && ((t->key_usage | t->key_usage_rsa) & (ca_bits | X509v3_KU_CRL_SIGN))) {
        return tpl_cross_err(p, "key-usage",
                             "an end-entity template must not have keyCertSign or cRLSign");
    }
    if (!t->is_ca && t->path_len >= 0) {
        return tpl_cross_err(p, "path-len", "path-len is only for kind = ca");
    }
    if (!t->is_ca && t->crl_days > 0) {
        return tpl_cross_err(p, "crl-validity", "crl-validity is only for kind = ca");
    }
    for (const int *r = t->subject_required; *r; r++) {
        if (!tpl_nid_in(t->subject_allowed, *r)) {
            return tpl_cross_err(p, "required", "required attribute %s is not in allowed",
                                 OBJ_nid2sn(*r));
        }
    }
    if (t->serial_number_from_device && !tpl_nid_in(t->subject_allowed, NID_serialNumber)) {
        return tpl_cross_err(p, "serial-number",
                             "serial-number = device-id needs serialNumber in allowed");
    }
    if (t->san_hmn && !t->hmn_type_oid[0]) {
        return tpl_cross_err(p, "san", "san hmn needs hmn-type (the hwType OID)");
    }
    if (!t->san_hmn && t->hmn_type_oid[0]) {
        return tpl_cross_err(p, "hmn-type", "hmn-type without hmn in san");
    }
    if (t->san_hmn && !t->serial_number_from_device) {
        return tpl_cross_err(p, "san", "san hmn needs serial-number = device-id");
    }
    if (t->san_required & ~(t->san_from_csr | (t->san_hmn ? TPL_SAN_HMN : 0))) {
        return tpl_cross_err(p, "san-required", "san-required names a kind not listed in san");
    }
    if (t->san_dns_wildcard && !(t->san_from_csr & TPL_SAN_DNS)) {
        return tpl_cross_err(p, "dns-wildcards", "dns-wildcards without dns in san");
    }
    if (t->ocsp_nocheck && !tpl_nid_in(t->eku, NID_OCSP_sign)) {
        return tpl_cross_err(p, "ocsp-nocheck",
                             "ocsp-nocheck needs OCSPSigning in "
                             "extended-key-usage");
    }
    if (t->is_ca && t->eku[0]) {
        /* Not forbidden by RFC 5280, but an EKU in a CA certificate constrains its whole
         * subtree in some verifiers (OpenSSL, Windows) and surprises people. */
        return tpl_cross_err(p, "extended-key-usage",
                             "extended-key-usage on a ca template is not supported");
    }
    if (t->matter) {
        const char *key = NULL;
        const char *why = matter_tpl_problem(t, &key);
        if (why) {
            return tpl_cross_err(p, key, "%s", why);
        }
    }
    return 0;
}

static int tpl_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n < sizeof(((tpl *)0)->name) && name[0] != '-' &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

kl_rc tpl_load(const char *dir, const char *name, tpl **out)
{
    kl_rc rc = KL_OK;
    uint8_t *text = NULL;
    size_t len = 0;
    tpl *t = NULL;
    tpl_parse p;
    memset(&p, 0, sizeof p);
    *out = NULL;

    ENSURE(dir && name, KL_EUSAGE, "tpl_load: no directory or name");
    ENSURE(tpl_name_ok(name), KL_EUSAGE,
           "bad template name '%s' (lowercase letters, digits and '-', at most 63)", name);
    t = calloc(1, sizeof *t);
    ENSURE(t, KL_EINTERNAL, "out of memory");
    snprintf(t->name, sizeof t->name, "%s", name);
    int n = snprintf(t->path, sizeof t->path, "%s/%s.tmpl", dir, name);
    ENSURE(n > 0 && (size_t)n < sizeof t->path, KL_EUSAGE, "template path too long");

    rc = kl_file_read(t->path, TPL_FILE_CAP, &text, &len);
    if (rc == KL_ENOTFOUND) {
        rc = kl_fail(KL_ENOTFOUND, "no template %s in %s", name, dir);
        goto out;
    }
    TRY(rc);

    /* defaults */
    t->path_len = -1;
    t->key_usage_critical = 1;
    t->max_csr_bytes = 16384;
    t->subject_src = TPL_SUBJECT_FROM_CSR;

    p.t = t;
    p.file = t->path;
    p.text = (const char *)text;
    p.len = len;
    const uint8_t *nul = memchr(text, 0, len);
    if (nul) {
        p.line = 1;
        for (const uint8_t *c = text; c < nul; c++) {
            p.line += *c == '\n';
        }
        tpl_perr(&p, "NUL byte in template");
    } else {
        int r = ini_parse_stream(tpl_reader, &p, tpl_handler, &p);
        if (r < 0) {
            ENSURE(0, KL_EINTERNAL, "%s: cannot parse (out of memory)", t->path);
        }
        if (r > 0 && p.err_line == 0) {
            p.line = r;
            tpl_perr(&p, "syntax error (expected '[section]' or 'key = value')");
        }
        if (p.err_line == 0) {
            (void)tpl_check(&p);
        }
    }
    ENSURE(p.err_line == 0, KL_EINPUT, "%s:%d: %s", t->path, p.err_line, p.err);
    *out = t;
    t = NULL;
out:
    free(text);
    free(t);
    return rc;
}

void tpl_free(tpl *t)
{
    free(t);
}
