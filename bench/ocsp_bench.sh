#!/usr/bin/env bash
# OCSP: pre-produced answers served (keyline-estd's /ocsp and keyline-cad's socket) against
# answers signed per request and against the raw signing rate of the same token, and how long a
# revocation takes to show over OCSP (openssl ocsp as the client). Run under
# tests/lib/with-token.sh with KL_BUILD set (scripts/bench does both).
# The HTTP ceiling, when nginx is installed (Debian: nginx-light; without it, said and not
# measured): nginx started on its own (not the system's service) serves each pre-produced
# answer, fetched from keyline-estd, as a static file under its RFC 5019 GET path, and
# ocsp_bench GETs the same answers from keyline-estd and from nginx in the same rounds, and
# reads the CPU time each server's processes used for it (/proc: keyline-estd, nginx's workers).
#   KL_BENCH_SECONDS=5  KL_BENCH_OCSP_CERTS=64 (certificates answered for)  KL_BENCH_OCSP_CLIENTS=8
#   KL_BENCH_OCSP_ROUNDS=3 (raw, http and cad measured in turn this many times; medians)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"
. "$here/bench_common.sh"

N=${KL_BENCH_OCSP_CERTS:-64}
CLIENTS=${KL_BENCH_OCSP_CLIENTS:-8}
est_setup_ca
est_write_conf "threads = ${KL_BENCH_THREADS:-2}" "workers = ${KL_BENCH_WORKERS:-16}" "max-connections = 4096"
# certificates first: keyline-cad pre-produces their answers in its start-up pass
new_csr ocsp "/CN=ocsp-bench"
reqs=()
for i in $(seq 1 "$N"); do
    kca issue --issuer field1 --template device-ldevid --csr "$D/ocsp.csr" --out "$D/c$i.pem" >/dev/null
    openssl ocsp -issuer "$D/field1.pem" -cert "$D/c$i.pem" -no_nonce -reqout "$D/r$i.der" >/dev/null 2>&1
    reqs+=("$D/r$i.der")
done
openssl ocsp -issuer "$D/field1.pem" -cert "$D/c1.pem" -reqout "$D/live.der" >/dev/null 2>&1
est_start
for _ in $(seq 1 100); do
    grep -q "OCSP: .* answers pre-produced" "$D/cad.log" && break
    sleep 0.1
done
openssl ocsp -issuer "$D/field1.pem" -cert "$D/c$N.pem" -no_nonce -url "$EST_HTTP/ocsp" \
    -CAfile "$D/root1.pem" -resp_text > "$D/check.txt" 2>&1 || true
grep -q "Responder Id: [0-9A-F]\{40\}$" "$D/check.txt" || die "answers not pre-produced: $(cat "$D/check.txt")"

# nginx_start: nginx serving keyline-estd's answer to each request of reqs as a file at the
# request's GET path; NGINX_PORT. Nothing (and a line saying so) without nginx.
NGINX_PORT=
nginx_start() {
    local bin ng=$D/nginx
    bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
    if [ -z "$bin" ]; then
        echo "no nginx here (Debian: apt-get install nginx-light): the static server is not measured"
        local why="no nginx installed (Debian: nginx-light)"
        bench_not_measured "ocsp.static_server.get.${CLIENTS}c" 1/s "$why"
        bench_not_measured "ocsp.preproduced.get.${CLIENTS}c" 1/s "$why: the GETs are measured with it"
        bench_not_measured ocsp.static_server.get.cpu_us us "$why"
        bench_not_measured ocsp.preproduced.get.cpu_us us "$why: the GETs are measured with it"
        return 0
    fi
    mkdir -p "$ng/www/ocsp" "$ng/tmp"
    for r in "${reqs[@]}"; do
        local b64 enc f
        b64=$(base64 -w0 "$r")
        enc=$(ocsp_get_path "$r")
        f=$ng/www/ocsp/$b64
        mkdir -p "$(dirname "$f")"
        curl -sf -o "$f" "$EST_HTTP/ocsp/$enc" || die "GET /ocsp/$enc from keyline-estd failed"
        openssl ocsp -respin "$f" -noverify -resp_text 2>/dev/null | grep -q "Response Status: successful" ||
            die "keyline-estd's answer to the GET of $r is not a successful OCSP response"
    done
    NGINX_PORT=$(free_port)
    while [ "$NGINX_PORT" = "$EST_PORT" ] || [ "$NGINX_PORT" = "$EST_HTTP_PORT" ]; do NGINX_PORT=$(free_port); done
    # as fast as nginx serves these files: 2 workers (keyline-estd's plain HTTP has 2 threads),
    # no access log, open files cached, connections kept for the whole run, and no sendfile:
    # for a body of a few hundred bytes nginx then sends header and body in one writev, where
    # sendfile makes two segments and two wake-ups of the client (66k/s against 111k/s here)
    cat > "$ng/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $ng/nginx.pid;
error_log $ng/error.log;
$([ "$(id -u)" = 0 ] && echo "user root;")
events { worker_connections 1024; }
http {
    access_log off;
    types { }
    default_type application/ocsp-response;
    sendfile off;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    open_file_cache max=4096 inactive=300s;
    open_file_cache_valid 300s;
    client_body_temp_path $ng/tmp;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $ng/www;
        location /ocsp/ { }
    }
}
CONF
    "$bin" -p "$ng" -e "$ng/error.log" -c "$ng/nginx.conf" &
    NGINX_PID=$!
    local first=${reqs[0]} enc
    enc=$(ocsp_get_path "$first")
    wait_up "$NGINX_PID" nginx curl -sf -o "$ng/check.der" "http://127.0.0.1:$NGINX_PORT/ocsp/$enc"
    cmp -s "$ng/check.der" "$ng/www/ocsp/$(base64 -w0 "$first")" || die "nginx does not serve the answer file"
    # the processes that answer, whose CPU time ocsp_bench reads: nginx's workers
    NGINX_WORKERS=$(pgrep -d, -P "$NGINX_PID" || true)
    [ -n "$NGINX_WORKERS" ] || die "no nginx worker processes"
}

nginx_stop() {
    [ -n "${NGINX_PID:-}" ] || return 0
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=
}
trap 'nginx_stop; est_cleanup' EXIT

nginx_start
echo "keyline-estd + keyline-cad: $(nproc) CPUs, $N certificates of field1, $CLIENTS clients, ${KL_BENCH_SECONDS:-5} s per run"
"$BIN/ocsp_bench" -c "$KL_CONF" --signer field1.ocsp --http-port "$EST_HTTP_PORT" \
    --cad "$D/cad.sock" --seconds "${KL_BENCH_SECONDS:-5}" --clients "$CLIENTS" --rounds "${KL_BENCH_OCSP_ROUNDS:-3}" \
    ${NGINX_PORT:+--peer-port "$NGINX_PORT" --server-pids "$EST_PID" --peer-pids "$NGINX_WORKERS"} \
    --live "$D/live.der" "${reqs[@]}"
nginx_stop

# revocation -> OCSP: from keyline-ca revoke returning to openssl ocsp seeing it, 3 times
worst=0
for i in 1 2 3; do
    serial=$(serial_of "$D/c$i.pem")
    t0=$(date +%s.%N)
    kca revoke --serial "$serial" >/dev/null 2>&1
    seen=
    for _ in $(seq 1 300); do
        openssl ocsp -issuer "$D/field1.pem" -cert "$D/c$i.pem" -no_nonce -url "$EST_HTTP/ocsp" \
            -CAfile "$D/root1.pem" > "$D/rv.txt" 2>&1 || true
        if grep -q ": revoked" "$D/rv.txt"; then seen=$(date +%s.%N); break; fi
        sleep 0.05
    done
    [ -n "$seen" ] || die "revocation $i not visible over OCSP in 15 s"
    worst=$(python3 -c "print(max($worst, $seen - $t0))")
done
python3 - "$worst" <<'PY'
import json, os, sys
w = float(sys.argv[1])
print("  revocation visible over OCSP (worst of 3): %.2f s (limit 5 s)" % w)
out = os.environ.get("KL_BENCH_RESULTS")
if out:
    with open(out, "a") as f:
        f.write(json.dumps({"name": "ocsp.revocation_visible_s", "value": w, "unit": "s",
                            "limit_name": "issue bound", "limit_value": 5.0,
                            "target_max": 1.0}) + "\n")
PY
est_stop
