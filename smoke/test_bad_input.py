"""Bad input is turned away with the right status and an error, and writes nothing.

Each case is one request that must be refused: 400 for a body that is malformed,
incomplete or wrongly typed, 401 without a known user, 403 outside the user's
workspaces, 404 for what does not exist in the workspace of the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from migration_gate.plugin.smoke import NO_SUCH_ID, Deployment, WebhookReceiver, expect, fingerprint


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # {ws}, {other_ws}, {credential}, {other_credential}, {webhook}, {other_webhook}, {other_event}, {missing}
    user: str | None  # "user", "other_user", or a literal X-User-Id; None sends none
    body: Any  # bytes are sent as they are, anything else as JSON; None sends no body
    status: int


CREDENTIAL = {"name": "bad-input probe", "provider": "github", "secret": "x"}
WEBHOOK = {"target_url": "https://example.invalid/hook", "event_types": ["smoke.ping"], "secret": "x"}
EVENT = {"event_type": "smoke.ping", "body": {"n": 1}}
CREDENTIALS = "/workspaces/{ws}/credentials"
CREDENTIAL_PATH = "/workspaces/{ws}/credentials/{credential}"
WEBHOOKS = "/workspaces/{ws}/webhooks"
EVENTS = "/workspaces/{ws}/webhooks/{webhook}/events"
ACTIVITIES = "/workspaces/{ws}/activities"

CASES = [
    Case("400-malformed-json", "POST", CREDENTIALS, "user", b'{"name": "x",', 400),
    Case("400-no-body", "POST", CREDENTIALS, "user", None, 400),
    Case("400-body-not-an-object", "POST", CREDENTIALS, "user", b'["name", "provider", "secret"]', 400),
    Case("400-missing-secret", "POST", CREDENTIALS, "user", {"name": "x", "provider": "github"}, 400),
    Case("400-name-not-a-string", "POST", CREDENTIALS, "user", {**CREDENTIAL, "name": 42}, 400),
    Case("400-secret-null", "POST", CREDENTIALS, "user", {**CREDENTIAL, "secret": None}, 400),
    Case("400-edit-malformed-json", "PATCH", CREDENTIAL_PATH, "user", b"{", 400),
    Case("400-edit-name-not-a-string", "PATCH", CREDENTIAL_PATH, "user", {"name": ["x"]}, 400),
    Case(
        "400-event-types-not-a-list", "POST", WEBHOOKS, "user", {**WEBHOOK, "event_types": "smoke.ping"}, 400
    ),
    Case("400-target-url-not-a-string", "POST", WEBHOOKS, "user", {**WEBHOOK, "target_url": 7}, 400),
    Case("400-missing-target-url", "POST", WEBHOOKS, "user", {"event_types": ["a"], "secret": "x"}, 400),
    Case("400-event-missing-body", "POST", EVENTS, "user", {"event_type": "smoke.ping"}, 400),
    Case("400-event-type-not-a-string", "POST", EVENTS, "user", {"event_type": 1, "body": {}}, 400),
    Case("400-limit-not-a-number", "GET", ACTIVITIES + "?limit=ten", "user", None, 400),
    Case("401-no-user", "POST", CREDENTIALS, None, CREDENTIAL, 401),
    Case("401-unknown-user", "POST", CREDENTIALS, str(NO_SUCH_ID), CREDENTIAL, 401),
    Case("401-user-not-an-id", "POST", CREDENTIALS, "alice", CREDENTIAL, 401),
    Case("401-no-user-reading-activities", "GET", ACTIVITIES, None, None, 401),
    Case(
        "403-create-credential-elsewhere",
        "POST",
        "/workspaces/{other_ws}/credentials",
        "user",
        CREDENTIAL,
        403,
    ),
    Case("403-register-webhook-elsewhere", "POST", "/workspaces/{other_ws}/webhooks", "user", WEBHOOK, 403),
    Case(
        "403-edit-credential-elsewhere",
        "PATCH",
        "/workspaces/{other_ws}/credentials/{other_credential}",
        "user",
        {"name": "taken over"},
        403,
    ),
    Case("403-read-activities-elsewhere", "GET", "/workspaces/{other_ws}/activities", "user", None, 403),
    Case("403-other-user-here", "GET", ACTIVITIES, "other_user", None, 403),
    Case(
        "404-edit-credential-of-another-workspace",
        "PATCH",
        "/workspaces/{ws}/credentials/{other_credential}",
        "user",
        {"name": "taken over"},
        404,
    ),
    Case(
        "404-edit-missing-credential",
        "PATCH",
        "/workspaces/{ws}/credentials/{missing}",
        "user",
        {"name": "x"},
        404,
    ),
    Case(
        "404-fire-at-webhook-of-another-workspace",
        "POST",
        "/workspaces/{ws}/webhooks/{other_webhook}/events",
        "user",
        EVENT,
        404,
    ),
    Case(
        "404-fire-at-missing-webhook",
        "POST",
        "/workspaces/{ws}/webhooks/{missing}/events",
        "user",
        EVENT,
        404,
    ),
    Case(
        "404-read-event-of-another-workspace",
        "GET",
        "/workspaces/{ws}/webhook-events/{other_event}",
        "user",
        None,
        404,
    ),
    Case("404-read-missing-event", "GET", "/workspaces/{ws}/webhook-events/{missing}", "user", None, 404),
    Case("404-missing-workspace", "POST", "/workspaces/{missing}/credentials", "user", CREDENTIAL, 404),
]


def create_objects(deployment: Deployment, receiver: WebhookReceiver | None) -> dict[str, int]:
    """A credential, a webhook and an event in each of the two workspaces, made through the API."""
    actors = deployment.actors
    ids: dict[str, int] = {
        "ws": actors.workspace_id,
        "other_ws": actors.other_workspace_id,
        "missing": NO_SUCH_ID,
    }
    # Without a receiver (a deployment that cannot reach us), aim where nothing answers.
    target = receiver.url(f"/ok/{deployment.run_id}/bad-input") if receiver else WEBHOOK["target_url"]
    for prefix, user, ws in (
        ("", actors.user_id, actors.workspace_id),
        ("other_", actors.other_user_id, actors.other_workspace_id),
    ):
        api = deployment.api
        credential = {**CREDENTIAL, "name": deployment.name("bad-input")}
        ids[prefix + "credential"] = expect(
            api.request("POST", f"/workspaces/{ws}/credentials", user=user, json_body=credential), 201
        )["id"]
        webhook = {**WEBHOOK, "target_url": target}
        ids[prefix + "webhook"] = expect(
            api.request("POST", f"/workspaces/{ws}/webhooks", user=user, json_body=webhook), 201
        )["id"]
        events = f"/workspaces/{ws}/webhooks/{ids[prefix + 'webhook']}/events"
        ids[prefix + "event"] = expect(api.request("POST", events, user=user, json_body=EVENT), 202)["id"]
    return ids


@pytest.fixture(scope="module")
def existing_objects(request: pytest.FixtureRequest, deployment: Deployment) -> dict[str, int]:
    try:
        receiver: WebhookReceiver | None = request.getfixturevalue("receiver")
    except pytest.skip.Exception:
        receiver = None
    return create_objects(deployment, receiver)


@pytest.fixture(scope="module")
def watching(deployment: Deployment) -> Iterator[psycopg.Connection | None]:
    """One connection that looks at the workspaces before and after every case (None: no database)."""
    if deployment.database is None:
        yield None
        return
    with deployment.database.connect() as conn:
        yield conn


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_turned_away_and_writes_nothing(
    deployment: Deployment,
    existing_objects: dict[str, int],
    watching: psycopg.Connection | None,
    case: Case,
) -> None:
    workspaces = (deployment.actors.workspace_id, deployment.actors.other_workspace_id)
    before = fingerprint(watching, workspaces) if watching is not None else None

    user = {"user": deployment.actors.user_id, "other_user": deployment.actors.other_user_id}.get(
        case.user or "", case.user
    )
    path = case.path.format(**existing_objects)
    if isinstance(case.body, bytes) or case.body is None:
        response = deployment.api.request(case.method, path, user=user, raw=case.body)
    else:
        response = deployment.api.request(case.method, path, user=user, json_body=case.body)
    reply = expect(response, case.status)
    assert isinstance(reply, dict) and isinstance(reply.get("error"), str) and reply["error"].strip(), (
        f'a refusal must be {{"error": "..."}}, got {json.dumps(reply)[:300]}'
    )

    deployment.db()  # skips from here when there is no database to look in
    assert watching is not None
    after = fingerprint(watching, workspaces)
    changed = {
        table: f"{before[table][0]} rows → {after[table][0]} rows"
        + ("" if before[table][0] != after[table][0] else " (changed)")
        for table in after
        if before is not None and after[table] != before[table]
    }
    assert not changed, f"{case.method} {path} was refused with {case.status} but wrote: {changed}"
