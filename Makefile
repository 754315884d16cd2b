# Two commands do everything on a fresh machine:
#   make run  SSLGRAPH_DATA=<folder holding cifar10/>   -> the full pipeline with the cifar10-cpu preset
#   make test SSLGRAPH_DATA=<folder holding cifar10/>   -> the test suite (data tests skip without it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/cifar10-cpu
export SSLGRAPH_DATA

.PHONY: install run test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sslgraph run --preset cifar10-cpu --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/graph_update.py
	$(BIN)/python benchmarks/refine.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
