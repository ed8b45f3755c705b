"""Issue 22, case 18: a tampered adapter config.json is refused on load, in one line naming the field, never a
TypeError / AttributeError / KeyError from deep inside projection, search or export."""
from __future__ import annotations

import json

import pytest
from app_support import make_adapter

from embedfit.adapters import cli as adapter_cli
from embedfit.adapters.io import load_adapter
from embedfit.errors import StoreError


@pytest.mark.parametrize("change,problem", [
    ({"dim_in": None}, "dim_in must be a positive integer"),
    ({"dim_in": "384"}, "dim_in must be a positive integer"),
    ({"dim_out": -1}, "dim_out must be a positive integer"),
    ({"dim_in": True}, "dim_in must be a positive integer"),
    ({"kind": "transformer"}, "kind must be one of"),
    ({"sides": []}, "sides must be query or both"),
    ({"identity": "no"}, "identity must be true or false"),
    ({"uid": "../x"}, "uid must be letters and digits"),
    ({"training": []}, "training must be an object"),
    ({"memory": {"alpha": "1.0", "n_passages": 1}}, "memory must be null or an object whose alpha"),
    ({"memory": {"n_passages": 1}}, "memory must be null or an object whose alpha"),
    ({"format_version": "2"}, "has format .2. "),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_a_tampered_config_is_one_clear_line(small_store, tmp_path, capsys, change, problem):
    folder = tmp_path / "a"
    make_adapter(folder, small_store[0].store)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(StoreError, match=problem) as err:
        load_adapter(folder)
    assert "\n" not in str(err.value)
    out = tmp_path / "exp"
    assert adapter_cli.main(["export", "--adapter", str(folder), "--format", "numpy", "--out", str(out)]) == 2
    e = capsys.readouterr().err
    assert "Traceback" not in e and e.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("text", ["[]", "null", "3", '"config"'])
def test_a_config_that_is_not_an_object_is_one_clear_line(small_store, tmp_path, text):
    folder = tmp_path / "a"
    make_adapter(folder, small_store[0].store)
    (folder / "config.json").write_text(text)
    with pytest.raises(StoreError, match="has format None"):
        load_adapter(folder)
