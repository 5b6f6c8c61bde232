"""Schemathesis against the reference API: the contract as an independent client sees it.

Every operation of ``smoke/openapi.yaml``, with every check Schemathesis has, against the
reference API on a private clone of the gate database; derandomized and bounded, so that
two runs send the same requests. Nothing here can reach a deployment: ``--api-url`` is
refused before anything runs (tests/conftest.py), and the only webhook ever fired is the
seeded registration that points at this module's loopback receiver (a guard on the
worker refuses, and fails the test on, any other target).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from psycopg.types.json import Jsonb
from schemathesis.checks import CHECKS, load_all_checks

from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.smoke import Actors, Deployment, WebhookReceiver, reference_deployment
from migration_gate.reference.webhook_delivery import DeliveryWorker
from tests.conftest import CONTRACT, run_pytest

pytestmark = pytest.mark.fuzzes_the_api

# The id of every row seeded for the run (a user, their workspace, a credential, a loopback
# webhook and one event of it): far above what the clone's sequences hand out, and known
# when the module is collected, which the pins in the contract need.
SEEDED_ID = 8_000_000_001
FUZZ_EVENT = "migration-gate.fuzz"
RECEIVER_PATH = "/fuzz"
BEARER = "migration-gate-fuzz"  # the reference API ignores it; set, so that ignored_auth probes both schemes
# With the coverage phase, about 500 requests; the outside runs below add some 1,200.
EXAMPLES_PER_OPERATION = 25
# Schemathesis' own command line, as a user runs it from outside, with several seeds: seeds 3,
# 7 and 11 once generated `http://[c]/`, a target_url no HTTP client can parse. The examples and
# coverage phases do not depend on the seed: they run with the first seed only, the generated
# phases with each.
OUTSIDE_SEEDS = (3, 7, 11)
EVERY_PHASE, SEEDED_PHASES = "examples,coverage,fuzzing,stateful", "fuzzing,stateful"
OUTSIDE_EXAMPLES = 15


def fuzzing_contract() -> dict[str, Any]:
    """The contract with the state it cannot name pinned: the seeded workspace, the loopback webhook.

    Pinned with ``enum`` in a copy (Schemathesis's parameter overrides leave some coverage
    cases marked negative after replacing their value). The seeded credential and event are
    examples, not pins: an id of another object of the workspace must stay a valid request.
    """
    raw = copy.deepcopy(yaml.safe_load(CONTRACT.read_text(encoding="utf-8")))
    raw["components"]["parameters"]["WorkspaceId"]["schema"] = {"type": "integer", "enum": [SEEDED_ID]}
    paths = raw["paths"]
    fire = paths["/workspaces/{workspace_id}/webhooks/{webhook_id}/events"]
    # Events are fired at the loopback registration only, never at a generated target_url.
    _parameter(fire, "webhook_id")["schema"] = {"type": "integer", "enum": [SEEDED_ID]}
    body = fire["post"]["requestBody"]["content"]["application/json"]["schema"]
    body["properties"]["event_type"] = {"type": "string", "enum": [FUZZ_EVENT]}  # what it subscribes to
    _parameter(paths["/workspaces/{workspace_id}/credentials/{credential_id}"], "credential_id")[
        "example"
    ] = SEEDED_ID
    _parameter(paths["/workspaces/{workspace_id}/webhook-events/{event_id}"], "event_id")["example"] = (
        SEEDED_ID
    )
    return raw


def _parameter(path_item: dict[str, Any], name: str) -> dict[str, Any]:
    return next(parameter for parameter in path_item["parameters"] if parameter.get("name") == name)


CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"userId": {"api_key": str(SEEDED_ID)}, "bearer": {"bearer": BEARER}}},
        "output": {"sanitization": {"enabled": False}},  # a failure's curl line shows the headers sent
    }
)
schema = schemathesis.openapi.from_dict(fuzzing_contract(), config=CONFIG)


def seed(conn: psycopg.Connection, receiver: WebhookReceiver) -> None:
    """The acting user, owner of their workspace, with a credential, the loopback webhook and one delivered event."""
    row = {"id": SEEDED_ID, "target": receiver.url(RECEIVER_PATH), "event": FUZZ_EVENT, "body": Jsonb({})}
    with conn.transaction():
        for statement in (
            "INSERT INTO users (id, email, name) VALUES (%(id)s, 'fuzz@migration-gate.invalid', 'migration-gate fuzz')",
            "INSERT INTO workspaces (id, owner_id, name) VALUES (%(id)s, %(id)s, 'migration-gate fuzz')",
            "INSERT INTO workspace_members (workspace_id, user_id, profile_id)"
            " SELECT %(id)s, %(id)s, id FROM profiles WHERE code = 'owner'",
            "UPDATE users SET default_workspace_id = %(id)s WHERE id = %(id)s",
            "INSERT INTO credentials (id, user_id, workspace_id, name, provider, secret)"
            " VALUES (%(id)s, %(id)s, %(id)s, 'fuzz', 'fuzz', 'fuzz')",
            "INSERT INTO webhook_registrations (id, user_id, workspace_id, target_url, event_types, secret)"
            " VALUES (%(id)s, %(id)s, %(id)s, %(target)s, ARRAY[%(event)s], 'fuzz')",
            "INSERT INTO webhook_events (id, registration_id, workspace_id, event_type, body, status, attempts,"
            " processed_at) VALUES (%(id)s, %(id)s, %(id)s, %(event)s, %(body)s, 'delivered', 1, now())",
        ):
            conn.execute(statement, row)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def deployment(disposable_gate: CheckpointDatabases, receiver: WebhookReceiver) -> Iterator[Deployment]:
    """The contract is fuzzed on a clone of the disposable gate database, never on another one."""

    def prepare(conn: psycopg.Connection, actors: Actors) -> None:
        seed(conn, receiver)

    with reference_deployment(disposable_gate, prepare=prepare, contract=CONTRACT) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def stray_deliveries(deployment: Deployment, receiver: WebhookReceiver) -> list[str]:
    """Target URLs other than the receiver's that the worker was asked to deliver to: refused, and listed."""
    assert deployment.reference is not None
    worker = deployment.reference.worker
    stray: list[str] = []
    post = DeliveryWorker._post

    def loopback_only(
        event_id: int, event_type: str, payload: bytes, target_url: str, secret: str
    ) -> str | None:
        if not target_url.startswith(receiver.url("/")):
            stray.append(target_url)
            return "refused by the test: not its loopback receiver"
        return post(worker, event_id, event_type, payload, target_url, secret)

    worker._post = loopback_only  # type: ignore[method-assign]
    return stray


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_passes_every_check(
    case: schemathesis.Case, deployment: Deployment, stray_deliveries: list[str]
) -> None:
    case.call_and_validate(base_url=deployment.api.base_url)
    assert stray_deliveries == [], f"the worker was asked to deliver elsewhere: {stray_deliveries[:5]}"


@pytest.mark.parametrize("seed", OUTSIDE_SEEDS)
def test_schemathesis_from_outside_finds_nothing(
    deployment: Deployment, stray_deliveries: list[str], tmp_path: Path, seed: int
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        yaml.safe_dump(fuzzing_contract(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.userId]\napi_key = "{SEEDED_ID}"\n[auth.openapi.bearer]\nbearer = "{BEARER}"\n'
        # Inference would feed a response's integer id into the X-User-Id header.
        "[phases.stateful.inference]\nalgorithms = []\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            str(contract),
            "--url",
            deployment.api.base_url,
            "--checks",
            "all",
            "--seed",
            str(seed),
            "--max-examples",
            str(OUTSIDE_EXAMPLES),
            "--phases",
            EVERY_PHASE if seed == OUTSIDE_SEEDS[0] else SEEDED_PHASES,
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "passed" in done.stdout and stray_deliveries == []
    if seed != OUTSIDE_SEEDS[0]:
        assert "Coverage (in" not in done.stdout and "Fuzzing (in" in done.stdout, done.stdout[-2000:]


def test_every_check_of_schemathesis_is_enabled() -> None:
    load_all_checks()
    operation = schema.find_operation_by_id("createCredential")
    config = schema.config.checks_config_for(operation=operation, phase=None)
    assert [name for name in CHECKS.get_all_names() if not config.get_by_name(name=name).enabled] == []


def test_every_operation_of_the_contract_is_fuzzed() -> None:
    fuzzed = {result.ok().definition.raw["operationId"] for result in schema.get_all_operations()}
    declared = {
        item[method]["operationId"]
        for item in yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))["paths"].values()
        for method in item
        if isinstance(item[method], dict) and "operationId" in item[method]
    }
    assert fuzzed == declared and len(declared) == 6


def test_fuzzing_is_refused_in_one_line_against_a_deployment() -> None:
    deployment = "http://127.0.0.1:9/"
    done = run_pytest(str(Path(__file__)), "--api-url", deployment, timeout=120)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        "ERROR: contract fuzzing never runs against a deployment"
    )
    assert deployment in errors[0] and "passed" not in done.stdout and "Traceback" not in done.stderr
