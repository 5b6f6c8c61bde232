"""``tenant_workspace_not_null[<table>]``: a tenant table's ``workspace_id`` is NOT NULL (docs/contract.md §8).

From the catalog, every tenant table at once: ``attnotnull``, and (PostgreSQL 18) no NOT
VALID not-null constraint standing in for it. For each table at fault, its rows with no
workspace: what the migration's backfill left behind, which PostgreSQL would refuse.
"""

from __future__ import annotations

import psycopg

from migration_gate.checks.rules.tenancy import Finding, TableRule, TenantTable, rows_finding, rows_where

NULLABLE_SQL = """
SELECT c.relname::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relname::text = ANY (%(tables)s)
  AND NOT (a.attnotnull AND NOT EXISTS (
      SELECT FROM pg_constraint k
      WHERE k.conrelid = c.oid AND k.contype = 'n' AND k.conkey = ARRAY[a.attnum] AND NOT k.convalidated))
ORDER BY 1
"""


def findings(conn: psycopg.Connection, tables: list[TenantTable]) -> list[Finding]:
    by_name = {table.name: table for table in tables}
    nullable = [row[0] for row in conn.execute(NULLABLE_SQL, {"tables": list(by_name)}).fetchall()]
    found = []
    for name in nullable:
        table = by_name[name]
        rows = rows_where(conn, table, "x.workspace_id IS NULL", "workspace_id")
        found_rows = (
            f"{rows.count} row(s) have no workspace"
            if rows.count
            else "no row is NULL yet, but nothing stops one"
        )
        found.append(
            rows_finding(
                table,
                f"{table.label}.workspace_id is nullable: {found_rows}",
                rows,
                f"give every row its workspace, then:\n"
                f"ALTER TABLE {table.label} ALTER COLUMN workspace_id SET NOT NULL;",
            )
        )
    return found


RULE = TableRule(
    "tenant_workspace_not_null",
    "structure",
    "a tenant table's workspace_id is nullable (its rows without a workspace are shown)",
    lambda table: True,
    findings,
)
