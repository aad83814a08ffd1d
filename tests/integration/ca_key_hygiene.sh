#!/usr/bin/env bash
# CA key hygiene (issue 11 item 6): keys keyline makes are sensitive, never extractable and not
# modifiable, their public halves verify only; a CA key that is extractable or not sensitive
# (here: the CA's token key replaced by an imported software key under the same label, as
# someone holding the PIN could) is refused at load with a clear error, by keyline-ca and
# keyline-cad alike.
set -euo pipefail
BIN=${KL_BUILD:?KL_BUILD not set}/bin
D=${KL_TEST_DIR:?run under tests/lib/with-token.sh}
kca() { "$BIN/keyline-ca" -c "$KL_CONF" "$@"; }
die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
p11() { pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" "$@"; }

kca ca create --label root1 --template root --subject "CN=Hygiene Root" >/dev/null
kca ca create --label field1 --template field-ca --subject "CN=Hygiene Field" --issuer root1 >/dev/null
attrs=$(p11 --list-objects --type privkey --label field1 2>/dev/null)
grep -q "Access: *sensitive, always sensitive, never extractable" <<<"$attrs" \
    || die "field1 key access flags: $attrs"
pub=$(p11 --list-objects --type pubkey --label field1 2>/dev/null)
grep -q "Usage: *verify" <<<"$pub" || die "public half usage: $pub"
grep -Eq "Usage:.*(encrypt|wrap)" <<<"$pub" && die "public half may encrypt/wrap: $pub"
ok "CA keys: sensitive, never extractable; public halves verify only"

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/dev.key" \
    -subj "/CN=dev/serialNumber=HW1" -out "$D/dev.csr" 2>/dev/null
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --device-id HW1 >/dev/null \
    || die "issue with a proper key"

# replace field1's private key by an imported (extractable, not sensitive) software key
p11 --delete-object --type privkey --label field1 >/dev/null 2>&1 || die "delete key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -outform DER -out "$D/soft.der" 2>/dev/null
p11 --write-object "$D/soft.der" --type privkey --label field1 --usage-sign >/dev/null 2>&1 \
    || die "import software key"
rc=0; kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --device-id HW1 \
    2>"$D/err" >/dev/null || rc=$?
[ "$rc" = 4 ] || die "issue with an imported key: exit $rc ($(cat "$D/err"))"
grep -q "CA key 'field1' on the token is .*refusing to sign with it" "$D/err" || die "text: $(cat "$D/err")"
rc=0; kca crl --issuer field1 2>"$D/err" >/dev/null || rc=$?
[ "$rc" = 4 ] || die "crl with an imported key: exit $rc"
ok "an imported (extractable or not sensitive) CA key is refused at load (issue, crl)"
