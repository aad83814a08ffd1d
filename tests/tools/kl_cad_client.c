/* kl_cad_client: send one CA-protocol request to keyline-cad and print the answer (tests).
 *
 *   kl_cad_client [-o FILE] SOCKET OP [name=value | name=@FILE ...]
 *
 * OP: hello issue activate submit poll cacerts crl ocsp cert-status claim release abandon
 * device profile ca-chain pending inventory known revoke sweep proof-failed matter order
 * order-close. Field names as in docs/ca-protocol.md (profile, csr, auth, auth-serial, auth-user,
 * auth-cert, device-id, pending, serial, request-id, issuer, ocsp-req, cert, reason, instance,
 * fixture, lease, station, order, ...); @FILE
 * reads the value's bytes from a file (CSR, OCSP request, certificate: DER). Prints the answer's
 * string and integer fields as name=value; -o FILE writes certificates (cert, ca-cert) as PEM, a
 * CRL or OCSP response as DER. Exit status: kl_rc_exit of the answer (0 ok, 4 refused by policy,
 * ...), 1 when the daemon cannot be reached. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cac.h"
#include "kl_file.h"

typedef struct {
    const char *name;
    cap_tag tag;
    char type; /* s string, u integer, b bytes */
} tool_field;

static const tool_field fields[] = {
    {"profile", CAP_T_PROFILE, 's'},
    {"csr", CAP_T_CSR, 'b'},
    {"auth", CAP_T_AUTH, 's'},
    {"auth-serial", CAP_T_AUTH_SERIAL, 's'},
    {"auth-user", CAP_T_AUTH_USER, 's'},
    {"auth-cert", CAP_T_AUTH_CERT, 'b'},
    {"device-id", CAP_T_DEVICE_ID, 's'},
    {"pending", CAP_T_PENDING, 'u'},
    {"serial", CAP_T_SERIAL, 's'},
    {"request-id", CAP_T_REQUEST_ID, 'u'},
    {"issuer", CAP_T_ISSUER, 's'},
    {"ocsp-req", CAP_T_OCSP_REQ, 'b'},
    {"cert", CAP_T_CERT, 'b'},
    {"ca-cert", CAP_T_CA_CERT, 'b'},
    {"crl", CAP_T_CRL, 'b'},
    {"ocsp-resp", CAP_T_OCSP_RESP, 'b'},
    {"status", CAP_T_STATUS, 's'},
    {"message", CAP_T_MESSAGE, 's'},
    {"reason", CAP_T_REASON, 'u'},
    {"instance", CAP_T_INSTANCE, 's'},
    {"fixture", CAP_T_FIXTURE, 's'},
    {"lease", CAP_T_LEASE, 'u'},
    {"holder", CAP_T_HOLDER, 's'},
    {"version", CAP_T_VERSION, 'u'},
    {"role", CAP_T_ROLE, 's'},
    {"retry-after", CAP_T_RETRY_AFTER, 'u'},
    {"not-after", CAP_T_NOT_AFTER, 'u'},
    {"state", CAP_T_STATE, 's'},
    {"key-type", CAP_T_KEY_TYPE, 's'},
    {"device-cert", CAP_T_DEVICE_CERT, 'u'},
    {"count", CAP_T_COUNT, 'u'},
    {"model", CAP_T_MODEL, 's'},
    {"detail", CAP_T_DETAIL, 's'},
    {"pending-cert", CAP_T_PEND_CERT, 'b'},
    {"age", CAP_T_AGE, 'u'},
    {"matter-discriminator", CAP_T_MATTER_DISCRIMINATOR, 'u'},
    {"matter-iterations", CAP_T_MATTER_ITERATIONS, 'u'},
    {"matter-salt", CAP_T_MATTER_SALT, 'b'},
    {"matter-verifier", CAP_T_MATTER_VERIFIER, 'b'},
    {"matter-passcode", CAP_T_MATTER_PASSCODE, 'u'},
    {"station", CAP_T_STATION, 's'},
    {"order", CAP_T_ORDER, 's'},
    {"expires", CAP_T_EXPIRES, 'u'},
    {"issued", CAP_T_ISSUED, 'u'},
    {NULL, 0, 0},
};

static const tool_field *field_by_name(const char *n, size_t len)
{
    for (const tool_field *f = fields; f->name; f++) {
        if (strlen(f->name) == len && strncmp(f->name, n, len) == 0) {
            return f;
        }
    }
    return NULL;
}

static const tool_field *field_by_tag(uint8_t tag)
{
    for (const tool_field *f = fields; f->name; f++) {
        if (f->tag == tag) {
            return f;
        }
    }
    return NULL;
}

static int op_by_name(const char *n)
{
    for (int op = 1; op < CAP_OP__END; op++) {
        if (strcmp(cap_op_name((uint8_t)op), n) == 0) {
            return op;
        }
    }
    return 0;
}

static kl_rc put_arg(kl_buf *b, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const tool_field *f = eq ? field_by_name(arg, (size_t)(eq - arg)) : NULL;
    if (!f) {
        return kl_fail(KL_EUSAGE, "'%s': expected name=value with a known field name", arg);
    }
    const char *v = eq + 1;
    if (f->type == 'u') {
        return cap_put_u64(b, f->tag, strtoull(v, NULL, 0));
    }
    if (v[0] == '@') {
        uint8_t *data = NULL;
        size_t len = 0;
        kl_rc rc = kl_file_read(v + 1, 16 * 1024 * 1024, &data, &len);
        if (rc == KL_OK) {
            rc = cap_put_bytes(b, f->tag, data, len);
        }
        free(data);
        return rc;
    }
    return cap_put_str(b, f->tag, v);
}

static void write_out(FILE *out, const cap_field *f)
{
    if (f->tag == CAP_T_CERT || f->tag == CAP_T_CA_CERT || f->tag == CAP_T_PEND_CERT) {
        const unsigned char *p = f->val;
        X509 *x = d2i_X509(NULL, &p, f->len);
        if (x) {
            PEM_write_X509(out, x);
            X509_free(x);
        }
    } else {
        fwrite(f->val, 1, f->len, out);
    }
}

int main(int argc, char **argv)
{
    const char *outpath = NULL;
    int a = 1;
    if (argc > 2 && strcmp(argv[1], "-o") == 0) {
        outpath = argv[2];
        a = 3;
    }
    if (argc - a < 2) {
        fprintf(stderr, "usage: kl_cad_client [-o FILE] SOCKET OP [name=value|name=@FILE ...]\n");
        return 2;
    }
    int op = op_by_name(argv[a + 1]);
    if (!op) {
        fprintf(stderr, "kl_cad_client: unknown op '%s'\n", argv[a + 1]);
        return 2;
    }
    cac *c = NULL;
    kl_buf req;
    cac_resp resp;
    kl_buf_init(&req, CAP_REQ_MAX, 0);
    memset(&resp, 0, sizeof resp);
    kl_rc rc = cac_open(&c, argv[a], 30, NULL, 0);
    if (rc == KL_OK) {
        rc = cap_msg_begin(&req, (cap_op)op, 0);
    }
    for (int i = a + 2; rc == KL_OK && i < argc; i++) {
        rc = put_arg(&req, argv[i]);
    }
    if (rc == KL_OK) {
        rc = cap_msg_end(&req);
    }
    if (rc == KL_OK) {
        rc = cac_call(c, &req, &resp);
    }
    FILE *out = outpath ? fopen(outpath, "wb") : NULL;
    for (size_t i = 0; i < resp.msg.n; i++) {
        const cap_field *f = &resp.msg.f[i];
        const tool_field *tf = field_by_tag(f->tag);
        if (!tf) {
            continue;
        }
        if (tf->type == 's') {
            printf("%s=%.*s\n", tf->name, (int)f->len, (const char *)f->val);
        } else if (tf->type == 'u') {
            printf("%s=%llu\n", tf->name, (unsigned long long)cap_get_u64(&resp.msg, f->tag, 0));
        } else {
            printf("%s=(%u bytes)\n", tf->name, f->len);
            if (out) {
                write_out(out, f);
            }
        }
    }
    if (out) {
        fclose(out);
    }
    if (rc != KL_OK) {
        fprintf(stderr, "kl_cad_client: %s\n", kl_errmsg());
    }
    cac_resp_free(&resp);
    kl_buf_free(&req);
    cac_close(c);
    return kl_rc_exit(rc);
}
