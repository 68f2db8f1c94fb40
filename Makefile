# senclip: every target does its own set-up on a fresh clone (creates .venv, reinstalls only when settings.ini changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.senclip-installed
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: help install demo test test-nbs test-py test-slow bench lab export clean-nbs sample-data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel

$(STAMP): settings.ini setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install senclip with its dev tools

demo: $(STAMP)  ## the main job on the bundled sample; outputs under runs/demo/
	$(BIN)/senclip_demo --out runs/demo

test: $(STAMP)  ## nbdev_test over the notebooks + pytest tests/ (offline)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest -q tests

test-slow: $(STAMP)  ## also the #| slow notebook cells
	$(BIN)/nbdev_test --n_workers 2 --flags slow

bench: $(STAMP)  ## every benchmark script; appends to runs/bench/results.json
	$(BIN)/python tests/bench/run_all.py $(BENCH_ARGS)

lab: $(STAMP)  ## JupyterLab on the repository
	$(BIN)/python -m pip install -q jupyterlab
	$(BIN)/jupyter lab --notebook-dir=.

export: $(STAMP)  ## notebooks -> senclip/, and clean notebooks
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

sample-data: $(STAMP)  ## rebuild data/sample from ../shared/data (maintainers only)
	$(BIN)/python data/make_sample.py

clean:  ## remove run outputs (not .venv)
	rm -rf runs _proc
