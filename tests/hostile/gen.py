"""Input generators for the hostile suite (tests/hostile/cases.tsv, run by run.py).

A case's `input` column is a Python expression evaluated in this module's namespace: it builds
the bytes to send (a CSR in DER, an HTTP request, TLS records, an OCSP request, a CA-protocol
frame, a keyline.conf text). DER is written here by hand (Python standard library) and signed
with the openssl CLI, so the inputs are what openssl(1) will not produce. Nothing here talks to a
server: run.py does.
"""
import base64
import os
import struct
import subprocess
import sys
import tempfile

WORK = os.environ.get("HOSTILE_DIR", tempfile.gettempdir())
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
sys.path.insert(0, os.path.join(DATA, "csr"))
from craft import enc  # noqa: E402  one DER TLV (definite length)

# --- DER ------------------------------------------------------------------------------------


def seq(*items):
    return enc(0x30, b"".join(items))


def oid(dotted):
    p = [int(x) for x in dotted.split(".")]
    out = bytes([40 * p[0] + p[1]])
    for v in p[2:]:
        b = [v & 0x7F]
        v >>= 7
        while v:
            b.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(b))
    return enc(0x06, out)


def integer(v):
    return enc(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def octets(b):
    return enc(0x04, b)


TRUE = b"\x01\x01\xff"

# --- names ----------------------------------------------------------------------------------
CN_OID, SN_OID, O_OID = "2.5.4.3", "2.5.4.5", "2.5.4.10"


def rdn(oid_s, value, tag=0x0C):
    v = value.encode("latin-1") if isinstance(value, str) else value
    return enc(0x31, seq(oid(oid_s), enc(tag, v)))


def name(*rdns):
    return seq(*rdns)


def CN(v, tag=0x0C):
    return rdn(CN_OID, v, tag)


def SN(v, tag=0x13):
    return rdn(SN_OID, v, tag)


def O(v):
    return rdn(O_OID, v)


DEFAULT_SUBJ = name(CN("hostile-dev"), SN("HOSTILE1"))

# --- extensions -----------------------------------------------------------------------------


def ext(oid_s, value, crit=False):
    return seq(oid(oid_s), TRUE if crit else b"", octets(value))


def bc(ca, crit=True, pathlen=None):
    inner = (TRUE if ca else b"") + (integer(pathlen) if pathlen is not None else b"")
    return ext("2.5.29.19", seq(inner), crit)


def ku(bits=b"\x03\x02\x07\x80", crit=True):  # digitalSignature
    return ext("2.5.29.15", bits, crit)


def eku(*oids):
    return ext("2.5.29.37", seq(*[oid(o) for o in oids]))


def san(*gns, crit=False):
    return ext("2.5.29.17", seq(*gns), crit)


def dns(s):
    return enc(0x82, s.encode("latin-1"))


def ip(b):
    return enc(0x87, b)


def uri(s):
    return enc(0x86, s.encode())


def unknown(crit=True, n=99):
    return ext("1.3.6.1.4.1.32473.%d" % n, b"\x05\x00", crit)


def nested(depth, leaf=b"\x05\x00"):
    """depth SEQUENCEs inside each other"""
    out = leaf
    for _ in range(depth):
        out = enc(0x30, out)
    return out


# --- keys and CSRs --------------------------------------------------------------------------
_keys = {}


def key(spec="ec:P-256"):
    """A software key (PEM file) made once per run; spec ec:CURVE or rsa:BITS."""
    if spec in _keys:
        return _keys[spec]
    path = os.path.join(WORK, "key-" + spec.replace(":", "-") + ".pem")
    kind, arg = spec.split(":")
    if kind == "ec":
        opt = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + arg]
    else:
        opt = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + arg]
    subprocess.run(["openssl", "genpkey"] + opt + ["-out", path], check=True,
                   capture_output=True)
    _keys[spec] = path
    return path


def spki(keyfile):
    return subprocess.run(["openssl", "pkey", "-in", keyfile, "-pubout", "-outform", "DER"],
                          check=True, capture_output=True).stdout


def sign(keyfile, data, md="sha256"):
    with tempfile.NamedTemporaryFile(dir=WORK) as f:
        f.write(data)
        f.flush()
        return subprocess.run(["openssl", "dgst", "-" + md, "-sign", keyfile, f.name],
                              check=True, capture_output=True).stdout


ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"))
RSA_SHA256 = seq(oid("1.2.840.113549.1.1.11"), b"\x05\x00")


def csr(subj=None, exts=None, k="ec:P-256", attrs=b"", version=0, pub=None, flip=None,
        sigalg=None, md="sha256", raw_exts=None):
    """A PKCS#10 request signed with key k. exts: list of extension DERs (None: no
    extensionRequest); raw_exts: the Extensions value as given; attrs: more attribute DER;
    flip: offset from the end of the signature whose byte is flipped after signing."""
    kf = key(k)
    body = b""
    if exts is not None or raw_exts is not None:
        ev = raw_exts if raw_exts is not None else seq(*exts)
        body += seq(oid("1.2.840.113549.1.9.14"), enc(0x31, ev))
    body += attrs
    cri = seq(integer(version), subj if subj is not None else DEFAULT_SUBJ,
              pub if pub is not None else spki(kf), enc(0xA0, body))
    alg = sigalg if sigalg is not None else (RSA_SHA256 if k.startswith("rsa") else ECDSA_SHA256)
    sig = bytearray(sign(kf, cri, md))
    if flip is not None:
        sig[-flip] ^= 0x01
    return seq(cri, alg, enc(0x03, b"\x00" + bytes(sig)))


def fixture(rel):
    """A PEM CSR from tests/data/csr, as DER."""
    pem = open(os.path.join(DATA, "csr", rel)).read()
    return base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))


def explicit_spki():
    """A P-256 public key with explicit curve parameters (RFC 5480: namedCurve only)."""
    path = os.path.join(WORK, "key-explicit.pem")
    if not os.path.exists(path):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-param_enc", "explicit",
                        "-genkey", "-noout", "-out", path], check=True, capture_output=True)
    _keys["explicit"] = path
    return spki(path)


def csr_explicit():
    explicit_spki()
    return csr(k="explicit", sigalg=ECDSA_SHA256)


def rand(n, seed=1):
    """n pseudo-random bytes (fixed per seed)."""
    import random
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


# --- HTTP -----------------------------------------------------------------------------------
EST = "/.well-known/est/"
USER = os.environ.get("EST_USER", "bootstrap")
PASS = os.environ.get("EST_PASS", "")


def basic(user=None, pw=None):
    u = USER if user is None else user
    p = PASS if pw is None else pw
    return "Basic " + base64.b64encode((u + ":" + p).encode()).decode()


def http(method="GET", path="/healthz", headers=(), body=b"", clen=True, auth=False,
         ctype=None):
    """An HTTP/1.1 request, Connection: close."""
    h = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1", "Connection: close"]
    if auth:
        h.append("Authorization: " + (basic() if auth is True else auth))
    if ctype:
        h.append("Content-Type: " + ctype)
    if clen and body is not None and method == "POST":
        h.append("Content-Length: %d" % len(body))
    h += list(headers)
    return ("\r\n".join(h) + "\r\n\r\n").encode("latin-1") + (body or b"")


def b64(der):
    return base64.encodebytes(der)


def enroll(der=None, body=None, ctype="application/pkcs10", auth=True, op="simpleenroll",
           headers=()):
    """A POST of a CSR (DER, sent base64) to /.well-known/est/OP with Basic auth."""
    if body is None:
        body = b64(der if der is not None else csr())
    return http("POST", EST + op, headers, body, auth=auth, ctype=ctype)


def chunked(body, chunk=None, sizes=None, ctype="application/pkcs10", auth=True,
            op="simpleenroll", trailer=b"0\r\n\r\n"):
    """A chunked POST; sizes: list of chunk-size lines as written (may lie)."""
    h = enroll(body=b"", ctype=ctype, auth=auth, op=op).split(b"\r\n\r\n")[0]
    h = h.replace(b"Content-Length: 0\r\n", b"").replace(b"\r\nContent-Length: 0", b"")
    out = h + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    if sizes is not None:
        for s in sizes:
            out += s.encode() + b"\r\n"
        return out
    step = chunk or len(body) or 1
    for i in range(0, len(body), step):
        part = body[i:i + step]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + trailer


# --- TLS records ----------------------------------------------------------------------------


def record(ctype, version, payload):
    return struct.pack(">BHH", ctype, version, len(payload)) + payload


def client_hello(version=0x0303, ciphers=b"\x00\x2f", exts=b""):
    body = struct.pack(">H", version) + rand(32) + b"\x00" + struct.pack(">H", len(ciphers)) + \
        ciphers + b"\x01\x00" + (struct.pack(">H", len(exts)) + exts if exts else b"")
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return record(0x16, 0x0301, hs)


SSL2_HELLO = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x07\x00\xc0" * 7 + rand(16)

# --- OCSP -----------------------------------------------------------------------------------
SHA1 = seq(oid("1.3.14.3.2.26"), b"\x05\x00")


def certid(serial=1, namehash=b"\x00" * 20, keyhash=b"\x00" * 20, alg=SHA1):
    return seq(alg, octets(namehash), octets(keyhash), integer(serial))


def ocsp_req(ids=None, n=1, exts=b""):
    """OCSPRequest with n (or the given) CertIDs."""
    if ids is None:
        ids = [certid(i + 1) for i in range(n)]
    reqs = seq(*[seq(c) for c in ids])
    return seq(seq(reqs, exts))


def ocsp_post(der, ctype="application/ocsp-request"):
    return http("POST", "/ocsp", (), der, ctype=ctype)


# --- CA protocol (docs/ca-protocol.md "Frames") ---------------------------------------------


def cap_field(tag, value):
    return struct.pack(">BI", tag, len(value)) + value


def cap(op, fields=b"", version=1, status=0, length=None):
    body = bytes([version, op, status]) + fields
    return struct.pack(">I", len(body) if length is None else length) + body


# --- the line protocol: a device on the station's fixture -----------------------------------


def dev(serial, *args, clone_of=None):
    """keyline-devsim SERIAL ARGS on the fixture (clone_of: start from a copy of that device's
    flash, as --misbehave counterfeit needs)."""
    return ("devsim", serial, list(args), clone_of)


def raw_dev(serial, answer):
    """A device that answers every station frame with `answer` (bytes)."""
    return ("raw", serial, answer, None)


def cobs(data):
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
            continue
        block.append(b)
        if len(block) == 254:
            out += b"\xff" + block
            block = bytearray()
    return bytes(out + bytes([len(block) + 1]) + block)


def uncobs(data):
    out, i = bytearray(), 0
    while i < len(data):
        n = data[i]
        if n == 0 or i + n > len(data) + 1:
            return None
        out += data[i + 1:i + n]
        i += n
        if n < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def frame(mtype, seq, payload=b"", version=1, flags=0, length=None):
    """A line-protocol frame (docs/line-protocol.md): COBS(header | payload | CRC-32) 00."""
    import zlib
    hdr = struct.pack(">BBHBH", version, mtype, seq, flags,
                      len(payload) if length is None else length)
    body = hdr + payload
    return cobs(body + struct.pack(">I", zlib.crc32(body))) + b"\x00"


def proto_dev(serial, mode):
    """A device here that decodes each station request and answers by `mode`: wrong-type
    (another request's response), old-seq (a replayed sequence number), oversized (a 3000-byte
    payload, CRC good), bad-version, bad-crc."""
    return ("proto", serial, mode, None)
