/* keyline-ca sign-image: a firmware image signed in the HSM (MCUboot format or detached CMS). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_backend.h"
#include "ca_image.h"
#include "keyline-ca.h"
#include "kl_file.h"

typedef struct {
    const char *key, *in, *out, *version, *format, *counter, *header_size, *align, *in_sha256;
    int pad_header;
    ca_image_req req;
} cmd_image_args;

static kl_rc cmd_image_parse(int argc, char **argv, cmd_image_args *a)
{
    kl_rc rc = KL_OK;
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                         {"in", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"version", required_argument, NULL, 'v'},
                                         {"security-counter", required_argument, NULL, 's'},
                                         {"header-size", required_argument, NULL, 'H'},
                                         {"align", required_argument, NULL, 'a'},
                                         {"pad-header", no_argument, NULL, 'P'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"in-sha256", required_argument, NULL, 'S'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 0;
    while ((ch = cli_getopt(argc, argv, "k:i:o:v:s:H:a:f:", opts)) != -1) {
        switch (ch) {
        case 'k': a->key = optarg; break;
        case 'i': a->in = optarg; break;
        case 'o': a->out = optarg; break;
        case 'v': a->version = optarg; break;
        case 's': a->counter = optarg; break;
        case 'H': a->header_size = optarg; break;
        case 'a': a->align = optarg; break;
        case 'P': a->pad_header = 1; break;
        case 'f': a->format = optarg; break;
        case 'S': a->in_sha256 = optarg; break;
        default: return kl_fail(KL_EUSAGE, "sign-image: bad option (see --help)");
        }
    }
    ENSURE(optind == argc, KL_EUSAGE, "sign-image: unexpected argument '%s'", argv[optind]);
    ENSURE(a->key && a->in && a->out && a->version, KL_EUSAGE,
           "sign-image needs --key, --in, --out and --version");
    TRY(ca_image_req_parse(&a->req, a->version, a->counter, a->header_size, a->align, a->pad_header,
                           a->format));
out:
    return rc;
}

/* [ceremony] release-keys: such a key, and a rotation of one, signs only through a ceremony
 * (docs/firmware.md). */
static kl_rc cmd_image_release_guard(cli *c, ca_ctx *ca, const char *key)
{
    kl_rc rc = cli_conf(c);
    if (rc == KL_OK && ca_image_release_key(ca, c->conf, key)) {
        rc = kl_fail(KL_EPOLICY,
                     "firmware key '%s' is a release key ([ceremony] release-keys names it or a "
                     "key of its subject, which it rotates): keyline-ca "
                     "ceremony propose sign-image --key %s ..., then officers approve, then "
                     "keyline-ca ceremony run",
                     key, key);
    }
    return rc;
}

kl_rc cmd_sign_image(cli *c, int argc, char **argv)
{
    kl_rc rc = KL_OK;
    cmd_image_args a;
    memset(&a, 0, sizeof a);
    ca_ctx *ca = NULL;
    uint8_t *in = NULL;
    size_t in_len = 0;
    ca_image_result res;
    char hex[65];
    TRY(cmd_image_parse(argc, argv, &a));
    ENSURE(strcmp(a.out, "-") != 0, KL_EUSAGE, "sign-image writes a file: --out FILE");
    TRY(cli_out_check(c, a.out)); /* before anything is signed */
    rc = kl_file_read(a.in, IMG_PAYLOAD_MAX, &in, &in_len);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "--in %s", a.in);
        goto out;
    }
    TRY(ca_image_in_check(a.in, in, in_len, a.in_sha256, hex));
    a.req.key_label = a.key;
    a.req.in = in;
    a.req.in_len = in_len;
    a.req.actor = c->actor;
    TRY(cli_open(c, 1, &ca));
    TRY(cmd_image_release_guard(c, ca, a.key));
    TRY(ca_image_sign(ca, &a.req, a.out, &res)); /* written, recorded, then put in place */
    fprintf(stderr, "signed %s with firmware key '%s' (%s): sha256 ", a.in, a.key,
            a.req.format == CA_IMAGE_CMS ? "cms" : "mcuboot");
    for (int i = 0; i < 32; i++) {
        fprintf(stderr, "%02x", res.hash[i]);
    }
    fprintf(stderr, "\n");
out:
    free(in);
    ca_close(ca);
    return rc;
}

/* keyline-ca list --images [--json]: every signing recorded in the store, oldest first. */
kl_rc cli_list_images(cli *c, int as_json)
{
    kl_rc rc = KL_OK;
    ca_ctx *ca = NULL;
    store_image *v = NULL;
    size_t n = 0;
    json_t *arr = as_json ? json_array() : NULL;
    ENSURE(!as_json || arr, KL_EINTERNAL, "out of memory");
    TRY(cli_open(c, 0, &ca));
    TRY(store_image_list(ca_store(ca), &v, &n));
    if (!as_json) {
        printf("%-5s %-20s %-14s %-7s %-16s %-10s %-64s %s\n", "ID", "SIGNED", "KEY", "FORMAT",
               "VERSION", "COUNTER", "SHA256", "BY");
    }
    for (size_t i = 0; i < n; i++) {
        char when[32], cnt[24] = "-";
        cli_time(v[i].created, when, sizeof when);
        if (v[i].security_counter >= 0) {
            snprintf(cnt, sizeof cnt, "%lld", (long long)v[i].security_counter);
        }
        if (!as_json) {
            printf("%-5lld %-20s %-14s %-7s %-16s %-10s %-64s %s\n", (long long)v[i].id, when,
                   v[i].key_label, v[i].format, v[i].version, cnt, v[i].sha256, v[i].actor);
            continue;
        }
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "id",
                              (json_int_t)v[i].id, "signed", when, "key", v[i].key_label,
                              "key_serial", v[i].key_serial, "key_hash", v[i].key_hash, "format",
                              v[i].format, "version", v[i].version, "sha256", v[i].sha256, "size",
                              (json_int_t)v[i].size, "actor", v[i].actor);
        ENSURE(o, KL_EINTERNAL, "out of memory");
        if (v[i].security_counter >= 0) {
            json_object_set_new(o, "security_counter", json_integer(v[i].security_counter));
        }
        ENSURE(json_array_append_new(arr, o) == 0, KL_EINTERNAL, "out of memory");
    }
    if (as_json) {
        char *s = json_dumps(arr, JSON_INDENT(1));
        ENSURE(s, KL_EINTERNAL, "out of memory");
        printf("%s\n", s);
        free(s);
    }
out:
    json_decref(arr);
    store_image_list_free(v, n);
    ca_close(ca);
    return rc;
}
