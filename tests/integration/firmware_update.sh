# Firmware trust end to end (issue 16 items 3-5): the station writes [station] firmware-keys into
# each device with its trust anchors (PUTTRUST FW_KEYS); keyline-devsim --update then takes only
# images signed in the token by a provisioned key with a security counter not below its own, and
# says why it refuses any other. Real SoftHSM token, store, keyline-cad, pty fixtures.
source "$KL_SRC/tests/integration/station_common.sh"
source "$KL_SRC/tests/lib/firmware.sh"
st_setup "firmware-keys = fw1.pem"
kca ca create --label fw1 --template firmware --issuer root1 --subject "CN=Firmware 2027,O=Keyline Test" >fw1.pem 2>/dev/null
kca ca create --label fw9 --template firmware --issuer root1 --subject "CN=Firmware elsewhere,O=Keyline Test" >fw9.pem 2>/dev/null
st_fixture 1
st_dev 1 FW-1; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "station exit"; }
st_wait_pid $d 10 || fail "devsim did not exit 0 after LOCK"
st_check_device FW-1
ok "FW-1 provisioned with firmware-keys = fw1.pem"
# firmware keys are no CAs: keyline-cad's /cacerts answer (what EST serves) leaves them out
"$KL_BIN/kl_cad_client" -o cacerts.pem "$KL_TEST_DIR/cad.sock" cacerts profile=station >/dev/null || fail "cacerts"
openssl crl2pkcs7 -nocrl -certfile cacerts.pem | openssl pkcs7 -print_certs -noout >cacerts.txt
grep -q "Test Root" cacerts.txt || fail "cacerts lacks the root: $(cat cacerts.txt)"
! grep -q "Firmware" cacerts.txt || fail "cacerts serves a firmware key"
ok "cacerts serves the CAs and no firmware key"

update() { "$KDEV" --state "$KL_TEST_DIR/FW-1.state" --update "$1"; }
# expect_refused WHAT IMAGE REASON: --update exits 4 and names the reason
expect_refused() {
  local rc=0
  update "$2" >upd.out 2>upd.err || rc=$?
  [ "$rc" = 4 ] || { cat upd.out upd.err; fail "$1: exit $rc, expected 4 (refused)"; }
  grep -q "update refused: $3" upd.err || fail "$1: reason '$(cat upd.err)', expected '$3'"
  ok "$1 refused: $(cat upd.err)"
}
sign() { # sign KEY OUT VERSION COUNTER [more]
  local k=$1 o=$2 v=$3 c=$4; shift 4
  kca sign-image --key "$k" --in app.bin --out "$o" --version "$v" --security-counter "$c" \
    --header-size 0x200 --pad-header "$@" 2>/dev/null || fail "sign-image $o"
}
fw_payload app.bin 4096
sign fw1 v2.img 2.0.0+1 5
update v2.img >upd.out || fail "a good image refused: $(cat upd.out)"
grep -q "^installed 2.0.0+1 (security counter 5" upd.out || fail "install message: $(cat upd.out)"
ok "an image signed by fw1 in the token is installed: $(cat upd.out)"

# one byte flipped in the payload, in the protected TLV (the counter), in the signature
fw_flip v2.img 1000 bad-payload.img
expect_refused "a flipped payload byte" bad-payload.img "image hash mismatch"
fw_flip v2.img "$(fw_field v2.img counter_off)" bad-prot.img
expect_refused "a flipped protected TLV byte" bad-prot.img "image hash mismatch"
fw_flip v2.img $(( $(fw_field v2.img sig) + 10 )) bad-sig.img
expect_refused "a flipped signature byte" bad-sig.img "bad signature"
# a key the station did not provision (made and certified the same way)
sign fw9 other.img 2.1.0 6
expect_refused "an image signed by an unprovisioned key" other.img "signed by an unprovisioned key"
# a lower security counter than the installed one (a rollback)
sign fw1 old.img 1.9.0 4
expect_refused "a lower security counter" old.img "security counter lower"
# truncated, and a TLV area larger than the device takes
head -c $(( $(stat -c %s v2.img) - 20 )) v2.img >cut.img
expect_refused "a truncated image" cut.img "truncated image"
python3 -c '
import sys
d = bytearray(open("v2.img", "rb").read()); u = int(sys.argv[1])
d[u + 2:u + 4] = (0xfff0).to_bytes(2, "little")
open("big.img", "wb").write(d)' "$(fw_field v2.img tlv)"
expect_refused "an oversized TLV area" big.img "oversized TLV area"
expect_fail "a file that is no image" "$KDEV" --state "$KL_TEST_DIR/FW-1.state" --update app.bin
# the same counter again, and a higher one, are taken; the refusals changed nothing
sign fw1 v3.img 3.0.0 5
update v3.img >upd.out || fail "same counter refused: $(cat upd.out)"
sign fw1 v4.img 3.1.0 9
update v4.img >upd.out || fail "higher counter refused"
grep -q "installed 3.1.0+0 (security counter 9, was 3.0.0+0 counter 5)" upd.out || fail "state: $(cat upd.out)"
expect_refused "counter 5 after counter 9" v3.img "security counter lower"
ok "equal and higher counters installed, the device's counter only goes up"

# change-over: a station with two keys; a device provisioned without any refuses every image
kca ca rotate --label fw1 --new-label fw2 >fw2.pem 2>/dev/null || fail "rotate fw1"
sed -i 's/^firmware-keys = .*/firmware-keys = fw1.pem fw2.pem/' "$KL_CONF"
st_dev 1 FW-2; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "station exit (two keys)"; }
st_wait_pid $d 10 || fail "FW-2 did not leave"
sign fw2 n1.img 4.0.0 10
"$KDEV" --state "$KL_TEST_DIR/FW-2.state" --update v2.img >/dev/null || fail "FW-2: fw1 image refused"
"$KDEV" --state "$KL_TEST_DIR/FW-2.state" --update n1.img >/dev/null || fail "FW-2: fw2 image refused"
expect_refused "FW-1 (fw1 only) given an fw2 image" n1.img "signed by an unprovisioned key"
ok "a device provisioned during the change-over takes images of both keys"
sed -i '/^firmware-keys = /d' "$KL_CONF"
st_dev 1 FW-3; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "station exit (no keys)"; }
st_wait_pid $d 10 || fail "FW-3 did not leave"
rc=0; "$KDEV" --state "$KL_TEST_DIR/FW-3.state" --update v2.img 2>upd.err || rc=$?
[ "$rc" = 4 ] && grep -q "no firmware key provisioned" upd.err || fail "FW-3: $(cat upd.err)"
ok "a device provisioned without firmware-keys refuses every image"

# the station refuses a firmware-keys file that is no firmware key's certificate
echo "firmware-keys = root1.pem" >>"$KL_CONF"
expect_fail "a CA certificate as firmware key" "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --count 1
sed -i '/^firmware-keys = /d' "$KL_CONF"
# every signing recorded
[ "$(kca audit list | grep -c " sign-image ")" = 6 ] || fail "sign-image audit entries: $(kca audit list | grep -c " sign-image ")"
kca audit verify >/dev/null || fail "audit verify"
ok "every signing in the audit log"
