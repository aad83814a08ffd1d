# keyline-cad's station ops (docs/ca-protocol.md: inventory, known, revoke, sweep, proof-failed)
# asked directly, as a compromised keyline-provision could: each is a whole, policy-checked
# operation on the station's profile, never a raw store write; refusals exit 4 (policy) or 3.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
CC="$KL_BIN/kl_cad_client"
S="$KL_TEST_DIR/cad.sock"
# expect_rc RC WHAT CMD...: CMD exits RC
expect_rc() {
  local want=$1 what=$2 rc=0; shift 2
  "$@" >out.txt 2>err.txt || rc=$?
  [ "$rc" = "$want" ] || fail "$what: exit $rc, want $want: $(cat out.txt err.txt)"
  ok "$what: $(head -c 300 err.txt)"
}

st_fixture 1
st_dev 1 CS-1
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { tail station.log; fail "station"; }
s1=$(st_result CS-1 cert_serial)
[ -n "$s1" ] || fail "no certificate for CS-1"

# known: the row, its certificate, no pending ones
"$CC" -o known.pem "$S" known profile=station device-id=CS-1 >known.txt || fail "known"
grep -qx "state=provisioned" known.txt && grep -qx "serial=$s1" known.txt && grep -qx "status=valid" known.txt ||
  fail "known: $(cat known.txt)"
openssl x509 -in known.pem -noout -serial | grep -q "$s1" || fail "known: certificate"
"$CC" "$S" known profile=station device-id=NOSUCH >known2.txt || fail "known of an unknown device"
[ "$(cat known2.txt)" = "device-id=NOSUCH" ] || fail "known of an unknown device: $(cat known2.txt)"
ok "known: row, certificate and status; an unknown device is just its id"
expect_rc 6 "known on an unknown profile" "$CC" "$S" known profile=nosuch device-id=CS-1

# inventory: a fixed set of states, certificates of the profile for that device only, and a
# provisioned device is not hidden behind another row while its certificate is valid
expect_rc 4 "inventory state outside the set" "$CC" "$S" inventory profile=station device-id=CS-1 model=M state=revoked detail=x
expect_rc 4 "inventory hiding a valid certificate" "$CC" "$S" inventory profile=station device-id=CS-1 model=M state=pending detail=x
expect_rc 4 "inventory provisioned without a certificate" "$CC" "$S" inventory profile=station device-id=CS-2 model=M state=provisioned detail=x
expect_rc 4 "inventory naming another device's certificate" "$CC" "$S" inventory profile=station device-id=CS-2 model=M state=failed detail=x serial="$s1"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -outform DER -out srv.der 2>/dev/null
kca issue --issuer field1 --template est-server --csr <(openssl req -inform DER -in srv.der) --out srv.pem >/dev/null ||
  fail "officer issue"
srv=$(openssl x509 -in srv.pem -noout -serial | cut -d= -f2)
expect_rc 4 "inventory naming a certificate of another profile" "$CC" "$S" inventory profile=station device-id=CS-1 model=M state=failed detail=x serial="$srv"
"$CC" "$S" inventory profile=station device-id=CS-3 model=M state=pending detail="provisioning on test" || fail "inventory of a new device"
kca audit list | grep -q "inventory.*device CS-3: pending" || fail "inventory not audited: $(kca audit list | tail -2)"
ok "inventory: recorded and audited with the actor keyline-cad authenticated"

# revoke: the station's reasons, the station's certificates
expect_rc 4 "revoke with certificateHold" "$CC" "$S" revoke serial="$s1" reason=6
expect_rc 4 "revoke with cACompromise" "$CC" "$S" revoke serial="$s1" reason=2
expect_rc 4 "revoke a certificate of another profile" "$CC" "$S" revoke serial="$srv" reason=4
kca show --serial "$srv" | grep -qi valid || fail "the officer's certificate was revoked"

# proof-failed: audited, only for a certificate of the device
expect_rc 4 "proof-failed for another device" "$CC" "$S" proof-failed device-id=CS-2 serial="$s1" message="x"
"$CC" "$S" proof-failed device-id=CS-1 serial="$s1" message="signature does not verify" || fail "proof-failed"
kca audit list | grep "device-proof-failed" | grep -q "device CS-1, certificate $s1" || fail "proof-failed not audited"
kca audit list | grep "device-proof-failed" | grep -q "uid $(id -u)" || fail "proof-failed actor is not the peer"
ok "proof-failed audited with the peer's uid"

# sweep: bounded age; a pending certificate is kept while its device is claimed, revoked after
expect_rc 3 "sweep with age 0" "$CC" "$S" sweep profile=station age=0 instance=abc
st_dev 1 CS-4 --misbehave vanish --vanish-at puttrust
if st_station --port "$KL_TEST_DIR/fix1" --count 1; then fail "vanish run exit 0"; fi
p4=$(st_result CS-4 cert_serial)
[ -n "$p4" ] || fail "no pending certificate"
sleep 1.2
# a live holder on this host (as station_claims.sh: a claim row of a process that lives on)
sleep 30 &
holder=$!; st_pids+=($holder)
sqlite3 "$KL_TEST_DIR/keyline.db" "INSERT INTO claims VALUES ('CS-4', 'holder', '$(hostname)', $holder, 'fixX', $(( $(date +%s) + 600 )))"
"$CC" "$S" sweep profile=station age=1 instance=sweeper >sw.txt || fail "sweep"
grep -qx "count=0" sw.txt || fail "sweep revoked a claimed device's certificate: $(cat sw.txt)"
kca show --serial "$p4" | grep -qi pending || fail "claimed certificate not pending"
# the holder dies: its claim is stale, so the next sweep takes it
kill $holder; wait $holder 2>/dev/null || true
"$CC" "$S" sweep profile=station age=1 instance=sweeper >sw.txt || fail "sweep 2"
grep -qx "count=1" sw.txt || fail "sweep 2: $(cat sw.txt)"
kca show --serial "$p4" | grep -qi revoked || fail "abandoned certificate not revoked"
"$CC" "$S" known profile=station device-id=CS-4 | grep -qx "state=failed" || fail "inventory of a swept device"
ok "sweep: claimed devices kept, abandoned pending certificates revoked, inventory failed"

# revoke (--reprovision): allowed for the station's own certificate with a station reason
"$CC" "$S" revoke serial="$s1" reason=4 || fail "revoke superseded"
kca show --serial "$s1" | grep -qi revoked || fail "not revoked"
ok "revoke: superseded for the station's own certificate"
kca audit verify >/dev/null || fail "audit verify"
