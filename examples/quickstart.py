"""The whole study on BEIR SciFact, through embedfit's public API: data, negatives, raw embeddings, the
customization, before and after (with plots), and one question shown raw and customized side by side.

    python examples/quickstart.py                       # the shared SciFact data (SHARED_DATA/scifact)
    python examples/quickstart.py --limit 200           # a quick look at the first 200 claims
    python examples/quickstart.py --data path/to/beir   # any BEIR folder

Everything goes under --work (default .data/quickstart). Rerunning re-embeds nothing (the embedding cache).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import embedfit as ef
from embedfit.settings import shared_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(shared_data("scifact")), help="a BEIR folder (default: the shared SciFact)")
    p.add_argument("--work", type=Path, default=Path(".data/quickstart"), help="where the store, adapter and report go")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--limit", type=int, default=None, help="only the first N queries and their passages")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    print("1. data: load, clean, split the claims; embed the abstracts; store them in Chroma; index them for BM25")
    store = ef.ingest(a.data, a.work / "store", a.model, limit=a.limit)
    s = store.last_ingest
    print(f"   {s['passages']} passages, {s['queries']} queries (train/dev/test {s['queries_per_split']}), "
          f"{s['dim']}-d vectors of {s['model']} in collection {s['collection']}")

    print("2. negatives: for each training query, passages that look right but are not (hard) and random ones (weak)")
    print(f"   mined: {s['mining']}")
    example = next(e for e in store.load_examples(a.model) if e.split == "train" and e.hard_ids)
    corpus, queries = store.load_corpus(), store.load_queries()
    print(f"   query:         {queries[example.query_id][:100]}")
    print(f"   positive:      {corpus[example.positive_ids[0]].title[:100]}")
    print(f"   hard negative: {corpus[example.hard_ids[0]].title[:100]}")

    print("3. raw embeddings: how the frozen model does on its own (test split, with baselines and intervals)")
    raw = ef.evaluate(store, mse_baseline=False, hnsw=False, plots=False)
    print(raw.summary())

    print("4. customize: identity, query memory, query adapter and both, chosen on held-out labelled queries")
    result = ef.fit(store, a.model)
    print(result.table)
    print(result.summary())
    result.save(a.work / "adapter", force=False)
    if not result.helped:
        print("   nothing beat the raw embeddings on the queries that decided: the adapter is the identity")

    print("5. before and after: raw vs customized vs baselines on test claims, seen and unseen abstracts apart")
    ev = ef.evaluate(store, [result.adapter])
    print(ev.summary())
    out = ev.write(a.work / "report")
    figures = sorted(str(f.relative_to(out)) for f in out.glob("figures/*/*.png"))
    print(f"   report: {out / 'report.md'}; figures: {', '.join(figures)}")

    print("6. one question, raw and customized side by side")
    qid = next(q for q in store.split_query_ids("test") if q in queries)
    hits = ef.Retriever(store, adapter=a.work / "adapter").search(queries[qid], k=3)
    print(f"   {hits.question[:100]}")
    for side in ("raw", "adapted"):
        col = getattr(hits, side)
        print(f"   {side}:")
        for h in col.hits:
            print(f"     {h.rank}. {'[answer] ' if h.gold else ''}{h.title[:70]} ({h.score:.3f}{', ' + h.movement if h.movement else ''})")


if __name__ == "__main__":
    main()
