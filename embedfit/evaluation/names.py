"""What the report calls each system: a name that says what it is ("query adapter + memory (α 1)",
"raw + BM25 (z-score, w 0.5)"), never the folder an adapter was saved in (that appears once, in its details).

One home for these names: eval labels its systems with them, and the report, the page's Eval tab and the
decision card read the labels eval wrote.
"""
from __future__ import annotations

from collections.abc import Mapping

from embedfit.adapters.adapter import Adapter

FUSION_METHODS = {"zscore": "z-score", "minmax": "min-max", "rrf": "RRF"}


def _num(x) -> str:
    return f"{float(x):g}"


def adapter_name(adapter: Adapter) -> str:
    """"query adapter", "query adapter + memory (α 1)", "query memory (α 0.5)", "NUDGE-N passage move (γ 0.1)",
    "two-sided adapter", or "identity (nothing beat raw on dev)"."""
    c = adapter.config
    if adapter.is_identity:
        return "identity (nothing beat raw on dev)"
    memory = c.memory or {}
    if memory.get("method") == "nudge-n":
        move = f"NUDGE-N passage move (γ {_num(memory.get('gamma'))})"
        return move if c.identity else f"{_sides(c.sides)} + {move}"
    base = None if c.identity else _sides(c.sides) + (f" ({c.kind})" if c.kind != "linear" else "")
    if memory:
        bound = f", bounded at margin {_num(memory['bounded_margin'])}" if memory.get("bounded_margin") is not None else ""
        mem = f"memory (α {_num(memory['alpha'])}{bound})"
        return f"{base} + {mem}" if base else f"query {mem}"
    return base or "identity"


def _sides(sides: str) -> str:
    return {"query": "query adapter", "both": "two-sided adapter"}.get(sides, f"{sides} adapter")


def fusion_name(fusion: Mapping) -> str:
    """"BM25 (z-score, w 0.5)" or "BM25 (RRF, k 60)": how a hybrid fuses its dense side with BM25."""
    method = str(fusion.get("method"))
    if method == "rrf":
        return f"BM25 (RRF, k {fusion.get('rrf_k')})"
    return f"BM25 ({FUSION_METHODS.get(method, method)}, w {_num(fusion.get('weight'))})"


def unique(labels: dict[str, str], folders: Mapping[str, str | None]) -> dict[str, str]:
    """Two systems with the same name (two adapters of one kind) get their folder's name after it."""
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {k: (f"{v} [{folders.get(k)}]" if seen[v] > 1 and folders.get(k) else v) for k, v in labels.items()}
