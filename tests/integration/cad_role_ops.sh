#!/usr/bin/env bash
# [role NAME] ops: a role asks only the ops it names. "Roles of the profile" alone opens the
# station's ops (claim, inventory, ...) to every role with a profile: a compromised keyline-estd
# could claim a device for as long as its process lives (up to a day) and block the station.
set -euo pipefail
BIN=${KL_BUILD:?KL_BUILD not set}/bin
D=${KL_TEST_DIR:?run under tests/lib/with-token.sh}
kca() { "$BIN/keyline-ca" -c "$KL_CONF" "$@"; }
cc() { "$BIN/kl_cad_client" "$@"; }
die() { echo "FAIL: $*" >&2; [ -f "$D/cad.log" ] && tail -n 20 "$D/cad.log" >&2; exit 1; }
ok() { echo "ok - $*"; }

kca ca create --label root1 --template root --subject "CN=Ops Test Root" >/dev/null
kca ca create --label field1 --template field-ca --subject "CN=Ops Field" --issuer root1 >/dev/null
SOCK="$D/cad.sock"
cp "$KL_CONF" "$D/base.conf"
cat >> "$KL_CONF" <<CONF

[cad]
socket = cad.sock

[role est]
users = $(id -u)
ops = issue, submit, poll, cacerts, crl, ocsp, cert-status, profile, ca-chain, pending

[profile ldevid]
issuer = field1
template = device-ldevid
clients = est
CONF

# an op name the table does not have: refused at start, naming it
cp "$D/base.conf" "$D/bad.conf"
printf '\n[cad]\nsocket = bad.sock\n[role est]\nusers = %s\nops = issue, clam\n[profile ldevid]\nissuer = field1\ntemplate = device-ldevid\nclients = est\n' \
    "$(id -u)" >> "$D/bad.conf"
rc=0; timeout 20 "$BIN/keyline-cad" -c "$D/bad.conf" 2>"$D/bad.log" || rc=$?
[ "$rc" != 0 ] && grep -q "\[role est\] ops: no op 'clam'" "$D/bad.log" \
    || die "unknown op name: exit $rc, $(tail -2 "$D/bad.log")"
ok "an unknown op name in [role] ops is refused at start, naming it"

"$BIN/keyline-cad" -c "$KL_CONF" 2>"$D/cad.log" &
CAD_PID=$!
trap 'kill $CAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "keyline-cad did not create its socket"

cc "$SOCK" hello version=1 | grep -qx "role=est" || die "hello"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/d.key" \
    -subj "/CN=sensor-1/serialNumber=HW0001" -outform DER -out "$D/d.der" 2>/dev/null
cc "$SOCK" issue profile=ldevid csr=@"$D/d.der" auth=basic auth-user=b device-id=HW0001 \
    > "$D/issue.out" || die "issue: $(cat "$D/issue.out")"
ok "the ops the role names are served"

for req in "claim device-id=HW0002 instance=x fixture=f lease=86400" \
    "inventory profile=ldevid device-id=HW0002 model=m state=failed detail=d" \
    "known profile=ldevid device-id=HW0002" "sweep profile=ldevid age=1 instance=x"; do
    rc=0; cc "$SOCK" $req 2>"$D/err" || rc=$?
    op=${req%% *}
    [ "$rc" = 4 ] && grep -q "op $op is not open to role est" "$D/err" \
        || die "$op for a role without it: exit $rc ($(cat "$D/err"))"
done
kca audit list | grep -q "claim: op not open to role est" || die "op refusal not audited"
ok "ops the role does not name (claim, inventory, known, sweep) are refused (policy) and audited"

kill -TERM "$CAD_PID"
rc=0; wait "$CAD_PID" || rc=$?
trap - EXIT
[ "$rc" = 0 ] || die "keyline-cad exited $rc on SIGTERM"
ok "SIGTERM: exit 0"
