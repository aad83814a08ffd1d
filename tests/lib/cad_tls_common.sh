# Shared by the tests of keyline-cad's TCP listener (tests/integration/cad_tls*.sh), sourced
# after tests/lib/cad_common.sh:
#   key_csr NAME SUBJECT [openssl req args]   a P-256 key $D/NAME.key and its CSR $D/NAME.csr
#   cad_tls_pki CN SAN [FRONTEND...]          root1 and field1 ($D/root1.pem, field1.pem,
#                        client-ca.pem), keyline-cad's certificate for CN with subjectAltName
#                        SAN ($D/cad-chain.pem, cad.key), and a frontend-template certificate
#                        $D/FRONTEND.crt (CN=FRONTEND.example) for each FRONTEND
#   cad_tls_ready HOST PORT [LINE]            keyline-cad's listener answers a TCP connection
#                        (10 s), and that probe's handshake has ended in $D/cad.log after
#                        line LINE (default 0; 5 s), so it holds no handshake slot
#   $D/hog.py HOST PORT READY DONE N SRC...   N TCP connections to HOST:PORT from the SRC
#                        addresses in turn, nothing sent; prints held=K (those keyline-cad
#                        kept open, waiting for a ClientHello), touches READY, holds them
#                        until DONE exists (20 s at most)
#   $D/client.py D PORT WHO OP [SRC]          a front end with the certificate $D/WHO.crt ("none":
#                        none) at CAD_TLS_HOST (default 127.0.0.1):PORT, from SRC: OP hello, or
#                        issue of $D/dev.csr (profile ldevid); prints status=N and fields 17, 24,
#                        8, "cert" ($D/issued.der), or closed / tls-refused ERROR
key_csr() {
    local n=$1 s=$2
    shift 2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/$n.key" \
        -subj "$s" -out "$D/$n.csr" "$@" 2>/dev/null
}

cad_tls_pki() {
    local cn=$1 san=$2 fe
    shift 2
    kca ca create --label root1 --template root --subject "CN=TLS Test Root" >/dev/null
    kca ca create --label field1 --template field-ca --subject "CN=TLS Test Field" \
        --issuer root1 >/dev/null
    kca ca cert --label root1 >"$D/root1.pem"
    kca ca cert --label field1 >"$D/field1.pem"
    cat "$D/root1.pem" "$D/field1.pem" >"$D/client-ca.pem"
    key_csr cad "/CN=$cn" -addext "subjectAltName=$san"
    kca issue --issuer field1 --template est-server --csr "$D/cad.csr" --out "$D/cad.crt" >/dev/null
    cat "$D/cad.crt" "$D/field1.pem" >"$D/cad-chain.pem"
    for fe in "$@"; do
        key_csr "$fe" "/CN=$fe.example"
        kca issue --issuer field1 --template frontend --csr "$D/$fe.csr" --out "$D/$fe.crt" >/dev/null
    done
}

cad_tls_ready() {
    local host=$1 port=$2 from=${3:-0}
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('$host', $port), 1)" 2>/dev/null && break
        sleep 0.1
    done
    for _ in $(seq 1 50); do
        tail -n +$((from + 1)) "$D/cad.log" | grep -q "TLS handshake failed on a connection" && return 0
        sleep 0.1
    done
}

cat >"$D/hog.py" <<'PY'
import os, socket, sys, time
host, port, ready, done, n, srcs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:]
held = [socket.create_connection((host, port), 5, (srcs[i % len(srcs)], 0)) for i in range(n)]
time.sleep(1.5)
alive = 0
for s in held:
    s.setblocking(False)
    try:
        alive += s.recv(1) != b""
    except BlockingIOError:
        alive += 1  # nothing to read, not closed: the daemon waits for its ClientHello
    except OSError:
        pass
print("held=%d" % alive, flush=True)
open(ready, "w").close()
t0 = time.monotonic()
while not os.path.exists(done) and time.monotonic() - t0 < 20:
    time.sleep(0.05)
PY

cat >"$D/client.py" <<'PY'
import os, socket, ssl, struct, sys
host = os.environ.get("CAD_TLS_HOST", "127.0.0.1")  # keyline-cad's address, as its certificate names it
d, port, who, op = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
src = (sys.argv[5], 0) if len(sys.argv) > 5 else None  # the source address to connect from
def field(tag, v):
    if isinstance(v, int): v = struct.pack(">Q", v)
    if isinstance(v, str): v = v.encode()
    return bytes([tag]) + struct.pack(">I", len(v)) + v
def frame(op, fields):
    body = bytes([1, op, 0]) + b"".join(field(t, v) for t, v in fields)
    return struct.pack(">I", len(body)) + body
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(d + "/root1.pem")
if who != "none":
    ctx.load_cert_chain(d + "/" + who + ".crt", d + "/" + who + ".key")
try:
    s = ctx.wrap_socket(socket.create_connection((host, port), 10, src),
                        server_hostname=host)
    if op == "hello":
        s.sendall(frame(1, [(23, 1)]))
    else:
        csr = open(d + "/dev.csr", "rb").read()
        s.sendall(frame(2, [(1, "ldevid"), (2, csr), (3, "basic"), (5, "bootstrap")]))
    hdr = b""
    while len(hdr) < 4:
        chunk = s.recv(4 - len(hdr))
        if not chunk: break
        hdr += chunk
    if len(hdr) < 4:
        print("closed"); sys.exit(0)
    n = struct.unpack(">I", hdr)[0]
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk: break
        body += chunk
    print("status=%d" % body[2])
    pos = 3
    while pos < len(body):
        tag, ln = body[pos], struct.unpack(">I", body[pos+1:pos+5])[0]
        v = body[pos+5:pos+5+ln]; pos += 5 + ln
        if tag in (17, 24, 8): print("%d=%s" % (tag, v.decode()))
        if tag == 12: open(d + "/issued.der", "wb").write(v); print("cert")
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("tls-refused %s" % type(e).__name__)
PY
