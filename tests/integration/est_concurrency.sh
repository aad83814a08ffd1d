#!/usr/bin/env bash
# keyline-estd under concurrency: 32 clients enroll at once (half with the IDevID, half with
# Basic), every response is a valid certificate with a distinct serial; then SIGTERM while a
# burst is in flight: every request that got an answer got a whole one, and exit status is 0.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

N=32
est_setup_ca
est_write_conf "threads = 4"
est_start

for i in $(seq 1 $N); do
    new_csr "c$i" "/CN=sensor-0001/serialNumber=HW0001"
done
pids=()
for i in $(seq 1 $N); do
    if [ $((i % 2)) = 0 ]; then auth=(--cert "$D/idev.crt" --key "$D/idev.key"); else auth=(-u "$EST_USER:$EST_PASS"); fi
    curl -s --cacert "$D/root1.pem" "${auth[@]}" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/c$i.b64" -o "$D/c$i.resp" -w '%{http_code}' "$EST/simpleenroll" > "$D/c$i.status" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
: > "$D/serials"
for i in $(seq 1 $N); do
    [ "$(cat "$D/c$i.status")" = 200 ] || die "client $i: HTTP $(cat "$D/c$i.status") $(cat "$D/c$i.resp")"
    p7_to_pem "$D/c$i.resp" "$D/c$i.pem"
    openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/c$i.pem" >/dev/null || die "client $i: cert does not verify"
    [ "$(openssl x509 -in "$D/c$i.pem" -noout -pubkey)" = "$(openssl pkey -in "$D/c$i.key" -pubout)" ] || die "client $i got someone else's certificate"
    serial_of "$D/c$i.pem" >> "$D/serials"
done
[ "$(sort -u "$D/serials" | wc -l)" = $N ] || die "serials not distinct"
ok "$N parallel enrollments: $N valid certificates, $N distinct serials, each for its own key"

expect_status 200 "metrics" "$EST_URL/metrics"
grep -q "^keyline_est_requests_total{endpoint=\"simpleenroll\",code=\"200\"} $N\$" "$D/out" || die "metrics count: $(grep simpleenroll "$D/out")"
ok "metrics counted $N enrollments"

# graceful shutdown with requests in flight
pids=()
for i in $(seq 1 16); do
    curl -s --cacert "$D/root1.pem" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/c$i.b64" -o "$D/s$i.resp" -w '%{http_code}' "$EST/simpleenroll" > "$D/s$i.status" 2>/dev/null &
    pids+=($!)
done
sleep 0.05
kill -TERM "$EST_PID"
for p in "${pids[@]}"; do wait "$p" || true; done
rc=0
wait "$EST_PID" || rc=$?
EST_PID=
[ "$rc" = 0 ] || die "exit status $rc after SIGTERM with requests in flight"
answered=0
for i in $(seq 1 16); do
    st=$(cat "$D/s$i.status")
    case "$st" in
    200)
        p7_to_pem "$D/s$i.resp" "$D/s$i.pem" || die "request $i: truncated answer during shutdown"
        answered=$((answered + 1))
        ;;
    000) ;; # never connected: the listener was already closed
    *) die "request $i: HTTP $st during shutdown" ;;
    esac
done
ok "SIGTERM with 16 requests in flight: $answered answered whole, the rest refused at connect, exit 0"
