/* keyline: Matter device attestation certificates (issue 19, docs/matter.md).
 *
 * The Matter Device Attestation PKI is PAA (root) -> PAI (intermediate) -> DAC (device), all
 * ECDSA with SHA-256 on P-256, each subject carrying the Matter VendorID and ProductID as
 * attributes of their own (Matter Core Specification 6.2.2, "Device Attestation Certificate
 * (DAC)" and following). A template opts in with `[template] matter = paa | pai | dac`; this
 * file holds what is Matter-specific: the two attribute OIDs, the template consistency
 * check, the policy check on a request (VID/PID against the issuing PAI) and the lint of a
 * built certificate against the profile. Library code: no printing, errors through kl_fail. */
#ifndef KL_MATTER_H
#define KL_MATTER_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "tpl.h"

/* Matter Core Specification 6.2.2.1 (Encoding of Vendor ID and Product ID in subject and
 * issuer fields): "1.3.6.1.4.1.37244.2.1" Matter VendorID, "...2.2" Matter ProductID, each a
 * UTF8String of exactly four upper-case hexadecimal digits. */
#define MATTER_OID_VID "1.3.6.1.4.1.37244.2.1"
#define MATTER_OID_PID "1.3.6.1.4.1.37244.2.2"
/* Names the template grammar and `--subject` use for them. */
#define MATTER_SN_VID "matter-vid"
#define MATTER_SN_PID "matter-pid"

typedef enum { MATTER_NONE = 0, MATTER_PAA, MATTER_PAI, MATTER_DAC } matter_kind;

/* The NIDs of the two attributes, registered with OpenSSL on first use (thread-safe). 0 only
 * when OpenSSL cannot register them (out of memory). */
int matter_nid_vid(void);
int matter_nid_pid(void);

/* "paa" "pai" "dac" -> MATTER_PAA..; -1 otherwise. */
int matter_kind_from_name(const char *s);
const char *matter_kind_name(int kind);

/* A VID or PID as the operator writes it: "0xFFF1", "0XFFF1" or "FFF1" (1-4 hex digits after
 * an optional 0x). KL_EUSAGE naming `what` otherwise. */
kl_rc matter_id_parse(const char *what, const char *s, uint16_t *out) KL_WUR;

/* The VID (nid = matter_nid_vid()) or PID attribute of a name: *present 0 when absent, else 1
 * and its value. KL_EPOLICY when it appears twice, is not a UTF8String or is not exactly four
 * upper-case hex digits. */
kl_rc matter_name_id(const X509_NAME *name, int nid, int *present, uint16_t *out) KL_WUR;

/* Append the VID (and, when pid is not NULL, the PID) attribute to an RFC 4514 subject string
 * for `keyline-ca ca create --vid/--pid`: out = subject + ",matter-pid=8000,matter-vid=FFF1"
 * (RFC 4514 lists the last RDN first). KL_EUSAGE on a bad value or a subject that already names
 * them; KL_EUSAGE when out is too small. */
kl_rc matter_subject_append(const char *subject, const char *vid, const char *pid, char *out,
                            size_t cap) KL_WUR;

/* Template consistency for `matter = ...` (called by tpl_load): NULL when fine, else a static
 * message naming the key at fault in *key. */
const char *matter_tpl_problem(const tpl *t, const char **key);

/* Policy on a request before anything is built: the subject's VID/PID against the template's
 * kind and against the issuer (a DAC's VID must be its PAI's, its PID too when the PAI has
 * one; a PAI's VID its PAA's when the PAA has one). KL_EPOLICY with the reason. */
kl_rc matter_policy_check(const tpl *t, const X509_NAME *subject, X509 *issuer) KL_WUR;

/* Lint a built certificate against the Matter profile of t->matter (tpl_lint calls it for
 * every Matter template). issuer NULL: self-signed (a PAA). KL_EINTERNAL "lint: matter: ...". */
kl_rc matter_lint(const tpl *t, X509 *cert, X509 *issuer) KL_WUR;

#endif
