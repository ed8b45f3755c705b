"""Issue 22, case 17: a store too small to report on is one clear line, and no half-written output.

Eval with 0 or 1 scored test queries (a tiny store, or one whose test share rounds to nothing) was a ValueError from
the permutation test or "qrels hold no query", after the report folder was made; `eval dims` on a store of fewer
passages than the requested size was a shape error from PCA."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import build_small_store

from embedfit.evaluation import cli as eval_cli
from embedfit.store import chroma_store

MODEL = "all-MiniLM-L6-v2"


@pytest.mark.parametrize("n_test", [0, 1])
def test_eval_refuses_a_split_with_too_few_scored_queries(small_store, tmp_path, capsys, n_test):
    chroma_store.release_locks()
    store = tmp_path / "store"
    shutil.copytree(small_store[0].store, store)
    splits = json.loads((store / "splits.json").read_text())
    test_ids = sorted(q for q, s in splits["splits"].items() if s == "test")
    for q in test_ids[n_test:]:
        splits["splits"][q] = "train"
    (store / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "report"
    assert eval_cli.main(["--store", str(store), "--out", str(out), "--model", MODEL, "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"has {n_test} scored quer" in err and "needs at least 2" in err and "Traceback" not in err
    assert err.count("\n") == 1 and not out.exists()
    chroma_store.release_locks()


def test_eval_dims_refuses_sizes_above_the_number_of_passages(tmp_path, capsys):
    cfg, summary = build_small_store(tmp_path, limit=30)
    chroma_store.release_locks()
    n = summary["passages"]
    assert n < 256
    out = tmp_path / "dims"
    assert eval_cli.main(["dims", "--store", str(cfg.store), "--model", MODEL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the store holds {n} passages" in err and "Traceback" not in err and not out.exists()
