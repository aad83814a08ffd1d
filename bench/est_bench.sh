#!/usr/bin/env bash
# EST enrollment throughput vs raw HSM signing (run under tests/lib/with-token.sh, KL_BUILD set;
# scripts/bench does both). Sets up the CA hierarchy and keyline-estd like the integration
# tests, then runs bench/est_bench.c against it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"

SECONDS_PER_RUN=${KL_BENCH_SECONDS:-5}
est_setup_ca
# OCSP pre-production off ([cad] ocsp-preproduce = 0): its pass every 60 s signs an answer for
# each certificate issued since the last one (a minute of this load: 65,536, the cap), a few
# seconds of keyline-cad's CPU that land in whichever run is in flight (est.basic.keepalive.32c,
# 0.72 of mTLS in two full runs, 0.95-1.0 when run alone). The enrollment figures measure
# enrollment; pre-production is measured by ocsp_bench.sh.
printf '\n[cad]\nsocket = cad.sock\nocsp-preproduce = 0\n' >> "$KL_CONF"
est_write_conf "threads = ${KL_BENCH_THREADS:-1}" "workers = ${KL_BENCH_WORKERS:-16}" "max-connections = 4096"
est_start
new_csr bench "/CN=sensor-0001/serialNumber=HW0001"
echo "keyline-estd: $(nproc) CPUs, threads = ${KL_BENCH_THREADS:-1} (KL_BENCH_THREADS), workers = ${KL_BENCH_WORKERS:-16} (KL_BENCH_WORKERS), store in $KL_TEST_DIR ($(stat -f -c %T "$KL_TEST_DIR")), $SECONDS_PER_RUN s per run; client auth: IDevID certificate (basic: HTTP Basic, $EST_USER, yescrypt)"
KL_BENCH_BASIC="$EST_USER:$EST_PASS" "$BIN/est_bench" -c "$KL_CONF" --hsm-key field1 --port "$EST_PORT" --cacert "$D/root1.pem" \
    --cert "$D/idev.crt" --key "$D/idev.key" --csr "$D/bench.b64" --seconds "$SECONDS_PER_RUN" \
    --clients "${KL_BENCH_CLIENTS:-2,8,32}" --modes "${KL_BENCH_MODES:-keep-alive,new-handshake,resume,basic}"
curl -s --cacert "$D/root1.pem" "$EST_URL/metrics" | awk '
    /^keyline_est_issue_seconds_sum/ {s=$2} /^keyline_est_issue_seconds_count/ {n=$2}
    /^keyline_store_transactions_total/ {t=$2} /^keyline_store_writes_total/ {w=$2}
    END { if (n) printf "time inside ca_issue(): %.2f ms per enrollment on average (%d enrollments)\n", 1000*s/n, n
          if (t) printf "store: %d write transactions (fsyncs) for %d writes: %.1f per fsync\n", t, w, w/t }'
rss=$(ps -o rss= -p "$EST_PID" | tr -d ' ')
echo "keyline-estd RSS after the run: ${rss} KiB"
est_stop
