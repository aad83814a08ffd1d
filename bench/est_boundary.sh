#!/usr/bin/env bash
# The cost of the keyline-cad hop for EST (issue 11, item 7): EST keep-alive enrollments/s with
# 8 clients through keyline-estd + keyline-cad, as a ratio to the keyline-estd of the last commit
# before it became a keyline-cad client (its own signer processes), measured in the same run.
#
#   KL_BUILD=build-bench bench/est_boundary.sh      (scripts/bench runs it as its own block)
#   KL_BENCH_SECONDS=5         seconds per measurement
#   KL_BENCH_BOUNDARY_RUNS=2   runs per side, alternated (old, new, old, new, ...) against drift
#   KL_BENCH_OLD_REV=REV       the "before" commit (default: the parent of "keyline-estd: a client
#                              of keyline-cad ...")
#
# The old commit is checked out with `git worktree add --detach` into a temporary folder, built
# there (Release: keyline-ca, keyline-estd) and removed at the end. Each run is a fresh SoftHSM
# token (that side's tests/lib/with-token.sh, templates and est_common.sh: the same config shape
# the integration tests of that commit use; the new side starts keyline-cad first), the same load
# generator binary ($KL_BUILD/bin/est_bench; bench/est_bench.c is unchanged since that commit),
# the same CSR shape (P-256). Prints the figures and the ratio to the limit; exits 0 whatever the
# ratio (a benchmark, not a timed test), non-zero only if something failed to build or run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# --run: one measurement, called under a side's with-token.sh (EST_COMMON, EST_BENCH set)
if [ "${1:-}" = --run ]; then
    # shellcheck source=/dev/null  # that side's tests/integration/est_common.sh
    . "${EST_COMMON:?}"
    est_setup_ca
    est_write_conf "threads = ${KL_BENCH_THREADS:-1}" "workers = ${KL_BENCH_WORKERS:-16}" \
        "max-connections = 4096"
    est_start
    new_csr bench "/CN=sensor-0001/serialNumber=HW0001"
    out=$(KL_BENCH_NO_RAW=1 "${EST_BENCH:?}" -c "$KL_CONF" --hsm-key field1 --port "$EST_PORT" \
        --cacert "$D/root1.pem" --cert "$D/idev.crt" --key "$D/idev.key" --csr "$D/bench.b64" \
        --seconds "${KL_BENCH_SECONDS:-5}" --clients 8 --modes keep-alive)
    est_stop
    # "8  keep-alive  RATE  -  ERRORS"
    echo "$out" | awk '$1 == 8 && $2 == "keep-alive" { print "RESULT", $3, $5 }'
    exit 0
fi

root=$(cd "$here/.." && pwd)
build=$(cd "${KL_BUILD:?KL_BUILD not set (scripts/bench sets it)}" && pwd)
runs=${KL_BENCH_BOUNDARY_RUNS:-2}
secs=${KL_BENCH_SECONDS:-5}

rev=${KL_BENCH_OLD_REV:-}
if [ -z "$rev" ]; then
    client=$(git -C "$root" log --format=%H --grep='^keyline-estd: a client of keyline-cad' \
        -- enrollment/ | tail -n 1)
    [ -n "$client" ] || { echo "est_boundary: no 'keyline-estd: a client of keyline-cad' commit" >&2; exit 1; }
    rev=$(git -C "$root" rev-parse "$client^")
fi
rev=$(git -C "$root" rev-parse --short "$rev")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keyline-est-old.XXXXXX")
cleanup() {
    git -C "$root" worktree remove --force "$tmp/src" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
git -C "$root" worktree add --detach "$tmp/src" "$rev" >/dev/null 2>&1
echo "building $rev (before keyline-cad) in $tmp/build (Release: keyline-ca keyline-estd)"
cmake -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/build" -j"$(nproc)" --target keyline-ca keyline-estd >/dev/null

# one_run SIDE: prints "RATE ERRORS"; the set-up chatter goes to $tmp/SIDE.log, shown on failure
one_run() {
    local src bld
    if [ "$1" = old ]; then src=$tmp/src bld=$tmp/build; else src=$root bld=$build; fi
    # its runs write no figures of their own: the same names as est_bench.sh's would replace
    # them (and the limits other figures are measured against) in bench/results.json
    env -u KL_BENCH_RESULTS KL_BUILD=$bld EST_COMMON=$src/tests/integration/est_common.sh \
        EST_BENCH=$build/bin/est_bench \
        "$src/tests/lib/with-token.sh" bash "$here/est_boundary.sh" --run 2>"$tmp/$1.log" |
        awk '$1 == "RESULT" { print $2, $3 }'
}

echo "$(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $secs s per run, $runs runs per side" \
    "alternated; threads = ${KL_BENCH_THREADS:-1}, workers = ${KL_BENCH_WORKERS:-16};" \
    "old = $rev (signer processes), new = $(git -C "$root" rev-parse --short HEAD)" \
    "$(git -C "$root" diff --quiet HEAD -- ca enrollment common hsm || echo '+ working tree')" \
    "(keyline-estd + keyline-cad)"
old_sum=0 new_sum=0 old_list="" new_list=""
for i in $(seq 1 "$runs"); do
    for side in old new; do
        read -r rate errs < <(one_run "$side") || true
        if [ -z "${rate:-}" ]; then
            echo "est_boundary: the $side run $i produced no figure" >&2
            tail -n 30 "$tmp/$side.log" >&2
            exit 1
        fi
        printf 'run %d %-3s %8.0f enroll/s  (%s errors)\n' "$i" "$side" "$rate" "$errs"
        if [ "$side" = old ]; then
            old_sum=$(awk -v a="$old_sum" -v b="$rate" 'BEGIN { print a + b }')
            old_list+=" $rate"
        else
            new_sum=$(awk -v a="$new_sum" -v b="$rate" 'BEGIN { print a + b }')
            new_list+=" $rate"
        fi
        rate=
    done
done
awk -v o="$old_sum" -v n="$new_sum" -v r="$runs" -v ol="$old_list" -v nl="$new_list" 'BEGIN {
    o /= r; n /= r; ratio = (o > 0) ? n / o : 0
    # spread: (max - min) / mean of each side, how noisy the machine was
    split(ol, a, " "); split(nl, b, " ")
    omin = omax = a[1]; nmin = nmax = b[1]
    for (i = 2; i <= r; i++) {
        if (a[i] < omin) omin = a[i]; if (a[i] > omax) omax = a[i]
        if (b[i] < nmin) nmin = b[i]; if (b[i] > nmax) nmax = b[i]
    }
    printf "spread between runs: old %.0f%%, new %.0f%%\n", 100 * (omax - omin) / o, 100 * (nmax - nmin) / n
    printf "EST keep-alive, 8 clients: old %.0f/s, new %.0f/s, ratio %.2f (limit >= 0.85): %s\n",
        o, n, ratio, (ratio >= 0.85) ? "ABOVE LIMIT (ok)" : "BELOW LIMIT"
}'
