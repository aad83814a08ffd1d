#!/usr/bin/env bash
# Crash consistency at random points (issue 18, item 4): tests/crash/crash.py SIGKILLs
# `keyline-ca issue`, keyline-estd under enrollment load, keyline-cad under that load and
# keyline-provision mid-device, each after a random delay drawn from a printed seed
# (KL_CRASH_SEED=N replays it), restarts them and checks the store after every kill: no serial
# twice, every certificate that reached a client or a device in the store, no device with two
# valid IDevIDs, audit verify, PRAGMA integrity_check. KL_CRASH_KILLS kills (default 60 here;
# `scripts/crash 200` runs the full 200).
source "$KL_SRC/tests/lib/common.sh"
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

make_hierarchy >/dev/null
cat root1.pem > root-ca.pem
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout est-server.key \
  -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -out est-server.csr 2>/dev/null
kca issue --issuer field1 --template est-server --csr est-server.csr --out est-server.crt >/dev/null
cat est-server.crt field1.pem > est-server.pem
export EST_USER=crash EST_PASS=crash-load-password
printf '%s:%s\n' "$EST_USER" "$(python3 -c 'import ctypes,sys
lc=ctypes.CDLL("libcrypt.so.1"); lc.crypt_gensalt.restype=ctypes.c_char_p; lc.crypt.restype=ctypes.c_char_p
print(lc.crypt(sys.argv[1].encode(), lc.crypt_gensalt(b"$y$", 0, None, 0)).decode())' "$EST_PASS")" > est.htpasswd
chmod 600 est.htpasswd
EST_PORT=$(free_port)
cat >>"$KL_CONF" <<CONF

[cad]
socket = cad.sock

[station]
issuer = factory1
template = device-idevid
timeout-ms = 2000
retries = 3
pending-window = 3600
est-url = https://est.example.test/.well-known/est
results = results.jsonl

[est]
listen = 127.0.0.1:$EST_PORT
tls-cert = est-server.pem
tls-key = est-server.key
issuer = field1
template = device-ldevid
client-ca = factory1 field1
htpasswd = est.htpasswd
CONF

socat pty,raw,echo=0,link="$KL_TEST_DIR/fix1" pty,raw,echo=0,link="$KL_TEST_DIR/dev1" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 50); do [ -e fix1 ] && [ -e dev1 ] && break; sleep 0.1; done
[ -e fix1 ] || fail "socat did not create the fixture"

export EST_PORT ROOT_CA=$KL_TEST_DIR/root1.pem KL_BIN
python3 "$KL_SRC/tests/crash/crash.py" "${KL_CRASH_KILLS:-60}" || {
  for f in keyline-cad.log keyline-estd.log station.log; do echo "--- $f" >&2; tail -n 15 "$f" >&2; done
  fail "crash consistency"
}
if grep -l "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" ./*.log 2>/dev/null; then
  fail "sanitizer report in the logs above"
fi
ok "crash consistency after ${KL_CRASH_KILLS:-60} random SIGKILLs"
