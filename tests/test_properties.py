"""The property tests of checks/test_properties.py: their model, their strategies, and proof they can fail."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from migration_gate.checks import invariants
from migration_gate.core import runner
from migration_gate.core.plan import load_plan
from migration_gate.data.model import (
    ARCHIVED,
    DIRTY_CASES,
    Activity,
    Credential,
    Event,
    LegacyDataset,
    Membership,
    Registration,
    User,
    Workspace,
    dirty_cases,
    expected,
    named_workspace,
)
from migration_gate.data.properties import PropertyHarness, PropertyViolation
from migration_gate.data.strategies import legacy_datasets
from migration_gate.plugin import hypothesis_profiles
from tests.conftest import REPO

pytest_plugins = ("pytester",)

# The digit rule of 008, and a wrong one that lets spaces around the digits through
# (bigint's input ignores them, so " 3" would name workspace 3).
DIGIT_RULE = "~ '^[0-9]+$'"
WRONG_DIGIT_RULE = "~ '^ *[0-9]+ *$'"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (None, None),
        ("null", None),
        ("[30]", None),
        ("30", None),
        ('"30"', None),
        ("{}", None),
        ('{"workspaceId": 30}', None),
        ('{"workspace_id": 30}', 30),
        ('{"workspace_id": 30.0}', 30),
        ('{"workspace_id": 3e1}', 30),
        ('{"workspace_id": 300e-1}', 30),
        ('{"workspace_id": 30.5}', None),
        ('{"workspace_id": 30.0000000000000000000001}', None),
        ('{"workspace_id": -30}', None),
        ('{"workspace_id": 0}', None),
        ('{"workspace_id": 1e400}', None),
        ('{"workspace_id": 1e-400}', None),
        ('{"workspace_id": 9223372036854775807}', 9223372036854775807),
        ('{"workspace_id": 9223372036854775808}', None),
        ('{"workspace_id": "30"}', 30),
        ('{"workspace_id": "030"}', 30),
        ('{"workspace_id": "0000000000000000000000030"}', 30),
        ('{"workspace_id": "9223372036854775807"}', 9223372036854775807),
        ('{"workspace_id": "9223372036854775808"}', None),
        ('{"workspace_id": " 30"}', None),
        ('{"workspace_id": "30 "}', None),
        ('{"workspace_id": "+30"}', None),
        ('{"workspace_id": "-30"}', None),
        ('{"workspace_id": "30.0"}', None),
        ('{"workspace_id": "30\\n"}', None),
        ('{"workspace_id": ""}', None),
        ('{"workspace_id": "\\uff13\\uff10"}', None),
        ('{"workspace_id": "\\u0033\\u0030"}', 30),
        ('{"workspace_id": null}', None),
        ('{"workspace_id": true}', None),
        ('{"workspace_id": {"id": 30}}', None),
        ('{"workspace_id": [30]}', None),
        ('{"workspace_id": 1, "workspace_id": 30}', 30),
    ],
)
def test_named_workspace_reads_payloads_as_section_2_says(payload: str | None, named: int | None) -> None:
    assert named_workspace(payload) == named


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2021, 1, day, hour, tzinfo=UTC)


def test_model_places_each_row_by_section_2() -> None:
    dataset = LegacyDataset(
        users=(User(1, at(1)), User(2, at(1)), User(3, at(1)), User(4, at(1))),
        workspaces=(
            Workspace(11, 1, at(5)),  # user 1: 12 is older though 11 has the lower id
            Workspace(12, 1, at(3)),
            Workspace(21, 2, at(4)),  # user 2: tied, so the lower id (21)
            Workspace(22, 2, at(4)),
        ),
        memberships=(
            Membership(11, 1, "viewer"),  # an owner with a lesser profile: raised
            Membership(21, 3, "owner"),  # the owner profile where user 3 owns nothing: kept
            Membership(22, 4, "member"),
        ),
        credentials=(Credential(100, 3),),
        registrations=(Registration(200, 1), Registration(201, None)),
        events=(Event(300, 200, "pending"), Event(301, 201, "failed")),
        activities=(
            Activity(400, 4, '{"workspace_id": "022"}'),  # member of 22: there
            Activity(401, 4, '{"workspace_id": 21}'),  # not a member of 21: default
            Activity(402, None, '{"workspace_id": 12.0}'),  # no user, 12 exists: there
            Activity(403, None, '{"workspace_id": " 12"}'),  # no user, names nothing: archived
            Activity(404, 1, '{"workspace_id": 11}'),  # the owner, not the default: 11
            Activity(405, 3, '{"workspace_id": 41}'),  # 006's workspace of user 3 (41), his own
        ),
    )
    personal = {3: 41, 4: 42}
    model = expected(dataset, personal)
    assert model.default_workspace == {1: 12, 2: 21, 3: 41, 4: 42}
    assert model.memberships == {
        (11, 1): "owner",
        (12, 1): "owner",
        (21, 2): "owner",
        (22, 2): "owner",
        (21, 3): "owner",
        (22, 4): "member",
        (41, 3): "owner",
        (42, 4): "owner",
    }
    assert model.credentials == {100: 41}
    assert model.webhook_registrations == {200: 12, 201: ARCHIVED}
    assert model.webhook_events == {300: 12, 301: ARCHIVED}
    assert model.activities == {400: 22, 401: 42, 402: 12, 403: ARCHIVED, 404: 11, 405: 41}
    assert {
        "default is not the owner's lowest workspace id",
        "default among workspaces tied on created_at",
        "owner with a non-owner profile in their workspace",
        "owner without a membership in their workspace",
        "owner profile held by a non-owner",
        "activity placed by its payload, not its user's default",
        "activity naming a workspace 006 creates",
    } <= dirty_cases(dataset, model, personal)


def test_strategies_exercise_every_dirty_case() -> None:
    """Over a derandomized run the size of the CI profile's, every case of section 1 comes up."""
    seen: collections.Counter[str] = collections.Counter()

    ci_examples = settings.get_profile("ci").max_examples

    @settings(
        max_examples=ci_examples, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(legacy_datasets())
    def draw(dataset: LegacyDataset) -> None:
        # Where 006 would put the personal workspaces: after the highest id, in user order.
        highest = max((w.id for w in dataset.workspaces), default=0)
        personal = {u: highest + 1 + i for i, u in enumerate(sorted(dataset.users_owning_nothing()))}
        seen.update(dirty_cases(dataset, expected(dataset, personal), personal))

    draw()
    missing = [case for case in DIRTY_CASES if not seen[case]]
    assert not missing, f"the strategies never drew: {missing}"


@pytest.fixture
def harness_for(fresh_database: str, tmp_path: Path) -> Iterator[dict[str, PropertyHarness]]:
    """Harnesses at 004 on one database: for the real migrations and for a copy with a wrong digit rule."""
    real = load_plan(REPO / "migrations")
    broken_dir = tmp_path / "migrations"
    broken_dir.mkdir()
    for migration in real:
        text = migration.sql
        if migration.version == 8:
            assert text.count(DIGIT_RULE) == 1, "008 changed: update DIGIT_RULE so this test still breaks it"
            text = text.replace(DIGIT_RULE, WRONG_DIGIT_RULE)
        (broken_dir / migration.file_name).write_text(text, encoding="utf-8")
    broken = load_plan(broken_dir)
    runner.migrate(fresh_database, real, stop="004")
    checks = invariants.load(REPO / "checks")
    harnesses = {
        "real": PropertyHarness(fresh_database, [m for m in real if m.version >= 5], checks),
        "broken": PropertyHarness(fresh_database, [m for m in broken if m.version >= 5], checks),
    }
    yield harnesses
    for harness in harnesses.values():
        harness.close()


SPACED_DIGITS = LegacyDataset(
    users=(User(1, at(1)), User(2, at(1))),
    workspaces=(Workspace(3, 1, at(2)), Workspace(4, 2, at(2))),
    memberships=(Membership(4, 1, "member"),),
    activities=(Activity(400, 1, '{"workspace_id": " 4"}'), Activity(401, None, '{"workspace_id": "3 "}')),
)


def test_the_real_migrations_pass_and_each_example_rolls_back(
    harness_for: dict[str, PropertyHarness],
) -> None:
    harness = harness_for["real"]
    harness.check(SPACED_DIGITS)
    harness.check(SPACED_DIGITS)  # the same ids load again: the first example left nothing behind
    row = harness.conn.execute("SELECT count(*) FROM users").fetchone()
    assert row is not None and row[0] == 0


def test_a_wrong_digit_rule_fails_the_property_with_a_sentence_per_row(
    harness_for: dict[str, PropertyHarness],
) -> None:
    with pytest.raises(PropertyViolation) as failure:
        harness_for["broken"].check(SPACED_DIGITS)
    message = str(failure.value)
    # Activity 400 belongs in user 1's default (3), 401 in the archive; the wrong rule puts them in 4 and 3.
    assert "activity 400: the rules place it in workspace 3; the migrations put it in workspace 4" in message
    assert (
        "activity 401: the rules place it in legacy_archive; the migrations put it in workspace 3" in message
    )
    assert "after the migrations ran (005_workspace_scoping.sql, " in message


def _gate_project(pytester: pytest.Pytester, break_008: Callable[[str], str]) -> Path:
    """A copy of checks/ and of migrations/ with 008 broken by ``break_008``."""
    shutil.copytree(REPO / "checks", pytester.path / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    migrations = pytester.path / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    path = next(migrations.glob("008_*.sql"))
    path.write_text(break_008(path.read_text(encoding="utf-8")), encoding="utf-8")
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return migrations


def _run_properties(pytester: pytest.Pytester, migrations: Path) -> list[str]:
    result = pytester.runpytest_subprocess(
        "checks/test_properties.py", "--migrations-dir", str(migrations), timeout=600
    )
    assert result.ret == 1, result.stdout.str()
    return result.stdout.lines


def test_a_property_failure_prints_sentences_and_the_dataset_as_sql_in_under_100_lines(
    pytester: pytest.Pytester,
) -> None:
    def wrong_digit_rule(sql: str) -> str:
        assert sql.count(DIGIT_RULE) == 1, "008 changed: update DIGIT_RULE so this test still breaks it"
        return sql.replace(DIGIT_RULE, WRONG_DIGIT_RULE)

    lines = _run_properties(pytester, _gate_project(pytester, wrong_digit_rule))
    output = "\n".join(lines)
    assert len(lines) < 100, output
    assert "008_webhooks_activities_alignment.sql)" in output, "the migrations that ran"
    assert re.search(
        r"activity \d+: the rules place it in (legacy_archive|workspace \d+); the migrations put it in workspace \d+",
        output,
    ), output
    assert "INSERT INTO activities (id, user_id, action, payload) VALUES" in output, "the dataset as SQL"
    # Shrunk to the point: digits with padding around them.
    assert re.search(r'"workspace_id": "( +\d+ *| *\d+ +)"', output), output
    # No repr of the harness, of a Migration or of the files' SQL.
    for leak in ("Migration(", "PropertyHarness(", "sql=", "-- 008:", "HypothesisWarning"):
        assert leak not in output, f"{leak!r} in the output"


def test_a_migration_that_errors_on_a_dataset_prints_the_file_line_and_error_not_its_text(
    pytester: pytest.Pytester,
) -> None:
    def fail_on_anonymous_activities(sql: str) -> str:
        return sql + (
            "\nDO $$ BEGIN IF EXISTS (SELECT FROM activities WHERE user_id IS NULL) THEN "
            "RAISE EXCEPTION 'anonymous activity'; END IF; END $$;\n"
        )

    lines = _run_properties(pytester, _gate_project(pytester, fail_on_anonymous_activities))
    output = "\n".join(lines)
    assert len(lines) < 100, output
    assert re.search(
        r"a migration failed on this dataset: 008_webhooks_activities_alignment\.sql:\d+: ERROR: anonymous activity",
        output,
    ), output
    for leak in ("Migration(", "PropertyHarness(", "sql=", "-- 008:"):
        assert leak not in output, f"{leak!r} in the output"


def test_profiles_are_registered_with_ci_at_least_100_examples() -> None:
    ci = settings.get_profile("ci")
    nightly = settings.get_profile("nightly")
    assert ci.max_examples >= 100 and ci.deadline is None
    assert nightly.max_examples >= 1000 and nightly.deadline is None
    assert hypothesis_profiles.DEFAULT_PROFILE == "ci"


@pytest.mark.parametrize(("env", "profile"), [("", "ci"), ("nightly", "nightly")])
def test_the_profile_follows_hypothesis_profile_env(env: str, profile: str) -> None:
    code = (
        "import migration_gate.plugin.hypothesis_profiles; from hypothesis import settings; "
        "print(settings.get_current_profile_name())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HYPOTHESIS_PROFILE": env},
        check=True,
        cwd=REPO,
    )
    assert done.stdout.strip() == profile
