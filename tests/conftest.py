"""Fixtures for the suite's own tests: fresh databases and copies of the migrations to break."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migration_gate.checks.catalog import CheckContext
from migration_gate.core import dsn
from migration_gate.core.drift import Reference
from migration_gate.core.server import DisposableServer
from migration_gate.plugin.config import GATE_CONFIG
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.plugin.smoke import WebhookReceiver
from tests.databases import PasswordRole, password_role

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
    with disposable_server.temporary_database("t") as url:
        yield url


def disposable(gate: GateDatabases) -> CheckpointDatabases:
    """``gate`` when its databases are throwaway; otherwise (--database-url) the test is skipped."""
    if not isinstance(gate, CheckpointDatabases):
        pytest.skip(
            "faults are injected into clones of the disposable gate database (run without --database-url)"
        )
    return gate


@pytest.fixture(scope="session")
def disposable_gate(gate: GateDatabases) -> CheckpointDatabases:
    """The gate's throwaway checkpoint databases; a test that needs them is skipped with --database-url."""
    return disposable(gate)


@pytest.fixture
def clone(disposable_gate: CheckpointDatabases) -> Iterator[Callable[[str], str]]:
    """``clone(checkpoint)``: the URL of a private copy of the gate database there; dropped afterwards."""
    with ExitStack() as clones:
        yield lambda checkpoint: clones.enter_context(disposable_gate.clone(checkpoint, "clone"))


@pytest.fixture
def staging(clone: Callable[[str], str]) -> str:
    """A private copy of the legacy checkpoint: staging as it is today (004 and dirty legacy data)."""
    return clone("legacy")


@pytest.fixture
def reader(gate: GateDatabases) -> Iterator[PasswordRole]:
    """A role that may read everything and write nothing, with a password: the nightly job's."""
    with password_role(gate.server, grants=("pg_read_all_data",)) as role:
        yield role


@pytest.fixture
def window(tmp_path: Path) -> dict[str, Path]:
    """Where a playbook puts its backup and its change record."""
    return {"backup": tmp_path / "staging.backup", "report": tmp_path / "change-record"}


# The checkpoint name of a private clone of the gate database after the last migration.
MIGRATED = "migrated"


@pytest.fixture(scope="module")
def migrated_clone(disposable_gate: CheckpointDatabases) -> Iterator[str]:
    """A private copy of the database after the last migration, for one test module."""
    with disposable_gate.clone(disposable_gate.last, "faults") as url:
        yield url


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


# The command line and a gate session as a person or CI starts them; a test that signals one uses Popen.
CLI = [sys.executable, "-m", "migration_gate.cli"]
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def _run(command: list[str], env: dict[str, str], timeout: float) -> Run:
    # stdin is no terminal: nothing is ever confirmed by accident.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    """``migration-gate ARGS``: the real command line, in a subprocess; ``env`` added to this one's."""
    return _run([*CLI, *args], {**os.environ, **(env or {})}, timeout)


def run_pytest(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    """``pytest ARGS``: a gate session in a subprocess, as CI runs it, skips reported.

    This shell's FLUXOLAB_* variables are left out (a test names the deployment it means);
    ``env`` is added, an empty value counting as unset.
    """
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("FLUXOLAB_")}
    return _run([*PYTEST, "-rs", *args], {**inherited, **(env or {})}, timeout)


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A directory ``make`` fills once per ``make test``, whichever xdist worker asks first.

    For what a module's fixture makes at length and only reads afterwards (a change record,
    a gate's verdict): under xdist the module's tests may run on several workers, each of
    which would make it again. pytest-xdist's own recipe, with ``flock``: the workers of one
    run share their base temporary directory's parent; a run without xdist has its own.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory, done = root / f"once-{name}", root / f"once-{name}" / ".done"
    with (root / f"once-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


def record_of(report_dir: Path) -> dict[str, Any]:
    """The change record (``report.json``) a run wrote to its --report-dir."""
    record: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    return record


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A loopback HTTP receiver recording every POST (paths under /fail answer 503), as a chat's webhook."""
    with WebhookReceiver() as listening:
        yield listening


def posted_texts(receiver: WebhookReceiver, path: str) -> list[str]:
    """The ``text`` of each Slack-style message posted to ``path``, in order."""
    return [json.loads(delivery.body)["text"] for delivery in receiver.deliveries_to(path)]
