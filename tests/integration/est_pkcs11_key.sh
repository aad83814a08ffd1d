#!/usr/bin/env bash
# keyline-estd with its TLS server key in the token (tls-key = pkcs11: URI), serving TLS 1.2
# and 1.3 with it while certificates are signed from the same token. signer = process (the
# default): the key signs through the signer processes; with EST_SIGNER=inline (ctest
# integration.est_pkcs11_key_inline) GnuTLS loads the module and asks our PIN callback.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_token_tls_key est-tls ecdsa --curve secp256r1
est_write_conf
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
