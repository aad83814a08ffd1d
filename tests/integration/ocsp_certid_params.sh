#!/usr/bin/env bash
# The CertID of an OCSP answer is the CertID asked (RFC 6960 4.2.1; clients such as BouncyCastle
# match them byte for byte), also when the request's SHA-1 AlgorithmIdentifier has no
# parameters (RFC 3370 2.1: "SHOULD omit", "MUST accept" either form): keyline-cad's pre-produced
# answers carry SHA-1 with NULL parameters, so such a request is answered live, its CertID echoed.
#   - nonce-less request, NULL parameters (openssl ocsp): the pre-produced answer (responder by
#     key hash), its CertID the request's;
#   - the same request with the parameters left out: an answer whose CertID is the request's,
#     that verifies against the root and says good.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start
openssl ocsp -issuer "$D/field1.pem" -cert "$D/est-server.crt" -no_nonce -reqout "$D/null.der" \
    > /dev/null 2>&1
PYTHONPATH=$KL_SRC/tests/data/csr python3 - "$D/null.der" "$D/absent.der" <<'PY'
import sys
from craft import children as kids, content, enc  # tests/data/csr/craft.py: DER pieces

# OCSPRequest { TBSRequest { requestList { Request { CertID { hashAlgorithm, ... } } } } }
d = open(sys.argv[1], "rb").read()
tbs = kids(content(d))[0]
req = kids(content(kids(content(tbs))[0]))[0]
parts = kids(content(kids(content(req))[0]))
assert parts[0] == bytes.fromhex("300906052b0e03021a0500"), parts[0].hex()
parts[0] = bytes.fromhex("300706052b0e03021a")  # SHA-1, parameters absent
req = enc(0x30, enc(0x30, b"".join(parts)) + b"".join(kids(content(req))[1:]))
tbs = enc(0x30, enc(0x30, req) + b"".join(kids(content(tbs))[1:]))
open(sys.argv[2], "wb").write(enc(0x30, tbs))
PY

# same_certid REQ RESP: the answer's one CertID is the request's, byte for byte
same_certid() {
    python3 - "$1" "$2" <<'PY'
import sys
req, resp = (open(f, "rb").read() for f in sys.argv[1:3])
# the request's CertID: SEQUENCE from its hashAlgorithm on, found whole in the answer
alg = req.find(bytes.fromhex("06052b0e03021a"))
start = alg - 2 - 2  # CertID header (30 LL), AlgorithmIdentifier header (30 LL)
assert req[start] == 0x30 and req[start + 2] == 0x30, req.hex()
cid = req[start:start + 2 + req[start + 1]]
sys.exit(0 if cid in resp else 1)
PY
}

for _ in $(seq 1 50); do # the pre-producer's first pass may still be running
    curl -s -o "$D/null.resp" -H 'Content-Type: application/ocsp-request' \
        --data-binary @"$D/null.der" "$EST_HTTP/ocsp"
    openssl ocsp -respin "$D/null.resp" -noverify -resp_text 2>/dev/null |
        grep -q "Responder Id: [0-9A-F]\{40\}$" && break
    sleep 0.2
done
openssl ocsp -respin "$D/null.resp" -noverify -resp_text 2>/dev/null |
    grep -q "Responder Id: [0-9A-F]\{40\}$" || die "no pre-produced answer"
same_certid "$D/null.der" "$D/null.resp" || die "the pre-produced answer's CertID is not the request's"
ok "NULL parameters: the pre-produced answer, CertID as asked"

curl -s -o "$D/absent.resp" -H 'Content-Type: application/ocsp-request' \
    --data-binary @"$D/absent.der" "$EST_HTTP/ocsp"
openssl ocsp -respin "$D/absent.resp" -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" \
    -resp_text > "$D/absent.txt" 2>&1 || true
grep -q "Response verify OK" "$D/absent.txt" || die "does not verify: $(cat "$D/absent.txt")"
grep -q "Cert Status: good" "$D/absent.txt" || die "status: $(cat "$D/absent.txt")"
same_certid "$D/absent.der" "$D/absent.resp" ||
    die "parameters left out: the answer's CertID is not the request's: $(cat "$D/absent.txt")"
ok "parameters left out: CertID as asked, verifies, good"

est_stop
