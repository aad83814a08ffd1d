# Station test helpers (sourced by tests/integration/station_*.sh), and, when run on its own as
# a ctest test, the command-line contract checks of keyline-provision and keyline-devsim.
#
# Fixtures are pty pairs made by socat: the station opens $KL_TEST_DIR/fixN, the simulated
# device $KL_TEST_DIR/devN. socat keeps both ends while devices come and go (replug).
# The station is a client of keyline-cad (docs/ca-protocol.md): st_setup starts keyline-cad
# (socket $KL_TEST_DIR/cad.sock, log cad.log; it derives profile "station" from [station]
# issuer/template) and st_cleanup stops it with SIGTERM, which must exit 0.
source "$KL_SRC/tests/lib/common.sh"

KPROV="$KL_BIN/keyline-provision"
KDEV="$KL_BIN/keyline-devsim"
st_pids=()
CAD_PID=

# st_cad_start: keyline-cad on $KL_CONF, until it answers on cad.sock (10 s); CAD_PID
st_cad_start() {
  "$KL_BIN/keyline-cad" -c "$KL_CONF" >>"$KL_TEST_DIR/cad.log" 2>&1 &
  CAD_PID=$!
  local i
  for i in $(seq 1 100); do
    "$KL_BIN/kl_cad_client" "$KL_TEST_DIR/cad.sock" hello version=1 >/dev/null 2>&1 && return 0
    kill -0 "$CAD_PID" 2>/dev/null || { cat "$KL_TEST_DIR/cad.log" >&2; fail "keyline-cad exited during start-up"; }
    sleep 0.1
  done
  fail "keyline-cad did not answer on $KL_TEST_DIR/cad.sock"
}

# st_cad_stop: SIGTERM; keyline-cad must exit 0 (within 20 s)
st_cad_stop() {
  [ -n "$CAD_PID" ] || return 0
  local pid=$CAD_PID rc=0
  CAD_PID=
  kill -TERM "$pid" 2>/dev/null || true
  st_wait_pid "$pid" 20 || rc=$?
  [ "$rc" = 0 ] || { tail -20 "$KL_TEST_DIR/cad.log" >&2; fail "keyline-cad exited $rc on SIGTERM"; }
}

st_cleanup() {
  local st=$? p
  for p in "${st_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${st_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$CAD_PID" ]; then
    if [ "$st" = 0 ]; then
      st_cad_stop
    else
      kill -TERM "$CAD_PID" 2>/dev/null || true
      wait "$CAD_PID" 2>/dev/null || true
      echo "--- cad.log (last lines)" >&2
      tail -20 "$KL_TEST_DIR/cad.log" >&2 || true
    fi
  fi
  # A sanitizer report in any station or devsim log fails the test, even where the test
  # expected the process to fail anyway.
  if grep -l "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$KL_TEST_DIR"/*.log 2>/dev/null; then
    echo "FAIL: sanitizer report in the logs above" >&2
    exit 1
  fi
}
trap st_cleanup EXIT

# st_setup [extra [station] lines...]: CA hierarchy + a [station] section, keyline-cad started
st_setup() {
  make_hierarchy
  {
    echo
    echo "[cad]"
    echo "socket = cad.sock"
    echo
    echo "[station]"
    echo "issuer = factory1"
    echo "template = device-idevid"
    echo "timeout-ms = ${ST_TIMEOUT_MS:-600}"
    echo "slow-timeout-ms = ${ST_SLOW_TIMEOUT_MS:-${ST_TIMEOUT_MS:-600}}"
    echo "retries = 3"
    echo "pending-window = 3600"
    echo "est-url = https://est.example.test/.well-known/est"
    echo "results = results.jsonl"
    local l; for l in "$@"; do echo "$l"; done
  } >>"$KL_CONF"
  st_cad_start
}

# st_fixture N: pty pair fixN (station side) <-> devN (device side)
st_fixture() {
  socat pty,raw,echo=0,link="$KL_TEST_DIR/fix$1" pty,raw,echo=0,link="$KL_TEST_DIR/dev$1" 2>/dev/null &
  st_pids+=($!)
  local i
  for i in $(seq 1 50); do
    [ -e "$KL_TEST_DIR/fix$1" ] && [ -e "$KL_TEST_DIR/dev$1" ] && return 0
    sleep 0.1
  done
  fail "socat did not create fixture $1"
}

# st_dev N SERIAL [devsim args...]: plug a simulated device into fixture N (background);
# its pid is in $st_last_dev, its state in $KL_TEST_DIR/SERIAL.state, its log in SERIAL.log
declare -A st_fixdev
st_dev() {
  local n=$1 serial=$2; shift 2
  st_unplug "$n"
  "$KDEV" --port "$KL_TEST_DIR/dev$n" --serial "$serial" --state "$KL_TEST_DIR/$serial.state" "$@" \
    >>"$KL_TEST_DIR/$serial.log" 2>&1 &
  st_last_dev=$!
  st_fixdev[$n]=$st_last_dev
  st_pids+=($st_last_dev)
}
# st_unplug N: the device on fixture N leaves (waits up to 5 s for a locked devsim to exit by
# itself, then pulls it)
st_unplug() {
  local p=${st_fixdev[$1]:-}
  [ -n "$p" ] || return 0
  st_wait_pid "$p" 5 >/dev/null 2>&1 || { kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }
  st_fixdev[$1]=
}

# st_station ARGS...: run the station in the foreground (log in station.log), bounded in time
st_station() {
  timeout "${ST_STATION_TIMEOUT:-120}" "$KPROV" -c "$KL_CONF" "$@" >>station.log 2>&1
}

# st_result SERIAL FIELD: FIELD of the LAST result line for SERIAL
st_result() {
  python3 - "$1" "$2" <<'PY'
import json, sys
last = None
for line in open("results.jsonl"):
    r = json.loads(line)
    if r.get("hw_serial") == sys.argv[1]:
        last = r
v = None if last is None else last
for k in sys.argv[2].split("."):
    v = None if v is None else v.get(k)
print("" if v is None else v)
PY
}

# st_valid_count SERIAL: number of certificates with status valid for the device id
st_valid_count() {
  kca list --status valid --json | python3 -c '
import json, sys
print(sum(1 for c in json.load(sys.stdin) if c.get("device_id") == sys.argv[1]))' "$1"
}
# st_all_count SERIAL: number of certificates (any status shown by list) for the device id
st_all_count() {
  kca list --json | python3 -c '
import json, sys
print(sum(1 for c in json.load(sys.stdin) if c.get("device_id") == sys.argv[1]))' "$1"
}

# st_check_device SERIAL: the device holds a certificate that chains to the factory CA, names
# its hardware serial and the device's own identity key, is the one the station reported and is
# the only valid one in the store.
st_check_device() {
  local s=$1
  "$KDEV" --state "$KL_TEST_DIR/$s.state" --print-cert >"$s.pem" || fail "$s: devsim has no certificate"
  openssl verify -CAfile root1.pem -untrusted factory1.pem "$s.pem" >/dev/null || fail "$s: openssl verify"
  openssl x509 -in "$s.pem" -noout -subject | grep -q "serialNumber *= *$s" || fail "$s: subject lacks serialNumber"
  # the certificate holds the key the device really has (read from its flash, not from the station)
  local ck dk
  ck=$(openssl x509 -in "$s.pem" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)
  dk=$("$KDEV" --state "$KL_TEST_DIR/$s.state" --print-key | openssl pkey -pubin -outform DER | sha256sum)
  [ "$ck" = "$dk" ] || fail "$s: certificate key differs from the device's identity key"
  local serial; serial=$(openssl x509 -in "$s.pem" -noout -serial | cut -d= -f2)
  [ "$serial" = "$(st_result "$s" cert_serial)" ] || fail "$s: result cert_serial $(st_result "$s" cert_serial) != device cert $serial"
  [ "$(st_result "$s" outcome)" = ok ] || fail "$s: outcome $(st_result "$s" outcome)"
  [ "$(st_valid_count "$s")" = 1 ] || fail "$s: $(st_valid_count "$s") valid certificates"
  kca show --serial "$serial" | grep -qi "valid" || fail "$s: certificate $serial not valid in the store"
}

# Wait until pid exits (max N seconds); returns its exit status
st_wait_pid() {
  local pid=$1 n=${2:-30} i
  for i in $(seq 1 $((n * 10))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
    sleep 0.1
  done
  return 124
}

# Wait until FILE has a line matching PATTERN (max N seconds)
st_wait_grep() {
  local pat=$1 file=$2 n=${3:-30} i
  for i in $(seq 1 $((n * 10))); do
    grep -q -- "$pat" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run on its own: the command-line contract.
  "$KPROV" --help | grep -q -- "--port DEV" || fail "keyline-provision --help"
  "$KDEV" --help | grep -q -- "--print-cert" || fail "keyline-devsim --help"
  expect_fail "station without a port" "$KPROV" -c "$KL_CONF"
  expect_fail "station with a bad mode" "$KPROV" -c "$KL_CONF" --port /dev/null --mode foo
  expect_fail "--reprovision without --reason" "$KPROV" -c "$KL_CONF" --port /dev/null --reprovision
  expect_fail "--reason without --reprovision" "$KPROV" -c "$KL_CONF" --port /dev/null --reason superseded
  expect_fail "station without [station] issuer" "$KPROV" -c "$KL_CONF" --port /dev/null --count 1
  expect_fail "devsim with a bad serial" "$KDEV" --port /dev/null --serial "bad*serial" --state x.state
  expect_fail "devsim with a bad misbehaviour" "$KDEV" --port /dev/null --serial S1 --state x.state --misbehave explode
  expect_fail "print-cert without state" "$KDEV" --state nothing.state --print-cert
  st_setup
  expect_fail "station on a port that is not a tty" "$KPROV" -c "$KL_CONF" --port "$KL_CONF" --count 1
  # the station holds no PIN: a wrong one in its environment changes nothing, keyline-cad
  # (which holds the token) refuses to start with it
  st_fixture 1
  st_dev 1 CL-1
  KEYLINE_PIN=9999 st_station --port "$KL_TEST_DIR/fix1" --count 1 || { tail station.log; fail "station with a wrong PIN in its environment"; }
  ok "the station does not use a PIN (a wrong KEYLINE_PIN in its environment is ignored)"
  # what keyline-devsim prints must arrive: a full stdout is an error, not exit 0 and nothing
  for o in --print-cert --print-key --help; do
    set +e; "$KDEV" --state "$KL_TEST_DIR/CL-1.state" $o >/dev/full 2>full.err; st=$?; set -e
    [ $st = 1 ] && grep -qx "keyline-devsim: stdout: No space left on device" full.err ||
      fail "keyline-devsim $o > /dev/full: exit $st, $(cat full.err)"
  done
  "$KDEV" --state "$KL_TEST_DIR/CL-1.state" --print-cert | openssl x509 -noout || fail "keyline-devsim --print-cert"
  ok "keyline-devsim on a full stdout: exit 1, stdout: No space left on device"
  set +e; KEYLINE_PIN=9999 "$KL_BIN/keyline-cad" -c "$KL_CONF" 2>pin.err; st=$?; set -e
  [ $st = 5 ] && grep -q "wrong PIN" pin.err || fail "keyline-cad with a wrong PIN: exit $st, $(cat pin.err)"
  ok "keyline-cad refuses a wrong PIN with exit 5: $(cat pin.err)"
  # no keyline-cad: a clear error naming the socket
  sed 's/^socket = cad.sock/socket = nocad.sock/' "$KL_CONF" >nocad.conf
  set +e; "$KPROV" -c nocad.conf --port /dev/null --count 1 2>nocad.err; st=$?; set -e
  [ $st != 0 ] && grep -q "keyline-cad at .*nocad.sock" nocad.err || fail "no keyline-cad: exit $st, $(cat nocad.err)"
  ok "no keyline-cad: $(cat nocad.err)"
  # [station] issuer must be what keyline-cad's profile issues under
  sed -i 's/^issuer = factory1/issuer = nosuchca/' "$KL_CONF"
  set +e; "$KPROV" -c "$KL_CONF" --port /dev/null --count 1 2>iss.err; st=$?; set -e
  [ $st != 0 ] && grep -q "issuer is 'nosuchca' but keyline-cad's profile 'station' issues under 'factory1'" iss.err ||
    fail "station with another issuer than its profile: exit $st, $(cat iss.err)"
  ok "station whose issuer is not its profile's refused: $(cat iss.err)"
  # its work folder: in $TMPDIR, gone after SIGTERM (keyline-devsim(1), ENVIRONMENT)
  st_fixture 2
  mkdir -m 700 devtmp
  TMPDIR="$KL_TEST_DIR/devtmp" "$KDEV" --port "$KL_TEST_DIR/dev2" --serial TMP-1 \
    --state "$KL_TEST_DIR/TMP-1.state" >>TMP-1.log 2>&1 &
  dp=$!
  st_pids+=($dp)
  for _ in $(seq 1 100); do compgen -G "devtmp/keyline-devsim.*/*" >/dev/null && break; sleep 0.05; done
  compgen -G "devtmp/keyline-devsim.*/*" >/dev/null || fail "keyline-devsim: no work folder in \$TMPDIR"
  kill -TERM $dp
  wait $dp || true
  [ -z "$(ls -A devtmp)" ] || fail "keyline-devsim left its work folder after SIGTERM: $(ls -A devtmp)"
  ok "keyline-devsim unpacks its state in \$TMPDIR and removes it on SIGTERM"
  ok "command-line contract"
fi
