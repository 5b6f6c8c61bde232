"""The API's connections: a pool of sessions that act as the application's role and nothing more."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from migration_gate.core import dsn
from migration_gate.core.contract import APP_ROLE

APPLICATION_NAME = "migration-gate serve-api"
POOL_TIMEOUT_SECONDS = 10.0  # a request waiting longer for a connection is answered 503


def connect_as_app(url: str) -> psycopg.Connection:
    """A connection that acts as the application's role and nothing more."""
    conn = dsn.connect(url, application_name=APPLICATION_NAME)
    try:
        act_as_app(conn)
    except psycopg.Error:
        conn.close()
        raise
    return conn


def act_as_app(conn: psycopg.Connection) -> None:
    conn.execute(f"SET ROLE {APP_ROLE}")


def still_the_app(conn: psycopg.Connection) -> None:
    """Raise (so that the pool discards the connection) unless it still acts as the application's role."""
    row = conn.execute("SELECT current_user").fetchone()
    if row is None or row[0] != APP_ROLE:
        raise psycopg.ProgrammingError(f"a connection came back acting as {row and row[0]!r}, not {APP_ROLE}")


def app_pool(database_url: str, size: int) -> ConnectionPool:
    """Autocommit connections (a request opens its own transaction), each SET ROLE once, when opened.

    Checked before it is handed out (the server may have closed it) and when it comes back
    (a request that changed the session's role must not pass it on); the pool discards a
    connection that fails either, that comes back closed or inside a transaction it cannot
    roll back.
    """
    return ConnectionPool(
        database_url,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME, "connect_timeout": 10},
        min_size=1,
        max_size=size,
        open=False,
        configure=act_as_app,
        check=ConnectionPool.check_connection,
        reset=still_the_app,
        timeout=POOL_TIMEOUT_SECONDS,
        name="reference-api",
    )
