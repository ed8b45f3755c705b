"""The "Eval report" tab's content, read from the eval output folder (`load_report`).

    REPORT/metrics.json   the numbers and the decision card (`embedfit.evaluation.report`'s schema)
    REPORT/details.json   labels, notes, the HNSW check, and where eval put each figure
                          ({"figures": {"forest": ...}, "models": {MODEL: {"figures": {key: "figures/MODEL/NAME.png"}}}})

The tab shows exactly what `report.html` shows (one renderer: `embedfit.report.render`): the decision card first,
then the forest plot, the systems table, seen / unseen, the selection figure, the rest collapsed, then the other
figures. Figures are read into memory, checked to be PNG images and put into the page as `data:` URIs, so no file
is ever served from the report, store or repository folders (nor copied into Gradio's cache), and a path in a
crafted details.json cannot make the page read a file outside the report folder.
"""
from __future__ import annotations

import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from embedfit.outputs import read_json_object
from embedfit.report import render

log = logging.getLogger(__name__)

MAX_IMAGES = 40
MAX_IMAGE_BYTES = 5 * 1024 * 1024


@dataclass
class ReportView:
    html: str
    #: figure path inside the report -> PNG bytes (each checked), as shown
    images: dict[str, bytes] = field(default_factory=dict)
    found: bool = False


def missing_note(folder: Path, store: Path, adapter_dir: Path) -> str:
    return (f"No eval report in `{folder}` yet. Make one with:\n\n"
            f"    embedfit eval --store {store} --adapter {adapter_dir} --out {folder}\n\n"
            "then press *Reload report*.")


def _message(text: str) -> str:
    return f'<div class="ef-report-missing"><pre>{html.escape(text)}</pre></div>'


def load_report(folder: Path, model: str, store: Path, adapter_dir: Path) -> ReportView:
    """The report in `folder`, drawn as `report.html` draws it (the app's model first), or how to make one."""
    folder = Path(folder)
    metrics_path = folder / "metrics.json"
    if not metrics_path.exists():
        return ReportView(html=_message(missing_note(folder, store, adapter_dir)))
    try:
        metrics = json.loads(metrics_path.read_text("utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        return ReportView(html=_message(f"{metrics_path} could not be read ({exc}); re-run eval."))
    details = read_json_object(folder / "details.json") or {}
    images = _read_images(folder, model)
    try:
        body = render.body_html(metrics, details, images, first_model=model)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited or foreign metrics.json
        log.warning("report in %s could not be drawn: %s", folder, exc)
        return ReportView(html=_message(f"The report in {folder} could not be drawn ({exc!r}); re-run eval."))
    where = (f'<p class="ef-note">From <code>{html.escape(str(folder))}</code>: <code>report.html</code> there is '
             "this page in one file; <code>report.md</code> the long read.</p>")
    return ReportView(html=body + where, images=images, found=True)


def figure_list(folder: Path, model: str) -> list[tuple[Path, str]]:
    """(PNG path, its path as details.json gives it) of every figure eval's details.json lists: the run's (the
    forest plot), then each model's, the app's model first.

    Paths come from the file, so each must stay inside the report folder (a crafted details.json cannot
    make the page read /etc/passwd); anything else is skipped with a warning."""
    details = read_json_object(folder / "details.json")
    if not details:
        return []
    models = details.get("models") if isinstance(details.get("models"), dict) else {}
    groups = [("run", details.get("figures"))]
    groups += [(name, models[name].get("figures") if isinstance(models[name], dict) else None)
               for name in sorted(models, key=lambda m: (m != model, m))]
    root = folder.resolve()
    out: list[tuple[Path, str]] = []
    for name, figures in groups:
        for rel in (figures if isinstance(figures, dict) else {}).values():
            if not isinstance(rel, str) or not rel.endswith(".png"):
                continue
            path = (folder / rel).resolve()
            if not path.is_relative_to(root):
                log.warning("skipping figure %r of %s: outside the report folder", rel, name)
                continue
            out.append((path, rel))
    return out


def _read_images(folder: Path, model: str) -> dict[str, bytes]:
    """Figure path (as details.json gives it) -> bytes of each listed figure that is a readable PNG no larger than
    MAX_IMAGE_BYTES; the rest are skipped and logged."""
    if not folder.is_dir():
        return {}
    out = {}
    for path, key in figure_list(folder, model)[:MAX_IMAGES]:
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                log.warning("skipping %s: larger than %d bytes", path, MAX_IMAGE_BYTES)
                continue
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "PNG":
                    raise OSError(f"not a PNG but {im.format}")
                im.verify()
            out[key] = data
        except (OSError, SyntaxError) as exc:  # PIL raises SyntaxError for some broken PNGs
            log.warning("skipping unreadable image %s (%s)", path, exc)
    return out
