#!/usr/bin/env bash
# CRLs and mass revocation at scale (issue 17 items 1, 2) against their limits, in one run:
#   - a generator fills the store with N certificates of field1 (SQL, not through the HSM:
#     rows as ca_issue writes them, a 400-byte DER each);
#   - keyline-ca revoke --issued-by field1 --between T1 T2 revokes all N (one transaction,
#     one audit entry each) and publishes the CRL: seconds and peak RSS, limit 60 s for 1M;
#   - keyline-ca crl --issuer field1 alone: seconds and peak RSS against `openssl ca -gencrl`
#     over the same N entries (an index.txt made from the store, a software key of the same
#     type), and against the issue's bounds (5 s, 300 MB for 1M);
#   - the CRL checked: openssl crl -verify against field1, N entries.
# Run under tests/lib/with-token.sh with KL_BUILD set (scripts/bench does both).
#   KL_BENCH_CRL_SIZES="10000 100000 1000000"  KL_BENCH_CRL_BACKGROUND=0 (valid certificates)
#   KL_BENCH_REVOKE_ONLY=1: the batch revocation's figures alone (no CRL or openssl run apart)
#   KL_BENCH_REVOKE_FROM=1: with REVOKE_ONLY, revoke each batch by a list of its serials in
#     random order (keyline-ca revoke --from FILE) instead: figures revoke_list.*
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"

SIZES=${KL_BENCH_CRL_SIZES:-10000 100000 1000000}
kca ca create --label root1 --template root --subject "CN=Bench Root" >/dev/null 2>&1
kca ca create --label field1 --template field-ca --subject "CN=Bench Field CA" --issuer root1 >/dev/null 2>&1
kca ca cert --label field1 > "$D/field1.pem"

# the software CA openssl ca signs with (same key type as field1: P-256)
mkdir -p "$D/ossl"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/ossl/ca.key" \
    -subj "/CN=Bench Field CA" -days 365 -out "$D/ossl/ca.pem" 2>/dev/null
cat > "$D/ossl/ca.cnf" <<CNF
[ca]
default_ca = bench
[bench]
database = $D/ossl/index.txt
crlnumber = $D/ossl/crlnumber
certificate = $D/ossl/ca.pem
private_key = $D/ossl/ca.key
default_md = sha256
default_crl_days = 7
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid:always
CNF

measure() { # measure OUT CMD...: wall seconds and peak RSS (MB) of CMD into OUT as "s mb", its
    # CPU seconds (user + system: what a loaded machine does not inflate) into OUT.cpu
    local out=$1
    shift
    /usr/bin/time -f "%e %M %U %S" -o "$out.time" "$@" > "$out.log" 2>&1 || { cat "$out.log" >&2; die "$* failed"; }
    awk '{printf "%s %.1f\n", $1, $2 / 1024}' "$out.time" > "$out"
    awk '{printf "%.2f\n", $3 + $4}' "$out.time" > "$out.cpu"
}
fig() { # fig NAME VALUE UNIT [LIMIT_NAME LIMIT_VALUE [TARGET|max:TARGET]]
    python3 - "$@" <<'PY'
import json, os, sys
a = sys.argv[1:]
f = {"name": a[0], "value": float(a[1]), "unit": a[2]}
if len(a) > 3:
    f["limit_name"] = a[3]
    f["limit_value"] = float(a[4])
if len(a) > 5:
    if a[5].startswith("max:"):
        f["target_max"] = float(a[5][4:])
    else:
        f["target"] = float(a[5])
line = "  %-34s %10.3f %-4s" % (a[0], f["value"], a[2])
if "limit_value" in f:
    line += " = %.3f of %s (%g)" % (f["value"] / f["limit_value"], a[3], f["limit_value"])
print(line)
out = os.environ.get("KL_BENCH_RESULTS")
if out:
    with open(out, "a") as fh:
        fh.write(json.dumps(f) + "\n")
PY
}

# KL_BENCH_CRL_BACKGROUND=N: N valid certificates of field1 first, never revoked (the CRL of a
# CA with 1M revoked among 10M: N = 9000000)
bg=${KL_BENCH_CRL_BACKGROUND:-0}
if [ "$bg" -gt 0 ]; then
    python3 - "$D/keyline.db" "$bg" "$(( $(date +%s) - 100000 ))" <<'PY'
import os, sqlite3, sys
db, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db)
der = os.urandom(400)
rows = ((("%016X" % (0x1000000000000000 + ((i * 0x9E3779B97F4A7C15) & 0x0FFFFFFFFFFFFFFF))),
         "CN=bg-%d" % i, "bg-%d" % i, t, t + 86400 * 365, der, t) for i in range(n))
c.executemany("INSERT INTO certs (serial, status, issuer, subject, template, device_id, "
              "not_before, not_after, der, created) VALUES (?, 'valid', 'field1', ?, "
              "'device-ldevid', ?, ?, ?, ?, ?)", rows)
c.commit()
PY
    echo "== $bg valid certificates of field1 beside the revoked ones =="
fi
total=0
for n in $SIZES; do
    add=$((n - total))
    t1=$(date +%s)
    python3 - "$D/keyline.db" "$total" "$add" "$t1" <<'PY'
import os, sqlite3, sys
db, start, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db)
der = os.urandom(400)
rows = ((("%016X" % (0x4000000000000000 + ((i * 0x9E3779B97F4A7C15) & 0x3FFFFFFFFFFFFFFF))),
         "CN=dev-%d" % i, "dev-%d" % i, t, t + 86400 * 365, der, t) for i in range(start, start + n))
c.executemany("INSERT INTO certs (serial, status, issuer, subject, template, device_id, "
              "not_before, not_after, der, created) VALUES (?, 'valid', 'field1', ?, "
              "'device-ldevid', ?, ?, ?, ?, ?)", rows)
c.commit()
PY
    t2=$(date +%s)
    total=$n
    label=$(python3 -c "n=$n; print('%dk' % (n // 1000) if n < 1000000 else '%dM' % (n // 1000000))")
    [ "$bg" -gt 0 ] && label="$label.among$(( (n + bg) / 1000000 ))M"
    echo "== $n revoked certificates ($label) =="
    # revoke the batch just generated: one transaction, one audit entry each, then the CRL
    how=batch
    if [ "${KL_BENCH_REVOKE_FROM:-0}" = 1 ]; then
        # the batch's serials as the store has them, as a list in random order (a list from
        # the field has no order of its own; the same order every run)
        sqlite3 "$D/keyline.db" "SELECT serial FROM certs WHERE issuer = 'field1' AND status = 'valid'
            AND created BETWEEN $t1 AND $t2" | shuf --random-source=<(yes) > "$D/list.txt"
        [ "$(wc -l < "$D/list.txt")" = "$add" ] || die "the list holds $(wc -l < "$D/list.txt") of $add serials"
        how=list
        measure "$D/rv" "$BIN/keyline-ca" -c "$KL_CONF" revoke --from "$D/list.txt" --reason keyCompromise
    else
        measure "$D/rv" "$BIN/keyline-ca" -c "$KL_CONF" revoke --issued-by field1 --between "@$t1" "@$t2" --reason keyCompromise
    fi
    grep -q "revoked $add certificates" "$D/rv.log" || die "revoke: $(cat "$D/rv.log")"
    read -r rv_s rv_mb < "$D/rv"
    rv_cpu=$(cat "$D/rv.cpu")
    if [ "${KL_BENCH_REVOKE_ONLY:-0}" = 1 ]; then
        fig "revoke_$how.$label.seconds" "$rv_s" s
        fig "revoke_$how.$label.cpu_s" "$rv_cpu" s
        fig "revoke_$how.$label.rss_mb" "$rv_mb" MB
        [ "$n" != 1000000 ] || fig "revoke_$how.$label.seconds.bound" "$rv_s" s "issue bound (s)" 60 max:1
        continue
    fi
    # keyline-ca crl alone, a second after the revocation's CRL: two CRLs of a CA are never
    # signed in one second (thisUpdate's resolution), and the wait is not the CRL's work
    sleep 1
    measure "$D/kl" "$BIN/keyline-ca" -c "$KL_CONF" crl --issuer field1 --out "$D/crl.pem"
    read -r kl_s kl_mb < "$D/kl"
    got=$(openssl crl -in "$D/crl.pem" -noout -text | grep -c "Serial Number:")
    [ "$got" = "$n" ] || die "CRL has $got entries, expected $n"
    openssl crl -in "$D/crl.pem" -CAfile "$D/field1.pem" -noout -verify 2>&1 | grep -q "verify OK" ||
        die "CRL does not verify"
    # openssl ca -gencrl over the same entries
    sqlite3 -separator $'\t' "$D/keyline.db" "SELECT serial, revoked_at FROM certs WHERE issuer = 'field1' AND status = 'revoked'" |
        python3 -c '
import sys, time
for line in sys.stdin:
    s, t = line.rstrip("\n").split("\t")
    rev = time.strftime("%y%m%d%H%M%SZ", time.gmtime(int(t)))
    print("R\t491231235959Z\t%s,keyCompromise\t%s\tunknown\t/CN=x" % (rev, s))
' > "$D/ossl/index.txt"
    echo 1000 > "$D/ossl/crlnumber"
    measure "$D/os" openssl ca -config "$D/ossl/ca.cnf" -gencrl -out "$D/ossl/crl.pem"
    read -r os_s os_mb < "$D/os"
    fig "crl.$label.seconds" "$kl_s" s "openssl_gencrl.$label.seconds" "$os_s"
    fig "crl.$label.rss_mb" "$kl_mb" MB "openssl_gencrl.$label.rss_mb" "$os_mb"
    fig "openssl_gencrl.$label.seconds" "$os_s" s
    fig "openssl_gencrl.$label.rss_mb" "$os_mb" MB
    fig "revoke_batch.$label.seconds" "$rv_s" s
    fig "revoke_batch.$label.cpu_s" "$rv_cpu" s
    fig "revoke_batch.$label.rss_mb" "$rv_mb" MB
    if [ "$n" = 1000000 ]; then
        label1=$label
        fig "crl.$label1.seconds.bound" "$kl_s" s "issue bound (s)" 5 max:1
        fig "crl.$label1.rss_mb.bound" "$kl_mb" MB "issue bound (MB)" 300 max:1
        fig "revoke_batch.$label1.seconds.bound" "$rv_s" s "issue bound (s)" 60 max:1
    fi
done
