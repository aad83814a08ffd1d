# Quorum ceremonies (issue 14 item 3): three officers, each with a key on a SoftHSM token of
# their own (made with pkcs11-tool and p11tool, certificates made with openssl through libp11's
# engine), [ceremony] quorum = 2: two officers register, the third and a removal need a
# ceremony. A ceremony one approval short, an unregistered officer, an
# officer who approves twice, a removed officer and approvals over other bytes are refused and
# logged; two of three creates a root end to end; its transcript verifies offline and fails with
# one altered byte.
# ceremony_quorum_pg.sh runs the same with the store on PostgreSQL (CQ_PG=1).
source "$KL_SRC/tests/lib/common.sh"

if [ -n "${CQ_PG:-}" ]; then
  pgdir=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
  trap '"$KL_SRC/tests/lib/pg.sh" stop "$pgdir"' EXIT
  url=$("$KL_SRC/tests/lib/pg.sh" start "$pgdir") || fail "PostgreSQL did not start"
  sed -i "s|^path = keyline.db|path = ${url//&/\\&}|" "$KL_CONF"
  grep -q "^path = postgresql" "$KL_CONF" || fail "the configuration does not name the cluster"
  sql() { psql -X -A -t -q "$url" -c "$1" >/dev/null; }
  # replace text in ceremony ID's stored request bytes (an edit by whoever can write the store)
  request_edit() { sql "UPDATE ceremonies SET request = convert_to(replace(convert_from(request, 'UTF8'), '$2', '$3'), 'UTF8') WHERE id = $1"; }
else
  sql() { sqlite3 keyline.db "$1"; }
  request_edit() { sql "UPDATE ceremonies SET request = CAST(replace(CAST(request AS TEXT), '$2', '$3') AS BLOB) WHERE id = $1"; }
fi

MOD=$KL_MODULE
source "$KL_SRC/tests/lib/officer.sh"
officer_token alice 1111 pkcs11-tool EC:prime256v1
officer_token bob 2222 pkcs11-tool rsa:2048
officer_token carol 3333 p11tool
officer_token mallory 4444 pkcs11-tool EC:prime256v1
ok "four officer tokens (EC P-256, RSA-2048, EC P-384 by p11tool), certificates by openssl's pkcs11 engine"

printf '\n[ceremony]\nquorum = 2\n' >> "$KL_CONF"
# keyline-cad's profile "station", which production orders name by default
printf '\n[station]\nissuer = factory1\n' >> "$KL_CONF"
kca config check | grep -q "quorum" || fail "config check does not show [ceremony] quorum"
approve() { # approve ID NAME PIN: with the officer's token, PIN from the environment
  OFFICER_PIN=$3 kca ceremony approve --id "$1" --token "pkcs11:token=officer-$2;object=$2" --pin env:OFFICER_PIN
}
# the first two officers register as such; from then on the officers decide who is one
kca officer add --name alice --cert alice.pem >/dev/null
expect_fail "the same key under a second name" kca officer add --name alice2 --cert alice.pem
expect_fail "a bad officer name" kca officer add --name "a b" --cert mallory.pem
kca officer add --name bob --cert bob.pem >/dev/null
rc=0; kca officer add --name carol --cert carol.pem 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "ceremony propose officer add" err.txt || { cat err.txt; fail "a third officer added without a ceremony (exit $rc)"; }
oid=$(kca ceremony propose officer add --name carol --cert carol.pem)
kca ceremony show --id "$oid" | grep -q "^param cert: MII" || fail "the officer ceremony does not carry the certificate"
approve "$oid" alice 1111 2>/dev/null
echo 2222 > bob.pin; chmod 600 bob.pin
kca ceremony approve --id "$oid" --token "pkcs11:token=officer-bob;object=bob" --pin file:bob.pin 2>/dev/null
kca ceremony run --id "$oid" 2>/dev/null
kca officer list | grep -q "^carol .*active" || fail "officer list lacks carol"
ok "two officers registered, the third by a ceremony they approved (bob's RSA key, PIN from a 0600 file)"

rc=0; kca ca create --label root1 --template root --subject "CN=Quorum Root,O=Keyline Test" 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "ceremony propose ca create" err.txt || { cat err.txt; fail "plain ca create not refused (exit $rc)"; }
rc=0; kca ca rotate --label x --new-label y 2>err.txt || rc=$?
[ $rc = 4 ] || fail "plain ca rotate not refused (exit $rc)"
ok "plain ca create and ca rotate refused under quorum 2: $(cat err.txt)"

id=$(kca ceremony propose ca create --label root1 --template root \
       --subject "CN=Quorum Root,O=Keyline Test" --key-type ec-p384)
kca ceremony show --id "$id" | grep -q "param subject: CN=Quorum Root,O=Keyline Test" || fail "show lacks the request"
refusals() { kca audit list > refusals.txt; grep -c "ceremony-refused" refusals.txt || true; }
tokkeys() { pkcs11-tool --module "$MOD" --token-label keyline-test --login --pin "$KEYLINE_PIN" --list-objects 2>/dev/null | grep -c "label: *root1$" || true; }

expect_fail "run with no approval" kca ceremony run --id "$id"
approve "$id" alice 1111 2>/dev/null
before=$(refusals)
expect_fail "run one signature short" kca ceremony run --id "$id"
[ "$(refusals)" -gt "$before" ] || fail "the short run was not logged"
kca audit list | grep "ceremony-refused" | tail -1 | grep -q "1 valid approval" || fail "refusal entry does not say why"
approve "$id" alice 1111 2>/dev/null
expect_fail "run with alice's approval given twice" kca ceremony run --id "$id"
kca ca list | grep -q "^root1 " && fail "a refused ceremony made a CA"
[ "$(tokkeys)" = 0 ] || fail "a refused ceremony left a key in the token"
ok "one signature short (and the same officer twice) refused and logged; no CA, no key"

before=$(refusals)
expect_fail "approval by an unregistered officer's token" approve "$id" mallory 4444
[ "$(refusals)" -gt "$before" ] || fail "the unregistered approval was not logged"
echo 9999 > wrong.pin; chmod 600 wrong.pin
expect_fail "approval with a wrong PIN" kca ceremony approve --id "$id" --token "pkcs11:token=officer-bob;object=bob" --pin file:wrong.pin
kca ceremony approve --id "$id" --token "pkcs11:token=officer-bob;object=bob" --pin file:bob.pin 2>/dev/null
expect_fail "officer remove without a ceremony" kca officer remove --name bob
rid=$(kca ceremony propose officer remove --name bob)
approve "$rid" alice 1111 2>/dev/null
approve "$rid" carol 3333 2>/dev/null
# a run that died between claiming the ceremony and recording its end leaves it running, with
# the runner's process and host as its note (set here as such a run leaves it): a run still
# going, or one on another host, is refused naming it; one whose process is gone on this host
# is put back (audited ceremony-interrupted) and this run counts the approvals anew
running() { sql "UPDATE ceremonies SET status = 'running', note = 'running: pid $1 on host $2 since 2026-12-05T00:00:00Z, by someone' WHERE id = $rid"; }
sleep 300 & live=$!
running "$live" "$(hostname)"
kca ceremony show --id "$rid" | grep -q "^run in progress or interrupted: running: pid $live" || fail "ceremony show does not say who runs it"
rc=0; kca ceremony run --id "$rid" 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "is being run (running: pid $live" err.txt || { cat err.txt; fail "a ceremony still being run ran again (exit $rc)"; }
running 4242 other-host.example
rc=0; kca ceremony run --id "$rid" 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "run it again on that host" err.txt || { cat err.txt; fail "a run on another host was taken over (exit $rc)"; }
kill "$live"; wait "$live" 2>/dev/null || true
running "$live" "$(hostname)"
kca ceremony run --id "$rid" 2>err.txt || { cat err.txt; fail "the run after an interrupted one"; }
kca audit list | grep " ceremony-interrupted " | grep -q "the run by pid $live on host $(hostname) died" || fail "the interrupted run is not audited"
ok "an interrupted ceremony run: refused while its process lives or on another host, taken up again once it is gone (audited)"
kca officer list | grep -q "^bob .*removed" || fail "bob not removed"
expect_fail "run counting a removed officer" kca ceremony run --id "$id"
kca audit list | grep "ceremony-refused" | tail -1 | grep -q "bob is not a registered officer" || fail "refusal does not name bob"
ok "an unregistered officer's approval refused at approve, a removed officer's at run, both logged"

# approvals over other bytes: the request edited in the store after alice signed it, and alice's
# signature copied onto another ceremony
approve "$id" carol 3333 2>/dev/null
request_edit "$id" "CN=Quorum Root" "CN=Other Root"
expect_fail "run of a request edited after approval" kca ceremony run --id "$id"
kca audit list | grep "ceremony-refused" | tail -1 | grep -q "alice signed other bytes" || fail "refusal does not say alice signed other bytes"
request_edit "$id" "CN=Other Root" "CN=Quorum Root"
id2=$(kca ceremony propose ca create --label root9 --template root --subject "CN=Quorum Root,O=Keyline Test")
approve "$id2" carol 3333 2>/dev/null
sql "INSERT INTO ceremony_approvals (ceremony, officer, sig, at) SELECT $id2, officer, sig, at FROM ceremony_approvals WHERE ceremony = $id AND officer = 'alice'"
expect_fail "run with alice's signature from another ceremony" kca ceremony run --id "$id2"
ok "approvals over other bytes refused"

kca ceremony run --id "$id" --out run.tr
kca ca list | grep -q "^root1 " || fail "the ceremony did not create root1"
kca ca cert --label root1 > root1.pem
openssl x509 -in root1.pem -noout -subject | grep -q "Quorum Root" || fail "root1 has another subject"
expect_fail "a second run of the same ceremony" kca ceremony run --id "$id"
kca ceremony export --id "$id" --out tr.txt
cmp -s tr.txt run.tr || fail "export differs from what run wrote"
grep -q "^result cert-sha256: $(openssl x509 -in root1.pem -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f)$" tr.txt ||
  fail "transcript's cert-sha256 is not root1's"
grep -q "^result key-sha256: $(openssl x509 -in root1.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)$" tr.txt ||
  fail "transcript's key-sha256 is not root1's key"
grep -q "^approval: alice$" tr.txt && grep -q "^approval: carol$" tr.txt || fail "transcript lacks the approvals"
ok "2 of 3 (alice EC P-256, carol P-384 by p11tool) created root1 end to end; transcript names its key and certificate"

# an issuing CA made and retired by ceremonies; the plain ca retire refuses
fid=$(kca ceremony propose ca create --label field1 --template field-ca --issuer root1 \
        --subject "CN=Quorum Field CA,O=Keyline Test")
approve "$fid" alice 1111 2>/dev/null; approve "$fid" carol 3333 2>/dev/null
kca ceremony run --id "$fid" 2>/dev/null
kca ca list | grep -q "^field1 .*root1" || fail "the ceremony did not create field1 under root1"
rc=0; kca ca retire --label field1 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "ceremony propose ca retire" err.txt || { cat err.txt; fail "plain ca retire not refused (exit $rc)"; }
tid=$(kca ceremony propose ca retire --label field1)
approve "$tid" alice 1111 2>/dev/null
expect_fail "ca retire one signature short" kca ceremony run --id "$tid"
approve "$tid" carol 3333 2>/dev/null
kca ceremony run --id "$tid" --out retire.tr 2>/dev/null
kca ca list | grep -q "^field1 .*retired" || { kca ca list; fail "field1 not retired"; }
grep -q "^result final-crl-number: [0-9]" retire.tr || fail "the retire transcript has no final CRL"
"$KL_BIN/keyline-ca" ceremony verify retire.tr >/dev/null || fail "the retire transcript does not verify"
ok "ca create (issuing CA) and ca retire as ceremonies; plain ca retire refused"

# revoking a CA: only by the ceremony ca revoke-ca; the plain revoke refuses CA certificates
cid=$(kca ceremony propose ca create --label field2 --template field-ca --issuer root1 \
        --subject "CN=Quorum Field CA 2,O=Keyline Test")
approve "$cid" alice 1111 2>/dev/null; approve "$cid" carol 3333 2>/dev/null
tf0=$(date +%s)
kca ceremony run --id "$cid" 2>/dev/null
tf1=$(date +%s)
kca ca cert --label field2 > field2.pem
f2=$(openssl x509 -in field2.pem -noout -serial | cut -d= -f2)
make_key ec-p256 dev.key
openssl req -new -key dev.key -subj "/CN=quorum device" -out dev.csr 2>/dev/null
kca issue --issuer field2 --template device-ldevid --csr dev.csr --out dev.pem
rc=0; kca revoke --serial "$f2" --reason cACompromise 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "ceremony propose ca revoke-ca" err.txt || { cat err.txt; fail "plain revoke of a CA certificate not refused (exit $rc)"; }
refused_ca() { # WHAT COMMAND...: refused with exit 4 as a CA certificate's revocation
  local what=$1 rc=0; shift
  "$@" > out.txt 2> err.txt || rc=$?
  [ $rc = 4 ] && grep -q "is a CA certificate: revoking a CA needs a ceremony" err.txt ||
    { cat out.txt err.txt; fail "$what: not refused as a CA's revocation (exit $rc)"; }
}
echo "$f2" > ca.list
refused_ca "revoke --from a list holding a CA serial" kca revoke --from ca.list
# the guard judges what the store resolves an item to, however it is written
echo "serial:$f2" > ca.list
refused_ca "revoke --from serial:CA" kca revoke --from ca.list --reason cACompromise
refused_ca "revoke --from serial:CA --dry-run" kca revoke --from ca.list --dry-run
refused_ca "revoke --serial 0xCA --dry-run" kca revoke --serial "0x$f2" --dry-run
sql "INSERT INTO devices (device_id, model, cert_serial, state, updated) VALUES ('HWCA1', 'm', '$f2', 'provisioned', 0)"
echo "device:HWCA1" > ca.list
refused_ca "revoke --from device:ID whose certificate is a CA's" kca revoke --from ca.list
sql "DELETE FROM devices WHERE device_id = 'HWCA1'"
refused_ca "revoke --issued-by root1 over all time" kca revoke --issued-by root1 --between 2000-01-01 2100-01-01
refused_ca "revoke --issued-by root1 over field2's issuance" kca revoke --issued-by root1 --between "@$tf0" "@$tf1"
kca revoke --issued-by root1 --between 2000-01-01 2000-01-02 --dry-run > out.txt 2> err.txt ||
  { cat err.txt; fail "a batch of root1 holding no CA certificate refused"; }
kca show --serial "$f2" | grep -q "status: *valid" || fail "a refused revocation revoked field2"
# an OCSP signer is no CA: field2's does not stop a batch of field2's device certificates
oid=$(kca ceremony propose ca create --label field2.ocsp --template ocsp-signer --issuer field2 \
        --subject "CN=Quorum Field CA 2 OCSP")
approve "$oid" alice 1111 2>/dev/null; approve "$oid" carol 3333 2>/dev/null
kca ceremony run --id "$oid" 2>/dev/null
kca ca list | grep -q "^field2.ocsp" || fail "no OCSP signer field2.ocsp"
sleep 1.1
tb0=$(date +%s)
kca issue --issuer field2 --template device-ldevid --csr dev.csr --out devb1.pem
kca issue --issuer field2 --template device-ldevid --csr dev.csr --out devb2.pem
tb1=$(date +%s)
kca revoke --issued-by field2 --between 2000-01-01 2100-01-01 --dry-run > out.txt 2> err.txt ||
  { cat err.txt; fail "a batch of field2 (devices and its OCSP signer) refused under the quorum"; }
grep -q "would revoke 4 certificates" err.txt || { cat out.txt err.txt; fail "field2's batch dry run"; }
kca revoke --issued-by field2 --between "@$tb0" "@$tb1" --reason superseded > out.txt 2> err.txt ||
  { cat err.txt; fail "a batch of field2's device certificates refused under the quorum"; }
grep -q "revoked 2 certificates" out.txt || { cat out.txt err.txt; fail "field2's batch"; }
kca revoke --serial "$(openssl x509 -in dev.pem -noout -serial | cut -d= -f2)" >/dev/null 2>&1 || fail "a device certificate is not revocable under the quorum"
nid=$(kca ceremony propose ca revoke-ca --label root1 --reason cACompromise)
approve "$nid" alice 1111 2>/dev/null; approve "$nid" carol 3333 2>/dev/null
expect_fail "ca revoke-ca of a root" kca ceremony run --id "$nid"
kca ceremony show --id "$nid" | grep -q "proposed" || fail "a failed run did not leave the ceremony open"
kca audit list > failed.txt; grep -q "ceremony-failed" failed.txt || fail "the failed run is not in the audit log"
vid=$(kca ceremony propose ca revoke-ca --label field2 --reason cACompromise)
approve "$vid" alice 1111 2>/dev/null; approve "$vid" carol 3333 2>/dev/null
kca ceremony run --id "$vid" --out revoke.tr 2>/dev/null
kca show --serial "$f2" | grep -qi "revoked" || fail "field2's certificate is not revoked"
grep -q "^result reason: cACompromise$" revoke.tr && grep -q "^result parent-crl-number: [0-9]" revoke.tr ||
  fail "the revoke-ca transcript lacks the reason or root1's CRL"
ok "a CA certificate revoked only by the ceremony ca revoke-ca (plain revoke, --from as a serial, serial: or device:, --serial 0x, dry run or not, and a batch holding one refuse it, a batch of devices and an OCSP signer does not; a root refused, logged as ceremony-failed)"

# a CA for a parent outside keyline under the quorum: the key and its request by ceremony
xid=$(kca ceremony propose ca create --label corp1 --template factory-ca \
        --subject "CN=Keyline Factory under Corp,O=Keyline Test" --csr-out corp1.csr)
kca ceremony show --id "$xid" | grep -q "^param csr-out: $PWD/corp1.csr$" || fail "the request does not name the CSR file"
approve "$xid" alice 1111 2>/dev/null; approve "$xid" carol 3333 2>/dev/null
sid=$(kca ceremony propose ca create --label corp2 --template factory-ca --subject "CN=x" --csr-out "$PWD/keyline.conf")
approve "$sid" alice 1111 2>/dev/null; approve "$sid" carol 3333 2>/dev/null
expect_fail "a ceremony whose --csr-out is the configuration" kca ceremony run --id "$sid"
mkdir elsewhere # run from another folder: the request holds the CSR's absolute path
(cd elsewhere && kca ceremony run --id "$xid" --out ../csr.tr 2>/dev/null)
openssl req -in corp1.csr -verify -noout 2>/dev/null || fail "the ceremony's request does not verify"
grep -q "^result key-sha256: $(openssl req -in corp1.csr -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)$" csr.tr ||
  fail "the transcript's key-sha256 is not the request's key"
grep -q "^result csr-sha256: $(openssl req -in corp1.csr -outform DER | sha256sum | cut -d' ' -f1)$" csr.tr ||
  fail "the transcript's csr-sha256 is not the request's"
ok "ca create --csr-out as a ceremony: the key and its request, named in the transcript; a --csr-out over the configuration refused"

# a production order (issue 15) under the quorum
rc=0; kca order create --model sensor-v1 --count 3 --station ST1 --expires 2099-12-31 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "ceremony propose order create" err.txt || { cat err.txt; fail "plain order create not refused (exit $rc)"; }
pid=$(kca ceremony propose order create --model sensor-v1 --count 3 --station ST1 --expires 2099-12-31)
approve "$pid" alice 1111 2>/dev/null
expect_fail "order create one signature short" kca ceremony run --id "$pid"
approve "$pid" carol 3333 2>/dev/null
kca ceremony run --id "$pid" --out order.tr 2>/dev/null
oid=$(sed -n 's/^result order: //p' order.tr)
[ -n "$oid" ] || fail "the order transcript names no order"
kca order show "$oid" > order.txt || fail "order $oid not recorded"
grep -q "sensor-v1" order.txt && grep -q "ST1" order.txt || { cat order.txt; fail "order $oid is not the one approved"; }
grep -q "^result count: 3$" order.tr || fail "the transcript's count"
ok "order create under the quorum: refused plain, made by a ceremony (order $oid)"
# an order for a profile keyline-cad does not have controls nothing: refused by the run too
pid=$(kca ceremony propose order create --model sensor-v1 --count 3 --station ST1 --profile statoin --expires 2099-12-31)
approve "$pid" alice 1111 2>/dev/null
approve "$pid" carol 3333 2>/dev/null
rc=0; kca ceremony run --id "$pid" 2>err.txt || rc=$?
[ $rc = 2 ] && grep -q "no profile 'statoin'" err.txt || { cat err.txt; fail "an approved order for profile statoin ran (exit $rc)"; }
[ "$(kca order list --json | python3 -c 'import json,sys; print(sum(o["profile"] == "statoin" for o in json.load(sys.stdin)))')" = 0 ] ||
  fail "an order for profile statoin was recorded"
ok "an approved order create for a profile keyline-cad does not have is refused at its run, nothing recorded"

# offline: no configuration, store or token
mkdir offline && cp tr.txt alice.pem carol.pem bob.pem offline/
akey=$(kca audit verify | sed -n 's/.*SHA-256 of its public key \([0-9a-f]*\).*/\1/p')
[ -n "$akey" ] || fail "audit verify does not print the audit key"
(cd offline && env -u SOFTHSM2_CONF -u KEYLINE_PIN "$KL_BIN/keyline-ca" -c /nonexistent ceremony verify \
   --audit-key-sha256 "$akey" --officers <(cat alice.pem carol.pem) tr.txt) > verify.txt ||
  { cat verify.txt; fail "transcript does not verify offline"; }
grep -q "transcript verified" verify.txt || fail "verify says nothing"
"$KL_BIN/keyline-ca" ceremony verify --cert root1.pem tr.txt >/dev/null || fail "verify --cert root1.pem fails"
expect_fail "verify --cert of another certificate" "$KL_BIN/keyline-ca" ceremony verify --cert alice.pem tr.txt
expect_fail "verify pinned to officers without carol" "$KL_BIN/keyline-ca" ceremony verify --officers offline/alice.pem tr.txt
other=${akey%?}0; [ "$other" != "$akey" ] || other=${akey%?}1
expect_fail "verify pinned to another audit key" "$KL_BIN/keyline-ca" ceremony verify --audit-key-sha256 "$other" tr.txt
# the same signatures checked by openssl alone (not our verifier grading itself): alice's over
# the request bytes, the audit key's over everything before its line
python3 - tr.txt <<'PY' || fail "cannot split the transcript"
import base64, re, sys
d = open(sys.argv[1], "rb").read()
m = re.search(rb"\nrequest: (\d+)\n", d)
start = m.end(); req = d[start:start + int(m.group(1))]
open("req.bin", "wb").write(req)
a = re.search(rb"\napproval: alice\n.*?\nofficer-cert: (\S+)\nsignature: (\S+)\n", d, re.S)
open("alice.der", "wb").write(base64.b64decode(a.group(1)))
open("alice.sig", "wb").write(base64.b64decode(a.group(2)))
k = d.index(b"\naudit-signature: ") + 1
open("body.bin", "wb").write(d[:k])
open("audit.sig", "wb").write(base64.b64decode(d[k:].split(b": ", 1)[1].strip()))
open("audit.der", "wb").write(base64.b64decode(re.search(rb"\naudit-key: (\S+)\n", d).group(1)))
PY
openssl x509 -inform DER -in alice.der -noout -pubkey > alice.pub
openssl dgst -sha256 -verify alice.pub -signature alice.sig req.bin >/dev/null || fail "openssl: alice's approval"
cmp -s alice.der <(openssl x509 -in alice.pem -outform DER) || fail "the transcript's alice certificate is not alice.pem"
openssl pkey -pubin -inform DER -in audit.der -out audit.pub
openssl dgst -sha256 -verify audit.pub -signature audit.sig body.bin >/dev/null || fail "openssl: the audit signature"
[ "$(sha256sum < audit.der | cut -d' ' -f1)" = "$akey" ] || fail "the transcript's audit key is not the store's"
ok "openssl verifies alice's approval over the request bytes and the audit signature over the transcript"

size=$(stat -c %s tr.txt)
for off in 40 $((size / 5)) $((size / 3)) $((size / 2)) $((size * 2 / 3)) $((size - 60)) $((size - 2)); do
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); o = int(sys.argv[2]); d[o] ^= 1 if d[o] != 10 else 32; open(sys.argv[3], "wb").write(d)' tr.txt "$off" bad.txt
  cmp -s tr.txt bad.txt && fail "byte $off not altered"
  if "$KL_BIN/keyline-ca" ceremony verify bad.txt >/dev/null 2>&1; then fail "transcript with byte $off altered verifies"; fi
done
ok "transcript verifies offline (audit key and officers pinned); one altered byte at 7 places fails"

kca audit verify | grep -q "intact" || fail "audit log does not verify after the ceremonies"
kca audit list > audit.txt
for a in ceremony-propose ceremony-approve ceremony-refused ceremony-run officer-add officer-remove; do
  grep -q " $a " audit.txt || { tail -5 audit.txt; fail "audit log lacks $a"; }
done
ok "audit log intact, with every ceremony and officer action"

# The officers table against its audit entries: a row changed beside the audited officer-add /
# officer-remove (by whoever can write the store) fails audit verify, naming the officer.
kca audit verify > av.txt || fail "audit verify before tampering"
grep -q "^officers: 3, each as its audited registration" av.txt || { cat av.txt; fail "audit verify does not check the officers"; }
tamper() { # WHAT SQL UNDO-SQL EXPECTED-MESSAGE
  sql "$2"
  rc=0; kca audit verify >/dev/null 2>err.txt || rc=$?
  sql "$3"
  [ $rc = 4 ] && grep -q "$4" err.txt || { cat err.txt; fail "$1: audit verify exit $rc"; }
  kca audit verify >/dev/null || fail "$1: audit verify after undoing it"
}
tamper "bob reactivated" "UPDATE officers SET status = 'active' WHERE name = 'bob'" \
  "UPDATE officers SET status = 'removed' WHERE name = 'bob'" "officer bob was removed (audit entry"
tamper "carol removed" "UPDATE officers SET status = 'removed' WHERE name = 'carol'" \
  "UPDATE officers SET status = 'active' WHERE name = 'carol'" "officer carol is marked removed, but no audited officer-remove"
alice_der=$(openssl x509 -in alice.pem -outform DER | xxd -p | tr -d '\n')
if [ -n "${CQ_PG:-}" ]; then alice_cert="decode('$alice_der', 'hex')"; else alice_cert="X'$alice_der'"; fi
tamper "alice's certificate swapped" \
  "UPDATE officers SET cert = (SELECT cert FROM officers WHERE name = 'carol') WHERE name = 'alice'" \
  "UPDATE officers SET cert = $alice_cert WHERE name = 'alice'" \
  "officer alice: the stored certificate is not the one registered"
tamper "alice renamed" "UPDATE officers SET name = 'alicia' WHERE name = 'alice'" \
  "UPDATE officers SET name = 'alice' WHERE name = 'alicia'" "officer alicia .* no audited officer-add"
# the store refuses deletes by a trigger; whoever can write the store can drop it
if [ -n "${CQ_PG:-}" ]; then sql "DROP TRIGGER officers_no_delete ON officers"
else sql "DROP TRIGGER officers_no_delete"; fi
sql "DELETE FROM officers WHERE name = 'bob'"
rc=0; kca audit verify >/dev/null 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "officer bob (entry [0-9]*), but the officers table has no such row" err.txt \
  || { cat err.txt; fail "a deleted officer row: audit verify exit $rc"; }
ok "audit verify checks the officers table against the audit log: a reactivated, removed, swapped, renamed or deleted officer row fails"
