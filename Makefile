# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean gpu-kit docs docs-tables

# Idempotent: reinstalls only when pyproject.toml changed since the last install.
install: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[trainer,dev]'
	touch $(STAMP)

run: install
	$(PY) -m app

test: install
	$(PY) -m ruff check app trainer labrun tests bench
	$(PY) -m mypy
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check app trainer labrun tests bench
	$(PY) -m ruff format --check app trainer labrun tests bench
	$(PY) -m mypy

bench: install
	$(PY) bench/run_all.py

# The documentation site (docs/, mkdocs.yml) into site/; a broken link or a page missing from the nav fails.
# `make test` builds it too (tests/docs/). Serve it while writing: .venv/bin/mkdocs serve
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The documentation's pages generated from the code (docs/reference/, docs/api/openapi.json).
docs-tables: install
	$(PY) -m app.docs_tables

# The GPU proof kit: the wheels a CUDA machine without internet lacks, into bench/gpu-kit/ (docs/gpu-proof.md).
gpu-kit: install
	$(PY) bench/gpu_kit.py download

clean:
	rm -rf $(VENV) outputs .pytest_cache site
