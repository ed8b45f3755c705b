"""An `Adapter` = its description (`AdapterConfig`) + a torch module, applied to numpy embeddings.

`sides="query"`: only query embeddings are projected; passages keep their raw vectors, so no second
collection is needed. `sides="both"`: the same projection is applied to passages too, which lives in
a second Chroma collection (`adapted-<name>`). When training found nothing better than the raw
embeddings on dev, `identity=True` and the adapter passes vectors through unchanged (it is still
saved, so every stage sees the same honest answer: "no adapter beat raw").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from core.embedding.base import l2_normalise
from core.fusion import FusionSpec
from core.types import slug

FORMAT_VERSION = 1
#: written into every adapter's config.json: what makes a folder recognisably an adapter of ours
ADAPTER_FORMAT = "nq-adapter.adapter"
Sides = Literal["query", "both"]


@dataclass
class AdapterConfig:
    name: str
    kind: str
    sides: Sides
    dim_in: int
    dim_out: int
    base_model: str
    data_fingerprint: str
    raw_collection: str
    rank: int = 32
    hidden: int = 512
    loss: str = "infonce"
    identity: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    dev_metrics: dict[str, Any] = field(default_factory=dict)
    #: the BM25 fusion chosen for this adapter on the dev split (`core.fusion.FusionChoice.to_json`); None for
    #: adapters trained before hybrid search or on a store without a lexical index
    fusion: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    format: str = ADAPTER_FORMAT

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "AdapterConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in obj.items() if k in known})


class Adapter:
    def __init__(self, config: AdapterConfig, module: nn.Module):
        self.config = config
        self.module = module.eval()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def fusion(self) -> FusionSpec | None:
        """How to fuse this adapter's dense ranking with BM25 (chosen on dev when it was trained), if known."""
        return FusionSpec.from_json(self.config.fusion) if self.config.fusion else None

    @property
    def collection_name(self) -> str | None:
        """The projected collection's name (both-sides adapters only)."""
        return "adapted-" + slug(self.config.name)[:100] if self.config.sides == "both" else None

    def _apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.config.dim_in:
            raise ValueError(f"adapter {self.name!r} expects (n, {self.config.dim_in}) vectors, got {x.shape}")
        if self.config.identity:
            return x  # stored vectors are already unit length: identical bits, identical scores
        with torch.no_grad():
            y = self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return l2_normalise(y)

    def project_queries(self, x: np.ndarray) -> np.ndarray:
        """Adapted, L2-normalised query vectors."""
        return self._apply(x)

    def project_passages(self, x: np.ndarray) -> np.ndarray:
        """Adapted passage vectors (both-sides), or the raw ones unchanged (query-only)."""
        if self.config.sides == "query":
            return np.asarray(x, dtype=np.float32)
        return self._apply(x)

    def describe(self) -> str:
        c = self.config
        what = "identity (no trained adapter beat raw on dev)" if c.identity else f"{c.kind} {c.dim_in}->{c.dim_out}"
        return f"{c.name}: {what}, sides={c.sides}, loss={c.loss}, base={c.base_model}"
