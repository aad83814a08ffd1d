/* keyline-devsim --update FILE: the device verifies a firmware image with kl_dev_verify_image
 * (the firmware keys and security counter it holds) and, when it is accepted, "installs" it:
 * records the image's version and counter in its state (kl_dev_image_installed). */
#ifndef KL_DEVSIM_UPDATE_H
#define KL_DEVSIM_UPDATE_H

#include <stdio.h>

#include "devsim_port.h"

/* Exit status of keyline-devsim --update: 0 installed, 4 refused (the reason on stderr, e.g.
 * "update refused: image hash mismatch"), 1 the file or the device's flash could not be read. */
#define DEVSIM_UPDATE_REFUSED 4
int devsim_update(devsim_port *port, const char *image_path, FILE *out);

#endif
