"""The smoke tests' client holds every response to smoke/openapi.yaml: a drift fails, naming the operation and the field."""

from __future__ import annotations

import json

import pytest
import requests

from migration_gate.plugin.contract import ApiContract, ContractViolation, api_contract
from tests.conftest import CONTRACT

BASE = "http://127.0.0.1:8080"
EVENT = "/workspaces/7/webhook-events/5"


def answer(
    method: str,
    path: str,
    status: int,
    body: object,
    *,
    base: str = BASE,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """A response as requests would hand it over, to ``method base+path``."""
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.headers["Content-Type"] = content_type
    response.headers.update(headers or {})
    response.request = requests.Request(
        method, base + path, headers={"X-User-Id": "1", "Content-Type": "application/json"}
    ).prepare()
    return response


@pytest.fixture(scope="module")
def contract() -> ApiContract:
    return api_contract(CONTRACT)


EVENT_OK = {"id": 5, "workspace_id": 7, "status": "delivered", "attempts": 1, "processed_at": None}


@pytest.mark.parametrize(
    ("response", "base"),
    [
        (answer("GET", EVENT, 200, EVENT_OK), BASE),
        (answer("GET", EVENT, 200, {**EVENT_OK, "processed_at": "2026-12-02T13:51:00.123456+00:00"}), BASE),
        (
            answer("GET", EVENT, 503, {"error": "database unavailable: the server closed the connection"}),
            BASE,
        ),
        (
            answer("GET", "/workspaces/7/activities?limit=ten", 400, {"error": "'limit' must be an integer"}),
            BASE,
        ),
        (
            answer("PATCH", "/workspaces/7/credentials/9", 404, {"error": "no credential 9 in workspace 7"}),
            BASE,
        ),
        (
            answer(
                "DELETE", "/workspaces/7/credentials", 405, {"error": "use POST"}, headers={"Allow": "POST"}
            ),
            BASE,
        ),
        (answer("GET", "/nowhere", 404, {"error": "no route /nowhere"}), BASE),
        (answer("GET", EVENT, 200, EVENT_OK, base=BASE + "/api/v1"), BASE + "/api/v1"),
    ],
    ids=["event", "processed", "5xx", "400", "404", "405-allow", "no-route", "base-path"],
)
def test_a_response_the_contract_allows_passes(
    contract: ApiContract, response: requests.Response, base: str
) -> None:
    contract.check(response, base)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            answer("GET", EVENT, 200, {**EVENT_OK, "status": "sent"}),
            r"^getWebhookEvent \(GET /workspaces/\{workspace_id\}/webhook-events/\{event_id\}\) answered 200, "
            r"which smoke/openapi.yaml does not allow: status: 'sent' is not one of",
        ),
        (
            answer("GET", EVENT, 200, {**EVENT_OK, "workspace_id": "7", "attempts": -1}),
            r"workspace_id: '7' is not of type 'integer'; attempts: -1 is less than the minimum of 0",
        ),
        (
            answer("GET", EVENT, 200, {**EVENT_OK, "processed_at": "yesterday"}),
            r"processed_at: 'yesterday' is not a 'date-time'",
        ),
        (
            answer("POST", "/workspaces/7/credentials", 201, {"id": 1, "workspace_id": 7, "name": "n"}),
            r"^createCredential .* the body: 'provider' is a required property",
        ),
        (
            answer(
                "GET",
                "/workspaces/7/activities",
                200,
                {"activities": [{"id": 1, "workspace_id": 7, "action": "a", "created_at": 3}]},
            ),
            r"^listActivities .* activities\[0\]\.created_at: 3 is not of type 'string'",
        ),
        (
            answer("POST", "/workspaces/7/credentials", 418, {"error": "teapot"}),
            r"^createCredential .* answered 418, a status smoke/openapi.yaml does not declare for it "
            r"\(201, 400, 401, 403, 404, 411, 413, 5XX\)",
        ),
        (
            answer("GET", "/workspaces/7/activities", 200, b"<html>", content_type="text/html"),
            r"^listActivities .* answered 200, which smoke/openapi.yaml does not allow: .*text/html",
        ),
        (
            answer("GET", EVENT, 500, {"message": "boom"}),
            r"^getWebhookEvent .* answered 500, .* the body: 'error' is a required property",
        ),
        (
            answer("DELETE", "/workspaces/7/credentials", 405, {"error": "no"}),
            r"^DELETE /workspaces/7/credentials \(outside smoke/openapi.yaml\) answered 405 with Allow: None; "
            r"the methods smoke/openapi.yaml declares there are POST",
        ),
        (
            answer("GET", "/nowhere", 404, b"Not Found", content_type="text/plain"),
            r'^GET /nowhere \(outside smoke/openapi.yaml\) answered 404 without \{"error": "..."\}',
        ),
    ],
    ids=[
        "enum",
        "types",
        "format",
        "required",
        "nested",
        "undeclared-status",
        "content-type",
        "error-shape",
        "405-without-allow",
        "no-route-not-json",
    ],
)
def test_a_response_that_drifts_fails_naming_the_operation_and_the_field(
    contract: ApiContract, response: requests.Response, message: str
) -> None:
    with pytest.raises(ContractViolation, match=message):
        contract.check(response, BASE)


def test_a_contract_file_that_is_missing_is_named() -> None:
    with pytest.raises(FileNotFoundError, match="no API contract at"):
        api_contract(CONTRACT.with_name("missing.yaml"))
