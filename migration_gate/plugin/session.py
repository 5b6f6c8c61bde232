"""The session's gate databases, made once, on first need: at collection or by the ``gate`` fixture.

The rules expand to one test per table they judge (``tenant_foreign_key[api_keys]-after_009``),
so the tables must be known when pytest collects: the databases the checks read exist by
then. Whoever asks first (``pytest_generate_tests`` for ``checks/test_gate.py``, or the
``gate`` fixture for any other test) makes them; everyone else gets the same object, or the
same error. The disposable server is stopped when the session's configuration is cleaned
up. Under pytest-xdist each worker collects, and so makes its own, as before.

Disposable (default): 001→004 plus the legacy seed, then a database at each checkpoint.
With ``--database-url``: that database as it is, read-only; with ``--migrate``, pending
migrations are applied first (for rehearsals on a copy), so that the rules see what they add.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from migration_gate.checks import catalog
from migration_gate.checks.catalog import Check
from migration_gate.core import corrections, schema
from migration_gate.core.corrections import Correction
from migration_gate.core.errors import GateError
from migration_gate.core.locks import LockProbe
from migration_gate.core.plan import Migration, load_plan
from migration_gate.core.runner import migrate
from migration_gate.core.server import DisposableServer
from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.plugin.existing import ExistingDatabase
from migration_gate.plugin.summary import AppliedRecord


class ServerUnavailable(GateError):
    """No disposable server could start: the session cannot run anything that needs one."""


class GateSession:
    """One session's server and gate databases, each made once; a failure is kept and raised again."""

    def __init__(self, config: pytest.Config, gate_config: GateConfig) -> None:
        self.config = config
        self.gate_config = gate_config
        self.applied: AppliedRecord | None = None  # what the session applied, for the summary
        self._server: DisposableServer | None = None
        self._databases: GateDatabases | None = None
        self._failure: GateError | None = None

    def progress(self) -> Callable[[str], None]:
        # Straight to the terminal: what a session fixture prints is captured.
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        return reporter.write_line if reporter is not None else (lambda line: None)

    def server(self) -> DisposableServer:
        """The session's disposable server (each xdist worker has its own), started on first use."""
        if self._server is None:
            try:
                server = DisposableServer(
                    self.gate_config.pg_ctl, pg_version=self.gate_config.pg_version
                ).start()
            except GateError as exc:
                raise ServerUnavailable(str(exc)) from None
            self.config.add_cleanup(server.stop)
            self._server = server
        return self._server

    def databases(self) -> GateDatabases:
        """The databases the checks read, made on first use (GateError, every time, if that failed)."""
        if self._failure is not None:
            raise self._failure
        if self._databases is None:
            try:
                self._databases = self._make()
            except GateError as exc:
                self._failure = exc
                raise
        return self._databases

    def corrections(self, plan: list[Migration]) -> list[Correction]:
        """--corrections-dir's corrections (none without it); a malformed one stops the session."""
        if self.gate_config.corrections_dir is None:
            return []
        return corrections.load(self.gate_config.corrections_dir, plan)

    def _make(self) -> GateDatabases:
        gate_config = self.gate_config
        plan = load_plan(gate_config.migrations_dir)
        if gate_config.database_url is not None:
            # The files only matter here to migrate: the checks that judge them load them themselves.
            probe, changes = LockProbe(), schema.ChangeProbe()
            applied = (
                migrate(
                    gate_config.database_url,
                    plan,
                    progress=self.progress(),
                    hooks=[probe, changes],
                    lock_timeout=gate_config.lock_timeout,
                    corrections=self.corrections(plan),
                )
                if gate_config.migrate
                else []
            )
            self.applied = AppliedRecord.of(
                "migrations applied by --migrate (existing database)",
                applied,
                probe.by_migration,
                changes=changes.by_migration,
            )
            existing = ExistingDatabase(gate_config.database_url, gate_config.statement_timeout)
            if not gate_config.migrate and gate_config.corrections_dir is not None:
                # Read-only: nothing is applied, but a correction edited since it ran here is refused.
                with existing.connect() as conn:
                    corrections.verify(self.corrections(plan), corrections.read(conn))
            return existing
        databases = CheckpointDatabases(self.server(), plan).build(
            gate_config.legacy_seed, corrections=self.corrections(plan)
        )
        seed_line = f"{f'(legacy seed {gate_config.legacy_seed.name}, loaded at 004)':<45} {databases.seed_seconds:8.3f} s"
        self.applied = AppliedRecord.of(
            "migrations applied (disposable database, legacy seed)",
            databases.applied,
            databases.locks,
            [seed_line],
            databases.changes,
        )
        return databases

    def expand(self, entries: list[Check], holds_from: int) -> list[Check]:
        """The catalog with each rule family expanded to the tables it judges at the last checkpoint.

        When the databases cannot be made (a plan error, no server), each family stays one
        entry, ``<rule>[*]``: its test asks for the ``gate`` fixture, which reports why.
        """
        try:
            gate = self.databases()
            with gate.connect(gate.last) as conn:
                return catalog.expand(entries, conn, holds_from)
        except (GateError, psycopg.Error):
            return entries


SESSION = pytest.StashKey[GateSession]()


def gate_session(config: pytest.Config) -> GateSession:
    """The session's ``GateSession`` (made with the resolved settings at configure time)."""
    return config.stash[SESSION]
