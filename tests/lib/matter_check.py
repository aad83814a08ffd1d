#!/usr/bin/env python3
"""Independent checks for the Matter tests (tests/integration/matter_*.sh), Python stdlib only,
written from the Matter Core Specification, not from keyline's code:

  matter_check.py decode QR MANUAL
      decode the QR code text (MT: + base-38, 5.1.3) and the 11-digit manual pairing code
      (5.1.4, Verhoeff check), check they agree; print JSON {vid, pid, flow, discovery,
      discriminator, passcode}
  matter_check.py verifier PASSCODE SALT_B64 ITERATIONS
      the SPAKE2+ verifier (3.10): PBKDF2-HMAC-SHA256(passcode, 4 bytes little-endian), w0 and
      L = w1*G on P-256 in pure Python; print it in base64
  matter_check.py dn-ids CERT.pem
      the Matter VendorID/ProductID attributes of the certificate's subject, read from the DER
      with a small parser of its own: print JSON {"vid": "FFF1", "pid": "8000"|null}; exit 1
      when an attribute is not a UTF8String of four upper-case hex digits
  matter_check.py keyids CERT.pem
      the lengths and criticality of subjectKeyIdentifier / authorityKeyIdentifier keyIdentifier:
      print JSON {"ski": [len, critical], "aki": [len, critical] | null}
"""
import base64
import hashlib
import json
import re
import sys

B38 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-."
INVALID = {0, 11111111, 22222222, 33333333, 44444444, 55555555, 66666666, 77777777, 88888888,
           99999999, 12345678, 87654321}


def die(msg):
    print("matter_check: " + msg, file=sys.stderr)
    sys.exit(1)


def qr_decode(text):
    if not text.startswith("MT:") or len(text) != 22:
        die("QR text %r is not MT: + 19 characters" % text)
    body, raw = text[3:], bytearray()
    for i in range(0, len(body), 5):
        chunk = body[i:i + 5]
        v = 0
        for c in reversed(chunk):
            v = v * 38 + B38.index(c)
        n = {5: 3, 4: 2, 2: 1}[len(chunk)]
        raw += v.to_bytes(n, "little")
    bits = int.from_bytes(bytes(raw), "little")
    out, off = {}, 0
    for name, width in (("version", 3), ("vid", 16), ("pid", 16), ("flow", 2), ("discovery", 8),
                        ("discriminator", 12), ("passcode", 27), ("padding", 4)):
        out[name] = (bits >> off) & ((1 << width) - 1)
        off += width
    if out["version"] != 0 or out["padding"] != 0:
        die("QR payload version/padding not 0")
    return out


# Verhoeff (dihedral group D5)
VD = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
VP = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
for _ in range(7):
    VP.append([VP[-1][[1, 5, 7, 6, 2, 8, 3, 0, 9, 4][k]] for k in range(10)])


def verhoeff_ok(digits):
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = VD[c][VP[i % 8][int(ch)]]
    return c == 0


def manual_decode(code):
    if not re.fullmatch(r"[0-9]{11}", code):
        die("manual code %r is not 11 digits" % code)
    if not verhoeff_ok(code):
        die("manual code %r: Verhoeff check digit wrong" % code)
    d1, c2, c3 = int(code[0]), int(code[1:6]), int(code[6:10])
    if d1 & 4:
        die("manual code says VID/PID follow, but it has 11 digits")
    return {"short_discriminator": ((d1 & 3) << 2) | (c2 >> 14),
            "passcode": (c3 << 14) | (c2 & 0x3FFF)}


# P-256
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
A = P - 3
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def ec_add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        lam = (3 * x1 * x1 + A) * pow(2 * y1, P - 2, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, P - 2, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def ec_mul(k, pt):
    r = None
    while k:
        if k & 1:
            r = ec_add(r, pt)
        pt = ec_add(pt, pt)
        k >>= 1
    return r


def verifier(passcode, salt, iterations):
    ws = hashlib.pbkdf2_hmac("sha256", passcode.to_bytes(4, "little"), salt, iterations, 80)
    w0 = int.from_bytes(ws[:40], "big") % N
    w1 = int.from_bytes(ws[40:], "big") % N
    x, y = ec_mul(w1, G)
    return w0.to_bytes(32, "big") + b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


# a small DER reader: (tag, content, next offset)
def der(b, off):
    tag, ln = b[off], b[off + 1]
    off += 2
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(b[off:off + n], "big")
        off += n
    return tag, b[off:off + ln], off + ln


def der_seq(b):
    out, off = [], 0
    while off < len(b):
        t, c, off = der(b, off)
        out.append((t, c))
    return out


def oid_str(c):
    first = c[0]
    parts, v = [first // 40, first % 40], 0
    for x in c[1:]:
        v = (v << 7) | (x & 0x7F)
        if not x & 0x80:
            parts.append(v)
            v = 0
    return ".".join(map(str, parts))


def tbs_of(path):
    pem = open(path).read()
    b64 = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    cert = base64.b64decode(b64)
    _, c, _ = der(cert, 0)
    return der_seq(der_seq(c)[0][1])


def dn_ids(path):
    tbs = tbs_of(path)
    off = 1 if tbs[0][0] == 0xA0 else 0  # [0] version
    subject = tbs[off + 4][1]
    ids = {"vid": None, "pid": None}
    for _, rdn in der_seq(subject):
        for _, atv in der_seq(rdn):
            (_, oid), (tag, val) = der_seq(atv)
            name = {"1.3.6.1.4.1.37244.2.1": "vid", "1.3.6.1.4.1.37244.2.2": "pid"}.get(oid_str(oid))
            if not name:
                continue
            if ids[name] is not None:
                die("%s: %s twice" % (path, name))
            if tag != 0x0C or not re.fullmatch(rb"[0-9A-F]{4}", val):
                die("%s: %s is tag 0x%02x %r, not a UTF8String of four upper-case hex digits"
                    % (path, name, tag, val))
            ids[name] = val.decode()
    return ids


def keyids(path):
    tbs = tbs_of(path)
    exts = [c for t, c in tbs if t == 0xA3]
    out = {"ski": None, "aki": None}
    for _, ext in der_seq(der_seq(exts[0])[0][1]):
        parts = der_seq(ext)
        oid = oid_str(parts[0][1])
        crit = len(parts) == 3 and parts[1] == (0x01, b"\xff")
        val = parts[-1][1]
        if oid == "2.5.29.14":
            _, kid, _ = der(val, 0)
            out["ski"] = [len(kid), crit]
        elif oid == "2.5.29.35":
            items = der_seq(der(val, 0)[1])
            kid = [c for t, c in items if t == 0x80]
            out["aki"] = [len(kid[0]) if kid else 0, crit, len(items)]
    return out


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "decode":
        q, m = qr_decode(sys.argv[2]), manual_decode(sys.argv[3])
        if q["passcode"] != m["passcode"] or q["discriminator"] >> 8 != m["short_discriminator"]:
            die("QR code and manual code disagree: %r %r" % (q, m))
        if q["passcode"] in INVALID or not 1 <= q["passcode"] <= 99999998:
            die("passcode %d is one the specification forbids" % q["passcode"])
        print(json.dumps({k: q[k] for k in ("vid", "pid", "flow", "discovery", "discriminator",
                                             "passcode")}))
    elif len(sys.argv) == 5 and sys.argv[1] == "verifier":
        v = verifier(int(sys.argv[2]), base64.b64decode(sys.argv[3]), int(sys.argv[4]))
        print(base64.b64encode(v).decode())
    elif len(sys.argv) == 3 and sys.argv[1] == "dn-ids":
        print(json.dumps(dn_ids(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "keyids":
        print(json.dumps(keyids(sys.argv[2])))
    else:
        die("usage: see the docstring")


if __name__ == "__main__":
    main()
