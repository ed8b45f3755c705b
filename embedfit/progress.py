"""Progress bars for long work (tqdm on stderr); `NQ_PROGRESS=0` silences them, e.g. in tests."""
from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    if os.environ.get("NQ_PROGRESS", "1") == "0":
        kwargs["disable"] = True  # the environment wins over a caller's choice
    return tqdm(iterable, **kwargs)
