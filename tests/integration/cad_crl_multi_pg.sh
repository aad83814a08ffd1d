#!/usr/bin/env bash
# Two keyline-cad on one PostgreSQL database serve field1's CRL (issue 13 items 3, 6): a relying
# party that reaches both never sees the CRL number go back. Daemon b caches a CRL, daemon a
# signs a newer one (its own cache was empty and the published CRL's epoch forgotten, so that
# it signs rather than serve the published one): b then serves the store's newer CRL instead of its
# cached one (its revocation epoch has not moved, so only the store's latest CRL number tells),
# without signing one of its own, and the two do not take turns signing. Then a certificate
# revoked through daemon a: b's next CRL lists it with a number above every earlier one.
source "$KL_SRC/tests/lib/cad_multi.sh"

cm_pg_start
cm_setup
cm_cad_start a
cm_cad_start b

# crl_num NAME DAEMON: fetch field1's CRL from DAEMON into NAME.der, print its number (decimal)
crl_num() {
  local n
  "$CC" -o "$1.der" "cad-$2.sock" crl issuer=field1 >/dev/null || fail "CRL from daemon $2"
  n=$(openssl crl -inform DER -in "$1.der" -noout -crlnumber | sed 's/.*=//; s/^0x//')
  [[ "$n" =~ ^[0-9A-Fa-f]+$ ]] || fail "daemon $2: CRL number '$n'"
  echo $((16#$n))
}
signed() { cm_crl_numbers field1 | wc -l; }

b1=$(crl_num b1 b)
# b serves the CRL ca create published (current: read at the CA's epoch, in its first half);
# forgotten epoch (a CRL from before schema 15), a signs its own
psql -X -A -t -q "$CM_STORE" -c "DELETE FROM crl_epochs WHERE name = 'field1'" || fail "psql"
sleep 1.1 # a's CRL starts in a later second than b's (cad_rev.c: cad_rev_newer)
a1=$(crl_num a1 a)
[ "$a1" -gt "$b1" ] || fail "daemon a signed $a1, not above b's $b1"
n0=$(signed)
b2=$(crl_num b2 b)
[ "$b2" -ge "$a1" ] || fail "daemon b served CRL $b2 after a signed $a1 (its cached $b1)"
cmp -s b2.der a1.der || fail "daemon b did not serve the CRL a signed"
for i in 1 2 3; do
  [ "$(crl_num a-$i a)" = "$a1" ] && [ "$(crl_num b-$i b)" = "$a1" ] || fail "fetch $i: a new CRL was signed"
done
[ "$(signed)" = "$n0" ] || fail "the daemons signed $(($(signed) - n0)) CRLs taking turns"
ok "b cached CRL $b1, a signed $a1: b then served $a1 (the store's latest), nobody signed more"

# a certificate issued and revoked through daemon a
cm_key_csr r1 "/CN=crl-multi/serialNumber=CRLM-1"
openssl req -in r1.csr -outform DER -out r1.der
"$CC" -o r1.pem cad-a.sock issue profile=est csr=@r1.der auth=basic auth-user="$CM_USER" \
  device-id=CRLM-1 >/dev/null || fail "issue through daemon a"
s=$(cm_serial r1.pem)
"$CC" cad-a.sock revoke serial="$s" reason=4 >/dev/null || fail "revoke $s through daemon a"
a2=$(crl_num a2 a)
b3=$(crl_num b3 b)
for n in a2 b3; do
  [ "${!n}" -gt "$a1" ] || fail "$n: CRL ${!n} after the revocation, not above $a1"
  openssl crl -inform DER -in "$n.der" -noout -text | grep -qi "Serial Number: *$s" || fail "$n: CRL lacks $s"
done
[ "$b3" -ge "$a2" ] || fail "daemon b served CRL $b3, below a's $a2"
ok "revoked through a: a serves CRL $a2, b serves $b3, both list $s"
kca audit verify >/dev/null || fail "audit verify"
ok "audit verify"
