"""Corrections: written down once, applied once at their place, kept in the ledger, replayed elsewhere.

Staging is a private copy of the gate's ``legacy`` checkpoint (004 and the legacy seed);
"production" is another. Every command is the real one, in a subprocess.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from migration_gate.core import dsn
from migration_gate.core.corrections import Correction
from migration_gate.core.plan import checksum, load_plan
from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import REPO, record_of, run_cli
from tests.databases import full_dump
from tests.test_playbook import ledger_versions, one_error_line

INDEX_BY_HAND = """\
-- reason: tmp_fix_idx was made by hand on staging during the May slowness of the credentials page (INC-123)
CREATE INDEX IF NOT EXISTS tmp_fix_idx ON public.credentials (provider);
"""
TRIM_NAMES = """\
-- reason: names imported with trailing spaces; 006 names personal workspaces after their owners
-- after: 005
UPDATE public.users SET name = btrim(name) WHERE name <> btrim(name);
"""


@pytest.fixture
def corrections_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "corrections"
    directory.mkdir()
    (directory / "credentials_provider_idx.sql").write_text(INDEX_BY_HAND)
    (directory / "users_trim_names.sql").write_text(TRIM_NAMES)
    return directory


def recorded(url: str) -> list[tuple[str, int, str, str]]:
    """The ledger's corrections: name, the migration it followed, its reason, its checksum."""
    with dsn.connect(url) as conn:
        rows = conn.execute(
            "SELECT name, after_version, reason, checksum FROM migration_gate.corrections ORDER BY name"
        ).fetchall()
    return [(str(name), int(after), str(reason), str(sha)) for name, after, reason, sha in rows]


def has_index(url: str, name: str) -> bool:
    with dsn.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",)).fetchone()
    return bool(row and row[0])


def test_corrections_run_once_at_their_place_are_listed_in_the_record_and_replay_on_another_database(
    gate: CheckpointDatabases,
    staging: str,
    clone: Callable[[str], str],
    corrections_dir: Path,
    tmp_path: Path,
) -> None:
    report = tmp_path / "record"
    run = run_cli(
        "playbook", "--database", staging, "--backup", str(tmp_path / "staging.backup"),
        "--report-dir", str(report), "--no-smoke", "--corrections-dir", str(corrections_dir),
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]

    record = record_of(report)
    listed = [
        (c["name"], c["after"], c["applied_after"], c["reason"], c["checksum"]) for c in record["corrections"]
    ]
    index_sum, trim_sum = (checksum(text) for text in (INDEX_BY_HAND, TRIM_NAMES))
    assert listed == [
        ("credentials_provider_idx.sql", None, 4, INDEX_BY_HAND.splitlines()[0].split(": ", 1)[1], index_sum),
        ("users_trim_names.sql", 5, 5, TRIM_NAMES.splitlines()[0].split(": ", 1)[1], trim_sum),
    ]
    assert "## Corrections" in (report / "report.md").read_text()
    assert [(name, after) for name, after, _, _ in recorded(staging)] == [
        ("credentials_provider_idx.sql", 4),
        ("users_trim_names.sql", 5),
    ]
    assert has_index(staging, "tmp_fix_idx")

    # Applied once: the next run with the same directory has nothing to apply.
    again = run_cli("migrate", "--database", staging, "--corrections-dir", str(corrections_dir))
    assert again.returncode == 0, again.output
    assert "(correction:" not in again.stdout
    assert len(recorded(staging)) == 2

    # "Production": the same directory, each correction at its place in the plan.
    production = clone("legacy")
    replay = run_cli("migrate", "--database", production, "--corrections-dir", str(corrections_dir))
    assert replay.returncode == 0, replay.output
    order = [
        line.split()[0]
        for line in replay.stdout.splitlines()
        if line.split()[:1] and ".sql" in line.split()[0]
    ]
    assert order == [
        "credentials_provider_idx.sql",
        "005_workspace_scoping.sql",
        "users_trim_names.sql",
        "006_workspace_defaults.sql",
        "007_credentials_bootstrap.sql",
        "008_webhooks_activities_alignment.sql",
    ]
    assert recorded(production) == recorded(staging)
    with dsn.connect(production) as conn:
        assert conn.execute("SELECT count(*) FROM public.users WHERE name <> btrim(name)").fetchone() == (0,)


def assert_refused_everywhere(
    gate: CheckpointDatabases, url: str, corrections_dir: Path, file: Path, tmp_path: Path, expect: str
) -> None:
    """migrate, playbook and correct each refuse with exit 2 and one line; nothing changes or is written."""
    before = full_dump(gate.server, url)
    for args in (
        ("migrate", "--database", url, "--corrections-dir", str(corrections_dir)),
        ("playbook", "--database", url, "--backup", str(tmp_path / "b.backup"), "--report-dir",
         str(tmp_path / "record"), "--no-smoke", "--corrections-dir", str(corrections_dir)),
        ("correct", str(file), "--database", url),
    ):  # fmt: skip
        run = run_cli(*args)
        assert run.returncode == 2, run.output
        assert expect in one_error_line(run)
    assert full_dump(gate.server, url) == before
    assert not (tmp_path / "record").exists() and not (tmp_path / "b.backup").exists()


def test_an_edited_correction_is_refused_naming_it_and_nothing_changes(
    gate: CheckpointDatabases, staging: str, corrections_dir: Path, tmp_path: Path
) -> None:
    first = run_cli(
        "migrate", "--database", staging, "--to", "005", "--corrections-dir", str(corrections_dir)
    )
    assert first.returncode == 0, first.output
    edited = corrections_dir / "credentials_provider_idx.sql"
    edited.write_text(INDEX_BY_HAND.replace("(provider)", "(provider, name)"))
    assert_refused_everywhere(
        gate,
        staging,
        corrections_dir,
        edited,
        tmp_path,
        "correction credentials_provider_idx.sql was edited after it was applied",
    )
    assert ledger_versions(staging) == [1, 2, 3, 4, 5]


def test_a_correction_without_a_reason_is_refused_and_nothing_changes(
    gate: CheckpointDatabases, staging: str, corrections_dir: Path, tmp_path: Path
) -> None:
    unexplained = corrections_dir / "zz_unexplained.sql"
    unexplained.write_text("-- a fix\nUPDATE public.users SET name = upper(name);\n")
    assert_refused_everywhere(
        gate, staging, corrections_dir, unexplained, tmp_path, "zz_unexplained.sql: no '-- reason:' line"
    )
    assert ledger_versions(staging) == [1, 2, 3, 4]


def test_correct_applies_one_now_under_the_lock_once_and_refuses_what_is_not_its_place(
    clone: Callable[[str], str], corrections_dir: Path, tmp_path: Path
) -> None:
    migrated = clone("after_008")
    fix = corrections_dir / "credentials_provider_idx.sql"
    run = run_cli("correct", str(fix), "--database", migrated)
    assert run.returncode == 0, run.output
    assert "applied credentials_provider_idx.sql" in run.stdout and "recorded after 008" in run.stdout
    assert has_index(migrated, "tmp_fix_idx")
    assert [(name, after) for name, after, _, _ in recorded(migrated)] == [
        ("credentials_provider_idx.sql", 8)
    ]

    again = run_cli("correct", str(fix), "--database", migrated)
    assert again.returncode == 0 and "already applied" in again.stdout
    assert len(recorded(migrated)) == 1

    # Its place is a migration this database has not reached: the runner applies it there.
    at_004 = clone("legacy")
    later = tmp_path / "after_007.sql"
    later.write_text("-- reason: credentials need it once 007 scoped them\n-- after: 007\nSELECT 1;\n")
    refused = run_cli("correct", str(later), "--database", at_004)
    assert refused.returncode == 2
    assert "belongs after 007, and this database is at 004" in one_error_line(refused)

    failing = tmp_path / "failing.sql"
    failing.write_text("-- reason: a typo\n\nCREATE INDEX nope ON public.no_such_table (id);\n")
    broken = run_cli("correct", str(failing), "--database", migrated)
    assert broken.returncode == 1
    assert "failing.sql:3: ERROR:" in one_error_line(broken)
    assert len(recorded(migrated)) == 1, "a failed correction is not recorded"

    unknown = tmp_path / "unknown.sql"
    unknown.write_text("-- reason: r\n-- after: 042\nSELECT 1;\n")
    assert "unknown migration version" in one_error_line(
        run_cli("correct", str(unknown), "--database", migrated)
    )


def test_the_gate_applies_corrections_at_their_place_around_the_legacy_seed(
    gate: CheckpointDatabases, gate_config: GateConfig
) -> None:
    plan = load_plan(REPO / "migrations")
    on_the_data = "-- reason: the first user's name was wrong\nUPDATE public.users SET name = 'corrected' WHERE id = (SELECT min(id) FROM public.users);\n"
    early = "-- reason: made before the data came\n-- after: 002\nCREATE INDEX early_idx ON public.workspaces (name);\n"
    corrections = [
        Correction(
            "on_the_data.sql", on_the_data, checksum(on_the_data), "the first user's name was wrong", None
        ),
        Correction("early.sql", early, checksum(early), "made before the data came", 2),
    ]
    built = CheckpointDatabases(gate.server, plan, prefix="corrected").build(
        gate_config.legacy_seed, corrections=corrections
    )
    try:
        assert recorded(built.url("legacy")) == [
            ("early.sql", 2, "made before the data came", checksum(early))
        ]
        assert [(name, after) for name, after, _, _ in recorded(built.url(built.last))] == [
            ("early.sql", 2),
            ("on_the_data.sql", 4),  # after the seed, where production meets it
        ]
        with dsn.connect(built.url("after_006")) as conn:
            assert conn.execute("SELECT name FROM public.users ORDER BY id LIMIT 1").fetchone() == (
                "corrected",
            )
    finally:
        built.drop()


def test_a_rehearsal_replays_the_corrections_on_its_copy_and_never_on_the_source(
    gate: CheckpointDatabases, staging: str, corrections_dir: Path, tmp_path: Path
) -> None:
    before = full_dump(gate.server, staging)
    report = tmp_path / "rehearsal"
    run = run_cli(
        "rehearse", "--source", staging, "--report-dir", str(report), "--no-smoke",
        "--corrections-dir", str(corrections_dir),
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    record = record_of(report)
    assert [(c["name"], c["applied_after"]) for c in record["corrections"]] == [
        ("credentials_provider_idx.sql", 4),
        ("users_trim_names.sql", 5),
    ]
    assert full_dump(gate.server, staging) == before
