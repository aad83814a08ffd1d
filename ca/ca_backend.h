/* keyline: the CA context's store and token, for code that runs as the CA user only: the CA
 * service (ca/cad/), the officer's CLI (ca/cmd_*.c), benchmarks and tests of ca/. Front ends
 * never get these: they ask keyline-cad (docs/ca-protocol.md), and
 * tests/integration/frontend_links.sh fails if they link the store or the token again. */
#ifndef KL_CA_BACKEND_H
#define KL_CA_BACKEND_H

#include "ca.h"
#include "hsm.h"
#include "store.h"

store *ca_store(ca_ctx *ca);
hsm_ctx *ca_hsm(ca_ctx *ca); /* NULL when opened without the token */

#endif
