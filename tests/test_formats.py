"""Pre-release formats (issue 19): every artifact says which embedfit wrote it, and an artifact of an earlier format
is refused in one line that names the command rebuilding it (no branches that read old layouts)."""
from __future__ import annotations

import json
import shutil

import pytest
from app_support import make_adapter

import embedfit
from embedfit.adapters.io import is_adapter_dir, load_adapter
from embedfit.errors import StoreError
from embedfit.store import chroma_store
from embedfit.store.store import FORMAT_VERSION, STORE_OUTPUT, Store

MODEL = "all-MiniLM-L6-v2"


def test_a_store_says_its_format_and_version(small_store):
    manifest = Store(small_store[0].store).require(MODEL)
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["embedfit_version"] == embedfit.__version__


def test_a_store_of_an_earlier_format_is_refused_in_one_line(small_store, tmp_path):
    chroma_store.release_locks()
    old = tmp_path / "store"
    shutil.copytree(small_store[0].store, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(StoreError) as err:
        Store(old).require(MODEL)
    msg = str(err.value)
    assert "\n" not in msg and "format 1" in msg and f"embedfit ingest --data {manifest['data_source']}" in msg
    assert STORE_OUTPUT.recognise(old)  # still ours: never called a stranger's folder by the output checks
    chroma_store.release_locks()


def test_an_adapter_says_its_format_and_one_of_an_earlier_format_is_refused(small_store, tmp_path):
    folder = tmp_path / "a"
    make_adapter(folder, small_store[0].store)
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["format"], cfg["format_version"], cfg["embedfit_version"]) == ("embedfit.adapter", 2,
                                                                                embedfit.__version__)
    for old in ({"format": "nq-adapter.adapter", "format_version": 1}, {"format_version": 1}):
        (folder / "config.json").write_text(json.dumps({**cfg, **old}))
        with pytest.raises(StoreError) as err:
            load_adapter(folder)
        msg = str(err.value)
        assert "\n" not in msg and f"embedfit train --store STORE --model {MODEL} --out {folder}" in msg
    (folder / "config.json").write_text(json.dumps({**cfg, "format": "nq-adapter.adapter", "format_version": 1}))
    assert is_adapter_dir(folder)  # an older adapter of ours may be replaced by a new one without --force


class _Collection:
    def __init__(self, metadata):
        self.name, self.metadata = "raw-x", metadata


@pytest.mark.parametrize("metadata", [None, {}, {"model_id": "all-MiniLM-L6-v2"}, {"dim": 384}])
def test_a_collection_that_does_not_say_its_model_is_refused_not_let_through(metadata):
    """Issue 19: no branch reads an artifact from before the format; a raw collection without the model metadata
    ingest writes used to be let through unchecked."""
    from embedfit.errors import MismatchError
    from embedfit.store.store import check_collection_encoder

    with pytest.raises(MismatchError, match="embedfit ingest --model all-MiniLM-L6-v2 --store NEW_STORE"):
        check_collection_encoder(_Collection(metadata), "all-MiniLM-L6-v2", 384)
    check_collection_encoder(_Collection({"model_id": "all-MiniLM-L6-v2", "dim": 384}), "all-MiniLM-L6-v2", 384)


def test_the_split_policy_is_what_ingest_wrote_never_a_guessed_default(small_store):
    cfg, _ = small_store
    policy = Store(cfg.store).split_policy()
    assert policy["by"] == cfg.split_by == "random" and policy["seed"] == cfg.seed
