#!/usr/bin/env bash
# keyline-estd: everything that must be refused, and how. Authentication (401), authorisation
# and policy (403), malformed bodies (400), media types (415), sizes (413), channel binding
# (RFC 7030 3.5, tls-unique on TLS 1.2 from a Python ssl client).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf "max-body = 16384"
est_start

enroll() { # STATUS DESCRIPTION BODYFILE [curl args...]
    local want=$1 what=$2 body=$3
    shift 3
    expect_status "$want" "$what" -H "Content-Type: application/pkcs10" --data-binary @"$body" "$@" "$EST/simpleenroll"
}

new_csr dev "/CN=device-r/serialNumber=HWR001"
before=$(count_issued)

# --- 401: no acceptable credentials ------------------------------------------------------------
st=$(ecurl -D "$D/hdr" -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll")
[ "$st" = 401 ] || die "no auth: HTTP $st"
grep -qi '^www-authenticate: Basic realm="keyline-est"' "$D/hdr" || die "401 without WWW-Authenticate"
ok "no credentials -> 401 with WWW-Authenticate"
enroll 401 "wrong password" "$D/dev.b64" -u "$EST_USER:wrong"
enroll 401 "unknown user" "$D/dev.b64" -u "mallory:$EST_PASS"
enroll 401 "empty password" "$D/dev.b64" -u "$EST_USER:"
expect_status 401 "malformed Authorization" -H "Authorization: Basic !!!" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll"

# a client certificate from a CA we do not know (made with openssl, same names as ours)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/evil-ca.key" \
    -subj "/CN=Keyline Factory CA/O=Keyline Test" -days 2 -out "$D/evil-ca.pem" 2>/dev/null
new_csr evil "/CN=sensor-0001/serialNumber=HW0001"
openssl x509 -req -in "$D/evil.csr" -CA "$D/evil-ca.pem" -CAkey "$D/evil-ca.key" -days 1 \
    -set_serial 7 -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$D/evil.crt" 2>/dev/null
enroll 401 "foreign-CA client cert" "$D/dev.b64" --cert "$D/evil.crt" --key "$D/evil.key"

# a revoked IDevID
new_csr idev2 "/CN=sensor-0002/serialNumber=HW0002"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev2.csr" --device-id HW0002 --out "$D/idev2.crt" >/dev/null
new_csr dev2 "/CN=sensor-0002/serialNumber=HW0002"
enroll 200 "IDevID 2 before revocation" "$D/dev2.b64" --cert "$D/idev2.crt" --key "$D/idev2.key"
kca revoke --serial "$(serial_of "$D/idev2.crt")" --reason keyCompromise >/dev/null
enroll 401 "revoked client cert" "$D/dev2.b64" --cert "$D/idev2.crt" --key "$D/idev2.key"
# revoked in the middle of a keep-alive connection: the TLS session (and its verified client
# certificate) lives on, the next request on it must still be refused at once
new_csr idev3 "/CN=sensor-0003/serialNumber=HW0003"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev3.csr" --device-id HW0003 --out "$D/idev3.crt" >/dev/null
new_csr dev3 "/CN=sensor-0003/serialNumber=HW0003"
ka_out=$(PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" "$BIN/keyline-ca" "$KL_CONF" "$(serial_of "$D/idev3.crt")" "$EST_USER" "$EST_PASS" <<'PY'
import socket, ssl, subprocess, sys
import est_http
port, d, kca, conf, serial, user, pw = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
ctx.load_cert_chain(d + "/idev3.crt", d + "/idev3.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="127.0.0.1")
body = open(d + "/dev3.b64", "rb").read()
f = s.makefile("rb")
def enroll(basic=False):
    auth = est_http.basic(user, pw) if basic else None
    s.sendall(est_http.enroll_request(body, auth=auth))
    return est_http.read_response(f)
got = [enroll(), enroll()]
subprocess.run([kca, "-c", conf, "revoke", "--serial", serial, "--reason", "keyCompromise"],
               check=True, stdout=subprocess.DEVNULL)
got += [enroll(), enroll(), enroll(basic=True)]
print(" ".join(map(str, got)))
PY
) || die "keep-alive revocation client failed"
[ "$ka_out" = "200 200 401 401 200" ] || die "keep-alive, revoked mid-connection: got $ka_out, expected 200 200 401 401 200"
ok "client cert revoked mid keep-alive connection -> next request 401 (Basic still works)"
# ours and valid, but a server certificate (no clientAuth)
enroll 401 "server cert used as client cert" "$D/dev.b64" --cert "$D/est-server.crt" --key "$D/est-server.key"
# a refused certificate does not hide good Basic credentials
enroll 200 "revoked cert + good Basic" "$D/dev.b64" --cert "$D/idev2.crt" --key "$D/idev2.key" -u "$EST_USER:$EST_PASS"

# --- 403: authenticated but not allowed ---------------------------------------------------------
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "LDevID for reenroll tests" "$D/ldev.b64" --cert "$D/idev.crt" --key "$D/idev.key"
p7_to_pem "$D/out" "$D/ldev.pem"
new_csr other "/CN=someone-else/serialNumber=HW0999"
expect_status 403 "reenroll with a different subject" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/other.b64" "$EST/simplereenroll"
grep -q "subject differs" "$D/out" || die "403 body: $(cat "$D/out")"
# RFC 7030 4.2.2: subjectAltName identical too (the LDevID has none; the IDevID has its HMN)
new_csr ldevsan "/CN=sensor-0001/serialNumber=HW0001" -addext "subjectAltName=DNS:sensor-0001.example"
expect_status 403 "reenroll adding a subjectAltName" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldevsan.b64" "$EST/simplereenroll"
grep -q "subjectAltName differs" "$D/out" || die "403 body: $(cat "$D/out")"
expect_status 403 "reenroll of the IDevID without its subjectAltName" --cert "$D/idev.crt" --key "$D/idev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simplereenroll"
grep -q "subjectAltName differs" "$D/out" || die "403 body: $(cat "$D/out")"
expect_status 403 "reenroll with Basic only" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simplereenroll"
expect_status 401 "reenroll without credentials" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simplereenroll"
# template policy: subject attribute the LDevID template does not allow; wrong key type
new_csr badsubj "/CN=dev/serialNumber=HWR002/O=Evil Corp"
enroll 403 "policy: forbidden subject attribute" "$D/badsubj.b64" -u "$EST_USER:$EST_PASS"
grep -q "subject attribute O is not allowed" "$D/out" || die "403 body: $(cat "$D/out")"
openssl req -new -newkey rsa:2048 -nodes -keyout "$D/rsa.key" -subj "/CN=rsa-dev/serialNumber=HWR003" -outform DER 2>/dev/null | openssl base64 > "$D/rsa.b64"
enroll 403 "policy: RSA-2048 key" "$D/rsa.b64" -u "$EST_USER:$EST_PASS"
grep -qi "key" "$D/out" || die "403 body: $(cat "$D/out")"
# IDevID holder asking for another device's serial number
new_csr hijack "/CN=sensor-0001/serialNumber=HW0002"
enroll 403 "IDevID HW0001 asks for serialNumber HW0002" "$D/hijack.b64" --cert "$D/idev.crt" --key "$D/idev.key"

# --- 400: malformed bodies ------------------------------------------------------------------------
printf '!!! not base64 !!!\n' > "$D/bad.b64"
enroll 400 "bad base64" "$D/bad.b64" -u "$EST_USER:$EST_PASS"
head -c 300 /dev/urandom | openssl base64 > "$D/garbage.b64"
enroll 400 "DER garbage" "$D/garbage.b64" -u "$EST_USER:$EST_PASS"
: > "$D/empty.b64"
enroll 400 "empty body" "$D/empty.b64" -u "$EST_USER:$EST_PASS"
# a CSR whose signature does not match (flip a byte inside the signature)
openssl req -in "$D/dev.csr" -outform DER > "$D/dev.der"
python3 - "$D/dev.der" "$D/badsig.der" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[-5] ^= 0x01
open(sys.argv[2], "wb").write(bytes(d))
PY
openssl base64 -in "$D/badsig.der" > "$D/badsig.b64"
enroll 400 "CSR with a bad signature" "$D/badsig.b64" -u "$EST_USER:$EST_PASS"
grep -q "no proof of possession" "$D/out" || die "bad signature, body: $(cat "$D/out")"
# serverkeygen: keyline-cad gets the CSR of the key keyline-estd makes, never the client's, so
# keyline-estd checks the client's CSR is intact itself
issued_before=$(count_issued)
expect_status 400 "serverkeygen, CSR with a bad signature" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/badsig.b64" -u "$EST_USER:$EST_PASS" "$EST/serverkeygen"
grep -q "no proof of possession" "$D/out" || die "serverkeygen bad signature, body: $(cat "$D/out")"
[ "$(count_issued)" = "$issued_before" ] || die "serverkeygen issued for a CSR with a bad signature"
{ cat "$D/dev.der"; printf 'trailing'; } | openssl base64 > "$D/trailing.b64"
enroll 400 "DER with trailing bytes" "$D/trailing.b64" -u "$EST_USER:$EST_PASS"

# --- 415, 413 -------------------------------------------------------------------------------------
expect_status 415 "wrong content type" -u "$EST_USER:$EST_PASS" -H "Content-Type: text/plain" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
expect_status 415 "form-encoded (curl default)" -u "$EST_USER:$EST_PASS" --data @"$D/dev.b64" "$EST/simpleenroll"
head -c 40000 /dev/zero | tr '\0' 'A' > "$D/big.b64"
# "Expect: 100-continue" lets the server refuse before the body is sent; without it the
# server's early 413 races the client's upload and the client may see a reset instead.
enroll 413 "oversized body (Content-Length)" "$D/big.b64" -u "$EST_USER:$EST_PASS" -H "Expect: 100-continue"
enroll 413 "oversized body (chunked)" "$D/big.b64" -u "$EST_USER:$EST_PASS" -H "Transfer-Encoding: chunked" -H "Expect: 100-continue"

after=$(count_issued)
# issued in this test: IDevID 2, its enrollment, revoked-cert+Basic enrollment, the LDevID,
# IDevID 3 and its three keep-alive enrollments
[ "$after" = $((before + 8)) ] || die "refused requests issued certificates ($before -> $after)"
ok "nothing was issued for refused requests"

# the issuing CA's own certificate revoked: every certificate under it is refused (Basic still works)
idev_ca=$(serial_of "$D/factory1.pem")
new_csr devca "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "IDevID before its CA is revoked" "$D/devca.b64" --cert "$D/idev.crt" --key "$D/idev.key"
kca revoke --serial "$idev_ca" --reason cACompromise >/dev/null
enroll 401 "IDevID whose factory CA certificate is revoked" "$D/devca.b64" --cert "$D/idev.crt" --key "$D/idev.key"
grep -q "its issuing CA is not valid: CA 'factory1' cannot issue: its certificate $idev_ca is revoked (cACompromise)" "$D/estd.log" ||
    die "log does not name the revoked issuing CA"
enroll 200 "Basic while the factory CA is revoked" "$D/dev.b64" -u "$EST_USER:$EST_PASS"

# --- channel binding (RFC 7030 3.5) ---------------------------------------------------------------
# optional mode: a challengePassword that is not this session's tls-unique is refused
printf '[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=cb-dev\nserialNumber=HWC001\n[attrs]\nchallengePassword=bm90LXRoZS1iaW5kaW5n\n' > "$D/cbwrong.cnf"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/cbwrong.key" \
    -config "$D/cbwrong.cnf" -outform DER 2>/dev/null | openssl base64 > "$D/cbwrong.b64"
enroll 403 "challengePassword that is not the channel binding" "$D/cbwrong.b64" -u "$EST_USER:$EST_PASS"

# the right one, from a TLS 1.2 session (tls-unique), over the same connection
cb_enroll() { # prints the HTTP status of an enrollment that carries this session's tls-unique
    PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" "$EST_USER" "$EST_PASS" "${1:-right}" <<'PY'
import base64, socket, ssl, sys
import est_http
port, d, user, pw, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
cb = base64.b64encode(s.get_channel_binding("tls-unique")).decode()
der = est_http.csr_with_challenge(d, "cb", "cb-dev", "HWC002", None if mode == "none" else cb)
req = est_http.enroll_request(base64.encodebytes(der), auth=est_http.basic(user, pw), close=True)
s.sendall(req)
resp = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    resp += b
print(resp.split(b" ", 2)[1].decode())
PY
}
[ "$(cb_enroll right)" = 200 ] || die "tls-unique channel binding refused"
ok "channel binding: CSR with this session's tls-unique -> 200"

est_stop

# required mode: no challengePassword -> 403; the right one still passes
sed -i 's/^channel-binding = .*/channel-binding = required/' "$KL_CONF"
est_start
enroll 403 "channel binding required, CSR without it" "$D/dev.b64" -u "$EST_USER:$EST_PASS"
[ "$(cb_enroll none)" = 403 ] || die "required mode accepted a CSR without binding"
[ "$(cb_enroll right)" = 200 ] || die "required mode refused the right binding"
ok "channel binding required: absent -> 403, right -> 200"
openssl base64 -d -in <(ecurl "$EST/csrattrs" >/dev/null; cat "$D/out") | openssl asn1parse -inform DER | grep -q challengePassword || die "csrattrs lacks challengePassword"
est_stop

# Last, as nothing issues under a revoked root any more (issue 10, defect 2); optional binding
# again, as curl cannot put this session's tls-unique into the renewal CSR.
sed -i 's/^channel-binding = .*/channel-binding = optional/' "$KL_CONF"
est_start
# a CA certificate above the issuing client-ca (here the root's own) revoked in the store: the
# LDevID (issued by field1, under root1) is refused from the next request on, over the same
# kind of check as its direct issuer
expect_status 200 "LDevID reenroll before the root is revoked" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simplereenroll"
# (keyline-ca revoke refuses a root's own certificate, revoke_root_self.sh: a store may still
# hold one revoked from before that refusal, made so here by editing its row)
sqlite3 "$D/keyline.db" "UPDATE certs SET status = 'revoked', revoked_at = strftime('%s','now'), revoke_reason = 2 WHERE serial = '$(serial_of "$D/root1.pem")'"
expect_status 401 "LDevID once the root above its issuer is revoked" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simplereenroll"
grep -q "CA 'field1' cannot issue: the certificate $(serial_of "$D/root1.pem") of CA 'root1' above it is revoked" "$D/estd.log" ||
    die "log does not name the revoked CA above the issuer"
est_stop
ok "SIGTERM -> exit 0"
