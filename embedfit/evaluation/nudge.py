"""NUDGE, the published passage-side method closest to our query memory, run as a baseline beside it.

NUDGE (Zeighami, Wellmer, Parameswaran, "NUDGE: Lightweight Non-Parametric Fine-Tuning of Embeddings for
Retrieval", ICLR 2025; the `nudge-ft` package, torch and numpy only) moves each passage embedding toward the
training queries it answers, under a constraint on the move whose size (gamma) it chooses on validation queries:

- NUDGE-N keeps every passage on the unit sphere (cosine search), its move bounded;
- NUDGE-M moves every answered passage by one shared gamma and returns *unnormalised* vectors: its authors
  search it by dot product, and so do we.

Both are fitted here exactly as the package's README does: `finetune_embeddings(embeddings, train_set, val_set)`
with the store's train split as `train_set` and its dev split as `val_set` (the package chooses gamma on it). The
package's own output is used unchanged (`tests/test_nudge.py` checks it against a direct call on a toy).
Queries are not changed: NUDGE is passage-side only.
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

from embedfit.adapters.data import SplitData, TrainingData

log = logging.getLogger(__name__)

#: system key -> (label, the package's class name, search by dot product instead of cosine)
NUDGE_SYSTEMS = {
    "nudge_n": ("NUDGE-N baseline (nudge-ft, passage-side)", "NUDGEN", False),
    "nudge_m": ("NUDGE-M baseline (nudge-ft, passage-side, dot product)", "NUDGEM", True),
}


def _answers(split: SplitData) -> dict:
    """The package's `QueriesAnswersDict` for a split, without queries that have no positive in the corpus (the
    package divides by the number of answers)."""
    keep = [i for i, pos in enumerate(split.positives) if len(pos)]
    return {"q_embs": np.ascontiguousarray(split.Q[keep], dtype=np.float32),
            "q_ans_indx": [[int(p) for p in split.positives[i]] for i in keep]}


def nudge_embeddings(data: TrainingData, key: str) -> np.ndarray:
    """The passage vectors NUDGE-N (`key` "nudge_n") or NUDGE-M ("nudge_m") makes from `data.P`, fitted on
    `data.train` with gamma chosen on `data.dev`, in `data.passage_ids` order."""
    import nudge
    import torch

    cls = getattr(nudge, NUDGE_SYSTEMS[key][1])
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its progress
        out = cls(device=torch.device("cpu")).finetune_embeddings(
            np.ascontiguousarray(data.P, dtype=np.float32), _answers(data.train), _answers(data.dev))
    return np.asarray(out, dtype=np.float32)
