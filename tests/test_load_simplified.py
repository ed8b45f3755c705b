"""`load_simplified` on the two real NQ simplified records, on every kind of broken file, and on
arbitrary bytes and arbitrary records.

Independent oracles for the real record: the raw JSON itself (the annotated token span and the short
answer, read here with a naive tag strip), and the shared files, built by other people from other
sources: `qrels.tsv` names the positive's id for this very question, `corpus.jsonl` holds its text
(from DPR, in natural spacing) and its title, `queries.jsonl` its question.
"""
from __future__ import annotations

import copy
import gzip
import json
import logging
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedfit.data.load_simplified import DEFAULT_MAX_WORDS, DEFAULT_MIN_WORDS, load_simplified, word_count
from embedfit.errors import DataError, InputError
from embedfit.types import Dataset, Passage

logger = logging.getLogger(__name__)

QUERY_ID = "nq_5328212470870865242"  # the record with a long answer (candidate 15)
NO_ANSWER_ID = "nq_-8062182676792486818"  # the record without one
EXAMPLE_REASONS = ("no_long_answer", "empty_query", "positive_too_short", "positive_too_long", "duplicate_query_identical")
NAIVE_TAG = re.compile(r"^<[^<>\s]+>$")


def alnum(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def naive_text(tokens: list[str]) -> str:
    return " ".join(t for t in tokens if not NAIVE_TAG.match(t))


@pytest.fixture(scope="module")
def sample(nq_dir) -> Path:
    return nq_dir / "simplified_sample.jsonl"


@pytest.fixture(scope="module")
def records(sample) -> list[dict]:
    with sample.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def loaded(sample) -> Dataset:
    return load_simplified(sample)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- the real records -----------------------------------------------------------------------------


def test_real_sample_queries_and_skips(loaded, sample) -> None:
    assert loaded.source == f"nq-simplified:{sample}"
    assert loaded.queries == {QUERY_ID: "how i.met your mother who is the mother"}
    assert NO_ANSWER_ID not in loaded.queries and NO_ANSWER_ID not in loaded.same_doc
    assert loaded.skipped["no_long_answer"] == 1
    assert sum(loaded.skipped.get(r, 0) for r in EXAMPLE_REASONS) == 1
    assert set(loaded.qrels) == set(loaded.queries) == set(loaded.same_doc)


def test_real_positive_matches_the_annotated_span(loaded, records) -> None:
    record = records[1]
    answer = record["annotations"][0]["long_answer"]
    assert answer["candidate_index"] == 15
    tokens = record["document_text"].split(" ")
    [(pid, relevance)] = loaded.qrels[QUERY_ID].items()
    assert relevance == 1
    passage = loaded.corpus[pid]
    # Same letters and digits as the raw span with its tags stripped naively, and the same words.
    raw_span = naive_text(tokens[answer["start_token"]:answer["end_token"]])
    assert alnum(passage.text) == alnum(raw_span)
    assert {alnum(w) for w in passage.text.split()} - {""} == {alnum(w) for w in raw_span.split()} - {""}
    assert "<" not in passage.text and "``" not in passage.text and " ," not in passage.text
    # The short answer lies inside the positive.
    for short in record["annotations"][0]["short_answers"]:
        phrase = " ".join(tokens[short["start_token"]:short["end_token"]])
        assert phrase == "Tracy McConnell"
        assert phrase in passage.text
    assert "The Mother is played by Cristin Milioti." in passage.text


def test_real_positive_agrees_with_the_shared_files(loaded, nq_dir) -> None:
    """qrels.tsv, corpus.jsonl and queries.jsonl were built from other sources (QED, DPR) by others."""
    qrels = [line.split("\t") for line in (nq_dir / "qrels.tsv").read_text(encoding="utf-8").splitlines()]
    shared_pids = {pid for qid, pid, _ in qrels if qid == QUERY_ID}
    assert set(loaded.qrels[QUERY_ID]) == shared_pids == {"p_c1d13fdebccddfe6"}
    with (nq_dir / "corpus.jsonl").open(encoding="utf-8") as f:
        shared = next(json.loads(line) for line in f if '"p_c1d13fdebccddfe6"' in line)
    mine = loaded.corpus["p_c1d13fdebccddfe6"]
    assert mine.title == shared["title"] == "The Mother (How I Met Your Mother)"
    assert mine.text == shared["text"]  # NQ's token-spaced span, cleaned, equals DPR's natural text
    with (nq_dir / "queries.jsonl").open(encoding="utf-8") as f:
        shared_query = next(json.loads(line)["text"] for line in f if QUERY_ID in line)
    assert loaded.queries[QUERY_ID] == shared_query


def test_real_same_document_negatives(loaded, records) -> None:
    record = records[1]
    tokens = record["document_text"].split(" ")
    answer = record["annotations"][0]["long_answer"]
    [pid] = loaded.qrels[QUERY_ID]
    negatives = loaded.same_doc[QUERY_ID]
    assert pid not in negatives and len(set(negatives)) == len(negatives)
    top_level = [c for c in record["long_answer_candidates"] if c["top_level"]]
    start, end = answer["start_token"], answer["end_token"]
    others = [c for c in top_level if c["end_token"] <= start or c["start_token"] >= end]
    assert len(others) == len(top_level) - 1  # only the answer itself overlaps the answer here
    # Every other top-level candidate is either a negative or was counted as filtered.
    filtered = loaded.skipped.get("same_doc_too_short", 0) + loaded.skipped.get("same_doc_too_long", 0)
    assert len(negatives) + filtered == len(others)
    assert len(negatives) >= 20
    page = alnum(naive_text(tokens))
    answer_key = alnum(loaded.corpus[pid].text)
    naive_others = {alnum(naive_text(tokens[c["start_token"]:c["end_token"]])) for c in others}
    for nid in negatives:
        neg = loaded.corpus[nid]
        assert neg.title == "The Mother (How I Met Your Mother)"
        key = alnum(neg.text)
        assert key in naive_others and key in page
        assert answer_key not in key and key not in answer_key
        assert DEFAULT_MIN_WORDS <= word_count(neg.text) <= DEFAULT_MAX_WORDS
    # The infobox table is the first negative: rows on lines, cells joined by " | ".
    assert loaded.corpus[negatives[0]].text.startswith("Tracy McConnell\nHow I Met Your Mother character\n")


def test_gzip_input_gives_the_same_dataset(loaded, sample, tmp_path) -> None:
    gz = tmp_path / "sample.jsonl.gz"
    gz.write_bytes(gzip.compress(sample.read_bytes()))
    other = load_simplified(gz)
    assert other.source == f"nq-simplified:{gz}"
    assert (other.corpus, other.queries, other.qrels, other.same_doc, other.skipped) == (
        loaded.corpus, loaded.queries, loaded.qrels, loaded.same_doc, loaded.skipped)
    # Gzip is recognised by its magic bytes, whatever the name.
    renamed = tmp_path / "sample.jsonl"
    renamed.write_bytes(gz.read_bytes())
    assert load_simplified(renamed).qrels == loaded.qrels


def test_bom_crlf_and_blank_lines_are_fine(loaded, sample, tmp_path) -> None:
    lines = sample.read_bytes().splitlines()
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n\r\n".join(lines) + b"\r\n   \r\n")
    other = load_simplified(path)
    assert (other.corpus, other.queries, other.qrels, other.same_doc) == (
        loaded.corpus, loaded.queries, loaded.qrels, loaded.same_doc)


def test_length_filters(loaded, sample) -> None:
    [pid] = loaded.qrels[QUERY_ID]
    n = word_count(loaded.corpus[pid].text)
    assert n == 79  # the words of the shared corpus text of this passage
    too_short = load_simplified(sample, min_words=n + 1, max_words=10_000)
    assert too_short.queries == {} and too_short.skipped["positive_too_short"] == 1
    too_long = load_simplified(sample, min_words=1, max_words=n - 1)
    assert too_long.queries == {} and too_long.skipped["positive_too_long"] == 1
    exact = load_simplified(sample, min_words=n, max_words=n)
    assert set(exact.qrels[QUERY_ID]) == {pid}
    assert all(word_count(exact.corpus[i].text) == n for i in exact.same_doc[QUERY_ID])
    # A wider range admits more negatives than the defaults, a narrower one fewer.
    wide = load_simplified(sample, min_words=1, max_words=100_000)
    narrow = load_simplified(sample, min_words=50, max_words=150)
    assert len(narrow.same_doc[QUERY_ID]) < len(loaded.same_doc[QUERY_ID]) <= len(wide.same_doc[QUERY_ID])
    for ds, lo, hi in ((wide, 1, 100_000), (narrow, 50, 150)):
        assert all(lo <= word_count(ds.corpus[i].text) <= hi for i in ds.same_doc[QUERY_ID])


@pytest.mark.parametrize("min_words,max_words", [(0, 10), (10, 5), (True, 10), (-1, -1)])
def test_bad_length_options(sample, min_words, max_words) -> None:
    with pytest.raises(InputError):
        load_simplified(sample, min_words=min_words, max_words=max_words)


def test_other_annotators_answers_are_not_negatives(records, tmp_path) -> None:
    """A candidate that another annotator chose as the long answer must not become a negative."""
    record = copy.deepcopy(records[1])
    second = record["long_answer_candidates"][16]  # the paragraph after the answer, also top-level
    assert second["top_level"]
    record["annotations"].append({"long_answer": {**{k: second[k] for k in ("start_token", "end_token")},
                                                  "candidate_index": 16}, "short_answers": []})
    ds = load_simplified(write_jsonl(tmp_path / "two.jsonl", [record]))
    baseline = load_simplified(write_jsonl(tmp_path / "one.jsonl", [records[1]]))
    assert ds.qrels == baseline.qrels
    # Negatives come in page order: [0] is the infobox (candidate 0), [1] is candidate 16.
    assert set(ds.same_doc[QUERY_ID]) == set(baseline.same_doc[QUERY_ID]) - {baseline.same_doc[QUERY_ID][1]}


def test_duplicate_and_empty_questions_are_counted(records, tmp_path) -> None:
    blank = copy.deepcopy(records[1])
    blank["question_text"], blank["example_id"] = " \t\u200b ", 7
    ds = load_simplified(write_jsonl(tmp_path / "dup.jsonl", [records[1], records[1], blank, records[0]]))
    assert list(ds.queries) == [QUERY_ID]
    assert ds.skipped["duplicate_query_identical"] == 1
    assert ds.skipped["empty_query"] == 1
    assert ds.skipped["no_long_answer"] == 1


# --- broken files ---------------------------------------------------------------------------------


def _mutate(path: list, value):
    """A function that sets `record[path...] = value` (or deletes it when value is `DELETE`)."""

    def apply(record: dict) -> dict:
        record = copy.deepcopy(record)
        target = record
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return record

    return apply


DELETE = object()
FIELD_ERRORS = {
    "document_text not str": _mutate(["document_text"], 123),
    "annotations not list": _mutate(["annotations"], {}),
    "annotation not object": _mutate(["annotations", 0], "x"),
    "long_answer not object": _mutate(["annotations", 0, "long_answer"], None),
    "candidates not list": _mutate(["long_answer_candidates"], "x"),
    "candidate not object": _mutate(["long_answer_candidates", 0], 5),
    "question missing": _mutate(["question_text"], DELETE),
    "question null": _mutate(["question_text"], None),
    "example_id bool": _mutate(["example_id"], True),
    "example_id list": _mutate(["example_id"], [1]),
    "example_id odd string": _mutate(["example_id"], "a b/../c"),
    "url not str": _mutate(["document_url"], 5),
    "start_token str": _mutate(["annotations", 0, "long_answer", "start_token"], "212"),
    "start_token float": _mutate(["annotations", 0, "long_answer", "start_token"], 212.0),
    "top_level not bool": _mutate(["long_answer_candidates", 3, "top_level"], "yes"),
    "end_token out of range": _mutate(["annotations", 0, "long_answer", "end_token"], 10**6),
    "start after end": _mutate(["annotations", 0, "long_answer", "start_token"], 400),
    "negative candidate start": _mutate(["long_answer_candidates", 2, "start_token"], -5),
    "candidate end out of range": _mutate(["long_answer_candidates", 36, "end_token"], 3949),
    "candidate_index out of range": _mutate(["annotations", 0, "long_answer", "candidate_index"], 37),
}


@pytest.mark.parametrize("name", list(FIELD_ERRORS))
def test_wrong_fields_name_file_and_line(records, tmp_path, name) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [records[0], FIELD_ERRORS[name](records[1])])
    with pytest.raises(DataError) as err:
        load_simplified(path)
    assert (err.value.path, err.value.line) == (str(path), 2)
    assert str(err.value).startswith(f"{path}:2: ")


def _truncated_gzip(tmp_path: Path, sample: Path) -> Path:
    data = gzip.compress(sample.read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_gzip(tmp_path: Path, sample: Path) -> Path:
    data = bytearray(gzip.compress(sample.read_bytes()))
    data[200:260] = b"\x00" * 60
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(bytes(data))
    return path


def _write(name: str, data: bytes):
    def build(tmp_path: Path, sample: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return build


def _truncated_json(tmp_path: Path, sample: Path) -> Path:
    first, second = sample.read_bytes().splitlines()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(first + b"\n" + second[: len(second) // 2])
    return path


def _plain_named_gz(tmp_path: Path, sample: Path) -> Path:
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(sample.read_bytes())
    return path


def _directory(tmp_path: Path, sample: Path) -> Path:
    path = tmp_path / "folder.jsonl"
    path.mkdir()
    return path


FILE_ERRORS = {  # name -> (builder, expected line or None, a word the message must contain)
    "missing": (lambda tmp_path, sample: tmp_path / "nope.jsonl", None, "not found"),
    "directory": (_directory, None, "folder"),
    "empty": (_write("empty.jsonl", b""), None, "empty"),
    "blank lines only": (_write("blank.jsonl", b"\n \r\n\t\n"), None, "empty"),
    "empty gzip": (_write("empty.jsonl.gz", gzip.compress(b"")), None, "empty"),
    "plain text named .gz": (_plain_named_gz, None, "gzip"),
    "truncated gzip": (_truncated_gzip, 1, "gzip"),
    "corrupt gzip": (_corrupt_gzip, 1, "gzip"),
    "truncated json": (_truncated_json, 2, "JSON"),
    "not utf-8": (_write("latin1.jsonl", b'{"document_text": "caf\xe9"}\n'), 1, "UTF-8"),
    "not an object": (_write("list.jsonl", b"\n[1, 2]\n"), 2, "object"),
    "bom mid-file": (_write("bom.jsonl", b"\n\n\xef\xbb\xbf{}\n"), 3, "JSON"),
    "huge number": (_write("num.jsonl", b'{"example_id": ' + b"9" * 5000 + b"}\n"), 1, "JSON"),
    "deep nesting": (_write("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n"), 1, "JSON"),
}


@pytest.mark.parametrize("name", list(FILE_ERRORS))
def test_broken_files_name_file_and_line(sample, tmp_path, name) -> None:
    build, line, word = FILE_ERRORS[name]
    path = build(tmp_path, sample)
    with pytest.raises(DataError) as err:
        load_simplified(path)
    assert err.value.path == str(path)
    if line is None:
        assert err.value.line is None
    else:
        assert err.value.line is not None and 1 <= err.value.line <= line
    assert word.lower() in str(err.value).lower()


# --- properties -----------------------------------------------------------------------------------


def check_dataset(ds: Dataset, n_records: int, min_words: int, max_words: int) -> None:
    """Invariants of any Dataset the loader returns."""
    assert set(ds.queries) == set(ds.qrels) == set(ds.same_doc)
    assert len(ds.queries) + sum(ds.skipped.get(r, 0) for r in EXAMPLE_REASONS) == n_records
    for qid, query in ds.queries.items():
        assert qid.startswith("nq_") and query and query == query.strip()
        [pid] = ds.qrels[qid]
        assert pid not in ds.same_doc[qid]
        assert all(i in ds.corpus for i in ds.same_doc[qid])
    for pid, passage in ds.corpus.items():
        assert re.fullmatch(r"p_[0-9a-f]{16}", pid)
        assert min_words <= word_count(passage.text) <= max_words


VALID_LINE = json.dumps({
    "document_text": "Title <H1> Title </H1> <P> one two three four five </P> <P> six seven eight nine ten </P>",
    "long_answer_candidates": [{"start_token": 3, "end_token": 10, "top_level": True},
                               {"start_token": 10, "end_token": 17, "top_level": True}],
    "annotations": [{"long_answer": {"start_token": 3, "end_token": 10, "candidate_index": 0}}],
    "question_text": "which numbers", "example_id": 1, "document_url": "",
}).encode("utf-8")


def test_valid_line_fixture_loads(tmp_path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(VALID_LINE)
    ds = load_simplified(path)
    assert ds.queries == {"nq_1": "which numbers"}
    assert [ds.corpus[i].text for i in ds.qrels["nq_1"]] == ["one two three four five"]
    [negative] = ds.same_doc["nq_1"]
    assert ds.corpus[negative] == Passage(title="Title", text="six seven eight nine ten")


def test_arbitrary_bytes_give_a_dataset_or_a_data_error(tmp_path) -> None:
    tried = {"total": 0, "dataset": 0, "error": 0}
    line = st.one_of(
        st.binary(max_size=80),
        st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"{}", b"[]", b"null", b'{"document_text": 1}', b"\xef\xbb\xbf{}", b"\r", b"",
                         VALID_LINE, VALID_LINE[:-7], b"\xef\xbb\xbf" + VALID_LINE + b"\r"]),
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(line, max_size=5), st.booleans(), st.sampled_from(["x.jsonl", "x.jsonl.gz"]))
    def check(lines: list[bytes], compress: bool, name: str) -> None:
        tried["total"] += 1
        data = b"\n".join(lines)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        try:
            load_simplified(path)
            tried["dataset"] += 1
        except DataError as exc:
            assert exc.path == str(path)
            tried["error"] += 1

    check()
    logger.info("load_simplified on arbitrary bytes: %s", tried)
    assert tried["total"] >= 300


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
TOKENS = st.lists(
    st.sampled_from(["<P>", "</P>", "<H1>", "</H1>", "<Table>", "<Tr>", "<Td>", "</Td>", "<Li>", "``", "''",
                     ",", "word", "other", "Mother", "\u200f", "", "&amp;", "x"]),
    max_size=40,
)


@st.composite
def nq_records(draw) -> dict:
    """Records shaped like NQ's: usually well-formed (indices in range, answers pointing at
    candidates), sometimes with indices anywhere, sometimes with a field replaced by any JSON value."""
    tokens = draw(TOKENS)
    n = len(tokens)
    sloppy = draw(st.integers(0, 7)) == 0
    index = st.integers(-2, n + 2) if sloppy else st.integers(0, n)

    def span(draw_) -> dict:
        start, end = sorted((draw_(index), draw_(index))) if not sloppy else (draw_(index), draw_(index))
        return {"start_token": start, "end_token": end}

    candidates = [{**span(draw), "top_level": draw(st.booleans())} for _ in range(draw(st.integers(0, 6)))]
    annotations = []
    for _ in range(draw(st.integers(0, 3))):
        if sloppy or not candidates:
            answer = {**span(draw), "candidate_index": draw(st.integers(-1, 6)) if sloppy else -1}
        else:
            i = draw(st.integers(-1, len(candidates) - 1))
            answer = {"start_token": -1, "end_token": -1, "candidate_index": -1} if i < 0 else {
                "start_token": candidates[i]["start_token"], "end_token": candidates[i]["end_token"],
                "candidate_index": i}
        annotations.append({"long_answer": answer, "short_answers": []})
    record = {
        "document_text": " ".join(tokens),
        "question_text": draw(st.sampled_from(["who is the mother", "who", "`` q '' ?", " \u200b "])),
        "example_id": draw(st.integers(-3, 3) | st.sampled_from(["12", "x-1"])),
        "document_url": draw(st.sampled_from(["", "https://en.wikipedia.org//w/index.php?title=A_b&amp;oldid=1"])),
        "long_answer_candidates": candidates,
        "annotations": annotations,
    }
    if draw(st.integers(0, 7)) == 0:
        record[draw(st.sampled_from(sorted(record)))] = draw(JSON)
    return record


def test_arbitrary_records_give_a_consistent_dataset_or_a_data_error(tmp_path) -> None:
    tried = {"total": 0, "dataset": 0, "error": 0, "queries": 0}

    @settings(max_examples=400, deadline=None)
    @given(st.lists(nq_records(), min_size=1, max_size=3))
    def check(recs: list[dict]) -> None:
        tried["total"] += 1
        path = write_jsonl(tmp_path / "records.jsonl", recs)
        try:
            ds = load_simplified(path, min_words=1, max_words=30)
        except DataError as exc:
            assert exc.path == str(path) and exc.line is not None and 1 <= exc.line <= len(recs)
            tried["error"] += 1
            return
        tried["dataset"] += 1
        tried["queries"] += len(ds.queries)
        check_dataset(ds, len(recs), 1, 30)

    check()
    logger.info("load_simplified on arbitrary records: %s", tried)
    assert tried["total"] >= 400
    assert tried["dataset"] > 0 and tried["error"] > 0 and tried["queries"] > 0
