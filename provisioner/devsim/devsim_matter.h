/* keyline-devsim: the Matter side of the simulated device (issue 19): what --print-matter
 * prints from the device's flash. */
#ifndef KL_DEVSIM_MATTER_H
#define KL_DEVSIM_MATTER_H

#include <stdio.h>

#include "devsim_port.h"

/* Print the JSON object of the Matter data the device holds: dac and pai (PEM), cd (base64),
 * discriminator, salt and verifier (base64), iterations, unique_id (hex). Returns 0, or 1
 * after a message on stderr when the device holds no (or no valid) Matter data. */
int devsim_matter_print(devsim_port *port, const char *state_file, FILE *out);

#endif
