"""Child-process helpers: a free local port to start a server on, a wait until it answers, a stop that always
ends the child, a child that dies with its parent (so a kill -9 of the parent leaves no orphan serving), and a
reaper for the grandchildren a library starts behind our back (Ray's agents), which no `preexec_fn` reaches.

They live in `core` because two kinds of callers start child processes: the load script
(`scripts/load_test.py` starts the app) and the tests (which start the app, `chroma run` and other
children). Tests must not import helpers from `scripts/`: those are programs on top of every layer,
not a library, so what both need is here, at the bottom, and imported by both.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

#: prctl option: the signal a process gets when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on (host, port): a server we start there will be the one that answers."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child is sent SIGKILL when the process that started it dies,
    however it dies (kill -9 included), so no orphan keeps serving a port or holding a store (Linux
    `PR_SET_PDEATHSIG`; elsewhere a no-op). If the parent died before the child got here, the child exits at once.

    SIGKILL, not SIGTERM: a child that ignores or is slow on SIGTERM must not outlive its parent, and every writer
    here is crash-safe (rerunning resumes).
    """
    parent = os.getpid()

    def preexec() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            return
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent is already gone: we would never be signalled
            os._exit(1)

    return preexec


def wait_until_answering(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Return once `url` answers HTTP 200. `ChildProcessError` if `proc` (the server behind it) exits first,
    `TimeoutError` if nothing answers within `timeout` seconds; the caller decides what to tell the user."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChildProcessError(f"exited (code {proc.returncode}) before it answered at {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # not listening yet, or an HTTP error status while it starts
            pass
        time.sleep(0.5)
    raise TimeoutError(f"did not answer at {url} within {timeout:.0f} s")


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM (a supervisor, `kill`) ends this process as Ctrl-C does, through the `finally` blocks
    that stop its children, instead of leaving them running without their parent."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then the parent's pid, ...; `proc(5)`
    numbers them from 3), or None when the process is gone. The name is skipped by its closing parenthesis: it may
    hold spaces and parentheses itself."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now, read from /proc (Linux): what a parent's death must not leave running."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie has exited: only its status waits to be read)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat): with the pid, names one process even after
    the pid is reused. None when it is gone."""
    stat = _stat(pid)
    return stat[19] if stat is not None and len(stat) > 19 else None


#: the environment variable that marks what was started below a reaper's parent (see `start_reaper`)
REAPER_MARK = "EMBEDFIT_REAPER_MARK"


@dataclass
class Reaper:
    """A running watcher from `start_reaper`: its process, the mark its parent's children inherit, and the value
    the variable had before (restored by `stop_reaper`)."""

    proc: subprocess.Popen
    mark: str
    previous: str | None


def start_reaper(interval: float = 0.25) -> Reaper | None:
    """Start a watcher that kills, when this process dies in any way (kill -9 included), every process started
    below it: what a library started for us and would leave behind. Ray started locally is the case: its raylet
    shares the driver's fate, but the raylet's agents (DashboardAgent, RuntimeEnvAgent) and workers are reparented
    to init and keep running for minutes. Stop the watcher with `stop_reaper` once the library has shut down
    cleanly.

    Two ways to find them, because either alone misses some:
    - a mark in the environment (`REAPER_MARK`, unique to this watcher) that every process started from now on
      inherits; once the parent is gone the watcher kills every process whose environment carries it, however
      shortly before the kill it was born (a snapshot misses a worker born in its last interval: issue 22's flaky
      Ray test lost one such `default_worker.py` in five runs);
    - snapshots of the parent's descendants every `interval` seconds (from /proc, with their start times, so a
      reused pid is never killed), for a child that clears its environment.

    The watcher runs in its own session, so a Ctrl-C to the terminal's process group does not end it before it has
    done its work. Linux only (None elsewhere)."""
    if not os.path.isdir("/proc/self"):
        return None
    mark = f"{os.getpid()}-{_start_time(os.getpid())}-{uuid.uuid4().hex}"
    code = f"from embedfit.procs import _reap_after; _reap_after({os.getpid()}, {interval!r}, {mark!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    previous = os.environ.get(REAPER_MARK)
    os.environ[REAPER_MARK] = mark  # after the watcher started: it must not carry its own mark
    return Reaper(proc=proc, mark=mark, previous=previous)


def stop_reaper(reaper: Reaper | None) -> None:
    """End a watcher from `start_reaper` without it killing anything (the parent is alive and has cleaned up), and
    take its mark out of the environment, so what this process starts later is not marked."""
    if reaper is None:
        return
    if os.environ.get(REAPER_MARK) == reaper.mark:
        if reaper.previous is None:
            os.environ.pop(REAPER_MARK, None)
        else:
            os.environ[REAPER_MARK] = reaper.previous
    if reaper.proc.poll() is None:
        reaper.proc.terminate()
        reaper.proc.wait(timeout=10)


def carries_mark(pid: int | str, mark: str) -> bool:
    """True when process `pid` was started with `REAPER_MARK=mark` in its environment (another user's process, or
    one gone, is False: its environment cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{REAPER_MARK}={mark}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _kill_if_same(pid: int, start: str | None = None) -> bool:
    """SIGKILL `pid` if it still runs and (with `start`) is the process that started then; True when a signal was
    sent. One read of /proc/PID/stat answers both."""
    stat = _stat(pid)
    if stat is None or stat[0] == "Z" or (start is not None and (len(stat) <= 19 or stat[19] != start)):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except OSError:
        return False


def _reap_after(parent: int, interval: float, mark: str, settle: float = 10.0) -> None:
    """The watcher's loop (see `start_reaper`): record `parent`'s descendants; when it is gone, kill them and every
    process carrying `mark`, scanning again until a scan finds none (one still starting may spawn another) or
    `settle` seconds have passed."""
    me = os.getpid()
    seen: dict[int, str] = {}
    while os.getppid() == parent:  # reparented (to init or a subreaper) once the parent has died
        # every snapshot is added, none replaces the last: a scan that runs while the parent dies finds its
        # children half reparented and would lose them (the start times keep a reused pid from being killed)
        for pid in descendants(parent) - {me}:
            start = _start_time(pid)
            if start is not None:
                seen[pid] = start
        time.sleep(interval)
    for pid, start in seen.items():
        _kill_if_same(pid, start)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        # the mark names them (a reused pid that carries it was started below the parent too)
        marked = [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me and carries_mark(e, mark)]
        if not any([_kill_if_same(pid) for pid in marked]):
            return
        time.sleep(0.1)
