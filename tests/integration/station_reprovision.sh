# One hardware serial = one IDevID: a device that lost its flash (factory reset) is refused
# while its certificate is valid; --reprovision --reason R revokes the old one first.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1
F1="$KL_TEST_DIR/fix1"

st_dev 1 R-1
st_station --port "$F1" --count 1 || { tail station.log; fail "first provisioning"; }
st_check_device R-1
old=$(st_result R-1 cert_serial)

# locked device + --reprovision: cannot be done over the line, old certificate untouched
st_dev 1 R-1
if st_station --port "$F1" --count 1 --reprovision --reason superseded; then fail "locked reprovision: exit 0"; fi
st_result R-1 error | grep -q "locked and cannot be reprovisioned" || fail "locked reprovision: $(st_result R-1 error)"
[ "$(st_valid_count R-1)" = 1 ] || fail "locked reprovision touched the certificate"
ok "locked device refused for --reprovision: $(st_result R-1 error)"

# factory reset (flash erased): same serial, new device state
st_unplug 1
mv "$KL_TEST_DIR/R-1.state" "$KL_TEST_DIR/R-1.state.old"
st_dev 1 R-1 --stay; d=$st_last_dev
if st_station --port "$F1" --count 1; then fail "reset device: issued without --reprovision"; fi
st_result R-1 error | grep -q "already has valid IDevID $old" || fail "reset device: $(st_result R-1 error)"
[ "$(st_all_count R-1)" = 1 ] || fail "reset device: second certificate issued"
ok "erased device with a valid IDevID refused: $(st_result R-1 error)"
kill $d; wait $d 2>/dev/null || true

st_dev 1 R-1
st_station --port "$F1" --count 1 --reprovision --reason superseded || { tail station.log; fail "reprovision"; }
st_check_device R-1
new=$(st_result R-1 cert_serial)
[ "$new" != "$old" ] || fail "reprovision kept the old certificate"
kca show --serial "$old" | grep -qi "revoked" || fail "old certificate $old not revoked"
kca show --serial "$old" | grep -qi "superseded" || fail "old certificate not revoked as superseded"
[ "$(st_valid_count R-1)" = 1 ] || fail "reprovision: not exactly one valid certificate"
ok "--reprovision --reason superseded: old $old revoked, new $new valid"
kca device list | grep -q "^R-1 .* provisioned .*$new" || { kca device list; fail "inventory after reprovision"; }

# an officer revokes the device's certificate: the inventory row says so at once
kca revoke --serial "$new" --reason keyCompromise >/dev/null
kca device list | grep -q "^R-1 .* revoked .*$new .*certificate $new revoked (reason 1)" ||
  { kca device list; fail "inventory does not show the revocation"; }
ok "revoking a device's certificate marks its inventory row revoked"
kca audit verify >/dev/null || fail "audit verify"
