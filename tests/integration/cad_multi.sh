#!/usr/bin/env bash
# Two keyline-cad daemons (standing in for two hosts: same SoftHSM token folder, same store)
# serve two keyline-estd and two stations at once (issue 13 item 3, docs/deployment.md
# "A factory with several lines"). est1 and station 1 reach them on their Unix sockets, est2
# and station 2 over mutual TLS with the C client (front-end certificates est2.example and
# station2.example). Under that load: serial numbers unique, every certificate a client got is
# recorded, CRL numbers strictly increasing per CA whichever daemon signs, `audit verify` one
# valid chain, one hardware serial on two stations at once gets one identity, a request held
# for approval through one daemon is picked up through the other once the officer approves.
# tests/integration/cad_multi_pg.sh runs the same on PostgreSQL.
source "$KL_SRC/tests/lib/cad_multi.sh"
CM_EST_N=${CM_EST_N:-16}  # enrollments per EST server
CM_DEV_N=${CM_DEV_N:-3}   # devices per fixture (two fixtures per station)

[ -z "${CM_PG:-}" ] || cm_pg_start
cm_setup
cm_cad_start a
cm_cad_start b
# est1: a then b on Unix sockets; est2: b then a over mutual TLS; the stations likewise
cm_est_start 1 "unix:cad-a.sock, cad-b.sock"
cm_est_start 2 "$(cm_tls b), $(cm_tls a)" est2
grep -q "keyline-cad at .*(answered: tls:127.0.0.1:${CM_PORT[b]})" est2.log || fail "est2 did not reach b over TLS"
cm_station_conf 1 "cad-a.sock, unix:cad-b.sock"
cm_station_conf 2 "$(cm_tls b), $(cm_tls a)" station2
ok "2 keyline-cad, 2 keyline-estd (one over mutual TLS), 2 station configurations"

# ---- the C client's TLS checks: the daemon's certificate and name, the front end's key -----
bad() { # bad WHAT WANT LINES...: keyline-estd with these [est] lines refuses to start, saying WANT
  local what=$1 want=$2; shift 2
  cm_conf bad.conf "[est] listen = 127.0.0.1:$(cm_free_port)" "$@"
  if timeout 30 env -u KEYLINE_PIN "$KL_BIN/keyline-estd" -c bad.conf 2>bad.err; then fail "$what: started"; fi
  grep -q -- "$want" bad.err || fail "$what: $(tail -2 bad.err)"
  ok "$what refused: $(grep -o -- "$want.*" bad.err | head -1 | cut -c1-150)"
}
tlsfe=("[est] cad-tls-cert = est2.crt" "[est] cad-tls-key = est2.key")
bad "a daemon certificate from another CA" "its certificate: unable to get local issuer" \
  "[est] cad = $(cm_tls a)" "${tlsfe[@]}" "[est] cad-tls-ca = factory1.pem"
bad "a daemon reached by a name its certificate does not hold" "its certificate: .*mismatch" \
  "[est] cad = tls:localhost:${CM_PORT[a]}" "${tlsfe[@]}" "[est] cad-tls-ca = root1.pem"
cp est2.key loose.key; chmod 644 loose.key
bad "a front-end key others may read" "readable by others" \
  "[est] cad = $(cm_tls a)" "[est] cad-tls-cert = est2.crt" "[est] cad-tls-key = loose.key" "[est] cad-tls-ca = root1.pem"
bad "a tls: address without the TLS settings" "cad-tls-cert, cad-tls-key, cad-tls-ca" "[est] cad = $(cm_tls a)"
bad "a malformed address" "expected tls:HOST:PORT" "[est] cad = tls:127.0.0.1"
bad "an unknown scheme" "expected unix:PATH, PATH or tls:HOST:PORT" "[est] cad = tcp:127.0.0.1:1"

# ---- load: both EST servers and both stations at once -----------------------------------------
cm_est_csrs E
cm_line_devices M
devs=("${cm_devs[@]}")
crl_poll() { # fetch field1's CRL from each daemon in turn while the load runs
  local i=0
  while :; do
    for n in a b; do
      "$CC" -o "crl-$n-$i.der" "cad-$n.sock" crl issuer=field1 >/dev/null 2>&1 || true
    done
    i=$((i + 1))
    sleep 0.2
  done
}
crl_poll &
crlp=$!
cm_pids+=($crlp)
t0=$(date +%s.%N)
cm_est_load 1
cm_est_load 2
timeout 180 "$KL_BIN/keyline-provision" -c st1.conf --port fix1-1 --port fix1-2 --count $((2 * CM_DEV_N)) >>st1.log 2>&1 &
sp1=$!
timeout 180 "$KL_BIN/keyline-provision" -c st2.conf --port fix2-1 --port fix2-2 --count $((2 * CM_DEV_N)) >>st2.log 2>&1 &
sp2=$!
# the officer revokes while the daemons sign CRLs
sleep 1
for k in 1 2 3; do
  s=$(kca list --json | python3 -c 'import json,sys; c=[x for x in json.load(sys.stdin) if x.get("issuer")=="field1" and x.get("status")=="valid" and (x.get("device_id") or "").startswith("E")]; print(c[0]["serial"] if c else "")')
  [ -z "$s" ] || kca revoke --serial "$s" --reason superseded >/dev/null
  sleep 0.5
done
wait $sp1 || fail "station 1 exited non-zero"
wait $sp2 || fail "station 2 exited non-zero"
# the EST clients (the jobs cm_est_load started) have written one line per enrollment
for _ in $(seq 1 900); do
  [ "$(cat est-load-*.txt | wc -l)" -lt $((2 * CM_EST_N)) ] || break
  sleep 0.2
done
t1=$(date +%s.%N)
kill $crlp 2>/dev/null || true
ndone=$(cat est-load-*.txt | grep -c ' 200$' || true)
[ "$ndone" = $((2 * CM_EST_N)) ] || fail "EST: $ndone of $((2 * CM_EST_N)) enrollments answered 200: $(grep -v ' 200$' est-load-*.txt | head -3)"
ok "$((2 * CM_EST_N)) EST enrollments and $((4 * CM_DEV_N)) devices on 2 stations in $(python3 -c "print(round($t1 - $t0, 1))") s"

# ---- every certificate a client got is recorded, serials unique --------------------------------
kca list --json >all.json
for e in 1 2; do for i in $(seq 1 "$CM_EST_N"); do cm_serial "e$e-$i.pem"; done; done >got.txt
for s in 1 2; do python3 -c 'import json,sys; [print(json.loads(l)["cert_serial"]) for l in open(sys.argv[1]) if json.loads(l)["outcome"]=="ok"]' "st$s.jsonl"; done >>got.txt
[ "$(sort got.txt | uniq -d | wc -l)" = 0 ] || fail "a serial given out twice: $(sort got.txt | uniq -d | head -3)"
python3 - <<'PY' || fail "certificates given out without a record"
import json
rec = {c["serial"].upper(): c for c in json.load(open("all.json"))}
got = [l.strip().upper() for l in open("got.txt") if l.strip()]
missing = [s for s in got if s not in rec]
assert not missing, missing[:3]
serials = [c["serial"] for c in json.load(open("all.json"))]
assert len(serials) == len(set(serials)), "store lists a serial twice"
PY
ok "$(wc -l <got.txt) certificates given out, each recorded, no serial twice ($(python3 -c 'import json; print(len(json.load(open("all.json"))))') in the store)"
for d in "${devs[@]}"; do
  [ "$(cm_valid_count "$d")" = 1 ] || fail "device $d: $(cm_valid_count "$d") valid certificates"
done
ok "every device: exactly one valid certificate"

# ---- CRL numbers: strictly increasing per CA in signing order, whichever daemon signed -------
cm_crl_numbers field1 >crlnums.txt
[ "$(wc -l <crlnums.txt)" -ge 2 ] || fail "fewer than 2 CRLs signed for field1: $(cat crlnums.txt)"
cm_strictly_increasing <crlnums.txt || fail "CRL numbers of field1: $(tr '\n' ' ' <crlnums.txt)"
for f in crl-*.der; do
  [ -s "$f" ] || continue
  openssl crl -inform DER -in "$f" -noout -crlnumber | sed 's/.*=//'
done | sort -u >served.txt
python3 - <<'PY' || fail "a daemon served a CRL number that was never signed"
signed = {int(l) for l in open("crlnums.txt")}
served = {int(l, 16) for l in open("served.txt") if l.strip()}
assert served <= signed, sorted(served - signed)
PY
ok "field1: $(wc -l <crlnums.txt) CRLs signed, numbers $(head -1 crlnums.txt)..$(tail -1 crlnums.txt) strictly increasing; $(wc -l <served.txt) distinct ones served by both daemons"
# after a revocation each daemon serves a CRL that lists it, with a greater number
last=$(tail -1 crlnums.txt)
for i in $(seq 1 "$CM_EST_N"); do
  s=$(cm_serial "e2-$i.pem")
  kca show --serial "$s" >show.txt
  grep -qi revoked show.txt || break
done
kca revoke --serial "$s" --reason superseded >/dev/null || fail "revoke $s"
"$CC" -o after-a.der cad-a.sock crl issuer=field1 >/dev/null
"$CC" -o after-b.der cad-b.sock crl issuer=field1 >/dev/null
for n in a b; do
  num=$(openssl crl -inform DER -in "after-$n.der" -noout -crlnumber | sed 's/.*=//; s/^0x//')
  [[ "$num" =~ ^[0-9A-Fa-f]+$ ]] || fail "daemon $n: CRL number '$num'"
  [ $((16#$num)) -gt "$last" ] || fail "daemon $n: CRL $((16#$num)) after revoking, not above $last"
  openssl crl -inform DER -in "after-$n.der" -noout -text >crl.txt
  grep -qi "Serial Number: *$s" crl.txt || fail "daemon $n: CRL lacks $s"
done
ok "a revocation: both daemons' next CRLs list it, numbered above every earlier one"

# ---- one hardware serial on both stations at the same time: one identity -----------------------
: >st1.jsonl; : >st2.jsonl
twins=()
cm_devices_wait # the load's last devices have left fixtures 1-1 and 2-1
"$KDEV" --port "$KL_TEST_DIR/dev1-1" --serial TWIN-1 --state "$KL_TEST_DIR/twin-1.state" --misbehave slow --delay-ms 300 >>twin.log 2>&1 &
twins+=($!)
"$KDEV" --port "$KL_TEST_DIR/dev2-1" --serial TWIN-1 --state "$KL_TEST_DIR/twin-2.state" --misbehave slow --delay-ms 300 >>twin.log 2>&1 &
twins+=($!)
cm_pids+=("${twins[@]}")
timeout 120 "$KL_BIN/keyline-provision" -c st1.conf --port fix1-1 --count 1 >>st1.log 2>&1 &
tp1=$!
timeout 120 "$KL_BIN/keyline-provision" -c st2.conf --port fix2-1 --count 1 >>st2.log 2>&1 &
tp2=$!
r1=0; r2=0
wait $tp1 || r1=$?
wait $tp2 || r2=$?
[ "$(cm_valid_count TWIN-1)" = 1 ] || fail "TWIN-1 has $(cm_valid_count TWIN-1) valid certificates"
o1=$(cm_result st1.jsonl TWIN-1 outcome); o2=$(cm_result st2.jsonl TWIN-1 outcome)
[ "$o1/$o2" = "ok/failed" ] || [ "$o1/$o2" = "failed/ok" ] || fail "TWIN-1 outcomes: station 1 $o1 (exit $r1), station 2 $o2 (exit $r2)"
why=$(cat st1.jsonl st2.jsonl | python3 -c 'import json,sys; [print(json.loads(l)["error"]) for l in sys.stdin if json.loads(l)["outcome"]=="failed"]')
grep -Eq "already being provisioned|held by|claimed by" <<<"$why" || fail "TWIN-1 refused for another reason: $why"
ok "one hardware serial on two stations (one per daemon, one over TLS) at once: one identity; the other refused: $(cut -c1-120 <<<"$why")"

kill "${twins[@]}" 2>/dev/null || true
# the same with both stations over TLS with one front-end certificate (a pid keyline-cad cannot
# check: the claim must hold by its instance and lease, not by "same host, no pid")
cm_station_conf 3 "$(cm_tls a), $(cm_tls b)" station2
cm_fixture 3-1; cm_fixture 3-2
: >st2.jsonl; : >st3.jsonl
"$KDEV" --port "$KL_TEST_DIR/dev3-1" --serial TWIN-2 --state "$KL_TEST_DIR/twin-3.state" --misbehave slow --delay-ms 300 >>twin.log 2>&1 &
cm_pids+=($!)
"$KDEV" --port "$KL_TEST_DIR/dev3-2" --serial TWIN-2 --state "$KL_TEST_DIR/twin-4.state" --misbehave slow --delay-ms 300 >>twin.log 2>&1 &
cm_pids+=($!)
timeout 120 "$KL_BIN/keyline-provision" -c st2.conf --port fix3-1 --count 1 >>st2.log 2>&1 &
tp1=$!
timeout 120 "$KL_BIN/keyline-provision" -c st3.conf --port fix3-2 --count 1 >>st3.log 2>&1 &
tp2=$!
wait $tp1 || true
wait $tp2 || true
[ "$(cm_valid_count TWIN-2)" = 1 ] || fail "TWIN-2 (two TLS stations, one certificate) has $(cm_valid_count TWIN-2) valid certificates"
o1=$(cm_result st2.jsonl TWIN-2 outcome); o2=$(cm_result st3.jsonl TWIN-2 outcome)
[ "$o1/$o2" = "ok/failed" ] || [ "$o1/$o2" = "failed/ok" ] || fail "TWIN-2 outcomes: $o1, $o2"
why=$(cat st2.jsonl st3.jsonl | python3 -c 'import json,sys; [print(json.loads(l)["error"]) for l in sys.stdin if json.loads(l)["outcome"]=="failed"]')
ok "two stations over TLS with one front-end certificate, one hardware serial: one identity; $(cut -c1-140 <<<"$why")"

# ---- manual approval: held through daemon a (est1), picked up through daemon b (est2) ----------
cm_key_csr held1 "/CN=held-device/serialNumber=HELD-1"
st=$(cm_enroll 1 held1 /held)
[ "$st" = 202 ] || fail "held label through est1: HTTP $st ($(head -c 200 held1.out))"
id=$(grep -o 'request [0-9]*' held1.out | awk '{print $2}')
st=$(cm_enroll 2 held1 /held)
[ "$st" = 202 ] && grep -q "request $id " held1.out || fail "the same request through est2: HTTP $st ($(head -c 200 held1.out))"
kca request approve --id "$id" >approve.txt || fail "approve: $(cat approve.txt)"
grep -q "approved request $id: issued" approve.txt || fail "approve: $(cat approve.txt)"
st=$(cm_enroll 2 held1 /held)
[ "$st" = 200 ] || fail "retry through est2 (daemon b, TLS) after approval: HTTP $st"
[ "$(openssl x509 -in held1.pem -noout -pubkey)" = "$(openssl pkey -in held1.key -pubout)" ] || fail "held1: not the client's key"
ok "request $id held through daemon a, approved by the officer, delivered through daemon b"

# ---- audit: one valid chain; the TLS front ends are the actors of their requests --------------
kca audit verify >verify.txt || fail "audit verify: $(cat verify.txt)"
kca audit list >audit.txt
grep -q "front end CN=est2.example" audit.txt || fail "no audit entry names est2 (TLS)"
grep -q "front end CN=station2.example" audit.txt || fail "no audit entry names station2 (TLS)"
ok "audit verify: $(head -1 verify.txt)"

for n in est1 est2; do kill -TERM "${CM_PID[$n]}"; wait "${CM_PID[$n]}" || fail "$n exit on SIGTERM"; unset "CM_PID[$n]"; done
cm_cad_stop a
cm_cad_stop b
ok "SIGTERM: all exit 0"
