#!/usr/bin/env bash
# Mass revocation (issue 17 item 2) and the streamed CRL (item 1), checked with openssl and
# certtool:
#   - keyline-ca revoke --from FILE (serials in any case, with or without "serial:" or 0x, comments, a
#     leading byte order mark; - reads the standard input):
#     one transaction, one audit entry per certificate, one CRL after, every entry in it with
#     its reason, in serial order, the CRL verifying against the CA;
#   - a list naming an unknown certificate, or with two items on a line, is refused whole:
#     nothing revoked, no CRL;
#   - --issued-by LABEL --between T1 T2 revokes exactly the batch issued in that period;
#   - a CRL whose signing fails in the token (tests/tools/p11_fault.c) uses no CRL number;
#   - --dry-run (a list, a batch, one serial): what would be revoked listed, the same refusals,
#     nothing revoked, audited or published; --serial's dry run exits as its real run does;
#   - a device id recorded by issue --device-id names its one valid certificate (several:
#     refused), "device:" a device id with spaces; a date alone as T2 is its whole day (T1 may be
#     later that day), @SECONDS never.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

crl_number() { openssl crl -in "$1" -noout -crlnumber | sed 's/.*=//; s/^0x//'; }
crl_count() { openssl crl -in "$1" -noout -text | grep -c "Serial Number:"; }
revokes() { kca audit list 2>/dev/null | grep -c " revoke " || true; }

est_setup_ca
new_csr dev "/CN=mass-dev"
for i in $(seq 1 24); do
    kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/a$i.pem" >/dev/null
done
{
    printf '\xef\xbb\xbf' # a byte order mark, as spreadsheet exports write
    echo "# bad batch 7"
    for i in $(seq 1 11); do serial_of "$D/a$i.pem"; done | tr 'A-F' 'a-f'
    echo "0x$(serial_of "$D/a12.pem")" # as --serial takes it
    echo "serial:0X$(serial_of "$D/a13.pem")   # explicit"
    echo
} > "$D/list.txt"
n0=$(revokes)

# a list with one unknown serial: refused whole
cp "$D/list.txt" "$D/bad.txt"
echo "DEADBEEF0001" >> "$D/bad.txt"
if kca revoke --from "$D/bad.txt" --reason keyCompromise > "$D/bad.out" 2>&1; then
    die "a list with an unknown serial was accepted"
fi
grep -q "bad.txt item 14" "$D/bad.out" || die "the refusal does not say which item: $(cat "$D/bad.out")"
[ "$(revokes)" = "$n0" ] || die "a refused list revoked something"
kca list --status revoked --issuer field1 --json | grep -q serial && die "revoked rows after a refused list"
# two serials on one line: refused (it used to revoke the first and drop the second)
printf '# pasted\n%s %s\n' "$(serial_of "$D/a1.pem")" "$(serial_of "$D/a2.pem")" > "$D/two.txt"
kca revoke --from "$D/two.txt" > "$D/two.out" 2>&1 && die "a line of two serials was accepted"
grep -q "two.txt line 2: more than one item" "$D/two.out" || die "the refusal: $(cat "$D/two.out")"
[ "$(revokes)" = "$n0" ] || die "a refused list revoked something"
# a list file above the limit (512 MiB) is refused by its size, before it is read
truncate -s 600M "$D/huge.txt"
/usr/bin/time -f "%M" -o "$D/huge.rss" "$BIN/keyline-ca" -c "$KL_CONF" revoke --from "$D/huge.txt" \
    > "$D/huge.out" 2>&1 && die "a 600 MiB list was accepted"
grep -q "larger than the limit" "$D/huge.out" || die "the refusal: $(cat "$D/huge.out")"
[ "$(tail -1 "$D/huge.rss")" -lt 100000 ] || die "a 600 MiB list was read first: $(tail -1 "$D/huge.rss") KiB"
rm -f "$D/huge.txt"
ok "a list naming an unknown certificate is refused whole (item 14 named), a line of two serials too (line 2 named), a 600 MiB list by its size; nothing revoked"

# --dry-run: the same checks, what it would revoke listed, nothing changed
kca revoke --from "$D/bad.txt" --dry-run > /dev/null 2> "$D/bad.out" && die "a dry run of a bad list passed"
grep -q "bad.txt item 14" "$D/bad.out" || die "the dry run's refusal: $(cat "$D/bad.out")"
kca revoke --from "$D/list.txt" --reason keyCompromise --dry-run > "$D/dry.out" 2> "$D/dry.err" ||
    die "revoke --from --dry-run: $(cat "$D/dry.err")"
grep -q "dry run: would revoke 13 certificates (keyCompromise); 0 already revoked; 0 named more than once; nothing changed" "$D/dry.err" ||
    die "dry run said: $(cat "$D/dry.err")"
for i in $(seq 1 13); do echo "$(serial_of "$D/a$i.pem") field1"; done | sort > "$D/dry.want"
sort "$D/dry.out" | cmp -s - "$D/dry.want" || die "dry run listed: $(cat "$D/dry.out")"
[ "$(revokes)" = "$n0" ] || die "a dry run wrote audit entries"
kca list --status revoked --issuer field1 --json | grep -q serial && die "a dry run revoked something"
grep -q "published CRL" "$D/dry.err" && die "a dry run published a CRL"
ok "revoke --from --dry-run: the 13 listed (serial, issuer), the same refusal of a bad list, nothing revoked, audited or published"

kca revoke --from "$D/list.txt" --reason keyCompromise > "$D/r.out" 2> "$D/r.err" || die "revoke --from: $(cat "$D/r.err")"
grep -q "revoked 13 certificates" "$D/r.out" || die "revoke --from said: $(cat "$D/r.out")"
[ "$(grep -c "published CRL number" "$D/r.err")" = 1 ] || die "not one CRL after the list: $(cat "$D/r.err")"
[ $(( $(revokes) - n0 )) = 13 ] || die "audit: $(( $(revokes) - n0 )) revoke entries for 13 certificates"
kca audit verify > /dev/null || die "audit chain"
kca crl --issuer field1 --out "$D/c1.pem" 2>/dev/null
openssl crl -in "$D/c1.pem" -CAfile "$D/field1.pem" -noout -verify 2>&1 | grep -q "verify OK" ||
    die "CRL does not verify: $(openssl crl -in "$D/c1.pem" -CAfile "$D/field1.pem" -noout -verify 2>&1)"
[ "$(crl_count "$D/c1.pem")" = 13 ] || die "CRL has $(crl_count "$D/c1.pem") entries, expected 13"
[ "$(openssl crl -in "$D/c1.pem" -noout -text | grep -c "Key Compromise")" = 13 ] || die "reasons missing"
openssl crl -in "$D/c1.pem" -noout -text | awk '/Serial Number:/ {print $3}' > "$D/order"
for i in $(seq 1 13); do serial_of "$D/a$i.pem"; done > "$D/want"
python3 - "$D/order" "$D/want" <<'PY' || die "CRL entries not the 13 revoked, in serial order"
import sys
got = [int(l, 16) for l in open(sys.argv[1]) if l.strip()]
want = sorted(int(l, 16) for l in open(sys.argv[2]) if l.strip())
sys.exit(0 if got == want else 1)
PY
certtool --crl-info --infile "$D/c1.pem" > "$D/certtool.txt" 2>&1 || die "certtool: $(cat "$D/certtool.txt")"
grep -q "Revoked certificates (13)" "$D/certtool.txt" || die "certtool: $(head -20 "$D/certtool.txt")"
ok "revoke --from: 13 revoked in one run, 13 audit entries, one CRL; the CRL verifies (openssl), 13 entries in serial order with keyCompromise, certtool reads it"
serial_of "$D/a1.pem" | kca revoke --from - > "$D/again.out" 2> "$D/again.err" || die "--from -: $(cat "$D/again.err")"
grep -q "revoked 0 certificates .*; 1 already revoked" "$D/again.out" || die "--from - again: $(cat "$D/again.out")"
grep -q "published CRL" "$D/again.err" && die "a CRL published when nothing was revoked"
ok "revoke --from - (the standard input) of a revoked certificate: counted as already revoked, no CRL"

# a device id recorded by issue --device-id (no station inventory): its one valid certificate
new_csr hw "/CN=sensor/serialNumber=HWM001"
kca issue --issuer factory1 --template device-idevid --csr "$D/hw.csr" --device-id HWM001 --out "$D/hw1.pem" >/dev/null
echo "device:HWM001" | kca revoke --from - --dry-run > "$D/dev.out" 2> "$D/dev.err" || die "device:HWM001: $(cat "$D/dev.err")"
[ "$(cat "$D/dev.out")" = "$(serial_of "$D/hw1.pem") factory1" ] || die "device:HWM001 listed: $(cat "$D/dev.out")"
kca issue --issuer factory1 --template device-idevid --csr "$D/hw.csr" --device-id HWM001 --out "$D/hw2.pem" >/dev/null
rc=0; echo "HWM001" | kca revoke --from - > "$D/dev.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q "several valid certificates" "$D/dev.out" || die "a device id of two valid certificates (exit $rc): $(cat "$D/dev.out")"
kca revoke --serial "$(serial_of "$D/hw2.pem")" > /dev/null 2>&1 || die "revoke hw2"
echo "HWM001" | kca revoke --from - --reason superseded > "$D/dev.out" 2>&1 || die "HWM001: $(cat "$D/dev.out")"
kca show --serial "$(serial_of "$D/hw1.pem")" | grep -q "revoked" || die "HWM001's certificate not revoked"
echo "HWM001" | kca revoke --from - > "$D/dev.out" 2>&1 || die "HWM001 again: $(cat "$D/dev.out")"
grep -q "revoked 0 certificates .*; 1 already revoked" "$D/dev.out" || die "HWM001 again: $(cat "$D/dev.out")"
ok "revoke --from a device id of issue --device-id: its valid certificate; two valid ones refused (exit 3), all revoked counted"
# a device id that looks like a 0x serial: no certificate has that serial, so the device's
new_csr hx "/CN=sensor/serialNumber=0xBEEF01"
kca issue --issuer factory1 --template device-idevid --csr "$D/hx.csr" --device-id 0xBEEF01 --out "$D/hx.pem" >/dev/null
echo "0xBEEF01" | kca revoke --from - --dry-run > "$D/hx.out" 2> "$D/hx.err" || die "0xBEEF01: $(cat "$D/hx.err")"
[ "$(cat "$D/hx.out")" = "$(serial_of "$D/hx.pem") factory1" ] || die "0xBEEF01 listed: $(cat "$D/hx.out")"
ok "revoke --from: an item 0xHEX no serial matches names the device of that id"
# a device id with spaces: "device:" takes the rest of the line (to a '#'), unprefixed it is two items
new_csr hs "/CN=sensor/serialNumber=Line 3 unit 42"
kca issue --issuer factory1 --template device-idevid --csr "$D/hs.csr" --device-id "Line 3 unit 42" --out "$D/hs.pem" >/dev/null
printf 'device:Line 3 unit 42  # spaces inside the id\r\n' | kca revoke --from - --dry-run > "$D/hs.out" 2> "$D/hs.err" ||
    die "device:Line 3 unit 42: $(cat "$D/hs.err")"
[ "$(cat "$D/hs.out")" = "$(serial_of "$D/hs.pem") factory1" ] || die "device:Line 3 unit 42 listed: $(cat "$D/hs.out")"
echo "Line 3 unit 42" | kca revoke --from - > "$D/hs.out" 2>&1 && die "an unprefixed id with spaces was accepted"
grep -q "line 1: more than one item .*device:ID" "$D/hs.out" || die "the refusal: $(cat "$D/hs.out")"
ok "revoke --from: device:ID takes a device id with spaces (to a '#', blanks after it left out); unprefixed, refused with the hint"
# blanks after "device:" are not part of the id; one certificate named twice (its serial in
# two spellings, and its device) is revoked once and reported as named more than once, not as
# already revoked
printf 'device: \tLine 3 unit 42\n' | kca revoke --from - --dry-run > "$D/hs.out" 2> "$D/hs.err" ||
    die "device: Line 3 unit 42: $(cat "$D/hs.err")"
[ "$(cat "$D/hs.out")" = "$(serial_of "$D/hs.pem") factory1" ] || die "device: Line 3 unit 42 listed: $(cat "$D/hs.out")"
hs=$(serial_of "$D/hs.pem")
printf '%s\n0x%s\ndevice:Line 3 unit 42\n' "$hs" "$(tr 'A-F' 'a-f' <<<"$hs")" |
    kca revoke --from - > "$D/hs.out" 2>&1 || die "the same certificate three times: $(cat "$D/hs.out")"
grep -q "^revoked 1 certificate (unspecified); 2 named more than once (revoked once)$" "$D/hs.out" ||
    die "the same certificate three times: $(cat "$D/hs.out")"
ok "revoke --from: 'device: ID' names ID; a certificate named three ways is revoked once, reported as named more than once"

# the batch: issued in [T1, T2] only
sleep 1.1
t1=$(date +%s)
for i in $(seq 1 5); do
    kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/b$i.pem" >/dev/null
done
t2=$(date +%s)
sleep 1.1
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/after.pem" >/dev/null
kca revoke --issued-by field1 --between "@$t1" "@$t2" --dry-run > "$D/bdry.out" 2> "$D/bdry.err" ||
    die "batch dry run: $(cat "$D/bdry.err")"
for i in $(seq 1 5); do echo "$(serial_of "$D/b$i.pem") field1"; done > "$D/bdry.want"
cmp -s "$D/bdry.out" "$D/bdry.want" || die "batch dry run listed (in issue order): $(cat "$D/bdry.out")"
grep -q "would revoke 5 certificates" "$D/bdry.err" || die "batch dry run: $(cat "$D/bdry.err")"
kca show --serial "$(serial_of "$D/b1.pem")" | grep -q "valid" || die "a batch dry run revoked"
# --serial: the dry run refuses (and accepts) what the real run does, with its exit status
same_rc() { # WANT ARGS...: `revoke ARGS --dry-run` and then `revoke ARGS` both exit WANT
    local want=$1 rc=0; shift
    kca revoke "$@" --dry-run > "$D/sdry.out" 2> "$D/sdry.err" || rc=$?
    [ "$rc" = "$want" ] || die "revoke $* --dry-run: exit $rc, not $want: $(cat "$D/sdry.out" "$D/sdry.err")"
    rc=0
    kca revoke "$@" > "$D/sreal.out" 2> "$D/sreal.err" || rc=$?
    [ "$rc" = "$want" ] || die "revoke $*: exit $rc, not $want: $(cat "$D/sreal.out" "$D/sreal.err")"
}
same_rc 1 --serial "$(serial_of "$D/a1.pem")"
grep -q "is already revoked" "$D/sdry.err" || die "--serial --dry-run of a revoked certificate: $(cat "$D/sdry.err")"
same_rc 2 --serial "serial:$(serial_of "$D/a14.pem")"
same_rc 6 --serial "0x0123456789ABCDEF"
kca show --serial "$(serial_of "$D/a14.pem")" | grep -q "valid" || die "a refused --serial revoked"
kca revoke --serial "0x$(serial_of "$D/a14.pem" | tr 'A-F' 'a-f')" --dry-run > "$D/sdry.out" 2> "$D/sdry.err" ||
    die "--serial 0xhex --dry-run: $(cat "$D/sdry.err")"
[ "$(cat "$D/sdry.out")" = "$(serial_of "$D/a14.pem") field1" ] || die "--serial 0x --dry-run listed: $(cat "$D/sdry.out")"
kca revoke --serial "0x$(serial_of "$D/a14.pem")" > "$D/sreal.out" 2>&1 || die "--serial 0xhex: $(cat "$D/sreal.out")"
kca show --serial "$(serial_of "$D/a14.pem")" | grep -q "revoked" || die "--serial 0xhex did not revoke"
ok "revoke --serial: the dry run exits as the real run does (already revoked 1, serial: 2, unknown 6, 0xhex revoked)"
kca revoke --issued-by field1 --between "@$t1" "@$t2" --reason superseded > "$D/b.out" 2>&1 ||
    die "revoke --issued-by: $(cat "$D/b.out")"
grep -q "revoked 5 certificates" "$D/b.out" || die "batch: $(cat "$D/b.out")"
kca crl --issuer field1 --out "$D/c2.pem" 2>/dev/null
[ "$(crl_count "$D/c2.pem")" = 19 ] || die "CRL after the batch has $(crl_count "$D/c2.pem") entries (13 + a14 + 5)"
kca show --serial "$(serial_of "$D/after.pem")" | grep -q "valid" || die "a certificate after T2 was revoked"
kca show --serial "$(serial_of "$D/a24.pem")" | grep -q "valid" || die "a certificate before T1 was revoked"
kca revoke --issued-by field1 --between "@$((t2 + 10))" "@$t1" > /dev/null 2>&1 && die "T1 > T2 accepted"
kca revoke --issued-by nosuch --between 2026-01-01 2026-01-02 > /dev/null 2>&1 && die "unknown CA accepted"
kca revoke --issued-by field1 > /dev/null 2>&1 && die "--issued-by without --between accepted"
for bad in "@0 @99999999999999999999" "@+0 @5" "@0x10 @5" "2026-02-31 2026-03-05" "2026-01-01T24:00:00Z 2026-01-03"; do
    # shellcheck disable=SC2086 # two words
    kca revoke --issued-by field1 --between $bad > "$D/bad.out" 2>&1 && die "--between $bad accepted: $(cat "$D/bad.out")"
    grep -q -- "--between T1 T2: two times" "$D/bad.out" || die "--between $bad: $(cat "$D/bad.out")"
done
# a date alone as T2 is the whole day, also when T1 is later that day; a T2 of @SECONDS is not
# a date, however many digits it has
day=$(date -u -d "@$t1" +%F)
kca revoke --issued-by field1 --between "$(date -u -d "@$t1" +%FT%TZ)" "$day" --dry-run > "$D/day.out" 2> "$D/day.err" ||
    die "--between ${day}THH:MM:SSZ $day: $(cat "$D/day.err")"
grep -q "$(serial_of "$D/after.pem") field1" "$D/day.out" || die "--between T1 $day does not reach the end of the day: $(cat "$D/day.out")"
sqlite3 "$D/keyline.db" "UPDATE certs SET created = 100050000 WHERE serial = '$(serial_of "$D/a23.pem")'"
kca revoke --issued-by field1 --between @1 @100000000 --dry-run > "$D/day.out" 2> "$D/day.err" || die "$(cat "$D/day.err")"
[ ! -s "$D/day.out" ] || die "--between @1 @100000000 (a T2 of 10 characters) took a whole day: $(cat "$D/day.out")"
ok "revoke --issued-by field1 --between T1 T2: exactly the 5 issued in the period; bad periods refused (out of range, signed, dates that do not exist); T2 a date alone is its whole day after a T1 that day, @SECONDS never"

# a CRL that fails in the token uses no number
FAULT_MOD=$KL_BUILD/lib/p11_fault.so
[ -f "$FAULT_MOD" ] || die "no $FAULT_MOD"
export KL_P11_FAULT_FILE=$D/p11-fault KL_P11_FAULT_MODULE=$KL_MODULE
sed -i "s|^module = .*|module = $FAULT_MOD|" "$KL_CONF"
before=$(crl_number "$D/c2.pem")
echo "C_Sign CKR_DEVICE_ERROR" > "$KL_P11_FAULT_FILE"
kca crl --issuer field1 --out "$D/fail.pem" > /dev/null 2>&1 && die "CRL signed through a failing token"
rm -f "$KL_P11_FAULT_FILE"
kca crl --issuer field1 --out "$D/c3.pem" 2>/dev/null
after=$(crl_number "$D/c3.pem")
[ $(( 0x$after )) = $(( 0x$before + 1 )) ] || die "CRL number $before -> $after: the failed CRL used one"
ok "a CRL whose signing failed in the token used no CRL number ($before -> $after)"
