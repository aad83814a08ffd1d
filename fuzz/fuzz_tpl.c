/* Fuzz the template parser (templates/NAME.tmpl are INI files parsed with libinih): any input
 * either loads or fails with "FILE:LINE: message", never crashes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tpl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/kl-fuzz-tpl-%d", (int)getpid());
        mkdir(dir, 0700);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/fz.tmpl", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        return 0;
    }
    fwrite(data, 1, size, f);
    fclose(f);
    tpl *t = NULL;
    if (tpl_load(dir, "fz", &t) == KL_OK) {
        tpl_free(t);
    } else if (!strstr(kl_errmsg(), "fz.tmpl")) {
        abort(); /* every load error names the file */
    }
    unlink(path);
    return 0;
}
