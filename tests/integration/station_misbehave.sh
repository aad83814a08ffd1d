# Station against misbehaving devices: damaged and lost frames are retransmitted, slow devices
# succeed inside the timeout and fail clearly outside it, a CSR with a broken signature issues
# nothing, a refused LOCK is a failure that leaves no valid certificate.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1
st_fixture 2
F1="$KL_TEST_DIR/fix1"; F2="$KL_TEST_DIR/fix2"

# corrupt + drop, in parallel: both succeed after retransmissions
st_dev 1 MB-corrupt --misbehave corrupt
st_dev 2 MB-drop --misbehave drop
st_station --port "$F1" --port "$F2" --count 2 || { tail -20 station.log; fail "corrupt/drop: station exit"; }
for s in MB-corrupt MB-drop; do
  st_check_device $s
  [ "$(st_result $s retransmits)" -gt 0 ] || fail "$s: no retransmission recorded"
done
ok "corrupt and drop: retransmitted ($(st_result MB-corrupt retransmits), $(st_result MB-drop retransmits)) and provisioned"

# slow: answers 400 ms late with a 600 ms timeout -> succeeds
st_dev 1 MB-slow --misbehave slow --delay-ms 400
st_station --port "$F1" --count 1 || { tail -20 station.log; fail "slow: station exit"; }
st_check_device MB-slow
ok "slow device inside the timeout: provisioned in $(st_result MB-slow timings_ms.total) ms"

# too slow: answers 900 ms late with a 600 ms timeout -> clear timeout failure
st_dev 1 MB-tooslow --misbehave slow --delay-ms 900; d=$st_last_dev
if st_station --port "$F1" --count 1; then fail "too slow device: station exit 0"; fi
kill $d 2>/dev/null || true
err=$(st_result MB-tooslow error)
echo "$err" | grep -q "no answer to .* after 4 attempts (timeout 600 ms)" || fail "too slow: unclear error: $err"
[ "$(st_valid_count MB-tooslow)" = 0 ] || fail "too slow: a valid certificate exists"
ok "device slower than the timeout: failed with '$err'"

# bad-csr: refused, nothing issued
st_dev 1 MB-badcsr --misbehave bad-csr; d=$st_last_dev
if st_station --port "$F1" --count 1; then fail "bad-csr: station exit 0"; fi
kill $d 2>/dev/null || true
err=$(st_result MB-badcsr error)
echo "$err" | grep -qi "signature" || fail "bad-csr: unexpected error: $err"
[ "$(st_all_count MB-badcsr)" = 0 ] || fail "bad-csr: a certificate was issued"
[ -z "$(st_result MB-badcsr cert_serial)" ] || fail "bad-csr: result names a certificate"
ok "bad CSR signature refused, nothing issued: $err"

# refuse-lock: failure reported; the certificate never becomes valid
st_dev 1 MB-nolock --misbehave refuse-lock; d=$st_last_dev
if st_station --port "$F1" --count 1; then fail "refuse-lock: station exit 0"; fi
kill $d 2>/dev/null || true
err=$(st_result MB-nolock error)
echo "$err" | grep -q "LOCK with ERROR REFUSED" || fail "refuse-lock: unexpected error: $err"
[ "$(st_result MB-nolock failed_phase)" = lock ] || fail "refuse-lock: failed phase"
[ "$(st_valid_count MB-nolock)" = 0 ] || fail "refuse-lock: certificate is valid"
ok "refused LOCK reported as failure, certificate not valid: $err"

# bad signatures in inject mode: the station signs the CSR itself, so the device's broken
# signature shows at CHALLENGE: the new certificate is revoked (keyCompromise) and reported.
st_dev 1 MB-badsig --misbehave bad-csr; d=$st_last_dev
if st_station --port "$F1" --count 1 --mode inject; then fail "bad CHALLENGE: station exit 0"; fi
kill $d 2>/dev/null || true
err=$(st_result MB-badsig error)
echo "$err" | grep -q "CHALLENGE signature does not verify" || fail "bad CHALLENGE: unexpected error: $err"
cs=$(st_result MB-badsig cert_serial)
kca show --serial "$cs" | grep -qi "keyCompromise" || fail "bad CHALLENGE: certificate $cs not revoked (keyCompromise)"
[ "$(st_valid_count MB-badsig)" = 0 ] || fail "bad CHALLENGE: valid certificate"
ok "failed CHALLENGE: certificate $cs revoked (keyCompromise), device reported"

kca audit verify >/dev/null || fail "audit verify"
ok "audit chain intact"
