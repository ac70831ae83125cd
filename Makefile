# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean gpu-kit

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

# The wheels the GPU machine lacks (bench/gpu-kit/, for the device tool's `carry`); see README, "Proving the GPU path".
gpu-kit: install
	$(PY) bench/gpu_kit.py download

clean:
	rm -rf $(VENV) outputs .pytest_cache
