# keyline-ca ca retire (issue 14 item 1): a final CRL whose nextUpdate is past the last expiry of
# what the CA issued, its key destroyed in the token, and from then on nothing signed with it:
# issue, CRL and OCSP signing refuse, in keyline-ca and in a running keyline-cad; OCSP for its
# certificates is answered by the delegated signer renewed before retirement. Then a whole
# rollover finished: the old root retired after its CAs, old devices still validate.
source "$KL_SRC/tests/lib/common.sh"
BIN=$KL_BIN
p11() { pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" "$@" 2>/dev/null; }
has_obj() { p11 --list-objects --type "$1" | sed -n 's/^ *label: *//p' | grep -qx "$2"; }
cc() { "$BIN/kl_cad_client" "$@"; }
FAKETIME_LIB=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)
[ -n "$FAKETIME_LIB" ] || fail "libfaketime is not installed (scripts/deps: faketime)"
new_dev() { # NAME SERIAL: key, CSR and an LDevID from field1
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -subj "/CN=$1/serialNumber=$2" -out "$1.csr" 2>/dev/null
  kca issue --issuer field1 --template device-ldevid --csr "$1.csr" --device-id "$2" --out "$1.pem"
}

make_hierarchy
kca ca create --label field1.ocsp --template ocsp-signer --issuer field1 --subject "CN=field1 OCSP signer" >/dev/null
new_dev dev1 HW0001
new_dev dev2 HW0002
kca revoke --serial "$(openssl x509 -in dev2.pem -noout -serial | cut -d= -f2)" --reason keyCompromise 2>/dev/null
signer_before=$(kca ca cert --label field1.ocsp | openssl x509 -noout -serial)

expect_fail "retiring a root with active CAs below it" kca ca retire --label root1
expect_fail "retiring an OCSP signer" kca ca retire --label field1.ocsp
expect_fail "retiring an unknown CA" kca ca retire --label nosuch
has_obj privkey root1 || fail "a refused retirement touched the key"

kca ca retire --label field1 > final.crl 2> retire.err || { cat retire.err; fail "ca retire"; }
grep -q "CA 'field1' retired: final CRL number" retire.err || fail "retire message: $(cat retire.err)"
openssl crl -in final.crl -noout -CAfile <(cat field1.pem root1.pem) 2>&1 | grep -q "verify OK" || fail "final CRL signature"
next=$(date -d "$(openssl crl -in final.crl -noout -nextupdate | cut -d= -f2)" +%s)
dev_end=$(openssl x509 -in dev1.pem -noout -enddate | cut -d= -f2)
[ "$next" -gt "$(date -d "$dev_end" +%s)" ] || fail "final CRL nextUpdate $next not past the devices' notAfter ($dev_end)"
signer_end=$(kca ca cert --label field1.ocsp | openssl x509 -noout -enddate | cut -d= -f2)
[ "$next" -gt "$(date -d "$signer_end" +%s)" ] || fail "final CRL ends before the OCSP signer"
openssl crl -in final.crl -noout -text | grep -q "$(openssl x509 -in dev2.pem -noout -serial | cut -d= -f2)" || fail "final CRL lacks the revoked device"
kca ca list | grep -q "^field1 .*retired" || { kca ca list; fail "field1 not retired in ca list"; }
if has_obj privkey field1; then fail "field1's private key is still on the token"; fi
has_obj cert field1 || fail "field1's certificate object went with the key"
[ "$(kca ca cert --label field1.ocsp | openssl x509 -noout -serial)" != "$signer_before" ] || fail "the OCSP signer was not renewed before retirement"
kca audit list | grep -q "ca-retire .*label=field1" || fail "no ca-retire audit entry"
ok "retire: final CRL past the last expiry (revocations in it), key destroyed, signer renewed, audited"

# a retired key cannot sign anything
rc=0; kca issue --issuer field1 --template device-ldevid --csr dev1.csr --device-id HW0001 >/dev/null 2>err.txt || rc=$?
[ "$rc" = 4 ] && grep -q "retired" err.txt || fail "issue under a retired CA: exit $rc $(cat err.txt)"
rc=0; kca crl --issuer field1 >/dev/null 2>err.txt || rc=$?
[ "$rc" = 4 ] && grep -q "CA 'field1' is retired" err.txt || fail "CRL of a retired CA: exit $rc $(cat err.txt)"
expect_fail "rotating a retired CA" kca ca rotate --label field1 --new-label field1c
expect_fail "a CA under a retired one" kca ca create --label sub1 --template field-ca --issuer field1 --subject "CN=sub"
kca ca retire --label field1 >/dev/null 2>err.txt || fail "retiring twice: $(cat err.txt)"
grep -q "retired already" err.txt || fail "second retire: $(cat err.txt)"
ok "a retired key signs nothing: issue, CRL, rotate, a CA below it all refused; retire again is a no-op"

# keyline-cad: what field1 issued stays good, OCSP answered by the delegated signer, its final
# CRL served; issuing under it refused
cad_conf_ldevid field1
SOCK="$KL_TEST_DIR/cad.sock"
start_cad() { # [faketime offset]
  rm -f "$SOCK"
  # libfaketime preloaded into keyline-cad itself (the faketime wrapper would be its parent)
  if [ -n "${1:-}" ]; then
    LD_PRELOAD=$FAKETIME_LIB FAKETIME="$1" "$BIN/keyline-cad" -c "$KL_CONF" 2>>cad.log &
  else
    "$BIN/keyline-cad" -c "$KL_CONF" 2>>cad.log &
  fi
  CAD_PID=$!
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || { cat cad.log; fail "keyline-cad did not start"; }
}
stop_cad() { kill -TERM "$CAD_PID"; wait "$CAD_PID" || true; }
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
start_cad
openssl ocsp -issuer field1.pem -cert dev1.pem -cert dev2.pem -no_nonce -reqout ocsp.req >/dev/null 2>&1 || fail "ocsp request"
cc -o ocsp.resp "$SOCK" ocsp ocsp-req=@ocsp.req >/dev/null || { tail cad.log; fail "OCSP for a retired CA's certificates"; }
openssl ocsp -respin ocsp.resp -issuer field1.pem -CAfile <(cat field1.pem root1.pem) -resp_text > ocsp.txt 2>&1 || { cat ocsp.txt; fail "OCSP response does not verify"; }
grep -q "Response verify OK" ocsp.txt || { cat ocsp.txt; fail "OCSP response verify"; }
grep -q "Responder Id: .*field1 OCSP signer" ocsp.txt || { cat ocsp.txt; fail "not answered by the delegated signer"; }
grep -A1 "Serial Number: $(openssl x509 -in dev1.pem -noout -serial | cut -d= -f2)" ocsp.txt | grep -q "Cert Status: good" || { cat ocsp.txt; fail "dev1 not good"; }
grep -A1 "Serial Number: $(openssl x509 -in dev2.pem -noout -serial | cut -d= -f2)" ocsp.txt | grep -q "Cert Status: revoked" || { cat ocsp.txt; fail "dev2 not revoked"; }
cc -o served.crl "$SOCK" crl issuer=field1 >/dev/null || fail "final CRL from keyline-cad"
cmp served.crl <(openssl crl -in final.crl -outform DER) || fail "keyline-cad serves another CRL than the final one"
openssl req -in dev1.csr -outform DER -out dev1.der
rc=0; cc "$SOCK" issue profile=ldevid csr=@dev1.der auth=basic auth-user=u device-id=HW0001 >/dev/null 2>err.txt || rc=$?
[ "$rc" = 4 ] && grep -q "retired" err.txt || fail "keyline-cad issued under a retired CA: exit $rc $(cat err.txt)"
stop_cad
ok "keyline-cad: OCSP by the delegated signer (good/revoked), the final CRL served, issuance refused"

# once that signer's life is over, OCSP for field1 refuses rather than signing with field1
start_cad +40d
rc=0; cc -o ocsp2.resp "$SOCK" ocsp ocsp-req=@ocsp.req >/dev/null 2>err.txt || rc=$?
[ "$rc" != 0 ] && grep -q "CA 'field1' is retired" err.txt || { tail -3 cad.log; fail "OCSP after the signer's end: exit $rc $(cat err.txt)"; }
stop_cad
trap - EXIT
ok "after the delegated signer's end, OCSP refuses with the reason (no signature by the retired key)"

# finishing a rollover: root1 -> root2, factory1 -> factory2, then factory1 and root1 retired
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout idev.key \
  -subj "/CN=Sensor/serialNumber=HW0100" -out idev.csr 2>/dev/null
kca issue --issuer factory1 --template device-idevid --csr idev.csr --device-id HW0100 --out idev-old.pem
kca ca rotate --label root1 --new-label root2 --key-type ec-p384 > root2.pem
kca ca rotate --label factory1 --new-label factory2 > factory2.pem
kca ca cert --label root1.oldwithnew > own.pem
expect_fail "retiring the old root before its factory CA" kca ca retire --label root1
kca ca retire --label factory1 > factory1-final.crl 2>/dev/null
kca ca retire --label root1 > root1-final.crl 2>/dev/null
[ "$(openssl crl -in factory1-final.crl -noout -nextupdate | cut -d= -f2)" = "Dec 31 23:59:59 9999 GMT" ] ||
  fail "final CRL of a CA that issued IDevIDs must last to 9999-12-31T23:59:59Z"
if has_obj privkey root1 || has_obj privkey factory1; then fail "retired keys still on the token"; fi
kca ca list | grep -q "^root1 .*retired" || fail "root1 not retired"
openssl verify -CAfile root1.pem -untrusted factory1.pem idev-old.pem >/dev/null || fail "old IDevID, old anchor, after retirement"
openssl verify -CAfile root2.pem -untrusted <(cat factory1.pem own.pem) idev-old.pem >/dev/null || fail "old IDevID, new anchor, after retirement"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout idev2.key \
  -subj "/CN=Sensor/serialNumber=HW0101" -out idev2.csr 2>/dev/null
kca issue --issuer factory2 --template device-idevid --csr idev2.csr --device-id HW0101 --out idev-new.pem
expect_fail "issuing under the retired factory CA" kca issue --issuer factory1 --template device-idevid --csr idev2.csr --device-id HW0101
kca audit verify | grep -q intact || fail "audit"
ok "rollover finished: old factory CA and old root retired, old and new devices validate, new ones issue"
echo "ca_retire: all passed"
