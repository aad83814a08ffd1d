# Device claims across station processes sharing one store: a hardware serial is provisioned
# by one flow at a time, whichever station process or fixture it is plugged into, and the
# pending sweep of one station never revokes a certificate that another station is resuming.
source "$KL_SRC/tests/integration/station_common.sh"
ST_TIMEOUT_MS=3000 st_setup
st_fixture 1
st_fixture 2
F1="$KL_TEST_DIR/fix1"; F2="$KL_TEST_DIR/fix2"

# 1. a cloned serial on two stations (two processes) at once: the second is refused and names
#    the first; one certificate in the end
st_dev 1 C-clone --misbehave slow --delay-ms 500
"$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 & # $! is the station itself
sa=$!; st_pids+=($sa)
st_wait_grep "C-clone: GENKEY" station.log 20 || fail "clone: first station never started"
"$KDEV" --port "$KL_TEST_DIR/dev2" --serial C-clone --state "$KL_TEST_DIR/C-clone-2.state" \
  >>"$KL_TEST_DIR/C-clone-2.log" 2>&1 &
c2=$!; st_pids+=($c2)
if timeout 60 "$KPROV" -c "$KL_CONF" --port "$F2" --count 1 >>station-b.log 2>&1; then
  fail "clone: second station exit 0"
fi
grep -q "hardware serial C-clone is already being provisioned on $F1 (pid $sa)" station-b.log ||
  { tail -5 station-b.log; fail "clone: second station did not name the first"; }
wait $sa || { tail -20 station.log; fail "clone: first station exit"; }
kill $c2 2>/dev/null || true; wait $c2 2>/dev/null || true
st_check_device C-clone
[ "$(st_all_count C-clone)" = 1 ] || fail "clone: more than one certificate"
ok "cloned serial on two station processes: refused by the second, which names $F1 (pid $sa)"

# 2. the first station is killed mid-flow (kill -9, its claim stays in the store): the device,
#    replugged into the other station, is resumed there at once (the holder's pid is gone)
st_dev 1 K-dev --misbehave slow --delay-ms 500
"$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 & # $! is the station itself
sa=$!; st_pids+=($sa)
st_wait_grep "K-dev: issued pending certificate" station.log 30 || fail "kill: never issued"
kill -9 $sa; wait $sa 2>/dev/null || true
st_unplug 1
"$KDEV" --port "$KL_TEST_DIR/dev2" --serial K-dev --state "$KL_TEST_DIR/K-dev.state" \
  >>"$KL_TEST_DIR/K-dev.log" 2>&1 &
k2=$!; st_pids+=($k2)
st_station --port "$F2" --count 1 || { tail -20 station.log; fail "kill: second station exit"; }
[ "$(st_result K-dev action)" = resumed ] || fail "kill: action $(st_result K-dev action)"
st_check_device K-dev
[ "$(st_all_count K-dev)" = 1 ] || fail "kill: more than one certificate"
st_wait_pid $k2 5 || { kill $k2 2>/dev/null || true; wait $k2 2>/dev/null || true; }
ok "claim of a killed station taken over: device resumed on another station"

# 3. sweep vs resume: station A resumes a pending certificate older than station B's pending
#    window while B starts and sweeps; B keeps it, A confirms it
st_dev 1 S-res --misbehave vanish --vanish-at puttrust
if st_station --port "$F1" --count 1; then fail "sweep: vanish run exit 0"; fi
pend=$(st_result S-res cert_serial)
[ -n "$pend" ] || fail "sweep: no pending certificate"
sed 's/^pending-window = 3600/pending-window = 1/' "$KL_CONF" >conf-b
sleep 2.2
st_dev 1 S-res --misbehave slow --delay-ms 700
"$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 & # $! is the station itself
sa=$!; st_pids+=($sa)
st_wait_grep "S-res: resuming with pending certificate $pend" station.log 30 || fail "sweep: no resume"
timeout 30 "$KPROV" -c conf-b --port "$F2" --count 1 >>station-b.log 2>&1 &
sb=$!; st_pids+=($sb)
# B's sweep runs in keyline-cad (claim as B, re-check, revoke), which logs what it keeps
st_wait_grep "sweep: pending certificate $pend of S-res kept: $F1 (pid $sa) is provisioning" cad.log 20 ||
  { tail -5 station-b.log cad.log; fail "sweep: B did not keep the certificate A is resuming"; }
kill $sb; wait $sb 2>/dev/null || true
wait $sa || { tail -20 station.log; fail "sweep: resuming station exit"; }
[ "$(st_result S-res action)" = resumed ] || fail "sweep: action $(st_result S-res action)"
st_check_device S-res
kca show --serial "$pend" | grep -qi revoked && fail "sweep: certificate $pend revoked under a resume"
[ "$(st_valid_count S-res)" = 1 ] || fail "sweep: not one valid certificate"
ok "pending sweep of another station keeps the certificate being resumed ($pend)"

# ... and without a flow holding it, the same sweep revokes an abandoned one
st_dev 1 S-ab --misbehave vanish --vanish-at puttrust
if st_station --port "$F1" --count 1; then fail "sweep: second vanish run exit 0"; fi
ab=$(st_result S-ab cert_serial)
sleep 2.2
st_unplug 1
timeout 30 "$KPROV" -c conf-b --port "$F2" --count 1 >>station-b.log 2>&1 &
sb=$!; st_pids+=($sb)
st_wait_grep "sweep: revoked pending certificate $ab of S-ab" cad.log 20 || fail "sweep: abandoned not revoked"
kill $sb; wait $sb 2>/dev/null || true
ok "unclaimed abandoned certificate revoked by the same sweep"

# 4. a device that arrives while a pending sweep (here: of another station, simulated by its
#    claim row) holds it waits for the sweep instead of failing as a "clone"
sleep 2.5 &
holder=$!; st_pids+=($holder)
sqlite3 "$KL_TEST_DIR/keyline.db" "INSERT INTO claims VALUES ('W-1', 'other-station', '$(hostname)', $holder, 'pending sweep', $(( $(date +%s) + 600 )))"
st_dev 1 W-1
st_station --port "$F1" --count 1 || { tail -20 station.log; fail "wait for sweep: station exit"; }
grep -q "W-1: waiting for pending sweep (pid $holder) to finish" station.log || fail "the flow did not wait for the sweep"
st_check_device W-1
ok "device held by a pending sweep: the flow waits, then provisions it"

# 5. the lease outlasts the longest phase the timeouts allow: slow-timeout 60 s x 4 attempts x
#    16 exchanges + 60 s = 3964 s (the 600 s minimum with the timeouts above)
sed -i 's/^slow-timeout-ms = .*/slow-timeout-ms = 60000/' "$KL_CONF"
st_dev 1 L-1 --misbehave slow --delay-ms 400
"$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 &
sa=$!; st_pids+=($sa)
st_wait_grep "L-1: GENKEY" station.log 20 || fail "lease: flow never started"
left=$(sqlite3 "$KL_TEST_DIR/keyline.db" "SELECT expires - strftime('%s','now') FROM claims WHERE device_id = 'L-1'")
[ -n "$left" ] && [ "$left" -ge 3900 ] && [ "$left" -le 3964 ] || fail "lease: claim expires in '$left' s, expected ~3964"
wait $sa || { tail -20 station.log; fail "lease: station exit"; }
[ -z "$(sqlite3 "$KL_TEST_DIR/keyline.db" "SELECT 1 FROM claims WHERE device_id = 'L-1'")" ] || fail "lease: claim not released"
ok "claim lease follows the timeouts ($left s left during the flow) and is released at the end"
kca audit verify >/dev/null || fail "audit verify"
