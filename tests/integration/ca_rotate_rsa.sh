# Key types officers ask for (issue 14 item 5): an RSA-4096 root (the shipped root template
# allows it), RSA-2048 device keys where a template allows them (here the device templates with
# rsa-2048 added, as a site would), refusals where a template does not allow a type, and a root
# rotated from RSA-4096 to EC P-384 whose devices still validate.
source "$KL_SRC/tests/lib/common.sh"
cp -r "$KL_SRC/templates" site-templates
sed -i 's/^key-types = .*/& rsa-2048/' site-templates/device-idevid.tmpl site-templates/device-ldevid.tmpl
sed -i "s|^templates = .*|templates = $KL_TEST_DIR/site-templates|" "$KL_CONF"
p11() { pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" "$@" 2>/dev/null; }

kca ca create --label root1 --template root --key-type rsa-4096 --subject "CN=RSA Root,O=Keyline Test" > root1.pem
openssl x509 -in root1.pem -noout -text | grep -q "Public-Key: (4096 bit)" || fail "root1 is not RSA-4096"
p11 --list-objects --type privkey | awk '/^Private Key Object/ { t = $0 } /label: *root1$/ { print t }' | grep -q "RSA" ||
  { p11 --list-objects --type privkey; fail "the token does not hold an RSA root key"; }
kca ca create --label factory1 --template factory-ca --issuer root1 --subject "CN=Factory,O=Keyline Test" > factory1.pem
kca ca create --label field1 --template field-ca --issuer root1 --subject "CN=Field,O=Keyline Test" > field1.pem
openssl verify -CAfile root1.pem factory1.pem >/dev/null || fail "factory1 under the RSA root"
ok "RSA-4096 root in the token, CAs under it"

make_key rsa-2048 idev.key
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0001" -out idev.csr
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001 --out idev.pem
openssl x509 -in idev.pem -noout -text | grep -q "Public-Key: (2048 bit)" || fail "IDevID key is not RSA-2048"
openssl verify -CAfile root1.pem -untrusted factory1.pem idev.pem >/dev/null || fail "RSA-2048 IDevID (openssl)"
cat idev.pem factory1.pem > ct.pem
certtool --verify --load-ca-certificate root1.pem --infile ct.pem 2>&1 | grep -q "Chain verification output: Verified" || fail "RSA-2048 IDevID (certtool)"
make_key rsa-2048 ldev.key
openssl req -new -key ldev.key -subj "/CN=field device" -out ldev.csr
kca issue --issuer field1 --template device-ldevid --csr ldev.csr --out ldev.pem
openssl x509 -in ldev.pem -noout -text | grep -q "Public-Key: (2048 bit)" || fail "LDevID key is not RSA-2048"
openssl verify -CAfile root1.pem -untrusted field1.pem ldev.pem >/dev/null || fail "RSA-2048 LDevID"
ok "RSA-2048 device keys: IDevID and LDevID (openssl verify, certtool)"

expect_fail "an RSA-2048 root" kca ca create --label root9 --template root --key-type rsa-2048 --subject "CN=x"
expect_fail "an RSA-4096 issuing CA (field-ca does not allow it)" kca ca create --label field9 --template field-ca --issuer root1 --key-type rsa-4096 --subject "CN=y"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out weak.key 2>/dev/null
openssl req -new -key weak.key -subj "/CN=weak" -out weak.csr
expect_fail "an RSA-1024 device key" kca issue --issuer field1 --template device-ldevid --csr weak.csr
make_key rsa-3072 idev3.key
openssl req -new -key idev3.key -subj "/CN=Sensor/serialNumber=HW0003" -out idev3.csr
expect_fail "an RSA-3072 IDevID (this device-idevid allows EC and RSA-2048)" kca issue --issuer factory1 --template device-idevid --csr idev3.csr --device-id HW0003
sed -i "s|^templates = .*|templates = $KL_SRC/templates|" "$KL_CONF"
expect_fail "an RSA-2048 IDevID under the shipped template" kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001
ok "key types a template does not allow are refused"

# the root rotated to EC P-384: the RSA IDevID still validates from either anchor
kca ca rotate --label root1 --new-label root2 --key-type ec-p384 > root2.pem
kca ca cert --label root1.oldwithnew > own.pem
openssl verify -CAfile root2.pem -untrusted <(cat factory1.pem own.pem) idev.pem >/dev/null || fail "RSA IDevID under the new EC root"
kca ca rotate --label factory1 --new-label factory2 --key-type rsa-3072 > factory2.pem
openssl verify -CAfile root2.pem factory2.pem >/dev/null || fail "factory2 not under root2"
kca audit verify | grep -q intact || fail "audit"
ok "RSA-4096 root rotated to EC P-384: the old RSA IDevID validates under the new root"
echo "ca_rotate_rsa: all passed"
