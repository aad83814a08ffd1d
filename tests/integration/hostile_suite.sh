#!/usr/bin/env bash
# The counted hostile suite (issue 18, item 5): every case of tests/hostile/cases.tsv (CSRs
# through keyline-ca issue and EST, HTTP, TLS, OCSP, the CA protocol, keyline.conf, the line
# protocol) against a live keyline-cad + keyline-estd, by tests/hostile/run.py, which prints
# the count tried and the count by target and fails on any case whose outcome or reason
# differs, on a server that dies or stops answering, and on any certificate issued by a refused
# case.
# Line-protocol cases run keyline-provision on a socat pty pair (fix1/dev1) against a [station]
# profile. HOSTILE_ONLY="id-prefix ..." runs a subset.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
# the station's profile and a fixture (pty pair) for the line-protocol cases
cat >>"$KL_CONF" <<CONF

[station]
issuer = factory1
template = device-idevid
timeout-ms = 1500
retries = 3
pending-window = 3600
est-url = https://est.example.test/.well-known/est
results = results.jsonl
CONF
socat pty,raw,echo=0,link="$D/fix1" pty,raw,echo=0,link="$D/dev1" 2>/dev/null &
SOCAT_PID=$!
trap 'est_cleanup; kill "$SOCAT_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [ -e "$D/fix1" ] && [ -e "$D/dev1" ] && break; sleep 0.1; done
[ -e "$D/dev1" ] || die "socat did not create the fixture"
# short deadlines so that the slow-client cases end quickly
est_write_conf "max-body = 16384" "request-timeout = 2" "timeout = 2"
est_start

mkdir -p "$D/hostile"
export HOSTILE_DIR=$D/hostile KL_BIN=$BIN KL_CONF EST_PORT EST_HTTP_PORT EST_USER EST_PASS
export ESTD_LOG=$D/estd.log CAD_LOG=$D/cad.log CAD_SOCK=$D/cad.sock ROOT_CA=$D/root1.pem ESTD_PID=$EST_PID CAD_PID
export FIX_PORT=$D/fix1 DEV_PORT=$D/dev1
export ISSUE_ARGS="--issuer field1 --template device-ldevid"
# shellcheck disable=SC2086
python3 "$KL_SRC/tests/hostile/run.py" "$KL_SRC/tests/hostile/cases.tsv" ${HOSTILE_ONLY:-} ||
    die "hostile suite: failures above"
est_stop
ok "hostile suite passed; both daemons exit 0 on SIGTERM"
