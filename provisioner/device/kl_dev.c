/* keyline device library: the request engine (docs/line-protocol.md "Device state machine").
 *
 * Every request runs to completion inside kl_dev_feed(): parse, check state, act through the
 * port, persist, build the response, cache it, send it. The cache makes requests idempotent
 * for the station's retransmissions: a frame with the same seq and CRC as the last one gets
 * the cached bytes again and changes nothing. */
#include <string.h>

#include "kl_dev.h"
#include "kl_dev_image.h"

#define REC_MAGIC0 'K'
#define REC_MAGIC1 'L'
#define REC_MAGIC2 'S'
#define REC_MAGIC3 '1'

/* A wipe the compiler may not drop (volatile stores). */
static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--) {
        *v++ = 0;
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ---- Persistent state record --------------------------------------------------------------
 * 0..3 "KLS1" | 4 record version (1) | 5 state | 6 key origin | 7 ncerts | 8 ntrust |
 * 9..11 zero | 12..43 cert fingerprint | 44..47 CRC-32 of bytes 0..43 */

typedef struct {
    uint8_t state, key_origin, ncerts, ntrust;
    uint8_t fp[KL_PROTO_FP_LEN];
} rec_t;

static void rec_from_dev(rec_t *r, const kl_dev *d)
{
    r->state = d->state;
    r->key_origin = d->key_origin;
    r->ncerts = d->ncerts;
    r->ntrust = d->ntrust;
    memcpy(r->fp, d->cert_fp, sizeof(r->fp));
}

/* Persist r, then (only on success) make it the in-RAM state. Returns 0 or KL_ERR_STORAGE. */
static int rec_commit(kl_dev *d, const rec_t *r)
{
    uint8_t b[KL_DEV_STATE_REC_LEN];
    memset(b, 0, sizeof(b));
    b[0] = REC_MAGIC0;
    b[1] = REC_MAGIC1;
    b[2] = REC_MAGIC2;
    b[3] = REC_MAGIC3;
    b[4] = 1;
    b[5] = r->state;
    b[6] = r->key_origin;
    b[7] = r->ncerts;
    b[8] = r->ntrust;
    memcpy(b + 12, r->fp, KL_PROTO_FP_LEN);
    put_be32(b + 44, kl_crc32(0, b, 44));
    if (d->port->store_write(d->port_ctx, KL_OBJ_STATE, b, sizeof(b)) != KL_PORT_OK) {
        return KL_ERR_STORAGE;
    }
    d->state = r->state;
    d->key_origin = r->key_origin;
    d->ncerts = r->ncerts;
    d->ntrust = r->ntrust;
    memcpy(d->cert_fp, r->fp, KL_PROTO_FP_LEN);
    return 0;
}

static int rec_load(kl_dev *d)
{
    uint8_t b[KL_DEV_STATE_REC_LEN];
    size_t n = 0;
    int rc = d->port->store_read(d->port_ctx, KL_OBJ_STATE, b, sizeof(b), &n);
    if (rc == KL_PORT_ENOENT) {
        d->state = KL_STATE_FACTORY_NEW; /* first boot */
        return KL_DEV_OK;
    }
    if (rc != KL_PORT_OK || n != sizeof(b) || b[0] != REC_MAGIC0 || b[1] != REC_MAGIC1 ||
        b[2] != REC_MAGIC2 || b[3] != REC_MAGIC3 || b[4] != 1 ||
        get_be32(b + 44) != kl_crc32(0, b, 44) || b[5] > KL_STATE_LOCKED ||
        b[6] > KL_KEY_ORIGIN_INJECTED || b[7] > KL_DEV_MAX_CERTS || b[8] > KL_DEV_MAX_TRUST) {
        return KL_DEV_ESTORAGE;
    }
    d->state = b[5];
    d->key_origin = b[6];
    d->ncerts = b[7];
    d->ntrust = b[8];
    memcpy(d->cert_fp, b + 12, KL_PROTO_FP_LEN);
    return KL_DEV_OK;
}

/* ---- Init ---------------------------------------------------------------------------------- */

static int info_ok(const kl_dev_info *i)
{
    size_t ml, fl;
    if (i == NULL || i->model == NULL || i->fw_version == NULL) {
        return 0;
    }
    ml = strlen(i->model);
    fl = strlen(i->fw_version);
    /* a Matter device names both its VendorID and ProductID, or neither */
    return ml > 0 && ml <= KL_PROTO_MODEL_MAX && fl <= KL_PROTO_FWVER_MAX &&
           kl_dev_serial_ok(i->hw_serial) && (i->matter_vid == 0) == (i->matter_pid == 0);
}

int kl_dev_init(kl_dev *d, const kl_port *port, void *port_ctx, const kl_dev_info *info)
{
    if (d == NULL || port == NULL || port->send == NULL || port->random == NULL ||
        port->sha256 == NULL || port->key_generate == NULL || port->key_import == NULL ||
        port->key_public == NULL || port->key_sign == NULL || port->transport_public == NULL ||
        port->transport_ecdh == NULL || port->hkdf_sha256 == NULL ||
        port->aes256gcm_decrypt == NULL || port->store_read == NULL || port->store_write == NULL ||
        !info_ok(info)) {
        return KL_DEV_EARG;
    }
    memset(d, 0, sizeof(*d));
    d->port = port;
    d->port_ctx = port_ctx;
    d->info = info;
    if (kl_proto_dec_init(&d->dec, d->rx, sizeof(d->rx)) != KL_PROTO_OK) {
        return KL_DEV_EARG;
    }
    return rec_load(d);
}

kl_dev_state kl_dev_get_state(const kl_dev *d)
{
    return (kl_dev_state)d->state;
}

int kl_dev_get_cert_fp(const kl_dev *d, uint8_t fp[KL_PROTO_FP_LEN])
{
    if (d->state < KL_STATE_CERT_STORED) {
        return 0;
    }
    memcpy(fp, d->cert_fp, KL_PROTO_FP_LEN);
    return 1;
}

/* ---- Request handlers -----------------------------------------------------------------------
 * Each handler reads the request payload p[0..n) (already kl_tlv_check'ed), acts, writes its
 * response fields into w and returns 0, or returns a KL_ERR_* code and sets *why to a static
 * text for the ERROR response. */

typedef struct {
    kl_dev *d;
    const uint8_t *p;
    size_t n;
    kl_tlv_w *w;
    const char *why;
} req_t;

#define FAIL(r, code, text)                                                                        \
    do {                                                                                           \
        (r)->why = (text);                                                                         \
        return (code);                                                                             \
    } while (0)
#define PUT(r, expr)                                                                               \
    do {                                                                                           \
        if ((expr) != KL_PROTO_OK) {                                                               \
            FAIL((r), KL_ERR_INTERNAL, "response too large");                                      \
        }                                                                                          \
    } while (0)

static int map_port_err(int prc)
{
    if (prc == KL_PORT_ESPACE) {
        return KL_ERR_TOO_LARGE;
    }
    return KL_ERR_STORAGE;
}

/* Optional FORCE field: absent = 0; present must be 0 or 1. */
static int get_force(req_t *r, uint8_t *force)
{
    int rc = kl_tlv_get_u8(r->p, r->n, KL_TAG_FORCE, force);
    if (rc == KL_PROTO_ENOTFOUND) {
        *force = 0;
        return 0;
    }
    return (rc != KL_PROTO_OK || *force > 1u) ? -1 : 0;
}

static int h_hello(req_t *r)
{
    kl_dev *d = r->d;
    uint8_t vmin = KL_PROTO_VERSION, vmax = KL_PROTO_VERSION, pub[KL_PROTO_PUB_LEN];
    int rc;

    rc = kl_tlv_get_u8(r->p, r->n, KL_TAG_PROTO_MIN, &vmin);
    if (rc != KL_PROTO_OK && rc != KL_PROTO_ENOTFOUND) {
        FAIL(r, KL_ERR_MALFORMED, "bad PROTO_MIN");
    }
    rc = kl_tlv_get_u8(r->p, r->n, KL_TAG_PROTO_MAX, &vmax);
    if (rc != KL_PROTO_OK && rc != KL_PROTO_ENOTFOUND) {
        FAIL(r, KL_ERR_MALFORMED, "bad PROTO_MAX");
    }
    if (vmin > KL_PROTO_VERSION || vmax < KL_PROTO_VERSION) {
        FAIL(r, KL_ERR_VERSION, "device speaks version 1 only");
    }
    /* A HELLO starts a session: forget half-received chains. */
    d->cert_mask = d->cert_count = d->trust_mask = d->trust_count = 0;

    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_PROTO, KL_PROTO_VERSION));
    PUT(r, kl_tlv_put_str(r->w, KL_TAG_MODEL, d->info->model));
    PUT(r, kl_tlv_put_str(r->w, KL_TAG_HW_SERIAL, d->info->hw_serial));
    PUT(r, kl_tlv_put_str(r->w, KL_TAG_FW_VERSION, d->info->fw_version));
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_STATE, d->state));
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_KEY_ORIGIN, d->key_origin));
    PUT(r, kl_tlv_put_u16(r->w, KL_TAG_MAX_PAYLOAD, (uint16_t)KL_DEV_RX_PAYLOAD));
    if (d->port->transport_public(d->port_ctx, pub) != KL_PORT_OK) {
        FAIL(r, KL_ERR_INTERNAL, "transport key unavailable");
    }
    PUT(r, kl_tlv_put(r->w, KL_TAG_TRANSPORT_PUB, pub, sizeof(pub)));
    if (d->state >= KL_STATE_KEY_READY) {
        if (d->port->key_public(d->port_ctx, pub) != KL_PORT_OK) {
            FAIL(r, KL_ERR_INTERNAL, "identity key missing");
        }
        PUT(r, kl_tlv_put(r->w, KL_TAG_IDENTITY_PUB, pub, sizeof(pub)));
    }
    if (d->state >= KL_STATE_CERT_STORED) {
        PUT(r, kl_tlv_put(r->w, KL_TAG_CERT_FP, d->cert_fp, sizeof(d->cert_fp)));
    }
    return 0;
}

/* Forget everything that belonged to the old identity key, persisting FACTORY_NEW before the
 * key is replaced: a power cut between the two then leaves a device without certificate,
 * never a certificate next to a key it does not belong to. */
static int drop_identity(kl_dev *d)
{
    rec_t rec;
    unsigned i;
    rec_from_dev(&rec, d);
    rec.state = KL_STATE_FACTORY_NEW;
    rec.key_origin = KL_KEY_ORIGIN_NONE;
    rec.ncerts = rec.ntrust = 0;
    memset(rec.fp, 0, sizeof(rec.fp));
    if (rec_commit(d, &rec) != 0) {
        return KL_ERR_STORAGE;
    }
    for (i = 0; i < KL_DEV_MAX_CERTS; i++) {
        (void)d->port->store_write(d->port_ctx, (uint8_t)(KL_OBJ_CERT + i), NULL, 0);
    }
    d->cert_mask = d->cert_count = d->trust_mask = d->trust_count = 0;
    return 0;
}

static int set_key_ready(kl_dev *d, uint8_t origin)
{
    rec_t rec;
    rec_from_dev(&rec, d);
    rec.state = KL_STATE_KEY_READY;
    rec.key_origin = origin;
    return rec_commit(d, &rec);
}

static int h_genkey(req_t *r)
{
    kl_dev *d = r->d;
    uint8_t force, pub[KL_PROTO_PUB_LEN];

    if (get_force(r, &force) != 0) {
        FAIL(r, KL_ERR_MALFORMED, "bad FORCE");
    }
    if (d->state >= KL_STATE_KEY_READY && !force) {
        /* Keep the key: a retransmitted or resumed GENKEY must not make a second identity. */
        if (d->port->key_public(d->port_ctx, pub) != KL_PORT_OK) {
            FAIL(r, KL_ERR_INTERNAL, "identity key missing");
        }
        PUT(r, kl_tlv_put(r->w, KL_TAG_PUBKEY, pub, sizeof(pub)));
        PUT(r, kl_tlv_put_u8(r->w, KL_TAG_KEY_NEW, 0));
        return 0;
    }
    if (d->state != KL_STATE_FACTORY_NEW && drop_identity(d) != 0) {
        FAIL(r, KL_ERR_STORAGE, "state write failed");
    }
    if (d->port->key_generate(d->port_ctx, pub) != KL_PORT_OK) {
        FAIL(r, KL_ERR_INTERNAL, "key generation failed");
    }
    if (set_key_ready(d, KL_KEY_ORIGIN_DEVICE) != 0) {
        FAIL(r, KL_ERR_STORAGE, "state write failed");
    }
    PUT(r, kl_tlv_put(r->w, KL_TAG_PUBKEY, pub, sizeof(pub)));
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_KEY_NEW, 1));
    return 0;
}

static int h_getcsr(req_t *r)
{
    kl_dev *d = r->d;
    uint8_t pub[KL_PROTO_PUB_LEN], *v;
    size_t room, len = 0;

    if (d->state < KL_STATE_KEY_READY) {
        FAIL(r, KL_ERR_NO_KEY, "no identity key");
    }
    if (d->port->key_public(d->port_ctx, pub) != KL_PORT_OK) {
        FAIL(r, KL_ERR_INTERNAL, "identity key missing");
    }
    /* Build the CSR in place after the TLV header, then write the header around it. */
    room = r->w->cap - r->w->len;
    if (room < 3u + KL_DEV_CSR_MAX) {
        FAIL(r, KL_ERR_INTERNAL, "response buffer too small");
    }
    if (kl_dev_csr_build_matter(d->port, d->port_ctx, d->info->model, d->info->hw_serial,
                                d->info->matter_vid, d->info->matter_pid, pub,
                                r->w->buf + r->w->len + 3u, room - 3u, &len) != KL_DEV_OK) {
        FAIL(r, KL_ERR_INTERNAL, "CSR signing failed");
    }
    PUT(r, kl_tlv_put_reserve(r->w, KL_TAG_CSR, len, &v));
    return 0;
}

/* 1 <= d < n, the P-256 group order (big-endian), without branching on d: the new key is
 * checked before the old one is dropped, so a bad scalar changes nothing. */
static int scalar_ok(const uint8_t d[32])
{
    static const uint8_t n[32] = {0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17,
                                  0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};
    unsigned borrow = 0, any = 0;
    int i;
    for (i = 31; i >= 0; i--) {
        unsigned diff = (unsigned)d[i] - (unsigned)n[i] - borrow;
        borrow = (diff >> 8) & 1u; /* d - n borrows all the way out: d < n */
        any |= d[i];
    }
    return (int)(borrow & ((any | (0u - any)) >> 8 & 1u));
}

static int h_inject(req_t *r)
{
    kl_dev *d = r->d;
    uint8_t force, eph[KL_PROTO_PUB_LEN], salt[32], iv[12], ct[32], tag[16];
    uint8_t aad[2u * KL_PROTO_PUB_LEN], info[KL_PROTO_INJECT_INFO_MAX];
    uint8_t shared[32], kek[32], priv[32], pub[KL_PROTO_PUB_LEN];
    size_t info_len = 0;
    int prc, err = 0;

    if (get_force(r, &force) != 0 ||
        kl_tlv_get_fixed(r->p, r->n, KL_TAG_EPH_PUB, eph, sizeof(eph)) != KL_PROTO_OK ||
        kl_tlv_get_fixed(r->p, r->n, KL_TAG_SALT, salt, sizeof(salt)) != KL_PROTO_OK ||
        kl_tlv_get_fixed(r->p, r->n, KL_TAG_IV, iv, sizeof(iv)) != KL_PROTO_OK ||
        kl_tlv_get_fixed(r->p, r->n, KL_TAG_CIPHERTEXT, ct, sizeof(ct)) != KL_PROTO_OK ||
        kl_tlv_get_fixed(r->p, r->n, KL_TAG_GCM_TAG, tag, sizeof(tag)) != KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "INJECT needs EPH_PUB SALT IV CIPHERTEXT GCM_TAG");
    }
    if (d->state >= KL_STATE_KEY_READY && !force) {
        FAIL(r, KL_ERR_KEY_EXISTS, "identity key exists (use FORCE)");
    }
    /* aad = EPH_PUB | TRANSPORT_PUB; info = "keyline inject v1" | hw_serial */
    memcpy(aad, eph, sizeof(eph));
    if (d->port->transport_public(d->port_ctx, aad + KL_PROTO_PUB_LEN) != KL_PORT_OK ||
        kl_proto_inject_info(info, sizeof(info), &info_len, d->info->hw_serial) != KL_PROTO_OK) {
        FAIL(r, KL_ERR_INTERNAL, "transport key unavailable");
    }
    prc = d->port->transport_ecdh(d->port_ctx, eph, shared);
    if (prc != KL_PORT_OK) {
        r->why = "ECDH failed";
        err = prc == KL_PORT_EINVAL ? KL_ERR_CRYPTO : KL_ERR_INTERNAL;
        goto out;
    }
    if (d->port->hkdf_sha256(d->port_ctx, salt, sizeof(salt), shared, sizeof(shared), info,
                             info_len, kek, sizeof(kek)) != KL_PORT_OK) {
        r->why = "HKDF failed";
        err = KL_ERR_INTERNAL;
        goto out;
    }
    prc = d->port->aes256gcm_decrypt(d->port_ctx, kek, iv, aad, sizeof(aad), ct, sizeof(ct), tag,
                                     priv);
    if (prc != KL_PORT_OK) {
        r->why = "unwrap failed";
        err = prc == KL_PORT_EAUTH ? KL_ERR_CRYPTO : KL_ERR_INTERNAL;
        goto out;
    }
    if (!scalar_ok(priv)) {
        r->why = "invalid private key";
        err = KL_ERR_CRYPTO;
        goto out;
    }
    if (d->state != KL_STATE_FACTORY_NEW && drop_identity(d) != 0) {
        r->why = "state write failed";
        err = KL_ERR_STORAGE;
        goto out;
    }
    prc = d->port->key_import(d->port_ctx, priv, pub);
    if (prc != KL_PORT_OK) {
        r->why = prc == KL_PORT_EINVAL ? "invalid private key" : "key storage failed";
        err = prc == KL_PORT_EINVAL ? KL_ERR_CRYPTO : KL_ERR_STORAGE;
        goto out;
    }
    if (set_key_ready(d, KL_KEY_ORIGIN_INJECTED) != 0) {
        r->why = "state write failed";
        err = KL_ERR_STORAGE;
        goto out;
    }
    if (kl_tlv_put(r->w, KL_TAG_PUBKEY, pub, sizeof(pub)) != KL_PROTO_OK ||
        kl_tlv_put_u8(r->w, KL_TAG_KEY_NEW, 1) != KL_PROTO_OK) {
        r->why = "response too large";
        err = KL_ERR_INTERNAL;
    }
out:
    wipe(shared, sizeof(shared));
    wipe(kek, sizeof(kek));
    wipe(priv, sizeof(priv));
    return err;
}

/* Does the DER certificate hold our key? Looks for the SPKI's subjectPublicKey BIT STRING
 * (03 42 00 | point). Not a parser: a cheap guard against a station handing this device the
 * wrong certificate; the station verified the certificate itself. */
static int cert_has_key(const uint8_t *c, size_t n, const uint8_t pub[KL_PROTO_PUB_LEN])
{
    size_t i;
    if (n < 3u + KL_PROTO_PUB_LEN) {
        return 0;
    }
    for (i = 0; i + 3u + KL_PROTO_PUB_LEN <= n; i++) {
        if (c[i] == 0x03 && c[i + 1] == 0x42 && c[i + 2] == 0x00 &&
            memcmp(c + i + 3, pub, KL_PROTO_PUB_LEN) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Common part of PUTCERT/PUTTRUST: INDEX and COUNT. */
static int get_part(req_t *r, unsigned max, uint8_t *index, uint8_t *count)
{
    if (kl_tlv_get_u8(r->p, r->n, KL_TAG_INDEX, index) != KL_PROTO_OK ||
        kl_tlv_get_u8(r->p, r->n, KL_TAG_COUNT, count) != KL_PROTO_OK || *count == 0 ||
        *index >= *count) {
        r->why = "bad INDEX/COUNT";
        return KL_ERR_MALFORMED;
    }
    if (*count > max) {
        r->why = "too many certificates";
        return KL_ERR_TOO_LARGE;
    }
    return 0;
}

static int h_putcert(req_t *r)
{
    kl_dev *d = r->d;
    const uint8_t *cert;
    size_t clen;
    uint8_t index, count, pub[KL_PROTO_PUB_LEN];
    int err, prc;
    rec_t rec;

    if (d->state < KL_STATE_KEY_READY) {
        FAIL(r, KL_ERR_NO_KEY, "no identity key");
    }
    err = get_part(r, KL_DEV_MAX_CERTS, &index, &count);
    if (err != 0) {
        return err;
    }
    if (kl_tlv_get_var(r->p, r->n, KL_TAG_CERT, 1, KL_DEV_RX_PAYLOAD, &cert, &clen) !=
        KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "CERT missing");
    }
    if (index == 0) {
        if (d->port->key_public(d->port_ctx, pub) != KL_PORT_OK) {
            FAIL(r, KL_ERR_INTERNAL, "identity key missing");
        }
        if (!cert_has_key(cert, clen, pub)) {
            FAIL(r, KL_ERR_CERT_MISMATCH, "certificate is not for this device's key");
        }
    }
    /* Overwriting chain objects: first fall back to KEY_READY so a power cut mid-chain cannot
     * leave a state record that vouches for a half-replaced chain. */
    if (d->state > KL_STATE_KEY_READY) {
        rec_from_dev(&rec, d);
        rec.state = KL_STATE_KEY_READY;
        rec.ncerts = rec.ntrust = 0;
        memset(rec.fp, 0, sizeof(rec.fp));
        if (rec_commit(d, &rec) != 0) {
            FAIL(r, KL_ERR_STORAGE, "state write failed");
        }
    }
    if (count != d->cert_count) {
        d->cert_count = count;
        d->cert_mask = 0;
    }
    prc = d->port->store_write(d->port_ctx, (uint8_t)(KL_OBJ_CERT + index), cert, clen);
    if (prc != KL_PORT_OK) {
        FAIL(r, map_port_err(prc), "certificate store failed");
    }
    if (index == 0 && d->port->sha256(d->port_ctx, cert, clen, d->pending_fp) != KL_PORT_OK) {
        FAIL(r, KL_ERR_INTERNAL, "hash failed");
    }
    d->cert_mask = (uint8_t)(d->cert_mask | (1u << index));
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_INDEX, index));
    if (d->cert_mask == (uint8_t)((1u << count) - 1u)) {
        rec_from_dev(&rec, d);
        rec.state = KL_STATE_CERT_STORED;
        rec.ncerts = count;
        rec.ntrust = 0;
        memcpy(rec.fp, d->pending_fp, sizeof(rec.fp));
        if (rec_commit(d, &rec) != 0) {
            FAIL(r, KL_ERR_STORAGE, "state write failed");
        }
        d->cert_mask = d->cert_count = 0;
        PUT(r, kl_tlv_put(r->w, KL_TAG_CERT_FP, d->cert_fp, sizeof(d->cert_fp)));
    }
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_STATE, d->state));
    return 0;
}

static int h_puttrust(req_t *r)
{
    kl_dev *d = r->d;
    const uint8_t *anchor, *url, *fwk;
    size_t alen, ulen = 0, fwlen = 0;
    uint8_t index, count;
    int err, prc, urc, frc;
    rec_t rec;

    if (d->state < KL_STATE_CERT_STORED) {
        FAIL(r, KL_ERR_STATE, "PUTTRUST needs a stored certificate");
    }
    err = get_part(r, KL_DEV_MAX_TRUST, &index, &count);
    if (err != 0) {
        return err;
    }
    if (kl_tlv_get_var(r->p, r->n, KL_TAG_ANCHOR, 1, KL_DEV_RX_PAYLOAD, &anchor, &alen) !=
        KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "ANCHOR missing");
    }
    urc = kl_tlv_get_var(r->p, r->n, KL_TAG_EST_URL, 1, KL_PROTO_URL_MAX, &url, &ulen);
    if ((urc != KL_PROTO_OK && urc != KL_PROTO_ENOTFOUND) || (urc == KL_PROTO_OK && index != 0)) {
        FAIL(r, KL_ERR_MALFORMED, "EST_URL bad or not in part 0");
    }
    frc = kl_tlv_get_var(r->p, r->n, KL_TAG_FW_KEYS, 65, 65 * KL_DEV_MAX_FW_KEYS, &fwk, &fwlen);
    if ((frc != KL_PROTO_OK && frc != KL_PROTO_ENOTFOUND) ||
        (frc == KL_PROTO_OK &&
         (index != 0 || fwlen % 65 != 0 || fwk[0] != 0x04 || (fwlen > 65 && fwk[65] != 0x04)))) {
        FAIL(r, KL_ERR_MALFORMED, "FW_KEYS bad or not in part 0");
    }
    if (d->state > KL_STATE_CERT_STORED) {
        rec_from_dev(&rec, d);
        rec.state = KL_STATE_CERT_STORED;
        rec.ntrust = 0;
        if (rec_commit(d, &rec) != 0) {
            FAIL(r, KL_ERR_STORAGE, "state write failed");
        }
    }
    if (count != d->trust_count) {
        d->trust_count = count;
        d->trust_mask = 0;
    }
    prc = d->port->store_write(d->port_ctx, (uint8_t)(KL_OBJ_TRUST + index), anchor, alen);
    if (prc != KL_PORT_OK) {
        FAIL(r, map_port_err(prc), "anchor store failed");
    }
    if (index == 0) {
        /* Part 0 without EST_URL clears a previously stored URL. */
        prc = d->port->store_write(d->port_ctx, KL_OBJ_EST_URL, urc == KL_PROTO_OK ? url : NULL,
                                   urc == KL_PROTO_OK ? ulen : 0);
        if (prc != KL_PORT_OK) {
            FAIL(r, map_port_err(prc), "EST URL store failed");
        }
        /* Part 0 without FW_KEYS clears stored firmware keys, likewise. */
        prc = d->port->store_write(d->port_ctx, KL_OBJ_FWKEYS, frc == KL_PROTO_OK ? fwk : NULL,
                                   frc == KL_PROTO_OK ? fwlen : 0);
        if (prc != KL_PORT_OK) {
            FAIL(r, map_port_err(prc), "firmware key store failed");
        }
    }
    d->trust_mask = (uint8_t)(d->trust_mask | (1u << index));
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_INDEX, index));
    if (d->trust_mask == (uint8_t)((1u << count) - 1u)) {
        rec_from_dev(&rec, d);
        rec.state = KL_STATE_TRUST_STORED;
        rec.ntrust = count;
        if (rec_commit(d, &rec) != 0) {
            FAIL(r, KL_ERR_STORAGE, "state write failed");
        }
        d->trust_mask = d->trust_count = 0;
    }
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_STATE, d->state));
    return 0;
}

static int h_challenge(req_t *r)
{
    kl_dev *d = r->d;
    const uint8_t *nonce;
    size_t nlen, mlen = 0, slen = 0;
    uint8_t msg[KL_PROTO_CHALLENGE_MSG_MAX], digest[32], rs[64], *v;
    rec_t rec;

    if (d->state < KL_STATE_TRUST_STORED) {
        FAIL(r, KL_ERR_STATE, "CHALLENGE needs certificate and trust anchors");
    }
    if (kl_tlv_get_var(r->p, r->n, KL_TAG_NONCE, KL_PROTO_NONCE_MIN, KL_PROTO_NONCE_MAX, &nonce,
                       &nlen) != KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "NONCE must be 16..64 bytes");
    }
    if (kl_proto_challenge_msg(msg, sizeof(msg), &mlen, d->info->hw_serial, nonce, nlen) !=
            KL_PROTO_OK ||
        d->port->sha256(d->port_ctx, msg, mlen, digest) != KL_PORT_OK ||
        d->port->key_sign(d->port_ctx, digest, rs) != KL_PORT_OK) {
        FAIL(r, KL_ERR_INTERNAL, "signing failed");
    }
    if (r->w->cap - r->w->len < 3u + KL_DEV_SIG_DER_MAX ||
        kl_dev_sig_der(rs, r->w->buf + r->w->len + 3u, KL_DEV_SIG_DER_MAX, &slen) != KL_DEV_OK) {
        FAIL(r, KL_ERR_INTERNAL, "response too large");
    }
    PUT(r, kl_tlv_put_reserve(r->w, KL_TAG_SIG, slen, &v));
    if (d->state == KL_STATE_TRUST_STORED) {
        rec_from_dev(&rec, d);
        rec.state = KL_STATE_CHALLENGED;
        if (rec_commit(d, &rec) != 0) {
            FAIL(r, KL_ERR_STORAGE, "state write failed");
        }
    }
    return 0;
}

static int h_lock(req_t *r)
{
    kl_dev *d = r->d;
    uint8_t confirm[KL_PROTO_FP_LEN];
    rec_t rec;

    if (d->state != KL_STATE_CHALLENGED) {
        FAIL(r, KL_ERR_STATE, "LOCK needs a passed CHALLENGE");
    }
    if (kl_tlv_get_fixed(r->p, r->n, KL_TAG_CONFIRM, confirm, sizeof(confirm)) != KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "CONFIRM missing");
    }
    if (memcmp(confirm, d->cert_fp, sizeof(confirm)) != 0) {
        FAIL(r, KL_ERR_CONFIRM, "CONFIRM is not the stored certificate's fingerprint");
    }
    if (d->port->lock != NULL && d->port->lock(d->port_ctx) != KL_PORT_OK) {
        FAIL(r, KL_ERR_REFUSED, "lock refused by firmware");
    }
    rec_from_dev(&rec, d);
    rec.state = KL_STATE_LOCKED;
    if (rec_commit(d, &rec) != 0) {
        FAIL(r, KL_ERR_STORAGE, "state write failed");
    }
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_STATE, d->state));
    return 0;
}

/* MATTER (spec 4.10): the onboarding set, checked, stored as received in one object. */
static int h_matter(req_t *r)
{
    kl_dev *d = r->d;
    int prc;
    if (d->state < KL_STATE_CERT_STORED) {
        FAIL(r, KL_ERR_STATE, "MATTER needs the DAC and PAI stored");
    }
    if (kl_proto_matter_check(r->p, r->n) != KL_PROTO_OK) {
        FAIL(r, KL_ERR_MALFORMED, "MATTER field missing or out of range");
    }
    prc = d->port->store_write(d->port_ctx, KL_OBJ_MATTER, r->p, r->n);
    if (prc != KL_PORT_OK) {
        FAIL(r, map_port_err(prc), "Matter data store failed");
    }
    PUT(r, kl_tlv_put_u8(r->w, KL_TAG_STATE, d->state));
    return 0;
}

typedef int (*handler_fn)(req_t *r);
static const handler_fn handlers[] = {
    NULL,      h_hello,    h_genkey,    h_getcsr, h_inject,
    h_putcert, h_puttrust, h_challenge, h_lock,   h_matter,
};

/* ---- Dispatch ------------------------------------------------------------------------------ */

static int send_frame(kl_dev *d, const kl_proto_frame *f, uint8_t type, const uint8_t *payload,
                      size_t plen)
{
    if (kl_proto_encode(d->tx, sizeof(d->tx), &d->tx_len, type, f->seq, 0, payload, plen) !=
        KL_PROTO_OK) {
        d->have_last = 0;
        return KL_DEV_EPORT;
    }
    d->have_last = 1;
    d->last_seq = f->seq;
    d->last_crc = f->crc;
    d->last_type = type;
    return d->port->send(d->port_ctx, d->tx, d->tx_len) == KL_PORT_OK ? KL_DEV_OK : KL_DEV_EPORT;
}

static int send_error(kl_dev *d, const kl_proto_frame *f, int code, const char *why)
{
    kl_tlv_w w;
    size_t n = why != NULL ? strlen(why) : 0;
    kl_tlv_w_init(&w, d->resp, sizeof(d->resp));
    if (n > KL_PROTO_ERRTEXT_MAX) {
        n = KL_PROTO_ERRTEXT_MAX;
    }
    /* Both fit: the response buffer is far larger than 4 + 3 + 64 bytes. */
    (void)kl_tlv_put_u8(&w, KL_TAG_ERR_CODE, (uint8_t)code);
    (void)kl_tlv_put(&w, KL_TAG_ERR_TEXT, why, n);
    if (code == KL_ERR_VERSION) {
        (void)kl_tlv_put_u8(&w, KL_TAG_PROTO_MIN, KL_PROTO_VERSION);
        (void)kl_tlv_put_u8(&w, KL_TAG_PROTO_MAX, KL_PROTO_VERSION);
    }
    d->stats.errors_sent++;
    return send_frame(d, f, KL_MSG_ERROR, d->resp, w.len);
}

static int handle(kl_dev *d, const kl_proto_frame *f)
{
    kl_tlv_w w;
    req_t r;
    int err;

    if (f->type & KL_MSG_RESPONSE) {
        return KL_DEV_OK; /* a response (echo on a loopback line?): never answered */
    }
    /* A retransmission: same seq, same bytes. Answer from the cache, change nothing. */
    if (d->have_last && f->seq == d->last_seq && f->crc == d->last_crc) {
        d->stats.retransmits++;
        return d->port->send(d->port_ctx, d->tx, d->tx_len) == KL_PORT_OK ? KL_DEV_OK
                                                                          : KL_DEV_EPORT;
    }
    if (f->version != KL_PROTO_VERSION) {
        return send_error(d, f, KL_ERR_VERSION, "frame version not supported");
    }
    if (f->type >= sizeof(handlers) / sizeof(handlers[0]) || handlers[f->type] == NULL) {
        return send_error(d, f, KL_ERR_UNKNOWN_TYPE, "unknown request");
    }
    if (kl_tlv_check(f->payload, f->payload_len) != KL_PROTO_OK) {
        return send_error(d, f, KL_ERR_MALFORMED, "malformed TLV payload");
    }
    /* Locked: HELLO, and CHALLENGE, which changes nothing but lets the station check that the
     * unit holds its certificate's key: everything HELLO says is public, so a clone could
     * copy it (line-protocol.md 4.7). */
    if (d->state == KL_STATE_LOCKED && f->type != KL_MSG_HELLO && f->type != KL_MSG_CHALLENGE) {
        return send_error(d, f, KL_ERR_LOCKED, "device is locked");
    }
    kl_tlv_w_init(&w, d->resp, sizeof(d->resp));
    r.d = d;
    r.p = f->payload;
    r.n = f->payload_len;
    r.w = &w;
    r.why = NULL;
    err = handlers[f->type](&r);
    if (err != 0) {
        wipe(d->resp, w.len);
        return send_error(d, f, err, r.why);
    }
    return send_frame(d, f, KL_MSG_RESP(f->type), d->resp, w.len);
}

int kl_dev_feed(kl_dev *d, const uint8_t *data, size_t len)
{
    kl_proto_frame f;
    size_t used;
    int rc, ret = KL_DEV_OK;

    if (d == NULL || (data == NULL && len != 0)) {
        return KL_DEV_EARG;
    }
    if (len != 0 && d->port->now_ms != NULL) {
        d->rx_last_ms = d->port->now_ms(d->port_ctx);
    }
    while (len > 0) {
        rc = kl_proto_feed(&d->dec, data, len, &used, &f);
        data += used;
        len -= used;
        if (rc == KL_PROTO_FRAME) {
            d->stats.frames_ok++;
            if (handle(d, &f) != KL_DEV_OK) {
                ret = KL_DEV_EPORT;
            }
        } else if (rc < 0) {
            /* Dropped silently: with no trustworthy seq there is nothing to answer; the
             * station's timeout and retransmission recover. */
            d->stats.frames_bad++;
            if (ret == KL_DEV_OK) {
                ret = KL_DEV_EFRAME;
            }
        }
    }
    return ret;
}

void kl_dev_poll(kl_dev *d)
{
    if (d == NULL || d->port->now_ms == NULL || !kl_proto_dec_busy(&d->dec)) {
        return;
    }
    if ((uint32_t)(d->port->now_ms(d->port_ctx) - d->rx_last_ms) > KL_DEV_RX_TIMEOUT_MS) {
        kl_proto_dec_reset(&d->dec);
    }
}
