"""The search service on a real 300-query store: raw and adapted rankings against a numpy oracle, gold flags
from qrels, rank movements, friendly handling of bad input, refusal of adapters that do not fit."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from app_support import copy_store_with_projection, exact_top, make_adapter

from adapter.io import adapter_sha
from core import chroma_store
from core.embedding import load_embedder
from core.embedding.base import Embedder
from core.errors import MismatchError, StoreError
from eval.config import EvalConfig
from eval.evaluate import run_eval
from search.retriever import EMPTY_MESSAGE, Retriever, movement
from core.store import Store

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(MODEL)


@pytest.fixture(scope="module")
def store(small_store):
    return Store(small_store[0].store)  # read-only


@pytest.fixture(scope="module")
def raw_dump(store):
    return chroma_store.fetch_all(store.raw_collection(MODEL))


@pytest.fixture(scope="module")
def test_questions(store):
    queries, qrels = store.load_queries(), store.load_qrels()
    return [(queries[q], set(qrels[q])) for q in store.split_query_ids("test")[:8]]


@pytest.fixture(scope="module")
def query_adapter(tmp_path_factory, store):
    return make_adapter(tmp_path_factory.mktemp("qa") / "adapter", store.root, sides="query", scale=0.02, seed=1)


@pytest.fixture(scope="module")
def retriever(store, embedder, query_adapter):
    return Retriever(store, MODEL, query_adapter, embedder=embedder)


@pytest.mark.parametrize("raw_rank, adapted_rank, expected", [
    (3, 1, "↑2"), (1, 3, "↓2"), (2, 2, "="), (None, 1, "new"), (1, None, "out"), (50, 1, "↑49"),
])
def test_movement(raw_rank, adapted_rank, expected):
    assert movement(raw_rank, adapted_rank) == expected


def test_both_sides_match_the_numpy_oracle(retriever, embedder, raw_dump, query_adapter, test_questions):
    for question, _ in test_questions:
        res = retriever.search(question, 10)
        q = embedder.embed([question], "query")
        assert [h.id for h in res.raw.hits] == exact_top(q, raw_dump.ids, raw_dump.embeddings, 10)
        # query-only adapter: projected question against the raw passages
        assert [h.id for h in res.adapted.hits] == exact_top(query_adapter.project_queries(q), raw_dump.ids,
                                                             raw_dump.embeddings, 10)
        assert res.adapted.collection == res.raw.collection
        raw_scores = raw_dump.embeddings @ q.ravel()
        for h in res.raw.hits:
            assert h.score == pytest.approx(raw_scores[raw_dump.ids.index(h.id)], abs=1e-3)


def test_gold_flags_and_split_come_from_the_store(retriever, store, test_questions):
    question, gold = test_questions[0]
    # case, punctuation and spacing do not matter (normalise_for_id)
    res = retriever.search("  " + question.upper() + " ?? ", 10)
    assert res.nq is not None and set(res.nq.gold_ids) == gold and res.nq.split == "test"
    for side in (res.raw, res.adapted):
        assert {h.id for h in side.hits if h.gold} == gold & {h.id for h in side.hits}
        shown = [h.rank for h in side.hits if h.gold]
        if shown:  # the best gold rank is the first gold card; without one it lies deeper than k (or beyond depth)
            assert side.gold_rank == shown[0]
        else:
            assert side.gold_rank is None or side.gold_rank > len(side.hits)
    assert any(h.gold for h in res.raw.hits), "the raw model finds this test question's gold passage in the top 10"


def test_a_new_question_has_no_gold(retriever):
    res = retriever.search("which band recorded an album about a prism on the dark side of the moon", 5)
    assert res.nq is None
    assert not any(h.gold for h in res.raw.hits + res.adapted.hits)
    assert res.raw.gold_rank is None and len(res.raw.hits) == 5


def test_ranks_and_movements_agree_between_columns(retriever, test_questions):
    moved = 0
    for question, _ in test_questions:
        res = retriever.search(question, 10)
        for side, rank_of in ((res.raw, "raw_rank"), (res.adapted, "adapted_rank")):
            assert [h.rank for h in side.hits] == list(range(1, len(side.hits) + 1))
            assert all(getattr(h, rank_of) == h.rank for h in side.hits)
            assert all(h.movement == movement(h.raw_rank, h.adapted_rank) for h in side.hits)
            assert [h.score for h in side.hits] == sorted((h.score for h in side.hits), reverse=True)
        same = {h.id: h.movement for h in res.raw.hits} | {h.id: h.movement for h in res.adapted.hits}
        for h in res.raw.hits + res.adapted.hits:
            assert same[h.id] == h.movement  # one passage, one arrow, in both columns
        moved += sum(h.movement not in ("=", "") for h in res.adapted.hits)
    assert moved > 0, "the perturbed adapter should move some passages"


def test_identity_adapter_changes_nothing(tmp_path, store, embedder, test_questions):
    ident = make_adapter(tmp_path / "id", store.root, sides="query", scale=0.0, name="identity")
    res = Retriever(store, MODEL, ident, embedder=embedder).search(test_questions[1][0], 10)
    assert [h.id for h in res.adapted.hits] == [h.id for h in res.raw.hits]
    assert {h.movement for h in res.adapted.hits} == {"="}


def test_both_sides_adapter_searches_its_projected_collection(tmp_path, store, embedder, raw_dump, test_questions):
    both = make_adapter(tmp_path / "both", store.root, sides="both", scale=0.02, seed=2, name="both-test")
    root = copy_store_with_projection(store.root, tmp_path / "store", both, adapter_sha="sha-1")
    r = Retriever(Store(root), MODEL, both, embedder=embedder, adapter_sha="sha-1")
    projected = both.project_passages(raw_dump.embeddings)
    for question, _ in test_questions[:4]:
        res = r.search(question, 10)
        assert res.adapted.collection == both.collection_name
        q = embedder.embed([question], "query")
        assert [h.id for h in res.adapted.hits] == exact_top(both.project_queries(q), raw_dump.ids, projected, 10)
        assert [h.id for h in res.raw.hits] == exact_top(q, raw_dump.ids, raw_dump.embeddings, 10)
        assert all(h.title is not None and h.text for h in res.adapted.hits)

    # a retrained adapter whose projection was not rewritten is refused, and so is a half-written projection
    with pytest.raises(MismatchError, match="another version.*adapter project"):
        Retriever(Store(root), MODEL, both, embedder=embedder, adapter_sha="sha-2")

    # eval says the same about it (one staleness check, `adapter.project.projection_problem`): the real folder's
    # hash is not "sha-1", so eval skips the HNSW figures of this adapter with the very error the app raises
    with pytest.raises(MismatchError) as refused:
        Retriever(Store(root), MODEL, both, embedder=embedder, adapter_sha=adapter_sha(tmp_path / "both"),
                  adapter_dir=str(tmp_path / "both"))
    outcome = run_eval(EvalConfig(store=root, out=tmp_path / "report", adapters=[tmp_path / "both"], models=[MODEL],
                                  mse_baseline=False, bm25=False, plots=False, bootstrap_resamples=100))
    details = json.loads((outcome.out / "details.json").read_text())
    assert details["models"][MODEL]["systems"]["adapted"]["hnsw"] == {"skipped": str(refused.value)}
    assert details["models"][MODEL]["systems"]["raw"]["hnsw"]["collection"] == store.model_info(MODEL)["collection"]

    adapted = Store(root, write=True).collection(both.collection_name)
    adapted.delete(ids=raw_dump.ids[:3])
    with pytest.raises(StoreError, match=f"holds {len(raw_dump.ids) - 3} vectors.*adapter project"):
        Retriever(Store(root), MODEL, both, embedder=embedder)


@pytest.mark.parametrize("question", [None, "", "   ", "\t\n", "\x00\x01"])
def test_empty_questions_get_a_message_and_no_search(retriever, question):
    res = retriever.search(question, 10)
    assert res.message == EMPTY_MESSAGE
    assert res.raw is None and res.adapted is None and "embed" not in res.timings_ms


def test_long_and_dirty_questions_are_cleaned(retriever):
    res = retriever.search("who\x00 wrote\x1b hamlet " + "x" * 100_000, 3)
    assert len(res.question) == retriever.max_chars and res.question.startswith("who wrote hamlet")
    assert any("control character" in n for n in res.notices)
    assert any("only the first 2,000" in n for n in res.notices)
    assert len(res.raw.hits) == 3


@pytest.mark.parametrize("k, shown, noticed", [(0, 1, True), (-5, 1, True), (1000, 20, True), ("abc", 10, True),
                                               (float("inf"), 10, True), (float("nan"), 10, True), (None, 10, True),
                                               (7.0, 7, False), (20, 20, False)])
def test_k_is_clamped(retriever, k, shown, noticed):
    res = retriever.search("who wrote hamlet", k)
    assert res.k == shown and len(res.raw.hits) == shown and len(res.adapted.hits) == shown
    assert any("Top-k" in n for n in res.notices) is noticed


def test_result_is_plain_json(retriever, test_questions):
    res = retriever.search(test_questions[0][0], 3)
    obj = json.loads(json.dumps(res.to_json(), ensure_ascii=False))
    assert set(obj) >= {"question", "k", "model", "adapter", "nq", "raw", "adapted", "timings_ms", "notices", "message"}
    assert set(obj["raw"]["hits"][0]) == {"rank", "id", "title", "text", "score", "gold", "raw_rank", "adapted_rank",
                                          "movement"}
    assert set(obj["timings_ms"]) == {"embed", "raw", "adapted", "total"}
    assert obj["timings_ms"]["total"] >= obj["timings_ms"]["embed"] + obj["timings_ms"]["raw"]


def test_raw_only_retriever(store, embedder):
    res = Retriever(store, MODEL, embedder=embedder, adapter_note="no adapter").search("who wrote hamlet", 4)
    assert res.adapted is None and res.adapter is None and res.adapter_note == "no adapter"
    assert {h.movement for h in res.raw.hits} == {""} and set(res.timings_ms) == {"embed", "raw", "total"}


def test_concurrent_searches_agree_with_sequential_ones(retriever, test_questions):
    questions = [q for q, _ in test_questions] * 2
    sequential = [[h.id for h in retriever.search(q, 5).adapted.hits] for q in questions]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda q: [h.id for h in retriever.search(q, 5).adapted.hits], questions))
    assert parallel == sequential


# -- refusals ------------------------------------------------------------------------------------------------

def test_adapter_for_another_model_is_refused(tmp_path, store, embedder):
    other = make_adapter(tmp_path / "a", store.root, base_model="paraphrase-MiniLM-L3-v2")
    with pytest.raises(MismatchError, match="paraphrase-MiniLM-L3-v2"):
        Retriever(store, MODEL, other, embedder=embedder)


def test_adapter_of_another_dimension_is_refused(tmp_path, store, embedder):
    small = make_adapter(tmp_path / "a", store.root, dim=128)
    with pytest.raises(MismatchError, match="128-d"):
        Retriever(store, MODEL, small, embedder=embedder)


def test_both_sides_adapter_without_its_collection_is_refused(tmp_path, store, embedder):
    both = make_adapter(tmp_path / "a", store.root, sides="both")
    with pytest.raises(StoreError, match="adapter project"):
        Retriever(store, MODEL, both, embedder=embedder)


def test_embedder_of_another_model_is_refused(store):
    class Other(Embedder):
        model_id, dim = "other-model", 384

        def _embed_batch(self, texts):
            return np.ones((len(texts), 384))

    with pytest.raises(MismatchError, match="other-model"):
        Retriever(store, MODEL, embedder=Other())


def test_missing_store_names_the_ingest_command(tmp_path, embedder):
    with pytest.raises(StoreError, match="python -m ingest"):
        Retriever(Store(tmp_path / "nothing"), MODEL, embedder=embedder)


def test_missing_splits_is_said_not_swallowed(tmp_path, store, embedder, test_questions, caplog):
    """Without splits.json no question can be flagged as a training one: the page must say so."""
    assert Retriever(store, MODEL, embedder=embedder).warnings == []
    copy = tmp_path / "store"
    shutil.copytree(store.root, copy, ignore=shutil.ignore_patterns(".store.lock"))
    (copy / "splits.json").unlink()
    with caplog.at_level("WARNING", logger="search.retriever"):
        r = Retriever(Store(copy), MODEL, embedder=embedder)
    assert len(r.warnings) == 1 and "splits.json" in r.warnings[0]
    assert any("splits.json" in rec.getMessage() for rec in caplog.records)
    res = r.search(test_questions[0][0], 5)
    assert res.nq is not None and res.nq.split is None  # still matched to its gold passages, just not to a split
