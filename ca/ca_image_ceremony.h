/* keyline: sign-image as a quorum ceremony (docs/firmware.md "Release keys"). A firmware key
 * listed in [ceremony] release-keys signs only this way: officers approve a request that names
 * the key, every option, the input's path and its SHA-256 and the output's path; the run signs
 * only if the input still has that hash. The row is in ca/ceremony_ops.c. */
#ifndef KL_CA_IMAGE_CEREMONY_H
#define KL_CA_IMAGE_CEREMONY_H

#include "ceremony.h"

/* At proposal: the options checked, `in` and `out` made absolute, `in-sha256` set from the
 * file (or, when given, checked against it). KL_EUSAGE / KL_EPOLICY / the file's errors. */
kl_rc ca_image_ceremony_prep(ceremony_kvs *params) KL_WUR;
/* Run an approved request: read `in`, refuse (KL_EPOLICY) when its SHA-256 is not the approved
 * one, sign, write `out` and record (ca_image_sign: recorded before `out` appears). Results: sha256
 * (the image hash), key-hash, key-serial, out. */
kl_rc ca_image_ceremony_run(ca_ctx *ca, const ceremony_req *r, const char *actor,
                            ceremony_kvs *res) KL_WUR;

#endif
