"""Playbook 5.1: register a webhook, fire an event, see it processed in public.webhook_events."""

from __future__ import annotations

import json
import uuid
from typing import Any

from migration_gate.plugin.smoke import Deployment, WebhookReceiver, expect, wait_until
from migration_gate.reference.webhook_delivery import SIGNATURE_HEADER, signature_is_valid

EVENT_STATUSES = ("pending", "processing", "delivered", "failed")


def fire_event(
    deployment: Deployment, receiver: WebhookReceiver, path: str
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Register ``receiver``'s ``path`` in the actor's workspace and fire one event at it."""
    api, actors = deployment.api, deployment.actors
    ws = actors.workspace_id
    secret = f"whsec-{uuid.uuid4().hex}"
    registration = expect(
        api.request(
            "POST",
            f"/workspaces/{ws}/webhooks",
            user=actors.user_id,
            json_body={"target_url": receiver.url(path), "event_types": ["smoke.ping"], "secret": secret},
        ),
        201,
    )
    assert registration["workspace_id"] == ws, registration
    assert secret not in json.dumps(registration), f"the secret came back: {registration}"
    body = {"smoke_run": deployment.run_id, "path": path, "nested": {"n": 1, "ok": True, "list": [1, "two"]}}
    queued = expect(
        api.request(
            "POST",
            f"/workspaces/{ws}/webhooks/{registration['id']}/events",
            user=actors.user_id,
            json_body={"event_type": "smoke.ping", "body": body},
        ),
        202,
    )
    assert queued["status"] in EVENT_STATUSES, queued
    return queued, secret, body


def settled(deployment: Deployment, event_id: int) -> dict[str, Any]:
    """The event once delivered or failed, polled through the API."""
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    return wait_until(
        lambda: expect(
            deployment.api.request("GET", f"/workspaces/{ws}/webhook-events/{event_id}", user=user), 200
        ),
        lambda event: event["status"] in ("delivered", "failed"),
        f"webhook event {event_id} delivered or failed",
        deployment.delivery_deadline,
    )


def stored_event(deployment: Deployment, event_id: int) -> tuple[Any, ...] | None:
    with deployment.db().connect() as conn:
        return conn.execute(
            "SELECT e.status, e.workspace_id, r.workspace_id, e.processed_at IS NOT NULL, e.attempts"
            " FROM webhook_events e JOIN webhook_registrations r ON r.id = e.registration_id"
            " WHERE e.id = %s",
            (event_id,),
        ).fetchone()


def test_a_fired_event_is_delivered_signed_and_processed_in_its_workspace(
    deployment: Deployment, receiver: WebhookReceiver
) -> None:
    ws = deployment.actors.workspace_id
    path = f"/ok/{deployment.run_id}/{uuid.uuid4().hex[:8]}"
    queued, secret, body = fire_event(deployment, receiver, path)

    event = settled(deployment, queued["id"])
    assert event["status"] == "delivered", f"event ended {event['status']}: {event}"
    assert event["workspace_id"] == ws, event
    assert event["processed_at"] is not None, event
    assert event["attempts"] >= 1, event

    deliveries = receiver.deliveries_to(path)
    assert deliveries, f"the receiver got nothing at {path}"
    delivered = deliveries[-1]
    assert json.loads(delivered.body) == body, f"delivered body {delivered.body!r} is not the fired {body}"
    signature = delivered.headers.get(SIGNATURE_HEADER.lower())
    assert signature_is_valid(delivered.body, secret, signature), (
        f"{SIGNATURE_HEADER}: {signature!r} is not sha256=HMAC-SHA256(body, the registration's secret)"
    )

    row = stored_event(deployment, queued["id"])
    assert row == ("delivered", ws, ws, True, event["attempts"]), (
        f"webhook_events row {queued['id']} (status, workspace, registration's workspace, processed, attempts):"
        f" {row}"
    )


def test_an_undeliverable_event_is_retried_then_ends_failed(
    deployment: Deployment, receiver: WebhookReceiver
) -> None:
    ws = deployment.actors.workspace_id
    path = f"/fail/{deployment.run_id}/{uuid.uuid4().hex[:8]}"  # the receiver answers 503 here
    queued, secret, _ = fire_event(deployment, receiver, path)

    event = settled(deployment, queued["id"])
    assert event["status"] == "failed", f"an event whose receiver always answers 503 ended: {event}"
    assert event["workspace_id"] == ws, event
    attempts = receiver.deliveries_to(path)
    assert event["attempts"] >= 2, f"failed without a retry: {event}"
    assert len(attempts) == event["attempts"], (
        f"receiver saw {len(attempts)} attempts, the event says {event}"
    )
    assert all(signature_is_valid(a.body, secret, a.headers.get(SIGNATURE_HEADER.lower())) for a in attempts)
    if deployment.delivery is not None:
        assert event["attempts"] == deployment.delivery.attempts, event

    row = stored_event(deployment, queued["id"])
    assert row == ("failed", ws, ws, True, event["attempts"]), (
        f"webhook_events row {queued['id']} (status, workspace, registration's workspace, processed, attempts):"
        f" {row}"
    )
