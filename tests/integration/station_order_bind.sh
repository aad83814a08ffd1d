# Production orders bound to the station that may use them ([role NAME] stations): a station of
# a role that lists only line-7 cannot issue under, ask for or close line-9's order by naming
# itself line-9, with the real station and with raw CA-protocol requests; line-7 works; line-9's
# order is left untouched. A malformed list is refused at start, naming the key.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup "id = line-7"
tomorrow=$(date -u -d '+1 day' +%Y-%m-%d)
cc() { "$KL_BIN/kl_cad_client" "$@"; }

# the role the station runs as may name line-7 only
st_cad_stop
printf '\n[role station]\nusers = %s\nstations = line-7\n' "$(id -un)" >>"$KL_CONF"
sed 's|^stations = line-7$|stations = line-7, line/9|' "$KL_CONF" >bad.conf
set +e; timeout 20 "$KL_BIN/keyline-cad" -c bad.conf 2>bad.err; st=$?; set -e
[ $st != 0 ] && grep -q "\[role station\] stations: 'line/9'" bad.err ||
  fail "a station list with a bad name: exit $st, $(cat bad.err)"
st_cad_start
ok "keyline-cad refuses a malformed [role] stations: $(cat bad.err)"

id7=$(kca order create --model keyline-sim --count 3 --station line-7 --expires "$tomorrow")
id9=$(kca order create --model keyline-sim --count 3 --station line-9 --expires "$tomorrow")

# the real station, configured as line-9: refused before any device starts
sed 's/^id = line-7$/id = line-9/' "$KL_CONF" >line9.conf
st_fixture 1
st_dev 1 BIND-9
timeout 20 "$KPROV" -c line9.conf --port "$KL_TEST_DIR/fix1" --count 1 >>line9.log 2>&1 &&
  fail "a station named line-9 provisioned under role station"
grep -q "station 'line-9' is not one of the stations of role station" line9.log results.jsonl ||
  { tail -5 line9.log; fail "no refusal naming the station and the role"; }
[ "$(st_all_count BIND-9)" = 0 ] || fail "BIND-9 got a certificate"
ok "a station naming itself line-9 is refused: $(grep -ho "station 'line-9' is not[^\"]*" line9.log | head -1)"

# raw requests naming line-9: order, order-close and issue each refused by policy (exit 4)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout bind.key \
  -subj "/CN=keyline-sim/serialNumber=BIND-RAW" -outform DER -out bind.der 2>/dev/null
for req in "order profile=station station=line-9 model=keyline-sim" \
  "order-close profile=station station=line-9 order=$id9 auth-user=mallory" \
  "issue profile=station csr=@bind.der auth=basic auth-user=op device-id=BIND-RAW station=line-9"; do
  set +e; cc "$KL_TEST_DIR/cad.sock" $req >raw.out 2>&1; st=$?; set -e
  [ $st = 4 ] && grep -q "station 'line-9' is not one of the stations of role station" raw.out ||
    fail "${req%% *} naming line-9: exit $st, $(cat raw.out)"
done
grep -q "order-close from .* refused: policy: station 'line-9'" "$KL_TEST_DIR/cad.log" ||
  fail "keyline-cad's log does not record the refusal"
kca order show "$id9" | grep -q "issued:     0 of 3" || { kca order show "$id9"; fail "line-9's order was used"; }
kca order show "$id9" | grep -q "state:      open" || fail "line-9's order was closed"
ok "order, order-close and issue naming line-9 refused (exit 4); its order is untouched"

# line-7, the role's own station, works as before
cc "$KL_TEST_DIR/cad.sock" order profile=station station=line-7 model=keyline-sim >own.out ||
  fail "order for line-7: $(cat own.out)"
grep -q "^order=$id7$" own.out || fail "order for line-7 answered $(cat own.out)"
st_dev 1 BIND-7
timeout 60 "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --count 1 >>line7.log 2>&1 ||
  { tail -5 line7.log; fail "line-7 did not provision"; }
st_check_device BIND-7
kca order show "$id7" | grep -q "issued:     1 of 3" || { kca order show "$id7"; fail "line-7's order count"; }
ok "line-7 provisions under its own order (1 of 3)"
