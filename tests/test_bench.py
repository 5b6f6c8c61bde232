"""The benchmark measures what it says: lock probes, the JSON shape, bad input. Never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_gate.bench import run as bench
from migration_gate.bench import scales
from migration_gate.core import dsn, ledger
from migration_gate.core.plan import Migration, load_plan
from tests.conftest import REPO, run_cli


def migration(tmp_path: Path, sql: str) -> Migration:
    directory = tmp_path / "migrations"
    directory.mkdir(exist_ok=True)
    (directory / "001_probe.sql").write_text(sql, encoding="utf-8")
    return load_plan(directory)[0]


@pytest.mark.parametrize(
    ("sql", "locked"),
    [
        # ADD COLUMN takes ACCESS EXCLUSIVE on an existing table: measured.
        ("ALTER TABLE existing ADD COLUMN extra int;", "existing"),
        # DROP CONSTRAINT of a foreign key also locks the table it references.
        ("ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey;", "existing"),
        # A table created by the migration itself is not pre-existing.
        ("CREATE TABLE brand_new (id int); ALTER TABLE brand_new ADD COLUMN extra int;", None),
        # Reading and inserting take no ACCESS EXCLUSIVE lock.
        ("INSERT INTO existing (id) SELECT 1; SELECT count(*) FROM existing;", None),
    ],
)
def test_access_exclusive_locks_on_pre_existing_tables_are_found(
    fresh_database: str, tmp_path: Path, sql: str, locked: str | None
) -> None:
    with dsn.connect(fresh_database) as conn:
        conn.execute("CREATE TABLE existing (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent_id int REFERENCES existing)")
        ledger.ensure(conn)
        run = scales.apply_measured(conn, migration(tmp_path, sql))
        recorded = ledger.read(conn)
    if locked is None:
        assert run.lock_table is None and run.locks == {}
    else:
        assert locked in run.locks
        assert run.lock_seconds == max(run.locks.values())
        assert run.locks[locked] == run.lock_seconds, "the longest lock, ties included"
    assert (run.lock_seconds > 0) == (locked is not None)
    assert run.lock_seconds <= run.seconds
    assert 1 in recorded, "a measured migration is recorded in the ledger like any other"


def test_bench_reports_the_issue_json_shape(tmp_path: Path) -> None:
    plan = load_plan(REPO / "migrations")
    result = bench.bench(plan, [400], gate_runs=1)
    target = tmp_path / "bench.json"
    bench.write_json(result, target)
    document = json.loads(target.read_text(encoding="utf-8"))
    assert set(document) == {"scales", "gate", "window", "forecast"}
    (scale,) = document["scales"]
    assert set(scale) == {"activities", "load_s", "migrate_s", "ratio", "per_migration"}
    assert scale["activities"] == 400
    assert list(scale["per_migration"]) == [m.file_name for m in plan if m.version > 4]
    assert scale["migrate_s"] == pytest.approx(
        sum(m["seconds"] for m in scale["per_migration"].values()), abs=1e-3
    )
    assert scale["ratio"] == pytest.approx(scale["migrate_s"] / scale["load_s"], rel=1e-2)
    # 008 rewrites tables that existed before it: it must report an ACCESS EXCLUSIVE lock.
    assert scale["per_migration"]["008_webhooks_activities_alignment.sql"]["access_exclusive_table"]
    assert set(document["gate"]) == {"floor_s", "gate_s", "ratio"}
    assert document["gate"]["floor_s"] > 0 and document["gate"]["gate_s"] > 0
    assert len(result.table()) == 3 and result.verdicts()


@pytest.mark.parametrize("scales", ["0", "ten", "1000,,2000", "-5"])
def test_cli_refuses_bad_scales_in_one_line(scales: str) -> None:
    run = run_cli("bench", "--scales", scales)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.output


def test_cli_refuses_a_missing_migrations_directory(tmp_path: Path) -> None:
    run = run_cli("bench", "--scales", "100", "--migrations-dir", str(tmp_path / "nowhere"))
    assert run.returncode == 2
    assert "does not exist" in run.stderr and run.stderr.count("\n") == 1


def test_repeated_runs_report_the_median_load_and_the_median_migration_run() -> None:
    def run(load_s: float, migrate_s: float) -> scales.ScaleRun:
        return scales.ScaleRun(100, 150, load_s, [scales.MigrationRun("008_x.sql", migrate_s, 0.0, None)])

    kept = scales.median_run([run(1.0, 9.0), run(3.0, 2.0), run(2.0, 5.0)])
    assert kept.load_s == 2.0
    assert kept.migrate_s == 5.0
    assert kept.ratio == 2.5


def test_the_forecast_section_checks_a_record_against_runs_at_twice_and_four_times_its_size(
    tmp_path: Path,
) -> None:
    plan = load_plan(REPO / "migrations")
    result = bench.bench(plan, [], gate_runs=0, forecast_scales=[300], migrations_dir=REPO / "migrations")
    target = tmp_path / "bench.json"
    bench.write_json(result, target)
    (section,) = json.loads(target.read_text(encoding="utf-8"))["forecast"]
    assert section["record_activities"] == 300 and section["runs"] == 1
    for multiple, activities in (("2x", 600), ("4x", 1200)):
        point = section[multiple]
        assert point["activities"] == activities
        (forecast,), (measured,), (error,) = (
            point["window_forecast_s"],
            point["window_measured_s"],
            point["window_error"],
        )
        assert forecast > 0 and measured > 0 and error == pytest.approx(forecast / measured - 1, abs=1e-3)
        assert point["restore_measured_s"][0] > 0 and point["restore_forecast_s"][0] > 0
        assert "008_webhooks_activities_alignment.sql" in point["steps_median"]
    verdict = [text for text, met in result.verdicts() if text.startswith("forecast:")]
    assert verdict == [
        f"forecast: worst window error from 300 to 1,200 = {abs(section['4x']['window_error'][0]):.1%} (<= 25%)"
    ]
    assert sum(line.startswith("forecast from 300") for line in result.table()) == 2
