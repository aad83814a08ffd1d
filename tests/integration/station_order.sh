# Production orders end to end: keyline-ca order create|list|show|close|verify; keyline-cad
# issues for a station only under its open order and never more than its count, taken in the
# certificate's own transaction: two station processes with three fixtures each race six
# devices for an order of four; keyline-cad killed (SIGKILL) and restarted, the count holds; a
# station without [station] id, a wrong model, an expired order; the station starts no device
# once its order is exhausted and its dashboard says so (Chromium); an operator closes the order
# on the dashboard; the signed report checked offline, and refused once altered.
source "$KL_SRC/tests/integration/station_common.sh"
command -v chromium >/dev/null || fail "chromium is not installed (scripts/deps installs it)"
OUT="$KL_BUILD/test-output/station_order"
rm -rf "$OUT"; mkdir -p "$OUT"
printf 'op-secret\n' | openssl passwd -6 -stdin | sed 's/^/bob:/' >operators.htpasswd
st_setup "id = line-7" "dashboard-users = operators.htpasswd"
tomorrow=$(date -u -d '+1 day' +%Y-%m-%d)

# ---- the CLI contract
expect_fail "order create without --count" kca order create --model keyline-sim --station line-7 --expires "$tomorrow"
expect_fail "order create in the past" kca order create --model keyline-sim --count 4 --station line-7 --expires 2020-01-01
expect_fail "order create with a bad date" kca order create --model keyline-sim --count 4 --station line-7 --expires 2027-02-30
expect_fail "order create with a bad station" kca order create --model keyline-sim --count 4 --station 'line 7' --expires "$tomorrow"
expect_fail "order create with count 0" kca order create --model keyline-sim --count 0 --station line-7 --expires "$tomorrow"
kca order create --help | grep -q -- "--model M --count N --station ID --expires DATE" || fail "order create --help"
id=$(kca order create --model keyline-sim --count 4 --station line-7 --expires "$tomorrow")
[[ $id =~ ^O-[0-9]{8}-[0-9a-f]{8}$ ]] || fail "order create printed '$id'"
jid=$(kca order create --model other-model --count 1 --station line-9 --expires "$tomorrow" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
[ -n "$jid" ] || fail "order create --json"
kca order list | grep -q "^$id  *open  *keyline-sim  *line-7  *station  *0/4" || { kca order list; fail "order list"; }
[ "$(kca order list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ] || fail "order list --json"
kca order show "$id" | grep -q "signature:  good" || fail "order show: signature"
kca audit list | grep -q "order-create" || fail "no order-create audit entry"
ok "order create/list/show (id $id, signed with the audit key)"

# ---- a station without [station] id is refused once the profile has orders
sed '/^id = line-7$/d' "$KL_CONF" >noid.conf
for n in 1 2 3 4 5 6 7; do st_fixture $n; done
st_dev 7 NOID-1
timeout 60 "$KPROV" -c noid.conf --port "$KL_TEST_DIR/fix7" --count 1 >>noid.log 2>&1 && fail "a station without id provisioned under an ordered profile"
grep -q "issues only under production orders" results.jsonl || { tail noid.log; fail "no reason for the refusal"; }
[ "$(st_valid_count NOID-1)" = 0 ] || fail "NOID-1 got a certificate"
# a device of a model the station has no order for is not started (left untouched)
st_dev 7 MODEL-1 --model other-model
timeout 10 "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix7" --count 1 >>model.log 2>&1 && fail "a device of another model was provisioned"
grep -q "MODEL-1: not started: station line-7 has no production order for model 'other-model'" model.log ||
  { tail -3 model.log; fail "model refusal"; }
[ "$(st_all_count MODEL-1)" = 0 ] || fail "MODEL-1 got a certificate"
grep -q '"hw_serial":"MODEL-1"' results.jsonl && fail "MODEL-1 was started"
ok "a station without [station] id is refused; a device of another model is not started"

# ---- two stations race six devices for the four units of the order
: >results.jsonl
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$port"
for n in 1 2 3 4 5 6; do st_dev $n "RACE-$n" --misbehave slow --delay-ms 150; done
"$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --port "$KL_TEST_DIR/fix2" --port "$KL_TEST_DIR/fix3" \
  --dashboard "127.0.0.1:$port" >>stationA.log 2>&1 &
sa=$!; st_pids+=($sa)
"$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix4" --port "$KL_TEST_DIR/fix5" --port "$KL_TEST_DIR/fix6" \
  >>stationB.log 2>&1 &
sb=$!; st_pids+=($sb)
for i in $(seq 1 600); do
  [ "$(grep -c '"hw_serial":"RACE-' results.jsonl)" -ge 6 ] && break
  [ "$(grep -c '"outcome":"ok"' results.jsonl)" -ge 4 ] &&
    [ "$(grep -c 'not started' stationA.log stationB.log | awk -F: '{n += $2} END {print n}')" -ge 2 ] && break
  sleep 0.1
done
valid=$(kca list --status valid --json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if (c.get("device_id") or "").startswith("RACE-")))')
okn=$(grep -c '"outcome":"ok"' results.jsonl || true)
exh=$(grep -c "is exhausted (4 of 4 issued)" results.jsonl stationA.log stationB.log | awk -F: '{n += $2} END {print n}')
echo "race: $okn provisioned, $valid valid certificates, $exh refusals naming the exhausted order"
[ "$valid" = 4 ] && [ "$okn" = 4 ] || { tail -20 stationA.log stationB.log; fail "race: $valid valid certificates, $okn ok results, not 4"; }
[ "$exh" -ge 2 ] || fail "race: the two devices left over were not refused for the exhausted order"
# How many of the refusals came from inside keyline-cad's issuing transaction (devices that
# passed the station's own check) depends on timing: reported, not required here. The count
# taken in the certificate's transaction is raced deterministically by unit.store.order (six
# processes for seven units); what this test requires is the end result: exactly 4.
tx=$(grep -c 'issuing refused: production order [^ ]* is exhausted (4 of 4 issued)' results.jsonl || true)
echo "race: $tx refused inside the issuing transaction"
kca order show "$id" | grep -q "issued:     4 of 4 (0 remaining)" || { kca order show "$id"; fail "order count after the race"; }
kca order show "$id" | grep -q "state:      exhausted" || fail "order state after the race"
ok "two stations, six devices, an order of four: exactly four certificates"

# ---- the dashboard says the order stops the line, and the waiting device is not started
python3 - "$URL" "$OUT" <<'PY' || fail "dashboard checks (above)"
import json, os, sys
sys.path.insert(0, os.environ["KL_SRC"] + "/tests/lib")
from cdp import Browser
url, out = sys.argv[1:3]
with Browser(log=out + "/chromium.log") as b:
    b.open(url + "/", 1280, 800)
    b.wait("document.getElementById('o-state').textContent == 'exhausted'", 30)
    b.wait("!document.getElementById('banner').classList.contains('hidden')", 10)
    banner = b.eval("document.getElementById('banner').textContent")
    progress = b.eval("document.getElementById('o-progress').textContent")
    print("banner:", banner, "| progress:", progress)
    assert "is exhausted (4 of 4 issued): no device is started" in banner, banner
    assert progress.startswith("4 of 4 issued, 0 remaining"), progress
    b.screenshot(out + "/dashboard-order-exhausted.png")
PY
curl -fs "$URL/metrics" | grep -q "^keyline_station_order_remaining{order=\"$id\"} 0$" || fail "order remaining in /metrics"
ok "the dashboard shows the exhausted order (banner, progress, /metrics remaining 0)"

# ---- keyline-cad killed and restarted: the count holds, a new device is still refused
kill -KILL "$CAD_PID"; wait "$CAD_PID" 2>/dev/null || true; CAD_PID=
st_cad_start
kill $sa $sb 2>/dev/null || true; wait $sa $sb 2>/dev/null || true
for n in 1 2 3 4 5 6; do st_unplug $n; done
st_dev 1 AFTER-1
timeout 20 "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --count 1 >>after.log 2>&1 && fail "a device was provisioned past the order after the restart"
grep -q "AFTER-1: not started: production order $id is exhausted" after.log || { tail after.log; fail "after restart: no refusal"; }
[ "$(st_valid_count AFTER-1)" = 0 ] || fail "AFTER-1 got a certificate"
ok "after keyline-cad was killed and restarted, the order still allows nothing more"

# ---- a new order: an operator closes it on the dashboard, then the officer's signed report
id2=$(kca order create --model keyline-sim --count 10 --station line-7 --expires "$tomorrow")
st_dev 1 NEW-1
"$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --dashboard "127.0.0.1:$port" >>stationC.log 2>&1 &
sc=$!; st_pids+=($sc)
st_wait_grep '"hw_serial":"NEW-1"' results.jsonl 60 || fail "NEW-1 not provisioned under the new order"
st_check_device NEW-1
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'X-Keyline-Dashboard: 1' "$URL/order/close?id=$id2")
[ "$code" = 401 ] || fail "order close without a password: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -u bob:op-secret -H 'X-Keyline-Dashboard: 1' "$URL/order/close")
[ "$code" = 400 ] || fail "order close without the order's id: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -u bob:op-secret -H 'X-Keyline-Dashboard: 1' "$URL/order/close?id=$id")
[ "$code" = 409 ] || fail "order close naming the station's previous order: HTTP $code"
curl -fs -X POST -u bob:op-secret -H 'X-Keyline-Dashboard: 1' "$URL/order/close?id=$id2" >/dev/null || fail "order close on the dashboard"
kca order show "$id2" | grep -q "state:      closed" || fail "the dashboard did not close the order"
kca order show "$id2" | grep "closed: .* for operator bob" || { kca order show "$id2"; fail "closed by whom"; }
st_dev 1 NEW-2
st_wait_grep "NEW-2: not started: production order" stationC.log 20 || fail "a device started under a closed order"
grep -q "\"hw_serial\":\"NEW-2\"" results.jsonl && fail "NEW-2 has a result"
kill $sc; wait $sc 2>/dev/null || true
ok "an operator closed order $id2 on the dashboard; the station starts nothing under it"

# expired: an order that ends in three seconds
exp=$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)
id3=$(kca order create --model keyline-sim --count 10 --station line-7 --expires "$exp")
sleep 4
kca order show "$id3" | grep -q "state:      expired" || fail "order $id3 not expired"
st_dev 2 LATE-1
timeout 15 "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix2" --count 1 >>late.log 2>&1 && fail "provisioned under an expired order"
grep -q "LATE-1: not started: production order $id3 is expired" late.log || { tail late.log; fail "expired: no refusal"; }
ok "an expired order starts no device"

kca order close "$id" --out report.txt 2>close.err || { cat close.err; fail "order close"; }
grep -q "closed: 4 of 4 issued" close.err || fail "order close message: $(cat close.err)"
[ "$(grep -c '^serial: ' report.txt)" = 4 ] || fail "report lists $(grep -c '^serial: ' report.txt) serials"
for s in $(kca list --status valid --json | python3 -c 'import json,sys; print(" ".join(c["serial"] for c in json.load(sys.stdin) if (c.get("device_id") or "").startswith("RACE-")))'); do
  grep -q "^serial: $s " report.txt || fail "report lacks $s"
done
pin=$(kca audit verify 2>&1 | grep -o 'audit key [^ ]*sha256 [0-9a-f]*\|[0-9a-f]\{64\}' | tail -1)
kca order verify report.txt | grep -q "good: order $id" || fail "order verify"
# offline: no configuration at all
env -u KEYLINE_CONF "$KL_BIN/keyline-ca" -c /nonexistent order verify report.txt >/dev/null || fail "order verify needs a configuration"
spki=$(grep '^audit-key: ' report.txt | cut -d' ' -f2 | base64 -d | sha256sum | cut -d' ' -f1)
kca order verify report.txt --audit-key-sha256 "$spki" | grep -q "(pinned)" || fail "pinned verify"
expect_fail "a report pinned to another key" kca order verify report.txt --audit-key-sha256 "$(printf %064d 0)"
sed 's/^issued: 4$/issued: 3/' report.txt >cut.txt
expect_fail "a report with an altered count" kca order verify cut.txt
sed '0,/^serial: /{/^serial: /d}' report.txt >drop.txt
expect_fail "a report with a serial taken out" kca order verify drop.txt
sed 's/^count: 4$/count: 40/' report.txt >more.txt
expect_fail "a report with a larger order" kca order verify more.txt
cp report.txt "$OUT/order-report.txt"
kca order list | grep -q "^$id  *closed" || fail "order list after close"
ok "order close --out: a signed report of the 4 serials; order verify offline, alterations refused"
