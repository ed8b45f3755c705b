"""One rule for repeated ids in every loader: the same id with different content is
refused, naming the file and both lines; an identical repeat is merged and counted. Real rows of the
shared NQ data, with one line repeated or altered."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from embedfit.data.load_beir import load_beir
from embedfit.data.load_pairs import load_pairs, pairs_from_rows
from embedfit.data.load_simplified import load_simplified
from embedfit.errors import DataError
from embedfit.evaluation.heldout import read_queries_file
from embedfit.pipeline.ingest import format_summary, run_ingest


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def head(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.fixture
def beir(nq_dir, tmp_path):
    """A 5-query BEIR folder cut from the shared data (corpus holds each query's positives)."""
    queries = head(nq_dir / "queries.jsonl", 5)
    qids = {q["id"] for q in queries}
    rows = [ln.split("\t") for ln in (nq_dir / "qrels.tsv").read_text("utf-8").splitlines()[1:]]
    qrels = [r for r in rows if r[0] in qids]
    pids = {r[1] for r in qrels}
    corpus = []
    with (nq_dir / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["id"] in pids:
                corpus.append(obj)
    folder = tmp_path / "beir"
    folder.mkdir()
    jsonl(folder / "queries.jsonl", queries)
    jsonl(folder / "corpus.jsonl", corpus)
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels),
                                      encoding="utf-8")
    return folder, queries, corpus


def lines_named(message: str) -> list[int]:
    return [int(x) for x in re.findall(r"(?::|line )(\d+)", message)]


def test_beir_passage_id_with_two_texts_is_refused_naming_both_lines(beir):
    folder, _, corpus = beir
    other = dict(corpus[0], text="A different text that a careless export gave the same id.")
    jsonl(folder / "corpus.jsonl", corpus + [other])
    with pytest.raises(DataError) as exc:
        load_beir(folder)
    msg = str(exc.value)
    assert str(folder / "corpus.jsonl") in msg and repr(corpus[0]["id"]) in msg
    assert sorted(lines_named(msg)) == [1, len(corpus) + 1]


def test_beir_query_id_with_two_questions_is_refused(beir):
    folder, queries, _ = beir
    jsonl(folder / "queries.jsonl", queries + [dict(queries[2], text="another question entirely")])
    with pytest.raises(DataError, match=r"queries.jsonl:6: query id .* at line 3"):
        load_beir(folder)


def test_beir_identical_repeats_are_merged_and_counted(beir):
    folder, queries, corpus = beir
    jsonl(folder / "corpus.jsonl", corpus + [corpus[0], corpus[1]])
    jsonl(folder / "queries.jsonl", queries + [queries[0]])
    ds = load_beir(folder)
    assert len(ds.corpus) == len(corpus) and len(ds.queries) == len(queries)
    assert ds.skipped == {"duplicate_passage_identical": 2, "duplicate_query_identical": 1}


def test_pairs_given_passage_id_with_two_texts_is_refused(nq_dir, tmp_path):
    rows = head(nq_dir / "pairs.jsonl", 4)
    rows = [dict(r, passage_id=f"p{i}") for i, r in enumerate(rows)]
    rows.append(dict(rows[3], id="another-query", passage="Not the passage p3 was given to."))
    with pytest.raises(DataError, match=r"pairs.jsonl:5: passage id 'p3' .* at line 4"):
        load_pairs(jsonl(tmp_path / "pairs.jsonl", rows))


def test_pairs_given_query_id_with_two_questions_is_refused(nq_dir, tmp_path):
    rows = head(nq_dir / "pairs.jsonl", 3)
    rows.append(dict(rows[1], query="a different question under the same id"))
    with pytest.raises(DataError, match=r"pairs.jsonl:4: query id .* at line 2"):
        load_pairs(jsonl(tmp_path / "pairs.jsonl", rows))


def test_pairs_first_passage_wins_no_more(nq_dir, tmp_path):
    """The old behaviour: a pairs file kept the first text of a repeated id, a BEIR folder the last."""
    rows = head(nq_dir / "pairs.jsonl", 2)
    rows = [dict(r, passage_id="same") for r in rows]  # two queries, two texts, one passage id
    with pytest.raises(DataError, match="passage id 'same'"):
        load_pairs(jsonl(tmp_path / "pairs.jsonl", rows))


def test_pairs_repeated_rows_count_and_extra_positives_do_not(nq_dir, tmp_path):
    rows = head(nq_dir / "pairs.jsonl", 3)
    extra = {k: v for k, v in rows[0].items() if k != "passage_id"}
    extra["passage"] = "A second positive for the first question, given as its own row."
    ds = load_pairs(jsonl(tmp_path / "pairs.jsonl", rows + [rows[2], extra]))
    assert ds.skipped == {"duplicate_pair": 1}
    assert len(ds.queries) == 3 and len(ds.qrels[rows[0]["id"]]) == 2


def test_rows_without_ids_merge_equal_texts(nq_dir):
    rows = head(nq_dir / "pairs.jsonl", 2)
    table = [{"q": rows[0]["query"], "p": rows[0]["passage"]}, {"q": rows[0]["query"].upper(), "p": rows[1]["passage"]}]
    ds = pairs_from_rows(table, "hub:test", {"query": "q", "passage": "p"})
    assert len(ds.queries) == 1 and len(ds.corpus) == 2 and ds.skipped == {}  # one question, two positives


@pytest.fixture
def simplified_records(nq_dir) -> list[dict]:
    with (nq_dir / "simplified_sample.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_simplified_example_id_with_two_questions_is_refused(simplified_records, tmp_path):
    changed = copy.deepcopy(simplified_records[1])
    changed["question_text"] = "a different question under the same example id"
    path = jsonl(tmp_path / "s.jsonl", [simplified_records[1], simplified_records[0], changed])
    with pytest.raises(DataError, match=r"s.jsonl:3: query id .* at line 1"):
        load_simplified(path)


def test_simplified_identical_example_is_merged_and_counted(simplified_records, tmp_path):
    ds = load_simplified(jsonl(tmp_path / "s.jsonl", [simplified_records[1], simplified_records[1]]))
    assert len(ds.queries) == 1 and ds.skipped.get("duplicate_query_identical") == 1


def test_heldout_queries_file_follows_the_same_rule(tmp_path):
    same = jsonl(tmp_path / "q1.jsonl", [{"_id": "a", "text": "x y"}, {"_id": "b", "text": "z"}, {"_id": "a", "text": "x y"}])
    assert read_queries_file(same) == {"a": "x y", "b": "z"}
    other = jsonl(tmp_path / "q2.jsonl", [{"_id": "a", "text": "x y"}, {"_id": "a", "text": "w"}])
    with pytest.raises(DataError, match=r"q2.jsonl:2: query id 'a' .* at line 1"):
        read_queries_file(other)


def test_the_ingest_summary_prints_the_count(beir, tmp_path):
    from embedfit.pipeline.config import IngestConfig

    folder, queries, corpus = beir
    jsonl(folder / "corpus.jsonl", corpus + [corpus[0]])
    summary = run_ingest(IngestConfig(data=str(folder), store=tmp_path / "store", model="paraphrase-MiniLM-L3-v2",
                                      cache_dir=None, k_hard=1, k_weak=1))
    assert "duplicate_passage_identical 1" in format_summary(summary)
    assert summary["passages"] == len(corpus)


def test_beir_qrels_that_disagree_on_a_pair_are_refused_and_repeats_counted(beir):
    """Issue 22, case 21: qrels rows that disagree for the same (query, passage) were last-wins, uncounted."""
    folder, _, _ = beir
    rows = (folder / "qrels.tsv").read_text().splitlines()
    header, first = rows[0], rows[1]
    q, p, _ = first.split("\t")
    (folder / "qrels.tsv").write_text("\n".join([header, *rows[1:], first]) + "\n")  # the same judgement again
    ds = load_beir(folder)
    assert ds.skipped.get("qrel_repeated_row") == 1 and ds.qrels[q][p] >= 1
    (folder / "qrels.tsv").write_text("\n".join([header, *rows[1:], f"{q}\t{p}\t0"]) + "\n")  # and now another one
    with pytest.raises(DataError, match=rf"qrels.tsv:{len(rows) + 1}: query '{q}' and passage '{p}' are judged 0 here "
                                        rf"but 1 at .*qrels.tsv:2"):
        load_beir(folder)
