#!/usr/bin/env python3
"""Re-encode a PKCS#10 request made by openssl(1) into what openssl will not write, and sign it
again with the same key (openssl dgst), so that it still proves possession:

  craft.py version1    KEY IN.pem OUT.pem   CertificationRequestInfo version 1 (only 0 exists)
  craft.py nullparams  KEY IN.pem OUT.pem   signatureAlgorithm parameters NULL (ECDSA: RFC 5758
                                            3.2 says they MUST be absent)
  craft.py noparams    KEY IN.pem OUT.pem   signatureAlgorithm parameters absent (RSA PKCS#1
                                            v1.5: RFC 4055 5 says NULL, and accept absent)

Python standard library and the openssl CLI only (see README.md)."""
import base64
import subprocess
import sys
import tempfile


def tlv(data, off=0):
    """(tag, header length, content length) of the DER TLV at data[off:]"""
    tag, first = data[off], data[off + 1]
    if first < 0x80:
        return tag, 2, first
    n = first & 0x7F
    return tag, 2 + n, int.from_bytes(data[off + 2:off + 2 + n], "big")


def enc(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + content


def children(data):
    out, off = [], 0
    while off < len(data):
        tag, hl, cl = tlv(data, off)
        out.append(data[off:off + hl + cl])
        off += hl + cl
    return out


def content(t):
    _, hl, cl = tlv(t)
    return t[hl:hl + cl]


def main():
    what, key, src, dst = sys.argv[1:5]
    pem = open(src).read()
    der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
    cri, alg, _sig = children(content(der))
    if what == "version1":
        parts = children(content(cri))
        assert parts[0] == b"\x02\x01\x00"
        cri = enc(0x30, b"\x02\x01\x01" + b"".join(parts[1:]))
    oid = children(content(alg))[0]
    if what == "nullparams":
        alg = enc(0x30, oid + b"\x05\x00")
    elif what == "noparams":
        alg = enc(0x30, oid)
    md = {"2a8648ce3d040302": "sha256", "2a864886f70d01010b": "sha256"}[content(oid).hex()]
    with tempfile.NamedTemporaryFile() as f:
        f.write(cri)
        f.flush()
        sig = subprocess.run(["openssl", "dgst", "-" + md, "-sign", key, f.name],
                             check=True, capture_output=True).stdout
    out = enc(0x30, cri + alg + enc(0x03, b"\x00" + sig))
    b64 = base64.b64encode(out).decode()
    with open(dst, "w") as f:
        f.write("-----BEGIN CERTIFICATE REQUEST-----\n")
        f.write("".join(b64[i:i + 64] + "\n" for i in range(0, len(b64), 64)))
        f.write("-----END CERTIFICATE REQUEST-----\n")


if __name__ == "__main__":
    main()
