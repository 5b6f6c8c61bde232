"""``tenant_foreign_key[<table>]``: a tenant table's ``workspace_id`` has a validated key to ``workspaces(id)``.

From the catalog, every tenant table at once: its foreign keys on ``workspace_id`` alone.
One that references ``public.workspaces(id)`` and is validated passes; none, one that
points elsewhere, or one left NOT VALID fails. For each table at fault, its rows naming a
workspace that does not exist: what the missing key let in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import psycopg

from migration_gate.checks.rules.tenancy import Finding, TableRule, TenantTable, rows_finding, rows_where

WORKSPACE_KEYS_SQL = """
SELECT c.relname::text AS table_name, f.conname::text, f.convalidated,
       f.confrelid = to_regclass('public.workspaces')
       AND f.confkey = ARRAY(SELECT w.attnum FROM pg_attribute w
                             WHERE w.attrelid = f.confrelid AND w.attname = 'id') AS to_workspaces,
       format('%%I.%%I(%%s)', rn.nspname, r.relname,
              (SELECT string_agg(quote_ident(ra.attname), ', ' ORDER BY k.ord)
               FROM unnest(f.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute ra ON ra.attrelid = f.confrelid AND ra.attnum = k.attnum)) AS target
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped
JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f' AND f.conkey = ARRAY[a.attnum]
JOIN pg_class r ON r.oid = f.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE n.nspname = 'public' AND c.relname::text = ANY (%(tables)s)
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class WorkspaceKey:
    """A foreign key on workspace_id alone, and what it references."""

    name: str
    validated: bool
    to_workspaces: bool
    target: str  # public.workspaces(id)

    def describe(self) -> str:
        return f"{self.name}: references {self.target}" + ("" if self.validated else " NOT VALID")


def _fault(table: TenantTable, keys: list[WorkspaceKey]) -> tuple[str, str] | None:
    """What is wrong with a table's keys on workspace_id, and the SQL that fixes it; None when nothing is."""
    right = [key for key in keys if key.to_workspaces]
    if any(key.validated for key in right):
        return None
    add = (
        f"ALTER TABLE {table.label} ADD FOREIGN KEY (workspace_id) REFERENCES public.workspaces (id) "
        "ON DELETE CASCADE;"
    )
    if right:
        return (
            "references public.workspaces(id) only NOT VALID: its existing rows were never checked",
            f"ALTER TABLE {table.label} VALIDATE CONSTRAINT {right[0].name};",
        )
    if keys:
        drops = "".join(f"ALTER TABLE {table.label} DROP CONSTRAINT {key.name};\n" for key in keys)
        return f"references {', '.join(key.target for key in keys)}, not public.workspaces(id)", drops + add
    return "has no foreign key", add


def findings(conn: psycopg.Connection, tables: list[TenantTable]) -> list[Finding]:
    keys: dict[str, list[WorkspaceKey]] = defaultdict(list)
    for table_name, name, validated, to_workspaces, target in conn.execute(
        WORKSPACE_KEYS_SQL, {"tables": [table.name for table in tables]}
    ).fetchall():
        keys[table_name].append(WorkspaceKey(name, validated, bool(to_workspaces), target))
    found = []
    for table in tables:
        fault = _fault(table, keys[table.name])
        if fault is None:
            continue
        problem, fix = fault
        rows = rows_where(
            conn,
            table,
            "x.workspace_id IS NOT NULL AND NOT EXISTS (SELECT FROM public.workspaces AS w WHERE w.id = x.workspace_id)",
            "workspace_id",
        )
        orphans = (
            f"{rows.count} row(s) name a workspace that does not exist"
            if rows.count
            else "no row is an orphan yet"
        )
        found.append(
            rows_finding(
                table,
                f"{table.label}.workspace_id {problem}: {orphans}",
                rows,
                ("remove or re-home the orphans, then:\n" if rows.count else "") + fix,
                ("keys on workspace_id", "\n".join(key.describe() for key in keys[table.name]) or "(none)"),
            )
        )
    return found


RULE = TableRule(
    "tenant_foreign_key",
    "integrity",
    "a tenant table's workspace_id has no validated foreign key to workspaces(id) "
    "(its rows naming no existing workspace are shown)",
    lambda table: True,
    findings,
)
