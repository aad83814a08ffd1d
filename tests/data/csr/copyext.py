#!/usr/bin/env python3
"""Print an `openssl req -addext` argument for every extension of a certificate, in its order,
with its criticality and its exact DER value:

  copyext.py CERT.pem                  one "OID=[critical,]DER:HEX" per line

so that `openssl req -new ... $(copyext.py cert.pem | sed 's/^/-addext /')` makes the CSR a
client such as cisco/libest sends for /simplereenroll: est_client_reenroll() copies every
extension of the current certificate into the request (X509_REQ_add_extensions). OpenSSL 3.0's
`x509 -x509toreq -copy_extensions copyall` would drop subjectKeyIdentifier and
authorityKeyIdentifier, hence this. Numeric OIDs with DER: values make openssl write each value
as it is, whatever the extension. Python standard library only (see README.md)."""
import base64
import sys

from craft import children, content, tlv


def oid_str(body):
    """Dotted form of an OBJECT IDENTIFIER's content octets."""
    arcs, v = [], 0
    for b in body:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first] + arcs[1:])


def main():
    pem = open(sys.argv[1]).read()
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----")[0]
    der = base64.b64decode("".join(body.split()))
    tbs = children(content(der))[0]
    exts = [f for f in children(content(tbs)) if tlv(f)[0] == 0xA3]  # [3] EXPLICIT Extensions
    if not exts:
        sys.exit("no extensions")
    for ext in children(content(children(content(exts[0]))[0])):
        parts = children(content(ext))
        crit = len(parts) == 3 and content(parts[1]) == b"\xff"
        print("%s=%sDER:%s" % (oid_str(content(parts[0])), "critical," if crit else "",
                                content(parts[-1]).hex()))


if __name__ == "__main__":
    main()
