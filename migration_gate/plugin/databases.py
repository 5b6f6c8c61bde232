"""The disposable gate database, built once per session and kept at each checkpoint.

The playbook pauses after 006 and after 007 to count what must be zero. Here each pause
is a database of its own, cloned from the one before (``CREATE DATABASE … TEMPLATE``):
``legacy`` (001→004 and the legacy seed, the pre-005 snapshot), ``after_006``,
``after_007`` and ``after_008`` (008 and anything numbered after it). Every check can
then read the database exactly as it was at its checkpoint, in any order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from migration_gate.core import dsn, runner
from migration_gate.core.contract import LEGACY_TABLES
from migration_gate.core.plan import Migration
from migration_gate.core.server import DisposableServer

# checkpoint → the last migration applied there (None: the plan's last)
CHECKPOINTS: dict[str, str | None] = {
    "legacy": "004",
    "after_006": "006",
    "after_007": "007",
    "after_008": None,
}


class GateDatabases(Protocol):
    """What a check sees: the disposable checkpoints, or an existing database's one ``current``."""

    disposable: bool

    @property
    def checkpoints(self) -> list[str]: ...

    def version_at(self, checkpoint: str) -> int: ...

    def url(self, checkpoint: str) -> str: ...

    def connect(self, checkpoint: str) -> AbstractContextManager[psycopg.Connection]: ...

    def legacy_counts(self) -> dict[str, int] | None: ...


def checkpoints_from(version: int, disposable: bool) -> list[str]:
    """The checkpoints where something that holds from migration ``version`` is checked.

    Known at collection time, so checks can be parametrized by it; on an existing database
    it is always ``current`` (the check skips itself when the ledger is not that far yet).
    """
    if not disposable:
        return ["current"]
    return [
        name
        for name, last in CHECKPOINTS.items()
        if name != "legacy" and (last is None or int(last) >= version)
    ]


@dataclass
class CheckpointDatabases:
    """The checkpoint databases on one disposable server, and how long building them took."""

    server: DisposableServer
    plan: list[Migration]
    applied: list[runner.AppliedMigration] = field(default_factory=list)
    seed_seconds: float = 0.0
    prefix: str = "gate"
    _clones: int = 0

    disposable = True

    @property
    def checkpoints(self) -> list[str]:
        return list(CHECKPOINTS)

    def version_at(self, checkpoint: str) -> int:
        """The last migration applied at ``checkpoint``."""
        last = CHECKPOINTS[checkpoint]
        return int(last) if last else self.plan[-1].version

    def database(self, checkpoint: str) -> str:
        if checkpoint not in CHECKPOINTS:
            raise KeyError(f"unknown checkpoint {checkpoint!r}; known: {', '.join(CHECKPOINTS)}")
        return f"{self.prefix}_{checkpoint}"

    def url(self, checkpoint: str) -> str:
        return self.server.url(self.database(checkpoint))

    @contextmanager
    def connect(self, checkpoint: str) -> Iterator[psycopg.Connection]:
        """An autocommit connection to the database as it was at ``checkpoint``."""
        with dsn.connect(self.url(checkpoint)) as conn:
            yield conn

    def clone(self, checkpoint: str, name: str | None = None) -> str:
        """A private copy of a checkpoint (for injecting a fault); the caller drops it."""
        self._clones += 1
        name = name or f"{self.prefix}_{checkpoint}_copy{self._clones}"
        return self.server.create_database(name, template=self.database(checkpoint))

    def build(self, legacy_seed: Path, progress: runner.Progress = lambda line: None) -> CheckpointDatabases:
        previous = None
        for checkpoint, last in CHECKPOINTS.items():
            name = self.database(checkpoint)
            url = self.server.create_database(name, template=previous)
            self.applied += runner.migrate(url, self.plan, stop=last, progress=progress)
            if checkpoint == "legacy":
                started = time.perf_counter()
                with dsn.connect(url) as conn, conn.transaction():
                    runner.execute_file(conn, legacy_seed)
                self.seed_seconds = time.perf_counter() - started
                progress(f"{legacy_seed.name:<45} {self.seed_seconds:8.3f} s")
            previous = name
        return self

    def legacy_counts(self) -> dict[str, int] | None:
        """Rows per legacy table before 005: the left side of every conservation equation."""
        with self.connect("legacy") as conn:
            return {
                table: conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]  # type: ignore[index]
                for table in LEGACY_TABLES
            }
