# Shared prelude of the keyline-cad integration tests (tests/integration/cad_*.sh), sourced
# under tests/lib/with-token.sh: the names every such test uses, the daemon's part of
# keyline.conf, and keyline-cad started and stopped with its exit checked.
#
#   BIN, D, SOCK ($D/cad.sock), kca (keyline-ca), cc (kl_cad_client), die, ok, new_csr NAME SUBJ
#   cad_conf [LINE...]              [cad] socket = cad.sock and the LINEs
#   cad_role NAME KEY VALUE [OPS]   [role NAME] KEY = VALUE (users, certs) [ops = OPS]
#   cad_profile NAME ISSUER TEMPLATE CLIENTS
#   cad_start                       keyline-cad -c $KL_CONF, log $D/cad.log, until its socket is there
#   cad_stop                        SIGTERM: the test fails unless it exits 0 within
#                                   CAD_STOP_SECS (default 10) seconds
#   CAD_ON_EXIT=FUNC                the test's clean-up, run at exit with its status (no trap
#                                   of its own: this file's EXIT trap kills keyline-cad first)
set -euo pipefail
BIN=${KL_BUILD:?KL_BUILD not set}/bin
D=${KL_TEST_DIR:?run under tests/lib/with-token.sh}
SOCK="$D/cad.sock"
CAD_PID=
CAD_STOP_SECS=${CAD_STOP_SECS:-10}
kca() { "$BIN/keyline-ca" -c "$KL_CONF" "$@"; }
cc() { "$BIN/kl_cad_client" "$@"; }
die() {
    echo "FAIL: $*" >&2
    [ -f "$D/cad.log" ] && tail -n 30 "$D/cad.log" >&2
    exit 1
}
ok() { echo "ok - $*"; }
# new_csr NAME SUBJECT: a P-256 key $D/NAME.key and its CSR $D/NAME.der (DER)
new_csr() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/$1.key" \
        -subj "$2" -outform DER -out "$D/$1.der" 2>/dev/null
}

cad_conf() {
    {
        printf '\n[cad]\nsocket = cad.sock\n'
        [ $# = 0 ] || printf '%s\n' "$@"
    } >>"$KL_CONF"
}
cad_role() {
    {
        printf '\n[role %s]\n%s = %s\n' "$1" "$2" "$3"
        [ -z "${4:-}" ] || printf 'ops = %s\n' "$4"
    } >>"$KL_CONF"
}
cad_profile() {
    printf '\n[profile %s]\nissuer = %s\ntemplate = %s\nclients = %s\n' "$1" "$2" "$3" "$4" \
        >>"$KL_CONF"
}

# Alive and not a zombie (a child that exited stays one until it is waited for).
cad_alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "${st%% *}" != Z ]
}

# The one EXIT trap of a test that sources this file: keyline-cad killed if it still runs,
# then the test's own clean-up, CAD_ON_EXIT (a function, given the exit status), e.g. a
# PostgreSQL cluster stopped. A test sets CAD_ON_EXIT rather than a trap of its own, which
# would take this one's place (or lose its own to it).
cad_exit() {
    local st=$?
    if [ -n "$CAD_PID" ]; then kill -KILL "$CAD_PID" 2>/dev/null || true; fi
    if [ -n "${CAD_ON_EXIT:-}" ]; then "$CAD_ON_EXIT" "$st" || true; fi
    exit "$st"
}
trap cad_exit EXIT

cad_start() {
    rm -f "$SOCK"
    "$BIN/keyline-cad" -c "$KL_CONF" 2>>"$D/cad.log" &
    CAD_PID=$!
    for _ in $(seq 1 100); do
        [ -S "$SOCK" ] && return 0
        cad_alive "$CAD_PID" || break
        sleep 0.1
    done
    die "keyline-cad did not create its socket $SOCK"
}

cad_stop() {
    [ -n "$CAD_PID" ] || die "cad_stop: keyline-cad was not started"
    local pid=$CAD_PID rc=0
    kill -TERM "$pid" 2>/dev/null || die "keyline-cad (pid $pid) was gone before SIGTERM"
    for _ in $(seq 1 $((CAD_STOP_SECS * 10))); do
        cad_alive "$pid" || break
        sleep 0.1
    done
    if cad_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        CAD_PID=
        die "keyline-cad did not exit within $CAD_STOP_SECS s of SIGTERM"
    fi
    wait "$pid" || rc=$?
    CAD_PID=
    [ "$rc" = 0 ] || die "keyline-cad exited $rc on SIGTERM"
}
