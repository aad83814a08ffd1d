#!/usr/bin/env bash
# Memory under sustained load: keyline-estd with 8 TLS clients for KL_SOAK_SECONDS per mode
# (keep-alive, then a new handshake per request; default 300 + 300 s = 10 minutes), sampling
# the server's resident set size every 20 s. Run under tests/lib/with-token.sh with KL_BUILD
# (scripts/bench --soak does). Prints the samples and the growth after the first minute.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"
secs=${KL_SOAK_SECONDS:-300}
est_setup_ca
est_write_conf "max-connections = 4096"
est_start
new_csr bench "/CN=sensor-0001/serialNumber=HW0001"
KL_BENCH_NO_RAW=1 "$BIN/est_bench" -c "$KL_CONF" --hsm-key field1 --port "$EST_PORT" --cacert "$D/root1.pem" \
    --cert "$D/idev.crt" --key "$D/idev.key" --csr "$D/bench.b64" --seconds "$secs" \
    --clients 8 > "$D/soak.out" &
load=$!
samples=()
ssamples=() # signer = process (the default): the keeper and its signers, their RSS summed
signer_rss() {
  local s=0 p
  for p in $(pgrep -P "$EST_PID") $(pgrep -P "$(pgrep -P "$EST_PID" | head -1)"); do
    s=$((s + $(ps -o rss= -p "$p" | tr -d ' ')))
  done
  echo $s
}
t=0
while kill -0 "$load" 2>/dev/null; do
  samples+=("$t:$(ps -o rss= -p "$EST_PID" | tr -d ' ')")
  ssamples+=("$t:$(signer_rss)")
  sleep 20
  t=$((t + 20))
done
wait "$load"
cat "$D/soak.out"
growth() { # growth WHAT SAMPLES...: from the first sample after minute 1 to the last
  local what=$1 first="" last="" s; shift
  echo "$what RSS (KiB) every 20 s: $*"
  for s in "$@"; do
    [ "${s%%:*}" -ge 60 ] && [ -z "$first" ] && first=${s#*:}
    last=${s#*:}
  done
  [ -n "$first" ] && echo "$what growth from minute 1 to the end: $((last - first)) KiB ($first -> $last KiB)"
  return 0
}
growth "keyline-estd" "${samples[@]}"
growth "signer keeper and signers (sum)" "${ssamples[@]}"
echo "enrollments: $(kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
est_stop
