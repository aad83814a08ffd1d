# keyline-ca maintain (issue 14 item 4): CRLs re-signed and delegated OCSP signers renewed once
# past half their life, nothing signed when nothing is due (run twice: the same store), a chore
# whose token is absent reported and the exit status non-zero; keyline-ca list --expiring.
# Time moves with faketime (libfaketime: keyline-ca's clock only; the token and openssl agree).
source "$KL_SRC/tests/lib/common.sh"
command -v faketime >/dev/null || fail "faketime is not installed (scripts/deps)"
later() { local d=$1; shift; faketime -f "+${d}d" "$KL_BIN/keyline-ca" -c "$KL_CONF" "$@"; }
crl_number() { sqlite3 "$KL_TEST_DIR/keyline.db" "SELECT number FROM crls WHERE issuer = '$1'"; }
signer_serial() { kca ca cert --label "$1.ocsp" | openssl x509 -noout -serial; }

make_hierarchy
kca ca create --label field1.ocsp --template ocsp-signer --issuer field1 --subject "CN=field1 OCSP signer" >/dev/null
r0=$(crl_number root1); f0=$(crl_number field1); s0=$(signer_serial field1)
[ -n "$r0" ] && [ -n "$f0" ] || fail "no published CRLs to start with"

kca maintain > m1.txt 2> m1.err || { cat m1.txt m1.err; fail "maintain with nothing due"; }
grep -q "root1: CRL fresh" m1.txt || { cat m1.txt; fail "root1 not reported fresh"; }
grep -q "field1: OCSP signer fresh" m1.txt || { cat m1.txt; fail "field1's signer not reported"; }
grep -q "0 signed" m1.err || { cat m1.err; fail "maintain signed something with nothing due"; }
kca maintain >/dev/null 2>&1 || fail "second run"
[ "$(crl_number root1)" = "$r0" ] && [ "$(crl_number field1)" = "$f0" ] && [ "$(signer_serial field1)" = "$s0" ] ||
  fail "maintain with nothing due changed a CRL or a signer"
ok "nothing due: nothing signed, twice"

# 50 days on: the root's 90-day CRL, the issuing CAs' 7-day CRLs and the 30-day OCSP signer
# are all past half their life
later 50 maintain --dry-run > dry.txt 2>&1 || fail "dry run"
grep -q "root1: CRL due" dry.txt && grep -q "field1: OCSP signer due" dry.txt || { cat dry.txt; fail "dry run did not list what is due"; }
[ "$(crl_number root1)" = "$r0" ] || fail "the dry run signed"
later 50 maintain > m2.txt 2> m2.err || { cat m2.txt m2.err; fail "maintain 50 days on"; }
[ "$(crl_number root1)" -gt "$r0" ] || fail "root CRL not re-signed"
[ "$(crl_number field1)" -gt "$f0" ] || fail "field1 CRL not re-signed"
s1=$(signer_serial field1)
[ "$s1" != "$s0" ] || fail "field1's OCSP signer not renewed"
kca ca cert --label field1.ocsp > signer.pem
openssl verify -attime "$(( $(date +%s) + 50 * 86400 ))" -CAfile root1.pem -untrusted field1.pem signer.pem >/dev/null ||
  fail "renewed signer does not chain"
r1=$(crl_number root1); f1=$(crl_number field1)
later 50 maintain > m3.txt 2> m3.err || fail "maintain again 50 days on"
grep -q "0 signed" m3.err || { cat m3.txt m3.err; fail "the same day's second run signed again"; }
[ "$(crl_number root1)" = "$r1" ] && [ "$(crl_number field1)" = "$f1" ] && [ "$(signer_serial field1)" = "$s1" ] ||
  fail "the second run changed something"
ok "past half their life: CRLs re-signed, the OCSP signer renewed; the same day's second run signs nothing"

# the root's key on a token that is not there (an offline root between ceremonies): its chore is
# reported with what to do, the others are done, the exit status says so
printf '\n[hsm root1]\ntoken = pkcs11:token=root-token-away\npin = env:KEYLINE_PIN\n' >> "$KL_CONF"
rc=0; later 100 maintain > m4.txt 2> m4.err || rc=$?
[ "$rc" != 0 ] || { cat m4.txt m4.err; fail "maintain with the root token away exited 0"; }
grep -q "root1: CRL due, NOT signed: .*root-token-away.*keyline-ca crl --issuer root1" m4.txt || { cat m4.txt; fail "root chore not reported"; }
grep -q "field1: CRL number" m4.txt || { cat m4.txt; fail "the other chores were not done"; }
ok "a chore whose token is away: reported, the rest done, exit $rc"

# list --expiring: the 30-day OCSP signer's certificate, not the 10- and 20-year CAs'
kca list --expiring 31d > exp.txt
grep -q "field1 OCSP signer" exp.txt || { cat exp.txt; fail "--expiring 31d lacks the OCSP signer"; }
if grep -q "Test Root\|Test Field CA" exp.txt; then fail "--expiring lists CAs that end in years"; fi
kca list --expiring 3650d --json | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)) >= 3 else 1)' ||
  fail "--expiring 3650d --json"
later 40 list --expiring 1d > exp2.txt
if grep -q "OCSP signer" exp2.txt; then fail "--expiring lists certificates already expired"; fi
expect_fail "--expiring with a bad value" kca list --expiring 30x
expect_fail "--expiring 0d" kca list --expiring 0d
ok "list --expiring DAYSd lists valid certificates ending within that time"
echo "ca_offline_maintain: all passed"
