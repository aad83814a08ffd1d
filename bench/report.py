#!/usr/bin/env python3
"""bench/report.py JSONL RESULTS.json RESULTS.md: the figures one scripts/bench run appended
(bench_lib.h: one JSON object per line) into bench/results.json,
{"figures":[{"name","value","unit","limit_name","limit_value","ratio"}]} (plus "target", the
least ratio the issue asks for, or "target_max", the most, where there is one), and a Markdown table of the same.

A figure whose limit_value is absent takes the value of the figure named limit_name measured in
the same run (the last one of that name); a limit that was not measured leaves limit_value and
ratio null. A figure the run could not measure (bench/bench_common.sh, bench_not_measured) is a
row with value null and "not_measured" (why), shown as such. Nothing here judges: a missed
target is a row that says so."""
import json
import sys


def main(src, out_json, out_md, meta):
    figs = []
    with open(src) as f:
        for line in f:
            line = line.strip()
            if line:
                figs.append(json.loads(line))
    by_name = {}
    for fig in figs:
        if fig["value"] is not None:
            by_name[fig["name"]] = fig["value"]
    rows = []
    for fig in figs:
        lname = fig.get("limit_name")
        lval = fig.get("limit_value")
        if lname and lval is None:
            lval = by_name.get(lname)
        ratio = fig["value"] / lval if lname and lval and fig["value"] is not None else None
        row = {"name": fig["name"], "value": fig["value"], "unit": fig["unit"],
               "limit_name": lname, "limit_value": lval,
               "ratio": round(ratio, 4) if ratio is not None else None}
        if fig.get("target"):
            row["target"] = fig["target"]
        if fig.get("target_max"):
            row["target_max"] = fig["target_max"]
        if fig.get("not_measured"):
            row["not_measured"] = fig["not_measured"]
        row["_exact"] = ratio  # the verdict is on this, not on the rounded ratio
        rows.append(row)
    exact = [r.pop("_exact") for r in rows]
    with open(out_json, "w") as f:
        json.dump({"run": meta, "figures": rows}, f, indent=1)
        f.write("\n")
    lines = ["| figure | value | unit | limit | limit value | ratio | target |",
             "| --- | ---: | --- | --- | ---: | ---: | --- |"]
    for r, x in zip(rows, exact):
        t, tmax = r.get("target"), r.get("target_max")
        verdict = ""
        if r.get("not_measured"):
            verdict = "not measured: " + r["not_measured"]
        elif t:
            verdict = ">= %g: %s" % (t, "met" if x is not None and x >= t
                                     else "MISSED" if x is not None else "no limit")
        elif tmax:
            verdict = "<= %g: %s" % (tmax, "met" if x is not None and x <= tmax
                                     else "MISSED" if x is not None else "no limit")
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], fmt(r["value"]), r["unit"], r["limit_name"] or "",
            fmt(r["limit_value"]) if r["limit_value"] is not None else "",
            "%.3f" % r["ratio"] if r["ratio"] is not None else "", verdict))
    with open(out_md, "w") as f:
        f.write("Run: %s\n\n" % ", ".join("%s %s" % kv for kv in meta.items()))
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def fmt(v):
    if v is None:
        return ""
    if abs(v) >= 100:
        return "%.0f" % v
    return "%.3g" % v


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: report.py JSONL RESULTS.json RESULTS.md [key=value ...]")
    meta = dict(a.split("=", 1) for a in sys.argv[4:])
    main(sys.argv[1], sys.argv[2], sys.argv[3], meta)
