#!/usr/bin/env bash
# OCSP: pre-produced answers served (keyline-estd's /ocsp and keyline-cad's socket) against
# answers signed per request and against the raw signing rate of the same token, and how long a
# revocation takes to show over OCSP (openssl ocsp as the client). Run under
# tests/lib/with-token.sh with KL_BUILD set (scripts/bench does both).
#   KL_BENCH_SECONDS=5  KL_BENCH_OCSP_CERTS=64 (certificates answered for)  KL_BENCH_OCSP_CLIENTS=8
#   KL_BENCH_OCSP_ROUNDS=3 (raw, http and cad measured in turn this many times; medians)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"

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
echo "keyline-estd + keyline-cad: $(nproc) CPUs, $N certificates of field1, $CLIENTS clients, ${KL_BENCH_SECONDS:-5} s per run"
"$BIN/ocsp_bench" -c "$KL_CONF" --signer field1.ocsp --http-port "$EST_HTTP_PORT" \
    --cad "$D/cad.sock" --seconds "${KL_BENCH_SECONDS:-5}" --clients "$CLIENTS" --rounds "${KL_BENCH_OCSP_ROUNDS:-3}" \
    --live "$D/live.der" "${reqs[@]}"

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
