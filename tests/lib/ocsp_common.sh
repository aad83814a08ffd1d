# OCSP helpers for tests/integration/ocsp_*.sh (sourced after est_common.sh: $D, $EST_HTTP,
# die). openssl ocsp is the relying party.
# ocsp_query ISSUER CERT OUT [openssl ocsp args...]: POST to keyline-estd's plain-HTTP /ocsp,
# verified against root1 with $OCSP_CHAIN (default intermediates.pem) as untrusted
# certificates; the answer's text in OUT; dies when it does not verify
ocsp_query() {
    local issuer=$1 cert=$2 out=$3
    shift 3
    openssl ocsp -issuer "$issuer" -cert "$cert" -url "$EST_HTTP/ocsp" -CAfile "$D/root1.pem" \
        -verify_other "${OCSP_CHAIN:-$D/intermediates.pem}" -resp_text "$@" > "$out" 2>&1 || true
    grep -q "Response verify OK" "$out" || die "OCSP answer does not verify: $(cat "$out")"
}
# ocsp_by_key OUT: the answer names its responder by key hash (keyline-cad's pre-produced
# answers do; live ones name it by name)
ocsp_by_key() { grep -q "Responder Id: [0-9A-F]\{40\}$" "$1"; }
