# keyline-ca sign-image (issue 16 items 1, 2, 5): firmware keys made and rotated like CA keys in
# the token, MCUboot images and detached CMS signed there, checked by openssl and by reading the
# image's bytes; every signing in the audit log; refusals leave nothing behind.
source "$KL_SRC/tests/lib/common.sh"
source "$KL_SRC/tests/lib/firmware.sh"
make_hierarchy

# --- firmware keys: ca create with the firmware template, under a CA -------------------------
kca ca create --label fw1 --template firmware --issuer root1 --subject "CN=Test Firmware 1,O=Keyline Test" >fw1.pem 2>create.err ||
  { cat create.err; fail "ca create --template firmware"; }
openssl verify -CAfile root1.pem -purpose any fw1.pem >/dev/null || fail "fw1 does not chain to root1"
openssl x509 -in fw1.pem -noout -ext extendedKeyUsage | grep -q "Code Signing" || fail "fw1: no codeSigning"
openssl x509 -in fw1.pem -noout -ext basicConstraints | grep -q "CA:FALSE" || fail "fw1: a CA certificate"
! grep -q "CRL" create.err || fail "a CRL was published for a firmware key"
kca ca list | grep -q "^fw1  *firmware  *root1" || fail "ca list does not show fw1"
pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" \
  --list-objects --type privkey 2>/dev/null | grep -A8 "label: *fw1" >fw1.obj
grep -q "Access:.*sensitive" fw1.obj && grep -q "never extractable" fw1.obj || { cat fw1.obj; fail "fw1 key is not sensitive/never extractable"; }
ok "firmware key fw1 made in the token (sensitive, never extractable), certified codeSigning by root1"
expect_fail "a firmware key self-signed" kca ca create --label fwx --template firmware --subject "CN=x"
expect_fail "a P-384 firmware key" kca ca create --label fwy --template firmware --issuer root1 --subject "CN=y" --key-type ec-p384
expect_fail "a CRL signed by a firmware key" kca crl --issuer fw1
echo 'not a csr' >x.csr
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev.key -subj "/CN=dev" -out dev.csr 2>/dev/null
expect_fail "a certificate issued by a firmware key" kca issue --issuer fw1 --template device-ldevid --csr dev.csr

# --- MCUboot image ---------------------------------------------------------------------------
fw_payload app.bin 3000
kca sign-image --key fw1 --in app.bin --out app.img --version 1.2.3+4 --security-counter 7 \
  --header-size 0x200 --pad-header --align 8 || fail "sign-image"
[ "$(fw_field app.img hdr_size)" = 512 ] && [ "$(fw_field app.img img_size)" = 3000 ] || fail "header sizes"
[ "$(fw_field app.img version)" = "1.2.3+4" ] || fail "version $(fw_field app.img version)"
[ "$(fw_field app.img counter)" = 7 ] || fail "security counter"
[ "$(fw_field app.img prot_size)" = 12 ] || fail "protected TLV area size"
cmp <(tail -c +513 app.img | head -c 3000) app.bin || fail "payload not at hdr_size"
# SHA256 TLV: SHA-256 of header + payload + protected TLVs, computed here by openssl
want=$(head -c "$(fw_field app.img tlv)" app.img | openssl dgst -sha256 -r | cut -d' ' -f1)
[ "$(fw_field app.img hash)" = "$want" ] || fail "SHA256 TLV is not the hash of the image"
[ "$(fw_field app.img keyhash)" = "$(fw_keyhash fw1.pem)" ] || fail "KEYHASH is not fw1's key hash"
# the ECDSA signature over the same bytes verifies with openssl and fw1's certificate
python3 -c '
import struct, sys
b = open("app.img", "rb").read(); off = int(sys.argv[1])
l = struct.unpack("<H", b[off - 2:off])[0]
open("app.sig", "wb").write(b[off:off + l])' "$(fw_field app.img sig)"
openssl x509 -in fw1.pem -noout -pubkey >fw1.pub
head -c "$(fw_field app.img tlv)" app.img >app.signed-part
openssl dgst -sha256 -verify fw1.pub -signature app.sig app.signed-part >/dev/null || fail "openssl: image signature"
ok "MCUboot image: header, payload, SEC_CNT, SHA256, KEYHASH and ECDSA signature checked with openssl"
# without --pad-header the input must start with zeroed header space
kca sign-image --key fw1 --in app.bin --out nopad.img --version 1.0.0 2>nopad.err && fail "unpadded input with data in the header space accepted"
grep -q "pad-header" nopad.err || fail "no hint at --pad-header: $(cat nopad.err)"
[ ! -e nopad.img ] || fail "refused sign-image left an output file"
{ head -c 32 /dev/zero; cat app.bin; } >zero.bin
kca sign-image --key fw1 --in zero.bin --out zero.img --version 1.0.0 || fail "input with its own header space"
[ "$(fw_field zero.img img_size)" = 3000 ] && [ "$(fw_field zero.img prot_size)" = 0 ] || fail "header space / no counter"

# --- CMS -------------------------------------------------------------------------------------
kca sign-image --key fw1 --in app.bin --out app.p7s --version 1.2.3 --format cms || fail "sign-image --format cms"
openssl cms -verify -binary -inform DER -in app.p7s -content app.bin -CAfile root1.pem -purpose any -out /dev/null 2>cms.err ||
  { cat cms.err; fail "openssl cms -verify"; }
openssl cms -cmsout -print -inform DER -in app.p7s | grep -q "Test Firmware 1" || fail "CMS lacks the signing certificate"
fw_flip app.bin 100 app.bad
! openssl cms -verify -binary -inform DER -in app.p7s -content app.bad -CAfile root1.pem -purpose any -out /dev/null 2>/dev/null ||
  fail "CMS verified over altered content"
ok "detached CMS verifies with openssl cms -verify (and fails for altered content)"

# --- every signing in the store (list --images) and in the audit log ---------------------------
kca list --images --json >images.json
python3 - "$(fw_field app.img hash)" "$(sha256sum app.bin | cut -d' ' -f1)" "$(fw_keyhash fw1.pem)" <<'PY' || fail "list --images --json"
import json, sys
v = json.load(open("images.json"))
assert len(v) == 3, v
a, z, c = v
assert (a["key"], a["format"], a["version"], a["security_counter"], a["sha256"], a["size"]) == \
    ("fw1", "mcuboot", "1.2.3+4", 7, sys.argv[1], 3000), a
assert "security_counter" not in z and z["version"] == "1.0.0+0", z
assert c["format"] == "cms" and c["sha256"] == sys.argv[2], c
assert all(x["key_hash"] == sys.argv[3] and x["actor"].startswith("cli:") for x in v), v
PY
kca list --images | grep -q "fw1  *mcuboot 1.2.3+4  *7  *$(fw_field app.img hash)" || fail "list --images table"
expect_fail "list --images with --status" kca list --images --status valid
kca audit list >audit.txt
[ "$(grep -c " sign-image " audit.txt)" = 3 ] || { cat audit.txt; fail "expected 3 sign-image audit entries"; }
grep " sign-image " audit.txt | grep -q "key=fw1 .*format=mcuboot version=1.2.3+4 counter=7 sha256=$(fw_field app.img hash)" ||
  fail "audit entry lacks the image hash / version / counter"
grep " sign-image " audit.txt | grep -q "format=cms .*sha256=$(sha256sum app.bin | cut -d' ' -f1)" || fail "CMS audit entry"
grep " sign-image " audit.txt | grep -q "^[0-9]* [^ ]* cli:" || fail "audit entry does not name who signed"
kca audit verify >/dev/null || fail "audit verify"
ok "every signing recorded (hash, version, counter, key, who); audit chain verifies"

# --- refusals: nothing signed, nothing written, nothing recorded --------------------------------
n0=$(kca audit list | grep -c " sign-image ")
expect_fail "a CA key as firmware key" kca sign-image --key root1 --in app.bin --out r.img --version 1.0.0
expect_fail "an unknown key" kca sign-image --key nosuch --in app.bin --out r.img --version 1.0.0
expect_fail "a bad version" kca sign-image --key fw1 --in app.bin --out r.img --version 1.2
expect_fail "a version field out of range" kca sign-image --key fw1 --in app.bin --out r.img --version 256.0.0
expect_fail "a bad counter" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --security-counter -1
expect_fail "a header size below 32" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --header-size 16 --pad-header
expect_fail "an alignment of 3" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --align 3
expect_fail "an unknown format" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --format zip
expect_fail "writing over the store" kca sign-image --key fw1 --in app.bin --out keyline.db --version 1.0.0 --pad-header
expect_fail "a missing input" kca sign-image --key fw1 --in nosuch.bin --out r.img --version 1.0.0
# numbers as imgtool reads them (Python's int(s, 0)): "010" is no octal 8, a lower counter than
# the one written; blanks and signs are no part of a number
for n in 010 " 5" 5x 0x -0 +5 0x1ffffffff; do
  rc=0; kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --pad-header \
    --security-counter "$n" 2>num.err || rc=$?
  [ $rc = 2 ] && grep -q "not a number" num.err || fail "--security-counter '$n': exit $rc $(cat num.err)"
done
expect_fail "a header size of 0200 (octal)" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --header-size 0200 --pad-header
expect_fail "a bad header size with --format cms" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --format cms --header-size 7
rc=0; kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --pad-header --in-sha256 xyz 2>sha.err || rc=$?
[ $rc = 2 ] && grep -q "not 64 hexadecimal digits" sha.err || fail "a malformed --in-sha256: exit $rc $(cat sha.err)"
[ ! -e r.img ] || fail "a refused sign-image wrote its output"
[ "$(kca audit list | grep -c " sign-image ")" = "$n0" ] || fail "a refused sign-image was recorded"
[ "$(kca list --images --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 3 ] ||
  fail "a refused sign-image is in list --images"
kca sign-image --help | grep -q -- "--security-counter" || fail "sign-image --help"
ok "refusals write and record nothing"

# accepted forms: 0x hexadecimal for the counter, an upper-case --in-sha256
sha=$(sha256sum app.bin | cut -d' ' -f1 | tr a-f A-F)
kca sign-image --key fw1 --in app.bin --out hex.img --version 1.0.0 --pad-header --security-counter 0x1A \
  --in-sha256 "$sha" 2>/dev/null || fail "--security-counter 0x1A --in-sha256 in upper case"
[ "$(fw_field hex.img counter)" = 26 ] || fail "counter 0x1A is $(fw_field hex.img counter)"
# a device is written through, so after the record (never released before it): when that write
# fails (/dev/full), the message says the signing is recorded. A regular --out is written to a
# temporary file before the record instead: a failure there records nothing (firmware_sign_io)
n1=$(kca audit list | grep -c " sign-image ")
rc=0; kca sign-image --key fw1 --in app.bin --out /dev/full --version 1.0.1 --pad-header 2>full.err || rc=$?
[ $rc = 1 ] && grep -q "No space left on device; the signing is recorded (keyline-ca list --images: sha256 [0-9a-f]\{64\}) but the image was not written to /dev/full" full.err ||
  fail "--out /dev/full: exit $rc $(cat full.err)"
[ "$(kca audit list | grep -c " sign-image ")" = $((n1 + 1)) ] || fail "the signing for /dev/full is not recorded"
ok "counters and sizes read as imgtool reads them; a failed write names the recorded signing"

# --- rotation: a new firmware key under the same CA; the old one revoked signs nothing more ----
kca ca rotate --label fw1 --new-label fw2 >fw2.pem 2>rotate.err || { cat rotate.err; fail "ca rotate of a firmware key"; }
! grep -q "CRL" rotate.err || fail "a CRL was published for a rotated firmware key"
kca ca list | grep -q "^fw2  *firmware  *root1" || fail "fw2 is not a firmware key under root1"
[ "$(fw_keyhash fw1.pem)" != "$(fw_keyhash fw2.pem)" ] || fail "rotation kept the key"
kca sign-image --key fw2 --in app.bin --out app2.img --version 1.2.4 --security-counter 8 --pad-header || fail "sign with fw2"
[ "$(fw_field app2.img keyhash)" = "$(fw_keyhash fw2.pem)" ] || fail "fw2 image key hash"
kca revoke --serial "$(openssl x509 -in fw1.pem -noout -serial | cut -d= -f2)" --reason keyCompromise >/dev/null || fail "revoke fw1"
expect_fail "a revoked firmware key" kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --pad-header
! kca sign-image --key fw1 --in app.bin --out r.img --version 1.0.0 --pad-header 2>revoked.err || fail "revoked key signed"
grep -q "firmware key 'fw1' cannot sign: its certificate .* is revoked (keyCompromise)" revoked.err ||
  fail "no reason given for the revoked key: $(cat revoked.err)"
[ ! -e r.img ] || fail "revoked key: output written"
ok "firmware key rotated (fw2 signs, no CRL); revoked fw1 refused with its reason"

# --- retiring a firmware key (docs/firmware.md 6): no OCSP signer, no CRL; its key destroyed ---
kca ca retire --label fw2 >retire.out 2>retire.err || { cat retire.err; fail "ca retire of a firmware key"; }
grep -q "firmware key 'fw2' retired" retire.err && [ ! -s retire.out ] || fail "retire said: $(cat retire.err retire.out)"
kca ca list | grep -q "^fw2 .*retired" || fail "fw2 is not retired: $(kca ca list)"
! pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" \
  --list-objects --type privkey 2>/dev/null | grep -q "label: *fw2$" || fail "fw2's key is still in the token"
rc=0; kca sign-image --key fw2 --in app.bin --out r.img --version 1.0.0 --pad-header 2>ret.err || rc=$?
[ $rc = 4 ] && grep -q "firmware key 'fw2' is retired" ret.err || fail "retired fw2 signed (exit $rc): $(cat ret.err)"
kca audit list | grep -q " ca-retire .*label=fw2 firmware-key key=destroyed" || fail "no ca-retire audit entry"
kca audit verify >/dev/null || fail "audit verify"
ok "a firmware key is retired (no CRL), its key destroyed; it signs nothing more"
