"""The contract's operations, each inside the request's transaction, as ``fluxolab_devmode``; and their routes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import psycopg
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

    @property
    def json(self) -> dict[str, Any]:
        assert self.body is not None
        return self.body


def create_credential(call: Call) -> Reply:
    body = call.json
    fields(body, ("name", "provider", "secret"))
    name, provider, secret = text(body, "name"), text(body, "provider"), text(body, "secret")
    row = call.conn.execute(
        "INSERT INTO credentials (user_id, workspace_id, name, provider, secret)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id, workspace_id, name, provider",
        (call.user_id, call.workspace_id, name, provider, secret),
    ).fetchone()
    call.record("credential.created")
    return HTTPStatus.CREATED, _credential(row)


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
    return HTTPStatus.OK, _credential(row)


def _credential(row: Any) -> dict[str, Any]:
    credential_id, workspace_id, name, provider = row
    return {"id": credential_id, "workspace_id": workspace_id, "name": name, "provider": provider}


def create_webhook(call: Call) -> Reply:
    body = call.json
    fields(body, ("target_url", "event_types", "secret"))
    target_url = http_url(body, "target_url")
    event_types = text_list(body, "event_types")
    secret = text(body, "secret")
    row = call.conn.execute(
        "INSERT INTO webhook_registrations (user_id, workspace_id, target_url, event_types, secret)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id, workspace_id, target_url, event_types, active",
        (call.user_id, call.workspace_id, target_url, event_types, secret),
    ).fetchone()
    call.record("webhook.created")
    assert row is not None
    keys = ("id", "workspace_id", "target_url", "event_types", "active")
    return HTTPStatus.CREATED, dict(zip(keys, row, strict=True))


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
