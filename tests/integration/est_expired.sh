#!/usr/bin/env bash
# keyline-estd: expired client certificates are refused (401). LDevIDs are valid 365 days, so
# the server runs under libfaketime 400 days ahead (the server's own TLS certificate, also
# 365 days, has then expired too: the clients here skip server verification with curl -k,
# which is fine for checking what the *server* accepts).
#   1. keep-alive: a connection authenticated with a valid LDevID, then the server's clock
#      jumps 400 days (FAKETIME_TIMESTAMP_FILE): the next request on the same TLS session -> 401
#      (the per-connection result is kept only until the certificate's notAfter)
#   2. keyline-estd 400 days ahead (libfaketime, FAKETIME=+400d): simplereenroll with the expired LDevID -> 401,
#      while the IDevID (validity "forever") and Basic still enroll (200): the refusal is about
#      the certificate, not a server broken by faketime
#   3. the CA's per-request view (ca_cert_status_check, via tests/tools/kl_cert_status): "ok"
#      today, "has expired" 400 days ahead
# keyline-cad (which issues, and checks client certificates for keyline-estd) runs on the same
# clock as keyline-estd in each part.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

command -v faketime >/dev/null || die "faketime not installed (scripts/deps installs it)"
. "$KL_SRC/tests/lib/faketime.sh"
kl_libfaketime || die "no libfaketime"
STATUS=$BIN/kl_cert_status
[ -x "$STATUS" ] || die "$STATUS not built"

est_setup_ca
est_write_conf

# est_start_with PREFIX...: like est_start, but run keyline-cad and keyline-estd through PREFIX
# (env/faketime) and probe /healthz without verifying the server (its certificate may have
# expired on the fake clock)
est_start_with() {
    cad_start "$@"
    est_run "$@"
    for _ in $(seq 1 100); do
        if curl -sfk "$EST_URL/healthz" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$EST_PID" 2>/dev/null || die "keyline-estd exited during start-up"
        sleep 0.1
    done
    die "keyline-estd did not answer /healthz"
}
kexpect() { # like expect_status, without verifying the server certificate
    local want=$1 what=$2 got
    shift 2
    got=$(curl -sk -o "$D/out" -w '%{http_code}' "$@") || true
    [ "$got" = "$want" ] || die "$what: HTTP $got, expected $want ($(head -c 300 "$D/out" 2>/dev/null))"
    ok "$what -> $want"
}
pkcs10=(-H "Content-Type: application/pkcs10")

# --- 1. a clock that moves while a keep-alive connection is open ------------------------------
echo "+0d" > "$D/faketime"
est_start_with env LD_PRELOAD="$LIBFT" FAKETIME_TIMESTAMP_FILE="$D/faketime" FAKETIME_NO_CACHE=1 \
    FAKETIME_DONT_FAKE_MONOTONIC=1
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "LDevID from the IDevID (today)" --cert "$D/idev.crt" --key "$D/idev.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/ldev.pem"
ldev_serial=$(serial_of "$D/ldev.pem")
new_csr ldev2 "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "simplereenroll with the LDevID (today)" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev2.b64" "$EST/simplereenroll"
p7_to_pem "$D/out" "$D/ldev2.pem"
# expiry of LDevIDs: 365 days (the assumption this test rests on)
na=$(date -d "$(openssl x509 -in "$D/ldev2.pem" -noout -enddate | cut -d= -f2)" +%s)
left=$(( (na - $(date +%s)) / 86400 ))
[ "$left" -ge 360 ] && [ "$left" -le 366 ] || die "LDevID valid $left days, this test assumes 365"

ka_out=$(PYTHONPATH="$KL_SRC/tests/lib" timeout 60 python3 - "$EST_PORT" "$D" <<'PY'
import socket, ssl, sys
import est_http
port, d = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE   # the server certificate expires too, on the server's clock
ctx.load_cert_chain(d + "/ldev2.pem", d + "/ldev2.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
body = open(d + "/ldev2.b64", "rb").read()
f = s.makefile("rb")
def reenroll():
    s.sendall(est_http.enroll_request(body, op="simplereenroll"))
    return est_http.read_response(f)
got = [reenroll(), reenroll()]
open(d + "/faketime", "w").write("+400d\n")
got += [reenroll(), reenroll()]
print(" ".join(map(str, got)))
PY
) || die "keep-alive client failed"
[ "$ka_out" = "200 200 401 401" ] || die "keep-alive across expiry: got $ka_out, expected 200 200 401 401"
ok "LDevID expires during a keep-alive connection -> next request 401"
grep -q "client certificate .*refused: .*expired" "$D/estd.log" || die "log does not say the client certificate expired: $(grep -i refused "$D/estd.log" | tail -n 4)"
est_stop
echo "+0d" > "$D/faketime"

# --- 2. keyline-estd 400 days ahead -----------------------------------------------------------
# libfaketime preloaded directly (not through the faketime wrapper), so that $EST_PID is the
# server itself and est_stop's SIGTERM reaches it; the same as `faketime '+400 days'`
est_start_with env LD_PRELOAD="$LIBFT" FAKETIME="+400d" FAKETIME_DONT_FAKE_MONOTONIC=1
log_from=$(( $(wc -l < "$D/estd.log") + 1 ))
# the server really runs 400 days ahead: the Date header of its answers says so
curl -sk -D "$D/hdr" -o /dev/null "$EST_URL/healthz" || die "healthz on the fake clock"
srv_date=$(sed -n 's/^[Dd]ate: *//p' "$D/hdr" | tr -d '\r')
[ -n "$srv_date" ] || die "no Date header"
ahead=$(( ($(date -d "$srv_date" +%s) - $(date +%s)) / 86400 ))
[ "$ahead" -ge 399 ] && [ "$ahead" -le 401 ] || die "server clock is $ahead days ahead, expected 400"
ok "server clock is 400 days ahead ($srv_date)"
new_csr ldev3 "/CN=sensor-0001/serialNumber=HW0001"
st=$(curl -sk -D "$D/hdr" -o "$D/out" -w '%{http_code}' --cert "$D/ldev2.pem" --key "$D/ldev2.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev3.b64" "$EST/simplereenroll") || true
[ "$st" = 401 ] || die "expired LDevID, simplereenroll: HTTP $st, expected 401 ($(head -c 300 "$D/out"))"
grep -qi '^www-authenticate: Basic' "$D/hdr" || die "401 without WWW-Authenticate"
ok "expired LDevID, simplereenroll -> 401"
kexpect 401 "expired LDevID, simpleenroll" --cert "$D/ldev2.pem" --key "$D/ldev2.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev3.b64" "$EST/simpleenroll"
tail -n +"$log_from" "$D/estd.log" > "$D/estd2.log"
grep -q 'client certificate .*refused: .*expired' "$D/estd2.log" ||
    die "log does not say the client certificate expired"
ok "server log: client certificate refused as expired"
# controls: the server works on the fake clock, for certificates that are still valid there
kexpect 200 "IDevID (validity forever), simpleenroll" --cert "$D/idev.crt" --key "$D/idev.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev3.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/ldev3.pem"
nb=$(date -d "$(openssl x509 -in "$D/ldev3.pem" -noout -startdate | cut -d= -f2)" +%s)
[ $(( (nb - $(date +%s)) / 86400 )) -ge 399 ] || die "certificate issued on the fake clock is not dated 400 days ahead"
kexpect 200 "the new LDevID (issued on the fake clock), simplereenroll" --cert "$D/ldev3.pem" --key "$D/ldev3.key" \
    "${pkcs10[@]}" --data-binary @"$D/ldev3.b64" "$EST/simplereenroll"
new_csr basic "/CN=bootstrap-x/serialNumber=HWX001"
kexpect 200 "Basic, simpleenroll" -u "$EST_USER:$EST_PASS" "${pkcs10[@]}" --data-binary @"$D/basic.b64" "$EST/simpleenroll"
# an expired certificate does not hide good Basic credentials (simpleenroll)
kexpect 200 "expired LDevID + good Basic, simpleenroll" --cert "$D/ldev2.pem" --key "$D/ldev2.key" \
    -u "$EST_USER:$EST_PASS" "${pkcs10[@]}" --data-binary @"$D/basic.b64" "$EST/simpleenroll"
est_stop

# --- 3. the CA's view (ca_cert_status_check) --------------------------------------------------
out=$("$STATUS" "$KL_CONF" "$ldev_serial") || die "status today: $out"
[ "$out" = ok ] || die "status today: $out"
ok "store: LDevID ok today"
rc=0
out=$(faketime '+400 days' "$STATUS" "$KL_CONF" "$ldev_serial") || rc=$?
[ "$rc" = 1 ] || die "status in 400 days: exit $rc ($out), expected 1"
case $out in *"has expired"*) ;; *) die "status in 400 days: $out" ;; esac
ok "store: LDevID in 400 days -> $out"
out=$(faketime '+400 days' "$STATUS" "$KL_CONF" "$(serial_of "$D/idev.crt")") || die "IDevID status in 400 days: $out"
[ "$out" = ok ] || die "IDevID status in 400 days: $out"
ok "store: IDevID (forever) in 400 days -> ok"
