"""Training objectives, as pure functions of (already adapted, unit-length) vectors.

- `info_nce`: multiple-negatives ranking. Each query must pick its positive among a candidate set
  (the batch's positives + mined hard negatives), softmax with a temperature. Candidates that are
  known positives of the query (besides the target) are masked out: they are not negatives. With `prior`
  (a fixed score per query and candidate, added to the logits: BM25's, as score fusion normalises it), the query
  must pick its positive under the fused score, so the adapter learns what the prior does not already get right.
- `triplet`: hinge on cosine: max(0, margin - cos(q, p) + cos(q, n)) for each negative.
- `cosine_mse`: the OpenAI-cookbook objective, (cos(a, b) - label)^2 with label +1 / -1. It optimises
  pair classification, not ranking; kept as the baseline to compare against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, cand: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
             temperature: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """q (B,d), cand (C,d) unit vectors; target (B,) index into cand; mask (B,C) True = exclude; prior (B,C) added
    to the logits (no gradient flows into it)."""
    logits = (q @ cand.T) / temperature
    if prior is not None:
        logits = logits + prior
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, target)


def triplet(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """q, pos (B,d); neg (B,K,d) unit vectors; mean hinge over all (query, negative) pairs."""
    s_pos = (q * pos).sum(-1, keepdim=True)  # (B,1)
    s_neg = torch.einsum("bd,bkd->bk", q, neg)  # (B,K)
    return F.relu(margin - s_pos + s_neg).mean()


def cosine_mse(a: torch.Tensor, b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """a, b (N,d) unit vectors; label (N,) in {+1, -1}."""
    return ((a * b).sum(-1) - label).pow(2).mean()
