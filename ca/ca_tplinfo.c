/* keyline: what a template asks of a request, for front ends (EST /csrattrs) and the CA
 * service's device-binding rule, read from the template the CA enforces. */
#include <string.h>

#include "ca_internal.h"

kl_rc ca_template_info(ca_ctx *ca, const char *template_name, ca_tpl_info *out)
{
    const tpl *t = NULL;
    memset(out, 0, sizeof *out);
    kl_rc rc = ca_tpl_get(ca, template_name, &t);
    if (rc != KL_OK) {
        return rc;
    }
    out->key_types = t->key_types;
    out->is_ca = t->is_ca;
    /* A template whose subject takes serialNumber makes device certificates (IEEE 802.1AR:
     * the hardware serial): issued only with the device id. */
    out->device_cert = t->serial_number_from_device;
    for (int k = 0; k < TPL_MAX_ATTRS; k++) {
        if (t->subject_required[k] == NID_serialNumber ||
            t->subject_allowed[k] == NID_serialNumber) {
            out->device_cert = 1;
        }
    }
    return KL_OK;
}
