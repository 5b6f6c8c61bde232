"""What a person sees when a check fails: pytest's own output, through pytester.

Each test runs the real gate (a copy of ``checks/``) in a pytest subprocess against a
database with a fault and reads the terminal output: the failing test's id carries the
invariant's name and checkpoint, and the report shows the count, the offending rows with
their keys, and the SQL to run again by hand.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from migration_gate.core import dsn
from tests.conftest import REPO

pytest_plugins = ("pytester",)

# A user with no credential and no webhook registration: losing their default breaks no
# later migration, so the gate gets built and the invariant is what catches it.
NULL_ONE_DEFAULT = """
UPDATE users SET default_workspace_id = NULL
WHERE id = (SELECT max(u.id) FROM users u
            WHERE NOT EXISTS (SELECT FROM credentials c WHERE c.user_id = u.id)
              AND NOT EXISTS (SELECT FROM webhook_registrations r WHERE r.user_id = u.id));
"""


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> Path:
    """A throwaway project holding a copy of the gate's checks; the installed plugin does the wiring."""
    shutil.copytree(REPO / "checks", pytester.path / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester.path


def test_a_migration_bug_fails_the_invariant_at_each_checkpoint_and_the_audit_is_summarized(
    pytester: pytest.Pytester, gate_project: Path
) -> None:
    migrations = gate_project / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    defaults = migrations / "006_workspace_defaults.sql"
    defaults.write_text(defaults.read_text() + NULL_ONE_DEFAULT)

    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "checks/test_profile_audit.py",
        "-k",
        "users_without_default_workspace or profile_audit",
        "-v",
        "--migrations-dir",
        str(migrations),
        "--legacy-seed",
        str(REPO / "fixtures" / "legacy_seed.sql"),
        timeout=300,
    )
    output = result.stdout.str()
    result.assert_outcomes(failed=3, passed=3)
    for checkpoint in ("after_006", "after_007", "after_008"):
        assert f"test_check[users_without_default_workspace-{checkpoint}] FAILED" in output
        assert f"users_without_default_workspace: 1 offending row(s) at {checkpoint}" in output
    assert "---- count ----" in output
    assert re.search(r"---- offending rows \(all\) ----\s+E\s+user_id \| email", output), output
    assert "---- SQL to run again by hand ----" in output
    assert "WHERE u.default_workspace_id IS NULL" in output
    assert "users_without_default_workspace.sql, on after_006" in output
    # The audit is figures in the summary, one line per checkpoint, whatever the invariants say.
    summary = output.split("profile audit (users per profile in their default workspace)", 1)[1]
    for checkpoint in ("after_006", "after_007", "after_008"):
        assert re.search(rf"^{checkpoint}\s+owner \d+ \(total \d+\)$", summary, re.M), summary


def test_an_existing_database_with_a_fault_and_an_edited_migration_fails_by_name(
    pytester: pytest.Pytester, gate_project: Path, clone: Callable[[str], str]
) -> None:
    url = clone("after_008")
    with dsn.connect(url) as conn:
        moved = conn.execute(
            "UPDATE webhook_events e SET workspace_id = "
            "(SELECT w.id FROM workspaces w WHERE w.id <> e.workspace_id ORDER BY w.id LIMIT 1) "
            "WHERE e.id = (SELECT min(id) FROM webhook_events) RETURNING e.id"
        ).fetchone()
    assert moved is not None
    migrations = gate_project / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    core = migrations / "003_business_core.sql"
    core.write_text(core.read_text() + "\n-- edited after it was applied\n")

    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-m",
        "invariant or ledger",
        "--database-url",
        url,
        "--migrations-dir",
        str(migrations),
        "-rf",
        timeout=300,
    )
    output = result.stdout.str()
    result.assert_outcomes(passed=11, failed=2)
    assert "FAILED checks/test_gate.py::test_check[webhook_event_workspace_mismatch-current]" in output
    assert re.search(rf"E\s+{moved[0]}\s+\|", output), "the moved event's id is in the sample"
    assert "FAILED checks/test_gate.py::test_check[ledger-current]" in output
    assert re.search(r"003_business_core\.sql\s+\| edited after it was applied", output), output


def test_on_an_existing_database_checks_its_ledger_has_not_reached_are_skipped_with_the_reason(
    pytester: pytest.Pytester, gate_project: Path, clone: Callable[[str], str]
) -> None:
    url = clone("after_006")
    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-m",
        "invariant",
        # At 006 the cascading keys 005 added have no index yet (007 and 008 build them): a true finding.
        "-k",
        "not cascading_foreign_keys",
        "--database-url",
        url,
        "--migrations-dir",
        str(REPO / "migrations"),
        "-rs",
        timeout=300,
    )
    output = result.stdout.str()
    result.assert_outcomes(passed=3, skipped=8)
    assert "credentials_without_workspace holds from 007; the ledger of this database is at 006" in output
    assert "activities_without_workspace holds from 008; the ledger of this database is at 006" in output


def test_a_malformed_check_file_is_refused_with_one_line(
    pytester: pytest.Pytester, gate_project: Path
) -> None:
    (gate_project / "checks" / "orphans.sql").write_text(
        "-- name: orphans\n-- meaning: a header without its migration\nSELECT 1\n"
    )
    result = pytester.runpytest_subprocess("checks/test_gate.py", "--collect-only", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), result.stderr.str()
    assert "orphans.sql: header lacks 'from:'" in errors[0]
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_under_xdist_each_workers_migration_timings_reach_the_summary(
    pytester: pytest.Pytester, gate_project: Path
) -> None:
    """Each worker builds its own gate database; the controller prints what each applied."""
    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-k",
        "not_null or no_invalid",
        "-n",
        "2",
        "--migrations-dir",
        str(REPO / "migrations"),
        "--legacy-seed",
        str(REPO / "fixtures" / "legacy_seed.sql"),
        timeout=300,
    )
    output = result.stdout.str()
    assert result.ret == 0, output
    for worker in ("gw0", "gw1"):
        section = re.search(
            rf"migration-gate: migrations applied \(disposable database, legacy seed\) \({worker}\) =+\n(.*?)\n(?:=|$)",
            output,
            re.S,
        )
        assert section is not None, output
        assert re.search(r"^008_webhooks_activities_alignment\.sql +\d+\.\d{3} s$", section.group(1), re.M)


@pytest.mark.parametrize(
    ("migration", "failing", "shown"),
    [
        (
            "UPDATE public.credentials SET workspace_id = (SELECT min(id) FROM public.workspaces);",
            "credentials_outside_member_workspace",
            r"credentials_outside_member_workspace: \d+ offending row\(s\) at after_009",
        ),
        (
            "UPDATE public.activities a SET workspace_id = (SELECT min(w.id) FROM public.workspaces w "
            "WHERE w.owner_id <> a.user_id) WHERE a.user_id IS NOT NULL;",
            "activities_outside_member_workspace",
            r"activity_id \| user_id \| workspace_id",
        ),
        (
            "ALTER TABLE public.activities DROP CONSTRAINT activities_workspace_id_fkey;",
            "foreign_key[activities.workspace_id]",
            r"public\.activities\.workspace_id has no foreign key",
        ),
    ],
    ids=["credentials moved into one tenant", "activities moved across tenants", "workspace key dropped"],
)
def test_a_009_that_breaks_tenant_isolation_or_a_workspace_key_fails_the_gate_by_name(
    pytester: pytest.Pytester, gate_project: Path, migration: str, failing: str, shown: str
) -> None:
    migrations = gate_project / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    (migrations / "009_pull_request.sql").write_text(migration + "\n")
    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-m",
        "invariant or integrity",
        "--migrations-dir",
        str(migrations),
        "--legacy-seed",
        str(REPO / "fixtures" / "legacy_seed.sql"),
        "-rf",
        timeout=300,
    )
    output = result.stdout.str()
    assert result.ret == 1, output
    failed = {
        line.split("::", 1)[1].split(" ", 1)[0] for line in output.splitlines() if line.startswith("FAILED")
    }
    # The last checkpoint is named after the pull request's migration: a reader is told 009 broke it.
    assert failed == {f"test_check[{failing}-after_009]"}, output
    assert re.search(shown, output), output


def test_the_pull_request_summary_has_durations_locks_counts_and_failures(
    pytester: pytest.Pytester, gate_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written to $GITHUB_STEP_SUMMARY (appended: a job's steps share it), under xdist too."""
    migrations = gate_project / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    defaults = migrations / "006_workspace_defaults.sql"
    defaults.write_text(defaults.read_text() + NULL_ONE_DEFAULT)
    step_summary = gate_project / "step-summary.md"
    step_summary.write_text("# an earlier step's summary\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))

    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-m",
        "invariant",
        "-n",
        "2",
        "--migrations-dir",
        str(migrations),
        "--legacy-seed",
        str(REPO / "fixtures" / "legacy_seed.sql"),
        timeout=300,
    )
    assert result.ret == 1, result.stdout.str()
    text = step_summary.read_text()
    assert text.startswith("# an earlier step's summary\n## migration-gate: failed (3 test(s))"), text
    # Each migration's duration, and the locks it held on tables that existed before it.
    assert re.search(
        r"^\| `008_webhooks_activities_alignment\.sql` \| \d+\.\d{3} \| .*activities \d+\.\d{3} s", text, re.M
    )
    assert re.search(
        r"^\| `005_workspace_scoping\.sql` \| \d+\.\d{3} \| .*credentials \d+\.\d{3} s", text, re.M
    )
    assert re.search(r"^\| `001_init\.sql` \| \d+\.\d{3} \| none \|$", text, re.M), "a new table is no outage"
    # Every invariant at each checkpoint where it holds.
    assert re.search(r"^\| `users_without_default_workspace` \| 1 \| 1 \| 1 \|$", text, re.M), text
    assert re.search(r"^\| `credentials_without_workspace` \| - \| 0 \| 0 \|$", text, re.M), text
    # The failures, with their first lines.
    assert (
        "- `checks/test_gate.py::test_check[users_without_default_workspace-after_006]`: "
        "users_without_default_workspace: 1 offending row(s) at after_006" in text
    ), text


def test_summary_writes_the_file_it_is_given(pytester: pytest.Pytester, gate_project: Path) -> None:
    target = gate_project / "out" / "summary.md"
    target.parent.mkdir()
    target.write_text("stale\n")
    result = pytester.runpytest_subprocess(
        "checks/test_gate.py", "-m", "ledger", "--summary", str(target), "--migrations-dir", str(REPO / "migrations"),
        "--legacy-seed", str(REPO / "fixtures" / "legacy_seed.sql"), timeout=300,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    text = target.read_text()
    assert text.startswith("## migration-gate: passed"), text
    assert "### Failed checks (0)" in text and "stale" not in text
