/* Fuzz the INI config loader (keyline.conf) and template parser inputs via a temp file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kl_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/kl-fuzz-conf-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        return 0;
    }
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    kl_conf *c = NULL;
    if (kl_conf_load(&c, path) == KL_OK) {
        for (size_t i = 0; kl_conf_section(c, i); i++) {
            /* strict: a file that loads holds only the registry's sections */
            if (!kl_conf_section_known(kl_conf_section(c, i))) {
                abort();
            }
            (void)kl_conf_get(c, kl_conf_section(c, i), "path");
            (void)kl_conf_line(c, kl_conf_section(c, i), "issuer");
        }
        long v;
        if (kl_conf_get_long(c, "est", "max-body", 1, 0, 1000, &v) == KL_OK && v > 1000) {
            abort();
        }
        kl_conf_free(c);
    }
    unlink(path);
    return 0;
}
