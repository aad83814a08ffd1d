# A release key requires the quorum (issue 16 item 2): a firmware key in [ceremony] release-keys
# signs only through a ceremony. The plain sign-image refuses it; officers approve a request that
# names the key, the options and the input's SHA-256; the run signs only that input; a changed
# input is refused at run. Officer tokens as in ceremony_quorum.sh.
source "$KL_SRC/tests/lib/common.sh"
source "$KL_SRC/tests/lib/firmware.sh"
source "$KL_SRC/tests/lib/officer.sh"
make_hierarchy
kca ca create --label fw1 --template firmware --issuer root1 --subject "CN=Release,O=Keyline Test" >fw1.pem 2>/dev/null
kca ca create --label fwdev --template firmware --issuer root1 --subject "CN=Development,O=Keyline Test" >fwdev.pem 2>/dev/null
officer_token alice 1111 pkcs11-tool EC:prime256v1
kca officer add --name alice --cert alice.pem >/dev/null || fail "officer add"
printf '\n[ceremony]\nrelease-keys = fw1\n' >>"$KL_CONF"

fw_payload app.bin 2048
rc=0; kca sign-image --key fw1 --in app.bin --out plain.img --version 3.0.0 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "release key.*ceremony propose sign-image" err.txt || { cat err.txt; fail "plain sign-image with a release key (exit $rc)"; }
[ ! -e plain.img ] || fail "refused plain sign-image wrote its output"
kca sign-image --key fwdev --in app.bin --out dev.img --version 3.0.0 --pad-header 2>/dev/null || fail "a key that is no release key"
ok "the plain sign-image refuses the release key fw1 and signs with fwdev"
# a rotation of the release key (ca rotate keeps the subject) is one too, before release-keys
# names it: else the successor, which devices take during the change-over, signs with no quorum
kca ca rotate --label fw1 --new-label fw1b >fw1b.pem 2>/dev/null || fail "rotate fw1"
rc=0; kca sign-image --key fw1b --in app.bin --out plain.img --version 3.0.0 --pad-header 2>err.txt || rc=$?
[ $rc = 4 ] && grep -q "'fw1b' is a release key" err.txt || { cat err.txt; fail "fw1b, a rotation of fw1, signed plainly (exit $rc)"; }
[ ! -e plain.img ] || fail "refused plain sign-image wrote its output"
ok "the plain sign-image refuses fw1b, a rotation of the release key fw1"

id=$(kca ceremony propose sign-image --key fw1 --in app.bin --out rel.img --version 3.0.0+7 \
  --security-counter 4 --pad-header yes --header-size 0x200)
kca ceremony show --id "$id" >show.txt
grep -q "^param in-sha256: $(sha256sum app.bin | cut -d' ' -f1)" show.txt || { cat show.txt; fail "the request does not carry the input's hash"; }
grep -q "^param in: /" show.txt || fail "the input path is not absolute in the request"
expect_fail "a run without approval" kca ceremony run --id "$id"
OFFICER_PIN=1111 kca ceremony approve --id "$id" --token "pkcs11:token=officer-alice;object=alice" --pin env:OFFICER_PIN 2>/dev/null ||
  fail "approve"
kca ceremony run --id "$id" 2>run.err || { cat run.err; fail "ceremony run"; }
[ "$(fw_field rel.img version)" = "3.0.0+7" ] && [ "$(fw_field rel.img counter)" = 4 ] && [ "$(fw_field rel.img hdr_size)" = 512 ] ||
  fail "the ceremony's image does not carry the approved options"
[ "$(fw_field rel.img keyhash)" = "$(fw_keyhash fw1.pem)" ] || fail "the ceremony signed with another key"
kca list --images | grep -q "fw1  *mcuboot 3.0.0+7  *4  *$(fw_field rel.img hash)" || fail "ceremony signing not in list --images"
kca ceremony export --id "$id" >tr.txt 2>/dev/null || fail "export"
grep -q "^result sha256: $(fw_field rel.img hash)" tr.txt || { cat tr.txt; fail "the transcript lacks the image hash"; }
ok "an approved ceremony signed exactly the approved input with fw1; transcript names the image hash"

id2=$(kca ceremony propose sign-image --key fw1 --in app.bin --out rel2.img --version 3.0.1 --pad-header yes)
OFFICER_PIN=1111 kca ceremony approve --id "$id2" --token "pkcs11:token=officer-alice;object=alice" --pin env:OFFICER_PIN 2>/dev/null
fw_flip app.bin 10 app.tmp && mv app.tmp app.bin
rc=0; kca ceremony run --id "$id2" 2>run2.err || rc=$?
[ $rc != 0 ] && grep -q "changed since the officers approved it" run2.err || { cat run2.err; fail "a changed input was signed"; }
[ ! -e rel2.img ] || fail "refused ceremony wrote its output"
expect_fail "a proposal whose --in-sha256 does not match" kca ceremony propose sign-image --key fw1 --in app.bin \
  --out x.img --version 1.0.0 --in-sha256 0000000000000000000000000000000000000000000000000000000000000000
expect_fail "a proposal with a bad version" kca ceremony propose sign-image --key fw1 --in app.bin --out x.img --version 1.0
# what the run would refuse is refused at the proposal, before officers approve it: a header
# size or alignment out of range, an unpadded input without zeroed header space, and "010",
# which the officers would read as 10 and the run would have written as counter 8
expect_fail "a proposal with a header size of 16" kca ceremony propose sign-image --key fw1 --in app.bin \
  --out x.img --version 1.0.0 --header-size 16 --pad-header yes
expect_fail "a proposal with an alignment of 3" kca ceremony propose sign-image --key fw1 --in app.bin \
  --out x.img --version 1.0.0 --align 3
expect_fail "a proposal for an unpadded input with data in its header space" kca ceremony propose sign-image \
  --key fw1 --in app.bin --out x.img --version 1.0.0 --header-size 0x200
expect_fail "a proposal with counter 010" kca ceremony propose sign-image --key fw1 --in app.bin \
  --out x.img --version 1.0.0 --security-counter 010 --pad-header yes
[ "$(kca ceremony list | grep -c sign-image)" = 2 ] || { kca ceremony list; fail "a refused proposal was recorded"; }
kca audit verify >/dev/null || fail "audit verify"
ok "a changed input and bad proposals refused"
