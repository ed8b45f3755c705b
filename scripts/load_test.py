#!/usr/bin/env python
"""A bounded load test of the app's `/search` API: N concurrent clients x M searches each, loopback only.

    .venv/bin/python scripts/load_test.py --store .data/store              # starts the app on a free port, 20 x 50
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:7860/ --pid 12345   # a running app

Prints throughput, latency percentiles (p50/p95/p99), errors, and the app's resident memory (VmRSS from
/proc/PID/status) after a warm-up and after each round; writes artifacts/reliability/load.json.

Bounded on purpose: a fixed number of requests, every request with a timeout, and the script stops by itself
(and stops the app it started). It refuses any URL that is not on this machine's loopback interface.

Each client is a thread with its own HTTP connection that calls the named endpoint the way `gradio_client`
does, over Gradio's documented two-step REST protocol: POST /gradio_api/call/search -> event id, then GET
the event stream until `complete` (a result) or `error`. A search counts as an error unless it completes
with a result that has hits. Questions are the store's own test-split questions (so the gold-passage and
split lookups run too), cycled with a different offset per client.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from embedfit import atomic
from embedfit.errors import OutputError
from embedfit.outputs import OutputKind, check_output, json_file_with
from embedfit.procs import free_port, stop_process, wait_until_answering

REPO = Path(__file__).resolve().parents[1]

OUT = REPO / "artifacts" / "reliability" / "load.json"
FALLBACK_QUESTIONS = ["who wrote the declaration of independence", "what is the capital of france",
                      "when did world war 2 end", "how many bones are in the human body",
                      "who played the mother in how i met your mother", "what is the largest planet"]


# -- the app ---------------------------------------------------------------------------------------------------

def loopback_only(url: str) -> str:
    """The URL (with a trailing slash) if its host is a loopback address, else SystemExit."""
    host = urlsplit(url).hostname or ""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise SystemExit(f"cannot resolve {host!r}") from None
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise SystemExit(f"refusing {url}: this load test only talks to loopback addresses (got {sorted(addrs)})")
    return url if url.endswith("/") else url + "/"


def start_app(store: Path, model: str | None, adapter: Path | None, report: Path | None, port: int,
              timeout: float = 300) -> subprocess.Popen:
    """`embedfit app` on 127.0.0.1:`port` (it only reads the store); returns once the page answers."""
    args = [sys.executable, "-m", "embedfit", "app", "--store", str(store), "--host", "127.0.0.1", "--port", str(port)]
    for flag, value in (("--model", model), ("--adapter", adapter), ("--report", report)):
        if value:
            args += [flag, str(value)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "EMBEDFIT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"load_test_app_{port}.log", "w")  # noqa: SIM115 - lives with the app
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/", proc, timeout)
    except ChildProcessError:
        raise SystemExit(f"the app exited ({proc.returncode}); see {log.name}") from None
    except TimeoutError:
        proc.kill()
        raise SystemExit(f"the app did not answer within {timeout:.0f} s; see {log.name}") from None
    return proc


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of `pid` in MB (VmRSS), or None when unknown."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def store_questions(store: Path, n: int = 200) -> list[str]:
    """Up to `n` test-split questions of the store (read from its files; no Chroma access), sorted by id."""
    try:
        splits = json.loads((store / "splits.json").read_text("utf-8"))["splits"]
        queries = {}
        with (store / "dataset" / "queries.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                obj = json.loads(line)
                queries[obj["_id"]] = obj["text"]
    except (OSError, KeyError, ValueError):
        return FALLBACK_QUESTIONS
    ids = sorted(q for q, s in splits.items() if s == "test" and q in queries) or sorted(queries)
    step = max(1, len(ids) // n)
    return [queries[q] for q in ids[::step][:n]] or FALLBACK_QUESTIONS


# -- the load ----------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, successful searches
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def search_once(client: httpx.Client, base: str, question: str, k: int) -> str | None:
    """One search over Gradio's REST protocol; None when it completed with hits, else the kind of error."""
    r = client.post(f"{base}gradio_api/call/search", json={"data": [question, k]})
    if r.status_code != 200:
        return f"HTTP {r.status_code} on call"
    event_id = r.json().get("event_id")
    if not event_id:
        return "no event id"
    event = None
    with client.stream("GET", f"{base}gradio_api/call/search/{event_id}") as stream:
        if stream.status_code != 200:
            return f"HTTP {stream.status_code} on result"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    return "event error: " + line[5:].strip()[:80]
                (result,) = json.loads(line[5:])
                if result.get("message") or not (result.get("raw") or {}).get("hits"):
                    return "no hits: " + str(result.get("message"))[:80]
                return None
    return f"stream ended without a result (last event {event})"


def run_round(base: str, clients: int, searches: int, questions: list[str], k: int, timeout: float) -> dict:
    outcome = Outcome()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client_loop(c: int) -> None:
        with httpx.Client(timeout=timeout) as client:
            start.wait()
            for i in range(searches):
                q = questions[(c * 7 + i) % len(questions)]
                t0 = time.perf_counter()
                try:
                    problem = search_once(client, base, q, k)
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if problem is None:
                        outcome.latencies.append(dt)
                    else:
                        outcome.error(problem)

    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(outcome.latencies)
    total = clients * searches

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000, 1) if lat else None

    return {"clients": clients, "searches_per_client": searches, "requests": total, "ok": len(lat),
            "errors": sum(outcome.errors.values()), "error_kinds": outcome.errors, "seconds": round(wall, 2),
            "throughput_per_s": round(len(lat) / wall, 2) if wall else None,
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99),
                           "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None,
                           "max": round(lat[-1] * 1000, 1) if lat else None}}


def run_load(base: str, pid: int | None, clients: int, searches: int, rounds: int, questions: list[str],
             k: int = 10, timeout: float = 120, warmup: int = 20) -> dict:
    base = loopback_only(base)
    with httpx.Client(timeout=timeout) as client:  # warm-up: first calls load lazily-initialised parts
        warm_errors = sum(search_once(client, base, questions[i % len(questions)], k) is not None for i in range(warmup))
    result = {"url": base, "pid": pid, "k": k, "warmup_searches": warmup, "warmup_errors": warm_errors,
              "rss_mb": {"after_warmup": rss_mb(pid)}, "rounds": []}
    peak = [result["rss_mb"]["after_warmup"] or 0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            v = rss_mb(pid)
            if v:
                peak[0] = max(peak[0], v)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for r in range(rounds):
        figures = run_round(base, clients, searches, questions, k, timeout)
        time.sleep(1.0)
        figures["rss_mb_after"] = rss_mb(pid)
        result["rounds"].append(figures)
    stop.set()
    sampler.join()
    result["rss_mb"]["peak"] = peak[0] or None
    before, after = result["rss_mb"]["after_warmup"], result["rounds"][-1]["rss_mb_after"]
    if before and after:
        result["rss_mb"]["growth_after_warmup"] = round(after - before, 1)
        if rounds > 1 and result["rounds"][0]["rss_mb_after"]:
            result["rss_mb"]["growth_between_rounds"] = round(after - result["rounds"][0]["rss_mb_after"], 1)
    result["rss_mb"]["growth_per_1000_searches"] = growth_per_1000(result["rounds"])
    result["errors"] = warm_errors + sum(x["errors"] for x in result["rounds"])
    return result


def growth_per_1000(rounds: list[dict]) -> float | None:
    """Soak figure: least-squares slope of the memory after each round against the searches served so far,
    in MB per 1,000 searches, leaving out round 1 (allocator and cache warm-up). None below 3 rounds.

    A leak shows as a steady positive slope however long the run; a level memory gives about 0.
    """
    points, served = [], 0
    for r in rounds:
        served += r["requests"]
        if r.get("rss_mb_after") is not None:
            points.append((served / 1000, r["rss_mb_after"]))
    points = points[1:]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sxx, 2) if sxx else None


def table(result: dict) -> str:
    rows = [("round", "requests", "ok", "errors", "throughput/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "RSS after MB")]
    for i, r in enumerate(result["rounds"], 1):
        lat = r["latency_ms"]
        rows.append((i, r["requests"], r["ok"], r["errors"], r["throughput_per_s"], lat["p50"], lat["p95"], lat["p99"],
                     lat["max"], r["rss_mb_after"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    m = result["rss_mb"]
    lines.append(f"RSS after warm-up {m['after_warmup']} MB, peak {m.get('peak')} MB, growth after warm-up "
                 f"{m.get('growth_after_warmup')} MB, between rounds {m.get('growth_between_rounds')} MB, "
                 f"soak slope after round 1 {m.get('growth_per_1000_searches')} MB per 1,000 searches")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="start the app on this store (read-only) on a free local port")
    where.add_argument("--url", help="a running app on this machine, e.g. http://127.0.0.1:7860/")
    p.add_argument("--pid", type=int, default=None, help="the running app's process id (for its memory)")
    p.add_argument("--model", default=None, help="passed to the app it starts")
    p.add_argument("--adapter", type=Path, default=None, help="passed to the app it starts")
    p.add_argument("--report", type=Path, default=None, help="passed to the app it starts")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--searches", type=int, default=50, help="searches per client per round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of clients x searches; memory is read after each, and from 3 rounds on the report "
                        "has the soak slope (MB per 1,000 searches after round 1): use e.g. --rounds 10 to soak")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--questions-from", type=Path, default=None, help="store whose test questions to ask (with --url)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not a load-test result")
    a = p.parse_args(argv)
    if min(a.clients, a.searches, a.rounds) < 1:
        p.error("--clients, --searches and --rounds must be positive")

    try:  # before the minutes of load, not after them
        check_output(a.out, OutputKind("a load-test result", json_file_with(("rounds", "rss_mb")), is_dir=False), a.force)
    except OutputError as exc:
        p.error(str(exc))
    proc = None
    try:
        if a.store:
            port = free_port()
            t0 = time.perf_counter()
            proc = start_app(a.store.resolve(), a.model, a.adapter, a.report, port)
            print(f"app started on 127.0.0.1:{port} (pid {proc.pid}) in {time.perf_counter() - t0:.1f} s", flush=True)
            url, pid, questions = f"http://127.0.0.1:{port}/", proc.pid, store_questions(a.store)
        else:
            url, pid = a.url, a.pid
            questions = store_questions(a.questions_from) if a.questions_from else FALLBACK_QUESTIONS
        result = run_load(url, pid, a.clients, a.searches, a.rounds, questions, k=a.k)
    finally:
        if proc is not None:
            stop_process(proc)
    result["store"] = str(a.store) if a.store else None
    result["n_questions"] = len(questions)

    atomic.write_json(a.out, result)
    print(table(result))
    print(f"errors: {result['errors']}; details in {a.out}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
