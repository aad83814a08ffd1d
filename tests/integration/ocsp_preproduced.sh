#!/usr/bin/env bash
# Pre-produced OCSP answers (RFC 5019; ca/cad/cad_ocsp.c), checked with openssl ocsp as the
# relying party, through keyline-estd's plain-HTTP /ocsp:
#   - a nonce-less request for a valid certificate is answered from the pre-produced answers
#     (told apart from a live one by its responder id: by key hash, where live answers name the
#     responder), verifies against the root, says good;
#   - the answer is re-signed before half its validity (ocsp-validity = 8 here) and never
#     served past its nextUpdate;
#   - a revocation by the officer (keyline-ca revoke, another process) turns the pre-produced
#     answer to revoked with its reason; the time it took is printed (the bound 5 s is
#     measured by bench/ocsp_bench.sh, not asserted here);
#   - a request with a nonce is still signed live and echoes the nonce;
#   - GET /ocsp/<base64> gets the same pre-produced answer with RFC 5019 6.2's caching headers
#     (ETag, Last-Modified = thisUpdate, Expires = nextUpdate, max-age never past it), from a
#     worker and from the front cache alike, and 304 to a conditional GET that matches, without
#     a Content-Length but the 200's (plain HTTP and TLS); GET /ocsp//<base64> as well (RFC 6960
#     A.1 with the responder URL /ocsp/);
#   - the same request again within a second is answered by keyline-estd's front cache (even
#     with keyline-cad stopped), counted in /metrics but not logged line by line at info level;
#   - the plain-HTTP listener runs [est] threads I/O threads, as the TLS one does;
#   - an unknown critical extension or a nonce of 0 or over 128 octets: malformedRequest (RFC
#     6960 4.4, RFC 9654), never a cached answer; GET /ocsp without a request: malformedRequest;
#   - [cad] ocsp-preproduce = 0 turns it off: every answer is live;
#   - keyline-cad hung (SIGSTOP): tryLater after one [est] cad-timeout.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

query() { # query CERT-PEM OUT [openssl ocsp args...]: POST, verified against the root
    local cert=$1 out=$2
    shift 2
    openssl ocsp -issuer "$D/field1.pem" -cert "$cert" -url "$EST_HTTP/ocsp" -CAfile "$D/root1.pem" \
        -resp_text "$@" > "$out" 2>&1 || true
    grep -q "Response verify OK" "$out" || die "OCSP answer does not verify: $(cat "$out")"
}
by_key() { grep -q "Responder Id: [0-9A-F]\{40\}$" "$1"; }
field() { grep -m1 "$2" "$1" | sed 's/^[^:]*: //'; }

est_setup_ca
printf '\n[cad]\nsocket = cad.sock\nocsp-validity = 8\n' >> "$KL_CONF"
est_write_conf
est_start
new_csr dev "/CN=pre-dev/serialNumber=HWP001"
expect_status 200 "simpleenroll" -u "$EST_USER:$EST_PASS" -H "Content-Type: application/pkcs10" \
    --data-binary @"$D/dev.b64" "$EST/simpleenroll"
p7_to_pem "$D/out" "$D/dev.pem"
serial=$(serial_of "$D/dev.pem")

# the first full pass runs at start-up; a certificate issued after it is taken in by the next
# (every min(60, validity / 4) s = 2 s here); until then it is answered live
for _ in $(seq 1 100); do
    query "$D/dev.pem" "$D/o1.txt" -no_nonce
    by_key "$D/o1.txt" && break
    sleep 0.2
done
by_key "$D/o1.txt" || die "no pre-produced answer after 20 s: $(cat "$D/o1.txt"; grep OCSP "$D/cad.log")"
grep -q "dev.pem: good" "$D/o1.txt" || die "status: $(cat "$D/o1.txt")"
grep -q "OCSP: .* answers pre-produced" "$D/cad.log" || die "no pre-production in the log"
ok "nonce-less request answered from the pre-produced answers (responder by key hash), good, verifies"

# RFC 6960 4.4 / RFC 9654 through POST and GET, for a certificate whose answer is pre-produced
# (and each nonce-less request twice: the second would come from keyline-estd's front cache):
# an unknown extension marked critical (in requestExtensions or singleRequestExtensions) or a
# nonce of 0 or more than 128 octets is malformedRequest; an unknown extension not marked
# critical is ignored; a nonce of 1..128 octets is answered and echoed.
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -no_nonce -reqout "$D/ext.der" > /dev/null 2>&1
HOSTILE_DIR=$D PYTHONPATH=$KL_SRC/tests/hostile python3 - "$D/ext.der" "$EST_HTTP_PORT" <<'PY' || die "OCSP extensions: see above"
import base64, http.client, sys, urllib.parse
from gen import enc, oid  # the hostile suite's DER pieces; it puts tests/data/csr on the path
from craft import children, tlv

def ext(dotted, value, critical):
    return enc(0x30, oid(dotted) + (b"\x01\x01\xff" if critical else b"") + enc(0x04, value))

def content(der):
    _, hl, cl = tlv(der)
    return der[hl:hl + cl]

# OCSPRequest { TBSRequest { requestList { Request { CertID } } } } from openssl ocsp -no_nonce
certid = children(content(children(content(children(content(children(content(open(sys.argv[1], "rb").read()))[0]))[0]))[0]))[0]
def request(req_ext=None, single_ext=None):
    one = certid + (enc(0xA0, enc(0x30, single_ext)) if single_ext else b"")
    tbs = enc(0x30, enc(0x30, one)) + (enc(0xA2, enc(0x30, req_ext)) if req_ext else b"")
    return enc(0x30, enc(0x30, tbs))

def ask(der, get):
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=30)
    if get:
        c.request("GET", "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe=""))
    else:
        c.request("POST", "/ocsp", der, {"Content-Type": "application/ocsp-request"})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body)
    return body

STATUS = {0: "successful", 1: "malformedRequest"}
UNKNOWN, NONCE = "1.3.6.1.4.1.99999.1", "1.3.6.1.5.5.7.48.1.2"
cases = [
    ("unknown critical requestExtension", request(req_ext=ext(UNKNOWN, b"\x05\x00", True)), 1, None),
    ("unknown critical singleRequestExtension", request(single_ext=ext(UNKNOWN, b"\x05\x00", True)), 1, None),
    ("unknown non-critical requestExtension", request(req_ext=ext(UNKNOWN, b"\x05\x00", False)), 0, None),
    ("unknown non-critical singleRequestExtension", request(single_ext=ext(UNKNOWN, b"\x05\x00", False)), 0, None),
]
for n, want in ((0, 1), (1, 0), (32, 0), (128, 0), (129, 1), (200, 1)):
    e = ext(NONCE, enc(0x04, bytes(range(n))), False)
    cases.append(("nonce of %d octets" % n, request(req_ext=e), want, e))
bad = 0
for name, der, want, nonce in cases:
    for get in (False, True):
        for _ in range(1 if nonce else 2):
            body = ask(der, get)
            st = content(body)[2]  # OCSPResponse { responseStatus ENUMERATED, ... }
            echoed = nonce is None or want != 0 or nonce in body
            if st != want or not echoed:
                bad += 1
                print("%s (%s): %s, expected %s%s" % (name, "GET" if get else "POST", STATUS.get(st, st),
                      STATUS[want], "" if echoed else ", nonce not echoed"))
sys.exit(1 if bad else 0)
PY
ok "unknown critical extensions and nonces of 0 or over 128 octets: malformedRequest (POST, GET, twice); unknown non-critical ones ignored, nonces of 1..128 octets echoed"

# GET /ocsp with no request is a malformed request, as a path that decodes to none is; a 405's
# Allow lists what the resource takes (RFC 9110 10.2.1): /ocsp POST, GET, HEAD; /ocsp/<b64>
# GET, HEAD
for p in /ocsp /ocsp/; do
    code=$(curl -s -o "$D/noreq.der" -w '%{http_code}' "$EST_HTTP$p")
    [ "$code" = 200 ] || die "GET $p: HTTP $code"
    txt=$(openssl ocsp -respin "$D/noreq.der" -resp_text -noverify 2>&1 || true) # exit 1: not successful
    grep -q "Responder Error: malformedrequest" <<<"$txt" || die "GET $p: $txt"
done
allow() { curl -s -o /dev/null -D - -X "$1" -H "Content-Type: application/ocsp-request" --data-binary @"$D/ext.der" "$EST_HTTP$2" |
    tr -d '\r' | sed -n 's/^allow: //Ip'; }
[ "$(allow PUT /ocsp)" = "GET, HEAD, POST" ] || die "PUT /ocsp: Allow: $(allow PUT /ocsp)"
[ "$(allow POST "/ocsp/$(ocsp_get_path "$D/ext.der")")" = "GET, HEAD" ] ||
    die "POST /ocsp/<b64>: Allow: $(allow POST "/ocsp/$(ocsp_get_path "$D/ext.der")")"
ok "GET /ocsp without a request: malformedRequest; 405 Allow lists the methods each OCSP resource takes"

t1=$(field "$D/o1.txt" "This Update")
n1=$(field "$D/o1.txt" "Next Update")
[ $(( $(date -d "$n1" +%s) - $(date -d "$t1" +%s) )) = 8 ] || die "validity $t1 .. $n1, expected 8 s"
for _ in $(seq 1 60); do
    sleep 0.5
    query "$D/dev.pem" "$D/o2.txt" -no_nonce
    t2=$(field "$D/o2.txt" "This Update")
    if by_key "$D/o2.txt" && [ "$t2" != "$t1" ]; then break; fi
done
[ "$t2" != "$t1" ] || die "answer not re-signed in 30 s (thisUpdate still $t1)"
age=$(( $(date -d "$t2" +%s) - $(date -d "$t1" +%s) ))
[ "$age" -lt 4 ] || die "re-signed only after $age s, not before half of the 8 s validity"
ok "pre-produced answer re-signed before half its validity ($age s after the first)"

start=$(date +%s.%N)
kca revoke --serial "$serial" --reason keyCompromise > /dev/null 2>&1 || die "revoke"
done_at=
for _ in $(seq 1 150); do
    query "$D/dev.pem" "$D/o3.txt" -no_nonce
    if grep -q "dev.pem: revoked" "$D/o3.txt"; then done_at=$(date +%s.%N); break; fi
    sleep 0.2
done
[ -n "$done_at" ] || die "revocation not visible over OCSP after 30 s: $(cat "$D/o3.txt")"
by_key "$D/o3.txt" || die "the revoked answer is not the pre-produced one"
grep -q "Reason: keyCompromise" "$D/o3.txt" || die "reason: $(cat "$D/o3.txt")"
ok "revocation visible over OCSP (pre-produced, keyCompromise) $(echo "$done_at - $start" | bc) s after keyline-ca revoke returned"

query "$D/dev.pem" "$D/o4.txt"
grep -q "dev.pem: revoked" "$D/o4.txt" || die "nonce request: $(cat "$D/o4.txt")"
by_key "$D/o4.txt" && die "a request with a nonce got a pre-produced answer"
grep -q "WARNING: no nonce" "$D/o4.txt" && die "nonce not echoed"
ok "a request with a nonce is signed live (nonce echoed, responder by name)"

openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -no_nonce -reqout "$D/req.der" > /dev/null 2>&1
b64=$(ocsp_get_path "$D/req.der")
hdr() { sed -n "s/^$2: //Ip" "$1" | tr -d '\r'; }
get() { # get OUT-PREFIX [curl args]: GET /ocsp/<base64>; headers in PREFIX.hdr, body PREFIX.der
    local out=$1
    shift
    rm -f "$out.der" # curl writes no file for an answer without a body
    curl -s -D "$out.hdr" -o "$out.der" -w '%{http_code}' "$@" "$EST_HTTP/ocsp/$b64"
}
# RFC 5019 6.2 on both paths: a worker's answer from keyline-cad (the front cache's copy is
# older than its second by then), then the front cache's (the same request at once)
sleep 1.2
l0=$(grep -c "GET /ocsp/" "$D/estd.log" || true)
for path in worker front; do
    code=$(get "$D/get_$path")
    [ "$code" = 200 ] || die "GET ($path): HTTP $code"
    openssl ocsp -respin "$D/get_$path.der" -resp_text -noverify > "$D/get.txt" 2>&1
    by_key "$D/get.txt" || die "GET answer not pre-produced: $(cat "$D/get.txt")"
    grep -q "Cert Status: revoked" "$D/get.txt" || die "GET status: $(cat "$D/get.txt")"
    h=$D/get_$path.hdr
    [ "$(date -ud "$(hdr "$h" last-modified)" +%s)" = "$(date -ud "$(field "$D/get.txt" "This Update:")" +%s)" ] ||
        die "GET ($path): Last-Modified is not thisUpdate: $(cat "$h")"
    next=$(date -ud "$(field "$D/get.txt" "Next Update:")" +%s)
    [ "$(date -ud "$(hdr "$h" expires)" +%s)" = "$next" ] ||
        die "GET ($path): Expires is not nextUpdate: $(cat "$h")"
    cc=$(hdr "$h" cache-control)
    case $cc in "max-age="*", public, no-transform, must-revalidate") ;;
        *) die "GET ($path): Cache-Control: $cc" ;; esac
    age=${cc#max-age=}
    age=${age%%,*}
    [ -n "$(hdr "$h" date)" ] || die "GET ($path): no Date: $(cat "$h")"
    sent=$(date -ud "$(hdr "$h" date)" +%s)
    # ocsp-validity = 8: the answer is good for seconds, not the usual 60
    [ "$age" -le $((next - sent + 1)) ] || die "GET ($path): max-age $age past nextUpdate ($cc, $(cat "$h"))"
    etag=$(hdr "$h" etag)
    [ "$etag" = "\"$(sha256sum < "$D/get_$path.der" | cut -c1-32)\"" ] ||
        die "GET ($path): ETag $etag is not the answer's"
done
cmp -s "$D/get_worker.der" "$D/get_front.der" && [ "$(hdr "$D/get_worker.hdr" etag)" = "$etag" ] ||
    die "the front cache gave other bytes or another ETag for the same answer"
[ "$(grep -c "GET /ocsp/" "$D/estd.log" || true)" = "$((l0 + 1))" ] ||
    die "the second GET was not the front cache's (a log line each): $(grep "GET /ocsp/" "$D/estd.log")"
ok "GET /ocsp/<base64>: RFC 5019 6.2 headers from keyline-estd's worker and its front cache (ETag, Last-Modified = thisUpdate, Expires = nextUpdate, max-age $age s within nextUpdate)"

# cond CODE HEADER: a conditional GET answered CODE (and no body for 304); HEADER is evaluated
# with $etag and $lm of a plain GET just before it. The answer is re-signed every few seconds
# (ocsp-validity = 8), so a pair that straddles a re-signing is tried again.
cond() {
    local want=$1 tmpl=$2 code= h=
    for _ in 1 2 3; do
        get "$D/c0" > /dev/null
        etag=$(hdr "$D/c0.hdr" etag)
        lm=$(hdr "$D/c0.hdr" last-modified)
        h=$(eval "printf '%s' \"$tmpl\"")
        code=$(get "$D/c1" -H "$h")
        if [ "$code" = "$want" ]; then
            if [ "$code" = 304 ]; then
                [ ! -s "$D/c1.der" ] || die "304 with a body ($h)"
                [ "$(hdr "$D/c1.hdr" etag)" = "$etag" ] || die "304 without its ETag: $(cat "$D/c1.hdr")"
            else
                cmp -s "$D/c1.der" "$D/c0.der" || die "$h: not the answer"
            fi
            return 0
        fi
    done
    die "$h: HTTP $code, not $want"
}
cond 304 'If-None-Match: $etag'
cond 304 'If-None-Match: \"0000\", W/$etag'
cond 200 'If-None-Match: \"0000\"'
cond 304 'If-Modified-Since: $lm'
cond 304 "If-Modified-Since: \$(date -ud \"\$lm\" '+%A, %d-%b-%y %H:%M:%S GMT')"
asctime() { date -ud "@$(($(date -ud "$lm" +%s) + $1))" '+%a %b %e %H:%M:%S %Y'; }
cond 304 'If-Modified-Since: $(asctime 0)'
# only the Last-Modified itself is taken: an answer may be followed by one dated earlier
cond 200 'If-Modified-Since: $(asctime 3600)'
cond 200 'If-Modified-Since: $(asctime -3600)'
cond 200 'If-Modified-Since: yesterday'
ok "conditional GET: 304 without a body for a matching (weak) ETag or the Last-Modified itself in each HTTP-date form (IMF, rfc850, asctime), 200 otherwise (a later date too)"

# RFC 9110 8.6: a 304 carries no Content-Length, or the 200's (found by hostile testing: 0),
# over plain HTTP and TLS, from a worker and from the front cache
for base in "$EST_HTTP" "$EST_URL"; do
    for path in worker front; do
        for _ in 1 2 3; do
            curl -s --cacert "$D/root1.pem" -D "$D/cl0.hdr" -o "$D/cl0.der" "$base/ocsp/$b64"
            [ $path = front ] || sleep 1.1 # past the front cache's second
            code=$(curl -s --cacert "$D/root1.pem" -D "$D/cl1.hdr" -o /dev/null -w '%{http_code}' \
                -H "If-None-Match: $(hdr "$D/cl0.hdr" etag)" "$base/ocsp/$b64")
            [ "$code" = 304 ] && break
        done
        [ "$code" = 304 ] || die "$base ($path): If-None-Match with the ETag: $code"
        len=$(hdr "$D/cl1.hdr" content-length)
        [ -z "$len" ] || [ "$len" = "$(stat -c %s "$D/cl0.der")" ] ||
            die "$base ($path): a 304 with Content-Length $len, the answer has $(stat -c %s "$D/cl0.der") bytes: $(cat "$D/cl1.hdr")"
    done
done
ok "a 304 (plain HTTP and TLS, worker and front cache) has no Content-Length but the 200's"

# RFC 6960 A.1: GET {url}/{request}; with the responder URL "/ocsp/" (as POST takes it), the
# request follows a second '/' (found by hostile testing: malformedRequest)
code=$(curl -s -o "$D/slash.der" -w '%{http_code}' "$EST_HTTP/ocsp//$b64")
[ "$code" = 200 ] || die "GET /ocsp//<b64>: HTTP $code"
txt=$(openssl ocsp -respin "$D/slash.der" -resp_text -noverify 2>&1 || true)
grep -q "Cert Status: revoked" <<<"$txt" || die "GET /ocsp//<b64>: $txt"
code=$(curl -s -o "$D/slash3.der" -w '%{http_code}' "$EST_HTTP/ocsp///$b64")
txt=$(openssl ocsp -respin "$D/slash3.der" -resp_text -noverify 2>&1 || true)
grep -q "Responder Error: malformedrequest" <<<"$txt" || die "GET /ocsp///<b64> ($code): $txt"
ok "GET /ocsp//<base64> (responder URL /ocsp/) is answered as GET /ocsp/<base64>; a third '/' is malformed"

# a certificate revoked in the second its good answer was signed: the revoked answer's
# thisUpdate (its Last-Modified) is a later second, so If-Modified-Since with the good answer's
# date gets the revoked answer, never 304 (found by hostile testing: 304 in 6 of 6 runs)
for i in 1 2 3; do
  new_csr ims$i "/CN=ims-$i"
  kca issue --issuer field1 --template device-ldevid --csr "$D/ims$i.csr" --out "$D/ims$i.pem" >/dev/null
  openssl ocsp -issuer "$D/field1.pem" -cert "$D/ims$i.pem" -no_nonce -reqout "$D/imsq$i.der"
  U="$EST_HTTP/ocsp/$(ocsp_get_path "$D/imsq$i.der")"
  python3 -c 'import time; time.sleep(1.02 - time.time() % 1)' # the GET and the revocation in one second
  curl -s -D "$D/imsh$i" -o "$D/imsgood$i.der" "$U"
  kca revoke --serial "$(serial_of "$D/ims$i.pem")" >/dev/null 2>&1
  lm=$(grep -i '^Last-Modified:' "$D/imsh$i" | cut -d' ' -f2- | tr -d '\r')
  [ -n "$lm" ] || die "no Last-Modified on the good answer"
  sleep 2 # past keyline-estd's front cache and keyline-cad's re-signing of the revoked answer
  code=$(curl -s -D "$D/imsn$i" -o "$D/imsnew$i.der" -w '%{http_code}' -H "If-Modified-Since: $lm" "$U")
  [ "$code" = 200 ] || die "If-Modified-Since of the good answer after the revocation: $code"
  openssl ocsp -respin "$D/imsnew$i.der" -resp_text -noverify 2>&1 | grep -q "Cert Status: revoked" ||
    die "the answer after the revocation is not revoked"
done
ok "a revocation in the second of the good answer: If-Modified-Since with its date gets the revoked answer (200), not 304"

# a revocation recorded by a clock an hour ahead (an officer's PC, another host): answered
# revoked at once, with and without a nonce, not good until that time comes nor a thread held
# waiting for it (hostile testing of clocks)
. "$KL_SRC/tests/lib/faketime.sh"
kl_libfaketime || die "no libfaketime"
new_csr ahead "/CN=ahead"
kca issue --issuer field1 --template device-ldevid --csr "$D/ahead.csr" --out "$D/ahead.pem" >/dev/null
env LD_PRELOAD="$LIBFT" FAKETIME=+1h "$BIN/keyline-ca" -c "$KL_CONF" revoke --serial "$(serial_of "$D/ahead.pem")" >/dev/null 2>&1 ||
  die "revoke with the clock ahead"
sleep 2
for nonce in -no_nonce ""; do
  t0=$(date +%s)
  # shellcheck disable=SC2086 # the option or nothing
  st=$(timeout 20 openssl ocsp -issuer "$D/field1.pem" -cert "$D/ahead.pem" -url "$EST_HTTP/ocsp" $nonce \
    -CAfile "$D/root1.pem" -verify_other "$D/field1.pem" 2>/dev/null | sed -n 's/^.*ahead.pem: //p')
  [ "$st" = revoked ] || die "revoked with a clock an hour ahead, OCSP ${nonce:-with a nonce}: '$st'"
  [ $(($(date +%s) - t0)) -le 3 ] || die "OCSP ${nonce:-with a nonce} took $(($(date +%s) - t0)) s"
done
# its thisUpdate may be the good answer's second (revoked "ahead"): a cache holding the good one
# revalidates with that Last-Modified and gets the revoked answer, not 304
openssl ocsp -issuer "$D/field1.pem" -cert "$D/ahead.pem" -no_nonce -reqout "$D/aheadq.der"
U="$EST_HTTP/ocsp/$(ocsp_get_path "$D/aheadq.der")"
lm=$(curl -s -D - -o /dev/null "$U" | sed -n 's/^Last-Modified: //Ip' | tr -d '\r')
for later in 0 1 3600; do
  d=$(date -ud "@$(($(date -ud "$lm" +%s) - later))" '+%a, %d %b %Y %H:%M:%S GMT')
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $d" "$U")
  want=$([ "$later" = 0 ] && echo 304 || echo 200)
  [ "$code" = "$want" ] || die "If-Modified-Since $later s before the revoked answer's Last-Modified: $code"
done
ok "a revocation dated an hour ahead: OCSP says revoked at once, with and without a nonce"

post() { curl -s --max-time 5 -H "Content-Type: application/ocsp-request" --data-binary @"$D/req.der" -o "$D/post.der" "$EST_HTTP/ocsp"; }
ocsp_200() { expect_status 200 "metrics" "$EST_URL/metrics" >/dev/null; sed -n 's/^keyline_est_requests_total{endpoint="ocsp",code="200"} //p' "$D/out"; }
m0=$(ocsp_200)
l0=$(grep -c "POST /ocsp 200" "$D/estd.log" || true)
for _ in 1 2 3 4 5 6; do post; done
m1=$(ocsp_200)
l1=$(grep -c "POST /ocsp 200" "$D/estd.log" || true)
[ $((m1 - m0)) = 6 ] || die "/metrics counted $((m1 - m0)) of 6 OCSP answers"
# a front-cache entry lives a second: at most the first and one more were asked of keyline-cad
[ $((l1 - l0)) -le 2 ] || die "front-cache answers logged one line each at info level ($((l1 - l0)) lines)"
sleep 1.2
post # asked of keyline-cad and kept; the next one comes from the front cache
rm -f "$D/post.der"
kill -STOP "$CAD_PID"
post || true
kill -CONT "$CAD_PID"
openssl ocsp -respin "$D/post.der" -resp_text -noverify 2>&1 | grep -q "Cert Status: revoked" || die "front cache answer"
ok "a repeated nonce-less request is answered by keyline-estd's front cache (no worker, no keyline-cad round trip, no log line)"
workers=$(cat /proc/"$EST_PID"/task/*/comm | grep -c "^MHD-worker" || true)
[ "$workers" = 4 ] || die "$workers MHD I/O threads; expected 2 for TLS and 2 for plain HTTP ([est] threads = 2)"
ok "the plain-HTTP listener has its own [est] threads I/O threads"

est_stop
sed -i 's/^ocsp-validity = 8$/ocsp-validity = 8\nocsp-preproduce = 0/' "$KL_CONF"
grep -q "^ocsp-preproduce = 0" "$KL_CONF" || die "config not changed"
echo "cad-timeout = 2" >> "$KL_CONF" # [est], the last section
est_start
sleep 1
for _ in 1 2 3; do
    query "$D/dev.pem" "$D/o5.txt" -no_nonce
    grep -q "dev.pem: revoked" "$D/o5.txt" || die "status: $(cat "$D/o5.txt")"
    by_key "$D/o5.txt" && die "ocsp-preproduce = 0 still pre-produces"
    sleep 1
done
ok "[cad] ocsp-preproduce = 0: answers are signed live"

# keyline-cad hung (SIGSTOP: its socket still accepts, nothing answers): tryLater after one
# [est] cad-timeout (2 s), on the connection pooled by the queries above as on a fresh one;
# never a second timeout on the same keyline-cad. With a nonce: no cache answers it.
openssl ocsp -issuer "$D/field1.pem" -cert "$D/dev.pem" -reqout "$D/later.der" > /dev/null 2>&1
kill -STOP "$CAD_PID"
for conn in pooled fresh; do
    t=$(curl -s --max-time 20 -H "Content-Type: application/ocsp-request" --data-binary @"$D/later.der" \
        -o "$D/later.out" -w '%{time_total}' "$EST_HTTP/ocsp" || true)
    txt=$(openssl ocsp -respin "$D/later.out" -resp_text -noverify 2>&1 || true)
    grep -q "Responder Error: trylater" <<<"$txt" ||
        die "keyline-cad stopped ($conn connection): not tryLater after $t s: $txt"
    awk -v t="$t" 'BEGIN { exit !(t >= 1.9 && t < 3) }' ||
        die "keyline-cad stopped ($conn connection): tryLater after $t s, expected one cad-timeout (2 s)"
done
kill -CONT "$CAD_PID"
ok "keyline-cad hung: tryLater after one cad-timeout ($t s), the pooled connection not tried again"
est_stop
