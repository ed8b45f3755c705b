"""The eval report files: `metrics.json` (read by other tools), `details.json` (everything), `report.md` (read by people).

`metrics.json` schema (keys are a contract: the app and scripts read them):

    {"n_queries": int, "model": str, "adapter": str | null,
     "retrieval": {"raw": M, "adapted": M | null, "bm25": M | null, "mse_baseline": M | null,
                   "nudge_n": M | null, "nudge_m": M | null, "finetune": M | null (only with --baselines finetune),
                   "raw_bm25": M | null, "adapted_bm25": M | null, "raw_rrf": M | null, "adapted_rrf": M | null},
     "ci95": {each key of "retrieval": C | null},
     "p_value_adapted_vs_raw": P | null, "p_value_raw_bm25_vs_raw": P | null, "p_value_adapted_bm25_vs_raw": P | null,
     "p_value_raw_rrf_vs_raw": P | null, "p_value_adapted_rrf_vs_raw": P | null,
     "p_value_nudge_n_vs_raw": P | null, "p_value_nudge_m_vs_raw": P | null,
     "threshold_accuracy": {"weak": T, "hard": T},
     "fusion": {SYSTEM: F},                       (each hybrid system computed)
     "vs_best_non_adapter": {SYSTEM: V},         (each adapter system, and its hybrids)
     "seen_unseen": {"n": {"seen": int, "unseen": int}, SYSTEM: {"seen" | "unseen": S}},   (eval/seen.py)
     "seen_reason": why the queries split into seen / unseen as they did (one sentence; "" without the split),
     "labels": {SYSTEM: what the system is, in words ("query adapter + memory (α 1)")},
     "vs_raw": {SYSTEM: {"MRR@10" | "nDCG@10" | "Recall@10" | "Recall@100": D}},   (every system but raw)
     "costs": {SYSTEM: K},
     "decision": the decision card (`embedfit.report.decision.decide` of this object)}

    M = {"Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10"} -> float
    C = {"MRR@10", "nDCG@10", "Recall@10"} -> [low, high]   (95% BCa bootstrap over queries)
    T = {"raw", "adapted", "raw_se", "adapted_se"} -> float | null   (dense systems only: it thresholds a cosine)
    P = {"MRR@10", "nDCG@10"} -> float   (two-sided paired permutation p-value)
    F = {"method": "zscore" | "minmax" | "rrf", "weight": BM25's weight, "n": candidates per side, "rrf_k",
         "chosen_on": "dev" | null (RRF is not tuned), "source": where the choice was read from}
    S = {"means": {"MRR@10", "nDCG@10"}, "ci95": {same} -> [low, high], "vs_raw": {same} -> D | null}
    D = {"delta": mean change against raw on the same queries, "ci95": [low, high] of the paired difference, "p"}
    K = {"fit_seconds": float | null, "query_ms": added per query (median, one query at a time),
         "storage_bytes": int, "storage": what is stored}   (measured by eval; raw: zeros)
    V = {"system": the best system without an adapter (raw, bm25, raw_bm25, raw_rrf) by MRR@10,
         "MRR@10": {"delta", "p"}, "nDCG@10": {"delta", "p"}}

Decisions, documented here once:
- Every key is always present. What was not computed is `null`: `adapted` (and its CI, p-value and
  threshold accuracy) when no adapter was given, `bm25` with `--no-bm25`, `mse_baseline` when it was
  switched off or could not be trained (the reason is in report.md and details.json).
- Several adapters for one model: the first is `adapted` (and `adapter` is its name); each further
  one adds `"adapted:<name>"` under `retrieval`, `ci95` and each `threshold_accuracy` kind (with
  `"adapted:<name>_se"`), and a top-level `"p_value_adapted:<name>_vs_raw"`. With one adapter per
  model the object is exactly the schema above.
- Several models: `{"models": {MODEL: <the object above>}}`. One model: the object itself.
- Both shapes also carry `"embedfit_version"`: the version that wrote the file.
- Hybrids (`*_bm25`: the fusion chosen on dev; `*_rrf`: reciprocal-rank fusion, k=60, untuned) exist when
  BM25 is on; their fusion is in `fusion`. Each further adapter adds `"adapted:<name>_bm25"` and `_rrf`.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from pathlib import Path

from embedfit import __version__, atomic
from embedfit.evaluation import plots
from embedfit.evaluation.config import CI_METRICS, P_METRICS, PRIMARY_METRIC, REPORT_GENERATOR
from embedfit.evaluation.results import HYBRID_SUFFIXES, EvalOutcome, ModelEvaluation, SystemRun
from embedfit.report import render
from embedfit.report.decision import decide
from embedfit.settings import METRICS

log = logging.getLogger(__name__)

ALPHA = 0.05
SYSTEM_ORDER = ("raw", "adapted", "bm25", "mse_baseline", "nudge_n", "nudge_m", "finetune", "raw_bm25", "adapted_bm25",
                "raw_rrf", "adapted_rrf")
#: systems with an interval and a p-value against raw in metrics.json (besides each further adapter)
COMPARED = ("adapted", "raw_bm25", "adapted_bm25", "raw_rrf", "adapted_rrf", "nudge_n", "nudge_m")


# -- metrics.json ----------------------------------------------------------------------------------

def _ci(s: SystemRun | None) -> dict | None:
    return None if s is None else {m: [s.ci95[m][0], s.ci95[m][1]] for m in CI_METRICS}


def _means(s: SystemRun | None) -> dict | None:
    return None if s is None else {m: s.means[m] for m in METRICS}


def _p(s: SystemRun | None) -> dict | None:
    return None if s is None else {m: s.vs_raw[m]["p"] for m in P_METRICS}


def _acc(s: SystemRun | None, kind: str, field: str) -> float | None:
    return None if s is None or kind not in s.threshold else s.threshold[kind][field]


def metrics_object(ev: ModelEvaluation) -> dict:
    """One model's `metrics.json` object (schema: module docstring)."""
    sys = ev.systems
    keys = ev.adapter_keys
    first = sys.get("adapted")
    extra = [k for k in keys if k != "adapted"]
    extra += [k + suffix for k in extra for suffix in HYBRID_SUFFIXES if k + suffix in sys]
    retrieval = {k: _means(sys.get(k)) for k in SYSTEM_ORDER}
    retrieval.update({k: _means(sys[k]) for k in extra})
    ci95 = {k: _ci(sys.get(k)) for k in SYSTEM_ORDER}
    ci95.update({k: _ci(sys[k]) for k in extra})
    threshold = {}
    for kind in ("weak", "hard"):
        t = {"raw": _acc(sys["raw"], kind, "accuracy"), "adapted": _acc(first, kind, "accuracy"),
             "raw_se": _acc(sys["raw"], kind, "se"), "adapted_se": _acc(first, kind, "se")}
        for k in extra:
            t[k] = _acc(sys[k], kind, "accuracy")
            t[f"{k}_se"] = _acc(sys[k], kind, "se")
        threshold[kind] = t
    obj = {
        "n_queries": ev.n_queries,
        "model": ev.model,
        "adapter": first.adapter.name if first is not None else None,
        "retrieval": retrieval,
        "ci95": ci95,
        "p_value_adapted_vs_raw": _p(first),
        "threshold_accuracy": threshold,
    }
    for k in COMPARED[1:]:
        obj[f"p_value_{k}_vs_raw"] = _p(sys.get(k))
    for k in extra:
        obj[f"p_value_{k}_vs_raw"] = _p(sys[k])
    obj["fusion"] = {k: s.fusion for k, s in sys.items() if s.fusion is not None}
    obj["vs_best_non_adapter"] = {k: {"system": s.vs_best_plain["system"],
                                      **{m: {"delta": v["delta"], "p": v["p"]} for m, v in s.vs_best_plain.items()
                                         if m != "system"}}
                                  for k, s in sys.items() if s.vs_best_plain}
    obj["seen_unseen"] = {"n": ev.subset_sizes,
                          **{k: {name: {"means": v["means"], "ci95": {m: list(c) for m, c in v["ci95"].items()},
                                        "vs_raw": ({m: _d(d) for m, d in v["vs_raw"].items()}
                                                   if "vs_raw" in v else None)}
                                 for name, v in s.by_subset.items()}
                             for k, s in sys.items() if s.by_subset}}
    obj["seen_reason"] = ev.seen_reason
    obj["labels"] = {k: s.label for k, s in sys.items()}
    obj["vs_raw"] = {k: {m: _d(d) for m, d in s.vs_raw.items()} for k, s in sys.items() if k != "raw"}
    obj["costs"] = {k: s.cost for k, s in sys.items() if s.cost}
    obj["decision"] = decide(obj)
    return obj


def _d(d: dict) -> dict:
    return {"delta": d["delta"], "ci95": [d["ci95"][0], d["ci95"][1]], "p": d["p"]}


def metrics_json(outcome: EvalOutcome) -> dict:
    if len(outcome.models) == 1:
        return {**metrics_object(outcome.models[0]), "embedfit_version": __version__}
    return {"models": {ev.model: metrics_object(ev) for ev in outcome.models}, "embedfit_version": __version__}


# -- details.json -----------------------------------------------------------------------------------

def _system_details(s: SystemRun) -> dict:
    d = {
        "label": s.label,
        "metrics": s.means,
        "ci95": {m: list(v) for m, v in s.ci95.items()},
        "vs_raw": {m: {"delta": v["delta"], "ci95": list(v["ci95"]), "p": v["p"]} for m, v in s.vs_raw.items()},
        "hnsw": s.hnsw,
        "threshold_accuracy": s.threshold,
        "cost": s.cost,
    }
    if s.fusion is not None:
        d["fusion"] = s.fusion
    if s.by_subset:
        d["seen_unseen"] = {name: {**{k: v for k, v in sub.items() if k != "vs_raw"},
                                   "ci95": {m: list(c) for m, c in sub["ci95"].items()},
                                   **({"vs_raw": {m: {"delta": x["delta"], "ci95": list(x["ci95"]), "p": x["p"]}
                                                  for m, x in sub["vs_raw"].items()}} if "vs_raw" in sub else {})}
                            for name, sub in s.by_subset.items()}
    if s.vs_best_plain:
        d["vs_best_non_adapter"] = {m: (v if m == "system" else {"delta": v["delta"], "ci95": list(v["ci95"]), "p": v["p"]})
                                    for m, v in s.vs_best_plain.items()}
    if s.adapter is not None:
        d["adapter"] = {"dir": s.adapter_dir, **s.adapter.config.to_json()}
    if s.seconds is not None:
        d["train_seconds"] = s.seconds
    if s.curves:
        d["curves"] = s.curves
    return d


def details_json(outcome: EvalOutcome) -> dict:
    return {
        "generator": REPORT_GENERATOR,
        "embedfit_version": __version__,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": outcome.config.to_json(),
        "seconds": round(outcome.seconds, 2),
        "figures": outcome.figures,
        "models": {
            ev.model: {
                "scope": ev.scope,
                "n_queries": ev.n_queries,
                "query_ids": ev.query_ids,
                "systems": {k: _system_details(s) for k, s in ev.systems.items()},
                "threshold_pairs": ev.pair_counts,
                "seen_reason": ev.seen_reason,
                "notes": ev.notes,
                "figures": ev.figures,
                "seconds": ev.seconds,
            }
            for ev in outcome.models
        },
    }


# -- report.md ---------------------------------------------------------------------------------------

def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _signed(x: float, nd: int = 3) -> str:
    return f"{x:+.{nd}f}"


def _pval(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def describe_change(raw: SystemRun, s: SystemRun, metric: str) -> str:
    """"MRR@10 0.512 → 0.545 (+0.033, 95% CI [+0.010, +0.056], p=0.004)": raw beside every delta."""
    v = s.vs_raw[metric]
    lo, hi = v["ci95"]
    return (f"{metric} {_f(raw.means[metric])} → {_f(s.means[metric])} "
            f"({_signed(v['delta'])}, 95% CI [{_signed(lo)}, {_signed(hi)}], {_pval(v['p'])})")


def verdict(s: SystemRun, metric: str = PRIMARY_METRIC) -> str:
    """Helped / hurt / no significant difference, in words, for one system against raw."""
    if s.adapter is not None and s.adapter.is_identity:
        return ("is the identity: training found nothing better than the raw embeddings on dev, so it changes "
                "nothing (its numbers equal raw by construction)")
    v = s.vs_raw[metric]
    if v["p"] < ALPHA and v["delta"] > 0:
        word = f"**helped**: {metric} {_signed(v['delta'])} ({_pval(v['p'])})"
    elif v["p"] < ALPHA and v["delta"] < 0:
        word = f"**hurt**: {metric} {_signed(v['delta'])} ({_pval(v['p'])})"
    else:
        word = (f"made **no significant difference**: {metric} {_signed(v['delta'])} ({_pval(v['p'])}, "
                f"not significant at {ALPHA})")
    other = "nDCG@10" if metric != "nDCG@10" else "MRR@10"
    if other in s.vs_raw:
        o = s.vs_raw[other]
        sig = "significant" if o["p"] < ALPHA else "not significant"
        word += f"; {other} {_signed(o['delta'])} ({_pval(o['p'])}, {sig})"
    return word


def best_and_steps(ev: ModelEvaluation, metric: str = PRIMARY_METRIC) -> str:
    """"Best system: X (MRR@10 0.8). raw → +BM25: +x; → +adapter: +y": which system wins and what each cheap
    step adds on the way to it, so a reader sees whether the adapter is worth it once BM25 is fused."""
    sys = ev.systems
    if "raw_bm25" not in sys:
        return ""
    best = max(sys.values(), key=lambda s: s.means[metric])
    m = {k: s.means[metric] for k, s in sys.items()}
    parts = [f"**Best system on these queries: {best.label}** ({metric} {_f(best.means[metric])})."]
    chain = f"raw {_f(m['raw'])} → +BM25 ({sys['raw_bm25'].fusion['method']}): {_signed(m['raw_bm25'] - m['raw'])}"
    if "adapted_bm25" in sys:
        chain += f"; → +adapter: {_signed(m['adapted_bm25'] - m['raw_bm25'])} (= {_f(m['adapted_bm25'])})"
        chain += f". The adapter alone: {_signed(m['adapted'] - m['raw'])}"
        cmp = sys["adapted_bm25"].vs_best_plain
        if cmp:
            other = sys[cmp["system"]]
            v = cmp[metric]
            sig = "significant" if v["p"] < ALPHA else "not significant"
            chain += (f". Adapter + BM25 against the best system without an adapter ({other.label}): "
                      f"{_signed(v['delta'])} ({_pval(v['p'])}, {sig})")
    return " ".join(parts) + " " + metric + ": " + chain + "."


def seen_unseen_verdict(ev: ModelEvaluation, key: str, metric: str = PRIMARY_METRIC) -> str:
    """For whom the adapter helps: queries whose relevant passages it was trained on, and the others."""
    s, n = ev.systems[key], ev.subset_sizes
    if not n:
        return ""
    parts = []
    for name, what in (("seen", "queries about documents it was trained on"), ("unseen", "queries about new documents")):
        sub = s.by_subset.get(name)
        if sub is None or "vs_raw" not in sub:
            parts.append(f"{what}: none among these queries")
            continue
        v = sub["vs_raw"][metric]
        word = ("helps" if v["delta"] > 0 else "hurts") if v["p"] < ALPHA else "no significant change"
        parts.append(f"{what} ({sub['n']}): {word}, {metric} {_signed(v['delta'])} ({_pval(v['p'])})")
    note = f" Why: {ev.seen_reason}" if ev.seen_reason else ""
    return f"**For whom, {s.label}:** " + "; ".join(parts) + "." + note


def seen_unseen_table(ev: ModelEvaluation, metric: str = PRIMARY_METRIC) -> list[str]:
    n = ev.subset_sizes
    if not n:
        return []
    out = ["", f"### Seen and unseen queries ({metric}; seen: every relevant passage was a positive of a training "
           f"query; {n.get('seen', 0)} seen, {n.get('unseen', 0)} unseen)", "",
           "| system | seen | unseen |", "|---|---:|---:|"]
    for s in ev.systems.values():
        cells = []
        for name in ("seen", "unseen"):
            sub = s.by_subset.get(name)
            if sub is None:
                cells.append("n/a")
                continue
            lo, hi = sub["ci95"][metric]
            cell = f"{_f(sub['means'][metric])} [{_f(lo)}, {_f(hi)}]"
            if "vs_raw" in sub:
                v = sub["vs_raw"][metric]
                cell += f" ({_signed(v['delta'])}, {_pval(v['p'])})"
            cells.append(cell)
        out.append(f"| {s.label} | " + " | ".join(cells) + " |")
    return out


def _retrieval_table(ev: ModelEvaluation) -> list[str]:
    raw = ev.systems["raw"]
    lines = ["| system | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for key, s in ev.systems.items():
        if key == "raw":
            cells = [_f(s.means[m]) for m in METRICS]
        else:
            cells = [f"{_f(s.means[m])} ({_signed(s.means[m] - raw.means[m])})" for m in METRICS]
        lines.append(f"| {s.label} | " + " | ".join(cells) + " |")
    return lines


def main_table(ev: ModelEvaluation) -> str:
    """The headline table: every system on the same queries, change against raw in brackets."""
    return "\n".join([f"{ev.model}: {ev.scope}, {ev.n_queries} queries, exact search"] + _retrieval_table(ev))


def _model_section(ev: ModelEvaluation) -> list[str]:
    raw = ev.systems["raw"]
    out = [f"## Details: {ev.model}, {ev.scope}, {ev.n_queries} queries", ""]
    for key in ev.adapter_keys:
        s = ev.systems[key]
        out.append(f"**Verdict for {s.label}.** Against the raw embeddings on these {ev.n_queries} queries, the adapter "
                   f"{verdict(s)}.")
        out.append("")
    if not ev.adapter_keys:
        out += ["No adapter was given (`--adapter DIR`); the report compares the raw embeddings with the baselines.", ""]
    steps = best_and_steps(ev)
    if steps:
        out += [steps, ""]
    for key in ev.adapter_keys:
        line = seen_unseen_verdict(ev, key)
        if line:
            out += [line, ""]
    for key, what in (("mse_baseline", "the MSE cookbook baseline"), ("nudge_n", "NUDGE-N"), ("nudge_m", "NUDGE-M"),
                      ("bm25", "BM25"), ("raw_bm25", "raw + BM25"),
                      ("adapted_bm25", "adapter + BM25"), ("raw_rrf", "raw + BM25 by RRF"), ("adapted_rrf", "adapter + BM25 by RRF")):
        if key in ev.systems:
            out.append(f"Against raw, {what} {verdict(ev.systems[key])}.")
    out += ["", "### Retrieval (exact search over the stored vectors; change against raw in brackets)", ""]
    out += _retrieval_table(ev)
    out += seen_unseen_table(ev)
    hybrids = [s for s in ev.systems.values() if s.fusion is not None]
    if hybrids:
        out += ["", "### Hybrid search: dense + BM25", "",
                "Candidates: the union of each side's top n; a passage missing from one side gets that side's lowest "
                "value. `*_bm25`: a weighted sum of per-query normalised scores, method and BM25 weight chosen on the "
                "**dev** split only (saved by ingest for raw, with the adapter for its hybrid); `*_rrf`: "
                "reciprocal-rank fusion (k=60, equal weights), the untuned common default.", "",
                "| system | fusion | chosen on | from |", "|---|---|---|---|"]
        for s in hybrids:
            f = s.fusion
            spec = (f"RRF, k={f['rrf_k']}, n={f['n']}" if f["method"] == "rrf"
                    else f"{f['method']}, BM25 weight {f['weight']:g}, n={f['n']}")
            out.append(f"| {s.label} | {spec} | {f.get('chosen_on') or 'not tuned'} | {f.get('source', '')} |")
    out += ["", "### Change against raw, paired over the same queries",
            "", "95% CI: BCa bootstrap of the per-query difference; p: two-sided paired permutation test.", ""]
    for key, s in ev.systems.items():
        if key == "raw":
            continue
        out.append(f"- **{s.label}**: " + "; ".join(describe_change(raw, s, m) for m in s.vs_raw))
    out += ["", "### 95% confidence intervals of each system (BCa bootstrap over queries)", "",
            "| system | " + " | ".join(CI_METRICS) + " |", "|---|" + "---|" * len(CI_METRICS)]
    for s in ev.systems.values():
        out.append(f"| {s.label} | " + " | ".join(f"{_f(s.means[m])} [{_f(s.ci95[m][0])}, {_f(s.ci95[m][1])}]"
                                                  for m in CI_METRICS) + " |")
    hnsw = [s for s in ev.systems.values() if s.hnsw is not None]
    if hnsw:
        out += ["", "### Chroma HNSW (what the app returns) against exact search", "",
                "| system | collection | Recall@10 exact | Recall@10 HNSW | MRR@10 exact | MRR@10 HNSW | nDCG@10 HNSW | HNSW recall@10 vs exact |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in hnsw:
            h = s.hnsw
            if "skipped" in h:
                out.append(f"| {s.label} | not checked: {h['skipped']} | {_f(s.means['Recall@10'])} | | "
                           f"{_f(s.means['MRR@10'])} | | | |")
            else:
                m = h["metrics"]
                out.append(f"| {s.label} | {h['collection']} | {_f(s.means['Recall@10'])} | {_f(m['Recall@10'])} | "
                           f"{_f(s.means['MRR@10'])} | {_f(m['MRR@10'])} | {_f(m['nDCG@10'])} | {_f(h['recall@10_vs_exact'])} |")
    thr = [s for s in ev.systems.values() if s.threshold]
    if thr:
        pc = ev.pair_counts
        heldout = ev.scope.startswith("held-out")
        out += ["", "### Threshold accuracy (the original study's metric)", "",
                "Pairs from the store's mined examples: (query, positive) against (query, weak = random negative) or "
                "(query, hard = nearest non-answer under raw embeddings). Only the dense systems have it: it "
                "thresholds a cosine, and a fused or BM25 score is not one. One negative per positive per query, so "
                "chance is 50%. The threshold is chosen on the **dev** split's pairs and the accuracy reported on the "
                + ("**held-out queries'** own pairs (negatives mined at eval time by ingest's rule)"
                   if heldout else "**test** split's pairs")
                + " (± binomial standard error). "
                + ", ".join(f"{k}: {c['dev_pos']}+{c['dev_neg']} dev pairs, {c['test_pos']}+{c['test_neg']} "
                            f"{'held-out' if heldout else 'test'} pairs"
                            for k, c in pc.items()) + ".", "",
                "| system | weak: test accuracy ± SE | weak: threshold | hard: test accuracy ± SE | hard: threshold |",
                "|---|---:|---:|---:|---:|"]
        for s in thr:
            cells = []
            for kind in ("weak", "hard"):
                t = s.threshold.get(kind)
                cells += ([f"{_f(t['accuracy'])} ± {_f(t['se'])}", _f(t["threshold"])] if t else ["n/a", "n/a"])
            out.append(f"| {s.label} | " + " | ".join(cells) + " |")
    if ev.figures:
        out += ["", "### Figures", ""]
        out += [f"- [{render.figure_caption(key)}]({path})" for key, path in ev.figures.items()]
    if ev.notes:
        out += ["", "### Notes", ""] + [f"- {n}" for n in ev.notes]
    out.append("")
    return out


def _summary_cell(ev: ModelEvaluation, key: str) -> str:
    if key not in ev.systems:
        return "n/a"
    s = ev.systems[key]
    v = s.vs_raw[PRIMARY_METRIC]
    return f"{_f(s.means[PRIMARY_METRIC])} ({_signed(v['delta'])}, {_pval(v['p'])})"


def _figure_files(outcome: EvalOutcome) -> dict[str, bytes | str]:
    """Every figure file of the run (the forest plot) and of each model: path inside the report -> content."""
    return {rel: content for files in [outcome.figure_files] + [ev.figure_files for ev in outcome.models]
            for rel, content in files.items()}


def report_md(outcome: EvalOutcome, metrics: dict | None = None, details: dict | None = None) -> str:
    """report.md; `metrics` and `details` are the run's metrics.json and details.json objects when the caller
    already made them (computed here otherwise)."""
    cfg = outcome.config
    scope = (f"held-out queries `{cfg.queries}` with qrels `{cfg.qrels}`" if cfg.heldout
             else f"the store's **{cfg.split} split**")
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = [f"# embedfit evaluation report ({__version__})", "",
           f"Store `{cfg.store}`; {scope}; generated {when} in {outcome.seconds:.0f} s.", "",
           ("Every system is ranked by exact cosine search over the same stored passage vectors and scored on the same "
            "queries; intervals are 95% BCa bootstrap over queries, p-values are paired permutation tests against the "
            "raw embeddings of the same model."), ""]
    metrics = metrics if metrics is not None else metrics_json(outcome)
    details = details if details is not None else details_json(outcome)
    for model, obj in render.blocks(metrics):
        out += [render.card_markdown(render.card(obj), model), "", render.systems_table(obj).markdown(), ""]
        st = render.seen_table(obj)
        if st is not None:
            out += [st.markdown(), ""]
    if outcome.figures.get("forest"):
        out += [f"![{render.FIGURE_NAMES['forest']}]({outcome.figures['forest']})", ""]
    out += ["The sections below are the details: every metric, the paired tests, threshold accuracy, the HNSW check, "
            "each figure. `report.html` beside this file shows the same report with its figures, in one file.", ""]
    if len(outcome.models) > 1:
        out += ["| model | queries | raw MRR@10 | adapted MRR@10 | BM25 MRR@10 | MSE baseline MRR@10 |",
                "|---|---:|---:|---:|---:|---:|"]
        for ev in outcome.models:
            cells = [_summary_cell(ev, k) for k in ("adapted", "bm25", "mse_baseline")]
            out.append(f"| {ev.model} | {ev.n_queries} | {_f(ev.systems['raw'].means[PRIMARY_METRIC])} | " + " | ".join(cells) + " |")
        out.append("")
    for ev in outcome.models:
        out += _model_section(ev)
        out += ["### What each system is", ""] + [f"- {line}" for line in render.system_details(details["models"][ev.model])] + [""]
    return "\n".join(out)


def write_reports(outcome: EvalOutcome, out: Path) -> None:
    """Write metrics.json, details.json, report.md, report.html and the figures into `out` (checked by the caller)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for rel, content in _figure_files(outcome).items():
        write = atomic.write_bytes if isinstance(content, bytes) else atomic.write_text
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write(out / rel, content)
    if any(rel.endswith(".html") for ev in outcome.models for rel in ev.figure_files):
        atomic.write_text(out / "figures" / plots.PLOTLY_JS, plots.plotly_js())
    metrics, details = metrics_json(outcome), details_json(outcome)
    atomic.write_json(out / "metrics.json", metrics)  # undefined numbers (NaN) are written as null
    atomic.write_json(out / "details.json", details)
    atomic.write_text(out / "report.md", report_md(outcome, metrics, details))
    atomic.write_text(out / "report.html", report_html(outcome, metrics, details))
    log.info("wrote %s, %s, %s and %s", out / "metrics.json", out / "details.json", out / "report.md", out / "report.html")


def report_html(outcome: EvalOutcome, metrics: dict | None = None, details: dict | None = None) -> str:
    """`report.html`: the same report, every figure embedded (`embedfit.report.render`): one file, opens offline."""
    images = {rel: content for rel, content in _figure_files(outcome).items()
              if isinstance(content, bytes) and rel.endswith(".png")}
    store = Path(outcome.config.store)
    title = f"embedfit evaluation report: {store.parent.name}/{store.name}"
    return render.report_html(metrics if metrics is not None else metrics_json(outcome),
                              details if details is not None else details_json(outcome), images, title)
