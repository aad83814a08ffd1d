/* keyline-provision: the Matter step of a device's flow (issue 19, docs/matter.md): between
 * PUTTRUST and CHALLENGE the station makes the unit's onboarding data (st_matter.c), sends it
 * with MATTER (docs/line-protocol.md 4.10), writes the label and keeps what the results line
 * shows. Also the CSR rule for Matter devices. */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <stdio.h>
#include <string.h>

#include "st.h"
#include "st_matter.h"

#define ST_OID_VID "1.3.6.1.4.1.37244.2.1"
#define ST_OID_PID "1.3.6.1.4.1.37244.2.2"

int st_want_matter(const st_flow *f)
{
    return f->st->matter.enabled && st_want_deliver(f);
}

/* RDN i is one attribute of OID `oid` whose value is the UTF8String of `want` as four
 * upper-case hex digits (Matter 6.2.2.1). */
static int st_matter_rdn_is(const X509_NAME *name, int i, const char *oid, uint16_t want)
{
    const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    char txt[40], hex[8];
    if (!e || X509_NAME_ENTRY_set(e) != i) {
        return 0;
    }
    OBJ_obj2txt(txt, sizeof txt, X509_NAME_ENTRY_get_object(e), 1);
    const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
    snprintf(hex, sizeof hex, "%04X", want);
    return strcmp(txt, oid) == 0 && ASN1_STRING_type(v) == V_ASN1_UTF8STRING &&
           ASN1_STRING_length(v) == 4 && memcmp(ASN1_STRING_get0_data(v), hex, 4) == 0;
}

kl_rc st_matter_csr_check(X509_REQ *req, const st_matter_cfg *m, const st_hello *h)
{
    kl_rc rc = KL_OK;
    X509_NAME *base = X509_NAME_new();
    const X509_NAME *name = X509_REQ_get_subject_name(req);
    EVP_PKEY *k = X509_REQ_get0_pubkey(req);
    ENSURE(base, KL_EINTERNAL, "out of memory");
    /* Matter 6.2.2: a DAC's key is ECDSA on P-256 */
    ENSURE(k && EVP_PKEY_get_base_id(k) == EVP_PKEY_EC && EVP_PKEY_get_bits(k) == 256, KL_EPOLICY,
           "device's CSR is not for a P-256 key: a Matter DAC is ECDSA on P-256; nothing issued");
    ENSURE(X509_NAME_entry_count(name) == 4 && st_matter_rdn_is(name, 2, ST_OID_VID, m->vid) &&
               st_matter_rdn_is(name, 3, ST_OID_PID, m->pid),
           KL_EPOLICY,
           "device's CSR does not name Matter VendorID %04X and ProductID %04X after its "
           "serialNumber (line-protocol 4.3): another product's firmware? nothing issued",
           m->vid, m->pid);
    for (int i = 0; i < 2; i++) {
        ENSURE_SSL(X509_NAME_add_entry(base, X509_NAME_get_entry(name, i), -1, 0) == 1,
                   KL_EINTERNAL, "out of memory");
    }
    TRY(st_csr_subject_check(base, h));
out:
    X509_NAME_free(base);
    ERR_clear_error();
    return rc;
}

#define MPUT(expr) ENSURE((expr) == KL_PROTO_OK, KL_EINTERNAL, "MATTER does not fit the frame")

static kl_rc st_matter_send(st_flow *f, const st_matter_onboard *ob)
{
    kl_rc rc = KL_OK;
    const st_matter_cfg *m = &f->st->matter;
    uint8_t buf[KL_PROTO_MAX_PAYLOAD], state = 0;
    kl_tlv_w w;
    kl_tlv_w_init(&w, buf, sizeof buf);
    MPUT(kl_tlv_put(&w, KL_TAG_MATTER_CD, m->cd, m->cd_len));
    MPUT(kl_tlv_put_u16(&w, KL_TAG_MATTER_DISCRIMINATOR, ob->discriminator));
    MPUT(kl_tlv_put_u32(&w, KL_TAG_MATTER_ITERATIONS, ob->iterations));
    MPUT(kl_tlv_put(&w, KL_TAG_MATTER_SALT, ob->salt, sizeof ob->salt));
    MPUT(kl_tlv_put(&w, KL_TAG_MATTER_VERIFIER, ob->verifier, sizeof ob->verifier));
    MPUT(kl_tlv_put(&w, KL_TAG_MATTER_UNIQUE_ID, ob->unique_id, sizeof ob->unique_id));
    ENSURE(kl_proto_matter_check(buf, w.len) == KL_PROTO_OK, KL_EINTERNAL,
           "MATTER request does not pass its own check");
    ENSURE(w.len <= f->h->max_payload, KL_EPOLICY,
           "MATTER needs %zu bytes but the device takes at most %u per request (the "
           "Certification Declaration is %zu bytes)",
           w.len, (unsigned)f->h->max_payload, m->cd_len);
    TRY(st_link_xact(&f->fx->link, KL_MSG_MATTER, buf, w.len, f->r, -1));
    if (f->r->type == KL_MSG_ERROR) {
        rc = st_dev_error(KL_MSG_MATTER, f->r);
        goto out;
    }
    ENSURE(f->r->type == KL_MSG_RESP(KL_MSG_MATTER) &&
               kl_tlv_check(f->r->payload, f->r->len) == KL_PROTO_OK &&
               kl_tlv_get_u8(f->r->payload, f->r->len, KL_TAG_STATE, &state) == KL_PROTO_OK,
           KL_EINPUT, "device sent a malformed MATTER answer");
out:
    return rc;
}

/* keyline-cad keeps what the device holds beside its inventory row (CA-protocol op matter). */
static kl_rc st_matter_record(st_flow *f, const st_matter_onboard *ob)
{
    kl_rc rc = KL_OK;
    kl_buf req;
    cac_resp resp;
    kl_buf_init(&req, 4096, 1);
    memset(&resp, 0, sizeof resp);
    TRY(cap_msg_begin(&req, CAP_OP_MATTER, 0));
    TRY(cap_put_str(&req, CAP_T_PROFILE, f->st->cfg.profile));
    TRY(cap_put_str(&req, CAP_T_DEVICE_ID, f->h->hw_serial));
    TRY(cap_put_str(&req, CAP_T_SERIAL, f->o->cert_serial));
    TRY(cap_put_u64(&req, CAP_T_MATTER_DISCRIMINATOR, ob->discriminator));
    TRY(cap_put_u64(&req, CAP_T_MATTER_ITERATIONS, ob->iterations));
    TRY(cap_put_bytes(&req, CAP_T_MATTER_SALT, ob->salt, sizeof ob->salt));
    TRY(cap_put_bytes(&req, CAP_T_MATTER_VERIFIER, ob->verifier, sizeof ob->verifier));
    if (f->st->matter.keep_passcode) {
        /* keyline-cad seals it to a token key before it reaches the store (docs/matter.md) */
        TRY(cap_put_u64(&req, CAP_T_MATTER_PASSCODE, ob->passcode));
    }
    TRY(cap_msg_end(&req));
    rc = cac_call(f->st->cac, &req, &resp);
    if (rc != KL_OK) {
        kl_wrap(rc, "keyline-cad did not record the Matter data of %s", f->h->hw_serial);
    }
out:
    cac_resp_free(&resp);
    kl_buf_free(&req); /* the request held the passcode: the buffer is sensitive */
    return rc;
}

kl_rc st_step_matter(st_flow *f)
{
    kl_rc rc = KL_OK;
    const st_matter_cfg *m = &f->st->matter;
    st_matter_result *res = &f->o->matter;
    st_matter_onboard ob;
    st_fixture_progress(f->fx, ST_PH_MATTER, "MATTER");
    TRY(st_station_claim_keep(f->st, f->fx, f->h->hw_serial));
    TRY(st_matter_onboard_new(&ob, m->vid, m->pid, (uint32_t)m->iterations));
    TRY(st_matter_send(f, &ob));
    TRY(st_matter_record(f, &ob));
    /* the device holds this verifier now: the label must carry its passcode */
    res->done = 1;
    res->discriminator = ob.discriminator;
    snprintf(res->qr, sizeof res->qr, "%s", ob.qr);
    snprintf(res->manual, sizeof res->manual, "%s", ob.manual);
    if (m->labels) {
        rc = st_matter_label_write(m->labels, f->h->hw_serial, &ob, res->label, sizeof res->label);
        if (rc != KL_OK) {
            kl_wrap(rc, "label for %s not written", f->h->hw_serial);
            goto out;
        }
    }
out:
    st_matter_onboard_wipe(&ob);
    return rc;
}

json_t *st_matter_result_json(const st_matter_result *r)
{
    json_t *m = json_object();
    if (m) {
        json_object_set_new(m, "qr", json_string(r->qr));
        json_object_set_new(m, "manual", json_string(r->manual));
        json_object_set_new(m, "discriminator", json_integer(r->discriminator));
        if (r->label[0]) {
            json_object_set_new(m, "label", json_string(r->label));
        }
    }
    return m;
}
