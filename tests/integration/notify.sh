#!/usr/bin/env bash
# sd_notify without systemd (Type=notify units, docs/packaging.md): keyline-cad and
# keyline-estd run with NOTIFY_SOCKET pointing at a Unix datagram socket this test reads. On
# READY=1 the listener itself asks the daemon (keyline-cad: a hello request on its socket;
# keyline-estd: /healthz 200), so a READY=1 sent before the daemon serves fails the test.
# SIGHUP to keyline-estd: RELOADING=1 then READY=1; SIGTERM: STOPPING=1, then exit 0.
set -euo pipefail
. "$(dirname "$0")/est_common.sh"
. "$KL_SRC/tests/lib/notify_listen.sh"

est_setup_ca
est_write_conf

# keyline-cad: READY=1 once its socket answers a request
notify_listen cad "$BIN/kl_cad_client" "$D/cad.sock" hello version=1
LCAD=$LISTENER_PID
NOTIFY_SOCKET="$D/cad.notify" "$BIN/keyline-cad" -c "$KL_CONF" 2>>"$D/cad.log" &
CAD_PID=$!
wait_msg cad "READY=1 check=ok"
ok "keyline-cad: READY=1 after its socket answers"
grep -q "check=failed" "$D/cad.msgs" && die "keyline-cad: READY=1 before it answered"

# keyline-estd: READY=1 once /healthz answers (its listeners up, keyline-cad reached)
notify_listen estd curl -sf --cacert "$D/root1.pem" "$EST_URL/healthz"
LEST=$LISTENER_PID
est_run env NOTIFY_SOCKET="$D/estd.notify"
wait_msg estd "READY=1 check=ok"
ok "keyline-estd: READY=1 after /healthz answers"

# SIGHUP: RELOADING=1, then READY=1 again
kill -HUP "$EST_PID"
wait_msg estd "RELOADING=1"
for _ in $(seq 1 100); do
    [ "$(grep -c '^READY=1' "$D/estd.msgs")" -ge 2 ] && break
    sleep 0.1
done
python3 - "$D/estd.msgs" <<'PY' || die "keyline-estd: SIGHUP messages out of order: $(tr '\n' ' ' < "$D/estd.msgs")"
import sys
m = [l.strip() for l in open(sys.argv[1]) if l.strip() != "listening"]
assert m == ["READY=1 check=ok", "RELOADING=1", "READY=1 check=ok"], m
PY
ok "keyline-estd: SIGHUP -> RELOADING=1, READY=1"

# SIGTERM: STOPPING=1, exit 0 (keyline-estd first, as est_stop does)
term_wait "$EST_PID" keyline-estd
EST_PID=
wait_msg estd "STOPPING=1"
ok "keyline-estd: SIGTERM -> STOPPING=1, exit 0"
term_wait "$CAD_PID" keyline-cad
CAD_PID=
wait_msg cad "STOPPING=1"
[ "$(tail -n 1 "$D/cad.msgs")" = "STOPPING=1" ] || die "keyline-cad: STOPPING=1 is not the last message"
ok "keyline-cad: SIGTERM -> STOPPING=1, exit 0"
LISTENER_PID=$LCAD listener_stop
LISTENER_PID=$LEST listener_stop
