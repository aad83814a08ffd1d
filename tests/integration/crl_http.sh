#!/usr/bin/env bash
# CRLs over keyline-estd (issue 17 item 1): served from a file (sendfile) whatever their size,
# with a strong ETag and Last-Modified (RFC 9110 8.8, 13):
#   - If-None-Match with the ETag, or If-Modified-Since equal to Last-Modified (an HTTP-date
#     in any of its three forms, RFC 9110 5.6.7; ignored in two field lines): 304, no body, no
#     Content-Length but the CRL's (RFC 9110 8.6), over plain HTTP and TLS;
#   - after a revocation the CRL changes and so does its ETag at once (a CRL above 1 MiB: within
#     keyline-estd's 5 s);
#   - a CRL of 120000 entries (about 5 MB, more than any heap answer of keyline-estd) is served
#     whole over plain HTTP and verifies with openssl.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
est_start
URL=$EST_HTTP/crl/field1.crl
hdr() { grep -i "^$1:" "$D/h" | head -1 | sed 's/^[^:]*: //' | tr -d '\r'; }

code=$(curl -s -D "$D/h" -o "$D/c0.der" -w '%{http_code}' "$URL")
[ "$code" = 200 ] || die "GET: $code"
etag=$(hdr ETag)
lm=$(hdr Last-Modified)
[[ "$etag" =~ ^\"[0-9a-f]{32}\"$ ]] || die "ETag: '$etag'"
[ -n "$lm" ] || die "no Last-Modified"
[ "$(openssl crl -inform DER -in "$D/c0.der" -noout -lastupdate | sed 's/lastUpdate=//')" != "" ] || die "CRL does not parse"
code=$(curl -s -D "$D/h" -o "$D/c1" -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
[ "$code" = 304 ] || die "If-None-Match with the ETag: $code"
[ ! -s "$D/c1" ] || die "304 with a body"
[ "$(hdr ETag)" = "$etag" ] || die "304 without the ETag"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: \"0000\"" "$URL")
[ "$code" = 200 ] || die "If-None-Match with another tag: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm" "$URL")
[ "$code" = 304 ] || die "If-Modified-Since = Last-Modified: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since in the past: $code"
# RFC 9110 5.6.7: a recipient accepts the obsolete forms too
rfc850=$(date -ud "$lm" '+%A, %d-%b-%y %H:%M:%S GMT')
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $rfc850" "$URL")
[ "$code" = 304 ] || die "If-Modified-Since $rfc850 (rfc850-date): $code"
asc=$(date -ud "$lm" '+%a %b %e %H:%M:%S %Y')
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $asc" "$URL")
[ "$code" = 304 ] || die "If-Modified-Since $asc (asctime-date): $code"
# only the Last-Modified itself: a later CRL may be dated earlier (hosts' clocks, a clock set back)
later=$(date -ud "@$(($(date -ud "$lm" +%s) + 60))" '+%a, %d %b %Y %H:%M:%S GMT')
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $later" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since a minute after Last-Modified: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm trailing" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since that is no HTTP-date: $code"
# RFC 9110 5.3: If-None-Match in two field lines is one list; 13.1.2: entity-tags, "W/" weak
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "zzz"' -H "If-None-Match: $etag" "$URL")
[ "$code" = 304 ] || die "If-None-Match in two lines, the second with the ETag: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: \"zzz\" , W/$etag" "$URL")
[ "$code" = 304 ] || die "If-None-Match list with the weak ETag: $code"
for bad in "W/W/$etag" "w/$etag" "$etag$etag" "x$etag"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $bad" "$URL")
    [ "$code" = 200 ] || die "If-None-Match: $bad (no entity-tag of ours): $code"
done
# RFC 9110 13.1.3: If-Modified-Since with more than one member is ignored: two field lines
# (found by hostile testing: the first line decided)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm" \
    -H "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since in two lines, the first matching: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm" -H "If-Modified-Since: $lm" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since in two lines, both matching: $code"
# RFC 9110 8.6: a 304 carries no Content-Length, or the 200's (found by hostile testing: 0),
# over plain HTTP and TLS, to GET and HEAD
size=$(stat -c %s "$D/c0.der")
for base in "$EST_HTTP" "$EST_URL"; do
    for head in "" -I; do
        code=$(curl -s $head --cacert "$D/root1.pem" -D "$D/h" -o /dev/null -w '%{http_code}' \
            -H "If-None-Match: $etag" "$base/crl/field1.crl")
        [ "$code" = 304 ] || die "$base ${head:-GET}: If-None-Match with the ETag: $code"
        len=$(hdr Content-Length)
        [ -z "$len" ] || [ "$len" = "$size" ] ||
            die "$base ${head:-GET}: a 304 with Content-Length $len, the CRL has $size bytes: $(cat "$D/h")"
    done
done
# a %00 in the path names no CRL (it did end the path early)
code=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/crl/field1.crl%00.txt")
[ "$code" = 404 ] || die "/crl/field1.crl%00.txt: $code"
ok "CRL: strong ETag and Last-Modified; If-None-Match / If-Modified-Since (IMF, rfc850, asctime; not in two lines) -> 304 without a body, Content-Length none or the CRL's (HTTP and TLS)"

new_csr dev "/CN=crl-dev"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/dev.pem" >/dev/null
kca revoke --serial "$(serial_of "$D/dev.pem")" >/dev/null 2>&1
for _ in $(seq 1 40); do
    code=$(curl -s -D "$D/h" -o "$D/c2.der" -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
    [ "$code" = 200 ] && break
    sleep 0.25
done
[ "$code" = 200 ] || die "CRL unchanged 10 s after a revocation"
[ "$(hdr ETag)" != "$etag" ] || die "new CRL, same ETag"
# a CRL is never signed in the second of the one before (thisUpdate has one-second
# resolution): Last-Modified moves with it, so revalidation by date gets the new CRL too
[ "$(hdr Last-Modified)" != "$lm" ] || die "new CRL, same Last-Modified $lm"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm" "$URL")
[ "$code" = 200 ] || die "If-Modified-Since the old CRL's Last-Modified after a revocation: $code"
openssl crl -inform DER -in "$D/c2.der" -noout -text | grep -qi "$(serial_of "$D/dev.pem")" || die "revoked serial not in the new CRL"
ok "after a revocation the CRL and its ETag change"

# 120000 revoked certificates: rows as ca_issue writes them (SQL; not through the HSM). The
# second of t1 holds no earlier certificate (the batch revokes by issue time, seconds inclusive).
sleep 1
t1=$(date +%s)
python3 - "$D/keyline.db" "$t1" <<'PY'
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
t = int(sys.argv[2])
der = os.urandom(300)
c.executemany("INSERT INTO certs (serial, status, issuer, subject, template, not_before, not_after,"
              " der, created) VALUES (?, 'valid', 'field1', 'CN=x', 'device-ldevid', ?, ?, ?, ?)",
              (("%016X" % (0x4000000000000000 + i * 7919), t, t + 86400, der, t) for i in range(120000)))
c.commit()
PY
kca revoke --issued-by field1 --between "@$t1" "@$(date +%s)" --reason keyCompromise >/dev/null 2>&1 || die "batch revoke"
for _ in $(seq 1 40); do
    code=$(curl -s -o "$D/big.der" -w '%{http_code}' "$URL")
    size=$(stat -c %s "$D/big.der")
    [ "$code" = 200 ] && [ "$size" -gt 4194304 ] && break
    sleep 0.25
done
[ "$code" = 200 ] && [ "$size" -gt 4194304 ] || die "big CRL: HTTP $code, $size bytes"
openssl crl -inform DER -in "$D/big.der" -CAfile "$D/field1.pem" -noout -verify 2>&1 | grep -q "verify OK" ||
    die "the big CRL does not verify"
n=$(openssl crl -inform DER -in "$D/big.der" -noout -text | grep -c 'Serial Number:')
[ "$n" = 120001 ] || die "the big CRL holds $n entries, not 120001"
ok "a CRL of 120001 entries ($size bytes) served whole from a file, verifies"
est_stop
