# Every target creates the virtual environment (.venv) first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# two sets, each pinned: the runtime (training, evaluation, inference, export, the loggers a run uses) that
# `make train` / `make install` install, and the dev tools on top (tests, lint, docs site, lock) for `make test`
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# extra arguments: `make train ARGS="experiment=fcn_shapes schedule.max_steps=300"`
ARGS ?=
# pinned versions, generated from pyproject.toml by `make lock`: the runtime set, and the runtime set plus the
# `dev` and `docs` extras. Each target installs exactly these when the files exist, else pyproject.toml's ranges.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# A machine-wide pip constraint (`constraint = ...` in a pip.conf, e.g. a cap on torch) binds the lock too:
# pip-compile does not read pip's config for it. Expanded only when `make lock` runs.
PIP_CONF_CONSTRAINT = $(shell $(PY) -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.constraint='\(.*\)'$$/\1/p")
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(addprefix --constraint ,$(PIP_CONF_CONSTRAINT))

.PHONY: help install install-dev env lock train test test-all lint format docs docs-serve clean distclean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"segkit needs Python >= 3.11 (the pinned numpy, scipy and matplotlib do); $(PYTHON) is {v.major}.{v.minor}: run with PYTHON=python3.11 (or newer), e.g. PYTHON=python3.11 make train")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	@if [ -f $(LOCK) ]; then \
	  echo "$(PY) -m pip install -r $(LOCK) && $(PY) -m pip install -e . --no-deps"; \
	  $(PY) -m pip install -r $(LOCK) && $(PY) -m pip install -e . --no-deps; \
	else \
	  echo "$(PY) -m pip install -e .   (no $(LOCK): newest versions pyproject.toml allows)"; \
	  $(PY) -m pip install -e .; \
	fi
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) $(wildcard $(DEV_LOCK))
	@if [ -f $(DEV_LOCK) ]; then \
	  echo "$(PY) -m pip install -r $(DEV_LOCK)"; \
	  $(PY) -m pip install -r $(DEV_LOCK); \
	else \
	  echo "$(PY) -m pip install -e \".[dev,docs]\"   (no $(DEV_LOCK): newest versions pyproject.toml allows)"; \
	  $(PY) -m pip install -e ".[dev,docs]"; \
	fi
	touch $(DEV_STAMP)

install: $(STAMP)  ## create .venv with the runtime set (the pinned versions of requirements.lock)

install-dev: $(DEV_STAMP)  ## add the test, lint and docs tools (requirements-dev.lock) to .venv

# Keeps the versions already pinned in the locks when they still fit pyproject.toml (new dependencies get the newest
# allowed); `make lock ARGS=--upgrade` moves everything to the newest allowed, `ARGS="--upgrade-package timm"` one.
# Rewrites a lock only when its content changes, so that an unchanged lock does not trigger a reinstall; it never
# reinstalls .venv itself (order-only prerequisite): the next `make install`/`make test` syncs .venv to the new locks.
# The runtime lock is compiled within the dev lock's pins, so the two agree on every package they share.
lock: | $(DEV_STAMP)  ## regenerate requirements.lock and requirements-dev.lock from pyproject.toml (commit them)
	@$(PY) -m piptools --version >/dev/null 2>&1 || $(PY) -m pip install pip-tools
	@for f in $(DEV_LOCK) $(LOCK); do rm -f $$f.tmp; if [ -f $$f ]; then cp $$f $$f.tmp; fi; done
	$(PIP_COMPILE) --extra dev --extra docs $(ARGS) --output-file $(DEV_LOCK).tmp pyproject.toml
	$(PIP_COMPILE) --constraint $(DEV_LOCK).tmp $(ARGS) --output-file $(LOCK).tmp pyproject.toml
	@sed -i '/^    #   -c $(DEV_LOCK).tmp$$/d' $(LOCK).tmp  # every pin's "via" note names the constraint file
	@for f in $(DEV_LOCK) $(LOCK); do \
	  if cmp -s $$f.tmp $$f; then rm $$f.tmp; echo "$$f unchanged"; else mv $$f.tmp $$f; echo "$$f written: commit it"; fi; \
	done

env: $(STAMP)  ## versions, devices, native bf16, threads, data and cache folders (paste it into bug reports)
	$(PY) -m src.env

train: $(STAMP)  ## train and test FCN-R18-D8 on the built-in shapes dataset (CPU, a few minutes)
	$(PY) -m src.train experiment=fcn_shapes $(ARGS)

test: $(DEV_STAMP)  ## the default test suite (no slow tests)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: $(DEV_STAMP)  ## every test, slow ones included
	$(PY) -m pytest $(ARGS)

lint: $(DEV_STAMP)  ## ruff lint and format check
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

# NO_MKDOCS_2_WARNING: mkdocs-material >= 9.7 prints a banner about MkDocs 2.0 at every build (not a warning)
docs: $(DEV_STAMP)  ## build the docs site into site/ (mkdocs-material; warnings are errors)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

docs-serve: $(DEV_STAMP)  ## serve the docs at http://127.0.0.1:8000 and rebuild them on every change
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --strict

format: $(DEV_STAMP)  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix src tests scripts
	$(PY) -m ruff format src tests scripts

clean:  ## remove run outputs and caches (keeps .venv and data/)
	rm -rf logs outputs multirun wandb lightning_logs site .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv and the generated data/
	rm -rf $(VENV) data
