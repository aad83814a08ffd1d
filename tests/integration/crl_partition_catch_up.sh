#!/usr/bin/env bash
# A revocation whose CRL step fails (the token, a kill) leaves the partition CRLs of a CA with
# [ca LABEL] crl-partition-size behind: keyline-ca crl --issuer L, the command the failed revoke
# names, publishes them again, checked with openssl:
#   - revoke --serial through a token whose C_Sign fails (tests/tools/p11_fault.c): the
#     revocation stands, exit non-zero, the message names keyline-ca crl --issuer fleet1;
#   - keyline-ca crl --issuer fleet1 then publishes partition 0's CRL too: the published CRL of
#     fleet1/0 lists the certificate, openssl verify -crl_check with it says revoked (it used
#     to stay the CRL from before, naming the certificate good);
#   - run again, it signs no partition (each published one complete); a partition without
#     revocations and without a published CRL gets none.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

q() { sqlite3 "$KL_TEST_DIR/keyline.db" "$1"; }
# stored_crl NAME OUT.pem: the CRL the store publishes under NAME (what keyline-estd serves for
# a CA whose key keyline-cad does not hold)
stored_crl() {
    q "SELECT hex(der) FROM crls WHERE issuer = '$1'" | xxd -r -p | openssl crl -inform DER -out "$2"
}
crl_serials() { openssl crl -in "$1" -noout -text | awk '/Serial Number:/ {print $3}' | sort; }

est_setup_ca
printf '\n[ca fleet1]\ncrl-partition-size = 3\n' >> "$KL_CONF"
kca ca create --label fleet1 --template field-ca --subject "CN=Keyline Fleet CA,O=Keyline Test" \
    --issuer root1 >/dev/null
kca ca cert --label fleet1 > "$D/fleet1.pem"
cat "$D/root1.pem" "$D/fleet1.pem" > "$D/chain.pem"
kca crl --issuer root1 --out "$D/root1.crl" 2>/dev/null
new_csr dev "/CN=fleet-dev"
# partition 0: d1 d2 d3; partition 1: d4
for i in 1 2 3 4; do
    kca issue --issuer fleet1 --template device-ldevid --csr "$D/dev.csr" --out "$D/d$i.pem" >/dev/null
done
kca revoke --serial "$(serial_of "$D/d1.pem")" > /dev/null 2>&1
stored_crl fleet1/0 "$D/p0-before.pem"
[ "$(crl_serials "$D/p0-before.pem")" = "$(serial_of "$D/d1.pem")" ] || die "partition 0's CRL: $(crl_serials "$D/p0-before.pem")"

FAULT_MOD=$KL_BUILD/lib/p11_fault.so
[ -f "$FAULT_MOD" ] || die "no $FAULT_MOD"
export KL_P11_FAULT_FILE=$D/p11-fault KL_P11_FAULT_MODULE=$KL_MODULE
sed -i "s|^module = .*|module = $FAULT_MOD|" "$KL_CONF"
echo "C_Sign CKR_DEVICE_ERROR" > "$KL_P11_FAULT_FILE"
s2=$(serial_of "$D/d2.pem")
kca revoke --serial "$s2" > "$D/rv.out" 2>&1 && die "revoke published its CRLs through a failing token"
grep -q "run keyline-ca crl --issuer fleet1" "$D/rv.out" || die "the message: $(cat "$D/rv.out")"
[ "$(q "SELECT status FROM certs WHERE serial = '$s2'")" = revoked ] || die "the revocation did not stand"
rm -f "$KL_P11_FAULT_FILE"
ok "a revoke whose CRL could not be signed: the revocation stands, the message names keyline-ca crl --issuer fleet1"

kca crl --issuer fleet1 --out "$D/full.pem" 2> "$D/crl.err" || die "crl: $(cat "$D/crl.err")"
grep -q "published the CRLs of 1 partition of fleet1" "$D/crl.err" || die "crl: $(cat "$D/crl.err")"
stored_crl fleet1/0 "$D/p0.pem"
want=$(printf '%s\n%s\n' "$(serial_of "$D/d1.pem")" "$s2" | sort)
[ "$(crl_serials "$D/p0.pem")" = "$want" ] || die "partition 0's published CRL after crl --issuer fleet1: $(crl_serials "$D/p0.pem" | tr '\n' ' ')"
out=$(openssl verify -crl_check -CAfile "$D/chain.pem" -CRLfile "$D/p0.pem" -CRLfile "$D/root1.crl" "$D/d2.pem" 2>&1) &&
    die "openssl verify with partition 0's published CRL: d2 good ($out)"
echo "$out" | grep -q "certificate revoked" || die "openssl verify: $out"
openssl verify -crl_check -CAfile "$D/chain.pem" -CRLfile "$D/p0.pem" -CRLfile "$D/root1.crl" "$D/d3.pem" >/dev/null ||
    die "d3 (not revoked) does not verify with partition 0's CRL"
ok "keyline-ca crl --issuer fleet1 published partition 0's CRL again: it lists d2, openssl verify -crl_check says revoked (d3 still good)"

n0=$(q "SELECT number FROM crls WHERE issuer = 'fleet1/0'")
kca crl --issuer fleet1 --out "$D/full2.pem" 2> "$D/crl2.err" || die "crl: $(cat "$D/crl2.err")"
grep -q "partition" "$D/crl2.err" && die "a second crl signed partitions again: $(cat "$D/crl2.err")"
[ "$(q "SELECT number FROM crls WHERE issuer = 'fleet1/0'")" = "$n0" ] || die "partition 0's CRL signed again"
[ -z "$(q "SELECT number FROM crls WHERE issuer = 'fleet1/1'")" ] || die "partition 1 (nothing revoked) got a CRL"
kca audit verify >/dev/null || die "audit verify"
ok "run again it signs no partition: each published one is complete; partition 1 (nothing revoked, none published) gets none"
