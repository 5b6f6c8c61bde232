"""What the smoke tests (runbook section 5, ``smoke/``; docs/contract.md §7) stand on.

The deployment under test: by default the reference API (``migration_gate.reference``)
on a private clone of the migrated disposable database; with ``--api-url`` a real
deployment, checked in its database through ``--database-url`` (read-only) when given.
Also the HTTP client (which holds every response to the contract, ``plugin/contract.py``), the webhook receiver the tests run on loopback, the two actors the
tests act as, and fingerprints of what a workspace holds, to prove a refused request
wrote nothing.

The actors never are a customer's: with ``--database-url`` the session creates two users
and workspaces of its own (``smoke_tenant``) and removes them, with everything they
made, at its end; with explicit ``--smoke-actors`` (dedicated users, say) every row the
session created is listed at the end, by id, with the SQL that removes it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from migration_gate.core import dsn, settings
from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.contract import ApiContract, api_contract
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.reference.api import SHUTDOWN_POLL_SECONDS, ApiSettings, ReferenceApi
from migration_gate.reference.smoke_tenant import Actors, create_actors, remove_tenant, tenant_rows
from migration_gate.reference.webhook_delivery import FAST_RETRIES, DeliveryPolicy

ACTORS_ENV = settings.env("smoke_actors")
NO_SUCH_ID = 2**63 - 1  # a valid bigint no row will ever have in a smoke run
REFERENCE_DELIVERY = FAST_RETRIES
REQUEST_TIMEOUT = 15.0
DELIVERY_DEADLINE = float(settings.default("smoke_delivery_timeout"))

T = TypeVar("T")


class SmokeUnavailable(Exception):
    """The smoke tests cannot run in this configuration; the message says why (a skip reason)."""


# -- Who acts: two users of the run's own (docs/contract.md §7) -----------------------------

# -- The database, as the checks see it -----------------------------------------------


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


# -- Talking to the API ---------------------------------------------------------------

_NO_JSON = object()


class ApiClient:
    """requests against the deployment: X-User-Id as the acting user, the bearer token if any.

    Every response is checked against the contract before the caller sees it.
    """

    def __init__(self, base_url: str, contract: ApiContract, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.contract = contract
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def request(
        self,
        method: str,
        path: str,
        *,
        user: int | str | None,
        json_body: Any = _NO_JSON,
        raw: bytes | None = None,
    ) -> requests.Response:
        __tracebackhide__ = True  # a contract violation points at the test's request
        headers = {"Content-Type": "application/json"}
        if user is not None:
            headers["X-User-Id"] = str(user)
        data = raw if json_body is _NO_JSON else json.dumps(json_body).encode("utf-8")
        response = self.http.request(
            method, self.base_url + path, data=data, headers=headers, timeout=REQUEST_TIMEOUT
        )
        self.contract.check(response, self.base_url)
        return response

    def close(self) -> None:
        self.http.close()


def expect(response: requests.Response, status: int) -> Any:
    """The JSON body of a response that must have ``status``; else a failure quoting the answer."""
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {urlsplit(request.url or '').path} answered {response.status_code},"
        f" expected {status}: {response.text[:1000]}"
    )
    try:
        return response.json()
    except ValueError:
        raise AssertionError(
            f"{request.method} {request.url} answered {status} with a body that is not JSON: "
            f"{response.text[:300]!r}"
        ) from None


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float) -> T:
    """Poll ``probe`` until ``done`` (fast at first, then every 50 ms), or fail saying what it saw."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s; last seen: {value!r}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


# -- The receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A loopback HTTP server that records every POST; paths under /fail answer 503."""

    def __init__(self, port: int = 0, public_url: str | None = None) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no delayed-ACK wait between a reply's header and its body

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                path = self.path.removeprefix(receiver.prefix)  # relative to the public URL
                with receiver._lock:
                    receiver._deliveries.append(Delivery(path, headers, body))
                self.send_response(503 if path.startswith("/fail") else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),  # the default half second is added to every window
            name="webhook-receiver",
            daemon=True,
        )
        self.base_url = (public_url or f"http://127.0.0.1:{self._server.server_port}").rstrip("/")
        self.prefix = urlsplit(self.base_url).path

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def deliveries_to(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if d.path == path]


def open_receiver(public_url: str | None) -> WebhookReceiver:
    """A receiver on a free loopback port; or, for a deployment that reaches it at ``public_url``
    (the same host, or a tunnel), on 127.0.0.1 at that URL's port."""
    if public_url is None:
        return WebhookReceiver()
    port = urlsplit(public_url).port
    if port is None:
        raise SmokeUnavailable(
            f"--webhook-receiver-url {public_url} names no port: the test's receiver listens on "
            "127.0.0.1 at that URL's port, so give one explicitly"
        )
    return WebhookReceiver(port, public_url)


# -- The deployment under test ---------------------------------------------------------


@dataclass
class Deployment:
    """The API the smoke tests speak to, the actors they act as, and where they verify rows."""

    api: ApiClient
    actors: Actors
    database: SmokeDatabase | None
    label: str
    reference: ReferenceApi | None = None  # set when the reference API is what is tested
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    delivery_deadline: float = DELIVERY_DEADLINE  # seconds to wait for a delivery to settle

    @property
    def delivery(self) -> DeliveryPolicy | None:
        """The retry policy when it is known (the reference API's), for exact attempt counts."""
        return self.reference.worker.policy if self.reference else None

    def db(self) -> SmokeDatabase:
        """The database to verify rows in, or skip what follows with the reason."""
        if self.database is None:
            pytest.skip(
                f"HTTP answers checked; database verification skipped: no --database-url for {self.label}"
            )
        return self.database

    def writable_db(self) -> SmokeDatabase:
        database = self.db()
        if not database.writable:
            pytest.skip(
                f"{database.label} is only read by the gate: a write refused by the database is proven on "
                "the disposable gate, and the constraint itself by the checks"
            )
        return database

    def name(self, what: str) -> str:
        """A name that says which smoke run created a row, so leftovers on a deployment can be found."""
        return f"migration-gate smoke {self.run_id} {what}"


@contextmanager
def reference_deployment(
    checkpoints: CheckpointDatabases,
    policy: DeliveryPolicy = REFERENCE_DELIVERY,
    prepare: Callable[[psycopg.Connection, Actors], None] | None = None,
    delivery_deadline: float = DELIVERY_DEADLINE,
    *,
    contract: Path,
) -> Iterator[Deployment]:
    """The reference API on a private clone of the database after the last migration, dropped afterwards.

    ``prepare`` runs on the clone as superuser before the API starts (to inject a fault);
    every response is checked against ``contract`` (the smoke tests' openapi.yaml).
    """
    url = checkpoints.clone(checkpoints.last)
    clone = str(dsn.parse(url)["dbname"])
    run_id = uuid.uuid4().hex[:10]
    try:
        with dsn.connect(url) as conn:
            actors = create_actors(conn, run_id)
            if prepare is not None:
                prepare(conn, actors)
        api = ReferenceApi(ApiSettings(url, delivery=policy)).start()
        client = ApiClient(api.url, api_contract(contract))
        try:
            database = SmokeDatabase(lambda: dsn.connect(url), writable=True, label=f"clone {clone}")
            yield Deployment(
                client,
                actors,
                database,
                f"reference API {api.url} on {clone}",
                api,
                run_id,
                delivery_deadline,
            )
        finally:
            client.close()
            api.stop()
    finally:
        checkpoints.server.drop_database(clone)


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


@contextmanager
def existing_deployment(
    config: GateConfig,
    gate: GateDatabases | None,
    *,
    contract: Path,
    report: Callable[[list[str]], None] = lambda lines: None,
) -> Iterator[Deployment]:
    """A real deployment at --api-url, its responses checked against ``contract``; rows verified
    read-only in --database-url when given.

    With --database-url and no --smoke-actors, the run's own tenant is created there (as the
    role of that URL) and removed at the end, passed or failed; with explicit actors, the
    rows created are reported by id with the SQL to remove them.
    """
    assert config.api_url is not None
    database = None
    if gate is not None:
        checkpoint = gate.last
        database = SmokeDatabase(
            lambda: gate.connect(checkpoint), writable=False, label=dsn.describe(gate.url(checkpoint))
        )
    run_id = uuid.uuid4().hex[:10]
    own_tenant = config.smoke_actors is None
    if not own_tenant:
        assert config.smoke_actors is not None
        actors = Actors(*config.smoke_actors)
    elif config.database_url is not None:
        # The one write of a read-only run: the tenant the smoke tests act as, removed at the end.
        with dsn.connect(config.database_url) as conn:
            actors = create_actors(conn, run_id)
    else:
        raise SmokeUnavailable(
            f"--api-url without --database-url: name the users and workspaces to act as with "
            f"--smoke-actors or {ACTORS_ENV}=USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE"
        )
    client = ApiClient(config.api_url, api_contract(contract), config.api_token)
    created = CreatedRows()
    client.http.hooks["response"].append(created.observe)
    try:
        yield Deployment(
            client,
            actors,
            database,
            f"deployment {config.api_url}",
            run_id=run_id,
            delivery_deadline=config.smoke_delivery_timeout,
        )
    finally:
        client.close()
        if own_tenant and config.database_url is not None:
            with dsn.connect(config.database_url) as conn:
                made = tenant_rows(conn, actors)
                removed = remove_tenant(conn, actors)
            report(
                [
                    f"smoke tenant {run_id} (users {actors.user_id}, {actors.other_user_id}) removed from {dsn.describe(config.database_url)}:"
                ]
                + [f"  {table}: {made[table]} created, {removed[table]} removed" for table in made]
            )
        else:
            report(
                [f"rows the smoke tests created on {config.api_url} as {actors} (remove them with):"]
                + [f"  {statement}" for statement in created.removal_sql(actors)]
            )
