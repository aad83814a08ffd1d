# MCUboot's own imgtool checks what keyline-ca sign-image made in the token (issue 16 item 2):
# `imgtool verify` with the firmware key's public key, and `imgtool dumpinfo`'s reading of the
# header and TLVs. imgtool is not packaged for Debian 12: point KL_IMGTOOL at imgtool.py of an
# MCUboot checkout (scripts/imgtool.py; it needs python3-cryptography, -click, -intelhex and
# -cbor2) or put `imgtool` on PATH. A compatibility check run by hand (docs/firmware.md), not
# part of the suite: CI cannot install imgtool. tests/data/firmware holds imgtool-made vectors
# that unit.image checks everywhere.
source "$KL_SRC/tests/lib/common.sh"
source "$KL_SRC/tests/lib/firmware.sh"
if [ -n "${KL_IMGTOOL:-}" ]; then
  imgtool() { /usr/bin/python3 "$KL_IMGTOOL" "$@"; }
elif ! command -v imgtool >/dev/null; then
  echo "FAIL: no imgtool (set KL_IMGTOOL=/path/to/mcuboot/scripts/imgtool.py)" >&2
  exit 1
fi
imgtool version >/dev/null 2>&1 || fail "imgtool does not run"
make_hierarchy
kca ca create --label fw1 --template firmware --issuer root1 --subject "CN=Firmware,O=Keyline Test" >fw1.pem 2>/dev/null
openssl x509 -in fw1.pem -noout -pubkey >fw1.pub
kca ca create --label fw2 --template firmware --issuer root1 --subject "CN=Other,O=Keyline Test" >fw2.pem 2>/dev/null
openssl x509 -in fw2.pem -noout -pubkey >fw2.pub
fw_payload app.bin 5000
for args in "--version 1.2.3+4 --security-counter 7 --header-size 0x200 --pad-header --align 8" \
            "--version 0.0.1 --pad-header" "--version 255.255.65535+4294967295 --security-counter 4294967295 --header-size 0x400 --pad-header --align 32"; do
  # shellcheck disable=SC2086
  kca sign-image --key fw1 --in app.bin --out app.img $args 2>/dev/null || fail "sign-image $args"
  imgtool verify -k fw1.pub app.img >verify.out 2>&1 || { cat verify.out; fail "imgtool verify ($args)"; }
  grep -q "Image was correctly validated" verify.out || fail "imgtool: $(cat verify.out)"
  v=$(echo "$args" | sed 's/--version \([^ ]*\).*/\1/')
  case $v in *+*) ;; *) v="$v+0" ;; esac
  grep -q "Image version: $v" verify.out || fail "imgtool reads version $(grep version verify.out), want $v"
  ! imgtool verify -k fw2.pub app.img >/dev/null 2>&1 || fail "imgtool verified with the wrong key"
  imgtool dumpinfo app.img >dump.out 2>&1 || fail "imgtool dumpinfo"
  grep -q "KEYHASH" dump.out && grep -q "ECDSASIG" dump.out && grep -q "SHA256" dump.out || fail "dumpinfo TLVs"
  ok "imgtool verify and dumpinfo accept sign-image $args"
done
fw_flip app.img 2000 bad.img
! imgtool verify -k fw1.pub bad.img >/dev/null 2>&1 || fail "imgtool verified a flipped image"
ok "imgtool refuses a flipped image"
