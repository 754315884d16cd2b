# Two commands do everything on a fresh machine:
#   make run  SSLGRAPH_DATA=<folder holding cifar10/>   -> the full pipeline with the cifar10-cpu preset
#   make test SSLGRAPH_DATA=<folder holding cifar10/>   -> the test suite (data tests skip without it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/cifar10-cpu
# When `make` began (before any installation): the preset's pipeline.time_limit_minutes counts from here.
STARTED_AT := $(shell date +%s)
export SSLGRAPH_DATA

.PHONY: install run test test-slow bench bench-peer clean

# pyproject.toml states lower bounds; the exact CPU versions come from the constraints file.
LOCK := requirements/cpu-lock.txt

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sslgraph run --preset cifar10-cpu --out $(OUT) --started-at $(STARTED_AT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/graph_update.py
	$(BIN)/python benchmarks/refine.py
	$(BIN)/python benchmarks/search_exactness.py

# Time to accuracy against lightly's SimCLR (about 35 minutes on 2 cores). lightly is no dependency of sslgraph:
# it is installed here, and omegaconf is put back to sslgraph's pin afterwards (lightly's hydra-core asks for
# omegaconf < 2.4, which sslgraph's typed choices need; lightly's losses and transforms do not use it).
bench-peer: $(STAMP)
	$(BIN)/pip install --quiet 'lightly==1.6.0'
	$(BIN)/pip install --quiet 'omegaconf==2.4.0'
	$(BIN)/python benchmarks/time_to_accuracy.py --data-root "$(SSLGRAPH_DATA)"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
