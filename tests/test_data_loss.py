"""Issue 22, cases 8-11: no command loses work it was not asked to replace.

The oracle is `digest` (every path and file content under a folder) taken before and after: a refusal or a
failure leaves the user's folders identical, the previous output survives a failure or a kill -9, and nothing
outside the requested output changes.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from app_support import make_adapter
from test_output_safety import digest, user_folder

from embedfit.adapters import cli as adapter_cli
from embedfit.adapters import project as project_mod
from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.export import EXPORT_OUTPUT, export
from embedfit.adapters.io import adapter_sha, load_adapter
from embedfit.adapters.modules import LinearAdapter
from embedfit.adapters.project import projection_problem, save_and_project
from embedfit.errors import OutputError, StoreError
from embedfit.outputs import check_output
from embedfit.store import chroma_store
from embedfit.store.store import Store

MODEL = "all-MiniLM-L6-v2"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def adapter_dir(small_store, tmp_path) -> Path:
    make_adapter(tmp_path / "adapters" / "a", small_store[0].store)
    return tmp_path / "adapters" / "a"


def export_argv(adapter: Path, out: str, *extra: str) -> list[str]:
    return ["export", "--adapter", str(adapter), "--format", "numpy", "--out", out, *extra]


# -- case 8: an empty or '.'-like --out, the source, an ancestor --------------------------------------------

@pytest.mark.parametrize("out", ["", ".", "./", "..", "sub/.."])
def test_export_never_replaces_the_current_folder_or_above(adapter_dir, tmp_path, monkeypatch, capsys, out):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "sub").mkdir()
    (repo / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(repo)
    before = digest(tmp_path)
    assert adapter_cli.main(export_argv(adapter_dir, out, "--force")) == 2
    err = capsys.readouterr().err
    assert "Nothing was changed" in err and "Traceback" not in err
    assert digest(tmp_path) == before


@pytest.mark.parametrize("which", ["itself", "its parent"])
def test_export_never_replaces_its_source_adapter(adapter_dir, tmp_path, capsys, which):
    out = adapter_dir if which == "itself" else adapter_dir.parent
    before = digest(tmp_path)
    assert adapter_cli.main(export_argv(adapter_dir, str(out), "--force")) == 2
    assert "the adapter being exported" in capsys.readouterr().err
    assert digest(tmp_path) == before
    assert load_adapter(adapter_dir).config.base_model == MODEL


def test_force_never_replaces_a_folder_holding_a_repository_a_store_or_an_adapter(small_store, adapter_dir, tmp_path):
    project = user_folder(tmp_path)
    (project / ".git").mkdir()
    holds_adapter = tmp_path / "work"
    shutil.copytree(adapter_dir, holds_adapter / "deep" / "a")
    before = digest(tmp_path)
    for folder in (project, holds_adapter):
        with pytest.raises(OutputError, match="holds a repository, a store or an adapter"):
            check_output(folder, EXPORT_OUTPUT, force=True)
    assert digest(tmp_path) == before
    plain = user_folder(tmp_path / "plain")  # a folder of plain files is still replaced when forced
    export(adapter_dir, "numpy", plain, force=True)
    assert sorted(p.name for p in plain.iterdir()) == ["USAGE.md", "adapter.npz", "export.json"]


# -- case 9: export writes beside, then swaps -----------------------------------------------------------------

def test_a_failing_export_leaves_the_previous_export_whole(adapter_dir, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export(adapter_dir, "numpy", out)
    before = digest(tmp_path)

    def broken(adapter, fmt, matrix, bias, base, folder, *rest):
        (folder / "adapter.npz").write_bytes(b"half")
        raise ValueError("memory alpha is not a number")

    monkeypatch.setattr("embedfit.adapters.export._write_export", broken)
    with pytest.raises(ValueError):
        export(adapter_dir, "numpy", out)
    assert digest(tmp_path) == before  # the previous export, and no temporary folder beside it


def test_a_killed_export_leaves_the_previous_export_and_the_next_run_cleans_up(adapter_dir, tmp_path):
    out = tmp_path / "exp"
    export(adapter_dir, "numpy", out)
    before = digest(out)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        import embedfit.adapters.export as ex
        real = ex._write_export
        def slow(*a):
            real(*a)
            print("written", flush=True)
            time.sleep(120)
        ex._write_export = slow
        ex.export({str(adapter_dir)!r}, "numpy", {str(out)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert child.stdout.readline().strip() == "written"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert digest(out) == before and (out / "export.json").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".exp.")]
    assert leftovers  # the killed run's temporary folder: the next run's to clean
    export(adapter_dir, "numpy", out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exp.")] == []
    assert digest(out) == before  # the same adapter exported again: the same files


# -- case 10: a memory adapter is replaced only after its new collection is in place --------------------------

def memory_adapter(store_root: Path, name: str = "mem", seed: int = 0, n: int = 5) -> Adapter:
    info = Store(store_root).model_info(MODEL)
    ids = sorted(Store(store_root).load_corpus())[seed * n:(seed + 1) * n]
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cfg = AdapterConfig(name=name, kind="linear", sides="query", dim_in=384, dim_out=384, base_model=MODEL,
                        data_fingerprint=info["data_fingerprint"], raw_collection=info["collection"], identity=True,
                        memory={"alpha": 1.0, "n_passages": n})
    return Adapter(cfg, LinearAdapter(384, 384), PassageMemory(tuple(ids), vectors))


@pytest.fixture()
def store_copy(small_store, tmp_path) -> Path:
    chroma_store.release_locks()  # the session's store was built in this process
    shutil.copytree(small_store[0].store, tmp_path / "store")
    yield tmp_path / "store"
    chroma_store.release_locks()


def test_two_memory_adapters_of_one_name_keep_their_own_collections(store_copy, tmp_path):
    store = Store(store_copy)
    a, b = tmp_path / "runA" / "mem", tmp_path / "runB" / "mem"
    save_and_project(store, memory_adapter(store_copy, seed=0), a)
    save_and_project(store, memory_adapter(store_copy, seed=1), b)
    wstore = Store(store_copy, write=True)
    for folder in (a, b):
        assert projection_problem(wstore, load_adapter(folder), adapter_sha(folder)) is None
    assert load_adapter(a).collection_name != load_adapter(b).collection_name
    # retraining A in place: a new collection, A's old one deleted, B's untouched
    old_a, coll_b = load_adapter(a).collection_name, load_adapter(b).collection_name
    b_vectors = chroma_store.fetch_all(wstore.collection(coll_b)).embeddings
    save_and_project(store, memory_adapter(store_copy, seed=2), a)
    assert chroma_store.get_collection(wstore.client, old_a) is None
    assert projection_problem(wstore, load_adapter(a), adapter_sha(a)) is None
    assert np.array_equal(chroma_store.fetch_all(wstore.collection(coll_b)).embeddings, b_vectors)


def test_a_failed_projection_leaves_the_previous_adapter_and_its_collection(store_copy, tmp_path, monkeypatch):
    store = Store(store_copy)
    a = tmp_path / "runA" / "mem"
    save_and_project(store, memory_adapter(store_copy, seed=0), a)
    old = load_adapter(a)
    before = digest(tmp_path / "runA")

    def fails(*args, **kwargs):
        raise StoreError("the disk is full")

    monkeypatch.setattr(project_mod, "project_collection", fails)
    with pytest.raises(StoreError):
        save_and_project(store, memory_adapter(store_copy, seed=3), a)
    assert digest(tmp_path / "runA") == before
    assert projection_problem(Store(store_copy, write=True), old, adapter_sha(a)) is None


def test_retraining_while_another_process_holds_the_store_changes_nothing(store_copy, tmp_path, capsys):
    a = tmp_path / "runA" / "mem"
    save_and_project(Store(store_copy), memory_adapter(store_copy, seed=0), a)
    chroma_store.release_locks()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            from embedfit.store.store import Store
            Store({str(store_copy)!r}).client
            print("holding", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = digest(tmp_path)
        code = adapter_cli.main(["train", "--store", str(store_copy), "--model", MODEL, "--out", str(a),
                                 "--methods", "memory", "--folds", "2"])
        err = capsys.readouterr().err
        assert code == 2 and "another process" in err
        assert digest(tmp_path) == before
    finally:
        holder.kill()
        holder.wait(timeout=60)


# -- case 11: symbolic links --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "export"])
def test_a_symlinked_out_is_refused_before_any_work(small_store, adapter_dir, tmp_path, capsys, command):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    before = digest(tmp_path)
    argv = (export_argv(adapter_dir, str(link)) if command == "export" else
            ["train", "--store", str(small_store[0].store), "--model", MODEL, "--out", str(link), "--epochs", "1"])
    assert adapter_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and str(real) in err
    assert digest(tmp_path) == before
