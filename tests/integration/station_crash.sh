# kill -9 the station at several points of a device's flow; a restarted station completes the
# device with exactly one certificate, and the store stays consistent (audit chain intact,
# `list --status valid` shows one certificate per device and no pending ones).
source "$KL_SRC/tests/integration/station_common.sh"
ST_TIMEOUT_MS=2000 st_setup
st_fixture 1
F1="$KL_TEST_DIR/fix1"

# crash_round NAME MODE PATTERN: start the station, kill -9 it when PATTERN appears in its log
# (the device answers 500 ms late, so the kill lands mid-step), then restart it.
crash_round() {
  local s=$1 mode=$2 pat=$3
  st_dev 1 "$s" --misbehave slow --delay-ms 500
  local dev=$st_last_dev
  "$KPROV" -c "$KL_CONF" --port "$F1" --mode "$mode" --count 1 >>station.log 2>&1 &
  local sp=$!
  st_pids+=($sp)
  st_wait_grep "$s: $pat" station.log 30 || { tail station.log; fail "$s: never reached '$pat'"; }
  kill -9 $sp
  wait $sp 2>/dev/null || true
  echo "--- killed at $pat" >>station.log
  kca audit verify >/dev/null || fail "$s: audit chain broken after kill -9 at '$pat'"
  [ "$(st_valid_count "$s")" = 0 ] || fail "$s: valid certificate before the device confirmed"
  # the same device (still on the fixture, same flash) and a new station process
  st_station --port "$F1" --mode "$mode" --count 1 || { tail -20 station.log; fail "$s: restarted station failed"; }
  st_wait_pid $dev 10 || fail "$s: devsim did not finish"
  st_check_device "$s"
  [ "$(st_all_count "$s")" = 1 ] || fail "$s: $(st_all_count "$s") certificates after the crash"
  ok "$mode: kill -9 at '$pat': restarted station finished $s as '$(st_result "$s" action)', one certificate"
}

crash_round C-genkey csr "GENKEY"
crash_round C-inject inject "INJECT"
crash_round C-issued csr "issued pending certificate"
crash_round C-trust inject "PUTTRUST"
crash_round C-challenge csr "CHALLENGE"
crash_round C-lock csr "LOCK"
[ "$(st_result C-lock action)" = activated ] || [ "$(st_result C-lock action)" = resumed ] || fail "C-lock: action $(st_result C-lock action)"

kca audit verify >/dev/null || fail "audit verify"
pending=$(kca list --status valid --json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c.get("status") != "valid"))')
[ "$pending" = 0 ] || fail "list --status valid shows non-valid certificates"
for s in C-genkey C-inject C-issued C-trust C-challenge C-lock; do
  [ "$(st_valid_count $s)" = 1 ] || fail "$s: not exactly one valid certificate"
done
ok "store consistent: audit intact, exactly one valid certificate per device"
