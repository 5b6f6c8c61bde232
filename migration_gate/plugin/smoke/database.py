"""Where the smoke tests verify rows, and a fingerprint of what a workspace holds (a refused request wrote nothing)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class SmokeDatabase:
    """Where the smoke tests verify rows: the clone (writable, superuser) or --database-url (read-only)."""

    connect: Callable[[], AbstractContextManager[psycopg.Connection]]
    writable: bool
    label: str


# What each workspace-scoped table is compared on; an event's delivery state is left
# out, since the worker may legitimately move it between two looks.
FINGERPRINTS = {
    "credentials": "id, user_id, workspace_id, name, provider, secret, updated_at",
    "webhook_registrations": "id, user_id, workspace_id, target_url, event_types, secret, active",
    "webhook_events": "id, registration_id, workspace_id, event_type, body",
    "activities": "id, user_id, workspace_id, action",
    "workspace_members": "workspace_id, user_id, profile_id",
}


_FINGERPRINT = " UNION ALL ".join(
    f"(SELECT '{table}', count(*), coalesce(md5(string_agg(({columns})::text, ',' "
    f"ORDER BY ({columns})::text)), '') FROM public.{table} WHERE workspace_id = ANY(%(workspaces)s))"
    for table, columns in FINGERPRINTS.items()
)


def fingerprint(conn: psycopg.Connection, workspace_ids: tuple[int, ...]) -> dict[str, tuple[int, str]]:
    """Per table: the rows of these workspaces, counted and hashed (inserts, updates, deletes all show).

    One statement, one snapshot: every table is seen at the same moment.
    """
    rows = conn.execute(_FINGERPRINT, {"workspaces": list(workspace_ids)}).fetchall()
    return {str(table): (int(count), str(digest)) for table, count, digest in rows}
