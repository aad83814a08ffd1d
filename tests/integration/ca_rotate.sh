# CA key rotation: a new root key with NewWithOld / OldWithNew rollover certificates, checked
# with openssl verify from both sides of the rollover; rotating an issuing CA.
source "$KL_SRC/tests/lib/common.sh"

make_hierarchy
make_key ec-p256 old.key
openssl req -new -key old.key -subj "/CN=device before rotation" -out old.csr
kca issue --issuer field1 --template device-ldevid --csr old.csr --out old.pem

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

# Rotating an issuing CA: a new key under the same parent, same subject.
kca ca rotate --label field1 --new-label field1b > field1b.pem
openssl verify -CAfile root1.pem field1b.pem >/dev/null || fail "rotated issuing CA does not chain to root1"
[ "$(openssl x509 -in field1b.pem -noout -subject)" = "$(openssl x509 -in field1.pem -noout -subject)" ] || fail "rotated issuing CA changed its subject"
kca issue --issuer field1b --template device-ldevid --csr new.csr --out new-b.pem
openssl verify -CAfile root1.pem -untrusted field1b.pem new-b.pem >/dev/null || fail "certificate from the rotated issuing CA"
expect_fail "CRL for a rollover certificate" kca crl --issuer root2.newwithold
expect_fail "rotating onto a taken label" kca ca rotate --label field1 --new-label field2
expect_fail "rotating an unknown CA" kca ca rotate --label nosuch --new-label x1
kca audit verify | grep -q intact || fail "audit"
grep -c "ca-rotate" <(kca audit list) | grep -qx 2 || fail "rotations not in the audit log"
echo "ca_rotate: all passed"
