#!/usr/bin/env bash
# Logs as JSON lines ([log] format = json, keyline.conf(5)): keyline-cad and keyline-estd
# started, asked, refused and stopped with the key set; every line either wrote on stderr is
# one JSON object (Python's json module reads them) with ts, level, prog and msg. The
# environment variable KEYLINE_LOG_FORMAT overrides the key; a value other than text or json
# is a usage error (exit 2).
set -euo pipefail
. "$(dirname "$0")/est_common.sh"

est_setup_ca
est_write_conf
printf '\n[log]\nformat = json\n' >> "$KL_CONF"

est_start
expect_status 200 "healthz" "$EST_URL/healthz"
expect_status 404 "unknown path" "$EST_URL/.well-known/est/no-such-op"
expect_status 401 "simpleenroll without credentials" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$D/idev.b64" "$EST/simpleenroll"
kill -HUP "$EST_PID"
sleep 0.3
est_stop

python3 - "$D/cad.log" keyline-cad "$D/estd.log" keyline-estd <<'PY' || die "not JSON lines"
import json, re, sys
args = sys.argv[1:]
for path, prog in zip(args[::2], args[1::2]):
    lines = open(path, "rb").read().split(b"\n")
    assert lines[-1] == b"", f"{path}: no newline at the end"
    lines = lines[:-1]
    assert len(lines) >= 3, f"{path}: {len(lines)} lines"
    for n, raw in enumerate(lines, 1):
        try:
            o = json.loads(raw)
        except ValueError as e:
            sys.exit(f"{path}:{n}: not JSON ({e}): {raw[:200]!r}")
        assert sorted(o) == ["level", "msg", "prog", "ts"], f"{path}:{n}: {o}"
        assert o["prog"] == prog, f"{path}:{n}: {o}"
        assert o["level"] in ("debug", "info", "warn", "error"), f"{path}:{n}: {o}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["ts"]), f"{path}:{n}: {o}"
    print(f"ok - {path}: {len(lines)} lines, each a JSON object from {prog}")
PY
grep -q '"msg":"keyline-estd ready"' "$D/estd.log" || die "estd ready line"
grep -q '"msg":"keyline-cad: listening on ' "$D/cad.log" || die "cad listening line"

# KEYLINE_LOG_FORMAT=text overrides the key; a bad value is refused before anything starts
KEYLINE_LOG_FORMAT=text "$BIN/keyline-cad" -c "$KL_CONF" 2>"$D/cad-text.log" &
CAD_PID=$!
wait_up "$CAD_PID" keyline-cad "$BIN/kl_cad_client" "$D/cad.sock" hello version=1
cad_stop
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]+Z info keyline-cad: listening on ' "$D/cad-text.log" ||
    die "KEYLINE_LOG_FORMAT=text: $(head -n 3 "$D/cad-text.log")"
ok "KEYLINE_LOG_FORMAT=text overrides [log] format = json"
rc=0
KEYLINE_LOG_FORMAT=xml "$BIN/keyline-estd" -c "$KL_CONF" 2>"$D/bad.log" || rc=$?
[ "$rc" = 2 ] || die "KEYLINE_LOG_FORMAT=xml: exit $rc, expected 2"
grep -q "KEYLINE_LOG_FORMAT: 'xml' is neither text nor json" "$D/bad.log" || die "bad value message"
ok "KEYLINE_LOG_FORMAT=xml -> usage error"
