#!/usr/bin/env bash
# keyline-estd: the standard client recipe with curl + openssl (docs/est.md), checked by
# third-party tools: cacerts, csrattrs, enroll with Basic, enroll with an IDevID, reenroll,
# serverkeygen, CRL + openssl verify -crl_check, OCSP (POST via openssl ocsp, GET via curl).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start

# --- cacerts (no authentication) -------------------------------------------------------------
st=$(ecurl -D "$D/hdr" "$EST/cacerts")
[ "$st" = 200 ] || die "cacerts HTTP $st"
grep -qi '^content-type: application/pkcs7-mime' "$D/hdr" || die "cacerts content type"
grep -qi '^content-transfer-encoding: base64' "$D/hdr" || die "cacerts CTE"
cp "$D/out" "$D/cacerts.b64"
p7_to_pem "$D/cacerts.b64" "$D/cacerts.pem"
for cn in "Keyline Test Root" "Keyline Field CA" "Keyline Factory CA"; do
    grep -q "subject=.*CN = $cn" "$D/cacerts.pem" || die "cacerts lacks $cn"
done
ok "cacerts: certs-only PKCS#7 with root, field and factory CA"
# a labelled path and the unlabelled one answer alike
expect_status 404 "unknown label" "$EST/nosuchlabel/cacerts"

# --- csrattrs ---------------------------------------------------------------------------------
st=$(ecurl -D "$D/hdr" "$EST/csrattrs")
[ "$st" = 200 ] || die "csrattrs HTTP $st"
grep -qi '^content-type: application/csrattrs' "$D/hdr" || die "csrattrs content type"
openssl base64 -d -in "$D/out" | openssl asn1parse -inform DER > "$D/csrattrs.txt"
for w in challengePassword id-ecPublicKey prime256v1 serialNumber ecdsa-with-SHA256; do
    grep -q "$w" "$D/csrattrs.txt" || die "csrattrs lacks $w"
done
ok "csrattrs: key type, serialNumber, challengePassword"

# --- simpleenroll with HTTP Basic -------------------------------------------------------------
new_csr basic1 "/CN=bootstrap-device-1/serialNumber=HWB001"
st=$(ecurl -D "$D/hdr" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/basic1.b64" "$EST/simpleenroll")
[ "$st" = 200 ] || die "simpleenroll (Basic) HTTP $st: $(cat "$D/out")"
grep -qi '^content-type: application/pkcs7-mime; *smime-type=certs-only' "$D/hdr" || die "enroll content type"
p7_to_pem "$D/out" "$D/basic1.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/basic1.pem" >/dev/null || die "basic1 does not verify"
certtool --verify --load-ca-certificate "$D/root1.pem" \
    --infile <(cat "$D/basic1.pem" "$D/field1.pem") >/dev/null 2>&1 || die "certtool rejects basic1"
[ "$(openssl x509 -in "$D/basic1.pem" -noout -pubkey)" = "$(openssl pkey -in "$D/basic1.key" -pubout)" ] || die "basic1 key mismatch"
ok "simpleenroll with Basic auth: cert verifies (openssl + certtool)"

# the other hash kinds work too; single-line base64 without trailing newline; CTE header
openssl req -in "$D/basic1.csr" -outform DER | openssl base64 -A > "$D/oneline.b64"
expect_status 200 "bcrypt user, one-line body" -u "factory-bcrypt:bcrypt-secret" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/oneline.b64" "$EST/simpleenroll"
expect_status 200 "sha512crypt user, CTE header, CRLF-wrapped body" -u "factory-sha:sha-secret" \
    -H "Content-Type: application/pkcs10" -H "Content-Transfer-Encoding: base64" \
    --data-binary @<(sed 's/$/\r/' "$D/basic1.b64") "$EST/simpleenroll"

# --- simpleenroll with the IDevID as TLS client certificate -----------------------------------
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
st=$(ecurl --cert "$D/idev.crt" --key "$D/idev.key" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/ldev.b64" "$EST/simpleenroll")
[ "$st" = 200 ] || die "simpleenroll (IDevID) HTTP $st: $(cat "$D/out")"
p7_to_pem "$D/out" "$D/ldev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/ldev.pem" >/dev/null || die "ldev does not verify"
ldev_serial=$(serial_of "$D/ldev.pem")
kca list --json > "$D/list.json"
python3 - "$D/list.json" "$ldev_serial" <<'PY' || die "LDevID not recorded with device id HW0001"
import json, sys
rows = json.load(open(sys.argv[1]))
row = [r for r in rows if r["serial"].upper() == sys.argv[2].upper()]
assert row and row[0].get("device_id") == "HW0001", row
PY
ok "simpleenroll with IDevID client cert (device id HW0001 recorded)"

# --- simplereenroll with the LDevID -----------------------------------------------------------
new_csr ldev2 "/CN=sensor-0001/serialNumber=HW0001"
st=$(ecurl --cert "$D/ldev.pem" --key "$D/ldev.key" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/ldev2.b64" "$EST/simplereenroll")
[ "$st" = 200 ] || die "simplereenroll HTTP $st: $(cat "$D/out")"
p7_to_pem "$D/out" "$D/ldev2.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/ldev2.pem" >/dev/null || die "ldev2 does not verify"
[ "$(serial_of "$D/ldev2.pem")" != "$ldev_serial" ] || die "reenroll reused a serial"
ok "simplereenroll with the LDevID"

# --- serverkeygen ----------------------------------------------------------------------------
new_csr skg "/CN=keyless-device-7/serialNumber=HWK007"
st=$(ecurl -D "$D/hdr" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/skg.b64" "$EST/serverkeygen")
[ "$st" = 200 ] || die "serverkeygen HTTP $st: $(cat "$D/out")"
grep -qi '^content-type: multipart/mixed; *boundary=' "$D/hdr" || die "serverkeygen content type"
python3 - "$D/out" "$D" <<'PY' || die "serverkeygen multipart"
import base64, re, sys
body = open(sys.argv[1], "rb").read().decode()
parts = [p for p in re.split(r"\r?\n?--keyline_est_part(?:--)?\r?\n", body) if p.strip()]
assert len(parts) == 2, parts
for p, name in zip(parts, ("skg-key.der", "skg-p7.der")):
    head, _, data = p.partition("\r\n\r\n")
    assert "base64" in head.lower(), head
    open(sys.argv[2] + "/" + name, "wb").write(base64.b64decode("".join(data.split())))
assert "application/pkcs8" in parts[0] and "pkcs7-mime" in parts[1]
PY
openssl pkcs7 -inform DER -in "$D/skg-p7.der" -print_certs -out "$D/skg.pem"
openssl pkey -inform DER -in "$D/skg-key.der" -out "$D/skg-server.key"
[ "$(openssl x509 -in "$D/skg.pem" -noout -pubkey)" = "$(openssl pkey -in "$D/skg-server.key" -pubout)" ] || die "serverkeygen key/cert mismatch"
openssl x509 -in "$D/skg.pem" -noout -subject | grep -q "keyless-device-7" || die "serverkeygen subject"
ok "serverkeygen: PKCS#8 key + certificate that match"
# the recipe docs/est.md gives (tr, awk, openssl) splits the same answer the same way
(cd "$D" && tr -d '\r' < out |
    awk '/^--/ { part++; body = 0; next } body { print > ("recipe-part" part ".b64") } /^$/ { body = 1 }')
openssl base64 -d -in "$D/recipe-part1.b64" | openssl pkey -inform DER -out "$D/recipe.key"
openssl base64 -d -in "$D/recipe-part2.b64" | openssl pkcs7 -inform DER -print_certs -out "$D/recipe.pem"
cmp <(openssl pkey -in "$D/recipe.key" -pubout) <(openssl x509 -in "$D/recipe.pem" -noout -pubkey) >/dev/null \
    || die "the docs/est.md serverkeygen recipe does not split the answer"
cmp "$D/recipe.pem" "$D/skg.pem" >/dev/null || die "the recipe's certificate differs"
ok "serverkeygen: the docs/est.md recipe (tr, awk, openssl) splits the answer"

# --- fullcmc, methods -------------------------------------------------------------------------
expect_status 501 "fullcmc" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs7-mime" --data-binary x "$EST/fullcmc"
expect_status 405 "GET simpleenroll" "$EST/simpleenroll"
expect_status 405 "POST cacerts" --data-binary x "$EST/cacerts"
expect_status 404 "unknown path" "$EST_URL/nothing-here"
# the plain listener serves no EST
st=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/.well-known/est/cacerts")
[ "$st" = 404 ] || die "plain listener served EST ($st)"
ok "plain-HTTP listener refuses EST paths"

# --- CRL -------------------------------------------------------------------------------------
# revoke the first Basic certificate
kca revoke --serial "$(serial_of "$D/basic1.pem")" --reason keyCompromise >/dev/null
st=$(curl -s -D "$D/hdr" -o "$D/field1.crl" -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 200 ] || die "CRL HTTP $st"
grep -qi '^content-type: application/pkix-crl' "$D/hdr" || die "CRL content type"
openssl crl -inform DER -in "$D/field1.crl" -out "$D/field1.crl.pem"
openssl crl -in "$D/field1.crl.pem" -noout -text | grep -q "$(serial_of "$D/basic1.pem")" || die "revoked serial not in CRL"
if openssl verify -crl_check -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" -CRLfile "$D/field1.crl.pem" "$D/basic1.pem" >/dev/null 2>&1; then
    die "revoked certificate passes -crl_check"
fi
openssl verify -crl_check -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" -CRLfile "$D/field1.crl.pem" "$D/ldev.pem" >/dev/null || die "valid cert fails -crl_check"
ok "CRL: revoked cert fails openssl verify -crl_check, valid one passes"
# cached: the same CRL again (same cRLNumber) until something changes
curl -s -o "$D/field1-again.crl" "$EST_HTTP/crl/field1.crl"
cmp -s "$D/field1.crl" "$D/field1-again.crl" || die "CRL not cached"
kca revoke --serial "$(serial_of "$D/ldev2.pem")" --reason superseded >/dev/null
curl -s -o "$D/field1-new.crl" "$EST_HTTP/crl/field1.crl"
openssl crl -inform DER -in "$D/field1-new.crl" -noout -text | grep -q "$(serial_of "$D/ldev2.pem")" || die "CRL not regenerated after revocation"
ok "CRL cached and regenerated on revocation"
st=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/crl/nosuchca.crl")
[ "$st" = 404 ] || die "unknown CRL $st"
# over TLS too
expect_status 200 "CRL over TLS" "$EST_URL/crl/field1.crl"

# --- OCSP ------------------------------------------------------------------------------------
ocsp_check() { # CERT EXPECT(good|revoked) [extra]
    openssl ocsp -issuer "$D/field1.pem" -cert "$1" -url "$EST_HTTP/ocsp" \
        -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" > "$D/ocsp.txt" 2>&1 || true
    grep -q "Response verify OK" "$D/ocsp.txt" || die "OCSP response does not verify: $(cat "$D/ocsp.txt")"
    grep -q ": $2" "$D/ocsp.txt" || die "OCSP for $1: expected $2: $(cat "$D/ocsp.txt")"
}
ocsp_check "$D/ldev.pem" good
ocsp_check "$D/basic1.pem" revoked
ok "OCSP POST (openssl ocsp): good and revoked, response verifies"
# RFC 5019 GET
openssl ocsp -issuer "$D/field1.pem" -cert "$D/basic1.pem" -no_nonce -reqout "$D/ocspreq.der" >/dev/null 2>&1
b64=$(openssl base64 -A -in "$D/ocspreq.der" | python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read().strip(), safe=""))')
st=$(curl -s -D "$D/hdr" -o "$D/ocspresp.der" -w '%{http_code}' "$EST_HTTP/ocsp/$b64")
[ "$st" = 200 ] || die "OCSP GET HTTP $st"
grep -qi '^content-type: application/ocsp-response' "$D/hdr" || die "OCSP content type"
openssl ocsp -respin "$D/ocspresp.der" -issuer "$D/field1.pem" -cert "$D/basic1.pem" \
    -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" 2>&1 | grep -q ": revoked" || die "OCSP GET status"
ok "OCSP GET (RFC 5019)"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Content-Type: text/plain" --data-binary x "$EST_HTTP/ocsp")
[ "$st" = 415 ] || die "OCSP wrong content type $st"

# --- metrics ---------------------------------------------------------------------------------
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_requests_total{endpoint="simpleenroll",code="200"} [1-9]' "$D/out" || die "metrics: enroll count"
grep -q '^keyline_est_issue_seconds_count [1-9]' "$D/out" || die "metrics: histogram count"

# no secret in the log
if grep -q -e "$EST_PASS" -e "bcrypt-secret" -e "PRIVATE KEY" "$D/estd.log"; then
    die "a secret appears in the log"
fi
grep -q "POST /.well-known/est/simpleenroll 200 .* basic:bootstrap" "$D/estd.log" || die "access log identity"
grep -q "POST /.well-known/est/simpleenroll 200 .* cert:serialNumber=HW0001" "$D/estd.log" || die "access log cert identity"
ok "access log: identities, no secrets"

est_stop
ok "SIGTERM -> exit 0"
