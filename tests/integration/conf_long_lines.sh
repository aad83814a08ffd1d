# keyline.conf lines longer than libinih's 200 bytes (issue 10, defect 9): a long CRL URL with a
# query ("=" and ":" in it) reaches the certificates whole, and an over-long line is refused
# with file:line instead of being cut.
source "$KL_SRC/tests/lib/common.sh"

# A query parameter every 40 bytes: with the old parser each cut-off piece had an "=", was taken
# for an unknown key and ignored, and the certificates carried a 199-byte URL without a word.
q=""
for i in $(seq 10 24); do q="$q&k$i=v:$(printf 'p%.0s' $(seq 1 32))"; done
crl="http://crl.example.com/crl/{issuer}.crl?a=b&c=d:e$q&end=1"
ocsp="http://ocsp.example.com/ocsp?q=1&k=v:w$q&end=2"
[ ${#crl} -gt 599 ] || fail "test setup: crl-url only ${#crl} bytes"
# [ca] is the last section of with-token.sh's keyline.conf
grep -v '^crl-url = \|^ocsp-url = ' "$KL_CONF" > conf.new
printf 'crl-url = %s\nocsp-url = %s\n' "$crl" "$ocsp" >> conf.new
mv conf.new "$KL_CONF"
tail -n 1 "$KL_CONF" | grep -q "end=2$" || fail "test setup: ocsp-url not written"

make_hierarchy
make_key ec-p256 dev.key
openssl req -new -key dev.key -subj "/CN=long url sensor" -out dev.csr
kca issue --issuer field1 --template device-ldevid --csr dev.csr --out dev.pem
want=${crl//\{issuer\}/field1}
openssl x509 -in dev.pem -noout -ext crlDistributionPoints > cdp.txt
got=$(sed -n 's/^ *URI://p' cdp.txt)
[ "$got" = "$want" ] || { cat cdp.txt; fail "CRL distribution point is not the whole configured URL (${#got} of ${#want} bytes)"; }
openssl x509 -in dev.pem -noout -ext authorityInfoAccess > aia.txt
grep -qF "OCSP - URI:$ocsp" aia.txt || { cat aia.txt; fail "OCSP URL in AIA is not the whole configured URL"; }
ok "a ${#want}-byte CRL URL and a ${#ocsp}-byte OCSP URL reach the certificate whole"

# A line over the limit is an error naming the file and line, never a silently cut value.
cp "$KL_CONF" over.conf
printf 'ocsp-url = http://x/%s\n' "$(printf 'y%.0s' $(seq 1 8200))" >> over.conf
line=$(wc -l < over.conf)
expect_fail "config line over 8192 bytes" "$KL_BIN/keyline-ca" -c over.conf ca list
msg=$("$KL_BIN/keyline-ca" -c over.conf ca list 2>&1) || true
[[ $msg == *"over.conf:$line: line longer than 8192 bytes"* ]] || fail "the error does not name over.conf:$line: $msg"
ok "an over-long line is refused with file:line"
