"""The disposable gate database, built once per session and kept at each checkpoint.

The runbook pauses after 006 and after 007 to count what must be zero. Here each pause
is a database of its own, cloned from the one before (``CREATE DATABASE … TEMPLATE``):
``legacy`` (001→004 and the legacy seed, the pre-005 snapshot), ``after_006``,
``after_007`` and ``after_NNN``, named after the plan's last migration (docs/contract.md
§3). Every check can then read the database exactly as it was at its checkpoint, in any
order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from migration_gate.checks.catalog import LegacySnapshot
from migration_gate.core import dsn, runner, schema
from migration_gate.core.contract import LEGACY_VERSION
from migration_gate.core.corrections import Correction
from migration_gate.core.locks import LockProbe
from migration_gate.core.plan import LEGACY_CHECKPOINT, Checkpoint, Migration, checkpoints
from migration_gate.core.server import DisposableServer


class GateDatabases(Protocol):
    """What a check sees: the disposable checkpoints, or an existing database's one ``current``."""

    disposable: bool

    @property
    def checkpoints(self) -> list[str]: ...

    @property
    def last(self) -> str: ...

    def version_at(self, checkpoint: str) -> int: ...

    def url(self, checkpoint: str) -> str: ...

    def connect(self, checkpoint: str) -> AbstractContextManager[psycopg.Connection]: ...

    def legacy_snapshot(self) -> LegacySnapshot | None: ...


@dataclass
class CheckpointDatabases:
    """The checkpoint databases on one disposable server, and how long building them took."""

    server: DisposableServer
    plan: list[Migration]
    applied: list[runner.AppliedMigration] = field(default_factory=list)
    # Per migration, the pre-existing tables it held ACCESS EXCLUSIVE and for how long.
    locks: dict[str, dict[str, float]] = field(default_factory=dict)
    # Per migration, what it added, altered or dropped (the catalog before and after it).
    changes: dict[str, list[schema.Change]] = field(default_factory=dict)
    seed_seconds: float = 0.0
    prefix: str = "gate"
    _snapshot: LegacySnapshot | None = None

    disposable = True

    def __repr__(self) -> str:
        return f"<gate databases on 127.0.0.1:{self.server.port}: {', '.join(self.checkpoints)}>"

    @property
    def points(self) -> list[Checkpoint]:
        return checkpoints(self.plan)

    @property
    def checkpoints(self) -> list[str]:
        return [point.name for point in self.points]

    @property
    def last(self) -> str:
        """The checkpoint after the plan's last migration: ``after_008`` today."""
        return self.points[-1].name

    def version_at(self, checkpoint: str) -> int:
        """The last migration applied at ``checkpoint``."""
        for point in self.points:
            if point.name == checkpoint:
                return point.version
        raise KeyError(f"unknown checkpoint {checkpoint!r}; known: {', '.join(self.checkpoints)}")

    def database(self, checkpoint: str) -> str:
        self.version_at(checkpoint)  # refuses an unknown name
        return f"{self.prefix}_{checkpoint}"

    def url(self, checkpoint: str) -> str:
        return self.server.url(self.database(checkpoint))

    @contextmanager
    def connect(self, checkpoint: str) -> Iterator[psycopg.Connection]:
        """An autocommit connection to the database as it was at ``checkpoint``."""
        with dsn.connect(self.url(checkpoint)) as conn:
            yield conn

    def clone(self, checkpoint: str, what: str = "copy") -> AbstractContextManager[str]:
        """A private copy of a checkpoint for a ``with`` block (to inject a fault), its URL; dropped on exit."""
        return self.server.temporary_database(
            f"{self.prefix}_{checkpoint}_{what}", template=self.database(checkpoint)
        )

    def build(
        self,
        legacy_seed: Path,
        progress: runner.Progress = lambda line: None,
        corrections: list[Correction] | None = None,
    ) -> CheckpointDatabases:
        """Each checkpoint's database; corrections at their places, as on production.

        The legacy seed is staging's data at 004: a correction placed at 004 or later, or
        at none (before the first pending migration), runs after it, where production
        will meet it; one placed earlier runs before it.
        """
        probe = LockProbe()  # as the bench measures them, on the gate's own database
        changes = schema.ChangeProbe()
        previous = None
        for point in self.points:
            name = self.database(point.name)
            url = self.server.create_database(name, template=previous)
            due = [
                correction
                for correction in corrections or []
                if not point.legacy or (correction.after is not None and correction.after < LEGACY_VERSION)
            ]
            self.applied += runner.migrate(
                url,
                self.plan,
                stop=str(point.version),
                progress=progress,
                hooks=[probe, changes],
                corrections=due,
            )
            if point.name == LEGACY_CHECKPOINT:
                started = time.perf_counter()
                with dsn.connect(url) as conn, conn.transaction():
                    runner.execute_file(conn, legacy_seed)
                self.seed_seconds = time.perf_counter() - started
                progress(f"{legacy_seed.name:<45} {self.seed_seconds:8.3f} s")
            previous = name
        self.locks = probe.by_migration
        self.changes = changes.by_migration
        return self

    def drop(self) -> None:
        """Drop every checkpoint's database: a chain built beside the session's, which its server takes along."""
        for checkpoint in self.checkpoints:
            self.server.drop_database(self.database(checkpoint))

    def legacy_snapshot(self) -> LegacySnapshot | None:
        """The legacy checkpoint's figures: the left side of every conservation equation."""
        if self._snapshot is None:
            with self.connect(LEGACY_CHECKPOINT) as conn:
                self._snapshot = LegacySnapshot.take(conn)
        return self._snapshot
