#!/usr/bin/env bash
# keyline-cad's memory and descriptors under sustained load (issue 18 item 1): bench/cad_soak.c
# drives one keyline-cad over its Unix socket and its mutual-TLS listener (issue, cert-status,
# crl, ocsp pre-produced and live, cacerts, ca-chain; one client reconnecting every 16 calls)
# and fits the daemon's anonymous RSS and open descriptors against the calls answered after a
# warm-up. Figures cad.soak.anon_rss_kib_per_10k and cad.soak.fds_per_10k, each against its bound. Run under
# tests/lib/with-token.sh with KL_BUILD set (scripts/bench does both).
#   KL_SOAK_CAD_WARMUP=30  KL_SOAK_CAD_SECONDS=120 (measured after the warm-up)
#   KL_SOAK_CAD_BOUND=16   KiB of anonymous RSS per 10,000 calls (1.6 bytes per call)
#   KL_SOAK_CAD_ARGS=--no-issue  more cad_soak arguments
#   KL_SOAK_CAD_WRAP="valgrind --leak-check=full"  a command keyline-cad runs under (leak hunts)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"

# root1 -> field1 and the TLS certificate for 127.0.0.1 (est-server.pem), a front end's
est_setup_ca
new_csr fe "/CN=soak-frontend"
kca issue --issuer field1 --template frontend --csr "$D/fe.csr" --out "$D/fe.crt" >/dev/null
new_csr dev "/CN=soak/serialNumber=SOAK0001"
openssl req -in "$D/dev.csr" -outform DER -out "$D/dev.der"
cat "$D/root1.pem" "$D/field1.pem" > "$D/client-ca.pem"
new_csr pre "/CN=soak-ocsp"
# answers pre-produced for these 32 (kept at most 64: the table does not grow with issuance)
reqs=()
for i in $(seq 1 32); do
    kca issue --issuer field1 --template device-ldevid --csr "$D/pre.csr" --out "$D/c$i.pem" >/dev/null
    openssl ocsp -issuer "$D/field1.pem" -cert "$D/c$i.pem" -no_nonce -reqout "$D/r$i.der" >/dev/null 2>&1
    reqs+=("$D/r$i.der")
done
openssl ocsp -issuer "$D/field1.pem" -cert "$D/c1.pem" -reqout "$D/live.der" >/dev/null 2>&1

PORT=$(free_port)
cat >> "$KL_CONF" <<CONF

[cad]
socket = cad.sock
listen = 127.0.0.1:$PORT
tls-cert = est-server.pem
tls-key = est-server.key
tls-client-ca = client-ca.pem
ocsp-preproduce = 64

[role soak]
users = $(id -un)
certs = soak-frontend

[profile soak]
issuer = field1
template = device-ldevid
clients = soak
CONF
# shellcheck disable=SC2086 # the wrapper is words
cad_start ${KL_SOAK_CAD_WRAP:-}
trap est_cleanup EXIT
for _ in $(seq 1 100); do
    grep -q "OCSP: .* answers pre-produced" "$D/cad.log" && break
    sleep 0.1
done
echo "keyline-cad (pid $CAD_PID): $(nproc) CPUs, ${KL_SOAK_CAD_WARMUP:-30} s warm-up, ${KL_SOAK_CAD_SECONDS:-120} s measured"
rc=0
# shellcheck disable=SC2086 # KL_SOAK_CAD_ARGS is words
"$BIN/cad_soak" --pid "$CAD_PID" --unix "$D/cad.sock" --tls "tls:127.0.0.1:$PORT" \
    --tls-cert "$D/fe.crt" --tls-key "$D/fe.key" --tls-ca "$D/root1.pem" --profile soak \
    --issuer field1 --csr "$D/dev.der" --live "$D/live.der" --warmup "${KL_SOAK_CAD_WARMUP:-30}" \
    --seconds "${KL_SOAK_CAD_SECONDS:-120}" --bound "${KL_SOAK_CAD_BOUND:-16}" ${KL_SOAK_CAD_ARGS:-} "${reqs[@]}" || rc=$?
cad_stop
trap - EXIT
# over a bound (exit 3): under scripts/bench the figure says so in the results and the run goes
# on, as every figure's target does; on its own the script fails
if [ "$rc" = 3 ] && [ -n "${KL_BENCH_RESULTS:-}" ]; then
    echo "cad_soak: growth OVER ITS BOUND (in the results as MISSED)"
    exit 0
fi
[ "$rc" = 0 ] || die "cad_soak: exit $rc"
