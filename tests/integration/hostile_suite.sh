#!/usr/bin/env bash
# The counted hostile suite (issue 18, item 5): every case of tests/hostile/cases.tsv (CSRs
# through keyline-ca issue and EST, HTTP, TLS, OCSP, the CA protocol, keyline.conf) against a
# live keyline-cad + keyline-estd, by tests/hostile/run.py, which prints the count tried and
# the count by target and fails on any case whose outcome or reason differs, on a server that
# dies or stops answering, and on any certificate issued by a refused case.
# HOSTILE_ONLY="id-prefix ..." runs a subset.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
# short deadlines so that the slow-client cases end quickly
est_write_conf "max-body = 16384" "request-timeout = 2" "timeout = 2"
est_start

mkdir -p "$D/hostile"
export HOSTILE_DIR=$D/hostile KL_BIN=$BIN KL_CONF EST_PORT EST_HTTP_PORT EST_USER EST_PASS
export ESTD_LOG=$D/estd.log CAD_LOG=$D/cad.log CAD_SOCK=$D/cad.sock ROOT_CA=$D/root1.pem ESTD_PID=$EST_PID CAD_PID
export ISSUE_ARGS="--issuer field1 --template device-ldevid"
# shellcheck disable=SC2086
python3 "$KL_SRC/tests/hostile/run.py" "$KL_SRC/tests/hostile/cases.tsv" ${HOSTILE_ONLY:-} ||
    die "hostile suite: failures above"
est_stop
ok "hostile suite passed; both daemons exit 0 on SIGTERM"
