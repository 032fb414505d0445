# Every target creates the virtual environment (.venv) first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# extra arguments: `make train ARGS="experiment=fcn_shapes schedule.max_steps=300"`
ARGS ?=

.PHONY: help install train test test-all lint format clean distclean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

train: $(STAMP)  ## train and test FCN-R18-D8 on the built-in shapes dataset (CPU, a few minutes)
	$(PY) -m src.train experiment=fcn_shapes $(ARGS)

test: $(STAMP)  ## the default test suite (no slow tests)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix src tests scripts
	$(PY) -m ruff format src tests scripts

clean:  ## remove run outputs and caches (keeps .venv and data/)
	rm -rf logs outputs multirun wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv and the generated data/
	rm -rf $(VENV) data
