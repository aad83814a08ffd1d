#!/usr/bin/env bash
# keyline-estd integration helpers, sourced by the other est_*.sh tests. Run on its own (as
# ctest does) it is the start/stop smoke test: start, /healthz, /metrics, SIGTERM -> exit 0.
#
# keyline-estd is a client of keyline-cad, the CA service (docs/ca-protocol.md): est_start
# starts keyline-cad first (socket $D/cad.sock, log $D/cad.log) and keyline-estd without the
# token PIN in its environment; est_stop stops both (SIGTERM, each must exit 0).
#
# Needs tests/lib/with-token.sh (fresh SoftHSM token, $KL_CONF) and KL_BUILD.
set -euo pipefail

BIN=${KL_BUILD:?KL_BUILD not set}/bin
D=${KL_TEST_DIR:?run under tests/lib/with-token.sh}

kca() { "$BIN/keyline-ca" -c "$KL_CONF" "$@"; }
die() {
    echo "FAIL: $*" >&2
    [ -f "$D/estd.log" ] && tail -n 40 "$D/estd.log" >&2
    [ -f "$D/cad.log" ] && { echo "--- cad.log" >&2; tail -n 20 "$D/cad.log" >&2; }
    exit 1
}
ok() { echo "ok - $*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# hash_password PREFIX PASSWORD: a crypt(3) hash made by libxcrypt ($y$, $2b$, $6$)
hash_password() {
    python3 - "$1" "$2" <<'PY'
import ctypes, sys
lc = ctypes.CDLL("libcrypt.so.1")
lc.crypt_gensalt.restype = ctypes.c_char_p
lc.crypt.restype = ctypes.c_char_p
setting = lc.crypt_gensalt(sys.argv[1].encode(), 0, None, 0)
print(lc.crypt(sys.argv[2].encode(), setting).decode())
PY
}

# new_csr NAME SUBJECT [openssl req args...]: key $D/NAME.key, CSR $D/NAME.csr (PEM),
# $D/NAME.b64 (base64 DER, wrapped as `openssl base64` does)
new_csr() {
    local name=$1 subj=$2
    shift 2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/$name.key" \
        -subj "$subj" -out "$D/$name.csr" "$@" 2>/dev/null
    openssl req -in "$D/$name.csr" -outform DER | openssl base64 > "$D/$name.b64"
}

# p7_to_pem IN.b64 OUT.pem: certs-only PKCS#7 (base64) -> PEM certificates
p7_to_pem() {
    openssl base64 -d -in "$1" | openssl pkcs7 -inform DER -print_certs -out "$2"
}

serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
# ocsp_get_path REQ-DER: the RFC 6960 A.1 GET form of an OCSP request, its base64 with
# + / = percent-encoded (what follows /ocsp/)
ocsp_get_path() { base64 -w0 "$1" | sed 's|+|%2B|g; s|/|%2F|g; s|=|%3D|g'; }

# count_issued: how many certificates keyline's store holds
count_issued() { kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# est_setup_ca: root1 -> factory1 (IDevID CA), root1 -> field1 (LDevID CA), the EST server's
# TLS certificate from field1, a bootstrap htpasswd, one IDevID.
est_setup_ca() {
    kca ca create --label root1 --template root --subject "${EST_ROOT_SUBJECT:-CN=Keyline Test Root,O=Keyline Test}" >/dev/null
    kca ca create --label factory1 --template factory-ca --subject "CN=Keyline Factory CA,O=Keyline Test" --issuer root1 >/dev/null
    kca ca create --label field1 --template field-ca --subject "CN=Keyline Field CA,O=Keyline Test" --issuer root1 >/dev/null
    kca ca cert --label root1 > "$D/root1.pem"
    kca ca cert --label factory1 > "$D/factory1.pem"
    kca ca cert --label field1 > "$D/field1.pem"
    cat "$D/field1.pem" "$D/factory1.pem" > "$D/intermediates.pem"

    new_csr est-server "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost"
    kca issue --issuer field1 --template est-server --csr "$D/est-server.csr" --out "$D/est-server.crt" >/dev/null
    cat "$D/est-server.crt" "$D/field1.pem" > "$D/est-server.pem"

    EST_USER=bootstrap
    EST_PASS='correct horse battery staple'
    {
        echo "# keyline-est bootstrap users"
        echo "$EST_USER:$(hash_password '$y$' "$EST_PASS")"
        echo "factory-bcrypt:$(hash_password '$2b$' 'bcrypt-secret')"
        echo "factory-sha:$(hash_password '$6$' 'sha-secret')"
    } > "$D/est.htpasswd"
    chmod 600 "$D/est.htpasswd"

    # an IDevID as the factory would issue it (802.1AR: serialNumber = hardware serial)
    new_csr idev "/CN=sensor-0001/serialNumber=HW0001"
    kca issue --issuer factory1 --template device-idevid --csr "$D/idev.csr" --device-id HW0001 --out "$D/idev.crt" >/dev/null
}

# est_token_tls_key LABEL P11TOOL-KEYGEN-ARGS...: a TLS server key generated (p11tool) on a
# token of keyline-estd's own, "est-tls" (not the CA token: keyline-estd holds no CA PIN), its
# CSR (certtool, signed in that token) and certificate (est-server template) in
# $D/est-server.pem; sets EST_TLS_KEY to the key's pkcs11: URI and EST_TLS_PIN (the token's
# PIN, exported: est_write_conf writes tls-key-pin = env:EST_TLS_PIN).
est_token_tls_key() {
    local label=$1
    shift
    export EST_TLS_PIN=est-tls-pin-7f3a9c1e
    if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *est-tls *$"; then
        softhsm2-util --init-token --free --label est-tls --pin "$EST_TLS_PIN" --so-pin "$KL_SO_PIN" \
            >/dev/null || die "second token"
    fi
    EST_TLS_KEY="pkcs11:token=est-tls;object=$label;type=private"
    GNUTLS_PIN=$EST_TLS_PIN p11tool --provider "$KL_MODULE" --login --generate-privkey "$@" \
        --label "$label" "pkcs11:token=est-tls" >/dev/null 2>&1 || die "p11tool keygen"
    printf 'cn = "localhost"\ndns_name = "localhost"\nip_address = "127.0.0.1"\n' > "$D/tls.tmpl"
    GNUTLS_PIN=$EST_TLS_PIN certtool --provider "$KL_MODULE" --generate-request \
        --load-privkey "$EST_TLS_KEY" --template "$D/tls.tmpl" --outfile "$D/tls.csr" \
        >/dev/null 2>&1 || die "certtool CSR with the token key"
    kca issue --issuer field1 --template est-server --csr "$D/tls.csr" --out "$D/tls.crt" >/dev/null
    cat "$D/tls.crt" "$D/field1.pem" > "$D/est-server.pem"
}

# est_write_conf [extra key = value lines...]: appends [est] (and, once, [cad] with the
# socket both daemons use) to $KL_CONF
est_write_conf() {
    EST_PORT=$(free_port)
    EST_HTTP_PORT=$(free_port)
    while [ "$EST_HTTP_PORT" = "$EST_PORT" ]; do EST_HTTP_PORT=$(free_port); done
    if ! grep -qx '\[cad\]' "$KL_CONF"; then
        printf '\n[cad]\nsocket = cad.sock\n' >> "$KL_CONF"
    fi
    {
        echo
        echo "[est]"
        echo "listen = 127.0.0.1:$EST_PORT"
        echo "tls-cert = est-server.pem"
        echo "tls-key = ${EST_TLS_KEY:-est-server.key}"
        if [ -n "${EST_TLS_PIN:-}" ]; then echo "tls-key-pin = env:EST_TLS_PIN"; fi
        echo "issuer = field1"
        echo "template = device-ldevid"
        echo "client-ca = factory1 field1"
        echo "htpasswd = est.htpasswd"
        echo "channel-binding = ${EST_CB:-optional}"
        echo "http-listen = 127.0.0.1:$EST_HTTP_PORT"
        for l in "$@"; do echo "$l"; done
    } >> "$KL_CONF"
    EST_URL="https://127.0.0.1:$EST_PORT"
    EST_HTTP="http://127.0.0.1:$EST_HTTP_PORT"
    EST="$EST_URL/.well-known/est"
}

# cad_start [PREFIX...]: keyline-cad (through PREFIX, e.g. env LD_PRELOAD=... for faketime),
# until its socket answers; CAD_PID
cad_start() {
    "$@" "$BIN/keyline-cad" -c "$KL_CONF" 2>>"$D/cad.log" &
    CAD_PID=$!
    wait_up "$CAD_PID" keyline-cad "$BIN/kl_cad_client" "$D/cad.sock" hello version=1
}

# wait_up PID NAME CMD...: until CMD succeeds (10 s at most), as long as PID lives
wait_up() {
    local pid=$1 name=$2
    shift 2
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
        sleep 0.1
    done
    die "$name did not answer ($*)"
}

# term_wait PID NAME: SIGTERM, expect exit status 0
term_wait() {
    kill -TERM "$1"
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" = 0 ] || die "$2 exited $rc on SIGTERM"
}

cad_stop() {
    term_wait "$CAD_PID" keyline-cad
    CAD_PID=
}

# est_run [PREFIX...]: keyline-estd in the background (EST_PID), without the token PIN in its
# environment (it never needs it; keyline-cad has it)
est_run() {
    # env first: a wrapper such as setpriv then starts keyline-estd itself (an `env` run under
    # another uid cannot enter a build folder that is 0700, as a fresh clone in mktemp -d is)
    env -u KEYLINE_PIN "$@" "$BIN/keyline-estd" -c "$KL_CONF" 2>>"$D/estd.log" &
    EST_PID=$!
}

est_start() {
    if [ -z "${CAD_PID:-}" ]; then cad_start; fi
    est_run
    wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
}

# est_stop: SIGTERM to keyline-estd, then to keyline-cad; each must exit 0
est_stop() {
    term_wait "$EST_PID" keyline-estd
    EST_PID=
    if [ -n "${CAD_PID:-}" ]; then cad_stop; fi
}

est_cleanup() {
    if [ -n "${EST_PID:-}" ]; then kill -KILL "$EST_PID" 2>/dev/null || true; fi
    if [ -n "${CAD_PID:-}" ]; then kill -KILL "$CAD_PID" 2>/dev/null || true; fi
}
trap est_cleanup EXIT

# curl against the TLS listener: prints the HTTP status; body to $D/out
ecurl() {
    curl -s --cacert "$D/root1.pem" -o "$D/out" -w '%{http_code}' "$@"
}

# expect_status WANT DESCRIPTION CURL-ARGS...
expect_status() {
    local want=$1 what=$2
    shift 2
    local got
    got=$(ecurl "$@") || true
    [ "$got" = "$want" ] || die "$what: HTTP $got, expected $want ($(head -c 300 "$D/out" 2>/dev/null))"
    ok "$what -> $want"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    est_setup_ca
    est_write_conf
    est_start
    ok "started on $EST_URL"
    expect_status 200 "healthz" "$EST_URL/healthz"
    grep -qx ok "$D/out" || die "healthz body"
    st=$(curl -s -o "$D/out" -w '%{http_code}' "$EST_HTTP/healthz")
    [ "$st" = 200 ] || die "plain healthz $st"
    expect_status 200 "metrics" "$EST_URL/metrics"
    grep -q '^keyline_est_requests_total{endpoint="healthz",code="200"} [1-9]' "$D/out" || die "metrics content"
    grep -q '^# TYPE keyline_est_issue_seconds histogram' "$D/out" || die "metrics histogram"
    grep -q '^keyline_est_hsm_errors_total 0' "$D/out" || die "metrics hsm errors"
    grep -q '^keyline_est_cad_up 1$' "$D/out" || die "metrics: keyline-cad not up"
    grep -q '^keyline_est_requests_pending 0$' "$D/out" || die "metrics: requests pending"
    if grep -q -e '^keyline_store_' -e '^keyline_est_signer_processes' "$D/out"; then
        die "metrics: store or signer metrics from a process that has neither"
    fi
    # TLS versions: 1.2 and 1.3 accepted, 1.1 refused
    curl -s --cacert "$D/root1.pem" --tlsv1.2 --tls-max 1.2 -o /dev/null "$EST_URL/healthz" || die "TLS 1.2 refused"
    curl -s --cacert "$D/root1.pem" --tlsv1.3 -o /dev/null "$EST_URL/healthz" || die "TLS 1.3 refused"
    if curl -s --cacert "$D/root1.pem" --tlsv1.1 --tls-max 1.1 -o /dev/null "$EST_URL/healthz" 2>/dev/null; then
        die "TLS 1.1 accepted"
    fi
    ok "TLS 1.2 and 1.3 only"
    # the access log has one line per request, without secrets
    grep -q 'GET /healthz 200' "$D/estd.log" || die "access log line"
    est_stop
    ok "SIGTERM -> exit 0"
fi
