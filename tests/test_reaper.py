"""`procs.start_reaper`: what a library starts below us and would orphan dies with us, kill -9 included.

The case it exists for (issue 22, case 20): kill -9 of an ingest on a Ray it started left Ray's DashboardAgent and
RuntimeEnvAgent running for minutes (the raylet shares the driver's fate; its agents were reparented to init).
Oracle: /proc, read directly. A plain parent that orphans a grandchild first (fast), then a real Ray ingest.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import nq_data_dir

from embedfit.procs import descendants, running


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if running(p)]


def _ray_processes() -> set[int]:
    """Every Ray process on the machine, by its command line (an oracle apart from the reaper's mark and snapshots:
    a worker born after the test's last look at the tree is still counted)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            cmd = _cmdline(int(entry))
            if cmd.startswith("ray::") or "/site-packages/ray/" in cmd:
                out.add(int(entry))
    return out


def _kill_after(proc: subprocess.Popen, ready, timeout: float) -> set[int]:
    """Wait until `ready(descendants)` holds, note the descendants, kill -9 `proc`; returns what was below it."""
    deadline = time.monotonic() + timeout
    below: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        below = descendants(proc.pid)
        if ready(below):
            break
        time.sleep(0.2)
    assert proc.poll() is None and ready(below), "the child ended before it was ready to be killed"
    time.sleep(0.6)  # two of the reaper's snapshots
    below |= descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return below


def test_a_grandchild_in_its_own_session_dies_with_a_parent_killed_with_9(tmp_path):
    """Without the reaper the grandchild (its own session, as Ray's agents are reparented) keeps running."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys, time
        from embedfit.procs import start_reaper
        reap = sys.argv[1] == "reap"
        reaper = start_reaper() if reap else None
        subprocess.Popen(["sleep", "300"], start_new_session=True)
        time.sleep(300)
    """))
    left: dict[str, list[int]] = {}
    for mode in ("reap", "plain"):
        proc = subprocess.Popen([sys.executable, str(script), mode])
        below = _kill_after(proc, lambda pids: any(_cmdline(p).startswith("sleep 300") for p in pids), 30)
        sleeps = {p for p in below if _cmdline(p).startswith("sleep 300")}
        left[mode] = _wait_gone(sleeps, 5)
        for p in left[mode]:
            os.kill(p, signal.SIGKILL)
    assert left["reap"] == [] and len(left["plain"]) == 1  # the control shows the orphan is real


def test_a_grandchild_born_just_before_the_kill_dies_too(tmp_path):
    """The case no snapshot can see: the parent starts a grandchild in its own session and is killed at once, well
    within one of the watcher's intervals (made 5 s here). The environment mark finds it. The oracle is the pid the
    grandchild wrote itself before it became `sleep 300`."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, signal, subprocess, sys, time
        from embedfit.procs import start_reaper
        reaper = start_reaper(interval=5.0) if sys.argv[1] == "reap" else None
        time.sleep(1.0)  # the watcher is up and has taken its first snapshot, before the grandchild exists
        subprocess.Popen(["sh", "-c", f"echo $$ > {sys.argv[2]}.tmp && mv {sys.argv[2]}.tmp {sys.argv[2]} "
                          "&& exec sleep 300"], start_new_session=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    left = {}
    for mode in ("reap", "plain"):
        pid_file = tmp_path / f"{mode}.pid"
        subprocess.run([sys.executable, str(script), mode, str(pid_file)], timeout=60)
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), f"{mode}: the grandchild never started"
        pid = int(pid_file.read_text())
        left[mode] = _wait_gone({pid}, 10)
        for p in left[mode]:
            os.kill(p, signal.SIGKILL)
    assert left["reap"] == [] and len(left["plain"]) == 1  # the control: nothing else would have killed it


def test_kill_9_of_a_ray_ingest_leaves_no_ray_process_behind(tmp_path):
    """A real ingest on a Ray it starts (uncached, so it is still embedding), killed once Ray's agents are up."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "EMBEDFIT_PROGRESS": "0"}
    before = _ray_processes()
    log = open(tmp_path / "ingest.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "embedfit", "ingest", "--data", str(nq_data_dir()), "--store",
                             str(tmp_path / "s"), "--engine", "ray", "--limit", "3000", "--no-cache", "--model",
                             "all-MiniLM-L6-v2"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    below = _kill_after(proc, lambda pids: any("DashboardAgent" in _cmdline(p) for p in pids)
                        and any("raylet" in _cmdline(p) for p in pids), 120)
    below |= _ray_processes() - before
    names = {p: _cmdline(p)[:60] for p in below}
    left = _wait_gone(below, 15)
    below |= _ray_processes() - before  # one born while the others were dying
    names.update({p: _cmdline(p)[:60] for p in below if p not in names})
    left = _wait_gone(below, 5)
    assert left == [], ([names[p] for p in left], (tmp_path / "ingest.log").read_text()[-2000:])
