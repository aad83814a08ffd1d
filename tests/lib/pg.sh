#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests: initdb in a folder of its own, a Unix socket in that
# folder (no TCP unless KL_PG_TCP=1: then 127.0.0.1 on a free port), trust authentication for
# the superuser "keyline", a database "keyline". Nothing outside the folder is touched.
#
#   tests/lib/pg.sh run CMD [ARGS...]   start a cluster, run CMD with the variables below, stop
#                                       and remove it afterwards (also on failure or signal);
#                                       exits with CMD's status
#   tests/lib/pg.sh start [DIR]         start one in DIR (new: mktemp -d), print its URL
#   tests/lib/pg.sh stop DIR            stop it (fast shutdown) and remove DIR
#   tests/lib/pg.sh restart DIR [SECS]  stop it, wait SECS (default 0), start it again (the same
#                                       data and socket): for tests of a database restart
#   tests/lib/pg.sh down DIR | up DIR   stop / start it without removing anything
#   tests/lib/pg.sh crash DIR           stop it at once (-m immediate: sessions cut without an
#                                       error, no shutdown checkpoint); `up DIR` starts it again
#
# For CMD (run) and in DIR/env (start; `. DIR/env`):
#   KL_PG_DIR            the cluster's folder (data in DIR/data, socket in DIR)
#   KL_TEST_STORE_URL    postgresql:///keyline?host=DIR&port=P&user=keyline
#   KL_TEST_PG_HOST, KL_TEST_PG_PORT, KL_TEST_PG_USER   the same, one by one (a test that
#                        makes a database per case builds its own URL from them)
#   KL_PG_SH             this script (run only): "$KL_PG_SH down|up|restart $KL_PG_DIR"
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the user postgres (runuser)
# and DIR belongs to it. Requires the Debian package postgresql (scripts/deps); a missing
# server is an error (exit 1), never a skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  echo "pg.sh: no PostgreSQL server here (install the package postgresql: scripts/deps)" >&2
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg_up() {
  local dir=$1 bin port listen
  bin=$(pg_bin)
  port=$(cat "$dir/port")
  listen=''
  [ -f "$dir/tcp" ] && listen=127.0.0.1
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-k $dir -p $port -c listen_addresses='$listen' -c max_connections=200" start >/dev/null
}

pg_down() {
  local dir=$1 bin
  bin=$(pg_bin)
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

pg_crash() {
  local dir=$1 bin
  bin=$(pg_bin)
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1
}

pg_start() {
  local dir=${1:-} bin port
  bin=$(pg_bin)
  [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
  mkdir -p "$dir"
  chmod 0755 "$dir"
  port=5432
  if [ "${KL_PG_TCP:-0}" = 1 ]; then
    port=$(free_port)
    : > "$dir/tcp"
  fi
  echo "$port" > "$dir/port"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" "$dir/port" && { [ -f "$dir/tcp" ] && chown postgres: "$dir/tcp" || true; }
  as_pg "$bin/initdb" -D "$dir/data" -U keyline --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    echo "pg.sh: initdb failed in $dir" >&2
    return 1
  }
  pg_up "$dir" || { cat "$dir/log" >&2 || true; echo "pg.sh: the server did not start" >&2; return 1; }
  as_pg "$bin/createdb" -h "$dir" -p "$port" -U keyline keyline
  local host=$dir
  [ -f "$dir/tcp" ] && host=127.0.0.1
  cat > "$dir/env" <<ENV
export KL_PG_DIR='$dir'
export KL_TEST_PG_HOST='$host'
export KL_TEST_PG_PORT='$port'
export KL_TEST_PG_USER=keyline
export KL_TEST_STORE_URL='postgresql:///keyline?host=$host&port=$port&user=keyline'
ENV
  echo "postgresql:///keyline?host=$host&port=$port&user=keyline"
}

pg_stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  pg_down "$dir"
  rm -rf "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
  start) pg_start "${1:-}" ;;
  stop) pg_stop "${1:?pg.sh stop DIR}" ;;
  down) pg_down "${1:?pg.sh down DIR}" ;;
  up) pg_up "${1:?pg.sh up DIR}" ;;
  crash) pg_crash "${1:?pg.sh crash DIR}" ;;
  restart)
    pg_down "${1:?pg.sh restart DIR}"
    sleep "${2:-0}"
    pg_up "$1"
    ;;
  run)
    [ $# -gt 0 ] || { echo "pg.sh run CMD [ARGS...]" >&2; exit 2; }
    KL_PG_RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
    trap 'pg_stop "$KL_PG_RUN_DIR"' EXIT
    trap 'exit 130' INT TERM
    pg_start "$KL_PG_RUN_DIR" >/dev/null
    # shellcheck disable=SC1091
    . "$KL_PG_RUN_DIR/env"
    export KL_PG_SH="$here/pg.sh"
    set +e
    "$@"
    st=$?
    set -e
    exit $st
    ;;
  *)
    sed -n '2,28p' "$0" >&2
    exit 2
    ;;
esac
