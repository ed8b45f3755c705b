"""Mining weak (random) and hard (nearest-neighbour) negatives for every query.

Hard negatives come from the exact nearest neighbours of the query among the raw passage embeddings
(exact, not HNSW, so the result does not depend on index build order). Walking down the ranking, a
candidate is rejected when it is
  1. a positive of the query;
  2. a near-duplicate of a positive: word-set containment |A∩B| / min(|A|,|B|) >= `near_dup`
     (NQ's corpus holds the same answer as a paragraph and as a 100-word chunk);
  3. above the relative margin: score > `margin` x the best positive's score. Such candidates are
     often unlabelled answers (paraphrased questions, overlapping passages) and would teach the adapter
     to push real answers away (the relative-margin rule of sentence-transformers'
     `util/hard_negatives.py::mine_hard_negatives`; README "The hard-negative margin matters").
Only the top `depth` neighbours are considered; a query may get fewer than `k_hard` (counted).
Weak negatives are `k_weak` uniformly random non-positives, seeded per query so that the result does
not depend on the order in which queries are processed.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedfit.progress import progress
from embedfit.types import Qrels, SplitName, TrainingExample

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class MiningConfig:
    """The tuning knobs of mining (the `--k-hard`, `--hard-margin`, ... options), kept apart from the data.

    Saved in the manifest (`models.<model>.mining`), so the field names are part of the store format.
    """

    k_weak: int = 4  #: random non-positives per query
    k_hard: int = 4  #: nearest-neighbour negatives per query (fewer if the rules reject too many)
    depth: int = 50  #: how many neighbours (beyond the positives) are considered for hard negatives
    margin: float = 0.95  #: reject candidates scoring above margin x the best positive's score
    near_dup: float = 0.8  #: reject candidates whose word containment with a positive is at least this
    seed: int = 13  #: seeds the weak negatives (per query)


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def containment(a: frozenset[str], b: frozenset[str]) -> float:
    """|A∩B| / min(|A|,|B|): 1.0 when one passage's words are all inside the other's."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def top_candidates(scores: np.ndarray, depth: int, passage_ids: Sequence[str]) -> list[int]:
    """Indices of the `depth` best scores, ordered by score desc then passage id (deterministic ties)."""
    depth = min(depth, scores.shape[0])
    idx = np.argpartition(-scores, depth - 1)[:depth] if depth < scores.shape[0] else np.arange(scores.shape[0])
    return sorted(idx.tolist(), key=lambda i: (-float(scores[i]), passage_ids[i]))


@dataclass(frozen=True)
class MiningInput:
    """What negatives are mined from: the embedded queries and passages (rows in id order), the passages'
    texts (for the near-duplicate rule; None when only vectors are known, `embedfit.fit_vectors`: the rule is
    then skipped), the labels, and each query's same-document passages."""

    query_ids: Sequence[str]
    query_vecs: np.ndarray
    passage_ids: Sequence[str]
    passage_vecs: np.ndarray
    passage_texts: Mapping[str, str] | None
    qrels: Qrels
    splits: Mapping[str, SplitName]
    same_doc: Mapping[str, Sequence[str]] = field(default_factory=dict)


def mine_negatives(data: MiningInput, cfg: MiningConfig = MiningConfig(),
                   block: int = 256) -> tuple[list[TrainingExample], dict[str, int]]:
    """One `TrainingExample` per query and counts of what each rule removed.

    Queries are scored against all passages `block` at a time, which bounds memory to block x passages.
    """
    query_ids, query_vecs, passage_ids, passage_vecs = data.query_ids, data.query_vecs, data.passage_ids, data.passage_vecs
    passage_texts, qrels, splits, same_doc = data.passage_texts, data.qrels, data.splits, data.same_doc or {}
    pindex = {pid: i for i, pid in enumerate(passage_ids)}
    words = _WordSets(passage_texts) if passage_texts is not None else None
    stats: Counter[str] = Counter()  # one counter in rule order: its key order is the summary's order
    examples: list[TrainingExample] = []
    for start in progress(range(0, len(query_ids), block), desc="mine negatives", unit="block"):
        scores_block = query_vecs[start : start + block] @ passage_vecs.T
        for row, qid in enumerate(query_ids[start : start + block]):
            scores = scores_block[row]
            positives = [p for p in qrels.get(qid, {}) if p in pindex]
            pos_set = set(positives)
            hard = _hard_negatives(scores, positives, pindex, passage_ids, words, cfg, stats)
            weak = _weak_negatives(qid, pos_set, passage_ids, cfg)
            sd = tuple(p for p in same_doc.get(qid, ()) if p in pindex and p not in pos_set)
            stats["same_doc_negatives"] += len(sd)
            stats["hard_negatives"] += len(hard)
            stats["weak_negatives"] += len(weak)
            examples.append(TrainingExample(
                query_id=qid, split=splits[qid], positive_ids=tuple(sorted(positives)),
                weak_ids=tuple(weak), hard_ids=tuple(hard), same_doc_ids=sd))
    return examples, dict(stats)


class _WordSets:
    """Word sets of passages, computed on first use: only candidates near the top are ever compared."""

    def __init__(self, texts: Mapping[str, str]):
        self._texts = texts
        self._sets: dict[str, frozenset[str]] = {}

    def __getitem__(self, pid: str) -> frozenset[str]:
        if pid not in self._sets:
            self._sets[pid] = word_set(self._texts[pid])
        return self._sets[pid]


def _hard_negatives(scores: np.ndarray, positives: list[str], pindex: Mapping[str, int],
                    passage_ids: Sequence[str], words: _WordSets | None, cfg: MiningConfig,
                    stats: Counter[str]) -> list[str]:
    """Walk down the ranking applying the rules of the module docstring, counting each rejection.

    `depth` is widened by the number of positives, so that positives near the top do not use up the
    candidates a query may draw its hard negatives from.
    """
    pos_set = set(positives)
    best_pos = max((float(scores[pindex[p]]) for p in positives), default=0.0)
    hard: list[str] = []
    for i in top_candidates(scores, cfg.depth + len(positives), passage_ids):
        if len(hard) >= cfg.k_hard:
            break
        pid = passage_ids[i]
        stats["hard_candidates_seen"] += 1
        if pid in pos_set:
            stats["removed_positive"] += 1
        elif words is not None and any(containment(words[pid], words[p]) >= cfg.near_dup for p in positives):
            stats["removed_near_duplicate"] += 1
        elif best_pos > 0 and float(scores[i]) > cfg.margin * best_pos:
            stats["removed_above_margin"] += 1
        else:
            hard.append(pid)
    if len(hard) < cfg.k_hard:
        stats["queries_short_of_hard"] += 1
    return hard


def _weak_negatives(qid: str, pos_set: set[str], passage_ids: Sequence[str], cfg: MiningConfig) -> list[str]:
    """`k_weak` distinct random non-positives from an RNG seeded by (seed, query id).

    Seeding per query keeps a query's negatives the same whatever order or subset the queries come in.
    """
    rng = random.Random(f"{cfg.seed}:{qid}")
    n_pass = len(passage_ids)
    weak: list[str] = []
    available = n_pass - len(pos_set)
    while len(weak) < min(cfg.k_weak, available):
        pid = passage_ids[rng.randrange(n_pass)]
        if pid not in pos_set and pid not in weak:
            weak.append(pid)
    return weak
