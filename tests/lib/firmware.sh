# Firmware image helpers for tests/integration/firmware_*.sh (sourced after common.sh).

# fw_payload FILE N: N bytes of application "firmware" (deterministic)
fw_payload() {
  python3 -c 'import sys; n=int(sys.argv[2]); open(sys.argv[1],"wb").write(bytes((i*13+5)&0xff for i in range(n)))' "$1" "$2"
}
# fw_flip IN OFFSET OUT: copy IN to OUT with the byte at OFFSET (negative: from the end) flipped
fw_flip() {
  python3 -c '
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[int(sys.argv[2])] ^= 0x01
open(sys.argv[3], "wb").write(d)' "$1" "$2" "$3"
}
# fw_field IMAGE NAME: a field of an MCUboot image, read by offsets (independent of our parser):
# hdr_size, img_size, prot_size, version, tlv (offset of the unprotected TLV area), sig (offset
# of the signature value), counter (value of the protected SEC_CNT TLV), hash (hex of SHA256 TLV)
fw_field() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
magic, load, hdr, prot, isz, flags, ma, mi, rev, build = struct.unpack("<IIHHIIBBHI", b[:28])
assert magic == 0x96f3b83d
tlv = hdr + isz + prot
out = {"hdr_size": hdr, "img_size": isz, "prot_size": prot, "version": "%d.%d.%d+%d" % (ma, mi, rev, build),
       "tlv": tlv}
# walk the unprotected area: SHA256 (0x10), KEYHASH (0x01), ECDSA_SIG (0x22)
m, tot = struct.unpack("<HH", b[tlv:tlv + 4])
off = tlv + 4
while off < tlv + tot:
    t, l = struct.unpack("<HH", b[off:off + 4])
    if t == 0x10: out["hash"] = b[off + 4:off + 4 + l].hex()
    if t == 0x01: out["keyhash"] = b[off + 4:off + 4 + l].hex()
    if t == 0x22: out["sig"] = off + 4
    off += 4 + l
if prot:
    out["counter"] = struct.unpack("<I", b[hdr + isz + 8:hdr + isz + 12])[0]
    out["counter_off"] = hdr + isz + 8
print(out[sys.argv[2]])
PY
}
# fw_keyhash CERT: MCUboot's key hash of a certificate's key (SHA-256 of the DER SPKI)
fw_keyhash() {
  openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1
}
