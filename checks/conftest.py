"""Wiring for the gate's checks: which checkpoints a check runs at, the volume database, the audit report."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest

from migration_gate.checks import invariants
from migration_gate.core.errors import GateError
from migration_gate.data import volume_checkpoint
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases, checkpoints_from
from migration_gate.plugin.hooks import GATE_CONFIG

CHECKS_DIR = Path(__file__).parent
# The audit tests leave their figures as this user property: it reaches the terminal
# summary from xdist workers too, and JUnit XML as a <property>.
PROFILE_AUDIT_PROPERTY = "profile_audit"

OpenCheckpoint = Callable[[str, int, str], AbstractContextManager[psycopg.Connection]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "holds_from(version, last_only=False): parametrize `checkpoint` over the checkpoints where migration "
        "`version` has run (only the last one with last_only)",
    )
    try:
        # Refuse a malformed check file now, with one line, rather than as a collection error.
        invariants.load(CHECKS_DIR)
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None


def checkpoint_params(config: pytest.Config, version: int, last_only: bool = False) -> list[str]:
    """The checkpoints a check holding from ``version`` runs at: disposable ones, or ``current``."""
    names = checkpoints_from(version, config.stash[GATE_CONFIG].disposable)
    return names[-1:] if last_only else names


@pytest.hookimpl(trylast=True)  # after @parametrize, so ids read "<object>-<checkpoint>"
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("holds_from")
    if marker is not None and "checkpoint" in metafunc.fixturenames:
        last_only = bool(marker.kwargs.get("last_only", False))
        metafunc.parametrize("checkpoint", checkpoint_params(metafunc.config, marker.args[0], last_only))


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
                pytest.skip(
                    f"{what} holds from {version:03d}; the ledger of this database is at {reached[checkpoint]:03d}"
                )
        with gate.connect(checkpoint) as conn:
            yield conn

    return open_


@pytest.fixture(scope="session")
def volume_database(gate: GateDatabases) -> Iterator[str]:
    """A disposable database at 008 with ≥ 100k generated activities, analyzed; its URL."""
    if not isinstance(gate, CheckpointDatabases):
        pytest.skip(
            "the generated volume needs the disposable server; an existing database uses its own data"
        )
    name = f"gate_volume_{uuid.uuid4().hex[:8]}"
    url = volume_checkpoint.build(gate.server, gate.plan, name)
    yield url
    gate.server.drop_database(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = sorted(
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == PROFILE_AUDIT_PROPERTY
    )
    if lines:
        terminalreporter.section(
            "migration-gate: profile audit (users per profile in their default workspace)"
        )
        for line in lines:
            terminalreporter.write_line(line)
