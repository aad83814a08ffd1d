# End to end: keyline-ca against a throwaway SoftHSM token and SQLite store.
source "$KL_SRC/tests/lib/common.sh"

# --help everywhere, exit 0; no command is a usage error (exit 2)
kca --help | grep -q "^  issue " || fail "--help lacks issue"
kca ca --help | grep -q "ca rotate --label OLD" || fail "ca --help lacks its subcommands"
kca issue --help | grep -q -- "--csr FILE" || fail "issue --help"
kca request --help | grep -q "request approve --id N" || fail "request --help lacks its subcommands"
rc=0; kca >/dev/null 2>&1 || rc=$?; [ $rc = 2 ] || fail "no command: exit $rc, expected 2"
ok "--help for the tool, groups and commands"

make_hierarchy
ok "CA hierarchy created"
kca ca list | grep -q factory1 || fail "ca list does not show factory1"
kca ca cert --label factory1 | openssl x509 -noout -text > factory1.txt
grep -q "CA:TRUE, pathlen:0" factory1.txt || fail "factory CA lacks CA:TRUE pathlen:0"
cmp <(kca ca cert --label factory1) factory1.pem || fail "ca cert differs from what ca create printed"

# CA keys (and the audit key that signs the audit log's checkpoints) are non-extractable and
# sensitive, seen by a third-party tool.
pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" \
  --list-objects --type privkey > objects.txt 2>&1
grep -c "label:" objects.txt | grep -qx 4 || { cat objects.txt; fail "expected 3 CA keys and the audit key"; }
grep -q "label: *keyline-audit$" objects.txt || { cat objects.txt; fail "no audit key"; }
[ "$(grep -c 'never extractable' objects.txt)" = 4 ] || { cat objects.txt; fail "a CA key is extractable"; }
[ "$(grep -c 'Access:.*sensitive' objects.txt)" = 4 ] || { cat objects.txt; fail "a CA key is not sensitive"; }
ok "CA private keys and the audit key: sensitive, never extractable (pkcs11-tool)"

# A CA the template refuses leaves no key behind: the label can be used again right away.
expect_fail "CA subject with a forbidden attribute" kca ca create --label spare1 --template field-ca --issuer root1 --subject "CN=Spare,emailAddress=x@example.com"
kca ca create --label spare1 --template field-ca --issuer root1 --subject "CN=Spare CA,O=Keyline Test" >/dev/null || fail "label blocked by the key of a refused CA"
ok "a refused CA left no orphan key in the token"

# Device certificates of every key type, checked by openssl and GnuTLS.
cat root1.pem > trust.pem
n=0
for kt in ec-p256 ec-p384 rsa-3072; do
  count=4; [ $kt = rsa-3072 ] && count=2
  for i in $(seq 1 $count); do
    n=$((n+1))
    make_key $kt dev$n.key
    openssl req -new -key dev$n.key -subj "/CN=sensor $n" -out dev$n.csr
    kca issue --issuer field1 --template device-ldevid --csr dev$n.csr --out dev$n.pem
    openssl verify -CAfile trust.pem -untrusted field1.pem dev$n.pem >/dev/null || fail "openssl verify dev$n ($kt)"
    cat dev$n.pem field1.pem root1.pem > chain$n.pem
    certtool --verify-chain --infile chain$n.pem >certtool.out 2>&1 || { cat certtool.out; fail "certtool dev$n ($kt)"; }
    # the certificate holds the CSR's key
    [ "$(openssl x509 -in dev$n.pem -noout -pubkey | openssl sha256)" = "$(openssl pkey -in dev$n.key -pubout | openssl sha256)" ] || fail "key mismatch dev$n"
  done
  ok "issued $kt device certificates (openssl verify, certtool --verify-chain)"
done

# IDevID per IEEE 802.1AR.
make_key ec-p256 idev.key
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0001" -out idev.csr
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001 --out idev.pem
openssl x509 -in idev.pem -noout -text > idev.txt
grep -q "serialNumber *= *HW0001\|serialNumber=HW0001" idev.txt || { cat idev.txt; fail "IDevID lacks subject serialNumber"; }
openssl x509 -in idev.pem -noout -enddate | grep -q "Dec 31 23:59:59 9999 GMT" || fail "IDevID notAfter is not 99991231235959Z"
openssl asn1parse -in idev.pem | grep -q "GENERALIZEDTIME *:99991231235959Z" || fail "notAfter not GeneralizedTime"
grep -q "CA:FALSE" idev.txt || fail "IDevID is not CA:FALSE"
grep -q "othername: 1.3.6.1.5.5.7.8.4::" idev.txt || { cat idev.txt; fail "IDevID lacks the HardwareModuleName otherName"; }
# decode the otherName with GnuTLS, an independent parser: hwSerialNum must be HW0001
certtool -i --infile idev.pem > idev.certtool 2>&1
grep -qi "HW0001" idev.certtool || { cat idev.certtool; fail "certtool does not see HW0001"; }
openssl verify -CAfile trust.pem -untrusted factory1.pem idev.pem >/dev/null || fail "IDevID verify"
ok "IDevID: serialNumber, HardwareModuleName, notAfter 99991231235959Z, CA:FALSE"
# device id taken from the CSR when not given; a disagreeing one is refused
make_key ec-p256 idev2.key
openssl req -new -key idev2.key -subj "/CN=Sensor/serialNumber=HW0002" -out idev2.csr
kca issue --issuer factory1 --template device-idevid --csr idev2.csr --out idev2.pem
expect_fail "device-id disagreeing with CSR serialNumber" kca issue --issuer factory1 --template device-idevid --csr idev2.csr --device-id HW9999

# Hostile CSRs are refused and issue nothing.
before=$(kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
head -c 600 /dev/urandom > garbage.csr
expect_fail "garbage CSR" kca issue --issuer field1 --template device-ldevid --csr garbage.csr --out bad.pem
[ ! -e bad.pem ] || fail "--out file written on failure"
# bad signature: flip a byte near the end (inside the signature)
openssl req -in dev1.csr -outform DER -out good.der
python3 -c "
import sys; d=bytearray(open('good.der','rb').read()); d[-5]^=0x55; open('badsig.der','wb').write(d)"
expect_fail "CSR with a bad signature" kca issue --issuer field1 --template device-ldevid --csr badsig.der
make_key ec-p256 h.key
openssl req -new -key h.key -subj "/CN=evil" -addext "basicConstraints=critical,CA:TRUE" -out ca-ask.csr
expect_fail "CSR asking for CA:TRUE" kca issue --issuer field1 --template device-ldevid --csr ca-ask.csr
openssl req -new -key h.key -subj "/CN=evil" -addext "1.2.3.4.5=ASN1:UTF8String:smuggled" -out ext.csr
expect_fail "CSR with an unknown extension" kca issue --issuer field1 --template device-ldevid --csr ext.csr
make_key rsa-2048 weak.key
openssl req -new -key weak.key -subj "/CN=weak" -out weak.csr
expect_fail "CSR with RSA-2048 key" kca issue --issuer field1 --template device-ldevid --csr weak.csr
head -c 200000 /dev/zero | tr '\0' 'A' > huge.csr
expect_fail "huge CSR" kca issue --issuer field1 --template device-ldevid --csr huge.csr
expect_fail "unknown template" kca issue --issuer field1 --template nope --csr dev1.csr
expect_fail "template path traversal" kca issue --issuer field1 --template ../etc/passwd --csr dev1.csr
expect_fail "unknown issuer" kca issue --issuer nobody --template device-ldevid --csr dev1.csr
after=$(kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$before" = "$after" ] || fail "a refused CSR was recorded ($before -> $after)"
ok "hostile CSRs issue nothing"

# Revocation: CRL check fails for the revoked certificate only.
s2=$(openssl x509 -in dev2.pem -noout -serial | cut -d= -f2)
kca revoke --serial "$s2" --reason keyCompromise | grep -q revoked
expect_fail "revoking twice" kca revoke --serial "$s2"
expect_fail "revoking an unknown serial" kca revoke --serial 0123456789ABCDEF
expect_fail "unknown reason" kca revoke --serial "$s2" --reason because
kca crl --issuer field1 --out field1.crl
openssl crl -in field1.crl -noout -text > crl.txt
grep -q "X509v3 CRL Number" crl.txt || fail "CRL lacks cRLNumber"
grep -q "X509v3 Authority Key Identifier" crl.txt || fail "CRL lacks AKI"
grep -q "Next Update" crl.txt || fail "CRL lacks nextUpdate"
grep -q "$s2" crl.txt || fail "CRL does not list $s2"
openssl crl -in field1.crl -noout -CAfile field1.pem 2>&1 | grep -q "verify OK" || fail "CRL signature"
cat field1.pem root1.pem > both.pem
kca crl --issuer root1 --out root1.crl
cat field1.crl root1.crl > crls.pem
for i in 1 3 4; do
  openssl verify -crl_check -CAfile both.pem -CRLfile crls.pem dev$i.pem >/dev/null || fail "dev$i should still verify with the CRL"
done
if openssl verify -crl_check -CAfile both.pem -CRLfile crls.pem dev2.pem >/dev/null 2>&1; then fail "revoked dev2 still verifies"; fi
n1=$(openssl crl -in field1.crl -noout -crlnumber | cut -d= -f2)
kca crl --issuer field1 --out field1b.crl
n2=$(openssl crl -in field1b.crl -noout -crlnumber | cut -d= -f2)
[ $((n2)) -gt $((n1)) ] || fail "cRLNumber not increasing ($n1 -> $n2)"
# two CRLs of one CA are never signed in one second: thisUpdate (and HTTP's Last-Modified)
# tell every CRL from the one before
[ "$(openssl crl -in field1.crl -noout -lastupdate)" != "$(openssl crl -in field1b.crl -noout -lastupdate)" ] ||
  fail "two CRLs with the same thisUpdate"
# an --out that cannot be written is refused before the CRL is signed: no number used
mkdir -p outdir
expect_fail "crl --out into a missing folder" kca crl --issuer field1 --out nodir/x.crl
expect_fail "crl --out onto a folder" kca crl --issuer field1 --out outdir
kca crl --issuer field1 --out field1c.crl
n3=$(openssl crl -in field1c.crl -noout -crlnumber | cut -d= -f2)
[ $((n3)) -eq $((n2 + 1)) ] || fail "refused --out used a CRL number ($n2 -> $n3)"
ok "revocation and CRL (openssl verify -crl_check)"

# list / show / JSON
kca list --status revoked --json | python3 -c "
import json,sys
a=json.load(sys.stdin)
assert len(a)==1 and a[0]['serial']=='$s2' and a[0]['status']=='revoked', a
for k in ('serial','subject','issuer','not_before','not_after','status','device_id'): assert k in a[0], k"
kca list --status valid --json | python3 -c "
import json,sys
a=json.load(sys.stdin)
assert all(x['status']=='valid' for x in a)
assert any(x['device_id']=='HW0001' for x in a)"
kca show --serial "$s2" | grep -q "status: *revoked" || fail "show"
expect_fail "show unknown serial" kca show --serial ABCDEF
ok "list --json and show"

# Parallel issuance from several processes: distinct serials, intact audit chain.
make_key ec-p256 par.key
openssl req -new -key par.key -subj "/CN=parallel" -out par.csr
for p in 1 2 3 4; do
  ( for i in $(seq 1 8); do kca issue --issuer field1 --template device-ldevid --csr par.csr --out par-$p-$i.pem; done ) &
done
wait
ls par-*.pem | wc -l | grep -qx 32 || fail "parallel issuance lost certificates"
for f in par-*.pem; do openssl x509 -in $f -noout -serial; done | sort | uniq -d | grep -q . && fail "duplicate serials"
kca audit verify | grep -q "intact" || fail "audit verify after parallel issuance"
ok "32 certificates from 4 parallel processes, distinct serials"

# Wrong PIN and missing token give distinct, clear errors.
KEYLINE_PIN=0000 expect_fail "wrong PIN" kca issue --issuer field1 --template device-ldevid --csr par.csr
sed 's/token=keyline-test/token=nosuchtoken/' "$KL_CONF" > missing.conf
expect_fail "missing token" "$KL_BIN/keyline-ca" -c missing.conf issue --issuer field1 --template device-ldevid --csr par.csr
expect_fail "no config" "$KL_BIN/keyline-ca" -c /nonexistent.conf list

# Tampering with the audit log is detected.
cp keyline.db tampered.db
sed "s|path = keyline.db|path = tampered.db|" "$KL_CONF" > tampered.conf
# triggers make the log append-only against mistakes; an attacker with the file drops them
sqlite3 tampered.db "DROP TRIGGER audit_no_update; UPDATE audit SET detail = detail || ' (edited)' WHERE seq = 3;"
expect_fail "edited audit entry" "$KL_BIN/keyline-ca" -c tampered.conf audit verify
cp keyline.db deleted.db
sed "s|path = keyline.db|path = deleted.db|" "$KL_CONF" > deleted.conf
sqlite3 deleted.db "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 5;"
expect_fail "deleted audit entry" "$KL_BIN/keyline-ca" -c deleted.conf audit verify
kca audit verify >/dev/null || fail "the original audit log must still verify"
ok "audit tampering detected"
echo "ca_e2e: all passed"
