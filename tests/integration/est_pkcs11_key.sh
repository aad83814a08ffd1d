#!/usr/bin/env bash
# keyline-estd with its TLS server key on a token of its own (tls-key = pkcs11: URI on token
# "est-tls", PIN from tls-key-pin = env:EST_TLS_PIN): GnuTLS loads the module and asks our PIN
# callback, which reads that PIN, never the CA token's (keyline-estd has none; keyline-cad
# signs certificates from the CA token meanwhile). A TLS key on the CA token is refused at
# start-up, and so is a missing tls-key-pin.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_token_tls_key est-tls ecdsa --curve secp256r1
est_write_conf
est_start
grep -q "TLS key pkcs11:token=est-tls;object=est-tls;type=private on token est-tls" "$D/estd.log" ||
    die "start-up log does not name the TLS key's token"
ok "started with the TLS key on its own token"
for v in 1.2 1.3; do
    curl -s --cacert "$D/root1.pem" --tlsv$v --tls-max $v -o "$D/out" "$EST_URL/healthz" || die "TLS $v handshake"
    grep -qx ok "$D/out" || die "TLS $v: healthz body"
done
ok "TLS 1.2 and 1.3 handshakes signed in the est-tls token"
new_csr dev "/CN=p11-dev/serialNumber=HWP001"
expect_status 200 "enroll while keyline-cad signs from the CA token" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
if tr '\0' '\n' < "/proc/$EST_PID/environ" | grep -q "^KEYLINE_PIN="; then
    die "keyline-estd has the CA token's PIN in its environment"
fi
est_stop
ok "SIGTERM -> exit 0"

# refused at start-up: the TLS key on the CA token; a token PIN it does not have
cad_start
sed -i "s|^tls-key = .*|tls-key = $KL_TOKEN_URI;object=est-tls-on-ca;type=private|" "$KL_CONF"
rc=0
env -u KEYLINE_PIN "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/ca-token.err" || rc=$?
[ "$rc" = 2 ] || die "TLS key on the CA token: exit $rc, expected 2 ($(cat "$D/ca-token.err"))"
grep -q "tls-key is a key on the CA token (token=keyline-test): keyline-estd holds no CA PIN" "$D/ca-token.err" ||
    die "CA-token refusal: $(cat "$D/ca-token.err")"
ok "a TLS key on the CA token is refused (exit 2, with the reason)"
sed -i -e "s|^tls-key = .*|tls-key = $EST_TLS_KEY|" -e '/^tls-key-pin = /d' "$KL_CONF"
rc=0
env -u KEYLINE_PIN "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/nopin.err" || rc=$?
[ "$rc" != 0 ] || die "TLS key without tls-key-pin: started"
grep -q "tls-key-pin is not set" "$D/nopin.err" || die "no-PIN message: $(cat "$D/nopin.err")"
if grep -q -e "$EST_TLS_PIN" "$D/nopin.err" "$D/estd.log"; then
    die "a PIN appears in the log"
fi
ok "without tls-key-pin: refused at start-up, naming the key"
cad_stop
