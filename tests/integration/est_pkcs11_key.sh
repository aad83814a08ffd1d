#!/usr/bin/env bash
# keyline-estd with its TLS server key in the token (tls-key = pkcs11: URI): GnuTLS loads the
# module, asks our PIN callback (the [hsm] pin source), and serves TLS 1.2 and 1.3 with it,
# while libp11 (ca/) signs certificates from the same token in the same process.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
export GNUTLS_PIN=$KEYLINE_PIN
p11tool --provider "$KL_MODULE" --login --generate-privkey ecdsa --curve secp256r1 \
    --label est-tls "$KL_TOKEN_URI" >/dev/null 2>&1 || die "p11tool keygen"
key_uri="$KL_TOKEN_URI;object=est-tls;type=private"
cat > "$D/tls.tmpl" <<EOF
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
EOF
certtool --provider "$KL_MODULE" --generate-request --load-privkey "$key_uri" \
    --template "$D/tls.tmpl" --outfile "$D/tls.csr" >/dev/null 2>&1 || die "certtool CSR with the token key"
unset GNUTLS_PIN
kca issue --issuer field1 --template est-server --csr "$D/tls.csr" --out "$D/tls.crt" >/dev/null
cat "$D/tls.crt" "$D/field1.pem" > "$D/est-server.pem"
EST_TLS_KEY="$key_uri" est_write_conf
est_start
ok "started with the TLS key in the token"
for v in 1.2 1.3; do
    curl -s --cacert "$D/root1.pem" --tlsv$v --tls-max $v -o "$D/out" "$EST_URL/healthz" || die "TLS $v handshake"
done
ok "TLS 1.2 and 1.3 handshakes signed in the token"
new_csr dev "/CN=p11-dev/serialNumber=HWP001"
expect_status 200 "enroll while the token also serves TLS" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
est_stop
ok "SIGTERM -> exit 0"
