# keyline-ca store backup (issue 13 item 5): a consistent online copy of the SQLite store taken
# while another process keeps issuing; the copy opens as a store, its audit chain and signed
# checkpoints verify, and restored in place of the store it serves keyline-ca; an existing file
# is never overwritten, the store's own files are refused.
source "$KL_SRC/tests/lib/common.sh"

kca store backup --help | grep -q -- "--out FILE" || fail "store backup --help"
make_hierarchy
make_key ec-p256 dev.key
openssl req -new -key dev.key -subj "/CN=sensor" -out dev.csr 2>/dev/null
kca issue --issuer field1 --template device-ldevid --csr dev.csr --out dev0.pem
kca audit checkpoint >/dev/null

# a writer in another process while the backups are taken
( for i in $(seq 1 12); do
    kca issue --issuer field1 --template device-ldevid --csr dev.csr --out w$i.pem 2>/dev/null || exit 1
  done ) &
writer=$!
for i in 1 2 3; do
  kca store backup --out b$i.db > b$i.out || { cat b$i.out; fail "backup $i"; }
  grep -q "^backup: audit log intact" b$i.out || { cat b$i.out; fail "backup $i not verified"; }
done
wait "$writer" || fail "the writer failed during the backups"
for i in 1 2 3; do
  [ "$(stat -c %a b$i.db)" = 600 ] || fail "b$i.db mode $(stat -c %a b$i.db)"
  [ "$(sqlite3 b$i.db 'PRAGMA integrity_check')" = ok ] || fail "b$i.db integrity"
  ls b$i.db.tmp-* 2>/dev/null && fail "a temporary file was left behind"
done
ok "three online backups under a concurrent writer: integrity ok, audit chain verified, mode 0600"

# an existing file is never overwritten, the store's own files are refused
sum=$(sha256sum b1.db)
expect_fail "backup over an existing file" kca store backup --out b1.db
[ "$(sha256sum b1.db)" = "$sum" ] || fail "b1.db changed"
expect_fail "backup over the store" kca store backup --out keyline.db
expect_fail "backup over the store's WAL" kca store backup --out keyline.db-wal
expect_fail "backup into a missing folder" kca store backup --out no/such/dir/b.db
expect_fail "backup without --out" kca store backup
ok "refusals: existing file, the store's files, a missing folder"

# restore: the last backup in place of the store
n_backup=$(sqlite3 b3.db "SELECT count(*) FROM certs")
head_backup=$(sqlite3 b3.db "SELECT seq || ' ' || hash FROM audit_head")
mkdir restore
cp b3.db restore/keyline.db
sed "s|^path = keyline.db|path = $KL_TEST_DIR/restore/keyline.db|" "$KL_CONF" > restore.conf
grep -q "restore/keyline.db" restore.conf || fail "restore.conf"
"$KL_BIN/keyline-ca" -c restore.conf audit verify --token > restore.verify || { cat restore.verify; fail "audit verify on the restored store"; }
grep -q "audit log intact: .* head $head_backup" restore.verify || { cat restore.verify; fail "restored head is not the backup's ($head_backup)"; }
[ "$("$KL_BIN/keyline-ca" -c restore.conf list | grep -c .)" -ge "$n_backup" ] || fail "restored list"
"$KL_BIN/keyline-ca" -c restore.conf issue --issuer field1 --template device-ldevid --csr dev.csr --out r.pem
"$KL_BIN/keyline-ca" -c restore.conf audit verify | grep -q "audit log intact" || fail "verify after issuing on the restored store"
ok "a backup restored in place of the store: the chain verifies with the token's key, issuing goes on"
ok "store backup"
