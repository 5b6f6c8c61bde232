"""Tenant tables, as the catalog shows them, and what a rule over them is (docs/contract.md §8).

A **tenant table** is any table of ``public`` with a column ``workspace_id``, other than
``workspaces`` and ``workspace_members`` (membership itself): read from the catalog each
time, never from a list, so a table a 009 adds is one as soon as it exists. Partitions are
judged through their parent, and an extension's tables are the extension's.

A ``TableRule`` is one family of the rules: which tenant tables it judges, and one
set-based reading of what is wrong with them. Where a rule must look at rows (a user who is
not a member, a parent in another workspace), the catalog says which columns and keys to
join, and the query is composed per table, keys first, as an invariant's is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migration_gate.checks.failures import CheckFailed, sample_section
from migration_gate.checks.invariants import count_and_sample
from migration_gate.core.contract import TENANT_SCHEMA

MEMBERSHIP_TABLES = ("workspaces", "workspace_members")
WORKSPACE = "workspace_id"
USER = "user_id"
# A table without a primary key is sampled by its rows' physical address.
NO_KEY = ("ctid",)

TENANT_TABLES_SQL = """
WITH tenant AS (
    SELECT c.oid, c.relname::text AS name
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND c.relname::text <> ALL (%(membership)s)
      AND EXISTS (SELECT FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'workspace_id' AND a.attnum > 0 AND NOT a.attisdropped)
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
)
SELECT t.name,
       ARRAY(SELECT a.attname::text
             FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
             WHERE i.indrelid = t.oid AND i.indisprimary
             ORDER BY k.ord) AS key_columns,
       EXISTS (SELECT FROM pg_attribute a
               WHERE a.attrelid = t.oid AND a.attname = 'user_id' AND a.attnum > 0 AND NOT a.attisdropped)
           AS has_user,
       coalesce((
           SELECT json_agg(json_build_object(
                      'constraint', f.conname,
                      'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                                  FROM unnest(f.conkey) WITH ORDINALITY AS k(attnum, ord)
                                  JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum),
                      'table', r.name,
                      'referenced_columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                                             FROM unnest(f.confkey) WITH ORDINALITY AS k(attnum, ord)
                                             JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.attnum))
                  ORDER BY f.conname)
           FROM pg_constraint f JOIN tenant r ON r.oid = f.confrelid
           WHERE f.conrelid = t.oid AND f.contype = 'f' AND f.conparentid = 0
       ), '[]'::json) AS references_json
FROM tenant t
WHERE %(names)s::text[] IS NULL OR t.name = ANY (%(names)s::text[])
ORDER BY t.name
"""


@dataclass(frozen=True)
class Reference:
    """A foreign key from a tenant table to a tenant table (itself, possibly)."""

    constraint: str
    columns: tuple[str, ...]
    table: str
    referenced_columns: tuple[str, ...]

    @property
    def carries_workspace(self) -> bool:
        """The key pairs workspace_id with workspace_id: PostgreSQL itself keeps the two rows together."""
        return (WORKSPACE, WORKSPACE) in zip(self.columns, self.referenced_columns, strict=True)

    def describe(self) -> str:
        return (
            f"{self.constraint}: ({', '.join(self.columns)}) → "
            f"{TENANT_SCHEMA}.{self.table} ({', '.join(self.referenced_columns)})"
        )


@dataclass(frozen=True)
class TenantTable:
    name: str
    key_columns: tuple[str, ...]  # the primary key's, for the sample's keys
    has_user: bool  # a user_id column: each row with a user is that user's
    references: tuple[Reference, ...] = ()

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(TENANT_SCHEMA, self.name)

    @property
    def label(self) -> str:
        return f"{TENANT_SCHEMA}.{self.name}"

    def keys_and(self, *columns: str) -> list[str]:
        """The key columns, then ``columns`` (each once): what a sample row shows."""
        keys = list(self.key_columns or NO_KEY)
        return keys + [column for column in columns if column not in keys]


def tenant_tables(conn: psycopg.Connection, names: Sequence[str] | None = None) -> list[TenantTable]:
    """Every tenant table of the database (or those of ``names`` that are), by name."""
    rows = conn.execute(
        TENANT_TABLES_SQL,
        {"membership": list(MEMBERSHIP_TABLES), "names": list(names) if names is not None else None},
    ).fetchall()
    tables = []
    for name, keys, has_user, references in rows:
        found = references if isinstance(references, list) else json.loads(references)
        tables.append(
            TenantTable(
                str(name),
                tuple(keys),
                bool(has_user),
                tuple(
                    Reference(
                        ref["constraint"],
                        tuple(ref["columns"]),
                        ref["table"],
                        tuple(ref["referenced_columns"]),
                    )
                    for ref in found
                ),
            )
        )
    return tables


@dataclass(frozen=True)
class Finding:
    """What one rule found wrong with one table: a one-line summary and the sections a person acts on."""

    table: str
    summary: str
    sections: list[tuple[str, str]] = field(default_factory=list)
    count: int | None = None  # the offending rows, when the rule counts rows


@dataclass(frozen=True)
class TableRule:
    """One rule family: the tenant tables it judges, and what it finds wrong with them, all at once."""

    name: str
    kind: str  # the catalog's kind (and pytest marker)
    fails_when: str
    applies: Callable[[TenantTable], bool]
    findings: Callable[[psycopg.Connection, list[TenantTable]], list[Finding]]

    def __repr__(self) -> str:
        return self.name

    def judge(self, conn: psycopg.Connection, tables: Sequence[TenantTable]) -> list[str]:
        """Judge ``tables`` (each one this rule applies to); raise CheckFailed naming each at fault."""
        __tracebackhide__ = True
        found = self.findings(conn, list(tables))
        if not found:
            return [table.name for table in tables]
        if len(found) == 1:
            one = found[0]
            raise CheckFailed(f"{self.name}[{one.table}]", one.summary, one.sections, count=one.count)
        sections = [
            (f"{finding.table}: {title}", body) for finding in found for title, body in finding.sections
        ]
        summaries = [(f"{self.name}[{finding.table}]", finding.summary) for finding in found]
        raise CheckFailed(
            self.name,
            f"{len(found)} tenant table(s) at fault: {', '.join(name for name, _ in summaries)}",
            [("at fault", "\n".join(f"{name}: {summary}" for name, summary in summaries)), *sections],
        )


@dataclass(frozen=True)
class RowsAtFault:
    """The rows of a table a rule finds at fault: how many, a sample's section, and the SQL that finds them."""

    count: int
    sample: list[tuple[str, str]]  # the section of the failure, when there are rows
    sql: str


def rows_at_fault(conn: psycopg.Connection, query: sql.Composable) -> RowsAtFault:
    """Count and sample the rows ``query`` selects."""
    text = query.as_string(conn)
    count, names, sample = count_and_sample(conn, text)
    return RowsAtFault(count, [sample_section(count, names, sample)] if count else [], text)


def rows_finding(
    table: TenantTable, summary: str, rows: RowsAtFault, what_to_do: str, *context: tuple[str, str]
) -> Finding:
    """What a rule found in ``table``: the rows at fault, ``context``, what to do, the SQL that finds them."""
    return Finding(
        table.name,
        summary,
        [*rows.sample, *context, ("what to do", what_to_do), ("SQL to run again by hand", rows.sql + ";")],
        rows.count,
    )


def columns(table: TenantTable, *names: str) -> sql.Composable:
    """``x.<key>, ..., x.<name>, ...``: what a sample row of ``table`` (as ``x``) shows."""
    return sql.SQL(", ").join(sql.Identifier("x", name) for name in table.keys_and(*names))


def ordered(table: TenantTable) -> sql.Composable:
    """``x.<key>, ...``: the sample's order, by key."""
    return sql.SQL(", ").join(sql.Identifier("x", name) for name in table.key_columns or NO_KEY)


def rows_where(conn: psycopg.Connection, table: TenantTable, condition: str, *shown: str) -> RowsAtFault:
    """The rows of ``table`` (as ``x``) where ``condition`` holds, shown by key and ``shown`` columns."""
    return rows_at_fault(
        conn,
        sql.SQL("SELECT {} FROM {} AS x WHERE {} ORDER BY {}").format(
            columns(table, *shown),
            table.identifier,
            sql.SQL(condition),
            ordered(table),
        ),
    )
