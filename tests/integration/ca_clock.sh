#!/usr/bin/env bash
# A clock set ahead, then right again (hostile testing of clocks: an officer's PC with a wrong
# clock, a VM restored from a snapshot). libfaketime on keyline-ca only:
#   - CRLs published by a clock a day (or years) ahead no longer block every later CRL until
#     this clock catches up: revoke publishes its CRL at once (it failed "not published after
#     8 attempts" for the skew), dated now;
#   - maintain --dry-run calls such a CRL due (it said fresh), and a CRL that misses a
#     revocation (its revocation epoch is not the CA's) too; maintain signs them;
#   - an OCSP signer renewed by a clock a year ahead (valid only from then: every OCSP answer
#     refused "not yet valid") is due at once, and maintain renews it, valid from now;
#   - a clock before the CA (1970: no real-time clock, no NTP yet): crl and revoke refused.
source "$KL_SRC/tests/lib/common.sh"

. "$KL_SRC/tests/lib/faketime.sh"
kl_libfaketime || fail "no libfaketime"
kca_at() { local t=$1; shift; env LD_PRELOAD="$LIBFT" FAKETIME="$t" "$KL_BIN/keyline-ca" -c "$KL_CONF" "$@"; }
crl_this() { openssl crl -in "$1" -noout -lastupdate | sed 's/lastUpdate=//'; }
crl_num() { openssl crl -in "$1" -noout -crlnumber | sed 's/.*=//; s/^0x//'; }

make_hierarchy
make_key ec-p256 d.key
openssl req -new -key d.key -subj "/CN=clock device" -out d.csr
kca issue --issuer field1 --template device-ldevid --csr d.csr --out d1.pem >/dev/null
kca issue --issuer field1 --template device-ldevid --csr d.csr --out d2.pem >/dev/null

# a CRL published by a clock a day ahead
kca_at +1d crl --issuer field1 --out ahead.pem >/dev/null 2>&1 || fail "crl with the clock a day ahead"
[ "$(date -ud "$(crl_this ahead.pem)" +%s)" -gt $(($(date +%s) + 80000)) ] || fail "the CRL is not dated ahead"
kca maintain --dry-run >dry.out 2>&1 || true
grep -q "^field1: CRL due" dry.out || fail "maintain --dry-run on a CRL dated ahead: $(grep field1 dry.out)"
ok "maintain --dry-run: a CRL dated a day ahead of the clock is due"

# the right clock: revoke publishes its CRL at once, dated now, numbered above
t0=$(date +%s)
serial=$(openssl x509 -in d1.pem -noout -serial | cut -d= -f2)
kca revoke --serial "$serial" >revoke.out 2>&1 || fail "revoke after a CRL dated ahead: $(cat revoke.out)"
[ $(($(date +%s) - t0)) -le 5 ] || fail "revoke took $(($(date +%s) - t0)) s"
kca crl --issuer field1 --out now.pem >/dev/null 2>&1 || fail "crl after a CRL dated ahead"
this=$(date -ud "$(crl_this now.pem)" +%s)
[ "$this" -le $(($(date +%s) + 1)) ] || fail "the new CRL is dated $(crl_this now.pem)"
[ $((16#$(crl_num now.pem))) -gt $((16#$(crl_num ahead.pem))) ] || fail "CRL number $(crl_num now.pem) not above $(crl_num ahead.pem)"
openssl crl -in now.pem -noout -text | grep -q "$serial" || fail "the revocation is not in the CRL"
openssl verify -crl_check -CAfile root1.pem -untrusted field1.pem -CRLfile now.pem d2.pem >/dev/null ||
  fail "openssl verify -crl_check with the CRL dated now"
ok "a CRL dated a day ahead does not block: revoke and crl publish at once, dated now, numbered above"

# a revocation whose CRL was never published: maintain sees it
sqlite3 "$KL_TEST_DIR/keyline.db" "UPDATE certs SET status = 'revoked', revoked_at = strftime('%s','now'), revoke_reason = 1 WHERE serial = '$(openssl x509 -in d2.pem -noout -serial | cut -d= -f2)'"
sqlite3 "$KL_TEST_DIR/keyline.db" "UPDATE revocation_epochs SET epoch = epoch + 1 WHERE issuer = 'field1'"
kca maintain --dry-run >dry2.out 2>&1 || true
grep -q "^field1: CRL due" dry2.out || fail "maintain --dry-run with a revocation not in the CRL: $(grep field1 dry2.out)"
kca maintain >m.out 2>&1 || fail "maintain: $(cat m.out)"
grep -q "^field1: CRL number .* signed" m.out || fail "maintain did not sign field1's CRL: $(cat m.out)"
kca crl --issuer field1 --out after.pem >/dev/null 2>&1
openssl crl -in after.pem -noout -text | grep -q "$(openssl x509 -in d2.pem -noout -serial | cut -d= -f2)" ||
  fail "the revocation is not in the CRL maintain signed"
ok "maintain: a CRL that misses a revocation (its epoch behind the CA's) is due and signed"

# an OCSP signer renewed by a clock a year ahead: due now, renewed valid from now
kca ca create --label field1.ocsp --template ocsp-signer --issuer field1 \
  --subject "CN=Test Field CA OCSP,O=Keyline Test" >/dev/null 2>&1 # as keyline-cad makes it
kca ca cert --label field1.ocsp >/dev/null || fail "no OCSP signer of field1"
kca_at +365d maintain >ahead.out 2>&1 || true
grep -q "^field1: OCSP signer renewed\|^field1: OCSP signer .*renew" ahead.out || fail "no signer renewed a year ahead: $(cat ahead.out)"
kca ca cert --label field1.ocsp >sig1.pem
[ "$(date -ud "$(openssl x509 -in sig1.pem -noout -startdate | cut -d= -f2)" +%s)" -gt $(($(date +%s) + 86400)) ] ||
  fail "the signer renewed a year ahead is not dated ahead"
kca maintain --dry-run >dry3.out 2>&1 || true
grep -q "^field1: OCSP signer due" dry3.out || fail "a signer dated a year ahead: $(grep field1 dry3.out)"
kca maintain >m2.out 2>&1 || fail "maintain: $(cat m2.out)"
kca ca cert --label field1.ocsp >sig2.pem
[ "$(date -ud "$(openssl x509 -in sig2.pem -noout -startdate | cut -d= -f2)" +%s)" -le $(($(date +%s) + 60)) ] ||
  fail "the signer maintain renewed starts $(openssl x509 -in sig2.pem -noout -startdate)"
kca maintain --dry-run | grep -q "^field1: OCSP signer fresh" || fail "the renewed signer is not fresh"
ok "an OCSP signer dated a year ahead is due; maintain renews it, valid from now"

# a clock before the CA (a host booted without a real-time clock, before NTP, reads 1970): a CRL
# dated then is expired for every relying party, a revocation dated before its certificate;
# neither is signed or recorded, and no CRL number is used up
at70="@1970-01-01 01:00:00"
kca crl --issuer field1 --out before70.pem >/dev/null 2>&1 || fail "crl on the right clock"
rc=0; kca_at "$at70" crl --issuer field1 --out c70.pem >c70.out 2>&1 || rc=$?
[ "$rc" = 4 ] || fail "crl at 1970: exit $rc ($(cat c70.out))"
grep -q "signing a CRL refused: this host's clock reads 1970-01-01T01:00:00Z, before CA 'field1'" c70.out ||
  fail "crl at 1970 says: $(cat c70.out)"
kca crl --issuer field1 --out after70.pem >/dev/null 2>&1 || fail "crl after the one at 1970"
[ $((16#$(crl_num after70.pem))) = $((16#$(crl_num before70.pem) + 1)) ] ||
  fail "CRL number $(crl_num after70.pem) after $(crl_num before70.pem): the refused CRL used one"
kca issue --issuer field1 --template device-ldevid --csr d.csr --out d3.pem >/dev/null
s3=$(openssl x509 -in d3.pem -noout -serial | cut -d= -f2)
rc=0; kca_at "$at70" revoke --serial "$s3" >r70.out 2>&1 || rc=$?
[ "$rc" = 4 ] && grep -q "revoking $s3 refused: this host's clock reads 1970-01-01T01:00:00Z" r70.out ||
  fail "revoke at 1970: exit $rc ($(cat r70.out))"
kca list --json | python3 -c 'import json, sys
c = [c for c in json.load(sys.stdin) if c["serial"] == sys.argv[1]]
sys.exit(0 if c and c[0]["status"] == "valid" else 1)' "$s3" || fail "the certificate is not valid after a refused revocation"
! kca audit list | grep -q "^[0-9]* 1970-" || fail "an audit entry dated 1970: $(kca audit list | grep ' 1970-')"
ok "a clock before the CA (1970): crl and revoke refused, saying so; no CRL number used, nothing recorded"
