#!/usr/bin/env bash
# keyline-ca ocsp-signer new: a CA whose delegated OCSP signer was revoked (its key thought
# compromised) gets a new one, with keyline-cad running, and no restart:
#   - refused while the signer is valid and not revoked (exit 4, naming --replace), nothing
#     changed; usage errors exit 2, an unknown CA 6; under [ceremony] quorum it is a ceremony;
#   - after the revocation the answers are signed by field1 itself (ocsp_signer_revoked.sh),
#     and maintain names the command;
#     after the command, by the new signer (nonce-less pre-produced answers and live ones),
#     which openssl ocsp verifies against the root; the new certificate's key is a new one
#     (another SPKI), made in the token sensitive and never extractable (pkcs11-tool), and the
#     old private key is gone from the token (one key labelled field1.ocsp, another CKA_ID);
#   - the audit log has the entry ocsp-signer-new (not ca-recert, a renewal of the same key:
#     est_ocsp_renew.sh) naming both serials, which audit verify accepts; run again, it is
#     refused (the new signer is current); with --replace the current signer's certificate is
#     revoked (superseded, in the CRL published at once) and the answers move to a third key;
#     an expired signer is replaced without --replace, revoked on the way (nothing renews it);
#     each new key has its ocsp-signer-new entry, and audit verify accepts the log.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$(dirname "$0")/../lib/ocsp_signer.sh"

ocsp_signer_setup HWSN01

# the certificate an answer carries (its delegated signer's), PEM on stdout; empty when none
signer_cert() {
    openssl ocsp -respin "$1.der" -noverify -resp_text 2>/dev/null |
        awk '/-----BEGIN CERTIFICATE-----/ {c = 1} c {print} /-----END CERTIFICATE-----/ {exit}'
}
signer_serial() {
    local pem
    pem=$(signer_cert "$1")
    [ -z "$pem" ] || openssl x509 -noout -serial <<< "$pem" | cut -d= -f2
}
spki() { openssl x509 -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64; }
# wait_signer WANT NAME: until both kinds of answer are signed by serial WANT ("" = the CA)
wait_signer() {
    local want=$1 name=$2
    for _ in $(seq 1 50); do
        query "$D/$name" -no_nonce
        [ "$(signer_serial "$D/$name")" = "$want" ] && break
        sleep 0.2
    done
    [ "$(signer_serial "$D/$name")" = "$want" ] ||
        die "nonce-less answer not signed by '${want:-field1}' after 10 s: $(cat "$D/$name")"
    query "$D/$name-live"
    [ "$(signer_serial "$D/$name-live")" = "$want" ] ||
        die "live answer not signed by '${want:-field1}': $(cat "$D/$name-live")"
}
# the private keys labelled field1.ocsp on the token, as pkcs11-tool lists them
p11_signer_keys() {
    pkcs11-tool --module "$KL_MODULE" --token-label keyline-test --login --pin "$KEYLINE_PIN" \
        --list-objects --type privkey 2>/dev/null |
        awk '/^Private Key Object/ {k = ""} {k = k $0 "\n"} /Access:/ {if (k ~ /label: *field1\.ocsp\n/) printf "%s", k}'
}
p11_id() { grep -o 'ID: *[0-9a-f]*' | awk '{print $2}'; }
signer_store_serial() { kca ca cert --label field1.ocsp | openssl x509 -noout -serial | cut -d= -f2; }

query "$D/o0" -no_nonce
sig0=$(signer_serial "$D/o0")
[ -n "$sig0" ] || die "the answer carries no delegated signer: $(cat "$D/o0")"
spki0=$(signer_cert "$D/o0" | spki)
id0=$(p11_signer_keys | p11_id)
[ -n "$id0" ] || die "no key field1.ocsp on the token"
ok "answers signed by field1's delegated signer $sig0"

# --- refusals: nothing changes ---
rc=0
kca ocsp-signer new --issuer field1 > /dev/null 2> "$D/r1.err" || rc=$?
[ "$rc" = 4 ] || die "a new signer while the current one is valid: exit $rc (want 4): $(cat "$D/r1.err")"
grep -q -- "--replace" "$D/r1.err" || die "the refusal does not name --replace: $(cat "$D/r1.err")"
[ "$(signer_store_serial)" = "$sig0" ] && [ "$(p11_signer_keys | p11_id)" = "$id0" ] ||
    die "a refused ocsp-signer new changed the signer"
for args in "" "--issuer" "--issuer field1 extra" "--issuer field1 --bogus" \
    "--issuer field1 --issuer root1" "--issuer field1.ocsp"; do
    rc=0
    # shellcheck disable=SC2086 # the words are the arguments
    kca ocsp-signer new $args > /dev/null 2> "$D/u.err" || rc=$?
    [ "$rc" = 2 ] || die "ocsp-signer new $args: exit $rc (want 2): $(cat "$D/u.err")"
done
rc=0
kca ocsp-signer new --issuer nosuch > /dev/null 2> "$D/u.err" || rc=$?
[ "$rc" = 6 ] || die "ocsp-signer new for an unknown CA: exit $rc (want 6): $(cat "$D/u.err")"
rc=0
kca ocsp-signer frob > /dev/null 2> "$D/u.err" || rc=$?
[ "$rc" = 2 ] || die "ocsp-signer frob: exit $rc (want 2)"
kca ocsp-signer --help | grep -q "ocsp-signer new --issuer L" || die "ocsp-signer --help"
kca ocsp-signer new --help | grep -q "replace" || die "ocsp-signer new --help"
# a quorum makes it a ceremony: the plain command refuses and names it
cp "$KL_CONF" "$D/quorum.conf"
printf '\n[ceremony]\nquorum = 1\n' >> "$D/quorum.conf"
rc=0
"$BIN/keyline-ca" -c "$D/quorum.conf" ocsp-signer new --issuer field1 --replace > /dev/null \
    2> "$D/q.err" || rc=$?
[ "$rc" = 4 ] && grep -q "ceremony propose ocsp-signer new" "$D/q.err" ||
    die "under a quorum: exit $rc: $(cat "$D/q.err")"
[ "$(signer_store_serial)" = "$sig0" ] || die "a refused ocsp-signer new changed the signer"
ok "refused while current (exit 4, --replace named), usage 2, unknown CA 6, a ceremony under a quorum"

# --- the signer revoked: field1 signs ---
kca revoke --serial "$sig0" --reason keyCompromise >/dev/null 2>&1
wait_signer "" o1
kca maintain --issuer field1 --dry-run 2>/dev/null | grep -q \
    "OCSP signer revoked, never renewed: field1 signs its own answers until keyline-ca ocsp-signer new --issuer field1" ||
    die "maintain does not point at ocsp-signer new: $(kca maintain --issuer field1 --dry-run 2>&1)"
ok "signer $sig0 revoked: answers signed by field1 itself; maintain names ocsp-signer new"

# --- a new signer, keyline-cad running ---
kca ocsp-signer new --issuer field1 --out "$D/new1.pem" 2> "$D/new1.err" ||
    die "ocsp-signer new: $(cat "$D/new1.err")"
sig1=$(openssl x509 -in "$D/new1.pem" -noout -serial | cut -d= -f2)
[ "$sig1" != "$sig0" ] && [ "$(signer_store_serial)" = "$sig1" ] ||
    die "the store's signer is not the new certificate $sig1"
spki1=$(spki < "$D/new1.pem")
[ "$spki1" != "$spki0" ] || die "the new signer certificate certifies the revoked key again"
openssl x509 -in "$D/new1.pem" -noout -text | grep -q "OCSP No Check" ||
    die "the new certificate is not an ocsp-signer one: $(openssl x509 -in "$D/new1.pem" -noout -text)"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" -purpose ocsphelper "$D/new1.pem" \
    >/dev/null || die "the new signer's certificate does not verify"
grep -q "old certificate $sig0 was revoked already, its key destroyed" "$D/new1.err" ||
    die "ocsp-signer new said: $(cat "$D/new1.err")"
wait_signer "$sig1" o2
[ "$(signer_cert "$D/o2" | spki)" = "$spki1" ] && [ "$(signer_cert "$D/o2-live" | spki)" = "$spki1" ] ||
    die "the answers carry another key than the new signer's"
ok "keyline-cad (not restarted) signs with the new signer $sig1 (a new key), openssl ocsp verifies"

keys=$(p11_signer_keys)
[ "$(grep -c "label:" <<< "$keys")" = 1 ] || die "not one key field1.ocsp on the token: $keys"
id1=$(p11_id <<< "$keys")
[ -n "$id1" ] && [ "$id1" != "$id0" ] || die "the key field1.ocsp has the old CKA_ID $id0: $keys"
grep -q "Access:.*sensitive.*never extractable" <<< "$keys" ||
    die "the new signer key is not sensitive and never extractable: $keys"
grep -q "Access:.*local" <<< "$keys" || die "the new signer key was not generated in the token: $keys"
ok "the revoked key is gone; the new one (CKA_ID $id1) is sensitive, never extractable, local"

kca audit list > "$D/audit.txt"
grep -q " ocsp-signer-new label=field1.ocsp issuer=field1 serial=$sig1 (new key) old-serial=$sig0 old-key=destroyed der-sha256=[0-9a-f]\{64\} " "$D/audit.txt" ||
    die "no ocsp-signer-new audit entry for the new signer: $(grep "field1.ocsp" "$D/audit.txt")"
! grep " ca-recert " "$D/audit.txt" | grep -q "serial=$sig1" ||
    die "the new key is audited as a renewal: $(grep " ca-recert " "$D/audit.txt")"
kca audit verify > /dev/null || die "audit verify"
ok "audit: ocsp-signer-new names the old and new serials; audit verify accepts it"

# --- the new signer is current: refused again; --replace supersedes it ---
rc=0
kca ocsp-signer new --issuer field1 > /dev/null 2> "$D/r2.err" || rc=$?
[ "$rc" = 4 ] || die "a second new signer without --replace: exit $rc: $(cat "$D/r2.err")"
kca ocsp-signer new --issuer field1 --replace --out "$D/new2.pem" 2> "$D/new2.err" ||
    die "ocsp-signer new --replace: $(cat "$D/new2.err")"
sig2=$(openssl x509 -in "$D/new2.pem" -noout -serial | cut -d= -f2)
[ "$(spki < "$D/new2.pem")" != "$spki1" ] || die "--replace kept the key"
grep -q "old certificate $sig1 revoked now (superseded), its key destroyed" "$D/new2.err" ||
    die "ocsp-signer new --replace said: $(cat "$D/new2.err")"
kca crl --issuer field1 --out "$D/field1.crl" 2>/dev/null
openssl crl -in "$D/field1.crl" -noout -text | grep -A4 "Serial Number: $sig1" | grep -q "Superseded" ||
    die "the replaced signer $sig1 is not in field1's CRL as superseded"
wait_signer "$sig2" o3
ok "--replace: $sig1 revoked (superseded, in the CRL), answers signed by $sig2"

est_stop
! grep -qi "signing the OCSP response in the HSM failed\|refusing to guess" "$D/cad.log" ||
    die "keyline-cad failed to sign with a signer: $(grep -i "HSM failed\|guess" "$D/cad.log")"
ok "keyline-cad never signed with a stale key"

# --- under a quorum: a ceremony, approved by an officer with a key on a token of their own ---
fail() { die "$@"; }
. "$KL_SRC/tests/lib/officer.sh"
cd "$D"
officer_token alice 1111 pkcs11-tool EC:prime256v1
cp "$KL_CONF" plain.conf
printf '\n[ceremony]\nquorum = 1\n' >> "$KL_CONF"
kca officer add --name alice --cert alice.pem >/dev/null
rc=0
kca ceremony propose ocsp-signer new --issuer field1 --replace maybe > /dev/null 2> u.err || rc=$?
[ "$rc" = 2 ] || die "a ceremony with --replace maybe: exit $rc: $(cat u.err)"
id=$(kca ceremony propose ocsp-signer new --issuer field1 --replace yes)
OFFICER_PIN=1111 kca ceremony approve --id "$id" --token "pkcs11:token=officer-alice;object=alice" \
    --pin env:OFFICER_PIN > /dev/null 2>&1 || die "ceremony approve"
kca ceremony run --id "$id" > /dev/null 2> run.err || die "ceremony run: $(cat run.err)"
sig3=$(signer_store_serial)
[ "$sig3" != "$sig2" ] || die "the ceremony left the signer as it was"
kca show --serial "$sig2" | grep -q "^status: *revoked" || die "the ceremony did not revoke $sig2"
kca ceremony export --id "$id" --out t.txt
grep -q "old-serial.*$sig2" t.txt && grep -q "serial.*$sig3" t.txt ||
    die "the transcript lacks the serials: $(cat t.txt)"
ok "under [ceremony] quorum = 1: ocsp-signer new --replace yes as a ceremony ($sig2 -> $sig3)"

# --- an expired signer (31 days on, its 30 are over): replaced without --replace, and revoked
# (superseded) on the way, so that nothing renews its destroyed key (an expired signer is due) ---
command -v faketime >/dev/null || die "faketime is not installed (scripts/deps)"
faketime -f "+31d" "$BIN/keyline-ca" -c plain.conf ocsp-signer new --issuer field1 > new4.pem \
    2> new4.err || die "ocsp-signer new for an expired signer: $(cat new4.err)"
grep -q "old certificate $sig3 revoked now (superseded), its key destroyed" new4.err ||
    die "ocsp-signer new (expired) said: $(cat new4.err)"
kca show --serial "$sig3" | grep -q "^status: *revoked" || die "the expired signer $sig3 is not revoked"
[ "$(signer_store_serial)" = "$(openssl x509 -in new4.pem -noout -serial | cut -d= -f2)" ] ||
    die "the store's signer is not the one made for the expired one"
ok "an expired signer: replaced without --replace, revoked (superseded) so that nothing renews it"

# each new key (revoked, --replace, the ceremony, expired) has its ocsp-signer-new entry, and the
# log vouches for the record's certificate (the latest one's hash)
[ "$(kca audit list | grep -c " ocsp-signer-new label=field1.ocsp ")" = 4 ] ||
    die "not 4 ocsp-signer-new entries: $(kca audit list | grep "field1.ocsp")"
kca audit verify > /dev/null || die "audit verify after four new signers"
ok "four new signers, four ocsp-signer-new entries; audit verify"
