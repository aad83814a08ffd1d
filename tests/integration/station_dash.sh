# The operator dashboard in a real browser: keyline-provision --dashboard with three devsim
# fixtures, the page opened in headless Chromium (DevTools protocol over a pipe, tests/lib/cdp.py),
# tiles and counters checked against the store, a misbehaving device's failure and its
# docs/station.md hint on the page, screenshots at 1280x800 and phone size, operator actions
# (pause, resume) only with the password, /metrics checked by promtool.
source "$KL_SRC/tests/integration/station_common.sh"
command -v chromium >/dev/null || fail "chromium is not installed (scripts/deps installs it)"
OUT="$KL_BUILD/test-output/station_dash"
rm -rf "$OUT"; mkdir -p "$OUT"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$port"
printf 'op-secret\n' | openssl passwd -6 -stdin | sed 's/^/alice:/' >operators.htpasswd
st_setup "id = line-7" "dashboard-users = operators.htpasswd"
for n in 1 2 3; do st_fixture $n; done
st_dev 1 DASH-1a
st_dev 2 DASH-2a
st_dev 3 DASH-BAD --misbehave refuse-lock

"$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --port "$KL_TEST_DIR/fix2" \
  --port "$KL_TEST_DIR/fix3" --dashboard "127.0.0.1:$port" >>station.log 2>&1 &
station=$!; st_pids+=($station)
for i in $(seq 1 100); do curl -fs "$URL/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "$URL/healthz" >/dev/null || { tail station.log; fail "dashboard did not answer"; }
grep -q "dashboard on http://127.0.0.1:$port/" station.log || fail "no dashboard log line"

# a second device on fixture 1 once the first left (the tile's counters go to 2)
first=${st_fixdev[1]}
( while kill -0 $first 2>/dev/null; do sleep 0.1; done; exec "$KDEV" --port "$KL_TEST_DIR/dev1" --serial DASH-1b \
    --state "$KL_TEST_DIR/DASH-1b.state" >>DASH-1b.log 2>&1 ) &
st_pids+=($!)

python3 - "$URL" "$OUT" "$KL_SRC/docs/station.md" <<'PY' || fail "browser checks (above)"
import json, struct, sys
sys.path.insert(0, sys.argv[0] and __import__("os").environ["KL_SRC"] + "/tests/lib")
from cdp import Browser
url, out, doc = sys.argv[1:4]
docs = open(doc).read()

def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    import urllib.request
    print(urllib.request.urlopen(url + "/state").read().decode(), file=sys.stderr)
    sys.exit(1)

with Browser(log=out + "/chromium.log") as b:
    b.open(url + "/", 1280, 800)
    # tiles for the three fixtures, three devices provisioned, one failure with its hint
    b.wait("document.querySelectorAll('.tile').length == 3", 30)
    try:
        b.wait("document.getElementById('c-provisioned').textContent == '3' && "
               "document.getElementById('c-failed').textContent == '1' && "
               "[...document.querySelectorAll('.tile')].every(t => t.dataset.state != 'working')",
               90)
    except Exception as e:
        b.screenshot(out + "/timeout.png")
        fail(str(e))
    tiles = b.eval("""[...document.querySelectorAll('.tile')].map(t => ({
        name: t.dataset.fixture, state: t.dataset.state,
        last: (t.querySelector('.last') || {}).textContent || '',
        hint: (t.querySelector('.hint') || {}).textContent || '',
        counts: t.querySelector('.counts').textContent}))""")
    print(json.dumps(tiles, indent=1))
    by = {t["name"]: t for t in tiles}
    if "OK DASH-1b" not in by["fix1"]["last"] or by["fix1"]["counts"] != "2 ok · 0 failed":
        fail("fix1 tile: %s" % by["fix1"])
    if "OK DASH-2a" not in by["fix2"]["last"]:
        fail("fix2 tile: %s" % by["fix2"])
    bad = by["fix3"]
    if "FAILED DASH-BAD at lock" not in bad["last"] or "REFUSED" not in bad["last"]:
        fail("fix3 tile does not show the failure: %s" % bad)
    hint = bad["hint"].replace("What to do: ", "")
    if not hint or hint not in docs:
        fail("fix3 hint %r is not the docs/station.md text" % hint)
    fails = b.eval("""[...document.querySelectorAll('#failures li.failure')].map(l => ({
        serial: l.dataset.serial, err: l.querySelector('.err').textContent,
        hint: l.querySelector('.hint').textContent}))""")
    if len(fails) != 1 or fails[0]["serial"] != "DASH-BAD" or hint not in fails[0]["hint"]:
        fail("last failures list: %s" % fails)
    station = b.eval("document.getElementById('station-id').textContent")
    if station != "line-7":
        fail("station id shown: %r" % station)
    counters = b.eval("""({p: document.getElementById('c-provisioned').textContent,
        f: document.getElementById('c-failed').textContent,
        rate: document.getElementById('c-rate').textContent,
        fpy: document.getElementById('c-fpy').textContent})""")
    print("counters", counters)
    if counters["fpy"] != "75.0 %":
        fail("first-pass yield %s, not 75.0 %% (3 of 4 devices)" % counters["fpy"])
    if float(counters["rate"]) <= 0:
        fail("devices per hour %s" % counters["rate"])
    over = b.eval("document.documentElement.scrollWidth - window.innerWidth")
    if over > 0:
        fail("the page is %d px wider than 1280" % over)
    b.screenshot(out + "/dashboard-1280x800.png")
    if png_size(out + "/dashboard-1280x800.png") != (1280, 800):
        fail("screenshot size %s" % (png_size(out + "/dashboard-1280x800.png"),))
    # a phone: one column, nothing wider than the screen
    b.size(390, 844, mobile=True)
    b.wait("document.documentElement.scrollWidth <= window.innerWidth", 10)
    b.screenshot(out + "/dashboard-phone.png")
    b.size(1280, 800)

    # operator action through the page: pause fixture 2 (log-in form first)
    b.eval("[...document.querySelectorAll('.tile')].find(t => t.dataset.fixture == 'fix2')"
           ".querySelector('button.act').click()")
    b.wait("!document.getElementById('login').classList.contains('hidden')", 10)
    b.eval("""document.getElementById('login-user').value = 'alice';
              document.getElementById('login-pass').value = 'op-secret';
              document.getElementById('login').requestSubmit(); true""")
    b.wait("[...document.querySelectorAll('.tile')].find(t => t.dataset.fixture == 'fix2')"
           ".dataset.state == 'paused'", 15)
    errs = b.console_errors()
    if errs:
        fail("the page reported errors: %s" % errs)
    b.screenshot(out + "/dashboard-paused.png")
    json.dump(tiles, open(out + "/tiles.json", "w"), indent=1)
PY
ok "dashboard in Chromium: 3 tiles, 3 provisioned, 1 failed with its docs hint, first-pass yield 75 %, screenshots in $OUT"

# the counters are the store's
state=$(curl -fs "$URL/state")
prov=$(echo "$state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["provisioned"])')
valid=$(kca list --status valid --json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if (c.get("device_id") or "").startswith("DASH-")))')
[ "$prov" = "$valid" ] && [ "$valid" = 3 ] || fail "dashboard says $prov provisioned, the store has $valid valid DASH- certificates"
failed=$(grep -c '"outcome":"failed"' results.jsonl)
[ "$(echo "$state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["failed"])')" = "$failed" ] || fail "failed counter"
for s in DASH-1a DASH-1b DASH-2a; do st_check_device $s; done
ok "counters match the store ($valid valid certificates) and the results file ($failed failed)"

# fixture 2 is paused: a device plugged in there is not started until an operator resumes it
st_dev 2 DASH-2b
sleep 2
grep -q '"hw_serial":"DASH-2b"' results.jsonl && fail "a paused fixture started a device"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'X-Keyline-Dashboard: 1' "$URL/fixture/fix2/resume")
[ "$code" = 401 ] || fail "resume without a password: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -u alice:wrong -H 'X-Keyline-Dashboard: 1' "$URL/fixture/fix2/resume")
[ "$code" = 401 ] || fail "resume with a wrong password: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -u alice:op-secret "$URL/fixture/fix2/resume")
[ "$code" = 403 ] || fail "resume without the dashboard header (cross-site form): HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -u alice:op-secret -H 'X-Keyline-Dashboard: 1' "$URL/fixture/nope/resume")
[ "$code" = 404 ] || fail "resume of an unknown fixture: HTTP $code"
grep -q '"hw_serial":"DASH-2b"' results.jsonl && fail "a refused action resumed the fixture"
curl -fs -X POST -u alice:op-secret -H 'X-Keyline-Dashboard: 1' "$URL/fixture/fix2/resume" >/dev/null || fail "resume with the password"
st_wait_grep '"hw_serial":"DASH-2b"' results.jsonl 60 || fail "DASH-2b not provisioned after resume"
st_check_device DASH-2b
grep -q "fix2: paused by alice on the dashboard" station.log || fail "pause not logged with the operator"
ok "pause/resume need the operator password and the dashboard header; a paused fixture starts nothing"

# /metrics on the same listener
curl -fs "$URL/metrics" >metrics.txt || fail "/metrics"
promtool check metrics <metrics.txt >promtool.log 2>&1 || { cat promtool.log; fail "promtool check metrics"; }
grep -q '^keyline_station_devices_total{outcome="ok"} 4$' metrics.txt || fail "devices ok in /metrics"
grep -q '^keyline_station_devices_total{outcome="failed"} 1$' metrics.txt || fail "devices failed in /metrics"
grep -q '^keyline_station_phase_duration_seconds_count{phase="issue"} 5$' metrics.txt || fail "issue histogram count (4 ok + 1 failed at lock)"
fx=$(awk '/^keyline_station_fixtures\{state="(done|waiting)"\}/ { n += $2 } END { print n }' metrics.txt)
[ "$fx" = 3 ] && grep -q '^keyline_station_fixtures{state="working"} 0$' metrics.txt ||
  { grep fixtures metrics.txt; fail "fixture states in /metrics: $fx done or waiting, not 3"; }
cp metrics.txt "$OUT/metrics.txt"
ok "/metrics: devices by outcome, phase histogram, fixture states (promtool clean)"

# the page brings everything itself, with a strict content security policy
curl -fsi "$URL/" >page.txt
grep -qi "^content-security-policy: default-src 'none'" page.txt || fail "no CSP"
grep -Eo '(src|href)="[^"]*"' page.txt | grep -v '="/' && fail "the page refers to something not served by the station"
curl -fs "$URL/dash.js" | grep -q "innerHTML" && fail "dash.js uses innerHTML"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$URL/")
[ "$code" = 405 ] || fail "DELETE: HTTP $code"
# HEAD as GET (uptime checks), but not of the event stream
curl -fsI "$URL/healthz" | grep -q "^HTTP/1.1 200" || fail "HEAD /healthz"
curl -fsI "$URL/" | grep -qi "^content-type: text/html" || fail "HEAD /"
code=$(curl -s -I -o /dev/null -w '%{http_code}' "$URL/events")
[ "$code" = 405 ] || fail "HEAD /events: HTTP $code"
ok "no external assets; CSP; HEAD as GET; 405 for other methods"

kill -TERM $station; st_wait_pid $station 20 || true
# loopback unless an address says otherwise; a bad address or a port in use is refused
python3 -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(60)' >busy.port &
busy=$!; st_pids+=($busy)
for i in $(seq 1 50); do [ -s busy.port ] && break; sleep 0.1; done
expect_fail "dashboard on a port in use" "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --dashboard "127.0.0.1:$(cat busy.port)" --count 1
kill $busy
expect_fail "dashboard on a bad address" "$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --dashboard "127.0.0.1:99999" --count 1
port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$KPROV" -c "$KL_CONF" --port "$KL_TEST_DIR/fix1" --dashboard "$port2" >>station2.log 2>&1 &
s2=$!; st_pids+=($s2)
for i in $(seq 1 50); do curl -fs "http://127.0.0.1:$port2/healthz" >/dev/null && break; sleep 0.1; done
grep -q "dashboard on http://127.0.0.1:$port2/" station2.log || fail "a bare port does not mean loopback"
ss -ltn "sport = :$port2" | grep -q "127.0.0.1:$port2" || fail "not bound to 127.0.0.1"
kill -TERM $s2; st_wait_pid $s2 20 || true
ok "a bare port listens on loopback only; bad addresses refused"
