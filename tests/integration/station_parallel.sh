# Four fixtures at once, two devices each, one station; then hot-plugged fixtures picked up
# with --watch-glob; then a cloned hardware serial on two fixtures at once.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
for n in 1 2 3 4; do st_fixture $n; done

# second wave plugged in by a background "operator" as soon as each first device leaves
(
  for n in 1 2 3 4; do st_dev $n "P-$n-a"; done
  for n in 1 2 3 4; do
    st_wait_pid ${st_fixdev[$n]} 60 || exit 1
    "$KDEV" --port "$KL_TEST_DIR/dev$n" --serial "P-$n-b" --state "$KL_TEST_DIR/P-$n-b.state" >>"$KL_TEST_DIR/P-$n-b.log" 2>&1 &
  done
  wait
) &
operator=$!
st_pids+=($operator)
st_station --port "$KL_TEST_DIR/fix1" --port "$KL_TEST_DIR/fix2" --port "$KL_TEST_DIR/fix3" \
  --port "$KL_TEST_DIR/fix4" --count 8 || { tail -30 station.log; fail "station exit"; }
wait $operator || fail "a first-wave device did not finish"
for n in 1 2 3 4; do
  for w in a b; do st_check_device "P-$n-$w"; done
done
fixtures=$(python3 -c 'import json; print(len({json.loads(l)["fixture"] for l in open("results.jsonl")}))')
[ "$fixtures" = 4 ] || fail "results name $fixtures fixtures, not 4"
ok "4 fixtures in parallel: 8 devices provisioned, each chains to factory1, one valid certificate each"

# --watch-glob: fixtures that appear after the station started
: >results.jsonl
timeout 60 "$KPROV" -c "$KL_CONF" --watch-glob "$KL_TEST_DIR/hot*" --count 2 >>station.log 2>&1 &
sp=$!; st_pids+=($sp)
sleep 0.5
for n in 5 6; do
  socat pty,raw,echo=0,link="$KL_TEST_DIR/hot$n" pty,raw,echo=0,link="$KL_TEST_DIR/dev$n" 2>/dev/null &
  st_pids+=($!)
done
sleep 0.5
st_dev 5 P-hot-5; st_dev 6 P-hot-6
wait $sp || { tail -20 station.log; fail "--watch-glob station exit"; }
st_check_device P-hot-5; st_check_device P-hot-6
ok "--watch-glob picked up fixtures plugged in after start"

# a cloned hardware serial on two fixtures at the same time: one is refused
: >results.jsonl
"$KDEV" --port "$KL_TEST_DIR/dev1" --serial P-clone --state "$KL_TEST_DIR/clone1.state" --misbehave slow --delay-ms 300 >>clone.log 2>&1 &
c1=$!; st_pids+=($c1)
"$KDEV" --port "$KL_TEST_DIR/dev2" --serial P-clone --state "$KL_TEST_DIR/clone2.state" --misbehave slow --delay-ms 300 >>clone.log 2>&1 &
c2=$!; st_pids+=($c2)
if st_station --port "$KL_TEST_DIR/fix1" --port "$KL_TEST_DIR/fix2" --count 2; then
  fail "clone: station exit 0"
fi
grep -q "already being provisioned on" results.jsonl || fail "clone not detected"
[ "$(st_valid_count P-clone)" -le 1 ] || fail "clone: two valid certificates"
ok "cloned hardware serial on two fixtures: one refused ($(grep -o 'hardware serial P-clone is already[^"]*' results.jsonl | head -1))"
kill $c1 $c2 2>/dev/null || true
