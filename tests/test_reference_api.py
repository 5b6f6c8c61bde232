"""The reference API itself: it matches its contract, and no input gets a 5xx or writes when refused."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import sys
from collections.abc import Iterator
from http import HTTPStatus
from urllib.parse import quote, urlsplit

import pytest
import requests
import urllib3
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migration_gate.core.contract import APP_ROLE
from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.smoke import (
    Deployment,
    WebhookReceiver,
    expect,
    fingerprint,
    reference_deployment,
    wait_until,
)
from migration_gate.reference.handlers import ROUTES, Call
from migration_gate.reference.validation import HTTP_URL, MAX_BODY_BYTES, NON_BLANK_TEXT, Reply
from tests.conftest import CONTRACT, REPO


@pytest.fixture(scope="module")
def deployment(disposable_gate: CheckpointDatabases) -> Iterator[Deployment]:
    """The reference API, tested on a clone of the disposable gate database."""
    with reference_deployment(disposable_gate, contract=CONTRACT) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def objects(deployment: Deployment) -> dict[str, int]:
    """A credential and a webhook in the actor's workspace, for the paths that need one."""
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    credential = deployment.api.request(
        "POST",
        f"/workspaces/{ws}/credentials",
        user=user,
        json_body={"name": "n", "provider": "p", "secret": "s"},
    ).json()
    webhook = deployment.api.request(
        "POST",
        f"/workspaces/{ws}/webhooks",
        user=user,
        json_body={"target_url": "http://127.0.0.1:9/", "event_types": ["a"], "secret": "s"},
    ).json()
    return {"credential": credential["id"], "webhook": webhook["id"]}


def contract_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in smoke/openapi.yaml."""
    operations, path = set(), None
    for line in (REPO / "smoke" / "openapi.yaml").read_text().splitlines():
        if match := re.match(r"^  (/\S*):\s*$", line):
            path = match.group(1)
        elif (match := re.match(r"^    (get|put|post|patch|delete):\s*$", line)) and path:
            operations.add((match.group(1).upper(), path))
        elif re.match(r"^\S", line):
            path = None
    return operations


def test_the_reference_api_serves_exactly_the_operations_of_the_contract() -> None:
    served = {(route.method, route.template) for route in ROUTES}
    assert contract_operations() == served


def status_of(
    deployment: Deployment, method: str, path: str, body: object = None, raw: bytes | None = None
) -> int:
    user = deployment.actors.user_id
    ws = deployment.actors.workspace_id
    if body is None:
        response = deployment.api.request(method, f"/workspaces/{ws}{path}", user=user, raw=raw)
    else:
        response = deployment.api.request(method, f"/workspaces/{ws}{path}", user=user, json_body=body)
    assert isinstance(response.json().get("error", ""), str)
    return response.status_code


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "status"),
    [
        ("POST", "/credentials", {"name": "n", "provider": "p", "secret": "s", "extra": 1}, None, 400),
        ("POST", "/credentials", {"name": "  ", "provider": "p", "secret": "s"}, None, 400),
        ("POST", "/credentials", None, b'{"name": "\\u0000", "provider": "p", "secret": "s"}', 400),
        ("POST", "/credentials", None, b'{"name": "\\ud800", "provider": "p", "secret": "s"}', 400),
        ("POST", "/credentials", None, b'{"name": NaN, "provider": "p", "secret": "s"}', 400),
        ("POST", "/credentials", None, b"\xff\xfe", 400),
        ("POST", "/credentials", None, b"[" * 100_000, 400),
        ("PATCH", "/credentials/{credential}", {}, None, 400),
        ("PATCH", "/credentials/{credential}", {"provider": "changed"}, None, 400),
        ("POST", "/webhooks", {"target_url": "ftp://x", "event_types": ["a"], "secret": "s"}, None, 400),
        ("POST", "/webhooks", {"target_url": "http://x", "event_types": [], "secret": "s"}, None, 400),
        ("POST", "/webhooks/{webhook}/events", {"event_type": "not-subscribed", "body": {}}, None, 400),
        ("POST", "/webhooks/{webhook}/events", {"event_type": "a", "body": {"n": 1e400}}, None, 400),
        ("POST", "/webhooks/{webhook}/events", {"event_type": "a", "body": [1]}, None, 400),
        ("GET", "/activities?limit=0", None, None, 400),
        ("GET", "/activities?limit=501", None, None, 400),
        ("GET", "/activities?limit=1.5", None, None, 400),
        ("GET", "/activities?limit=1&limit=2", None, None, 400),
        ("GET", "/activities?limit=500", None, None, 200),
        ("POST", "/credentials", {"name": "\x1c\u3000", "provider": "p", "secret": "s"}, None, 400),
        ("POST", "/credentials", {"name": "\u200bx", "provider": "p", "secret": "s"}, None, 201),
        ("POST", "/webhooks", {"target_url": "http://[::1", "event_types": ["a"], "secret": "s"}, None, 400),
        (
            "POST",
            "/webhooks",
            {"target_url": "http://a\uff03b@c/", "event_types": ["a"], "secret": "s"},
            None,
            400,
        ),
        ("POST", "/webhooks", {"target_url": "http://", "event_types": ["a"], "secret": "s"}, None, 400),
        (
            "POST",
            "/webhooks",
            {"target_url": "http://[::1]:9/", "event_types": ["a"], "secret": "s"},
            None,
            201,
        ),
        (
            "POST",
            "/webhooks",
            {"target_url": "http://x", "event_types": ["\u2028"], "secret": "s"},
            None,
            400,
        ),
        (
            "POST",
            "/webhooks/{webhook}/events",
            None,
            b'{"event_type": "a", "body": {"n": 1' + b"0" * 400 + b"}}",
            400,
        ),
        ("POST", "/webhooks/{webhook}/events", None, b'{"event_type": "a", "body": {"k\\u0000": 1}}', 400),
        (
            "POST",
            "/webhooks/{webhook}/events",
            {"event_type": "a", "body": {"n": 1e308, "m": 10**300}},
            None,
            202,
        ),
        ("GET", "/credentials/{credential}", None, None, 405),
        ("DELETE", "/credentials", None, None, 405),
        ("TRACE", "/credentials", None, None, 405),
        ("QUERY", "/activities", None, None, 405),
        ("TRACE", "/nowhere", None, None, 404),
        ("GET", "/nowhere", None, None, 404),
        ("PATCH", "/credentials/99999999999999999999", {"name": "n"}, None, 404),
        ("PATCH", "/credentials/-1", {"name": "n"}, None, 404),
    ],
)
def test_edge_inputs_get_their_status_and_an_error(
    deployment: Deployment,
    objects: dict[str, int],
    method: str,
    path: str,
    body: object,
    raw: bytes | None,
    status: int,
) -> None:
    assert status_of(deployment, method, path.format(**objects), body, raw) == status


def test_an_inactive_webhook_refuses_events_with_409(deployment: Deployment, objects: dict[str, int]) -> None:
    assert deployment.database is not None
    with deployment.database.connect() as conn:
        conn.execute("UPDATE webhook_registrations SET active = false WHERE id = %s", (objects["webhook"],))
    try:
        status = status_of(
            deployment, "POST", f"/webhooks/{objects['webhook']}/events", {"event_type": "a", "body": {}}
        )
        assert status == 409
    finally:
        with deployment.database.connect() as conn:
            conn.execute(
                "UPDATE webhook_registrations SET active = true WHERE id = %s", (objects["webhook"],)
            )


def raw_exchange(deployment: Deployment, request: bytes) -> tuple[int, dict[str, object]]:
    """Send bytes as they are (what requests would never send) and read the answer."""
    parts = urlsplit(deployment.api.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request)
        response = http.client.HTTPResponse(conn)
        response.begin()
        return response.status, json.loads(response.read())


def test_http_the_server_library_refuses_is_answered_in_json_too(deployment: Deployment) -> None:
    status, reply = raw_exchange(deployment, b"GET / HTTP/1.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n")
    assert status == 431 and "error" in reply


def test_a_body_over_the_limit_is_refused_before_it_is_read(deployment: Deployment) -> None:
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    status, reply = raw_exchange(
        deployment,
        f"POST /workspaces/{ws}/credentials HTTP/1.1\r\nHost: x\r\nX-User-Id: {user}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(),
    )
    assert status == 413 and "error" in reply


def test_a_chunked_body_is_refused(deployment: Deployment) -> None:
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    status, reply = raw_exchange(
        deployment,
        f"POST /workspaces/{ws}/credentials HTTP/1.1\r\nHost: x\r\nX-User-Id: {user}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".encode(),
    )
    assert status == 411 and "error" in reply


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# A valid body per endpoint; the fuzz keeps, drops or replaces each field, so it reaches
# the type checks behind the presence checks.
VALID_BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/credentials"): {"name": "n", "provider": "p", "secret": "s"},
    ("PATCH", "/credentials/{credential}"): {"name": "n", "secret": "s"},
    ("POST", "/webhooks"): {"target_url": "http://127.0.0.1:9/", "event_types": ["a"], "secret": "s"},
    ("POST", "/webhooks/{webhook}/events"): {"event_type": "a", "body": {}},
}
# What a client can put in a header: printable ASCII, or numbers in and out of bigint range.
USER_IDS = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=8) | st.integers(
    -5, 2**64
).map(str)


DROPPED = object()


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method, template = endpoint = draw(st.sampled_from(sorted(VALID_BODIES)))
    valid = VALID_BODIES[endpoint]
    # Each field mostly kept, sometimes replaced by any JSON, sometimes dropped.
    fields = st.fixed_dictionaries(
        {
            name: st.one_of(st.just(value), st.just(value), st.just(value), JSON, st.just(DROPPED))
            for name, value in valid.items()
        }
    )
    mutated = fields.map(lambda body: {name: value for name, value in body.items() if value is not DROPPED})
    body = draw(
        st.one_of(
            st.binary(max_size=64),
            JSON.map(lambda value: json.dumps(value).encode()),
            mutated.map(lambda value: json.dumps(value).encode()),
            mutated.map(lambda value: json.dumps(value).encode()),
        )
    )
    return method, template, body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    request=api_requests(),
    # Mostly the real user and workspace, so that most examples reach the body's checks.
    user=st.one_of(st.none(), st.none(), st.none(), USER_IDS),
    segment=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=6)),
)
def test_no_input_gets_a_5xx_and_a_refusal_writes_nothing(
    deployment: Deployment,
    objects: dict[str, int],
    request: tuple[str, str, bytes],
    user: str | None,
    segment: str | None,
) -> None:
    """Any body, any X-User-Id, any workspace segment: 2xx, or a 4xx with an error and no write."""
    assert deployment.database is not None
    actors = deployment.actors
    method, template, body = request
    ws = actors.workspace_id if segment is None else quote(segment, safe="") or "%20"
    path = f"/workspaces/{ws}" + template.format(**objects)
    acting = actors.user_id if user is None else user
    workspaces = (actors.workspace_id, actors.other_workspace_id)
    with deployment.database.connect() as conn:
        before = fingerprint(conn, workspaces)
    response = deployment.api.request(method, path, user=acting or None, raw=body)
    assert response.status_code < 500, f"{method} {path} {body!r} as {acting!r}: {response.text}"
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)
        with deployment.database.connect() as conn:
            assert fingerprint(conn, workspaces) == before, f"{method} {path} {body!r} was refused but wrote"


def test_a_method_the_contract_does_not_declare_gets_405_naming_the_declared_ones(
    deployment: Deployment,
) -> None:
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    for method in ("TRACE", "PUT", "OPTIONS", "HEAD", "BREW"):
        response = deployment.api.request(method, f"/workspaces/{ws}/credentials/1", user=user)
        assert (response.status_code, response.headers.get("Allow")) == (405, "PATCH"), method


# -- The pool: connections reused, each acting as the application's role -------------------


def who_acts(conn: object) -> tuple[str, int]:
    row = conn.execute("SELECT current_user::text, pg_backend_pid()").fetchone()  # type: ignore[attr-defined]
    return row[0], row[1]


def test_requests_share_the_pools_connections_each_acting_as_the_application_role(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deployment.reference is not None
    seen: list[tuple[str, int]] = []

    def listing(call: Call) -> Reply:
        seen.append(who_acts(call.conn))
        return HTTPStatus.OK, {"activities": []}

    monkeypatch.setitem(deployment.reference.operations, "listActivities", listing)
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    for _ in range(20):
        expect(deployment.api.request("GET", f"/workspaces/{ws}/activities", user=user), 200)
    assert {role for role, _ in seen} == {APP_ROLE}
    assert len({pid for _, pid in seen}) <= deployment.reference.settings.pool_size < len(seen)


def test_a_connection_that_comes_back_as_another_role_is_discarded(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deployment.reference is not None
    seen: list[tuple[str, int]] = []

    def escalating(call: Call) -> Reply:
        call.conn.execute("RESET ROLE")  # a bug of an operation: the session stops acting as the app
        seen.append(who_acts(call.conn))
        return HTTPStatus.OK, {"activities": []}

    def listing(call: Call) -> Reply:
        seen.append(who_acts(call.conn))
        return HTTPStatus.OK, {"activities": []}

    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    monkeypatch.setitem(deployment.reference.operations, "listActivities", escalating)
    expect(deployment.api.request("GET", f"/workspaces/{ws}/activities", user=user), 200)
    ((role, escalated_pid),) = seen
    assert role != APP_ROLE
    monkeypatch.setitem(deployment.reference.operations, "listActivities", listing)
    for _ in range(2 * deployment.reference.settings.pool_size):
        expect(deployment.api.request("GET", f"/workspaces/{ws}/activities", user=user), 200)
    assert {role for role, _ in seen[1:]} == {APP_ROLE}
    assert escalated_pid not in {pid for _, pid in seen[1:]}, "the connection that changed role was reused"


def test_an_event_whose_type_no_http_header_can_carry_ends_failed_not_stuck(deployment: Deployment) -> None:
    """X-Fluxolab-Event carries the type: one outside Latin-1 fails each attempt, it never stays claimed."""
    ws, user = deployment.actors.workspace_id, deployment.actors.user_id
    with WebhookReceiver() as receiver:
        webhook = {"target_url": receiver.url("/latin1"), "event_types": ["ping \u2713"], "secret": "s"}
        registration = expect(
            deployment.api.request("POST", f"/workspaces/{ws}/webhooks", user=user, json_body=webhook), 201
        )
        fired = expect(
            deployment.api.request(
                "POST",
                f"/workspaces/{ws}/webhooks/{registration['id']}/events",
                user=user,
                json_body={"event_type": "ping \u2713", "body": {}},
            ),
            202,
        )
        event = wait_until(
            lambda: expect(
                deployment.api.request("GET", f"/workspaces/{ws}/webhook-events/{fired['id']}", user=user),
                200,
            ),
            lambda event: event["status"] in ("delivered", "failed"),
            "the event settled",
            30,
        )
    assert event["status"] == "failed" and "latin-1" in (event["last_error"] or ""), event


# -- The contract's rules are the API's ----------------------------------------------------


def schemas() -> dict[str, dict[str, object]]:
    return yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))["components"]["schemas"]  # type: ignore[no-any-return]


def test_the_contract_spells_the_apis_patterns_the_same() -> None:
    assert schemas()["NonEmptyText"]["pattern"] == NON_BLANK_TEXT
    assert schemas()["HttpUrl"]["pattern"] == HTTP_URL


def test_not_blank_means_what_python_calls_white_space() -> None:
    non_blank = re.compile(NON_BLANK_TEXT)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # no str a JSON body decodes to holds an unpaired surrogate: the API refuses them first
        accepted = non_blank.fullmatch(char) is not None
        assert accepted == (not char.isspace() and char != "\x00"), f"U+{code:04X}"
    assert non_blank.fullmatch("a\x00") is None and non_blank.fullmatch(" \u3000x\n") is not None


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/fluxolab?x=1#y", True),
        ("http://127.0.0.1:8080/", True),
        ("http://[::1]:9000/hooks", True),
        ("http://localhost", True),
        ("http://", False),
        ("http://:80", False),
        ("http://@", False),
        ("http://[::1", False),
        ("http://a\uff03b@c/", False),
        ("https://\u00cf", False),
        ("http://a b", False),
        ("HTTP://x", False),
        ("http://x/\\y", False),
        ("ftp://x", False),
        ("http://x\n", False),
        # Brackets hold an IPv6 literal or nothing: Schemathesis found `[c]`, which no client parses.
        ("http://[c]/", False),
        ("http://[1:2]/", False),
        ("http://[1:2:3:4:5:6:7:8:9]/", False),
        ("http://[fe80::1%25eth0]/", False),
        ("http://[1:2:3:4:5:6:7:8]/", True),
        ("http://[::ffff:192.0.2.1]:443/x", True),
        ("http://[::ffff:192.0.2.256]/", False),
        ("http://x:65535/", True),
        ("http://x:65536/", False),
        ("http://" + "a" * 63 + ".example/", True),
        ("http://" + "a" * 64 + ".example/", False),
    ],
)
def test_a_target_url_is_what_the_contract_and_the_api_both_accept(url: str, accepted: bool) -> None:
    assert (re.compile(HTTP_URL).fullmatch(url) is not None) == accepted


@given(st.from_regex(HTTP_URL, fullmatch=True))
@settings(max_examples=500, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_target_url_the_contract_admits_is_one_http_clients_parse(url: str) -> None:
    # The delivery worker's client (requests, over urllib3) and Python's urlsplit: a stored
    # target_url that one of them cannot parse is an event that can never be delivered.
    split = urlsplit(url)
    assert split.hostname and split.port in (None, *range(65536))
    assert urllib3.util.parse_url(url).host
    assert requests.Request("POST", url).prepare().url
    if split.netloc.startswith("["):
        assert isinstance(ipaddress.ip_address(split.hostname), ipaddress.IPv6Address)
