#!/usr/bin/env bash
# Regenerate the libest-shaped renewal CSRs (issue 12, item 5) and the certificates they copy:
#   KL_BUILD=build tests/lib/with-token.sh bash tests/data/csr/libest-fixtures.sh
# cisco/libest's est_client_reenroll() turns the current certificate into the CSR
# (X509_to_X509_REQ: its subject and key) and copies every extension of the certificate into it
# (X509_REQ_add_extensions). So: a device-ldevid and an est-server certificate issued by keyline
# (every extension keyline writes: basicConstraints, keyUsage, extendedKeyUsage, SKI, AKI, CRL
# distribution point, AIA; the server's subjectAltName), then `openssl req -addext` with each of
# their extensions as DER (copyext.py), and variants that each ask for more than the template
# grants. Keys are made here and not kept.
set -euo pipefail
source "$KL_SRC/tests/lib/common.sh"
export OPENSSL_CONF=/dev/null
out=$KL_SRC/tests/data/csr
make_hierarchy >/dev/null 2>&1

# req KEY SUBJECT OUT [-addext ARG]... plus every extension of the certificate in $exts
req() {
  local key=$1 subj=$2 dst=$3
  shift 3
  local args=()
  while read -r e; do args+=(-addext "$e"); done < "$exts"
  openssl req -new -key "$key" -subj "$subj" "${args[@]}" "$@" -out "$out/$dst"
}

# a field device's LDevID, as keyline issues it, renewed by libest
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null
openssl req -new -key dev.key -subj "/CN=device-0060/serialNumber=0060" -out dev-first.csr
kca issue --issuer field1 --template device-ldevid --csr dev-first.csr --out "$out/ldevid-current.pem" >/dev/null
python3 "$out/copyext.py" "$out/ldevid-current.pem" > all.txt
exts=all.txt
subj="/CN=device-0060/serialNumber=0060"
req dev.key "$subj" libest-reenroll.pem
# widening: CA:TRUE, one more key usage, one more purpose, a SAN the template has none of, an
# unknown critical extension (each replacing the copied one of its kind, or added)
grep -v '^2\.5\.29\.19=' all.txt > exts.txt && exts=exts.txt
req dev.key "$subj" libest-reenroll-ca.pem -addext "basicConstraints=critical,CA:TRUE"
grep -v '^2\.5\.29\.15=' all.txt > exts.txt
req dev.key "$subj" libest-reenroll-ku.pem -addext "keyUsage=critical,digitalSignature,keyCertSign"
grep -v '^2\.5\.29\.37=' all.txt > exts.txt
req dev.key "$subj" libest-reenroll-eku.pem -addext "extendedKeyUsage=clientAuth,serverAuth"
exts=all.txt
req dev.key "$subj" libest-reenroll-san.pem -addext "subjectAltName=DNS:device-0060.example.com"
req dev.key "$subj" libest-reenroll-critical.pem -addext "1.3.6.1.4.1.32473.100=critical,DER:0500"

# a server certificate (subjectAltName copied too): the same SANs pass, another kind does not
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out srv.key 2>/dev/null
openssl req -new -key srv.key -subj "/CN=est.example.com" \
  -addext "subjectAltName=DNS:est.example.com,IP:192.0.2.10" -out srv-first.csr
kca issue --issuer field1 --template est-server --csr srv-first.csr --out "$out/est-server-current.pem" >/dev/null
python3 "$out/copyext.py" "$out/est-server-current.pem" > all.txt
subj="/CN=est.example.com"
req srv.key "$subj" libest-reenroll-est-server.pem
grep -v '^2\.5\.29\.17=' all.txt > exts.txt && exts=exts.txt
req srv.key "$subj" libest-reenroll-est-server-uri.pem \
  -addext "subjectAltName=DNS:est.example.com,IP:192.0.2.10,URI:https://evil.example.com/"
ls -l "$out"/libest-*.pem "$out"/*-current.pem
