"""BEIR-style folder: `corpus.jsonl`, `queries.jsonl`, `qrels.tsv` (or `qrels/*.tsv`), as in ../shared/data/nq."""
from __future__ import annotations

import logging
from pathlib import Path

from embedfit.data.clean import clean_text
from embedfit.data.id_rule import IdRule
from embedfit.errors import DataError
from embedfit.jsonl import get_id, get_str, open_text, read_jsonl
from embedfit.progress import progress
from embedfit.types import Dataset, Passage

log = logging.getLogger(__name__)


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def qrels_files(folder: Path) -> list[Path]:
    if (folder / "qrels.tsv").exists():
        return [folder / "qrels.tsv"]
    files = sorted((folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
    if not files:
        raise DataError("no qrels.tsv (or qrels/*.tsv) in the BEIR folder", folder)
    return files


#: the largest relevance a qrels row may give: graded judgements are small integers, and pytrec_eval keeps them in a
#: C int (1e30 overflowed it after a whole ingest)
MAX_RELEVANCE = 1000


def read_qrels(path: Path) -> list[tuple[str, str, int]]:
    """Rows of (query id, corpus id, score); the header line ('query-id ...') is optional."""
    return [(q, p, score) for q, p, score, _ in read_qrels_lines(path)]


def read_qrels_lines(path: Path) -> list[tuple[str, str, int, int]]:
    """Rows of (query id, corpus id, score, line number)."""
    rows: list[tuple[str, str, int, int]] = []
    try:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if line_no == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                    continue
                if len(parts) != 3:
                    raise DataError(f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}", path, line_no)
                try:
                    value = float(parts[2])
                except ValueError:  # "x"
                    raise DataError(f"score {parts[2]!r} is not a number", path, line_no) from None
                if not (value.is_integer() and abs(value) <= MAX_RELEVANCE):  # nan, inf, 0.5, 1e30
                    raise DataError(f"score {parts[2]!r} is not a relevance: an integer from -{MAX_RELEVANCE} to "
                                    f"{MAX_RELEVANCE} (graded judgements are small integers; BEIR's are 0 to 2)",
                                    path, line_no)
                score = int(value)
                rows.append((parts[0].strip(), parts[1].strip(), score, line_no))
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path) from None
    if not rows:
        raise DataError("empty qrels file", path)
    return rows


def load_beir(folder: str | Path) -> Dataset:
    folder = Path(folder)
    corpus_path = folder / "corpus.jsonl" if (folder / "corpus.jsonl").exists() else folder / "corpus.jsonl.gz"
    queries_path = folder / "queries.jsonl" if (folder / "queries.jsonl").exists() else folder / "queries.jsonl.gz"
    ds = Dataset(corpus={}, queries={}, qrels={}, source=f"beir:{folder}")
    ids = IdRule(ds)
    for line, obj in progress(read_jsonl(corpus_path), desc="read corpus", unit="passage"):
        pid = get_id(obj, ("_id", "id"), corpus_path, line)
        text = clean_text(get_str(obj, ("text",), corpus_path, line))
        title = clean_text(get_str(obj, ("title",), corpus_path, line, required=False) or "")
        if not text:
            ds.skip("empty_passage")
            continue
        ids.add_passage(pid, Passage(title=title, text=text), corpus_path, line)
    for line, obj in read_jsonl(queries_path):
        qid = get_id(obj, ("_id", "id"), queries_path, line)
        text = clean_text(get_str(obj, ("text",), queries_path, line))
        if not text:
            ds.skip("empty_query")
            continue
        ids.add_query(qid, text, queries_path, line)
    judged: dict[tuple[str, str], tuple[int, Path, int]] = {}  # (query, passage) -> (score, file, line)
    for qrels_path in qrels_files(folder):
        for qid, pid, score, line in read_qrels_lines(qrels_path):
            first = judged.setdefault((qid, pid), (score, qrels_path, line))
            if first[1:] != (qrels_path, line):  # the pair was judged before
                if first[0] != score:  # two judgements that disagree: no row may silently win
                    raise DataError(f"query {qid!r} and passage {pid!r} are judged {score} here but {first[0]} at "
                                    f"{first[1]}:{first[2]}; keep one judgement per pair", qrels_path, line)
                ds.skip("qrel_repeated_row")
                continue
            if score <= 0:
                continue
            if qid not in ds.queries:
                ds.skip("qrel_unknown_query")
                continue
            if pid not in ds.corpus:
                ds.skip("qrel_unknown_passage")
                continue
            ds.qrels.setdefault(qid, {})[pid] = score
    return ds
