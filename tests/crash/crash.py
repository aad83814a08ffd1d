#!/usr/bin/env python3
"""Crash consistency at random points (issue 18, item 4).

  crash.py KILLS

SIGKILLs, each after a random delay (microsecond resolution, drawn from the seed) while work
runs: `keyline-ca issue`, keyline-estd under enrollment load, keyline-cad under the same load,
keyline-provision in the middle of a device. After each kill the killed program is restarted
(the station finishes its device) and the store is checked:
  * no serial was issued twice (store listing; serials delivered to clients and devices);
  * every certificate that reached a client (EST 200, `issue --out`) or a device is in the store;
  * no device holds two valid IDevIDs;
  * `keyline-ca audit verify` passes; `PRAGMA integrity_check` of the SQLite file says ok.
The seed is printed; KL_CRASH_SEED=N replays the same schedule and delays.

Environment (tests/integration/crash_random.sh sets it up): KL_BIN, KL_CONF, KL_TEST_DIR,
EST_PORT, EST_USER, EST_PASS, ROOT_CA; fixture pty pair $KL_TEST_DIR/fix1 <-> dev1.
"""
import base64
import collections
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import procs  # noqa: E402

E = os.environ
BIN, CONF, D = E["KL_BIN"], E["KL_CONF"], E["KL_TEST_DIR"]
DB = os.path.join(D, "keyline.db")


class Fail(Exception):
    pass


def kca(*args, check=True):
    p = subprocess.run([BIN + "/keyline-ca", "-c", CONF] + list(args), capture_output=True,
                       timeout=60)
    if check and p.returncode:
        raise Fail("keyline-ca %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                   p.stderr.decode().strip()))
    return p


def norm(serial):
    return serial.replace(":", "").lower().lstrip("0")


# --- DER: the serial of the first certificate in a certs-only PKCS#7 or of a certificate ---


def tlv(b, off):
    tag, first = b[off], b[off + 1]
    if first < 0x80:
        return tag, off + 2, first
    n = first & 0x7F
    return tag, off + 2 + n, int.from_bytes(b[off + 2:off + 2 + n], "big")


def cert_serial(cert, off=0):
    _, c, _ = tlv(cert, off)       # Certificate
    _, t, _ = tlv(cert, c)         # tbsCertificate
    tag, v, ln = tlv(cert, t)
    if tag == 0xA0:                # [0] version
        tag, v, ln = tlv(cert, v + ln)
    return cert[v:v + ln].hex()


def p7_serial(der):
    _, c, _ = tlv(der, 0)          # ContentInfo
    _, o, ln = tlv(der, c)         # contentType
    _, x, _ = tlv(der, o + ln)     # [0]
    _, sd, _ = tlv(der, x)         # SignedData
    off = sd
    for _ in range(3):             # version, digestAlgorithms, encapContentInfo
        _, v, ln = tlv(der, off)
        off = v + ln
    tag, certs, _ = tlv(der, off)
    if tag != 0xA0:
        raise Fail("PKCS#7 without certificates")
    return cert_serial(der, certs)


def pem_serial(path):
    p = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                       capture_output=True)
    if p.returncode:
        return None
    return p.stdout.decode().strip().split("=", 1)[1]


# --- processes ---------------------------------------------------------------------------


class Daemon:
    def __init__(self, name, cmd, ready):
        self.name, self.cmd, self.ready, self.p = name, cmd, ready, None
        self.log = open(os.path.join(D, name + ".log"), "ab")

    def start(self):
        env = dict(E)
        if self.name == "keyline-estd":
            env.pop("KEYLINE_PIN", None)
        self.p = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log, env=env)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            if self.p.poll() is not None:
                raise Fail("%s exited %d during start-up" % (self.name, self.p.returncode))
            if self.ready():
                return
            time.sleep(0.05)
        raise Fail("%s did not become ready" % self.name)

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=30)
        if rc:
            raise Fail("%s exited %d on SIGTERM" % (self.name, rc))


def cad_ready():
    return subprocess.run([BIN + "/kl_cad_client", os.path.join(D, "cad.sock"), "hello",
                           "version=1"], capture_output=True).returncode == 0


def tls_ctx():
    ctx = ssl.create_default_context(cafile=E["ROOT_CA"])
    ctx.check_hostname = False
    return ctx


def http(req, timeout=10):
    s = tls_ctx().wrap_socket(socket.create_connection(("127.0.0.1", int(E["EST_PORT"])),
                                                       timeout=timeout),
                              server_hostname="localhost")
    try:
        s.sendall(req)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    finally:
        s.close()


def estd_ready():
    try:
        return http(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    2).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def new_csr(cn, serial, der=True):
    cfg = "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=%s\nserialNumber=%s\n" % (cn, serial)
    path = os.path.join(D, "crash-req-%d.cnf" % threading.get_ident())  # one per thread
    with open(path, "w") as f:
        f.write(cfg)
    return subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null",
                           "-config", path, "-outform", "DER" if der else "PEM"],
                          capture_output=True, check=True).stdout


# --- the load: EST enrollments, each certificate that reaches the client recorded ---------


class Load:
    def __init__(self, n):
        self.delivered, self.lock, self.stop_ev = [], threading.Lock(), threading.Event()
        self.errors = collections.Counter()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(n)]
        self.auth = "Basic " + base64.b64encode(
            (E["EST_USER"] + ":" + E["EST_PASS"]).encode()).decode()
        self.seq = 0

    def request(self, body):
        return ("POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                "Content-Type: application/pkcs10\r\nAuthorization: %s\r\nContent-Length: %d"
                "\r\n\r\n" % (self.auth, len(body))).encode() + body

    def run(self, i):
        while not self.stop_ev.is_set():
            with self.lock:
                self.seq += 1
                n = self.seq
            body = base64.encodebytes(new_csr("load-%d-%d" % (i, n), "LD%06d" % n))
            try:
                resp = http(self.request(body))
            except OSError:
                self.errors["connect"] += 1
                time.sleep(0.05)
                continue
            head, _, payload = resp.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200"):
                serial = p7_serial(base64.b64decode(payload))
                with self.lock:
                    self.delivered.append(serial)
            else:
                self.errors[head[9:12].decode("latin-1") or "closed"] += 1
                time.sleep(0.05)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)


# --- checks ------------------------------------------------------------------------------


def check(delivered, devices):
    """The invariants; delivered: serials that reached a client or device."""
    if subprocess.run(["sqlite3", DB, "PRAGMA integrity_check"], capture_output=True,
                      text=True).stdout.strip() != "ok":
        raise Fail("integrity_check is not ok")
    kca("audit", "verify")
    certs = json.loads(kca("list", "--json").stdout)
    serials = collections.Counter(norm(c["serial"]) for c in certs)
    dup = [s for s, n in serials.items() if n > 1]
    if dup:
        raise Fail("serials issued twice in the store: %s" % dup[:5])
    dd = [s for s, n in collections.Counter(norm(s) for s in delivered).items() if n > 1]
    if dd:
        raise Fail("the same serial delivered twice: %s" % dd[:5])
    missing = [s for s in delivered if norm(s) not in serials]
    if missing:
        raise Fail("delivered but not in the store: %s" % missing[:5])
    valid = collections.Counter(c.get("device_id") for c in certs
                                if c.get("status") == "valid" and c.get("device_id")
                                and c.get("device_id") in devices)
    two = [d for d, n in valid.items() if n > 1]
    if two:
        raise Fail("devices with two valid IDevIDs: %s" % two)
    return len(certs)


# --- the four kinds of kill ----------------------------------------------------------------


def token_object():
    """SoftHSM's token.object of the test token (its label, flags and PIN blobs)."""
    tokens = os.path.join(D, "tokens")
    for t in os.listdir(tokens):
        f = os.path.join(tokens, t, "token.object")
        if os.path.exists(f):
            return f
    raise Fail("no SoftHSM token.object under %s" % tokens)


class Harness:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.delivered, self.devices = [], set()
        self.cad = Daemon("keyline-cad", [BIN + "/keyline-cad", "-c", CONF], cad_ready)
        self.estd = Daemon("keyline-estd", [BIN + "/keyline-estd", "-c", CONF], estd_ready)
        self.kills = collections.Counter()
        self.landed = collections.Counter()  # kills that hit the program mid-work
        self.n_issue = 0
        self.token_lost = collections.Counter()
        self.token_file = token_object()
        with open(self.token_file, "rb") as f:
            self.token_copy = f.read()

    def token_check(self, kind):
        """SoftHSM rewrites token.object in place (truncate, then write): a SIGKILL in between
        leaves it empty and the token gone, a limit of the test HSM (a real one, and SoftHSM's
        other files, are not written that way). Counted, reported, and put back from the copy
        taken at the start (same label and PINs) so that the run goes on."""
        if os.path.getsize(self.token_file) == 0:
            self.token_lost[kind] += 1
            print("crash: SoftHSM's token.object left empty by the kill of %s: restored" % kind,
                  flush=True)
            with open(self.token_file, "wb") as f:
                f.write(self.token_copy)

    def delay(self, hi):
        return self.rng.randrange(0, int(hi * 1e6)) / 1e6

    def kill_issue(self):
        self.n_issue += 1
        csr = os.path.join(D, "crash-issue.csr")
        out = os.path.join(D, "crash-issue-%d.crt" % self.n_issue)
        with open(csr, "wb") as f:
            f.write(new_csr("issue-%d" % self.n_issue, "CI%06d" % self.n_issue, der=False))
        d = self.delay(self.issue_time * 1.2)
        p = subprocess.Popen([BIN + "/keyline-ca", "-c", CONF, "issue", "--issuer", "field1",
                              "--template", "device-ldevid", "--csr", csr, "--out", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(d)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            self.landed["issue"] += 1
        p.wait()
        self.token_check("issue")
        if os.path.exists(out) and os.path.getsize(out):
            s = pem_serial(out)
            if s is None and p.returncode == 0:
                raise Fail("issue exited 0 with an unreadable --out")
            if s:
                self.delivered.append(s)  # it reached the officer's file

    def calibrate(self):
        """How long one `keyline-ca issue` takes here: the kills are spread over that."""
        times = []
        for i in range(3):
            csr = os.path.join(D, "crash-cal.csr")
            with open(csr, "wb") as f:
                f.write(new_csr("cal-%d" % i, "CC%06d" % i, der=False))
            t0 = time.monotonic()
            kca("issue", "--issuer", "field1", "--template", "device-ldevid", "--csr", csr,
                "--out", os.path.join(D, "crash-cal-%d.crt" % i))
            times.append(time.monotonic() - t0)
            self.delivered.append(pem_serial(os.path.join(D, "crash-cal-%d.crt" % i)))
        self.issue_time = sorted(times)[1]
        print("crash: keyline-ca issue takes %.0f ms here" % (self.issue_time * 1e3), flush=True)

    def kill_daemon(self, dmn, name):
        time.sleep(self.delay(1.0))
        dmn.kill9()
        self.landed[name] += 1
        self.token_check(name)
        dmn.start()

    def kill_provision(self):
        n = self.kills["provision"]
        serial = "CP%05d" % n
        self.devices.add(serial)
        dev = subprocess.Popen([BIN + "/keyline-devsim", "--port", os.path.join(D, "dev1"),
                                "--serial", serial, "--state", os.path.join(D, serial + ".state"),
                                "--misbehave", "slow", "--delay-ms", "60"],
                               stdout=self.devlog, stderr=self.devlog)
        try:
            self.provision_round(serial, dev)
        finally:
            # a failure on the way leaves no device running after the run (SIGTERM: it removes
            # its work folder; a crash_random that failed once left one for an hour)
            procs.stop(dev)
        cert = os.path.join(D, serial + ".pem")
        with open(cert, "wb") as f:
            subprocess.run([BIN + "/keyline-devsim", "--state", os.path.join(D, serial + ".state"),
                            "--print-cert"], stdout=f, check=True)
        s = pem_serial(cert)
        if not s:
            raise Fail("%s holds no certificate after the restarted station" % serial)
        self.delivered.append(s)

    def provision_round(self, serial, dev):
        """A station for `serial` SIGKILLed mid-device, then run again to the end."""
        st = self.station()
        time.sleep(self.delay(1.5))
        if st.poll() is None:
            st.send_signal(signal.SIGKILL)
            self.landed["provision"] += 1
        st.wait()
        self.token_check("provision")
        if st.returncode not in (0, -signal.SIGKILL):
            raise Fail("station exited %d for %s before the kill" % (st.returncode, serial))
        if st.returncode != 0:
            rc = self.station().wait(timeout=120)
            if rc:
                raise Fail("restarted station exited %d for %s" % (rc, serial))
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise Fail("%s: the device never finished" % serial)

    def station(self):
        return subprocess.Popen([BIN + "/keyline-provision", "-c", CONF, "--port",
                                 os.path.join(D, "fix1"), "--count", "1"],
                                stdout=self.stlog, stderr=self.stlog)

    def run(self, total):
        self.devlog = open(os.path.join(D, "devsim.log"), "ab")
        self.stlog = open(os.path.join(D, "station.log"), "ab")
        # the share of each program: issue is cheap, a station round costs two runs
        kinds = ["issue"] * 40 + ["estd"] * 25 + ["cad"] * 20 + ["provision"] * 15
        plan = [self.rng.choice(kinds) for _ in range(total)]
        self.calibrate()
        self.cad.start()
        self.estd.start()
        load = Load(2)
        load.start()
        t0 = time.monotonic()
        try:
            for i, kind in enumerate(plan):
                if kind == "issue":
                    self.kill_issue()
                elif kind == "estd":
                    self.kill_daemon(self.estd, kind)
                elif kind == "cad":
                    self.kill_daemon(self.cad, kind)
                else:
                    self.kill_provision()
                self.kills[kind] += 1
                with load.lock:
                    delivered = self.delivered + load.delivered
                n = check(delivered, self.devices)
                if (i + 1) % 20 == 0:
                    print("crash: %d kills, %d certificates in the store, %d delivered (%.0f s)"
                          % (i + 1, n, len(delivered), time.monotonic() - t0), flush=True)
        finally:
            load.stop()
        with load.lock:
            delivered = self.delivered + load.delivered
        n = check(delivered, self.devices)
        self.estd.stop()
        self.cad.stop()
        print("crash: %d kills in %.0f s: %s; landed mid-work: %s" % (
            total, time.monotonic() - t0, dict(self.kills), dict(self.landed)))
        print("crash: %d certificates in the store, %d delivered to clients and devices, all "
              "there; no serial twice; no device with two valid IDevIDs; audit and "
              "integrity_check ok; EST load errors while down: %s; SoftHSM token.object lost "
              "(and restored) after: %s" % (n, len(delivered), dict(load.errors),
                                             dict(self.token_lost) or "none"))


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seed = int(E.get("KL_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    print("crash: seed %d (KL_CRASH_SEED=%d replays it), %d kills" % (seed, seed, total),
          flush=True)
    h = Harness(seed)
    try:
        h.run(total)
    except Fail as e:
        print("FAIL: crash (seed %d): %s" % (seed, e), flush=True)
        for d in (h.cad, h.estd):
            if d.p and d.p.poll() is None:
                d.p.kill()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
