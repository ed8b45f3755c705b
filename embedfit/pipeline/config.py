"""Settings of one ingest run (the CLI fills this; tests build it directly)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedfit.data.filters import DEFAULT_MAX_WORDS, DEFAULT_MIN_WORDS
from embedfit.data.split import SPLIT_POLICIES
from embedfit.embed.registry import DEFAULT_MODEL, check_device
from embedfit.errors import InputError
from embedfit.pipeline.negatives import MiningConfig
from embedfit.pipeline.ray_engine import ENGINES, check_address, check_installed
from embedfit.settings import default_cache, default_data, default_store


@dataclass
class IngestConfig:
    data: str = field(default_factory=default_data)
    store: Path = field(default_factory=default_store)
    model: str = DEFAULT_MODEL
    limit: int | None = None
    k_hard: int = 4
    k_weak: int = 4
    hard_depth: int = 50
    hard_margin: float = 0.95
    near_dup: float = 0.8
    seed: int = 13
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: grouped: no positive shared across splits; random: i.i.d. over questions (embedfit.data.split)
    split_by: str = "random"
    min_words: int = DEFAULT_MIN_WORDS
    max_words: int = DEFAULT_MAX_WORDS
    batch_size: int | None = None
    #: where a sentence-transformers model runs: auto (CUDA when present), cpu, cuda, cuda:N, mps
    device: str = "auto"
    cache_dir: Path | None = field(default_factory=default_cache)
    chroma_host: str | None = None
    chroma_port: int | None = None
    #: write into --store even when it is a non-empty folder that is not a store
    force: bool = False
    #: only rebuild the BM25 index (and raw+BM25 fusion) of an existing --store from its own dataset (a repair)
    lexical_only: bool = False
    #: where passages are embedded: local (this process) or ray (Ray Data actors; embedfit.pipeline.ray_engine)
    engine: str = "local"
    #: Ray cluster to join (HOST:PORT or auto, from a node of the cluster); None: RAY_ADDRESS, else a Ray started here
    ray_address: str | None = None
    #: Ray actors embedding at once; None: one per node of the cluster that has CPUs
    ray_actors: int | None = None

    def validate(self) -> None:
        """Every option checked in one place, before any work: a bad value costs one line, not a traceback."""
        check_device(self.device)
        if self.limit is not None and self.limit <= 0:
            raise InputError("--limit must be positive")
        for name in ("k_hard", "k_weak"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative")
        if self.hard_depth <= 0:
            raise InputError("--hard-depth must be positive")
        if not 0.0 < self.hard_margin <= 1.0:
            raise InputError(f"--hard-margin must be a fraction in (0, 1], got {self.hard_margin}")
        if not 0.0 <= self.near_dup <= 1.0:
            raise InputError(f"--near-dup must be a fraction in [0, 1], got {self.near_dup}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise InputError(f"--split takes three non-negative fractions summing to 1 (train dev test), got "
                             f"{' '.join(str(f) for f in self.split)}")
        if self.split_by not in SPLIT_POLICIES:
            raise InputError(f"--split-by must be one of {', '.join(SPLIT_POLICIES)}, got {self.split_by!r}")
        if not 1 <= self.min_words <= self.max_words:
            raise InputError(f"need 1 <= --min-words <= --max-words, got {self.min_words} and {self.max_words}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise InputError("--batch-size must be positive")
        if self.engine not in ENGINES:
            raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine != "ray":
            for name in ("ray_address", "ray_actors"):
                if getattr(self, name) is not None:
                    raise InputError(f"--{name.replace('_', '-')} needs --engine ray")
        else:
            if self.ray_actors is not None and self.ray_actors <= 0:
                raise InputError("--ray-actors must be positive")
            if self.ray_address is not None:
                check_address(self.ray_address)
            check_installed()

    def mining(self) -> MiningConfig:
        return MiningConfig(k_weak=self.k_weak, k_hard=self.k_hard, depth=self.hard_depth,
                            margin=self.hard_margin, near_dup=self.near_dup, seed=self.seed)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
