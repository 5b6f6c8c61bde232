"""Every smoke test can fail: a broken grant, a broken constraint or a buggy API each make one fail.

The smoke tests of ``smoke/`` are called here as plain functions against the reference
API on a private clone into which one fault was injected first; the untouched clone
passes them. The deployment mode (``--api-url``) is run for real, in a pytest subprocess.
"""

from __future__ import annotations

import importlib.util
import inspect
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import cache
from http import HTTPStatus
from types import ModuleType
from typing import Any

import port_for
import psycopg
import pytest
import requests

from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.smoke import (
    Actors,
    Deployment,
    WebhookReceiver,
    reference_deployment,
)
from migration_gate.plugin.smoke.deployment import REFERENCE_DELIVERY
from migration_gate.reference.handlers import Call
from migration_gate.reference.validation import ApiError, Reply
from migration_gate.reference.webhook_delivery import DeliveryPolicy, DeliveryWorker
from tests.conftest import CLI, CONTRACT, REPO, run_cli, run_pytest

StartSmoke = Callable[..., Deployment]


@cache
def smoke_module(name: str) -> ModuleType:
    """A module of smoke/ (a directory of tests, not a package), loaded under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"smoke_{name}", REPO / "smoke" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_smoke_test(module: str, test: str, deployment: Deployment, **fixtures: Any) -> None:
    function = getattr(smoke_module(module), test)
    available = {"deployment": deployment, **fixtures}
    function(**{name: available[name] for name in inspect.signature(function).parameters})


@pytest.fixture
def start_smoke(disposable_gate: CheckpointDatabases) -> Iterator[StartSmoke]:
    """Start the reference API on a clone, after running ``fault`` (SQL, formatted with the actors) there."""
    with ExitStack() as stack:

        def start(fault: str | None = None, policy: DeliveryPolicy = REFERENCE_DELIVERY) -> Deployment:
            def prepare(conn: psycopg.Connection, actors: Actors) -> None:
                if fault:
                    conn.execute(fault.format(**vars(actors)))

            return stack.enter_context(
                reference_deployment(disposable_gate, policy, prepare, contract=CONTRACT)
            )

        yield start


FLOWS = [
    (
        "test_credentials",
        "test_a_credential_is_created_and_edited_in_its_workspace_and_its_secret_never_returned",
    ),
    ("test_credentials", "test_a_credential_without_a_workspace_is_refused_by_the_database_itself"),
    ("test_activities", "test_an_action_records_an_activity_in_the_workspace_of_the_request"),
    ("test_activities", "test_the_activity_log_is_newest_first_and_limited"),
    ("test_webhooks", "test_a_fired_event_is_delivered_signed_and_processed_in_its_workspace"),
    ("test_webhooks", "test_an_undeliverable_event_is_retried_then_ends_failed"),
]


def test_the_untouched_clone_passes_every_flow(start_smoke: StartSmoke, receiver: WebhookReceiver) -> None:
    deployment = start_smoke()
    for module, test in FLOWS:
        run_smoke_test(module, test, deployment, receiver=receiver)


# -- A broken grant fails a smoke test with PostgreSQL's own words ---------------------

GRANT_FAULTS = [
    ("INSERT", "credentials", "test_credentials", FLOWS[0][1]),
    ("UPDATE", "credentials", "test_activities", "test_the_activity_log_is_newest_first_and_limited"),
    (
        "INSERT",
        "activities",
        "test_activities",
        "test_an_action_records_an_activity_in_the_workspace_of_the_request",
    ),
    ("SELECT", "workspace_members", "test_activities", "test_the_activity_log_is_newest_first_and_limited"),
    ("INSERT", "webhook_registrations", "test_webhooks", FLOWS[4][1]),
    ("INSERT", "webhook_events", "test_webhooks", FLOWS[4][1]),
    # The API can queue the event, but its worker cannot claim it for delivery.
    ("UPDATE", "webhook_events", "test_webhooks", FLOWS[4][1]),
]


@pytest.mark.parametrize(
    ("privilege", "table", "module", "test"),
    GRANT_FAULTS,
    ids=[f"{privilege}-{table}" for privilege, table, *_ in GRANT_FAULTS],
)
def test_a_revoked_grant_fails_a_smoke_test_with_the_databases_permission_error(
    start_smoke: StartSmoke,
    receiver: WebhookReceiver,
    privilege: str,
    table: str,
    module: str,
    test: str,
) -> None:
    # Nothing can be delivered here: give up polling soon (a fail-safe, not a timing check).
    deployment = start_smoke(f"REVOKE {privilege} ON public.{table} FROM fluxolab_devmode")
    deployment.delivery_deadline = 1.0
    with pytest.raises(AssertionError) as failure:
        run_smoke_test(module, test, deployment, receiver=receiver)
    assert f"permission denied for table {table}" in str(failure.value)


# -- Broken data rules -------------------------------------------------------------------


def test_a_nullable_credential_workspace_fails_the_not_null_smoke_test(start_smoke: StartSmoke) -> None:
    deployment = start_smoke("ALTER TABLE credentials ALTER COLUMN workspace_id DROP NOT NULL")
    with pytest.raises(AssertionError, match=r"was accepted: credentials\.workspace_id can be left NULL"):
        run_smoke_test("test_credentials", FLOWS[1][1], deployment)


def test_a_not_null_replaced_by_a_check_fails_the_not_null_smoke_test(start_smoke: StartSmoke) -> None:
    deployment = start_smoke(
        "ALTER TABLE credentials ALTER COLUMN workspace_id DROP NOT NULL;"
        " ALTER TABLE credentials ADD CONSTRAINT no_null_ws CHECK (workspace_id IS NOT NULL)"
    )
    with pytest.raises(AssertionError, match="but not on NOT NULL: 23514"):
        run_smoke_test("test_credentials", FLOWS[1][1], deployment)


def test_an_event_moved_to_another_workspace_fails_the_delivery_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver
) -> None:
    deployment = start_smoke(
        """
        CREATE FUNCTION smoke_fault_move_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'delivered' THEN NEW.workspace_id := {other_workspace_id}; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER smoke_fault BEFORE UPDATE ON webhook_events
            FOR EACH ROW EXECUTE FUNCTION smoke_fault_move_event();
        """
    )
    with pytest.raises(AssertionError, match="answered 404, expected 200"):
        run_smoke_test("test_webhooks", FLOWS[4][1], deployment, receiver=receiver)


# -- A buggy API -------------------------------------------------------------------------


def test_an_api_returning_the_secret_fails_the_credentials_smoke_test(start_smoke: StartSmoke) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    create = deployment.reference.operations["createCredential"]

    def leaky(call: Call) -> Reply:
        status, reply = create(call)
        return status, {**reply, "secret": call.json["secret"]}

    deployment.reference.operations["createCredential"] = leaky
    with pytest.raises(AssertionError, match="the secret came back"):
        run_smoke_test("test_credentials", FLOWS[0][1], deployment)


def test_a_response_that_drifts_from_the_contract_fails_the_smoke_test_naming_operation_and_field(
    start_smoke: StartSmoke,
) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    create = deployment.reference.operations["createCredential"]

    def stringly(call: Call) -> Reply:
        status, reply = create(call)
        return status, {**reply, "workspace_id": str(reply["workspace_id"])}

    deployment.reference.operations["createCredential"] = stringly
    with pytest.raises(
        AssertionError, match=r"^createCredential \(POST .*\) answered 201, .*workspace_id: '\d+' is not"
    ):
        run_smoke_test("test_credentials", FLOWS[0][1], deployment)


def test_an_activity_recorded_in_the_wrong_workspace_fails_the_activities_smoke_test(
    start_smoke: StartSmoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = start_smoke()
    elsewhere = deployment.actors.other_workspace_id

    def misplaced(call: Call, action: str) -> None:
        call.conn.execute(
            "INSERT INTO activities (user_id, workspace_id, action) VALUES (%s, %s, %s)",
            (call.user_id, elsewhere, action),
        )

    monkeypatch.setattr(Call, "record", misplaced)
    with pytest.raises(AssertionError, match="no activity in workspace"):
        run_smoke_test("test_activities", FLOWS[2][1], deployment)


def bad_input_check(deployment: Deployment, receiver: WebhookReceiver) -> Callable[[str], None]:
    """Run one case of smoke/test_bad_input.py, against objects made before any fault is injected."""
    module = smoke_module("test_bad_input")
    objects = module.create_objects(deployment, receiver)

    def check(case_id: str) -> None:
        case = next(case for case in module.CASES if case.id == case_id)
        assert deployment.database is not None, "the faults are proven where rows can be looked at"
        with deployment.database.connect() as watching:
            module.test_bad_input_is_turned_away_and_writes_nothing(deployment, objects, watching, case)

    return check


def test_an_api_that_writes_before_refusing_fails_the_bad_input_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver
) -> None:
    deployment = start_smoke()
    reference = deployment.reference
    assert reference is not None
    check = bad_input_check(deployment, receiver)
    check("400-missing-secret")  # passes while the API is right
    create = reference.operations["createCredential"]

    def sloppy(call: Call) -> Reply:
        with reference.connect() as early:  # its own transaction: committed whatever happens next
            early.execute(
                "INSERT INTO activities (user_id, workspace_id, action) VALUES (%s, %s, 'credential.attempted')",
                (call.user_id, call.workspace_id),
            )
        return create(call)

    reference.operations["createCredential"] = sloppy
    with pytest.raises(AssertionError, match=r"was refused with 400 but wrote: \{'activities'"):
        check("400-missing-secret")


def test_an_api_that_crashes_on_bad_input_fails_the_bad_input_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver
) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    check = bad_input_check(deployment, receiver)

    def careless(call: Call) -> Reply:
        return HTTPStatus.CREATED, {"secret_length": len(call.json["secret"])}

    deployment.reference.operations["createCredential"] = careless
    with pytest.raises(AssertionError, match="answered 500, expected 400"):
        check("400-missing-secret")


def test_an_api_answering_403_for_another_workspaces_object_fails_the_bad_input_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver
) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    check = bad_input_check(deployment, receiver)
    update = deployment.reference.operations["updateCredential"]

    def telling(call: Call) -> Reply:
        try:
            return update(call)
        except ApiError as refusal:
            if refusal.status == 404:  # leaks that the object exists, elsewhere
                raise ApiError(HTTPStatus.FORBIDDEN, refusal.message) from None
            raise

    deployment.reference.operations["updateCredential"] = telling
    with pytest.raises(AssertionError, match="answered 403, expected 404"):
        check("404-edit-credential-of-another-workspace")


def test_a_wrong_signature_fails_the_delivery_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    post = DeliveryWorker._post

    def signed_with_another_key(
        self: DeliveryWorker, event_id: int, event_type: str, payload: bytes, target_url: str, secret: str
    ) -> str | None:
        return post(self, event_id, event_type, payload, target_url, secret + "-wrong")

    monkeypatch.setattr(DeliveryWorker, "_post", signed_with_another_key)
    deployment = start_smoke()
    with pytest.raises(AssertionError, match="is not sha256=HMAC-SHA256"):
        run_smoke_test("test_webhooks", FLOWS[4][1], deployment, receiver=receiver)


def test_a_worker_ignoring_the_receivers_answer_fails_the_retry_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    post = DeliveryWorker._post

    def optimistic(self: DeliveryWorker, *args: Any) -> str | None:
        post(self, *args)
        return None

    monkeypatch.setattr(DeliveryWorker, "_post", optimistic)
    deployment = start_smoke()
    with pytest.raises(AssertionError, match=r"ended: .*'status': 'delivered'"):
        run_smoke_test("test_webhooks", FLOWS[5][1], deployment, receiver=receiver)


def test_a_worker_that_never_retries_fails_the_retry_smoke_test(
    start_smoke: StartSmoke, receiver: WebhookReceiver
) -> None:
    deployment = start_smoke(policy=DeliveryPolicy(attempts=1, backoff_seconds=0.01))
    with pytest.raises(AssertionError, match="failed without a retry"):
        run_smoke_test("test_webhooks", FLOWS[5][1], deployment, receiver=receiver)


# -- The same smoke tests against a deployment (--api-url), for real -------------------


def deployed(deployment: Deployment) -> tuple[str, ...]:
    """The options that point the smoke tests at a reference deployment and its database."""
    assert deployment.reference is not None
    return (
        "--api-url",
        deployment.reference.url,
        "--database-url",
        deployment.reference.settings.database_url,
    )


def test_a_deployment_passes_the_smoke_tests_verified_in_its_database(start_smoke: StartSmoke) -> None:
    deployment = start_smoke()
    receiver_url = f"http://127.0.0.1:{port_for.select_random()}/hooks"
    run = run_pytest(
        "smoke",
        *deployed(deployment),
        "--webhook-receiver-url",
        receiver_url,
        env={"FLUXOLAB_SMOKE_ACTORS": ""},  # users and workspaces found in the database
    )
    assert run.returncode == 0, run.output
    assert " failed" not in run.stdout and " error" not in run.stdout, run.output
    # The one write the gate may not do on a database it only reads is reported, not hidden.
    assert "1 skipped" in run.stdout and "only read by the gate" in run.stdout, run.output


def test_a_deployment_whose_response_drifts_from_the_contract_fails_the_smoke_tests(
    start_smoke: StartSmoke,
) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    get_event = deployment.reference.operations["getWebhookEvent"]

    def renamed_status(call: Call) -> Reply:
        status, reply = get_event(call)
        return status, {**reply, "status": {"delivered": "sent"}.get(reply["status"], reply["status"])}

    deployment.reference.operations["getWebhookEvent"] = renamed_status
    run = run_pytest(
        "smoke/test_webhooks.py",
        *deployed(deployment),
        "--webhook-receiver-url",
        f"http://127.0.0.1:{port_for.select_random()}/hooks",
        env={"FLUXOLAB_SMOKE_ACTORS": str(deployment.actors)},
    )
    assert run.returncode == 1, run.output
    assert (
        "getWebhookEvent (GET /workspaces/{workspace_id}/webhook-events/{event_id}) answered 200"
        in run.stdout
    )
    assert "status: 'sent' is not one of" in run.stdout, run.output


def test_a_revoked_grant_on_a_deployment_fails_with_the_databases_message(start_smoke: StartSmoke) -> None:
    deployment = start_smoke("REVOKE INSERT ON public.credentials FROM fluxolab_devmode")
    run = run_pytest(
        "smoke/test_credentials.py",
        *deployed(deployment),
        env={"FLUXOLAB_SMOKE_ACTORS": str(deployment.actors)},
    )
    assert run.returncode == 1, run.output
    assert "permission denied for table credentials" in run.stdout, run.output


def test_without_a_database_or_a_receiver_the_http_checks_run_and_the_rest_is_skipped_with_reasons(
    start_smoke: StartSmoke,
) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    env = {"FLUXOLAB_SMOKE_ACTORS": "", "FLUXOLAB_DATABASE_URL": ""}
    files = ("smoke/test_credentials.py", "smoke/test_webhooks.py")
    actors = ("--smoke-actors", str(deployment.actors))  # the flag; the environment variable above
    run = run_pytest(*files, "--api-url", deployment.reference.url, *actors, env=env)
    assert run.returncode == 0, run.output
    # Every test checked its HTTP answers, then skipped only the part that reads the database.
    assert "HTTP answers checked; database verification skipped: no --database-url" in run.stdout, run.output
    assert " failed" not in run.stdout, run.output
    assert "pass --webhook-receiver-url" in run.stdout, run.output
    without_actors = run_pytest(files[0], "--api-url", deployment.reference.url, env=env)
    assert without_actors.returncode == 0, without_actors.output
    assert "FLUXOLAB_SMOKE_ACTORS=USER:WORKSPACE" in without_actors.stdout, without_actors.output


def test_the_reference_api_is_not_started_on_a_database_the_gate_only_reads(start_smoke: StartSmoke) -> None:
    deployment = start_smoke()
    assert deployment.reference is not None
    run = run_pytest(
        "smoke/test_credentials.py", "--database-url", deployment.reference.settings.database_url
    )
    assert run.returncode == 0, run.output
    assert "the reference API would write to --database-url" in run.stdout, run.output


# -- serve-api ------------------------------------------------------------------------------


def test_serve_api_with_an_unreachable_database_says_so_in_one_line_without_the_password() -> None:
    run = run_cli("serve-api", "--database", "postgresql://smoke:hunter2@127.0.0.1:1/nowhere", "--port", "0")
    assert run.returncode == 2, run.output
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1, run.output
    assert "cannot" in lines[0] and "hunter2" not in run.output and "Traceback" not in run.output


def test_serve_api_refuses_a_database_not_migrated_through_008(fresh_database: str) -> None:
    run = run_cli("serve-api", "--database", fresh_database, "--port", "0")
    assert run.returncode == 2, run.output
    assert len(run.output.strip().splitlines()) == 1, run.output
    assert "Traceback" not in run.output


def test_serve_api_serves_the_contract_and_stops_cleanly_on_ctrl_c(clone: Callable[[str], str]) -> None:
    url = clone("after_008")
    server = subprocess.Popen(
        [*CLI, "serve-api", "--database", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert banner.startswith("serving the reference API on http://127.0.0.1:"), banner
        base = banner.split(" on ")[1].split(" as ")[0]
        answer = requests.get(f"{base}/workspaces/1/activities", timeout=10)
        assert answer.status_code == 401 and "error" in answer.json()
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--smoke-delivery-timeout",
            "soon",
            "--smoke-delivery-timeout 'soon': expected a number of seconds above 0",
        ),
        (
            "--smoke-delivery-timeout",
            "0",
            "--smoke-delivery-timeout '0': expected a number of seconds above 0",
        ),
        (
            "--smoke-delivery-timeout",
            "inf",
            "--smoke-delivery-timeout 'inf': expected a number of seconds above 0",
        ),
        ("--smoke-actors", "7:8", "--smoke-actors '7:8': expected USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE"),
        (
            "--smoke-actors",
            "a:1,b:2",
            "--smoke-actors 'a:1,b:2': expected USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE",
        ),
    ],
)
def test_a_bad_smoke_setting_is_refused_in_one_line_before_anything_runs(
    option: str, value: str, message: str
) -> None:
    run = run_pytest("smoke/test_credentials.py", "--api-url", "http://127.0.0.1:9/", option, value)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.output
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert errors == [f"ERROR: {message}"], run.output
    assert "Traceback" not in run.output


def test_the_delivery_timeout_setting_bounds_the_wait_for_a_delivery(start_smoke: StartSmoke) -> None:
    """A deployment that cannot record a delivery: with --smoke-delivery-timeout 1 the wait ends after 1 s."""
    deployment = start_smoke("REVOKE UPDATE ON public.webhook_events FROM fluxolab_devmode")
    run = run_pytest(
        "smoke/test_webhooks.py",
        *deployed(deployment),
        "--webhook-receiver-url",
        f"http://127.0.0.1:{port_for.select_random()}/hooks",
        "--smoke-delivery-timeout",
        "1",
        env={"FLUXOLAB_SMOKE_ACTORS": str(deployment.actors)},
    )
    assert run.returncode == 1, run.output
    assert "delivered or failed: not reached within 1 s" in run.stdout, run.output
