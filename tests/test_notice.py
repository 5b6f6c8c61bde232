"""``migration-gate notice``: what the squads are told before the window, read from the target alone.

Against a copy of staging at 004 (the legacy seed, analyzed as any database with
autovacuum is): the pending migrations, ``activities.payload`` removed and where it is kept,
what moves to ``legacy_archive`` with estimates that the migrations then bear out, the
tables locked and the webhooks to freeze. The target is only read: its dump and its scan
counters do not change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from migration_gate.core import dsn
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import run_cli
from tests.databases import full_dump
from tests.test_forecast import scans
from tests.test_playbook import one_error_line


def analyzed(url: str) -> str:
    with dsn.connect(url) as conn:
        conn.execute("ANALYZE")
    return url


@pytest.fixture
def staging(clone: Callable[[str], str]) -> str:
    return analyzed(clone("legacy"))


def notice(url: str, *extra: str) -> tuple[int, str, str]:
    run = run_cli("notice", "--database", url, *extra)
    return run.returncode, run.stdout, run.stderr


def estimate(text: str, table: str, mark: str = "[≈≤≥]") -> int:
    """The rows the notice's table of moves gives for ``table`` (≈ an estimate, ≤ / ≥ a bound)."""
    match = re.search(rf"^\| {re.escape(table)} \| {mark} ([\d,]+) \|", text, re.M)
    assert match, f"no {mark} figure for {table} in:\n{text}"
    return int(match.group(1).replace(",", ""))


def archived(gate: CheckpointDatabases, table: str) -> int:
    """What 008 really moved, on the gate's own run of the same seed."""
    with gate.connect("after_008") as conn:
        row = conn.execute(f"SELECT count(*) FROM legacy_archive.{table}").fetchone()
    assert row is not None
    return int(row[0])


def test_the_notice_for_a_database_at_004_names_what_goes_what_moves_and_what_to_freeze(
    gate: CheckpointDatabases, staging: str
) -> None:
    before = full_dump(gate.server, staging)
    scanned = scans(staging)

    code, text, errors = notice(staging)

    assert code == 0, errors
    assert scans(staging) == scanned, "the notice read a table"
    assert full_dump(gate.server, staging) == before
    pending = re.findall(r"^- `(\d{3}_\w+\.sql)`$", text, re.M)
    assert pending == [
        "005_workspace_scoping.sql",
        "006_workspace_defaults.sql",
        "007_credentials_bootstrap.sql",
        "008_webhooks_activities_alignment.sql",
    ]
    removed = text.split("## What they remove", 1)[1].split("##", 1)[0]
    assert "`activities.payload`" in removed and "`legacy_archive.activity_payloads`" in removed
    for table in ("webhook_registrations", "webhook_events", "activities", "activity_payloads"):
        assert f"| legacy_archive.{table} |" in text
    locked = text.split("## Tables locked", 1)[1].split("##", 1)[0]
    for table in ("activities", "credentials", "users", "webhook_events", "webhook_registrations"):
        assert f"`public.{table}`: ACCESS EXCLUSIVE" in locked
    assert "## Integrations to freeze" in text and "**webhooks**" in text
    assert "## Expected window" not in text, "a window needs a record"


def test_the_estimates_from_statistics_are_what_008_then_moves(
    gate: CheckpointDatabases, staging: str
) -> None:
    code, text, errors = notice(staging)
    assert code == 0, errors
    # Registrations without a user: reltuples x null_frac(user_id), exact where ANALYZE read every row.
    assert estimate(text, "legacy_archive.webhook_registrations") == archived(gate, "webhook_registrations")
    # Their events: the same share of all events, spread evenly, and activities: at most those without a user.
    assert estimate(text, "legacy_archive.webhook_events") > 0
    # 008's CASE leaves workspace_id NULL at most where user_id is: an upper bound, and the
    # payloads kept (every activity but those, with a payload) a lower bound.
    assert estimate(text, "legacy_archive.activities", mark="≤") >= archived(gate, "activities")
    assert (
        0
        < estimate(text, "legacy_archive.activity_payloads", mark="≥")
        <= archived(gate, "activity_payloads")
    )
    assert "≥ lower bounds" in text


def test_without_statistics_a_figure_is_an_upper_bound_never_an_estimate_of_nothing(
    gate: CheckpointDatabases, clone: Callable[[str], str]
) -> None:
    # Never analyzed (a restore that autovacuum has not reached yet): no null_frac to go on.
    code, text, errors = notice(clone("legacy"))
    assert code == 0, errors
    for table in ("webhook_registrations", "webhook_events", "activities", "activity_payloads"):
        bound = estimate(text, f"legacy_archive.{table}", mark="≤")
        assert bound >= archived(gate, table) > 0, table
    assert "ANALYZE the table for an estimate" in text and "≤ upper bounds" in text


def test_with_a_record_the_notice_gives_the_window_and_the_measured_shares(
    gate: CheckpointDatabases, staging: str, clone: Callable[[str], str], tmp_path: Path
) -> None:
    rehearsed = analyzed(clone("legacy"))
    run = run_cli(
        "playbook", "--database", rehearsed, "--backup", str(tmp_path / "s.backup"),
        "--report-dir", str(tmp_path / "record"), "--no-smoke",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    record = tmp_path / "record" / "report.json"

    code, printed, errors = notice(staging, "--record", str(record), "--output", str(tmp_path / "notice.md"))

    assert code == 0, errors
    written = (tmp_path / "notice.md").read_text()
    assert printed == f"wrote {tmp_path / 'notice.md'}\n"
    assert "## Expected window" in written and "needs the backup restored" in written
    for table in ("webhook_registrations", "webhook_events", "activities"):
        assert estimate(written, f"legacy_archive.{table}") == archived(gate, table), table
    measured = json.loads(record.read_text())["migrations"][0]["locked"]
    for table in measured:
        assert f"- `{table}` (from 005_workspace_scoping.sql)" in written


def test_a_009_that_drops_in_a_do_block_and_drops_a_table_is_named(
    clone: Callable[[str], str], migrations_copy: Path
) -> None:
    (migrations_copy / "009_prune.sql").write_text(
        "DO $$\nBEGIN\n    ALTER TABLE public.credentials DROP COLUMN provider;\nEND\n$$;\n"
        "DROP TABLE public.webhook_events;\n"
    )
    code, text, errors = notice(analyzed(clone("after_008")), "--migrations-dir", str(migrations_copy))
    assert code == 0, errors
    removed = text.split("## What they remove", 1)[1].split("##", 1)[0]
    assert "the column `credentials.provider`: dropped with its values" in removed
    assert "the table `webhook_events`: dropped, with its rows" in removed
    assert "activities.payload" not in removed, "008 is applied: it is not pending any more"


def test_a_bad_record_or_target_is_one_line_exit_2_and_nothing_is_written(
    staging: str, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text('{"outcome": "x"}')
    output = tmp_path / "notice.md"
    bad_record = run_cli(
        "notice", "--database", staging, "--record", str(tmp_path / "bad.json"), "--output", str(output)
    )
    assert bad_record.returncode == 2 and "not a change record" in one_error_line(bad_record)
    unreachable = run_cli(
        "notice", "--database", "postgresql://nobody@127.0.0.1:1/x", "--output", str(output)
    )
    assert unreachable.returncode == 2 and "cannot connect" in one_error_line(unreachable)
    assert not output.exists() and bad_record.stdout == ""


def test_a_database_another_runner_migrated_is_refused_rather_than_guessed(staging: str) -> None:
    with dsn.connect(staging) as conn:
        conn.execute("DROP SCHEMA migration_gate CASCADE")  # as run-migrations.js leaves it: no ledger
    run = run_cli("notice", "--database", staging)
    assert run.returncode == 2 and "no migration_gate.ledger" in one_error_line(run)
