"""The nightly run remembers: ``pytest checks --database-url URL --history FILE``, then ``migration-gate history``.

As the nightly job runs them: the real gate in a subprocess against a private clone of the
migrated gate database, as a read-only role whose password the server checks; then the
real command, posting to a loopback receiver in this process. Also the playbook's
``--history``, the refusals before the first test, and two jobs appending at once, one of
them under pytest-xdist.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migration_gate.core import dsn
from migration_gate.core.identity import identify
from migration_gate.history import schema
from migration_gate.history.store import History
from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.smoke import WebhookReceiver
from tests.conftest import PYTEST, REPO, Run, posted_texts, record_of, run_cli, run_pytest
from tests.databases import PasswordRole, password_role
from tests.test_check_faults import FAULTS
from tests.test_playbook import one_error_line, playbook

LEAK = "credentials_outside_member_workspace"
MOVE_CREDENTIAL = next(
    fault.sql for fault in FAULTS if fault.check == LEAK
)  # into a workspace not its user's
MOVED = "SELECT id, workspace_id FROM credentials WHERE id = (SELECT min(id) FROM credentials WHERE user_id IS NOT NULL)"
TOKEN = "T0K3N-xoxb-s3cr3t"


@pytest.fixture
def migrated(clone: Callable[[str], str]) -> str:
    """Staging as the nightly job finds it: a private copy of the gate database after 008."""
    return clone("after_008")


def test_clean_nights_then_a_cross_tenant_credential_then_the_fix(
    gate: CheckpointDatabases,
    migrated: str,
    reader: PasswordRole,
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    source, page, hook = tmp_path / "nightly.sqlite", tmp_path / "nightly.html", f"/services/{TOKEN}"
    superuser = f"night_owl_{uuid.uuid4().hex[:8]}"

    def night() -> Run:
        return run_pytest("checks", "--database-url", reader.url(migrated), "--history", str(source))

    def history() -> Run:
        return run_cli("history", str(source), "--html", str(page), "--notify-url", receiver.url(hook))

    for number in (1, 2):
        clean = night()
        assert clean.returncode == 0, clean.output[-4000:]
        assert (
            f"migration-gate: run {number} appended to history {source} (0 failing check(s)" in clean.stdout
        )

    # The third night: a credential moved into a workspace its user is not a member of, and a new superuser.
    with dsn.connect(migrated) as conn:
        credential, workspace = conn.execute(MOVED).fetchone() or (None, None)
        conn.execute(MOVE_CREDENTIAL)
    with gate.server.admin() as conn:
        conn.execute(f"CREATE ROLE {superuser} SUPERUSER NOLOGIN")
    try:
        leaked = night()
        assert leaked.returncode == 1, leaked.output[-4000:]
        assert "run 3 appended" in leaked.stdout and "(1 failing check(s)" in leaked.stdout

        first = history()
        assert first.returncode == 1, first.output
        assert f"{LEAK} at current: FAILED now (1), NEW; failing since run 3" in first.stdout
        assert f"new since the previous run (1): {LEAK} at current" in first.stdout
        assert f"role {superuser} gained SUPERUSER" in first.stdout
        html = page.read_text()
        assert f'aria-label="{LEAK} at current: offending rows by run"' in html and "<script" not in html
        (message,) = posted_texts(receiver, hook)
        assert (
            f"NEW failure on {dsn.describe(reader.url(migrated))}: {LEAK} at current: 1 offending" in message
        )

        again = history()
        assert again.returncode == 1, again.output
        assert len(posted_texts(receiver, hook)) == 1, "asking again posted the same change twice"
    finally:
        with dsn.connect(migrated) as conn:
            conn.execute("UPDATE credentials SET workspace_id = %s WHERE id = %s", (workspace, credential))
        with gate.server.admin() as conn:
            conn.execute(f"DROP ROLE {superuser}")

    fixed = night()
    assert fixed.returncode == 0, fixed.output[-4000:]
    last = history()
    assert last.returncode == 0, last.output
    assert f"{LEAK} at current: passed now (0), resolved; failed in run 3" in last.stdout
    assert f"role {superuser} lost SUPERUSER" in last.stdout
    messages = posted_texts(receiver, hook)
    assert len(messages) == 2 and f"resolved on {dsn.describe(reader.url(migrated))}: {LEAK}" in messages[1]

    for run in (first, again, last):
        assert TOKEN not in run.output, "the --notify-url's token was printed"
    assert reader.password not in source.read_bytes().decode("utf-8", "replace")
    assert reader.password not in page.read_text() + "".join(messages)


def test_two_jobs_appending_at_once_lose_nothing_and_under_xdist_the_controller_keeps_every_worker_result(
    migrated: str, reader: PasswordRole, tmp_path: Path
) -> None:
    source = tmp_path / "nightly.sqlite"
    args = ["checks", "--database-url", reader.url(migrated), "--history", str(source)]
    jobs = [
        subprocess.Popen(
            [*PYTEST, "-q", *args, *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for extra in ([], ["-n", "2"])
    ]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    with History(str(source)) as history:
        latest = history.latest()
        assert latest is not None
        runs = history.runs(latest.target.series, 10)
    assert len(runs) == 2
    kept = [{(r.key, r.outcome, r.count) for r in run.results} for run in runs]
    assert kept[0] == kept[1], "the xdist run kept other results than the serial run"
    for output in outputs:  # every test the session ran, kept once
        passed = re.search(r"(\d+) passed", output)
        assert passed is not None and sum(1 for _, outcome, _ in kept[0] if outcome == "passed") == int(
            passed[1]
        )
    assert ("check", LEAK, "current") in {key for key, _, _ in kept[0]}
    assert runs[0].roles == runs[1].roles and runs[0].roles["superuser"]
    assert runs[0].profile_audit == runs[1].profile_audit and runs[0].profile_audit["current"]


@pytest.mark.parametrize(
    ("history", "says"),
    [
        pytest.param(
            lambda tmp, url, other: str(tmp / "notes.txt"),
            "is not a history: it is not an SQLite database",
            id="text-file",
        ),
        pytest.param(
            lambda tmp, url, other: str(tmp / "absent" / "h.sqlite"), "does not exist", id="missing-directory"
        ),
        pytest.param(lambda tmp, url, other: url, "is the database under test", id="the-database-under-test"),
        pytest.param(
            lambda tmp, url, other: other, "is not a history: it holds", id="a-database-of-other-things"
        ),
    ],
)
def test_a_history_the_run_could_not_append_to_is_refused_before_the_first_test(
    clone: Callable[[str], str],
    migrated: str,
    reader: PasswordRole,
    tmp_path: Path,
    history: Callable[[Path, str, str], str],
    says: str,
) -> None:
    (tmp_path / "notes.txt").write_text("not a history\n")
    url, other = reader.url(migrated), reader.url(clone("legacy"))
    run = run_pytest("checks", "--database-url", url, "--history", history(tmp_path, url, other))
    assert run.returncode == 2, run.output[-4000:]
    assert says in one_error_line(run)
    assert " passed" not in run.stdout, "tests ran although the history was refused"
    assert reader.password not in run.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "not a history\n"
    with dsn.connect(migrated) as conn:
        created = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema.PG_SCHEMA,)
        ).fetchone()
    assert created == (0,)


# -- The playbook -------------------------------------------------------------------------


@pytest.fixture
def migrator(gate: CheckpointDatabases) -> Iterator[PasswordRole]:
    with password_role(gate.server, "SUPERUSER") as role:
        yield role


def test_the_playbook_appends_its_change_records_figures_to_the_same_history(
    clone: Callable[[str], str], migrator: PasswordRole, tmp_path: Path
) -> None:
    staging = clone("legacy")
    source = tmp_path / "nightly.sqlite"
    window = {"backup": tmp_path / "staging.backup", "report": tmp_path / "record"}
    run = playbook(migrator.url(staging), window, "--no-smoke", "--history", str(source))
    assert run.returncode == 0, run.output[-4000:]
    assert f"history: run 1 appended to {source}" in run.stdout
    record = record_of(window["report"])
    with History(str(source)) as history:
        latest = history.latest()
        assert latest is not None
        (kept,) = history.runs(latest.target.series, 10)
    assert (kept.kind, kept.outcome, kept.exit_status) == (
        "playbook",
        "migrated_and_validated_without_smoke",
        0,
    )
    assert kept.ledger_head == "008_webhooks_activities_alignment.sql"
    assert kept.target.database == dsn.parse(staging)["dbname"] and kept.target.system_identifier
    assert kept.seconds == pytest.approx(sum(step["seconds"] for step in record["steps"]), abs=0.01)
    counts = {(r.name, r.checkpoint): r.count for r in kept.results if r.count is not None}
    assert counts == {
        (name, point): count
        for point, by_name in record["checkpoints"].items()
        for name, count in by_name.items()
    }
    assert {(r.name, r.checkpoint, r.outcome) for r in kept.results if r.kind == "check"} == {
        (c["name"], c["checkpoint"], c["status"]) for c in record["checks"]
    }
    assert kept.profile_audit == record["profile_audit"] and kept.roles == record["roles"]
    assert migrator.password not in source.read_bytes().decode("utf-8", "replace")

    report = run_cli("history", str(source))
    assert report.returncode == 0, report.output
    assert "run 1 (playbook," in report.stdout


def test_a_playbook_whose_history_cannot_be_appended_to_stops_at_preflight(
    clone: Callable[[str], str], migrator: PasswordRole, tmp_path: Path
) -> None:
    staging = clone("legacy")
    (tmp_path / "notes.txt").write_text("not a history\n")
    window = {"backup": tmp_path / "staging.backup", "report": tmp_path / "record"}
    run = playbook(migrator.url(staging), window, "--no-smoke", "--history", str(tmp_path / "notes.txt"))
    assert run.returncode == 2, run.output[-4000:]
    assert "notes.txt is not a history" in one_error_line(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "a backup or a record was written"


def test_a_rehearsal_is_filed_under_its_source_not_under_its_disposable_copy(
    clone: Callable[[str], str], reader: PasswordRole, tmp_path: Path
) -> None:
    staging = clone("legacy")
    source = tmp_path / "nightly.sqlite"
    run = run_cli(
        "rehearse", "--source", reader.url(staging), "--report-dir", str(tmp_path / "record"), "--no-smoke",
        "--history", str(source), timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    with dsn.connect(staging) as conn:
        staging_identity = identify(conn)
    with History(str(source)) as history:
        latest = history.latest()
        assert latest is not None
        (kept,) = history.runs(latest.target.series, 10)
    assert (kept.kind, kept.target.mode, kept.outcome) == (
        "rehearse",
        "disposable",
        "migrated_and_validated_without_smoke",
    )
    assert (kept.target.system_identifier, kept.target.database) == (
        staging_identity.system_identifier,
        staging_identity.database,
    )
    assert kept.ledger_head == "008_webhooks_activities_alignment.sql"  # the copy's, migrated
    assert any(r.name == LEAK and r.checkpoint == "after_008" and r.count == 0 for r in kept.results)
