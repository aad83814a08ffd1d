# sd_notify(3) without systemd, for tests/integration/notify*.sh (sourced): a Unix datagram
# socket as NOTIFY_SOCKET, read by python3, each message a line in $D/NAME.msgs. Needs D.

# notify_fail MSG: the sourcing test's own failure (die in est_common.sh, fail in common.sh)
notify_fail() {
    if declare -F die >/dev/null; then die "$@"; else fail "$@"; fi
}

# notify_listen NAME CHECK-CMD...: a datagram socket $D/NAME.notify; each message is a line in
# $D/NAME.msgs, READY=1 followed by " check=ok" or " check=failed" (CHECK-CMD run right away)
notify_listen() {
    local name=$1
    shift
    rm -f "$D/$name.notify" "$D/$name.msgs"
    python3 - "$D/$name.notify" "$D/$name.msgs" "$@" <<'PY' &
import socket, subprocess, sys
path, out, check = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a") as f:
    f.write("listening\n")
    f.flush()
    while True:
        for m in s.recv(4096).decode().split("\n"):
            if not m:
                continue
            if m == "READY=1":
                r = subprocess.run(check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                m += " check=" + ("ok" if r.returncode == 0 else "failed")
            f.write(m + "\n")
            f.flush()
PY
    LISTENER_PID=$!
    for _ in $(seq 1 50); do
        grep -qx listening "$D/$name.msgs" 2>/dev/null && return 0
        sleep 0.1
    done
    notify_fail "notify listener for $name did not start"
}

# wait_msg NAME LINE: until $D/NAME.msgs holds LINE (10 s)
wait_msg() {
    for _ in $(seq 1 100); do
        grep -qx "$2" "$D/$1.msgs" 2>/dev/null && return 0
        sleep 0.1
    done
    notify_fail "$1: no '$2' from the daemon (got: $(tr '\n' ' ' < "$D/$1.msgs" 2>/dev/null))"
}

listener_stop() { kill "$LISTENER_PID" 2>/dev/null || true; wait "$LISTENER_PID" 2>/dev/null || true; }

