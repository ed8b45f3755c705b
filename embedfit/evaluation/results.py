"""What one eval run produced: each system's ranking and figures (`SystemRun`), per model
(`ModelEvaluation`), for the whole run (`EvalOutcome`). `embedfit.evaluation.evaluate` fills them; `embedfit.evaluation.report` and
`embedfit.evaluation.plots` only read them, so the report never reaches back into the run."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from embedfit.adapters.adapter import Adapter
from embedfit.evaluation.config import EvalConfig
from embedfit.types import Results


@dataclass(frozen=True)
class SystemRun:
    """One ranked system on the evaluated queries, with everything the report says about it.

    Built in two steps by `embedfit.evaluation.evaluate`: the ranking first, then (with `dataclasses.replace`) its scores,
    HNSW check and threshold figures, each computed by a pure function; nothing changes it afterwards.
    """

    key: str  # "raw", "adapted", "adapted:<name>", "mse_baseline", "bm25", and hybrids: "<dense key>_bm25", "<dense key>_rrf"
    label: str
    results: Results
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: metric -> {"delta", "ci95" (of the paired difference), "p"}; empty for raw
    vs_raw: dict[str, dict] = field(default_factory=dict)
    #: {"collection", "metrics", "recall@10_vs_exact"} or {"skipped": reason}; None for non-dense systems
    hnsw: dict | None = None
    #: pair kind -> {"threshold", "accuracy", "se", "n_pos", "n_neg", "dev_accuracy"}
    threshold: dict[str, dict] = field(default_factory=dict)
    adapter: Adapter | None = None
    adapter_dir: str | None = None
    curves: list[dict] | None = None
    seconds: float | None = None
    #: dense systems: raw vectors -> this system's query vectors; passage vectors in this system's space
    project_queries: Callable[[np.ndarray], np.ndarray] | None = None
    passages: np.ndarray | None = None
    #: hybrids: the fusion used (`embedfit.retrieval.fusion.FusionSpec.to_json`) and where it was chosen ("chosen_on", "source")
    fusion: dict | None = None
    #: adapter systems: the paired comparison with the best system that needs no adapter
    #: ({"system": key, metric: {"delta", "ci95", "p"}}); empty otherwise
    vs_best_plain: dict = field(default_factory=dict)
    #: "seen" / "unseen" (`embedfit.metrics.seen`) -> {"n", "means", "ci95", "vs_raw"} on the primary metric and nDCG@10
    by_subset: dict = field(default_factory=dict)
    #: what it costs over raw (`embedfit.evaluation.evaluate._costs`): {"fit_seconds", "query_ms", "storage_bytes",
    #: "storage"}: time to fit, added milliseconds per query (median, one query at a time), extra bytes stored
    cost: dict = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return self.passages is not None


@dataclass(frozen=True)
class ModelEvaluation:
    model: str
    dim: int
    scope: str  # "<split> split" (test or dev) or "held-out queries from FILE"
    query_ids: list[str]
    systems: dict[str, SystemRun]
    notes: list[str] = field(default_factory=list)
    #: figure name -> its path inside the report ("figures/MODEL/NAME.png")
    figures: dict[str, str] = field(default_factory=dict)
    #: that path -> the file's content (PNG bytes, or the interactive page's HTML text), written by the report
    figure_files: dict[str, bytes | str] = field(default_factory=dict)
    pair_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: how many scored queries are seen / unseen (`embedfit.metrics.seen`)
    subset_sizes: dict[str, int] = field(default_factory=dict)
    #: why the split into seen / unseen came out as it did, in one true sentence (`embedfit.evaluation.evaluate._why_seen`)
    seen_reason: str = ""

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def adapter_keys(self) -> list[str]:
        """The dense adapter systems ("adapted", "adapted:<name>"), not their hybrids."""
        return [k for k in self.systems if is_adapter_key(k) and not is_hybrid_key(k)]


HYBRID_SUFFIXES = ("_bm25", "_rrf")


def is_hybrid_key(key: str) -> bool:
    return key.endswith(HYBRID_SUFFIXES)


def is_adapter_key(key: str) -> bool:
    """A system that needs a trained adapter: an adapter or its hybrid (the MSE baseline is a baseline)."""
    return key == "adapted" or key.startswith(("adapted:", "adapted_"))


@dataclass
class EvalOutcome:
    config: EvalConfig
    models: list[ModelEvaluation]
    seconds: float
    #: figures of the whole run (the forest plot: one panel per model): name -> path, path -> PNG bytes
    figures: dict[str, str] = field(default_factory=dict)
    figure_files: dict[str, bytes] = field(default_factory=dict)
