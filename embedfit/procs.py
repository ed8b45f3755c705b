"""Child-process helpers: a free local port to start a server on, a wait until it answers, and a stop that always
ends the child.

They live in `core` because two kinds of callers start child processes: the load script
(`scripts/load_test.py` starts the app) and the tests (which start the app, `chroma run` and other
children). Tests must not import helpers from `scripts/`: those are programs on top of every layer,
not a library, so what both need is here, at the bottom, and imported by both.
"""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
