"""Settings of one ingest run (the CLI fills this; tests build it directly)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.embedding.registry import DEFAULT_MODEL
from core.store import default_store
from ingest.filters import DEFAULT_MAX_WORDS, DEFAULT_MIN_WORDS
from ingest.load_hub import DEFAULT_DATASET
from ingest.negatives import MiningConfig


def default_data() -> str:
    return os.environ.get("NQ_DATA") or DEFAULT_DATASET


def default_cache() -> Path:
    return Path(os.environ.get("NQ_CACHE", ".data/cache"))


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
    min_words: int = DEFAULT_MIN_WORDS
    max_words: int = DEFAULT_MAX_WORDS
    batch_size: int | None = None
    cache_dir: Path | None = field(default_factory=default_cache)
    chroma_host: str | None = None
    chroma_port: int | None = None
    #: write into --store even when it is a non-empty folder that is not a store
    force: bool = False

    def mining(self) -> MiningConfig:
        return MiningConfig(k_weak=self.k_weak, k_hard=self.k_hard, depth=self.hard_depth,
                            margin=self.hard_margin, near_dup=self.near_dup, seed=self.seed)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
