# Several keyline-cad daemons on one store and one token folder, with the front ends that list
# them (sourced by tests/integration/cad_multi*.sh and cad_failover*.sh; docs/deployment.md).
#
# Each process has a configuration of its own (cm_conf), because each listens somewhere else:
#   cad-NAME.conf   [cad] socket cad-NAME.sock and a mutual-TLS listener on 127.0.0.1:port
#   estN.conf       [est] listen, [est] cad = the list the test gives (unix: and tls: addresses)
#   stN.conf        [station] cad = a list, results stN.jsonl
# Everything else (CA hierarchy, store, token, profiles, roles) is one: [store] path is the same
# file (SQLite), or the PostgreSQL URL in $CM_STORE. Roles: the test user on the Unix sockets,
# and the front-end certificates est2.example / station2.example on the TLS listeners.
source "$KL_SRC/tests/lib/common.sh"

KDEV="$KL_BIN/keyline-devsim"
CC="$KL_BIN/kl_cad_client"
ME=$(id -un)
declare -A CM_PID CM_PORT
cm_pids=()

cm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cm_pg_start: a throwaway PostgreSQL cluster (tests/lib/pg.sh, outside the test folder so
# that its own user may enter it) for the store: CM_STORE, CM_PG_DIR; removed at exit
cm_pg_start() {
  CM_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kl-pg.XXXXXX")
  CM_STORE=$("$KL_SRC/tests/lib/pg.sh" start "$CM_PG_DIR") || fail "PostgreSQL did not start"
}

cm_cleanup() {
  local st=$? p alive
  # devices and stations first by SIGTERM: keyline-devsim removes its work folder (in /dev/shm
  # unless TMPDIR says otherwise) on SIGTERM, never on SIGKILL; what still runs after 5 s is killed
  for p in "${cm_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${cm_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  for p in "${cm_pids[@]}" "${CM_PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${cm_pids[@]}" "${CM_PID[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${CM_PG_DIR:-}" ]; then
    [ "$st" = 0 ] || { echo "--- PostgreSQL log (last lines)" >&2; tail -n 12 "$CM_PG_DIR/log" >&2 || true; }
    "$KL_SRC/tests/lib/pg.sh" stop "$CM_PG_DIR" || true
  fi
  if [ "$st" != 0 ]; then
    for f in "$KL_TEST_DIR"/*.log; do
      echo "--- $(basename "$f") (last lines)" >&2
      tail -n 12 "$f" >&2
    done
  fi
  if grep -l "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$KL_TEST_DIR"/*.log 2>/dev/null; then
    echo "FAIL: sanitizer report in the logs above" >&2
    exit 1
  fi
}
trap cm_cleanup EXIT

# cm_key_csr NAME SUBJECT [openssl req args]: NAME.key (0600), NAME.csr
cm_key_csr() {
  local n=$1 s=$2; shift 2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$n.key" \
    -subj "$s" -out "$n.csr" "$@" 2>/dev/null
  chmod 600 "$n.key"
}

# cm_setup: hierarchy, TLS certificates of the daemons, the EST server and the front ends,
# the bootstrap user; writes base.conf (the with-token.sh configuration + the shared sections)
cm_setup() {
  if [ -n "${CM_STORE:-}" ]; then
    python3 - "$KL_CONF" "$CM_STORE" <<'PY'
import sys
p, url = sys.argv[1], sys.argv[2]
s = open(p).read()
assert "\npath = keyline.db\n" in s
open(p, "w").write(s.replace("\npath = keyline.db\n", "\nurl = %s\n" % url))
PY
  fi
  make_hierarchy
  cat root1.pem field1.pem >client-ca.pem
  cm_key_csr cad "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1"
  kca issue --issuer field1 --template est-server --csr cad.csr --out cad.crt >/dev/null
  cat cad.crt field1.pem >cad-chain.pem
  cm_key_csr est-server "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost"
  kca issue --issuer field1 --template est-server --csr est-server.csr --out est-server.crt >/dev/null
  cat est-server.crt field1.pem >est-server.pem
  local fe
  for fe in est2 station2; do
    cm_key_csr "$fe" "/CN=$fe.example"
    kca issue --issuer field1 --template frontend --csr "$fe.csr" --out "$fe.crt" >/dev/null
  done
  CM_USER=bootstrap
  CM_PASS='correct horse battery staple'
  python3 - "$CM_USER" "$CM_PASS" >est.htpasswd <<'PY'
import ctypes, sys
lc = ctypes.CDLL("libcrypt.so.1")
lc.crypt_gensalt.restype = ctypes.c_char_p
lc.crypt.restype = ctypes.c_char_p
print(sys.argv[1] + ":" + lc.crypt(sys.argv[2].encode(), lc.crypt_gensalt(b"$y$", 0, None, 0)).decode())
PY
  chmod 600 est.htpasswd
  {
    cat "$KL_CONF"
    cat <<CONF

[est]
tls-cert = est-server.pem
tls-key = est-server.key
issuer = field1
template = device-ldevid
client-ca = factory1 field1
htpasswd = est.htpasswd
channel-binding = optional
retry-after = 1

[est.label held]
approval = manual

[station]
issuer = factory1
template = device-idevid
timeout-ms = 600
slow-timeout-ms = 600
retries = 3
pending-window = 3600
est-url = https://est.example.test/.well-known/est

[role est]
users = $ME
certs = est2.example

[role station]
users = $ME
certs = station2.example
CONF
  } >base.conf
}

# cm_conf FILE LINES...: base.conf with the given lines added to their sections ("[est] cad =
# a, b" puts "cad = a, b" under [est]; sections not in base.conf are appended)
cm_conf() {
  local out=$1; shift
  python3 - "$out" "$@" <<'PY'
import re, sys
out, adds = sys.argv[1], sys.argv[2:]
text = open("base.conf").read().rstrip("\n").split("\n")
for a in adds:
    m = re.match(r"^\[([^\]]+)\]\s*(.*)$", a)
    sec, line = m.group(1), m.group(2)
    try:
        i = text.index("[%s]" % sec) + 1
        while i < len(text) and text[i].strip() and not text[i].startswith("["):
            i += 1
        text.insert(i, line)
    except ValueError:
        text += ["", "[%s]" % sec, line]
open(out, "w").write("\n".join(text) + "\n")
PY
}

# cm_port_taken LOG: the daemon that wrote LOG stopped because its port was taken meanwhile
# (cm_free_port's port is free when chosen; a test running beside this one may bind it first)
cm_port_taken() { tail -n 3 "$1" | grep -q "Address already in use"; }

# cm_cad_start NAME: keyline-cad with cad-NAME.conf (socket cad-NAME.sock, TLS on a free port
# CM_PORT[NAME], kept across restarts), until it answers; CM_PID[NAME]. A first start whose
# port another process took meanwhile tries another one (at most 3 in all).
cm_cad_start() {
  local n=$1 i try fresh=0
  [ -n "${CM_PORT[$n]:-}" ] || { CM_PORT[$n]=$(cm_free_port); fresh=1; }
  for try in 1 2 3; do
    cm_conf "cad-$n.conf" "[cad] socket = cad-$n.sock" "[cad] listen = 127.0.0.1:${CM_PORT[$n]}" \
      "[cad] tls-cert = cad-chain.pem" "[cad] tls-key = cad.key" "[cad] tls-client-ca = client-ca.pem"
    "$KL_BIN/keyline-cad" -c "cad-$n.conf" >>"cad-$n.log" 2>&1 &
    CM_PID[$n]=$!
    for i in $(seq 1 100); do
      "$CC" "cad-$n.sock" hello version=1 >/dev/null 2>&1 && return 0
      if ! kill -0 "${CM_PID[$n]}" 2>/dev/null; then
        if [ $fresh = 1 ] && [ $try -lt 3 ] && cm_port_taken "cad-$n.log"; then
          CM_PORT[$n]=$(cm_free_port)
          continue 2
        fi
        fail "keyline-cad $n exited during start-up"
      fi
      sleep 0.1
    done
    fail "keyline-cad $n did not answer"
  done
}

# cm_cad_stop NAME: SIGTERM, exit 0
cm_cad_stop() {
  local n=$1 rc=0
  kill -TERM "${CM_PID[$n]}"
  wait "${CM_PID[$n]}" || rc=$?
  unset "CM_PID[$n]"
  [ "$rc" = 0 ] || fail "keyline-cad $n exited $rc on SIGTERM"
}

# cm_tls NAME: the tls: address of daemon NAME
cm_tls() { echo "tls:127.0.0.1:${CM_PORT[$1]}"; }

# cm_est_start N CADLIST [TLS-FRONT-END]: keyline-estd N on a free port (CM_PORT[estN]) asking
# the daemons in CADLIST, with the client certificate TLS-FRONT-END (est2) for tls: addresses
cm_est_start() {
  local n=$1 list=$2 fe=${3:-} i try
  local extra=()
  [ -z "$fe" ] || extra=("[est] cad-tls-cert = $fe.crt" "[est] cad-tls-key = $fe.key" "[est] cad-tls-ca = root1.pem")
  for try in 1 2 3; do
    CM_PORT[est$n]=$(cm_free_port)
    cm_conf "est$n.conf" "[est] listen = 127.0.0.1:${CM_PORT[est$n]}" "[est] cad = $list" "${extra[@]}"
    env -u KEYLINE_PIN "$KL_BIN/keyline-estd" -c "est$n.conf" >>"est$n.log" 2>&1 &
    CM_PID[est$n]=$!
    for i in $(seq 1 150); do
      curl -sf --cacert root1.pem "https://127.0.0.1:${CM_PORT[est$n]}/healthz" >/dev/null 2>&1 && return 0
      if ! kill -0 "${CM_PID[est$n]}" 2>/dev/null; then
        [ $try -lt 3 ] && cm_port_taken "est$n.log" && continue 2
        fail "keyline-estd $n exited during start-up"
      fi
      sleep 0.1
    done
    fail "keyline-estd $n did not answer"
  done
}

# cm_station_conf N CADLIST [TLS-FRONT-END]: stN.conf, results stN.jsonl
cm_station_conf() {
  local n=$1 list=$2 fe=${3:-}
  local extra=()
  [ -z "$fe" ] || extra=("[station] cad-tls-cert = $fe.crt" "[station] cad-tls-key = $fe.key" "[station] cad-tls-ca = root1.pem")
  cm_conf "st$n.conf" "[station] cad = $list" "[station] results = st$n.jsonl" "${extra[@]}"
}

# cm_fixture NAME: pty pair fixNAME (station) <-> devNAME (device)
cm_fixture() {
  socat pty,raw,echo=0,link="$KL_TEST_DIR/fix$1" pty,raw,echo=0,link="$KL_TEST_DIR/dev$1" 2>/dev/null &
  cm_pids+=($!)
  local i
  for i in $(seq 1 50); do
    [ -e "fix$1" ] && [ -e "dev$1" ] && return 0
    sleep 0.1
  done
  fail "socat did not create fixture $1"
}

# cm_devices FIXTURE SERIAL...: a background "operator" plugs the devices into FIXTURE one after
# the other (each leaves by itself once locked); $CM_DEV_ARGS are added to each devsim
cm_devices() {
  local fx=$1; shift
  (
    for s in "$@"; do
      # shellcheck disable=SC2086 # CM_DEV_ARGS: extra devsim arguments, word-split
      "$KDEV" --port "$KL_TEST_DIR/dev$fx" --serial "$s" --state "$KL_TEST_DIR/$s.state" ${CM_DEV_ARGS:-} >>"$KL_TEST_DIR/$s.log" 2>&1 || exit 1
    done
  ) &
  cm_pids+=($!)
}

# cm_enroll ESTN NAME [PATH]: POST NAME.csr's DER to simpleenroll with Basic auth, following
# 503 + Retry-After (counted in NAME.503) up to 60 times; prints the final HTTP status, the
# certificate in NAME.pem on 200
cm_enroll() {
  local n=$1 name=$2 path=${3:-} st i hdr
  : >"$name.503"
  [ -f "$name.b64" ] || openssl req -in "$name.csr" -outform DER | openssl base64 >"$name.b64"
  for i in $(seq 1 60); do
    st=$(curl -s --cacert root1.pem -u "$CM_USER:$CM_PASS" -H "Content-Type: application/pkcs10" \
      -D "$name.hdr" -o "$name.out" -w '%{http_code}' --data-binary @"$name.b64" \
      "https://127.0.0.1:${CM_PORT[est$n]}/.well-known/est$path/simpleenroll") || st=000
    if [ "$st" = 503 ]; then
      hdr=$(tr -d '\r' <"$name.hdr" | awk -F': ' 'tolower($1)=="retry-after"{print $2}')
      echo "${hdr:-none}" >>"$name.503"
      sleep 0.3 # the test's clock; Retry-After itself is checked by the caller
      continue
    fi
    break
  done
  if [ "$st" = 200 ]; then
    openssl base64 -d -in "$name.out" | openssl pkcs7 -inform DER -print_certs -out "$name.pem"
  fi
  echo "$st"
}

# cm_serial FILE.pem
cm_serial() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }

# cm_valid_count DEVICE: valid certificates recorded for a device id
cm_valid_count() {
  kca list --status valid --json | python3 -c '
import json, sys
print(sum(1 for c in json.load(sys.stdin) if c.get("device_id") == sys.argv[1]))' "$1"
}

# cm_result FILE SERIAL FIELD: FIELD of the last line for SERIAL in a station results file
cm_result() {
  python3 - "$@" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("hw_serial") == sys.argv[2]:
        last = r
print(last.get(sys.argv[3], "") or "")
PY
}

# cm_crl_numbers ISSUER: the CRL numbers of ISSUER's CRLs in the order the audit log recorded
# them being signed (one a line)
cm_crl_numbers() {
  kca audit list | grep -o "issuer=$1 crl-number=[0-9]*" | sed 's/.*crl-number=//'
}

# cm_strictly_increasing: stdin numbers, one a line, each greater than the one before
cm_strictly_increasing() {
  awk 'NR > 1 && $1 <= prev { print "not increasing: " prev " then " $1; bad = 1 } { prev = $1 } END { exit bad }'
}

# cm_est_csrs TAG: CM_EST_N keys and CSRs per keyline-estd, eE-I with serialNumber TAGE-I
cm_est_csrs() {
  local e i
  for e in 1 2; do
    for i in $(seq 1 "$CM_EST_N"); do cm_key_csr "e$e-$i" "/CN=ldev-$e-$i/serialNumber=$1$e-$i"; done
  done
}

# cm_est_load N [PAUSE]: keyline-estd N's enrollments in the background, 4 clients in parallel,
# each a quarter of the CSRs (PAUSE seconds between two of a client's); est-load-N-C.txt
cm_est_load() {
  local e=$1 c
  for c in 0 1 2 3; do
    (
      for i in $(seq 1 "$CM_EST_N"); do
        [ $((i % 4)) = "$c" ] || continue
        echo "e$e-$i $(cm_enroll "$e" "e$e-$i")"
        [ -z "${2:-}" ] || sleep "$2"
      done
    ) >"est-load-$e-$c.txt" &
    cm_pids+=($!)
  done
}

# cm_devices_wait: every keyline-devsim of this test has left its fixture. A locked device
# lingers about a second for a restarted station's CHALLENGE; a fixture reused before then shows
# the next station that device again (it finishes it, its --count is reached, and the new
# device is never served). Up to 20 s.
cm_devices_wait() {
  local i
  for i in $(seq 1 200); do
    pgrep -f -- "keyline-devsim --port $KL_TEST_DIR/" >/dev/null || return 0
    sleep 0.1
  done
  fail "devices still on their fixtures after 20 s: $(pgrep -af -- "keyline-devsim --port $KL_TEST_DIR/" | head -3)"
}

# cm_line_devices TAG: two fixtures per station (fixS-F), CM_DEV_N devices plugged into each
# one after the other (TAG-S-F-I, $CM_DEV_ARGS added); their serials in cm_devs
cm_line_devices() {
  local s f i list
  for s in 1 2; do cm_fixture "$s-1"; cm_fixture "$s-2"; done
  cm_devs=()
  for s in 1 2; do
    for f in 1 2; do
      list=(); for i in $(seq 1 "$CM_DEV_N"); do list+=("$1-$s-$f-$i"); done
      cm_devices "$s-$f" "${list[@]}"
      cm_devs+=("${list[@]}")
    done
  done
}

# cm_failover_start TLS1 TLS2 ESTTAG DEVTAG [DEVSIM ARGS]: the two-daemon load of
# cad_failover*.sh. Daemons a and b; est1 and station 1 ask cad-a.sock, cad-b.sock; est2 and
# station 2 ask tls: TLS1, then TLS2 (daemon names). CM_EST_N enrollments per keyline-estd
# (cm_est_csrs ESTTAG, cm_est_load with 0.2 s pauses), slow devices (cm_line_devices DEVTAG,
# extra keyline-devsim arguments from the fifth on), stations 1 and 2 running (cm_sp1, cm_sp2)
cm_failover_start() {
  local tls1=$1 tls2=$2 etag=$3 dtag=$4
  shift 4
  cm_setup
  cm_cad_start a
  cm_cad_start b
  cm_est_start 1 "cad-a.sock, cad-b.sock"
  cm_est_start 2 "$(cm_tls "$tls1"), $(cm_tls "$tls2")" est2
  cm_station_conf 1 "cad-a.sock, cad-b.sock"
  cm_station_conf 2 "$(cm_tls "$tls1"), $(cm_tls "$tls2")" station2
  cm_est_csrs "$etag"
  CM_DEV_ARGS="--misbehave slow --delay-ms 150 $*"
  cm_line_devices "$dtag"
  CM_DEV_ARGS=
  cm_est_load 1 0.2
  cm_est_load 2 0.2
  timeout 240 "$KL_BIN/keyline-provision" -c st1.conf --port fix1-1 --port fix1-2 --count $((2 * CM_DEV_N)) >>st1.log 2>&1 &
  cm_sp1=$!
  timeout 240 "$KL_BIN/keyline-provision" -c st2.conf --port fix2-1 --port fix2-2 --count $((2 * CM_DEV_N)) >>st2.log 2>&1 &
  # shellcheck disable=SC2034 # cm_sp1, cm_sp2: for the sourcing test
  cm_sp2=$!
}

# cm_wait_issued TAGS N: wait (up to 10 s) until N certificates are recorded for device ids
# that start with one of the letters TAGS; prints how many there were
cm_wait_issued() {
  local n=0
  for _ in $(seq 1 200); do
    n=$(kca list --json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if (c.get("device_id") or "")[:1] in sys.argv[1]))' "$1")
    [ "$n" -lt "$2" ] || break
    sleep 0.05
  done
  echo "$n"
}
