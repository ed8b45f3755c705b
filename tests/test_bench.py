"""`python -m scripts.bench --quick`: a smoke-size run that every part of the benchmark works and
writes what the README table is built from. The real numbers come from a full run (`make bench`),
never from a timed test."""
from __future__ import annotations

import json

from scripts.bench import main, markdown_table, percentiles


def test_quick_bench_writes_every_section(nq_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NQ_DATA", str(nq_dir))
    out = tmp_path / "bench.json"
    rc = main(["--quick", "--model", "paraphrase-MiniLM-L3-v2", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert rc == 0
    r = json.loads(out.read_text())
    i = r["ingest"]
    assert i["passages"] > 0 and i["pipeline_passages_per_s"] > 0 and i["bare_passages_per_s"] > 0
    assert abs(i["ratio"] - i["pipeline_passages_per_s"] / i["bare_passages_per_s"]) < 0.01
    assert isinstance(i["meets_target"], bool)
    assert r["training"]["seconds"] > 0 and r["training"]["epochs_run"] >= 1
    lat = r["search_latency_ms"]
    for col in ("raw", "adapted", "both"):
        assert 0 < lat[col]["p50"] <= lat[col]["p95"] <= lat[col]["p99"]
    assert lat["both"]["p50"] >= lat["parts"]["embed"]["p50"]
    (scale,) = r["chroma_scale"]
    assert scale["n"] == 2000 and 0.5 <= scale["ann_recall@10"] <= 1.0 and scale["peak_rss_mb"] > 0
    assert "training and latency ran on the benchmark's own" in " ".join(r["notes"])
    table = capsys.readouterr().out
    assert "| pipeline / bare model |" in table and "search latency, both columns" in table
    assert markdown_table(r).splitlines()[0] == "| measure | value | target | met |"


def test_percentiles_are_numpy_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == 50.5 and p["p95"] == 95.05 and p["p99"] == 99.01 and p["n"] == 100


def test_a_partial_run_keeps_the_other_parts_of_an_existing_file(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"generated_at": "2020-01-01T00:00:00+00:00", "ingest": {"ratio": 0.5},
                               "chroma_scale": [{"n": 1}]}))
    assert main(["--quick", "--parts", "scale", "--out", str(out), "--work-dir", str(tmp_path / "w")]) == 0
    r = json.loads(out.read_text())
    assert r["ingest"] == {"ratio": 0.5, "measured_at": "2020-01-01T00:00:00+00:00"}  # kept, dated
    assert [c["n"] for c in r["chroma_scale"]] == [2000] and "measured_at" in r["chroma_scale"][0]  # replaced
    assert "training" not in r and any("other parts come from an earlier run" in n for n in r["notes"])
