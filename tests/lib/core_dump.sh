# kl_core_dump PID OUT: write the memory of a running process to OUT, to search it for secrets.
# Normally `gcore` (gdb): the honest "what would a core dump show" check. A process built with
# AddressSanitizer (libasan in its maps) maps terabytes of shadow memory that gcore writes out
# in full and fills the disk, so there the readable mappings are read from /proc/PID/mem
# instead, skipping single mappings over 1 GiB (ASan's shadow and allocator reservations; the
# heap, stacks and data of these programs are far smaller). Both need root (ptrace), and both
# read non-dumpable processes. Sourced by tests/integration/*.sh.
kl_core_dump() {
    local pid=$1 out=$2
    if ! grep -q libasan "/proc/$pid/maps" 2>/dev/null; then
        rm -f "$out.$pid"
        gcore -o "$out" "$pid" >/dev/null 2>&1 || return 1
        mv "$out.$pid" "$out"
        return 0
    fi
    python3 - "$pid" "$out" <<'PY'
import re, sys
pid, out = sys.argv[1], sys.argv[2]
limit = 1 << 30
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem, \
        open(out, "wb") as dst:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        lo, hi, perms = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if perms[0] != "r" or hi - lo > limit or "[vvar]" in line:
            continue
        try:
            mem.seek(lo)
            dst.write(mem.read(hi - lo))
        except OSError:
            pass
PY
}
