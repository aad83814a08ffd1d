/* keyline: the daemons' shared command line (kl_daemon.h). */
#include "kl_daemon.h"

#include <getopt.h>

#include "kl_err.h"
#include "kl_log.h"
#include "kl_version.h"

int kl_daemon_args(int argc, char **argv, const char *prog, void (*usage)(FILE *),
                   const char **conf_path)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    *conf_path = kl_conf_default_path();
    if (kl_log_configure(NULL, prog) != KL_OK) {
        fprintf(stderr, "%s: %s\n", prog, kl_errmsg());
        return 2;
    }
    int ch;
    while ((ch = getopt_long(argc, argv, "c:vVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': *conf_path = optarg; break;
        case 'v': kl_log_set_level(KL_LOG_DEBUG); break;
        case 'V': kl_version_print(prog); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}
