# Matter devices on the line (issue 19, docs/matter.md): PAA and PAI in the token
# (keyline-ca ca create --vid/--pid), the station issuing DACs through keyline-cad, the MATTER
# request, labels and the results line. Checked with tools that are not keyline's: openssl
# (verify -x509_strict at the DAC's notBefore, x509 -text, asn1parse), rsvg-convert and zbarimg
# (the label's QR code read back) and tests/lib/matter_check.py (a DER reader, the QR and
# manual-code decoders, SPAKE2+ in pure Python).
source "$KL_SRC/tests/integration/station_common.sh"
MC="python3 $KL_SRC/tests/lib/matter_check.py"

# ---- 1. the hierarchy in the token -----------------------------------------------------------
kca ca create --label paa1 --template matter-paa --subject "CN=Keyline Test PAA,O=Keyline Test" \
  --vid 0xFFF1 >paa1.pem
kca ca create --label pai1 --template matter-pai --issuer paa1 \
  --subject "CN=Keyline Test PAI,O=Keyline Test" --vid 0xFFF1 --pid 0x8000 >pai1.pem
expect_fail "a PAI for another vendor than its PAA's" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" ca create --label pai2 --template matter-pai --issuer paa1 \
  --subject "CN=Other PAI" --vid 0xFFF2
expect_fail "a P-384 PAI" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" ca create --label pai3 --template matter-pai --issuer paa1 \
  --subject "CN=P384 PAI" --vid 0xFFF1 --key-type ec-p384
expect_fail "--pid without --vid" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" ca create --label pai4 --template matter-pai --issuer paa1 \
  --subject "CN=x" --pid 0x8000
# a Certification Declaration: the maker gets a CMS-signed one from the CSA; the station stores
# it as is, so any bytes do here
head -c 236 /dev/urandom >cd.der
mkdir labels
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
  echo "labels = labels"
} >>"$KL_CONF"
st_cad_start
st_fixture 1
# files that carry passcodes and exist before the station runs keep no wider mode: a results
# file made 0644 (by hand, by an earlier keyline-provision) and a label written through a link
# the operator keeps to a 0644 file; --results names another, 0666
touch results.jsonl other-results.jsonl
chmod 0644 results.jsonl
chmod 0666 other-results.jsonl
mkdir printed
touch printed/MT-0002.svg
chmod 0644 printed/MT-0002.svg
ln -s "$KL_TEST_DIR/printed/MT-0002.svg" labels/MT-0002.svg

# ---- 2. two devices ---------------------------------------------------------------------------
for s in MT-0001 MT-0002; do
  st_dev 1 $s --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000; d=$st_last_dev
  st_station --port "$KL_TEST_DIR/fix1" --count 1 || { tail -5 station.log; fail "$s: station exit"; }
  st_wait_pid $d 10 || fail "$s did not leave after LOCK"
  [ "$(st_result $s outcome)" = ok ] || fail "$s: $(st_result $s error)"
  "$KDEV" --state "$KL_TEST_DIR/$s.state" --print-cert >$s.dac.pem
  "$KDEV" --state "$KL_TEST_DIR/$s.state" --print-matter >$s.matter.json || fail "$s: --print-matter"
done
ok "two Matter devices provisioned"

# ---- 3. the chains verify, strictly, at the DAC's notBefore ------------------------------------
for s in MT-0001 MT-0002; do
  nb=$(openssl x509 -in $s.dac.pem -noout -startdate | cut -d= -f2)
  at=$(date -u -d "$nb" +%s)
  openssl verify -x509_strict -attime "$at" -CAfile paa1.pem -untrusted pai1.pem $s.dac.pem >/dev/null ||
    fail "$s: openssl verify -x509_strict -attime $at"
done
ok "PAA -> PAI -> DAC verifies with openssl -x509_strict at each DAC's notBefore"

# ---- 4. every profile point, on the issued certificates, read by openssl ----------------------
# text: field TEXT-OF-CERT NAME -> the line after the extension's header
ext_hdr() { grep -E "^ +$2:" <<<"$1" | head -1; }
ext_val() { grep -E -A1 "^ +$2:" <<<"$1" | sed -n 2p | sed 's/^ *//'; }
check_profile() { # FILE KIND(paa|pai|dac)
  local f=$1 k=$2 t; t=$(openssl x509 -in "$f" -noout -text)
  grep -q "Signature Algorithm: ecdsa-with-SHA256" <<<"$t" || fail "$f: not ecdsa-with-SHA256"
  grep -q "ASN1 OID: prime256v1" <<<"$t" || fail "$f: not a P-256 key"
  grep -q "Version: 3 (0x2)" <<<"$t" || fail "$f: not v3"
  [ "$(ext_hdr "$t" "X509v3 Basic Constraints")" != "" ] && ext_hdr "$t" "X509v3 Basic Constraints" | grep -q critical ||
    fail "$f: basicConstraints not critical"
  ext_hdr "$t" "X509v3 Key Usage" | grep -q critical || fail "$f: keyUsage not critical"
  ext_hdr "$t" "X509v3 Subject Key Identifier" | grep -q critical && fail "$f: SKI critical"
  local bc ku; bc=$(ext_val "$t" "X509v3 Basic Constraints"); ku=$(ext_val "$t" "X509v3 Key Usage")
  case $k in
    dac) [ "$bc" = "CA:FALSE" ] || fail "$f: basicConstraints $bc"
         [ "$ku" = "Digital Signature" ] || fail "$f: keyUsage $ku" ;;
    pai) [ "$bc" = "CA:TRUE, pathlen:0" ] || fail "$f: basicConstraints $bc"
         [[ "$ku" =~ ^(Digital\ Signature,\ )?Certificate\ Sign,\ CRL\ Sign$ ]] || fail "$f: keyUsage $ku" ;;
    paa) [[ "$bc" =~ ^CA:TRUE(,\ pathlen:1)?$ ]] || fail "$f: basicConstraints $bc"
         [[ "$ku" =~ ^(Digital\ Signature,\ )?Certificate\ Sign,\ CRL\ Sign$ ]] || fail "$f: keyUsage $ku" ;;
  esac
  if [ $k != paa ]; then
    ext_hdr "$t" "X509v3 Authority Key Identifier" >/dev/null || fail "$f: no AKID"
    ext_hdr "$t" "X509v3 Authority Key Identifier" | grep -q critical && fail "$f: AKID critical"
  fi
  # 20-byte key identifiers, read from the DER (asn1parse: OCTET STRING 04 14 <20 bytes>, and
  # our own reader)
  local kid; kid=$($MC keyids "$f")
  python3 -c 'import json,sys; k=json.loads(sys.argv[1]); a=k["aki"]
assert k["ski"]==[20,False], k
assert (a is None and sys.argv[2]=="paa") or a[:2]==[20,False], k' "$kid" $k || fail "$f: key identifiers $kid"
  openssl asn1parse -in "$f" | grep -A1 "X509v3 Subject Key Identifier" | grep -q "OCTET STRING.*\[HEX DUMP\]:0414[0-9A-F]\{40\}$" ||
    fail "$f: asn1parse: SKI is not 20 bytes"
  # the VendorID/ProductID attributes: UTF8STRING, four upper-case hex digits
  local a; a=$(openssl asn1parse -in "$f" | grep -A1 "OBJECT *:1.3.6.1.4.1.37244.2.[12]$" | grep -v OBJECT | grep -v -- "--" || true)
  [ -z "$a" ] || ! grep -qv "UTF8STRING *:[0-9A-F]\{4\}$" <<<"$a" || fail "$f: asn1parse: $a"
}
check_profile paa1.pem paa; check_profile pai1.pem pai
for s in MT-0001 MT-0002; do check_profile $s.dac.pem dac; done
[ "$($MC dn-ids paa1.pem)" = '{"vid": "FFF1", "pid": null}' ] || fail "PAA ids $($MC dn-ids paa1.pem)"
[ "$($MC dn-ids pai1.pem)" = '{"vid": "FFF1", "pid": "8000"}' ] || fail "PAI ids $($MC dn-ids pai1.pem)"
for s in MT-0001 MT-0002; do
  [ "$($MC dn-ids $s.dac.pem)" = '{"vid": "FFF1", "pid": "8000"}' ] || fail "$s: DAC ids $($MC dn-ids $s.dac.pem)"
  openssl x509 -in $s.dac.pem -noout -subject -nameopt RFC2253 | grep -q "serialNumber=$s" || fail "$s: DAC serial"
  # validity inside the PAI's
  python3 - $s.dac.pem pai1.pem <<'PY' || fail "$s: DAC validity outside the PAI's"
import subprocess, sys
from datetime import datetime
def v(f, w):
    s = subprocess.run(["openssl", "x509", "-in", f, "-noout", "-" + w], capture_output=True, text=True).stdout
    return datetime.strptime(s.split("=", 1)[1].strip(), "%b %d %H:%M:%S %Y %Z")
sys.exit(0 if v(sys.argv[1], "startdate") >= v(sys.argv[2], "startdate") and v(sys.argv[1], "enddate") <= v(sys.argv[2], "enddate") else 1)
PY
done
openssl x509 -in MT-0001.dac.pem -noout -enddate | grep -q "Dec 31 23:59:59 9999 GMT" || fail "DAC notAfter"
ok "profile points on PAA, PAI and both DACs (openssl -text, asn1parse, our DER reader)"

# ---- 5. DACs unique per device ------------------------------------------------------------------
[ "$(openssl x509 -in MT-0001.dac.pem -noout -serial)" != "$(openssl x509 -in MT-0002.dac.pem -noout -serial)" ] ||
  fail "same DAC serial"
[ "$(openssl x509 -in MT-0001.dac.pem -noout -pubkey)" != "$(openssl x509 -in MT-0002.dac.pem -noout -pubkey)" ] ||
  fail "same DAC key"
ok "DACs unique per device (serials and keys differ)"

# ---- 6. what the device holds, the label and the results line ---------------------------------
for s in MT-0001 MT-0002; do
  qr=$(st_result $s matter.qr); man=$(st_result $s matter.manual); disc=$(st_result $s matter.discriminator)
  dec=$($MC decode "$qr" "$man") || fail "$s: codes do not decode: $qr $man"
  python3 - "$dec" "$disc" $s.matter.json $s.dac.pem pai1.pem cd.der "$MC" <<'PY' || fail "$s: device data"
import base64, json, subprocess, sys
dec, disc, dev = json.loads(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3]))
assert (dec["vid"], dec["pid"], dec["flow"], dec["discovery"]) == (0xFFF1, 0x8000, 0, 2), dec
assert dec["discriminator"] == disc == dev["discriminator"], (dec, disc, dev["discriminator"])
assert dev["dac"] == open(sys.argv[4]).read() and dev["pai"] == open(sys.argv[5]).read(), "dac/pai"
assert base64.b64decode(dev["cd"]) == open(sys.argv[6], "rb").read(), "cd"
assert dev["iterations"] == 1000 and 16 <= len(base64.b64decode(dev["salt"])) <= 32
assert len(bytes.fromhex(dev["unique_id"])) >= 16
v = subprocess.run(sys.argv[7].split() + ["verifier", str(dec["passcode"]), dev["salt"], "1000"],
                   capture_output=True, text=True, check=True).stdout.strip()
assert v == dev["verifier"], "verifier recomputed from the label's passcode differs"
PY
  pc=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["passcode"])' "$dec")
  # the passcode never reached the device: not in its flash, as text or as the PBKDF2 input
  python3 - "$KL_TEST_DIR/$s.state" "$pc" <<'PY' || fail "$s: the passcode is in the device's flash"
import sys
b, p = open(sys.argv[1], "rb").read(), int(sys.argv[2])
sys.exit(1 if p.to_bytes(4, "little") in b or str(p).encode() in b or b"%08d" % p in b else 0)
PY
  lab=labels/$s.svg
  [ -f $lab ] || fail "$s: no label"
  grep -q "${man:0:4}-${man:4:3}-${man:7:4}" $lab && grep -q "S/N $s" $lab && grep -q "<path" $lab ||
    fail "$s: label lacks the manual code, the serial or the QR code"
  [ "$(st_result $s matter.label)" = "$KL_TEST_DIR/$lab" ] || fail "$s: results label $(st_result $s matter.label)"
  # the QR code drawn on the label, rendered (librsvg) and read back by a QR decoder (zbar)
  rsvg-convert -o $s.label.png $lab || fail "$s: the label SVG does not render"
  [ "$(zbarimg --raw -q $s.label.png 2>/dev/null)" = "$qr" ] ||
    fail "$s: the label's QR code reads '$(zbarimg --raw -q $s.label.png 2>/dev/null)', not $qr"
done
[ "$(st_result MT-0001 matter.qr)" != "$(st_result MT-0002 matter.qr)" ] || fail "same onboarding payload twice"
# the results file carries the passcodes (QR and manual codes): not readable by others, as the labels
[ "$(stat -c %a results.jsonl)" = 640 ] && [ "$(stat -c %a labels/MT-0001.svg)" = 640 ] ||
  fail "results file mode $(stat -c %a results.jsonl), label mode $(stat -c %a labels/MT-0001.svg): passcodes readable by others"
grep -q "results file $KL_TEST_DIR/results.jsonl was mode 0644: made 0640" station.log ||
  fail "the results file's mode was changed without a word in the log"
[ -L labels/MT-0002.svg ] && [ "$(stat -L -c %a labels/MT-0002.svg)" = 640 ] && grep -q "S/N MT-0002" printed/MT-0002.svg ||
  fail "the label written through a link: mode $(stat -L -c %a labels/MT-0002.svg)"
# --results FILE (the command line over [station] results) likewise; a mode that cannot be
# fixed (another user's file) is refused, not written to: st_matter_file_private
timeout 30 "$KPROV" -c "$KL_CONF" --results other-results.jsonl --port "$KL_TEST_DIR/no-fixture" >>station.log 2>&1 || true
[ "$(stat -c %a other-results.jsonl)" = 640 ] || fail "--results file left mode $(stat -c %a other-results.jsonl)"
ok "an existing results file (0644, 0666) and a label behind a link (0644) are made 0640"
# the store keeps discriminator, salt, iterations and verifier beside the inventory row (read
# with sqlite3, not keyline), with an audit entry; never the passcode
store=$(sed -n 's/^path *= *//p' "$KL_CONF" | head -1)
for s in MT-0001 MT-0002; do
  row=$(sqlite3 "$store" "SELECT m.discriminator || ' ' || m.iterations || ' ' || lower(hex(m.salt)) || ' ' || lower(hex(m.verifier)) || ' ' || m.cert_serial || ' ' || d.state FROM matter_onboarding m JOIN devices d ON d.device_id = m.device_id WHERE m.device_id = '$s'")
  want=$(python3 -c 'import json,sys,base64; d=json.load(open(sys.argv[1]))
print(d["discriminator"], d["iterations"], base64.b64decode(d["salt"]).hex(), base64.b64decode(d["verifier"]).hex())' $s.matter.json)
  dacsn=$(openssl x509 -in $s.dac.pem -noout -serial | cut -d= -f2 | tr A-F a-f)
  [ "$row" = "$want ${dacsn} provisioned" ] || [ "$row" = "$want $(echo $dacsn | tr a-f A-F) provisioned" ] ||
    fail "$s: store row '$row', device has '$want', DAC $dacsn"
done
[ "$(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-onboarding'")" = 2 ] ||
  fail "matter-onboarding audit entries: $(sqlite3 "$store" "SELECT count(*) FROM audit WHERE action = 'matter-onboarding'")"
ok "the store keeps each device's discriminator, salt, iterations and verifier with its inventory row (sqlite3), audited"
ok "QR and manual codes decode to VID FFF1, PID 8000, the discriminator and a valid passcode; the verifier recomputed from it is the device's; the passcode is not on the device; the labels' QR codes read back (zbarimg)"

# ---- 7. refusals ------------------------------------------------------------------------------
# a Certification Declaration past what fits a Matter AttestationResponse (790 bytes: the SDK's
# kMaxCMSSignedCDMessage; with nonce and timestamp the attestation elements must fit RESP_MAX,
# 900 bytes): refused before any device, naming the limit and the file's size
head -c 791 /dev/urandom >cd-big.der
sed -i 's/^matter-cd = cd.der/matter-cd = cd-big.der/' "$KL_CONF"
set +e; "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --count 1 >cd-big.log 2>&1; st=$?; set -e
[ $st != 0 ] && grep -q "matter-cd .*cd-big.der is 791 bytes: a Certification Declaration has at most 790" cd-big.log ||
  fail "a CD of 791 bytes: exit $st, $(cat cd-big.log)"
sed -i 's/^matter-cd = cd-big.der/matter-cd = cd.der/' "$KL_CONF"
ok "a 791-byte Certification Declaration is refused: $(tail -1 cd-big.log)"
# a device of another product (its CSR names PID 8001): the station refuses before keyline-cad
st_dev 1 MT-BAD1 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8001
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
st_unplug 1
[ $st = 1 ] && st_result MT-BAD1 error | grep -q "does not name Matter VendorID FFF1 and ProductID 8000" ||
  fail "device with PID 8001: exit $st, $(st_result MT-BAD1 error)"
[ "$(st_all_count MT-BAD1)" = 0 ] || fail "a DAC was issued for PID 8001"
ok "a device naming another PID is refused: $(st_result MT-BAD1 error)"
# a device answering with a P-384 CSR
st_dev 1 MT-BAD2 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8000 --misbehave p384-csr \
  --csr-subject "CN=Acme Plug,serialNumber=MT-BAD2,1.3.6.1.4.1.37244.2.1=FFF1,1.3.6.1.4.1.37244.2.2=8000"
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
st_unplug 1
[ $st = 1 ] && st_result MT-BAD2 error | grep -q "not for a P-256 key" ||
  fail "device with a P-384 CSR: exit $st, $(st_result MT-BAD2 error)"
[ "$(st_all_count MT-BAD2)" = 0 ] || fail "a DAC was issued for a P-384 key"
ok "a device answering with a P-384 key is refused: $(st_result MT-BAD2 error)"
# the PAI with PID 8000 refuses a DAC for PID 8001, whoever asks: keyline-cad for a station set
# up for 8001, and keyline-ca issue
sed -i 's/^matter-pid = 0x8000/matter-pid = 0x8001/' "$KL_CONF"
st_dev 1 MT-BAD3 --model "Acme Plug" --matter-vid 0xFFF1 --matter-pid 0x8001
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
st_unplug 1
[ $st = 1 ] && st_result MT-BAD3 error | grep -q "the PAI is for ProductID 8000: it refuses a DAC for ProductID 8001" ||
  fail "PAI 8000 asked for PID 8001: exit $st, $(st_result MT-BAD3 error)"
[ "$(st_all_count MT-BAD3)" = 0 ] || fail "PAI 8000 issued a DAC for PID 8001"
make_key ec-p256 other.key
# openssl req knows the Matter OIDs only by an oid_section
printf 'oid_section = oids\n[oids]\nmatterVID = %s\nmatterPID = %s\n[req]\ndistinguished_name = dn\n[dn]\n' \
  1.3.6.1.4.1.37244.2.1 1.3.6.1.4.1.37244.2.2 >oids.cnf
openssl req -new -config oids.cnf -key other.key -utf8 -subj "/CN=Other/matterVID=FFF1/matterPID=8001" -out other.csr
set +e; kca issue --issuer pai1 --template matter-dac --csr other.csr >other.pem 2>other.err; st=$?; set -e
[ $st != 0 ] && grep -q "refuses a DAC for ProductID 8001" other.err ||
  fail "keyline-ca issue of a DAC for PID 8001 under PAI 8000: exit $st, $(cat other.err)"
openssl req -new -config oids.cnf -key other.key -utf8 -subj "/CN=Other/matterVID=FFF1/matterPID=8000" -out good.csr
kca issue --issuer pai1 --template matter-dac --csr good.csr >good.pem || fail "the same CSR for PID 8000"
openssl verify -x509_strict -CAfile paa1.pem -untrusted pai1.pem good.pem >/dev/null || fail "good.pem"
ok "a PAI with a PID refuses DACs for another PID: $(st_result MT-BAD3 error)"
kca audit verify >/dev/null || fail "audit verify"
