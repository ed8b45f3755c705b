# Two commands matter: `make demo` (the main job) and `make test` (the test suite, as CI runs it).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      := .venv/bin/python
STAMP   := .venv/.installed
STORE   ?= $(or $(NQ_STORE),.data/store)
MODELS  ?= all-MiniLM-L6-v2 paraphrase-MiniLM-L3-v2
APP_MODEL ?= paraphrase-MiniLM-L3-v2
ADAPTERS ?= $(or $(NQ_ADAPTERS),.data/adapters)
REPORT  ?= $(or $(NQ_REPORT),.data/report)
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False \
            ANONYMIZED_TELEMETRY=False NQ_PROGRESS=0 TOKENIZERS_PARALLELISM=false \
            NQ_DATA=$${NQ_DATA:-$${SHARED_DATA:-$(CURDIR)/../shared/data}/nq}

.PHONY: help setup system test test-slow test-all demo app bench faults load clean

help:
	@echo "make demo   - ingest NQ (NQ_DATA=folder|file|dataset id), train the adapter, evaluate, open the app"
	@echo "make test   - install everything and run the test suite (what CI runs)"
	@echo "make app / test-slow / test-all / bench / faults / load / clean"

# Python packages: one pip command so torch==2.13.0 resolves to the CPU wheel. Re-runs only when
# requirements.txt changes (the stamp), so `make setup` is fast when already done.
$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

# System packages for the browser tests (Debian's chromium; never `playwright install`).
system:
	@bash scripts/install_system_deps.sh

setup: $(STAMP)

test: setup system
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -q

test-slow: setup system
	$(TEST_ENV) $(PY) -m pytest -m slow -q

test-all: setup system
	$(TEST_ENV) $(PY) -m pytest -q

# The main job: ingest both models, train one adapter per model (selected on dev), evaluate them
# against raw, BM25 and the MSE baseline in one report, then serve the side-by-side page.
demo: setup
	@for m in $(MODELS); do $(PY) -m ingest --store $(STORE) --model $$m || exit 1; done
	@for m in $(MODELS); do $(PY) -m adapter train --store $(STORE) --model $$m --out $(ADAPTERS)/$$m || exit 1; done
	$(PY) -m eval --store $(STORE) $(foreach m,$(MODELS),--adapter $(ADAPTERS)/$(m)) --out $(REPORT)
	@echo "report: $(REPORT)/report.md"
	$(MAKE) --no-print-directory app

app: setup
	$(PY) -m app --store $(STORE) --model $(APP_MODEL) --adapter $(ADAPTERS)/$(APP_MODEL) --report $(REPORT)

bench: setup
	$(PY) -m scripts.bench

# Reliability figures (README): kill -9 at random points of ingest, adapter save and projection;
# then a bounded loopback load (20 clients x 50 searches) against the app on the demo store.
faults: setup
	$(PY) scripts/fault_inject.py

load: setup
	$(PY) scripts/load_test.py --store $(STORE)

clean:
	rm -rf .data artifacts
