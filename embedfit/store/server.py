"""A Chroma server for one store: `chroma run` on the store's `chroma/` folder, holding the store's lock.

Chroma's local store is not process-safe, so several processes (the app while an ingest or a training writes,
`make demo`'s second phase) go through one `chroma run` and `HttpClient`s. The server itself takes no lock of
ours, so a server started by hand sits beside embedded openers that corrupt each other's view of the files
(`InternalError: Error finding id`). Started here instead, the process that starts it holds the store's exclusive
lock for the server's life (embedded openers are refused with a message naming the server), and the server dies
with that process, however it dies. `embedfit serve` is the command; `make demo` uses the same function.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from embedfit import procs
from embedfit.errors import StoreBusyError, StoreError
from embedfit.store import chroma_store

log = logging.getLogger(__name__)

#: what answers 200 once a Chroma (>= 1.0) server is ready
HEARTBEAT = "/api/v2/heartbeat"


def chroma_executable() -> str:
    """The `chroma` command of this Python's environment (not whichever is first on PATH)."""
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        raise StoreError(f"no `chroma` command beside {sys.executable}: is chromadb installed in this environment?")
    return str(exe)


def start_server(store_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, timeout: float = 60,
                 log_file: Path | None = None) -> subprocess.Popen:
    """Start `chroma run` on `store_dir/chroma` and return once it answers. This process holds the store's lock
    until it exits (StoreBusyError when another process uses the store); the server gets SIGKILL when this process
    dies. StoreError when the port is taken or the server does not come up (its log, when given, says why)."""
    store_dir = Path(store_dir)
    if not (store_dir / "chroma").is_dir():
        raise StoreError(f"{store_dir} holds no Chroma data (no chroma/ folder): ingest into it first")
    chroma_store.hold_for_server(store_dir)
    if not procs.port_is_free(port, host):
        raise StoreBusyError(f"port {port} on {host} is in use: pass another --port")
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([chroma_executable(), "run", "--path", str((store_dir / "chroma").resolve()),
                                 "--host", host, "--port", str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=procs.die_with_parent())
    finally:
        if log_file:
            out.close()
    try:
        procs.wait_until_answering(f"http://{host}:{port}{HEARTBEAT}", proc, timeout)
    except (ChildProcessError, TimeoutError) as exc:
        procs.stop_process(proc, timeout=10)
        where = f"; see {log_file}" if log_file else ""
        raise StoreError(f"the Chroma server for {store_dir} {exc}{where}") from None
    log.info("Chroma server on %s:%d for the store %s (pid %d)", host, port, store_dir, proc.pid)
    return proc
