/* Shared by the benchmark programs: figures in the form scripts/bench collects
 * (bench/report.py -> bench/results.json and bench/results.md), and the crypto floor of one
 * issuance, the limit issuance rates are measured against.
 *
 * A figure is a JSON line appended to the file named by $KL_BENCH_RESULTS (nothing when unset)
 * and a line on stdout. Its limit is named; the value may be given or left to report.py,
 * which takes the figure of that name measured in the same run (limit_value < 0). */
#ifndef KL_BENCH_LIB_H
#define KL_BENCH_LIB_H

#include <openssl/evp.h>
#include <openssl/x509.h>

/* name: [a-z0-9_.]; unit: "1/s", "s", "MB", "ratio" ...; limit_name NULL: no limit;
 * target: the ratio value/limit the issue asks for (0: none). */
void bench_figure(const char *name, double value, const char *unit, const char *limit_name,
                  double limit_value, double target);
/* The same with the most ratio to the limit a target allows (times, memory: lower is better). */
void bench_figure_max(const char *name, double value, const char *unit, const char *limit_name,
                      double limit_value, double target_max);

/* The crypto floor of one issuance (docs/performance.md): per operation one signature with
 * `hsm_key` (in the token) over a certificate-sized TBS, the proof-of-possession check of `csr`
 * and the verification of `cert` against `ca_pub`: the three public-key operations every
 * ca_issue() needs, nothing else, each check in its cheapest form (SHA-256 and ECDSA_verify
 * with keys built once; EC keys only). `threads` threads for `seconds`; operations per second,
 * or -1 when an operation failed. */
double bench_crypto_floor(EVP_PKEY *hsm_key, X509_REQ *csr, X509 *cert, EVP_PKEY *ca_pub,
                          int threads, double seconds);

/* Raw signing: ECDSA/RSA signatures of SHA-256 digests with `hsm_key`, per second. */
double bench_raw_sign(EVP_PKEY *hsm_key, int threads, double seconds);
/* The same with the key `label` of the token keyline.conf `conf_path` names (its [hsm] PIN);
 * -1 with the reason on stderr when the token or key cannot be had. */
double bench_raw_sign_label(const char *conf_path, const char *label, int threads, double seconds);

double bench_now(void);
/* The median of v[0..n) (n >= 1), which it sorts in place. */
double bench_median(double *v, int n);

#endif
