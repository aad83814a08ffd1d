# CA key rotation: a new root key with NewWithOld / OldWithNew rollover certificates, checked
# with openssl verify and certtool from both sides of the rollover; rotating an issuing CA after
# its root (certified by the new root) or under --issuer; a device IDevID issued before the root
# rotation validates with only the old and with only the new root as trust anchor.
source "$KL_SRC/tests/lib/common.sh"

make_hierarchy
make_key ec-p256 old.key
openssl req -new -key old.key -subj "/CN=device before rotation" -out old.csr
kca issue --issuer field1 --template device-ldevid --csr old.csr --out old.pem
make_key ec-p256 idev.key
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0001" -out idev.csr
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001 --out idev-old.pem
# certtool_anchor ANCHOR CHAIN...: certtool verifies the chain (leaf first) against ANCHOR only
certtool_anchor() {
  local anchor=$1; shift
  cat "$@" > ct-chain.pem
  certtool --verify --load-ca-certificate "$anchor" --infile ct-chain.pem >ct.out 2>&1 && grep -q "Chain verification output: Verified" ct.out
}

# CA certificates on the token too (CKO_CERTIFICATE, the key's CKA_ID), as PKCS#11 tools see it
p11() { pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" "$@" 2>/dev/null; }
objid() { p11 --list-objects --type "$1" | awk -v l="$2" '$1 == "label:" { hit = ($2 == l) } hit && $1 == "ID:" { print $2; exit }'; }
for l in root1 factory1 field1; do
  kid=$(objid privkey $l); cid=$(objid cert $l)
  [ -n "$kid" ] && [ "$kid" = "$cid" ] || fail "certificate object of $l: ID '$cid', key ID '$kid'"
  p11 --read-object --type cert --label $l -o $l.obj.der
  cmp $l.obj.der <(openssl x509 -in $l.pem -outform DER) || fail "certificate object of $l differs from the CA certificate"
done
p11tool --provider "$KL_MODULE" --list-all-certs "pkcs11:token=keyline-test" 2>/dev/null | grep -q "Label: root1" ||
  fail "p11tool does not list root1's certificate"
ok "CA certificates stored on the token beside their keys (pkcs11-tool IDs and bytes, p11tool)"

# All or nothing: a rotation that fails at its last step (the store refuses the OldWithNew
# record: a trigger injects the failure into the real store file) leaves no CA, no key in the
# token, and the certificates signed on the way revoked; the same command then succeeds.
tokobjs() { pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" --list-objects 2>/dev/null; }
sqlite3 "$KL_TEST_DIR/keyline.db" "CREATE TRIGGER inject BEFORE INSERT ON cas WHEN NEW.label LIKE '%.oldwithnew' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
expect_fail "rotation whose last store write fails" kca ca rotate --label root1 --new-label root2 --key-type ec-p384
sqlite3 "$KL_TEST_DIR/keyline.db" "DROP TRIGGER inject"
if kca ca list | grep -q "^root2"; then fail "failed rotation left CA records"; fi
if tokobjs | grep -q "label: *root2$"; then fail "failed rotation left its key in the token"; fi
tokobjs | grep -q "label: *root1$" || fail "token listing does not show root1 (cannot check the token)"
kca list --status revoked --json | python3 -c '
import json, sys
iss = sorted(c["issuer"] for c in json.load(sys.stdin))
sys.exit(0 if iss == ["root1", "root2", "root2"] else "revoked after the failed rotation: %s" % iss)' ||
  fail "the certificates signed by the failed rotation are not all revoked"
if kca audit list | grep -q "ca-rotate"; then fail "failed rotation audited as done"; fi
ok "failed rotation undone: no CA, no key, its three certificates revoked"

# ca create undoes itself the same way when its CA record cannot be written
sqlite3 "$KL_TEST_DIR/keyline.db" "CREATE TRIGGER inject BEFORE INSERT ON cas WHEN NEW.label = 'field9' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
expect_fail "ca create whose store write fails" kca ca create --label field9 --template field-ca --issuer root1 --subject "CN=Field 9,O=Keyline Test"
sqlite3 "$KL_TEST_DIR/keyline.db" "DROP TRIGGER inject"
if tokobjs | grep -q "label: *field9$"; then fail "failed ca create left its key in the token"; fi
kca list --status revoked --json | python3 -c '
import json, sys
sys.exit(0 if any(c["subject"].startswith("CN=Field 9") for c in json.load(sys.stdin)) else "not revoked")' ||
  fail "the certificate of the failed ca create is not revoked"
kca ca create --label field9 --template field-ca --issuer root1 --subject "CN=Field 9,O=Keyline Test" >/dev/null
ok "failed ca create undone (no key, certificate revoked); the same command then succeeds"

kca ca rotate --label root1 --new-label root2 --key-type ec-p384 > root2.pem
kca ca cert --label root2.newwithold > nwo.pem
kca ca cert --label root1.oldwithnew > own.pem
kca ca list > list.txt
grep -q "^root2 " list.txt || fail "ca list lacks root2"
grep -q "root2.newwithold .*rollover" list.txt || { cat list.txt; fail "ca list lacks NewWithOld"; }
grep -q "root1.oldwithnew .*rollover" list.txt || { cat list.txt; fail "ca list lacks OldWithNew"; }
[ "$(openssl x509 -in root2.pem -noout -subject)" = "$(openssl x509 -in root1.pem -noout -subject)" ] || fail "new root has another subject"
[ "$(openssl x509 -in root2.pem -noout -pubkey)" != "$(openssl x509 -in root1.pem -noout -pubkey)" ] || fail "new root has the old key"
[ "$(openssl x509 -in nwo.pem -noout -pubkey)" = "$(openssl x509 -in root2.pem -noout -pubkey)" ] || fail "NewWithOld does not carry the new key"
openssl verify -CAfile root1.pem nwo.pem >/dev/null || fail "NewWithOld is not signed by the old root"
openssl verify -CAfile root2.pem own.pem >/dev/null || fail "OldWithNew is not signed by the new root"
[ "$(objid cert root2)" = "$(objid privkey root2)" ] || fail "rotated root's certificate object"
ok "root rotated: new self-signed root + NewWithOld + OldWithNew"

# A new issuing CA under the new root, and a device certificate from it.
kca ca create --label field2 --template field-ca --issuer root2 --subject "CN=Test Field CA 2,O=Keyline Test" > field2.pem
make_key ec-p256 new.key
openssl req -new -key new.key -subj "/CN=device after rotation" -out new.csr
kca issue --issuer field2 --template device-ldevid --csr new.csr --out new.pem
# a device that trusts only the old root validates the new chain through NewWithOld
cat field2.pem nwo.pem > untrusted-new.pem
openssl verify -CAfile root1.pem -untrusted untrusted-new.pem new.pem >/dev/null || fail "old trust anchor cannot validate the new chain"
# a device that already trusts only the new root validates old certificates through OldWithNew
cat field1.pem own.pem > untrusted-old.pem
openssl verify -CAfile root2.pem -untrusted untrusted-old.pem old.pem >/dev/null || fail "new trust anchor cannot validate the old chain"
# and without the rollover certificates neither works
if openssl verify -CAfile root1.pem -untrusted field2.pem new.pem >/dev/null 2>&1; then fail "new chain verified without NewWithOld"; fi
ok "both trust anchors validate both chains through the rollover certificates"

# Rotating an issuing CA after its root: the new CA is certified by the root's successor
# (root2), same subject; its devices chain to root2, and to root1 through NewWithOld.
kca ca rotate --label field1 --new-label field1b > field1b.pem
openssl verify -CAfile root2.pem field1b.pem >/dev/null || fail "issuing CA rotated after its root is not certified by the new root"
if openssl verify -CAfile root1.pem field1b.pem >/dev/null 2>&1; then fail "rotated issuing CA still certified by the old root key"; fi
kca ca list | grep -q "^field1b .* root2 " || { kca ca list; fail "field1b's parent is not root2"; }
[ "$(openssl x509 -in field1b.pem -noout -subject)" = "$(openssl x509 -in field1.pem -noout -subject)" ] || fail "rotated issuing CA changed its subject"
kca issue --issuer field1b --template device-ldevid --csr new.csr --out new-b.pem
openssl verify -CAfile root2.pem -untrusted field1b.pem new-b.pem >/dev/null || fail "certificate from the rotated issuing CA"
cat field1b.pem nwo.pem > untrusted-b.pem
openssl verify -CAfile root1.pem -untrusted untrusted-b.pem new-b.pem >/dev/null || fail "old anchor cannot validate the rotated CA's device"
ok "an issuing CA rotated after its root is certified by the new root"

# --issuer names the parent: the old root, while it is still active
kca ca rotate --label field9 --new-label field9b --issuer root1 > field9b.pem
openssl verify -CAfile root1.pem field9b.pem >/dev/null || fail "--issuer root1 not honoured"
expect_fail "--issuer on a root" kca ca rotate --label root2 --new-label root3 --issuer root1
expect_fail "--issuer that is no CA" kca ca rotate --label field9b --new-label field9c --issuer nosuch
ok "ca rotate --issuer PARENT certifies the new CA under PARENT"

# The factory CA rotated too; an IDevID issued before the root rotation (factory1 under root1)
# and one issued after (factory2 under root2) validate with only the old root and with only the
# new root as trust anchor, through the rollover certificates: openssl verify and certtool.
kca ca rotate --label factory1 --new-label factory2 > factory2.pem
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0002" -out idev2.csr
kca issue --issuer factory2 --template device-idevid --csr idev2.csr --device-id HW0002 --out idev-new.pem
cat factory1.pem own.pem > u-old.pem
cat factory2.pem nwo.pem > u-new.pem
openssl verify -CAfile root1.pem -untrusted factory1.pem idev-old.pem >/dev/null || fail "old IDevID, old anchor (openssl)"
openssl verify -CAfile root2.pem -untrusted u-old.pem idev-old.pem >/dev/null || fail "old IDevID, new anchor only (openssl)"
openssl verify -CAfile root1.pem -untrusted u-new.pem idev-new.pem >/dev/null || fail "new IDevID, old anchor only (openssl)"
openssl verify -CAfile root2.pem -untrusted factory2.pem idev-new.pem >/dev/null || fail "new IDevID, new anchor (openssl)"
certtool_anchor root1.pem idev-old.pem factory1.pem || { cat ct.out; fail "old IDevID, old anchor (certtool)"; }
certtool_anchor root2.pem idev-old.pem factory1.pem own.pem || { cat ct.out; fail "old IDevID, new anchor only (certtool)"; }
certtool_anchor root1.pem idev-new.pem factory2.pem nwo.pem || { cat ct.out; fail "new IDevID, old anchor only (certtool)"; }
certtool_anchor root2.pem idev-new.pem factory2.pem || { cat ct.out; fail "new IDevID, new anchor (certtool)"; }
# the check can fail: without OldWithNew the new anchor does not reach the old IDevID
if certtool_anchor root2.pem idev-old.pem factory1.pem; then fail "certtool verified the old IDevID under root2 without OldWithNew"; fi
ok "IDevIDs from before and after the root rotation validate under either root alone (openssl, certtool)"

expect_fail "CRL for a rollover certificate" kca crl --issuer root2.newwithold
expect_fail "rotating onto a taken label" kca ca rotate --label field1 --new-label field2
expect_fail "rotating an unknown CA" kca ca rotate --label nosuch --new-label x1
kca audit verify | grep -q intact || fail "audit"
grep -c "ca-rotate" <(kca audit list) | grep -qx 4 || fail "rotations not in the audit log"
echo "ca_rotate: all passed"
