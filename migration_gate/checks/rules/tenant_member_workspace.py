"""``tenant_member_workspace[<table>]``: each row of a tenant table with a user is in a workspace that user is a member of.

The rule of ``credentials_outside_member_workspace`` and its two siblings, for every tenant
table with a ``user_id`` (whether or not a key makes it reference ``users``: a user's id
without a key is still a user's). A row placed in a workspace its user does not belong to
is a cross-tenant leak: another tenant's members see it, and its user does not.
"""

from __future__ import annotations

import psycopg

from migration_gate.checks.rules.tenancy import Finding, TableRule, TenantTable, rows_finding, rows_where


def findings(conn: psycopg.Connection, tables: list[TenantTable]) -> list[Finding]:
    found = []
    for table in tables:
        rows = rows_where(
            conn,
            table,
            "x.user_id IS NOT NULL AND NOT EXISTS (SELECT FROM public.workspace_members AS m"
            " WHERE m.workspace_id = x.workspace_id AND m.user_id = x.user_id)",
            "user_id",
            "workspace_id",
        )
        if rows.count:
            found.append(
                rows_finding(
                    table,
                    f"{rows.count} row(s) of {table.label} sit in a workspace their user is not a member of "
                    "(a cross-tenant leak)",
                    rows,
                    "place each row in a workspace its user is a member of (the user's "
                    "default_workspace_id, as 007 does for credentials), or give the user that membership",
                )
            )
    return found


RULE = TableRule(
    "tenant_member_workspace",
    "invariant",
    "any row of a tenant table with a user_id whose user is not a member of the row's workspace",
    lambda table: table.has_user,
    findings,
)
