"""The pytest wiring: options, the session's gate database, and the report of what ran.

Installed as the ``migration_gate`` pytest11 entry point; the gate's generated tests and
their fixtures are in ``migration_gate.plugin.gate``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from migration_gate.checks import catalog
from migration_gate.core.errors import EXIT_USAGE, GateError
from migration_gate.core.installations import find_installation
from migration_gate.core.plan import Checkpoint, checkpoints, load_plan
from migration_gate.core.server import DisposableServer
from migration_gate.core.signals import interrupt_on_signals
from migration_gate.plugin import config as gate_config_module
from migration_gate.plugin import summary
from migration_gate.plugin.config import CATALOG, GATE_CONFIG, POINTS, GateConfig
from migration_gate.plugin.databases import GateDatabases
from migration_gate.plugin.existing import ExistingDatabase
from migration_gate.plugin.session import SESSION, GateSession, ServerUnavailable, gate_session
from migration_gate.plugin.smoke import SMOKE_ROWS
from migration_gate.plugin.summary import AppliedRecord

pytest_plugins = ("migration_gate.plugin.gate", "migration_gate.plugin.history")
# What the session applied, for the terminal and the pull request's summary.
GATE_APPLIED = pytest.StashKey[AppliedRecord]()
# Under pytest-xdist: the key of a worker's record in its workeroutput, and the records
# the controller received, by worker id.
WORKER_SUMMARY = "migration_gate_summary"
WORKER_SUMMARIES = pytest.StashKey[list[tuple[str, AppliedRecord]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    gate_config_module.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    interrupt_on_signals()
    if config.getoption("hypothesis_profile", None):
        # The profiles (ci, nightly) must exist before Hypothesis' own plugin applies
        # --hypothesis-profile. Only then: importing Hypothesis costs a session a second.
        importlib.import_module("migration_gate.plugin.hypothesis_profiles")
    try:
        config.stash[GATE_CONFIG] = gate_config_module.resolve(config)
        load_catalog(config, config.stash[GATE_CONFIG])
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION] = GateSession(config, config.stash[GATE_CONFIG])


def load_catalog(config: pytest.Config, gate_config: GateConfig) -> None:
    """Load the catalog (a malformed check file is a usage error) and the checkpoints the plan has."""
    for kind in catalog.KINDS:  # `pytest checks -m invariant` runs one kind of the catalog
        config.addinivalue_line("markers", f"{kind}: the catalog's {kind} checks")
    config.addinivalue_line(
        "markers",
        "holds_from(version, last_only=False): parametrize `checkpoint` over the checkpoints where migration "
        "`version` has run (only the last one with last_only)",
    )
    # A checkout without a checks directory (smoke tests kept elsewhere) has no catalog to run.
    entries = catalog.load(gate_config.checks_dir) if gate_config.checks_dir.is_dir() else None
    catalog.check_exemptions(entries or [], gate_config.exemptions)
    config.stash[CATALOG] = entries
    try:
        config.stash[POINTS] = checkpoints(load_plan(gate_config.migrations_dir))
    except GateError:
        # Named at collection only; building the gate database reports the plan's problem.
        config.stash[POINTS] = [
            Checkpoint("after_006", 6),
            Checkpoint("after_007", 7),
            Checkpoint("after_008", 8),
        ]


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
        installation = find_installation(gate_config.pg_ctl, gate_config.pg_version)
    except GateError as exc:
        return [f"migration-gate: disposable PostgreSQL: {exc}"]
    return [f"migration-gate: disposable {installation.describe()}; migrations {gate_config.migrations_dir}"]


@pytest.fixture(scope="session")
def gate_config(pytestconfig: pytest.Config) -> GateConfig:
    return pytestconfig.stash[GATE_CONFIG]


@pytest.fixture(scope="session")
def disposable_server(pytestconfig: pytest.Config) -> DisposableServer:
    """A throwaway PostgreSQL for this session (each xdist worker has its own): the gate's own."""
    try:
        return gate_session(pytestconfig).server()
    except ServerUnavailable as exc:
        pytest.exit(f"migration-gate: {exc}", returncode=EXIT_USAGE)


@pytest.fixture(scope="session")
def gate(pytestconfig: pytest.Config) -> GateDatabases:
    """The databases the checks read (``plugin.session``): made once, at collection or here.

    Disposable (default): 001→004 plus the legacy seed, then a database at each checkpoint.
    With --database-url: that database as it is, read-only; with --migrate, pending
    migrations are applied first (for rehearsals on a copy).
    """
    try:
        return gate_session(pytestconfig).databases()
    except ServerUnavailable as exc:
        pytest.exit(f"migration-gate: {exc}", returncode=EXIT_USAGE)
    except GateError as exc:
        pytest.fail(f"building the gate database failed: {exc}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    applied = config.stash[SESSION].applied if SESSION in config.stash else None
    # Under pytest-xdist each worker builds its own gate database and the controller,
    # which reports, builds none: a worker hands what it applied over.
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        if applied is not None:
            workeroutput[WORKER_SUMMARY] = applied.to_json()
        return
    gate_config = config.stash.get(GATE_CONFIG, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if gate_config is None or gate_config.summary is None or reporter is None:
        return
    received = config.stash.get(WORKER_SUMMARIES, [])
    applied = applied or (min(received, key=lambda pair: pair[0])[1] if received else None)
    reports = [
        r for key in ("passed", "failed", "skipped") for r in reporter.stats.get(key, []) if r.when == "call"
    ]
    failed = [r for r in reporter.stats.get("failed", []) if isinstance(r, pytest.TestReport)]
    outcome = (
        "passed" if exitstatus == 0 else f"failed ({len(failed)} test(s))" if failed else f"exit {exitstatus}"
    )
    text = summary.markdown(
        applied,
        summary.invariant_counts(reports),
        failed,
        outcome,
        summary.rule_results(reports),
        gate_config.exemptions,
    )
    summary.write(gate_config.summary, text, append=gate_config.summary_append)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep each worker's record for the terminal and the summary."""
    data = getattr(node, "workeroutput", {}).get(WORKER_SUMMARY)
    if data:
        name = str(getattr(node.gateway, "id", "worker"))
        node.config.stash.setdefault(WORKER_SUMMARIES, []).append((name, AppliedRecord.from_json(data)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    smoke_lines = config.stash.get(SMOKE_ROWS, [])
    if smoke_lines:
        terminalreporter.section("migration-gate: smoke rows on the deployment")
        for line in smoke_lines:
            terminalreporter.write_line(line)
    own = config.stash[SESSION].applied if SESSION in config.stash else None
    received: list[tuple[str, AppliedRecord]] = config.stash.get(WORKER_SUMMARIES, [])
    records = ([("", own)] if own else []) + sorted(received, key=lambda pair: pair[0])
    for worker, record in records:
        lines = record.terminal_lines()
        if not lines:
            continue
        terminalreporter.section(f"migration-gate: {record.title}" + (f" ({worker})" if worker else ""))
        for line in lines:
            terminalreporter.write_line(line)
