#!/usr/bin/env bash
# A PostgreSQL store that refuses keyline, and one whose server goes away (ca/store_pg.c;
# docs/deployment.md "PostgreSQL"), with keyline-cad and keyline-ca on a throwaway cluster:
#   - at start, a missing database (3D000), a missing role (28000) or a wrong password (28P01,
#     SCRAM in pg_hba.conf) in [store] url: keyline-ca and keyline-cad exit 2 at once, naming
#     the problem as a configuration error, never "store unavailable" (retried for ever);
#   - at run time, the role's password changed and its sessions cut: a request fails for good
#     (exit 2, not "unavailable") and keyline-cad logs why; the password put back, it serves
#     again without a restart; the database dropped: the same, naming the database;
#   - the server stopped at once (pg_ctl stop -m immediate: the sessions get no error) between
#     two requests, and in the middle of a burst: while it is down a request is "unavailable"
#     (not an I/O error, which the station takes for the device's failure); once it is back
#     the next request is served.
source "$KL_SRC/tests/lib/cad_common.sh"
command -v psql >/dev/null || die "psql is needed"

PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
# run by cad_common.sh's EXIT trap after keyline-cad is killed (a trap of our own was replaced
# by cad_start's, and the cluster outlived every run)
cleanup() {
    [ "$1" = 0 ] || { echo "--- PostgreSQL log (last lines)" >&2; tail -n 12 "$PG_DIR/log" >&2 || true; }
    "$KL_SRC/tests/lib/pg.sh" stop "$PG_DIR" || true
}
CAD_ON_EXIT=cleanup
SUPER=$("$KL_SRC/tests/lib/pg.sh" start "$PG_DIR") || die "PostgreSQL did not start"
# shellcheck disable=SC1091
. "$PG_DIR/env"
sql() { psql -Atq -v ON_ERROR_STOP=1 "$SUPER" -c "$1"; }
url() { echo "postgresql:///$1?host=$KL_TEST_PG_HOST&port=$KL_TEST_PG_PORT&user=$2&password=$3"; }

# keyline's own role with a password (SCRAM), owner of its database
sql "CREATE ROLE kl_app LOGIN PASSWORD 'right-pw'"
sql "CREATE DATABASE kl_app OWNER kl_app"
hba="$PG_DIR/data/pg_hba.conf"
{
    printf 'local all kl_app scram-sha-256\nhost all kl_app 127.0.0.1/32 scram-sha-256\n'
    cat "$hba"
} >"$hba.new"
cat "$hba.new" >"$hba"
sql "SELECT pg_reload_conf()" >/dev/null
APP=$(url kl_app kl_app right-pw)
psql -Atq "$(url kl_app kl_app wrong-pw)" -c "SELECT 1" >/dev/null 2>&1 &&
    die "pg_hba.conf: a wrong password logs in (the password checks below would prove nothing)"
python3 - "$KL_CONF" "$APP" <<'PY'
import sys
p, url = sys.argv[1], sys.argv[2]
s = open(p).read()
assert "\npath = keyline.db\n" in s
open(p, "w").write(s.replace("\npath = keyline.db\n", "\nurl = %s\n" % url))
PY
kca ca create --label root1 --template root --subject "CN=Keyline Test Root,O=Keyline Test" >/dev/null
kca ca create --label field1 --template field-ca --subject "CN=Keyline Field CA,O=Keyline Test" \
    --issuer root1 >/dev/null
cad_conf
cad_role est users "$(id -u)"
cad_profile ldevid field1 device-ldevid est

# at start: keyline-ca and keyline-cad exit 2 with the reason
check_start() {
    local what=$1 bad=$2 want=$3 rc
    python3 - "$KL_CONF" "$bad" >"$D/bad.conf" <<'PY'
import re, sys
sys.stdout.write(re.sub(r"(?m)^url = .*$", lambda m: "url = " + sys.argv[2], open(sys.argv[1]).read()))
PY
    rc=0
    timeout 60 "$BIN/keyline-ca" -c "$D/bad.conf" list >/dev/null 2>"$D/bad-ca.err" || rc=$?
    [ "$rc" = 2 ] || die "$what: keyline-ca exit $rc, want 2: $(cat "$D/bad-ca.err")"
    grep -qF "$want" "$D/bad-ca.err" && grep -q "configuration error" "$D/bad-ca.err" ||
        die "$what: keyline-ca: $(cat "$D/bad-ca.err")"
    grep -q "store unavailable" "$D/bad-ca.err" && die "$what: keyline-ca says unavailable"
    rc=0
    timeout 60 "$BIN/keyline-cad" -c "$D/bad.conf" >/dev/null 2>"$D/bad-cad.err" || rc=$?
    [ "$rc" = 2 ] || die "$what: keyline-cad exit $rc, want 2: $(cat "$D/bad-cad.err")"
    grep -qF "$want" "$D/bad-cad.err" && grep -q "configuration error" "$D/bad-cad.err" ||
        die "$what: keyline-cad: $(cat "$D/bad-cad.err")"
    ok "$what: keyline-ca and keyline-cad exit 2 at start: $(head -1 "$D/bad-cad.err" | cut -c1-200)"
}
check_start "missing database" "$(url kl_nope kl_app right-pw)" 'database "kl_nope" does not exist'
check_start "missing role" "$(url kl_app kl_nobody right-pw)" 'kl_nobody'
check_start "wrong password" "$(url kl_app kl_app wrong-pw)" 'password authentication failed'

cad_start
n=0
issue() { # issue LABEL: one certificate through keyline-cad; stderr in $D/LABEL.err
    n=$((n + 1))
    new_csr "$1" "/CN=dev-$1/serialNumber=HW$n"
    cc "$SOCK" issue profile=ldevid csr=@"$D/$1.der" auth=basic auth-user=bootstrap \
        device-id="HW$n" >"$D/$1.out" 2>"$D/$1.err"
}
issue first || die "issue: $(cat "$D/first.err")"
ok "keyline-cad issues on the store as kl_app"

cut_sessions() {
    sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'kl_app'" >/dev/null
}
# the password changed under a running keyline-cad and its sessions cut: refused for good
sql "ALTER ROLE kl_app PASSWORD 'rotated-pw'"
cut_sessions
rc=0
issue rotated || rc=$?
[ "$rc" = 2 ] || die "password changed: issue exit $rc, want 2: $(cat "$D/rotated.err")"
grep -q "password authentication failed" "$D/rotated.err" || die "password changed: $(cat "$D/rotated.err")"
grep -q "store unavailable" "$D/rotated.err" && die "password changed: 'unavailable': $(cat "$D/rotated.err")"
grep -q "refuses keyline's login.*28P01.*password authentication failed" "$D/cad.log" ||
    die "keyline-cad did not log the refused login"
sql "ALTER ROLE kl_app PASSWORD 'right-pw'"
issue back || die "password put back: $(cat "$D/back.err")"
ok "password changed at run time: refused for good (exit 2), logged by keyline-cad; put back, served again"

# the server stopped at once between requests
"$KL_SRC/tests/lib/pg.sh" crash "$PG_DIR" || die "pg_ctl stop -m immediate"
rc=0
issue down || rc=$?
[ "$rc" != 0 ] || die "issued with the database down"
grep -q "store unavailable" "$D/down.err" || die "database down: not 'unavailable': $(cat "$D/down.err")"
"$KL_SRC/tests/lib/pg.sh" up "$PG_DIR" || die "PostgreSQL did not start again"
issue up || die "first request after the database came back: $(cat "$D/up.err")"
"$KL_SRC/tests/lib/pg.sh" crash "$PG_DIR" || die "pg_ctl stop -m immediate"
"$KL_SRC/tests/lib/pg.sh" up "$PG_DIR" || die "PostgreSQL did not start again"
issue up2 || die "first request after a restart between requests: $(cat "$D/up2.err")"
ok "server stopped at once: 'store unavailable' while down, the next request served once it is back"

# ... and in the middle of a burst (3 clients issuing one after the other until the server is
# back and they got one more certificate): every request that fails says "store unavailable"
# (what the front ends retry), none an I/O error
burst() {
    local w=$1 i=0 r end=$((SECONDS + 120))
    while [ "$SECONDS" -lt "$end" ]; do
        i=$((i + 1))
        new_csr "b$w-$i" "/CN=dev-b$w-$i/serialNumber=B$w-$i"
        r=ok
        cc "$SOCK" issue profile=ldevid csr=@"$D/b$w-$i.der" auth=basic auth-user=bootstrap \
            device-id="B$w-$i" >/dev/null 2>"$D/b$w-$i.err" || r=fail
        echo "$r" >>"$D/b$w.res"
        [ "$r" = ok ] && [ -f "$D/burst.stop" ] && break
        [ "$r" = ok ] || sleep 0.1 # as a front end waits before its retry
    done
}
bpids=()
for w in 1 2 3; do
    burst "$w" &
    bpids+=($!)
done
for _ in $(seq 1 300); do
    [ "$(cat "$D"/b?.res 2>/dev/null | wc -l)" -ge 6 ] && break
    sleep 0.05
done
"$KL_SRC/tests/lib/pg.sh" crash "$PG_DIR" || die "pg_ctl stop -m immediate"
sleep 1
"$KL_SRC/tests/lib/pg.sh" up "$PG_DIR" || die "PostgreSQL did not start again"
: >"$D/burst.stop"
for p in "${bpids[@]}"; do wait "$p"; done
nfail=0 nall=0
for w in 1 2 3; do
    for e in "$D"/b"$w"-*.err; do
        nall=$((nall + 1))
        [ -s "$e" ] || continue
        nfail=$((nfail + 1))
        grep -q "store unavailable" "$e" || die "burst: a request failed other than 'unavailable': $(cat "$e")"
    done
    [ "$(tail -1 "$D/b$w.res")" = ok ] || die "burst: client $w got no certificate after the server came back"
done
[ "$nfail" -ge 1 ] || die "burst: no request met the stopped server"
ok "server stopped at once in a burst: $nfail of $nall requests 'store unavailable', none an I/O error; each client served again"

# the database dropped under a running keyline-cad
sql "DROP DATABASE kl_app WITH (FORCE)"
rc=0
issue dropped || rc=$?
[ "$rc" = 2 ] || die "database dropped: issue exit $rc, want 2: $(cat "$D/dropped.err")"
grep -q 'database "kl_app" does not exist' "$D/dropped.err" || die "database dropped: $(cat "$D/dropped.err")"
grep -q "refuses keyline's login.*3D000" "$D/cad.log" || die "keyline-cad did not log the dropped database"
ok "database dropped at run time: refused for good (exit 2), naming the database, logged"
kill -KILL "$CAD_PID"
wait "$CAD_PID" 2>/dev/null || true
CAD_PID=
