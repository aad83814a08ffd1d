# The device does not dictate its IDevID's names (issue 10, defect 7). A device whose CSR asks
# for the factory CA's DN (keyline-devsim --misbehave evil-subject: a valid CSR for its own key)
# gets nothing; an honest device's IDevID subject is built from what the station knows (model,
# hardware serial: CN=<model>, serialNumber=<serial>, docs/line-protocol.md 4.3). And issuance
# itself (ca_issue, any front end) never gives a certificate the subject of a CA in the store.
source "$KL_SRC/tests/integration/station_common.sh"
st_setup
st_fixture 1
factory_dn="CN=Test Factory CA,O=Keyline Test"

# 1. The evil device: CSR subject = the factory CA's DN (+ OU=root)
st_dev 1 EVIL-1 --misbehave evil-subject --csr-subject "$factory_dn,OU=root"
set +e; st_station --port "$KL_TEST_DIR/fix1" --count 1; st=$?; set -e
st_unplug 1
grep -q "GETCSR answered with an evil subject" EVIL-1.log || fail "the devsim did not send its evil CSR"
if [ "$(st_all_count EVIL-1)" != 0 ]; then
  kca list --json | python3 -c '
import json, sys
for c in json.load(sys.stdin):
    if c.get("device_id") == "EVIL-1": print("issued:", c.get("serial"), c.get("subject"))'
  fail "a certificate was issued for the evil CSR"
fi
[ $st = 1 ] || fail "evil device: station exit $st, expected 1"
[ "$(st_result EVIL-1 outcome)" = failed ] && [ "$(st_result EVIL-1 failed_phase)" = csr ] ||
  fail "evil device: $(st_result EVIL-1 outcome) at $(st_result EVIL-1 failed_phase)"
err=$(st_result EVIL-1 error)
echo "$err" | grep -q "CSR asks for subject 'CN=Test Factory CA" && echo "$err" | grep -q "serialNumber=EVIL-1" ||
  fail "evil device: unreadable error: $err"
ok "CSR with the factory CA's DN refused, nothing issued: $err"

# 2. An honest device: the subject is the station's, never a CA's
st_dev 1 SUBJ-1 --model "Acme Sensor 3"; d=$st_last_dev
st_station --port "$KL_TEST_DIR/fix1" --count 1 || { cat station.log; fail "honest device: station exit"; }
st_wait_pid $d 10 || fail "honest device did not leave after LOCK"
st_check_device SUBJ-1
subj=$(openssl x509 -in SUBJ-1.pem -noout -subject -nameopt RFC2253)
iss=$(openssl x509 -in SUBJ-1.pem -noout -issuer -nameopt RFC2253)
[ "$subj" = "subject=serialNumber=SUBJ-1,CN=Acme Sensor 3" ] || fail "IDevID subject: $subj"
[ "$iss" = "issuer=CN=Test Factory CA,O=Keyline Test" ] || fail "IDevID issuer: $iss"
ok "IDevID subject built from model and serial: $subj ($iss)"

# 3. ca_issue refuses any certificate named like a CA of the store (here through keyline-ca):
# factory1's DN exactly (DER order O, CN, as keyline-ca ca create made it), reordered, and in
# other case and spacing (names compare canonically: RFC 5280 7.1)
make_key ec-p256 evil.key
for subj in "/O=Keyline Test/CN=Test Factory CA" "/CN=Test Factory CA/O=Keyline Test" \
  "/CN=test  FACTORY ca/O=KEYLINE test"; do
  openssl req -new -key evil.key -subj "$subj" -addext "subjectAltName=DNS:est.example.test" -out evil-ee.csr
  set +e; kca issue --issuer field1 --template est-server --csr evil-ee.csr >evil-ee.pem 2>evil-ee.err; st=$?; set -e
  if [ $st = 0 ]; then
    fail "end-entity certificate issued with a CA's subject: $(openssl x509 -in evil-ee.pem -noout -subject -issuer | tr '\n' ' ')"
  fi
  grep -q "subject of CA 'factory1'" evil-ee.err || fail "end-entity named $subj: $(cat evil-ee.err)"
  ok "end-entity certificate named $subj (factory1) refused: $(cat evil-ee.err)"
done
# a sub-CA for another key under the name of an existing CA (root1)
openssl req -new -key evil.key -subj "/O=Keyline Test/CN=Test Root" -out evil-ca.csr
set +e; kca issue --issuer root1 --template field-ca --csr evil-ca.csr >evil-ca.pem 2>evil-ca.err; st=$?; set -e
if [ $st = 0 ]; then
  fail "CA certificate issued for another key under root1's name: $(openssl x509 -in evil-ca.pem -noout -subject -issuer | tr '\n' ' ')"
fi
grep -q "subject of CA 'root1'" evil-ca.err || fail "CA named like root1: $(cat evil-ca.err)"
ok "CA certificate for another key under an existing CA's name refused: $(cat evil-ca.err)"
# a CA whose subject is one attribute (ca_subject_same compares one-attribute names whole): its
# name in other case and spacing is refused, a different one-attribute name is issued
kca ca create --label solo1 --template field-ca --issuer root1 --subject "CN=Solo Field CA" >solo1.pem
openssl req -new -key evil.key -subj "/CN=solo  FIELD ca" -addext "subjectAltName=DNS:est.example.test" -out solo.csr
set +e; kca issue --issuer field1 --template est-server --csr solo.csr >solo.pem 2>solo.err; st=$?; set -e
[ $st != 0 ] || fail "end-entity certificate issued with solo1's one-attribute name"
grep -q "subject of CA 'solo1'" solo.err || fail "one-attribute CA name: $(cat solo.err)"
openssl req -new -key evil.key -subj "/CN=Solo Field CA 2" -addext "subjectAltName=DNS:est.example.test" -out solo2.csr
kca issue --issuer field1 --template est-server --csr solo2.csr >solo2.pem || fail "a one-attribute name of its own"
ok "one-attribute CA name refused in other case and spacing ($(cat solo.err)); CN=Solo Field CA 2 issued"
# a name of its own is issued as before
openssl req -new -key evil.key -subj "/CN=est.example.test/O=Keyline Test" \
  -addext "subjectAltName=DNS:est.example.test" -out fine.csr
kca issue --issuer field1 --template est-server --csr fine.csr >fine.pem || fail "an ordinary server certificate"
openssl verify -CAfile root1.pem -untrusted field1.pem fine.pem >/dev/null || fail "openssl verify fine.pem"
[ "$(openssl x509 -in fine.pem -noout -subject -nameopt RFC2253)" = "subject=O=Keyline Test,CN=est.example.test" ] ||
  fail "fine.pem subject: $(openssl x509 -in fine.pem -noout -subject -nameopt RFC2253)"
kca audit verify >/dev/null || fail "audit verify"
ok "a certificate with a name of its own is still issued"
