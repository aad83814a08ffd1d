# An offline root on a SoftHSM token of its own (issue 14 item 2): [hsm root1] names it, so the
# online token (the one keyline-cad holds) never holds a root key. keyline-cad runs with that
# token gone; a short ceremony brings it back to sign the root's CRL and a new intermediate, and
# it leaves again. `ca create --token URI` makes a CA key on a token named on the command line.
source "$KL_SRC/tests/lib/common.sh"
BIN=$KL_BIN
export ROOT_PIN=4321
softhsm2-util --init-token --free --label keyline-root --pin "$ROOT_PIN" --so-pin "$KL_SO_PIN" >/dev/null
cat >> "$KL_CONF" <<CONF

[hsm root1]
token = pkcs11:token=keyline-root
pin = env:ROOT_PIN
CONF
# privkeys TOKEN PIN: the private key labels on a token, one per line
privkeys() {
  pkcs11-tool --module "$KL_MODULE" --token-label "$1" --login --pin "$2" --list-objects --type privkey 2>/dev/null |
    sed -n 's/^ *label: *//p'
}
tokdir() { grep -l "$1" "$KL_TEST_DIR"/tokens/*/token.object | xargs dirname; }

kca ca create --label root1 --template root --subject "CN=Offline Root,O=Keyline Test" --key-type ec-p384 >root1.pem
kca ca create --label field1 --template field-ca --issuer root1 --subject "CN=Online Field CA,O=Keyline Test" >field1.pem
openssl verify -CAfile root1.pem field1.pem >/dev/null || fail "field1 under the offline root"
privkeys keyline-root "$ROOT_PIN" | grep -qx root1 || fail "the root key is not on the root's token"
privkeys keyline-test "$KEYLINE_PIN" | grep -qx field1 || fail "field1 is not on the online token"
if privkeys keyline-test "$KEYLINE_PIN" | grep -qx root1; then fail "the online token holds the root key"; fi
if privkeys keyline-root "$ROOT_PIN" | grep -qx field1; then fail "the root token holds an online key"; fi
ok "[hsm root1]: the root key lives on its own token, the online token holds none"

# a wrong PIN for the root token is a PIN error naming the CA, not a silent fallback
ROOT_PIN=0000 expect_fail "root ceremony with a wrong root PIN" kca crl --issuer root1
rc=0; ROOT_PIN=0000 kca crl --issuer root1 >/dev/null 2>err.txt || rc=$?
[ "$rc" = 5 ] || fail "wrong root PIN: exit $rc, want 5"
grep -q "CA 'root1' lives on a token of its own" err.txt || fail "message: $(cat err.txt)"

# the root token leaves the machine
root_dir=$(tokdir keyline-root)
[ -d "$root_dir" ] || fail "cannot find the root token's folder"
mv "$root_dir" "$KL_TEST_DIR/root-token-away"
rc=0; kca crl --issuer root1 >/dev/null 2>err.txt || rc=$?
[ "$rc" = 6 ] || fail "root CRL without its token: exit $rc ($(cat err.txt))"
grep -q "CA 'root1' lives on a token of its own (pkcs11:token=keyline-root)" err.txt || fail "absent token message: $(cat err.txt)"
ok "without its token the root signs nothing, and says which token is missing"

# keyline-cad runs without the root token: issues under field1, serves the root's published CRL
SOCK="$KL_TEST_DIR/cad.sock"
cad_conf_ldevid field1
"$BIN/keyline-cad" -c "$KL_CONF" 2>cad.log &
CAD_PID=$!
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat cad.log; fail "keyline-cad did not start without the root token"; }
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev1.key \
  -subj "/CN=sensor-1/serialNumber=HW0101" -outform DER -out dev1.der 2>/dev/null
"$BIN/kl_cad_client" -o dev1.pem "$SOCK" issue profile=ldevid csr=@dev1.der auth=basic auth-user=u device-id=HW0101 >/dev/null ||
  { cat cad.log; fail "issue through keyline-cad without the root token"; }
openssl verify -CAfile root1.pem -untrusted field1.pem dev1.pem >/dev/null || fail "device under field1"
"$BIN/kl_cad_client" -o root1.crl "$SOCK" crl issuer=root1 >/dev/null || fail "root CRL from keyline-cad"
openssl crl -inform DER -in root1.crl -noout -CAfile root1.pem 2>&1 | grep -q "verify OK" || fail "served root CRL"
ls -l /proc/$CAD_PID/fd 2>/dev/null | grep -q "root-token-away" && fail "keyline-cad holds the root token's files"
kill -TERM "$CAD_PID"; wait "$CAD_PID" || true
trap - EXIT
ok "keyline-cad issues and serves the root's published CRL with the root token away"

# the ceremony: the token comes back, signs the root CRL and a new intermediate, and leaves
mv "$KL_TEST_DIR/root-token-away" "$root_dir"
n_before=$(openssl crl -inform DER -in root1.crl -noout -crlnumber | cut -d= -f2)
kca crl --issuer root1 > root1-new.crl
n_after=$(openssl crl -in root1-new.crl -noout -crlnumber | cut -d= -f2)
[ "$((n_after))" -gt "$((n_before))" ] || fail "ceremony CRL number $n_after not after $n_before"
openssl crl -in root1-new.crl -noout -CAfile root1.pem 2>&1 | grep -q "verify OK" || fail "ceremony CRL"
kca ca create --label factory1 --template factory-ca --issuer root1 --subject "CN=Factory CA,O=Keyline Test" >factory1.pem
openssl verify -CAfile root1.pem factory1.pem >/dev/null || fail "ceremony intermediate"
privkeys keyline-test "$KEYLINE_PIN" | grep -qx factory1 || fail "the new intermediate is not on the online token"
mv "$root_dir" "$KL_TEST_DIR/root-token-away"
make_key ec-p256 idev.key
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0001" -out idev.csr
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001 --out idev.pem
openssl verify -CAfile root1.pem -untrusted factory1.pem idev.pem >/dev/null || fail "device under the new intermediate"
ok "a short ceremony: the root signs its CRL and an intermediate, then its token leaves again"

# --token URI: a CA key made on a token named on the command line (PIN from the URI's
# pin-source); later ceremonies name the token in [hsm LABEL]
mv "$KL_TEST_DIR/root-token-away" "$root_dir"
softhsm2-util --init-token --free --label keyline-root2 --pin 2468 --so-pin "$KL_SO_PIN" >/dev/null
umask 077; echo 2468 > root2.pin; umask 022
kca ca create --label root2 --template root --subject "CN=Second Offline Root,O=Keyline Test" \
  --token "pkcs11:token=keyline-root2?pin-source=$KL_TEST_DIR/root2.pin" >root2.pem
privkeys keyline-root2 2468 | grep -qx root2 || fail "--token: the key is not on the named token"
if privkeys keyline-test "$KEYLINE_PIN" | grep -qx root2; then fail "--token: key on the online token"; fi
expect_fail "--token naming a token that is not there" kca ca create --label root3 --template root --subject "CN=x" --token "pkcs11:token=nosuch?pin-source=$KL_TEST_DIR/root2.pin"
printf '\n[hsm root4]\ntoken = pkcs11:token=keyline-root2\npin = file:root2.pin\n' >> "$KL_CONF"
expect_fail "--token other than the one [hsm root4] names" kca ca create --label root4 --template root --subject "CN=x" --token "pkcs11:token=keyline-root?pin-source=$KL_TEST_DIR/root2.pin"
expect_fail "root2's CRL without its [hsm root2] section" kca crl --issuer root2
kca crl --issuer root2 >/dev/null 2>err.txt || true
grep -q "named in \[hsm root2\]" err.txt || fail "no hint at [hsm root2]: $(cat err.txt)"
printf '\n[hsm root2]\ntoken = pkcs11:token=keyline-root2\npin = file:root2.pin\n' >> "$KL_CONF"
kca crl --issuer root2 >/dev/null || fail "root2's CRL with its section"
ok "ca create --token URI makes the key on that token; [hsm root2] finds it later"

kca audit verify | grep -q intact || fail "audit"
echo "ca_offline: all passed"
