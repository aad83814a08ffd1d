# Station under a revoked factory CA (issue 10, defect 2): ca_issue refuses, the device gets no
# identity and the station reports why. A device provisioned before the revocation shows the
# same setup works.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1

st_dev 1 RV-before; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "before the revocation: station exit"; }
st_wait_pid $d 10 || fail "devsim did not exit 0 after LOCK"
st_check_device RV-before
ok "provisioned under factory1 before its revocation"

kca revoke --serial "$(openssl x509 -in factory1.pem -noout -serial | cut -d= -f2)" --reason cACompromise >/dev/null 2>&1
st_dev 1 RV-after; d=$st_last_dev
if st_station --port "$KL_TEST_DIR/fix1" --count 1; then fail "station exit 0 under a revoked CA"; fi
kill $d 2>/dev/null || true
err=$(st_result RV-after error)
echo "$err" | grep -q "CA 'factory1' cannot issue: its certificate .* is revoked (cACompromise)" ||
  fail "unexpected error: $err"
[ "$(st_all_count RV-after)" = 0 ] || fail "a certificate was issued under the revoked factory1"
[ -z "$(st_result RV-after cert_serial)" ] || fail "the result names a certificate"
ok "revoked factory1: nothing issued, the station says why: $err"
echo "hostile_station_revoked_ca: all passed"
