"""``tenant_workspace_index[<table>]``: an index of a tenant table leads with ``workspace_id``.

Every tenant query filters on the workspace: without an index leading with it, each one
reads the whole table. From the catalog, every tenant table at once: a valid, ready,
non-partial index whose first key column is ``workspace_id`` (a primary key counts).
"""

from __future__ import annotations

import psycopg

from migration_gate.checks.rules.tenancy import Finding, TableRule, TenantTable

UNINDEXED_SQL = """
SELECT c.relname::text,
       coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid)
                                   || CASE WHEN i.indisvalid AND i.indisready AND i.indislive THEN ''
                                           ELSE ' (INVALID)' END, E'\\n' ORDER BY i.indexrelid::regclass::text)
                 FROM pg_index i WHERE i.indrelid = c.oid), '(none)') AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relname::text = ANY (%(tables)s)
  AND NOT EXISTS (SELECT FROM pg_index i
                  WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum AND i.indpred IS NULL
                    AND i.indisvalid AND i.indisready AND i.indislive)
ORDER BY 1
"""


def findings(conn: psycopg.Connection, tables: list[TenantTable]) -> list[Finding]:
    rows = conn.execute(UNINDEXED_SQL, {"tables": [table.name for table in tables]}).fetchall()
    return [
        Finding(
            name,
            f"public.{name} has no valid index leading with workspace_id: every query of a workspace reads "
            "the whole table",
            [
                ("its indexes", indexes),
                (
                    "what to do",
                    f"CREATE INDEX {name}_workspace_id_idx ON public.{name} (workspace_id);\n"
                    "(on a large table already in use: CREATE INDEX CONCURRENTLY, outside a transaction)",
                ),
                (
                    "SQL to run again by hand",
                    UNINDEXED_SQL.replace("%(tables)s", f"ARRAY['{name}']").strip() + ";",
                ),
            ],
        )
        for name, indexes in rows
    ]


RULE = TableRule(
    "tenant_workspace_index",
    "index",
    "no valid, non-partial index of a tenant table leads with workspace_id",
    lambda table: True,
    findings,
)
