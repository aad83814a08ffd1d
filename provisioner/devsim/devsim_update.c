/* keyline-devsim --update (devsim_update.h). */
#include "devsim_update.h"

#include <stdint.h>
#include <stdlib.h>

#include "kl_dev_image.h"
#include "kl_file.h"

/* Largest image the simulator takes: a big microcontroller slot. */
#define DEVSIM_IMAGE_MAX (16u * 1024u * 1024u)

int devsim_update(devsim_port *port, const char *image_path, FILE *out)
{
    uint8_t *img = NULL;
    size_t len = 0;
    kl_img_info info, before;
    if (kl_file_read(image_path, DEVSIM_IMAGE_MAX, &img, &len) != KL_OK) {
        fprintf(stderr, "keyline-devsim: --update %s: %s\n", image_path, kl_errmsg());
        return 1;
    }
    int rc = kl_dev_image_state(&devsim_port_ops, port, &before);
    if (rc == KL_IMG_OK) {
        rc = kl_dev_verify_image(&devsim_port_ops, port, img, len, &info);
    }
    free(img);
    if (rc != KL_IMG_OK) {
        fprintf(stderr, "keyline-devsim: update refused: %s\n", kl_img_strerror(rc));
        return rc == KL_IMG_EPORT ? 1 : DEVSIM_UPDATE_REFUSED;
    }
    rc = kl_dev_image_installed(&devsim_port_ops, port, &info);
    if (rc != KL_IMG_OK) {
        fprintf(stderr, "keyline-devsim: the image verified but could not be recorded: %s\n",
                kl_img_strerror(rc));
        return 1;
    }
    fprintf(out, "installed %u.%u.%u+%lu (security counter %lu, was %u.%u.%u+%lu counter %lu)\n",
            info.major, info.minor, info.revision, (unsigned long)info.build,
            (unsigned long)info.security_counter, before.major, before.minor, before.revision,
            (unsigned long)before.build, (unsigned long)before.security_counter);
    return 0;
}
