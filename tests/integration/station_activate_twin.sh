# One valid identity per hardware serial, kept by keyline-cad at activation: while a station
# provisions a device, a valid IDevID of the same serial appears (a twin with the same serial
# provisioned elsewhere; here an officer's keyline-ca issue --device-id). The station's
# certificate is then not activated: the device's line says so and why, and does not promise
# that the next HELLO activates it (it would be refused the same); the store keeps one valid
# IDevID for the serial, the station's certificate stays pending.
source "$KL_SRC/tests/integration/station_common.sh"
ST_TIMEOUT_MS=3000 st_setup
st_fixture 1
F1="$KL_TEST_DIR/fix1"

st_dev 1 T-twin --misbehave slow --delay-ms 800 # PUTCERT..LOCK: over 3 s for the twin below
"$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 & # $! is the station itself
sa=$!; st_pids+=($sa)
st_wait_grep "T-twin: issued pending certificate" station.log 30 || fail "the station never issued"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout twin.key \
  -subj "/CN=Sensor/serialNumber=T-twin" -out twin.csr 2>/dev/null
kca issue --issuer factory1 --template device-idevid --csr twin.csr --device-id T-twin \
  --out twin.pem >/dev/null || fail "the twin's IDevID"
twin=$(openssl x509 -in twin.pem -noout -serial | cut -d= -f2)
if st_wait_pid "$sa" 60; then fail "station exit 0 with the device's certificate not activated"; fi
pend=$(st_result T-twin cert_serial)
err=$(st_result T-twin error)
[ -n "$pend" ] && [ "$pend" != "$twin" ] || fail "the station's certificate: '$pend'"
grep -q "device locked, but $pend refused: certificate $pend not activated: its device holds valid certificate $twin of the same issuer and template" <<<"$err" ||
  fail "the device's error: $err"
! grep -q "activated when the device is seen again" <<<"$err" || fail "a promise the next HELLO cannot keep: $err"
[ "$(st_valid_count T-twin)" = 1 ] || fail "$(st_valid_count T-twin) valid IDevIDs for T-twin"
kca show --serial "$pend" | grep -qi "pending" || fail "the station's certificate: $(kca show --serial "$pend" | head -3)"
ok "a twin's valid IDevID appears mid-flow: the station's certificate is not activated (one valid IDevID), and its line says why"
