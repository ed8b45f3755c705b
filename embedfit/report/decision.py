"""The decision card: what to deploy, how much it gains, for whom, at what cost, read from one model's
`metrics.json` object (so the report, `report.html` and the page's Eval tab say the same thing, and a report
written earlier can be shown without re-running eval).

The rule, stated once:
1. Candidates are what a user can deploy with embedfit: the raw embeddings, BM25 alone, raw + BM25 (tuned fusion
   and RRF), each adapter and its hybrids. The MSE cookbook adapter and NUDGE are published baselines, reported
   beside them, not recommended.
2. A candidate qualifies when it beats raw on the primary metric significantly (paired permutation test,
   p < 0.05, positive change), and does not significantly hurt the unseen queries (those about documents its
   training never saw as answers): a customization that costs new queries is not recommended for everyone.
3. A customization (an adapter, or its hybrid) must also beat, significantly, the best system that needs none
   (`vs_best_non_adapter`); otherwise the cheaper system is the recommendation.
4. Of the qualifying candidates, the highest mean primary metric wins. None qualifies: keep the raw embeddings.

The numbers are those of the scored queries (the test split by default, the dev split with --split dev, or
held-out files): the recommendation is chosen on the queries it is scored on, so its gain is what was measured,
not a promise; the intervals say how far it could be off. A hybrid is recognised by its fusion entry (`fusion`),
not by its name.
"""
from __future__ import annotations

import math
from typing import Any

from embedfit.settings import PRIMARY_METRIC

ALPHA = 0.05
#: cheapest first: a tie in the metric goes to the cheaper system
PLAIN = ("raw", "raw_bm25", "raw_rrf", "bm25")


def is_customized(key: str) -> bool:
    return key == "adapted" or key.startswith(("adapted:", "adapted_"))


def _dense_key(obj: dict, key: str) -> str:
    """The dense system a hybrid fuses with BM25 (the key itself for a system that is not a hybrid)."""
    if key in (obj.get("fusion") or {}):
        for suffix in ("_bm25", "_rrf"):
            if key.endswith(suffix):
                return key[: -len(suffix)]
    return key


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def candidates(obj: dict) -> list[str]:
    """The deployable systems present in this metrics object, cheapest first."""
    retrieval = obj.get("retrieval") or {}
    present = [k for k, v in retrieval.items() if isinstance(v, dict)]
    return [k for k in PLAIN if k in present] + [k for k in present if is_customized(k)]


def _change(obj: dict, key: str, metric: str) -> dict | None:
    v = (obj.get("vs_raw") or {}).get(key, {}) or {}
    c = v.get(metric)
    return c if isinstance(c, dict) and _finite(c.get("delta")) and _finite(c.get("p")) else None


def has_tests(obj: dict) -> bool:
    """True when the object carries the paired tests a card is decided from (reports written before cards do not)."""
    return isinstance(obj.get("vs_raw"), dict)


def _subset(obj: dict, key: str, name: str, metric: str) -> dict | None:
    """{"n", "delta", "ci95", "p", "mean"} of `key` on the seen or unseen queries, or None."""
    su = obj.get("seen_unseen") or {}
    sub = (su.get(key) or {}).get(name)
    if not isinstance(sub, dict) or not isinstance(sub.get("vs_raw"), dict) or metric not in sub["vs_raw"]:
        return None
    v = sub["vs_raw"][metric]
    if not (isinstance(v, dict) and _finite(v.get("delta")) and _finite(v.get("p"))):
        return None
    return {"n": (su.get("n") or {}).get(name), "delta": v["delta"], "ci95": v.get("ci95"), "p": v["p"],
            "mean": (sub.get("means") or {}).get(metric)}


def _hurts_unseen(obj: dict, key: str, metric: str) -> bool:
    u = _subset(obj, key, "unseen", metric)
    return u is not None and u["delta"] < 0 and u["p"] < ALPHA


def _label(obj: dict, key: str) -> str:
    return (obj.get("labels") or {}).get(key, key)


def judge(obj: dict, key: str, metric: str = PRIMARY_METRIC) -> tuple[bool, str]:
    """(qualifies, why): rules 2 and 3 of the module docstring for one candidate."""
    if key == "raw":
        return True, "the baseline"
    c = _change(obj, key, metric)
    if c is None:
        return False, "no paired comparison with raw"
    if not (c["delta"] > 0 and c["p"] < ALPHA):
        word = "worse than" if c["delta"] < 0 and c["p"] < ALPHA else "not significantly better than"
        return False, f"{word} raw ({metric} {c['delta']:+.3f}, {_p(c['p'])})"
    if _hurts_unseen(obj, key, metric):
        u = _subset(obj, key, "unseen", metric)
        return False, (f"helps overall but hurts queries about new documents (unseen {metric} {u['delta']:+.3f}, "
                       f"{_p(u['p'])})")
    if is_customized(key):
        vb = (obj.get("vs_best_non_adapter") or {}).get(key) or {}
        v = vb.get(metric)
        if isinstance(v, dict) and _finite(v.get("delta")) and _finite(v.get("p")) and not (v["delta"] > 0 and v["p"] < ALPHA):
            word = "worse than" if v["delta"] < 0 and v["p"] < ALPHA else "not significantly better than"
            return False, (f"{word} {_label(obj, vb.get('system', 'raw'))}, which needs no "
                           f"customization ({metric} {v['delta']:+.3f}, {_p(v['p'])})")
    return True, f"beats raw ({metric} {c['delta']:+.3f}, {_p(c['p'])})"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _mean(obj: dict, key: str, metric: str) -> float:
    return float(obj["retrieval"][key][metric])


def steps(obj: dict, key: str, metric: str = PRIMARY_METRIC) -> list[dict]:
    """What each step adds on the way from raw to `key`: BM25 fusion, then the customization (means' changes)."""
    if key == "raw":
        return []
    m = lambda k: _mean(obj, k, metric)  # noqa: E731
    dense = _dense_key(obj, key)
    if key == dense or key == "bm25":
        what = "customization" if is_customized(key) else ("BM25 instead of dense" if key == "bm25" else key)
        return [{"step": what, "label": _label(obj, key), "delta": m(key) - m("raw"), "mean": m(key)}]
    suffix = key[len(dense):]
    raw_hybrid = "raw" + suffix
    out = [{"step": "BM25 fusion", "label": _label(obj, raw_hybrid), "delta": m(raw_hybrid) - m("raw"),
            "mean": m(raw_hybrid)}] if raw_hybrid in obj["retrieval"] and obj["retrieval"][raw_hybrid] else []
    if dense != "raw":
        start = m(raw_hybrid) if out else m("raw")
        out.append({"step": "customization", "label": _label(obj, key), "delta": m(key) - start, "mean": m(key)})
    return out


def decide(obj: dict, metric: str = PRIMARY_METRIC) -> dict:
    """The decision card's content for one model's metrics object (see the module docstring for the rule)."""
    keys = candidates(obj)
    verdicts = {k: judge(obj, k, metric) for k in keys}
    ok = [k for k in keys if verdicts[k][0]]
    best = max(ok, key=lambda k: (_mean(obj, k, metric), -keys.index(k)))
    raw_mean = _mean(obj, "raw", metric)
    gain = None
    if best != "raw":
        c = _change(obj, best, metric)
        gain = {"delta": c["delta"], "ci95": c.get("ci95"), "p": c["p"]}
    def why(k: str) -> str:
        if not verdicts[k][0]:
            return verdicts[k][1]
        return (f"also qualifies ({verdicts[k][1]}) but scores lower than the recommendation ({metric} "
                f"{_mean(obj, k, metric):.3f} against {_mean(obj, best, metric):.3f})")

    others = [{"system": k, "label": _label(obj, k), "why": why(k)} for k in keys if k not in (best, "raw")]
    return {
        "model": obj.get("model"),
        "metric": metric,
        "n_queries": obj.get("n_queries"),
        "recommended": best,
        "label": _label(obj, best) if best != "raw" else "keep the raw embeddings",
        "keep_raw": best == "raw",
        "mean": _mean(obj, best, metric),
        "raw_mean": raw_mean,
        "gain": gain,
        "steps": steps(obj, best, metric),
        "for_whom": {"seen": _subset(obj, best, "seen", metric), "unseen": _subset(obj, best, "unseen", metric),
                     "why": obj.get("seen_reason") or ""},
        "cost": (obj.get("costs") or {}).get(best),
        "others": others,
    }
