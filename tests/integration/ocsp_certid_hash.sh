#!/usr/bin/env bash
# The hash of a request's CertID: SHA-1 (RFC 5019 2.1.1), SHA-256, SHA-384 and SHA-512 are
# answered; any other (MD5, whose collisions are cheap; SHA-224) names no certificate of
# keyline's, as a CertID of another CA's does: a request of such CertIDs alone is
# "unauthorized" (RFC 6960 2.3), and such a CertID beside one that is answered is "unknown".
# Checked with openssl ocsp, with and without a nonce.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start
# ask OUT [openssl ocsp args...]: for est-server.crt (field1), the answer's text in OUT
ask() {
    local out=$1
    shift
    openssl ocsp -issuer "$D/field1.pem" "$@" -url "$EST_HTTP/ocsp" -CAfile "$D/root1.pem" \
        -resp_text > "$out" 2>&1 || true
}
for nonce in -no_nonce -nonce; do
    for md in sha1 sha256 sha384 sha512; do
        ask "$D/$md" -"$md" -cert "$D/est-server.crt" "$nonce"
        grep -q "Response verify OK" "$D/$md" || die "$md $nonce: does not verify: $(cat "$D/$md")"
        grep -q "Hash Algorithm: $md$" "$D/$md" || die "$md $nonce: CertID: $(cat "$D/$md")"
        grep -q "est-server.crt: good" "$D/$md" || die "$md $nonce: $(cat "$D/$md")"
    done
    for md in md5 sha224; do
        ask "$D/$md" -"$md" -cert "$D/est-server.crt" "$nonce"
        grep -q "Responder Error: unauthorized (6)" "$D/$md" ||
            die "a $md CertID ($nonce) answered: $(cat "$D/$md")"
    done
    ask "$D/mixed" -sha1 -cert "$D/est-server.crt" -md5 -cert "$D/est-server.crt" "$nonce"
    grep -q "Response verify OK" "$D/mixed" || die "mixed $nonce: does not verify: $(cat "$D/mixed")"
    [ "$(grep -c "est-server.crt: " "$D/mixed")" = 2 ] || die "mixed $nonce: $(cat "$D/mixed")"
    grep -q "est-server.crt: good" "$D/mixed" || die "mixed $nonce: SHA-1 entry: $(cat "$D/mixed")"
    grep -q "est-server.crt: unknown" "$D/mixed" || die "mixed $nonce: MD5 entry: $(cat "$D/mixed")"
done
ok "SHA-1/256/384/512 CertIDs answered; MD5 and SHA-224 unauthorized alone, unknown beside SHA-1"
est_stop
echo "ocsp_certid_hash: all passed"
