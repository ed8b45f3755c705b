"""The three adapter shapes, each starting exactly at "no change" (or, when the output is smaller, at
the best linear compression of the data).

Why start at identity: the raw embeddings are already good; a randomly initialised projection would
first have to relearn them from ~6.6k training queries and usually ends worse. Weight decay on the
*change* (delta, A·B, the MLP) then pulls toward identity, not toward zero.

- `LinearAdapter`:    y = x (W0 + Δ), Δ initialised at 0; W0 = I (square) or a PCA basis (rectangular).
- `LowRankAdapter`:   y = x + (x A) B, B initialised at 0.
- `MLPAdapter`:       y = x + W2 gelu(W1 x + b1) + b2, last layer initialised at 0.
"""
from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("linear", "lowrank", "mlp")


class LinearAdapter(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, init: torch.Tensor | None = None):
        super().__init__()
        if init is None:
            if dim_out == dim_in:
                init = torch.eye(dim_in)
            else:  # a random orthonormal projection keeps cosine geometry roughly (JL); PCA is better when data is known
                q, _ = torch.linalg.qr(torch.randn(dim_in, dim_out, generator=torch.Generator().manual_seed(0)))
                init = q[:, :dim_out]
        if init.shape != (dim_in, dim_out):
            raise ValueError(f"init matrix shape {tuple(init.shape)} != {(dim_in, dim_out)}")
        self.register_buffer("base", init.detach().clone().float())
        self.delta = nn.Parameter(torch.zeros(dim_in, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.base + self.delta)


class LowRankAdapter(nn.Module):
    def __init__(self, dim: int, rank: int = 32):
        super().__init__()
        self.A = nn.Parameter(torch.randn(dim, rank, generator=torch.Generator().manual_seed(0)) / math.sqrt(dim))
        self.B = nn.Parameter(torch.zeros(rank, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.A) @ self.B


class MLPAdapter(nn.Module):
    def __init__(self, dim: int, hidden: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def build_module(kind: str, dim_in: int, dim_out: int | None = None, rank: int = 32, hidden: int = 512,
                 init: torch.Tensor | None = None) -> nn.Module:
    """The module for `kind`; only `linear` may change the dimension."""
    dim_out = dim_out or dim_in
    if kind == "linear":
        return LinearAdapter(dim_in, dim_out, init)
    if dim_out != dim_in:
        raise ValueError(f"a {kind} adapter keeps the dimension ({dim_in}); use --kind linear for a smaller output")
    if kind == "lowrank":
        return LowRankAdapter(dim_in, rank)
    if kind == "mlp":
        return MLPAdapter(dim_in, hidden)
    raise ValueError(f"unknown adapter kind {kind!r}; choose one of {', '.join(KINDS)}")


def pca_basis(x: torch.Tensor, dim_out: int) -> torch.Tensor:
    """The top `dim_out` principal directions of `x` (uncentred: cosine is about directions from 0)."""
    _, _, vh = torch.linalg.svd(x.float(), full_matrices=False)
    return vh[:dim_out].T.contiguous()
