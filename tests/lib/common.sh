# Shared helpers for integration tests (sourced). Expects with-token.sh's environment.
set -euo pipefail
KL_BIN=${KL_BUILD:?KL_BUILD not set}/bin
cd "$KL_TEST_DIR"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
kca() { "$KL_BIN/keyline-ca" -c "$KL_CONF" "$@"; }
# expect_fail DESCRIPTION CMD...: the command must exit non-zero and print one line on stderr
expect_fail() {
  local what=$1; shift
  if "$@" >/tmp/kl-out.$$ 2>/tmp/kl-err.$$; then
    cat /tmp/kl-out.$$ /tmp/kl-err.$$ >&2; rm -f /tmp/kl-out.$$ /tmp/kl-err.$$
    fail "$what: succeeded but should have failed"
  fi
  local msg; msg=$(cat /tmp/kl-err.$$); rm -f /tmp/kl-out.$$ /tmp/kl-err.$$
  [ -n "$msg" ] || fail "$what: failed without a message"
  echo "ok - $what refused: $msg"
}
# make_key TYPE OUT: software key of ec-p256|ec-p384|rsa-3072|rsa-2048
make_key() {
  case $1 in
    ec-p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" 2>/dev/null ;;
    ec-p384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$2" 2>/dev/null ;;
    rsa-3072) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$2" 2>/dev/null ;;
    rsa-2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2" 2>/dev/null ;;
    *) fail "make_key: $1" ;;
  esac
}
# standard hierarchy: root1 (ec-p384) -> factory1 (ec-p256), field1 (ec-p256)
make_hierarchy() {
  kca ca create --label root1 --template root --subject "CN=Test Root,O=Keyline Test" --key-type ec-p384 >root1.pem
  kca ca create --label factory1 --template factory-ca --issuer root1 --subject "CN=Test Factory CA,O=Keyline Test" >factory1.pem
  kca ca create --label field1 --template field-ca --issuer root1 --subject "CN=Test Field CA,O=Keyline Test" >field1.pem
}
# cad_conf_ldevid ISSUER [LINE...]: keyline-cad's part of $KL_CONF: [cad] on cad.sock (and the
# LINEs, e.g. "socket-mode = 0600"), the test user as role est, and for it profile ldevid
# (device-ldevid under ISSUER)
cad_conf_ldevid() {
  local issuer=$1; shift
  {
    printf '\n[cad]\nsocket = cad.sock\n'
    [ $# = 0 ] || printf '%s\n' "$@"
    cat <<CONF

[role est]
users = $(id -u)

[profile ldevid]
issuer = $issuer
template = device-ldevid
clients = est
CONF
  } >>"$KL_CONF"
}
