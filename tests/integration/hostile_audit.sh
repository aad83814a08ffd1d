# audit verify checks the store's state, not only the chain (issue 10, defect 11). Each
# tampering below is done with the sqlite3 CLI on a copy of a real store, the way anyone who can
# write the file would, and must make `keyline-ca audit verify` exit non-zero naming it.
source "$KL_SRC/tests/lib/common.sh"

make_hierarchy
for i in 1 2 3; do
  make_key ec-p256 d$i.key
  openssl req -new -key d$i.key -subj "/CN=hostile $i" -out d$i.csr
  kca issue --issuer field1 --template device-ldevid --csr d$i.csr --out d$i.pem
  declare "s$i=$(openssl x509 -in d$i.pem -noout -serial | cut -d= -f2)"
done
kca revoke --serial "$s1" --reason keyCompromise
kca audit verify | grep -q "intact" || fail "untampered store does not verify"
ok "untampered store verifies"

# tamper NAME SQL WANT...: a copy of the store with SQL applied; verify must fail naming WANTs.
tamper() {
  local name=$1 sql=$2; shift 2
  sqlite3 keyline.db ".backup $name.db"
  sed "s|^path = keyline.db|path = $name.db|" "$KL_CONF" > "$name.conf"
  sqlite3 "$name.db" "$sql"
  local out rc=0
  out=$("$KL_BIN/keyline-ca" -c "$name.conf" audit verify 2>&1) || rc=$?
  [ $rc -ne 0 ] || fail "$name: audit verify passed: $out"
  for w in "$@"; do [[ $out == *"$w"* ]] || fail "$name: exit $rc, but the message does not name '$w': $out"; done
  echo "ok - $name: exit $rc: $out"
}

tamper unrevoke "UPDATE certs SET status = 'valid', revoked_at = NULL, revoke_reason = NULL WHERE serial = '$s1'" \
  "certificate $s1" "status valid" "revoked it"
tamper swap "CREATE TEMP TABLE t AS SELECT serial, der FROM certs;
  UPDATE certs SET der = (SELECT der FROM t WHERE serial = '$s3') WHERE serial = '$s2';
  UPDATE certs SET der = (SELECT der FROM t WHERE serial = '$s2') WHERE serial = '$s3';" \
  "certificate $s2" "DER does not match"
tamper wipe "DROP TRIGGER audit_no_delete; DELETE FROM audit;
  UPDATE audit_head SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000';" \
  "audit log is empty" "deleted"
seq=$(sqlite3 keyline.db "SELECT max(seq) FROM audit WHERE action = 'revoke'")
tamper nul "DROP TRIGGER audit_no_update; UPDATE audit SET detail = detail || char(0) || ' reason=0' WHERE seq = $seq;" \
  "audit entry $seq" "NUL byte"
# and a few more ways to make the rows and the log disagree
tamper revoke-quietly "UPDATE certs SET status = 'revoked', revoked_at = 1, revoke_reason = 4 WHERE serial = '$s2'" \
  "certificate $s2" "no audit entry revokes it"
tamper forged-row "INSERT INTO certs (serial, status, issuer, subject, der, created)
  SELECT '0BADC0DE', 'valid', issuer, subject, der, created FROM certs WHERE serial = '$s3';" \
  "certificate 0BADC0DE" "no audit entry issued it"
tamper hidden-row "DROP TRIGGER certs_no_delete; DELETE FROM certs WHERE serial = '$s3';" \
  "certificate $s3" "not in the store"
tamper ca-swap "UPDATE cas SET der = (SELECT der FROM cas WHERE label = 'factory1') WHERE label = 'field1';" \
  "CA 'field1'" "does not match"
kca audit verify | grep -q "intact" || fail "the original store must still verify"
ok "every tampering named; the original still verifies"
