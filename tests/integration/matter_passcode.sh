# [station] matter-keep-passcode = yes (issue 19 item 3, docs/matter.md "Keeping the passcode"):
# keyline-cad seals each device's setup passcode to the token key "matter-passcode" (its public
# half only) and the store keeps the sealed value with the onboarding data. Opened here without
# keyline: pkcs11-tool derives the ECDH secret inside the token (CKM_ECDH1_DERIVE with the
# private half), Python (hashlib/hmac, python3-cryptography's AES-GCM) does the rest, and the
# passcode must be the one the label's QR code carries; `keyline-ca matter passcode` (ECDH in
# the token through hsm/) gives the same, audited. Without the key the station fails with a
# clear message and nothing of the passcode is kept.
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
pcs=
for s in MP-0002 MP-0003; do
  st_dev 1 $s --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000; d=$st_last_dev
  st_station --port "$KL_TEST_DIR/fix1" --count 1 || { tail -5 station.log; fail "$s: station exit"; }
  st_wait_pid $d 10 || fail "$s did not leave after LOCK"
  sealed=$(sqlite3 "$store" "SELECT lower(hex(passcode_sealed)) FROM matter_onboarding WHERE device_id = '$s'")
  [ ${#sealed} = 194 ] || fail "$s: sealed passcode '$sealed'"
  # E as a SubjectPublicKeyInfo for pkcs11-tool, the ECDH secret derived in the token
  python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200" + sys.argv[1][:130]))' "$sealed" >e.der
  rm -f z.bin
  # (by --id: pkcs11-tool 0.23's --derive does not select the key by --label)
  "${P11[@]}" --derive -m ECDH1-DERIVE --id 4d50 -i e.der -o z.bin >derive.log 2>&1 ||
    fail "$s: pkcs11-tool --derive: $(cat derive.log)"
  pc=$(python3 - "$sealed" "$s" z.bin <<'PY'
import hashlib, hmac, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
b, dev, z = bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), open(sys.argv[3], "rb").read()
assert len(b) == 97 and len(z) == 32
prk = hmac.new(b"\0" * 32, z, hashlib.sha256).digest()  # RFC 5869: empty salt = HashLen zeros
key = hmac.new(prk, b"keyline matter passcode v1" + dev + b"\x01", hashlib.sha256).digest()
pt = AESGCM(key).decrypt(b[65:77], b[77:], dev)
print(int.from_bytes(pt, "big"))
PY
) || fail "$s: the sealed passcode does not open"
  want=$($MC decode "$(st_result $s matter.qr)" "$(st_result $s matter.manual)" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["passcode"])')
  [ "$pc" = "$want" ] || fail "$s: sealed passcode $pc, label $want"
  pcs+=" $pc"
  # bound to its device: the same blob does not open for another device id
  python3 - "$sealed" MP-OTHER z.bin <<'PY' && fail "$s: the sealed passcode opens for another device id"
import hashlib, hmac, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
b, dev, z = bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), open(sys.argv[3], "rb").read()
prk = hmac.new(b"\0" * 32, z, hashlib.sha256).digest()
key = hmac.new(prk, b"keyline matter passcode v1" + dev + b"\x01", hashlib.sha256).digest()
try:
    AESGCM(key).decrypt(b[65:77], b[77:], dev)
except Exception:
    sys.exit(1)
PY
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
# a sealed value moved to another device's row does not open (it is bound to its device id)
sqlite3 "$store" "UPDATE matter_onboarding SET passcode_sealed = (SELECT passcode_sealed FROM matter_onboarding WHERE device_id = 'MP-0002') WHERE device_id = 'MP-0003'"
expect_fail "a passcode sealed for MP-0002 read as MP-0003's" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device MP-0003
expect_fail "a device with no Matter row" "$KL_BIN/keyline-ca" -c "$KL_CONF" matter passcode --device NOPE
[ "$(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-onboarding' AND detail LIKE '%passcode sealed to matter-passcode%'")" = 2 ] ||
  fail "audit entries for the sealed passcodes"
ok "passcodes sealed to the token key: opened with pkcs11-tool's ECDH in the token, equal to the labels', bound to the device id, never in the clear"

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
