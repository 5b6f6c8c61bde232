"""Helpers for tests that judge a whole database: a dump to compare, and a role whose password is checked."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from migration_gate.core import dsn
from migration_gate.core.ledger import RUNS_TABLE
from migration_gate.core.server import DisposableServer
from migration_gate.operations.backup import script_lines

# (make_url(role, url) -> a URL that cannot be used, what the one error line says): the
# connection problems every command that takes a database URL must turn into exit 2.
CONNECTION_PROBLEMS = [
    pytest.param(
        lambda role, url: f"postgresql://{role.name}:{role.password}@127.0.0.1:1/staging",
        "cannot connect",
        id="unreachable-server",
    ),
    pytest.param(
        lambda role, url: role.url(url).replace(role.password, "Wr0ng-S3cret-Guess"),
        "password authentication failed",
        id="wrong-password",
    ),
    pytest.param(
        lambda role, url: role.url(url).rsplit("/", 1)[0] + "/no_such_database",
        "does not exist",
        id="missing-database",
    ),
]


def full_dump(server: DisposableServer, url: str) -> list[str]:
    """``pg_dump`` of schema AND data, as text lines (the per-run \\restrict key removed).

    Without the playbook's record of its runs (``migration_gate.runs``): written outside the
    window, on purpose, so that a run killed outright is known to the next one.
    """
    done = subprocess.run(
        [server.binary("pg_dump"), "--no-password", f"--exclude-table={RUNS_TABLE}", f"--dbname={url}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return script_lines(done.stdout)


@dataclass(frozen=True)
class PasswordRole:
    name: str
    password: str

    def url(self, base_url: str) -> str:
        """``base_url`` (the disposable server's, as postgres) as this role, password included."""
        parts = dsn.parse(base_url)
        return f"postgresql://{self.name}:{self.password}@{parts['host']}:{parts['port']}/{parts['dbname']}"


@contextmanager
def password_role(
    server: DisposableServer, *attributes: str, grants: tuple[str, ...] = ()
) -> Iterator[PasswordRole]:
    """A login role whose password the server really checks (the disposable server trusts everyone else).

    A ``pg_hba.conf`` line asks this role, and only it, for its scram-sha-256 password.
    """
    role = PasswordRole(f"pw_{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex[:12]}-S3cret")
    hba = server.base / "data" / "pg_hba.conf"
    original = hba.read_text()
    with server.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + " ".join(attributes)).format(
                sql.Identifier(role.name), sql.Literal(role.password)
            )
        )
        for grant in grants:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(grant), sql.Identifier(role.name)))
    hba.write_text(f"host all {role.name} 127.0.0.1/32 scram-sha-256\n" + original)
    _reload_until_checked(server, role)
    try:
        yield role
    finally:
        hba.write_text(original)
        with server.admin() as conn:
            conn.execute("SELECT pg_reload_conf()")
            for database in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall():
                with dsn.connect(server.url(database[0])) as each:
                    each.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role.name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role.name)))


def _reload_until_checked(server: DisposableServer, role: PasswordRole) -> None:
    """Reload the configuration, then wait (bounded) until a wrong password is really refused."""
    with server.admin() as conn:
        conn.execute("SELECT pg_reload_conf()")
    wrong = PasswordRole(role.name, "wrong-password").url(server.url())
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(wrong, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return
        if time.monotonic() > deadline:
            raise AssertionError("the server never started checking the test role's password")
        time.sleep(0.05)
