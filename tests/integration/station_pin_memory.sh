# The station holds no token PIN at all (issue 11: keyline-cad alone holds PIN and token; issue
# 10 defect 5 before it): with each PIN source in the configuration it shares with keyline-cad
# ([hsm] pin = env:, file: readable by the station's user, prompt on a terminal), a running
# station that has provisioned a device is dumped with gcore (package gdb) and the core must not
# contain the PIN, nor /proc/PID/environ; it never prompts. The station is still non-dumpable
# (inject-mode keys), and so is keyline-cad, which does hold the PIN (prctl PR_GET_DUMPABLE
# asked inside each through gdb). gcore/gdb attach through ptrace: needs root (CAP_SYS_PTRACE),
# as every station test here runs.
source "$KL_SRC/tests/integration/station_common.sh"
source "$KL_SRC/tests/lib/core_dump.sh"
command -v gcore >/dev/null && command -v gdb >/dev/null || fail "gcore and gdb are required (scripts/deps installs gdb)"
[ "$(id -u)" = 0 ] || fail "this test dumps a non-dumpable process with gcore: run it as root"

# A token whose user PIN is long and random, so finding it in a core dump means it is a copy.
PIN=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
[ ${#PIN} = 40 ] || fail "could not make a random PIN"
softhsm2-util --init-token --free --label kl-pinmem --pin "$PIN" --so-pin "$KL_SO_PIN" >/dev/null
sed -i 's|^token = .*|token = pkcs11:token=kl-pinmem|' "$KL_CONF"
export KEYLINE_PIN="$PIN"
st_setup # keyline-cad logs in with env:KEYLINE_PIN; every station below runs without it
# dumpable PID: PR_GET_DUMPABLE asked inside the process
dumpable() {
  gdb -nx -batch -p "$1" -ex 'print (int)prctl(3, 0, 0, 0, 0)' 2>/dev/null | sed -n 's/^\$1 = //p'
}
d=$(dumpable "$CAD_PID")
[ "$d" = 0 ] || fail "keyline-cad is dumpable (PR_GET_DUMPABLE = '${d:-?}')"
ok "keyline-cad (which holds the PIN) is not dumpable"

# pin_check SRC PID SERIAL: the checks on a running, logged-in station
pin_check() {
  local src=$1 pid=$2 serial=$3 n
  # Non-dumpable while it holds a session: ask the process itself (PR_GET_DUMPABLE = 3).
  local d
  d=$(dumpable "$pid")
  [ "$d" = 0 ] || fail "$src: station is dumpable (PR_GET_DUMPABLE = '${d:-?}')"
  n=$(tr '\0' '\n' <"/proc/$pid/environ" | grep -c -F -- "$PIN" || true)
  [ "$n" = 0 ] || fail "$src: the PIN is in /proc/$pid/environ"
  local core="$KL_TEST_DIR/core-$src"
  kl_core_dump "$pid" "$core" || fail "$src: gcore $pid failed"
  [ -s "$core" ] || fail "$src: no core file"
  # the dump is real: it holds what the station does keep (the device's hardware serial)
  grep -q -a -F -- "$serial" "$core" || fail "$src: core dump lacks the device serial (dump broken?)"
  n=$(grep -c -a -F -- "$PIN" "$core" || true)
  [ "$n" = 0 ] || fail "$src: the token PIN is in the station's memory ($n places in the core dump)"
  rm -f "$core"
  ok "$src: PIN not in the core dump of the running station, not in its environment; not dumpable"
  ! grep -q "Enter token PIN" "station-$src.log" || fail "$src: the station asked for the token PIN"
}

# wait_ok SERIAL: until the device's result line says ok (30 s)
wait_ok() {
  local i
  for i in $(seq 1 300); do
    [ -f results.jsonl ] && [ "$(st_result "$1" outcome)" = ok ] && return 0
    sleep 0.1
  done
  return 1
}

n=0
for src in env file prompt; do
  n=$((n + 1))
  serial="PM-$src"
  conf="$KL_TEST_DIR/$src.conf"
  cp "$KL_CONF" "$conf"
  case $src in
    env) ;; # pin = env:KEYLINE_PIN, as with-token.sh writes it
    file)
      printf '%s\n' "$PIN" >pin.txt
      chmod 600 pin.txt
      sed -i 's|^pin = .*|pin = file:pin.txt|' "$conf" ;;
    prompt) sed -i 's|^pin = .*|pin = prompt|' "$conf" ;;
  esac
  st_fixture $n
  st_dev $n "$serial" --stay
  if [ $src != prompt ]; then
    # the station's user has no PIN: not in its environment (env:), and a PIN file it could
    # read (file:) it must leave alone
    env -u KEYLINE_PIN "$KPROV" -c "$conf" --port "$KL_TEST_DIR/fix$n" >>"station-$src.log" 2>&1 &
    pid=$!
  else
    # on a terminal (script gives it one): it must not ask; nothing is ever typed
    rm -f prompt.fifo prompt.pid
    mkfifo prompt.fifo
    env -u KEYLINE_PIN script -qfec \
      "sh -c 'echo \$\$ >$KL_TEST_DIR/prompt.pid; exec $KPROV -c $conf --port $KL_TEST_DIR/fix$n'" \
      "station-$src.log" <prompt.fifo >/dev/null 2>&1 &
    st_pids+=($!)
    exec 7>prompt.fifo
    for i in $(seq 1 50); do [ -s prompt.pid ] && break; sleep 0.1; done
    pid=$(cat prompt.pid)
  fi
  st_pids+=($pid)
  wait_ok "$serial" || { cat "station-$src.log"; fail "$src: device $serial not provisioned"; }
  kill -0 "$pid" 2>/dev/null || fail "$src: station $pid is not running"
  pin_check $src "$pid" "$serial"
  ! grep -q -F -- "$PIN" "station-$src.log" || fail "$src: the PIN is in the station's output"
  kill -TERM "$pid"
  st_wait_pid "$pid" 20 >/dev/null 2>&1 || true
  kill -0 "$pid" 2>/dev/null && fail "$src: station did not stop on SIGTERM"
  [ $src = prompt ] && exec 7>&-
  st_unplug $n
done
ok "the station holds no token PIN, whatever PIN source the shared configuration names"
