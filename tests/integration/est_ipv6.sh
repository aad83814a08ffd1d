#!/usr/bin/env bash
# keyline-estd on IPv6 loopback: listen = [::1]:PORT and http-listen = [::1]:PORT2. The server
# certificate carries IP:::1 in its subjectAltName, so clients verify it normally:
# /healthz, cacerts, an enrollment with Basic, one with the channel binding (est_cb_client over
# IPv6), the plain-HTTP listener, the access log. Skipped (exit 0) on a machine without ::1.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

if ! python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
    echo "skip: no IPv6 loopback (::1) on this machine"
    exit 0
fi
free_port6() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0)); print(s.getsockname()[1])'
}

est_setup_ca
# the est-server template requires a DNS and an IP name; this one also names ::1
new_csr est-server "/CN=localhost" -addext "subjectAltName=IP:::1,IP:127.0.0.1,DNS:localhost"
kca issue --issuer field1 --template est-server --csr "$D/est-server.csr" --out "$D/est-server.crt" >/dev/null
cat "$D/est-server.crt" "$D/field1.pem" > "$D/est-server.pem"
openssl x509 -in "$D/est-server.crt" -noout -ext subjectAltName | grep -q 'IP Address:0:0:0:0:0:0:0:1' ||
    die "est-server certificate lacks IP:::1"

est_write_conf
P6=$(free_port6)
H6=$(free_port6)
while [ "$H6" = "$P6" ]; do H6=$(free_port6); done
sed -i -e "s/^listen = .*/listen = [::1]:$P6/" -e "s/^http-listen = .*/http-listen = [::1]:$H6/" "$KL_CONF"
grep -qx "listen = \[::1\]:$P6" "$KL_CONF" || die "config not rewritten"
EST_URL="https://[::1]:$P6"
EST_HTTP="http://[::1]:$H6"
EST="$EST_URL/.well-known/est"

# est_start, with curl -g (no URL globbing: the brackets are an IPv6 literal)
cad_start
est_run
for i in $(seq 1 100); do
    curl -sfg --cacert "$D/root1.pem" "$EST_URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$EST_PID" 2>/dev/null || die "keyline-estd exited during start-up"
    [ "$i" -lt 100 ] || die "keyline-estd did not answer /healthz on [::1]:$P6"
    sleep 0.1
done

expect_status 200 "healthz on [::1] (server certificate verified for IP ::1)" -g "$EST_URL/healthz"
grep -qx ok "$D/out" || die "healthz body"
# the address really is ::1: curl reports the peer address it connected to
peer=$(curl -sg --cacert "$D/root1.pem" -o /dev/null -w '%{remote_ip}' "$EST_URL/healthz")
[ "$peer" = "::1" ] || die "connected to '$peer', expected ::1"
# only ::1 is served: nothing listens on 127.0.0.1 at that port
if curl -sk --max-time 5 -o /dev/null "https://127.0.0.1:$P6/healthz" 2>/dev/null; then
    die "something answers on 127.0.0.1:$P6"
fi
ok "listening on ::1 only"

expect_status 200 "cacerts over IPv6" -g "$EST/cacerts"
new_csr v6dev "/CN=v6-device/serialNumber=HWV601"
expect_status 200 "simpleenroll over IPv6 (Basic)" -g -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/v6dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/v6dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/v6dev.pem" >/dev/null || die "v6dev does not verify"
new_csr v6idev "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "simpleenroll over IPv6 (IDevID)" -g --cert "$D/idev.crt" --key "$D/idev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/v6idev.b64" "$EST/simpleenroll"
# channel binding over IPv6 (channel-binding = optional here): the right tls-exporter passes,
# a wrong one does not
if [ -x "$BIN/est_cb_client" ]; then
    for m in right:200 wrong:403; do
        got=$(timeout 30 "$BIN/est_cb_client" --host ::1 --port "$P6" --cafile "$D/root1.pem" \
            --user "$EST_USER" --pass "$EST_PASS" --cb "${m%%:*}" --out "$D/out" 2>"$D/cb.err") ||
            die "est_cb_client over IPv6: $(cat "$D/cb.err")"
        [ "$got" = "${m#*:}" ] || die "channel binding ${m%%:*} over IPv6: HTTP $got ($(cat "$D/out"))"
        ok "channel binding (${m%%:*}) over IPv6 -> $got"
    done
fi

# the plain-HTTP listener on [::1]
st=$(curl -sg -o "$D/out" -w '%{http_code}' "$EST_HTTP/healthz") || true
[ "$st" = 200 ] || die "plain healthz on [::1]:$H6: HTTP $st"
ok "plain-HTTP listener on [::1]"
st=$(curl -sg -o "$D/out" -w '%{http_code}' "$EST_HTTP/crl/field1.crl") || true
[ "$st" = 200 ] || die "CRL on [::1]:$H6: HTTP $st"
openssl crl -inform DER -in "$D/out" -noout || die "CRL over IPv6 does not parse"
ok "CRL over the IPv6 plain-HTTP listener"

# access log: the requests arrived on this listener
grep -q 'POST /.well-known/est/simpleenroll 200 .* basic:bootstrap' "$D/estd.log" || die "access log lacks the IPv6 enrollment"
est_stop
ok "SIGTERM -> exit 0"
