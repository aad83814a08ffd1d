# keyline-ca sign-image and its output: an image never exists at --out without its record, and
# a write that fails records nothing. The image goes to a temporary file beside --out (fsynced),
# then the signing is recorded, then the file is renamed into place. The failing write is real:
# RLIMIT_FSIZE (ulimit -f, SIGXFSZ ignored) makes a write past the limit fail with EFBIG after
# --out passed the writable check; the store, far below the limit, is written normally. Also
# the options --format cms refuses (MCUboot's header and trailer options).
source "$KL_SRC/tests/lib/common.sh"
source "$KL_SRC/tests/lib/firmware.sh"
source "$KL_SRC/tests/lib/officer.sh"
make_hierarchy
kca ca create --label fw1 --template firmware --issuer root1 --subject "CN=IO,O=Keyline Test" >fw1.pem 2>/dev/null ||
  fail "ca create fw1"
images() { kca list --images --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
signings() { kca audit list | grep -c " sign-image " || true; }
# no image and no temporary file left beside it
no_output() { ! ls "$1" "$1".tmp* >/dev/null 2>&1 || fail "$2: left $(ls "$1" "$1".tmp* 2>/dev/null)"; }
# limited CMD...: run keyline-ca with files capped at 2 MiB (ulimit -f counts KiB)
limited() { (ulimit -f 2048; trap '' XFSZ; exec "$KL_BIN/keyline-ca" -c "$KL_CONF" "$@"); }

fw_payload big.bin $((6 * 1024 * 1024))
fw_payload small.bin 3000
store_kib=$(du -k -c keyline.db* | tail -1 | cut -f1)
[ "$store_kib" -lt 1024 ] || fail "the store ($store_kib KiB) is too near the 2 MiB file limit for this test"

# --- a write that fails before the record: nothing recorded, nothing written -------------------
n_img=$(images); n_audit=$(signings)
rc=0; limited sign-image --key fw1 --in big.bin --out big.img --version 1.0.0 --pad-header 2>big.err || rc=$?
[ $rc = 1 ] && grep -q "^keyline-ca: .*big.img: File too large; nothing was recorded or written" big.err ||
  fail "a write past RLIMIT_FSIZE: exit $rc $(cat big.err)"
no_output big.img "a failed write"
[ "$(images)" = "$n_img" ] || fail "a signing whose image could not be written is in list --images: $(kca list --images)"
[ "$(signings)" = "$n_audit" ] || fail "a signing whose image could not be written is in the audit log"
ok "a write that fails (EFBIG) records nothing and leaves no file: $(cat big.err)"
limited sign-image --key fw1 --in small.bin --out small.img --version 1.0.1 --pad-header 2>/dev/null ||
  fail "a small image under the same file limit"
[ "$(images)" = $((n_img + 1)) ] && [ "$(signings)" = $((n_audit + 1)) ] || fail "the small image is not recorded"
[ "$(fw_field small.img img_size)" = 3000 ] || fail "small.img"
! ls small.img.tmp* >/dev/null 2>&1 || fail "a temporary file is left beside small.img"
kca sign-image --key fw1 --in big.bin --out big.img --version 1.0.2 --pad-header 2>/dev/null || fail "the big image without the limit"
[ "$(fw_field big.img img_size)" = $((6 * 1024 * 1024)) ] || fail "big.img"
[ "$(images)" = $((n_img + 2)) ] || fail "the big image is not recorded"
kca list --images | grep -q " 1.0.2+0 .* $(fw_field big.img hash) " || fail "list --images lacks big.img"
ok "signings that are written are recorded, with no temporary file left"

# --- recording fails: the temporary file is removed, nothing at --out --------------------------
sqlite3 keyline.db "CREATE TRIGGER kl_test_no_images BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'test: no recording'); END;"
n_img=$(images)
rc=0; kca sign-image --key fw1 --in small.bin --out norec.img --version 1.0.3 --pad-header 2>norec.err || rc=$?
[ $rc != 0 ] && grep -q "test: no recording" norec.err || fail "a signing that could not be recorded: exit $rc $(cat norec.err)"
no_output norec.img "a signing that could not be recorded"
sqlite3 keyline.db "DROP TRIGGER kl_test_no_images"
[ "$(images)" = "$n_img" ] || fail "list --images changed"
ok "a signing that cannot be recorded releases nothing: $(cat norec.err)"

# --- --format cms: MCUboot's header and trailer options are refused, the counter is recorded ---
n_img=$(images); n_audit=$(signings)
for opt in --pad-header "--align 8" "--align 1" "--header-size 0x200" "--header-size 32"; do
  rc=0; kca sign-image --key fw1 --in small.bin --out r.p7s --version 1.0.0 --format cms $opt 2>cms.err || rc=$?
  [ $rc = 2 ] && grep -q "^keyline-ca: ${opt%% *} applies to --format mcuboot only (a detached CMS signature has no MCUboot header or trailer)$" cms.err ||
    fail "--format cms $opt: exit $rc $(cat cms.err)"
  no_output r.p7s "--format cms $opt"
done
[ "$(images)" = "$n_img" ] && [ "$(signings)" = "$n_audit" ] || fail "a refused --format cms was recorded"
kca sign-image --key fw1 --in small.bin --out c.p7s --version 1.0.4 --format cms --security-counter 9 2>/dev/null ||
  fail "--format cms --security-counter"
openssl cms -verify -binary -inform DER -in c.p7s -content small.bin -CAfile root1.pem -purpose any -out /dev/null 2>/dev/null ||
  fail "openssl cms -verify"
kca list --images --json | python3 -c '
import json, sys
v = json.load(sys.stdin)[-1]
assert (v["format"], v["version"], v["security_counter"]) == ("cms", "1.0.4+0", 9), v' || fail "the cms counter is not recorded"
ok "--format cms refuses --pad-header, --align, --header-size (exit 2, nothing recorded); its counter is recorded"

# --- the ceremony: the same order --------------------------------------------------------------
kca ca create --label fwrel --template firmware --issuer root1 --subject "CN=IO Release,O=Keyline Test" >fwrel.pem 2>/dev/null ||
  fail "ca create fwrel"
officer_token alice 1111 pkcs11-tool EC:prime256v1
kca officer add --name alice --cert alice.pem >/dev/null || fail "officer add"
printf '\n[ceremony]\nrelease-keys = fwrel\n' >>"$KL_CONF"
rc=0; kca ceremony propose sign-image --key fwrel --in small.bin --out r.p7s --version 1.0.0 --format cms \
  --align 8 >/dev/null 2>prop.err || rc=$?
[ $rc = 2 ] && grep -q -- "--align applies to --format mcuboot only" prop.err || fail "ceremony propose --format cms --align 8: exit $rc $(cat prop.err)"
rc=0; kca ceremony propose sign-image --key fwrel --in small.bin --out r.p7s --version 1.0.0 --format cms \
  --pad-header yes >/dev/null 2>prop.err || rc=$?
[ $rc = 2 ] && grep -q -- "--pad-header applies to --format mcuboot only" prop.err || fail "ceremony propose --format cms --pad-header yes: exit $rc $(cat prop.err)"
id=$(kca ceremony propose sign-image --key fwrel --in big.bin --out rel.img --version 2.0.0 --pad-header yes)
OFFICER_PIN=1111 kca ceremony approve --id "$id" --token "pkcs11:token=officer-alice;object=alice" --pin env:OFFICER_PIN 2>/dev/null ||
  fail "approve"
n_img=$(images)
rc=0; limited ceremony run --id "$id" 2>run.err || rc=$?
[ $rc != 0 ] && grep -q "rel.img: File too large; nothing was recorded or written" run.err ||
  fail "ceremony run with a failing write: exit $rc $(cat run.err)"
no_output rel.img "a ceremony whose write failed"
[ "$(images)" = "$n_img" ] || fail "a ceremony's signing whose image could not be written is in list --images"
kca ceremony run --id "$id" 2>run.err || fail "ceremony run again, without the limit: $(cat run.err)"
[ "$(fw_field rel.img version)" = "2.0.0+0" ] && [ "$(images)" = $((n_img + 1)) ] || fail "the ceremony's image"
ok "ceremony run: a failed write records nothing and leaves no file; the run again signs and records"
