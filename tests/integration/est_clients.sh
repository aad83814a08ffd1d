#!/usr/bin/env bash
# keyline-estd with the requests real EST clients send (issue 12, item 5), byte for byte as their
# public sources build them, not only curl's:
#
# cisco/libest (src/est/est_client.c, 3.2.0p): headers in this order, "User-Agent: libest
#   3.2.0p", "Connection: close", "Host: HOST:PORT", "Accept: */*", "Content-Type:
#   application/pkcs10", "Content-Length: N" (est_client_build_*_header), the body base64 as
#   BIO_f_base64 writes it (64 columns, "\n"), then "\r\n" more than Content-Length says
#   (est_client_send_enroll_request_internal). Its /simplereenroll CSR is the current
#   certificate turned into a request (X509_to_X509_REQ: same subject, same key) carrying every
#   extension of that certificate (X509_REQ_add_extensions): SKI, AKI, key usage, EKU, basic
#   constraints, CRL DP, AIA. It decodes answers with BIO_f_base64 (here: openssl base64 -d).
# globalsign/est (client.go, v1.0.6): Go's net/http, "User-Agent: GlobalSign EST Client v1.0.6
#   github.com/globalsign/est", "Accept: application/pkcs7-mime", "Content-Type:
#   application/pkcs10", "Content-Transfer-Encoding: base64", "Accept-Encoding: gzip", the body
#   base64 in CRLF-ended lines of 76 (breakLines), sent chunked (an ioutil.NopCloser body has
#   no known length); its reenroll CSR carries the certificate's raw subject and its
#   subjectAltName only (cmd/estclient/enroll.go), signed by the same key.
#
# What this pins: libest's renewal, refused with 403 before (its copied SKI and the others), is
# issued, and the certificate has the template's extensions, not the request's; one that would
# widen the certificate (CA:TRUE, keyCertSign) is still 403 with the reason in the body; both
# clients enroll, renew and fetch /cacerts; an HTTP/1.0 request gets a whole, unchunked answer.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
export OPENSSL_CONF=/dev/null

est_setup_ca
est_write_conf
est_start
port=${EST_URL##*:}

# raw.py OUT [--cert C --key K] < request: sends the request bytes as they are over TLS 1.2/1.3
# (trusting root1), writes the whole answer to OUT and prints its status line
cat > "$D/raw.py" <<'PY'
import socket, ssl, sys
out, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 4:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
req = sys.stdin.buffer.read()
def complete(data):
    """1 when data holds a whole response (a keep-alive connection stays open after it)"""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return 0
    fields = [l.split(b":", 1) for l in head.lower().split(b"\r\n")[1:]]
    fields = {k.strip(): v.strip() for k, v in fields}
    if fields.get(b"transfer-encoding") == b"chunked":
        return body.endswith(b"0\r\n\r\n")
    return len(body) >= int(fields.get(b"content-length", b"0"))
with socket.create_connection(("127.0.0.1", port), 10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(req)
        data = b""
        while not complete(data):
            try:
                chunk = s.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
open(out, "wb").write(data)
print(data.split(b"\r\n", 1)[0].decode())
PY
# send NAME [cert key]: the request in $D/NAME.req; status line in $D/NAME.status, headers in
# $D/NAME.hdr, body in $D/NAME.body
send() {
    local name=$1
    shift
    python3 "$D/raw.py" "$D/$name.resp" "$port" "$D/root1.pem" "$@" < "$D/$name.req" > "$D/$name.status" \
        || die "$name: no answer"
    python3 - "$D/$name" <<'PY'
import sys
p = sys.argv[1]
head, _, body = open(p + ".resp", "rb").read().partition(b"\r\n\r\n")
open(p + ".hdr", "wb").write(head + b"\r\n")
if b"transfer-encoding: chunked" in head.lower():
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2:]
    body = out
open(p + ".body", "wb").write(body)
PY
}
# certs_ok NAME DECODE CN: 200, application/pkcs7-mime, DECODE (p7_libest|p7_go) makes
# $D/NAME.pem of the body, which has CN
certs_ok() {
    status_is "$1" 200
    grep -qi '^content-type: application/pkcs7-mime' "$D/$1.hdr" || die "$1: content type"
    "$2" "$D/$1.body" "$D/$1.pem"
    grep -q "CN = $3" "$D/$1.pem" || die "$1: no $3 in $(cat "$D/$1.pem")"
}
status_is() { grep -q "^HTTP/1\.[01] $2 " "$D/$1.status" || die "$1: $(cat "$D/$1.status"), want $2: $(head -c 400 "$D/$1.body")"; }

# libest_req NAME METHOD OP [BODYFILE] [EXTRA-HEADER-LINE]: a request as libest writes it
libest_req() {
    local name=$1 method=$2 op=$3 body=${4:-} extra=${5:-}
    {
        printf '%s /.well-known/est/%s HTTP/1.1\r\nUser-Agent: libest 3.2.0p\r\nConnection: close\r\nHost: 127.0.0.1:%s\r\nAccept: */*\r\n' \
            "$method" "$op" "$port"
        if [ -n "$body" ]; then
            printf 'Content-Type: application/pkcs10\r\nContent-Length: %s\r\n' "$(stat -c %s "$body")"
        fi
        [ -z "$extra" ] || printf '%s\r\n' "$extra"
        printf '\r\n'
        if [ -n "$body" ]; then cat "$body"; printf '\r\n'; fi
    } > "$D/$name.req"
}

# BIO_f_base64 of a PEM CSR: DER, base64 in 64-column lines ending "\n" (what libest sends)
b64_libest() { openssl req -in "$1" -outform DER | openssl base64 > "$2"; }
# a certs-only answer decoded as libest does (BIO_f_base64, lines) into PEM certificates
p7_libest() { openssl base64 -d -in "$1" | openssl pkcs7 -inform DER -print_certs -out "$2"; }

# libest's simplereenroll CSR for certificate CERT with key KEY: its subject, every extension
# (tests/data/csr/copyext.py), plus ARGS (a widened one, for the refusals)
libest_reenroll_csr() {
    local cert=$1 key=$2 out=$3
    shift 3
    local subj args=()
    subj=$(openssl x509 -in "$cert" -noout -subject -nameopt compat | sed 's/^subject=//')
    while read -r e; do args+=(-addext "$e"); done < <(python3 "$KL_SRC/tests/data/csr/copyext.py" "$cert" | grep -v "${DROP:-^$}")
    openssl req -new -key "$key" -subj "$subj" "${args[@]}" "$@" -out "$out" 2>/dev/null || die "libest CSR"
}

# --- cisco/libest ------------------------------------------------------------------------------
libest_req libest-cacerts GET cacerts
send libest-cacerts
certs_ok libest-cacerts p7_libest "Keyline Test Root"
ok "libest /cacerts: 200, decoded as libest decodes it"

libest_req libest-csrattrs GET csrattrs
send libest-csrattrs
status_is libest-csrattrs 200

# first enrollment with the IDevID as TLS client certificate
new_csr le "/CN=sensor-0001/serialNumber=HW0001"
b64_libest "$D/le.csr" "$D/le.b64"
libest_req libest-enroll POST simpleenroll "$D/le.b64"
send libest-enroll "$D/idev.crt" "$D/idev.key"
certs_ok libest-enroll p7_libest sensor-0001
cp "$D/libest-enroll.pem" "$D/le.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/le.pem" >/dev/null || die "libest enroll: does not verify"
ok "libest /simpleenroll (IDevID): 200, with libest's trailing CRLF after the body"

# renewal: the LDevID's own extensions copied into the CSR, same key
libest_reenroll_csr "$D/le.pem" "$D/le.key" "$D/le-re.csr"
openssl req -in "$D/le-re.csr" -noout -text > "$D/le-re.txt"
for e in "Subject Key Identifier" "Authority Key Identifier" "CRL Distribution Points" \
    "Authority Information Access" "Key Usage" "Extended Key Usage" "Basic Constraints"; do
    grep -q "$e" "$D/le-re.txt" || die "test setup: the libest CSR lacks $e"
done
b64_libest "$D/le-re.csr" "$D/le-re.b64"
libest_req libest-reenroll POST simplereenroll "$D/le-re.b64"
send libest-reenroll "$D/le.pem" "$D/le.key"
certs_ok libest-reenroll p7_libest sensor-0001
cp "$D/libest-reenroll.pem" "$D/le2.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/le2.pem" >/dev/null || die "libest reenroll: does not verify"
[ "$(serial_of "$D/le2.pem")" != "$(serial_of "$D/le.pem")" ] || die "libest reenroll: same serial"
# the template's extensions, and SKI/AKI/CRL DP/AIA written by keyline (the old certificate's
# values are the right ones for the same key and issuer: compare with what the CA computes)
openssl x509 -in "$D/le2.pem" -noout -ext keyUsage,extendedKeyUsage,basicConstraints > "$D/le2.ext"
grep -q "Digital Signature" "$D/le2.ext" && ! grep -q "Certificate Sign" "$D/le2.ext" || die "libest reenroll: key usage $(cat "$D/le2.ext")"
grep -q "TLS Web Client Authentication" "$D/le2.ext" || die "libest reenroll: EKU"
grep -q "CA:FALSE" "$D/le2.ext" || die "libest reenroll: basic constraints"
want_ski=$(openssl x509 -in "$D/le2.pem" -noout -pubkey | openssl pkey -pubin -outform DER \
    | python3 -c 'import sys, hashlib; d = sys.stdin.buffer.read(); print(hashlib.sha1(d[-65:]).hexdigest())')
got_ski=$(openssl x509 -in "$D/le2.pem" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' | tr A-F a-f)
[ "$got_ski" = "$want_ski" ] || die "libest reenroll: SKI $got_ski, want $want_ski"
ok "libest /simplereenroll with every extension of the old certificate copied: 200, template's extensions"

# what would widen the certificate is still refused, with the reason in the body:
# NAME, the copied extension it replaces (OID, or none), the -addext, the reason (a SAN is
# refused before the template looks: RFC 7030 4.2.2, a renewal keeps the certificate's SANs)
while IFS='|' read -r name drop ext reason; do
    DROP="^$drop=" libest_reenroll_csr "$D/le2.pem" "$D/le.key" "$D/$name.csr" -addext "$ext"
    b64_libest "$D/$name.csr" "$D/$name.b64"
    libest_req "$name" POST simplereenroll "$D/$name.b64"
    send "$name" "$D/le2.pem" "$D/le.key"
    status_is "$name" 403
    grep -qF "$reason" "$D/$name.body" \
        || die "$name: the body lacks the reason: $(cat "$D/$name.body")"
    ok "libest /simplereenroll, $name: 403, $(head -c 160 "$D/$name.body")"
done <<'EOF'
widen-ca|2\.5\.29\.19|basicConstraints=critical,CA:TRUE|basicConstraints (CA:TRUE) which template device-ldevid does not allow
widen-ku|2\.5\.29\.15|keyUsage=critical,digitalSignature,keyCertSign|keyUsage (keyCertSign) which template device-ldevid does not allow
widen-eku|2\.5\.29\.37|extendedKeyUsage=clientAuth,codeSigning|extendedKeyUsage (codeSigning) which template device-ldevid does not allow
widen-san|none|subjectAltName=DNS:sensor-0001.example.com|subjectAltName differs from the certificate being renewed
widen-critical|none|1.3.6.1.4.1.32473.100=critical,DER:0500|critical extension 1.3.6.1.4.1.32473.100 which template device-ldevid does not allow
EOF

# --- globalsign/est ----------------------------------------------------------------------------
# go_req NAME METHOD OP ACCEPT [BODYFILE]: as Go's net/http writes globalsign/est's requests
go_req() {
    local name=$1 method=$2 op=$3 accept=$4 body=${5:-}
    {
        printf '%s /.well-known/est/%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUser-Agent: GlobalSign EST Client v1.0.6 github.com/globalsign/est\r\n' \
            "$method" "$op" "$port"
        [ -z "$body" ] || printf 'Transfer-Encoding: chunked\r\n'
        printf 'Accept: %s\r\n' "$accept"
        [ -z "${GO_AUTH:-}" ] || printf 'Authorization: Basic %s\r\n' "$GO_AUTH"
        [ -z "$body" ] || printf 'Content-Transfer-Encoding: base64\r\nContent-Type: application/pkcs10\r\n'
        printf 'Accept-Encoding: gzip\r\n\r\n'
        if [ -n "$body" ]; then
            printf '%x\r\n' "$(stat -c %s "$body")"
            cat "$body"
            printf '\r\n0\r\n\r\n'
        fi
    } > "$D/$name.req"
}
# globalsign/est's base64Encode: StdEncoding, CRLF-ended lines of 76
b64_go() {
    openssl req -in "$1" -outform DER | python3 -c '
import base64, sys
b = base64.b64encode(sys.stdin.buffer.read())
sys.stdout.buffer.write(b"".join(b[i:i + 76] + b"\r\n" for i in range(0, len(b), 76)))' > "$2"
}
# Go decodes answers with base64.StdEncoding, which skips CR and LF
p7_go() {
    python3 -c 'import base64, sys; sys.stdout.buffer.write(base64.b64decode(b"".join(open(sys.argv[1], "rb").read().split())))' "$1" \
        | openssl pkcs7 -inform DER -print_certs -out "$2"
}

go_req go-cacerts GET cacerts application/pkcs7-mime
send go-cacerts
certs_ok go-cacerts p7_go "Keyline Field CA"
ok "globalsign/est /cacerts: 200"

new_csr ge "/CN=go-device-1/serialNumber=HWG001"
b64_go "$D/ge.csr" "$D/ge.b64"
GO_AUTH=$(printf '%s:%s' "$EST_USER" "$EST_PASS" | base64 -w0) go_req go-enroll POST simpleenroll application/pkcs7-mime "$D/ge.b64"
send go-enroll
certs_ok go-enroll p7_go go-device-1
cp "$D/go-enroll.pem" "$D/ge.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/ge.pem" >/dev/null || die "globalsign enroll: does not verify"
ok "globalsign/est /simpleenroll (Basic, chunked, CRLF base64, Content-Transfer-Encoding): 200"

# reenroll: the certificate's subject (and SANs: none here), same key, as crypto/x509 makes it
openssl req -new -key "$D/ge.key" -subj "$(openssl x509 -in "$D/ge.pem" -noout -subject -nameopt compat | sed 's/^subject=//')" \
    -out "$D/ge-re.csr" 2>/dev/null
b64_go "$D/ge-re.csr" "$D/ge-re.b64"
go_req go-reenroll POST simplereenroll application/pkcs7-mime "$D/ge-re.b64"
send go-reenroll "$D/ge.pem" "$D/ge.key"
certs_ok go-reenroll p7_go go-device-1
cp "$D/go-reenroll.pem" "$D/ge2.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/ge2.pem" >/dev/null || die "globalsign reenroll: does not verify"
ok "globalsign/est /simplereenroll: 200"

# --- HTTP/1.0 ----------------------------------------------------------------------------------
# A libest built to send HTTP/1.0 (an unmerged change) is served: whole answers with a
# Content-Length, never chunked (a 1.0 client cannot read that), the connection closed after.
# It also compares the status line literally ("HTTP/1.0 200"): keyline-estd answers an HTTP/1.0
# request with an HTTP/1.0 status line (MHD_RF_HTTP_1_0_SERVER).
http10_check() {
    local name=$1
    grep -q '^HTTP/1\.0 200 ' "$D/$name.status" || die "$name: $(cat "$D/$name.status"): $(head -c 300 "$D/$name.body")"
    grep -qi '^content-length: [0-9]' "$D/$name.hdr" || die "$name: no Content-Length"
    if grep -qi '^transfer-encoding: chunked' "$D/$name.hdr"; then die "$name: chunked answer to HTTP/1.0"; fi
    ok "HTTP/1.0 $name: $(cat "$D/$name.status") (an HTTP/1.0 status line), Content-Length, not chunked"
}
printf 'GET /.well-known/est/cacerts HTTP/1.0\r\nUser-Agent: libest 3.2.0p\r\nHost: 127.0.0.1:%s\r\nAccept: */*\r\n\r\n' "$port" > "$D/http10.req"
send http10
http10_check http10
new_csr le10 "/CN=sensor-0001/serialNumber=HW0001"
b64_libest "$D/le10.csr" "$D/le10.b64"
libest_req http10-enroll POST simpleenroll "$D/le10.b64"
sed -i '1s|HTTP/1\.1|HTTP/1.0|' "$D/http10-enroll.req"
send http10-enroll "$D/idev.crt" "$D/idev.key"
http10_check http10-enroll
p7_libest "$D/http10-enroll.body" "$D/le10.pem"

est_stop
ok "stopped"
