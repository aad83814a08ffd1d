/* keyline: the command line every daemon shares (keyline-cad, keyline-estd):
 *   -c, --config FILE   -v, --verbose   -V, --version   -h, --help
 * and the log set-up before it. */
#ifndef KL_DAEMON_H
#define KL_DAEMON_H

#include <stdio.h>

/* Parse argv. *conf_path gets -c FILE, else $KEYLINE_CONF, else the installed default.
 * Returns -1 to go on, or the exit status to leave with at once (0 after --help or --version,
 * 2 for a usage or log-configuration error, already reported on stderr with `usage`). */
int kl_daemon_args(int argc, char **argv, const char *prog, void (*usage)(FILE *),
                   const char **conf_path);

#endif
