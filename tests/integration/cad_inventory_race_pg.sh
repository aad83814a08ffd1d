#!/usr/bin/env bash
# Two stations race one device's claim and inventory row through two keyline-cad daemons on one
# PostgreSQL store (the "several hosts" deployment, docs/deployment.md), end to end over the CA
# protocol. Station 1 asks daemon a, station 2 daemon b; each is one process with one connection
# (the claim's holder is that process), and a barrier sends their racing requests at once.
#
#   claim (C-NN)     both claim a fresh device: one wins and provisions it (known, issue
#                    pending, inventory pending, activate, inventory provisioned, release), the
#                    other is refused 'exists' naming the winner's fixture and pid.
#   row (R-NN)       the claim is no guard any more (station 1's lease ran out while it stalled;
#                    station 2 took the device over): each station issues a pending certificate
#                    and both activate theirs at once: one is activated, the other refused (one
#                    valid identity per device, store_cert_activate). Then, at once, the winner
#                    writes the row 'provisioned' and the loser writes it 'failed' naming its own
#                    certificate: the row's compare-and-set (store_device_put_if) never lets the
#                    loser's write replace the winner's ("holds valid certificate ...", or
#                    'exists' after two reads); the loser revokes its own certificate.
#   revoke (V-NN)    station 1 writes its activated certificate's row 'provisioned' while
#                    station 2 revokes that certificate: the row never ends 'provisioned' with a
#                    revoked certificate.
#
# Then, from the store (keyline-ca, not the daemons): every C and R device has exactly one valid
# certificate, the winner's, and a provisioned row naming it; one 'provisioned' audit entry per
# device; every V device's certificate revoked and its row 'revoked'; every certificate a
# station got recorded; `audit verify` one valid chain; both daemons exit 0 on SIGTERM.
source "$KL_SRC/tests/lib/cad_multi.sh"
RACE_N=${RACE_N:-20} # devices per part

cm_pg_start
cm_setup
cm_cad_start a
cm_cad_start b
ok "2 keyline-cad on one PostgreSQL store"

cat >race.py <<'PY'
import json, multiprocessing as mp, os, signal, socket, struct, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# docs/ca-protocol.md: ops, field tags, status codes (kl_rc)
OP = {"issue": 2, "activate": 3, "claim": 10, "release": 11, "inventory": 17, "known": 18,
      "revoke": 19}
TAG = {"profile": 1, "csr": 2, "auth": 3, "device-id": 6, "pending": 7, "serial": 8, "cert": 12,
       "status": 16, "message": 17, "reason": 18, "instance": 19, "fixture": 20, "lease": 21,
       "holder": 22, "state": 27, "model": 31, "detail": 32}
NAME = {v: k for k, v in TAG.items()}
UNAVAILABLE = 13
socks, rounds = sys.argv[1:3], int(sys.argv[3])


def csr_der(dev):
    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "race-model"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, dev)])
    req = x509.CertificateSigningRequestBuilder().subject_name(subj).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.DER)


class Station:
    def __init__(self, n, sock):
        self.n, self.fixture = n, "fix%d" % n
        self.instance = "race-st%d-%d" % (n, os.getpid())
        self.c = socket.socket(socket.AF_UNIX)
        self.c.settimeout(60)
        self.c.connect(sock)
        self.out = open("race-st%d.jsonl" % n, "w")

    def recv(self, n):
        b = b""
        while len(b) < n:
            chunk = self.c.recv(n - len(b))
            if not chunk:
                raise ConnectionError("keyline-cad closed the connection")
            b += chunk
        return b

    def call1(self, op, fields):
        body = bytes([1, OP[op], 0])
        for k, v in fields.items():
            if isinstance(v, int):
                v = struct.pack(">Q", v)
            elif isinstance(v, str):
                v = v.encode()
            body += bytes([TAG[k]]) + struct.pack(">I", len(v)) + v
        self.c.sendall(struct.pack(">I", len(body)) + body)
        body = self.recv(struct.unpack(">I", self.recv(4))[0])
        ans, pos = {}, 3
        while pos < len(body):
            tag, ln = body[pos], struct.unpack(">I", body[pos + 1:pos + 5])[0]
            v = body[pos + 5:pos + 5 + ln]
            pos += 5 + ln
            if tag in NAME:
                ans[NAME[tag]] = v if tag == TAG["cert"] else v.decode()
        return body[2], ans

    # unavailable (a write lock not had in time) is rolled back: asked again, as cac's
    # callers do; any other answer is the answer
    def call(self, op, **fields):
        fields = {k.replace("_", "-"): v for k, v in fields.items()}
        for _ in range(50):
            st, ans = self.call1(op, fields)
            if st != UNAVAILABLE:
                return st, ans
            time.sleep(0.2)
        return st, ans

    def rec(self, part, dev, op, st, ans, **more):
        r = {"part": part, "dev": dev, "station": self.n, "fixture": self.fixture,
             "pid": os.getpid(), "op": op, "status": st, "message": ans.get("message", ""),
             "holder": ans.get("holder", "")}
        r.update(more)
        self.out.write(json.dumps(r) + "\n")
        self.out.flush()
        return st

    def must(self, part, dev, op, **fields):
        st, ans = self.call(op, **fields)
        self.rec(part, dev, op, st, ans, serial=fields.get("serial", ans.get("serial", "")))
        if st != 0:
            raise RuntimeError("%s %s: status %d: %s" % (op, dev, st, ans.get("message")))
        return ans

    def claim(self, dev, lease):
        return self.call("claim", device_id=dev, instance=self.instance, fixture=self.fixture,
                         lease=lease)

    def inventory(self, dev, state, detail, serial=None):
        f = {"profile": "station", "device_id": dev, "model": "race-model", "state": state,
             "detail": detail}
        if serial:
            f["serial"] = serial
        return self.call("inventory", **f)


def part_claim(s, bar, q):
    """Both claim a fresh device at once; the winner provisions it as the station's flow does and
    holds the claim until both are through (the loser's refusal is answered while it is held)."""
    for i in range(rounds):
        dev = "C-%02d" % i
        bar.wait()
        st, ans = s.claim(dev, 120)
        s.rec("claim", dev, "claim", st, ans)
        if st == 0:
            st, k = s.call("known", profile="station", device_id=dev)
            s.rec("claim", dev, "known", st, k, state=k.get("state", ""))
            a = s.must("claim", dev, "issue", profile="station", csr=csr_der(dev), auth="station",
                       device_id=dev, pending=1)
            open("race-%s-st%d.der" % (dev, s.n), "wb").write(a["cert"])
            ser = a["serial"]
            st, ans = s.inventory(dev, "pending", "issued on %s, not yet confirmed" % s.fixture, ser)
            s.rec("claim", dev, "inventory-pending", st, ans, serial=ser)
            s.must("claim", dev, "activate", serial=ser)
            st, ans = s.inventory(dev, "provisioned", "locked on %s" % s.fixture, ser)
            s.rec("claim", dev, "provision", st, ans, serial=ser)
        bar.wait()
        if st == 0:
            s.must("claim", dev, "release", device_id=dev, instance=s.instance, fixture=s.fixture)


def part_row(s, bar, q):
    """Station 1 claims with a 1 s lease and stalls past it; station 2 takes the devices over.
    Station 1 goes on regardless, so both flows reach each device: they race the activation,
    then the winner's 'provisioned' against the loser's 'failed'."""
    devs = ["R-%02d" % i for i in range(rounds)]
    if s.n == 1:
        for dev in devs:
            s.rec("row", dev, "claim-lease-1s", *s.claim(dev, 1))
    bar.wait()
    if s.n == 2:
        time.sleep(2.1)
        for dev in devs:
            s.rec("row", dev, "claim-takeover", *s.claim(dev, 120))
    bar.wait()
    for dev in devs:
        st, ans = s.inventory(dev, "pending", "provisioning on %s" % s.fixture)
        s.rec("row", dev, "reserve", st, ans)
        a = s.must("row", dev, "issue", profile="station", csr=csr_der(dev), auth="station",
                   device_id=dev, pending=1)
        open("race-%s-st%d.der" % (dev, s.n), "wb").write(a["cert"])
        ser = a["serial"]
        bar.wait()
        won, ans = s.call("activate", serial=ser)
        s.rec("row", dev, "activate", won, ans, serial=ser)
        bar.wait()
        if won == 0:
            st, ans = s.inventory(dev, "provisioned", "locked on %s" % s.fixture, ser)
            s.rec("row", dev, "provision", st, ans, serial=ser)
        else:
            st, ans = s.inventory(dev, "failed", "lock on %s: not activated" % s.fixture, ser)
            s.rec("row", dev, "fail-row", st, ans, serial=ser)
        bar.wait()
        if won != 0:  # the certificate it could not activate is of no use to anyone
            s.must("row", dev, "revoke", serial=ser, reason=4)
        bar.wait()
    if s.n == 2:
        for dev in devs:
            s.must("row", dev, "release", device_id=dev, instance=s.instance, fixture=s.fixture)


def part_revoke(s, bar, q):
    """Station 1 records its activated certificate 'provisioned' while station 2 revokes it."""
    for i in range(rounds):
        dev = "V-%02d" % i
        if s.n == 1:
            st, ans = s.claim(dev, 120)
            s.rec("revoke", dev, "claim", st, ans)
            a = s.must("revoke", dev, "issue", profile="station", csr=csr_der(dev),
                       auth="station", device_id=dev, pending=1)
            ser = a["serial"]
            st, ans = s.inventory(dev, "pending",
                                  "challenge passed for %s on %s; locking" % (ser, s.fixture), ser)
            s.rec("revoke", dev, "inventory-pending", st, ans, serial=ser)
            s.must("revoke", dev, "activate", serial=ser)
            q.put(ser)
        else:
            ser = q.get(timeout=60)
        bar.wait()
        if s.n == 1:
            st, ans = s.inventory(dev, "provisioned", "locked on %s" % s.fixture, ser)
            s.rec("revoke", dev, "provision", st, ans, serial=ser)
        else:
            st, ans = s.call("revoke", serial=ser, reason=1)
            s.rec("revoke", dev, "revoke", st, ans, serial=ser)
        bar.wait()
        if s.n == 1:
            s.must("revoke", dev, "release", device_id=dev, instance=s.instance,
                   fixture=s.fixture)


def station(n, sock, bar, q):
    try:
        s = Station(n, sock)
        for part in (part_claim, part_row, part_revoke):
            part(s, bar, q)
    except BaseException as e:
        bar.abort()
        print("station %d: %s: %s" % (n, type(e).__name__, e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    mp.set_start_method("fork")
    bar, q = mp.Barrier(2, timeout=60), mp.Queue()
    ps = [mp.Process(target=station, args=(n + 1, socks[n], bar, q)) for n in (0, 1)]
    for p in ps:
        p.start()
    # timeout(1) or the test's clean-up ends this process: the stations with it
    signal.signal(signal.SIGTERM, lambda *_: [p.kill() for p in ps] and sys.exit(1))
    for p in ps:
        p.join()
    sys.exit(max(p.exitcode for p in ps))
PY

t0=$(date +%s.%N)
timeout 120 python3 race.py cad-a.sock cad-b.sock "$RACE_N" >race.log 2>&1 &
rp=$!
cm_pids+=("$rp")
wait $rp || fail "the stations' run: $(tail -5 race.log)"
t1=$(date +%s.%N)
ok "$((3 * RACE_N)) devices raced by 2 stations through 2 daemons in $(python3 -c "print(round($t1 - $t0, 1))") s"

# ---- what each station was answered ------------------------------------------------------------
python3 - "$RACE_N" >answers.txt <<'PY' || fail "what the stations were answered (above)"
import json, re, sys
n = int(sys.argv[1])
recs = [json.loads(l) for f in ("race-st1.jsonl", "race-st2.jsonl") for l in open(f)]
def of(part, dev, op):
    return [r for r in recs if r["part"] == part and r["dev"] == dev and r["op"] == op]
raced_revoked = 0
for i in range(n):
    # claim: exactly one claim wins; the loser is refused 'exists' naming the winner
    dev = "C-%02d" % i
    cl = of("claim", dev, "claim")
    won = [r for r in cl if r["status"] == 0]
    lost = [r for r in cl if r["status"] != 0]
    assert len(cl) == 2 and len(won) == 1, "%s: claims answered %s" % (dev, [(r["station"], r["status"], r["message"]) for r in cl])
    w, l = won[0], lost[0]
    want = "%s (pid %d)" % (w["fixture"], w["pid"])
    assert l["status"] == 8 and l["holder"] == want and \
        l["message"] == "device %s is held by %s" % (dev, want), \
        "%s: the loser's refusal: status %d, holder '%s', '%s'" % (dev, l["status"], l["holder"], l["message"])
    k = of("claim", dev, "known")
    assert len(k) == 1 and k[0]["status"] == 0 and not k[0]["state"], "%s: known %s" % (dev, k)
    p = of("claim", dev, "provision")
    assert len(p) == 1 and p[0]["status"] == 0 and p[0]["station"] == w["station"], "%s: %s" % (dev, p)
    # row: one 'provisioned' goes in; the other is refused naming the winner's certificate
    dev = "R-%02d" % i
    tk = of("row", dev, "claim-takeover")
    assert len(tk) == 1 and tk[0]["status"] == 0, "%s: a lapsed claim not taken over: %s" % (dev, tk)
    rs = of("row", dev, "reserve")
    assert [r["status"] for r in rs] == [0, 0], "%s: reserve %s" % (dev, rs)
    act = of("row", dev, "activate")
    won = [r for r in act if r["status"] == 0]
    lost = [r for r in act if r["status"] != 0]
    assert len(act) == 2 and len(won) == 1, "%s: 'activate' answered %s to the two stations" % (dev, [(r["station"], r["status"], r["serial"], r["message"]) for r in act])
    w, l = won[0], lost[0]
    want = "certificate %s not activated: its device holds valid certificate %s of the same issuer and template (revoke it first)" % (l["serial"].upper(), w["serial"].upper())
    assert (l["status"], l["message"].upper()) == (3, want.upper()), \
        "%s: the second activation: status %d: %s" % (dev, l["status"], l["message"])
    p = of("row", dev, "provision")
    assert len(p) == 1 and p[0]["status"] == 0 and p[0]["station"] == w["station"], "%s: 'provisioned' %s" % (dev, p)
    fr = of("row", dev, "fail-row")
    refusals = ("device %s holds valid certificate %s: revoke it before recording another" % (dev, w["serial"]),
                "inventory not written (read and checked twice): device %s: its inventory row changed since it was read (it names certificate %s, valid, now)" % (dev, w["serial"]))
    assert len(fr) == 1 and fr[0]["station"] == l["station"] and \
        (fr[0]["status"], fr[0]["message"]) in ((0, ""), (3, refusals[0]), (8, refusals[1])), \
        "%s: the loser's 'failed': %s" % (dev, fr)
    rv = of("row", dev, "revoke")
    assert len(rv) == 1 and rv[0]["station"] == l["station"] and rv[0]["serial"] == l["serial"], "%s: %s" % (dev, rv)
    # revoke: the revocation always goes in; 'provisioned' only while the certificate is valid
    dev = "V-%02d" % i
    rv = of("revoke", dev, "revoke")
    assert len(rv) == 1 and rv[0]["status"] == 0, "%s: revoke %s" % (dev, rv)
    p = of("revoke", dev, "provision")
    assert len(p) == 1, dev
    if p[0]["status"] != 0:
        assert p[0]["status"] == 3 and re.fullmatch(
            r"device %s: certificate %s is revoked( now)?, not valid: not provisioned" % (dev, p[0]["serial"]),
            p[0]["message"]), "%s: 'provisioned' of a certificate being revoked: %d %s" % (dev, p[0]["status"], p[0]["message"])
        raced_revoked += " now," in p[0]["message"]
print("every C device: one claim won, the other refused 'exists' (e.g. %s)" % of("claim", "C-00", "claim")[0 if of("claim", "C-00", "claim")[0]["status"] else 1]["message"])
print("every R device: one activation, the other refused (e.g. %s); the winner's 'provisioned' written, the loser's 'failed' refused %d times of %d" % ([r for r in of("row", "R-00", "activate") if r["status"]][0]["message"], sum(1 for i in range(n) if of("row", "R-%02d" % i, "fail-row")[0]["status"]), n))
print("V devices: 'provisioned' written %d times (before the revocation, the store check below says), refused %d times, %d of them for a certificate revoked after its check saw it valid"
      % (sum(1 for i in range(n) if of("revoke", "V-%02d" % i, "provision")[0]["status"] == 0),
         sum(1 for i in range(n) if of("revoke", "V-%02d" % i, "provision")[0]["status"] != 0), raced_revoked))
PY
while read -r line; do ok "$line"; done <answers.txt

# ---- the store, read by keyline-ca --------------------------------------------------------------
kca list --json >all.json
kca device list >devices.txt
kca audit list >audit.txt
python3 - "$RACE_N" <<'PY' || fail "the store after the race"
import json, re, sys
n = int(sys.argv[1])
certs = json.load(open("all.json"))
rows = {}
for l in open("devices.txt").read().splitlines()[1:]:
    f = l.split()
    rows[f[0]] = {"state": f[2], "serial": f[3], "status": f[4]}
audit = open("audit.txt").read()
got, told = set(), {}  # certificates given out; the serials each device's stations were told provisioned
for f in ("race-st1.jsonl", "race-st2.jsonl"):
    for l in open(f):
        r = json.loads(l)
        if r["op"] == "issue" and r["status"] == 0:
            got.add(r["serial"].upper())
        if r["op"] == "provision" and r["status"] == 0:
            told.setdefault(r["dev"], []).append(r["serial"].upper())
rec = {c["serial"].upper() for c in certs}
assert got <= rec, "certificates given out without a record: %s" % sorted(got - rec)[:3]
for i in range(n):
    for dev in ("C-%02d" % i, "R-%02d" % i):
        valid = [c["serial"].upper() for c in certs if c.get("device_id") == dev and c["status"] == "valid"]
        assert len(valid) == 1 and told.get(dev) == valid, \
            "%s: valid certificates %s; stations told provisioned with %s" % (dev, valid, told.get(dev))
        r = rows.get(dev)
        assert r and r["state"] == "provisioned" and r["serial"].upper() == valid[0] and r["status"] == "valid", \
            "%s: row %s, its valid certificate %s" % (dev, r, valid[0])
        k = len(re.findall(r"device %s: provisioned, " % dev, audit))
        assert k == 1, "%s: %d 'provisioned' inventory audit entries" % (dev, k)
    dev = "V-%02d" % i
    cs = [c for c in certs if c.get("device_id") == dev]
    assert len(cs) == 1 and cs[0]["status"] == "revoked", "%s: %s" % (dev, [(c["serial"], c["status"]) for c in cs])
    r = rows.get(dev)
    assert r and r["state"] == "revoked" and r["serial"].upper() == cs[0]["serial"].upper(), "%s: row %s" % (dev, r)
for dev, r in rows.items():
    assert r["state"] != "provisioned" or r["status"] == "valid", "%s: provisioned with a %s certificate" % (dev, r["status"])
PY
ok "store: every C and R device one valid certificate (the winner's) named by its provisioned row, one 'provisioned' audit entry each; every V certificate revoked, its row 'revoked'; no provisioned row names a certificate that is not valid; every certificate given out recorded"
# the race happened: in some round both checks came before either write, so the loser's write
# met a row its check had not seen (keyline-cad logs each such compare-and-set refusal); without
# one, this test would have tested only the checks
n=$(cat cad-a.log cad-b.log | grep -c "cad: inventory from .*device R-[0-9]*: its inventory row changed since it was read" || true)
[ "$n" -ge 1 ] || fail "no R round reached the compare-and-set (each loser's check already saw the winner's row): nothing raced"
ok "R devices: the compare-and-set met a row changed since its check in $n of $RACE_N rounds (read and checked again, then refused)"

kca audit verify >verify.txt || fail "audit verify: $(cat verify.txt)"
ok "audit verify: $(head -1 verify.txt)"
cm_cad_stop a
cm_cad_stop b
ok "SIGTERM: both daemons exit 0"
