"""The playbook's smoke step (runbook section 5): ``smoke/`` run against the migrated database, leaving nothing.

The smoke tests are the suite's own (``smoke/test_*.py``), run by pytest in this process
against the reference API it serves on a free loopback port over the committed database
(acting as ``fluxolab_devmode``), with the database verified read-only and a loopback
webhook receiver. They act as a tenant of the run's own (``smoke_tenant``): two users and
workspaces named with the run id, never a customer's.

At the end, passed or failed, that tenant is removed with everything it made, in one
transaction, and the removal is proven: every business table holds exactly the rows it
held before the step (``Census``), and no registration points at the receiver. A step
whose clean-up cannot be proven says so, and the run exits 1. The ids the step consumed
stay consumed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from migration_gate.core import dsn
from migration_gate.core.contract import APP_ROLE
from migration_gate.core.errors import GateError
from migration_gate.core.signals import deferred_interrupts, named_interrupts
from migration_gate.operations.report import CheckRecord
from migration_gate.reference.smoke_tenant import Actors, Census, create_actors, remove_tenant, tenant_rows

if TYPE_CHECKING:
    import pytest

# pytest and the reference API are imported when the step runs (or by prewarm(), in the
# background during the backup): not at the playbook's start, where the window waits.

Progress = Callable[[str], None]
DETAILS_LIMIT = 4000


@dataclass
class SmokeResult:
    """Each smoke test's result, and what the step created, removed and proved."""

    records: list[CheckRecord] = field(default_factory=list)
    cleanup: dict[str, Any] = field(default_factory=dict)

    @property
    def proven(self) -> bool:
        return bool(self.cleanup.get("proven"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def why_smoke_cannot_run(conn: psycopg.Connection) -> str | None:
    """Why the smoke tests could not act as the application's role as this session's role, or None.

    The reference API they speak to runs ``SET ROLE fluxolab_devmode``: the role needs to be a
    superuser or to have been granted that role (with its SET option, from PostgreSQL 16). A
    managed service's database owner usually is neither. The line names the grant to give.
    """
    row = conn.execute(
        "SELECT current_user, quote_ident(current_user), r.oid IS NOT NULL, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
        " r.oid IS NOT NULL AND pg_has_role(current_user, r.oid,"
        " CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END)"
        " FROM (SELECT 1) one LEFT JOIN pg_roles r ON r.rolname = %s",
        (APP_ROLE,),
    ).fetchone()
    assert row is not None
    role, quoted, exists, superuser, can_set = (
        str(row[0]),
        str(row[1]),
        bool(row[2]),
        bool(row[3]),
        bool(row[4]),
    )
    if superuser or can_set:
        return None
    grant = f"GRANT {APP_ROLE} TO {quoted}"
    if not exists:
        return f"the role {APP_ROLE} does not exist, and {role} is no superuser: create it, then {grant}"
    return f"role {role} is no superuser and cannot SET ROLE {APP_ROLE}, which the reference API acts as: {grant}"


def _can_act_as_app(url: str) -> str | None:
    with dsn.connect(url) as conn:
        return why_smoke_cannot_run(conn)


class _Results:
    """A pytest plugin that keeps one record per test (its call, or the phase that failed or skipped)."""

    def __init__(self) -> None:
        self.records: dict[str, CheckRecord] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.rsplit("/", 1)[-1].replace(".py::", "::")
        if report.failed:
            message = str(getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or "failed")
            summary = message.strip().splitlines()[0] if message.strip() else "failed"
            details = report.longreprtext[-DETAILS_LIMIT:]
            self.records[name] = CheckRecord(name, "failed", summary, details)
        elif report.skipped and name not in self.records:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.records[name] = CheckRecord(name, "skipped", str(reason).removeprefix("Skipped: "))
        elif report.when == "call" and report.passed:
            self.records[name] = CheckRecord(name, "passed")


class _ToProgress(logging.Handler):
    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress(f"  reference API: {record.getMessage()}")


@contextmanager
def _api_log_to(progress: Progress) -> Iterator[None]:
    """The reference API's log (deliveries that fail on purpose, among others) as progress lines, not stray stderr."""
    logger = logging.getLogger("migration_gate")
    handler, propagate = _ToProgress(progress), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class SmokeStep:
    """The playbook's smoke step for the tests in ``smoke_dir``: it fills the result it is given.

    Filled as it goes, so that an interruption (KeyboardInterrupt, raised on) still leaves
    the clean-up's report in it.
    """

    def __init__(self, smoke_dir: Path) -> None:
        self.smoke_dir = smoke_dir

    def prewarm(self) -> threading.Thread:
        """Import what the step's pytest session needs, in the background, from the backup on.

        The window is then waiting on PostgreSQL; a second core spends the second or so
        that pytest's plugins and the contract's validators take to load, which the step
        would otherwise add to the window after the commit.
        """

        def warm() -> None:
            # The thread that talks to PostgreSQL waits for the GIL after every answer: hand it
            # back within half a millisecond rather than the default five while this runs.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, 0.0005))
            try:
                with contextlib.suppress(Exception):  # a courtesy: the step imports all this itself anyway
                    importlib.import_module("migration_gate.plugin.hooks")
                    importlib.import_module("migration_gate.reference.api")
                    importlib.import_module("migration_gate.plugin.contract").api_contract(
                        (self.smoke_dir / "openapi.yaml").resolve()
                    )
            finally:
                sys.setswitchinterval(interval)

        thread = threading.Thread(target=warm, name="smoke-prewarm", daemon=True)
        thread.start()
        return thread

    def __call__(self, url: str, progress: Progress, result: SmokeResult) -> None:
        why_not = _can_act_as_app(url)
        if why_not:
            progress(f"smoke tests skipped: {why_not}")
            result.records = [CheckRecord("smoke", "skipped", why_not)]
            result.cleanup = {"proven": True, "created": {}}
            return
        run_id = uuid.uuid4().hex[:10]
        receiver_url = f"http://127.0.0.1:{_free_port()}/"
        census = Census.in_background(url)  # its moment is now, before the tenant exists
        with dsn.connect(url) as conn:
            actors = create_actors(conn, run_id)
        progress(f"smoke tenant {run_id}: users {actors.user_id}, {actors.other_user_id}")
        try:
            with _api_log_to(progress):
                result.records = _serve_and_test(self.smoke_dir, url, actors, receiver_url, progress)
        finally:
            with deferred_interrupts(progress):  # the clean-up runs whole, whatever arrives
                result.cleanup = clean_up(url, run_id, actors, census, receiver_url, progress)


def _serve_and_test(
    smoke_dir: Path, url: str, actors: Actors, receiver_url: str, progress: Progress
) -> list[CheckRecord]:
    from migration_gate.reference.api import ApiSettings, ReferenceApi
    from migration_gate.reference.webhook_delivery import FAST_RETRIES

    try:
        api = ReferenceApi(ApiSettings(url, delivery=FAST_RETRIES)).start()
    except GateError as exc:
        return [
            CheckRecord("smoke", "failed", f"the reference API cannot serve the migrated database: {exc}")
        ]
    try:
        progress(f"smoke tests ({smoke_dir}) against the reference API at {api.url}")
        return _pytest(smoke_dir, url, api.url, actors, receiver_url, progress)
    finally:
        api.stop()


def _pytest(
    smoke_dir: Path, url: str, api_url: str, actors: Actors, receiver_url: str, progress: Progress
) -> list[CheckRecord]:
    """pytest on ``smoke_dir``, in this process: no interpreter to start, no imports to repeat."""
    import pytest

    results = _Results()
    args = [
        # Plugins the smoke tests do not use, that would import whole libraries (seconds each).
        str(smoke_dir.resolve()), "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
        "-p", "no:schemathesis", "-p", "no:anyio", "-p", "no:xdist", "-p", "no:xdist.looponfail",
        "-p", "no:pytest_postgresql", "-p", "migration_gate", "--capture=sys",
        "--rootdir", str(smoke_dir.resolve().parent), "--api-url", api_url, "--database-url", url,
        "--smoke-actors", str(actors), "--webhook-receiver-url", receiver_url,
    ]  # fmt: skip
    output = io.StringIO()
    with (
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
        named_interrupts() as signals,
    ):
        code = pytest.main(args, plugins=[results])
    if (
        code == pytest.ExitCode.INTERRUPTED
    ):  # pytest ended its session on the signal: the playbook must stop too
        raise KeyboardInterrupt(signals[-1] if signals else "SIGINT")
    records = list(results.records.values())
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED) or (
        code == pytest.ExitCode.TESTS_FAILED and not records
    ):
        last = [line for line in output.getvalue().splitlines() if line.strip()]
        summary = dsn.scrub(last[-1] if last else f"exit code {int(code)}", url)
        return [CheckRecord("smoke", "failed", f"pytest could not run the smoke tests: {summary}")]
    counts = {
        status: sum(1 for r in records if r.status == status) for status in ("passed", "failed", "skipped")
    }
    progress("smoke tests: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return records or [CheckRecord("smoke", "skipped", f"no smoke tests collected in {smoke_dir}")]


def clean_up(
    url: str,
    run_id: str,
    actors: Actors,
    census: Callable[[], Census],
    receiver_url: str,
    progress: Progress,
) -> dict[str, Any]:
    """Remove the run's tenant in one transaction, then prove every business table is as it was.

    Its seconds are kept (``seconds``): the counts scan every table, so this is the part of
    the step that grows with the data (the forecast scales it, and keeps the rest fixed).
    """
    started = time.perf_counter()
    report: dict[str, Any] = {"run_id": run_id, "users": actors.users, "workspaces": actors.workspaces}
    try:
        with dsn.connect(url) as conn:
            report["created"] = tenant_rows(conn, actors)
            report["removed"] = remove_tenant(conn, actors)
            problems = census().differences(conn)
            pointing = conn.execute(
                "SELECT count(*) FROM public.webhook_registrations WHERE target_url LIKE %s",
                (receiver_url.rstrip("/") + "%",),
            ).fetchone()
    except (GateError, psycopg.Error) as exc:
        report.update(
            proven=False,
            problems=[f"the clean-up could not run: {str(exc).strip().splitlines()[0]}"],
            seconds=round(time.perf_counter() - started, 3),
        )
        progress(f"smoke clean-up FAILED: {report['problems'][0]}")
        return report
    if pointing and pointing[0]:
        problems.append(
            f"{pointing[0]} webhook registration(s) still point at the smoke receiver {receiver_url}"
        )
    report.update(proven=not problems, problems=problems, seconds=round(time.perf_counter() - started, 3))
    removed = ", ".join(f"{table} {count}" for table, count in report["removed"].items() if count)
    progress(
        f"smoke clean-up: removed {removed or 'nothing'}; " + ("proven" if not problems else "NOT proven")
    )
    for problem in problems:
        progress(f"  {problem}")
    return report
