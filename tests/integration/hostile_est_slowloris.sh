#!/usr/bin/env bash
# keyline-estd, hostile: slowloris from one address (issue 10, defect 4).
#
# One address (127.0.0.1) opens more TLS connections than the per-address limit and than the
# server has slots (max-connections = 100 here, to keep the test short), and on each trickles
# one header line a second: never idle long enough for the inactivity timeout (30 s), never
# finishing its request. With the defaults
#   * the per-address limit (max-connections-per-ip, 64 by default) leaves the other slots free:
#     a client from another address (127.0.0.2) gets /cacerts and an enrollment meanwhile;
#   * the request deadline (request-timeout, 5 s here) closes every trickling connection,
#     TLS and plain HTTP, about that long after it was opened, though it was never idle;
#   * a slow but honest client that finishes within the deadline is served.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

DEADLINE=5
est_setup_ca
# the per-address limit is left at its default: the point is that the default protects
est_write_conf "max-connections = 100" "request-timeout = $DEADLINE" "timeout = 30"
est_start
new_csr legit "/CN=sensor-0001/serialNumber=HW0001"

# the attacker: 120 TLS and 8 plain-HTTP connections from 127.0.0.1; $D/attack.ready when they
# are set up, $D/attack.json at the end (for each connection: opened, and closed by the server
# after how many seconds, or null)
python3 - "$EST_PORT" "$EST_HTTP_PORT" "$D/root1.pem" "$D" <<'PY' &
import concurrent.futures, json, socket, ssl, sys, time
port, http_port, ca, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
def connect(i):  # all at once, as an attacker would
    tls = i < 120
    body = i % 10 == 0  # these send whole headers, then trickle the body
    raw = socket.socket()
    raw.settimeout(3)
    raw.bind(("127.0.0.1", 0))
    t0 = time.monotonic()
    try:
        raw.connect(("127.0.0.1", port if tls else http_port))
        s = ctx.wrap_socket(raw, server_hostname="localhost") if tls else raw
        if body:
            s.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/pkcs10\r\nContent-Length: 900\r\n\r\nMIIB")
        else:
            s.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n")
        s.setblocking(False)
        return {"s": s, "t0": t0, "tls": tls, "body": body, "closed": None, "sent": 0}
    except (OSError, ssl.SSLError):  # refused at accept (limit): reset, closed, or no answer
        raw.close()
        return None
with concurrent.futures.ThreadPoolExecutor(max_workers=128) as ex:
    got = list(ex.map(connect, range(128)))
conns = [c for c in got if c]
refused = len(got) - len(conns)
open(d + "/attack.ready", "w").write("%d %d\n" % (len(conns), refused))
def gone(c):  # the server closed it: EOF, reset, or a TLS alert then EOF
    try:
        while True:
            if not c["s"].recv(4096):
                return True
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (OSError, ssl.SSLError):
        return True
end = time.monotonic() + 12
while time.monotonic() < end:
    for c in conns:
        if c["closed"] is None:
            try:
                # one header line, or one byte of body, a second
                c["s"].send(b"A" if c["body"] else b"X-Slow-%d: x\r\n" % c["sent"])
                c["sent"] += 1
            except (OSError, ssl.SSLError):
                pass
            if gone(c):
                c["closed"] = round(time.monotonic() - c["t0"], 2)
    if all(c["closed"] is not None for c in conns):
        break
    time.sleep(1)
json.dump({"refused": refused,
           "conns": [{"tls": c["tls"], "body": c["body"], "closed": c["closed"], "sent": c["sent"]}
                     for c in conns]},
          open(d + "/attack.json", "w"))
PY
ATTACK_PID=$!
trap 'kill "$ATTACK_PID" 2>/dev/null || true; est_cleanup' EXIT
for _ in $(seq 1 100); do [ -f "$D/attack.ready" ] && break; sleep 0.1; done
[ -f "$D/attack.ready" ] || die "the attacker did not set up its connections"
read -r n_open n_refused < "$D/attack.ready"
ok "attacker from 127.0.0.1: $n_open connections open, $n_refused refused"

# --- a client from another address is served during the attack --------------------------------
st=$(curl -s --interface 127.0.0.2 --max-time 4 --cacert "$D/root1.pem" -o "$D/out" \
    -w '%{http_code}' "$EST/cacerts") || true
[ "$st" = 200 ] || die "/cacerts from 127.0.0.2 during the attack: HTTP $st"
ok "/cacerts from 127.0.0.2 during the attack -> 200"
st=$(curl -s --interface 127.0.0.2 --max-time 4 --cacert "$D/root1.pem" -o "$D/out" \
    -w '%{http_code}' --cert "$D/idev.crt" --key "$D/idev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/legit.b64" "$EST/simpleenroll") || true
[ "$st" = 200 ] || die "simpleenroll from 127.0.0.2 during the attack: HTTP $st"
ok "simpleenroll from 127.0.0.2 during the attack -> 200"
# a slow but honest client is served: a request that takes 2 s to send, then, on the same
# keep-alive connection after 1.5 s idle, another (each within the deadline, not both together)
python3 - "$EST_PORT" "$D/root1.pem" <<'PY' || die "slow honest client not served"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.socket()
raw.bind(("127.0.0.2", 0))
raw.settimeout(5)
raw.connect(("127.0.0.1", int(sys.argv[1])))
s = ctx.wrap_socket(raw, server_hostname="localhost")
def get(last):
    for line in (b"GET /.well-known/est/cacerts HTTP/1.1\r\n", b"Host: localhost\r\n",
                 b"Connection: close\r\n" if last else b"X-Keep: alive\r\n", b"\r\n"):
        s.sendall(line)
        time.sleep(0.5)
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(65536)
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < n:
        body += s.recv(65536)
get(False)
time.sleep(1.5)
get(True)
PY
ok "a client that takes 2 s over each of two requests on one connection, 1.5 s apart, is served"

# --- the per-address limit and the deadline -------------------------------------------------------
wait "$ATTACK_PID" || die "attacker failed"
python3 - "$D/attack.json" "$DEADLINE" <<'PY' || die "attack result: $(cat "$D/attack.json")"
import json, sys
r = json.load(open(sys.argv[1]))
deadline = float(sys.argv[2])
tls = [c for c in r["conns"] if c["tls"]]
plain = [c for c in r["conns"] if not c["tls"]]
# 64 per address by default (one slot or two may still be closing when the next arrives)
assert len(tls) <= 64, "%d TLS connections from one address, limit 64" % len(tls)
assert len(plain) == 8, "plain connections: %d" % len(plain)
for c in r["conns"]:
    assert c["closed"] is not None, "a trickling connection was never closed: %r" % c
    # trickling a line a second, never idle: only the deadline can have closed it
    assert deadline - 0.5 <= c["closed"] <= deadline + 3.5, "closed after %.2f s: %r" % (c["closed"], c)
    assert c["sent"] >= deadline - 1, "it was not trickling: %r" % c
print("tls %d plain %d refused %d, closed after %.1f..%.1f s" % (len(tls), len(plain), r["refused"],
      min(c["closed"] for c in r["conns"]), max(c["closed"] for c in r["conns"])))
PY
ok "at most 64 connections from one address; every trickling connection closed after ${DEADLINE} s"
grep -q "request-timeout" "$D/estd.log" || die "no log line about the closed connections"
grep -q "POST /.well-known/est/simpleenroll 0 .*(request-timeout)" "$D/estd.log" ||
    die "no access log line for a request cut at its deadline"
ok "log: $(grep -m1 "request-timeout" "$D/estd.log" | cut -c1-160)"

# the server is still healthy and serves 127.0.0.1 again; /metrics counts the cut connections
expect_status 200 "/cacerts from 127.0.0.1 after the attack" "$EST/cacerts"
expect_status 200 "metrics" "$EST_URL/metrics"
cut=$(sed -n 's/^keyline_est_connections_cut_total //p' "$D/out")
n_conns=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["conns"]))' "$D/attack.json")
[ "${cut:-0}" -ge "$n_conns" ] || die "keyline_est_connections_cut_total ${cut:-missing}, expected >= $n_conns"
ok "keyline_est_connections_cut_total $cut"
est_stop
