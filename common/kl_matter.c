/* Matter numbers (kl_matter.h). */
#include "kl_matter.h"

#include <stddef.h>

int kl_matter_vid_ok(uint32_t vid)
{
    return vid >= 1 && vid <= KL_MATTER_VID_MAX;
}

int kl_matter_passcode_valid(uint64_t p)
{
    /* Matter 5.1.7.1 Invalid Passcodes */
    static const uint32_t invalid[] = {0,        11111111, 22222222, 33333333, 44444444, 55555555,
                                       66666666, 77777777, 88888888, 99999999, 12345678, 87654321};
    if (p < 1 || p > KL_MATTER_PASSCODE_MAX) {
        return 0;
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (p == invalid[i]) {
            return 0;
        }
    }
    return 1;
}
