/* keyline-provision: the Matter step of the device flow and the Matter CSR rule
 * (st_matter_flow.c; the onboarding data itself is st_matter.h). */
#ifndef KL_ST_MATTER_FLOW_H
#define KL_ST_MATTER_FLOW_H

#include <jansson.h>

#include "st.h"

/* wanted: [station] matter = yes and the device gets a certificate delivered. */
int st_want_matter(const st_flow *f);
/* MATTER between PUTTRUST and CHALLENGE: fresh onboarding data, sent; the label written;
 * f->o->matter filled. */
kl_rc st_step_matter(st_flow *f) KL_WUR;
/* The CSR of a Matter device: a P-256 key and the subject CN MODEL, serialNumber HW_SERIAL,
 * Matter VendorID, Matter ProductID (line-protocol.md 4.3) with the configured VID and PID.
 * KL_EPOLICY naming what is wrong. */
kl_rc st_matter_csr_check(X509_REQ *req, const st_matter_cfg *m, const st_hello *h) KL_WUR;
/* The results line's "matter" object: qr, manual, discriminator (and label when written). */
json_t *st_matter_result_json(const st_matter_result *r);

#endif
