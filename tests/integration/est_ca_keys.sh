#!/usr/bin/env bash
# Which CA keys sign CRLs at run time is keyline-cad's [cad] ca-keys now: with `intermediates`
# (the default) keyline-cad re-signs the CRLs of every CA but the self-signed roots; a root's
# CRL is the one published in the store (keyline-ca ca create / revoke / crl, or keyline-cad's
# start-up step when none is), served byte for byte through keyline-estd; its OCSP answers come
# from its delegated signer (made at start-up). With `all` keyline-cad signs the root's CRL
# itself again. keyline-estd's old [est] ca-keys, signer and signer-processes still start, with
# one warning naming [cad] ca-keys.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

crl_number() { openssl crl -inform DER -in "$1" -noout -crlnumber | cut -d= -f2; }

est_setup_ca
# a second intermediate, to be revoked by the officer below
kca ca create --label field2 --template field-ca --subject "CN=Keyline Field CA 2,O=Keyline Test" \
    --issuer root1 > "$D/field2.pem" 2> "$D/create.err"
grep -q "published CRL number 1 of field2" "$D/create.err" || die "ca create: no first CRL: $(cat "$D/create.err")"
ok "ca create publishes the new CA's first CRL"

# a second root, outside what keyline-cad's profiles use, whose CRL goes missing
kca ca create --label root2 --template root --subject "CN=Keyline Other Root" > /dev/null 2>&1
# root1's published CRL is taken away before the start (a store from an older keyline):
# keyline-cad's start-up step publishes one
sqlite3 "$D/keyline.db" "DELETE FROM crls WHERE issuer IN ('root1', 'root2')"
# the keys of keyline-estd's signer processes, gone with them: accepted, with one warning
est_write_conf "ca-keys = issuers" "signer = process" "signer-processes = 3"
est_start
grep -q "\[est\] signer, \[est\] signer-processes, \[est\] ca-keys no longer apply and are ignored: keyline-cad holds the token (which CA keys it signs CRLs with is \[cad\] ca-keys)" "$D/estd.log" ||
    die "no warning for the obsolete keys: $(grep -i 'no longer' "$D/estd.log")"
[ "$(grep -c 'no longer appl' "$D/estd.log")" = 1 ] || die "more than one warning line"
ok "[est] signer, signer-processes, ca-keys: accepted with one warning naming [cad] ca-keys"
grep -q "CRL for root1: published a new one at start-up (none was published)" "$D/cad.log" ||
    die "no start-up CRL for root1: $(grep 'CRL for' "$D/cad.log")"
if grep -q "CRL for root2" "$D/cad.log"; then die "start-up touched root2, which no profile uses"; fi
expect_status 200 "root1 CRL published at start-up" "$EST_HTTP/crl/root1.crl"
openssl crl -inform DER -in "$D/out" -noout -verify -CAfile "$D/root1.pem" 2>&1 |
    grep -q "verify OK" || die "start-up root CRL signature"
nu=$(openssl crl -inform DER -in "$D/out" -noout -nextupdate | cut -d= -f2)
days=$(( ($(date -d "$nu" +%s) - $(date +%s)) / 86400 ))
[ "$days" -ge 89 ] && [ "$days" -le 90 ] || die "root CRL nextUpdate in $days days, expected 90 (crl-validity)"
ok "root CRL published by keyline-cad's start-up step, valid 90 days (root template crl-validity)"
st=$(curl -s -o "$D/out" -w '%{http_code}' "$EST_HTTP/crl/root2.crl")
[ "$st" = 404 ] || die "unpublished root2 CRL: HTTP $st"
grep -q "no CRL published" "$D/out" || die "404 body: $(cat "$D/out")"
grep -q "run keyline-ca crl --issuer root2" "$D/estd.log" || die "no hint in the log"
st=$(curl -s -o "$D/out" -w '%{http_code}' "$EST_HTTP/crl/nosuchca.crl")
[ "$st" = 404 ] && grep -q "no such CA" "$D/out" || die "unknown CA: HTTP $st $(cat "$D/out")"
st=$(curl -s -o "$D/out" -w '%{http_code}' "$EST_HTTP/crl/root1.ocsp.crl")
[ "$st" = 404 ] && grep -q "no such CA" "$D/out" || die "OCSP signer's CRL: HTTP $st $(cat "$D/out")"
ok "root without a published CRL: 404 and a hint in the log; unknown CA, OCSP signer: 404"

kca crl --issuer root1 --out "$D/root1-published.pem" 2> "$D/crl.err"
grep -q "published CRL number" "$D/crl.err" || die "keyline-ca crl did not say it published"
# keyline-cad re-reads a published CRL every 60 s and when the CA's revocation epoch moves; a
# restart reads it at once (and does not publish another: this one is fresh)
est_stop
est_start
expect_status 200 "root CRL once published" "$EST_HTTP/crl/root1.crl"
cp "$D/out" "$D/root1.crl"
openssl crl -in "$D/root1-published.pem" -outform DER -out "$D/root1-published.der"
cmp -s "$D/root1.crl" "$D/root1-published.der" || die "served root CRL is not the published one"
openssl crl -inform DER -in "$D/root1.crl" -noout -verify -CAfile "$D/root1.pem" 2>&1 |
    grep -q "verify OK" || die "root CRL signature"
n1=$(crl_number "$D/root1.crl")
curl -s -o "$D/root1-again.crl" "$EST_HTTP/crl/root1.crl"
cmp -s "$D/root1.crl" "$D/root1-again.crl" || die "keyline-cad re-signed a root's CRL"
ok "root CRL served byte for byte as published (number $n1), not re-signed"

# the issuing CA's CRL is signed on demand by keyline-cad
expect_status 200 "field1 CRL" "$EST_HTTP/crl/field1.crl"
openssl crl -inform DER -in "$D/out" -noout -verify -CAfile "$D/field1.pem" 2>&1 |
    grep -q "verify OK" || die "field1 CRL signature"
n_field1=$(crl_number "$D/out")
sqlite3 "$D/keyline.db" "SELECT number FROM crls WHERE issuer = 'field1'" | grep -qx "$((n_field1))" ||
    die "field1 CRL number $n_field1 is not the store's"
ok "field1 (issuing CA) CRL signed by keyline-cad"

# OCSP about an intermediate (issued by the root): the root's delegated signer answers
openssl ocsp -issuer "$D/root1.pem" -cert "$D/field2.pem" -url "$EST_HTTP/ocsp" -resp_text \
    -CAfile "$D/root1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "Response verify OK" "$D/ocsp.txt" || die "OCSP for field2: $(cat "$D/ocsp.txt")"
grep -q "field2.pem: good" "$D/ocsp.txt" || die "OCSP status: $(cat "$D/ocsp.txt")"
grep -q "Responder Id: CN *= *root1 OCSP signer" "$D/ocsp.txt" ||
    die "not answered by root1's delegated signer: $(grep 'Responder' "$D/ocsp.txt")"
ok "OCSP for a certificate of the root: answered by its delegated signer"

# the officer revokes the intermediate: keyline-ca publishes root1's CRL, keyline-cad serves it
kca revoke --serial "$(serial_of "$D/field2.pem")" --reason cACompromise > /dev/null 2> "$D/revoke.err"
grep -q "published CRL number .* of root1 (after the revocation)" "$D/revoke.err" ||
    die "revoke did not publish: $(cat "$D/revoke.err")"
expect_status 200 "root CRL after the revocation" "$EST_HTTP/crl/root1.crl"
n2=$(crl_number "$D/out")
[ "$n2" != "$n1" ] || die "the new root CRL was not picked up (number $n2)"
openssl crl -inform DER -in "$D/out" -noout -text | grep -q "$(serial_of "$D/field2.pem")" ||
    die "revoked intermediate not in the root CRL"
openssl ocsp -issuer "$D/root1.pem" -cert "$D/field2.pem" -url "$EST_HTTP/ocsp" -resp_text \
    -CAfile "$D/root1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "field2.pem: revoked" "$D/ocsp.txt" || die "OCSP after revoke: $(cat "$D/ocsp.txt")"
ok "revoked intermediate: in the root CRL (number $n2) at once, OCSP revoked"

new_csr dev "/CN=keys-dev/serialNumber=HWK001"
expect_status 200 "simpleenroll" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_hsm_errors_total 0' "$D/out" || die "HSM errors: $(grep hsm_errors "$D/out")"
ok "enrollment works; no HSM error"
est_stop

# [cad] ca-keys = all: keyline-cad signs the root's CRL itself once the published one is not
# known to list every revocation (its epoch not recorded, as for a CRL from before schema 15):
# a number past the published one. While the published one is current (read at the CA's
# revocation epoch, in its first half of validity) it is served as it is, not signed again.
sed -i 's/^\[cad\]$/[cad]\nca-keys = all/' "$KL_CONF"
est_start
expect_status 200 "root CRL, current, with ca-keys = all" "$EST_HTTP/crl/root1.crl"
[ "$(crl_number "$D/out")" = "$n2" ] || die "ca-keys = all: the current root CRL $n2 was signed again ($(crl_number "$D/out"))"
ok "ca-keys = all: the published root CRL, current, is served as it is (number $n2)"
est_stop
sqlite3 "$D/keyline.db" "DELETE FROM crl_epochs WHERE name = 'root1'"
sleep 1
est_start
expect_status 200 "root CRL signed by keyline-cad" "$EST_HTTP/crl/root1.crl"
n3=$(crl_number "$D/out")
[ "$((${n3:-0}))" -gt "$((n2))" ] || die "ca-keys = all: root CRL number $n3 not past $n2"
openssl crl -inform DER -in "$D/out" -noout -verify -CAfile "$D/root1.pem" 2>&1 |
    grep -q "verify OK" || die "root CRL signature (all)"
ok "[cad] ca-keys = all: keyline-cad signs the root's CRL (number $n3)"
est_stop

sed -i 's/^ca-keys = all$/ca-keys = some/' "$KL_CONF"
if "$BIN/keyline-cad" -c "$KL_CONF" 2> "$D/bad.err"; then die "[cad] ca-keys = some accepted"; fi
grep -q "ca-keys = some: expected intermediates or all" "$D/bad.err" || die "bad value message: $(cat "$D/bad.err")"
ok "[cad] ca-keys = some: keyline-cad refuses it with a clear message"
