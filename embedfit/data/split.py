"""Train/dev/test split of queries, by one of two policies (`--split-by`, saved with the store).

- `grouped`: no positive passage is shared across splits. Dev and test then measure only queries about
  passages no training query pointed to ("new documents"), where a customization of the passages or of
  the queries has least to offer.
- `random`: i.i.d. over (distinct) questions, as the standard benchmark protocols split. Test queries may
  share relevant passages with training queries, as users' repeated questions do in practice; eval's
  seen/unseen breakdown is what tells the two kinds of test query apart.

Both keep identical questions (after normalisation) together, so one question is never trained on and
then scored. Grouped: queries are grouped into connected components: two queries are linked when they share a positive
passage or when their questions are equal after normalisation (case, punctuation). A whole component
goes to one split, so no positive passage (and no duplicated question) is seen in training and then
scored in dev/test. Components are shuffled with the seed and dealt greedily to the split furthest
below its target share, which lands within one component of the requested fractions.
"""
from __future__ import annotations

import random
from collections import defaultdict

from embedfit.types import SPLITS, Qrels, Queries, SplitName, normalise_for_id


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def query_components(queries: Queries, qrels: Qrels) -> list[list[str]]:
    """Groups of query ids that must stay together, each sorted, in a deterministic order."""
    uf = _UnionFind()
    for qid in queries:
        uf.find("q:" + qid)
        uf.union("q:" + qid, "t:" + normalise_for_id(queries[qid]))
        for pid in qrels.get(qid, {}):
            uf.union("q:" + qid, "p:" + pid)
    groups: dict[str, list[str]] = defaultdict(list)
    for qid in queries:
        groups[uf.find("q:" + qid)].append(qid)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


SPLIT_POLICIES = ("grouped", "random")


def split_queries(queries: Queries, qrels: Qrels, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 13, by: str = "grouped") -> dict[str, SplitName]:
    """Query id -> "train" | "dev" | "test", by policy `by` (module docstring)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    if by not in SPLIT_POLICIES:
        raise ValueError(f"split policy must be one of {', '.join(SPLIT_POLICIES)}, got {by!r}")
    components = query_components(queries, qrels if by == "grouped" else {})
    random.Random(seed).shuffle(components)
    total = sum(len(c) for c in components)
    counts = dict.fromkeys(SPLITS, 0)
    out: dict[str, SplitName] = {}
    for comp in components:
        # the split with the largest shortfall against its target gets this component
        deficit = {s: fractions[i] * total - counts[s] for i, s in enumerate(SPLITS)}
        name = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
        counts[name] += len(comp)
        for qid in comp:
            out[qid] = name
    return out
