# Two commands on a fresh machine:
#   make run    # create .venv, install, train + register both models on the offline default
#   make test   # create .venv, install, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
CONFIG ?= configs/default.yaml
FLOW ?= both
SET ?=

# Local runs are offline and private: no telemetry, Prefect state kept in the project folder.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_DISABLE_TELEMETRY := 1
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install run serve lint test test-unit test-integration test-e2e bench constraints clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, at the tested version, so no other package's requirement picks another build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

run: install
	$(BIN)/lmpipe run $(FLOW) --config $(CONFIG) $(foreach s,$(SET),--set $(s))

# Prefect server + MLflow UI + pools + deployments + a cpu worker, on loopback; Ctrl-C stops it all.
serve: install
	$(BIN)/python -m lmpipe.cli.serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest -q -rs --durations=30 -n 2 --dist loadfile --no-loadscope-reorder

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install
	$(BIN)/python -m pytest -q -rs tests/integration

test-e2e: install
	$(BIN)/python -m pytest -q -rs tests/e2e

# Each prints ours vs the reference side by side and appends to bench/results/<bench>.jsonl (bench/README.md).
BENCHES := group tokenize train rerun register scale
bench: install
	set -e; for b in $(BENCHES); do $(BIN)/python bench/$${b}_bench.py; done

constraints: install
	head -3 constraints.txt > constraints.txt.new
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' >> constraints.txt.new
	echo "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')" >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf artifacts mlartifacts mlflow.db .prefect .pytest_cache test-artifacts
