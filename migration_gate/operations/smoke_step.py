"""The playbook's smoke step (runbook section 5): ``smoke/`` run by pytest against the migrated database.

The smoke tests are the suite's own (``smoke/test_*.py``); the playbook runs them as a
person would, in a pytest subprocess, against the reference API it serves on a free
loopback port over the committed database (acting as ``fluxolab_devmode``), with the
database verified read-only. Each test becomes one line of the change record, read back
from pytest's JUnit XML. The database URL travels in the environment, never on a
command line.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from migration_gate.core import dsn
from migration_gate.core.errors import GateError
from migration_gate.operations.report import CheckRecord
from migration_gate.reference.api import APP_ROLE, ApiSettings, ReferenceApi
from migration_gate.reference.webhook_delivery import FAST_RETRIES

Progress = Callable[[str], None]

TIMEOUT_SECONDS = 900
DETAILS_LIMIT = 4000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _can_act_as_app(url: str) -> str | None:
    """Why the smoke tests cannot act as the application's role here, or None."""
    with dsn.connect(url) as conn:
        row = conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (APP_ROLE,)).fetchone()
    if row and row[0]:
        return None
    return (
        f"the playbook's role cannot SET ROLE {APP_ROLE}, which the reference API acts as: "
        f"GRANT {APP_ROLE} TO the migrating role to smoke-test from the playbook"
    )


def results(junit_xml: Path) -> list[CheckRecord]:
    """One record per test case of a JUnit XML report."""
    records = []
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        module = (case.get("classname") or "").rsplit(".", 1)[-1]
        name = f"{module}::{case.get('name')}" if module else str(case.get("name"))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            message = (problem.get("message") or "").strip().splitlines()
            details = (problem.text or "").strip()
            records.append(
                CheckRecord(name, "failed", message[0] if message else "failed", details[-DETAILS_LIMIT:])
            )
        elif skipped is not None:
            records.append(CheckRecord(name, "skipped", (skipped.get("message") or "").strip()))
        else:
            records.append(CheckRecord(name, "passed"))
    return records


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


def smoke_runner(smoke_dir: Path) -> Callable[[str, Progress], list[CheckRecord]]:
    """The playbook's smoke step for the tests in ``smoke_dir``."""

    def run(url: str, progress: Progress) -> list[CheckRecord]:
        why_not = _can_act_as_app(url)
        if why_not:
            progress(f"smoke tests skipped: {why_not}")
            return [CheckRecord("smoke", "skipped", why_not)]
        with _api_log_to(progress):
            try:
                api = ReferenceApi(ApiSettings(url, delivery=FAST_RETRIES)).start()
            except GateError as exc:
                return [
                    CheckRecord(
                        "smoke", "failed", f"the reference API cannot serve the migrated database: {exc}"
                    )
                ]
            try:
                progress(f"smoke tests ({smoke_dir}) against the reference API at {api.url}")
                return _pytest(smoke_dir, url, api.url, progress)
            finally:
                api.stop()

    return run


def _pytest(smoke_dir: Path, url: str, api_url: str, progress: Progress) -> list[CheckRecord]:
    with tempfile.TemporaryDirectory(prefix="migration-gate-smoke-") as tmp:
        junit = Path(tmp) / "smoke.xml"
        # Not a worker of whatever pytest run (xdist) may have started the playbook.
        inherited = ("FLUXOLAB_", "PYTEST_XDIST_", "PYTEST_CURRENT_TEST")
        env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
        env.update(FLUXOLAB_DATABASE_URL=url, FLUXOLAB_API_URL=api_url)
        # The gate's plugin by name too: smoke tests kept outside this repository have no conftest.py loading it.
        command = [
            sys.executable, "-m", "pytest", str(smoke_dir.resolve()), "-q", "-p", "no:cacheprovider",
            "-p", "migration_gate",
            f"--junitxml={junit}", "--webhook-receiver-url", f"http://127.0.0.1:{_free_port()}/",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, cwd=smoke_dir.resolve().parent, env=env, capture_output=True, text=True,
                timeout=TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [CheckRecord("smoke", "failed", f"the smoke tests did not finish in {TIMEOUT_SECONDS} s")]
        records = results(junit) if junit.exists() else []
        if done.returncode not in (0, 1, 5) or (done.returncode == 1 and not records):
            last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            summary = dsn.scrub(last[-1] if last else f"exit code {done.returncode}", url)
            return [CheckRecord("smoke", "failed", f"pytest could not run the smoke tests: {summary}")]
    counts = {
        status: sum(1 for r in records if r.status == status) for status in ("passed", "failed", "skipped")
    }
    progress("smoke tests: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return records or [CheckRecord("smoke", "skipped", f"no smoke tests collected in {smoke_dir}")]
