# rope-eval: `make setup` then `make eval` (the embedded default), `make test` (the test suite).
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml
PROFILE ?= smoke
OUT ?= runs
# Benchmark data: the local copy beside the repo when present, else `datasets` from the Hub.
ROPE_EVAL_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export ROPE_EVAL_DATA

.PHONY: setup test eval bench lint selftest
setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml eval_harness/setup_platform.py
	$(PY) -m venv $(VENV)
	$(PY) -m eval_harness.setup_platform install --venv $(VENV)
	touch $@

test: setup
	$(BIN)/pytest

eval: setup
	$(BIN)/rope-eval eval $(CONFIG) --profile $(PROFILE) --out $(OUT)

selftest: setup
	$(BIN)/rope-eval selftest --out $(OUT)

bench: setup
	$(BIN)/python -m eval_harness.kernels.bench --json benchmarks/kernels-latest.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
