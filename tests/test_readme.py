"""The README's Python quickstart runs as written, on the shared SciFact data (only the data path is replaced),
and `examples/quickstart.py` runs on a sample of it: a newcomer's first copy-paste must work."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from embedfit.settings import shared_data

MARKER = "<!-- quickstart:"


def quickstart_block() -> str:
    text = (REPO / "README.md").read_text("utf-8")
    after = text[text.index(MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "the README's quickstart marker is not followed by a python block"
    return match.group(1)


@pytest.fixture(scope="module")
def scifact() -> str:
    path = shared_data("scifact")
    if not (path / "corpus.jsonl").exists():
        pytest.fail(f"shared SciFact data not found at {path}; set SHARED_DATA")
    return str(path)


def _env(tmp_path) -> dict:
    return {**os.environ, "EMBEDFIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}


def test_the_readme_quickstart_runs_as_written(tmp_path, scifact):
    block = quickstart_block()
    assert len(block.strip().splitlines()) <= 12  # "a 10-line Python quickstart" (+ the import and a blank)
    assert '"path/to/beir_folder"' in block
    code = block.replace('"path/to/beir_folder"', repr(scifact))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "**chosen**" in run.stdout and "all-MiniLM-L6-v2: test split" in run.stdout
    assert json.loads((tmp_path / "adapters/mine/config.json").read_text())["base_model"] == "all-MiniLM-L6-v2"
    metrics = json.loads((tmp_path / "report/mine/metrics.json").read_text())
    assert metrics["retrieval"]["adapted"]["nDCG@10"] > 0
    assert (tmp_path / "report/mine/figures/all-minilm-l6-v2/recall_at_k.png").exists()
    assert (tmp_path / "exports/mine/adapter.npz").exists()


def test_the_example_study_runs_on_a_scifact_sample(tmp_path, scifact):
    run = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"), "--data", scifact,
                          "--work", str(tmp_path / "work"), "--limit", "200"],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for step in ("1. data", "2. negatives", "3. raw embeddings", "4. customize", "5. before and after", "6. one question"):
        assert step in out, step
    report = tmp_path / "work" / "report"
    assert json.loads((report / "metrics.json").read_text())["retrieval"]["raw"]["nDCG@10"] > 0
    assert (report / "figures" / "all-minilm-l6-v2" / "latent_space.png").exists()
