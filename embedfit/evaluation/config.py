"""Settings of one `embedfit eval` run (the CLI fills this; tests build it directly)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedfit.embed.registry import check_device
from embedfit.errors import InputError
from embedfit.outputs import OutputKind, read_json_object
from embedfit.settings import PRIMARY_METRIC, default_cache, default_report, default_store  # noqa: F401 (PRIMARY_METRIC: re-exported)

#: metrics that get a 95% interval in metrics.json (the report shows them for every system)
CI_METRICS = ("MRR@10", "nDCG@10", "Recall@10")
#: metrics whose adapted-vs-raw p-value goes into metrics.json (`p_value_adapted_vs_raw`)
P_METRICS = ("MRR@10", "nDCG@10")
SPLITS = ("dev", "test")
#: baselines eval runs only when asked (`--baselines`): they cost minutes, not seconds
OPTIONAL_BASELINES = ("finetune",)
#: details.json names its writer: what makes a folder recognisably an eval report of ours
REPORT_GENERATOR = "embedfit eval"
#: the generator's name before the tool was called embedfit: still ours to replace
OLD_REPORT_GENERATORS = ("nq-adapter eval",)


def is_report_dir(path: Path) -> bool:
    """A report folder of ours: its details.json names our generator (this one or an earlier name)."""
    details = read_json_object(Path(path) / "details.json")
    return details is not None and details.get("generator") in (REPORT_GENERATOR, *OLD_REPORT_GENERATORS)


REPORT_OUTPUT = OutputKind("an eval report folder", is_report_dir, replaces=False)


@dataclass
class EvalConfig:
    store: Path = field(default_factory=default_store)
    out: Path = field(default_factory=default_report)
    #: adapter folders; each is evaluated with the store model it was trained on
    adapters: list[Path] = field(default_factory=list)
    #: models to evaluate; empty = every model in the store
    models: list[str] = field(default_factory=list)
    #: BEIR queries.jsonl + qrels.tsv of held-out queries, scored against the store's corpus instead of a split
    queries: Path | None = None
    qrels: Path | None = None
    split: str = "test"
    bm25: bool = True
    mse_baseline: bool = True
    #: NUDGE-N and NUDGE-M beside the customization (`embedfit.adapters.nudge`)
    nudge: bool = True
    mse_epochs: int = 10
    hnsw: bool = True
    plots: bool = True
    bootstrap_resamples: int = 10_000
    seed: int = 0
    #: latent-space plot: queries sampled, random extra passages, query->positive lines drawn
    plot_queries: int = 300
    plot_passages: int = 1000
    plot_lines: int = 40
    cache_dir: Path | None = field(default_factory=default_cache)
    batch_size: int | None = None
    #: where a sentence-transformers model embeds held-out queries: auto, cpu, cuda, cuda:N, mps
    device: str = "auto"
    chroma_host: str | None = None
    chroma_port: int | None = None
    #: held-out queries: refuse to report when fewer than this many can be scored ...
    min_queries: int = 10
    #: ... or when fewer than this fraction of the given queries can be scored
    min_usable: float = 0.5
    #: write into --out even when it is a non-empty folder that is not a report
    force: bool = False
    #: folders where `embedfit eval learning-curve` / `eval dims` wrote; their figures join the report when they
    #: measured this store's data. Empty: the studies' default folders (`.data/learning-curve`, `.data/dims`)
    studies: list[Path] = field(default_factory=list)
    #: optional baselines that cost real time: "finetune" (`embedfit.evaluation.finetune`)
    baselines: list[str] = field(default_factory=list)
    #: epochs of the fine-tune baseline (the best on dev is kept)
    finetune_epochs: int = 2

    def validate(self) -> None:
        check_device(self.device)
        if (self.queries is None) != (self.qrels is None):
            raise InputError("--queries and --qrels go together: pass both (BEIR queries.jsonl and qrels.tsv) or neither")
        if self.split not in SPLITS:
            raise InputError(f"--split must be one of {', '.join(SPLITS)} (scoring the train split would score "
                             f"the adapter on its own training queries), got {self.split!r}")
        if self.mse_epochs <= 0:
            raise InputError("--mse-epochs must be positive")
        if self.bootstrap_resamples < 100:
            raise InputError("--bootstrap-resamples must be at least 100")
        for name in ("plot_queries", "plot_passages", "plot_lines"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative")
        if self.min_queries < 1:
            raise InputError("--min-queries must be at least 1")
        if not 0.0 <= self.min_usable <= 1.0:
            raise InputError("--min-usable must be a fraction between 0 and 1")
        unknown = sorted(set(self.baselines) - set(OPTIONAL_BASELINES))
        if unknown:
            raise InputError(f"--baselines: unknown {', '.join(unknown)}; known: {', '.join(OPTIONAL_BASELINES)}")
        if self.finetune_epochs < 1:
            raise InputError("--finetune-epochs must be at least 1")
        if len(set(self.models)) != len(self.models):
            raise InputError("a model is given twice with --model")

    @property
    def heldout(self) -> bool:
        return self.queries is not None

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: ([str(x) for x in v] if isinstance(v, list) and k in ("adapters", "studies") else
                    str(v) if isinstance(v, Path) else v) for k, v in d.items()}
