"""The pytest side of the history: ``--history SOURCE`` appends the session to it (docs/history.md).

Each test carries what the history needs as user properties, which reach the controller
from pytest-xdist's workers with the reports (never prints): its identity, set at
collection (a catalog check's name and checkpoint, or a smoke test's name), and the
check's count and the audits' figures, set by the tests themselves (``plugin.gate``).
The controller alone appends, once, at the end of the session: a worker's session is a
part of the run, not a run. A source it could not append to is refused before the first
test (exit 2, one line, nothing written); an append that fails at the end says so in one
line, and a session that passed then exits 2.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from migration_gate.checks.catalog import Check
from migration_gate.core import dsn, ledger
from migration_gate.core.errors import EXIT_OK, EXIT_USAGE, GateError
from migration_gate.core.identity import identify
from migration_gate.core.installations import find_installation
from migration_gate.core.plan import load_plan
from migration_gate.history import store
from migration_gate.history.record import CHECK, DISPOSABLE, GATE, SMOKE, TEST, Result, RunRecord, Target, now
from migration_gate.plugin.config import GATE_CONFIG, GateConfig
from migration_gate.plugin.existing import ExistingDatabase
from migration_gate.plugin.gate import CHECK_COUNT, PROFILE_FIGURES_PROPERTY, ROLE_FIGURES_PROPERTY

# The user property naming what a test is, for the history: (kind, name, checkpoint).
GATE_CHECK = "gate_check"
SESSION = pytest.StashKey["SessionHistory"]()


@dataclass
class TestOutcome:
    identity: tuple[str, str, str]
    outcome: str = "passed"
    count: int | None = None
    seconds: float = 0.0


@dataclass(eq=False)  # a plugin: pytest keeps it by identity
class SessionHistory:
    """What the controller gathers from the reports, and how long the history itself took."""

    source: str
    described: str
    started_at: str = field(default_factory=now)
    started: float = field(default_factory=time.perf_counter)
    tests: dict[str, TestOutcome] = field(default_factory=dict)
    profile_audit: dict[str, dict[str, int]] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    overhead: float = 0.0  # seconds spent on the history: checking the source, reading the target, appending
    said: str = ""  # the line the terminal summary ends with

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every report of the session, the workers' included (registered as a plugin on the controller)."""
        properties: list[tuple[str, Any]] = list(report.user_properties)
        identity = next((value for key, value in properties if key == GATE_CHECK), None)
        if identity is None:
            return
        kind, name, checkpoint = (str(part) for part in identity)
        test = self.tests.setdefault(report.nodeid, TestOutcome((kind, name, checkpoint)))
        for key, value in properties:
            if key == CHECK_COUNT:
                test.count = int(value)
            elif key == PROFILE_FIGURES_PROPERTY:
                point, figures = value
                self.profile_audit[str(point)] = {str(code): int(n) for code, n in figures.items()}
            elif key == ROLE_FIGURES_PROPERTY:
                self.roles = {str(figure): [str(role) for role in roles] for figure, roles in value.items()}
        if report.when == "call":
            test.seconds = report.duration
            if test.outcome == "passed":
                test.outcome = report.outcome
        elif report.failed:  # a fixture's setup or teardown failed: an error, not the check's verdict
            test.outcome = "failed" if test.outcome == "failed" else "error"
        elif report.skipped:
            test.outcome = "skipped"

    def results(self) -> list[Result]:
        return [
            Result(
                test.identity[0], test.identity[1], test.identity[2], test.outcome, test.count, test.seconds
            )
            for test in self.tests.values()
        ]


def _identity(item: pytest.Item) -> tuple[str, str, str]:
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    check = params.get("check")
    if isinstance(check, Check):
        return (CHECK, check.name, str(params.get("checkpoint", "")))
    # As the playbook's smoke step names them: file::test[params].
    name = item.nodeid.rsplit("/", 1)[-1].replace(".py::", "::")
    return (SMOKE if "deployment" in getattr(item, "fixturenames", ()) else TEST, name, "")


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gate_config = config.stash.get(GATE_CONFIG, None)
    if gate_config is not None and gate_config.history is not None:
        for item in items:
            item.user_properties.append((GATE_CHECK, _identity(item)))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse a source the run could not be appended to, before the first test: nothing is written."""
    config = session.config
    gate_config = config.stash.get(GATE_CONFIG, None)
    if gate_config is None or gate_config.history is None or not _controller(config):
        return
    started = time.perf_counter()
    try:
        target = None
        if gate_config.database_url is not None and store.is_postgres(gate_config.history):
            with ExistingDatabase(gate_config.database_url, gate_config.statement_timeout).connect() as conn:
                target = identify(conn)
        described = store.check(gate_config.history, target)
    except GateError as exc:
        pytest.exit(
            f"migration-gate: --history: {dsn.scrub(str(exc), gate_config.history)}", returncode=EXIT_USAGE
        )
    history = SessionHistory(gate_config.history, described)
    history.overhead = time.perf_counter() - started
    config.stash[SESSION] = history
    config.pluginmanager.register(history, "migration_gate_history")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    history = config.stash.get(SESSION, None)
    if history is None or not _controller(config):
        return
    if not history.tests:
        history.said = f"migration-gate: no test ran: nothing appended to history {history.described}"
        return
    started = time.perf_counter()
    gate_config = config.stash[GATE_CONFIG]
    try:
        target, ledger_head = _target(gate_config)
        run = RunRecord(
            kind=GATE,
            target=target,
            started_at=history.started_at,
            finished_at=now(),
            seconds=round(time.perf_counter() - history.started, 3),
            outcome="passed"
            if exitstatus == EXIT_OK
            else "failed"
            if exitstatus == 1
            else f"exit {exitstatus}",
            exit_status=int(exitstatus),
            ledger_head=ledger_head,
            results=history.results(),
            profile_audit=history.profile_audit,
            roles=history.roles,
        )
        with store.History(history.source, create=True) as kept:
            number = kept.append(run)
    except GateError as exc:
        sys.stderr.write(
            f"migration-gate: this run was NOT appended to the history: {dsn.scrub(str(exc), history.source)}\n"
        )
        if session.exitstatus == EXIT_OK:
            session.exitstatus = EXIT_USAGE
        return
    history.overhead += time.perf_counter() - started
    failing = len(run.failing)
    history.said = (
        f"migration-gate: run {number} appended to history {history.described} "
        f"({failing} failing check(s); the history took {history.overhead:.3f} s)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    history = config.stash.get(SESSION, None)
    if history is not None and history.said:
        terminalreporter.write_line(history.said)


def _target(gate_config: GateConfig) -> tuple[Target, str | None]:
    """Who the run judged, and its ledger's head; read again at the end (``--migrate`` moves the head)."""
    if gate_config.database_url is None:
        # Every disposable database applies the whole plan; its server is new each time.
        installation = find_installation(gate_config.pg_ctl, gate_config.pg_version)
        plan = load_plan(gate_config.migrations_dir)
        return (
            Target(DISPOSABLE, installation.describe(), server_version=installation.version),
            plan[-1].file_name if plan else None,
        )
    with ExistingDatabase(gate_config.database_url, gate_config.statement_timeout).connect() as conn:
        return Target.of(identify(conn), dsn.describe(gate_config.database_url)), ledger.head(conn)
