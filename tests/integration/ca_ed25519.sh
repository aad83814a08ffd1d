# Ed25519 CAs (issue 14 item 5): SoftHSM 2.6.1 makes and uses Ed25519 keys, libp11 0.4.12
# cannot even list a token that holds one, so such a CA key lives on a token of its own and
# keyline reaches it through the module's own functions (C_GenerateKeyPair with
# CKM_EC_EDWARDS_KEY_PAIR_GEN, C_Sign with CKM_EDDSA: PureEdDSA over the whole TBS).
#   edroot (Ed25519, token keyline-edroot) -> factory1 (P-256, online token) -> IDevID (P-256)
#   root1 (P-384, online token) -> edfield (Ed25519, token keyline-edfield) -> LDevIDs (P-256)
# Certificates, CRLs and OCSP answers are checked by openssl and GnuTLS certtool.
source "$KL_SRC/tests/lib/common.sh"
BIN=$KL_BIN
export ED_PIN=3579
# (labels that are not prefixes of each other: pkcs11-tool --token-label matches a prefix)
for t in keyline-edroot keyline-edfield; do
  softhsm2-util --init-token --free --label $t --pin "$ED_PIN" --so-pin "$KL_SO_PIN" >/dev/null
done
cat >> "$KL_CONF" <<CONF

[hsm edroot]
token = pkcs11:token=keyline-edroot
pin = env:ED_PIN

[hsm edfield]
token = pkcs11:token=keyline-edfield
pin = env:ED_PIN
CONF
# objects TOKEN PIN: pkcs11-tool's view of the private keys
objects() {
  pkcs11-tool --module "$KL_MODULE" --token-label "$1" --login --pin "$2" --list-objects --type privkey 2>&1
}
# chain_check NAME TRUST LEAF [INTERMEDIATE]: openssl verify and certtool --verify-chain
chain_check() {
  local name=$1 trust=$2 leaf=$3 mid=${4:-}
  if [ -n "$mid" ]; then
    openssl verify -CAfile "$trust" -untrusted "$mid" "$leaf" >/dev/null || fail "openssl verify $name"
    cat "$leaf" "$mid" "$trust" > "$name.chain"
  else
    openssl verify -CAfile "$trust" "$leaf" >/dev/null || fail "openssl verify $name"
    cat "$leaf" "$trust" > "$name.chain"
  fi
  certtool --verify-chain --infile "$name.chain" >certtool.out 2>&1 || { cat certtool.out; fail "certtool $name"; }
  certtool --verify --load-ca-certificate "$trust" --infile "$name.chain" >certtool.out 2>&1 ||
    { cat certtool.out; fail "certtool --verify $name"; }
}
sigalg() { openssl x509 -in "$1" -noout -text | sed -n 's/^ *Signature Algorithm: *//p' | head -1; }

# not on the online token: libp11 would then see none of its keys
expect_fail "an Ed25519 root on the online token" kca ca create --label edbad --template root --subject "CN=x" --key-type ed25519
kca ca create --label edbad --template root --subject "CN=x" --key-type ed25519 2>err.txt >/dev/null || true
grep -q "token of its own" err.txt || fail "message: $(cat err.txt)"

# (a) an Ed25519 root on its own token
kca ca create --label edroot --template root --subject "CN=Ed25519 Root,O=Keyline Test" --key-type ed25519 >edroot.pem
[ "$(sigalg edroot.pem)" = ED25519 ] || fail "edroot signature algorithm: $(sigalg edroot.pem)"
openssl x509 -in edroot.pem -noout -text | grep -q "Public Key Algorithm: ED25519" || fail "edroot key is not Ed25519"
openssl verify -CAfile edroot.pem edroot.pem >/dev/null || fail "edroot self-signature"
# RFC 8410 3: the AlgorithmIdentifier for Ed25519 has no parameters (SEQUENCE { OID } only)
openssl asn1parse -in edroot.pem | grep -A1 ":ED25519" | grep -q "NULL" && fail "Ed25519 with parameters"
objects keyline-edroot "$ED_PIN" > ed-objects.txt
grep -q "label: *edroot" ed-objects.txt || { cat ed-objects.txt; fail "edroot key not on keyline-edroot"; }
grep -q "EC_EDWARDS\|EDDSA\|Ed25519\|ED25519\|unknown key type" ed-objects.txt || { cat ed-objects.txt; fail "edroot key type"; }
grep -q "never extractable" ed-objects.txt || { cat ed-objects.txt; fail "edroot key extractable"; }
grep -q "Access:.*sensitive" ed-objects.txt || { cat ed-objects.txt; fail "edroot key not sensitive"; }
if objects keyline-test "$KEYLINE_PIN" | grep -q "label: *edroot"; then fail "edroot key on the online token"; fi
ok "Ed25519 root made in its own token (sensitive, never extractable), self-signed with Ed25519"

# an ECDSA intermediate under it, a device under that
kca ca create --label factory1 --template factory-ca --issuer edroot --subject "CN=Factory CA,O=Keyline Test" >factory1.pem
[ "$(sigalg factory1.pem)" = ED25519 ] || fail "factory1 not signed with Ed25519: $(sigalg factory1.pem)"
chain_check factory1 edroot.pem factory1.pem
make_key ec-p256 idev.key
openssl req -new -key idev.key -subj "/CN=Sensor/serialNumber=HW0001" -out idev.csr
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0001 --out idev.pem
chain_check idev edroot.pem idev.pem factory1.pem
ok "ECDSA intermediate under the Ed25519 root, and an IDevID under it (openssl, certtool)"

# (b) the Ed25519 root's CRL, with factory1 revoked in it
kca crl --issuer edroot > edroot.crl
openssl crl -in edroot.crl -noout -text | grep -q "Signature Algorithm: ED25519" || fail "edroot CRL algorithm"
openssl crl -in edroot.crl -noout -CAfile edroot.pem 2>&1 | grep -q "verify OK" || fail "edroot CRL does not verify"
openssl verify -crl_check -CAfile edroot.pem -CRLfile edroot.crl factory1.pem >/dev/null || fail "factory1 with the root's CRL"
ok "Ed25519 root CRL verifies (openssl crl, verify -crl_check)"

# (c) an Ed25519 intermediate under an ECDSA root, devices under it
kca ca create --label root1 --template root --subject "CN=P-384 Root,O=Keyline Test" --key-type ec-p384 >root1.pem
kca ca create --label edfield --template field-ca --issuer root1 --subject "CN=Ed25519 Field CA,O=Keyline Test" --key-type ed25519 >edfield.pem
openssl x509 -in edfield.pem -noout -text | grep -q "Public Key Algorithm: ED25519" || fail "edfield key"
chain_check edfield root1.pem edfield.pem
for n in 1 2; do
  make_key ec-p256 dev$n.key
  openssl req -new -key dev$n.key -subj "/CN=sensor $n" -out dev$n.csr
  kca issue --issuer edfield --template device-ldevid --csr dev$n.csr --out dev$n.pem
  [ "$(sigalg dev$n.pem)" = ED25519 ] || fail "dev$n not signed with Ed25519"
  chain_check dev$n root1.pem dev$n.pem edfield.pem
done
ok "Ed25519 intermediate under an ECDSA root issues ECDSA devices (openssl, certtool)"

serial2=$(openssl x509 -in dev2.pem -noout -serial | cut -d= -f2)
kca revoke --serial "$serial2" --reason keyCompromise >/dev/null
kca crl --issuer edfield > edfield.crl
openssl crl -in edfield.crl -noout -CAfile edfield.pem 2>&1 | grep -q "verify OK" || fail "edfield CRL does not verify"
openssl crl -in edfield.crl -noout -text | grep -q "Serial Number: $serial2" || fail "dev2 not in the CRL"
cat root1.pem edfield.pem > trust2.pem
kca crl --issuer root1 > root1.crl
cat edfield.crl root1.crl > crls.pem
openssl verify -crl_check_all -CAfile trust2.pem -CRLfile crls.pem dev1.pem >/dev/null || fail "dev1 with the CRLs"
if openssl verify -crl_check_all -CAfile trust2.pem -CRLfile crls.pem dev2.pem >/dev/null 2>&1; then fail "revoked dev2 verifies"; fi
ok "Ed25519 intermediate's CRL verifies and revokes dev2 (openssl verify -crl_check_all)"

# (d) OCSP from keyline-cad (it opens the CAs' own tokens itself): edfield's devices are
# answered by the delegated signer keyline-cad makes at start (certified by edfield's Ed25519
# key); factory1, a certificate of edroot (no signer), by edroot's Ed25519 key itself
cad_conf_ldevid edfield
SOCK="$KL_TEST_DIR/cad.sock"
"$BIN/keyline-cad" -c "$KL_CONF" 2>cad.log &
CAD_PID=$!
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat cad.log; fail "keyline-cad did not start"; }
# ocsp_ask NAME ISSUER TRUST CERT...: keyline-cad's answer, verified by openssl
ocsp_ask() {
  local name=$1 issuer=$2 trust=$3; shift 3
  local certs=(); for c in "$@"; do certs+=(-cert "$c"); done
  openssl ocsp -issuer "$issuer" "${certs[@]}" -no_nonce -reqout "$name.req" >/dev/null 2>&1 || fail "ocsp request $name"
  "$BIN/kl_cad_client" -o "$name.resp" "$SOCK" ocsp ocsp-req=@"$name.req" >/dev/null || { tail cad.log; fail "OCSP ($name)"; }
  openssl ocsp -respin "$name.resp" -issuer "$issuer" -CAfile "$trust" -resp_text > "$name.txt" 2>&1 || { cat "$name.txt"; fail "OCSP $name does not verify"; }
  grep -q "Response verify OK" "$name.txt" || { cat "$name.txt"; fail "OCSP $name verify"; }
}
# an issuance through keyline-cad under the Ed25519 CA
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev3.key \
  -subj "/CN=sensor 3/serialNumber=HW0103" -outform DER -out dev3.der 2>/dev/null
"$BIN/kl_cad_client" -o dev3.pem "$SOCK" issue profile=ldevid csr=@dev3.der auth=basic auth-user=u device-id=HW0103 >/dev/null ||
  { tail cad.log; fail "issue through keyline-cad under edfield"; }
[ "$(sigalg dev3.pem)" = ED25519 ] || fail "dev3 not signed with Ed25519"
chain_check dev3 root1.pem dev3.pem edfield.pem
status_of() { grep -A1 "Serial Number: $(openssl x509 -in "$2" -noout -serial | cut -d= -f2)" "$1.txt" | sed -n 's/.*Cert Status: //p'; }
ocsp_ask ocsp-dev edfield.pem trust2.pem dev1.pem dev2.pem
[ "$(status_of ocsp-dev dev1.pem)" = good ] || { cat ocsp-dev.txt; fail "dev1 not good"; }
[ "$(status_of ocsp-dev dev2.pem)" = revoked ] || { cat ocsp-dev.txt; fail "dev2 not revoked"; }
grep -q "Responder Id: .*edfield OCSP signer" ocsp-dev.txt || { cat ocsp-dev.txt; fail "not answered by the delegated signer"; }
kca ca cert --label edfield.ocsp > edfield-ocsp.pem
[ "$(sigalg edfield-ocsp.pem)" = ED25519 ] || fail "OCSP signer not certified with Ed25519"
ocsp_ask ocsp-root edroot.pem edroot.pem factory1.pem
[ "$(status_of ocsp-root factory1.pem)" = good ] || { cat ocsp-root.txt; fail "factory1 not good"; }
grep -q "Signature Algorithm: ED25519" ocsp-root.txt || { cat ocsp-root.txt; fail "OCSP not signed by the Ed25519 root"; }
grep -q "Certificate:" ocsp-root.txt && { cat ocsp-root.txt; fail "a signer certificate in the root's own answer"; }
kill -TERM "$CAD_PID"; wait "$CAD_PID" || true
trap - EXIT
ok "keyline-cad issues under the Ed25519 CA; OCSP: the Ed25519 root signs its own answers, the Ed25519 CA's signer answers for its devices"

# a rollover of the Ed25519 root to a new Ed25519 key (a token of its own again: one process
# opens a token for one CA label): the old IDevID validates with only the new root as anchor
softhsm2-util --init-token --free --label keyline-ednext --pin "$ED_PIN" --so-pin "$KL_SO_PIN" >/dev/null
printf '\n[hsm edroot2]\ntoken = pkcs11:token=keyline-ednext\npin = env:ED_PIN\n' >> "$KL_CONF"
kca ca rotate --label edroot --new-label edroot2 --key-type ed25519 >/dev/null
kca ca cert --label edroot2 > edroot2.pem
kca ca cert --label edroot2.newwithold > nwo.pem
kca ca cert --label edroot.oldwithnew > own.pem
[ "$(sigalg nwo.pem)" = ED25519 ] && [ "$(sigalg own.pem)" = ED25519 ] || fail "rollover certificates not Ed25519"
openssl verify -CAfile edroot.pem nwo.pem >/dev/null || fail "edroot2.newwithold under edroot"
cat own.pem factory1.pem > old-chain.pem
openssl verify -CAfile edroot2.pem -untrusted old-chain.pem idev.pem >/dev/null || fail "IDevID with only edroot2 as anchor"
cat idev.pem factory1.pem own.pem edroot2.pem > idev2.chain
certtool --verify --load-ca-certificate edroot2.pem --infile idev2.chain >certtool.out 2>&1 || { cat certtool.out; fail "certtool IDevID under edroot2"; }
ok "Ed25519 root rollover: the IDevID validates with only the new root (openssl, certtool)"

# the same key hygiene as every CA key: edfield's key replaced by an imported, extractable
# Ed25519 key under the same label (as someone holding the PIN could) is refused before use
KL_P11_PIN=$ED_PIN "$BIN/kl_p11_ed_import" "$KL_MODULE" keyline-edfield edfield || fail "import"
rc=0; kca crl --issuer edfield 2>err.txt >/dev/null || rc=$?
[ "$rc" = 4 ] || fail "CRL with an imported Ed25519 key: exit $rc ($(cat err.txt))"
grep -q "CA key 'edfield' on the token is .*refusing to sign with it" err.txt || fail "text: $(cat err.txt)"
rc=0; kca issue --issuer edfield --template device-ldevid --csr dev1.csr 2>err.txt >/dev/null || rc=$?
[ "$rc" = 4 ] || fail "issue with an imported Ed25519 key: exit $rc ($(cat err.txt))"
ok "an imported (extractable) Ed25519 CA key is refused: $(head -c 120 err.txt)"

kca audit verify | grep -q intact || fail "audit"
echo "ca_ed25519: all passed"
