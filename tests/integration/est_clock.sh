#!/usr/bin/env bash
# keyline-estd under clock steps (libfaketime, FAKETIME_TIMESTAMP_FILE rewritten while the
# daemons run; the monotonic clock left alone, as a real step leaves it):
#   1. keyline-estd's clock at 1970-01-01T01:00Z (a host booted without a real-time clock,
#      before NTP answers), keyline-cad's right (its own host): GnuTLS would then encrypt and
#      MAC session tickets with a key of zeros (stek.c: no key for time step 0), so a device
#      could take its own ticket, put another device's (public) certificate in it and resume as
#      that device (it got an LDevID for the other device), and a listener could read a TLS 1.2
#      ticket's master secret. No ticket is issued or resumed then; a full handshake still
#      authenticates; on the right clock resumption works again.
#   2. Both daemons on one clock (one host) stepped back and forth:
#      - keep-alive: a client certificate refused while the clock reads before its notBefore
#        (401) is accepted again on the same connection once the clock is right;
#      - HTTP Basic remembered on a connection: unchanged by steps; a password file reloaded
#        after a step back still forgets it;
#      - a ticket whose session began after the clock (a step back) or longer ago than its
#        lifetime (a step ahead) does not resume, and the full handshake that follows is
#        answered;
#      - a ticket stepped across: still resumed within its lifetime, and the client certificate
#        in it refused once revoked, or once the clock passes its notAfter.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$KL_SRC/tests/lib/faketime.sh"
kl_libfaketime || die "no libfaketime"

est_setup_ca
new_csr idev2 "/CN=sensor-0002/serialNumber=HW0002"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev2.csr" --device-id HW0002 \
    --out "$D/idev2.crt" > /dev/null
est_write_conf
FT=$D/faketime
clock() { echo "$1" > "$FT"; } # every later clock reading of both daemons: real time + $1
faked=(env LD_PRELOAD="$LIBFT" FAKETIME_TIMESTAMP_FILE="$FT" FAKETIME_NO_CACHE=1
    FAKETIME_DONT_FAKE_MONOTONIC=1)
# estd_start: keyline-estd on that clock, -v (it logs a Basic credential remembered)
estd_start() {
    env -u KEYLINE_PIN "${faked[@]}" "$BIN/keyline-estd" -v -c "$KL_CONF" 2>>"$D/estd.log" &
    EST_PID=$!
    for _ in $(seq 1 100); do
        curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz" > /dev/null 2>&1 && return 0
        kill -0 "$EST_PID" 2>/dev/null || die "keyline-estd exited during start-up"
        sleep 0.1
    done
    die "keyline-estd did not answer /healthz"
}

# enroll_req NAME SERIAL: $D/NAME.req, a simpleenroll (Connection: close) of a new CSR
enroll_req() {
    new_csr "$1" "/CN=clock-$1/serialNumber=$2"
    local body
    body=$(cat "$D/$1.b64")
    printf 'POST /.well-known/est/%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "${3:-simpleenroll}" "${#body}" "$body" > "$D/$1.req"
}
# sclient REQ OUT [s_client args]: one connection sending REQ; RES gets "New 200", "Reused 401"...
sclient() {
    local req=$1 out=$2
    shift 2
    openssl s_client -connect "127.0.0.1:$EST_PORT" -CAfile "$D/root1.pem" -ign_eof "$@" \
        < "$req" > "$out" 2>&1 || true
    RES="$(grep -Eo '^(New|Reused)' "$out" | head -1) $(grep -Eo 'HTTP/1.1 [0-9]+' "$out" | head -1 | cut -d' ' -f2)"
}

# --- 1. keyline-estd at 1970, keyline-cad on the right clock
clock "@1970-01-01 01:00:00"
cad_start
estd_start
enroll_req own HW0002
sclient "$D/own.req" "$D/own1.txt" -tls1_2 -cert "$D/idev2.crt" -key "$D/idev2.key" -sess_out "$D/own.sess"
[ "$RES" = "New 200" ] || die "a full handshake at 1970 with HW0002's IDevID: $RES"
ok "keyline-estd's clock at 1970: a full handshake authenticates (keyline-cad checks on its clock)"

# no ticket at all (est_tickets_enable): a TLS 1.2 ticket travels in clear, and under a key of
# zeros it gives a listener the session's master secret, and anyone a ticket to write
openssl sess_id -in "$D/own.sess" -noout -text > "$D/own.sess.txt"
grep -q "Master-Key" "$D/own.sess.txt" || die "no session saved at 1970: $(cat "$D/own.sess.txt")"
! grep -q "TLS session ticket:" "$D/own.sess.txt" ||
    die "a session ticket issued while the clock reads 1970 (GnuTLS's key is zeros then)"
grep -q "TLS session tickets are off until it is right" "$D/estd.log" ||
    die "keyline-estd did not say why tickets are off"
sclient "$D/own.req" "$D/own2.txt" -tls1_2 -sess_in "$D/own.sess" -cert "$D/idev2.crt" -key "$D/idev2.key"
[ "$RES" = "New 200" ] || die "HW0002's session at 1970: $RES, expected New 200 (no resumption)"
ok "while keyline-estd's clock reads 1970 it issues no session ticket and resumes none"

clock "+0"
sclient "$D/own.req" "$D/own3.txt" -tls1_2 -sess_in "$D/own.sess" -cert "$D/idev2.crt" -key "$D/idev2.key"
[ "$RES" = "New 200" ] || die "the 1970 session on the right clock: $RES, expected New 200"
enroll_req right HW0002
sclient "$D/right.req" "$D/r1.txt" -tls1_2 -cert "$D/idev2.crt" -key "$D/idev2.key" -sess_out "$D/right.sess"
sclient "$D/right.req" "$D/r2.txt" -tls1_2 -sess_in "$D/right.sess"
[ "$RES" = "Reused 200" ] || die "resumption on the right clock: $RES, expected Reused 200"
ok "the right clock again: the 1970 session does not resume (New 200), a new one does (Reused 200)"
term_wait "$EST_PID" keyline-estd
cad_stop

# --- 2. both daemons on one clock, two days ahead (the certificates above stay valid a step back)
clock "+2d"
cad_start "${faked[@]}"
estd_start

# an LDevID for HW0001 (its expiry is stepped past at the end)
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
code=$(curl -s -o "$D/ldev.p7" -w '%{http_code}' --cacert "$D/root1.pem" --cert "$D/idev.crt" \
    --key "$D/idev.key" -H 'Content-Type: application/pkcs10' --data-binary @"$D/ldev.b64" "$EST/simpleenroll")
[ "$code" = 200 ] || die "LDevID for HW0001 two days ahead: $code"
p7_to_pem "$D/ldev.p7" "$D/ldev.crt"

echo "$EST_USER:$(hash_password '$y$' new-pass)" > "$D/est.htpasswd.new"
chmod 600 "$D/est.htpasswd.new"
# keep-alive: HW0001's IDevID; the clock a year back (before its notBefore), then right again.
# HTTP Basic on a connection of its own: remembered across the steps, forgotten by a reload.
PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" "$EST_PID" "$EST_USER" "$EST_PASS" <<'PY'
import os, signal, socket, ssl, sys, time
from est_http import basic, enroll_request, read_response
port, d, pid, user, pw = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def clock(v):
    with open(d + "/faketime", "w") as f:
        f.write(v + "\n")
def conn(cert=None):
    ctx = ssl.create_default_context(cafile=d + "/root1.pem")
    if cert:
        ctx.load_cert_chain(d + "/" + cert + ".crt", d + "/" + cert + ".key")
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    return s, s.makefile("rb")
body = open(d + "/ldev.b64", "rb").read()
def enroll(c, auth=None):
    c[0].sendall(enroll_request(body, auth=auth))
    return read_response(c[1])
dev = conn("idev")
got = [enroll(dev)]
clock("-365d")  # before the IDevID was issued
got.append(enroll(dev))
clock("+2d")
got.append(enroll(dev))
assert got == [200, 401, 200], "keep-alive, clock right / a year back / right: %s" % got
print("ok - keep-alive client certificate: 200, 401 with the clock before its notBefore, 200 "
      "again on the same connection once the clock is right")
boot = conn()
def log():
    with open(d + "/estd.log") as f:
        return f.read()
remembered = lambda: log().count("the credential verified earlier on this connection")
n0 = remembered()
r = [enroll(boot, basic(user, pw))]
for c in ("+402d", "+1d", "+2d"):  # 400 days ahead, a day back, right
    clock(c)
    r.append(enroll(boot, basic(user, pw)))
assert r == [200] * 4 and remembered() == n0 + 3, \
    "Basic across steps: %s, %d remembered" % (r, remembered() - n0)
clock("+1d")
os.replace(d + "/est.htpasswd.new", d + "/est.htpasswd")  # the password changed
os.kill(pid, signal.SIGHUP)
deadline = time.monotonic() + 5
while " reloaded: 1 users" not in log():
    assert time.monotonic() < deadline, "keyline-estd did not reload the password file"
    time.sleep(0.05)
st = enroll(boot, basic(user, pw))
assert st == 401, "the old password after a reload, clock a day back, same connection: %d" % st
clock("+2d")
print("ok - HTTP Basic remembered across clock steps (400 days ahead, a day back), forgotten on "
      "a reload after a step back")
PY

# tickets: one from the clock 2 days ahead, then the clock a day back, then 7 h on from the first
enroll_req t1 HW0002
sclient "$D/t1.req" "$D/t1a.txt" -cert "$D/idev2.crt" -key "$D/idev2.key" -sess_out "$D/t1.sess"
[ "$RES" = "New 200" ] || die "first ticket: $RES"
clock "+1d"
sclient "$D/t1.req" "$D/t1b.txt" -sess_in "$D/t1.sess" -cert "$D/idev2.crt" -key "$D/idev2.key"
[ "$RES" = "New 200" ] || die "a ticket from a day later, the clock set back: $RES, expected New 200"
sclient "$D/t1.req" "$D/t2a.txt" -cert "$D/idev2.crt" -key "$D/idev2.key" -sess_out "$D/t2.sess"
clock "+$((2 * 86400 + 7 * 3600))"
for t in t1 t2; do
    sclient "$D/t1.req" "$D/$t-late.txt" -sess_in "$D/$t.sess" -cert "$D/idev2.crt" -key "$D/idev2.key"
    [ "$RES" = "New 200" ] || die "$t, beyond its 6 h lifetime after a step ahead: $RES, expected New 200"
done
ok "a ticket from after the clock (set back) or past its lifetime (set ahead) does not resume; the full handshake is answered"

# within the lifetime across a step: resumed, then the IDevID revoked
sclient "$D/t1.req" "$D/t3a.txt" -cert "$D/idev2.crt" -key "$D/idev2.key" -sess_out "$D/t3.sess"
clock "+$((2 * 86400 + 9 * 3600))"
sclient "$D/t1.req" "$D/t3b.txt" -sess_in "$D/t3.sess"
[ "$RES" = "Reused 200" ] || die "a ticket 2 h old across a step: $RES, expected Reused 200"
kca revoke --serial "$(serial_of "$D/idev2.crt")" --reason keyCompromise > /dev/null 2>&1
sclient "$D/t1.req" "$D/t3c.txt" -sess_in "$D/t3.sess"
[ "$RES" = "Reused 401" ] || die "revoked IDevID over a resumed session: $RES, expected Reused 401"
ok "a ticket stepped across 2 h: resumed (200); its IDevID revoked: Reused 401"

# the LDevID's ticket from an hour before its notAfter, resumed an hour after it
na=$(date -d "$(openssl x509 -in "$D/ldev.crt" -noout -enddate | cut -d= -f2)" +%s)
clock "+$((na - $(date +%s) - 3600))"
enroll_req l1 HW0001
sclient "$D/l1.req" "$D/l1a.txt" -cert "$D/ldev.crt" -key "$D/ldev.key" -sess_out "$D/l.sess"
[ "$RES" = "New 200" ] || die "simpleenroll with the LDevID an hour before the LDevID's notAfter: $RES"
clock "+$((na - $(date +%s) + 3600))"
sclient "$D/l1.req" "$D/l1b.txt" -sess_in "$D/l.sess"
[ "$RES" = "Reused 401" ] || die "expired LDevID over a resumed session: $RES, expected Reused 401"
ok "an LDevID's ticket resumed after the clock passed its notAfter: Reused 401"
clock "+0"
est_stop
