#!/usr/bin/env bash
# keyline-cad's TCP listener for front ends on other hosts: mutual TLS, the front end's role
# from its certificate (frontend template, subject CN), the certificate checked against the
# store (a revoked front end is refused), no certificate no connection. The client is Python's
# ssl module speaking the CA protocol's frames, so the daemon is not graded by its own client.
source "$KL_SRC/tests/lib/cad_common.sh"
source "$KL_SRC/tests/lib/cad_tls_common.sh"

cad_tls_pki 127.0.0.1 IP:127.0.0.1 est1 rogue revoked
# a device's LDevID whose CSR chose a front end's CN: same CA, clientAuth, but not a front end
key_csr lookalike "/CN=est1.example"
kca issue --issuer field1 --template device-ldevid --csr "$D/lookalike.csr" \
    --out "$D/lookalike.crt" >/dev/null
kca revoke --serial "$(openssl x509 -in "$D/revoked.crt" -noout -serial | cut -d= -f2)" \
    --reason keyCompromise >/dev/null
# a TLS server certificate is not a front end's (no clientAuth)
cp "$D/cad.crt" "$D/server-as-client.crt"; cp "$D/cad.key" "$D/server-as-client.key"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cad_conf "listen = 127.0.0.1:$PORT" "tls-cert = cad-chain.pem" "tls-key = cad.key" \
    "tls-client-ca = client-ca.pem"
cad_role est certs "est1.example, revoked.example, 127.0.0.1"
cad_profile ldevid field1 device-ldevid est
cad_start
cad_tls_ready 127.0.0.1 "$PORT"

key_csr dev "/CN=sensor-0009/serialNumber=HW0009" -outform DER
fe() { python3 "$D/client.py" "$D" "$PORT" "$@"; }

out=$(fe est1 hello)
grep -qx "status=0" <<<"$out" && grep -qx "24=est" <<<"$out" || die "hello as est1: $out"
out=$(fe est1 issue)
grep -qx "cert" <<<"$out" || die "issue over TLS: $out"
openssl x509 -inform DER -in "$D/issued.der" -noout -subject | grep -q "serialNumber *= *HW0009" \
    || die "issued certificate"
kca audit list | grep -q "front end CN=est1.example (cert .*) as est; basic user bootstrap" \
    || die "audit actor: $(kca audit list | tail -2)"
ok "a front end with a frontend certificate gets its role by CN and issues; the audit names it"

out=$(fe rogue hello)
grep -qx "status=0" <<<"$out" || die "rogue hello: $out"
out=$(fe rogue issue)
grep -q "has no role" <<<"$out" || die "rogue issue: $out"
ok "a valid front-end certificate whose CN has no role is refused"

out=$(fe revoked hello)
grep -Eq "closed|tls-refused" <<<"$out" || die "revoked front end: $out"
grep -q "revoked" "$D/cad.log" || die "log does not say why the revoked front end was refused"
ok "a revoked front-end certificate is refused (store check, not just the chain)"

out=$(fe lookalike hello)
grep -Eq "closed|tls-refused" <<<"$out" || die "device certificate with a front end's CN: $out"
grep -q "not a front end's certificate" "$D/cad.log" || die "log does not say why the lookalike was refused"
ok "a device certificate (same CA, clientAuth) whose CN is a front end's gets no role: not the frontend template"

out=$(fe none hello)
grep -Eq "closed|tls-refused" <<<"$out" || die "no client certificate: $out"
out=$(fe server-as-client hello)
grep -Eq "closed|tls-refused" <<<"$out" || die "serverAuth-only certificate as a client: $out"
ok "no client certificate, or one not for TLS clients: no connection"

# a client that trickles its handshake a byte at a time, each well inside a per-read timeout:
# the handshake has 10 s in all, then its slot is free again (it could hold one for as long as
# it kept trickling: 0x200 bytes at one every 2 s, 17 minutes)
cat > "$D/trickle.py" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.monotonic()
data = b"\x16\x03\x01\x02\x00" + b"\x01" * 0x200
for b in data:
    try:
        s.sendall(bytes([b]))
        s.settimeout(2)
        if s.recv(1) == b"":
            break
    except socket.timeout:
        pass
    except OSError:
        break
    if time.monotonic() - t0 > 25:
        print("still open after 25 s"); sys.exit(0)
print("closed after %.0f s" % (time.monotonic() - t0))
PY
out=$(python3 "$D/trickle.py" "$PORT")
secs=$(sed -n 's/^closed after \([0-9]*\) s$/\1/p' <<<"$out")
[ -n "$secs" ] && [ "$secs" -ge 9 ] && [ "$secs" -le 14 ] || die "trickled handshake: $out"
grep -q "TLS handshake: not done within 10 s" "$D/cad.log" || die "log does not say the handshake ran out of time"
ok "a handshake trickled a byte at a time is cut at 10 s ($out)"

# Unauthenticated peers can open connections: one address holds at most [cad]
# max-handshakes-per-ip (default a quarter of max-connections: 64 of 256) of those still in
# their TLS handshake, so it cannot take the whole handshake half (128) from the front ends
# that reconnect from other addresses. The hog opens the whole half from 127.0.0.1 and sends
# nothing; a front end from 127.0.0.2 (loopback too) still completes its handshake.
before=$(wc -l < "$D/cad.log")
python3 "$D/hog.py" 127.0.0.1 "$PORT" "$D/hog.ready" "$D/hog.done" 128 127.0.0.1 > "$D/hog.out" &
HOG=$!
for _ in $(seq 1 100); do [ -f "$D/hog.ready" ] && break; sleep 0.1; done
[ -f "$D/hog.ready" ] || die "the hog did not start"
other=$(fe est1 hello 127.0.0.2)
same=$(fe est1 hello 127.0.0.1)
touch "$D/hog.done"; wait "$HOG" || true
grep -qx "status=0" <<<"$other" && grep -qx "24=est" <<<"$other" \
    || die "a front end from 127.0.0.2 was locked out while 127.0.0.1 held TLS handshakes: $other"
grep -qx "held=64" "$D/hog.out" || die "127.0.0.1 held $(cat "$D/hog.out") handshakes, want 64"
grep -Eq "closed|tls-refused" <<<"$same" || die "a 65th handshake from 127.0.0.1: $same"
ok "one address holds at most 64 handshakes (a quarter of max-connections); another address still gets answers"

# the refusals (64 of the hog's, the front end's from 127.0.0.1) make one line at once and
# one with their count when they stop (5 s without one), not a line each
n=$(grep -c "connection limit: refused a connection (127.0.0.1 has 64 TCP connections in their TLS handshake, \[cad\] max-handshakes-per-ip)" "$D/cad.log" || true)
[ "$n" = 1 ] || die "$n lines for the first refusal of the burst, want 1"
for _ in $(seq 1 100); do
    grep -q "connection limit: refused 64 more connections" "$D/cad.log" && break
    sleep 0.1
done
grep -q "connection limit: refused 64 more connections in [0-9]* s (65 in [0-9]* s in all; the last: 127.0.0.1 has 64" \
    "$D/cad.log" || die "no line counting the burst's refusals"
n=$(grep -c "connection limit:" "$D/cad.log" || true)
[ "$n" = 2 ] || die "$n log lines for one burst of 65 refusals, want 2"
ok "a burst of refusals is logged in two lines: the first refusal, then their count"

# the hog gone, its 64 handshakes fail at once (end of file): counted too, not a line each
for _ in $(seq 1 100); do
    tail -n +$((before + 1)) "$D/cad.log" | grep -Eq "TLS handshake failed on 6[34] more connections" && break
    sleep 0.1
done
tail -n +$((before + 1)) "$D/cad.log" > "$D/hog.log"
grep -Eq "TLS handshake failed on 6[34] more connections in [0-9]* s \(6[45] in [0-9]* s in all; the last: from 127.0.0.1: TLS handshake" \
    "$D/hog.log" || die "no line counting the hog's failed handshakes"
n=$(grep -Ec "TLS handshake failed on|refused: TLS handshake" "$D/hog.log" || true)
[ "$n" -le 2 ] || die "$n log lines for the hog's 64 failed handshakes, want at most 2"
ok "64 failed handshakes (no certificate: anyone can cause them) make at most two log lines"

cad_stop
ok "SIGTERM: exit 0"

# [cad] max-handshakes-per-ip set, on a dual-stack listener ([::]): the IPv4 peers arrive as
# IPv4-mapped IPv6 addresses (::ffff:127.0.0.1) and count, and are named, as their IPv4 ones
PORT2=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::", 0)); print(s.getsockname()[1])')
sed -i "s/^listen = 127.0.0.1:$PORT\$/listen = [::]:$PORT2\nmax-handshakes-per-ip = 2/" "$KL_CONF"
grep -qx "max-handshakes-per-ip = 2" "$KL_CONF" || die "keyline.conf: listen line not found"
before=$(wc -l < "$D/cad.log")
rm -f "$D/hog.ready" "$D/hog.done"
cad_start
cad_tls_ready 127.0.0.1 "$PORT2" "$before" # the probe's handshake over before the hog opens its own
python3 "$D/hog.py" 127.0.0.1 "$PORT2" "$D/hog.ready" "$D/hog.done" 4 127.0.0.1 > "$D/hog.out" &
HOG=$!
for _ in $(seq 1 100); do [ -f "$D/hog.ready" ] && break; sleep 0.1; done
[ -f "$D/hog.ready" ] || die "the hog did not start"
other=$(python3 "$D/client.py" "$D" "$PORT2" est1 hello 127.0.0.2)
touch "$D/hog.done"; wait "$HOG" || true
grep -qx "held=2" "$D/hog.out" || die "127.0.0.1 held $(cat "$D/hog.out") handshakes on [::], want 2"
grep -qx "status=0" <<<"$other" || die "a front end from 127.0.0.2 on [::]: $other"
tail -n +$((before + 1)) "$D/cad.log" \
    | grep -q "refused a connection (127.0.0.1 has 2 TCP connections in their TLS handshake" \
    || die "the refusal does not name 127.0.0.1 (IPv4-mapped) with 2 handshakes"
! tail -n +$((before + 1)) "$D/cad.log" | grep -q "ffff:" || die "the log names an IPv4-mapped address"
ok "max-handshakes-per-ip = 2 on [::]: an IPv4-mapped peer counts and is named as its IPv4 address"
cad_stop
