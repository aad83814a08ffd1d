#!/usr/bin/env bash
# A revocation is pre-produced while keyline-cad's OCSP pre-producer is in a long full pass
# (ca/cad/cad_ocsp.c): revocations have a thread of their own and never wait for a pass that
# signs for seconds. 60000 valid certificates of field1 (rows as ca_issue writes them, by SQL,
# not through the HSM), ocsp-validity 40 (a full pass every 10 s, the first at start); dev2 is
# revoked at once after keyline-cad is up and must be answered revoked by keyline-cad itself
# (no keyline-estd front cache) before that first pass has ended.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
printf '\n[cad]\nsocket = cad.sock\nocsp-validity = 40\nocsp-preproduce = 100000\n' >> "$KL_CONF"
est_write_conf # the roles: this uid asks keyline-cad as keyline-estd would
new_csr dev2 "/CN=pre-dev2/serialNumber=HWP002"
kca issue --issuer field1 --template device-ldevid --csr "$D/dev2.csr" --out "$D/dev2.pem" >/dev/null
python3 - "$D/keyline.db" <<'PY'
import os, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
t = int(time.time())
der = os.urandom(300)
c.executemany("INSERT INTO certs (serial, status, issuer, subject, template, not_before, not_after,"
              " der, created) VALUES (?, 'valid', 'field1', 'CN=x', 'device-ldevid', ?, ?, ?, ?)",
              (("%016X" % (0x5000000000000000 + i * 7919), t, t + 86400, der, t) for i in range(60000)))
c.commit()
PY
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev2.pem" -no_nonce -reqout "$D/req2.der" >/dev/null 2>&1 ||
    die "cannot make the OCSP request"
cad_status() { # the status keyline-cad itself answers for dev2
    "$BIN/kl_cad_client" -o "$D/resp2.der" "$D/cad.sock" ocsp ocsp-req=@"$D/req2.der" >/dev/null 2>&1 &&
        openssl ocsp -respin "$D/resp2.der" -resp_text -noverify 2>/dev/null | sed -n 's/^ *Cert Status: //p' | head -1
}
: > "$D/cad.log"
cad_start
kca revoke --serial "$(serial_of "$D/dev2.pem")" --reason keyCompromise >/dev/null 2>&1 || die "revoke dev2"
t0=$(date +%s.%N)
for _ in $(seq 1 100); do
    [ "$(cad_status)" = revoked ] && break
    sleep 0.05
done
t1=$(date +%s.%N)
[ "$(cad_status)" = revoked ] || die "dev2 not answered revoked 5 s after keyline-ca revoke"
# when the first pass ended: its log line (UTC, ms)
for _ in $(seq 1 300); do
    grep -q "answers pre-produced" "$D/cad.log" && break
    sleep 0.1
done
end=$(grep -m1 "answers pre-produced" "$D/cad.log" | cut -d' ' -f1)
[ -n "$end" ] || die "the first pass did not end within 30 s"
end_s=$(date -ud "$end" +%s.%N)
echo "revocation visible $(echo "$t1 - $t0" | bc) s after revoke; the first pass ended $(echo "$end_s - $t0" | bc) s after it"
[ "$(echo "$end_s > $t0 + 0.5" | bc)" = 1 ] || die "the first pass ended before the revocation: too few certificates to test"
[ "$(echo "$t1 < $end_s" | bc)" = 1 ] || die "the revocation waited for the full pass to end"
ok "a revocation is answered revoked while a full pass of 60000 answers is still signing"
cad_stop
