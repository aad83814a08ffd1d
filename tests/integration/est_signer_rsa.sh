#!/usr/bin/env bash
# An RSA-3072 TLS key in the token, used through the signer processes ([est] signer = process):
# GnuTLS's sign callback asks a signer for RSA PKCS#1 v1.5 (TLS 1.2) and RSA-PSS (TLS 1.2
# rsa_pss_rsae_*, TLS 1.3) signatures; openssl s_client checks each handshake.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_token_tls_key est-tls-rsa rsa --bits 3072
est_write_conf
est_start
grep -q "signer processes" "$D/estd.log" || die "not in signer = process mode"
ok "started with an RSA TLS key in the token, through the signers"

# handshake ARGS... : s_client output in $D/sc.txt, fails unless the chain verifies
handshake() {
    openssl s_client -connect "127.0.0.1:$EST_PORT" -CAfile "$D/root1.pem" -verify_return_error \
        "$@" </dev/null >"$D/sc.txt" 2>&1 || return 1
    grep -q "Verify return code: 0 (ok)" "$D/sc.txt"
}
handshake -tls1_2 -sigalgs RSA+SHA256 || die "TLS 1.2 with RSA PKCS#1 v1.5: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA$" "$D/sc.txt" || die "TLS 1.2: not PKCS#1 v1.5: $(grep 'Peer sig' "$D/sc.txt")"
ok "TLS 1.2, RSA PKCS#1 v1.5 (SHA-256) signed by a signer"
handshake -tls1_2 -sigalgs RSA+SHA512 || die "TLS 1.2 with RSA PKCS#1 v1.5 SHA-512"
grep -q "Peer signing digest: SHA512" "$D/sc.txt" || die "TLS 1.2: not SHA-512"
ok "TLS 1.2, RSA PKCS#1 v1.5 (SHA-512)"
handshake -tls1_2 -sigalgs rsa_pss_rsae_sha256 || die "TLS 1.2 with RSA-PSS: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA-PSS" "$D/sc.txt" || die "TLS 1.2: not PSS"
ok "TLS 1.2, RSA-PSS signed by a signer"
handshake -tls1_3 || die "TLS 1.3: $(tail -5 "$D/sc.txt")"
grep -q "Peer signature type: RSA-PSS" "$D/sc.txt" || die "TLS 1.3: not PSS"
ok "TLS 1.3, RSA-PSS signed by a signer"
if handshake -tls1_2 -sigalgs RSA+SHA1; then
    die "TLS 1.2 with an RSA SHA-1 signature accepted"
fi
ok "SHA-1 signatures refused"
new_csr dev "/CN=rsa-tls-dev/serialNumber=HWR001"
expect_status 200 "enroll over the RSA-keyed TLS" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll"
if grep -q softhsm "/proc/$EST_PID/maps"; then
    die "the network process has the PKCS#11 module mapped"
fi
est_stop
ok "SIGTERM -> exit 0"
