#!/usr/bin/env bash
# A deployment that actually separates them (issue 11, item 4): keyline-cad runs as the CA user
# (here root) with the PIN file, the token folder and the store file readable by it alone (mode
# 0600 / 0700, owned by root); keyline-estd runs under another, unused uid (setpriv) whose only
# way to the CA is keyline-cad's socket: socket-group nogroup, socket-mode 0660, the test folder
# o+x, and [role est] users = that uid. keyline-estd enrolls devices (Basic and IDevID, CRL,
# OCSP), yet that uid cannot read the PIN file, open the token folder, or open or write the
# store file; a uid outside the socket's group cannot connect, and one inside it without a role
# is refused by keyline-cad (SO_PEERCRED).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
[ "$(id -u)" = 0 ] || die "this test runs keyline-estd under another uid (setpriv): run it as root"
command -v setpriv >/dev/null || die "setpriv (util-linux) is required"
getent group nogroup >/dev/null || die "no group nogroup"

free_uid() { # the first uid from $1 that no account has
    local u=$1
    while getent passwd "$u" >/dev/null; do u=$((u + 1)); done
    echo "$u"
}
EU=$(free_uid 4301)                # keyline-estd's uid
OU=$(free_uid $((EU + 1)))         # another uid, in the socket's group, without a role
XU=$(free_uid $((OU + 1)))         # another uid, outside the socket's group
GRP=$(getent group nogroup | cut -d: -f3)
as_est() { setpriv --reuid "$EU" --regid "$GRP" --clear-groups "$@"; }

# the CA user's secrets: the PIN in a file (not the environment), 0600
printf '%s\n' "$KEYLINE_PIN" > "$D/pin.txt"
chmod 600 "$D/pin.txt"
sed -i 's|^pin = .*|pin = file:pin.txt|' "$KL_CONF"
unset KEYLINE_PIN

est_setup_ca
est_write_conf
cat >> "$KL_CONF" <<CONF

[role est]
users = $EU
CONF
sed -i 's|^\[cad\]$|[cad]\nsocket-group = nogroup\nsocket-mode = 0660|' "$KL_CONF"
# what keyline-estd needs to read: the config, its TLS certificate and key, the htpasswd file
chmod 711 "$D"
chmod 644 "$KL_CONF" "$D/est-server.pem"
chown "$EU" "$D/est-server.key" "$D/est.htpasswd"
chmod 400 "$D/est-server.key"
chmod 600 "$D/est.htpasswd"
# what only the CA user may touch
chmod 700 "$D/tokens"
chmod 600 "$D/keyline.db"
for f in "$D/pin.txt" "$D/tokens" "$D/keyline.db"; do
    [ "$(stat -c %U "$f")" = root ] || die "$f is not owned by root"
done
[ "$(stat -c %a "$D/pin.txt")" = 600 ] && [ "$(stat -c %a "$D/tokens")" = 700 ] &&
    [ "$(stat -c %a "$D/keyline.db")" = 600 ] || die "modes of the CA user's files"

cad_start
[ "$(stat -c '%a %G' "$D/cad.sock")" = "660 nogroup" ] || die "socket: $(stat -c '%a %G' "$D/cad.sock")"
est_run setpriv --reuid "$EU" --regid "$GRP" --clear-groups
wait_up "$EST_PID" "keyline-estd (uid $EU)" curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
[ "$(awk '/^Uid:/ {print $2 $3 $4 $5}' "/proc/$EST_PID/status")" = "$EU$EU$EU$EU" ] ||
    die "keyline-estd does not run as uid $EU: $(grep Uid "/proc/$EST_PID/status")"
[ "$(awk '/^Groups:/ {print $2}' "/proc/$EST_PID/status")" = "" ] || die "keyline-estd has supplementary groups"
grep -q "this process has role est there" "$D/estd.log" || die "role est not granted to uid $EU"
ok "keyline-cad as root, keyline-estd as uid $EU (group nogroup only), role est by SO_PEERCRED"

# --- it enrolls devices ------------------------------------------------------------------------
expect_status 200 "healthz" "$EST_URL/healthz"
new_csr dev "/CN=sep-dev/serialNumber=HWS001"
expect_status 200 "simpleenroll (Basic)" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/dev.pem" >/dev/null || die "cert does not verify"
new_csr ldev "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "simpleenroll (IDevID)" --cert "$D/idev.crt" --key "$D/idev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/ldev.pem"
new_csr ldev2 "/CN=sensor-0001/serialNumber=HW0001"
expect_status 200 "simplereenroll (LDevID)" --cert "$D/ldev.pem" --key "$D/ldev.key" \
    -H "Content-Type: application/pkcs10" --data-binary @"$D/ldev2.b64" "$EST/simplereenroll"
expect_status 200 "cacerts" "$EST/cacerts"
kca revoke --serial "$(serial_of "$D/dev.pem")" --reason keyCompromise >/dev/null
st=$(curl -s -o "$D/f1.crl" -w '%{http_code}' "$EST_HTTP/crl/field1.crl")
[ "$st" = 200 ] && openssl crl -inform DER -in "$D/f1.crl" -noout -text | grep -q "$(serial_of "$D/dev.pem")" ||
    die "CRL through the separated keyline-estd: $st"
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -url "$EST_HTTP/ocsp" -CAfile "$D/root1.pem" \
    -verify_other "$D/field1.pem" > "$D/ocsp.txt" 2>&1 || true
grep -q "dev.pem: revoked" "$D/ocsp.txt" || die "OCSP: $(cat "$D/ocsp.txt")"
kca audit list > "$D/audit.txt"
grep -q "uid $EU ($EU) as est; client cert" "$D/audit.txt" || die "audit actor: $(tail -2 "$D/audit.txt")"
ok "uid $EU enrolls (Basic, IDevID, renewal), serves cacerts, CRL, OCSP; audited as uid $EU"

# --- and cannot reach the CA's secrets ---------------------------------------------------------
if as_est cat "$D/pin.txt" >/dev/null 2>&1; then die "uid $EU can read the PIN file"; fi
if as_est ls "$D/tokens" >/dev/null 2>&1; then die "uid $EU can open the token folder"; fi
if as_est sh -c ": >> '$D/keyline.db'" 2>/dev/null; then die "uid $EU can write the store file"; fi
if as_est sqlite3 "$D/keyline.db" "SELECT count(*) FROM certs" >/dev/null 2>&1; then
    die "uid $EU can read the store"
fi
# keyline-estd itself: no such file open, no PIN in its environment
if ls -l "/proc/$EST_PID/fd" | grep -q -e "$D/tokens" -e "keyline.db" -e "pin.txt"; then
    die "keyline-estd has a CA file open"
fi
if tr '\0' '\n' < "/proc/$EST_PID/environ" | grep -q "^KEYLINE_PIN="; then die "PIN in keyline-estd's environment"; fi
ok "uid $EU cannot read the PIN file, open the token folder, or read or write the store file"

# --- the socket: the group and the role decide ---------------------------------------------------
rc=0
setpriv --reuid "$XU" --regid "$XU" --clear-groups "$BIN/kl_cad_client" "$D/cad.sock" hello version=1 \
    >/dev/null 2>"$D/x.err" || rc=$?
[ "$rc" != 0 ] && grep -qi "permission denied" "$D/x.err" || die "uid $XU outside the group reached keyline-cad: $rc $(cat "$D/x.err")"
openssl req -in "$D/dev.csr" -outform DER -out "$D/dev.der"
chmod 644 "$D/dev.der"
rc=0
setpriv --reuid "$OU" --regid "$GRP" --clear-groups "$BIN/kl_cad_client" "$D/cad.sock" issue \
    profile=est csr=@"$D/dev.der" auth=basic auth-user=x >/dev/null 2>"$D/o.err" || rc=$?
[ "$rc" = 4 ] && grep -q "uid $OU has no role" "$D/o.err" || die "uid $OU without a role: $rc $(cat "$D/o.err")"
ok "outside the socket's group: no connection; in the group without a role: refused by keyline-cad"
est_stop
ok "SIGTERM -> both exit 0"
