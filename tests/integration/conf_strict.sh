# Strict keyline.conf (issue 12, item 4). A typo'd key was read, never looked at, and silently
# did nothing (`channel-bindings = required` left channel binding off). Now every binary refuses
# an unknown section or key before it does anything, naming file:line and the closest known
# name; `keyline-ca config check` prints the configuration as read (the PIN's source, never the
# PIN); a missing or unreadable PIN source is the PIN error, exit status 5.
source "$KL_SRC/tests/lib/common.sh"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_refused NAME WANT-EXIT WANT-TEXT CMD...: CMD exits WANT-EXIT, stderr has WANT-TEXT
run_refused() {
  local name=$1 want=$2 text=$3 rc=0
  shift 3
  "$@" >"$name.out" 2>"$name.err" || rc=$?
  [ "$rc" = "$want" ] || fail "$name: exit $rc, want $want: $(cat "$name.err")"
  grep -qF -- "$text" "$name.err" || fail "$name: stderr lacks \"$text\": $(cat "$name.err")"
  ok "$name: exit $rc, $(tail -n 1 "$name.err")"
}

make_hierarchy >/dev/null

# --- a typo'd key: every binary refuses it before anything else ------------------------------
# A configuration each binary would otherwise act on: a store that does not exist yet (keyline-ca
# would create it), keyline-cad's socket, keyline-estd's listener, the station's results file.
port=$(free_port)
sed 's/^path = keyline.db$/path = fresh.db/' "$KL_CONF" > typo.conf
cat >> typo.conf <<EOF

[cad]
socket = typo-cad.sock

[est]
listen = 127.0.0.1:$port
tls-cert = est-server.pem
tls-key = est-server.key
issuer = field1
channel-bindings = required

[station]
issuer = factory1
results = results.jsonl
EOF
grep -q '^path = fresh.db$' typo.conf || fail "test setup: store path not replaced"
line=$(grep -n '^channel-bindings' typo.conf | cut -d: -f1)
want="typo.conf:$line: unknown key 'channel-bindings' in [est]; did you mean 'channel-binding'?"

run_refused keyline-ca 3 "$want" "$KL_BIN/keyline-ca" -c typo.conf ca list
run_refused keyline-ca-config-check 3 "$want" "$KL_BIN/keyline-ca" -c typo.conf config check
[ ! -s keyline-ca-config-check.out ] || fail "config check printed a configuration it refused"
run_refused keyline-cad 3 "$want" "$KL_BIN/keyline-cad" -c typo.conf
run_refused keyline-estd 3 "$want" env -u KEYLINE_PIN "$KL_BIN/keyline-estd" -c typo.conf
run_refused keyline-provision 3 "$want" "$KL_BIN/keyline-provision" -c typo.conf --port "$KL_TEST_DIR/no-such-tty"
[ ! -e fresh.db ] || fail "the store was created from a refused configuration"
[ ! -e typo-cad.sock ] || fail "keyline-cad made its socket from a refused configuration"
[ ! -e results.jsonl ] || fail "the station wrote results from a refused configuration"
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
  fail "something listens on keyline-estd's port"
fi
ok "nothing made: no store, no socket, no results file, no listener"

# an unknown section, a key in the wrong section: named the same way, by every binary
sed "s/^channel-bindings = required$/channel-binding = required/; s/^\[station\]$/[stations]/" \
  typo.conf > section.conf
line=$(grep -n '^\[stations\]' section.conf | cut -d: -f1)
want="section.conf:$line: unknown section [stations]; did you mean [station]?"
run_refused keyline-provision-section 3 "$want" "$KL_BIN/keyline-provision" -c section.conf --port "$KL_TEST_DIR/no-such-tty"
run_refused keyline-cad-section 3 "$want" "$KL_BIN/keyline-cad" -c section.conf
sed "s/^channel-bindings = required$/crl-days = 9/" typo.conf > wrong.conf
line=$(grep -n '^crl-days' wrong.conf | cut -d: -f1)
run_refused keyline-estd-wrong-section 3 "wrong.conf:$line: unknown key 'crl-days' in [est]; it belongs in [ca]" \
  env -u KEYLINE_PIN "$KL_BIN/keyline-estd" -c wrong.conf

# a key given twice (the later silently won) or without a value (its default silently applied)
{ cat typo.conf; printf '\n[ca]\ncrl-days = 30\n[est]\nrequest-timeout = 5\nrequest-timeout = 60\n'; } |
  sed "s/^channel-bindings = required$/channel-binding = required/" > twice.conf
line=$(grep -n '^request-timeout = 60' twice.conf | cut -d: -f1)
run_refused keyline-estd-twice 3 "twice.conf:$line: [est] request-timeout given twice (first on line $((line - 1)))" \
  env -u KEYLINE_PIN "$KL_BIN/keyline-estd" -c twice.conf
sed 's/^crl-days = 30$/crl-days = ; a month/' twice.conf > empty.conf
line=$(grep -n '^crl-days = ; a month' empty.conf | cut -d: -f1)
run_refused keyline-ca-empty 3 "empty.conf:$line: [ca] crl-days has no value" \
  "$KL_BIN/keyline-ca" -c empty.conf config check
[ ! -e fresh.db ] || fail "the store was created from a refused configuration"

# --- config check: the configuration as read, defaults filled in, never the PIN ---------------
pin_value=pin-value-$RANDOM-never-printed
printf '%s\n' "$pin_value" > pin.txt
chmod 600 pin.txt
sed 's/^pin = .*/pin = file:pin.txt/' "$KL_CONF" > check.conf
printf '\n[est.label acme]\nissuer = field1\napproval = manual\n' >> check.conf
"$KL_BIN/keyline-ca" -c check.conf config check > check.out 2> check.err || fail "config check: $(cat check.err)"
grep -qx 'pin = file:pin.txt ; the source of the PIN, never the PIN' check.out || fail "config check does not show the PIN source: $(cat check.out)"
if grep -rqF "$pin_value" check.out check.err; then fail "config check printed the PIN"; fi
grep -qx "module = $KL_MODULE" check.out || fail "config check: [hsm] module as read"
grep -qx "path = keyline.db ; $KL_TEST_DIR/keyline.db" check.out || fail "config check: store path and where it resolves"
grep -qx 'crl-days = 7 ; default' check.out || fail "config check: [ca] crl-days default"
grep -qx 'channel-binding = off ; default' check.out || fail "config check: [est] channel-binding default"
grep -qx 'request-timeout = 30 ; default' check.out || fail "config check: [est] request-timeout default"
grep -qx 'socket = /run/keyline/cad.sock ; default' check.out || fail "config check: [cad] socket default"
grep -qx '\[est.label acme\]' check.out || fail "config check: the label section"
grep -qx 'approval = manual' check.out || fail "config check: the label's key"
grep -qx '; tls-key-pin: not set (required for a pkcs11: tls-key)' check.out || fail "config check: an unset key without a default"
ok "config check: every section and key, defaults filled in, the PIN's source but not the PIN"
# its output is a configuration the strict parser reads back
"$KL_BIN/keyline-ca" -c check.out config check > check2.out 2>check2.err || fail "config check output does not read back: $(cat check2.err)"
ok "config check's output reads back as a configuration"
# with env: the variable's name is shown, not its value
KEYLINE_PIN=$pin_value "$KL_BIN/keyline-ca" -c "$KL_CONF" config check > env.out || fail "config check with env:"
grep -qx 'pin = env:KEYLINE_PIN ; the source of the PIN, never the PIN' env.out || fail "config check: env: source"
if grep -qF "$pin_value" env.out; then fail "config check printed the PIN from the environment"; fi
ok "config check: env:KEYLINE_PIN shown, its value not"

# a PostgreSQL URL's password is not printed (URI user:password@ and ?password=), the rest is
db_secret=db-secret-$RANDOM
sed "s|^path = .*|url = postgresql://kl:$db_secret@db1.example:5432/keyline?sslmode=verify-full\&password=$db_secret|" "$KL_CONF" > pgpass.conf
"$KL_BIN/keyline-ca" -c pgpass.conf config check > pgpass.out 2>&1 || fail "config check with a PostgreSQL url: $(cat pgpass.out)"
if grep -qF "$db_secret" pgpass.out; then fail "config check printed the store's password"; fi
grep -qx 'url = postgresql://kl@db1.example:5432/keyline?sslmode=verify-full&password= ; its password is not shown' pgpass.out \
  || fail "config check: the url without its password: $(grep url pgpass.out)"
sed "s|^path = .*|url = host=db1.example user=kl password=$db_secret|" "$KL_CONF" > pgbad.conf
run_refused config-check-bad-url 2 "[store] url is not a URL" "$KL_BIN/keyline-ca" -c pgbad.conf config check
if grep -qF "$db_secret" config-check-bad-url.err config-check-bad-url.out; then fail "a url without its scheme was echoed"; fi
ok "config check and a bad url: the store's password is never printed"
# a front end's host has no [store]: config check does not ask for one
python3 -c 'import re,sys; t=open(sys.argv[1]).read(); open(sys.argv[2],"w").write(re.sub(r"(?ms)^\[store\]\n.*?(?=^\[|\Z)", "", t))' "$KL_CONF" nostore.conf
! grep -q '^\[store\]' nostore.conf || fail "nostore.conf still has [store]"
"$KL_BIN/keyline-ca" -c nostore.conf config check >nostore.out 2>&1 || fail "config check without [store]: $(cat nostore.out)"

# a PIN typed where its source belongs is refused without being repeated
sed "s/^pin = .*/pin = $pin_value/" "$KL_CONF" > literal.conf
run_refused config-check-literal-pin 2 "[hsm] pin is not a source" "$KL_BIN/keyline-ca" -c literal.conf config check
if grep -qF "$pin_value" config-check-literal-pin.err config-check-literal-pin.out; then fail "a literal PIN was echoed"; fi

# --- a missing or unreadable PIN source is the PIN error (5), for every command that needs it -
sed 's|^pin = .*|pin = file:/nonexistent|' "$KL_CONF" > nopin.conf
run_refused config-check-no-pin-file 5 "token PIN file /nonexistent: No such file or directory" \
  "$KL_BIN/keyline-ca" -c nopin.conf config check
run_refused ca-create-no-pin-file 5 "token PIN file /nonexistent" \
  "$KL_BIN/keyline-ca" -c nopin.conf ca create --label r2 --template root --subject "CN=r2"
run_refused crl-no-pin-file 5 "token PIN file /nonexistent" "$KL_BIN/keyline-ca" -c nopin.conf crl --issuer field1
sed 's|^pin = .*|pin = env:KL_NO_SUCH_PIN_VARIABLE|' "$KL_CONF" > nopinenv.conf
run_refused crl-unset-pin-variable 5 "environment variable KL_NO_SUCH_PIN_VARIABLE is not set" \
  "$KL_BIN/keyline-ca" -c nopinenv.conf crl --issuer field1
run_refused keyline-cad-no-pin-file 5 "token PIN file /nonexistent" "$KL_BIN/keyline-cad" -c nopin.conf
printf '\n' > empty-pin.txt
chmod 600 empty-pin.txt
sed 's|^pin = .*|pin = file:empty-pin.txt|' "$KL_CONF" > emptypin.conf
run_refused crl-empty-pin-file 5 "is empty" "$KL_BIN/keyline-ca" -c emptypin.conf crl --issuer field1
# a PIN file others can read stays a policy refusal (4)
chmod 644 pin.txt
run_refused config-check-open-pin-file 4 "readable by others" "$KL_BIN/keyline-ca" -c check.conf config check
# commands that do not use the token do not need the PIN
"$KL_BIN/keyline-ca" -c nopin.conf list >/dev/null || fail "list needs no PIN"
ok "list without a usable PIN source still works"

# --- a command-line option that takes a value, given twice: refused (the last one silently won:
# `revoke --serial A --serial B` revoked B alone), before anything is done ---------------------
run_refused ca-create-label-twice 2 "option '--label' given twice" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" ca create --label twice1 --template root --subject "CN=Twice" --label twice2
kca ca list > cas.out 2>&1 || fail "ca list: $(cat cas.out)"
if grep -q twice cas.out; then fail "a CA was made from a refused command line: $(cat cas.out)"; fi
run_refused config-twice 2 "option '--config' given twice" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" --config nopin.conf list
run_refused short-and-long-twice 2 "option '--issuer' given twice" \
  "$KL_BIN/keyline-ca" -c "$KL_CONF" crl -i root1 --issuer field1
kca list --json --json >/dev/null || fail "a flag given twice (it takes no value) is still accepted"
ok "an option given twice with values: exit 2, named; a flag twice: accepted"
