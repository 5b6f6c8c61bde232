"""``tenant_reference_workspace[<table>]``: a row that references another tenant row is in that row's workspace.

The rule of ``webhook_event_workspace_mismatch``, for every foreign key from a tenant table
to a tenant table (itself included), read from the catalog: each row's ``workspace_id``
equals the referenced row's. A key that pairs ``workspace_id`` with ``workspace_id``
already makes PostgreSQL keep them equal and is not read again.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.checks.rules.tenancy import (
    Finding,
    Reference,
    TableRule,
    TenantTable,
    columns,
    ordered,
    rows_at_fault,
)


def judged(table: TenantTable) -> list[Reference]:
    """The references of ``table`` the rule reads: those PostgreSQL does not already keep together."""
    return [reference for reference in table.references if not reference.carries_workspace]


def _query(table: TenantTable, reference: Reference) -> sql.Composable:
    join = sql.SQL(" AND ").join(
        sql.SQL("p.{} = x.{}").format(sql.Identifier(theirs), sql.Identifier(ours))
        for ours, theirs in zip(reference.columns, reference.referenced_columns, strict=True)
    )
    return sql.SQL(
        "SELECT {}, p.workspace_id AS referenced_workspace_id FROM {} AS x JOIN {} AS p ON {}"
        " WHERE x.workspace_id IS DISTINCT FROM p.workspace_id ORDER BY {}"
    ).format(
        columns(table, *reference.columns, "workspace_id"),
        table.identifier,
        sql.Identifier("public", reference.table),
        join,
        ordered(table),
    )


def findings(conn: psycopg.Connection, tables: list[TenantTable]) -> list[Finding]:
    found = []
    for table in tables:
        counts: list[str] = []
        sections: list[tuple[str, str]] = []
        queries: list[str] = []
        total = 0
        for reference in judged(table):
            rows = rows_at_fault(conn, _query(table, reference))
            queries.append(rows.sql + ";")
            if rows.count:
                total += rows.count
                counts.append(f"{rows.count} through {reference.describe()}")
                sections += [
                    (f"{title}, through {reference.constraint}", body) for title, body in rows.sample
                ]
        if total:
            found.append(
                Finding(
                    table.name,
                    f"{total} row(s) of {table.label} are in another workspace than the tenant row they "
                    f"reference: {'; '.join(counts)}",
                    [
                        *sections,
                        (
                            "what to do",
                            "give each row its parent's workspace_id; to have PostgreSQL keep them equal, make the "
                            "key composite: FOREIGN KEY (workspace_id, <column>) REFERENCES <parent> "
                            "(workspace_id, id), with a unique key on the parent's (workspace_id, id)",
                        ),
                        ("SQL to run again by hand", "\n".join(queries)),
                    ],
                    total,
                )
            )
    return found


RULE = TableRule(
    "tenant_reference_workspace",
    "invariant",
    "any row of a tenant table whose workspace_id differs from that of the tenant row it references",
    lambda table: bool(judged(table)),
    findings,
)
