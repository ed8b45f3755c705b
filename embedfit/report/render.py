"""The report people look at: the decision card, the readable tables and `report.html`, drawn from what eval wrote
(`metrics.json` and `details.json` objects, figure bytes), never from the run in memory.

Drawing from the files means one renderer serves three places: eval writes `report.md`'s card and `report.html`
with it, and the page's Eval tab draws the same card and tables from a report folder (written now or months ago).
Every string that came from a file is escaped; images are embedded as `data:` URIs, so `report.html` is one file
that opens offline and the page serves nothing from disk.

Layout, the same in the file and on the page: the decision cards (one per model), the forest plot, then per model
the systems table (one system per row: the primary metrics with intervals), seen / unseen, the selection figure;
below, collapsed (`<details>`), the full metric grid, the paired tests, threshold accuracy, the fusion, the HNSW
check, each system's details (the adapter's folder appears there, once), the notes; then the other figures.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from embedfit.report.decision import decide, has_tests
from embedfit.settings import METRICS, PRIMARY_METRIC

SECOND_METRIC = "nDCG@10"

FIGURE_NAMES = {"forest": "change against raw, every system (forest plot)",
                "similarity_hist": "cosine of test pairs, per system", "recall_at_k": "Recall@k",
                "latent_space": "latent space (2-d projection)", "latent_space_html": "latent space, interactive",
                "learning_curve": "learning curve: the gain against the number of labels (eval learning-curve)",
                "dims": "smaller vectors: quality against bytes per vector (eval dims)"}


def figure_caption(key: str) -> str:
    """What a figure eval lists under `key` shows, in words: the same caption in report.md, report.html and the page."""
    if key in FIGURE_NAMES:
        return FIGURE_NAMES[key]
    for prefix, what in (("training:", "training curves of "), ("selection:", "how selection chose ")):
        if key.startswith(prefix):
            return what + key[len(prefix):]
    return key.replace("_", " ")


# -- numbers -------------------------------------------------------------------------------------------

def num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def f3(x: Any) -> str:
    v = num(x)
    return "n/a" if v is None else f"{v:.3f}"


def signed(x: Any) -> str:
    v = num(x)
    return "n/a" if v is None else f"{v:+.3f}"


def pval(p: Any) -> str:
    v = num(p)
    return "p n/a" if v is None else ("p<0.001" if v < 0.001 else f"p={v:.3f}")


def interval(ci: Any, sign: bool = False) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
        return ""
    fmt = signed if sign else f3
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def size(n: Any) -> str:
    v = num(n) or 0.0
    for unit in ("bytes", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "bytes" else f"{v:.1f} {unit}"
        v /= 1024
    return ""


def seconds(s: Any) -> str:
    v = num(s)
    if v is None:
        return "not recorded"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


# -- tables: one structure, two renderings -----------------------------------------------------------

@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    #: numeric columns (right-aligned)
    numeric: set[int] = field(default_factory=set)

    def markdown(self) -> str:
        align = "|" + "".join("---:|" if i in self.numeric else "---|" for i in range(len(self.header)))
        lines = [f"### {self.title}", ""] + ([self.note, ""] if self.note else [])
        lines += ["| " + " | ".join(self.header) + " |", align]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self, css_class: str = "ef-table") -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f'<td class="{"num" if i in self.numeric else ""}">{html.escape(str(c))}</td>'
                                        for i, c in enumerate(row)) + "</tr>" for row in self.rows)
        note = f'<p class="ef-note">{html.escape(str(self.note))}</p>' if self.note else ""
        return (f'{note}<table class="{css_class}"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")


def _labels(obj: Mapping) -> dict:
    return obj.get("labels") or {}


def _systems(obj: Mapping) -> list[str]:
    return [k for k, v in (obj.get("retrieval") or {}).items() if isinstance(v, dict)]


def _cell(obj: Mapping, key: str, metric: str) -> str:
    mean = ((obj.get("retrieval") or {}).get(key) or {}).get(metric)
    ci = ((obj.get("ci95") or {}).get(key) or {}).get(metric)
    return f"{f3(mean)} {interval(ci)}".strip()


def _delta(obj: Mapping, key: str, metric: str, with_ci: bool = True) -> str:
    if key == "raw":
        return "–"
    d = ((obj.get("vs_raw") or {}).get(key) or {}).get(metric)
    if not isinstance(d, dict):
        return "n/a"
    ci = f" {interval(d.get('ci95'), sign=True)}" if with_ci else ""
    return f"{signed(d.get('delta'))}{ci}, {pval(d.get('p'))}"


def systems_table(obj: Mapping) -> Table:
    """One system per row: the primary metric and nDCG@10 with their intervals and the change against raw."""
    labels = _labels(obj)
    rows = [[labels.get(k, k), _cell(obj, k, PRIMARY_METRIC), _delta(obj, k, PRIMARY_METRIC),
             _cell(obj, k, SECOND_METRIC), _delta(obj, k, SECOND_METRIC, with_ci=False)] for k in _systems(obj)]
    return Table("Every system on the same queries",
                 ["system", f"{PRIMARY_METRIC} [95% CI]", f"Δ {PRIMARY_METRIC} vs raw [95% CI], p", f"{SECOND_METRIC} [95% CI]",
                  f"Δ {SECOND_METRIC} vs raw, p"], rows,
                 note=(f"{obj.get('n_queries')} queries, exact search. Intervals: 95% BCa bootstrap over queries; "
                       "change: paired over the same queries, p from a paired permutation test."),
                 numeric={1, 2, 3, 4})


def seen_table(obj: Mapping) -> Table | None:
    su = obj.get("seen_unseen") or {}
    n = su.get("n") or {}
    if not n:
        return None
    labels = _labels(obj)
    rows = []
    for k in _systems(obj):
        cells = [labels.get(k, k)]
        for part in ("seen", "unseen"):
            sub = (su.get(k) or {}).get(part)
            if not isinstance(sub, dict):
                cells.append("n/a")
                continue
            cell = f"{f3((sub.get('means') or {}).get(PRIMARY_METRIC))} {interval((sub.get('ci95') or {}).get(PRIMARY_METRIC))}"
            v = (sub.get("vs_raw") or {}).get(PRIMARY_METRIC) if isinstance(sub.get("vs_raw"), dict) else None
            if isinstance(v, dict):
                cell += f" ({signed(v.get('delta'))}, {pval(v.get('p'))})"
            cells.append(cell.strip())
        rows.append(cells)
    note = ("Seen: every relevant passage of the query was an answer to some training query; unseen: at least one "
            "is new to training. " + (obj.get("seen_reason") or ""))
    return Table(f"For whom: seen and unseen queries ({PRIMARY_METRIC})",
                 ["system", f"seen ({n.get('seen', 0)} queries)", f"unseen ({n.get('unseen', 0)} queries)"], rows,
                 note=note.strip(), numeric={1, 2})


def metric_grid(obj: Mapping) -> Table:
    labels = _labels(obj)
    retrieval = obj.get("retrieval") or {}
    return Table("Every metric", ["system", *METRICS],
                 [[labels.get(k, k), *[f3(retrieval[k].get(m)) for m in METRICS]] for k in _systems(obj)],
                 note="Means over the scored queries, exact search.", numeric=set(range(1, len(METRICS) + 1)))


def paired_table(obj: Mapping) -> Table:
    labels = _labels(obj)
    rows = []
    for k in _systems(obj):
        for m, d in ((obj.get("vs_raw") or {}).get(k) or {}).items():
            rows.append([labels.get(k, k), m, signed(d.get("delta")), interval(d.get("ci95"), sign=True), pval(d.get("p"))])
    return Table("Paired tests against raw", ["system", "metric", "change", "95% CI of the change", "p"], rows,
                 note="Same queries: BCa bootstrap of the per-query difference; two-sided paired permutation test.",
                 numeric={2, 3, 4})


def threshold_table(obj: Mapping) -> Table | None:
    """Threshold accuracy per dense system, as a table (accuracy on the test pairs ± its standard error)."""
    thr = obj.get("threshold_accuracy") or {}
    labels = _labels(obj)
    keys = [k for k in _systems(obj) if any(num((thr.get(kind) or {}).get(k)) is not None for kind in ("weak", "hard"))]
    if not keys:
        return None
    rows = []
    for k in keys:
        cells = [labels.get(k, k)]
        for kind in ("weak", "hard"):
            t = thr.get(kind) or {}
            acc, se = num(t.get(k)), num(t.get(f"{k}_se"))
            cells.append("n/a" if acc is None else f"{acc:.3f} ± {se:.3f}" if se is not None else f"{acc:.3f}")
        rows.append(cells)
    return Table("Threshold accuracy", ["system", "weak negatives: accuracy ± SE", "hard negatives: accuracy ± SE"],
                 rows, note=("Does a cosine threshold, chosen on the dev split's pairs, tell a query's answer from a "
                             "random (weak) or nearest wrong (hard) passage on the test split's pairs? Chance: 0.5."),
                 numeric={1, 2})


def fusion_table(obj: Mapping) -> Table | None:
    fusion = obj.get("fusion") or {}
    if not fusion:
        return None
    labels = _labels(obj)
    rows = [[labels.get(k, k), str(f.get("method")), "" if f.get("method") == "rrf" else f"{num(f.get('weight')) or 0:g}",
             str(f.get("n")), str(f.get("chosen_on") or "not tuned"), str(f.get("source") or "")] for k, f in fusion.items()]
    return Table("Hybrid search: how each dense side is fused with BM25",
                 ["system", "method", "BM25 weight", "candidates per side", "chosen on", "from"], rows)


def hnsw_table(block: Mapping) -> Table | None:
    systems = block.get("systems") or {}
    rows = []
    for k, s in systems.items():
        h = s.get("hnsw") if isinstance(s, dict) else None
        if not isinstance(h, dict):
            continue
        exact = s.get("metrics") or {}
        if "skipped" in h:
            rows.append([s.get("label", k), f"not checked: {h['skipped']}", f3(exact.get("Recall@10")), "", ""])
        else:
            rows.append([s.get("label", k), str(h.get("collection")), f3(exact.get("Recall@10")),
                         f3((h.get("metrics") or {}).get("Recall@10")), f3(h.get("recall@10_vs_exact"))])
    if not rows:
        return None
    return Table("Chroma's HNSW index (what the app searches) against exact search",
                 ["system", "collection", "Recall@10 exact", "Recall@10 HNSW", "HNSW top 10 vs exact"], rows,
                 numeric={2, 3, 4})


def system_details(block: Mapping) -> list[str]:
    """Per system, what it is in full: the adapter's folder (here, once), its settings and fit time."""
    out = []
    for k, s in (block.get("systems") or {}).items():
        if not isinstance(s, dict):
            continue
        parts = [f"key `{k}`"]
        ad = s.get("adapter")
        if isinstance(ad, dict):
            parts.append(f"folder {ad.get('dir') or '(in memory)'}")
            parts.append(f"name {ad.get('name')}, {ad.get('kind')}, loss {ad.get('loss')}, sides {ad.get('sides')}")
            if ad.get("memory"):
                parts.append("memory " + ", ".join(f"{a} {b}" for a, b in ad["memory"].items()))
            fit = (ad.get("training") or {}).get("fit_splits")
            if fit:
                parts.append("fitted on " + " + ".join(fit))
        cost = s.get("cost") or {}
        if cost and k != "raw":
            parts.append(f"fit {seconds(cost.get('fit_seconds'))}, +{num(cost.get('query_ms')) or 0:.2f} ms per query, "
                         f"+{size(cost.get('storage_bytes'))} stored ({cost.get('storage')})")
        out.append(f"{s.get('label', k)}: " + "; ".join(parts))
    return out


# -- the decision card -------------------------------------------------------------------------------------

OLD_REPORT = ("This report was written before decision cards and paired changes were saved in metrics.json, so no "
              "recommendation is drawn from it: run eval again for the card. Its tables follow.")


def card(obj: Mapping) -> dict | None:
    """The card's content: the one eval wrote; decided now from the same numbers when the file has the paired
    tests but no card; None for a report from before both (a card from missing tests would wrongly say "keep raw")."""
    dec = obj.get("decision")
    if isinstance(dec, dict) and "recommended" in dec:
        return dec
    return decide(dict(obj)) if has_tests(dict(obj)) else None


def _cost_line(cost: Mapping | None) -> str:
    if not cost:
        return "not measured"
    if not num(cost.get("query_ms")) and not num(cost.get("storage_bytes")) and not num(cost.get("fit_seconds")):
        return "nothing over raw"
    fit = num(cost.get("fit_seconds"))
    fitted = "nothing to fit" if fit == 0 else "fit time not recorded" if fit is None else f"fit {seconds(fit)} once"
    return (f"{fitted}; +{num(cost.get('query_ms')) or 0:.2f} ms per query; "
            f"+{size(cost.get('storage_bytes'))} stored ({cost.get('storage')})")


def _whom(dec: Mapping) -> list[str]:
    out = []
    for part, what in (("seen", "seen queries (about documents training saw)"),
                       ("unseen", "unseen queries (about new documents)")):
        v = (dec.get("for_whom") or {}).get(part)
        if not isinstance(v, dict):
            continue
        p = num(v.get("p"))
        word = ("better" if (num(v.get("delta")) or 0) > 0 else "worse") if p is not None and p < 0.05 else "no significant change"
        out.append(f"{what}, {v.get('n')}: {word}, {signed(v.get('delta'))} {interval(v.get('ci95'), sign=True)}, "
                   f"{pval(v.get('p'))}")
    return out


def _attr(x: Any) -> str:
    """A number for a data-* attribute (escaped: the value came from a file)."""
    return html.escape(str(num(x)), quote=True)


def card_markdown(dec: Mapping | None, model: str = "") -> str:
    if dec is None:
        return f"## Decision: {model}\n\n{OLD_REPORT}"
    m = dec.get("metric", PRIMARY_METRIC)
    head = f"## Decision: {dec.get('model')} ({dec.get('n_queries')} queries, {m})"
    if dec.get("keep_raw"):
        lines = [head, "", f"**Keep the raw embeddings.** No system beat raw significantly without a catch "
                           f"({m} {f3(dec.get('raw_mean'))})."]
    else:
        g = dec.get("gain") or {}
        lines = [head, "", f"**Deploy: {dec.get('label')}.** {m} {f3(dec.get('raw_mean'))} → {f3(dec.get('mean'))}: "
                           f"**{signed(g.get('delta'))}** (95% CI {interval(g.get('ci95'), sign=True)}, {pval(g.get('p'))})."]
        if dec.get("steps"):
            lines += ["", "What each step adds: " + "; ".join(f"+ {s['step']} ({s['label']}): {signed(s['delta'])}"
                                                               for s in dec["steps"]) + "."]
        whom = _whom(dec)
        if whom:
            lines += ["", "**For whom:** " + "; ".join(whom) + "."]
        lines += ["", f"**Cost:** {_cost_line(dec.get('cost'))}."]
    why = (dec.get("for_whom") or {}).get("why")
    if why:
        lines += ["", f"*Seen / unseen:* {why}"]
    if dec.get("others"):
        lines += ["", "The other candidates, and why not them: " + "; ".join(f"{o['label']}: {o['why']}" for o in dec["others"]) + "."]
    return "\n".join(lines)


def card_html(dec: Mapping | None, model: str = "") -> str:
    e = html.escape
    if dec is None:
        return (f'<section class="ef-decision ef-old" data-model="{e(model)}"><h2 class="ef-card-title">Decision · '
                f"{e(model)}</h2><p>{e(OLD_REPORT)}</p></section>")
    m = str(dec.get("metric", PRIMARY_METRIC))
    model = model or str(dec.get("model"))
    out = [f'<section class="ef-decision" data-model="{e(model)}" data-system="{e(str(dec.get("recommended")))}">',
           f'<h2 class="ef-card-title">Decision · {e(model)} <small>({e(str(dec.get("n_queries")))} queries, {e(str(m))})</small></h2>']
    if dec.get("keep_raw"):
        out.append(f'<p class="ef-rec"><b class="ef-rec-label">Keep the raw embeddings.</b> No system beat raw '
                   f'significantly without a catch ({e(m)} <span class="ef-raw" data-value="{_attr(dec.get("raw_mean"))}">'
                   f'{f3(dec.get("raw_mean"))}</span>).</p>')
    else:
        g = dec.get("gain") or {}
        out.append(f'<p class="ef-rec">Deploy: <b class="ef-rec-label">{e(str(dec.get("label")))}</b></p>')
        out.append(f'<p class="ef-headline">{e(m)} <span class="ef-raw" data-value="{_attr(dec.get("raw_mean"))}">'
                   f'{f3(dec.get("raw_mean"))}</span> → <span class="ef-mean" data-value="{_attr(dec.get("mean"))}">'
                   f'{f3(dec.get("mean"))}</span>: <b class="ef-gain" data-value="{_attr(g.get("delta"))}">{signed(g.get("delta"))}</b> '
                   f'(95% CI <span class="ef-ci">{interval(g.get("ci95"), sign=True)}</span>, '
                   f'<span class="ef-p">{pval(g.get("p"))}</span>)</p>')
        if dec.get("steps"):
            steps = " · ".join(f'<span class="ef-step" data-value="{_attr(s.get("delta"))}">+ {e(str(s.get("step")))}: {signed(s.get("delta"))}</span>'
                               for s in dec["steps"])
            out.append(f'<p class="ef-steps">What each step adds: {steps}</p>')
        whom = _whom(dec)
        if whom:
            out.append('<p class="ef-whom"><b>For whom:</b> ' + "; ".join(e(w) for w in whom) + "</p>")
        out.append(f'<p class="ef-cost"><b>Cost:</b> {e(_cost_line(dec.get("cost")))}</p>')
    why = (dec.get("for_whom") or {}).get("why")
    if why:
        out.append(f'<p class="ef-why"><i>Seen / unseen:</i> {e(why)}</p>')
    if dec.get("others"):
        items = "".join(f"<li><b>{e(str(o.get('label')))}</b>: {e(str(o.get('why')))}</li>" for o in dec["others"])
        opened = " open" if dec.get("keep_raw") else ""  # the card's whole story then: why nothing else
        out.append(f'<details class="ef-others"{opened}><summary>The other candidates ({len(dec["others"])}), and why not them</summary>'
                   f"<ul>{items}</ul></details>")
    out.append("</section>")
    return "".join(out)


# -- the whole report in HTML ----------------------------------------------------------------------------

#: the report's own classes (the page adds them to its stylesheet); `PAGE_CSS` is report.html's page around them
PAGE_CSS = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:16px;color:#1f2328}"
CSS = """
.ef-decision{border:2px solid #2da44e;border-radius:10px;padding:10px 16px;margin:8px 0 14px;background:#f6fff8}
.ef-decision h2{margin:0 0 6px;font-size:1.15em}.ef-decision p{margin:4px 0}
.ef-rec{font-size:1.15em}.ef-gain{font-size:1.1em;color:#1a7f37}
.ef-table{border-collapse:collapse;margin:6px 0 12px;font-size:.9em}
.ef-table th,.ef-table td{border:1px solid #d0d7de;padding:3px 8px}.ef-table td.num{white-space:nowrap}
.ef-table th{background:#f6f8fa;text-align:left}.ef-table td.num{text-align:right;font-variant-numeric:tabular-nums}
.ef-note{color:#57606a;font-size:.88em;margin:2px 0}
figure.ef-fig{margin:8px 0 16px}figure.ef-fig img{max-width:100%;height:auto;border:1px solid #eee}
figure.ef-fig figcaption{color:#57606a;font-size:.88em}
details.ef-more{margin:6px 0;border:1px solid #d0d7de;border-radius:6px;padding:4px 10px}
details.ef-more>summary{cursor:pointer;font-weight:600}
.ef-figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:10px}
"""


def figure_html(data: bytes, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure class="ef-fig"><img alt="{html.escape(caption)}" src="{src}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _more(title: str, inner: str) -> str:
    return f'<details class="ef-more"><summary>{html.escape(title)}</summary>{inner}</details>' if inner else ""


def blocks(metrics: Mapping, first: str | None = None) -> list[tuple[str, dict]]:
    """(model, its metrics object) of a metrics.json (one model or {"models": ...}); `first` first."""
    models = metrics.get("models")
    if isinstance(models, dict):
        pairs = [(m, v) for m, v in models.items() if isinstance(v, dict)]
    else:
        pairs = [(str(metrics.get("model")), dict(metrics))]
    return sorted(pairs, key=lambda mv: mv[0] != first) if first else pairs


def body_html(metrics: Mapping, details: Mapping, images: Mapping[str, bytes], first_model: str | None = None) -> str:
    """The report's content (no <html> shell): what `report.html` and the page's Eval tab show.

    `images`: figure path inside the report ("figures/...png", as details.json lists them) -> PNG bytes; figures
    missing from it are left out."""
    models = blocks(metrics, first_model)
    dmodels = details.get("models") if isinstance(details.get("models"), dict) else {}
    out = ['<div class="ef-report">']
    out += [card_html(card(obj), model) for model, obj in models]
    top = details.get("figures") if isinstance(details.get("figures"), dict) else {}
    for key, rel in top.items():
        if rel in images:
            caption = figure_caption(key)
            if key == "forest":
                caption += ("; green: significantly better than raw (p < 0.05), red: significantly worse, grey: no "
                            "significant change; seen / unseen: queries about documents training saw / new ones")
            out.append(figure_html(images[rel], caption))
    for model, obj in models:
        block = dmodels.get(model) or {}
        figs = block.get("figures") if isinstance(block.get("figures"), dict) else {}
        out.append(f'<h2 class="ef-model">{html.escape(model)}: {html.escape(str(block.get("scope", "")))}</h2>')
        table = systems_table(obj)
        out.append(f"<h3>{html.escape(table.title)}</h3>" + table.html())
        st = seen_table(obj)
        if st:
            out.append(f"<h3>{html.escape(st.title)}</h3>" + st.html())
        for key, rel in figs.items():
            if key.startswith("selection:") and rel in images:
                who = _labels(obj).get(key.split(":", 1)[1], key.split(":", 1)[1])
                out.append(figure_html(images[rel], f"{model}: how selection chose {who} (dev metric of every "
                                                    "candidate; star: chosen; grey crosses: refused)"))
        more = [("Every metric", metric_grid(obj).html()), ("Paired tests against raw", paired_table(obj).html())]
        for t in (threshold_table(obj), fusion_table(obj), hnsw_table(block)):
            if t is not None:
                more.append((t.title, t.html()))
        details_list = system_details(block)
        if details_list:
            more.append(("What each system is", "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in details_list) + "</ul>"))
        notes = block.get("notes") or []
        if notes:
            more.append(("Notes", "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"))
        out += [_more(title, inner) for title, inner in more]
        rest = [(rel, key) for key, rel in figs.items() if not key.startswith("selection:") and rel in images]
        if rest:
            out.append('<div class="ef-figs">' + "".join(
                figure_html(images[rel], f"{model}: {figure_caption(key)}") for rel, key in rest) + "</div>")
    out.append("</div>")
    return "".join(out)


def report_html(metrics: Mapping, details: Mapping, images: Mapping[str, bytes], title: str) -> str:
    """`report.html`: one self-contained file (styles inline, figures as data URIs): it opens offline, copied anywhere."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{PAGE_CSS}{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            + body_html(metrics, details, images) + "</body></html>")
