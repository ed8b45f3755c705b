"""The page in a real headless Chromium (Debian's, driven by Playwright): type an NQ question, press search,
read the three columns (raw, adapted, adapter + BM25), check the gold marker; Enter and the examples work; the report tab shows its table and plot.
Screenshots go to artifacts/tests/ (app.png: the search; app-report.png: the Eval tab as first seen, 1280x800;
report-html.png: report.html opened offline)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_FUSION, ExactOracle, assert_same_ranking, running_app

MODEL = "all-MiniLM-L6-v2"

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def app(small_store, tmp_path_factory):
    return running_app(small_store[0].store, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium with `make system` (scripts/install_system_deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def pick_question(app):
    """A test-split example whose gold passage is in all three columns' top 10, with at least one rank that moved."""
    r = app.state.retriever
    for q in app.state.examples:
        res = r.search(q, 10)
        if all(any(h.gold for h in side.hits) for side in (res.raw, res.adapted, res.hybrid)) and \
                any(h.movement != "=" for h in res.adapted.hits):
            return q, res
    q = app.state.examples[0]
    return q, r.search(q, 10)


def cards(page, column):
    loc = page.locator(f"#{column} .ef-card")
    return [{"rank": int(loc.nth(i).get_attribute("data-rank")), "id": loc.nth(i).get_attribute("data-id"),
             "gold": loc.nth(i).get_attribute("data-gold") == "true", "move": loc.nth(i).get_attribute("data-move"),
             "text": loc.nth(i).inner_text()} for i in range(loc.count())]


def test_search_side_by_side_in_chromium(app, browser, artifacts_dir):
    question, expected = pick_question(app)
    external: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.on("request", lambda req: external.append(req.url)
            if not req.url.startswith((app.url, "data:", "blob:")) else None)
    page.goto(app.url)
    box = page.locator("#question textarea, #question input").first
    box.fill(question)
    page.locator("#search-btn").click()
    page.wait_for_selector("#raw-col .ef-card")
    page.wait_for_selector("#adapted-col .ef-card")
    page.wait_for_selector("#hybrid-col .ef-card")

    raw, adapted, hybrid = cards(page, "raw-col"), cards(page, "adapted-col"), cards(page, "hybrid-col")
    assert "embedfit · retrieval on nq" in page.locator("body").inner_text()  # the dataset's name, not an assumed "NQ"
    assert "Raw embeddings (all-MiniLM-L6-v2)" in page.locator("#raw-col").inner_text()
    assert "With adapter (test-query-1)" in page.locator("#adapted-col").inner_text()
    assert "Adapter + BM25" in page.locator("#hybrid-col").inner_text()
    assert "BM25 weight 0.4" in page.locator("#hybrid-col .ef-sub").inner_text()
    # the columns are the brute-force cosine rankings of the store's vectors (adapted: query times the adapter matrix)
    oracle = ExactOracle(app.cfg.store, adapter_dir=app.cfg.adapter_dir())
    qvec = app.state.retriever.embedder.embed([question], "query")
    assert [c["id"] for c in raw] == [pid for pid, _ in oracle.ranking(qvec, 10)]
    assert [c["id"] for c in adapted] == [pid for pid, _ in oracle.ranking(qvec, 10, adapted=True)]
    # the page shows what the service computed, card for card
    assert [c["id"] for c in raw] == [h.id for h in expected.raw.hits]
    assert [c["id"] for c in adapted] == [h.id for h in expected.adapted.hits]
    assert [c["move"] for c in adapted] == [h.movement for h in expected.adapted.hits]
    # the hybrid column: the service's fused top 10 (ids, titles, raw -> hybrid arrows), which is the oracle's
    # (exact adapted cosine + bm25s, fused by the rule written out in app_support)
    assert [c["id"] for c in hybrid] == [h.id for h in expected.hybrid.hits]
    assert [c["move"] for c in hybrid] == [h.movement for h in expected.hybrid.hits]
    assert all(" ".join((h.title or "(untitled)").split()) in " ".join(c["text"].split())
               for c, h in zip(hybrid, expected.hybrid.hits))
    assert_same_ranking([c["id"] for c in hybrid], oracle.hybrid(qvec, question, APP_FUSION, adapted=True))
    # the gold marker, in every column, on the gold passages only
    for column, side in ((raw, expected.raw), (adapted, expected.adapted), (hybrid, expected.hybrid)):
        assert [c["gold"] for c in column] == [h.gold for h in side.hits]
        assert all(("★ gold" in c["text"]) is c["gold"] for c in column)
    assert any(c["gold"] for c in raw) and any(c["gold"] for c in adapted) and any(c["gold"] for c in hybrid)
    assert f"{raw[0]['rank']}" == "1" and "0." in raw[0]["text"]  # rank and cosine score are on the card
    assert "test split" in page.locator("#status").inner_text()
    timing = page.locator("#timing").inner_text()
    assert "raw search" in timing and "adapter projection + search" in timing and "BM25 search" in timing

    # a card expands to the full passage
    gold_card = page.locator("#raw-col .ef-card.gold").first
    gold_card.locator("summary").click()
    full = expected.raw.hits[[h.gold for h in expected.raw.hits].index(True)].text
    assert full[-40:].strip() in gold_card.inner_text()
    page.screenshot(path=str(artifacts_dir / "app.png"), full_page=True)

    # Enter runs a search too
    box.fill("who wrote the declaration of independence")
    box.press("Enter")
    page.wait_for_function("() => !document.querySelector('#raw-col .ef-card.gold')")
    assert "Not a question from the store" in page.locator("#status").inner_text()

    # an empty question: a friendly message, no cards
    box.fill("   ")
    page.locator("#search-btn").click()
    page.wait_for_function("() => !document.querySelector('#raw-col .ef-card')")
    assert "Type a question" in page.locator("#status").inner_text()
    assert page.locator("#hybrid-col .ef-card").count() == 0

    # clicking an example fills the box and searches
    page.get_by_text(app.state.examples[1][:30]).first.click()
    page.wait_for_selector("#raw-col .ef-card")
    assert box.input_value() == app.state.examples[1]
    assert external == [], f"the page contacted other hosts: {external}"
    page.close()


def _all_images_loaded(page, scope: str) -> list[int]:
    """naturalWidth of every image under `scope`, once each has finished loading."""
    page.wait_for_function(f"() => Array.from(document.querySelectorAll('{scope} img')).every(i => i.complete)")
    return page.evaluate(f"() => Array.from(document.querySelectorAll('{scope} img')).map(i => i.naturalWidth)")


def test_eval_tab_shows_the_decision_card_above_the_fold(app, browser, artifacts_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url)
    page.get_by_role("tab", name="Eval report").click()
    card = page.locator("#report .ef-decision").first
    card.wait_for()
    # what a person sees first: the card, whole, inside the 1280x800 window (no scrolling)
    box = card.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 800, box
    page.screenshot(path=str(artifacts_dir / "app-report.png"))
    # the card's numbers are metrics.json's (read here from the file eval wrote)
    m = json.loads((app.cfg.report / "metrics.json").read_text("utf-8"))
    rec = card.get_attribute("data-system")
    assert rec == m["decision"]["recommended"] and card.get_attribute("data-model") == m["model"] == MODEL
    raw = m["retrieval"]["raw"]["MRR@10"]
    assert card.locator(".ef-raw").inner_text() == f"{raw:.3f}"
    if rec == "raw":
        assert "Keep the raw embeddings." in card.inner_text()
    else:
        change = m["vs_raw"][rec]["MRR@10"]
        assert change["p"] < 0.05 and change["delta"] > 0  # the rule: a significant gain over raw
        assert card.locator(".ef-rec-label").inner_text() == m["labels"][rec]
        assert card.locator(".ef-mean").inner_text() == f"{m['retrieval'][rec]['MRR@10']:.3f}"
        assert card.locator(".ef-gain").inner_text() == f"{change['delta']:+.3f}"
        lo, hi = change["ci95"]
        assert card.locator(".ef-ci").inner_text() == f"[{lo:+.3f}, {hi:+.3f}]"
    # every chart is an inline image that loaded; as many as eval listed
    details = json.loads((app.cfg.report / "details.json").read_text("utf-8"))
    n_png = len(details["figures"]) + sum(rel.endswith(".png") for rel in details["models"][MODEL]["figures"].values())
    widths = _all_images_loaded(page, "#report")
    assert len(widths) == n_png >= 4 and all(w > 0 for w in widths)
    assert all(src.startswith("data:image/png;base64,") for src in
               page.evaluate("() => Array.from(document.querySelectorAll('#report img')).map(i => i.src)"))
    # the readable table, then the rest collapsed
    assert page.locator("#report details.ef-more").count() >= 3
    assert not page.locator("#report details.ef-more").first.evaluate("(el) => el.open")
    page.screenshot(path=str(artifacts_dir / "app-report-full.png"), full_page=True)
    page.close()


def test_report_html_opens_offline_from_a_copied_file(app, browser, tmp_path, artifacts_dir):
    """report.html alone in another folder, every network request refused: the card and each chart still show."""
    import shutil

    copy = tmp_path / "copied"
    copy.mkdir()
    shutil.copy(app.cfg.report / "report.html", copy / "report.html")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    asked: list[str] = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort()

    page.route("http://**/*", refuse)
    page.route("https://**/*", refuse)
    page.goto((copy / "report.html").as_uri())
    card = page.locator(".ef-decision").first
    card.wait_for()
    box = card.bounding_box()
    assert box["y"] + box["height"] <= 800
    widths = _all_images_loaded(page, "body")
    assert widths and all(w > 0 for w in widths)
    assert asked == []
    page.screenshot(path=str(artifacts_dir / "report-html.png"))
    page.close()
