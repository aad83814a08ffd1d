# keyline-ca store migrate (issue 13 item 5): an SQLite store with CAs, certificates (one
# revoked), devices, CRLs, held requests and a signed audit chain, copied into a throwaway
# PostgreSQL cluster (tests/lib/pg.sh); the audit chain verifies on both sides; keyline-ca then
# runs on the copy ([store] url) and carries on where the SQLite store stopped (CRL numbers,
# serials, the chain); a non-empty target, a bad URL and the store itself are refused.
source "$KL_SRC/tests/lib/common.sh"
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
trap '"$KL_SRC/tests/lib/pg.sh" stop "$pgdir"' EXIT
url=$("$KL_SRC/tests/lib/pg.sh" start "$pgdir")
psql_q() { psql -X -A -t -q "$url" -c "$1"; }

kca store --help | grep -q "store migrate --to" || fail "store --help lacks migrate"
kca store migrate --help | grep -q -- "--to postgresql://" || fail "store migrate --help"

make_hierarchy
for i in 1 2 3 4; do
  make_key ec-p256 d$i.key
  openssl req -new -key d$i.key -subj "/CN=dev $i" -out d$i.csr 2>/dev/null
  kca issue --issuer field1 --template device-ldevid --csr d$i.csr --device-id DEV$i --out d$i.pem
done
s1=$(openssl x509 -in d1.pem -noout -serial | cut -d= -f2)
kca revoke --serial "$s1" --reason keyCompromise 2>/dev/null
kca audit checkpoint >/dev/null
# rows of the tables keyline-estd and the station write (a held request, a device), put in with
# sqlite3 here: the copy takes every table as it is
sqlite3 keyline.db "INSERT INTO devices (device_id, model, cert_serial, state, detail, updated)
  VALUES ('DEV2', 'sensor-v1', '$(openssl x509 -in d2.pem -noout -serial | cut -d= -f2)',
  'provisioned', 'fixture1', 1760000000)"
sqlite3 keyline.db "INSERT INTO requests (label, csr_hash, csr, issuer, template, requester,
  subject, status, created) VALUES ('', '$(openssl dgst -sha256 -r d4.csr | cut -c1-64)',
  X'$(openssl req -in d4.csr -outform DER | xxd -p | tr -d '\n')', 'field1', 'device-ldevid',
  'est-client', 'CN=dev 4', 'pending', 1760000000)"
kca request list > requests.before
kca list > list.before
kca device list > devices.before
kca audit verify > verify.before
crl_before=$(sqlite3 keyline.db "SELECT number FROM crls WHERE issuer = 'field1'")
counts() { for t in cas certs devices requests crls crl_numbers revocation_epochs audit audit_checkpoints audit_key; do
  printf '%s=%s\n' "$t" "$($1 "SELECT count(*) FROM $t")"; done; }
counts "sqlite3 keyline.db" > counts.before

# refusals first: nothing written
expect_fail "--to without a URL" kca store migrate --to keyline.db
expect_fail "--to missing" kca store migrate
expect_fail "an unreachable server" kca store migrate --to "postgresql:///keyline?host=$pgdir/none&connect_timeout=2"
[ "$(psql_q "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")" = 0 ] || fail "a refused migration created tables"

kca store migrate --to "$url" > migrate.out || { cat migrate.out; fail "store migrate"; }
cat migrate.out
grep -q "^source: audit log intact" migrate.out || fail "no verdict on the source"
grep -q "^copy: audit log intact" migrate.out || fail "no verdict on the copy"
[ "$(grep '^source:' migrate.out | sed 's/^source: //')" = "$(grep '^copy:' migrate.out | sed 's/^copy: //')" ] \
  || fail "source and copy verdicts differ"
grep -q "signed checkpoints" migrate.out || fail "checkpoints not copied"
counts psql_q > counts.after
diff counts.before counts.after || fail "row counts differ after the copy"
# the DER of every certificate is byte for byte the same
sqlite3 keyline.db "SELECT serial || ' ' || hex(der) FROM certs ORDER BY id" > der.sqlite
psql_q "SELECT serial || ' ' || upper(encode(der, 'hex')) FROM certs ORDER BY id" > der.pg
cmp der.sqlite der.pg || fail "certificates differ"
ok "migrated: the same rows, certificates, audit chain and checkpoints"

expect_fail "a second migration into the same database" kca store migrate --to "$url"
grep -q . <(psql_q "SELECT 1") || fail "server gone"
[ "$(psql_q "SELECT count(*) FROM certs")" = "$(grep "^certs=" counts.before | cut -d= -f2)" ] || fail "the refused second migration wrote rows"

# keyline-ca on the copy
python3 - "$KL_CONF" "$url" <<'PY'
import sys
p, u = sys.argv[1], sys.argv[2]
s = open(p).read()
assert "path = keyline.db" in s
open(p, "w").write(s.replace("path = keyline.db", "url = " + u))
PY
mv keyline.db keyline.db.migrated   # nothing may still read the SQLite file
rm -f keyline.db-wal keyline.db-shm
kca audit verify --token > verify.after || { cat verify.after; fail "audit verify on PostgreSQL"; }
head -1 verify.before > v1; head -1 verify.after > v2
cmp v1 v2 || fail "audit verify differs: $(cat v1) / $(cat v2)"
kca list > list.after
diff list.before list.after || fail "list differs on the copy"
kca device list > devices.after
diff devices.before devices.after || fail "device list differs on the copy"
kca request list > requests.after
diff requests.before requests.after || fail "request list differs on the copy"
grep -q "CN=dev 4" requests.after || fail "the held request is not listed"
kca crl --issuer field1 > crl.pem 2>crl.err
n=$(openssl crl -in crl.pem -noout -crlnumber | sed 's/^crlNumber=//')
case $n in 0x[0-9A-Fa-f]*) ;; *) fail "CRL number '$n'" ;; esac
[ "$((n))" = "$((crl_before + 1))" ] || fail "CRL number $((n)) after $crl_before"
openssl crl -in crl.pem -noout -text | grep -q "$s1" || fail "the revocation was not carried over"
make_key ec-p256 d9.key
openssl req -new -key d9.key -subj "/CN=dev 9" -out d9.csr 2>/dev/null
kca issue --issuer field1 --template device-ldevid --csr d9.csr --device-id DEV9 --out d9.pem
openssl verify -CAfile root1.pem -untrusted field1.pem d9.pem >/dev/null || fail "issued on PostgreSQL"
kca audit checkpoint >/dev/null
kca audit verify --token | grep -q "audit log intact" || fail "audit verify after issuing on PostgreSQL"
ok "keyline-ca on the copy: same list, the next CRL number, a new certificate, the chain goes on"

expect_fail "store backup of a PostgreSQL store" kca store backup --out pg-backup.db
[ ! -e pg-backup.db ] || fail "a refused backup left a file"

# [store] url with a path too is refused
sed -i 's|^url = |path = x.db\nurl = |' "$KL_CONF"
expect_fail "[store] path and url together" kca list
ok "store migrate"
