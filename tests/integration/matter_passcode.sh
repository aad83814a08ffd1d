# [station] matter-keep-passcode = yes (issue 19 item 3, docs/matter.md "Keeping the passcode"):
# keyline-cad seals each device's setup passcode to the token key "matter-passcode" (its public
# half only) and the store keeps the sealed value with the onboarding data. Opened here without
# keyline: pkcs11-tool derives the ECDH secret inside the token (CKM_ECDH1_DERIVE with the
# private half), Python (hashlib/hmac, python3-cryptography's AES-GCM) does the rest, and the
# passcode must be the one the label's QR code carries; `keyline-ca matter passcode` (ECDH in
# the token through hsm/) gives the same, audited. A sealed value is bound to its onboarding row
# (format 2, AES-GCM additional data: device id, DAC, discriminator, iterations, salt, verifier):
# moved to another row, or copied back into its own row after the device was provisioned again,
# it does not open; a format 1 value (device id only, made here in Python as the earlier code
# did) still opens. Without the key the station fails with a clear message and nothing of the
# passcode is kept.
source "$KL_SRC/tests/integration/station_common.sh"
MC="python3 $KL_SRC/tests/lib/matter_check.py"
P11=(pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN")

kca ca create --label paa1 --template matter-paa --subject "CN=Keyline Test PAA" --vid 0xFFF1 >paa1.pem
kca ca create --label pai1 --template matter-pai --issuer paa1 --subject "CN=Keyline Test PAI" \
  --vid 0xFFF1 --pid 0x8000 >pai1.pem
head -c 200 /dev/urandom >cd.der
{
  echo
  echo "[cad]"
  echo "socket = cad.sock"
  echo
  echo "[station]"
  echo "issuer = pai1"
  echo "template = matter-dac"
  echo "timeout-ms = 800"
  echo "slow-timeout-ms = 5000"
  echo "results = results.jsonl"
  echo "matter = yes"
  echo "matter-vid = 0xFFF1"
  echo "matter-pid = 0x8000"
  echo "matter-cd = cd.der"
  echo "matter-iterations = 1000"
  echo "matter-keep-passcode = yes"
} >>"$KL_CONF"
st_cad_start
st_fixture 1
store=$(sed -n 's/^path *= *//p' "$KL_CONF" | head -1)

# 1. no key to seal to: the device fails at the matter step, nothing kept
st_dev 1 MP-0001 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
st_unplug 1
[ $st = 1 ] && [ "$(st_result MP-0001 failed_phase)" = matter ] &&
  st_result MP-0001 error | grep -q "no key 'matter-passcode' in the token" ||
  fail "keep-passcode without the key: exit $st, $(st_result MP-0001 failed_phase): $(st_result MP-0001 error)"
[ "$(sqlite3 "$store" "SELECT count(*) FROM matter_onboarding")" = 0 ] || fail "a row without its passcode"
ok "keep-passcode without a token key refused: $(st_result MP-0001 error)"

# 2. the officer makes the key (P-256, derive only, never extractable)
"${P11[@]}" --keypairgen --key-type EC:prime256v1 --label matter-passcode --id 4d50 --usage-derive >/dev/null ||
  fail "pkcs11-tool --keypairgen"
# seal_open SEALED-HEX DEVICE ROW Z-FILE: the passcode of a format 2 value, opened in Python
# from the ECDH secret the token derived (ROW: cert_serial|discriminator|iterations|salt|verifier
# as sqlite3 prints them); exit 1 when it does not open
seal_open() {
  python3 - "$@" <<'PY'
import hashlib, hmac, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
b, dev, z = bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), open(sys.argv[4], "rb").read()
serial, disc, it, salt, ver = sys.argv[3].split("|")
serial, salt, ver = serial.encode(), bytes.fromhex(salt), bytes.fromhex(ver)
assert len(b) == 98 and b[0] == 2 and b[1] == 4 and len(z) == 32
label = b"keyline matter passcode v2"
aad = (label + b"\0" + struct.pack(">H", len(dev)) + dev + struct.pack(">H", len(serial)) + serial
       + struct.pack(">HIB", int(disc), int(it), len(salt)) + salt + ver)
prk = hmac.new(b"\0" * 32, z, hashlib.sha256).digest()  # RFC 5869: empty salt = HashLen zeros
key = hmac.new(prk, label + dev + b"\x01", hashlib.sha256).digest()
try:
    pt = AESGCM(key).decrypt(b[66:78], b[78:], aad)
except Exception:
    sys.exit(1)
print(int.from_bytes(pt, "big"))
PY
}
# derive_z SEALED-HEX OFFSET: the token's ECDH secret with the value's E (at byte OFFSET) in z.bin
derive_z() {
  python3 -c 'import sys; o=2*int(sys.argv[2]); sys.stdout.buffer.write(bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200" + sys.argv[1][o:o+130]))' "$1" "$2" >e.der
  rm -f z.bin
  # (by --id: pkcs11-tool 0.23's --derive does not select the key by --label)
  "${P11[@]}" --derive -m ECDH1-DERIVE --id 4d50 -i e.der -o z.bin >derive.log 2>&1 ||
    fail "pkcs11-tool --derive: $(cat derive.log)"
}
row_of() {
  sqlite3 "$store" "SELECT cert_serial || '|' || discriminator || '|' || iterations || '|' || lower(hex(salt)) || '|' || lower(hex(verifier)) FROM matter_onboarding WHERE device_id = '$1'"
}
sealed_of() { sqlite3 "$store" "SELECT lower(hex(passcode_sealed)) FROM matter_onboarding WHERE device_id = '$1'"; }
label_pc() {
  $MC decode "$(st_result $1 matter.qr)" "$(st_result $1 matter.manual)" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["passcode"])'
}

pcs=
for s in MP-0002 MP-0003; do
  st_dev 1 $s --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000; d=$st_last_dev
  st_station --port "$KL_TEST_DIR/fix1" --count 1 || { tail -5 station.log; fail "$s: station exit"; }
  st_wait_pid $d 10 || fail "$s did not leave after LOCK"
  sealed=$(sealed_of $s)
  [ ${#sealed} = 196 ] && [ "${sealed:0:2}" = 02 ] || fail "$s: sealed passcode '$sealed' (format 2: 98 bytes)"
  # E as a SubjectPublicKeyInfo for pkcs11-tool, the ECDH secret derived in the token
  derive_z "$sealed" 1
  row=$(row_of $s)
  pc=$(seal_open "$sealed" "$s" "$row" z.bin) || fail "$s: the sealed passcode does not open"
  want=$(label_pc $s)
  [ "$pc" = "$want" ] || fail "$s: sealed passcode $pc, label $want"
  pcs+=" $pc"
  # bound to its device and to this row: not for another device id, nor with another salt
  seal_open "$sealed" MP-OTHER "$row" z.bin >/dev/null && fail "$s: the sealed passcode opens for another device id"
  other=$(python3 -c 'import sys; f=sys.argv[1].split("|"); f[3]="00"*32; print("|".join(f))' "$row")
  seal_open "$sealed" "$s" "$other" z.bin >/dev/null && fail "$s: the sealed passcode opens with another salt"
  # and never in the clear: not in the store file, not in keyline-cad's log
  python3 - "$store" "$pc" <<'PY' || fail "$s: the passcode is in the store in the clear"
import sys
b, p = open(sys.argv[1], "rb").read(), int(sys.argv[2])
sys.exit(1 if str(p).encode() in b or b"%08d" % p in b or p.to_bytes(4, "little") in b else 0)
PY
  ! grep -q "$pc" "$KL_TEST_DIR/cad.log" station.log || fail "$s: passcode in a log"
  # the officer's way back: keyline-ca matter passcode (ECDH in the token through hsm/, audited)
  got=$(kca matter passcode --device $s | python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["passcode"]), d["discriminator"])')
  [ "$got" = "$pc $(st_result $s matter.discriminator)" ] || fail "$s: keyline-ca matter passcode says '$got', the label $pc"
done
[ "$(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-passcode-read'")" = 2 ] ||
  fail "matter-passcode-read audit entries"
# keyline-cad keeps only the passcode the onboarding data's verifier stands for: a front end
# that sends another beside MP-0003's salt and verifier gets nothing kept, the row unchanged
IFS='|' read -r dac3 disc3 it3 salt3 ver3 <<<"$(row_of MP-0003)"
python3 -c 'import sys; open("salt3.bin", "wb").write(bytes.fromhex(sys.argv[1])); open("ver3.bin", "wb").write(bytes.fromhex(sys.argv[2]))' "$salt3" "$ver3"
pc3=$(label_pc MP-0003); wrong=20202021; [ "$pc3" != $wrong ] || wrong=20202022
before=$(sealed_of MP-0003)
set +e
"$KL_BIN/kl_cad_client" "$KL_TEST_DIR/cad.sock" matter profile=station device-id=MP-0003 serial="$dac3" \
  matter-discriminator="$disc3" matter-iterations="$it3" matter-salt=@salt3.bin matter-verifier=@ver3.bin \
  matter-passcode=$wrong >/dev/null 2>cc.err
st=$?; set -e
[ $st != 0 ] && grep -q "is not the one the onboarding data's verifier stands for: not kept" cc.err ||
  fail "keyline-cad sealed a passcode that is not the verifier's: exit $st, $(cat cc.err)"
[ "$(sealed_of MP-0003)" = "$before" ] || fail "MP-0003's row changed by a refused request"
ok "keyline-cad refuses to keep a passcode the verifier does not stand for: $(cat cc.err)"
# a sealed value moved to another device's row does not open (it is bound to its row)
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = (SELECT passcode_sealed FROM matter_onboarding WHERE device_id = 'MP-0002') WHERE device_id = 'MP-0003'"
expect_fail "a passcode sealed for MP-0002 read as MP-0003's" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device MP-0003
expect_fail "a device with no Matter row" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device NOPE
[ "$(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-onboarding' AND detail LIKE '%passcode sealed to matter-passcode%'")" = 2 ] ||
  fail "audit entries for the sealed passcodes"
ok "passcodes sealed to the token key: opened with pkcs11-tool's ECDH in the token, equal to the labels', bound to their row, never in the clear"

# 2b. MP-0002 is provisioned again (factory reset, --reprovision): its old sealed value, copied
# back into its row, opens no more (it would give the old passcode, no longer the device's)
old_sealed=$(sealed_of MP-0002); old_pc=$(label_pc MP-0002)
mv "$KL_TEST_DIR/MP-0002.state" "$KL_TEST_DIR/MP-0002.state.old"
st_dev 1 MP-0002 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 --reprovision --reason superseded ||
  { tail -5 station.log; fail "MP-0002: reprovision"; }
st_wait_pid $d 10 || fail "MP-0002 did not leave after LOCK"
new_pc=$(label_pc MP-0002)
[ "$new_pc" != "$old_pc" ] && [ "$(sealed_of MP-0002)" != "$old_sealed" ] || fail "MP-0002: the same passcode after reprovisioning"
got=$(kca matter passcode --device MP-0002 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["passcode"]))')
[ "$got" = "$new_pc" ] || fail "MP-0002 reprovisioned: keyline-ca matter passcode says $got, the new label $new_pc"
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = x'$old_sealed' WHERE device_id = 'MP-0002'"
set +e; out=$(kca matter passcode --device MP-0002 2>&1); st=$?; set -e
[ $st != 0 ] || fail "the old sealed value copied back after reprovisioning opens: $out"
! grep -q "$old_pc" <<<"$out" && grep -q "earlier provisioning of this device" <<<"$out" ||
  fail "the replayed sealed value: exit $st, '$out'"
# and the token-side check agrees: the old value does not open for the new row
derive_z "$old_sealed" 1
seal_open "$old_sealed" MP-0002 "$(row_of MP-0002)" z.bin >/dev/null && fail "the old value opens for the new row (Python)"
[ "$(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-passcode-read'")" = 3 ] ||
  fail "a refused open was audited as read"
ok "a sealed value replayed into its device's row after reprovisioning is refused: $out"

# 2c. a value sealed by the earlier code (format 1: 97 bytes, device id as the only additional
# data), made here in Python with the token key's public half, still opens when it holds the
# passcode the row's verifier stands for; one of an earlier provisioning (MP-0002's old
# passcode) opens under the token but is refused against the verifier
"${P11[@]}" --read-object --type pubkey --id 4d50 -o pub.der >/dev/null 2>&1 || fail "pkcs11-tool --read-object pubkey"
make_v1() { # DEVICE PASSCODE -> hex of a format 1 value
  python3 - pub.der "$1" "$2" <<'PY'
import hashlib, hmac, os, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
pub = serialization.load_der_public_key(open(sys.argv[1], "rb").read())
dev, pc = sys.argv[2].encode(), int(sys.argv[3])
e = ec.generate_private_key(ec.SECP256R1())
z = e.exchange(ec.ECDH(), pub)
prk = hmac.new(b"\0" * 32, z, hashlib.sha256).digest()
key = hmac.new(prk, b"keyline matter passcode v1" + dev + b"\x01", hashlib.sha256).digest()
iv = os.urandom(12)
E = e.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
print((E + iv + AESGCM(key).encrypt(iv, pc.to_bytes(4, "big"), dev)).hex())
PY
}
pc3=$(label_pc MP-0003)
v1=$(make_v1 MP-0003 "$pc3") || fail "making a format 1 value"
[ ${#v1} = 194 ] || fail "format 1 value '$v1'"
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = x'$v1' WHERE device_id = 'MP-0003'"
got=$(kca matter passcode --device MP-0003 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["passcode"]))') ||
  fail "a format 1 value does not open"
[ "$got" = "$pc3" ] || fail "format 1 value opened to $got, the label says $pc3"
# still bound to its device id: moved to MP-0002's row it does not open
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = x'$v1' WHERE device_id = 'MP-0002'"
expect_fail "a format 1 value of MP-0003 read as MP-0002's" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device MP-0002
# MP-0002's passcode before it was provisioned again, sealed the old way: the AEAD opens (device
# id only), the verifier refuses it
v1=$(make_v1 MP-0002 "$old_pc") || fail "making a format 1 value"
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = x'$v1' WHERE device_id = 'MP-0002'"
set +e; out=$(kca matter passcode --device MP-0002 2>&1); st=$?; set -e
[ $st != 0 ] && ! grep -q "$old_pc" <<<"$out" && grep -q "is not the one this row's verifier stands for" <<<"$out" ||
  fail "a format 1 value of MP-0002's earlier provisioning: exit $st, '$out'"
ok "a format 1 sealed value (the earlier code's) still opens, for its device only and only with the passcode of the row's verifier: $out"

# 3. keyline-cad keeps no copy of a passcode it sealed: its memory (gcore, as root) holds no
# request field carrying one (tag 39, length 8, the passcode big-endian)
source "$KL_SRC/tests/lib/core_dump.sh"
[ "$(id -u)" = 0 ] || fail "this test dumps keyline-cad with gcore: run it as root"
kl_core_dump "$CAD_PID" cad.core || fail "could not dump keyline-cad"
for pc in $pcs; do
  python3 - cad.core "$pc" <<'PY' || fail "keyline-cad's memory still holds the request with passcode $pc"
import sys
core, p = open(sys.argv[1], "rb").read(), int(sys.argv[2])
sys.exit(1 if bytes([39, 0, 0, 0, 8]) + p.to_bytes(8, "big") in core else 0)
PY
done
rm -f cad.core
ok "keyline-cad's memory holds no request with a passcode after sealing it"

# 3. keep-passcode off again: the next device's row has none
sed -i 's/^matter-keep-passcode = yes/matter-keep-passcode = no/' "$KL_CONF"
st_dev 1 MP-0004 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || fail "MP-0004: station exit"
st_wait_pid $d 10 || true
[ "$(sqlite3 "$store" "SELECT passcode_sealed IS NULL FROM matter_onboarding WHERE device_id = 'MP-0004'")" = 1 ] ||
  fail "MP-0004: a passcode kept with matter-keep-passcode = no"
expect_fail "a device provisioned without keep-passcode" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device MP-0004
ok "matter-keep-passcode = no keeps none"
