#!/usr/bin/env bash
# keyline-estd with idle and slow clients (with the worker pool, the default, and without):
# 40 idle TCP connections and 4 TLS clients that stop half-way through a request do not hold
# up a normal enrollment, and the server closes them after `timeout` seconds of inactivity.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
new_csr sc "/CN=sensor-0001/serialNumber=HW0001"

# hold_clients: start the idle and stalled clients; they report, after 6 s, how many of their
# connections the server closed
hold_clients() {
    python3 - "$EST_PORT" "$D/root1.pem" "$D/hold.out" <<'PY' &
import socket, ssl, sys, time
port, ca, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
socks = []
for _ in range(40):  # connect, say nothing
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
ctx = ssl.create_default_context(cafile=ca)
for _ in range(4):  # TLS up, then half a request, then silence
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    t.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\nMIIB")
    socks.append(t)
time.sleep(6)
def is_closed(s):  # the server may send a TLS alert first, then it must close
    s.settimeout(0.5)
    try:
        while True:
            if not s.recv(4096):
                return True
    except socket.timeout:
        return False
    except (ssl.SSLError, OSError):
        return True
closed = sum(is_closed(s) for s in socks)
open(out, "w").write(f"{closed}/{len(socks)}\n")
PY
    HOLD_PID=$!
    sleep 1 # let them connect
}

for model in ${EST_MODELS:-16 0}; do
    est_write_conf "threads = 2" "workers = $model" "timeout = 2" "max-connections = 128"
    est_start
    hold_clients
    st=$(curl -s --max-time 10 --cacert "$D/root1.pem" --cert "$D/idev.crt" --key "$D/idev.key" \
        -H "Content-Type: application/pkcs10" --data-binary @"$D/sc.b64" -o "$D/sc.resp" \
        -w '%{http_code}' "$EST/simpleenroll") || true
    [ "$st" = 200 ] || die "workers = $model: enrollment beside 44 idle/slow clients: HTTP $st"
    p7_to_pem "$D/sc.resp" "$D/sc.pem"
    ok "workers = $model: enrollment served while 44 idle or stalled connections are open"
    wait "$HOLD_PID"
    [ "$(cat "$D/hold.out")" = "44/44" ] || die "workers = $model: idle connections closed: $(cat "$D/hold.out"), expected 44/44"
    ok "workers = $model: idle and stalled connections closed after the 2 s timeout"
    est_stop
    # the next round appends a fresh [est] section: start from the token config again
    sed -i '/^\[est\]$/,$d' "$KL_CONF"
done
