#!/usr/bin/env bash
# The boundary between keyline-estd and keyline-cad (issue 11). keyline-estd, the process that
# faces the network, holds no CA PIN: not in its environment, not in its memory (gcore, package
# gdb), no PKCS#11 module mapped, no token file and no store file open. Everything that needs
# the CA (enrollment, serverkeygen, CRL, OCSP answered by the delegated signer keyline-cad made
# at start-up) goes through keyline-cad. keyline-cad killed: 503 with Retry-After at once,
# /healthz 503, OCSP tryLater, counted in /metrics; keyline-cad started again: everything works
# again without restarting keyline-estd. Start-up refusals: keyline-cad not there; this uid has
# no role at keyline-cad.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$(dirname "$0")/../lib/core_dump.sh"
command -v gcore >/dev/null && command -v gdb >/dev/null || die "gcore and gdb are required (scripts/deps installs gdb)"
[ "$(id -u)" = 0 ] || die "this test dumps keyline-estd with gcore (ptrace): run it as root, as ctest here does"

# A CA token whose PIN is long and random, so finding it in a dump means it is a copy.
PIN=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
[ ${#PIN} = 40 ] || die "could not make a random PIN"
softhsm2-util --init-token --free --label kl-estpin --pin "$PIN" --so-pin "$KL_SO_PIN" >/dev/null
sed -i 's|^token = .*|token = pkcs11:token=kl-estpin|' "$KL_CONF"
export KEYLINE_PIN="$PIN"

est_setup_ca
est_write_conf
est_start
ok "started: keyline-cad (pid $CAD_PID), keyline-estd (pid $EST_PID)"

# --- what keyline-estd holds ------------------------------------------------------------------
for lib in libsofthsm2 libp11.so libsqlite3; do
    if grep -q "$lib" "/proc/$EST_PID/maps"; then die "keyline-estd has $lib mapped"; fi
done
grep -q libsofthsm2 "/proc/$CAD_PID/maps" || die "keyline-cad has no PKCS#11 module mapped (test broken?)"
if ls -l "/proc/$EST_PID/fd" 2>/dev/null | grep -q -e "$D/tokens" -e "keyline.db"; then
    die "keyline-estd has a token or store file open: $(ls -l "/proc/$EST_PID/fd")"
fi
if tr '\0' '\n' < "/proc/$EST_PID/environ" | grep -q -e "^KEYLINE_PIN=" -e "$PIN"; then
    die "keyline-estd has the CA PIN in its environment"
fi
ok "keyline-estd: no PKCS#11 module, libp11 or SQLite mapped, no token or store file open, no PIN in its environment"

# --- everything that needs the CA, through keyline-cad ----------------------------------------
new_csr dev "/CN=cad-dev/serialNumber=HWC001"
expect_status 200 "simpleenroll" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "simpleenroll with the IDevID (cert-status through keyline-cad)" \
    --cert "$D/idev.crt" --key "$D/idev.key" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/ldev.b64" "$EST/simpleenroll"
new_csr skg "/CN=cad-keyless/serialNumber=HWC002"
expect_status 200 "serverkeygen" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/skg.b64" "$EST/serverkeygen"
kca revoke --serial "$(serial_of "$D/dev.pem")" --reason keyCompromise >/dev/null
st=$(curl -s -o "$D/field1.crl" -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 200 ] || die "CRL HTTP $st"
openssl crl -inform DER -in "$D/field1.crl" -noout -verify -CAfile "$D/field1.pem" 2>&1 | grep -q "verify OK" || die "CRL signature"
openssl crl -inform DER -in "$D/field1.crl" -noout -text | grep -q "$(serial_of "$D/dev.pem")" || die "revoked serial not in CRL"
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" -resp_text \
    -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "Response verify OK" "$D/ocsp.txt" || die "OCSP response does not verify: $(cat "$D/ocsp.txt")"
grep -q ": revoked" "$D/ocsp.txt" || die "OCSP status: $(cat "$D/ocsp.txt")"
grep -q "Responder Id: CN *= *field1 OCSP signer" "$D/ocsp.txt" ||
    die "OCSP not answered by the delegated signer: $(grep 'Responder' "$D/ocsp.txt")"
ok "enrollment, serverkeygen, CRL and OCSP (delegated signer made by keyline-cad) through keyline-cad"
kca audit list > "$D/audit.txt"
grep -q "uid $(id -u) (.*) as est; basic user $EST_USER" "$D/audit.txt" ||
    die "audit actor is not keyline-cad's view of the caller: $(tail -3 "$D/audit.txt")"
ok "audit: the actor is what keyline-cad authenticated (uid and role) plus the Basic user"

# --- no PIN in keyline-estd's memory ----------------------------------------------------------
core="$D/core"
kl_core_dump "$EST_PID" "$core" || die "gcore $EST_PID failed"
[ -s "$core" ] || die "no core file"
# the dump is real: it holds what keyline-estd does keep (an htpasswd user, the issued serial)
grep -q -a -F "factory-bcrypt" "$core" || die "core dump lacks the htpasswd users (dump broken?)"
n=$(grep -c -a -F -- "$PIN" "$core" || true)
[ "$n" = 0 ] || die "the CA PIN is in keyline-estd's memory ($n places in the core dump)"
rm -f "$core"
ok "the CA PIN is not in keyline-estd's memory (gcore)"

# --- keyline-cad gone: 503 at once, healthz 503, recovery without a restart ---------------------
kill -KILL "$CAD_PID"
wait "$CAD_PID" 2>/dev/null || true
CAD_PID=
st=$(curl -s -D "$D/hdr" -o "$D/out" -w '%{http_code}' --cacert "$D/root1.pem" "$EST_URL/healthz")
[ "$st" = 503 ] && grep -q "keyline-cad is not answering" "$D/out" || die "healthz without keyline-cad: $st $(cat "$D/out")"
grep -qi '^retry-after:' "$D/hdr" || die "healthz 503 without Retry-After"
st=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/healthz")
[ "$st" = 503 ] || die "plain healthz without keyline-cad: $st"
new_csr dx "/CN=cad-none/serialNumber=HWC099"
t0=$(date +%s)
for i in 1 2 3; do
    st=$(ecurl -D "$D/hdr" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/dx.b64" "$EST/simpleenroll")
    [ "$st" = 503 ] || die "enroll without keyline-cad ($i): HTTP $st ($(cat "$D/out"))"
    grep -qi '^retry-after: *10' "$D/hdr" || die "503 without Retry-After"
done
expect_status 503 "IDevID enroll without keyline-cad (client certificate check)" \
    --cert "$D/idev.crt" --key "$D/idev.key" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/ldev.b64" "$EST/simpleenroll"
st=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 503 ] || die "CRL without keyline-cad: HTTP $st"
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" > "$D/ocsp.txt" 2>&1 || true
grep -qi "trylater" "$D/ocsp.txt" || die "OCSP without keyline-cad: $(cat "$D/ocsp.txt")"
[ $(($(date +%s) - t0)) -lt 5 ] || die "the requests without keyline-cad hung"
kill -0 "$EST_PID" || die "keyline-estd died with keyline-cad"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_cad_up 0$' "$D/out" || die "metrics: keyline_est_cad_up is not 0"
n=$(awk '/^keyline_est_cad_errors_total/ {print $2}' "$D/out")
[ "${n:-0}" -ge 5 ] || die "metrics: keyline_est_cad_errors_total = $n"
ok "keyline-cad killed: 503 + Retry-After at once (enroll, client certs, CRL), OCSP tryLater, healthz 503, counted ($n)"

cad_start
expect_status 200 "healthz once keyline-cad is back" "$EST_URL/healthz"
for i in 1 2 3; do
    new_csr back$i "/CN=cad-back-$i/serialNumber=HWC10$i"
    expect_status 200 "simpleenroll once keyline-cad is back ($i)" -u "$EST_USER:$EST_PASS" \
        -H "Content-Type: application/pkcs10" --data-binary @"$D/back$i.b64" "$EST/simpleenroll"
done
expect_status 200 "IDevID enroll once keyline-cad is back" --cert "$D/idev.crt" --key "$D/idev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simpleenroll"
st=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 200 ] || die "CRL once keyline-cad is back: HTTP $st"
grep -q "keyline-estd ready" "$D/estd.log" && [ "$(grep -c 'keyline-estd ready' "$D/estd.log")" = 1 ] ||
    die "keyline-estd was restarted"
ok "keyline-cad started again: keyline-estd serves again, no restart (and no request lost to a dead pooled connection)"
est_stop
ok "SIGTERM -> both exit 0"

# --- start-up refusals ----------------------------------------------------------------------
t0=$(date +%s)
rc=0
env -u KEYLINE_PIN "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/nocad.err" || rc=$?
[ "$rc" != 0 ] || die "keyline-estd started without keyline-cad"
grep -q "keyline-cad at $D/cad.sock" "$D/nocad.err" || die "no-cad message: $(cat "$D/nocad.err")"
[ $(($(date +%s) - t0)) -ge 9 ] || die "keyline-estd did not wait for keyline-cad"
ok "without keyline-cad: keyline-estd waits 10 s, then exits $rc naming the socket"
printf '\n[role est]\nusers = 4242\n' >> "$KL_CONF"
cad_start
rc=0
env -u KEYLINE_PIN "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/norole.err" || rc=$?
[ "$rc" = 4 ] || die "uid without the est role: exit $rc ($(cat "$D/norole.err"))"
grep -q "uid $(id -u) has no role at this keyline-cad" "$D/norole.err" || die "no-role message: $(cat "$D/norole.err")"
cad_stop
ok "a uid without the est role at keyline-cad: refused at start-up (exit 4), saying so"
