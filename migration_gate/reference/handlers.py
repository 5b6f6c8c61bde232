"""The contract's operations, each inside the request's transaction, as ``fluxolab_devmode``; and their routes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from migration_gate.reference.validation import (
    ApiError,
    Reply,
    bad_request,
    fields,
    http_url,
    json_object,
    not_found,
    parse_id,
    parse_limit,
    text,
    text_list,
)

# What a credential and a webhook registration look like in a reply: never their secret.
CREDENTIAL = ("id", "workspace_id", "name", "provider")
WEBHOOK = ("id", "workspace_id", "target_url", "event_types", "active")


@dataclass(frozen=True)
class Call:
    """One authenticated, authorized request: who acts, in which workspace, on what."""

    conn: psycopg.Connection
    user_id: int
    workspace_id: int
    path: dict[str, str]
    query: str
    body: dict[str, Any] | None
    fired: list[int] = field(default_factory=list)  # events to hand the worker after commit

    def record(self, action: str) -> None:
        self.conn.execute(
            "INSERT INTO activities (user_id, workspace_id, action) VALUES (%s, %s, %s)",
            (self.user_id, self.workspace_id, action),
        )

    def create(
        self, table: str, values: dict[str, Any], shown: tuple[str, ...], action: str
    ) -> dict[str, Any]:
        """A row of ``table`` made by this user in this workspace, and the activity ``action``; ``shown`` of it."""
        columns = ("user_id", "workspace_id", *values)
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                sql.SQL(", ").join(map(sql.Identifier, shown)),
            ),
            (self.user_id, self.workspace_id, *values.values()),
        ).fetchone()
        assert row is not None
        self.record(action)
        return dict(zip(shown, row, strict=True))

    @property
    def json(self) -> dict[str, Any]:
        assert self.body is not None
        return self.body


def create_credential(call: Call) -> Reply:
    body = call.json
    fields(body, ("name", "provider", "secret"))
    values = {name: text(body, name) for name in ("name", "provider", "secret")}
    return HTTPStatus.CREATED, call.create("credentials", values, CREDENTIAL, "credential.created")


def update_credential(call: Call) -> Reply:
    body = call.json
    fields(body, (), ("name", "secret"))
    if not body:
        raise bad_request("nothing to change: give 'name' and/or 'secret'")
    name = text(body, "name") if "name" in body else None
    secret = text(body, "secret") if "secret" in body else None
    credential_id = parse_id(call.path["credential_id"], "credential")
    row = call.conn.execute(
        "UPDATE credentials SET name = coalesce(%s, name), secret = coalesce(%s, secret), updated_at = now()"
        " WHERE id = %s AND workspace_id = %s RETURNING id, workspace_id, name, provider",
        (name, secret, credential_id, call.workspace_id),
    ).fetchone()
    if row is None:
        raise not_found(f"no credential {credential_id} in workspace {call.workspace_id}")
    call.record("credential.updated")
    return HTTPStatus.OK, dict(zip(CREDENTIAL, row, strict=True))


def create_webhook(call: Call) -> Reply:
    body = call.json
    fields(body, ("target_url", "event_types", "secret"))
    values = {
        "target_url": http_url(body, "target_url"),
        "event_types": text_list(body, "event_types"),
        "secret": text(body, "secret"),
    }
    return HTTPStatus.CREATED, call.create("webhook_registrations", values, WEBHOOK, "webhook.created")


def fire_event(call: Call) -> Reply:
    body = call.json
    fields(body, ("event_type", "body"))
    event_type = text(body, "event_type")
    event_body = json_object(body, "body")
    webhook_id = parse_id(call.path["webhook_id"], "webhook")
    registration = call.conn.execute(
        "SELECT event_types, active FROM webhook_registrations WHERE id = %s AND workspace_id = %s",
        (webhook_id, call.workspace_id),
    ).fetchone()
    if registration is None:
        raise not_found(f"no webhook {webhook_id} in workspace {call.workspace_id}")
    event_types, active = registration
    if event_type not in event_types:
        raise bad_request(f"webhook {webhook_id} does not subscribe to {event_type!r}")
    if not active:
        raise ApiError(HTTPStatus.CONFLICT, f"webhook {webhook_id} is inactive")
    row = call.conn.execute(
        "INSERT INTO webhook_events (registration_id, workspace_id, event_type, body)"
        " VALUES (%s, %s, %s, %s) RETURNING id, status",
        (webhook_id, call.workspace_id, event_type, Jsonb(event_body)),
    ).fetchone()
    assert row is not None
    call.record("webhook_event.fired")
    call.fired.append(row[0])
    return HTTPStatus.ACCEPTED, {"id": row[0], "status": row[1]}


def get_event(call: Call, last_errors: dict[int, str]) -> Reply:
    event_id = parse_id(call.path["event_id"], "webhook event")
    row = call.conn.execute(
        "SELECT id, status, attempts, processed_at, workspace_id FROM webhook_events"
        " WHERE id = %s AND workspace_id = %s",
        (event_id, call.workspace_id),
    ).fetchone()
    if row is None:
        raise not_found(f"no webhook event {event_id} in workspace {call.workspace_id}")
    keys = ("id", "status", "attempts", "processed_at", "workspace_id")
    reply = dict(zip(keys, row, strict=True))
    reply["last_error"] = last_errors.get(event_id)
    return HTTPStatus.OK, reply


def list_activities(call: Call) -> Reply:
    limit = parse_limit(call.query)
    rows = call.conn.execute(
        "SELECT id, user_id, workspace_id, action, created_at FROM activities"
        " WHERE workspace_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        (call.workspace_id, limit),
    ).fetchall()
    keys = ("id", "user_id", "workspace_id", "action", "created_at")
    return HTTPStatus.OK, {"activities": [dict(zip(keys, row, strict=True)) for row in rows]}


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # as in smoke/openapi.yaml
    pattern: re.Pattern[str]
    operation: str  # the contract's operationId

    @classmethod
    def of(cls, method: str, template: str, operation: str) -> Route:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        return cls(method, template, re.compile(f"^{regex}$"), operation)


ROUTES = (
    Route.of("POST", "/workspaces/{workspace_id}/credentials", "createCredential"),
    Route.of("PATCH", "/workspaces/{workspace_id}/credentials/{credential_id}", "updateCredential"),
    Route.of("POST", "/workspaces/{workspace_id}/webhooks", "createWebhook"),
    Route.of("POST", "/workspaces/{workspace_id}/webhooks/{webhook_id}/events", "fireWebhookEvent"),
    Route.of("GET", "/workspaces/{workspace_id}/webhook-events/{event_id}", "getWebhookEvent"),
    Route.of("GET", "/workspaces/{workspace_id}/activities", "listActivities"),
)
