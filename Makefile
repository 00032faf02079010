# `make TORCH=torch` installs an unpinned torch (e.g. a CUDA build) instead of the CPU pin.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `make bench DATASETS=DIR` reads stsbenchmark/ and scifact/ under DIR.
DATASETS ?= ../shared/datasets

.PHONY: install demo test test-fast lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/searcher demo

# The README's test command and CI's: lint, types, then every test (slow ones included).
test: lint typecheck
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# Skips the tests marked slow (crash loops, Ray clusters, processes of their own, the memory test).
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check searcher tests benchmarks && $(BIN)/ruff format --check searcher tests benchmarks

typecheck: install
	$(BIN)/mypy

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/speed.py --sts $(DATASETS)/stsbenchmark --scifact $(DATASETS)/scifact
	$(BIN)/python benchmarks/vector_index.py --vectors 1000000
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/http_load.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ray_scaling.py $(DATASETS)/scifact --documents 1000 --shard-size 250
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/embed_throughput.py $(DATASETS)/scifact --documents 2000 --batches 64:16384

clean:
	rm -rf $(VENV) build dist *.egg-info
