#!/usr/bin/env bash
# Run a command with a throwaway SoftHSM2 token and a matching keyline.conf.
#
#   tests/lib/with-token.sh CMD [ARGS...]
#
# Exports for CMD:
#   KL_TEST_DIR      temp dir (removed afterwards unless KL_KEEP=1)
#   SOFTHSM2_CONF    private softhsm2.conf (token store inside KL_TEST_DIR)
#   KL_MODULE        PKCS#11 module path
#   KL_TOKEN_URI     pkcs11:token=keyline-test
#   KEYLINE_PIN      user PIN (the config reads it with pin = env:KEYLINE_PIN)
#   KL_SO_PIN        SO PIN
#   KL_CONF          $KL_TEST_DIR/keyline.conf ([hsm], [store], [ca] templates = repo templates/)
#   KL_SRC           repository root
#   KL_ASAN_SLOW_UNWIND=1 (set by a test's ENVIRONMENT): under the sanitizers, full malloc
#                    stacks, so that SoftHSM's own EdDSA leak meets its suppression
#                    (tests/lsan.supp, hsm_ed_sign) and a leak of ours shows our frames
set -euo pipefail
if [ -n "${KL_ASAN_SLOW_UNWIND:-}" ] && [ -n "${ASAN_OPTIONS:-}" ]; then
  export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"
fi
here=$(cd "$(dirname "$0")" && pwd)
export KL_SRC=$(cd "$here/../.." && pwd)
export KL_TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/keyline-test.XXXXXX")
cleanup() { [ "${KL_KEEP:-0}" = 1 ] || rm -rf "$KL_TEST_DIR"; }
trap cleanup EXIT
export KL_MODULE=${KL_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
export KEYLINE_PIN=1234
export KL_SO_PIN=5678
export KL_TOKEN_URI="pkcs11:token=keyline-test"
mkdir -p "$KL_TEST_DIR/tokens"
cat > "$KL_TEST_DIR/softhsm2.conf" <<CONF
directories.tokendir = $KL_TEST_DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$KL_TEST_DIR/softhsm2.conf"
softhsm2-util --init-token --free --label keyline-test --pin "$KEYLINE_PIN" --so-pin "$KL_SO_PIN" >/dev/null
export KL_CONF="$KL_TEST_DIR/keyline.conf"
cat > "$KL_CONF" <<CONF
[hsm]
module = $KL_MODULE
token = $KL_TOKEN_URI
pin = env:KEYLINE_PIN

[store]
path = keyline.db

[ca]
templates = $KL_SRC/templates
crl-url = http://127.0.0.1:8080/crl/{issuer}.crl
ocsp-url = http://127.0.0.1:8080/ocsp
CONF
"$@"
