#!/usr/bin/env bash
# [cad] max-handshakes-per-ip counts an IPv6 peer by its /64: a host is given a whole /64 and
# can connect from as many of its addresses as it likes, so counting addresses one by one
# would let it take the whole handshake half. Run in a network namespace of its own
# (unshare -rn: also without root, as its own user namespace's root) whose loopback carries
# addresses of two /64s of the documentation prefix; keyline-cad listens on [::].
if [ -z "${KL_NETNS:-}" ]; then
    exec unshare -rn env KL_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
for a in 2001:db8:1:2::5 2001:db8:1:2::6 2001:db8:1:2:ffff::7 2001:db8:1:3::5; do
    ip -6 addr add "$a/128" dev lo nodad
done
source "$KL_SRC/tests/lib/cad_common.sh"
source "$KL_SRC/tests/lib/cad_tls_common.sh"

cad_tls_pki ::1 IP:::1 est1

PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::", 0)); print(s.getsockname()[1])')
cad_conf "listen = [::]:$PORT" "tls-cert = cad-chain.pem" "tls-key = cad.key" \
    "tls-client-ca = client-ca.pem" "max-handshakes-per-ip = 2"
cad_role est certs "est1.example"
cad_start
cad_tls_ready ::1 "$PORT" # the probe's handshake over before the hogs open theirs

hello() { CAD_TLS_HOST=::1 python3 "$D/client.py" "$D" "$PORT" est1 hello "$1"; }

out=$(hello 2001:db8:1:2::5)
grep -qx "status=0" <<<"$out" || die "a front end from 2001:db8:1:2::5 on [::]: $out"
ok "a front end connects over IPv6 from an address of its own"

# two handshakes held from two addresses of 2001:db8:1:2::/64: a third address of that /64
# (its other half too) is refused; an address of 2001:db8:1:3::/64 is answered
python3 "$D/hog.py" ::1 "$PORT" "$D/hog.ready" "$D/hog.done" 2 2001:db8:1:2::5 2001:db8:1:2::6 \
    > "$D/hog.out" &
HOG=$!
for _ in $(seq 1 100); do [ -f "$D/hog.ready" ] && break; sleep 0.1; done
[ -f "$D/hog.ready" ] || die "the hog did not start"
same=$(hello 2001:db8:1:2:ffff::7)
other=$(hello 2001:db8:1:3::5)
touch "$D/hog.done"; wait "$HOG" || true
grep -qx "held=2" "$D/hog.out" || die "two addresses of one /64 held $(cat "$D/hog.out"), want 2"
grep -Eq "^(closed|tls-refused)" <<<"$same" \
    || die "a third address of 2001:db8:1:2::/64 got a handshake past max-handshakes-per-ip = 2: $same"
grep -qx "status=0" <<<"$other" || die "a front end from another /64 was locked out: $other"
grep -q "refused a connection (2001:db8:1:2::/64 has 2 TCP connections in their TLS handshake, \[cad\] max-handshakes-per-ip)" \
    "$D/cad.log" || die "the refusal does not name the /64"
ok "max-handshakes-per-ip counts an IPv6 /64 as one source and names it; another /64 is answered"

cad_stop
ok "SIGTERM: exit 0"
