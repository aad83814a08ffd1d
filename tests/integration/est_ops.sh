#!/usr/bin/env bash
# keyline-estd operations (issue 12 item 6): SIGHUP reloads the TLS certificate and key (new
# connections present the new serial; a broken key is refused, logged, and the old certificate
# stays in use), the access log names the client address (127.0.0.1, and ::1 where the machine
# has IPv6 loopback), [est] metrics-listen serves /metrics (with keyline_build_info) and
# /healthz only, and `promtool check metrics` (Debian's prometheus package, scripts/deps)
# accepts the exposition.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

command -v promtool >/dev/null ||
    die "promtool not found: scripts/deps installs Debian's prometheus package, which has it"

# served_serial: the serial of the certificate a new TLS connection to the EST listener presents
served_serial() {
    openssl s_client -connect "127.0.0.1:$EST_PORT" -CAfile "$D/root1.pem" </dev/null 2>/dev/null |
        openssl x509 -noout -serial | cut -d= -f2
}

# wait_log TEXT: until estd.log has a line with TEXT (5 s at most)
wait_log() {
    for _ in $(seq 1 50); do
        grep -qF -- "$1" "$D/estd.log" && return 0
        sleep 0.1
    done
    die "no log line with '$1'"
}

est_setup_ca
METRICS_PORT=$(free_port)
est_write_conf "metrics-listen = 127.0.0.1:$METRICS_PORT"
while [ "$METRICS_PORT" = "$EST_PORT" ] || [ "$METRICS_PORT" = "$EST_HTTP_PORT" ]; do
    METRICS_PORT=$(free_port)
    sed -i "s/^metrics-listen = .*/metrics-listen = 127.0.0.1:$METRICS_PORT/" "$KL_CONF"
done
METRICS="http://127.0.0.1:$METRICS_PORT"
est_start

# --- SIGHUP with a new certificate and key --------------------------------------------------
old=$(serial_of "$D/est-server.crt")
[ "$(served_serial)" = "$old" ] || die "first certificate not served (got '$(served_serial)')"
new_csr est-server2 "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost"
kca issue --issuer field1 --template est-server --csr "$D/est-server2.csr" --out "$D/est-server2.crt" >/dev/null
new=$(serial_of "$D/est-server2.crt")
[ "$new" != "$old" ] || die "the second certificate has the first one's serial"
# an idle keep-alive connection opened before the swap (its credentials stay alive)
exec 3<> "/dev/tcp/127.0.0.1/$EST_PORT"
cp "$D/est-server.pem" "$D/est-server1.pem"
cp "$D/est-server.key" "$D/est-server1.key"
cat "$D/est-server2.crt" "$D/field1.pem" > "$D/est-server.pem"
cp "$D/est-server2.key" "$D/est-server.key"
kill -HUP "$EST_PID"
wait_log "(serial $new) and key reloaded"
[ "$(served_serial)" = "$new" ] || die "after SIGHUP: serial '$(served_serial)', expected $new"
expect_status 200 "healthz over the new certificate (verified by curl)" "$EST_URL/healthz"
exec 3<&-
ok "SIGHUP: new connections present the new certificate (serial $new)"

# --- SIGHUP with a key that does not match, then with one that does not parse ---------------
cp "$D/est-server1.key" "$D/est-server.key" # the first key, the second certificate
kill -HUP "$EST_PID"
wait_log "does not match the certificate"
grep -q 'TLS certificate and key not reloaded, the previous ones stay in use' "$D/estd.log" ||
    die "no log line says the previous certificate stays"
[ "$(served_serial)" = "$new" ] || die "after a mismatched key: serial '$(served_serial)', expected $new"
ok "SIGHUP with a mismatched key: refused, logged, serial $new still served"
printf -- '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n' > "$D/est-server.key"
n=$(grep -c 'not reloaded' "$D/estd.log")
kill -HUP "$EST_PID"
for _ in $(seq 1 50); do
    [ "$(grep -c 'not reloaded' "$D/estd.log")" -gt "$n" ] && break
    sleep 0.1
done
[ "$(grep -c 'not reloaded' "$D/estd.log")" -gt "$n" ] || die "no log line for the broken key"
grep 'not reloaded' "$D/estd.log" | tail -n 1 | grep -q 'est-server.key' ||
    die "the log line does not name the key file"
[ "$(served_serial)" = "$new" ] || die "after a broken key: serial '$(served_serial)', expected $new"
chmod 000 "$D/est-server.key"
kill -HUP "$EST_PID"
for _ in $(seq 1 50); do
    [ "$(grep -c 'not reloaded' "$D/estd.log")" -gt "$((n + 1))" ] && break
    sleep 0.1
done
if [ "$(id -u)" != 0 ]; then
    [ "$(grep -c 'not reloaded' "$D/estd.log")" -gt "$((n + 1))" ] || die "no log line for an unreadable key"
fi
[ "$(served_serial)" = "$new" ] || die "after an unreadable key: serial '$(served_serial)'"
chmod 600 "$D/est-server.key"
cp "$D/est-server2.key" "$D/est-server.key"
ok "SIGHUP with a broken or unreadable key: refused, logged, serial $new still served"

# --- the access log names the client ---------------------------------------------------------
curl -s --cacert "$D/root1.pem" -o /dev/null "$EST_URL/healthz?ops-v4"
grep -q ' 127\.0\.0\.1 GET /healthz 200 ' "$D/estd.log" || die "access log line without 127.0.0.1"
ok "access log: 127.0.0.1 GET /healthz 200"

# --- the metrics listener --------------------------------------------------------------------
st=$(curl -s -o "$D/metrics.txt" -w '%{http_code}' "$METRICS/metrics")
[ "$st" = 200 ] || die "metrics listener /metrics: HTTP $st"
grep -Eq '^keyline_build_info\{version="[^"]+",revision="[^"]+"\} 1$' "$D/metrics.txt" ||
    die "no keyline_build_info in /metrics"
ver=$("$BIN/keyline-estd" --version | awk '{print $2}')
grep -q "^keyline_build_info{version=\"$ver\"," "$D/metrics.txt" || die "keyline_build_info version is not $ver"
grep -q '^keyline_est_requests_total{endpoint="healthz",code="200"} [1-9]' "$D/metrics.txt" ||
    die "metrics listener: not the server's counters"
st=$(curl -s -o /dev/null -w '%{http_code}' "$METRICS/healthz")
[ "$st" = 200 ] || die "metrics listener /healthz: HTTP $st"
for p in /.well-known/est/cacerts /crl/field1.crl /ocsp /; do
    st=$(curl -s -o /dev/null -w '%{http_code}' "$METRICS$p")
    [ "$st" = 404 ] || die "metrics listener $p: HTTP $st, expected 404"
done
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data x "$METRICS/.well-known/est/simpleenroll")
[ "$st" = 404 ] || die "metrics listener simpleenroll: HTTP $st, expected 404"
# plain HTTP only there, and /metrics stays on the TLS listener (compatibility)
curl -s --cacert "$D/root1.pem" -o /dev/null "https://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null &&
    die "metrics listener speaks TLS"
expect_status 200 "/metrics still on the TLS listener" "$EST_URL/metrics"
grep -q '^keyline_build_info{' "$D/out" || die "no keyline_build_info on the TLS listener"
ok "metrics listener: /metrics (keyline_build_info) and /healthz, 404 for the rest"

# --- promtool --------------------------------------------------------------------------------
promtool check metrics < "$D/metrics.txt" > "$D/promtool.out" 2>&1 ||
    { cat "$D/promtool.out" >&2; die "promtool check metrics"; }
ok "promtool check metrics"

est_stop
ok "SIGTERM -> exit 0"

# --- IPv6: the access log names ::1 ----------------------------------------------------------
if python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
    P6=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0)); print(s.getsockname()[1])')
    sed -i -e "s/^metrics-listen = .*/metrics-listen = [::1]:$P6/" "$KL_CONF"
    est_start
    curl -sg -o /dev/null "http://[::1]:$P6/healthz" || die "healthz on [::1]:$P6"
    grep -q ' ::1 GET /healthz 200 ' "$D/estd.log" || die "access log line without ::1"
    ok "access log: ::1 GET /healthz 200"
    est_stop
else
    echo "no IPv6 loopback here: the ::1 access log check is not run"
fi
