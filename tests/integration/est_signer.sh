#!/usr/bin/env bash
# keyline-estd's privilege separation ([est] signer = process, the default): the process that
# serves TLS has no PKCS#11 module mapped, no token file open and no PIN in its environment;
# its signer processes (children of its keeper child) have the module. Enrollment,
# serverkeygen, CRL and OCSP (answered by the delegated OCSP signer that the start-up step
# made) work through them. A dead signer gives 503 for the request that was using it, counts
# as an HSM error and is replaced by the keeper; with the keeper gone too, 503 and /healthz 503.
# SIGTERM still exits 0 and everything is reaped. Then signer = inline: one process.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf "signer-processes = 3"
est_start
ok "started (signer = process, 3 signers)"

# signers_of PID: the keeper (the server's one child) and its children, the signers
signers_of() {
    keeper=$(pgrep -P "$1" | tr "\\n" " " | sed "s/ *$//")
    [ "$(echo $keeper | wc -w)" = 1 ] || die "expected one keeper child of $1, found: $keeper"
    kids=$(pgrep -P "$keeper" | tr '\n' ' ')
}
signers_of "$EST_PID"
[ "$(echo $kids | wc -w)" = 3 ] || die "expected 3 signer processes, found: $kids"
if grep -q softhsm "/proc/$EST_PID/maps"; then
    die "the network process has the PKCS#11 module mapped"
fi
if ls -l "/proc/$EST_PID/fd" 2>/dev/null | grep -q "$D/tokens"; then
    die "the network process has a token file open"
fi
if tr '\0' '\n' < "/proc/$EST_PID/environ" | grep -qx "KEYLINE_PIN=$KEYLINE_PIN"; then
    die "the PIN is still in the network process's environment"
fi
ok "network process: no libsofthsm2.so mapped, no token file open, PIN gone from its environment"
for k in $kids; do
    if [ -r "/proc/$k/maps" ] && head -c1 "/proc/$k/maps" >/dev/null 2>&1; then
        grep -q softhsm "/proc/$k/maps" || die "signer $k has no PKCS#11 module mapped"
    fi
    grep -q '^TracerPid:[[:space:]]*0' "/proc/$k/status" || die "signer $k is traced"
    [ "$(awk '/^PPid:/ {print $2}' "/proc/$k/status")" = "$keeper" ] || die "signer $k parent"
done
if grep -q softhsm "/proc/$keeper/maps" 2>/dev/null; then die "the keeper has the module mapped"; fi
grep -q '^TracerPid:[[:space:]]*0' "/proc/$keeper/status" || die "keeper is traced"
ok "signers: module mapped, children of the keeper (no module), child of the network process"

# --- everything that signs ---------------------------------------------------------------------
new_csr dev "/CN=sig-dev/serialNumber=HWS001"
expect_status 200 "simpleenroll through a signer" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
new_csr skg "/CN=sig-keyless/serialNumber=HWS002"
expect_status 200 "serverkeygen through a signer" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/skg.b64" "$EST/serverkeygen"
kca revoke --serial "$(serial_of "$D/dev.pem")" --reason keyCompromise >/dev/null
st=$(curl -s -o "$D/field1.crl" -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 200 ] || die "CRL HTTP $st"
openssl crl -inform DER -in "$D/field1.crl" -out "$D/field1.crl.pem"
openssl crl -in "$D/field1.crl.pem" -noout -verify -CAfile "$D/field1.pem" 2>&1 | grep -q "verify OK" || die "CRL signature"
openssl crl -in "$D/field1.crl.pem" -noout -text | grep -q "$(serial_of "$D/dev.pem")" || die "revoked serial not in CRL"
ok "CRL signed through a signer"
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" -resp_text \
    -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "Response verify OK" "$D/ocsp.txt" || die "OCSP response does not verify: $(cat "$D/ocsp.txt")"
grep -q ": revoked" "$D/ocsp.txt" || die "OCSP status: $(cat "$D/ocsp.txt")"
grep -q "Responder Id: CN *= *field1 OCSP signer" "$D/ocsp.txt" || die "OCSP not answered by the delegated signer: $(grep 'Responder' "$D/ocsp.txt")"
ok "OCSP answered by the delegated OCSP signer (made at start-up), through a signer"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_hsm_errors_total 0' "$D/out" || die "hsm errors before any signer died"
grep -q '^keyline_est_signer_processes 3$' "$D/out" || die "metrics: not 3 signer processes"

# --- signers die and are replaced ------------------------------------------------------------
set -- $kids
kill -KILL "$1" "$2"
sleep 0.2
for i in 1 2 3 4; do
    new_csr d$i "/CN=sig-after-$i/serialNumber=HWS10$i"
    ecurl -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/d$i.b64" "$EST/simpleenroll" > "$D/st$i" || true
done
[ "$(cat "$D/st4")" = 200 ] || die "no signer serves after 2 of 3 were killed (HTTP $(cat "$D/st4"))"
grep -q "signer process $1 is gone" "$D/estd.log" || die "signer death not logged"
# replaced by the keeper (one a second): /healthz revives them too
for _ in $(seq 1 40); do
    curl -s --cacert "$D/root1.pem" -o /dev/null "$EST_URL/healthz"
    curl -s --cacert "$D/root1.pem" "$EST_URL/metrics" > "$D/out"
    grep -q '^keyline_est_signer_processes 3$' "$D/out" && break
    sleep 0.25
done
grep -q '^keyline_est_signer_processes 3$' "$D/out" || die "killed signers not replaced: $(grep signer_processes "$D/out")"
grep -q "signer process [0-9]* replaces $1;" "$D/estd.log" || die "replacement of $1 not logged"
grep -q "signer process [0-9]* replaces $2;" "$D/estd.log" || die "replacement of $2 not logged"
signers_of "$EST_PID"
case " $kids " in *" $1 "* | *" $2 "*) die "a killed signer is still listed: $kids" ;; esac
[ "$(echo $kids | wc -w)" = 3 ] || die "after the replacement: $kids"
n=$(awk '/^keyline_est_hsm_errors_total/ {print $2}' "$D/out")
[ "${n:-0}" -ge 1 ] || die "dead signers not counted as HSM errors"
new_csr d5 "/CN=sig-after-5/serialNumber=HWS105"
expect_status 200 "simpleenroll on the replaced signers" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/d5.b64" "$EST/simpleenroll"
ok "2 of 3 signers killed: the third serves, the keeper replaces both (logged, $n HSM errors)"

# --- the keeper killed: its signers end with it, nothing can replace them ----------------------
kill -KILL "$keeper"
sleep 0.3
expect_status 503 "healthz finds the signers gone (no request needed)" "$EST_URL/healthz"
grep -q "no signer process is left" "$D/out" || die "healthz body: $(cat "$D/out")"
new_csr dx "/CN=sig-none/serialNumber=HWS199"
t0=$(date +%s)
for i in 1 2; do
    expect_status 503 "no signer left -> 503 ($i)" -u "$EST_USER:$EST_PASS" \
        -H "Content-Type: application/pkcs10" --data-binary @"$D/dx.b64" "$EST/simpleenroll"
done
[ $(($(date +%s) - t0)) -lt 5 ] || die "the failed requests hung"
expect_status 200 "cacerts still answers" "$EST/cacerts"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_signer_processes 0$' "$D/out" || die "metrics: signers still counted"
grep -q "signer keeper (process $keeper) is gone" "$D/estd.log" || die "keeper death not logged"
grep -q "no signer process is left" "$D/estd.log" || die "no-signer error not logged"
ok "keeper killed: its signers end, 503 at once, healthz 503, logged"
est_stop
ok "SIGTERM -> exit 0 with no keeper and no signer"

# --- SIGTERM reaps live signers ------------------------------------------------------------
est_start
signers_of "$EST_PID"
[ "$(echo $kids | wc -w)" = 3 ] || die "restart: expected 3 signers: $kids"
kill -TERM $keeper $kids # a signal for the whole group (^C, systemd) must not take them first
new_csr dy "/CN=sig-term/serialNumber=HWS200"
expect_status 200 "signers ignore SIGTERM meant for the parent" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/dy.b64" "$EST/simpleenroll"
est_stop
for k in $keeper $kids; do
    if kill -0 "$k" 2>/dev/null; then die "keeper or signer $k survived the server"; fi
done
ok "SIGTERM -> exit 0, keeper and signers gone"

# --- a killed network process takes its signers along ----------------------------------------
est_start
signers_of "$EST_PID"
kill -KILL "$EST_PID"
wait "$EST_PID" 2>/dev/null || true
EST_PID=
sleep 0.3
for k in $keeper $kids; do
    if kill -0 "$k" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$k/status" 2>/dev/null; then
        die "keeper or signer $k outlived the network process"
    fi
done
ok "SIGKILL of the network process: the keeper and the signers die with it"

# --- start-up refusals ------------------------------------------------------------------------------
rc=0
KEYLINE_PIN=975319 "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/wrongpin.log" || rc=$?
[ "$rc" = 5 ] || die "wrong PIN: exit $rc, expected 5"
grep -q "wrong PIN (CKR_PIN_INCORRECT)" "$D/wrongpin.log" || die "wrong PIN message: $(cat "$D/wrongpin.log")"
if grep -q 975319 "$D/wrongpin.log"; then die "the PIN appears in the log"; fi
cp "$KL_CONF" "$D/bad.conf"
echo "signer = thread" >> "$D/bad.conf"
rc=0
"$BIN/keyline-estd" -c "$D/bad.conf" 2>"$D/badconf.log" || rc=$?
[ "$rc" = 2 ] || die "signer = thread: exit $rc, expected 2"
grep -q "signer = thread: expected process or inline" "$D/badconf.log" || die "bad signer message"
ok "start-up refusals: wrong PIN (exit 5, CKR_PIN_INCORRECT), unknown signer mode (exit 2)"

# --- signer = inline: today's single process ---------------------------------------------------
echo "signer = inline" >> "$KL_CONF"
est_start
[ -z "$(pgrep -P "$EST_PID" || true)" ] || die "inline mode has child processes"
grep -q softhsm "/proc/$EST_PID/maps" || die "inline mode: module not mapped in the process"
new_csr di "/CN=sig-inline/serialNumber=HWS300"
expect_status 200 "simpleenroll inline" -u "$EST_USER:$EST_PASS" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/di.b64" "$EST/simpleenroll"
est_stop
ok "signer = inline: one process, enrollment works, SIGTERM -> exit 0"
