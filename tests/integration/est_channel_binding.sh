#!/usr/bin/env bash
# keyline-estd: channel binding (RFC 7030 3.5) with channel-binding = required, from a real
# GnuTLS client (tests/tools/est_cb_client) that reads this session's binding and sends the
# CSR carrying it over the same connection:
#   TLS 1.3, tls-exporter (RFC 9266): right -> 200, one bit off -> 403, absent -> 403
#   TLS 1.2, tls-unique (RFC 5929):   right -> 200, one bit off -> 403, absent -> 403
#   TLS 1.2 with the tls-exporter value instead of tls-unique -> 403
#   TLS 1.3, no credentials but the right binding -> 401
#   a binding taken from an earlier connection -> 403
#   OpenSSL s_client as the client (interop of the RFC 9266 value): right -> 200, wrong -> 403
# with Basic and with an IDevID client certificate. The Python tls-unique checks stay in
# est_refusals.sh.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

CB=$BIN/est_cb_client
[ -x "$CB" ] || die "$CB not built"

est_setup_ca
EST_CB=required est_write_conf
est_start

# cb WANT DESCRIPTION CLIENT-ARGS...: one enrollment on a fresh connection
cb() {
    local want=$1 what=$2 got
    shift 2
    got=$(timeout 30 "$CB" --host 127.0.0.1 --port "$EST_PORT" --cafile "$D/root1.pem" \
        --out "$D/out" "$@" 2>"$D/cb.err") || die "$what: client failed: $(cat "$D/cb.err")"
    [ "$got" = "$want" ] || die "$what: HTTP $got, expected $want ($(head -c 300 "$D/out"); $(cat "$D/cb.err"))"
    ok "$what -> $want"
}
basic=(--user "$EST_USER" --pass "$EST_PASS")
before=$(count_issued)

# --- TLS 1.3: tls-exporter ---------------------------------------------------------------------
cb 200 "TLS 1.3, Basic, right tls-exporter" "${basic[@]}" --cb right --subject "/CN=cb13/serialNumber=HWCB13"
grep -q 'TLS1.3, tls-exporter (32 bytes)' "$D/cb.err" || die "client did not use a 32-byte tls-exporter: $(cat "$D/cb.err")"
p7_to_pem "$D/out" "$D/cb13.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/cb13.pem" >/dev/null || die "cb13 does not verify"
# the challengePassword is consumed by the check, never copied into the certificate
if openssl x509 -in "$D/cb13.pem" -noout -text | grep -qi 'challenge'; then die "challengePassword leaked into the certificate"; fi
ok "TLS 1.3 certificate verifies, carries no challengePassword"
cb 403 "TLS 1.3, Basic, tls-exporter with one bit flipped" "${basic[@]}" --cb wrong
grep -q 'challengePassword does not match' "$D/out" || die "403 body: $(cat "$D/out")"
cb 403 "TLS 1.3, Basic, no challengePassword" "${basic[@]}" --cb none
grep -q 'tls-exporter' "$D/out" || die "403 body should name tls-exporter: $(cat "$D/out")"
# IDevID client certificate, TLS 1.3 (the binding is independent of how the client authenticates)
cb 200 "TLS 1.3, IDevID, right tls-exporter" --cert "$D/idev.crt" --key "$D/idev.key" \
    --cb right --subject "/CN=sensor-0001/serialNumber=HW0001"
cb 403 "TLS 1.3, IDevID, wrong tls-exporter" --cert "$D/idev.crt" --key "$D/idev.key" \
    --cb wrong --subject "/CN=sensor-0001/serialNumber=HW0001"
# authentication still comes first: the right binding does not stand in for credentials
cb 401 "TLS 1.3, no credentials, right tls-exporter" --cb right

# --- TLS 1.2: tls-unique ---------------------------------------------------------------------
cb 200 "TLS 1.2, Basic, right tls-unique" "${basic[@]}" --tls12 --cb right --subject "/CN=cb12/serialNumber=HWCB12"
grep -q 'TLS1.2, tls-unique (12 bytes)' "$D/cb.err" || die "client did not use a 12-byte tls-unique: $(cat "$D/cb.err")"
cb 403 "TLS 1.2, Basic, tls-unique with one bit flipped" "${basic[@]}" --tls12 --cb wrong
cb 403 "TLS 1.2, Basic, no challengePassword" "${basic[@]}" --tls12 --cb none
grep -q 'tls-unique' "$D/out" || die "403 body should name tls-unique: $(cat "$D/out")"
cb 403 "TLS 1.2 without extended master secret, Basic, right tls-unique" "${basic[@]}" --tls12 --no-ems --cb right
grep -q 'extended master secret' "$D/out" || die "403 body should name the extended master secret: $(cat "$D/out")"
cb 403 "TLS 1.2, Basic, tls-exporter instead of tls-unique" "${basic[@]}" --tls12 --cb right --cb-type exporter

# --- a binding is good for its own connection only ---------------------------------------------
# Replay: the challengePassword of an accepted CSR, sent on a new connection (curl, TLS 1.3)
timeout 30 "$CB" --host 127.0.0.1 --port "$EST_PORT" --cafile "$D/root1.pem" "${basic[@]}" --cb right \
    --out "$D/out" 2>"$D/cb.err" >/dev/null || die "client failed: $(cat "$D/cb.err")"
old_cp=$(sed -n 's/.*challengePassword //p' "$D/cb.err")
[ -n "$old_cp" ] || die "no challengePassword logged"
printf '[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=replay\nserialNumber=HWRP01\n[attrs]\nchallengePassword=%s\n' \
    "$old_cp" > "$D/replay.cnf"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/replay.key" \
    -config "$D/replay.cnf" -outform DER 2>/dev/null | openssl base64 > "$D/replay.b64"
openssl req -inform DER -in <(openssl base64 -d -in "$D/replay.b64") -noout -text | grep -q "challengePassword.*$old_cp" ||
    die "replay CSR lacks the old challengePassword"
expect_status 403 "TLS 1.3 exporter value of an earlier connection, replayed on a new one" \
    -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" --data-binary @"$D/replay.b64" "$EST/simpleenroll"

# --- interoperability: OpenSSL as the client --------------------------------------------------
# Both ends above are GnuTLS; a device is as likely to use OpenSSL (SSL_export_keying_material).
# openssl s_client prints the RFC 9266 value (-keymatexport EXPORTER-Channel-Binding, 32 bytes,
# no context), the CSR carrying it is written into that same s_client connection.
ossl_cb() {
    PYTHONPATH="$KL_SRC/tests/lib" timeout 60 python3 - "$EST_PORT" "$D" "$EST_USER" "$EST_PASS" "$1" <<'PY'
import base64, re, subprocess, sys, select, time
import est_http
port, d, user, pw, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:" + port, "-CAfile", d + "/root1.pem",
                      "-verify_return_error", "-tls1_3", "-nocommands", "-ign_eof",
                      "-keymatexport", "EXPORTER-Channel-Binding", "-keymatexportlen", "32"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = b""
deadline = time.time() + 20
while not re.search(rb"Keying material: [0-9A-Fa-f]{64}\s", out):
    if time.time() > deadline or p.poll() is not None:
        sys.exit("no keying material from s_client")
    r, _, _ = select.select([p.stdout], [], [], 1)
    if r:
        out += p.stdout.read1(65536)
km = re.search(rb"Keying material: ([0-9A-Fa-f]+)", out).group(1).decode()
cb = bytes.fromhex(km)
if mode == "wrong":
    cb = bytes([cb[0] ^ 1]) + cb[1:]
der = est_http.csr_with_challenge(d, "ossl-cb", "ossl-cb", "HWOS01", base64.b64encode(cb).decode())
req = est_http.enroll_request(base64.encodebytes(der), auth=est_http.basic(user, pw), close=True)
p.stdin.write(req)
p.stdin.flush()
rest, _ = p.communicate(timeout=20)
m = re.search(rb"HTTP/1\.[01] (\d{3})", rest)
if not m:
    sys.exit("no HTTP status from s_client")
print(m.group(1).decode())
PY
}
got=$(ossl_cb right) || die "OpenSSL channel binding client failed"
[ "$got" = 200 ] || die "OpenSSL s_client, TLS 1.3, right tls-exporter: HTTP $got, expected 200"
ok "OpenSSL s_client, TLS 1.3, right tls-exporter -> 200"
got=$(ossl_cb wrong) || die "OpenSSL channel binding client failed"
[ "$got" = 403 ] || die "OpenSSL s_client, TLS 1.3, wrong tls-exporter: HTTP $got, expected 403"
ok "OpenSSL s_client, TLS 1.3, wrong tls-exporter -> 403"

after=$(count_issued)
# issued: cb13, IDevID enrollment, cb12, the replay-source enrollment, the OpenSSL one
[ "$after" = $((before + 5)) ] || die "issued $((after - before)) certificates, expected 5"
ok "refused requests issued nothing"
grep -q 'channel binding' "$D/estd.log" || die "no channel binding refusal in the server log"
est_stop
ok "SIGTERM -> exit 0"
