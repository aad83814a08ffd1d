# Station end to end, both modes: csr (key born on the device) and inject (station-made key,
# wrapped to the device transport key). Real SoftHSM token, SQLite store, pty fixtures.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1
st_fixture 2

for mode in csr inject; do
  st_dev 1 "M-$mode-1"; d1=$st_last_dev
  st_dev 2 "M-$mode-2"; d2=$st_last_dev
  st_station --port "$KL_TEST_DIR/fix1" --port "$KL_TEST_DIR/fix2" --mode $mode --count 2 \
    || { cat station.log; fail "$mode: station exit $?"; }
  st_wait_pid $d1 10 || fail "$mode: devsim 1 did not exit 0 after LOCK"
  st_wait_pid $d2 10 || fail "$mode: devsim 2 did not exit 0 after LOCK"
  for s in "M-$mode-1" "M-$mode-2"; do
    st_check_device "$s"
    [ "$(st_result "$s" mode)" = $mode ] || fail "$s: result mode"
    [ "$(st_result "$s" action)" = provisioned ] || fail "$s: result action"
    [ -n "$(st_result "$s" timings_ms.total)" ] || fail "$s: no timings"
    # the time spent waiting on the line and the device: part of the whole flow
    link=$(st_result "$s" timings_ms.link) total=$(st_result "$s" timings_ms.total)
    [ -n "$link" ] && [ "$link" -ge 0 ] && [ "$link" -le "$total" ] || fail "$s: timings_ms.link '$link' (total $total)"
  done
  ok "$mode mode: 2 devices provisioned, certificates chain to factory1 and are valid"
done

# the station logs progress lines when not on a terminal
grep -q "PUTCERT" station.log || fail "no progress lines in the log"
# inventory recorded in the store; audit chain intact
kca audit verify >/dev/null || fail "audit verify"
# a device that comes back locked is recognised, not issued a second certificate
st_dev 1 "M-csr-1"; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "already provisioned: station exit"; }
st_wait_pid $d 10 || fail "locked devsim did not leave"
[ "$(st_result M-csr-1 action)" = already-provisioned ] || fail "locked device not recognised"
[ "$(st_all_count M-csr-1)" = 1 ] || fail "second certificate for M-csr-1"
ok "locked device reported as already provisioned, no second certificate"
# --print-cert on a device without a certificate fails with a message
st_fixture 3
st_dev 3 "M-empty" --stay; d=$st_last_dev; sleep 0.5; kill $d; wait $d 2>/dev/null || true
expect_fail "print-cert of a device without certificate" "$KDEV" --state "$KL_TEST_DIR/M-empty.state" --print-cert

# On a terminal: the live progress display is drawn; and the station never asks for the token
# PIN, even when the configuration it shares with keyline-cad says [hsm] pin = prompt
# (keyline-cad holds the token; the station holds no PIN).
cp "$KL_CONF" prompt.conf
sed -i 's/^pin = env:KEYLINE_PIN/pin = prompt/' prompt.conf
st_dev 1 M-prompt
( sleep 3 ) |
  env -u KEYLINE_PIN script -qfec "$KPROV -c $KL_TEST_DIR/prompt.conf --port $KL_TEST_DIR/fix1 --count 1" prompt.out >/dev/null 2>&1 ||
  { cat prompt.out; fail "station on a terminal"; }
! grep -q "Enter token PIN" prompt.out || fail "the station asked for the token PIN"
grep -q "fixture  *device  *progress" prompt.out || fail "no live progress display on a terminal"
st_check_device M-prompt
ok "no PIN prompt (the station holds no PIN) and live progress display on a terminal"
