"""An `Adapter` = its description (`AdapterConfig`) + a torch module, applied to numpy embeddings.

`sides="query"`: only query embeddings are projected; passages keep their raw vectors, so no second
collection is needed. `sides="both"`: the same projection is applied to passages too, which lives in
a second Chroma collection (`adapted-<name>-<uid>`). When training found nothing better than the raw
embeddings on dev, `identity=True` and the adapter passes vectors through unchanged (it is still
saved, so every stage sees the same honest answer: "no adapter beat raw").

An adapter may also carry a *query memory* (`embedfit.adapters.memory`): passages answered by training queries move
toward those queries. It is passage-side, so such an adapter has a projected collection too, and projecting
needs the passage ids (`project_passages(x, ids)`).
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from embedfit import __version__
from embedfit.adapters.memory import apply_memory
from embedfit.embed.base import l2_normalise
from embedfit.retrieval.fusion import FusionSpec
from embedfit.types import slug

FORMAT_VERSION = 2
#: written into every adapter's config.json: what makes a folder recognisably an adapter of ours
ADAPTER_FORMAT = "embedfit.adapter"
#: the name adapters had before the tool was called embedfit: still recognised as ours (so a new one may replace
#: it), never loaded (`embedfit.adapters.io.load_adapter` says how to retrain it)
OLD_ADAPTER_FORMATS = ("nq-adapter.adapter",)
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
    #: the BM25 fusion chosen for this adapter on the dev split (`embedfit.retrieval.fusion.FusionChoice.to_json`); None for
    #: adapters fitted with `tune_fusion` off or without a store (`embedfit.fit_vectors`: no texts, no BM25)
    fusion: dict[str, Any] | None = None
    #: the query memory's settings ({"alpha": ..., "n_passages": ...}) when it has one; its vectors are saved
    #: beside the weights (`embedfit.adapters.io`)
    memory: dict[str, Any] | None = None
    #: how this adapter was chosen (`embedfit.adapters.select`): the candidates, folds and dev queries that decided
    selection: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    format: str = ADAPTER_FORMAT
    #: random, made once per trained adapter: names its projected collection, so two adapters that share a name
    #: (`runA/mem`, `runB/mem`) never share one, and a retrained adapter projects into a new collection before
    #: it replaces the old folder (the old one keeps working until then)
    uid: str = field(default_factory=lambda: secrets.token_hex(6))
    #: the embedfit version that trained it
    embedfit_version: str = __version__

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> AdapterConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass(frozen=True)
class PassageMemory:
    """The query memory's data: one vector (mean of its training queries) per moved passage."""
    ids: tuple[str, ...]
    vectors: np.ndarray  # (len(ids), dim_out) float32


class Adapter:
    """A fitted customization of one model's frozen embeddings: a query-side module (the identity when nothing
    beat raw), optionally applied to passages too (`sides="both"`), optionally with a query memory that moves
    answered passages toward their training queries (by passage id).

    Use `project_queries(x)` on query vectors and `project_passages(x, ids)` on passage vectors of the base model;
    `embedfit.export` writes it for numpy, sentence-transformers, Chroma or LlamaIndex.
    """

    def __init__(self, config: AdapterConfig, module: nn.Module, memory: PassageMemory | None = None):
        if (config.memory is None) != (memory is None):
            raise ValueError("an adapter's config.memory and its memory vectors go together")
        self.config = config
        self.module = module.eval()
        self.memory = memory

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def fusion(self) -> FusionSpec | None:
        """How to fuse this adapter's dense ranking with BM25 (chosen on dev when it was trained), if known."""
        return FusionSpec.from_json(self.config.fusion) if self.config.fusion else None

    @property
    def collection_name(self) -> str | None:
        """The projected collection's name (both-sides adapters and adapters with a query memory)."""
        if not self.moves_passages:
            return None
        return f"adapted-{slug(self.config.name)[:80]}-{self.config.uid}"

    @property
    def is_identity(self) -> bool:
        """True when the adapter changes nothing at all (identity module, no query memory)."""
        return self.config.identity and self.memory is None

    @property
    def fit_splits(self) -> list[str]:
        """The store splits whose labelled queries this adapter was fitted on (train; train + dev after
        cross-validated selection): their positives are the documents it has *seen* (`embedfit.metrics.seen`)."""
        return list(self.config.training.get("fit_splits", ["train"]))

    @property
    def moves_passages(self) -> bool:
        """True when passages need the adapter too (both sides, or a query memory): a projected collection."""
        return self.config.sides == "both" or self.memory is not None

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

    def project_passages(self, x: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """Adapted passage vectors (both-sides), or the raw ones unchanged (query-only); then, with a query
        memory, the passages among `ids` (the rows' passage ids, required then) moved toward their queries."""
        y = np.asarray(x, dtype=np.float32) if self.config.sides == "query" else self._apply(x)
        if self.memory is None:
            return y
        if ids is None or len(ids) != len(y):
            raise ValueError(f"adapter {self.name!r} moves passages by id (query memory): pass one id per row")
        where = {pid: i for i, pid in enumerate(ids)}
        keep = [j for j, pid in enumerate(self.memory.ids) if pid in where]
        rows = np.array([where[self.memory.ids[j]] for j in keep], dtype=np.int64)
        return apply_memory(y, rows, self.memory.vectors[keep], float(self.config.memory["alpha"]))

    def describe(self) -> str:
        c = self.config
        what = "identity (no trained adapter beat raw on dev)" if c.identity else f"{c.kind} {c.dim_in}->{c.dim_out}"
        if not c.identity and (c.training or {}).get("lexical_prior"):  # it learnt what BM25 misses: serve it fused
            what += f" (trained through the BM25-fused score, BM25 weight {c.training['lexical_prior']:g})"
        if c.memory and c.memory.get("method") == "nudge-n":
            what = ("" if c.identity else what + " + ") + (f"NUDGE-N passage move (gamma {c.memory.get('gamma')}, "
                                                           f"{c.memory['n_passages']} passages moved)")
        elif c.memory:
            centred = ", centred" if c.memory.get("centred") else ""
            what = ("" if c.identity else what + " + ") + (f"query memory (alpha {c.memory['alpha']}{centred}, "
                                                           f"{c.memory['n_passages']} passages moved)")
        return f"{c.name}: {what}, sides={c.sides}, loss={c.loss}, base={c.base_model}"
