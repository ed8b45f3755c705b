"""Property tests (hypothesis) over everything that reads untrusted input: the text cleaner, the query validator,
and the BEIR and pairs loaders, each through `load_source` and through the whole `run_ingest`.

The property: any input either works or raises our own error (a `embedfit.errors.EmbedfitError` subclass, whose
message the CLI prints); never another exception, and when ingest fails there is no store folder afterwards
(nothing half-written). The generated files mix valid lines with truncated JSON lines, wrong types, missing
fields, huge lines, deep nesting, invalid UTF-8, empty files, a BOM, CRLF or bare CR line ends, NUL and other
control characters, lone surrogates, right-to-left text and marks, emoji, HTML without closing tags and tables
without rows; ids include empty, blank, control-character and 3,000-character ones; qrels scores include
"inf", "nan" and "1e999".

How many inputs each property tried (and how many worked or failed cleanly) goes to
artifacts/reliability/properties.json for the README's Reliability section.
"""
from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_pipeline import HashEmbedder

from embedfit import atomic
from embedfit.data.clean import clean_text
from embedfit.data.html_text import html_to_text
from embedfit.data.query_text import clean_query
from embedfit.data.sources import load_source
from embedfit.errors import EmbedfitError, InputError
from embedfit.pipeline.config import IngestConfig
from embedfit.pipeline.ingest import run_ingest
from embedfit.types import Dataset

COUNTS_FILE = REPO / "artifacts" / "reliability" / "properties.json"
FULL_INGESTS = 12  # successful loads also run the whole ingest (each opens a real Chroma store), this many per test
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
BOM = b"\xef\xbb\xbf"

# -- what nasty text is made of ------------------------------------------------------------------------------

CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f", "\u200b", "\u200d",
            "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff", "\ufffe", "\r", "\n", "\t",
            "\u2028", "\ud800", "\udfff"]
EMOJI = ["😀", "👨\u200d👩\u200d👧", "🇫🇷", "👍🏽", "❤️"]
RTL = ["שלום עולם", "مرحبا بالعالم", "\u200fעברית\u200f", "\u202eevil\u202c"]
HTML = ["<P>", "</P>", "<Table>", "<Tr>", "<Td>", '<Th_colspan="2">', "<table><tr>", "<td>cell", "<ul><li>item",
        "<b>bold", "<a href='x'>", "&amp;", "&lt;p&gt;", "&#0;", "&#xD800;", "&", "<", ">",
        "<Table> <Td> a <Td> b", "<table><td>no rows<td>at all", "<div><p><span>"]
WORDS = ["who", "wrote", "the", "declaration", "of", "independence", "Paris", "is", "capital", "1776",
         "n't", "``", "''", "(", ")", ",", "--"]
PIECE = st.one_of(st.sampled_from(CONTROLS + EMOJI + RTL + HTML), st.sampled_from(WORDS), st.sampled_from(WORDS),
                  st.text(max_size=6))
NASTY_TEXT = st.lists(PIECE, max_size=25).map(" ".join)
HUGE_TEXT = st.tuples(NASTY_TEXT, st.sampled_from([20_000, 200_000])).map(
    lambda t: ((t[0] or "word") + " ") * (t[1] // (len(t[0] or "word") + 1)))
WRONG_TYPE = st.one_of(st.integers(), st.floats(), st.none(), st.booleans(), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, bad_in_10: int = 2) -> st.SearchStrategy:
    """`good` most of the time, `bad` about `bad_in_10` times in 10 (so that valid files still happen)."""
    return st.sampled_from([True] * bad_in_10 + [False] * (10 - bad_in_10)).flatmap(lambda b: bad if b else good)


IDS = ["p1", "p2", "p3", "q1", "q2", "q3"]
BAD_IDS = ["", "   ", "p\x00", "\ud800", "q\t1", "x" * 3000, "😀", " p1 ", 17, 3.5, None, True, [1]]
ID = mostly(st.sampled_from(IDS), st.sampled_from(BAD_IDS))
TEXT_VALUE = mostly(NASTY_TEXT, st.one_of(WRONG_TYPE, HUGE_TEXT))


@st.composite
def record(draw, fields: dict[str, st.SearchStrategy], broken: bool = True) -> object:
    """A JSON object with `fields`; when `broken`, sometimes a field is missing, an extra one appears, or it is no
    object at all."""
    rec = {k: draw(v) for k, v in fields.items()}
    roll = draw(st.integers(0, 19)) if broken else 99
    if roll == 0 and rec:
        rec.pop(draw(st.sampled_from(sorted(rec))))
    elif roll == 1:
        rec[draw(st.text(max_size=5))] = draw(WRONG_TYPE)
    elif roll == 2:
        return draw(WRONG_TYPE)
    return rec


LINE_KINDS = ["ok"] * 8 + ["truncated", "not_object", "bad_utf8", "blank", "nested", "huge_number"]


@st.composite
def jsonl_bytes(draw, records: st.SearchStrategy, broken: bool = True) -> bytes:
    """A JSON-lines file: encoded records (when `broken`, some of them broken on purpose), any line ends, maybe a BOM."""
    lines = []
    for rec in draw(st.lists(records, max_size=6, min_size=0 if broken else 1)):
        raw = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        kind = draw(st.sampled_from(LINE_KINDS if broken else ["ok", "ok", "ok", "blank"]))
        if kind == "truncated":
            raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
        elif kind == "not_object":
            raw = draw(st.sampled_from([b"[]", b"null", b"3", b'"text"', b"[{}]", b"true"]))
        elif kind == "bad_utf8":
            cut = draw(st.integers(0, len(raw)))
            raw = raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[cut:]
        elif kind == "blank":
            raw = draw(st.sampled_from([b"", b"   ", b"\t", b"\x0c"]))
        elif kind == "nested":
            raw = b"[" * 100_000 + b"]" * 100_000
        elif kind == "huge_number":
            raw = b'{"_id": ' + b"9" * 5000 + b"}"
        lines.append(raw)
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\r"] if broken else [b"\n", b"\r\n"]))
    data = sep.join(lines) + draw(st.sampled_from([b"", sep]))
    return (BOM + data) if draw(st.booleans()) else data


SCORES = st.one_of(st.sampled_from(["1", "1", "2", "0", "-1", "2.5", "inf", "-inf", "nan", "1e999", "x", "", " 1 "]),
                   st.text(max_size=4))
QREL_LINE = st.one_of(
    st.tuples(st.sampled_from(IDS + ["", " q1", "p\x00"]), st.sampled_from(IDS), SCORES).map("\t".join),
    st.sampled_from(["query-id\tcorpus-id\tscore", "q1\tp1", "q1 p1 1", "\t\t", "q1\tp1\t1\textra", "q1\tp1\tinf"]),
    st.text(max_size=20),
)
GOOD_QREL_LINE = st.tuples(st.sampled_from(["q1", "q2", "q3"]), st.sampled_from(["p1", "p2", "p3"]),
                           st.sampled_from(["1", "2", "0"])).map("\t".join)


@st.composite
def qrels_bytes(draw, broken: bool = True) -> bytes:
    lines = draw(st.lists(QREL_LINE if broken else GOOD_QREL_LINE, max_size=6, min_size=0 if broken else 1))
    if draw(st.booleans()):
        lines.insert(0, "query-id\tcorpus-id\tscore")
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    data = sep.join(lines).encode("utf-8", "surrogatepass")
    if broken and draw(st.integers(0, 9)) == 0:
        data += b"\xff\xfe"
    return (BOM + data) if draw(st.booleans()) else data


def files(broken: bool) -> dict[str, st.SearchStrategy]:
    """Strategies for the three BEIR files and a pairs file: hostile structure when `broken`, else valid structure
    around hostile text (so that both refusals and successful loads are exercised)."""
    pid = ID if broken else st.sampled_from(IDS[:3])
    qid = ID if broken else st.sampled_from(IDS[3:])
    # valid structure: hostile text after four plain words, so that some passages pass the length filter
    text = TEXT_VALUE if broken else mostly(NASTY_TEXT, HUGE_TEXT, 1).map(lambda t: "four plain words here " + t)
    title = mostly(NASTY_TEXT, WRONG_TYPE, 1) if broken else NASTY_TEXT
    opt_id = mostly(st.none(), st.sampled_from(IDS + BAD_IDS), 3) if broken else st.one_of(st.none(), st.sampled_from(IDS))
    return {
        "corpus": jsonl_bytes(record({"_id": pid, "title": title, "text": text}, broken), broken),
        "queries": jsonl_bytes(record({"_id": qid, "text": text}, broken), broken),
        "qrels": qrels_bytes(broken),
        "pairs": jsonl_bytes(record({"query": text, "passage": text, "title": title, "query_id": opt_id,
                                     "passage_id": opt_id}, broken), broken),
    }


BROKEN, VALID = files(True), files(False)


def some(data: st.DataObject, hostile: bool, name: str):
    """Draw file `name`: in a hostile example each file is hostile or valid (half and half), else valid."""
    return data.draw(mostly(VALID[name], BROKEN[name], 5) if hostile else VALID[name], label=name)


# -- bookkeeping -------------------------------------------------------------------------------------------

def record_counts(name: str, counts: dict) -> None:
    """Merge one property's counts into artifacts/reliability/properties.json (each test owns its key)."""
    try:
        data = json.loads(COUNTS_FILE.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data[name] = counts
    data["total_inputs"] = sum(v["tried"] for k, v in data.items() if isinstance(v, dict) and "tried" in v)
    atomic.write_json(COUNTS_FILE, data)


def well_formed_id(value: str) -> bool:
    return bool(value) and value == value.strip() and not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def check_dataset(ds: Dataset) -> None:
    """What every loaded dataset must look like, whatever the file held."""
    for pid, p in ds.corpus.items():
        assert well_formed_id(pid), repr(pid)
        assert p.text and p.text == clean_text(p.text) and p.title == clean_text(p.title)
    for qid, text in ds.queries.items():
        assert well_formed_id(qid), repr(qid)
        assert text and text == clean_text(text)
    for qid, rels in ds.qrels.items():
        assert qid in ds.queries and rels
        assert all(pid in ds.corpus and isinstance(r, int) and r > 0 for pid, r in rels.items())


class Outcomes:
    """Counts what one property saw, and runs the whole ingest on each input (failing ones all, working ones a few)."""

    def __init__(self, work: Path):
        self.work = work
        self.counts = {"tried": 0, "loaded": 0, "refused": 0, "ingest_refused_nothing_written": 0, "ingest_completed": 0}
        self.errors: dict[str, int] = {}

    def check(self, data: str) -> None:
        self.counts["tried"] += 1
        try:
            ds = load_source(data, 4, 2000)
        except EmbedfitError as exc:
            assert str(exc).strip()
            self.counts["refused"] += 1
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            self.ingest(data, must_fail=True)
            return
        self.counts["loaded"] += 1
        check_dataset(ds)
        if self.counts["ingest_completed"] < FULL_INGESTS:
            self.ingest(data, must_fail=False)

    def ingest(self, data: str, must_fail: bool) -> None:
        self.runs = getattr(self, "runs", 0) + 1
        store = self.work / f"store-{self.runs}"  # a new path each time: Chroma caches clients by path
        cfg = IngestConfig(data=data, store=store, cache_dir=None, model="hash")
        try:
            summary = run_ingest(cfg, embedder=HashEmbedder("hash", 8))
        except EmbedfitError:
            assert not store.exists(), f"a failed ingest left {sorted(p.name for p in store.iterdir())}"
            self.counts["ingest_refused_nothing_written"] += 1
            return
        finally:
            from embedfit.store.chroma_store import release_locks

            release_locks()
        assert not must_fail, "ingest accepted what load_source refused"
        assert (store / "manifest.json").exists() and summary["collection_count"] == summary["passages"]
        self.counts["ingest_completed"] += 1
        shutil.rmtree(store)

    def report(self, name: str, minimum: int) -> None:
        record_counts(name, {**self.counts, "errors": self.errors})
        assert self.counts["tried"] >= minimum
        # every outcome was exercised: refused while loading, loaded, and a whole ingest completed
        assert self.counts["loaded"] and self.counts["refused"] and self.counts["ingest_completed"], self.counts


SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.function_scoped_fixture])


# -- the properties ------------------------------------------------------------------------------------------

def test_beir_folders_load_or_fail_with_our_error_and_leave_no_store(tmp_path):
    seen = Outcomes(tmp_path)

    @settings(SETTINGS, max_examples=300)
    @given(st.booleans(), st.data())
    def check(hostile: bool, data: st.DataObject) -> None:
        corpus, queries, qrels = (some(data, hostile, name) for name in ("corpus", "queries", "qrels"))
        queries_present = not hostile or data.draw(mostly(st.just(True), st.just(False), 1))
        if hostile and data.draw(mostly(st.just(False), st.just(True), 1)):
            qrels = None
        folder = tmp_path / "beir"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "corpus.jsonl").write_bytes(corpus)
        if queries_present:
            (folder / "queries.jsonl").write_bytes(queries)
        if qrels is not None:
            (folder / "qrels.tsv").write_bytes(qrels)
        seen.check(str(folder))

    check()
    seen.report("beir_loader_and_ingest", 300)


def test_pairs_files_load_or_fail_with_our_error_and_leave_no_store(tmp_path):
    seen = Outcomes(tmp_path)

    @settings(SETTINGS, max_examples=300)
    @given(st.booleans(), st.data())
    def check(hostile: bool, data: st.DataObject) -> None:
        path = tmp_path / "pairs.jsonl"
        path.write_bytes(some(data, hostile, "pairs"))
        seen.check(str(path))

    check()
    seen.report("pairs_loader_and_ingest", 300)


QUERY_INPUT = st.one_of(NASTY_TEXT, st.text(), HUGE_TEXT, st.none(), WRONG_TYPE, st.binary(max_size=10))


def test_any_question_is_cleaned_or_refused_with_our_error():
    counts = {"tried": 0, "cleaned": 0, "empty": 0, "refused": 0}

    @settings(SETTINGS, max_examples=500)
    @given(QUERY_INPUT, st.integers(1, 3000))
    def check(value: object, limit: int) -> None:
        counts["tried"] += 1
        try:
            out, notices = clean_query(value, limit)
        except InputError as exc:
            assert value is not None and not isinstance(value, str) and str(exc)
            counts["refused"] += 1
            return
        assert isinstance(value, str) or value is None
        assert len(out) <= limit and out == out.strip() and "  " not in out
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in out)
        assert not BIDI_CONTROLS & set(out)
        assert unicodedata.is_normalized("NFC", out)
        assert all(isinstance(n, str) for n in notices)
        counts["cleaned" if out else "empty"] += 1

    check()
    record_counts("query_validator", counts)
    assert counts["tried"] >= 500 and counts["cleaned"] and counts["refused"] and counts["empty"]


def test_html_without_closing_tags_and_tables_without_rows_clean_to_plain_text():
    counts = {"tried": 0}

    @settings(SETTINGS, max_examples=300)
    @given(st.lists(st.one_of(st.sampled_from(HTML), PIECE), max_size=40))
    def check(pieces: list[str]) -> None:
        counts["tried"] += 1
        text = " ".join(pieces)
        for out in (clean_text(text), html_to_text(text)):
            assert out == clean_text(out)  # settled: cleaning again changes nothing
            assert not any(unicodedata.category(c) in ("Cc", "Cs") and c != "\n" for c in out)
            assert unicodedata.is_normalized("NFC", out)

    check()
    record_counts("text_cleaner_html", counts)
    assert counts["tried"] >= 300


@pytest.mark.parametrize("score,problem", [("inf", "is not a relevance"), ("-inf", "is not a relevance"),
                                           ("1e999", "is not a relevance"), ("nan", "is not a relevance"),
                                           ("x", "is not a number"), ("1e30", "is not a relevance"),
                                           ("1001", "is not a relevance"), ("0.5", "is not a relevance")])
def test_a_qrels_score_that_is_not_a_relevance_is_a_data_error_naming_the_line(tmp_path, score, problem):
    """Found by the property above: int(float("inf")) raises OverflowError, which escaped as a crash; issue 22
    (cases 16, 21): 1e30 passed and overflowed pytrec_eval after a whole ingest, 0.5 silently became 0."""
    from embedfit.errors import DataError

    (tmp_path / "corpus.jsonl").write_text('{"_id": "p1", "text": "a passage of some words"}\n', "utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a question"}\n', "utf-8")
    (tmp_path / "qrels.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\tp1\t{score}\n", "utf-8")
    with pytest.raises(DataError, match=rf"qrels.tsv:2: score .* {problem}"):
        load_source(str(tmp_path), 4, 2000)


@pytest.mark.parametrize("score", ["0", "1", "2", "1000", "-1", "3.0"])
def test_integer_relevances_are_read(tmp_path, score):
    from embedfit.data.load_beir import read_qrels

    (tmp_path / "qrels.tsv").write_text(f"q1\tp1\t{score}\n", "utf-8")
    assert read_qrels(tmp_path / "qrels.tsv") == [("q1", "p1", int(float(score)))]


def test_a_corpus_without_indexable_words_is_refused_before_the_store_is_touched(tmp_path):
    """Issue 22, case 16: emoji-only passages were `max() arg is an empty sequence` from the BM25 build, after the
    store folder existed (a half store without a manifest)."""
    data = tmp_path / "beir"
    data.mkdir()
    (data / "corpus.jsonl").write_text('{"_id": "p1", "text": "🙂 🙃 🎉 ✨"}\n{"_id": "p2", "text": "🚀 🌍 🔥 ❤️"}\n', "utf-8")
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "🙂 🎉 🚀"}\n', "utf-8")
    (data / "qrels.tsv").write_text("q1\tp1\t1\n", "utf-8")
    cfg = IngestConfig(data=str(data), store=tmp_path / "store", cache_dir=None, min_words=1)
    with pytest.raises(EmbedfitError, match="none of the 2 passages has a word BM25 can index"):
        run_ingest(cfg, embedder=HashEmbedder("hash", 8))
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("bad_id,problem", [("", "empty id"), ("   ", "empty id"), ("\\ud800", "control character U\\+D800"),
                                            ("p\\u0000", "control character U\\+0000")])
def test_an_unusable_passage_id_is_refused_before_the_store_is_touched(tmp_path, bad_id, problem):
    """Found by the property above: Chroma refuses an empty id mid-upsert and a lone surrogate cannot be written,
    both after the store folder existed (a half-written store)."""
    data = tmp_path / "beir"
    data.mkdir()
    (data / "corpus.jsonl").write_text(f'{{"_id": "{bad_id}", "text": "a passage of some words"}}\n', "utf-8")
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "a question"}\n', "utf-8")
    (data / "qrels.tsv").write_text(f"q1\t{bad_id}\t1\n", "utf-8")
    cfg = IngestConfig(data=str(data), store=tmp_path / "store", cache_dir=None)
    with pytest.raises(EmbedfitError, match=problem):
        run_ingest(cfg, embedder=HashEmbedder("hash", 8))
    assert not (tmp_path / "store").exists()
