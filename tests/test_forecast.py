"""``migration-gate forecast`` and ``playbook --forecast-from``: a small staging run forecasts a larger target.

The record comes from the real playbook on a generated legacy volume at 004; the target is
the same generator at four times the activities. The forecast only reads the target's
catalog: its dump is unchanged and PostgreSQL's own counters of table scans do not move
(a ``count(*)`` would move them, which a control shows). Accuracy at 1M → 4M is the
bench's to measure, not a test's: these sizes keep ``make test`` fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from migration_gate.bench.window import fill_legacy
from migration_gate.core import dsn
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import once_per_run, record_of, run_cli
from tests.databases import full_dump
from tests.test_playbook import one_error_line

RECORD_ACTIVITIES = 2_000
TARGET_ACTIVITIES = 8_000
# Rows read by sequential and index scans of every table of the data, as the server counts them
# (the gate's own ledger, whose head the forecast reads, aside).
_SCANS = """
SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0)
FROM pg_stat_user_tables WHERE schemaname <> 'migration_gate' ORDER BY relname
"""
_OTHERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend'"
)


def scans(url: str) -> list[tuple[Any, ...]]:
    """The counters, once every other session on the database has gone (a backend flushes them as it exits)."""
    with dsn.connect(url) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(_OTHERS).fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(_SCANS).fetchall()


@pytest.fixture(scope="module")
def generated(disposable_gate: CheckpointDatabases) -> Iterator[Callable[[int], str]]:
    """``generated(activities)``: a new legacy database at 004 with that volume (dropped after the module)."""
    with ExitStack() as made:

        def make(activities: int) -> str:
            url = made.enter_context(disposable_gate.server.temporary_database(f"forecast_{activities}"))
            fill_legacy(url, disposable_gate.plan, activities, seed=0)
            return url

        yield make


@pytest.fixture(scope="module")
def staging_record(generated: Callable[[int], str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The change record of a playbook on a small legacy volume: what staging hands production."""

    def playbook(directory: Path) -> None:
        run = run_cli(
            "playbook", "--database", generated(RECORD_ACTIVITIES), "--backup", str(directory / "staging.backup"),
            "--report-dir", str(directory / "record"), "--yes",
        )  # fmt: skip
        assert run.returncode == 0, run.output[-4000:]

    # Made once for the whole run: the tests only read it, on any worker's own server.
    return once_per_run(tmp_path_factory, "staging-record", playbook) / "record" / "report.json"


@pytest.fixture(scope="module")
def production(generated: Callable[[int], str]) -> str:
    """The same legacy data, four times larger, never migrated: production before its window."""
    return generated(TARGET_ACTIVITIES)


def forecast(url: str, record: Path, *extra: str) -> Any:
    return run_cli("forecast", "--database", url, "--record", str(record), *extra)


def test_a_record_from_a_smaller_run_forecasts_a_larger_database_and_only_reads_its_catalog(
    gate: CheckpointDatabases, staging_record: Path, production: str, tmp_path: Path
) -> None:
    before = full_dump(gate.server, production)
    scanned = scans(production)

    run = forecast(production, staging_record, "--json", str(tmp_path / "forecast.json"))

    assert run.returncode == 0, run.output
    assert scans(production) == scanned, "the forecast read a table"
    assert full_dump(gate.server, production) == before
    record = json.loads(staging_record.read_text())
    expected = json.loads((tmp_path / "forecast.json").read_text())
    assert {"window_s", "low_s", "high_s", "restore_s", "steps"} <= set(expected)
    for step in expected["steps"]:
        assert set(step) == {"name", "seconds", "low_s", "high_s", "basis"}
        assert step["low_s"] <= step["seconds"] <= step["high_s"] and step["basis"]
    names = [step["name"] for step in expected["steps"]]
    migrations = [m["file_name"] for m in record["migrations"]]
    assert names[:2] == ["preflight", "backup"] and names[2:6] == migrations
    assert {"checks", "index plans", "smoke"} <= set(names)
    assert expected["low_s"] <= expected["window_s"] <= expected["high_s"]
    assert expected["window_s"] == pytest.approx(sum(step["seconds"] for step in expected["steps"]), abs=0.01)
    assert expected["restore_s"] > 0
    # Four times the activities: the data-bound parts forecast more than the record measured, never less.
    steps = {step["name"]: step for step in expected["steps"]}
    recorded = {m["file_name"]: m["seconds"] for m in record["migrations"]}
    assert steps[migrations[-1]]["seconds"] > recorded[migrations[-1]]
    assert "activities x4" in steps[migrations[-1]]["basis"]
    backup = next(s["seconds"] for s in record["steps"] if s["name"].startswith("backup"))
    assert steps["backup"]["seconds"] > backup
    assert "window" in run.stdout and migrations[-1] in run.stdout  # the table, for people


def test_scan_counters_do_see_a_count(gate: CheckpointDatabases, production: str) -> None:
    """The control: the proof above would catch a forecast that counted rows."""
    scanned = scans(production)
    with dsn.connect(production) as conn:
        conn.execute("SELECT count(*) FROM public.activities").fetchone()
        conn.execute("SELECT pg_stat_force_next_flush()")
    assert scans(production) != scanned


def test_the_playbook_prints_the_forecast_and_a_window_over_budget_stops_before_the_backup(
    staging_record: Path, production: str, tmp_path: Path
) -> None:
    backup, report = tmp_path / "production.backup", tmp_path / "record"
    run = run_cli(
        "playbook", "--database", production, "--backup", str(backup), "--report-dir", str(report),
        "--forecast-from", str(staging_record), "--window-budget", "1s", "--no-smoke",
    )  # fmt: skip
    assert run.returncode == 2, run.output[-4000:]
    line = one_error_line(run)
    assert "over the --window-budget of 1 s" in line and "stopped before the backup" in line
    assert "forecast from" in run.stdout and "window" in run.stdout
    assert not backup.exists() and not report.exists()
    with dsn.connect(production) as conn:
        assert conn.execute("SELECT max(version) FROM migration_gate.ledger").fetchone() == (4,)


def test_within_budget_the_run_goes_on_and_its_record_keeps_the_forecast(
    generated: Callable[[int], str], staging_record: Path, tmp_path: Path
) -> None:
    target = generated(TARGET_ACTIVITIES)
    run = run_cli(
        "playbook", "--database", target, "--backup", str(tmp_path / "b.backup"), "--report-dir",
        str(tmp_path / "record"), "--forecast-from", str(staging_record), "--window-budget", "1h30min", "--no-smoke",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    record = record_of(tmp_path / "record")
    assert record["forecast"]["window_s"] > 0 and record["forecast"]["steps"]
    assert "## Forecast" in (tmp_path / "record" / "report.md").read_text()


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda tmp: tmp / "missing.json", "no such file"),
        (lambda tmp: (tmp / "x.json", (tmp / "x.json").write_text("[1, 2]"))[0], "not a change record"),
        (lambda tmp: (tmp / "y.json", (tmp / "y.json").write_text("{not json"))[0], "not a change record"),
        (
            lambda tmp: (
                tmp / "z.json",
                (tmp / "z.json").write_text('{"command": "playbook", "steps": [], "migrations": []}'),
            )[0],
            "no table sizes",
        ),
    ],
    ids=["missing", "not-a-record", "not-json", "older-record"],
)
def test_a_record_that_cannot_be_used_is_one_line_exit_2_and_nothing_is_written(
    production: str, tmp_path: Path, arrange: Callable[[Path], Path], message: str
) -> None:
    run = forecast(production, arrange(tmp_path), "--json", str(tmp_path / "out.json"))
    assert run.returncode == 2, run.output
    assert message in one_error_line(run)
    assert not (tmp_path / "out.json").exists()


def test_a_target_at_another_version_or_out_of_reach_is_refused(
    staging_record: Path, clone: Callable[[str], str], tmp_path: Path
) -> None:
    at_006 = clone("after_006")
    run = forecast(at_006, staging_record, "--json", str(tmp_path / "out.json"))
    assert run.returncode == 2, run.output
    assert "is at 006 (its ledger), but the record's run started at 004" in one_error_line(run)

    unreachable = forecast("postgresql://nobody:S3cret-pw@127.0.0.1:1/production", staging_record)
    assert unreachable.returncode == 2
    assert "cannot connect" in one_error_line(unreachable) and "S3cret-pw" not in unreachable.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("budget", ["10", "ten minutes", "5x", "0s", ""])
def test_a_budget_that_does_not_parse_is_refused_before_anything(
    staging_record: Path, tmp_path: Path, budget: str
) -> None:
    run = run_cli(
        "playbook", "--database", "postgresql://nobody@127.0.0.1:1/x", "--backup", str(tmp_path / "b"),
        "--report-dir", str(tmp_path / "r"), "--forecast-from", str(staging_record), "--window-budget", budget,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--window-budget" in one_error_line(run)
    assert list(tmp_path.iterdir()) == []


def test_a_budget_needs_a_forecast(tmp_path: Path) -> None:
    run = run_cli(
        "playbook", "--database", "postgresql://nobody@127.0.0.1:1/x", "--backup", str(tmp_path / "b"),
        "--report-dir", str(tmp_path / "r"), "--window-budget", "1h",
    )  # fmt: skip
    assert run.returncode == 2 and "needs --forecast-from" in one_error_line(run)


def test_the_record_keeps_what_a_forecast_needs(staging_record: Path) -> None:
    record = json.loads(staging_record.read_text())
    assert record["start_version"] == 4 and record["run_id"]
    tables = {table["name"]: table for table in record["tables"]}
    assert tables["public.activities"]["rows"] == RECORD_ACTIVITIES
    assert tables["public.activities"]["bytes"] > 0 and tables["public.activities"]["index_bytes"] > 0
    by_file = {m["file_name"]: m for m in record["migrations"]}
    assert "public.activities" in by_file["005_workspace_scoping.sql"]["locked"]
    last = by_file["008_webhooks_activities_alignment.sql"]
    assert last["rewritten"]["public.activities"].startswith("replaced by a new table")
    assert last["renamed"]["public.activities"] == "legacy_archive.activity_payloads"
    assert last["rows"]["legacy_archive.activities"]["inserted"] > 0
    assert record["smoke_cleanup"]["seconds"] >= 0
