# Officer tokens for the ceremony tests (sourced after common.sh; docs/internals/ceremony.md):
# each officer has a SoftHSM token of their own with one key, and a certificate that openssl
# makes with that key through libp11's pkcs11 engine (engine.cnf in the test folder).

# officer_engine_conf: engine.cnf, OpenSSL with libp11's engine over $KL_MODULE
officer_engine_conf() {
  local engine
  engine=$(find /usr/lib -name pkcs11.so -path '*engines-3*' | head -1)
  [ -n "$engine" ] || fail "libp11's OpenSSL engine is missing (scripts/deps: libengine-pkcs11-openssl)"
  cat > engine.cnf <<CNF
openssl_conf = init
[init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine
MODULE_PATH = $KL_MODULE
init = 0
CNF
}

# officer_token NAME PIN TOOL KEYTYPE: a token "officer-NAME" with key "NAME" made by TOOL
# (pkcs11-tool with KEYTYPE, or p11tool: EC P-384), and NAME.pem
officer_token() {
  local name=$1 pin=$2 tool=$3
  [ -e engine.cnf ] || officer_engine_conf
  softhsm2-util --init-token --free --label "officer-$name" --pin "$pin" --so-pin "$KL_SO_PIN" >/dev/null
  case $tool in
    pkcs11-tool) pkcs11-tool --module "$KL_MODULE" --token-label "officer-$name" --login --pin "$pin" \
                   --keypairgen --key-type "$4" --label "$name" --id 01 >/dev/null 2>&1 ;;
    p11tool) GNUTLS_PIN=$pin p11tool --provider "$KL_MODULE" --login --generate-privkey=ECDSA \
               --curve=secp384r1 --label="$name" "pkcs11:token=officer-$name" >/dev/null 2>&1 ;;
  esac
  OFFICER_PIN=$pin OPENSSL_CONF=$PWD/engine.cnf openssl req -new -x509 -engine pkcs11 -keyform engine \
    -key "pkcs11:token=officer-$name;object=$name;type=private" -passin env:OFFICER_PIN \
    -subj "/CN=$name/O=Keyline Officers" -days 365 -out "$name.pem" 2>/dev/null
  openssl x509 -in "$name.pem" -noout >/dev/null || fail "no certificate for officer $name"
}
