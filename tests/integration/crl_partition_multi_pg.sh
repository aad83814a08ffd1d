#!/usr/bin/env bash
# Partitioned CRLs with two keyline-cad (a, b) on one PostgreSQL database (issue 17 item 3;
# both found by hostile testing):
#   - a partition's CRL that one daemon (or keyline-ca) published is served by the other from
#     the store, not signed again: an empty partition included (its CRL has no revoked list at
#     all, which ca_crlpart_stored counted as -1 entries, so every empty partition was signed
#     again by every daemon, after each restart and each eviction from the 64-slot cache);
#   - a relying party that reaches both daemons never sees a partition's CRL number go back:
#     b cached partition 0's CRL, a newer one was published (keyline-ca crl --partition 0):
#     b then serves the newer one (cad_rev_newer skipped partitions: b kept its older number
#     until half the CRL's validity).
source "$KL_SRC/tests/lib/cad_multi.sh"

cm_pg_start
printf '\n[ca field1]\ncrl-partition-size = 1\n' >> "$KL_CONF"
cm_setup
cm_cad_start a
cm_cad_start b

# six devices through daemon a: partitions of one certificate each; one of them revoked
for i in 1 2 3 4 5 6; do
  cm_key_csr "p$i" "/CN=part-multi/serialNumber=PM-$i"
  openssl req -in "p$i.csr" -outform DER -out "p$i.der"
  "$CC" -o "p$i.pem" cad-a.sock issue profile=est csr=@"p$i.der" auth=basic auth-user="$CM_USER" \
    device-id="PM-$i" >/dev/null || fail "issue PM-$i through daemon a"
done
"$CC" cad-a.sock revoke serial="$(cm_serial p3.pem)" reason=1 >/dev/null || fail "revoke PM-3"
last=$(psql -X -A -t -q "$CM_STORE" -c "SELECT current FROM crl_partitions WHERE issuer = 'field1'")
[ "$last" -ge 5 ] || fail "$((last + 1)) partitions for 6 certificates of one each"

# partition_crl NAME DAEMON K: partition K's CRL from DAEMON into NAME.der, its number (decimal)
partition_crl() {
  local n
  "$CC" -o "$1.der" "cad-$2.sock" crl issuer="field1/$3" >/dev/null || fail "field1/$3 from $2"
  n=$(openssl crl -inform DER -in "$1.der" -noout -crlnumber | sed 's/.*=//; s/^0x//')
  [[ "$n" =~ ^[0-9A-Fa-f]+$ ]] || fail "daemon $2: field1/$3's CRL number '$n'"
  echo $((16#$n))
}
signed() { kca audit list | grep -c "issuer=field1 crl-number=.* partition=" || true; }

for k in $(seq 0 "$last"); do partition_crl "a-$k" a "$k" >/dev/null; done
s1=$(signed)
for k in $(seq 0 "$last"); do
  partition_crl "b-$k" b "$k" >/dev/null
  cmp -s "a-$k.der" "b-$k.der" || fail "daemon b's CRL of partition $k is not the one a published"
done
[ "$(signed)" = "$s1" ] || fail "daemon b signed $(($(signed) - s1)) partition CRLs a had published"
ok "every partition's CRL a published (empty ones included) is served by b from the store"

b1=$(partition_crl b0 b 0)
sleep 1.1 # keyline-ca's CRL in a later second than the one b cached
kca crl --issuer field1 --partition 0 --out new0.pem >/dev/null 2>&1 || fail "keyline-ca crl --partition 0"
n0=$(openssl crl -in new0.pem -noout -crlnumber | sed 's/.*=//; s/^0x//')
n0=$((16#$n0))
[ "$n0" -gt "$b1" ] || fail "keyline-ca published field1/0 number $n0, not above $b1"
a1=$(partition_crl a0 a 0)
b2=$(partition_crl b0-again b 0)
[ "$a1" -ge "$n0" ] && [ "$b2" -ge "$a1" ] ||
  fail "field1/0: b had $b1, keyline-ca published $n0, a serves $a1, b then $b2"
ok "field1/0: b cached $b1, keyline-ca published $n0: a serves $a1, b then $b2 (never back)"
kca audit verify >/dev/null || fail "audit verify"
ok "audit verify"
