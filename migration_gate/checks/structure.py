"""The schema the migrations must leave: NOT NULLs, nothing invalid, payload gone, the archive, no row lost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from migration_gate.checks.failures import CheckFailed, format_rows
from migration_gate.core.contract import ARCHIVE_SCHEMA, ARCHIVE_TABLES
from migration_gate.core.schema import GATE_SCHEMA, OWN_SCHEMAS


@dataclass(frozen=True)
class RequiredColumn:
    """A column the contract makes NOT NULL, and the migration that does it."""

    table: str
    column: str
    from_version: int

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}"


NOT_NULL_COLUMNS = (
    RequiredColumn("credentials", "workspace_id", 7),
    RequiredColumn("webhook_registrations", "workspace_id", 8),
    RequiredColumn("webhook_events", "workspace_id", 8),
    RequiredColumn("activities", "workspace_id", 8),
)


@dataclass(frozen=True)
class RequiredForeignKey(RequiredColumn):
    """A column the contract says references ``workspaces(id)``, and the migration that adds the key."""

    references: str = "workspaces"


# docs/contract.md §4.4: the workspace-scoped tables (005) and the users' default (006).
REQUIRED_FOREIGN_KEYS = (
    RequiredForeignKey("credentials", "workspace_id", 5),
    RequiredForeignKey("webhook_registrations", "workspace_id", 5),
    RequiredForeignKey("webhook_events", "workspace_id", 5),
    RequiredForeignKey("activities", "workspace_id", 5),
    RequiredForeignKey("users", "default_workspace_id", 6),
)

FOREIGN_KEYS_SQL = """
SELECT c.conname AS constraint_name,
       (SELECT format('%%I.%%I', n.nspname, r.relname) FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE r.oid = c.confrelid) AS references_table,
       (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
        FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) AS references_columns,
       c.convalidated AS validated, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attname = %(column)s
WHERE c.contype = 'f' AND c.conrelid = to_regclass(%(table)s) AND c.conkey = ARRAY[a.attnum]
ORDER BY c.conname
""".strip()

ARCHIVE_FROM_VERSION = 8
PAYLOAD_GONE_FROM_VERSION = 8

# Legacy tables 006 adds rows to (personal workspaces, owner memberships): their count may grow.
GROWING_TABLES = frozenset({"workspaces", "workspace_members"})


def check_not_null(conn: psycopg.Connection, required: RequiredColumn) -> bool:
    """``table.column`` exists and PostgreSQL itself refuses a NULL there (``attnotnull``)."""
    __tracebackhide__ = True
    row = conn.execute(
        "SELECT a.attnotnull FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
        (f"public.{required.table}", required.column),
    ).fetchone()
    if row is None or not row[0]:
        state = "does not exist" if row is None else "is nullable"
        raise CheckFailed(
            f"{required.label} NOT NULL",
            f"public.{required.label} {state}; from {required.from_version:03d} it must be NOT NULL",
            [
                (
                    "SQL to run again by hand",
                    "SELECT attname, attnotnull FROM pg_attribute\n"
                    f"WHERE attrelid = 'public.{required.table}'::regclass AND attname = '{required.column}';",
                )
            ],
        )
    return bool(row[0])


# Every schema of the database but the system's, an extension's and the gate's own (docs/contract.md §8).
_OWN = OWN_SCHEMAS.replace("%(exclude)s", f"ARRAY['{GATE_SCHEMA}']").replace("%%", "%").strip()

INVALID_INDEXES_SQL = f"""
WITH own AS ({_OWN})
SELECT n.nspname AS schema, c.relname AS index, t.relname AS table,
       i.indisvalid AS valid, i.indisready AS ready, i.indislive AS live
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN own n ON n.oid = c.relnamespace
WHERE NOT (i.indisvalid AND i.indisready AND i.indislive)
ORDER BY 1, 2
""".strip()

NOT_VALID_CONSTRAINTS_SQL = f"""
WITH own AS ({_OWN})
SELECT n.nspname AS schema, coalesce(t.relname, '(domain)') AS table, c.conname AS constraint,
       c.contype AS type, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
JOIN own n ON n.oid = c.connamespace
LEFT JOIN pg_class t ON t.oid = c.conrelid
WHERE NOT c.convalidated
ORDER BY 1, 2, 3
""".strip()


def _rows_failure(check: str, summary: str, conn: psycopg.Connection, sql: str) -> list[tuple[object, ...]]:
    __tracebackhide__ = True
    with conn.cursor() as cur:
        rows = cur.execute(sql).fetchall()
        columns = [column.name for column in cur.description or ()]
    if rows:
        raise CheckFailed(
            check,
            f"{len(rows)} {summary}",
            [
                ("count", str(len(rows))),
                ("offending", format_rows(columns, rows)),
                ("SQL to run again by hand", sql + ";"),
            ],
        )
    return rows


def check_no_invalid_indexes(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """No index in the database's own schemas is invalid or unready (a failed CREATE INDEX CONCURRENTLY leaves one)."""
    __tracebackhide__ = True
    return _rows_failure(
        "invalid indexes", "index(es) invalid or not ready (must be 0)", conn, INVALID_INDEXES_SQL
    )


def check_no_invalid_constraints(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """No constraint in the database's own schemas is left NOT VALID: every row was checked."""
    __tracebackhide__ = True
    return _rows_failure(
        "NOT VALID constraints", "constraint(s) NOT VALID (must be 0)", conn, NOT_VALID_CONSTRAINTS_SQL
    )


def _columns(conn: psycopg.Connection, schema: str, table: str) -> list[str] | None:
    """The table's columns in order, or None when it does not exist."""
    exists = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if exists is None:
        return None
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return [row[0] for row in rows]


def check_payload_gone(conn: psycopg.Connection) -> list[str]:
    """008 dropped ``activities.payload`` (its values live in legacy_archive); the columns left."""
    __tracebackhide__ = True
    columns = _columns(conn, "public", "activities") or []
    if "payload" in columns:
        raise CheckFailed(
            "activities.payload",
            "public.activities still has a payload column; 008 moves payloads to legacy_archive and drops it",
            [
                ("columns of public.activities", ", ".join(columns)),
                (
                    "SQL to run again by hand",
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'public.activities'::regclass\n"
                    "  AND attnum > 0 AND NOT attisdropped;",
                ),
            ],
        )
    return columns


def check_archive_present(conn: psycopg.Connection) -> dict[str, list[str]]:
    """legacy_archive exists with each table 008 fills, each with its pre-005 columns and archived_at."""
    __tracebackhide__ = True
    schema = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (ARCHIVE_SCHEMA,)).fetchone()
    problems = [] if schema else [f"schema {ARCHIVE_SCHEMA} does not exist"]
    found: dict[str, list[str]] = {}
    if schema:
        for table, expected in ARCHIVE_TABLES.items():
            columns = _columns(conn, ARCHIVE_SCHEMA, table)
            if columns is None:
                problems.append(f"{ARCHIVE_SCHEMA}.{table} does not exist")
                continue
            found[table] = columns
            missing = [name for name in expected if name not in columns]
            if missing:
                problems.append(f"{ARCHIVE_SCHEMA}.{table} lacks column(s) {', '.join(missing)}")
    if problems:
        raise CheckFailed(
            ARCHIVE_SCHEMA,
            f"{len(problems)} problem(s) with what 008 keeps",
            [
                ("problems", "\n".join(problems)),
                (
                    "expected",
                    "\n".join(f"{ARCHIVE_SCHEMA}.{t} ({', '.join(c)})" for t, c in ARCHIVE_TABLES.items()),
                ),
                (
                    "SQL to run again by hand",
                    "SELECT table_name, string_agg(column_name, ', ' ORDER BY ordinal_position)\n"
                    f"FROM information_schema.columns WHERE table_schema = '{ARCHIVE_SCHEMA}' GROUP BY 1;",
                ),
            ],
        )
    return found


def _count(conn: psycopg.Connection, schema: str, table: str) -> int:
    if _columns(conn, schema, table) is None:
        return 0
    row = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Conservation:
    """One legacy table: rows before 005 against rows now in public and in legacy_archive."""

    table: str
    before: int
    public: int
    archived: int
    archive_table: bool = False  # legacy_archive has a table of this name

    @property
    def holds(self) -> bool:
        if self.table in GROWING_TABLES:
            # 006 adds personal workspaces and owner memberships; none may be archived or lost.
            return self.archived == 0 and self.public >= self.before
        return self.before == self.public + self.archived

    def line(self) -> str:
        relation = ">=" if self.table in GROWING_TABLES else "="
        return (
            f"{self.table}: before 005 {self.before}; public {self.public} + legacy_archive {self.archived} "
            f"= {self.public + self.archived} (must be {relation} {self.before})"
        )


def conservation(conn: psycopg.Connection, table: str, before: int) -> Conservation:
    return Conservation(
        table,
        before,
        _count(conn, "public", table),
        _count(conn, ARCHIVE_SCHEMA, table),
        _columns(conn, ARCHIVE_SCHEMA, table) is not None,
    )


def check_conservation(
    conn: psycopg.Connection, table: str, legacy_counts: Mapping[str, int]
) -> Conservation:
    """Rows before 005 = rows in public + rows in legacy_archive (never fewer, for the tables 006 grows)."""
    __tracebackhide__ = True
    result = conservation(conn, table, legacy_counts[table])
    if not result.holds:
        lost = result.before - result.public - result.archived
        raise CheckFailed(
            f"conservation of {table}",
            f"{lost} row(s) lost" if lost > 0 else f"{-lost} row(s) more than before 005",
            [
                ("counts", result.line()),
                (
                    "SQL to run again by hand",
                    f"SELECT (SELECT count(*) FROM public.{table}) AS public"
                    + (
                        f",\n       (SELECT count(*) FROM {ARCHIVE_SCHEMA}.{table}) AS archived"
                        if result.archive_table
                        else ""
                    )
                    + f";\n-- before 005 (the legacy checkpoint): {result.before}",
                ),
            ],
        )
    return result


LEGACY_PAYLOADS_SQL = "SELECT count(*) FROM public.activities WHERE payload IS NOT NULL"
KEPT_PAYLOADS_SQL = (
    "SELECT (SELECT count(*) FROM legacy_archive.activity_payloads)\n"
    "     + (SELECT count(*) FROM legacy_archive.activities WHERE payload IS NOT NULL)"
)


def legacy_payload_count(conn: psycopg.Connection) -> int:
    """Non-NULL payloads of activities at 004 (run on the pre-005 snapshot)."""
    row = conn.execute(LEGACY_PAYLOADS_SQL).fetchone()
    return int(row[0]) if row else 0


def check_payloads_conserved(conn: psycopg.Connection, before: int) -> int:
    """Every non-NULL legacy payload is in activity_payloads (kept activity) or archive.activities."""
    __tracebackhide__ = True
    row = conn.execute(KEPT_PAYLOADS_SQL).fetchone()
    kept = int(row[0]) if row else 0
    if kept != before:
        raise CheckFailed(
            "conservation of activity payloads",
            f"{before} non-NULL payloads before 005, {kept} found in {ARCHIVE_SCHEMA}",
            [
                (
                    "SQL to run again by hand",
                    KEPT_PAYLOADS_SQL + ";\n-- before 005: " + LEGACY_PAYLOADS_SQL + ";",
                )
            ],
        )
    return kept


def check_foreign_key(conn: psycopg.Connection, required: RequiredForeignKey) -> list[tuple[object, ...]]:
    """``table.column`` has a validated foreign key to ``workspaces(id)``: missing, NOT VALID or elsewhere fails."""
    __tracebackhide__ = True
    params = {"table": f"public.{required.table}", "column": required.column}
    with conn.cursor() as cur:
        rows = cur.execute(FOREIGN_KEYS_SQL, params).fetchall()
        columns = [column.name for column in cur.description or ()]
    target = f"public.{required.references}(id)"
    right = [row for row in rows if f"{row[1]}({row[2]})" == target]
    if right and all(row[3] for row in right):
        return right
    if not rows:
        problem = "has no foreign key"
    elif not right:
        problem = "references " + ", ".join(f"{row[1]}({row[2]})" for row in rows) + f", not {target}"
    else:
        problem = f"references {target} only NOT VALID: its existing rows were never checked"
    rerun = (
        FOREIGN_KEYS_SQL.replace("%(table)s", f"'public.{required.table}'")
        .replace("%(column)s", f"'{required.column}'")
        .replace("%%", "%")
    )
    raise CheckFailed(
        f"foreign_key[{required.label}]",
        f"public.{required.label} {problem}; from {required.from_version:03d} it must reference {target}, validated",
        [
            ("foreign keys on the column", format_rows(columns, rows) if rows else "(none)"),
            ("SQL to run again by hand", rerun + ";"),
        ],
    )
