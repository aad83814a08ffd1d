#!/usr/bin/env bash
# keyline-estd /metrics (issue 14 item 4): the remaining life of each CA certificate of the
# profile's chain, of each of those CAs' published CRLs (the root's too: its label from the
# issuing CA's CRL distribution point) and of the delegated OCSP signer, as keyline-cad reports
# them; the values match the certificates and CRLs themselves; promtool accepts the page. The
# root's name holds a double quote and a backslash: its subject label escapes them (text format).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
command -v promtool >/dev/null || die "promtool not found (scripts/deps: prometheus)"
trap est_cleanup EXIT

EST_ROOT_SUBJECT='CN=Keyline \"Test\" Root\\Lab,O=Keyline Test' est_setup_ca
METRICS_PORT=$(free_port)
est_write_conf "metrics-listen = 127.0.0.1:$METRICS_PORT"
while [ "$METRICS_PORT" = "$EST_PORT" ] || [ "$METRICS_PORT" = "$EST_HTTP_PORT" ]; do
    METRICS_PORT=$(free_port)
    sed -i "s/^metrics-listen = .*/metrics-listen = 127.0.0.1:$METRICS_PORT/" "$KL_CONF"
done
est_start
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" > "$D/metrics.txt" || die "/metrics"
promtool check metrics < "$D/metrics.txt" >"$D/promtool.out" 2>&1 || { cat "$D/promtool.out"; die "promtool"; }
gauge() { sed -n "s/^$1{$2} \(-\?[0-9]*\)$/\1/p" "$D/metrics.txt"; }
near() { # NAME VALUE EXPECTED: within 120 s
    [ -n "$2" ] || { grep keyline_ "$D/metrics.txt" | grep -v est_ >&2; die "$1: no gauge"; }
    local d=$(( $2 - $3 )); [ "${d#-}" -le 120 ] || die "$1: $2, expected about $3"
}
now=$(date +%s)
end_of() { date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s; }
near "field1 certificate" "$(gauge keyline_ca_cert_expiry_seconds 'ca="field1",subject="[^"]*"')" $(( $(end_of "$D/field1.pem") - now ))
grep -qF 'keyline_ca_cert_expiry_seconds{ca="root1",subject="/O=Keyline Test/CN=Keyline \"Test\" Root\\Lab"} ' "$D/metrics.txt" ||
    { grep keyline_ca_cert "$D/metrics.txt" >&2; die "root1's subject label: quote and backslash not escaped"; }
near "root1 certificate" "$(gauge keyline_ca_cert_expiry_seconds 'ca="root1",subject=".*"')" $(( $(end_of "$D/root1.pem") - now ))
kca crl --issuer root1 > "$D/root1.crl" 2>/dev/null
root_next=$(date -d "$(openssl crl -in "$D/root1.crl" -noout -nextupdate | cut -d= -f2)" +%s)
sleep 1
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" > "$D/metrics.txt" || die "/metrics again"
near "root1 CRL" "$(gauge keyline_crl_next_update_seconds 'ca="root1"')" $(( root_next - now ))
field_crl=$(gauge keyline_crl_next_update_seconds 'ca="field1"')
near "field1 CRL" "$field_crl" $(( 7 * 86400 ))
kca ca cert --label field1.ocsp > "$D/signer.pem" || die "keyline-cad made no OCSP signer for field1"
near "field1 OCSP signer" "$(gauge keyline_ocsp_signer_expiry_seconds 'ca="field1"')" $(( $(end_of "$D/signer.pem") - now ))
ok "/metrics: CA certificates, CRLs (root's included) and the OCSP signer, each with its remaining life"
est_stop
trap - EXIT
echo "ca_offline_metrics: all passed"
