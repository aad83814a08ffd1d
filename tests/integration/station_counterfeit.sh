# A counterfeit must not pass as provisioned (issue 10, defect 6). Everything a locked unit says
# in HELLO is public (state LOCKED, identity public key, certificate fingerprint): a clone made
# from it (keyline-devsim --misbehave counterfeit: the genuine unit's flash with the private key
# replaced by one of its own) must fail CHALLENGE against the certificate on record for the
# hardware serial, and change nothing; the genuine unit is still "already provisioned".
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1

# the genuine unit, provisioned and locked
st_dev 1 CF-1; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "genuine unit: station exit"; }
st_wait_pid $d 10 || fail "genuine unit did not leave after LOCK"
st_check_device CF-1
cert=$(st_result CF-1 cert_serial)
ok "genuine unit CF-1 provisioned with certificate $cert"

# the counterfeit: same hardware serial, same HELLO, no private key for the certificate
cp CF-1.state CF-fake.state
st_dev 1 CF-1 --misbehave counterfeit --state "$KL_TEST_DIR/CF-fake.state"; d=$st_last_dev
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
[ $st = 1 ] || { cat station.log; fail "counterfeit: station exit $st, expected 1 (a failed device)"; }
[ "$(st_result CF-1 outcome)" = failed ] || fail "counterfeit reported as $(st_result CF-1 action), $(st_result CF-1 outcome)"
err=$(st_result CF-1 error)
echo "$err" | grep -q "cannot prove" || fail "counterfeit: unreadable error: $err"
echo "$err" | grep -q "$cert" || fail "counterfeit: the error does not name certificate $cert: $err"
[ "$(st_result CF-1 failed_phase)" = challenge ] || fail "counterfeit failed at $(st_result CF-1 failed_phase)"
grep -q "CF-1: FAILED at challenge" station.log || fail "counterfeit: no FAILED line in the station log"
st_unplug 1
# nothing changed for the genuine unit: its certificate stays valid, no other was issued
kca show --serial "$cert" | grep -qi "valid" || fail "certificate $cert no longer valid after the counterfeit"
[ "$(st_valid_count CF-1)" = 1 ] && [ "$(st_all_count CF-1)" = 1 ] || fail "certificates of CF-1 changed"
ok "counterfeit refused: $err"

# the genuine unit passes CHALLENGE while locked and is still already provisioned
st_dev 1 CF-1; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "genuine unit again: station exit"; }
st_wait_pid $d 10 || fail "locked genuine unit did not leave"
[ "$(st_result CF-1 action)" = already-provisioned ] && [ "$(st_result CF-1 outcome)" = ok ] ||
  fail "genuine unit: $(st_result CF-1 action) $(st_result CF-1 outcome) $(st_result CF-1 error)"
[ "$(st_result CF-1 cert_serial)" = "$cert" ] || fail "genuine unit: certificate changed"
"$KDEV" --state "$KL_TEST_DIR/CF-1.state" --print-cert | openssl x509 -noout -serial | grep -q "$cert" ||
  fail "genuine unit holds another certificate"
[ "$(st_all_count CF-1)" = 1 ] || fail "second certificate for CF-1"
kca audit verify >/dev/null || fail "audit verify"
ok "genuine locked unit proves possession and is reported already provisioned"
