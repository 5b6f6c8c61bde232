"""What a smoke session created on a deployment, by table and id, and the SQL that removes it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from migration_gate.reference.smoke_tenant import Actors

# What the API answers with when it creates a row: operation path → the table the id is of.
CREATED = (
    ("/credentials", "credentials"),
    ("/webhooks", "webhook_registrations"),
    ("/events", "webhook_events"),
)


@dataclass
class CreatedRows:
    """Every row the session's requests created on a deployment, by table and id (from the API's answers)."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    since: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code not in (201, 202) or response.request.method != "POST":
            return
        path = urlsplit(response.request.url or "").path
        for suffix, table in CREATED:
            if path.endswith(suffix):
                try:
                    self.rows.setdefault(table, []).append(int(response.json()["id"]))
                except (ValueError, KeyError, TypeError):
                    return

    def removal_sql(self, actors: Actors) -> list[str]:
        """SQL that removes them (events go with their registrations), and the activities the writes recorded."""
        statements = [
            f"DELETE FROM public.{table} WHERE id IN ({', '.join(map(str, sorted(ids)))});"
            for table, ids in sorted(
                self.rows.items(), key=lambda item: item[0] == "webhook_events", reverse=True
            )
        ]
        statements.append(
            f"DELETE FROM public.activities WHERE user_id IN ({actors.user_id}, {actors.other_user_id}) "
            f"AND workspace_id IN ({actors.workspace_id}, {actors.other_workspace_id}) AND created_at >= '{self.since}';"
        )
        return statements


# Lines for the terminal summary: what a session did on a deployment's database.
SMOKE_ROWS = pytest.StashKey[list[str]]()


def smoke_rows(config: pytest.Config) -> Callable[[list[str]], None]:
    """Where ``existing_deployment`` reports the rows it created and removed: the terminal summary."""
    return lambda lines: config.stash.setdefault(SMOKE_ROWS, []).extend(lines)
