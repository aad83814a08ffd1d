#!/usr/bin/env bash
# The store on a disk that fills up (hostile testing of full disks, D1): an ext4 file system
# with 1 KiB blocks (mke2fs's default from 3 to 512 MB), where SQLite's -shm pages are partly
# holes and a write into one through its memory map on a full disk was a SIGBUS after the
# commit: keyline-ca issue died with no message and its certificate recorded, keyline-cad died
# serving EST. Checked at each level of free space around the point where the store runs out:
#   - keyline-ca issue either succeeds (certificate written and recorded) or fails with
#     "database or disk is full" and records nothing; it never dies of a signal;
#   - keyline-cad stays up and answers EST with 200 or 503, every certificate handed out in
#     the store, none recorded that was not handed out;
#   - with the space back, the store passes integrity_check and audit verify, and issues.
# Needs root, a loop device and mkfs.ext4: without them the test is reported skipped (77).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

M=$(mktemp -d /tmp/keyline-full.XXXXXX)
IMG=$KL_TEST_DIR/fs.img
skip() { echo "skipped: $*"; rmdir "$M" 2>/dev/null || true; exit 77; }
[ "$(id -u)" = 0 ] || skip "not root (a loop mount is needed)"
command -v mkfs.ext4 >/dev/null || skip "no mkfs.ext4"
truncate -s 8M "$IMG"
mkfs.ext4 -q -m 0 -b 1024 "$IMG" || skip "mkfs.ext4 failed"
mount -o loop "$IMG" "$M" 2>"$KL_TEST_DIR/mount.err" || skip "cannot mount a loop file system: $(cat "$KL_TEST_DIR/mount.err")"
unmount() {
  est_cleanup
  wait 2>/dev/null || true
  umount "$M" 2>/dev/null || umount -l "$M" || true
  rmdir "$M" || true
}
trap 'unmount; est_cleanup' EXIT
sed -i "s|^path = keyline.db\$|path = $M/keyline.db|" "$KL_CONF"
grep -q "^path = $M/keyline.db\$" "$KL_CONF" || die "the store path was not set"

est_setup_ca
new_csr dev "/CN=full-dev"
new_csr edev "/CN=full-dev/serialNumber=HWFULL1"
# certificates of a subject (keyline-cad also makes OCSP signers' when it can)
rows() { sqlite3 "$M/keyline.db" "select count(*) from certs where subject like '%${1:-CN=full-dev}%'"; }
# fill: leave about $1 bytes free (in 1 KiB blocks)
fill() {
  rm -f "$M/fill"
  local a
  a=$(($(stat -f -c '%a*%S' "$M")))
  [ "$a" -gt "$1" ] || die "only $a bytes free before filling"
  # fallocate most of it (fast), then blocks of 1 KiB up to the level (what the file's own
  # extent blocks take is counted: fallocate alone can miss a small level)
  fallocate -l $(((a - $1) / 2048 * 1024)) "$M/fill"
  a=$(($(stat -f -c '%a*%S' "$M")))
  if [ "$a" -gt "$1" ]; then
    dd if=/dev/zero of="$M/fill" bs=1k count=$(((a - $1) / 1024)) oflag=append conv=notrunc 2>/dev/null || true
  fi
}

# keyline-ca issue at each level
refused=0 issued=0
for leave in $(seq 36864 4096 86016); do
  fill "$leave"
  n0=$(rows)
  rm -f "$D/c.pem"
  rc=0
  kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/c.pem" \
    >/dev/null 2>"$D/issue.err" || rc=$?
  rm -f "$M/fill"
  n1=$(rows)
  [ "$rc" -lt 128 ] || die "keyline-ca issue died of signal $((rc - 128)) with ~$leave bytes free (rows $n0 -> $n1)"
  if [ "$rc" = 0 ]; then
    [ -s "$D/c.pem" ] && [ "$n1" = $((n0 + 1)) ] || die "issued with ~$leave free: file or row missing (rows $n0 -> $n1)"
    issued=$((issued + 1))
  else
    grep -q "disk is full" "$D/issue.err" || die "refusal with ~$leave free: $(cat "$D/issue.err")"
    [ "$n1" = "$n0" ] || die "a refused issue recorded a certificate with ~$leave free (rows $n0 -> $n1)"
    [ ! -e "$D/c.pem" ] || die "a refused issue wrote its file"
    refused=$((refused + 1))
  fi
done
[ "$refused" -gt 0 ] && [ "$issued" -gt 0 ] || die "the sweep did not cross the point where the store runs out ($issued issued, $refused refused)"
ok "keyline-ca issue on a filling 1 KiB-block ext4: $issued issued, $refused refused with 'disk is full' and nothing recorded; no signal"

# keyline-cad serving EST at the levels where the store runs out
est_write_conf
served=0
for leave in 36864 40960 45056 49152 204800; do
  fill "$leave"
  rm -f "$M/keyline.db-shm" # a fresh wal-index on the full disk, as after a restart
  n0=$(rows HWFULL1)
  cad_start
  est_run
  wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
  got=0
  for i in 1 2 3; do
    code=$(ecurl -u "$EST_USER:$EST_PASS" -H 'Content-Type: application/pkcs10' \
      --data-binary @"$D/edev.b64" "$EST/simpleenroll")
    case $code in
      200) got=$((got + 1)) ;;
      503) ;;
      *) die "EST with ~$leave free: HTTP $code" ;;
    esac
  done
  kill -0 "$CAD_PID" 2>/dev/null || die "keyline-cad died with ~$leave bytes free: $(tail -3 "$D/cad.log")"
  est_stop
  rm -f "$M/fill"
  [ "$(rows HWFULL1)" = $((n0 + got)) ] || die "~$leave free: $got handed out, rows $n0 -> $(rows HWFULL1)"
  served=$((served + got))
done
[ "$served" -gt 0 ] || die "keyline-cad issued nothing even with 200 KB free"
ok "keyline-cad on the full disk: alive at every level, EST 200 or 503, the store holds exactly what was handed out ($served)"

# keyline-cad restarted, then the disk fills: the CRL it signs is the published one while that
# is current (read at the CA's revocation epoch, in its first half), so it is served, not 503
# for want of room to publish a new one (D7)
kca crl --issuer field1 --out "$D/pub.crl" >/dev/null 2>&1 || die "crl with room"
sleep 1.1 # past the published CRL's second (in it, a CRL signed now would be that one)
cad_start
est_run
wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
fill 0
code=$(curl -s -o "$D/served.crl" -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
rm -f "$M/fill"
[ "$code" = 200 ] || die "CRL of field1 after a restart on the full disk: HTTP $code"
openssl crl -in "$D/pub.crl" -outform DER | cmp -s - "$D/served.crl" ||
  die "the CRL served is not the published one"
est_stop
ok "keyline-cad restarted, the disk full: the published CRL, current, is served (200, byte for byte)"

# a backup onto the full disk fails and leaves nothing there (the copy's -wal and -shm too);
# with no room for a -shm at all, commands say the disk is full, not "disk I/O error" only
B=$M/bk
mkdir "$B"
mount -t tmpfs -o size=$(($(stat -c %s "$M/keyline.db") / 1024 + 8))k tmpfs "$B" # a few KB short
if kca store backup --out "$B/bk.db" >"$D/bk.out" 2>&1; then die "a backup onto a full disk succeeded"; fi
left=$(ls "$B")
umount "$B"
rmdir "$B"
[ -z "$left" ] || die "a failed backup left $left"
rm -f "$M/keyline.db-shm"
fill 0
if kca list >/dev/null 2>"$D/list.err"; then
  ok "(list worked with the disk full: SQLite made its -shm)"
else
  grep -q "No space left on device" "$D/list.err" || die "full disk reported as: $(cat "$D/list.err")"
fi
rm -f "$M/fill"
ok "a backup onto the full disk fails and leaves no file; a full disk is named as such"

[ "$(sqlite3 "$M/keyline.db" 'pragma integrity_check')" = ok ] || die "integrity_check"
kca audit verify >/dev/null || die "audit verify after the full disk"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev.csr" --out "$D/after.pem" >/dev/null ||
  die "no issue with the space back"
ok "with the space back: integrity_check ok, audit verify ok, issuance works"
