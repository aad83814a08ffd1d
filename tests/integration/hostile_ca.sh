# keyline-ca against hostile use (issue 10): what the hostile testing found and what held.
# Each case names the defect it guards; every refusal must leave nothing behind.
source "$KL_SRC/tests/lib/common.sh"

# expect_rc RC DESCRIPTION CMD...: the command must exit with RC and one line on stderr
expect_rc() {
  local want=$1 what=$2 got=0
  shift 2
  "$@" >/tmp/kl-out.$$ 2>/tmp/kl-err.$$ || got=$?
  local msg; msg=$(cat /tmp/kl-err.$$); rm -f /tmp/kl-out.$$ /tmp/kl-err.$$
  [ "$got" = "$want" ] || fail "$what: exit $got, expected $want ($msg)"
  [ -n "$msg" ] || fail "$what: refused without a message"
  echo "ok - $what refused ($got): $msg"
}
count_certs() { kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
count_audit() { kca audit list | wc -l; }

make_hierarchy
make_key ec-p256 dev.key
openssl req -new -key dev.key -subj "/CN=hostile-dev" -out dev.csr 2>/dev/null

# --- defect 8: --out must never write over the store or the configuration --------------------
# keyline.db, its -wal/-shm/-journal companions (whether they exist right now or not) and
# keyline.conf, by any name: relative, absolute, with ./ and .., through a symbolic link
# (dangling or not). Refused before anything is issued or signed.
db_sum() { sha256sum keyline.db keyline.conf; }
before_db=$(db_sum)
before_n=$(count_certs)
before_audit=$(count_audit)
ln -s keyline.db db-link.pem
ln -s keyline.db-journal journal-link.pem
mkdir -p sub
for target in keyline.db ./keyline.db "$KL_TEST_DIR/keyline.db" sub/../keyline.db db-link.pem \
  keyline.db-wal keyline.db-shm keyline.db-journal journal-link.pem keyline.conf "$KL_CONF"; do
  expect_rc 2 "ca cert --out $target" kca ca cert --label root1 --out "$target"
  expect_rc 2 "issue --out $target" kca issue --issuer field1 --template device-ldevid --csr dev.csr --out "$target"
  expect_rc 2 "crl --out $target" kca crl --issuer field1 --out "$target"
done
[ ! -e keyline.db-journal ] || fail "a refused --out created keyline.db-journal"
ls | grep -q '\.tmp' && fail "a refused --out left a temporary file: $(ls)"
[ "$(db_sum)" = "$before_db" ] || fail "a refused --out changed the store or the config"
[ "$(count_certs)" = "$before_n" ] || fail "an issue refused for its --out still issued"
[ "$(count_audit)" = "$before_audit" ] || fail "a refused --out still wrote audit entries"
kca ca list | grep -q "^root1 " || fail "the store no longer works"
# ordinary targets still work: a new file, one replaced, a device
kca ca cert --label root1 --out out.pem && kca ca cert --label field1 --out out.pem
openssl x509 -in out.pem -noout -subject | grep -q "Test Field CA" || fail "--out out.pem"
kca crl --issuer field1 --out /dev/null 2>/dev/null || fail "--out /dev/null"
ok "defect 8: --out refuses the store's files and the config by any name"

echo "hostile_ca: all passed"
