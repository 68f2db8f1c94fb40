# senclip: every target does its own set-up on a fresh clone (creates .venv, reinstalls only when settings.ini changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.senclip-installed
# Tests and the demo run offline with a non-interactive matplotlib; `make lab` keeps the user's own settings
# (figures must show in the kernels, and a machine with internet must stay online).
OFFLINE := HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning

.PHONY: help install install-lab outputs demo paper test test-nbs test-py test-slow bench lab export clean-nbs sample-data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel

$(STAMP): settings.ini setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install senclip with its dev tools

demo: $(STAMP)  ## the main job: the paper's chain on the bundled sample, offline (ONLINE=1: also the released weights); runs/demo/index.html
	$(if $(ONLINE),MPLBACKEND=Agg,$(OFFLINE)) $(BIN)/senclip_demo --out runs/demo $(if $(ONLINE),--online)

paper: $(STAMP)  ## the paper's tables and figures with papermill: runs/<preset>/index.html (PRESET=paper|official-code|demo, PAPER_ARGS="--set ...")
	MPLBACKEND=Agg $(BIN)/senclip_paper --preset $(or $(PRESET),paper) $(PAPER_ARGS)

test: $(STAMP)  ## the fast loop: nbdev_test over the notebooks + pytest tests/ without the slow marker (offline)
	$(BIN)/nbdev_export
	$(OFFLINE) $(BIN)/nbdev_test --n_workers 2 --timing
	$(OFFLINE) $(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=8 tests

test-slow: $(STAMP)  ## the slow checks: #| slow notebook cells + pytest's slow marker (CI runs both loops)
	$(OFFLINE) $(BIN)/nbdev_test --n_workers 2 --flags slow
	$(OFFLINE) $(BIN)/python -m pytest -q -m slow --durations=8 tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: $(STAMP)  ## every benchmark script; appends to runs/bench/results.json
	$(OFFLINE) $(BIN)/python tests/bench/run_all.py $(BENCH_ARGS)

LAB_STAMP := $(VENV)/.senclip-lab-installed
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,lab]"
	touch $(LAB_STAMP)

install-lab: $(LAB_STAMP)  ## add the `lab` extra (jupyterlab, ipywidgets) to .venv; the JupyterLab tests need it

lab: $(LAB_STAMP)  ## JupyterLab on the repository (installs the `lab` extra: jupyterlab, ipywidgets)
	$(BIN)/jupyter lab --notebook-dir=.

export: $(STAMP)  ## notebooks -> senclip/, and clean notebooks
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

outputs: $(STAMP)  ## refresh the outputs kept in the notebooks (figures, tables, short results) on data/sample
	$(BIN)/nbdev_export
	$(OFFLINE) $(BIN)/python tests/refresh_outputs.py $(NBS)
	$(BIN)/nbdev_clean

sample-data: $(STAMP)  ## rebuild data/sample from ../shared/data (maintainers only)
	$(BIN)/python data/make_sample.py

clean:  ## remove run outputs (not .venv)
	rm -rf runs _proc
