#!/usr/bin/env python3
"""Run keyline's unit tests and end-to-end flows under valgrind memcheck (scripts/valgrind).

Unit tests: every ctest test named unit.*, its own executable (the first ELF file of its
command line, after a wrapper such as tests/lib/with-token.sh) run under valgrind.
End-to-end flows: the integration tests named on the command line, run by ctest against a copy
of the build's bin/ where every keyline binary is a wrapper that execs it under valgrind, so
each flow runs the real binaries (keyline-ca, keyline-cad, keyline-estd, keyline-provision,
keyline-devsim) under memcheck with no change to the tests.

Any memcheck error or definite leak fails the run (--error-exitcode); tests/valgrind.supp holds
third-party suppressions only, each explained."""
import json, os, stat, subprocess, sys, tempfile

build, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
flows = [a for a in sys.argv[3:] if a != "--flows-only"]
flows_only = "--flows-only" in sys.argv[3:]
supp = os.path.join(src, "tests", "valgrind.supp")
vg = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
      "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "--num-callers=30",
      "--suppressions=" + supp, "--quiet",
      # tests fork children that _exit() at once holding the parent's memory (fork-safety
      # checks): what they hold is the parent's, checked when the parent exits
      "--child-silent-after-fork=yes"]


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# Unit tests not run under memcheck, each with its reason (their code paths still run under it
# in the flows, and under ASan + LeakSanitizer in scripts/test --sanitize):
SLOW = {
    # RSA-3072/4096 key generation inside SoftHSM under memcheck: beyond ten minutes
    "unit.hsm": "RSA key generation in SoftHSM",
}


def unit_tests():
    out = subprocess.run(["ctest", "--show-only=json-v1", "-R", r"^unit\.", "-E",
                          "^(%s)$" % "|".join(SLOW).replace(".", "\\.")], cwd=build,
                         check=True, capture_output=True, text=True).stdout
    failed = []
    for t in json.loads(out)["tests"]:
        cmd, env, cwd = list(t["command"]), dict(os.environ), build
        for p in t.get("properties", []):
            if p["name"] == "WORKING_DIRECTORY":
                cwd = p["value"]
            if p["name"] == "ENVIRONMENT":
                for kv in p["value"]:
                    k, _, v = kv.partition("=")
                    env[k] = v
        i = next(i for i, a in enumerate(cmd) if is_elf(a))
        cmd[i:i] = vg
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        print(("ok   " if r.returncode == 0 else "FAIL ") + t["name"], flush=True)
        if r.returncode != 0:
            failed.append(t["name"])
            sys.stdout.write(r.stdout[-4000:] + r.stderr[-8000:])
    return failed


def flow_tests():
    if not flows:
        return []
    wrap = tempfile.mkdtemp(prefix="keyline-valgrind.")
    os.makedirs(os.path.join(wrap, "bin"))
    os.symlink(os.path.join(build, "lib"), os.path.join(wrap, "lib"))
    binaries = ["keyline-ca", "keyline-cad", "keyline-estd", "keyline-provision", "keyline-devsim"]
    for name in os.listdir(os.path.join(build, "bin")):
        real, dst = os.path.join(build, "bin", name), os.path.join(wrap, "bin", name)
        if name in binaries:
            with open(dst, "w") as f:
                f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(vg), real))
            os.chmod(dst, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        else:
            os.symlink(real, dst)
    failed = []
    for fl in flows:
        env = dict(os.environ)
        # the script itself, as ctest runs it, with KL_BUILD pointing at the wrappers
        env["KL_BUILD"] = wrap
        r = subprocess.run([os.path.join(src, "tests", "lib", "with-token.sh"), "bash",
                            os.path.join(src, "tests", "integration", fl + ".sh")], cwd=build,
                           env=env, capture_output=True, text=True)
        print(("ok   " if r.returncode == 0 else "FAIL ") + "flow " + fl, flush=True)
        if r.returncode != 0:
            failed.append(fl)
            sys.stdout.write(r.stdout[-6000:] + r.stderr[-10000:])
    return failed


bad = ([] if flows_only else unit_tests()) + flow_tests()
print("valgrind: %s" % ("all clean" if not bad else "FAILED: " + " ".join(bad)))
sys.exit(1 if bad else 0)
