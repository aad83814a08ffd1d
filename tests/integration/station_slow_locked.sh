# A slow locked device answers the CHALLENGE of a station that comes back to it. The station
# polls with HELLO every 200 ms until an answer arrives and resends the same frame each time, so
# a device that takes a second per answer gets the HELLO four or five times and answers each
# copy (from its cache, as slowly): it reads nothing else for seconds while the station's
# CHALLENGE waits on the line. keyline-devsim must read what arrived before it decides that the
# station has moved on and leaves (the station_crash flake: it left with the CHALLENGE unread,
# and the station failed the device with "no answer to CHALLENGE").
source "$KL_SRC/tests/integration/station_common.sh"
ST_TIMEOUT_MS=2000 ST_SLOW_TIMEOUT_MS=4000 st_setup
st_fixture 1
F1="$KL_TEST_DIR/fix1"

# provisioned and locked by a first station run (a quick device)
st_dev 1 SL-1
st_station --port "$F1" --count 1 || { tail -20 station.log; fail "first run: station exit"; }
st_wait_pid $st_last_dev 10 || fail "first run: devsim did not finish"
st_check_device SL-1

# the same unit back on the fixture, now answering 1 s late: a new station run sees it locked
# and has it prove its key (CHALLENGE) before calling it already provisioned. --linger-ms 0:
# it may leave 2 x 1 s after its first HELLO answer (the linger time of a slow device), which
# a second copy of the HELLO takes up whole, however loaded the machine.
st_dev 1 SL-1 --misbehave slow --delay-ms 1000 --linger-ms 0 -v
dev=$st_last_dev
st_station --port "$F1" --count 1 || {
  tail -20 station.log
  tail -20 SL-1.log
  fail "slow locked device: station exit (devsim left with the CHALLENGE unread?)"
}
st_wait_pid $dev 20 || fail "slow locked device: devsim did not finish"
[ "$(st_result SL-1 action)" = already-provisioned ] || fail "action $(st_result SL-1 action)"
[ "$(st_result SL-1 outcome)" = ok ] || fail "outcome $(st_result SL-1 outcome): $(st_result SL-1 error)"
# the evidence of the race: copies of the HELLO answered before the CHALLENGE
hellos=$(grep -c -- '-> HELLO_R' SL-1.log)
grep -q -- '-> CHALLENGE_R' SL-1.log || fail "devsim never answered CHALLENGE"
[ "$hellos" -ge 2 ] || fail "only $hellos HELLO answer: the station no longer resends its poll?"
st_check_device SL-1
ok "slow locked device: $hellos HELLO copies answered, then the CHALLENGE; already-provisioned"
