"""What "exactly as it was" means, so the playbook can prove it after a rollback or a restore.

A fingerprint holds the schema as ``pg_dump --schema-only`` prints it (ACLs, default
privileges, constraints, indexes, comments), the database's own ACL and settings, every
table's row count with an order-independent digest of its rows, every sequence's
position, and the number of large objects. Two fingerprints are compared entry by entry,
so a mismatch names what differs: a table, a sequence, a line of schema.

The playbook's own record of its runs (``migration_gate.runs``, written outside the
window's transaction) is left out: it is the window's record, not the database's.

Sequences matter on their own: ``nextval`` is not transactional, so a rolled-back
migration that inserted rows leaves its sequences advanced; ``reset_sequences`` puts
them back where they were.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.core import dsn, ledger
from migration_gate.operations import backup, client_tools

Progress = Callable[[str], None]

# Every user table outside the system schemas (pg_toast, pg_temp_N... start with pg_).
_USER_RELATIONS = """
SELECT n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = %s
  AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY 1, 2
"""
# How each row is hashed before the hashes are summed: a multiset digest, independent of
# physical order. hash_record_extended (PostgreSQL 14 and newer) hashes each column with its
# type's own hash, without turning the row into text: a fifth of md5's cost. A table with a
# column type that has no hash (point, json, xml) falls back to hashtextextended of the
# row's text. A backup's record names the digest it was taken with, so a restore is
# verified the same way.
DIGESTS = {
    "hash_record": "hash_record_extended(r, 0)",
    "hashtextextended": "hashtextextended(ROW(r.*)::text, 0)",
    "md5-64": "('x' || left(md5(ROW(r.*)::text), 16))::bit(64)::bigint",
}
FALLBACK = {"hash_record": "hashtextextended"}  # where a row type cannot be hashed as it is
DIGEST = "hash_record"
_TABLE_DIGEST = "SELECT count(*), coalesce(sum({row_hash}::numeric), 0)::text FROM ONLY {{}} AS r"
_DATABASE_SETTINGS = """
SELECT coalesce(d.datacl::text, '(default)') || ' ' || coalesce(
    (SELECT string_agg(coalesce(pg_get_userbyid(s.setrole), '*') || ':' || x, ',' ORDER BY 1)
     FROM pg_db_role_setting s, unnest(s.setconfig) AS x
     WHERE s.setdatabase = d.oid), '')
FROM pg_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class Fingerprint:
    schema: tuple[str, ...] = field(repr=False)
    database_settings: str
    tables: dict[str, tuple[int, str]]
    sequences: dict[str, tuple[int, bool]]
    large_objects: int
    digest: str = DIGEST

    @property
    def schema_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.schema).encode("utf-8")).hexdigest()

    def summary(self) -> dict[str, Any]:
        """The figures a report shows: not the data itself."""
        return {
            "schema_sha256": self.schema_sha256,
            "tables": len(self.tables),
            "rows": sum(rows for rows, _ in self.tables.values()),
            "sequences": len(self.sequences),
            "large_objects": self.large_objects,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": list(self.schema),
            "database_settings": self.database_settings,
            "tables": {name: list(value) for name, value in self.tables.items()},
            "sequences": {name: list(value) for name, value in self.sequences.items()},
            "large_objects": self.large_objects,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            tuple(data["schema"]),
            data["database_settings"],
            {name: (int(v[0]), str(v[1])) for name, v in data["tables"].items()},
            {name: (int(v[0]), bool(v[1])) for name, v in data["sequences"].items()},
            int(data["large_objects"]),
            data.get("digest", "md5-64"),  # the records of backups from before the digest was named
        )


def _qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(name)])


def sequence_states(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """Every sequence's ``(last_value, is_called)``, by qualified name."""
    states = {}
    for schema, name in conn.execute(_USER_RELATIONS, ("S",)).fetchall():
        row = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(_qualified(schema, name))
        ).fetchone()
        assert row is not None
        states[f"{schema}.{name}"] = (int(row[0]), bool(row[1]))
    return states


def reset_sequences(conn: psycopg.Connection, states: dict[str, tuple[int, bool]]) -> list[str]:
    """Put back every sequence that moved since ``states`` was taken; the names of those reset."""
    now = sequence_states(conn)
    moved = sorted(name for name, state in states.items() if name in now and now[name] != state)
    for name in moved:
        last_value, is_called = states[name]
        conn.execute("SELECT setval(%s::regclass, %s, %s)", (name, last_value, is_called))
    return moved


def take(
    url: str,
    tools: client_tools.ClientTools,
    progress: Progress = lambda line: None,
    snapshot: str | None = None,
    digest: str = DIGEST,
) -> Fingerprint:
    """The fingerprint of the database at ``url``: read-only, one consistent snapshot for the data.

    With ``snapshot`` (exported by ``pg_export_snapshot``), that very snapshot: the one a
    backup taken at the same time reads.
    """
    schema = tuple(
        line
        for line in backup.schema_script(url, tools, exclude_tables=[ledger.RUNS_TABLE], snapshot=snapshot)
        if not line.startswith("-- Dumped ")
    )
    with dsn.connect(url, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        settings_row = conn.execute(_DATABASE_SETTINGS).fetchone()
        tables: dict[str, tuple[int, str]] = {}
        for schema_name, table in conn.execute(_USER_RELATIONS, ("r",)).fetchall():
            if f"{schema_name}.{table}" == ledger.RUNS_TABLE:
                continue
            row = _digest(conn, _qualified(schema_name, table), digest)
            tables[f"{schema_name}.{table}"] = (int(row[0]), str(row[1]))
            if row[0] >= 100_000:
                progress(f"  fingerprint: {schema_name}.{table} ({row[0]} rows)")
        sequences = sequence_states(conn)
        large_objects_row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        conn.rollback()
    return Fingerprint(
        schema,
        str(settings_row[0]) if settings_row else "",
        tables,
        sequences,
        int(large_objects_row[0]) if large_objects_row else 0,
        digest,
    )


def _digest(conn: psycopg.Connection, table: sql.Composed, digest: str) -> tuple[int, str]:
    """``(rows, digest)`` of one table; in a savepoint, so that a row type without a hash falls back."""
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL(_TABLE_DIGEST.format(row_hash=DIGESTS[digest])).format(table)
            ).fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.FeatureNotSupported):
        if digest not in FALLBACK:
            raise
        return _digest(conn, table, FALLBACK[digest])
    assert row is not None
    return int(row[0]), str(row[1])


def differences(before: Fingerprint, after: Fingerprint, limit: int = 20) -> list[str]:
    """What differs, one line each (at most ``limit`` lines of schema diff)."""
    found: list[str] = []
    if before.schema != after.schema:
        diff = [
            line
            for line in difflib.unified_diff(before.schema, after.schema, "before", "after", n=0, lineterm="")
            if line[:1] in "+-"
            and not line.startswith(("+++", "---"))
            and line[1:].strip()
            and not line[1:].startswith("--")  # blank and comment lines say nothing
        ]
        found.append(f"schema differs ({len(diff)} line(s) of pg_dump --schema-only):")
        found += [f"  {line}" for line in diff[:limit]]
        if len(diff) > limit:
            found.append(f"  … {len(diff) - limit} more")
    if before.database_settings != after.database_settings:
        found.append(
            f"database ACL/settings differ: {before.database_settings!r} → {after.database_settings!r}"
        )
    for name in sorted(before.tables.keys() | after.tables.keys()):
        old, new = before.tables.get(name), after.tables.get(name)
        if old == new:
            continue
        if old is None:
            found.append(f"table {name} is new ({new[0] if new else 0} rows)")
        elif new is None:
            found.append(f"table {name} is gone (had {old[0]} rows)")
        elif old[0] != new[0]:
            found.append(f"table {name}: {old[0]} rows before, {new[0]} after")
        else:
            found.append(f"table {name}: same {old[0]} rows, different contents")
    for name in sorted(before.sequences.keys() | after.sequences.keys()):
        old_seq, new_seq = before.sequences.get(name), after.sequences.get(name)
        if old_seq != new_seq:
            found.append(f"sequence {name}: {_sequence(old_seq)} before, {_sequence(new_seq)} after")
    if before.large_objects != after.large_objects:
        found.append(f"large objects: {before.large_objects} before, {after.large_objects} after")
    return found


def _sequence(state: tuple[int, bool] | None) -> str:
    if state is None:
        return "absent"
    value, called = state
    return f"at {value}" if called else f"at {value} (not yet called)"
