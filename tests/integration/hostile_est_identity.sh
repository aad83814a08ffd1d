#!/usr/bin/env bash
# keyline-estd, hostile: a certificate-authenticated client stays bound to the device id its
# chain started with (issue 10, defect 1).
#
# The attack it reproduces: the IDevID of HW0001 enrolls a CSR without serialNumber (the LDevID
# template requires only CN), gets an LDevID that names no device, and with that LDevID as its
# TLS client certificate enrolls `CN=victim,serialNumber=HW0002`: another device's identity.
# Every step of it must be refused (403 with a reason); the legitimate paths (IDevID -> LDevID,
# simpleenroll and simplereenroll with the LDevID, bootstrap with HTTP Basic) keep working, and
# every certificate issued over EST is recorded with its device id.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
# the victim: device HW0002 with its own IDevID
new_csr idev2 "/CN=victim/serialNumber=HW0002"
kca issue --issuer factory1 --template device-idevid --csr "$D/idev2.csr" --device-id HW0002 \
    --out "$D/idev2.crt" >/dev/null
est_write_conf
{
    echo
    echo "[est.label held]"
    echo "approval = manual"
} >> "$KL_CONF"
est_start

# enroll STATUS DESCRIPTION CSR-NAME OPERATION [curl args...]: body in $D/out
enroll() {
    local want=$1 what=$2 csr=$3 op=$4
    shift 4
    expect_status "$want" "$what" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/$csr.b64" "$@" "$EST/$op"
}
# reason WORDS: the 403 body says why
reason() { grep -qi -- "$1" "$D/out" || die "403 body does not say '$1': $(cat "$D/out")"; }
# device_of PEM: the device id the store recorded for that certificate ("None" when none)
device_of() {
    kca list --json | python3 -c '
import json, sys
serial = sys.argv[1].upper()
rows = [r for r in json.load(sys.stdin) if r["serial"].upper() == serial]
assert len(rows) == 1, rows
print(rows[0].get("device_id"))' "$(serial_of "$1")"
}
idev=(--cert "$D/idev.crt" --key "$D/idev.key")

# --- 1. the IDevID of HW0001 asks for an LDevID that names no device ----------------------------
new_csr nosn "/CN=sensor-0001"
enroll 403 "IDevID HW0001, CSR without serialNumber (simpleenroll)" nosn simpleenroll "${idev[@]}"
reason serialNumber
reason HW0001
enroll 403 "IDevID HW0001, CSR without serialNumber (serverkeygen)" nosn serverkeygen "${idev[@]}"
reason serialNumber
enroll 403 "IDevID HW0001, CSR without serialNumber (manual approval: refused, not held)" nosn \
    held/simpleenroll "${idev[@]}"
[ "$(kca request list | grep -c "CN=sensor-0001" || true)" = 0 ] || die "the CSR without serialNumber was held"

# --- 2. the direct case: the IDevID of HW0001 names HW0002 ---------------------------------------
new_csr victim "/CN=victim/serialNumber=HW0002"
enroll 403 "IDevID HW0001 asks for serialNumber HW0002 (simpleenroll)" victim simpleenroll "${idev[@]}"
reason HW0002
enroll 403 "IDevID HW0001 asks for serialNumber HW0002 (serverkeygen)" victim serverkeygen "${idev[@]}"

# --- 3. an LDevID that names no device (issued before this check existed, or by an officer with
#        keyline-ca and no --device-id) cannot enroll for anyone ---------------------------------
if kca issue --issuer field1 --template device-ldevid --csr "$D/nosn.csr" \
    --out "$D/legacy.pem" >/dev/null 2>"$D/legacy.err"; then
    [ "$(device_of "$D/legacy.pem")" = None ] || die "legacy LDevID has a device id"
    legacy=(--cert "$D/legacy.pem" --key "$D/nosn.key")
    enroll 403 "LDevID without device id enrolls CN=victim,serialNumber=HW0002" victim simpleenroll "${legacy[@]}"
    reason "no device id"
    enroll 403 "LDevID without device id renews itself (simplereenroll)" nosn simplereenroll "${legacy[@]}"
    reason "no device id"
    new_csr legacy2 "/CN=sensor-0001"
    enroll 403 "LDevID without device id enrolls another CSR without serialNumber" legacy2 simpleenroll "${legacy[@]}"
else
    # the CA itself refuses a device certificate without a device id: nothing to present
    ok "keyline-ca refuses a device-ldevid certificate without device id: $(head -c 200 "$D/legacy.err")"
fi

# --- 3b. an LDevID whose subject names no device but whose store row does (what the server
#         issued for step 1 before this fix): bound to the recorded device id -----------------
kca issue --issuer field1 --template device-ldevid --csr "$D/nosn.csr" --device-id HW0001 \
    --out "$D/old.pem" >/dev/null
openssl x509 -in "$D/old.pem" -noout -subject | grep -q serialNumber && die "old LDevID has a serialNumber"
[ "$(device_of "$D/old.pem")" = HW0001 ] || die "old LDevID not recorded with HW0001"
old=(--cert "$D/old.pem" --key "$D/nosn.key")
enroll 403 "LDevID recorded for HW0001, no serialNumber: enrolls HW0002" victim simpleenroll "${old[@]}"
reason HW0001
enroll 403 "LDevID recorded for HW0001, no serialNumber: renews without one" nosn simplereenroll "${old[@]}"
reason serialNumber
new_csr oldok "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "LDevID recorded for HW0001, no serialNumber: enrolls HW0001" oldok simpleenroll "${old[@]}"
p7_to_pem "$D/out" "$D/oldok.pem"
[ "$(device_of "$D/oldok.pem")" = HW0001 ] || die "LDevID from the old one not recorded with HW0001"

# --- 4. HTTP Basic (bootstrap): the CSR names the device; a device certificate needs one --------
basic=(-u "$EST_USER:$EST_PASS")
enroll 403 "Basic, CSR without serialNumber" nosn simpleenroll "${basic[@]}"
reason serialNumber
new_csr boot "/CN=bootstrap-7/serialNumber=HWB007"
enroll 200 "Basic, CSR with serialNumber HWB007" boot simpleenroll "${basic[@]}"
p7_to_pem "$D/out" "$D/boot.pem"
[ "$(device_of "$D/boot.pem")" = HWB007 ] || die "Basic LDevID not recorded with device id HWB007"
ok "Basic enrollment recorded with device id HWB007"
boot=(--cert "$D/boot.pem" --key "$D/boot.key")
enroll 403 "LDevID of HWB007 enrolls serialNumber HW0002" victim simpleenroll "${boot[@]}"
reason HWB007

# --- 5. the legitimate paths --------------------------------------------------------------------
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "IDevID HW0001 -> LDevID with serialNumber HW0001" ldev simpleenroll "${idev[@]}"
p7_to_pem "$D/out" "$D/ldev.pem"
[ "$(device_of "$D/ldev.pem")" = HW0001 ] || die "LDevID not recorded with device id HW0001"
ldev=(--cert "$D/ldev.pem" --key "$D/ldev.key")
# the LDevID carries the device id on: renewal with the same subject, both ways
new_csr renew1 "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "LDevID HW0001 renews (simplereenroll)" renew1 simplereenroll "${ldev[@]}"
p7_to_pem "$D/out" "$D/renew1.pem"
[ "$(device_of "$D/renew1.pem")" = HW0001 ] || die "reenrolled LDevID not recorded with HW0001"
new_csr renew2 "/CN=sensor-0001/serialNumber=HW0001"
enroll 200 "LDevID HW0001 renews (simpleenroll)" renew2 simpleenroll "${ldev[@]}"
p7_to_pem "$D/out" "$D/renew2.pem"
[ "$(device_of "$D/renew2.pem")" = HW0001 ] || die "re-enrolled LDevID not recorded with HW0001"
ok "renewals recorded with device id HW0001"
# ...and nothing else
enroll 403 "LDevID HW0001 enrolls CN=victim,serialNumber=HW0002" victim simpleenroll "${ldev[@]}"
enroll 403 "LDevID HW0001 enrolls a CSR without serialNumber" nosn simpleenroll "${ldev[@]}"
new_csr ldevnosn "/CN=sensor-0001"
enroll 403 "LDevID HW0001 reenrolls without serialNumber" ldevnosn simplereenroll "${ldev[@]}"
# the victim itself is unaffected
new_csr vld "/CN=victim/serialNumber=HW0002"
enroll 200 "IDevID HW0002 -> its own LDevID" vld simpleenroll --cert "$D/idev2.crt" --key "$D/idev2.key"
p7_to_pem "$D/out" "$D/vld.pem"
[ "$(device_of "$D/vld.pem")" = HW0002 ] || die "victim's LDevID not recorded with HW0002"

# --- 6. the store: HW0002's certificates are its IDevID and the LDevID it asked for; every
#        LDevID issued over EST names its device -------------------------------------------
kca list --json | python3 -c '
import json, sys
legacy = sys.argv[1].upper()
rows = json.load(sys.stdin)
hw2 = [r for r in rows if "HW0002" in r["subject"] or r.get("device_id") == "HW0002"]
assert len(hw2) == 2 and all(r.get("device_id") == "HW0002" for r in hw2), hw2
assert sorted(r["template"] for r in hw2) == ["device-idevid", "device-ldevid"], hw2
for r in rows:
    if r["template"] == "device-ldevid" and r["serial"].upper() != legacy:
        assert r.get("device_id"), r
' "$( [ -f "$D/legacy.pem" ] && serial_of "$D/legacy.pem" || echo none)" ||
    die "store: a certificate for HW0002 went elsewhere, or an LDevID has no device id"
ok "store: only HW0002 holds certificates for HW0002; every EST LDevID has its device id"

est_stop
