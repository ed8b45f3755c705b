"""embedfit installs as one package with one command (issue 19).

- requirements.txt (the pinned lock `make` and CI install) and pyproject.toml (what `pip install embedfit[...]`
  asks for) name the same packages;
- `import embedfit` imports none of the heavy or optional libraries (gradio, ray, openai, datasets, torch, chromadb);
- the `embedfit` console script lists the subcommands and refuses an unknown one;
- (slow) the wheel built from this checkout installs into a fresh virtualenv with the core dependencies only, and
  `embedfit --help`, `import embedfit` and `embedfit ingest` / `train` / `eval` run there on a sample of the shared
  NQ data, with gradio and ray absent.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, nq_data_dir

#: build tools the lock pins so that `pip install -e .` works without network build isolation
BUILD_ONLY = {"setuptools"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.split(r"[\[<>=!~; ]", line.strip(), maxsplit=1)[0])


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]


def test_requirements_and_pyproject_name_the_same_packages():
    locked = {requirement_name(line) for line in (REPO / "requirements.txt").read_text("utf-8").splitlines()
              if line.strip() and not line.lstrip().startswith("#")}
    project = pyproject()
    declared = {requirement_name(d) for d in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        declared |= {requirement_name(d) for d in deps if not d.startswith("embedfit")}
    assert locked - BUILD_ONLY == declared
    assert all(re.search(r"==", line) for line in (REPO / "requirements.txt").read_text("utf-8").splitlines()
               if line.strip() and not line.startswith("#") and requirement_name(line) != "tqdm")


def test_extras_keep_the_optional_stacks_out_of_the_core():
    project = pyproject()
    core = {requirement_name(d) for d in project["dependencies"]}
    assert not core & {"gradio", "ray", "openai", "tiktoken", "datasets", "pytest", "playwright", "hypothesis"}
    extras = project["optional-dependencies"]
    assert {requirement_name(d) for d in extras["app"]} == {"gradio"}
    assert {requirement_name(d) for d in extras["ray"]} == {"ray"}
    assert {requirement_name(d) for d in extras["hub"]} == {"datasets"}
    assert {requirement_name(d) for d in extras["openai"]} == {"openai", "tiktoken"}
    assert project["scripts"] == {"embedfit": "embedfit.cli:main"}


def test_importing_embedfit_imports_nothing_heavy():
    code = ("import sys, embedfit; heavy = {'gradio', 'ray', 'openai', 'datasets', 'torch', 'chromadb', 'transformers'};"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy)); print(embedfit.__version__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode == 0, r.stderr
    loaded, version = r.stdout.splitlines()
    assert loaded == "[]"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def console_script() -> Path:
    return Path(sys.executable).parent / "embedfit"


def test_the_command_lists_its_subcommands_and_refuses_an_unknown_one():
    exe = console_script()
    assert exe.exists(), "the checkout is not installed (make setup installs it in place)"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0
    for sub in ("ingest", "train", "project", "export", "eval", "app"):
        assert re.search(rf"^\s+{sub}\s", r.stdout, re.M), sub
    r = subprocess.run([str(exe), "trian"], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 2 and "unknown subcommand 'trian'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "embedfit", "train", "--help"], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0 and r.stdout.startswith("usage: embedfit train")


# -- the wheel in a fresh virtualenv -----------------------------------------------------------------------------

def constraints(tmp: Path) -> Path:
    """requirements.txt as a pip constraints file (constraints take no extras: `ray[data]` -> `ray`)."""
    lines = [re.sub(r"\[.*?\]", "", line) for line in (REPO / "requirements.txt").read_text("utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    path = tmp / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_the_wheel_installs_and_runs_with_the_core_dependencies_only(tmp_path):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, env=env, timeout=600)
    wheel = next(dist.glob("embedfit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, exe = venv / "bin" / "python", venv / "bin" / "embedfit"
    # torch pinned on the same pip line, or pip pulls a multi-GB CUDA build
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel), "torch==2.13.0", "-c",
                        str(constraints(tmp_path))], capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [f"installed {wheel.name} into a fresh virtualenv (core dependencies only)"]

    def run(*args: str, cwd: Path = tmp_path) -> str:
        r = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=1800,
                           env={**env, "EMBEDFIT_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
        log.append(f"$ {' '.join(Path(a).name if a.startswith(str(tmp_path)) else a for a in args)}\n{r.stdout.strip()}")
        return r.stdout

    missing = run(str(py), "-c", "import importlib.util as u; import embedfit; "
                  "print([m for m in ('gradio', 'ray', 'openai', 'datasets', 'pytest') if u.find_spec(m)])")
    assert missing.strip() == "[]"  # none of the extras came with the core install
    assert "ingest" in run(str(exe), "--help")
    store, adapter, report = tmp_path / "store", tmp_path / "adapter", tmp_path / "report"
    run(str(exe), "ingest", "--data", str(nq_data_dir()), "--store", str(store), "--cache", str(tmp_path / "cache"),
        "--model", "paraphrase-MiniLM-L3-v2", "--limit", "150")
    run(str(exe), "train", "--store", str(store), "--model", "paraphrase-MiniLM-L3-v2", "--out", str(adapter),
        "--folds", "2", "--max-epochs", "4")
    run(str(exe), "eval", "--store", str(store), "--adapter", str(adapter), "--out", str(report),
        "--model", "paraphrase-MiniLM-L3-v2", "--bootstrap-resamples", "200", "--no-plots")
    metrics = json.loads((report / "metrics.json").read_text("utf-8"))
    assert "paraphrase-MiniLM-L3-v2" in json.dumps(metrics)
    print("\n".join(log))  # pasted in the issue note (pytest -s)


BLOCK = """
import importlib.abc, importlib.machinery, sys

class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name.split(".")[0] == {blocked!r} else None
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, Absent())
"""


@pytest.mark.parametrize("blocked,argv,extra", [
    ("gradio", ["app", "--store", "STORE"], "app"),
    ("ray", ["ingest", "--data", "NQ", "--store", "OUT", "--engine", "ray"], "ray"),
])
def test_a_subcommand_missing_its_extra_names_the_extra(tmp_path, blocked, argv, extra, small_store):
    """The library is made unimportable (its import raises ModuleNotFoundError, as when it is not installed); the
    command says which extra installs it instead of a traceback."""
    from embedfit.store import chroma_store

    chroma_store.release_locks()  # the session's store was built in this process: let the child open it
    argv = [{"STORE": str(small_store[0].store), "NQ": str(nq_data_dir()), "OUT": str(tmp_path / "s")}.get(a, a)
            for a in argv]
    code = BLOCK.format(blocked=blocked) + f"from embedfit.cli import main\nsys.exit(main({argv!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f'pip install "embedfit[{extra}]"' in r.stderr and "Traceback" not in r.stderr
