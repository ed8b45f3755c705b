"""What users would do instead: fine-tune the embedding model itself (`embedfit eval --baselines finetune`).

The recipe is sentence-transformers' own for retrieval pairs: MultipleNegativesRankingLoss (each query against its
positive and every other positive in the batch; scale 20, cosine), AdamW at 2e-5, batches of 32 with no passage
twice in a batch (a repeated passage would be its own negative), on the store's **train** split (query, positive
passage); the **dev** split's MRR@10 over the whole corpus after each epoch keeps the best epoch (epoch 0, the
untuned model, included: if fine-tuning never beats it on dev, the baseline is the untuned model and the report says
so). The scored queries are embedded with the tuned model (the corpus vectors are the ones the kept epoch's dev
scoring made) and ranked by exact search.
Its cost is real and reported: the wall time (training and every re-embedding of the corpus) and a second copy of
the model's weights; the corpus vectors are replaced, not added to.

Only a model whose weights are a sentence-transformers (torch) model can be fine-tuned here: the ONNX
paraphrase-MiniLM-L3-v2 and API models are skipped with a note saying why. It runs on the GPU when there is one.
The loop is written out (forward, loss, step) rather than run through the library's Trainer: the same loss and
optimiser, with no extra dependencies, and a progress bar.
"""
from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np

from embedfit.embed import load_embedder
from embedfit.embed.sentence_transformer import SentenceTransformerEmbedder
from embedfit.errors import InputError
from embedfit.metrics.retrieval import per_query_metrics
from embedfit.progress import progress
from embedfit.retrieval.exact import exact_search
from embedfit.settings import K_VALUES, TOP_K
from embedfit.types import Corpus, Qrels, Queries

log = logging.getLogger(__name__)

BATCH_SIZE = 32
LEARNING_RATE = 2e-5
SCALE = 20.0
ENCODE_BATCH = 64


@dataclass
class FinetuneResult:
    query_vectors: np.ndarray  # the scored queries, embedded by the tuned model (rows in the given order)
    passage_vectors: np.ndarray  # the corpus, embedded by the tuned model (rows in `pids` order)
    seconds: float
    best_epoch: int
    n_pairs: int
    weight_bytes: int
    #: per epoch (0 = untuned): {"epoch", "train_loss", "dev MRR@10"}
    curve: list[dict] = field(default_factory=list)


def tunable(model_id: str) -> SentenceTransformerEmbedder:
    """The model as a sentence-transformers model we can train, or InputError saying why not."""
    emb = load_embedder(model_id)
    if not isinstance(emb, SentenceTransformerEmbedder):
        raise InputError(f"{model_id} is not a sentence-transformers (torch) model here ({type(emb).__name__}): "
                         "its weights cannot be fine-tuned by embedfit")
    return emb


def no_duplicate_batches(pairs: list[tuple[str, str, str]], size: int, seed: int) -> list[list[tuple[str, str, str]]]:
    """Shuffled batches of (query id, query text, passage id) in which no passage appears twice (sentence-transformers'
    NoDuplicatesBatchSampler rule); a pair that fits no open batch starts the next one."""
    order = pairs[:]
    random.Random(seed).shuffle(order)
    batches: list[list] = []
    pending = order
    while pending:
        batch, used, rest = [], set(), []
        for pair in pending:
            if len(batch) < size and pair[2] not in used:
                batch.append(pair)
                used.add(pair[2])
            else:
                rest.append(pair)
        batches.append(batch)
        pending = rest
    return batches


def _encode(model, texts: list[str], desc: str) -> np.ndarray:
    out = [model.encode(texts[i:i + ENCODE_BATCH], batch_size=ENCODE_BATCH, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)
           for i in progress(range(0, len(texts), ENCODE_BATCH), desc=desc, unit="batch")]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.get_sentence_embedding_dimension()))


def finetune(model_id: str, train: list[tuple[str, str, str]], dev_queries: Queries, dev_qrels: Qrels,
             corpus: Corpus, pids: list[str], scored: list[str], epochs: int = 2, seed: int = 0) -> FinetuneResult:
    """Fine-tune `model_id` on `train` ((query id, query text, positive passage id) pairs), keep the epoch with the
    best dev MRR@10, and embed `scored` (query texts) and the corpus with it."""
    import torch

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    emb = tunable(model_id)
    model = emb.model
    texts = [corpus[p].embedding_text() for p in pids]
    dev_ids = [q for q in dev_queries if q in dev_qrels]

    def dev_mrr() -> tuple[float, np.ndarray | None]:
        """The model's dev MRR@10, and the corpus vectors it embedded for it (None without dev queries)."""
        if not dev_ids:
            return float("nan"), None
        Q = _encode(model, [dev_queries[q] for q in dev_ids], "fine-tune: dev queries")
        P = _encode(model, texts, "fine-tune: corpus for dev")
        results = exact_search(Q, dev_ids, P, pids, k=TOP_K)
        return float(np.mean(list(per_query_metrics(dev_qrels, results, K_VALUES)["MRR@10"].values()))), P

    loss_fn = MultipleNegativesRankingLoss(model, scale=SCALE)
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` before sentence-transformers 6
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    best, best_P = dev_mrr()  # the kept epoch's corpus vectors are the result's: no second embedding of the corpus
    best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
    curve = [{"epoch": 0, "train_loss": None, "dev MRR@10": best}]
    log.info("fine-tune %s: %d training pairs, dev MRR@10 untuned %.4f", model_id, len(train), best)
    for epoch in range(1, epochs + 1):
        model.train()
        total, steps = 0.0, 0
        for batch in progress(no_duplicate_batches(train, BATCH_SIZE, seed + epoch), desc=f"fine-tune epoch {epoch}",
                              unit="batch"):
            if len(batch) < 2:  # one pair has no in-batch negative: nothing to learn from
                continue
            features = [tokenize([q for _, q, _ in batch]), tokenize([corpus[p].embedding_text() for _, _, p in batch])]
            features = [{k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()} for f in features]
            loss = loss_fn(features, labels=None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        model.eval()
        score, P = dev_mrr()
        curve.append({"epoch": epoch, "train_loss": total / max(steps, 1), "dev MRR@10": score})
        log.info("fine-tune epoch %d: loss %.4f, dev MRR@10 %.4f (best %.4f)", epoch, total / max(steps, 1), score, best)
        if score > best + 1e-9:
            best, best_P, best_state, best_epoch = score, P, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    model.eval()
    Q = _encode(model, scored, "fine-tune: scored queries")
    P = best_P if best_P is not None else _encode(model, texts, "fine-tune: corpus")
    weight_bytes = sum(int(t.numel()) * t.element_size() for t in model.state_dict().values())
    return FinetuneResult(Q, P, time.perf_counter() - t0, best_epoch, len(train), weight_bytes, curve)


def training_pairs(queries: Queries, qrels: Qrels, query_ids: list[str], corpus: Corpus) -> list[tuple[str, str, str]]:
    """(query id, query text, positive passage id) for each judged positive of each query in `query_ids`."""
    return [(q, queries[q], p) for q in query_ids if q in queries
            for p, r in sorted(qrels.get(q, {}).items()) if r > 0 and p in corpus]
