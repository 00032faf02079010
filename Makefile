# `make TORCH=torch` installs an unpinned torch (e.g. a CUDA build) instead of the CPU pin.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/searcher demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info
