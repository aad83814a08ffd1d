#!/usr/bin/env bash
# HSM faults mid-run (issue 18): keyline-cad and keyline-ca run against tests/tools/p11_fault.c,
# a PKCS#11 module that wraps the SoftHSM token and fails on command. While the token fails,
# EST answers 503 with Retry-After, the CLI exits 5 with the PKCS#11 reason, and nothing is
# recorded; when the fault is lifted, the same keyline-cad process issues again (no restart).
# Also: the token folder moved away (a token deleted) and brought back.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

FAULT_MOD=$KL_BUILD/lib/p11_fault.so
[ -f "$FAULT_MOD" ] || die "no $FAULT_MOD (tests/tools/CMakeLists.txt builds it)"
export KL_P11_FAULT_FILE=$D/p11-fault
export KL_P11_FAULT_MODULE=$KL_MODULE

est_setup_ca
sed -i "s|^module = .*|module = $FAULT_MOD|" "$KL_CONF"
grep -q "^module = $FAULT_MOD" "$KL_CONF" || die "config: module not replaced"
est_write_conf
est_start

n_certs() { kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
enroll() { # enroll NAME: HTTP status of a Basic simpleenroll; headers in $D/hdr
    new_csr "$1" "/CN=$1/serialNumber=$1"
    ecurl -D "$D/hdr" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/$1.b64" "$EST/simpleenroll" || true
}
expect_enroll() { # expect_enroll NAME STATUS WHAT
    local st
    st=$(enroll "$1")
    [ "$st" = "$2" ] || die "$3: HTTP $st, want $2 ($(head -c 200 "$D/out"))"
}
fault() { printf '%s\n' "$@" > "$KL_P11_FAULT_FILE"; }
clear_fault() { rm -f "$KL_P11_FAULT_FILE"; }

expect_enroll dev-before 200 "enroll through the interposer, no fault"
base=$(n_certs)
ok "enrollment through the fault module works ($base certificates)"

i=0
for f in "C_Sign CKR_DEVICE_ERROR" "C_SignInit CKR_SESSION_HANDLE_INVALID" "C_Sign CKR_DEVICE_REMOVED"; do
    i=$((i + 1))
    fault "$f"
    expect_enroll "dev-fault$i" 503 "enroll during $f"
    grep -qi '^retry-after: *[0-9]' "$D/hdr" || die "$f: 503 without Retry-After"
    [ "$(n_certs)" = "$base" ] || die "$f: a certificate was recorded while the token failed"
    clear_fault
    expect_enroll "dev-lifted$i" 200 "enroll after $f was lifted"
    base=$(n_certs)
    kill -0 "$CAD_PID" || die "keyline-cad died on $f"
    ok "$f: EST 503 + Retry-After, nothing recorded, the same keyline-cad issues again when lifted"
done

# the CLI: exit 5 with the PKCS#11 reason, nothing recorded
new_csr cli1 "/CN=cli1/serialNumber=CLI1"
fault "C_Sign CKR_DEVICE_ERROR"
rc=0
kca issue --issuer field1 --template device-ldevid --csr "$D/cli1.csr" --out "$D/cli1.crt" 2>"$D/cli.err" || rc=$?
[ "$rc" = 5 ] || die "keyline-ca issue during CKR_DEVICE_ERROR: exit $rc, want 5 ($(cat "$D/cli.err"))"
grep -qi "device error" "$D/cli.err" || die "CLI error does not name the PKCS#11 reason: $(cat "$D/cli.err")"
[ ! -s "$D/cli1.crt" ] || die "CLI wrote a certificate during the fault"
fault "C_Login CKR_PIN_LOCKED"
rc=0
kca issue --issuer field1 --template device-ldevid --csr "$D/cli1.csr" --out "$D/cli1.crt" 2>"$D/cli.err" || rc=$?
[ "$rc" = 5 ] || die "keyline-ca issue with a locked PIN: exit $rc, want 5 ($(cat "$D/cli.err"))"
grep -qi "lock" "$D/cli.err" || die "CLI error does not say the PIN is locked: $(cat "$D/cli.err")"
clear_fault
[ "$(n_certs)" = "$base" ] || die "the CLI recorded a certificate during the faults"
kca issue --issuer field1 --template device-ldevid --csr "$D/cli1.csr" --out "$D/cli1.crt" >/dev/null 2>"$D/cli.err" \
    || die "CLI after the faults: $(cat "$D/cli.err")"
ok "keyline-ca: exit 5 naming the device error / the locked PIN, nothing recorded; works when lifted"

# the token deleted under a running keyline-cad (its folder moved away), then brought back
mv "$D/tokens" "$D/tokens.away"
st=$(enroll dev-no-token)
if [ "$st" = 200 ]; then
    die "enroll with the token folder gone answered 200"
fi
[ "$st" = 503 ] || die "enroll with the token folder gone: HTTP $st, want 503"
mv "$D/tokens.away" "$D/tokens"
new_csr cli2 "/CN=cli2/serialNumber=CLI2"
kca issue --issuer field1 --template device-ldevid --csr "$D/cli2.csr" --out "$D/cli2.crt" >/dev/null 2>"$D/cli.err" \
    || die "a fresh keyline-ca after the token folder came back: $(cat "$D/cli.err")"
st=$(enroll dev-token-back)
[ "$st" = 503 ] || die "enroll after the token folder came back, before the restart: HTTP $st, want 503"
# SoftHSM marks a token whose folder vanished invalid for the rest of the process's life
# (OSToken::index: once !valid it never re-indexes): this token does not allow recovery in the
# running process, so keyline-cad is restarted, as systemd's Restart=on-failure would.
kill -KILL "$CAD_PID"
wait "$CAD_PID" 2>/dev/null || true
CAD_PID=
cad_start
[ "$(enroll dev-token-back2)" = 200 ] || die "a restarted keyline-cad does not issue after the token came back"
ok "token folder gone: EST 503, nothing recorded; back: a fresh keyline-ca and a restarted keyline-cad issue"

kca audit verify >/dev/null || die "audit chain after the faults"
ok "audit chain verifies after the faults"
est_stop
