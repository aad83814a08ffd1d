# keyline-ca on full disks (the hostile test of full disks, D2-D4): /dev/full stands for a full
# output disk, SQLite triggers for a store that refuses writes.
#  D2: a certificate issued and recorded whose output cannot be written: the error says it was
#      issued, names its serial and how to get it again, so that nobody issues a second one.
#  D3: every command's stdout reaches its reader or the command fails (exit 1, "stdout: ...").
#  D4: a ca create / ca rotate undone while the store refuses the revocation of what it signed
#      names each certificate left valid and the command that revokes it, which then works.
source "$KL_SRC/tests/lib/common.sh"

make_hierarchy
make_key ec-p256 d.key
openssl req -new -key d.key -subj "/CN=full disk device" -out d.csr
count_certs() { kca list | wc -l; }

# D2: issue --out FILE and issue > stdout, each on a full disk
for to in "--out /dev/full" ""; do
  n0=$(count_certs)
  set +e; kca issue --issuer field1 --template device-ldevid --csr d.csr $to >/dev/full 2>issue.err; st=$?; set -e
  [ $st = 1 ] || fail "issue ${to:-> stdout} on a full disk: exit $st ($(cat issue.err))"
  [ "$(count_certs)" = $((n0 + 1)) ] || fail "issue ${to:-> stdout}: expected one more certificate in the store"
  serial=$(kca list | tail -1 | cut -d' ' -f1)
  grep -q "certificate $serial was issued and recorded; only writing it failed: .*No space left on device" issue.err ||
    fail "issue ${to:-> stdout} on a full disk does not say that $serial was issued: $(cat issue.err)"
  grep -q "do not issue again: keyline-ca show --serial $serial | openssl x509" issue.err ||
    fail "issue ${to:-> stdout}: no way to get $serial again in: $(cat issue.err)"
  [ "$(wc -l <issue.err)" = 1 ] || fail "issue ${to:-> stdout}: more than one line: $(cat issue.err)"
  # the way the message gives works: the certificate, for the CSR's key
  kca show --serial "$serial" | openssl x509 -out again.pem
  [ "$(openssl x509 -in again.pem -noout -serial | cut -d= -f2)" = "$serial" ] || fail "show | openssl x509 gives another certificate"
  cmp <(openssl x509 -in again.pem -noout -pubkey) <(openssl pkey -in d.key -pubout) || fail "recovered certificate is not for the CSR's key"
  ok "issue ${to:-> stdout} on a full disk: $(cat issue.err)"
done

# D2 for ca create: the CA and its first CRL are made before its certificate is printed, and a
# failed print says that only the print failed (the CRL was left unpublished before)
set +e; kca ca create --label full9 --template field-ca --subject "CN=Full Nine" --issuer root1 >/dev/full 2>create.err; st=$?; set -e
[ $st = 1 ] || fail "ca create > a full disk: exit $st ($(cat create.err))"
grep -q "published CRL number 1 of full9" create.err || fail "ca create > a full disk: no first CRL: $(cat create.err)"
grep -q "CA 'full9' was created; only printing its certificate failed: .*No space left on device (keyline-ca ca cert --label full9 prints it)" create.err ||
  fail "ca create > a full disk: $(cat create.err)"
kca ca cert --label full9 | openssl x509 -noout -subject | grep -q "Full Nine" || fail "ca cert --label full9"
ok "ca create > a full disk: the CA and its first CRL made, the message says only printing failed"

# D3: what a command prints must arrive; /dev/full takes nothing
for cmd in "list" "list --json" "list --images" "ca list" "ca cert --label root1" "audit list" \
  "audit verify" "show --serial $serial" "device list" "request list" "request list --json" \
  "config check" "--help" "--version" "issue --help" "maintain --dry-run" \
  "revoke --issued-by field1 --between 2000-01-01 2999-01-01 --dry-run"; do
  kca $cmd >/dev/null 2>&1 || fail "keyline-ca $cmd fails with a working stdout"
  set +e; kca $cmd >/dev/full 2>out.err; st=$?; set -e
  [ $st = 1 ] && tail -1 out.err | grep -q "^keyline-ca: stdout: " ||
    fail "keyline-ca $cmd > /dev/full: exit $st, stderr: $(cat out.err)"
done
kca list >/dev/full 2>out.err || true
grep -qx "keyline-ca: stdout: No space left on device" out.err || fail "list > /dev/full: $(cat out.err)"
# a command that failed keeps its own status and message; the lost output is said too
set +e; kca show --serial 0BAD >/dev/full 2>out.err; st=$?; set -e
[ $st = 6 ] && grep -q "no certificate with serial" out.err || fail "show of an unknown serial > /dev/full: exit $st, $(cat out.err)"
# a closed stdout with nothing written to it is no error
kca revoke --issued-by field1 --between 2000-01-01 2000-01-02 --dry-run >&- 2>/dev/null || fail "a command printing nothing fails with a closed stdout"
ok "every command's lost stdout is an error (exit 1, keyline-ca: stdout: No space left on device)"

# D4: ca create whose CA record and then the revocation of its certificate are refused by the
# store (as a full disk refuses both)
db="$KL_TEST_DIR/keyline.db"
refuse() { sqlite3 "$db" "CREATE TRIGGER inject_ca BEFORE INSERT ON cas WHEN NEW.label LIKE '$1' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;
  CREATE TRIGGER inject_rv BEFORE UPDATE ON certs WHEN NEW.status = 'revoked' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"; }
unrefuse() { sqlite3 "$db" "DROP TRIGGER inject_ca; DROP TRIGGER inject_rv;"; }
left_valid() { sqlite3 "$db" "SELECT serial FROM certs WHERE status = 'valid' AND $1 ORDER BY serial"; }
refuse field9
set +e; kca ca create --label field9 --template field-ca --issuer root1 --subject "CN=Field 9,O=Keyline Test" >/dev/null 2>create.err; st=$?; set -e
unrefuse
[ $st != 0 ] || fail "ca create with a refusing store succeeded"
s9=$(left_valid "subject LIKE 'CN=Field 9%'")
[ -n "$s9" ] || fail "no valid certificate of the failed ca create (the test's premise)"
grep -q "stays valid in the store; once the store takes writes again, run keyline-ca revoke --serial $s9 --reason cessationOfOperation)" create.err ||
  fail "failed ca create does not name the certificate $s9 it left valid: $(cat create.err)"
ok "ca create undone in a refusing store names what it left: $(cat create.err)"
# the command it names revokes it
kca revoke --serial "$s9" --reason cessationOfOperation >/dev/null 2>revoke.err || fail "the named command fails: $(cat revoke.err)"
[ -z "$(left_valid "subject LIKE 'CN=Field 9%'")" ] || fail "certificate $s9 still valid"
kca ca create --label field9 --template field-ca --issuer root1 --subject "CN=Field 9,O=Keyline Test" >/dev/null
ok "the named revoke command works; the label is then created"

# and ca rotate (the same undoing): each of the three certificates it signed is named
before=$(left_valid 1)
refuse '%.oldwithnew'
set +e; kca ca rotate --label root1 --new-label root2 --key-type ec-p384 >/dev/null 2>rotate.err; st=$?; set -e
unrefuse
[ $st != 0 ] || fail "ca rotate with a refusing store succeeded"
left=$(comm -13 <(echo "$before") <(left_valid 1))
[ "$(echo "$left" | wc -w)" = 3 ] || fail "expected 3 certificates left valid by the failed rotation, got: $left"
for s in $left; do
  grep -q "keyline-ca revoke --serial $s --reason cessationOfOperation[;)]" rotate.err ||
    fail "failed rotation does not name $s: $(cat rotate.err)"
done
[ "$(wc -c <rotate.err)" -lt 1100 ] || fail "rotate message too long: $(cat rotate.err)"
ok "ca rotate undone in a refusing store names its three certificates: $(cat rotate.err)"
grep -q "for one signed by the new key the revocation stands, but revoke then fails: there is no CRL of root2 to publish)" rotate.err ||
  fail "failed rotation does not say that revoke cannot publish a CRL of root2: $(cat rotate.err)"
# revoke records each; for the two root2 signed (the new root, OldWithNew) it then says that
# it could not publish root2's CRL, as the message said
nfail=0
for s in $left; do
  kca revoke --serial "$s" --reason cessationOfOperation >/dev/null 2>revoke.err ||
    { nfail=$((nfail + 1)); grep -q "revoked $s, but the CRL of root2 was not published" revoke.err || fail "revoke $s: $(cat revoke.err)"; }
done
[ $nfail = 2 ] || fail "expected revoke to fail its CRL step for the 2 certificates root2 signed, not $nfail"
[ -z "$(comm -13 <(echo "$before") <(left_valid 1))" ] || fail "certificates of the failed rotation still valid"
kca ca rotate --label root1 --new-label root2 --key-type ec-p384 >/dev/null
ok "the named revoke commands work; the rotation then succeeds"
