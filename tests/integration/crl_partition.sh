#!/usr/bin/env bash
# Partitioned CRLs (issue 17 item 3): a CA with [ca fleet1] crl-partition-size = 3, checked with
# openssl and GnuTLS certtool:
#   - each certificate's cRLDistributionPoints names its partition's CRL (.../crl/fleet1/K.crl),
#     three certificates a partition; a CA without the setting keeps its one CRL (field1);
#   - each partition's CRL carries a critical issuingDistributionPoint (RFC 5280 5.2.5) with that
#     name and lists the revoked certificates of its partition alone; the CA's full CRL lists
#     them all without one; CRL numbers keep increasing across partitions;
#   - a revocation (a --from list, one --serial) signs only the affected partitions' CRLs;
#   - openssl verify -crl_check and certtool --verify with the partition's CRL: a revoked device
#     fails, a good one passes; another partition's CRL is out of scope for openssl;
#   - keyline-estd serves /crl/fleet1/K.crl with the same ETag / 304 behaviour as a full CRL,
#     and the partitions of a CA with a 63-character label (the longest keyline-ca makes);
#   - a bad crl-partition-size stops keyline-cad and keyline-ca when they start, not at the
#     first issuance; a [ca LABEL] section naming no CA is a warning.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

for t in openssl certtool sqlite3 psql curl; do
    command -v "$t" >/dev/null || die "$t is needed"
done
# crl_partition_pg.sh: the store in a throwaway PostgreSQL cluster (tests/lib/pg.sh)
if [ -n "${CP_PG:-}" ]; then
    CP_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
    CP_STORE=$("$KL_SRC/tests/lib/pg.sh" start "$CP_PG_DIR") || die "PostgreSQL did not start"
    trap 'est_cleanup; "$KL_SRC/tests/lib/pg.sh" stop "$CP_PG_DIR" || true' EXIT
    python3 - "$KL_CONF" "$CP_STORE" <<'PY'
import sys
p, url = sys.argv[1], sys.argv[2]
s = open(p).read()
assert "\npath = keyline.db\n" in s
open(p, "w").write(s.replace("\npath = keyline.db\n", "\nurl = %s\n" % url))
PY
fi
q() {
    if [ -n "${CP_STORE:-}" ]; then psql -Atq "$CP_STORE" -c "$1"; else sqlite3 "$KL_TEST_DIR/keyline.db" "$1"; fi
}
crl_number() { openssl crl -in "$1" -noout -crlnumber | sed -e 's/.*=//' -e 's/^0x//'; }
crl_serials() { openssl crl -in "$1" -noout -text | awk '/Serial Number:/ {print $3}' | sort; }
cdp_of() { openssl x509 -in "$1" -noout -ext crlDistributionPoints | grep -o 'URI:.*' | sed 's/URI://'; }
BASE=http://127.0.0.1:8080/crl

est_setup_ca
printf '\n[ca fleet1]\ncrl-partition-size = 3\n' >> "$KL_CONF"
# the longest CA label keyline-ca makes (63 characters), one certificate a partition
LL=$(printf 'l%.0s' $(seq 1 62))9
printf '\n[ca %s]\ncrl-partition-size = 1\n' "$LL" >> "$KL_CONF"
kca ca create --label "$LL" --template field-ca --subject "CN=Keyline Long Label CA,O=Keyline Test" \
    --issuer root1 >/dev/null
kca ca create --label fleet1 --template field-ca --subject "CN=Keyline Fleet CA,O=Keyline Test" \
    --issuer root1 >/dev/null
kca ca cert --label fleet1 > "$D/fleet1.pem"
cat "$D/root1.pem" "$D/fleet1.pem" > "$D/chain.pem"

# ten devices: partitions 0 0 0 1 1 1 2 2 2 3
new_csr dev "/CN=fleet-dev"
for i in $(seq 1 10); do
    kca issue --issuer fleet1 --template device-ldevid --csr "$D/dev.csr" --out "$D/d$i.pem" >/dev/null
    part[$i]=$(( (i - 1) / 3 ))
    want="$BASE/fleet1/${part[$i]}.crl"
    [ "$(cdp_of "$D/d$i.pem")" = "$want" ] || die "d$i: CDP $(cdp_of "$D/d$i.pem"), expected $want"
done
max=$(q \
    "SELECT max(n) FROM (SELECT count(*) AS n FROM crl_partition_certs WHERE issuer = 'fleet1' GROUP BY part) AS p")
[ "$max" = 3 ] || die "a partition holds $max certificates"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/plain.pem" >/dev/null
[ "$(cdp_of "$D/plain.pem")" = "$BASE/field1.crl" ] || die "field1 (no partitions): CDP $(cdp_of "$D/plain.pem")"
ok "each device names its partition's CRL (3 a partition, 4 partitions); a CA without the setting keeps its one CRL"

# crl-url with {partition}: where the partition goes; a CA without the setting is refused
sed 's|^crl-url = .*|crl-url = http://127.0.0.1:8080/p/{issuer}-{partition}.der|' "$KL_CONF" > "$D/part.conf"
"$BIN/keyline-ca" -c "$D/part.conf" issue --issuer fleet1 --template device-ldevid --csr "$D/dev.csr" \
    --out "$D/d11.pem" > /dev/null 2>&1 || die "issue with {partition} in crl-url"
# d11 goes into partition 3 beside d10, which named its CRL by the old crl-url: the partition
# keeps the URL recorded with it, or its CRL would be out of the scope of one of the two
[ "$(cdp_of "$D/d11.pem")" = "$BASE/fleet1/3.crl" ] || die "d11: CDP $(cdp_of "$D/d11.pem")"
"$BIN/keyline-ca" -c "$D/part.conf" issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" \
    > /dev/null 2> "$D/p.err" && die "{partition} in crl-url for a CA without partitions"
grep -q "crl-partition-size" "$D/p.err" || die "refusal: $(cat "$D/p.err")"
# a crl-url change applies from the next partition on (fleet2, 2 a partition): f1 under the old
# URL, f2 in the same partition under the new one keeps the old, f3 opens partition 1 under the
# new; each partition's CRL names what its certificates name, and covers them (openssl)
kca ca create --label fleet2 --template field-ca --subject "CN=Keyline Fleet CA 2,O=Keyline Test" \
    --issuer root1 >/dev/null
printf '\n[ca fleet2]\ncrl-partition-size = 2\n' | tee -a "$KL_CONF" >> "$D/part.conf"
kca ca cert --label fleet2 | cat "$D/root1.pem" - > "$D/chain2.pem"
kca issue --issuer fleet2 --template device-ldevid --csr "$D/dev.csr" --out "$D/f1.pem" >/dev/null
for f in f2 f3; do
    "$BIN/keyline-ca" -c "$D/part.conf" issue --issuer fleet2 --template device-ldevid \
        --csr "$D/dev.csr" --out "$D/$f.pem" > /dev/null || die "issue $f with the new crl-url"
done
for f in "f1 $BASE/fleet2/0.crl" "f2 $BASE/fleet2/0.crl" "f3 http://127.0.0.1:8080/p/fleet2-1.der"; do
    set -- $f
    [ "$(cdp_of "$D/$1.pem")" = "$2" ] || die "$1: CDP $(cdp_of "$D/$1.pem"), expected $2"
done
[ "$(q "SELECT url FROM crl_partition_urls WHERE issuer = 'fleet2' ORDER BY part")" = \
  "$BASE/fleet2/0.crl
http://127.0.0.1:8080/p/fleet2-1.der" ] || die "crl_partition_urls: $(q "SELECT * FROM crl_partition_urls")"
q "UPDATE crl_partition_urls SET url = 'http://evil/' WHERE issuer = 'fleet2'" 2>/dev/null &&
    die "a partition's recorded URL was changed"
"$BIN/keyline-ca" -c "$D/part.conf" revoke --serial "$(serial_of "$D/f2.pem")" > /dev/null 2>&1 ||
    die "revoke f2"
"$BIN/keyline-ca" -c "$D/part.conf" crl --issuer fleet2 --partition 0 > "$D/f0.crl" || die "crl fleet2/0"
openssl crl -in "$D/f0.crl" -noout -text | grep -A2 "Issuing Distribution Point" |
    grep -q "URI:$BASE/fleet2/0.crl\$" || die "fleet2/0's CRL does not name its recorded URL"
openssl verify -crl_check -CAfile "$D/chain2.pem" -CRLfile "$D/f0.crl" "$D/f1.pem" > "$D/v.txt" 2>&1 ||
    die "f1 with its partition's CRL: $(cat "$D/v.txt")"
openssl verify -crl_check -CAfile "$D/chain2.pem" -CRLfile "$D/f0.crl" "$D/f2.pem" > "$D/v.txt" 2>&1 &&
    die "revoked f2 verifies"
grep -q "certificate revoked" "$D/v.txt" || die "f2: $(cat "$D/v.txt")"
"$BIN/keyline-ca" -c "$D/part.conf" crl --issuer fleet2 --partition 1 > "$D/f1.crl" || die "crl fleet2/1"
openssl crl -in "$D/f1.crl" -noout -text | grep -A2 "Issuing Distribution Point" |
    grep -q "URI:http://127.0.0.1:8080/p/fleet2-1.der\$" || die "fleet2/1's CRL IDP"
ok "crl-url with {partition}: the partition where it says; a CA without the setting is refused"
ok "a crl-url change applies from the next partition on: a partition's CRL and certificates keep the URL recorded with it"

# the settings are checked when a program opens the CA, not at its first issuance
sed 's|^crl-partition-size = 3$|crl-partition-size = abc|' "$KL_CONF" > "$D/bad.conf"
grep -q "^crl-partition-size = abc" "$D/bad.conf" || die "bad.conf not written"
timeout 20 "$BIN/keyline-cad" -c "$D/bad.conf" > "$D/bad.out" 2>&1 && die "keyline-cad started with crl-partition-size = abc"
grep -q "bad.conf:[0-9]*: \[ca fleet1\] crl-partition-size = abc: expected a whole number" "$D/bad.out" ||
    die "keyline-cad's refusal: $(cat "$D/bad.out")"
"$BIN/keyline-ca" -c "$D/bad.conf" list > /dev/null 2> "$D/bad.err" && die "keyline-ca list with crl-partition-size = abc"
grep -q "crl-partition-size = abc" "$D/bad.err" || die "keyline-ca's refusal: $(cat "$D/bad.err")"
sed 's|^crl-url = .*|crl-url = http://127.0.0.1:8080/crl/{issuer}|' "$KL_CONF" > "$D/nopart.conf"
"$BIN/keyline-ca" -c "$D/nopart.conf" list > /dev/null 2> "$D/np.err" && die "a crl-url that names no partition accepted"
grep -q "names no partition" "$D/np.err" || die "refusal: $(cat "$D/np.err")"
printf '\n[ca fleet9]\ncrl-partition-size = 5\n' | cat "$KL_CONF" - > "$D/typo.conf"
"$BIN/keyline-ca" -c "$D/typo.conf" list > /dev/null 2> "$D/typo.err" || die "a [ca] section of no CA refused: $(cat "$D/typo.err")"
grep -q "\[ca fleet9\] in .*typo.conf: the store has no CA labelled 'fleet9'" "$D/typo.err" ||
    die "no warning for [ca fleet9]: $(cat "$D/typo.err")"
ok "a bad crl-partition-size or a crl-url that cannot name a partition stops keyline-cad and keyline-ca at start (file:line); a [ca LABEL] of no CA is a warning"

# revocations: d2 (partition 0), d5 and d6 (1) in one list, then d10 (3) alone
for i in 2 5 6; do serial_of "$D/d$i.pem"; done > "$D/list.txt"
kca revoke --from "$D/list.txt" --reason keyCompromise > "$D/r.out" 2> "$D/r.err" || die "revoke --from: $(cat "$D/r.err")"
grep -q "published the CRLs of 2 partitions of fleet1" "$D/r.err" || die "revoke --from: $(cat "$D/r.err")"
kca revoke --serial "$(serial_of "$D/d10.pem")" > /dev/null 2> "$D/r1.err" || die "revoke: $(cat "$D/r1.err")"
grep -q "published the CRLs of 1 partition of fleet1" "$D/r1.err" || die "revoke --serial: $(cat "$D/r1.err")"
for K in 0 1 3; do
    n=$(q "SELECT count(*) FROM crls WHERE issuer = 'fleet1/$K'")
    [ "$n" = 1 ] || die "partition $K's CRL was not published after its revocation"
done
n=$(q "SELECT count(*) FROM crls WHERE issuer = 'fleet1/2'")
[ "$n" = 0 ] || die "partition 2 (nothing revoked) was signed"
ok "a revocation signs the CRLs of the affected partitions only"

last=0
for K in 0 1 2 3; do
    kca crl --issuer fleet1 --partition "$K" --out "$D/p$K.pem" 2>/dev/null || die "crl --partition $K"
    num=$(crl_number "$D/p$K.pem")
    [ $((16#$num)) -gt "$last" ] || die "CRL number $num after $last"
    last=$((16#$num))
    openssl crl -in "$D/p$K.pem" -CAfile "$D/chain.pem" -noout -verify 2>&1 | grep -q "verify OK" ||
        die "partition $K's CRL does not verify"
    openssl crl -in "$D/p$K.pem" -noout -text > "$D/p$K.txt"
    grep -q "X509v3 Issuing Distribution Point: critical" "$D/p$K.txt" || die "p$K: no critical IDP: $(cat "$D/p$K.txt")"
    grep -A2 "Issuing Distribution Point" "$D/p$K.txt" | grep -q "URI:$BASE/fleet1/$K.crl\$" ||
        die "p$K: IDP name: $(grep -A3 "Issuing Distribution Point" "$D/p$K.txt")"
    certtool --verify-crl --load-ca-certificate "$D/fleet1.pem" --infile "$D/p$K.pem" > "$D/ct.txt" 2>&1 ||
        die "certtool --verify-crl p$K: $(cat "$D/ct.txt")"
done
for spec in "0:2" "1:5 6" "2:" "3:10"; do
    K=${spec%%:*}
    for i in ${spec#*:}; do serial_of "$D/d$i.pem"; done | sort > "$D/want"
    crl_serials "$D/p$K.pem" > "$D/got"
    cmp -s "$D/want" "$D/got" || die "partition $K lists $(tr '\n' ' ' < "$D/got"), expected $(tr '\n' ' ' < "$D/want")"
done
kca crl --issuer fleet1 --out "$D/full.pem" 2>/dev/null
[ $((16#$(crl_number "$D/full.pem"))) -gt "$last" ] || die "the full CRL's number did not increase"
[ "$(crl_serials "$D/full.pem" | wc -l)" = 4 ] || die "the full CRL lists $(crl_serials "$D/full.pem" | wc -l)"
openssl crl -in "$D/full.pem" -noout -text | grep -q "Issuing Distribution" && die "the full CRL has an IDP"
kca crl --issuer field1 --partition 0 > /dev/null 2>&1 && die "a partition of a CA without partitions"
kca crl --issuer fleet1 --partition x1 > /dev/null 2>&1 && die "a partition that is no number"
kca crl --issuer fleet1 --partition 4 > /dev/null 2>&1 && die "a partition fleet1 does not have (0-3) was signed"
ok "each partition's CRL: critical IDP with its name, its revoked alone (certtool --verify-crl); numbers increase; the full CRL lists all"

# verification with the partition's CRL
for i in $(seq 1 10); do
    K=${part[$i]}
    revoked=0
    case " 2 5 6 10 " in *" $i "*) revoked=1 ;; esac
    if openssl verify -crl_check -CAfile "$D/chain.pem" -CRLfile "$D/p$K.pem" "$D/d$i.pem" > "$D/v.txt" 2>&1; then
        [ $revoked = 0 ] || die "openssl: revoked d$i verifies with its partition's CRL"
    else
        [ $revoked = 1 ] && grep -q "certificate revoked" "$D/v.txt" ||
            die "openssl d$i (revoked=$revoked): $(cat "$D/v.txt")"
    fi
    cat "$D/d$i.pem" "$D/fleet1.pem" > "$D/dchain.pem"
    if certtool --verify --load-ca-certificate "$D/root1.pem" --load-crl "$D/p$K.pem" \
        --infile "$D/dchain.pem" > "$D/g.txt" 2>&1; then
        [ $revoked = 0 ] || die "certtool: revoked d$i verifies: $(tail -3 "$D/g.txt")"
    else
        [ $revoked = 1 ] && grep -qi "revoked" "$D/g.txt" ||
            die "certtool d$i (revoked=$revoked): $(tail -5 "$D/g.txt")"
    fi
done
# openssl keeps to the CRL's scope: partition 1's CRL does not cover d1 (partition 0)
openssl verify -crl_check -CAfile "$D/chain.pem" -CRLfile "$D/p1.pem" "$D/d1.pem" > "$D/v.txt" 2>&1 &&
    die "openssl used partition 1's CRL for a partition 0 certificate"
grep -q "different CRL scope" "$D/v.txt" || die "out of scope: $(cat "$D/v.txt")"
ok "openssl verify -crl_check and certtool --verify: revoked devices fail, good ones pass, each with its partition's CRL"

# served by keyline-estd like a full CRL
est_write_conf
est_start
hdr() { grep -i "^$1:" "$D/h" | head -1 | sed 's/^[^:]*: //' | tr -d '\r'; }
# a partition's CRL published complete is served as it is, not signed again by keyline-cad
n3=$(q "SELECT number FROM crls WHERE issuer = 'fleet1/3'")
curl -sf -o "$D/s0.der" "$EST_HTTP/crl/fleet1/3.crl" || die "GET /crl/fleet1/3.crl"
[ "$((16#$(openssl crl -inform DER -in "$D/s0.der" -noout -crlnumber | sed -e 's/.*=//' -e 's/^0x//')))" = "$n3" ] ||
    die "keyline-cad signed partition 3's CRL again (published: number $n3)"
URL=$EST_HTTP/crl/fleet1/1.crl
code=$(curl -s -D "$D/h" -o "$D/s1.der" -w '%{http_code}' "$URL")
[ "$code" = 200 ] || die "GET $URL: $code"
etag=$(hdr ETag)
[[ "$etag" =~ ^\"[0-9a-f]{32}\"$ ]] || die "ETag: '$etag'"
openssl crl -inform DER -in "$D/s1.der" -out "$D/s1.pem"
crl_serials "$D/s1.pem" > "$D/got"
for i in 5 6; do serial_of "$D/d$i.pem"; done | sort > "$D/want"
cmp -s "$D/want" "$D/got" || die "served partition 1 lists $(tr '\n' ' ' < "$D/got")"
grep -q "URI:$BASE/fleet1/1.crl" <(openssl crl -in "$D/s1.pem" -noout -text) || die "served CRL: no IDP"
code=$(curl -s -D "$D/h" -o "$D/s2" -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
[ "$code" = 304 ] && [ ! -s "$D/s2" ] || die "If-None-Match: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $(hdr Last-Modified)" "$URL")
[ "$code" = 304 ] || die "If-Modified-Since: $code"
for bad in fleet1/01.crl fleet1/x.crl fleet1/1/2.crl nosuch/0.crl fleet1/4.crl fleet1/99999.crl; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$EST_HTTP/crl/$bad")
    [ "$code" = 404 ] || die "GET /crl/$bad: $code"
done
curl -sf -o /dev/null "$EST_HTTP/crl/fleet1.crl" || die "the full CRL is no longer served"
# a CA label of 63 characters and partitions of one and two digits: every distribution point is
# served, with the CRL whose IDP names it (found by hostile testing: 404 once "L/K" was longer
# than 63 characters, every partition of a 62-character label)
kca ca cert --label "$LL" | cat "$D/root1.pem" - > "$D/llchain.pem"
for i in $(seq 0 10); do
    kca issue --issuer "$LL" --template device-ldevid --csr "$D/dev.csr" --out "$D/ll$i.pem" >/dev/null
done
for i in 0 9 10; do
    want="$BASE/$LL/$i.crl"
    [ "$(cdp_of "$D/ll$i.pem")" = "$want" ] || die "ll$i: CDP $(cdp_of "$D/ll$i.pem"), expected $want"
    code=$(curl -s -o "$D/ll.der" -w '%{http_code}' "$EST_HTTP/crl/$LL/$i.crl")
    [ "$code" = 200 ] || die "GET /crl/$LL/$i.crl: $code"
    openssl crl -inform DER -in "$D/ll.der" -CAfile "$D/llchain.pem" -noout -verify 2>&1 | grep -q "verify OK" ||
        die "/crl/$LL/$i.crl does not verify"
    openssl crl -inform DER -in "$D/ll.der" -noout -text | grep -A2 "Issuing Distribution Point" |
        grep -q "URI:$want\$" || die "/crl/$LL/$i.crl: not the IDP $want"
done
curl -s -D "$D/h" -o /dev/null "$EST_HTTP/crl/fleet1/0.crl"
etag0=$(hdr ETag)
kca revoke --serial "$(serial_of "$D/d4.pem")" > /dev/null 2>&1 || die "revoke d4"
for _ in $(seq 1 40); do
    code=$(curl -s -D "$D/h" -o "$D/s3.der" -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
    [ "$code" = 200 ] && break
    sleep 0.25
done
[ "$code" = 200 ] && [ "$(hdr ETag)" != "$etag" ] || die "after a revocation: $code"
openssl crl -inform DER -in "$D/s3.der" -noout -text | grep -q "$(serial_of "$D/d4.pem")" ||
    die "the served partition CRL misses the new revocation"
# partition 0 had no revocation: keyline-cad keeps its CRL (not signed again)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag0" "$EST_HTTP/crl/fleet1/0.crl")
[ "$code" = 304 ] || die "partition 0's CRL changed after a revocation in partition 1: $code"
ok "keyline-estd serves /crl/fleet1/K.crl: the published one when complete, ETag, 304, a new ETag and entry after a revocation in it, the same CRL after one elsewhere; bad names 404; a 63-character CA label's partitions too"
est_stop
n0=$(q "SELECT count(*) FROM crls WHERE issuer LIKE 'fleet1/%'")
[ "$n0" = 4 ] || die "$n0 partition CRLs recorded, expected 4 (no CRL for a partition fleet1 does not have)"

# retiring the CA: a final CRL for each partition too, with the full CRL's nextUpdate
kca ca retire --label fleet1 > /dev/null 2> "$D/ret.err" || die "ca retire: $(cat "$D/ret.err")"
full_next=$(q "SELECT next_update FROM crls WHERE issuer = 'fleet1'")
for K in 0 1 2 3; do
    [ "$(q "SELECT next_update FROM crls WHERE issuer = 'fleet1/$K'")" = "$full_next" ] ||
        die "partition $K has no final CRL"
done
ok "no CRL is signed for a partition the CA does not have; retiring the CA publishes each partition's final CRL"
