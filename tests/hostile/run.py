#!/usr/bin/env python3
"""The hostile suite's driver: every line of cases.tsv against the running keyline.

  run.py CASES.tsv [ID-PREFIX...]

Environment (set by tests/integration/hostile_suite.sh): KL_BIN, KL_CONF, HOSTILE_DIR (work
folder), EST_PORT (keyline-estd TLS), EST_HTTP_PORT (its plain listener), CAD_SOCK, ROOT_CA
(PEM the TLS server chains to), EST_USER/EST_PASS, ISSUE_ARGS (keyline-ca issue's --issuer and
--template), ESTD_PID and CAD_PID (must be alive after every case).

cases.tsv columns (tab-separated; # comments):
  id  target  input  expect  reason
target: issue (keyline-ca issue), est (a CSR to /simpleenroll), https (HTTP to keyline-estd's
TLS listener), http (its plain listener), tls, ocsp, cad (raw CA-protocol frames), conf, line
(a device on the station's fixture: keyline-devsim's misbehaviours, or bytes and frames from
here; expect waiting: the station goes on waiting for a device that never says HELLO).
input: a gen.py expression (bytes; a tuple (bytes, n, s) sends n bytes every s seconds; tls
also tlsver:VERSION and openssl:ARGS). expect: exit=N | http=NNN | closed | refused | ocsp=NAME
| cad=N. reason: text the refusal must carry (stderr, HTTP body, CA-protocol message, TLS
error), or log:TEXT: in the daemons' logs since the case began; - for a tolerated input.
Every case also checks: both daemons still run and answer, the case ended within its time
limit; at the end, the store holds exactly one more valid certificate per tolerated
enrollment or device and none for the rest. Prints the count tried, the count by target, and
each failure; exits 1 on any.
"""
import base64
import collections
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gen  # noqa: E402
import procs  # noqa: E402

E = os.environ
WORK = E["HOSTILE_DIR"]
CASE_TIMEOUT = 15.0


class Fail(Exception):
    pass


def tls_ctx():
    ctx = ssl.create_default_context(cafile=E["ROOT_CA"])
    ctx.check_hostname = False
    return ctx


def recv_all(s, limit=1 << 20, timeout=CASE_TIMEOUT):
    s.settimeout(timeout)
    out = b""
    t0 = time.monotonic()
    while len(out) < limit:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            break
        except socket.timeout:
            raise Fail("no answer and not closed within %.0f s (hang)" % timeout)
        if not b:
            break
        out += b
        if time.monotonic() - t0 > timeout:
            raise Fail("server kept sending for %.0f s" % timeout)
    return out


def send_all(s, data, slow=None):
    try:
        if slow is None:
            s.sendall(data)
            return
        for i in range(0, len(data), slow[0]):
            s.sendall(data[i:i + slow[0]])
            time.sleep(slow[1])
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, socket.timeout):
        pass  # the server may refuse before the whole request is sent: the answer says why


def http_exchange(data, tls=True, slow=None):
    raw = socket.create_connection(("127.0.0.1", int(E["EST_PORT" if tls else "EST_HTTP_PORT"])),
                                   timeout=CASE_TIMEOUT)
    s = tls_ctx().wrap_socket(raw, server_hostname="localhost") if tls else raw
    try:
        send_all(s, data, slow)
        try:
            s.shutdown(socket.SHUT_WR) if not tls else None
        except OSError:
            pass
        return recv_all(s)
    finally:
        s.close()


def parse_http(resp):
    if not resp:
        return "closed", ""
    head, _, body = resp.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        return "garbage", resp[:80].decode("latin-1")
    return "http=" + parts[1].decode(), (head + b"\n" + body).decode("latin-1")


# --- targets ---------------------------------------------------------------------------------


def run_issue(inp):
    path = os.path.join(WORK, "case.csr")
    out = os.path.join(WORK, "case.crt")
    if os.path.exists(out):
        os.unlink(out)
    with open(path, "wb") as f:
        f.write(inp)
    cmd = [E["KL_BIN"] + "/keyline-ca", "-c", E["KL_CONF"], "issue"] + E["ISSUE_ARGS"].split() + \
        ["--csr", path, "--out", out]
    p = subprocess.run(cmd, capture_output=True, timeout=CASE_TIMEOUT)
    if p.returncode != 0 and os.path.exists(out) and os.path.getsize(out):
        raise Fail("refused but wrote a certificate to --out")
    return "exit=%d" % p.returncode, p.stderr.decode("latin-1")


def run_est(inp):
    slow = None
    if isinstance(inp, tuple):
        inp, slow = inp[0], inp[1:]
    return parse_http(http_exchange(inp, True, slow))


def run_http(inp):
    slow = None
    if isinstance(inp, tuple):
        inp, slow = inp[0], inp[1:]
    return parse_http(http_exchange(inp, False, slow))


def run_tls(inp):
    if isinstance(inp, str) and inp.startswith("tlsver:"):
        ctx = tls_ctx()
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        v = getattr(ssl.TLSVersion, inp[7:])
        ctx.minimum_version = v
        ctx.maximum_version = v
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(E["EST_PORT"])),
                                                         timeout=CASE_TIMEOUT),
                                server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError) as e:
            return "refused", str(e)
        s.close()
        return "handshake", "TLS " + inp[7:] + " accepted"
    if isinstance(inp, str) and inp.startswith("openssl:"):
        return run_s_client(inp[8:].split())
    s = socket.create_connection(("127.0.0.1", int(E["EST_PORT"])), timeout=CASE_TIMEOUT)
    try:
        send_all(s, inp)
        resp = recv_all(s)
    finally:
        s.close()
    if not resp:
        return "closed", "eof"
    if resp[0] == 0x15 and len(resp) >= 7:
        return "closed", "alert %d/%d" % (resp[5], resp[6])
    if resp[0] == 0x15:
        return "closed", "alert"
    return "answered", resp[:40].hex()


def run_s_client(args):
    """openssl s_client ARGS, interactive: 'R' asks for a renegotiation, then a request."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:" + E["EST_PORT"], "-CAfile",
           E["ROOT_CA"]] + args
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        for line in (b"R\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            p.stdin.write(line)
            p.stdin.flush()
            time.sleep(0.5)
    except BrokenPipeError:
        pass
    try:
        out = p.communicate(timeout=CASE_TIMEOUT)[0]
    except (BrokenPipeError, ValueError):
        out = p.stdout.read()
    text = out.decode("latin-1")
    if "HTTP/1.1 200" in text:
        return "served", text[-300:]
    return "refused", text[-600:]


OCSP_STATUS = {0: "successful", 1: "malformedRequest", 2: "internalError", 3: "tryLater",
               5: "sigRequired", 6: "unauthorized"}


def run_ocsp(inp):
    resp = http_exchange(inp, True)
    got, text = parse_http(resp)
    if got != "http=200":
        return got, text
    body = resp.partition(b"\r\n\r\n")[2]
    # OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, ... }
    i = 2 if body[1] < 0x80 else 2 + (body[1] & 0x7F)
    if body[:1] != b"\x30" or body[i] != 0x0A:
        return "garbage", body[:40].hex()
    st = body[i + 2]
    return "ocsp=" + OCSP_STATUS.get(st, str(st)), "ocsp " + OCSP_STATUS.get(st, str(st))


def cap_fields(b):
    out, off = {}, 0
    while off + 5 <= len(b):
        tag, n = struct.unpack(">BI", b[off:off + 5])
        out.setdefault(tag, b[off + 5:off + 5 + n])
        off += 5 + n
    return out


def run_cad(inp):
    slow = None
    if isinstance(inp, tuple):
        inp, slow = inp[0], inp[1:]
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(CASE_TIMEOUT)
    s.connect(E["CAD_SOCK"])
    try:
        send_all(s, inp, slow)
        s.shutdown(socket.SHUT_WR)
        resp = recv_all(s)
    finally:
        s.close()
    if len(resp) < 7:
        return "closed", resp.hex()
    body = resp[4:4 + struct.unpack(">I", resp[:4])[0]]
    msg = cap_fields(body[3:]).get(17, b"").decode("latin-1")
    return "cad=%d" % body[2], msg


def conf_with(key, value):
    """The suite's own keyline.conf with `key = value` in [est] (its last section)."""
    text = open(E["KL_CONF"], "rb").read()
    line = key + b" = " + value
    pat = re.compile(rb"^" + re.escape(key) + rb" = .*$", re.M)
    return pat.sub(lambda m: line, text) if pat.search(text) else text + b"\n" + line + b"\n"


def run_conf(inp):
    """bytes: keyline-ca config check on that file; (binary, key, value): BINARY -c on the
    suite's configuration with [est] key = value (keyline-ca config check checks names and
    syntax; each daemon checks its own values before it does anything)."""
    binary = "keyline-ca"
    if isinstance(inp, tuple):
        binary, inp = inp[0], conf_with(inp[1], inp[2])
    path = os.path.join(os.path.dirname(E["KL_CONF"]), "hostile-case.conf")
    with open(path, "wb") as f:
        f.write(inp)
    os.chmod(path, 0o600)
    args = ["config", "check"] if binary == "keyline-ca" else []
    env = dict(E)
    env.pop("KEYLINE_PIN", None) if binary != "keyline-ca" else None
    p = subprocess.run([E["KL_BIN"] + "/" + binary, "-c", path] + args, capture_output=True,
                       timeout=CASE_TIMEOUT, cwd=os.path.dirname(path), env=env)
    return "exit=%d" % p.returncode, p.stderr.decode("latin-1")


def run_line(inp):
    """A device on the station's fixture: keyline-devsim (its misbehaviours) or raw bytes from
    here; keyline-provision --count 1 runs it. Outcome: the station's exit status; text: the
    device's result line (results.jsonl) and station log. A refused device holds no valid
    certificate afterwards."""
    kind, serial, arg, clone_of = inp
    d = os.path.dirname(E["KL_CONF"])
    state = os.path.join(d, serial + ("-clone" if clone_of else "") + ".state")
    if clone_of:
        shutil.copy(os.path.join(d, clone_of + ".state"), state)
    dev = stop = None
    # the simulator's work folder (its keys, unpacked) goes here: it must be gone once the
    # device is (keyline-devsim removes it on exit and on SIGTERM, never on SIGKILL)
    devtmp = os.path.join(d, "devtmp")
    os.makedirs(devtmp, mode=0o700, exist_ok=True)
    if kind == "devsim":
        dev = subprocess.Popen([E["KL_BIN"] + "/keyline-devsim", "--port", E["DEV_PORT"],
                                "--serial", serial, "--state", state] + arg,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TMPDIR=devtmp))
    else:
        stop = threading.Event()
        fn = raw_device if kind == "raw" else proto_device
        threading.Thread(target=fn, args=(arg, stop), daemon=True).start()
    log = os.path.join(d, "station.log")
    mark = os.path.getsize(log) if os.path.exists(log) else 0
    try:
        with open(log, "ab") as lf:
            st = subprocess.Popen([E["KL_BIN"] + "/keyline-provision", "-c", E["KL_CONF"],
                                   "--port", E["FIX_PORT"], "--count", "1"], stdout=lf,
                                  stderr=lf)
            if kind == "devsim":
                rc = st.wait(timeout=60)
            else:
                # no device ever says a valid HELLO: the station must go on waiting for one,
                # dropping what it cannot read, and stop cleanly when told
                try:
                    st.wait(timeout=2)
                    raise Fail("station exited %d on a device that never spoke" % st.returncode)
                except subprocess.TimeoutExpired:
                    st.send_signal(signal.SIGTERM)
                    st.wait(timeout=10)
                with open(log, "rb") as f:
                    f.seek(mark)
                    return "waiting", f.read().decode("latin-1")
    finally:
        if stop:
            stop.set()
        if dev:
            # a refused device waits for the next station: told to stop as a user would
            # (SIGTERM), killed only if it does not
            procs.stop(dev, wait=5)
    left = os.listdir(devtmp)
    if left:
        raise Fail("keyline-devsim left its work folder behind: %s" % ", ".join(left))
    last = {}
    for line in open(os.path.join(d, "results.jsonl")):
        r = json.loads(line)
        if r.get("hw_serial") == serial:
            last = r
    if rc != 0 and valid_count(serial) > (1 if clone_of else 0):
        raise Fail("refused device %s holds a valid certificate" % serial)
    return "exit=%d" % rc, "%s %s" % (last.get("error", ""), last.get("action", ""))


def raw_device(answer, stop):
    fd = os.open(E["DEV_PORT"], os.O_RDWR | os.O_NOCTTY)
    try:
        while not stop.is_set():
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                os.read(fd, 4096)
                os.write(fd, answer)
    finally:
        os.close(fd)


def proto_answer(mode, req):
    """What proto_dev answers to one decoded station frame."""
    mtype, seq = req[1], struct.unpack(">H", req[2:4])[0]
    if mode == "wrong-type":
        return gen.frame(0x88 if mtype != 0x08 else 0x82, seq)
    if mode == "old-seq":
        return gen.frame(mtype | 0x80, (seq - 1) & 0xFFFF)
    if mode == "oversized":
        return gen.frame(mtype | 0x80, seq, b"\x01" * 3000)
    if mode == "bad-version":
        return gen.frame(mtype | 0x80, seq, version=9)
    if mode == "bad-length":
        return gen.frame(mtype | 0x80, seq, b"\x01\x01\x01", length=200)
    return gen.frame(mtype | 0x80, seq)[:-6] + b"\x01\x02\x03\x04\x05\x00"  # bad-crc


def proto_device(mode, stop):
    fd = os.open(E["DEV_PORT"], os.O_RDWR | os.O_NOCTTY)
    buf = b""
    try:
        while not stop.is_set():
            r, _, _ = select.select([fd], [], [], 0.1)
            if not r:
                continue
            buf += os.read(fd, 4096)
            while b"\x00" in buf:
                raw, buf = buf.split(b"\x00", 1)
                req = gen.uncobs(raw)
                if req and len(req) >= 11:
                    os.write(fd, proto_answer(mode, req))
    finally:
        os.close(fd)


def valid_count(device):
    p = subprocess.run([E["KL_BIN"] + "/keyline-ca", "-c", E["KL_CONF"], "list", "--status",
                        "valid", "--json"], capture_output=True, check=True)
    return sum(1 for c in json.loads(p.stdout) if c.get("device_id") == device)


TARGETS = {"line": run_line, "issue": run_issue, "est": run_est, "https": run_est, "http": run_http, "tls": run_tls,
           "ocsp": run_ocsp, "cad": run_cad, "conf": run_conf}

# --- checks after each case ------------------------------------------------------------------


def alive():
    for name in ("ESTD_PID", "CAD_PID"):
        try:
            os.kill(int(E[name]), 0)
        except OSError:
            raise Fail("%s %s is gone (crashed?)" % (name, E[name]))
    got, _ = parse_http(http_exchange(gen.http(), True))
    if got != "http=200":
        raise Fail("keyline-estd /healthz answers %s after the case" % got)
    got, _ = run_cad(gen.cap(1, gen.cap_field(23, b"\x00" * 7 + b"\x01")))
    if got != "cad=0":
        raise Fail("keyline-cad does not answer hello after the case (%s)" % got)


def issued():
    """Valid certificates in the store (a device the station refused may leave a pending one
    that never becomes valid; run_line checks each device has none valid)."""
    p = subprocess.run([E["KL_BIN"] + "/keyline-ca", "-c", E["KL_CONF"], "list", "--status",
                        "valid", "--json"], capture_output=True, check=True)
    return len(json.loads(p.stdout))


def logs():
    return [E[n] for n in ("ESTD_LOG", "CAD_LOG") if E.get(n)]


def log_mark():
    return [os.path.getsize(p) if os.path.exists(p) else 0 for p in logs()]


def log_since(mark):
    time.sleep(0.05)  # the daemon logs after it answered
    out = ""
    for p, m in zip(logs(), mark):
        with open(p, "rb") as f:
            f.seek(m)
            out += f.read().decode("latin-1")
    return out


def load(path):
    cases = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        if len(f) != 5:
            sys.exit("%s:%d: %d columns, want 5" % (path, n, len(f)))
        cases.append(f)
    ids = [c[0] for c in cases]
    dup = [i for i, c in collections.Counter(ids).items() if c > 1]
    if dup:
        sys.exit("%s: duplicate ids %s" % (path, dup))
    return cases


def run_case(c):
    cid, target, expr, expect, reason = c
    inp = eval(expr, vars(gen))  # the table is ours: expressions build the inputs
    mark = log_mark()
    t0 = time.monotonic()
    got, text = TARGETS[target](inp)
    dt = time.monotonic() - t0
    if E.get("HOSTILE_LEARN"):
        with open(E["HOSTILE_LEARN"], "a") as f:
            t = " | ".join(text.split("\n")[-3:])[-400:] + " || " + log_since(mark)[-600:]
            f.write("%s\t%s\t%s\n" % (cid, got, t.replace("\n", " // ").replace("\r", "")))
    if got != expect:
        raise Fail("got %s, want %s: %s" % (got, expect, text.strip()[-300:]))
    # "A||B": either reason (two deadlines of the same length race: whichever fires first)
    named = lambda t: any(r in t for r in reason.split("||"))  # noqa: E731
    if reason.startswith("log:"):  # the daemon's log since the case began names it
        reason = reason[4:]
        for _ in range(100):  # it may log just after it closed the connection (5 s: CI load)
            text = log_since(mark)
            if named(text):
                break
    if reason != "-" and not named(text):
        raise Fail("%s without the reason \"%s\": %s" % (got, reason, text.strip()[-300:]))
    if target not in ("conf", "issue"):
        alive()
    return dt


def main():
    cases = load(sys.argv[1])
    only = sys.argv[2:]
    if only:
        cases = [c for c in cases if any(c[0].startswith(p) for p in only)]
    by = collections.Counter(c[1] for c in cases)
    fails, t_all = [], time.monotonic()
    before, accepted = issued(), 0
    for c in cases:
        if c[1] == "issue" and c[3] == "exit=0" or c[1] in ("est", "https") and c[3] == "http=200" and \
                "enroll(" in c[2] or c[1] == "line" and c[3] == "exit=0":
            accepted += 1  # a tolerated input (see its reason column): one certificate
        try:
            dt = run_case(c)
            print("ok   %-28s %-5s %-10s %5.2fs  %s" % (c[0], c[1], c[3], dt, c[4]), flush=True)
        except Fail as e:
            fails.append((c[0], str(e)))
            print("FAIL %-28s %-5s %s" % (c[0], c[1], e), flush=True)
        except subprocess.TimeoutExpired:
            fails.append((c[0], "hang: no end within %.0f s" % CASE_TIMEOUT))
            print("FAIL %-28s hang" % c[0], flush=True)
    after = issued()
    if after != before + accepted:
        fails.append(("(all)", "%d certificates issued, %d expected (tolerated inputs only)" % (
            after - before, accepted)))
    print("hostile suite: %d cases tried in %.0f s; by target: %s" % (
        len(cases), time.monotonic() - t_all,
        ", ".join("%s %d" % kv for kv in sorted(by.items()))))
    print("hostile suite: %d passed, %d failed" % (len(cases) - len(fails), len(fails)))
    for cid, why in fails:
        print("  failed: %s: %s" % (cid, why))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
