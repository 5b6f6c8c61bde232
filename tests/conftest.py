"""Fixtures for the suite's own tests: fresh databases and copies of the migrations to break."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from migration_gate.checks.catalog import CheckContext
from migration_gate.core import dsn
from migration_gate.core.drift import Reference
from migration_gate.core.server import DisposableServer
from migration_gate.plugin.config import GATE_CONFIG
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.plugin.smoke import WebhookReceiver

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "smoke" / "openapi.yaml"


FUZZES_THE_API = "fuzzes_the_api"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{FUZZES_THE_API}: fuzzes the reference API on a disposable database; refused with --api-url",
    )
    # pyproject's addopts keep Schemathesis' plugin out of every session in this repository
    # (importing it costs seconds); the suite's own tests fuzz the contract with it.
    config.pluginmanager.import_plugin("schemathesis.pytest.plugin")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fuzzing never runs against a deployment: it writes rows no smoke run tags, and fires webhooks."""
    api_url = session.config.stash[GATE_CONFIG].api_url
    if api_url and any(item.get_closest_marker(FUZZES_THE_API) for item in session.items):
        raise pytest.UsageError(
            f"contract fuzzing never runs against a deployment ({api_url} from --api-url or FLUXOLAB_API_URL): "
            "it would write rows no smoke run tags and fire webhooks; it fuzzes the reference API on a "
            "disposable database without them (pytest smoke --api-url URL smoke-tests a deployment)"
        )


@pytest.fixture
def fresh_database(disposable_server: DisposableServer) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = disposable_server.create_database(name)
    yield url
    disposable_server.drop_database(name)


@pytest.fixture
def clone(gate: GateDatabases) -> Iterator[Callable[[str], str]]:
    """``clone(checkpoint)``: the URL of a private copy of the gate database there; dropped afterwards."""
    if not isinstance(gate, CheckpointDatabases):
        pytest.skip("these tests write to clones of the disposable gate database")
    databases = gate
    names: list[str] = []

    def make(checkpoint: str) -> str:
        names.append(f"clone_{checkpoint}_{uuid.uuid4().hex[:8]}")
        return databases.clone(checkpoint, names[-1])

    yield make
    for name in names:
        databases.server.drop_database(name)


# The checkpoint name of a private clone of the gate database after the last migration.
MIGRATED = "migrated"


def disposable(gate: GateDatabases) -> CheckpointDatabases:
    if not isinstance(gate, CheckpointDatabases):
        pytest.skip("injecting faults needs the disposable server (run without --database-url)")
    return gate


@pytest.fixture(scope="module")
def migrated_clone(gate: GateDatabases) -> Iterator[str]:
    """A private copy of the database after the last migration, for one test module."""
    databases = disposable(gate)
    name = f"faults_{uuid.uuid4().hex[:8]}"
    url = databases.clone(databases.last, name)
    yield url
    databases.server.drop_database(name)


def rolled_back_context(
    gate: GateDatabases, url: str, checkpoint: str, *, realistic_volume: bool = False
) -> Iterator[CheckContext]:
    """What a check reads on ``url``, inside a transaction that is always rolled back."""
    databases = disposable(gate)
    with dsn.connect(url) as conn, conn.transaction(force_rollback=True):
        yield CheckContext(
            conn,
            databases.plan,
            checkpoint,
            legacy=databases.legacy_snapshot(),
            realistic_volume=realistic_volume,
            reference=Reference(databases.server),  # schema_drift builds beside the clone
        )


@pytest.fixture
def context(gate: GateDatabases, migrated_clone: str) -> Iterator[CheckContext]:
    """A check's context on this module's clone after the last migration; what a test writes is rolled back."""
    yield from rolled_back_context(gate, migrated_clone, MIGRATED)


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of migrations/ that a test may edit, renumber or break."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target)
    return target


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, timeout: float = 120) -> Run:
    """The real command line, in a subprocess, as a person would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "migration_gate.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli() -> Callable[..., Run]:
    return run_cli


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A loopback HTTP receiver recording every POST (paths under /fail answer 503), as a chat's webhook."""
    with WebhookReceiver() as listening:
        yield listening


def posted_texts(receiver: WebhookReceiver, path: str) -> list[str]:
    """The ``text`` of each Slack-style message posted to ``path``, in order."""
    return [json.loads(delivery.body)["text"] for delivery in receiver.deliveries_to(path)]
