#!/usr/bin/env bash
# No OCSP answer is valid past the certificate that signs it: its nextUpdate never passes the
# notAfter of the delegated signer or of the CA that signs it (a relying party that checks the
# signer over the answer's validity would otherwise hold an answer whose signer expired first).
# keyline-cad runs on a clock that the test steps ahead (libfaketime, FAKETIME_TIMESTAMP_FILE);
# keyline-estd and openssl on the real one. Answers checked with openssl ocsp:
#   A. an hour before root1's delegated signer expires (keyline-cad does not renew a root's:
#      [cad] ca-keys = intermediates): field1's certificate, asked with and without a nonce,
#      is answered by that signer with a nextUpdate at its notAfter at the latest, not a day on;
#   B. an hour before factory1's own certificate expires, factory1 signing its answers itself
#      (its delegated signer revoked): an IDevID's pre-produced answer (responder by key hash)
#      and a live one both end at factory1's notAfter at the latest.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$KL_SRC/tests/lib/faketime.sh"
. "$KL_SRC/tests/lib/ocsp_common.sh"
kl_libfaketime || die "no libfaketime"

est_setup_ca
est_write_conf
FT=$D/faketime
echo "+0" > "$FT"
cad_start env LD_PRELOAD="$LIBFT" FAKETIME_TIMESTAMP_FILE="$FT" FAKETIME_NO_CACHE=1 \
    FAKETIME_DONT_FAKE_MONOTONIC=1
est_run
wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"

epoch() { date -u -d "$1" +%s; }
not_after() { epoch "$(openssl x509 -noout -enddate | cut -d= -f2)"; }
next_update() { epoch "$(sed -n 's/^ *Next Update: //p' "$1" | head -1)"; }
# within OUT END WHAT: the answer's nextUpdate is not after END
within() {
    local nu
    nu=$(next_update "$1")
    [ "$nu" -le "$2" ] ||
        die "$3: nextUpdate $(date -u -d "@$nu") after the signer's notAfter $(date -u -d "@$2"): $(cat "$1")"
}

# --- A. root1's delegated signer an hour before its end
kca ca cert --label root1.ocsp > "$D/root1-ocsp.pem" || die "root1 has no delegated OCSP signer"
sig_end=$(not_after < "$D/root1-ocsp.pem")
echo "+$((sig_end - $(date +%s) - 3600))" > "$FT"
sleep 1
ocsp_query "$D/root1.pem" "$D/field1.pem" "$D/a1"
grep -q "Responder Id: CN = root1 OCSP signer" "$D/a1" || die "A: not root1's signer: $(cat "$D/a1")"
within "$D/a1" "$sig_end" "A (nonce)"
ocsp_query "$D/root1.pem" "$D/field1.pem" "$D/a2" -no_nonce
within "$D/a2" "$sig_end" "A (no nonce)"
ok "an hour before root1's delegated signer expires: nextUpdate at its notAfter, with and without a nonce"

# --- B. factory1 itself an hour before its end, its delegated signer revoked
echo "+0" > "$FT"
if kca ca cert --label factory1.ocsp > "$D/factory1-ocsp.pem" 2>/dev/null; then
    kca revoke --serial "$(serial_of "$D/factory1-ocsp.pem")" --reason keyCompromise >/dev/null 2>&1
fi
ca_end=$(not_after < "$D/factory1.pem")
echo "+$((ca_end - $(date +%s) - 3600))" > "$FT"
sleep 1
for _ in $(seq 1 100); do
    ocsp_query "$D/factory1.pem" "$D/idev.crt" "$D/b1" -no_nonce
    ocsp_by_key "$D/b1" && [ "$(next_update "$D/b1")" -gt "$(($(date +%s) + 3600 * 24 * 365))" ] && break
    sleep 0.2
done
ocsp_by_key "$D/b1" || die "B: no pre-produced answer after 20 s: $(cat "$D/b1")"
grep -q "Cert Status: good" "$D/b1" || die "B: status: $(cat "$D/b1")"
within "$D/b1" "$ca_end" "B (pre-produced)"
ocsp_query "$D/factory1.pem" "$D/idev.crt" "$D/b2"
ocsp_by_key "$D/b2" && die "B: an answer to a request with a nonce is pre-produced: $(cat "$D/b2")"
grep -q "Responder Id: .*CN = Keyline Factory CA$" "$D/b2" || die "B: not factory1 itself: $(cat "$D/b2")"
within "$D/b2" "$ca_end" "B (nonce)"
ok "an hour before factory1 (signing itself) expires: nextUpdate at its notAfter, pre-produced and live"
est_stop
echo "ocsp_signer_expiry: all passed"
