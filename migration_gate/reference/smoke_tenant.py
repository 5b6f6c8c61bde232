"""The smoke tests' own tenant: two users and their workspaces, made for one run and removed after it.

The smoke step writes through the API, so it must write somewhere: never into a
customer's workspace. It acts as two users created for the run (``migration-gate smoke
<run id>``), each owning one workspace with an ``owner`` membership, like any other user
after 006. At the end, passed or failed, everything of that tenant goes in one
transaction: its activities, events, registrations, credentials, memberships, workspaces
and users, each counted. The ids the run consumed stay consumed: sequences only move
forward.

``Census`` is how the playbook proves it: the rows of every business table, counted, and
the transaction id the smoke step started from. Afterwards each table must hold as many
rows as before, and none written since (a row inserted or updated after the census has a
newer ``xmin``): exactly the rows it held.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.core import dsn
from migration_gate.core.contract import ARCHIVE_SCHEMA

# What the tenant may have rows in, in the order they are removed: children first, and the
# users before their workspaces (a user's default workspace cannot go while the user stays).
TENANT_ROWS = {
    "activities": "user_id = ANY(%(users)s) OR workspace_id = ANY(%(workspaces)s)",
    "webhook_events": "workspace_id = ANY(%(workspaces)s) OR registration_id IN (SELECT id FROM public.webhook_registrations"
    " WHERE user_id = ANY(%(users)s) OR workspace_id = ANY(%(workspaces)s))",
    "webhook_registrations": "user_id = ANY(%(users)s) OR workspace_id = ANY(%(workspaces)s)",
    "credentials": "user_id = ANY(%(users)s) OR workspace_id = ANY(%(workspaces)s)",
    "workspace_members": "user_id = ANY(%(users)s) OR workspace_id = ANY(%(workspaces)s)",
    "users": "id = ANY(%(users)s)",
    "workspaces": "owner_id = ANY(%(users)s) OR id = ANY(%(workspaces)s)",
}


@dataclass(frozen=True)
class Actors:
    """Two users, each a member of their own workspace and not of the other's."""

    user_id: int
    workspace_id: int
    other_user_id: int
    other_workspace_id: int

    def __str__(self) -> str:
        return f"{self.user_id}:{self.workspace_id},{self.other_user_id}:{self.other_workspace_id}"

    @property
    def users(self) -> list[int]:
        return [self.user_id, self.other_user_id]

    @property
    def workspaces(self) -> list[int]:
        return [self.workspace_id, self.other_workspace_id]


def create_actors(conn: psycopg.Connection, run_id: str) -> Actors:
    """Two fresh users named for the run, each owning a workspace where they are the owner member."""
    ids: list[int] = []
    with conn.transaction():
        for label in ("smoke", "smoke-other"):
            user_id = conn.execute(
                "INSERT INTO public.users (email, name) VALUES (%s, %s) RETURNING id",
                (f"{label}-{run_id}@migration-gate.invalid", f"migration-gate {label} {run_id}"),
            ).fetchone()[0]  # type: ignore[index]
            workspace_id = conn.execute(
                "INSERT INTO public.workspaces (owner_id, name) VALUES (%s, %s) RETURNING id",
                (user_id, f"migration-gate {label} {run_id}"),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO public.workspace_members (workspace_id, user_id, profile_id)"
                " SELECT %s, %s, id FROM public.profiles WHERE code = 'owner'",
                (workspace_id, user_id),
            )
            conn.execute(
                "UPDATE public.users SET default_workspace_id = %s WHERE id = %s", (workspace_id, user_id)
            )
            ids += [user_id, workspace_id]
    return Actors(*ids)


def tenant_rows(conn: psycopg.Connection, actors: Actors) -> dict[str, int]:
    """How many rows of each table belong to the tenant (its users' or its workspaces')."""
    params = {"users": actors.users, "workspaces": actors.workspaces}
    counts = {}
    for table, where in TENANT_ROWS.items():
        row = conn.execute(f"SELECT count(*) FROM public.{table} WHERE {where}", params).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def remove_tenant(conn: psycopg.Connection, actors: Actors) -> dict[str, int]:
    """Remove everything of the tenant in one transaction; the rows removed, per table.

    Counted before and after, since deleting the users also removes their workspaces
    through ``owner_id``'s ON DELETE CASCADE.
    """
    params = {"users": actors.users, "workspaces": actors.workspaces}
    with conn.transaction():
        before = tenant_rows(conn, actors)
        for table, where in TENANT_ROWS.items():
            conn.execute(f"DELETE FROM public.{table} WHERE {where}", params)
        after = tenant_rows(conn, actors)
    return {table: before[table] - after[table] for table in TENANT_ROWS}


@dataclass(frozen=True)
class Census:
    """Every business table's row count, and the transaction id from which a write would be new."""

    counts: dict[str, int]
    xid: str  # a 32-bit xid, comparable with xmin through age()

    @classmethod
    def in_background(cls, url: str) -> Callable[[], Census]:
        """The census as of now, counted while the caller goes on; call the result for it.

        A REPEATABLE READ transaction fixes its snapshot (and the xid) before this returns,
        so writes made after the call are not counted however long the counting takes: at a
        million rows the counts cost a quarter of a second, which the window need not wait for.
        """
        conn = dsn.connect(url, autocommit=False)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        outcome: dict[str, Any] = {}
        try:
            row = conn.execute("SELECT mod(pg_current_xact_id()::text::bigint, 4294967296)::text").fetchone()
            assert row is not None
        except BaseException:
            conn.close()
            raise
        xid = str(row[0])

        def count() -> None:
            try:
                outcome["census"] = cls({table: _count(conn, table) for table in _existing(conn)}, xid)
            except BaseException as exc:  # handed to whoever asks for the census
                outcome["error"] = exc
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                conn.close()

        thread = threading.Thread(target=count, name="smoke-census", daemon=True)
        thread.start()

        def result() -> Census:
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            census: Census = outcome["census"]
            return census

        return result

    def differences(self, conn: psycopg.Connection) -> list[str]:
        """What is not as it was: a table with more or fewer rows, or rows written since the census."""
        found = []
        for table in sorted(set(self.counts) | set(_existing(conn))):
            row = conn.execute(
                sql.SQL("SELECT count(*), count(*) FILTER (WHERE age(xmin) <= age(%s::xid)) FROM {}").format(
                    sql.SQL(".").join(sql.Identifier(part) for part in table.split("."))
                ),
                (self.xid,),
            ).fetchone()
            assert row is not None
            count, written = int(row[0]), int(row[1])
            before = self.counts.get(table)
            if before is None:
                found.append(f"{table} is new ({count} rows)")
            elif count != before:
                found.append(f"{table}: {before} rows before the smoke step, {count} after")
            if written:
                found.append(f"{table}: {written} row(s) inserted or updated since the smoke step began")
        return found


def _existing(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') ORDER BY 1",
        (["public", ARCHIVE_SCHEMA],),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(
            sql.SQL(".").join(sql.Identifier(p) for p in table.split("."))
        )
    ).fetchone()
    return int(row[0]) if row else 0
