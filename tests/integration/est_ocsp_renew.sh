#!/usr/bin/env bash
# Delegated OCSP signers are short-lived (ocsp-signer template) and renewed once past half
# their life: by keyline-cad for the CAs it signs with (on the OCSP traffic keyline-estd
# forwards), and by keyline-ca crl for an offline CA (a root, [cad] ca-keys = intermediates),
# whose renewed certificate the running keyline-cad then picks up from the store. keyline-cad
# makes the missing ones at start-up (for its profiles' CAs and those above them). Here the signer certificates are past half
# their life at once (ocsp-signer validity 1d; every CA template and it backdated by 24h, as a
# certificate cannot start before its issuer), so every check finds them due.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

cp -r "$KL_SRC/templates" "$D/tpl"
sed -i 's/^validity = 30d/validity = 1d/' "$D/tpl/ocsp-signer.tmpl"
sed -i 's/^backdate = .*/backdate = 24h/' "$D/tpl/"{root,field-ca,factory-ca,ocsp-signer}.tmpl
grep -q "^backdate = 24h" "$D/tpl/ocsp-signer.tmpl" || die "template not changed"
sed -i "s|^templates = .*|templates = $D/tpl|" "$KL_CONF"
grep -q "^templates = $D/tpl" "$KL_CONF" || die "templates not redirected"

responder_serial() { # responder_serial OCSP-TEXT: the serial of the signer certificate in it
    awk '/^Certificate:/ {c=1} c && /Serial Number:/ {getline; gsub(/[ :]/, ""); print toupper($0); exit}' "$1"
}
ocsp_query() { # ocsp_query ISSUER-PEM CERT-PEM OUT
    openssl ocsp -issuer "$1" -cert "$2" -url "$EST_HTTP/ocsp" -resp_text -CAfile "$D/root1.pem" \
        -no_nonce > "$3" 2>&1 || true
    grep -q "Response verify OK" "$3" || die "OCSP does not verify: $(cat "$3")"
}

est_setup_ca
kca ca create --label field2 --template field-ca --subject "CN=Keyline Field CA 2" \
    --issuer root1 > "$D/field2.pem" 2>/dev/null
est_write_conf
est_start
grep -q "OCSP signer of root1 .* is past half" "$D/cad.log" && die "warned before any OCSP request"
for ca in field1 root1; do
    [ -n "$(sqlite3 "$D/keyline.db" "SELECT label FROM cas WHERE label = '$ca.ocsp'")" ] ||
        die "keyline-cad did not make $ca's OCSP signer at start-up"
done
ok "keyline-cad made the delegated OCSP signers of field1 and root1 at start-up"

new_csr dev "/CN=renew-dev/serialNumber=HWR001"
expect_status 200 "simpleenroll" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
s0=$(sqlite3 "$D/keyline.db" "SELECT hex(der) FROM cas WHERE label = 'field1.ocsp'")
ocsp_query "$D/field1.pem" "$D/dev.pem" "$D/o1.txt"
grep -q "dev.pem: good" "$D/o1.txt" || die "status: $(cat "$D/o1.txt")"
grep -q "OCSP signer of field1 renewed" "$D/cad.log" || die "field1's signer not renewed: $(grep -i ocsp "$D/cad.log")"
s1=$(sqlite3 "$D/keyline.db" "SELECT hex(der) FROM cas WHERE label = 'field1.ocsp'")
[ "$s0" != "$s1" ] || die "field1.ocsp record unchanged"
echo "$s1" | xxd -r -p | openssl x509 -inform DER -noout -serial | cut -d= -f2 > "$D/s1"
sqlite3 "$D/keyline.db" "SELECT serial FROM certs WHERE issuer = 'field1'" | grep -qx "$(cat "$D/s1")" ||
    die "the renewed signer certificate is not recorded as issued"
sqlite3 "$D/keyline.db" "SELECT detail FROM audit WHERE action = 'ca-recert'" | grep -q "label=field1.ocsp issuer=field1" ||
    die "no ca-recert audit entry"
kca audit verify > /dev/null || die "audit chain broken"
# the next answer (a different request: a nonce-less one is cached) is signed by the new cert
ocsp_query "$D/root1.pem" "$D/field1.pem" "$D/o-root.txt"
ocsp_query "$D/field1.pem" "$D/est-server.crt" "$D/o2.txt"
[ "$(responder_serial "$D/o2.txt")" = "$(cat "$D/s1")" ] ||
    die "answer not signed by the renewed signer: $(responder_serial "$D/o2.txt") vs $(cat "$D/s1")"
ok "field1's OCSP signer renewed by keyline-cad (same key, new certificate recorded and audited), answers use it"

grep -q "OCSP signer of root1 (a CA keyline-cad does not sign with: \[cad\] ca-keys) is past half its life: run keyline-ca crl --issuer root1" "$D/cad.log" ||
    die "no warning for the offline root's signer: $(grep -i 'ocsp signer' "$D/cad.log")"
r0=$(responder_serial "$D/o-root.txt")
kca crl --issuer root1 --out "$D/root1-crl.pem" 2> "$D/crl.err"
grep -q "renewed the OCSP signer of root1" "$D/crl.err" || die "keyline-ca crl: $(cat "$D/crl.err")"
r1=$(sqlite3 "$D/keyline.db" "SELECT hex(der) FROM cas WHERE label = 'root1.ocsp'" | xxd -r -p |
    openssl x509 -inform DER -noout -serial | cut -d= -f2)
[ "$r0" != "$r1" ] || die "root1.ocsp not renewed by keyline-ca crl"
ocsp_query "$D/root1.pem" "$D/field2.pem" "$D/o3.txt"
grep -q "field2.pem: good" "$D/o3.txt" || die "status: $(cat "$D/o3.txt")"
[ "$(responder_serial "$D/o3.txt")" = "$r1" ] ||
    die "keyline-cad still answers with the old root1 signer: $(responder_serial "$D/o3.txt") vs $r1"
ok "root1 (offline): warned, renewed by keyline-ca crl, picked up by the running keyline-cad"
est_stop
