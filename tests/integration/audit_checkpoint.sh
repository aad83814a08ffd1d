# Audit checkpoints (issue 11 item 5): the audit chain's head is signed with the audit key in the
# token, so that someone who can write the store file cannot rewrite the log and recompute the
# chain. Real SoftHSM token, real SQLite store; the tampering is done with the sqlite3 CLI on
# copies of the store (triggers dropped first) and the chain recomputed with python3 exactly as
# docs/internals/store.md gives it; the signature is checked with the openssl CLI too.
source "$KL_SRC/tests/lib/common.sh"

# --- keyline-ca signs the head at the end of every command that opened the token ---
make_hierarchy
for i in 1 2; do
  make_key ec-p256 d$i.key
  openssl req -new -key d$i.key -subj "/CN=audit $i" -out d$i.csr
  kca issue --issuer field1 --template device-ldevid --csr d$i.csr --out d$i.pem >/dev/null
  declare "s$i=$(openssl x509 -in d$i.pem -noout -serial | cut -d= -f2)"
done
kca revoke --serial "$s2" --reason superseded >/dev/null 2>&1
kca crl --issuer field1 --out field1.crl >/dev/null 2>&1
out=$(kca audit verify)
grep -q "^audit log intact" <<<"$out" || fail "verify: $out"
grep -q "^signed: [0-9]* checkpoints by audit key 'keyline-audit'" <<<"$out" || fail "no checkpoints: $out"
grep -q "not signed yet" <<<"$out" && fail "keyline-ca left entries unsigned: $out"
grep -qx "audit key: the token's" <<<"$out" || fail "audit key not compared with the token: $out"
head=$(sqlite3 keyline.db "SELECT seq FROM audit_head")
last=$(sqlite3 keyline.db "SELECT max(seq) FROM audit_checkpoints")
[ "$head" = "$last" ] || fail "last checkpoint at $last, head $head"
ok "keyline-ca signs the head after each command: $(sed -n 2p <<<"$out")"

# The audit key: EC P-256 in the token, private, sensitive, never extractable, not modifiable
# (read with pkcs11-tool, not with our code).
objs=$(pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" \
  --list-objects --type privkey 2>/dev/null | grep -B1 -A3 "label: *keyline-audit$")
grep -q "Private Key Object; EC" <<<"$objs" || fail "no EC private key keyline-audit: $objs"
grep -q "Access: *.*sensitive" <<<"$objs" || fail "keyline-audit not sensitive: $objs"
grep -q "never extractable" <<<"$objs" || fail "keyline-audit extractable: $objs"
ok "the audit key is an EC key in the token, sensitive and never extractable"

# The signed bytes as documented, checked with openssl against the recorded public key.
IFS='|' read -r cseq chash cts csig < <(sqlite3 keyline.db \
  "SELECT seq, hash, ts, hex(sig) FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
python3 - "$cseq" "$cts" "$chash" > tbs.bin <<'PY'
import struct, sys
seq, ts, h = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
sys.stdout.buffer.write(b"keyline-audit-checkpoint-v1" + struct.pack(">QQI", seq, ts, len(h)) + h)
PY
xxd -r -p <<<"$csig" > sig.der
sqlite3 keyline.db "SELECT hex(spki) FROM audit_key" | xxd -r -p > audit-pub.der
openssl pkey -pubin -inform DER -in audit-pub.der -out audit-pub.pem
openssl dgst -sha256 -verify audit-pub.pem -signature sig.der tbs.bin | grep -q "Verified OK" \
  || fail "openssl does not verify checkpoint $cseq"
ok "checkpoint $cseq verifies with openssl over the documented bytes"

# --- tampering: each on a copy of the store, each must make audit verify fail naming it ---
cat > rechain.py <<'PY'
# Recompute the whole audit chain and the head (docs/internals/store.md "Audit hash chain"),
# as anyone who can write the file can.
import hashlib, sqlite3, struct, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;")
def field(v):
    b = v if isinstance(v, bytes) else (v or "").encode()
    return struct.pack(">I", len(b)) + b
prev, seq = "0" * 64, 0
for seq, ts, actor, action, detail in db.execute(
        "SELECT seq, ts, actor, action, detail FROM audit ORDER BY seq").fetchall():
    h = hashlib.sha256(b"keyline-audit-v1" + struct.pack(">QQ", seq, ts % 2**64) + field(actor)
                       + field(action) + field(detail) + field(prev)).hexdigest()
    db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
    prev = h
db.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, prev))
db.commit()
PY
# The unchanged chain recomputes to the same hashes (the script is right).
sqlite3 keyline.db ".backup same.db"
python3 rechain.py same.db
[ "$(sqlite3 same.db 'SELECT hash FROM audit_head')" = "$(sqlite3 keyline.db 'SELECT hash FROM audit_head')" ] \
  || fail "rechain.py does not reproduce the chain"

# tamper NAME SQL WANT...: copy, drop the triggers, apply SQL, recompute the chain; audit verify
# must exit 4 naming every WANT.
tamper() {
  local name=$1 sql=$2; shift 2
  sqlite3 keyline.db ".backup $name.db"
  sed "s|^path = keyline.db|path = $name.db|" "$KL_CONF" > "$name.conf"
  sqlite3 "$name.db" "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
    DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;
    DROP TRIGGER audit_key_no_update; DROP TRIGGER audit_key_no_delete; $sql"
  python3 rechain.py "$name.db"
  local out rc=0
  out=$("$KL_BIN/keyline-ca" -c "$name.conf" audit verify 2>&1) || rc=$?
  [ $rc = 4 ] || fail "$name: audit verify exit $rc, want 4: $out"
  for w in "$@"; do [[ $out == *"$w"* ]] || fail "$name: the message does not name '$w': $out"; done
  echo "ok - $name: $out"
}
# the first entry by a given actor, an entry far from the head
first_issue=$(sqlite3 keyline.db "SELECT min(seq) FROM audit WHERE action = 'issue'")
cp_after() { sqlite3 keyline.db "SELECT min(seq) FROM audit_checkpoints WHERE seq >= $1"; }
cp_before() { sqlite3 keyline.db "SELECT coalesce(max(seq), 0) FROM audit_checkpoints WHERE seq < $1"; }

c=$(cp_after "$first_issue"); b=$(cp_before "$first_issue")
tamper edit "UPDATE audit SET actor = 'cli:nobody' WHERE seq = $first_issue" \
  "audit checkpoint at entry $c" "an entry in $((b + 1))..$c was edited"

crl_seq=$(sqlite3 keyline.db "SELECT max(seq) FROM audit WHERE action = 'crl'")
tamper cut-tail "DELETE FROM audit WHERE seq >= $crl_seq" \
  "audit checkpoint at entry $(cp_after "$crl_seq")" "the log ends at entry $((crl_seq - 1))"

read -r i1 i2 < <(sqlite3 keyline.db "SELECT group_concat(seq, ' ') FROM
  (SELECT seq FROM audit WHERE action = 'issue' ORDER BY seq LIMIT 2 OFFSET 3)")
[ -n "$i2" ] || i2=$((i1 + 1))
tamper reorder "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN ($i1, $i2);
  UPDATE audit SET ts = (SELECT ts FROM t WHERE seq = $i2), actor = (SELECT actor FROM t WHERE seq = $i2),
    detail = (SELECT detail FROM t WHERE seq = $i2) WHERE seq = $i1;
  UPDATE audit SET ts = (SELECT ts FROM t WHERE seq = $i1), actor = (SELECT actor FROM t WHERE seq = $i1),
    detail = (SELECT detail FROM t WHERE seq = $i1) WHERE seq = $i2;" \
  "audit checkpoint at entry $(cp_after "$i1")"

tamper forged "UPDATE audit_checkpoints SET sig = CAST(substr(sig, 1, 12) ||
    (CASE WHEN substr(sig, 13, 1) = x'00' THEN x'01' ELSE x'00' END) || substr(sig, 14) AS BLOB)
  WHERE seq = $last" \
  "audit checkpoint at entry $last: signature does not verify" "keyline-audit"

tamper no-checkpoints "DELETE FROM audit_checkpoints" \
  "audit key 'keyline-audit' is recorded but there is no audit checkpoint"
tamper no-key "DELETE FROM audit_checkpoints; DELETE FROM audit_key;
  UPDATE audit SET actor = 'cli:nobody' WHERE seq = $first_issue" \
  "no signed checkpoint"

# The whole signing replaced: the chain rewritten, an audit key of the attacker's own recorded,
# every checkpoint re-signed with it. The checkpoints verify; the token's key is not that one.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out evil.key 2>/dev/null
openssl pkey -in evil.key -pubout -outform DER -out evil-pub.der
sqlite3 keyline.db ".backup evil.db"
sed "s|^path = keyline.db|path = evil.db|" "$KL_CONF" > evil.conf
sqlite3 evil.db "DROP TRIGGER audit_no_update; DROP TRIGGER audit_checkpoints_no_update;
  DROP TRIGGER audit_checkpoints_no_delete; DROP TRIGGER audit_key_no_update;
  UPDATE audit SET actor = 'cli:nobody' WHERE seq = $first_issue;
  UPDATE audit_key SET spki = X'$(xxd -p evil-pub.der | tr -d '\n')'"
python3 rechain.py evil.db
sqlite3 evil.db "SELECT seq, ts FROM audit_checkpoints" | while IFS='|' read -r q t; do
  h=$(sqlite3 evil.db "SELECT hash FROM audit WHERE seq = $q")
  python3 - "$q" "$t" "$h" > e.tbs <<'PY'
import struct, sys
seq, ts, h = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
sys.stdout.buffer.write(b"keyline-audit-checkpoint-v1" + struct.pack(">QQI", seq, ts, len(h)) + h)
PY
  openssl dgst -sha256 -sign evil.key -out e.sig e.tbs
  sqlite3 evil.db "UPDATE audit_checkpoints SET sig = X'$(xxd -p e.sig | tr -d '\n')',
    hash = (SELECT hash FROM audit WHERE seq = $q) WHERE seq = $q"
done
out=$("$KL_BIN/keyline-ca" -c evil.conf audit verify --no-token) \
  || fail "the re-signed store should pass without the token (its checkpoints are consistent): $out"
grep -q "$(sha256sum evil-pub.der | cut -d' ' -f1)" <<<"$out" || fail "fingerprint not printed: $out"
rc=0; out=$("$KL_BIN/keyline-ca" -c evil.conf audit verify 2>&1) || rc=$?
[ $rc = 4 ] || fail "re-signed with another key: exit $rc, want 4: $out"
grep -q "is not the key 'keyline-audit' of token 'keyline-test'" <<<"$out" || fail "re-signed: $out"
echo "ok - re-signed with another key: $out"
ok "every rewrite named (edit, cut tail, reorder, forged, deleted checkpoints, key replaced)"

# Signing refuses to extend a rewritten chain (it would vouch for the rewrite).
rc=0; out=$("$KL_BIN/keyline-ca" -c edit.conf audit checkpoint 2>&1) || rc=$?
[ $rc = 4 ] || fail "audit checkpoint on a rewritten chain: exit $rc: $out"
grep -q "refusing to sign the audit log" <<<"$out" || fail "checkpoint refusal: $out"
ok "no checkpoint over a rewritten chain: $out"

# A new store on a token that already holds an audit key: not adopted silently.
sed "s|^path = keyline.db|path = fresh.db|" "$KL_CONF" > fresh.conf
"$KL_BIN/keyline-ca" -c fresh.conf ca create --label other-root --template root \
  --subject "CN=Other Root,O=Keyline Test" >/dev/null 2>fresh.err
grep -q "warning: audit log not signed: .*already holds a key labelled 'keyline-audit'" fresh.err \
  || fail "fresh store: $(cat fresh.err)"
rc=0; "$KL_BIN/keyline-ca" -c fresh.conf audit verify >/dev/null 2>&1 || rc=$?
[ $rc = 4 ] || fail "fresh store without checkpoint verified (exit $rc)"
"$KL_BIN/keyline-ca" -c fresh.conf audit checkpoint --adopt-key | grep -q "audit checkpoint at entry" \
  || fail "adopt-key"
"$KL_BIN/keyline-ca" -c fresh.conf audit verify | grep -qx "audit key: the token's" || fail "adopted key"
ok "a new store on a used token needs audit checkpoint --adopt-key"

# --- keyline-cad: every N entries, and at shutdown ---
cad_conf_ldevid field1 "socket-mode = 0600" "audit-checkpoint-every = 3"
"$KL_BIN/keyline-cad" -c "$KL_CONF" 2>cad.log &
CAD_PID=$!
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S cad.sock ] && break; sleep 0.1; done
[ -S cad.sock ] || { cat cad.log >&2; fail "keyline-cad did not start"; }
before=$(sqlite3 keyline.db "SELECT count(*) FROM audit_checkpoints")
for i in 3 4 5 6; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c$i.key \
    -subj "/CN=cad $i/serialNumber=HWA$i" -outform DER -out c$i.der 2>/dev/null
  "$KL_BIN/kl_cad_client" -o c$i.pem "$(pwd)/cad.sock" issue profile=ldevid csr=@c$i.der \
    auth=basic auth-user=audit device-id=HWA$i >/dev/null || { cat cad.log >&2; fail "issue $i"; }
done
# signed after the answer that made it due: give that a moment
for _ in $(seq 1 50); do
  during=$(sqlite3 keyline.db "SELECT count(*) FROM audit_checkpoints")
  gap=$(sqlite3 keyline.db "SELECT (SELECT seq FROM audit_head) - max(seq) FROM audit_checkpoints")
  [ "$during" -gt "$before" ] && [ "$gap" -lt 3 ] && break
  sleep 0.1
done
[ "$during" -gt "$before" ] || { cat cad.log >&2; fail "no checkpoint after 4 issuances with every = 3"; }
[ "$gap" -lt 3 ] || fail "keyline-cad left $gap entries unsigned (every = 3)"
grep -q "info audit checkpoint at entry [0-9]* [0-9a-f]\{64\}$" cad.log || { cat cad.log >&2; fail "checkpoint not logged"; }
ok "keyline-cad signs every 3 entries ($before -> $during checkpoints, $gap unsigned), and logs each"
kill -TERM $CAD_PID
wait $CAD_PID || { cat cad.log >&2; fail "keyline-cad exit after SIGTERM"; }
trap - EXIT
grep -q "audit checkpoint at shutdown: entry" cad.log || { cat cad.log >&2; fail "no shutdown checkpoint logged"; }
head=$(sqlite3 keyline.db "SELECT seq FROM audit_head")
last=$(sqlite3 keyline.db "SELECT max(seq) FROM audit_checkpoints")
[ "$head" = "$last" ] || fail "after shutdown: last checkpoint at $last, head $head"
out=$(kca audit verify)
grep -q "not signed yet" <<<"$out" && fail "entries unsigned after keyline-cad stopped: $out"
ok "keyline-cad signs the head at shutdown (entry $last)"

# --- keyline-cad: an entry left unsigned longer than audit-checkpoint-seconds is signed by the
# timer, with no further request and far below `every`; an idle service signs nothing more
sed -i 's/^audit-checkpoint-every = 3$/audit-checkpoint-every = 1000\naudit-checkpoint-seconds = 2/' "$KL_CONF"
grep -q "^audit-checkpoint-seconds = 2$" "$KL_CONF" || fail "conf not rewritten"
"$KL_BIN/keyline-cad" -c "$KL_CONF" 2>cad2.log &
CAD_PID=$!
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S cad.sock ] && break; sleep 0.1; done
[ -S cad.sock ] || { cat cad2.log >&2; fail "keyline-cad did not start again"; }
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c7.key \
  -subj "/CN=cad 7/serialNumber=HWA7" -outform DER -out c7.der 2>/dev/null
"$KL_BIN/kl_cad_client" -o c7.pem "$(pwd)/cad.sock" issue profile=ldevid csr=@c7.der \
  auth=basic auth-user=audit device-id=HWA7 >/dev/null || { cat cad2.log >&2; fail "issue 7"; }
gap=$(sqlite3 keyline.db "SELECT (SELECT seq FROM audit_head) - max(seq) FROM audit_checkpoints")
[ "$gap" -gt 0 ] || fail "issue 7 left nothing unsigned (gap $gap): the test proves nothing"
t0=$(date +%s.%N)
for _ in $(seq 1 80); do
  gap=$(sqlite3 keyline.db "SELECT (SELECT seq FROM audit_head) - max(seq) FROM audit_checkpoints")
  [ "$gap" = 0 ] && break
  sleep 0.1
done
waited=$(python3 -c "import time; print('%.1f' % (time.time() - $t0))")
[ "$gap" = 0 ] || { cat cad2.log >&2; fail "an entry stayed unsigned for 8 s with audit-checkpoint-seconds = 2"; }
n=$(sqlite3 keyline.db "SELECT count(*) FROM audit_checkpoints")
sleep 3
[ "$(sqlite3 keyline.db "SELECT count(*) FROM audit_checkpoints")" = "$n" ] || fail "an idle keyline-cad kept signing"
grep -q "info audit checkpoint at entry [0-9]* [0-9a-f]\{64\}$" cad2.log || fail "timer checkpoint not logged"
kill -TERM $CAD_PID
wait $CAD_PID || { cat cad2.log >&2; fail "keyline-cad exit after SIGTERM (timer)"; }
trap - EXIT
ok "keyline-cad signs an entry left unsigned for audit-checkpoint-seconds = 2 (after ${waited} s), and nothing more while idle"
