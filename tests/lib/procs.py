"""Process helpers for the Python test harnesses (tests/hostile/run.py, tests/crash/crash.py)."""
import subprocess


def stop(proc, wait=0.0, grace=5.0):
    """Stop `proc` as a user would: let it end by itself for `wait` seconds, then SIGTERM (a
    keyline-devsim removes its work folder then), then SIGKILL if it is still there after
    `grace` seconds. Returns once it has been reaped."""
    if proc.poll() is not None:
        return
    try:
        proc.wait(timeout=wait)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
