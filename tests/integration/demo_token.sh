# scripts/demo's token set-up (scripts/token-init; issue 10, defect 12): both PINs kept in the
# state folder, mode 0600, and never on a command line. Every execve of the set-up is traced
# with strace: no argv may hold either PIN. Then the token works with the kept PINs: keyline-ca
# logs in with pin = file:pin, and the SO PIN sets a new user PIN.
source "$KL_SRC/tests/lib/common.sh"

st=$KL_TEST_DIR/demo-state
strace -f -qq -e trace=execve -s 65536 -o exec.log "$KL_SRC/scripts/token-init" "$st" demo-token >init.out ||
  { cat init.out; fail "scripts/token-init failed"; }
grep -qE 'execve\("[^"]*(p11tool|softhsm2-util|pkcs11-tool)"' exec.log ||
  fail "strace saw no token tool run: the trace is not working"
[ "$(stat -c %a "$st")" = 700 ] || fail "state folder is $(stat -c %a "$st"), not 700"
for f in pin so-pin; do
  [ -f "$st/$f" ] || fail "no $f file in the state folder"
  [ "$(stat -c %a "$st/$f")" = 600 ] || fail "$f is mode $(stat -c %a "$st/$f"), not 0600"
  if grep -qF "$(<"$st/$f")" exec.log; then
    grep -F "$(<"$st/$f")" exec.log >&2
    fail "the $f appeared in a command line"
  fi
  grep -qxE '[0-9a-f]{32}' "$st/$f" || fail "$f is not 128 random bits in hex"
done
[ "$(<"$st/pin")" != "$(<"$st/so-pin")" ] || fail "user and SO PIN are the same"
ok "pin and so-pin kept 0600 in a 0700 folder; neither in any argv ($(grep -c execve exec.log) execs traced)"

# The token works with the kept user PIN (keyline reads it from the file).
cat > demo.conf <<CONF
[hsm]
module = $KL_MODULE
token = pkcs11:token=demo-token
pin = file:$st/pin
softhsm2-conf = $st/softhsm2.conf
[store]
path = demo.db
[ca]
templates = $KL_SRC/templates
crl-url = http://127.0.0.1:8080/crl/{issuer}.crl
CONF
"$KL_BIN/keyline-ca" -c demo.conf ca create --label root1 --template root --subject "CN=Demo Token Root" >/dev/null 2>err.txt ||
  { cat err.txt; fail "keyline-ca cannot use the token with state/pin"; }
# The kept SO PIN can set a new user PIN (what a thrown-away SO PIN made impossible).
openssl rand -hex 16 > new-pin
GNUTLS_SO_PIN=$(<"$st/so-pin") GNUTLS_PIN=$(<new-pin) SOFTHSM2_CONF=$st/softhsm2.conf \
  p11tool --batch --provider "$KL_MODULE" --initialize-pin "pkcs11:token=demo-token" >/dev/null 2>&1 ||
  fail "the SO PIN in state/so-pin cannot reset the user PIN"
cp new-pin "$st/pin"
"$KL_BIN/keyline-ca" -c demo.conf ca create --label root2 --template root --subject "CN=Demo Token Root 2" >/dev/null 2>err.txt ||
  { cat err.txt; fail "the reset user PIN does not log in"; }
ok "the token logs in with state/pin, and state/so-pin resets the user PIN"

# Run again on the same folder: the PINs are reused, not replaced.
cp "$st/so-pin" so-pin.before
"$KL_SRC/scripts/token-init" "$st" demo-token2 >/dev/null
cmp -s so-pin.before "$st/so-pin" || fail "a second run replaced the SO PIN"
ok "a second run keeps the PIN files"
