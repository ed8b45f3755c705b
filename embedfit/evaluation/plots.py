"""The figures of the eval report: matplotlib PNGs (Agg backend, no display needed) and one plotly HTML.

- `similarity_histograms`: cosine of (query, positive) vs (query, weak / hard negative) test pairs,
  one row per system, with the dev-chosen threshold drawn in. Separation is what the cookbook objective
  optimises; the histograms show whether it came at the cost of ranking (compare with recall@k).
- `latent_space`: queries and passages projected to 2-D by PCA, fitted separately in each space (raw,
  adapted), with lines from a sample of queries to their positive passages. PCA is linear and
  deterministic, so a shape that changes between panels changed in the embeddings, not in the plot.
  The HTML version adds hover text (the question, the passage title and opening words).
- `recall_curves`: Recall@k against k for every system.
- `learning_curve_png`, `dims_png`: the figures of `embedfit eval learning-curve` and `embedfit eval dims`.
- the training curves of an adapter (train loss and dev metrics per epoch, from its `curves.json`) are drawn by
  training's own `embedfit.adapters.curves.curves_png`, so the figure is the same one training saves.

Every function returns the figure's bytes (or text) and writes nothing: an evaluation is computed in memory and
`embedfit.evaluation.report.write_reports` writes it, figures included.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from embedfit.adapters.select import Point  # noqa: E402

log = logging.getLogger(__name__)

#: what names a selection point (a row of `selection.points`): the chosen one is the point equal on all of them
POINT_KEYS = tuple(f.name for f in dataclasses.fields(Point))

DPI = 110
COLORS = {"query": "#1f77b4", "positive": "#ff7f0e", "passage": "#b0b0b0", "line": "#2ca02c"}


def _png_bytes(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _tight_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def read_curves(adapter_dir: str | Path) -> list[dict] | None:
    """The adapter's `curves.json` (a list of per-epoch dicts), or None when absent or unreadable."""
    path = Path(adapter_dir) / "curves.json"
    if not path.exists():
        return None
    try:
        curves = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        log.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return None
    if isinstance(curves, dict):  # tolerate {"curves": [...]} as well
        curves = curves.get("curves")
    if not (isinstance(curves, list) and curves and all(isinstance(c, dict) and "epoch" in c for c in curves)):
        log.warning("ignoring %s: expected a list of per-epoch objects with an 'epoch' key", path)
        return None
    return curves


def similarity_histograms(rows: list[tuple[str, dict]], title: str) -> bytes:
    """The PNG of one histogram per (system, pair kind). `rows`: (system label, {pair kind: (pos scores,
    neg scores, threshold or None, test accuracy or None)})."""
    kinds = sorted({k for _, d in rows for k in d}, key=lambda k: ("weak", "hard").index(k) if k in ("weak", "hard") else 9)
    fig, axes = plt.subplots(len(rows), len(kinds), figsize=(5.2 * len(kinds), 2.8 * len(rows)), squeeze=False)
    bins = np.linspace(-0.4, 1.0, 57)
    for r, (label, per_kind) in enumerate(rows):
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            if kind not in per_kind:
                ax.set_axis_off()
                continue
            pos, neg, thr, acc = per_kind[kind]
            lo = min(bins[0], float(np.min(pos)), float(np.min(neg)))
            b = bins if lo >= bins[0] else np.linspace(lo, 1.0, 57)
            ax.hist(neg, bins=b, alpha=0.6, color="#d62728", label=f"{kind} negatives (n={len(neg)})", density=True)
            ax.hist(pos, bins=b, alpha=0.6, color="#2ca02c", label=f"positives (n={len(pos)})", density=True)
            if thr is not None:
                ax.axvline(thr, color="black", lw=1, ls="--", label=f"dev threshold {thr:.3f}")
            sub = f"{label}\nvs {kind} negatives" + (f": test accuracy {acc:.3f}" if acc is not None else "")
            ax.set_title(sub, fontsize=9)
            ax.set_xlabel("cosine similarity", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _tight_png(fig)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA  # lazy: scikit-learn costs ~1 s to import and only this plot uses it

    return PCA(n_components=2, random_state=0).fit_transform(x)


def latent_space(spaces: list[tuple[str, np.ndarray, np.ndarray]], lines: list[tuple[int, int]], n_positive: int,
                 query_text: list[str], passage_text: list[str], title: str,
                 html: bool = True) -> tuple[bytes, str | None]:
    """The PNG and (with `html`) the interactive page's HTML of a PCA view. `spaces`: (label, query vectors,
    passage vectors), the same sample in each space. Passage rows
    `[:n_positive]` are positives of the sampled queries, the rest random passages; `lines` are
    (query row, passage row) pairs to connect."""
    projected = []
    for label, qv, pv in spaces:
        xy = _pca_2d(np.concatenate([qv, pv]))
        projected.append((label, xy[: len(qv)], xy[len(qv):]))
    fig, axes = plt.subplots(1, len(projected), figsize=(6.2 * len(projected), 5.6), squeeze=False)
    for ax, (label, qxy, pxy) in zip(axes[0], projected):
        ax.scatter(pxy[n_positive:, 0], pxy[n_positive:, 1], s=5, c=COLORS["passage"], label="random passages")
        ax.scatter(pxy[:n_positive, 0], pxy[:n_positive, 1], s=9, c=COLORS["positive"], label="positive passages")
        ax.scatter(qxy[:, 0], qxy[:, 1], s=9, c=COLORS["query"], marker="^", label="queries")
        for qi, pj in lines:
            ax.plot([qxy[qi, 0], pxy[pj, 0]], [qxy[qi, 1], pxy[pj, 1]], c=COLORS["line"], lw=0.6, alpha=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title + f"\nlines: {len(lines)} query -> positive pairs", fontsize=10)
    fig.tight_layout()
    png = _tight_png(fig)
    return png, (_latent_space_html(projected, lines, n_positive, query_text, passage_text, title) if html else None)


#: the plotly library the interactive pages load: one copy per report, `figures/plotly.min.js` (works offline,
#: unlike a CDN link); `plotly_js()` is its text
PLOTLY_JS = "plotly.min.js"


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _latent_space_html(projected, lines, n_positive, query_text, passage_text, title) -> str:
    """The page's HTML, kept in `figures/MODEL/`; it loads `figures/PLOTLY_JS`, written once per report."""
    import plotly.graph_objects as go  # lazy: plotly is heavy and only the interactive page uses it
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(projected), subplot_titles=[p[0] for p in projected])
    for c, (label, qxy, pxy) in enumerate(projected, start=1):
        first = c == 1
        lx, ly = [], []
        for qi, pj in lines:
            lx += [qxy[qi, 0], pxy[pj, 0], None]
            ly += [qxy[qi, 1], pxy[pj, 1], None]
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color=COLORS["line"], width=1),
                                 name="query -> positive", legendgroup="l", showlegend=first, hoverinfo="skip"), 1, c)
        fig.add_trace(go.Scattergl(x=pxy[n_positive:, 0], y=pxy[n_positive:, 1], mode="markers",
                                   marker=dict(size=4, color=COLORS["passage"]), name="random passages",
                                   legendgroup="r", showlegend=first, text=passage_text[n_positive:],
                                   hoverinfo="text"), 1, c)
        fig.add_trace(go.Scattergl(x=pxy[:n_positive, 0], y=pxy[:n_positive, 1], mode="markers",
                                   marker=dict(size=6, color=COLORS["positive"]), name="positive passages",
                                   legendgroup="p", showlegend=first, text=passage_text[:n_positive],
                                   hoverinfo="text"), 1, c)
        fig.add_trace(go.Scattergl(x=qxy[:, 0], y=qxy[:, 1], mode="markers",
                                   marker=dict(size=7, color=COLORS["query"], symbol="triangle-up"),
                                   name="queries", legendgroup="q", showlegend=first, text=query_text,
                                   hoverinfo="text"), 1, c)
    fig.update_layout(title=title, height=650, width=620 * len(projected), template="plotly_white")
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig.to_html(include_plotlyjs=f"../{PLOTLY_JS}", full_html=True)


def recall_curves(curves: dict[str, dict[int, float]], title: str) -> bytes:
    """The PNG of Recall@k per system. `curves`: system label -> {k: mean Recall@k}."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel("Recall@k")
    lowest = min((v for c in curves.values() for v in c.values()), default=0.0)
    ax.set_ylim(max(0.0, np.floor((lowest - 0.05) * 10) / 10), 1.0)  # zoom in where the curves are
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _tight_png(fig)


def learning_curve_png(curve: dict) -> bytes:
    """`embedfit.evaluation.learning_curve`: the gain against the number of labels, overall / seen / unseen, with 95% bands."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for part, style in (("gain", "-o"), ("seen", "--s"), ("unseen", ":^")):
        pts = [p for p in curve["points"] if p.get(part)]
        x = [p["labels"] for p in pts]
        y = [p[part]["mean"] for p in pts]
        lo = [p[part]["ci95"][0] for p in pts]
        hi = [p[part]["ci95"][1] for p in pts]
        label = {"gain": "all test queries", "seen": "seen documents", "unseen": "new documents"}[part]
        ax.plot(x, y, style, label=label)
        ax.fill_between(x, lo, hi, alpha=0.15)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("labelled queries (train + dev) used to select and fit")
    ax.set_ylabel(f"{curve['metric']} gain over raw (test)")
    ax.set_title(f"{curve['model']}: how many labels? (95% CI over test queries)", fontsize=10)
    ax.legend(fontsize=8)
    return _png_bytes(fig)


def dims_png(out: dict) -> bytes:
    """`embedfit.evaluation.dims`: nDCG@10 against bytes per vector for each way of shrinking the vectors, raw as a star."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    raw = next(r for r in out["rows"] if r["method"] == "raw")
    for method, style in (("truncate", ":^"), ("pca", "--s"), ("adapter", "-o")):
        rs = sorted((r for r in out["rows"] if r["method"] == method), key=lambda r: r["dim"])
        ax.plot([r["bytes"] for r in rs], [r["nDCG@10"] for r in rs], style, label=method)
    ax.plot([raw["bytes"]], [raw["nDCG@10"]], "k*", markersize=12, label=f"raw ({raw['dim']}-d)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (float32)")
    ax.set_ylabel("nDCG@10 (test)")
    ax.set_title(f"{out['model']}: smaller vectors", fontsize=10)
    ax.legend(fontsize=8)
    return _png_bytes(fig)


# -- the verdict's figures: the forest plot and the selection at a glance ----------------------------------------

FOREST_PARTS = ("overall", "seen", "unseen")
SIGNIFICANT = 0.05


def forest_figure(panels: list[dict], metric: str):
    """Every system's change against raw with its 95% interval: one row of panels per model, overall / seen /
    unseen side by side. `panels`: [{"model", "n": {part: queries}, "rows": [{"system", "label",
    PART: {"delta", "ci95", "p"} | None}]}]. Green: significantly better than raw (p < 0.05); red: significantly
    worse; grey: no significant change. Returns the matplotlib figure (each point is an errorbar labelled with its
    system key, so a test can read what was drawn); `forest_png` renders it."""
    n_rows = max(len(p["rows"]) for p in panels) if panels else 1
    fig, axes = plt.subplots(len(panels) or 1, 3, figsize=(12, 0.9 + 0.42 * n_rows * max(len(panels), 1) + 0.6),
                             squeeze=False, sharex="row")
    for r, panel in enumerate(panels):
        rows = panel["rows"][::-1]  # first system on top
        for c, part in enumerate(FOREST_PARTS):
            ax = axes[r][c]
            for y, row in enumerate(rows):
                v = row.get(part)
                if not v:
                    continue
                d, (lo, hi), p = v["delta"], v["ci95"], v["p"]
                color = ("#2ca02c" if d > 0 else "#d62728") if p < SIGNIFICANT else "#7f7f7f"
                ax.errorbar([d], [y], xerr=[[max(d - lo, 0.0)], [max(hi - d, 0.0)]], fmt="o", color=color,
                            ecolor=color, capsize=3, ms=5, label=row["system"])
            ax.axvline(0, color="black", linewidth=0.8)
            if not any(row.get(part) for row in rows):
                ax.text(0.5, 0.5, f"no {part} queries", transform=ax.transAxes, ha="center", va="center",
                        color="#57606a", fontsize=9, bbox={"facecolor": "white", "edgecolor": "none"})
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels([row["label"] for row in rows] if c == 0 else [""] * len(rows), fontsize=8)
            ax.set_ylim(-0.6, len(rows) - 0.4)
            ax.grid(axis="x", alpha=0.3)
            n = panel.get("n", {}).get(part)
            ax.set_title(f"{panel['model']}: {part}" + (f" ({n} queries)" if n is not None else ""), fontsize=9)
            ax.set_xlabel(f"Δ {metric} against raw (95% CI)", fontsize=8)
    return fig


def forest_png(panels: list[dict], metric: str) -> bytes:
    return _tight_png(forest_figure(panels, metric))


def selection_png(selection: dict, label: str) -> bytes | None:
    """`selection_figure` as PNG bytes, or None when there is nothing to draw."""
    fig = selection_figure(selection, label)
    return None if fig is None else _tight_png(fig)


def selection_figure(selection: dict, label: str):
    """Selection at a glance: the dev metric of every point selection scored (left: trained families against
    epochs; right: the memory's alpha and NUDGE-N's gamma), identity as a dashed line, the chosen point a star,
    refused points (they cost the unseen held-out queries) as grey crosses. None when the adapter records no
    selection (trained by `embedfit train --selection last|best`). Returns the matplotlib figure."""
    points = selection.get("points") or selection.get("table") or []
    if not points:
        return None
    metric = selection.get("metric", "metric")
    chosen = selection.get("chosen") or {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    identity = [p["mean"] for p in points if p.get("method") == "identity"]
    families: dict[tuple, list[dict]] = {}
    for p in points:
        if p.get("method") == "identity":
            continue
        by_epochs = p.get("epochs") is not None
        fam = (by_epochs, p.get("method"), p.get("candidates"), p.get("temperature"),
               p.get("alpha") if by_epochs else None, p.get("margin"), p.get("centred"), p.get("prior"))
        families.setdefault(fam, []).append(p)
    for (by_epochs, method, cand, temp, alpha, margin, centred, prior), pts in families.items():
        ax = left if by_epochs else right
        xkey = "epochs" if by_epochs else "alpha"
        pts = sorted(pts, key=lambda p: p[xkey])
        name = method + (f", {cand}" if cand else "") + (f", T {temp:g}" if isinstance(temp, (int, float)) else "") \
            + (f", α {alpha:g}" if isinstance(alpha, (int, float)) else "") \
            + (f", bounded (margin {margin:g})" if isinstance(margin, (int, float)) else "") \
            + (", centred" if centred else "") + (f", through BM25 {prior:g}" if prior else "")
        ok = [p for p in pts if not p.get("refused", p.get("guarded", False))]
        line, = ax.plot([p[xkey] for p in pts], [p["mean"] for p in pts], "-", alpha=0.5, label=name)
        ax.plot([p[xkey] for p in ok], [p["mean"] for p in ok], "o", ms=4, color=line.get_color())
        bad = [p for p in pts if p not in ok]
        if bad:
            ax.plot([p[xkey] for p in bad], [p["mean"] for p in bad], "x", ms=7, color="#7f7f7f",
                    label="refused: costs unseen queries" if not any(
                        "refused" in str(t.get_label()) for t in ax.get_lines()) else None)
        for p in pts:
            if all(p.get(k) == chosen.get(k) for k in POINT_KEYS):
                ax.plot([p[xkey]], [p["mean"]], "*", ms=16, color="gold", markeredgecolor="black", label="chosen",
                        zorder=5)
    for ax, xlabel in ((left, "epochs"), (right, "memory α / NUDGE-N γ")):
        if identity:
            ax.axhline(identity[0], color="black", linestyle="--", linewidth=1, label="identity (raw)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    left.set_ylabel(f"dev {metric}{' with BM25' if selection.get('served') == 'fused' else ''} (mean over folds)")
    if chosen.get("method") == "identity":
        fig.suptitle(f"{label}: selection chose the identity (nothing beat raw on dev)", fontsize=10)
    else:
        fig.suptitle(f"{label}: selection at a glance", fontsize=10)
    return fig
