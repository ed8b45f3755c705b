"""NUDGE (Zeighami, Wellmer, Parameswaran, "NUDGE: Lightweight Non-Parametric Fine-Tuning of Embeddings for
Retrieval", ICLR 2025; the `nudge-ft` package, torch and numpy only): the published passage-side method closest to
our query memory. It moves each passage embedding toward the training queries it answers, under a constraint on the
move whose size (gamma) it chooses on validation queries:

- NUDGE-N keeps every passage on the unit sphere (cosine search), its move bounded;
- NUDGE-M moves every answered passage by one shared gamma and returns *unnormalised* vectors, searched by dot
  product as its authors do.

Two uses: eval runs both as baselines, fitted as the package's README does (`embedfit.evaluation.evaluate`); selection
tries NUDGE-N with fixed gammas as a candidate scored on held-out folds like every other
(`embedfit.adapters.select`), and a chosen NUDGE-N is shipped as a query memory (its moved passages, alpha 1).
The package's output is used unchanged (`tests/test_nudge.py` checks it against a direct call).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from embedfit.adapters.data import SplitData

#: system key -> (label, the package's class name, search by dot product instead of cosine)
NUDGE_SYSTEMS = {
    "nudge_n": ("NUDGE-N baseline (nudge-ft, passage-side)", "NUDGEN", False),
    "nudge_m": ("NUDGE-M baseline (nudge-ft, passage-side, dot product)", "NUDGEM", True),
}


def answers(split: SplitData) -> dict:
    """The package's `QueriesAnswersDict` for a split, without queries that have no positive in the corpus (the
    package divides by the number of answers)."""
    keep = [i for i, pos in enumerate(split.positives) if len(pos)]
    return {"q_embs": np.ascontiguousarray(split.Q[keep], dtype=np.float32),
            "q_ans_indx": [[int(p) for p in split.positives[i]] for i in keep]}


def nudge_embeddings(P: np.ndarray, train: SplitData, dev: SplitData, key: str = "nudge_n",
                     gamma: float | None = None) -> np.ndarray:
    """The passage vectors NUDGE-N (`key` "nudge_n") or NUDGE-M ("nudge_m") makes from `P`, fitted on `train`;
    gamma chosen by the package on `dev`, or the `gamma` given (then `dev` only feeds the package's own scoring)."""
    import nudge
    import torch

    cls = getattr(nudge, NUDGE_SYSTEMS[key][1])
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its progress
        out = cls(device=torch.device("cpu")).finetune_embeddings(
            np.ascontiguousarray(P, dtype=np.float32), answers(train), answers(dev),
            **({"gamma": float(gamma)} if gamma is not None else {}))
    return np.asarray(out, dtype=np.float32)


def applied_gamma(P: np.ndarray, moved: np.ndarray, key: str = "nudge_n") -> float:
    """The gamma the package applied, read back from its output: `nudge-ft` chooses gamma on dev but returns only
    the moved vectors, and a report that says "NUDGE equals raw" should say it is because the package chose no move.

    Both methods bound a passage's move from its unit vector by gamma: NUDGE-N its squared length (the move is at the
    bound unless the passage reaches its target inside it), NUDGE-M its length (every answered passage moves by
    exactly gamma). So the largest move, squared for NUDGE-N, is gamma (for NUDGE-N a lower bound in the corner case
    where every moved passage reaches its target)."""
    unit = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    move = float(np.linalg.norm(np.asarray(moved, dtype=np.float64) - unit, axis=1).max(initial=0.0))
    return round(move ** 2 if key == "nudge_n" else move, 4)

