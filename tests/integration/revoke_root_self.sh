#!/usr/bin/env bash
# A root cannot be revoked in its own CRL: a trust anchor is not validated (RFC 5280 6.1), so no
# relying party ever looks for it there, and such a revocation would only make the officer think
# the root is gone. keyline-ca revoke refuses the self-signed certificate of a root CA (exit 4),
# naming what to do instead (keyline-ca ca retire, remove it from the trust anchors), in every
# form, dry run or not:
#   - --serial ROOT: refused; the root stays valid, no revocation audited, no CRL published;
#   - --from FILE naming a leaf and the root: the list refused whole (all or nothing), naming
#     the root's line, the leaf stays valid;
#   - --issued-by root1 --between a period over the root's own making: refused whole, saying to
#     start the period after it; a period after it revokes what root1 issued then.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

revokes() { kca audit list 2>/dev/null | grep -c " revoke " || true; }
status_of() { kca show --serial "$1" | sed -n 's/^status: *//p'; }
crls() { kca audit list 2>/dev/null | grep -c " crl " || true; }
# refused WHAT CMD...: exit 4, the message naming the root, ca retire and the trust anchors
refused() {
    local what=$1 rc=0
    shift
    kca "$@" > "$D/out" 2> "$D/err" || rc=$?
    [ "$rc" = 4 ] || die "$what: exit $rc, expected 4: $(cat "$D/out" "$D/err")"
    grep -q "self-signed certificate of root CA 'root1'" "$D/err" || die "$what: $(cat "$D/err")"
    grep -q "keyline-ca ca retire --label root1" "$D/err" || die "$what: $(cat "$D/err")"
    grep -q "trust anchors" "$D/err" || die "$what: $(cat "$D/err")"
}

t0=$(date -u +%Y-%m-%dT%H:%M:%SZ)
est_setup_ca
root=$(serial_of "$D/root1.pem")
new_csr dev "/CN=root-self-dev"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/dev.pem" >/dev/null
leaf=$(serial_of "$D/dev.pem")
n0=$(revokes)
c0=$(crls)

refused "--serial" revoke --serial "$root" --reason keyCompromise
refused "--serial --dry-run" revoke --serial "$root" --dry-run
[ "$(status_of "$root")" = valid ] || die "the root's certificate is $(status_of "$root")"
[ "$(revokes)" = "$n0" ] || die "a revocation was audited"
[ "$(crls)" = "$c0" ] || die "a CRL was published"
ok "revoke --serial of the root's own certificate: refused (exit 4), nothing revoked or published"

# the root on line 4 (its second item): the refusal names the line, as the list's other errors do
printf '# leaf first\n%s\n\nserial:%s  # the root\n' "$leaf" "$(tr A-F a-f <<< "$root")" > "$D/list.txt"
refused "--from" revoke --from "$D/list.txt"
grep -q "^keyline-ca: $D/list.txt line 4: revoking $root refused" "$D/err" ||
    die "--from: the refusal does not name line 4: $(cat "$D/err")"
refused "--from --dry-run" revoke --from "$D/list.txt" --dry-run
grep -q "list.txt line 4: " "$D/err" || die "--from --dry-run: $(cat "$D/err")"
[ "$(status_of "$leaf")" = valid ] || die "the list's leaf is $(status_of "$leaf")"
[ "$(status_of "$root")" = valid ] || die "the root's certificate is $(status_of "$root")"
[ "$(revokes)" = "$n0" ] || die "a revocation was audited"
ok "revoke --from naming the root: the list refused whole, its leaf still valid"

refused "--issued-by --between" revoke --issued-by root1 --between "$t0" "$(date -u +%Y-%m-%d)"
grep -q "start it after that" "$D/err" || die "--between: $(cat "$D/err")"
refused "--issued-by --between --dry-run" revoke --issued-by root1 --between "$t0" \
    "$(date -u +%Y-%m-%d)" --dry-run
for c in root1 field1 factory1; do
    [ "$(status_of "$(serial_of "$D/$c.pem")")" = valid ] || die "$c is no longer valid"
done
[ "$(revokes)" = "$n0" ] || die "a revocation was audited"
sleep 1
t1=$(date +%s)
kca ca create --label late1 --template field-ca --subject "CN=Keyline Late CA,O=Keyline Test" \
    --issuer root1 > "$D/late1.pem"
kca revoke --issued-by root1 --between "@$t1" "@$(date +%s)" > "$D/out" 2> "$D/err" ||
    die "a batch after the root's making: $(cat "$D/err")"
grep -q "^revoked 1 certificate" "$D/out" || die "batch: $(cat "$D/out")"
[ "$(status_of "$(serial_of "$D/late1.pem")")" = revoked ] || die "late1 not revoked"
[ "$(status_of "$root")" = valid ] || die "the root's certificate is $(status_of "$root")"
ok "revoke --issued-by root1 over the root's making: refused whole; a later period revokes as before"
echo "revoke_root_self: all passed"
