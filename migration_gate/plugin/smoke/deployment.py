"""The deployment under test: the reference API on a private clone, or a real one at --api-url.

The actors never are a customer's: with ``--database-url`` the session creates two users
and workspaces of its own (``smoke_tenant``) and removes them, with everything they
made, at its end; with explicit ``--smoke-actors`` (dedicated users, say) every row the
session created is listed at the end, by id, with the SQL that removes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from migration_gate.core import dsn, settings
from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.contract import api_contract
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from migration_gate.plugin.smoke.client import ApiClient
from migration_gate.plugin.smoke.database import SmokeDatabase
from migration_gate.plugin.smoke.rows import CreatedRows
from migration_gate.reference.api import ApiSettings, ReferenceApi
from migration_gate.reference.smoke_tenant import Actors, create_actors, remove_tenant, tenant_rows
from migration_gate.reference.webhook_delivery import FAST_RETRIES, DeliveryPolicy

ACTORS_ENV = settings.env("smoke_actors")
REFERENCE_DELIVERY = FAST_RETRIES
DELIVERY_DEADLINE = float(settings.default("smoke_delivery_timeout"))


class SmokeUnavailable(Exception):
    """The smoke tests cannot run in this configuration; the message says why (a skip reason)."""


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
    run_id = uuid.uuid4().hex[:10]
    with checkpoints.clone(checkpoints.last, "smoke") as url:
        clone = str(dsn.parse(url)["dbname"])
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
