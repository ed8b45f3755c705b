# Two commands matter: `make demo` (the main job) and `make test` (the test suite, as CI runs it).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      := .venv/bin/python
STAMP   := .venv/.installed
SHARED  := $(or $(SHARED_DATA),$(CURDIR)/../shared/data)
# DATA: which dataset the demo runs on. Empty: EMBEDFIT_DATA, else the online NQ default. A folder, file or dataset id:
# that. A bare name (`make demo DATA=scifact`): SHARED_DATA/<name>. Each dataset gets its own folder under .data/.
DATA    ?=
ifeq ($(strip $(DATA)),)
DATA_ARG :=
TAG      :=
else
DATA_PATH := $(if $(wildcard $(DATA)),$(DATA),$(if $(wildcard $(SHARED)/$(DATA)),$(SHARED)/$(DATA),$(DATA)))
DATA_ARG  := --data $(DATA_PATH)
TAG       := /$(basename $(notdir $(patsubst %/,%,$(DATA_PATH))))
endif
# SPLIT: train/dev/test shares of the labelled queries (random, i.i.d.); adapters are selected by cross-validation
# over train+dev on small data, so a larger test share buys tighter intervals (SciFact: 809 claims)
SPLIT   ?= 0.8 0.1 0.1
STORE   ?= $(or $(EMBEDFIT_STORE),.data$(TAG)/store)
MODELS  ?= all-MiniLM-L6-v2 paraphrase-MiniLM-L3-v2
APP_MODEL ?= paraphrase-MiniLM-L3-v2
ADAPTERS ?= $(or $(EMBEDFIT_ADAPTERS),.data$(TAG)/adapters)
REPORT  ?= $(or $(EMBEDFIT_REPORT),.data$(TAG)/report)
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False \
            ANONYMIZED_TELEMETRY=False EMBEDFIT_PROGRESS=0 TOKENIZERS_PARALLELISM=false \
            SHARED_DATA=$${SHARED_DATA:-$(CURDIR)/../shared/data}

.PHONY: help setup system lint test test-slow test-all demo app bench faults load clean

help:
	@echo "make demo   - ingest NQ (or DATA=scifact / a folder), select and fit the customization, evaluate, open the app"
	@echo "make test   - install everything and run the test suite (what CI runs)"
	@echo "make app / lint / test-slow / test-all / bench / faults / load / clean"

# Python packages: one pip command so torch==2.13.0 resolves to the CPU wheel; then this checkout, installed in
# place (the `embedfit` command, `import embedfit` from anywhere). Re-runs only when requirements.txt or
# pyproject.toml changes (the stamp), so `make setup` is fast when already done.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

# System packages for the browser tests (Debian's chromium; never `playwright install`).
system:
	@bash scripts/install_system_deps.sh

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .

test: setup system lint
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -q

test-slow: setup system
	$(TEST_ENV) $(PY) -m pytest -m slow -q

test-all: setup system
	$(TEST_ENV) $(PY) -m pytest -q

# The main job (scripts/demo.py): ingest the app's model (the fast one), select and fit its customization and open
# the page; then, while the page serves (through a Chroma server on the same store), ingest and fit the other
# models and evaluate them all against raw, BM25 and the MSE baseline in one report (the page's "Reload report").
# LIMIT: questions to ingest (default all; 10000 for a Hub dataset id; LIMIT=all for the whole of it).
LIMIT   ?=
demo: setup
	$(PY) -m scripts.demo $(DATA_ARG) --store $(STORE) --adapters $(ADAPTERS) --report $(REPORT) --models $(MODELS) \
		--app-model $(APP_MODEL) --split $(SPLIT) $(if $(strip $(LIMIT)),--limit $(LIMIT))

app: setup
	$(PY) -m embedfit app --store $(STORE) --model $(APP_MODEL) --adapter $(ADAPTERS)/$(APP_MODEL) --report $(REPORT)

bench: setup
	$(PY) -m scripts.bench

# Reliability figures (README): kill -9 at random points of ingest, adapter save and projection;
# then a bounded loopback load (20 clients x 50 searches) against the app on the demo store.
faults: setup
	$(PY) -m scripts.fault_inject

load: setup
	$(PY) -m scripts.load_test --store $(STORE)

clean:
	rm -rf .data artifacts
