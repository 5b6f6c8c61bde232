"""The reference implementation of ``smoke/openapi.yaml``, served by ``migration-gate serve-api``.

It exists so that the smoke tests of runbook section 5 run end to end against a migrated
database. Every connection does ``SET ROLE fluxolab_devmode`` first, so the API can only
do what the application's role is granted: a missing grant shows up as the database's
own permission error in the response. Connections come from a pool (psycopg-pool), each
set to that role when it is opened; each request is one transaction on one of them: its
write and the activity recording it commit together, and a refused request writes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from migration_gate.core import dsn
from migration_gate.core.contract import APP_ROLE, WORKSPACE_SCOPED_TABLES
from migration_gate.core.errors import GateError, UsageError
from migration_gate.reference.webhook_delivery import DeliveryPolicy, DeliveryWorker

log = logging.getLogger("migration_gate.api")

MAX_BODY_BYTES = 1 << 20
BIGINT_MAX = 2**63 - 1
# The JSON numbers RFC 8259 calls interoperable: finite, within a double's range.
NUMBER_MAX = 1.7976931348623157e308
DEFAULT_ACTIVITY_LIMIT = 50
MAX_ACTIVITY_LIMIT = 500
SHUTDOWN_POLL_SECONDS = (
    0.05  # how soon serve_forever notices stop(); the default half second adds up in tests
)


# The rules of smoke/openapi.yaml, spelled the same there (ECMA-262) and here (Python's re, with
# fullmatch: Python's $ also matches before a final newline). A test keeps the two identical.
# Not blank: one character that str.isspace() does not call whitespace; \s differs between dialects.
NON_BLANK_TEXT = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
# http(s), a DNS name, an IPv4 address or a bracketed IPv6 one, an optional port, then
# RFC 3986's path, query and fragment characters: ASCII, no space, no backslash.
HTTP_URL = (
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[/?#][A-Za-z0-9._~!$&'()*+,;=:@/?#%-]*)?$"
)
_NON_BLANK_TEXT = re.compile(NON_BLANK_TEXT)
_HTTP_URL = re.compile(HTTP_URL)


class ApiError(Exception):
    """An answer other than success: its status, the one line of ``{"error": ...}``, any headers."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, message)


def not_found(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, message)


Reply = tuple[HTTPStatus, dict[str, Any]]


# -- Input ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise bad_request(f"the body must be a JSON object, not {type(value).__name__}")
    _check_storable(value)
    return value


def _check_storable(value: Any) -> None:
    """PostgreSQL text and jsonb hold neither NUL nor unpaired surrogates: refuse them up front."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise bad_request("strings may not contain the NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("strings may not contain unpaired surrogates") from None
        elif isinstance(item, int | float) and not _is_interoperable_number(item):
            raise bad_request("numbers must be finite and within the range of a double")


def _is_text(value: object) -> bool:
    return isinstance(value, str) and _NON_BLANK_TEXT.fullmatch(value) is not None


def _is_interoperable_number(number: float) -> bool:
    # Compared, never converted: an integer too big for a float would overflow math.isfinite.
    return -NUMBER_MAX <= number <= NUMBER_MAX  # False for NaN and the infinities too


def _text(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not _is_text(value):
        raise bad_request(f"{name!r} must be a non-empty string")
    return value


def _text_list(body: dict[str, Any], name: str) -> list[str]:
    value = body[name]
    if not isinstance(value, list) or not value:
        raise bad_request(f"{name!r} must be a non-empty array of strings")
    if not all(_is_text(item) for item in value):
        raise bad_request(f"{name!r} must hold non-empty strings only")
    return value


def _http_url(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not _HTTP_URL.fullmatch(value):
        raise bad_request(f"{name!r} must be an http(s) URL")
    return value


def _json_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body[name]
    if not isinstance(value, dict):
        raise bad_request(f"{name!r} must be a JSON object")
    return value


def fields(body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Every required field present, nothing unknown (a typo must not be silently ignored)."""
    missing = [name for name in required if name not in body]
    if missing:
        raise bad_request(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")


def parse_id(text: str, what: str) -> int:
    """A bigint id from the path; anything else names nothing there is (404, never 500)."""
    if text.isascii() and text.isdigit() and 0 < int(text) <= BIGINT_MAX:
        return int(text)
    raise not_found(f"no {what} {text!r}")


def parse_limit(query: str) -> int:
    values = parse_qs(query, keep_blank_values=True).get("limit", [])
    if not values:
        return DEFAULT_ACTIVITY_LIMIT
    if len(values) > 1:
        raise bad_request("'limit' given more than once")
    text = values[0]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ACTIVITY_LIMIT:
        raise bad_request(f"'limit' must be an integer from 1 to {MAX_ACTIVITY_LIMIT}")
    return int(text)


# -- Operations: each runs inside the request's transaction, as fluxolab_devmode -----


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
    name, provider, secret = _text(body, "name"), _text(body, "provider"), _text(body, "secret")
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
    name = _text(body, "name") if "name" in body else None
    secret = _text(body, "secret") if "secret" in body else None
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
    target_url = _http_url(body, "target_url")
    event_types = _text_list(body, "event_types")
    secret = _text(body, "secret")
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
    event_type = _text(body, "event_type")
    event_body = _json_object(body, "body")
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


# -- The service ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSettings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 0
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    pool_size: int = 8  # connections at most: the requests in flight and the delivery worker share them


APPLICATION_NAME = "migration-gate serve-api"
POOL_TIMEOUT_SECONDS = 10.0  # a request waiting longer for a connection is answered 503


def connect_as_app(url: str) -> psycopg.Connection:
    """A connection that acts as the application's role and nothing more."""
    conn = dsn.connect(url, application_name=APPLICATION_NAME)
    try:
        act_as_app(conn)
    except psycopg.Error:
        conn.close()
        raise
    return conn


def act_as_app(conn: psycopg.Connection) -> None:
    conn.execute(f"SET ROLE {APP_ROLE}")


def still_the_app(conn: psycopg.Connection) -> None:
    """Raise (so that the pool discards the connection) unless it still acts as the application's role."""
    row = conn.execute("SELECT current_user").fetchone()
    if row is None or row[0] != APP_ROLE:
        raise psycopg.ProgrammingError(f"a connection came back acting as {row and row[0]!r}, not {APP_ROLE}")


def app_pool(settings: ApiSettings) -> ConnectionPool:
    """Autocommit connections (a request opens its own transaction), each SET ROLE once, when opened.

    Checked before it is handed out (the server may have closed it) and when it comes back
    (a request that changed the session's role must not pass it on); the pool discards a
    connection that fails either, that comes back closed or inside a transaction it cannot
    roll back.
    """
    return ConnectionPool(
        settings.database_url,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME, "connect_timeout": 10},
        min_size=1,
        max_size=settings.pool_size,
        open=False,
        configure=act_as_app,
        check=ConnectionPool.check_connection,
        reset=still_the_app,
        timeout=POOL_TIMEOUT_SECONDS,
        name="reference-api",
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReferenceApi:
    """The HTTP server, its delivery worker, and the database they act on as fluxolab_devmode."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.pool = app_pool(settings)
        self.worker = DeliveryWorker(self.connect, settings.delivery)
        self.operations: dict[str, Callable[[Call], Reply]] = {
            "createCredential": create_credential,
            "updateCredential": update_credential,
            "createWebhook": create_webhook,
            "fireWebhookEvent": fire_event,
            "getWebhookEvent": lambda call: get_event(call, self.worker.last_errors),
            "listActivities": list_activities,
        }
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool, acting as the application's role, back in the pool afterwards."""
        with self.pool.connection() as conn:
            yield conn

    def check_database(self) -> None:
        """Refuse to start (one line, exit 2) unless the role can be assumed and 008 is applied."""
        url = self.settings.database_url
        try:
            with connect_as_app(url) as conn:  # not the pool's: its errors would be a bare timeout
                scoped = conn.execute(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
                    " AND column_name = 'workspace_id' AND table_name = ANY(%s)",
                    (list(WORKSPACE_SCOPED_TABLES),),
                ).fetchone()
        except psycopg.Error as exc:
            raise UsageError(
                f"cannot act as {APP_ROLE} on {dsn.describe(url)}: {dsn.scrub(first_line(exc), url)}"
            ) from None
        if scoped is None or scoped[0] != len(WORKSPACE_SCOPED_TABLES):
            raise UsageError(
                f"{dsn.describe(url)} is not migrated through 008 (workspace_id missing on "
                f"{', '.join(WORKSPACE_SCOPED_TABLES)} as seen by {APP_ROLE}): run migration-gate migrate first"
            )

    def bind(self) -> ReferenceApi:
        """Check the database, open the pool and bind the port (``port=0``: a free one), not serving yet."""
        self.check_database()
        address = (self.settings.host, self.settings.port)
        try:
            self._server = _HttpServer(address, _Handler, self)
        except OSError as exc:
            raise UsageError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from None
        self.pool.open()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "not bound"
        return f"http://{self.settings.host}:{self._server.server_port}"

    def start(self) -> ReferenceApi:
        """Serve in a background thread (tests); ``stop()`` ends it."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        self.worker.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),
            name="reference-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI) until interrupted, then stop."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        self.worker.start()
        try:
            self._server.serve_forever(SHUTDOWN_POLL_SECONDS)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            if self._thread is not None:  # shutdown() waits for a serve_forever loop to end
                self._server.shutdown()
                self._thread.join()
                self._thread = None
            self._server.server_close()
            self._server = None
        self.worker.stop()
        self.pool.close()

    def __enter__(self) -> ReferenceApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes | None) -> Reply:
        """Route, authenticate, authorize, validate, then run the operation in one transaction."""
        parts = urlsplit(target)
        route, path = self._route(method, parts.path)
        user_text = headers.get("x-user-id", "").strip()
        if not user_text:
            raise ApiError(HTTPStatus.UNAUTHORIZED, "no X-User-Id header")
        if not (user_text.isascii() and user_text.isdigit() and 0 < int(user_text) <= BIGINT_MAX):
            raise ApiError(HTTPStatus.UNAUTHORIZED, f"X-User-Id {user_text[:40]!r} is not a user id")
        user_id = int(user_text)
        workspace_id = parse_id(path["workspace_id"], "workspace")
        with self.connect() as conn, conn.transaction():
            user, workspace, member = conn.execute(
                "SELECT EXISTS (SELECT FROM users WHERE id = %(user)s),"
                " EXISTS (SELECT FROM workspaces WHERE id = %(workspace)s),"
                " EXISTS (SELECT FROM workspace_members WHERE workspace_id = %(workspace)s"
                " AND user_id = %(user)s)",
                {"user": user_id, "workspace": workspace_id},
            ).fetchone() or (False, False, False)
            if not user:
                raise ApiError(HTTPStatus.UNAUTHORIZED, f"no user {user_id}")
            if not workspace:
                raise not_found(f"no workspace {workspace_id}")
            if not member:
                raise ApiError(
                    HTTPStatus.FORBIDDEN, f"user {user_id} is not a member of workspace {workspace_id}"
                )
            body = parse_object(raw or b"") if method in ("POST", "PATCH") else None
            call = Call(conn, user_id, workspace_id, path, parts.query, body)
            reply = self.operations[route.operation](call)
        for event_id in call.fired:  # committed: now the worker may see it
            self.worker.enqueue(event_id)
        return reply

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in ROUTES:
            match = route.pattern.match(path)
            if match:
                if route.method == method:
                    return route, match.groupdict()
                allowed.append(route.method)
        if allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{method} not allowed here; use {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        raise not_found(f"no route {path}")


def database_fault(exc: psycopg.Error) -> ApiError:
    """A psycopg error that escaped validation, as the answer it deserves."""
    message = first_line(exc)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        # The application's role lacks a grant: the server is misconfigured, and the
        # database's own words are what an operator needs to see.
        return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"database refused {APP_ROLE}: {message}")
    if isinstance(exc, psycopg.DataError):  # a value PostgreSQL cannot store: still bad input
        return bad_request(f"the database rejected a value: {message}")
    if isinstance(exc, psycopg.IntegrityError):
        return ApiError(HTTPStatus.CONFLICT, f"conflict: {message}")
    if isinstance(exc, psycopg.OperationalError):
        return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"database unavailable: {message}")
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"database error: {message}")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], api: ReferenceApi) -> None:
        self.api = api
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, 40 ms a response on a kept-alive connection.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        headers: dict[str, str] = {}
        try:
            raw = self._read_body()
            status, reply = self.server.api.handle(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
        except ApiError as exc:
            status, reply, headers = exc.status, {"error": exc.message}, exc.headers
        except psycopg.Error as exc:
            fault = database_fault(exc)
            status, reply = fault.status, {"error": dsn.redact(fault.message)}
        except GateError as exc:  # the database cannot be reached (dsn.connect's one line)
            status, reply = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        except Exception as exc:
            log.exception("%s %s", self.command, self.path)
            status, reply = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {first_line(exc)}"}
        self._send(status, reply, headers)

    def __getattr__(self, name: str) -> Any:
        # http.server answers 501 to a method without a do_<METHOD> (TRACE, QUERY, anything):
        # every method is routed, so that one the contract does not declare is a 405 with Allow.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return None
        if not length_text.strip().isdigit():
            self.close_connection = True
            raise bad_request("Content-Length is not a number")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _send(self, status: HTTPStatus, reply: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(reply, default=_json_default).encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long) in JSON too."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._send(status, {"error": message or status.phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
