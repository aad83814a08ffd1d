# Quorum ceremonies against a hostile insider (docs/internals/ceremony.md): one officer's key
# registered twice (its EC point compressed in the second certificate) and counted twice; a
# done ceremony set back to proposed in the store, and a ceremony row copied with its
# approvals, each run again; a transcript checked against another ceremony's id or a higher
# quorum (ceremony verify --id/--quorum). All refused; quorum 2, two officers, production
# orders (no CA key made, so it stays fast).
source "$KL_SRC/tests/lib/common.sh"
source "$KL_SRC/tests/lib/officer.sh"
sql() { sqlite3 keyline.db "$1"; }
officer_token alice 1111 pkcs11-tool EC:prime256v1
officer_token bob 2222 pkcs11-tool EC:prime256v1
printf '\n[ceremony]\nquorum = 2\n' >> "$KL_CONF"
# keyline-cad's profile "station", which production orders name by default
printf '\n[station]\nissuer = factory1\n' >> "$KL_CONF"
approve() { # approve ID NAME PIN
  OFFICER_PIN=$3 kca ceremony approve --id "$1" --token "pkcs11:token=officer-$2;object=$2" --pin env:OFFICER_PIN 2>/dev/null
}
refused() { # WHAT EXPECTED-MESSAGE COMMAND...: exit 4 (EXIT=N: N) with that message
  local what=$1 want=$2 rc=0; shift 2
  "$@" > out.txt 2> err.txt || rc=$?
  [ $rc = "${EXIT:-4}" ] && grep -q "$want" err.txt || { cat out.txt err.txt; fail "$what (exit $rc)"; }
  ok "$what refused: $(tail -1 err.txt)"
}
orders() { kca order list | grep -c "^O-" || true; }
kca officer add --name alice --cert alice.pem >/dev/null

# alice's key in a second certificate, its point compressed: another SubjectPublicKeyInfo, the
# same key (the certificate's own signature is no matter: keyline checks none)
openssl x509 -in alice.pem -noout -pubkey | openssl ec -pubin -conv_form compressed -pubout -out alicec.pub 2>/dev/null
make_key ec-p256 other.key
openssl req -new -key other.key -subj /CN=alice2 -out other.csr
openssl x509 -req -in other.csr -signkey other.key -force_pubkey alicec.pub -days 30 -out alice2.pem 2>/dev/null
openssl x509 -in alice2.pem -noout -pubkey | grep -q "^-----BEGIN PUBLIC KEY" || fail "no compressed certificate"
EXIT=1 refused "alice's key under a second name, its point compressed" "or this key is registered already" \
  kca officer add --name alice2 --cert alice2.pem
kca officer add --name bob --cert bob.pem >/dev/null
# a store that holds such a row (registered before keyline hashed keys in one form, or written
# beside it): alice's one signature entered as alice2's counts once
sql "INSERT INTO officers (name, cert, key_sha256, cert_sha256, status, added) VALUES ('alice2', X'$(openssl x509 -in alice2.pem -outform DER | xxd -p | tr -d '\n')', '$(openssl pkey -pubin -in alicec.pub -outform DER | sha256sum | cut -d' ' -f1)', '$(openssl x509 -in alice2.pem -outform DER | sha256sum | cut -d' ' -f1)', 'active', 0)"
id=$(kca ceremony propose order create --model m1 --count 3 --station ST1 --expires 2099-12-31 2>/dev/null)
approve "$id" alice 1111
sql "INSERT INTO ceremony_approvals (ceremony, officer, sig, at) SELECT ceremony, 'alice2', sig, at FROM ceremony_approvals WHERE ceremony = $id AND officer = 'alice'"
refused "one key's signature counted under two officer names" "alice2 approved with the key of an officer counted already" \
  kca ceremony run --id "$id"
[ "$(orders)" = 0 ] || fail "an order made with one officer's key"
ok "one officer's key counts once, however its certificate encodes it"

# approvals replayed: a done ceremony set back to proposed, and a ceremony row copied with its
# approvals (its nonce column changed to pass the store's uniqueness), run again
approve "$id" bob 2222
kca ceremony run --id "$id" 2>/dev/null
[ "$(orders)" = 1 ] || fail "the approved order was not made"
sql "UPDATE ceremonies SET status = 'proposed' WHERE id = $id"
refused "a done ceremony set back to proposed" "ceremony $id ran already" kca ceremony run --id "$id"
sql "INSERT INTO ceremonies (op, nonce, request, status, proposed, proposer) SELECT op, nonce || 'x', request, 'proposed', proposed, proposer FROM ceremonies WHERE id = $id"
cid=$(sql "SELECT max(id) FROM ceremonies")
sql "INSERT INTO ceremony_approvals (ceremony, officer, sig, at) SELECT $cid, officer, sig, at FROM ceremony_approvals WHERE ceremony = $id"
refused "a ceremony row copied with its approvals" "ceremony $cid is not the request its audited proposal recorded" \
  kca ceremony run --id "$cid"
# the copy with its own ceremony-propose entry appended to the log (the chain extended by hand:
# entries after the last checkpoint are anyone's to add): the same nonce proposed twice
python3 - keyline.db "$cid" <<'PY'
import hashlib, sqlite3, struct, sys, time
db = sqlite3.connect(sys.argv[1]); cid = int(sys.argv[2])
op, req = db.execute("SELECT op, request FROM ceremonies WHERE id = ?", (cid,)).fetchone()
seq, prev = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
seq, ts, actor, action = seq + 1, int(time.time()), "cli:root", "ceremony-propose"
detail = "id=%d op=%s request-sha256=%s" % (cid, op, hashlib.sha256(req).hexdigest())
h = hashlib.sha256(b"keyline-audit-v1" + struct.pack(">QQ", seq, ts))
for f in (actor, action, detail, prev):
    h.update(struct.pack(">I", len(f.encode())) + f.encode())
db.execute("INSERT INTO audit (seq, ts, actor, action, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
           (seq, ts, actor, action, detail, prev, h.hexdigest()))
db.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, h.hexdigest()))
db.commit()
PY
# the chain and its checkpoints accept it (what audit verify finds is the alice2 row above)
kca audit verify --no-token > out.txt 2>&1 && fail "audit verify passes with the alice2 row"
grep -q "^keyline-ca: officer alice2: " out.txt || { cat out.txt; fail "the appended entry breaks the chain (the test forged it wrong)"; }
refused "a copied ceremony with a forged proposal entry" "its request was proposed 2 times" kca ceremony run --id "$cid"
[ "$(orders)" = 1 ] || fail "an approved order made twice"
# a done ceremony's transcript swapped for another's in the store: export refuses it
kca ceremony export --id "$id" --out t1.txt
sql "UPDATE ceremonies SET status = 'done', transcript = (SELECT transcript FROM ceremonies WHERE id = $id) WHERE id = $cid"
refused "exporting another ceremony's transcript" "the stored transcript is another ceremony's" kca ceremony export --id "$cid"
ok "an approved operation runs once: a done ceremony set back, or copied to another row (with or without an audit entry forged for it), is refused"

# verify pinned to what the auditor expects: the ceremony and at least the quorum agreed on (a
# transcript of another ceremony, or of one run after [ceremony] quorum was lowered, fails)
"$KL_BIN/keyline-ca" ceremony verify --id "$id" --quorum 2 t1.txt > out.txt || fail "verify --id $id --quorum 2"
grep -q "^transcript verified$" out.txt || fail "verify --id --quorum says nothing"
pinned() { # WHAT EXPECTED-MESSAGE VERIFY-OPTIONS...: refused, nothing said verified
  local what=$1 want=$2; shift 2
  refused "$what" "$want" "$KL_BIN/keyline-ca" ceremony verify "$@" t1.txt
  grep -q "transcript verified" out.txt && fail "$what: printed 'transcript verified'" || true
}
pinned "verify --id of another ceremony" "t1.txt: transcript is of ceremony $id, not $((id + 5))" --id $((id + 5))
pinned "verify --quorum above the transcript's" "quorum 2 is below the required 3" --id "$id" --quorum 3
for bad in "--id 0$id" "--id x" "--id +$id" "--quorum 0" "--quorum 33"; do
  opt=${bad%% *}
  EXIT=2 pinned "verify $bad" "${opt#--} takes a .*(decimal, no sign or leading zero), not '${bad#* }'" $bad
done

# what officers read is what they sign: a value with a right-to-left override ("O=Acme<RLO>gro.live"
# shows as "O=Acmeevil.org"), a zero-width space, a C1 control (NEL) or bytes that are not UTF-8
# is refused at proposal; other Unicode is not
for v in 'O=Acme\xe2\x80\xaegro.live' 'CN=Ro\xe2\x80\x8bot' 'CN=Root\xc2\x85CN=x' 'CN=Root\xff' 'CN=\xc0\xafRoot'; do
  EXIT=2 refused "a subject with $v" "not UTF-8, or a control, invisible or bidirectional character" \
    kca ceremony propose ca create --label u1 --template root --subject "$(printf "$v")"
done
uid=$(kca ceremony propose ca create --label u1 --template root --subject "CN=Müller Wurzel,O=Acme" 2>/dev/null)
kca ceremony show --id "$uid" | grep -q "^param subject: CN=Müller Wurzel,O=Acme$" || fail "a UTF-8 subject refused"
# a stored request that does not parse (edited in the store) is not shown to an officer and signed
sql "UPDATE ceremonies SET request = CAST(replace(CAST(request AS TEXT), 'param label: u1', 'param label: u1 ') AS BLOB) WHERE id = $uid"
OFFICER_PIN=1111 refused "approving a stored request that does not parse" "its stored request does not parse" \
  kca ceremony approve --id "$uid" --token "pkcs11:token=officer-alice;object=alice" --pin env:OFFICER_PIN
ok "requests: bidirectional, invisible and control characters and bad UTF-8 refused, Unicode names kept, an unparsable stored request not signed"

# audit list prints one line per entry: an actor (from SUDO_USER) with a newline does not print
# a forged entry line
nid=$(kca ceremony propose order create --model m9 --count 1 --station ST1 --expires 2099-12-31 2>/dev/null)
SUDO_USER=$'root\n99 2026-12-07T08:00:00Z cli:root officer-remove officer=alice' kca ceremony run --id "$nid" > /dev/null 2>&1 &&
  fail "a ceremony without approvals ran"
[ "$(sql "SELECT count(*) FROM audit WHERE actor LIKE '%officer-remove%'")" = 1 ] || fail "the refusal is not logged with that actor"
kca audit list > list.txt
[ "$(wc -l < list.txt)" = "$(sql "SELECT count(*) FROM audit")" ] || { cat list.txt; fail "audit list printed more lines than entries"; }
grep -q "^99 " list.txt && { grep "^99 " list.txt; fail "audit list shows a forged entry 99"; }
ok "audit list: one line per entry whatever its actor holds"

# an interrupted run is taken up only where it ran: a note of this host's name but another
# machine id (another host of the same name) is refused even when no such pid lives here; one
# of this machine from before a restart (another boot id) is taken up even when its pid is
# someone else's now
machine=$(cat /etc/machine-id 2>/dev/null || true)
if [ -n "$machine" ]; then
  kid=$(kca ceremony propose order create --model m8 --count 1 --station ST1 --expires 2099-12-31 2>/dev/null)
  approve "$kid" alice 1111; approve "$kid" bob 2222
  running() { sql "UPDATE ceremonies SET status = 'running', note = 'running: pid $1 on host $(hostname) (machine $2, boot $3) since 2026-12-05T00:00:00Z, by someone' WHERE id = $kid"; }
  sleep 300 & live=$!
  dead=$(sh -c 'echo $$')
  running "$dead" 0123456789abcdef0123456789abcdef "$(cat /proc/sys/kernel/random/boot_id)"
  refused "taking up a run of another host of the same name" "run it again on that host" kca ceremony run --id "$kid"
  running "$live" "$machine" 00000000-0000-0000-0000-000000000000
  kca ceremony run --id "$kid" > /dev/null 2> err.txt || { cat err.txt; fail "a run from before a restart not taken up"; }
  kill "$live"; wait "$live" 2>/dev/null || true
  kca order list | grep -q " m8 " || fail "the order of the taken-up run"
  ok "an interrupted run: another machine of the same name refused, a run from before a restart taken up"
else
  ok "no /etc/machine-id here: runs are told apart by host name alone (the interrupted-run checks of ceremony_quorum.sh)"
fi

# officer add racing around the quorum: with 3 active and the quorum raised to 5, five `officer
# add` at once without a ceremony register two (the store counts the active officers inside
# each registration's transaction), the others are told to propose a ceremony
sed -i 's/^quorum = 2$/quorum = 5/' "$KL_CONF"
for n in r1 r2 r3 r4 r5; do
  make_key ec-p256 "$n.key"
  openssl req -new -x509 -key "$n.key" -subj "/CN=$n" -days 30 -out "$n.pem" 2>/dev/null
done
for n in r1 r2 r3 r4 r5; do kca officer add --name "$n" --cert "$n.pem" > "$n.out" 2> "$n.err" & done
wait
active=$(kca officer list | grep -c " active ")
[ "$active" = 5 ] || { kca officer list; fail "$active officers active after racing adds under quorum 5 (not 5)"; }
[ "$(cat r?.err | grep -c "needs a ceremony")" = 3 ] || { cat r?.err; fail "the refused adds do not name the ceremony"; }
ok "five officer adds at once under quorum 5 with 3 active: 2 registered, 3 refused"
