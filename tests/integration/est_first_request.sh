#!/usr/bin/env bash
# keyline-estd, first request of a new TLS connection with a client certificate and no other
# credential: keyline-estd checks the issuer's name and key identifier and the purpose, and
# leaves the rest to keyline-cad's issue request, which gets the certificate itself (auth-cert)
# and checks it as cert-status would: byte for byte the certificate it issued under that
# serial, signed by the recorded CA, valid, within its dates, under valid CAs. Checked here:
#   1. a forged certificate (a real IDevID's serial, issuer name and authority key id, an
#      attacker's key and signature) -> 401, nothing issued, keyline-cad's reason logged;
#   2. a revoked certificate on a new connection -> 401, nothing issued (and serverkeygen,
#      which asks cert-status first, the same);
#   3. what keyline-cad bound the first request to is what the connection's next requests use:
#      an LDevID whose subject names no device but whose store row does enrolls twice on one
#      connection, both recorded for that device.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start

# --- 1. forged certificate ---------------------------------------------------------------
# a CA certificate of the attacker's with factory1's subject and subject key identifier
subj=$(openssl x509 -in "$D/factory1.pem" -noout -subject -nameopt compat | sed 's/^subject=//')
skid=$(openssl x509 -in "$D/factory1.pem" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' ')
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/fake-ca.key" \
    -subj "$subj" -days 30 -addext "subjectKeyIdentifier=$skid" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$D/fake-ca.pem" 2>/dev/null
[ "$(openssl x509 -in "$D/fake-ca.pem" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' ')" = "$skid" ] ||
    die "the fake CA does not carry factory1's key identifier"
# the IDevID's subject and serial, the attacker's key
new_csr forged "/CN=sensor-0001/serialNumber=HW0001"
printf 'authorityKeyIdentifier=keyid\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
    > "$D/forged.ext"
openssl x509 -req -in "$D/forged.csr" -CA "$D/fake-ca.pem" -CAkey "$D/fake-ca.key" \
    -set_serial "0x$(serial_of "$D/idev.crt")" -days 30 -extfile "$D/forged.ext" \
    -out "$D/forged.crt" 2>/dev/null
[ "$(serial_of "$D/forged.crt")" = "$(serial_of "$D/idev.crt")" ] || die "forged serial"
new_csr dev1 "/CN=sensor-0001/serialNumber=HW0001"
before=$(count_issued)
expect_status 401 "forged client certificate (a real serial, another key), new connection" \
    -H "Content-Type: application/pkcs10" --data-binary "@$D/dev1.b64" \
    --cert "$D/forged.crt" --key "$D/forged.key" "$EST/simpleenroll"
[ "$(count_issued)" = "$before" ] || die "something was issued to the forged certificate"
grep -q "client certificate .*sensor-0001.* refused: .*does not match the one issued under that serial" \
    "$D/estd.log" || die "the refusal is not logged: $(grep -i refused "$D/estd.log" | tail -n 3)"
# the real one still enrolls: nothing about the serial was spoiled
expect_status 200 "the real IDevID of that serial" -H "Content-Type: application/pkcs10" \
    --data-binary "@$D/dev1.b64" --cert "$D/idev.crt" --key "$D/idev.key" "$EST/simpleenroll"

# --- 2. revoked certificate, new connection --------------------------------------------------
new_csr idev2 "/CN=sensor-0002/serialNumber=HW0002"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev2.csr" --device-id HW0002 \
    --out "$D/idev2.crt" >/dev/null
kca revoke --serial "$(serial_of "$D/idev2.crt")" --reason keyCompromise >/dev/null
new_csr dev2 "/CN=sensor-0002/serialNumber=HW0002"
before=$(count_issued)
expect_status 401 "revoked IDevID, simpleenroll on a new connection" \
    -H "Content-Type: application/pkcs10" --data-binary "@$D/dev2.b64" \
    --cert "$D/idev2.crt" --key "$D/idev2.key" "$EST/simpleenroll"
grep -q "client certificate .*sensor-0002.* refused: .* is revoked" "$D/estd.log" ||
    die "the refusal is not logged: $(grep -i refused "$D/estd.log" | tail -n 3)"
expect_status 401 "revoked IDevID, serverkeygen" \
    -H "Content-Type: application/pkcs10" --data-binary "@$D/dev2.b64" \
    --cert "$D/idev2.crt" --key "$D/idev2.key" "$EST/serverkeygen"
[ "$(count_issued)" = "$before" ] || die "something was issued to a revoked certificate"

# --- 3. the device keyline-cad bound, kept for the connection --------------------------------
new_csr nosn "/CN=sensor-0003"
kca issue --issuer field1 --template device-ldevid --csr "$D/nosn.csr" --device-id HW0003 \
    --out "$D/old.pem" >/dev/null
openssl x509 -in "$D/old.pem" -noout -subject | grep -q serialNumber && die "old LDevID has a serialNumber"
new_csr dev3 "/CN=sensor-0003/serialNumber=HW0003"
got=$(PYTHONPATH="$KL_SRC/tests/lib" python3 - "$EST_PORT" "$D" <<'PY'
import socket, ssl, sys
import est_http
port, d = sys.argv[1:3]
ctx = ssl.create_default_context(cafile=d + "/root1.pem")
ctx.load_cert_chain(d + "/old.pem", d + "/nosn.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="127.0.0.1")
body = open(d + "/dev3.b64", "rb").read()
f = s.makefile("rb")
got = []
for _ in range(2):
    s.sendall(est_http.enroll_request(body))
    got.append(est_http.read_response(f))
print(" ".join(map(str, got)))
PY
)
[ "$got" = "200 200" ] || die "LDevID recorded for HW0003, two enrollments on one connection: got $got"
n=$(kca list --json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c.get("device_id") == "HW0003" and "serialNumber=HW0003" in (c.get("subject") or "")))')
[ "$n" = 2 ] || die "expected 2 certificates for HW0003 with its serialNumber, found $n"
ok "first request checked by keyline-cad: forged and revoked refused, the bound device kept"
est_stop
echo "est_first_request: all passed"
