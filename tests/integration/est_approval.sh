#!/usr/bin/env bash
# keyline-estd with manual approval ([est.label held] approval = manual): simpleenroll answers
# 202 + Retry-After (RFC 7030 4.2.3) and holds the request; `keyline-ca request approve`
# issues the certificate through the CA pipeline and the client's retry gets it (200);
# `request reject` makes the retry 403; a CSR that policy refuses is refused at once, not held.
# keyline-cad holds the request (submit): the requester it records is what it authenticated
# itself (the peer uid and role) plus what keyline-estd says it verified (the Basic user).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf "retry-after = 7"
printf '\n[est.label held]\napproval = manual\n' >> "$KL_CONF"
est_start
enroll() { # enroll NAME PATH-PREFIX: POST NAME's CSR with Basic auth, status on stdout
    ecurl -D "$D/hdr" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
        --data-binary @"$D/$1.b64" "$2/simpleenroll"
}

new_csr auto1 "/CN=auto-device/serialNumber=HWA001"
st=$(enroll auto1 "$EST")
[ "$st" = 200 ] || die "default label (approval = auto): HTTP $st"
ok "default label issues at once"
ncerts() { kca list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
n0=$(ncerts)

# held: 202 with Retry-After from the config, the same request on every retry
new_csr held1 "/CN=held-device-1/serialNumber=HWH001"
st=$(enroll held1 "$EST/held")
[ "$st" = 202 ] || die "held label: HTTP $st, expected 202 ($(cat "$D/out"))"
grep -qi '^retry-after: 7' "$D/hdr" || die "202 without Retry-After: 7"
id=$(grep -o 'request [0-9]*' "$D/out" | awk '{print $2}')
[ -n "$id" ] || die "202 body does not name the request: $(cat "$D/out")"
st=$(enroll held1 "$EST/held")
[ "$st" = 202 ] && grep -q "request $id " "$D/out" || die "retry: HTTP $st, $(cat "$D/out")"
kca request list --status pending | grep -q "^$id .*pending .*held .*as est; basic user $EST_USER .*CN=held-device-1" ||
    { kca request list; die "request list does not show the pending request"; }
kca request show --id "$id" > "$D/show.txt"
sed -n '/BEGIN CERTIFICATE REQUEST/,/END CERTIFICATE REQUEST/p' "$D/show.txt" |
    openssl req -noout -pubkey > "$D/held1.shown.pub"
openssl pkey -in "$D/held1.key" -pubout | cmp -s - "$D/held1.shown.pub" || die "request show: not the client's CSR"
grep -q "^status: *pending" "$D/show.txt" || die "request show: status"
[ "$(ncerts)" = "$n0" ] || die "a held request issued a certificate"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_requests_pending 1$' "$D/out" || die "metrics: held request not counted"
ok "held request: 202 + Retry-After 7, same request $id on retry, listed and shown for the officer"

# approve: the officer's tool issues; the retry picks the certificate up
kca request approve --id "$id" | grep -q "approved request $id: issued" || die "approve"
if kca request approve --id "$id" >/dev/null 2>&1; then die "approving twice succeeded"; fi
st=$(enroll held1 "$EST/held")
[ "$st" = 200 ] || die "retry after approval: HTTP $st ($(cat "$D/out"))"
grep -qi '^content-type: application/pkcs7-mime; *smime-type=certs-only' "$D/hdr" || die "content type"
p7_to_pem "$D/out" "$D/held1.pem"
openssl verify -CAfile "$D/root1.pem" -untrusted "$D/field1.pem" "$D/held1.pem" >/dev/null || die "held1 does not verify"
[ "$(openssl x509 -in "$D/held1.pem" -noout -pubkey)" = "$(openssl pkey -in "$D/held1.key" -pubout)" ] || die "held1 key"
kca request list --status approved | grep -q "^$id " || die "request not listed approved"
st=$(enroll held1 "$EST/held")
[ "$st" = 200 ] || die "second retry: HTTP $st"
p7_to_pem "$D/out" "$D/held1b.pem"
cmp -s "$D/held1.pem" "$D/held1b.pem" || die "second retry: another certificate"
ok "approved: the retry gets the certificate (verifies, client's key), the same one every time"

# reject: the retry is refused with the reason
new_csr held2 "/CN=held-device-2/serialNumber=HWH002"
[ "$(enroll held2 "$EST/held")" = 202 ] || die "held2 not held"
id2=$(grep -o 'request [0-9]*' "$D/out" | awk '{print $2}')
if kca request reject --id "$id2" >/dev/null 2>&1; then die "reject without --reason succeeded"; fi
kca request reject --id "$id2" --reason "unknown device" >/dev/null
if kca request approve --id "$id2" >/dev/null 2>&1; then die "approving a rejected request succeeded"; fi
st=$(enroll held2 "$EST/held")
[ "$st" = 403 ] && grep -q "request $id2 was rejected: unknown device" "$D/out" ||
    die "retry after reject: HTTP $st ($(cat "$D/out"))"
ok "rejected: the retry gets 403 with the reason"
expect_status 200 "metrics" "$EST_URL/metrics"
grep -q '^keyline_est_requests_pending 0$' "$D/out" || die "metrics: decided requests still pending"
kca request list --json | python3 -c '
import json, sys
r = {x["id"]: x for x in json.load(sys.stdin)}
a, b = r[int(sys.argv[1])], r[int(sys.argv[2])]
assert a["status"] == "approved" and a["cert_serial"] and a["decided"], a
assert b["status"] == "rejected" and b["reason"] == "unknown device" and b["cert_serial"] is None, b
assert a["requester"].endswith(" as est; basic user " + sys.argv[3]), a
assert a["requester"].startswith("uid %d " % int(sys.argv[4])) and a["label"] == "held", a' \
    "$id" "$id2" "$EST_USER" "$(id -u)" ||
    die "request list --json"

# a CSR the template refuses (RSA-2048 for an EC template) is refused at once, not held
openssl req -new -newkey rsa:2048 -nodes -keyout "$D/rsa.key" -subj "/CN=rsa-device/serialNumber=HWRSA1" -out "$D/rsa.csr" 2>/dev/null
openssl req -in "$D/rsa.csr" -outform DER | openssl base64 > "$D/rsa.b64"
st=$(enroll rsa "$EST/held")
[ "$st" = 403 ] || die "policy-refused CSR: HTTP $st, expected 403 ($(cat "$D/out"))"
[ "$(kca request list | grep -c "CN=rsa-device" || true)" = 0 ] || die "refused CSR was held"
ok "a CSR that policy refuses is refused at once ($(head -c 100 "$D/out"))"

# the approved certificate revoked: the retry no longer hands it out
kca revoke --serial "$(serial_of "$D/held1.pem")" --reason keyCompromise >/dev/null
st=$(enroll held1 "$EST/held")
[ "$st" = 403 ] || die "retry for a revoked approved certificate: HTTP $st"
ok "approved then revoked: the retry gets 403"

kca audit list > "$D/audit.txt"
for a in request approve reject; do grep -q " $a " "$D/audit.txt" || die "audit lacks $a"; done
kca audit verify | grep -q intact || die "audit verify"
est_stop
ok "audit: request, approve, reject recorded; chain intact"
