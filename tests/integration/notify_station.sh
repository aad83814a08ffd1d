#!/usr/bin/env bash
# sd_notify from keyline-provision --watch (keyline-provision.service is Type=notify), without
# systemd: READY=1 once it has reached keyline-cad (its pending sweep) and watches for
# fixtures; STOPPING=1 on SIGTERM, then exit 0. A one-shot run (--port, no --watch) is no
# service and says nothing. tests/lib/notify_listen.sh reads the datagrams.
set -euo pipefail
source "$(dirname "$0")/station_common.sh"
D=$KL_TEST_DIR
. "$KL_SRC/tests/lib/notify_listen.sh"
cd "$D"

st_setup
# the check run the moment READY=1 arrives: the station logged its start (configuration read,
# keyline-cad reached by the sweep that comes next) and still runs
notify_listen prov sh -c "grep -q 'station: keyline-cad ' '$D/station.log' && pgrep -f 'keyline-provision -c $KL_CONF --watch-glob' >/dev/null"
NOTIFY_SOCKET="$D/prov.notify" "$KPROV" -c "$KL_CONF" --watch-glob "$D/hot*" >>station.log 2>&1 &
PROV=$!
st_pids+=("$PROV")
wait_msg prov "READY=1 check=ok"
echo "ok - keyline-provision --watch-glob: READY=1 once started"
kill -TERM "$PROV"
rc=0
st_wait_pid "$PROV" 20 || rc=$?
[ "$rc" = 0 ] || fail "keyline-provision exited $rc on SIGTERM"
wait_msg prov "STOPPING=1"
echo "ok - keyline-provision: SIGTERM -> STOPPING=1, exit 0"
listener_stop

# one-shot (a port, no watch): no READY=1
st_fixture 1
notify_listen once true
rc=0
NOTIFY_SOCKET="$D/once.notify" timeout 5 "$KPROV" -c "$KL_CONF" --port "$D/fix1" --count 1 \
    >>station.log 2>&1 || rc=$?
sleep 0.2
! grep -q "READY=1" "$D/once.msgs" || fail "one-shot run sent READY=1"
echo "ok - a one-shot run sends no READY=1 (exit $rc without a device)"
listener_stop
