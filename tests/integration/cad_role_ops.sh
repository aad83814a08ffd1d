#!/usr/bin/env bash
# [role NAME] ops: a role asks only the ops it names. "Roles of the profile" alone opens the
# station's ops (claim, inventory, ...) to every role with a profile: a compromised keyline-estd
# could claim a device for as long as its process lives (up to a day) and block the station.
source "$KL_SRC/tests/lib/cad_common.sh"

kca ca create --label root1 --template root --subject "CN=Ops Test Root" >/dev/null
kca ca create --label field1 --template field-ca --subject "CN=Ops Field" --issuer root1 >/dev/null
cp "$KL_CONF" "$D/base.conf"
cad_conf
cad_role est users "$(id -u)" \
    "issue, submit, poll, cacerts, crl, ocsp, cert-status, profile, ca-chain, pending"
cad_profile ldevid field1 device-ldevid est

# an op name the table does not have: refused at start, naming it
cp "$D/base.conf" "$D/bad.conf"
printf '\n[cad]\nsocket = bad.sock\n[role est]\nusers = %s\nops = issue, clam\n[profile ldevid]\nissuer = field1\ntemplate = device-ldevid\nclients = est\n' \
    "$(id -u)" >> "$D/bad.conf"
rc=0; timeout 20 "$BIN/keyline-cad" -c "$D/bad.conf" 2>"$D/bad.log" || rc=$?
[ "$rc" != 0 ] && grep -q "\[role est\] ops: no op 'clam'" "$D/bad.log" \
    || die "unknown op name: exit $rc, $(tail -2 "$D/bad.log")"
ok "an unknown op name in [role] ops is refused at start, naming it"

cad_start

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

cad_stop
ok "SIGTERM: exit 0"
