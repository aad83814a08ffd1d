#!/usr/bin/env bash
# Handshakes and passwords (issue 17 item 6):
#   - TLS session resumption with tickets: openssl s_client -sess_out/-sess_in (TLS 1.3 and
#     1.2) and gnutls-cli --resume report the second connection as resumed;
#   - a resumed session still authenticates by its client certificate (GnuTLS keeps the
#     peer's chain in the ticket) and is still checked on every request: an enrollment over a
#     resumed session succeeds, and after the IDevID is revoked the same resumed session is
#     refused;
#   - HTTP Basic over keep-alive: the second request with the same header is not hashed again
#     (keyline-estd -v says so), a wrong password on that connection is still refused, and after
#     the password file is reloaded (SIGHUP) the remembered credential is verified again: the
#     old password is refused on the same connection;
#   - [est] ticket-key-lifetime: no ticket taken after its master key's lifetime (monotonic
#     clock), none issued at 0, above 6 h refused.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
cad_start
"$BIN/keyline-estd" -v -c "$KL_CONF" 2>>"$D/estd.log" &
EST_PID=$!
wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"

# --- resumption
printf 'GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' > "$D/get.req"
sclient() { # sclient OUT [args]: one connection sending get.req
    local out=$1
    shift
    openssl s_client -connect "127.0.0.1:$EST_PORT" -CAfile "$D/root1.pem" -ign_eof "$@" \
        < "${REQ:-$D/get.req}" > "$out" 2>&1 || true
}
for v in tls1_3 tls1_2; do
    sclient "$D/$v-1.txt" "-$v" -sess_out "$D/$v.sess"
    grep -q "^New, " "$D/$v-1.txt" || die "$v first connection: $(head -30 "$D/$v-1.txt")"
    sclient "$D/$v-2.txt" "-$v" -sess_in "$D/$v.sess"
    grep -q "^Reused, " "$D/$v-2.txt" || die "$v: the second connection did not resume: $(grep -E '^(New|Reused)' "$D/$v-2.txt")"
    grep -q "HTTP/1.1 200" "$D/$v-2.txt" || die "$v: no answer on the resumed session"
    ok "$v: openssl s_client -sess_in resumed the session (Reused) and was answered"
done
timeout 20 gnutls-cli --x509cafile "$D/root1.pem" --resume -p "$EST_PORT" 127.0.0.1 < /dev/null \
    > "$D/gnutls.txt" 2>&1 || true
grep -q "This is a resumed session" "$D/gnutls.txt" || die "gnutls-cli --resume: $(cat "$D/gnutls.txt")"
ok "gnutls-cli --resume: resumed session"

# --- client certificates on a resumed session
new_csr dev "/CN=resume-dev/serialNumber=HW0001"
body=$(cat "$D/dev.b64")
printf 'POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "${#body}" "$body" > "$D/enroll.req"
REQ=$D/enroll.req sclient "$D/m1.txt" -cert "$D/idev.crt" -key "$D/idev.key" -sess_out "$D/m.sess"
grep -q "HTTP/1.1 200" "$D/m1.txt" || die "mTLS enrollment: $(grep HTTP/ "$D/m1.txt")"
REQ=$D/enroll.req sclient "$D/m2.txt" -cert "$D/idev.crt" -key "$D/idev.key" -sess_in "$D/m.sess"
grep -q "^Reused, " "$D/m2.txt" || die "mTLS session not resumed"
grep -q "HTTP/1.1 200" "$D/m2.txt" || die "enrollment over the resumed session: $(grep HTTP/ "$D/m2.txt")"
ok "enrollment authenticated by the client certificate over a resumed session"
kca revoke --serial "$(serial_of "$D/idev.crt")" --reason keyCompromise > /dev/null 2>&1
REQ=$D/enroll.req sclient "$D/m3.txt" -cert "$D/idev.crt" -key "$D/idev.key" -sess_in "$D/m.sess"
grep -q "^Reused, " "$D/m3.txt" || die "mTLS session not resumed after the revocation"
grep -Eq "HTTP/1.1 (401|403)" "$D/m3.txt" || die "revoked IDevID accepted over a resumed session: $(grep HTTP/ "$D/m3.txt")"
ok "the revoked IDevID is refused over the resumed session ($(grep -o "HTTP/1.1 [0-9]*" "$D/m3.txt"))"

# --- HTTP Basic remembered per connection
PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" "$EST_USER" "$EST_PASS" "$EST_PID" <<'PY'
import os, signal, socket, ssl, subprocess, sys, time
from est_http import basic, enroll_request, read_response
port, d, user, pw, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
f = s.makefile("rb")
body = open(d + "/dev.b64", "rb").read()
def enroll(password):
    s.sendall(enroll_request(body, auth=basic(user, password)))
    return read_response(f)
def remembered():
    return open(d + "/estd.log").read().count("the credential verified earlier on this connection")
assert enroll(pw) == 200, "first Basic request"
assert remembered() == 0, "remembered before a second request"
assert enroll(pw) == 200, "second Basic request"
assert remembered() == 1, "the second request was hashed again (no remembered credential)"
st = enroll(pw + "x")
assert st == 401, "a wrong password on the same connection: %d" % st
assert enroll(pw) == 200 and remembered() == 2, "the right password after a wrong one"
# a new password file: the old password must be verified (and refused) again
h = subprocess.run(["python3", "-c", """
import ctypes, sys
lc = ctypes.CDLL("libcrypt.so.1")
lc.crypt_gensalt.restype = ctypes.c_char_p
lc.crypt.restype = ctypes.c_char_p
print(lc.crypt(b"new-pass", lc.crypt_gensalt(b"$y$", 0, None, 0)).decode())
"""], capture_output=True, text=True, check=True).stdout.strip()
with open(d + "/est.htpasswd", "w") as out:
    out.write("%s:%s\n" % (user, h))
os.kill(pid, signal.SIGHUP)
for _ in range(100):
    if " reloaded: 1 users" in open(d + "/estd.log").read():
        break
    time.sleep(0.05)
else:
    sys.exit("FAIL: keyline-estd did not reload the password file")
st = enroll(pw)
assert st == 401, "the old password after the reload, same connection: %d" % st
assert enroll("new-pass") == 200, "the new password"
print("ok - HTTP Basic: remembered per connection (one hash for two requests), wrong password "
      "still refused, forgotten on reload")
PY

# --- the ticket master key lives ticket-key-lifetime seconds of the monotonic clock: an old
# ticket is never taken again, whatever the wall clock says (a clock set back into an old
# ticket's 6 h revived it before); 0 turns tickets off
estd_with() { # estd_with LIFETIME: keyline-estd again, [est] ticket-key-lifetime = LIFETIME
    term_wait "$EST_PID" keyline-estd
    sed -i '/^ticket-key-lifetime = /d' "$KL_CONF"
    echo "ticket-key-lifetime = $1" >> "$KL_CONF"
    "$BIN/keyline-estd" -v -c "$KL_CONF" 2>>"$D/estd.log" &
    EST_PID=$!
    wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
}
estd_with 3
for v in tls1_3 tls1_2; do
    sclient "$D/k$v-1.txt" "-$v" -sess_out "$D/k$v.sess"
    sclient "$D/k$v-2.txt" "-$v" -sess_in "$D/k$v.sess"
    grep -q "^Reused, " "$D/k$v-2.txt" || die "$v: not resumed within ticket-key-lifetime"
done
sleep 3.5
for v in tls1_3 tls1_2; do
    sclient "$D/k$v-3.txt" "-$v" -sess_in "$D/k$v.sess"
    grep -q "^New, " "$D/k$v-3.txt" || die "$v: a ticket taken after its key's lifetime: $(grep -E '^(New|Reused)' "$D/k$v-3.txt")"
    grep -q "HTTP/1.1 200" "$D/k$v-3.txt" || die "$v: no answer after the full handshake"
done
[ "$(grep -c 'TLS session ticket key drawn (ticket-key-lifetime = 3s)' "$D/estd.log")" -ge 2 ] ||
    die "the ticket key was not drawn again: $(grep 'ticket key' "$D/estd.log")"
ok "ticket-key-lifetime = 3: resumed at once, a full handshake 3.5 s later (TLS 1.3 and 1.2)"
estd_with 0
sclient "$D/off13.txt" -tls1_3 -sess_out "$D/off13.sess"
grep -q "HTTP/1.1 200" "$D/off13.txt" || die "ticket-key-lifetime = 0: no answer"
[ ! -s "$D/off13.sess" ] || die "ticket-key-lifetime = 0: a TLS 1.3 ticket was issued"
sclient "$D/off12-1.txt" -tls1_2 -sess_out "$D/off12.sess"
grep -q "TLS session ticket:" "$D/off12-1.txt" && die "ticket-key-lifetime = 0: a TLS 1.2 ticket"
sclient "$D/off12-2.txt" -tls1_2 -sess_in "$D/off12.sess"
grep -q "^New, " "$D/off12-2.txt" || die "ticket-key-lifetime = 0: TLS 1.2 resumed"
ok "ticket-key-lifetime = 0: no ticket issued (TLS 1.3), no session resumed (TLS 1.2)"
sed 's/^ticket-key-lifetime = 0$/ticket-key-lifetime = 21601/' "$KL_CONF" > "$D/big.conf"
if timeout 10 "$BIN/keyline-estd" -c "$D/big.conf" > "$D/big.out" 2>&1; then
    die "ticket-key-lifetime = 21601 accepted"
fi
grep -q "ticket-key-lifetime" "$D/big.out" || die "the refusal: $(cat "$D/big.out")"
ok "ticket-key-lifetime above 6 h refused: $(head -1 "$D/big.out")"
est_stop
