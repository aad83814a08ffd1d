#!/usr/bin/env bash
# keyline-estd under a revoked issuing CA (issue 10, defect 2). The server runs on while
# keyline-ca revokes field1 in the shared store: the next enrollment is refused (403, naming the
# CA and why, nothing recorded), and /cacerts stops serving field1 once its cached answer is
# older than EST_CACERTS_TTL (60 s; a fresh server shows it at once). Also: a CSR that keyline
# refuses by policy (SHA-1) or as malformed (explicit EC parameters) gets 403 / 400 over EST.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start

enroll() { # STATUS DESCRIPTION BODYFILE
    expect_status "$1" "$2" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$3" "$EST/simpleenroll"
}
cacerts_cns() { # the subjects /cacerts serves, one per line
    expect_status 200 "cacerts" "$EST/cacerts" >/dev/null
    p7_to_pem "$D/out" "$D/cacerts.pem"
    openssl crl2pkcs7 -nocrl -certfile "$D/cacerts.pem" | openssl pkcs7 -print_certs -noout |
        sed -n 's/^subject=.*CN = //p'
}

# CSRs keyline refuses whatever the CA: SHA-1 (policy) and explicit EC parameters (input)
new_csr ec-sha1 "/CN=device-rv0/serialNumber=RV0" -sha1
openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout -out "$D/ecx.key"
openssl req -new -key "$D/ecx.key" -subj "/CN=device-rvx/serialNumber=RVX" -outform DER |
    openssl base64 > "$D/ec-explicit.b64"
enroll 403 "SHA-1 signed CSR" "$D/ec-sha1.b64"
grep -q "SHA-1 is not accepted" "$D/out" || die "SHA-1 refusal body: $(cat "$D/out")"
enroll 400 "CSR with explicit EC parameters" "$D/ec-explicit.b64"
grep -q "RFC 5480" "$D/out" || die "explicit parameters refusal body: $(cat "$D/out")"

new_csr dev1 "/CN=device-rv1/serialNumber=RV1"
enroll 200 "enrollment under field1" "$D/dev1.b64"
cacerts_cns > "$D/cns-before"
grep -qx "Keyline Field CA" "$D/cns-before" || die "cacerts lacks field1 before: $(cat "$D/cns-before")"

kca revoke --serial "$(serial_of "$D/field1.pem")" --reason cACompromise >/dev/null 2>&1
before=$(count_issued)
new_csr dev2 "/CN=device-rv2/serialNumber=RV2"
enroll 403 "enrollment under revoked field1" "$D/dev2.b64"
grep -q "CA 'field1' cannot issue: its certificate .* is revoked (cACompromise)" "$D/out" ||
    die "403 body does not say why: $(cat "$D/out")"
[ "$(count_issued)" = "$before" ] || die "an enrollment under the revoked field1 was recorded"
# renewal and server-side key generation go through the same pipeline
expect_status 403 "serverkeygen under revoked field1" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev2.b64" "$EST/serverkeygen"
[ "$(count_issued)" = "$before" ] || die "a serverkeygen under the revoked field1 was recorded"

# /cacerts: the answer cached before the revocation may live up to EST_CACERTS_TTL; a server
# started now (same store) builds it afresh without field1, with the root and factory1
est_stop
est_start
cacerts_cns > "$D/cns-after"
if grep -qx "Keyline Field CA" "$D/cns-after"; then die "cacerts still serves revoked field1"; fi
grep -qx "Keyline Test Root" "$D/cns-after" || die "cacerts lacks the root: $(cat "$D/cns-after")"
grep -qx "Keyline Factory CA" "$D/cns-after" || die "cacerts lacks factory1: $(cat "$D/cns-after")"
enroll 403 "enrollment under revoked field1 after a restart" "$D/dev2.b64"
ok "revoked field1: enrollment refused at once, /cacerts without it"
est_stop
echo "hostile_est_revoked_ca: all passed"
