#!/usr/bin/env bash
# The front ends link only the CA-protocol client (issue 11, item 3): a binary that faces the
# network or a device must not contain the HSM code (hsm_*), the store (store_*), the issuance
# pipeline (ca_issue*), libp11 (PKCS11_*) or SQLite (sqlite3_*), as code or as a reference,
# nor load libp11, libsqlite3 or libpq. keyline-cad itself (which must have them) is the
# control that the check finds what it looks for.
#
#   frontend_links.sh [BINARY...]   (default: the converted front ends below)
set -euo pipefail
BIN=${KL_BUILD:?KL_BUILD not set}/bin
die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

FORBIDDEN_SYMS='^(hsm_|store_|ca_issue|PKCS11_|sqlite3_)'
FORBIDDEN_LIBS='lib(p11|sqlite3|pq)\.so'

# The front ends that are clients of keyline-cad: keyline-estd (enrollment/) and
# keyline-provision (the station, provisioner/station/).
if [ $# -gt 0 ]; then
    frontends=("$@")
else
    frontends=(keyline-estd keyline-provision)
fi

# bad_symbols FILE: the forbidden symbol names FILE defines or references, one per line
bad_symbols() {
    nm "$1" 2>/dev/null | awk '{print $NF}' | sed 's/@.*//' | grep -E "$FORBIDDEN_SYMS" | sort -u || true
}

# the control: keyline-cad has them, so an empty answer below means "absent", not "not looked"
[ -x "$BIN/keyline-cad" ] || die "$BIN/keyline-cad not built"
ctl=$(bad_symbols "$BIN/keyline-cad")
for want in hsm_ store_ ca_issue PKCS11_; do
    grep -q "^$want" <<<"$ctl" || die "control: no $want* symbol found in keyline-cad (is nm working?)"
done
readelf -d "$BIN/keyline-cad" | grep NEEDED | grep -qE "$FORBIDDEN_LIBS" ||
    die "control: keyline-cad needs none of libp11/libsqlite3 (is readelf working?)"
ok "control: the check finds hsm_*, store_*, ca_issue*, PKCS11_* and libp11/libsqlite3 in keyline-cad"

for f in "${frontends[@]}"; do
    b="$BIN/$f"
    [ -x "$b" ] || die "$b not built"
    [ "$(nm "$b" 2>/dev/null | wc -l)" -gt 100 ] || die "$f has no symbol table (stripped?): cannot check"
    bad=$(bad_symbols "$b")
    [ -z "$bad" ] || die "$f links CA internals: $(echo $bad | head -c 600)"
    libs=$(readelf -d "$b" | grep NEEDED | grep -E "$FORBIDDEN_LIBS" || true)
    [ -z "$libs" ] || die "$f loads $libs"
    grep -q "^cac_call$" <(nm "$b" | awk '{print $NF}') || die "$f does not use the CA-protocol client (cac_call)"
    ok "$f: no hsm_*, store_*, ca_issue*, PKCS11_*, sqlite3_* symbol, no libp11/libsqlite3/libpq; uses cac_call"
done
