"""The gate's tests, generated from the catalog: one per check and checkpoint where it holds.

``checks/test_gate.py`` asks for ``check`` and ``checkpoint``; this module parametrizes
them from the catalog (``migration_gate.checks.catalog``), with ids ``<name>-<checkpoint>``,
each rule family expanded to the tables it judges at the last checkpoint
(``tenant_foreign_key[api_keys]-after_009``: the gate databases are made at collection for
that, ``plugin.session``), and hands the test a ``check_context``: a connection to the database as it was at that
checkpoint (disposable mode), or to the existing database, read-only. On an existing
database whose ledger has not reached the check's migration, the test is skipped with
that reason; a check that cannot say anything here (no pre-005 snapshot, a table too
small for a plan to mean anything) is skipped with its own.

Markers carry what a test needs: ``@pytest.mark.holds_from(6)`` parametrizes
``checkpoint`` over the checkpoints where migration 006 has run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg
import pytest

from migration_gate.checks import catalog
from migration_gate.checks.catalog import Check, CheckContext, CheckSkipped
from migration_gate.checks.failures import CheckFailed
from migration_gate.core import dsn
from migration_gate.core.drift import Reference
from migration_gate.core.plan import load_plan
from migration_gate.data import volume_checkpoint
from migration_gate.plugin.config import CATALOG, GATE_CONFIG, POINTS, GateConfig
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.plugin.existing import CURRENT
from migration_gate.plugin.session import gate_session
from migration_gate.plugin.summary import INVARIANT_COUNT, RULE_RESULT

# The audit tests leave their figures as this user property: it reaches the terminal
# summary from xdist workers too, and JUnit XML as a <property>.
PROFILE_AUDIT_PROPERTY = "profile_audit"
# The role report leaves one property per line, in order (checks/test_role_report.py).
ROLE_REPORT_PROPERTY = "role_report"
# The same figures as data, for the history (``--history``): (checkpoint, {code: users}) and {figure: [roles]}.
PROFILE_FIGURES_PROPERTY = "profile_figures"
ROLE_FIGURES_PROPERTY = "role_figures"
# What a check counted (offending rows, grants, objects) whenever it knows: every invariant, and any
# check whose failure carries a count. The summary's INVARIANT_COUNT names the invariant; this one
# rides on the check's own report, for the history.
CHECK_COUNT = "check_count"

OpenCheckpoint = Callable[[str, int, str], AbstractContextManager[psycopg.Connection]]
CheckContextFactory = Callable[[Check, str], AbstractContextManager[CheckContext]]


def checkpoints_for(config: pytest.Config, version: int, at: str = catalog.EVERY) -> list[str]:
    """The checkpoints where something holding from ``version`` runs, known at collection time.

    On an existing database it is always ``current`` (the check skips itself when the
    ledger is not that far yet); disposable, a VOLUME check runs once, on the volume.
    """
    if not config.stash[GATE_CONFIG].disposable:
        return [CURRENT]
    if at == catalog.VOLUME:
        return ["volume"]
    points = [point for point in config.stash[POINTS] if not point.legacy and point.version >= version]
    return [point.name for point in points][-1:] if at == catalog.LAST else [point.name for point in points]


@pytest.hookimpl(trylast=True)  # after @parametrize, so ids read "<object>-<checkpoint>"
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "check" in metafunc.fixturenames and "checkpoint" in metafunc.fixturenames:
        entries = config.stash[CATALOG]
        if entries is None:
            raise pytest.UsageError(
                f"no checks directory {config.stash[GATE_CONFIG].checks_dir}: pass --checks-dir DIR"
            )
        # The rules judge the schema the plan leaves: from its last migration on.
        entries = gate_session(config).expand(entries, holds_from=config.stash[POINTS][-1].version)
        metafunc.parametrize(
            ("check", "checkpoint"),
            [
                pytest.param(check, point, id=f"{check.name}-{point}", marks=getattr(pytest.mark, check.kind))
                for check in entries
                for point in checkpoints_for(config, check.from_version, check.at)
            ],
        )
        return
    marker = metafunc.definition.get_closest_marker("holds_from")
    if marker is not None and "checkpoint" in metafunc.fixturenames:
        at = catalog.LAST if marker.kwargs.get("last_only", False) else catalog.EVERY
        metafunc.parametrize("checkpoint", checkpoints_for(config, marker.args[0], at))


@pytest.fixture(scope="session")
def open_checkpoint(gate: GateDatabases) -> OpenCheckpoint:
    """``open_checkpoint(checkpoint, version, what)``: a connection to the database at ``checkpoint``.

    On an existing database whose ledger has not reached ``version`` yet, the test is
    skipped with that reason: what holds from a migration cannot be asked before it.
    """
    reached: dict[str, int] = {}

    @contextmanager
    def open_(checkpoint: str, version: int, what: str) -> Iterator[psycopg.Connection]:
        if not gate.disposable:
            if checkpoint not in reached:
                reached[checkpoint] = gate.version_at(checkpoint)
            if reached[checkpoint] < version:
                raise pytest.skip.Exception(
                    f"{what} holds from {version:03d}; the ledger of this database is at {reached[checkpoint]:03d}",
                    _use_item_location=True,
                )
        with gate.connect(checkpoint) as conn:
            yield conn

    return open_


@pytest.fixture(scope="session")
def volume_database(gate: GateDatabases) -> Iterator[str]:
    """A disposable database at the plan's last migration with ≥ 100k generated activities, analyzed."""
    if not isinstance(gate, CheckpointDatabases):
        pytest.skip(
            "the generated volume needs the disposable server; an existing database uses its own data"
        )
    with gate.server.temporary_database("gate_volume") as url:
        volume_checkpoint.fill(url, gate.plan)
        yield url


@pytest.fixture
def check_context(
    request: pytest.FixtureRequest,
    gate: GateDatabases,
    gate_config: GateConfig,
    open_checkpoint: OpenCheckpoint,
) -> CheckContextFactory:
    """``check_context(check, checkpoint)``: what ``check.verify`` reads there, as a context manager.

    A check that cannot say anything here (``CheckSkipped``) is skipped with its reason; an
    invariant's count is left on the test's report, for the pull request's summary.
    """
    plan = gate.plan if isinstance(gate, CheckpointDatabases) else load_plan(gate_config.migrations_dir)
    # schema_drift builds on the gate's own server; for an existing database, on one of its major.
    reference = Reference(
        gate.server if isinstance(gate, CheckpointDatabases) else None,
        gate_config.pg_ctl,
        gate_config.pg_version,
    )

    @contextmanager
    def context(check: Check, checkpoint: str) -> Iterator[CheckContext]:
        if checkpoint == "volume":
            opened: AbstractContextManager[psycopg.Connection] = dsn.connect(
                request.getfixturevalue("volume_database")
            )
            where = "the generated volume"
        else:
            opened = open_checkpoint(checkpoint, check.from_version, check.name)
            where = f"{checkpoint} ({dsn.describe(gate.url(checkpoint))})"
        if checkpoint == gate.last:  # which rule it judges which table for, for the summary
            via = "" if check.family is not None else check.name
            for rule, table in check.judges:
                request.node.user_properties.append((RULE_RESULT, (rule, table, via)))
        with opened as conn:
            try:
                yield CheckContext(
                    conn,
                    plan,
                    checkpoint,
                    where,
                    gate.legacy_snapshot(),
                    migrations_dir=str(gate_config.migrations_dir),
                    realistic_volume=checkpoint == "volume",
                    allowed_grantees=gate_config.allowed_grantees,
                    reference=reference,
                    exemptions=gate_config.exemptions,
                )
            except CheckSkipped as skipped:
                # Reported at the test's own location and under the check's name (pytest -rs).
                raise pytest.skip.Exception(
                    f"{check.name}: {skipped.reason}", _use_item_location=True
                ) from None
            except CheckFailed as failed:
                if failed.count is not None:
                    request.node.user_properties.append((CHECK_COUNT, failed.count))
                    if check.invariant is not None:
                        request.node.user_properties.append(
                            (INVARIANT_COUNT, (check.name, checkpoint, failed.count))
                        )
                raise
            if check.invariant is not None:
                request.node.user_properties.append((CHECK_COUNT, 0))
                request.node.user_properties.append((INVARIANT_COUNT, (check.name, checkpoint, 0)))

    return context


def _recorded(terminalreporter: pytest.TerminalReporter, property_name: str) -> list[str]:
    return [
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == property_name
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sections = (
        (
            "migration-gate: profile audit (users per profile in their default workspace)",
            sorted(_recorded(terminalreporter, PROFILE_AUDIT_PROPERTY)),
        ),
        (
            "migration-gate: roles of the cluster (reported, not asserted)",
            _recorded(terminalreporter, ROLE_REPORT_PROPERTY),
        ),
    )
    for title, lines in sections:
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
