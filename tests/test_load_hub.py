"""A dataset id that `datasets` cannot load gives one clear line, with the library's error chained as the cause."""
from __future__ import annotations

import pytest

from embedfit.data import load_hub as load_hub_mod
from embedfit.errors import DataError, OfflineError


@pytest.mark.parametrize("offline", [False, True])
def test_load_failure_is_one_line_with_the_cause_chained(monkeypatch, offline):
    datasets = pytest.importorskip("datasets")
    cause = ConnectionError("simulated: no route to host")

    def fail(*args, **kwargs):
        raise cause

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(load_hub_mod, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fail)
    expected = OfflineError if offline else DataError
    with pytest.raises(expected) as info:
        load_hub_mod.load_hub("someone/some-dataset")
    assert "\n" not in str(info.value) and "someone/some-dataset" in str(info.value)
    assert info.value.__cause__ is cause  # shown by tracebacks (-v, debuggers), not in the message
