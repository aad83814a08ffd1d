/* keyline: helpers shared by tpl.c, tpl_policy.c and tpl_lint.c (see tpl_internal.h). */
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <string.h>

#include "tpl.h"
#include "tpl_internal.h"

int tpl_nid_in(const int *list, int nid)
{
    for (; *list; list++) {
        if (*list == nid) {
            return 1;
        }
    }
    return 0;
}

uint32_t tpl_ku_bits(const ASN1_BIT_STRING *ku)
{
    uint32_t bits = 0;
    if (ku->length > 0) {
        bits |= ku->data[0];
    }
    if (ku->length > 1) {
        bits |= (uint32_t)ku->data[1] << 8;
    }
    return bits;
}

int tpl_is_hmn(const GENERAL_NAME *g)
{
    if (g->type != GEN_OTHERNAME) {
        return 0;
    }
    char oid[64];
    OBJ_obj2txt(oid, sizeof oid, g->d.otherName->type_id, 1);
    return strcmp(oid, TPL_OID_HMN) == 0;
}

unsigned tpl_san_kind(const GENERAL_NAME *g)
{
    switch (g->type) {
    case GEN_DNS: return TPL_SAN_DNS;
    case GEN_IPADD: return TPL_SAN_IP;
    case GEN_URI: return TPL_SAN_URI;
    case GEN_EMAIL: return TPL_SAN_EMAIL;
    default: return tpl_is_hmn(g) ? TPL_SAN_HMN : 0;
    }
}

int tpl_ski_sha1(X509 *x, unsigned char md[20])
{
    const unsigned char *pk = NULL;
    int pklen = 0;
    unsigned int mdlen = 0;
    X509_PUBKEY *xpk = X509_get_X509_PUBKEY(x);
    return xpk && X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, xpk) == 1 &&
           EVP_Digest(pk, (size_t)pklen, md, &mdlen, EVP_sha1(), NULL) == 1 && mdlen == 20;
}
