#!/usr/bin/env bash
# A delegated OCSP signer whose certificate is revoked (keyline-ca revoke --serial, e.g. its key
# is thought compromised) signs no more answers. It carries id-pkix-ocsp-nocheck (RFC 6960
# 4.2.2.2.1), so no relying party would ever see its revocation: keyline-cad has to stop using
# it. Checked with openssl ocsp against the root:
#   - before: answers (pre-produced and live) are signed by "field1 OCSP signer";
#   - after the revocation: the pre-produced answers are signed again, by field1 itself, within
#     a few seconds, and live answers (with a nonce) too; they still verify and say good;
#   - the revoked signer is never renewed (its key is not certified again), and it does not make
#     the commands that renew signers fail: `keyline-ca crl` 20 days later (faketime: the signer
#     is past half its 30 days) and `keyline-ca ca retire` succeed and leave it as it is.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$(dirname "$0")/../lib/ocsp_signer.sh"

ocsp_signer_setup HWSR01

# the serial of the certificate an answer carries (its signer's), empty when none
signer_serial() {
    openssl ocsp -respin "$1.der" -noverify -resp_text 2>/dev/null |
        awk '/^Certificate:/ {c = 1} c && /Serial Number:/ {getline; gsub(/[ :]/, ""); print toupper($0); exit}'
}

query "$D/o0" -no_nonce
sig=$(signer_serial "$D/o0")
[ -n "$sig" ] || die "the answer carries no delegated signer: $(cat "$D/o0")"
grep -q "Responder Id: CN = field1 OCSP signer\|Responder Id: [0-9A-F]\{40\}$" "$D/o0" || die "responder: $(cat "$D/o0")"
ok "answers signed by field1's delegated signer $sig"

kca revoke --serial "$sig" --reason keyCompromise >/dev/null
[ "$(kca list --json | python3 -c "import json,sys; print([c['status'] for c in json.load(sys.stdin) if c['serial'] == '$sig'][0])")" = revoked ] ||
    die "the signer's certificate is not revoked in the store"

# the pre-producer checks its signers every poll: give it 10 s
for _ in $(seq 1 50); do
    query "$D/o1" -no_nonce
    [ "$(signer_serial "$D/o1")" != "$sig" ] && break
    sleep 0.2
done
[ "$(signer_serial "$D/o1")" != "$sig" ] ||
    die "a nonce-less answer is still signed by the revoked signer after 10 s: $(cat "$D/o1")"
ok "nonce-less (pre-produced) answer no longer signed by the revoked signer"

query "$D/o2"
[ "$(signer_serial "$D/o2")" != "$sig" ] || die "a live answer is signed by the revoked signer: $(cat "$D/o2")"
grep -q "Responder Id: CN = field1 OCSP signer" "$D/o2" && die "a live answer names the revoked signer: $(cat "$D/o2")"
ok "live answer (nonce) signed by field1 itself, verifies"

est_stop
command -v faketime >/dev/null || die "faketime is not installed (scripts/deps)"
faketime -f "+20d" "$BIN/keyline-ca" -c "$KL_CONF" crl --issuer field1 > /dev/null 2> "$D/crl.err" ||
    die "keyline-ca crl 20 days later: $(cat "$D/crl.err")"
grep -q "renewed the OCSP signer" "$D/crl.err" && die "the revoked signer was renewed: $(cat "$D/crl.err")"
kca ca retire --label field1 > /dev/null 2> "$D/retire.err" || die "ca retire: $(cat "$D/retire.err")"
[ "$(kca ca cert --label field1.ocsp | openssl x509 -noout -serial | cut -d= -f2)" = "$sig" ] ||
    die "the revoked signer got a new certificate"
ok "the revoked signer is not renewed: keyline-ca crl (past its half-life) and ca retire succeed"
