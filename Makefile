# The two commands of the README. Both create the environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: gate test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "migration-gate needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## gate: migrate a disposable PostgreSQL from the legacy seed and run every check and smoke test
gate: $(STAMP)
	$(BIN)/pytest checks smoke $(PYTEST_ARGS)

## test: the suite's own tests (runner, migrations, every check made to fail)
test: $(STAMP)
	$(BIN)/pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check migration_gate tests checks smoke conftest.py
	$(BIN)/ruff format --check migration_gate tests checks smoke conftest.py
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/migration-gate bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .schemathesis
