# Sourced by the bench scripts (bash).
#
# bench_not_measured NAME UNIT REASON [TARGET]: a figure this run could not measure (a peer not
# installed, no tmpfs) gets a row of its own in bench/results.json ("value": null and
# "not_measured": REASON) and bench/results.md ("not measured: REASON"), so a missing peer is
# seen in the results and not only in the run's output. Nothing written without
# KL_BENCH_RESULTS (a script run on its own).
bench_not_measured() {
    echo "  $1: not measured ($3)"
    [ -n "${KL_BENCH_RESULTS:-}" ] || return 0
    python3 - "$@" >>"$KL_BENCH_RESULTS" <<'PY'
import json, sys
a = sys.argv[1:]
f = {"name": a[0], "value": None, "unit": a[1], "not_measured": a[2]}
if len(a) > 3:
    f["target"] = float(a[3])
print(json.dumps(f))
PY
}
