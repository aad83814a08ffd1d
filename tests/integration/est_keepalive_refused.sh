#!/usr/bin/env bash
# keyline-estd on a keep-alive connection, client certificate verified once: when the request
# carries no other credential, the per-request status check is keyline-cad's issue request
# itself (cad_client_device), not a cert-status round trip. Whatever makes the certificate
# unacceptable mid-connection must still refuse the next request with 401, nothing issued:
#   - its issuing CA (factory1) revoked;
#   - the certificate itself revoked (est_refusals.sh covers it with a Basic fall-back).
# And the refusal is logged as a refused client certificate, with keyline-cad's reason.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start

# keepalive CRT KEY CSR_B64 ACTION: three enrollments, ACTION (a shell command) after the
# first; prints the three HTTP statuses
keepalive() {
    PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" "$1" "$2" "$3" "$4" <<'PY'
import socket, ssl, subprocess, sys
import est_http
port, d, crt, key, csr, action = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
ctx.load_cert_chain(crt, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="127.0.0.1")
body = open(csr, "rb").read()
f = s.makefile("rb")
def enroll():
    s.sendall(est_http.enroll_request(body))
    return est_http.read_response(f)
got = [enroll()]
subprocess.run(["bash", "-c", action], check=True, stdout=subprocess.DEVNULL)
got += [enroll(), enroll()]
print(" ".join(map(str, got)))
PY
}

# 1. the certificate revoked
new_csr idev5 "/CN=sensor-0005/serialNumber=HW0005"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev5.csr" --device-id HW0005 \
    --out "$D/idev5.crt" >/dev/null
new_csr dev5 "/CN=sensor-0005/serialNumber=HW0005"
got=$(keepalive "$D/idev5.crt" "$D/idev5.key" "$D/dev5.b64" \
    "$BIN/keyline-ca -c $KL_CONF revoke --serial $(serial_of "$D/idev5.crt") --reason keyCompromise")
[ "$got" = "200 401 401" ] || die "client certificate revoked mid-connection: got $got, expected 200 401 401"
grep -q "client certificate .*sensor-0005.* refused: .* is revoked" "$D/estd.log" ||
    die "the refusal is not logged: $(grep -i refused "$D/estd.log" | tail -n 3)"
ok "client certificate revoked mid keep-alive connection -> 401 on the next request"

# 2. its issuing CA revoked (a revoked factory CA takes every IDevID under it with it)
new_csr idev6 "/CN=sensor-0006/serialNumber=HW0006"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev6.csr" --device-id HW0006 \
    --out "$D/idev6.crt" >/dev/null
new_csr dev6 "/CN=sensor-0006/serialNumber=HW0006"
before=$(count_issued)
got=$(keepalive "$D/idev6.crt" "$D/idev6.key" "$D/dev6.b64" \
    "$BIN/keyline-ca -c $KL_CONF revoke --serial $(serial_of "$D/factory1.pem") --reason cACompromise")
[ "$got" = "200 401 401" ] || die "factory1 revoked mid-connection: got $got, expected 200 401 401"
[ "$(count_issued)" = "$((before + 1))" ] || die "an enrollment after factory1's revocation was recorded"
grep -q "client certificate .*sensor-0006.* refused: .*issuing CA is not valid" "$D/estd.log" ||
    die "the refusal is not logged: $(grep -i refused "$D/estd.log" | tail -n 3)"
ok "issuing CA revoked mid keep-alive connection -> 401 on the next request, nothing issued"
est_stop
echo "est_keepalive_refused: all passed"
