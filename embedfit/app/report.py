"""The "Eval report" tab's content, read from the eval output folder (`load_report`).

    REPORT/metrics.json   {"model", "adapter", "n_queries", "retrieval": {"raw": {...}, "adapted": {...}, ...},
                           "ci95", "p_value_adapted_vs_raw", "threshold_accuracy"}  (or {"models": {MODEL: {...}}})
    REPORT/report.md      eval's own write-up
    REPORT/details.json   {"models": {MODEL: {"figures": {key: "figures/MODEL/NAME.png", ...}}}}: the plots
                          eval made for each model (similarity histograms, Recall@k, latent space, training
                          curves), read from where eval says it put them

The metrics table puts the raw baseline beside every delta (an adapter's gain means nothing
without the number it is a gain over). Plots are read into memory, checked to be PNG images, and put
into the page as `data:` URIs, so no file is ever served from the report, store or repository folders
(nor copied into Gradio's cache).
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from embedfit.outputs import read_json_object

log = logging.getLogger(__name__)

MAX_IMAGES = 24
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_SYSTEM_ORDER = ("adapted", "bm25", "mse_baseline")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
#: eval's report.md links its figures by relative path; the page shows the PNGs inline instead
_MD_FIGURE_LINK = re.compile(r"\[([^\]]*)\]\((figures/[^)]*)\)")


@dataclass
class ReportView:
    markdown: str
    images: list[tuple[bytes, str]] = field(default_factory=list)  # (PNG bytes, caption)
    found: bool = False


def missing_note(folder: Path, store: Path, adapter_dir: Path) -> str:
    return (f"No eval report in `{folder}` yet. Make one with:\n\n"
            f"    embedfit eval --store {store} --adapter {adapter_dir} --out {folder}\n\n"
            "then press *Reload report*.")


def load_report(folder: Path, model: str, store: Path, adapter_dir: Path) -> ReportView:
    """Whatever of metrics.json, report.md and the PNGs exists in `folder`, ready to show."""
    folder = Path(folder)
    parts: list[str] = []
    metrics_path, md_path = folder / "metrics.json", folder / "report.md"
    if metrics_path.exists():
        try:
            parts.append(metrics_markdown(json.loads(metrics_path.read_text("utf-8")), model))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            parts.append(f"`{metrics_path}` could not be read ({exc}); re-run eval.")
    if md_path.exists():
        text = md_path.read_text("utf-8", errors="replace")
        text = _MD_IMAGE.sub(lambda m: f"*({m.group(1) or 'plot'}: shown below)*", text)
        def where(m: re.Match) -> str:
            shown = "shown below" if m.group(2).endswith(".png") else f"file `{m.group(2)}` in the report folder"
            return f"{m.group(1)} *({shown})*"

        text = _MD_FIGURE_LINK.sub(where, text)
        parts.append("---\n\n" + text)
    images = _read_images(folder, model)
    if not parts and not images:
        return ReportView(markdown=missing_note(folder, store, adapter_dir))
    return ReportView(markdown="\n\n".join(parts) or "(no metrics.json or report.md, only plots)", images=images, found=True)


FIGURE_NAMES = {"similarity_hist": "cosine of test pairs, raw vs adapted", "recall_at_k": "Recall@k",
                "latent_space": "latent space (2-d projection)"}


def figure_list(folder: Path, model: str) -> list[tuple[Path, str]]:
    """(PNG path, caption) of every figure eval's details.json lists, the app's model first.

    Paths come from the file, so each must stay inside the report folder (a crafted details.json cannot
    make the page read /etc/passwd); anything else is skipped with a warning."""
    details = read_json_object(folder / "details.json")
    models = details.get("models") if details else None
    if not isinstance(models, dict):
        return []
    root = folder.resolve()
    out: list[tuple[Path, str]] = []
    for name in sorted(models, key=lambda m: (m != model, m)):
        figures = models[name].get("figures") if isinstance(models[name], dict) else None
        for key, rel in (figures or {}).items():
            if not isinstance(rel, str) or not rel.endswith(".png"):
                continue
            path = (folder / rel).resolve()
            if not path.is_relative_to(root):
                log.warning("skipping figure %r of %s: outside the report folder", rel, name)
                continue
            what = FIGURE_NAMES.get(key) or (f"training curves of {key.split(':', 1)[1]}" if key.startswith("training:")
                                             else key.replace("_", " "))
            out.append((path, f"{name}: {what}"))
    return out


def _read_images(folder: Path, model: str) -> list[tuple[bytes, str]]:
    if not folder.is_dir():
        return []
    out: list[tuple[bytes, str]] = []
    for path, caption in figure_list(folder, model)[:MAX_IMAGES]:
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                log.warning("skipping %s: larger than %d bytes", path, MAX_IMAGE_BYTES)
                continue
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "PNG":
                    raise OSError(f"not a PNG but {im.format}")
                im.verify()
            out.append((data, caption))
        except (OSError, SyntaxError) as exc:  # PIL raises SyntaxError for some broken PNGs
            log.warning("skipping unreadable image %s (%s)", path, exc)
    return out


def plots_html(images: list[tuple[bytes, str]]) -> str:
    """The plots as inline images in a two-column grid (nothing for Gradio to serve from disk)."""
    if not images:
        return ""
    figures = "".join(
        f'<figure class="ef-plot"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for data, caption in images)
    return f'<div class="ef-plots">{figures}</div>'


def _blocks(metrics: dict, model: str) -> list[tuple[str | None, dict]]:
    """(model, one model's metrics) pairs; the app's own model first."""
    models = metrics.get("models")
    if isinstance(models, dict):
        return sorted(((m, v) for m, v in models.items() if isinstance(v, dict)), key=lambda mv: mv[0] != model)
    return [(metrics.get("model"), metrics)]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _ci(ci95: Any, system: str, metric: str) -> str:
    pair = ci95.get(system, {}).get(metric) if isinstance(ci95, dict) and isinstance(ci95.get(system), dict) else None
    if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_num(v) is not None for v in pair):
        return f" [{pair[0]:.3f}, {pair[1]:.3f}]"
    return ""


def metrics_markdown(metrics: dict, model: str) -> str:
    """One table per model: raw, then each system with its delta against raw right beside it."""
    out = []
    for name, block in _blocks(metrics, model):
        retrieval = block.get("retrieval") if isinstance(block.get("retrieval"), dict) else {}
        raw = retrieval.get("raw")
        if not isinstance(raw, dict):
            out.append(f"### {name or 'metrics'}\n\n(metrics.json has no raw baseline; re-run eval)")
            continue
        systems = [s for s in _SYSTEM_ORDER if isinstance(retrieval.get(s), dict)]
        systems += sorted(s for s in retrieval if s not in systems and s != "raw" and isinstance(retrieval[s], dict))
        ci95 = block.get("ci95")
        header = ["Metric", "raw"]
        for s in systems:
            header += [s, f"Δ {s} − raw"]
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for metric, base in raw.items():
            b = _num(base)
            if b is None:
                continue
            cells = [metric, f"{b:.3f}{_ci(ci95, 'raw', metric)}"]
            for s in systems:
                v = _num(retrieval[s].get(metric))
                cells += ["–", "–"] if v is None else [f"{v:.3f}{_ci(ci95, s, metric)}", f"{v - b:+.3f}"]
            rows.append("| " + " | ".join(cells) + " |")
        title = f"### {name or 'Metrics'}"
        extra = []
        if block.get("adapter"):
            extra.append(f"adapter `{block['adapter']}`")
        if block.get("n_queries"):
            extra.append(f"{block['n_queries']} test queries")
        lines = [title + (f" ({', '.join(extra)})" if extra else ""), "", *rows]
        for key, label, prefix in (("p_value_adapted_vs_raw", "Paired permutation test, adapted vs raw", "p = "),
                                   ("threshold_accuracy", "Threshold accuracy (threshold chosen on dev)", "")):
            if key in block:
                lines += ["", f"**{label}:** {prefix}{_short(block[key])}"]
        if any("[" in row for row in rows[2:]):
            lines += ["", "Brackets: 95% bootstrap confidence interval."]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _short(value: Any) -> str:
    """A compact one-line rendering of a number or a small nested dict."""
    n = _num(value)
    if n is not None:
        return f"{n:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_short(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
