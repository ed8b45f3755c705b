"""A command replaces only what it made (issue 9, cases 1, 2, 3 and 6).

The oracle is a digest of every path, file content and folder under the test's own folder, taken before
and after the command: a refusal must leave it identical; an accepted write may change only its target.
The CLIs run in-process (`main(argv)`, exit code and stderr as a user sees them).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedfit import atomic
from embedfit.adapters import cli as adapter_cli
from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.io import ADAPTER_OUTPUT, is_adapter_dir, load_adapter, save_adapter
from embedfit.adapters.modules import build_module
from embedfit.errors import OutputError
from embedfit.evaluation import cli as eval_cli
from embedfit.evaluation.config import REPORT_OUTPUT
from embedfit.outputs import check_output
from embedfit.pipeline import cli as ingest_cli
from embedfit.store.store import STORE_OUTPUT
from scripts.bench import BENCH_OUTPUT

MODEL = "all-MiniLM-L6-v2"


def digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of a file's bytes, 'dir', or 'link:target' for every entry under `root`."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def user_folder(root: Path) -> Path:
    """The issue's reproduction: `mydir` holding `precious.txt` and a folder `sub/` (with a file)."""
    d = root / "mydir"
    (d / "sub").mkdir(parents=True)
    (d / "precious.txt").write_text("do not lose me\n", encoding="utf-8")
    (d / "sub" / "notes.md").write_text("# mine\n", encoding="utf-8")
    return d


def tiny_adapter(name: str = "t", seed: int = 0, dim: int = 8) -> Adapter:
    module = build_module("linear", dim, dim, 4, 16)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    cfg = AdapterConfig(name=name, kind="linear", sides="query", dim_in=dim, dim_out=dim, base_model="m",
                        data_fingerprint="fp", raw_collection="raw-m")
    return Adapter(cfg, module)


def train_argv(store: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--store", str(store), "--model", MODEL, "--out", str(out), "--epochs", "1", *extra]


# -- case 1: adapter train --out a folder that is not an adapter ----------------------------------------------

def test_train_refuses_a_user_folder_and_changes_nothing(small_store, tmp_path, capsys):
    mydir = user_folder(tmp_path)
    before = digest(tmp_path)
    assert adapter_cli.main(train_argv(small_store[0].store, mydir)) == 2
    err = capsys.readouterr().err
    assert str(mydir) in err and "not an adapter folder" in err and "--force" in err
    assert digest(tmp_path) == before


@pytest.mark.parametrize("force", [(), ("--force",)], ids=["plain", "force"])
def test_train_refuses_the_store_as_out(small_store, capsys, force):
    store = small_store[0].store
    before = digest(store)
    assert adapter_cli.main(train_argv(store, store, *force)) == 2
    assert "the store it trains from" in capsys.readouterr().err
    assert digest(store) == before


def test_train_with_force_replaces_the_folder(small_store, tmp_path):
    mydir = user_folder(tmp_path)
    assert adapter_cli.main(train_argv(small_store[0].store, mydir, "--force")) == 0
    assert not (mydir / "precious.txt").exists() and is_adapter_dir(mydir)
    assert load_adapter(mydir).config.base_model == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydir"]  # nothing aside, no marker left


def test_train_replaces_its_own_adapter_without_force(small_store, tmp_path):
    out = tmp_path / "ad"
    assert adapter_cli.main(train_argv(small_store[0].store, out, "--seed", "1")) == 0
    first = json.loads((out / "config.json").read_text("utf-8"))
    assert adapter_cli.main(train_argv(small_store[0].store, out, "--seed", "2")) == 0
    second = json.loads((out / "config.json").read_text("utf-8"))
    assert first["training"]["seed"] == 1 and second["training"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad"]


# -- case 2: --out an existing file ---------------------------------------------------------------------------

def test_train_refuses_an_existing_file(small_store, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n", encoding="utf-8")
    before = digest(tmp_path)
    assert adapter_cli.main(train_argv(small_store[0].store, f)) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert digest(tmp_path) == before  # no notes.txt.old, nothing written where the file is


def test_save_refuses_a_file_even_with_force(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n", encoding="utf-8")
    with pytest.raises(OutputError, match="is a file"):
        save_adapter(tiny_adapter(), f, force=True)
    assert f.read_text("utf-8") == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- case 3: reading never touches another path ---------------------------------------------------------------

def test_loading_leaves_a_user_dot_old_folder_alone(tmp_path):
    save_adapter(tiny_adapter(), tmp_path / "X")
    old = tmp_path / "X.old"
    old.mkdir()
    (old / "keep.txt").write_text("mine", encoding="utf-8")
    before = digest(tmp_path)
    load_adapter(tmp_path / "X")
    assert digest(tmp_path) == before
    save_adapter(tiny_adapter(seed=1), tmp_path / "X")  # nor does a save: X.old is not ours
    assert (old / "keep.txt").read_text("utf-8") == "mine"


def test_eval_with_an_adapter_beside_a_dot_old_folder_changes_nothing_but_its_report(small_store, tmp_path):
    adapter_dir = tmp_path / "X"
    assert adapter_cli.main(train_argv(small_store[0].store, adapter_dir)) == 0
    (tmp_path / "X.old").mkdir()
    (tmp_path / "X.old" / "keep.txt").write_text("mine", encoding="utf-8")
    before = digest(tmp_path)
    rc = eval_cli.main(["--store", str(small_store[0].store), "--adapter", str(adapter_dir), "--out",
                        str(tmp_path / "report"), "--no-mse-baseline", "--no-hnsw", "--no-plots", "--no-bm25",
                        "--bootstrap-resamples", "100", "--no-cache"])
    assert rc == 0
    after = digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("report")} == before


def test_an_interrupted_save_is_read_from_its_marker_then_repaired_by_the_next_save(tmp_path, monkeypatch):
    target = tmp_path / "ad"
    save_adapter(tiny_adapter(seed=1), target)
    want = load_adapter(target).module.state_dict()
    real_replace, calls = os.replace, []

    def dies_after_first_rename(src, dst):  # kill -9 between "old aside" and "new in place"
        calls.append((src, dst))
        if len(calls) == 3:  # 1: the marker's atomic write, 2: the old folder aside, 3: the new one in
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", dies_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic.replace_dir(atomic.make_temp_dir(target), target)  # an empty new folder: never reaches the target
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not target.exists()
    before = digest(tmp_path)
    got = load_adapter(target)  # a reader finds the previous adapter through our marker ...
    assert all(torch.equal(got.module.state_dict()[k], v) for k, v in want.items())
    assert digest(tmp_path) == before  # ... and changes nothing
    save_adapter(tiny_adapter(seed=2), target)  # the next save restores, then replaces; nothing is left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad"]


def test_recovery_ignores_a_marker_that_names_a_path_not_ours(tmp_path):
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine", encoding="utf-8")
    atomic.write_json(tmp_path / ".ad.replacing.json", {"target": "ad", "aside": "../victim", "new": "x"})
    before = digest(tmp_path)
    atomic.recover_dir(tmp_path / "ad")
    assert digest(tmp_path) == before


# -- case 6: bad --store / --out places, refused before any work ----------------------------------------------

@pytest.mark.parametrize("cli,argv", [
    (ingest_cli, ["--data", "DATA", "--store", "{bad}", "--model", "paraphrase-MiniLM-L3-v2", "--limit", "5"]),
    (adapter_cli, ["train", "--store", "{bad}", "--model", MODEL, "--out", "{tmp}/ad"]),
    (eval_cli, ["--store", "{bad}", "--out", "{tmp}/report"]),
])
@pytest.mark.parametrize("where", ["file", "proc"])
def test_a_store_that_is_a_file_or_cannot_be_made_is_one_message(cli, argv, where, tmp_path, nq_dir, capsys):
    bad = tmp_path / "store.txt" if where == "file" else Path("/proc/nq-adapter-test/store")
    if where == "file":
        bad.write_text("not a store", encoding="utf-8")
    before = digest(tmp_path)
    argv = [a.replace("{bad}", str(bad)).replace("{tmp}", str(tmp_path)).replace("DATA", str(nq_dir)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "Traceback" not in err
    assert digest(tmp_path) == before


@pytest.mark.parametrize("cli,argv", [
    (adapter_cli, ["train", "--store", "{store}", "--model", MODEL, "--out", "{out}"]),
    (eval_cli, ["--store", "{store}", "--out", "{out}", "--no-mse-baseline"]),
])
def test_an_unwritable_out_is_refused_before_the_work(cli, argv, small_store, capsys, monkeypatch):
    import embedfit.adapters.train
    import embedfit.evaluation.evaluate

    def no_work(*_a, **_k):
        raise AssertionError("the work started before --out was checked")

    monkeypatch.setattr(embedfit.adapters.train, "train_adapter", no_work)
    monkeypatch.setattr(embedfit.evaluation.evaluate, "evaluate_model", no_work)
    out = "/proc/nq-adapter-test/out"
    argv = [a.replace("{store}", str(small_store[0].store)).replace("{out}", out) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and out in err


def test_eval_refuses_a_user_folder_as_report(small_store, tmp_path, capsys):
    mydir = user_folder(tmp_path)
    before = digest(tmp_path)
    assert eval_cli.main(["--store", str(small_store[0].store), "--out", str(mydir)]) == 2
    assert "not an eval report folder" in capsys.readouterr().err
    assert digest(tmp_path) == before


def test_ingest_refuses_a_non_empty_folder_that_is_not_a_store(tmp_path, nq_dir, capsys):
    mydir = user_folder(tmp_path)
    before = digest(tmp_path)
    rc = ingest_cli.main(["--data", str(nq_dir), "--store", str(mydir), "--model", "paraphrase-MiniLM-L3-v2",
                          "--limit", "5", "--no-cache"])
    assert rc == 2 and "not a store folder" in capsys.readouterr().err
    assert digest(tmp_path) == before


def test_bench_refuses_to_overwrite_a_file_that_is_not_a_bench_file(tmp_path, capsys):
    from scripts import bench

    f = tmp_path / "results.json"
    f.write_text('{"mine": 1}\n', encoding="utf-8")
    assert bench.main(["--out", str(f), "--parts", "scale", "--quick"]) == 2
    assert "not a bench file" in capsys.readouterr().err and f.read_text("utf-8") == '{"mine": 1}\n'


# -- property: random existing folders and files --------------------------------------------------------------

KINDS = {"adapter": ADAPTER_OUTPUT, "store": STORE_OUTPUT, "report": REPORT_OUTPUT, "bench": BENCH_OUTPUT}
names = st.text(alphabet="abcxyz.-_ 0é", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
trees = st.recursive(st.binary(max_size=20), lambda kids: st.dictionaries(names, kids, max_size=4), max_leaves=8)


def make_tree(root: Path, tree) -> None:
    for name, sub in tree.items():
        p = root / name
        if isinstance(sub, dict):
            p.mkdir()
            make_tree(p, sub)
        else:
            p.write_bytes(sub)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(names, trees, min_size=1, max_size=5), pick=st.integers(0, 10_000),
       kind=st.sampled_from(sorted(KINDS)), force=st.booleans(), fresh=st.booleans())
def test_property_nothing_outside_our_own_outputs_changes(tmp_path_factory, tree, pick, kind, force, fresh):
    root = tmp_path_factory.mktemp("prop")
    make_tree(root, tree)
    entries = sorted(root.rglob("*"))
    target = (root / "new-output") if fresh or not entries else entries[pick % len(entries)]
    existed_as = "dir" if target.is_dir() else "file" if target.exists() else None
    was_ours = existed_as is not None and KINDS[kind].recognise(target)
    was_empty_dir = existed_as == "dir" and not any(target.iterdir())
    before = digest(root)
    try:
        check_output(target, KINDS[kind], force)
        if kind == "adapter":
            save_adapter(tiny_adapter(), target, force=force)
    except OutputError:
        assert digest(root) == before  # refused: nothing changed anywhere
        assert existed_as is not None  # a new path under a writable folder is never refused
        assert not (force and existed_as == ("dir" if KINDS[kind].is_dir else "file"))
        return
    # accepted: only when the target was absent, empty, ours, or forced, and of the right type
    assert existed_as is None or was_empty_dir or was_ours or force
    assert existed_as != ("file" if KINDS[kind].is_dir else "dir")
    after = digest(root)
    rel = str(target.relative_to(root))
    outside = lambda d: {k: v for k, v in d.items() if k != rel and not k.startswith(rel + os.sep)}  # noqa: E731
    assert outside(after) == outside(before)  # nothing beside the target changed (no .old, no marker left)
    if kind == "adapter":
        assert is_adapter_dir(target) and np.isfinite(load_adapter(target).project_queries(np.eye(8)).sum())
