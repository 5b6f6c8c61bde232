"""Which database a URL reaches: its name and OID, its cluster's system identifier, host, port, version.

Enough to refuse restoring a backup into any other database, and to tell the database a
history is kept in from the database under test; never a password (it is not asked for).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which database this is: enough to refuse restoring a backup into any other one."""

    database: str
    database_oid: int
    system_identifier: str | None
    host: str
    port: int
    server_version: str
    server_major: int
    role: str

    def same_database_as(self, other: DatabaseIdentity) -> bool:
        # The cluster's system identifier is fixed at initdb; the database OID at CREATE DATABASE.
        return (
            self.database == other.database
            and self.database_oid == other.database_oid
            and self.system_identifier == other.system_identifier
        )

    def describe(self) -> str:
        system = f", system {self.system_identifier}" if self.system_identifier else ""
        return (
            f"database {self.database} on {self.host}:{self.port} "
            f"(PostgreSQL {self.server_version}{system}) as role {self.role}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseIdentity:
        return cls(**data)


def identify(conn: psycopg.Connection) -> DatabaseIdentity:
    row = conn.execute(
        "SELECT current_database(), d.oid::bigint, current_setting('server_version'),"
        " current_setting('server_version_num')::int / 10000, current_user,"
        " coalesce(host(inet_server_addr()), 'local socket'),"
        " coalesce(inet_server_port(), current_setting('port')::int)"
        " FROM pg_database d WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    database, oid, version, major, role, host, port = row
    system_identifier: str | None
    try:
        with conn.transaction():
            found = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        system_identifier = found[0] if found else None
    except psycopg.Error:  # revoked on some managed services; the OID and name still identify it
        system_identifier = None
    return DatabaseIdentity(
        database, int(oid), system_identifier, host, int(port), version.split()[0], major, role
    )
