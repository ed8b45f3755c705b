#!/usr/bin/env python
"""Kill -9 ingest, adapter saving and projection at random points, run them again, and check that the
result is exactly that of an uninterrupted run.

    .venv/bin/python scripts/fault_inject.py              # the full run (24 + 10 + 8 kill points, ~5 min)
    .venv/bin/python scripts/fault_inject.py --ingest-kills 3 --save-kills 2 --project-kills 2   # a quick look

Prints a table and writes artifacts/reliability/faults.json. `tests/test_crash_safety.py` runs a few
points through the same functions.

How a kill point is chosen. An uninterrupted reference run comes first; the ingest logs `step: NAME`
when a step starts and its summary holds each step's seconds, the projection logs `project: reading`
and `project: writing`. A trial starts the same command in a fresh folder, waits until the target
step's line appears on the child's stderr, sleeps a random fraction of that step's reference duration,
and sends SIGKILL from this process. The step the child was really in at that instant (the last line
seen) is what gets reported, not the step aimed at; a kill that came after the manifest was written (the
last write of an ingest) is reported as "finishing", and one that came after the child exited is not
counted as injected.

What is checked:
- ingest (embedding, upsert and mining): after the kill, every cache chunk on disk passes its checksum
  (a killed atomic write leaves at most a `.tmp` file, which the next run deletes); on some trials a
  cache chunk is then truncated on purpose, as a crash of a non-atomic writer or a bad disk would, and the
  rerun must discard it and embed that batch again. The rerun must exit 0 and the store must equal the
  reference: collection ids, documents, metadata and embeddings bit for bit, no duplicate ids, the same
  dataset files, splits, training examples, query vectors and manifest (timestamps aside), and a cache
  holding exactly the reference's keys and vectors.
- adapter saving: a child saves two adapters in turn, forever; after the kill the folder must load and
  be exactly one of the two (the one being saved or the one before), and the next save must clear the
  killed save's temporary folder.
- projection: after the kill the half-written collection must be refused by the check the app and eval
  share (`embedfit.adapters.project.projection_problem`, reached by the app through
  `embedfit.search.retriever.check_adapter`) unless it is already complete and equal to the reference; the
  rerun must give the reference collection bit for bit. Half the trials start from a store that already
  holds an older projection by an adapter of the same name, the case where a half-finished rewrite could
  pass for a finished one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedfit import atomic
from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.io import adapter_sha, load_adapter, save_adapter
from embedfit.adapters.modules import build_module
from embedfit.embed.cache import EmbeddingCache
from embedfit.errors import EmbedfitError, OutputError
from embedfit.outputs import OutputKind, check_output, json_file_with
from embedfit.search.retriever import check_adapter
from embedfit.settings import shared_data
from embedfit.store import chroma_store, query_vectors
from embedfit.store.chroma_store import ChromaTarget, open_client, release_locks
from embedfit.store.store import Store, raw_collection_name
from embedfit.types import slug

REPO = Path(__file__).resolve().parents[1]

DEFAULT_MODEL = "paraphrase-MiniLM-L3-v2"
INGEST_PHASES = ("embedding", "upsert", "mining")
#: ingest step (as logged) -> phase reported here
#: (the upsert runs in a thread while the queries are embedded; it logs its own `step: upsert`)
STEP_PHASE = {"load": "startup", "split": "startup", "load_model": "startup", "check_collection": "startup",
              "save_dataset": "startup", "lexical_index": "startup",
              "embed_passages": "embedding", "embed_queries": "embedding",
              "upsert": "upsert", "upsert_wait": "upsert", "mine_negatives": "mining", "fusion": "mining"}
#: the steps that make up each phase, in order
PHASE_STEPS = {"embedding": ("embed_passages", "embed_queries"), "upsert": ("upsert",), "mining": ("mine_negatives",)}
OUT = REPO / "artifacts" / "reliability" / "faults.json"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "ANONYMIZED_TELEMETRY": "False", "EMBEDFIT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    for name in ("CHROMA_HOST", "CHROMA_PORT"):  # these runs are about the embedded store
        env.pop(name, None)
    return env


# -- a child process watched through its output ----------------------------------------------------------

class Child:
    """A subprocess whose output lines are matched against `markers` (regex -> label) as they arrive.

    `seen` maps each label to the seconds (since start) it first appeared; `last` is the latest label.
    """

    def __init__(self, args: list[str], markers: dict[str, str], cwd: Path = REPO):
        self.markers = {re.compile(k): v for k, v in markers.items()}
        self.seen: dict[str, float] = {}
        self.last: str = "startup"
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (self.proc.stdout, self.proc.stderr)]
        for t in self._readers:
            t.start()

    def _read(self, stream) -> None:
        for line in stream:
            now = time.perf_counter() - self.t0
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                for pattern, label in self.markers.items():
                    if pattern.search(line):
                        self.seen.setdefault(label, now)
                        self.last = label
                self._cond.notify_all()

    def wait_for(self, label: str, timeout: float = 300) -> bool:
        """True once `label` was seen; False when the child ended (or `timeout` passed) first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while label not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(t.is_alive() for t in self._readers)):
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def kill(self) -> tuple[str, bool]:
        """SIGKILL now; returns (the label last seen at that instant, whether the child was still running)."""
        with self._cond:
            last = self.last
            alive = self.proc.poll() is None
            if alive:
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        return last, alive

    def finish(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=5)
        return rc

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def run_to_end(args: list[str], markers: dict[str, str] | None = None) -> Child:
    child = Child(args, markers or {})
    rc = child.finish()
    if rc != 0:
        raise RuntimeError(f"{' '.join(args)} exited {rc}:\n{child.output[-3000:]}")
    return child


# -- ingest ---------------------------------------------------------------------------------------------------

def ingest_args(data: Path, store: Path, cache: Path, model: str, limit: int | None) -> list[str]:
    args = [sys.executable, "-m", "embedfit", "ingest", "--data", str(data), "--store", str(store), "--cache", str(cache),
            "--model", model]
    return args + (["--limit", str(limit)] if limit else [])


INGEST_MARKERS = {rf"step: {step}$": step for step in STEP_PHASE}


@dataclass
class Reference:
    """An uninterrupted ingest: its folders (never opened by this process: trials copy them), when each step
    started (seconds after launch), how long each step took, and the snapshot every trial must equal."""

    work: Path
    data: Path
    model: str
    limit: int | None
    step_start: dict[str, float]
    step_seconds: dict[str, float]
    snapshot: dict
    cache_snapshot: dict

    @property
    def store(self) -> Path:
        return self.work / "base" / "store"

    @property
    def cache(self) -> Path:
        return self.work / "base" / "cache"

    def phase_window(self, phase: str) -> tuple[str, float]:
        """(step to wait for, seconds the phase lasted in the reference run)."""
        steps = PHASE_STEPS[phase]
        return steps[0], sum(self.step_seconds[s] for s in steps)


def make_reference(work: Path, data: Path, model: str, limit: int | None) -> Reference:
    """Run the ingest once without faults; keep a pristine copy to start trials from."""
    run = work / "reference"
    child = run_to_end(ingest_args(data, run / "store", run / "cache", model, limit), INGEST_MARKERS)
    shutil.copytree(run, work / "base")
    summary = json.loads((run / "store" / "ingest_summary.json").read_text("utf-8"))
    return Reference(work=work, data=data, model=model, limit=limit, step_start=dict(child.seen),
                     step_seconds=summary["seconds"], snapshot=snapshot_store(run / "store", model),
                     cache_snapshot=snapshot_cache(run / "cache", model, summary["dim"]))


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:20]


def snapshot_collection(store_root: Path, name: str) -> dict:
    """Count, duplicates and digests of every part of a collection (ids, documents, metadata, embedding bits)."""
    client = open_client(ChromaTarget(path=Path(store_root) / "chroma"), write=False)
    try:
        col = chroma_store.get_collection(client, name)
        if col is None:
            return {"exists": False}
        d = chroma_store.fetch_all(col, with_documents=True, with_metadatas=True)
        return {"exists": True, "count": col.count(), "n_ids": len(d.ids), "duplicates": len(d.ids) - len(set(d.ids)),
                "ids": digest("\n".join(d.ids).encode()),
                "documents": digest(json.dumps(d.documents, ensure_ascii=False).encode()),
                "metadatas": digest(json.dumps(d.metadatas, sort_keys=True, ensure_ascii=False).encode()),
                "embeddings": digest(d.embeddings.tobytes()), "metadata": dict(col.metadata or {})}
    finally:
        client.close()
        release_locks()


def snapshot_store(store_root: Path, model: str) -> dict:
    """Everything an ingest leaves in a store, in comparable form (timestamps and timings left out)."""
    root = Path(store_root)
    snap: dict = {}
    for rel in ("dataset/corpus.jsonl", "dataset/queries.jsonl", "dataset/qrels.tsv", "dataset/same_doc.json",
                "splits.json", f"negatives/{slug(model)[:100]}.jsonl"):
        path = root / rel
        snap[rel] = digest(path.read_bytes()) if path.exists() else None
    try:
        ids, vecs = query_vectors.load(root, model)
        snap["query_vectors"] = digest("\n".join(ids).encode(), np.ascontiguousarray(vecs).tobytes())
    except Exception as exc:  # noqa: BLE001 - reported as a difference
        snap["query_vectors"] = f"unreadable: {exc}"
    manifest = Store(root).manifest()
    for info in manifest.get("models", {}).values():
        info.pop("ingested_at", None)
    snap["manifest"] = manifest
    snap["collection"] = snapshot_collection(root, raw_collection_name(model))
    return snap


def snapshot_cache(cache_dir: Path, model: str, dim: int) -> dict:
    """Keys and vectors the cache serves (read from a copy: opening a cache deletes damaged chunks)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(cache_dir, Path(tmp) / "c")
        cache = EmbeddingCache(Path(tmp) / "c", model, dim)
        keys = sorted(cache._vectors)
        vecs = cache.get(keys) if keys else np.zeros((0, dim), np.float32)
        return {"n": len(keys), "rejected_chunks": cache.rejected_files,
                "keys_vectors": digest("\n".join(keys).encode(), np.ascontiguousarray(vecs).tobytes())}


def cache_leftovers(cache_dir: Path) -> dict:
    """What a killed run left in the cache folder: temporary files and chunks that fail their checks."""
    tmp_files = sum(1 for _ in Path(cache_dir).rglob(".*.tmp"))
    damaged = 0
    for model_dir in (p for p in Path(cache_dir).iterdir() if p.is_dir()) if Path(cache_dir).exists() else ():
        probe = EmbeddingCache.__new__(EmbeddingCache)  # the real checks, without the load that deletes
        for chunk in model_dir.glob("*.npz"):
            meta = _chunk_meta(chunk)
            probe.model_id, probe.dim = meta.get("model_id"), meta.get("dim")
            try:
                probe._read_chunk(chunk)
            except Exception:  # noqa: BLE001 - any failure is damage
                damaged += 1
    return {"tmp_files": tmp_files, "damaged_chunks": damaged}


def _chunk_meta(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001
        return {}


def truncate_a_chunk(cache_dir: Path, rng: random.Random) -> str | None:
    """Cut one cache chunk to half its bytes (what a non-atomic writer or a bad disk leaves)."""
    chunks = sorted(Path(cache_dir).rglob("*.npz"))
    if not chunks:
        return None
    victim = rng.choice(chunks)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim.name


def differences(expected: dict, got: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ (recursively), for the report."""
    out = []
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key), got.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def ingest_trial(ref: Reference, n: int, phase: str, rng: random.Random, truncate_cache: bool = False) -> dict:
    """One kill -9 during `phase`, then a rerun; returns what happened and what differs from the reference."""
    trial = ref.work / f"ingest-{n:02d}"
    store, cache = trial / "store", trial / "cache"
    trial.mkdir()
    warm = phase != "embedding"
    if warm:  # reach upsert/mining in seconds: the embedding phase has its own trials
        shutil.copytree(ref.cache, cache)
    args = ingest_args(ref.data, store, cache, ref.model, ref.limit)
    step, seconds = ref.phase_window(phase)
    delay = rng.uniform(0.0, max(seconds, 0.005))
    child = Child(args, INGEST_MARKERS)
    reached = child.wait_for(step)
    if reached:
        time.sleep(delay)
    last_step, killed = child.kill()
    result = {"trial": n, "target": phase, "landed": STEP_PHASE.get(last_step, last_step) if killed else "after the end",
              "step": last_step, "killed": killed, "delay_s": round(delay, 4), "warm_cache": warm}
    result.update({f"after_kill_{k}": v for k, v in cache_leftovers(cache).items()})
    result["manifest_after_kill"] = (store / "manifest.json").exists()
    if killed and result["manifest_after_kill"]:  # the store starts empty: the kill came after the last step
        result["landed"] = "finishing"
    if truncate_cache:
        result["truncated_chunk"] = truncate_a_chunk(cache, rng)
    rerun = Child(args, INGEST_MARKERS)
    rc = rerun.finish()
    result["rerun_exit"] = rc
    if truncate_cache and result["truncated_chunk"]:
        result["truncation_detected"] = "discarding damaged chunk" in rerun.output
    if rc != 0:
        result["diff"] = [f"rerun failed: {rerun.output[-1500:]}"]
        result["ok"] = False
        return result
    got = snapshot_store(store, ref.model)
    got_cache = snapshot_cache(cache, ref.model, ref.snapshot["manifest"]["models"][ref.model]["dim"])
    diff = differences(ref.snapshot, got) + [f"cache.{k}" for k in differences(ref.cache_snapshot, got_cache)]
    result["diff"] = diff
    result["duplicates"] = got["collection"].get("duplicates")
    result["ok"] = (not diff and got["collection"].get("duplicates") == 0
                    and (not truncate_cache or result.get("truncation_detected", True)))
    shutil.rmtree(trial, ignore_errors=True)
    return result


# -- adapter saving -----------------------------------------------------------------------------------------

def demo_adapter(seed: int, name: str = "fault", sides: str = "both", data_fingerprint: str = "fp",
                 raw_collection: str = "raw", base_model: str = DEFAULT_MODEL, dim: int = 384):
    """A linear adapter W = I + 0.02 N(0, 1), seeded: different seeds, different weights, same name."""
    module = build_module("linear", dim, dim)
    with torch.no_grad():
        module.delta.copy_(0.02 * torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)))
    cfg = AdapterConfig(name=name, kind="linear", sides=sides, dim_in=dim, dim_out=dim, base_model=base_model,
                        data_fingerprint=data_fingerprint, raw_collection=raw_collection,
                        training={"seed": seed}, uid=fault_uid(name))
    return Adapter(cfg, module)


def fault_uid(name: str) -> str:
    """The demo adapters' uid: from the name, so that two seeds of one name are two versions of one adapter (one
    projected collection, re-projected in place) and a save is reproduced bit for bit."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


SAVE_SEEDS = {"A": 1, "B": 2}


def save_named(folder: Path, name: str, cache: dict | None = None) -> None:
    """Save adapter `name` ("A" or "B") with a curves.json that names it (a torn folder would mix the two)."""
    cache = {} if cache is None else cache
    adapter = cache.setdefault(name, demo_adapter(SAVE_SEEDS[name]))
    save_adapter(adapter, folder, extra_files={"curves.json": json.dumps([{"epoch": 0, "adapter": name}]).encode()})


def save_loop(folder: Path) -> None:
    """Child mode: save adapter A, then B, A, B, ... into `folder` until killed, saying when each save begins/ends."""
    adapters: dict = {}
    save_named(folder, "A", adapters)
    print("ready A", flush=True)
    name = "A"
    while True:
        name = "B" if name == "A" else "A"
        print(f"begin {name}", flush=True)
        save_named(folder, name, adapters)
        print(f"end {name}", flush=True)


def which_adapter(folder: Path) -> str:
    """'A' or 'B' when the folder loads and equals that adapter bit for bit, else what is wrong."""
    try:
        got = load_adapter(folder)
    except Exception as exc:  # noqa: BLE001 - reported
        return f"does not load: {exc}"
    curves = json.loads((folder / "curves.json").read_text("utf-8"))[0]["adapter"]
    for name, seed in SAVE_SEEDS.items():
        want = demo_adapter(seed)
        if got.config == want.config and all(torch.equal(got.module.state_dict()[k], v)
                                             for k, v in want.module.state_dict().items()):
            return name if curves == name else f"weights of {name} with curves of {curves}"
    return "neither A nor B"


def save_trial(work: Path, n: int, rng: random.Random) -> dict:
    folder = work / f"save-{n:02d}" / "adapter"
    folder.parent.mkdir(parents=True)
    child = Child([sys.executable, str(Path(__file__).resolve()), "save-loop", str(folder)],
                  {r"^ready A": "end A", r"^begin A": "begin A", r"^end A": "end A",
                   r"^begin B": "begin B", r"^end B": "end B"})
    if not child.wait_for("end A", timeout=120):
        raise RuntimeError(f"save loop did not start:\n{child.output[-2000:]}")
    delay = rng.uniform(0.0, 0.6)
    time.sleep(delay)
    last, killed = child.kill()
    state, name = last.split()
    other = "A" if name == "B" else "B"
    allowed = {name} if state == "end" else {name, other}  # mid-save: the new one or the previous one
    loaded = which_adapter(folder)
    leftovers = sum(1 for _ in folder.parent.glob(".adapter.*"))  # temp folder, aside copy, replace marker
    save_named(folder, "A")  # the next save clears what the killed one left
    leftovers_after = sum(1 for _ in folder.parent.glob(".adapter.*"))
    result = {"trial": n, "killed": killed, "landed": "inside save" if state == "begin" else "between saves",
              "delay_s": round(delay, 4), "saves_completed": sum(1 for ln in child.output.splitlines() if ln.startswith("end")),
              "loaded": loaded, "allowed": sorted(allowed), "leftovers_after_kill": int(leftovers),
              "leftovers_after_next_save": int(leftovers_after)}
    result["ok"] = killed and loaded in allowed and leftovers_after == 0 and which_adapter(folder) == "A"
    shutil.rmtree(folder.parent, ignore_errors=True)
    return result


# -- projection ----------------------------------------------------------------------------------------------

PROJECT_MARKERS = {r"project: reading": "read", r"project: writing": "upsert", r"vectors$": "done"}


@dataclass
class ProjectionReference:
    ref: Reference
    adapter_dir: Path  # the adapter projected by every trial
    old_adapter_dir: Path  # an older adapter of the same name (same collection)
    with_old: Path  # a pristine store already holding the old adapter's projection
    collection: str
    sha: str
    phase_start: dict[str, float]
    snapshot: dict
    raw_snapshot: dict
    timings: dict[str, float] = field(default_factory=dict)


def project_args(store: Path, adapter_dir: Path) -> list[str]:
    return [sys.executable, "-m", "embedfit", "project", "--store", str(store), "--adapter", str(adapter_dir)]


def make_projection_reference(ref: Reference) -> ProjectionReference:
    info = Store(ref.store).manifest()["models"][ref.model]
    meta = {"data_fingerprint": info["data_fingerprint"], "raw_collection": info["collection"], "base_model": ref.model}
    adapter_dir = save_adapter(demo_adapter(11, name="fault-both", **meta), ref.work / "adapters" / "new")
    old_dir = save_adapter(demo_adapter(10, name="fault-both", **meta), ref.work / "adapters" / "old")
    full = ref.work / "project-reference"
    shutil.copytree(ref.store, full)
    child = run_to_end(project_args(full, adapter_dir), PROJECT_MARKERS)
    with_old = ref.work / "project-base-old"
    shutil.copytree(ref.store, with_old)
    run_to_end(project_args(with_old, old_dir), PROJECT_MARKERS)
    collection = load_adapter(adapter_dir).collection_name
    return ProjectionReference(
        ref=ref, adapter_dir=adapter_dir, old_adapter_dir=old_dir, with_old=with_old, collection=collection,
        sha=adapter_sha(adapter_dir), phase_start=dict(child.seen),
        snapshot=snapshot_collection(full, collection),
        raw_snapshot=snapshot_collection(full, raw_collection_name(ref.model)))


def served_check(store_root: Path, pref: ProjectionReference) -> str:
    """What the app/eval check says about the store's projection right now: 'accepted' or the refusal."""
    store = Store(store_root)
    try:
        dim = pref.ref.snapshot["manifest"]["models"][pref.ref.model]["dim"]
        check_adapter(store, pref.ref.model, dim, load_adapter(pref.adapter_dir), pref.sha)
        return "accepted"
    except EmbedfitError as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        if store._client is not None:
            store._client.close()

        release_locks()


def project_trial(pref: ProjectionReference, n: int, rng: random.Random, over_old: bool) -> dict:
    store = pref.ref.work / f"project-{n:02d}"
    shutil.copytree(pref.with_old if over_old else pref.ref.store, store)
    args = project_args(store, pref.adapter_dir)
    # aim at the write (most trials) or at the read before it
    target = "upsert" if rng.random() < 0.7 else "read"
    start = pref.phase_start.get(target, 0.0)
    end = pref.phase_start.get("upsert" if target == "read" else "done", start + 0.05)
    delay = rng.uniform(0.0, max(end - start, 0.005))
    child = Child(args, PROJECT_MARKERS)
    if child.wait_for(target):
        time.sleep(delay)
    last, killed = child.kill()
    after_kill = snapshot_collection(store, pref.collection)
    served = served_check(store, pref)
    complete = after_kill == pref.snapshot
    result = {"trial": n, "target": target, "landed": last if killed else "after the end", "killed": killed,
              "delay_s": round(delay, 4), "over_old_projection": over_old,
              "count_after_kill": after_kill.get("count"), "check_after_kill": served,
              "complete_after_kill": complete}
    rerun = Child(args, PROJECT_MARKERS)
    rc = rerun.finish()
    result["rerun_exit"] = rc
    got = snapshot_collection(store, pref.collection)
    raw = snapshot_collection(store, raw_collection_name(pref.ref.model))
    result["diff"] = differences(pref.snapshot, got) + [f"raw.{k}" for k in differences(pref.raw_snapshot, raw)]
    result["check_after_rerun"] = served_check(store, pref)
    # never serve a half-written collection: accepted after the kill only when it was already complete
    safe = served.startswith("refused") or complete
    result["ok"] = rc == 0 and not result["diff"] and safe and result["check_after_rerun"] == "accepted"
    shutil.rmtree(store, ignore_errors=True)
    return result


# -- the whole run ---------------------------------------------------------------------------------------------

# -- export ---------------------------------------------------------------------------------------------------

EXPORT_SEEDS = {"A": 3, "B": 4}
#: the export trials need a base model with sentence-transformers modules (the ONNX-only L3 has none)
ST_BASE = "all-MiniLM-L6-v2"


def export_state(out: Path) -> str:
    """Which adapter the export folder holds, "A" or "B", when it is complete (its export.json, USAGE.md and every
    module sentence-transformers loads); otherwise what is wrong."""
    try:
        marker = json.loads((out / "export.json").read_text("utf-8"))
        modules = json.loads((out / "modules.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"broken: {type(exc).__name__}"
    missing = [m["path"] for m in modules if m.get("path") and not (out / m["path"]).exists()]
    if missing or not (out / "USAGE.md").exists():
        return f"broken: missing {missing or ['USAGE.md']}"
    return str(marker.get("adapter", "?")).removeprefix("export-")


def export_args(adapter_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "embedfit", "export", "--adapter", str(adapter_dir), "--format",
            "sentence-transformers", "--out", str(out)]


def export_trial(work: Path, n: int, rng: random.Random, seconds: float) -> dict:
    """Export A (the previous export), then kill -9 the export of B over it at a random instant within its
    measured duration: the folder must hold A or B whole, and the next export must finish with nothing left over."""
    folder = work / f"export-{n:02d}"
    for name, seed in EXPORT_SEEDS.items():
        save_adapter(demo_adapter(seed, name=f"export-{name}", sides="query", base_model=ST_BASE), folder / name)
    out = folder / "out"
    run_to_end(export_args(folder / "A", out))
    child = Child(export_args(folder / "B", out), {})
    delay = rng.uniform(0.0, seconds)
    time.sleep(delay)
    _, killed = child.kill()
    state = export_state(out)
    leftovers = sum(1 for _ in folder.glob(".out.*"))
    run_to_end(export_args(folder / "A", out))  # the next run finishes or undoes what the killed one left
    after, leftovers_after = export_state(out), sum(1 for _ in folder.glob(".out.*"))
    result = {"trial": n, "killed": killed, "delay_s": round(delay, 3), "state_after_kill": state,
              "leftovers_after_kill": leftovers, "state_after_rerun": after, "leftovers_after_rerun": leftovers_after}
    result["ok"] = state in ("A", "B") and after == "A" and leftovers_after == 0
    shutil.rmtree(folder, ignore_errors=True)
    return result


def export_seconds(work: Path) -> float:
    """How long one sentence-transformers export takes here (the window the export kills aim at)."""
    folder = work / "export-ref"
    save_adapter(demo_adapter(EXPORT_SEEDS["A"], name="export-A", sides="query", base_model=ST_BASE), folder / "A")
    t0 = time.perf_counter()
    run_to_end(export_args(folder / "A", folder / "out"))
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


# -- the demo -------------------------------------------------------------------------------------------------

def demo_args(folder: Path, data: Path, port: int) -> list[str]:
    """`make demo --page-only` on a 40-question slice, everything under `folder`."""
    return [sys.executable, "-m", "scripts.demo", "--data", str(data), "--limit", "40", "--page-only",
            "--store", str(folder / "store"), "--adapters", str(folder / "adapters"), "--report", str(folder / "report"),
            "--port", str(port)]


def demo_trial(work: Path, data: Path, n: int, rng: random.Random, seconds: float) -> dict:
    """kill -9 the demo (`--page-only`, a small slice) at a random instant: every process it started must be gone
    within 10 s (they die with it), whatever it was doing."""
    from embedfit.procs import descendants, free_port, running

    folder = work / f"demo-{n:02d}"
    child = Child(demo_args(folder, data, free_port()), {r"PAGE READY": "page", r"ingest ": "ingest", r"select and fit": "fit", r"app: ": "app"})
    delay = rng.uniform(0.0, 1.3 * seconds)  # some kills land after the page is up
    seen: set[int] = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and child.proc.poll() is None:
        seen |= descendants(child.proc.pid)  # every child it had, until the kill
        time.sleep(0.05)
    seen |= descendants(child.proc.pid)
    last, killed = child.kill()
    end = time.monotonic() + 10
    while any(running(p) for p in seen) and time.monotonic() < end:
        time.sleep(0.2)
    orphans = sorted(p for p in seen if running(p))
    for p in orphans:  # leave nothing behind even when the check failed
        os.kill(p, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    return {"trial": n, "killed": killed, "delay_s": round(delay, 2), "landed": last, "children_seen": len(seen),
            "orphans": len(orphans), "ok": not orphans}


def summarise(ingest: list[dict], saves: list[dict], projections: list[dict], exports: list[dict] | None = None,
              demos: list[dict] | None = None) -> dict:
    def by(rows: list[dict], key: str) -> dict:
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            d = out.setdefault(str(r[key]), {"injected": 0, "survived": 0})
            d["injected"] += 1
            d["survived"] += bool(r["ok"])
        return out

    def counts(rows: list[dict]) -> dict:
        """A kill that came after the child had already finished injected nothing: counted apart."""
        hit = [r for r in rows if r["killed"]]
        return {"injected": len(hit), "survived": sum(bool(r["ok"]) for r in hit),
                "missed_child_already_done": len(rows) - len(hit), "failed": sum(not r["ok"] for r in rows)}

    trunc = [r for r in ingest if r.get("truncated_chunk")]
    return {
        "ingest_kills": {**counts(ingest),
                         "by_phase_landed": by(ingest, "landed"), "by_phase_targeted": by(ingest, "target"),
                         "duplicates_found": sum(r.get("duplicates") or 0 for r in ingest),
                         "damaged_chunks_after_kill": sum(r["after_kill_damaged_chunks"] for r in ingest),
                         "tmp_files_after_kill": sum(r["after_kill_tmp_files"] for r in ingest)},
        "cache_truncations": {"injected": len(trunc), "detected_and_redone": sum(bool(r.get("truncation_detected")) and r["ok"] for r in trunc)},
        "adapter_save_kills": {**counts(saves),
                               "by_point": by(saves, "landed"),
                               "previous_adapter_kept": sum(r["loaded"] in r["allowed"] for r in saves)},
        "projection_kills": {**counts(projections),
                             "by_phase_landed": by(projections, "landed"),
                             "partial_refused_after_kill": sum(r["check_after_kill"].startswith("refused") for r in projections),
                             "over_old_projection": sum(r["over_old_projection"] for r in projections)},
        "export_kills": {**counts(exports or []),
                         "previous_or_new_whole": sum(r["state_after_kill"] in ("A", "B") for r in exports or [])},
        "demo_kills": {**counts(demos or []), "by_phase_landed": by(demos or [], "landed"),
                       "orphans": sum(r["orphans"] for r in demos or [])},
    }


def table(figures: dict) -> str:
    rows = [("fault", "injected", "survived", "where it landed")]
    ik = figures["ingest_kills"]
    rows.append(("ingest kill -9", ik["injected"], ik["survived"],
                 ", ".join(f"{k} {v['survived']}/{v['injected']}" for k, v in ik["by_phase_landed"].items())))
    ct = figures["cache_truncations"]
    rows.append(("cache chunk truncated", ct["injected"], ct["detected_and_redone"], "detected and re-embedded"))
    sk = figures["adapter_save_kills"]
    rows.append(("adapter save kill -9", sk["injected"], sk["survived"],
                 ", ".join(f"{k} {v['survived']}/{v['injected']}" for k, v in sk["by_point"].items())))
    pk = figures["projection_kills"]
    rows.append(("projection kill -9", pk["injected"], pk["survived"],
                 ", ".join(f"{k} {v['survived']}/{v['injected']}" for k, v in pk["by_phase_landed"].items())))
    ek, dk = figures["export_kills"], figures["demo_kills"]
    rows.append(("export kill -9", ek["injected"], ek["survived"], f"previous or new export whole: {ek['previous_or_new_whole']}"))
    rows.append(("demo kill -9", dk["injected"], dk["survived"],
                 ", ".join(f"{k} {v['survived']}/{v['injected']}" for k, v in dk["by_phase_landed"].items())
                 + f"; orphans {dk['orphans']}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def all_ok(figures: dict) -> bool:
    return all(r["ok"] for rows in figures["trials"].values() for r in rows)


def run(ingest_kills: int, save_kills: int, project_kills: int, limit: int | None, model: str, seed: int,
        work: Path, data: Path, truncate_every: int = 4, log=print, export_kills: int = 0, demo_kills: int = 0) -> dict:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    log(f"reference ingest ({model}, limit {limit}) ...")
    ref = make_reference(work, data, model, limit)
    log("  step seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in ref.step_seconds.items()))
    ingest = []
    for i in range(ingest_kills):
        phase = INGEST_PHASES[i % len(INGEST_PHASES)]
        r = ingest_trial(ref, i, phase, rng, truncate_cache=truncate_every > 0 and i % truncate_every == 0)
        ingest.append(r)
        log(f"  ingest {i:2d}: aimed at {phase:9s} landed in {r['landed']:9s} ({r['step']}) -> "
            f"{'ok' if r['ok'] else 'FAILED ' + str(r['diff'])}")
    saves = []
    for i in range(save_kills):
        r = save_trial(work, i, rng)
        saves.append(r)
        log(f"  save {i:2d}: {r['landed']:13s} loaded {r['loaded']} (allowed {r['allowed']}) -> {'ok' if r['ok'] else 'FAILED'}")
    projections = []
    if project_kills:
        pref = make_projection_reference(ref)
        for i in range(project_kills):
            r = project_trial(pref, i, rng, over_old=i % 2 == 1)
            projections.append(r)
            log(f"  project {i:2d}: landed in {r['landed']:6s} over_old={r['over_old_projection']!s:5s} "
                f"after kill: {r['check_after_kill']} -> {'ok' if r['ok'] else 'FAILED ' + str(r['diff'])}")
    exports = []
    if export_kills:
        seconds = export_seconds(work)
        log(f"  one sentence-transformers export: {seconds:.1f} s")
        for i in range(export_kills):
            r = export_trial(work, i, rng, seconds)
            exports.append(r)
            log(f"  export {i:2d}: killed after {r['delay_s']} s, held {r['state_after_kill']}, after rerun "
                f"{r['state_after_rerun']} -> {'ok' if r['ok'] else 'FAILED'}")
    demos = []
    if demo_kills:
        from embedfit.procs import free_port

        t0_demo = time.perf_counter()
        probe = Child(demo_args(work / "demo-ref", data, free_port()), {r"PAGE READY": "page"})
        probe.wait_for("page", timeout=600)
        demo_seconds = time.perf_counter() - t0_demo
        probe.kill()
        log(f"  the demo's page after {demo_seconds:.0f} s")
        for i in range(demo_kills):
            r = demo_trial(work, data, i, rng, demo_seconds)
            demos.append(r)
            log(f"  demo {i:2d}: killed after {r['delay_s']} s in {r['landed']}, {r['children_seen']} children seen, "
                f"{r['orphans']} left -> {'ok' if r['ok'] else 'FAILED'}")
    figures = summarise(ingest, saves, projections, exports, demos)
    figures["settings"] = {"model": model, "limit": limit, "seed": seed, "reference_step_seconds": ref.step_seconds,
                           "passages": ref.snapshot["manifest"].get("n_passages"),
                           "queries": ref.snapshot["manifest"].get("n_queries")}
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    figures["trials"] = {"ingest": ingest, "adapter_save": saves, "projection": projections, "export": exports,
                         "demo": demos}
    return figures


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["save-loop"]:
        save_loop(Path(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ingest-kills", type=int, default=24, help="kill points in ingest (spread over embedding, upsert, mining)")
    p.add_argument("--save-kills", type=int, default=10, help="kill points in adapter saving")
    p.add_argument("--project-kills", type=int, default=8, help="kill points in projection")
    p.add_argument("--export-kills", type=int, default=6, help="kill points in a sentence-transformers export")
    p.add_argument("--demo-kills", type=int, default=4, help="kill points in `make demo` (children must die with it)")
    p.add_argument("--limit", type=int, default=400, help="queries ingested per run")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=shared_data("nq"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not a fault-injection result")
    a = p.parse_args(argv)

    try:  # before the minutes of faults, not after them; trials make and remove folders inside --work
        check_output(a.out, OutputKind("a fault-injection result", json_file_with(("trials", "seconds")), is_dir=False),
                     a.force)
        if a.work is not None:
            check_output(a.work, OutputKind("a scratch folder", lambda _: False), a.force, option="--work")
    except OutputError as exc:
        p.error(str(exc))
    work = a.work or Path(tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = run(a.ingest_kills, a.save_kills, a.project_kills, a.limit, a.model, a.seed, work, a.data,
                      export_kills=a.export_kills, demo_kills=a.demo_kills)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    atomic.write_json(a.out, figures)
    print()
    print(table(figures))
    print(f"\n{figures['seconds']} s; details in {a.out}")
    return 0 if all_ok(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
