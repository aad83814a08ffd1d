/* keyline: sign-image as a ceremony (ca_image_ceremony.h). */
#include "ca_image_ceremony.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca_image.h"
#include "kl_file.h"

/* The request's options into req (the plain command's parser). */
static kl_rc ca_image_ceremony_req(const ceremony_kvs *p, ca_image_req *req)
{
    const char *pad = ceremony_kvs_get(p, "pad-header");
    if (!pad || (strcmp(pad, "yes") != 0 && strcmp(pad, "no") != 0)) {
        return kl_fail(KL_EUSAGE, "sign-image ceremony: --pad-header is yes or no");
    }
    const char *format = ceremony_kvs_get(p, "format"), *hs = ceremony_kvs_get(p, "header-size"),
               *align = ceremony_kvs_get(p, "align");
    /* a request carries the defaults (32, 1) whatever the format: for cms only others were
     * given, and those are refused as the plain command refuses them */
    if (format && strcmp(format, "cms") == 0) {
        hs = hs && strcmp(hs, "32") == 0 ? NULL : hs;
        align = align && strcmp(align, "1") == 0 ? NULL : align;
    }
    return ca_image_req_parse(req, ceremony_kvs_get(p, "version"),
                              ceremony_kvs_get(p, "security-counter"), hs, align,
                              strcmp(pad, "yes") == 0, format);
}

/* `name` as an absolute path (the ceremony may run from another folder). */
static kl_rc ca_image_ceremony_abs(ceremony_kvs *p, const char *name)
{
    const char *v = ceremony_kvs_get(p, name);
    char cwd[PATH_MAX], abs[PATH_MAX + 256];
    if (!v || v[0] == '/') {
        return KL_OK;
    }
    if (!getcwd(cwd, sizeof cwd)) {
        return kl_fail(KL_EIO, "cannot read the current folder");
    }
    int n = snprintf(abs, sizeof abs, "%s/%s", cwd, v);
    if (n < 0 || (size_t)n >= sizeof abs) {
        return kl_fail(KL_EUSAGE, "--%s %s: path too long", name, v);
    }
    return ceremony_kvs_set(p, name, abs);
}

kl_rc ca_image_ceremony_prep(ceremony_kvs *params)
{
    kl_rc rc = KL_OK;
    ca_image_req req;
    uint8_t *data = NULL;
    size_t len = 0;
    char hex[65];
    memset(&req, 0, sizeof req);
    TRY(ca_image_ceremony_req(params, &req));
    TRY(ca_image_ceremony_abs(params, "in"));
    TRY(ca_image_ceremony_abs(params, "out"));
    const char *in = ceremony_kvs_get(params, "in"), *want = ceremony_kvs_get(params, "in-sha256");
    rc = kl_file_read(in, IMG_PAYLOAD_MAX, &data, &len);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "--in %s", in);
        goto out;
    }
    TRY(ca_image_in_check(in, data, len, want, hex));
    /* what the run would refuse, refused before officers spend their approvals on it */
    if (req.format == CA_IMAGE_MCUBOOT) {
        TRY(img_input_check(&req.mcuboot, data, len));
    }
    TRY(ceremony_kvs_set(params, "in-sha256", hex));
out:
    free(data);
    return rc;
}

kl_rc ca_image_ceremony_run(ca_ctx *ca, const ceremony_req *r, const char *actor, ceremony_kvs *res)
{
    kl_rc rc = KL_OK;
    ca_image_req req;
    ca_image_result ir;
    uint8_t *data = NULL;
    size_t len = 0;
    char hex[65];
    memset(&req, 0, sizeof req);
    TRY(ca_image_ceremony_req(&r->params, &req));
    const char *in = ceremony_req_get(r, "in"), *out_path = ceremony_req_get(r, "out");
    const char *want = ceremony_req_get(r, "in-sha256");
    ENSURE(in && out_path && want, KL_EINPUT, "sign-image ceremony: in, in-sha256 or out missing");
    rc = kl_file_read(in, IMG_PAYLOAD_MAX, &data, &len);
    if (rc != KL_OK) {
        rc = kl_wrap(rc, "--in %s", in);
        goto out;
    }
    ca_image_sha256_hex(data, len, hex);
    ENSURE(strcmp(hex, want) == 0, KL_EPOLICY,
           "--in %s changed since the officers approved it (SHA-256 %s, approved %s)", in, hex,
           want);
    req.key_label = ceremony_req_get(r, "key");
    req.in = data;
    req.in_len = len;
    req.actor = actor;
    TRY(ca_image_sign(ca, &req, out_path, &ir)); /* written, recorded, then put in place */
    char khex[65], ihex[65];
    for (size_t i = 0; i < 32; i++) {
        snprintf(ihex + 2 * i, 3, "%02x", ir.hash[i]);
        snprintf(khex + 2 * i, 3, "%02x", ir.key_hash[i]);
    }
    TRY(ceremony_kvs_set(res, "sha256", ihex));
    TRY(ceremony_kvs_set(res, "key-hash", khex));
    TRY(ceremony_kvs_set(res, "key-serial", ir.key_serial));
    TRY(ceremony_kvs_set(res, "out", out_path));
out:
    free(data);
    return rc;
}
