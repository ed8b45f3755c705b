"""The search service on a real 300-query store: raw, adapted and hybrid (dense + BM25) rankings against
oracles (numpy cosine, bm25s, the fusion rule written out), gold flags from qrels, rank movements, friendly
handling of bad input, refusal of adapters that do not fit, and what is said when the hybrid side cannot run."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from app_support import (
    ExactOracle,
    assert_same_ranking,
    choice_json,
    copy_store_with_projection,
    exact_top,
    make_adapter,
)

from embedfit.adapters.io import adapter_sha
from embedfit.embed import load_embedder
from embedfit.embed.base import Embedder
from embedfit.errors import MismatchError, StoreError
from embedfit.evaluation.config import EvalConfig
from embedfit.evaluation.evaluate import run_eval
from embedfit.retrieval.fusion import FusionChoice, fusion_path, save_raw_fusion
from embedfit.search.retriever import EMPTY_QUESTION, Retriever, movement
from embedfit.store import chroma_store
from embedfit.store.store import Store

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


#: the fusion of the module's adapter (hybrid "Adapter + BM25") and of the copied store's raw side ("Raw + BM25")
ADAPTER_FUSION = choice_json("zscore", 0.4)
RAW_FUSION = choice_json("minmax", 0.3)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qa") / "adapter"


@pytest.fixture(scope="module")
def query_adapter(adapter_dir, store):
    return make_adapter(adapter_dir, store.root, sides="query", scale=0.02, seed=1, fusion=ADAPTER_FUSION)


@pytest.fixture(scope="module")
def retriever(store, embedder, query_adapter):
    return Retriever(store, MODEL, query_adapter, embedder=embedder)


def copy_store(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".store.lock"))
    return dst


@pytest.fixture(scope="module")
def fused_store(store, tmp_path_factory):
    """A copy of the shared store with a raw+BM25 fusion saved beside it (as ingest saves the one it chose on dev)."""
    root = copy_store(store.root, tmp_path_factory.mktemp("fused") / "store")
    save_raw_fusion(root, MODEL, FusionChoice.from_json(RAW_FUSION), store.model_info(MODEL)["data_fingerprint"])
    return Store(root)


@pytest.fixture(scope="module")
def oracle(store, adapter_dir, query_adapter):
    return ExactOracle(store.root, MODEL, adapter_dir=adapter_dir)


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
    assert res.match is not None and set(res.match.gold_ids) == gold and res.match.split == "test"
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
    assert res.match is None
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
    with pytest.raises(MismatchError, match="another version.*embedfit project"):
        Retriever(Store(root), MODEL, both, embedder=embedder, adapter_sha="sha-2")

    # eval says the same about it (one staleness check, `embedfit.adapters.project.projection_problem`): the real folder's
    # hash is not "sha-1", so eval skips the HNSW figures of this adapter with the very error the app raises
    with pytest.raises(MismatchError) as refused:
        Retriever(Store(root), MODEL, both, embedder=embedder, adapter_sha=adapter_sha(tmp_path / "both"),
                  adapter_dir=str(tmp_path / "both"))
    run_eval(EvalConfig(store=root, out=tmp_path / "report", adapters=[tmp_path / "both"], models=[MODEL],
                                  mse_baseline=False, bm25=False, plots=False, bootstrap_resamples=100))
    details = json.loads((tmp_path / "report" / "details.json").read_text())
    assert details["models"][MODEL]["systems"]["adapted"]["hnsw"] == {"skipped": str(refused.value)}
    assert details["models"][MODEL]["systems"]["raw"]["hnsw"]["collection"] == store.model_info(MODEL)["collection"]

    adapted = Store(root, write=True).collection(both.collection_name)
    adapted.delete(ids=raw_dump.ids[:3])
    with pytest.raises(StoreError, match=f"holds {len(raw_dump.ids) - 3} vectors.*embedfit project"):
        Retriever(Store(root), MODEL, both, embedder=embedder)


@pytest.mark.parametrize("question", [None, "", "   ", "\t\n", "\x00\x01"])
def test_empty_questions_get_a_message_and_no_search(retriever, question):
    res = retriever.search(question, 10)
    assert res.message == EMPTY_QUESTION
    assert res.raw is None and res.adapted is None and res.hybrid is None and "embed" not in res.timings_ms


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
    assert res.k == shown and len(res.raw.hits) == len(res.adapted.hits) == len(res.hybrid.hits) == shown
    assert any("Top-k" in n for n in res.notices) is noticed


def test_result_is_plain_json(retriever, test_questions):
    res = retriever.search(test_questions[0][0], 3)
    obj = json.loads(json.dumps(res.to_json(), ensure_ascii=False))
    assert set(obj) >= {"question", "k", "model", "adapter", "match", "raw", "adapted", "timings_ms", "notices", "message"}
    for side in ("raw", "adapted", "hybrid"):
        assert set(obj[side]["hits"][0]) == {"rank", "id", "title", "text", "score", "gold", "raw_rank", "adapted_rank",
                                             "hybrid_rank", "movement"}
    assert obj["hybrid"]["label"] == "Adapter + BM25"
    assert obj["hybrid"]["fusion"] == {"method": "zscore", "weight": 0.4, "n": 100, "rrf_k": 60}
    assert obj["raw"]["fusion"] is None and obj["adapted"]["fusion"] is None
    t = obj["timings_ms"]
    assert set(t) == {"embed", "raw", "adapted", "lexical", "fuse", "total"}
    assert t["total"] >= t["embed"] + t["raw"] + t["adapted"] + t["lexical"] + t["fuse"]


def test_raw_only_retriever(fused_store, embedder):
    res = Retriever(fused_store, MODEL, embedder=embedder, adapter_note="no adapter").search("who wrote hamlet", 4)
    assert res.adapted is None and res.adapter is None and res.adapter_note == "no adapter"
    assert {h.movement for h in res.raw.hits} == {""}
    assert set(res.timings_ms) == {"embed", "raw", "lexical", "fuse", "total"}
    assert res.hybrid.label == "Raw + BM25" and len(res.hybrid.hits) == 4


def test_concurrent_searches_agree_with_sequential_ones(retriever, test_questions):
    questions = [q for q, _ in test_questions] * 2

    def ids(q):
        res = retriever.search(q, 5)
        return [h.id for h in res.adapted.hits], [h.id for h in res.hybrid.hits]

    sequential = [ids(q) for q in questions]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(ids, questions))
    assert parallel == sequential


# -- hybrid: dense + BM25 ------------------------------------------------------------------------------------

def check_hybrid(res, want, depth):
    """The hybrid side against the oracle's fused ranking, with ranks, gold marks and raw -> hybrid moves."""
    hits = res.hybrid.hits
    assert_same_ranking([h.id for h in hits], want)
    # both fuse the same HNSW candidates; the scores differ only by float32 cosines and the 4 decimals shown
    assert [h.score for h in hits] == pytest.approx([s for _, s in want[:len(hits)]], abs=1e-4 + 5e-5)
    raw_rank = {h.id: h.rank for h in res.raw.hits}
    gold = set(res.match.gold_ids) if res.match else set()
    for h in hits:
        assert h.hybrid_rank == h.rank and h.gold is (h.id in gold)
        assert h.movement == movement(h.raw_rank, h.rank)
        if h.id in raw_rank:
            assert h.raw_rank == raw_rank[h.id]
    fused_ids = [pid for pid, _ in want[:depth]]
    expected_gold = next((i + 1 for i, pid in enumerate(fused_ids) if pid in gold), None)
    assert res.hybrid.gold_rank == expected_gold


@pytest.mark.parametrize("method, weight", [("zscore", 0.4), ("minmax", 0.7), ("rrf", 0.5), ("zscore", 1.0)])
def test_adapter_hybrid_matches_the_oracle(tmp_path, store, embedder, test_questions, method, weight):
    """Adapter + BM25: the adapter's exact top-n (numpy, query times the adapter's matrix) and bm25s's top-n,
    fused by the rule written out in the test, give the same top 10 as the service."""
    fusion = choice_json(method, weight, n=100)
    make_adapter(tmp_path / "a", store.root, sides="query", scale=0.02, seed=3, fusion=fusion, name=f"fused-{method}")
    from embedfit.adapters.io import load_adapter

    r = Retriever(store, MODEL, load_adapter(tmp_path / "a"), embedder=embedder)
    assert r.warnings == [] and r.hybrid_note is None
    oracle = ExactOracle(store.root, MODEL, adapter_dir=tmp_path / "a")
    for question, _ in test_questions:
        res = r.search(question, 10)
        assert res.hybrid.label == "Adapter + BM25" and res.hybrid.fusion["method"] == method
        check_hybrid(res, oracle.hybrid(embedder.embed([question], "query"), question, fusion, adapted=True), r.depth)
    if weight == 1.0:  # BM25 alone: the hybrid column is the BM25 ranking
        q = test_questions[0][0]
        assert [h.id for h in r.search(q, 10).hybrid.hits] == [p for p, _ in oracle.bm25.top(q, 10)]


def test_raw_hybrid_uses_the_fusion_saved_beside_the_store(fused_store, embedder, test_questions):
    r = Retriever(fused_store, MODEL, embedder=embedder)
    assert r.warnings == [] and r.fusion.to_json() == {**{k: RAW_FUSION[k] for k in ("method", "weight", "n")}, "rrf_k": 60}
    oracle = ExactOracle(fused_store.root, MODEL)
    found_gold = 0
    for question, _ in test_questions:
        res = r.search(question, 10)
        assert res.hybrid.label == "Raw + BM25" and res.hybrid.collection.endswith("+ BM25")
        check_hybrid(res, oracle.hybrid(embedder.embed([question], "query"), question, RAW_FUSION), r.depth)
        found_gold += any(h.gold for h in res.hybrid.hits)
    assert found_gold > 0


def test_passages_found_only_by_bm25_have_their_text(retriever, oracle, embedder, store):
    """A question whose words point at one passage the dense side ranks low: the fused column shows it, with the
    title and text of the store's corpus."""
    corpus = store.load_corpus()
    hits = 0
    for pid in sorted(corpus)[:40]:
        title = corpus[pid].title
        question = f"{title} {' '.join(corpus[pid].text.split()[5:12])}"
        res = retriever.search(question, 10)
        dense = {h.id for h in res.adapted.hits}
        for h in res.hybrid.hits:
            assert (h.title, h.text) == (corpus[h.id].title, corpus[h.id].text)
            hits += h.id not in dense
    assert hits > 0, "some fused hits should come from outside the dense top 10"


def test_a_question_bm25_cannot_match_keeps_the_dense_order(retriever):
    res = retriever.search("the of and is xqzv blorpt", 10)  # stopwords and unknown words: BM25 finds nothing
    assert [h.id for h in res.hybrid.hits] == [h.id for h in res.adapted.hits]


def test_missing_raw_fusion_is_said(tmp_path, store, embedder):
    root = copy_store(store.root, tmp_path / "store")
    fusion_path(root, MODEL).unlink(missing_ok=True)  # the shared store may or may not have one
    r = Retriever(Store(root), MODEL, embedder=embedder)
    assert r.hybrid_note is not None and r.warnings == [r.hybrid_note]
    assert "fusion" in r.hybrid_note and f"embedfit ingest --store {root} --lexical-only" in r.hybrid_note
    res = r.search("who wrote hamlet", 5)
    assert res.hybrid is None and len(res.raw.hits) == 5 and "lexical" not in res.timings_ms


def test_missing_lexical_index_is_said(tmp_path, fused_store, embedder, query_adapter):
    root = copy_store(fused_store.root, tmp_path / "store")
    shutil.rmtree(Store(root).lexical_dir)
    for adapter in (None, query_adapter):
        r = Retriever(Store(root), MODEL, adapter, embedder=embedder)
        assert len(r.warnings) == 1 and "BM25 index" in r.warnings[0]
        assert f"embedfit ingest --store {root} --lexical-only" in r.warnings[0]
        res = r.search("who wrote hamlet", 5)
        assert res.hybrid is None and len(res.raw.hits) == 5


def test_adapter_without_fusion_is_said(tmp_path, fused_store, embedder):
    """An adapter fitted without a fusion has no hybrid side (the raw fusion is not its fusion)."""
    old = make_adapter(tmp_path / "old", fused_store.root, sides="query", seed=4, name="old", fusion=None)
    r = Retriever(fused_store, MODEL, old, embedder=embedder, adapter_dir=str(tmp_path / "old"))
    assert len(r.warnings) == 1 and "'old' has no BM25 fusion" in r.warnings[0]
    assert f"embedfit train --store {fused_store.root} --out {tmp_path / 'old'}" in r.warnings[0]
    res = r.search("who wrote hamlet", 5)
    assert res.hybrid is None and res.adapted is not None


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
    with pytest.raises(StoreError, match="embedfit project"):
        Retriever(store, MODEL, both, embedder=embedder)


def test_embedder_of_another_model_is_refused(store):
    class Other(Embedder):
        model_id, dim = "other-model", 384

        def _embed_batch(self, texts):
            return np.ones((len(texts), 384))

    with pytest.raises(MismatchError, match="other-model"):
        Retriever(store, MODEL, embedder=Other())


def test_missing_store_names_the_ingest_command(tmp_path, embedder):
    with pytest.raises(StoreError, match="embedfit ingest"):
        Retriever(Store(tmp_path / "nothing"), MODEL, embedder=embedder)


def test_missing_splits_is_said_not_swallowed(tmp_path, fused_store, embedder, test_questions, caplog):
    """Without splits.json no question can be flagged as a training one: the page must say so."""
    assert Retriever(fused_store, MODEL, embedder=embedder).warnings == []
    copy = copy_store(fused_store.root, tmp_path / "store")
    (copy / "splits.json").unlink()
    with caplog.at_level("WARNING", logger="embedfit.search.retriever"):
        r = Retriever(Store(copy), MODEL, embedder=embedder)
    assert len(r.warnings) == 1 and "splits.json" in r.warnings[0]
    assert any("splits.json" in rec.getMessage() for rec in caplog.records)
    res = r.search(test_questions[0][0], 5)
    assert res.match is not None and res.match.split is None  # still matched to its gold passages, just not to a split


def test_seen_documents_are_flagged_from_the_store_files(retriever, store):
    """`seen`: every gold passage of the matched question is a gold passage of some train question; the oracle
    reads splits.json and qrels.tsv itself."""
    import csv

    splits = json.loads((store.root / "splits.json").read_text())["splits"]
    qrels: dict[str, set[str]] = {}
    with open(store.root / "dataset" / "qrels.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    trained = {p for q, s in splits.items() if s == "train" for p in qrels.get(q, ())}
    queries = store.load_queries()
    flags = {}
    for q in [q for q, s in splits.items() if s != "train"]:
        m = retriever.match(queries[q])
        assert m is not None
        flags[q] = m.seen
        assert m.seen == (set(m.gold_ids) <= trained and bool(m.gold_ids))
    assert retriever.dataset == "nq"
    from embedfit.app.cards import render_status

    seen = [q for q, f in flags.items() if f]
    if seen:  # the random split puts some dev/test questions on training passages
        status = render_status(retriever.search(queries[seen[0]], 5))
        assert "Seen document" in status and "nq question" in status
    unseen = [q for q, f in flags.items() if not f]
    assert "Seen document" not in render_status(retriever.search(queries[unseen[0]], 5))


def test_a_store_re_ingested_under_the_page_is_said_not_served_stale(store, embedder, tmp_path):
    """Issue 22, case 13: the app kept serving a store re-ingested under it (new passages with empty text, gold
    marks from the old qrels) without a word. The manifest's data fingerprint is checked on each search."""
    root = copy_store(store.root, tmp_path / "s")
    r = Retriever(Store(root), MODEL, embedder=embedder)
    question = next(iter(r.queries.values()))
    assert not any("re-ingested" in n for n in r.search(question, 3).notices)
    manifest = json.loads((root / "manifest.json").read_text())
    # rewritten with the same data (another model added): still current, no notice
    (root / "manifest.json").write_text(json.dumps({**manifest, "note": "another model"}))
    assert not any("re-ingested" in n for n in r.search(question, 3).notices)
    (root / "manifest.json").write_text(json.dumps({**manifest, "data_fingerprint": "other-data"}))
    assert any("re-ingested with other data" in n for n in r.search(question, 3).notices)
    (root / "manifest.json").unlink()
    assert any("manifest" in n and "gone" in n for n in r.search(question, 3).notices)


def test_a_chroma_that_went_away_is_one_message_not_a_traceback(retriever):
    """Issue 22, case 12: with the demo's Chroma server dead, every search was a traceback in the app log."""
    import httpx

    from embedfit.errors import StoreError

    class Gone:
        name = "raw-x"

        def query(self, **_):
            raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(StoreError, match="searching 'raw-x' failed \\(ConnectError\\): is the local store .* still there"):
        retriever._query(Gone(), np.zeros((1, 384), np.float32))
