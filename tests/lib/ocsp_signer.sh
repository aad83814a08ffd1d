# The delegated OCSP signer tests' shared start (ocsp_signer_revoked.sh, ocsp_signer_new.sh),
# sourced after tests/integration/est_common.sh.

# ocsp_signer_setup HWSERIAL: root1, factory1, field1, keyline-cad and keyline-estd running, and
# a device certificate $D/dev.pem from field1 (device id and subject serialNumber HWSERIAL)
ocsp_signer_setup() {
    est_setup_ca
    est_write_conf
    est_start
    new_csr dev "/CN=dev-$1/serialNumber=$1"
    kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --device-id "$1" \
        --out "$D/dev.pem" >/dev/null
}

# query OUT [openssl ocsp args...]: $D/dev.pem's status from keyline-estd, verified by openssl
# ocsp against the root and good (else the test fails); the text in OUT, the response in OUT.der
query() {
    local out=$1
    shift
    openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" \
        -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" -respout "$out.der" -resp_text "$@" \
        > "$out" 2>&1 || true
    grep -q "Response verify OK" "$out" || die "OCSP answer does not verify: $(cat "$out")"
    grep -q "dev.pem: good" "$out" || die "status: $(cat "$out")"
}
