#!/usr/bin/env bash
# RSA on both sides of the boundary. keyline-estd's TLS key is RSA-3072 on its own token
# (est-tls), opened by GnuTLS itself: RSA PKCS#1 v1.5 (TLS 1.2) and RSA-PSS (TLS 1.2
# rsa_pss_rsae_*, TLS 1.3) handshakes, SHA-1 refused; openssl s_client checks each. And an
# RSA-3072 issuing CA: a label whose profile issues with it, so keyline-cad signs certificates,
# its CRL and (through the delegated OCSP signer it makes) OCSP answers under an RSA key.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
kca ca create --label rsa1 --template field-ca --key-type rsa-3072 \
    --subject "CN=Keyline RSA Field CA,O=Keyline Test" --issuer root1 >/dev/null 2>&1
kca ca cert --label rsa1 > "$D/rsa1.pem"
openssl x509 -in "$D/rsa1.pem" -noout -text | grep -q "Public-Key: (3072 bit)" || die "rsa1 is not RSA-3072"
est_token_tls_key est-tls-rsa rsa --bits 3072
est_write_conf
printf '\n[est.label rsa]\nissuer = rsa1\n' >> "$KL_CONF"
est_start
grep -q "EST label 'rsa': keyline-cad profile est.rsa (issuer rsa1)" "$D/estd.log" || die "label rsa not on profile est.rsa"
ok "started with an RSA TLS key on keyline-estd's own token and a label on the RSA CA"

# handshake ARGS... : s_client output in $D/sc.txt, fails unless the chain verifies
handshake() {
    openssl s_client -connect "127.0.0.1:$EST_PORT" -CAfile "$D/root1.pem" -verify_return_error \
        "$@" </dev/null >"$D/sc.txt" 2>&1 || return 1
    grep -q "Verify return code: 0 (ok)" "$D/sc.txt"
}
handshake -tls1_2 -sigalgs RSA+SHA256 || die "TLS 1.2 with RSA PKCS#1 v1.5: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA$" "$D/sc.txt" || die "TLS 1.2: not PKCS#1 v1.5: $(grep 'Peer sig' "$D/sc.txt")"
ok "TLS 1.2, RSA PKCS#1 v1.5 (SHA-256) signed in the est-tls token"
handshake -tls1_2 -sigalgs RSA+SHA512 || die "TLS 1.2 with RSA PKCS#1 v1.5 SHA-512"
grep -q "Peer signing digest: SHA512" "$D/sc.txt" || die "TLS 1.2: not SHA-512"
ok "TLS 1.2, RSA PKCS#1 v1.5 (SHA-512)"
handshake -tls1_2 -sigalgs rsa_pss_rsae_sha256 || die "TLS 1.2 with RSA-PSS: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA-PSS" "$D/sc.txt" || die "TLS 1.2: not PSS"
ok "TLS 1.2, RSA-PSS"
handshake -tls1_3 || die "TLS 1.3: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA-PSS" "$D/sc.txt" || die "TLS 1.3: not PSS"
ok "TLS 1.3, RSA-PSS"
if handshake -tls1_2 -sigalgs RSA+SHA1; then
    die "TLS 1.2 with an RSA SHA-1 signature accepted"
fi
ok "SHA-1 signatures refused"

# --- issuance under the RSA CA, through keyline-cad --------------------------------------------
new_csr dev "/CN=rsa-ca-dev/serialNumber=HWR001"
expect_status 200 "enroll under the RSA CA" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/rsa/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/rsa1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
openssl x509 -in "$D/dev.pem" -noout -text | grep -q "Signature Algorithm: sha[0-9]*WithRSAEncryption" ||
    die "not signed with RSA: $(openssl x509 -in "$D/dev.pem" -noout -text | grep 'Signature Algorithm' | head -1)"
openssl x509 -in "$D/dev.pem" -noout -issuer | grep -q "Keyline RSA Field CA" || die "issuer"
expect_status 200 "cacerts of the RSA label" "$EST/rsa/cacerts"
p7_to_pem "$D/out" "$D/rsa-cacerts.pem"
openssl x509 -in "$D/rsa-cacerts.pem" -noout -subject | grep -q "Keyline RSA Field CA" ||
    die "cacerts of label rsa does not start with rsa1"
ok "an RSA-3072 CA issues through keyline-cad (label rsa -> profile est.rsa), cacerts leads with it"
kca revoke --serial "$(serial_of "$D/dev.pem")" --reason keyCompromise >/dev/null
st=$(curl -s -o "$D/rsa1.crl" -w '%{http_code}' "$EST_HTTP/crl/rsa1.crl")
[ "$st" = 200 ] || die "rsa1 CRL: HTTP $st"
openssl crl -inform DER -in "$D/rsa1.crl" -noout -verify -CAfile "$D/rsa1.pem" 2>&1 | grep -q "verify OK" ||
    die "rsa1 CRL signature"
openssl crl -inform DER -in "$D/rsa1.crl" -noout -text | grep -q "$(serial_of "$D/dev.pem")" || die "revoked serial not in the CRL"
openssl ocsp -issuer "$D/rsa1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" -resp_text \
    -CAfile "$D/root1.pem" -verify_other "$D/rsa1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "Response verify OK" "$D/ocsp.txt" || die "OCSP: $(cat "$D/ocsp.txt")"
grep -q ": revoked" "$D/ocsp.txt" || die "OCSP status: $(cat "$D/ocsp.txt")"
grep -q "Responder Id: CN *= *rsa1 OCSP signer" "$D/ocsp.txt" || die "OCSP responder: $(grep Responder "$D/ocsp.txt")"
ok "the RSA CA's CRL (signed by keyline-cad) and OCSP (its delegated signer) answer and verify"
new_csr dev2 "/CN=rsa-tls-dev/serialNumber=HWR002"
expect_status 200 "enroll under the default label over the RSA-keyed TLS" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev2.b64" "$EST/simpleenroll"
if tr '\0' '\n' < "/proc/$EST_PID/environ" | grep -q "^KEYLINE_PIN="; then
    die "keyline-estd has the CA token's PIN in its environment"
fi
est_stop
ok "SIGTERM -> exit 0"
