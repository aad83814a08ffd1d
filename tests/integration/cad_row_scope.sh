#!/usr/bin/env bash
# What of the store a front end may act on or see through keyline-cad (docs/ca-protocol.md):
# - a certificate row without a template belongs to no front-end role: every row keyline writes
#   names its template, so one without was written outside keyline (by hand, another tool, a
#   forged row), and "no template" matched every template of its issuer: the est role could
#   activate, abandon, revoke, name in proof-failed or inventory such a row of its CA;
# - known tells another role's row only its state: not its detail, certificate or serial;
# - so does device (it showed any device's row and certificate to any role);
# - a CSR's serialNumber that is a BMPString, or too long, is judged by the template policy
#   with its reason, not refused as "no serialNumber".
# Two uids (setpriv): the tests' own as role est (profile ldevid), 4242 as role station
# (profile idevid).
source "$KL_SRC/tests/lib/cad_common.sh"
st() { setpriv --reuid 4242 --regid 4242 --clear-groups "$BIN/kl_cad_client" "$SOCK" "$@"; }
# refused OP-ARGS... : exit 4 (policy), stderr in $D/err
refused() {
    local rc=0
    cc "$SOCK" "$@" >"$D/out" 2>"$D/err" || rc=$?
    [ "$rc" = 4 ] || die "$1 $2: exit $rc, want 4 (policy): $(cat "$D/out" "$D/err")"
}

kca ca create --label root1 --template root --subject "CN=Scope Root" >/dev/null
kca ca create --label factory1 --template factory-ca --subject "CN=Scope Factory" --issuer root1 >/dev/null
kca ca create --label field1 --template field-ca --subject "CN=Scope Field" --issuer root1 >/dev/null
cad_conf "socket-mode = 0666"
cad_role est users "$(id -u)"
cad_role station users 4242
cad_profile ldevid field1 device-ldevid est
cad_profile idevid factory1 device-idevid station
chmod 755 "$D"
cad_start
db="$D/keyline.db"

# --- a row without a template -----------------------------------------------------------------
new_csr n1 "/CN=sensor-n1/serialNumber=HWN001"
cc "$SOCK" issue profile=ldevid csr=@"$D/n1.der" auth=basic auth-user=b pending=1 >"$D/n1.out" ||
    die "issue: $(cat "$D/n1.out")"
s1=$(sed -n 's/^serial=//p' "$D/n1.out")
# rows as another tool would write them: the est role's issuer, no template; one pending (and
# named by a device's row), one valid
sqlite3 "$db" "INSERT INTO certs (serial, status, issuer, subject, template, device_id, not_before,
  not_after, der, created) SELECT '7ADD0001', 'pending', issuer, subject, NULL, 'HWN002', not_before,
  not_after, der, created FROM certs WHERE serial = '$s1';
  INSERT INTO certs (serial, status, issuer, subject, template, device_id, not_before, not_after,
  der, created) SELECT '7ADD0002', 'valid', issuer, subject, NULL, 'HWN002', not_before, not_after,
  der, created FROM certs WHERE serial = '$s1';
  INSERT INTO devices (device_id, model, cert_serial, state, detail, updated)
  VALUES ('HWN002', 'm', '7ADD0001', 'pending', 'another tool', 1)"
cc "$SOCK" cert-status serial=7ADD0001 | grep -qx "status=pending" || die "the forged row is not there"
refused activate serial=7ADD0001
grep -q "certificate 7ADD0001 (issuer field1, template -) is outside the profiles of" "$D/err" ||
    die "activate: $(cat "$D/err")"
refused abandon serial=7ADD0001 reason=5
refused revoke serial=7ADD0002 reason=4
refused proof-failed device-id=HWN002 serial=7ADD0002 message=x
refused inventory profile=ldevid device-id=HWN002 model=m state=failed detail=x serial=7ADD0001
refused inventory profile=ldevid device-id=HWN002 model=m state=failed detail=x
grep -q "names pending certificate 7ADD0001 (issuer field1, template -), outside the profiles" "$D/err" ||
    die "inventory over a row naming it: $(cat "$D/err")"
[ "$(sqlite3 "$db" "SELECT status FROM certs WHERE serial IN ('7ADD0001', '7ADD0002') ORDER BY serial" | tr '\n' ' ')" = "pending valid " ] ||
    die "a row without a template was changed"
[ "$(sqlite3 "$db" "SELECT state || ' ' || cert_serial FROM devices WHERE device_id = 'HWN002'")" = "pending 7ADD0001" ] ||
    die "the device row naming it was changed"
# the role's own pending certificate: still its to activate
cc "$SOCK" activate serial="$s1" >/dev/null || die "activate of the role's own certificate"
ok "a row without a template is no front end's: activate, abandon, revoke, proof-failed, inventory refused"

# --- known: another role's row ------------------------------------------------------------------
new_csr k1 "/CN=widget/serialNumber=HWK001"
chmod 644 "$D/k1.der"
st issue profile=idevid csr=@"$D/k1.der" auth=station device-id=HWK001 pending=1 >"$D/k1.out" 2>&1 ||
    die "station issue: $(cat "$D/k1.out")"
k1=$(sed -n 's/^serial=//p' "$D/k1.out")
st inventory profile=idevid device-id=HWK001 model=widget state=pending \
    detail="challenge passed on fixture 7" serial="$k1" >/dev/null 2>&1 || die "station inventory"
st known profile=idevid device-id=HWK001 >"$D/known-st.txt" 2>&1 || die "station known"
grep -qx "serial=$k1" "$D/known-st.txt" && grep -qx "detail=challenge passed on fixture 7" "$D/known-st.txt" &&
    grep -qx "status=pending" "$D/known-st.txt" || die "station known of its own row: $(cat "$D/known-st.txt")"
cc -o "$D/known-est.pem" "$SOCK" known profile=ldevid device-id=HWK001 >"$D/known-est.txt" ||
    die "est known"
[ "$(sort "$D/known-est.txt" | tr '\n' ' ')" = "device-id=HWK001 state=pending " ] ||
    die "est known of the station's row: $(cat "$D/known-est.txt")"
[ ! -s "$D/known-est.pem" ] || die "est known got the station's certificate"
# a row without a template, or without a certificate, tells no role more than its state
cc "$SOCK" known profile=ldevid device-id=HWN002 >"$D/known-n.txt" || die "known of HWN002"
[ "$(sort "$D/known-n.txt" | tr '\n' ' ')" = "device-id=HWN002 state=pending " ] ||
    die "known of a row naming a certificate without a template: $(cat "$D/known-n.txt")"
# the est role's own row: all of it
new_csr e1 "/CN=sensor-e1/serialNumber=HWE001"
cc "$SOCK" issue profile=ldevid csr=@"$D/e1.der" auth=basic auth-user=b >"$D/e1.out" || die "issue e1"
e1=$(sed -n 's/^serial=//p' "$D/e1.out")
cc "$SOCK" inventory profile=ldevid device-id=HWE001 model=m state=provisioned detail=enrolled \
    serial="$e1" >/dev/null || die "est inventory of its own device"
cc "$SOCK" known profile=ldevid device-id=HWE001 >"$D/known-e.txt" || die "known of HWE001"
grep -qx "serial=$e1" "$D/known-e.txt" && grep -qx "detail=enrolled" "$D/known-e.txt" ||
    die "est known of its own row: $(cat "$D/known-e.txt")"
ok "known: another role's row (or one without a template) gives its state only; the caller's own, all"

# --- device: scoped as known -----------------------------------------------------------------
st device device-id=HWK001 >"$D/dev-st.txt" 2>&1 || die "station device"
grep -qx "serial=$k1" "$D/dev-st.txt" && grep -qx "status=pending" "$D/dev-st.txt" &&
    grep -qx "state=pending" "$D/dev-st.txt" && grep -q "^cert=([0-9]* bytes)$" "$D/dev-st.txt" ||
    die "station device of its own row: $(cat "$D/dev-st.txt")"
cc -o "$D/dev-est.pem" "$SOCK" device device-id=HWK001 >"$D/dev-est.txt" || die "est device"
[ "$(sort "$D/dev-est.txt" | tr '\n' ' ')" = "device-id=HWK001 state=pending " ] ||
    die "est device of the station's row: $(cat "$D/dev-est.txt")"
[ ! -s "$D/dev-est.pem" ] || die "est device got the station's certificate"
cc -o "$D/dev-n.pem" "$SOCK" device device-id=HWN002 >"$D/dev-n.txt" || die "device of HWN002"
[ "$(sort "$D/dev-n.txt" | tr '\n' ' ')" = "device-id=HWN002 state=pending " ] && [ ! -s "$D/dev-n.pem" ] ||
    die "device of a row naming a certificate without a template: $(cat "$D/dev-n.txt")"
cc "$SOCK" device device-id=HWE001 >"$D/dev-e.txt" || die "device of HWE001"
grep -qx "serial=$e1" "$D/dev-e.txt" && grep -qx "status=valid" "$D/dev-e.txt" ||
    die "est device of its own row: $(cat "$D/dev-e.txt")"
st device device-id=HWE001 >"$D/dev-se.txt" 2>&1 || die "station device of HWE001"
[ "$(sort "$D/dev-se.txt" | tr '\n' ' ')" = "device-id=HWE001 state=provisioned " ] ||
    die "station device of the est role's row: $(cat "$D/dev-se.txt")"
ok "device: another role's row (or one without a template) gives its state only; the caller's own, its certificate"

# --- a CSR's serialNumber: the policy's reason, not "no serialNumber" --------------------------
csr_sn() { # NAME TYPE VALUE: a CSR with serialNumber VALUE of ASN.1 string TYPE (bmp, printable)
    python3 - "$D/$1.der" "$2" "$3" <<'PY'
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
t = {"bmp": _ASN1Type.BMPString, "printable": _ASN1Type.PrintableString}[sys.argv[2]]
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor"),
                  x509.NameAttribute(NameOID.SERIAL_NUMBER, sys.argv[3], _type=t)])
csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
    ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
open(sys.argv[1], "wb").write(csr.public_bytes(serialization.Encoding.DER))
PY
}
csr_sn b1 bmp HWB001
cc -o "$D/b1.pem" "$SOCK" issue profile=ldevid csr=@"$D/b1.der" auth=basic auth-user=b >"$D/b1.out" ||
    die "a BMPString serialNumber that fits PrintableString: $(cat "$D/b1.out")"
grep -qx "device-id=HWB001" "$D/b1.out" || die "BMPString serialNumber: device id $(cat "$D/b1.out")"
openssl asn1parse -in "$D/b1.pem" | grep -q "PRINTABLESTRING *:HWB001" ||
    die "serialNumber not re-encoded as a PrintableString"
csr_sn b2 bmp HW_B002
refused issue profile=ldevid csr=@"$D/b2.der" auth=basic auth-user=b device-id=HW_B002
grep -q "subject serialNumber 'HW_B002' is a BMPString with '_', which PrintableString does not have" "$D/err" ||
    die "BMPString with '_': $(cat "$D/err")"
csr_sn b3 printable "$(printf 'L%.0s' $(seq 1 200))"
refused issue profile=ldevid csr=@"$D/b3.der" auth=basic auth-user=b
grep -q "subject serialNumber is 200 characters long, more than the 64 it may have" "$D/err" ||
    die "200-character serialNumber: $(cat "$D/err")"
ok "a CSR's serialNumber: a BMPString that fits is re-encoded; '_' and 200 characters refused, saying so"

cad_stop
ok "SIGTERM: exit 0"
