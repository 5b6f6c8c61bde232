"""Wiring only: which API the smoke tests speak to, where they check rows, where webhooks land."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.smoke import (
    Deployment,
    SmokeUnavailable,
    WebhookReceiver,
    existing_deployment,
    open_receiver,
    reference_deployment,
    smoke_rows,
)


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest, gate_config: GateConfig) -> Iterator[Deployment]:
    """--api-url: that deployment. Otherwise the reference API on a private clone of the last checkpoint."""
    if gate_config.api_url is not None:
        gate = request.getfixturevalue("gate") if gate_config.database_url is not None else None
        try:
            with existing_deployment(gate_config, gate, report=smoke_rows(request.config)) as target:
                yield target
        except SmokeUnavailable as exc:
            pytest.skip(str(exc))
    elif gate_config.database_url is not None:
        pytest.skip(
            "the reference API would write to --database-url, which the gate only reads: "
            "pass --api-url to smoke-test a deployment of that database"
        )
    else:
        gate = request.getfixturevalue("gate")
        assert isinstance(gate, CheckpointDatabases)
        with reference_deployment(gate, delivery_deadline=gate_config.smoke_delivery_timeout) as target:
            yield target


@pytest.fixture(scope="session")
def receiver(gate_config: GateConfig) -> Iterator[WebhookReceiver]:
    """The loopback receiver webhooks are delivered to; a deployment must be told how to reach it."""
    public_url = None
    if gate_config.api_url is not None:
        if gate_config.webhook_receiver_url is None:
            pytest.skip(
                "delivery not checked: the deployment cannot reach a receiver on this machine; "
                "pass --webhook-receiver-url URL (where it reaches port P of 127.0.0.1 here)"
            )
        public_url = gate_config.webhook_receiver_url
    try:
        receiver = open_receiver(public_url)
    except SmokeUnavailable as exc:
        pytest.skip(str(exc))
    with receiver:
        yield receiver
