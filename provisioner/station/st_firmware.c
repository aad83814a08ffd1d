/* keyline-provision: [station] firmware-keys, the firmware signing keys the station writes
 * into every device with its trust anchors (PUTTRUST FW_KEYS, docs/line-protocol.md 4.6;
 * docs/firmware.md). The station holds no token and no store: it takes the keys' certificates
 * as files (keyline-ca ca cert --label FW), and sends their P-256 points; the device keys
 * its update check on their MCUboot key hashes. */
#include <limits.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kl_file.h"
#include "kl_hostcrypto.h"
#include "st.h"

/* One certificate file: a code-signing, non-CA, P-256 certificate; its point into pub. */
static kl_rc st_firmware_key_read(const char *path, uint8_t pub[KL_PROTO_PUB_LEN])
{
    kl_rc rc = KL_OK;
    uint8_t *pem = NULL;
    size_t len = 0;
    X509 *x = NULL;
    BIO *b = NULL;
    TRY(kl_file_read(path, 64 * 1024, &pem, &len));
    b = BIO_new_mem_buf(pem, (int)len);
    ENSURE(b, KL_EINTERNAL, "out of memory");
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    ENSURE_SSL(x, KL_EINPUT, "[station] firmware-keys: %s is not a PEM certificate", path);
    uint32_t fl = X509_get_extension_flags(x);
    ENSURE(!(fl & EXFLAG_CA) && (fl & EXFLAG_XKUSAGE) &&
               (X509_get_extended_key_usage(x) & XKU_CODE_SIGN),
           KL_EUSAGE,
           "[station] firmware-keys: %s is not a firmware key's certificate (codeSigning, no CA; "
           "keyline-ca ca cert --label FW)",
           path);
    rc = kl_p256_pub65(X509_get0_pubkey(x), pub);
    if (rc != KL_OK) {
        rc = kl_fail(KL_EUSAGE, "[station] firmware-keys: %s: not an EC P-256 key", path);
    }
out:
    X509_free(x);
    BIO_free(b);
    free(pem);
    return rc;
}

kl_rc st_firmware_keys_load(st_config *cfg, const kl_conf *conf)
{
    kl_rc rc = KL_OK;
    const char *v = kl_conf_get(conf, "station", "firmware-keys");
    char *list = v ? strdup(v) : NULL, *save = NULL;
    cfg->nfw_keys = 0;
    ENSURE(!v || list, KL_EINTERNAL, "out of memory");
    for (char *t = list ? strtok_r(list, " ,\t", &save) : NULL; t;
         t = strtok_r(NULL, " ,\t", &save)) {
        char path[PATH_MAX];
        ENSURE(cfg->nfw_keys < ST_FW_KEYS_MAX, KL_EUSAGE,
               "[station] firmware-keys: at most %d keys (two during a change-over)",
               ST_FW_KEYS_MAX);
        int n = t[0] == '/' ? snprintf(path, sizeof path, "%s", t)
                            : snprintf(path, sizeof path, "%s/%s", kl_conf_dir(conf), t);
        ENSURE(n > 0 && (size_t)n < sizeof path, KL_EUSAGE,
               "[station] firmware-keys: path too long");
        TRY(st_firmware_key_read(path, cfg->fw_keys[cfg->nfw_keys]));
        for (size_t i = 0; i < cfg->nfw_keys; i++) {
            ENSURE(memcmp(cfg->fw_keys[i], cfg->fw_keys[cfg->nfw_keys], KL_PROTO_PUB_LEN) != 0,
                   KL_EUSAGE, "[station] firmware-keys: %s names a key twice", t);
        }
        cfg->nfw_keys++;
    }
out:
    free(list);
    return rc;
}
