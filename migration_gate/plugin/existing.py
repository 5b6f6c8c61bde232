"""An existing database (staging, nightly): every session read-only, bounded, never blocking the app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from migration_gate.checks.catalog import LegacySnapshot
from migration_gate.core import dsn, ledger
from migration_gate.core.dsn import read_only_options

# The one checkpoint of an existing database: the state it is in now.
CURRENT = "current"


@dataclass
class ExistingDatabase:
    """The gate's view of a database it did not build: one checkpoint, ``current``, read-only."""

    database_url: str
    statement_timeout: str = "30s"
    disposable = False

    def __repr__(self) -> str:
        return f"<existing database {dsn.describe(self.database_url)}, read-only>"

    @property
    def checkpoints(self) -> list[str]:
        return [CURRENT]

    @property
    def last(self) -> str:
        return CURRENT

    def url(self, checkpoint: str = CURRENT) -> str:
        return self.database_url

    @contextmanager
    def connect(self, checkpoint: str = CURRENT) -> Iterator[psycopg.Connection]:
        with dsn.connect(self.database_url, options=read_only_options(self.statement_timeout)) as conn:
            yield conn

    def version_at(self, checkpoint: str = CURRENT) -> int:
        """The last migration the ledger records as applied (0 when there is no ledger)."""
        with self.connect() as conn:
            return max(ledger.read(conn), default=0)

    def legacy_snapshot(self) -> LegacySnapshot | None:
        """No pre-005 snapshot exists for a database the gate did not build."""
        return None

    def describe(self) -> str:
        """Server, version, database and role for the report header: never the password."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_database(), current_user,"
                " coalesce(host(inet_server_addr()), 'local socket'), coalesce(inet_server_port(), 0)"
            ).fetchone()
        assert row is not None
        version, database, role, host, port = row
        return (
            f"existing database {database} on {host}:{port} (PostgreSQL {version}) as role {role}, read-only"
        )
