"""The reference implementation of ``smoke/openapi.yaml``, served by ``migration-gate serve-api``.

It exists so that the smoke tests of runbook section 5 run end to end against a migrated
database. Every connection does ``SET ROLE fluxolab_devmode`` first, so the API can only
do what the application's role is granted: a missing grant shows up as the database's
own permission error in the response. Connections come from a pool (``pool``), each set
to that role when it is opened; each request is one transaction on one of them: its
write and the activity recording it commit together, and a refused request writes nothing.
What a request may be is ``validation``; what each operation does is ``handlers``; the
wire is ``http``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

import psycopg

from migration_gate.core import dsn
from migration_gate.core.contract import APP_ROLE, WORKSPACE_SCOPED_TABLES
from migration_gate.core.errors import UsageError
from migration_gate.core.text import first_line
from migration_gate.reference.handlers import (
    ROUTES,
    Call,
    Route,
    create_credential,
    create_webhook,
    fire_event,
    get_event,
    list_activities,
    update_credential,
)
from migration_gate.reference.http import Handler, HttpServer
from migration_gate.reference.pool import app_pool, connect_as_app
from migration_gate.reference.validation import BIGINT_MAX, ApiError, Reply, not_found, parse_id, parse_object
from migration_gate.reference.webhook_delivery import DeliveryPolicy, DeliveryWorker

SHUTDOWN_POLL_SECONDS = (
    0.05  # how soon serve_forever notices stop(); the default half second adds up in tests
)


@dataclass(frozen=True)
class ApiSettings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 0
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    pool_size: int = 8  # connections at most: the requests in flight and the delivery worker share them


class ReferenceApi:
    """The HTTP server, its delivery worker, and the database they act on as fluxolab_devmode."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.pool = app_pool(settings.database_url, settings.pool_size)
        self.worker = DeliveryWorker(self.connect, settings.delivery)
        self.operations: dict[str, Callable[[Call], Reply]] = {
            "createCredential": create_credential,
            "updateCredential": update_credential,
            "createWebhook": create_webhook,
            "fireWebhookEvent": fire_event,
            "getWebhookEvent": lambda call: get_event(call, self.worker.last_errors),
            "listActivities": list_activities,
        }
        self._server: HttpServer | None = None
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
            self._server = HttpServer(address, Handler, self)
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
