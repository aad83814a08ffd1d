#!/usr/bin/env bash
# PostgreSQL restarted under load (issue 13 item 4): two keyline-cad on one PostgreSQL database
# serve two keyline-estd (one over mutual TLS) and two stations while the database server goes
# down for a few seconds and comes back. In-flight requests fail cleanly: EST answers 503 with
# Retry-After (keyline-cad's store answers "unavailable"), the stations keep their devices
# waiting and try them again; service resumes by itself (no daemon restarted); nothing is
# issued without a record (every certificate a client got is in the store), nothing recorded
# is lost, each device one identity, audit verify one valid chain. Then a keyline-cad killed
# with SIGKILL on PostgreSQL: the front ends fail over as on SQLite (cad_failover.sh).
source "$KL_SRC/tests/lib/cad_multi.sh"
CM_EST_N=${CM_EST_N:-24}
CM_DEV_N=${CM_DEV_N:-3}

cm_pg_start
# --linger-ms: a locked device stays on its fixture while the station waits for the CA service
# (as a real one does until the operator takes it off)
cm_failover_start b a P Q --linger-ms 10000
devs=("${cm_devs[@]}")

# the database goes away once some of the load is done, for 3 s
n=$(cm_wait_issued PQ 6)
"$KL_SRC/tests/lib/pg.sh" restart "$CM_PG_DIR" 3 || fail "PostgreSQL restart"
ok "PostgreSQL stopped for 3 s and started again after $n certificates"

wait $cm_sp1 || fail "station 1 exited non-zero around the database restart"
wait $cm_sp2 || fail "station 2 exited non-zero around the database restart"
for _ in $(seq 1 900); do
  [ "$(cat est-load-*.txt | wc -l)" -lt $((2 * CM_EST_N)) ] || break
  sleep 0.2
done
bad=$(grep -vh ' 200$' est-load-*.txt || true)
[ -z "$bad" ] || fail "EST around the database restart: $bad"
n503=$(cat e*.503 | wc -l)
[ "$n503" -ge 1 ] || fail "no enrollment was answered 503 while the database was down"
grep -vqx 10 <(cat e*.503) && fail "a 503 without Retry-After: 10: $(sort -u e*.503)"
grep -q "store unavailable" est1.log est2.log || fail "keyline-estd did not log the store as unavailable"
ok "all $((2 * CM_EST_N)) enrollments answered 200 in the end; $n503 answers on the way were 503 + Retry-After: 10"
nretry=$(cat st1.log st2.log | grep -c "CA service unavailable" || true)
ok "stations: $nretry device attempts waited for the CA service, none failed"
for s in 1 2; do
  python3 - "st$s.jsonl" <<'PY' || fail "station $s reported a failed device"
import json, sys
bad = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["outcome"] != "ok"]
assert not bad, [(b["hw_serial"], b["error"]) for b in bad]
PY
done

# nothing issued without a record, nothing recorded lost, one identity each
kca list --json >all.json
for e in 1 2; do for i in $(seq 1 "$CM_EST_N"); do cm_serial "e$e-$i.pem"; done; done >got.txt
for s in 1 2; do python3 -c 'import json,sys; [print(json.loads(l)["cert_serial"]) for l in open(sys.argv[1])]' "st$s.jsonl"; done >>got.txt
python3 - <<'PY' || fail "certificates given out without a record"
import json
rec = {c["serial"].upper() for c in json.load(open("all.json"))}
got = [l.strip().upper() for l in open("got.txt") if l.strip()]
missing = [s for s in got if s not in rec]
assert not missing, missing[:3]
assert len(got) == len(set(got)), "a serial given out twice"
PY
for d in "${devs[@]}"; do
  [ "$(cm_valid_count "$d")" = 1 ] || fail "device $d: $(cm_valid_count "$d") valid certificates"
done
ok "$(wc -l <got.txt) certificates given out, each recorded; every device one valid certificate"

# the database down in the middle of a device: the station keeps it waiting, EST answers 503
: >st1.jsonl
cm_devices_wait # the load's last devices have left fixtures 1-1 and 2-1
"$KL_BIN/keyline-devsim" --port "$KL_TEST_DIR/dev1-1" --serial WAIT-PG --state "$KL_TEST_DIR/WAIT-PG.state" \
  --misbehave slow --delay-ms 200 >>WAIT-PG.log 2>&1 &
cm_pids+=($!)
timeout 120 "$KL_BIN/keyline-provision" -c st1.conf --port fix1-1 --count 1 >>st1b.log 2>&1 &
sp=$!
for _ in $(seq 1 100); do grep -q "WAIT-PG: HELLO" st1b.log && break; sleep 0.05; done
"$KL_SRC/tests/lib/pg.sh" down "$CM_PG_DIR"
cm_key_csr down1 "/CN=down/serialNumber=DOWN-1"
openssl req -in down1.csr -outform DER | openssl base64 >down1.b64
st=$(curl -s --cacert root1.pem -u "$CM_USER:$CM_PASS" -H "Content-Type: application/pkcs10" -D down1.hdr \
  -o down1.out -w '%{http_code}' --data-binary @down1.b64 "https://127.0.0.1:${CM_PORT[est2]}/.well-known/est/simpleenroll")
tr -d '\r' <down1.hdr >down1.h
[ "$st" = 503 ] && grep -qix 'retry-after: 10' down1.h || fail "database down: HTTP $st, $(cat down1.h)"
for _ in $(seq 1 200); do [ "$(grep -c "WAIT-PG: CA service unavailable" st1b.log)" -ge 3 ] && break; sleep 0.05; done
[ "$(grep -c "WAIT-PG: CA service unavailable" st1b.log)" -ge 3 ] || fail "station: no retries while the database is down: $(tail -3 st1b.log)"
[ ! -s st1.jsonl ] || fail "station reported the device while the database was down: $(cat st1.jsonl)"
grep -q "WAIT-PG: CA service unavailable.*store unavailable" st1b.log || fail "the station's log does not say the store is unavailable"
ok "database down mid-device: EST (over TLS) 503 + Retry-After: 10, the station keeps WAIT-PG waiting"
"$KL_SRC/tests/lib/pg.sh" up "$CM_PG_DIR"
wait $sp || fail "station exit after the database came back: $(tail -3 st1b.log)"
[ "$(cm_result st1.jsonl WAIT-PG outcome)" = ok ] || fail "WAIT-PG: $(cat st1.jsonl)"
[ "$(cm_valid_count WAIT-PG)" = 1 ] || fail "WAIT-PG: $(cm_valid_count WAIT-PG) valid certificates"
st=$(cm_enroll 2 down1)
[ "$st" = 200 ] || fail "database back: est2 HTTP $st"
ok "database back: the station finished WAIT-PG (one valid certificate), EST issues again; no daemon restarted"

# a keyline-cad killed on PostgreSQL: the front ends go on with the other
kill -KILL "${CM_PID[b]}"; wait "${CM_PID[b]}" 2>/dev/null || true; unset "CM_PID[b]"
cm_key_csr after1 "/CN=after/serialNumber=AFTER-1"
st=$(cm_enroll 2 after1)
[ "$st" = 200 ] || fail "est2 (TLS, b first) after b was killed: HTTP $st"
cm_key_csr after2 "/CN=after/serialNumber=AFTER-2"
st=$(cm_enroll 1 after2)
[ "$st" = 200 ] || fail "est1 after b was killed: HTTP $st"
ok "keyline-cad b killed: both keyline-estd issue through a"

kca audit verify >verify.txt || fail "audit verify: $(cat verify.txt)"
ok "audit verify: $(head -1 verify.txt)"
for n in est1 est2; do kill -TERM "${CM_PID[$n]}"; wait "${CM_PID[$n]}" || fail "$n exit on SIGTERM"; unset "CM_PID[$n]"; done
cm_cad_stop a
