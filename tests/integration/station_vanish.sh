# A device that vanishes mid-flow (unplugged, power cut) is reported failed; plugged in again
# with the same flash it is resumed with its pending certificate: never a second certificate.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1
st_fixture 2
F1="$KL_TEST_DIR/fix1"; F2="$KL_TEST_DIR/fix2"

# One device vanishes on PUTCERT (certificate stored, answer never sent), the other on
# CHALLENGE (certificate and anchors stored); in both modes.
for mode in csr inject; do
  a="V-$mode-putcert"; b="V-$mode-challenge"
  st_dev 1 $a --misbehave vanish --vanish-at putcert; d1=$st_last_dev
  st_dev 2 $b --misbehave vanish --vanish-at challenge; d2=$st_last_dev
  if st_station --port "$F1" --port "$F2" --mode $mode --count 2; then fail "$mode vanish: station exit 0"; fi
  st_wait_pid $d1 5 && fail "$a: devsim exit 0 although it vanished"
  st_wait_pid $d2 5 && fail "$b: devsim exit 0 although it vanished"
  [ "$(st_result $a outcome)" = failed ] || fail "$a: not reported failed"
  [ "$(st_result $a failed_phase)" = putcert ] || fail "$a: failed phase $(st_result $a failed_phase)"
  [ "$(st_result $b failed_phase)" = challenge ] || fail "$b: failed phase $(st_result $b failed_phase)"
  first_a=$(st_result $a cert_serial); first_b=$(st_result $b cert_serial)
  [ -n "$first_a" ] && [ -n "$first_b" ] || fail "$mode: vanished devices have no pending certificate"
  [ "$(st_valid_count $a)" = 0 ] || fail "$a: pending certificate listed as valid"
  ok "$mode: vanished devices reported failed ($(st_result $a error))"

  # replug: same flash, well-behaved now
  st_dev 1 $a; st_dev 2 $b
  st_station --port "$F1" --port "$F2" --mode $mode --count 2 || { tail -20 station.log; fail "$mode replug: station exit"; }
  for s in $a $b; do
    st_check_device $s
    [ "$(st_result $s action)" = resumed ] || fail "$s: action $(st_result $s action), not resumed"
    [ "$(st_all_count $s)" = 1 ] || fail "$s: more than one certificate"
  done
  [ "$(st_result $a cert_serial)" = "$first_a" ] || fail "$a: different certificate after replug"
  [ "$(st_result $b cert_serial)" = "$first_b" ] || fail "$b: different certificate after replug"
  ok "$mode: replugged devices resumed with their pending certificates, one certificate each"
done

# A device that locks itself but vanishes before its LOCK answer reaches the station: the
# passed CHALLENGE stays on record, so the replugged (locked) device is activated, not refused.
st_dev 1 LV-1 --misbehave vanish --vanish-at lock; d1=$st_last_dev
if st_station --port "$F1" --count 1; then fail "lock-vanish: station exit 0"; fi
st_wait_pid $d1 5 && fail "lock-vanish: devsim exit 0"
st_dev 1 LV-1
st_station --port "$F1" --count 1 || { tail -5 station.log; fail "lock-vanish: replug"; }
[ "$(st_result LV-1 action)" = activated ] || fail "lock-vanish: not activated ($(st_result LV-1 action))"
st_check_device LV-1
ok "device that vanished after locking itself is activated on replug"

# --count reached while another fixture is mid-flow: that device is interrupted (not a failed
# result, exit status 0) and finishes on the next run with one certificate.
st_unplug 1
st_dev 2 I-slow --misbehave slow --delay-ms 300
st_station --port "$F1" --port "$F2" --count 1 &
sp=$!
st_wait_grep "I-slow: GENKEY" station.log 20 || fail "interrupt: slow device never started"
st_dev 1 I-fast
wait $sp || { tail station.log; fail "interrupt: station exit"; }
[ "$(st_result I-fast outcome)" = ok ] || fail "interrupt: fast device"
[ -z "$(st_result I-slow outcome)" ] || fail "interrupted device was reported as a result"
grep -q "I-slow: interrupted at" station.log || fail "interruption not logged"
st_dev 2 I-slow
st_station --port "$F2" --count 1 || { tail station.log; fail "interrupt: second run"; }
st_check_device I-slow
[ "$(st_all_count I-slow)" = 1 ] || fail "interrupt: more than one certificate"
ok "device interrupted by --count on another fixture: not a failure, finished on the next run"

# A pending certificate abandoned longer than the pending window is revoked at station start.
st_dev 1 V-abandon --misbehave vanish --vanish-at puttrust
if st_station --port "$F1" --count 1; then fail "abandon: station exit 0"; fi
ab=$(st_result V-abandon cert_serial)
[ -n "$ab" ] || fail "abandon: no pending certificate"
sed -i 's/^pending-window = 3600/pending-window = 1/' "$KL_CONF"
sleep 2.2
st_unplug 1
timeout 20 "$KPROV" -c "$KL_CONF" --port "$F1" --count 1 >>station.log 2>&1 &
sp=$!; st_pids+=($sp)
# keyline-cad runs the sweep (claim, re-check, revoke) and logs each certificate
st_wait_grep "sweep: revoked pending certificate $ab of V-abandon" cad.log 15 || fail "abandoned pending certificate not revoked"
kill $sp; wait $sp 2>/dev/null || true
kca show --serial "$ab" | grep -qi revoked || fail "abandoned certificate $ab not revoked in the store"
sed -i 's/^pending-window = 1$/pending-window = 3600/' "$KL_CONF"
# the device comes back later: its old certificate is dead, so it gets a fresh one
st_dev 1 V-abandon
st_station --port "$F1" --count 1 || { tail -20 station.log; fail "abandon replug: station exit"; }
st_check_device V-abandon
[ "$(st_result V-abandon cert_serial)" != "$ab" ] || fail "abandoned certificate reused"
ok "abandoned pending certificate revoked after the window; device later provisioned afresh"
kca audit verify >/dev/null || fail "audit verify"
