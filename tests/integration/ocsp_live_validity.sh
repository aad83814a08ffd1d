#!/usr/bin/env bash
# [cad] ocsp-validity (thisUpdate to nextUpdate) holds for every OCSP answer keyline-cad gives,
# not only the pre-produced ones: an operator who shortens it to bound how long a relying party
# may keep a "good" answer gets it for the answers signed live too (a request with a nonce, a
# SHA-256 CertID, several certificates). Checked with openssl ocsp against the root.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
printf '\n[cad]\nsocket = cad.sock\nocsp-validity = 600\n' >> "$KL_CONF"
est_write_conf
est_start

# span OUT [openssl ocsp args...]: nextUpdate - thisUpdate of each answer, one line each
span() {
    local out=$1
    shift
    openssl ocsp -url "$EST_HTTP/ocsp" -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" \
        -resp_text "$@" > "$out" 2>&1 || true
    grep -q "Response verify OK" "$out" || die "OCSP answer does not verify: $(cat "$out")"
    python3 - "$out" <<'PY'
import re, sys
from datetime import datetime
text = open(sys.argv[1]).read()
fmt = "%b %d %H:%M:%S %Y GMT"
def t(s):
    return datetime.strptime(" ".join(s.split()), fmt)
this = re.findall(r"^\s+This Update: (.*)$", text, re.M)
nxt = re.findall(r"^\s+Next Update: (.*)$", text, re.M)
assert this and len(this) == len(nxt), text
for a, b in zip(this, nxt):
    print(int((t(b) - t(a)).total_seconds()))
PY
}

for what in "nonce:-issuer $D/field1.pem -cert $D/est-server.crt" \
    "sha256:-issuer $D/field1.pem -sha256 -cert $D/est-server.crt -no_nonce" \
    "two:-issuer $D/field1.pem -cert $D/est-server.crt -serial 0x1234 -no_nonce"; do
    # shellcheck disable=SC2086 # the openssl arguments, split on purpose
    got=$(span "$D/${what%%:*}.txt" ${what#*:} | sort -u)
    [ "$got" = 600 ] || die "${what%%:*}: nextUpdate - thisUpdate = $got, not 600: $(cat "$D/${what%%:*}.txt")"
done
ok "live answers (nonce, SHA-256 CertID, two certificates) last ocsp-validity = 600 s"

est_stop
