#!/usr/bin/env bash
# keyline-estd against cisco/libest's example estserver on the same load (issue 17 items 5, 6):
# bench/est_bench.c, the client keyline's EST figures come from, POSTs simpleenroll with 8
# clients and an IDevID client certificate to each server in turn, keep-alive and with a new
# TLS handshake per request. Both servers have the same TLS certificate and key (P-256, from
# keyline's field1) and send it alone, without its chain, as libest can only do (the client is
# given field1 as well as root1 for both), and trust the same client chain; libest signs with
# its openssl-ca code and a P-256 software key, keyline in the SoftHSM token through
# keyline-cad.
# Figures: libest.est.mtls.{keepalive,new_handshake}.8c, and keyline's rate of the same run
# against each (est.mtls.*.8c.vs_libest: target 25 with keep-alive, 10 with new handshakes).
#
# libest (3.2.0p, commit below) is built once into KL_LIBEST_BUILD (scripts/bench:
# build-bench/libest) from KL_LIBEST_SRC (a git URL or folder; default GitHub) against the
# system's OpenSSL 3: --disable-safec, and FIPS_mode()/FIPS_mode_set(), which OpenSSL 3 removed,
# defined away by a forced include (libest calls them only for its -f FIPS option). When the
# source cannot be had, says so and measures nothing.
# Run under tests/lib/with-token.sh with KL_BUILD set (scripts/bench does both).
#   KL_BENCH_SECONDS=5  seconds per measurement  KL_BENCH_LIBEST_ROUNDS=3  rounds (medians)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/est_common.sh"
. "$here/bench_common.sh"

LIBEST_REV=a464ba8a66717419ba71d289ef82c7b2315b2006
cache=${KL_LIBEST_BUILD:-$KL_BUILD/libest}
src=${KL_LIBEST_SRC:-https://github.com/cisco/libest.git}
secs=${KL_BENCH_SECONDS:-5}
rounds=${KL_BENCH_LIBEST_ROUNDS:-3}

libest_build() {
    [ "$(cat "$cache/built" 2>/dev/null)" = "$LIBEST_REV" ] && return 0
    rm -rf "$cache"
    mkdir -p "$cache"
    if ! git clone -q "$src" "$cache/src" 2>"$cache/clone.log" ||
        ! git -C "$cache/src" checkout -q "$LIBEST_REV" 2>>"$cache/clone.log"; then
        echo "libest: not measured: no source at $src ($(tail -n 1 "$cache/clone.log"))"
        return 1
    fi
    printf '#define FIPS_mode() 0\n#define FIPS_mode_set(x) ((void)(x), 0)\n' > "$cache/fips.h"
    echo "libest: building $LIBEST_REV into $cache (once)"
    (cd "$cache/src" && ./configure --prefix="$cache/inst" --disable-safec \
        CPPFLAGS="-include $cache/fips.h" && make -j"$(nproc)" && make install) \
        > "$cache/build.log" 2>&1 || { tail -n 20 "$cache/build.log" >&2; die "libest build failed (log: $cache/build.log)"; }
    echo "$LIBEST_REV" > "$cache/built"
}

# rate OUT MODE: enrollments/s of the 8-client MODE line of est_bench's table in OUT
rate() { awk -v m="$2" '$1 == 8 && $2 == m {print $3}' "$1"; }
median() { sort -n | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
# median_rate WHO MODE: the median over the rounds of rate $D/WHO.R.out MODE
median_rate() { for r in $(seq 1 "$rounds"); do rate "$D/$1.$r.out" "$2"; done | median; }
# median_cpu_ms WHO MODE FIELD: the median over the rounds of the CPU milliseconds per
# enrollment of the load generator (FIELD 3) or the server (4) in MODE
median_cpu_ms() {
    for r in $(seq 1 "$rounds"); do
        awk -v m="$2" -v f="$3" -v s="$secs" '$1 == 8 && $2 == m {n = $3 * s}
            $1 == "cpu" && $2 == m && n > 0 {printf "%.3f\n", 1000 * $f / n}' "$D/$1.$r.out"
    done | median
}

# cpu PID...: CPU seconds (user + system, every thread) the processes have used so far
cpu() { for p in "$@"; do awk '{print ($14 + $15) / 100}' "/proc/$p/stat"; done | awk '{s += $1} END {printf "%.2f\n", s}'; }

# bench PORT OUT PIDS...: est_bench's keep-alive and new-handshake rates, 8 clients, one mode at
# a time, each followed in OUT by a "cpu MODE CLIENT SERVER" line: the CPU seconds the load
# generator and the server processes PIDS used in that mode's run
bench() {
    local port=$1 out=$2 mode c0 c1
    shift 2
    : > "$out"
    for mode in keep-alive new-handshake; do
        c0=$(cpu "$@")
        env -u KL_BENCH_RESULTS KL_BENCH_NO_RAW=1 /usr/bin/time -f '%U %S' -o "$out.time" "$BIN/est_bench" \
            -c "$KL_CONF" --hsm-key field1 --port "$port" --cacert "$D/trust.pem" --cert "$D/idev.crt" \
            --key "$D/idev.key" --csr "$D/bench.b64" --seconds "$secs" --clients 8 --modes "$mode" >> "$out"
        c1=$(cpu "$@")
        echo "cpu $mode $(awk '{print $1 + $2}' "$out.time") $(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" >> "$out"
    done
    cat "$out"
}

if ! libest_build; then
    for m in keepalive:25 new_handshake:10; do
        bench_not_measured "libest.est.mtls.${m%:*}.8c" 1/s "no cisco/libest source at $src"
        bench_not_measured "est.mtls.${m%:*}.8c.vs_libest" 1/s "no cisco/libest source at $src" "${m#*:}"
    done
    exit 0
fi

est_setup_ca
# OCSP pre-production off, as in est_bench.sh (whose figures these rounds repeat): its pass
# every 60 s signs an answer for each certificate issued since the last one, a few seconds of
# keyline-cad's CPU that would land in whichever keyline round is in flight.
printf '\n[cad]\nsocket = cad.sock\nocsp-preproduce = 0\n' >> "$KL_CONF"
est_write_conf "threads = ${KL_BENCH_THREADS:-1}" "workers = ${KL_BENCH_WORKERS:-16}" "max-connections = 4096"
new_csr bench "/CN=sensor-0001/serialNumber=HW0001"

# libest's CA: openssl-ca layout, a P-256 key like field1's
L=$D/libest
mkdir -p "$L/estCA/private" "$L/estCA/newcerts"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$L/estCA/private/cakey.pem" \
    -subj "/CN=libest Bench CA" -days 365 -out "$L/estCA/cacert.crt" 2>/dev/null
: > "$L/estCA/index.txt"
echo 01 > "$L/estCA/serial"
cat > "$L/ca.cnf" <<CNF
[ca]
default_ca = CA_default
[CA_default]
dir = $L/estCA
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = \$dir/cacert.crt
serial = \$dir/serial
private_key = \$dir/private/cakey.pem
default_days = 365
default_md = sha256
policy = policy_any
email_in_dn = no
copy_extensions = none
x509_extensions = client_cert
unique_subject = no
[policy_any]
commonName = supplied
serialNumber = optional
[client_cert]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
cat "$D/root1.pem" "$D/factory1.pem" > "$L/trusted.pem"
# libest's estserver sends its certificate alone (it reads the first certificate of -c, and
# est_server_init takes no chain). keyline-estd gets the same file, the leaf alone, so that the
# clients of both receive, decode and verify the same handshake; the client trusts field1
# beside root1, for both servers. (With its chain keyline-estd's clients decode one more
# certificate per handshake: 0.1 ms of the load generator's CPU per new connection.)
cp "$D/est-server.crt" "$D/est-server.pem"
cat "$D/root1.pem" "$D/field1.pem" > "$D/trust.pem"
LPORT=$(free_port)
LPID=
trap 'libest_stop; est_cleanup' EXIT
# libest's estserver runs only for its own rounds: started before each, stopped after it. Left
# running it keeps using CPU after its clients are gone (two of its threads poll in a sleep
# loop: 1.27 s of CPU in 10 s idle after a round, measured), which would fall on keyline's
# next round. Each start begins with an empty index.txt: its openssl-ca code reads and rewrites
# the whole file for every certificate, so later rounds would slow libest down.
libest_start() {
    : > "$L/estCA/index.txt"
    rm -f "$L/estCA/newcerts/"*.pem
    (cd "$L" && exec env EST_TRUSTED_CERTS="$L/trusted.pem" EST_CACERTS_RESP="$L/estCA/cacert.crt" \
        EST_OPENSSL_CACONFIG="$L/ca.cnf" "$cache/inst/bin/estserver" -c "$D/est-server.pem" \
        -k "$D/est-server.key" -r keyline-bench -n -p "$LPORT" >> "$L/estserver.log" 2>&1) &
    LPID=$!
    wait_up "$LPID" estserver python3 -c "import socket; socket.create_connection(('127.0.0.1', $LPORT), 1)"
}
libest_stop() {
    [ -n "$LPID" ] || return 0
    kill "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
    LPID=
}

# est_start's check trusts root1 alone, which the leaf alone does not chain to
cad_start
est_run
wait_up "$EST_PID" keyline-estd curl -sf --cacert "$D/trust.pem" "$EST_URL/healthz"
echo "keyline-estd + keyline-cad, then libest estserver ($LIBEST_REV): $(nproc) CPUs, 8 clients, $secs s per run, $rounds rounds"
# in turn, keyline then libest, $rounds times; each figure the median of its rounds, so that the
# machine's other load, which comes and goes, weighs on both alike
issued=0
for r in $(seq 1 "$rounds"); do
    echo "-- keyline, round $r"
    bench "$EST_PORT" "$D/keyline.$r.out" "$EST_PID" "$CAD_PID"
    echo "-- libest, round $r"
    libest_start
    bench "$LPORT" "$D/libest.$r.out" "$LPID"
    libest_stop
    n=$(grep -c '^V' "$L/estCA/index.txt" || true)
    [ "$n" -gt 0 ] || die "libest issued nothing: $(tail -n 5 "$L/estserver.log")"
    issued=$((issued + n))
done
echo "libest issued $issued certificates (its index.txt, every round)"

fig() { # fig NAME VALUE [LIMIT_NAME LIMIT_VALUE [TARGET]]; unit $UNIT (default 1/s)
    UNIT=${UNIT:-1/s} python3 - "$@" <<'PY'
import json, os, sys
a = sys.argv[1:]
u = os.environ["UNIT"]
f = {"name": a[0], "value": float(a[1]), "unit": u}
if len(a) > 2:
    f.update(limit_name=a[2], limit_value=float(a[3]))
    t = ""
    if len(a) > 4:
        f["target"] = float(a[4])
        t = ", target " + a[4]
    print("  %-48s %10.3g %s = %.2f times %s (%.3g)%s" % (a[0], f["value"], u, f["value"] / f["limit_value"], a[2], f["limit_value"], t))
else:
    print("  %-48s %10.3g %s" % (a[0], f["value"], u))
out = os.environ.get("KL_BENCH_RESULTS")
if out:
    with open(out, "a") as fh:
        fh.write(json.dumps(f) + "\n")
PY
}
for m in keep-alive:keepalive:25 new-handshake:new_handshake:10; do
    IFS=: read -r mode fname target <<< "$m"
    k=$(median_rate keyline "$mode")
    l=$(median_rate libest "$mode")
    if [ -z "$k" ] || [ -z "$l" ]; then die "no $mode rate"; fi
    fig "libest.est.mtls.$fname.8c" "$l"
    if [ "$(awk -v l="$l" 'BEGIN {print (l > 0)}')" = 1 ]; then
        fig "est.mtls.$fname.8c.vs_libest" "$k" "libest.est.mtls.$fname.8c" "$l" "$target"
    fi
    # where the CPU went, per enrollment: the load generator's and each server's, which share
    # the machine's cores in these runs (docs/performance.md "EST against cisco/libest")
    kcli=$(median_cpu_ms keyline "$mode" 3); ksrv=$(median_cpu_ms keyline "$mode" 4)
    lcli=$(median_cpu_ms libest "$mode" 3); lsrv=$(median_cpu_ms libest "$mode" 4)
    [ -n "$kcli" ] && [ -n "$ksrv" ] && [ -n "$lcli" ] && [ -n "$lsrv" ] || die "no $mode CPU figures"
    UNIT=ms fig "est.mtls.$fname.8c.client_cpu_ms" "$kcli"
    UNIT=ms fig "est.mtls.$fname.8c.server_cpu_ms" "$ksrv" "libest.est.mtls.$fname.8c.server_cpu_ms" "$lsrv"
    UNIT=ms fig "libest.est.mtls.$fname.8c.client_cpu_ms" "$lcli"
    UNIT=ms fig "libest.est.mtls.$fname.8c.server_cpu_ms" "$lsrv"
    # keyline's rate were its server alone on the cores (the load generator elsewhere, as
    # devices are): a bound from its CPU per enrollment, not a measured rate
    if [ "$(awk -v l="$l" 'BEGIN {print (l > 0)}')" = 1 ]; then
        fig "est.mtls.$fname.8c.server_cpu_bound" "$(awk -v n="$(nproc)" -v c="$ksrv" 'BEGIN {printf "%.1f", n * 1000 / c}')" \
            "libest.est.mtls.$fname.8c" "$l"
    fi
done
kill "$LPID" 2>/dev/null || true
wait "$LPID" 2>/dev/null || true
trap - EXIT
est_stop
