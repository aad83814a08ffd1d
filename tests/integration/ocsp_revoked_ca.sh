#!/usr/bin/env bash
# OCSP for the certificates of a revoked CA. A relying party that checks only the leaf asks
# the leaf's issuer's responder; that responder must not keep saying good once the issuer's
# own certificate (or one above it) is revoked. keyline answers such leaves "revoked", reason
# cACompromise, revocationTime = the CA's revocation time (EJBCA's behaviour), pre-produced and
# live alike. Checked with openssl ocsp, verified against the root:
#   - root1 -> field1 -> dev, and root1 -> mid1 -> sub1 -> sdev (mid1 from a template with
#     path-len 1, copied into the test's template folder);
#   - before: dev and sdev good, pre-produced (responder by key hash);
#   - field1 revoked (keyline-ca revoke, another process): within 10 s the nonce-less answer
#     for dev is a pre-produced one that says revoked, cACompromise, at field1's revocation
#     time; a live answer (nonce) says the same; a leaf of field1 revoked on its own before
#     keeps its own reason and time; factory1's IDevID stays good;
#   - mid1 revoked: sdev, two levels below, is answered revoked at mid1's time, both ways.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$KL_SRC/tests/lib/ocsp_common.sh"

# a template folder of the shipped templates and mid-ca: field-ca with path-len 1
mkdir -p "$D/tpl"
cp "$KL_SRC"/templates/*.tmpl "$D/tpl/"
sed 's/^path-len = 0$/path-len = 1/' "$KL_SRC/templates/field-ca.tmpl" > "$D/tpl/mid-ca.tmpl"
grep -qx 'path-len = 1' "$D/tpl/mid-ca.tmpl" || die "mid-ca.tmpl: no path-len to change"
sed -i "s|^templates = .*|templates = $D/tpl|" "$KL_CONF"

est_setup_ca
kca ca create --label mid1 --template mid-ca --subject "CN=Keyline Mid CA,O=Keyline Test" \
    --issuer root1 > "$D/mid1.pem"
kca ca create --label sub1 --template field-ca --subject "CN=Keyline Sub CA,O=Keyline Test" \
    --issuer mid1 > "$D/sub1.pem"
OCSP_CHAIN=$D/chain.pem
cat "$D/field1.pem" "$D/factory1.pem" "$D/mid1.pem" "$D/sub1.pem" > "$OCSP_CHAIN"
new_csr dev "/CN=dev-rc/serialNumber=HWRC01"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/dev.pem" >/dev/null
new_csr own "/CN=own-rc/serialNumber=HWRC02"
kca issue --issuer field1 --template device-ldevid --csr "$D/own.csr" --out "$D/own.pem" >/dev/null
new_csr sdev "/CN=sdev-rc/serialNumber=HWRC03"
kca issue --issuer sub1 --template device-ldevid --csr "$D/sdev.csr" --out "$D/sdev.pem" >/dev/null
kca revoke --serial "$(serial_of "$D/own.pem")" --reason keyCompromise >/dev/null 2>&1
printf '\n[cad]\nsocket = cad.sock\nocsp-validity = 3600\n' >> "$KL_CONF"
est_write_conf
est_start

status() { sed -n "s|^$D/$2.pem: ||p" "$1"; }
# revoked_at SERIAL: the revocation time the store records (seconds)
revoked_at() {
    date -u -d "$(kca show --serial "$1" | sed -n 's/^revoked: *\([^ ]*\) .*/\1/p')" +%s
}
# check_revoked OUT NAME SECONDS REASON: the answer says revoked, for REASON, at SECONDS
check_revoked() {
    [ "$(status "$1" "$2")" = revoked ] || die "$2: $(cat "$1")"
    grep -q "Reason: $4" "$1" || die "$2: not $4: $(cat "$1")"
    local t
    t=$(date -u -d "$(sed -n 's/^ *Revocation Time: //p' "$1" | head -1)" +%s)
    [ "$t" = "$3" ] || die "$2: revocation time $t, expected $3: $(cat "$1")"
}
# wait_pre ISSUER NAME OUT WANT: until the nonce-less answer is pre-produced and says WANT
# (20 s at most); prints the seconds it took
wait_pre() {
    local t0=$SECONDS
    for _ in $(seq 1 100); do
        ocsp_query "$1" "$D/$2.pem" "$3" -no_nonce
        ocsp_by_key "$3" && [ "$(status "$3" "$2")" = "$4" ] && { echo $((SECONDS - t0)); return 0; }
        sleep 0.2
    done
    die "$2: no pre-produced answer saying $4 after 20 s: $(cat "$3")"
}

wait_pre "$D/field1.pem" dev "$D/d0" good >/dev/null
wait_pre "$D/sub1.pem" sdev "$D/s0" good >/dev/null
wait_pre "$D/field1.pem" own "$D/w0" revoked >/dev/null
ok "before: dev and sdev good, pre-produced"

# turns ISSUER NAME CA OUT: CA's certificate revoked; within 10 s NAME's nonce-less answer is a
# pre-produced one that says revoked, cACompromise, at CA's revocation time, and so does a live
# one (a nonce); prints the seconds it took
turns() {
    kca revoke --serial "$(serial_of "$D/$3.pem")" --reason keyCompromise >/dev/null 2>&1
    local at took
    at=$(revoked_at "$(serial_of "$D/$3.pem")")
    took=$(wait_pre "$1" "$2" "$4.pre" revoked)
    [ "$took" -le 10 ] || die "$2: the pre-produced answer turned after $took s"
    check_revoked "$4.pre" "$2" "$at" cACompromise
    ocsp_query "$1" "$D/$2.pem" "$4.live"
    ocsp_by_key "$4.live" && die "an answer to a request with a nonce is pre-produced: $(cat "$4.live")"
    check_revoked "$4.live" "$2" "$at" cACompromise
    echo "$took"
}

took=$(turns "$D/field1.pem" dev field1 "$D/d1")
ok "field1 revoked: dev's pre-produced answer says revoked (cACompromise, field1's time) after ${took}s; a live one too"
own_at=$(revoked_at "$(serial_of "$D/own.pem")")
for args in -no_nonce ""; do
    # shellcheck disable=SC2086 # args: no argument or one
    ocsp_query "$D/field1.pem" "$D/own.pem" "$D/w1" $args
    check_revoked "$D/w1" own "$own_at" keyCompromise
done
ok "a leaf revoked on its own keeps its reason and time"
ocsp_query "$D/factory1.pem" "$D/idev.crt" "$D/i1" -no_nonce
grep -q "idev.crt: good" "$D/i1" || die "factory1's IDevID: $(cat "$D/i1")"
ok "another CA's certificates stay good"

took=$(turns "$D/sub1.pem" sdev mid1 "$D/s1")
ok "mid1 revoked: sdev (under sub1, under mid1) revoked at mid1's time, pre-produced after ${took}s and live"
est_stop
echo "ocsp_revoked_ca: all passed"
