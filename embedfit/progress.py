"""Progress bars for long work (tqdm on stderr); `EMBEDFIT_PROGRESS=0` silences them, e.g. in tests."""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from embedfit.settings import env


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    if env("EMBEDFIT_PROGRESS") == "0":
        kwargs["disable"] = True  # the environment wins over a caller's choice
    return tqdm(iterable, **kwargs)
