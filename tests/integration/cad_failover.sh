#!/usr/bin/env bash
# keyline-cad killed with SIGKILL under load (issue 13 item 4): the front ends list two daemons
# (est1 and station 1 on Unix sockets, est2 and station 2 over mutual TLS) and fail over to the
# other; a request that was in flight on the dead one comes back to its client as "unavailable"
# (EST 503 + Retry-After, the station tries the device again), and its retry gives no device a
# second identity. Then no daemon at all: EST 503 + Retry-After and /healthz 503, the station
# keeps the device waiting instead of failing it; a daemon starts again and both resume by
# themselves. audit verify: one valid chain after the kills.
source "$KL_SRC/tests/lib/cad_multi.sh"
CM_EST_N=${CM_EST_N:-24}
CM_DEV_N=${CM_DEV_N:-3}

cm_failover_start a b F K
devs=("${cm_devs[@]}")

# SIGKILL daemon a once it has issued some of the load, while the rest is in flight
n=$(cm_wait_issued FK 6)
kill -KILL "${CM_PID[a]}"
wait "${CM_PID[a]}" 2>/dev/null || true
unset "CM_PID[a]"
ok "keyline-cad a killed (SIGKILL) after $n of $((2 * CM_EST_N + 4 * CM_DEV_N)) certificates"

wait $cm_sp1 || fail "station 1 exited non-zero after the kill"
wait $cm_sp2 || fail "station 2 exited non-zero after the kill"
for _ in $(seq 1 900); do
  [ "$(cat est-load-*.txt | wc -l)" -lt $((2 * CM_EST_N)) ] || break
  sleep 0.2
done
bad=$(grep -vh ' 200$' est-load-*.txt || true)
[ -z "$bad" ] || fail "EST after the kill: $bad"
n503=$(cat e*.503 | wc -l)
ok "all $((2 * CM_EST_N)) EST enrollments answered 200 ($n503 answers were 503 on the way: $(sort e*.503 | uniq -c | tr -s ' ' | tr '\n' ';'))"
if [ "$n503" -gt 0 ]; then
  grep -vqx 10 <(cat e*.503) && fail "a 503 without Retry-After: 10: $(sort -u e*.503)"
fi

# no second identity: each device one valid certificate, nothing pending left behind for it
kca list --json >all.json
for d in "${devs[@]}"; do
  [ "$(cm_valid_count "$d")" = 1 ] || fail "device $d: $(cm_valid_count "$d") valid certificates"
done
python3 - "${devs[@]}" <<'PY' || fail "pending certificates left for provisioned devices"
import json, sys
left = [c for c in json.load(open("all.json")) if c.get("status") == "pending" and c.get("device_id") in sys.argv[1:]]
assert not left, [(c["device_id"], c["serial"]) for c in left]
PY
for e in 1 2; do for i in $(seq 1 "$CM_EST_N"); do
  kca show --serial "$(cm_serial "e$e-$i.pem")" >/dev/null || fail "e$e-$i: certificate not recorded"
done; done
grep -h "CA service unavailable" st1.log st2.log | head -2 | sed 's/^/  station: /' || true
ok "every device one valid certificate and no pending leftover; every EST certificate recorded"

# ---- no daemon at all ----------------------------------------------------------------------------
kill -KILL "${CM_PID[b]}"; wait "${CM_PID[b]}" 2>/dev/null || true; unset "CM_PID[b]"
cm_key_csr down1 "/CN=down/serialNumber=DOWN-1"
openssl req -in down1.csr -outform DER | openssl base64 >down1.b64
st=$(curl -s --cacert root1.pem -u "$CM_USER:$CM_PASS" -H "Content-Type: application/pkcs10" -D down1.hdr \
  -o down1.out -w '%{http_code}' --data-binary @down1.b64 "https://127.0.0.1:${CM_PORT[est1]}/.well-known/est/simpleenroll")
[ "$st" = 503 ] && tr -d '\r' <down1.hdr | grep -qix 'retry-after: 10' || fail "no keyline-cad: HTTP $st, $(cat down1.hdr)"
st=$(curl -s --cacert root1.pem -o /dev/null -w '%{http_code}' "https://127.0.0.1:${CM_PORT[est2]}/healthz")
[ "$st" = 503 ] || fail "est2 /healthz with no keyline-cad: $st"
ok "no keyline-cad: simpleenroll 503 + Retry-After: 10, /healthz 503"

# ---- daemons whose TLS certificate is not trusted (a wrong address, someone else answering):
#      est2 (mutual TLS) answers as with no daemon, 503, never as a refused client (401/403) ----
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout impostor.key \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 -out impostor.crt 2>/dev/null
imps=()
for n in a b; do
  openssl s_server -quiet -accept "${CM_PORT[$n]}" -cert impostor.crt -key impostor.key \
    </dev/null >/dev/null 2>&1 &
  imps+=($!); cm_pids+=($!)
done
for n in a b; do
  for i in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/${CM_PORT[$n]}") 2>/dev/null && break
    sleep 0.1
  done
done
cm_key_csr imp1 "/CN=sensor-imp/serialNumber=IMP-1"
kca issue --issuer factory1 --template device-idevid --csr imp1.csr --device-id IMP-1 --out imp1.crt >/dev/null
openssl req -in imp1.csr -outform DER | openssl base64 >imp1.b64
for how in cert basic; do
  cred=(--cert imp1.crt --key imp1.key)
  [ "$how" = cert ] || cred=(-u "$CM_USER:$CM_PASS")
  st=$(curl -s --cacert root1.pem "${cred[@]}" -H "Content-Type: application/pkcs10" -o imp.out \
    -w '%{http_code}' --data-binary @imp1.b64 "https://127.0.0.1:${CM_PORT[est2]}/.well-known/est/simpleenroll")
  [ "$st" = 503 ] || fail "keyline-cad addresses answered by an untrusted certificate ($how): HTTP $st, $(head -c 200 imp.out)"
done
grep -q "its certificate" est2.log || fail "est2 did not meet the untrusted certificates: $(tail -3 est2.log)"
for p in "${imps[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
ok "keyline-cad addresses answered by an untrusted certificate: 503 for a client certificate and for Basic"

cm_cad_start a
st=$(cm_enroll 1 down1)
[ "$st" = 200 ] && [ ! -s down1.503 ] || fail "keyline-cad a back: est1 HTTP $st ($(cat down1.503))"
st=$(cm_enroll 2 e2-1)
[ "$st" = 200 ] || fail "keyline-cad a back: est2 (TLS) HTTP $st"
ok "keyline-cad a started again: both keyline-estd serve again by themselves (no restart)"

# the station: keyline-cad goes away in the middle of a device, comes back, the device finishes
: >st1.jsonl
cm_devices_wait # the load's last devices have left fixtures 1-1 and 2-1
"$KL_BIN/keyline-devsim" --port "$KL_TEST_DIR/dev1-1" --serial WAIT-1 --state "$KL_TEST_DIR/WAIT-1.state" \
  --misbehave slow --delay-ms 200 >>WAIT-1.log 2>&1 &
cm_pids+=($!)
timeout 120 "$KL_BIN/keyline-provision" -c st1.conf --port fix1-1 --count 1 >>st1b.log 2>&1 &
sp=$!
for _ in $(seq 1 100); do grep -q "WAIT-1: HELLO" st1b.log && break; sleep 0.05; done
kill -KILL "${CM_PID[a]}"; wait "${CM_PID[a]}" 2>/dev/null || true; unset "CM_PID[a]"
for _ in $(seq 1 200); do [ "$(grep -c "WAIT-1: CA service unavailable" st1b.log)" -ge 3 ] && break; sleep 0.05; done
[ "$(grep -c "WAIT-1: CA service unavailable" st1b.log)" -ge 3 ] || fail "station: no retries while keyline-cad is down: $(tail -3 st1b.log)"
[ ! -s st1.jsonl ] || fail "station reported the device while keyline-cad was down: $(cat st1.jsonl)"
kill -0 $sp || fail "station exited while keyline-cad was down"
ok "no keyline-cad mid-device: the station keeps WAIT-1 waiting ($(grep -m1 -o "CA service unavailable.*" st1b.log | cut -c1-110))"
cm_cad_start a
wait $sp || fail "station exit after keyline-cad came back: $(tail -3 st1b.log)"
[ "$(cm_result st1.jsonl WAIT-1 outcome)" = ok ] || fail "WAIT-1: $(cat st1.jsonl)"
[ "$(cm_valid_count WAIT-1)" = 1 ] || fail "WAIT-1: $(cm_valid_count WAIT-1) valid certificates"
ok "keyline-cad back: the station finished WAIT-1 by itself, one valid certificate"

kca audit verify >verify.txt || fail "audit verify after the kills: $(cat verify.txt)"
ok "audit verify: $(head -1 verify.txt)"
for n in est1 est2; do kill -TERM "${CM_PID[$n]}"; wait "${CM_PID[$n]}" || fail "$n exit on SIGTERM"; unset "CM_PID[$n]"; done
cm_cad_stop a
