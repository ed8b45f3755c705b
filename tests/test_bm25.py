"""BM25 baseline on toys whose answer is obvious, and on real NQ passages."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.types import Passage
from search.lexical import bm25_search
from core.metrics import retrieval_metrics

TOY = {
    "p_cat": Passage("Cats", "The domestic cat is a small carnivorous mammal that purrs."),
    "p_volcano": Passage("Mount Etna", "Etna is an active stratovolcano on the east coast of Sicily."),
    "p_python": Passage("Python", "Python is a programming language created by Guido van Rossum."),
    "p_tea": Passage("Tea", "Tea is an aromatic beverage prepared by pouring hot water over leaves."),
}


def test_obvious_passage_ranks_first():
    queries = {"q1": "which volcano is on sicily", "q2": "who created the python programming language",
               "q3": "Do CATS PURR?"}
    results = bm25_search(TOY, queries, k=10)
    assert [max(results[q], key=results[q].get) for q in queries] == ["p_volcano", "p_python", "p_cat"]
    assert all(isinstance(s, float) and s > 0 for r in results.values() for s in r.values())


def test_title_is_indexed():
    # "zanzibar" occurs only in the title of "a"
    corpus = {"a": Passage("Zanzibar", "An island in the Indian Ocean."), "b": Passage("Other", "An island elsewhere.")}
    assert list(bm25_search(corpus, {"q": "zanzibar"}, k=5)["q"]) == ["a"]


def test_at_most_k_results_and_k_larger_than_corpus():
    corpus = {f"p{i}": Passage("", f"river number {i} flows") for i in range(20)}
    results = bm25_search(corpus, {"q": "river flows", "r": "river 3"}, k=3)
    assert all(len(r) <= 3 for r in results.values()) and len(results["q"]) == 3
    assert len(bm25_search(corpus, {"q": "river"}, k=1000)["q"]) == 20


@pytest.mark.parametrize("query", ["", "   ", "the and of", "zzzqqq", "\x00", "\u200f", "🙂"])
def test_queries_without_known_terms_get_no_results(query):
    assert bm25_search(TOY, {"q": query}, k=5) == {"q": {}}


def test_empty_inputs():
    assert bm25_search(TOY, {}, k=5) == {}
    with pytest.raises(ValueError):
        bm25_search({}, {"q": "cat"})
    with pytest.raises(ValueError):
        bm25_search(TOY, {"q": "cat"}, k=0)


def _load_nq_subset(nq_dir: Path, n_passages: int):
    corpus = {}
    with open(nq_dir / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["id"]] = Passage(row["title"], row["text"])
            if len(corpus) == n_passages:
                break
    qrels: dict[str, dict[str, int]] = {}
    with open(nq_dir / "qrels.tsv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["corpus-id"] in corpus and int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    with open(nq_dir / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["id"] in qrels:
                queries[row["id"]] = row["text"]
    return corpus, queries, qrels


def test_recall_on_real_nq_passages(nq_dir):
    # The first 500 passages and the 516 queries answered by one of them. Chance Recall@10 is
    # 10/500 = 0.02. NQ questions share content words with their answer passage (and its title),
    # and among only 500 candidates BM25 finds almost all of them: we saw Recall@10 = 0.962
    # (Recall@1 0.859). The bound 0.8 fails on a broken tokenizer, index or id mapping, yet leaves
    # room for scoring changes between bm25s versions.
    corpus, queries, qrels = _load_nq_subset(nq_dir, 500)
    assert len(corpus) == 500 and len(queries) >= 400
    results = bm25_search(corpus, queries, k=100)
    assert all(len(r) <= 100 for r in results.values())
    metrics = retrieval_metrics(qrels, results)
    assert metrics["Recall@10"] > 0.8
    assert metrics["Recall@100"] >= metrics["Recall@10"] >= metrics["Recall@1"] > 0.02
