"""The pytest wiring: options, the session's gate database, and the report of what ran."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from migration_gate import config as gate_config_module
from migration_gate.checkpoints import CheckpointDatabases, GateDatabases
from migration_gate.config import GateConfig
from migration_gate.errors import EXIT_USAGE, GateError
from migration_gate.existing import ExistingDatabase
from migration_gate.plan import load_plan
from migration_gate.runner import migrate
from migration_gate.server import DisposableServer, find_pg_ctl

GATE_CONFIG = pytest.StashKey[GateConfig]()
GATE_DATABASES = pytest.StashKey[CheckpointDatabases]()


def pytest_addoption(parser: pytest.Parser) -> None:
    gate_config_module.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[GATE_CONFIG] = gate_config_module.resolve(config)
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    gate_config = config.stash.get(GATE_CONFIG, None)
    if gate_config is None:
        return []
    if not gate_config.disposable:
        assert gate_config.database_url is not None
        existing = ExistingDatabase(gate_config.database_url, gate_config.statement_timeout)
        try:
            return [f"migration-gate: {existing.describe()}; migrations {gate_config.migrations_dir}"]
        except GateError as exc:
            pytest.exit(f"migration-gate: {exc}", returncode=EXIT_USAGE)
    try:
        pg_ctl = find_pg_ctl(gate_config.pg_ctl)
        version = subprocess.run(
            [pg_ctl, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except GateError:
        return ["migration-gate: disposable PostgreSQL: server binaries not found"]
    return [
        f"migration-gate: disposable PostgreSQL ({version}, {pg_ctl.parent}); migrations {gate_config.migrations_dir}"
    ]


@pytest.fixture(scope="session")
def gate_config(pytestconfig: pytest.Config) -> GateConfig:
    return pytestconfig.stash[GATE_CONFIG]


@pytest.fixture(scope="session")
def disposable_server(gate_config: GateConfig) -> Iterator[DisposableServer]:
    """A throwaway PostgreSQL for this session (each xdist worker has its own)."""
    try:
        server = DisposableServer(pg_ctl=gate_config.pg_ctl).start()
    except GateError as exc:
        pytest.exit(f"migration-gate: {exc}", returncode=EXIT_USAGE)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gate(request: pytest.FixtureRequest, gate_config: GateConfig) -> GateDatabases:
    """The databases the checks read.

    Disposable (default): 001→004 plus the legacy seed, then a database at each checkpoint.
    With --database-url: that database as it is, read-only; with --migrate, pending
    migrations are applied first (for rehearsals on a copy).
    """
    try:
        plan = load_plan(gate_config.migrations_dir)
        if gate_config.database_url is not None:
            if gate_config.migrate:
                migrate(gate_config.database_url, plan, progress=print)
            return ExistingDatabase(gate_config.database_url, gate_config.statement_timeout)
        server = request.getfixturevalue("disposable_server")
        databases = CheckpointDatabases(server, plan).build(gate_config.legacy_seed)
    except GateError as exc:
        pytest.fail(f"building the gate database failed: {exc}", pytrace=False)
    request.config.stash[GATE_DATABASES] = databases
    return databases


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    databases = config.stash.get(GATE_DATABASES, None)
    if databases is None:
        return
    terminalreporter.section("migration-gate: migrations applied (disposable database, legacy seed)")
    for applied in databases.applied:
        terminalreporter.write_line(f"{applied.migration.file_name:<45} {applied.seconds:8.3f} s")
    terminalreporter.write_line(f"{databases_seed_label(config):<45} {databases.seed_seconds:8.3f} s")


def databases_seed_label(config: pytest.Config) -> str:
    return f"(legacy seed {config.stash[GATE_CONFIG].legacy_seed.name}, loaded at 004)"
