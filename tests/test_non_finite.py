"""Issue 22, case 14: NaN never loads or writes silently.

An adapter whose weights or query memory hold NaN/inf is refused on load (so the app, eval and every export refuse
it with the reason, instead of ranking by NaN or writing a non-finite matrix with exit 0), and every JSON file we
write is strict JSON: an undefined number (a fold without unseen queries, the interval of a single seed) is null.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from app_support import make_adapter
from safetensors.torch import load_file, save_file

from embedfit import atomic
from embedfit.adapters import cli as adapter_cli
from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.io import load_adapter, save_adapter
from embedfit.adapters.modules import LinearAdapter
from embedfit.errors import StoreError


def strict(text: str):
    """json.loads that refuses NaN/Infinity, as browsers and jq do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_adapter_with_non_finite_weights_is_refused_everywhere(small_store, tmp_path, capsys, value):
    folder = tmp_path / "a"
    make_adapter(folder, small_store[0].store)
    state = load_file(str(folder / "model.safetensors"))
    state["delta"][3, 5] = value
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(StoreError, match="non-finite numbers .* in delta"):
        load_adapter(folder)
    out = tmp_path / "exp"
    assert adapter_cli.main(["export", "--adapter", str(folder), "--format", "numpy", "--out", str(out)]) == 2
    assert "non-finite" in capsys.readouterr().err and not out.exists()


def test_a_query_memory_with_nan_is_refused(tmp_path):
    cfg = AdapterConfig(name="mem", kind="linear", sides="query", dim_in=2, dim_out=2, base_model="m",
                        data_fingerprint="fp", raw_collection="raw-m", identity=True, memory={"alpha": 1.0, "n_passages": 1})
    ad = Adapter(cfg, LinearAdapter(2, 2), PassageMemory(("p1",), np.array([[np.nan, 1.0]], np.float32)))
    save_adapter(ad, tmp_path / "a")
    with pytest.raises(StoreError, match="query memory .* non-finite"):
        load_adapter(tmp_path / "a")


def test_an_undefined_number_in_an_adapter_config_is_written_as_null(tmp_path):
    cfg = AdapterConfig(name="q", kind="linear", sides="query", dim_in=2, dim_out=2, base_model="m",
                        data_fingerprint="fp", raw_collection="raw-m",
                        selection={"unseen_change": float("nan"), "table": [{"mean": 0.5, "unseen": float("nan")}]})
    save_adapter(Adapter(cfg, LinearAdapter(2, 2)), tmp_path / "a")
    written = strict((tmp_path / "a" / "config.json").read_text())
    assert written["selection"] == {"unseen_change": None, "table": [{"mean": 0.5, "unseen": None}]}
    assert load_adapter(tmp_path / "a").config.selection["unseen_change"] is None


def test_every_json_we_write_is_strict(tmp_path):
    obj = {"ci": [float("nan"), float("nan")], "x": (1.0, float("-inf")), "n": {"m": math.inf, "k": 2}, "ok": 0.5}
    atomic.write_json(tmp_path / "f.json", obj)
    assert strict((tmp_path / "f.json").read_text()) == {"ci": [None, None], "x": [1.0, None],
                                                         "n": {"m": None, "k": 2}, "ok": 0.5}
    assert strict(atomic.json_text({"a": np.float32("nan"), "b": np.float64(0.25), "c": [np.int64(3), True]})) == \
        {"a": None, "b": 0.25, "c": [3, True]}
