"""Small HTTP/1.1 pieces for the EST integration tests' inline Python clients.

Imported by tests/integration/est_*.sh with PYTHONPATH=$KL_SRC/tests/lib, so every client
speaks to keyline-estd the same way: one keep-alive-aware request/response reader, one way to
build an enrollment request, one way to make a CSR carrying a challengePassword.
"""
import base64
import subprocess
import sys


def basic(user, pw):
    """The value of an Authorization header for HTTP Basic."""
    return "Basic " + base64.b64encode((user + ":" + pw).encode()).decode()


def enroll_request(body, op="simpleenroll", auth=None, close=False):
    """A POST of a base64 PKCS#10 body to /.well-known/est/OP."""
    hdr = ("POST /.well-known/est/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Content-Type: application/pkcs10\r\nContent-Length: %d\r\n" % (op, len(body)))
    if auth:
        hdr += "Authorization: " + auth + "\r\n"
    if close:
        hdr += "Connection: close\r\n"
    return (hdr + "\r\n").encode() + body


def read_response(f, keep_alive=True):
    """Read one response from file object f; returns the status. With keep_alive, a server
    that announces Connection: close fails the test (the connection must stay open)."""
    status = int(f.readline().split()[1])
    clen = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        k, v = line.decode().split(":", 1)
        if k.lower() == "content-length":
            clen = int(v)
        if keep_alive and k.lower() == "connection" and "close" in v.lower():
            sys.exit("server closed the keep-alive connection")
    f.read(clen)
    return status


def csr_with_challenge(d, name, cn, serial, challenge):
    """DER CSR (new P-256 key in d/NAME.key) whose challengePassword attribute is `challenge`
    (a string), or none when challenge is None."""
    attrs = "" if challenge is None else "challengePassword=" + challenge + "\n"
    conf = ("[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=%s\n"
            "serialNumber=%s\n[attrs]\n%s" % (cn, serial, attrs))
    with open(d + "/" + name + ".cnf", "w") as fh:
        fh.write(conf)
    return subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/" + name + ".key",
                           "-config", d + "/" + name + ".cnf", "-outform", "DER"],
                          check=True, capture_output=True).stdout
