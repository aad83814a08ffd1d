# A CA under a parent outside keyline (issue 14 item 2): `ca create --csr-out` makes the key in
# the token and a request; a root made here with openssl (a corporate PKI) signs it, once
# directly and once through an outside intermediate; `ca import` checks key, CA-ness and chain
# before it records anything; devices issued by the imported CA chain to the outside root
# (openssl verify, certtool).
source "$KL_SRC/tests/lib/common.sh"

# the outside PKI: a root and an intermediate, made with openssl alone
cat > ext.cnf <<'EOF'
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
make_key ec-p384 corp-root.key
openssl req -new -x509 -key corp-root.key -subj "/O=Corp/CN=Corp Root" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" -out corp-root.pem
make_key ec-p256 corp-int.key
openssl req -new -key corp-int.key -subj "/O=Corp/CN=Corp Issuing" -out corp-int.csr
openssl x509 -req -in corp-int.csr -CA corp-root.pem -CAkey corp-root.key -set_serial 0x1001 \
  -days 3000 -extfile ext.cnf -extensions ca_ext -out corp-int.pem 2>/dev/null
make_key ec-p256 other-root.key
openssl req -new -x509 -key other-root.key -subj "/O=Other/CN=Other Root" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out other-root.pem

# the key and its request; no CA is recorded yet
kca ca create --label corp1 --template factory-ca --subject "CN=Keyline Factory under Corp,O=Keyline Test" \
  --key-type ec-p256 --csr-out corp1.csr 2>err.txt
grep -q "ca import --label corp1" err.txt || fail "no hint to import: $(cat err.txt)"
openssl req -in corp1.csr -verify -noout 2>/dev/null || fail "the request does not verify"
openssl req -in corp1.csr -noout -subject | grep -q "Keyline Factory under Corp" || fail "request subject"
if kca ca list | grep -q "^corp1 "; then fail "a CA was recorded before its certificate came back"; fi
kca audit list | grep -q "ca-csr" || fail "no ca-csr audit entry"
expect_fail "issuing under a CA that is only a request" kca ca cert --label corp1
expect_fail "--csr-out with --issuer" kca ca create --label corp9 --template factory-ca --subject "CN=x" --issuer corp1 --csr-out x.csr
ok "ca create --csr-out: key in the token, a verifiable request, nothing recorded"

openssl x509 -req -in corp1.csr -CA corp-int.pem -CAkey corp-int.key -set_serial 0x2001 -days 2000 \
  -extfile ext.cnf -extensions ca_ext -out corp1.pem 2>/dev/null
cat corp-int.pem corp-root.pem > corp-chain.pem
# refusals, each leaving nothing behind
expect_fail "a chain that does not reach the certificate's issuer" kca ca import --label corp1 --cert corp1.pem --chain other-root.pem
expect_fail "a chain without its root" kca ca import --label corp1 --cert corp1.pem --chain corp-int.pem
make_key ec-p256 stranger.key
openssl req -new -key stranger.key -subj "/CN=stranger" -out stranger.csr
openssl x509 -req -in stranger.csr -CA corp-int.pem -CAkey corp-int.key -set_serial 0x2002 -days 100 \
  -extfile ext.cnf -extensions ca_ext -out stranger.pem 2>/dev/null
expect_fail "a certificate for another key" kca ca import --label corp1 --cert stranger.pem --chain corp-chain.pem
openssl x509 -req -in corp1.csr -CA corp-int.pem -CAkey corp-int.key -set_serial 0x2003 -days 100 \
  -extfile ext.cnf -extensions leaf_ext -out corp1-leaf.pem 2>/dev/null
expect_fail "a certificate that is no CA" kca ca import --label corp1 --cert corp1-leaf.pem --chain corp-chain.pem
echo "garbage" > garbage.pem
expect_fail "a --cert that is no certificate" kca ca import --label corp1 --cert garbage.pem --chain corp-chain.pem
expect_fail "importing for a key never requested" kca ca import --label nosuch --cert corp1.pem --chain corp-chain.pem
if kca ca list | grep -q "corp1"; then fail "a refused import recorded something"; fi
ok "ca import refuses a wrong chain, a chain without root, another key, a non-CA, garbage"

kca ca import --label corp1 --cert corp1.pem --chain corp-chain.pem > imported.pem
cmp <(openssl x509 -in imported.pem -outform DER) <(openssl x509 -in corp1.pem -outform DER) || fail "import printed another certificate"
kca ca list > list.txt
grep -q "^corp1 .*factory-ca .*corp1.up1 .*active" list.txt || { cat list.txt; fail "corp1 not recorded under corp1.up1"; }
grep -q "^corp1.up1 .*corp1.up2 .*external" list.txt || { cat list.txt; fail "outside intermediate not recorded"; }
grep -q "^corp1.up2 .*(self) .*external" list.txt || { cat list.txt; fail "outside root not recorded"; }
expect_fail "importing twice" kca ca import --label corp1 --cert corp1.pem --chain corp-chain.pem
ok "ca import recorded the CA under its outside chain"

# devices issued by the imported CA chain to the outside root
make_key ec-p256 dev.key
openssl req -new -key dev.key -subj "/CN=Sensor/serialNumber=EXT0001" -out dev.csr
kca issue --issuer corp1 --template device-idevid --csr dev.csr --device-id EXT0001 --out dev.pem
openssl verify -CAfile corp-root.pem -untrusted <(cat corp1.pem corp-int.pem) dev.pem >/dev/null || fail "device does not chain to the outside root (openssl)"
cat dev.pem corp1.pem corp-int.pem > ct-chain.pem
certtool --verify --load-ca-certificate corp-root.pem --infile ct-chain.pem >ct.out 2>&1 || { cat ct.out; fail "certtool"; }
grep -q "Chain verification output: Verified" ct.out || { cat ct.out; fail "certtool did not verify"; }
if openssl verify -CAfile other-root.pem -untrusted <(cat corp1.pem corp-int.pem) dev.pem >/dev/null 2>&1; then fail "verified under an unrelated root"; fi
kca ca cert --label corp1 --chain > chain-out.pem
[ "$(grep -c "BEGIN CERTIFICATE" chain-out.pem)" = 3 ] || fail "ca cert --chain does not reach the outside root"
ok "an external-root CA issues devices that chain to the external root (openssl verify, certtool)"

# keyline signs CRLs for the imported CA, never for the outside ones
kca crl --issuer corp1 > corp1.crl
openssl crl -in corp1.crl -noout -CAfile <(cat corp1.pem corp-int.pem corp-root.pem) 2>&1 | grep -q "verify OK" || fail "corp1's CRL"
expect_fail "a CRL for the outside root" kca crl --issuer corp1.up2
expect_fail "issuing with the outside intermediate" kca issue --issuer corp1.up1 --template device-idevid --csr dev.csr --device-id EXT0001
ok "CRLs for the imported CA; the outside CAs sign nothing here"

# a direct child of an outside root (chain of one)
kca ca create --label corp2 --template field-ca --subject "CN=Keyline Field under Corp,O=Keyline Test" --csr-out corp2.csr 2>/dev/null
openssl x509 -req -in corp2.csr -CA corp-root.pem -CAkey corp-root.key -set_serial 0x3001 -days 2000 \
  -extfile ext.cnf -extensions ca_ext -out corp2.pem 2>/dev/null
kca ca import --label corp2 --cert corp2.pem --chain corp-root.pem >/dev/null
make_key ec-p256 dev2.key
openssl req -new -key dev2.key -subj "/CN=field device" -out dev2.csr
kca issue --issuer corp2 --template device-ldevid --csr dev2.csr --out dev2.pem
openssl verify -CAfile corp-root.pem -untrusted corp2.pem dev2.pem >/dev/null || fail "device under corp2"
ok "a CA signed directly by the outside root"

kca audit verify | grep -q intact || fail "audit"
kca audit list | grep -c "ca-import" | grep -qx 2 || fail "ca-import audit entries"
echo "ca_external: all passed"
