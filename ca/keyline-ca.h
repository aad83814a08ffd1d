/* keyline-ca: shared pieces of the command-line tool (one cmd_*.c file per subcommand). */
#ifndef KEYLINE_CA_TOOL_H
#define KEYLINE_CA_TOOL_H

#include <getopt.h>
#include "ca.h"

typedef struct {
    const char *config_path;
    kl_conf *conf;
    char actor[96];
} cli;

typedef kl_rc (*cli_fn)(cli *c, int argc, char **argv);

typedef struct {
    const char *name;
    cli_fn fn;
    const char *usage; /* arguments */
    const char *help;  /* one line */
} cli_cmd;

/* Dispatch argv[0] among a table (subcommand groups like "ca" and "audit" use it too). */
kl_rc cli_dispatch(cli *c, const cli_cmd *table, const char *group, int argc, char **argv);
/* getopt_long for keyline-ca and its commands (each sets optind = 0 before its loop, which
 * starts a new count): an option that takes a value, given twice, is refused as getopt refuses
 * an unknown one (a message on stderr, '?'), for the last value silently winning would act on
 * one of two serials, labels or files the user named. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
/* Print the usage of one command to stdout. */
void cli_usage(const cli_cmd *cmd, const char *group);
/* UTC time as 2026-11-25T20:00:00Z; "-" for 0 (not set). */
void cli_time(time_t t, char *buf, size_t n);
/* KL_EUSAGE when --out `out` would write over the store (database, -wal, -shm, -journal), the
 * configuration, the PIN file or the SoftHSM configuration: compared by device and inode when
 * both exist, else by resolved path (links followed). KL_OK for NULL or "-" (stdout). Commands
 * that act before they write (issue, crl) call it first, so a refusal leaves nothing behind. */
kl_rc cli_out_check(cli *c, const char *out);
/* Write bytes to --out (atomic; cli_out_check first) or stdout. */
kl_rc cli_output(cli *c, const char *out, const void *data, size_t len);
kl_rc cli_open(cli *c, int with_hsm, ca_ctx **out);
/* Load c->conf from c->config_path once (kl_conf_load: unknown keys refused). */
kl_rc cli_conf(cli *c) KL_WUR;
/* PEM of the first n certificates (or one) to --out (atomic) or stdout. */
kl_rc cli_output_certs(cli *c, const char *out, STACK_OF(X509) * certs, int n);
kl_rc cli_output_cert(cli *c, const char *out, X509 *x);
/* Sign and publish a fresh CRL of `issuer` (ca_crl) and say so on stderr, with `why`; the CRL
 * to *out when out is not NULL. */
kl_rc cli_crl_publish(ca_ctx *ca, const char *issuer, const char *why, X509_CRL **out);

kl_rc cmd_ca(cli *c, int argc, char **argv);
kl_rc cmd_issue(cli *c, int argc, char **argv);
kl_rc cmd_revoke(cli *c, int argc, char **argv);
kl_rc cmd_crl(cli *c, int argc, char **argv);
kl_rc cmd_list(cli *c, int argc, char **argv);
kl_rc cmd_show(cli *c, int argc, char **argv);
kl_rc cmd_audit(cli *c, int argc, char **argv);
kl_rc cmd_device(cli *c, int argc, char **argv);
kl_rc cmd_request(cli *c, int argc, char **argv);
kl_rc cmd_config(cli *c, int argc, char **argv);
kl_rc cmd_officer(cli *c, int argc, char **argv);
kl_rc cmd_ceremony(cli *c, int argc, char **argv);
kl_rc cmd_maintain(cli *c, int argc, char **argv);
kl_rc cmd_ocsp_signer(cli *c, int argc, char **argv);
kl_rc cmd_order(cli *c, int argc, char **argv);
kl_rc cmd_matter(cli *c, int argc, char **argv);
kl_rc cmd_sign_image(cli *c, int argc, char **argv);
kl_rc cmd_store(cli *c, int argc, char **argv);
/* list --images (cmd_image.c): the image signings in the store, as a table or JSON. */
kl_rc cli_list_images(cli *c, int as_json);

#endif
